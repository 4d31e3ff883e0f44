//! The end-to-end tier for issue 18: the real claude and codex CLIs against the mock server
//! sending the providers' rate-limit headers. What a CLI reports about its account's
//! windows and limits reaches `state.json` and `looper status`, and a run records the CLI it
//! used. Both version sets run these (`scripts/test`): claude 2.1.197 reports a window's
//! status and reset (its use only for a warning), 2.1.332 every window's use.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value as Json;

use crate::e2e_support::{Cli, E2e, Timing, require};
use crate::mock_server::rate_limit_headers::{self, ClaudeWindow, CodexWindow};
use crate::mock_server::{Provider, Reply};
use crate::support::{stdout, wait_until};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `looper status [--json]` of the scenario's project, with its machine state directory.
fn status(e: &E2e, json: bool) -> std::process::Output {
    let mut c = e.project.looper();
    c.env("XDG_STATE_HOME", e.root.path().join("xdg-state"))
        .arg("status");
    if json {
        c.arg("--json");
    }
    c.output().expect("status")
}

/// claude signed in to claude.ai (an OAuth token): only then does it read the unified
/// rate-limit headers (FINDINGS.md section 7).
fn signed_in(e: &E2e) {
    let cfg = e.project.read("agent-looper.toml").replace(
        "ANTHROPIC_API_KEY = \"sk-ant-api03-mock-0123456789abcdefghijklmnop\"",
        "CLAUDE_CODE_OAUTH_TOKEN = \"sk-ant-oat01-mock-token\"",
    );
    assert!(cfg.contains("CLAUDE_CODE_OAUTH_TOKEN"), "{cfg}");
    e.project.write("agent-looper.toml", &cfg);
}

fn windows(st: &Json) -> Vec<Json> {
    st["rate_limits"].as_array().cloned().unwrap_or_default()
}

#[test]
fn e2e_claude_json_limit_is_read_into_state_and_status() {
    let Some(bin) = require("e2e_claude_json_limit") else {
        return;
    };
    let e = E2e::new(
        Cli::Claude,
        bin,
        Timing::Shared,
        "rate_limit_max_wait_seconds = 60",
    );
    signed_in(&e);
    let reset = now() + 6;
    e.server.push(
        Provider::Anthropic,
        Reply::status(429, None).with_headers(rate_limit_headers::claude(
            "rejected",
            "five_hour",
            reset,
            &[ClaudeWindow {
                abbrev: "5h",
                utilization: 1.0,
                resets_at: reset,
            }],
        )),
    );
    e.server.push(
        Provider::Anthropic,
        Reply::text("Done after the reset.\nEXIT_SIGNAL: true"),
    );
    e.project.write("PROMPT.md", "Do the task.\n");
    let child = e.spawn(&["--max-loops", "2", "--complete-on", r"EXIT_SIGNAL:\s*true"]);
    // While the run waits for the reset, status shows the window and the limit.
    let waiting = wait_until(60.0, || {
        e.live_state()
            .is_some_and(|s| s["status"] == "retrying" && !windows(&s).is_empty())
    });
    let table = stdout(&status(&e, false));
    let out = e.finish(child);
    let why = format!("{}\n--- status\n{table}", e.diagnose(&out));
    assert!(waiting, "the run never waited with a reading: {why}");
    assert!(table.contains("limits: claude 5h:"), "{why}");
    assert!(table.contains("(limited)"), "{why}");
    assert!(table.contains("account claude:"), "{why}");
    assert_eq!(out.status.code(), Some(0), "{why}");
    // state.json: the reading of the window, per agent, and the account's limit.
    let st = e.state();
    let w = windows(&st);
    let five = w
        .iter()
        .find(|w| w["window"] == "five_hour")
        .unwrap_or_else(|| panic!("no five_hour window: {why}"));
    assert_eq!(five["agent"], "claude", "{why}");
    assert_eq!(five["status"], "rejected", "{why}");
    let resets = five["resets_at"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp() as u64);
    assert_eq!(resets, Some(reset), "{why}");
    let limit = &st["account_limit"];
    assert!(limit["until"].is_string(), "{why}");
    assert_eq!(e.events_named("account_limit_recorded").len(), 1, "{why}");
    // The next prompt waited for the reset (its own retry; no hold for its own record).
    let turns = e.server.turns(Provider::Anthropic);
    assert_eq!(turns.len(), 2, "{why}");
    assert!(e.events_named("quota_wait").is_empty(), "{why}");
    // The CLI it ran is on record.
    let started = &e.events_named("run_started")[0];
    assert!(
        started["agent_cli"]["version"]
            .as_str()
            .is_some_and(|v| v.contains("Claude Code")),
        "{why}"
    );
    let doc: Json = serde_json::from_slice(&status(&e, true).stdout).expect("json");
    let run = &doc["runs"][0];
    assert_eq!(run["rate_limits"][0]["window"], "five_hour", "{doc:#}");
    assert!(
        run["account"]
            .as_str()
            .is_some_and(|a| a.starts_with("claude:"))
    );
    assert!(run["agent_cli"]["path"].is_string(), "{doc:#}");
}

#[test]
fn e2e_codex_json_windows_are_read_from_its_rollout() {
    let Some(bin) = require("e2e_codex_json_windows") else {
        return;
    };
    let e = E2e::new(Cli::Codex, bin, Timing::Shared, "");
    let t = now();
    let headers = rate_limit_headers::codex(
        &CodexWindow {
            used_percent: 42.5,
            window_minutes: 300,
            resets_at: t + 3 * 3600,
        },
        Some(&CodexWindow {
            used_percent: 13.0,
            window_minutes: 10080,
            resets_at: t + 4 * 86400,
        }),
    );
    e.server.push(
        Provider::OpenAi,
        Reply::text("Loop one.\nEXIT_SIGNAL: false").with_headers(headers.clone()),
    );
    e.server.push(
        Provider::OpenAi,
        Reply::text("Loop two.\nEXIT_SIGNAL: true").with_headers(headers),
    );
    e.project.write("PROMPT.md", "Do the task.\n");
    let child = e.spawn(&[
        "--max-loops",
        "2",
        "--sleep",
        "4",
        "--complete-on",
        r"EXIT_SIGNAL:\s*true",
    ]);
    // Between the loops (the run sleeps), status shows codex's windows.
    let read = wait_until(60.0, || {
        e.live_state().is_some_and(|s| windows(&s).len() == 2)
    });
    let table = stdout(&status(&e, false));
    let out = e.finish(child);
    let why = format!("{}\n--- status\n{table}", e.diagnose(&out));
    assert!(read, "no windows in the state: {why}");
    assert_eq!(out.status.code(), Some(0), "{why}");
    assert!(table.contains("limits: codex 5h: 43% until"), "{why}");
    assert!(table.contains("7d: 13% until"), "{why}");
    let st = e.state();
    let w = windows(&st);
    let primary = w
        .iter()
        .find(|w| w["window"] == "primary")
        .expect("primary");
    assert_eq!(primary["used_percent"], 42.5, "{why}");
    assert_eq!(primary["window_minutes"], 300, "{why}");
    assert_eq!(primary["agent"], "codex", "{why}");
    let secondary = w
        .iter()
        .find(|w| w["window"] == "secondary")
        .expect("secondary");
    assert_eq!(secondary["window_minutes"], 10080, "{why}");
    // Read from each loop's own thread's rollout.
    assert_eq!(e.events_named("rate_limits").len(), 2, "{why}");
    let started = &e.events_named("run_started")[0];
    assert!(
        started["agent_cli"]["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("codex-cli ")),
        "{why}"
    );
}

//! The end-to-end tier (issue 7): the looper drives the real codex, claude and gemini CLIs
//! (versions pinned in `e2e/package.json`) against the scripted mock model server on
//! 127.0.0.1, each scenario in its own temp git repository with an isolated HOME /
//! CODEX_HOME / TMPDIR. See `docs/e2e.md`.
//!
//! When the CLIs are not available every test here prints `E2E SKIPPED: ...` and returns;
//! with `CI=true` it fails instead (`tests/support/e2e.rs`).

use std::time::{Duration, Instant};

use serde_json::Value as Json;

use crate::e2e_support::{Cli, E2e, Timing, all_strings, loud, require};
use crate::mock_server::{Provider, Reply};
use crate::support::{group_alive, wait_until};

const COMPLETE_ON: &str = r"EXIT_SIGNAL:\s*true";

/// A prompt that breaks naive argv handling: a leading `-` (an option to clap/yargs),
/// quotes, `$VARS` and backticks (a shell), a newline and non-ASCII text.
const HOSTILE_PROMPT: &str =
    "-n \"quoted\" 'single' $HOME ${PATH} `tick` \\back ünïcødé ✓\nsecond line -- --version";

fn provider(cli: Cli) -> Provider {
    match cli {
        Cli::Codex => Provider::OpenAi,
        Cli::Claude => Provider::Anthropic,
        Cli::Gemini => Provider::Gemini,
    }
}

/// Start a scenario, or skip it (loudly) when the CLIs are not installed.
fn scenario(cli: Cli, test: &str, looper_extra: &str) -> Option<E2e> {
    let bin = require(test)?;
    Some(E2e::new(cli, bin, Timing::Shared, looper_extra))
}

/// Prints the scenario's wall time when it ends (visible with `--nocapture`).
struct Timer(&'static str, Instant);

impl Drop for Timer {
    fn drop(&mut self) {
        eprintln!("e2e timing: {} took {:.1?}", self.0, self.1.elapsed());
    }
}

fn stop_reason(e: &E2e) -> String {
    e.state()["stop_reason"].as_str().unwrap_or("").to_string()
}

/// The `prompt_started` events' `(session_id, resume)` pairs, in order.
fn starts(e: &E2e) -> Vec<(Option<String>, bool)> {
    e.events_named("prompt_started")
        .iter()
        .map(|ev| {
            (
                ev["session_id"].as_str().map(str::to_string),
                ev["resume"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

/// `git status --porcelain` of the project: the no-progress breaker relies on the CLIs
/// leaving the work tree alone when the model changes nothing.
fn worktree(e: &E2e) -> String {
    e.project
        .git(&["status", "--porcelain", "--untracked-files=all"])
}

fn completed_session_ids(e: &E2e) -> Vec<Option<String>> {
    e.events_named("prompt_completed")
        .iter()
        .map(|ev| ev["session_id"].as_str().map(str::to_string))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Sessions, completion, prompts

#[test]
fn e2e_codex_loops_use_a_fresh_thread_each_and_pass_the_prompt_verbatim() {
    let _t = Timer("codex loops", Instant::now());
    let Some(e) = scenario(Cli::Codex, "e2e_codex_loops", "") else {
        return;
    };
    e.project.write("PROMPT.md", HOSTILE_PROMPT);
    e.server.push(
        Provider::OpenAi,
        Reply::text("Loop one done.\nEXIT_SIGNAL: false"),
    );
    e.server.push(
        Provider::OpenAi,
        Reply::text("Loop two done.\nEXIT_SIGNAL: false"),
    );
    e.server.push(
        Provider::OpenAi,
        Reply::text("All done.\nEXIT_SIGNAL: true"),
    );
    let before = worktree(&e);
    let out = e.run(&[
        "--max-loops",
        "5",
        "--sleep",
        "0",
        "--complete-on",
        COMPLETE_ON,
    ]);
    let why = e.diagnose(&out);
    assert_eq!(out.status.code(), Some(0), "{why}");
    assert_eq!(stop_reason(&e), "completion marker", "{why}");
    assert_eq!(e.events_named("loop_completed").len(), 3, "{why}");
    assert_eq!(worktree(&e), before, "codex changed the work tree: {why}");

    // Byte for byte: the looper's argv (`-- <prompt>`) reached the model unchanged.
    assert_eq!(
        e.server.prompts(Provider::OpenAi),
        vec![HOSTILE_PROMPT.to_string(); 3],
        "{why}"
    );

    // A fresh thread each loop: never `resume`, three different thread ids, each the one
    // codex reported for that loop.
    let turns = e.server.turns(Provider::OpenAi);
    assert_eq!(turns.len(), 3, "{why}");
    let threads: Vec<String> = turns
        .iter()
        .map(|t| {
            t.header("session-id")
                .expect("session-id header")
                .to_string()
        })
        .collect();
    assert_ne!(threads[0], threads[1], "{why}");
    assert_ne!(threads[1], threads[2], "{why}");
    assert_ne!(threads[0], threads[2], "{why}");
    assert!(
        starts(&e).iter().all(|(_, resume)| !resume),
        "a loop resumed a thread: {why}"
    );
    let reported: Vec<Option<String>> = completed_session_ids(&e);
    assert_eq!(
        reported,
        threads.iter().cloned().map(Some).collect::<Vec<_>>(),
        "{why}"
    );
    // Each loop's request holds only its own prompt: no history leaked from loop 1.
    assert!(
        !all_strings(&turns[2].json().expect("json body")).contains("Loop one done."),
        "{why}"
    );
}

#[test]
fn e2e_codex_sequence_resumes_the_first_prompts_thread() {
    let _t = Timer("codex sequence", Instant::now());
    let Some(e) = scenario(Cli::Codex, "e2e_codex_sequence", "") else {
        return;
    };
    e.project.write(
        "prompts.md",
        "First prompt: plan.\n---\nSecond prompt: build.\n---\nThird prompt: check.\n",
    );
    for r in ["Reply one.", "Reply two.", "Reply three."] {
        e.server.push(Provider::OpenAi, Reply::text(r));
    }
    let out = e.run(&[
        "--once",
        "--mode",
        "sequence",
        "--prompt-file",
        "prompts.md",
    ]);
    let why = e.diagnose(&out);
    assert_eq!(out.status.code(), Some(0), "{why}");
    assert_eq!(stop_reason(&e), "max loops reached: 1", "{why}");

    let turns = e.server.turns(Provider::OpenAi);
    assert_eq!(turns.len(), 3, "{why}");
    let threads: Vec<&str> = turns
        .iter()
        .map(|t| t.header("session-id").expect("session-id header"))
        .collect();
    assert_eq!(threads[1], threads[0], "prompt 2 did not resume: {why}");
    assert_eq!(threads[2], threads[0], "prompt 3 did not resume: {why}");
    let resumes: Vec<bool> = starts(&e).iter().map(|(_, r)| *r).collect();
    assert_eq!(resumes, [false, true, true], "{why}");
    assert_eq!(
        completed_session_ids(&e),
        vec![Some(threads[0].to_string()); 3],
        "{why}"
    );
    // The resumed requests carry the conversation so far.
    let second = all_strings(&turns[1].json().expect("json body"));
    assert!(second.contains("First prompt: plan."), "{why}");
    assert!(second.contains("Reply one."), "{why}");
    let third = all_strings(&turns[2].json().expect("json body"));
    for earlier in [
        "First prompt: plan.",
        "Reply one.",
        "Second prompt: build.",
        "Reply two.",
    ] {
        assert!(third.contains(earlier), "turn 3 lacks {earlier:?}: {why}");
    }
    assert_eq!(
        e.server.prompts(Provider::OpenAi),
        [
            "First prompt: plan.",
            "Second prompt: build.",
            "Third prompt: check."
        ],
        "{why}"
    );
}

/// claude and gemini: the looper assigns the session id (`--session-id`), resumes it
/// (`--resume`) for later prompts of the loop, and completes from the stream-json output.
fn sequence_keeps_one_session_and_completes(cli: Cli, test: &str) {
    let Some(e) = scenario(cli, test, "") else {
        return;
    };
    let p = provider(cli);
    e.project.write(
        "prompts.md",
        &format!("First prompt: plan.\n---\n{HOSTILE_PROMPT}\n---\nThird prompt: check.\n"),
    );
    e.server
        .push(p, Reply::text("Reply one. EXIT_SIGNAL: false"));
    e.server.push(p, Reply::text("Reply two."));
    e.server.push(p, Reply::text("Checked.\nEXIT_SIGNAL: true"));
    let before = worktree(&e);
    let out = e.run(&[
        "--max-loops",
        "3",
        "--mode",
        "sequence",
        "--prompt-file",
        "prompts.md",
        "--complete-on",
        COMPLETE_ON,
    ]);
    let why = e.diagnose(&out);
    assert_eq!(out.status.code(), Some(0), "{why}");
    assert_eq!(stop_reason(&e), "completion marker", "{why}");
    assert_eq!(e.events_named("loop_completed").len(), 1, "{why}");
    assert_eq!(
        worktree(&e),
        before,
        "{} changed the work tree: {why}",
        cli.name()
    );

    let starts = starts(&e);
    assert_eq!(starts.len(), 3, "{why}");
    let assigned = starts[0].0.clone().expect("a preassigned session id");
    assert!(
        starts
            .iter()
            .all(|(id, _)| id.as_deref() == Some(&assigned)),
        "{why}"
    );
    let resumes: Vec<bool> = starts.iter().map(|(_, r)| *r).collect();
    assert_eq!(resumes, [false, true, true], "{why}");
    // The id the CLI itself reports (claude `system/init`, gemini `init`) is the same one
    // for all three prompts: they really were one session.
    assert_eq!(
        completed_session_ids(&e),
        vec![Some(assigned.clone()); 3],
        "{why}"
    );
    if cli == Cli::Claude {
        // claude also tags every request with the session it belongs to.
        let turns = e.server.turns(p);
        let headers: Vec<Option<&str>> = turns
            .iter()
            .map(|t| t.header("x-claude-code-session-id"))
            .collect();
        assert_eq!(headers, vec![Some(assigned.as_str()); 3], "{why}");
    }
    let turns = e.server.turns(p);
    assert_eq!(turns.len(), 3, "{why}");
    let third = all_strings(&turns[2].json().expect("json body"));
    for earlier in ["First prompt: plan.", "Reply one.", "Reply two."] {
        assert!(third.contains(earlier), "turn 3 lacks {earlier:?}: {why}");
    }
    assert_eq!(
        e.server.prompts(p),
        [
            "First prompt: plan.".to_string(),
            HOSTILE_PROMPT.to_string(),
            "Third prompt: check.".to_string()
        ],
        "{why}"
    );
}

#[test]
fn e2e_claude_sequence_keeps_one_session_and_completes() {
    let _t = Timer("claude sequence", Instant::now());
    sequence_keeps_one_session_and_completes(Cli::Claude, "e2e_claude_sequence");
}

#[test]
fn e2e_gemini_sequence_keeps_one_session_and_completes() {
    let _t = Timer("gemini sequence", Instant::now());
    sequence_keeps_one_session_and_completes(Cli::Gemini, "e2e_gemini_sequence");
}

// ---------------------------------------------------------------------------------------
// Rate limits, transient errors, timeouts

/// One 429 (`retry-after: 2`), then success: the looper waits, retries, completes.
fn rate_limit_is_waited_out(cli: Cli, test: &str) {
    let Some(e) = scenario(cli, test, "") else {
        return;
    };
    let p = provider(cli);
    e.server.push(p, Reply::status(429, Some(2)));
    e.server
        .push(p, Reply::text("Recovered.\nEXIT_SIGNAL: true"));
    e.project.write("PROMPT.md", "Do the task.\n");
    let out = e.run(&["--max-loops", "2", "--complete-on", COMPLETE_ON]);
    let why = e.diagnose(&out);
    assert_eq!(out.status.code(), Some(0), "{why}");
    assert_eq!(stop_reason(&e), "completion marker", "{why}");
    let waits = e.events_named("retry_wait");
    assert_eq!(waits.len(), 1, "{why}");
    assert_eq!(waits[0]["retry_kind"], "rate_limit", "{why}");
    // The retry happened after the wait, and its attempt is the one that completed.
    let names: Vec<String> = e
        .events()
        .iter()
        .filter_map(|ev| ev["event"].as_str().map(str::to_string))
        .collect();
    let wait_at = names.iter().position(|n| n == "retry_wait").expect("wait");
    let done = e.events_named("prompt_completed");
    assert_eq!(done.len(), 2, "{why}");
    assert_eq!(done[0]["retry_kind"], "rate_limit", "{why}");
    assert_eq!(done[1]["completion_detected"], true, "{why}");
    assert!(done[1].get("error").is_none(), "{why}");
    assert!(
        names[wait_at + 1..].iter().any(|n| n == "prompt_completed"),
        "{why}"
    );
    // gemini surfaces the provider's delay (RetryInfo "Suggested retry after 2s") and the
    // looper honours it; codex and claude (retries turned off) do not surface it, so the
    // looper's short backoff applies.
    if cli == Cli::Gemini {
        assert_eq!(waits[0]["provider_delay_seconds"], Json::from(2.0), "{why}");
        assert!(waits[0]["wait_seconds"].as_f64() >= Some(2.0), "{why}");
        let turns = e.server.turns(p);
        let gap = turns[1].at.saturating_sub(turns[0].at);
        assert!(
            gap >= Duration::from_secs(2),
            "retried after {gap:?}: {why}"
        );
    }
    assert_eq!(e.server.turns(p).len(), 2, "{why}");
}

#[test]
fn e2e_codex_rate_limit_is_waited_out() {
    let _t = Timer("codex 429", Instant::now());
    rate_limit_is_waited_out(Cli::Codex, "e2e_codex_rate_limit");
}

#[test]
fn e2e_claude_rate_limit_is_waited_out() {
    let _t = Timer("claude 429", Instant::now());
    rate_limit_is_waited_out(Cli::Claude, "e2e_claude_rate_limit");
}

#[test]
fn e2e_gemini_rate_limit_is_waited_out() {
    let _t = Timer("gemini 429", Instant::now());
    rate_limit_is_waited_out(Cli::Gemini, "e2e_gemini_rate_limit");
}

/// 503 on every turn: two transient retries, then the run stops at the cap.
fn repeated_503_stops_at_the_transient_cap(cli: Cli, test: &str) {
    let Some(e) = scenario(cli, test, "") else {
        return;
    };
    let p = provider(cli);
    e.server.set_default(p, Reply::status(503, None));
    e.project.write("PROMPT.md", "Do the task.\n");
    let out = e.run(&["--max-loops", "3", "--max-transient-retries", "2"]);
    let why = e.diagnose(&out);
    assert_eq!(out.status.code(), Some(1), "{why}");
    assert!(
        stop_reason(&e).starts_with("transient retry limit reached after 2 attempts"),
        "{why}"
    );
    let waits = e.events_named("retry_wait");
    assert_eq!(waits.len(), 2, "{why}");
    assert!(
        waits.iter().all(|w| w["retry_kind"] == "transient"),
        "{why}"
    );
    let done = e.events_named("prompt_completed");
    assert_eq!(done.len(), 3, "{why}");
    assert!(done.iter().all(|d| d["retry_kind"] == "transient"), "{why}");
    // Three attempts reached the server (claude may add a non-streaming fallback per try).
    assert!(e.server.turns(p).len() >= 3, "{why}");
}

#[test]
fn e2e_codex_repeated_503_stops_at_the_transient_cap() {
    let _t = Timer("codex 503", Instant::now());
    repeated_503_stops_at_the_transient_cap(Cli::Codex, "e2e_codex_503");
}

#[test]
fn e2e_claude_repeated_503_stops_at_the_transient_cap() {
    let _t = Timer("claude 503", Instant::now());
    repeated_503_stops_at_the_transient_cap(Cli::Claude, "e2e_claude_503");
}

#[test]
fn e2e_gemini_repeated_503_stops_at_the_transient_cap() {
    let _t = Timer("gemini 503", Instant::now());
    repeated_503_stops_at_the_transient_cap(Cli::Gemini, "e2e_gemini_503");
}

/// A reply that never ends: the local timeout fires, and nothing of the CLI survives.
///
/// The CLI must reach the server (and hang there) within the 5 s timeout. It needs about 2 s
/// on an idle core, and the scenario runs alone in the tier, but the machine may be shared
/// with other builds: when the CLI provably never reached the server before the timeout,
/// the scenario is tried again (at most 3 times, each said on stderr) rather than failed
/// for a reason that is not the looper's.
fn hung_reply_times_out_and_leaves_no_process(cli: Cli, test: &str) {
    const TRIES: u32 = 3;
    let Some(bin) = require(test) else {
        return;
    };
    for attempt in 1..=TRIES {
        let e = E2e::new(cli, bin.clone(), Timing::Alone, "");
        let p = provider(cli);
        e.server.push(p, Reply::hang());
        e.project.write("PROMPT.md", "Do the task.\n");
        let mut child = e.spawn(&["--max-loops", "1", "--timeout", "5"]);
        // Until the turn hangs at the server or the looper ends, whichever comes first.
        wait_until(30.0, || {
            !e.server.turns(p).is_empty() || child.try_wait().ok().flatten().is_some()
        });
        let hung = !e.server.turns(p).is_empty();
        // While the turn hangs, the CLI's process group is recorded and alive.
        let mut pgid = None;
        wait_until(3.0, || {
            pgid = e.live_state().and_then(|s| s["child_pgid"].as_i64());
            pgid.is_some()
        });
        let alive_while_hung = hung && pgid.is_some_and(group_alive);
        let out = e.finish(child);
        let why = e.diagnose(&out);
        if !hung && attempt < TRIES && out.status.code() == Some(124) {
            loud(&format!(
                "e2e: {test}: {} did not reach the mock server before the 5 s timeout (busy machine?); trying again ({attempt}/{TRIES})\n",
                cli.name()
            ));
            continue;
        }
        assert!(hung, "the CLI never reached the server: {why}");
        let pgid = pgid.expect("child_pgid recorded in state.json while the agent ran");
        assert!(
            alive_while_hung,
            "group {pgid} was not alive during the turn: {why}"
        );
        assert_eq!(out.status.code(), Some(124), "{why}");
        assert_eq!(stop_reason(&e), "local timeout after 5 seconds", "{why}");
        let turns = e.server.turns(p);
        assert_eq!(turns.len(), 1, "{why}");
        assert_eq!(turns[0].reply, "hang", "{why}");
        assert!(!group_alive(pgid), "process group {pgid} survived: {why}");
        // Nothing that carries the isolated HOME (the CLI and anything it spawned, even in
        // another process group) is left.
        assert!(
            wait_until(1.0, || e.survivors().is_empty()),
            "processes survived the timeout: {:?}: {why}",
            e.survivors()
        );
        return;
    }
}

#[test]
fn e2e_codex_hung_reply_times_out_and_leaves_no_process() {
    let _t = Timer("codex timeout", Instant::now());
    hung_reply_times_out_and_leaves_no_process(Cli::Codex, "e2e_codex_timeout");
}

#[test]
fn e2e_claude_hung_reply_times_out_and_leaves_no_process() {
    let _t = Timer("claude timeout", Instant::now());
    hung_reply_times_out_and_leaves_no_process(Cli::Claude, "e2e_claude_timeout");
}

#[test]
fn e2e_gemini_hung_reply_times_out_and_leaves_no_process() {
    let _t = Timer("gemini timeout", Instant::now());
    hung_reply_times_out_and_leaves_no_process(Cli::Gemini, "e2e_gemini_timeout");
}

// ---------------------------------------------------------------------------------------
// Git: backups and the no-progress breaker

#[test]
fn e2e_codex_backups_and_no_progress_breaker() {
    let _t = Timer("codex backup/no-progress", Instant::now());
    let Some(e) = scenario(Cli::Codex, "e2e_codex_backup", "") else {
        return;
    };
    e.server
        .set_default(Provider::OpenAi, Reply::text("Nothing to change."));
    e.project
        .write("PROMPT.md", "Look around; change nothing.\n");
    let out = e.run(&["--max-loops", "5", "--backup", "--cb-no-progress", "2"]);
    let why = e.diagnose(&out);
    assert_eq!(out.status.code(), Some(3), "{why}");
    assert_eq!(stop_reason(&e), "no git progress for 2 loop(s)", "{why}");
    let branches = e.project.git(&["branch", "--list", "looper-backup/*"]);
    for suffix in ["-loop-0001", "-loop-0002"] {
        assert!(
            branches.lines().any(|b| b.trim().ends_with(suffix)),
            "no backup branch *{suffix} in {branches:?}: {why}"
        );
    }
    assert_eq!(e.server.turns(Provider::OpenAi).len(), 2, "{why}");
}

// ---------------------------------------------------------------------------------------
// Recording (not a test of the looper): `AGENT_LOOPER_RECORD_DIR=<dir> cargo test --test it
// e2e::record_ -- --ignored` runs the real CLIs directly against the mock server and writes
// what they print as fixtures (`<cli>/<scenario>.{argv,stdout,stderr,exit}` and, for
// codex, the rollout).

pub mod record {
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::time::{SystemTime, UNIX_EPOCH};

    use crate::e2e_support::{Cli, E2e, Timing, require, wait_with_deadline};
    use crate::mock_server::rate_limit_headers::{self, ClaudeWindow, CodexWindow};
    use crate::mock_server::{Provider, Reply};

    pub fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    fn out_dir(cli: Cli) -> Option<PathBuf> {
        let dir = PathBuf::from(std::env::var_os("AGENT_LOOPER_RECORD_DIR")?).join(cli.name());
        std::fs::create_dir_all(&dir).ok()?;
        Some(dir)
    }

    /// Run `<cli> args` with the scenario's isolated environment; write the fixture files.
    pub fn run(e: &E2e, env: &[(&str, String)], args: &[String], name: &str) -> String {
        let exe = e.bin.join(e.cli.name());
        let mut c = Command::new(&exe);
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TERM", "dumb")
            .env("LANG", "C.UTF-8")
            .env("HOME", e.home())
            .env("TMPDIR", e.tmp())
            .env("NO_PROXY", "127.0.0.1,localhost")
            .current_dir(e.project.path())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        let child = c.spawn().expect("spawn cli");
        let out = wait_with_deadline(child, std::time::Duration::from_secs(60)).expect("cli");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        if let Some(dir) = out_dir(e.cli) {
            let w = |ext: &str, b: &[u8]| std::fs::write(dir.join(format!("{name}.{ext}")), b);
            let _ = w("argv", (args.join("\n") + "\n").as_bytes());
            let _ = w("stdout", &out.stdout);
            let _ = w("stderr", &out.stderr);
            let _ = w(
                "exit",
                format!("{}\n", out.status.code().unwrap_or(-1)).as_bytes(),
            );
        }
        stdout
    }

    /// The newest file under `dir` whose name ends in `.jsonl`.
    pub fn newest_jsonl(dir: &Path) -> Option<PathBuf> {
        let mut best: Option<(SystemTime, PathBuf)> = None;
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).ok()?.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.to_string_lossy().ends_with(".jsonl") {
                    let t = e.metadata().and_then(|m| m.modified()).ok()?;
                    if best.as_ref().is_none_or(|(b, _)| t > *b) {
                        best = Some((t, p));
                    }
                }
            }
        }
        best.map(|(_, p)| p)
    }

    pub fn claude_env(e: &E2e, oauth: bool) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("ANTHROPIC_BASE_URL", e.server.base_url()),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".to_string()),
            ("DISABLE_AUTOUPDATER", "1".to_string()),
            ("CLAUDE_CODE_MAX_RETRIES", "0".to_string()),
        ];
        if oauth {
            env.push((
                "CLAUDE_CODE_OAUTH_TOKEN",
                "sk-ant-oat01-mock-token".to_string(),
            ));
        } else {
            env.push((
                "ANTHROPIC_API_KEY",
                "sk-ant-api03-mock-0123456789abcdefghijklmnop".to_string(),
            ));
        }
        env
    }

    pub fn claude_args(extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = ["-p", "--output-format", "stream-json", "--verbose"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a.push("--".into());
        a.push("Do the task".into());
        a
    }

    #[test]
    #[ignore = "records fixtures from the real CLIs; run by hand"]
    fn record_claude_rate_limit_headers() {
        let Some(bin) = require("record_claude") else {
            return;
        };
        let t = now();
        let cases: Vec<(&str, Reply, bool)> = vec![
            (
                "rate_limit_event_allowed",
                Reply::text("Work finished.\nEXIT_SIGNAL: true").with_headers(
                    rate_limit_headers::claude(
                        "allowed",
                        "five_hour",
                        t + 3 * 3600,
                        &[
                            ClaudeWindow {
                                abbrev: "5h",
                                utilization: 0.42,
                                resets_at: t + 3 * 3600,
                            },
                            ClaudeWindow {
                                abbrev: "7d",
                                utilization: 0.13,
                                resets_at: t + 4 * 86400,
                            },
                        ],
                    ),
                ),
                true,
            ),
            (
                "rate_limit_event_warning",
                Reply::text("Work finished.\nEXIT_SIGNAL: true")
                    .with_headers(rate_limit_headers::claude(
                        "allowed_warning",
                        "five_hour",
                        t + 3600,
                        &[ClaudeWindow {
                            abbrev: "5h",
                            utilization: 0.91,
                            resets_at: t + 3600,
                        }],
                    ))
                    .with_header("anthropic-ratelimit-unified-5h-surpassed-threshold", "0.9"),
                true,
            ),
            (
                "rate_limit_event_rejected",
                Reply::status(429, None).with_headers(rate_limit_headers::claude(
                    "rejected",
                    "five_hour",
                    t + 7200,
                    &[ClaudeWindow {
                        abbrev: "5h",
                        utilization: 1.0,
                        resets_at: t + 7200,
                    }],
                )),
                true,
            ),
            (
                "rate_limit_headers_api_key",
                Reply::text("Work finished.\nEXIT_SIGNAL: true").with_headers(
                    rate_limit_headers::claude(
                        "allowed_warning",
                        "five_hour",
                        t + 3600,
                        &[ClaudeWindow {
                            abbrev: "5h",
                            utilization: 0.91,
                            resets_at: t + 3600,
                        }],
                    ),
                ),
                false,
            ),
        ];
        for (name, reply, oauth) in cases {
            let e = E2e::new(Cli::Claude, bin.clone(), Timing::Shared, "");
            e.server.push(Provider::Anthropic, reply);
            let out = run(&e, &claude_env(&e, oauth), &claude_args(&[]), name);
            eprintln!("== {name}\n{out}");
        }
    }

    /// The json scenarios of FINDINGS.md sections 2 and 3, for comparing versions.
    #[test]
    #[ignore = "records fixtures from the real CLIs; run by hand"]
    fn record_json_scenarios() {
        let Some(bin) = require("record_json") else {
            return;
        };
        for cli in [Cli::Codex, Cli::Claude] {
            let cases: Vec<(&str, Reply)> = match cli {
                Cli::Codex => vec![
                    ("success", Reply::text("Work finished.\nEXIT_SIGNAL: true")),
                    ("rate_limit_429", Reply::status(429, Some(2))),
                    ("quota", Reply::quota()),
                    ("overloaded_503", Reply::status(503, None)),
                    ("server_error_500", Reply::status(500, None)),
                    (
                        "rate_limit_in_stream",
                        Reply::stream_error(
                            "rate_limit_exceeded",
                            "Rate limit reached for mock-model. Please try again in 2s.",
                        ),
                    ),
                ],
                _ => vec![
                    ("success", Reply::text("Work finished.\nEXIT_SIGNAL: true")),
                    ("rate_limit_429_max_retries_0", Reply::status(429, Some(2))),
                    ("overloaded_529_max_retries_0", Reply::status(529, None)),
                    ("server_error_500", Reply::status(500, None)),
                ],
            };
            for (name, reply) in cases {
                let e = E2e::new(cli, bin.clone(), Timing::Shared, "");
                let p = match cli {
                    Cli::Codex => Provider::OpenAi,
                    _ => Provider::Anthropic,
                };
                e.server.push(p, reply);
                let (env, args): (Vec<(&str, String)>, Vec<String>) = match cli {
                    Cli::Codex => (
                        vec![
                            ("CODEX_HOME", e.codex_home().display().to_string()),
                            ("MOCK_API_KEY", "mock-key".to_string()),
                        ],
                        [
                            "exec",
                            "--json",
                            "--skip-git-repo-check",
                            "--",
                            "Do the task",
                        ]
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                    ),
                    _ => (claude_env(&e, false), claude_args(&[])),
                };
                let out = run(&e, &env, &args, name);
                eprintln!("== {} {name}\n{out}", cli.name());
            }
        }
    }

    #[test]
    #[ignore = "records fixtures from the real CLIs; run by hand"]
    fn record_codex_rate_limit_headers() {
        let Some(bin) = require("record_codex") else {
            return;
        };
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
        let cases: Vec<(&str, Reply)> = vec![
            (
                "rate_limits_headers",
                Reply::text("Work finished.\nEXIT_SIGNAL: true").with_headers(headers.clone()),
            ),
            (
                "rate_limits_429_headers",
                Reply::status(429, None).with_headers(headers.clone()),
            ),
        ];
        for (name, reply) in cases {
            let e = E2e::new(Cli::Codex, bin.clone(), Timing::Shared, "");
            e.server.push(Provider::OpenAi, reply);
            let args: Vec<String> = [
                "exec",
                "--json",
                "--skip-git-repo-check",
                "--",
                "Do the task",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let env = vec![
                ("CODEX_HOME", e.codex_home().display().to_string()),
                ("MOCK_API_KEY", "mock-key".to_string()),
            ];
            let out = run(&e, &env, &args, name);
            eprintln!("== {name}\n{out}");
            if let Some(rollout) = newest_jsonl(&e.codex_home().join("sessions")) {
                let text = std::fs::read_to_string(&rollout).unwrap_or_default();
                eprintln!("-- rollout {}\n{text}", rollout.display());
                if let Some(dir) = out_dir(Cli::Codex) {
                    let _ = std::fs::write(dir.join(format!("{name}.rollout.jsonl")), text);
                }
            }
        }
    }
}

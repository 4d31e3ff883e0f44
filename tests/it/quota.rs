//! Quota-aware scheduling with real looper processes and the fake agent speaking claude's
//! stream-json (issue 18): two loopers sharing one account, where the one that sees the
//! limit makes the other wait for the reset; a proactive hold at the headroom line; the
//! daily budget summed across two runs of the machine; the CLI's own retries in the state
//! while the attempt runs; and the agent's CLI recorded at the start and its change between
//! loops. Every looper of a test shares one machine state directory (`XDG_STATE_HOME`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value as Json;

use crate::support::*;

/// A project whose `claude` agent is the fake agent (`kind = "claude"`, json), with `extra`
/// lines in its agent table.
fn claude_project(script: &str, looper: &str, extra: &str) -> Project {
    let p = Project::new();
    p.write("agent.script", script);
    p.write(
        "agent-looper.toml",
        &format!(
            "[looper]\ndefault_agent = \"claude\"\nsleep_seconds = 0\nretry_backoff_base_seconds = 0.2\n{looper}\n\n[agents.claude]\nkind = \"claude\"\ninterface = \"json\"\nexecutable = {:?}\nenv = {{ FAKE_AGENT_SCRIPT = {:?} }}\n{extra}\n",
            fake_agent_bin().display().to_string(),
            p.join("agent.script").display().to_string()
        ),
    );
    p.write("PROMPT.md", "do the thing\n");
    p
}

/// `looper <args>` in `p` with the machine state directory `state`.
fn looper(p: &Project, state: &Path) -> Command {
    let mut c = p.looper();
    c.env("XDG_STATE_HOME", state);
    c
}

fn spawn_run(p: &Project, state: &Path, args: &[&str]) -> Child {
    looper(p, state)
        .arg("--local")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn looper")
}

fn wait(child: Child) -> Output {
    child.wait_with_output().expect("wait looper")
}

fn why(p: &Project, out: &Output) -> String {
    let events = p
        .run_dirs()
        .last()
        .map(|d| read_events(d))
        .unwrap_or_default();
    format!(
        "exit {:?}\n{}\n{}\n{events:#?}",
        out.status.code(),
        stdout(out),
        stderr(out)
    )
}

fn events_named(p: &Project, name: &str) -> Vec<Json> {
    p.events()
        .into_iter()
        .filter(|e| e["event"] == name)
        .collect()
}

fn ts(e: &Json) -> chrono::DateTime<chrono::Utc> {
    e["ts"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
        .expect("ts")
}

/// The account files of a machine state directory.
fn account_files(state: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(state.join("agent-looper/accounts"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default()
}

fn live_state(p: &Project) -> Option<Json> {
    let run = p.run_dirs().pop()?;
    serde_json::from_slice(&std::fs::read(run.join("state.json")).ok()?).ok()
}

#[test]
fn two_loopers_on_one_account_the_second_waits_for_the_reset_the_first_saw() {
    let state = tempfile::tempdir().expect("state dir");
    // Looper a: its first prompt hits the account's limit (resets in 6 s); its retry after
    // the reset succeeds.
    let a = claude_project(
        "=== call 1\nrate-limit-event rejected 6 1.0 five_hour\nclaude-error 429 You've hit your limit\nexit 1\n=== default\nclaude-reply done after the reset\n",
        "max_loops = 1\nrate_limit_max_wait_seconds = 30",
        "account = \"shared\"",
    );
    let run_a = spawn_run(&a, state.path(), &["--label", "a"]);
    assert!(
        wait_until(30.0, || account_files(state.path()).iter().any(|f| {
            std::fs::read_to_string(f).is_ok_and(|t| t.contains("\"until\""))
        })),
        "looper a recorded the account's limit"
    );
    // Looper b, same account, other project: nothing of its own has failed.
    let b = claude_project(
        "=== default\nclaude-reply working\n",
        "max_loops = 2",
        "account = \"shared\"",
    );
    let run_b = spawn_run(&b, state.path(), &["--label", "b"]);
    // While it waits, its state and `looper status` say why.
    assert!(
        wait_until(20.0, || live_state(&b).is_some_and(|s| s["status"]
            == "retrying"
            && s["hold"] == "account_limit")),
        "looper b holds for the account"
    );
    let st = looper(&b, state.path())
        .args(["status", "--json"])
        .output()
        .expect("status");
    let doc: Json = serde_json::from_slice(&st.stdout).expect("status json");
    let run = &doc["runs"][0];
    assert_eq!(run["hold"], "account_limit", "{doc:#}");
    assert_eq!(run["account"], "shared", "{doc:#}");
    let shown = run["retry_status"].as_str().unwrap_or_default();
    assert!(
        shown.starts_with("account shared is limited, seen by looper a (run "),
        "{shown}"
    );
    let table = looper(&b, state.path())
        .arg("status")
        .output()
        .expect("status");
    assert!(
        stdout(&table).contains("account shared is limited"),
        "{}",
        stdout(&table)
    );
    let out_b = wait(run_b);
    let out_a = wait(run_a);
    assert_eq!(out_a.status.code(), Some(0), "{}", why(&a, &out_a));
    assert_eq!(out_b.status.code(), Some(0), "{}", why(&b, &out_b));
    // a saw the limit and retried after it; b held before its first prompt until the reset.
    let recorded = events_named(&a, "account_limit_recorded");
    assert_eq!(recorded.len(), 1, "{}", why(&a, &out_a));
    let until = recorded[0]["until"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .expect("until");
    let holds = events_named(&b, "quota_wait");
    assert_eq!(holds.len(), 1, "{}", why(&b, &out_b));
    assert_eq!(holds[0]["cause"], "account_limit");
    assert_eq!(holds[0]["prompt_index"], 1);
    let first_b = &events_named(&b, "prompt_started")[0];
    assert!(
        ts(first_b) >= until.with_timezone(&chrono::Utc) - chrono::TimeDelta::milliseconds(200),
        "b's first prompt {} went out before the reset {until}",
        ts(first_b)
    );
    assert_eq!(b.state()["stop_reason"], "max loops reached: 2");
    assert_eq!(b.calls(), 2, "b ran both loops after the hold");
    // a's own retry waited for the limit it saw; it never held for its own record.
    assert!(events_named(&a, "quota_wait").is_empty());
    assert_eq!(a.calls(), 2);
}

#[test]
fn a_window_near_its_limit_holds_new_loops_until_it_resets() {
    let state = tempfile::tempdir().expect("state dir");
    // Loop 1 reports the 5-hour window at 95%, resetting in 5 s; with 10% headroom, loop 2
    // waits for the reset. (The reading after the reset is low again.)
    let p = claude_project(
        "=== call 1\nrate-limit-event allowed_warning 5 0.95 five_hour\nclaude-reply one\n=== default\nrate-limit-event allowed 18000 0.1 five_hour\nclaude-reply two\n",
        "max_loops = 2\nmin_headroom_percent = 10",
        "",
    );
    let run = spawn_run(&p, state.path(), &[]);
    assert!(
        wait_until(20.0, || live_state(&p)
            .is_some_and(|s| s["hold"] == "headroom")),
        "the second loop is held"
    );
    let table = looper(&p, state.path())
        .arg("status")
        .output()
        .expect("status");
    let shown = stdout(&table);
    assert!(shown.contains("limits: claude 5h: 95% until"), "{shown}");
    assert!(shown.contains("less than 10% headroom"), "{shown}");
    let out = wait(run);
    assert_eq!(out.status.code(), Some(0), "{}", why(&p, &out));
    let holds = events_named(&p, "quota_wait");
    assert_eq!(holds.len(), 1, "{}", why(&p, &out));
    assert_eq!(holds[0]["cause"], "headroom");
    assert_eq!(holds[0]["loop"], 2);
    let reset = events_named(&p, "rate_limits")[0]["windows"][0]["resets_at"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .expect("reset")
        .with_timezone(&chrono::Utc);
    let second = &events_named(&p, "prompt_started")[1];
    assert!(
        ts(second) >= reset - chrono::TimeDelta::milliseconds(200),
        "{} vs {reset}",
        ts(second)
    );
    // The latest reading is in the state, per agent and window.
    let st = p.state();
    assert_eq!(st["rate_limits"][0]["agent"], "claude", "{st:#}");
    assert_eq!(st["rate_limits"][0]["window"], "five_hour");
    assert_eq!(st["rate_limits"][0]["used_percent"], 10.0);
}

#[test]
fn the_daily_budget_counts_every_run_on_the_machine_today() {
    let state = tempfile::tempdir().expect("state dir");
    // Run 1 spends $0.03 (three replies at $0.01).
    let first = claude_project("=== default\nclaude-reply ok\n", "max_loops = 3", "");
    let out = looper(&first, state.path())
        .arg("--local")
        .output()
        .expect("run 1");
    assert_eq!(out.status.code(), Some(0), "{}", why(&first, &out));
    // Run 2, elsewhere, with a daily budget of $0.04: its first loop brings the machine to
    // $0.04, and the second never starts.
    let second = claude_project("=== default\nclaude-reply ok\n", "max_loops = 5", "");
    let out = looper(&second, state.path())
        .args([
            "--local",
            "--daily-max-cost",
            "0.04",
            "--daily-budget-action",
            "stop",
        ])
        .output()
        .expect("run 2");
    assert_eq!(out.status.code(), Some(3), "{}", why(&second, &out));
    assert_eq!(
        second.state()["stop_reason"],
        "daily cost budget reached: $0.0400 used today on this machine (2 runs; max $0.0400)"
    );
    assert_eq!(second.state()["stop_kind"], "daily_budget");
    assert_eq!(second.calls(), 1);
    // Waiting instead: held for the next day (shown as such), until stopped.
    let third = claude_project("=== default\nclaude-reply ok\n", "max_loops = 5", "");
    let run = spawn_run(&third, state.path(), &["--daily-max-cost", "0.04"]);
    assert!(
        wait_until(20.0, || live_state(&third)
            .is_some_and(|s| s["hold"] == "daily_budget")),
        "held by the daily budget"
    );
    let st = live_state(&third).expect("state");
    assert!(
        st["retry_status"]
            .as_str()
            .is_some_and(|s| s.starts_with("daily cost budget reached: $0.0400 used today on this machine (2 runs; max $0.0400); held ")
                && s.contains("until the next day")),
        "{st:#}"
    );
    let stop = looper(&third, state.path())
        .args(["control", "stop", "--after-loop", "--wait"])
        .output()
        .expect("stop");
    assert_eq!(stop.status.code(), Some(0), "{}", stderr(&stop));
    let out = wait(run);
    assert_eq!(out.status.code(), Some(0), "{}", why(&third, &out));
    assert_eq!(third.calls(), 0, "nothing ran over the budget");
}

#[test]
fn the_clis_own_retries_show_in_the_state_while_the_attempt_runs() {
    let state = tempfile::tempdir().expect("state dir");
    let p = claude_project(
        "=== default\nclaude-retry 429\nwait-for ${LOOPER_RUN_DIR}/go\nclaude-reply done\n",
        "max_loops = 1",
        "",
    );
    let run = spawn_run(&p, state.path(), &[]);
    assert!(
        wait_until(20.0, || live_state(&p)
            .is_some_and(|s| s["agent_retry"]["status"] == 429)),
        "the retry is in the state while the attempt runs"
    );
    let table = looper(&p, state.path())
        .arg("status")
        .output()
        .expect("status");
    assert!(
        stdout(&table).contains("claude retrying itself: 1/10 after 429, next in 1s"),
        "{}",
        stdout(&table)
    );
    let dir = p.run_dirs().pop().expect("run dir");
    std::fs::write(dir.join("go"), "").expect("go");
    let out = wait(run);
    assert_eq!(out.status.code(), Some(0), "{}", why(&p, &out));
    let names = p.event_names();
    let retry = names
        .iter()
        .position(|n| n == "agent_retry")
        .expect("event");
    let done = names
        .iter()
        .position(|n| n == "prompt_completed")
        .expect("done");
    assert!(retry < done, "{names:?}");
    assert_eq!(
        p.state()["agent_retry"],
        Json::Null,
        "over with the attempt"
    );
    let ev = &events_named(&p, "agent_retry")[0];
    assert_eq!(ev["retry"]["attempt"], 1);
    assert_eq!(ev["retry"]["delay_seconds"], 1.0);
}

#[test]
fn the_agents_cli_is_recorded_at_the_start_and_a_change_between_loops_is_said() {
    use std::os::unix::fs::PermissionsExt;
    let state = tempfile::tempdir().expect("state dir");
    let p = claude_project("=== default\nclaude-reply ok\n", "max_loops = 2", "");
    // A `claude` that answers --version itself and is otherwise the fake agent.
    let wrapper = |version: &str| {
        format!(
            "#!/bin/sh\nif [ \"$1\" = --version ]; then echo '{version} (Claude Code)'; exit 0; fi\nexec {:?} \"$@\"\n",
            fake_agent_bin().display().to_string()
        )
    };
    let bin = p.join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    let exe = bin.join("claude");
    std::fs::write(&exe, wrapper("9.9.1")).expect("write");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let cfg = p.read("agent-looper.toml").replace(
        &format!("{:?}", fake_agent_bin().display().to_string()),
        &format!("{:?}", exe.display().to_string()),
    );
    p.write("agent-looper.toml", &cfg);
    p.write(".gitignore", "bin/\n");
    let run = spawn_run(&p, state.path(), &["--sleep", "3"]);
    assert!(
        wait_until(20.0, || p.run_dirs().pop().is_some_and(|d| read_events(&d)
            .iter()
            .any(|e| e["event"] == "loop_completed"))),
        "loop 1 ended"
    );
    // Updated between the loops, as an auto-update does: a new file under the same name.
    let new = bin.join("claude.new");
    std::fs::write(&new, wrapper("9.9.2")).expect("write");
    std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::rename(&new, &exe).expect("rename");
    let out = wait(run);
    assert_eq!(out.status.code(), Some(0), "{}", why(&p, &out));
    let started = &events_named(&p, "run_started")[0];
    let canonical = exe.canonicalize().expect("canonical").display().to_string();
    assert_eq!(started["agent_cli"]["path"], canonical.as_str());
    assert_eq!(started["agent_cli"]["version"], "9.9.1 (Claude Code)");
    let changed = events_named(&p, "agent_cli_changed");
    assert_eq!(changed.len(), 1, "{}", why(&p, &out));
    assert_eq!(changed[0]["previous"]["version"], "9.9.1 (Claude Code)");
    assert_eq!(changed[0]["current"]["version"], "9.9.2 (Claude Code)");
    assert!(
        stdout(&out).contains("the agent's CLI changed on disk"),
        "{}",
        stdout(&out)
    );
    let doc: Json = serde_json::from_slice(
        &looper(&p, state.path())
            .args(["status", "--json"])
            .output()
            .expect("status")
            .stdout,
    )
    .expect("json");
    let run = &doc["runs"][0];
    assert_eq!(
        run["agent_cli"]["version"], "9.9.2 (Claude Code)",
        "{doc:#}"
    );
    assert_eq!(
        run["agent_cli_changed"]["previous_version"],
        "9.9.1 (Claude Code)"
    );
    let table = looper(&p, state.path())
        .arg("status")
        .output()
        .expect("status");
    assert!(
        stdout(&table).contains("agent CLI changed at"),
        "{}",
        stdout(&table)
    );
    assert!(
        stdout(&table).contains("9.9.1 (Claude Code) -> 9.9.2 (Claude Code)"),
        "{}",
        stdout(&table)
    );
}

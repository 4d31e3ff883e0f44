//! The verify and reviewer gates (issue 15) in whole runs: with the fake agent as maker (and
//! as reviewer), real verify commands in their own process groups, and, in the end-to-end
//! tier, the real codex as maker and the real claude (json) as reviewer against the mock
//! model server.

use serde_json::Value as Json;

use crate::support::*;

fn chmod_x(p: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Append TOML tables to the project's config.
fn add_config(p: &Project, tables: &str) {
    let mut cfg = p.read("agent-looper.toml");
    cfg.push('\n');
    cfg.push_str(tables);
    p.write("agent-looper.toml", &cfg);
}

/// A verify script that answers its n-th run from `cases` (the last case repeats).
fn verify_script(p: &Project, cases: &[&str]) -> String {
    let mut arms = String::new();
    for (i, body) in cases.iter().enumerate() {
        let pat = if i + 1 == cases.len() {
            "*".to_string()
        } else {
            (i + 1).to_string()
        };
        arms.push_str(&format!("  {pat}) {body} ;;\n"));
    }
    let script = format!(
        "#!/bin/sh\nn=$(cat \"$0.count\" 2>/dev/null || echo 0)\nn=$((n+1))\necho $n > \"$0.count\"\ncase $n in\n{arms}esac\n"
    );
    p.write("verify.sh", &script);
    chmod_x(&p.join("verify.sh"));
    p.join("verify.sh").display().to_string()
}

/// The prompts the fake agent was given, from its `record` lines.
fn recorded_prompts(p: &Project, file: &str) -> Vec<String> {
    std::fs::read_to_string(p.join(file))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Json>(l).ok())
        .filter_map(|r| {
            r["argv"]
                .as_array()
                .and_then(|a| a.last())
                .and_then(Json::as_str)
                .map(str::to_string)
        })
        .collect()
}

fn named<'a>(events: &'a [Json], name: &str) -> Vec<&'a Json> {
    events.iter().filter(|e| e["event"] == name).collect()
}

fn why(p: &Project, out: &std::process::Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}\n--- events\n{}",
        out.status.code(),
        stdout(out),
        stderr(out),
        p.events()
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    )
}

#[test]
fn a_verify_that_fails_twice_then_passes_feeds_each_failure_back_once() {
    let p = Project::new();
    p.fake_agent(
        &format!(
            "=== default\nrecord {}\nsay working\nsay EXIT_SIGNAL: true\n",
            p.join("calls.jsonl").display()
        ),
        "completion_enabled = true\n",
    );
    let script = verify_script(
        &p,
        &[
            "echo 'test parse ... FAILED: FIRST FAILURE (expected 2, got 3)'; exit 1",
            "echo 'test io ... FAILED: SECOND FAILURE' >&2; exit 101",
            "echo 'test result: ok. 5 passed'; exit 0",
        ],
    );
    add_config(&p, &format!("[verify]\ncommand = [{script:?}]\n"));
    let out = p.run(&["--max-loops", "6"]);
    let why = why(&p, &out);
    assert_eq!(out.status.code(), Some(0), "{why}");
    assert_eq!(p.state()["stop_reason"], "completion marker", "{why}");
    // Completion only after the pass: three loops, three verifies.
    let events = p.events();
    let verdicts: Vec<bool> = named(&events, "verify_completed")
        .iter()
        .map(|e| e["pass"].as_bool().unwrap_or(true))
        .collect();
    assert_eq!(verdicts, [false, false, true], "{why}");
    let blocked: Vec<&Json> = named(&events, "loop_completed")
        .iter()
        .map(|e| &e["blocked_by"])
        .collect();
    assert_eq!(
        blocked,
        [&Json::from("verify"), &Json::from("verify"), &Json::Null],
        "{why}"
    );
    let exits: Vec<&Json> = named(&events, "verify_completed")
        .iter()
        .map(|e| &e["exit_code"])
        .collect();
    assert_eq!(exits, [&Json::from(1), &Json::from(101), &Json::from(0)]);
    // Each failure reached the agent exactly once, in the next prompt.
    let prompts = recorded_prompts(&p, "calls.jsonl");
    assert_eq!(prompts.len(), 3, "{why}");
    assert!(!prompts[0].contains("looper feedback"), "{}", prompts[0]);
    assert_eq!(
        prompts[1].matches("FIRST FAILURE").count(),
        1,
        "{}",
        prompts[1]
    );
    assert!(prompts[1].contains("--- looper feedback"), "{}", prompts[1]);
    assert!(
        prompts[1].contains("verify failed: exit 1"),
        "{}",
        prompts[1]
    );
    assert_eq!(
        prompts[2].matches("SECOND FAILURE").count(),
        1,
        "{}",
        prompts[2]
    );
    assert!(!prompts[2].contains("FIRST FAILURE"), "{}", prompts[2]);
    assert_eq!(named(&events, "feedback_delivered").len(), 2);
    // The verify's output is in its own log, and the latest verify in state.json.
    let run = p.last_run();
    let log = std::fs::read_to_string(run.join("loop-0001__verify.log")).expect("verify log");
    assert!(
        log.contains("FIRST FAILURE") && log.contains("returncode: 1"),
        "{log}"
    );
    let st = p.state();
    assert_eq!(st["verify_last"]["pass"], true, "{st}");
    assert_eq!(st["verify_last"]["loop"], 3, "{st}");
    assert_eq!(st["gate_blocked"], Json::Null, "{st}");
}

#[test]
fn a_shrinking_suite_is_caught_by_min_count_and_the_breaker_stops_it() {
    let p = Project::new();
    p.fake_agent(
        "=== default\nsay EXIT_SIGNAL: true\n",
        "completion_enabled = true\n",
    );
    let script = verify_script(
        &p,
        &["echo 'running 1 test'; echo 'test result: ok. 1 passed; 0 failed'; exit 0"],
    );
    add_config(
        &p,
        &format!(
            "[verify]\ncommand = [{script:?}]\ncount_regex = '(\\d+) passed'\nmin_count = 40\ncb_verify_failures = 2\n"
        ),
    );
    let out = p.run(&["--max-loops", "5"]);
    let why = why(&p, &out);
    assert_eq!(out.status.code(), Some(3), "{why}");
    assert_eq!(
        p.state()["stop_reason"],
        "verify failed 2 time(s) in a row",
        "{why}"
    );
    assert_eq!(p.state()["stop_kind"], "verify_failures", "{why}");
    let events = p.events();
    let done = named(&events, "verify_completed");
    assert_eq!(done.len(), 2, "{why}");
    for e in done {
        assert_eq!(e["exit_code"], 0, "{e}");
        assert_eq!(e["count"], 1, "{e}");
        assert_eq!(e["pass"], false, "{e}");
        assert_eq!(e["reason"], "count 1 is below min_count 40", "{e}");
    }
}

#[test]
fn a_hung_verify_is_killed_at_its_timeout_with_no_process_left() {
    let p = Project::new();
    p.fake_agent(
        "=== default\nsay EXIT_SIGNAL: true\n",
        "completion_enabled = true\nterminate_grace_seconds = 0.5\n",
    );
    // It records its process group, leaves a grandchild, and ignores SIGTERM.
    let script = verify_script(
        &p,
        &[
            "cut -d' ' -f5 /proc/$$/stat > \"$0.pgid\"; trap '' TERM; (trap '' TERM; sleep 60) & echo hanging; sleep 60",
        ],
    );
    add_config(
        &p,
        &format!("[verify]\ncommand = [{script:?}]\ntimeout_seconds = 1\n"),
    );
    let started = std::time::Instant::now();
    let out = p.run(&["--once"]);
    let why = why(&p, &out);
    assert_eq!(out.status.code(), Some(0), "{why}");
    assert!(started.elapsed().as_secs() < 30, "{why}");
    assert_eq!(p.state()["stop_reason"], "max loops reached: 1", "{why}");
    let events = p.events();
    let v = named(&events, "verify_completed");
    assert_eq!(v.len(), 1, "{why}");
    assert_eq!(v[0]["timed_out"], true, "{why}");
    assert_eq!(v[0]["pass"], false, "{why}");
    assert_eq!(v[0]["reason"], "timed out after 1s", "{why}");
    let pgid: i64 = p
        .read("verify.sh.pgid")
        .trim()
        .parse()
        .expect("the verify's process group");
    assert!(!group_alive(pgid), "verify group {pgid} survived: {why}");
}

#[test]
fn a_reviewer_that_rejects_once_then_approves_reaches_the_maker_and_sees_the_diff() {
    let p = Project::new();
    p.fake_agent(
        &format!(
            "=== default\nrecord {}\nappend {} more work\\n\nsay EXIT_SIGNAL: true\n",
            p.join("maker.jsonl").display(),
            p.join("src.txt").display()
        ),
        "completion_enabled = true\n",
    );
    p.write(
        "review.script",
        &format!(
            "=== call 1\nrecord {rec}\nsay The parser lacks tests for empty input.\nsay VERDICT: REJECT\n=== default\nrecord {rec}\nsay Fine now.\nsay VERDICT: APPROVE\n",
            rec = p.join("reviewer.jsonl").display()
        ),
    );
    add_config(
        &p,
        &format!(
            "[review]\nagent = \"rev\"\n\n[agents.rev]\nkind = \"generic\"\nfirst_command = [{:?}, \"--session-id\", \"{{session_id}}\", \"{{prompt}}\"]\nenv = {{ FAKE_AGENT_SCRIPT = {:?} }}\n",
            fake_agent_bin().display().to_string(),
            p.join("review.script").display().to_string()
        ),
    );
    let out = p.run(&["--max-loops", "5"]);
    let why = why(&p, &out);
    assert_eq!(out.status.code(), Some(0), "{why}");
    assert_eq!(p.state()["stop_reason"], "completion marker", "{why}");
    let events = p.events();
    let verdicts: Vec<&Json> = named(&events, "review_completed")
        .iter()
        .map(|e| &e["verdict"])
        .collect();
    assert_eq!(
        verdicts,
        [&Json::from("reject"), &Json::from("approve")],
        "{why}"
    );
    // The rejection reached the maker's next prompt, once.
    let prompts = recorded_prompts(&p, "maker.jsonl");
    assert_eq!(prompts.len(), 2, "{why}");
    assert!(!prompts[0].contains("lacks tests"));
    assert_eq!(
        prompts[1]
            .matches("The parser lacks tests for empty input.")
            .count(),
        1,
        "{}",
        prompts[1]
    );
    // The reviewer saw the diff the looper made from git, in a fresh session each time.
    let reviews = std::fs::read_to_string(p.join("reviewer.jsonl")).expect("reviewer records");
    let argvs: Vec<Vec<String>> = reviews
        .lines()
        .filter_map(|l| serde_json::from_str::<Json>(l).ok())
        .map(|r| {
            r["argv"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(argvs.len(), 2, "{why}");
    assert_ne!(argvs[0][2], argvs[1][2], "the same reviewer session twice");
    let first_prompt = argvs[0].last().cloned().unwrap_or_default();
    assert!(first_prompt.contains("+more work"), "{first_prompt}");
    assert!(
        first_prompt.contains("do the thing"),
        "the goal: {first_prompt}"
    );
    let diff = std::fs::read_to_string(p.last_run().join("loop-0001__review.diff")).expect("diff");
    assert!(
        diff.contains("+more work") && diff.contains("src.txt"),
        "{diff}"
    );
    assert!(!diff.contains("state.json"), "{diff}");
    let st = p.state();
    assert_eq!(st["review_last"]["verdict"], "approve", "{st}");
    assert_eq!(st["review_last"]["rejections"], 1, "{st}");
}

#[test]
fn config_check_explains_the_gate_order_and_the_verified_preset_turns_the_gates_on() {
    let p = Project::new();
    p.write("PROMPT.md", "p\n");
    let bin = p.join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    for name in ["make", "codex", "claude"] {
        p.write(&format!("bin/{name}"), "#!/bin/sh\n");
        chmod_x(&bin.join(name));
    }
    let out = p
        .looper()
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .args([
            "config",
            "check",
            "--preset",
            "verified",
            "--verify-cmd",
            "make check -j2",
        ])
        .output()
        .expect("config check");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(
        text.contains("command = [\"make\", \"check\", \"-j2\"]"),
        "{text}"
    );
    for line in [
        "#   1. operator stop",
        "#   2. completion marker: the agent's output matches EXIT_SIGNAL:\\s*true, 1 loop(s) in a row (on the last line of its final message)",
        "#   3. plan: off",
        "#   4. verify: $ make check -j2 passes, when the marker stands; 5 failures in a row stop the run",
        "#   5. review: claude approves the diff since the run, when the marker stands; 3 rejections stop the run",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}

// ---------------------------------------------------------------------------------------
// End to end: two real CLIs in one run.

/// The real codex makes, the real claude (json) reviews, against the mock server: claude's
/// rejection reaches codex's next prompt, its approval completes the run; each review is a
/// fresh claude session; claude's receipts count toward the run's usage.
#[test]
fn e2e_codex_makes_claude_reviews_and_its_rejection_reaches_codex() {
    use crate::e2e_support::{Cli, E2e, Timing, all_strings, require};
    use crate::mock_server::{Provider, Reply};
    let Some(bin) = require("e2e_codex_makes_claude_reviews") else {
        return;
    };
    let e = E2e::new(
        Cli::Codex,
        bin,
        Timing::Shared,
        "completion_enabled = true\n",
    );
    let mut cfg = e.project.read("agent-looper.toml");
    cfg.push_str(&format!(
        "\n[review]\nagent = \"claude\"\nmax_rounds = 3\n\n{}",
        e.agent_table_for(Cli::Claude)
    ));
    e.project.write("agent-looper.toml", &cfg);
    e.project
        .write("PROMPT.md", "Add a parser for the config format.\n");
    e.server.push(
        Provider::OpenAi,
        Reply::text("Parser added.\nEXIT_SIGNAL: true"),
    );
    e.server.push(
        Provider::OpenAi,
        Reply::text("Edge cases handled.\nEXIT_SIGNAL: true"),
    );
    e.server.push(
        Provider::Anthropic,
        Reply::text(
            "The parser ignores empty lines incorrectly: REVIEWER-FINDING-42.\nVERDICT: REJECT",
        ),
    );
    e.server.push(
        Provider::Anthropic,
        Reply::text("All good now.\nVERDICT: APPROVE"),
    );
    let out = e.run(&["--max-loops", "4"]);
    let why = e.diagnose(&out);
    assert_eq!(out.status.code(), Some(0), "{why}");
    assert_eq!(e.state()["stop_reason"], "completion marker", "{why}");
    let verdicts: Vec<String> = e
        .events_named("review_completed")
        .iter()
        .map(|ev| ev["verdict"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(verdicts, ["reject", "approve"], "{why}");
    // The rejection reached codex's second request, once; the first request had none.
    let codex = e.server.turns(Provider::OpenAi);
    assert_eq!(codex.len(), 2, "{why}");
    let first = all_strings(&codex[0].json().expect("json"));
    let second = all_strings(&codex[1].json().expect("json"));
    assert!(!first.contains("REVIEWER-FINDING-42"), "{why}");
    assert_eq!(second.matches("REVIEWER-FINDING-42").count(), 1, "{second}");
    assert!(second.contains("--- looper feedback"), "{second}");
    // claude reviewed twice, each time in a session of its own, with the goal and a diff.
    let claude = e.server.turns(Provider::Anthropic);
    assert_eq!(claude.len(), 2, "{why}");
    let review_prompt = all_strings(&claude[0].json().expect("json"));
    assert!(
        review_prompt.contains("Add a parser for the config format."),
        "{review_prompt}"
    );
    assert!(
        review_prompt.contains("loop-0001__review.diff"),
        "{review_prompt}"
    );
    let sessions: Vec<Option<&str>> = claude
        .iter()
        .map(|t| t.header("x-claude-code-session-id"))
        .collect();
    assert!(sessions.iter().all(Option::is_some), "{why}");
    assert_ne!(sessions[0], sessions[1], "{why}");
    let started: Vec<Option<String>> = e
        .events_named("review_started")
        .iter()
        .map(|ev| ev["session_id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        started,
        sessions
            .iter()
            .map(|s| s.map(str::to_string))
            .collect::<Vec<_>>(),
        "the looper chose each review's session: {why}"
    );
    // claude's receipts are in the run's usage, beside codex's: the budgets see both.
    let tokens = |name: &str| -> u64 {
        e.events_named(name)
            .iter()
            .map(|ev| ev["usage"]["input_tokens"].as_u64().unwrap_or(0))
            .sum()
    };
    let (maker, reviewer) = (tokens("prompt_completed"), tokens("review_completed"));
    assert!(maker > 0 && reviewer > 0, "{why}");
    assert_eq!(
        e.state()["usage_total"]["input_tokens"].as_u64(),
        Some(maker + reviewer),
        "{why}"
    );
    assert!(e.survivors().is_empty(), "CLI processes left: {why}");
}

#[test]
fn with_completion_must_be_last_a_marker_before_the_last_line_does_not_complete() {
    let p = Project::new();
    p.fake_agent(
        "=== default\nsay EXIT_SIGNAL: true is what I will print when done\nsay still working\n",
        "completion_enabled = true\n",
    );
    let out = p.run(&["--max-loops", "2"]);
    assert_eq!(
        p.state()["stop_reason"],
        "completion marker",
        "{}",
        stderr(&out)
    );
    let out = p.run(&["--max-loops", "2", "--completion-must-be-last"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(p.state()["stop_reason"], "max loops reached: 2");
}

#[test]
fn status_says_which_gate_blocks_a_running_run_and_since_when() {
    let p = Project::new();
    p.fake_agent(
        "=== default\nsay EXIT_SIGNAL: true\n",
        "completion_enabled = true\n",
    );
    let script = verify_script(&p, &["echo 'tests failed'; exit 1"]);
    add_config(&p, &format!("[verify]\ncommand = [{script:?}]\n"));
    let mut child = p
        .looper()
        .args(["--local", "--label", "gated", "--sleep", "30"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn looper");
    let blocked = wait_until(20.0, || {
        p.run_dirs().last().is_some_and(|d| {
            std::fs::read(d.join("state.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<Json>(&b).ok())
                .is_some_and(|s| s["gate_blocked"] == "verify")
        })
    });
    let status = p.looper().arg("status").output().expect("status");
    let json = p
        .looper()
        .args(["status", "--json"])
        .output()
        .expect("status --json");
    let stop = p
        .looper()
        .args(["control", "stop", "gated", "--after-loop", "--wait"])
        .output()
        .expect("stop");
    let _ = child.wait();
    assert!(blocked, "the run never recorded a blocking gate");
    let table = stdout(&status);
    assert!(table.contains("blocked by verify since "), "{table}");
    assert!(table.contains(": exit 1"), "{table}");
    let doc: Json = serde_json::from_slice(&json.stdout).expect("json");
    let run = &doc["runs"][0];
    assert_eq!(run["gate_blocked"], "verify", "{run}");
    assert_eq!(run["gate_blocked_reason"], "exit 1", "{run}");
    assert!(run["gate_blocked_since"].is_string(), "{run}");
    assert_eq!(run["verify_last"]["pass"], false, "{run}");
    assert_eq!(stop.status.code(), Some(0), "{}", stderr(&stop));
}

/// A real claude reviewer that hits a 429 is retried (honouring its delay) without using up
/// a review round: the run still completes on its approval.
#[test]
fn e2e_a_rate_limited_claude_reviewer_is_retried_not_counted_as_a_rejection() {
    use crate::e2e_support::{Cli, E2e, Timing, require};
    use crate::mock_server::{Provider, Reply};
    let Some(bin) = require("e2e_rate_limited_reviewer") else {
        return;
    };
    let e = E2e::new(
        Cli::Codex,
        bin,
        Timing::Shared,
        "completion_enabled = true\n",
    );
    let mut cfg = e.project.read("agent-looper.toml");
    cfg.push_str(&format!(
        "\n[review]\nagent = \"claude\"\nmax_rounds = 1\n\n{}",
        e.agent_table_for(Cli::Claude)
    ));
    e.project.write("agent-looper.toml", &cfg);
    e.project.write("PROMPT.md", "Tidy the README.\n");
    e.server
        .push(Provider::OpenAi, Reply::text("Done.\nEXIT_SIGNAL: true"));
    e.server
        .push(Provider::Anthropic, Reply::status(429, Some(1)));
    e.server
        .push(Provider::Anthropic, Reply::text("VERDICT: APPROVE"));
    let out = e.run(&["--max-loops", "2"]);
    let why = e.diagnose(&out);
    assert_eq!(out.status.code(), Some(0), "{why}");
    assert_eq!(e.state()["stop_reason"], "completion marker", "{why}");
    let verdicts: Vec<String> = e
        .events_named("review_completed")
        .iter()
        .map(|ev| ev["verdict"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(verdicts, ["retry", "approve"], "{why}");
    let waits = e.events_named("retry_wait");
    assert_eq!(waits.len(), 1, "{why}");
    assert_eq!(waits[0]["retry_kind"], "rate_limit", "{why}");
    assert_eq!(waits[0]["prompt_index"], 0, "the reviewer's wait: {why}");
    assert_eq!(e.server.turns(Provider::OpenAi).len(), 1, "{why}");
}

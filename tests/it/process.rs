//! Process supervision against real processes: group kills, signals, bounded memory and a
//! byte-exact log whatever the agent prints.

use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::*;

/// Recorded agent process groups of a run (from `child_pgid` in state/events).
fn recorded_pgids(p: &Project) -> Vec<i64> {
    let mut v: Vec<i64> = std::fs::read_to_string(p.join("agent.pids"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|r| r["pgid"].as_i64())
        .collect();
    v.dedup();
    v
}

#[test]
fn timeout_kills_the_whole_group_including_a_grandchild_that_ignores_sigterm() {
    let p = Project::new();
    p.fake_agent(
        &format!(
            "=== default\nrecord {}\nignore-term\ngrandchild 60\nsay started\nsleep 60\n",
            p.join("agent.pids").display()
        ),
        "timeout_seconds = 1\nterminate_grace_seconds = 0.5\n",
    );
    let t = Instant::now();
    let out = p.run(&["--once"]);
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    let st = p.state();
    assert_eq!(st["stop_reason"], "local timeout after 1 seconds");
    assert_eq!(st["status"], "error");
    let pgids = recorded_pgids(&p);
    assert_eq!(pgids.len(), 1);
    assert!(
        wait_until(3.0, || !group_alive(pgids[0])),
        "the agent group survived"
    );
    let log =
        std::fs::read_to_string(p.last_run().join("loop-0001__prompt-001.log")).unwrap_or_default();
    assert!(log.contains("stdout: started"), "{log}");
    assert!(
        log.contains("stop_reason: local timeout after 1 seconds"),
        "{log}"
    );
}

#[test]
fn a_grandchild_holding_stdout_does_not_hang_the_attempt() {
    let p = Project::new();
    p.fake_agent(
        &format!(
            "=== default\nrecord {}\ngrandchild 60\nsay bye\n",
            p.join("agent.pids").display()
        ),
        "pipe_leak_timeout_seconds = 0.3\n",
    );
    let t = Instant::now();
    let out = p.run(&["--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "took {:?}",
        t.elapsed()
    );
    let pgids = recorded_pgids(&p);
    assert!(wait_until(3.0, || !group_alive(pgids[0])));
}

fn start_background(p: &Project, args: &[&str]) -> std::process::Child {
    let mut c = p.looper();
    c.arg("--local")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c.spawn().expect("spawn looper")
}

fn wait_for_event(p: &Project, name: &str, secs: f64) -> bool {
    wait_until(secs, || {
        p.run_dirs()
            .last()
            .is_some_and(|d| read_events(d).iter().any(|e| e["event"] == name))
    })
}

fn signal_scenario(sig: Signal, name: &str) {
    let p = Project::new();
    p.fake_agent(
        &format!(
            "=== default\nrecord {}\nignore-term\nsleep 60\n",
            p.join("agent.pids").display()
        ),
        "terminate_grace_seconds = 0.5\n",
    );
    let mut child = start_background(&p, &["--max-loops", "3"]);
    assert!(wait_for_event(&p, "prompt_started", 10.0));
    assert!(wait_until(5.0, || !recorded_pgids(&p).is_empty()));
    kill(Pid::from_raw(child.id() as i32), sig).expect("signal");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(130), "{name}");
    let st = p.state();
    assert_eq!(st["status"], "interrupted", "{name}");
    assert_eq!(st["stop_reason"], format!("interrupted by {name}"));
    assert_eq!(
        p.event_names().last().map(String::as_str),
        Some("run_stopped")
    );
    let pgid = recorded_pgids(&p)[0];
    assert!(
        wait_until(3.0, || !group_alive(pgid)),
        "{name}: agent group left behind"
    );
}

#[test]
fn sigterm_to_the_supervisor_stops_the_agent_and_records_the_end() {
    signal_scenario(Signal::SIGTERM, "SIGTERM");
}

#[test]
fn sigint_to_the_supervisor_stops_the_agent_and_records_the_end() {
    signal_scenario(Signal::SIGINT, "SIGINT");
}

#[test]
fn sighup_to_the_supervisor_stops_the_agent_and_records_the_end() {
    signal_scenario(Signal::SIGHUP, "SIGHUP");
}

#[test]
fn sigkill_of_the_supervisor_still_ends_the_agent_group() {
    let p = Project::new();
    p.fake_agent(
        &format!(
            "=== default\nrecord {}\nignore-term\ngrandchild 60\nsleep 60\n",
            p.join("agent.pids").display()
        ),
        "",
    );
    let mut child = start_background(&p, &["--once"]);
    assert!(wait_until(10.0, || !recorded_pgids(&p).is_empty()));
    let pgid = recorded_pgids(&p)[0];
    assert!(group_alive(pgid));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).expect("kill");
    let _ = child.wait();
    assert!(
        wait_until(5.0, || !group_alive(pgid)),
        "the guard did not end the group"
    );
    // The state is left running: `looper status` reports it as stale.
    assert_eq!(p.state()["status"], "running");
}

#[test]
fn the_agent_gets_run_context_with_absolute_paths_and_nothing_else_new() {
    let p = Project::new();
    std::fs::create_dir_all(p.join("sub")).expect("mkdir");
    p.fake_agent(
        &format!("=== default\nrecord {}\n", p.join("agent.pids").display()),
        "",
    );
    let out = p.run(&["--once", "--cwd", "sub"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rec: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(p.join("agent.pids"))
            .expect("record")
            .lines()
            .next()
            .expect("line"),
    )
    .expect("json");
    let run_dir = p.last_run();
    let env = &rec["env"];
    for (k, want) in [
        ("RUN_DIR", run_dir.display().to_string()),
        (
            "CONTROL_FILE",
            run_dir.join("control.jsonl").display().to_string(),
        ),
        (
            "FOCUS_FILE",
            run_dir.join("focus.jsonl").display().to_string(),
        ),
        (
            "OPERATOR_NOTES_FILE",
            run_dir.join("operator_notes.jsonl").display().to_string(),
        ),
    ] {
        assert_eq!(env[format!("CODEX_LOOPER_{k}")], want.as_str(), "{k}");
        assert_eq!(env[format!("LOOPER_{k}")], want.as_str(), "{k}");
    }
    assert_eq!(rec["cwd"], p.join("sub").display().to_string());
    // Only documented variables are added to what the supervisor had.
    let mine: std::collections::BTreeSet<String> = std::env::vars().map(|(k, _)| k).collect();
    let added: Vec<String> = env
        .as_object()
        .expect("env")
        .keys()
        .filter(|k| !mine.contains(*k))
        .filter(|k| !k.starts_with("CODEX_LOOPER_") && !k.starts_with("LOOPER_"))
        .filter(|k| {
            ![
                "FAKE_AGENT_SCRIPT",
                "XDG_STATE_HOME",
                "XDG_CONFIG_HOME",
                "PWD",
                "OLDPWD",
            ]
            .contains(&k.as_str())
        })
        .cloned()
        .collect();
    assert!(added.is_empty(), "unexpected variables: {added:?}");
    // The agent runs in its own process group.
    assert_ne!(
        rec["pgid"].as_i64(),
        Some(i64::from(nix::unistd::getpgrp().as_raw()))
    );
}

#[test]
fn hostile_prompt_reaches_the_agent_byte_for_byte() {
    let p = Project::new();
    let prompt = "-n \"quoted\" 'single' $HOME `tick` \\back\nsecond line ünïcødé 🚀";
    p.write("PROMPT.md", prompt);
    p.fake_agent(
        &format!("=== default\nrecord {}\n", p.join("agent.pids").display()),
        "",
    );
    let out = p.run(&["--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rec: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(p.join("agent.pids"))
            .expect("rec")
            .lines()
            .next()
            .expect("l"),
    )
    .expect("json");
    assert_eq!(
        rec["argv"]
            .as_array()
            .and_then(|a| a.last())
            .and_then(|v| v.as_str()),
        Some(prompt)
    );
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn huge_output_keeps_memory_bounded_and_the_log_byte_exact() {
    const MIB: usize = 1 << 20;
    let p = Project::new();
    // 192 MiB of 100-byte lines, a 64 MiB line without a newline, invalid UTF-8, the marker.
    p.fake_agent(
        &format!(
            "=== default\nflood {}\nlongline {}\ninvalid-utf8\nsay EXIT_SIGNAL: true\n",
            192 * MIB,
            64 * MIB
        ),
        "",
    );
    let mut child = start_background(
        &p,
        &[
            "--once",
            "--complete-on",
            "EXIT_SIGNAL:\\s*true",
            "--tmux-layout",
            "single",
        ],
    );
    let pid = child.id();
    let mut peak = 0;
    let status = loop {
        if let Some(k) = vm_hwm_kib(pid) {
            peak = peak.max(k);
        }
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    assert!(peak > 0, "peak memory was sampled");
    assert!(peak < 32 * 1024, "supervisor peak RSS {peak} KiB >= 32 MiB");
    assert_eq!(p.state()["stop_reason"], "completion marker");

    let log = std::fs::read(p.last_run().join("loop-0001__prompt-001.log")).expect("log");
    let got =
        agent_looper::effects::outlog::reconstruct(&log, agent_looper::agents::Stream::Stdout);
    let mut want = Vec::with_capacity(257 * MIB);
    let mut line = vec![b'x'; 99];
    line.push(b'\n');
    while want.len() + 100 <= 192 * MIB {
        want.extend_from_slice(&line);
    }
    want.extend(std::iter::repeat_n(b'x', 192 * MIB - want.len()));
    // The flood's last partial line continues into the long line (no newline between).
    want.extend(std::iter::repeat_n(b'y', 64 * MIB));
    want.extend_from_slice(b"bad bytes: \xff\xfe\xc3\x28\n");
    want.extend_from_slice(b"EXIT_SIGNAL: true\n");
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the log does not reproduce the agent's stdout");
    assert_eq!(
        p.state()["last_output_bytes"].as_u64(),
        Some(want.len() as u64)
    );
}

#[test]
fn rate_limited_prompts_are_retried_with_the_provider_delay() {
    let p = Project::new();
    p.fake_agent(
        "=== call 1\nrate-limit-event rejected 1\nexit 1\n=== default\nsay fine\n",
        "retry_backoff_base_seconds = 0.1\n",
    );
    let out = p.run(&["--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(p.calls(), 2);
    let wait = p
        .events()
        .into_iter()
        .find(|e| e["event"] == "retry_wait")
        .expect("retry_wait");
    assert_eq!(wait["retry_kind"], "rate_limit");
    assert_eq!(wait["reason"], "rate limit event: status=rejected");
    let w = wait["wait_seconds"].as_f64().unwrap_or(-1.0);
    assert!((0.0..=1.5).contains(&w), "{w}");
}

#[test]
fn transient_errors_stop_at_the_cap() {
    let p = Project::new();
    p.fake_agent(
        "=== default\nerr Error: the model is overloaded\nexit 1\n",
        "retry_backoff_base_seconds = 0.01\n",
    );
    let out = p.run(&["--once", "--max-transient-retries", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(p.calls(), 3);
    let reason = p.state()["stop_reason"].as_str().unwrap_or("").to_string();
    assert!(reason.starts_with("transient retry limit reached after 2 attempts: stop pattern detected in stderr: 'overloaded'"), "{reason}");
}

#[test]
fn nonzero_exit_stops_unless_ignored() {
    let p = Project::new();
    p.fake_agent("=== default\nsay hi\nexit 3\n", "");
    let out = p.run(&["--max-loops", "3"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(p.state()["stop_reason"], "command exited with code 3");
    assert_eq!(p.state()["returncode"], 3);
    let out = p.run(&["--max-loops", "2", "--ignore-nonzero"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(p.state()["stop_reason"], "max loops reached: 2");
}

#[test]
fn dry_run_prints_the_exact_argv_and_records_a_dry_run() {
    let p = Project::new();
    p.fake_agent("=== default\nsay hi\n", "");
    p.write("PROMPT.md", "it's a $test");
    let out = p.run(&["--dry-run", "--once"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let shown = text
        .lines()
        .find_map(|l| l.strip_prefix("$ "))
        .expect("a $ line");
    let argv = shlex::split(shown).expect("the printed command is valid shell");
    assert_eq!(
        argv.last().map(String::as_str),
        Some("it's a $test"),
        "{shown}"
    );
    assert_eq!(p.calls(), 0);
    assert_eq!(p.state()["dry_run"], true);
    assert_eq!(p.state()["stop_reason"], "dry run complete");
}

#[test]
fn a_prompt_edited_between_loops_is_reloaded() {
    let p = Project::new();
    p.write("PROMPT.md", "first");
    p.fake_agent(
        &format!(
            "=== call 1\nrecord {0}\nwrite {1} second\n=== default\nrecord {0}\n",
            p.join("agent.pids").display(),
            p.join("PROMPT.md").display()
        ),
        "",
    );
    let out = p.run(&["--max-loops", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let prompts: Vec<String> = std::fs::read_to_string(p.join("agent.pids"))
        .expect("rec")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|r| r["argv"].as_array()?.last()?.as_str().map(str::to_string))
        .collect();
    assert_eq!(prompts, ["first", "second"]);
    assert_eq!(p.state()["prompt_reload_count"], 2);
}

#[test]
fn a_missing_executable_is_refused_before_anything_starts() {
    let p = Project::new();
    p.write("PROMPT.md", "x");
    p.write("agent-looper.toml", "[looper]\ndefault_agent = \"x\"\n[agents.x]\nkind = \"generic\"\nfirst_command = [\"no-such-agent-xyz\", \"{prompt}\"]\n");
    let out = p.run(&["--once"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("agent executable not found: no-such-agent-xyz"),
        "{}",
        stderr(&out)
    );
    assert!(
        p.run_dirs().is_empty(),
        "a failed start leaves no run directory"
    );
}

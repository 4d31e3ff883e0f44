//! Issue 20's hangs, late stops and messages, through the binaries: control lines that do not
//! start on a line boundary, hostile records under `looper status`, a focus file the agent
//! floods, a terminal that stops reading, git work that blocks, terminal escapes from the
//! agent, and exit codes that must say what happened.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// Wait for a child up to `secs`; kill it and fail if it is still running.
fn wait_or_kill(
    child: &mut std::process::Child,
    secs: f64,
    what: &str,
) -> std::process::ExitStatus {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `looper <args>` in the project, given `secs` to finish (a hang fails the test).
fn run_bounded(p: &Project, args: &[&str], secs: f64) -> std::process::ExitStatus {
    let mut child = start_looper(p, args);
    wait_or_kill(&mut child, secs, &format!("looper {}", args.join(" ")))
}

fn start_looper(p: &Project, args: &[&str]) -> std::process::Child {
    p.looper()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("looper")
}

/// The run's state once it exists (a run directory is renamed into place when created).
fn state_now(p: &Project) -> Option<Json> {
    let dir = p.run_dirs().into_iter().find(|d| {
        d.file_name()
            .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
    })?;
    let bytes = std::fs::read(dir.join("state.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn wait_for_agent(p: &Project) {
    assert!(
        wait_until(15.0, || state_now(p)
            .is_some_and(|s| s["child_pgid"].as_i64().is_some())),
        "the agent never started"
    );
}

/// 20.9: bytes without a newline at the end of control.jsonl swallowed the next command.
#[test]
fn a_torn_control_line_does_not_swallow_the_next_command() {
    let p = Project::new();
    p.fake_agent("=== default\nsleep 30\n", "");
    let mut child = start_looper(&p, &["--local", "--once", "--tmux-layout", "single"]);
    wait_for_agent(&p);
    let control = p.last_run().join("control.jsonl");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&control)
        .expect("control");
    f.write_all(br#"{"id":"torn","action":"pau"#)
        .expect("torn write");
    drop(f);
    let st = run_bounded(&p, &["control", "stop", "--now", "--wait"], 15.0);
    assert_eq!(st.code(), Some(0));
    wait_or_kill(&mut child, 10.0, "the supervisor");
    assert_eq!(p.state()["stop_kind"], "control");
    let rejected: Vec<Json> = p
        .events()
        .into_iter()
        .filter(|e| e["event"] == "control_line_rejected")
        .collect();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(
        rejected[0]["preview"]
            .as_str()
            .is_some_and(|s| s.contains("\"pau")),
        "{rejected:?}"
    );
}

/// 20.10: a FIFO `state.json` hung `looper status`; a huge one was read whole.
#[test]
fn a_fifo_or_a_huge_state_is_one_unreadable_row_not_a_hang() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = dir.path().join("runs");
    let good = runs.join("20261121T000000.000000Z__good__000001");
    std::fs::create_dir_all(&good).expect("mkdir");
    std::fs::write(
        good.join("state.json"),
        r#"{"label":"good","status":"stopped","exit_code":0}"#,
    )
    .expect("state");
    let fifo = runs.join("20261121T000001.000000Z__fifo__000002");
    std::fs::create_dir_all(&fifo).expect("mkdir");
    nix::unistd::mkfifo(&fifo.join("state.json"), nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    let huge = runs.join("20261121T000002.000000Z__huge__000003");
    std::fs::create_dir_all(&huge).expect("mkdir");
    let mut big = String::from(r#"{"label":"huge","status":"running","pad":""#);
    big.push_str(&"x".repeat(6 << 20));
    big.push_str("\"}");
    std::fs::write(huge.join("state.json"), big).expect("huge");
    let mut child = Command::new(looper_bin())
        .args(["status", "--json", "--state-root"])
        .arg(&runs)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("status");
    let st = wait_or_kill(&mut child, 10.0, "looper status");
    let out = child.wait_with_output().expect("output");
    assert!(st.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Json = serde_json::from_slice(&out.stdout).expect("json");
    let runs = v["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 3);
    let by_dir = |name: &str| {
        runs.iter()
            .find(|r| r["run_dir"].as_str().is_some_and(|d| d.contains(name)))
            .cloned()
            .expect("row")
    };
    assert_eq!(by_dir("__good__")["status"], "stopped");
    let f = by_dir("__fifo__");
    assert_eq!(f["status"], "unreadable");
    assert!(
        f["error"]
            .as_str()
            .is_some_and(|e| e.contains("not a regular file")),
        "{f}"
    );
    let h = by_dir("__huge__");
    assert_eq!(h["status"], "unreadable");
    assert!(
        h["error"].as_str().is_some_and(|e| e.contains("limit")),
        "{h}"
    );
}

/// 20.11: a 20 MB focus line was read whole and copied into state.json on every write.
#[test]
fn a_flooded_focus_file_is_tail_read_and_its_summary_capped() {
    let p = Project::new();
    p.fake_agent("=== default\nsleep 3\nsay done\n", "");
    let mut child = start_looper(&p, &["--local", "--once", "--tmux-layout", "single"]);
    wait_for_agent(&p);
    let focus = p.last_run().join("focus.jsonl");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&focus)
        .expect("focus");
    let huge = format!("{{\"summary\":\"{}\"}}\n", "y".repeat(20 << 20));
    f.write_all(huge.as_bytes()).expect("flood");
    let long = format!("{{\"summary\":\"latest {}\"}}\n", "z".repeat(5000));
    f.write_all(long.as_bytes()).expect("latest");
    drop(f);
    assert!(
        wait_until(10.0, || p.state()["focus"]
            .as_str()
            .is_some_and(|s| s.starts_with("latest"))),
        "the latest summary reached state.json"
    );
    let st = wait_or_kill(&mut child, 20.0, "the supervisor");
    assert!(st.success());
    let focus = p.state()["focus"].as_str().unwrap_or_default().to_string();
    assert!(
        focus.chars().count() <= 500,
        "{} chars",
        focus.chars().count()
    );
    let size = std::fs::metadata(p.last_run().join("state.json"))
        .expect("state")
        .len();
    assert!(size < 64 * 1024, "state.json is {size} bytes");
}

/// 20.14: a 150 KB next-prompt note was accepted, then the next prompt failed to start.
#[test]
fn a_note_too_long_for_a_prompt_is_refused_up_front() {
    let p = Project::new();
    p.fake_agent("=== default\nsleep 30\n", "");
    let mut child = start_looper(&p, &["--local", "--once", "--tmux-layout", "single"]);
    wait_for_agent(&p);
    p.write("note.txt", &"n".repeat(150_000));
    let out = p
        .looper()
        .args([
            "control",
            "note",
            "--delivery",
            "next-prompt",
            "--note-file",
            "note.txt",
        ])
        .output()
        .expect("note");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("150000 bytes"), "{}", stderr(&out));
    let control = std::fs::read_to_string(p.last_run().join("control.jsonl")).expect("control");
    assert!(control.is_empty(), "nothing queued: {control:?}");
    let _ = p.looper().args(["control", "stop", "--now"]).output();
    wait_or_kill(&mut child, 10.0, "the supervisor");
}

/// 20.16: `--repair-stale` with an events.jsonl it cannot append to rewrote state.json as
/// stopped, recorded no `run_stopped`, and exited 0.
#[test]
fn a_repair_that_cannot_record_its_event_changes_nothing_and_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = dir.path().join("runs");
    let run = runs.join("20261121T000000.000000Z__dead__000001");
    std::fs::create_dir_all(&run).expect("mkdir");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    }
    let state =
        r#"{"label":"dead","status":"running","pid":999999,"pid_identity":"linux-proc:none:1"}"#;
    std::fs::write(run.join("state.json"), state).expect("state");
    // An events "file" that cannot be appended to.
    std::fs::create_dir(run.join("events.jsonl")).expect("mkdir events");
    let out = Command::new(looper_bin())
        .args(["status", "--repair-stale", "--state-root"])
        .arg(&runs)
        .output()
        .expect("status");
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("repair failed: dead"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        std::fs::read_to_string(run.join("state.json")).expect("state"),
        state,
        "the state is left as it was"
    );
}

/// 20.7: a terminal that stops reading (a paused pager, Ctrl-S) stopped timeouts, control
/// and signals. Here nobody reads the supervisor's stdout at all.
#[test]
fn a_terminal_that_stops_reading_does_not_stop_control() {
    let p = Project::new();
    p.fake_agent("=== default\nflood 4000000 200\nsleep 30\n", "");
    // stdout is a pipe nobody reads: its 64 KiB fill at once.
    let mut child = p
        .looper()
        .args(["--local", "--once", "--tmux-layout", "single"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("looper");
    wait_for_agent(&p);
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let st = run_bounded(&p, &["control", "stop", "--now", "--wait"], 15.0);
    assert_eq!(st.code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    wait_or_kill(&mut child, 10.0, "the supervisor");
    let log = std::fs::metadata(p.last_run().join("loop-0001__prompt-001.log"))
        .expect("log")
        .len();
    assert!(log > 4_000_000, "the log keeps everything: {log} bytes");
}

/// 20.8: git work held back signals (SIGTERM took effect 15-23 s late during a
/// `--backup-dirty` snapshot of a large work tree). The snapshot compresses 128 MiB of
/// incompressible untracked data, seconds of work: the signal must end the run at once, and
/// no attempt may start after it.
#[test]
fn a_signal_during_git_work_ends_the_run_at_once() {
    use rand::{RngCore, SeedableRng};
    let p = Project::new();
    p.fake_agent("=== default\nsay hi\n", "");
    let mut data = vec![0u8; 128 << 20];
    rand::rngs::SmallRng::seed_from_u64(20).fill_bytes(&mut data);
    std::fs::write(p.join("big.bin"), &data).expect("big file");
    drop(data);
    let mut child = start_looper(
        &p,
        &[
            "--local",
            "--once",
            "--tmux-layout",
            "single",
            "--backup-dirty",
        ],
    );
    assert!(
        wait_until(10.0, || state_now(&p).is_some()
            && p.event_names().contains(&"loop_started".to_string())),
        "the run never started"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !p.event_names().contains(&"backup_created".to_string()),
        "the snapshot is still being made when the signal comes"
    );
    let sent = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    let st = wait_or_kill(&mut child, 30.0, "the supervisor after SIGTERM");
    let took = sent.elapsed();
    assert_eq!(st.code(), Some(130));
    assert!(
        took < Duration::from_secs(2),
        "the signal took effect after {took:?}"
    );
    assert_eq!(p.state()["stop_reason"], "interrupted by SIGTERM");
    assert!(
        !p.event_names().contains(&"prompt_started".to_string()),
        "no attempt starts while a stop is pending"
    );
}

/// 20.4 and 20.17: terminal escapes from the agent (a clipboard write, a title change, a
/// screen clear) reached the operator through the console and `looper logs`; the agent's last
/// line without a newline was dropped from the console.
#[test]
fn agent_escapes_never_reach_the_operator_but_logs_raw_keeps_them() {
    let p = Project::new();
    p.fake_agent(
        "=== default\nsay clip\x1b]52;c;cm0gLXJmIH4=\x07board \x1b]0;owned\x07title \x1b[2Jclear\nraw no newline at the end",
        "",
    );
    let out = p.run(&["--once", "--label", "esc"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let console = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!console.contains('\x1b'), "{console:?}");
    assert!(console.contains("clipboard title clear"), "{console}");
    assert!(console.contains("no newline at the end"), "{console}");
    let logs = p
        .looper()
        .args(["logs", "--include-stopped"])
        .output()
        .expect("logs");
    let text = stdout(&logs);
    assert!(
        !text.contains('\x1b') && text.contains("clipboard"),
        "{text:?}"
    );
    let raw = p
        .looper()
        .args(["logs", "--include-stopped", "--raw"])
        .output()
        .expect("logs --raw");
    assert!(stdout(&raw).contains("\x1b]52;"), "--raw keeps the bytes");
    // A state written by someone else, with escapes in what status shows.
    let other = p.runs_dir().join("20261121T000000.000000Z__other__000001");
    std::fs::create_dir_all(&other).expect("mkdir");
    std::fs::write(
        other.join("state.json"),
        r#"{"label":"evil\u001b]0;t\u0007label","status":"stopped","exit_code":0,"stop_reason":"done \u001b[2J\u001b]52;c;eA==\u0007now"}"#,
    )
    .expect("state");
    let status = p.looper().arg("status").output().expect("status");
    let text = stdout(&status);
    assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
    assert!(
        text.contains("evillabel") && text.contains("done now"),
        "{text}"
    );
}

/// 20.16: what must be refused before `run_started` (exit 2, no run directory) rather than
/// fail after it with 1.
#[test]
fn bad_input_is_refused_up_front_with_exit_2() {
    let p = Project::new();
    p.fake_agent("=== default\nsay hi\n", "");
    let refused = |args: &[&str], needle: &str| {
        let out = p.run(args);
        // Messages name the case, not the (possibly huge) arguments.
        let full = stderr(&out);
        let err: String = full.chars().take(300).collect();
        assert_eq!(out.status.code(), Some(2), "{needle}: {err}");
        assert!(full.contains(needle), "{needle}: {err}");
        assert!(p.run_dirs().is_empty(), "{needle}: nothing started");
    };
    let long = "l".repeat(131_060);
    refused(&["--once", "--label", &long], "at most 200");
    // A prompt file that cannot be read.
    std::fs::remove_file(p.join("PROMPT.md")).expect("rm");
    std::fs::create_dir(p.join("PROMPT.md")).expect("dir");
    refused(&["--once"], "PROMPT.md");
    std::fs::remove_dir(p.join("PROMPT.md")).expect("rmdir");
    p.write("PROMPT.md", "do the thing\n");
    // A branch named like the backup prefix.
    p.git(&["branch", "looper-backup"]);
    refused(&["--once", "--backup"], "looper.backup_prefix");
    // A NUL in a command argument.
    let cfg = p
        .read("agent-looper.toml")
        .replace("\"{prompt}\"]", "\"{prompt}\", \"a\\u0000b\"]");
    p.write("agent-looper.toml", &cfg);
    refused(&["--once"], "agents.fake.first_command");
}

/// 20.17: messages that said the wrong thing, or too much.
#[test]
fn config_messages_say_what_is_wrong_and_no_more() {
    let p = Project::new();
    p.fake_agent("=== default\nsay hi\n", "");
    // A TOML error on a 300 KB line is not echoed whole.
    let cfg = p.read("agent-looper.toml");
    p.write(
        "agent-looper.toml",
        &format!("{cfg}\nbroken = [\"{}\n", "x".repeat(300_000)),
    );
    let out = p.run(&["--once"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).len() < 4096, "{} bytes", stderr(&out).len());
    // A NUL in an environment value is not "a bad variable name".
    p.write(
        "agent-looper.toml",
        &cfg.replace("env = {", "env = { BAD = \"a\\u0000b\","),
    );
    let out = p.run(&["--once"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("a NUL byte in the value of \"BAD\""),
        "{}",
        stderr(&out)
    );
    // --config naming a directory.
    p.write("agent-looper.toml", &cfg);
    std::fs::create_dir(p.join("conf.d")).expect("mkdir");
    let out = p.run(&["--once", "--config", "conf.d"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is a directory"), "{}", stderr(&out));
}

/// 20.17: the run's directories are private, a relative XDG_STATE_HOME is ignored, and a low
/// open-file limit is raised or reported, never a panic.
#[test]
fn directories_environment_and_limits_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let p = Project::new();
    p.fake_agent("=== default\nsay hi\n", "");
    let out = p
        .looper()
        .args(["--local", "--once"])
        .env("XDG_STATE_HOME", "relative-state")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for d in [".agent-looper", ".agent-looper/runs"] {
        let mode = std::fs::metadata(p.join(d)).expect(d).permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{d}");
    }
    assert!(
        !p.join("relative-state").exists(),
        "no state dir in the project"
    );
    let run = |limits: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{limits}; exec \"$0\" --local --once --label ulimit",
            ))
            .arg(looper_bin())
            .current_dir(p.path())
            .stdin(Stdio::null())
            .output()
            .expect("sh")
    };
    let out = run("ulimit -Sn 8");
    assert_eq!(out.status.code(), Some(0), "raised: {}", stderr(&out));
    let out = run("ulimit -Sn 8 && ulimit -Hn 16");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("ulimit -n"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

/// 20.17: a `--version` probe that hangs is killed with everything it started.
#[test]
fn doctor_leaves_no_hung_probe_behind() {
    let p = Project::new();
    p.write(
        "hang.sh",
        "#!/bin/sh\nsleep 120 &\necho $! > \"$(dirname \"$0\")/probe.pid\"\nwait\n",
    );
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p.join("hang.sh"), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
    p.write(
        "agent-looper.toml",
        &format!(
            "[looper]\ndefault_agent = \"codex\"\n[agents.codex]\nexecutable = {:?}\n",
            p.join("hang.sh").display().to_string()
        ),
    );
    p.write("PROMPT.md", "p\n");
    let out = p.looper().args(["doctor"]).output().expect("doctor");
    assert!(stdout(&out).contains("version unknown"), "{}", stdout(&out));
    let pid: i32 = p.read("probe.pid").trim().parse().expect("pid");
    assert!(
        wait_until(5.0, || !std::path::Path::new(&format!("/proc/{pid}"))
            .exists()),
        "the probe's child {pid} is still running"
    );
}

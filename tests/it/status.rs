//! `looper status` over synthetic state roots and the reference's runs, and `looper logs`
//! over real runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value as Json, json};

use crate::support::*;

fn status(cwd: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(looper_bin());
    c.current_dir(cwd)
        .env_remove("LOOPER_STATE_ROOT")
        .env_remove("CODEX_LOOPER_STATE_ROOT")
        .env("XDG_STATE_HOME", cwd.join(".xdg-state"))
        .arg("status")
        .args(args);
    c.output().expect("status")
}

fn write_run(root: &Path, name: &str, state: &Json) -> PathBuf {
    use std::os::unix::fs::DirBuilderExt;
    let dir = root.join(name);
    std::fs::create_dir_all(root).expect("mkdir");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .expect("mkdir");
    std::fs::write(
        dir.join("state.json"),
        serde_json::to_vec_pretty(state).expect("json"),
    )
    .expect("write");
    dir
}

fn me() -> i32 {
    std::process::id() as i32
}

fn identity(pid: i32) -> Option<String> {
    agent_looper::effects::procinfo::pid_identity(pid)
}

fn run_state(label: &str, status: &str, updated: &str) -> Json {
    json!({
        "schema_version": 1, "label": label, "run_id": format!("{label}-id"), "status": status,
        "agent_name": "codex", "agent_kind": "codex", "agent_cwd": "/home/me/proj",
        "current_loop": 3, "current_prompt_index": 2, "total_prompts": 3,
        "started_at": "2026-01-01T00:00:00Z", "updated_at": updated,
        "pid": me(), "pid_identity": identity(me()),
    })
}

fn dead_pid() -> i32 {
    let mut c = Command::new("true").spawn().expect("spawn");
    let pid = c.id() as i32;
    c.wait().expect("reap");
    pid
}

/// A child that has exited but is not reaped: a zombie for as long as the handle lives.
fn zombie() -> std::process::Child {
    let c = Command::new("true").spawn().expect("spawn");
    let pid = c.id();
    assert!(wait_until(5.0, || std::fs::read_to_string(format!(
        "/proc/{pid}/stat"
    ))
    .map(|s| s
        .rsplit_once(')')
        .is_some_and(|(_, r)| r.trim_start().starts_with('Z')))
    .unwrap_or(false)));
    c
}

fn runs_json(out: &Output) -> Vec<Json> {
    let doc: Json =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(out)));
    assert_eq!(doc["schema"], "agent-looper/status");
    assert_eq!(doc["version"], 1);
    assert!(doc["generated_at"].is_string());
    doc["runs"].as_array().expect("runs").clone()
}

#[test]
fn attention_first_with_stale_detection_by_pid_identity() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("runs");
    let zombie = zombie();
    write_run(
        &root,
        "a",
        &run_state("healthy", "running", "2026-01-01T00:00:09Z"),
    );
    let mut dead = run_state("dead", "running", "2026-01-01T00:00:01Z");
    dead["pid"] = dead_pid().into();
    write_run(&root, "b", &dead);
    let mut reused = run_state("reused", "retrying", "2026-01-01T00:00:02Z");
    reused["pid_identity"] = "linux-proc:not-this-boot:1".into();
    write_run(&root, "c", &reused);
    let mut z = run_state("zombie", "paused", "2026-01-01T00:00:03Z");
    z["pid"] = zombie.id().into();
    write_run(&root, "d", &z);
    let mut breaker = run_state("breaker", "stopped", "2026-01-01T00:00:04Z");
    breaker["exit_code"] = 3.into();
    breaker["stop_reason"] = "no progress for 3 loops".into();
    write_run(&root, "e", &breaker);
    let mut done = run_state("done", "stopped", "2026-01-01T00:00:05Z");
    done["exit_code"] = 0.into();
    done["stop_reason"] = "max loops reached: 3".into();
    done["usage_total"] = json!({"input_tokens": 12000, "output_tokens": 345, "cached_input_tokens": 0, "cost_usd": 0.4});
    write_run(&root, "f", &done);
    let mut retry = run_state("retry", "retrying", "2026-01-01T00:00:06Z");
    retry["retry_status"] = "rate limit: waiting 300s".into();
    retry["retry_until"] = "2026-01-01T00:05:06Z".into();
    write_run(&root, "g", &retry);
    let mut paused = run_state("paused", "paused", "2026-01-01T00:00:07Z");
    paused["control_last_reason"] = "lunch".into();
    write_run(&root, "h", &paused);
    let garbage = root.join("i");
    std::fs::create_dir(&garbage).expect("mkdir");
    std::fs::write(garbage.join("state.json"), "{not json").expect("write");
    std::fs::write(root.join("not-a-dir"), "x").expect("write");

    let root_s = root.display().to_string();
    let out = status(tmp.path(), &["--state-root", &root_s, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let runs = runs_json(&out);
    let me = me();
    let row = |label: &str| {
        runs.iter()
            .find(|r| r["label"] == label)
            .unwrap_or_else(|| panic!("{label}"))
            .clone()
    };
    assert_eq!(row("healthy")["stale"], false);
    assert_eq!(row("dead")["stale"], true);
    assert_eq!(
        row("dead")["stale_reason"],
        format!("supervisor process {} is no longer running", dead["pid"])
    );
    assert_eq!(
        row("reused")["stale_reason"],
        format!("supervisor process {me} identity changed")
    );
    assert_eq!(
        row("zombie")["stale_reason"],
        format!("supervisor process {} is no longer running", zombie.id())
    );
    assert_eq!(row("paused")["stale"], false);
    let unreadable = runs
        .iter()
        .find(|r| r["status"] == "unreadable")
        .expect("unreadable");
    assert!(
        unreadable["error"]
            .as_str()
            .expect("error")
            .contains("cannot parse state.json")
    );
    let order: Vec<String> = runs
        .iter()
        .map(|r| r["label"].as_str().unwrap_or("?").to_string())
        .collect();
    assert_eq!(
        order,
        [
            "paused", "retry", "breaker", "zombie", "reused", "dead", "?", "healthy", "done"
        ],
        "attention first (newest first), then running, then finished"
    );
    for k in [
        "run_dir",
        "run_id",
        "label",
        "status",
        "stale",
        "stale_reason",
        "agent",
        "agent_kind",
        "loop",
        "prompt",
        "total_prompts",
        "updated_at",
        "started_at",
        "stop_reason",
        "exit_code",
        "retry_status",
        "retry_until",
        "usage_total",
        "project",
        "pid",
    ] {
        assert!(row("done").get(k).is_some(), "{k} missing");
    }
    assert_eq!(row("done")["project"], "proj");
    assert_eq!(row("done")["loop"], 3);
    assert_eq!(row("done")["usage_total"]["input_tokens"], 12000);

    let out = status(tmp.path(), &["--state-root", &root_s]);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("LABEL "), "{text}");
    for h in [
        "STATUS",
        "AGENT",
        "LOOP",
        "UPDATED",
        "USAGE",
        "STOP/NOTE",
        "PROJECT",
    ] {
        assert!(lines[0].contains(h), "{h}");
    }
    let first_two = |l: &str| l.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    assert_eq!(first_two(lines[1]), "paused paused");
    assert!(lines[1].contains("paused: lunch"), "{}", lines[1]);
    assert!(
        lines[2].contains("rate limit: waiting 300s until "),
        "{}",
        lines[2]
    );
    assert_eq!(first_two(lines[4]), "zombie stale");
    assert_eq!(first_two(lines[8]), "healthy running");
    assert!(lines[8].contains("codex  3 p2/3"), "{}", lines[8]);
    assert!(lines[9].contains("12.3k tok $0.40"), "{}", lines[9]);
    assert!(lines[9].contains("max loops reached: 3"), "{}", lines[9]);
    assert!(lines[9].trim_end().ends_with("proj"), "{}", lines[9]);
    drop(zombie);
}

#[test]
fn repair_rewrites_stale_runs_once_and_listing_never_writes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("runs");
    let mut dead = run_state("dead", "running", "2026-01-01T00:00:01Z");
    let pid = dead_pid();
    dead["pid"] = pid.into();
    dead["reference_only_field"] = "kept".into();
    let dir = write_run(&root, "dead", &dead);
    std::fs::write(
        dir.join("events.jsonl"),
        "{\"event\":\"run_started\",\"ts\":\"2026-01-01T00:00:00Z\"}\n",
    )
    .expect("write");
    let live = write_run(
        &root,
        "live",
        &run_state("live", "running", "2026-01-01T00:00:02Z"),
    );
    let root_s = root.display().to_string();
    let before = std::fs::read(dir.join("state.json")).expect("read");
    for args in [
        vec!["--state-root", &root_s],
        vec!["--state-root", &root_s, "--json"],
    ] {
        let out = status(tmp.path(), &args);
        assert_eq!(out.status.code(), Some(0));
    }
    assert_eq!(
        std::fs::read(dir.join("state.json")).expect("read"),
        before,
        "listing never writes"
    );
    assert_eq!(read_events(&dir).len(), 1);

    let out = status(
        tmp.path(),
        &["--state-root", &root_s, "--repair-stale-loopers"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let reason = format!("supervisor process {pid} is no longer running");
    assert!(
        stdout(&out).contains(&format!("repaired: dead: {reason}")),
        "{}",
        stdout(&out)
    );
    let st = read_json(&dir.join("state.json"));
    assert_eq!(st["status"], "stopped");
    assert_eq!(st["stop_reason"], format!("external termination: {reason}"));
    assert_eq!(st["stale_reason"], reason);
    assert_eq!(st["last_event"], "run_stopped");
    assert!(st["exit_code"].is_null());
    assert_eq!(st["stale_repaired_at"], st["updated_at"]);
    assert_eq!(st["completed_at"], st["updated_at"]);
    assert_eq!(st["reference_only_field"], "kept");
    let events = read_events(&dir);
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["event"], "run_stopped");
    assert_eq!(
        events[1]["stop_reason"],
        format!("external termination: {reason}")
    );
    assert_eq!(read_events(&live).len(), 0, "a live run is left alone");
    assert_eq!(read_json(&live.join("state.json"))["status"], "running");

    let out = status(tmp.path(), &["--state-root", &root_s, "--repair-stale"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(!stdout(&out).contains("repaired:"));
    assert_eq!(
        read_events(&dir).len(),
        2,
        "a repaired run is not repaired again"
    );
    let line = stdout(&out)
        .lines()
        .find(|l| l.starts_with("dead "))
        .expect("row")
        .to_string();
    assert!(
        line.contains("stopped") && line.contains("external termination"),
        "{line}"
    );
}

#[test]
fn reference_runs_are_listed_with_the_crashed_one_stale() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference-runs");
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = status(
        tmp.path(),
        &["--state-root", &fixtures.display().to_string(), "--json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let runs = runs_json(&out);
    let mut labels: Vec<&str> = runs.iter().filter_map(|r| r["label"].as_str()).collect();
    labels.sort();
    assert_eq!(
        labels,
        ["completed", "crashed", "failed", "maxloops", "timedout"]
    );
    for r in &runs {
        assert_eq!(r["stale"], r["label"] == "crashed", "{r}");
    }
    let crashed = runs
        .iter()
        .find(|r| r["label"] == "crashed")
        .expect("crashed");
    assert!(
        crashed["stale_reason"]
            .as_str()
            .expect("reason")
            .starts_with("supervisor process 27739 ")
    );
    assert_eq!(
        runs[0]["label"], "crashed",
        "stale runs need attention first"
    );
    let out = status(
        tmp.path(),
        &["--state-root", &fixtures.display().to_string()],
    );
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 6, "{text}");
    assert!(
        text.lines()
            .nth(1)
            .expect("row")
            .starts_with("crashed    stale "),
        "{text}"
    );
}

#[test]
fn an_empty_or_missing_root_is_a_friendly_message() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = status(tmp.path(), &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).starts_with("No looper runs found under .agent-looper/runs."),
        "{}",
        stdout(&out)
    );
    let out = status(tmp.path(), &["--json"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(runs_json(&out).is_empty());
}

#[test]
fn state_roots_come_from_the_environment_and_all_adds_the_registry() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    write_run(
        &a,
        "one",
        &run_state("one", "stopped", "2026-01-01T00:00:01Z"),
    );
    write_run(
        &b,
        "two",
        &run_state("two", "stopped", "2026-01-01T00:00:02Z"),
    );
    let elsewhere = tmp.path().join("elsewhere");
    let three = write_run(
        &elsewhere,
        "three",
        &run_state("three", "stopped", "2026-01-01T00:00:03Z"),
    );
    let reg = tmp.path().join(".xdg-state/agent-looper/runs.jsonl");
    std::fs::create_dir_all(reg.parent().expect("parent")).expect("mkdir");
    let lines = [
        json!({"run_dir": three, "created_at": "2026-01-01T00:00:03Z"}),
        json!({"run_dir": a.join("one"), "created_at": "2026-01-01T00:00:01Z"}),
        json!({"run_dir": tmp.path().join("deleted"), "created_at": "2026-01-01T00:00:01Z"}),
    ];
    std::fs::write(
        &reg,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .expect("write");
    let labels = |out: &Output| -> Vec<String> {
        runs_json(out)
            .iter()
            .filter_map(|r| r["label"].as_str().map(String::from))
            .collect()
    };
    let mut c = Command::new(looper_bin());
    c.current_dir(tmp.path())
        .env(
            "LOOPER_STATE_ROOT",
            format!("{}:{}", a.display(), b.display()),
        )
        .env("CODEX_LOOPER_STATE_ROOT", "/nonexistent")
        .env("XDG_STATE_HOME", tmp.path().join(".xdg-state"))
        .args(["status", "--json"]);
    let out = c.output().expect("status");
    assert_eq!(labels(&out), ["two", "one"]);
    let out = c.arg("--all").output().expect("status");
    assert_eq!(
        labels(&out),
        ["three", "two", "one"],
        "registry runs are added once; deleted ones skipped"
    );
}

#[test]
fn logs_render_the_last_log_and_follow_a_run_to_its_end() {
    let p = Project::new();
    p.fake_agent("=== call 1\nsay first output\nsleep 1\n=== call 2\nsay second output\nerr a warning\nsleep 0.3\n", "");
    let mut child = p
        .looper()
        .args(["--local", "--max-loops", "2"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    assert!(wait_until(20.0, || p
        .run_dirs()
        .last()
        .is_some_and(|d| d.join("loop-0001__prompt-001.log").exists())));
    let follow = p.looper().args(["logs", "-f"]).output().expect("logs -f");
    assert_eq!(follow.status.code(), Some(0), "{}", stderr(&follow));
    let text = stdout(&follow);
    let first = text
        .find("first output")
        .unwrap_or_else(|| panic!("{text}"));
    let second = text
        .find("second output")
        .unwrap_or_else(|| panic!("{text}"));
    assert!(first < second);
    assert!(text.contains("stderr: a warning"), "{text}");
    assert!(child.wait().expect("wait").success());

    let out = p.looper().arg("logs").output().expect("logs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("second output") && !text.contains("first output"),
        "{text}"
    );
    assert!(text.contains("-- exit 0"), "{text}");
    let raw = p
        .looper()
        .args(["logs", "--raw"])
        .output()
        .expect("logs --raw");
    assert!(
        stdout(&raw).contains("] stdout: second output\n"),
        "{}",
        stdout(&raw)
    );
}

/// `script` gives a command a pseudo-terminal; `None` where util-linux is missing.
fn script_found() -> bool {
    Command::new("script").arg("--version").output().is_ok()
}

/// `looper <args>` on a pseudo-terminal (through `script`), with `NO_COLOR` as given; `keys`
/// are typed after `wait` (none: the command ends by itself). Returns what the terminal got.
fn on_a_terminal(
    cwd: &Path,
    args: &[&str],
    no_color: Option<&str>,
    keys: &[(&[u8], u64)],
) -> (Option<i32>, String) {
    let mut cmd = shlex::try_quote(&looper_bin().display().to_string())
        .expect("quote")
        .into_owned();
    for a in args {
        cmd.push(' ');
        cmd.push_str(&shlex::try_quote(a).expect("quote"));
    }
    let mut c = Command::new("script");
    c.args(["-qfec", &cmd, "/dev/null"])
        .current_dir(cwd)
        .env_remove("LOOPER_STATE_ROOT")
        .env_remove("CODEX_LOOPER_STATE_ROOT")
        .env_remove("TMUX")
        .env_remove("TMUX_PANE")
        .env("XDG_STATE_HOME", cwd.join(".xdg-state"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    match no_color {
        Some(v) => c.env("NO_COLOR", v),
        None => c.env_remove("NO_COLOR"),
    };
    let mut child = c.spawn().expect("script");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        for (k, wait_ms) in keys {
            std::thread::sleep(std::time::Duration::from_millis(*wait_ms));
            stdin.write_all(k).expect("key");
            stdin.flush().expect("flush");
        }
    }
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn watch_draws_in_the_alternate_screen_and_restores_the_terminal_on_q() {
    if !script_found() {
        return;
    }
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference-runs");
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = fixtures.display().to_string();
    let (code, text) = on_a_terminal(
        tmp.path(),
        &["status", "--watch", "--state-root", &root],
        None,
        &[(b"q", 1500)],
    );
    assert_eq!(code, Some(0));
    assert!(text.starts_with("\u{1b}[?1049h\u{1b}[?25l"), "{text:?}");
    // On a terminal, the stale run's STATUS stands out (bold yellow); its row is the
    // selected one, in reverse video; a failed run's STATUS is bold red.
    assert!(
        text.contains(
            "\u{1b}[7mcrashed    \u{1b}[0m\u{1b}[1m\u{1b}[7m\u{1b}[33mstale\u{1b}[0m\u{1b}[7m "
        ),
        "{text:?}"
    );
    assert!(
        text.contains("timedout   \u{1b}[1m\u{1b}[31merror\u{1b}[0m"),
        "{text:?}"
    );
    assert!(
        text.ends_with("\u{1b}[?25h\u{1b}[?1049l"),
        "cursor shown, screen left: {text:?}"
    );
}

/// The reference runs in a root of their own, plus one run of each colour.
fn colour_fixture(root: &Path) {
    write_run(
        root,
        "run",
        &run_state("moving", "running", "2026-01-01T00:00:09Z"),
    );
    let mut failed = run_state("broken", "error", "2026-01-01T00:00:08Z");
    failed["stop_reason"] = "command exited with code 1".into();
    failed["last_error_line"] =
        "Missing environment variable: `OPENAI_API_KEY`\u{1b}]0;pwned\u{7}".into();
    write_run(root, "err", &failed);
    let mut done = run_state("done", "stopped", "2026-01-01T00:00:07Z");
    done["exit_code"] = 0.into();
    write_run(root, "done", &done);
    let mut dead = run_state("dead", "running", "2026-01-01T00:00:06Z");
    dead["pid"] = dead_pid().into();
    write_run(root, "dead", &dead);
}

#[test]
fn status_is_coloured_on_a_terminal_unless_no_color_is_set() {
    if !script_found() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("runs");
    colour_fixture(&root);
    let root_s = root.display().to_string();
    let args = ["status", "--state-root", root_s.as_str()];
    let (code, text) = on_a_terminal(tmp.path(), &args, None, &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("\u{1b}[1m\u{1b}[31merror\u{1b}[0m"),
        "{text:?}"
    );
    assert!(
        text.contains("\u{1b}[1m\u{1b}[33mstale\u{1b}[0m"),
        "{text:?}"
    );
    assert!(text.contains("\u{1b}[32mrunning\u{1b}[0m"), "{text:?}");
    assert!(text.contains("\u{1b}[2mstopped\u{1b}[0m"), "{text:?}");
    // The failure's detail line is red; the agent's own escape sequence is gone (D35).
    assert!(
        text.contains("  └ \u{1b}[31mMissing environment variable: `OPENAI_API_KEY` (hint:"),
        "{text:?}"
    );
    assert!(!text.contains("pwned"), "{text:?}");
    // Columns are aligned as without colour: the escapes take no room.
    let plain = strip_sgr(&text);
    let col = |label: &str| {
        plain
            .lines()
            .find(|l| l.starts_with(label))
            .and_then(|l| l.find("codex"))
    };
    assert!(col("moving").is_some());
    assert_eq!(col("moving"), col("broken"), "{plain}");
    assert_eq!(col("moving"), col("dead"), "{plain}");

    for no_color in ["1", "yes"] {
        let (code, text) = on_a_terminal(tmp.path(), &args, Some(no_color), &[]);
        assert_eq!(code, Some(0), "{text}");
        assert!(!text.contains('\u{1b}'), "NO_COLOR={no_color}: {text:?}");
        assert!(text.contains("broken"), "{text:?}");
    }
    // An empty NO_COLOR does not count (no-color.org).
    let (_, text) = on_a_terminal(tmp.path(), &args, Some(""), &[]);
    assert!(text.contains("\u{1b}[32mrunning"), "{text:?}");
    // `--color never` on a terminal, and the watch with NO_COLOR: no colour either (the
    // selection is still shown, in reverse video, which is not a colour).
    let mut never = args.to_vec();
    never.extend(["--color", "never"]);
    let (_, text) = on_a_terminal(tmp.path(), &never, None, &[]);
    assert!(!text.contains('\u{1b}'), "{text:?}");
    let mut watch = args.to_vec();
    watch.push("--watch");
    let (code, text) = on_a_terminal(tmp.path(), &watch, Some("1"), &[(b"q", 1500)]);
    assert_eq!(code, Some(0));
    assert!(
        !text.contains("\u{1b}[32m") && !text.contains("\u{1b}[31m"),
        "{text:?}"
    );
    assert!(
        text.contains("\u{1b}[7m"),
        "the selected row is reversed: {text:?}"
    );
}

/// Text without SGR sequences (`ESC [ ... m`) and with `\n` line ends.
fn strip_sgr(text: &str) -> String {
    let mut out = String::new();
    let mut it = text.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\u{1b}' && it.peek() == Some(&'[') {
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else if c != '\r' {
            out.push(c);
        }
    }
    out
}

#[test]
fn color_always_and_never_decide_when_piped() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("runs");
    colour_fixture(&root);
    let root_s = root.display().to_string();
    let out = status(tmp.path(), &["--state-root", &root_s]);
    assert!(
        !stdout(&out).contains('\u{1b}'),
        "auto: a pipe is not coloured"
    );
    let mut c = Command::new(looper_bin());
    c.current_dir(tmp.path())
        .env("NO_COLOR", "1")
        .env("XDG_STATE_HOME", tmp.path().join(".xdg-state"))
        .args(["status", "--state-root", &root_s, "--color", "always"]);
    let out = c.output().expect("status");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("\u{1b}[1m\u{1b}[31merror\u{1b}[0m"),
        "always wins over NO_COLOR: {text:?}"
    );
    assert_eq!(
        strip_sgr(&text),
        stdout(&status(tmp.path(), &["--state-root", &root_s])),
        "the same table, coloured"
    );
    let out = status(tmp.path(), &["--state-root", &root_s, "--color", "never"]);
    assert!(!stdout(&out).contains('\u{1b}'));
    let out = status(
        tmp.path(),
        &["--state-root", &root_s, "--color", "sometimes"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--color"), "{}", stderr(&out));
}

#[test]
fn since_hides_old_finished_runs_and_says_how_many() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("runs");
    let ago = |secs: i64| {
        (chrono::Utc::now() - chrono::TimeDelta::seconds(secs))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let finished = |label: &str, status: &str, secs: i64| {
        let mut st = run_state(label, status, &ago(secs));
        st["exit_code"] = 1.into();
        write_run(&root, label, &st);
    };
    finished("old-stopped", "stopped", 3 * 3600);
    finished("old-error", "error", 3 * 86_400);
    finished("old-interrupted", "interrupted", 5 * 3600);
    finished("new-stopped", "stopped", 60);
    write_run(
        &root,
        "old-running",
        &run_state("old-running", "running", &ago(9 * 86_400)),
    );
    let mut asks = run_state("old-asks", "waiting_for_answer", &ago(9 * 86_400));
    asks["open_asks"] = json!([{"id": "a1", "kind": "question", "question": "db?"}]);
    write_run(&root, "old-asks", &asks);
    let mut stale = run_state("old-stale", "running", &ago(9 * 86_400));
    stale["pid"] = dead_pid().into();
    write_run(&root, "old-stale", &stale);
    let root_s = root.display().to_string();

    let labels = |text: &str| -> Vec<String> {
        text.lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect()
    };
    let out = status(tmp.path(), &["--state-root", &root_s, "--since", "2h"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let mut shown = labels(&text);
    assert_eq!(
        text.lines().last(),
        Some("(3 older finished runs hidden; --since to change)"),
        "{text}"
    );
    shown.pop();
    shown.sort();
    assert_eq!(
        shown,
        ["new-stopped", "old-asks", "old-running", "old-stale"],
        "{text}"
    );
    // Seconds, and days; every run when none is old enough.
    let out = status(tmp.path(), &["--state-root", &root_s, "--since", "14400"]);
    assert!(
        stdout(&out).ends_with("(2 older finished runs hidden; --since to change)\n"),
        "{}",
        stdout(&out)
    );
    let out = status(tmp.path(), &["--state-root", &root_s, "--since", "10d"]);
    assert!(!stdout(&out).contains("hidden"), "{}", stdout(&out));
    assert_eq!(labels(&stdout(&out)).len(), 7);
    // The JSON document leaves them out too, and says how many.
    let out = status(
        tmp.path(),
        &["--state-root", &root_s, "--since", "1d", "--json"],
    );
    let doc: Json = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["hidden_runs"], 1);
    assert_eq!(doc["runs"].as_array().map(Vec::len), Some(6));
    // Without --since nothing is hidden.
    let out = status(tmp.path(), &["--state-root", &root_s]);
    assert_eq!(labels(&stdout(&out)).len(), 7);
    // A bad duration is a usage error naming the flag.
    for bad in ["soon", "-1", "2x"] {
        let out = status(tmp.path(), &["--state-root", &root_s, "--since", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = stderr(&out);
        assert!(
            err.contains("--since") && err.contains("expected a duration such as 30m, 2h, 1d"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn logs_follow_stops_when_the_supervisor_is_gone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut st = run_state("gone", "running", "2026-01-01T00:00:01Z");
    st["pid"] = dead_pid().into();
    let dir = write_run(&tmp.path().join("runs"), "gone", &st);
    std::fs::write(
        dir.join("loop-0001__prompt-001.log"),
        "[20260101T000000Z] stdout: {\"type\":\"item.completed\",\"item\":{\"type\":\"agent_message\",\"text\":\"half done\"}}\n[20260101T000000Z] stdout*: no newline",
    )
    .expect("write");
    let out = Command::new(looper_bin())
        .current_dir(tmp.path())
        .args(["logs", "-f", "--run-dir"])
        .arg(&dir)
        .output()
        .expect("logs");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "half done\nno newline\n");
    assert!(
        stderr(&out).contains("is no longer running"),
        "{}",
        stderr(&out)
    );
}

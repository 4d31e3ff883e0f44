//! `looper control` against real supervisors running the fake agent: each stop boundary,
//! `--wait`, `--force`, pause/resume, note deliveries, focus, and many concurrent writers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value as Json;

use crate::support::*;

/// A looper running in the background; killed (group and all) if the test fails early.
struct Running {
    child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn wait_exit(&mut self, secs: f64) -> Option<i32> {
        let mut code = None;
        wait_until(secs, || match self.child.try_wait() {
            Ok(Some(st)) => {
                code = st.code();
                true
            }
            _ => false,
        });
        code
    }
}

fn start(p: &Project, args: &[&str]) -> Running {
    let out = std::fs::File::create(p.join("looper.out")).expect("out");
    let err = std::fs::File::create(p.join("looper.err")).expect("err");
    let child = p
        .looper()
        .arg("--local")
        .args(args)
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("spawn looper");
    Running { child }
}

fn count_events(p: &Project, name: &str) -> usize {
    p.run_dirs()
        .last()
        .map(|d| read_events(d).iter().filter(|e| e["event"] == name).count())
        .unwrap_or(0)
}

/// Wait for the first `prompt_started` and return the run directory.
fn wait_prompt_started(p: &Project, n: usize) -> PathBuf {
    assert!(
        wait_until(30.0, || count_events(p, "prompt_started") >= n),
        "no prompt_started: {}",
        std::fs::read_to_string(p.join("looper.err")).unwrap_or_default()
    );
    p.last_run()
}

fn control(p: &Project, args: &[&str]) -> Output {
    p.looper()
        .arg("control")
        .args(args)
        .output()
        .expect("control")
}

fn id_of(out: &Output) -> String {
    stdout(out)
        .lines()
        .find_map(|l| l.strip_prefix("control id: "))
        .unwrap_or_else(|| panic!("no id in {}", stdout(out)))
        .to_string()
}

fn ms(ts: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(ts)
        .unwrap_or_else(|e| panic!("{ts}: {e}"))
        .timestamp_millis()
}

fn control_lines(run: &Path) -> Vec<Json> {
    std::fs::read_to_string(run.join("control.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad control line {l:?}: {e}")))
        .collect()
}

/// D22: the supervisor records the command within 100 ms of the line's `created_at`.
fn assert_acknowledged(run: &Path, id: &str) {
    let line = control_lines(run)
        .into_iter()
        .find(|l| l["id"] == id)
        .expect("control line");
    assert!(wait_until(10.0, || read_events(run).iter().any(
        |e| e["event"] == "control_command_received" && e["id"] == id
    )));
    let ev = read_events(run)
        .into_iter()
        .find(|e| e["event"] == "control_command_received" && e["id"] == id)
        .expect("received");
    let lag =
        ms(ev["ts"].as_str().expect("ts")) - ms(line["created_at"].as_str().expect("created_at"));
    assert!(
        (0..=100).contains(&lag),
        "acknowledged {lag} ms after created_at"
    );
}

fn sequence_project(script: &str, extra: &str) -> Project {
    let p = Project::new();
    p.fake_agent(script, extra);
    p.write("prompts.md", "first prompt\n---\nsecond prompt\n");
    p
}

#[test]
fn stop_after_prompt_ends_the_run_after_the_current_prompt() {
    let p = sequence_project("=== default\nsay working\nsleep 1\n", "");
    let mut run = start(&p, &["--mode", "sequence", "-p", "prompts.md"]);
    let dir = wait_prompt_started(&p, 1);
    let out = control(&p, &["stop", "--after-prompt", "--reason", "checkpoint"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("queued stop_after_prompt for "), "{text}");
    assert!(
        text.contains(&format!(" at {}", dir.display()))
            || text.contains(" at .agent-looper/runs/"),
        "{text}"
    );
    assert_acknowledged(&dir, &id_of(&out));
    assert_eq!(run.wait_exit(30.0), Some(0));
    let st = read_json(&dir.join("state.json"));
    assert_eq!(st["status"], "stopped");
    assert_eq!(st["stop_reason"], "control stop_after_prompt: checkpoint");
    assert_eq!(p.calls(), 1, "the second prompt must not run");
}

#[test]
fn stop_after_loop_finishes_the_loop_and_wait_reports_the_reason() {
    let p = sequence_project("=== default\nsay working\nsleep 0.7\n", "");
    let mut run = start(&p, &["--mode", "sequence", "-p", "prompts.md"]);
    let dir = wait_prompt_started(&p, 1);
    let out = control(&p, &["stop", "--wait", "--reason", "merge"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    assert!(text.contains("queued stop_after_loop for "), "{text}");
    assert!(
        text.contains("stopped (control stop_after_loop: merge)"),
        "{text}"
    );
    assert_acknowledged(&dir, &id_of(&out));
    assert_eq!(run.wait_exit(30.0), Some(0));
    assert_eq!(p.calls(), 2, "both prompts of the loop run");
    let names: Vec<String> = read_events(&dir)
        .iter()
        .filter_map(|e| e["event"].as_str().map(String::from))
        .collect();
    assert_eq!(
        names.iter().filter(|n| *n == "loop_completed").count(),
        1,
        "{names:?}"
    );
    assert_eq!(
        names.iter().filter(|n| *n == "loop_started").count(),
        1,
        "{names:?}"
    );
    assert_eq!(
        read_json(&dir.join("state.json"))["stop_reason"],
        "control stop_after_loop: merge"
    );
}

#[test]
fn stop_now_is_carried_out_by_the_supervisor() {
    let p = Project::new();
    p.fake_agent("=== default\nsay started\nsleep 30\n", "");
    let mut run = start(&p, &[]);
    let dir = wait_prompt_started(&p, 1);
    let began = std::time::Instant::now();
    let out = control(&p, &["stop", "--now", "--reason", "enough"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("queued interrupt_now for "));
    assert_acknowledged(&dir, &id_of(&out));
    assert_eq!(
        run.wait_exit(20.0),
        Some(0),
        "the supervisor exits 0 on an operator stop"
    );
    assert!(began.elapsed().as_secs_f64() < 15.0);
    let st = read_json(&dir.join("state.json"));
    assert_eq!(st["status"], "stopped");
    assert_eq!(st["stop_reason"], "control interrupt_now: enough");
    assert_eq!(
        read_events(&dir).last().expect("event")["event"],
        "run_stopped"
    );
}

#[test]
fn force_kills_an_agent_that_ignores_sigterm() {
    let p = Project::new();
    p.fake_agent(
        "=== default\nignore-term\nsay started\nsleep 30\n",
        "terminate_grace_seconds = 60",
    );
    let mut run = start(&p, &[]);
    let dir = wait_prompt_started(&p, 1);
    assert!(wait_until(10.0, || {
        read_json(&dir.join("state.json"))["child_pgid"].is_i64()
    }));
    // Give the agent time to install its SIGTERM handler.
    assert!(wait_until(10.0, || std::fs::read_to_string(
        p.join("looper.out")
    )
    .unwrap_or_default()
    .contains("started")));
    let pgid = read_json(&dir.join("state.json"))["child_pgid"]
        .as_i64()
        .expect("pgid");
    assert!(group_alive(pgid));
    let out = control(
        &p,
        &[
            "stop",
            "--force",
            "--grace-seconds",
            "0.5",
            "--reason",
            "stuck",
        ],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(text.contains("queued interrupt_now"), "{text}");
    assert!(
        text.contains(&format!(
            "force: sent SIGKILL to agent process group {pgid}"
        )),
        "{text}"
    );
    assert!(
        !group_alive(pgid),
        "no process of the agent's group may remain"
    );
    assert_eq!(run.wait_exit(20.0), Some(0));
    let st = read_json(&dir.join("state.json"));
    assert_eq!(st["status"], "stopped");
    assert_eq!(st["stop_reason"], "control interrupt_now: stuck");
}

#[test]
fn force_with_a_boundary_is_a_usage_error() {
    let p = Project::new();
    let out = control(&p, &["stop", "--force", "--after-loop"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
}

#[test]
fn pause_holds_the_run_and_resume_continues_it() {
    let p = Project::new();
    p.fake_agent("=== default\nsay hi\nsleep 0.3\n", "");
    let mut run = start(&p, &[]);
    let dir = wait_prompt_started(&p, 1);
    let out = control(&p, &["pause", "--reason", "lunch"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("queued pause for "));
    assert_acknowledged(&dir, &id_of(&out));
    assert!(wait_until(
        10.0,
        || read_json(&dir.join("state.json"))["status"] == "paused"
    ));
    let started = count_events(&p, "prompt_started");
    // The paused run stays listed as active and selectable.
    let out = control(&p, &["resume"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_acknowledged(&dir, &id_of(&out));
    assert!(wait_until(10.0, || count_events(&p, "prompt_started") > started));
    let out = control(&p, &["stop", "--now"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(run.wait_exit(20.0), Some(0));
    let names: Vec<String> = read_events(&dir)
        .iter()
        .filter_map(|e| e["event"].as_str().map(String::from))
        .collect();
    let paused = names.iter().position(|n| n == "paused").expect("paused");
    let resumed = names.iter().position(|n| n == "resumed").expect("resumed");
    assert!(paused < resumed);
    assert!(
        names[resumed..].iter().any(|n| n == "loop_started"),
        "{names:?}"
    );
    assert!(
        !names[paused..resumed].iter().any(|n| n == "prompt_started"),
        "nothing runs while paused: {names:?}"
    );
}

#[test]
fn a_next_prompt_note_reaches_the_agent_once() {
    let p = Project::new();
    let rec = p.join("argv.jsonl");
    let script = format!(
        "=== call 1\nrecord {r}\nsay one\nsleep 1\n=== default\nrecord {r}\nsay more\n",
        r = rec.display()
    );
    p.fake_agent(&script, "");
    let mut run = start(&p, &["--max-loops", "3"]);
    let dir = wait_prompt_started(&p, 1);
    let out = control(
        &p,
        &[
            "note",
            "--note",
            "  also   update\nthe changelog ",
            "--delivery",
            "next-prompt",
            "--actor",
            "me",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("operator note queued for the next prompt"));
    assert_eq!(run.wait_exit(30.0), Some(0));
    let calls: Vec<Json> = std::fs::read_to_string(&rec)
        .expect("argv record")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(calls.len(), 3);
    let with_note: Vec<usize> = calls
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            c["argv"]
                .to_string()
                .contains("also   update\\nthe changelog")
        })
        .map(|(i, _)| i)
        .collect();
    assert_eq!(with_note, [1], "the note goes to the next prompt only");
    assert_eq!(count_events(&p, "note_delivered"), 1);
    let notes = std::fs::read_to_string(dir.join("operator_notes.jsonl")).expect("notes");
    let note: Json = serde_json::from_str(notes.lines().next().expect("line")).expect("json");
    assert_eq!(note["status"], "queued");
    assert_eq!(note["delivery"], "next-prompt");
    assert_eq!(note["actor"], "me");
    assert_eq!(note["note_preview"], "also update the changelog");
    let ctl = control_lines(&dir);
    assert_eq!(ctl[0]["action"], "note");
    assert_eq!(ctl[0]["id"], note["id"]);
}

/// A run directory with a state file, as the supervisor leaves it.
fn fake_run(p: &Project, state: Json) -> PathBuf {
    use std::os::unix::fs::DirBuilderExt;
    let dir = p.join(".agent-looper/runs/20260101T000000.000000Z__fake__abcdef");
    std::fs::create_dir_all(dir.parent().expect("parent")).expect("mkdir");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .expect("mkdir");
    std::fs::write(
        dir.join("state.json"),
        serde_json::to_vec_pretty(&state).expect("json"),
    )
    .expect("write");
    dir
}

fn own_running_state() -> Json {
    let me = std::process::id() as i32;
    serde_json::json!({
        "label": "fake", "run_id": "20260101T000000.000000Z__fake__abcdef", "status": "running",
        "pid": me, "pid_identity": agent_looper::effects::procinfo::pid_identity(me),
        "updated_at": "2026-01-01T00:00:00Z",
    })
}

#[test]
fn record_and_btw_notes_and_focus_are_written_to_the_run() {
    let p = Project::new();
    let dir = fake_run(&p, own_running_state());
    let out = control(&p, &["note", "fake", "--note", "remember\n the  tests"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("operator note recorded for fake at .agent-looper/runs/"),
        "{}",
        stdout(&out)
    );
    let out = control(&p, &["note", "--note", "psst", "--delivery", "btw"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("the run has no hybrid agent pane"),
        "{}",
        stderr(&out)
    );
    let notes: Vec<Json> = std::fs::read_to_string(dir.join("operator_notes.jsonl"))
        .expect("notes")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(notes.len(), 2);
    assert_eq!(notes[0]["status"], "recorded");
    assert_eq!(notes[0]["note"], "remember\n the  tests");
    assert_eq!(notes[0]["note_preview"], "remember the tests");
    assert_eq!(notes[1]["status"], "failed");
    assert!(
        notes[1]["error"]
            .as_str()
            .expect("error")
            .contains("no hybrid agent pane")
    );
    for n in &notes {
        for k in [
            "id",
            "created_at",
            "actor",
            "delivery",
            "status",
            "note",
            "note_preview",
        ] {
            assert!(n.get(k).is_some(), "{k} missing in {n}");
        }
    }
    assert!(
        !dir.join("control.jsonl").exists(),
        "record and btw never queue control lines"
    );

    let out = control(
        &p,
        &[
            "focus",
            "--summary",
            "  parser \n migration ",
            "--actor",
            "agent",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("summary: parser migration"));
    let f: Json = serde_json::from_str(
        std::fs::read_to_string(dir.join("focus.jsonl"))
            .expect("focus")
            .trim(),
    )
    .expect("json");
    assert_eq!(f["summary"], "parser migration");
    assert_eq!(f["actor"], "agent");
    assert_eq!(f["source"], "manual");
    let out = control(&p, &["focus", "--summary", "  \n "]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn control_files_that_are_not_ours_alone_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let p = Project::new();
    let dir = fake_run(&p, own_running_state());
    std::fs::write(p.join("elsewhere"), "").expect("write");
    std::os::unix::fs::symlink(p.join("elsewhere"), dir.join("control.jsonl")).expect("symlink");
    let out = control(&p, &["stop"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("is a symbolic link"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(p.join("elsewhere")).expect("read"),
        ""
    );
    std::fs::remove_file(dir.join("control.jsonl")).expect("rm");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let out = control(&p, &["stop"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("writable by group or others"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.join("control.jsonl").exists());
}

#[test]
fn selection_errors_list_the_candidates() {
    let p = Project::new();
    let mut st = own_running_state();
    st["status"] = "stopped".into();
    fake_run(&p, st);
    let out = control(&p, &["stop", "nosuch"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("no active looper run matches `nosuch`"),
        "{err}"
    );
    let out = control(&p, &["stop", "fake"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("fake [stopped]"), "{}", stderr(&out));
    let out = control(&p, &["stop", "fake", "--include-stopped"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn stop_now_on_a_stale_run_repairs_it() {
    let p = Project::new();
    let mut child = Command::new("true").spawn().expect("spawn");
    let dead = child.id();
    child.wait().expect("reap");
    let mut st = own_running_state();
    st["pid"] = dead.into();
    let dir = fake_run(&p, st);
    let out = control(&p, &["stop", "--now"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!(
            "repaired stale looper state: supervisor process {dead} is no longer running"
        )),
        "{}",
        stdout(&out)
    );
    let st = read_json(&dir.join("state.json"));
    assert_eq!(st["status"], "stopped");
    assert_eq!(
        st["stop_reason"],
        format!("external termination: supervisor process {dead} is no longer running")
    );
    assert_eq!(read_events(&dir).len(), 1);
    assert!(!dir.join("control.jsonl").exists());
}

#[test]
fn fifty_concurrent_writers_are_each_consumed_once() {
    let p = Project::new();
    p.fake_agent("=== default\nsay started\nsleep 30\n", "");
    let mut run = start(&p, &[]);
    let dir = wait_prompt_started(&p, 1);
    let children: Vec<Child> = (0..50)
        .map(|i| {
            let mut c = p.looper();
            c.args(["control", "stop", "--after-loop", "--reason"])
                .arg(format!("writer {i} {}", "x".repeat(i * 40)))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            c.spawn().expect("spawn control")
        })
        .collect();
    let mut ids = Vec::new();
    for c in children {
        let out = c.wait_with_output().expect("wait");
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        ids.push(id_of(&out));
    }
    let lines = control_lines(&dir);
    assert_eq!(lines.len(), 50);
    let received = || {
        read_events(&dir)
            .iter()
            .filter(|e| e["event"] == "control_command_received")
            .filter_map(|e| e["id"].as_str().map(String::from))
            .collect::<Vec<_>>()
    };
    assert!(
        wait_until(10.0, || received().len() >= 50),
        "received {}",
        received().len()
    );
    let got = received();
    for id in &ids {
        assert_eq!(got.iter().filter(|g| *g == id).count(), 1, "{id}");
    }
    assert_eq!(got.len(), 50);
    let out = control(&p, &["stop", "--now"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(run.wait_exit(20.0), Some(0));
}

#[test]
fn wait_exits_1_when_the_run_ends_for_another_reason() {
    let p = Project::new();
    p.fake_agent("=== default\nsay working\nsleep 0.7\nexit 5\n", "");
    let mut run = start(&p, &[]);
    wait_prompt_started(&p, 1);
    let out = control(&p, &["stop", "--wait"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert!(text.contains(": error ("), "{text}");
    assert_eq!(run.wait_exit(20.0), Some(1));
}

#[test]
fn btw_notes_are_queued_for_the_supervisor_never_pasted_by_the_command() {
    // Issue 14 item 7: the command used to paste into the pane itself, at once, even while a
    // new pane was starting. It now queues the note for the supervisor (which pastes between
    // turns and acknowledges it: `hybrid::hybrid_claude_btw_notes_go_through_the_supervisor_between_turns`)
    // and waits for the acknowledgement.
    let p = Project::new();
    let sock = p.join("tmux.sock");
    let sock_s = sock.display().to_string();
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .arg("-S")
            .arg(&sock_s)
            .args(args)
            .current_dir(p.path())
            .env_remove("TMUX")
            .output()
            .expect("tmux")
    };
    let out = tmux(&[
        "new-session",
        "-d",
        "-s",
        "t",
        "-x",
        "80",
        "-y",
        "24",
        "cat > pane.txt",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The private server ends with the test, however it ends.
    struct KillServer(String);
    impl Drop for KillServer {
        fn drop(&mut self) {
            let _ = Command::new("tmux")
                .args(["-S", &self.0, "kill-server"])
                .output();
        }
    }
    let _server = KillServer(sock_s.clone());
    let pane = stdout(&tmux(&["display-message", "-p", "-t", "t", "#{pane_id}"]))
        .trim()
        .to_string();
    let mut st = own_running_state();
    st["hybrid_pane_id"] = pane.clone().into();
    let dir = fake_run(&p, st);
    let out = p
        .looper()
        .env("TMUX", format!("{sock_s},1,0"))
        .args([
            "control",
            "note",
            "--note",
            "check\n  the   logs",
            "--delivery",
            "btw",
            "--wait-seconds",
            "1",
        ])
        .output()
        .expect("control");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let text = std::fs::read_to_string(p.join("pane.txt")).unwrap_or_default();
    tmux(&["kill-server"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stderr(&out).contains("still queued"), "{}", stderr(&out));
    assert_eq!(text, "", "the command pasted nothing itself");
    let line: Json = serde_json::from_str(
        std::fs::read_to_string(dir.join("control.jsonl"))
            .expect("control")
            .trim(),
    )
    .expect("json");
    assert_eq!(line["action"], "note");
    assert_eq!(line["delivery"], "btw");
    assert_eq!(line["note"], "check\n  the   logs");
    let note: Json = serde_json::from_str(
        std::fs::read_to_string(dir.join("operator_notes.jsonl"))
            .expect("notes")
            .trim(),
    )
    .expect("json");
    assert_eq!(note["status"], "queued");
}

/// `control stop --wait` returned as soon as the state said stopped, while the supervisor was
/// still finishing (here its notifier, for 3 s): a looper started right after was refused by
/// the run lock (`another looper is already running`). It returns once the supervisor exited.
#[test]
fn stop_wait_returns_once_the_supervisor_has_exited() {
    let p = Project::new();
    p.fake_agent(
        "=== call 1\nsleep 30\n=== default\nsay hi\n",
        "[notify]\ncommand = [\"/bin/sh\", \"-c\", \"sleep 3\"]\non = [\"stopped\"]\ntimeout_seconds = 20\n",
    );
    let mut run = start(&p, &[]);
    wait_prompt_started(&p, 1);
    let out = control(&p, &["stop", "--now", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        matches!(run.child.try_wait(), Ok(Some(_))),
        "--wait returned while the supervisor was still running"
    );
    // The worktree is free: the run lock is taken at once.
    let next = p.run(&["--once"]);
    assert_eq!(next.status.code(), Some(0), "{}", stderr(&next));
}

/// A looper started as soon as `status` said the previous run stopped, while that run's
/// supervisor was still finishing (its notifier, 3 s), was refused by the run lock (exit 2,
/// `another looper is already running`). It now waits for the finishing supervisor and runs.
#[test]
fn a_looper_started_while_the_previous_run_finishes_waits_for_it() {
    let p = Project::new();
    p.fake_agent(
        "=== call 1\nsleep 30\n=== default\nsay hi\n",
        "[notify]\ncommand = [\"/bin/sh\", \"-c\", \"sleep 3\"]\non = [\"stopped\"]\ntimeout_seconds = 20\n",
    );
    let mut run = start(&p, &[]);
    let dir = wait_prompt_started(&p, 1);
    let out = control(&p, &["stop", "--now"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        wait_until(20.0, || read_json(&dir.join("state.json"))["status"]
            == "stopped"),
        "the first run never stopped"
    );
    assert!(
        matches!(run.child.try_wait(), Ok(None)),
        "the first supervisor is still finishing (its notifier)"
    );
    let next = p.run(&["--once"]);
    assert_eq!(next.status.code(), Some(0), "{}", stderr(&next));
    assert!(
        stderr(&next).contains("has ended; waiting for its supervisor"),
        "{}",
        stderr(&next)
    );
    assert_eq!(run.wait_exit(20.0), Some(0));
}

//! Fault injection against real supervisors (issue 9, `RELIABILITY.md`): SIGKILL at random
//! moments, every signal in every phase, concurrent readers and writers, a full disk,
//! hostile input, and the security promises of the run directory.
//!
//! `RELIABILITY_KILLS=N` sets how many random kills the crash test makes (default 10);
//! `RELIABILITY_SEED=S` replays a run (the seed is printed).

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::{Rng, SeedableRng};
use serde_json::Value as Json;

use crate::support::*;

/// A looper in the background; SIGKILLed and reaped if the test ends early.
struct Bg {
    child: Child,
}

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bg {
    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    fn signal(&self, sig: Signal) {
        let _ = kill(self.pid(), sig);
    }

    fn wait_exit(&mut self, secs: f64) -> Option<i32> {
        let mut code = None;
        let done = wait_until(secs, || match self.child.try_wait() {
            Ok(Some(st)) => {
                code = Some(st.code().unwrap_or(-1));
                true
            }
            _ => false,
        });
        if done { code } else { None }
    }
}

fn start(p: &Project, args: &[&str]) -> Bg {
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
    Bg { child }
}

fn looper_err(p: &Project) -> String {
    std::fs::read_to_string(p.join("looper.err")).unwrap_or_default()
}

fn has_event(dir: &Path, name: &str) -> bool {
    read_events(dir).iter().any(|e| e["event"] == name)
}

fn wait_event(p: &Project, name: &str, secs: f64) -> PathBuf {
    assert!(
        wait_until(secs, || p
            .run_dirs()
            .last()
            .is_some_and(|d| has_event(d, name))),
        "no {name} event; stderr: {}",
        looper_err(p)
    );
    p.last_run()
}

/// Process groups the fake agent recorded (`record PATH`), plus `child_pgid` of every run.
fn recorded_pgids(p: &Project, rec: &Path) -> Vec<i64> {
    let mut v: Vec<i64> = std::fs::read_to_string(rec)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Json>(l).ok())
        .filter_map(|r| r["pgid"].as_i64())
        .collect();
    for d in p.run_dirs() {
        if let Ok(bytes) = std::fs::read(d.join("state.json"))
            && let Ok(st) = serde_json::from_slice::<Json>(&bytes)
            && let Some(g) = st["child_pgid"].as_i64()
        {
            v.push(g);
        }
    }
    v.sort_unstable();
    v.dedup();
    v
}

fn assert_groups_gone(p: &Project, rec: &Path, what: &str) {
    for g in recorded_pgids(p, rec) {
        assert!(
            wait_until(5.0, || !group_alive(g)),
            "{what}: agent process group {g} survived"
        );
    }
}

fn status_json(p: &Project, extra: &[&str]) -> (Json, Output) {
    let out = p
        .looper()
        .args(["status", "--json", "--state-root"])
        .arg(p.runs_dir())
        .args(extra)
        .output()
        .expect("status");
    let doc: Json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json did not parse ({e}): {}\n{}",
            stdout(&out),
            stderr(&out)
        )
    });
    (doc, out)
}

fn status_row(doc: &Json, dir: &Path) -> Json {
    doc["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .find(|r| r["run_dir"].as_str() == Some(&dir.display().to_string()))
        .cloned()
        .unwrap_or_else(|| panic!("{} not in status: {doc}", dir.display()))
}

/// events.jsonl: every line parses except at most a torn last one (no newline after it).
fn check_events_file(dir: &Path) -> usize {
    let bytes = std::fs::read(dir.join("events.jsonl")).unwrap_or_default();
    let complete = bytes.ends_with(b"\n") || bytes.is_empty();
    let lines: Vec<&[u8]> = bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    for (i, l) in lines.iter().enumerate() {
        let torn_tail = i + 1 == lines.len() && !complete;
        if serde_json::from_slice::<Json>(l).is_err() {
            assert!(
                torn_tail,
                "{}: line {} of events.jsonl does not parse: {:?}",
                dir.display(),
                i + 1,
                String::from_utf8_lossy(l)
            );
        }
    }
    lines.len()
}

/// Run directories as status lists them (a hidden `.<id>.new` is one being created).
fn visible_runs(p: &Project) -> Vec<PathBuf> {
    p.run_dirs()
        .into_iter()
        .filter(|d| {
            !d.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect()
}

fn kills() -> usize {
    std::env::var("RELIABILITY_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

fn seed() -> u64 {
    std::env::var("RELIABILITY_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random)
}

const CRASH_SCRIPT: &str = "\
=== call 1
record {rec}
say starting
rate-limit-event rejected 0
exit 1
=== call 3
record {rec}
err Error: the model is overloaded
exit 1
=== default
record {rec}
say working on it
flood 20000 120
sleep 0.05
say EXIT_SIGNAL: false
";

/// SIGKILL the supervisor at random moments of a busy run (retries, several prompts, sleeps
/// between loops, output) and check what is left each time.
#[test]
fn sigkill_at_random_moments_leaves_consistent_records() {
    let seed = seed();
    let n = kills();
    eprintln!("reliability: {n} SIGKILLs, seed {seed} (replay with RELIABILITY_SEED={seed})");
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let p = Project::new();
    let rec = p.join("agent.pids");
    let script = CRASH_SCRIPT.replace("{rec}", &rec.display().to_string());
    p.fake_agent(
        &script,
        "retry_backoff_base_seconds = 0.05\nterminate_grace_seconds = 0.5\n",
    );
    p.write("prompts.md", "first\n---\nsecond\n---\nthird\n");
    let args = [
        "--mode",
        "sequence",
        "-p",
        "prompts.md",
        "--max-loops",
        "3",
        "--sleep",
        "0.1",
    ];
    let mut stats = [0usize; 3]; // killed while active, after the end, before a run dir
    for i in 0..n {
        let _ = std::fs::remove_file(p.join("agent.script.calls"));
        let _ = std::fs::remove_file(&rec);
        let before = visible_runs(&p).len();
        let delay = rng.random_range(0..1100u64);
        let mut bg = start(&p, &args);
        std::thread::sleep(Duration::from_millis(delay));
        let finished_first = matches!(bg.child.try_wait(), Ok(Some(_)));
        bg.signal(Signal::SIGKILL);
        let _ = bg.child.wait();
        let ctx = format!("kill {i} after {delay} ms (seed {seed})");
        assert_groups_gone(&p, &rec, &ctx);

        let dirs = visible_runs(&p);
        if dirs.len() == before {
            stats[2] += 1;
        } else {
            let dir = dirs.last().expect("run dir").clone();
            let st = read_json(&dir.join("state.json"));
            check_events_file(&dir);
            let active = matches!(
                st["status"].as_str(),
                Some("running" | "retrying" | "paused")
            );
            let (doc, _) = status_json(&p, &[]);
            let row = status_row(&doc, &dir);
            assert_ne!(row["status"], "unreadable", "{ctx}: {row}");
            assert_eq!(row["stale"], active, "{ctx}: {row}");
            if active {
                stats[0] += 1;
                // Killed between its `run_stopped` and the state after it, the supervisor
                // recorded its end: the repair completes the state from that end.
                let recorded: Vec<Json> = read_events(&dir)
                    .into_iter()
                    .filter(|e| e["event"] == "run_stopped")
                    .collect();
                assert!(recorded.len() <= 1, "{ctx}");
                let (doc, out) = status_json(&p, &["--repair-stale"]);
                assert!(
                    stderr(&out).contains("repaired:"),
                    "{ctx}: {}",
                    stderr(&out)
                );
                let row = status_row(&doc, &dir);
                assert_eq!(row["status"], "stopped", "{ctx}: {row}");
                assert_eq!(row["stale"], false, "{ctx}");
                let st = read_json(&dir.join("state.json"));
                assert_eq!(st["status"], "stopped", "{ctx}");
                // The repair may follow a torn line: the last complete line is the repair.
                let stopped: Vec<Json> = read_events(&dir)
                    .into_iter()
                    .filter(|e| e["event"] == "run_stopped")
                    .collect();
                assert_eq!(stopped.len(), 1, "{ctx}");
                match recorded.first() {
                    Some(end) => {
                        assert_eq!(st["stop_reason"], end["stop_reason"], "{ctx}");
                        assert!(st["stale_repaired_at"].is_string(), "{ctx}");
                    }
                    None => assert!(stopped[0]["stale_repaired_at"].is_string(), "{ctx}"),
                }
            } else {
                stats[1] += 1;
                assert!(
                    finished_first || has_event(&dir, "run_stopped"),
                    "{ctx}: {st}"
                );
            }
        }
    }
    // A new looper in the same project starts and finishes.
    p.write("agent.script", "=== default\nsay done\n");
    let out = p.run(&["--max-loops", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(p.state()["status"], "stopped");
    let (doc, _) = status_json(&p, &[]);
    for r in doc["runs"].as_array().expect("runs") {
        assert_eq!(r["stale"], false, "{r}");
        assert_ne!(r["status"], "unreadable", "{r}");
    }
    eprintln!(
        "reliability: {} kills during a run, {} after its end, {} before its run directory",
        stats[0], stats[1], stats[2]
    );
}

// ---------------------------------------------------------------------------------------
// Signals in each phase.

#[derive(Clone, Copy, Debug)]
enum Phase {
    Prompt,
    Sleep,
    RetryWait,
}

fn signal_in_phase(sig: Signal, phase: Phase) {
    let p = Project::new();
    let rec = p.join("agent.pids");
    let r = rec.display();
    let (script, extra, event) = match phase {
        Phase::Prompt => (
            format!("=== default\nrecord {r}\nignore-term\ngrandchild 60\nsay hi\nsleep 60\n"),
            "terminate_grace_seconds = 0.3\n",
            "prompt_started",
        ),
        Phase::Sleep => (
            format!("=== default\nrecord {r}\ngrandchild 60\nsay hi\n"),
            "pipe_leak_timeout_seconds = 0.2\n",
            "loop_completed",
        ),
        Phase::RetryWait => (
            format!("=== default\nrecord {r}\nrate-limit-event rejected 60\nexit 1\n"),
            "",
            "retry_wait",
        ),
    };
    p.fake_agent(&script, extra);
    let mut bg = start(&p, &["--max-loops", "3", "--sleep", "60"]);
    let dir = wait_event(&p, event, 20.0);
    assert!(wait_until(5.0, || !recorded_pgids(&p, &rec).is_empty()));
    let t = Instant::now();
    bg.signal(sig);
    let code = bg.wait_exit(10.0);
    let what = format!("{sig:?} during {phase:?}");
    assert_eq!(code, Some(130), "{what}: {}", looper_err(&p));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "{what}: {:?}",
        t.elapsed()
    );
    let st = read_json(&dir.join("state.json"));
    assert_eq!(st["status"], "interrupted", "{what}");
    assert_eq!(
        st["stop_reason"],
        format!("interrupted by {}", sig.as_str()),
        "{what}"
    );
    assert_eq!(st["exit_code"], 130, "{what}");
    let names: Vec<String> = read_events(&dir)
        .iter()
        .filter_map(|e| e["event"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        names.last().map(String::as_str),
        Some("run_stopped"),
        "{what}"
    );
    assert_eq!(names.iter().filter(|n| *n == "run_stopped").count(), 1);
    assert_groups_gone(&p, &rec, &what);
}

#[test]
fn sigint_in_each_phase_is_recorded_and_leaves_no_orphan() {
    for phase in [Phase::Prompt, Phase::Sleep, Phase::RetryWait] {
        signal_in_phase(Signal::SIGINT, phase);
    }
}

#[test]
fn sigterm_in_each_phase_is_recorded_and_leaves_no_orphan() {
    for phase in [Phase::Prompt, Phase::Sleep, Phase::RetryWait] {
        signal_in_phase(Signal::SIGTERM, phase);
    }
}

#[test]
fn sighup_in_each_phase_is_recorded_and_leaves_no_orphan() {
    for phase in [Phase::Prompt, Phase::Sleep, Phase::RetryWait] {
        signal_in_phase(Signal::SIGHUP, phase);
    }
}

/// One SIGINT waits the grace period for an agent that ignores SIGTERM; a second one kills
/// at once.
#[test]
fn a_second_sigint_does_not_wait_the_grace_period() {
    let p = Project::new();
    let rec = p.join("agent.pids");
    // `ignore-term` before `record`: the SIGTERM that the first SIGINT sends must find the
    // agent already ignoring it (under load the record came first and SIGTERM killed it).
    p.fake_agent(
        &format!(
            "=== default\nignore-term\nrecord {}\ngrandchild 120\nsay hi\nsleep 120\n",
            rec.display()
        ),
        "terminate_grace_seconds = 60\n",
    );
    let mut bg = start(&p, &["--max-loops", "2"]);
    let dir = wait_event(&p, "prompt_started", 20.0);
    assert!(wait_until(5.0, || !recorded_pgids(&p, &rec).is_empty()));
    let t = Instant::now();
    bg.signal(Signal::SIGINT);
    // The first SIGINT is graceful: the agent ignores SIGTERM, so the run goes on.
    assert_eq!(
        bg.wait_exit(0.5),
        None,
        "one SIGINT must wait the grace period"
    );
    bg.signal(Signal::SIGINT);
    assert_eq!(bg.wait_exit(5.0), Some(130), "{}", looper_err(&p));
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    let st = read_json(&dir.join("state.json"));
    assert_eq!(st["status"], "interrupted");
    assert_eq!(st["stop_reason"], "interrupted by SIGINT");
    assert_groups_gone(&p, &rec, "double SIGINT");
}

// ---------------------------------------------------------------------------------------
// Concurrency.

#[test]
fn two_loopers_on_one_worktree_only_one_runs() {
    let p = Project::new();
    p.fake_agent("=== default\nsay hi\nsleep 2\n", "");
    let spawn = |name: &str| {
        p.looper()
            .args(["--local", "--max-loops", "1", "--label", name])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let a = spawn("first-looper");
    let b = spawn("second-looper");
    let (a, b) = (
        a.wait_with_output().expect("a"),
        b.wait_with_output().expect("b"),
    );
    let codes = [a.status.code(), b.status.code()];
    assert!(
        codes.contains(&Some(0)) && codes.contains(&Some(2)),
        "{codes:?}: {} / {}",
        stderr(&a),
        stderr(&b)
    );
    let (refused, holder) = if a.status.code() == Some(2) {
        (stderr(&a), "second-looper")
    } else {
        (stderr(&b), "first-looper")
    };
    assert!(
        refused.contains(holder),
        "refusal names the holder: {refused}"
    );
    assert_eq!(p.run_dirs().len(), 1, "the refused looper leaves no run");
}

#[test]
fn a_sigkilled_holder_does_not_block_the_next_looper() {
    let p = Project::new();
    p.fake_agent("=== default\nsay hi\nsleep 30\n", "");
    let mut bg = start(&p, &["--max-loops", "1", "--label", "crashed"]);
    wait_event(&p, "prompt_started", 20.0);
    bg.signal(Signal::SIGKILL);
    let _ = bg.child.wait();
    p.write("agent.script", "=== default\nsay done\n");
    let out = p.run(&["--max-loops", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("took over a stale run lock"),
        "{}",
        stderr(&out)
    );
    assert!(has_event(&p.last_run(), "lock_taken_over"));
}

/// `looper status --json` read in a tight loop while a supervisor writes many events
/// always parses and never shows a run as unreadable.
#[test]
fn status_in_a_tight_loop_never_sees_a_torn_state() {
    let p = Project::new();
    p.fake_agent("=== default\nsay ok\n", "");
    let prompts: Vec<String> = (1..=40).map(|i| format!("prompt {i}")).collect();
    p.write("prompts.md", &prompts.join("\n---\n"));
    let mut bg = start(
        &p,
        &["--mode", "sequence", "-p", "prompts.md", "--max-loops", "5"],
    );
    let mut reads = 0;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        let (doc, out) = status_json(&p, &[]);
        assert!(
            !stdout(&out).contains("unreadable"),
            "after {reads} reads: {}",
            stdout(&out)
        );
        for r in doc["runs"].as_array().expect("runs") {
            assert!(r["error"].is_null(), "{r}");
        }
        if let Some(d) = p.run_dirs().last() {
            check_events_file(d);
        }
        reads += 1;
        if matches!(bg.child.try_wait(), Ok(Some(_))) {
            break;
        }
    }
    assert_eq!(bg.wait_exit(60.0), Some(0), "{}", looper_err(&p));
    let events = read_events(&p.last_run()).len();
    eprintln!("status read {reads} times while the supervisor wrote {events} events");
    assert!(reads >= 5 && events > 200, "{reads} reads, {events} events");
}

/// Mount a small tmpfs; `None` (with a loud message) where mounting is not permitted.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).ok()?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(at)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "\n!!! SKIPPED: cannot mount a tmpfs to fill ({}) !!!\n",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_disk_stops_the_run_with_a_clear_reason() {
    let p = Project::new();
    let Some(fs) = Tmpfs::mount(&p.join("small"), "512k") else {
        return;
    };
    let rec = p.join("agent.pids");
    p.fake_agent(
        &format!(
            "=== default\nrecord {}\nsay hi\nflood 4000000 100\nsay done\n",
            rec.display()
        ),
        &format!("log_dir = {:?}\n", fs.0.join("runs").display().to_string()),
    );
    let out = p.run(&["--max-loops", "2"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let dirs: Vec<PathBuf> = std::fs::read_dir(fs.0.join("runs"))
        .expect("runs")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    assert_eq!(dirs.len(), 1);
    let st = read_json(&dirs[0].join("state.json"));
    let reason = st["stop_reason"].as_str().unwrap_or_default().to_string();
    eprintln!(
        "full disk: status {} reason {reason:?}; stderr: {err}",
        st["status"]
    );
    assert_eq!(st["status"], "error", "{st}\n{err}");
    assert!(
        reason.starts_with("supervisor error: cannot write")
            && reason.contains("loop-0001__prompt-001.log")
            && reason.contains("No space left on device"),
        "{reason}"
    );
    assert_eq!(st["exit_code"], 1);
    check_events_file(&dirs[0]);
    let events = read_events(&dirs[0]);
    assert_eq!(
        events.last().and_then(|e| e["event"].as_str()),
        Some("run_stopped")
    );
    assert!(
        !dirs[0].join(".space-reserve").exists(),
        "the reserve is given back"
    );
    assert_groups_gone(&p, &rec, "full disk");
}

/// Another process fills the disk in the middle of a prompt, taking the supervisor's
/// reserve too: nothing can be recorded any more, and the supervisor says so on stderr and
/// exits 1.
#[test]
fn a_disk_too_full_for_the_final_state_is_reported_on_stderr() {
    let p = Project::new();
    let Some(fs) = Tmpfs::mount(&p.join("small"), "1m") else {
        return;
    };
    let rec = p.join("agent.pids");
    p.fake_agent(
        &format!(
            "=== default\nrecord {}\nsay hi\nsleep 1\nsay more\n",
            rec.display()
        ),
        &format!("log_dir = {:?}\n", fs.0.join("runs").display().to_string()),
    );
    let mut bg = start(&p, &["--max-loops", "1"]);
    let runs = fs.0.join("runs");
    let find = || {
        std::fs::read_dir(&runs).ok().and_then(|d| {
            d.flatten()
                .map(|e| e.path())
                .find(|d| has_event(d, "prompt_started"))
        })
    };
    assert!(wait_until(20.0, || find().is_some()), "{}", looper_err(&p));
    let dir = find().expect("run dir");
    // Fill every byte, the reserve's included.
    let fill = |name: &str| {
        use std::io::Write;
        let mut f = std::fs::File::create(fs.0.join(name)).expect("fill");
        let block = vec![7u8; 4096];
        while f.write_all(&block).is_ok() {}
    };
    fill("fill-1");
    std::fs::remove_file(dir.join(".space-reserve")).expect("reserve");
    fill("fill-2");
    let code = bg.wait_exit(20.0);
    let err = looper_err(&p);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("cannot record the end of run") && err.contains("No space left on device"),
        "{err}"
    );
    assert_groups_gone(&p, &rec, "disk full for the final state");
    // What is on disk still parses; once there is room, status closes the run.
    read_json(&dir.join("state.json"));
    check_events_file(&dir);
    std::fs::remove_file(fs.0.join("fill-1")).expect("rm");
    let out = p
        .looper()
        .args(["status", "--json", "--repair-stale", "--state-root"])
        .arg(&runs)
        .output()
        .expect("status");
    let doc: Json = serde_json::from_slice(&out.stdout).expect("status json");
    assert_eq!(status_row(&doc, &dir)["status"], "stopped", "{doc}");
}

// ---------------------------------------------------------------------------------------
// Hostile input.

fn assert_clean_refusal(out: &Output, what: &str) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{what}: {err}");
    assert!(!err.contains("panicked"), "{what}: {err}");
    assert!(err.starts_with("looper: "), "{what}: {err}");
    assert!(
        err.len() < 2000,
        "{what}: the error is short: {} bytes",
        err.len()
    );
    err
}

#[test]
fn a_huge_prompt_file_is_refused_clearly_and_left_alone() {
    let p = Project::new();
    p.fake_agent("=== default\nsay hi\n", "");
    let big = "do the thing. ".repeat(50 * 1024 * 1024 / 14);
    p.write("PROMPT.md", &big);
    let t = Instant::now();
    let out = p.run(&["--once"]);
    eprintln!("50 MiB prompt refused in {:?}", t.elapsed());
    // Refused before anything starts (D6, D12): exit 2, a message that says what to do on
    // stderr, no run directory, no agent started, the prompt file untouched.
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(!err.contains("panicked"));
    assert!(
        err.contains("Linux accepts at most 131071 bytes in one argument"),
        "{err}"
    );
    assert!(err.contains("PROMPT.md prompt 1"), "{err}");
    assert!(
        p.run_dirs().is_empty(),
        "a refused start leaves no run directory"
    );
    assert_eq!(p.calls(), 0);
    assert_eq!(
        std::fs::metadata(p.join("PROMPT.md")).expect("meta").len(),
        big.len() as u64
    );
}

#[test]
fn binary_prompt_files_are_refused_clearly() {
    for (name, bytes) in [
        ("NUL bytes", b"do the thing\0and more\n".to_vec()),
        (
            "invalid UTF-8",
            b"do the \xff\xfe thing \xc3\x28\n".to_vec(),
        ),
    ] {
        let p = Project::new();
        p.fake_agent("=== default\nsay hi\n", "");
        std::fs::write(p.join("PROMPT.md"), &bytes).expect("write");
        let out = p.run(&["--once"]);
        let err = assert_clean_refusal(&out, name);
        assert!(err.contains("PROMPT.md"), "{name}: {err}");
        assert_eq!(p.calls(), 0, "{name}");
        assert!(p.run_dirs().is_empty(), "{name}");
        assert_eq!(std::fs::read(p.join("PROMPT.md")).expect("read"), bytes);
    }
}

#[test]
fn invalid_utf8_in_the_config_is_refused_clearly() {
    let p = Project::new();
    p.fake_agent("=== default\nsay hi\n", "");
    let mut cfg = std::fs::read(p.join("agent-looper.toml")).expect("cfg");
    cfg.extend_from_slice(b"\n# caf\xe9 \xff\n");
    std::fs::write(p.join("agent-looper.toml"), &cfg).expect("write");
    let out = p.run(&["--once"]);
    let err = assert_clean_refusal(&out, "invalid UTF-8 config");
    assert!(err.contains("agent-looper.toml"), "{err}");
    assert!(err.contains("UTF-8"), "{err}");
    assert_eq!(p.calls(), 0);
    assert!(p.run_dirs().is_empty());
}

/// Patterns that are exponential in a backtracking engine stay linear on a 10 MiB line.
#[test]
fn catastrophic_regexes_on_a_10_mib_line_finish_quickly() {
    const TEN_MIB: usize = 10 * 1024 * 1024;
    for (pattern, script) in [
        (
            "(a+)+$",
            format!("=== default\nrepeat a {TEN_MIB}\nsay !\n"),
        ),
        (
            "(x+x+)+y",
            format!("=== default\nrepeat x {TEN_MIB}\nsay \n"),
        ),
    ] {
        let p = Project::new();
        p.fake_agent(&script, "");
        let t = Instant::now();
        let out = p.run(&["--once", "--complete-on", pattern]);
        let took = t.elapsed();
        eprintln!("--complete-on {pattern:?} over a 10 MiB line: {took:?}");
        assert_eq!(out.status.code(), Some(0), "{pattern}: {}", stderr(&out));
        assert!(took < Duration::from_secs(30), "{pattern}: {took:?}");
        assert_eq!(
            p.state()["stop_reason"],
            "max loops reached: 1",
            "{pattern}"
        );
        assert!(p.state()["last_output_bytes"].as_u64() > Some(TEN_MIB as u64));
    }
}

#[test]
fn tmux_key_names_and_escape_sequences_reach_the_agent_literally() {
    let p = Project::new();
    let rec = p.join("argv.jsonl");
    let prompt = "C-c\nEnter\n\u{1b}[2J\u{1b}]0;title\u{7} send-keys -t 0 C-c Enter ; kill-server";
    p.write("PROMPT.md", prompt);
    p.fake_agent(&format!("=== default\nrecord {}\n", rec.display()), "");
    let out = p.run(&["--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r: Json = serde_json::from_str(
        std::fs::read_to_string(&rec)
            .expect("rec")
            .lines()
            .next()
            .expect("line"),
    )
    .expect("json");
    let argv = r["argv"].as_array().expect("argv");
    assert_eq!(argv.last().and_then(Json::as_str), Some(prompt));
}

#[test]
fn a_control_file_full_of_garbage_is_survived() {
    use std::io::Write;
    let p = Project::new();
    p.fake_agent("=== default\nsay working\nsleep 30\n", "");
    let mut bg = start(&p, &["--max-loops", "2"]);
    let dir = wait_event(&p, "prompt_started", 20.0);
    {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("control.jsonl"))
            .expect("control");
        f.write_all(b"garbage\n\0\0\xff\xfe not json\n{\"id\":\"x\",\"action\":\n")
            .expect("w");
        f.write_all(b"{\"id\":\"huge\",\"action\":\"stop_after_prompt\",\"note\":\"")
            .expect("w");
        f.write_all(&vec![b'A'; 10 * 1024 * 1024]).expect("w");
        f.write_all(
            b"\"}\n[1,2,3]\n{\"action\":\"explode\"}\n{\"id\":\"partial\",\"action\":\"interrupt_n",
        )
        .expect("w");
        f.write_all(b"\n").expect("w");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(bg.wait_exit(0.1), None, "garbage stopped the run");
    assert!(!has_event(&dir, "control_command_received"));
    let out = p
        .looper()
        .args(["control", "stop", "--now"])
        .output()
        .expect("control");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(bg.wait_exit(10.0), Some(0), "{}", looper_err(&p));
    let st = read_json(&dir.join("state.json"));
    assert_eq!(st["status"], "stopped");
    assert!(
        st["stop_reason"]
            .as_str()
            .unwrap_or("")
            .contains("interrupt_now"),
        "{st}"
    );
}

#[test]
fn a_state_file_that_is_a_symlink_or_a_directory_is_unreadable_not_followed() {
    let p = Project::new();
    p.fake_agent("=== default\nsay hi\n", "");
    let out = p.run(&["--once"]);
    assert_eq!(out.status.code(), Some(0));
    let good = p.last_run();
    let real = std::fs::read(good.join("state.json")).expect("state");
    let runs = p.runs_dir();
    let linked = runs.join("20260101T000000.000000Z__linked__000001");
    let dir_state = runs.join("20260101T000000.000000Z__dirstate__000002");
    std::fs::create_dir(&linked).expect("mkdir");
    std::fs::create_dir(&dir_state).expect("mkdir");
    std::fs::write(p.join("elsewhere.json"), &real).expect("w");
    std::os::unix::fs::symlink(p.join("elsewhere.json"), linked.join("state.json"))
        .expect("symlink");
    std::fs::create_dir(dir_state.join("state.json")).expect("mkdir");
    let (doc, out) = status_json(&p, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for d in [&linked, &dir_state] {
        let row = status_row(&doc, d);
        assert_eq!(row["status"], "unreadable", "{row}");
        assert!(row["error"].is_string(), "{row}");
    }
    assert_eq!(status_row(&doc, &good)["status"], "stopped");
    // The table too, and repair leaves them alone.
    let out = p
        .looper()
        .args(["status", "--repair-stale", "--state-root"])
        .arg(&runs)
        .output()
        .expect("status");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).matches("unreadable").count(),
        2,
        "{}",
        stdout(&out)
    );
    assert_eq!(std::fs::read(p.join("elsewhere.json")).expect("r"), real);
}

// ---------------------------------------------------------------------------------------
// Security.

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(p)
        .expect("meta")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn run_directories_are_private_and_secrets_stay_out_of_them() {
    let p = Project::new();
    let secret = "sk-ant-test-SECRET123456789abcdef";
    p.fake_agent("=== default\nsay hi\nerr warn\n", "");
    let cfg = p.read("agent-looper.toml").replace(
        "env = { ",
        &format!("env = {{ ANTHROPIC_API_KEY = {secret:?}, "),
    );
    p.write("agent-looper.toml", &cfg);
    let mut bg = start(&p, &["--max-loops", "2"]);
    assert_eq!(bg.wait_exit(30.0), Some(0), "{}", looper_err(&p));
    let out = p
        .looper()
        .args(["control", "note", "--note", "later", "--include-stopped"])
        .output()
        .expect("note");
    let _ = out; // a note on a stopped run may be refused; the files are checked below
    let dir = p.last_run();
    assert_eq!(mode(&dir), 0o700);
    let mut checked = 0;
    // Subdirectories (the asks, D31) are private too, and their files are checked the same.
    let mut entries: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    while let Some(path) = entries.pop() {
        if path.is_dir() {
            assert_eq!(mode(&path), 0o700, "{}", path.display());
            entries.extend(
                std::fs::read_dir(&path)
                    .expect("dir")
                    .flatten()
                    .map(|e| e.path()),
            );
            continue;
        }
        assert_eq!(mode(&path), 0o600, "{}", path.display());
        let bytes = std::fs::read(&path).expect("read");
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the API key leaked into {}",
            path.display()
        );
        checked += 1;
    }
    for f in [
        "state.json",
        "events.jsonl",
        "control.jsonl",
        "loop-0001__prompt-001.log",
    ] {
        assert!(dir.join(f).exists(), "{f}");
    }
    assert!(checked >= 5);
    // Nor does the supervisor print it.
    let printed =
        std::fs::read_to_string(p.join("looper.out")).unwrap_or_default() + &looper_err(&p);
    assert!(!printed.contains(secret));
}

#[test]
fn shell_syntax_in_prompts_and_notes_is_never_run() {
    let p = Project::new();
    let rec = p.join("argv.jsonl");
    p.write(
        "PROMPT.md",
        "fix $(touch pwned) and `touch pwned2`; touch pwned3",
    );
    p.fake_agent(
        &format!(
            "=== call 1\nrecord {r}\nsay one\nsleep 1\n=== default\nrecord {r}\n",
            r = rec.display()
        ),
        "",
    );
    let mut bg = start(&p, &["--max-loops", "2"]);
    wait_event(&p, "prompt_started", 20.0);
    let out = p
        .looper()
        .args([
            "control",
            "note",
            "--note",
            "$(touch pwned4) `touch pwned5` ; touch pwned6",
            "--delivery",
            "next-prompt",
        ])
        .output()
        .expect("note");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(bg.wait_exit(30.0), Some(0), "{}", looper_err(&p));
    let calls: Vec<Json> = std::fs::read_to_string(&rec)
        .expect("rec")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(calls.len(), 2);
    assert!(calls[1]["argv"].to_string().contains("$(touch pwned4)"));
    for n in 1..=6 {
        let name = if n == 1 {
            "pwned".to_string()
        } else {
            format!("pwned{n}")
        };
        assert!(!p.join(&name).exists(), "{name} was created");
    }
}

/// A control file that others can write is refused with a warning; what was appended while
/// it was open is never acted on, even after the mode is restored.
#[test]
fn a_world_writable_control_file_is_refused() {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let p = Project::new();
    p.fake_agent("=== default\nsay working\nsleep 30\n", "");
    let mut bg = start(&p, &["--max-loops", "1"]);
    let dir = wait_event(&p, "prompt_started", 20.0);
    let ctl = dir.join("control.jsonl");
    std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&ctl)
        .expect("open")
        .write_all(b"{\"id\":\"intruder\",\"action\":\"interrupt_now\"}\n")
        .expect("write");
    assert!(
        wait_until(5.0, || looper_err(&p)
            .contains("is writable by group or others")),
        "no warning: {}",
        looper_err(&p)
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(!has_event(&dir, "control_command_received"));
    assert_eq!(
        bg.wait_exit(0.1),
        None,
        "the intruder's command was acted on"
    );
    // Restored: the intruder's line stays ignored, a new command works.
    std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        !has_event(&dir, "control_command_received"),
        "acted on after restore"
    );
    let out = p
        .looper()
        .args(["control", "stop", "--now"])
        .output()
        .expect("control");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(bg.wait_exit(10.0), Some(0), "{}", looper_err(&p));
    let ids: Vec<Json> = read_events(&dir)
        .into_iter()
        .filter(|e| e["event"] == "control_command_received")
        .map(|e| e["id"].clone())
        .collect();
    assert_eq!(ids.len(), 1);
    assert_ne!(ids[0], "intruder");
}

#[test]
fn an_attempt_that_cannot_start_ends_the_run_instead_of_hanging_it() {
    // Loop 2's log cannot be opened (a directory stands at its path, as a vanished or
    // broken run directory would): the attempt's failure to start is its end, recorded.
    let p = Project::new();
    p.fake_agent("=== default\nsay working\n", "");
    let mut bg = start(&p, &["--max-loops", "3", "--sleep", "2"]);
    let dir = wait_event(&p, "loop_completed", 20.0);
    std::fs::create_dir(dir.join("loop-0002__prompt-001.log")).expect("mkdir");
    let code = bg.wait_exit(20.0);
    assert!(code.is_some(), "the run hung; stderr: {}", looper_err(&p));
    assert_ne!(code, Some(0));
    let st = p.state();
    assert!(
        st["stop_reason"]
            .as_str()
            .is_some_and(|r| r.contains("cannot open log")),
        "{st}"
    );
    assert_eq!(
        read_events(&dir)
            .iter()
            .filter(|e| e["event"] == "run_stopped")
            .count(),
        1
    );
}

/// Issue 20 item 15: a codex `agent_message` over 1 MiB ending in the marker (2 MB as
/// reported, and 40 MB) completes the run, through the binary with the fake agent
/// speaking codex's JSON; the supervisor's memory stays bounded (D13).
#[test]
fn a_huge_structured_agent_message_still_completes_within_bounded_memory() {
    for (mib, what) in [(2usize, "2 MB"), (40, "40 MB")] {
        let p = Project::new();
        p.write(
            "agent.script",
            &format!(
                "=== default\ncodex-reply {}\\nEXIT_SIGNAL: true\n",
                "word ".repeat(mib * (1 << 20) / 5)
            ),
        );
        p.write(
            "agent-looper.toml",
            &format!(
                "[looper]\ndefault_agent = \"codex\"\nsleep_seconds = 0\n\n[agents.codex]\nkind = \"codex\"\nexecutable = {:?}\nenv = {{ FAKE_AGENT_SCRIPT = {:?} }}\n",
                fake_agent_bin().display().to_string(),
                p.join("agent.script").display().to_string()
            ),
        );
        p.write("PROMPT.md", "do the thing\n");
        let mut child = p
            .looper()
            .args([
                "--local",
                "--max-loops",
                "2",
                "--complete-on",
                "EXIT_SIGNAL:\\s*true$",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("looper");
        let mut peak = 0u64;
        let status = loop {
            if let Some(k) = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("VmHWM:"))?
                        .split_whitespace()
                        .nth(1)?
                        .parse::<u64>()
                        .ok()
                })
            {
                peak = peak.max(k);
            }
            if let Some(st) = child.try_wait().expect("try_wait") {
                break st;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let st = p.state();
        assert_eq!(status.code(), Some(0), "{what}: {st}");
        assert_eq!(st["stop_reason"], "completion marker", "{what}: {st}");
        assert_eq!(st["current_loop"], 1, "{what}: loop 1 completed");
        assert_eq!(
            st["current_session_id"], "fake-session-1",
            "{what}: the record's session"
        );
        assert!(peak > 0 && peak < 32 * 1024, "{what}: peak RSS {peak} KiB");
    }
}

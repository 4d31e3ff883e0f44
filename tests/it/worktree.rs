//! `--worktree`, `--parallel` and `looper diff` with real loopers on real git repositories
//! (issue 16): runs in worktrees of their own leave the main checkout as it was, a run that
//! changed nothing removes its worktree, a SIGKILLed looper's worktree is reported and
//! repaired, and the run lock is per worktree.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value as Json;

use crate::support::*;

/// A project whose fake agent's script (and its call counter) live outside the work tree,
/// so the main checkout changes only when a run changes it.
struct Repo {
    p: Project,
    scripts: tempfile::TempDir,
}

impl Repo {
    fn new(script: &str) -> Self {
        let p = Project::new();
        let scripts = tempfile::tempdir().expect("tempdir");
        let script_path = scripts.path().join("agent.script");
        std::fs::write(&script_path, script).expect("script");
        p.write(
            "agent-looper.toml",
            &format!(
                "[looper]\ndefault_agent = \"fake\"\nsleep_seconds = 0\n\n[agents.fake]\nkind = \"generic\"\nfirst_command = [{:?}, \"{{prompt}}\"]\nenv = {{ FAKE_AGENT_SCRIPT = {:?} }}\n",
                fake_agent_bin().display().to_string(),
                script_path.display().to_string()
            ),
        );
        p.write("PROMPT.md", "do the thing\n");
        // The test's own state directory lives in the project: not the project's business.
        p.write(".gitignore", ".agent-looper/\n.xdg-state/\n.xdg-config/\n");
        p.git(&["add", "-A"]);
        p.git(&["commit", "-q", "-m", "config"]);
        Repo { p, scripts }
    }

    fn git(&self, args: &[&str]) -> String {
        self.p.git(args)
    }

    /// `git status` and HEAD: what must not change in the main checkout.
    fn main_checkout(&self) -> (String, String) {
        (
            self.git(&["status", "--porcelain", "--untracked-files=all"]),
            self.git(&["rev-parse", "HEAD"]),
        )
    }

    fn looper(&self, args: &[&str]) -> Output {
        self.p.run(args)
    }

    fn cmd(&self, args: &[&str]) -> Output {
        let mut c = self.p.looper();
        c.args(args);
        c.output().expect("looper")
    }

    fn spawn(&self, args: &[&str]) -> Child {
        let mut c = self.p.looper();
        c.arg("--local")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.spawn().expect("spawn looper")
    }

    fn worktree(&self, name: &str) -> PathBuf {
        self.p.join(&format!(".agent-looper/worktrees/{name}"))
    }

    fn run_of(&self, label: &str) -> PathBuf {
        self.p
            .run_dirs()
            .into_iter()
            .find(|d| read_json(&d.join("state.json"))["label"] == label)
            .unwrap_or_else(|| panic!("no run labelled {label}"))
    }

    fn branches(&self) -> String {
        self.git(&["branch", "--list", "--format=%(refname:short)"])
    }
}

fn names(events: &[Json]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e["event"].as_str().map(str::to_string))
        .collect()
}

fn explain(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    )
}

const COMMIT_OWN_FILE: &str = "=== default\nwrite ${LOOPER_LABEL}.txt made by ${LOOPER_LABEL}\\n\ngit add ${LOOPER_LABEL}.txt\ngit commit -q -m ${LOOPER_LABEL}\nsay committed ${LOOPER_LABEL}\n";

#[test]
fn parallel_three_local_worktrees_commit_one_file_each_and_leave_the_main_checkout_alone() {
    let r = Repo::new(COMMIT_OWN_FILE);
    let before = r.main_checkout();
    let base = before.1.trim().to_string();
    let out = r.looper(&["--worktree", "--parallel", "3", "--once", "--label", "trio"]);
    let why = explain(&out);
    assert_eq!(out.status.code(), Some(0), "{why}");
    assert_eq!(
        r.main_checkout(),
        before,
        "the main checkout changed: {why}"
    );
    for i in 1..=3 {
        let label = format!("trio-{i}");
        assert!(stdout(&out).contains(&format!("[{label}] ")), "{why}");
        let branch = format!("looper/{label}");
        // One commit each, adding only its own file.
        assert_eq!(
            r.git(&["rev-list", "--count", &format!("{base}..{branch}")])
                .trim(),
            "1",
            "{why}"
        );
        assert_eq!(
            r.git(&["diff", "--name-only", &base, &branch]).trim(),
            format!("{label}.txt")
        );
        assert_eq!(r.git(&["rev-parse", &format!("{branch}~1")]).trim(), base);
        let run = r.run_of(&label);
        let st = read_json(&run.join("state.json"));
        assert_eq!(st["parallel_group"], "trio", "{st}");
        assert_eq!(st["parallel_index"], i, "{st}");
        assert_eq!(st["worktree_branch"], branch.as_str(), "{st}");
        assert_eq!(st["worktree_state"], "kept", "{st}");
        assert_eq!(st["commits_ahead"], 1, "{st}");
        assert_eq!(st["files_changed"], 1, "{st}");
        let ev = names(&read_events(&run));
        let created = ev.iter().position(|e| e == "worktree_created");
        let started = ev.iter().position(|e| e == "run_started");
        assert!(created < started && created.is_some(), "{ev:?}");
        assert_eq!(
            ev.last().map(String::as_str),
            Some("worktree_kept"),
            "{ev:?}"
        );
        // `looper diff` shows the run's change, and only it.
        let d = r.cmd(&["diff", &label]);
        assert_eq!(d.status.code(), Some(0), "{}", explain(&d));
        let patch = stdout(&d);
        assert!(
            patch.contains(&format!("+++ b/{label}.txt"))
                && patch.contains(&format!("+made by {label}")),
            "{patch}"
        );
        assert_eq!(patch.matches("diff --git").count(), 1, "{patch}");
        let stat = stdout(&r.cmd(&["diff", &label, "--stat"]));
        assert!(stat.contains(&format!(" {label}.txt | 1 +")), "{stat}");
    }
    let status = stdout(&r.cmd(&["status"]));
    assert!(
        status.contains("trio: 3 parallel runs (3 stopped)"),
        "{status}"
    );
    for i in 1..=3 {
        assert!(
            status.contains(&format!("looper/trio-{i} +1c 1f (kept)")),
            "{status}"
        );
    }
    let group_at = status.find("trio: 3 parallel runs").unwrap_or(0);
    let rows: Vec<usize> = (1..=3)
        .map(|i| status.find(&format!("trio-{i} ")).unwrap_or(0))
        .collect();
    assert!(
        group_at < rows[0] && rows[0] < rows[1] && rows[1] < rows[2],
        "{status}"
    );
}

#[test]
fn a_run_that_changed_nothing_removes_its_worktree_and_branch() {
    let r = Repo::new("=== default\nsay nothing to do\n");
    let before = r.main_checkout();
    let out = r.looper(&["--worktree", "--once", "--label", "idle"]);
    let why = explain(&out);
    assert_eq!(out.status.code(), Some(0), "{why}");
    assert!(
        stdout(&out).contains("worktree") && stdout(&out).contains("removed"),
        "{why}"
    );
    assert!(!r.worktree("idle").exists(), "{why}");
    assert!(!r.branches().contains("looper/idle"), "{why}");
    assert!(!r.git(&["worktree", "list"]).contains("idle"));
    assert_eq!(r.main_checkout(), before);
    let st = r.p.state();
    assert_eq!(st["worktree_state"], "removed", "{st}");
    assert_eq!(st["stop_reason"], "max loops reached: 1", "{st}");
    let ev = r.p.event_names();
    assert_eq!(
        ev.last().map(String::as_str),
        Some("worktree_removed"),
        "{ev:?}"
    );
    let d = r.cmd(&["diff", "idle"]);
    assert_eq!(d.status.code(), Some(2));
    assert!(
        stderr(&d).contains("was removed at its end"),
        "{}",
        explain(&d)
    );
}

#[test]
fn branch_and_base_choose_where_the_worktree_starts() {
    let r = Repo::new(COMMIT_OWN_FILE);
    r.p.write("later.txt", "later\n");
    r.git(&["add", "-A"]);
    r.git(&["commit", "-q", "-m", "later"]);
    let base = r.git(&["rev-parse", "HEAD~1"]).trim().to_string();
    let out = r.looper(&[
        "--worktree",
        "--branch",
        "feature/x",
        "--base",
        "HEAD~1",
        "--once",
        "--label",
        "based",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    assert_eq!(r.git(&["rev-parse", "feature/x~1"]).trim(), base);
    assert!(!r.worktree("based").join("later.txt").exists());
    let st = r.p.state();
    assert_eq!(st["worktree_base"], base.as_str(), "{st}");
    assert_eq!(st["branch"], "feature/x", "{st}");
}

#[test]
fn worktree_flags_are_checked_before_anything_is_made() {
    let r = Repo::new("=== default\nsay hi\n");
    for (args, want) in [
        (
            &["--parallel", "2", "--once"][..],
            "--parallel needs --worktree",
        ),
        (
            &["--branch", "b", "--once"][..],
            "--branch needs --worktree",
        ),
        (
            &["--worktree", "--base", "nope", "--once"][..],
            "does not name a commit",
        ),
        (&["--worktree", "--parallel", "65"][..], "at most 64"),
    ] {
        let out = r.looper(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", explain(&out));
        assert!(stderr(&out).contains(want), "{args:?}: {}", explain(&out));
    }
    assert!(r.p.run_dirs().is_empty());
    assert!(!r.p.join(".agent-looper/worktrees/.looper").exists() || r.branches().trim() == "main");
    // A dry run says what it would make and makes nothing.
    let out = r.looper(&["--worktree", "--dry-run", "--once", "--label", "dry"]);
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    assert!(
        stdout(&out).contains("would get worktree"),
        "{}",
        explain(&out)
    );
    assert!(!r.worktree("dry").exists());
    assert_eq!(r.branches().trim(), "main");
}

#[test]
fn a_failed_start_removes_the_worktree_it_made() {
    let r = Repo::new("=== default\nsay hi\n");
    // The agent program is missing: `prepare` fails after the worktree was made.
    let cfg = r.p.read("agent-looper.toml");
    r.p.write(
        "agent-looper.toml",
        &cfg.replace(
            &fake_agent_bin().display().to_string(),
            "/nonexistent/agent",
        ),
    );
    let out = r.looper(&["--worktree", "--once", "--label", "nostart"]);
    assert_eq!(out.status.code(), Some(2), "{}", explain(&out));
    assert!(
        stderr(&out).contains("agent executable not found"),
        "{}",
        explain(&out)
    );
    assert!(stderr(&out).contains("removed"), "{}", explain(&out));
    assert!(!r.worktree("nostart").exists());
    assert!(!r.branches().contains("looper/nostart"));
}

#[test]
fn a_hybrid_run_whose_worktree_the_tui_does_not_trust_is_refused_or_trusted_on_request() {
    let r = Repo::new("=== default\nsay hi\n");
    let home = tempfile::tempdir().expect("home");
    let claude = home.path().join("claude");
    std::fs::write(&claude, "#!/bin/sh\n").expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&claude, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    r.p.write(
        "agent-looper.toml",
        &format!(
            "[looper]\ndefault_agent = \"claude\"\n\n[agents.claude]\nkind = \"claude\"\ninterface = \"hybrid\"\nexecutable = {:?}\nenv = {{ HOME = {:?} }}\n",
            claude.display().to_string(),
            home.path().display().to_string()
        ),
    );
    let out = r.looper(&["--worktree", "--once", "--label", "tui"]);
    assert_eq!(out.status.code(), Some(2), "{}", explain(&out));
    let err = stderr(&out);
    assert!(
        err.contains("Is this a project you created or one you trust?")
            && err.contains("--trust-worktree")
            && err.contains("--interface json"),
        "{err}"
    );
    assert!(!r.worktree("tui").exists());
    assert_eq!(r.branches().trim(), "main");

    // With the opt-in, trust is recorded for exactly the worktree made, and goes with it
    // (here the run fails next, outside tmux, so the worktree is removed at once).
    let out = r.looper(&["--worktree", "--trust-worktree", "--once", "--label", "tui"]);
    assert_eq!(out.status.code(), Some(2), "{}", explain(&out));
    assert!(stderr(&out).contains("needs tmux"), "{}", explain(&out));
    assert!(!r.worktree("tui").exists(), "{}", explain(&out));
    let cfg: Json = read_json(&home.path().join(".claude.json"));
    assert_eq!(cfg["projects"], serde_json::json!({}), "{cfg}");
}

/// Wait until the run labelled `label` has its agent running.
fn agent_running(r: &Repo, label: &str) -> bool {
    wait_until(20.0, || {
        r.p.run_dirs().iter().any(|d| {
            std::fs::read(d.join("state.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<Json>(&b).ok())
                .is_some_and(|s| s["label"] == label && s["child_pid"].is_i64())
        })
    })
}

fn sigkill(child: &mut Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = child.wait();
}

#[test]
fn a_sigkilled_loopers_worktree_is_reported_and_repaired() {
    let r = Repo::new(
        "=== default\nwrite work.txt w\\n\ngit add work.txt\ngit commit -q -m work\nsleep 30\n",
    );
    let mut busy = r.spawn(&["--worktree", "--once", "--label", "busy"]);
    assert!(agent_running(&r, "busy"), "busy never started");
    sigkill(&mut busy);
    // A second run whose looper dies before its agent changed anything.
    std::fs::write(
        r.scripts.path().join("agent.script"),
        "=== default\nsleep 30\n",
    )
    .expect("script");
    let mut idle = r.spawn(&["--worktree", "--once", "--label", "idle"]);
    assert!(agent_running(&r, "idle"), "idle never started");
    sigkill(&mut idle);

    let status = r.cmd(&["status"]);
    let text = stdout(&status);
    let stale = text
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("stale"))
        .count();
    assert_eq!(stale, 2, "both runs are stale: {text}");
    assert_eq!(
        text.matches("worktree left, --repair-stale settles it")
            .count(),
        2,
        "{text}"
    );
    let json: Json = serde_json::from_slice(&r.cmd(&["status", "--json"]).stdout).expect("json");
    let runs = json["runs"].as_array().cloned().unwrap_or_default();
    assert!(
        runs.iter()
            .all(|run| run["stale"] == true && run["worktree"]["state"] == "active"),
        "{json}"
    );

    let repaired = r.cmd(&["status", "--repair-stale"]);
    let text = stdout(&repaired);
    assert!(text.contains("repaired: busy: worktree"), "{text}");
    assert!(text.contains("kept on branch looper/busy"), "{text}");
    assert!(text.contains("repaired: idle: worktree"), "{text}");
    assert!(
        r.worktree("busy").join("work.txt").exists(),
        "busy kept its commit"
    );
    assert!(r.branches().contains("looper/busy"));
    assert!(!r.worktree("idle").exists(), "idle removed: {text}");
    assert!(!r.branches().contains("looper/idle"));
    let busy_state = read_json(&r.run_of("busy").join("state.json"));
    assert_eq!(busy_state["status"], "stopped", "{busy_state}");
    assert_eq!(busy_state["worktree_state"], "kept", "{busy_state}");
    let idle_events = names(&read_events(&r.run_of("idle")));
    assert_eq!(
        &idle_events[idle_events.len() - 2..],
        ["run_stopped", "worktree_removed"],
        "{idle_events:?}"
    );
    // Nothing is left to repair.
    let again = stdout(&r.cmd(&["status", "--repair-stale"]));
    assert!(!again.contains("repaired"), "{again}");
}

#[test]
fn a_signalled_looper_settles_its_worktree_on_the_way_out() {
    let r = Repo::new("=== default\nwrite half.txt wip\\n\nsleep 30\n");
    let child = r.spawn(&["--worktree", "--once", "--label", "sig"]);
    assert!(agent_running(&r, "sig"), "never started");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let out = child.wait_with_output().expect("wait");
    let why = explain(&out);
    assert_eq!(out.status.code(), Some(130), "{why}");
    let st = read_json(&r.run_of("sig").join("state.json"));
    assert_eq!(st["status"], "interrupted", "{st}");
    // The agent left an uncommitted file: kept, and said why.
    assert_eq!(st["worktree_state"], "kept", "{st}");
    assert!(
        st["worktree_note"]
            .as_str()
            .is_some_and(|n| n.contains("1 uncommitted change")),
        "{st}"
    );
    assert!(r.worktree("sig").join("half.txt").exists());
    assert!(stdout(&out).contains("kept on branch looper/sig"), "{why}");
}

#[test]
fn a_looper_killed_before_its_run_started_leaves_an_orphan_that_status_reports() {
    let r = Repo::new("=== default\nsay hi\n");
    // As a looper SIGKILLed between making its worktree and its run directory leaves it.
    let out = r.looper(&[
        "--worktree",
        "--worktree-cleanup",
        "keep",
        "--once",
        "--label",
        "orph",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    // Re-create the looper's record of an unsettled worktree whose looper is gone.
    let wt = r.worktree("orph");
    let dead = {
        let mut c = Command::new("true").spawn().expect("spawn");
        let pid = c.id();
        c.wait().expect("wait");
        pid
    };
    let record = serde_json::json!({
        "version": 1, "phase": "ready", "name": "orph", "path": wt, "branch": "looper/orph",
        "base": r.git(&["rev-parse", "HEAD"]).trim(), "home": r.p.path().canonicalize().expect("canon"),
        "cleanup": "auto", "label": "orph", "run_dir": null, "pid": dead, "pid_identity": null,
        "created_at": "2026-01-01T00:00:00Z",
    });
    std::fs::write(
        r.p.join(".agent-looper/worktrees/.looper/orph.json"),
        record.to_string(),
    )
    .expect("record");
    let text = stdout(&r.cmd(&["status"]));
    assert!(
        text.contains(&format!("orphan worktree {}", wt.display()))
            && text.contains("`looper status --repair-stale` settles it"),
        "{text}"
    );
    let json: Json = serde_json::from_slice(&r.cmd(&["status", "--json"]).stdout).expect("json");
    assert_eq!(
        json["orphan_worktrees"][0]["branch"], "looper/orph",
        "{json}"
    );
    let text = stdout(&r.cmd(&["status", "--repair-stale"]));
    assert!(text.contains("repaired: orph: worktree"), "{text}");
    assert!(!wt.exists(), "untouched, so removed: {text}");
    assert!(!stdout(&r.cmd(&["status"])).contains("orphan worktree"));
}

#[test]
fn two_worktrees_of_one_repository_run_at_once_but_one_worktree_takes_one_looper() {
    let signals = tempfile::tempdir().expect("tempdir");
    let go = signals.path().join("go");
    let began = signals.path().join("began");
    let r = Repo::new(&format!(
        "=== default\nrecord {}\nwait-for {}\n",
        began.display(),
        go.display()
    ));
    let first = r.spawn(&["--worktree", "--once", "--label", "first"]);
    assert!(agent_running(&r, "first"), "first never started");
    // The first agent has read its script (it is rewritten for the second just below).
    assert!(
        wait_until(20.0, || began.exists()),
        "first agent never began"
    );
    let wt = r.worktree("first");
    std::fs::write(
        r.scripts.path().join("agent.script"),
        "=== default\nsay quick\n",
    )
    .expect("script");
    let second = r.looper(&["--worktree", "--once", "--label", "second"]);
    assert_eq!(second.status.code(), Some(0), "{}", explain(&second));
    let same = r.looper(&[
        "--once",
        "--label",
        "intruder",
        "--cwd",
        &wt.display().to_string(),
    ]);
    assert_eq!(same.status.code(), Some(2), "{}", explain(&same));
    assert!(
        stderr(&same)
            .contains("another looper is already running in this worktree: label \"first\""),
        "{}",
        explain(&same)
    );
    std::fs::write(&go, "").expect("go");
    let out = first.wait_with_output().expect("first");
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
}

/// The main checkout's own runs: `looper diff` compares the checkout to the run's start.
#[test]
fn diff_of_a_run_without_a_worktree_starts_from_its_first_snapshot() {
    let r = Repo::new("=== default\nwrite made.txt new\\n\nsay done\n");
    r.p.write("README.md", "edited before the run\n");
    let out = r.looper(&["--once", "--backup-dirty", "--label", "here"]);
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    let d = r.cmd(&["diff", "here"]);
    let patch = stdout(&d);
    assert!(patch.contains("+++ b/made.txt"), "{}", explain(&d));
    assert!(
        !patch.contains("README.md"),
        "the edit made before the run is in its start snapshot: {patch}"
    );
    assert!(
        stderr(&d).contains("first backup snapshot"),
        "{}",
        explain(&d)
    );
    let st = r.p.state();
    assert_eq!(st["files_changed"], 1, "{st}");
    assert_eq!(st["branch"], "main", "{st}");
}

/// A private tmux server: its own socket directory, killed on drop.
struct Tmux {
    dir: tempfile::TempDir,
}

impl Tmux {
    fn new() -> Self {
        Tmux {
            // Short path: the socket path must fit in sun_path.
            dir: tempfile::Builder::new()
                .prefix("lw")
                .tempdir_in("/tmp")
                .expect("tmux dir"),
        }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.env("TMUX_TMPDIR", self.dir.path())
            .env_remove("TMUX")
            .env_remove("TMUX_PANE");
        c
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}

#[test]
fn parallel_in_the_farm_opens_one_window_per_run() {
    let r = Repo::new("=== default\nsay hi\n");
    let tmux = Tmux::new();
    let mut c = r.p.looper();
    c.env("TMUX_TMPDIR", tmux.dir.path())
        .env_remove("LOOPER_NAME")
        .env_remove("CODEX_NAME")
        .args([
            "--worktree",
            "--parallel",
            "2",
            "--once",
            "--farm-session",
            "pw",
            "--label",
            "duo",
        ]);
    let out = c.output().expect("looper");
    let why = explain(&out);
    assert_eq!(out.status.code(), Some(0), "{why}");
    let dir =
        r.p.path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
    for i in 1..=2 {
        assert!(
            stdout(&out).contains(&format!(
                "started duo-{i} in tmux session pw, window {dir}-{i}"
            )),
            "{why}"
        );
    }
    let windows = tmux
        .cmd()
        .args(["list-windows", "-t", "pw", "-F", "#{window_name}"])
        .output()
        .map(|o| stdout(&o))
        .unwrap_or_default();
    assert_eq!(windows.lines().count(), 2, "{windows}");
    let both_done = wait_until(60.0, || {
        r.p.run_dirs().len() == 2
            && r.p.run_dirs().iter().all(|d| {
                std::fs::read(d.join("state.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Json>(&b).ok())
                    .is_some_and(|s| s["worktree_state"] == "removed")
            })
    });
    assert!(both_done, "{:?}", r.p.run_dirs());
    for i in 1..=2 {
        let st = read_json(&r.run_of(&format!("duo-{i}")).join("state.json"));
        assert_eq!(st["parallel_group"], "duo", "{st}");
        assert_eq!(st["stop_reason"], "max loops reached: 1", "{st}");
    }
}

// ---------------------------------------------------------------------------------------
// End to end: the real CLIs inside a looper-made worktree, against the mock model server.

mod e2e {
    use std::time::Duration;

    use serde_json::Value as Json;

    use crate::e2e_support::{Cli, E2e, Timing, all_strings, require};
    use crate::mock_server::{MockServer, Provider, Reply};
    use crate::support::*;

    const COMPLETE_ON: &str = r"EXIT_SIGNAL:\s*true";

    fn main_checkout(p: &Project) -> (String, String) {
        (
            p.git(&["status", "--porcelain", "--untracked-files=all"]),
            p.git(&["rev-parse", "HEAD"]),
        )
    }

    /// A codex json run in its worktree: codex works there (the request carries the
    /// worktree as its cwd), the session is resumed by its thread id, the main checkout is
    /// left alone, and the untouched worktree is removed at the end.
    #[test]
    fn e2e_codex_json_run_works_in_a_looper_made_worktree() {
        let Some(bin) = require("e2e_codex_json_worktree") else {
            return;
        };
        let e = E2e::new(Cli::Codex, bin, Timing::Shared, "");
        e.project
            .write("PROMPT.md", "Look around; say EXIT_SIGNAL: true when done.");
        e.project.git(&["add", "-A"]);
        e.project.git(&["commit", "-q", "-m", "prompt"]);
        e.server.push(
            Provider::OpenAi,
            Reply::text("Looked around.\nEXIT_SIGNAL: false"),
        );
        e.server
            .push(Provider::OpenAi, Reply::text("Done.\nEXIT_SIGNAL: true"));
        let before = main_checkout(&e.project);
        let out = e.run(&[
            "--worktree",
            "--label",
            "cx",
            "--max-loops",
            "3",
            "--reuse-session",
            "--complete-on",
            COMPLETE_ON,
        ]);
        let why = e.diagnose(&out);
        assert_eq!(out.status.code(), Some(0), "{why}");
        let st = e.state();
        assert_eq!(st["stop_reason"], "completion marker", "{why}");
        let wt = st["worktree_path"].as_str().unwrap_or("?").to_string();
        assert!(wt.ends_with("/.agent-looper/worktrees/cx"), "{st}");
        assert_eq!(st["agent_cwd"], wt.as_str(), "{st}");
        let turns = e.server.turns(Provider::OpenAi);
        assert_eq!(turns.len(), 2, "{why}");
        assert!(
            turns
                .iter()
                .all(|t| t.json().is_some_and(|j| all_strings(&j).contains(&wt))),
            "codex did not run in the worktree: {why}"
        );
        let thread = turns[0].header("session-id").unwrap_or("?").to_string();
        assert_eq!(
            turns[1].header("session-id"),
            Some(thread.as_str()),
            "loop 2 resumed loop 1's thread: {why}"
        );
        assert_eq!(main_checkout(&e.project), before, "{why}");
        assert_eq!(st["worktree_state"], "removed", "{st}");
        assert!(!std::path::Path::new(&wt).exists());
    }

    /// A claude hybrid run in its worktree, with the trust opt-in: the pane starts without
    /// the trust dialog, the turn ends from claude's transcript in the worktree's project
    /// folder, a pane closed between loops is reopened on the same session (`--resume`),
    /// and at the end the untouched worktree is removed with the trust recorded for it.
    #[test]
    fn e2e_claude_hybrid_run_works_in_a_looper_made_worktree_and_resumes_a_reopened_pane() {
        let Some(dir) = require("e2e_claude_hybrid_worktree") else {
            return;
        };
        let claude = dir.join("claude");
        let server = MockServer::start();
        server.push(
            Provider::Anthropic,
            Reply::text("Still working.\nEXIT_SIGNAL: false"),
        );
        server.push(
            Provider::Anthropic,
            Reply::text("All done.\nEXIT_SIGNAL: true"),
        );
        let p = Project::new();
        let outside = tempfile::tempdir().expect("home");
        let home = outside.path().join("home");
        std::fs::create_dir_all(&home).expect("home");
        let tmp = outside.path().join("tmp");
        std::fs::create_dir_all(&tmp).expect("tmp");
        let key = "sk-ant-api03-test-0123456789abcdefghijklmnop";
        // Onboarded and the key approved, but no folder trusted: the worktree needs the
        // opt-in.
        let cfg = serde_json::json!({
            "hasCompletedOnboarding": true,
            "theme": "dark",
            "projects": {},
            "customApiKeyResponses": { "approved": [key[key.len() - 20..].to_string()], "rejected": [] },
        });
        std::fs::write(home.join(".claude.json"), cfg.to_string()).expect("claude.json");
        p.write(
            "PROMPT.md",
            "Finish the task. End with EXIT_SIGNAL: true only when done.",
        );
        p.write(".gitignore", ".agent-looper/\n.xdg-state/\nlooper.exit\n");
        p.write(
            "agent-looper.toml",
            &format!(
                "[looper]\ndefault_agent = \"claude\"\nsleep_seconds = 3\ntimeout_seconds = 60\n\n[agents.claude]\nkind = \"claude\"\ninterface = \"hybrid\"\nexecutable = {:?}\nenv = {{ HOME = {:?}, ANTHROPIC_BASE_URL = {:?}, ANTHROPIC_API_KEY = {:?}, CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = \"1\", DISABLE_AUTOUPDATER = \"1\", CLAUDE_CODE_MAX_RETRIES = \"0\", TMPDIR = {:?} }}\n",
                claude.display().to_string(),
                home.display().to_string(),
                server.base_url(),
                key,
                tmp.display().to_string(),
            ),
        );
        p.git(&["add", "-A"]);
        p.git(&["commit", "-q", "-m", "config"]);
        let before = main_checkout(&p);
        let tmux = super::Tmux::new();
        let done = p.join("looper.exit");
        let script = format!(
            "cd {:?} && {:?} --local --worktree --trust-worktree --label cl --max-loops 3 --reuse-session --complete-on '{COMPLETE_ON}'; echo $? > {:?}",
            p.path(),
            looper_bin(),
            done
        );
        let started = tmux
            .cmd()
            .args([
                "new-session",
                "-d",
                "-s",
                "wt",
                "-x",
                "200",
                "-y",
                "50",
                "sh",
                "-c",
                &script,
            ])
            .env("XDG_STATE_HOME", p.join(".xdg-state"))
            .output()
            .expect("tmux");
        assert!(started.status.success(), "{}", stderr(&started));
        let loop_one = wait_until(90.0, || {
            p.run_dirs().last().is_some() && p.event_names().iter().any(|e| e == "loop_completed")
        });
        let capture = || {
            tmux.cmd()
                .args(["capture-pane", "-p", "-t", "wt"])
                .output()
                .map(|o| stdout(&o))
                .unwrap_or_default()
        };
        assert!(loop_one, "loop 1 never completed: {}", capture());
        let st = p.state();
        let wt = st["worktree_path"].as_str().unwrap_or("?").to_string();
        // Trust was recorded for exactly this worktree while it lives.
        let trusted: Json = read_json(&home.join(".claude.json"));
        assert_eq!(
            trusted["projects"][&wt]["hasTrustDialogAccepted"], true,
            "{trusted}"
        );
        // The transcript is claude's for the worktree's folder, named by the session id.
        let session = st["current_session_id"].as_str().unwrap_or("?").to_string();
        let folder: String = wt
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        assert!(
            home.join(".claude/projects")
                .join(&folder)
                .join(format!("{session}.jsonl"))
                .is_file(),
            "no transcript for {session} in {folder}"
        );
        // Close the pane between the loops, as a user might.
        let pane = st["hybrid_pane_id"].as_str().unwrap_or("?").to_string();
        let killed = tmux
            .cmd()
            .args(["kill-pane", "-t", &pane])
            .output()
            .expect("kill");
        assert!(killed.status.success(), "{}", stderr(&killed));
        // `echo $? > file` creates the file before it writes the code: wait for the line.
        let finished = wait_until(120.0, || {
            std::fs::read_to_string(&done).is_ok_and(|t| t.ends_with('\n'))
        });
        assert!(finished, "the run did not end: {}", capture());
        let code = std::fs::read_to_string(&done).unwrap_or_default();
        let st = p.state();
        assert_eq!(code.trim(), "0", "{st}\n{}", capture());
        assert_eq!(st["stop_reason"], "completion marker", "{st}");
        let started: Vec<Json> = p
            .events()
            .into_iter()
            .filter(|e| e["event"] == "hybrid_pane_started")
            .collect();
        assert_eq!(started.len(), 2, "{started:?}");
        assert_eq!(started[1]["session_id"], session.as_str(), "{started:?}");
        assert!(
            started[1]["argv"].as_array().is_some_and(|a| a
                .windows(2)
                .any(|w| w[0] == "--resume" && w[1] == session.as_str())),
            "the reopened pane resumed the session: {started:?}"
        );
        let prompts = server.prompts(Provider::Anthropic);
        assert_eq!(prompts.len(), 2, "{prompts:?}");
        assert!(
            server
                .turns(Provider::Anthropic)
                .iter()
                .all(|t| t.json().is_some_and(|j| all_strings(&j).contains(&wt))),
            "claude did not run in the worktree"
        );
        assert_eq!(main_checkout(&p), before);
        assert_eq!(st["worktree_state"], "removed", "{st}");
        assert!(!std::path::Path::new(&wt).exists());
        let after: Json = read_json(&home.join(".claude.json"));
        assert!(
            after["projects"].get(&wt).is_none(),
            "the trust went with the worktree: {after}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn parallel_local_runs_exit_with_the_most_serious_code_of_theirs() {
    // The call counter is shared: exactly one of the two runs gets the failing first call.
    let r = Repo::new("=== call 1\nexit 7\n=== default\nsay fine\n");
    let out = r.looper(&["--worktree", "--parallel", "2", "--once", "--label", "pair"]);
    let why = explain(&out);
    assert_eq!(out.status.code(), Some(1), "{why}");
    let text = stdout(&out);
    assert!(text.contains("exit 0") && text.contains("exit 1"), "{why}");
    assert!(text.contains("-> exit 1"), "{why}");
    for i in 1..=2 {
        assert!(
            !r.worktree(&format!("pair-{i}")).exists(),
            "untouched: {why}"
        );
    }
}

//! Security and data-loss regressions (issue 20): hostile text reaching tmux, backup pruning,
//! symlinked starter files, files that are not regular files, daemonized descendants and a
//! lost agent status. Each test drives the real binaries against real tmux, git and
//! processes, and fails on the code as it was before its fix.

use std::process::{Command, Stdio};

use crate::support::*;

/// A private tmux server (its own `TMUX_TMPDIR`, never the user's), killed on drop.
struct TmuxServer {
    tmpdir: tempfile::TempDir,
    /// Where a `#(touch $LOOPER_TEST_MARK...)` that tmux ran would leave a file.
    marks: tempfile::TempDir,
}

impl TmuxServer {
    /// `None` (the test says it is skipped) when tmux or `script` is not installed.
    fn new() -> Option<Self> {
        for tool in ["tmux", "script"] {
            let found = Command::new(tool)
                .arg("-V")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !found {
                eprintln!("SKIPPED: {tool} is not installed");
                return None;
            }
        }
        Some(Self {
            tmpdir: tempfile::Builder::new()
                .prefix("ls")
                .tempdir_in("/tmp")
                .expect("tmux tmpdir"),
            marks: tempfile::tempdir().expect("marks dir"),
        })
    }

    fn env(&self, c: &mut Command, p: &Project) {
        c.env("TMUX_TMPDIR", self.tmpdir.path())
            .env("LOOPER_TEST_MARK", self.marks.path().join("mark"))
            .env_remove("TMUX")
            .env_remove("TMUX_PANE")
            .env_remove("LOOPER_NAME")
            .env_remove("CODEX_NAME")
            .env_remove("LOOPER_LAYOUT")
            .env_remove("CODEX_LOOPER_LAYOUT")
            .env_remove("LOOPER_REMAIN_ON_EXIT")
            .env_remove("CODEX_REMAIN_ON_EXIT")
            .env("XDG_STATE_HOME", p.join(".xdg-state"))
            .env("XDG_CONFIG_HOME", p.join(".xdg-config"));
    }

    fn tmux(&self, p: &Project, args: &[&str]) -> Result<String, String> {
        let mut c = Command::new("tmux");
        self.env(&mut c, p);
        let out = c
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run tmux");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// A client attached to a new session `session`, in a terminal made by `script`: tmux
    /// runs `#(...)` jobs for what it shows to clients, so a client must be looking.
    fn attached_client(&self, p: &Project, session: &str) -> std::process::Child {
        let mut c = Command::new("script");
        self.env(&mut c, p);
        c.current_dir(p.path())
            .env("TERM", "xterm-256color")
            .args([
                "-qec",
                &format!("tmux new-session -s {session}"),
                "/dev/null",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = c.spawn().expect("run script");
        let up = wait_until(20.0, || {
            self.tmux(p, &["list-clients", "-F", "#{client_session}"])
                .is_ok_and(|s| s.lines().any(|l| l == session))
        });
        assert!(up, "no client attached to {session}");
        child
    }

    /// Files that a format expansion created.
    fn marks(&self) -> Vec<String> {
        std::fs::read_dir(self.marks.path())
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for TmuxServer {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .env("TMUX_TMPDIR", self.tmpdir.path())
            .env_remove("TMUX")
            .arg("kill-server")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A git project in a directory whose name is a tmux format that would run a command.
fn project_named(prefix: &str) -> Project {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("tempdir");
    let p = Project { dir };
    p.git(&["init", "-q", "-b", "main"]);
    p.git(&["config", "user.email", "test@example.com"]);
    p.git(&["config", "user.name", "test"]);
    p.write(".gitignore", ".agent-looper/\n");
    p.git(&["add", "-A"]);
    p.git(&["commit", "-q", "-m", "init"]);
    p
}

/// A codex-kind agent played by the fake agent (its JSON error events are classified).
fn codex_fake(p: &Project, script: &str, looper_extra: &str) {
    p.write("agent.script", script);
    let cfg = format!(
        "[looper]\ndefault_agent = \"fake\"\nsleep_seconds = 0\n{looper_extra}\n\n[agents.fake]\nkind = \"codex\"\nexecutable = {:?}\nenv = {{ FAKE_AGENT_SCRIPT = {:?} }}\n",
        fake_agent_bin().display().to_string(),
        p.join("agent.script").display().to_string()
    );
    p.write("agent-looper.toml", &cfg);
    p.write("PROMPT.md", "do the thing\n");
}

fn dir_name(p: &Project) -> String {
    p.path()
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn tmux_formats_in_a_directory_name_and_in_agent_errors_are_never_run() {
    let Some(t) = TmuxServer::new() else { return };
    let p = project_named("lt#(touch $LOOPER_TEST_MARK-dir)");
    let mark = |what: &str| format!("{}-{what}", t.marks.path().join("mark").display());
    // Three retry waits, each shown with `display-message`, then the cap stops the run with
    // the agent's text as the reason. tmux kills a job when the client that asked for it
    // exits, so one message alone does not run its command every time; three nearly always
    // do on the code before the fix, and the directory name always does.
    let mut script = String::new();
    for call in 1..=3 {
        script.push_str(&format!(
            "=== call {call}\ncodex-error Service temporarily unavailable #(touch {}) #{{pane_id}}\nexit 1\n",
            mark(&format!("retry{call}"))
        ));
    }
    script.push_str(&format!(
        "=== default\ncodex-error Service temporarily unavailable #(touch {}) \x1b]2;title\x07\nexit 1\n",
        mark("stop")
    ));
    codex_fake(
        &p,
        &script,
        "retry_backoff_base_seconds = 1.2\nretry_backoff_max_seconds = 1.2\nmax_transient_retries = 3\n",
    );
    // A person is watching the farm session: a client is attached to it before the launch.
    let mut client = t.attached_client(&p, "farm");
    let mut c = Command::new(looper_bin());
    t.env(&mut c, &p);
    let out = c
        .current_dir(p.path())
        .args([
            "--once",
            "--farm-session",
            "farm",
            "--tmux-layout",
            "single",
            "--retry-notify-after",
            "0.5",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run looper");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let pane = || {
        t.tmux(
            &p,
            &[
                "list-panes",
                "-s",
                "-t",
                "=farm",
                "-F",
                "#{window_name}\t#{pane_id}\t#{pane_dead}",
            ],
        )
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("lt"))
        .map(str::to_string)
    };
    let finished = wait_until(40.0, || pane().is_some_and(|l| l.ends_with("\t1")));
    let line = pane().unwrap_or_default();
    let _ = client.kill();
    let _ = client.wait();
    assert!(finished, "the farm run did not end: {line:?}");
    // Give any job tmux might have started time to finish.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(
        t.marks(),
        Vec::<String>::new(),
        "tmux ran text as a command"
    );
    let mut f = line.split('\t');
    let (window, id) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
    // The window is named after the directory, literally.
    assert_eq!(window, dir_name(&p));
    let reason = t
        .tmux(
            &p,
            &["show-options", "-w", "-v", "-t", id, "@codex_stop_reason"],
        )
        .unwrap_or_default();
    assert!(
        reason.contains(&format!("#(touch {})", mark("stop"))) && !reason.contains('\x1b'),
        "{reason:?}"
    );
    assert_eq!(p.calls(), 4, "three retries, then the cap");
}

fn backup_branches(p: &Project) -> Vec<String> {
    p.git(&[
        "for-each-ref",
        "--format=%(refname:short)",
        "refs/heads/looper-backup/",
    ])
    .lines()
    .map(str::to_string)
    .collect()
}

#[test]
fn backup_pruning_leaves_users_branches_and_the_other_worktrees_backups() {
    let p = Project::new();
    p.fake_agent("=== default\nsay ok\n", "");
    // A user's hotfix whose only ref is a branch under the backup prefix, and a `wip` that
    // sorts after every stamp.
    p.git(&["checkout", "-q", "-b", "tmp"]);
    p.write("hotfix.txt", "the only copy\n");
    p.git(&["add", "hotfix.txt"]);
    p.git(&["commit", "-q", "-m", "hotfix"]);
    let hotfix = p.git(&["rev-parse", "HEAD"]).trim().to_string();
    p.git(&["branch", "looper-backup/1.0-hotfix"]);
    p.git(&["checkout", "-q", "main"]);
    p.git(&["branch", "-D", "-q", "tmp"]);
    p.git(&["branch", "looper-backup/wip"]);
    // A linked worktree of the same repository, with its own copy of the set-up.
    // Inside the project (so the temp dir takes it away), ignored by the main worktree.
    let wt = p.join("linked");
    p.write(".git/info/exclude", "linked/\n");
    p.git(&[
        "worktree",
        "add",
        "-q",
        "-b",
        "side",
        &wt.display().to_string(),
    ]);
    for f in ["agent-looper.toml", "PROMPT.md"] {
        std::fs::copy(p.join(f), wt.join(f)).expect("copy set-up");
    }
    let run_in = |dir: &std::path::Path| {
        let out = p
            .looper()
            .current_dir(dir)
            .args([
                "--local",
                "--backup",
                "--backup-keep",
                "2",
                "--max-loops",
                "3",
            ])
            .output()
            .expect("run looper");
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    };
    run_in(p.path());
    let main_backups = backup_branches(&p);
    run_in(&wt);
    let left = backup_branches(&p);
    assert!(
        left.contains(&"looper-backup/1.0-hotfix".to_string()),
        "{left:?}"
    );
    assert!(left.contains(&"looper-backup/wip".to_string()), "{left:?}");
    assert_eq!(
        p.git(&["rev-parse", "looper-backup/1.0-hotfix"]).trim(),
        hotfix
    );
    // The main worktree's two newest backups survived the linked worktree's pruning.
    let main_made: Vec<&String> = main_backups
        .iter()
        .filter(|b| b.contains("-loop-"))
        .collect();
    assert_eq!(main_made.len(), 2, "{main_backups:?}");
    for b in &main_made {
        assert!(
            left.contains(b),
            "{b} was pruned by the other worktree: {left:?}"
        );
    }
    let side_made = left
        .iter()
        .filter(|b| b.contains("-loop-") && b.contains('@'));
    assert_eq!(side_made.count(), 2, "{left:?}");
}

#[test]
fn work_inside_a_submodule_is_progress_and_dirty_backups_capture_it() {
    let upstream = Project::new();
    let p = Project::new();
    p.git(&[
        "-c",
        "protocol.file.allow=always",
        "submodule",
        "add",
        "-q",
        &upstream.path().display().to_string(),
        "sub",
    ]);
    p.git(&["commit", "-q", "-m", "add submodule"]);
    // Every loop changes a file inside the submodule, and only there (the fake agent's call
    // counter is kept out of the fingerprint).
    p.fake_agent("=== default\nappend sub/README.md more\\n\nsay ok\n", "");
    p.write(".git/info/exclude", "agent.script.calls\n");
    p.git(&["add", "-A"]);
    p.git(&["commit", "-q", "-m", "set-up"]);
    let out = p.run(&[
        "--max-loops",
        "4",
        "--cb-no-progress",
        "2",
        "--backup",
        "--backup-dirty",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(p.state()["stop_reason"], "max loops reached: 4");
    // The backup before loop 4 holds the submodule as the agent had left it after loop 3.
    let last = p
        .git(&[
            "for-each-ref",
            "--format=%(refname:short)",
            "refs/heads/looper-backup/",
        ])
        .lines()
        .last()
        .expect("a backup")
        .to_string();
    let link = p.git(&["rev-parse", &format!("{last}:sub")]);
    let sub = p.join("sub");
    let shown = Command::new("git")
        .args(["show", &format!("{}:README.md", link.trim())])
        .current_dir(&sub)
        .output()
        .expect("git show");
    assert_eq!(
        String::from_utf8_lossy(&shown.stdout),
        "test\nmore\nmore\nmore\n",
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
}

#[test]
fn init_force_refuses_a_symlinked_prompt_and_writes_nothing() {
    let p = Project::bare_dir();
    let outside = tempfile::tempdir().expect("tempdir");
    let target = outside.path().join("precious.md");
    std::fs::write(&target, "the user's own file\n").expect("write");
    std::os::unix::fs::symlink(&target, p.join("PROMPT.md")).expect("symlink");
    let out = p.looper().args(["init", "--force"]).output().expect("init");
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&p.join("PROMPT.md").display().to_string()) && err.contains("symbolic link"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&target).expect("read"),
        "the user's own file\n"
    );
    // Checked before anything is written: the config was not written either.
    assert!(!p.join("agent-looper.toml").exists());
    // Without --force a link to an existing file is left alone, as any existing file is.
    let out = p.looper().arg("init").output().expect("init");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("exists, leaving unchanged"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        std::fs::read_to_string(&target).expect("read"),
        "the user's own file\n"
    );
    // --force replaces a regular file atomically, keeping its mode.
    use std::os::unix::fs::PermissionsExt;
    let cfg = p.join("agent-looper.toml");
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::remove_file(p.join("PROMPT.md")).expect("rm link");
    let out = p.looper().args(["init", "--force"]).output().expect("init");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let meta = std::fs::symlink_metadata(&cfg).expect("stat");
    assert!(meta.is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
}

#[test]
fn the_first_run_refuses_a_dangling_config_link() {
    let p = Project::bare_dir();
    let outside = tempfile::tempdir().expect("tempdir");
    let target = outside.path().join("planted.toml");
    std::os::unix::fs::symlink(&target, p.join("agent-looper.toml")).expect("symlink");
    let out = p.looper().output().expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(
        stderr(&out).contains(&p.join("agent-looper.toml").display().to_string()),
        "{}",
        stderr(&out)
    );
    assert!(!target.exists(), "the first run wrote through the link");
    assert!(!p.join("PROMPT.md").exists());
}

/// Runs `c` to its end, or kills it after `secs`: `None` means it hung. Address space is
/// capped at 1 GiB, so a reader that does not stop fails instead of eating the machine.
fn run_bounded(
    mut c: Command,
    secs: f64,
    stderr_to: &std::path::Path,
) -> Option<std::process::ExitStatus> {
    use std::os::unix::process::CommandExt;
    let err = std::fs::File::create(stderr_to).expect("stderr file");
    c.stdout(Stdio::null()).stderr(err);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        c.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 1 << 30,
                rlim_max: 1 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = c.spawn().expect("spawn looper");
    let mut status = None;
    let done = wait_until(secs, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    if !done {
        let _ = child.kill();
        let _ = child.wait();
    }
    status
}

#[test]
fn a_fifo_or_dev_zero_as_the_prompt_is_refused_with_the_path() {
    for kind in ["fifo", "/dev/zero"] {
        let p = Project::new();
        p.fake_agent("=== default\nsay ok\n", "");
        std::fs::remove_file(p.join("PROMPT.md")).expect("rm");
        if kind == "fifo" {
            nix::unistd::mkfifo(&p.join("PROMPT.md"), nix::sys::stat::Mode::S_IRWXU)
                .expect("mkfifo");
        } else {
            std::os::unix::fs::symlink(kind, p.join("PROMPT.md")).expect("symlink");
        }
        let mut c = p.looper();
        c.args(["--local", "--once"]);
        let status = run_bounded(c, 15.0, &p.join("stderr.txt"));
        let err = std::fs::read_to_string(p.join("stderr.txt")).unwrap_or_default();
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(2),
            "{kind}: {status:?} {err}"
        );
        assert!(
            err.contains(&p.join("PROMPT.md").display().to_string())
                && err.contains("not a regular file"),
            "{kind}: {err}"
        );
        assert!(p.run_dirs().is_empty(), "{kind}: a run was started");
        assert_eq!(p.calls(), 0);
    }
}

#[test]
fn a_fifo_plan_file_ends_the_run_instead_of_freezing_it() {
    let p = Project::new();
    p.fake_agent(
        "=== default\nsay EXIT_SIGNAL: true\n",
        "completion_enabled = true\nplan_file = \"fix_plan.md\"\n",
    );
    nix::unistd::mkfifo(&p.join("fix_plan.md"), nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    let mut c = p.looper();
    c.args(["--local", "--max-loops", "3"]);
    let status = run_bounded(c, 15.0, &p.join("stderr.txt"));
    let err = std::fs::read_to_string(p.join("stderr.txt")).unwrap_or_default();
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{status:?} {err}");
    let st = p.state();
    assert_eq!(st["status"], "error", "{st}");
    assert!(
        st["stop_reason"]
            .as_str()
            .is_some_and(|r| r.contains(&p.join("fix_plan.md").display().to_string())),
        "{st}"
    );
    assert_eq!(p.calls(), 1);
}

/// Pids a fake agent's `setsid-child` / `double-fork` steps left behind.
fn daemon_pids(p: &Project) -> Vec<i32> {
    std::fs::read_to_string(p.join("daemons.pids"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, f)| f.split_whitespace().next() != Some("Z"))
        })
        .unwrap_or(false)
}

/// Kill what a failed test left behind, so it does not outlive the test run.
fn kill_all(pids: &[i32]) {
    for pid in pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[test]
fn daemonized_descendants_end_with_their_attempt() {
    let p = Project::new();
    let rec = p.join("daemons.pids").display().to_string();
    p.fake_agent(
        &format!("=== default\nsetsid-child 60 {rec}\ndouble-fork 60 {rec}\nsay ok\n"),
        "pipe_leak_timeout_seconds = 0.3\n",
    );
    let out = p.run(&["--max-loops", "2"]);
    let pids = daemon_pids(&p);
    let survivors: Vec<i32> = pids.iter().copied().filter(|p| alive(*p)).collect();
    kill_all(&pids);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(pids.len(), 4, "two per loop");
    assert!(
        survivors.is_empty(),
        "outlived their attempt: {survivors:?} of {pids:?}"
    );
}

#[test]
fn a_daemon_holding_stdout_is_killed_after_the_leak_timeout() {
    let p = Project::new();
    let rec = p.join("daemons.pids").display().to_string();
    p.fake_agent(
        &format!("=== default\ndouble-fork-stdout 60 {rec}\nsay bye\n"),
        "pipe_leak_timeout_seconds = 0.3\n",
    );
    let t = std::time::Instant::now();
    let out = p.run(&["--once"]);
    let took = t.elapsed();
    let pids = daemon_pids(&p);
    let survivors: Vec<i32> = pids.iter().copied().filter(|p| alive(*p)).collect();
    kill_all(&pids);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(took < std::time::Duration::from_secs(8), "took {took:?}");
    assert_eq!(pids.len(), 1);
    assert!(
        survivors.is_empty(),
        "the daemon holding stdout survived: {survivors:?}"
    );
    let log =
        std::fs::read_to_string(p.last_run().join("loop-0001__prompt-001.log")).unwrap_or_default();
    assert!(log.contains("held its output open"), "{log}");
}

#[test]
fn sigkill_of_the_supervisor_ends_daemonized_descendants_too() {
    let p = Project::new();
    let rec = p.join("daemons.pids").display().to_string();
    p.fake_agent(
        &format!(
            "=== default\nrecord {}\nsetsid-child 60 {rec}\ndouble-fork 60 {rec}\nsleep 60\n",
            p.join("agent.json").display()
        ),
        "",
    );
    let mut child = p
        .looper()
        .args(["--local", "--once"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn looper");
    assert!(
        wait_until(10.0, || daemon_pids(&p).len() == 2),
        "daemons never started"
    );
    let agent: i32 = std::fs::read_to_string(p.join("agent.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["pid"].as_i64())
        .and_then(|v| i32::try_from(v).ok())
        .expect("agent pid");
    let mut pids = daemon_pids(&p);
    pids.push(agent);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    let _ = child.wait();
    let gone = wait_until(5.0, || pids.iter().all(|p| !alive(*p)));
    let survivors: Vec<i32> = pids.iter().copied().filter(|p| alive(*p)).collect();
    kill_all(&pids);
    assert!(
        gone,
        "outlived the SIGKILLed supervisor: {survivors:?} of {pids:?}"
    );
}

/// Field 4 of /proc/<pid>/stat.
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn an_agent_whose_exit_status_is_lost_fails_the_run_instead_of_completing_it() {
    // Issue 13, defect 2, through the binary: the agent's status cannot be collected (its
    // guard is killed under it). The attempt printed the completion marker, but a lost status
    // is a failure on record, never a clean exit that counts toward completion.
    let p = Project::new();
    p.fake_agent(
        &format!(
            "=== default\nrecord {}\nsay EXIT_SIGNAL: true\nsleep 3\n",
            p.join("agent.json").display()
        ),
        "completion_enabled = true\n",
    );
    let child = p
        .looper()
        .args(["--local", "--max-loops", "3"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn looper");
    assert!(wait_until(10.0, || p.join("agent.json").exists()));
    let agent: i32 = std::fs::read_to_string(p.join("agent.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(t.lines().next()?).ok())
        .and_then(|v| v["pid"].as_i64())
        .and_then(|v| i32::try_from(v).ok())
        .expect("agent pid");
    let guard = parent_of(agent).expect("the agent's parent");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(guard),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the guard");
    let out = child.wait_with_output().expect("wait");
    let st = p.state();
    assert_eq!(out.status.code(), Some(1), "{st} {}", stderr(&out));
    assert_eq!(st["status"], "error", "{st}");
    let reason = st["stop_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("exit status"), "{reason}");
    assert!(!alive(agent), "the agent outlived its guard");
}

#[test]
fn the_agent_starts_with_no_signal_blocked_so_sigterm_stops_it_at_once() {
    // The guard blocks the stop signals for itself; the agent must not inherit that mask,
    // or SIGTERM would wait for the grace period and SIGKILL every time.
    let p = Project::new();
    p.fake_agent(
        &format!(
            "=== default\nrecord {}\nsleep 60\n",
            p.join("agent.json").display()
        ),
        "timeout_seconds = 1\nterminate_grace_seconds = 30\n",
    );
    let t = std::time::Instant::now();
    let out = p.run(&["--once"]);
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
    assert!(
        took < std::time::Duration::from_secs(10),
        "SIGTERM did not stop the agent: {took:?}"
    );
    let st = p.state();
    let events = p.events();
    let done = events
        .iter()
        .find(|e| e["event"] == "prompt_completed")
        .expect("prompt_completed");
    assert_eq!(done["signal"], 15, "{st}");
}

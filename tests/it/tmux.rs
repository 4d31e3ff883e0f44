//! The farm and the split layout against a real tmux. Every test runs its own tmux server
//! (a private `TMUX_TMPDIR`, never the user's server) and kills it when done, even when
//! the test fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value as Json;

use crate::support::*;

/// A private tmux server: every tmux and looper process of a test gets its `TMUX_TMPDIR`.
struct TmuxServer {
    tmpdir: tempfile::TempDir,
}

impl TmuxServer {
    /// `None` (the test is skipped) when tmux is not installed.
    fn new() -> Option<Self> {
        let found = Command::new("tmux")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            eprintln!("tmux is not installed; skipping");
            return None;
        }
        // Short path: the socket path must fit in sun_path.
        let tmpdir = tempfile::Builder::new()
            .prefix("lt")
            .tempdir_in("/tmp")
            .expect("tmux tmpdir");
        Some(Self { tmpdir })
    }

    fn env(&self, c: &mut Command, p: &Project) {
        c.env("TMUX_TMPDIR", self.tmpdir.path())
            .env_remove("TMUX")
            .env_remove("TMUX_PANE")
            .env_remove("LOOPER_NAME")
            .env_remove("CODEX_NAME")
            .env_remove("LOOPER_LAYOUT")
            .env_remove("CODEX_LOOPER_LAYOUT")
            .env_remove("LOOPER_REMAIN_ON_EXIT")
            .env_remove("CODEX_REMAIN_ON_EXIT")
            .env("XDG_STATE_HOME", p.join(".xdg-state"))
            .env("XDG_CONFIG_HOME", p.join(".xdg-config"))
            // The farm's hand-over files go under the runtime directory: this server's own.
            .env("XDG_RUNTIME_DIR", self.tmpdir.path());
    }

    /// The farm's private directory for hand-over files (environment, start report).
    fn farm_dir(&self) -> PathBuf {
        self.tmpdir.path().join("agent-looper").join("farm")
    }

    /// `tmux <args>` on this server; its stdout, or `Err(stderr)`.
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

    /// A looper binary (not `--local`) in the project, pointed at this server.
    fn looper(&self, p: &Project, bin: &Path, args: &[&str]) -> Output {
        let mut c = Command::new(bin);
        self.env(&mut c, p);
        c.current_dir(p.path()).args(args).stdin(Stdio::null());
        c.output().expect("run looper")
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

/// A codex-kind agent played by the fake agent, so native agent arguments reach its argv.
fn codex_fake(p: &Project, agent: &str, script: &str, looper_extra: &str) {
    p.write("agent.script", script);
    let cfg = format!(
        "[looper]\ndefault_agent = \"{agent}\"\nsleep_seconds = 0\n{looper_extra}\n\n[agents.{agent}]\nkind = \"codex\"\nexecutable = {:?}\nenv = {{ FAKE_AGENT_SCRIPT = {:?} }}\n",
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

/// `(pane id, dead, start command)` of every pane of a session.
fn panes(t: &TmuxServer, p: &Project, session: &str) -> Vec<(String, bool, String)> {
    t.tmux(
        p,
        &[
            "list-panes",
            "-s",
            "-t",
            &format!("={session}"),
            "-F",
            "#{pane_id}\t#{pane_dead}\t#{pane_start_command}",
        ],
    )
    .unwrap_or_default()
    .lines()
    .filter_map(|l| {
        let mut f = l.splitn(3, '\t');
        Some((
            f.next()?.to_string(),
            f.next()? == "1",
            f.next()?.to_string(),
        ))
    })
    .collect()
}

fn windows(t: &TmuxServer, p: &Project, session: &str) -> Vec<String> {
    t.tmux(
        p,
        &[
            "list-windows",
            "-t",
            &format!("={session}"),
            "-F",
            "#{window_name}",
        ],
    )
    .unwrap_or_default()
    .lines()
    .map(str::to_string)
    .collect()
}

fn window_option(t: &TmuxServer, p: &Project, pane: &str, name: &str) -> String {
    t.tmux(p, &["show-options", "-w", "-v", "-t", pane, name])
        .unwrap_or_default()
        .trim_end_matches('\n')
        .to_string()
}

fn capture(t: &TmuxServer, p: &Project, pane: &str) -> String {
    t.tmux(p, &["capture-pane", "-p", "-t", pane])
        .unwrap_or_default()
}

/// Wait until the session has `n` panes and all of them are dead (the run is over and
/// remain-on-exit kept them).
fn wait_all_dead(
    t: &TmuxServer,
    p: &Project,
    session: &str,
    n: usize,
    secs: f64,
) -> Vec<(String, bool, String)> {
    let ok = wait_until(secs, || {
        let v = panes(t, p, session);
        v.len() == n && v.iter().all(|x| x.1)
    });
    let v = panes(t, p, session);
    assert!(
        ok,
        "panes never all dead: {v:?}\n{}",
        v.iter()
            .map(|x| capture(t, p, &x.0))
            .collect::<Vec<_>>()
            .join("\n----\n")
    );
    v
}

/// The newest run's status, "" while there is none yet (the farm returns before it starts).
fn status(p: &Project) -> String {
    let Some(run) = p.run_dirs().pop() else {
        return String::new();
    };
    std::fs::read(run.join("state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Json>(&b).ok())
        .and_then(|v| v["status"].as_str().map(str::to_string))
        .unwrap_or_default()
}

fn recorded_argv(path: &PathBuf) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let rec: Json = serde_json::from_str(text.lines().next().unwrap_or("{}")).expect("record line");
    rec["argv"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn farm_launch_opens_one_window_with_the_live_view_and_marks_it_ready() {
    let Some(t) = TmuxServer::new() else { return };
    let p = Project::new();
    let rec = p.join("argv.jsonl");
    codex_fake(
        &p,
        "fake",
        &format!(
            "=== default\nrecord {}\ncodex-reply hello from the fake agent\n",
            rec.display()
        ),
        "",
    );
    let out = t.looper(
        &p,
        &looper_bin(),
        &[
            "--once",
            "--farm-session",
            "t1",
            "--",
            "--model",
            "m1",
            "semi;",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    // The run names itself as a local run does (`<dir>-<agent>`, issue 14.17) and the
    // launcher says so once the run has really started (14.5); outside tmux: attach.
    assert!(
        text.starts_with(&format!(
            "started {0}-fake in tmux session t1, window {0} (attach: tmux attach -t t1)",
            dir_name(&p)
        )),
        "{text}"
    );
    assert_eq!(
        p.run_dirs().len(),
        1,
        "the run exists once the launcher returns"
    );

    let v = wait_all_dead(&t, &p, "t1", 2, 30.0);
    // One window (no relaunch loop), named after the project directory.
    assert_eq!(windows(&t, &p, "t1"), [dir_name(&p)]);
    let (sup, view) = (&v[0], &v[1]);
    assert!(
        sup.2.contains("--once --local --tmux-layout split"),
        "{}",
        sup.2
    );
    assert!(
        !sup.2.contains("--label"),
        "the run names itself: {}",
        sup.2
    );
    assert!(sup.2.contains("-- --model m1"), "{}", sup.2);
    assert!(view.2.contains("live-view --run-dir"), "{}", view.2);

    // The agent got the native arguments once, untouched by tmux's `;` parsing.
    let argv = recorded_argv(&rec);
    assert!(argv.windows(2).any(|w| w == ["--model", "m1"]), "{argv:?}");
    assert!(argv.contains(&"semi;".to_string()), "{argv:?}");
    assert_eq!(p.calls(), 1);

    assert_eq!(window_option(&t, &p, &sup.0, "@codex_state"), "READY");
    // Every stop is written to the window, max loops too (issue 14.6; the reference left it
    // empty).
    assert_eq!(
        window_option(&t, &p, &sup.0, "@codex_stop_reason"),
        "max loops reached: 1"
    );
    assert_eq!(
        window_option(&t, &p, &sup.0, "@looper_run_dir"),
        p.last_run().display().to_string()
    );
    assert_eq!(p.state()["stop_reason"], "max loops reached: 1");
    assert_eq!(p.state()["label"], format!("{}-fake", dir_name(&p)));

    // The transcript went to the live view, not the supervisor pane.
    let shown = capture(&t, &p, &view.0);
    assert!(shown.contains("hello from the fake agent"), "{shown}");
    assert!(shown.contains("stop: max loops reached: 1"), "{shown}");
    let sup_text = capture(&t, &p, &sup.0);
    assert!(sup_text.contains("live view in tmux pane"), "{sup_text}");
    assert!(
        !sup_text.contains("hello from the fake agent"),
        "{sup_text}"
    );
}

#[test]
fn a_breaker_stop_is_written_to_the_window() {
    let Some(t) = TmuxServer::new() else { return };
    let p = Project::new();
    codex_fake(&p, "fake", "=== default\ncodex-reply same old output\n", "");
    let out = t.looper(
        &p,
        &looper_bin(),
        &[
            "--max-loops",
            "5",
            "--cb-output-match",
            "same old",
            "--farm-session",
            "t2",
            "--tmux-layout",
            "single",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let v = wait_all_dead(&t, &p, "t2", 1, 30.0);
    assert!(v[0].2.contains("--tmux-layout single"), "{}", v[0].2);
    let reason = p.state()["stop_reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(reason, "output matched configured pattern for 1 loop(s)");
    assert_eq!(window_option(&t, &p, &v[0].0, "@codex_stop_reason"), reason);
    assert_eq!(window_option(&t, &p, &v[0].0, "@codex_state"), "READY");
    // Single layout: the transcript is in the supervisor pane.
    assert!(capture(&t, &p, &v[0].0).contains("same old output"));
}

#[test]
fn codex_looper_in_the_farm_passes_its_agent_and_keeps_the_pane() {
    let Some(t) = TmuxServer::new() else { return };
    let p = Project::new();
    codex_fake(&p, "codex", "=== default\ncodex-reply hi\n", "");
    let mut c = Command::new(codex_looper_bin());
    t.env(&mut c, &p);
    let out = c
        .current_dir(p.path())
        .env("LOOPER_NAME", "named-win")
        .args(["--once", "--farm-session", "t3", "--label", "sweep"])
        .stdin(Stdio::null())
        .output()
        .expect("run codex-looper");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).starts_with("started sweep in tmux session t3, window named-win"),
        "{}",
        stdout(&out)
    );
    let v = wait_all_dead(&t, &p, "t3", 2, 30.0);
    assert_eq!(windows(&t, &p, "t3"), ["named-win"]);
    assert!(
        v[0].2
            .contains("--label sweep --local --tmux-layout split --agent codex"),
        "{}",
        v[0].2
    );
    assert!(!v[0].2.contains("--farm-session"), "{}", v[0].2);
    assert_eq!(p.state()["agent_name"], "codex");
    assert_eq!(p.state()["label"], "sweep");
}

#[test]
fn remain_on_exit_can_be_turned_off() {
    let Some(t) = TmuxServer::new() else { return };
    let p = Project::new();
    codex_fake(&p, "fake", "=== default\ncodex-reply hi\n", "");
    // A second window keeps the session alive after the farm window closes.
    t.tmux(&p, &["new-session", "-d", "-s", "t4", "-n", "keep", "cat"])
        .expect("session");
    let mut c = Command::new(looper_bin());
    t.env(&mut c, &p);
    let out = c
        .current_dir(p.path())
        .env("CODEX_REMAIN_ON_EXIT", "off")
        .args(["--once", "--farm-session", "t4", "--tmux-layout", "single"])
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
    assert!(wait_until(30.0, || status(&p) == "stopped"));
    assert!(
        wait_until(10.0, || windows(&t, &p, "t4") == ["keep"]),
        "{:?}",
        windows(&t, &p, "t4")
    );
}

#[test]
fn the_live_view_shows_the_transcript_and_its_l_key_stops_after_the_loop() {
    let Some(t) = TmuxServer::new() else { return };
    let p = Project::new();
    codex_fake(
        &p,
        "fake",
        "=== default\ncodex-reply working on it\nsleep 1\n",
        "",
    );
    // An existing, roomy session: the farm adds its window there.
    t.tmux(
        &p,
        &[
            "new-session",
            "-d",
            "-s",
            "t5",
            "-x",
            "200",
            "-y",
            "50",
            "-n",
            "home",
            "cat",
        ],
    )
    .expect("session");
    let out = t.looper(
        &p,
        &looper_bin(),
        &["--max-loops", "20", "--farm-session", "t5"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        wait_until(20.0, || panes(&t, &p, "t5").len() == 3),
        "{:?}",
        panes(&t, &p, "t5")
    );
    let v = panes(&t, &p, "t5");
    let view = v
        .iter()
        .find(|x| x.2.contains("live-view"))
        .expect("live view pane")
        .0
        .clone();
    assert!(
        wait_until(20.0, || capture(&t, &p, &view).contains("working on it")),
        "{}",
        capture(&t, &p, &view)
    );
    let shown = capture(&t, &p, &view);
    assert!(shown.contains("status: running"), "{shown}");
    assert!(shown.contains("keys: p stop after prompt"), "{shown}");

    // A note: `n`, the text, Enter; then `l`.
    t.tmux(&p, &["send-keys", "-t", &view, "n"])
        .expect("send-keys");
    t.tmux(&p, &["send-keys", "-t", &view, "-l", "mind the docs"])
        .expect("send-keys");
    assert!(
        wait_until(5.0, || capture(&t, &p, &view).contains("> mind the docs_")),
        "{}",
        capture(&t, &p, &view)
    );
    t.tmux(&p, &["send-keys", "-t", &view, "Enter"])
        .expect("send-keys");
    assert!(wait_until(5.0, || capture(&t, &p, &view)
        .contains("note queued for the next prompt")));
    t.tmux(&p, &["send-keys", "-t", &view, "l"])
        .expect("send-keys");
    assert!(
        wait_until(30.0, || status(&p) == "stopped"),
        "{}",
        capture(&t, &p, &view)
    );
    let st = p.state();
    assert_eq!(
        st["stop_reason"],
        "control stop_after_loop: live view: stop after loop"
    );
    assert!(p.calls() < 20, "stopped early: {} calls", p.calls());
    let control =
        std::fs::read_to_string(p.last_run().join("control.jsonl")).expect("control file");
    let lines: Vec<Json> = control
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 2, "{control}");
    assert_eq!(
        (&lines[0]["action"], &lines[0]["note"]),
        (&Json::from("note"), &Json::from("mind the docs"))
    );
    assert_eq!(lines[1]["action"], "stop_after_loop");
    assert_eq!(lines[1]["reason"], "live view: stop after loop");
    let sup = v
        .iter()
        .find(|x| x.2.contains("--local"))
        .expect("supervisor pane")
        .0
        .clone();
    assert!(wait_until(10.0, || window_option(
        &t,
        &p,
        &sup,
        "@codex_state"
    ) == "READY"));
    assert_eq!(
        window_option(&t, &p, &sup, "@codex_stop_reason"),
        "control stop_after_loop: live view: stop after loop"
    );
    // The view exits with the supervisor and its last frame stays readable.
    assert!(wait_until(10.0, || panes(&t, &p, "t5")
        .iter()
        .filter(|x| x.1)
        .count()
        == 2));
    assert!(
        capture(&t, &p, &view).contains("the supervisor exited"),
        "{}",
        capture(&t, &p, &view)
    );
}

#[test]
fn without_tmux_the_run_stays_in_this_terminal() {
    let p = Project::new();
    codex_fake(&p, "fake", "=== default\ncodex-reply local output\n", "");
    let empty = tempfile::tempdir().expect("tempdir");
    let out = p
        .looper()
        .env("PATH", empty.path())
        .env_remove("LOOPER_LAYOUT")
        .env_remove("CODEX_LOOPER_LAYOUT")
        .args(["--once", "--farm-session", "t6"])
        .output()
        .expect("run looper");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("tmux is not installed, so this run stays in this terminal"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).contains("local output"), "{}", stdout(&out));
    assert_eq!(p.state()["stop_reason"], "max loops reached: 1");
}

#[test]
fn farm_add_bin_delegates_to_a_codex_add_compatible_launcher() {
    let p = Project::new();
    codex_fake(&p, "fake", "=== default\ncodex-reply hi\n", "");
    let log = p.join("launcher.log");
    p.write(
        "bin/fake-add",
        &format!(
            "#!/bin/sh\n{{ echo \"args=$*\"; echo \"CODEX_NAME=$CODEX_NAME\"; echo \"CODEX_CMD=$CODEX_CMD\"; echo \"CODEX_ARGS=$CODEX_ARGS\"; echo \"CODEX_LOOPER_LAYOUT=$CODEX_LOOPER_LAYOUT\"; }} > {}\nexit 7\n",
            log.display()
        ),
    );
    let mut perms = std::fs::metadata(p.join("bin/fake-add"))
        .expect("meta")
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(p.join("bin/fake-add"), perms).expect("chmod");

    let out = p
        .looper()
        .args([
            "--farm-add-bin",
            "bin/fake-add",
            "--farm-session",
            "work",
            "--label",
            "sweep",
            "--once",
            "--",
            "--model",
            "a b",
        ])
        .output()
        .expect("run looper");
    assert_eq!(
        out.status.code(),
        Some(7),
        "the launcher's status: {}",
        stderr(&out)
    );
    let text = std::fs::read_to_string(&log).expect("launcher ran");
    assert!(
        text.contains(&format!("args=-d work {}\n", p.path().display())),
        "{text}"
    );
    assert!(
        text.contains(&format!("CODEX_NAME={}\n", dir_name(&p))),
        "{text}"
    );
    assert!(
        text.contains(&format!("CODEX_CMD={}\n", looper_bin().display())),
        "{text}"
    );
    assert!(
        text.contains(
            "CODEX_ARGS=--label sweep --once --local --tmux-layout split -- --model 'a b'\n"
        ),
        "{text}"
    );
    assert!(text.contains("CODEX_LOOPER_LAYOUT=split\n"), "{text}");
    assert!(p.run_dirs().is_empty(), "nothing ran here");

    let out = p
        .looper()
        .args(["--farm-add-bin", "no-such-launcher", "--once"])
        .output()
        .expect("run looper");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("farm launcher not found: no-such-launcher"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_retry_wait_shows_in_the_window_and_clears_after() {
    let Some(t) = TmuxServer::new() else { return };
    let p = Project::new();
    codex_fake(
        &p,
        "fake",
        "=== call 1\ncodex-error Service temporarily unavailable\nexit 1\n=== default\ncodex-reply recovered\n",
        "retry_backoff_base_seconds = 3\nretry_backoff_max_seconds = 3\n",
    );
    let out = t.looper(
        &p,
        &looper_bin(),
        &[
            "--once",
            "--farm-session",
            "t7",
            "--tmux-layout",
            "single",
            "--retry-notify-after",
            "1",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(wait_until(20.0, || panes(&t, &p, "t7").len() == 1));
    let pane = panes(&t, &p, "t7")[0].0.clone();
    let mut seen = String::new();
    assert!(
        wait_until(20.0, || {
            seen = window_option(&t, &p, &pane, "@codex_stop_reason");
            !seen.is_empty()
        }),
        "{}",
        capture(&t, &p, &pane)
    );
    assert!(
        seen.starts_with("retrying transient attempt 1; next in"),
        "{seen}"
    );
    assert_eq!(
        window_option(&t, &p, &pane, "@codex_state"),
        "RUN",
        "while waiting: {seen}"
    );
    let v = wait_all_dead(&t, &p, "t7", 1, 30.0);
    assert_eq!(window_option(&t, &p, &v[0].0, "@codex_state"), "READY");
    assert_eq!(
        window_option(&t, &p, &v[0].0, "@codex_stop_reason"),
        "max loops reached: 1",
        "the retry status cleared after the successful prompt, then the stop written"
    );
    assert_eq!(p.calls(), 2);
}

#[test]
fn when_the_split_fails_the_transcript_stays_in_the_supervisor_pane() {
    let Some(t) = TmuxServer::new() else { return };
    let p = Project::new();
    codex_fake(
        &p,
        "fake",
        "=== default\ncodex-reply shown in the supervisor pane\n",
        "",
    );
    // A window too small to split.
    t.tmux(
        &p,
        &[
            "new-session",
            "-d",
            "-s",
            "t8",
            "-x",
            "30",
            "-y",
            "2",
            "-n",
            "home",
            "cat",
        ],
    )
    .expect("session");
    let out = t.looper(&p, &looper_bin(), &["--once", "--farm-session", "t8"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(wait_until(30.0, || status(&p) == "stopped"));
    let v = panes(&t, &p, "t8");
    assert_eq!(v.len(), 2, "home and the supervisor, no live view: {v:?}");
    let sup = &v[1].0;
    let history = t
        .tmux(&p, &["capture-pane", "-p", "-J", "-S", "-200", "-t", sup])
        .unwrap_or_default();
    assert!(
        history.contains("cannot open the live-view pane"),
        "{history}"
    );
    assert!(
        history.contains("shown in the supervisor pane"),
        "{history}"
    );
}

/// The sessions that clients of this server are attached to.
fn client_sessions(t: &TmuxServer, p: &Project) -> Vec<String> {
    t.tmux(p, &["list-clients", "-F", "#{client_session}"])
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `command` run under `script`, which gives it a terminal, as a user's shell would.
fn in_a_terminal(t: &TmuxServer, p: &Project, command: &str) -> std::process::Child {
    let mut c = Command::new("script");
    t.env(&mut c, p);
    c.current_dir(p.path())
        .env("TERM", "xterm-256color")
        .args(["-qec", command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c.spawn().expect("run script")
}

fn quoted(path: &Path) -> String {
    shlex::try_quote(&path.display().to_string())
        .map(|q| q.into_owned())
        .unwrap_or_default()
}

#[test]
fn farm_attach_attaches_from_a_terminal_and_switches_from_inside_tmux() {
    let Some(t) = TmuxServer::new() else { return };
    let p = Project::new();
    codex_fake(&p, "fake", "=== default\ncodex-reply attached\n", "");

    // From a terminal outside tmux: the looper starts the window, then attaches to it.
    let mut child = in_a_terminal(
        &t,
        &p,
        &format!(
            "{} --once --farm-session farm1 --farm-attach",
            quoted(&looper_bin())
        ),
    );
    let attached = wait_until(30.0, || client_sessions(&t, &p) == ["farm1"]);
    let clients = client_sessions(&t, &p);
    let _ = t.tmux(&p, &["detach-client", "-s", "farm1"]);
    let exit = wait_until(10.0, || child.try_wait().is_ok_and(|s| s.is_some()));
    if !exit {
        let _ = child.kill();
    }
    assert!(attached, "no client attached to farm1: {clients:?}");
    assert!(exit, "the attached looper did not return after the detach");
    assert_eq!(windows(&t, &p, "farm1"), [dir_name(&p)]);

    // From inside tmux (a client on another session): the client is switched, not nested.
    let mut outer = in_a_terminal(&t, &p, "tmux new-session -s outer");
    assert!(
        wait_until(30.0, || client_sessions(&t, &p) == ["outer"]),
        "{:?}",
        client_sessions(&t, &p)
    );
    let launch = format!(
        "{} --once --farm-session farm2 --farm-attach",
        quoted(&looper_bin())
    );
    t.tmux(&p, &["send-keys", "-t", "=outer:", "-l", &launch])
        .expect("type the command");
    t.tmux(&p, &["send-keys", "-t", "=outer:", "Enter"])
        .expect("enter");
    let switched = wait_until(30.0, || client_sessions(&t, &p) == ["farm2"]);
    let clients = client_sessions(&t, &p);
    let _ = t.tmux(&p, &["kill-session", "-t", "=outer"]);
    let _ = t.tmux(&p, &["detach-client", "-a"]);
    let _ = outer.kill();
    let _ = outer.wait();
    assert!(
        switched,
        "the client was not switched to farm2: {clients:?}"
    );
    assert_eq!(windows(&t, &p, "farm2"), [dir_name(&p)]);
}

#[test]
fn a_killed_tmux_server_ends_the_run_once_on_record() {
    // The terminal goes away mid-attempt (an SSH drop, a killed tmux server): SIGHUP stops
    // the run, and writing to the dead terminal afterwards must not add a second end.
    let Some(t) = TmuxServer::new() else { return };
    let p = Project::new();
    codex_fake(&p, "fake", "=== default\nsleep 5\ncodex-reply late\n", "");
    t.tmux(
        &p,
        &[
            "new-session",
            "-d",
            "-s",
            "hup",
            "-c",
            &p.path().display().to_string(),
            &format!(
                "{} --local --once --tmux-layout split",
                quoted(&looper_bin())
            ),
        ],
    )
    .expect("new-session");
    assert!(
        wait_until(20.0, || p.run_dirs().last().is_some_and(|_| p
            .event_names()
            .iter()
            .any(|e| e == "prompt_started"))),
        "the run never started its attempt"
    );
    let pid = p.state()["pid"].as_i64().unwrap_or(0) as i32;
    assert!(pid > 0);
    t.tmux(&p, &["kill-server"]).expect("kill-server");
    assert!(
        wait_until(15.0, || !std::path::Path::new(&format!("/proc/{pid}"))
            .exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z "))),
        "the looper is still running after its terminal went away"
    );
    let stops: Vec<Json> = p
        .events()
        .into_iter()
        .filter(|e| e["event"] == "run_stopped")
        .collect();
    assert_eq!(stops.len(), 1, "{stops:?}");
    assert_eq!(
        stops[0]["stop_reason"], "interrupted by SIGHUP",
        "{stops:?}"
    );
    assert!(
        !p.event_names().iter().any(|e| e == "supervisor_panic"),
        "{:?}",
        p.events()
    );
    let st = p.state();
    assert_eq!(st["status"], "interrupted", "{st}");
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(path),
                Ok(_) => out.push(path),
                Err(_) => {}
            }
        }
    }
    out
}

/// The argv of every process on the machine that holds `needle`, as `pid: argv`.
fn argv_holding(needle: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let argv = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let text = String::from_utf8_lossy(&argv).replace('\0', " ");
            text.contains(needle).then(|| format!("{pid}: {text}"))
        })
        .collect()
}

/// A launch of `looper <args>` in `p` with extra variables, as the user's shell would.
fn launch_with(t: &TmuxServer, p: &Project, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new(looper_bin());
    t.env(&mut c, p);
    c.current_dir(p.path()).args(args).stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run looper")
}

#[test]
fn a_farm_window_runs_with_the_launching_shells_environment_and_the_value_leaks_nowhere() {
    // Issue 14.4: with a tmux server already running, a window used to get the server's
    // environment, so a key exported in the launching shell never reached the agent.
    let Some(t) = TmuxServer::new() else { return };
    let p = Project::new();
    const SECRET: &str = "sk-test-only-here-3f9a";
    let rec = p.join("agent-env.jsonl");
    let gate = p.join("gate");
    codex_fake(
        &p,
        "fake",
        &format!(
            "=== default\nrecord {}\nwait-for {}\ncodex-reply done\n",
            rec.display(),
            gate.display()
        ),
        "",
    );
    // The server exists before the variable does (the shell exported it later).
    t.tmux(&p, &["new-session", "-d", "-s", "home", "cat"])
        .expect("server");
    let out = launch_with(
        &t,
        &p,
        &[("OPENAI_API_KEY", SECRET)],
        &["--once", "--farm-session", "t9", "--tmux-layout", "single"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        wait_until(20.0, || std::fs::read_to_string(&rec)
            .is_ok_and(|t| t.ends_with('\n'))),
        "the agent never ran"
    );
    let seen: Json =
        serde_json::from_str(std::fs::read_to_string(&rec).expect("record").trim()).expect("json");
    assert_eq!(seen["env"]["OPENAI_API_KEY"], SECRET, "{seen}");
    // The window's own terminal variables win over the launching shell's.
    assert!(
        seen["env"]["TMUX_PANE"]
            .as_str()
            .is_some_and(|p| p.starts_with('%')),
        "{seen}"
    );

    // While the run goes on: in no process's argv (tmux server, clients, looper, agent)...
    assert_eq!(argv_holding(SECRET), Vec::<String>::new());
    // ... nor in tmux's environments, options or pane commands.
    let pane = panes(&t, &p, "t9")[0].0.clone();
    for args in [
        &["show-environment", "-g"][..],
        &["show-environment", "-t", "=t9"],
        &["show-options", "-g"],
        &["show-options", "-s"],
        &["show-options", "-w", "-g"],
        &["show-options", "-t", "=t9"],
        &["show-options", "-w", "-t", &pane],
        &["show-options", "-p", "-t", &pane],
        &["list-panes", "-a", "-F", "#{pane_start_command}"],
    ] {
        let shown = t.tmux(&p, args).unwrap_or_default();
        assert!(!shown.contains(SECRET), "tmux {args:?}: {shown}");
    }
    // The hand-over file was read and removed at once.
    assert_eq!(files_under(&t.farm_dir()), Vec::<PathBuf>::new());

    std::fs::write(&gate, "").expect("open the gate");
    wait_all_dead(&t, &p, "t9", 1, 30.0);
    assert_eq!(p.state()["stop_reason"], "max loops reached: 1");
    for f in files_under(&p.last_run()) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(SECRET),
            "{} holds the value",
            f.display()
        );
    }
    assert_eq!(files_under(&t.farm_dir()), Vec::<PathBuf>::new());
}

#[test]
fn a_farm_launch_that_cannot_start_reports_the_childs_error_and_exit_code() {
    // Issue 14.5: a launch refused by the run lock printed `started ...` and exited 0.
    let Some(t) = TmuxServer::new() else { return };
    let p = Project::new();
    let gate = p.join("gate");
    codex_fake(
        &p,
        "fake",
        &format!(
            "=== default\nwait-for {}\ncodex-reply done\n",
            gate.display()
        ),
        "",
    );
    let args = ["--once", "--farm-session", "t10", "--tmux-layout", "single"];
    let first = launch_with(&t, &p, &[], &args);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert!(stdout(&first).starts_with("started "), "{}", stdout(&first));
    assert_eq!(p.run_dirs().len(), 1);

    let second = launch_with(&t, &p, &[], &args);
    let (out, err) = (stdout(&second), stderr(&second));
    assert_eq!(second.status.code(), Some(2), "{out}{err}");
    assert!(!out.contains("started"), "{out}");
    assert!(
        err.contains("another looper is already running in this worktree"),
        "{err}"
    );
    assert_eq!(p.run_dirs().len(), 1, "no second run");
    // The failed window is closed: its error was shown here.
    assert_eq!(windows(&t, &p, "t10"), [dir_name(&p)]);

    // A configuration error found by the window's looper is reported the same way.
    let q = Project::new();
    codex_fake(&q, "fake", "=== default\ncodex-reply hi\n", "max_loop = 3");
    let bad = launch_with(&t, &q, &[], &args);
    let err = stderr(&bad);
    assert_eq!(bad.status.code(), Some(2), "{}{err}", stdout(&bad));
    assert!(err.contains("unknown key `looper.max_loop`"), "{err}");
    assert!(!stdout(&bad).contains("started"), "{}", stdout(&bad));
    assert_eq!(windows(&t, &q, "t10"), [dir_name(&p)]);

    std::fs::write(&gate, "").expect("open the gate");
    wait_all_dead(&t, &p, "t10", 1, 30.0);
    assert_eq!(p.state()["stop_reason"], "max loops reached: 1");
    assert_eq!(files_under(&t.farm_dir()), Vec::<PathBuf>::new());
}

#[test]
fn inside_tmux_the_farm_is_sized_like_this_client_and_says_switch_client() {
    // Issue 14.6: from inside tmux the farm session got another size (80x24, or here the
    // most recent client's) and the launcher printed `tmux attach`, which nests.
    let Some(t) = TmuxServer::new() else { return };
    let p = Project::new();
    let gate = p.join("gate");
    codex_fake(
        &p,
        "fake",
        &format!(
            "=== default\nwait-for {}\ncodex-reply sized\n",
            gate.display()
        ),
        "",
    );
    let mut outer = in_a_terminal(&t, &p, "stty cols 132 rows 41; tmux new-session -s outer");
    assert!(
        wait_until(30.0, || client_sessions(&t, &p) == ["outer"]),
        "{:?}",
        client_sessions(&t, &p)
    );
    // A second, smaller client attaches later: tmux's default would size a new session
    // like this most recent client, not like the one the launch is typed in.
    let mut other = in_a_terminal(&t, &p, "stty cols 100 rows 30; tmux new-session -s other");
    assert!(
        wait_until(30.0, || client_sessions(&t, &p).len() == 2),
        "{:?}",
        client_sessions(&t, &p)
    );
    let said = p.join("launch.out");
    let launch = format!(
        "{} --once --farm-session farm3 --tmux-layout single > {} 2>&1; echo \"exit=$?\" >> {}",
        quoted(&looper_bin()),
        quoted(&said),
        quoted(&said)
    );
    t.tmux(&p, &["send-keys", "-t", "=outer:", "-l", &launch])
        .expect("type the command");
    t.tmux(&p, &["send-keys", "-t", "=outer:", "Enter"])
        .expect("enter");
    let done = wait_until(30.0, || {
        std::fs::read_to_string(&said).is_ok_and(|s| s.contains("exit="))
    });
    let text = std::fs::read_to_string(&said).unwrap_or_default();
    let size = |session: &str| {
        t.tmux(
            &p,
            &[
                "list-windows",
                "-t",
                &format!("={session}"),
                "-F",
                "#{window_width}x#{window_height}",
            ],
        )
        .unwrap_or_default()
        .trim()
        .to_string()
    };
    let (farm, mine) = (size("farm3"), size("outer"));
    let _ = std::fs::write(&gate, "");
    let _ = t.tmux(&p, &["kill-session", "-t", "=outer"]);
    let _ = t.tmux(&p, &["kill-session", "-t", "=other"]);
    let _ = outer.kill();
    let _ = outer.wait();
    let _ = other.kill();
    let _ = other.wait();
    assert!(done, "the launch never returned: {text}");
    assert!(text.contains("exit=0"), "{text}");
    assert!(
        text.contains("(switch: tmux switch-client -t farm3)"),
        "{text}"
    );
    assert!(!text.contains("tmux attach"), "{text}");
    assert_eq!(mine, "132x40");
    assert_eq!(farm, mine, "the farm window is sized like this client's");
}

#[test]
fn windows_of_one_directory_are_told_apart_by_label_and_finished_ones_can_be_closed() {
    // Issue 14.6: finished windows piled up under one name, with no way to close them.
    let Some(t) = TmuxServer::new() else { return };
    let p = Project::new();
    codex_fake(&p, "fake", "=== default\ncodex-reply hi\n", "");
    let dir = dir_name(&p);
    // A window that is not the farm's, in the farm session.
    t.tmux(&p, &["new-session", "-d", "-s", "t11", "-n", "keep", "cat"])
        .expect("session");
    // The farm's panes (not the `keep` window's) all dead, `n` of them.
    let farm_dead = |n: usize| {
        let ok = wait_until(30.0, || {
            let v: Vec<_> = panes(&t, &p, "t11")
                .into_iter()
                .filter(|x| x.2.contains("--local"))
                .collect();
            v.len() == n && v.iter().all(|x| x.1)
        });
        assert!(ok, "{:?}", panes(&t, &p, "t11"));
    };
    let single = ["--once", "--farm-session", "t11", "--tmux-layout", "single"];
    let out = launch_with(&t, &p, &[], &single);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    farm_dead(1);
    // A label that tmux would expand as a format, were it not made literal (D35).
    let mut labelled = single.to_vec();
    labelled.extend(["--label", "second#{session_name}"]);
    let out = launch_with(&t, &p, &[], &labelled);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("window {dir}-second#{{session_name}} ")),
        "{}",
        stdout(&out)
    );
    farm_dead(2);
    // The default label already starts with the directory's name: it is the window's name.
    let out = launch_with(&t, &p, &[], &single);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with(&format!(
            "started {dir}-fake in tmux session t11, window {dir}-fake "
        )),
        "{}",
        stdout(&out)
    );
    farm_dead(3);
    assert_eq!(
        windows(&t, &p, "t11"),
        [
            "keep".to_string(),
            dir.clone(),
            format!("{dir}-second#{{session_name}}"),
            format!("{dir}-fake")
        ]
    );

    // A farm run still going, in another session: its window stays.
    let q = Project::new();
    let gate = q.join("gate");
    codex_fake(
        &q,
        "fake",
        &format!(
            "=== default\nwait-for {}\ncodex-reply late\n",
            gate.display()
        ),
        "",
    );
    let out = launch_with(&t, &q, &[], &["--once", "--farm-session", "t12"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let out = t.looper(&p, &looper_bin(), &["status", "--close-finished"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    for name in [
        dir.clone(),
        format!("{dir}-second#{{session_name}}"),
        format!("{dir}-fake"),
    ] {
        assert!(
            text.contains(&format!("closed tmux window t11:{name} ")),
            "{name}: {text}"
        );
    }
    assert_eq!(windows(&t, &p, "t11"), ["keep"]);
    assert_eq!(windows(&t, &q, "t12"), [dir_name(&q)]);
    let out = t.looper(&p, &looper_bin(), &["status", "--close-finished"]);
    assert!(
        stdout(&out).contains("no finished farm windows to close"),
        "{}",
        stdout(&out)
    );
    std::fs::write(&gate, "").expect("open the gate");
    wait_all_dead(&t, &q, "t12", 2, 30.0);
}

#[test]
fn every_stop_writes_its_reason_to_the_window() {
    // Issue 14.6: `@codex_stop_reason` was left empty for some stops; max loops is checked
    // by the first test of this module, a breaker and an operator stop above.
    let Some(t) = TmuxServer::new() else { return };
    let failing = Project::new();
    codex_fake(&failing, "fake", "=== default\nexit 1\n", "");
    let out = launch_with(
        &t,
        &failing,
        &[],
        &["--once", "--farm-session", "t13", "--tmux-layout", "single"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v = wait_all_dead(&t, &failing, "t13", 1, 30.0);
    let reason = failing.state()["stop_reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(reason, "command exited with code 1");
    assert_eq!(
        window_option(&t, &failing, &v[0].0, "@codex_stop_reason"),
        reason
    );
    assert_eq!(window_option(&t, &failing, &v[0].0, "@codex_state"), "ERR");

    let signalled = Project::new();
    codex_fake(&signalled, "fake", "=== default\nsleep 30\n", "");
    let out = launch_with(
        &t,
        &signalled,
        &[],
        &["--once", "--farm-session", "t14", "--tmux-layout", "single"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(wait_until(20.0, || signalled
        .event_names()
        .iter()
        .any(|e| e == "prompt_started")));
    let pid = signalled.state()["pid"].as_i64().unwrap_or(0) as i32;
    assert!(pid > 0);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    let v = wait_all_dead(&t, &signalled, "t14", 1, 30.0);
    assert_eq!(signalled.state()["stop_reason"], "interrupted by SIGTERM");
    assert_eq!(
        window_option(&t, &signalled, &v[0].0, "@codex_stop_reason"),
        "interrupted by SIGTERM"
    );
}

/// A fake-agent run labelled `label`, started in a new session `session` (window `window`)
/// of this server, its agent waiting for the file `release` so the supervisor stays alive in
/// that pane. Returns the run directory once the run has recorded its pane.
fn run_in_session(
    t: &TmuxServer,
    p: &Project,
    session: &str,
    window: &str,
    label: &str,
    release: &Path,
) -> PathBuf {
    codex_fake(
        p,
        "fake",
        &format!(
            "=== default\nwait-for {}\ncodex-reply done\n",
            release.display()
        ),
        "",
    );
    t.tmux(
        p,
        &[
            "new-session",
            "-d",
            "-s",
            session,
            "-n",
            window,
            "-c",
            &p.path().display().to_string(),
            &format!("{} --local --once --label {label}", quoted(&looper_bin())),
        ],
    )
    .expect("new-session");
    assert!(
        wait_until(30.0, || p.run_dirs().last().is_some_and(|d| {
            std::fs::read(d.join("state.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<Json>(&b).ok())
                .is_some_and(|s| s["status"] == "running" && s["tmux_pane"].is_string())
        })),
        "the run in session {session} never started: {}",
        capture(t, p, &format!("={session}:"))
    );
    p.last_run()
}

/// The pane id of a session's first pane.
fn pane_of(t: &TmuxServer, p: &Project, session: &str) -> String {
    t.tmux(
        p,
        &[
            "display-message",
            "-p",
            "-t",
            &format!("={session}:"),
            "#{pane_id}",
        ],
    )
    .expect("display-message")
    .trim()
    .to_string()
}

#[test]
fn status_shows_the_tmux_window_of_each_live_run_asking_each_server_once() {
    let Some(t) = TmuxServer::new() else { return };
    let p = Project::new();
    let q = Project::new();
    let release = p.join("release");
    let run_p = run_in_session(&t, &p, "B", "work", "w1", &release);
    let run_q = run_in_session(&t, &q, "C", "other", "w2", &release);
    let st = read_json(&run_p.join("state.json"));
    assert_eq!(st["tmux_pane"], pane_of(&t, &p, "B"), "{st}");
    let socket = st["tmux_socket"].as_str().expect("socket").to_string();
    assert!(
        socket.starts_with(&t.tmpdir.path().display().to_string()),
        "{socket}"
    );
    // A finished run that was in tmux once: its server is not asked.
    let old = p.runs_dir().join("20260101T000000.000000Z__old__000000");
    std::fs::create_dir_all(&old).expect("mkdir");
    std::fs::write(
        old.join("state.json"),
        serde_json::json!({
            "schema_version": 1, "label": "old", "status": "stopped", "exit_code": 0,
            "updated_at": "2026-01-01T00:00:00Z", "tmux_socket": "/nonexistent/tmux.sock",
            "tmux_pane": "%0",
        })
        .to_string(),
    )
    .expect("write");

    // Every tmux call status makes goes through a recorder on PATH.
    let bin = tempfile::tempdir().expect("bin");
    let log = bin.path().join("calls.log");
    let real = which::which("tmux").expect("tmux");
    let shim = bin.path().join("tmux");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\necho \"$*\" >> {}\nexec {} \"$@\"\n",
            quoted(&log),
            quoted(&real)
        ),
    )
    .expect("shim");
    std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let status = |args: &[&str]| {
        let mut c = Command::new(looper_bin());
        t.env(&mut c, &p);
        c.current_dir(p.path())
            .env("PATH", &path)
            .arg("status")
            .args(["--state-root", &p.runs_dir().display().to_string()])
            .args(["--state-root", &q.runs_dir().display().to_string()])
            .args(args);
        c.output().expect("status")
    };

    let out = status(&["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc: Json = serde_json::from_slice(&out.stdout).expect("json");
    let run = |label: &str| {
        doc["runs"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["label"] == label))
            .cloned()
            .unwrap_or_else(|| panic!("{label}: {doc}"))
    };
    assert_eq!(
        run("w1")["tmux_window"],
        serde_json::json!({"target": "B:0", "session": "B", "index": 0, "name": "work"})
    );
    assert_eq!(run("w1")["tmux_pane"], pane_of(&t, &p, "B"));
    assert_eq!(run("w1")["tmux_socket"], socket.as_str());
    assert_eq!(run("w2")["tmux_window"]["target"], "C:0");
    assert_eq!(run("w2")["tmux_window"]["name"], "other");
    assert_eq!(run("old")["tmux_window"], Json::Null);
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        calls.lines().collect::<Vec<_>>(),
        [format!(
            "-S {socket} list-panes -a -F #{{pane_id}}\t#{{window_index}}\t#{{session_name}}\t#{{window_name}}"
        )],
        "one list-panes for the one server of the live runs"
    );

    let out = status(&[]);
    let text = stdout(&out);
    let header = text.lines().next().unwrap_or_default();
    let col = header.find("WINDOW").unwrap_or_else(|| panic!("{text}"));
    let row = |label: &str| {
        text.lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("{label}: {text}"))
            .to_string()
    };
    assert_eq!(&row("w1")[col..col + 10], "B:0 work  ", "{text}");
    assert_eq!(&row("w2")[col..col + 11], "C:0 other  ", "{text}");
    assert_eq!(&row("old")[col..col + 2], "- ", "{text}");
    std::fs::write(&release, "").expect("release");
    let _ = run_q;
}

#[test]
fn enter_in_the_watch_switches_the_attached_client_to_the_selected_run() {
    if Command::new("script").arg("--version").output().is_err() {
        return;
    }
    let Some(t) = TmuxServer::new() else { return };
    let p = Project::new();
    let release = p.join("release");
    let run = run_in_session(&t, &p, "B", "work", "w1", &release);
    let pane = read_json(&run.join("state.json"))["tmux_pane"]
        .as_str()
        .expect("pane")
        .to_string();
    // A stale run sorts first, so Down is needed to reach the live one.
    let dead = p.runs_dir().join("20260101T000000.000000Z__dead__000000");
    std::fs::create_dir_all(&dead).expect("mkdir");
    let gone = {
        let mut c = Command::new("true").spawn().expect("spawn");
        let pid = c.id();
        c.wait().expect("reap");
        pid
    };
    std::fs::write(
        dead.join("state.json"),
        serde_json::json!({
            "schema_version": 1, "label": "dead", "status": "running", "pid": gone,
            "updated_at": "2026-01-01T00:00:00Z",
        })
        .to_string(),
    )
    .expect("write");

    // Session A's pane runs the watch; a client is attached to A through a terminal.
    t.tmux(
        &p,
        &[
            "new-session",
            "-d",
            "-s",
            "A",
            "-x",
            "160",
            "-y",
            "40",
            "-c",
            &p.path().display().to_string(),
            &format!("{} status --watch", quoted(&looper_bin())),
        ],
    )
    .expect("new-session A");
    let mut client = in_a_terminal(&t, &p, "tmux attach -t =A");
    let attached = wait_until(30.0, || client_sessions(&t, &p) == ["A"]);
    let drawn = wait_until(20.0, || {
        let s = capture(&t, &p, "=A:");
        s.contains("B:0 work") && s.contains("dead")
    });
    let shown = capture(&t, &p, "=A:");
    let mut switched = false;
    if attached && drawn {
        t.tmux(&p, &["send-keys", "-t", "=A:", "Down"])
            .expect("Down");
        std::thread::sleep(std::time::Duration::from_millis(300));
        t.tmux(&p, &["send-keys", "-t", "=A:", "Enter"])
            .expect("Enter");
        switched = wait_until(20.0, || client_sessions(&t, &p) == ["B"]);
    }
    let clients = client_sessions(&t, &p);
    let active = t
        .tmux(&p, &["display-message", "-p", "-t", "=B:", "#{pane_id}"])
        .unwrap_or_default();
    let _ = t.tmux(&p, &["detach-client", "-a"]);
    let _ = t.tmux(&p, &["detach-client"]);
    let _ = client.kill();
    let _ = client.wait();
    assert!(attached, "no client on A: {clients:?}");
    assert!(drawn, "the watch never showed the runs: {shown}");
    assert!(
        switched,
        "the client was not switched to B: {clients:?}\n{}",
        capture(&t, &p, "=A:")
    );
    assert_eq!(active.trim(), pane, "the run's pane is the active one");

    // Outside tmux, Enter shows how to attach instead (never a nested client).
    let mut c = Command::new("script");
    t.env(&mut c, &p);
    c.current_dir(p.path())
        .args([
            "-qfec",
            &format!("{} status --watch", quoted(&looper_bin())),
            "/dev/null",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut watch = c.spawn().expect("script");
    {
        use std::io::Write;
        let mut stdin = watch.stdin.take().expect("stdin");
        for (k, ms) in [(&b"j"[..], 1500), (b"\r", 400), (b"q", 700)] {
            std::thread::sleep(std::time::Duration::from_millis(ms));
            stdin.write_all(k).expect("key");
            stdin.flush().expect("flush");
        }
    }
    let out = watch.wait_with_output().expect("watch");
    let text = String::from_utf8_lossy(&out.stdout);
    let socket = read_json(&run.join("state.json"))["tmux_socket"]
        .as_str()
        .expect("socket")
        .to_string();
    assert!(
        text.contains(&format!(
            "w1 is outside this tmux; attach with: tmux -S {socket} attach -t {pane}"
        )),
        "{text:?}"
    );
    assert_eq!(
        client_sessions(&t, &p),
        Vec::<String>::new(),
        "nothing attached"
    );
    std::fs::write(&release, "").expect("release");
}

/// Issue 14.9: in the live view, `i` ended the whole run on one keystroke. One `i` only asks
/// (and says what it will do); the run goes on; a second `i` interrupts it.
#[test]
fn the_live_views_i_key_asks_first_and_a_second_i_interrupts() {
    let Some(t) = TmuxServer::new() else { return };
    let p = Project::new();
    codex_fake(&p, "fake", "=== default\nsay working\nsleep 30\n", "");
    t.tmux(
        &p,
        &[
            "new-session",
            "-d",
            "-s",
            "t15",
            "-x",
            "200",
            "-y",
            "50",
            "-n",
            "home",
            "cat",
        ],
    )
    .expect("session");
    let out = t.looper(
        &p,
        &looper_bin(),
        &["--max-loops", "3", "--farm-session", "t15"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        wait_until(20.0, || panes(&t, &p, "t15").len() == 3),
        "{:?}",
        panes(&t, &p, "t15")
    );
    let view = panes(&t, &p, "t15")
        .into_iter()
        .find(|x| x.2.contains("live-view"))
        .expect("live view pane")
        .0;
    assert!(
        wait_until(20.0, || p
            .event_names()
            .iter()
            .any(|e| e == "prompt_started")
            && capture(&t, &p, &view).contains("status: running")),
        "{}",
        capture(&t, &p, &view)
    );
    t.tmux(&p, &["send-keys", "-t", &view, "i"])
        .expect("send-keys");
    assert!(
        wait_until(5.0, || capture(&t, &p, &view)
            .contains("press i again (or y) to interrupt now")),
        "{}",
        capture(&t, &p, &view)
    );
    // One keystroke queued nothing: the run goes on.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(status(&p), "running");
    assert!(
        std::fs::read_to_string(p.last_run().join("control.jsonl"))
            .unwrap_or_default()
            .trim()
            .is_empty(),
        "nothing queued after one i"
    );
    t.tmux(&p, &["send-keys", "-t", &view, "i"])
        .expect("send-keys");
    assert!(
        wait_until(30.0, || status(&p) == "stopped"),
        "{}",
        capture(&t, &p, &view)
    );
    assert_eq!(
        p.state()["stop_reason"],
        "control interrupt_now: live view: interrupt now"
    );
}

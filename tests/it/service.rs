//! `looper service`: the systemd user unit it writes (content, `systemd-analyze verify`),
//! arguments checked at install, uninstall, and the restart path without a running
//! systemd: the unit's own `ExecStart`, run in its `WorkingDirectory` with its
//! `Environment`, killed outright and started again, as `Restart=on-failure` would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::support::*;

fn unit_path(p: &Project, name: &str) -> PathBuf {
    p.join(&format!(".xdg-config/systemd/user/looper-{name}.service"))
}

fn install(p: &Project, args: &[&str]) -> std::process::Output {
    p.looper()
        .args(["service", "install", "--no-start"])
        .args(args)
        .output()
        .expect("service install")
}

/// A value of a unit setting (the first line `KEY=`).
fn setting<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in\n{unit}"))
}

/// `ExecStart=` as the words systemd runs: `%%` and `$$` are single characters there, the
/// rest is double-quoted words with `\` escapes, which shlex reads the same way.
fn exec_start(unit: &str) -> Vec<String> {
    let line = setting(unit, "ExecStart")
        .replace("%%", "%")
        .replace("$$", "$");
    shlex::split(&line).expect("ExecStart words")
}

#[test]
fn the_unit_restarts_on_failure_keeps_tmux_out_and_passes_systemd_analyze() {
    let p = Project::new();
    p.fake_agent("=== default\nsay hi\n", "");
    let out = install(
        &p,
        &["--name", "t1", "--", "--max-loops", "2", "--reason-free"],
    );
    // A run argument that does not exist is refused at install, and nothing is written.
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--reason-free"), "{}", stderr(&out));
    assert!(!unit_path(&p, "t1").exists());
    let out = install(&p, &["--name", "t1", "--", "--max-loop", "2"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    let out = install(
        &p,
        &[
            "--name",
            "t1",
            "--",
            "--max-loops",
            "2",
            "--label",
            "100% $HOME \"x\"",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let unit = std::fs::read_to_string(unit_path(&p, "t1")).expect("unit");
    let dir = p.path().canonicalize().expect("canonical");
    assert_eq!(
        setting(&unit, "WorkingDirectory"),
        dir.display().to_string()
    );
    assert_eq!(
        exec_start(&unit),
        [
            looper_bin()
                .canonicalize()
                .expect("bin")
                .display()
                .to_string(),
            "run".into(),
            "--local".into(),
            "--max-loops".into(),
            "2".into(),
            "--label".into(),
            "100% $HOME \"x\"".into(),
        ]
    );
    for (k, v) in [
        ("Type", "exec"),
        ("Restart", "on-failure"),
        ("RestartPreventExitStatus", "2 3"),
        ("SuccessExitStatus", "130"),
        ("KillMode", "mixed"),
        ("UnsetEnvironment", "TMUX TMUX_PANE"),
        ("WantedBy", "default.target"),
    ] {
        assert_eq!(setting(&unit, k), v, "{k}");
    }
    assert!(setting(&unit, "Environment").starts_with("PATH="));
    assert!(setting(&unit, "EnvironmentFile").ends_with("agent-looper/services/t1.env"));

    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(o) if o.status.success() => {
            let v = Command::new("systemd-analyze")
                .arg("verify")
                .arg(unit_path(&p, "t1"))
                .output()
                .expect("verify");
            let err = stderr(&v);
            assert_eq!(v.status.code(), Some(0), "{err}");
            // Warnings (an unknown key, a bad value) do not change the exit code.
            assert!(!err.contains("looper-t1.service"), "{err}");
        }
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "systemd-analyze is missing: scripts/test installs systemd"
            );
            eprintln!("SYSTEMD-ANALYZE VERIFY SKIPPED: systemd-analyze is not installed");
        }
    }

    let st = p
        .looper()
        .args(["service", "status", "--name", "t1"])
        .output()
        .expect("status");
    assert!(stdout(&st).contains("service t1: "), "{}", stdout(&st));
    assert!(stdout(&st).contains("no runs yet"), "{}", stdout(&st));
    let un = p
        .looper()
        .args(["service", "uninstall", "--name", "t1"])
        .output()
        .expect("uninstall");
    assert_eq!(un.status.code(), Some(0), "{}", stderr(&un));
    assert!(!unit_path(&p, "t1").exists());
}

/// The unit's command, as systemd would start it.
fn start_unit(p: &Project, unit: &str, log: &str) -> Child {
    let argv = exec_start(unit);
    let err = std::fs::File::create(p.join(log)).expect("log");
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..])
        .current_dir(setting(unit, "WorkingDirectory"))
        .env_remove("TMUX")
        .env_remove("TMUX_PANE")
        .env("XDG_STATE_HOME", p.join(".xdg-state"))
        .env("XDG_CONFIG_HOME", p.join(".xdg-config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(err));
    if let Some((k, v)) = setting(unit, "Environment").split_once('=') {
        c.env(k, v);
    }
    c.spawn().expect("ExecStart")
}

fn started(run: &Path) -> bool {
    read_events(run)
        .iter()
        .any(|e| e["event"] == "prompt_started")
}

#[test]
fn a_restarted_service_repairs_the_previous_run_and_starts_a_new_one() {
    let p = Project::new();
    p.fake_agent("=== default\nsleep 60\n", "");
    let out = install(&p, &["--name", "r1", "--", "--label", "svc"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let unit = std::fs::read_to_string(unit_path(&p, "r1")).expect("unit");

    let mut first = start_unit(&p, &unit, "first.err");
    assert!(
        wait_until(30.0, || p.run_dirs().first().is_some_and(|d| started(d))),
        "{}",
        p.read("first.err")
    );
    let old = p.last_run();
    // The event comes before the state that records the agent's group.
    let mut pgid = None;
    assert!(
        wait_until(10.0, || {
            pgid = read_json(&old.join("state.json"))["child_pgid"].as_i64();
            pgid.is_some()
        }),
        "no child_pgid in the state"
    );
    let pgid = pgid.unwrap_or_default();
    // A crash the supervisor cannot record: SIGKILL (the OOM killer, kill -9).
    first.kill().expect("kill");
    first.wait().expect("reap");
    assert!(
        wait_until(10.0, || !group_alive(pgid)),
        "the guard kills the agent group"
    );
    assert_eq!(read_json(&old.join("state.json"))["status"], "running");

    // Restart=on-failure: the same command again.
    let mut second = start_unit(&p, &unit, "second.err");
    assert!(
        wait_until(30.0, || p.run_dirs().len() == 2 && started(&p.last_run())),
        "{}",
        p.read("second.err")
    );
    let repaired = read_json(&old.join("state.json"));
    assert_eq!(repaired["status"], "stopped");
    assert_eq!(repaired["stop_kind"], "external");
    assert!(
        repaired["stop_reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("external termination: ")),
        "{repaired}"
    );
    let ends = read_events(&old)
        .iter()
        .filter(|e| e["event"] == "run_stopped")
        .count();
    assert_eq!(ends, 1);
    assert!(
        p.read("second.err").contains("repaired the previous run"),
        "{}",
        p.read("second.err")
    );
    assert_eq!(p.state()["status"], "running");
    assert!(p.event_names().contains(&"lock_taken_over".to_string()));

    let stop = p
        .looper()
        .args(["control", "stop", "--now"])
        .output()
        .expect("stop");
    assert_eq!(stop.status.code(), Some(0), "{}", stderr(&stop));
    assert!(wait_until(20.0, || second
        .try_wait()
        .ok()
        .flatten()
        .is_some()));
}

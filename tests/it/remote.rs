//! `--host` against a real sshd on 127.0.0.1 (tests/support/sshd.rs): `status`, `logs`,
//! `diff`, `control stop --after-loop --wait` and notes run through ssh on loopers "on" other
//! hosts (the same binary, each host with its own state root), merged with a host column;
//! an unreachable host, a host without looper and a looper too old are one clear row each;
//! `status --watch` keeps drawing while one host is slow.
//! `looper wait --host` reports the state a run on the host reached.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::sshd::{HostSpec, Sshd};
use crate::support::*;

/// The directory of the binaries under test: the "remote" looper is this same binary.
fn bin_dir() -> PathBuf {
    looper_bin().parent().expect("bin dir").to_path_buf()
}

/// A project with one finished run labelled `label`, whose transcript says `words`.
fn project_with_run(label: &str, words: &str) -> Project {
    let p = Project::new();
    p.fake_agent(&format!("=== default\nsay {words}\n"), "");
    let out = p.run(&["--once", "--label", label, "--tmux-layout", "single"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    p
}

/// The environment a looper "on" host `name` has: its own state root and XDG dirs.
fn host_on(name: &str, p: &Project) -> HostSpec {
    HostSpec::new(name)
        .path(&bin_dir())
        .env("LOOPER_STATE_ROOT", &p.runs_dir())
        .env("XDG_STATE_HOME", &p.join(".xdg-state"))
        .env("XDG_CONFIG_HOME", &p.join(".xdg-config"))
}

/// A looper that predates `--json` for the command: clap's refusal, exit 2.
fn old_looper_dir(tmp: &Path) -> PathBuf {
    let dir = tmp.join("old-bin");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let script = dir.join("looper");
    std::fs::write(
        &script,
        "#!/bin/sh\necho \"error: unexpected argument '--json' found\" >&2\necho >&2\necho 'Usage: looper logs [OPTIONS] [TARGET]' >&2\nexit 2\n",
    )
    .expect("old looper");
    let out = Command::new("chmod")
        .arg("755")
        .arg(&script)
        .output()
        .expect("chmod");
    assert!(out.status.success());
    dir
}

/// The local side: a project directory whose hosts.toml points at the test sshd.
fn local(sshd: &Sshd) -> Project {
    let l = Project::bare_dir();
    sshd.write_hosts_toml(&l.join(".xdg-config"), "[hosts.bare]\n[hosts.old]\n");
    l
}

fn looper(l: &Project, args: &[&str]) -> Output {
    l.looper()
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("LOOPER_STATE_ROOT")
        .env_remove("CODEX_LOOPER_STATE_ROOT")
        .args(args)
        .output()
        .expect("run looper")
}

fn line_of<'a>(text: &'a str, start: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting with {start:?} in:\n{text}"))
}

#[test]
fn status_merges_hosts_and_each_host_without_an_answer_is_one_row() {
    let a = project_with_run("on-alpha", "hello from alpha");
    let b = project_with_run("on-beta", "hello from beta");
    let tmp = tempfile::tempdir().expect("tmp");
    let Some(sshd) = Sshd::start(&[
        host_on("alpha", &a),
        host_on("beta", &b),
        HostSpec::new("bare"),
        HostSpec::new("old").path(&old_looper_dir(tmp.path())),
    ]) else {
        return;
    };
    let l = local(&sshd);
    let hosts = [
        "--host", "alpha", "--host", "beta", "--host", "bare", "--host", "old", "--host", "down",
    ];
    let out = looper(&l, &[&["status"][..], &hosts[..]].concat());
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}\n{}",
        stderr(&out),
        sshd.log()
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("HOST  "), "{text}");
    // Hosts without an answer come first (they need attention), one row each.
    let alpha = line_of(&text, "alpha ");
    assert!(
        alpha.contains("on-alpha") && alpha.contains("stopped"),
        "{alpha}"
    );
    let beta = line_of(&text, "beta ");
    assert!(
        beta.contains("on-beta") && beta.contains("stopped"),
        "{beta}"
    );
    let bare = line_of(&text, "bare ");
    assert!(
        bare.contains("no looper") && bare.contains("was not found on the PATH"),
        "{bare}"
    );
    let old = line_of(&text, "old ");
    assert!(
        old.contains("looper too old") && old.contains("unexpected argument '--json'"),
        "{old}"
    );
    let down = line_of(&text, "down ");
    assert!(
        down.contains("unreachable") && down.contains("Connection refused"),
        "{down}"
    );
    assert_eq!(lines.len(), 6, "{text}");
    let problems: Vec<usize> = ["bare ", "old ", "down "]
        .iter()
        .map(|h| lines.iter().position(|l| l.starts_with(h)).expect("row"))
        .collect();
    let runs: Vec<usize> = ["alpha ", "beta "]
        .iter()
        .map(|h| lines.iter().position(|l| l.starts_with(h)).expect("row"))
        .collect();
    assert!(problems.iter().max() < runs.iter().min(), "{text}");

    // The same, as one status document: runs carry their host, hosts say how they answered.
    let out = looper(
        &l,
        &[
            "status", "--json", "--host", "alpha", "--host", "down", "--host", "beta",
        ],
    );
    let doc: Json = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["schema"], "agent-looper/status");
    let runs = doc["runs"].as_array().expect("runs");
    let mut labels: Vec<(String, String)> = runs
        .iter()
        .map(|r| {
            (
                r["host"].as_str().unwrap_or("").to_string(),
                r["label"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    labels.sort();
    assert_eq!(
        labels,
        [
            ("alpha".to_string(), "on-alpha".to_string()),
            ("beta".to_string(), "on-beta".to_string())
        ]
    );
    let hosts = doc["hosts"].as_array().expect("hosts");
    assert_eq!(hosts.len(), 3);
    assert_eq!(hosts[1]["host"], "down");
    assert_eq!(hosts[1]["ok"], false);
    assert_eq!(hosts[1]["problem"]["kind"], "unreachable");
}

#[test]
fn logs_over_ssh_are_the_remote_transcript() {
    let a = project_with_run("on-alpha", "words only alpha says");
    let b = project_with_run("on-beta", "words only beta says");
    let tmp = tempfile::tempdir().expect("tmp");
    let Some(sshd) = Sshd::start(&[
        host_on("alpha", &a),
        host_on("beta", &b),
        HostSpec::new("old").path(&old_looper_dir(tmp.path())),
    ]) else {
        return;
    };
    let l = local(&sshd);
    let here = a
        .looper()
        .env("LOOPER_STATE_ROOT", a.runs_dir())
        .arg("logs")
        .output()
        .expect("logs");
    assert_eq!(here.status.code(), Some(0), "{}", stderr(&here));
    assert!(stdout(&here).contains("words only alpha says"));
    // One host: exactly what `looper logs` prints there.
    let there = looper(&l, &["logs", "--host", "alpha"]);
    assert_eq!(there.status.code(), Some(0), "{}", stderr(&there));
    assert_eq!(stdout(&there), stdout(&here));
    // Several: each line with its host; a looper too old is one row and a failure.
    let both = looper(
        &l,
        &[
            "logs", "on-beta", "--host", "beta", "--host", "alpha", "--host", "old",
        ],
    );
    let text = stdout(&both);
    assert!(text.contains("\nbeta   words only beta says\n"), "{text}");
    assert!(
        line_of(&text, "alpha ").contains("looper run matches `on-beta`"),
        "{text}"
    );
    assert!(line_of(&text, "old ").contains("looper too old"), "{text}");
    assert_ne!(both.status.code(), Some(0));
}

/// A looper running in the background; killed if the test fails early.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `looper diff --host`: the patch a run made on the host, as `looper diff` prints it there
/// (so it can be piped into `git apply` here).
#[test]
fn diff_over_ssh_is_the_remote_patch() {
    let a = Project::new();
    a.fake_agent(
        "=== default\nwrite made.txt made on alpha\\n\nsay done\n",
        "",
    );
    let out = a.run(&["--once", "--label", "maker", "--tmux-layout", "single"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let Some(sshd) = Sshd::start(&[host_on("alpha", &a)]) else {
        return;
    };
    let l = local(&sshd);
    let here = a
        .looper()
        .env("LOOPER_STATE_ROOT", a.runs_dir())
        .args(["diff", "maker"])
        .output()
        .expect("diff");
    assert_eq!(here.status.code(), Some(0), "{}", stderr(&here));
    assert!(
        stdout(&here).contains("+made on alpha"),
        "{}",
        stdout(&here)
    );
    let there = looper(&l, &["diff", "maker", "--host", "alpha"]);
    assert_eq!(there.status.code(), Some(0), "{}", stderr(&there));
    assert_eq!(stdout(&there), stdout(&here));
    let missing = looper(&l, &["diff", "nothing-like-it", "--host", "alpha"]);
    assert_ne!(missing.status.code(), Some(0));
}

/// `looper wait --host`: the wait runs on the host; its result comes back as its lines and
/// its exit code (0 reached, 1 ended without reaching it).
#[test]
fn wait_over_ssh_reports_what_the_remote_run_reached() {
    let a = project_with_run("waited", "all done");
    let Some(sshd) = Sshd::start(&[host_on("alpha", &a)]) else {
        return;
    };
    let l = local(&sshd);
    let out = looper(
        &l,
        &["wait", "waited", "--until", "stopped", "--host", "alpha"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("reached stopped"), "{}", stdout(&out));
    let out = looper(
        &l,
        &[
            "wait",
            "waited",
            "--until",
            "loop_completed",
            "--host",
            "alpha",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("ended without reaching loop_completed"),
        "{}",
        stdout(&out)
    );
    let json = looper(
        &l,
        &[
            "wait", "waited", "--until", "stopped", "--host", "alpha", "--json",
        ],
    );
    let doc: crate::support::Json = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(doc["schema"], "agent-looper/hosts", "{doc}");
    assert_eq!(
        doc["results"][0]["document"]["schema"], "agent-looper/wait",
        "{doc}"
    );
    assert_eq!(doc["results"][0]["document"]["result"], "reached", "{doc}");
}

#[test]
fn control_stop_after_loop_wait_runs_on_the_host() {
    let a = Project::new();
    a.fake_agent("=== default\nsleep 1\nsay working\n", "");
    let err = std::fs::File::create(a.join("looper.err")).expect("err");
    let mut run = Running(
        a.looper()
            .args(["--local", "--label", "long", "--tmux-layout", "single"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn"),
    );
    assert!(
        wait_until(30.0, || a.run_dirs().last().is_some_and(|d| read_events(d)
            .iter()
            .any(|e| e["event"] == "prompt_started"))),
        "{}",
        a.read("looper.err")
    );
    let Some(sshd) = Sshd::start(&[host_on("alpha", &a)]) else {
        return;
    };
    let l = local(&sshd);
    let hostile = format!(
        "it's \"quoted\" $(touch {0}/a) `touch {0}/b`; touch {0}/c & | > \\ * ~",
        l.path().display()
    );
    let out = looper(
        &l,
        &["control", "note", "--host", "alpha", "--note", &hostile],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).starts_with("alpha  operator note recorded for long"));
    let notes = std::fs::read_to_string(a.last_run().join("operator_notes.jsonl")).expect("notes");
    let note: Json = serde_json::from_str(notes.lines().last().expect("a note")).expect("json");
    // The remote shell got exactly the words sent: nothing was run, nothing re-split.
    assert_eq!(note["note"], hostile);
    for f in ["a", "b", "c"] {
        assert!(!l.join(f).exists(), "{f} was created by the remote shell");
    }

    let out = looper(
        &l,
        &[
            "control",
            "stop",
            "--host",
            "alpha",
            "--after-loop",
            "--wait",
            "--reason",
            "done for today",
        ],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(
        line_of(&text, "alpha ").contains("queued stop_after_loop for long"),
        "{text}"
    );
    assert!(
        text.contains("alpha  long: stopped (control stop_after_loop: done for today)"),
        "{text}"
    );
    assert!(wait_until(10.0, || run
        .0
        .try_wait()
        .ok()
        .flatten()
        .is_some()));
    assert_eq!(a.state()["stop_kind"], "control");
    assert_eq!(a.state()["status"], "stopped");
}

#[test]
fn watch_keeps_drawing_while_one_host_is_slow() {
    // `script` gives the watch a pseudo-terminal; skip where util-linux is missing.
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("script(1) is missing; skipping");
        return;
    }
    let a = project_with_run("on-alpha", "hello");
    let Some(sshd) = Sshd::start(&[host_on("alpha", &a), host_on("slow", &a).before("sleep 20")])
    else {
        return;
    };
    let l = local(&sshd);
    let cmd = format!(
        "{} status --watch --host slow --host alpha",
        looper_bin().display()
    );
    let mut script = Command::new("script");
    script
        .current_dir(l.path())
        .env("XDG_CONFIG_HOME", l.join(".xdg-config"))
        .env("XDG_STATE_HOME", l.join(".xdg-state"))
        .env_remove("SSH_AUTH_SOCK")
        .args(["-qfec", &cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = Running(script.spawn().expect("script"));
    let started = std::time::Instant::now();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    {
        use std::io::Write;
        let stdin = child.0.stdin.as_mut().expect("stdin");
        stdin.write_all(b"q").expect("q");
    }
    let mut out = Vec::new();
    {
        use std::io::Read;
        let mut o = child.0.stdout.take().expect("stdout");
        o.read_to_end(&mut out).expect("read");
    }
    let code = child.0.wait().expect("wait").code();
    assert_eq!(code, Some(0));
    // It quit at once although the slow host never answered.
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("on-alpha"), "{text:?}");
    assert!(text.contains("waiting for the first answer"), "{text:?}");
}

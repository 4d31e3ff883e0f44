//! Issue 14, what a new user trips over in the first hour, through the binaries: flags and
//! config messages, the plan file, default labels, and what `looper status` says about a
//! failure.

use crate::support::*;

/// 14.13: `--max-loops -1` got clap's tip `use '-- -1'`, which does not work here.
#[test]
fn a_negative_number_fails_naming_the_flag_and_the_constraint() {
    let p = Project::new();
    p.fake_agent("=== default\nsay hi\n", "");
    for (args, want) in [
        (
            vec!["--max-loops", "-1"],
            "--max-loops: expected a whole number >= 0, found -1",
        ),
        (
            vec!["--timeout", "-5"],
            "--timeout: expected a number of seconds > 0 and <= 1000000000, found -5",
        ),
        (
            vec!["--completion-streak", "0"],
            "--completion-streak: expected a whole number >= 1, found 0",
        ),
        (
            vec!["--sleep", "soon"],
            "--sleep: expected a number of seconds >= 0 and <= 1000000000, found soon",
        ),
    ] {
        let mut all = vec!["--once"];
        all.extend(args.iter().copied());
        let out = p.run(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("'-- "), "{args:?}: {}", stderr(&out));
    }
}

/// 14.14: a flag given twice was an error; the last one wins, as in most CLIs.
#[test]
fn the_last_of_a_repeated_flag_wins() {
    let p = Project::new();
    p.fake_agent("=== default\nsay hi\n", "");
    let out = p.run(&[
        "--once",
        "--timeout",
        "60",
        "--timeout",
        "90",
        "--label",
        "first",
        "--label",
        "second",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(p.state()["label"], "second");
    let out = p
        .looper()
        .args([
            "config",
            "check",
            "--show-origin",
            "--timeout",
            "60",
            "--timeout",
            "90",
        ])
        .output()
        .expect("config check");
    assert!(
        stdout(&out).contains("timeout_seconds = 90") && stdout(&out).contains("--timeout"),
        "{}",
        stdout(&out)
    );
}

/// 14.15: a config file with several mistakes reported only the first.
#[test]
fn every_mistake_of_a_config_file_is_reported_at_once() {
    let p = Project::new();
    p.fake_agent(
        "=== default\nsay hi\n",
        "max_loop = 3\ntimeout_seconds = \"soon\"",
    );
    let cfg = p.read("agent-looper.toml");
    p.write("agent-looper.toml", &format!("{cfg}\n[lopper]\nx = 1\n"));
    let out = p.run(&["--once"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("3 problems in the configuration"), "{err}");
    for want in [
        "agent-looper.toml: unknown key `looper.max_loop` (did you mean `looper.max_loops`?)",
        "agent-looper.toml: looper.timeout_seconds: expected a number of seconds > 0",
        "agent-looper.toml: unknown key `lopper` (did you mean `looper`?)",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
}

/// 14.12: a missing plan file was found only at the gate, after a full loop.
#[test]
fn a_missing_plan_file_is_refused_before_the_run() {
    let p = Project::new();
    p.fake_agent("=== default\nsay EXIT_SIGNAL: true\n", "");
    let out = p.run(&[
        "--once",
        "--complete-on",
        "EXIT_SIGNAL",
        "--plan-file",
        "plan.md",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("looper.plan_file") && stderr(&out).contains("plan.md"),
        "{}",
        stderr(&out)
    );
    assert!(p.run_dirs().is_empty(), "nothing started");
    assert_eq!(p.calls(), 0, "the agent never ran");
    // An empty plan the agent is to fill in is fine.
    p.write("plan.md", "");
    let out = p.run(&[
        "--once",
        "--complete-on",
        "EXIT_SIGNAL",
        "--plan-file",
        "plan.md",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// 14.17: default labels (`Looper_24a95b`) meant nothing in a fleet list.
#[test]
fn default_labels_name_the_directory_and_the_agent() {
    let p = Project::new();
    p.fake_agent("=== default\nsay hi\n", "");
    let out = p.run(&["--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let dir = p
        .path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .expect("name");
    assert_eq!(p.state()["label"], format!("{dir}-fake"));
}

/// 14.16: `looper status` reduced an agent failure to `command exited with code 1`.
#[test]
fn status_shows_the_agents_own_error_and_what_to_do() {
    let p = Project::new();
    p.fake_agent(
        "=== default\nerr Error: Missing environment variable: `OPENAI_API_KEY`.\nexit 1\n",
        "",
    );
    let out = p.run(&["--once"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = p.looper().arg("status").output().expect("status");
    let text = stdout(&out);
    assert!(text.contains("command exited with code 1"), "{text}");
    assert!(
        text.contains("Missing environment variable: `OPENAI_API_KEY`"),
        "{text}"
    );
    assert!(text.contains("hint: missing credentials"), "{text}");
    let out = p
        .looper()
        .args(["status", "--json"])
        .output()
        .expect("json");
    let v: Json = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        v["runs"][0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("OPENAI_API_KEY")),
        "{v}"
    );
}

/// 14.8: `status`, `logs` and `control` looked only in `./.agent-looper/runs`: from a
/// subdirectory they found nothing, and from elsewhere `control stop LABEL` failed although
/// `status --all` listed the run.
#[test]
fn runs_are_found_from_a_subdirectory_and_by_label_from_anywhere() {
    let state = tempfile::tempdir().expect("state home");
    let p = Project::new();
    p.fake_agent("=== default\nsleep 30\n", "");
    let mut child = p
        .looper()
        .args([
            "--local",
            "--once",
            "--label",
            "findme",
            "--tmux-layout",
            "single",
        ])
        .env("XDG_STATE_HOME", state.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("looper");
    let agent_running = || {
        p.run_dirs().len() == 1
            && std::fs::read(p.last_run().join("state.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<Json>(&b).ok())
                .is_some_and(|s| s["child_pgid"].is_i64())
    };
    assert!(wait_until(15.0, agent_running), "the agent started");
    std::fs::create_dir_all(p.join("src/deep")).expect("mkdir");
    let out = p
        .looper()
        .arg("status")
        .current_dir(p.join("src/deep"))
        .env("XDG_STATE_HOME", state.path())
        .output()
        .expect("status");
    assert!(stdout(&out).contains("findme"), "{}", stdout(&out));
    let elsewhere = tempfile::tempdir().expect("elsewhere");
    let out = p
        .looper()
        .args(["control", "stop", "findme", "--now", "--wait"])
        .current_dir(elsewhere.path())
        .env("XDG_STATE_HOME", state.path())
        .output()
        .expect("control");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let _ = child.wait();
    assert_eq!(p.state()["stop_kind"], "control");
}

/// 14.10: a budget the chosen agent cannot measure silently never applied.
#[test]
fn a_budget_the_agent_cannot_measure_is_refused_naming_the_key() {
    let p = Project::new();
    p.fake_agent("=== default\nsay hi\n", "");
    let out = p.run(&["--once", "--max-tokens", "1000"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("looper.max_tokens"),
        "{}",
        stderr(&out)
    );
    assert!(p.run_dirs().is_empty());
    // A codex agent reports tokens but no cost.
    p.write(
        "agent-looper.toml",
        &format!(
            "[looper]\ndefault_agent = \"codex\"\n[agents.codex]\nexecutable = {:?}\n",
            fake_agent_bin().display().to_string()
        ),
    );
    let out = p.run(&["--once", "--max-cost", "2.5"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("looper.max_cost_usd") && stderr(&out).contains("found 2.5"),
        "{}",
        stderr(&out)
    );
    let out = p.run(&["--once", "--dry-run", "--max-tokens", "10"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "tokens are measured: {}",
        stderr(&out)
    );
}

/// 14.11: a two-line reply counted as kilobytes of output (the JSON around it): the output
/// size `--cb-output-decline` compares is the agent's own text, for every interface.
#[test]
fn the_output_size_is_the_agents_own_words() {
    let p = Project::new();
    p.write("agent.script", "=== default\ncodex-reply two\\nlines\n");
    p.write(
        "agent-looper.toml",
        &format!(
            "[looper]\ndefault_agent = \"codex\"\nsleep_seconds = 0\n[agents.codex]\nexecutable = {:?}\nenv = {{ FAKE_AGENT_SCRIPT = {:?} }}\n",
            fake_agent_bin().display().to_string(),
            p.join("agent.script").display().to_string()
        ),
    );
    p.write("PROMPT.md", "go\n");
    let out = p.run(&["--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(p.state()["last_output_bytes"], "two\nlines".len());
    assert!(stdout(&out).contains("output=9B"), "{}", stdout(&out));
}

/// 14.3: `.agent-looper/` was not ignored by git, so an agent's `git add -A` committed the
/// transcripts and prompts. The run root goes into `.git/info/exclude`, once; the user's
/// `.gitignore` is never edited.
#[test]
fn the_run_records_stay_out_of_the_agents_commits() {
    let p = Project::new();
    p.git(&["rm", "-q", ".gitignore"]);
    p.git(&["commit", "-q", "-m", "no ignore file"]);
    p.fake_agent(
        "=== default\nwrite work.txt done\\n\ngit add -A\ngit commit -q -m agent\nsay done\n",
        "",
    );
    let out = p.run(&["--once", "--label", "one"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        said.contains("added /.agent-looper/ to") && said.contains("info/exclude"),
        "{said}"
    );
    let tree = p.git(&["ls-tree", "-r", "--name-only", "HEAD"]);
    assert!(tree.contains("work.txt"), "{tree}");
    assert!(
        !tree.contains(".agent-looper"),
        "the agent committed the records: {tree}"
    );
    assert!(
        !p.join(".gitignore").exists(),
        "the user's .gitignore was written"
    );

    // A second run finds it there: no second line, nothing said.
    p.fake_agent("=== default\nsay again\n", "");
    let out = p.run(&["--once", "--label", "two"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stdout(&out).contains("info/exclude"), "{}", stdout(&out));
    let exclude = std::fs::read_to_string(p.join(".git/info/exclude")).expect("exclude");
    assert_eq!(exclude.matches("/.agent-looper/").count(), 1, "{exclude}");
}

/// A `codex` or `claude` on PATH that is the fake agent speaking that CLI's JSON, with the
/// script in the environment.
fn stub_clis(p: &Project, script: &str) -> std::path::PathBuf {
    let bin = p.join(".stub-bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    p.write(".stub-bin/agent.script", script);
    for name in ["codex", "claude"] {
        let path = bin.join(name);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\nFAKE_AGENT_SCRIPT={:?} exec {:?} \"$@\"\n",
                bin.join("agent.script").display().to_string(),
                fake_agent_bin().display().to_string()
            ),
        )
        .expect("stub");
        let mut perm = std::fs::metadata(&path).expect("meta").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&path, perm).expect("chmod");
    }
    bin
}

/// The private tmux server of a `TMUX_TMPDIR`, ended even when the test fails.
struct KillServer(std::path::PathBuf);

impl Drop for KillServer {
    fn drop(&mut self) {
        kill_server(&self.0);
    }
}

fn kill_server(tmux_tmpdir: &std::path::Path) {
    let _ = std::process::Command::new("tmux")
        .arg("kill-server")
        .env("TMUX_TMPDIR", tmux_tmpdir)
        .stderr(std::process::Stdio::null())
        .output();
}

/// The backticked commands of the first run's "Next steps".
fn printed_commands(text: &str) -> Vec<String> {
    let steps = text.split("Next steps:").nth(1).expect("next steps");
    steps
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// 14.2: the first run's "next steps" suggested `claude-looper --local --once`, which exited 2
/// outside tmux. Every command printed there works where it is printed: here outside tmux,
/// for codex and for claude, with the starter files as written (a private tmux server for
/// the farm launch).
#[test]
fn every_next_step_the_first_run_prints_works_outside_tmux() {
    for (wrapper, exe, reply) in [
        (
            codex_looper_bin(),
            "codex-looper",
            "codex-reply Done. EXIT_SIGNAL: true",
        ),
        (
            std::path::PathBuf::from(env!("CARGO_BIN_EXE_claude-looper")),
            "claude-looper",
            "claude-reply Done. EXIT_SIGNAL: true",
        ),
    ] {
        let p = Project::new();
        let go = p.join("go");
        let bin = stub_clis(
            &p,
            &format!("=== default\nwait-for {}\n{reply}\n", go.display()),
        );
        let tmux_dir = tempfile::Builder::new()
            .prefix("lt")
            .tempdir_in("/tmp")
            .expect("tmux dir");
        let _server = KillServer(tmux_dir.path().to_path_buf());
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let cmd = |line: &str| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let mut c = std::process::Command::new(if words[0] == "looper" {
                looper_bin()
            } else {
                assert_eq!(words[0], exe, "{line}");
                wrapper.clone()
            });
            c.args(&words[1..])
                .current_dir(p.path())
                .env("PATH", &path)
                .env("TMUX_TMPDIR", tmux_dir.path())
                .env_remove("TMUX")
                .env_remove("TMUX_PANE")
                .env_remove("LOOPER_STATE_ROOT")
                .env_remove("CODEX_LOOPER_STATE_ROOT")
                .env("XDG_STATE_HOME", p.join(".xdg-state"))
                .env("XDG_CONFIG_HOME", p.join(".xdg-config"))
                .stdin(std::process::Stdio::null());
            c
        };
        let first = cmd(exe).output().expect("first run");
        assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
        let commands = printed_commands(&stdout(&first));
        assert!(commands.len() >= 6, "{commands:?}");
        let runs_before = |n: usize| p.run_dirs().len() == n;
        let mut runs = 0;
        for line in &commands {
            let words: Vec<&str> = line.split_whitespace().collect();
            let what = format!("{exe}: `{line}`");
            match &words[1..] {
                // The farm: a window of a tmux session, outside tmux.
                [] => {
                    let out = cmd(line).output().expect("farm");
                    assert_eq!(out.status.code(), Some(0), "{what}: {}", stderr(&out));
                    runs += 1;
                    assert!(wait_until(30.0, || runs_before(runs)), "{what}: no run");
                    std::fs::write(&go, "").expect("go");
                    if exe == "claude-looper" {
                        // In tmux claude gets its real TUI (hybrid), which the fake agent
                        // cannot be (the hybrid tests run the real claude there): the pane
                        // was opened for it.
                        assert!(
                            wait_until(30.0, || p.state()["hybrid_pane_id"].is_string()),
                            "{what}: {}",
                            p.state()
                        );
                        assert_eq!(p.state()["agent_interface"], "hybrid", "{what}");
                        let _ = cmd("looper control stop --now --wait").output();
                        assert!(
                            wait_until(60.0, || !matches!(
                                p.state()["status"].as_str(),
                                Some("running" | "retrying")
                            )),
                            "{what}: {}",
                            p.state()
                        );
                    } else {
                        assert!(
                            wait_until(60.0, || p.state()["status"] == "stopped"),
                            "{what}: {}",
                            p.state()
                        );
                    }
                    let _ = std::fs::remove_file(&go);
                    kill_server(tmux_dir.path());
                }
                ["logs", "-f"] => {
                    let mut child = cmd(line)
                        .stdout(std::process::Stdio::piped())
                        .spawn()
                        .expect("logs -f");
                    // The runs so far have stopped: it prints the newest and ends, or
                    // keeps following; either way without an error.
                    std::thread::sleep(std::time::Duration::from_secs(2));
                    if child.try_wait().expect("try_wait").is_none() {
                        let _ = child.kill();
                    }
                    let out = child.wait_with_output().expect("logs");
                    assert!(
                        out.status.success() || out.status.code().is_none(),
                        "{what}: {}",
                        stderr(&out)
                    );
                    assert!(stdout(&out).contains("Done."), "{what}: {}", stdout(&out));
                }
                ["control", "stop", "--after-loop"] => {
                    let run = cmd(&format!("{exe} --local"))
                        .stdout(std::process::Stdio::piped())
                        .stderr(std::process::Stdio::piped())
                        .spawn()
                        .expect("run");
                    runs += 1;
                    assert!(
                        wait_until(30.0, || runs_before(runs)
                            && p.state()["child_pid"].is_i64()),
                        "{what}: the run never started"
                    );
                    let out = cmd(line).output().expect("control");
                    assert_eq!(out.status.code(), Some(0), "{what}: {}", stderr(&out));
                    std::fs::write(&go, "").expect("go");
                    let out = run.wait_with_output().expect("run");
                    assert_eq!(out.status.code(), Some(0), "{what}: {}", stderr(&out));
                    let _ = std::fs::remove_file(&go);
                }
                _ => {
                    if line.contains("--once") {
                        runs += 1;
                        std::fs::write(&go, "").expect("go");
                    }
                    let out = cmd(line).output().expect("command");
                    assert_eq!(
                        out.status.code(),
                        Some(0),
                        "{what}: {}{}",
                        stdout(&out),
                        stderr(&out)
                    );
                    let _ = std::fs::remove_file(&go);
                }
            }
        }
        assert_eq!(p.run_dirs().len(), runs, "{exe}");
    }
}

/// 14.1: an agent that keeps printing the completion marker while completion is off was
/// re-prompted forever without a word; it is said once, on the console and in an event.
#[test]
fn a_marker_printed_while_completion_is_off_is_said_once() {
    let p = Project::new();
    p.fake_agent("=== default\nsay all done\nsay EXIT_SIGNAL: true\n", "");
    let out = p.run(&["--max-loops", "3"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(p.state()["stop_reason"], "max loops reached: 3");
    let console = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(console.matches("completion is off").count(), 1, "{console}");
    assert!(console.contains("--complete-on"), "{console}");
    let said: Vec<String> = p
        .event_names()
        .into_iter()
        .filter(|e| e == "completion_marker_ignored")
        .collect();
    assert_eq!(said.len(), 1, "{:?}", p.event_names());
}

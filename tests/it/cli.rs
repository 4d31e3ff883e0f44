//! The command-line surface: help for every command (snapshots), version, first run, init,
//! completions, doctor, config check, and the README's demo.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::*;

fn help(bin: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(args)
        .arg("--help")
        .env("COLUMNS", "100")
        .output()
        .expect("help");
    assert_eq!(out.status.code(), Some(0), "{args:?}");
    stdout(&out)
}

#[test]
fn help_snapshots_for_every_command() {
    insta::assert_snapshot!("looper_help", help(&looper_bin(), &[]));
    insta::assert_snapshot!("codex_looper_help", help(&codex_looper_bin(), &[]));
    for sub in [
        &["run"][..],
        &["init"],
        &["control"],
        &["control", "stop"],
        &["control", "pause"],
        &["control", "resume"],
        &["control", "note"],
        &["control", "focus"],
        &["status"],
        &["logs"],
        &["diff"],
        &["doctor"],
        &["config"],
        &["config", "check"],
        &["completions"],
        &["demo"],
        &["service"],
        &["service", "install"],
        &["service", "uninstall"],
        &["service", "status"],
    ] {
        let name = format!("help_{}", sub.join("_"));
        let text = help(&looper_bin(), sub);
        if sub.len() == 1 && !["control", "config", "service"].contains(&sub[0]) {
            assert!(text.contains("Examples:"), "{name} has an examples section");
        }
        insta::assert_snapshot!(name, text);
    }
}

#[test]
fn help_says_run_is_optional_and_version_names_the_binary() {
    assert!(help(&looper_bin(), &[]).contains("The `run` subcommand is optional"));
    let out = Command::new(codex_looper_bin())
        .arg("--version")
        .output()
        .expect("version");
    assert_eq!(
        stdout(&out).trim(),
        format!("codex-looper {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn usage_errors_exit_2_and_name_the_flag() {
    let p = Project::new();
    for (args, needle) in [
        (&["--timeout", "0"][..], "--timeout"),
        (&["--sleep", "nan"], "--sleep"),
        (&["--max-loops=-1"], "--max-loops"),
        (&["--completion-streak", "0"], "--completion-streak"),
        (&["--complete-on", "("], "--complete-on"),
        (
            &["--fresh-session-per-loop", "--reuse-session"],
            "--reuse-session",
        ),
        (&["--interface", "tty"], "--interface"),
    ] {
        let out = p.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn first_run_writes_starter_files_and_changes_nothing_that_exists() {
    let p = Project::bare_dir();
    let out = p.looper().output().expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("Initialized Agent Looper starter files."));
    assert!(stdout(&out).contains("Next steps:"));
    assert_eq!(
        p.read("agent-looper.toml"),
        include_str!("../../agent-looper.toml.example")
    );
    assert_eq!(p.read("PROMPT.md"), include_str!("../../PROMPT.md.example"));
    // init without --force leaves files alone; with --force rewrites them.
    p.write("PROMPT.md", "mine");
    let out = p.looper().arg("init").output().expect("init");
    assert!(stdout(&out).contains("exists, leaving unchanged"));
    assert_eq!(p.read("PROMPT.md"), "mine");
    let out = p.looper().args(["init", "--force"]).output().expect("init");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(p.read("PROMPT.md"), include_str!("../../PROMPT.md.example"));
}

fn interactive(p: &Project, answers: &str) -> String {
    let mut child = p
        .looper()
        .args(["init", "--interactive", "--force"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(answers.as_bytes())
        .expect("answers");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0));
    stdout(&out)
}

#[test]
fn interactive_init_one_prompt_is_single_mode() {
    let p = Project::bare_dir();
    interactive(&p, "claude\n90\n0\n5\n3\n60\nFix the flaky test.\n\n");
    let cfg = p.read("agent-looper.toml");
    for line in [
        "default_agent = \"claude\"",
        "timeout_seconds = 90",
        "sleep_seconds = 0",
        "max_loops = 5",
        "max_transient_retries = 3",
        "retry_notify_after_seconds = 60",
        "mode = \"single\"",
    ] {
        assert!(cfg.contains(line), "{line}\n{cfg}");
    }
    assert_eq!(p.read("PROMPT.md"), "Fix the flaky test.\n");
    let out = p
        .looper()
        .args(["config", "check"])
        .output()
        .expect("check");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn interactive_init_several_prompts_is_sequence_mode_and_bad_answers_are_re_asked() {
    let p = Project::bare_dir();
    let text = interactive(
        &p,
        "robot\ncodex\ninf\nnan\n-3\n12\nabc\n2\n\n\none\ntwo\nthree\n\n",
    );
    assert!(text.contains("unknown agent `robot`"), "{text}");
    assert!(text.contains("`inf` is not a finite number"), "{text}");
    assert!(text.contains("keeping the default 7200"), "{text}");
    assert!(text.contains("`abc` is not a whole number >= 0"), "{text}");
    let cfg = p.read("agent-looper.toml");
    assert!(
        cfg.contains("mode = \"sequence\"") && cfg.contains("prompt_file = \"prompts.md\""),
        "{cfg}"
    );
    assert!(
        cfg.contains("timeout_seconds = 7200")
            && cfg.contains("sleep_seconds = 12")
            && cfg.contains("max_loops = 2"),
        "{cfg}"
    );
    assert_eq!(p.read("prompts.md"), "one\n---\ntwo\n---\nthree\n");
    let out = p
        .looper()
        .args(["config", "check"])
        .output()
        .expect("check");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("# prompts: sequence mode"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn interactive_init_with_closed_stdin_keeps_defaults() {
    let p = Project::bare_dir();
    interactive(&p, "");
    assert_eq!(
        p.read("agent-looper.toml"),
        include_str!("../../agent-looper.toml.example")
    );
}

#[test]
fn completions_are_generated_for_each_shell() {
    for (shell, needle) in [
        ("bash", "_looper()"),
        ("zsh", "#compdef looper"),
        ("fish", "complete -c looper"),
    ] {
        let out = Command::new(looper_bin())
            .args(["completions", shell])
            .output()
            .expect("completions");
        assert_eq!(out.status.code(), Some(0));
        assert!(stdout(&out).contains(needle), "{shell}");
        assert!(
            stdout(&out).contains("reuse-session"),
            "{shell} knows the run flags"
        );
    }
}

#[test]
fn config_check_shows_values_and_origins() {
    let p = Project::new();
    p.write("agent-looper.toml", "[looper]\nmax_loops = 4\n");
    p.write("PROMPT.md", "x");
    let out = p
        .looper()
        .args(["config", "check", "--show-origin", "--sleep", "0"])
        .output()
        .expect("check");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.lines()
            .any(|l| l.starts_with("max_loops = 4") && l.ends_with("# agent-looper.toml")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("sleep_seconds = 0") && l.ends_with("# command line --sleep")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("timeout_seconds = 7200") && l.ends_with("# default")),
        "{text}"
    );
    p.write("agent-looper.toml", "[looper]\nmax_loop = 4\n");
    let out = p
        .looper()
        .args(["config", "check"])
        .output()
        .expect("check");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown key `looper.max_loop` (did you mean `looper.max_loops`?)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn doctor_reports_agents_tmux_git_and_fails_for_a_missing_selected_agent() {
    let p = Project::new();
    p.fake_agent("=== default\nsay hi\n", "");
    let out = p.looper().arg("doctor").output().expect("doctor");
    let text = stdout(&out);
    assert!(text.contains("ok: config"), "{text}");
    assert!(text.contains("ok: fake (selected agent"), "{text}");
    assert!(text.contains("git work tree"), "{text}");
    assert!(text.contains("tmux"), "{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");
    let out = p
        .looper()
        .args(["doctor", "--agent", "codex"])
        .env("PATH", "/nonexistent")
        .output()
        .expect("doctor");
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("missing: codex (selected agent)"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn the_readme_demo_completes_with_the_real_gates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(looper_bin())
        .args(["demo", "--dir"])
        .arg(dir.path().join("demo"))
        .env_remove("TMUX")
        .env("XDG_STATE_HOME", dir.path().join("state"))
        .stdin(Stdio::null())
        .output()
        .expect("demo");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    assert!(text.contains("STOP: completion marker"), "{text}");
    assert!(text.contains("looper demo: completed."), "{text}");
    assert!(!text.contains("- [ ]"), "every task ticked: {text}");
    assert_eq!(
        text.matches("== loop ").count(),
        3,
        "one loop per task: {text}"
    );
}

#[test]
fn a_dry_run_shows_the_hybrid_pane_command_or_says_why_json_runs() {
    let p = Project::new();
    p.write("PROMPT.md", "do it\n");
    // Asked for explicitly: the pane's command, even outside tmux.
    p.write(
        "agent-looper.toml",
        "[looper]\ndefault_agent = \"codex\"\n[agents.codex]\nkind = \"codex\"\ninterface = \"hybrid\"\nexecutable = \"codex\"\n",
    );
    let out = p.run(&["--dry-run", "--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(
            "$ codex --no-alt-screen --no-daemon (in a hybrid pane; the prompt is pasted)"
        ),
        "{text}"
    );
    // Only the default (claude outside tmux): what a real run here would run, and why.
    p.write(
        "agent-looper.toml",
        "[looper]\ndefault_agent = \"claude\"\n[agents.claude]\nkind = \"claude\"\nexecutable = \"claude\"\n",
    );
    let out = p.run(&["--dry-run", "--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        all.contains("interface: json (not inside tmux; pass --interface json to silence this)"),
        "{all}"
    );
    assert!(
        all.contains("$ claude -p --output-format stream-json"),
        "{all}"
    );
}

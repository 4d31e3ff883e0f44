//! Argv for every agent kind, interface and option combination.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::*;
use crate::config::{AgentKind, AgentSettings, Interface};
use crate::engine::SessionRef;

fn agent(kind: AgentKind) -> AgentSettings {
    AgentSettings {
        name: kind.as_str().into(),
        kind,
        interface: Interface::Json,
        interface_explicit: false,
        executable: kind.as_str().into(),
        cwd: PathBuf::from("/tmp"),
        env: BTreeMap::new(),
        extra_args: vec![],
        model: None,
        effort: None,
        interactive_command: None,
        first_command: None,
        resume_command: None,
        stop_patterns: vec![],
        scan_stdout_for_stop_patterns: false,
        account: None,
        min_headroom_percent: None,
    }
}

const HOSTILE: &str = "-n \"quoted\" 'single' $HOME `tick` \\back\nnew line ünïcødé 🚀";

fn argv(a: &AgentSettings, prompt: &str, id: Option<&str>, resume: bool) -> Vec<String> {
    let session = SessionRef {
        name: "lbl-loop-0001".into(),
        id: id.map(str::to_string),
        resume,
    };
    let ctx = PromptContext {
        prompt,
        session: &session,
        loop_number: 1,
        prompt_index: 2,
        label: "lbl",
        run_dir: "/runs/r1",
    };
    build(a, &ctx).expect("build").argv()
}

#[test]
fn codex_first_and_resume_by_thread_id() {
    let a = agent(AgentKind::Codex);
    assert_eq!(
        argv(&a, "hi", None, false),
        ["codex", "exec", "--json", "--", "hi"]
    );
    assert_eq!(
        argv(&a, "hi", Some("th-1"), true),
        ["codex", "exec", "--json", "resume", "th-1", "--", "hi"]
    );
    // No id: a new thread, never `resume --last` (D27).
    assert_eq!(
        argv(&a, "hi", None, true),
        ["codex", "exec", "--json", "--", "hi"]
    );
}

#[test]
fn codex_extra_args_agent_args_model_and_effort() {
    let mut a = agent(AgentKind::Codex);
    a.extra_args = vec![
        "--sandbox".into(),
        "workspace-write".into(),
        "--skip-git-repo-check".into(),
    ];
    a.model = Some("gpt-5.4".into());
    a.effort = Some("high".into());
    assert_eq!(
        argv(&a, "hi", None, false),
        [
            "codex",
            "exec",
            "--json",
            "--sandbox",
            "workspace-write",
            "--skip-git-repo-check",
            "--model",
            "gpt-5.4",
            "--config",
            "model_reasoning_effort=\"high\"",
            "--",
            "hi"
        ]
    );
}

#[test]
fn claude_json_uses_exact_session_ids() {
    let mut a = agent(AgentKind::Claude);
    a.extra_args = vec!["--dangerously-skip-permissions".into()];
    a.model = Some("claude-opus-4-8".into());
    a.effort = Some("max".into());
    let id = "0d6f7c44-5e8b-4a3f-9d2a-2b1c3d4e5f60";
    assert_eq!(
        argv(&a, "hi", Some(id), false),
        [
            "claude",
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--dangerously-skip-permissions",
            "--model",
            "claude-opus-4-8",
            "--effort",
            "max",
            "--session-id",
            id,
            "--",
            "hi"
        ]
    );
    let resumed = argv(&a, "hi", Some(id), true);
    assert_eq!(&resumed[resumed.len() - 4..], ["--resume", id, "--", "hi"]);
}

#[test]
fn gemini_stream_json_with_sessions() {
    let a = agent(AgentKind::Gemini);
    assert_eq!(
        argv(&a, "-x", Some("s1"), false),
        [
            "gemini",
            "--output-format",
            "stream-json",
            "--session-id",
            "s1",
            "--prompt=-x"
        ]
    );
    assert_eq!(
        argv(&a, "hi", Some("s1"), true),
        [
            "gemini",
            "--output-format",
            "stream-json",
            "--resume",
            "s1",
            "--prompt=hi"
        ]
    );
}

#[test]
fn hostile_prompts_are_one_argument_byte_for_byte() {
    for kind in [AgentKind::Codex, AgentKind::Claude] {
        let a = agent(kind);
        let v = argv(&a, HOSTILE, Some("id"), false);
        assert_eq!(v.last().map(String::as_str), Some(HOSTILE), "{kind:?}");
        assert_eq!(
            v[v.len() - 2],
            "--",
            "{kind:?}: a `--` guard protects a leading dash"
        );
    }
    let v = argv(&agent(AgentKind::Gemini), HOSTILE, None, false);
    assert_eq!(v.last().cloned(), Some(format!("--prompt={HOSTILE}")));
}

#[test]
fn generic_templates_render_every_placeholder() {
    let mut a = agent(AgentKind::Generic);
    a.first_command = Some(vec![
        "my-agent".into(),
        "--session={session}".into(),
        "{session_id}".into(),
        "{loop}/{prompt_index}".into(),
        "{label}@{run_dir}".into(),
        "{{literal}}".into(),
        "{prompt}".into(),
    ]);
    a.resume_command = Some(vec![
        "my-agent".into(),
        "--resume".into(),
        "{session}".into(),
        "{prompt}".into(),
    ]);
    assert_eq!(
        argv(&a, HOSTILE, Some("uuid-1"), false),
        [
            "my-agent",
            "--session=lbl-loop-0001",
            "uuid-1",
            "1/2",
            "lbl@/runs/r1",
            "{literal}",
            HOSTILE
        ]
    );
    assert_eq!(
        argv(&a, "p", None, true),
        ["my-agent", "--resume", "lbl-loop-0001", "p"]
    );
    // Without resume_command, later prompts reuse first_command.
    a.resume_command = None;
    assert_eq!(argv(&a, "p", None, true)[0], "my-agent");
}

#[test]
fn templates_replace_built_in_commands_and_get_no_extra_args() {
    let mut a = agent(AgentKind::Codex);
    a.first_command = Some(vec!["wrapper".into(), "{prompt}".into()]);
    a.extra_args = vec!["--x".into()];
    a.model = Some("m".into());
    assert_eq!(argv(&a, "p", None, false), ["wrapper", "p"]);
}

#[test]
fn prompts_too_large_for_argv_go_to_stdin_or_are_refused() {
    let big = "x".repeat(MAX_ARG_BYTES + 1);
    let session = SessionRef {
        name: "s".into(),
        id: None,
        resume: false,
    };
    let ctx = PromptContext {
        prompt: &big,
        session: &session,
        loop_number: 1,
        prompt_index: 1,
        label: "l",
        run_dir: "/r",
    };
    let c = build(&agent(AgentKind::Codex), &ctx).expect("codex takes stdin");
    assert_eq!(c.args.last().map(String::as_str), Some("-"));
    assert_eq!(c.stdin.as_deref(), Some(big.as_str()));
    let c = build(&agent(AgentKind::Claude), &ctx).expect("claude takes stdin");
    assert!(c.stdin.is_some() && !c.args.contains(&big));
    let mut g = agent(AgentKind::Generic);
    g.first_command = Some(vec!["a".into(), "{prompt}".into()]);
    let e = build(&g, &ctx).expect_err("too large");
    assert!(e.to_string().contains("at most 131071 bytes"), "{e}");
}

#[test]
fn display_quotes_for_reading_only() {
    let c = AgentCommand {
        program: "codex".into(),
        args: vec!["exec".into(), "a b".into(), "it's".into()],
        stdin: None,
    };
    assert_eq!(c.display(), r#"codex exec 'a b' "it's""#);
}

fn pane(a: &AgentSettings, id: Option<&str>, resume: bool) -> Vec<String> {
    let session = SessionRef {
        name: "lbl-loop-0001".into(),
        id: id.map(str::to_string),
        resume,
    };
    interactive(a, "/bin/tui", &session)
}

#[test]
fn hybrid_panes_run_the_interactive_tuis() {
    let mut a = agent(AgentKind::Claude);
    a.extra_args = vec!["--verbose".into()];
    a.model = Some("opus".into());
    // claude 2.1.332 continues by itself at a usage-limit reset and draws full-screen by
    // default: a looper pane turns both off.
    assert_eq!(
        pane(&a, Some("u-1"), false),
        [
            "/bin/tui",
            "--verbose",
            "--model",
            "opus",
            "--settings",
            r#"{"autoContinueAtUsageLimit":false,"tui":"default"}"#,
            "--session-id",
            "u-1"
        ]
    );
    assert_eq!(
        pane(&a, Some("u-1"), true),
        [
            "/bin/tui",
            "--verbose",
            "--model",
            "opus",
            "--settings",
            CLAUDE_PANE_SETTINGS,
            "--resume",
            "u-1"
        ]
    );
    // The user's own settings are passed as given.
    a.extra_args = vec!["--settings".into(), "/etc/mine.json".into()];
    a.model = None;
    assert_eq!(
        pane(&a, None, false),
        ["/bin/tui", "--settings", "/etc/mine.json"]
    );

    let mut c = agent(AgentKind::Codex);
    assert_eq!(
        pane(&c, None, false),
        ["/bin/tui", "--no-alt-screen", "--no-daemon"],
        "a new codex session: its thread id is learnt from the rollout"
    );
    c.effort = Some("high".into());
    assert_eq!(
        pane(&c, Some("th-1"), true),
        [
            "/bin/tui",
            "resume",
            "--no-alt-screen",
            "--no-daemon",
            "--config",
            "model_reasoning_effort=\"high\"",
            "th-1"
        ]
    );
    // An id the TUI has not recorded yet is not resumed.
    assert_eq!(
        pane(&c, Some("th-1"), false),
        [
            "/bin/tui",
            "--no-alt-screen",
            "--no-daemon",
            "--config",
            "model_reasoning_effort=\"high\""
        ]
    );

    c.interactive_command = Some(vec!["my-codex".into(), "--flag".into()]);
    assert_eq!(pane(&c, Some("th-1"), true), ["my-codex", "--flag"]);
}

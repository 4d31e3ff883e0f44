//! Table-driven configuration tests: for every key of the schema, a valid value, each kind
//! of wrong type, out-of-range and empty values, and unknown keys with suggestions. Every
//! error message is asserted.

use std::collections::BTreeMap;

use super::schema::{AGENT_KEYS, Kind, LOOPER_KEYS};
use super::*;
use crate::cli::RunArgs;
use std::time::Duration;

fn inv(dir: &Path) -> Invocation {
    Invocation {
        wrapper_agent: None,
        base_dir: dir.to_path_buf(),
        env: BTreeMap::from([("HOME".to_string(), dir.display().to_string())]),
    }
}

fn load(toml_text: &str) -> Result<Settings> {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(DEFAULT_CONFIG_FILE), toml_text).expect("write");
    resolve(&RunArgs::default(), &inv(dir.path()))
}

fn err(toml_text: &str) -> String {
    match load(toml_text) {
        Ok(_) => panic!("expected an error for:\n{toml_text}"),
        Err(e) => e.to_string(),
    }
}

/// A valid TOML literal and a list of (bad literal, "found ..." text) per kind.
fn cases(kind: Kind) -> (&'static str, Vec<(&'static str, &'static str)>) {
    match kind {
        Kind::Str => (
            "\"x\"",
            vec![
                ("3", "an integer 3"),
                ("true", "a boolean true"),
                ("[\"a\"]", "an array"),
            ],
        ),
        Kind::NonEmptyStr | Kind::Path { optional: false } => (
            "\"x\"",
            vec![
                ("\"\"", "an empty string"),
                ("\"  \"", "a string \"  \""),
                ("3", "an integer 3"),
                ("false", "a boolean false"),
            ],
        ),
        Kind::Path { optional: true } => (
            "\"plan.md\"",
            vec![("1.5", "a float 1.5"), ("{}", "a table")],
        ),
        Kind::Choice(_) => (
            "",
            vec![("\"nope\"", "a string \"nope\""), ("1", "an integer 1")],
        ),
        Kind::Regex { optional } => (
            "\"^ok$\"",
            if optional {
                vec![
                    ("\"[\"", "a string \"[\" (unclosed character class)"),
                    ("1", "an integer 1"),
                ]
            } else {
                vec![
                    ("\"\"", "an empty string"),
                    ("\"(\"", "a string \"(\" (unclosed group)"),
                    ("true", "a boolean true"),
                ]
            },
        ),
        Kind::Int { min: 0 } => (
            "3",
            vec![
                ("\"3\"", "a string \"3\""),
                ("1.5", "a float 1.5"),
                ("true", "a boolean true"),
                ("-1", "an integer -1"),
            ],
        ),
        Kind::Int { .. } => (
            "3",
            vec![
                ("0", "an integer 0"),
                ("\"3\"", "a string \"3\""),
                ("2.0", "a float 2"),
            ],
        ),
        Kind::Num {
            exclusive: true, ..
        } => (
            "2.5",
            vec![
                ("0", "an integer 0"),
                ("-1.5", "a float -1.5"),
                ("inf", "a non-finite number inf"),
                ("nan", "a non-finite number NaN"),
                ("\"5\"", "a string \"5\""),
                ("true", "a boolean true"),
            ],
        ),
        Kind::Num { .. } => (
            "0",
            vec![
                ("-1", "an integer -1"),
                ("-inf", "a non-finite number -inf"),
                ("\"5\"", "a string \"5\""),
            ],
        ),
        Kind::Percent => (
            "95.5",
            vec![
                ("-1", "an integer -1"),
                ("100.5", "a float 100.5"),
                ("nan", "a non-finite number NaN"),
                ("\"5\"", "a string \"5\""),
            ],
        ),
        Kind::Seconds {
            exclusive: true, ..
        } => (
            "2.5",
            vec![
                ("0", "an integer 0"),
                ("-1.5", "a float -1.5"),
                ("inf", "a non-finite number inf"),
                ("nan", "a non-finite number NaN"),
                ("1e20", "a float 100000000000000000000"),
                ("1000000001", "an integer 1000000001"),
                ("\"5\"", "a string \"5\""),
                ("true", "a boolean true"),
            ],
        ),
        Kind::Seconds { .. } => (
            "0",
            vec![
                ("-1", "an integer -1"),
                ("-inf", "a non-finite number -inf"),
                ("1e20", "a float 100000000000000000000"),
                ("\"5\"", "a string \"5\""),
            ],
        ),
        Kind::Bool => (
            "true",
            vec![("\"true\"", "a string \"true\""), ("1", "an integer 1")],
        ),
        Kind::StrList => (
            "[\"a\", \"b\"]",
            vec![
                ("\"a\"", "a string \"a\""),
                ("[\"a\", 3]", "an array whose item 1 is an integer 3"),
            ],
        ),
        Kind::RegexList => (
            "[\"a+\"]",
            vec![
                (
                    "[\"(\"]",
                    "an array whose item 0 is not a valid regex (unclosed group)",
                ),
                ("[\"\"]", "an array whose item 0 is an empty string"),
                ("\"a\"", "a string \"a\""),
            ],
        ),
        Kind::Template => (
            "[\"my-agent\", \"{prompt}\"]",
            vec![
                ("[]", "an empty command"),
                (
                    "[\"a\", \"{nope}\"]",
                    "the unknown placeholder {nope} in \"{nope}\"",
                ),
                ("[\"a\", 1]", "an array whose item 1 is an integer 1"),
            ],
        ),
        Kind::ChoiceList(_) => (
            "[]",
            vec![
                ("\"x\"", "a string \"x\""),
                ("[\"nope\"]", "an array whose item 0 is a string \"nope\""),
            ],
        ),
        Kind::Argv(_) => (
            "[\"notify-send\", \"{title}\"]",
            vec![
                (
                    "[\"n\", \"{nope}\"]",
                    "the unknown placeholder {nope} in \"{nope}\"",
                ),
                ("[\"\"]", "an empty program name"),
                ("[\"n\", 1]", "an array whose item 1 is an integer 1"),
            ],
        ),
        Kind::Env => (
            "{ A = \"1\" }",
            vec![
                ("{ A = 1 }", "a table whose key A is an integer 1"),
                ("\"A=1\"", "a string \"A=1\""),
            ],
        ),
    }
}

fn valid_choice(kind: Kind) -> String {
    match kind {
        Kind::Choice(words) => format!("\"{}\"", words[0]),
        _ => unreachable!(),
    }
}

#[test]
fn every_looper_key_accepts_a_valid_value_and_rejects_each_wrong_one() {
    for spec in LOOPER_KEYS {
        let (valid, bad) = cases(spec.kind);
        let valid = if valid.is_empty() {
            valid_choice(spec.kind)
        } else {
            valid.to_string()
        };
        let extra = if spec.name == "default_agent" {
            "\n[agents.x]\nkind = \"codex\"\n"
        } else {
            ""
        };
        let ok = load(&format!("[looper]\n{} = {valid}\n{extra}", spec.name));
        assert!(
            ok.is_ok(),
            "looper.{} = {valid}: {:?}",
            spec.name,
            ok.err().map(|e| e.to_string())
        );
        for (literal, found) in bad {
            let msg = err(&format!("[looper]\n{} = {literal}\n", spec.name));
            let expected = format!(
                "agent-looper.toml: looper.{}: expected {}, found {found}",
                spec.name,
                spec.kind.expected()
            );
            assert!(
                msg.starts_with(&expected),
                "key {}:\n got: {msg}\nwant: {expected}",
                spec.name
            );
        }
    }
}

#[test]
fn every_agent_key_accepts_a_valid_value_and_rejects_each_wrong_one() {
    for spec in AGENT_KEYS {
        let (valid, bad) = cases(spec.kind);
        let valid = if valid.is_empty() {
            valid_choice(spec.kind)
        } else {
            valid.to_string()
        };
        // Keep the agent runnable: a generic agent needs a template.
        let base = if spec.name == "kind" {
            "first_command = [\"a\", \"{prompt}\"]\n"
        } else {
            "kind = \"codex\"\n"
        };
        let cwd_ok = if spec.name == "cwd" {
            "\".\"".to_string()
        } else {
            valid
        };
        let text = format!(
            "[looper]\ndefault_agent = \"x\"\n[agents.x]\n{base}{} = {cwd_ok}\n",
            spec.name
        );
        let ok = load(&text);
        assert!(
            ok.is_ok(),
            "agents.x.{} = {cwd_ok}: {:?}",
            spec.name,
            ok.err().map(|e| e.to_string())
        );
        for (literal, found) in bad {
            let msg = err(&format!("[agents.x]\n{} = {literal}\n", spec.name));
            let expected = format!(
                "agent-looper.toml: agents.x.{}: expected {}, found {found}",
                spec.name,
                spec.kind.expected()
            );
            assert!(
                msg.starts_with(&expected),
                "key {}:\n got: {msg}\nwant: {expected}",
                spec.name
            );
        }
    }
}

#[test]
fn unknown_keys_are_errors_with_suggestions() {
    assert_eq!(
        err("[looper]\nmax_loop = 3\n"),
        "agent-looper.toml: unknown key `looper.max_loop` (did you mean `looper.max_loops`?)"
    );
    assert_eq!(
        err("[agents.codex]\nextra_arg = []\n"),
        "agent-looper.toml: unknown key `agents.codex.extra_arg` (did you mean `agents.codex.extra_args`?)"
    );
    assert_eq!(
        err("[loper]\nmax_loops = 3\n"),
        "agent-looper.toml: unknown key `loper` (did you mean `looper`?)"
    );
    assert_eq!(
        err("[looper]\nzzz = 1\n"),
        "agent-looper.toml: unknown key `looper.zzz`"
    );
    assert_eq!(
        err("[looper]\nmode = \"x\"\n"),
        "agent-looper.toml: looper.mode: expected one of \"single\", \"sequence\", found a string \"x\""
    );
    assert_eq!(
        err("[looper]\nmode = \"sequenc\"\n"),
        "agent-looper.toml: looper.mode: expected one of \"single\", \"sequence\", found a string \"sequenc\" (did you mean \"sequence\"?)"
    );
    assert_eq!(
        err("looper = 3\n"),
        "agent-looper.toml: looper: expected a table, found an integer 3"
    );
}

#[test]
fn invalid_toml_and_utf8_are_clear_errors() {
    let msg = err("[looper\n");
    assert!(msg.starts_with("agent-looper.toml: invalid TOML:"), "{msg}");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join(DEFAULT_CONFIG_FILE),
        b"[looper]\nlabel = \"\xff\"\n",
    )
    .expect("write");
    let e = resolve(&RunArgs::default(), &inv(dir.path())).expect_err("utf8");
    assert!(
        e.to_string()
            .ends_with("the config file is not valid UTF-8 (invalid byte at offset 18)"),
        "{e}"
    );
    assert_eq!(e.exit_code(), 2);
}

#[test]
fn agent_rules() {
    assert_eq!(
        err("[agents.g]\nkind = \"generic\"\n[looper]\ndefault_agent = \"g\"\n"),
        "agent-looper.toml: agents.g.first_command: expected a command template for a generic agent, e.g. first_command = [\"my-agent\", \"{prompt}\"], found nothing"
    );
    assert_eq!(
        err(
            "[agents.g]\nkind = \"generic\"\ninterface = \"hybrid\"\nfirst_command = [\"a\"]\n[looper]\ndefault_agent = \"g\"\n"
        ),
        "agent-looper.toml: agents.g.interface: expected \"json\" (hybrid is supported for claude and codex agents only), found \"hybrid\" for a generic agent"
    );
    let msg = err("[looper]\ndefault_agent = \"cladue\"\n");
    assert!(msg.starts_with("unknown agent `cladue` (from looper.default_agent (agent-looper.toml)) (did you mean `claude`?); available: claude, codex, gemini"), "{msg}");
}

#[test]
fn layering_defaults_file_preset_env_flags_and_agent_args() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join(DEFAULT_CONFIG_FILE),
        "[looper]\nmax_loops = 5\nsleep_seconds = 9\n[agents.claude]\nextra_args = [\"--from-file\"]\ninterface = \"json\"\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("p.toml"),
        "[looper]\nmax_loops = 7\ntimeout_seconds = 60\n",
    )
    .expect("write");
    let mut i = inv(dir.path());
    i.env.insert("LOOPER_LAYOUT".into(), "Single".into());
    i.env.insert("CODEX_LOOPER_LAYOUT".into(), "split".into());
    i.wrapper_agent = Some("claude".into());
    let args = RunArgs {
        preset: Some("p.toml".into()),
        timeout: Some("30".into()),
        agent_args: vec!["--dangerously-skip-permissions".into()],
        ..RunArgs::default()
    };
    let s = resolve(&args, &i).expect("resolve");
    assert_eq!(s.agent.name, "claude");
    assert_eq!(s.max_loops, 7, "preset over file");
    assert_eq!(s.sleep, Duration::from_secs(9), "file over default");
    assert_eq!(s.timeout, Duration::from_secs(30), "flag over preset");
    assert_eq!(
        s.tmux_layout,
        Layout::Single,
        "LOOPER_ wins over CODEX_LOOPER_"
    );
    assert_eq!(
        s.agent.extra_args,
        ["--from-file", "--dangerously-skip-permissions"]
    );
    let origin = |k: &str| {
        s.layers
            .get(k)
            .map(|e| e.origin.to_string())
            .unwrap_or_default()
    };
    assert_eq!(origin("looper.max_loops"), "preset p.toml");
    assert_eq!(origin("looper.sleep_seconds"), "agent-looper.toml");
    assert_eq!(origin("looper.timeout_seconds"), "command line --timeout");
    assert_eq!(origin("looper.tmux_layout"), "environment LOOPER_LAYOUT");
    assert_eq!(
        origin("agents.claude.extra_args"),
        "command line -- AGENT_ARGS"
    );
    assert_eq!(origin("looper.completion_streak"), "default");
    let shown = render_resolved(&s, true);
    assert!(shown.contains("max_loops = 7"), "{shown}");
    assert!(shown.contains("# preset p.toml"), "{shown}");
}

#[test]
fn wrapper_and_flag_agent_selection() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join(DEFAULT_CONFIG_FILE),
        "[looper]\ndefault_agent = \"gemini\"\n",
    )
    .expect("write");
    let mut i = inv(dir.path());
    assert_eq!(
        resolve(&RunArgs::default(), &i).expect("r").agent.name,
        "gemini"
    );
    i.wrapper_agent = Some("codex".into());
    assert_eq!(
        resolve(&RunArgs::default(), &i).expect("r").agent.name,
        "codex",
        "wrapper beats default_agent"
    );
    let args = RunArgs {
        agent: Some("claude".into()),
        ..RunArgs::default()
    };
    assert_eq!(
        resolve(&args, &i).expect("r").agent.name,
        "claude",
        "--agent beats the wrapper"
    );
}

#[test]
fn once_sleep_zero_and_complete_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = RunArgs {
        once: true,
        max_loops: Some("9".into()),
        sleep: Some("0".into()),
        complete_on: Some("DONE".into()),
        reuse_session: true,
        ..RunArgs::default()
    };
    let s = resolve(&args, &inv(dir.path())).expect("resolve");
    assert_eq!(s.max_loops, 1, "--once wins over --max-loops");
    assert_eq!(s.sleep, Duration::ZERO, "D7: sleep 0 is allowed");
    assert_eq!(s.completion_marker.as_deref(), Some("DONE"));
    assert!(!s.fresh_session_per_loop);
}

fn prompt_case(files: &[&str], args: RunArgs, config: &str) -> (PromptMode, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    for f in files {
        std::fs::write(dir.path().join(f), "x").expect("write");
    }
    if !config.is_empty() {
        std::fs::write(dir.path().join(DEFAULT_CONFIG_FILE), config).expect("write");
    }
    let s = resolve(&args, &inv(dir.path())).expect("resolve");
    let name = s
        .prompt_file
        .strip_prefix(dir.path())
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    (s.mode, name)
}

#[test]
fn prompt_precedence_follows_the_five_rules() {
    use PromptMode::*;
    let seq = RunArgs {
        mode: Some(crate::cli::Mode::Sequence),
        ..RunArgs::default()
    };
    // 1. An explicit --mode wins (and picks the matching default file).
    assert_eq!(
        prompt_case(&["PROMPT.md"], seq.clone(), ""),
        (Sequence, "prompts.md".into())
    );
    // 2. Otherwise [looper].mode wins.
    assert_eq!(
        prompt_case(&[], RunArgs::default(), "[looper]\nmode = \"sequence\"\n"),
        (Sequence, "prompts.md".into())
    );
    // 3. Otherwise a custom --prompt-file uses single mode ...
    let custom = RunArgs {
        prompt_file: Some("tasks.md".into()),
        ..RunArgs::default()
    };
    assert_eq!(
        prompt_case(&["prompts.md"], custom, ""),
        (Single, "tasks.md".into())
    );
    // ... except the legacy name itself.
    let legacy = RunArgs {
        prompt_file: Some("./prompts.md".into()),
        ..RunArgs::default()
    };
    assert_eq!(
        prompt_case(&[], legacy, ""),
        (Sequence, "prompts.md".into())
    );
    // 4. Otherwise a lone prompts.md implies sequence.
    assert_eq!(
        prompt_case(&["prompts.md"], RunArgs::default(), ""),
        (Sequence, "prompts.md".into())
    );
    // 5. Otherwise PROMPT.md in single mode.
    assert_eq!(
        prompt_case(&["PROMPT.md", "prompts.md"], RunArgs::default(), ""),
        (Single, "PROMPT.md".into())
    );
    assert_eq!(
        prompt_case(&[], RunArgs::default(), ""),
        (Single, "PROMPT.md".into())
    );
    // Both explicit.
    let both = RunArgs {
        prompt_file: Some("a.md".into()),
        ..seq
    };
    assert_eq!(prompt_case(&[], both, ""), (Sequence, "a.md".into()));
}

#[test]
fn presets_by_path_name_builtin_and_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut i = inv(dir.path());
    // Shipped in the binary.
    let args = RunArgs {
        preset: Some("rai".into()),
        ..RunArgs::default()
    };
    let s = resolve(&args, &i).expect("rai");
    assert_eq!(s.agent.name, "claude");
    assert_eq!(s.plan_file, Some(dir.path().join("fix_plan.md")));
    assert!(s.backup_enabled);
    assert_eq!(s.backup_prefix, "rai-loop-backup");
    assert!(
        s.agent
            .extra_args
            .contains(&"--dangerously-skip-permissions".to_string())
    );
    assert_eq!(
        s.layers
            .get("looper.plan_file")
            .map(|e| e.origin.to_string())
            .as_deref(),
        Some("preset rai (built-in)")
    );
    // Named, from the user's folders (agent-looper first, then codexfarm).
    let xdg = dir.path().join("xdg");
    std::fs::create_dir_all(xdg.join("codexfarm/presets")).expect("mkdir");
    std::fs::write(
        xdg.join("codexfarm/presets/rai.toml"),
        "[looper]\nmax_loops = 4\n",
    )
    .expect("write");
    i.env
        .insert("XDG_CONFIG_HOME".into(), xdg.display().to_string());
    assert_eq!(
        resolve(&args, &i).expect("named").max_loops,
        4,
        "a user preset shadows the built-in one"
    );
    // By path.
    std::fs::write(dir.path().join("mine.toml"), "[looper]\nmax_loops = 8\n").expect("write");
    let by_path = RunArgs {
        preset: Some("./mine.toml".into()),
        ..RunArgs::default()
    };
    assert_eq!(resolve(&by_path, &i).expect("path").max_loops, 8);
    // Missing: an error listing where it looked.
    let missing = RunArgs {
        preset: Some("nope".into()),
        ..RunArgs::default()
    };
    let e = resolve(&missing, &i).expect_err("missing").to_string();
    assert!(e.starts_with("preset `nope` not found; searched: "), "{e}");
    assert!(
        e.contains("agent-looper/presets/nope.toml")
            && e.contains("codexfarm/presets/nope.toml")
            && e.contains("built-in presets (rai, verified)"),
        "{e}"
    );
    let missing_path = RunArgs {
        preset: Some("x/nope.toml".into()),
        ..RunArgs::default()
    };
    assert!(
        resolve(&missing_path, &i)
            .expect_err("missing")
            .to_string()
            .starts_with("preset not found: ")
    );
    // Preset errors name the preset.
    std::fs::write(dir.path().join("bad.toml"), "[looper]\nmax_loops = -2\n").expect("write");
    let bad = RunArgs {
        preset: Some("bad.toml".into()),
        ..RunArgs::default()
    };
    assert_eq!(
        resolve(&bad, &i).expect_err("bad").to_string(),
        "preset bad.toml: looper.max_loops: expected a whole number >= 0, found an integer -2"
    );
}

#[test]
fn the_shipped_preset_file_matches_the_builtin() {
    let shipped = include_str!("../../examples/presets/rai.toml");
    assert_eq!(preset::BUILTIN[0].1, shipped);
}

#[test]
fn the_example_config_is_the_starter_and_valid() {
    let example = include_str!("../../agent-looper.toml.example");
    assert_eq!(
        example,
        starter::starter_config(&starter::Answers::default())
    );
    assert!(load(example).is_ok());
    assert_eq!(
        include_str!("../../PROMPT.md.example"),
        starter::STARTER_PROMPT
    );
}

#[test]
fn explicit_missing_config_is_an_error_but_the_default_may_be_absent() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(resolve(&RunArgs::default(), &inv(dir.path())).is_ok());
    let args = RunArgs {
        config: Some("other.toml".into()),
        ..RunArgs::default()
    };
    assert_eq!(
        resolve(&args, &inv(dir.path()))
            .expect_err("missing")
            .to_string(),
        "--config other.toml: file not found"
    );
}

#[test]
fn readme_config_reference_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let readme = std::fs::read_to_string(path).expect("README.md");
    let (start, end) = (
        "<!-- config-reference:start -->\n",
        "<!-- config-reference:end -->",
    );
    let (Some(a), Some(b)) = (readme.find(start), readme.find(end)) else {
        panic!("README.md lacks the config reference markers");
    };
    let current = &readme[a + start.len()..b];
    let want = schema::markdown_reference();
    if current != want {
        if std::env::var_os("BLESS").is_some() {
            let updated = format!("{}{want}{}", &readme[..a + start.len()], &readme[b..]);
            std::fs::write(path, updated).expect("write README.md");
        } else {
            panic!(
                "README.md config reference is out of date; run `BLESS=1 cargo test readme_config_reference`"
            );
        }
    }
}

#[test]
fn every_section_key_accepts_a_valid_value_and_rejects_each_wrong_one() {
    for section in &schema::SECTIONS[1..] {
        for spec in section.keys {
            let (valid, bad) = cases(spec.kind);
            let valid = match (section.name, spec.name) {
                (_, "cwd") => "\".\"".to_string(),
                ("review", "agent") => "\"codex\"".to_string(),
                _ if valid.is_empty() => valid_choice(spec.kind),
                _ => valid.to_string(),
            };
            // A notifier's command and its events need each other.
            let companion = match (section.name, spec.name) {
                ("notify", "command") => "on = [\"stopped\"]\n",
                ("notify", "on") => "",
                ("notify", _) => "on = [\"stopped\"]\ncommand = [\"true\"]\n",
                _ => "",
            };
            let doc = format!("[{}]\n{companion}{} = {valid}\n", section.name, spec.name);
            let ok = load(&doc);
            assert!(ok.is_ok(), "{doc}: {:?}", ok.err().map(|e| e.to_string()));
            for (literal, found) in bad {
                let msg = err(&format!(
                    "[{}]\n{companion}{} = {literal}\n",
                    section.name, spec.name
                ));
                let expected = format!(
                    "agent-looper.toml: {}.{}: expected {}, found {found}",
                    section.name,
                    spec.name,
                    spec.kind.expected()
                );
                assert!(msg.starts_with(&expected), "got: {msg}\nwant: {expected}");
            }
        }
    }
    assert!(err("[verify]\ncomand = []\n").contains("did you mean `verify.command`"));
}

/// `config::run::prepare` in a git repository with a prompt, an executable `check` on PATH.
fn prepare_err(toml_text: &str, git: bool) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(DEFAULT_CONFIG_FILE), toml_text).expect("write");
    std::fs::write(dir.path().join("PROMPT.md"), "p\n").expect("write");
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).expect("bin");
    for name in ["check", "codex"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(bin.join(name), "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(bin.join(name), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
    if git {
        let repo = git2::Repository::init(dir.path()).expect("init");
        let sig = git2::Signature::now("t", "t@example.com").expect("sig");
        let tree = repo
            .find_tree(repo.index().and_then(|mut i| i.write_tree()).expect("tree"))
            .expect("tree");
        repo.commit(Some("HEAD"), &sig, &sig, "init", &tree, &[])
            .expect("commit");
    }
    let mut i = inv(dir.path());
    i.env.insert("PATH".into(), bin.display().to_string());
    let prepared = resolve(&RunArgs::default(), &i).and_then(|s| run::prepare(s, &i));
    match prepared {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn gates_that_cannot_work_are_refused_before_the_run() {
    let on = "[looper]\ncompletion_enabled = true\n";
    assert_eq!(
        prepare_err(&format!("{on}[verify]\ncommand = [\"check\"]\n"), false),
        ""
    );
    for (doc, git, want) in [
        (
            "[verify]\ncommand = [\"check\"]\n".to_string(),
            false,
            "verify.when: expected completion_enabled = true",
        ),
        (
            format!("{on}[verify]\ncommand = [\"check\"]\ncount_regex = '\\d+ passed'\n"),
            false,
            "verify.count_regex: expected a regular expression with a capture group",
        ),
        (
            format!("{on}[verify]\ncommand = [\"check\"]\nmin_count = 5\n"),
            false,
            "verify.min_count: expected verify.count_regex",
        ),
        (
            format!("{on}[verify]\ncommand = [\"no-such-check\"]\n"),
            false,
            "verify.command: program `no-such-check` not found",
        ),
        (
            format!("{on}[verify]\ncommand = [\"check\"]\ncwd = \"missing\"\n"),
            false,
            "verify.cwd does not exist",
        ),
        (
            format!("{on}[review]\nagent = \"codx\"\n"),
            true,
            "review.agent: unknown agent `codx`",
        ),
        (
            format!("{on}[review]\nagent = \"codex\"\n"),
            false,
            "[review] needs a git work tree",
        ),
        (
            "[review]\nagent = \"codex\"\nwhen = \"every_loop\"\nprompt_file = \"rubric.md\"\n"
                .to_string(),
            true,
            "rubric.md does not exist",
        ),
    ] {
        let got = prepare_err(&doc, git);
        assert!(got.contains(want), "{doc}\n got: {got}\nwant: {want}");
    }
    assert_eq!(
        prepare_err("[review]\nagent = \"codex\"\nwhen = \"every_loop\"\n", true),
        ""
    );
}

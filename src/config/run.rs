//! The second stage of validation (D6): from the layered settings to everything a run needs,
//! compiled and checked before `run_started`: the regexes, the prompts (each must fit its
//! argv), the programs every command template names, the interface (D9, decided from the
//! invocation's environment), git prerequisites, and the plan file. `looper run`, `config
//! check` and `doctor` all go through [`prepare`]; nothing downstream parses or clamps again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regex::Regex;

use super::{AgentKind, AgentSettings, Interface, Invocation, Settings, layers};
use crate::agents::Classifier;
use crate::agents::command::{self, PromptContext};
use crate::effects::git;
use crate::engine::SessionRef;
use crate::error::{Error, Result};
use crate::prompts::{self, PromptSet};

/// A run's configuration, validated and compiled.
pub struct RunConfig {
    pub settings: Settings,
    pub label: String,
    /// The prompts as loaded at start (each reload is checked again by the run).
    pub prompts: PromptSet,
    pub separator: Regex,
    pub completion: Option<Regex>,
    /// With completion off: the configured marker, only to say the agent printed it.
    pub ignored_marker: Option<Regex>,
    pub output_match: Option<Regex>,
    pub classifier: Classifier,
    /// Where each program the agent's commands name was found (`executable`, and the first
    /// word of `first_command` and `resume_command`), keyed by the name as configured.
    pub programs: BTreeMap<String, PathBuf>,
    /// The git work tree, opened when backups or the no-progress breaker need it.
    pub workspace: Option<git::Workspace>,
    /// The tmux pane this looper runs in (`$TMUX_PANE` when `$TMUX` is set).
    pub tmux: Option<TmuxContext>,
    /// The invocation's environment: what the agent inherits, and where a TUI's transcript
    /// is (`CLAUDE_CONFIG_DIR`, `CODEX_HOME`).
    pub env: BTreeMap<String, String>,
    /// One-line notices for the start of the run (interface fallback, plan file not yet made).
    pub notices: Vec<String>,
    /// The verify gate, compiled.
    pub verify: Option<VerifyRun>,
    /// The reviewer gate, compiled.
    pub review: Option<ReviewRun>,
}

/// The verify gate, ready to run: its regexes compiled, its program found.
#[derive(Clone, Debug)]
pub struct VerifyRun {
    pub pass: Option<Regex>,
    pub count: Option<Regex>,
    /// Where `command[0]` was found (the name as written in a dry run).
    pub program: String,
}

/// The reviewer gate, ready to run.
#[derive(Clone, Debug)]
pub struct ReviewRun {
    pub approve_on: Regex,
    pub classifier: Classifier,
    /// Where each program the reviewer's commands name was found.
    pub programs: BTreeMap<String, PathBuf>,
    /// The rubric template (the file's text, or the built-in one), placeholders checked.
    pub rubric: String,
}

impl ReviewRun {
    pub fn program_path(&self, program: &str) -> String {
        self.programs
            .get(program)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| program.to_string())
    }
}

/// The tmux this looper was started in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TmuxContext {
    /// `$TMUX_PANE`: where hybrid panes and the live view are split from.
    pub pane: String,
}

impl TmuxContext {
    pub fn from_env(env: &BTreeMap<String, String>) -> Option<Self> {
        env.contains_key("TMUX").then(|| TmuxContext {
            pane: env.get("TMUX_PANE").cloned().unwrap_or_default(),
        })
    }
}

impl RunConfig {
    /// The path a command's program resolves to, or the program as written (a dry run does
    /// not require it to exist).
    pub fn program_path(&self, program: &str) -> String {
        self.programs
            .get(program)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| program.to_string())
    }

    /// The agent's own program as found (the hybrid TUI, `--version` probes).
    pub fn agent_program(&self) -> String {
        self.program_path(&self.settings.agent.executable)
    }
}

/// A label a person recognises in a fleet list: the project directory and the agent
/// (`myrepo-codex`), with `-2`, `-3`... only when a run of that label is already active in the
/// same run root. `--label` is taken as given.
pub fn default_label(settings: &Settings) -> String {
    let dir = settings
        .agent
        .cwd
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "root".into());
    let base = format!("{dir}-{}", settings.agent.name);
    let active: Vec<String> =
        crate::records::discovery::scan(std::slice::from_ref(&settings.log_dir))
            .into_iter()
            .filter(|c| c.state.is_active())
            .filter_map(|c| c.state.label)
            .collect();
    if !active.contains(&base) {
        return base;
    }
    (2..)
        .map(|n| format!("{base}-{n}"))
        .find(|l| !active.contains(l))
        .unwrap_or(base)
}

/// Look a program up like `execvp` would: a name with a `/` relative to `cwd`, anything else
/// on `path_var`.
pub fn find_program(program: &str, cwd: &Path, path_var: Option<&str>) -> Option<PathBuf> {
    if program.is_empty() {
        return None;
    }
    if program.contains('/') {
        let p = super::absolutize(cwd, Path::new(program));
        return which::which_in(&p, None::<&str>, cwd).ok();
    }
    which::which_in(program, Some(path_var?), cwd).ok()
}

/// The programs an agent's commands name: its executable (built-in kinds), and the first word
/// of each command template.
/// Every program `agent`'s commands name, found on `PATH` (or relative to where it starts);
/// a dry run leaves out what is missing, a real run is refused naming the program.
fn resolve_programs(
    agent: &AgentSettings,
    path_var: Option<&str>,
    dry_run: bool,
) -> Result<BTreeMap<String, PathBuf>> {
    let mut programs = BTreeMap::new();
    for program in programs_of(agent) {
        match find_program(&program, &agent.cwd, path_var) {
            Some(p) => {
                programs.insert(program, p);
            }
            None if dry_run => {}
            None => {
                return Err(Error::AgentNotFound {
                    program,
                    agent: agent.name.clone(),
                });
            }
        }
    }
    Ok(programs)
}

fn programs_of(agent: &AgentSettings) -> Vec<String> {
    let mut names = Vec::new();
    if agent.kind != AgentKind::Generic {
        names.push(agent.executable.clone());
    }
    for template in [&agent.first_command, &agent.resume_command]
        .into_iter()
        .flatten()
    {
        if let Some(first) = template.first() {
            names.push(first.clone());
        }
    }
    names.dedup();
    names
}

fn compile_key(settings: &Settings, key: &str, pattern: &str) -> Result<Regex> {
    let path = if key.contains('.') {
        key.to_string()
    } else {
        format!("looper.{key}")
    };
    layers::compile_regex(pattern, false).map_err(|e| {
        Error::config(
            settings
                .layers
                .get(&path)
                .map(|e| e.origin.to_string())
                .unwrap_or_default(),
            path,
            "a valid regular expression",
            format!("{pattern:?} ({e})"),
        )
    })
}

/// Everything checked before `run_started` (D6).
pub fn prepare(mut settings: Settings, inv: &Invocation) -> Result<RunConfig> {
    let mut notices = Vec::new();
    let separator = prompts::compile_separator(&settings.separator)?;
    let completion = match &settings.completion_marker {
        Some(p) => Some(compile_key(&settings, "completion_marker", p)?),
        None => None,
    };
    // With completion off, the marker the agent may still print: the configured one, else
    // the default the starter prompt asks for (`EXIT_SIGNAL: true`).
    let ignored_marker = match (&completion, settings.layers.get("looper.completion_marker")) {
        (Some(_), _) => None,
        (None, Some(e)) => match &e.value {
            super::Value::Str(p) if !p.is_empty() => layers::compile_regex(p, false).ok(),
            _ => None,
        },
        (None, None) => match super::schema::looper_key("completion_marker").map(|k| k.default) {
            Some(super::schema::DefaultValue::Str(p)) => layers::compile_regex(p, false).ok(),
            _ => None,
        },
    };
    let output_match = match &settings.cb_output_match_pattern {
        Some(p) => Some(compile_key(&settings, "cb_output_match_pattern", p)?),
        None => None,
    };
    let classifier = Classifier::new(&settings.agent.stop_patterns).map_err(|e| {
        Error::config(
            "the agent table",
            format!("agents.{}.stop_patterns", settings.agent.name),
            "valid regular expressions",
            e,
        )
    })?;
    // A prompt that cannot be read is a usage error (exit 2), like one that is missing.
    let prompts =
        prompts::load(&settings.prompt_file, settings.mode, &separator).map_err(|e| match e {
            Error::Io { .. } => Error::Prompt(e.to_string()),
            other => other,
        })?;
    // D12: a prompt that no argv can carry is refused now, not at the first attempt.
    let probe = SessionRef {
        name: "probe".into(),
        id: Some("probe".into()),
        resume: false,
    };
    for (i, prompt) in prompts.prompts.iter().enumerate() {
        let ctx = PromptContext {
            prompt,
            session: &probe,
            loop_number: 1,
            prompt_index: i + 1,
            label: "probe",
            run_dir: "probe",
        };
        if let Err(e) = command::build(&settings.agent, &ctx) {
            return Err(Error::Prompt(format!(
                "{} prompt {}: {e}",
                settings.prompt_file.display(),
                i + 1
            )));
        }
    }

    // D9: hybrid only by default and not inside tmux -> json, said in one line.
    let tmux = TmuxContext::from_env(&inv.env);
    if settings.agent.interface == Interface::Hybrid {
        let in_tmux = tmux.is_some();
        if settings.agent.interface_explicit && !in_tmux && !settings.dry_run {
            return Err(Error::Usage(format!(
                "agents.{}.interface is \"hybrid\", which needs tmux; run inside tmux (or without --local), or pass --interface json",
                settings.agent.name
            )));
        }
        // A dry run shows the pane command wherever a real run would open the pane (inside
        // tmux), or when hybrid was asked for explicitly.
        let shown_anyway = settings.dry_run && settings.agent.interface_explicit;
        if !in_tmux && !shown_anyway {
            notices.push(
                "interface: json (not inside tmux; pass --interface json to silence this)".into(),
            );
            settings.agent.interface = Interface::Json;
        }
    }

    let path_var = inv.env.get("PATH").map(String::as_str);
    let mut programs = resolve_programs(&settings.agent, path_var, settings.dry_run)?;

    // D33, D6: the notifier's program is found now, not when a person is first needed.
    if settings.human.notify.enabled()
        && let Some(first) = settings.human.notify.command.first()
    {
        match find_program(first, &settings.base_dir, path_var) {
            Some(p) => {
                programs.insert(first.clone(), p);
            }
            None if settings.dry_run => {}
            None => {
                return Err(Error::config(
                    settings
                        .layers
                        .get("notify.command")
                        .map(|e| e.origin.to_string())
                        .unwrap_or_default(),
                    "notify.command",
                    "a program on PATH, or a path to one",
                    format!("{first:?}, which was not found"),
                ));
            }
        }
    }

    let needs_git = (settings.backup_enabled || settings.cb_no_progress > 0) && !settings.dry_run;
    let workspace = if needs_git {
        let what = if settings.backup_enabled {
            "--backup needs a git work tree"
        } else {
            "--cb-no-progress needs a git work tree"
        };
        let ws = git::Workspace::open(&settings.agent.cwd).map_err(|e| Error::git(what, e))?;
        ws.require_head().map_err(|e| Error::git(what, e))?;
        if settings.backup_enabled {
            check_backup_prefix(&settings)?;
            git::backup_branch_name(&settings.backup_prefix, chrono::Utc::now(), 1).map_err(
                |e| {
                    Error::config(
                        settings
                            .layers
                            .get("looper.backup_prefix")
                            .map(|e| e.origin.to_string())
                            .unwrap_or_default(),
                        "looper.backup_prefix",
                        "a prefix that makes a valid git branch name",
                        format!("{:?} ({e})", settings.backup_prefix),
                    )
                },
            )?;
        }
        Some(ws)
    } else {
        None
    };

    check_budgets(&settings)?;
    check_headroom(&settings)?;
    let label = settings
        .label
        .clone()
        .unwrap_or_else(|| default_label(&settings));
    // The plan gate reads the plan at every marker: a plan that is missing at the start would
    // stop the run only after a full loop. A plan the agent is to write can start empty.
    if let Some(plan) = &settings.plan_file
        && settings.completion_marker.is_some()
        && !plan.exists()
        && !settings.dry_run
    {
        return Err(Error::config(
            settings
                .layers
                .get("looper.plan_file")
                .map(|e| e.origin.to_string())
                .unwrap_or_default(),
            "looper.plan_file",
            "an existing Markdown plan (create it, even empty, if the agent is to fill it in)",
            format!("{}, which does not exist", plan.display()),
        ));
    }
    let verify = prepare_verify(&settings, path_var)?;
    let review = prepare_review(&settings, path_var)?;
    settings.label = Some(label.clone());
    Ok(RunConfig {
        settings,
        label,
        prompts,
        separator,
        completion,
        ignored_marker,
        output_match,
        classifier,
        programs,
        workspace,
        tmux,
        env: inv.env.clone(),
        notices,
        verify,
        review,
    })
}

/// What an agent reports about its usage, by kind and interface: a budget it cannot measure
/// would silently never apply (issue 14: `max_tokens` never tripped with claude's panes).
fn reports(kind: AgentKind, interface: Interface) -> (bool, bool) {
    // (tokens, cost)
    match (kind, interface) {
        (AgentKind::Claude, Interface::Json) => (true, true),
        (AgentKind::Claude | AgentKind::Codex, _) | (AgentKind::Gemini, _) => (true, false),
        (AgentKind::Generic, _) => (false, false),
    }
}

/// Budgets the chosen agent and interface cannot measure are refused before the run.
fn check_budgets(settings: &Settings) -> Result<()> {
    let a = &settings.agent;
    let (tokens, cost) = reports(a.kind, a.interface);
    let origin = |key: &str| {
        settings
            .layers
            .get(key)
            .map(|e| e.origin.to_string())
            .unwrap_or_default()
    };
    let what = format!(
        "agent `{}` ({} kind, {} interface)",
        a.name,
        a.kind.as_str(),
        a.interface.as_str()
    );
    if let Some(max) = settings.max_tokens
        && !tokens
    {
        return Err(Error::config(
            origin("looper.max_tokens"),
            "looper.max_tokens",
            format!("a budget {what} can report (a generic agent reports no token counts)"),
            max.to_string(),
        ));
    }
    if let Some(max) = settings.max_cost_usd
        && !cost
    {
        return Err(Error::config(
            origin("looper.max_cost_usd"),
            "looper.max_cost_usd",
            format!(
                "a budget {what} can report (only claude's json interface reports cost; use max_tokens)"
            ),
            crate::text::format_num(max),
        ));
    }
    Ok(())
}

/// A headroom needs an account to read windows from: a generic agent has one only by name.
fn check_headroom(settings: &Settings) -> Result<()> {
    let a = &settings.agent;
    if settings.min_headroom_percent.is_some()
        && a.kind == AgentKind::Generic
        && a.account.is_none()
    {
        let key = if a.min_headroom_percent.is_some() {
            format!("agents.{}.min_headroom_percent", a.name)
        } else {
            "looper.min_headroom_percent".to_string()
        };
        return Err(Error::config(
            settings
                .layers
                .get(&key)
                .map(|e| e.origin.to_string())
                .unwrap_or_default(),
            key,
            format!(
                "an agent with an account (a generic agent has one only by name: agents.{}.account = \"...\")",
                a.name
            ),
            format!("a headroom for generic agent `{}`", a.name),
        ));
    }
    Ok(())
}

/// A branch named like the backup prefix itself makes every backup fail (git cannot have
/// both `x` and `x/...`): refused before the run starts, not at its first loop.
fn check_backup_prefix(settings: &Settings) -> Result<()> {
    let prefix = settings.backup_prefix.trim_end_matches('/');
    let Ok(repo) = git2::Repository::discover(&settings.agent.cwd) else {
        return Ok(());
    };
    if repo.find_branch(prefix, git2::BranchType::Local).is_ok() {
        return Err(Error::config(
            settings
                .layers
                .get("looper.backup_prefix")
                .map(|e| e.origin.to_string())
                .unwrap_or_default(),
            "looper.backup_prefix",
            "a prefix that is not itself a branch (backups are branches under it)",
            format!("{prefix:?}, an existing branch"),
        ));
    }
    Ok(())
}

fn origin_of(settings: &Settings, path: &str) -> String {
    settings
        .layers
        .get(path)
        .map(|e| e.origin.to_string())
        .unwrap_or_else(|| "default".into())
}

/// A gate that runs "when the marker is seen" needs the marker (D6: a gate that can never
/// run is a configuration error, not a silent no-op).
fn require_completion(
    settings: &Settings,
    table: &str,
    when: crate::engine::GateWhen,
) -> Result<()> {
    if when == crate::engine::GateWhen::Completion && settings.completion_marker.is_none() {
        let path = format!("{table}.when");
        return Err(Error::config(
            origin_of(settings, &path),
            path,
            "completion_enabled = true (or --complete-on) for a gate that runs on completion, or when = \"every_loop\"",
            "completion detection turned off",
        ));
    }
    Ok(())
}

fn prepare_verify(settings: &Settings, path_var: Option<&str>) -> Result<Option<VerifyRun>> {
    let Some(v) = &settings.verify else {
        return Ok(None);
    };
    require_completion(settings, "verify", v.when)?;
    let pass = match &v.pass_regex {
        Some(p) => Some(compile_key(settings, "verify.pass_regex", p)?),
        None => None,
    };
    let count = match &v.count_regex {
        Some(p) => {
            let re = compile_key(settings, "verify.count_regex", p)?;
            if re.captures_len() < 2 {
                return Err(Error::config(
                    origin_of(settings, "verify.count_regex"),
                    "verify.count_regex",
                    "a regular expression with a capture group for the count, e.g. '(\\d+) passed'",
                    format!("{p:?} (no capture group)"),
                ));
            }
            Some(re)
        }
        None => None,
    };
    if v.min_count.is_some() && count.is_none() {
        return Err(Error::config(
            origin_of(settings, "verify.min_count"),
            "verify.min_count",
            "verify.count_regex to capture the count it is a floor for",
            "no count_regex",
        ));
    }
    let name = &v.command[0];
    let program = match find_program(name, &v.cwd, path_var) {
        Some(p) => p.display().to_string(),
        None if settings.dry_run => name.clone(),
        None => {
            return Err(Error::Usage(format!(
                "verify.command: program `{name}` not found (from {}; looked on PATH, or relative to {})",
                origin_of(settings, "verify.command"),
                v.cwd.display()
            )));
        }
    };
    Ok(Some(VerifyRun {
        pass,
        count,
        program,
    }))
}

fn prepare_review(settings: &Settings, path_var: Option<&str>) -> Result<Option<ReviewRun>> {
    let Some(r) = &settings.review else {
        return Ok(None);
    };
    require_completion(settings, "review", r.when)?;
    let approve_on = compile_key(settings, "review.approve_on", &r.approve_on)?;
    let classifier = Classifier::new(&r.agent.stop_patterns).map_err(|e| {
        Error::config(
            "the agent table",
            format!("agents.{}.stop_patterns", r.agent.name),
            "valid regular expressions",
            e,
        )
    })?;
    if r.agent.kind == AgentKind::Generic && r.agent.first_command.is_none() {
        return Err(Error::config(
            origin_of(settings, "review.agent"),
            format!("agents.{}.first_command", r.agent.name),
            "a command template for the generic reviewer",
            "nothing",
        ));
    }
    let programs = resolve_programs(&r.agent, path_var, settings.dry_run)?;
    let rubric = match &r.prompt_file {
        Some(path) => layers::read_text(path, "the review prompt file")?,
        None => super::rubric::BUILTIN.to_string(),
    };
    super::rubric::check(&rubric).map_err(|e| {
        Error::config(
            origin_of(settings, "review.prompt_file"),
            "review.prompt_file",
            format!(
                "a rubric using only the placeholders {}",
                super::rubric::PLACEHOLDERS.join(", ")
            ),
            e,
        )
    })?;
    // The reviewer sees the diff the looper makes from git, not the maker's account of it.
    if !settings.dry_run {
        git::Workspace::open(&settings.agent.cwd)
            .and_then(|ws| ws.require_head())
            .map_err(|e| Error::git("[review] needs a git work tree with a commit", e))?;
    }
    Ok(Some(ReviewRun {
        approve_on,
        classifier,
        programs,
        rubric,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn executable(dir: &Path, name: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        p
    }

    #[test]
    fn programs_are_found_like_execvp_finds_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir");
        let tool = executable(&bin, "tool");
        std::fs::write(bin.join("plain"), "not executable").expect("write");
        let path = bin.display().to_string();
        assert_eq!(
            find_program("tool", dir.path(), Some(&path)),
            Some(tool.clone())
        );
        assert_eq!(find_program("plain", dir.path(), Some(&path)), None);
        assert_eq!(find_program("tool", dir.path(), None), None, "no PATH");
        assert_eq!(
            find_program("bin/tool", dir.path(), None),
            Some(tool),
            "relative to the agent's cwd"
        );
        assert_eq!(find_program("", dir.path(), Some(&path)), None);
    }

    #[test]
    fn every_template_names_its_own_program() {
        let agent = AgentSettings {
            name: "g".into(),
            kind: AgentKind::Generic,
            interface: Interface::Json,
            interface_explicit: false,
            executable: String::new(),
            cwd: PathBuf::from("/"),
            env: BTreeMap::new(),
            extra_args: vec![],
            model: None,
            effort: None,
            interactive_command: None,
            first_command: Some(vec!["start-agent".into(), "{prompt}".into()]),
            resume_command: Some(vec!["resume-agent".into(), "{session}".into()]),
            stop_patterns: vec![],
            scan_stdout_for_stop_patterns: false,
            account: None,
            min_headroom_percent: None,
        };
        assert_eq!(programs_of(&agent), ["start-agent", "resume-agent"]);
    }

    #[test]
    fn tmux_is_known_from_the_invocation_not_the_process() {
        let env = BTreeMap::from([
            ("TMUX".to_string(), "/tmp/tmux-1/default,1,0".to_string()),
            ("TMUX_PANE".to_string(), "%4".to_string()),
        ]);
        assert_eq!(
            TmuxContext::from_env(&env),
            Some(TmuxContext { pane: "%4".into() })
        );
        assert_eq!(TmuxContext::from_env(&BTreeMap::new()), None);
    }
}

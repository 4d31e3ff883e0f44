//! Configuration: built-in defaults, the project file, a preset, the environment, flags and
//! agent args, layered in that order (D8) and validated before anything starts (D6).

pub mod account;
pub mod flags;
pub mod gates;
pub mod human;
pub mod layers;
pub mod preset;
pub mod rubric;
pub mod run;
pub mod schema;
pub mod starter;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::{self, RunArgs};
use crate::error::{Error, Result};
pub use layers::{Layers, Origin, Value};

pub const DEFAULT_CONFIG_FILE: &str = "agent-looper.toml";
pub const DEFAULT_PROMPT_FILE: &str = "PROMPT.md";
pub const LEGACY_PROMPT_FILE: &str = "prompts.md";

/// The enums of the config, each spelt in the files as its snake_case name; one derive gives
/// both directions (`AgentKind::from_str("codex")`, `kind.as_str()`).
macro_rules! config_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr,
            serde::Serialize, serde::Deserialize,
        )]
        #[strum(serialize_all = "snake_case")]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                self.into()
            }
        }
    };
}

config_enum!(
    /// Which CLI an agent table drives.
    AgentKind { Codex, Claude, Gemini, Generic }
);

impl AgentKind {
    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }

    /// The looper chooses the session id up front (claude and gemini take `--session-id`,
    /// generic agents `{session_id}`); codex reports its own thread id (D27).
    pub fn preassigns_session_ids(self) -> bool {
        self != AgentKind::Codex
    }

    /// The agent reliably keeps a session whose first prompt failed, so the retry resumes
    /// it. gemini 0.61 saves such a session or not depending on how it ended (recorded in
    /// tests/fixtures/clis/FINDINGS.md), so its retry starts a new one.
    pub fn keeps_failed_first_session(self) -> bool {
        self != AgentKind::Gemini
    }
}

config_enum!(
    /// How the agent is run: a JSON-printing process, or its TUI in a tmux pane (D9).
    Interface { Json, Hybrid }
);

config_enum!(
    /// What a reached daily budget does: wait for the next local day, or stop the run.
    DailyBudgetAction { Wait, Stop }
);

config_enum!(
    /// One prompt per loop, or a sequence split on the separator.
    PromptMode { Single, Sequence }
);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Auto,
    Single,
    Split,
}

/// The selected agent, fully resolved.
#[derive(Clone, Debug)]
pub struct AgentSettings {
    pub name: String,
    pub kind: AgentKind,
    pub interface: Interface,
    /// True when the interface was asked for (flag or file), not just the kind's default (D9).
    pub interface_explicit: bool,
    pub executable: String,
    /// Absolute.
    pub cwd: PathBuf,
    pub env: BTreeMap<String, String>,
    pub extra_args: Vec<String>,
    pub model: Option<String>,
    pub effort: Option<String>,
    pub interactive_command: Option<Vec<String>>,
    pub first_command: Option<Vec<String>>,
    pub resume_command: Option<Vec<String>>,
    pub stop_patterns: Vec<String>,
    pub scan_stdout_for_stop_patterns: bool,
    /// `account = "name"`: the login this agent uses, named explicitly (issue 18); `None`:
    /// derived from what selects the login (`config::account::account_of`).
    pub account: Option<String>,
    /// This agent's own `min_headroom_percent`, when its table sets one.
    pub min_headroom_percent: Option<f64>,
}

/// A run in a git worktree of its own (issue 16).
#[derive(Clone, Debug, PartialEq)]
pub struct WorktreeSettings {
    pub cleanup: crate::engine::worktree::CleanupPolicy,
    /// Where its branch starts; `None` is `HEAD`.
    pub base: Option<String>,
    /// `--branch`; `None` is `looper/<label>`.
    pub branch: Option<String>,
    /// Record folder trust for it in the TUI's config (hybrid).
    pub trust: bool,
}

/// Everything a run needs from configuration, validated.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The directory the looper was started in; relative config paths resolve against it.
    pub base_dir: PathBuf,
    pub config_path: PathBuf,
    pub config_found: bool,
    pub preset: Option<String>,
    pub agent: AgentSettings,
    pub mode: PromptMode,
    pub prompt_file: PathBuf,
    pub separator: String,
    pub label: Option<String>,
    pub timeout: Duration,
    pub sleep: Duration,
    pub fresh_session_per_loop: bool,
    pub reload_prompt_each_loop: bool,
    pub max_loops: u64,
    pub max_transient_retries: u64,
    pub retry_notify_after: Duration,
    pub retry_backoff_base: Duration,
    pub retry_backoff_max: Duration,
    pub rate_limit_max_wait: Duration,
    pub log_dir: PathBuf,
    pub kill_on_stop_pattern: bool,
    pub ignore_nonzero: bool,
    pub completion_marker: Option<String>,
    pub completion_streak: u64,
    pub plan_file: Option<PathBuf>,
    pub backup_enabled: bool,
    pub backup_prefix: String,
    pub backup_keep: u64,
    pub backup_dirty: bool,
    pub cb_no_progress: u64,
    pub cb_output_decline: u64,
    pub cb_output_match_pattern: Option<String>,
    pub cb_output_match_repeats: u64,
    /// `None`: no wall-clock budget (0 in the file).
    pub max_runtime: Option<Duration>,
    /// `None`: no token budget (0 in the file).
    pub max_tokens: Option<u64>,
    /// `None`: no cost budget (0 in the file).
    pub max_cost_usd: Option<f64>,
    /// The machine-wide daily budgets (issue 18): `None` when off (0 in the file).
    pub daily_max_tokens: Option<u64>,
    pub daily_max_cost_usd: Option<f64>,
    pub daily_budget_action: DailyBudgetAction,
    /// Hold new loops while a usage window of the account is more used than `100 - N`
    /// percent (the agent's own setting, else `[looper]`'s); `None` when off.
    pub min_headroom_percent: Option<f64>,
    pub terminate_grace: Duration,
    pub pipe_leak_timeout: Duration,
    pub tmux_layout: Layout,
    pub hold_on_stop: bool,
    pub keep_agent_pane: bool,
    pub plan_forbid_removal: bool,
    pub completion_must_be_last: bool,
    /// The verify gate (`[verify]`), when it has a command.
    pub verify: Option<gates::VerifySettings>,
    /// The reviewer gate (`[review]`), when it names an agent.
    pub review: Option<gates::ReviewSettings>,
    /// `Some` when the run gets a worktree of its own.
    pub worktree: Option<WorktreeSettings>,
    /// `--parallel N`: this invocation starts N runs.
    pub parallel: Option<u64>,
    /// One run of a `--parallel` group: the group's label and this run's number.
    pub parallel_member: Option<(String, u64)>,
    pub dry_run: bool,
    /// `[human]` and `[notify]` (issue 17).
    pub human: human::HumanSettings,
    pub layers: Layers,
}

/// Inputs that are not configuration keys but shape resolution.
#[derive(Clone, Debug, Default)]
pub struct Invocation {
    /// The agent implied by the binary name (D1).
    pub wrapper_agent: Option<String>,
    pub base_dir: PathBuf,
    /// Environment lookups go through this so tests can inject values.
    pub env: BTreeMap<String, String>,
}

impl Invocation {
    pub fn from_process(wrapper_agent: Option<&str>) -> Result<Self> {
        let base_dir = std::env::current_dir()
            .map_err(|e| Error::io("cannot read the current directory", ".", e))?;
        Ok(Self {
            wrapper_agent: wrapper_agent.map(str::to_string),
            base_dir,
            env: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        })
    }

    /// `LOOPER_X` wins over its `CODEX_LOOPER_X` twin (D4).
    pub fn env_var(&self, name: &str) -> Option<(&str, &str)> {
        let looper = format!("LOOPER_{name}");
        let codex = format!("CODEX_LOOPER_{name}");
        for var in [looper, codex] {
            if let Some((k, v)) = self.env.get_key_value(&var)
                && !v.trim().is_empty()
            {
                return Some((k.as_str(), v.as_str()));
            }
        }
        None
    }
}

/// Built-in agents: codex (json), claude (hybrid), gemini (json) (D9, D27).
fn builtin_agents(layers: &mut Layers) {
    for (name, interface) in [("codex", "json"), ("claude", "hybrid"), ("gemini", "json")] {
        layers.set(
            format!("agents.{name}.kind"),
            Value::Str(name.into()),
            Origin::Default,
        );
        layers.set(
            format!("agents.{name}.interface"),
            Value::Str(interface.into()),
            Origin::Default,
        );
    }
}

fn default_layers() -> Layers {
    let mut layers = Layers::default();
    for (section, spec) in schema::SECTIONS
        .iter()
        .flat_map(|s| s.keys.iter().map(move |k| (s.name, k)))
    {
        let value = match spec.default {
            schema::DefaultValue::Str(s) => Value::Str(s.into()),
            schema::DefaultValue::Int(i) => Value::Int(i),
            schema::DefaultValue::Num(n) => Value::Num(n),
            schema::DefaultValue::Bool(b) => Value::Bool(b),
            schema::DefaultValue::EmptyList => Value::List(vec![]),
            schema::DefaultValue::None => continue,
        };
        layers.set(format!("{section}.{}", spec.name), value, Origin::Default);
    }
    builtin_agents(&mut layers);
    layers
}

/// Load, layer and validate. Nothing is written.
pub fn resolve(args: &RunArgs, inv: &Invocation) -> Result<Settings> {
    let mut layers = default_layers();

    let explicit_config = args.config.is_some();
    let config_rel = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_FILE));
    let config_path = inv.base_dir.join(&config_rel);
    let config_found = config_path.is_file();
    if config_found {
        let text = layers::read_text(&config_path, "the config file")?;
        layers.apply_document(&text, &Origin::File(config_rel.to_string_lossy().into()))?;
    } else if explicit_config {
        let what = if config_path.is_dir() {
            "is a directory, not a config file"
        } else if config_path.exists() {
            "is not a regular file"
        } else {
            "file not found"
        };
        return Err(Error::Usage(format!(
            "--config {}: {what}",
            config_rel.display()
        )));
    }

    if let Some(spec) = &args.preset {
        let found = preset::resolve(spec, &inv.base_dir, &inv.env)?;
        layers.apply_document(&found.text, &Origin::Preset(found.display.clone()))?;
    }

    if let Some((var, value)) = inv.env_var("LAYOUT") {
        let spec =
            schema::looper_key("tmux_layout").ok_or_else(|| Error::Usage("schema".into()))?;
        let normalized = value.trim().to_ascii_lowercase();
        let checked = layers::check(
            spec,
            &toml::Value::String(normalized),
            &Origin::Env(var.to_string()),
            "looper.tmux_layout",
        )?;
        layers.set("looper.tmux_layout", checked, Origin::Env(var.to_string()));
    }

    flags::apply_flags(&mut layers, args)?;

    // Agent selection (D1): --agent, then the wrapper's agent, then default_agent.
    let (agent_name, agent_origin) = if let Some(a) = &args.agent {
        (a.clone(), "--agent".to_string())
    } else if let Some(w) = &inv.wrapper_agent {
        (w.clone(), "the wrapper name".to_string())
    } else {
        let entry = layers
            .get("looper.default_agent")
            .ok_or_else(|| Error::Usage("default_agent missing".into()))?;
        let Value::Str(s) = &entry.value else {
            return Err(Error::Usage("default_agent is not a string".into()));
        };
        (
            s.clone(),
            format!("looper.default_agent ({})", entry.origin),
        )
    };
    let known = layers.agent_names();
    if !known.contains(&agent_name) {
        let hint = schema::suggest(&agent_name, known.iter().map(String::as_str))
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        return Err(Error::Usage(format!(
            "unknown agent `{agent_name}` (from {agent_origin}){hint}; available: {}. Define [agents.{agent_name}] in {}",
            known.join(", "),
            DEFAULT_CONFIG_FILE
        )));
    }

    let prefix = format!("agents.{agent_name}");
    if let Some(i) = args.interface {
        let s = match i {
            cli::Interface::Json => "json",
            cli::Interface::Hybrid => "hybrid",
        };
        layers.set(
            format!("{prefix}.interface"),
            Value::Str(s.into()),
            flags::flag("interface"),
        );
    }
    if let Some(cwd) = &args.cwd {
        layers.set(
            format!("{prefix}.cwd"),
            Value::Str(cwd.to_string_lossy().into()),
            flags::flag("cwd"),
        );
    }
    if !args.agent_args.is_empty() {
        let mut extra = match layers
            .get(&format!("{prefix}.extra_args"))
            .map(|e| &e.value)
        {
            Some(Value::List(l)) => l.clone(),
            _ => vec![],
        };
        extra.extend(args.agent_args.iter().cloned());
        layers.set(
            format!("{prefix}.extra_args"),
            Value::List(extra),
            Origin::AgentArgs,
        );
    }

    build(layers, args, inv, agent_name, config_path, config_found)
}

/// Typed access to validated layers.
struct Reader<'a> {
    layers: &'a Layers,
}

impl Reader<'_> {
    fn value(&self, path: &str) -> Option<&Value> {
        self.layers.get(path).map(|e| &e.value)
    }
    fn str(&self, path: &str) -> String {
        match self.value(path) {
            Some(Value::Str(s)) => s.clone(),
            _ => String::new(),
        }
    }
    fn opt_str(&self, path: &str) -> Option<String> {
        match self.value(path) {
            Some(Value::Str(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        }
    }
    fn int(&self, path: &str) -> u64 {
        match self.value(path) {
            Some(Value::Int(i)) => u64::try_from(*i).unwrap_or(0),
            _ => 0,
        }
    }
    fn num(&self, path: &str) -> f64 {
        match self.value(path) {
            Some(Value::Num(n)) => *n,
            Some(Value::Int(i)) => *i as f64,
            _ => 0.0,
        }
    }
    /// A `*_seconds` key, range-checked by the schema (`Kind::Seconds`) when it was read.
    fn seconds(&self, path: &str) -> Duration {
        Duration::try_from_secs_f64(self.num(path)).unwrap_or(Duration::ZERO)
    }
    fn bool(&self, path: &str) -> bool {
        matches!(self.value(path), Some(Value::Bool(true)))
    }
    fn opt_bool(&self, path: &str) -> Option<bool> {
        match self.value(path) {
            Some(Value::Bool(b)) => Some(*b),
            _ => None,
        }
    }
    fn list(&self, path: &str) -> Option<Vec<String>> {
        match self.value(path) {
            Some(Value::List(l)) => Some(l.clone()),
            _ => None,
        }
    }
    fn explicit(&self, path: &str) -> bool {
        self.layers
            .get(path)
            .is_some_and(|e| e.origin != Origin::Default)
    }
    fn origin(&self, path: &str) -> String {
        self.layers
            .get(path)
            .map(|e| e.origin.to_string())
            .unwrap_or_else(|| "default".into())
    }
}

/// The agent table `agent_name`, resolved (the run's agent, or the reviewer's).
fn agent_settings(r: &Reader, inv: &Invocation, agent_name: &str) -> Result<AgentSettings> {
    let a = |k: &str| format!("agents.{agent_name}.{k}");

    let kind_str = r.opt_str(&a("kind")).unwrap_or_else(|| {
        if AgentKind::parse(agent_name).is_some() {
            agent_name.to_string()
        } else {
            "generic".into()
        }
    });
    let kind = AgentKind::parse(&kind_str).ok_or_else(|| {
        Error::config(
            r.origin(&a("kind")),
            a("kind"),
            schema::AGENT_KEYS[0].kind.expected(),
            kind_str.clone(),
        )
    })?;
    let interface_explicit = r.explicit(&a("interface"));
    let interface = match r.opt_str(&a("interface")).as_deref() {
        Some("hybrid") => Interface::Hybrid,
        Some(_) => Interface::Json,
        None if kind == AgentKind::Claude => Interface::Hybrid,
        None => Interface::Json,
    };
    if interface == Interface::Hybrid && !matches!(kind, AgentKind::Claude | AgentKind::Codex) {
        return Err(Error::config(
            r.origin(&a("interface")),
            a("interface"),
            "\"json\" (hybrid is supported for claude and codex agents only)",
            format!("\"hybrid\" for a {} agent", kind.as_str()),
        ));
    }
    let first_command = r.list(&a("first_command"));
    if kind == AgentKind::Generic && first_command.is_none() {
        return Err(Error::config(
            r.origin(&a("kind")),
            a("first_command"),
            "a command template for a generic agent, e.g. first_command = [\"my-agent\", \"{prompt}\"]",
            "nothing",
        ));
    }
    if let Some(cmd) = r.list(&a("interactive_command"))
        && cmd.first().is_none_or(|c| c.trim().is_empty())
    {
        return Err(Error::config(
            r.origin(&a("interactive_command")),
            a("interactive_command"),
            "a non-empty array of strings",
            "an empty command",
        ));
    }
    let cwd_rel = r.opt_str(&a("cwd")).unwrap_or_else(|| ".".into());
    let cwd = absolutize(&inv.base_dir, Path::new(&cwd_rel));
    if !cwd.is_dir() {
        return Err(Error::Usage(format!(
            "agent cwd does not exist or is not a directory: {} (from {})",
            cwd.display(),
            r.origin(&a("cwd"))
        )));
    }
    let stop_patterns = r
        .list(&a("stop_patterns"))
        .or_else(|| r.list("looper.stop_patterns"))
        .unwrap_or_else(|| {
            schema::DEFAULT_STOP_PATTERNS
                .iter()
                .map(|s| s.to_string())
                .collect()
        });
    let scan_stdout = r.bool("looper.scan_stdout_for_stop_patterns")
        || r.opt_bool(&a("scan_stdout_for_stop_patterns"))
            .unwrap_or(false);
    let env = match r.value(&a("env")) {
        Some(Value::Map(m)) => m.clone(),
        _ => BTreeMap::new(),
    };
    Ok(AgentSettings {
        name: agent_name.to_string(),
        kind,
        interface,
        interface_explicit,
        executable: r.opt_str(&a("executable")).unwrap_or_else(|| match kind {
            AgentKind::Generic => String::new(),
            k => k.as_str().to_string(),
        }),
        cwd,
        env,
        extra_args: r.list(&a("extra_args")).unwrap_or_default(),
        model: r.opt_str(&a("model")),
        effort: r.opt_str(&a("effort")),
        interactive_command: r.list(&a("interactive_command")),
        first_command,
        resume_command: r.list(&a("resume_command")),
        stop_patterns,
        scan_stdout_for_stop_patterns: scan_stdout,
        account: r.opt_str(&a("account")),
        min_headroom_percent: match r.value(&a("min_headroom_percent")) {
            Some(Value::Num(n)) => Some(*n),
            Some(Value::Int(i)) => Some(*i as f64),
            _ => None,
        },
    })
}

fn build(
    layers: Layers,
    args: &RunArgs,
    inv: &Invocation,
    agent_name: String,
    config_path: PathBuf,
    config_found: bool,
) -> Result<Settings> {
    let r = Reader { layers: &layers };
    let agent = agent_settings(&r, inv, &agent_name)?;

    // Prompt mode and file: the manual's five rules.
    let mode_explicit = r.explicit("looper.mode");
    let prompt_explicit = r.explicit("looper.prompt_file");
    let configured_prompt = PathBuf::from(r.str("looper.prompt_file"));
    let (mode, prompt_file) = match (mode_explicit, prompt_explicit) {
        (true, true) => (parse_mode(&r.str("looper.mode")), configured_prompt),
        (true, false) => {
            let mode = parse_mode(&r.str("looper.mode"));
            let file = match mode {
                PromptMode::Sequence => LEGACY_PROMPT_FILE,
                PromptMode::Single => DEFAULT_PROMPT_FILE,
            };
            (mode, PathBuf::from(file))
        }
        (false, true) => {
            let is_legacy = absolutize(&inv.base_dir, &configured_prompt)
                == inv.base_dir.join(LEGACY_PROMPT_FILE);
            let mode = if is_legacy {
                PromptMode::Sequence
            } else {
                PromptMode::Single
            };
            (mode, configured_prompt)
        }
        (false, false) => {
            if !inv.base_dir.join(DEFAULT_PROMPT_FILE).exists()
                && inv.base_dir.join(LEGACY_PROMPT_FILE).exists()
            {
                (PromptMode::Sequence, PathBuf::from(LEGACY_PROMPT_FILE))
            } else {
                (PromptMode::Single, PathBuf::from(DEFAULT_PROMPT_FILE))
            }
        }
    };

    let flags::Identity {
        worktree,
        label,
        parallel_member,
    } = flags::worktree_and_label(
        args,
        r.bool("looper.worktree").then(|| WorktreeSettings {
            cleanup: crate::engine::worktree::CleanupPolicy::parse(
                &r.str("looper.worktree_cleanup"),
            )
            .unwrap_or_default(),
            base: r.opt_str("looper.worktree_base"),
            branch: args.branch.clone(),
            trust: r.bool("looper.worktree_trust"),
        }),
    )?;

    let completion_marker = r
        .bool("looper.completion_enabled")
        .then(|| r.str("looper.completion_marker"));
    let verify = gates::verify(&r, &inv.base_dir, &agent.cwd)?;
    let review = gates::review(&r, inv)?;
    // The agent's own headroom wins over `[looper]`'s, and `--min-headroom` over both.
    let min_headroom_percent = match layers.get("looper.min_headroom_percent") {
        Some(e) if matches!(e.origin, Origin::Flag(_)) => None,
        _ => agent.min_headroom_percent,
    }
    .or(Some(r.num("looper.min_headroom_percent")))
    .filter(|n| *n > 0.0);
    let layout = match r.str("looper.tmux_layout").as_str() {
        "single" => Layout::Single,
        "split" => Layout::Split,
        _ => Layout::Auto,
    };

    Ok(Settings {
        base_dir: inv.base_dir.clone(),
        config_path,
        config_found,
        preset: args.preset.clone(),
        agent,
        mode,
        prompt_file: absolutize(&inv.base_dir, &prompt_file),
        separator: r.str("looper.separator"),
        label,
        timeout: r.seconds("looper.timeout_seconds"),
        sleep: r.seconds("looper.sleep_seconds"),
        fresh_session_per_loop: r.bool("looper.fresh_session_per_loop"),
        reload_prompt_each_loop: r.bool("looper.reload_prompt_each_loop"),
        max_loops: r.int("looper.max_loops"),
        max_transient_retries: r.int("looper.max_transient_retries"),
        retry_notify_after: r.seconds("looper.retry_notify_after_seconds"),
        retry_backoff_base: r.seconds("looper.retry_backoff_base_seconds"),
        retry_backoff_max: r.seconds("looper.retry_backoff_max_seconds"),
        rate_limit_max_wait: r.seconds("looper.rate_limit_max_wait_seconds"),
        log_dir: absolutize(&inv.base_dir, Path::new(&r.str("looper.log_dir"))),
        kill_on_stop_pattern: r.bool("looper.kill_on_stop_pattern"),
        ignore_nonzero: r.bool("looper.ignore_nonzero"),
        completion_marker,
        completion_streak: r.int("looper.completion_streak").max(1),
        plan_file: r
            .opt_str("looper.plan_file")
            .map(|p| absolutize(&inv.base_dir, Path::new(&p))),
        backup_enabled: r.bool("looper.backup_enabled"),
        backup_prefix: r.str("looper.backup_prefix"),
        backup_keep: r.int("looper.backup_keep"),
        backup_dirty: r.bool("looper.backup_dirty"),
        cb_no_progress: r.int("looper.cb_no_progress"),
        cb_output_decline: r.int("looper.cb_output_decline"),
        cb_output_match_pattern: r.opt_str("looper.cb_output_match_pattern"),
        cb_output_match_repeats: r.int("looper.cb_output_match_repeats").max(1),
        max_runtime: Some(r.seconds("looper.max_runtime_seconds")).filter(|d| !d.is_zero()),
        max_tokens: Some(r.int("looper.max_tokens")).filter(|n| *n > 0),
        max_cost_usd: Some(r.num("looper.max_cost_usd")).filter(|c| *c > 0.0),
        daily_max_tokens: Some(r.int("looper.daily_max_tokens")).filter(|n| *n > 0),
        daily_max_cost_usd: Some(r.num("looper.daily_max_cost_usd")).filter(|c| *c > 0.0),
        daily_budget_action: match r.str("looper.daily_budget_action").as_str() {
            "stop" => DailyBudgetAction::Stop,
            _ => DailyBudgetAction::Wait,
        },
        min_headroom_percent,
        terminate_grace: r.seconds("looper.terminate_grace_seconds"),
        pipe_leak_timeout: r.seconds("looper.pipe_leak_timeout_seconds"),
        tmux_layout: layout,
        hold_on_stop: r.bool("looper.hold_on_stop"),
        keep_agent_pane: r.bool("looper.keep_agent_pane"),
        plan_forbid_removal: r.bool("looper.plan_forbid_removal"),
        completion_must_be_last: r.bool("looper.completion_must_be_last"),
        verify,
        review,
        worktree,
        parallel: args.parallel,
        parallel_member,
        dry_run: args.dry_run,
        human: human::read(&layers)?,
        layers,
    })
}

fn parse_mode(s: &str) -> PromptMode {
    if s == "sequence" {
        PromptMode::Sequence
    } else {
        PromptMode::Single
    }
}

/// Join a relative path onto `base`; absolute paths are kept. `.` and `..` are folded
/// lexically so recorded paths read cleanly.
pub fn absolutize(base: &Path, p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    let mut out = PathBuf::new();
    for comp in joined.components() {
        match comp {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// `looper config check`: the resolved configuration as TOML, optionally with origins.
pub fn render_resolved(settings: &Settings, show_origin: bool) -> String {
    let mut out = String::new();
    let mut section = String::new();
    let selected = format!("agents.{}.", settings.agent.name);
    for (path, entry) in &settings.layers.entries {
        let (sec, key) = match path.rsplit_once('.') {
            Some(pair) => pair,
            None => continue,
        };
        if sec.starts_with("agents.") && !path.starts_with(&selected) {
            continue;
        }
        if sec != section {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&format!("[{sec}]\n"));
            section = sec.to_string();
        }
        let line = format!("{key} = {}", entry.value);
        if show_origin {
            out.push_str(&format!("{line:<48} # {}\n", entry.origin));
        } else {
            out.push_str(&line);
            out.push('\n');
        }
    }
    let a = &settings.agent;
    out.push_str(&format!(
        "\n# selected agent: {} (kind {}, interface {}), cwd {}\n# prompts: {} mode from {}\n",
        a.name,
        a.kind.as_str(),
        a.interface.as_str(),
        a.cwd.display(),
        settings.mode.as_str(),
        settings.prompt_file.display()
    ));
    out.push_str(&gates::gate_order(settings));
    out
}

#[cfg(test)]
mod tests;

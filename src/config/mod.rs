//! Configuration: built-in defaults, the project file, a preset, the environment, flags and
//! agent args, layered in that order (D8) and validated before anything starts (D6).
//!
//! This file holds the validated types (`Settings` and its parts, the config's enums, the
//! `Invocation`) and `config check`'s rendering; `resolution` layers and validates them
//! (`resolve`), `reader` reads typed values out of the layers, `agent` resolves one agent
//! table.

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

mod agent;
mod reader;
mod resolution;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use agent::agent_settings;
pub use layers::{Layers, Origin, Value};
use reader::Reader;
pub use resolution::resolve;

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

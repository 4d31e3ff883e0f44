//! The configuration schema: every key, its type, constraint, default and one line of help.
//!
//! One table drives validation, `looper config check`, the starter file and the README's
//! reference, so a key cannot be documented in one place and forgotten in another.

/// The longest duration any `*_seconds` key (or seconds flag) accepts: about 31 years. Far
/// beyond any real run, and far below what makes timer arithmetic overflow (a value like
/// `1e20` passed validation once and then panicked in the driver).
pub const MAX_SECONDS: f64 = 1e9;

/// What a key accepts. Validation messages are derived from this.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// Any string, possibly empty.
    Str,
    /// A string that must not be empty.
    NonEmptyStr,
    /// A path; empty means "unset" when `optional`.
    Path {
        optional: bool,
    },
    /// One of a fixed set of words.
    Choice(&'static [&'static str]),
    /// A regular expression compiled at load; empty means "off" when `optional`.
    Regex {
        optional: bool,
    },
    /// A whole number `>= min`.
    Int {
        min: i64,
    },
    /// A finite number `> min` (exclusive) or `>= min`.
    Num {
        min: f64,
        exclusive: bool,
    },
    /// A percentage: a finite number from 0 to 100.
    Percent,
    /// A duration in seconds, `> min` (exclusive) or `>= min`, at most [`MAX_SECONDS`]: it
    /// becomes a `Duration` once, here, and nothing downstream converts or clamps again.
    Seconds {
        min: f64,
        exclusive: bool,
    },
    Bool,
    /// An array of strings (may be empty).
    StrList,
    /// An array of regular expressions.
    RegexList,
    /// A command template: non-empty array of strings with known `{placeholders}`.
    Template,
    /// A table of string values (environment variables).
    Env,
    /// An array of words, each one of a fixed set (may be empty).
    ChoiceList(&'static [&'static str]),
    /// An argv template (no shell) using only the given `{placeholders}`; `[]` is off.
    Argv(&'static [&'static str]),
}

impl Kind {
    /// The "expected ..." half of an error message.
    pub fn expected(&self) -> String {
        match self {
            Kind::Str => "a string".into(),
            Kind::NonEmptyStr => "a non-empty string".into(),
            Kind::Path { optional: true } => "a path string (\"\" for none)".into(),
            Kind::Path { optional: false } => "a non-empty path string".into(),
            Kind::Choice(words) => format!(
                "one of {}",
                words
                    .iter()
                    .map(|w| format!("\"{w}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Kind::Regex { optional: true } => {
                "a valid regular expression (\"\" to turn it off)".into()
            }
            Kind::Regex { optional: false } => "a non-empty, valid regular expression".into(),
            Kind::Int { min } => format!("a whole number >= {min}"),
            Kind::Num {
                min,
                exclusive: true,
            } => format!("a finite number > {min}"),
            Kind::Num {
                min,
                exclusive: false,
            } => format!("a finite number >= {min}"),
            Kind::Percent => "a number >= 0 and <= 100".into(),
            Kind::Seconds {
                min,
                exclusive: true,
            } => format!("a number of seconds > {min} and <= {MAX_SECONDS}"),
            Kind::Seconds {
                min,
                exclusive: false,
            } => format!("a number of seconds >= {min} and <= {MAX_SECONDS}"),
            Kind::Bool => "true or false".into(),
            Kind::StrList => "an array of strings".into(),
            Kind::RegexList => "an array of valid regular expressions".into(),
            Kind::Template => {
                "a non-empty array of strings using only the placeholders {prompt}, {session}, {session_id}, {loop}, {prompt_index}, {label}, {run_dir}".into()
            }
            Kind::Env => "a table of string values".into(),
            Kind::ChoiceList(words) => format!(
                "an array of {}",
                words
                    .iter()
                    .map(|w| format!("\"{w}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Kind::Argv(names) => format!(
                "an array of strings (argv, no shell; [] for none) using only the placeholders {}",
                names
                    .iter()
                    .map(|n| format!("{{{n}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// The TOML-ish type name shown in `config check` and the README.
    pub fn type_name(&self) -> &'static str {
        match self {
            Kind::Str | Kind::NonEmptyStr | Kind::Path { .. } | Kind::Choice(_) => "string",
            Kind::Regex { .. } => "string (regex)",
            Kind::Int { .. } => "integer",
            Kind::Num { .. } | Kind::Seconds { .. } | Kind::Percent => "number",
            Kind::Bool => "boolean",
            Kind::StrList | Kind::Template | Kind::ChoiceList(_) | Kind::Argv(_) => {
                "array of strings"
            }
            Kind::RegexList => "array of strings (regex)",
            Kind::Env => "table of strings",
        }
    }
}

/// A default value as written in TOML.
#[derive(Clone, Copy, Debug)]
pub enum DefaultValue {
    Str(&'static str),
    Int(i64),
    Num(f64),
    Bool(bool),
    EmptyList,
    /// No value; the key is unset unless configured.
    None,
}

#[derive(Clone, Copy, Debug)]
pub struct KeySpec {
    pub name: &'static str,
    pub kind: Kind,
    pub default: DefaultValue,
    pub help: &'static str,
}

const fn key(name: &'static str, kind: Kind, default: DefaultValue, help: &'static str) -> KeySpec {
    KeySpec {
        name,
        kind,
        default,
        help,
    }
}

pub const MODES: &[&str] = &["single", "sequence"];
pub const KINDS: &[&str] = &["codex", "claude", "gemini", "generic"];
pub const INTERFACES: &[&str] = &["json", "hybrid"];
pub const LAYOUTS: &[&str] = &["auto", "single", "split"];
pub const WORKTREE_CLEANUPS: &[&str] = crate::engine::worktree::CleanupPolicy::WORDS;
pub const DAILY_BUDGET_ACTIONS: &[&str] = &["wait", "stop"];

pub const DEFAULT_STOP_PATTERNS: &[&str] = &[
    r"rate[\s_-]*limit(?:ed|ing)?",
    r"\b429\b",
    r"too many requests",
    r"retry[\s_-]*after",
    r"back[\s_-]*off",
    r"quota exceeded",
    r"temporarily unavailable",
    r"overloaded",
    r"timed?\s*out",
    r"deadline exceeded",
    r"request aborted",
    r"high demand",
    r"at capacity",
    r"service unavailable",
    r"internal server error",
    r"\b(?:500|502|503|504|529)\b",
    r"usage limit",
    r"resource[\s_-]*(?:has been )?exhausted",
];

use DefaultValue as D;
use Kind as K;

/// Keys of the `[looper]` table, in the order the starter file and `config check` show them.
pub const LOOPER_KEYS: &[KeySpec] = &[
    key(
        "default_agent",
        K::NonEmptyStr,
        D::Str("codex"),
        "Agent table used when neither --agent nor a wrapper name chooses one.",
    ),
    key(
        "mode",
        K::Choice(MODES),
        D::Str("single"),
        "single: the whole prompt file is one prompt; sequence: split on separator lines.",
    ),
    key(
        "prompt_file",
        K::Path { optional: false },
        D::Str("PROMPT.md"),
        "Prompt file, relative to the directory the looper starts in.",
    ),
    key(
        "separator",
        K::Regex { optional: false },
        D::Str(r"^---\s*$"),
        "Sequence-mode separator, matched per line.",
    ),
    key(
        "timeout_seconds",
        K::Seconds {
            min: 0.0,
            exclusive: true,
        },
        D::Num(7200.0),
        "Per-prompt wall-clock limit for the agent.",
    ),
    key(
        "sleep_seconds",
        K::Seconds {
            min: 0.0,
            exclusive: false,
        },
        D::Num(2.0),
        "Pause between completed loops (0 allowed).",
    ),
    key(
        "fresh_session_per_loop",
        K::Bool,
        D::Bool(true),
        "Start a new agent session every loop; false reuses one session for the run.",
    ),
    key(
        "reload_prompt_each_loop",
        K::Bool,
        D::Bool(true),
        "Re-read the prompt file before every loop.",
    ),
    key(
        "max_loops",
        K::Int { min: 0 },
        D::Int(0),
        "Stop after this many loops; 0 is unlimited.",
    ),
    key(
        "max_transient_retries",
        K::Int { min: 0 },
        D::Int(12),
        "Cap on transient (non rate-limit) retries of one prompt; 0 is unlimited.",
    ),
    key(
        "retry_notify_after_seconds",
        K::Seconds {
            min: 0.0,
            exclusive: false,
        },
        D::Num(300.0),
        "tmux notification for retry waits at least this long; 0 disables.",
    ),
    key(
        "retry_backoff_base_seconds",
        K::Seconds {
            min: 0.0,
            exclusive: true,
        },
        D::Num(5.0),
        "First retry wait when the provider gives no delay; doubles each attempt, with jitter.",
    ),
    key(
        "retry_backoff_max_seconds",
        K::Seconds {
            min: 0.0,
            exclusive: true,
        },
        D::Num(600.0),
        "Longest backoff wait when the provider gives no delay.",
    ),
    key(
        "rate_limit_max_wait_seconds",
        K::Seconds {
            min: 0.0,
            exclusive: true,
        },
        D::Num(21600.0),
        "Longest wait honoured from a provider's retry delay.",
    ),
    key(
        "log_dir",
        K::Path { optional: false },
        D::Str(".agent-looper/runs"),
        "Where run directories are created.",
    ),
    key(
        "stop_patterns",
        K::RegexList,
        D::None,
        "Error patterns (case-insensitive) matched on error channels; replaces the built-in list; [] turns pattern matching off.",
    ),
    key(
        "kill_on_stop_pattern",
        K::Bool,
        D::Bool(true),
        "Terminate the agent as soon as an error pattern is seen.",
    ),
    key(
        "ignore_nonzero",
        K::Bool,
        D::Bool(false),
        "Continue after a nonzero agent exit.",
    ),
    key(
        "scan_stdout_for_stop_patterns",
        K::Bool,
        D::Bool(false),
        "Also match stop patterns on plain stdout lines (all agents).",
    ),
    key(
        "completion_enabled",
        K::Bool,
        D::Bool(false),
        "Stop when the agent's own output matches completion_marker.",
    ),
    key(
        "completion_marker",
        K::Regex { optional: false },
        D::Str(r"EXIT_SIGNAL:\s*true"),
        "Completion regex, matched on the agent's own output only.",
    ),
    key(
        "completion_streak",
        K::Int { min: 1 },
        D::Int(1),
        "Consecutive completed loops with the marker needed to stop.",
    ),
    key(
        "plan_file",
        K::Path { optional: true },
        D::Str(""),
        "Markdown checklist (GitHub task lists, any list form); the marker counts only when no open task is left.",
    ),
    key(
        "plan_forbid_removal",
        K::Bool,
        D::Bool(false),
        "Plan integrity: a loop whose open tasks disappeared without being ticked is not complete.",
    ),
    key(
        "completion_must_be_last",
        K::Bool,
        D::Bool(false),
        "The marker counts only on the last non-empty line of the agent's final message.",
    ),
    key(
        "backup_enabled",
        K::Bool,
        D::Bool(false),
        "Create a git backup branch before each loop.",
    ),
    key(
        "backup_prefix",
        K::NonEmptyStr,
        D::Str("looper-backup"),
        "Backup branch namespace.",
    ),
    key(
        "backup_keep",
        K::Int { min: 0 },
        D::Int(10),
        "Keep the newest N backup branches of the namespace; 0 keeps all.",
    ),
    key(
        "backup_dirty",
        K::Bool,
        D::Bool(false),
        "Backups snapshot dirty and untracked files too (a commit on top of HEAD; index and worktree untouched).",
    ),
    key(
        "cb_no_progress",
        K::Int { min: 0 },
        D::Int(0),
        "Stop after N loops with no git workspace change; 0 is off.",
    ),
    key(
        "cb_output_decline",
        K::Int { min: 0 },
        D::Int(0),
        "Stop after N loops in a row whose output is smaller than the previous loop's; 0 is off.",
    ),
    key(
        "cb_output_match_pattern",
        K::Regex { optional: true },
        D::Str(""),
        "Stop when the agent's output matches this regex for cb_output_match_repeats loops.",
    ),
    key(
        "cb_output_match_repeats",
        K::Int { min: 1 },
        D::Int(1),
        "Consecutive matching loops before cb_output_match_pattern stops.",
    ),
    key(
        "max_runtime_seconds",
        K::Seconds {
            min: 0.0,
            exclusive: false,
        },
        D::Num(0.0),
        "Budget: wall clock for the whole run, waits included; 0 is unlimited.",
    ),
    key(
        "max_tokens",
        K::Int { min: 0 },
        D::Int(0),
        "Budget: total tokens the agents report; 0 is unlimited.",
    ),
    key(
        "max_cost_usd",
        K::Num {
            min: 0.0,
            exclusive: false,
        },
        D::Num(0.0),
        "Budget: total cost in USD the agents report; 0 is unlimited.",
    ),
    key(
        "daily_max_tokens",
        K::Int { min: 0 },
        D::Int(0),
        "Machine-wide budget: tokens reported today (local time) by every run on this machine, checked before each loop; 0 is unlimited.",
    ),
    key(
        "daily_max_cost_usd",
        K::Num {
            min: 0.0,
            exclusive: false,
        },
        D::Num(0.0),
        "Machine-wide budget: cost in USD reported today (local time) by every run on this machine, checked before each loop; 0 is unlimited.",
    ),
    key(
        "daily_budget_action",
        K::Choice(DAILY_BUDGET_ACTIONS),
        D::Str("wait"),
        "When a daily budget is reached: wait for the next day (local midnight), or stop (exit 3).",
    ),
    key(
        "min_headroom_percent",
        K::Percent,
        D::Num(0.0),
        "Hold new loops while a usage window of the agent's account is more than 100 - N percent used, until it resets; 0 is off.",
    ),
    key(
        "terminate_grace_seconds",
        K::Seconds {
            min: 0.0,
            exclusive: false,
        },
        D::Num(5.0),
        "After SIGTERM to the agent's group, wait this long (still reading output) before SIGKILL.",
    ),
    key(
        "pipe_leak_timeout_seconds",
        K::Seconds {
            min: 0.0,
            exclusive: false,
        },
        D::Num(1.0),
        "After the agent exits, how long a grandchild may hold its output open before the group is killed.",
    ),
    key(
        "tmux_layout",
        K::Choice(LAYOUTS),
        D::Str("auto"),
        "auto: split inside tmux; single: one pane; split: supervisor and live view.",
    ),
    key(
        "hold_on_stop",
        K::Bool,
        D::Bool(false),
        "Wait for Enter before exiting (keeps a tmux pane readable).",
    ),
    key(
        "keep_agent_pane",
        K::Bool,
        D::Bool(false),
        "Hybrid: leave the agent pane open when the run ends.",
    ),
    key(
        "worktree",
        K::Bool,
        D::Bool(false),
        "Run in a git worktree of its own, on a new branch (looper/<label>), under .agent-looper/worktrees/.",
    ),
    key(
        "worktree_cleanup",
        K::Choice(WORKTREE_CLEANUPS),
        D::Str("auto"),
        "At the run's end: auto keeps a worktree with new commits or changes and removes an untouched one; keep; remove (never a dirty one, never commits no other branch has).",
    ),
    key(
        "worktree_base",
        K::Str,
        D::Str(""),
        "The revision a worktree's branch starts from; \"\" is HEAD of the checkout the looper starts in.",
    ),
    key(
        "worktree_trust",
        K::Bool,
        D::Bool(false),
        "Hybrid: record folder trust in claude's or codex's config for the worktrees the looper creates (removed with them).",
    ),
];

/// Keys of an `[agents.<name>]` table. Defaults come from the built-in agent of the same kind.
pub const AGENT_KEYS: &[KeySpec] = &[
    key(
        "kind",
        K::Choice(KINDS),
        D::None,
        "codex, claude, gemini or generic (a command template).",
    ),
    key(
        "interface",
        K::Choice(INTERFACES),
        D::None,
        "json: a subprocess per prompt; hybrid: the agent's TUI in a tmux pane (claude, codex).",
    ),
    key(
        "executable",
        K::NonEmptyStr,
        D::None,
        "The agent program for built-in kinds (default: the kind's name on PATH).",
    ),
    key(
        "cwd",
        K::Path { optional: false },
        D::Str("."),
        "Agent working directory, relative to where the looper starts; --cwd overrides.",
    ),
    key(
        "env",
        K::Env,
        D::None,
        "Extra environment variables for the agent.",
    ),
    key(
        "extra_args",
        K::StrList,
        D::EmptyList,
        "Arguments added to the built-in command (before --model/--effort).",
    ),
    key(
        "model",
        K::Str,
        D::None,
        "Adds --model <value> (built-in kinds).",
    ),
    key(
        "effort",
        K::Str,
        D::None,
        "Adds the kind's effort flag (claude --effort, codex model_reasoning_effort).",
    ),
    key(
        "interactive_command",
        K::StrList,
        D::None,
        "Hybrid: the pane command, replacing the built-in one entirely.",
    ),
    key(
        "first_command",
        K::Template,
        D::None,
        "Template for the first prompt of a session.",
    ),
    key(
        "resume_command",
        K::Template,
        D::None,
        "Template for later prompts of a session.",
    ),
    key(
        "stop_patterns",
        K::RegexList,
        D::None,
        "Per-agent replacement for looper.stop_patterns.",
    ),
    key(
        "scan_stdout_for_stop_patterns",
        K::Bool,
        D::None,
        "Also match stop patterns on plain stdout lines of this agent.",
    ),
    key(
        "account",
        K::NonEmptyStr,
        D::None,
        "The account (login) this agent uses, shared by every looper on the machine; default: what selects the login (claude: CLAUDE_CONFIG_DIR or HOME; codex: CODEX_HOME or HOME; gemini: GEMINI_CLI_HOME or HOME).",
    ),
    key(
        "min_headroom_percent",
        K::Percent,
        D::None,
        "This agent's own looper.min_headroom_percent.",
    ),
];

pub const GATE_WHEN: &[&str] = &["completion", "every_loop"];
pub const DIFF_SINCE: &[&str] = &["run", "loop"];

/// Keys of the `[verify]` table: a command whose success completion needs (issue 15).
pub const VERIFY_KEYS: &[KeySpec] = &[
    key(
        "command",
        K::StrList,
        D::EmptyList,
        "The verify command as argv, run without a shell ([\"sh\", \"-c\", \"...\"] for one); [] turns the gate off.",
    ),
    key(
        "cwd",
        K::Path { optional: true },
        D::Str(""),
        "Where it runs, relative to where the looper starts (\"\": the agent's cwd).",
    ),
    key(
        "timeout_seconds",
        K::Seconds {
            min: 0.0,
            exclusive: true,
        },
        D::Num(1800.0),
        "Wall-clock limit; a verify still running then is stopped like an agent and fails.",
    ),
    key(
        "when",
        K::Choice(GATE_WHEN),
        D::Str("completion"),
        "completion: when the marker is seen and the plan gate passes; every_loop: after every loop.",
    ),
    key(
        "pass_regex",
        K::Regex { optional: true },
        D::Str(""),
        "A pass also needs this regex to match its output.",
    ),
    key(
        "count_regex",
        K::Regex { optional: true },
        D::Str(""),
        "A regex with one capture group: the count it captures (last match) is checked against min_count.",
    ),
    key(
        "min_count",
        K::Int { min: 0 },
        D::Int(0),
        "A pass needs count_regex to capture at least this many (a suite that shrank fails); 0 is off.",
    ),
    key(
        "feedback",
        K::Bool,
        D::Bool(true),
        "A failing verify's output tail goes into the next prompt, once.",
    ),
    key(
        "cb_verify_failures",
        K::Int { min: 0 },
        D::Int(0),
        "Stop after N consecutive failing verifies (exit 3); 0 is off.",
    ),
];

/// Keys of the `[review]` table: a second agent that must approve the work (issue 15).
pub const REVIEW_KEYS: &[KeySpec] = &[
    key(
        "agent",
        K::Str,
        D::Str(""),
        "The reviewer's agent table (a different CLI than the maker is the point); \"\" turns the gate off.",
    ),
    key(
        "prompt_file",
        K::Path { optional: true },
        D::Str(""),
        "The review rubric, with {goal}, {diff}, {diff_stat}, {diff_file}, {verify}, {loop}; \"\": the built-in one.",
    ),
    key(
        "when",
        K::Choice(GATE_WHEN),
        D::Str("completion"),
        "completion: when the marker is seen and the plan and verify gates pass; every_loop: after every loop.",
    ),
    key(
        "approve_on",
        K::Regex { optional: false },
        D::Str(r"VERDICT:\s*APPROVE"),
        "Approval regex, matched on the reviewer's own words only.",
    ),
    key(
        "max_rounds",
        K::Int { min: 0 },
        D::Int(3),
        "Stop after this many rejections in the run (exit 3); 0 is unlimited.",
    ),
    key(
        "diff_since",
        K::Choice(DIFF_SINCE),
        D::Str("run"),
        "The diff the reviewer sees: since the run began, or since the loop began.",
    ),
    key(
        "timeout_seconds",
        K::Seconds {
            min: 0.0,
            exclusive: true,
        },
        D::Num(1800.0),
        "Wall-clock limit for one review.",
    ),
];

pub const PLACEHOLDERS: &[&str] = &[
    "prompt",
    "session",
    "session_id",
    "loop",
    "prompt_index",
    "label",
    "run_dir",
];

/// `[human]`: asks and approval gates (issue 17).
pub const HUMAN_KEYS: &[KeySpec] = &[
    key(
        "on_ask",
        K::Choice(&["wait", "continue"]),
        D::Str("wait"),
        "wait: an unanswered `looper ask` holds the run at the next loop boundary; continue: the run goes on and the answer reaches the prompt after it comes.",
    ),
    key(
        "require_approval",
        K::ChoiceList(APPROVAL_GATES),
        D::EmptyList,
        "Gates that wait for `looper approve` / `looper reject`: completion (before the run may stop as complete), every_n_loops (every approval_every loops).",
    ),
    key(
        "approval_every",
        K::Int { min: 0 },
        D::Int(0),
        "With every_n_loops: wait for an approval after every N loops (N >= 1).",
    ),
];

pub const APPROVAL_GATES: &[&str] = &["completion", "every_n_loops"];

/// What a notification can be fired for (`[notify].on`).
pub const NOTIFY_EVENTS: &[&str] = &[
    "needs_input",
    "stopped",
    "completed",
    "error",
    "breaker",
    "long_retry_wait",
];

/// The placeholders of `[notify].command`.
pub const NOTIFY_PLACEHOLDERS: &[&str] = &[
    "event",
    "label",
    "title",
    "body",
    "run_dir",
    "stop_reason",
    "question",
    "exit_code",
];

/// `[notify]`: a command run when the run enters a state (D33).
pub const NOTIFY_KEYS: &[KeySpec] = &[
    key(
        "command",
        K::Argv(NOTIFY_PLACEHOLDERS),
        D::EmptyList,
        "The notifier's argv (no shell unless you write one), run in its own process group.",
    ),
    key(
        "on",
        K::ChoiceList(NOTIFY_EVENTS),
        D::EmptyList,
        "When to run it, once per entry into the state: needs_input (an ask or approval waits for a person), stopped (any end), completed, error, breaker (a breaker or budget), long_retry_wait (a retry wait of at least retry_notify_after_seconds).",
    ),
    key(
        "timeout_seconds",
        K::Seconds {
            min: 0.0,
            exclusive: true,
        },
        D::Num(10.0),
        "The notifier's group is killed after this long; a failure is recorded, never a stop.",
    ),
];

/// A table of plain keys (`[looper]`, and the tables of later features), validated and
/// documented from its key list.
#[derive(Clone, Copy, Debug)]
pub struct Section {
    pub name: &'static str,
    pub keys: &'static [KeySpec],
    /// One line for the README's reference.
    pub about: &'static str,
}

/// Every table of plain keys, in the order the README documents them. `[agents.<name>]` is
/// separate: it holds one table per agent.
pub const SECTIONS: &[Section] = &[
    Section {
        name: "looper",
        keys: LOOPER_KEYS,
        about: "the loop, its gates, breakers, budgets and records",
    },
    Section {
        name: "verify",
        keys: VERIFY_KEYS,
        about: "the verify gate: a command that must pass before completion counts",
    },
    Section {
        name: "review",
        keys: REVIEW_KEYS,
        about: "the reviewer gate: another agent that must approve before completion counts",
    },
    Section {
        name: "human",
        keys: HUMAN_KEYS,
        about: "people in the loop: asks and approval gates",
    },
    Section {
        name: "notify",
        keys: NOTIFY_KEYS,
        about: "a command run when the run needs a person, stops or waits long",
    },
];

pub fn section(name: &str) -> Option<&'static Section> {
    SECTIONS.iter().find(|s| s.name == name)
}

pub fn looper_key(name: &str) -> Option<&'static KeySpec> {
    LOOPER_KEYS.iter().find(|k| k.name == name)
}

pub fn agent_key(name: &str) -> Option<&'static KeySpec> {
    AGENT_KEYS.iter().find(|k| k.name == name)
}

/// The closest known name, for "did you mean" hints.
pub fn suggest<'a>(unknown: &str, known: impl IntoIterator<Item = &'a str>) -> Option<String> {
    known
        .into_iter()
        .map(|k| (strsim::jaro_winkler(unknown, k), k))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k.to_string())
}

/// The README's configuration reference, generated from this table (a test keeps the
/// README in step).
pub fn markdown_reference() -> String {
    fn default_text(d: DefaultValue) -> String {
        match d {
            DefaultValue::Str("") => "`\"\"`".into(),
            DefaultValue::Str(s) => format!("`{}`", toml::Value::String(s.into())),
            DefaultValue::Int(i) => format!("`{i}`"),
            DefaultValue::Num(n) => format!("`{}`", crate::text::format_num(n)),
            DefaultValue::Bool(b) => format!("`{b}`"),
            DefaultValue::EmptyList => "`[]`".into(),
            DefaultValue::None => "—".into(),
        }
    }
    let mut out = String::new();
    for (i, section) in SECTIONS.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let about = if section.name == "looper" {
            String::new()
        } else {
            format!(": {}", section.about)
        };
        out.push_str(&format!(
            "`[{}]`{about}\n\n| key | type | default | constraint and meaning |\n|---|---|---|---|\n",
            section.name
        ));
        for k in section.keys {
            out.push_str(&format!(
                "| `{}` | {} | {} | {}; {} |\n",
                k.name,
                k.kind.type_name(),
                default_text(k.default),
                k.kind.expected(),
                k.help
            ));
        }
    }
    out.push_str("\n`[agents.<name>]` (built-in: `codex`, `claude`, `gemini`; any other name is a custom agent)\n\n| key | type | constraint and meaning |\n|---|---|---|\n");
    for k in AGENT_KEYS {
        out.push_str(&format!(
            "| `{}` | {} | {}; {} |\n",
            k.name,
            k.kind.type_name(),
            k.kind.expected(),
            k.help
        ));
    }
    out
}

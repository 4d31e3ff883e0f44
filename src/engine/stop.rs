//! Why a run stopped: the reason text (the reference's wording), the status, the exit code (D5).

use crate::error::exit_code;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Status {
    Running,
    Retrying,
    Paused,
    /// An ask holds the run at a loop boundary until a person answers (issue 17).
    WaitingForAnswer,
    /// An approval gate holds the run until `looper approve` or `looper reject`.
    WaitingForApproval,
    Stopped,
    Error,
    Interrupted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn is_active(self) -> bool {
        matches!(
            self,
            Status::Running
                | Status::Retrying
                | Status::Paused
                | Status::WaitingForAnswer
                | Status::WaitingForApproval
        )
    }
}

/// What kind of ending a run had, recorded as `stop_kind` beside the worded `stop_reason`:
/// tools decide on this (`control stop --wait`'s exit code), never on the wording. The one
/// table of statuses and exit codes (D5) is keyed by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopKind {
    MaxLoops,
    DryRun,
    Completion,
    Control,
    NoProgress,
    OutputDecline,
    OutputMatch,
    /// `cb_verify_failures` consecutive failing verifies.
    VerifyFailures,
    /// The reviewer rejected the work `max_rounds` times.
    ReviewRejected,
    MaxRuntime,
    TokenBudget,
    CostBudget,
    /// The machine-wide daily budget, with `daily_budget_action = "stop"`.
    DailyBudget,
    TransientCap,
    Terminal,
    Timeout,
    NonzeroExit,
    KilledBySignal,
    SpawnFailed,
    PromptReload,
    PlanFileMissing,
    Signal,
    Internal,
    /// Closed by `--repair-stale` (or `control stop --now`) after its supervisor died.
    External,
    /// A kind written by a newer looper.
    #[serde(other)]
    Unknown,
}

impl StopKind {
    /// D5, in one place.
    pub fn exit_code(self) -> i32 {
        use StopKind::*;
        match self {
            MaxLoops | DryRun | Completion | Control => exit_code::OK,
            NoProgress | OutputDecline | OutputMatch | VerifyFailures | ReviewRejected
            | MaxRuntime | TokenBudget | CostBudget | DailyBudget => exit_code::BREAKER,
            TransientCap | Terminal | NonzeroExit | KilledBySignal | SpawnFailed | Internal
            | External | Unknown => exit_code::AGENT_FAILED,
            Timeout => exit_code::TIMEOUT,
            PromptReload | PlanFileMissing => exit_code::USAGE,
            Signal => exit_code::INTERRUPTED,
        }
    }

    pub fn status(self) -> Status {
        use StopKind::*;
        match self {
            MaxLoops | DryRun | Completion | Control | NoProgress | OutputDecline | OutputMatch
            | VerifyFailures | ReviewRejected | MaxRuntime | TokenBudget | CostBudget
            | DailyBudget | External => Status::Stopped,
            Signal => Status::Interrupted,
            _ => Status::Error,
        }
    }
}

/// Every way a run can end. `reason()` gives the recorded `stop_reason`.
#[derive(Clone, Debug, PartialEq)]
pub enum StopReason {
    MaxLoops(u64),
    DryRun,
    Completion,
    NoProgress(u64),
    OutputDecline(u64),
    OutputMatch(u64),
    VerifyFailures(u64),
    ReviewRejected(u64),
    MaxRuntime(f64),
    TokenBudget {
        used: u64,
        max: u64,
    },
    CostBudget {
        used: f64,
        max: f64,
    },
    /// What is over the machine-wide daily budget, worded.
    DailyBudget(String),
    Control {
        action: String,
        reason: Option<String>,
    },
    TransientCap {
        max: u64,
        reason: String,
    },
    /// A terminal error signal (stop pattern, fatal structured error).
    Terminal(String),
    Timeout(f64),
    NonzeroExit(i32),
    KilledBySignal(i32),
    SpawnFailed(String),
    PromptReload(String),
    PlanFileMissing(String),
    Signal(&'static str),
    /// The supervisor could not keep working (I/O, git, tmux).
    Internal(String),
}

impl StopReason {
    pub fn reason(&self) -> String {
        match self {
            StopReason::MaxLoops(n) => format!("max loops reached: {n}"),
            StopReason::DryRun => "dry run complete".into(),
            StopReason::Completion => "completion marker".into(),
            StopReason::NoProgress(n) => format!("no git progress for {n} loop(s)"),
            StopReason::OutputDecline(n) => format!("output declined for {n} consecutive loop(s)"),
            StopReason::OutputMatch(n) => {
                format!("output matched configured pattern for {n} loop(s)")
            }
            StopReason::VerifyFailures(n) => format!("verify failed {n} time(s) in a row"),
            StopReason::ReviewRejected(n) => format!("reviewer rejected the work {n} time(s)"),
            StopReason::MaxRuntime(s) => format!("max runtime reached: {}", fmt_secs(*s)),
            StopReason::TokenBudget { used, max } => {
                format!("token budget reached: {used} tokens used (max {max})")
            }
            StopReason::CostBudget { used, max } => {
                format!("cost budget reached: ${used:.4} used (max ${max:.4})")
            }
            StopReason::DailyBudget(what) => what.clone(),
            StopReason::Control { action, reason } => match reason {
                Some(r) if !r.is_empty() => format!("control {action}: {r}"),
                _ => format!("control {action}"),
            },
            StopReason::TransientCap { max, reason } => {
                format!("transient retry limit reached after {max} attempts: {reason}")
            }
            StopReason::Terminal(r) => r.clone(),
            StopReason::Timeout(s) => format!("local timeout after {} seconds", fmt_secs(*s)),
            StopReason::NonzeroExit(rc) => format!("command exited with code {rc}"),
            StopReason::KilledBySignal(sig) => {
                format!("command was killed by signal {sig} ({})", signal_name(*sig))
            }
            StopReason::SpawnFailed(e) => format!("failed to start agent: {e}"),
            StopReason::PromptReload(e) => format!("prompt reload failed: {e}"),
            StopReason::PlanFileMissing(p) => format!("plan file not found: {p}"),
            StopReason::Signal(name) => format!("interrupted by {name}"),
            StopReason::Internal(e) => format!("supervisor error: {e}"),
        }
    }

    pub fn kind(&self) -> StopKind {
        match self {
            StopReason::MaxLoops(_) => StopKind::MaxLoops,
            StopReason::DryRun => StopKind::DryRun,
            StopReason::Completion => StopKind::Completion,
            StopReason::NoProgress(_) => StopKind::NoProgress,
            StopReason::OutputDecline(_) => StopKind::OutputDecline,
            StopReason::OutputMatch(_) => StopKind::OutputMatch,
            StopReason::VerifyFailures(_) => StopKind::VerifyFailures,
            StopReason::ReviewRejected(_) => StopKind::ReviewRejected,
            StopReason::MaxRuntime(_) => StopKind::MaxRuntime,
            StopReason::TokenBudget { .. } => StopKind::TokenBudget,
            StopReason::CostBudget { .. } => StopKind::CostBudget,
            StopReason::DailyBudget(_) => StopKind::DailyBudget,
            StopReason::Control { .. } => StopKind::Control,
            StopReason::TransientCap { .. } => StopKind::TransientCap,
            StopReason::Terminal(_) => StopKind::Terminal,
            StopReason::Timeout(_) => StopKind::Timeout,
            StopReason::NonzeroExit(_) => StopKind::NonzeroExit,
            StopReason::KilledBySignal(_) => StopKind::KilledBySignal,
            StopReason::SpawnFailed(_) => StopKind::SpawnFailed,
            StopReason::PromptReload(_) => StopKind::PromptReload,
            StopReason::PlanFileMissing(_) => StopKind::PlanFileMissing,
            StopReason::Signal(_) => StopKind::Signal,
            StopReason::Internal(_) => StopKind::Internal,
        }
    }

    pub fn status(&self) -> Status {
        self.kind().status()
    }

    pub fn exit_code(&self) -> i32 {
        self.kind().exit_code()
    }

    /// The tmux window state the manual prescribes for this ending.
    pub fn window_state(&self) -> &'static str {
        if self.status() == Status::Stopped {
            "READY"
        } else {
            "ERR"
        }
    }
}

/// Seconds the way the reference prints them: `7200`, `0.5`.
pub fn fmt_secs(s: f64) -> String {
    crate::text::format_num(s)
}

/// Durations the way the reference prints them: `<60` seconds, then minutes, then hours.
pub fn fmt_duration(secs: f64) -> String {
    let g = |v: f64| {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    if secs < 60.0 {
        format!("{}s", g(secs))
    } else if secs < 3600.0 {
        format!("{}m", g(secs / 60.0))
    } else {
        format!("{}h", g(secs / 3600.0))
    }
}

pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        6 => "SIGABRT",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => "signal",
    }
}

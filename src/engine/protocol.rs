//! The engine's protocol: its settings, the inputs the driver feeds it and the effects it
//! asks for. Plain data, no behaviour.

use std::time::Duration;

use super::events::Event;
use super::events::Usage;
use super::human::{ApprovalRequest, HumanInput, HumanPolicy};
use super::retry::{ErrorSignal, RetryPolicy};
use super::stop::Status;
use super::stop::StopReason;

/// Gate and loop settings, already validated.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub label: String,
    pub max_loops: u64,
    /// Pause between loops (zero: none).
    pub sleep: Duration,
    pub fresh_session_per_loop: bool,
    pub reload_prompt_each_loop: bool,
    /// `Some(streak)` when completion detection is on.
    pub completion_streak: Option<u64>,
    pub plan_gate: bool,
    pub cb_no_progress: u64,
    pub cb_output_decline: u64,
    /// `Some(repeats)` when an output-match pattern is configured.
    pub output_match_repeats: Option<u64>,
    pub retry: RetryPolicy,
    pub ignore_nonzero: bool,
    /// Per-prompt limit; the driver enforces it, the engine words the stop.
    pub timeout: Duration,
    pub dry_run: bool,
    pub backup: bool,
    pub max_runtime: Option<Duration>,
    pub max_tokens: Option<u64>,
    pub max_cost_usd: Option<f64>,
    /// Agents given a session id up front (claude, gemini, generic); codex reports its own.
    pub preassign_session_ids: bool,
    /// The agent reliably keeps a session whose first prompt failed, so the retry resumes
    /// it (claude: `--session-id` of an existing session is refused). gemini 0.61 saves
    /// such a session or not depending on how it ended (a SIGTERM saves it, its own give-up
    /// does not), so neither `--resume` nor the same `--session-id` is safe: with `false`,
    /// a preassigned id whose first prompt failed is replaced by a new one for the retry.
    pub failed_start_keeps_session: bool,
    /// Asks and approval gates (issue 17).
    pub human: HumanPolicy,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ControlAction {
    StopAfterPrompt,
    StopAfterLoop,
    InterruptNow,
    Pause,
    Resume,
    /// A note to append once to the next prompt.
    Note,
}

impl ControlAction {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ControlCommand {
    pub id: String,
    pub action: ControlAction,
    pub reason: Option<String>,
    /// The note text for `Note`.
    pub note: Option<String>,
}

/// What one agent attempt did, as observed by the driver.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AttemptReport {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub spawn_error: Option<String>,
    pub output_bytes: u64,
    pub completion_seen: bool,
    pub output_match_seen: bool,
    pub session_id: Option<String>,
    pub usage: Usage,
    /// The first error signal that was not informational.
    pub error: Option<ErrorSignal>,
    pub dry_run: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BackupInfo {
    pub branch: String,
    pub commit: String,
    pub snapshot: bool,
    pub pruned: Vec<String>,
}

/// The driver's answers and the outside world's interruptions.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    Start,
    PromptsLoaded {
        count: usize,
    },
    PromptsFailed {
        error: String,
    },
    Fingerprint(Result<String, String>),
    BackupDone(Result<BackupInfo, String>),
    AttemptFinished(AttemptReport),
    WaitElapsed,
    PlanChecked(Result<usize, String>),
    Control(ControlCommand),
    /// A supervisor signal; `forceful` for a second Ctrl-C.
    Signal {
        name: &'static str,
        forceful: bool,
    },
    RuntimeExpired,
    /// The supervisor itself failed (records, I/O); the run must end.
    Failure(String),
    /// A person (or an agent's ask) through the run directory's asks (D31).
    Human(HumanInput),
}

/// A session as the engine tracks it.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionRef {
    /// `<label>-loop-NNNN`, or `<label>` when one session is reused.
    pub name: String,
    /// The agent's session or thread id, once known (or assigned up front).
    pub id: Option<String>,
    /// The agent has seen this session: later prompts resume it.
    pub resume: bool,
}

/// One agent attempt to carry out.
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptSpec {
    pub loop_number: u64,
    /// 1-based.
    pub prompt_index: usize,
    pub total_prompts: usize,
    pub attempt: u32,
    pub session: SessionRef,
    /// The feedback block for this prompt (D29): everything fed back since the last prompt,
    /// delimited and bounded.
    pub feedback: Option<String>,
    pub dry_run: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitPurpose {
    Retry,
    Sleep,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    Record(Event),
    /// Status shown between events (paused, retrying), for state.json and tmux.
    SetStatus(Status),
    LoadPrompts,
    Fingerprint,
    Backup {
        loop_number: u64,
    },
    RunAttempt(AttemptSpec),
    Wait {
        duration: Duration,
        purpose: WaitPurpose,
    },
    CheckPlan,
    /// Stop the running attempt's process group (graceful, or at once when `forceful`).
    Terminate {
        forceful: bool,
    },
    CancelWait,
    /// Write the approval request where `looper approve` and `looper status` find it.
    RequestApproval(ApprovalRequest),
    Finish(StopReason),
}

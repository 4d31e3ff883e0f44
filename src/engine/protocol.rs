//! The engine's protocol: its settings, the inputs the driver feeds it and the effects it
//! asks for. Plain data, no behaviour.

use std::time::Duration;

pub use super::events::AgentCli;
use super::events::Event;
pub use super::events::GateWhen;
use super::events::Usage;
use super::human::{ApprovalRequest, HumanInput, HumanPolicy};
pub use super::quota::{AccountFacts, AccountLimit, DailyBudget, DailyUsage, WindowFacts};
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
    /// Plan integrity: a loop whose open tasks disappeared without being ticked is not
    /// complete (`plan_forbid_removal`).
    pub plan_forbid_removal: bool,
    /// The verify gate (issue 15), when configured.
    pub verify: Option<VerifyGate>,
    /// The reviewer gate (issue 15), when configured.
    pub review: Option<ReviewGate>,
    /// Asks and approval gates (issue 17).
    pub human: HumanPolicy,
    /// The agent has an account whose shared record is read before every attempt (issue 18).
    pub account: bool,
    /// Hold new loops while a window of the account is more used than `100 - N` percent.
    pub min_headroom_percent: Option<f64>,
    /// The machine-wide daily budget, checked before every loop.
    pub daily: Option<DailyBudget>,
    /// The agent's CLI as found at the start (recorded in `run_started`).
    pub agent_cli: Option<AgentCli>,
}

/// The verify gate's settings, as the engine needs them.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifyGate {
    pub when: GateWhen,
    /// `pass_regex` is configured: a pass needs it to match.
    pub needs_pass_match: bool,
    /// A floor on the count captured by `count_regex` (a suite that shrank does not pass).
    pub min_count: Option<u64>,
    /// A failing verify's tail goes into the next prompt.
    pub feedback: bool,
    /// Stop after this many consecutive failing verifies (0: never).
    pub cb_failures: u64,
    /// The command's own limit; the driver enforces it, the engine words it.
    pub timeout: Duration,
}

/// The reviewer gate's settings, as the engine needs them.
#[derive(Clone, Debug, PartialEq)]
pub struct ReviewGate {
    pub when: GateWhen,
    /// Stop after this many rejections in the run (0: never).
    pub max_rounds: u64,
    /// The reviewer's kind takes a session id chosen up front (claude, gemini, generic).
    pub preassign_session_ids: bool,
    /// The reviewer's own limit; the driver enforces it, the engine words it.
    pub timeout: Duration,
}

/// A verify command to run at the end of a loop.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifySpec {
    pub loop_number: u64,
}

/// A reviewer to run at the end of a loop: always a fresh session of its own.
#[derive(Clone, Debug, PartialEq)]
pub struct ReviewSpec {
    pub loop_number: u64,
    /// 1-based: this is the run's n-th review.
    pub round: u64,
    pub session: SessionRef,
    /// One line on this loop's verify, for the reviewer's prompt (`{verify}`).
    pub verify: Option<String>,
}

/// What a verify command did, as observed by the driver. The engine decides the verdict.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VerifyReport {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub spawn_error: Option<String>,
    /// `pass_regex` matched the output.
    pub pass_matched: bool,
    /// The number `count_regex` captured (its last match).
    pub count: Option<u64>,
    /// The end of its output, bounded, for the feedback block.
    pub tail: String,
}

/// What a reviewer did, as observed by the driver.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReviewReport {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub spawn_error: Option<String>,
    /// `approve_on` matched the reviewer's own words.
    pub approved: bool,
    /// The reviewer's last message, bounded.
    pub text: String,
    pub usage: Usage,
    pub session_id: Option<String>,
    /// An error the reviewer's CLI reported (rate limit, API error), classified.
    pub error: Option<ErrorSignal>,
}

/// The plan file at a loop's end.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlanCheck {
    pub unchecked: usize,
    /// Open tasks at the loop's start that are gone now without having been ticked.
    pub removed: Vec<String>,
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
    /// A `Note` to paste into the agent's pane as `/btw` (not into the next prompt).
    pub btw: bool,
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
    /// The completion marker appeared although completion is off.
    pub marker_seen_while_off: bool,
    pub output_match_seen: bool,
    pub session_id: Option<String>,
    pub usage: Usage,
    /// The first error signal that was not informational.
    pub error: Option<ErrorSignal>,
    /// The agent's own last line on an error channel, for the record.
    pub last_error_line: Option<String>,
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
    PlanChecked(Result<PlanCheck, String>),
    VerifyFinished(VerifyReport),
    ReviewFinished(ReviewReport),
    Control(ControlCommand),
    /// The account's shared record, read before an attempt (an error: it could not be read,
    /// and the attempt goes ahead).
    AccountChecked(Result<AccountFacts, String>),
    /// What the machine spent today, read before a loop.
    DailyChecked(Result<DailyUsage, String>),
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
    /// Read the account's shared record (answered with `Input::AccountChecked`).
    CheckAccount,
    /// Sum what every run on the machine spent today (answered with `Input::DailyChecked`).
    CheckDailyBudget,
    /// Remember where this loop starts (HEAD for the reviewer's diff, the plan's open
    /// tasks for plan integrity); nothing is answered.
    MarkLoopStart {
        loop_number: u64,
    },
    RunVerify(VerifySpec),
    RunReview(ReviewSpec),
    /// Stop the running attempt's (or verify's, or reviewer's) process group (graceful, or at once when `forceful`).
    Terminate {
        forceful: bool,
    },
    CancelWait,
    /// Paste a `/btw` note into the hybrid pane now: the pane is between turns.
    PasteNote {
        id: String,
        text: String,
    },
    /// Write the approval request where `looper approve` and `looper status` find it.
    RequestApproval(ApprovalRequest),
    Finish(StopReason),
}

//! The typed events of a run (D21). The engine decides them; the run store writes each as
//! one `events.jsonl` line and folds it into `state.json`.

use serde::Serialize;

use super::feedback::FeedbackKind;
use super::human::ApprovalGate;
use super::retry::ErrorClass;

/// When a verify or review gate runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum GateWhen {
    /// When the completion marker was seen and the gates before it passed.
    Completion,
    /// At the end of every loop (the gates before it still have to pass).
    EveryLoop,
}

/// The gates at a loop's end, in the order they are judged (D28).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Gate {
    /// Open tasks left in the plan file.
    Plan,
    /// Open tasks removed from the plan without being ticked (`plan_forbid_removal`).
    PlanIntegrity,
    Verify,
    Review,
}

impl Gate {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One item of a delivered feedback block, as recorded.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FeedbackItem {
    pub id: String,
    pub kind: FeedbackKind,
}
use super::stop::{Status, StopKind};

/// Token and cost receipts reported by the agents (D16).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cost_usd: f64,
}

impl Usage {
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }

    pub fn add(&mut self, other: &Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cached_input_tokens += other.cached_input_tokens;
        self.cost_usd += other.cost_usd;
    }

    /// Take back what `add` added (a repeated receipt of one response).
    pub fn subtract(&mut self, other: &Usage) {
        self.input_tokens = self.input_tokens.saturating_sub(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_sub(other.output_tokens);
        self.cached_input_tokens = self
            .cached_input_tokens
            .saturating_sub(other.cached_input_tokens);
        self.cost_usd = (self.cost_usd - other.cost_usd).max(0.0);
    }

    pub fn is_empty(&self) -> bool {
        *self == Usage::default()
    }
}

/// The agent's CLI as the run found it (issue 18 item 5): the executable its commands
/// resolve to, what `--version` printed, and the file's identity, so a change between loops
/// (an auto-update) is noticed with one `stat`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct AgentCli {
    /// The resolved path (symlinks followed).
    pub path: String,
    /// The first line of `<path> --version` (built-in kinds), `None` when it printed nothing
    /// in time.
    pub version: Option<String>,
    pub size: Option<u64>,
    pub inode: Option<u64>,
    /// Modification time, epoch seconds.
    pub mtime: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, strum::IntoStaticStr)]
#[serde(tag = "event", rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Event {
    RunStarted {
        dry_run: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        agent_cli: Option<AgentCli>,
    },
    LoopStarted {
        #[serde(rename = "loop")]
        loop_number: u64,
        session: String,
        session_id: Option<String>,
        total_prompts: usize,
    },
    BackupCreated {
        #[serde(rename = "loop")]
        loop_number: u64,
        branch: String,
        commit: String,
        snapshot: bool,
        pruned: Vec<String>,
    },
    PromptStarted {
        #[serde(rename = "loop")]
        loop_number: u64,
        prompt_index: usize,
        total_prompts: usize,
        attempt: u32,
        session: String,
        session_id: Option<String>,
        resume: bool,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        notes: Vec<String>,
    },
    PromptCompleted {
        #[serde(rename = "loop")]
        loop_number: u64,
        prompt_index: usize,
        attempt: u32,
        returncode: Option<i32>,
        signal: Option<i32>,
        timed_out: bool,
        output_bytes: u64,
        completion_detected: bool,
        output_match_detected: bool,
        session_id: Option<String>,
        #[serde(skip_serializing_if = "Usage::is_empty")]
        usage: Usage,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_kind: Option<ErrorClass>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_seconds: Option<f64>,
        /// The agent's last words on an error channel (stderr, a structured error).
        #[serde(skip_serializing_if = "Option::is_none")]
        last_error_line: Option<String>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        dry_run: bool,
    },
    RetryWait {
        #[serde(rename = "loop")]
        loop_number: u64,
        prompt_index: usize,
        /// The attempt that will run after the wait.
        next_attempt: u32,
        retry_kind: ErrorClass,
        /// Retries of this kind for this prompt so far, including this one.
        retry_count: u64,
        wait_seconds: f64,
        provider_delay_seconds: Option<f64>,
        reason: String,
        retry_status: String,
    },
    /// A prompt is held back for the account or the daily budget (issue 18): the run waits
    /// like a retry (status `retrying`), interruptible, then checks again.
    QuotaWait {
        #[serde(rename = "loop")]
        loop_number: u64,
        /// The prompt that waits (0: the loop has not started it yet, a daily budget).
        prompt_index: usize,
        cause: super::quota::HoldCause,
        wait_seconds: f64,
        reason: String,
        retry_status: String,
    },
    LoopCompleted {
        #[serde(rename = "loop")]
        loop_number: u64,
        duration_seconds: f64,
        output_bytes: u64,
        completion_detected: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        plan_unchecked: Option<usize>,
        completion_blocked_by_plan: bool,
        /// The first gate that kept a seen marker from counting (D28), and why.
        #[serde(skip_serializing_if = "Option::is_none")]
        blocked_by: Option<Gate>,
        #[serde(skip_serializing_if = "Option::is_none")]
        blocked_reason: Option<String>,
        /// Open tasks that disappeared from the plan without being ticked (plan integrity).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        plan_removed: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        verify_passed: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        review_approved: Option<bool>,
        completion_streak: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        fingerprint: Option<String>,
        no_progress_count: u64,
        output_decline_count: u64,
        output_match_count: u64,
        #[serde(skip_serializing_if = "Usage::is_empty")]
        usage: Usage,
        #[serde(skip_serializing_if = "Usage::is_empty")]
        usage_total: Usage,
    },
    /// The verify command starts (its output goes to `loop-NNNN__verify.log`).
    VerifyStarted {
        #[serde(rename = "loop")]
        loop_number: u64,
        when: GateWhen,
    },
    VerifyCompleted {
        #[serde(rename = "loop")]
        loop_number: u64,
        exit_code: Option<i32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
        timed_out: bool,
        duration_seconds: f64,
        /// What `count_regex` captured.
        count: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        min_count: Option<u64>,
        pass: bool,
        /// Why it failed.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// Consecutive failing verifies so far (the `cb_verify_failures` breaker's count).
        consecutive_failures: u64,
    },
    /// The reviewer starts, in a fresh session (its output goes to `loop-NNNN__review.log`).
    ReviewStarted {
        #[serde(rename = "loop")]
        loop_number: u64,
        round: u64,
        when: GateWhen,
        session: String,
        session_id: Option<String>,
    },
    ReviewCompleted {
        #[serde(rename = "loop")]
        loop_number: u64,
        round: u64,
        /// `approve` or `reject`.
        verdict: String,
        exit_code: Option<i32>,
        duration_seconds: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        session_id: Option<String>,
        #[serde(skip_serializing_if = "Usage::is_empty")]
        usage: Usage,
        /// Rejections in the run so far (the `max_rounds` count).
        rejections: u64,
    },
    ControlCommandReceived {
        id: String,
        action: String,
        reason: Option<String>,
    },
    Paused {
        reason: Option<String>,
    },
    Resumed {
        reason: Option<String>,
    },
    NoteDelivered {
        id: String,
        #[serde(rename = "loop")]
        loop_number: u64,
        prompt_index: usize,
    },
    /// The agent printed the completion marker but completion is off: said once a run.
    CompletionMarkerIgnored {
        #[serde(rename = "loop")]
        loop_number: u64,
    },
    /// The feedback block went with this prompt (D29): what was in it, what was cut.
    FeedbackDelivered {
        #[serde(rename = "loop")]
        loop_number: u64,
        prompt_index: usize,
        items: Vec<FeedbackItem>,
        bytes: usize,
        cut: usize,
    },
    /// An agent asked a person something (issue 17, D31); `carried_from` names the run it
    /// was first asked in when a new run took it over.
    AskOpened {
        id: String,
        question: String,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        choices: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        carried_from: Option<String>,
    },
    /// A person answered; the answer goes into the next prompt (D29).
    AskAnswered {
        id: String,
        answer: String,
        actor: Option<String>,
    },
    /// The run holds at a loop boundary until these asks are answered.
    WaitingForAnswer {
        asks: Vec<String>,
    },
    /// An approval gate holds the run (D28: the last gate).
    ApprovalRequested {
        id: String,
        gate: ApprovalGate,
        #[serde(rename = "loop")]
        loop_number: u64,
        question: String,
    },
    ApprovalGiven {
        id: String,
        gate: ApprovalGate,
        actor: Option<String>,
    },
    /// The gate blocked: the completion streak is reset and the reason goes into the next
    /// prompt.
    ApprovalRejected {
        id: String,
        gate: ApprovalGate,
        reason: String,
        actor: Option<String>,
        completion_streak: u64,
    },
    RunStopped {
        status: Status,
        stop_reason: String,
        stop_kind: StopKind,
        exit_code: i32,
    },
}

impl Event {
    pub fn name(&self) -> &'static str {
        self.into()
    }
}

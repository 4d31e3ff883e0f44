//! The typed events of a run (D21). The engine decides them; the run store writes each as
//! one `events.jsonl` line and folds it into `state.json`.

use serde::Serialize;

use super::feedback::FeedbackKind;
use super::retry::ErrorClass;

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

#[derive(Clone, Debug, PartialEq, Serialize, strum::IntoStaticStr)]
#[serde(tag = "event", rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Event {
    RunStarted {
        dry_run: bool,
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
    LoopCompleted {
        #[serde(rename = "loop")]
        loop_number: u64,
        duration_seconds: f64,
        output_bytes: u64,
        completion_detected: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        plan_unchecked: Option<usize>,
        completion_blocked_by_plan: bool,
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

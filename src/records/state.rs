//! `state.json`: the latest snapshot of a run, with the reference's field names (a superset),
//! folded from the run's events so the snapshot can never disagree with the history.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::accounts::WindowRecord;
use super::events::{AgentRetry, SupervisorEvent};
use super::time;
use crate::engine::{AgentCli, Event, Gate, HoldCause, Status, StopKind, Usage};

/// The latest verify, as `state.json` keeps it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct VerifyLast {
    #[serde(rename = "loop")]
    pub loop_number: u64,
    /// `None` while it runs.
    pub pass: Option<bool>,
    pub exit_code: Option<i32>,
    pub count: Option<u64>,
    pub reason: Option<String>,
    pub duration_seconds: Option<f64>,
    pub consecutive_failures: u64,
    #[serde(with = "time::opt")]
    pub at: Option<DateTime<Utc>>,
}

/// The latest review, as `state.json` keeps it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ReviewLast {
    #[serde(rename = "loop")]
    pub loop_number: u64,
    pub round: u64,
    /// `approve`, `reject`, or `None` while it runs.
    pub verdict: Option<String>,
    pub reason: Option<String>,
    pub session_id: Option<String>,
    pub rejections: u64,
    pub duration_seconds: Option<f64>,
    #[serde(with = "time::opt")]
    pub at: Option<DateTime<Utc>>,
}

/// A CLI's own retry while it goes on (`agent_retry`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct AgentRetryState {
    pub agent: String,
    /// What the CLI said (its fields sit beside `agent` and `at` in the JSON).
    #[serde(flatten)]
    pub retry: AgentRetry,
    #[serde(with = "time::opt")]
    pub at: Option<DateTime<Utc>>,
}

/// The run's account found limited until a time (`account_limit_recorded`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct AccountLimitState {
    #[serde(with = "time::opt")]
    pub until: Option<DateTime<Utc>>,
    pub reason: String,
    #[serde(with = "time::opt")]
    pub at: Option<DateTime<Utc>>,
}

/// The agent's CLI changed between loops (`agent_cli_changed`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct CliChange {
    pub previous_version: Option<String>,
    pub version: Option<String>,
    pub path: String,
    #[serde(with = "time::opt")]
    pub at: Option<DateTime<Utc>>,
}

/// The windows of `incoming` replace those of the same agent and name in `into`.
fn merge_windows(into: &mut Vec<WindowRecord>, agent: &str, incoming: &[WindowRecord]) {
    for w in incoming {
        let mut w = w.clone();
        w.agent = Some(agent.to_string());
        match into
            .iter_mut()
            .find(|x| x.agent.as_deref() == Some(agent) && x.window == w.window)
        {
            Some(x) => *x = w,
            None => into.push(w),
        }
    }
}

pub const SCHEMA_VERSION: u32 = 1;

/// Every field is optional on read so runs written by the Python reference, and files
/// written by older versions, load.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RunState {
    pub schema_version: Option<u32>,
    pub run_id: Option<String>,
    pub run_dir: Option<String>,
    pub label: Option<String>,
    pub agent_name: Option<String>,
    pub agent_kind: Option<String>,
    pub agent_interface: Option<String>,
    pub agent_cwd: Option<String>,
    pub config_path: Option<String>,
    pub prompt_file: Option<String>,
    pub mode: Option<String>,
    pub reload_prompt_each_loop: Option<bool>,
    pub control_file: Option<String>,
    pub focus_log_file: Option<String>,
    pub operator_notes_file: Option<String>,
    pub prompt_sha256: Option<String>,
    pub prompt_bytes: Option<u64>,
    #[serde(with = "time::opt")]
    pub prompt_mtime: Option<DateTime<Utc>>,
    pub prompt_reload_count: Option<u64>,
    pub total_prompts: Option<u64>,
    pub pid: Option<i64>,
    pub pid_identity: Option<String>,
    pub child_pid: Option<i64>,
    pub child_pgid: Option<i64>,
    pub hybrid_pane_id: Option<String>,
    /// The tmux server (socket path) the supervisor and its panes live on.
    pub tmux_socket: Option<String>,
    /// The supervisor's own tmux pane (`$TMUX_PANE`): `looper status` finds its window.
    pub tmux_pane: Option<String>,
    pub hybrid_pane_pid: Option<serde_json::Value>,
    pub previous_hybrid_pane_id: Option<String>,
    pub status: Option<String>,
    pub current_loop: Option<u64>,
    pub current_prompt_index: Option<u64>,
    pub current_attempt: Option<u64>,
    pub current_session: Option<String>,
    pub current_session_id: Option<String>,
    pub last_log: Option<String>,
    pub last_output_bytes: Option<u64>,
    pub loop_duration_seconds: Option<f64>,
    pub returncode: Option<i64>,
    pub timed_out: Option<bool>,
    pub completion_detected: Option<bool>,
    pub completion_streak: Option<u64>,
    pub plan_unchecked: Option<u64>,
    pub no_progress_count: Option<u64>,
    pub output_decline_count: Option<u64>,
    pub output_match_detected: Option<bool>,
    pub output_match_count: Option<u64>,
    pub output_match_pattern: Option<String>,
    pub retry_count: Option<u64>,
    pub retry_kind: Option<String>,
    pub retry_after_seconds: Option<f64>,
    pub retry_status: Option<String>,
    #[serde(with = "time::opt")]
    pub retry_until: Option<DateTime<Utc>>,
    pub dry_run: Option<bool>,
    pub control_processed_count: Option<u64>,
    pub control_last_action: Option<String>,
    pub control_last_reason: Option<String>,
    pub control_last_id: Option<String>,
    pub last_backup_branch: Option<String>,
    /// HEAD when the run started: what `looper diff` and the reviewer compare against.
    pub base_commit: Option<String>,
    /// The first backup snapshot (`--backup-dirty`): the work tree at the run's start,
    /// uncommitted files included; what `looper diff` compares a run without a worktree to.
    pub start_snapshot: Option<String>,
    /// The run's own git worktree (issue 16): where, on which branch, from which commit.
    pub worktree_path: Option<String>,
    pub worktree_branch: Option<String>,
    pub worktree_base: Option<String>,
    pub worktree_cleanup: Option<String>,
    /// `active` while its run lasts, then `kept` or `removed`.
    pub worktree_state: Option<String>,
    /// Why it was kept, or what was removed.
    pub worktree_note: Option<String>,
    /// A `--parallel` group's label, and this run's number in it.
    pub parallel_group: Option<String>,
    pub parallel_index: Option<u64>,
    /// What the run changed so far, measured at each loop's end (worktree runs) and at the
    /// run's end: the branch checked out, commits ahead of its base, files changed since.
    pub branch: Option<String>,
    pub commits_ahead: Option<u64>,
    pub files_changed: Option<u64>,
    pub agent_notice: Option<String>,
    /// The account the agent's login belongs to (issue 18): as shown, and its file's id.
    pub account: Option<String>,
    pub account_id: Option<String>,
    /// The latest reading of each usage window, per agent.
    pub rate_limits: Option<Vec<WindowRecord>>,
    /// The last limit of the account this run saw (and told the other loopers of).
    pub account_limit: Option<AccountLimitState>,
    /// The agent's CLI retrying by itself, while the attempt goes on.
    pub agent_retry: Option<AgentRetryState>,
    /// What a `retrying` run is held back for, when it is not a retry of its own
    /// (`account_limit`, `headroom`, `daily_budget`).
    pub hold: Option<HoldCause>,
    /// The agent's CLI as last checked, and its last change during the run.
    pub agent_cli: Option<AgentCli>,
    pub agent_cli_changed: Option<CliChange>,
    /// The agent's last words on an error channel in its last prompt.
    pub last_error_line: Option<String>,
    pub focus: Option<String>,
    pub usage: Option<Usage>,
    pub usage_total: Option<Usage>,
    /// The latest verify (issue 15).
    pub verify_last: Option<VerifyLast>,
    /// The latest review.
    pub review_last: Option<ReviewLast>,
    /// The gate that keeps the run from completing (`plan`, `plan_integrity`, `verify`,
    /// `review`), why, and since when it has (the first loop it blocked in a row).
    pub gate_blocked: Option<Gate>,
    pub gate_blocked_reason: Option<String>,
    #[serde(with = "time::opt")]
    pub gate_blocked_since: Option<DateTime<Utc>>,
    pub stop_reason: Option<String>,
    /// What kind of ending `stop_reason` words (`control`, `completion`, `breaker`, ...):
    /// what tools decide on, never the wording.
    pub stop_kind: Option<StopKind>,
    pub exit_code: Option<i64>,
    #[serde(with = "time::opt")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(with = "time::opt")]
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(with = "time::opt")]
    pub completed_at: Option<DateTime<Utc>>,
    pub last_event: Option<String>,
    pub stale_reason: Option<String>,
    #[serde(with = "time::opt")]
    pub stale_repaired_at: Option<DateTime<Utc>>,
    pub looper_version: Option<String>,
    /// Asks and approvals waiting for a person (issue 17), oldest first; `None` when there
    /// never were any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_asks: Option<Vec<OpenAsk>>,
}

/// A question or an approval a person has not answered yet, as `looper status` shows it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct OpenAsk {
    pub id: String,
    /// `question` or `approval`.
    pub kind: String,
    pub question: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
}

impl RunState {
    /// Fold one event into the snapshot.
    pub fn apply(&mut self, event: &Event, at: DateTime<Utc>) {
        self.updated_at = Some(at);
        self.last_event = Some(event.name().to_string());
        match event {
            Event::RunStarted { dry_run, agent_cli } => {
                self.status = Some("running".into());
                self.dry_run = Some(*dry_run);
                self.agent_cli = agent_cli.clone();
                self.started_at = Some(at);
                self.current_loop = Some(0);
                self.current_prompt_index = Some(0);
                self.retry_count = Some(0);
                self.control_processed_count = Some(0);
            }
            Event::LoopStarted {
                loop_number,
                session,
                session_id,
                total_prompts,
            } => {
                self.current_loop = Some(*loop_number);
                self.current_prompt_index = Some(0);
                self.current_session = Some(session.clone());
                self.current_session_id = session_id.clone();
                self.total_prompts = Some(*total_prompts as u64);
                self.stop_reason = None;
                self.completion_detected = Some(false);
                self.hold = None;
            }
            Event::BackupCreated { branch, .. } => {
                self.last_backup_branch = Some(branch.clone());
            }
            Event::PromptStarted {
                prompt_index,
                attempt,
                session,
                session_id,
                ..
            } => {
                self.current_prompt_index = Some(*prompt_index as u64);
                self.current_attempt = Some(u64::from(*attempt));
                self.current_session = Some(session.clone());
                if session_id.is_some() {
                    self.current_session_id = session_id.clone();
                }
                self.stop_reason = None;
                if *attempt == 1 {
                    self.retry_count = Some(0);
                    self.retry_kind = None;
                    self.retry_status = None;
                    self.retry_until = None;
                    self.retry_after_seconds = None;
                }
                self.hold = None;
                self.agent_retry = None;
                self.status = Some("running".into());
            }
            Event::PromptCompleted {
                returncode,
                timed_out,
                output_bytes,
                completion_detected,
                output_match_detected,
                session_id,
                usage,
                retry_kind,
                retry_after_seconds,
                last_error_line,
                ..
            } => {
                self.last_error_line = last_error_line.clone();
                self.returncode = returncode.map(i64::from);
                self.timed_out = Some(*timed_out);
                self.last_output_bytes = Some(*output_bytes);
                if *completion_detected {
                    self.completion_detected = Some(true);
                }
                self.output_match_detected = Some(*output_match_detected);
                if session_id.is_some() {
                    self.current_session_id = session_id.clone();
                }
                if !usage.is_empty() {
                    let mut total = self.usage_total.unwrap_or_default();
                    total.add(usage);
                    self.usage_total = Some(total);
                }
                self.retry_kind = retry_kind.map(|k| k.as_str().to_string());
                self.retry_after_seconds = *retry_after_seconds;
                self.child_pid = None;
                self.child_pgid = None;
                self.agent_retry = None;
            }
            Event::QuotaWait {
                cause,
                wait_seconds,
                retry_status,
                ..
            } => {
                self.status = Some("retrying".into());
                self.hold = Some(*cause);
                self.retry_kind = None;
                self.retry_after_seconds = Some(*wait_seconds);
                self.retry_status = Some(retry_status.clone());
                self.retry_until = at.checked_add_signed(chrono::TimeDelta::milliseconds(
                    (*wait_seconds * 1000.0) as i64,
                ));
            }
            Event::RetryWait {
                retry_kind,
                retry_count,
                wait_seconds,
                retry_status,
                ..
            } => {
                self.status = Some("retrying".into());
                self.retry_kind = Some(retry_kind.as_str().to_string());
                self.retry_count = Some(*retry_count);
                self.retry_after_seconds = Some(*wait_seconds);
                self.retry_status = Some(retry_status.clone());
                self.retry_until = at.checked_add_signed(chrono::TimeDelta::milliseconds(
                    (*wait_seconds * 1000.0) as i64,
                ));
            }
            Event::LoopCompleted {
                duration_seconds,
                output_bytes,
                completion_detected,
                plan_unchecked,
                blocked_by,
                blocked_reason,
                completion_streak,
                no_progress_count,
                output_decline_count,
                output_match_count,
                usage,
                usage_total,
                ..
            } => {
                self.loop_duration_seconds = Some(*duration_seconds);
                self.last_output_bytes = Some(*output_bytes);
                self.completion_detected = Some(*completion_detected);
                self.plan_unchecked = plan_unchecked.map(|n| n as u64);
                self.completion_streak = Some(*completion_streak);
                self.no_progress_count = Some(*no_progress_count);
                self.output_decline_count = Some(*output_decline_count);
                self.output_match_count = Some(*output_match_count);
                self.current_prompt_index = self.total_prompts;
                // Blocked since the first loop of an unbroken run of blocks by that gate.
                if blocked_by.is_none() || *blocked_by != self.gate_blocked {
                    self.gate_blocked_since = blocked_by.map(|_| at);
                }
                self.gate_blocked = *blocked_by;
                self.gate_blocked_reason = blocked_reason.clone();
                if !usage.is_empty() {
                    self.usage = Some(*usage);
                }
                if !usage_total.is_empty() {
                    self.usage_total = Some(*usage_total);
                }
                self.status = Some("running".into());
            }
            Event::ControlCommandReceived { id, action, reason } => {
                self.control_processed_count = Some(self.control_processed_count.unwrap_or(0) + 1);
                self.control_last_action = Some(action.clone());
                self.control_last_reason = reason.clone();
                self.control_last_id = Some(id.clone());
            }
            Event::Paused { .. } => self.status = Some("paused".into()),
            Event::Resumed { .. } => self.status = Some("running".into()),
            Event::NoteDelivered { .. }
            | Event::FeedbackDelivered { .. }
            | Event::CompletionMarkerIgnored { .. } => {}
            Event::VerifyStarted { loop_number, .. } => {
                let failures = self
                    .verify_last
                    .as_ref()
                    .map_or(0, |v| v.consecutive_failures);
                self.verify_last = Some(VerifyLast {
                    loop_number: *loop_number,
                    consecutive_failures: failures,
                    at: Some(at),
                    ..VerifyLast::default()
                });
            }
            Event::VerifyCompleted {
                loop_number,
                exit_code,
                duration_seconds,
                count,
                pass,
                reason,
                consecutive_failures,
                ..
            } => {
                self.verify_last = Some(VerifyLast {
                    loop_number: *loop_number,
                    pass: Some(*pass),
                    exit_code: *exit_code,
                    count: *count,
                    reason: reason.clone(),
                    duration_seconds: Some(*duration_seconds),
                    consecutive_failures: *consecutive_failures,
                    at: Some(at),
                });
                self.child_pid = None;
                self.child_pgid = None;
            }
            Event::ReviewStarted {
                loop_number,
                round,
                session_id,
                ..
            } => {
                let rejections = self.review_last.as_ref().map_or(0, |r| r.rejections);
                self.review_last = Some(ReviewLast {
                    loop_number: *loop_number,
                    round: *round,
                    session_id: session_id.clone(),
                    rejections,
                    at: Some(at),
                    ..ReviewLast::default()
                });
            }
            Event::ReviewCompleted {
                loop_number,
                round,
                verdict,
                duration_seconds,
                reason,
                session_id,
                usage,
                rejections,
                ..
            } => {
                let started = self.review_last.as_ref().and_then(|r| r.session_id.clone());
                self.review_last = Some(ReviewLast {
                    loop_number: *loop_number,
                    round: *round,
                    verdict: Some(verdict.clone()),
                    reason: reason.clone(),
                    session_id: session_id.clone().or(started),
                    rejections: *rejections,
                    duration_seconds: Some(*duration_seconds),
                    at: Some(at),
                });
                // The reviewer's receipts count toward the run's budgets, and show with them.
                if !usage.is_empty() {
                    let mut total = self.usage_total.unwrap_or_default();
                    total.add(usage);
                    self.usage_total = Some(total);
                }
                self.child_pid = None;
                self.child_pgid = None;
            }
            Event::AskOpened {
                id,
                question,
                choices,
                ..
            } => self.open_ask(OpenAsk {
                id: id.clone(),
                kind: "question".into(),
                question: question.clone(),
                choices: choices.clone(),
            }),
            Event::ApprovalRequested { id, question, .. } => {
                self.status = Some(Status::WaitingForApproval.as_str().into());
                self.open_ask(OpenAsk {
                    id: id.clone(),
                    kind: "approval".into(),
                    question: question.clone(),
                    choices: vec![],
                });
            }
            Event::AskAnswered { id, .. }
            | Event::ApprovalGiven { id, .. }
            | Event::ApprovalRejected { id, .. } => {
                if let Some(open) = self.open_asks.as_mut() {
                    open.retain(|a| &a.id != id);
                }
            }
            Event::WaitingForAnswer { .. } => {
                self.status = Some(Status::WaitingForAnswer.as_str().into());
            }
            Event::RunStopped {
                status,
                stop_reason,
                stop_kind,
                exit_code,
            } => {
                self.status = Some(status.as_str().to_string());
                self.stop_reason = Some(stop_reason.clone());
                self.stop_kind = Some(*stop_kind);
                self.exit_code = Some(i64::from(*exit_code));
                self.child_pid = None;
                self.child_pgid = None;
                self.agent_retry = None;
                self.hold = None;
                if self.completed_at.is_none() {
                    self.completed_at = Some(at);
                }
            }
        }
    }

    /// Fold one of the supervisor's own records into the snapshot (those that carry state).
    pub fn apply_supervisor(&mut self, event: &SupervisorEvent, at: DateTime<Utc>) {
        match event {
            SupervisorEvent::WorktreeCreated {
                path,
                branch,
                base,
                cleanup,
                ..
            } => {
                self.worktree_path = Some(path.display().to_string());
                self.worktree_branch = Some(branch.clone());
                self.worktree_base = Some(base.clone());
                self.worktree_cleanup = Some(cleanup.as_str().into());
                self.worktree_state = Some("active".into());
                self.branch = Some(branch.clone());
                self.commits_ahead = Some(0);
                self.files_changed = Some(0);
            }
            SupervisorEvent::WorktreeKept {
                reason,
                commits_ahead,
                files_changed,
                ..
            } => {
                self.worktree_state = Some("kept".into());
                self.worktree_note = Some(reason.clone());
                self.commits_ahead = Some(*commits_ahead);
                self.files_changed = Some(*files_changed);
            }
            SupervisorEvent::WorktreeRemoved { note, .. } => {
                self.worktree_state = Some("removed".into());
                self.worktree_note = Some(note.clone());
            }
            SupervisorEvent::RateLimits { agent, windows } => {
                merge_windows(self.rate_limits.get_or_insert_default(), agent, windows);
            }
            SupervisorEvent::AccountLimitRecorded { until, reason, .. } => {
                self.account_limit = Some(AccountLimitState {
                    until: Some(*until),
                    reason: reason.clone(),
                    at: Some(at),
                });
            }
            SupervisorEvent::AgentRetry { agent, retry } => {
                self.agent_retry = Some(AgentRetryState {
                    agent: agent.clone(),
                    retry: retry.clone(),
                    at: Some(at),
                });
            }
            SupervisorEvent::AgentCliChanged { previous, current } => {
                self.agent_cli_changed = Some(CliChange {
                    previous_version: previous.version.clone(),
                    version: current.version.clone(),
                    path: current.path.clone(),
                    at: Some(at),
                });
                self.agent_cli = Some(current.clone());
            }
            _ => return,
        }
        self.updated_at = Some(at);
        self.last_event = Some(event.name().to_string());
    }

    pub fn is_active(&self) -> bool {
        is_active_status(self.status.as_deref())
    }

    fn open_ask(&mut self, ask: OpenAsk) {
        let open = self.open_asks.get_or_insert_with(Vec::new);
        if !open.iter().any(|a| a.id == ask.id) {
            open.push(ask);
        }
    }

    /// A person is needed: the run is active and an ask or approval is open.
    pub fn needs_input(&self) -> bool {
        self.is_active() && self.open_asks.as_ref().is_some_and(|a| !a.is_empty())
    }
}

/// The statuses of a run whose supervisor is (meant to be) alive.
pub fn is_active_status(status: Option<&str>) -> bool {
    matches!(
        status,
        Some("running" | "retrying" | "paused" | "waiting_for_answer" | "waiting_for_approval")
    )
}

/// Load a state file; an error says why it is missing, unreadable or not a state.
pub fn read_state(path: &std::path::Path) -> std::result::Result<RunState, String> {
    let bytes = super::fsio::read_regular(path, super::fsio::MAX_STATE).map_err(|e| {
        match e.raw_os_error() {
            Some(libc::ELOOP) => "not a regular file (a symbolic link)".to_string(),
            _ => e.to_string(),
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

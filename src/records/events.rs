//! `events.jsonl`: one typed, versioned record per line (D21). The engine's events and the
//! supervisor's own (hybrid panes, lock takeovers, panics, repairs) are encoded here and
//! nowhere else; every line carries `ts` and `schema_version`.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::accounts::WindowRecord;
use super::fsio;
use super::time;
use crate::effects::git::HolderRecord;
use crate::effects::worktree::Outcome;
use crate::engine::AgentCli;
use crate::engine::worktree::CleanupPolicy;
use crate::engine::{Status, StopKind};
use crate::error::Result;

/// Version of the event lines' schema. Fields may be added within a version; removals or
/// changes of meaning bump it.
pub const EVENTS_SCHEMA_VERSION: u32 = 1;

pub use crate::agents::self_retry::SelfRetry as AgentRetry;

/// Records the supervisor writes beside the engine's events.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SupervisorEvent {
    /// A hybrid agent pane started (its id and pid are in `state.json` from now on).
    HybridPaneStarted {
        tui: String,
        pane_id: String,
        pane_pid: u32,
        session_id: Option<String>,
        argv: Vec<String>,
    },
    /// The pane of the previous session was closed for a new session.
    HybridSessionReset { previous_hybrid_pane_id: String },
    /// The run lock of a dead looper was taken over (D18).
    LockTakenOver {
        previous_holder: HolderRecord,
        lock: PathBuf,
    },
    /// A line of `control.jsonl` that is not a command (garbage, a torn write, an unknown
    /// action): not acted on, and said so.
    ControlLineRejected {
        line: usize,
        why: String,
        preview: String,
    },
    /// The run got a git worktree of its own (issue 16), before `run_started`.
    WorktreeCreated {
        path: PathBuf,
        branch: String,
        base: String,
        cleanup: CleanupPolicy,
        /// The TUI config files where trust was recorded for it (`--trust-worktree`).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        trust: Vec<PathBuf>,
    },
    /// At the run's end (or by `--repair-stale`): the worktree was kept, and why.
    WorktreeKept {
        path: PathBuf,
        branch: String,
        reason: String,
        commits_ahead: u64,
        unmerged_commits: u64,
        dirty_paths: u64,
        files_changed: u64,
    },
    /// At the run's end (or by `--repair-stale`): the worktree was removed, and its branch
    /// unless that had moved meanwhile.
    WorktreeRemoved {
        path: PathBuf,
        branch: String,
        branch_removed: bool,
        note: String,
    },
    /// The notifier ran for entering the state `on` (D33).
    NotificationSent { on: String, seconds: f64 },
    /// The notifier failed, or was killed at its timeout: recorded, never a stop (D33).
    NotificationFailed {
        on: String,
        error: String,
        seconds: f64,
    },
    /// Usage windows the agent reported about its account in an attempt (issue 18): the
    /// latest of each is in `state.json` (`rate_limits`).
    RateLimits {
        agent: String,
        windows: Vec<WindowRecord>,
    },
    /// The run learned that its account is limited until a time, and told every looper on
    /// the machine through the account's record.
    AccountLimitRecorded {
        account: String,
        #[serde(with = "time::required")]
        until: DateTime<Utc>,
        reason: String,
    },
    /// The agent's CLI retries a request by itself (claude `api_retry`, gemini `Attempt N
    /// failed`, codex `Reconnecting...`): said as it happens, never acted on.
    AgentRetry { agent: String, retry: AgentRetry },
    /// The agent's CLI is another file than at the last check (an auto-update).
    AgentCliChanged {
        previous: AgentCli,
        current: AgentCli,
    },
    /// Processes of an earlier attempt or pane still held the session about to be resumed:
    /// they were ended first, so two processes never continue one session.
    SessionHolderEnded { session_id: String, pids: Vec<i32> },
    /// A panic after the run's end was already on record: noted, the end is kept.
    SupervisorPanic { error: String },
    /// The end of a run whose supervisor died, written by `--repair-stale` (reference 10.5).
    #[serde(rename = "run_stopped")]
    RunRepaired {
        status: Status,
        stop_reason: String,
        stop_kind: StopKind,
        exit_code: Option<i64>,
        stale_reason: String,
        #[serde(with = "time::required")]
        stale_repaired_at: DateTime<Utc>,
    },
}

impl SupervisorEvent {
    pub fn name(&self) -> &'static str {
        match self {
            SupervisorEvent::HybridPaneStarted { .. } => "hybrid_pane_started",
            SupervisorEvent::HybridSessionReset { .. } => "hybrid_session_reset",
            SupervisorEvent::LockTakenOver { .. } => "lock_taken_over",
            SupervisorEvent::ControlLineRejected { .. } => "control_line_rejected",
            SupervisorEvent::WorktreeCreated { .. } => "worktree_created",
            SupervisorEvent::WorktreeKept { .. } => "worktree_kept",
            SupervisorEvent::WorktreeRemoved { .. } => "worktree_removed",
            SupervisorEvent::RateLimits { .. } => "rate_limits",
            SupervisorEvent::AccountLimitRecorded { .. } => "account_limit_recorded",
            SupervisorEvent::AgentRetry { .. } => "agent_retry",
            SupervisorEvent::AgentCliChanged { .. } => "agent_cli_changed",
            SupervisorEvent::SessionHolderEnded { .. } => "session_holder_ended",
            SupervisorEvent::SupervisorPanic { .. } => "supervisor_panic",
            SupervisorEvent::NotificationSent { .. } => "notification_sent",
            SupervisorEvent::NotificationFailed { .. } => "notification_failed",
            SupervisorEvent::RunRepaired { .. } => "run_stopped",
        }
    }
}

impl SupervisorEvent {
    /// The record of what became of a worktree.
    pub fn worktree_outcome(o: &Outcome) -> Self {
        if o.removed {
            SupervisorEvent::WorktreeRemoved {
                path: o.path.clone(),
                branch: o.branch.clone(),
                branch_removed: o.branch_removed,
                note: o.text(),
            }
        } else {
            SupervisorEvent::WorktreeKept {
                path: o.path.clone(),
                branch: o.branch.clone(),
                reason: o.text(),
                commits_ahead: o.facts.commits_ahead,
                unmerged_commits: o.facts.unmerged_commits,
                dirty_paths: o.facts.dirty_paths,
                files_changed: o.changes.files_changed,
            }
        }
    }
}

#[derive(Serialize)]
struct Line<'a, T: Serialize> {
    #[serde(with = "time::required")]
    ts: DateTime<Utc>,
    schema_version: u32,
    #[serde(flatten)]
    body: &'a T,
    /// `prompt_started` names the prompt's log.
    #[serde(skip_serializing_if = "Option::is_none")]
    log: Option<&'a Path>,
}

/// One line, newline included, ready for a single `write`.
pub fn encode<T: Serialize>(at: DateTime<Utc>, body: &T, log: Option<&Path>) -> Vec<u8> {
    let line = Line {
        ts: at,
        schema_version: EVENTS_SCHEMA_VERSION,
        body,
        log,
    };
    // Serialising these types cannot fail (no maps with non-string keys, no custom errors).
    let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Append one event to a run directory that no `RunStore` holds (the panic hook, repair).
pub fn append_to_dir<T: Serialize>(dir: &Path, at: DateTime<Utc>, body: &T) -> Result<()> {
    fsio::secure_append(dir, super::EVENTS_FILE, &line(at, body)).map(|_| ())
}

/// One event as a line of text, without its newline.
pub fn line<T: Serialize>(at: DateTime<Utc>, body: &T) -> String {
    let bytes = encode(at, body, None);
    String::from_utf8_lossy(&bytes[..bytes.len() - 1]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Event;

    #[test]
    fn every_line_carries_its_time_version_and_name() {
        let at = time::parse("2026-12-01T10:00:00.5Z").expect("t");
        let line = encode(
            at,
            &Event::Paused {
                reason: Some("lunch".into()),
            },
            None,
        );
        let v: serde_json::Value = serde_json::from_slice(&line).expect("json");
        assert_eq!(v["ts"], "2026-12-01T10:00:00.500Z");
        assert_eq!(v["schema_version"], EVENTS_SCHEMA_VERSION);
        assert_eq!(v["event"], "paused");
        assert_eq!(v["reason"], "lunch");
        assert!(line.ends_with(b"\n") && !line[..line.len() - 1].contains(&b'\n'));
        let reset = SupervisorEvent::HybridSessionReset {
            previous_hybrid_pane_id: "%3".into(),
        };
        let v: serde_json::Value = serde_json::from_slice(&encode(at, &reset, None)).expect("json");
        assert_eq!(v["event"], reset.name());
        assert_eq!(v["previous_hybrid_pane_id"], "%3");
    }
}

//! The `--json` document of `looper status`: one entry per run, serialised straight from the
//! records it was read from, and the orphan worktrees.
//!
//! # JSON schema (`--json`), `agent-looper/status` version 1
//!
//! ```text
//! {
//!   "schema": "agent-looper/status",
//!   "version": 1,
//!   "generated_at": "2026-11-21T09:10:34.123Z",
//!   "runs": [ {
//!     "run_dir": string,            the run directory as found (root joined with its name)
//!     "run_id": string|null,
//!     "label": string|null,
//!     "status": string,             as recorded (running, retrying, paused, stopped, error,
//!                                   interrupted), or "unreadable"
//!     "stale": bool,                an active status whose supervisor is gone (pid identity)
//!     "stale_reason": string|null,  why it is stale, or why it was repaired
//!     "error": string|null,         why state.json could not be read (status "unreadable")
//!     "agent": string|null, "agent_kind": string|null,
//!     "loop": int|null, "prompt": int|null, "total_prompts": int|null,
//!     "updated_at": string|null, "started_at": string|null,
//!     "stop_reason": string|null, "exit_code": int|null,
//!     "retry_status": string|null, "retry_until": string|null,
//!     "usage_total": {"input_tokens", "output_tokens", "cached_input_tokens", "cost_usd"}|null,
//!     "project": string|null,       basename of the agent's working directory
//!     "pid": int|null,              the supervisor's pid
//!     "detail": string|null,        a failed run's last error line and what to do
//!     "gate_blocked": string|null,  the gate keeping a seen marker from counting (plan,
//!                                   plan_integrity, verify, review), with
//!     "gate_blocked_reason": string|null, "gate_blocked_since": string|null,
//!     "verify_last": {"loop", "pass", "reason"}|null,     the latest verify
//!     "review_last": {"loop", "verdict", "reason"}|null,  the latest review
//!     "group": string|null, "parallel_index": int|null,  a --parallel group
//!     "branch": string|null, "commits_ahead": int|null, "files_changed": int|null,
//!     "worktree": {"path", "branch", "state": active|kept|removed, "note"}|null,
//!     "needs_input": bool,          a live run waits for a person (issue 17)
//!     "open_asks": [ {"id", "kind": "question"|"approval", "question", "choices"} ],
//!     "tmux_socket": string|null,   the tmux server the supervisor ran in (socket path)
//!     "tmux_pane": string|null,     the supervisor's own pane (`%3`), recorded at start
//!     "tmux_window": {"target", "session", "index", "name"}|null,
//!                                   where that pane is now (`looper:2`), for a live run:
//!                                   one `list-panes -a` per tmux server asked
//!     "account": string|null,       the account the agent's login belongs to
//!     "rate_limits": [ {"agent", "window", "window_minutes", "used_percent", "resets_at",
//!                       "status", "at"} ]|null,   the latest reading of each usage window
//!     "account_limit": {"until", "reason", "at"}|null,  the account's last limit it saw
//!     "agent_retry": {"agent", "attempt", "max_attempts", "status", "delay_seconds",
//!                     "error", "text", "at"}|null, the CLI retrying by itself right now
//!     "hold": string|null,          account_limit, headroom or daily_budget (a retrying run)
//!     "agent_cli": {"path", "version", "size", "inode", "mtime"}|null,
//!     "agent_cli_changed": {"previous_version", "version", "path", "at"}|null
//!   } ]                             ordered as the table: attention, running, finished
//!   "hidden_runs": int,             finished runs left out by `--since`
//!   "orphan_worktrees": [ {"path", "branch", "label", "run_dir", "phase", "reason"} ]
//! }
//! ```
//!
//! Fields may be added in later versions of schema 1; removals or changes of meaning bump
//! `version`. See `docs/status-json.md`.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::windows::Windows;
use crate::effects::worktree::{self, Phase};
use crate::records::accounts::WindowRecord;
use crate::records::fleet::{GateView, OpenAskView, Row, UsageView};
use crate::records::state::{AccountLimitState, AgentRetryState, CliChange};
use crate::records::time;

pub const SCHEMA: &str = "agent-looper/status";
pub const SCHEMA_VERSION: u32 = 1;

/// One entry of `runs` in the `--json` document (schema in the module docs), serialised
/// straight from borrowed fields, in schema order.
#[derive(Debug, serde::Serialize)]
pub struct RunJson<'a> {
    pub run_dir: &'a Path,
    pub run_id: Option<&'a str>,
    pub label: Option<&'a str>,
    pub status: &'a str,
    pub stale: bool,
    pub stale_reason: Option<&'a str>,
    pub error: Option<&'a str>,
    pub agent: Option<&'a str>,
    pub agent_kind: Option<&'a str>,
    #[serde(rename = "loop")]
    pub loop_number: Option<u64>,
    pub prompt: Option<u64>,
    pub total_prompts: Option<u64>,
    #[serde(serialize_with = "time::opt::serialize")]
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "time::opt::serialize")]
    pub started_at: Option<DateTime<Utc>>,
    pub stop_reason: Option<&'a str>,
    pub exit_code: Option<i64>,
    pub retry_status: Option<&'a str>,
    #[serde(serialize_with = "time::opt::serialize")]
    pub retry_until: Option<DateTime<Utc>>,
    pub usage_total: Option<&'a UsageView>,
    pub project: Option<String>,
    pub pid: Option<i64>,
    /// A failed run's last error line and hint (`looper status` shows them under the row).
    pub detail: Option<String>,
    pub gate_blocked: Option<&'a str>,
    pub gate_blocked_reason: Option<&'a str>,
    #[serde(serialize_with = "time::opt::serialize")]
    pub gate_blocked_since: Option<DateTime<Utc>>,
    pub verify_last: Option<&'a GateView>,
    pub review_last: Option<&'a GateView>,
    /// The `--parallel` group the run belongs to, and its number in it.
    pub group: Option<&'a str>,
    pub parallel_index: Option<u64>,
    /// The branch it works on, commits ahead of its base, files changed since.
    pub branch: Option<&'a str>,
    pub commits_ahead: Option<u64>,
    pub files_changed: Option<u64>,
    pub worktree: Option<WorktreeJson<'a>>,
    /// A live run waits for a person (an open ask or approval, issue 17).
    pub needs_input: bool,
    /// What it waits for, oldest first.
    pub open_asks: &'a [OpenAskView],
    /// The tmux server (socket path) and the supervisor's own pane, as recorded at start.
    pub tmux_socket: Option<&'a str>,
    pub tmux_pane: Option<&'a str>,
    /// Where that pane is now, for a live run: asked of its tmux server.
    pub tmux_window: Option<WindowJson<'a>>,
    /// The account the agent's login belongs to (issue 18).
    pub account: Option<&'a str>,
    /// The latest reading of each usage window, per agent.
    pub rate_limits: Option<&'a Vec<WindowRecord>>,
    /// The last limit of the account the run saw (until, reason).
    pub account_limit: Option<&'a AccountLimitState>,
    /// The CLI retrying by itself while the attempt goes on.
    pub agent_retry: Option<&'a AgentRetryState>,
    /// What a `retrying` run is held back for: `account_limit`, `headroom`, `daily_budget`.
    pub hold: Option<&'a str>,
    /// The agent's CLI (path, version, file identity) and its change during the run.
    pub agent_cli: Option<&'a crate::engine::AgentCli>,
    pub agent_cli_changed: Option<&'a CliChange>,
}

/// A live run's tmux window in the `--json` document.
#[derive(Debug, serde::Serialize)]
pub struct WindowJson<'a> {
    /// `session:index`, a tmux target.
    pub target: String,
    pub session: &'a str,
    pub index: u32,
    pub name: &'a str,
}

/// A run's own worktree in the `--json` document.
#[derive(Debug, serde::Serialize)]
pub struct WorktreeJson<'a> {
    pub path: &'a str,
    pub branch: Option<&'a str>,
    /// `active`, `kept` or `removed`.
    pub state: Option<&'a str>,
    pub note: Option<&'a str>,
}

/// A looper-made worktree whose looper is gone, not yet settled.
#[derive(Debug, serde::Serialize)]
pub struct OrphanJson {
    pub path: PathBuf,
    pub branch: String,
    pub label: String,
    pub run_dir: Option<PathBuf>,
    /// What its looper was doing: `creating`, `ready` (its run died) or `removing`.
    pub phase: Phase,
    pub reason: String,
}

/// The whole `--json` document.
#[derive(Debug, serde::Serialize)]
pub struct StatusJson<'a> {
    pub schema: &'static str,
    pub version: u32,
    pub generated_at: String,
    pub runs: Vec<RunJson<'a>>,
    /// Finished runs left out by `--since`.
    pub hidden_runs: usize,
    pub orphan_worktrees: Vec<OrphanJson>,
}

fn run_json<'a>(row: &'a Row, windows: &'a Windows) -> RunJson<'a> {
    let s = &row.state;
    RunJson {
        run_dir: &row.dir,
        run_id: s.run_id.as_deref(),
        label: s.label.as_deref(),
        status: if row.error.is_some() {
            "unreadable"
        } else {
            s.status.as_deref().unwrap_or("unknown")
        },
        stale: row.stale.is_some(),
        stale_reason: row.stale.as_deref().or(s.stale_reason.as_deref()),
        error: row.error.as_deref(),
        agent: s.agent_name.as_deref(),
        agent_kind: s.agent_kind.as_deref(),
        loop_number: s.current_loop,
        prompt: s.current_prompt_index,
        total_prompts: s.total_prompts,
        updated_at: s.updated_at,
        started_at: s.started_at,
        stop_reason: s.stop_reason.as_deref(),
        exit_code: s.exit_code,
        retry_status: s.retry_status.as_deref(),
        retry_until: s.retry_until,
        usage_total: s.usage_total.as_ref(),
        project: row.project(),
        pid: s.pid,
        detail: row.detail(),
        gate_blocked: s.gate_blocked.as_deref(),
        gate_blocked_reason: s.gate_blocked_reason.as_deref(),
        gate_blocked_since: s.gate_blocked_since,
        verify_last: s.verify_last.as_ref(),
        review_last: s.review_last.as_ref(),
        group: s.parallel_group.as_deref(),
        parallel_index: s.parallel_index,
        branch: s.branch.as_deref().or(s.worktree_branch.as_deref()),
        commits_ahead: s.commits_ahead,
        files_changed: s.files_changed,
        worktree: s.worktree_path.as_deref().map(|path| WorktreeJson {
            path,
            branch: s.worktree_branch.as_deref(),
            state: s.worktree_state.as_deref(),
            note: s.worktree_note.as_deref(),
        }),
        needs_input: row.needs_person(),
        open_asks: if row.needs_person() {
            s.open_asks.as_deref().unwrap_or_default()
        } else {
            &[]
        },
        tmux_socket: s.tmux_socket.as_deref(),
        tmux_pane: s.tmux_pane.as_deref(),
        tmux_window: windows.of(row).map(|w| WindowJson {
            target: w.target(),
            session: &w.session,
            index: w.index,
            name: &w.name,
        }),
        account: s.account.as_deref(),
        rate_limits: s.rate_limits.as_ref(),
        account_limit: s.account_limit.as_ref(),
        agent_retry: s.agent_retry.as_ref(),
        hold: s.hold.as_deref(),
        agent_cli: s.agent_cli.as_ref(),
        agent_cli_changed: s.agent_cli_changed.as_ref(),
    }
}

/// The `--json` document of `rows` without asking tmux where their windows are.
pub fn render_json(rows: &[Row], now: DateTime<Utc>) -> StatusJson<'_> {
    static NONE: std::sync::LazyLock<Windows> = std::sync::LazyLock::new(Windows::default);
    json_document(rows, now, &NONE)
}

/// The `--json` document of `rows`, with the tmux windows found for them.
pub fn json_document<'a>(
    rows: &'a [Row],
    now: DateTime<Utc>,
    windows: &'a Windows,
) -> StatusJson<'a> {
    StatusJson {
        schema: SCHEMA,
        version: SCHEMA_VERSION,
        generated_at: time::format(now),
        runs: rows.iter().map(|r| run_json(r, windows)).collect(),
        hidden_runs: 0,
        orphan_worktrees: Vec::new(),
    }
}

pub(super) fn orphan_json(f: &worktree::Found) -> OrphanJson {
    OrphanJson {
        path: f.record.path.clone(),
        branch: f.record.branch.clone(),
        label: f.record.label.clone(),
        run_dir: f.record.run_dir.clone(),
        phase: f.record.phase,
        reason: f.orphaned.clone().unwrap_or_default(),
    }
}

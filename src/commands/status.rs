//! `looper status` (D23): the fleet of runs under the state roots (and, with `--all`, every
//! run in the machine-wide registry), what needs attention first; `--json`, `--watch`,
//! `--repair-stale`, `--since` (finished runs older than it hidden), `--color`. Finding and
//! reading the runs is `records::{discovery, fleet}`, asking tmux where live runs' windows
//! are is `effects::tmux`; this module renders them (`paint`: tones and colour, `watch`:
//! the live view, its selection and Enter).
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

mod paint;
mod watch;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

pub use self::paint::{Line, Tone};
use crate::cli::StatusArgs;
use crate::effects::tmux;
use crate::effects::worktree::{self, Phase};
use crate::error::{Error, Result};
use crate::records::accounts::WindowRecord;
use crate::records::discovery::{self, discover};
use crate::records::events::SupervisorEvent;
use crate::records::fleet::{
    GateView, OpenAskView, Row, StateView, UsageView, load_rows, sort_rows,
};
use crate::records::repair::{record_after, repair_all};
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

pub fn age(now: DateTime<Utc>, t: Option<DateTime<Utc>>) -> String {
    let Some(t) = t else {
        return "-".into();
    };
    let s = (now - t).num_seconds().max(0);
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

pub fn usage_text(u: Option<&UsageView>) -> String {
    let Some(u) = u.filter(|u| **u != UsageView::default()) else {
        return "-".into();
    };
    let tokens = u.input_tokens + u.output_tokens;
    let t = if tokens < 1000 {
        format!("{tokens} tok")
    } else if tokens < 1_000_000 {
        format!("{:.1}k tok", tokens as f64 / 1000.0)
    } else {
        format!("{:.1}M tok", tokens as f64 / 1_000_000.0)
    };
    if u.cost_usd > 0.0 {
        format!("{t} ${:.2}", u.cost_usd)
    } else {
        t
    }
}

pub fn loop_text(s: &StateView) -> String {
    match (s.current_loop, s.current_prompt_index, s.total_prompts) {
        (None, _, _) => "-".into(),
        (Some(l), Some(p), Some(t)) => format!("{l} p{p}/{t}"),
        (Some(l), Some(p), None) => format!("{l} p{p}"),
        (Some(l), None, _) => l.to_string(),
    }
}

/// A cell: sanitised first (D35), so a cut never lands inside an escape sequence.
pub fn clip(s: &str, max: usize) -> String {
    let clean = crate::text::sanitize_line(s);
    let flat: String = clean.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max {
        let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        flat
    }
}

/// What the STATUS cell means, as a colour: a person needed, a stale supervisor and a
/// failure stand out, running is calm, finished is dim.
pub fn tone(r: &Row) -> Tone {
    if r.error.is_some() {
        return Tone::Error;
    }
    if r.stale.is_some() {
        return Tone::Stale;
    }
    if r.needs_person() {
        return Tone::Person;
    }
    match r.state.status.as_deref() {
        Some("running") => Tone::Running,
        Some("waiting_for_answer" | "waiting_for_approval") => Tone::Person,
        Some("error") => Tone::Error,
        Some("stopped") if r.state.exit_code == Some(3) => Tone::Warn,
        Some("retrying" | "paused") => Tone::Warn,
        Some("stopped" | "interrupted") => Tone::Finished,
        _ => Tone::Plain,
    }
}

/// The tmux windows of the listed runs: for each tmux server (socket) a live run recorded,
/// its panes and their windows.
#[derive(Debug, Default)]
pub struct Windows {
    servers: HashMap<String, HashMap<String, tmux::PaneWindow>>,
}

impl Windows {
    /// Ask each distinct server among the runs whose supervisor is alive, once (one
    /// `list-panes -a` each, not one call per run). A server that is gone has no windows.
    pub fn ask(rows: &[Row]) -> Windows {
        let mut servers: HashMap<String, HashMap<String, tmux::PaneWindow>> = HashMap::new();
        for r in rows.iter().filter(|r| supervisor_alive(r)) {
            if let (Some(socket), Some(_)) = (&r.state.tmux_socket, &r.state.tmux_pane)
                && !servers.contains_key(socket)
            {
                let panes = tmux::pane_windows(socket).unwrap_or_default();
                servers.insert(socket.clone(), panes);
            }
        }
        Windows { servers }
    }

    /// The window of a run whose supervisor is alive and runs in tmux.
    pub fn of(&self, r: &Row) -> Option<&tmux::PaneWindow> {
        if !supervisor_alive(r) {
            return None;
        }
        let socket = r.state.tmux_socket.as_deref()?;
        let pane = r.state.tmux_pane.as_deref()?;
        self.servers.get(socket)?.get(pane)
    }

    #[cfg(test)]
    pub fn with(socket: &str, pane: &str, w: tmux::PaneWindow) -> Windows {
        let mut me = Windows::default();
        me.servers
            .entry(socket.to_string())
            .or_default()
            .insert(pane.to_string(), w);
        me
    }
}

/// An active run whose supervisor is still there.
pub fn supervisor_alive(r: &Row) -> bool {
    r.error.is_none() && r.stale.is_none() && r.state.is_active()
}

/// The WINDOW cell: `looper:2 myrepo` (names sanitised, D35).
pub fn window_text(w: &tmux::PaneWindow) -> String {
    clip(&format!("{} {}", w.target(), w.name), 40)
}

/// The table: its header line, then the lines under it; `row_line[i]` is the line of
/// `rows[i]` (a selected run's line in `--watch`).
#[derive(Clone, Debug, Default)]
pub struct Table {
    pub header: Line,
    pub lines: Vec<Line>,
    pub row_line: Vec<usize>,
}

/// The table. The BRANCH column (branch, commits ahead of the base and files changed:
/// `looper/x +2c 3f`) is there when a run recorded it, the WINDOW column (`looper:2
/// myrepo`) when a live run is in a tmux window; the runs of a `--parallel` group are listed
/// together under a line naming the group. Widths are measured on the plain text; the
/// STATUS cell and a failure's detail line carry their [`Tone`].
pub fn table(rows: &[Row], now: DateTime<Utc>, windows: &Windows) -> Table {
    let with_branch = rows.iter().any(|r| r.changes().is_some());
    let with_window = rows.iter().any(|r| windows.of(r).is_some());
    let mut head = vec!["LABEL", "STATUS", "AGENT", "LOOP", "UPDATED", "USAGE"];
    if with_branch {
        head.push("BRANCH");
    }
    if with_window {
        head.push("WINDOW");
    }
    head.extend(["STOP/NOTE", "PROJECT"]);
    const STATUS: usize = 1;
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut c = vec![
                clip(&r.label(), 32),
                clip(&r.shown_status(), 20),
                clip(r.state.agent_name.as_deref().unwrap_or("-"), 16),
                loop_text(&r.state),
                age(now, r.updated),
                usage_text(r.state.usage_total.as_ref()),
            ];
            if with_branch {
                c.push(clip(&r.changes().unwrap_or_else(|| "-".into()), 48));
            }
            if with_window {
                c.push(windows.of(r).map(window_text).unwrap_or_else(|| "-".into()));
            }
            c.push(clip(&r.note(), 60));
            c.push(clip(&r.project().unwrap_or_else(|| "-".into()), 32));
            c
        })
        .collect();
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for c in &cells {
        for (w, cell) in widths.iter_mut().zip(c.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |c: &[String], status_tone: Tone| {
        let mut l = Line::default();
        for (i, cell) in c.iter().enumerate() {
            l.push(
                cell.as_str(),
                if i == STATUS {
                    status_tone
                } else {
                    Tone::Plain
                },
            );
            if i + 1 < c.len() {
                l.push(
                    " ".repeat(widths[i] - cell.chars().count() + 2),
                    Tone::Plain,
                );
            }
        }
        l.trim_end()
    };
    let head: Vec<String> = head.into_iter().map(String::from).collect();
    let mut t = Table {
        header: line(&head, Tone::Plain),
        ..Table::default()
    };
    let mut group: Option<&str> = None;
    for (r, c) in rows.iter().zip(&cells) {
        let g = r.state.parallel_group.as_deref();
        if g.is_some() && g != group {
            t.lines.push(Line::plain(group_line(rows, r)));
        }
        group = g;
        t.row_line.push(t.lines.len());
        t.lines.push(line(c, tone(r)));
        // A failure's own words (and what to do) on a line of their own: the STOP/NOTE cell
        // is too narrow for them; so are the account's windows and a changed CLI.
        if let Some(d) = r.detail() {
            let mut l = Line::plain("  └ ");
            l.push(clip(&d, 160), Tone::Detail);
            t.lines.push(l);
        }
        for d in crate::records::quota_view::detail_lines(&r.state, now) {
            let mut l = Line::plain("  └ ");
            l.push(clip(&d, 160), Tone::Detail);
            t.lines.push(l);
        }
    }
    t
}

/// The table as plain lines (no colour, no windows), one string per line.
pub fn render_table(rows: &[Row], now: DateTime<Utc>) -> Vec<String> {
    let t = table(rows, now, &Windows::default());
    std::iter::once(&t.header)
        .chain(&t.lines)
        .map(Line::text)
        .collect()
}

/// A run `--since` may hide: finished (stopped, error, interrupted) and readable. Active
/// runs, stale ones and those waiting for a person never are.
pub fn finished(r: &Row) -> bool {
    r.error.is_none()
        && r.stale.is_none()
        && matches!(
            r.state.status.as_deref(),
            Some("stopped" | "error" | "interrupted")
        )
}

/// The runs to show when finished runs last updated before `now - since` are hidden, and
/// how many were. A run with no time at all is shown (its age is unknown).
pub fn hide_old_finished(rows: Vec<Row>, now: DateTime<Utc>, since: Duration) -> (Vec<Row>, usize) {
    let Some(cutoff) = chrono::TimeDelta::from_std(since)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
    else {
        return (rows, 0);
    };
    let before = rows.len();
    let shown: Vec<Row> = rows
        .into_iter()
        .filter(|r| !(finished(r) && r.updated.is_some_and(|u| u < cutoff)))
        .collect();
    let hidden = before - shown.len();
    (shown, hidden)
}

/// `(3 older finished runs hidden; --since to change)`: the table's last line when some
/// are; `how` says how to change it.
pub fn hidden_line(hidden: usize, how: &str) -> String {
    let runs = if hidden == 1 { "run" } else { "runs" };
    format!("({hidden} older finished {runs} hidden; {how})")
}

/// `30m`, `2h`, `1d`: a `--since` window as a person reads it.
pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "0s".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// `sweep: 3 parallel runs (2 running, 1 stopped)`: the line above a group's runs.
fn group_line(rows: &[Row], first: &Row) -> String {
    let g = first.state.parallel_group.as_deref().unwrap_or("-");
    let members: Vec<&Row> = rows
        .iter()
        .filter(|r| {
            r.state.parallel_group.as_deref() == Some(g)
                && r.worktree_home() == first.worktree_home()
        })
        .collect();
    let mut counts: Vec<(String, usize)> = Vec::new();
    for r in &members {
        let st = r.shown_status();
        match counts.iter_mut().find(|(s, _)| *s == st) {
            Some(c) => c.1 += 1,
            None => counts.push((st, 1)),
        }
    }
    format!(
        "{}: {} parallel runs ({})",
        clip(g, 32),
        members.len(),
        counts
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
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

/// The main checkouts whose looper-made worktrees status looks at: the one this command runs
/// in, and those of the listed runs that had worktrees. Finding them costs a repository
/// discovery and one directory read each; nothing is computed from git here (what runs
/// changed is read from their records).
fn worktree_homes(rows: &[Row]) -> Vec<PathBuf> {
    let mut homes: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir()
        && let Ok(loc) = worktree::locate(&cwd)
    {
        homes.push(loc.home);
    }
    for r in rows {
        if let Some(h) = r.worktree_home()
            && !homes.contains(&h)
        {
            homes.push(h);
        }
    }
    homes
}

/// Looper-made worktrees whose looper is gone and that no stale run listed here already
/// reports (its note says it).
fn orphans(rows: &[Row]) -> Vec<worktree::Found> {
    let reported = |f: &worktree::Found| {
        rows.iter().any(|r| {
            r.stale.is_some()
                && r.state.worktree_path.as_deref() == Some(&*f.record.path.to_string_lossy())
        })
    };
    worktree_homes(rows)
        .iter()
        .flat_map(|h| worktree::scan(h))
        .filter(|f| f.orphaned.is_some() && !reported(f))
        .collect()
}

fn orphan_json(f: &worktree::Found) -> OrphanJson {
    OrphanJson {
        path: f.record.path.clone(),
        branch: f.record.branch.clone(),
        label: f.record.label.clone(),
        run_dir: f.record.run_dir.clone(),
        phase: f.record.phase,
        reason: f.orphaned.clone().unwrap_or_default(),
    }
}

fn orphan_line(f: &worktree::Found) -> String {
    let doing = match f.record.phase {
        Phase::Creating => "was being created",
        Phase::Ready => "was in use",
        Phase::Removing => "was being removed",
    };
    format!(
        "orphan worktree {} (branch {}, label {}) {doing} when its looper died ({}); `looper status --repair-stale` settles it",
        f.record.path.display(),
        f.record.branch,
        f.record.label,
        f.orphaned.as_deref().unwrap_or("gone")
    )
}

pub fn status(args: &StatusArgs) -> Result<i32> {
    let env = discovery::process_env();
    let roots = discovery::state_roots(&args.state_root, &env);
    let registry = if args.all {
        discovery::registry_path(&env)
    } else {
        None
    };
    if args.watch {
        let color = paint::color_for_stdout(args.color);
        let view = watch::FleetView::new(
            roots,
            registry,
            args.repair_stale,
            args.since,
            env.get("TMUX").cloned(),
        );
        return watch::watch_view(view, color);
    }
    let mut rows = load_rows(discover(&roots, registry.as_deref()));
    let mut notes = Vec::new();
    let mut failed = 0;
    if args.repair_stale {
        (notes, failed) = repair_rows(&mut rows);
    }
    // After the repair: a run it closed counts as finished.
    if args.close_finished {
        notes.extend(crate::commands::farm::close_finished());
    }
    let orphaned = orphans(&rows);
    let now = Utc::now();
    let listed = !rows.is_empty();
    let (rows, hidden) = match args.since {
        Some(since) => hide_old_finished(rows, now, since),
        None => (rows, 0),
    };
    let windows = Windows::ask(&rows);
    let mut out = std::io::stdout().lock();
    let r = if args.json {
        for n in &notes {
            crate::say_err!("{n}");
        }
        let mut doc = json_document(&rows, now, &windows);
        doc.hidden_runs = hidden;
        doc.orphan_worktrees = orphaned.iter().map(orphan_json).collect();
        let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        text.push('\n');
        out.write_all(text.as_bytes())
    } else {
        let color = paint::color_for_stdout(args.color);
        let mut text = String::new();
        for n in &notes {
            text.push_str(n);
            text.push('\n');
        }
        if !listed {
            text.push_str(&empty_message(&roots, registry.as_deref()));
        } else {
            let mut lines = Vec::new();
            if !rows.is_empty() {
                let t = table(&rows, now, &windows);
                lines.push(t.header);
                lines.extend(t.lines);
            }
            if hidden > 0 {
                lines.push(Line::plain(hidden_line(hidden, "--since to change")));
            }
            for l in lines {
                text.push_str(&l.render(color, false));
                text.push('\n');
            }
        }
        for f in &orphaned {
            text.push_str(&orphan_line(f));
            text.push('\n');
        }
        out.write_all(text.as_bytes())
    };
    // A closed pipe (`looper status | head`) is not an error worth reporting.
    let _ = r;
    if failed > 0 {
        return Err(Error::WithCode {
            message: format!("{failed} stale run(s) could not be repaired (see above)"),
            code: crate::error::exit_code::AGENT_FAILED,
        });
    }
    Ok(0)
}

pub(crate) fn empty_message(roots: &[PathBuf], registry: Option<&Path>) -> String {
    let roots_text = roots
        .iter()
        .map(|r| r.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let mut s = format!("No looper runs found under {roots_text}");
    if let Some(r) = registry {
        s.push_str(&format!(" or in the registry {}", r.display()));
    }
    s.push_str(
        ".\nStart one with `looper` (or `looper --local`), or pass --state-root DIR / --all.\n",
    );
    s
}

/// Settle a dead looper's worktree (`home`'s record `name`) under its cleanup rules, and
/// record what became of it in its run directory when there is one.
fn settle_orphan(home: &Path, name: &str, run_dir: Option<&Path>, label: &str) -> Option<String> {
    let outcome = worktree::recover(home, name)?;
    if let Some(dir) = run_dir
        && dir.join(crate::records::STATE_FILE).is_file()
    {
        let event = SupervisorEvent::worktree_outcome(&outcome);
        if let Err(e) = record_after(dir, &event, Utc::now()) {
            return Some(format!(
                "repaired: {label}: {} (not recorded: {e})",
                outcome.text()
            ));
        }
    }
    Some(format!("repaired: {label}: {}", outcome.text()))
}

/// Repair every stale row in place, then settle the worktrees of dead loopers (those of the
/// runs just repaired among them, recorded in their runs); returns one line per repair (or
/// failure) and how many failed.
pub(crate) fn repair_rows(rows: &mut [Row]) -> (Vec<String>, usize) {
    let stale: Vec<usize> = (0..rows.len())
        .filter(|i| rows[*i].stale.is_some())
        .collect();
    let items: Vec<(PathBuf, String)> = stale
        .iter()
        .map(|i| {
            (
                rows[*i].dir.clone(),
                rows[*i].stale.clone().unwrap_or_default(),
            )
        })
        .collect();
    let mut notes = Vec::new();
    let mut failed = 0;
    let now = Utc::now();
    for (i, result) in stale.into_iter().zip(repair_all(&items, now)) {
        let row = &mut rows[i];
        match result {
            Ok(r) => {
                notes.push(format!("repaired: {}: {}", row.label(), r.reason));
                row.repaired(&r, now);
            }
            Err(e) => {
                failed += 1;
                notes.push(format!("repair failed: {}: {e}", row.label()));
            }
        }
    }
    for f in orphans(rows) {
        if let Some(n) = settle_orphan(
            &f.record.home,
            &f.record.name,
            f.record.run_dir.as_deref(),
            &f.record.label,
        ) {
            notes.push(n);
            if let Some(row) = rows.iter_mut().find(|r| {
                r.dir.file_name().is_some()
                    && r.dir.file_name() == f.record.run_dir.as_deref().and_then(Path::file_name)
            }) {
                row.reload();
            }
        }
    }
    sort_rows(rows);
    (notes, failed)
}

/// The live view drawing `frame`'s lines about once a second until `q`, Esc or Ctrl-C
/// (`status --watch --host`; its `frame` must not block: it reads answers its pollers
/// already have).
pub fn watch_frames(frame: impl FnMut() -> Vec<String>) -> Result<i32> {
    watch::watch_view(watch::LinesView::new(frame), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::records::fleet::sample_row as row;
    use serde_json::Value as Json;

    #[test]
    fn ages_and_usage_read_well() {
        let now = time::parse("2026-01-01T12:00:00Z").expect("t");
        assert_eq!(age(now, time::parse("2026-01-01T11:59:48Z")), "12s ago");
        assert_eq!(age(now, time::parse("2026-01-01T11:55:00Z")), "5m ago");
        assert_eq!(age(now, time::parse("2026-01-01T09:00:00Z")), "3h ago");
        assert_eq!(age(now, time::parse("2025-12-30T12:00:00Z")), "2d ago");
        assert_eq!(age(now, None), "-");
        let u = UsageView {
            input_tokens: 12_000,
            output_tokens: 345,
            cached_input_tokens: 0,
            cost_usd: 0.4,
        };
        assert_eq!(usage_text(Some(&u)), "12.3k tok $0.40");
        assert_eq!(usage_text(Some(&UsageView::default())), "-");
        assert_eq!(usage_text(None), "-");
    }

    #[test]
    fn worktree_runs_show_their_branch_and_parallel_groups_their_line() {
        let now = time::parse("2026-01-01T00:00:10Z").expect("t");
        let mut rows = Vec::new();
        for (i, status) in [(1, "running"), (2, "stopped")] {
            let mut r = row(&format!("g-{i}"), status, None, "2026-01-01T00:00:00Z");
            r.state.parallel_group = Some("g".into());
            r.state.parallel_index = Some(i);
            r.state.worktree_path = Some(format!("/home/me/proj/.agent-looper/worktrees/g-{i}"));
            r.state.worktree_branch = Some(format!("looper/g-{i}"));
            r.state.commits_ahead = Some(i);
            r.state.files_changed = Some(3);
            if i == 2 {
                r.state.worktree_state = Some("kept".into());
            }
            rows.push(r);
        }
        let lines = render_table(&rows, now);
        assert_eq!(
            lines[0],
            "LABEL  STATUS   AGENT  LOOP  UPDATED  USAGE  BRANCH                    STOP/NOTE  PROJECT"
        );
        assert_eq!(lines[1], "g: 2 parallel runs (1 running, 1 stopped)");
        assert_eq!(
            lines[2],
            "g-1    running  -      -     10s ago  -      looper/g-1 +1c 3f         -          proj"
        );
        assert_eq!(
            lines[3],
            "g-2    stopped  -      -     10s ago  -      looper/g-2 +2c 3f (kept)  -          proj"
        );
        let doc = serde_json::to_value(render_json(&rows, now)).expect("json");
        assert_eq!(doc["runs"][1]["group"], "g");
        assert_eq!(doc["runs"][1]["worktree"]["state"], "kept");
        assert_eq!(doc["runs"][1]["commits_ahead"], 2);
        assert_eq!(doc["runs"][1]["branch"], "looper/g-2");
    }

    #[test]
    fn the_status_cell_is_coloured_by_meaning_and_widths_ignore_the_escapes() {
        let now = time::parse("2026-01-01T00:00:10Z").expect("t");
        let mut stale = row("gone", "running", None, "2026-01-01T00:00:00Z");
        stale.stale = Some("supervisor process 1 is no longer running".into());
        let mut failed = row("bad", "error", Some(1), "2026-01-01T00:00:00Z");
        failed.state.stop_reason = Some("command exited with code 1".into());
        failed.state.last_error_line = Some("Missing environment variable: KEY\x1b[2J".into());
        let mut asks = row("asks", "running", None, "2026-01-01T00:00:00Z");
        asks.state.open_asks = Some(vec![OpenAskView {
            id: "a1".into(),
            kind: "question".into(),
            question: "which db?".into(),
            choices: Vec::new(),
        }]);
        let rows = [
            asks,
            stale,
            failed,
            row("ok", "running", None, "2026-01-01T00:00:00Z"),
            row("done", "stopped", Some(0), "2026-01-01T00:00:00Z"),
        ];
        let tones: Vec<Tone> = rows.iter().map(tone).collect();
        assert_eq!(
            tones,
            [
                Tone::Person,
                Tone::Stale,
                Tone::Error,
                Tone::Running,
                Tone::Finished
            ]
        );
        let t = table(&rows, now, &Windows::default());
        let plain: Vec<String> = t.lines.iter().map(Line::text).collect();
        // Columns line up on the plain text whether or not colour is added.
        let col = |l: &str| l.find("10s ago");
        assert!(
            plain
                .iter()
                .filter(|l| !l.starts_with("  └"))
                .all(|l| col(l) == col(&plain[0])),
            "{plain:?}"
        );
        let coloured: Vec<String> = t.lines.iter().map(|l| l.render(true, false)).collect();
        assert!(
            coloured[1].starts_with("gone   \x1b[1m\x1b[33mstale\x1b[0m"),
            "{:?}",
            coloured[1]
        );
        assert!(
            coloured[2].contains("\x1b[1m\x1b[31merror\x1b[0m"),
            "{:?}",
            coloured[2]
        );
        // The failure's own words: sanitised first, then coloured.
        assert_eq!(
            coloured[3],
            "  └ \x1b[31mMissing environment variable: KEY (hint: missing credentials; export the key in the shell that starts the looper, or set it in agents.<name>.env)\x1b[0m"
        );
        assert!(
            coloured[4].contains("\x1b[32mrunning\x1b[0m"),
            "{:?}",
            coloured[4]
        );
        assert!(
            coloured[5].contains("\x1b[2mstopped\x1b[0m"),
            "{:?}",
            coloured[5]
        );
        assert!(
            coloured[0].contains("\x1b[1m\x1b[35mrunning\x1b[0m"),
            "{:?}",
            coloured[0]
        );
        // Without colour, not one escape.
        assert!(
            t.lines
                .iter()
                .all(|l| !l.render(false, false).contains('\x1b'))
        );
        assert_eq!(
            t.row_line,
            [0, 1, 2, 4, 5],
            "the detail line is under its row"
        );
    }

    #[test]
    fn a_live_run_in_tmux_gets_a_window_cell_and_json_fields() {
        let now = time::parse("2026-01-01T00:00:10Z").expect("t");
        let mut r = row("smoke", "running", None, "2026-01-01T00:00:00Z");
        r.state.tmux_socket = Some("/tmp/t/default".into());
        r.state.tmux_pane = Some("%3".into());
        let mut gone = r.clone();
        gone.dir = "gone".into();
        gone.state.label = Some("gone".into());
        gone.stale = Some("supervisor process 9 is no longer running".into());
        let w = tmux::PaneWindow {
            session: "looper".into(),
            index: 2,
            name: "my\x1b[31mrepo".into(),
        };
        let windows = Windows::with("/tmp/t/default", "%3", w);
        let rows = [r, gone];
        let lines: Vec<String> = {
            let t = table(&rows, now, &windows);
            std::iter::once(t.header)
                .chain(t.lines)
                .map(|l| l.text())
                .collect()
        };
        assert_eq!(
            lines[0],
            "LABEL  STATUS   AGENT  LOOP  UPDATED  USAGE  WINDOW           STOP/NOTE                                  PROJECT"
        );
        assert!(lines[1].contains("  looper:2 myrepo  "), "{lines:?}");
        assert!(
            lines[2].contains("  -                "),
            "a stale run has no window: {lines:?}"
        );
        let doc = serde_json::to_value(json_document(&rows, now, &windows)).expect("json");
        assert_eq!(doc["runs"][0]["tmux_pane"], "%3");
        assert_eq!(doc["runs"][0]["tmux_socket"], "/tmp/t/default");
        assert_eq!(doc["runs"][0]["tmux_window"]["target"], "looper:2");
        assert_eq!(doc["runs"][0]["tmux_window"]["index"], 2);
        assert_eq!(doc["runs"][0]["tmux_window"]["name"], "my\x1b[31mrepo");
        assert_eq!(doc["runs"][1]["tmux_window"], Json::Null);
        assert_eq!(doc["hidden_runs"], 0);
        // No window known: no column.
        assert!(!render_table(&rows, now)[0].contains("WINDOW"));
    }

    #[test]
    fn since_hides_old_finished_runs_only() {
        let now = time::parse("2026-01-02T00:00:00Z").expect("t");
        let old = "2026-01-01T00:00:00Z";
        let mut stale = row("stale", "running", None, old);
        stale.stale = Some("gone".into());
        let mut unreadable = row("unreadable", "stopped", None, old);
        unreadable.error = Some("cannot parse state.json".into());
        let rows = vec![
            row("old-stop", "stopped", Some(0), old),
            row("old-error", "error", Some(1), old),
            row("old-int", "interrupted", Some(130), old),
            row("new-stop", "stopped", Some(0), "2026-01-01T23:00:00Z"),
            row("old-running", "running", None, old),
            row("old-asks", "waiting_for_answer", None, old),
            row("old-paused", "paused", None, old),
            stale,
            unreadable,
        ];
        let (shown, hidden) = hide_old_finished(rows.clone(), now, Duration::from_secs(2 * 3600));
        assert_eq!(hidden, 3);
        let names: Vec<String> = shown.iter().map(Row::label).collect();
        assert_eq!(
            names,
            [
                "new-stop",
                "old-running",
                "old-asks",
                "old-paused",
                "stale",
                "unreadable"
            ]
        );
        assert_eq!(
            hide_old_finished(rows.clone(), now, Duration::from_secs(86_400 * 3)).1,
            0
        );
        assert_eq!(
            hide_old_finished(rows, now, Duration::MAX).1,
            0,
            "no overflow"
        );
        assert_eq!(
            hidden_line(3, "--since to change"),
            "(3 older finished runs hidden; --since to change)"
        );
        assert_eq!(
            hidden_line(1, "h shows them"),
            "(1 older finished run hidden; h shows them)"
        );
        assert_eq!(short_duration(Duration::from_secs(86_400)), "1d");
        assert_eq!(short_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(short_duration(Duration::from_secs(1800)), "30m");
        assert_eq!(short_duration(Duration::from_secs(90)), "90s");
    }

    #[test]
    fn the_table_aligns_columns() {
        let now = time::parse("2026-01-01T00:00:10Z").expect("t");
        let mut r = row("smoke", "running", None, "2026-01-01T00:00:00Z");
        r.state.agent_name = Some("codex".into());
        r.state.current_loop = Some(3);
        r.state.current_prompt_index = Some(2);
        r.state.total_prompts = Some(3);
        r.state.agent_cwd = Some("/home/me/proj".into());
        let lines = render_table(&[r], now);
        assert_eq!(
            lines[0],
            "LABEL  STATUS   AGENT  LOOP    UPDATED  USAGE  STOP/NOTE  PROJECT"
        );
        assert_eq!(
            lines[1],
            "smoke  running  codex  3 p2/3  10s ago  -      -          proj"
        );
    }
}

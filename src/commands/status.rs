//! `looper status` (D23): the fleet of runs under the state roots (and, with `--all`, every
//! run in the machine-wide registry), what needs attention first; `--json`, `--watch`,
//! `--repair-stale`. Finding and reading the runs is `records::{discovery, fleet}`; this
//! module renders them.
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
//!     "account": string|null,      the account the agent's login belongs to
//!     "rate_limits": [ {"agent", "window", "window_minutes", "used_percent", "resets_at",
//!                       "status", "at"} ]|null,   the latest reading of each usage window
//!     "account_limit": {"until", "reason", "at"}|null,  the account's last limit it saw
//!     "agent_retry": {"agent", "attempt", "max_attempts", "status", "delay_seconds",
//!                     "error", "text", "at"}|null, the CLI retrying by itself right now
//!     "hold": string|null,          account_limit, headroom or daily_budget (a retrying run)
//!     "agent_cli": {"path", "version", "size", "inode", "mtime"}|null,
//!     "agent_cli_changed": {"previous_version", "version", "path", "at"}|null
//!   } ]                             ordered as the table: attention, running, finished
//!   "orphan_worktrees": [ {"path", "branch", "label", "run_dir", "phase", "reason"} ]
//! }
//! ```
//!
//! Fields may be added in later versions of schema 1; removals or changes of meaning bump
//! `version`. See `docs/status-json.md`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::cli::StatusArgs;
use crate::effects::worktree::{self, Phase};
use crate::error::{Error, Result};
use crate::records::accounts::WindowRecord;
use crate::records::discovery::{self, discover};
use crate::records::events::SupervisorEvent;
use crate::records::fleet::{GateView, Row, StateView, UsageView, load_rows, sort_rows};
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

/// The table, one string per line (no trailing newline). The BRANCH column (branch, commits
/// ahead of the base and files changed: `looper/x +2c 3f`) is there when a run recorded it;
/// the runs of a `--parallel` group are listed together under a line naming the group.
pub fn render_table(rows: &[Row], now: DateTime<Utc>) -> Vec<String> {
    let with_branch = rows.iter().any(|r| r.changes().is_some());
    let mut head = vec!["LABEL", "STATUS", "AGENT", "LOOP", "UPDATED", "USAGE"];
    if with_branch {
        head.push("BRANCH");
    }
    head.extend(["STOP/NOTE", "PROJECT"]);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut c = vec![
                clip(&r.label(), 32),
                clip(&r.shown_status(), 16),
                clip(r.state.agent_name.as_deref().unwrap_or("-"), 16),
                loop_text(&r.state),
                age(now, r.updated),
                usage_text(r.state.usage_total.as_ref()),
            ];
            if with_branch {
                c.push(clip(&r.changes().unwrap_or_else(|| "-".into()), 48));
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
    let line = |c: &[String]| {
        let mut s = String::new();
        for (i, cell) in c.iter().enumerate() {
            if i + 1 == c.len() {
                s.push_str(cell);
            } else {
                s.push_str(cell);
                s.extend(std::iter::repeat_n(
                    ' ',
                    widths[i] - cell.chars().count() + 2,
                ));
            }
        }
        s.trim_end().to_string()
    };
    let head: Vec<String> = head.into_iter().map(String::from).collect();
    let mut out = vec![line(&head)];
    let mut group: Option<&str> = None;
    for (r, c) in rows.iter().zip(&cells) {
        let g = r.state.parallel_group.as_deref();
        if g.is_some() && g != group {
            out.push(group_line(rows, r));
        }
        group = g;
        out.push(line(c));
        // A failure's own words (and what to do) on a line of their own: the STOP/NOTE cell
        // is too narrow for them; so are the account's windows and a changed CLI.
        if let Some(d) = r.detail() {
            out.push(format!("  └ {}", clip(&d, 160)));
        }
        for l in crate::records::quota_view::detail_lines(&r.state, now) {
            out.push(format!("  └ {}", clip(&l, 160)));
        }
    }
    out
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

fn run_json(row: &Row) -> RunJson<'_> {
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
        account: s.account.as_deref(),
        rate_limits: s.rate_limits.as_ref(),
        account_limit: s.account_limit.as_ref(),
        agent_retry: s.agent_retry.as_ref(),
        hold: s.hold.as_deref(),
        agent_cli: s.agent_cli.as_ref(),
        agent_cli_changed: s.agent_cli_changed.as_ref(),
    }
}

pub fn render_json(rows: &[Row], now: DateTime<Utc>) -> StatusJson<'_> {
    StatusJson {
        schema: SCHEMA,
        version: SCHEMA_VERSION,
        generated_at: time::format(now),
        runs: rows.iter().map(run_json).collect(),
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
        return watch(&roots, registry.as_deref(), args.repair_stale);
    }
    let mut rows = load_rows(discover(&roots, registry.as_deref()));
    let mut notes = Vec::new();
    let mut failed = 0;
    if args.repair_stale {
        (notes, failed) = repair_rows(&mut rows);
    }
    let orphaned = orphans(&rows);
    let now = Utc::now();
    let mut out = std::io::stdout().lock();
    let r = if args.json {
        for n in &notes {
            crate::say_err!("{n}");
        }
        let mut doc = render_json(&rows, now);
        doc.orphan_worktrees = orphaned.iter().map(orphan_json).collect();
        let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        text.push('\n');
        out.write_all(text.as_bytes())
    } else {
        let mut text = String::new();
        for n in &notes {
            text.push_str(n);
            text.push('\n');
        }
        if rows.is_empty() {
            text.push_str(&empty_message(&roots, registry.as_deref()));
        } else {
            for l in render_table(&rows, now) {
                text.push_str(&l);
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

fn empty_message(roots: &[PathBuf], registry: Option<&Path>) -> String {
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
fn repair_rows(rows: &mut [Row]) -> (Vec<String>, usize) {
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

/// Restores the terminal on every exit path, including a panic unwinding through `watch`.
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        use crossterm::{cursor, execute, terminal};
        let _ = terminal::disable_raw_mode();
        let _ = execute!(
            std::io::stdout(),
            cursor::Show,
            terminal::LeaveAlternateScreen
        );
    }
}

fn watch(roots: &[PathBuf], registry: Option<&Path>, repair_stale: bool) -> Result<i32> {
    watch_frames(|| {
        let mut rows = load_rows(discover(roots, registry));
        let notes = if repair_stale {
            repair_rows(&mut rows).0
        } else {
            Vec::new()
        };
        let now = Utc::now();
        let mut lines = vec![format!(
            "looper status  {}  ({} runs)  q to quit",
            now.with_timezone(&chrono::Local).format("%H:%M:%S"),
            rows.len()
        )];
        lines.extend(notes);
        if rows.is_empty() {
            lines.extend(empty_message(roots, registry).lines().map(str::to_string));
        } else {
            lines.extend(render_table(&rows, now));
        }
        lines
    })
}

/// The live view: draws what `frame` returns about once a second (and on a resize) until
/// `q`, Esc or Ctrl-C. `frame` must not block: `status --watch --host` reads answers its
/// pollers already have.
pub fn watch_frames(mut frame: impl FnMut() -> Vec<String>) -> Result<i32> {
    use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
    use crossterm::{cursor, execute, queue, terminal};
    let term_err = |e: std::io::Error| Error::io("cannot drive the terminal", "stdout", e);
    terminal::enable_raw_mode().map_err(term_err)?;
    let _guard = TerminalGuard;
    execute!(
        std::io::stdout(),
        terminal::EnterAlternateScreen,
        cursor::Hide
    )
    .map_err(term_err)?;
    loop {
        let lines = frame();
        // A pseudo-terminal without a window size reports 0x0: draw as if 100x30.
        let (width, height) = match terminal::size() {
            Ok((w, h)) if w > 0 && h > 0 => (w, h),
            _ => (100, 30),
        };
        let mut out = std::io::stdout().lock();
        queue!(
            out,
            cursor::MoveTo(0, 0),
            terminal::Clear(terminal::ClearType::All)
        )
        .map_err(term_err)?;
        for (i, l) in lines.iter().take(usize::from(height)).enumerate() {
            let clipped: String = l.chars().take(usize::from(width)).collect();
            queue!(out, cursor::MoveTo(0, i as u16)).map_err(term_err)?;
            out.write_all(clipped.as_bytes()).map_err(term_err)?;
        }
        out.flush().map_err(term_err)?;
        drop(out);
        // Wait up to a second for a key or a resize; either redraws or quits.
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() || !event::poll(left).map_err(term_err)? {
                break;
            }
            match event::read().map_err(term_err)? {
                Event::Key(k) if k.kind != KeyEventKind::Release => {
                    let ctrl_c =
                        k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                    if ctrl_c || matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) {
                        return Ok(0);
                    }
                }
                Event::Resize(..) => break,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::records::fleet::sample_row as row;

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

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
//!     "needs_input": bool,          a live run waits for a person (issue 17)
//!     "open_asks": [ {"id", "kind": "question"|"approval", "question", "choices"} ]
//!   } ]                             ordered as the table: attention, running, finished
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
use crate::error::{Error, Result};
use crate::records::discovery::{self, discover};
use crate::records::fleet::{OpenAskView, Row, StateView, UsageView, load_rows, sort_rows};
use crate::records::repair::repair_all;
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
    /// A live run waits for a person (an open ask or approval, issue 17).
    pub needs_input: bool,
    /// What it waits for, oldest first.
    pub open_asks: &'a [OpenAskView],
}

/// The whole `--json` document.
#[derive(Debug, serde::Serialize)]
pub struct StatusJson<'a> {
    pub schema: &'static str,
    pub version: u32,
    pub generated_at: String,
    pub runs: Vec<RunJson<'a>>,
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

fn loop_text(s: &StateView) -> String {
    match (s.current_loop, s.current_prompt_index, s.total_prompts) {
        (None, _, _) => "-".into(),
        (Some(l), Some(p), Some(t)) => format!("{l} p{p}/{t}"),
        (Some(l), Some(p), None) => format!("{l} p{p}"),
        (Some(l), None, _) => l.to_string(),
    }
}

/// A cell: sanitised first (D35), so a cut never lands inside an escape sequence.
fn clip(s: &str, max: usize) -> String {
    let clean = crate::text::sanitize_line(s);
    let flat: String = clean.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max {
        let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        flat
    }
}

/// The table, one string per line (no trailing newline).
pub fn render_table(rows: &[Row], now: DateTime<Utc>) -> Vec<String> {
    const HEAD: [&str; 8] = [
        "LABEL",
        "STATUS",
        "AGENT",
        "LOOP",
        "UPDATED",
        "USAGE",
        "STOP/NOTE",
        "PROJECT",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                clip(&r.label(), 32),
                clip(&r.shown_status(), 20),
                clip(r.state.agent_name.as_deref().unwrap_or("-"), 16),
                loop_text(&r.state),
                age(now, r.updated),
                usage_text(r.state.usage_total.as_ref()),
                clip(&r.note(), 60),
                clip(&r.project().unwrap_or_else(|| "-".into()), 32),
            ]
        })
        .collect();
    let mut widths: [usize; 8] = HEAD.map(str::len);
    for c in &cells {
        for (w, cell) in widths.iter_mut().zip(c.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |c: &[String; 8]| {
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
    let mut out = vec![line(&HEAD.map(String::from))];
    out.extend(cells.iter().map(line));
    out
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
        needs_input: row.needs_person(),
        open_asks: if row.needs_person() {
            s.open_asks.as_deref().unwrap_or_default()
        } else {
            &[]
        },
    }
}

pub fn render_json(rows: &[Row], now: DateTime<Utc>) -> StatusJson<'_> {
    StatusJson {
        schema: SCHEMA,
        version: SCHEMA_VERSION,
        generated_at: time::format(now),
        runs: rows.iter().map(run_json).collect(),
    }
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
    let now = Utc::now();
    let mut out = std::io::stdout().lock();
    let r = if args.json {
        for n in &notes {
            crate::say_err!("{n}");
        }
        let mut text = serde_json::to_string_pretty(&render_json(&rows, now)).unwrap_or_default();
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

/// Repair every stale row in place; returns one line per repair (or failure).
/// Repair every stale row in place; returns one line per repair (or failure) and how many
/// failed.
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
    for (i, result) in stale.into_iter().zip(repair_all(&items, Utc::now())) {
        let row = &mut rows[i];
        match result {
            Ok(r) => {
                notes.push(format!("repaired: {}: {}", row.label(), r.reason));
                row.reload();
            }
            Err(e) => {
                failed += 1;
                notes.push(format!("repair failed: {}: {e}", row.label()));
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
        let mut rows = load_rows(discover(roots, registry));
        let notes = if repair_stale {
            repair_rows(&mut rows).0
        } else {
            Vec::new()
        };
        let now = Utc::now();
        // A pseudo-terminal without a window size reports 0x0: draw as if 100x30.
        let (width, height) = match terminal::size() {
            Ok((w, h)) if w > 0 && h > 0 => (w, h),
            _ => (100, 30),
        };
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

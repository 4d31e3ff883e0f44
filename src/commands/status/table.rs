//! The status table: its cells (ages, usage, loop, clipped and sanitised text, D35), the
//! STATUS cell's tone, the lines of a `--parallel` group, and `--since` hiding old finished
//! runs.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::paint::{Line, Tone};
use super::windows::Windows;
use crate::effects::tmux;
use crate::records::fleet::{Row, StateView, UsageView};

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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::records::fleet::{OpenAskView, sample_row as row};
    use crate::records::time;

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

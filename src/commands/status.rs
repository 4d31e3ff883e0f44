//! `looper status` (D23): the fleet of runs under the state roots (and, with `--all`, every
//! run in the machine-wide registry), what needs attention first; `--json`, `--watch`,
//! `--repair-stale`, `--since` (finished runs older than it hidden), `--color`. Finding and
//! reading the runs is `records::{discovery, fleet}`, asking tmux where live runs' windows
//! are is `effects::tmux` (through `windows`); this module renders them (`table`: the cells
//! and the table, `json`: the `--json` document and its schema, `repair`: the notes of
//! `--repair-stale` and the orphan worktrees, `paint`: tones and colour, `watch`: the live
//! view, its selection and Enter).

mod json;
mod paint;
mod repair;
mod table;
mod watch;
mod windows;

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::Utc;

use self::json::orphan_json;
pub use self::json::{
    OrphanJson, RunJson, SCHEMA, SCHEMA_VERSION, StatusJson, WindowJson, WorktreeJson,
    json_document, render_json,
};
pub use self::paint::{Line, Tone};
pub(crate) use self::repair::repair_rows;
use self::repair::{orphan_line, orphans};
pub use self::table::{
    Table, age, clip, finished, hidden_line, hide_old_finished, loop_text, render_table,
    short_duration, table, tone, usage_text, window_text,
};
pub use self::windows::{Windows, supervisor_alive};
use crate::cli::StatusArgs;
use crate::error::{Error, Result};
use crate::records::discovery::{self, discover};
use crate::records::fleet::load_rows;

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

/// The live view drawing `frame`'s lines about once a second until `q`, Esc or Ctrl-C
/// (`status --watch --host`; its `frame` must not block: it reads answers its pollers
/// already have).
pub fn watch_frames(frame: impl FnMut() -> Vec<String>) -> Result<i32> {
    watch::watch_view(watch::LinesView::new(frame), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::effects::tmux;
    use crate::records::fleet::sample_row as row;
    use crate::records::time;
    use serde_json::Value as Json;

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
}

//! `looper status --repair-stale`: closing stale runs and settling the worktrees of dead
//! loopers, one note per repair; and finding those orphan worktrees for the listing.

use std::path::{Path, PathBuf};

use chrono::Utc;

use crate::effects::worktree::{self, Phase};
use crate::records::events::SupervisorEvent;
use crate::records::fleet::{Row, sort_rows};
use crate::records::repair::{record_after, repair_all};

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
pub(super) fn orphans(rows: &[Row]) -> Vec<worktree::Found> {
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

pub(super) fn orphan_line(f: &worktree::Found) -> String {
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

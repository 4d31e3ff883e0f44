//! The end of a looper-made worktree: kept or removed under its cleanup rules at its run's
//! end ([`finish`]), or, when its looper died, found by [`scan`] and settled by [`recover`]
//! (a creation rolled back, a removal finished, a worktree whose run died judged).

use std::fs;
use std::path::{Path, PathBuf};

use git2::{BranchType, Repository};

use super::inspect::{Changes, facts};
use super::{
    GIT_LOCKED, Phase, Record, WorktreeError, git_err, io_err, lock_home, meta_dir, prune_admin,
    record_path, roll_back, trust,
};
use crate::engine::worktree::{self as policy, Decision, Facts, KeepReason};

/// What became of a worktree.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub path: PathBuf,
    pub branch: String,
    pub removed: bool,
    pub branch_removed: bool,
    /// Why it was kept (empty when removed).
    pub reasons: Vec<KeepReason>,
    pub facts: Facts,
    pub changes: Changes,
    /// A step that failed (the worktree is then kept, or partly removed and recorded as
    /// `removing` for `--repair-stale` to finish).
    pub error: Option<String>,
}

impl Outcome {
    /// One line for the console and the records.
    pub fn text(&self) -> String {
        let mut s = if self.removed {
            format!(
                "worktree {} removed{}: it changed nothing that is not on another branch",
                self.path.display(),
                if self.branch_removed {
                    format!(", and its branch {}", self.branch)
                } else {
                    format!(" (branch {} kept: it moved meanwhile)", self.branch)
                }
            )
        } else {
            format!(
                "worktree {} kept on branch {}: {}",
                self.path.display(),
                self.branch,
                policy::reasons_text(&self.reasons)
            )
        };
        if let Some(e) = &self.error {
            s.push_str(&format!(" ({e})"));
        }
        s
    }
}

/// The run is over: keep or remove the worktree under its cleanup rules (D30), holding the
/// lock, with the facts read just before acting.
pub fn finish(record: &Record, pane_kept: bool) -> Outcome {
    match lock_home(&record.home) {
        Ok(_lock) => settle(record.clone(), pane_kept),
        Err(e) => kept_unknown(record, e.to_string()),
    }
}

fn kept_unknown(record: &Record, why: String) -> Outcome {
    Outcome {
        path: record.path.clone(),
        branch: record.branch.clone(),
        removed: false,
        branch_removed: false,
        reasons: vec![KeepReason::Unknown(why)],
        facts: Facts::default(),
        changes: Changes::default(),
        error: None,
    }
}

/// Decide and act; the caller holds the lock.
fn settle(mut record: Record, pane_kept: bool) -> Outcome {
    let (facts, changes) = match facts(&record, pane_kept) {
        Ok(f) => f,
        Err(e) => {
            release(&record);
            return kept_unknown(&record, e.to_string());
        }
    };
    let mut out = Outcome {
        path: record.path.clone(),
        branch: record.branch.clone(),
        removed: false,
        branch_removed: false,
        reasons: Vec::new(),
        facts,
        changes: changes.clone(),
        error: None,
    };
    match policy::decide(record.cleanup, &facts) {
        Decision::Keep(reasons) => {
            out.reasons = reasons;
            release(&record);
        }
        Decision::Remove => {
            let repo = match Repository::open(&record.home) {
                Ok(r) => r,
                Err(e) => {
                    release(&record);
                    return kept_unknown(&record, e.message().to_string());
                }
            };
            let tip = repo
                .find_reference(&format!("refs/heads/{}", record.branch))
                .ok()
                .and_then(|r| r.target())
                .map(|t| t.to_string());
            record.phase = Phase::Removing;
            record.removing_tip = tip;
            if let Err(e) = record.save() {
                release(&record);
                out.reasons = vec![KeepReason::Unknown(e.to_string())];
                return out;
            }
            match remove(&repo, &record) {
                Ok(branch_removed) => {
                    out.removed = true;
                    out.branch_removed = branch_removed;
                }
                Err(e) => {
                    out.removed = !record.path.exists();
                    out.error = Some(format!(
                        "removal did not finish: {e}; `looper status --repair-stale` finishes it"
                    ));
                }
            }
        }
    }
    out
}

/// A kept worktree is the user's now: git's lock is lifted and the looper's record dropped.
fn release(record: &Record) {
    if let Ok(repo) = Repository::open(&record.home) {
        let locked = repo
            .commondir()
            .join("worktrees")
            .join(&record.name)
            .join(GIT_LOCKED);
        let _ = fs::remove_file(locked);
    }
    let _ = fs::remove_file(record.file());
}

/// Remove a worktree judged removable (phase `removing`): the directory, git's entry, the
/// branch if it is still where it was judged, the trust recorded for it, then the record.
/// Returns whether the branch was deleted.
fn remove(repo: &Repository, record: &Record) -> Result<bool, WorktreeError> {
    if record.path.exists() {
        fs::remove_dir_all(&record.path).map_err(io_err("cannot remove", &record.path))?;
    }
    prune_admin(repo, &record.name);
    let mut branch_removed = false;
    if let Ok(mut b) = repo.find_branch(&record.branch, BranchType::Local) {
        let tip = b.get().target().map(|t| t.to_string());
        if tip.is_some() && tip == record.removing_tip {
            b.delete()
                .map_err(git_err("cannot delete the branch in", &record.home))?;
            branch_removed = true;
        }
    } else {
        branch_removed = true;
    }
    for entry in &record.trust {
        let _ = trust::undo(entry);
    }
    let file = record.file();
    fs::remove_file(&file).map_err(io_err("cannot remove", &file))?;
    Ok(branch_removed)
}

/// A looper-made worktree found by [`scan`].
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    pub record: Record,
    /// Why its looper is gone; `None` while it lives (the worktree is in use).
    pub orphaned: Option<String>,
}

/// The records under a main worktree's [`ROOT`]: every looper-made worktree not yet settled.
pub fn scan(home: &Path) -> Vec<Found> {
    let Ok(entries) = fs::read_dir(meta_dir(home)) else {
        return Vec::new();
    };
    let mut found: Vec<Found> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| {
            let bytes = fs::read(e.path()).ok()?;
            let record: Record = serde_json::from_slice(&bytes).ok()?;
            Some(Found {
                orphaned: record.gone(),
                record,
            })
        })
        .collect();
    found.sort_by(|a, b| a.record.name.cmp(&b.record.name));
    found
}

/// Settle a worktree whose looper died (see the module docs): a creation is rolled back, a
/// removal finished, a worktree whose run died is judged under its cleanup rules. `None`
/// when its looper is still alive (or it was settled meanwhile).
pub fn recover(home: &Path, name: &str) -> Option<Outcome> {
    let _lock = lock_home(home).ok()?;
    let bytes = fs::read(record_path(home, name)).ok()?;
    let record: Record = serde_json::from_slice(&bytes).ok()?;
    record.gone()?;
    Some(recover_locked(record))
}

fn recover_locked(record: Record) -> Outcome {
    match record.phase {
        Phase::Creating => {
            if let Ok(repo) = Repository::open(&record.home) {
                roll_back(&repo, &record);
            } else {
                let _ = fs::remove_file(record.file());
            }
            Outcome {
                path: record.path.clone(),
                branch: record.branch.clone(),
                removed: true,
                branch_removed: true,
                reasons: Vec::new(),
                facts: Facts::default(),
                changes: Changes::default(),
                error: Some("its looper died while creating it".into()),
            }
        }
        Phase::Ready => settle(record, false),
        Phase::Removing => {
            // Judged removable before; judged again if its directory is still there (it
            // may have been worked in since).
            if record.path.exists() {
                let mut again = record;
                again.phase = Phase::Ready;
                return settle(again, false);
            }
            let mut out = Outcome {
                path: record.path.clone(),
                branch: record.branch.clone(),
                removed: true,
                branch_removed: false,
                reasons: Vec::new(),
                facts: Facts::default(),
                changes: Changes::default(),
                error: None,
            };
            match Repository::open(&record.home) {
                Ok(repo) => match remove(&repo, &record) {
                    Ok(b) => out.branch_removed = b,
                    Err(e) => out.error = Some(e.to_string()),
                },
                Err(e) => out.error = Some(e.message().to_string()),
            }
            out
        }
    }
}

/// Creations and removals a dead looper left unfinished are settled by the next creation,
/// under the same lock (the caller holds it).
pub(super) fn recover_crashed(home: &Path) {
    for f in scan(home) {
        if f.orphaned.is_some() && f.record.phase != Phase::Ready {
            let _ = recover_locked(f.record);
        }
    }
}

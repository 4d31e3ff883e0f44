//! Looper-made git worktrees (issue 16, D30), through git2: one per run, on a branch of its
//! own, created race-free and never left half-made, inspected (commits ahead of the base,
//! files changed, dirty paths), and removed only under the rules that never lose work.
//!
//! # Where they live
//!
//! `<main worktree>/.agent-looper/worktrees/<name>`, next to the run directories the looper
//! already keeps in `.agent-looper/`: one place to look and to clean, on the same filesystem
//! as the repository (nothing crosses devices, no write access is needed outside the
//! repository), and found again from the repository alone, so `looper status` and
//! `--repair-stale` need no registry. The directory holds a `.gitignore` of `*`, so the main
//! checkout's `git status` never shows it, whether or not the project ignores
//! `.agent-looper/` (git does not read ignore files above a work tree's root, so each worktree
//! keeps its own rules). The main worktree is the repository's (`commondir`); a bare
//! repository's linked worktrees get theirs in the checkout the looper was started from.
//!
//! # Records and crash safety
//!
//! `.agent-looper/worktrees/.looper/<name>.json` is the looper's record of a worktree it made:
//! written (fsynced) *before* anything is created (`creating`), marked `ready` once the
//! worktree is complete, `removing` before the first thing is deleted, and deleted last. Every
//! creation and removal holds `.looper/lock` (`flock`), so two loopers never work on the same
//! names at once (libgit2 itself races on `.git/worktrees` for a repository's first
//! worktree). A looper killed at any point leaves a record naming what it was doing and its
//! pid: [`scan`] finds the records whose looper is gone and [`recover`] finishes the job —
//! rolls a creation back, finishes a removal, or applies the cleanup rules to a worktree whose
//! run died — under the same rules as the end of a run.

mod inspect;
mod settle;
pub mod trust;

pub use inspect::{Changes, changes, facts};
pub use settle::{Found, Outcome, finish, recover, scan};

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use git2::{BranchType, ErrorCode, Repository, WorktreeAddOptions, WorktreePruneOptions};
use serde::{Deserialize, Serialize};

use crate::effects::procinfo;
use crate::engine::worktree::CleanupPolicy;

/// Where looper-made worktrees live, relative to the main worktree.
pub const ROOT: &str = ".agent-looper/worktrees";
/// The looper's records and lock, inside [`ROOT`] (a name no worktree can have: worktree
/// names never start with a dot).
const META: &str = ".looper";
const LOCK: &str = "lock";
const RECORD_VERSION: u32 = 1;
/// git's own lock reason file in a worktree's admin directory (`git worktree lock`).
pub(crate) const GIT_LOCKED: &str = "locked";

/// Every failure of this module, worded for the person running the looper.
#[derive(Debug, thiserror::Error)]
pub enum WorktreeError {
    #[error(
        "{dir} is not inside a git work tree; --worktree needs a repository (git init, and a first commit)"
    )]
    NotARepo { dir: PathBuf },
    #[error(
        "the repository at {dir} has no commits yet; make a first commit before using --worktree"
    )]
    Unborn { dir: PathBuf },
    #[error("--base {base:?} does not name a commit in {dir}: {why}")]
    BadBase {
        base: String,
        dir: PathBuf,
        why: String,
    },
    #[error("{name:?} is not a valid git branch name; choose another --branch")]
    BadBranch { name: String },
    #[error(
        "branch {branch} already exists in {dir}; pass another --branch or --label, or delete it (git branch -D {branch}) if it holds nothing you need"
    )]
    BranchExists { branch: String, dir: PathBuf },
    #[error(
        "{path} already exists (a worktree kept from an earlier run?); pass another --label, or remove it: git worktree remove {path} (git worktree prune when its directory is already gone)"
    )]
    PathTaken { path: PathBuf },
    #[error("{action} {path}: {}", source.message())]
    Git {
        action: &'static str,
        path: PathBuf,
        source: git2::Error,
    },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

pub(crate) fn git_err(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(git2::Error) -> WorktreeError {
    move |source| WorktreeError::Git {
        action,
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> WorktreeError {
    move |source| WorktreeError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// What the looper is doing with a worktree, as its record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Being created: the run has not started in it.
    Creating,
    /// Complete; its run may be under way.
    Ready,
    /// Judged removable and being removed.
    Removing,
}

/// The looper's record of a worktree it made (see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub version: u32,
    pub phase: Phase,
    /// The worktree's name: its directory under [`ROOT`] and its admin directory in git.
    pub name: String,
    pub path: PathBuf,
    pub branch: String,
    /// The commit the branch started from.
    pub base: String,
    /// The main worktree, whose `.agent-looper/worktrees` holds this one.
    pub home: PathBuf,
    pub cleanup: CleanupPolicy,
    pub label: String,
    /// The run working in it (its directory is named before the worktree is made).
    pub run_dir: Option<PathBuf>,
    /// The looper that made it: while that process lives, the worktree is in use.
    pub pid: u32,
    pub pid_identity: Option<String>,
    #[serde(with = "crate::records::time::required")]
    pub created_at: DateTime<Utc>,
    /// Trust recorded for it in a TUI's config, undone when it is removed.
    #[serde(default)]
    pub trust: Vec<trust::Entry>,
    /// While removing: the branch tip that was judged safe to delete. A branch that moved
    /// since is kept.
    #[serde(default)]
    pub removing_tip: Option<String>,
}

impl Record {
    fn file(&self) -> PathBuf {
        record_path(&self.home, &self.name)
    }

    fn save(&self) -> Result<(), WorktreeError> {
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        let path = self.file();
        crate::records::fsio::write_atomic(&path, &bytes, true).map_err(|e| WorktreeError::Io {
            action: "cannot write the worktree record",
            path,
            source: io::Error::other(e.to_string()),
        })
    }

    /// Why its looper no longer stands behind it, or `None` while that process lives.
    pub fn gone(&self) -> Option<String> {
        procinfo::stale_reason(Some(i64::from(self.pid)), self.pid_identity.as_deref())
    }
}

pub(crate) fn meta_dir(home: &Path) -> PathBuf {
    home.join(ROOT).join(META)
}

pub(crate) fn record_path(home: &Path, name: &str) -> PathBuf {
    meta_dir(home).join(format!("{name}.json"))
}

/// A worktree name from a run label: the safe file-name characters of the label, never
/// starting with a dot (those names are the looper's own).
pub fn name_for(label: &str) -> String {
    // What git refuses in a branch name (`..`, a `.lock` ending) cannot come from a label.
    let mut mapped = crate::text::file_name_chars(label);
    while mapped.contains("..") {
        mapped = mapped.replace("..", ".");
    }
    let mapped = mapped.strip_suffix(".lock").unwrap_or(&mapped);
    let trimmed: String = mapped
        .trim_matches(|c| c == '-' || c == '.')
        .chars()
        .take(80)
        .collect();
    if trimmed.is_empty() {
        "worktree".into()
    } else {
        trimmed
    }
}

/// The branch a run's worktree gets unless `--branch` names one.
pub fn default_branch(label: &str) -> String {
    format!("looper/{}", name_for(label))
}

/// The repositories around a directory: the checkout it is in and the main worktree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The work tree containing the directory (maybe itself a linked worktree).
    pub source: PathBuf,
    /// Where `.agent-looper/worktrees` is: the main worktree, or `source` for a bare
    /// repository's linked worktrees.
    pub home: PathBuf,
}

pub(crate) fn clean(p: &Path) -> PathBuf {
    p.components().collect()
}

/// Find the checkout containing `dir` and its main worktree.
pub fn locate(dir: &Path) -> Result<Location, WorktreeError> {
    let repo = Repository::discover(dir).map_err(|e| match e.code() {
        ErrorCode::NotFound => WorktreeError::NotARepo {
            dir: dir.to_path_buf(),
        },
        _ => WorktreeError::Git {
            action: "cannot open the repository containing",
            path: dir.to_path_buf(),
            source: e,
        },
    })?;
    let source = match repo.workdir() {
        Some(w) if !repo.is_bare() => clean(w),
        _ => {
            return Err(WorktreeError::NotARepo {
                dir: dir.to_path_buf(),
            });
        }
    };
    let home = Repository::open(repo.commondir())
        .ok()
        .and_then(|main| main.workdir().map(clean))
        .unwrap_or_else(|| source.clone());
    Ok(Location { source, home })
}

/// The lock every creation and removal holds (released when dropped: `flock`).
pub(crate) fn lock_home(home: &Path) -> Result<File, WorktreeError> {
    let root = home.join(ROOT);
    let meta = root.join(META);
    fs::create_dir_all(&meta).map_err(io_err("cannot create", &meta))?;
    // Keeps the worktrees out of the main checkout's `git status` (see the module docs).
    let ignore = root.join(".gitignore");
    if !ignore.exists() {
        fs::write(
            &ignore,
            "# agent-looper's worktrees: never part of this checkout\n*\n",
        )
        .map_err(io_err("cannot write", &ignore))?;
    }
    let path = meta.join(LOCK);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err("cannot open the worktree lock", &path))?;
    file.lock()
        .map_err(io_err("cannot take the worktree lock", &path))?;
    Ok(file)
}

/// What to create.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    /// Any directory of the checkout to branch from (the agent's cwd).
    pub dir: &'a Path,
    pub name: &'a str,
    pub branch: &'a str,
    /// A revision of that checkout; `None` is its `HEAD`.
    pub base: Option<&'a str>,
    pub cleanup: CleanupPolicy,
    pub label: &'a str,
    pub run_dir: Option<&'a Path>,
}

/// Create the worktree on a new branch at the base. On any failure nothing is left behind:
/// what this call created is removed again before the error is returned, and a looper killed
/// meanwhile leaves a `creating` record that [`recover`] rolls back.
pub fn create(req: &Request<'_>) -> Result<Record, WorktreeError> {
    let loc = locate(req.dir)?;
    let repo = Repository::open(&loc.source)
        .map_err(git_err("cannot open the repository", &loc.source))?;
    let base = match req.base {
        Some(rev) => repo
            .revparse_single(rev)
            .and_then(|o| o.peel_to_commit())
            .map_err(|e| WorktreeError::BadBase {
                base: rev.to_string(),
                dir: loc.source.clone(),
                why: e.message().to_string(),
            })?,
        None => {
            repo.head()
                .and_then(|h| h.peel_to_commit())
                .map_err(|_| WorktreeError::Unborn {
                    dir: loc.source.clone(),
                })?
        }
    };
    if !git2::Branch::name_is_valid(req.branch).unwrap_or(false) {
        return Err(WorktreeError::BadBranch {
            name: req.branch.to_string(),
        });
    }
    let _lock = lock_home(&loc.home)?;
    settle::recover_crashed(&loc.home);
    let path = loc.home.join(ROOT).join(req.name);
    let admin = repo.commondir().join("worktrees").join(req.name);
    if path.exists() || admin.exists() || record_path(&loc.home, req.name).exists() {
        return Err(WorktreeError::PathTaken { path });
    }
    if repo.find_branch(req.branch, BranchType::Local).is_ok() {
        return Err(WorktreeError::BranchExists {
            branch: req.branch.to_string(),
            dir: loc.source.clone(),
        });
    }
    let me = std::process::id();
    let mut record = Record {
        version: RECORD_VERSION,
        phase: Phase::Creating,
        name: req.name.to_string(),
        path: path.clone(),
        branch: req.branch.to_string(),
        base: base.id().to_string(),
        home: loc.home.clone(),
        cleanup: req.cleanup,
        label: req.label.to_string(),
        run_dir: req.run_dir.map(Path::to_path_buf),
        pid: me,
        pid_identity: procinfo::pid_identity(me as i32),
        created_at: Utc::now(),
        trust: Vec::new(),
        removing_tip: None,
    };
    record.save()?;
    let made = (|| {
        let branch = repo
            .branch(req.branch, &base, false)
            .map_err(git_err("cannot create the branch in", &loc.source))?;
        // libgit2 makes `.git/worktrees` with an exclusive mkdir when it is missing, which
        // fails for the second of two first worktrees: make it first.
        let parent = repo.commondir().join("worktrees");
        fs::create_dir_all(&parent).map_err(io_err("cannot create", &parent))?;
        let mut opts = WorktreeAddOptions::new();
        // Locked from the start (git's own lock: `git worktree remove` refuses it, `prune`
        // leaves it), with a reason once it is complete.
        opts.lock(true).reference(Some(branch.get()));
        repo.worktree(req.name, &path, Some(&opts))
            .map_err(git_err("cannot create the worktree", &path))?;
        let reason = format!(
            "agent-looper: label {}, pid {me}{}",
            req.label,
            req.run_dir
                .map(|d| format!(", run {}", d.display()))
                .unwrap_or_default()
        );
        let locked = admin.join(GIT_LOCKED);
        fs::write(&locked, reason).map_err(io_err("cannot write", &locked))?;
        Ok::<(), WorktreeError>(())
    })();
    if let Err(e) = made {
        roll_back(&repo, &record);
        return Err(e);
    }
    record.phase = Phase::Ready;
    if let Err(e) = record.save() {
        roll_back(&repo, &record);
        return Err(e);
    }
    Ok(record)
}

/// Undo a creation: the directory, git's admin entry, the branch (only while it is still at
/// the base: nothing was committed on it), the record.
pub(crate) fn roll_back(repo: &Repository, record: &Record) {
    let _ = fs::remove_dir_all(&record.path);
    prune_admin(repo, &record.name);
    if let Ok(mut b) = repo.find_branch(&record.branch, BranchType::Local)
        && b.get().target().map(|t| t.to_string()).as_deref() == Some(record.base.as_str())
    {
        let _ = b.delete();
    }
    let _ = fs::remove_file(record.file());
}

/// Drop git's admin entry of a worktree whose directory is gone (or going).
pub(crate) fn prune_admin(repo: &Repository, name: &str) {
    if let Ok(wt) = repo.find_worktree(name) {
        let mut opts = WorktreePruneOptions::new();
        opts.valid(true).locked(true).working_tree(false);
        if wt.prune(Some(&mut opts)).is_err() {
            let _ = fs::remove_dir_all(repo.commondir().join("worktrees").join(name));
        }
    } else {
        let admin = repo.commondir().join("worktrees").join(name);
        if admin.exists() {
            let _ = fs::remove_dir_all(admin);
        }
    }
}

/// Save trust entries recorded after creation (so a removal by `--repair-stale` undoes them).
pub fn note_trust(record: &mut Record, entry: trust::Entry) -> Result<(), WorktreeError> {
    let _lock = lock_home(&record.home)?;
    record.trust.push(entry);
    record.save()
}

#[cfg(test)]
mod tests;

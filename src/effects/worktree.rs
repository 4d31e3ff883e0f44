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

pub mod trust;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use git2::{
    BranchType, ErrorCode, Oid, Repository, Sort, StatusOptions, WorktreeAddOptions,
    WorktreePruneOptions,
};
use serde::{Deserialize, Serialize};

use crate::effects::procinfo;
use crate::engine::worktree::{self as policy, CleanupPolicy, Decision, Facts, KeepReason};

/// Where looper-made worktrees live, relative to the main worktree.
pub const ROOT: &str = ".agent-looper/worktrees";
/// The looper's records and lock, inside [`ROOT`] (a name no worktree can have: worktree
/// names never start with a dot).
const META: &str = ".looper";
const LOCK: &str = "lock";
const RECORD_VERSION: u32 = 1;
/// git's own lock reason file in a worktree's admin directory (`git worktree lock`).
const GIT_LOCKED: &str = "locked";

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

fn git_err(action: &'static str, path: &Path) -> impl FnOnce(git2::Error) -> WorktreeError {
    move |source| WorktreeError::Git {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> WorktreeError {
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

fn meta_dir(home: &Path) -> PathBuf {
    home.join(ROOT).join(META)
}

fn record_path(home: &Path, name: &str) -> PathBuf {
    meta_dir(home).join(format!("{name}.json"))
}

/// A worktree name from a run label: the safe file-name characters of the label, never
/// starting with a dot (those names are the looper's own).
pub fn name_for(label: &str) -> String {
    let mapped: String = label
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    // What git refuses in a branch name (`..`, a `.lock` ending) cannot come from a label.
    let mut mapped = mapped;
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

fn clean(p: &Path) -> PathBuf {
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
fn lock_home(home: &Path) -> Result<File, WorktreeError> {
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
    recover_crashed(&loc.home);
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
fn roll_back(repo: &Repository, record: &Record) {
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
fn prune_admin(repo: &Repository, name: &str) {
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

/// Git facts about a checkout against a base: what `looper status` shows and what the
/// cleanup rules decide on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    /// The branch checked out (`None`: detached HEAD).
    pub branch: Option<String>,
    pub head: String,
    pub commits_ahead: u64,
    /// Files its commits or its work tree changed since the base.
    pub files_changed: u64,
    /// Paths `git status` shows (ignored files excluded); measured for the cleanup rules only.
    pub dirty_paths: u64,
}

/// Whether `rel` lies under one of `excluded` (absolute).
fn excluded_path(workdir: &Path, rel: &Path, excluded: &[PathBuf]) -> bool {
    let abs = workdir.join(rel);
    excluded.iter().any(|e| abs.starts_with(e))
}

/// Measure the checkout containing `dir` against `base`: commits ahead (a walk of the
/// history) and files changed (the base's tree against the work tree through the index, a
/// scan like `git status`'s; untracked files count, ignored ones do not). Cheap enough for
/// every loop end.
pub fn changes(dir: &Path, base: &str, excluded: &[PathBuf]) -> Result<Changes, WorktreeError> {
    let repo = Repository::discover(dir).map_err(git_err("cannot open the repository at", dir))?;
    let workdir = repo
        .workdir()
        .map(clean)
        .ok_or_else(|| WorktreeError::NotARepo {
            dir: dir.to_path_buf(),
        })?;
    let head_ref = repo.head().map_err(git_err("cannot read HEAD of", dir))?;
    let branch = head_ref
        .is_branch()
        .then(|| head_ref.shorthand().ok().map(str::to_string))
        .flatten();
    let head = head_ref
        .peel_to_commit()
        .map_err(git_err("cannot read HEAD of", dir))?;
    let base_oid = Oid::from_str(base).map_err(git_err("bad base commit for", dir))?;
    let base_tree = repo
        .find_commit(base_oid)
        .and_then(|c| c.tree())
        .map_err(git_err("cannot find the base commit in", dir))?;
    let commits_ahead = count_walk(&repo, &[head.id()], &[base_oid])?;
    let mut opts = git2::DiffOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .ignore_submodules(false);
    let diff = repo
        .diff_tree_to_workdir_with_index(Some(&base_tree), Some(&mut opts))
        .map_err(git_err("cannot diff the work tree of", dir))?;
    let files_changed = diff
        .deltas()
        .filter(|d| crate::effects::diff::is_change(d, &workdir))
        .filter(|d| {
            d.new_file()
                .path()
                .or(d.old_file().path())
                .is_some_and(|p| !excluded_path(&workdir, p, excluded))
        })
        .count() as u64;
    Ok(Changes {
        branch,
        head: head.id().to_string(),
        commits_ahead,
        files_changed,
        dirty_paths: 0,
    })
}

/// Paths `git status` shows in the work tree at `dir` (changes and untracked files; ignored
/// files do not count, as for `git worktree remove`).
fn dirty_paths(dir: &Path) -> Result<u64, WorktreeError> {
    let repo = Repository::open(dir).map_err(git_err("cannot open the worktree", dir))?;
    let mut opts = StatusOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false)
        .exclude_submodules(false);
    let statuses = repo
        .statuses(Some(&mut opts))
        .map_err(git_err("cannot read the status of", dir))?;
    Ok(statuses.len() as u64)
}

/// Commits reachable from `tips` but from none of `hidden`.
fn count_walk(repo: &Repository, tips: &[Oid], hidden: &[Oid]) -> Result<u64, WorktreeError> {
    let dir = repo.path().to_path_buf();
    let mut walk = repo
        .revwalk()
        .map_err(git_err("cannot walk the history of", &dir))?;
    walk.set_sorting(Sort::NONE)
        .map_err(git_err("cannot walk the history of", &dir))?;
    for t in tips {
        walk.push(*t)
            .map_err(git_err("cannot walk the history of", &dir))?;
    }
    for h in hidden {
        // A hidden tip that is gone (a deleted branch's last commit) hides nothing.
        let _ = walk.hide(*h);
    }
    let mut n = 0;
    for oid in walk {
        oid.map_err(git_err("cannot walk the history of", &dir))?;
        n += 1;
    }
    Ok(n)
}

/// The facts the cleanup rules decide on (and the changes for the records).
pub fn facts(record: &Record, pane_kept: bool) -> Result<(Facts, Changes), WorktreeError> {
    let repo = Repository::open(&record.home)
        .or_else(|_| Repository::discover(&record.path))
        .map_err(git_err("cannot open the repository at", &record.home))?;
    let base = Oid::from_str(&record.base).map_err(git_err("bad base commit in", &record.path))?;
    let ours = format!("refs/heads/{}", record.branch);
    // Tips whose commits would be lost: our branch, and whatever the worktree has checked out
    // (an agent may have switched branches or detached HEAD in it).
    let mut tips = Vec::new();
    if let Ok(r) = repo.find_reference(&ours)
        && let Some(t) = r.target()
    {
        tips.push(t);
    }
    let changes = if record.path.exists() {
        let mut c = changes(&record.path, &record.base, &[])?;
        c.dirty_paths = dirty_paths(&record.path)?;
        if let Ok(h) = Oid::from_str(&c.head)
            && !tips.contains(&h)
        {
            tips.push(h);
        }
        c
    } else {
        Changes::default()
    };
    let mut others = vec![base];
    let refs = repo
        .references()
        .map_err(git_err("cannot list the branches of", &record.home))?;
    for r in refs.flatten() {
        let Ok(name) = r.name() else { continue };
        let is_branch = name.starts_with("refs/heads/") || name.starts_with("refs/remotes/");
        if is_branch
            && name != ours
            && let Ok(c) = r.peel_to_commit()
        {
            others.push(c.id());
        }
    }
    let commits_ahead = count_walk(&repo, &tips, &[base])?;
    let unmerged = count_walk(&repo, &tips, &others)?;
    Ok((
        Facts {
            dirty_paths: changes.dirty_paths,
            commits_ahead,
            unmerged_commits: unmerged,
            pane_kept,
        },
        changes,
    ))
}

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
fn recover_crashed(home: &Path) {
    for f in scan(home) {
        if f.orphaned.is_some() && f.record.phase != Phase::Ready {
            let _ = recover_locked(f.record);
        }
    }
}

/// Write `reason` into git's lock of a worktree (shown by `git worktree list`).
pub fn set_lock_reason(record: &Record, reason: &str) {
    if let Ok(repo) = Repository::open(&record.home) {
        let locked = repo
            .commondir()
            .join("worktrees")
            .join(&record.name)
            .join(GIT_LOCKED);
        let _ = fs::write(locked, reason);
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

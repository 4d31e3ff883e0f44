//! What a checkout changed against a base (`looper status`, the records) and the facts the
//! cleanup rules decide on: commits ahead (a walk of the history), commits no other branch
//! contains, files changed, dirty paths.

use std::path::{Path, PathBuf};

use git2::{Oid, Repository, Sort, StatusOptions};
use serde::{Deserialize, Serialize};

use super::{Record, WorktreeError, clean, git_err};
use crate::engine::worktree::Facts;

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

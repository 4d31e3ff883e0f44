//! The status walk shared by the fingerprint and the dirty snapshot, and the directories that
//! never count in either (the run and log directories, D17), compared in canonical form.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use git2::{Repository, StatusOptions, StatusShow, Statuses};

use super::{GitError, git_err};

/// Paths (relative to the repository root, with a trailing `/`) whose contents must not count.
/// Computed per call because callers may pass directories that appear during the run.
pub(super) struct Exclusions {
    /// The worktree itself lies inside an excluded directory: nothing in it counts.
    everything: bool,
    prefixes: Vec<Vec<u8>>,
}

impl Exclusions {
    /// Byte-wise on repo-relative paths, the form libgit2 reports; this is where the reference
    /// mixed repo-relative and cwd-relative paths.
    pub(super) fn covers(&self, path: &[u8]) -> bool {
        self.everything
            || self.prefixes.iter().any(|prefix| {
                path.starts_with(prefix) || path == &prefix[..prefix.len().saturating_sub(1)]
            })
    }
}

/// Resolves symlinks in the part of `path` that exists, so an excluded directory matches the
/// worktree however either was spelled (`/tmp` vs `/private/tmp`, a symlinked checkout); a log
/// directory may not exist yet, hence the lexical handling of the missing tail.
fn resolve_path(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = absolute.as_path();
    let mut tail = Vec::new();
    loop {
        if let Ok(real) = fs::canonicalize(existing) {
            let mut out = real;
            for component in tail.iter().rev() {
                match component {
                    Component::ParentDir => {
                        out.pop();
                    }
                    Component::Normal(name) => out.push(name),
                    _ => {}
                }
            }
            return out;
        }
        match (existing.parent(), existing.components().next_back()) {
            (Some(parent), Some(last)) => {
                tail.push(last);
                existing = parent;
            }
            _ => return absolute,
        }
    }
}

/// Escapes a repo-relative directory into an anchored, directory-only ignore rule, or `None` when
/// it cannot be expressed (non-UTF-8, line breaks); the post-filter still excludes those paths.
fn ignore_rule_for(prefix: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(prefix).ok()?;
    if text.contains(['\n', '\r']) {
        return None;
    }
    let mut rule = String::with_capacity(text.len() + 8);
    rule.push('/');
    for c in text.chars() {
        if matches!(c, '\\' | '*' | '?' | '[' | ']' | '!' | '#' | ' ') {
            rule.push('\\');
        }
        rule.push(c);
    }
    Some(rule)
}

/// Turns absolute excluded directories into prefixes relative to the repository at
/// `canonical_workdir`. Everything is compared in canonical form, so the agent cwd plays no
/// part (the reference's bug).
pub(super) fn exclusions_for(canonical_workdir: &Path, excluded: &[PathBuf]) -> Exclusions {
    let mut out = Exclusions {
        everything: false,
        prefixes: Vec::new(),
    };
    for dir in excluded {
        let dir = resolve_path(dir);
        if let Ok(rel) = dir.strip_prefix(canonical_workdir) {
            if rel.as_os_str().is_empty() {
                out.everything = true;
            } else {
                let mut prefix = rel.as_os_str().as_bytes().to_vec();
                prefix.push(b'/');
                out.prefixes.push(prefix);
            }
        } else if canonical_workdir.starts_with(&dir) {
            out.everything = true;
        }
    }
    out
}

/// The status walk shared by the fingerprint and the snapshot: HEAD vs index vs worktree with
/// untracked files listed one by one, ignored files left out, nothing written back. Excluded
/// directories become in-memory ignore rules so libgit2 does not even walk a run's log files
/// (tracked files in them still show up; callers filter with [`Exclusions::covers`]).
pub(super) fn status_list<'r>(
    repo: &'r Repository,
    workdir: &Path,
    exclusions: &Exclusions,
) -> Result<Statuses<'r>, GitError> {
    repo.clear_ignore_rules()
        .map_err(git_err("cannot reset in-memory ignore rules of", workdir))?;
    if !exclusions.everything {
        let rules: Vec<String> = exclusions
            .prefixes
            .iter()
            .filter_map(|prefix| ignore_rule_for(prefix))
            .collect();
        if !rules.is_empty() {
            repo.add_ignore_rule(&rules.join("\n"))
                .map_err(git_err("cannot add in-memory ignore rules to", workdir))?;
        }
    }
    let mut opts = StatusOptions::new();
    opts.show(StatusShow::IndexAndWorkdir)
        .include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false)
        .recurse_ignored_dirs(false)
        .include_unmodified(false)
        .include_unreadable(true)
        .exclude_submodules(false)
        .renames_head_to_index(false)
        .renames_index_to_workdir(false)
        .renames_from_rewrites(false)
        .update_index(false);
    repo.statuses(Some(&mut opts)).map_err(git_err(
        "cannot read git status of the work tree at",
        workdir,
    ))
}

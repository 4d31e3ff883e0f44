//! Git effects of the loop, in-process through libgit2: the no-progress fingerprint (D17), backup
//! branches and dirty snapshots (D19), and the one-looper-per-worktree run lock (D18).
//!
//! This file holds what every part shares: the one error type, the opened [`Workspace`] and
//! the small helpers its parts all use. The parts: `walk` (the status walk and the excluded
//! directories), `fingerprint` (D17), `snapshot` (the dirty-backup commit), `backup` (branch
//! names, creating and pruning backups, D19) and `lock` (the run lock, D18).

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use git2::{Commit, ErrorCode, Oid, Repository};

mod backup;
mod fingerprint;
mod lock;
mod snapshot;
mod walk;

pub use backup::{Backup, backup_branch_name};
pub use fingerprint::Fingerprint;
pub use lock::{HolderRecord, LockGuard, acquire_run_lock, lock_path_for};

/// Git modes as stored in trees; libgit2 wants the raw numbers in index entries.
const MODE_FILE: u32 = 0o100_644;
const MODE_EXECUTABLE: u32 = 0o100_755;
const MODE_SYMLINK: u32 = 0o120_000;
const MODE_GITLINK: u32 = 0o160_000;

/// Two runs started in the same second collide on a name; this bounds the `-2`, `-3`... search so a
/// pathological namespace cannot loop for long.
const MAX_NAME_SUFFIX: u32 = 100;

/// Every failure of this module, worded for the person running the looper: each names the path
/// (or the branch) involved and, where there is one, the way out.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// Backups and the no-progress breaker have nothing to work on outside a repository.
    #[error(
        "{dir} is not inside a git work tree (no repository found there or in any parent \
         directory); --backup and --cb-no-progress need one"
    )]
    NotARepo { dir: PathBuf },

    /// A bare repository has no worktree whose progress could be watched or backed up.
    #[error(
        "repository at {git_dir} is bare (it has no work tree); run the looper from a checkout"
    )]
    BareRepo { git_dir: PathBuf },

    /// There is no commit to hang a backup branch on, and "progress" has no baseline.
    #[error(
        "repository at {workdir} has no commits yet; make a first commit before using --backup \
         / --cb-no-progress"
    )]
    UnbornHead { workdir: PathBuf },

    /// Mirrors the reference's message: an empty prefix would put backups at the top of `refs/heads`.
    #[error("backup_prefix must not be empty")]
    EmptyBackupPrefix,

    /// Caught before any branch is written, so the config layer can reject the prefix up front.
    #[error(
        "backup branch name {name:?} is not a valid git branch name; choose another backup_prefix"
    )]
    InvalidBackupName { name: String },

    /// Same-second collisions get a suffix; only a namespace full of suffixes ends up here.
    #[error(
        "cannot create backup branch {name} in {workdir}: it and {MAX_NAME_SUFFIX} suffixed \
         variants already exist"
    )]
    BackupNameTaken { name: String, workdir: PathBuf },

    /// Git cannot have both `refs/heads/x` and `refs/heads/x/...`; libgit2's own wording for this
    /// is cryptic, so the usual cause gets its own message.
    #[error(
        "cannot create backup branch {name} in {workdir}: a branch named {blocking} already \
         exists, so no branch can be created under {blocking}/; rename that branch or choose \
         another backup_prefix"
    )]
    PrefixIsBranch {
        name: String,
        blocking: String,
        workdir: PathBuf,
    },

    /// Branch creation failed for another reason git gave.
    #[error("failed to create backup branch {name} in {workdir}: {}", source.message())]
    Backup {
        name: String,
        workdir: PathBuf,
        source: git2::Error,
    },

    /// Any other libgit2 failure; `action` says what we were doing, `path` where. Only libgit2's
    /// message is shown: its class and code suffix mean nothing to a user.
    #[error("{action} {path}: {}", source.message())]
    Git {
        action: &'static str,
        path: PathBuf,
        source: git2::Error,
    },

    /// File-system failures, with the file or directory they happened on.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },

    /// D18: a second looper on the same checkout must be refused, naming who holds it.
    #[error("{}", lock::lock_held_message(lock_path, holder.as_ref()))]
    LockHeld {
        lock_path: PathBuf,
        holder: Option<HolderRecord>,
    },
}

/// Builds an error-mapping closure so call sites stay one line and never forget the path.
fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> GitError {
    move |source| GitError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Same as [`io_err`] for libgit2 failures.
fn git_err(action: &'static str, path: &Path) -> impl FnOnce(git2::Error) -> GitError {
    move |source| GitError::Git {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// How deep submodules of submodules are followed, for fingerprints and snapshots alike.
const MAX_SUBMODULE_DEPTH: usize = 4;

/// libgit2 reports an unborn HEAD as `UnbornBranch`, and a missing HEAD ref as `NotFound`.
fn is_unborn(err: &git2::Error) -> bool {
    matches!(err.code(), ErrorCode::UnbornBranch | ErrorCode::NotFound)
}

/// One git work tree, opened once per run: libgit2 keeps the parsed index, the object cache and
/// the ignore rules between calls, which is most of what makes a per-loop fingerprint cheap.
pub struct Workspace {
    repo: Repository,
    workdir: PathBuf,
    /// Symlink-free spelling of `workdir`, for comparing against excluded directories.
    canonical_workdir: PathBuf,
    git_dir: PathBuf,
    /// `Some(tag)` in a linked worktree: its backups are named `...@<tag>` and only those are
    /// its to prune, so worktrees sharing one repository never prune each other's.
    worktree: Option<String>,
    /// Read buffer reused across fingerprints (the only per-file allocation otherwise).
    buf: Vec<u8>,
}

impl fmt::Debug for Workspace {
    /// `git2::Repository` has no Debug; the paths are what identifies a workspace anyway.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workspace")
            .field("workdir", &self.workdir)
            .field("git_dir", &self.git_dir)
            .finish_non_exhaustive()
    }
}

impl Workspace {
    /// Finds the repository the agent works in from its cwd (which may be a subdirectory), failing
    /// with a message the user can act on when there is none or it has no worktree.
    pub fn open(agent_cwd: &Path) -> Result<Workspace, GitError> {
        fs::metadata(agent_cwd).map_err(io_err(
            "cannot access the agent working directory",
            agent_cwd,
        ))?;
        let repo = match Repository::discover(agent_cwd) {
            Ok(repo) => repo,
            Err(err) if err.code() == ErrorCode::NotFound => {
                return Err(GitError::NotARepo {
                    dir: agent_cwd.to_path_buf(),
                });
            }
            Err(source) => {
                return Err(GitError::Git {
                    action: "cannot open the git repository containing",
                    path: agent_cwd.to_path_buf(),
                    source,
                });
            }
        };
        // Normalise away libgit2's trailing slashes so messages and joins look ordinary.
        let git_dir: PathBuf = repo.path().components().collect();
        let workdir: PathBuf = match repo.workdir() {
            Some(dir) if !repo.is_bare() => dir.components().collect(),
            _ => return Err(GitError::BareRepo { git_dir }),
        };
        let canonical_workdir = fs::canonicalize(&workdir)
            .map_err(io_err("cannot resolve the work tree directory", &workdir))?;
        // A linked worktree's git dir is `<common>/worktrees/<name>`: that name is how git
        // itself tells the worktrees apart.
        let worktree = repo
            .is_worktree()
            .then(|| {
                git_dir
                    .file_name()
                    .map(|n| backup::worktree_tag(&n.to_string_lossy()))
            })
            .flatten();
        Ok(Workspace {
            repo,
            workdir,
            canonical_workdir,
            git_dir,
            worktree,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Backups and the no-progress breaker are checked before `run_started` (D6); an unborn HEAD
    /// is the one repository state both cannot work with.
    pub fn require_head(&self) -> Result<Oid, GitError> {
        Ok(self.head_commit()?.id())
    }

    /// Root of the work tree (not the agent cwd), the base of every path git reports.
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    /// Per-worktree git dir: linked worktrees have their own, which is what D18 locks per worktree.
    pub fn git_dir(&self) -> &Path {
        &self.git_dir
    }

    /// HEAD as a commit, with the unborn case turned into the message users need.
    fn head_commit(&self) -> Result<Commit<'_>, GitError> {
        let head = match self.repo.head() {
            Ok(head) => head,
            Err(err) if is_unborn(&err) => {
                return Err(GitError::UnbornHead {
                    workdir: self.workdir.clone(),
                });
            }
            Err(source) => {
                return Err(GitError::Git {
                    action: "cannot resolve HEAD of the repository at",
                    path: self.workdir.clone(),
                    source,
                });
            }
        };
        head.peel_to_commit().map_err(git_err(
            "HEAD is not a commit in the repository at",
            &self.workdir,
        ))
    }
}

#[cfg(test)]
mod tests;

//! Git effects of the loop, in-process through libgit2: the no-progress fingerprint (D17), backup
//! branches and dirty snapshots (D19), and the one-looper-per-worktree run lock (D18).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use chrono::{DateTime, Utc};
use git2::{
    BranchType, Commit, ErrorCode, Index, IndexEntry, IndexTime, Oid, Reference, Repository,
    Signature, Status, StatusOptions, StatusShow, Statuses, Time,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Name of the lock file inside a (per-worktree) git dir, so linked worktrees lock separately.
const GIT_LOCK_FILE: &str = "agent-looper.lock";

/// Git modes as stored in trees; libgit2 wants the raw numbers in index entries.
const MODE_FILE: u32 = 0o100_644;
const MODE_EXECUTABLE: u32 = 0o100_755;
const MODE_SYMLINK: u32 = 0o120_000;
const MODE_GITLINK: u32 = 0o160_000;

/// Two runs started in the same second collide on a name; this bounds the `-2`, `-3`... search so a
/// pathological namespace cannot loop for long.
const MAX_NAME_SUFFIX: u32 = 100;

/// Versioned domain tag: a future change of what is hashed must never compare equal to today's
/// fingerprints (a stale "no progress" match across an upgrade would stop a run wrongly).
const FINGERPRINT_DOMAIN: &[u8] = b"agent-looper/fingerprint/v1";

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
    #[error("{}", lock_held_message(lock_path, holder.as_ref()))]
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

/// D17 fingerprint: equal values mean "the agent changed nothing git can see".
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl fmt::Display for Fingerprint {
    /// Hex, so it can go into events and logs as is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    /// Debug output (test failures, traces) is far more useful as hex than as 32 integers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// What a backup produced, so the caller can record the branch in events (D19).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    /// Short branch name (without `refs/heads/`), as the user would type it.
    pub branch: String,
    /// Hex oid the branch points at.
    pub commit: String,
    /// True when the branch points at a new snapshot commit rather than at HEAD itself.
    pub snapshot: bool,
}

/// The backup branch name for a loop, exposed so configuration checks can validate the prefix
/// before anything runs (D6) with exactly the rule that backups use.
pub fn backup_branch_name(
    prefix: &str,
    stamp: DateTime<Utc>,
    loop_number: u64,
) -> Result<String, GitError> {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return Err(GitError::EmptyBackupPrefix);
    }
    let name = format!(
        "{prefix}/{}-loop-{loop_number:04}",
        stamp.format("%Y%m%dT%H%M%SZ")
    );
    if !Reference::is_valid_name(&format!("refs/heads/{name}")) {
        return Err(GitError::InvalidBackupName { name });
    }
    Ok(name)
}

/// The part of a backup name that says which worktree made it: `@<worktree name>` after the
/// loop number for a linked worktree (`git worktree list` shows the name), nothing for the main
/// worktree, so its names keep the manual's shape exactly. Characters a branch name cannot
/// carry, and the `@` that separates the tag, become `_`.
fn worktree_tag(name: &str) -> String {
    let tag: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    // A component may not start with `.` nor end with `.lock` or `.` (git's ref rules).
    let tag = tag.trim_start_matches('.').trim_end_matches('.');
    let tag = tag.strip_suffix(".lock").unwrap_or(tag);
    if tag.is_empty() {
        "_".into()
    } else {
        tag.to_owned()
    }
}

/// What a backup name made by the looper says: `<stamp>-loop-<NNNN>[-<k>][@<worktree>]` under
/// the prefix (`k` is the same-second collision suffix). Anything else under the prefix is a
/// user's branch and is never pruned (issue 20.2).
#[derive(Debug, Clone, PartialEq, Eq)]
struct BackupName<'a> {
    /// `YYYYMMDDTHHMMSSZ`: fixed width, so string order is time order.
    stamp: &'a str,
    loop_number: u64,
    suffix: u32,
    worktree: Option<&'a str>,
}

impl<'a> BackupName<'a> {
    fn parse(rest: &'a str) -> Option<Self> {
        let (body, worktree) = match rest.split_once('@') {
            Some((body, tag)) if !tag.is_empty() && worktree_tag(tag) == tag => (body, Some(tag)),
            Some(_) => return None,
            None => (rest, None),
        };
        let stamp = body.get(..16)?;
        let b = stamp.as_bytes();
        let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
        if !(digits(0..8) && b[8] == b'T' && digits(9..15) && b[15] == b'Z') {
            return None;
        }
        let tail = body[16..].strip_prefix("-loop-")?;
        let (number, suffix) = match tail.split_once('-') {
            Some((n, k)) => (n, Some(k)),
            None => (tail, None),
        };
        let all_digits = |t: &str| !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit());
        if number.len() < 4 || !all_digits(number) {
            return None;
        }
        let suffix = match suffix {
            None => 1,
            Some(k) if all_digits(k) && !k.starts_with('0') => {
                k.parse().ok().filter(|k| *k >= 2)?
            }
            Some(_) => return None,
        };
        Some(BackupName {
            stamp,
            loop_number: number.parse().ok()?,
            suffix,
            worktree,
        })
    }

    /// Age order: stamp, then loop number, then the collision suffix.
    fn age(&self) -> (&'a str, u64, u32) {
        (self.stamp, self.loop_number, self.suffix)
    }
}

/// Paths (relative to the repository root, with a trailing `/`) whose contents must not count.
/// Computed per call because callers may pass directories that appear during the run.
struct Exclusions {
    /// The worktree itself lies inside an excluded directory: nothing in it counts.
    everything: bool,
    prefixes: Vec<Vec<u8>>,
}

impl Exclusions {
    /// Byte-wise on repo-relative paths, the form libgit2 reports; this is where the reference
    /// mixed repo-relative and cwd-relative paths.
    fn covers(&self, path: &[u8]) -> bool {
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

/// Feeds one length-prefixed field, so two different sequences of fields never hash alike.
fn put(hasher: &mut Sha256, tag: &[u8], data: &[u8]) {
    hasher.update(tag);
    hasher.update((data.len() as u64).to_le_bytes());
    hasher.update(data);
}

/// Repo-relative path bytes to a path under `workdir`; trailing `/` (untracked nested
/// repositories) is dropped so `lstat` looks at the entry itself, not a symlink's target.
fn worktree_path(workdir: &Path, rel: &[u8]) -> PathBuf {
    let rel = rel.strip_suffix(b"/").unwrap_or(rel);
    workdir.join(std::ffi::OsStr::from_bytes(rel))
}

/// Hashes what is on disk at `abs`: the symlink target, or mode, size and bytes of a file.
/// Failures are hashed rather than returned: a file the agent made unreadable is a state like
/// any other and must not abort the run.
fn hash_worktree_entry(hasher: &mut Sha256, abs: &Path, buf: &mut [u8]) {
    let meta = match fs::symlink_metadata(abs) {
        Ok(meta) => meta,
        Err(err) => return hash_io_failure(hasher, &err),
    };
    let file_type = meta.file_type();
    if file_type.is_symlink() {
        match fs::read_link(abs) {
            Ok(target) => put(hasher, b"symlink", target.as_os_str().as_bytes()),
            Err(err) => hash_io_failure(hasher, &err),
        }
        return;
    }
    if !file_type.is_file() {
        // Directories (nested repositories, submodules), fifos, sockets: git does not look
        // inside them here either, and opening a fifo would block.
        put(hasher, b"other", &meta.mode().to_le_bytes());
        return;
    }
    // O_NOFOLLOW and O_NONBLOCK: if the path turned into a symlink or fifo since the lstat, the
    // open fails or returns at once instead of following it or hanging the supervisor.
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(abs);
    let mut file = match opened {
        Ok(file) => file,
        Err(err) => return hash_io_failure(hasher, &err),
    };
    // fstat of the opened file, so mode and size describe the bytes we actually read.
    let meta = match file.metadata() {
        Ok(meta) if meta.is_file() => meta,
        Ok(meta) => return put(hasher, b"other", &meta.mode().to_le_bytes()),
        Err(err) => return hash_io_failure(hasher, &err),
    };
    put(hasher, b"file", &meta.mode().to_le_bytes());
    hasher.update(meta.len().to_le_bytes());
    let mut read_total: u64 = 0;
    loop {
        match file.read(buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                read_total += n as u64;
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                hash_io_failure(hasher, &err);
                break;
            }
        }
    }
    // A file changing while read would otherwise be ambiguous with a different size prefix.
    hasher.update(read_total.to_le_bytes());
}

/// A path is gone when it, or one of its parents, no longer exists as a directory (a directory
/// replaced by a file makes its old children fail with ENOTDIR, not ENOENT).
fn is_gone(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// `missing` for deleted paths (the common case), otherwise the OS error number, which is stable
/// between calls where an error message might not be.
fn hash_io_failure(hasher: &mut Sha256, err: &io::Error) {
    if is_gone(err) {
        put(hasher, b"missing", b"");
    } else {
        let code = err.raw_os_error().unwrap_or(-1);
        put(hasher, b"unreadable", &code.to_le_bytes());
    }
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
                    .map(|n| worktree_tag(&n.to_string_lossy()))
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

    /// Where this worktree's run lock lives (see [`acquire_run_lock`]).
    pub fn lock_path(&self) -> PathBuf {
        self.git_dir.join(GIT_LOCK_FILE)
    }

    /// D17: hashes everything git would show as a change, plus the bytes behind each change, so
    /// that two loops with the same fingerprint really left the checkout alone. Only dirty paths
    /// are read, which keeps the cost at about one `git status` (see NOTES.md for figures).
    /// Renames are not detected: a rename shows as the old path deleted and the new one added,
    /// which changes the fingerprint all the same and spares rename detection's cost.
    /// `excluded` directories (the run and log dirs) never count, wherever they are and whatever
    /// the agent cwd; relative ones are taken from the process cwd, so pass absolute paths.
    pub fn fingerprint(&mut self, excluded: &[PathBuf]) -> Result<Fingerprint, GitError> {
        let mut hasher = Sha256::new();
        hasher.update(FINGERPRINT_DOMAIN);
        let Workspace {
            repo,
            workdir,
            canonical_workdir,
            buf,
            ..
        } = self;
        hash_repo(
            &mut hasher,
            repo,
            workdir,
            canonical_workdir,
            excluded,
            buf,
            0,
        )?;
        Ok(Fingerprint(hasher.finalize().into()))
    }

    /// D19 backup at the start of a loop. Plain backups point at HEAD; `dirty` ones capture the
    /// uncommitted worktree too, in a commit the user can check out, without disturbing the
    /// index or the files the agent is working on.
    pub fn create_backup(
        &self,
        prefix: &str,
        stamp: DateTime<Utc>,
        loop_number: u64,
        dirty: bool,
        excluded: &[PathBuf],
    ) -> Result<Backup, GitError> {
        let base = backup_branch_name(prefix, stamp, loop_number)?;
        let head = self.head_commit()?;
        let mut submodules = Vec::new();
        let (target, snapshot) = if dirty {
            match snapshot_commit(
                &self.repo,
                &self.workdir,
                &self.canonical_workdir,
                &head,
                stamp,
                loop_number,
                excluded,
                0,
                &mut submodules,
            )? {
                Some(oid) => {
                    let commit = self
                        .repo
                        .find_commit(oid)
                        .map_err(git_err("cannot read the snapshot commit in", &self.workdir))?;
                    (commit, true)
                }
                None => (head, false),
            }
        } else {
            (head, false)
        };
        let tag = self
            .worktree
            .as_deref()
            .map(|t| format!("@{t}"))
            .unwrap_or_default();
        for attempt in 1..=MAX_NAME_SUFFIX {
            let name = if attempt == 1 {
                format!("{base}{tag}")
            } else {
                format!("{base}-{attempt}{tag}")
            };
            match self.repo.branch(&name, &target, false) {
                Ok(_) => {
                    keep_submodule_snapshots(&submodules, &name)?;
                    return Ok(Backup {
                        branch: name,
                        commit: target.id().to_string(),
                        snapshot,
                    });
                }
                // Only an existing branch of that exact name means "taken, try the next suffix";
                // other conflicts (a branch named like the prefix itself) would fail for every
                // suffix, so they are reported at once.
                Err(err)
                    if err.code() == ErrorCode::Exists
                        && self
                            .repo
                            .find_reference(&format!("refs/heads/{name}"))
                            .is_ok() => {}
                Err(source) => {
                    if let Some(blocking) = self.blocking_branch(&name) {
                        return Err(GitError::PrefixIsBranch {
                            name,
                            blocking,
                            workdir: self.workdir.clone(),
                        });
                    }
                    return Err(GitError::Backup {
                        name,
                        workdir: self.workdir.clone(),
                        source,
                    });
                }
            }
        }
        Err(GitError::BackupNameTaken {
            name: base,
            workdir: self.workdir.clone(),
        })
    }

    /// D19 pruning after each backup. Only branches the looper made in THIS worktree count:
    /// names of the exact shape `<prefix>/<stamp>-loop-<NNNN>[-k]` (with `@<worktree>` in a
    /// linked worktree), so a user's `<prefix>/1.0-hotfix` or `<prefix>/wip`, neighbouring
    /// namespaces (`<prefix>-old/...`), a branch named like the prefix and another worktree's
    /// backups all survive (issue 20.2). They are ordered by stamp, then loop number, then
    /// suffix; the newest `keep` stay. A branch checked out in any worktree is kept: deleting
    /// it would break that worktree, and git refuses anyway.
    pub fn prune_backups(&self, prefix: &str, keep: usize) -> Result<Vec<String>, GitError> {
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() {
            return Err(GitError::EmptyBackupPrefix);
        }
        if keep == 0 {
            return Ok(Vec::new());
        }
        let namespace = format!("refs/heads/{prefix}/");
        let refs = self
            .repo
            .references_glob(&format!("{namespace}*"))
            .map_err(git_err("cannot list the branches of", &self.workdir))?;
        let mut ours: Vec<(String, (String, u64, u32))> = Vec::new();
        for reference in refs {
            let reference =
                reference.map_err(git_err("cannot list the branches of", &self.workdir))?;
            let Ok(name) = std::str::from_utf8(reference.name_bytes()) else {
                continue;
            };
            let Some(rest) = name.strip_prefix(&namespace) else {
                continue;
            };
            if let Some(parsed) = BackupName::parse(rest)
                && parsed.worktree == self.worktree.as_deref()
            {
                let (stamp, number, suffix) = parsed.age();
                ours.push((
                    name["refs/heads/".len()..].to_owned(),
                    (stamp.to_owned(), number, suffix),
                ));
            }
        }
        ours.sort_by(|a, b| a.1.cmp(&b.1));
        let excess = ours.len().saturating_sub(keep);
        let checked_out = self.checked_out_branches();
        let mut deleted = Vec::new();
        for (name, _) in ours.into_iter().take(excess) {
            if checked_out.contains(&format!("refs/heads/{name}")) {
                continue;
            }
            let mut branch = self
                .repo
                .find_branch(&name, BranchType::Local)
                .map_err(git_err("cannot find old backup branch in", &self.workdir))?;
            branch
                .delete()
                .map_err(git_err("cannot delete old backup branch in", &self.workdir))?;
            prune_in_submodules(&self.repo, &name, 0);
            deleted.push(name);
        }
        Ok(deleted)
    }

    /// The existing branch, if any, whose name is a leading part of `name` (`a` or `a/b` for
    /// `a/b/c`), which is what makes creating `name` impossible.
    fn blocking_branch(&self, name: &str) -> Option<String> {
        name.match_indices('/')
            .map(|(at, _)| &name[..at])
            .find(|ancestor| {
                self.repo
                    .find_reference(&format!("refs/heads/{ancestor}"))
                    .is_ok()
            })
            .map(str::to_owned)
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

    /// Symbolic HEAD targets of every worktree of this repository, read straight from the HEAD
    /// files (a handful of small reads) so pruning never deletes a branch someone has checked out.
    fn checked_out_branches(&self) -> Vec<String> {
        let common = self.repo.commondir().to_path_buf();
        let mut heads = vec![self.git_dir.join("HEAD"), common.join("HEAD")];
        if let Ok(names) = self.repo.worktrees() {
            for name in names.iter_bytes() {
                let name = std::ffi::OsStr::from_bytes(name);
                heads.push(common.join("worktrees").join(name).join("HEAD"));
            }
        }
        heads
            .iter()
            .filter_map(|path| fs::read_to_string(path).ok())
            .filter_map(|text| text.strip_prefix("ref: ").map(|r| r.trim_end().to_owned()))
            .collect()
    }
}

/// Builds the tree of the worktree as `git add -A` would see it, in an in-memory index seeded
/// from HEAD (the on-disk index and the files are only read), and commits it on top of HEAD.
/// `None` when that tree equals HEAD's: the backup then points at HEAD itself.
#[expect(
    clippy::too_many_arguments,
    reason = "one recursive walk over parent and submodules"
)]
fn snapshot_commit(
    repo: &Repository,
    wd: &Path,
    canonical_workdir: &Path,
    head: &Commit<'_>,
    stamp: DateTime<Utc>,
    loop_number: u64,
    excluded: &[PathBuf],
    depth: usize,
    submodules: &mut Vec<SubmoduleSnapshot>,
) -> Result<Option<Oid>, GitError> {
    let head_tree = head
        .tree()
        .map_err(git_err("cannot read the HEAD tree of", wd))?;
    let mut index = Index::new().map_err(git_err("cannot create an in-memory index for", wd))?;
    index
        .read_tree(&head_tree)
        .map_err(git_err("cannot load the HEAD tree of", wd))?;
    let filemode = repo
        .config()
        .and_then(|config| config.get_bool("core.filemode"))
        .unwrap_or(true);

    let exclusions = exclusions_for(canonical_workdir, excluded);
    let statuses = status_list(repo, wd, &exclusions)?;
    // The repository's own index, read only: a submodule added there but not yet committed is
    // still a submodule to snapshot.
    let real_index = repo
        .index()
        .map_err(git_err("cannot read the git index of", wd))?;
    let mut recorded = Vec::new();
    // Removals first, additions second: a file replaced by a directory (or the reverse) would
    // otherwise hit libgit2's file/directory conflict check in path order.
    let mut additions = Vec::new();
    for entry in statuses.iter() {
        let rel_bytes = entry.path_bytes();
        if exclusions.covers(rel_bytes) || rel_bytes.ends_with(b"/") {
            // Excluded, or an untracked nested repository: `git add -A` would not take its
            // files either.
            continue;
        }
        let rel = Path::new(std::ffi::OsStr::from_bytes(rel_bytes));
        let abs = wd.join(rel);
        let existing_mode = index.get_path(rel, 0).map(|e| e.mode);
        match fs::symlink_metadata(&abs) {
            Ok(meta) if meta.is_dir() => {
                let gitlink = existing_mode == Some(MODE_GITLINK)
                    || real_index
                        .get_path(rel, 0)
                        .is_some_and(|e| e.mode == MODE_GITLINK);
                if gitlink {
                    // A submodule is recorded at the commit it is on now, or at a snapshot
                    // of its own dirty worktree (issue 20.13); one that is not checked out
                    // keeps the commit HEAD records.
                    if let Some(commit) =
                        submodule_snapshot(&abs, stamp, loop_number, excluded, depth, submodules)?
                    {
                        index
                            .add(&gitlink_entry(rel_bytes.to_vec(), commit))
                            .map_err(|source| GitError::Git {
                                action: "cannot add a submodule to the backup snapshot",
                                path: abs.clone(),
                                source,
                            })?;
                        recorded.push((rel.display().to_string(), commit));
                    }
                } else if existing_mode.is_some() {
                    // A file turned directory is dropped (its new files come as their own
                    // entries).
                    remove_path(&mut index, rel, wd)?;
                }
            }
            Ok(meta) => additions.push((rel_bytes.to_vec(), abs, meta, existing_mode)),
            Err(err) if is_gone(&err) => {
                if existing_mode.is_some() {
                    remove_path(&mut index, rel, wd)?;
                }
            }
            Err(source) => {
                return Err(GitError::Io {
                    action: "cannot read worktree file for the backup snapshot",
                    path: abs,
                    source,
                });
            }
        }
    }
    for (rel, abs, meta, existing_mode) in additions {
        let (mode, id) = if meta.file_type().is_symlink() {
            let target = fs::read_link(&abs)
                .map_err(io_err("cannot read symlink for the backup snapshot", &abs))?;
            let id = repo
                .blob(target.as_os_str().as_bytes())
                .map_err(git_err("cannot store a symlink target in", wd))?;
            (MODE_SYMLINK, id)
        } else if meta.is_file() {
            // blob_path applies the repository's filters (eol, ...) like `git add`.
            let id = repo.blob_path(&abs).map_err(|source| GitError::Git {
                action: "cannot store worktree file for the backup snapshot",
                path: abs.clone(),
                source,
            })?;
            let executable = if filemode {
                meta.mode() & 0o111 != 0
            } else {
                existing_mode == Some(MODE_EXECUTABLE)
            };
            (
                if executable {
                    MODE_EXECUTABLE
                } else {
                    MODE_FILE
                },
                id,
            )
        } else {
            // Fifos and sockets have no git representation.
            continue;
        };
        let entry = IndexEntry {
            ctime: IndexTime::new(0, 0),
            mtime: IndexTime::new(0, 0),
            dev: 0,
            ino: 0,
            mode,
            uid: 0,
            gid: 0,
            // The index field is 32 bits; git stores sizes modulo 2^32 too.
            file_size: meta.len() as u32,
            id,
            flags: 0,
            flags_extended: 0,
            path: rel,
        };
        index.add(&entry).map_err(|source| GitError::Git {
            action: "cannot add worktree file to the backup snapshot",
            path: abs.clone(),
            source,
        })?;
    }
    let tree_id = index
        .write_tree_to(repo)
        .map_err(git_err("cannot write the snapshot tree in", wd))?;
    if tree_id == head_tree.id() {
        return Ok(None);
    }
    let tree = repo
        .find_tree(tree_id)
        .map_err(git_err("cannot read the snapshot tree in", wd))?;
    let signature = snapshot_signature(repo, stamp)
        .map_err(git_err("cannot build a commit signature in", wd))?;
    let mut message = format!(
        "agent-looper snapshot before loop {loop_number:04}\n\n\
         Worktree of {} (staged, unstaged and untracked non-ignored files) at {}.\n\
         Parent is the HEAD of that moment; the index and the files were not modified.\n",
        wd.display(),
        stamp.format("%Y-%m-%dT%H:%M:%SZ"),
    );
    if !recorded.is_empty() {
        message.push_str(
            "\nSubmodules, at the commit they were on (a snapshot commit of the submodule's \
             own worktree when it was dirty, kept by a branch of the same name in its \
             repository):\n",
        );
        for (path, commit) in &recorded {
            message.push_str(&format!("  {path}: {commit}\n"));
        }
    }
    let oid = repo
        .commit(None, &signature, &signature, &message, &tree, &[head])
        .map_err(git_err("cannot write the snapshot commit in", wd))?;
    Ok(Some(oid))
}

/// Turns absolute excluded directories into prefixes relative to the repository at
/// `canonical_workdir`. Everything is compared in canonical form, so the agent cwd plays no
/// part (the reference's bug).
fn exclusions_for(canonical_workdir: &Path, excluded: &[PathBuf]) -> Exclusions {
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

/// How deep submodules of submodules are followed, for fingerprints and snapshots alike.
const MAX_SUBMODULE_DEPTH: usize = 4;

/// D17's fingerprint of one repository into `hasher`: HEAD, then every path git shows as a
/// change with its status, index entries and bytes on disk. A submodule that shows as changed
/// is hashed by what it is (its HEAD and, recursively, its own changes), not as an opaque
/// directory: an agent editing a file inside a submodule every loop is making progress
/// (issue 20.13), and the status bits alone stay `modified` from one loop to the next.
fn hash_repo(
    hasher: &mut Sha256,
    repo: &Repository,
    workdir: &Path,
    canonical_workdir: &Path,
    excluded: &[PathBuf],
    buf: &mut [u8],
    depth: usize,
) -> Result<(), GitError> {
    match repo.refname_to_id("HEAD") {
        Ok(oid) => put(hasher, b"head", oid.as_bytes()),
        Err(err) if is_unborn(&err) => put(hasher, b"unborn", b""),
        Err(source) => {
            return Err(GitError::Git {
                action: "cannot resolve HEAD of the repository at",
                path: workdir.to_path_buf(),
                source,
            });
        }
    }

    let exclusions = exclusions_for(canonical_workdir, excluded);
    let statuses = status_list(repo, workdir, &exclusions)?;
    // The repository's own index, just soft-refreshed by the status call above.
    let index = repo
        .index()
        .map_err(git_err("cannot read the git index of", workdir))?;
    for entry in statuses.iter() {
        let path = entry.path_bytes();
        if exclusions.covers(path) {
            continue;
        }
        let status = entry.status();
        put(hasher, b"entry", path);
        hasher.update(status.bits().to_le_bytes());
        if status.intersects(Status::INDEX_RENAMED | Status::WT_RENAMED) {
            // Only reachable if rename detection gets turned on: keep the old path in.
            let old_paths = [entry.head_to_index(), entry.index_to_workdir()];
            for delta in old_paths.into_iter().flatten() {
                if let Some(old) = delta.old_file().path() {
                    put(hasher, b"renamed-from", old.as_os_str().as_bytes());
                }
            }
        }
        let rel = Path::new(std::ffi::OsStr::from_bytes(path));
        let stages: &[i32] = if status.contains(Status::CONFLICTED) {
            &[0, 1, 2, 3]
        } else {
            &[0]
        };
        let mut gitlink = false;
        for &stage in stages {
            if let Some(ie) = index.get_path(rel, stage) {
                gitlink |= ie.mode == MODE_GITLINK;
                let mut rec = [0u8; 8];
                rec[..4].copy_from_slice(&ie.mode.to_le_bytes());
                rec[4..].copy_from_slice(&stage.to_le_bytes());
                put(hasher, b"index", &rec);
                hasher.update(ie.id.as_bytes());
            }
        }
        let abs = worktree_path(workdir, path);
        if gitlink && abs.is_dir() {
            hash_submodule(hasher, &abs, excluded, buf, depth);
        } else {
            hash_worktree_entry(hasher, &abs, buf);
        }
    }
    Ok(())
}

/// A checked-out submodule: its own fingerprint, framed as one field. What cannot be read
/// (not checked out, too deep, a broken repository) is hashed as such, like an unreadable
/// file: it is a state, not a reason to stop the run.
fn hash_submodule(
    hasher: &mut Sha256,
    abs: &Path,
    excluded: &[PathBuf],
    buf: &mut [u8],
    depth: usize,
) {
    if depth >= MAX_SUBMODULE_DEPTH {
        return put(hasher, b"submodule-too-deep", b"");
    }
    let Ok(sub) = Repository::open(abs) else {
        return put(hasher, b"submodule-not-checked-out", b"");
    };
    let Some(workdir) = sub.workdir().map(Path::to_path_buf) else {
        return put(hasher, b"submodule-bare", b"");
    };
    let canonical = fs::canonicalize(&workdir).unwrap_or_else(|_| workdir.clone());
    let mut inner = Sha256::new();
    match hash_repo(
        &mut inner,
        &sub,
        &workdir,
        &canonical,
        excluded,
        buf,
        depth + 1,
    ) {
        Ok(()) => put(hasher, b"submodule", &inner.finalize()),
        Err(err) => put(hasher, b"submodule-unreadable", err.to_string().as_bytes()),
    }
}

/// A snapshot commit made inside a submodule's repository for a dirty backup: it must be kept
/// reachable there (its objects live in that repository), by a branch named like the backup.
#[derive(Debug, Clone)]
struct SubmoduleSnapshot {
    git_dir: PathBuf,
    commit: Oid,
}

/// The commit a backup snapshot records for the submodule checked out at `abs`: its HEAD, or a
/// snapshot of its dirty worktree on top of that HEAD (recursively, submodules included).
/// `None` when it is not checked out or has no commit (HEAD's record is kept).
fn submodule_snapshot(
    abs: &Path,
    stamp: DateTime<Utc>,
    loop_number: u64,
    excluded: &[PathBuf],
    depth: usize,
    submodules: &mut Vec<SubmoduleSnapshot>,
) -> Result<Option<Oid>, GitError> {
    let Ok(sub) = Repository::open(abs) else {
        return Ok(None);
    };
    let Some(workdir) = sub.workdir().map(Path::to_path_buf) else {
        return Ok(None);
    };
    let Ok(head) = sub.head().and_then(|h| h.peel_to_commit()) else {
        return Ok(None);
    };
    if depth + 1 >= MAX_SUBMODULE_DEPTH {
        return Ok(Some(head.id()));
    }
    let canonical = fs::canonicalize(&workdir).unwrap_or_else(|_| workdir.clone());
    match snapshot_commit(
        &sub,
        &workdir,
        &canonical,
        &head,
        stamp,
        loop_number,
        excluded,
        depth + 1,
        submodules,
    )? {
        Some(commit) => {
            submodules.push(SubmoduleSnapshot {
                git_dir: sub.path().to_path_buf(),
                commit,
            });
            Ok(Some(commit))
        }
        None => Ok(Some(head.id())),
    }
}

/// Makes each submodule snapshot of a new backup reachable in its own repository, by a branch
/// named like the backup (so `git -C <submodule> branch --list '<prefix>/*'` shows it).
fn keep_submodule_snapshots(snapshots: &[SubmoduleSnapshot], name: &str) -> Result<(), GitError> {
    for snap in snapshots {
        let sub = Repository::open(&snap.git_dir).map_err(git_err(
            "cannot open the submodule repository",
            &snap.git_dir,
        ))?;
        sub.reference(
            &format!("refs/heads/{name}"),
            snap.commit,
            true,
            "agent-looper: keep the submodule snapshot of a dirty backup",
        )
        .map_err(git_err(
            "cannot keep the submodule snapshot with a branch in",
            &snap.git_dir,
        ))?;
    }
    Ok(())
}

/// An in-memory index entry recording a submodule at `commit`.
fn gitlink_entry(path: Vec<u8>, commit: Oid) -> IndexEntry {
    IndexEntry {
        ctime: IndexTime::new(0, 0),
        mtime: IndexTime::new(0, 0),
        dev: 0,
        ino: 0,
        mode: MODE_GITLINK,
        uid: 0,
        gid: 0,
        file_size: 0,
        id: commit,
        flags: 0,
        flags_extended: 0,
        path,
    }
}

/// Deletes the branch `name` (a pruned backup) in every checked-out submodule, recursively:
/// it kept that backup's submodule snapshot alive. Best effort: a branch that is checked out
/// there, or a submodule that cannot be opened, keeps its branch.
fn prune_in_submodules(repo: &Repository, name: &str, depth: usize) {
    if depth >= MAX_SUBMODULE_DEPTH {
        return;
    }
    let Ok(submodules) = repo.submodules() else {
        return;
    };
    for sm in submodules {
        let Ok(sub) = sm.open() else { continue };
        if let Ok(mut branch) = sub.find_branch(name, BranchType::Local) {
            let _ = branch.delete();
        }
        prune_in_submodules(&sub, name, depth + 1);
    }
}

/// Drops every stage of `rel` from the in-memory snapshot index.
fn remove_path(index: &mut Index, rel: &Path, wd: &Path) -> Result<(), GitError> {
    for stage in 0..=3 {
        if index.get_path(rel, stage).is_some() {
            index.remove(rel, stage).map_err(git_err(
                "cannot drop a deleted path from the snapshot of",
                wd,
            ))?;
        }
    }
    Ok(())
}

/// The user's identity when configured (so the snapshot looks like theirs), else a fixed one: a
/// missing `user.name` must not break backups. Dated at the stamp so name and commit agree.
fn snapshot_signature(
    repo: &Repository,
    stamp: DateTime<Utc>,
) -> Result<Signature<'static>, git2::Error> {
    let time = Time::new(stamp.timestamp(), 0);
    match repo.signature() {
        Ok(sig) => match (sig.name(), sig.email()) {
            (Ok(name), Ok(email)) => Signature::new(name, email, &time),
            _ => Signature::new("agent-looper", "agent-looper@localhost", &time),
        },
        Err(_) => Signature::new("agent-looper", "agent-looper@localhost", &time),
    }
}

/// libgit2 reports an unborn HEAD as `UnbornBranch`, and a missing HEAD ref as `NotFound`.
fn is_unborn(err: &git2::Error) -> bool {
    matches!(err.code(), ErrorCode::UnbornBranch | ErrorCode::NotFound)
}

/// The status walk shared by the fingerprint and the snapshot: HEAD vs index vs worktree with
/// untracked files listed one by one, ignored files left out, nothing written back. Excluded
/// directories become in-memory ignore rules so libgit2 does not even walk a run's log files
/// (tracked files in them still show up; callers filter with [`Exclusions::covers`]).
fn status_list<'r>(
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

/// Who holds a run lock: written into the lock file so a refused second looper can say who is in
/// the way, and so a takeover can record whom it replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderRecord {
    /// Lets the user find (or kill) the process that is in the way.
    pub pid: u32,
    /// Distinguishes a reused pid (e.g. `linux-proc:<boot_id>:<starttime>`, reference 10.5), so a
    /// takeover record says exactly which process died.
    pub pid_identity: Option<String>,
    /// The run's label, the name users know their runs by.
    pub label: String,
    /// Where the other run's records are, for `looper status` or `looper control stop`.
    pub run_dir: PathBuf,
    /// Tells a long-running holder from one that just started.
    pub started_at: DateTime<Utc>,
}

/// Wording of [`GitError::LockHeld`], kept in one place.
fn lock_held_message(lock_path: &Path, holder: Option<&HolderRecord>) -> String {
    match holder {
        Some(h) => format!(
            "another looper is already running in this worktree: label {:?}, pid {}, run dir {} \
             (started {}; lock file {})",
            h.label,
            h.pid,
            h.run_dir.display(),
            h.started_at.format("%Y-%m-%dT%H:%M:%SZ"),
            lock_path.display(),
        ),
        None => format!(
            "another looper is already running in this worktree (lock file {} is held; its \
             holder record is not readable yet)",
            lock_path.display()
        ),
    }
}

/// The run lock while held. Dropping it clears the holder record and releases the lock, so a
/// clean exit never looks like a crash to the next run.
#[derive(Debug)]
pub struct LockGuard {
    file: Option<File>,
    path: PathBuf,
    /// The previous holder whose record was found while the lock was free: it died without
    /// releasing (SIGKILL, power loss). The caller records the takeover (D18).
    pub took_over: Option<HolderRecord>,
}

impl LockGuard {
    /// Where the lock lives, for messages and records.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Explicit release for callers that want to report a failure to clear the record; dropping
    /// does the same silently.
    pub fn release(mut self) -> Result<(), GitError> {
        match self.file.take() {
            Some(file) => {
                let cleared = file
                    .set_len(0)
                    .map_err(io_err("cannot clear the run lock file", &self.path));
                let _ = file.unlock();
                cleared
            }
            None => Ok(()),
        }
    }
}

impl Drop for LockGuard {
    /// Truncate while still holding the lock (never unlink: a deleted lock file lets two processes
    /// lock two different inodes), then unlock explicitly: a process forked at this moment (an
    /// agent, a notifier) holds a copy of the descriptor until its exec closes it, and closing
    /// ours alone would leave the flock held by that copy.
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            let _ = file.set_len(0);
            let _ = file.unlock();
        }
    }
}

/// Where the D18 lock for a looper started in `agent_cwd` lives: in the per-worktree git dir
/// when inside a work tree (shared by every subdirectory of it, private to each linked
/// worktree), else in the directory's own `.agent-looper/`.
pub fn lock_path_for(agent_cwd: &Path) -> PathBuf {
    match Repository::discover(agent_cwd) {
        Ok(repo) if !repo.is_bare() && repo.workdir().is_some() => repo
            .path()
            .components()
            .collect::<PathBuf>()
            .join(GIT_LOCK_FILE),
        _ => agent_cwd.join(".agent-looper").join("looper.lock"),
    }
}

/// D18: takes the run lock or says who has it. The lock is an OS advisory lock (`flock`, through
/// std's `File::try_lock`) on a file that is never deleted; the kernel drops it when the holder
/// dies however it dies, so staleness needs no pid guessing: a record found while the lock is free
/// belongs to a dead holder and is taken over. Files are opened close-on-exec, so agents spawned
/// by the holder do not inherit (and keep alive) the lock.
pub fn acquire_run_lock(lock_path: &Path, holder: &HolderRecord) -> Result<LockGuard, GitError> {
    if let Some(parent) = lock_path.parent()
        && !parent.as_os_str().is_empty()
    {
        fs::create_dir_all(parent).map_err(io_err("cannot create the lock directory", parent))?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(lock_path)
        .map_err(io_err("cannot open the run lock file", lock_path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            return Err(GitError::LockHeld {
                lock_path: lock_path.to_path_buf(),
                holder: read_holder(&mut file).ok().flatten(),
            });
        }
        Err(fs::TryLockError::Error(source)) => {
            return Err(GitError::Io {
                action: "cannot lock the run lock file",
                path: lock_path.to_path_buf(),
                source,
            });
        }
    }
    let took_over =
        read_holder(&mut file).map_err(io_err("cannot read the run lock file", lock_path))?;
    let mut record = serde_json::to_vec(holder).map_err(|err| GitError::Io {
        action: "cannot encode the holder record for",
        path: lock_path.to_path_buf(),
        source: io::Error::other(err),
    })?;
    record.push(b'\n');
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| file.write_all(&record))
        .and_then(|()| file.sync_data())
        .map_err(io_err("cannot write the run lock file", lock_path))?;
    Ok(LockGuard {
        file: Some(file),
        path: lock_path.to_path_buf(),
        took_over,
    })
}

/// The holder record in a lock file; an empty or half-written file reads as "unknown holder".
fn read_holder(file: &mut File) -> io::Result<Option<HolderRecord>> {
    file.seek(SeekFrom::Start(0))?;
    let mut text = Vec::new();
    file.read_to_end(&mut text)?;
    Ok(serde_json::from_slice(&text).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashSet};
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::process::Command;
    use tempfile::TempDir;

    /// Runs the git CLI with a fixed identity and no user/system config, so tests do not depend
    /// on the machine's git setup.
    fn git_in(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
            .args([
                "-c",
                "commit.gpgsign=false",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            // Keeps `git status` from refreshing the index behind the tests' back.
            .env("GIT_OPTIONAL_LOCKS", "0")
            .output()
            .expect("run git");
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 git output")
    }

    /// A scratch repository with one commit (`a.txt`, `dir/b.txt`) and `.gitignore`.
    struct TestRepo {
        tmp: TempDir,
    }

    impl TestRepo {
        /// The usual starting point: a repository with history and ignore rules.
        fn new() -> Self {
            let repo = Self::unborn();
            repo.write(".gitignore", "*.log\nbuild/\n");
            repo.write("a.txt", "alpha\n");
            repo.write("dir/b.txt", "beta\n");
            repo.commit_all("initial");
            repo
        }

        /// A fresh `git init` with no commit, for the unborn-HEAD cases.
        fn unborn() -> Self {
            let tmp = TempDir::new().expect("tempdir");
            git_in(tmp.path(), &["init", "-q"]);
            TestRepo { tmp }
        }

        fn path(&self) -> &Path {
            self.tmp.path()
        }

        fn git(&self, args: &[&str]) -> String {
            git_in(self.path(), args)
        }

        fn write(&self, rel: &str, content: &str) {
            let path = self.path().join(rel);
            fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            fs::write(path, content).expect("write");
        }

        fn commit_all(&self, msg: &str) {
            self.git(&["add", "-A"]);
            self.git(&["commit", "-q", "-m", msg]);
        }

        fn head(&self) -> String {
            self.git(&["rev-parse", "HEAD"]).trim().to_owned()
        }

        fn open(&self) -> Workspace {
            Workspace::open(self.path()).expect("open workspace")
        }
    }

    /// A fixed stamp, so branch names are predictable.
    fn stamp() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .expect("stamp")
            .with_timezone(&Utc)
    }

    /// Records fingerprints and fails if one repeats: every step must be seen as progress.
    struct Distinct {
        seen: HashSet<Fingerprint>,
    }

    impl Distinct {
        /// Asserts the new state hashes stably and differently from every earlier one.
        fn step(&mut self, ws: &mut Workspace, excluded: &[PathBuf], what: &str) {
            let fp = ws.fingerprint(excluded).expect("fingerprint");
            assert_eq!(
                fp,
                ws.fingerprint(excluded).expect("fingerprint"),
                "unstable after {what}"
            );
            assert!(
                self.seen.insert(fp),
                "fingerprint did not change after {what}"
            );
        }
    }

    #[test]
    fn fingerprint_changes_on_every_kind_of_change() {
        let repo = TestRepo::new();
        let mut ws = repo.open();
        let mut d = Distinct {
            seen: HashSet::new(),
        };
        d.step(&mut ws, &[], "nothing (clean)");
        repo.write("c.txt", "gamma\n");
        repo.commit_all("second");
        d.step(&mut ws, &[], "a new commit");
        repo.write("a.txt", "alpha staged\n");
        repo.git(&["add", "a.txt"]);
        d.step(&mut ws, &[], "a staged edit");
        repo.write("dir/b.txt", "beta edited\n");
        d.step(&mut ws, &[], "an unstaged edit");
        repo.write("dir/b.txt", "beta EDITED\n");
        d.step(
            &mut ws,
            &[],
            "a second edit (same size) of the same dirty file",
        );
        repo.write("dir/b.txt", "beta, third version\n");
        d.step(&mut ws, &[], "a third edit of the same dirty file");
        repo.write("untracked.txt", "new\n");
        d.step(&mut ws, &[], "an untracked file");
        repo.write("newdir/deeper/file.txt", "deep\n");
        d.step(&mut ws, &[], "an untracked file in a new directory");
        fs::remove_file(repo.path().join("c.txt")).expect("rm");
        d.step(&mut ws, &[], "a deleted file");
        let script = repo.path().join("dir/b.txt");
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
        d.step(&mut ws, &[], "a mode change 0644 -> 0755");
        repo.git(&["mv", ".gitignore", "ignore-rules"]);
        d.step(&mut ws, &[], "a staged rename (git mv)");
        fs::rename(
            repo.path().join("untracked.txt"),
            repo.path().join("moved.txt"),
        )
        .expect("mv");
        d.step(&mut ws, &[], "a rename in the worktree");
        symlink("a.txt", repo.path().join("link")).expect("symlink");
        d.step(&mut ws, &[], "a new symlink");
        fs::remove_file(repo.path().join("link")).expect("rm link");
        symlink("dir/b.txt", repo.path().join("link")).expect("symlink");
        d.step(&mut ws, &[], "a symlink retargeted");

        // The value depends on the repository state only, not on the Workspace's caches.
        let again = repo.open().fingerprint(&[]).expect("fingerprint");
        assert_eq!(again, ws.fingerprint(&[]).expect("fingerprint"));
        assert_eq!(again.to_string().len(), 64);
    }

    #[test]
    fn fingerprint_ignores_ignored_files() {
        let repo = TestRepo::new();
        repo.write("x.txt", "dirty\n");
        let mut ws = repo.open();
        let before = ws.fingerprint(&[]).expect("fingerprint");
        repo.write("trace.log", "noise\n");
        repo.write("build/out/obj.o", "binary\n");
        assert_eq!(before, ws.fingerprint(&[]).expect("fingerprint"));
        repo.write("build/out/obj.o", "other binary\n");
        repo.write("trace.log", "more noise\n");
        assert_eq!(before, ws.fingerprint(&[]).expect("fingerprint"));
    }

    /// The reference's bug: with the agent cwd in a subdirectory, the run's own files counted.
    #[test]
    fn fingerprint_ignores_run_dir_inside_subdirectory_cwd() {
        let repo = TestRepo::new();
        let cwd = repo.path().join("pkg");
        fs::create_dir_all(&cwd).expect("mkdir");
        let run_dir = cwd.join(".agent-looper/runs/20260102T030405Z__t__ab12");
        let log_dir = cwd.join("logs/looper");
        fs::create_dir_all(&run_dir).expect("mkdir");
        fs::write(run_dir.join("state.json"), "{}").expect("write");
        let excluded = vec![run_dir.clone(), log_dir.clone()];
        let mut ws = Workspace::open(&cwd).expect("open from subdir");
        assert_eq!(
            fs::canonicalize(ws.workdir()).expect("canon"),
            fs::canonicalize(repo.path()).expect("canon")
        );
        let before = ws.fingerprint(&excluded).expect("fingerprint");
        fs::write(run_dir.join("state.json"), "{\"loop\": 2}").expect("write");
        fs::write(run_dir.join("events.jsonl"), "{}\n").expect("write");
        fs::create_dir_all(run_dir.join("loops/0001")).expect("mkdir");
        fs::write(run_dir.join("loops/0001/out.txt"), "output").expect("write");
        // The log dir did not exist at the first fingerprint; it appears during the run.
        fs::create_dir_all(&log_dir).expect("mkdir");
        fs::write(log_dir.join("loop-0001.log"), "log").expect("write");
        assert_eq!(before, ws.fingerprint(&excluded).expect("fingerprint"));
        // The same directories spelled through a symlink to the worktree are still excluded.
        let alias_root = TempDir::new().expect("tempdir");
        let alias = alias_root.path().join("alias");
        symlink(repo.path(), &alias).expect("symlink");
        let aliased = vec![alias.join("pkg/.agent-looper/runs/20260102T030405Z__t__ab12")];
        let mut ws_alias = Workspace::open(&alias.join("pkg")).expect("open via alias");
        assert_eq!(
            ws_alias.fingerprint(&aliased).expect("fingerprint"),
            ws_alias
                .fingerprint(&[run_dir.clone(), log_dir.clone()])
                .expect("fingerprint")
        );
        // Anything else in the subdirectory still counts.
        fs::write(cwd.join("real-work.txt"), "work").expect("write");
        assert_ne!(before, ws.fingerprint(&excluded).expect("fingerprint"));
    }

    #[test]
    fn fingerprint_ignores_tracked_files_in_excluded_dir() {
        let repo = TestRepo::new();
        repo.write("runs/r1/state.json", "{}");
        repo.commit_all("someone committed a run dir");
        let excluded = vec![repo.path().join("runs/r1")];
        let mut ws = repo.open();
        let before = ws.fingerprint(&excluded).expect("fingerprint");
        repo.write("runs/r1/state.json", "{\"changed\": true}");
        repo.git(&["add", "runs/r1/state.json"]);
        repo.write("runs/r1/state.json", "{\"changed\": 2}");
        assert_eq!(before, ws.fingerprint(&excluded).expect("fingerprint"));
    }

    #[test]
    fn fingerprint_ignores_run_dir_outside_worktree() {
        let repo = TestRepo::new();
        let elsewhere = TempDir::new().expect("tempdir");
        let run_dir = elsewhere.path().join("runs/r1");
        fs::create_dir_all(&run_dir).expect("mkdir");
        let excluded = vec![run_dir.clone()];
        let mut ws = repo.open();
        let before = ws.fingerprint(&excluded).expect("fingerprint");
        fs::write(run_dir.join("state.json"), "{}").expect("write");
        assert_eq!(before, ws.fingerprint(&excluded).expect("fingerprint"));
        repo.write("work.txt", "work");
        assert_ne!(before, ws.fingerprint(&excluded).expect("fingerprint"));
    }

    /// Excluded names are turned into ignore rules: glob characters in them must not hide
    /// neighbours that merely match as a pattern.
    #[test]
    fn excluded_dir_with_glob_characters_hides_only_itself() {
        let repo = TestRepo::new();
        let run_dir = repo.path().join("runs/r[1] *x?");
        fs::create_dir_all(&run_dir).expect("mkdir");
        let excluded = vec![run_dir.clone()];
        let mut ws = repo.open();
        let before = ws.fingerprint(&excluded).expect("fingerprint");
        fs::write(run_dir.join("state.json"), "{}").expect("write");
        assert_eq!(before, ws.fingerprint(&excluded).expect("fingerprint"));
        repo.write(
            "runs/r1 zx!/file.txt",
            "a neighbour matching the name as a glob",
        );
        let after = ws.fingerprint(&excluded).expect("fingerprint");
        assert_ne!(before, after);
        // The in-memory rules do not outlive the call that needed them.
        repo.write("runs/r[1] *x?/other.txt", "x");
        assert_ne!(
            ws.fingerprint(&[]).expect("fingerprint"),
            ws.fingerprint(&excluded).expect("fingerprint")
        );
    }

    #[test]
    fn excluded_ancestor_of_worktree_leaves_only_head() {
        let repo = TestRepo::new();
        let excluded = vec![repo.path().parent().expect("parent").to_path_buf()];
        let mut ws = repo.open();
        let before = ws.fingerprint(&excluded).expect("fingerprint");
        repo.write("work.txt", "work");
        assert_eq!(before, ws.fingerprint(&excluded).expect("fingerprint"));
        repo.commit_all("commit");
        assert_ne!(before, ws.fingerprint(&excluded).expect("fingerprint"));
    }

    #[test]
    fn fingerprint_works_on_unborn_head() {
        let repo = TestRepo::unborn();
        let mut ws = repo.open();
        let before = ws.fingerprint(&[]).expect("fingerprint");
        repo.write("first.txt", "1");
        assert_ne!(before, ws.fingerprint(&[]).expect("fingerprint"));
    }

    #[test]
    fn open_refuses_non_git_and_bare() {
        let plain = TempDir::new().expect("tempdir");
        let err = Workspace::open(plain.path()).expect_err("not a repo");
        assert!(matches!(err, GitError::NotARepo { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&plain.path().display().to_string()), "{msg}");
        assert!(msg.contains("not inside a git work tree"), "{msg}");

        let bare = TempDir::new().expect("tempdir");
        git_in(bare.path(), &["init", "-q", "--bare"]);
        let err = Workspace::open(bare.path()).expect_err("bare");
        assert!(matches!(err, GitError::BareRepo { .. }), "{err:?}");
        assert!(err.to_string().contains("bare"), "{err}");

        let missing = plain.path().join("does-not-exist");
        let err = Workspace::open(&missing).expect_err("missing");
        assert!(err.to_string().contains("does-not-exist"), "{err}");
    }

    #[test]
    fn unborn_head_is_refused_for_backups() {
        let repo = TestRepo::unborn();
        let ws = repo.open();
        let err = ws.require_head().expect_err("unborn");
        let msg = err.to_string();
        assert!(msg.contains("has no commits yet"), "{msg}");
        assert!(msg.contains("--backup / --cb-no-progress"), "{msg}");
        assert!(
            msg.contains(&ws.workdir().display().to_string()),
            "{msg} should name the repository"
        );
        let err = ws
            .create_backup("looper-backup", stamp(), 1, false, &[])
            .expect_err("unborn");
        assert!(matches!(err, GitError::UnbornHead { .. }), "{err:?}");
    }

    #[test]
    fn backup_branch_at_head_with_suffix_on_collision() {
        let repo = TestRepo::new();
        let ws = repo.open();
        assert_eq!(ws.require_head().expect("head").to_string(), repo.head());
        let b = ws
            .create_backup("looper-backup//", stamp(), 3, false, &[])
            .expect("backup");
        assert_eq!(b.branch, "looper-backup/20260102T030405Z-loop-0003");
        assert_eq!(b.commit, repo.head());
        assert!(!b.snapshot);
        let on_disk = repo.git(&[
            "rev-parse",
            "refs/heads/looper-backup/20260102T030405Z-loop-0003",
        ]);
        assert_eq!(on_disk.trim(), repo.head());
        // Two runs in the same second.
        let b2 = ws
            .create_backup("looper-backup", stamp(), 3, false, &[])
            .expect("backup");
        assert_eq!(b2.branch, "looper-backup/20260102T030405Z-loop-0003-2");
        let b3 = ws
            .create_backup("looper-backup", stamp(), 3, false, &[])
            .expect("backup");
        assert_eq!(b3.branch, "looper-backup/20260102T030405Z-loop-0003-3");
        // A dirty backup of a clean worktree is HEAD itself.
        let clean = ws
            .create_backup("looper-backup", stamp(), 4, true, &[])
            .expect("backup");
        assert_eq!(clean.commit, repo.head());
        assert!(!clean.snapshot);
    }

    #[test]
    fn backup_name_validation() {
        assert!(matches!(
            backup_branch_name("", stamp(), 1),
            Err(GitError::EmptyBackupPrefix)
        ));
        let err = backup_branch_name("///", stamp(), 1).expect_err("empty");
        assert_eq!(err.to_string(), "backup_prefix must not be empty");
        let err = backup_branch_name("bad prefix", stamp(), 1).expect_err("space");
        assert!(matches!(err, GitError::InvalidBackupName { .. }), "{err:?}");
        assert!(err.to_string().contains("bad prefix/"), "{err}");
        assert_eq!(
            backup_branch_name("a/b", stamp(), 12345).expect("name"),
            "a/b/20260102T030405Z-loop-12345"
        );
    }

    #[test]
    fn backup_on_detached_head() {
        let repo = TestRepo::new();
        let first = repo.head();
        repo.write("c.txt", "gamma\n");
        repo.commit_all("second");
        repo.git(&["checkout", "-q", "--detach", &first]);
        repo.write("a.txt", "dirty but not captured by a plain backup\n");
        let ws = repo.open();
        let b = ws
            .create_backup("looper-backup", stamp(), 1, false, &[])
            .expect("backup");
        assert_eq!(b.commit, first);
    }

    #[test]
    fn backup_prefix_clashing_with_a_branch_fails_clearly() {
        let repo = TestRepo::new();
        repo.git(&["branch", "looper-backup"]);
        let ws = repo.open();
        let err = ws
            .create_backup("looper-backup", stamp(), 1, false, &[])
            .expect_err("d/f conflict");
        let msg = err.to_string();
        assert!(
            msg.contains("looper-backup/20260102T030405Z-loop-0001"),
            "{msg}"
        );
        assert!(matches!(err, GitError::PrefixIsBranch { .. }), "{err:?}");
        assert!(
            msg.contains("a branch named looper-backup already exists"),
            "{msg}"
        );
        // Pruning leaves the branch named like the prefix alone.
        assert!(
            ws.prune_backups("looper-backup", 1)
                .expect("prune")
                .is_empty()
        );
        repo.git(&["rev-parse", "--verify", "refs/heads/looper-backup"]);
    }

    /// Local branch names as git itself lists them, sorted.
    fn branches(repo: &TestRepo) -> Vec<String> {
        repo.git(&["for-each-ref", "--format=%(refname:short)", "refs/heads"])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn prune_keeps_newest_inside_exact_namespace() {
        let repo = TestRepo::new();
        for name in [
            "looper-backup/20260101T000001Z-loop-0001",
            "looper-backup/20260101T000002Z-loop-0002",
            "looper-backup/20260101T000003Z-loop-0003",
            "looper-backup/20260101T000004Z-loop-0004",
            "looper-backup/20260101T000004Z-loop-0004-2",
            "looper-backup-old/20200101T000000Z-loop-0001",
            "looper-backup-old/20200101T000000Z-loop-0002",
            "looper-backupx",
        ] {
            repo.git(&["branch", name]);
        }
        let ws = repo.open();
        assert!(
            ws.prune_backups("looper-backup", 0)
                .expect("prune")
                .is_empty()
        );
        let deleted = ws.prune_backups("looper-backup/", 2).expect("prune");
        assert_eq!(
            deleted,
            [
                "looper-backup/20260101T000001Z-loop-0001",
                "looper-backup/20260101T000002Z-loop-0002",
                "looper-backup/20260101T000003Z-loop-0003",
            ]
        );
        assert_eq!(
            branches(&repo),
            [
                "looper-backup-old/20200101T000000Z-loop-0001",
                "looper-backup-old/20200101T000000Z-loop-0002",
                "looper-backup/20260101T000004Z-loop-0004",
                "looper-backup/20260101T000004Z-loop-0004-2",
                "looper-backupx",
                "main",
            ]
        );
    }

    #[test]
    fn backup_names_are_parsed_strictly() {
        let p = BackupName::parse;
        assert_eq!(
            p("20260101T000001Z-loop-0001"),
            Some(BackupName {
                stamp: "20260101T000001Z",
                loop_number: 1,
                suffix: 1,
                worktree: None
            })
        );
        assert_eq!(
            p("20260101T000001Z-loop-12345-3@feat_x").map(|b| (
                b.loop_number,
                b.suffix,
                b.worktree
            )),
            Some((12345, 3, Some("feat_x")))
        );
        for user in [
            "1.0-hotfix",
            "wip",
            "zzz",
            "20260101T000001Z",
            "20260101T000001Z-loop-1",
            "20260101T000001Z-loop-0001-",
            "20260101T000001Z-loop-0001-1",
            "20260101T000001Z-loop-0001-02",
            "20260101T000001Z-loop-0001-x",
            "20260101T000001Z-loop-0001@",
            "20260101T000001Z-loop-0001@a b",
            "20260101T000001Z-loop-0001.bak",
            "2026010XT000001Z-loop-0001",
            "20260101T000001Z-loop-0001/x",
        ] {
            assert_eq!(p(user), None, "{user}");
        }
        assert_eq!(worktree_tag("my tree@{1}"), "my_tree__1_");
        assert_eq!(worktree_tag(".x.lock"), "x");
    }

    #[test]
    fn prune_never_touches_a_users_branches_or_another_worktrees_backups() {
        let repo = TestRepo::new();
        let users = [
            "looper-backup/1.0-hotfix",
            "looper-backup/wip",
            "looper-backup/zzz-notes",
            "looper-backup/20260101T000000Z-loop-0001-final",
        ];
        let others = [
            "looper-backup/20250101T000000Z-loop-0001@other",
            "looper-backup/20250101T000001Z-loop-0002@other",
        ];
        let ours = [
            "looper-backup/20260101T000009Z-loop-0001",
            "looper-backup/20260101T000009Z-loop-0002",
            "looper-backup/20260101T000009Z-loop-0002-2",
            "looper-backup/20260101T000010Z-loop-0001",
        ];
        for name in users.iter().chain(&others).chain(&ours) {
            repo.git(&["branch", name]);
        }
        let ws = repo.open();
        // Age order, not name order: loop-0002-2 is newer than loop-0002.
        let deleted = ws.prune_backups("looper-backup", 2).expect("prune");
        assert_eq!(deleted, &ours[..2]);
        let left = branches(&repo);
        for name in users.iter().chain(&others).chain(&ours[2..]) {
            assert!(
                left.contains(&name.to_string()),
                "{name} was deleted: {left:?}"
            );
        }
        // A new backup is never pruned at once because a user's name sorts after it.
        let b = ws
            .create_backup("looper-backup", stamp(), 1, false, &[])
            .expect("backup");
        assert!(
            ws.prune_backups("looper-backup", 3)
                .expect("prune")
                .is_empty()
        );
        assert!(branches(&repo).contains(&b.branch));
    }

    #[test]
    fn linked_worktrees_name_and_prune_their_own_backups() {
        let repo = TestRepo::new();
        let linked = TempDir::new().expect("tempdir");
        let wt = linked.path().join("feature tree");
        repo.git(&[
            "worktree",
            "add",
            "-q",
            "-b",
            "feature",
            &wt.display().to_string(),
        ]);
        let main = repo.open();
        let side = Workspace::open(&wt).expect("open linked worktree");
        let mut main_made = Vec::new();
        let mut side_made = Vec::new();
        for n in 1..=3 {
            main_made.push(
                main.create_backup("looper-backup", stamp(), n, false, &[])
                    .expect("backup")
                    .branch,
            );
            main.prune_backups("looper-backup", 2).expect("prune");
            side_made.push(
                side.create_backup("looper-backup", stamp(), n, false, &[])
                    .expect("backup")
                    .branch,
            );
            side.prune_backups("looper-backup", 2).expect("prune");
        }
        assert_eq!(main_made[0], "looper-backup/20260102T030405Z-loop-0001");
        assert_eq!(
            side_made[0],
            "looper-backup/20260102T030405Z-loop-0001@feature-tree"
        );
        let left = branches(&repo);
        let backups: Vec<&String> = left
            .iter()
            .filter(|b| b.starts_with("looper-backup/"))
            .collect();
        assert_eq!(
            backups,
            [&main_made[1], &side_made[1], &main_made[2], &side_made[2]],
            "{left:?}"
        );
    }

    #[test]
    fn prune_keeps_a_checked_out_backup() {
        let repo = TestRepo::new();
        for name in [
            "lb/20260101T000001Z-loop-0001",
            "lb/20260101T000002Z-loop-0002",
        ] {
            repo.git(&["branch", name]);
        }
        repo.git(&["checkout", "-q", "lb/20260101T000001Z-loop-0001"]);
        let ws = repo.open();
        let b = ws
            .create_backup("lb", stamp(), 3, false, &[])
            .expect("backup");
        let deleted = ws.prune_backups("lb", 1).expect("prune");
        assert_eq!(deleted, ["lb/20260101T000002Z-loop-0002"]);
        let left = branches(&repo);
        assert!(left.contains(&"lb/20260101T000001Z-loop-0001".to_owned()));
        assert!(left.contains(&b.branch));
    }

    /// Every file of a tree on disk: kind, bytes (or link target) and the executable bit.
    fn snapshot_of_dir(root: &Path, skip: &[&str]) -> BTreeMap<String, (String, Vec<u8>, bool)> {
        fn walk(
            root: &Path,
            dir: &Path,
            skip: &[&str],
            out: &mut BTreeMap<String, (String, Vec<u8>, bool)>,
        ) {
            for entry in fs::read_dir(dir).expect("read_dir") {
                let entry = entry.expect("entry");
                let path = entry.path();
                let rel = path
                    .strip_prefix(root)
                    .expect("rel")
                    .to_string_lossy()
                    .into_owned();
                if skip
                    .iter()
                    .any(|s| rel == *s || rel.starts_with(&format!("{s}/")))
                {
                    continue;
                }
                let meta = fs::symlink_metadata(&path).expect("lstat");
                if meta.file_type().is_symlink() {
                    let target = fs::read_link(&path).expect("readlink");
                    out.insert(
                        rel,
                        ("link".into(), target.as_os_str().as_bytes().to_vec(), false),
                    );
                } else if meta.is_dir() {
                    walk(root, &path, skip, out);
                } else {
                    let exec = meta.mode() & 0o100 != 0;
                    out.insert(rel, ("file".into(), fs::read(&path).expect("read"), exec));
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(root, root, skip, &mut out);
        out
    }

    /// A repository with a submodule `sub` (its own repository, one file `s.txt`).
    fn with_submodule() -> (TestRepo, TestRepo) {
        let upstream = TestRepo::unborn();
        upstream.write("s.txt", "one\n");
        upstream.commit_all("sub initial");
        let repo = TestRepo::new();
        repo.git(&[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            &upstream.path().display().to_string(),
            "sub",
        ]);
        repo.commit_all("add submodule");
        (repo, upstream)
    }

    #[test]
    fn changes_inside_a_submodule_are_progress() {
        let (repo, _upstream) = with_submodule();
        let mut ws = repo.open();
        let mut seen = Distinct {
            seen: HashSet::new(),
        };
        seen.step(&mut ws, &[], "setup");
        // The same status (`sub` modified) every time, different contents each time.
        repo.write("sub/s.txt", "two\n");
        seen.step(&mut ws, &[], "editing a file inside the submodule");
        repo.write("sub/s.txt", "three\n");
        seen.step(&mut ws, &[], "editing it again");
        repo.write("sub/new.txt", "untracked in the submodule\n");
        seen.step(&mut ws, &[], "an untracked file inside the submodule");
        git_in(&repo.path().join("sub"), &["add", "-A"]);
        git_in(&repo.path().join("sub"), &["commit", "-q", "-m", "in sub"]);
        seen.step(&mut ws, &[], "a commit inside the submodule");
        repo.write("sub/s.txt", "four\n");
        seen.step(&mut ws, &[], "an edit on top of that commit");
    }

    #[test]
    fn a_dirty_backup_captures_a_dirty_submodule_and_pruning_releases_it() {
        let (repo, _upstream) = with_submodule();
        let sub = repo.path().join("sub");
        let sub_head = git_in(&sub, &["rev-parse", "HEAD"]).trim().to_owned();
        repo.write("sub/s.txt", "edited in the submodule\n");
        repo.write("sub/untracked.txt", "new in the submodule\n");
        let ws = repo.open();
        let b = ws
            .create_backup("lb", stamp(), 1, true, &[])
            .expect("backup");
        assert!(b.snapshot);
        // The superproject's snapshot records the submodule at a snapshot commit of the
        // submodule's own worktree, whose parent is the submodule's HEAD.
        let link = repo.git(&["rev-parse", &format!("{}:sub", b.branch)]);
        let link = link.trim();
        assert_ne!(link, sub_head);
        assert_eq!(
            git_in(&sub, &["rev-parse", &format!("{link}^")]).trim(),
            sub_head
        );
        assert_eq!(
            git_in(&sub, &["show", &format!("{link}:s.txt")]),
            "edited in the submodule\n"
        );
        assert_eq!(
            git_in(&sub, &["show", &format!("{link}:untracked.txt")]),
            "new in the submodule\n"
        );
        // A branch of the same name keeps it in the submodule's repository.
        assert_eq!(
            git_in(&sub, &["rev-parse", &format!("refs/heads/{}", b.branch)]).trim(),
            link
        );
        let message = repo.git(&["log", "-1", "--format=%B", &b.branch]);
        assert!(message.contains(&format!("  sub: {link}")), "{message}");
        // Nothing was touched: the submodule is still dirty in the same way.
        assert_eq!(
            fs::read_to_string(sub.join("s.txt")).expect("read"),
            "edited in the submodule\n"
        );
        assert!(git_in(&sub, &["status", "--porcelain"]).contains("?? untracked.txt"));
        // A submodule with a new commit and a clean worktree is recorded at that commit.
        git_in(&sub, &["add", "-A"]);
        git_in(&sub, &["commit", "-q", "-m", "sub work"]);
        let moved = git_in(&sub, &["rev-parse", "HEAD"]).trim().to_owned();
        let b2 = ws
            .create_backup("lb", stamp(), 2, true, &[])
            .expect("backup");
        assert_eq!(
            repo.git(&["rev-parse", &format!("{}:sub", b2.branch)])
                .trim(),
            moved
        );
        // Pruning the first backup deletes its branch in the submodule too.
        let deleted = ws.prune_backups("lb", 1).expect("prune");
        assert_eq!(deleted, std::slice::from_ref(&b.branch));
        assert!(
            git_in(&sub, &["branch", "--list", "lb/*"])
                .trim()
                .is_empty(),
            "the submodule's snapshot branch was left behind"
        );
    }

    #[test]
    fn dirty_snapshot_restores_worktree_and_touches_nothing() {
        let repo = TestRepo::new();
        repo.write("script.sh", "#!/bin/sh\necho hi\n");
        repo.write("gone.txt", "to be deleted\n");
        repo.write("turns-into-dir", "file for now\n");
        repo.write("dir-becomes-file/inner.txt", "inner\n");
        symlink("a.txt", repo.path().join("link")).expect("symlink");
        repo.commit_all("more files");
        let head = repo.head();

        // Every kind of uncommitted state.
        repo.write("a.txt", "alpha, unstaged edit\n");
        repo.write("dir/b.txt", "beta staged\n");
        repo.git(&["add", "dir/b.txt"]);
        repo.write("dir/b.txt", "beta staged then edited again\n");
        repo.write("staged-new.txt", "staged new\n");
        repo.git(&["add", "staged-new.txt"]);
        repo.write("staged-then-removed.txt", "x\n");
        repo.git(&["add", "staged-then-removed.txt"]);
        fs::remove_file(repo.path().join("staged-then-removed.txt")).expect("rm");
        fs::remove_file(repo.path().join("gone.txt")).expect("rm");
        fs::set_permissions(repo.path().join("a.txt"), fs::Permissions::from_mode(0o755))
            .expect("chmod");
        repo.write("untracked.txt", "untracked\n");
        repo.write("new/deep/dir/file.txt", "in a new directory\n");
        fs::remove_file(repo.path().join("turns-into-dir")).expect("rm");
        repo.write("turns-into-dir/child.txt", "now a directory\n");
        fs::remove_dir_all(repo.path().join("dir-becomes-file")).expect("rm");
        repo.write("dir-becomes-file", "now a file\n");
        fs::remove_file(repo.path().join("link")).expect("rm");
        symlink("dir/b.txt", repo.path().join("link")).expect("symlink");
        repo.write("ignored.log", "ignored\n");
        repo.write("build/artifact", "ignored\n");
        let run_dir = repo.path().join(".agent-looper/runs/r1");
        fs::create_dir_all(&run_dir).expect("mkdir");
        fs::write(run_dir.join("transcript.txt"), "secret").expect("write");

        let status_before = repo.git(&["status", "--porcelain=v1", "-uall"]);
        let index_path = repo.path().join(".git/index");
        let index_before = fs::read(&index_path).expect("read index");
        let skip = [".git", "ignored.log", "build", ".agent-looper"];
        let worktree_before = snapshot_of_dir(repo.path(), &[".git"]);

        let ws = repo.open();
        let b = ws
            .create_backup(
                "looper-backup",
                stamp(),
                7,
                true,
                std::slice::from_ref(&run_dir),
            )
            .expect("snapshot backup");
        assert!(b.snapshot);
        assert_ne!(b.commit, head);
        assert_eq!(b.branch, "looper-backup/20260102T030405Z-loop-0007");
        let parent = repo.git(&["rev-parse", &format!("{}^", b.commit)]);
        assert_eq!(parent.trim(), head);

        // Nothing the agent works with moved.
        assert_eq!(fs::read(&index_path).expect("read index"), index_before);
        assert_eq!(snapshot_of_dir(repo.path(), &[".git"]), worktree_before);
        assert_eq!(
            repo.git(&["status", "--porcelain=v1", "-uall"]),
            status_before
        );

        // The snapshot, checked out elsewhere, is the worktree minus ignored and excluded files.
        let restored = TempDir::new().expect("tempdir");
        let tarball = restored.path().join("snapshot.tar");
        let tar_arg = tarball.to_str().expect("utf-8 temp path");
        repo.git(&["archive", "--format=tar", "-o", tar_arg, &b.commit]);
        let extracted = restored.path().join("tree");
        fs::create_dir(&extracted).expect("mkdir");
        let status = Command::new("tar")
            .arg("-xf")
            .arg(&tarball)
            .arg("-C")
            .arg(&extracted)
            .status()
            .expect("tar");
        assert!(status.success());
        let expected = snapshot_of_dir(repo.path(), &skip);
        let got = snapshot_of_dir(&extracted, &[]);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>()
        );
        assert_eq!(got, expected);
        assert!(got.contains_key("untracked.txt"));
        assert!(got.contains_key("new/deep/dir/file.txt"));
        assert!(!got.contains_key("gone.txt"));
        assert!(got["a.txt"].2, "executable bit captured");
    }

    /// A holder record whose fields are all recognisable in messages.
    fn holder(label: &str) -> HolderRecord {
        HolderRecord {
            pid: std::process::id(),
            pid_identity: Some("linux-proc:boot:123".into()),
            label: label.into(),
            run_dir: PathBuf::from(format!("/runs/{label}")),
            started_at: stamp(),
        }
    }

    #[test]
    fn run_lock_refuses_second_holder_and_releases_on_drop() {
        let dir = TempDir::new().expect("tempdir");
        let lock = dir.path().join("nested/agent-looper.lock");
        let first = acquire_run_lock(&lock, &holder("first")).expect("acquire");
        assert_eq!(first.path(), lock);
        assert!(first.took_over.is_none());
        let text = fs::read_to_string(&lock).expect("read lock");
        let record: HolderRecord = serde_json::from_str(&text).expect("holder json");
        assert_eq!(record, holder("first"));

        let err = acquire_run_lock(&lock, &holder("second")).expect_err("held");
        match &err {
            GitError::LockHeld {
                holder: Some(h), ..
            } => assert_eq!(h.label, "first"),
            other => panic!("unexpected {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("\"first\""), "{msg}");
        assert!(msg.contains(&std::process::id().to_string()), "{msg}");
        assert!(msg.contains("/runs/first"), "{msg}");

        drop(first);
        let second = acquire_run_lock(&lock, &holder("second")).expect("acquire after drop");
        assert!(
            second.took_over.is_none(),
            "a clean release is not a takeover"
        );
        second.release().expect("release");
        assert_eq!(fs::read(&lock).expect("read lock"), b"");
    }

    /// A process forked while the lock is held (an agent spawned by another thread) keeps a
    /// copy of its descriptor until its exec: the release must not depend on that copy
    /// closing. The copy here is a duplicate held across the drop.
    #[test]
    fn run_lock_is_released_although_a_copy_of_its_descriptor_lives_on() {
        let dir = TempDir::new().expect("tempdir");
        let lock = dir.path().join("agent-looper.lock");
        let first = acquire_run_lock(&lock, &holder("first")).expect("acquire");
        let copy = first
            .file
            .as_ref()
            .map(|f| f.try_clone().expect("dup"))
            .expect("file");
        drop(first);
        let second = acquire_run_lock(&lock, &holder("second")).expect("acquire after drop");
        assert!(second.took_over.is_none());
        drop(copy);
    }

    #[test]
    fn run_lock_takes_over_from_dead_holder() {
        let dir = TempDir::new().expect("tempdir");
        let lock = dir.path().join("agent-looper.lock");
        // What a SIGKILLed holder leaves: its record, and no flock.
        fs::write(&lock, serde_json::to_vec(&holder("dead")).expect("json")).expect("write");
        let guard = acquire_run_lock(&lock, &holder("alive")).expect("takeover");
        assert_eq!(guard.took_over, Some(holder("dead")));
        let record: HolderRecord =
            serde_json::from_slice(&fs::read(&lock).expect("read")).expect("json");
        assert_eq!(record.label, "alive");
    }

    /// A holder in another process, killed with SIGKILL, releases the lock with no cleanup code.
    #[test]
    fn run_lock_held_by_killed_process_is_released() {
        let dir = TempDir::new().expect("tempdir");
        let lock = dir.path().join("agent-looper.lock");
        fs::write(&lock, "").expect("create");
        if Command::new("flock").arg("--version").output().is_err() {
            eprintln!("skipped: no flock(1) on this machine");
            return;
        }
        // The shell takes the lock on fd 9, then becomes `sleep`, which holds it from then on.
        let mut child = Command::new("sh")
            .args(["-c", "exec 9>>\"$1\"; flock 9; exec sleep 30", "sh"])
            .arg(&lock)
            .spawn()
            .expect("spawn holder");
        // Wait until the child holds it.
        let mut held = false;
        for _ in 0..200 {
            match acquire_run_lock(&lock, &holder("probe")) {
                Err(GitError::LockHeld { holder, .. }) => {
                    assert!(holder.is_none());
                    held = true;
                    break;
                }
                Ok(guard) => drop(guard),
                Err(other) => panic!("unexpected {other:?}"),
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(held, "flock(1) never took the lock");
        let err = acquire_run_lock(&lock, &holder("probe")).expect_err("held");
        assert!(
            err.to_string().contains("holder record is not readable"),
            "{err}"
        );
        child.kill().expect("kill");
        child.wait().expect("wait");
        acquire_run_lock(&lock, &holder("after")).expect("released by the kernel");
    }

    #[test]
    fn lock_path_per_worktree() {
        let repo = TestRepo::new();
        let sub = repo.path().join("dir");
        let main_lock = lock_path_for(&sub);
        assert_eq!(
            fs::canonicalize(main_lock.parent().expect("parent")).expect("canon"),
            fs::canonicalize(repo.path().join(".git")).expect("canon")
        );
        assert_eq!(main_lock.file_name().expect("name"), "agent-looper.lock");
        assert_eq!(repo.open().lock_path(), main_lock);

        let linked_parent = TempDir::new().expect("tempdir");
        let linked = linked_parent.path().join("wt");
        repo.git(&[
            "worktree",
            "add",
            "-q",
            "--detach",
            linked.to_str().expect("utf-8"),
        ]);
        let linked_lock = lock_path_for(&linked);
        assert_ne!(linked_lock, main_lock);
        let ws = Workspace::open(&linked).expect("open linked worktree");
        assert_eq!(linked_lock, ws.lock_path());
        assert!(ws.git_dir().ends_with("worktrees/wt"), "{:?}", ws.git_dir());

        let plain = TempDir::new().expect("tempdir");
        assert_eq!(
            lock_path_for(plain.path()),
            plain.path().join(".agent-looper/looper.lock")
        );
    }
}

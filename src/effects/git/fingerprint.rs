//! D17's no-progress fingerprint: HEAD, every path git shows as a change, and the bytes on
//! disk behind each change, submodules included, hashed with SHA-256.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use git2::{Repository, Status};
use sha2::{Digest, Sha256};

use super::walk::{exclusions_for, status_list};
use super::{GitError, MAX_SUBMODULE_DEPTH, MODE_GITLINK, Workspace, git_err, is_unborn};

/// Versioned domain tag: a future change of what is hashed must never compare equal to today's
/// fingerprints (a stale "no progress" match across an upgrade would stop a run wrongly).
const FINGERPRINT_DOMAIN: &[u8] = b"agent-looper/fingerprint/v1";

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
pub(super) fn is_gone(err: &io::Error) -> bool {
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

impl Workspace {
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
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::effects::git::tests::{TestRepo, git_in, with_submodule};
    use std::collections::HashSet;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use tempfile::TempDir;

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
}

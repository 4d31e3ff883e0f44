//! The commit a dirty backup points at (D19): the whole worktree as `git add -A` would see it,
//! submodules at snapshots of their own, made without touching the index or the files.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use git2::{Commit, Index, IndexEntry, IndexTime, Oid, Repository, Signature, Time};

use super::fingerprint::is_gone;
use super::walk::{exclusions_for, status_list};
use super::{
    GitError, MAX_SUBMODULE_DEPTH, MODE_EXECUTABLE, MODE_FILE, MODE_GITLINK, MODE_SYMLINK, git_err,
    io_err,
};

/// Builds the tree of the worktree as `git add -A` would see it, in an in-memory index seeded
/// from HEAD (the on-disk index and the files are only read), and commits it on top of HEAD.
/// `None` when that tree equals HEAD's: the backup then points at HEAD itself.
#[expect(
    clippy::too_many_arguments,
    reason = "one recursive walk over parent and submodules"
)]
pub(super) fn snapshot_commit(
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

/// A snapshot commit made inside a submodule's repository for a dirty backup: it must be kept
/// reachable there (its objects live in that repository), by a branch named like the backup.
#[derive(Debug, Clone)]
pub(super) struct SubmoduleSnapshot {
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
pub(super) fn keep_submodule_snapshots(
    snapshots: &[SubmoduleSnapshot],
    name: &str,
) -> Result<(), GitError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::effects::git::tests::{TestRepo, git_in, stamp, with_submodule};
    use std::collections::BTreeMap;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::process::Command;
    use tempfile::TempDir;

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
}

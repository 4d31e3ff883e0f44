//! The one-looper-per-worktree run lock (D18): an OS advisory lock on a file in the
//! per-worktree git dir, with a record of its holder for refusals and takeovers.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use git2::Repository;
use serde::{Deserialize, Serialize};

use super::{GitError, Workspace, io_err};

/// Name of the lock file inside a (per-worktree) git dir, so linked worktrees lock separately.
const GIT_LOCK_FILE: &str = "agent-looper.lock";

impl Workspace {
    /// Where this worktree's run lock lives (see [`acquire_run_lock`]).
    pub fn lock_path(&self) -> PathBuf {
        self.git_dir.join(GIT_LOCK_FILE)
    }
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
pub(super) fn lock_held_message(lock_path: &Path, holder: Option<&HolderRecord>) -> String {
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
    use crate::effects::git::tests::{TestRepo, stamp};
    use std::process::Command;
    use tempfile::TempDir;

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

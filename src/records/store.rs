//! The supervisor's writer of its own run directory (D21): `state.json` replaced atomically,
//! `events.jsonl` appended one whole line per write, fsynced where durability matters, and a
//! space reserve so the end of a run is recorded even on a full disk.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::events::{self, SupervisorEvent};
use super::fsio::{create_private_dir, open_append, write_atomic, write_new_private};
use super::{
    CONTROL_FILE, EVENTS_FILE, FOCUS_FILE, RESERVE_FILE, STATE_FILE, prompt_log_name, run_dir_name,
};
use crate::engine::Event;
use crate::error::{Error, Result};
use crate::records::state::RunState;

const RESERVE_BYTES: usize = 64 * 1024;

/// An open run directory owned by one supervisor.
pub struct RunStore {
    pub dir: PathBuf,
    pub run_id: String,
    events: File,
    pub state: RunState,
    syncer: Syncer,
    /// False for dry runs: their records are informational, atomic but never fsynced.
    durable: bool,
}

impl RunStore {
    /// Create a fresh run directory under `log_dir`.
    ///
    /// The directory is built under a hidden staging name (`.<run id>.new`, which `looper
    /// status` does not list) and renamed into place only once it holds a `state.json`
    /// naming this supervisor (pid and pid identity, status `running`). So a run directory
    /// never exists without a readable state: a supervisor killed (even by SIGKILL) right
    /// after creating it leaves a run that status reports as stale and `--repair-stale`
    /// can close, not an unreadable one (found by the reliability suite).
    pub fn create(log_dir: &Path, label: &str, now: DateTime<Utc>, random: u32) -> Result<Self> {
        let run_id = run_dir_name(now, label, random);
        let dir = log_dir.join(&run_id);
        let staging = log_dir.join(format!(".{run_id}.new"));
        create_private_dir(&staging)?;
        let built = Self::stage(&staging, dir, run_id, label, now);
        if built.is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        built
    }

    fn stage(
        staging: &Path,
        dir: PathBuf,
        run_id: String,
        label: &str,
        now: DateTime<Utc>,
    ) -> Result<Self> {
        let events_path = staging.join(EVENTS_FILE);
        let events =
            open_append(&events_path).map_err(|e| Error::io("cannot create", &events_path, e))?;
        // Created up front so the operator's files exist with the right mode and can be
        // watched one by one (a watch on the directory would see every write of our own).
        for name in [CONTROL_FILE, FOCUS_FILE] {
            let p = staging.join(name);
            open_append(&p).map_err(|e| Error::io("cannot create", &p, e))?;
        }
        // The asks directory exists from the start so it can be watched (D31).
        super::fsio::create_private_dir(&staging.join(super::asks::ASKS_DIR))?;
        let me = std::process::id() as i32;
        let state = RunState {
            schema_version: Some(super::state::SCHEMA_VERSION),
            run_id: Some(run_id.clone()),
            run_dir: Some(dir.display().to_string()),
            label: Some(label.to_string()),
            pid: Some(i64::from(me)),
            pid_identity: crate::effects::procinfo::pid_identity(me),
            status: Some("running".into()),
            started_at: Some(now),
            updated_at: Some(now),
            ..RunState::default()
        };
        let reserve = staging.join(RESERVE_FILE);
        write_new_private(&reserve, &[0u8; RESERVE_BYTES])
            .map_err(|e| Error::io("cannot create", &reserve, e))?;
        let mut store = Self {
            dir: staging.to_path_buf(),
            run_id,
            events,
            state,
            syncer: Syncer::start(),
            durable: true,
        };
        store.write_state(Sync::Now)?;
        std::fs::rename(staging, &dir)
            .map_err(|e| Error::io("cannot create run directory", &dir, e))?;
        store.dir = dir;
        Ok(store)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The log of a prompt of this run.
    pub fn prompt_log(&self, loop_number: u64, prompt_index: usize) -> PathBuf {
        self.dir.join(prompt_log_name(loop_number, prompt_index))
    }

    /// Append an engine event and fold it into the state snapshot (written by `write_state`).
    /// An event that starts a process (prompt, verify, review) names its log.
    pub fn append_event(&mut self, event: &Event, at: DateTime<Utc>) -> Result<()> {
        let log = match event {
            Event::PromptStarted {
                loop_number,
                prompt_index,
                ..
            } => Some(self.prompt_log(*loop_number, *prompt_index)),
            // The gates' logs become the current log too, so `logs -f` and the live view
            // follow the verify command and the reviewer as they run.
            Event::VerifyStarted { loop_number, .. } => {
                Some(self.dir.join(super::verify_log_name(*loop_number)))
            }
            Event::ReviewStarted { loop_number, .. } => {
                Some(self.dir.join(super::review_log_name(*loop_number)))
            }
            _ => None,
        };
        self.write_line(events::encode(at, event, log.as_deref()))?;
        if let Some(log) = log {
            self.state.last_log = Some(log.display().to_string());
        }
        self.state.apply(event, at);
        Ok(())
    }

    /// Append one of the supervisor's own records (hybrid panes, lock takeover).
    pub fn append_supervisor(&mut self, event: &SupervisorEvent, at: DateTime<Utc>) -> Result<()> {
        self.write_line(events::encode(at, event, None))?;
        self.state.apply_supervisor(event, at);
        Ok(())
    }

    fn write_line(&mut self, line: Vec<u8>) -> Result<()> {
        self.with_reserve(|s| {
            // One write call per line (O_APPEND); a short write on a full disk would leave
            // a torn line, which readers skip, and the retry appends the line whole.
            s.events
                .write_all(&line)
                .map_err(|e| Error::io("cannot append to", s.dir.join(EVENTS_FILE), e))
        })
    }

    /// Dry runs: keep the records atomic but skip every sync.
    pub fn set_durable(&mut self, durable: bool) {
        self.durable = durable;
    }

    /// Rewrite state.json from the in-memory snapshot (always atomically).
    pub fn write_state(&mut self, sync: Sync) -> Result<()> {
        let sync = if self.durable { sync } else { Sync::No };
        let mut bytes = serde_json::to_vec_pretty(&self.state).unwrap_or_default();
        bytes.push(b'\n');
        self.with_reserve(|s| match sync {
            Sync::Now => {
                s.syncer.flush();
                s.events
                    .sync_data()
                    .map_err(|e| Error::io("cannot sync", s.dir.join(EVENTS_FILE), e))?;
                write_atomic(&s.dir.join(STATE_FILE), &bytes, true)
            }
            Sync::Soon => {
                write_atomic(&s.dir.join(STATE_FILE), &bytes, false)?;
                s.syncer.request(&s.dir);
                Ok(())
            }
            Sync::No => write_atomic(&s.dir.join(STATE_FILE), &bytes, false),
        })
    }

    /// Run a write of the run's own records; if it fails while the space reserve still
    /// exists, delete the reserve and try once more. The agent's output can fill the disk
    /// (a full `log_dir`); the reserve, written when the run directory is created, keeps
    /// room for the records that say so: the failed prompt, `run_stopped` and the final
    /// state (found by the reliability suite: the state used to stay `running`).
    fn with_reserve(&mut self, mut write: impl FnMut(&mut Self) -> Result<()>) -> Result<()> {
        match write(self) {
            Err(_) if std::fs::remove_file(self.dir.join(RESERVE_FILE)).is_ok() => write(self),
            done => done,
        }
    }

    /// The run is over: give the reserved space back.
    pub fn release_reserve(&self) {
        let _ = std::fs::remove_file(self.dir.join(RESERVE_FILE));
    }
}

/// How durable a state write must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sync {
    /// On disk before returning: run start and run end.
    Now,
    /// On disk shortly, without holding up the loop: loop ends. The background sync
    /// overlaps the next agent run; a crash meanwhile still leaves a whole, parseable file
    /// (atomic rename), at worst the previous one.
    Soon,
    /// Atomic only.
    No,
}

/// Syncs run records on a background thread so fsync latency never lands on the loop.
pub struct Syncer {
    tx: Option<std::sync::mpsc::Sender<SyncJob>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

enum SyncJob {
    Dir(PathBuf),
    Flush(std::sync::mpsc::Sender<()>),
}

impl Syncer {
    /// No thread until the first background sync is asked for (dry runs never ask).
    fn start() -> Self {
        Self {
            tx: None,
            thread: None,
        }
    }

    fn spawn() -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<SyncJob>();
        let thread = std::thread::Builder::new()
            .name("looper-sync".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    // Coalesce: one sync per directory for everything queued meanwhile.
                    let mut dirs: Vec<PathBuf> = Vec::new();
                    let mut acks = Vec::new();
                    for job in std::iter::once(job).chain(rx.try_iter()) {
                        match job {
                            SyncJob::Dir(d) if !dirs.contains(&d) => dirs.push(d),
                            SyncJob::Dir(_) => {}
                            SyncJob::Flush(ack) => acks.push(ack),
                        }
                    }
                    for d in dirs {
                        for name in [EVENTS_FILE, STATE_FILE] {
                            if let Ok(f) = File::open(d.join(name)) {
                                let _ = f.sync_data();
                            }
                        }
                        if let Ok(f) = File::open(&d) {
                            let _ = f.sync_all();
                        }
                    }
                    for ack in acks {
                        let _ = ack.send(());
                    }
                }
            })
            .ok();
        Self {
            tx: thread.as_ref().map(|_| tx),
            thread,
        }
    }

    fn request(&mut self, dir: &Path) {
        if self.thread.is_none() {
            *self = Self::spawn();
        }
        if let Some(tx) = &self.tx {
            let _ = tx.send(SyncJob::Dir(dir.to_path_buf()));
        }
    }

    /// Wait until everything requested so far is on disk.
    pub fn flush(&self) {
        if let Some(tx) = &self.tx {
            let (ack, done) = std::sync::mpsc::channel();
            if tx.send(SyncJob::Flush(ack)).is_ok() {
                let _ = done.recv();
            }
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.flush();
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_dirs_are_private_and_unique() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let now = Utc::now();
        let a = RunStore::create(dir.path(), "x", now, 1).expect("a");
        let b = RunStore::create(dir.path(), "x", now, 2).expect("b");
        assert_ne!(a.dir, b.dir);
        let mode = std::fs::metadata(&a.dir)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700);
        let mode = std::fs::metadata(a.dir.join(EVENTS_FILE))
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
}

//! The run directory and its records (D21): `state.json` replaced atomically,
//! `events.jsonl` appended one whole line per write, fsynced where durability matters.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value as Json};

use crate::engine::Event;
use crate::error::{Error, Result};
use crate::state::{RunState, timestamp};

pub const STATE_FILE: &str = "state.json";
pub const EVENTS_FILE: &str = "events.jsonl";
pub const CONTROL_FILE: &str = "control.jsonl";
pub const FOCUS_FILE: &str = "focus.jsonl";
pub const NOTES_FILE: &str = "operator_notes.jsonl";
/// Space held back for the run's own records (see `RunStore::with_reserve`).
pub const RESERVE_FILE: &str = ".space-reserve";
const RESERVE_BYTES: usize = 64 * 1024;

/// Keep what a label says but only characters that are safe in a file name.
pub fn safe_label(label: &str) -> String {
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
    let trimmed = mapped.trim_matches('-');
    if trimmed.is_empty() || trimmed.chars().all(|c| c == '.') {
        "agent".into()
    } else {
        trimmed.chars().take(80).collect()
    }
}

/// `<UTC stamp with microseconds>__<safe label>__<6 hex>`.
pub fn run_dir_name(now: DateTime<Utc>, label: &str, random: u32) -> String {
    format!(
        "{}__{}__{:06x}",
        now.format("%Y%m%dT%H%M%S%.6fZ"),
        safe_label(label),
        random & 0xff_ffff
    )
}

/// Create a directory (and parents) with owner-only permissions for the last component.
pub fn create_private_dir(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("cannot create", parent, e))?;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(|e| Error::io("cannot create run directory", path, e))
}

/// Open a file for appending, creating it owner-only.
pub fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// Append one line with a single write so concurrent appenders never interleave.
pub fn append_line(path: &Path, line: &str) -> Result<()> {
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    let mut f = open_append(path).map_err(|e| Error::io("cannot open", path, e))?;
    f.write_all(&buf)
        .map_err(|e| Error::io("cannot append to", path, e))
}

/// Replace a file atomically: temp file in the same directory, then rename.
pub fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".state.")
        .suffix(".tmp")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(|e| Error::io("cannot create a temporary file in", dir, e))?;
    tmp.write_all(bytes)
        .map_err(|e| Error::io("cannot write", tmp.path(), e))?;
    if durable {
        tmp.as_file()
            .sync_data()
            .map_err(|e| Error::io("cannot sync", tmp.path(), e))?;
    }
    tmp.persist(path)
        .map_err(|e| Error::io("cannot replace", path, e.error))?;
    if durable && let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Read a JSONL file, skipping blank, malformed and torn lines.
pub fn read_jsonl(path: &Path) -> Vec<Json> {
    let Ok(bytes) = std::fs::read(path) else {
        return vec![];
    };
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .filter_map(|l| serde_json::from_slice::<Json>(l).ok())
        .filter(Json::is_object)
        .collect()
}

/// Load a state file; `None` if missing, unreadable or not a state.
pub fn read_state(path: &Path) -> std::result::Result<RunState, String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    if !meta.file_type().is_file() {
        return Err("not a regular file".into());
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

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
        let me = std::process::id() as i32;
        let at = timestamp(now);
        let state = RunState {
            schema_version: Some(crate::state::SCHEMA_VERSION),
            run_id: Some(run_id.clone()),
            run_dir: Some(dir.display().to_string()),
            label: Some(label.to_string()),
            pid: Some(i64::from(me)),
            pid_identity: crate::effects::procinfo::pid_identity(me),
            status: Some("running".into()),
            started_at: Some(at.clone()),
            updated_at: Some(at),
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

    /// Append one event line: `{"ts": ..., "event": ..., fields..., extra...}`.
    pub fn append_event(
        &mut self,
        event: &Event,
        at: DateTime<Utc>,
        extra: Option<Map<String, Json>>,
    ) -> Result<String> {
        let ts = timestamp(at);
        let mut obj = match serde_json::to_value(event) {
            Ok(Json::Object(m)) => m,
            _ => Map::new(),
        };
        if let Some(extra) = extra {
            obj.extend(extra);
        }
        self.write_record(&ts, obj)?;
        self.state.apply(event, &ts);
        Ok(ts)
    }

    /// Append a record that is not an engine event (lock takeover, agent notices, focus).
    pub fn append_raw(
        &mut self,
        name: &str,
        at: DateTime<Utc>,
        fields: Map<String, Json>,
    ) -> Result<()> {
        let ts = timestamp(at);
        let mut obj = fields;
        obj.insert("event".into(), Json::String(name.into()));
        self.write_record(&ts, obj)
    }

    fn write_record(&mut self, ts: &str, mut obj: Map<String, Json>) -> Result<()> {
        obj.insert("ts".into(), Json::String(ts.to_string()));
        let mut line = serde_json::to_vec(&Json::Object(obj)).unwrap_or_default();
        line.push(b'\n');
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
        let json = serde_json::to_value(&self.state).unwrap_or(Json::Null);
        let mut bytes = serde_json::to_vec_pretty(&json).unwrap_or_default();
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

/// Create a new owner-only file holding `bytes` (really written, so the space is taken).
fn write_new_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

/// The machine-wide registry of run directories for `looper status --all` (D23).
pub fn registry_path(env: &std::collections::BTreeMap<String, String>) -> Option<PathBuf> {
    let base = env
        .get("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            env.get("HOME")
                .map(|h| Path::new(h).join(".local").join("state"))
        })?;
    Some(base.join("agent-looper").join("runs.jsonl"))
}

pub fn register_run(registry: &Path, run_dir: &Path, at: DateTime<Utc>) -> Result<()> {
    if let Some(parent) = registry.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("cannot create", parent, e))?;
    }
    let line = serde_json::json!({ "run_dir": run_dir, "created_at": timestamp(at) }).to_string();
    append_line(registry, &line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_label_keeps_unicode_and_replaces_the_rest() {
        assert_eq!(safe_label("fix bugs/now!"), "fix-bugs-now");
        assert_eq!(safe_label("ünï_code.v2"), "ünï_code.v2");
        assert_eq!(safe_label("///"), "agent");
        assert_eq!(safe_label(".."), "agent");
    }

    #[test]
    fn read_jsonl_skips_a_torn_last_line_and_garbage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("e.jsonl");
        std::fs::write(&p, b"{\"a\":1}\n\nnot json\n{\"b\":2}\n{\"c\":").expect("write");
        let lines = read_jsonl(&p);
        assert_eq!(lines.len(), 2);
    }

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

//! Closing a run whose supervisor died (reference section 10.5): `state.json` is rewritten
//! atomically as stopped, keeping every field we do not own (runs written by the reference
//! have more), and exactly one `run_stopped` is appended.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value as Json};

use super::events::{self, SupervisorEvent};
use super::{STATE_FILE, fsio, time};
use crate::engine::{Status, StopKind};
use crate::error::{Error, Result};

/// What `--repair-stale` (and `control stop --now/--force`) wrote.
#[derive(Clone, Debug)]
pub struct Repaired {
    pub reason: String,
    pub stop_reason: String,
}

/// Repair one run, durably.
pub fn repair(dir: &Path, reason: &str, now: DateTime<Utc>) -> Result<Repaired> {
    let r = repair_unsynced(dir, reason, now, true)?;
    sync_run(dir)?;
    Ok(r)
}

/// Repair many runs (`status --repair-stale`): each is written atomically first, then all
/// are made durable together. A few runs get an fsync of each file; a batch gets one
/// `syncfs` of each filesystem holding them (2,000 runs took 272 ms with two fsyncs each).
/// When `syncfs` fails, the runs are synced file by file from several threads. A repair is
/// reported done only once it is on disk.
pub fn repair_all(items: &[(PathBuf, String)], now: DateTime<Utc>) -> Vec<Result<Repaired>> {
    // The writes themselves, a few threads at a time (each run is independent).
    let chunk = items.len().div_ceil(WRITE_THREADS).max(1);
    let mut out: Vec<Result<Repaired>> = std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                let n = part.len();
                let h = scope.spawn(move || {
                    part.iter()
                        .map(|(dir, reason)| repair_unsynced(dir, reason, now, false))
                        .collect::<Vec<_>>()
                });
                (n, h)
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|(n, h)| {
                h.join().unwrap_or_else(|_| {
                    (0..n)
                        .map(|_| Err(Error::Usage("a repair thread panicked".into())))
                        .collect()
                })
            })
            .collect()
    });
    let done: Vec<usize> = (0..out.len()).filter(|i| out[*i].is_ok()).collect();
    let mut unsynced = done.clone();
    if done.len() > BATCH {
        let mut roots: Vec<PathBuf> = done
            .iter()
            .map(|&i| items[i].0.parent().unwrap_or(&items[i].0).to_path_buf())
            .collect();
        roots.sort();
        roots.dedup();
        let failed: Vec<PathBuf> = roots
            .into_iter()
            .filter(|r| fsio::sync_filesystem(r).is_err())
            .collect();
        unsynced.retain(|&i| failed.iter().any(|r| items[i].0.starts_with(r)));
    }
    for (i, e) in sync_each(items, &unsynced) {
        out[i] = Err(e);
    }
    out
}

/// Threads writing repairs.
const WRITE_THREADS: usize = 4;
/// Above this many repairs, one `syncfs` is cheaper than an fsync per file.
const BATCH: usize = 8;
/// Threads issuing fsyncs when runs are synced one by one.
const SYNC_THREADS: usize = 16;

/// fsync the runs `which` (indexes into `items`) from several threads; returns the failures.
fn sync_each(items: &[(PathBuf, String)], which: &[usize]) -> Vec<(usize, Error)> {
    if which.is_empty() {
        return Vec::new();
    }
    let chunk = which.len().div_ceil(SYNC_THREADS).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = which
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .filter_map(|&i| sync_run(&items[i].0).err().map(|e| (i, e)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// fsync a repaired run's records and directory.
fn sync_run(dir: &Path) -> Result<()> {
    for name in [STATE_FILE, super::EVENTS_FILE] {
        let path = dir.join(name);
        std::fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io("cannot sync", &path, e))?;
    }
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io("cannot sync", dir, e))
}

fn repair_unsynced(
    dir: &Path,
    reason: &str,
    now: DateTime<Utc>,
    durable: bool,
) -> Result<Repaired> {
    fsio::check_run_dir(dir)?;
    let path = dir.join(STATE_FILE);
    let bytes = fsio::read_run_file(&path, fsio::MAX_STATE)?;
    let mut state: Map<String, Json> = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Usage(format!("cannot parse {}: {e}", path.display())))?;
    let at = Json::String(time::format(now));
    let mut events = fsio::RunAppend::open(dir, super::EVENTS_FILE)?;
    let end = match recorded_end(&events) {
        // Its supervisor recorded the end: that end is the run's, and no second one is
        // written (a run has exactly one).
        Some(recorded) => End::recorded(&recorded, reason, &at),
        None => {
            let end = End::external(&state, reason, &at);
            let stopped = SupervisorEvent::RunRepaired {
                status: Status::Stopped,
                stop_reason: end.stop_reason.clone(),
                stop_kind: StopKind::External,
                exit_code: end.exit_code.as_i64(),
                stale_reason: reason.into(),
                stale_repaired_at: now,
            };
            // The event first: a repair whose event cannot be written changes nothing, so it
            // can be tried again (an unwritable events.jsonl used to leave a "stopped" state
            // with no end).
            events.append_line(&events::line(now, &stopped))?;
            end
        }
    };
    let stop_reason = end.stop_reason.clone();
    for (k, v) in [
        ("status", end.status),
        ("stop_reason", Json::String(end.stop_reason)),
        ("stop_kind", end.stop_kind),
        ("exit_code", end.exit_code),
        ("completed_at", end.completed_at),
        ("stale_reason", Json::String(reason.into())),
        ("stale_repaired_at", at.clone()),
        ("last_event", Json::String("run_stopped".into())),
        ("updated_at", at),
    ] {
        state.insert(k.into(), v);
    }
    write_state(path, state, reason, stop_reason, durable)
}

/// The end a repair writes into the state.
struct End {
    status: Json,
    stop_reason: String,
    stop_kind: Json,
    exit_code: Json,
    completed_at: Json,
}

impl End {
    /// A supervisor gone without a word: stopped by an external termination, at the time
    /// its state says it completed, else now.
    fn external(state: &Map<String, Json>, reason: &str, now: &Json) -> End {
        End {
            status: Json::String(Status::Stopped.as_str().into()),
            stop_reason: format!("external termination: {reason}"),
            stop_kind: serde_json::to_value(StopKind::External).unwrap_or(Json::Null),
            exit_code: state
                .get("exit_code")
                .and_then(Json::as_i64)
                .map_or(Json::Null, Json::from),
            completed_at: state
                .get("completed_at")
                .cloned()
                .filter(|v| !v.is_null())
                .unwrap_or_else(|| now.clone()),
        }
    }

    /// The `run_stopped` the run recorded (what it lacks is the external end's).
    fn recorded(event: &Json, reason: &str, now: &Json) -> End {
        let text = |k: &str| event.get(k).and_then(Json::as_str).map(str::to_owned);
        let string = |k: &str| event.get(k).cloned().filter(Json::is_string);
        let external = End::external(&Map::new(), reason, now);
        End {
            status: string("status").unwrap_or(external.status),
            stop_reason: text("stop_reason").unwrap_or(external.stop_reason),
            stop_kind: string("stop_kind").unwrap_or(external.stop_kind),
            exit_code: event.get("exit_code").cloned().unwrap_or(Json::Null),
            completed_at: string("ts").unwrap_or(external.completed_at),
        }
    }
}

/// How far back from the end of `events.jsonl` a recorded end is looked for: the supervisor
/// writes nothing but a worktree's settlement after `run_stopped`.
const END_WINDOW: u64 = 1 << 20;

/// The run's own `run_stopped`, when its supervisor recorded the end and died before the
/// state that follows it (SIGKILL in between), or an earlier repair died the same way.
fn recorded_end(events: &fsio::RunAppend) -> Option<Json> {
    fsio::parse_jsonl(&events.tail(END_WINDOW))
        .into_iter()
        .rev()
        .find(|e| e["event"] == "run_stopped")
}

/// Replace the state with its repaired version.
fn write_state(
    path: PathBuf,
    state: Map<String, Json>,
    reason: &str,
    stop_reason: String,
    durable: bool,
) -> Result<Repaired> {
    let mut out = serde_json::to_vec_pretty(&Json::Object(state))
        .map_err(|e| Error::Usage(format!("cannot serialise the repaired state: {e}")))?;
    out.push(b'\n');
    fsio::write_atomic(&path, &out, durable)?;
    Ok(Repaired {
        reason: reason.into(),
        stop_reason,
    })
}

/// Append one of the supervisor's records to a run no supervisor holds any more (a worktree
/// settled after its run: by `--repair-stale`, or after the run's records were closed) and
/// fold it into `state.json`, which is replaced atomically.
pub fn record_after(dir: &Path, event: &SupervisorEvent, now: DateTime<Utc>) -> Result<()> {
    fsio::check_run_dir(dir)?;
    let path = dir.join(STATE_FILE);
    fsio::check_run_file(&path)?;
    let mut state = super::state::read_state(&path)
        .map_err(|e| Error::Usage(format!("cannot read {}: {e}", path.display())))?;
    events::append_to_dir(dir, now, event)?;
    state.apply_supervisor(event, now);
    let mut out = serde_json::to_vec_pretty(&state)
        .map_err(|e| Error::Usage(format!("cannot serialise the state: {e}")))?;
    out.push(b'\n');
    fsio::write_atomic(&path, &out, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::EVENTS_FILE;

    /// A run directory as a supervisor killed at `events` left it: its state still running.
    fn run_dir(events: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = dir.path();
        std::fs::set_permissions(run, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .expect("chmod");
        let state = r#"{"label":"x","status":"running","exit_code":null,"pid":999999999}"#;
        fsio::write_new_private(&run.join(STATE_FILE), state.as_bytes()).expect("state");
        fsio::write_new_private(&run.join(EVENTS_FILE), events.as_bytes()).expect("events");
        dir
    }

    fn ends(dir: &Path) -> Vec<Json> {
        fsio::read_jsonl(&dir.join(EVENTS_FILE))
            .into_iter()
            .filter(|e| e["event"] == "run_stopped")
            .collect()
    }

    fn state(dir: &Path) -> Json {
        serde_json::from_slice(&std::fs::read(dir.join(STATE_FILE)).expect("read")).expect("json")
    }

    #[test]
    fn a_run_without_an_end_gets_one() {
        let d = run_dir("{\"event\":\"prompt_started\",\"ts\":\"2026-12-01T10:00:00Z\"}\n");
        let now = time::parse("2026-12-01T11:00:00Z").expect("t");
        let r = repair(d.path(), "supervisor process 1 is no longer running", now).expect("repair");
        assert!(r.stop_reason.starts_with("external termination: "));
        let st = state(d.path());
        assert_eq!(st["status"], "stopped");
        assert_eq!(st["stop_kind"], "external");
        let e = ends(d.path());
        assert_eq!(e.len(), 1);
        assert!(e[0]["stale_repaired_at"].is_string());
    }

    /// SIGKILL between the supervisor's `run_stopped` and the state after it: the end it
    /// recorded is the run's end; a second `run_stopped` would give the run two.
    #[test]
    fn a_run_whose_end_is_recorded_keeps_that_end() {
        let d = run_dir(concat!(
            "{\"event\":\"prompt_started\",\"ts\":\"2026-12-01T10:00:00Z\"}\n",
            "{\"ts\":\"2026-12-01T10:00:05Z\",\"schema_version\":1,\"event\":\"run_stopped\",",
            "\"status\":\"stopped\",\"stop_reason\":\"max loops reached: 3\",",
            "\"stop_kind\":\"max_loops\",\"exit_code\":0}\n",
            "{\"ts\":\"2026-12-01T10:00:0"
        ));
        let now = time::parse("2026-12-01T11:00:00Z").expect("t");
        let r = repair(d.path(), "supervisor process 1 is no longer running", now).expect("repair");
        assert_eq!(r.stop_reason, "max loops reached: 3");
        let st = state(d.path());
        assert_eq!(st["status"], "stopped");
        assert_eq!(st["stop_reason"], "max loops reached: 3");
        assert_eq!(st["stop_kind"], "max_loops");
        assert_eq!(st["exit_code"], 0);
        assert_eq!(st["completed_at"], "2026-12-01T10:00:05Z");
        assert_eq!(
            st["stale_reason"],
            "supervisor process 1 is no longer running"
        );
        assert_eq!(ends(d.path()).len(), 1);
        // A second repair (the first died before its state) changes nothing more.
        repair(d.path(), "again", now).expect("repair");
        assert_eq!(ends(d.path()).len(), 1);
    }
}

//! Closing a run whose supervisor died (reference section 10.5): `state.json` is rewritten
//! atomically as stopped, keeping every field we do not own (runs written by the reference
//! have more), and exactly one `run_stopped` is appended.

use std::path::Path;

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

pub fn repair(dir: &Path, reason: &str, now: DateTime<Utc>) -> Result<Repaired> {
    fsio::check_run_dir(dir)?;
    let path = dir.join(STATE_FILE);
    fsio::check_run_file(&path)?;
    let bytes = std::fs::read(&path).map_err(|e| Error::io("cannot read", &path, e))?;
    let mut state: Map<String, Json> = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Usage(format!("cannot parse {}: {e}", path.display())))?;
    let at = Json::String(time::format(now));
    let stop_reason = format!("external termination: {reason}");
    let exit_code = state.get("exit_code").and_then(Json::as_i64);
    let completed = state
        .get("completed_at")
        .cloned()
        .filter(|v| !v.is_null())
        .unwrap_or_else(|| at.clone());
    let stopped = SupervisorEvent::RunRepaired {
        status: Status::Stopped,
        stop_reason: stop_reason.clone(),
        stop_kind: StopKind::External,
        exit_code,
        stale_reason: reason.into(),
        stale_repaired_at: now,
    };
    for (k, v) in [
        ("status", Json::String(Status::Stopped.as_str().into())),
        ("stop_reason", Json::String(stop_reason.clone())),
        (
            "stop_kind",
            serde_json::to_value(StopKind::External).unwrap_or(Json::Null),
        ),
        ("stale_reason", Json::String(reason.into())),
        ("stale_repaired_at", at.clone()),
        ("completed_at", completed),
        ("last_event", Json::String(stopped.name().into())),
        ("updated_at", at),
        ("exit_code", exit_code.map_or(Json::Null, Json::from)),
    ] {
        state.insert(k.into(), v);
    }
    // The event first: a repair whose event cannot be written changes nothing, so it can be
    // tried again (an unwritable events.jsonl used to leave a "stopped" state with no end).
    events::append_to_dir(dir, now, &stopped)?;
    let mut out = serde_json::to_vec_pretty(&Json::Object(state))
        .map_err(|e| Error::Usage(format!("cannot serialise the repaired state: {e}")))?;
    out.push(b'\n');
    fsio::write_atomic(&path, &out, true)?;
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

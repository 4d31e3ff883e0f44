//! Even a panic ends the run on record (D11): a hook marks the run's `state.json` `error` and
//! appends `run_stopped`; the guard process then ends the agent's group as the supervisor
//! exits. A panic after the end is on record does not rewrite that end; it is noted.

use std::path::PathBuf;
use std::sync::Mutex;

use chrono::Utc;

use super::events::{self, SupervisorEvent};
use super::state::read_state;
use super::{STATE_FILE, fsio};
use crate::engine::{Event, StopReason};

/// The run directory of the run in progress, for the hook.
static CURRENT_RUN: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Install the hook (once per process; later calls only change the run it records).
pub fn watch(run_dir: &std::path::Path) {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(install);
    if let Ok(mut current) = CURRENT_RUN.lock() {
        *current = Some(run_dir.to_path_buf());
    }
}

/// The run is over: a later panic is not the run's.
pub fn forget() {
    if let Ok(mut current) = CURRENT_RUN.lock() {
        *current = None;
    }
}

fn install() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let dir = CURRENT_RUN.lock().ok().and_then(|g| g.clone());
        if let Some(dir) = dir {
            record(&dir, &format!("panic: {info}"));
        }
        previous(info);
    }));
}

fn record(dir: &std::path::Path, what: &str) {
    let now = Utc::now();
    let reason = StopReason::Internal(what.to_string());
    let state_path = dir.join(STATE_FILE);
    let state = read_state(&state_path).ok();
    if state
        .as_ref()
        .is_some_and(|st| st.last_event.as_deref() == Some("run_stopped"))
    {
        let note = SupervisorEvent::SupervisorPanic {
            error: reason.reason(),
        };
        let _ = events::append_to_dir(dir, now, &note);
        return;
    }
    let stopped = Event::RunStopped {
        status: reason.status(),
        stop_reason: reason.reason(),
        stop_kind: reason.kind(),
        exit_code: reason.exit_code(),
    };
    if let Some(mut st) = state {
        st.apply(&stopped, now);
        if let Ok(mut bytes) = serde_json::to_vec_pretty(&st) {
            bytes.push(b'\n');
            let _ = fsio::write_atomic(&state_path, &bytes, true);
        }
    }
    let _ = events::append_to_dir(dir, now, &stopped);
}

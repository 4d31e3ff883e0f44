//! The run directory and everything in it (D21, D22, D23): the one owner of the records. Each
//! file format has its module; the supervisor, `status`, `control`, `logs` and the live view
//! all read and write through them, nothing else touches the files.
//!
//! ```text
//! <state root>/<UTC stamp>__<label>__<6 hex>/   one run (created 0700, files 0600)
//!   state.json            state     the latest snapshot, replaced atomically
//!   events.jsonl          events    typed, versioned, one whole line per append
//!   control.jsonl         control   operator commands, read by inbox
//!   operator_notes.jsonl  control   every note
//!   focus.jsonl           control   what the run is focused on
//!   asks/                 asks      questions, approvals and their answers (D31)
//!   loop-NNNN__prompt-NNN.log       the attempt logs (effects::outlog)
//!   loop-NNNN__verify.log           the verify command's output
//!   loop-NNNN__review.log, .diff    the reviewer's output, and the diff it was shown
//! ${XDG_STATE_HOME:-~/.local/state}/agent-looper/runs.jsonl   discovery's machine registry
//! ${XDG_STATE_HOME:-~/.local/state}/agent-looper/accounts/<id>.json   accounts: what the
//!                                                             loopers learned of an account
//! ```

pub mod accounts;
pub mod asks;
pub mod control;
pub mod daily;
pub mod discovery;
pub mod events;
pub mod fleet;
pub mod fsio;
pub mod inbox;
pub mod panic;
pub mod quota_view;
pub mod repair;
pub mod state;
pub mod store;
pub mod time;

use chrono::{DateTime, Utc};

pub use state::RunState;
pub use store::RunStore;

pub const STATE_FILE: &str = "state.json";
pub const EVENTS_FILE: &str = "events.jsonl";
pub const CONTROL_FILE: &str = "control.jsonl";
pub const FOCUS_FILE: &str = "focus.jsonl";
pub const NOTES_FILE: &str = "operator_notes.jsonl";
/// Space held back for the run's own records (see `RunStore::with_reserve`).
pub const RESERVE_FILE: &str = ".space-reserve";

/// Keep what a label says but only characters that are safe in a file name.
pub fn safe_label(label: &str) -> String {
    let mapped = crate::text::file_name_chars(label);
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

/// The log of one prompt of one loop (retries append to it).
pub fn prompt_log_name(loop_number: u64, prompt_index: usize) -> String {
    format!("loop-{loop_number:04}__prompt-{prompt_index:03}.log")
}

/// The output of a loop's verify command.
pub fn verify_log_name(loop_number: u64) -> String {
    format!("loop-{loop_number:04}__verify.log")
}

/// The output of a loop's reviewer.
pub fn review_log_name(loop_number: u64) -> String {
    format!("loop-{loop_number:04}__review.log")
}

/// The diff a loop's reviewer was shown, whole (the looper makes it from git).
pub fn review_diff_name(loop_number: u64) -> String {
    format!("loop-{loop_number:04}__review.diff")
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
}

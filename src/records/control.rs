//! The operator's files of a run directory (D22): `control.jsonl` (commands the supervisor
//! acts on), `operator_notes.jsonl` (every note, however delivered) and `focus.jsonl` (what
//! the run is focused on). One serde type per line, one builder, one parser.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{fsio, time};
use crate::engine::{ControlAction, ControlCommand};
use crate::error::Result;

/// Lines longer than this are skipped whole (a control line is a few hundred bytes).
pub const MAX_CONTROL_LINE: usize = 256 * 1024;

/// `<YYYYmmddTHHMMSSZ>-<8 hex>`: sortable by time, unique enough for concurrent writers.
pub fn new_id(now: DateTime<Utc>) -> String {
    format!(
        "{}-{:08x}",
        now.format("%Y%m%dT%H%M%SZ"),
        rand::random::<u32>()
    )
}

/// One line of `control.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ControlLine {
    /// Missing in hand-written lines: the inbox names those `line-<n>`.
    #[serde(default)]
    pub id: Option<String>,
    pub action: ControlAction,
    #[serde(default)]
    pub reason: Option<String>,
    /// The text of a `note` command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// How a note reaches the agent: absent (the next prompt) or `btw` (pasted into the
    /// pane by the supervisor, between turns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Delivery>,
    #[serde(default, with = "time::opt")]
    pub created_at: Option<DateTime<Utc>>,
}

/// Why a control line was not acted on.
#[derive(Clone, Debug, PartialEq)]
pub struct BadLine {
    pub line_no: usize,
    pub why: String,
    /// The line's start, as text (bounded), for the record.
    pub preview: String,
}

/// The most of a rejected line kept in its record.
const PREVIEW_BYTES: usize = 120;

impl ControlLine {
    pub fn new(
        action: ControlAction,
        reason: Option<&str>,
        note: Option<&str>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: Some(new_id(now)),
            action,
            reason: reason.map(str::to_string),
            note: note.map(str::to_string),
            delivery: None,
            created_at: Some(now),
        }
    }

    pub fn id(&self) -> &str {
        self.id.as_deref().unwrap_or_default()
    }

    /// Append to the run's control file (one whole line, refusing files not ours alone).
    pub fn append(&self, run_dir: &Path) -> Result<PathBuf> {
        let line = serde_json::to_string(self).unwrap_or_default();
        fsio::secure_append(run_dir, super::CONTROL_FILE, &line)
    }

    /// Parse one line. Pure, so it can be fuzzed. `line_no` names lines without an id.
    pub fn parse(line: &[u8], line_no: usize) -> std::result::Result<ControlCommand, BadLine> {
        let bad = |why: String| BadLine {
            line_no,
            why,
            preview: {
                let head = &line[..line.len().min(PREVIEW_BYTES)];
                String::from_utf8_lossy(head).into_owned()
            },
        };
        let parsed: ControlLine = serde_json::from_slice(line).map_err(|e| bad(e.to_string()))?;
        if parsed.action == ControlAction::Note
            && parsed.note.as_deref().is_none_or(|n| n.trim().is_empty())
        {
            return Err(bad("a note command without a note".into()));
        }
        Ok(ControlCommand {
            id: parsed
                .id
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| format!("line-{line_no}")),
            action: parsed.action,
            reason: parsed.reason,
            note: parsed.note,
            btw: parsed.delivery == Some(Delivery::Btw),
        })
    }
}

/// How a note reaches the agent (`looper control note --delivery`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum Delivery {
    /// Only record the note.
    Record,
    /// Append the note once to the next prompt sent.
    NextPrompt,
    /// Paste `/btw <note>` into the hybrid agent pane.
    Btw,
}

/// One line of `operator_notes.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NoteRecord {
    pub id: String,
    #[serde(with = "time::required")]
    pub created_at: DateTime<Utc>,
    pub actor: String,
    pub delivery: Delivery,
    /// `recorded`, `queued`, `delivered` or `failed`.
    pub status: String,
    pub note: String,
    pub note_preview: String,
    pub run_dir: PathBuf,
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pane: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_text_preview: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl NoteRecord {
    pub fn append(&self, run_dir: &Path) -> Result<PathBuf> {
        let line = serde_json::to_string(self).unwrap_or_default();
        fsio::secure_append(run_dir, super::NOTES_FILE, &line)
    }
}

/// One line of `focus.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FocusRecord {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default, with = "time::opt")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub actor: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    pub summary: String,
}

impl FocusRecord {
    pub fn append(&self, run_dir: &Path) -> Result<PathBuf> {
        let line = serde_json::to_string(self).unwrap_or_default();
        fsio::secure_append(run_dir, super::FOCUS_FILE, &line)
    }
}

/// How much of the end of `focus.jsonl` is read for the latest summary: the agent knows the
/// file's path and can write anything to it (a 400 MB line once took the supervisor to 1.6 GB).
pub const FOCUS_TAIL: u64 = 64 * 1024;
/// The longest summary kept (in `state.json`, the console, the live view).
pub const MAX_FOCUS_CHARS: usize = 500;

/// The latest focus summary in a `focus.jsonl`, bounded.
pub fn latest_focus(path: &Path) -> Option<String> {
    let tail = fsio::read_tail(path, FOCUS_TAIL).ok()?;
    fsio::parse_jsonl(&tail)
        .into_iter()
        .rev()
        .find_map(|v| serde_json::from_value::<FocusRecord>(v).ok())
        .map(|f| {
            if f.summary.chars().count() > MAX_FOCUS_CHARS {
                let cut: String = f.summary.chars().take(MAX_FOCUS_CHARS - 1).collect();
                format!("{cut}…")
            } else {
                f.summary
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_reference_shape() {
        let t = time::parse("2026-11-21T09:10:34Z").expect("t");
        let id = new_id(t);
        assert!(id.starts_with("20261121T091034Z-"), "{id}");
        let hex = &id["20261121T091034Z-".len()..];
        assert_eq!(hex.len(), 8);
        assert!(hex.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn a_built_line_parses_back_to_the_same_command() {
        let now = time::parse("2026-12-01T10:00:00Z").expect("t");
        let line = ControlLine::new(ControlAction::Note, Some("why"), Some("look at x"), now);
        let text = serde_json::to_string(&line).expect("json");
        let cmd = ControlLine::parse(text.as_bytes(), 7).expect("parse");
        assert_eq!(cmd.id, line.id());
        assert_eq!(cmd.action, ControlAction::Note);
        assert_eq!(cmd.reason.as_deref(), Some("why"));
        assert_eq!(cmd.note.as_deref(), Some("look at x"));
    }

    #[test]
    fn the_reference_and_hand_written_lines_parse_and_bad_ones_say_why() {
        let cmd = ControlLine::parse(br#"{"action":"stop_after_loop"}"#, 3).expect("no id");
        assert_eq!(cmd.id, "line-3");
        let cmd = ControlLine::parse(
            br#"{"id":"x","action":"pause","reason":null,"created_at":"2026-11-21T09:10:34Z","extra":1}"#,
            1,
        )
        .expect("reference line");
        assert_eq!(cmd.action, ControlAction::Pause);
        for bad in [
            &br#"{"action":"explode"}"#[..],
            br#"{"action":"note"}"#,
            br#"{"action":"note","note":"  "}"#,
            b"not json",
            b"[1,2]",
        ] {
            let e = ControlLine::parse(bad, 9).expect_err("bad");
            assert_eq!(e.line_no, 9);
            assert!(!e.why.is_empty());
        }
    }
}

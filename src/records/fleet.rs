//! Reading many runs at once (`looper status`, D23). Speed matters (10,000 runs in well under
//! 100 ms on a warm cache): each `state.json` is read once into a small struct (serde skips
//! the fields we do not show), directories are read by a few threads, staleness costs one
//! /proc read per distinct active pid, and the rows are sorted once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{STATE_FILE, time};
use crate::effects::procinfo;

/// Usage receipts as recorded; every field optional so partial records still load.
#[derive(Clone, Copy, Debug, Default, Deserialize, serde::Serialize, PartialEq)]
#[serde(default)]
pub struct UsageView {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cost_usd: f64,
}

/// The part of `state.json` that status shows. Unknown fields are skipped by serde without
/// building values, which is most of the file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct StateView {
    pub run_id: Option<String>,
    pub label: Option<String>,
    pub status: Option<String>,
    pub agent_name: Option<String>,
    pub agent_kind: Option<String>,
    pub agent_cwd: Option<String>,
    pub current_loop: Option<u64>,
    pub current_prompt_index: Option<u64>,
    pub total_prompts: Option<u64>,
    #[serde(with = "time::opt")]
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(with = "time::opt")]
    pub started_at: Option<DateTime<Utc>>,
    pub stop_reason: Option<String>,
    pub exit_code: Option<i64>,
    pub retry_status: Option<String>,
    #[serde(with = "time::opt")]
    pub retry_until: Option<DateTime<Utc>>,
    pub usage_total: Option<UsageView>,
    pub pid: Option<i64>,
    pub pid_identity: Option<String>,
    pub control_last_reason: Option<String>,
    pub stale_reason: Option<String>,
    pub open_asks: Option<Vec<OpenAskView>>,
}

/// An open ask as status shows it.
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize, PartialEq)]
#[serde(default)]
pub struct OpenAskView {
    pub id: String,
    pub kind: String,
    pub question: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
}

impl StateView {
    pub fn is_active(&self) -> bool {
        super::state::is_active_status(self.status.as_deref())
    }

    /// The oldest open ask or approval of a live run (issue 17).
    pub fn question(&self) -> Option<&OpenAskView> {
        self.open_asks.as_ref()?.first()
    }
}

/// One run as status shows it.
#[derive(Clone, Debug)]
pub struct Row {
    pub dir: PathBuf,
    pub state: StateView,
    /// Why state.json could not be read or parsed.
    pub error: Option<String>,
    /// Set when the state is active but its supervisor is gone.
    pub stale: Option<String>,
    pub updated: Option<DateTime<Utc>>,
}

/// Read a whole file into `buf` with plain `read` calls: no `stat` for a size hint (one
/// syscall less per run) and no allocation once the buffer has grown to a state's size.
fn read_into(path: &Path, buf: &mut Vec<u8>) -> std::io::Result<()> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    buf.clear();
    // Never follow a symlink planted as state.json (it fails with ELOOP and the run is
    // shown unreadable): found by the reliability suite. A directory fails on read; a FIFO
    // neither blocks the open nor the read (O_NONBLOCK), and nothing is read past the cap.
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    loop {
        if buf.len() as u64 > super::fsio::MAX_STATE {
            buf.clear();
            return Err(std::io::Error::other(format!(
                "over the {}-byte limit for a state",
                super::fsio::MAX_STATE
            )));
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(8192);
        }
        let start = buf.len();
        buf.resize(buf.capacity(), 0);
        match f.read(&mut buf[start..]) {
            Ok(0) => {
                buf.truncate(start);
                // Nothing at all: say why when it is not a file (a FIFO reads as empty).
                if buf.is_empty() && f.metadata().is_ok_and(|m| !m.is_file()) {
                    return Err(std::io::Error::other("not a regular file"));
                }
                return Ok(());
            }
            Ok(n) => buf.truncate(start + n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => buf.truncate(start),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                buf.truncate(start);
                return Err(std::io::Error::other("not a regular file"));
            }
            Err(e) => {
                buf.truncate(start);
                return Err(e);
            }
        }
    }
}

impl Row {
    pub fn load(dir: PathBuf, buf: &mut Vec<u8>) -> Row {
        let path = dir.join(STATE_FILE);
        let (state, error) = match read_into(&path, buf) {
            Ok(()) => match serde_json::from_slice::<StateView>(buf) {
                Ok(s) => (s, None),
                Err(e) => (
                    StateView::default(),
                    Some(format!("cannot parse state.json: {e}")),
                ),
            },
            Err(e) => (
                StateView::default(),
                Some(format!("cannot read state.json: {e}")),
            ),
        };
        let updated = state.updated_at.or(state.started_at);
        Row {
            dir,
            state,
            error,
            stale: None,
            updated,
        }
    }

    pub fn reload(&mut self) {
        let dir = std::mem::take(&mut self.dir);
        *self = Row::load(dir, &mut Vec::new());
    }

    pub fn name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    pub fn label(&self) -> String {
        self.state
            .label
            .clone()
            .or_else(|| self.state.run_id.clone())
            .unwrap_or_else(|| self.name())
    }

    /// The status column: `unreadable`, `stale`, or as recorded.
    pub fn shown_status(&self) -> String {
        if self.error.is_some() {
            "unreadable".into()
        } else if self.stale.is_some() {
            "stale".into()
        } else {
            self.state
                .status
                .clone()
                .unwrap_or_else(|| "unknown".into())
        }
    }

    /// A live run waiting for a person: an open ask or approval (issue 17).
    pub fn needs_person(&self) -> bool {
        self.error.is_none()
            && self.stale.is_none()
            && self.state.is_active()
            && self.state.question().is_some()
    }

    /// 0 needs attention, 1 running, 2 finished.
    pub fn group(&self) -> u8 {
        if self.error.is_some() || self.stale.is_some() || self.needs_person() {
            return 0;
        }
        match self.state.status.as_deref() {
            Some("running") => 1,
            Some("stopped") if self.state.exit_code == Some(3) => 0,
            Some("stopped" | "interrupted") => 2,
            // error, retrying, paused and anything we do not know.
            _ => 0,
        }
    }

    pub fn project(&self) -> Option<String> {
        let cwd = self.state.agent_cwd.as_deref()?;
        Some(
            Path::new(cwd)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| cwd.to_string()),
        )
    }

    /// What the STOP/NOTE column says: why it is unreadable or stale, the retry, the pause,
    /// or the stop reason.
    pub fn note(&self) -> String {
        if let Some(e) = &self.error {
            return e.clone();
        }
        if let Some(r) = &self.stale {
            return r.clone();
        }
        let s = &self.state;
        if self.needs_person()
            && let Some(q) = s.question()
        {
            let what = if q.kind == "approval" {
                "needs approval"
            } else {
                "needs an answer"
            };
            let choices = if q.choices.is_empty() {
                String::new()
            } else {
                format!(" [{}]", q.choices.join(" | "))
            };
            return format!("{what}: {}{choices}", q.question);
        }
        match s.status.as_deref() {
            Some("retrying") => {
                let status = s.retry_status.clone().unwrap_or_else(|| "retrying".into());
                match s.retry_until {
                    Some(t) => format!(
                        "{status} until {}",
                        t.with_timezone(&chrono::Local).format("%H:%M:%S")
                    ),
                    None => status,
                }
            }
            Some("paused") => format!(
                "paused: {}",
                s.control_last_reason
                    .clone()
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(|| "waiting for `looper control resume`".into())
            ),
            _ => s.stop_reason.clone().unwrap_or_else(|| "-".into()),
        }
    }
}

/// Load every row, a few threads at a time, then judge staleness once per distinct pid.
pub fn load_rows(dirs: Vec<PathBuf>) -> Vec<Row> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    let mut rows: Vec<Row> = if dirs.len() < 256 || threads == 1 {
        let mut buf = Vec::new();
        dirs.into_iter().map(|d| Row::load(d, &mut buf)).collect()
    } else {
        let chunk = dirs.len().div_ceil(threads);
        let mut parts: Vec<Vec<PathBuf>> = Vec::new();
        let mut it = dirs.into_iter().peekable();
        while it.peek().is_some() {
            parts.push(it.by_ref().take(chunk).collect());
        }
        std::thread::scope(|s| {
            let handles: Vec<_> = parts
                .into_iter()
                .map(|part| {
                    s.spawn(move || {
                        let mut buf = Vec::new();
                        part.into_iter()
                            .map(|d| Row::load(d, &mut buf))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        })
    };
    let mut memo: HashMap<(Option<i64>, Option<String>), Option<String>> = HashMap::new();
    for row in &mut rows {
        if row.error.is_none() && row.state.is_active() {
            let key = (row.state.pid, row.state.pid_identity.clone());
            let reason = memo
                .entry(key)
                .or_insert_with(|| {
                    procinfo::stale_reason(row.state.pid, row.state.pid_identity.as_deref())
                })
                .clone();
            row.stale = reason;
        }
    }
    sort_rows(&mut rows);
    rows
}

/// Attention first, then running, then finished; newest first within a group.
pub fn sort_rows(rows: &mut [Row]) {
    rows.sort_by_cached_key(|r| {
        (
            r.group(),
            // Runs waiting for a person come first of all (issue 17).
            !r.needs_person(),
            std::cmp::Reverse(r.updated),
            std::cmp::Reverse(r.name()),
        )
    });
}

/// A row named `name` with a status, an exit code and an update time, for tests here and in
/// the renderers.
#[cfg(test)]
pub fn sample_row(name: &str, status: &str, exit: Option<i64>, updated: &str) -> Row {
    Row {
        dir: PathBuf::from(name),
        state: StateView {
            label: Some(name.into()),
            status: Some(status.into()),
            exit_code: exit,
            ..StateView::default()
        },
        error: None,
        stale: None,
        updated: time::parse(updated),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, status: &str, exit: Option<i64>, updated: &str) -> Row {
        sample_row(name, status, exit, updated)
    }

    #[test]
    fn attention_first_then_running_then_finished_newest_first() {
        let mut rows = vec![
            row("done-old", "stopped", Some(0), "2026-01-01T00:00:01Z"),
            row("run-old", "running", None, "2026-01-01T00:00:02Z"),
            row("breaker", "stopped", Some(3), "2026-01-01T00:00:03Z"),
            row("done-new", "interrupted", Some(130), "2026-01-01T00:00:04Z"),
            row("run-new", "running", None, "2026-01-01T00:00:05Z"),
            row("paused", "paused", None, "2026-01-01T00:00:06Z"),
            row("failed", "error", Some(1), "2026-01-01T00:00:00Z"),
        ];
        rows[1].stale = Some("gone".into());
        sort_rows(&mut rows);
        let names: Vec<String> = rows.iter().map(Row::label).collect();
        assert_eq!(
            names,
            [
                "paused", "breaker", "run-old", "failed", "run-new", "done-new", "done-old"
            ]
        );
    }

    #[test]
    fn read_into_reuses_the_buffer_and_reads_large_files_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join("big"), &big).expect("write");
        std::fs::write(dir.path().join("small"), b"{}").expect("write");
        let mut buf = Vec::new();
        read_into(&dir.path().join("big"), &mut buf).expect("read");
        assert_eq!(buf, big);
        read_into(&dir.path().join("small"), &mut buf).expect("read");
        assert_eq!(buf, b"{}");
        assert!(read_into(&dir.path().join("missing"), &mut buf).is_err());
    }
}

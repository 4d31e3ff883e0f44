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
    pub last_error_line: Option<String>,
    /// The gate keeping the run from completing, why, and since when (issue 15).
    pub gate_blocked: Option<String>,
    pub gate_blocked_reason: Option<String>,
    #[serde(with = "time::opt")]
    pub gate_blocked_since: Option<DateTime<Utc>>,
    pub verify_last: Option<GateView>,
    pub review_last: Option<GateView>,
    pub worktree_path: Option<String>,
    pub worktree_branch: Option<String>,
    pub worktree_state: Option<String>,
    pub worktree_note: Option<String>,
    pub parallel_group: Option<String>,
    pub parallel_index: Option<u64>,
    pub branch: Option<String>,
    pub commits_ahead: Option<u64>,
    pub files_changed: Option<u64>,
    pub open_asks: Option<Vec<OpenAskView>>,
    /// The tmux server (socket path) and the supervisor's own pane: status shows its window.
    pub tmux_socket: Option<String>,
    pub tmux_pane: Option<String>,
    /// The account, its windows, the CLI's own retry, a hold, the CLI (issue 18; worded by
    /// `records::quota_view`, the retry in the STOP/NOTE cell by `agent_retry_note`).
    pub account: Option<String>,
    pub rate_limits: Option<Vec<super::accounts::WindowRecord>>,
    pub account_limit: Option<super::state::AccountLimitState>,
    pub agent_retry: Option<super::state::AgentRetryState>,
    pub hold: Option<String>,
    pub agent_cli: Option<crate::engine::AgentCli>,
    pub agent_cli_changed: Option<super::state::CliChange>,
}

/// The latest verify or review as status shows it.
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize, PartialEq)]
#[serde(default)]
pub struct GateView {
    #[serde(rename = "loop")]
    pub loop_number: Option<u64>,
    /// verify: `true`/`false`, `null` while it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass: Option<bool>,
    /// review: `approve`/`reject`, `null` while it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    pub reason: Option<String>,
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

    /// The row read again from disk (after something else wrote its state).
    pub fn reload(&mut self) {
        let dir = std::mem::take(&mut self.dir);
        *self = Row::load(dir, &mut Vec::new());
    }

    /// The row after `repair` closed its run: what the repair wrote, without reading the
    /// state back.
    pub fn repaired(&mut self, r: &super::repair::Repaired, at: DateTime<Utc>) {
        self.state.status = Some("stopped".into());
        self.state.stop_reason = Some(r.stop_reason.clone());
        self.state.stale_reason = Some(r.reason.clone());
        self.state.updated_at = Some(at);
        self.updated = Some(at);
        self.stale = None;
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

    /// The main checkout of a run in a looper-made worktree
    /// (`<home>/.agent-looper/worktrees/<name>`).
    pub fn worktree_home(&self) -> Option<PathBuf> {
        let wt = Path::new(self.state.worktree_path.as_deref()?);
        Some(wt.parent()?.parent()?.parent()?.to_path_buf())
    }

    /// The worktree column: its branch and what it changed (`+2c 3f`: 2 commits ahead of its
    /// base, 3 files changed), and what became of a worktree at the run's end.
    pub fn changes(&self) -> Option<String> {
        let s = &self.state;
        let branch = s.worktree_branch.clone().or_else(|| s.branch.clone())?;
        let mut text = branch;
        if let (Some(c), Some(f)) = (s.commits_ahead, s.files_changed) {
            text.push_str(&format!(" +{c}c {f}f"));
        }
        match s.worktree_state.as_deref() {
            Some("kept") => text.push_str(" (kept)"),
            Some("removed") => text.push_str(" (removed)"),
            _ => {}
        }
        Some(text)
    }

    pub fn project(&self) -> Option<String> {
        if let Some(home) = self.worktree_home()
            && let Some(n) = home.file_name()
        {
            return Some(n.to_string_lossy().into_owned());
        }
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
            return match (
                &self.state.worktree_path,
                self.state.worktree_state.as_deref(),
            ) {
                (Some(_), Some("active")) => {
                    format!("worktree left, --repair-stale settles it; {r}")
                }
                _ => r.clone(),
            };
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
            Some("running") if s.agent_retry.is_some() => agent_retry_note(s).unwrap_or_default(),
            Some("running") if s.gate_blocked.is_some() => {
                let since = s
                    .gate_blocked_since
                    .map(|t| {
                        format!(
                            " since {}",
                            t.with_timezone(&chrono::Local).format("%H:%M:%S")
                        )
                    })
                    .unwrap_or_default();
                // The reason may quote the plan file: shown sanitised (D35).
                format!(
                    "blocked by {}{since}: {}",
                    s.gate_blocked.as_deref().unwrap_or("a gate"),
                    crate::text::sanitize_line(s.gate_blocked_reason.as_deref().unwrap_or("-"))
                )
            }
            _ => s.stop_reason.clone().unwrap_or_else(|| "-".into()),
        }
    }

    /// For a failed run: the agent's own last error line and, for a known cause, what to do
    /// (`command exited with code 1` alone says little).
    pub fn detail(&self) -> Option<String> {
        let s = &self.state;
        if self.error.is_some() || s.status.as_deref() != Some("error") {
            return None;
        }
        let reason = s.stop_reason.as_deref().unwrap_or_default();
        let line = s
            .last_error_line
            .as_deref()
            .filter(|l| !l.is_empty() && !reason.contains(*l));
        let hint = hint(&format!("{reason} {}", line.unwrap_or_default()));
        match (line, hint) {
            (Some(l), Some(h)) => Some(format!("{l} ({h})")),
            (Some(l), None) => Some(l.to_string()),
            (None, Some(h)) => Some(h.to_string()),
            (None, None) => None,
        }
    }
}

/// What to do about a failure whose cause is a known one: missing credentials, a dialog
/// that needs a person, a missing executable, a used-up quota.
pub fn hint(text: &str) -> Option<&'static str> {
    let t = text.to_ascii_lowercase();
    let any = |words: &[&str]| words.iter().any(|w| t.contains(w));
    if any(&[
        "missing environment variable",
        "api key",
        "api_key",
        "not logged in",
        "unauthorized",
        "authentication",
        " 401",
        "please run /login",
        "invalid x-api-key",
    ]) {
        Some(
            "hint: missing credentials; export the key in the shell that starts the looper, or set it in agents.<name>.env",
        )
    } else if any(&["trust", "dialog"]) && any(&["folder", "directory", "workspace", "dialog"]) {
        Some("hint: a start-up dialog needs a person; answer it once in the CLI itself")
    } else if any(&["failed to start agent", "not found", "no such file"]) {
        Some("hint: a missing executable; install it or set agents.<name>.executable")
    } else if any(&["quota", "billing", "usage limit"]) {
        Some("hint: the account's quota is used up; it resets on the provider's schedule")
    } else {
        None
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

/// Attention first, then running, then finished; newest first within a group. The runs of
/// one `--parallel` group stay together, in their order, where the first of them sorts.
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
    if rows.iter().all(|r| r.state.parallel_group.is_none()) {
        return;
    }
    let key = |r: &Row| {
        r.state
            .parallel_group
            .clone()
            .map(|g| (g, r.worktree_home()))
    };
    let mut first: HashMap<(String, Option<PathBuf>), usize> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        if let Some(k) = key(r) {
            first.entry(k).or_insert(i);
        }
    }
    // Rows outside groups keep their place; a group's rows follow its first one, by number.
    let mut order: Vec<(usize, u64, usize)> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| match key(r).and_then(|k| first.get(&k).copied()) {
            Some(f) => (f, r.state.parallel_index.unwrap_or(0), i),
            None => (i, 0, i),
        })
        .collect();
    order.sort_unstable();
    let sorted: Vec<Row> = order.iter().map(|&(_, _, i)| rows[i].clone()).collect();
    for (dst, r) in rows.iter_mut().zip(sorted) {
        *dst = r;
    }
}

/// A row named `name` with a status, an exit code and an update time, for tests here and in
/// the renderers.
/// The CLI's own retry while the attempt goes on: `claude retrying itself: 2/10 after 429,
/// next in 2s`.
pub fn agent_retry_note(s: &StateView) -> Option<String> {
    let state = s.agent_retry.as_ref()?;
    let r = &state.retry;
    // Short: it is a cell of the table (60 characters).
    let mut t = format!(
        "{} retrying itself",
        crate::text::sanitize_line(&state.agent)
    );
    match (r.attempt, r.max_attempts) {
        (Some(a), Some(m)) => t.push_str(&format!(": {a}/{m}")),
        (Some(a), None) => t.push_str(&format!(": try {a}")),
        _ => t.push(':'),
    }
    match (r.status, &r.error) {
        (Some(st), _) => t.push_str(&format!(" after {st}")),
        (None, Some(e)) => t.push_str(&format!(" after {}", crate::text::sanitize_line(e))),
        (None, None) => {}
    }
    if let Some(d) = r.delay_seconds {
        t.push_str(&format!(
            ", next in {}",
            crate::engine::stop::fmt_duration(d)
        ));
    }
    if r.attempt.is_none() && r.status.is_none() && r.error.is_none() {
        t.push_str(&format!(" {}", crate::text::sanitize_line(&r.text)));
    }
    Some(t)
}

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
    fn a_running_run_blocked_by_a_gate_says_which_and_since_when() {
        let mut r = row("gated", "running", None, "2026-01-01T00:00:01Z");
        r.state.gate_blocked = Some("verify".into());
        r.state.gate_blocked_reason = Some("exit 1".into());
        r.state.gate_blocked_since = time::parse("2026-01-01T00:00:00Z");
        let since = time::parse("2026-01-01T00:00:00Z")
            .map(|t| {
                t.with_timezone(&chrono::Local)
                    .format("%H:%M:%S")
                    .to_string()
            })
            .unwrap_or_default();
        assert_eq!(r.note(), format!("blocked by verify since {since}: exit 1"));
        // Once stopped, the stop reason says what happened.
        r.state.status = Some("stopped".into());
        r.state.stop_reason = Some("completion marker".into());
        assert_eq!(r.note(), "completion marker");
    }

    #[test]
    fn a_parallel_group_stays_together_where_its_first_run_sorts() {
        let mut rows = vec![
            row("solo-done", "stopped", Some(0), "2026-01-01T00:00:09Z"),
            row("g-2", "stopped", Some(0), "2026-01-01T00:00:08Z"),
            row("other", "running", None, "2026-01-01T00:00:07Z"),
            row("g-1", "running", None, "2026-01-01T00:00:06Z"),
            row("g-3", "stopped", Some(3), "2026-01-01T00:00:05Z"),
        ];
        for (r, i) in [(1, 2), (3, 1), (4, 3)] {
            rows[r].state.parallel_group = Some("g".into());
            rows[r].state.parallel_index = Some(i);
        }
        sort_rows(&mut rows);
        let names: Vec<String> = rows.iter().map(Row::label).collect();
        // g-3 needs attention, so the group sorts first, in its own order.
        assert_eq!(names, ["g-1", "g-2", "g-3", "other", "solo-done"]);
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

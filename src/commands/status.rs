//! `looper status` (D23): the fleet of runs under the state roots (and, with `--all`, every
//! run in the machine-wide registry), what needs attention first; `--json`, `--watch`,
//! `--repair-stale`.
//!
//! Speed matters (10,000 runs in well under 100 ms on a warm cache): each `state.json` is
//! read once into a small struct (serde skips the fields we do not show), directories are
//! read by a few threads, staleness costs one /proc read per distinct active pid, and the
//! rows are sorted once.
//!
//! # JSON schema (`--json`), `agent-looper/status` version 1
//!
//! ```text
//! {
//!   "schema": "agent-looper/status",
//!   "version": 1,
//!   "generated_at": "2026-11-21T09:10:34.123Z",
//!   "runs": [ {
//!     "run_dir": string,            the run directory as found (root joined with its name)
//!     "run_id": string|null,
//!     "label": string|null,
//!     "status": string,             as recorded (running, retrying, paused, stopped, error,
//!                                   interrupted), or "unreadable"
//!     "stale": bool,                an active status whose supervisor is gone (pid identity)
//!     "stale_reason": string|null,  why it is stale, or why it was repaired
//!     "error": string|null,         why state.json could not be read (status "unreadable")
//!     "agent": string|null, "agent_kind": string|null,
//!     "loop": int|null, "prompt": int|null, "total_prompts": int|null,
//!     "updated_at": string|null, "started_at": string|null,
//!     "stop_reason": string|null, "exit_code": int|null,
//!     "retry_status": string|null, "retry_until": string|null,
//!     "usage_total": {"input_tokens", "output_tokens", "cached_input_tokens", "cost_usd"}|null,
//!     "project": string|null,       basename of the agent's working directory
//!     "pid": int|null               the supervisor's pid
//!   } ]                             ordered as the table: attention, running, finished
//! }
//! ```
//!
//! Fields may be added in later versions of schema 1; removals or changes of meaning bump
//! `version`. See `docs/status-json.md`.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value as Json, json};

use crate::cli::StatusArgs;
use crate::commands::target::{self, parse_time};
use crate::effects::{procinfo, store};
use crate::error::{Error, Result};
use crate::state::timestamp;

pub const SCHEMA: &str = "agent-looper/status";
pub const SCHEMA_VERSION: u32 = 1;

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
    pub updated_at: Option<String>,
    pub started_at: Option<String>,
    pub stop_reason: Option<String>,
    pub exit_code: Option<i64>,
    pub retry_status: Option<String>,
    pub retry_until: Option<String>,
    pub usage_total: Option<UsageView>,
    pub pid: Option<i64>,
    pub pid_identity: Option<String>,
    pub control_last_reason: Option<String>,
    pub stale_reason: Option<String>,
}

impl StateView {
    fn is_active(&self) -> bool {
        matches!(
            self.status.as_deref(),
            Some("running" | "retrying" | "paused")
        )
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
    // shown unreadable): found by the reliability suite. A directory fails on read.
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    loop {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(8192);
        }
        let start = buf.len();
        buf.resize(buf.capacity(), 0);
        match f.read(&mut buf[start..]) {
            Ok(0) => {
                buf.truncate(start);
                return Ok(());
            }
            Ok(n) => buf.truncate(start + n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => buf.truncate(start),
            Err(e) => {
                buf.truncate(start);
                return Err(e);
            }
        }
    }
}

impl Row {
    fn load(dir: PathBuf, buf: &mut Vec<u8>) -> Row {
        let path = dir.join(store::STATE_FILE);
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
        let updated = state
            .updated_at
            .as_deref()
            .or(state.started_at.as_deref())
            .and_then(parse_time);
        Row {
            dir,
            state,
            error,
            stale: None,
            updated,
        }
    }

    fn reload(&mut self) {
        let dir = std::mem::take(&mut self.dir);
        *self = Row::load(dir, &mut Vec::new());
    }

    fn name(&self) -> String {
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

    /// 0 needs attention, 1 running, 2 finished.
    pub fn group(&self) -> u8 {
        if self.error.is_some() || self.stale.is_some() {
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

    fn project(&self) -> Option<String> {
        let cwd = self.state.agent_cwd.as_deref()?;
        Some(
            Path::new(cwd)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| cwd.to_string()),
        )
    }

    fn note(&self) -> String {
        if let Some(e) = &self.error {
            return e.clone();
        }
        if let Some(r) = &self.stale {
            return r.clone();
        }
        let s = &self.state;
        match s.status.as_deref() {
            Some("retrying") => {
                let status = s.retry_status.clone().unwrap_or_else(|| "retrying".into());
                match s.retry_until.as_deref().and_then(parse_time) {
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

    pub fn to_json(&self) -> RunJson<'_> {
        let s = &self.state;
        RunJson {
            run_dir: &self.dir,
            run_id: s.run_id.as_deref(),
            label: s.label.as_deref(),
            status: if self.error.is_some() {
                "unreadable"
            } else {
                s.status.as_deref().unwrap_or("unknown")
            },
            stale: self.stale.is_some(),
            stale_reason: self.stale.as_deref().or(s.stale_reason.as_deref()),
            error: self.error.as_deref(),
            agent: s.agent_name.as_deref(),
            agent_kind: s.agent_kind.as_deref(),
            loop_number: s.current_loop,
            prompt: s.current_prompt_index,
            total_prompts: s.total_prompts,
            updated_at: s.updated_at.as_deref(),
            started_at: s.started_at.as_deref(),
            stop_reason: s.stop_reason.as_deref(),
            exit_code: s.exit_code,
            retry_status: s.retry_status.as_deref(),
            retry_until: s.retry_until.as_deref(),
            usage_total: s.usage_total.as_ref(),
            project: self.project(),
            pid: s.pid,
        }
    }
}

/// One entry of `runs` in the `--json` document (schema in the module docs), serialised
/// straight from borrowed fields, in schema order.
#[derive(Debug, serde::Serialize)]
pub struct RunJson<'a> {
    pub run_dir: &'a Path,
    pub run_id: Option<&'a str>,
    pub label: Option<&'a str>,
    pub status: &'a str,
    pub stale: bool,
    pub stale_reason: Option<&'a str>,
    pub error: Option<&'a str>,
    pub agent: Option<&'a str>,
    pub agent_kind: Option<&'a str>,
    #[serde(rename = "loop")]
    pub loop_number: Option<u64>,
    pub prompt: Option<u64>,
    pub total_prompts: Option<u64>,
    pub updated_at: Option<&'a str>,
    pub started_at: Option<&'a str>,
    pub stop_reason: Option<&'a str>,
    pub exit_code: Option<i64>,
    pub retry_status: Option<&'a str>,
    pub retry_until: Option<&'a str>,
    pub usage_total: Option<&'a UsageView>,
    pub project: Option<String>,
    pub pid: Option<i64>,
}

/// The whole `--json` document.
#[derive(Debug, serde::Serialize)]
pub struct StatusJson<'a> {
    pub schema: &'static str,
    pub version: u32,
    pub generated_at: String,
    pub runs: Vec<RunJson<'a>>,
}

/// Run directories under the roots (children holding a `state.json` or not; a child that is
/// not a directory is skipped), plus registry entries with `--all`, without duplicates.
pub fn discover(roots: &[PathBuf], registry: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for root in roots {
        let Ok(entries) = std::fs::read_dir(root) else {
            continue;
        };
        for e in entries.flatten() {
            // Hidden entries are not runs: a run directory being created is staged as
            // `.<run id>.new` until it holds a state (`RunStore::create`).
            if e.file_name().as_encoded_bytes().starts_with(b".") {
                continue;
            }
            // d_type avoids a stat per entry on most filesystems.
            let is_dir = e
                .file_type()
                .map(|t| t.is_dir() || (t.is_symlink() && e.path().is_dir()))
                .unwrap_or(false);
            if is_dir {
                dirs.push(e.path());
            }
        }
    }
    if let Some(reg) = registry {
        // Compare canonical paths so a run found under a root is not listed twice.
        let mut seen: HashSet<PathBuf> = HashSet::new();
        for root in roots {
            if let Ok(c) = root.canonicalize() {
                for d in &dirs {
                    if let Some(name) = d.file_name() {
                        seen.insert(c.join(name));
                    }
                }
            }
        }
        for v in store::read_jsonl(reg) {
            let Some(d) = v.get("run_dir").and_then(Json::as_str) else {
                continue;
            };
            let Ok(c) = Path::new(d).canonicalize() else {
                continue; // deleted since it was registered
            };
            if c.is_dir() && seen.insert(c.clone()) {
                dirs.push(c);
            }
        }
    }
    dirs
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
            std::cmp::Reverse(r.updated),
            std::cmp::Reverse(r.name()),
        )
    });
}

pub fn age(now: DateTime<Utc>, t: Option<DateTime<Utc>>) -> String {
    let Some(t) = t else {
        return "-".into();
    };
    let s = (now - t).num_seconds().max(0);
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

pub fn usage_text(u: Option<&UsageView>) -> String {
    let Some(u) = u.filter(|u| **u != UsageView::default()) else {
        return "-".into();
    };
    let tokens = u.input_tokens + u.output_tokens;
    let t = if tokens < 1000 {
        format!("{tokens} tok")
    } else if tokens < 1_000_000 {
        format!("{:.1}k tok", tokens as f64 / 1000.0)
    } else {
        format!("{:.1}M tok", tokens as f64 / 1_000_000.0)
    };
    if u.cost_usd > 0.0 {
        format!("{t} ${:.2}", u.cost_usd)
    } else {
        t
    }
}

fn loop_text(s: &StateView) -> String {
    match (s.current_loop, s.current_prompt_index, s.total_prompts) {
        (None, _, _) => "-".into(),
        (Some(l), Some(p), Some(t)) => format!("{l} p{p}/{t}"),
        (Some(l), Some(p), None) => format!("{l} p{p}"),
        (Some(l), None, _) => l.to_string(),
    }
}

fn clip(s: &str, max: usize) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max {
        let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        flat
    }
}

/// The table, one string per line (no trailing newline).
pub fn render_table(rows: &[Row], now: DateTime<Utc>) -> Vec<String> {
    const HEAD: [&str; 8] = [
        "LABEL",
        "STATUS",
        "AGENT",
        "LOOP",
        "UPDATED",
        "USAGE",
        "STOP/NOTE",
        "PROJECT",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                clip(&r.label(), 32),
                r.shown_status(),
                clip(r.state.agent_name.as_deref().unwrap_or("-"), 16),
                loop_text(&r.state),
                age(now, r.updated),
                usage_text(r.state.usage_total.as_ref()),
                clip(&r.note(), 60),
                clip(&r.project().unwrap_or_else(|| "-".into()), 32),
            ]
        })
        .collect();
    let mut widths: [usize; 8] = HEAD.map(str::len);
    for c in &cells {
        for (w, cell) in widths.iter_mut().zip(c.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |c: &[String; 8]| {
        let mut s = String::new();
        for (i, cell) in c.iter().enumerate() {
            if i + 1 == c.len() {
                s.push_str(cell);
            } else {
                s.push_str(cell);
                s.extend(std::iter::repeat_n(
                    ' ',
                    widths[i] - cell.chars().count() + 2,
                ));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = vec![line(&HEAD.map(String::from))];
    out.extend(cells.iter().map(line));
    out
}

pub fn render_json(rows: &[Row], now: DateTime<Utc>) -> StatusJson<'_> {
    StatusJson {
        schema: SCHEMA,
        version: SCHEMA_VERSION,
        generated_at: timestamp(now),
        runs: rows.iter().map(Row::to_json).collect(),
    }
}

/// What `--repair-stale` (and `control stop --now/--force`) wrote.
#[derive(Clone, Debug)]
pub struct Repaired {
    pub reason: String,
    pub stop_reason: String,
}

/// Mark a stale run stopped (reference section 10.5): rewrite `state.json` atomically,
/// keeping every field we do not own (runs written by the reference have more), and append
/// exactly one `run_stopped` event.
pub fn repair(dir: &Path, reason: &str, now: DateTime<Utc>) -> Result<Repaired> {
    target::check_run_dir(dir)?;
    let path = dir.join(store::STATE_FILE);
    let meta =
        std::fs::symlink_metadata(&path).map_err(|e| Error::io("cannot inspect", &path, e))?;
    if let Some(why) = target::unsafe_reason(&meta) {
        return Err(Error::Usage(format!(
            "refusing to rewrite {}: it {why}",
            path.display()
        )));
    }
    let bytes = std::fs::read(&path).map_err(|e| Error::io("cannot read", &path, e))?;
    let mut state: Map<String, Json> = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Usage(format!("cannot parse {}: {e}", path.display())))?;
    let at = timestamp(now);
    let stop_reason = format!("external termination: {reason}");
    let exit_code = state
        .get("exit_code")
        .cloned()
        .filter(|v| !v.is_null())
        .unwrap_or(Json::Null);
    let completed = state
        .get("completed_at")
        .cloned()
        .filter(|v| !v.is_null())
        .unwrap_or_else(|| Json::String(at.clone()));
    for (k, v) in [
        ("status", Json::String("stopped".into())),
        ("stop_reason", Json::String(stop_reason.clone())),
        ("stale_reason", Json::String(reason.into())),
        ("stale_repaired_at", Json::String(at.clone())),
        ("completed_at", completed),
        ("last_event", Json::String("run_stopped".into())),
        ("updated_at", Json::String(at.clone())),
        ("exit_code", exit_code.clone()),
    ] {
        state.insert(k.into(), v);
    }
    let mut out = serde_json::to_vec_pretty(&Json::Object(state))
        .map_err(|e| Error::Usage(format!("cannot serialise the repaired state: {e}")))?;
    out.push(b'\n');
    store::write_atomic(&path, &out, true)?;
    let event = json!({
        "ts": at,
        "event": "run_stopped",
        "status": "stopped",
        "stop_reason": stop_reason,
        "exit_code": exit_code,
        "stale_reason": reason,
        "stale_repaired_at": at,
    });
    target::secure_append(dir, store::EVENTS_FILE, &event.to_string())?;
    Ok(Repaired {
        reason: reason.into(),
        stop_reason,
    })
}

pub fn status(args: &StatusArgs) -> Result<i32> {
    let env = target::process_env();
    let roots = target::state_roots(&args.state_root, &env);
    let registry = if args.all {
        store::registry_path(&env)
    } else {
        None
    };
    if args.watch {
        return watch(&roots, registry.as_deref(), args.repair_stale);
    }
    let mut rows = load_rows(discover(&roots, registry.as_deref()));
    let mut notes = Vec::new();
    if args.repair_stale {
        notes = repair_rows(&mut rows);
    }
    let now = Utc::now();
    let mut out = std::io::stdout().lock();
    let r = if args.json {
        for n in &notes {
            eprintln!("{n}");
        }
        let mut text = serde_json::to_string_pretty(&render_json(&rows, now)).unwrap_or_default();
        text.push('\n');
        out.write_all(text.as_bytes())
    } else {
        let mut text = String::new();
        for n in &notes {
            text.push_str(n);
            text.push('\n');
        }
        if rows.is_empty() {
            text.push_str(&empty_message(&roots, registry.as_deref()));
        } else {
            for l in render_table(&rows, now) {
                text.push_str(&l);
                text.push('\n');
            }
        }
        out.write_all(text.as_bytes())
    };
    // A closed pipe (`looper status | head`) is not an error worth reporting.
    let _ = r;
    Ok(0)
}

fn empty_message(roots: &[PathBuf], registry: Option<&Path>) -> String {
    let roots_text = roots
        .iter()
        .map(|r| r.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let mut s = format!("No looper runs found under {roots_text}");
    if let Some(r) = registry {
        s.push_str(&format!(" or in the registry {}", r.display()));
    }
    s.push_str(
        ".\nStart one with `looper` (or `looper --local`), or pass --state-root DIR / --all.\n",
    );
    s
}

/// Repair every stale row in place; returns one line per repair (or failure).
fn repair_rows(rows: &mut [Row]) -> Vec<String> {
    let mut notes = Vec::new();
    let now = Utc::now();
    for row in rows.iter_mut() {
        let Some(reason) = row.stale.clone() else {
            continue;
        };
        match repair(&row.dir, &reason, now) {
            Ok(r) => {
                notes.push(format!("repaired: {}: {}", row.label(), r.reason));
                row.reload();
            }
            Err(e) => notes.push(format!("repair failed: {}: {e}", row.label())),
        }
    }
    sort_rows(rows);
    notes
}

/// Restores the terminal on every exit path, including a panic unwinding through `watch`.
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        use crossterm::{cursor, execute, terminal};
        let _ = terminal::disable_raw_mode();
        let _ = execute!(
            std::io::stdout(),
            cursor::Show,
            terminal::LeaveAlternateScreen
        );
    }
}

fn watch(roots: &[PathBuf], registry: Option<&Path>, repair_stale: bool) -> Result<i32> {
    use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
    use crossterm::{cursor, execute, queue, terminal};
    let term_err = |e: std::io::Error| Error::io("cannot drive the terminal", "stdout", e);
    terminal::enable_raw_mode().map_err(term_err)?;
    let _guard = TerminalGuard;
    execute!(
        std::io::stdout(),
        terminal::EnterAlternateScreen,
        cursor::Hide
    )
    .map_err(term_err)?;
    loop {
        let mut rows = load_rows(discover(roots, registry));
        let notes = if repair_stale {
            repair_rows(&mut rows)
        } else {
            Vec::new()
        };
        let now = Utc::now();
        // A pseudo-terminal without a window size reports 0x0: draw as if 100x30.
        let (width, height) = match terminal::size() {
            Ok((w, h)) if w > 0 && h > 0 => (w, h),
            _ => (100, 30),
        };
        let mut lines = vec![format!(
            "looper status  {}  ({} runs)  q to quit",
            now.with_timezone(&chrono::Local).format("%H:%M:%S"),
            rows.len()
        )];
        lines.extend(notes);
        if rows.is_empty() {
            lines.extend(empty_message(roots, registry).lines().map(str::to_string));
        } else {
            lines.extend(render_table(&rows, now));
        }
        let mut out = std::io::stdout().lock();
        queue!(
            out,
            cursor::MoveTo(0, 0),
            terminal::Clear(terminal::ClearType::All)
        )
        .map_err(term_err)?;
        for (i, l) in lines.iter().take(usize::from(height)).enumerate() {
            let clipped: String = l.chars().take(usize::from(width)).collect();
            queue!(out, cursor::MoveTo(0, i as u16)).map_err(term_err)?;
            out.write_all(clipped.as_bytes()).map_err(term_err)?;
        }
        out.flush().map_err(term_err)?;
        drop(out);
        // Wait up to a second for a key or a resize; either redraws or quits.
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() || !event::poll(left).map_err(term_err)? {
                break;
            }
            match event::read().map_err(term_err)? {
                Event::Key(k) if k.kind != KeyEventKind::Release => {
                    let ctrl_c =
                        k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                    if ctrl_c || matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) {
                        return Ok(0);
                    }
                }
                Event::Resize(..) => break,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, status: &str, exit: Option<i64>, updated: &str) -> Row {
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
            updated: parse_time(updated),
        }
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

    #[test]
    fn ages_and_usage_read_well() {
        let now = parse_time("2026-01-01T12:00:00Z").expect("t");
        assert_eq!(age(now, parse_time("2026-01-01T11:59:48Z")), "12s ago");
        assert_eq!(age(now, parse_time("2026-01-01T11:55:00Z")), "5m ago");
        assert_eq!(age(now, parse_time("2026-01-01T09:00:00Z")), "3h ago");
        assert_eq!(age(now, parse_time("2025-12-30T12:00:00Z")), "2d ago");
        assert_eq!(age(now, None), "-");
        let u = UsageView {
            input_tokens: 12_000,
            output_tokens: 345,
            cached_input_tokens: 0,
            cost_usd: 0.4,
        };
        assert_eq!(usage_text(Some(&u)), "12.3k tok $0.40");
        assert_eq!(usage_text(Some(&UsageView::default())), "-");
        assert_eq!(usage_text(None), "-");
    }

    #[test]
    fn the_table_aligns_columns() {
        let now = parse_time("2026-01-01T00:00:10Z").expect("t");
        let mut r = row("smoke", "running", None, "2026-01-01T00:00:00Z");
        r.state.agent_name = Some("codex".into());
        r.state.current_loop = Some(3);
        r.state.current_prompt_index = Some(2);
        r.state.total_prompts = Some(3);
        r.state.agent_cwd = Some("/home/me/proj".into());
        let lines = render_table(&[r], now);
        assert_eq!(
            lines[0],
            "LABEL  STATUS   AGENT  LOOP    UPDATED  USAGE  STOP/NOTE  PROJECT"
        );
        assert_eq!(
            lines[1],
            "smoke  running  codex  3 p2/3  10s ago  -      -          proj"
        );
    }
}

//! `looper wait` (issue 17): block until one run reaches a state, driven by file watching on
//! its `events.jsonl` (a slow re-check only notices a supervisor that died). The run is
//! pinned when the command starts: its directory is resolved once, so a later run with the
//! same label can never satisfy the wait. The MCP server's `wait` tool is the same function.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value as Json;

use crate::cli::{Until, WaitArgs};
use crate::error::{Error, Result, exit_code};
use crate::records::discovery::{self, Stopped, Target};
use crate::records::state::{OpenAsk, RunState, read_state};
use crate::records::{EVENTS_FILE, STATE_FILE};

pub const SCHEMA: &str = "agent-looper/wait";

impl Until {
    pub fn as_str(self) -> &'static str {
        match self {
            Until::Stopped => "stopped",
            Until::LoopCompleted => "loop_completed",
            Until::NeedsInput => "needs_input",
            Until::RetryWait => "retry_wait",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Until::Stopped,
            Until::LoopCompleted,
            Until::NeedsInput,
            Until::RetryWait,
        ]
        .into_iter()
        .find(|u| u.as_str() == s)
    }
}

/// The result document (`--json`, and the MCP `wait` tool).
#[derive(Clone, Debug, Serialize)]
pub struct WaitResult {
    pub schema: &'static str,
    pub version: u32,
    pub until: &'static str,
    /// `reached`, `needs_input` (the MCP wait returns early when a person is needed),
    /// `ended` (the run ended without reaching it), `timeout`.
    pub result: &'static str,
    pub run_id: Option<String>,
    pub run_dir: PathBuf,
    pub label: Option<String>,
    pub status: Option<String>,
    pub stop_reason: Option<String>,
    pub exit_code: Option<i64>,
    /// The event that reached the state, as recorded.
    pub event: Option<Json>,
    /// What the run waits for a person for.
    pub open_asks: Vec<OpenAsk>,
    pub waited_seconds: f64,
}

impl WaitResult {
    pub fn exit_code(&self) -> i32 {
        match self.result {
            "reached" | "needs_input" => exit_code::OK,
            "timeout" => exit_code::TIMEOUT,
            _ => exit_code::AGENT_FAILED,
        }
    }
}

/// New whole lines of a growing JSONL file, from an offset.
struct Tail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl Tail {
    /// From the end of the file as it is now: only what comes after counts.
    fn at_end(path: &Path) -> Self {
        let offset = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        Self {
            path: path.to_path_buf(),
            offset,
            partial: Vec::new(),
        }
    }

    fn lines(&mut self) -> Vec<Json> {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return vec![];
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return vec![];
        }
        let mut buf = Vec::new();
        // Bounded per look: events are small, and a burst is read over several looks.
        let n = f.take(4 << 20).read_to_end(&mut buf).unwrap_or(0);
        self.offset += n as u64;
        self.partial.extend_from_slice(&buf);
        let Some(last_nl) = memchr::memrchr(b'\n', &self.partial) else {
            return vec![];
        };
        let whole: Vec<u8> = self.partial.drain(..=last_nl).collect();
        crate::records::fsio::parse_jsonl(&whole)
    }
}

fn result(
    until: Until,
    what: &'static str,
    dir: &Path,
    state: Option<RunState>,
    event: Option<Json>,
    started: Instant,
) -> WaitResult {
    let mut s = state.unwrap_or_default();
    // The event is written before the snapshot: what it says of the end is the newer word.
    if let Some(e) = event.as_ref().filter(|e| e["event"] == "run_stopped") {
        s.status = e["status"].as_str().map(str::to_string).or(s.status);
        s.stop_reason = e["stop_reason"]
            .as_str()
            .map(str::to_string)
            .or(s.stop_reason);
        s.exit_code = e["exit_code"].as_i64().or(s.exit_code);
    }
    WaitResult {
        schema: SCHEMA,
        version: 1,
        until: until.as_str(),
        result: what,
        open_asks: if crate::records::state::is_active_status(s.status.as_deref()) {
            open_asks(dir)
        } else {
            vec![]
        },
        run_id: s.run_id,
        run_dir: dir.to_path_buf(),
        label: s.label,
        status: s.status,
        stop_reason: s.stop_reason,
        exit_code: s.exit_code,
        event,
        waited_seconds: started.elapsed().as_secs_f64(),
    }
}

/// The asks of the run nobody has answered, from the asks themselves (the source of truth:
/// `state.json` learns of an answer a moment later).
fn open_asks(dir: &Path) -> Vec<OpenAsk> {
    crate::records::asks::list(dir)
        .into_iter()
        .filter(|a| a.is_open())
        .map(|a| OpenAsk {
            id: a.record.id,
            kind: a.record.kind.as_str().into(),
            question: a.record.question,
            choices: a.record.choices,
        })
        .collect()
}

fn needs_person(dir: &Path, state: &RunState) -> bool {
    state.is_active() && !open_asks(dir).is_empty()
}

/// Does this event reach `until`?
fn reaches(until: Until, event: &Json) -> bool {
    let name = event["event"].as_str().unwrap_or_default();
    match until {
        Until::Stopped => name == "run_stopped",
        Until::LoopCompleted => name == "loop_completed",
        Until::NeedsInput => matches!(name, "ask_opened" | "approval_requested"),
        Until::RetryWait => name == "retry_wait",
    }
}

/// Wait for run `dir` to reach `until`. With `early_on_input`, return `needs_input` as soon
/// as the run waits for a person (what the MCP tool gives a calling agent to act on).
pub fn wait_for(
    dir: &Path,
    until: Until,
    timeout: Option<Duration>,
    early_on_input: bool,
) -> Result<WaitResult> {
    use notify::Watcher;
    let started = Instant::now();
    let events_path = dir.join(EVENTS_FILE);
    // The watch is set up before the first look, so nothing falls between the two.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.send(());
        }
    })
    .map_err(|e| Error::Usage(format!("cannot watch {}: {e}", events_path.display())))?;
    watcher
        .watch(&events_path, notify::RecursiveMode::NonRecursive)
        .map_err(|e| Error::Usage(format!("cannot watch {}: {e}", events_path.display())))?;
    let mut tail = Tail::at_end(&events_path);
    let state = read_state(&dir.join(STATE_FILE)).ok();
    if let Some(s) = &state {
        let reached_now = match until {
            Until::Stopped => !s.is_active(),
            Until::NeedsInput => needs_person(dir, s),
            Until::RetryWait => s.status.as_deref() == Some("retrying"),
            Until::LoopCompleted => false,
        };
        if reached_now {
            return Ok(result(until, "reached", dir, state, None, started));
        }
        if !s.is_active() {
            return Ok(result(until, "ended", dir, state, None, started));
        }
        if early_on_input && needs_person(dir, s) {
            return Ok(result(until, "needs_input", dir, state, None, started));
        }
    }
    let mut last_check = Instant::now();
    loop {
        for event in tail.lines() {
            let name = event["event"].as_str().unwrap_or_default().to_string();
            let asks_event = matches!(name.as_str(), "ask_opened" | "approval_requested");
            // An ask recorded after it was answered (both seen in one look) needs no one.
            if asks_event && open_asks(dir).is_empty() {
                continue;
            }
            if reaches(until, &event) {
                let state = read_state(&dir.join(STATE_FILE)).ok();
                return Ok(result(until, "reached", dir, state, Some(event), started));
            }
            if early_on_input && asks_event {
                let state = read_state(&dir.join(STATE_FILE)).ok();
                return Ok(result(
                    until,
                    "needs_input",
                    dir,
                    state,
                    Some(event),
                    started,
                ));
            }
            if name == "run_stopped" {
                let state = read_state(&dir.join(STATE_FILE)).ok();
                return Ok(result(until, "ended", dir, state, Some(event), started));
            }
        }
        // A `run_stopped` written just before the tail began is seen in the snapshot; a
        // supervisor killed outright writes none: its pid is looked at once a second.
        let state = read_state(&dir.join(STATE_FILE)).ok();
        if let Some(s) = &state
            && !s.is_active()
        {
            let what = if until == Until::Stopped {
                "reached"
            } else {
                "ended"
            };
            return Ok(result(until, what, dir, state, None, started));
        }
        if last_check.elapsed() >= Duration::from_secs(1) {
            last_check = Instant::now();
            if let Some(s) = &state
                && crate::effects::procinfo::stale_reason(s.pid, s.pid_identity.as_deref())
                    .is_some()
            {
                return Ok(result(until, "ended", dir, state, None, started));
            }
        }
        let left = match timeout {
            Some(t) => match t.checked_sub(started.elapsed()) {
                Some(l) if !l.is_zero() => l,
                _ => {
                    let state = read_state(&dir.join(STATE_FILE)).ok();
                    return Ok(result(until, "timeout", dir, state, None, started));
                }
            },
            None => Duration::from_secs(1),
        };
        let _ = rx.recv_timeout(left.min(Duration::from_secs(1)));
        while rx.try_recv().is_ok() {}
    }
}

/// The run a wait is pinned to: the newest active run the query names, else the newest
/// that has stopped (whose end a wait then reports at once).
pub fn pin(query: &discovery::TargetQuery) -> Result<Target> {
    discovery::resolve(query, Stopped::Fallback)
}

/// `looper wait --json`: the result with what a person would have read, so `--host` merges
/// it like any command's document (`remote::Document`: `exit_code`, `lines`).
#[derive(Serialize)]
struct WaitDocument<'a> {
    #[serde(flatten)]
    result: &'a WaitResult,
    looper_version: &'static str,
    exit_code: i32,
    lines: Vec<String>,
}

pub fn wait_command(a: &WaitArgs) -> Result<i32> {
    // Not quick: a wait lasts as long as the run takes (or `--timeout`).
    let doc = crate::remote::Shape::Document;
    if let Some(code) = crate::remote::forward(&a.target.hosts, doc, false)? {
        return Ok(code);
    }
    let t = pin(&a.target.query())?;
    let r = wait_for(&t.dir, a.until, a.timeout, false)?;
    let detail = match r.result {
        "reached" => format!("reached {}", r.until),
        "timeout" => format!("timed out waiting for {}", r.until),
        _ => format!(
            "ended without reaching {}: {} ({})",
            r.until,
            r.status.as_deref().unwrap_or("-"),
            r.stop_reason.as_deref().unwrap_or("-")
        ),
    };
    let mut lines = vec![crate::text::sanitize_line(&format!("{}: {detail}", t.name)).into_owned()];
    for q in &r.open_asks {
        lines.push(
            crate::text::sanitize_line(&format!(
                "  waiting for a person: {} ({})",
                q.question, q.id
            ))
            .into_owned(),
        );
    }
    if a.target.json {
        let doc = WaitDocument {
            result: &r,
            looper_version: env!("CARGO_PKG_VERSION"),
            exit_code: r.exit_code(),
            lines,
        };
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        crate::say!("{text}");
    } else {
        for l in &lines {
            crate::say!("{l}");
        }
    }
    Ok(r.exit_code())
}

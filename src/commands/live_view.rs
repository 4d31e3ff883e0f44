//! `looper live-view` (hidden): the second pane of the split layout (D25). It draws a
//! header from the run's `state.json` and `focus.jsonl`, follows the current loop log
//! rendered readably, and turns keys into `control.jsonl` lines for the supervisor.
//!
//! It draws on the pane's main screen (no alternate screen), so when the supervisor exits
//! the last frame stays readable in the dead pane that `remain-on-exit` keeps. Each row is
//! cleared and rewritten in place; a full-screen clear would push every frame into tmux's
//! history. Files are re-read on a 200 ms tick and the screen is redrawn at most ten times
//! a second.

use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use crossterm::{cursor, queue, style, terminal};
use unicode_width::UnicodeWidthChar;

use crate::cli::LiveViewArgs;
use crate::effects::procinfo;
use crate::engine::ControlAction;
use crate::error::{Error, Result};
use crate::records::control::{ControlLine, latest_focus};
use crate::records::state::read_state;
use crate::records::{FOCUS_FILE, RunState, STATE_FILE};
use crate::transcript;

/// How often the run's files are re-read and the supervisor is checked.
const TICK: Duration = Duration::from_millis(200);
/// At most ten frames a second, however fast the agent writes.
const MIN_FRAME: Duration = Duration::from_millis(100);
/// Panes shorter than this get the compact header.
const COMPACT_BELOW: usize = 16;
/// Rendered transcript lines kept for scrollback-free redraws.
const MAX_LINES: usize = 2000;
/// Bytes of log read per tick, so a flood cannot stall the keys.
const READ_CHUNK: u64 = 1 << 20;
/// A record longer than this without a newline is dropped (records are at most 64 KiB).
const MAX_PARTIAL: usize = 1 << 20;

/// Agent output is untrusted: control characters (escape sequences included) never reach
/// the terminal.
fn sanitize(s: &str) -> String {
    crate::text::sanitize_line(s).into_owned()
}

/// Terminal columns a character takes: 2 for wide (CJK, most emoji), 0 for combining marks.
fn columns(c: char) -> usize {
    UnicodeWidthChar::width(c).unwrap_or(0)
}

/// Cut a line into rows of at most `width` terminal columns.
pub fn wrap(line: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut rows = vec![String::new()];
    let mut used = 0;
    for c in line.chars() {
        let w = columns(c);
        if used + w > width && used > 0 {
            rows.push(String::new());
            used = 0;
        }
        if let Some(row) = rows.last_mut() {
            row.push(c);
        }
        used += w;
    }
    rows
}

/// The start of `line` that fits in `width` columns.
fn clip(line: &str, width: usize) -> String {
    let mut used = 0;
    line.chars()
        .take_while(|c| {
            used += columns(*c);
            used <= width
        })
        .collect()
}

/// The end of `line` that fits in `width` columns.
fn clip_start(line: &str, width: usize) -> String {
    let mut used = 0;
    let mut tail: Vec<char> = line
        .chars()
        .rev()
        .take_while(|c| {
            used += columns(*c);
            used <= width
        })
        .collect();
    tail.reverse();
    tail.into_iter().collect()
}

/// Follows one loop log from an offset, rendering complete records.
#[derive(Default)]
struct LogFollower {
    path: Option<PathBuf>,
    offset: u64,
    partial: Vec<u8>,
}

impl LogFollower {
    /// New rendered lines; `restarted` when the file shrank and is read again from 0.
    fn read_new(&mut self, out: &mut Vec<String>) {
        let Some(path) = &self.path else { return };
        let Ok(mut f) = std::fs::File::open(path) else {
            return;
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.offset {
            out.push("── log restarted ──".into());
            self.offset = 0;
            self.partial.clear();
        }
        if len == self.offset || f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        let Ok(n) = f.take(READ_CHUNK).read_to_end(&mut buf) else {
            return;
        };
        self.offset += n as u64;
        let mut data = &buf[..];
        while let Some(pos) = memchr::memchr(b'\n', data) {
            self.partial.extend_from_slice(&data[..pos]);
            let record = String::from_utf8_lossy(&self.partial).into_owned();
            self.partial.clear();
            if let Some(text) = transcript::render_log_record(&record) {
                out.extend(text.lines().map(sanitize));
            }
            data = &data[pos + 1..];
        }
        self.partial.extend_from_slice(data);
        if self.partial.len() > MAX_PARTIAL {
            self.partial.clear();
        }
    }
}

/// The verify and review gates as the header shows them (issue 15), if the run has any.
fn gates_line(st: &RunState) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(v) = &st.verify_last {
        parts.push(match v.pass {
            None => format!("verify running (loop {})", v.loop_number),
            Some(true) => format!("verify passed (loop {})", v.loop_number),
            Some(false) => format!(
                "verify FAILED (loop {}, {} in a row): {}",
                v.loop_number,
                v.consecutive_failures,
                v.reason.as_deref().unwrap_or("-")
            ),
        });
    }
    if let Some(r) = &st.review_last {
        parts.push(match r.verdict.as_deref() {
            None => format!("review {} running", r.round),
            Some(verdict) => format!(
                "review {}: {verdict} ({} rejection(s))",
                r.round, r.rejections
            ),
        });
    }
    if let Some(g) = st.gate_blocked {
        parts.push(format!(
            "blocked by {}: {}",
            g.as_str(),
            st.gate_blocked_reason.as_deref().unwrap_or("-")
        ));
    }
    (!parts.is_empty()).then(|| format!("gates: {}", parts.join(" · ")))
}

/// What a key asks for.
#[derive(Debug, PartialEq)]
pub enum KeyAction {
    None,
    Redraw,
    Quit,
    /// Append a control line: action, reason, note.
    Queue(ControlAction, Option<String>, Option<String>),
}

/// The view's model: everything drawn, read from the run directory.
pub struct View {
    run_dir: PathBuf,
    state: Option<RunState>,
    focus: Option<String>,
    focus_len: u64,
    log: LogFollower,
    lines: VecDeque<String>,
    /// `Some(text)` while a note is being typed.
    note: Option<String>,
    /// `i` was pressed once: the next `i` or `y` interrupts, any other key cancels (one
    /// keystroke used to end the whole run).
    confirm_interrupt: bool,
    message: Option<String>,
}

impl View {
    pub fn new(run_dir: &Path) -> Self {
        Self {
            run_dir: run_dir.to_path_buf(),
            state: None,
            focus: None,
            focus_len: u64::MAX,
            log: LogFollower::default(),
            lines: VecDeque::new(),
            note: None,
            confirm_interrupt: false,
            message: None,
        }
    }

    fn push_lines(&mut self, new: Vec<String>) {
        for l in new {
            if self.lines.len() == MAX_LINES {
                self.lines.pop_front();
            }
            self.lines.push_back(l);
        }
    }

    /// Re-read state, focus and the current log. True when anything drawn changed.
    pub fn refresh(&mut self) -> bool {
        let mut changed = false;
        if let Ok(st) = read_state(&self.run_dir.join(STATE_FILE))
            && self.state.as_ref() != Some(&st)
        {
            self.state = Some(st);
            changed = true;
        }
        let focus_path = self.run_dir.join(FOCUS_FILE);
        let focus_len = std::fs::metadata(&focus_path).map(|m| m.len()).unwrap_or(0);
        if focus_len != self.focus_len {
            self.focus_len = focus_len;
            let latest = latest_focus(&focus_path).map(|f| sanitize(&f));
            changed |= latest != self.focus;
            self.focus = latest;
        }
        let wanted = self
            .state
            .as_ref()
            .and_then(|s| s.last_log.as_deref())
            .map(|l| crate::config::absolutize(&self.run_dir, Path::new(l)));
        let mut new = Vec::new();
        if wanted.is_some() && wanted != self.log.path {
            // A new prompt's log: mark the switch, then follow it from its start.
            let name = wanted
                .as_deref()
                .and_then(Path::file_name)
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            new.push(format!("── {} ──", sanitize(&name)));
            self.log = LogFollower {
                path: wanted,
                ..LogFollower::default()
            };
        }
        self.log.read_new(&mut new);
        changed |= !new.is_empty();
        self.push_lines(new);
        changed
    }

    /// Header rows; `compact` (a short pane) keeps the transcript visible by folding the
    /// run, status and loop into one row and leaving out session, usage and focus.
    fn header(&self, compact: bool) -> Vec<String> {
        let mut h = Vec::new();
        let Some(st) = &self.state else {
            h.push(format!("looper live view · {}", self.run_dir.display()));
            h.push("waiting for the run to start".into());
            return h.iter().map(|l| sanitize(l)).collect();
        };
        let dash = || "-".to_string();
        let title = format!(
            "{} · run {}",
            st.label.clone().unwrap_or_else(dash),
            st.run_id.clone().unwrap_or_else(dash)
        );
        let mut status = format!("status: {}", st.status.clone().unwrap_or_else(dash));
        if let Some(l) = st.current_loop.filter(|l| *l > 0) {
            status.push_str(&format!(" · loop {l}"));
            if let (Some(i), Some(n)) =
                (st.current_prompt_index.filter(|i| *i > 0), st.total_prompts)
            {
                status.push_str(&format!(", prompt {i}/{n}"));
            }
        }
        if let Some(a) = st.current_attempt.filter(|a| *a > 1) {
            status.push_str(&format!(" · attempt {a}"));
        }
        if compact {
            h.push(format!("{status} · {title}"));
        } else {
            h.push(title);
            h.push(status);
            let session = st
                .current_session_id
                .clone()
                .or_else(|| st.current_session.clone())
                .unwrap_or_else(dash);
            let usage = match &st.usage_total {
                Some(u) if u.cost_usd > 0.0 => {
                    format!("{} tokens, ${:.4}", u.total_tokens(), u.cost_usd)
                }
                Some(u) => format!("{} tokens", u.total_tokens()),
                None => "-".into(),
            };
            h.push(format!("session: {session} · usage: {usage}"));
            h.push(format!(
                "focus: {}",
                self.focus.as_deref().unwrap_or("not reported yet")
            ));
            if let Some(g) = gates_line(st) {
                h.push(g);
            }
        }
        if let Some(r) = &st.stop_reason {
            h.push(format!("stop: {r}"));
        } else if let Some(r) = &st.retry_status {
            h.push(format!("retry: {r}"));
        }
        h.iter().map(|l| sanitize(l)).collect()
    }

    /// The whole screen, `height` rows of at most `width` characters.
    pub fn frame(&self, width: usize, height: usize) -> Vec<String> {
        let width = width.max(1);
        let compact = height < COMPACT_BELOW;
        let mut rows: Vec<String> = self
            .header(compact)
            .iter()
            .map(|l| clip(l, width))
            .collect();
        rows.push(match (&self.note, &self.message) {
            (Some(n), _) => {
                // A long note scrolls: its end, where the typing happens, stays visible.
                clip_start(
                    &format!("note (Enter sends, Esc cancels)> {}_", sanitize(n)),
                    width,
                )
            }
            (None, Some(m)) => clip(m, width),
            (None, None) => clip(
                "keys: p stop after prompt · l stop after loop · i interrupt · n note · q quit",
                width,
            ),
        });
        if !compact {
            rows.push("─".repeat(width));
        }
        let body = height.saturating_sub(rows.len());
        let mut tail: Vec<String> = Vec::new();
        for line in self.lines.iter().rev() {
            if tail.len() >= body {
                break;
            }
            for r in wrap(line, width).into_iter().rev() {
                tail.push(r);
            }
        }
        tail.truncate(body);
        tail.reverse();
        rows.extend(tail);
        rows.truncate(height);
        while rows.len() < height {
            rows.push(String::new());
        }
        rows
    }

    /// Interpret a key press.
    pub fn on_key(&mut self, key: KeyEvent) -> KeyAction {
        let ctrl_c =
            key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c');
        if let Some(note) = &mut self.note {
            match key.code {
                _ if ctrl_c => self.note = None,
                KeyCode::Esc => self.note = None,
                KeyCode::Enter => {
                    let text = note.trim().to_string();
                    self.note = None;
                    if !text.is_empty() {
                        return KeyAction::Queue(ControlAction::Note, None, Some(text));
                    }
                }
                KeyCode::Backspace => {
                    note.pop();
                }
                KeyCode::Char(c) => note.push(c),
                _ => return KeyAction::None,
            }
            return KeyAction::Redraw;
        }
        if ctrl_c {
            self.confirm_interrupt = false;
            return KeyAction::Quit;
        }
        let reason = |what: &str| Some(format!("live view: {what}"));
        if std::mem::take(&mut self.confirm_interrupt) {
            if matches!(key.code, KeyCode::Char('i' | 'y')) {
                self.message = None;
                return KeyAction::Queue(
                    ControlAction::InterruptNow,
                    reason("interrupt now"),
                    None,
                );
            }
            self.message = Some("interrupt cancelled".into());
            return KeyAction::Redraw;
        }
        match key.code {
            KeyCode::Char('p') => KeyAction::Queue(
                ControlAction::StopAfterPrompt,
                reason("stop after prompt"),
                None,
            ),
            KeyCode::Char('l') => KeyAction::Queue(
                ControlAction::StopAfterLoop,
                reason("stop after loop"),
                None,
            ),
            KeyCode::Char('i') => {
                self.confirm_interrupt = true;
                self.message = Some(
                    "press i again (or y) to interrupt now: the agent's group is terminated and the run ends; any other key cancels"
                        .into(),
                );
                KeyAction::Redraw
            }
            KeyCode::Char('n') => {
                self.note = Some(String::new());
                self.message = None;
                KeyAction::Redraw
            }
            KeyCode::Char('q') => KeyAction::Quit,
            _ => KeyAction::None,
        }
    }

    /// Closing the view leaves the supervisor pane without a transcript: say where it is.
    fn closed_message(&self) -> String {
        let run = self.run_dir.display().to_string();
        format!("live view closed; follow the transcript with: looper logs --run-dir {run} -f")
    }

    /// Append a control line (with the checks every writer of the control file makes) and
    /// say so in the view.
    fn queue(&mut self, action: ControlAction, reason: Option<&str>, note: Option<&str>) {
        let line = ControlLine::new(action, reason, note, Utc::now());
        let name = action.as_str();
        self.message = Some(match line.append(&self.run_dir) {
            Ok(_) if action == ControlAction::Note => "note queued for the next prompt".into(),
            Ok(_) => format!("queued {name}"),
            Err(e) => format!("cannot queue {name}: {e}"),
        });
    }
}

/// Raw mode and a hidden cursor for the view's lifetime; dropped on every exit path
/// (return, error, panic unwinding).
struct TermGuard;

impl TermGuard {
    fn enter() -> Result<Self> {
        terminal::enable_raw_mode()
            .map_err(|e| Error::io("cannot use the terminal", "stdin", e))?;
        let mut out = std::io::stdout();
        let _ = queue!(out, cursor::Hide);
        let _ = out.flush();
        Ok(Self)
    }
}

impl Drop for TermGuard {
    fn drop(&mut self) {
        let mut out = std::io::stdout();
        let _ = queue!(out, style::ResetColor, cursor::Show);
        let _ = out.flush();
        let _ = terminal::disable_raw_mode();
    }
}

/// Draw a frame. The last frame (`last`) leaves the top row blank and draws one row lower:
/// when the pane dies, tmux scrolls it up one row to print "Pane is dead" at the bottom,
/// and this way the header survives that scroll.
fn draw(out: &mut impl Write, view: &View, (w, h): (u16, u16), last: bool) -> std::io::Result<()> {
    let skip = usize::from(last && h > 2);
    let mut rows = vec![String::new(); skip];
    rows.extend(view.frame(usize::from(w), usize::from(h).saturating_sub(skip)));
    for (i, row) in rows.iter().enumerate() {
        let y = u16::try_from(i).unwrap_or(u16::MAX);
        queue!(
            out,
            cursor::MoveTo(0, y),
            terminal::Clear(terminal::ClearType::CurrentLine),
            style::Print(row)
        )?;
    }
    out.flush()
}

fn term_err(e: std::io::Error) -> Error {
    Error::io("cannot draw the live view on", "the terminal", e)
}

pub fn live_view(args: &LiveViewArgs) -> Result<i32> {
    let mut view = View::new(&args.run_dir);
    let _guard = TermGuard::enter()?;
    let mut out = std::io::stdout();
    let mut size = terminal::size().unwrap_or((80, 24));
    let mut dirty = true;
    let mut last_draw: Option<Instant> = None;
    let mut last_tick: Option<Instant> = None;
    loop {
        if last_tick.is_none_or(|t| t.elapsed() >= TICK) {
            last_tick = Some(Instant::now());
            dirty |= view.refresh();
            // A pid of 0 or less names no supervisor: follow until `q`.
            if args.supervisor_pid > 0 && !procinfo::is_running(args.supervisor_pid) {
                while view.refresh() {}
                view.note = None;
                view.message = Some("the supervisor exited; live view stopped".into());
                draw(&mut out, &view, size, true).map_err(term_err)?;
                return Ok(0);
            }
        }
        if dirty && last_draw.is_none_or(|t| t.elapsed() >= MIN_FRAME) {
            draw(&mut out, &view, size, false).map_err(term_err)?;
            dirty = false;
            last_draw = Some(Instant::now());
        }
        let wait = TICK
            .saturating_sub(last_tick.map_or(TICK, |t| t.elapsed()))
            .clamp(Duration::from_millis(10), MIN_FRAME);
        if !event::poll(wait).map_err(term_err)? {
            continue;
        }
        match event::read().map_err(term_err)? {
            Event::Key(k) if k.kind == KeyEventKind::Press => match view.on_key(k) {
                KeyAction::None => {}
                KeyAction::Redraw => dirty = true,
                KeyAction::Quit => {
                    view.message = Some(view.closed_message());
                    draw(&mut out, &view, size, true).map_err(term_err)?;
                    return Ok(0);
                }
                KeyAction::Queue(action, reason, note) => {
                    view.queue(action, reason.as_deref(), note.as_deref());
                    dirty = true;
                }
            },
            Event::Resize(w, h) => {
                size = (w, h);
                dirty = true;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::CONTROL_FILE;

    fn key(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
    }

    #[test]
    fn keys_queue_control_lines_the_supervisor_reads() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        let mut view = View::new(dir.path());
        view.queue(ControlAction::Note, None, Some("also the docs"));
        view.queue(
            ControlAction::StopAfterLoop,
            Some("live view: stop after loop"),
            None,
        );
        let mut inbox = crate::records::inbox::Inbox::new(&dir.path().join(CONTROL_FILE));
        let got = inbox.poll();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].note.as_deref(), Some("also the docs"));
        assert_eq!(got[1].action, ControlAction::StopAfterLoop);
        assert_eq!(got[1].reason.as_deref(), Some("live view: stop after loop"));
    }

    #[test]
    fn keys_queue_control_actions_and_notes() {
        let mut v = View::new(Path::new("/nonexistent"));
        assert_eq!(
            v.on_key(key('p')),
            KeyAction::Queue(
                ControlAction::StopAfterPrompt,
                Some("live view: stop after prompt".into()),
                None
            )
        );
        assert_eq!(
            v.on_key(key('l')),
            KeyAction::Queue(
                ControlAction::StopAfterLoop,
                Some("live view: stop after loop".into()),
                None
            )
        );
        // One `i` only asks; a second (or `y`) interrupts; anything else cancels.
        assert_eq!(v.on_key(key('i')), KeyAction::Redraw);
        assert!(v.frame(80, 24).iter().any(|l| l.contains("press i again")));
        assert_eq!(v.on_key(key('x')), KeyAction::Redraw);
        assert_eq!(v.on_key(key('x')), KeyAction::None, "cancelled");
        assert_eq!(v.on_key(key('i')), KeyAction::Redraw);
        assert_eq!(
            v.on_key(key('i')),
            KeyAction::Queue(
                ControlAction::InterruptNow,
                Some("live view: interrupt now".into()),
                None
            )
        );
        assert_eq!(v.on_key(key('i')), KeyAction::Redraw);
        assert_eq!(
            v.on_key(key('y')),
            KeyAction::Queue(
                ControlAction::InterruptNow,
                Some("live view: interrupt now".into()),
                None
            )
        );
        assert_eq!(v.on_key(key('x')), KeyAction::None);
        assert_eq!(v.on_key(key('n')), KeyAction::Redraw);
        for c in "hi q".chars() {
            assert_eq!(v.on_key(key(c)), KeyAction::Redraw, "typing, not commands");
        }
        assert_eq!(
            v.on_key(KeyEvent::new(KeyCode::Backspace, KeyModifiers::NONE)),
            KeyAction::Redraw
        );
        assert_eq!(
            v.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)),
            KeyAction::Queue(ControlAction::Note, None, Some("hi".into()))
        );
        assert_eq!(v.on_key(key('n')), KeyAction::Redraw);
        assert_eq!(
            v.on_key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE)),
            KeyAction::Redraw
        );
        assert_eq!(v.on_key(key('q')), KeyAction::Quit);
        assert_eq!(
            v.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            KeyAction::Quit
        );
    }

    #[test]
    fn follows_the_current_log_and_renders_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log1 = dir.path().join("loop-0001__prompt-001.log");
        let state = |log: &Path, loop_n: u64| {
            let st = RunState {
                label: Some("smoke".into()),
                run_id: Some("r1".into()),
                status: Some("running".into()),
                current_loop: Some(loop_n),
                current_prompt_index: Some(1),
                total_prompts: Some(2),
                current_session_id: Some("sess-1".into()),
                last_log: Some(log.display().to_string()),
                ..RunState::default()
            };
            std::fs::write(
                dir.path().join("state.json"),
                serde_json::to_vec(&st).expect("json"),
            )
            .expect("write");
        };
        state(&log1, 3);
        std::fs::write(&log1, "[20261121T091032Z] stdout: hello there\n[20261121T091032Z] stdout: {\"type\":\"thread.started\"}\n[20261121T091033Z] stdout: par").expect("write");
        std::fs::write(
            dir.path().join("focus.jsonl"),
            "{\"summary\":\"old\"}\n{\"summary\":\"parser\"}\n",
        )
        .expect("write");
        let mut v = View::new(dir.path());
        assert!(v.refresh());
        let f = v.frame(40, 20);
        assert_eq!(f.len(), 20);
        assert_eq!(f[0], "smoke · run r1");
        assert_eq!(f[1], "status: running · loop 3, prompt 1/2");
        assert_eq!(f[2], "session: sess-1 · usage: -");
        assert_eq!(f[3], "focus: parser");
        assert!(f[4].starts_with("keys: p stop after prompt"));
        assert_eq!(f[6], "── loop-0001__prompt-001.log ──");
        assert_eq!(f[7], "hello there");
        assert_eq!(f[8], "");
        assert!(!v.refresh(), "nothing new");
        let small = v.frame(60, 5);
        assert_eq!(
            small[0],
            "status: running · loop 3, prompt 1/2 · smoke · run r1"
        );
        assert!(small[1].starts_with("keys: "));
        assert_eq!(
            small[2..],
            ["── loop-0001__prompt-001.log ──", "hello there", ""]
        );
        // The rest of the partial line arrives; a long line wraps.
        let mut f1 = std::fs::OpenOptions::new()
            .append(true)
            .open(&log1)
            .expect("open");
        f1.write_all(format!("tial\n[x] stdout: {}\n", "y".repeat(50)).as_bytes())
            .expect("append");
        assert!(v.refresh());
        let f = v.frame(40, 20);
        assert_eq!(
            &f[8..11],
            ["partial".to_string(), "y".repeat(40), "y".repeat(10)]
        );
        // A shrunken file restarts at 0; a new last_log switches files.
        std::fs::write(&log1, "[x] stdout: again\n").expect("write");
        assert!(v.refresh());
        assert_eq!(
            v.lines.iter().rev().take(2).collect::<Vec<_>>(),
            ["again", "── log restarted ──"]
        );
        let log2 = dir.path().join("loop-0004__prompt-001.log");
        std::fs::write(&log2, "[x] stdout: \u{1b}[31mred\n[x] returncode: 0\n").expect("write");
        state(&log2, 4);
        assert!(v.refresh());
        let last: Vec<&String> = v.lines.iter().rev().take(3).collect();
        assert_eq!(
            last,
            // The escape sequence goes whole (D35), not just its ESC.
            ["-- exit 0", "red", "── loop-0004__prompt-001.log ──"]
        );
    }

    #[test]
    fn a_typed_note_shows_its_end() {
        let mut v = View::new(Path::new("/nonexistent"));
        v.on_key(key('n'));
        for c in "abcdefghijklmnopqrstuvwxyz0123456789".chars() {
            v.on_key(key(c));
        }
        let f = v.frame(20, 6);
        assert_eq!(f[2], "rstuvwxyz0123456789_");
        assert!(f[2].ends_with("789_"));
        assert_eq!(f[2].chars().count(), 20);
    }

    #[test]
    fn the_header_shows_the_gates() {
        use crate::records::state::{ReviewLast, VerifyLast};
        let mut st = RunState::default();
        assert_eq!(gates_line(&st), None);
        st.verify_last = Some(VerifyLast {
            loop_number: 4,
            pass: Some(false),
            reason: Some("exit 1".into()),
            consecutive_failures: 2,
            ..VerifyLast::default()
        });
        st.review_last = Some(ReviewLast {
            round: 1,
            verdict: Some("reject".into()),
            rejections: 1,
            ..ReviewLast::default()
        });
        st.gate_blocked = Some(crate::engine::Gate::Verify);
        st.gate_blocked_reason = Some("exit 1".into());
        assert_eq!(
            gates_line(&st).as_deref(),
            Some(
                "gates: verify FAILED (loop 4, 2 in a row): exit 1 · review 1: reject (1 rejection(s)) · blocked by verify: exit 1"
            )
        );
    }

    #[test]
    fn wrapping_and_sanitizing() {
        assert_eq!(wrap("abcdef", 4), ["abcd", "ef"]);
        assert_eq!(wrap("", 4), [""]);
        // Wide characters take two columns; combining marks none.
        assert_eq!(wrap("日本語のテキスト", 6), ["日本語", "のテキ", "スト"]);
        assert_eq!(wrap("ab🚀cd", 3), ["ab", "🚀c", "d"]);
        assert_eq!(
            wrap("e\u{301}e\u{301}e\u{301}", 2),
            ["e\u{301}e\u{301}", "e\u{301}"]
        );
        assert_eq!(
            wrap("日", 1),
            ["日"],
            "a wide character alone in a 1-column row"
        );
        assert_eq!(clip("日本語", 5), "日本");
        assert_eq!(clip_start("日本語", 5), "本語");
        // `ESC c` is a whole sequence (a terminal reset): it goes with the escape.
        assert_eq!(sanitize("a\tb\u{1b}c\u{9b}d"), "a bd");
    }
}

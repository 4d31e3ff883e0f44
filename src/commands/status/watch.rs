//! `looper status --watch`: the live view of the fleet. A selected row (Up/Down or k/j,
//! shown reversed), Enter goes to the selected run's tmux window (`switch-client` inside the
//! same tmux server; outside it, the footer shows the command to attach, never nesting),
//! `h` hides or shows finished runs older than the `--since` window. What a key does, which
//! row is selected, where Enter goes and what the footer says are decided here without I/O;
//! [`watch_view`] draws with crossterm and reads the keys.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::paint::{Line, Tone};
use super::{
    Windows, clip, empty_message, hidden_line, hide_old_finished, repair_rows, short_duration,
    table,
};
use crate::effects::tmux;
use crate::error::{Error, Result};
use crate::records::discovery::discover;
use crate::records::fleet::{Row, load_rows};

/// The window `h` hides finished runs older than when `--since` is not given.
pub const DEFAULT_HIDE_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// What a key asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Up,
    Down,
    Enter,
    ToggleHide,
    Quit,
}

pub fn action(k: &KeyEvent) -> Option<Action> {
    if k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL) {
        return Some(Action::Quit);
    }
    match k.code {
        KeyCode::Char('q') | KeyCode::Esc => Some(Action::Quit),
        KeyCode::Up | KeyCode::Char('k') => Some(Action::Up),
        KeyCode::Down | KeyCode::Char('j') => Some(Action::Down),
        KeyCode::Enter => Some(Action::Enter),
        KeyCode::Char('h') => Some(Action::ToggleHide),
        _ => None,
    }
}

/// The selected run: followed by its directory while the rows re-sort between frames, by
/// its place when it leaves the list.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    dir: Option<PathBuf>,
    index: usize,
}

impl Selection {
    /// The index of the selected row in `rows` (the first one at the start).
    pub fn resolve(&mut self, rows: &[Row]) -> Option<usize> {
        if rows.is_empty() {
            return None;
        }
        if let Some(i) = self
            .dir
            .as_deref()
            .and_then(|d| rows.iter().position(|r| r.dir == d))
        {
            self.index = i;
        } else {
            self.index = self.index.min(rows.len() - 1);
            self.dir = Some(rows[self.index].dir.clone());
        }
        Some(self.index)
    }

    /// One row up (`-1`) or down (`1`), stopping at the ends.
    pub fn step(&mut self, rows: &[Row], delta: isize) {
        let Some(i) = self.resolve(rows) else {
            return;
        };
        let j = i.saturating_add_signed(delta).min(rows.len() - 1);
        self.index = j;
        self.dir = Some(rows[j].dir.clone());
    }
}

/// Where Enter takes the person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Jump {
    /// Inside that tmux server: switch this client to the pane.
    Switch {
        socket: String,
        pane: String,
        window: String,
    },
    /// Another server, or no tmux here: the command to type (attaching would nest).
    Attach(String),
    /// Nothing to go to, and why.
    Nowhere(String),
}

/// Where Enter on `row` goes, from a process whose `$TMUX` is `tmux_env`.
pub fn plan_jump(row: &Row, window: Option<&tmux::PaneWindow>, tmux_env: Option<&str>) -> Jump {
    let label = clip(&row.label(), 32);
    let (Some(w), Some(socket), Some(pane)) = (
        window,
        row.state.tmux_socket.as_deref(),
        row.state.tmux_pane.as_deref(),
    ) else {
        return Jump::Nowhere(format!(
            "{label} has no tmux window (not started in tmux, or its supervisor is gone)"
        ));
    };
    if tmux::same_server(tmux_env, socket) {
        Jump::Switch {
            socket: socket.to_string(),
            pane: pane.to_string(),
            window: super::window_text(w),
        }
    } else {
        // The path and pane come from a state file: shown sanitised (D35).
        Jump::Attach(clip(
            &format!(
                "{label} is outside this tmux; attach with: {}",
                tmux::attach_command(socket, pane)
            ),
            400,
        ))
    }
}

/// The footer's lines: the keys, what `h` does now, and the last message.
pub fn footer(hide: bool, window: Duration, hidden: usize, message: Option<&Line>) -> Vec<Line> {
    let mut lines = vec![Line::plain(
        "↑/↓ or k/j select  Enter go to its tmux window  h hide/show old finished runs  q quit",
    )];
    let w = short_duration(window);
    lines.push(Line::plain(if hide {
        format!("hiding finished runs older than {w} ({hidden} hidden); h shows them")
    } else {
        format!("showing every finished run; h hides those older than {w}")
    }));
    if let Some(m) = message {
        lines.push(m.clone());
    }
    lines
}

/// What one frame draws: lines pinned at the top (title, table header), the body (which
/// scrolls so the selected line stays in sight) and the footer pinned at the bottom.
#[derive(Clone, Debug, Default)]
pub struct Frame {
    pub head: Vec<Line>,
    pub body: Vec<Line>,
    pub selected: Option<usize>,
    pub foot: Vec<Line>,
}

/// Something the live view shows.
pub trait View {
    /// Read the world again (about once a second).
    fn refresh(&mut self);
    fn frame(&self) -> Frame;
    /// A key other than quit.
    fn act(&mut self, action: Action);
}

/// Plain lines from a closure, no selection (`status --watch --host`).
pub struct LinesView<F> {
    frame: F,
    lines: Vec<Line>,
}

impl<F: FnMut() -> Vec<String>> LinesView<F> {
    pub fn new(frame: F) -> Self {
        LinesView {
            frame,
            lines: Vec::new(),
        }
    }
}

impl<F: FnMut() -> Vec<String>> View for LinesView<F> {
    fn refresh(&mut self) {
        self.lines = (self.frame)().into_iter().map(Line::plain).collect();
    }
    fn frame(&self) -> Frame {
        Frame {
            head: self.lines.clone(),
            ..Frame::default()
        }
    }
    fn act(&mut self, _: Action) {}
}

/// The fleet under the state roots, as `status` lists it.
pub struct FleetView {
    roots: Vec<PathBuf>,
    registry: Option<PathBuf>,
    repair_stale: bool,
    tmux_env: Option<String>,
    window: Duration,
    hide: bool,
    selection: Selection,
    message: Option<Line>,
    // What the last refresh read.
    now: DateTime<Utc>,
    notes: Vec<String>,
    listed: bool,
    rows: Vec<Row>,
    hidden: usize,
    windows: Windows,
}

impl FleetView {
    pub fn new(
        roots: Vec<PathBuf>,
        registry: Option<PathBuf>,
        repair_stale: bool,
        since: Option<Duration>,
        tmux_env: Option<String>,
    ) -> FleetView {
        FleetView {
            roots,
            registry,
            repair_stale,
            tmux_env,
            window: since.unwrap_or(DEFAULT_HIDE_WINDOW),
            hide: since.is_some(),
            selection: Selection::default(),
            message: None,
            now: Utc::now(),
            notes: Vec::new(),
            listed: false,
            rows: Vec::new(),
            hidden: 0,
            windows: Windows::default(),
        }
    }

    /// The view of `rows` as if just read (tests).
    #[cfg(test)]
    pub fn of_rows(rows: Vec<Row>, now: DateTime<Utc>, windows: Windows, hide: bool) -> Self {
        let mut v = FleetView::new(Vec::new(), None, false, None, None);
        v.hide = hide;
        v.now = now;
        v.show(rows, windows);
        v
    }

    fn show(&mut self, rows: Vec<Row>, windows: Windows) {
        self.listed = !rows.is_empty();
        (self.rows, self.hidden) = if self.hide {
            hide_old_finished(rows, self.now, self.window)
        } else {
            (rows, 0)
        };
        self.windows = windows;
    }

    fn jump(&mut self) {
        let Some(i) = self.selection.resolve(&self.rows) else {
            return;
        };
        let row = &self.rows[i];
        let plan = plan_jump(row, self.windows.of(row), self.tmux_env.as_deref());
        self.message = Some(match plan {
            Jump::Switch {
                socket,
                pane,
                window,
            } => match tmux::jump_to_pane(&socket, &pane) {
                Ok(tmux::Jumped::Switched) => Line::plain(format!("switched to {window}")),
                Ok(tmux::Jumped::Selected) => Line::plain(format!(
                    "selected {window} (no client to switch; it shows when you attach)"
                )),
                Err(e) => {
                    let mut l = Line::default();
                    l.push(
                        format!("cannot go to {window}: {}", clip(&e, 200)),
                        Tone::Error,
                    );
                    l
                }
            },
            Jump::Attach(text) | Jump::Nowhere(text) => Line::plain(text),
        });
    }
}

impl View for FleetView {
    fn refresh(&mut self) {
        let mut rows = load_rows(discover(&self.roots, self.registry.as_deref()));
        self.notes = if self.repair_stale {
            repair_rows(&mut rows).0
        } else {
            Vec::new()
        };
        self.now = Utc::now();
        let windows = Windows::ask(&rows);
        self.show(rows, windows);
    }

    fn frame(&self) -> Frame {
        let mut f = Frame {
            head: vec![Line::plain(format!(
                "looper status  {}  ({} runs)  q to quit",
                self.now.with_timezone(&chrono::Local).format("%H:%M:%S"),
                self.rows.len()
            ))],
            ..Frame::default()
        };
        f.head
            .extend(self.notes.iter().map(|n| Line::plain(n.as_str())));
        if !self.listed {
            f.head.extend(
                empty_message(&self.roots, self.registry.as_deref())
                    .lines()
                    .map(Line::plain),
            );
        } else if !self.rows.is_empty() {
            let t = table(&self.rows, self.now, &self.windows);
            f.head.push(t.header);
            let mut sel = self.selection.clone();
            f.selected = sel.resolve(&self.rows).map(|i| t.row_line[i]);
            f.body = t.lines;
        }
        if self.hidden > 0 {
            f.body
                .push(Line::plain(hidden_line(self.hidden, "h shows them")));
        }
        f.foot = footer(self.hide, self.window, self.hidden, self.message.as_ref());
        f
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Up => self.selection.step(&self.rows, -1),
            Action::Down => self.selection.step(&self.rows, 1),
            Action::Enter => self.jump(),
            Action::ToggleHide => {
                self.hide = !self.hide;
                self.message = None;
                // Read again: the rows hidden before are not kept.
                self.refresh();
            }
            Action::Quit => {}
        }
    }
}

/// The screen lines of `frame` for a `width` x `height` terminal: the head, as much of the
/// body as fits (scrolled to keep the selected line in sight), the footer at the bottom;
/// each with whether it is the selected one.
pub fn layout(frame: &Frame, width: usize, height: usize) -> Vec<(usize, Line, bool)> {
    let mut out = Vec::new();
    let foot = frame.foot.len().min(height);
    let head = frame.head.len().min(height - foot);
    let room = height - foot - head;
    for (y, l) in frame.head.iter().take(head).enumerate() {
        out.push((y, l.clipped(width), false));
    }
    let first = match frame.selected {
        Some(s) if s >= room => s + 1 - room,
        _ => 0,
    };
    for (k, l) in frame.body.iter().enumerate().skip(first).take(room) {
        let selected = frame.selected == Some(k);
        let mut l = l.clipped(width);
        if selected {
            l = l.padded(width);
        }
        out.push((head + k - first, l, selected));
    }
    for (k, l) in frame.foot.iter().rev().take(foot).rev().enumerate() {
        out.push((height - foot + k, l.clipped(width), false));
    }
    out
}

/// Restores the terminal on every exit path, including a panic unwinding through the view.
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

/// Draw the view about once a second (at once after a key or a resize) until `q`, Esc or
/// Ctrl-C, in the alternate screen; `color` colours the lines by their tones.
pub fn watch_view(mut view: impl View, color: bool) -> Result<i32> {
    use crossterm::event::{self, Event, KeyEventKind};
    use crossterm::{cursor, execute, terminal};
    let term_err = |e: std::io::Error| Error::io("cannot drive the terminal", "stdout", e);
    terminal::enable_raw_mode().map_err(term_err)?;
    let _guard = TerminalGuard;
    execute!(
        std::io::stdout(),
        terminal::EnterAlternateScreen,
        cursor::Hide
    )
    .map_err(term_err)?;
    view.refresh();
    loop {
        draw(&view.frame(), color).map_err(term_err)?;
        // Wait up to a second for keys or a resize; a key or a resize redraws at once,
        // the second's end reads the runs again.
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() || !event::poll(left).map_err(term_err)? {
                view.refresh();
                break;
            }
            match event::read().map_err(term_err)? {
                Event::Key(k) if k.kind != KeyEventKind::Release => match action(&k) {
                    Some(Action::Quit) => return Ok(0),
                    Some(a) => {
                        view.act(a);
                        draw(&view.frame(), color).map_err(term_err)?;
                    }
                    None => {}
                },
                Event::Resize(..) => draw(&view.frame(), color).map_err(term_err)?,
                _ => {}
            }
        }
    }
}

fn draw(frame: &Frame, color: bool) -> std::io::Result<()> {
    use crossterm::{cursor, queue, terminal};
    // A pseudo-terminal without a window size reports 0x0: draw as if 100x30.
    let (width, height) = match terminal::size() {
        Ok((w, h)) if w > 0 && h > 0 => (w, h),
        _ => (100, 30),
    };
    let mut out = std::io::stdout().lock();
    queue!(
        out,
        cursor::MoveTo(0, 0),
        terminal::Clear(terminal::ClearType::All)
    )?;
    for (y, line, selected) in layout(frame, usize::from(width), usize::from(height)) {
        queue!(out, cursor::MoveTo(0, y as u16))?;
        out.write_all(line.render(color, selected).as_bytes())?;
    }
    out.flush()
}

/// Is `dir` the selected row's directory? (tests)
#[cfg(test)]
fn selected_dir(view: &FleetView) -> Option<&std::path::Path> {
    view.selection.dir.as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::fleet::sample_row as row;
    use crate::records::time;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn keys_map_to_actions() {
        assert_eq!(action(&key(KeyCode::Down)), Some(Action::Down));
        assert_eq!(action(&key(KeyCode::Char('j'))), Some(Action::Down));
        assert_eq!(action(&key(KeyCode::Up)), Some(Action::Up));
        assert_eq!(action(&key(KeyCode::Char('k'))), Some(Action::Up));
        assert_eq!(action(&key(KeyCode::Enter)), Some(Action::Enter));
        assert_eq!(action(&key(KeyCode::Char('h'))), Some(Action::ToggleHide));
        assert_eq!(action(&key(KeyCode::Char('q'))), Some(Action::Quit));
        assert_eq!(action(&key(KeyCode::Esc)), Some(Action::Quit));
        assert_eq!(
            action(&KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Action::Quit)
        );
        assert_eq!(action(&key(KeyCode::Char('x'))), None);
    }

    #[test]
    fn the_selection_follows_its_run_and_stops_at_the_ends() {
        let a = row("a", "running", None, "2026-01-01T00:00:03Z");
        let b = row("b", "running", None, "2026-01-01T00:00:02Z");
        let c = row("c", "running", None, "2026-01-01T00:00:01Z");
        let rows = vec![a.clone(), b.clone(), c.clone()];
        let mut s = Selection::default();
        assert_eq!(s.resolve(&rows), Some(0));
        s.step(&rows, -1);
        assert_eq!(s.resolve(&rows), Some(0), "stops at the top");
        s.step(&rows, 1);
        assert_eq!(s.resolve(&rows), Some(1));
        // The rows re-sort: the selection stays on b.
        let resorted = vec![b.clone(), c.clone(), a.clone()];
        assert_eq!(s.resolve(&resorted), Some(0));
        s.step(&resorted, 5);
        assert_eq!(s.resolve(&resorted), Some(2), "stops at the bottom");
        // Its run leaves the list: the place is kept, within the list.
        assert_eq!(s.resolve(std::slice::from_ref(&b)), Some(0));
        assert_eq!(s.resolve(&[]), None);
    }

    fn in_tmux(mut r: Row, socket: &str, pane: &str) -> Row {
        r.state.tmux_socket = Some(socket.into());
        r.state.tmux_pane = Some(pane.into());
        r
    }

    fn window(name: &str) -> tmux::PaneWindow {
        tmux::PaneWindow {
            session: "B".into(),
            index: 2,
            name: name.into(),
        }
    }

    #[test]
    fn enter_switches_inside_the_same_server_and_says_how_to_attach_otherwise() {
        let r = in_tmux(
            row("b", "running", None, "2026-01-01T00:00:00Z"),
            "/tmp/t/default",
            "%5",
        );
        let w = window("proj");
        assert_eq!(
            plan_jump(&r, Some(&w), Some("/tmp/t/default,99,0")),
            Jump::Switch {
                socket: "/tmp/t/default".into(),
                pane: "%5".into(),
                window: "B:2 proj".into()
            }
        );
        for env in [None, Some("/tmp/other/default,99,0")] {
            assert_eq!(
                plan_jump(&r, Some(&w), env),
                Jump::Attach(
                    "b is outside this tmux; attach with: tmux -S /tmp/t/default attach -t %5"
                        .into()
                ),
                "{env:?}"
            );
        }
        assert!(matches!(
            plan_jump(&r, None, Some("/tmp/t/default,99,0")),
            Jump::Nowhere(m) if m.starts_with("b has no tmux window")
        ));
        // A socket path with control characters is shown harmless (D35).
        let evil = in_tmux(r.clone(), "/tmp/\x1b]2;x\x07/s", "%5");
        let Jump::Attach(text) = plan_jump(&evil, Some(&w), None) else {
            panic!("attach")
        };
        assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
    }

    #[test]
    fn the_footer_lists_the_keys_and_says_whether_old_runs_are_hidden() {
        let day = Duration::from_secs(86_400);
        let shown: Vec<String> = footer(false, day, 0, None).iter().map(Line::text).collect();
        assert_eq!(
            shown,
            [
                "↑/↓ or k/j select  Enter go to its tmux window  h hide/show old finished runs  q quit",
                "showing every finished run; h hides those older than 1d",
            ]
        );
        let msg = Line::plain("switched to B:2 proj");
        let hidden: Vec<String> = footer(true, Duration::from_secs(7200), 3, Some(&msg))
            .iter()
            .map(Line::text)
            .collect();
        assert_eq!(
            hidden[1..],
            [
                "hiding finished runs older than 2h (3 hidden); h shows them",
                "switched to B:2 proj"
            ]
        );
    }

    #[test]
    fn the_fleet_view_selects_hides_and_lays_out_with_the_footer_at_the_bottom() {
        let now = time::parse("2026-01-03T00:00:00Z").expect("t");
        let rows = vec![
            in_tmux(
                row("live", "running", None, "2026-01-02T23:59:50Z"),
                "/s",
                "%1",
            ),
            row("recent", "stopped", Some(0), "2026-01-02T12:00:00Z"),
            row("old", "error", Some(1), "2026-01-01T00:00:00Z"),
        ];
        let windows = Windows::with("/s", "%1", window("proj"));
        let mut v = FleetView::of_rows(rows.clone(), now, windows, true);
        let f = v.frame();
        let body: Vec<String> = f.body.iter().map(Line::text).collect();
        assert!(f.head[1].text().contains("WINDOW"), "{:?}", f.head[1]);
        assert!(body[0].contains("B:2 proj"), "{body:?}");
        assert!(body[1].starts_with("recent"), "{body:?}");
        assert_eq!(
            body.last().map(String::as_str),
            Some("(1 older finished run hidden; h shows them)")
        );
        assert_eq!(f.selected, Some(0));
        v.act(Action::Down);
        assert_eq!(selected_dir(&v), Some(std::path::Path::new("recent")));
        assert_eq!(v.frame().selected, Some(1));

        // Laid out on a 60x8 screen: head on top, footer at the bottom, the selected line
        // reversed to the edge.
        let screen = layout(&v.frame(), 60, 8);
        let ys: Vec<usize> = screen.iter().map(|x| x.0).collect();
        assert_eq!(
            ys,
            [0, 1, 2, 3, 4, 6, 7],
            "two rows and the hidden line, a gap"
        );
        let sel: Vec<&(usize, Line, bool)> = screen.iter().filter(|x| x.2).collect();
        assert_eq!(sel.len(), 1);
        assert_eq!(sel[0].0, 3);
        assert_eq!(sel[0].1.width(), 60);
        assert!(
            screen[6]
                .1
                .text()
                .starts_with("hiding finished runs older than 1d")
        );
        assert!(screen.iter().all(|x| x.1.width() <= 60));

        // Without hiding, the old failure is listed (with its own colour).
        let v = FleetView::of_rows(rows, now, Windows::default(), false);
        let f = v.frame();
        assert!(f.body.iter().any(|l| l.text().starts_with("old")));
        assert!(!f.head[1].text().contains("WINDOW"), "no window known");
        assert!(f.foot[1].text().starts_with("showing every finished run"));
    }

    #[test]
    fn a_long_body_scrolls_to_keep_the_selection_in_sight() {
        let frame = Frame {
            head: vec![Line::plain("title")],
            body: (0..20).map(|i| Line::plain(format!("row {i}"))).collect(),
            selected: Some(15),
            foot: vec![Line::plain("keys")],
        };
        let screen = layout(&frame, 40, 6);
        let texts: Vec<String> = screen
            .iter()
            .map(|x| x.1.text().trim_end().to_string())
            .collect();
        assert_eq!(
            texts,
            ["title", "row 12", "row 13", "row 14", "row 15", "keys"]
        );
        assert!(screen[4].2);
    }
}

//! The farm's tmux windows (issue 14.6): their names (`<dir>`, or `<dir>` plus the label when
//! the session already has a window of that name), the size of the client a launch is typed
//! in, what became of a new window's pane, and closing the windows of finished runs
//! (`looper status --close-finished`). Commands are built by pure functions with
//! `tmux_interface`, like `effects::tmux`; names tmux would expand as formats go through
//! [`tmux::literal`] (D35).

use std::collections::BTreeMap;
use std::path::Path;

use tmux_interface::{
    CapturePane, DisplayMessage, KillWindow, ListPanes, ListWindows, RenameWindow, ResizeWindow,
    SetOption, TmuxCommand,
};

use super::handoff::PaneState;
use crate::effects::tmux;
use crate::text::sanitize_line;

/// The window option that marks a window the farm opened (set by the launcher, so even a
/// window whose looper never started a run is known as the farm's).
pub const FARM_MARK: &str = "@looper_farm";

/// Control characters become `_` (window names are shown in status lines); an empty name
/// becomes `looper`.
pub fn clean_name(name: &str) -> String {
    let n: String = name
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect();
    if n.trim().is_empty() {
        "looper".into()
    } else {
        n
    }
}

/// `<dir>` plus the label, for a window whose directory already has one in the session: the
/// label alone when it already starts with the directory's name (default labels do).
pub fn labelled(dir: &str, label: &str) -> String {
    if label == dir || label.starts_with(&format!("{dir}-")) {
        clean_name(label)
    } else {
        clean_name(&format!("{dir}-{label}"))
    }
}

/// `list-windows -t =<session> -F #{window_name}`.
pub fn list_names(session: &str) -> TmuxCommand<'static> {
    ListWindows::new()
        .target_session(format!("={session}"))
        .format("#{window_name}")
        .build()
}

/// The names of the session's windows (none when it does not exist).
pub fn names_in(session: &str) -> Vec<String> {
    tmux::output(list_names(session))
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The size of the client this launch is typed in and of its current window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientSize {
    pub client: (u32, u32),
    pub window: (u32, u32),
}

const CLIENT_SIZE: &str = "#{client_width} #{client_height} #{window_width} #{window_height}";

/// `display-message -p [-t <pane>] '#{client_width} ...'`.
pub fn client_size_query(pane: Option<&str>) -> TmuxCommand<'_> {
    let mut b = DisplayMessage::new().print();
    if let Some(p) = pane {
        b = b.target_pane(p);
    }
    b.message(CLIENT_SIZE).build()
}

/// `width height width height`, when a client is there (its size is not 0).
pub fn parse_client_size(text: &str) -> Option<ClientSize> {
    let n: Vec<u32> = text
        .split_whitespace()
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    match n[..] {
        [cw, ch, ww, wh] if cw > 0 && ch > 0 && ww > 0 && wh > 0 => Some(ClientSize {
            client: (cw, ch),
            window: (ww, wh),
        }),
        _ => None,
    }
}

/// Inside tmux, with a client attached to this pane's session: its size. `None` outside
/// tmux, or in a session nobody is looking at.
pub fn current_client(env: &BTreeMap<String, String>) -> Option<ClientSize> {
    env.get("TMUX").filter(|t| !t.is_empty())?;
    let pane = env
        .get("TMUX_PANE")
        .map(String::as_str)
        .filter(|p| !p.is_empty());
    parse_client_size(&tmux::output(client_size_query(pane)).ok()?)
}

/// `resize-window -t <pane> -x W -y H`, then `set-option -w -u -t <pane> window-size`.
/// tmux sizes a new window like its most recent client, not necessarily the one the launch
/// was typed in; resizing sets the window's `window-size` to `manual`, and unsetting it again
/// lets the window follow whoever attaches later, keeping the size until then.
pub fn fit_commands(pane: &str, (w, h): (u32, u32)) -> [TmuxCommand<'_>; 2] {
    [
        ResizeWindow::new()
            .target_window(pane)
            .width(w as usize)
            .height(h as usize)
            .build(),
        SetOption::new()
            .window()
            .unset()
            .target_pane(pane)
            .option("window-size")
            .build(),
    ]
}

pub fn fit(pane: &str, size: (u32, u32)) {
    for cmd in fit_commands(pane, size) {
        let _ = tmux::succeeds(cmd);
    }
}

/// `display-message -p -t <pane> '#{pane_dead} #{pane_dead_status}'`.
pub fn pane_state_query(pane: &str) -> TmuxCommand<'_> {
    DisplayMessage::new()
        .print()
        .target_pane(pane)
        .message("#{pane_dead} #{pane_dead_status}")
        .build()
}

pub fn parse_pane_state(text: &str) -> PaneState {
    let mut it = text.split_whitespace();
    match it.next() {
        Some("1") => PaneState::Dead(it.next().and_then(|c| c.parse().ok())),
        _ => PaneState::Alive,
    }
}

/// What became of a pane: alive, dead (and how), or gone with its window.
pub fn pane_state(pane: &str) -> PaneState {
    match tmux::output(pane_state_query(pane)) {
        Ok(text) => parse_pane_state(&text),
        Err(_) => PaneState::Gone,
    }
}

/// `rename-window -t <pane> <name>` (the name is a format to tmux: made literal).
pub fn rename_command<'a>(pane: &'a str, name: &str) -> TmuxCommand<'a> {
    RenameWindow::new()
        .target_window(pane)
        .new_name(tmux::literal(name).into_owned())
        .build()
}

/// The last `n` non-blank lines on a pane, made safe to show.
pub fn last_lines(pane: &str, n: usize) -> Vec<String> {
    let text =
        tmux::output(CapturePane::new().stdout().target_pane(pane).build()).unwrap_or_default();
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| sanitize_line(l).into_owned())
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

const PANES: &str = "#{window_id}\t#{pane_dead}\t#{@looper_farm}\t#{session_name}\t#{window_name}\t#{@looper_run_dir}";

/// `list-panes -a -F <window id, dead, mark, session, window, run dir>`.
pub fn list_all_panes() -> TmuxCommand<'static> {
    ListPanes::new().all().format(PANES).build()
}

/// A window as `--close-finished` sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FarmWindow {
    pub id: String,
    pub session: String,
    pub name: String,
    pub all_dead: bool,
    pub run_dir: String,
}

/// The farm's windows from [`list_all_panes`]' lines, in order, one per window.
pub fn farm_windows(listing: &str) -> Vec<FarmWindow> {
    let mut out: Vec<FarmWindow> = Vec::new();
    for line in listing.lines() {
        let f: Vec<&str> = line.splitn(6, '\t').collect();
        let [id, dead, mark, session, name, run_dir] = f[..] else {
            continue;
        };
        if mark.is_empty() && run_dir.is_empty() {
            continue;
        }
        match out.iter_mut().find(|w| w.id == id) {
            Some(w) => w.all_dead &= dead == "1",
            None if !mark.is_empty() => out.push(FarmWindow {
                id: id.to_string(),
                session: session.to_string(),
                name: name.to_string(),
                all_dead: dead == "1",
                run_dir: run_dir.to_string(),
            }),
            // A window with a run directory but no mark is someone's own (a `--local` run
            // inside tmux), not the farm's.
            None => {}
        }
    }
    out
}

/// What `--close-finished` does with one dead farm window: `Ok(why)` to close it, `Err(why)`
/// to keep it.
fn verdict(run_dir: &str) -> Result<String, String> {
    if run_dir.is_empty() {
        return Ok("its looper never started a run".into());
    }
    let row = crate::records::fleet::Row::load(Path::new(run_dir).to_path_buf(), &mut Vec::new());
    if row.error.is_some() && !Path::new(run_dir).exists() {
        return Ok("its run directory is gone".into());
    }
    let label = row.state.label.clone().unwrap_or_default();
    if row.state.is_active() {
        return Err(format!(
            "run {label} is still recorded as {} although its looper is gone; `looper status --repair-stale --close-finished` closes it",
            row.state.status.as_deref().unwrap_or("running")
        ));
    }
    let status = row.state.status.clone().unwrap_or_else(|| "unknown".into());
    Ok(match row.state.stop_reason.as_deref() {
        Some(r) if !r.is_empty() => format!("run {label}: {status}, {r}"),
        _ => format!("run {label}: {status}"),
    })
}

/// Close every farm window of this tmux server whose panes are all dead and whose run has
/// finished; the lines say which (and which were kept, and why).
pub fn close_finished() -> Vec<String> {
    let Ok(listing) = tmux::output(list_all_panes()) else {
        return vec!["looper: no tmux server is running: no finished farm windows to close".into()];
    };
    let mut lines = Vec::new();
    let mut closed = 0;
    for w in farm_windows(&listing).into_iter().filter(|w| w.all_dead) {
        let place = format!("{}:{}", w.session, w.name);
        match verdict(&w.run_dir) {
            Ok(why) => match tmux::output(KillWindow::new().target_window(w.id.as_str()).build()) {
                Ok(_) => {
                    closed += 1;
                    lines.push(format!("closed tmux window {place} ({why})"));
                }
                Err(e) => lines.push(format!("cannot close tmux window {place}: {e}")),
            },
            Err(why) => lines.push(format!("kept tmux window {place}: {why}")),
        }
    }
    if closed == 0 && lines.is_empty() {
        lines.push("no finished farm windows to close".into());
    }
    lines
        .into_iter()
        .map(|l| sanitize_line(&l).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_add_the_label_once() {
        assert_eq!(labelled("proj", "sweep"), "proj-sweep");
        assert_eq!(labelled("proj", "proj-codex"), "proj-codex");
        assert_eq!(labelled("proj", "proj-codex-2"), "proj-codex-2");
        assert_eq!(labelled("proj", "proj"), "proj");
        assert_eq!(labelled("proj", "projx"), "proj-projx");
        assert_eq!(labelled("proj", "a\x1b[2Jb"), "proj-a_[2Jb");
        assert_eq!(clean_name("  "), "looper");
        assert_eq!(clean_name("a\tb"), "a_b");
    }

    #[test]
    fn commands() {
        let argv = |c| tmux::argv(c);
        assert_eq!(
            argv(list_names("looper")),
            [
                "tmux",
                "list-windows",
                "-F",
                "#{window_name}",
                "-t",
                "=looper"
            ]
        );
        assert_eq!(
            argv(client_size_query(Some("%3"))),
            ["tmux", "display-message", "-p", "-t", "%3", CLIENT_SIZE]
        );
        assert_eq!(
            argv(client_size_query(None)),
            ["tmux", "display-message", "-p", CLIENT_SIZE]
        );
        let [resize, unset] = fit_commands("%4", (132, 40));
        assert_eq!(
            argv(resize),
            ["tmux", "resize-window", "-t", "%4", "-x", "132", "-y", "40"]
        );
        assert_eq!(
            argv(unset),
            ["tmux", "set-option", "-u", "-w", "-t", "%4", "window-size"]
        );
        assert_eq!(
            argv(pane_state_query("%4")),
            [
                "tmux",
                "display-message",
                "-p",
                "-t",
                "%4",
                "#{pane_dead} #{pane_dead_status}"
            ]
        );
        // A label is user text: tmux must not expand it as a format (D35).
        assert_eq!(
            argv(rename_command("%4", "p-x#{session_name}#(touch y)")),
            [
                "tmux",
                "rename-window",
                "-t",
                "%4",
                "p-x##{session_name}##(touch y)"
            ]
        );
        assert_eq!(
            argv(list_all_panes()),
            ["tmux", "list-panes", "-a", "-F", PANES]
        );
    }

    #[test]
    fn sizes_and_pane_states_are_parsed() {
        assert_eq!(
            parse_client_size("132 41 132 40"),
            Some(ClientSize {
                client: (132, 41),
                window: (132, 40)
            })
        );
        assert_eq!(parse_client_size("  132 40"), None, "no client");
        assert_eq!(parse_client_size("0 0 80 24"), None);
        assert_eq!(parse_client_size("a b c d"), None);
        assert_eq!(parse_pane_state("0 "), PaneState::Alive);
        assert_eq!(parse_pane_state("1 2"), PaneState::Dead(Some(2)));
        assert_eq!(parse_pane_state("1"), PaneState::Dead(None));
    }

    #[test]
    fn farm_windows_are_the_marked_ones_and_dead_only_when_every_pane_is() {
        let listing = "@1\t0\t\thome\tkeep\t\n\
                       @2\t1\t1\tlooper\tproj\t/r/a\n\
                       @2\t0\t1\tlooper\tproj\t/r/a\n\
                       @3\t1\t1\tlooper\tproj-b\t/r/b\n\
                       @4\t1\t1\tlooper\tfailed\t\n\
                       @5\t1\t\tmine\tlocal\t/r/c\n";
        let w = farm_windows(listing);
        let got: Vec<(&str, bool)> = w.iter().map(|w| (w.id.as_str(), w.all_dead)).collect();
        assert_eq!(got, [("@2", false), ("@3", true), ("@4", true)]);
        assert_eq!(w[1].run_dir, "/r/b");
        assert_eq!(w[1].name, "proj-b");
    }

    #[test]
    fn verdicts_follow_the_recorded_state() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, state: &str| {
            let d = tmp.path().join(name);
            std::fs::create_dir(&d).expect("mkdir");
            std::fs::write(d.join("state.json"), state).expect("state");
            d.display().to_string()
        };
        let done = write(
            "done",
            r#"{"label":"proj-codex","status":"stopped","stop_reason":"max loops reached: 2"}"#,
        );
        let live = write("live", r#"{"label":"x","status":"running"}"#);
        assert_eq!(
            verdict(&done),
            Ok("run proj-codex: stopped, max loops reached: 2".into())
        );
        assert!(verdict(&live).is_err_and(|w| w.contains("--repair-stale")));
        assert_eq!(verdict(""), Ok("its looper never started a run".into()));
        assert_eq!(
            verdict(&tmp.path().join("gone").display().to_string()),
            Ok("its run directory is gone".into())
        );
    }
}

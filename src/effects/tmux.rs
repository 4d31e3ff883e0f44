//! tmux adapter: the farm window (session, window, respawned command), the live-view split,
//! the window options the farm tooling reads (`@codex_state`, `@codex_stop_reason`,
//! `@looper_run_dir`) and retry notifications. Every command is built by a pure function
//! with `tmux_interface` (so the argv is unit-tested without tmux) and runs against the
//! server named by `$TMUX` (or `$TMUX_TMPDIR`'s default socket outside tmux). Window-state
//! calls are no-ops outside tmux.
//!
//! Text is passed to tmux literally (D35, issue 20.1). tmux expands formats in message text,
//! session and window names and start directories (`-c`), and a `#(cmd)` there runs `cmd`
//! in the tmux server, outside any agent sandbox: those arguments go through [`literal`]
//! (`#` doubled, tmux's own escape; tmux 3.3 has no literal flag for them). Option values
//! (`set-option` without `-F`), `-e` variables and command arguments are stored and passed
//! as given, so they are not escaped (a `##` would reach the farm tooling that reads
//! `@codex_stop_reason`); text shown to a person also loses its control characters
//! ([`shown`]).
//!
//! `looper status` asks each tmux server the listed runs live on, once per server, where
//! their supervisors' panes are ([`pane_windows`]), and `--watch` jumps to one
//! ([`jump_to_pane`]); both name the server by its socket (`-S`), recorded in `state.json`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;

use tmux_interface::{
    AttachSession, DisplayMessage, HasSession, KillWindow, ListPanes, LoadBuffer, NewSession,
    NewWindow, PasteBuffer, RespawnPane, SelectPane, SelectWindow, SendKeys, SetOption,
    SplitWindow, SwitchClient, Tmux, TmuxCommand,
};

use crate::engine::StopReason;

/// The manual's limit for `@codex_stop_reason`.
pub const STOP_REASON_MAX: usize = 250;

pub fn truncate_reason(reason: &str) -> String {
    reason.chars().take(STOP_REASON_MAX).collect()
}

/// An argument tmux expands as a format, made literal: every `#` doubled (`##` is tmux's
/// literal `#`), so `#(cmd)`, `#{...}` and `#W` in a directory name or an agent's message
/// are shown, never run or substituted.
pub fn literal(text: &str) -> Cow<'_, str> {
    if text.contains('#') {
        Cow::Owned(text.replace('#', "##"))
    } else {
        Cow::Borrowed(text)
    }
}

/// Text that tmux shows to a person (status line, messages): control characters, escape
/// sequences included, become `?` (tabs and line breaks a space), so an agent cannot write
/// to the operator's terminal through tmux (D35).
pub fn shown(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => ' ',
            c if c.is_control() => '?',
            c => c,
        })
        .collect()
}

/// `set-option -w -q -t <pane> <name> <value>`. tmux stores the value as given (no `-F`), so
/// only control characters are replaced: farm tooling reads it back verbatim.
pub fn set_window_option<'a>(target: &'a str, name: &'a str, value: &'a str) -> TmuxCommand<'a> {
    SetOption::new()
        .window()
        .quiet()
        .target_pane(target)
        .option(name)
        .value(shown(value))
        .build()
}

/// `display-message -t <pane> <text>`: the text is a format to tmux, so it is made literal.
pub fn display_message<'a>(target: &'a str, text: &str) -> TmuxCommand<'a> {
    DisplayMessage::new()
        .target_pane(target)
        .message(literal(&shown(text)).into_owned())
        .build()
}

/// A placeholder the new farm pane runs until it is respawned with the real command: it
/// blocks on the pane's terminal and needs no shell start-up. The window is created first
/// and respawned only after `remain-on-exit` is set on it, so a looper that fails at once
/// (a bad flag, a config error) leaves its message on screen instead of closing the window.
pub const PLACEHOLDER: &str = "cat";

/// The pane-id format printed by `-P`.
const PANE_ID: &str = "#{pane_id}";

/// tmux splits a command-line argument that ends in `;` into two commands; a `\` before
/// that `;` keeps it literal (tmux removes the backslash). Agent arguments are user data,
/// so every argument of a command we pass to tmux goes through this.
pub fn command_arg(arg: &str) -> String {
    match arg.strip_suffix(';') {
        Some(head) => format!("{head}\\;"),
        None => arg.to_string(),
    }
}

fn push_argv<'a>(cmd: &mut TmuxCommand<'a>, argv: &[String]) {
    for a in argv {
        cmd.push_param(command_arg(a));
    }
}

/// `has-session -t =<session>` (`=`: the exact name, not a prefix).
pub fn has_session(session: &str) -> TmuxCommand<'static> {
    HasSession::new()
        .target_session(format!("={session}"))
        .build()
}

/// `new-session -d -P -c <cwd> -F #{pane_id} -n <window> -s <session> [-x W -y H] cat`; the
/// names and the directory are formats to tmux, so they are made literal. `size`: the
/// client's a launch from inside tmux is typed in (issue 14.6).
pub fn new_session<'a>(
    session: &'a str,
    window: &'a str,
    cwd: &'a str,
    size: Option<(u32, u32)>,
) -> TmuxCommand<'a> {
    let mut b = NewSession::new()
        .detached()
        .print()
        .start_directory(literal(cwd))
        .format(PANE_ID)
        .window_name(literal(window))
        .session_name(literal(session));
    if let Some((w, h)) = size {
        b = b.width(w as usize).height(h as usize);
    }
    let mut cmd = b.build();
    cmd.push_param(PLACEHOLDER);
    cmd
}

/// `new-window [-d] -P -c <cwd> -F #{pane_id} -n <window> -t =<session>: cat` (name and
/// directory made literal; a target is looked up, not expanded).
pub fn new_window<'a>(
    session: &str,
    window: &'a str,
    cwd: &'a str,
    detached: bool,
) -> TmuxCommand<'a> {
    let mut b = NewWindow::new();
    if detached {
        b = b.detached();
    }
    let mut cmd = b
        .print()
        .start_directory(literal(cwd))
        .format(PANE_ID)
        .window_name(literal(window))
        .target_window(format!("={session}:"))
        .build();
    cmd.push_param(PLACEHOLDER);
    cmd
}

/// `respawn-pane -k -c <cwd> [-e K=V]... -t <pane> <argv>...`: the command as separate
/// arguments, which tmux executes directly (never through a shell). Only the directory is a
/// format to tmux; variables and arguments are passed as given.
pub fn respawn_pane<'a>(
    pane: &'a str,
    cwd: &'a str,
    env: &[(String, String)],
    argv: &[String],
) -> TmuxCommand<'a> {
    let mut cmd = RespawnPane::new()
        .kill()
        .start_directory(literal(cwd))
        .build();
    for (k, v) in env {
        cmd.push_option("-e", format!("{k}={v}"));
    }
    cmd.push_option("-t", pane);
    push_argv(&mut cmd, argv);
    cmd
}

/// `kill-window -t <target>`: undo a farm window whose command could not start.
pub fn kill_window(target: &str) -> TmuxCommand<'_> {
    KillWindow::new().target_window(target).build()
}

/// `display-message -p -t <pane> '#{window_width} #{window_height}'`.
pub fn window_size(pane: &str) -> TmuxCommand<'_> {
    DisplayMessage::new()
        .print()
        .target_pane(pane)
        .message("#{window_width} #{window_height}")
        .build()
}

/// `split-window -d -h|-v -P -F #{pane_id} -l 35% -t <pane> <argv>...`: the live view.
pub fn split_window<'a>(pane: &'a str, horizontal: bool, argv: &[String]) -> TmuxCommand<'a> {
    let b = SplitWindow::new().detached();
    let b = if horizontal {
        b.horizontal()
    } else {
        b.vertical()
    };
    let mut cmd = b.print().format(PANE_ID).build();
    // `-l 35%` by hand: the builder's percentage form emits the `-p` tmux 3.1 deprecated.
    cmd.push_option("-l", "35%");
    cmd.push_option("-t", pane);
    push_argv(&mut cmd, argv);
    cmd
}

/// `attach-session -t =<session>` (from outside tmux).
pub fn attach_session(session: &str) -> TmuxCommand<'static> {
    AttachSession::new()
        .target_session(format!("={session}"))
        .build()
}

/// `switch-client -t =<session>` (from inside tmux: attaching would nest).
pub fn switch_client(session: &str) -> TmuxCommand<'static> {
    SwitchClient::new()
        .target_session(format!("={session}"))
        .build()
}

/// Where a pane is: the session, the window's index and the window's name, as tmux has them
/// (names are the user's or an agent's text: sanitise before showing them, D35).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaneWindow {
    pub session: String,
    pub index: u32,
    pub name: String,
}

impl PaneWindow {
    /// `session:index`, the tmux target of the window.
    pub fn target(&self) -> String {
        format!("{}:{}", self.session, self.index)
    }
}

/// One line per pane: the fixed-form fields first, the names last (a window name may hold
/// a tab; a session name cannot hold `:` or `.`, which tmux replaces).
const PANE_WINDOW: &str = "#{pane_id}\t#{window_index}\t#{session_name}\t#{window_name}";

/// `tmux -S <socket> list-panes -a -F <PANE_WINDOW>`: every pane of one server.
pub fn list_panes(socket: &str) -> Tmux<'_> {
    Tmux::new()
        .socket_path(socket)
        .command(ListPanes::new().all().format(PANE_WINDOW).build())
}

/// `list-panes` output as pane id -> window; lines that do not parse are skipped.
pub fn parse_pane_windows(text: &str) -> HashMap<String, PaneWindow> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(4, '\t');
            let pane = f.next()?;
            let index = f.next()?.parse().ok()?;
            let session = f.next()?;
            let name = f.next()?;
            pane.starts_with('%').then(|| {
                (
                    pane.to_string(),
                    PaneWindow {
                        session: session.to_string(),
                        index,
                        name: name.to_string(),
                    },
                )
            })
        })
        .collect()
}

/// Every pane of the server on `socket` and its window: one `list-panes` call. A server
/// that is gone (or a socket that is no server) is tmux's complaint.
pub fn pane_windows(socket: &str) -> std::result::Result<HashMap<String, PaneWindow>, String> {
    run_tmux(list_panes(socket), None).map(|out| parse_pane_windows(&out))
}

/// `tmux -S <socket> switch-client -t <pane>`: the current client goes to the pane's session,
/// window and pane.
pub fn switch_client_to(socket: &str, pane: &str) -> Tmux<'static> {
    Tmux::new()
        .socket_path(socket.to_string())
        .command(SwitchClient::new().target_session(pane.to_string()).build())
}

/// `tmux -S <socket> select-window -t <pane>` then `select-pane -t <pane>`: the pane becomes
/// current in its own session, for a server with no client to switch.
pub fn select_pane_window(socket: &str, pane: &str) -> [Tmux<'static>; 2] {
    let on = || Tmux::new().socket_path(socket.to_string());
    [
        on().command(SelectWindow::new().target_window(pane.to_string()).build()),
        on().command(SelectPane::new().target_pane(pane.to_string()).build()),
    ]
}

/// How [`jump_to_pane`] got there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jumped {
    /// The client was switched to the pane.
    Switched,
    /// No client could be switched; the pane's window and the pane were made current.
    Selected,
}

/// Go to `pane` on the server at `socket` from inside that server: `switch-client`, or when
/// there is no client to switch, `select-window` and `select-pane`.
pub fn jump_to_pane(socket: &str, pane: &str) -> std::result::Result<Jumped, String> {
    let switch = run_tmux(switch_client_to(socket, pane), None);
    if switch.is_ok() {
        return Ok(Jumped::Switched);
    }
    for cmd in select_pane_window(socket, pane) {
        run_tmux(cmd, None)?;
    }
    Ok(Jumped::Selected)
}

/// The command a person types to reach `pane` from outside its server:
/// `tmux -S <socket> attach -t <pane>`, quoted for a POSIX shell.
pub fn attach_command(socket: &str, pane: &str) -> String {
    let q = |s: &str| {
        shlex::try_quote(s)
            .map(Cow::into_owned)
            .unwrap_or_else(|_| format!("'{}'", s.replace('\0', "")))
    };
    // A pane id (`%5`) needs no quotes in any shell; anything else gets them.
    let pane =
        if pane.len() > 1 && pane[1..].bytes().all(|b| b.is_ascii_digit()) && pane.starts_with('%')
        {
            pane.to_string()
        } else {
            q(pane)
        };
    format!("tmux -S {} attach -t {pane}", q(socket))
}

/// Does `$TMUX` (`<socket>,<pid>,<session>`) name the server at `socket`?
pub fn same_server(tmux_env: Option<&str>, socket: &str) -> bool {
    let Some(mine) = tmux_env
        .and_then(|t| t.split(',').next())
        .filter(|s| !s.is_empty())
    else {
        return false;
    };
    if mine == socket {
        return true;
    }
    // The same socket under two spellings (a symlinked /tmp, a relative TMUX_TMPDIR).
    matches!(
        (std::fs::canonicalize(mine), std::fs::canonicalize(socket)),
        (Ok(a), Ok(b)) if a == b
    )
}

/// Side by side when the window is wide enough for two readable columns, else stacked.
pub fn split_horizontally(width: u32, height: u32) -> bool {
    width >= 160 && width >= height * 3
}

/// The argv a whole `tmux` invocation runs as (for tests).
pub fn tmux_argv(tmux: Tmux<'_>) -> Vec<String> {
    tmux.build()
        .to_vec()
        .into_iter()
        .map(|c| c.into_owned())
        .collect()
}

/// The argv a command runs as (for tests and logs).
pub fn argv(cmd: TmuxCommand<'_>) -> Vec<String> {
    let mut v: Vec<String> = vec!["tmux".into()];
    v.extend(
        Tmux::with_command(cmd)
            .build()
            .to_vec()
            .into_iter()
            .skip(1)
            .map(|c| c.into_owned()),
    );
    v
}

/// Best effort: window options are advisory, a failure must not disturb the run.
fn fire(cmd: TmuxCommand<'_>) {
    let _ = succeeds(cmd);
}

/// Run a command and return its trimmed stdout, or tmux's complaint.
pub fn output(cmd: TmuxCommand<'_>) -> std::result::Result<String, String> {
    run(cmd, None)
}

/// Run a command with `input` on its stdin (text for `load-buffer -`, never argv or a
/// shell, D12) and return its trimmed stdout, or tmux's complaint.
pub fn run(cmd: TmuxCommand<'_>, input: Option<&[u8]>) -> std::result::Result<String, String> {
    run_tmux(Tmux::with_command(cmd), input)
}

/// [`run`] for a whole `tmux` invocation (one with a socket of its own, `-S`).
pub fn run_tmux(tmux: Tmux<'_>, input: Option<&[u8]>) -> std::result::Result<String, String> {
    use std::io::Write;
    let mut c = tmux.into_command();
    c.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = c.spawn().map_err(|e| format!("cannot run tmux: {e}"))?;
    if let (Some(data), Some(mut pipe)) = (input, child.stdin.take()) {
        pipe.write_all(data)
            .map_err(|e| format!("cannot write to tmux: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("cannot run tmux: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(if err.is_empty() {
            format!("tmux exited with {}", out.status)
        } else {
            err
        })
    }
}

/// Pasting text into a pane: `load-buffer -` (the text on stdin), a bracketed
/// `paste-buffer` that deletes the buffer, then Enter. Used for hybrid prompts and `/btw`
/// notes; callers may pause before the Enter while a large paste settles.
pub fn paste_commands<'a>(buffer: &'a str, pane: &'a str) -> [TmuxCommand<'a>; 3] {
    [
        LoadBuffer::new().buffer_name(buffer).path("-").build(),
        PasteBuffer::new()
            .bracket_codes()
            .delete()
            .buffer_name(buffer)
            .target_pane(pane)
            .build(),
        SendKeys::new().target_pane(pane).key("Enter").build(),
    ]
}

/// Run a command with this terminal (attach, switch) and return its exit code.
pub fn interactive(cmd: TmuxCommand<'_>) -> std::result::Result<i32, String> {
    let status = Tmux::with_command(cmd)
        .into_command()
        .status()
        .map_err(|e| format!("cannot run tmux: {e}"))?;
    Ok(status.code().unwrap_or(1))
}

/// Did a command succeed (output discarded)?
pub fn succeeds(cmd: TmuxCommand<'_>) -> bool {
    let mut c = Tmux::with_command(cmd).into_command();
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c.status().is_ok_and(|s| s.success())
}

/// The supervisor's tmux window, when there is one.
pub struct WindowState {
    pane: Option<String>,
}

impl WindowState {
    /// The window of `pane` (the supervisor's `$TMUX_PANE`, from the invocation), if any.
    pub fn new(pane: Option<String>, run_dir: &Path) -> Self {
        let me = Self {
            pane: pane.filter(|p| !p.is_empty()),
        };
        if let Some(p) = &me.pane {
            let dir = run_dir.display().to_string();
            fire(set_window_option(p, "@looper_run_dir", &dir));
        }
        me
    }

    /// Open the live view beside the supervisor's pane (D25): `remain-on-exit` on the
    /// window, then a detached split running `<this binary> live-view`. Returns the new
    /// pane's id; an error when not in tmux or when tmux refused, so the caller can keep
    /// the transcript in the supervisor pane instead.
    pub fn open_live_view(&self, run_dir: &Path) -> std::result::Result<String, String> {
        let pane = self.pane.as_deref().ok_or("not inside tmux")?;
        let exe = std::env::current_exe().map_err(|e| format!("cannot locate this binary: {e}"))?;
        let argv = [
            exe.display().to_string(),
            "live-view".into(),
            "--run-dir".into(),
            run_dir.display().to_string(),
            "--supervisor-pid".into(),
            std::process::id().to_string(),
        ];
        fire(set_window_option(pane, "remain-on-exit", "on"));
        let horizontal = output(window_size(pane)).ok().is_some_and(|s| {
            let mut it = s.split_whitespace().map(|n| n.parse::<u32>().unwrap_or(0));
            split_horizontally(it.next().unwrap_or(0), it.next().unwrap_or(0))
        });
        let id = output(split_window(pane, horizontal, &argv))?;
        match id.lines().last() {
            Some(id) if id.starts_with('%') => Ok(id.to_string()),
            _ => Err(format!("tmux printed no pane id: {id:?}")),
        }
    }

    pub fn set_running(&self) {
        if let Some(p) = &self.pane {
            fire(set_window_option(p, "@codex_stop_reason", ""));
            fire(set_window_option(p, "@codex_state", "RUN"));
        }
    }

    pub fn retrying(&self, status: &str, wait: f64, notify_after: f64) {
        if let Some(p) = &self.pane {
            let text = truncate_reason(status);
            fire(set_window_option(p, "@codex_stop_reason", &text));
            fire(set_window_option(p, "@codex_state", "RUN"));
            if notify_after > 0.0 && wait >= notify_after {
                let msg = format!("Looper retry wait: {text}");
                fire(display_message(p, &msg));
            }
        }
    }

    /// The reason is written before the state, so whoever sees the final state also sees
    /// why. Every stop writes it, max loops and dry run too (issue 14.6: the reference left
    /// it empty for those, so a finished window did not say why it stopped).
    pub fn finish(&self, reason: &StopReason) {
        if let Some(p) = &self.pane {
            let text = truncate_reason(&reason.reason());
            fire(set_window_option(p, "@codex_stop_reason", &text));
            fire(set_window_option(p, "@codex_state", reason.window_state()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_option_argv_uses_long_names() {
        assert_eq!(
            argv(set_window_option("%3", "@codex_state", "RUN")),
            [
                "tmux",
                "set-option",
                "-q",
                "-w",
                "-t",
                "%3",
                "@codex_state",
                "RUN"
            ]
        );
        assert_eq!(
            argv(display_message("%3", "Looper retry wait: x")),
            [
                "tmux",
                "display-message",
                "-t",
                "%3",
                "Looper retry wait: x"
            ]
        );
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn farm_window_commands() {
        assert_eq!(
            argv(has_session("looper")),
            ["tmux", "has-session", "-t", "=looper"]
        );
        assert_eq!(
            argv(new_session("looper", "proj", "/p", None)),
            [
                "tmux",
                "new-session",
                "-d",
                "-P",
                "-c",
                "/p",
                "-F",
                "#{pane_id}",
                "-n",
                "proj",
                "-s",
                "looper",
                "cat"
            ]
        );
        assert_eq!(
            argv(new_window("looper", "proj", "/p", true)),
            [
                "tmux",
                "new-window",
                "-d",
                "-P",
                "-c",
                "/p",
                "-F",
                "#{pane_id}",
                "-n",
                "proj",
                "-t",
                "=looper:",
                "cat"
            ]
        );
        assert_eq!(
            argv(new_window("looper", "proj", "/p", false)),
            [
                "tmux",
                "new-window",
                "-P",
                "-c",
                "/p",
                "-F",
                "#{pane_id}",
                "-n",
                "proj",
                "-t",
                "=looper:",
                "cat"
            ]
        );
        let env = vec![("PATH".to_string(), "/bin".to_string())];
        assert_eq!(
            argv(respawn_pane(
                "%4",
                "/p",
                &env,
                &strings(&["/bin/looper", "--local", "--", "x;"])
            )),
            [
                "tmux",
                "respawn-pane",
                "-k",
                "-c",
                "/p",
                "-e",
                "PATH=/bin",
                "-t",
                "%4",
                "/bin/looper",
                "--local",
                "--",
                "x\\;"
            ]
        );
        assert_eq!(
            argv(set_window_option("%4", "remain-on-exit", "on")),
            [
                "tmux",
                "set-option",
                "-q",
                "-w",
                "-t",
                "%4",
                "remain-on-exit",
                "on"
            ]
        );
        assert_eq!(argv(kill_window("%4")), ["tmux", "kill-window", "-t", "%4"]);
        assert_eq!(
            argv(attach_session("looper")),
            ["tmux", "attach-session", "-t", "=looper"]
        );
        assert_eq!(
            argv(switch_client("looper")),
            ["tmux", "switch-client", "-t", "=looper"]
        );
    }

    #[test]
    fn live_view_split_commands() {
        let cmd = strings(&[
            "/bin/looper",
            "live-view",
            "--run-dir",
            "/r",
            "--supervisor-pid",
            "42",
        ]);
        assert_eq!(
            argv(split_window("%1", false, &cmd)),
            [
                "tmux",
                "split-window",
                "-d",
                "-v",
                "-P",
                "-F",
                "#{pane_id}",
                "-l",
                "35%",
                "-t",
                "%1",
                "/bin/looper",
                "live-view",
                "--run-dir",
                "/r",
                "--supervisor-pid",
                "42"
            ]
        );
        assert_eq!(argv(split_window("%1", true, &cmd))[3], "-h");
        assert_eq!(
            argv(window_size("%1")),
            [
                "tmux",
                "display-message",
                "-p",
                "-t",
                "%1",
                "#{window_width} #{window_height}"
            ]
        );
        assert!(split_horizontally(200, 50));
        assert!(!split_horizontally(80, 24));
    }

    #[test]
    fn trailing_semicolons_stay_literal() {
        assert_eq!(command_arg("a;"), "a\\;");
        assert_eq!(command_arg(";"), "\\;");
        assert_eq!(command_arg("a;b"), "a;b");
        assert_eq!(command_arg("a\\;"), "a\\\\;");
    }

    #[test]
    fn paste_is_bracketed_from_stdin_then_enter() {
        let argv: Vec<Vec<String>> = paste_commands("buf", "%7").into_iter().map(argv).collect();
        assert_eq!(argv[0], ["tmux", "load-buffer", "-b", "buf", "-"]);
        assert_eq!(
            argv[1],
            ["tmux", "paste-buffer", "-d", "-p", "-b", "buf", "-t", "%7"]
        );
        assert_eq!(argv[2], ["tmux", "send-keys", "-t", "%7", "Enter"]);
    }

    #[test]
    fn text_tmux_expands_is_made_literal_and_option_values_are_kept() {
        // Formats (names, start directories, messages): every `#` doubled.
        assert_eq!(
            argv(new_window("looper", "p#(touch x)#W", "/d/#{pane_id}", true)),
            [
                "tmux",
                "new-window",
                "-d",
                "-P",
                "-c",
                "/d/##{pane_id}",
                "-F",
                "#{pane_id}",
                "-n",
                "p##(touch x)##W",
                "-t",
                "=looper:",
                "cat"
            ]
        );
        let ns = argv(new_session("s#1", "w#2", "/c#3", None));
        assert_eq!(
            &ns[5..12],
            ["/c##3", "-F", "#{pane_id}", "-n", "w##2", "-s", "s##1"]
        );
        assert_eq!(argv(respawn_pane("%4", "/c#(x)", &[], &[]))[4], "/c##(x)");
        assert_eq!(
            argv(display_message(
                "%3",
                "retry: #(touch f)\x1b]52;c;AAAA\x07\nnext"
            )),
            [
                "tmux",
                "display-message",
                "-t",
                "%3",
                "retry: ##(touch f)?]52;c;AAAA? next"
            ]
        );
        // Option values are stored as given (no -F): only control characters go.
        assert_eq!(
            argv(set_window_option(
                "%3",
                "@codex_stop_reason",
                "a #(b)\x1b[2J"
            ))[7],
            "a #(b)?[2J"
        );
        assert_eq!(literal("plain"), "plain");
        assert!(matches!(literal("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn status_asks_one_server_by_its_socket_and_jumps_by_pane() {
        assert_eq!(
            tmux_argv(list_panes("/tmp/tmux-1/default")),
            [
                "tmux",
                "-S",
                "/tmp/tmux-1/default",
                "list-panes",
                "-a",
                "-F",
                "#{pane_id}\t#{window_index}\t#{session_name}\t#{window_name}"
            ]
        );
        assert_eq!(
            tmux_argv(switch_client_to("/s", "%5")),
            ["tmux", "-S", "/s", "switch-client", "-t", "%5"]
        );
        let [w, p] = select_pane_window("/s", "%5");
        assert_eq!(
            tmux_argv(w),
            ["tmux", "-S", "/s", "select-window", "-t", "%5"]
        );
        assert_eq!(
            tmux_argv(p),
            ["tmux", "-S", "/s", "select-pane", "-t", "%5"]
        );
        assert_eq!(
            attach_command("/tmp/my tmux/default", "%5"),
            "tmux -S '/tmp/my tmux/default' attach -t %5"
        );
    }

    #[test]
    fn pane_lines_map_panes_to_windows_and_odd_lines_are_skipped() {
        let text = "%0\t1\tlooper\tmyrepo\n%3\t2\tB\twith\ttab\nnot a pane\n%9\tx\ts\tw\n";
        let m = parse_pane_windows(text);
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!(
            m["%0"],
            PaneWindow {
                session: "looper".into(),
                index: 1,
                name: "myrepo".into()
            }
        );
        assert_eq!(m["%0"].target(), "looper:1");
        assert_eq!(m["%3"].name, "with\ttab");
    }

    #[test]
    fn the_same_server_is_the_socket_in_tmux_env() {
        assert!(same_server(
            Some("/tmp/tmux-0/default,123,0"),
            "/tmp/tmux-0/default"
        ));
        assert!(!same_server(
            Some("/tmp/tmux-0/other,123,0"),
            "/tmp/tmux-0/default"
        ));
        assert!(!same_server(None, "/tmp/tmux-0/default"));
        assert!(!same_server(Some(""), "/tmp/tmux-0/default"));
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("sock");
        std::fs::write(&real, "").expect("write");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let env = format!("{},1,0", link.display());
        assert!(same_server(Some(&env), &real.display().to_string()));
    }

    #[test]
    fn stop_reason_is_truncated_to_250_chars() {
        let long = "é".repeat(400);
        assert_eq!(truncate_reason(&long).chars().count(), 250);
    }
}

//! tmux adapter: the farm window (session, window, respawned command), the live-view split,
//! the window options the farm tooling reads (`@codex_state`, `@codex_stop_reason`,
//! `@looper_run_dir`) and retry notifications. Every command is built by a pure function
//! with `tmux_interface` (so the argv is unit-tested without tmux) and runs against the
//! server named by `$TMUX` (or `$TMUX_TMPDIR`'s default socket outside tmux). Window-state
//! calls are no-ops outside tmux.

use std::path::Path;
use std::process::Stdio;

use tmux_interface::{
    AttachSession, CapturePane, DisplayMessage, HasSession, KillPane, KillWindow, LoadBuffer,
    NewSession, NewWindow, PasteBuffer, RespawnPane, SendKeys, SetOption, SplitWindow,
    SwitchClient, Tmux, TmuxCommand,
};

use crate::engine::StopReason;

/// The manual's limit for `@codex_stop_reason`.
pub const STOP_REASON_MAX: usize = 250;

/// True when hybrid panes can be driven by this build.
pub fn hybrid_supported() -> bool {
    false
}

pub fn truncate_reason(reason: &str) -> String {
    reason.chars().take(STOP_REASON_MAX).collect()
}

/// `set-option -w -q -t <pane> <name> <value>`.
pub fn set_window_option<'a>(target: &'a str, name: &'a str, value: &'a str) -> TmuxCommand<'a> {
    SetOption::new()
        .window()
        .quiet()
        .target_pane(target)
        .option(name)
        .value(value)
        .build()
}

/// `display-message -t <pane> <text>`.
pub fn display_message<'a>(target: &'a str, text: &'a str) -> TmuxCommand<'a> {
    DisplayMessage::new()
        .target_pane(target)
        .message(text)
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

/// `new-session -d -P -c <cwd> -F #{pane_id} -n <window> -s <session> cat`.
pub fn new_session<'a>(session: &'a str, window: &'a str, cwd: &'a str) -> TmuxCommand<'a> {
    let mut cmd = NewSession::new()
        .detached()
        .print()
        .start_directory(cwd)
        .format(PANE_ID)
        .window_name(window)
        .session_name(session)
        .build();
    cmd.push_param(PLACEHOLDER);
    cmd
}

/// `new-window [-d] -P -c <cwd> -F #{pane_id} -n <window> -t =<session>: cat`.
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
        .start_directory(cwd)
        .format(PANE_ID)
        .window_name(window)
        .target_window(format!("={session}:"))
        .build();
    cmd.push_param(PLACEHOLDER);
    cmd
}

/// `respawn-pane -k -c <cwd> [-e K=V]... -t <pane> <argv>...`: the command as separate
/// arguments, which tmux executes directly (never through a shell).
pub fn respawn_pane<'a>(
    pane: &'a str,
    cwd: &'a str,
    env: &[(String, String)],
    argv: &[String],
) -> TmuxCommand<'a> {
    let mut cmd = RespawnPane::new().kill().start_directory(cwd).build();
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

/// Side by side when the window is wide enough for two readable columns, else stacked.
pub fn split_horizontally(width: u32, height: u32) -> bool {
    width >= 160 && width >= height * 3
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

fn run(cmd: TmuxCommand<'_>) {
    let mut c = Tmux::with_command(cmd).into_command();
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _ = c.status();
}

/// Run a command and return its trimmed stdout, or tmux's complaint.
pub fn output(cmd: TmuxCommand<'_>) -> std::result::Result<String, String> {
    let mut c = Tmux::with_command(cmd).into_command();
    c.stdin(Stdio::null());
    let out = c.output().map_err(|e| format!("cannot run tmux: {e}"))?;
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
    pub fn new(run_dir: &Path) -> Self {
        let pane = std::env::var("TMUX")
            .ok()
            .filter(|t| !t.is_empty())
            .and_then(|_| std::env::var("TMUX_PANE").ok())
            .filter(|p| !p.is_empty());
        let me = Self { pane };
        if let Some(p) = &me.pane {
            let dir = run_dir.display().to_string();
            run(set_window_option(p, "@looper_run_dir", &dir));
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
        run(set_window_option(pane, "remain-on-exit", "on"));
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
            run(set_window_option(p, "@codex_stop_reason", ""));
            run(set_window_option(p, "@codex_state", "RUN"));
        }
    }

    pub fn retrying(&self, status: &str, wait: f64, notify_after: f64) {
        if let Some(p) = &self.pane {
            let text = truncate_reason(status);
            run(set_window_option(p, "@codex_stop_reason", &text));
            run(set_window_option(p, "@codex_state", "RUN"));
            if notify_after > 0.0 && wait >= notify_after {
                let msg = format!("Looper retry wait: {text}");
                run(display_message(p, &msg));
            }
        }
    }

    /// The reason is written before the state, so whoever sees the final state also sees
    /// why.
    pub fn finish(&self, reason: &StopReason) {
        if let Some(p) = &self.pane {
            if !matches!(reason, StopReason::MaxLoops(_) | StopReason::DryRun) {
                let text = truncate_reason(&reason.reason());
                run(set_window_option(p, "@codex_stop_reason", &text));
            }
            run(set_window_option(p, "@codex_state", reason.window_state()));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Hybrid claude (D26): the building blocks for running claude's own TUI in a pane. The pane
// runs `claude --session-id <uuid>`, so the transcript file is known exactly; prompts are
// pasted bracketed; a turn ends when the transcript has a new assistant record that ends
// the turn and the pane is idle. Not yet driven by the driver (`hybrid_supported` is false).
// ---------------------------------------------------------------------------------------

/// The agent pane's share of the window (reference 5.1).
pub const AGENT_PANE_SIZE: &str = "70%";

/// `claude --session-id <uuid> [extra args]`: the interactive TUI with a known identity.
pub fn claude_pane_argv(executable: &str, session_id: &str, extra: &[String]) -> Vec<String> {
    let mut v = vec![
        executable.to_string(),
        "--session-id".into(),
        session_id.to_string(),
    ];
    v.extend(extra.iter().cloned());
    v
}

/// `split-window -d -v -P -F #{pane_id} -l 70% -c <cwd> [-e K=V]... -t <pane> <argv>...`.
pub fn agent_pane<'a>(
    pane: &'a str,
    cwd: &'a str,
    env: &[(String, String)],
    argv: &[String],
) -> TmuxCommand<'a> {
    let mut cmd = SplitWindow::new()
        .detached()
        .vertical()
        .print()
        .format(PANE_ID)
        .build();
    cmd.push_option("-l", AGENT_PANE_SIZE);
    cmd.push_option("-c", cwd);
    for (k, v) in env {
        cmd.push_option("-e", format!("{k}={v}"));
    }
    cmd.push_option("-t", pane);
    push_argv(&mut cmd, argv);
    cmd
}

/// `load-buffer -b <buffer> -`: the prompt comes on stdin, never in argv (reference 5.3).
pub fn load_buffer(buffer: &str) -> TmuxCommand<'_> {
    LoadBuffer::new().buffer_name(buffer).path("-").build()
}

/// `paste-buffer -d -p -b <buffer> -t <pane>`: bracketed, so newlines do not submit.
pub fn paste_buffer<'a>(buffer: &'a str, pane: &'a str) -> TmuxCommand<'a> {
    PasteBuffer::new()
        .delete()
        .bracket_codes()
        .buffer_name(buffer)
        .target_pane(pane)
        .build()
}

/// `send-keys -t <pane> Enter`.
pub fn send_enter(pane: &str) -> TmuxCommand<'_> {
    SendKeys::new().target_pane(pane).key("Enter").build()
}

/// `capture-pane -p -S -220 -t <pane>`: the visible screen and some history, as text.
pub fn capture_pane(pane: &str) -> TmuxCommand<'_> {
    CapturePane::new()
        .stdout()
        .start_line("-220")
        .target_pane(pane)
        .build()
}

/// `kill-pane -t <pane>`.
pub fn kill_pane(pane: &str) -> TmuxCommand<'_> {
    KillPane::new().target_pane(pane).build()
}

/// How long to let a pasted prompt settle before Enter (reference 5.3).
pub fn paste_settle(bytes: usize) -> std::time::Duration {
    std::time::Duration::from_secs_f64((0.25 + bytes as f64 / 50_000.0).min(2.0))
}

/// What the agent pane looks like it is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaneState {
    Ready,
    Run,
    Err,
}

/// Remove CSI escape sequences (colours, cursor moves) from a capture.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for d in chars.by_ref() {
                if ('@'..='~').contains(&d) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Classify a claude pane capture (reference 5.6): an empty screen is an error; a prompt
/// line or a numbered choice is ready; a spinner with `…` is running; anything else ready.
pub fn classify_claude_pane(capture: &str) -> PaneState {
    let text = strip_ansi(capture);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect();
    if lines.is_empty() {
        return PaneState::Err;
    }
    let tail = &lines[lines.len().saturating_sub(50)..];
    let choice = tail.iter().any(|l| {
        l.trim_start()
            .strip_prefix('❯')
            .map(str::trim_start)
            .is_some_and(|r| {
                r.chars().next().is_some_and(|c| c.is_ascii_digit()) && r.contains('.')
            })
    });
    let last = lines[lines.len() - 1].trim_matches(|c: char| c == ' ' || c == '\u{a0}');
    if choice || last == ">" {
        return PaneState::Ready;
    }
    const SPINNER: [char; 10] = ['✻', '✽', '✶', '✳', '✢', '·', '*', '⏺', '✺', '●'];
    const WORDS: [&str; 7] = [
        "thinking",
        "processing",
        "reading",
        "writing",
        "searching",
        "running",
        "working",
    ];
    let running = tail.iter().any(|l| {
        let t = l.trim_start();
        let lower = t.to_lowercase();
        let spinner = t.starts_with(SPINNER) && t.contains('…');
        (spinner
            && (lower.contains("esc to interrupt")
                || ["tokens", "thinking", "effort", "s)"]
                    .iter()
                    .any(|w| lower.contains(w))))
            || WORDS
                .iter()
                .any(|w| lower.starts_with(w) && t.contains('…'))
    });
    if running {
        PaneState::Run
    } else {
        PaneState::Ready
    }
}

fn record_role(v: &serde_json::Value) -> Option<&str> {
    v.pointer("/message/role")
        .and_then(serde_json::Value::as_str)
        .or_else(|| v.get("type").and_then(serde_json::Value::as_str))
}

/// Did the turn end? `records` are the transcript records written since the prompt was
/// sent. It needs the prompt's user record and an assistant record that ends the turn
/// (not `tool_use`/`pause_turn`); a running-looking pane is overridden only by an explicit
/// terminal stop reason (reference 5.4).
pub fn claude_turn_done(records: &[serde_json::Value], pane: PaneState) -> bool {
    let user = records.iter().any(|r| record_role(r) == Some("user"));
    let Some(last) = records
        .iter()
        .rev()
        .find(|r| record_role(r) == Some("assistant"))
    else {
        return false;
    };
    let stop = last
        .pointer("/message/stop_reason")
        .and_then(serde_json::Value::as_str);
    let continues = matches!(stop, Some("tool_use" | "pause_turn"));
    user && match pane {
        PaneState::Err => false,
        PaneState::Run => stop.is_some() && !continues,
        PaneState::Ready => !continues,
    }
}

/// claude's configuration directory: `CLAUDE_CONFIG_DIR`, else `~/.claude`.
pub fn claude_config_dir(
    env: &std::collections::BTreeMap<String, String>,
) -> Option<std::path::PathBuf> {
    env.get("CLAUDE_CONFIG_DIR")
        .filter(|v| !v.trim().is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| env.get("HOME").map(|h| Path::new(h).join(".claude")))
}

/// claude's project directory name for a working directory: every character that is not
/// an ASCII letter or digit becomes `-`.
pub fn claude_project_dir(cwd: &Path) -> String {
    cwd.display()
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// The session's transcript: `<config>/projects/<project>/<uuid>.jsonl`; if claude named
/// the project directory differently, the file with exactly that session id in any project
/// directory (the id is a fresh uuid, so this is still exact, never a guess by mtime).
pub fn claude_transcript(
    config_dir: &Path,
    cwd: &Path,
    session_id: &str,
) -> Option<std::path::PathBuf> {
    let file = format!("{session_id}.jsonl");
    let projects = config_dir.join("projects");
    let expected = projects.join(claude_project_dir(cwd)).join(&file);
    if expected.is_file() {
        return Some(expected);
    }
    std::fs::read_dir(&projects)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join(&file))
        .find(|p| p.is_file())
}

/// Run a command on `socket` (a private server, for tests) or the server `$TMUX` names.
fn output_on(socket: Option<&Path>, cmd: TmuxCommand<'_>) -> std::result::Result<String, String> {
    let Some(s) = socket else { return output(cmd) };
    let mut c = Tmux::new()
        .socket_path(s.display().to_string())
        .command(cmd)
        .into_command();
    c.stdin(Stdio::null());
    let out = c.output().map_err(|e| format!("cannot run tmux: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// One claude TUI in a pane, polled by its caller: `send` a prompt, then `poll` until the
/// turn is done. New transcript lines are handed to the caller as they appear, so they can
/// go to the loop log and the stop-pattern scanner like a json agent's stdout.
pub struct ClaudePane {
    pub pane: String,
    pub session_id: String,
    config_dir: std::path::PathBuf,
    cwd: std::path::PathBuf,
    socket: Option<std::path::PathBuf>,
    transcript: Option<std::path::PathBuf>,
    offset: u64,
    partial: Vec<u8>,
    since_prompt: Vec<serde_json::Value>,
}

impl ClaudePane {
    /// Open the pane below `supervisor_pane` running `<executable> --session-id <id>`.
    #[expect(
        clippy::too_many_arguments,
        reason = "each is a distinct, named input of the pane"
    )]
    pub fn start(
        supervisor_pane: &str,
        cwd: &Path,
        config_dir: &Path,
        env: &[(String, String)],
        executable: &str,
        extra: &[String],
        session_id: &str,
        socket: Option<&Path>,
    ) -> std::result::Result<Self, String> {
        let argv = claude_pane_argv(executable, session_id, extra);
        let dir = cwd.display().to_string();
        let id = output_on(socket, agent_pane(supervisor_pane, &dir, env, &argv))?;
        let id = id.lines().last().unwrap_or_default().to_string();
        if !id.starts_with('%') {
            return Err(format!(
                "failed to start Claude hybrid pane: tmux printed {id:?}"
            ));
        }
        let _ = output_on(socket, set_window_option(&id, "remain-on-exit", "on"));
        Ok(Self {
            pane: id,
            session_id: session_id.to_string(),
            config_dir: config_dir.to_path_buf(),
            cwd: cwd.to_path_buf(),
            socket: socket.map(Path::to_path_buf),
            transcript: None,
            offset: 0,
            partial: Vec::new(),
            since_prompt: Vec::new(),
        })
    }

    pub fn state(&self) -> PaneState {
        output_on(self.socket.as_deref(), capture_pane(&self.pane))
            .map(|c| classify_claude_pane(&c))
            .unwrap_or(PaneState::Err)
    }

    /// Paste a prompt (stdin to `load-buffer`, bracketed paste, settle, Enter). Only the
    /// transcript written after this point counts towards the turn (records left over from
    /// the previous turn are read and dropped here, not counted twice).
    pub fn send(&mut self, prompt: &str, buffer: &str) -> std::result::Result<(), String> {
        self.read_new(&mut |_| {});
        self.since_prompt.clear();
        let socket = self.socket.as_ref().map(|s| s.display().to_string());
        let mut t = Tmux::new();
        if let Some(s) = &socket {
            t = t.socket_path(s.as_str());
        }
        let mut c = t.command(load_buffer(buffer)).into_command();
        c.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = c.spawn().map_err(|e| format!("cannot run tmux: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write as _;
            stdin
                .write_all(prompt.as_bytes())
                .map_err(|e| format!("failed to send prompt to Claude hybrid pane: {e}"))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("tmux load-buffer: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        output_on(self.socket.as_deref(), paste_buffer(buffer, &self.pane))?;
        std::thread::sleep(paste_settle(prompt.len()));
        output_on(self.socket.as_deref(), send_enter(&self.pane)).map(|_| ())
    }

    /// Hand new complete transcript lines to `on_line`, keeping the turn's records.
    fn read_new(&mut self, on_line: &mut dyn FnMut(&str)) {
        use std::io::{Read as _, Seek as _};
        if self.transcript.is_none() {
            self.transcript = claude_transcript(&self.config_dir, &self.cwd, &self.session_id);
        }
        let Some(path) = &self.transcript else { return };
        let Ok(mut f) = std::fs::File::open(path) else {
            return;
        };
        if f.seek(std::io::SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        let Ok(n) = f.read_to_end(&mut buf) else {
            return;
        };
        self.offset += n as u64;
        self.partial.extend_from_slice(&buf);
        while let Some(pos) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=pos).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                self.since_prompt.push(v);
            }
            on_line(&text);
        }
    }

    /// New transcript lines go to `on_line`; true once the turn is done.
    pub fn poll(&mut self, on_line: &mut dyn FnMut(&str)) -> bool {
        self.read_new(on_line);
        claude_turn_done(&self.since_prompt, self.state())
    }

    /// The transcript path, once claude has created it.
    pub fn transcript(&self) -> Option<&Path> {
        self.transcript.as_deref()
    }

    pub fn kill(&self) -> std::result::Result<(), String> {
        output_on(self.socket.as_deref(), kill_pane(&self.pane)).map(|_| ())
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
            argv(new_session("looper", "proj", "/p")),
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
    fn hybrid_pane_commands() {
        let argv = claude_pane_argv("claude", "u-1", &strings(&["--model", "opus"]));
        assert_eq!(argv, ["claude", "--session-id", "u-1", "--model", "opus"]);
        let env = vec![("CLAUDE_CONFIG_DIR".to_string(), "/c".to_string())];
        assert_eq!(
            argv_of(agent_pane("%1", "/p", &env, &argv)),
            [
                "tmux",
                "split-window",
                "-d",
                "-v",
                "-P",
                "-F",
                "#{pane_id}",
                "-l",
                "70%",
                "-c",
                "/p",
                "-e",
                "CLAUDE_CONFIG_DIR=/c",
                "-t",
                "%1",
                "claude",
                "--session-id",
                "u-1",
                "--model",
                "opus"
            ]
        );
        assert_eq!(
            argv_of(load_buffer("b1")),
            ["tmux", "load-buffer", "-b", "b1", "-"]
        );
        assert_eq!(
            argv_of(paste_buffer("b1", "%2")),
            ["tmux", "paste-buffer", "-d", "-p", "-b", "b1", "-t", "%2"]
        );
        assert_eq!(
            argv_of(send_enter("%2")),
            ["tmux", "send-keys", "-t", "%2", "Enter"]
        );
        assert_eq!(
            argv_of(capture_pane("%2")),
            ["tmux", "capture-pane", "-p", "-S", "-220", "-t", "%2"]
        );
        assert_eq!(argv_of(kill_pane("%2")), ["tmux", "kill-pane", "-t", "%2"]);
        assert_eq!(paste_settle(0).as_millis(), 250);
        assert_eq!(paste_settle(10_000_000).as_secs(), 2);
    }

    fn argv_of(cmd: TmuxCommand<'_>) -> Vec<String> {
        argv(cmd)
    }

    #[test]
    fn claude_pane_classification() {
        assert_eq!(classify_claude_pane("\n  \n"), PaneState::Err);
        assert_eq!(classify_claude_pane("welcome\n> \n"), PaneState::Ready);
        assert_eq!(
            classify_claude_pane("pick one\n❯ 1. Yes\n  2. No\n"),
            PaneState::Ready
        );
        assert_eq!(
            classify_claude_pane(
                "\u{1b}[33m✻ Thinking… (12s · esc to interrupt)\u{1b}[0m\n│ >   │\n"
            ),
            PaneState::Run
        );
        assert_eq!(
            classify_claude_pane("Reading… src/main.rs\n"),
            PaneState::Run
        );
        assert_eq!(
            classify_claude_pane("all done\n│ >   │\n"),
            PaneState::Ready
        );
    }

    #[test]
    fn claude_turn_completion() {
        let j = |s: &str| serde_json::from_str::<serde_json::Value>(s).expect("json");
        let user = j(r#"{"type":"user","message":{"role":"user","content":"do it"}}"#);
        let tool =
            j(r#"{"type":"assistant","message":{"role":"assistant","stop_reason":"tool_use"}}"#);
        let end =
            j(r#"{"type":"assistant","message":{"role":"assistant","stop_reason":"end_turn"}}"#);
        let open = j(r#"{"type":"assistant","message":{"role":"assistant","stop_reason":null}}"#);
        assert!(
            !claude_turn_done(std::slice::from_ref(&user), PaneState::Ready),
            "no answer yet"
        );
        assert!(
            !claude_turn_done(std::slice::from_ref(&end), PaneState::Ready),
            "not our prompt's turn"
        );
        assert!(
            !claude_turn_done(&[user.clone(), tool.clone()], PaneState::Ready),
            "a tool call continues"
        );
        assert!(claude_turn_done(
            &[user.clone(), tool.clone(), end.clone()],
            PaneState::Ready
        ));
        assert!(
            claude_turn_done(&[user.clone(), end.clone()], PaneState::Run),
            "terminal record wins"
        );
        assert!(!claude_turn_done(
            &[user.clone(), open.clone()],
            PaneState::Run
        ));
        assert!(
            claude_turn_done(&[user.clone(), open], PaneState::Ready),
            "idle pane, no stop reason"
        );
        assert!(!claude_turn_done(&[user, end], PaneState::Err));
    }

    #[test]
    fn claude_transcript_is_found_by_exact_session_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let env: std::collections::BTreeMap<String, String> =
            [("HOME".to_string(), "/h".to_string())]
                .into_iter()
                .collect();
        assert_eq!(
            claude_config_dir(&env),
            Some(std::path::PathBuf::from("/h/.claude"))
        );
        let mut env2 = env.clone();
        env2.insert("CLAUDE_CONFIG_DIR".into(), dir.path().display().to_string());
        assert_eq!(claude_config_dir(&env2).as_deref(), Some(dir.path()));
        assert_eq!(
            claude_project_dir(Path::new("/home/u/my.proj_x")),
            "-home-u-my-proj-x"
        );
        let cwd = Path::new("/w/p");
        assert_eq!(claude_transcript(dir.path(), cwd, "u-1"), None);
        let other = dir.path().join("projects/-w-p-renamed");
        std::fs::create_dir_all(&other).expect("mkdir");
        std::fs::write(other.join("u-1.jsonl"), "").expect("write");
        assert_eq!(
            claude_transcript(dir.path(), cwd, "u-1"),
            Some(other.join("u-1.jsonl"))
        );
        let exact = dir.path().join("projects/-w-p");
        std::fs::create_dir_all(&exact).expect("mkdir");
        std::fs::write(exact.join("u-1.jsonl"), "").expect("write");
        assert_eq!(
            claude_transcript(dir.path(), cwd, "u-1"),
            Some(exact.join("u-1.jsonl"))
        );
        assert_eq!(claude_transcript(dir.path(), cwd, "u-2"), None);
    }

    #[test]
    fn stop_reason_is_truncated_to_250_chars() {
        let long = "é".repeat(400);
        assert_eq!(truncate_reason(&long).chars().count(), 250);
    }
}

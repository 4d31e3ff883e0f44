//! The hybrid interface (D26): the agent's real TUI (claude or codex) in a tmux pane beside
//! the supervisor. Prompts are pasted (bracketed) from a tmux buffer; the TUI's own
//! transcript is the attempt's output: logged, scanned (assistant records only complete,
//! D14), counted, and it says when the turn is over.
//!
//! - claude runs with `--session-id <uuid>`, so its transcript path is known exactly; the
//!   turn ends with the `system`/`turn_duration` record.
//! - codex runs `--no-alt-screen --no-daemon`; a new session's rollout
//!   (`$CODEX_HOME/sessions/YYYY/MM/DD/rollout-<stamp>-<thread>.jsonl`) is created with its
//!   first prompt and found among the files the pane's processes hold open; a resumed one
//!   by its thread id. The turn ends with the `task_complete` (or `turn_aborted`) event.

use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tmux_interface::{
    CapturePane, DisplayMessage, KillPane, SendKeys, SetOption, SplitWindow, TmuxCommand,
};
use tokio::sync::mpsc;

use crate::agents::Stream;
use crate::effects::process::{AttemptControl, AttemptExit, OutputSink};
use crate::effects::{envfile, tmux};

mod screen;
mod transcripts;

pub use screen::Tui;
use screen::{Screen, activity, classify, dialog};
pub use transcripts::{codex_rollout, pane_transcript};
use transcripts::{newest_rollout_for, open_rollout};

/// How often the pane and the transcript are looked at.
const POLL: Duration = Duration::from_millis(100);

/// How long a ready screen must stay unchanged before a prompt is pasted.
const SETTLE: Duration = Duration::from_millis(500);

/// During a turn, the pane (each check is a tmux process) is looked at every this many polls
/// of the transcript: whether it died, and whether a dialog took the prompt.
const PANE_CHECK_POLLS: u32 = 10;

/// How long a TUI may take to show its input prompt (the reference's 60 s).
const READY_LIMIT: Duration = Duration::from_secs(60);

/// How long after the paste a new codex session may take to create its rollout.
const ROLLOUT_GRACE: Duration = Duration::from_secs(30);

/// How long the screen may stay busy after the turn's closing record.
const IDLE_LIMIT: Duration = Duration::from_secs(2);

/// Where the pane's transcript is.
#[derive(Clone, Debug, PartialEq)]
pub enum Transcript {
    /// Known before the first prompt: claude's `--session-id`, a resumed codex rollout.
    Known(PathBuf),
    /// A new codex session's rollout, created under this `sessions` folder by the first
    /// prompt, for a session begun in `cwd`.
    CodexRollout { sessions: PathBuf, cwd: PathBuf },
}

/// A running agent pane.
#[derive(Clone, Debug)]
pub struct Pane {
    pub id: String,
    pub pid: i32,
    pub tui: Tui,
    /// The agent's session id; empty for a new codex session until its rollout appears.
    pub session_id: String,
    pub transcript: Transcript,
    pub started: SystemTime,
    /// Turns the TUI has taken in this pane.
    pub turns: u32,
}

impl Pane {
    /// A new codex session's pane learns its thread id from the rollout, and from then on
    /// reads that rollout by name: later turns never look for it again.
    pub fn learn_session(&mut self, id: &str) {
        if self.session_id.is_empty() {
            self.session_id = id.to_string();
        }
        if let Transcript::CodexRollout { sessions, .. } = &self.transcript
            && let Some(path) = codex_rollout(sessions, &self.session_id)
        {
            self.transcript = Transcript::Known(path);
        }
    }
}

/// The pane's transcript, once it exists (claude's is known even before).
fn locate(pane: &Pane) -> Option<PathBuf> {
    match &pane.transcript {
        Transcript::Known(p) => Some(p.clone()),
        Transcript::CodexRollout { sessions, cwd } => {
            if Path::new("/proc/self/fd").is_dir() {
                open_rollout(pane.pid, sessions)
            } else {
                newest_rollout_for(sessions, cwd, pane.started)
            }
        }
    }
}

/// `split-window` for the agent pane: 70 % of the window, detached, in the agent's cwd,
/// running `argv` directly (no shell). The environment never goes on this command line
/// (`-e KEY=VALUE` would show a provider key in `ps`): see [`start_pane`].
pub fn split_window_command<'a>(
    target: &'a str,
    cwd: &'a str,
    argv: &'a [String],
) -> TmuxCommand<'a> {
    let mut cmd = SplitWindow::new()
        .detached()
        .horizontal()
        .print()
        .format("#{pane_id} #{pane_pid}")
        .target_pane(target)
        // A start directory is a format to tmux: `#(cmd)` in a directory name would run.
        .start_directory(tmux::literal(cwd))
        .build();
    // `-l 70%` rather than the deprecated `-p 70`.
    cmd.push_option("-l", "70%");
    for a in argv {
        cmd.push_param(a.as_str());
    }
    cmd
}

/// The pane's first command: `looper pane-exec --env-file FILE -- argv...`, which takes the
/// environment from the private file and becomes the TUI (same pid). A pane is the tmux
/// server's child, so without this it would run with the server's environment, not the
/// supervisor's: a key exported in the shell that started the looper would be missing.
fn through_env_file(looper: &Path, env_file: &Path, argv: &[String]) -> Vec<String> {
    let mut out = vec![
        looper.display().to_string(),
        "pane-exec".into(),
        "--env-file".into(),
        env_file.display().to_string(),
        "--".into(),
    ];
    out.extend(argv.iter().cloned());
    out
}

pub fn start_pane(
    target: &str,
    cwd: &Path,
    env: &[(String, String)],
    argv: &[String],
    tui: Tui,
    session_id: &str,
    transcript: Transcript,
) -> Result<Pane, String> {
    let cwd_s = cwd.display().to_string();
    let started = SystemTime::now();
    let failed = |e: String| format!("failed to start the hybrid {} pane: {e}", tui.name());
    let looper =
        std::env::current_exe().map_err(|e| failed(format!("cannot locate the looper: {e}")))?;
    let handed = EnvFile::create(env).map_err(|e| failed(e.to_string()))?;
    let command = through_env_file(&looper, &handed.path, argv);
    let out = tmux::run(split_window_command(target, &cwd_s, &command), None).map_err(failed)?;
    let line = out.lines().last().unwrap_or("").trim().to_string();
    let (id, pid) = line
        .split_once(' ')
        .ok_or_else(|| failed(format!("tmux printed {line:?}")))?;
    // Keep a crashed agent's last screen, and notice the death through #{pane_dead}.
    let _ = tmux::run(commands::remain_on_exit(id), None);
    handed.wait_taken();
    Ok(Pane {
        id: id.to_string(),
        pid: pid.parse().unwrap_or(0),
        tui,
        session_id: session_id.to_string(),
        transcript,
        started,
        turns: 0,
    })
}

/// An environment file for one pane; removed when dropped if the pane did not take it
/// (tmux failed, or the pane died before `pane-exec` ran).
struct EnvFile {
    path: PathBuf,
}

impl EnvFile {
    /// `env` is the pane's whole environment (`PaneRequest::env`); it also says where the
    /// private directory is (`XDG_RUNTIME_DIR`, `XDG_STATE_HOME`, `HOME`).
    fn create(env: &[(String, String)]) -> crate::error::Result<EnvFile> {
        let path = envfile::fresh_path(&env.iter().cloned().collect(), "env")?;
        let vars = env
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        envfile::create_private(&path, &envfile::encode_env(vars))?;
        Ok(EnvFile { path })
    }
}

impl EnvFile {
    /// Give the pane's first command (it starts right after tmux answers) a moment to take
    /// the file; `pane-exec` removes it as it does.
    fn wait_taken(&self) {
        let deadline = std::time::Instant::now() + TAKE_TIMEOUT;
        while self.path.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for EnvFile {
    /// A file left means nobody took it: its values must not stay on disk.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// How long a pane's first command gets to take its environment file.
const TAKE_TIMEOUT: Duration = Duration::from_secs(5);

pub fn kill_pane(pane: &Pane) {
    let _ = tmux::run(commands::kill_pane(&pane.id), None);
}

fn capture(pane: &Pane) -> Result<String, String> {
    tmux::run(commands::capture(&pane.id), None)
}

/// The pane's TUI has exited, or the pane is gone altogether.
pub fn is_gone(pane: &Pane) -> bool {
    pane_dead(pane).is_some()
}

/// `Some(exit status)` once the pane's process has exited.
fn pane_dead(pane: &Pane) -> Option<i32> {
    match tmux::run(commands::pane_dead(&pane.id), None) {
        Ok(s) => {
            let mut it = s.split_whitespace();
            // tmux prints an empty line, successfully, for a pane that no longer exists.
            if it.next() != Some(pane.id.as_str()) {
                return Some(1);
            }
            (it.next() == Some("1")).then(|| it.next().and_then(|c| c.parse().ok()).unwrap_or(1))
        }
        Err(_) => Some(1),
    }
}

/// The tmux commands issued to an agent pane (besides its split and the paste sequence).
mod commands {
    use super::*;

    pub fn remain_on_exit(pane: &str) -> TmuxCommand<'_> {
        SetOption::new()
            .pane()
            .quiet()
            .target_pane(pane)
            .option("remain-on-exit")
            .value("on")
            .build()
    }

    pub fn kill_pane(pane: &str) -> TmuxCommand<'_> {
        KillPane::new().target_pane(pane).build()
    }

    /// The visible screen, as text without colours.
    pub fn capture(pane: &str) -> TmuxCommand<'_> {
        CapturePane::new().stdout().target_pane(pane).build()
    }

    pub fn pane_dead(pane: &str) -> TmuxCommand<'_> {
        DisplayMessage::new()
            .print()
            .target_pane(pane)
            .message("#{pane_id} #{pane_dead} #{pane_dead_status}")
            .build()
    }

    /// Key names as tmux reads them (`Escape`, `Enter`, `2`).
    pub fn keys<'a>(pane: &'a str, keys: &[&'a str]) -> TmuxCommand<'a> {
        let mut b = SendKeys::new().target_pane(pane);
        for k in keys {
            b = b.key(*k);
        }
        b.build()
    }
}

/// Bracketed paste of `text` from a named buffer, then Enter after a settle time that
/// grows with the size of the paste (a large paste takes the TUI a moment to absorb).
async fn paste(pane: &Pane, text: &str) -> Result<(), String> {
    let buffer = format!(
        "looper-{}-{}",
        std::process::id(),
        pane.id.trim_start_matches('%')
    );
    let [load, paste, enter] = tmux::paste_commands(&buffer, &pane.id);
    tmux::run(load, Some(text.as_bytes()))?;
    tmux::run(paste, None)?;
    let settle = (0.25 + text.len() as f64 / 50_000.0).min(2.0);
    tokio::time::sleep(Duration::from_secs_f64(settle)).await;
    tmux::run(enter, None)?;
    Ok(())
}

/// Paste `text` (then Enter) if the pane shows its idle input prompt; else say what it shows.
/// For notes between turns: the supervisor's turns wait for readiness themselves.
pub fn paste_when_ready(pane: &Pane, text: &str) -> Result<(), String> {
    let screen = capture(pane)?;
    match activity(pane.tui, &screen) {
        Screen::Ready => {}
        Screen::Blocked(why) => return Err(why),
        other => {
            return Err(format!(
                "the {} pane is not at its input prompt ({other:?})",
                pane.tui.name()
            ));
        }
    }
    let buffer = format!("looper-note-{}", std::process::id());
    let [load, paste, enter] = tmux::paste_commands(&buffer, &pane.id);
    tmux::run(load, Some(text.as_bytes()))?;
    tmux::run(paste, None)?;
    // Let the TUI take the bracketed paste before Enter (as for prompts).
    std::thread::sleep(Duration::from_millis(250));
    tmux::run(enter, None)?;
    Ok(())
}

/// The last few non-empty lines of the pane, to explain a death.
fn last_lines(pane: &Pane) -> String {
    let text = capture(pane).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}

/// Wait until the TUI can take a prompt: a ready screen that stays unchanged for
/// [`SETTLE`] (codex draws its composer for a moment before its folder-trust dialog).
/// Start-up dialogs are looked for only when `first_turn`.
pub async fn wait_ready(pane: &Pane, limit: Duration, first_turn: bool) -> Result<(), String> {
    let end = tokio::time::Instant::now() + limit;
    let name = pane.tui.name();
    // After answering an update offer, the same screen is not taken as ready.
    let mut answered: Option<String> = None;
    let mut last = (String::new(), tokio::time::Instant::now());
    loop {
        if let Some(code) = pane_dead(pane) {
            return Err(format!(
                "the hybrid {name} pane exited (status {code}) before it was ready: {}",
                last_lines(pane)
            ));
        }
        let screen = capture(pane)?;
        if screen != last.0 {
            last = (screen.clone(), tokio::time::Instant::now());
        }
        if answered.as_deref() != Some(screen.as_str()) {
            let seen = if first_turn {
                classify(pane.tui, &screen)
            } else {
                activity(pane.tui, &screen)
            };
            match seen {
                Screen::Ready if last.1.elapsed() >= SETTLE => return Ok(()),
                Screen::Ready => {}
                Screen::Blocked(why) => return Err(why),
                Screen::UpdateOffer if answered.is_none() => {
                    tmux::run(commands::keys(&pane.id, &["2", "Enter"]), None)?;
                    answered = Some(screen);
                }
                // The looper waits out the limit and sends the next prompt itself.
                Screen::LimitOptions => {
                    tmux::run(commands::keys(&pane.id, &["Escape"]), None)?;
                    answered = Some(screen);
                }
                Screen::UpdateOffer | Screen::Busy | Screen::Starting => {}
            }
        }
        if tokio::time::Instant::now() >= end {
            return Err(format!(
                "the hybrid {name} pane did not become ready in time: {}",
                last_lines(pane)
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// New bytes of the transcript since `offset`.
fn read_from(p: &Path, offset: &mut u64) -> Vec<u8> {
    let Ok(mut f) = std::fs::File::open(p) else {
        return vec![];
    };
    if f.seek(SeekFrom::Start(*offset)).is_err() {
        return vec![];
    }
    let mut buf = Vec::new();
    let _ = f.take(8 << 20).read_to_end(&mut buf);
    *offset += buf.len() as u64;
    buf
}

/// After the record that ends a turn, the TUI takes a moment to show its prompt again.
async fn settle_idle(pane: &Pane) {
    let end = tokio::time::Instant::now() + IDLE_LIMIT;
    while tokio::time::Instant::now() < end
        && capture(pane).is_ok_and(|screen| activity(pane.tui, &screen) == Screen::Busy)
    {
        tokio::time::sleep(POLL).await;
    }
}

/// Run one turn: paste the prompt, stream the transcript into `sink` until the turn ends
/// (its closing record, then an idle screen: D26), the timeout passes, or a terminate
/// request arrives. A pane that dies during the turn, a dialog that took the prompt, or a
/// codex that writes no rollout are errors.
pub async fn run_turn(
    pane: &Pane,
    prompt: &str,
    timeout: Duration,
    sink: &mut dyn OutputSink,
    control: &mut mpsc::UnboundedReceiver<AttemptControl>,
) -> Result<AttemptExit, String> {
    let name = pane.tui.name();
    let deadline = tokio::time::Instant::now() + timeout;
    // Until the pane's first turn is under way, a start-up dialog may stand in the way.
    let first_turn = pane.turns == 0;
    // A stop asked for while the TUI starts is acted on at once, not after the wait (D22).
    tokio::select! {
        ready = wait_ready(pane, timeout.min(READY_LIMIT), first_turn) => ready?,
        Some(AttemptControl::Terminate { .. }) = control.recv() => {
            sink.eof(Stream::Stdout);
            return Ok(AttemptExit {
                terminated: true,
                ..AttemptExit::default()
            });
        }
    }
    // Measured after the wait, so nothing written before the paste counts for this turn.
    let mut transcript = locate(pane);
    let mut offset = transcript.as_deref().map(file_len).unwrap_or(0);
    paste(pane, prompt).await?;
    let pasted = tokio::time::Instant::now();
    let mut exit = AttemptExit::default();
    let mut line = Vec::new();
    let mut polls = 0u32;
    // The transcript has grown: the TUI took the prompt.
    let mut taken = false;
    loop {
        if transcript.is_none() {
            transcript = locate(pane);
            match &transcript {
                // A new codex session's rollout begins with this prompt: read it all. On a
                // later turn, never re-read what earlier turns wrote.
                Some(t) if !first_turn => offset = file_len(t),
                Some(_) => {}
                None if pasted.elapsed() >= ROLLOUT_GRACE => {
                    sink.eof(Stream::Stdout);
                    return Err(format!(
                        "{name} wrote no transcript within {} s of the prompt (looked for its rollout under {})",
                        ROLLOUT_GRACE.as_secs(),
                        match &pane.transcript {
                            Transcript::CodexRollout { sessions, .. } =>
                                sessions.display().to_string(),
                            Transcript::Known(p) => p.display().to_string(),
                        }
                    ));
                }
                None => {}
            }
        }
        let fresh = transcript
            .as_deref()
            .map(|t| read_from(t, &mut offset))
            .unwrap_or_default();
        let mut turn_over = false;
        let mut failed = false;
        taken |= !fresh.is_empty();
        if !fresh.is_empty() {
            let _ = sink.chunk(Stream::Stdout, &fresh);
            for b in &fresh {
                if *b == b'\n' {
                    let record = String::from_utf8_lossy(&line);
                    if pane.tui.ends_turn(&record) {
                        turn_over = true;
                        failed |= pane.tui.failed_turn(&record);
                    }
                    line.clear();
                } else if line.len() < 1 << 16 {
                    line.push(*b);
                }
            }
        }
        if turn_over {
            settle_idle(pane).await;
            exit.exit_code = Some(if failed { 1 } else { 0 });
            break;
        }
        polls += 1;
        if polls.is_multiple_of(PANE_CHECK_POLLS) {
            if let Some(code) = pane_dead(pane) {
                sink.eof(Stream::Stdout);
                return Err(format!(
                    "the hybrid {name} pane exited (status {code}) during the turn: {}",
                    last_lines(pane)
                ));
            }
            // A dialog that took the paste would otherwise hold the turn until the timeout.
            if first_turn
                && !taken
                && let Ok(screen) = capture(pane)
                && let Some(Screen::Blocked(why)) = dialog(pane.tui, &screen)
            {
                sink.eof(Stream::Stdout);
                return Err(why);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            exit.timed_out = true;
            break;
        }
        tokio::select! {
            msg = control.recv() => {
                if let Some(AttemptControl::Terminate { .. }) = msg {
                    // Interrupt the TUI's turn; the pane itself is ended by the caller.
                    let _ = tmux::run(commands::keys(&pane.id, &["Escape"]), None);
                    exit.terminated = true;
                    break;
                }
            }
            _ = tokio::time::sleep(POLL) => {}
        }
    }
    sink.eof(Stream::Stdout);
    Ok(exit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_window_argv_is_exact() {
        let argv = through_env_file(
            Path::new("/bin/looper"),
            Path::new("/run/x.env"),
            &[
                "claude".to_string(),
                "--session-id".to_string(),
                "u-1".to_string(),
            ],
        );
        assert_eq!(
            tmux::argv(split_window_command("%1", "/w", &argv)),
            [
                "tmux",
                "split-window",
                "-d",
                "-h",
                "-P",
                "-c",
                "/w",
                "-t",
                "%1",
                "-F",
                "#{pane_id} #{pane_pid}",
                "-l",
                "70%",
                "/bin/looper",
                "pane-exec",
                "--env-file",
                "/run/x.env",
                "--",
                "claude",
                "--session-id",
                "u-1"
            ]
        );
        // The start directory is a tmux format: `#` is doubled; argv is not.
        let argv = vec!["#(x)".to_string()];
        let got = tmux::argv(split_window_command("%1", "/w/#(z)", &argv));
        assert_eq!(got[6], "/w/##(z)");
        assert_eq!(got[got.len() - 1], "#(x)");
    }

    #[test]
    fn pane_commands_argv() {
        let t = |c| tmux::argv(c);
        assert_eq!(
            t(commands::remain_on_exit("%7")),
            [
                "tmux",
                "set-option",
                "-p",
                "-q",
                "-t",
                "%7",
                "remain-on-exit",
                "on"
            ]
        );
        assert_eq!(
            t(commands::kill_pane("%7")),
            ["tmux", "kill-pane", "-t", "%7"]
        );
        assert_eq!(
            t(commands::capture("%7")),
            ["tmux", "capture-pane", "-p", "-t", "%7"]
        );
        assert_eq!(
            t(commands::pane_dead("%7")),
            [
                "tmux",
                "display-message",
                "-p",
                "-t",
                "%7",
                "#{pane_id} #{pane_dead} #{pane_dead_status}"
            ]
        );
        assert_eq!(
            t(commands::keys("%7", &["2", "Enter"])),
            ["tmux", "send-keys", "-t", "%7", "2", "Enter"]
        );
        assert_eq!(
            t(commands::keys("%7", &["Escape"])),
            ["tmux", "send-keys", "-t", "%7", "Escape"]
        );
    }

    #[test]
    fn codex_rollouts_are_found_by_thread_id_open_file_or_cwd() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let sessions = tmp.path().join("sessions");
        let day = sessions.join("2026/11/21");
        std::fs::create_dir_all(&day).expect("mkdir");
        let meta = |cwd: &str| {
            format!(
                "{{\"type\":\"session_meta\",\"payload\":{{\"id\":\"x\",\"cwd\":\"{cwd}\"}}}}\n"
            )
        };
        let ours = day.join("rollout-2026-11-21T11-45-44-aaaa-1111.jsonl");
        let other = day.join("rollout-2026-11-21T11-45-50-bbbb-2222.jsonl");
        std::fs::write(&ours, meta("/work/a")).expect("write");
        std::fs::write(&other, meta("/work/b")).expect("write");
        std::fs::write(day.join("notes.jsonl"), meta("/work/a")).expect("write");

        assert_eq!(codex_rollout(&sessions, "aaaa-1111"), Some(ours.clone()));
        assert_eq!(codex_rollout(&sessions, "cccc-3333"), None);

        let since = SystemTime::now() - Duration::from_secs(60);
        assert_eq!(
            newest_rollout_for(&sessions, Path::new("/work/a"), since),
            Some(ours.clone())
        );
        assert_eq!(
            newest_rollout_for(
                &sessions,
                Path::new("/work/a"),
                SystemTime::now() + Duration::from_secs(60)
            ),
            None,
            "a rollout older than the pane is another session's"
        );

        // Once its thread id is known, a pane reads its rollout by name.
        let mut pane = Pane {
            id: "%1".into(),
            pid: 0,
            tui: Tui::Codex,
            session_id: String::new(),
            transcript: Transcript::CodexRollout {
                sessions: sessions.clone(),
                cwd: PathBuf::from("/work/a"),
            },
            started: since,
            turns: 1,
        };
        pane.learn_session("aaaa-1111");
        assert_eq!(pane.session_id, "aaaa-1111");
        assert_eq!(pane.transcript, Transcript::Known(ours.clone()));

        // The exact way: the file a process of the pane holds open (here, this process).
        let pid = std::process::id() as i32;
        assert_eq!(open_rollout(pid, &sessions), None);
        let held = std::fs::File::open(&other).expect("open");
        assert_eq!(open_rollout(pid, &sessions), Some(other.clone()));
        drop(held);
    }
}

//! The hybrid interface (D26): claude's real TUI in a tmux pane beside the supervisor.
//! The pane runs `claude --session-id <uuid>` so its transcript path is known exactly;
//! prompts are pasted (bracketed) from a tmux buffer; a turn ends when the transcript
//! records `turn_duration` after our prompt. The transcript lines are the attempt's
//! output: logged, scanned (assistant records only complete, D14), counted.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tmux_interface::{
    CapturePane, DisplayMessage, KillPane, SendKeys, SetOption, SplitWindow, TmuxCommand,
};
use tokio::sync::mpsc;

use crate::agents::Stream;
use crate::effects::process::{AttemptControl, AttemptExit, OutputSink};
use crate::effects::tmux;

/// How often the pane and the transcript are looked at.
const POLL: Duration = Duration::from_millis(100);

/// A running agent pane.
#[derive(Clone, Debug)]
pub struct Pane {
    pub id: String,
    pub pid: i32,
    pub session_id: String,
    pub transcript: PathBuf,
}

/// The folder name claude gives a working directory: every non-alphanumeric becomes `-`.
pub fn project_dir_name(cwd: &Path) -> String {
    cwd.display()
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// `$CLAUDE_CONFIG_DIR` (or `$HOME/.claude`) `/projects/<cwd>/<session>.jsonl`.
pub fn transcript_path(config_dir: &Path, cwd: &Path, session_id: &str) -> PathBuf {
    config_dir
        .join("projects")
        .join(project_dir_name(cwd))
        .join(format!("{session_id}.jsonl"))
}

/// `split-window` for the agent pane: 70 % of the window, detached, in the agent's cwd,
/// with the agent's environment, running `argv` directly (no shell).
pub fn split_window_command<'a>(
    target: &'a str,
    cwd: &'a str,
    env: &'a [(String, String)],
    argv: &'a [String],
) -> TmuxCommand<'a> {
    let mut cmd = SplitWindow::new()
        .detached()
        .horizontal()
        .print()
        .format("#{pane_id} #{pane_pid}")
        .target_pane(target)
        .start_directory(cwd)
        .build();
    // `-l 70%` rather than the deprecated `-p 70`.
    cmd.push_option("-l", "70%");
    for (k, v) in env {
        cmd.push_option("-e", format!("{k}={v}"));
    }
    for a in argv {
        cmd.push_param(a.as_str());
    }
    cmd
}

pub fn start_pane(
    target: &str,
    cwd: &Path,
    env: &[(String, String)],
    argv: &[String],
    session_id: &str,
    transcript: PathBuf,
) -> Result<Pane, String> {
    let cwd_s = cwd.display().to_string();
    let out = tmux::run(split_window_command(target, &cwd_s, env, argv), None)
        .map_err(|e| format!("failed to start the hybrid agent pane: {e}"))?;
    let line = out.lines().last().unwrap_or("").trim().to_string();
    let (id, pid) = line
        .split_once(' ')
        .ok_or_else(|| format!("failed to start the hybrid agent pane: tmux printed {line:?}"))?;
    // Keep a crashed agent's last screen, and notice the death through #{pane_dead}.
    let _ = tmux::run(
        SetOption::new()
            .pane()
            .quiet()
            .target_pane(id)
            .option("remain-on-exit")
            .value("on")
            .build(),
        None,
    );
    Ok(Pane {
        id: id.to_string(),
        pid: pid.parse().unwrap_or(0),
        session_id: session_id.to_string(),
        transcript,
    })
}

pub fn kill_pane(pane: &Pane) {
    let _ = tmux::run(KillPane::new().target_pane(pane.id.as_str()).build(), None);
}

fn capture(pane: &Pane) -> Result<String, String> {
    tmux::run(
        CapturePane::new()
            .stdout()
            .target_pane(pane.id.as_str())
            .build(),
        None,
    )
}

/// `Some(exit status)` once the pane's process has exited.
fn pane_dead(pane: &Pane) -> Option<i32> {
    let out = tmux::run(
        DisplayMessage::new()
            .print()
            .target_pane(pane.id.as_str())
            .message("#{pane_dead} #{pane_dead_status}")
            .build(),
        None,
    );
    match out {
        Ok(s) => {
            let mut it = s.split_whitespace();
            (it.next() == Some("1")).then(|| it.next().and_then(|c| c.parse().ok()).unwrap_or(1))
        }
        // The pane is gone altogether.
        Err(_) => Some(1),
    }
}

/// What the pane shows.
#[derive(Clone, Debug, PartialEq)]
pub enum Screen {
    Ready,
    Busy,
    /// A screen the looper must not answer for the user.
    Blocked(String),
    Starting,
}

/// Classify a pane capture of claude's TUI.
pub fn classify(capture: &str) -> Screen {
    let lower = capture.to_lowercase();
    if lower.contains("trust") && (lower.contains("folder") || lower.contains("files")) {
        return Screen::Blocked(
            "claude is asking whether to trust this folder; open claude once in this directory and accept, or set hasTrustDialogAccepted for it in ~/.claude.json".into(),
        );
    }
    if lower.contains("api key")
        && (lower.contains("do you want to use") || lower.contains("detected a custom"))
    {
        return Screen::Blocked(
            "claude is asking whether to use the API key in the environment; run claude once interactively to approve it".into(),
        );
    }
    if lower.contains("esc to interrupt") {
        return Screen::Busy;
    }
    if lower.contains("? for shortcuts")
        || capture
            .lines()
            .any(|l| matches!(l.trim_end(), "❯" | ">" | "> "))
    {
        return Screen::Ready;
    }
    Screen::Starting
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

/// Wait until the TUI can take a prompt.
pub async fn wait_ready(pane: &Pane, limit: Duration) -> Result<(), String> {
    let end = tokio::time::Instant::now() + limit;
    loop {
        if let Some(code) = pane_dead(pane) {
            return Err(format!(
                "the hybrid agent pane exited (status {code}) before it was ready"
            ));
        }
        match classify(&capture(pane)?) {
            Screen::Ready => return Ok(()),
            Screen::Blocked(why) => return Err(why),
            Screen::Busy | Screen::Starting => {}
        }
        if tokio::time::Instant::now() >= end {
            return Err("the hybrid agent pane did not become ready in time".into());
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

/// Run one turn: paste the prompt, stream the transcript into `sink` until the turn ends,
/// the timeout passes, the pane dies, or a terminate request arrives.
pub async fn run_turn(
    pane: &Pane,
    prompt: &str,
    timeout: Duration,
    sink: &mut dyn OutputSink,
    control: &mut mpsc::UnboundedReceiver<AttemptControl>,
) -> Result<AttemptExit, String> {
    let start = tokio::time::Instant::now();
    let deadline = start + timeout;
    wait_ready(pane, timeout.min(Duration::from_secs(90))).await?;
    let mut offset = file_len(&pane.transcript);
    paste(pane, prompt).await?;
    let mut exit = AttemptExit::default();
    let mut line = Vec::new();
    loop {
        let fresh = read_from(&pane.transcript, &mut offset);
        let mut turn_over = false;
        if !fresh.is_empty() {
            let _ = sink.chunk(Stream::Stdout, &fresh);
            for b in &fresh {
                if *b == b'\n' {
                    let text = String::from_utf8_lossy(&line);
                    if text.contains("\"turn_duration\"") && text.contains("\"type\":\"system\"") {
                        turn_over = true;
                    }
                    line.clear();
                } else if line.len() < 1 << 16 {
                    line.push(*b);
                }
            }
        }
        if turn_over {
            exit.exit_code = Some(0);
            break;
        }
        if let Some(code) = pane_dead(pane) {
            exit.exit_code = Some(code);
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            exit.timed_out = true;
            break;
        }
        tokio::select! {
            msg = control.recv() => {
                if let Some(AttemptControl::Terminate { .. }) = msg {
                    // Interrupt the TUI's turn; the pane itself is ended by the caller.
                    let _ = tmux::run(SendKeys::new().target_pane(pane.id.as_str()).key("Escape").build(), None);
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
    fn transcript_paths_follow_claude() {
        assert_eq!(
            project_dir_name(Path::new("/tmp/my_repo.v2")),
            "-tmp-my-repo-v2"
        );
        assert_eq!(
            transcript_path(Path::new("/h/.claude"), Path::new("/w/x"), "abc"),
            PathBuf::from("/h/.claude/projects/-w-x/abc.jsonl")
        );
    }

    #[test]
    fn split_window_argv_is_exact() {
        let env = vec![("K".to_string(), "v w".to_string())];
        let argv = vec![
            "claude".to_string(),
            "--session-id".to_string(),
            "u-1".to_string(),
        ];
        assert_eq!(
            tmux::argv(split_window_command("%1", "/w", &env, &argv)),
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
                "-e",
                "K=v w",
                "claude",
                "--session-id",
                "u-1"
            ]
        );
    }

    #[test]
    fn screens_from_recorded_captures() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/clis/claude/");
        let read = |f: &str| std::fs::read_to_string(format!("{dir}{f}")).unwrap_or_default();
        assert_eq!(classify(&read("hybrid_pane_idle.txt")), Screen::Ready);
        assert_eq!(classify(&read("hybrid_pane_busy.txt")), Screen::Busy);
        assert!(matches!(
            classify("Do you trust the files in this folder?\n❯ 1. Yes, proceed"),
            Screen::Blocked(_)
        ));
        assert!(matches!(
            classify(
                "Detected a custom API key in your environment\nDo you want to use this API key?"
            ),
            Screen::Blocked(_)
        ));
    }
}

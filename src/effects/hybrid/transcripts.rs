//! Where the TUIs write their transcripts: claude's path follows from its session id;
//! codex's rollout is found by thread id, among the files the pane's processes hold open, or
//! (without `/proc`) as the newest one begun in the working directory.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{Transcript, Tui};
use crate::effects::procinfo;
use crate::engine::SessionRef;

/// Where a new pane's TUI will write its transcript. `lookup` reads the agent's
/// environment (its table's `env`, then the supervisor's): claude's
/// `$CLAUDE_CONFIG_DIR` (or `$HOME/.claude`), codex's `$CODEX_HOME` (relative to where codex
/// starts; or `$HOME/.codex`). A codex session it already recorded is found by thread id.
pub fn pane_transcript(
    tui: Tui,
    lookup: impl Fn(&str) -> Option<String>,
    cwd: &Path,
    session: &SessionRef,
) -> Transcript {
    let home = lookup("HOME").map(PathBuf::from).unwrap_or_default();
    match tui {
        Tui::Claude => {
            let config_dir = lookup("CLAUDE_CONFIG_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(".claude"));
            let id = session.id.as_deref().unwrap_or_default();
            Transcript::Known(transcript_path(&config_dir, cwd, id))
        }
        Tui::Codex => {
            let sessions = lookup("CODEX_HOME")
                .map(|h| cwd.join(h))
                .unwrap_or_else(|| home.join(".codex"))
                .join("sessions");
            let resumed = session.id.as_ref().filter(|_| session.resume);
            match resumed.and_then(|id| codex_rollout(&sessions, id)) {
                Some(path) => Transcript::Known(path),
                None => Transcript::CodexRollout {
                    sessions,
                    cwd: cwd.to_path_buf(),
                },
            }
        }
    }
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

/// Every `rollout-*.jsonl` under codex's `sessions` folder (`YYYY/MM/DD/`).
fn rollouts(sessions: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![(sessions.to_path_buf(), 0)];
    while let Some((dir, depth)) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                if depth < 4 {
                    dirs.push((path, depth + 1));
                }
            } else if is_rollout(&path) {
                out.push(path);
            }
        }
    }
    out
}

fn is_rollout(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("rollout-") && n.ends_with(".jsonl"))
}

/// The rollout of codex thread `thread_id`: its file name ends with the id.
pub fn codex_rollout(sessions: &Path, thread_id: &str) -> Option<PathBuf> {
    let suffix = format!("-{thread_id}.jsonl");
    rollouts(sessions).into_iter().find(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(&suffix))
    })
}

/// The rollout a process of the pane holds open (its group: the pane runs the TUI as the
/// group leader, and the TUI keeps its rollout open while it lives). The kernel names open
/// files by their resolved path, so `sessions` is resolved too.
pub fn open_rollout(pane_pid: i32, sessions: &Path) -> Option<PathBuf> {
    let sessions = std::fs::canonicalize(sessions).unwrap_or_else(|_| sessions.to_path_buf());
    let mut pids = procinfo::group_members(pane_pid);
    pids.insert(0, pane_pid);
    pids.into_iter().find_map(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .ok()?
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .find(|target| target.starts_with(&sessions) && is_rollout(target))
    })
}

/// Without `/proc`: the newest rollout begun since the pane started whose `session_meta`
/// names this working directory.
pub fn newest_rollout_for(sessions: &Path, cwd: &Path, since: SystemTime) -> Option<PathBuf> {
    let since = since - Duration::from_secs(2);
    let cwd = cwd.display().to_string();
    rollouts(sessions)
        .into_iter()
        .filter_map(|p| {
            let modified = std::fs::metadata(&p).and_then(|m| m.modified()).ok()?;
            (modified >= since).then_some((modified, p))
        })
        .filter(|(_, p)| {
            let Ok(f) = std::fs::File::open(p) else {
                return false;
            };
            let mut first = String::new();
            let _ = std::io::BufRead::read_line(
                &mut std::io::BufReader::new(f.take(1 << 20)),
                &mut first,
            );
            serde_json::from_str::<serde_json::Value>(&first).is_ok_and(|v| {
                v.pointer("/payload/cwd").and_then(|c| c.as_str()) == Some(cwd.as_str())
            })
        })
        .max_by_key(|(modified, _)| *modified)
        .map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pane_transcripts_follow_the_agents_environment() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let env = |pairs: Vec<(&'static str, String)>| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
        };
        let session = |id: Option<&str>, resume| SessionRef {
            name: "s".into(),
            id: id.map(str::to_string),
            resume,
        };
        let cwd = Path::new("/w/x");
        assert_eq!(
            pane_transcript(
                Tui::Claude,
                env(vec![("HOME", "/h".into())]),
                cwd,
                &session(Some("u"), false)
            ),
            Transcript::Known(PathBuf::from("/h/.claude/projects/-w-x/u.jsonl"))
        );
        assert_eq!(
            pane_transcript(
                Tui::Claude,
                env(vec![
                    ("HOME", "/h".into()),
                    ("CLAUDE_CONFIG_DIR", "/c".into())
                ]),
                cwd,
                &session(Some("u"), false)
            ),
            Transcript::Known(PathBuf::from("/c/projects/-w-x/u.jsonl"))
        );
        // A relative CODEX_HOME is relative to where codex starts.
        assert_eq!(
            pane_transcript(
                Tui::Codex,
                env(vec![("CODEX_HOME", "ch".into())]),
                cwd,
                &session(None, false)
            ),
            Transcript::CodexRollout {
                sessions: PathBuf::from("/w/x/ch/sessions"),
                cwd: cwd.to_path_buf()
            }
        );
        // A resumed thread's rollout is known by its id.
        let day = tmp.path().join("sessions/2026/11/21");
        std::fs::create_dir_all(&day).expect("mkdir");
        let rollout = day.join("rollout-2026-11-21T11-45-44-th-1.jsonl");
        std::fs::write(&rollout, "{}\n").expect("write");
        let home = env(vec![("CODEX_HOME", tmp.path().display().to_string())]);
        assert_eq!(
            pane_transcript(Tui::Codex, home, cwd, &session(Some("th-1"), true)),
            Transcript::Known(rollout)
        );
    }

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
}

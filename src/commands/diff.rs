//! `looper diff [TARGET] [--stat]` (issue 16): what a run changed, as git shows it. A run
//! with a worktree: its worktree (commits, index and files, untracked files as added)
//! against the commit its branch started from. A run without one: its checkout against the
//! state at the run's start: the first backup snapshot of a `--backup-dirty` run (which holds
//! the uncommitted files the run found), else `base_commit`, HEAD when the run started. The
//! looper's own files are left out. The patch goes to stdout as git prints it (so it can be
//! piped into `git apply`); on a terminal, control characters in it are shown as `?` (D35).
//! What is compared goes to stderr. `--host` runs it on another machine (`docs/hosts.md`): the
//! patch comes back as JSON lines (`--json`), one host exactly as printed there.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use crate::cli::DiffArgs;
use crate::effects::diff::{self, DiffView};
use crate::error::{Error, Result};
use crate::records::discovery::{self, Stopped};
use crate::records::{EVENTS_FILE, RunState, fsio};

/// A patch larger than this is cut (and says so): a diff for reading, not for archiving.
const MAX_BYTES: usize = 64 << 20;

/// What one run's diff compares.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    pub dir: PathBuf,
    pub base: String,
    pub excluded: Vec<PathBuf>,
    /// Where the base comes from, for the header.
    pub what: String,
}

/// The first backup snapshot of a run, from its events (runs recorded before
/// `start_snapshot` existed, or whose state lost it).
fn first_snapshot(run_dir: &Path) -> Option<String> {
    fsio::read_jsonl(&run_dir.join(EVENTS_FILE))
        .into_iter()
        .find(|e| e["event"] == "backup_created")
        .filter(|e| e["snapshot"] == true && e["loop"] == 1)
        .and_then(|e| e["commit"].as_str().map(str::to_string))
}

/// Decide what to compare for the run recorded in `run_dir`.
pub fn plan(run_dir: &Path, st: &RunState) -> std::result::Result<Plan, String> {
    let name = st
        .label
        .clone()
        .unwrap_or_else(|| run_dir.display().to_string());
    if let Some(path) = &st.worktree_path {
        let base = st
            .worktree_base
            .clone()
            .ok_or_else(|| format!("run {name} recorded its worktree but not its base"))?;
        let path = PathBuf::from(path);
        if st.worktree_state.as_deref() == Some("removed") {
            return Err(format!(
                "run {name}'s worktree {} was removed at its end: {}",
                path.display(),
                st.worktree_note
                    .as_deref()
                    .unwrap_or("it changed nothing that is not on another branch")
            ));
        }
        if !path.is_dir() {
            let branch = st.worktree_branch.as_deref().unwrap_or("its branch");
            return Err(format!(
                "run {name}'s worktree {} is gone; what its branch holds: git diff {base}..{branch}",
                path.display()
            ));
        }
        return Ok(Plan {
            dir: path,
            what: format!("its worktree against its base {}", short(&base)),
            base,
            excluded: Vec::new(),
        });
    }
    let dir = st
        .agent_cwd
        .clone()
        .map(PathBuf::from)
        .ok_or_else(|| format!("run {name} did not record where it ran"))?;
    let (base, what) = match st.start_snapshot.clone().or_else(|| first_snapshot(run_dir)) {
        Some(s) => (s, "the first backup snapshot (the work tree at the run's start)"),
        None => (
            st.base_commit.clone().ok_or_else(|| {
                format!(
                    "run {name} recorded no base commit (it did not run in a git work tree, or an older looper ran it)"
                )
            })?,
            "HEAD at the run's start",
        ),
    };
    // The looper's own files: the run's state root and the worktrees of other runs.
    let mut excluded = Vec::new();
    if let Some(root) = run_dir.parent() {
        excluded.push(root.canonicalize().unwrap_or_else(|_| root.to_path_buf()));
    }
    if let Ok(loc) = crate::effects::worktree::locate(&dir) {
        excluded.push(loc.source.join(crate::effects::worktree::ROOT));
    }
    Ok(Plan {
        what: format!("{} against {what} {}", dir.display(), short(&base)),
        dir,
        base,
        excluded,
    })
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

/// Control characters other than newlines and tabs, as `?` (for a terminal).
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '?'
            } else {
                c
            }
        })
        .collect()
}

pub fn diff(args: &DiffArgs) -> Result<i32> {
    // Not quick: a large tree's diff may take longer than `--host-timeout`.
    let lines = crate::remote::Shape::Lines;
    if let Some(code) = crate::remote::forward(&args.target.hosts, lines, false)? {
        return Ok(code);
    }
    let target = discovery::resolve(&args.target.query(), Stopped::Fallback)?;
    let state = target.state.clone().ok_or_else(|| {
        Error::Usage(format!(
            "{} has no readable state.json",
            target.dir.display()
        ))
    })?;
    let plan = plan(&target.dir, &state).map_err(Error::Usage)?;
    let view = if args.stat {
        DiffView::Stat
    } else {
        DiffView::Patch
    };
    let d = diff::since(&plan.dir, &plan.base, &plan.excluded, view, MAX_BYTES)
        .map_err(Error::Usage)?;
    crate::console::err(&format!("looper: run {}: {}", target.name, plan.what));
    let mut out = std::io::stdout().lock();
    if args.target.json {
        for line in d.text.lines() {
            let l = crate::remote::StreamLine { line: line.into() };
            let mut j = serde_json::to_vec(&l).unwrap_or_default();
            j.push(b'\n');
            if out.write_all(&j).is_err() {
                break;
            }
        }
    }
    let text = if args.target.json {
        String::new()
    } else if out.is_terminal() {
        printable(&d.text)
    } else {
        d.text
    };
    // A closed pipe (`looper diff | head`) is not an error worth reporting.
    let _ = out.write_all(text.as_bytes());
    if d.truncated {
        crate::console::err(&format!(
            "looper: the diff was cut at {} MiB",
            MAX_BYTES >> 20
        ));
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_without_a_worktree_is_compared_to_its_start() {
        let dir = Path::new("/p/.agent-looper/runs/r1");
        let mut st = RunState {
            label: Some("r".into()),
            agent_cwd: Some("/p".into()),
            base_commit: Some("abc".into()),
            ..RunState::default()
        };
        let p = plan(dir, &st).expect("plan");
        assert_eq!(p.base, "abc");
        assert!(p.excluded.contains(&PathBuf::from("/p/.agent-looper/runs")));
        st.start_snapshot = Some("def".into());
        assert_eq!(plan(dir, &st).expect("plan").base, "def");
        st.base_commit = None;
        st.start_snapshot = None;
        assert!(plan(dir, &st).is_err());
    }

    #[test]
    fn a_removed_worktree_says_why_there_is_nothing_to_show() {
        let st = RunState {
            label: Some("r".into()),
            worktree_path: Some("/p/.agent-looper/worktrees/r".into()),
            worktree_base: Some("abc".into()),
            worktree_state: Some("removed".into()),
            ..RunState::default()
        };
        let e = plan(Path::new("/x"), &st).expect_err("removed");
        assert!(e.contains("was removed at its end"), "{e}");
    }

    #[test]
    fn control_characters_never_reach_a_terminal() {
        assert_eq!(printable("+a\u{1b}[31mred\n\tx"), "+a?[31mred\n\tx");
    }
}

//! `--worktree` around a run (issue 16, D30): before `prepare`, the run's worktree is made
//! (on a new branch, from HEAD or `--base`) and the settings are pointed into it: the agent's
//! working directory and the plan file (which the agent edits) move to the same place in the
//! worktree; the prompt file, the config and the run directory stay in the checkout the
//! looper was started in, so one `PROMPT.md` steers every worktree and `looper status`,
//! `control` and `logs` see the run like any other. The returned lease settles the worktree
//! at the run's end (`driver::ports::WorktreeLease`).
//!
//! A hybrid pane meets the TUI's folder-trust dialog in a folder it has never seen. Unless
//! the main checkout is trusted (both TUIs extend that to its worktrees) or the run opts in
//! to recording trust for its worktree (`--trust-worktree`), the run is refused here, before
//! anything is made, naming the dialog and the ways out.

use std::path::{Path, PathBuf};

use crate::config::run::TmuxContext;
use crate::config::{AgentKind, Interface, Invocation, Settings, WorktreeSettings};
use crate::driver::WorktreeLease;
use crate::effects::worktree::{self, Request, trust};
use crate::error::{Error, Result};

/// `path` as seen from `from` moved onto `to`, when it lies inside `from` (symlinks in
/// either spelling are resolved first: git reports canonical paths).
fn moved(path: &Path, from: &Path, to: &Path) -> Option<PathBuf> {
    let canon = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let rel = path
        .strip_prefix(from)
        .ok()
        .map(Path::to_path_buf)
        .or_else(|| {
            // A path that does not exist yet (a plan file to come) cannot be canonicalised:
            // resolve its directory.
            let p = canon(path);
            let p = if p.exists() {
                p
            } else {
                let name = path.file_name()?;
                canon(path.parent()?).join(name)
            };
            p.strip_prefix(canon(from)).ok().map(Path::to_path_buf)
        })?;
    Some(if rel.as_os_str().is_empty() {
        to.to_path_buf()
    } else {
        to.join(rel)
    })
}

/// The TUI a hybrid run will open in a pane, when it asks for folder trust.
fn hybrid_tui(settings: &Settings, inv: &Invocation) -> Option<trust::Tui> {
    let hybrid = settings.agent.interface == Interface::Hybrid
        && (TmuxContext::from_env(&inv.env).is_some() || settings.agent.interface_explicit);
    match settings.agent.kind {
        AgentKind::Claude if hybrid => Some(trust::Tui::Claude),
        AgentKind::Codex if hybrid => Some(trust::Tui::Codex),
        _ => None,
    }
}

/// The refusal for a hybrid run whose worktree would stop at the trust dialog.
fn untrusted(tui: trust::Tui, file: &Path, home: &Path) -> Error {
    let dialog = match tui {
        trust::Tui::Claude => "\"Is this a project you created or one you trust?\"",
        trust::Tui::Codex => "\"Trust this folder?\"",
    };
    Error::Usage(format!(
        "{name} asks {dialog} in every folder it has not seen, and the worktree this run would make is new ({file} trusts neither it nor {home}), so its hybrid pane would stop at that dialog. Pass --trust-worktree (or set [looper].worktree_trust = true) to record trust for the worktrees the looper creates (and only those; removed with them), trust {home} in {name} once, or run with --interface json",
        name = tui.name(),
        file = file.display(),
        home = home.display(),
    ))
}

/// Make the run's worktree and point `settings` into it. `None` when the run has none (or is
/// a dry run, which only says what it would make).
pub fn enter(
    settings: &mut Settings,
    inv: &Invocation,
    label: &str,
    run_dir: &Path,
) -> Result<Option<WorktreeLease>> {
    let Some(wt) = settings.worktree.clone() else {
        return Ok(None);
    };
    let loc = worktree::locate(&settings.agent.cwd).map_err(|e| Error::Usage(e.to_string()))?;
    let name = worktree::name_for(label);
    let branch = wt
        .branch
        .clone()
        .unwrap_or_else(|| worktree::default_branch(label));
    let path = loc.home.join(worktree::ROOT).join(&name);
    if settings.dry_run {
        crate::console::out(&format!(
            "looper: dry run: a run would get worktree {} on a new branch {branch} from {}",
            path.display(),
            wt.base.as_deref().unwrap_or("HEAD")
        ));
        return Ok(None);
    }
    let tui = hybrid_tui(settings, inv);
    let lookup = |k: &str| {
        settings
            .agent
            .env
            .get(k)
            .or_else(|| inv.env.get(k))
            .cloned()
    };
    let trust_file = tui.and_then(|t| trust::config_file(t, lookup).map(|f| (t, f)));
    if let Some((t, file)) = &trust_file
        && !wt.trust
        && !trust::is_trusted(*t, file, &path, &loc.home)
    {
        return Err(untrusted(*t, file, &loc.home));
    }
    let record = worktree::create(&Request {
        dir: &settings.agent.cwd,
        name: &name,
        branch: &branch,
        base: wt.base.as_deref(),
        cleanup: wt.cleanup,
        label,
        run_dir: Some(run_dir),
    })
    .map_err(|e| Error::Usage(e.to_string()))?;
    // From here every way out settles the worktree: the lease does it when dropped.
    let mut lease = WorktreeLease::new(record);
    if let Some((t, file)) = trust_file
        && wt.trust
        && !trust::is_trusted(t, &file, &lease.record.path, &loc.home)
    {
        let entry = trust::record(t, &file, &lease.record.path).map_err(|e| {
            Error::Usage(format!(
                "cannot record {} trust for the worktree: {e}",
                t.name()
            ))
        })?;
        worktree::note_trust(&mut lease.record, entry).map_err(|e| Error::Usage(e.to_string()))?;
    }
    point_into(settings, &loc.source, &lease.record.path)?;
    Ok(Some(lease))
}

/// The agent works in the worktree; the plan file it ticks is the worktree's copy.
fn point_into(settings: &mut Settings, source: &Path, worktree: &Path) -> Result<()> {
    let cwd = moved(&settings.agent.cwd, source, worktree).ok_or_else(|| {
        Error::Usage(format!(
            "the agent's working directory {} is not inside the checkout {}",
            settings.agent.cwd.display(),
            source.display()
        ))
    })?;
    if !cwd.is_dir() {
        return Err(Error::Usage(format!(
            "the agent's working directory {} is not in the worktree ({} is not tracked by git, so the worktree has no copy of it)",
            cwd.display(),
            settings.agent.cwd.display()
        )));
    }
    settings.agent.cwd = cwd;
    if let Some(plan) = &settings.plan_file
        && let Some(p) = moved(plan, source, worktree)
    {
        settings.plan_file = Some(p);
    }
    Ok(())
}

/// What the header says about the worktree.
pub fn notice(lease: &WorktreeLease, wt: &WorktreeSettings) -> String {
    let r = &lease.record;
    format!(
        "worktree {} on new branch {} from {} (at the end: worktree_cleanup = \"{}\"{})",
        r.path.display(),
        r.branch,
        &r.base[..r.base.len().min(12)],
        wt.cleanup.as_str(),
        if r.trust.is_empty() {
            String::new()
        } else {
            format!(
                "; trust recorded in {}",
                r.trust
                    .iter()
                    .map(|t| t.file.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_inside_the_checkout_move_into_the_worktree() {
        let d = tempfile::tempdir().expect("tmp");
        let src = d.path().join("repo");
        std::fs::create_dir_all(src.join("sub")).expect("mkdir");
        let wt = Path::new("/wt");
        assert_eq!(moved(&src, &src, wt), Some(PathBuf::from("/wt")));
        assert_eq!(
            moved(&src.join("sub"), &src, wt),
            Some(PathBuf::from("/wt/sub"))
        );
        assert_eq!(
            moved(&src.join("plan.md"), &src, wt),
            Some(PathBuf::from("/wt/plan.md")),
            "a file that does not exist yet"
        );
        assert_eq!(moved(d.path(), &src, wt), None, "outside");
    }
}

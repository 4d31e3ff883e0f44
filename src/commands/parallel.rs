//! `--parallel N` (issue 16): N runs from one command, each in a worktree of its own and on
//! its own branch, labelled `<label>-1` .. `<label>-N` (with `--branch NAME`, branches
//! `NAME-1` .. `NAME-N`). Each run is this binary again with the user's arguments, minus
//! `--parallel`, plus `--label <label> --parallel-index I` (the run names itself from those
//! and records its group, which `looper status` shows together).
//!
//! Without `--local` the runs open N windows of the farm (named `<window>-1` ..) and the
//! command returns once each has said whether its run started (a failed start is reported
//! and counts in the exit code as below). With `--local` they are child processes of this one, each in a
//! process group of its own: their lines are printed here prefixed with `[label]`, a signal
//! to this command (Ctrl-C, SIGTERM, SIGHUP) is passed to each of them once (so a second
//! Ctrl-C is their second, as in a single run), and the exit code is the most serious of
//! theirs, in this order: 2 (usage), 1 (failure), 124 (timeout), 130 (interrupted), 3
//! (breaker or budget); 0 when every run ended as asked. A run killed by a signal counts as
//! a failure.

use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::cli::RunArgs;
use crate::commands::farm;
use crate::config::{Invocation, Settings};
use crate::error::{Error, Result, exit_code};

/// Exit codes from most to least serious: the combined code of a group is the first of these
/// that any run returned.
const SEVERITY: [i32; 5] = [
    exit_code::USAGE,
    exit_code::AGENT_FAILED,
    exit_code::TIMEOUT,
    exit_code::INTERRUPTED,
    exit_code::BREAKER,
];

/// One exit code for a group of runs (see the module docs).
pub fn combine(codes: &[i32]) -> i32 {
    if codes.iter().all(|c| *c == exit_code::OK) {
        return exit_code::OK;
    }
    let known = |c: i32| {
        if SEVERITY.contains(&c) {
            c
        } else {
            exit_code::AGENT_FAILED
        }
    };
    SEVERITY
        .iter()
        .copied()
        .find(|s| codes.iter().any(|c| *c != exit_code::OK && known(*c) == *s))
        .unwrap_or(exit_code::AGENT_FAILED)
}

/// Options whose value must be replaced or dropped in a member's arguments.
fn takes_value(flag: &str) -> bool {
    matches!(flag, "--parallel" | "--label" | "-l" | "--tmux-layout")
}

/// A member's arguments: the user's, without `--parallel`, `--label` (and, for local
/// children, `--tmux-layout`: N live views in one window help nobody), with the group's
/// label and the member's number, all before any `--`.
pub fn member_args(raw: &[String], group: &str, index: u64, local: bool) -> Vec<String> {
    let split = raw.iter().position(|a| a == "--").unwrap_or(raw.len());
    let (own, agent_args) = raw.split_at(split);
    let mut out = Vec::with_capacity(raw.len() + 6);
    let mut has_local = false;
    let mut i = 0;
    while i < own.len() {
        let tok = &own[i];
        i += 1;
        let (name, inline) = match tok.split_once('=') {
            Some((n, _)) if n.starts_with("--") => (n, true),
            _ => (tok.as_str(), false),
        };
        let drop =
            matches!(name, "--parallel" | "--label" | "-l") || (local && name == "--tmux-layout");
        if name == "--local" {
            has_local = true;
        }
        // `-lNAME`: the short label flag with its value attached.
        if !inline && tok.starts_with("-l") && tok.len() > 2 && !tok.starts_with("--") {
            continue;
        }
        if drop {
            if !inline && takes_value(name) {
                i += 1;
            }
            continue;
        }
        out.push(tok.clone());
    }
    if local {
        if !has_local {
            out.push("--local".into());
        }
        out.extend(["--tmux-layout".to_string(), "single".to_string()]);
    }
    out.extend([
        "--label".to_string(),
        group.to_string(),
        "--parallel-index".to_string(),
        index.to_string(),
    ]);
    out.extend(agent_args.iter().cloned());
    out
}

/// The group's label: the one given, or a new one shared by every member.
fn group_label(settings: &Settings) -> String {
    settings
        .label
        .clone()
        .unwrap_or_else(|| crate::config::run::default_label(settings))
}

/// N windows of the farm, one run each; returns once they are started.
pub fn launch_farm(args: &RunArgs, settings: &Settings, inv: &Invocation) -> Result<i32> {
    let n = settings.parallel.unwrap_or(1);
    let raw = farm::raw_args()?;
    let group = group_label(settings);
    let path = inv.env.get("PATH").map(String::as_str);
    if crate::config::run::find_program("tmux", &inv.base_dir, path).is_none() {
        crate::console::err(
            "looper: tmux is not installed, so the parallel runs stay in this terminal (pass --local to skip the farm)",
        );
        return run(args, settings, inv);
    }
    let exe = farm::self_exe()?;
    let mut codes = Vec::new();
    for i in 1..=n {
        let member = member_args(&raw, &group, i, false);
        let mut member_run = args.clone();
        member_run.label = Some(format!("{group}-{i}"));
        let mut plan = farm::plan(&member, &member_run, inv)?;
        plan.window = format!("{}-{i}", plan.window);
        plan.attach = plan.attach && i == n;
        // Each window says whether its run started (issue 14.5); one that did not is
        // reported and the others still start.
        codes.push(farm::launch_tmux(&plan, &exe, &inv.env)?);
    }
    Ok(combine(&codes))
}

/// What was started: the members' pids, while they run (signals are passed to them).
type Members = Arc<Mutex<Vec<(String, i32)>>>;

/// Pass SIGINT, SIGTERM and SIGHUP to every member still running, once each time one comes.
/// The signals are blocked in this process (and so in the threads started after), and taken
/// by this thread alone; children start with an empty mask (std resets it).
fn forward_signals(members: Members) -> Result<()> {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, pthread_sigmask};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .map_err(|e| Error::io("cannot block signals", "sigprocmask", e.into()))?;
    std::thread::Builder::new()
        .name("looper-signals".into())
        .spawn(move || {
            while let Ok(sig) = set.wait() {
                let Ok(list) = members.lock() else { return };
                for (_, pid) in list.iter() {
                    let _ = kill(nix::unistd::Pid::from_raw(*pid), sig);
                }
            }
        })
        .map_err(|e| Error::io("cannot start a thread", "signals", e))?;
    Ok(())
}

/// Copy a member's output here, each line prefixed with its label.
fn pump(label: String, from: impl std::io::Read + Send + 'static, to_err: bool) {
    let _ = std::thread::Builder::new()
        .name(format!("looper-{label}"))
        .spawn(move || {
            let mut r = std::io::BufReader::new(from);
            let mut line = Vec::new();
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let mut text = format!("[{label}] ").into_bytes();
                text.extend_from_slice(&line);
                if !text.ends_with(b"\n") {
                    text.push(b'\n');
                }
                // A terminal that went away is not the members' problem (D11).
                let _ = if to_err {
                    std::io::stderr().lock().write_all(&text)
                } else {
                    std::io::stdout().lock().write_all(&text)
                };
            }
        });
}

/// N local child runs; returns their combined exit code (see the module docs).
pub fn run(_args: &RunArgs, settings: &Settings, inv: &Invocation) -> Result<i32> {
    let n = settings.parallel.unwrap_or(1);
    let raw = farm::raw_args()?;
    let group = group_label(settings);
    let exe = farm::self_exe()?;
    let members: Members = Arc::default();
    forward_signals(Arc::clone(&members))?;
    let mut children = Vec::new();
    for i in 1..=n {
        let label = format!("{group}-{i}");
        let mut cmd = Command::new(&exe);
        cmd.args(member_args(&raw, &group, i, true))
            .current_dir(&inv.base_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::io("cannot start the parallel run", &exe, e))?;
        if let Some(out) = child.stdout.take() {
            pump(label.clone(), out, false);
        }
        if let Some(err) = child.stderr.take() {
            pump(label.clone(), err, true);
        }
        if let Ok(mut m) = members.lock() {
            m.push((label.clone(), child.id() as i32));
        }
        children.push((label, child));
    }
    crate::console::out(&format!(
        "looper: {n} parallel runs of {group}: {}",
        children
            .iter()
            .map(|(l, _)| l.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let mut codes = vec![None; children.len()];
    while codes.iter().any(Option::is_none) {
        for (k, (label, child)) in children.iter_mut().enumerate() {
            if codes[k].is_some() {
                continue;
            }
            if let Ok(Some(status)) = child.try_wait() {
                use std::os::unix::process::ExitStatusExt;
                let code = status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
                codes[k] = Some(code);
                // Reaped: its pid may be reused, so it gets no more signals.
                if let Ok(mut m) = members.lock() {
                    m.retain(|(l, _)| l != label);
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let codes: Vec<i32> = codes.into_iter().flatten().collect();
    let combined = combine(&codes);
    crate::console::out(&format!(
        "looper: parallel runs of {group} ended: {} -> exit {combined}",
        children
            .iter()
            .zip(&codes)
            .map(|((l, _), c)| format!("{l} exit {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(combined)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn members_get_the_group_label_and_their_number_before_the_agent_args() {
        let raw = s(&[
            "--worktree",
            "--parallel",
            "3",
            "-l",
            "sweep",
            "--tmux-layout=split",
            "--max-loops",
            "2",
            "--",
            "--parallel",
            "9",
        ]);
        assert_eq!(
            member_args(&raw, "sweep", 2, true),
            s(&[
                "--worktree",
                "--max-loops",
                "2",
                "--local",
                "--tmux-layout",
                "single",
                "--label",
                "sweep",
                "--parallel-index",
                "2",
                "--",
                "--parallel",
                "9"
            ])
        );
        let raw = s(&["run", "--parallel=2", "--label=x", "-ly", "--local"]);
        assert_eq!(
            member_args(&raw, "x", 1, false),
            s(&["run", "--local", "--label", "x", "--parallel-index", "1"])
        );
    }

    #[test]
    fn the_most_serious_exit_code_wins() {
        assert_eq!(combine(&[0, 0, 0]), 0);
        assert_eq!(combine(&[0, 3, 0]), 3);
        assert_eq!(combine(&[3, 130, 0]), 130);
        assert_eq!(combine(&[130, 124]), 124);
        assert_eq!(combine(&[124, 1, 3]), 1);
        assert_eq!(combine(&[1, 2]), 2);
        assert_eq!(combine(&[0, 137]), 1, "killed by SIGKILL: a failure");
    }
}

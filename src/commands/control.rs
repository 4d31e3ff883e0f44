//! `looper control`: the operator's commands, written as one JSON line each into the run's
//! files (D22). The supervisor acts on `control.jsonl` within milliseconds and records
//! `control_command_received`; `--wait` and `--force` watch it do so, and `--force` signals
//! only processes whose identity still matches the run's records.

use std::time::{Duration, Instant};

use chrono::Utc;

use crate::cli::{ControlCommand, Delivery, FocusArgs, NoteArgs, SimpleControlArgs, StopArgs};
use crate::effects::procinfo;
use crate::engine::{ControlAction, StopKind};
use crate::error::{Error, Result, exit_code};
use crate::records::RunState;
use crate::records::control::{ControlLine, FocusRecord, NoteRecord, new_id};
use crate::records::discovery::{self, Stopped, Target};
use crate::records::repair::repair;

/// How often `--wait` and `--force` re-read `state.json`.
const POLL: Duration = Duration::from_millis(50);
/// The longest note accepted: half of the feedback block a prompt carries.
pub const MAX_NOTE_BYTES: usize = crate::engine::feedback::MAX_BLOCK / 2;
/// Longest note preview kept in `operator_notes.jsonl`.
const PREVIEW_CHARS: usize = 200;

pub fn control(cmd: ControlCommand) -> Result<i32> {
    let t = target_of(&cmd);
    // `stop --wait` waits for the run's end: no --host-timeout for it.
    let quick = !matches!(&cmd, ControlCommand::Stop(a) if a.wait || a.force);
    let doc = crate::remote::Shape::Document;
    if let Some(code) = crate::remote::forward(&t.hosts, doc, quick)? {
        return Ok(code);
    }
    if t.json {
        return crate::remote::document("agent-looper/control", || act(cmd));
    }
    act(cmd)
}

fn target_of(cmd: &ControlCommand) -> &crate::cli::TargetArgs {
    match cmd {
        ControlCommand::Stop(a) => &a.target,
        ControlCommand::Pause(a) | ControlCommand::Resume(a) => &a.target,
        ControlCommand::Note(a) => &a.target,
        ControlCommand::Focus(a) => &a.target,
    }
}

fn act(cmd: ControlCommand) -> Result<i32> {
    match cmd {
        ControlCommand::Stop(a) => stop(&a),
        ControlCommand::Pause(a) => simple(&a, ControlAction::Pause),
        ControlCommand::Resume(a) => simple(&a, ControlAction::Resume),
        ControlCommand::Note(a) => note(&a),
        ControlCommand::Focus(a) => focus(&a),
    }
}

/// All whitespace runs collapsed to one space, trimmed.
pub fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn preview(text: &str) -> String {
    let flat = collapse(text);
    if flat.chars().count() > PREVIEW_CHARS {
        let cut: String = flat.chars().take(PREVIEW_CHARS - 3).collect();
        format!("{cut}...")
    } else {
        flat
    }
}

/// Append one control line; returns its id.
fn queue_action(t: &Target, action: ControlAction, reason: Option<&str>) -> Result<String> {
    let line = ControlLine::new(action, reason, None, Utc::now());
    line.append(&t.dir)?;
    let id = line.id().to_string();
    crate::say!(
        "queued {} for {} at {}",
        action.as_str(),
        t.name,
        t.dir.display()
    );
    crate::say!("control id: {id}");
    Ok(id)
}

fn simple(a: &SimpleControlArgs, action: ControlAction) -> Result<i32> {
    let t = discovery::resolve(&a.target.query(), Stopped::Exclude)?;
    queue_action(&t, action, a.reason.as_deref())?;
    Ok(exit_code::OK)
}

/// The stale reason of an active state, if its supervisor is gone.
fn stale(state: &RunState) -> Option<String> {
    if !state.is_active() {
        return None;
    }
    procinfo::stale_reason(state.pid, state.pid_identity.as_deref())
}

fn stop(a: &StopArgs) -> Result<i32> {
    if a.force && (a.after_prompt || a.after_loop) {
        return Err(Error::Usage(
            "--force stops now; it cannot be combined with --after-prompt or --after-loop".into(),
        ));
    }
    let action = if a.now || a.force {
        ControlAction::InterruptNow
    } else if a.after_prompt {
        ControlAction::StopAfterPrompt
    } else {
        ControlAction::StopAfterLoop
    };
    let t = discovery::resolve(&a.target.query(), Stopped::Exclude)?;
    // A dead supervisor will never read the line: for an immediate stop, fix the records
    // instead (the run is already over; nothing is left to signal).
    if action == ControlAction::InterruptNow
        && let Some(state) = t.reload()
        && let Some(reason) = stale(&state)
    {
        let r = repair(&t.dir, &reason, Utc::now())
            .map_err(|e| Error::Usage(format!("stale-state repair failed: {e}")))?;
        crate::say!("repaired stale looper state: {}", r.reason);
        crate::say!("stop reason: {}", r.stop_reason);
        return Ok(exit_code::OK);
    }
    let id = queue_action(&t, action, Some(&a.reason))?;
    if action != ControlAction::InterruptNow
        && let Some(state) = t.reload()
        && let Some(reason) = stale(&state)
    {
        crate::say_err!(
            "warning: {reason}; nothing will read this command. `looper control stop --now` marks the run stopped"
        );
    }
    if a.force {
        force(&t, &id, a.grace_seconds)?;
    }
    if a.wait || a.force {
        return wait(&t);
    }
    Ok(exit_code::OK)
}

/// Poll until the run is no longer active; print its final reason. Exit 0 when it stopped
/// because of a control command (as asked: its `stop_kind` is `control`), 1 otherwise (it
/// ended for another reason, or its supervisor died without recording an end).
fn wait(t: &Target) -> Result<i32> {
    loop {
        let Some(state) = t.reload() else {
            return Err(Error::WithCode {
                message: format!("cannot read {}", t.state_path().display()),
                code: exit_code::AGENT_FAILED,
            });
        };
        if !state.is_active() {
            wait_for_exit(&state);
            let reason = state.stop_reason.unwrap_or_else(|| "-".into());
            crate::say!(
                "{}: {} ({reason})",
                t.name,
                state.status.as_deref().unwrap_or("unknown")
            );
            return Ok(if state.stop_kind == Some(StopKind::Control) {
                exit_code::OK
            } else {
                exit_code::AGENT_FAILED
            });
        }
        if let Some(why) = stale(&state) {
            crate::say!("{}: stale ({why})", t.name);
            return Ok(exit_code::AGENT_FAILED);
        }
        std::thread::sleep(POLL);
    }
}

/// The supervisor records its end before it lets go of the worktree (it still closes its
/// pane, settles a worktree, releases the run lock): `--wait` returns once it has exited, so
/// a looper started right after finds the worktree free. Bounded: a supervisor stuck after
/// its end is no reason to hang the operator's shell.
fn wait_for_exit(state: &RunState) {
    let end = Instant::now() + EXIT_GRACE;
    while procinfo::stale_reason(state.pid, state.pid_identity.as_deref()).is_none()
        && Instant::now() < end
    {
        std::thread::sleep(POLL);
    }
}

/// How long `--wait` gives a supervisor that recorded its end to exit.
const EXIT_GRACE: Duration = Duration::from_secs(30);

/// Wait up to `grace` for the run to stop (or for `done` to hold); true if it did.
fn settled(t: &Target, grace: Duration, done: impl Fn(&RunState) -> bool) -> bool {
    let end = Instant::now() + grace;
    loop {
        match t.reload() {
            Some(s) if !s.is_active() || done(&s) => return true,
            None => return true,
            _ => {}
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Members of the agent's group that still belong to this run: the group is the one the
/// supervisor recorded only while the supervisor that recorded it is alive (same identity)
/// and the members share its session. A pgid reused by someone else fails both checks.
fn run_group(state: &RunState) -> Vec<i32> {
    let Some(pgid) = state
        .child_pgid
        .and_then(|p| i32::try_from(p).ok())
        .filter(|p| *p > 1)
    else {
        return vec![];
    };
    if procinfo::stale_reason(state.pid, state.pid_identity.as_deref()).is_some() {
        return vec![];
    }
    let Some(sup) = state.pid.and_then(|p| i32::try_from(p).ok()) else {
        return vec![];
    };
    let Some(sid) = session_of(sup) else {
        return vec![];
    };
    let members = procinfo::group_members(pgid);
    if members.iter().all(|m| session_of(*m) == Some(sid)) {
        members
    } else {
        vec![]
    }
}

fn session_of(pid: i32) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    procinfo::parse_stat_field(&stat, 6)?.parse().ok()
}

fn signal_group(pgid: i32, sig: nix::sys::signal::Signal) -> bool {
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), sig).is_ok()
}

/// The supervisor's pid, only if its identity still matches the state.
fn live_supervisor(state: &RunState) -> Option<i32> {
    if procinfo::stale_reason(state.pid, state.pid_identity.as_deref()).is_some() {
        return None;
    }
    state.pid.and_then(|p| i32::try_from(p).ok())
}

/// `--force`: give the supervisor `grace` to act on `interrupt_now`; then SIGTERM and, after
/// another grace, SIGKILL the agent group; then the same for the supervisor. Each step
/// re-checks identities, so nothing is signalled blindly.
fn force(t: &Target, id: &str, grace: Duration) -> Result<()> {
    use nix::sys::signal::Signal;
    let acted = |s: &RunState| s.control_last_id.as_deref() == Some(id) && s.child_pgid.is_none();
    if settled(t, grace, acted) {
        return Ok(());
    }
    let Some(state) = t.reload() else {
        return Ok(());
    };
    let pgid = state.child_pgid.and_then(|p| i32::try_from(p).ok());
    if let Some(pgid) = pgid
        && !run_group(&state).is_empty()
    {
        if signal_group(pgid, Signal::SIGTERM) {
            crate::say!("force: sent SIGTERM to agent process group {pgid}");
        }
        let end = Instant::now() + grace;
        while Instant::now() < end && !procinfo::group_members(pgid).is_empty() {
            std::thread::sleep(POLL);
        }
        let state = t.reload().unwrap_or(state);
        if !run_group(&RunState {
            child_pgid: Some(i64::from(pgid)),
            ..state
        })
        .is_empty()
            && signal_group(pgid, Signal::SIGKILL)
        {
            crate::say!("force: sent SIGKILL to agent process group {pgid}");
        }
    }
    // With its agent gone the supervisor records the stop by itself; give it the grace,
    // and at least a second: it drains the agent's pipes and writes its records first.
    let grace = grace.max(Duration::from_secs(1));
    if settled(t, grace, |_| false) {
        return Ok(());
    }
    let Some(state) = t.reload() else {
        return Ok(());
    };
    let Some(pid) = live_supervisor(&state) else {
        return Ok(());
    };
    let target = nix::unistd::Pid::from_raw(pid);
    if nix::sys::signal::kill(target, Signal::SIGTERM).is_ok() {
        crate::say!("force: sent SIGTERM to supervisor {pid}");
    }
    if settled(t, grace, |_| false) {
        return Ok(());
    }
    if let Some(state) = t.reload()
        && live_supervisor(&state) == Some(pid)
        && nix::sys::signal::kill(target, Signal::SIGKILL).is_ok()
    {
        crate::say!("force: sent SIGKILL to supervisor {pid}");
        // SIGKILL leaves no chance to record the end (D11): record it for the supervisor.
        let end = Instant::now() + grace;
        while Instant::now() < end && procinfo::is_running(pid) {
            std::thread::sleep(POLL);
        }
        if let Some(state) = t.reload()
            && let Some(reason) = stale(&state)
        {
            let r = repair(&t.dir, &reason, Utc::now())?;
            crate::say!("repaired stale looper state: {}", r.reason);
        }
    }
    Ok(())
}

fn read_note(a: &NoteArgs) -> Result<String> {
    let text = match (&a.note, &a.note_file) {
        (Some(n), None) => n.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .map_err(|e| Error::Usage(format!("cannot read note file {}: {e}", f.display())))?,
        _ => {
            return Err(Error::Usage(
                "pass exactly one of --note or --note-file".into(),
            ));
        }
    };
    let text = text.trim().to_string();
    if text.is_empty() {
        return Err(Error::Usage("the note is empty".into()));
    }
    // A note travels in the next prompt's feedback block (D29), which has to fit any agent's
    // argv: a longer one is refused now rather than failing the next prompt later.
    if text.len() > MAX_NOTE_BYTES {
        return Err(Error::Usage(format!(
            "the note is {} bytes; at most {MAX_NOTE_BYTES} go into a prompt. Put the text in a file the agent can read and send a note that points to it",
            text.len()
        )));
    }
    Ok(text)
}

fn note(a: &NoteArgs) -> Result<i32> {
    let text = read_note(a)?;
    let t = discovery::resolve(&a.target.query(), Stopped::Exclude)?;
    let now = Utc::now();
    let mut rec = NoteRecord {
        id: new_id(now),
        created_at: now,
        actor: a.actor.trim().to_string(),
        delivery: a.delivery,
        status: "recorded".into(),
        note_preview: preview(&text),
        note: text.clone(),
        run_dir: t.dir.clone(),
        label: t.name.clone(),
        pane: None,
        delivered_text_preview: None,
        error: None,
    };
    let mut failure = None;
    match a.delivery {
        Delivery::Record => {}
        Delivery::NextPrompt => rec.status = "queued".into(),
        Delivery::Btw => {
            let pane = t
                .state
                .as_ref()
                .and_then(|s| s.hybrid_pane_id.clone())
                .filter(|p| !p.is_empty());
            if pane.is_none() {
                failure = Some(
                    "the run has no hybrid agent pane (no hybrid_pane_id in state.json); use --delivery next-prompt or record"
                        .to_string(),
                );
            } else {
                // The supervisor pastes it, between turns, and acknowledges it.
                rec.status = "queued".into();
            }
        }
    }
    if let Some(e) = &failure {
        rec.status = "failed".into();
        rec.error = Some(e.clone());
    }
    rec.append(&t.dir)?;
    let id = rec.id;
    if let Some(e) = failure {
        crate::say_err!("delivery error: {e}");
        crate::say!("note id: {id}");
        return Ok(exit_code::USAGE);
    }
    match a.delivery {
        Delivery::NextPrompt => {
            let reason = format!("note from {}", a.actor.trim());
            let mut line = ControlLine::new(ControlAction::Note, Some(&reason), Some(&text), now);
            // One id for the note and the command that carries it.
            line.id = Some(id.clone());
            line.append(&t.dir)?;
            crate::say!(
                "operator note queued for the next prompt of {} at {}",
                t.name,
                t.dir.display()
            );
        }
        Delivery::Btw => {
            let mut line = ControlLine::new(ControlAction::Note, None, Some(&text), now);
            line.id = Some(id.clone());
            line.delivery = Some(Delivery::Btw);
            line.append(&t.dir)?;
            crate::say!(
                "operator note queued for {}'s pane; waiting for the supervisor to paste it between turns",
                t.name
            );
            return wait_for_btw(&t, &id, a.wait_seconds);
        }
        Delivery::Record => crate::say!(
            "operator note recorded for {} at {}",
            t.name,
            t.dir.display()
        ),
    }
    crate::say!("note id: {id}");
    Ok(exit_code::OK)
}

/// Wait for the supervisor's acknowledgement of a `/btw` note (its line in
/// `operator_notes.jsonl`), the run's end, or the wait's end (a turn may take minutes: the
/// note stays queued after it, and the command says so).
fn wait_for_btw(t: &Target, id: &str, wait: Duration) -> Result<i32> {
    let notes = t.dir.join(crate::records::NOTES_FILE);
    let end = Instant::now() + wait;
    loop {
        let tail = crate::records::fsio::read_tail(&notes, 256 * 1024).unwrap_or_default();
        let ack = crate::records::fsio::parse_jsonl(&tail)
            .into_iter()
            .filter_map(|v| serde_json::from_value::<NoteRecord>(v).ok())
            .find(|r| r.id == id && r.actor == "looper");
        if let Some(r) = ack {
            crate::say!("note id: {id}");
            return if r.status == "delivered" {
                crate::say!(
                    "operator note pasted into pane {} of {}",
                    r.pane.unwrap_or_default(),
                    t.name
                );
                Ok(exit_code::OK)
            } else {
                crate::say_err!(
                    "delivery error: {}",
                    r.error.unwrap_or_else(|| "not delivered".into())
                );
                Ok(exit_code::AGENT_FAILED)
            };
        }
        match t.reload() {
            Some(s) if !s.is_active() => {
                crate::say_err!("delivery error: the run ended before the note could be pasted");
                return Ok(exit_code::AGENT_FAILED);
            }
            Some(s) if let Some(why) = stale(&s) => {
                crate::say_err!("delivery error: {why}; nothing will paste the note");
                return Ok(exit_code::AGENT_FAILED);
            }
            _ => {}
        }
        if Instant::now() >= end {
            crate::say_err!(
                "the note is still queued (note id {id}): the supervisor pastes it when the current turn ends"
            );
            return Ok(exit_code::AGENT_FAILED);
        }
        std::thread::sleep(POLL);
    }
}

fn focus(a: &FocusArgs) -> Result<i32> {
    let summary = collapse(&a.summary);
    if summary.is_empty() {
        return Err(Error::Usage("the focus summary is empty".into()));
    }
    let t = discovery::resolve(&a.target.query(), Stopped::Exclude)?;
    let now = Utc::now();
    let id = new_id(now);
    let rec = FocusRecord {
        id: Some(id.clone()),
        created_at: Some(now),
        actor: Some(a.actor.trim().to_string()),
        source: Some("manual".into()),
        summary: summary.clone(),
    };
    rec.append(&t.dir)?;
    crate::say!("focus updated for {} at {}", t.name, t.dir.display());
    crate::say!("focus id: {id}");
    crate::say!("summary: {summary}");
    Ok(exit_code::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_collapse_and_cut() {
        assert_eq!(collapse("  a\n\tb   c "), "a b c");
        let long = "word ".repeat(100);
        let p = preview(&long);
        assert_eq!(p.chars().count(), 200);
        assert!(p.ends_with("..."));
    }
}

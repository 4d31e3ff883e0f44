//! The dispatcher: the one place engine decisions meet effects, synchronously. Each input
//! is stepped through the engine and each effect applied through the ports; answers that
//! are at hand (prompts loaded, a fingerprint, a plan check, an attempt that could not start)
//! are fed back at once. What takes time (an attempt, a wait) goes back to the async loop
//! in `driver::run` as an [`Applied`] it must hold on to.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;

use super::ports::{Finished, NotStarted, PaneRequest, Ports, Started, Workspace};
use super::sink::Sink;
use crate::agents::Scanner;
use crate::agents::command::{self, AgentCommand, PromptContext};
use crate::config::run::RunConfig;
use crate::config::{AgentKind, Interface};
use crate::console::words;
use crate::effects::holders::Holder;
use crate::effects::hybrid::{self, Pane, Tui};
use crate::effects::outlog::LogWriter;
use crate::effects::process::{AttemptControl, AttemptExit, SpawnSpec};
use crate::engine::panes::{self, PaneFacts, PanePlan};
use crate::engine::{
    AgentCli, AttemptReport, AttemptSpec, Effect, Engine, Event, Input, Status, StopReason,
};
use crate::error::{Error, Result};
use crate::prompts::{self, PromptSet};
use crate::records::accounts::Account;
use crate::records::events::{AgentRetry, SupervisorEvent};
use crate::records::store::Sync;
use crate::records::{CONTROL_FILE, FOCUS_FILE, NOTES_FILE, time};

/// Git work (a fingerprint, a backup), done away from the async loop: it takes the
/// workspace and gives it back with the engine's answer.
pub type GitJob = Box<dyn FnOnce() -> (Box<dyn Workspace + Send>, Input) + Send>;

/// What the async loop must take over after an input was handled.
#[must_use]
pub enum Applied {
    /// An attempt is under way: await it and hand its end to [`Dispatcher::attempt_done`].
    Attempt(AttemptHandle),
    /// Run this on a blocking thread, then hand the result to [`Dispatcher::git_done`]. On a
    /// large work tree this takes seconds: signals and control must not wait for it (found
    /// with SIGTERM taking effect 15-23 s late).
    Git(GitJob),
    /// Wait, then feed `Input::WaitElapsed`.
    Wait(Duration),
    /// The pending wait is cancelled.
    CancelWait,
}

impl std::fmt::Debug for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Applied::Attempt(_) => f.write_str("Attempt"),
            Applied::Git(_) => f.write_str("Git"),
            Applied::Wait(d) => write!(f, "Wait({d:?})"),
            Applied::CancelWait => f.write_str("CancelWait"),
        }
    }
}

/// An attempt's end, to be awaited.
pub struct AttemptHandle(pub super::ports::AttemptFuture);

impl std::fmt::Debug for AttemptHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AttemptHandle")
    }
}

/// How the run presents itself, decided by the caller (terminal, tmux).
#[derive(Clone, Copy, Debug, Default)]
pub struct Presentation {
    /// Echo the rendered transcript in this terminal (single layout).
    pub echo_transcript: bool,
}

mod attempt;
mod gates;
mod human;
mod quota;

/// What the process under way is, so its end is read for the right input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Running {
    Agent,
    Verify,
    Review,
}

pub struct Dispatcher {
    cfg: RunConfig,
    engine: Engine,
    ports: Ports,
    presentation: Presentation,
    run_dir: PathBuf,
    queue: VecDeque<Input>,
    prompts: PromptSet,
    reload_count: u64,
    /// The running attempt's terminate channel; `Some` while an attempt is under way.
    attempt_ctl: Option<mpsc::UnboundedSender<AttemptControl>>,
    attempt_log: Option<PathBuf>,
    /// The hybrid agent pane of the current session.
    pane: Option<Pane>,
    finished: Option<StopReason>,
    /// What the running process is (an attempt, a verify, a reviewer).
    running: Running,
    /// HEAD when the current loop started (the reviewer's `diff_since = "loop"`).
    loop_base: Option<String>,
    /// The plan's open tasks when the current loop started (plan integrity).
    plan_at_loop_start: Vec<String>,
    /// When a person is notified (D33).
    notify: crate::engine::notify::NotifyPolicy,
    /// The agent's account (issue 18), when it has one.
    account: Option<Account>,
    /// When the limit the last account check found was recorded: a success of an attempt
    /// started after that ends it.
    limit_seen_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When the current attempt started.
    attempt_started: Option<chrono::DateTime<chrono::Utc>>,
    /// A failure to read or write the account's record was said (once a run).
    said_account_error: bool,
    /// The agent's program as the run resolved it, and its CLI as last checked.
    cli: Option<(PathBuf, AgentCli)>,
    /// Process groups of this run that work on the current session (issue 18 item 4).
    holders: Vec<Holder>,
    /// A codex json run's thread and its rollout, once found.
    rollout: Option<(String, PathBuf)>,
    /// Where an attempt's sink sends the CLI's own retries (the async loop hands them to
    /// [`Dispatcher::agent_retry`]).
    retries: Option<mpsc::UnboundedSender<AgentRetry>>,
}

impl Dispatcher {
    pub fn new(
        cfg: RunConfig,
        engine: Engine,
        ports: Ports,
        presentation: Presentation,
        run_dir: PathBuf,
    ) -> Self {
        let prompts = cfg.prompts.clone();
        let notify = human::notify_policy(&cfg);
        // The agent's account (its record is read and written through `Ports::accounts`).
        let account = super::account_file(&cfg)
            .map(|f| f.account)
            .filter(|_| !cfg.settings.dry_run);
        let mut ports = ports;
        if let Some(a) = &account {
            let st = ports.records.state();
            st.account = Some(a.name.clone());
            st.account_id = Some(a.id.clone());
        }
        Self {
            cfg,
            engine,
            ports,
            presentation,
            run_dir,
            queue: VecDeque::new(),
            prompts,
            reload_count: 0,
            attempt_ctl: None,
            attempt_log: None,
            pane: None,
            finished: None,
            running: Running::Agent,
            loop_base: None,
            plan_at_loop_start: Vec::new(),
            notify,
            account,
            limit_seen_at: None,
            attempt_started: None,
            said_account_error: false,
            cli: None,
            holders: Vec::new(),
            rollout: None,
            retries: None,
        }
    }

    /// Where the CLIs' own retries go while an attempt runs.
    pub fn with_retries(mut self, tx: mpsc::UnboundedSender<AgentRetry>) -> Self {
        self.retries = Some(tx);
        self
    }

    /// The agent's program and its CLI as found at the start (compared between loops).
    pub fn with_cli(mut self, cli: Option<(PathBuf, AgentCli)>) -> Self {
        self.cli = cli;
        self
    }

    pub fn config(&self) -> &RunConfig {
        &self.cfg
    }

    pub fn say(&mut self, line: &str) {
        self.ports.console.say(line);
    }

    /// The run has ended and no attempt is left to await.
    pub fn is_done(&self) -> bool {
        self.finished.is_some() && self.attempt_ctl.is_none()
    }

    /// Feed one input observed at `now` (seconds since the run started) and everything it
    /// leads to at once; returns what the async loop must hold on to.
    pub fn handle(&mut self, now: f64, input: Input) -> Vec<Applied> {
        self.queue.push_back(input);
        let mut out = Vec::new();
        while let Some(input) = self.queue.pop_front() {
            for effect in self.engine.step(now, input) {
                out.extend(self.apply(effect));
            }
        }
        if self.finished.is_some()
            && self.engine.is_finished()
            && let Some(tx) = &self.attempt_ctl
        {
            // The engine ended while an attempt still runs (its records failed): stop it.
            let _ = tx.send(AttemptControl::Terminate { forceful: false });
        }
        out
    }

    /// A failure of the supervisor's own (records, I/O) is a reason to stop; said once.
    fn fail(&mut self, e: &Error) {
        crate::console::err(&format!("looper: {e}"));
        if self.finished.is_none() {
            self.queue.push_back(Input::Failure(e.to_string()));
        }
    }

    fn check(&mut self, r: Result<()>) {
        if let Err(e) = r {
            self.fail(&e);
        }
    }

    /// Carry out one effect.
    pub fn apply(&mut self, effect: Effect) -> Option<Applied> {
        match effect {
            Effect::Record(event) => {
                let r = self.record(&event);
                self.check(r);
            }
            Effect::SetStatus(status) => {
                self.ports.records.state().status = Some(status.as_str().into());
                if status == Status::Running {
                    self.ports.window.running();
                }
            }
            Effect::LoadPrompts => {
                // The engine asks at the first loop and, with `reload_prompt_each_loop`,
                // before every loop: the file is read each time it asks.
                let input = match prompts::load(
                    &self.cfg.settings.prompt_file,
                    self.cfg.settings.mode,
                    &self.cfg.separator,
                ) {
                    Ok(set) => {
                        self.prompts = set;
                        self.reload_count += 1;
                        Input::PromptsLoaded {
                            count: self.prompts.prompts.len(),
                        }
                    }
                    Err(e) => Input::PromptsFailed {
                        error: e.to_string(),
                    },
                };
                self.note_prompt_facts();
                self.queue.push_back(input);
            }
            Effect::Fingerprint => match self.ports.workspace.take() {
                Some(mut ws) => {
                    return Some(Applied::Git(Box::new(move || {
                        let fp = ws.fingerprint();
                        (ws, Input::Fingerprint(fp))
                    })));
                }
                None => self
                    .queue
                    .push_back(Input::Fingerprint(Err("no git work tree".into()))),
            },
            Effect::Backup { loop_number } => match self.ports.workspace.take() {
                Some(mut ws) => {
                    return Some(Applied::Git(Box::new(move || {
                        let made = ws.backup(loop_number);
                        (ws, Input::BackupDone(made))
                    })));
                }
                None => self
                    .queue
                    .push_back(Input::BackupDone(Err("no git work tree".into()))),
            },
            Effect::RunAttempt(spec) => {
                self.running = Running::Agent;
                // The engine now waits for this attempt's end: a failure to start it (its
                // log cannot be opened, the run directory is gone) must be that end, or the
                // run would wait forever.
                match self.start_attempt(spec) {
                    Ok(Some(started)) => return Some(self.hold(started)),
                    Ok(None) => {}
                    Err(e) => self.not_started(e.to_string()),
                }
            }
            Effect::Wait { duration, purpose } => {
                self.say(&words::wait(duration, purpose));
                return Some(Applied::Wait(duration));
            }
            Effect::CheckPlan => {
                let checked = self.check_plan();
                self.queue.push_back(Input::PlanChecked(checked));
            }
            Effect::CheckAccount => {
                let checked = self.check_account();
                self.queue.push_back(checked);
            }
            Effect::CheckDailyBudget => {
                let checked = self.check_daily();
                self.queue.push_back(checked);
            }
            Effect::MarkLoopStart { loop_number } => self.mark_loop_start(loop_number),
            Effect::RunVerify(spec) => match self.start_verify(spec) {
                Ok(Some(started)) => return Some(self.hold(started)),
                Ok(None) => {}
                Err(e) => self.gate_not_started(Running::Verify, e.to_string()),
            },
            Effect::RunReview(spec) => match self.start_review(spec) {
                Ok(Some(started)) => return Some(self.hold(started)),
                Ok(None) => {}
                Err(e) => self.gate_not_started(Running::Review, e.to_string()),
            },
            Effect::Terminate { forceful } => {
                if let Some(tx) = &self.attempt_ctl {
                    let _ = tx.send(AttemptControl::Terminate { forceful });
                }
            }
            Effect::CancelWait => return Some(Applied::CancelWait),
            Effect::PasteNote { id, text } => {
                let r = self.paste_note(id, text);
                self.check(r);
            }
            Effect::RequestApproval(req) => {
                let r = self.ports.records.request_approval(&req);
                self.check(r);
            }
            Effect::Finish(reason) => {
                self.say(&words::stop(&reason));
                self.ports.window.finished(&reason);
                self.finished = Some(reason);
            }
        }
        None
    }

    fn record(&mut self, event: &Event) -> Result<()> {
        let lines = words::for_event(event, self.attempt_log.as_deref());
        for line in &lines {
            self.ports.console.say(line);
        }
        match event {
            Event::PromptStarted {
                loop_number,
                prompt_index,
                ..
            } => {
                self.attempt_log = Some(self.ports.records.prompt_log(*loop_number, *prompt_index));
            }
            Event::RetryWait {
                retry_status,
                wait_seconds,
                ..
            }
            | Event::QuotaWait {
                retry_status,
                wait_seconds,
                ..
            } => {
                let notify_after = self.cfg.settings.retry_notify_after;
                self.ports
                    .window
                    .retrying(retry_status, *wait_seconds, notify_after);
            }
            Event::BackupCreated {
                loop_number: 1,
                commit,
                snapshot: true,
                ..
            } => {
                // The first dirty snapshot is the work tree as the run found it: what
                // `looper diff` compares a run without a worktree to.
                let st = self.ports.records.state();
                if st.start_snapshot.is_none() {
                    st.start_snapshot = Some(commit.clone());
                }
            }
            Event::LoopCompleted { .. } => {
                if self
                    .ports
                    .checkout
                    .as_ref()
                    .is_some_and(|c| c.is_worktree())
                {
                    self.measure_changes();
                }
                // Between loops, one `stat`: has the CLI been replaced (an auto-update)?
                self.check_cli()?;
            }
            _ => {}
        }
        self.ports.records.append(event)?;
        // Issue 17: delivered answers are marked done, a person is notified (D33).
        self.human_records(event)?;
        let sync = match event {
            Event::RunStarted { .. } | Event::RunStopped { .. } => Sync::Now,
            Event::LoopCompleted { .. } => Sync::Soon,
            // The snapshot is written once the attempt's (verify's, reviewer's) process is
            // known (with its pid), which follows these at once: one atomic replace, not three.
            Event::LoopStarted { .. }
            | Event::PromptStarted { .. }
            | Event::VerifyStarted { .. }
            | Event::ReviewStarted { .. }
            | Event::NoteDelivered { .. } => return Ok(()),
            _ => Sync::No,
        };
        self.ports.records.save(sync)
    }

    /// What the run changed so far, into the state (`looper status` reads it from there).
    fn measure_changes(&mut self) {
        let st = self.ports.records.state();
        let Some(base) = st
            .worktree_base
            .clone()
            .or_else(|| st.start_snapshot.clone())
            .or_else(|| st.base_commit.clone())
        else {
            return;
        };
        let Some(checkout) = self.ports.checkout.as_mut() else {
            return;
        };
        // A measurement that fails (the work tree vanished) leaves the last one standing.
        if let Ok(c) = checkout.changes(&base) {
            let st = self.ports.records.state();
            st.branch = c.branch;
            st.commits_ahead = Some(c.commits_ahead);
            st.files_changed = Some(c.files_changed);
        }
    }

    fn note_prompt_facts(&mut self) {
        let st = self.ports.records.state();
        st.prompt_sha256 = Some(self.prompts.sha256.clone());
        st.prompt_bytes = Some(self.prompts.bytes);
        st.prompt_mtime = self.prompts.mtime.as_deref().and_then(time::parse);
        st.prompt_reload_count = Some(self.reload_count);
        st.total_prompts = Some(self.prompts.prompts.len() as u64);
    }

    /// The attempt's end without it having run.
    fn not_started(&mut self, why: String) {
        self.attempt_ctl = None;
        self.queue.push_back(Input::AttemptFinished(AttemptReport {
            spawn_error: Some(why),
            ..AttemptReport::default()
        }));
    }

    fn hold(&mut self, started: Started) -> Applied {
        self.attempt_ctl = Some(started.control);
        Applied::Attempt(AttemptHandle(started.done))
    }

    /// Git work done: the workspace comes back and its answer goes to the engine.
    pub fn git_done(
        &mut self,
        now: f64,
        workspace: Box<dyn Workspace + Send>,
        input: Input,
    ) -> Vec<Applied> {
        self.ports.workspace = Some(workspace);
        self.handle(now, input)
    }

    /// An attempt's end, from the async loop.
    pub fn attempt_done(&mut self, now: f64, done: Finished) -> Vec<Applied> {
        let Finished {
            exit,
            mut sink,
            failure,
        } = done;
        self.attempt_ctl = None;
        match self.running {
            Running::Verify => {
                let report = self.verify_report(exit, &mut sink, failure);
                return self.handle(now, Input::VerifyFinished(report));
            }
            Running::Review => {
                let report = self.review_report(exit, &mut sink, failure);
                return self.handle(now, Input::ReviewFinished(report));
            }
            Running::Agent => {}
        }
        let report = match failure {
            Some(e) => {
                let _ = sink.log.note("stop_reason", &e);
                AttemptReport {
                    spawn_error: Some(e),
                    output_bytes: sink.scanner.text_bytes,
                    ..AttemptReport::default()
                }
            }
            None => self.report(exit, &mut sink),
        };
        // What the attempt said about its account, for this run and every other looper.
        if let Err(e) = self.learn_from_attempt(&report, &sink) {
            self.fail(&e);
        }
        self.handle(now, Input::AttemptFinished(report))
    }

    /// A `/btw` note, pasted into the pane between turns and acknowledged in
    /// `operator_notes.jsonl` (what `looper control note --delivery btw` waits for).
    fn paste_note(&mut self, id: String, text: String) -> Result<()> {
        let pasted = format!(
            "/btw {}",
            text.split_whitespace().collect::<Vec<_>>().join(" ")
        );
        let outcome = match &self.pane {
            Some(pane) => self
                .ports
                .panes
                .paste_note(pane, &pasted)
                .map(|()| pane.id.clone()),
            None => Err("the run has no hybrid agent pane open".into()),
        };
        let now = chrono::Utc::now();
        let preview = |t: &str| t.chars().take(200).collect::<String>();
        let record = crate::records::control::NoteRecord {
            id,
            created_at: now,
            actor: "looper".into(),
            delivery: crate::records::control::Delivery::Btw,
            status: if outcome.is_ok() {
                "delivered"
            } else {
                "failed"
            }
            .into(),
            note_preview: preview(&text),
            note: text,
            run_dir: self.run_dir.clone(),
            label: self.cfg.label.clone(),
            pane: outcome.as_ref().ok().cloned(),
            delivered_text_preview: outcome.as_ref().ok().map(|_| preview(&pasted)),
            error: outcome.as_ref().err().cloned(),
        };
        match &outcome {
            Ok(pane) => self.say(&format!("note: /btw pasted into pane {pane}")),
            Err(e) => self.say(&format!("note: /btw not delivered: {e}")),
        }
        self.ports.records.note(&record)
    }

    /// A line of the control file that is not a command: recorded, not acted on.
    pub fn control_rejected(&mut self, bad: crate::records::control::BadLine) {
        self.say(&format!(
            "control: ignored line {} of control.jsonl: {}",
            bad.line_no, bad.why
        ));
        let r = self
            .ports
            .records
            .append_supervisor(&SupervisorEvent::ControlLineRejected {
                line: bad.line_no,
                why: bad.why,
                preview: bad.preview,
            });
        self.check(r);
    }

    /// The focus reported in `focus.jsonl` changed.
    pub fn focus(&mut self, focus: String) {
        self.say(&format!("focus: {focus}"));
        self.ports.records.state().focus = Some(focus);
    }

    /// The run is over: close the pane (unless kept) and write the final state once more.
    /// Returns the exit code and whether the end could not be recorded.
    pub fn close(mut self) -> (i32, Option<Error>) {
        let mut pane_kept = false;
        let mut closed_pane = None;
        if let Some(pane) = self.pane.take() {
            if panes::close_at_end(self.cfg.settings.keep_agent_pane) {
                self.ports.panes.close(&pane);
                closed_pane = Some(pane.pid);
                // Nothing of the pane outlives the run (a process that ignored the hangup).
                if let Err(e) = self.release_session(&pane.session_id) {
                    crate::console::err(&format!("looper: {e}"));
                }
            } else {
                pane_kept = true;
            }
        }
        // The agent is gone (or its pane kept): measure what the run changed, then settle
        // its worktree under the cleanup rules and say what became of it.
        if !self.cfg.settings.dry_run {
            self.measure_changes();
        }
        if let Some(outcome) = self
            .ports
            .checkout
            .as_mut()
            .and_then(|c| c.finish(pane_kept, closed_pane))
        {
            self.say(&format!("looper: {}", outcome.text()));
            let event = SupervisorEvent::worktree_outcome(&outcome);
            if let Err(e) = self.ports.records.append_supervisor(&event) {
                crate::console::err(&format!("looper: {e}"));
            }
        }
        // The records of the end may have failed (a full disk): try the final state once
        // more; if it still cannot be written, the run did not end as asked.
        let unrecorded = self.ports.records.save(Sync::Now).err();
        self.ports.records.release_reserve();
        let reason = self.finished.take().unwrap_or(StopReason::Internal(
            "the run ended without a reason".into(),
        ));
        (reason.exit_code(), unrecorded)
    }
}

#[cfg(test)]
mod tests;

//! The dispatcher: the one place engine decisions meet effects, synchronously. Each input
//! is stepped through the engine and each effect applied through the ports; answers that
//! are at hand (prompts loaded, a fingerprint, a plan check, an attempt that could not start)
//! are fed back at once. What takes time (an attempt, a wait) goes back to the async loop
//! in `driver::run` as an [`Applied`] it must hold on to.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;

use super::ports::{Finished, NotStarted, PaneRequest, Ports, Started};
use super::sink::Sink;
use crate::agents::Scanner;
use crate::agents::command::{self, AgentCommand, PromptContext};
use crate::config::run::RunConfig;
use crate::config::{AgentKind, Interface};
use crate::console::words;
use crate::effects::hybrid::{self, Pane, Tui};
use crate::effects::outlog::LogWriter;
use crate::effects::process::{AttemptControl, AttemptExit, SpawnSpec};
use crate::engine::panes::{self, PaneFacts, PanePlan};
use crate::engine::{AttemptReport, AttemptSpec, Effect, Engine, Event, Input, Status, StopReason};
use crate::error::{Error, Result};
use crate::prompts::{self, PromptSet};
use crate::records::events::SupervisorEvent;
use crate::records::store::Sync;
use crate::records::{CONTROL_FILE, FOCUS_FILE, NOTES_FILE, time};

/// What the async loop must take over after an input was handled.
#[must_use]
#[derive(Debug)]
pub enum Applied {
    /// An attempt is under way: await it and hand its end to [`Dispatcher::attempt_done`].
    Attempt(AttemptHandle),
    /// Wait, then feed `Input::WaitElapsed`.
    Wait(Duration),
    /// The pending wait is cancelled.
    CancelWait,
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
        }
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
            Effect::Fingerprint => {
                let fp = match self.ports.workspace.as_mut() {
                    Some(ws) => ws.fingerprint(),
                    None => Err("no git work tree".into()),
                };
                self.queue.push_back(Input::Fingerprint(fp));
            }
            Effect::Backup { loop_number } => {
                let made = match self.ports.workspace.as_mut() {
                    Some(ws) => ws.backup(loop_number),
                    None => Err("no git work tree".into()),
                };
                self.queue.push_back(Input::BackupDone(made));
            }
            Effect::RunAttempt(spec) => {
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
                let checked = match &self.cfg.settings.plan_file {
                    Some(plan) => match std::fs::read(plan) {
                        Ok(bytes) => Ok(crate::engine::plan::unchecked_tasks(
                            &String::from_utf8_lossy(&bytes),
                        )),
                        Err(_) => Err(plan.display().to_string()),
                    },
                    None => Ok(0),
                };
                self.queue.push_back(Input::PlanChecked(checked));
            }
            Effect::Terminate { forceful } => {
                if let Some(tx) = &self.attempt_ctl {
                    let _ = tx.send(AttemptControl::Terminate { forceful });
                }
            }
            Effect::CancelWait => return Some(Applied::CancelWait),
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
            } => {
                let notify_after = self.cfg.settings.retry_notify_after;
                self.ports
                    .window
                    .retrying(retry_status, *wait_seconds, notify_after);
            }
            _ => {}
        }
        self.ports.records.append(event)?;
        let sync = match event {
            Event::RunStarted { .. } | Event::RunStopped { .. } => Sync::Now,
            Event::LoopCompleted { .. } => Sync::Soon,
            // The snapshot is written once the attempt's process is known (with its pid),
            // which follows these at once: one atomic replace instead of three.
            Event::LoopStarted { .. }
            | Event::PromptStarted { .. }
            | Event::NoteDelivered { .. } => return Ok(()),
            _ => Sync::No,
        };
        self.ports.records.save(sync)
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

    /// The prompt text of an attempt: the prompt, then the operator's notes, once each.
    fn prompt_text(&self, spec: &AttemptSpec) -> Option<String> {
        let base = self
            .prompts
            .prompts
            .get(spec.prompt_index.saturating_sub(1))?;
        let mut prompt = base.clone();
        for (_, note) in &spec.notes {
            prompt.push_str("\n\nOperator note: ");
            prompt.push_str(note);
        }
        Some(prompt)
    }

    /// Start an attempt: `Ok(None)` when its end is already known (queued as an input).
    fn start_attempt(&mut self, spec: AttemptSpec) -> Result<Option<Started>> {
        let Some(prompt) = self.prompt_text(&spec) else {
            self.not_started(format!(
                "prompt {} no longer exists in {}",
                spec.prompt_index,
                self.prompts.path.display()
            ));
            return Ok(None);
        };
        let run_dir = self.run_dir.display().to_string();
        let ctx = PromptContext {
            prompt: &prompt,
            session: &spec.session,
            loop_number: spec.loop_number,
            prompt_index: spec.prompt_index,
            label: &self.cfg.label,
            run_dir: &run_dir,
        };
        let cmd = match command::build(&self.cfg.settings.agent, &ctx) {
            Ok(c) => c,
            Err(e) => {
                self.not_started(e.to_string());
                return Ok(None);
            }
        };
        let hybrid = self.cfg.settings.agent.interface == Interface::Hybrid;
        // The hybrid pane runs the TUI, not this command.
        if hybrid && !spec.dry_run {
            return self.start_hybrid_attempt(spec, prompt);
        }
        let shown = clip_command(if hybrid {
            // Only a dry run gets here: show what the pane would run.
            format!(
                "{} (in a hybrid pane; the prompt is pasted)",
                self.pane_command(&spec).display()
            )
        } else {
            cmd.display()
        });
        self.say(&format!("$ {shown}"));
        if spec.dry_run {
            self.queue.push_back(Input::AttemptFinished(AttemptReport {
                exit_code: Some(0),
                dry_run: true,
                ..AttemptReport::default()
            }));
            return Ok(None);
        }
        let log = self.open_attempt_log(&spec, &format!("$ {shown}"))?;
        let s = &self.cfg.settings;
        let spawn_spec = SpawnSpec {
            // Each command template's own program (D12: never through a shell).
            program: self.cfg.program_path(&cmd.program),
            args: cmd.args,
            env: self.agent_env(),
            cwd: s.agent.cwd.clone(),
            stdin: cmd.stdin,
            timeout: s.timeout,
            grace: s.terminate_grace,
            leak_timeout: s.pipe_leak_timeout,
        };
        let sink = self.new_sink(log, self.presentation.echo_transcript);
        match self.ports.agents.spawn(spawn_spec, sink) {
            Ok(started) => {
                let st = self.ports.records.state();
                st.child_pid = started.pid.map(i64::from);
                st.child_pgid = started.pgid.map(i64::from);
                self.ports.records.save(Sync::No)?;
                Ok(Some(started))
            }
            Err(failed) => {
                let NotStarted { why, mut sink } = *failed;
                let _ = sink
                    .log
                    .note("stop_reason", &format!("failed to start agent: {why}"));
                self.not_started(why);
                Ok(None)
            }
        }
    }

    /// The prompt's log (retries append to it), opened with a note naming the attempt.
    fn open_attempt_log(&self, spec: &AttemptSpec, how: &str) -> Result<LogWriter> {
        let path = self
            .attempt_log
            .clone()
            .unwrap_or_else(|| self.run_dir.join("attempt.log"));
        let mut log = LogWriter::open(&path).map_err(|e| Error::io("cannot open log", &path, e))?;
        let _ = log.note(
            "looper",
            &format!(
                "attempt {} of prompt {}: {how}",
                spec.attempt, spec.prompt_index
            ),
        );
        Ok(log)
    }

    fn new_sink(&self, log: LogWriter, echo: bool) -> Sink {
        let s = &self.cfg.settings;
        let scanner = Scanner::new(
            s.agent.kind,
            s.agent.scan_stdout_for_stop_patterns,
            self.cfg.completion.clone(),
            self.cfg.output_match.clone(),
            self.cfg.classifier.clone(),
            chrono::Utc::now().timestamp_millis() as f64 / 1000.0,
        );
        Sink::new(log, scanner, echo, s.kill_on_stop_pattern)
    }

    /// The agent's environment: the agent table's, and the run context with absolute paths
    /// under both names (D4). The supervisor's own environment is inherited by the spawn.
    fn agent_env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self
            .cfg
            .settings
            .agent
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let path = |name: &str| self.run_dir.join(name).display().to_string();
        let ctx = [
            ("RUN_DIR", self.run_dir.display().to_string()),
            ("LABEL", self.cfg.label.clone()),
            ("CONTROL_FILE", path(CONTROL_FILE)),
            ("FOCUS_FILE", path(FOCUS_FILE)),
            ("OPERATOR_NOTES_FILE", path(NOTES_FILE)),
        ];
        for (k, v) in ctx {
            env.push((format!("CODEX_LOOPER_{k}"), v.clone()));
            env.push((format!("LOOPER_{k}"), v));
        }
        env
    }

    /// What a hybrid pane runs for this attempt's session.
    fn pane_command(&self, spec: &AttemptSpec) -> AgentCommand {
        let argv = command::interactive(
            &self.cfg.settings.agent,
            &self.cfg.agent_program(),
            &spec.session,
        );
        let (program, args) = argv
            .split_first()
            .map(|(p, a)| (p.clone(), a.to_vec()))
            .unwrap_or_else(|| (self.cfg.settings.agent.executable.clone(), vec![]));
        AgentCommand {
            program,
            args,
            stdin: None,
        }
    }

    fn tui(&self) -> Tui {
        if self.cfg.settings.agent.kind == AgentKind::Codex {
            Tui::Codex
        } else {
            Tui::Claude
        }
    }

    /// A turn in the hybrid pane: the pane policy (`engine::panes`) says which pane, then
    /// the prompt is pasted and the transcript followed.
    fn start_hybrid_attempt(
        &mut self,
        spec: AttemptSpec,
        prompt: String,
    ) -> Result<Option<Started>> {
        let session_id = spec.session.id.clone().unwrap_or_default();
        // Whether the pane is still there matters only for the session it serves.
        let gone = match &self.pane {
            Some(p) if !session_id.is_empty() && p.session_id == session_id => {
                self.ports.panes.gone(p)
            }
            _ => false,
        };
        let plan = panes::plan(
            self.pane.as_ref().map(|p| PaneFacts {
                session_id: &p.session_id,
                gone,
            }),
            &session_id,
        );
        if plan.opens()
            && let Some(old) = self.pane.take()
        {
            self.ports.panes.close(&old);
            if plan == PanePlan::Replace {
                self.ports
                    .records
                    .append_supervisor(&SupervisorEvent::HybridSessionReset {
                        previous_hybrid_pane_id: old.id.clone(),
                    })?;
                self.ports.records.state().previous_hybrid_pane_id = Some(old.id);
            } else {
                self.say(&format!(
                    "hybrid {} pane {} is gone; reopening session {}",
                    old.tui.name(),
                    old.id,
                    old.session_id
                ));
            }
        }
        let mut log = self.open_attempt_log(&spec, "(hybrid pane)")?;
        if self.pane.is_none() {
            let req = self.pane_request(&spec);
            match self.ports.panes.open(&req) {
                Ok(pane) => self.pane_opened(pane, &req)?,
                Err(e) => {
                    let _ = log.note("stop_reason", &e);
                    self.not_started(e);
                    return Ok(None);
                }
            }
        }
        let Some(pane) = self.pane.clone() else {
            return Ok(None);
        };
        self.say(&format!(
            "prompt {} ({} bytes) to {} pane {}",
            spec.prompt_index,
            prompt.len(),
            pane.tui.name(),
            pane.id
        ));
        let sink = self.new_sink(log, false);
        let timeout = self.cfg.settings.timeout;
        Ok(Some(self.ports.panes.turn(pane, prompt, timeout, sink)))
    }

    fn pane_request(&self, spec: &AttemptSpec) -> PaneRequest {
        let agent = &self.cfg.settings.agent;
        let mut env = self.agent_env();
        // The pane's process is the tmux server's child, not ours: what selects the TUI's
        // login and transcript must be passed on explicitly.
        for k in ["CODEX_HOME", "CLAUDE_CONFIG_DIR", "CLAUDE_HOME"] {
            if !agent.env.contains_key(k)
                && let Some(v) = self.cfg.env.get(k)
            {
                env.push((k.to_string(), v.clone()));
            }
        }
        let lookup = |k: &str| agent.env.get(k).or_else(|| self.cfg.env.get(k)).cloned();
        let tui = self.tui();
        let cmd = self.pane_command(spec);
        PaneRequest {
            target: self
                .cfg
                .tmux
                .as_ref()
                .map(|t| t.pane.clone())
                .unwrap_or_default(),
            cwd: agent.cwd.clone(),
            env,
            argv: std::iter::once(cmd.program).chain(cmd.args).collect(),
            tui,
            session_id: spec.session.id.clone().unwrap_or_default(),
            transcript: hybrid::pane_transcript(tui, lookup, &agent.cwd, &spec.session),
        }
    }

    fn pane_opened(&mut self, pane: Pane, req: &PaneRequest) -> Result<()> {
        let session = if req.session_id.is_empty() {
            format!("a new {} session", req.tui.name())
        } else {
            format!("session {}", req.session_id)
        };
        self.say(&format!(
            "hybrid {} pane {} (pid {}) for {session}",
            req.tui.name(),
            pane.id,
            pane.pid
        ));
        let event = SupervisorEvent::HybridPaneStarted {
            tui: req.tui.name().into(),
            pane_id: pane.id.clone(),
            pane_pid: u32::try_from(pane.pid).unwrap_or_default(),
            session_id: Some(req.session_id.clone()).filter(|s| !s.is_empty()),
            argv: req.argv.clone(),
        };
        let st = self.ports.records.state();
        st.hybrid_pane_id = Some(pane.id.clone());
        st.hybrid_pane_pid = Some(serde_json::json!(pane.pid));
        // Held first, so the run's end closes it even if the records fail.
        self.pane = Some(pane);
        self.ports.records.append_supervisor(&event)?;
        self.ports.records.save(Sync::No)
    }

    /// An attempt's end, from the async loop.
    pub fn attempt_done(&mut self, now: f64, done: Finished) -> Vec<Applied> {
        let Finished {
            exit,
            mut sink,
            failure,
        } = done;
        self.attempt_ctl = None;
        let report = match failure {
            Some(e) => {
                let _ = sink.log.note("stop_reason", &e);
                AttemptReport {
                    spawn_error: Some(e),
                    output_bytes: sink.scanner.bytes,
                    ..AttemptReport::default()
                }
            }
            None => self.report(exit, &mut sink),
        };
        self.handle(now, Input::AttemptFinished(report))
    }

    fn report(&mut self, exit: AttemptExit, sink: &mut Sink) -> AttemptReport {
        let rc = match (exit.exit_code, exit.signal) {
            (Some(c), _) => c.to_string(),
            (None, Some(sig)) => format!("signal {sig}"),
            _ => "unknown".into(),
        };
        let _ = sink.log.note("returncode", &rc);
        if exit.timed_out {
            let _ = sink.log.note(
                "stop_reason",
                &StopReason::Timeout(self.cfg.settings.timeout.as_secs_f64()).reason(),
            );
        } else if let Some(e) = &sink.scanner.error {
            let _ = sink.log.note("stop_reason", &e.reason);
        }
        if exit.pipes_leaked {
            let _ = sink.log.note(
                "looper",
                "the agent exited but a descendant held its output open; the group was killed",
            );
        }
        if let Some(err) = sink.log_error.take() {
            self.queue.push_back(Input::Failure(err));
        }
        if let Some(n) = sink.notice.take() {
            self.ports.records.state().agent_notice = Some(n);
        }
        let sc = &sink.scanner;
        if let Some(pane) = self.pane.as_mut() {
            pane.turns += 1;
            if let Some(id) = &sc.session_id {
                pane.learn_session(id);
            }
        }
        AttemptReport {
            exit_code: exit.exit_code,
            signal: exit.signal,
            timed_out: exit.timed_out,
            spawn_error: None,
            output_bytes: sc.bytes,
            completion_seen: sc.completion_seen,
            output_match_seen: sc.match_seen,
            session_id: sc.session_id.clone(),
            usage: sc.usage,
            error: sc.error.clone(),
            dry_run: false,
        }
    }

    /// The focus reported in `focus.jsonl` changed.
    pub fn focus(&mut self, focus: String) {
        self.say(&format!("focus: {focus}"));
        self.ports.records.state().focus = Some(focus);
    }

    /// The run is over: close the pane (unless kept) and write the final state once more.
    /// Returns the exit code and whether the end could not be recorded.
    pub fn close(mut self) -> (i32, Option<Error>) {
        if let Some(pane) = self.pane.take()
            && panes::close_at_end(self.cfg.settings.keep_agent_pane)
        {
            self.ports.panes.close(&pane);
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

/// Commands are shown whole up to 600 bytes.
fn clip_command(shown: String) -> String {
    if shown.len() > 600 {
        format!("{}…", &shown[..shown.floor_char_boundary(600)])
    } else {
        shown
    }
}

#[cfg(test)]
#[path = "dispatch_tests.rs"]
mod tests;

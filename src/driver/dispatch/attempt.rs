//! Starting an attempt and reading its end: the prompt with its notes, the agent's command
//! and environment, the log and the sink, a process through `AgentProcesses` or a turn in a
//! hybrid pane through `Panes` (following `engine::panes`), and the report for the engine.

use super::*;

impl Dispatcher {
    /// The prompt text of an attempt: the prompt, then the operator's notes, once each.
    fn prompt_text(&self, spec: &AttemptSpec) -> Option<String> {
        let base = self
            .prompts
            .prompts
            .get(spec.prompt_index.saturating_sub(1))?;
        let mut prompt = base.clone();
        if let Some(block) = &spec.feedback {
            prompt.push_str("\n\n");
            prompt.push_str(block);
        }
        Some(prompt)
    }

    /// Start an attempt: `Ok(None)` when its end is already known (queued as an input).
    pub(super) fn start_attempt(&mut self, spec: AttemptSpec) -> Result<Option<Started>> {
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
        let mut log = self.open_attempt_log(&spec, &format!("$ {shown}"))?;
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
        // Never a second process on a session an earlier one still holds (issue 18).
        if spec.session.resume
            && let Some(id) = spec.session.id.clone()
            && let Err(e) = self.release_session(&id)
        {
            let why =
                format!("cannot resume session {id}: an earlier process still holds it ({e})");
            let _ = log.note("stop_reason", &why);
            self.not_started(why);
            return Ok(None);
        }
        let sink = self.new_sink(log, self.presentation.echo_transcript);
        self.attempt_started = Some(chrono::Utc::now());
        match self.ports.agents.spawn(spawn_spec, sink) {
            Ok(started) => {
                if let Some(pgid) = started.pgid {
                    let id = spec.session.id.clone().unwrap_or_default();
                    self.hold_session(id, pgid);
                }
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
        )
        .with_ignored_marker(self.cfg.ignored_marker.clone());
        let scanner = if s.completion_must_be_last {
            scanner.with_last_text(true)
        } else {
            scanner
        };
        let mut sink = Sink::new(log, scanner, echo, s.kill_on_stop_pattern);
        sink.retries = self.retries.clone();
        sink
    }

    /// The agent's environment: the agent table's, and the run context with absolute paths
    /// under both names (D4). The supervisor's own environment is inherited by the spawn.
    pub(super) fn agent_env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self
            .cfg
            .settings
            .agent
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.extend(self.run_context_env());
        env
    }

    /// The run context (D4) under both names, with absolute paths.
    pub(super) fn run_context_env(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
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
            // A pane reopened on a session: whatever of the old pane still runs goes first.
            if plan == PanePlan::Reopen
                && let Err(e) = self.release_session(&session_id)
            {
                let why = format!(
                    "cannot reopen session {session_id}: the closed pane's processes still hold it ({e})"
                );
                let _ = log.note("stop_reason", &why);
                self.not_started(why);
                return Ok(None);
            }
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
        self.attempt_started = Some(chrono::Utc::now());
        Ok(Some(self.ports.panes.turn(pane, prompt, timeout, sink)))
    }

    fn pane_request(&self, spec: &AttemptSpec) -> PaneRequest {
        let agent = &self.cfg.settings.agent;
        // The pane's process is the tmux server's child, not ours: it is given the whole
        // environment a spawned agent inherits (the supervisor's, then the agent's own), so
        // what the launching shell exported (the TUI's login, its API key, where its
        // transcript goes) reaches it too (`effects::hybrid::start_pane` hands it over).
        let mut all: std::collections::BTreeMap<String, String> = self.cfg.env.clone();
        all.extend(self.agent_env());
        let env: Vec<(String, String)> = all.into_iter().collect();
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
        // The TUI leads the pane's process group: that group holds the session.
        self.hold_session(req.session_id.clone(), pane.pid);
        let st = self.ports.records.state();
        st.hybrid_pane_id = Some(pane.id.clone());
        st.hybrid_pane_pid = Some(serde_json::json!(pane.pid));
        // Held first, so the run's end closes it even if the records fail.
        self.pane = Some(pane);
        self.ports.records.append_supervisor(&event)?;
        self.ports.records.save(Sync::No)
    }

    pub(super) fn report(&mut self, exit: AttemptExit, sink: &mut Sink) -> AttemptReport {
        let rc = match (exit.exit_code, exit.signal) {
            (Some(c), _) => c.to_string(),
            (None, Some(sig)) => format!("signal {sig}"),
            _ => "unknown".into(),
        };
        let _ = sink.log.note("returncode", &rc);
        // The agent's end is not known (issue 13, defect 2): a supervisor failure, never a
        // success.
        if let Some(e) = &exit.error {
            let _ = sink.log.note("stop_reason", e);
            self.queue.push_back(Input::Failure(e.clone()));
        }
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
        // A session named by the agent (codex's thread) is known now: so is its holder.
        if let Some(id) = &sc.session_id {
            for h in self.holders.iter_mut().filter(|h| h.session_id.is_empty()) {
                h.session_id = id.clone();
            }
        }
        AttemptReport {
            exit_code: exit.exit_code,
            signal: exit.signal,
            timed_out: exit.timed_out,
            spawn_error: None,
            output_bytes: sc.text_bytes,
            completion_seen: sc.completion(),
            marker_seen_while_off: sc.marker_seen_while_off,
            output_match_seen: sc.match_seen,
            session_id: sc.session_id.clone(),
            usage: sc.usage,
            error: sc.error.clone(),
            last_error_line: sc.last_error_text.clone(),
            dry_run: false,
        }
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

impl Dispatcher {
    /// Remember that process group `pgid` (an attempt's, a pane's) works on `session_id`.
    /// Only the current session's holders are kept: a session is resumed only while it is
    /// the current one.
    fn hold_session(&mut self, session_id: String, pgid: i32) {
        self.holders
            .retain(|h| h.session_id == session_id || h.session_id.is_empty());
        let leader_identity = self.ports.holders.identify(pgid);
        self.holders.push(Holder {
            session_id,
            pgid,
            leader_identity,
        });
    }

    /// End what still runs of earlier processes of `session_id` (before it is resumed, and
    /// when the run closes its pane); an error when something survived (an attempt must then
    /// not start).
    pub(super) fn release_session(&mut self, session_id: &str) -> std::result::Result<(), String> {
        let mut kept = Vec::new();
        let mut failure = None;
        for h in std::mem::take(&mut self.holders) {
            if h.session_id != session_id {
                kept.push(h);
                continue;
            }
            match self.ports.holders.release(&h) {
                Ok(pids) if pids.is_empty() => {}
                Ok(pids) => {
                    self.say(&format!(
                        "session {session_id}: processes {pids:?} of an earlier attempt still ran; ended before resuming it"
                    ));
                    let event = SupervisorEvent::SessionHolderEnded {
                        session_id: session_id.to_string(),
                        pids,
                    };
                    let r = self.ports.records.append_supervisor(&event);
                    self.check(r);
                }
                Err(e) => {
                    failure = Some(e);
                    kept.push(h);
                }
            }
        }
        self.holders = kept;
        failure.map_or(Ok(()), Err)
    }
}

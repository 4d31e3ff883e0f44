//! The gates' effects (issue 15): where a loop starts (HEAD, the plan's open tasks), the
//! plan check, the verify command and the reviewer. Both run like an agent attempt, through
//! `AgentProcesses` (`effects::process`: own group, two-stage stop, no orphans, bounded
//! output), each with its loop's log; the reviewer sees a diff the looper makes from git.

use std::collections::BTreeMap;

use super::*;
use crate::config::gates::DiffSince;
use crate::config::rubric;
use crate::driver::gate_output::{FEEDBACK_TAIL, GateOutput};
use crate::effects::diff::{self, DiffView};
use crate::engine::plan;
use crate::engine::{PlanCheck, ReviewReport, ReviewSpec, VerifyReport, VerifySpec};
use crate::records::fsio;

/// The most of the diff written into the reviewer's prompt (the file holds more).
const DIFF_IN_PROMPT: usize = 96 * 1024;
/// The most of the diff written to the run directory.
const DIFF_IN_FILE: usize = 4 << 20;
/// The most of the `--stat` summary.
const STAT_BYTES: usize = 16 * 1024;

impl Dispatcher {
    /// The plan's text, or `None` when it cannot be read.
    fn plan_text(&self) -> Option<String> {
        let plan = self.cfg.settings.plan_file.as_ref()?;
        // Bounded, regular files only, never blocking (a FIFO plan froze the supervisor).
        crate::effects::textfile::read(plan)
            .ok()
            .map(|f| String::from_utf8_lossy(&f.bytes).into_owned())
    }

    pub(super) fn check_plan(&self) -> std::result::Result<PlanCheck, String> {
        let Some(path) = &self.cfg.settings.plan_file else {
            return Ok(PlanCheck::default());
        };
        let text = self.plan_text().ok_or_else(|| path.display().to_string())?;
        Ok(PlanCheck {
            unchecked: plan::unchecked_tasks(&text),
            removed: plan::removed_open_tasks(&self.plan_at_loop_start, &text),
        })
    }

    pub(super) fn mark_loop_start(&mut self, _loop_number: u64) {
        self.loop_base = diff::head_commit(&self.cfg.settings.agent.cwd);
        self.plan_at_loop_start = self
            .plan_text()
            .map(|t| plan::open_tasks(&t))
            .unwrap_or_default();
    }

    /// A gate's process could not be set up (its log cannot be opened): its end, at once.
    pub(super) fn gate_not_started(&mut self, what: Running, why: String) {
        self.attempt_ctl = None;
        self.queue.push_back(match what {
            Running::Review => Input::ReviewFinished(ReviewReport {
                spawn_error: Some(why),
                ..ReviewReport::default()
            }),
            _ => Input::VerifyFinished(VerifyReport {
                spawn_error: Some(why),
                ..VerifyReport::default()
            }),
        });
    }

    fn gate_log(&self, name: &str, how: &str) -> Result<LogWriter> {
        let path = self.run_dir.join(name);
        let mut log = LogWriter::open(&path).map_err(|e| Error::io("cannot open log", &path, e))?;
        let _ = log.note("looper", how);
        Ok(log)
    }

    /// A scanner that only counts (the verify command is not an agent: its words are facts
    /// for `pass_regex` and `count_regex`, not markers or errors).
    fn plain_scanner(&self) -> Result<Scanner> {
        let none = crate::agents::Classifier::new(&[]).map_err(Error::Usage)?;
        Ok(Scanner::new(
            AgentKind::Generic,
            false,
            None,
            None,
            none,
            0.0,
        ))
    }

    /// Start a gate's process (the verify command, the reviewer); one that cannot start is
    /// that gate's failure, said in its log.
    fn spawn_gate(
        &mut self,
        spawn_spec: SpawnSpec,
        sink: Sink,
        which: Running,
    ) -> Result<Option<Started>> {
        match self.ports.agents.spawn(spawn_spec, sink) {
            Ok(started) => self.spawned(started),
            Err(failed) => {
                let NotStarted { why, mut sink } = *failed;
                let _ = sink
                    .log
                    .note("stop_reason", &format!("cannot start: {why}"));
                self.gate_not_started(which, why);
                Ok(None)
            }
        }
    }

    fn spawned(&mut self, started: Started) -> Result<Option<Started>> {
        let st = self.ports.records.state();
        st.child_pid = started.pid.map(i64::from);
        st.child_pgid = started.pgid.map(i64::from);
        self.ports.records.save(Sync::No)?;
        Ok(Some(started))
    }

    pub(super) fn start_verify(&mut self, spec: VerifySpec) -> Result<Option<Started>> {
        self.running = Running::Verify;
        let (Some(v), Some(run)) = (self.cfg.settings.verify.clone(), self.cfg.verify.clone())
        else {
            self.gate_not_started(Running::Verify, "no verify command".into());
            return Ok(None);
        };
        let shown = AgentCommand {
            program: v.command[0].clone(),
            args: v.command[1..].to_vec(),
            stdin: None,
        }
        .display();
        self.say(&format!("verify: $ {shown}"));
        let log = self.gate_log(
            &crate::records::verify_log_name(spec.loop_number),
            &format!("verify of loop {}: $ {shown}", spec.loop_number),
        )?;
        let spawn_spec = SpawnSpec {
            program: run.program.clone(),
            args: v.command[1..].to_vec(),
            // The user's own command: the run context, not the agent table's environment
            // (which may point HOME or a CLI's config elsewhere).
            env: self.run_context_env(),
            cwd: v.cwd.clone(),
            stdin: None,
            timeout: v.timeout,
            grace: self.cfg.settings.terminate_grace,
            leak_timeout: self.cfg.settings.pipe_leak_timeout,
        };
        let mut sink = Sink::new(log, self.plain_scanner()?, false, false);
        sink.gate = Some(GateOutput::new(run.pass.clone(), run.count.clone()));
        self.spawn_gate(spawn_spec, sink, Running::Verify)
    }

    pub(super) fn verify_report(
        &mut self,
        exit: AttemptExit,
        sink: &mut Sink,
        failure: Option<String>,
    ) -> VerifyReport {
        let _ = sink.log.note(
            "returncode",
            &exit.exit_code.map_or_else(
                || format!("signal {}", exit.signal.unwrap_or(0)),
                |c| c.to_string(),
            ),
        );
        if let Some(err) = sink.log_error.take() {
            self.queue.push_back(Input::Failure(err));
        }
        let gate = sink.gate.take();
        VerifyReport {
            exit_code: exit.exit_code,
            signal: exit.signal,
            timed_out: exit.timed_out,
            spawn_error: failure,
            pass_matched: gate.as_ref().is_some_and(|g| g.pass_matched),
            count: gate.as_ref().and_then(|g| g.count_seen),
            tail: gate.map(|g| g.tail(FEEDBACK_TAIL)).unwrap_or_default(),
        }
    }

    /// The diff the reviewer sees, made by the looper from git (not the maker's account):
    /// written whole to the run directory, and its start and `--stat` for the prompt.
    fn review_diff(&mut self, loop_number: u64) -> (String, String, String) {
        let Some(review) = &self.cfg.settings.review else {
            return Default::default();
        };
        let base = match review.diff_since {
            DiffSince::Loop => self.loop_base.clone(),
            DiffSince::Run => self.ports_base_commit(),
        };
        let cwd = &self.cfg.settings.agent.cwd;
        let excluded = [self.cfg.settings.log_dir.clone(), self.run_dir.clone()];
        let path = self
            .run_dir
            .join(crate::records::review_diff_name(loop_number));
        let shown = path.display().to_string();
        let Some(base) = base else {
            return (
                "(no base commit was recorded: the diff is not available)".into(),
                "no diff".into(),
                shown,
            );
        };
        let patch = diff::since(cwd, &base, &excluded, DiffView::Patch, DIFF_IN_FILE);
        let stat = diff::since(cwd, &base, &excluded, DiffView::Stat, STAT_BYTES);
        match (patch, stat) {
            (Ok(p), Ok(st)) => {
                let mut whole = p.text.clone();
                if p.truncated {
                    whole.push_str("\n[diff cut by the looper]\n");
                }
                if let Err(e) = fsio::write_atomic(&path, whole.as_bytes(), false) {
                    crate::console::err(&format!("looper: {e}"));
                }
                let text = if p.text.is_empty() {
                    "(no changes)".to_string()
                } else if p.text.len() > DIFF_IN_PROMPT || p.truncated {
                    format!(
                        "{}\n[diff cut here; the whole diff is in {shown}]",
                        crate::text::clip_chars(&p.text, DIFF_IN_PROMPT)
                    )
                } else {
                    p.text
                };
                let summary = format!(
                    "{} file(s), +{} -{} since {}",
                    p.files,
                    p.insertions,
                    p.deletions,
                    &base[..base.len().min(12)]
                );
                (text, format!("{summary}\n{}", st.text.trim_end()), shown)
            }
            (Err(e), _) | (_, Err(e)) => {
                (format!("(the diff failed: {e})"), "no diff".into(), shown)
            }
        }
    }

    fn ports_base_commit(&mut self) -> Option<String> {
        self.ports.records.state().base_commit.clone()
    }

    pub(super) fn start_review(&mut self, spec: ReviewSpec) -> Result<Option<Started>> {
        self.running = Running::Review;
        let (Some(review), Some(run)) = (self.cfg.settings.review.clone(), self.cfg.review.clone())
        else {
            self.gate_not_started(Running::Review, "no reviewer".into());
            return Ok(None);
        };
        let (diff_text, diff_stat, diff_file) = self.review_diff(spec.loop_number);
        let goal = self.prompts.prompts.join("\n\n---\n\n");
        let values = BTreeMap::from([
            ("goal", goal),
            ("diff", diff_text),
            ("diff_stat", diff_stat),
            ("diff_file", diff_file),
            (
                "verify",
                spec.verify
                    .clone()
                    .unwrap_or_else(|| "not configured, or not run this loop".into()),
            ),
            ("loop", spec.loop_number.to_string()),
        ]);
        let prompt = rubric::render(&run.rubric, &values).map_err(Error::Usage)?;
        let run_dir = self.run_dir.display().to_string();
        let ctx = PromptContext {
            prompt: &prompt,
            session: &spec.session,
            loop_number: spec.loop_number,
            prompt_index: 1,
            label: &self.cfg.label,
            run_dir: &run_dir,
        };
        let cmd = match command::build(&review.agent, &ctx) {
            Ok(c) => c,
            Err(e) => {
                self.gate_not_started(Running::Review, e.to_string());
                return Ok(None);
            }
        };
        let shown = clip_shown(cmd.display());
        self.say(&format!(
            "review {} by {}: $ {shown}",
            spec.round, review.agent.name
        ));
        let log = self.gate_log(
            &crate::records::review_log_name(spec.loop_number),
            &format!(
                "review {} of loop {} by {}: $ {shown}",
                spec.round, spec.loop_number, review.agent.name
            ),
        )?;
        let scanner = Scanner::new(
            review.agent.kind,
            review.agent.scan_stdout_for_stop_patterns,
            Some(run.approve_on.clone()),
            None,
            run.classifier.clone(),
            chrono::Utc::now().timestamp_millis() as f64 / 1000.0,
        )
        .with_last_text(false);
        let spawn_spec = SpawnSpec {
            program: run.program_path(&cmd.program),
            args: cmd.args,
            env: review
                .agent
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            cwd: review.agent.cwd.clone(),
            stdin: cmd.stdin,
            timeout: review.timeout,
            grace: self.cfg.settings.terminate_grace,
            leak_timeout: self.cfg.settings.pipe_leak_timeout,
        };
        let sink = Sink::new(log, scanner, self.presentation.echo_transcript, false);
        self.spawn_gate(spawn_spec, sink, Running::Review)
    }

    pub(super) fn review_report(
        &mut self,
        exit: AttemptExit,
        sink: &mut Sink,
        failure: Option<String>,
    ) -> ReviewReport {
        let _ = sink.log.note(
            "returncode",
            &exit.exit_code.map_or_else(
                || format!("signal {}", exit.signal.unwrap_or(0)),
                |c| c.to_string(),
            ),
        );
        if let Some(err) = sink.log_error.take() {
            self.queue.push_back(Input::Failure(err));
        }
        let sc = &sink.scanner;
        ReviewReport {
            exit_code: exit.exit_code,
            signal: exit.signal,
            timed_out: exit.timed_out,
            spawn_error: failure,
            approved: sc.completion(),
            text: sc.last_text.clone(),
            usage: sc.usage,
            session_id: sc.session_id.clone(),
            error: sc.error.clone(),
        }
    }
}

/// Commands are shown whole up to 600 bytes (a reviewer's prompt holds a diff).
fn clip_shown(shown: String) -> String {
    crate::text::clip_chars(&shown, 600)
}

//! The loop state machine: given what happened, what next. No clock reads, files or
//! processes here: time arrives with each input, randomness from a seeded generator.
//!
//! The driver feeds `Input`s and carries out the returned `Effect`s in order. At most one
//! effect per step asks the driver for something (prompts, a fingerprint, a backup, an
//! attempt, a wait, a plan check); its answer is the next input. Control commands and
//! signals may arrive at any time in between.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::events::{Event, FeedbackItem, Gate, Usage};
use super::feedback::{Feedback, FeedbackKind};
pub use super::protocol::*;
use super::retry::{self, ErrorClass, ErrorSignal};
use super::stop::{Status, StopReason, fmt_duration};

mod gates;
pub use gates::verify_failure;
mod human;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    LoadingPrompts,
    Paused,
    FingerprintBefore,
    BackingUp,
    Attempt,
    RetryWait,
    /// Reading the account's shared record before an attempt.
    AccountCheck,
    /// Held back for the account (its limit, its headroom) before an attempt.
    AccountWait,
    /// Summing what the machine spent today before a loop.
    DailyCheck,
    /// Held back by the daily budget until the next day.
    DailyWait,
    FingerprintAfter,
    CheckingPlan,
    Verifying,
    Reviewing,
    /// Waiting to run the reviewer again after a rate limit or a transient error.
    ReviewWait,
    Sleeping,
    /// Held at a loop boundary by unanswered asks (`machine::human`).
    WaitingForAnswer,
    /// Held by an approval gate (`machine::human`).
    WaitingForApproval,
    Finished,
}

pub struct Engine {
    cfg: EngineConfig,
    rng: SmallRng,
    phase: Phase,
    now: f64,
    loop_number: u64,
    prompt_count: usize,
    prompt_index: usize,
    attempt: u32,
    transient_retries: u64,
    rate_limit_retries: u64,
    session: Option<SessionRef>,
    loop_started_at: f64,
    loop_bytes: u64,
    loop_completion: bool,
    loop_match: bool,
    loop_usage: Usage,
    usage_total: Usage,
    prev_loop_bytes: Option<u64>,
    streak: u64,
    no_progress_count: u64,
    decline_count: u64,
    match_count: u64,
    fingerprint_before: Option<String>,
    fingerprint_after: Option<String>,
    plan_unchecked: Option<usize>,
    /// Open tasks of the loop's start that disappeared without being ticked.
    plan_removed: Vec<String>,
    /// This loop's verify verdict (`None`: it did not run) and its one-line summary.
    loop_verify: Option<bool>,
    loop_verify_line: Option<String>,
    /// This loop's review verdict (`None`: it did not run).
    loop_review: Option<bool>,
    /// The first gate that kept this loop's marker from counting (D28), and why.
    blocked: Option<(Gate, String)>,
    /// Consecutive failing verifies (`cb_verify_failures`).
    verify_failures: u64,
    /// Reviews run, and rejections, in the run (`max_rounds`).
    review_rounds: u64,
    review_rejections: u64,
    /// Retries of the current review round, by kind (D15).
    review_transient_retries: u64,
    review_rate_limit_retries: u64,
    /// Why the current review round runs.
    review_when: GateWhen,
    /// When the running verify or review started (engine time).
    gate_started_at: f64,
    stop_after_loop: Option<ControlCommand>,
    stop_after_prompt: Option<ControlCommand>,
    pause_requested: Option<ControlCommand>,
    /// What goes back to the agent with its next prompt (D29), in arrival order.
    pending_feedback: Vec<Feedback>,
    /// `/btw` notes that came during a turn: pasted when it ends.
    pending_btw: Vec<(String, String)>,
    /// The ignored-marker notice was given (once a run).
    said_marker_ignored: bool,
    /// Set when the running attempt was terminated on purpose; the run ends with it.
    stop_when_attempt_ends: Option<StopReason>,
    /// Open asks and the pending approval (`machine::human`).
    human: human::HumanState,
}

impl Engine {
    pub fn new(cfg: EngineConfig, seed: u64) -> Self {
        Self {
            cfg,
            rng: SmallRng::seed_from_u64(seed),
            phase: Phase::Idle,
            now: 0.0,
            loop_number: 0,
            prompt_count: 0,
            prompt_index: 0,
            attempt: 0,
            transient_retries: 0,
            rate_limit_retries: 0,
            session: None,
            loop_started_at: 0.0,
            loop_bytes: 0,
            loop_completion: false,
            loop_match: false,
            loop_usage: Usage::default(),
            usage_total: Usage::default(),
            prev_loop_bytes: None,
            streak: 0,
            no_progress_count: 0,
            decline_count: 0,
            match_count: 0,
            fingerprint_before: None,
            fingerprint_after: None,
            plan_unchecked: None,
            plan_removed: Vec::new(),
            loop_verify: None,
            loop_verify_line: None,
            loop_review: None,
            blocked: None,
            verify_failures: 0,
            review_rounds: 0,
            review_rejections: 0,
            review_transient_retries: 0,
            review_rate_limit_retries: 0,
            review_when: GateWhen::Completion,
            gate_started_at: 0.0,
            stop_after_loop: None,
            stop_after_prompt: None,
            pause_requested: None,
            pending_feedback: Vec::new(),
            pending_btw: Vec::new(),
            said_marker_ignored: false,
            stop_when_attempt_ends: None,
            human: human::HumanState::default(),
        }
    }

    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    pub fn loop_number(&self) -> u64 {
        self.loop_number
    }

    pub fn usage_total(&self) -> Usage {
        self.usage_total
    }

    /// Advance with one input observed at `now` (seconds since the run started).
    pub fn step(&mut self, now: f64, input: Input) -> Vec<Effect> {
        self.now = now;
        let mut fx = Vec::new();
        if self.phase == Phase::Finished {
            return fx;
        }
        match input {
            Input::Start => {
                fx.push(Effect::Record(Event::RunStarted {
                    dry_run: self.cfg.dry_run,
                    agent_cli: self.cfg.agent_cli.clone(),
                }));
                self.human_started(&mut fx);
                self.begin_loop(&mut fx);
            }
            Input::PromptsLoaded { count } if self.phase == Phase::LoadingPrompts => {
                self.prompt_count = count;
                self.loop_started(&mut fx);
            }
            Input::PromptsFailed { error } if self.phase == Phase::LoadingPrompts => {
                self.finish(&mut fx, StopReason::PromptReload(error));
            }
            Input::Fingerprint(result) => match (self.phase, result) {
                (Phase::FingerprintBefore, Ok(fp)) => {
                    self.fingerprint_before = Some(fp);
                    self.after_fingerprint(&mut fx);
                }
                (Phase::FingerprintAfter, Ok(fp)) => {
                    self.fingerprint_after = Some(fp);
                    self.after_loop_fingerprint(&mut fx);
                }
                (Phase::FingerprintBefore | Phase::FingerprintAfter, Err(e)) => {
                    self.finish(
                        &mut fx,
                        StopReason::Internal(format!("git fingerprint failed: {e}")),
                    );
                }
                _ => {}
            },
            Input::BackupDone(result) if self.phase == Phase::BackingUp => match result {
                Ok(info) => {
                    fx.push(Effect::Record(Event::BackupCreated {
                        loop_number: self.loop_number,
                        branch: info.branch,
                        commit: info.commit,
                        snapshot: info.snapshot,
                        pruned: info.pruned,
                    }));
                    self.start_prompt(&mut fx, 1);
                }
                Err(e) => self.finish(&mut fx, StopReason::Internal(format!("backup failed: {e}"))),
            },
            Input::AttemptFinished(report) if self.phase == Phase::Attempt => {
                self.attempt_finished(&mut fx, report);
            }
            Input::WaitElapsed => match self.phase {
                Phase::RetryWait => {
                    self.attempt += 1;
                    self.before_attempt(&mut fx);
                }
                // The same attempt, once the hold is over (checked again first).
                Phase::AccountWait => self.before_attempt(&mut fx),
                Phase::Sleeping | Phase::DailyWait => self.begin_loop(&mut fx),
                Phase::ReviewWait => self.launch_review(&mut fx),
                _ => {}
            },
            Input::PlanChecked(result) if self.phase == Phase::CheckingPlan => match result {
                Ok(plan) => {
                    self.plan_unchecked = Some(plan.unchecked);
                    self.plan_removed = plan.removed;
                    self.after_plan(&mut fx);
                }
                // A missing plan matters only to a marker it would have to confirm.
                Err(path) if self.loop_completion => {
                    self.finish(&mut fx, StopReason::PlanFileMissing(path))
                }
                Err(_) => self.after_plan(&mut fx),
            },
            Input::VerifyFinished(report) if self.phase == Phase::Verifying => {
                self.verify_finished(&mut fx, report);
            }
            Input::ReviewFinished(report) if self.phase == Phase::Reviewing => {
                self.review_finished(&mut fx, report);
            }
            Input::AccountChecked(facts) if self.phase == Phase::AccountCheck => {
                self.account_checked(&mut fx, facts);
            }
            Input::DailyChecked(usage) if self.phase == Phase::DailyCheck => {
                self.daily_checked(&mut fx, usage);
            }
            Input::Control(cmd) => self.control(&mut fx, cmd),
            Input::Signal { name, forceful } => {
                self.interrupt(&mut fx, StopReason::Signal(name), forceful);
            }
            Input::RuntimeExpired => {
                let max = self.cfg.max_runtime.map_or(self.now, |d| d.as_secs_f64());
                self.interrupt(&mut fx, StopReason::MaxRuntime(max), false);
            }
            Input::Failure(e) => self.interrupt(&mut fx, StopReason::Internal(e), false),
            Input::Human(h) => self.human_input(&mut fx, h),
            // An answer for a phase we already left (e.g. after an interrupt) is stale.
            _ => {}
        }
        fx
    }

    /// End the run as soon as possible: terminate a running attempt first, cancel waits.
    fn interrupt(&mut self, fx: &mut Vec<Effect>, reason: StopReason, forceful: bool) {
        match self.phase {
            // A verify or a reviewer is a process of ours like an attempt: stopped the same
            // way, and the run ends when it has.
            Phase::Attempt | Phase::Verifying | Phase::Reviewing => {
                if self.stop_when_attempt_ends.is_none() {
                    self.stop_when_attempt_ends = Some(reason);
                }
                fx.push(Effect::Terminate { forceful });
            }
            Phase::RetryWait
            | Phase::Sleeping
            | Phase::ReviewWait
            | Phase::AccountWait
            | Phase::DailyWait => {
                fx.push(Effect::CancelWait);
                self.finish(fx, reason);
            }
            _ => self.finish(fx, reason),
        }
    }

    fn control(&mut self, fx: &mut Vec<Effect>, cmd: ControlCommand) {
        fx.push(Effect::Record(Event::ControlCommandReceived {
            id: cmd.id.clone(),
            action: cmd.action.as_str().into(),
            reason: cmd.reason.clone(),
        }));
        let stop_reason = |c: &ControlCommand| StopReason::Control {
            action: c.action.as_str().into(),
            reason: c.reason.clone(),
        };
        match cmd.action {
            ControlAction::InterruptNow => {
                let reason = stop_reason(&cmd);
                self.interrupt(fx, reason, false);
            }
            // An operator stop is the first gate (D28): a review waiting to be retried is not
            // waited for; the loop ends now.
            ControlAction::StopAfterPrompt | ControlAction::StopAfterLoop
                if self.phase == Phase::ReviewWait =>
            {
                fx.push(Effect::CancelWait);
                self.stop_after_loop = Some(cmd);
                self.evaluate_gates(fx);
            }
            ControlAction::StopAfterPrompt => match self.phase {
                Phase::Attempt => self.stop_after_prompt = Some(cmd),
                Phase::RetryWait | Phase::Sleeping | Phase::AccountWait | Phase::DailyWait => {
                    fx.push(Effect::CancelWait);
                    self.finish(fx, stop_reason(&cmd));
                }
                Phase::Paused | Phase::Idle => self.finish(fx, stop_reason(&cmd)),
                _ if self.waiting_for_person() => self.finish(fx, stop_reason(&cmd)),
                _ => self.stop_after_prompt = Some(cmd),
            },
            ControlAction::StopAfterLoop => match self.phase {
                Phase::Sleeping | Phase::DailyWait => {
                    fx.push(Effect::CancelWait);
                    self.finish(fx, stop_reason(&cmd));
                }
                // Held before the loop's first prompt: nothing of the loop has run, so there
                // is nothing to finish first (a headroom hold may last hours).
                Phase::AccountWait if self.prompt_index == 1 && self.attempt == 1 => {
                    fx.push(Effect::CancelWait);
                    self.finish(fx, stop_reason(&cmd));
                }
                Phase::Paused | Phase::Idle => self.finish(fx, stop_reason(&cmd)),
                _ if self.waiting_for_person() => self.finish(fx, stop_reason(&cmd)),
                _ => self.stop_after_loop = Some(cmd),
            },
            ControlAction::Pause => {
                if self.phase != Phase::Paused {
                    self.pause_requested = Some(cmd);
                }
            }
            ControlAction::Resume => {
                self.pause_requested = None;
                if self.phase == Phase::Paused {
                    fx.push(Effect::Record(Event::Resumed { reason: cmd.reason }));
                    fx.push(Effect::SetStatus(Status::Running));
                    self.phase = Phase::Idle;
                    self.begin_loop_now(fx);
                }
            }
            ControlAction::Note if cmd.btw => {
                if let Some(text) = cmd.note {
                    // Into the pane only between turns: a paste that lands while a turn
                    // or a new pane starts takes the place of the loop's own prompt.
                    if self.phase == Phase::Attempt {
                        self.pending_btw.push((cmd.id, text));
                    } else {
                        fx.push(Effect::PasteNote { id: cmd.id, text });
                    }
                }
            }
            ControlAction::Note => {
                if let Some(text) = cmd.note {
                    self.pending_feedback.push(Feedback {
                        id: cmd.id,
                        kind: FeedbackKind::OperatorNote,
                        title: "operator note".into(),
                        text,
                    });
                }
            }
        }
    }

    fn begin_loop(&mut self, fx: &mut Vec<Effect>) {
        self.phase = Phase::Idle;
        let pending = self
            .stop_after_loop
            .take()
            .or_else(|| self.stop_after_prompt.take());
        if let Some(cmd) = pending {
            let reason = StopReason::Control {
                action: cmd.action.as_str().into(),
                reason: cmd.reason,
            };
            self.finish(fx, reason);
            return;
        }
        if let Some(cmd) = self.pause_requested.take() {
            self.phase = Phase::Paused;
            fx.push(Effect::Record(Event::Paused { reason: cmd.reason }));
            fx.push(Effect::SetStatus(Status::Paused));
            return;
        }
        self.begin_loop_now(fx);
    }

    fn begin_loop_now(&mut self, fx: &mut Vec<Effect>) {
        if let Some(max) = self.max_runtime()
            && self.now >= max
        {
            self.finish(fx, StopReason::MaxRuntime(max));
            return;
        }
        // Issue 17: unanswered asks hold the run here, at the loop boundary.
        if self.hold_for_answers(fx) {
            return;
        }
        // The machine-wide daily budget is judged before each loop.
        if self.cfg.daily.is_some() && !self.cfg.dry_run {
            self.phase = Phase::DailyCheck;
            fx.push(Effect::CheckDailyBudget);
            return;
        }
        self.start_loop(fx);
    }

    fn daily_checked(&mut self, fx: &mut Vec<Effect>, usage: Result<DailyUsage, String>) {
        let (Some(budget), Ok(usage)) = (self.cfg.daily, usage) else {
            // Unreadable records are no reason to stop; the driver said so.
            return self.start_loop(fx);
        };
        let Some(what) = super::quota::daily_exceeded(&usage, &budget) else {
            return self.start_loop(fx);
        };
        if !budget.wait {
            return self.finish(fx, StopReason::DailyBudget(what));
        }
        let hold = super::quota::daily_hold(&usage, what);
        self.hold(fx, hold, 0, Phase::DailyWait);
    }

    /// Wait out a hold (issue 18) like a retry: status `retrying`, interruptible.
    fn hold(
        &mut self,
        fx: &mut Vec<Effect>,
        hold: super::quota::Hold,
        prompt_index: usize,
        phase: Phase,
    ) {
        fx.push(Effect::SetStatus(Status::Retrying));
        fx.push(Effect::Record(Event::QuotaWait {
            loop_number: self.loop_number,
            prompt_index,
            cause: hold.cause,
            wait_seconds: hold.seconds,
            // What status shows for the wait: the reason says what holds it and how long.
            retry_status: hold.reason.clone(),
            reason: hold.reason,
        }));
        self.phase = phase;
        fx.push(Effect::Wait {
            // A hold from an absurd reset time is cut to the longest wait there is.
            duration: Duration::try_from_secs_f64(
                hold.seconds.clamp(0.0, super::quota::MAX_HOLD_SECONDS),
            )
            .unwrap_or_default(),
            purpose: WaitPurpose::Retry,
        });
    }

    fn start_loop(&mut self, fx: &mut Vec<Effect>) {
        self.loop_number += 1;
        self.loop_started_at = self.now;
        if self.loop_number == 1 || self.cfg.reload_prompt_each_loop {
            self.phase = Phase::LoadingPrompts;
            fx.push(Effect::LoadPrompts);
        } else {
            self.loop_started(fx);
        }
    }

    fn fresh_session_id(&mut self) -> String {
        let bytes: [u8; 16] = self.rng.random();
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
    }

    fn new_session(&mut self, name: String) -> SessionRef {
        let id = self
            .cfg
            .preassign_session_ids
            .then(|| self.fresh_session_id());
        SessionRef {
            name,
            id,
            resume: false,
        }
    }

    fn loop_started(&mut self, fx: &mut Vec<Effect>) {
        if self.cfg.fresh_session_per_loop || self.session.is_none() {
            let name = if self.cfg.fresh_session_per_loop {
                format!("{}-loop-{:04}", self.cfg.label, self.loop_number)
            } else {
                self.cfg.label.clone()
            };
            self.session = Some(self.new_session(name));
        }
        self.loop_bytes = 0;
        self.loop_completion = false;
        self.loop_match = false;
        self.loop_usage = Usage::default();
        self.plan_unchecked = None;
        self.plan_removed.clear();
        self.loop_verify = None;
        self.loop_verify_line = None;
        self.loop_review = None;
        self.blocked = None;
        let session = self.session.clone().unwrap_or_else(|| SessionRef {
            name: self.cfg.label.clone(),
            id: None,
            resume: false,
        });
        fx.push(Effect::Record(Event::LoopStarted {
            loop_number: self.loop_number,
            session: session.name,
            session_id: session.id,
            total_prompts: self.prompt_count,
        }));
        // The reviewer's diff and plan integrity compare with where the loop started.
        let plan_integrity = self.cfg.completion_streak.is_some() && self.cfg.plan_gate;
        if (plan_integrity || self.cfg.review.is_some()) && !self.cfg.dry_run {
            fx.push(Effect::MarkLoopStart {
                loop_number: self.loop_number,
            });
        }
        // One fingerprint per loop boundary (D17): the "after" of loop N is the "before" of N+1.
        if self.cfg.cb_no_progress > 0 && !self.cfg.dry_run {
            if let Some(after) = self.fingerprint_after.take() {
                self.fingerprint_before = Some(after);
            }
            if self.fingerprint_before.is_none() {
                self.phase = Phase::FingerprintBefore;
                fx.push(Effect::Fingerprint);
                return;
            }
        }
        self.after_fingerprint(fx);
    }

    fn after_fingerprint(&mut self, fx: &mut Vec<Effect>) {
        if self.cfg.backup && !self.cfg.dry_run {
            self.phase = Phase::BackingUp;
            fx.push(Effect::Backup {
                loop_number: self.loop_number,
            });
        } else {
            self.start_prompt(fx, 1);
        }
    }

    fn start_prompt(&mut self, fx: &mut Vec<Effect>, index: usize) {
        if let Some(cmd) = self.stop_after_prompt.take() {
            let reason = StopReason::Control {
                action: cmd.action.as_str().into(),
                reason: cmd.reason,
            };
            self.finish(fx, reason);
            return;
        }
        self.prompt_index = index;
        self.attempt = 1;
        self.transient_retries = 0;
        self.rate_limit_retries = 0;
        self.before_attempt(fx);
    }

    /// Before every attempt: the account's shared record, when the agent has an account.
    fn before_attempt(&mut self, fx: &mut Vec<Effect>) {
        if self.cfg.account && !self.cfg.dry_run {
            self.phase = Phase::AccountCheck;
            fx.push(Effect::CheckAccount);
        } else {
            self.launch_attempt(fx);
        }
    }

    fn account_checked(&mut self, fx: &mut Vec<Effect>, facts: Result<AccountFacts, String>) {
        let new_loop = self.prompt_index == 1 && self.attempt == 1;
        let hold = facts
            .ok()
            .and_then(|f| super::quota::account_hold(&f, self.cfg.min_headroom_percent, new_loop));
        match hold {
            Some(hold) => {
                let index = self.prompt_index;
                self.hold(fx, hold, index, Phase::AccountWait);
            }
            None => self.launch_attempt(fx),
        }
    }

    fn launch_attempt(&mut self, fx: &mut Vec<Effect>) {
        let session = self.session.clone().unwrap_or_else(|| SessionRef {
            name: self.cfg.label.clone(),
            id: None,
            resume: false,
        });
        let feedback = std::mem::take(&mut self.pending_feedback);
        let notes: Vec<String> = feedback
            .iter()
            .filter(|f| f.kind == FeedbackKind::OperatorNote)
            .map(|f| f.id.clone())
            .collect();
        let block = super::feedback::render(&feedback, super::feedback::MAX_BLOCK);
        fx.push(Effect::SetStatus(Status::Running));
        fx.push(Effect::Record(Event::PromptStarted {
            loop_number: self.loop_number,
            prompt_index: self.prompt_index,
            total_prompts: self.prompt_count,
            attempt: self.attempt,
            session: session.name.clone(),
            session_id: session.id.clone(),
            resume: session.resume,
            notes: notes.clone(),
        }));
        for id in notes {
            fx.push(Effect::Record(Event::NoteDelivered {
                id,
                loop_number: self.loop_number,
                prompt_index: self.prompt_index,
            }));
        }
        if let Some((text, cut)) = &block {
            fx.push(Effect::Record(Event::FeedbackDelivered {
                loop_number: self.loop_number,
                prompt_index: self.prompt_index,
                items: feedback
                    .iter()
                    .map(|f| FeedbackItem {
                        id: f.id.clone(),
                        kind: f.kind,
                    })
                    .collect(),
                bytes: text.len(),
                cut: *cut,
            }));
        }
        self.phase = Phase::Attempt;
        fx.push(Effect::RunAttempt(AttemptSpec {
            loop_number: self.loop_number,
            prompt_index: self.prompt_index,
            total_prompts: self.prompt_count,
            attempt: self.attempt,
            session,
            feedback: block.map(|(text, _)| text),
            dry_run: self.cfg.dry_run,
        }));
    }

    fn attempt_finished(&mut self, fx: &mut Vec<Effect>, r: AttemptReport) {
        for (id, text) in std::mem::take(&mut self.pending_btw) {
            fx.push(Effect::PasteNote { id, text });
        }
        if r.marker_seen_while_off
            && self.cfg.completion_streak.is_none()
            && !std::mem::replace(&mut self.said_marker_ignored, true)
        {
            fx.push(Effect::Record(Event::CompletionMarkerIgnored {
                loop_number: self.loop_number,
            }));
        }
        self.loop_bytes += r.output_bytes;
        self.loop_completion |= r.completion_seen;
        self.loop_match |= r.output_match_seen;
        self.loop_usage.add(&r.usage);
        self.usage_total.add(&r.usage);
        let succeeded = r.spawn_error.is_none() && r.exit_code == Some(0) && r.error.is_none();
        let restart = self.session.as_ref().is_some_and(|s| !s.resume)
            && !succeeded
            && !self.cfg.failed_start_keeps_session
            && self.cfg.preassign_session_ids;
        let fresh_id = restart.then(|| self.fresh_session_id());
        if let Some(session) = self.session.as_mut() {
            if let Some(id) = fresh_id {
                // The failed first prompt's session may or may not exist: start over.
                session.id = Some(id);
            } else if let Some(id) = &r.session_id {
                session.id = Some(id.clone());
                // Once resumed, always resumed: later failures do not undo the session.
                session.resume |= succeeded || self.cfg.failed_start_keeps_session;
            } else if r.spawn_error.is_none() && (r.dry_run || r.exit_code == Some(0)) {
                // The session exists even when the agent does not report an id.
                session.resume = true;
            }
        }
        fx.push(Effect::Record(Event::PromptCompleted {
            loop_number: self.loop_number,
            prompt_index: self.prompt_index,
            attempt: self.attempt,
            returncode: r.exit_code,
            signal: r.signal,
            timed_out: r.timed_out,
            output_bytes: r.output_bytes,
            completion_detected: r.completion_seen,
            output_match_detected: r.output_match_seen,
            session_id: r.session_id.clone(),
            usage: r.usage,
            retry_kind: r.error.as_ref().map(|e| e.class),
            error: r.error.as_ref().map(|e| e.reason.clone()),
            retry_after_seconds: r.error.as_ref().and_then(|e| e.retry_after),
            last_error_line: r.last_error_line.clone(),
            dry_run: r.dry_run,
        }));

        if let Some(reason) = self.stop_when_attempt_ends.take() {
            self.finish(fx, reason);
            return;
        }
        if let Some(e) = r.spawn_error {
            self.finish(fx, StopReason::SpawnFailed(e));
            return;
        }
        if r.timed_out {
            self.finish(fx, StopReason::Timeout(self.cfg.timeout.as_secs_f64()));
            return;
        }
        if let Some(budget) = self.budget_exceeded() {
            self.finish(fx, budget);
            return;
        }
        if let Some(signal) = r.error {
            match signal.class {
                ErrorClass::Terminal => {
                    self.finish(fx, StopReason::Terminal(signal.reason));
                    return;
                }
                ErrorClass::Transient => {
                    let cap = self.cfg.retry.max_transient_retries;
                    if cap > 0 && self.transient_retries >= cap {
                        self.finish(
                            fx,
                            StopReason::TransientCap {
                                max: cap,
                                reason: signal.reason,
                            },
                        );
                        return;
                    }
                    self.transient_retries += 1;
                    let count = self.transient_retries;
                    self.schedule_retry(fx, signal, count);
                    return;
                }
                ErrorClass::RateLimit => {
                    self.rate_limit_retries += 1;
                    let count = self.rate_limit_retries;
                    self.schedule_retry(fx, signal, count);
                    return;
                }
            }
        }
        if !self.cfg.ignore_nonzero {
            if let Some(sig) = r.signal {
                self.finish(fx, StopReason::KilledBySignal(sig));
                return;
            }
            if let Some(code) = r.exit_code.filter(|c| *c != 0) {
                self.finish(fx, StopReason::NonzeroExit(code));
                return;
            }
        }
        if let Some(cmd) = self.stop_after_prompt.take() {
            let reason = StopReason::Control {
                action: cmd.action.as_str().into(),
                reason: cmd.reason,
            };
            self.finish(fx, reason);
            return;
        }
        if self.prompt_index < self.prompt_count {
            let next = self.prompt_index + 1;
            self.start_prompt(fx, next);
        } else {
            self.end_loop(fx);
        }
    }

    fn schedule_retry(&mut self, fx: &mut Vec<Effect>, signal: ErrorSignal, count: u64) {
        let unit: f64 = self.rng.random();
        let attempt_of_kind = u32::try_from(count).unwrap_or(u32::MAX);
        let wait = retry::wait_for(&self.cfg.retry, &signal, attempt_of_kind, unit);
        let status = format!(
            "retrying {} attempt {count}; next in {}: {}",
            signal.class.as_str(),
            fmt_duration(wait),
            signal.reason
        );
        fx.push(Effect::SetStatus(Status::Retrying));
        fx.push(Effect::Record(Event::RetryWait {
            loop_number: self.loop_number,
            prompt_index: self.prompt_index,
            next_attempt: self.attempt + 1,
            retry_kind: signal.class,
            retry_count: count,
            wait_seconds: wait,
            provider_delay_seconds: signal.retry_after,
            reason: signal.reason,
            retry_status: status,
        }));
        self.phase = Phase::RetryWait;
        fx.push(Effect::Wait {
            // `wait_for` stays within the validated backoff and provider-delay limits.
            duration: Duration::try_from_secs_f64(wait).unwrap_or_default(),
            purpose: WaitPurpose::Retry,
        });
    }

    fn finish(&mut self, fx: &mut Vec<Effect>, reason: StopReason) {
        self.phase = Phase::Finished;
        fx.push(Effect::Record(Event::RunStopped {
            status: reason.status(),
            stop_reason: reason.reason(),
            stop_kind: reason.kind(),
            exit_code: reason.exit_code(),
        }));
        fx.push(Effect::Finish(reason));
    }
}

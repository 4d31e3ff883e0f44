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

mod attempt;
mod control;
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

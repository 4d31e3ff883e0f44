//! The end of a loop: the after-fingerprint, the plan check, the verify command and the
//! reviewer, then every gate, breaker and budget in their documented order (D28), and the
//! stop or the next loop.

use super::*;
use crate::engine::human::ApprovalGate;

/// How much of a reviewer's rejection goes into the next prompt.
const REVIEW_FEEDBACK_BYTES: usize = 8 * 1024;

/// Why a verify run does not pass, or `None` when it does: exit 0, `pass_regex` matched when
/// configured, and the captured count at least `min_count` when a floor is set.
pub fn verify_failure(gate: &VerifyGate, r: &VerifyReport) -> Option<String> {
    if let Some(e) = &r.spawn_error {
        return Some(format!("the command could not start: {e}"));
    }
    if r.timed_out {
        return Some(format!(
            "timed out after {}",
            fmt_duration(gate.timeout.as_secs_f64())
        ));
    }
    if let Some(sig) = r.signal {
        return Some(format!("killed by signal {sig}"));
    }
    match r.exit_code {
        Some(0) => {}
        Some(c) => return Some(format!("exit {c}")),
        None => return Some("no exit status".into()),
    }
    if gate.needs_pass_match && !r.pass_matched {
        return Some("pass_regex did not match its output".into());
    }
    if let Some(min) = gate.min_count {
        match r.count {
            None => return Some(format!("count_regex found no count (min_count {min})")),
            Some(c) if c < min => return Some(format!("count {c} is below min_count {min}")),
            Some(_) => {}
        }
    }
    None
}

impl Engine {
    /// The wall-clock budget in the engine's time (seconds since the run started).
    pub(super) fn max_runtime(&self) -> Option<f64> {
        self.cfg.max_runtime.map(|d| d.as_secs_f64())
    }

    pub(super) fn budget_exceeded(&self) -> Option<StopReason> {
        if let Some(max) = self.cfg.max_tokens {
            let used = self.usage_total.total_tokens();
            if used >= max {
                return Some(StopReason::TokenBudget { used, max });
            }
        }
        if let Some(max) = self.cfg.max_cost_usd {
            let used = self.usage_total.cost_usd;
            if used >= max {
                return Some(StopReason::CostBudget { used, max });
            }
        }
        None
    }

    pub(super) fn end_loop(&mut self, fx: &mut Vec<Effect>) {
        if self.cfg.cb_no_progress > 0 && !self.cfg.dry_run {
            self.phase = Phase::FingerprintAfter;
            fx.push(Effect::Fingerprint);
        } else {
            self.after_loop_fingerprint(fx);
        }
    }

    pub(super) fn after_loop_fingerprint(&mut self, fx: &mut Vec<Effect>) {
        // The plan is read at every loop's end (plan integrity is recorded even when no
        // marker was seen); a missing plan stops the run only when a marker needs it.
        if self.cfg.completion_streak.is_some() && self.cfg.plan_gate {
            self.phase = Phase::CheckingPlan;
            fx.push(Effect::CheckPlan);
        } else {
            self.after_plan(fx);
        }
    }

    /// An operator stop is the first gate (D28): nothing else runs for a loop it ends.
    fn operator_stop_pending(&self) -> bool {
        self.stop_after_loop.is_some() || self.stop_after_prompt.is_some()
    }

    /// What the plan gate says about this loop's marker, if it blocks it.
    fn plan_blocks(&self) -> Option<(Gate, String)> {
        if let Some(n) = self.plan_unchecked.filter(|n| *n > 0) {
            return Some((
                Gate::Plan,
                format!("{n} unchecked task(s) left in the plan"),
            ));
        }
        if self.cfg.plan_forbid_removal && !self.plan_removed.is_empty() {
            let n = self.plan_removed.len();
            return Some((
                Gate::PlanIntegrity,
                format!(
                    "{n} open task(s) removed from the plan without being ticked: {}",
                    crate::text::clip_chars(&self.plan_removed.join("; "), 200)
                ),
            ));
        }
        None
    }

    /// The marker was seen and every gate so far let it through.
    fn marker_stands(&self) -> bool {
        self.cfg.completion_streak.is_some() && self.loop_completion && self.blocked.is_none()
    }

    /// After the plan gate: the verify gate, when it is due (D28).
    pub(super) fn after_plan(&mut self, fx: &mut Vec<Effect>) {
        if self.loop_completion && self.cfg.completion_streak.is_some() {
            self.blocked = self.plan_blocks();
        }
        if self.operator_stop_pending() || self.cfg.dry_run {
            self.evaluate_gates(fx);
            return;
        }
        let due = self
            .cfg
            .verify
            .as_ref()
            .map(|v| v.when)
            .filter(|when| *when == GateWhen::EveryLoop || self.marker_stands());
        match due {
            Some(when) => {
                self.phase = Phase::Verifying;
                self.gate_started_at = self.now;
                fx.push(Effect::Record(Event::VerifyStarted {
                    loop_number: self.loop_number,
                    when,
                }));
                fx.push(Effect::RunVerify(VerifySpec {
                    loop_number: self.loop_number,
                }));
            }
            None => self.after_verify(fx),
        }
    }

    pub(super) fn verify_finished(&mut self, fx: &mut Vec<Effect>, r: VerifyReport) {
        let Some(gate) = self.cfg.verify.clone() else {
            return self.after_verify(fx);
        };
        let failure = verify_failure(&gate, &r);
        let pass = failure.is_none();
        self.verify_failures = if pass { 0 } else { self.verify_failures + 1 };
        self.loop_verify = Some(pass);
        self.loop_verify_line = Some(match (&failure, r.count) {
            (None, Some(c)) => format!("verify passed (exit 0, count {c})"),
            (None, None) => "verify passed (exit 0)".into(),
            (Some(why), _) => format!("verify failed: {why}"),
        });
        fx.push(Effect::Record(Event::VerifyCompleted {
            loop_number: self.loop_number,
            exit_code: r.exit_code,
            signal: r.signal,
            timed_out: r.timed_out,
            duration_seconds: (self.now - self.gate_started_at).max(0.0),
            count: r.count,
            min_count: gate.min_count,
            pass,
            reason: failure.clone(),
            consecutive_failures: self.verify_failures,
        }));
        if let Some(reason) = self.stop_when_attempt_ends.take() {
            self.finish(fx, reason);
            return;
        }
        if let Some(why) = failure {
            if gate.feedback {
                let tail = r.tail.trim_end();
                self.pending_feedback.push(Feedback {
                    id: format!("verify-loop-{:04}", self.loop_number),
                    kind: FeedbackKind::VerifyFailure,
                    title: format!("verify failed: {why}; the end of its output"),
                    text: if tail.is_empty() {
                        "(no output)".into()
                    } else {
                        tail.to_string()
                    },
                });
            }
            if self.marker_stands() {
                self.blocked = Some((Gate::Verify, why));
            }
        }
        self.after_verify(fx);
    }

    /// After the verify gate: the reviewer, when it is due and verify did not fail (D28).
    fn after_verify(&mut self, fx: &mut Vec<Effect>) {
        if self.operator_stop_pending() || self.cfg.dry_run || self.loop_verify == Some(false) {
            self.evaluate_gates(fx);
            return;
        }
        let due = self
            .cfg
            .review
            .as_ref()
            .map(|r| r.when)
            .filter(|when| *when == GateWhen::EveryLoop || self.marker_stands());
        let Some(when) = due else {
            self.evaluate_gates(fx);
            return;
        };
        self.review_rounds += 1;
        self.review_transient_retries = 0;
        self.review_rate_limit_retries = 0;
        self.review_when = when;
        self.launch_review(fx);
    }

    /// Start the current review round (again, after a rate limit or a transient error).
    pub(super) fn launch_review(&mut self, fx: &mut Vec<Effect>) {
        let when = self.review_when;
        // A fresh session every time: the reviewer never resumes the maker's, nor its own.
        let preassign = self
            .cfg
            .review
            .as_ref()
            .is_some_and(|r| r.preassign_session_ids);
        let session = SessionRef {
            name: format!("{}-review-{:04}", self.cfg.label, self.loop_number),
            id: preassign.then(|| self.fresh_session_id()),
            resume: false,
        };
        self.phase = Phase::Reviewing;
        self.gate_started_at = self.now;
        fx.push(Effect::SetStatus(Status::Running));
        fx.push(Effect::Record(Event::ReviewStarted {
            loop_number: self.loop_number,
            round: self.review_rounds,
            when,
            session: session.name.clone(),
            session_id: session.id.clone(),
        }));
        fx.push(Effect::RunReview(ReviewSpec {
            loop_number: self.loop_number,
            round: self.review_rounds,
            session,
            verify: self.loop_verify_line.clone(),
        }));
    }

    pub(super) fn review_finished(&mut self, fx: &mut Vec<Effect>, r: ReviewReport) {
        self.loop_usage.add(&r.usage);
        self.usage_total.add(&r.usage);
        // A reviewer that hit a rate limit or a transient error has not judged the work:
        // it is retried like an agent attempt (D15), and no round is used up.
        if let Some(signal) = r.error.clone().filter(|e| e.class != ErrorClass::Terminal)
            && self.stop_when_attempt_ends.is_none()
            && r.spawn_error.is_none()
        {
            let count = if signal.class == ErrorClass::Transient {
                self.review_transient_retries += 1;
                self.review_transient_retries
            } else {
                self.review_rate_limit_retries += 1;
                self.review_rate_limit_retries
            };
            let cap = self.cfg.retry.max_transient_retries;
            let capped = signal.class == ErrorClass::Transient && cap > 0 && count > cap;
            if !capped {
                fx.push(Effect::Record(Event::ReviewCompleted {
                    loop_number: self.loop_number,
                    round: self.review_rounds,
                    verdict: "retry".into(),
                    exit_code: r.exit_code,
                    duration_seconds: (self.now - self.gate_started_at).max(0.0),
                    reason: Some(format!("the reviewer will be retried: {}", signal.reason)),
                    session_id: r.session_id.clone(),
                    usage: r.usage,
                    rejections: self.review_rejections,
                }));
                self.schedule_review_retry(fx, signal, count);
                return;
            }
        }
        let failure = if let Some(e) = &r.spawn_error {
            Some(format!("the reviewer could not start: {e}"))
        } else if r.timed_out {
            let secs = self
                .cfg
                .review
                .as_ref()
                .map_or(0.0, |g| g.timeout.as_secs_f64());
            Some(format!(
                "the reviewer timed out after {}",
                fmt_duration(secs)
            ))
        } else if let Some(e) = &r.error {
            Some(format!("the reviewer failed: {}", e.reason))
        } else if let Some(sig) = r.signal {
            Some(format!("the reviewer was killed by signal {sig}"))
        } else if r.exit_code != Some(0) {
            Some(format!(
                "the reviewer exited with code {}",
                r.exit_code.map_or("?".into(), |c| c.to_string())
            ))
        } else if !r.approved {
            Some("the reviewer did not approve".into())
        } else {
            None
        };
        let approved = failure.is_none();
        if !approved {
            self.review_rejections += 1;
        }
        self.loop_review = Some(approved);
        fx.push(Effect::Record(Event::ReviewCompleted {
            loop_number: self.loop_number,
            round: self.review_rounds,
            verdict: if approved { "approve" } else { "reject" }.into(),
            exit_code: r.exit_code,
            duration_seconds: (self.now - self.gate_started_at).max(0.0),
            reason: failure.clone(),
            session_id: r.session_id.clone(),
            usage: r.usage,
            rejections: self.review_rejections,
        }));
        if let Some(reason) = self.stop_when_attempt_ends.take() {
            self.finish(fx, reason);
            return;
        }
        if let Some(e) = r.spawn_error {
            self.finish(fx, StopReason::SpawnFailed(format!("reviewer: {e}")));
            return;
        }
        if let Some(why) = failure {
            let text = r.text.trim();
            let max = self.cfg.review.as_ref().map_or(0, |g| g.max_rounds);
            let rounds = if max > 0 {
                format!(" (rejection {} of at most {max})", self.review_rejections)
            } else {
                String::new()
            };
            self.pending_feedback.push(Feedback {
                id: format!("review-loop-{:04}", self.loop_number),
                kind: FeedbackKind::ReviewRejection,
                title: format!("reviewer: {why}{rounds}; what it said"),
                text: if text.is_empty() {
                    "(the reviewer said nothing)".into()
                } else {
                    crate::text::tail_chars(text, REVIEW_FEEDBACK_BYTES)
                },
            });
            if self.marker_stands() {
                self.blocked = Some((Gate::Review, why));
            }
        }
        self.evaluate_gates(fx);
    }

    /// Update every gate's counters, record the loop, then stop for the first gate that
    /// trips, in this documented order: operator stop, completion (the marker, confirmed by
    /// the plan, verify and review gates, then a person's approval when asked for), no progress, output decline, output match,
    /// verify failures, review rounds, budgets, max runtime, dry run, max loops.
    pub(super) fn evaluate_gates(&mut self, fx: &mut Vec<Effect>) {
        if self.loop_completion && self.cfg.completion_streak.is_some() && self.blocked.is_none() {
            // Reached without passing through the plan gate (an operator stop, a dry run).
            self.blocked = self.plan_blocks();
        }
        let blocked_by_plan = matches!(self.blocked, Some((Gate::Plan | Gate::PlanIntegrity, _)));
        if self.cfg.completion_streak.is_some() {
            // A marker counts only when every gate after it passed (D28).
            if self.marker_stands() {
                self.streak += 1;
            } else {
                self.streak = 0;
            }
        }
        let mut no_progress = false;
        if self.cfg.cb_no_progress > 0 {
            match (&self.fingerprint_before, &self.fingerprint_after) {
                (Some(b), Some(a)) if a == b => self.no_progress_count += 1,
                _ => self.no_progress_count = 0,
            }
            no_progress = self.no_progress_count >= self.cfg.cb_no_progress;
        }
        let mut declined = false;
        if self.cfg.cb_output_decline > 0 {
            match self.prev_loop_bytes {
                Some(prev) if self.loop_bytes < prev => self.decline_count += 1,
                _ => self.decline_count = 0,
            }
            declined = self.decline_count >= self.cfg.cb_output_decline;
        }
        self.prev_loop_bytes = Some(self.loop_bytes);
        let mut matched = false;
        if let Some(repeats) = self.cfg.output_match_repeats {
            if self.loop_match {
                self.match_count += 1;
            } else {
                self.match_count = 0;
            }
            matched = self.match_count >= repeats;
        }

        fx.push(Effect::Record(Event::LoopCompleted {
            loop_number: self.loop_number,
            duration_seconds: (self.now - self.loop_started_at).max(0.0),
            output_bytes: self.loop_bytes,
            completion_detected: self.loop_completion,
            plan_unchecked: self.plan_unchecked,
            completion_blocked_by_plan: blocked_by_plan,
            blocked_by: self.blocked.as_ref().map(|(g, _)| *g),
            blocked_reason: self.blocked.as_ref().map(|(_, why)| why.clone()),
            plan_removed: self.plan_removed.clone(),
            verify_passed: self.loop_verify,
            review_approved: self.loop_review,
            completion_streak: self.streak,
            fingerprint: self.fingerprint_after.clone(),
            no_progress_count: self.no_progress_count,
            output_decline_count: self.decline_count,
            output_match_count: self.match_count,
            usage: self.loop_usage,
            usage_total: self.usage_total,
        }));

        let control = self
            .stop_after_loop
            .take()
            .or_else(|| self.stop_after_prompt.take())
            .map(|cmd| StopReason::Control {
                action: cmd.action.as_str().into(),
                reason: cmd.reason,
            });
        if let Some(reason) = control {
            self.finish(fx, reason);
            return;
        }
        let breakers = Breakers {
            no_progress,
            declined,
            matched,
        };
        let complete = self
            .cfg
            .completion_streak
            .is_some_and(|need| self.streak >= need);
        if complete {
            // D28: human approval is the last gate before the run may stop as complete.
            if self.needs_approval(ApprovalGate::Completion) {
                self.request_approval(fx, ApprovalGate::Completion, breakers);
            } else {
                self.finish(fx, StopReason::Completion);
            }
            return;
        }
        self.after_gates(fx, breakers);
    }

    /// Breakers and budgets, after the gates (D28), then the next loop; an approval
    /// checkpoint every N loops comes last, when the run would go on.
    pub(super) fn after_gates(&mut self, fx: &mut Vec<Effect>, b: Breakers) {
        let reason = b
            .no_progress
            .then_some(StopReason::NoProgress(self.cfg.cb_no_progress))
            .or_else(|| {
                b.declined
                    .then_some(StopReason::OutputDecline(self.cfg.cb_output_decline))
            })
            .or_else(|| {
                b.matched.then_some(StopReason::OutputMatch(
                    self.cfg.output_match_repeats.unwrap_or(1),
                ))
            })
            .or_else(|| {
                let cb = self.cfg.verify.as_ref().map_or(0, |v| v.cb_failures);
                (cb > 0 && self.verify_failures >= cb).then_some(StopReason::VerifyFailures(cb))
            })
            .or_else(|| {
                let max = self.cfg.review.as_ref().map_or(0, |r| r.max_rounds);
                (max > 0 && self.review_rejections >= max)
                    .then_some(StopReason::ReviewRejected(max))
            })
            .or_else(|| self.budget_exceeded())
            .or_else(|| {
                self.max_runtime()
                    .filter(|max| self.now >= *max)
                    .map(StopReason::MaxRuntime)
            })
            .or_else(|| self.cfg.dry_run.then_some(StopReason::DryRun))
            .or_else(|| {
                (self.cfg.max_loops > 0 && self.loop_number >= self.cfg.max_loops)
                    .then_some(StopReason::MaxLoops(self.cfg.max_loops))
            });
        if let Some(reason) = reason {
            self.finish(fx, reason);
            return;
        }
        if self.needs_approval(ApprovalGate::EveryNLoops) {
            self.request_approval(fx, ApprovalGate::EveryNLoops, Breakers::default());
            return;
        }
        self.next_loop(fx);
    }

    /// The pause between loops, or the next loop at once.
    pub(super) fn next_loop(&mut self, fx: &mut Vec<Effect>) {
        if !self.cfg.sleep.is_zero() {
            self.phase = Phase::Sleeping;
            fx.push(Effect::Wait {
                duration: self.cfg.sleep,
                purpose: WaitPurpose::Sleep,
            });
        } else {
            self.begin_loop(fx);
        }
    }
}

/// The breakers a loop's end tripped, kept while an approval gate holds the run: a rejected
/// completion is followed by the breakers and budgets (D28).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Breakers {
    pub no_progress: bool,
    pub declined: bool,
    pub matched: bool,
}

impl Engine {
    /// Wait before the review runs again (the provider's delay, or backoff with jitter).
    fn schedule_review_retry(&mut self, fx: &mut Vec<Effect>, signal: ErrorSignal, count: u64) {
        let unit: f64 = self.rng.random();
        let attempt_of_kind = u32::try_from(count).unwrap_or(u32::MAX);
        let wait = retry::wait_for(&self.cfg.retry, &signal, attempt_of_kind, unit);
        let status = format!(
            "retrying the reviewer ({} attempt {count}); next in {}: {}",
            signal.class.as_str(),
            fmt_duration(wait),
            signal.reason
        );
        fx.push(Effect::SetStatus(Status::Retrying));
        fx.push(Effect::Record(Event::RetryWait {
            loop_number: self.loop_number,
            // Prompt 0: the reviewer, not one of the loop's prompts.
            prompt_index: 0,
            next_attempt: u32::try_from(count + 1).unwrap_or(u32::MAX),
            retry_kind: signal.class,
            retry_count: count,
            wait_seconds: wait,
            provider_delay_seconds: signal.retry_after,
            reason: signal.reason,
            retry_status: status,
        }));
        self.phase = Phase::ReviewWait;
        fx.push(Effect::Wait {
            duration: Duration::try_from_secs_f64(wait).unwrap_or_default(),
            purpose: WaitPurpose::Retry,
        });
    }
}

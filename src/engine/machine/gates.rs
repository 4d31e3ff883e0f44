//! The end of a loop: the after-fingerprint, the plan check, then every gate, breaker and
//! budget in their documented order (D28), and the stop or the next loop.

use super::*;
use crate::engine::human::ApprovalGate;

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
        if self.cfg.completion_streak.is_some() && self.cfg.plan_gate && self.loop_completion {
            self.phase = Phase::CheckingPlan;
            fx.push(Effect::CheckPlan);
        } else {
            self.evaluate_gates(fx);
        }
    }

    /// Update every gate's counters, record the loop, then stop for the first gate that
    /// trips, in this documented order: operator stop, completion (with its human approval,
    /// D28), no progress, output decline, output match, budgets, dry run, max loops.
    pub(super) fn evaluate_gates(&mut self, fx: &mut Vec<Effect>) {
        let mut blocked_by_plan = false;
        if self.cfg.completion_streak.is_some() {
            if self.loop_completion {
                if self.plan_unchecked.is_some_and(|n| n > 0) {
                    blocked_by_plan = true;
                    self.streak = 0;
                } else {
                    self.streak += 1;
                }
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

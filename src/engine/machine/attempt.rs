//! One attempt of a prompt: launching it with the feedback block (D29), reading its report
//! (session, usage, the completion marker, errors), and what comes next: the next prompt,
//! the end of the loop, a retry after a transient error or a rate limit (D15), or the stop.

use super::*;

impl Engine {
    pub(super) fn launch_attempt(&mut self, fx: &mut Vec<Effect>) {
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
        let block = crate::engine::feedback::render(&feedback, crate::engine::feedback::MAX_BLOCK);
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

    pub(super) fn attempt_finished(&mut self, fx: &mut Vec<Effect>, r: AttemptReport) {
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
}

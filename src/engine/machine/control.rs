//! What the operator and the process ask of a running engine at any time: control commands
//! (stop after the prompt or the loop, interrupt, pause, resume, notes, D22) and signals,
//! each acted on at the boundary it asks for.

use super::*;

impl Engine {
    /// End the run as soon as possible: terminate a running attempt first, cancel waits.
    pub(super) fn interrupt(&mut self, fx: &mut Vec<Effect>, reason: StopReason, forceful: bool) {
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

    pub(super) fn control(&mut self, fx: &mut Vec<Effect>, cmd: ControlCommand) {
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
}

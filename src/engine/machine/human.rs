//! People in the loop (issue 17): asks that hold the run at the next loop boundary until a
//! person answers, approval gates (the last gate of D28, and a checkpoint every N loops), and
//! what a person says going back to the agent through the feedback block (D29).

use super::gates::Breakers;
use super::*;
use crate::engine::human::{ApprovalGate, ApprovalRequest, AskInfo, HumanInput};

/// What the engine tracks of the people in the loop.
#[derive(Debug, Default)]
pub(super) struct HumanState {
    /// Asks not answered yet, in the order they were opened.
    open: Vec<AskInfo>,
    /// Every ask id seen, so a level-triggered re-read never opens one twice.
    seen: Vec<String>,
    /// The approval the run waits for.
    approval: Option<Pending>,
    /// Inputs that came before the run started (asks carried over from an earlier run),
    /// replayed after `run_started` so the first loop boundary holds for them.
    early: Vec<HumanInput>,
    started: bool,
}

#[derive(Debug)]
struct Pending {
    id: String,
    gate: ApprovalGate,
    /// The loop's breakers, judged after a rejected completion (D28).
    breakers: Breakers,
}

impl Engine {
    /// Held for a person: an operator stop ends such a run at once.
    pub(super) fn waiting_for_person(&self) -> bool {
        matches!(
            self.phase,
            Phase::WaitingForAnswer | Phase::WaitingForApproval
        )
    }

    /// The run has started: what came before now counts.
    pub(super) fn human_started(&mut self, fx: &mut Vec<Effect>) {
        self.human.started = true;
        for input in std::mem::take(&mut self.human.early) {
            self.human_input(fx, input);
        }
    }

    pub(super) fn human_input(&mut self, fx: &mut Vec<Effect>, input: HumanInput) {
        if !self.human.started {
            self.human.early.push(input);
            return;
        }
        match input {
            HumanInput::AskOpened(ask) => {
                if self.human.seen.contains(&ask.id) {
                    return;
                }
                self.human.seen.push(ask.id.clone());
                fx.push(Effect::Record(Event::AskOpened {
                    id: ask.id.clone(),
                    question: ask.question.clone(),
                    choices: ask.choices.clone(),
                    carried_from: ask.carried_from.clone(),
                }));
                self.human.open.push(ask);
                // A run already held keeps waiting for this one too.
                if self.phase == Phase::WaitingForAnswer {
                    self.record_waiting(fx);
                }
            }
            HumanInput::AskAnswered { id, answer, actor } => {
                let Some(at) = self.human.open.iter().position(|a| a.id == id) else {
                    return;
                };
                let ask = self.human.open.remove(at);
                fx.push(Effect::Record(Event::AskAnswered {
                    id: id.clone(),
                    answer: answer.clone(),
                    actor,
                }));
                let mut text = format!("You asked: {}\n", ask.question);
                if !ask.choices.is_empty() {
                    text.push_str(&format!("Choices: {}\n", ask.choices.join(" | ")));
                }
                text.push_str(&format!("The answer: {answer}"));
                self.pending_feedback.push(Feedback {
                    id,
                    kind: FeedbackKind::Answer,
                    title: "a person answered your question".into(),
                    text,
                });
                if self.phase == Phase::WaitingForAnswer && self.human.open.is_empty() {
                    fx.push(Effect::SetStatus(Status::Running));
                    self.phase = Phase::Idle;
                    self.begin_loop(fx);
                }
            }
            HumanInput::Decision {
                id,
                approved,
                reason,
                actor,
            } => {
                let matches = self.human.approval.as_ref().is_some_and(|p| p.id == id);
                if !matches || self.phase != Phase::WaitingForApproval {
                    return;
                }
                let Some(pending) = self.human.approval.take() else {
                    return;
                };
                fx.push(Effect::SetStatus(Status::Running));
                self.phase = Phase::Idle;
                if approved {
                    fx.push(Effect::Record(Event::ApprovalGiven {
                        id,
                        gate: pending.gate,
                        actor,
                    }));
                    match pending.gate {
                        ApprovalGate::Completion => self.finish(fx, StopReason::Completion),
                        ApprovalGate::EveryNLoops => self.next_loop(fx),
                    }
                    return;
                }
                let reason = reason
                    .filter(|r| !r.trim().is_empty())
                    .unwrap_or_else(|| "rejected without a reason".into());
                // D28: a blocked gate resets the completion streak.
                if pending.gate == ApprovalGate::Completion {
                    self.streak = 0;
                }
                fx.push(Effect::Record(Event::ApprovalRejected {
                    id: id.clone(),
                    gate: pending.gate,
                    reason: reason.clone(),
                    actor,
                    completion_streak: self.streak,
                }));
                self.pending_feedback.push(Feedback {
                    id,
                    kind: FeedbackKind::ApprovalRejection,
                    title: match pending.gate {
                        ApprovalGate::Completion => {
                            "a person did not approve the completion".into()
                        }
                        ApprovalGate::EveryNLoops => "a person reviewed the last loops".into(),
                    },
                    text: reason,
                });
                match pending.gate {
                    ApprovalGate::Completion => self.after_gates(fx, pending.breakers),
                    ApprovalGate::EveryNLoops => self.next_loop(fx),
                }
            }
        }
    }

    /// At a loop boundary: hold the run while asks are unanswered (unless the policy says to
    /// carry on). True when the run now waits.
    pub(super) fn hold_for_answers(&mut self, fx: &mut Vec<Effect>) -> bool {
        if !self.cfg.human.wait_for_answers || self.human.open.is_empty() {
            return false;
        }
        self.phase = Phase::WaitingForAnswer;
        fx.push(Effect::SetStatus(Status::WaitingForAnswer));
        self.record_waiting(fx);
        true
    }

    fn record_waiting(&self, fx: &mut Vec<Effect>) {
        fx.push(Effect::Record(Event::WaitingForAnswer {
            asks: self.human.open.iter().map(|a| a.id.clone()).collect(),
        }));
    }

    pub(super) fn needs_approval(&self, gate: ApprovalGate) -> bool {
        let policy = &self.cfg.human;
        match gate {
            ApprovalGate::Completion => policy.approve_completion,
            ApprovalGate::EveryNLoops => policy
                .approve_every
                .is_some_and(|n| n > 0 && self.loop_number.is_multiple_of(n)),
        }
    }

    /// Hold the run for `gate`; the decision continues the loop's end.
    pub(super) fn request_approval(
        &mut self,
        fx: &mut Vec<Effect>,
        gate: ApprovalGate,
        breakers: Breakers,
    ) {
        let suffix: u32 = self.rng.random();
        let id = format!(
            "approval-{:04}-{}-{:06x}",
            self.loop_number,
            gate.as_str(),
            suffix & 0xff_ffff
        );
        let question = match gate {
            ApprovalGate::Completion => format!(
                "approve completion after loop {}? (looper approve / looper reject --reason ...)",
                self.loop_number
            ),
            ApprovalGate::EveryNLoops => format!(
                "approve continuing after loop {}? (looper approve / looper reject --reason ...)",
                self.loop_number
            ),
        };
        // The request is written before the event that announces it, so whoever the event
        // wakes (`looper wait`, the MCP wait) finds the approval there.
        fx.push(Effect::RequestApproval(ApprovalRequest {
            id: id.clone(),
            gate,
            loop_number: self.loop_number,
            question: question.clone(),
        }));
        fx.push(Effect::Record(Event::ApprovalRequested {
            id: id.clone(),
            gate,
            loop_number: self.loop_number,
            question,
        }));
        fx.push(Effect::SetStatus(Status::WaitingForApproval));
        self.phase = Phase::WaitingForApproval;
        self.human.approval = Some(Pending { id, gate, breakers });
    }
}

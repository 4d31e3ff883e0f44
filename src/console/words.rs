//! What the supervisor says on its console, worded in one place: a line for each event worth
//! a person's attention, the run's header, waits and the final stop.

use std::path::Path;
use std::time::Duration;

use crate::engine::stop::fmt_duration;
use crate::engine::{Event, StopReason, WaitPurpose};
use crate::text::{self, human_bytes, trim_number};

/// The lines an engine event is announced with (most events say nothing). `log` is the
/// attempt log in use, named after a retry so the operator can look.
pub fn for_event(event: &Event, log: Option<&Path>) -> Vec<String> {
    match event {
        Event::LoopStarted {
            loop_number,
            session,
            total_prompts,
            ..
        } => vec![format!(
            "== loop {loop_number} ({total_prompts} prompt(s)) session {session}"
        )],
        Event::BackupCreated { branch, pruned, .. } => {
            let mut lines = vec![format!("backup branch: {branch}")];
            lines.extend(pruned.iter().map(|p| format!("pruned backup branch: {p}")));
            lines
        }
        Event::PromptCompleted { error: Some(e), .. } => vec![format!("agent error: {e}")],
        Event::RetryWait { retry_status, .. } => {
            let mut lines = vec![format!("RETRY: {retry_status}")];
            if let Some(log) = log {
                lines.push(format!("last log: {}", log.display()));
            }
            lines
        }
        Event::LoopCompleted {
            loop_number,
            duration_seconds,
            output_bytes,
            completion_blocked_by_plan,
            plan_unchecked,
            blocked_by,
            blocked_reason,
            plan_removed,
            ..
        } => {
            let mut lines = vec![format!(
                "loop metrics: loop={loop_number} duration={}s output={}",
                trim_number(*duration_seconds, 2),
                human_bytes(*output_bytes)
            )];
            match (blocked_by, blocked_reason) {
                (Some(crate::engine::Gate::Plan), _) if *completion_blocked_by_plan => {
                    lines.push(format!(
                        "completion marker seen but the plan still has {} unchecked task(s); streak reset",
                        plan_unchecked.unwrap_or(0)
                    ));
                }
                (Some(gate), Some(why)) => lines.push(format!(
                    "completion marker seen but blocked by the {} gate: {}; streak reset",
                    gate.as_str(),
                    text::sanitize_line(why)
                )),
                _ => {}
            }
            if !plan_removed.is_empty() && *blocked_by != Some(crate::engine::Gate::PlanIntegrity) {
                lines.push(format!(
                    "plan: {} open task(s) removed without being ticked: {}",
                    plan_removed.len(),
                    text::sanitize_line(&text::clip_chars(&plan_removed.join("; "), 200))
                ));
            }
            lines
        }
        Event::VerifyCompleted {
            pass,
            reason,
            count,
            duration_seconds,
            consecutive_failures,
            ..
        } => {
            let count = count.map(|c| format!(", count {c}")).unwrap_or_default();
            let took = trim_number(*duration_seconds, 2);
            if *pass {
                vec![format!("verify passed ({took}s{count})")]
            } else {
                vec![format!(
                    "verify FAILED: {} ({took}s{count}; {consecutive_failures} in a row)",
                    reason.as_deref().unwrap_or("failed")
                )]
            }
        }
        Event::ReviewCompleted {
            verdict,
            reason,
            round,
            rejections,
            ..
        } => vec![match reason {
            Some(why) => format!(
                "review {round}: {verdict} ({}; {rejections} rejection(s) so far)",
                text::sanitize_line(why)
            ),
            None => format!("review {round}: {verdict}"),
        }],
        Event::ControlCommandReceived { action, id, .. } => {
            vec![format!("control: received {action} ({id})")]
        }
        Event::CompletionMarkerIgnored { .. } => vec![
            "looper: the agent printed the completion marker, but completion is off: the run goes on. Pass --complete-on 'EXIT_SIGNAL:\\s*true' or set completion_enabled = true to stop on it".into(),
        ],
        // The reason may quote what another looper's agent printed (D35).
        Event::QuotaWait { retry_status, .. } => {
            vec![format!("HOLD: {}", text::sanitize_line(retry_status))]
        }
        Event::Paused { .. } => vec!["paused: waiting for `looper control resume`".into()],
        Event::Resumed { .. } => vec!["resumed".into()],
        Event::AskOpened {
            id,
            question,
            choices,
            carried_from,
        } => {
            let mut line = format!("ASK {id}: {question}");
            if !choices.is_empty() {
                line.push_str(&format!(" [{}]", choices.join(" | ")));
            }
            if let Some(from) = carried_from {
                line.push_str(&format!(" (carried over from {from})"));
            }
            vec![line, format!("answer: looper answer {id} \"...\"")]
        }
        Event::AskAnswered { id, answer, .. } => vec![format!("answered {id}: {answer}")],
        Event::WaitingForAnswer { asks } => vec![format!(
            "waiting for an answer to {} (looper answer ...)",
            asks.join(", ")
        )],
        Event::ApprovalRequested { question, .. } => vec![format!("APPROVAL: {question}")],
        Event::ApprovalGiven { gate, .. } => vec![format!("approved ({})", gate.as_str())],
        Event::ApprovalRejected { gate, reason, .. } => {
            vec![format!("rejected ({}): {reason}", gate.as_str())]
        }
        _ => vec![],
    }
}

pub fn wait(duration: Duration, purpose: WaitPurpose) -> String {
    let what = match purpose {
        WaitPurpose::Sleep => "the next loop",
        WaitPurpose::Retry => "retry",
    };
    format!(
        "sleeping {} before {what}",
        fmt_duration(duration.as_secs_f64())
    )
}

pub fn stop(reason: &StopReason) -> String {
    format!("STOP: {}", reason.reason())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_metrics_read_like_the_reference() {
        let lines = for_event(
            &Event::LoopCompleted {
                loop_number: 2,
                duration_seconds: 1.5,
                output_bytes: 2048,
                completion_detected: true,
                plan_unchecked: Some(3),
                completion_blocked_by_plan: true,
                blocked_by: Some(crate::engine::Gate::Plan),
                blocked_reason: Some("3 unchecked task(s) left in the plan".into()),
                plan_removed: vec![],
                verify_passed: None,
                review_approved: None,
                completion_streak: 0,
                fingerprint: None,
                no_progress_count: 0,
                output_decline_count: 0,
                output_match_count: 0,
                usage: Default::default(),
                usage_total: Default::default(),
            },
            None,
        );
        assert_eq!(
            lines,
            [
                "loop metrics: loop=2 duration=1.5s output=2KiB",
                "completion marker seen but the plan still has 3 unchecked task(s); streak reset"
            ]
        );
        assert_eq!(
            wait(Duration::from_millis(2500), WaitPurpose::Retry),
            "sleeping 2.5s before retry"
        );
    }
}

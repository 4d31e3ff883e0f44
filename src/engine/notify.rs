//! When to notify a person (D33): from the run's events, the entries into the states
//! `[notify].on` names, each fired once per entry and never again while the state lasts. Pure:
//! the driver runs the notifier (`effects::notify`).

use super::events::Event;
use super::stop::{Status, StopKind};

/// One notification to send: which state was entered, and what to say.
#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    /// `needs_input`, `stopped`, `completed`, `error`, `breaker`, `long_retry_wait`.
    pub event: &'static str,
    pub title: String,
    pub body: String,
    pub question: Option<String>,
    pub stop_reason: Option<String>,
    pub exit_code: Option<i32>,
}

/// Tracks the states across events.
#[derive(Clone, Debug, Default)]
pub struct NotifyPolicy {
    on: Vec<String>,
    label: String,
    /// A retry wait at least this long is a long one (`retry_notify_after_seconds`).
    long_retry: f64,
    open_asks: usize,
    in_long_retry: bool,
}

/// Text from agents goes into argv for other programs and onto screens: one line, no
/// control sequences (D35), bounded.
fn clean(text: &str) -> String {
    let line = crate::text::sanitize_line(text);
    let flat: String = line.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > 300 {
        let cut: String = flat.chars().take(299).collect();
        format!("{cut}…")
    } else {
        flat
    }
}

impl NotifyPolicy {
    pub fn new(on: &[String], label: &str, long_retry_seconds: f64) -> Self {
        Self {
            on: on.to_vec(),
            label: label.to_string(),
            long_retry: long_retry_seconds,
            ..Self::default()
        }
    }

    fn wants(&self, event: &str) -> bool {
        self.on.iter().any(|e| e == event)
    }

    fn make(&self, event: &'static str, what: &str, body: String) -> Notification {
        Notification {
            event,
            title: clean(&format!("looper {}: {what}", self.label)),
            body: clean(&body),
            question: None,
            stop_reason: None,
            exit_code: None,
        }
    }

    /// The notification this event calls for, if any.
    pub fn observe(&mut self, event: &Event) -> Option<Notification> {
        match event {
            Event::AskOpened { question, .. } | Event::ApprovalRequested { question, .. } => {
                self.open_asks += 1;
                if self.open_asks != 1 || !self.wants("needs_input") {
                    return None;
                }
                let mut n = self.make("needs_input", "needs input", question.clone());
                n.question = Some(clean(question));
                Some(n)
            }
            Event::AskAnswered { .. }
            | Event::ApprovalGiven { .. }
            | Event::ApprovalRejected { .. } => {
                self.open_asks = self.open_asks.saturating_sub(1);
                None
            }
            Event::RetryWait {
                wait_seconds,
                retry_status,
                ..
            } => {
                if *wait_seconds < self.long_retry || self.in_long_retry {
                    return None;
                }
                self.in_long_retry = true;
                self.wants("long_retry_wait")
                    .then(|| self.make("long_retry_wait", "waiting to retry", retry_status.clone()))
            }
            Event::PromptCompleted {
                retry_kind: None, ..
            } => {
                self.in_long_retry = false;
                None
            }
            Event::RunStopped {
                status,
                stop_reason,
                stop_kind,
                exit_code,
            } => {
                // One notification for the end: the most specific state asked for.
                let event = [
                    ("completed", *stop_kind == StopKind::Completion),
                    ("breaker", *exit_code == crate::error::exit_code::BREAKER),
                    ("error", *status == Status::Error),
                    ("stopped", true),
                ]
                .into_iter()
                .find(|(name, applies)| *applies && self.wants(name))
                .map(|(name, _)| name)?;
                let mut n = self.make(event, &format!("{} ({})", status.as_str(), event), {
                    stop_reason.clone()
                });
                n.stop_reason = Some(clean(stop_reason));
                n.exit_code = Some(*exit_code);
                Some(n)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ErrorClass;

    fn ask(id: &str) -> Event {
        Event::AskOpened {
            id: id.into(),
            question: "Which \u{1b}[31mdatabase\u{1b}[0m?".into(),
            choices: vec![],
            carried_from: None,
        }
    }

    fn answered(id: &str) -> Event {
        Event::AskAnswered {
            id: id.into(),
            answer: "pg".into(),
            actor: None,
        }
    }

    fn wait(secs: f64) -> Event {
        Event::RetryWait {
            loop_number: 1,
            prompt_index: 1,
            next_attempt: 2,
            retry_kind: ErrorClass::RateLimit,
            retry_count: 1,
            wait_seconds: secs,
            provider_delay_seconds: None,
            reason: "429".into(),
            retry_status: "retrying rate_limit".into(),
        }
    }

    fn stopped(kind: StopKind, status: Status, code: i32) -> Event {
        Event::RunStopped {
            status,
            stop_reason: "why".into(),
            stop_kind: kind,
            exit_code: code,
        }
    }

    fn all() -> Vec<String> {
        crate::config::schema::NOTIFY_EVENTS
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn needs_input_fires_once_per_entry_not_while_it_lasts() {
        let mut p = NotifyPolicy::new(&all(), "smoke", 300.0);
        let n = p.observe(&ask("a")).expect("entry");
        assert_eq!(n.event, "needs_input");
        assert_eq!(n.title, "looper smoke: needs input");
        assert_eq!(n.body, "Which database?", "sanitised (D35)");
        assert!(p.observe(&ask("b")).is_none(), "still needs input");
        assert!(p.observe(&answered("a")).is_none());
        assert!(p.observe(&ask("c")).is_none(), "b is still open");
        p.observe(&answered("b"));
        p.observe(&answered("c"));
        assert!(p.observe(&ask("d")).is_some(), "a new entry");
    }

    #[test]
    fn long_retry_waits_fire_once_until_a_prompt_succeeds() {
        let mut p = NotifyPolicy::new(&all(), "smoke", 300.0);
        assert!(p.observe(&wait(10.0)).is_none(), "short");
        assert!(p.observe(&wait(600.0)).is_some());
        assert!(p.observe(&wait(900.0)).is_none(), "the same episode");
        p.observe(&Event::PromptCompleted {
            loop_number: 1,
            prompt_index: 1,
            attempt: 3,
            returncode: Some(0),
            signal: None,
            timed_out: false,
            output_bytes: 1,
            completion_detected: false,
            output_match_detected: false,
            session_id: None,
            usage: Default::default(),
            retry_kind: None,
            error: None,
            retry_after_seconds: None,
            last_error_line: None,
            dry_run: false,
        });
        assert!(p.observe(&wait(600.0)).is_some());
    }

    #[test]
    fn the_end_fires_the_most_specific_state_asked_for() {
        let mut p = NotifyPolicy::new(&all(), "x", 0.0);
        let n = p
            .observe(&stopped(StopKind::Completion, Status::Stopped, 0))
            .expect("end");
        assert_eq!(n.event, "completed");
        assert_eq!(n.stop_reason.as_deref(), Some("why"));
        let n = p
            .observe(&stopped(StopKind::NoProgress, Status::Stopped, 3))
            .expect("end");
        assert_eq!(n.event, "breaker");
        let mut only_stopped = NotifyPolicy::new(&["stopped".into()], "x", 0.0);
        let n = only_stopped
            .observe(&stopped(StopKind::Terminal, Status::Error, 1))
            .expect("end");
        assert_eq!(n.event, "stopped");
        assert_eq!(n.exit_code, Some(1));
        let mut none = NotifyPolicy::new(&["needs_input".into()], "x", 0.0);
        assert!(
            none.observe(&stopped(StopKind::MaxLoops, Status::Stopped, 0))
                .is_none()
        );
    }
}

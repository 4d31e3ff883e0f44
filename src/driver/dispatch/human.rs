//! The dispatcher's side of the people in the loop (issue 17): answers that went into a
//! prompt are marked done in the run's asks (D31), each event is shown to the notification
//! policy (D33), and a notifier's outcome is recorded, never a reason to stop.

use super::*;
use crate::effects::notify::NotifyOutcome;
use crate::engine::FeedbackKind;
use crate::engine::notify::NotifyPolicy;

/// The policy for this run: off unless `[notify]` has a command and events.
pub(super) fn notify_policy(cfg: &RunConfig) -> NotifyPolicy {
    let n = &cfg.settings.human.notify;
    let on = if n.enabled() { n.on.clone() } else { vec![] };
    NotifyPolicy::new(
        &on,
        &cfg.label,
        cfg.settings.retry_notify_after.as_secs_f64(),
    )
}

impl Dispatcher {
    pub(super) fn human_records(&mut self, event: &Event) -> Result<()> {
        if let Event::FeedbackDelivered { items, .. } = event {
            let ids: Vec<String> = items
                .iter()
                .filter(|i| i.kind == FeedbackKind::Answer)
                .map(|i| i.id.clone())
                .collect();
            if !ids.is_empty() {
                self.ports.records.asks_delivered(&ids)?;
            }
        }
        if let Some(n) = self.notify.observe(event) {
            self.ports.notifier.fire(&n);
        }
        Ok(())
    }

    /// A notifier finished (or was killed at its timeout).
    pub fn notification_done(&mut self, outcome: NotifyOutcome) {
        let event = match outcome.result {
            Ok(()) => SupervisorEvent::NotificationSent {
                on: outcome.event.into(),
                seconds: outcome.seconds,
            },
            Err(error) => {
                self.say(&format!("notify: {} failed: {error}", outcome.event));
                SupervisorEvent::NotificationFailed {
                    on: outcome.event.into(),
                    error,
                    seconds: outcome.seconds,
                }
            }
        };
        let r = self.ports.records.append_supervisor(&event);
        self.check(r);
    }
}

//! The settings of the people in the loop (issue 17): `[human]` (asks and approval gates)
//! and `[notify]` (D33), read from the validated layers, with the rules that tie keys
//! together checked here, before anything starts (D6).

use std::time::Duration;

use super::layers::{Layers, Value};
use crate::engine::HumanPolicy;
use crate::error::{Error, Result};

/// `[notify]`, validated.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NotifySettings {
    /// The argv template; empty when notifications are off.
    pub command: Vec<String>,
    /// The states it fires for (`schema::NOTIFY_EVENTS`).
    pub on: Vec<String>,
    pub timeout: Duration,
}

impl NotifySettings {
    pub fn enabled(&self) -> bool {
        !self.command.is_empty() && !self.on.is_empty()
    }
}

/// `[human]` and `[notify]`, validated.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HumanSettings {
    pub policy: HumanPolicy,
    pub notify: NotifySettings,
}

fn list(layers: &Layers, path: &str) -> Vec<String> {
    match layers.get(path).map(|e| &e.value) {
        Some(Value::List(l)) => l.clone(),
        _ => vec![],
    }
}

fn origin(layers: &Layers, path: &str) -> String {
    layers
        .get(path)
        .map(|e| e.origin.to_string())
        .unwrap_or_else(|| "default".into())
}

/// Read `[human]` and `[notify]` from layers whose keys were each checked already.
pub fn read(layers: &Layers) -> Result<HumanSettings> {
    let on_ask = match layers.get("human.on_ask").map(|e| &e.value) {
        Some(Value::Str(s)) => s.clone(),
        _ => "wait".into(),
    };
    let gates = list(layers, "human.require_approval");
    let every = match layers.get("human.approval_every").map(|e| &e.value) {
        Some(Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
        _ => 0,
    };
    let every_gate = gates.iter().any(|g| g == "every_n_loops");
    if every_gate && every == 0 {
        return Err(Error::config(
            origin(layers, "human.require_approval"),
            "human.approval_every",
            "a whole number >= 1 when require_approval has \"every_n_loops\"",
            "0",
        ));
    }
    let policy = HumanPolicy {
        wait_for_answers: on_ask == "wait",
        approve_completion: gates.iter().any(|g| g == "completion"),
        approve_every: every_gate.then_some(every),
    };
    let command = list(layers, "notify.command");
    let on = list(layers, "notify.on");
    if !command.is_empty() && on.is_empty() {
        return Err(Error::config(
            origin(layers, "notify.command"),
            "notify.on",
            "at least one event when notify.command is set, e.g. on = [\"needs_input\", \"stopped\"]",
            "an empty array",
        ));
    }
    if command.is_empty() && !on.is_empty() {
        return Err(Error::config(
            origin(layers, "notify.on"),
            "notify.command",
            "the notifier's argv when notify.on is set, e.g. command = [\"notify-send\", \"{title}\", \"{body}\"]",
            "an empty array",
        ));
    }
    let timeout = match layers.get("notify.timeout_seconds").map(|e| &e.value) {
        Some(Value::Num(n)) => Duration::try_from_secs_f64(*n).unwrap_or(Duration::from_secs(10)),
        _ => Duration::from_secs(10),
    };
    Ok(HumanSettings {
        policy,
        notify: NotifySettings {
            command,
            on,
            timeout,
        },
    })
}

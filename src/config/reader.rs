//! Typed access to the validated layers: each key read as the type the schema checked it
//! to be (strings, numbers, seconds as `Duration`s, lists), and where its value came from.

use std::time::Duration;

use super::{Layers, Origin, Value};

/// Typed access to validated layers.
pub(super) struct Reader<'a> {
    pub(super) layers: &'a Layers,
}

impl Reader<'_> {
    pub(super) fn value(&self, path: &str) -> Option<&Value> {
        self.layers.get(path).map(|e| &e.value)
    }
    pub(super) fn str(&self, path: &str) -> String {
        match self.value(path) {
            Some(Value::Str(s)) => s.clone(),
            _ => String::new(),
        }
    }
    pub(super) fn opt_str(&self, path: &str) -> Option<String> {
        match self.value(path) {
            Some(Value::Str(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        }
    }
    pub(super) fn int(&self, path: &str) -> u64 {
        match self.value(path) {
            Some(Value::Int(i)) => u64::try_from(*i).unwrap_or(0),
            _ => 0,
        }
    }
    pub(super) fn num(&self, path: &str) -> f64 {
        match self.value(path) {
            Some(Value::Num(n)) => *n,
            Some(Value::Int(i)) => *i as f64,
            _ => 0.0,
        }
    }
    /// A `*_seconds` key, range-checked by the schema (`Kind::Seconds`) when it was read.
    pub(super) fn seconds(&self, path: &str) -> Duration {
        Duration::try_from_secs_f64(self.num(path)).unwrap_or(Duration::ZERO)
    }
    pub(super) fn bool(&self, path: &str) -> bool {
        matches!(self.value(path), Some(Value::Bool(true)))
    }
    pub(super) fn opt_bool(&self, path: &str) -> Option<bool> {
        match self.value(path) {
            Some(Value::Bool(b)) => Some(*b),
            _ => None,
        }
    }
    pub(super) fn list(&self, path: &str) -> Option<Vec<String>> {
        match self.value(path) {
            Some(Value::List(l)) => Some(l.clone()),
            _ => None,
        }
    }
    pub(super) fn explicit(&self, path: &str) -> bool {
        self.layers
            .get(path)
            .is_some_and(|e| e.origin != Origin::Default)
    }
    pub(super) fn origin(&self, path: &str) -> String {
        self.layers
            .get(path)
            .map(|e| e.origin.to_string())
            .unwrap_or_else(|| "default".into())
    }
}

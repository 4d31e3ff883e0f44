//! Retry policy: which failures are retried, and how long to wait (D15). Pure.

/// What an error signal means for the loop.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ErrorClass {
    /// Quota or rate limit: retried without a cap, honouring the provider's delay.
    RateLimit,
    /// Overload, 5xx, temporary unavailability: retried up to the transient cap.
    Transient,
    /// Anything else matching a stop pattern: the run stops.
    Terminal,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// An error seen on an error channel during an attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct ErrorSignal {
    pub class: ErrorClass,
    /// The recorded reason, e.g. `stop pattern detected in stderr: '429' (...)`.
    pub reason: String,
    /// The delay the provider asked for, in seconds from when it was seen.
    pub retry_after: Option<f64>,
}

#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub max_transient_retries: u64,
    pub backoff_base: f64,
    pub backoff_max: f64,
    pub rate_limit_max_wait: f64,
}

/// Exponential backoff with "equal jitter": half fixed, half random, so synchronized
/// loopers spread out but a wait is never much shorter than planned. `unit` in [0, 1).
pub fn backoff(policy: &RetryPolicy, attempt: u32, unit: f64) -> f64 {
    let exp = attempt.saturating_sub(1).min(30);
    let raw = (policy.backoff_base * f64::from(1u32 << exp.min(30))).min(policy.backoff_max);
    raw / 2.0 + raw / 2.0 * unit.clamp(0.0, 1.0)
}

/// The wait before retry number `attempt` (1-based) of this class.
pub fn wait_for(policy: &RetryPolicy, signal: &ErrorSignal, attempt: u32, unit: f64) -> f64 {
    match signal.retry_after {
        Some(d) if d.is_finite() => d.clamp(0.0, policy.rate_limit_max_wait),
        _ => backoff(policy, attempt, unit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_transient_retries: 3,
            backoff_base: 5.0,
            backoff_max: 60.0,
            rate_limit_max_wait: 3600.0,
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let p = policy();
        assert_eq!(backoff(&p, 1, 0.0), 2.5);
        assert_eq!(backoff(&p, 1, 1.0), 5.0);
        assert_eq!(backoff(&p, 2, 1.0), 10.0);
        assert_eq!(backoff(&p, 3, 0.5), 15.0);
        assert_eq!(backoff(&p, 10, 1.0), 60.0);
        assert_eq!(backoff(&p, 200, 1.0), 60.0);
    }

    #[test]
    fn provider_delay_wins_and_is_capped() {
        let p = policy();
        let mut s = ErrorSignal {
            class: ErrorClass::RateLimit,
            reason: "x".into(),
            retry_after: Some(42.0),
        };
        assert_eq!(wait_for(&p, &s, 1, 0.9), 42.0);
        s.retry_after = Some(99_999.0);
        assert_eq!(wait_for(&p, &s, 1, 0.9), 3600.0);
        s.retry_after = Some(-5.0);
        assert_eq!(wait_for(&p, &s, 1, 0.9), 0.0);
        s.retry_after = None;
        assert_eq!(wait_for(&p, &s, 1, 1.0), 5.0);
    }
}

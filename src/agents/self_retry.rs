//! A CLI's own retry of a request, as far as it says (issue 18 item 1): claude's stream-json
//! `system`/`api_retry` records carry every field; gemini's `Attempt N failed with status
//! 429. Retrying with backoff...` and codex's `Reconnecting... 2/5 (exceeded retry limit,
//! last status: 429 Too Many Requests)` lines are read for what they name. Informational:
//! the looper records and shows them, never acts on them (the CLI is still trying).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SelfRetry {
    pub attempt: Option<u64>,
    pub max_attempts: Option<u64>,
    /// The HTTP status it got (429, 529, 503, ...).
    pub status: Option<u64>,
    /// How long it waits before its next try.
    pub delay_seconds: Option<f64>,
    /// Its own word for the error (`rate_limit`, `overloaded`).
    pub error: Option<String>,
    /// Its notice, as the looper words it (bounded).
    pub text: String,
}

fn number_after<'a>(lower: &'a str, word: &str) -> Option<&'a str> {
    let rest = &lower[lower.find(word)? + word.len()..];
    let rest = rest.trim_start();
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

/// What a plain-text retry notice says.
pub fn from_text(text: &str) -> SelfRetry {
    let lower = text.to_ascii_lowercase();
    let mut r = SelfRetry {
        text: crate::text::clip_chars(text.trim(), 300),
        ..SelfRetry::default()
    };
    // gemini: "Attempt 2 failed with status 429. Retrying with backoff..."
    r.attempt = number_after(&lower, "attempt ").and_then(|n| n.parse().ok());
    r.status = number_after(&lower, "status ")
        .or_else(|| number_after(&lower, "last status:"))
        .and_then(|n| n.parse().ok());
    // codex: "Reconnecting... 2/5 (...)"
    if let Some(rest) = lower.trim_start().strip_prefix("reconnecting") {
        let rest = rest.trim_start_matches('.').trim_start();
        if let Some((n, m)) = rest.split_once('/') {
            r.attempt = n.trim().parse().ok();
            let m: String = m.chars().take_while(char::is_ascii_digit).collect();
            r.max_attempts = m.parse().ok();
        }
    }
    // "Retrying after 1500ms", "retrying in 2s"
    for word in ["retrying after ", "retrying in "] {
        if let Some(i) = lower.find(word) {
            let rest = &lower[i + word.len()..];
            let num: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            if let Ok(n) = num.parse::<f64>() {
                let unit = rest[num.len()..].trim_start();
                r.delay_seconds = Some(if unit.starts_with("ms") {
                    n / 1000.0
                } else {
                    n
                });
            }
        }
    }
    if lower.contains("429") || lower.contains("rate limit") || lower.contains("quota") {
        r.error = Some("rate_limit".into());
    } else if ["503", "529", "overload", "capacity"]
        .iter()
        .any(|w| lower.contains(w))
    {
        r.error = Some("overloaded".into());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_lines_of_the_real_clis_are_read() {
        // Recorded in tests/fixtures/clis (FINDINGS.md sections 2 and 6).
        let g = from_text("Attempt 2 failed with status 429. Retrying with backoff...");
        assert_eq!((g.attempt, g.status), (Some(2), Some(429)));
        assert_eq!(g.error.as_deref(), Some("rate_limit"));
        let g = from_text(
            "Attempt 1 failed: Resource has been exhausted (e.g. check quota). Retrying after 1500ms...",
        );
        assert_eq!((g.attempt, g.delay_seconds), (Some(1), Some(1.5)));
        let c = from_text(
            "Reconnecting... 2/5 (exceeded retry limit, last status: 429 Too Many Requests)",
        );
        assert_eq!(
            (c.attempt, c.max_attempts, c.status),
            (Some(2), Some(5), Some(429))
        );
        let o = from_text("Attempt 3 failed with status 503. Retrying with backoff...");
        assert_eq!(o.error.as_deref(), Some("overloaded"));
        assert_eq!(from_text("something else").attempt, None);
    }
}

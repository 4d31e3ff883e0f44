//! Understanding agent output, one line at a time (D14, D15, D16): the agent's own text,
//! session ids, usage receipts, and errors, per agent kind. Pure functions of the line.
//!
//! This file holds what every kind shares: the facts a line yields, plain lines, structured
//! errors and the dispatch to each kind's parser (`codex`, `claude`, `gemini`); `delay`
//! reads the retry delays records and error texts ask for (D15).

use std::borrow::Cow;

use serde_json::Value as Json;

pub use self::delay::json_delay;
use self::delay::plain_delay;
use crate::config::AgentKind;
use crate::engine::{ErrorClass, Usage};

mod claude;
mod codex;
mod delay;
mod gemini;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// An error seen on an error channel, before classification.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RawError {
    pub text: String,
    pub structured: bool,
    /// What the structure itself says (an HTTP status, an error type), when it says it.
    pub hint: Option<ErrorClass>,
    pub retry_after: Option<f64>,
}

/// What one line tells us.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LineFacts<'a> {
    /// The agent's own words, for completion and output-match.
    pub text: Option<Cow<'a, str>>,
    pub session_id: Option<String>,
    pub usage: Option<Usage>,
    /// Records that repeat one response's usage (a claude transcript writes a record per
    /// content block, each with the message's usage) share this key: the scanner counts
    /// consecutive records with one key once.
    pub usage_key: Option<String>,
    pub error: Option<RawError>,
    /// The agent reports something it handles itself (its own retry): shown, never acted on.
    pub notice: Option<String>,
    /// What a structured retry notice says (claude's `api_retry`); plain-text notices are
    /// read by `self_retry::from_text`.
    pub self_retry: Option<super::self_retry::SelfRetry>,
    /// What the record says about the account's usage windows (issue 18 item 1).
    pub rate_limits: Vec<RateLimitReading>,
}

/// One reading of an account's usage window, as a CLI reports it from the provider's
/// rate-limit headers (recorded in tests/fixtures/clis, see FINDINGS.md):
/// - claude stream-json `rate_limit_event` (`rate_limit_info`: `status`, `resetsAt`,
///   `rateLimitType`, `utilization` 0..1; from 2.1.332 also `unifiedWindows` with every
///   window), and the `api_error_params` / `apiErrorParams` of a usage-limit error;
/// - codex rollouts' `event_msg`/`token_count` `rate_limits` (`primary` and `secondary`:
///   `used_percent`, `window_minutes`, `resets_at`).
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimitReading {
    /// claude's window name (`five_hour`, `seven_day`, `seven_day_opus`, ...); codex's
    /// `primary` or `secondary`.
    pub window: String,
    /// The window's length, when the CLI says it (codex).
    pub window_minutes: Option<u64>,
    /// How much of the window is used, in percent (0..100), when reported.
    pub used_percent: Option<f64>,
    /// When the window resets, in epoch seconds.
    pub resets_at: Option<f64>,
    /// claude's verdict for the window: `allowed`, `allowed_warning` or `rejected` (codex
    /// reports none).
    pub status: Option<String>,
}

fn num(v: &Json, key: &str) -> Option<f64> {
    v.get(key).and_then(Json::as_f64).filter(|f| f.is_finite())
}

/// Lines longer than this are not parsed as JSON (they are still logged and counted).
pub const MAX_JSON_LINE: usize = 4 << 20;

fn parse_json(line: &str) -> Option<serde_json::Map<String, Json>> {
    let t = line.trim();
    if !(t.starts_with('{') && t.ends_with('}')) || t.len() > MAX_JSON_LINE {
        return None;
    }
    match serde_json::from_str::<Json>(t) {
        Ok(Json::Object(map)) => Some(map),
        _ => None,
    }
}

fn s<'j>(v: &'j Json, key: &str) -> Option<&'j str> {
    v.get(key).and_then(Json::as_str)
}

fn u(v: &Json, key: &str) -> u64 {
    v.get(key).and_then(Json::as_u64).unwrap_or(0)
}

/// The `text` of the parts of `content` whose `type` is `kind`, one per line; `None` when
/// there is none.
pub fn parts_text(content: Option<&Json>, kind: &str) -> Option<String> {
    let text = content?
        .as_array()?
        .iter()
        .filter(|i| s(i, "type") == Some(kind))
        .filter_map(|i| s(i, "text"))
        .collect::<Vec<_>>()
        .join("\n");
    (!text.is_empty()).then_some(text)
}

/// Parse one complete line (without its newline) of `stream` from an agent of `kind`.
/// `now_epoch` converts absolute reset times into delays.
pub fn parse_line<'a>(
    kind: AgentKind,
    stream: Stream,
    line: &'a str,
    scan_stdout: bool,
    now_epoch: f64,
) -> LineFacts<'a> {
    if let Some(obj) = parse_json(line) {
        let v = Json::Object(obj);
        if kind == AgentKind::Generic {
            return generic_json(line, &v, stream, scan_stdout, now_epoch);
        }
        return parse_value(kind, stream, &v, now_epoch);
    }
    plain(kind, stream, line, scan_stdout)
}

/// What one record of a structured agent (codex, claude, gemini) tells us, once parsed:
/// a line parsed by [`parse_line`], or a long one parsed in bounded memory
/// ([`super::long_line`]).
pub fn parse_value<'a>(kind: AgentKind, stream: Stream, v: &Json, now_epoch: f64) -> LineFacts<'a> {
    match kind {
        AgentKind::Codex => codex::parse(v, stream, now_epoch),
        AgentKind::Claude => claude::parse(v, stream, now_epoch),
        AgentKind::Gemini => gemini::parse(v, stream, now_epoch),
        AgentKind::Generic => LineFacts {
            error: structured_error(v, now_epoch),
            ..LineFacts::default()
        },
    }
}

fn plain<'a>(kind: AgentKind, stream: Stream, line: &'a str, scan_stdout: bool) -> LineFacts<'a> {
    let mut facts = LineFacts::default();
    match stream {
        Stream::Stdout => {
            if kind == AgentKind::Generic {
                facts.text = Some(Cow::Borrowed(line));
            }
            if scan_stdout {
                facts.error = Some(RawError {
                    text: line.to_string(),
                    ..RawError::default()
                });
            }
        }
        Stream::Stderr => {
            if let Some(notice) = self_retry_notice(line) {
                facts.notice = Some(notice);
            } else if !line.trim().is_empty() {
                facts.error = Some(RawError {
                    text: line.to_string(),
                    retry_after: plain_delay(line),
                    ..RawError::default()
                });
            }
        }
    }
    facts
}

/// gemini's "Attempt N failed..." stderr message, in any of its forms.
fn is_attempt_failed(lower: &str) -> bool {
    lower
        .trim_start()
        .strip_prefix("attempt ")
        .and_then(|r| r.split_once(' '))
        .is_some_and(|(n, rest)| n.parse::<u32>().is_ok() && rest.starts_with("failed"))
}

/// gemini prints `Attempt N failed: <message>. Retrying after ...` or `... Max attempts
/// reached` on stderr, and when the message has a newline (429 with RetryInfo: `Resource has
/// been exhausted (e.g. check quota).\nSuggested retry after 2s.`) the verdict is on a later
/// line. A line that opens such a message without its verdict must be joined with what
/// follows before it is judged; alone, its continuation looks like a plain error.
pub fn opens_multiline_attempt(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    is_attempt_failed(&lower)
        && !lower.contains("retrying")
        && !lower.contains("max attempts reached")
}

/// The CLIs print these while they retry on their own; acting on them would race them.
fn self_retry_notice(line: &str) -> Option<String> {
    let lower = line.to_ascii_lowercase();
    // gemini's "Attempt N failed: <why>. Max attempts reached" is its give-up: an error.
    if lower.contains("max attempts reached") {
        return None;
    }
    // gemini: "Attempt 2 failed: <why>" precedes its own "Retrying after ..." line.
    let attempt_failed = is_attempt_failed(&lower);
    let retrying = attempt_failed
        || lower.contains("retrying with backoff")
        || lower.contains("retrying in ")
        || lower.contains("retrying after")
        || lower.trim_start().starts_with("reconnecting");
    retrying.then(|| line.trim().to_string())
}

fn generic_json<'a>(
    line: &'a str,
    v: &Json,
    stream: Stream,
    scan_stdout: bool,
    now_epoch: f64,
) -> LineFacts<'a> {
    // The line is still the agent's output; its structure, not its words, says if it is an error.
    let mut facts = plain(AgentKind::Generic, stream, line, scan_stdout);
    facts.error = structured_error(v, now_epoch);
    facts
}

/// Structured records that say they are errors; informational rate-limit telemetry is not.
fn is_error_like(v: &Json) -> bool {
    let ty = s(v, "type").unwrap_or("");
    ty == "error"
        || ty.ends_with(".failed")
        || ty.contains("rate_limit")
        || v.get("error").is_some_and(|e| !e.is_null())
}

fn structured_error(v: &Json, now_epoch: f64) -> Option<RawError> {
    let ty = s(v, "type").unwrap_or("");
    if ty == "rate_limit_event" {
        let info = v.get("rate_limit_info").unwrap_or(v);
        let status = s(info, "status").unwrap_or("unknown");
        if matches!(status, "allowed" | "allowed_warning") {
            return None;
        }
        return Some(RawError {
            text: format!("rate limit event: status={status}"),
            structured: true,
            hint: Some(ErrorClass::RateLimit),
            retry_after: json_delay(v, now_epoch),
        });
    }
    if !is_error_like(v) {
        return None;
    }
    let err = v.get("error").filter(|e| !e.is_null());
    let text = s(v, "message")
        .map(str::to_string)
        .or_else(|| err.and_then(|e| s(e, "message")).map(str::to_string))
        .or_else(|| err.and_then(Json::as_str).map(str::to_string))
        .unwrap_or_else(|| v.to_string());
    Some(RawError {
        hint: status_hint(v).or_else(|| err.and_then(status_hint)),
        retry_after: json_delay(v, now_epoch).or_else(|| plain_delay(&text)),
        text,
        structured: true,
    })
}

/// An HTTP status or provider error type in a structured error.
fn status_hint(v: &Json) -> Option<ErrorClass> {
    let code = [
        "status",
        "status_code",
        "code",
        "error_status",
        "api_error_status",
    ]
    .iter()
    .find_map(|k| {
        v.get(*k).and_then(|c| {
            c.as_u64()
                .or_else(|| c.as_str().and_then(|s| s.trim().parse().ok()))
        })
    });
    if let Some(code) = code {
        return match code {
            429 => Some(ErrorClass::RateLimit),
            500 | 502 | 503 | 504 | 529 => Some(ErrorClass::Transient),
            _ => None,
        };
    }
    let ty = ["type", "status", "code"]
        .iter()
        .find_map(|k| s(v, k))
        .unwrap_or("")
        .to_ascii_lowercase();
    if ty.contains("rate_limit") || ty.contains("resource_exhausted") || ty.contains("quota") {
        Some(ErrorClass::RateLimit)
    } else if ty.contains("overloaded") || ty.contains("unavailable") || ty == "api_error" {
        Some(ErrorClass::Transient)
    } else {
        None
    }
}

/// Remove path-like and URL tokens from plain error text before pattern matching: a temp
/// directory named `rate_limit_test` is not a rate limit.
pub fn strip_paths(line: &str) -> Cow<'_, str> {
    if !line.contains('/') {
        return Cow::Borrowed(line);
    }
    Cow::Owned(
        line.split(' ')
            .map(|tok| if tok.contains('/') { "<path>" } else { tok })
            .collect::<Vec<_>>()
            .join(" "),
    )
}

#[cfg(test)]
mod tests;

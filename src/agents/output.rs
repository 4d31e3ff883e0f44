//! Understanding agent output, one line at a time (D14, D15, D16): the agent's own text,
//! session ids, usage receipts, and errors, per agent kind. Pure functions of the line.

use std::borrow::Cow;

use serde_json::Value as Json;

use crate::config::AgentKind;
use crate::engine::{ErrorClass, Usage};

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

/// claude's `rate_limit_info` object: the window it names, plus every window of
/// `unifiedWindows` (2.1.332).
fn claude_rate_limits(info: &Json) -> Vec<RateLimitReading> {
    let status = s(info, "status").map(str::to_string);
    let named = s(info, "rateLimitType").unwrap_or("unknown").to_string();
    let mut out = vec![RateLimitReading {
        window: named.clone(),
        window_minutes: None,
        used_percent: num(info, "utilization").map(|u| u * 100.0),
        resets_at: num(info, "resetsAt"),
        status,
    }];
    if let Some(windows) = info.get("unifiedWindows").and_then(Json::as_object) {
        for (name, w) in windows {
            let reading = RateLimitReading {
                window: name.clone(),
                window_minutes: None,
                used_percent: num(w, "utilization").map(|u| u * 100.0),
                resets_at: num(w, "resetsAt"),
                status: None,
            };
            match out.iter_mut().find(|r| r.window == *name) {
                // The named window keeps its status; the figures are the window's own.
                Some(r) => {
                    r.used_percent = reading.used_percent.or(r.used_percent);
                    r.resets_at = reading.resets_at.or(r.resets_at);
                }
                None => out.push(reading),
            }
        }
    }
    out
}

/// codex's `rate_limits` object (a rollout's `token_count`).
fn codex_rate_limits(limits: &Json) -> Vec<RateLimitReading> {
    ["primary", "secondary"]
        .iter()
        .filter_map(|name| {
            let w = limits.get(*name).filter(|w| w.is_object())?;
            Some(RateLimitReading {
                window: name.to_string(),
                window_minutes: w.get("window_minutes").and_then(Json::as_u64),
                used_percent: num(w, "used_percent"),
                resets_at: num(w, "resets_at"),
                status: None,
            })
        })
        .collect()
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
        AgentKind::Codex => codex(v, stream, now_epoch),
        AgentKind::Claude => claude(v, stream, now_epoch),
        AgentKind::Gemini => gemini(v, stream, now_epoch),
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

fn codex<'a>(v: &Json, _stream: Stream, now_epoch: f64) -> LineFacts<'a> {
    let mut facts = LineFacts::default();
    match s(v, "type").unwrap_or("") {
        "thread.started" => facts.session_id = s(v, "thread_id").map(str::to_string),
        "item.completed" | "item.updated" => {
            if let Some(item) = v.get("item")
                && s(item, "type") == Some("agent_message")
                && s(v, "type") == Some("item.completed")
            {
                facts.text = s(item, "text").map(|t| Cow::Owned(t.to_string()));
            }
        }
        "turn.completed" => {
            if let Some(usage) = v.get("usage") {
                facts.usage = Some(Usage {
                    input_tokens: u(usage, "input_tokens"),
                    output_tokens: u(usage, "output_tokens"),
                    cached_input_tokens: u(usage, "cached_input_tokens"),
                    cost_usd: 0.0,
                });
            }
        }
        "error" | "turn.failed" => {
            // codex reports its own stream retries as `error` events: not final.
            match s(v, "message").and_then(self_retry_notice) {
                Some(notice) => facts.notice = Some(notice),
                None => facts.error = structured_error(v, now_epoch),
            }
        }
        // The interactive TUI's rollout (`$CODEX_HOME/sessions/.../rollout-*.jsonl`): the
        // hybrid interface reads it as the attempt's output.
        "session_meta" => {
            facts.session_id = v
                .get("payload")
                .and_then(|p| s(p, "id"))
                .map(str::to_string);
        }
        "response_item" => {
            let payload = v.get("payload").unwrap_or(&Json::Null);
            if s(payload, "type") == Some("message") && s(payload, "role") == Some("assistant") {
                facts.text = parts_text(payload.get("content"), "output_text").map(Cow::Owned);
            }
        }
        // One record per model response. `event_msg`/`token_count` repeats the last usage
        // whenever rate-limit figures arrive, so it is not counted.
        "token_usage_record" => {
            if let Some(usage) = v.get("payload").and_then(|p| p.get("usage")) {
                facts.usage = Some(Usage {
                    input_tokens: u(usage, "input_tokens"),
                    output_tokens: u(usage, "output_tokens"),
                    cached_input_tokens: u(usage, "cached_input_tokens"),
                    cost_usd: 0.0,
                });
            }
        }
        "event_msg" => rollout_event(
            v.get("payload").unwrap_or(&Json::Null),
            &mut facts,
            now_epoch,
        ),
        _ => {}
    }
    facts
}

/// An `event_msg` record of a codex rollout: the turn's outcome, the account's windows.
fn rollout_event(payload: &Json, facts: &mut LineFacts, now_epoch: f64) {
    match s(payload, "type").unwrap_or("") {
        // Sent again whenever rate-limit headers arrive (its usage is not counted).
        "token_count" => {
            if let Some(limits) = payload.get("rate_limits") {
                facts.rate_limits = codex_rate_limits(limits);
            }
        }
        // A failed turn ends with `task_complete` carrying the error and, for HTTP
        // failures, the status under `codex_error_info.<kind>.http_status_code`.
        "task_complete" | "error" | "stream_error" => {
            let err = match payload.get("error").filter(|e| !e.is_null()) {
                Some(e) => e,
                None if s(payload, "type") == Some("task_complete") => return,
                None => payload,
            };
            let Some(text) = s(err, "message").or_else(|| err.as_str()) else {
                return;
            };
            // Reconnect notices while the turn goes on; `task_complete` is always final.
            if s(payload, "type") != Some("task_complete")
                && let Some(notice) = self_retry_notice(text)
            {
                facts.notice = Some(notice);
                return;
            }
            let status = err
                .get("codex_error_info")
                .and_then(Json::as_object)
                .and_then(|info| {
                    info.values()
                        .find_map(|kind| kind.get("http_status_code").and_then(Json::as_u64))
                });
            facts.error = Some(RawError {
                text: text.to_string(),
                structured: true,
                hint: status
                    .and_then(|c| status_hint(&serde_json::json!({ "status": c })))
                    .or_else(|| status_hint(err)),
                retry_after: json_delay(err, now_epoch).or_else(|| plain_delay(text)),
            });
        }
        _ => {}
    }
}

fn claude<'a>(v: &Json, _stream: Stream, now_epoch: f64) -> LineFacts<'a> {
    let mut facts = LineFacts {
        session_id: s(v, "session_id").map(str::to_string),
        ..LineFacts::default()
    };
    let ty = s(v, "type").unwrap_or("");
    let subtype = s(v, "subtype").unwrap_or("");
    match ty {
        "assistant" => {
            let text = parts_text(v.get("message").and_then(|m| m.get("content")), "text");
            // A synthetic record carrying an API error (transcripts and stream-json alike)
            // is an error report, not the agent's words.
            // Transcripts say `isApiErrorMessage`; stream-json from 2.1.332 says
            // `is_api_error_message` (2.1.197 only marks the record with `error`).
            let api_error = ["isApiErrorMessage", "is_api_error_message"]
                .iter()
                .any(|k| v.get(*k).and_then(Json::as_bool) == Some(true));
            // A transcript's record (the hybrid pane's, camelCase `sessionId`) carries the
            // response's usage; stream-json counts it from `result` instead.
            if v.get("sessionId").is_some()
                && let Some(usage) = v.get("message").and_then(|m| m.get("usage"))
            {
                facts.usage = Some(Usage {
                    input_tokens: u(usage, "input_tokens"),
                    output_tokens: u(usage, "output_tokens"),
                    cached_input_tokens: u(usage, "cache_read_input_tokens"),
                    cost_usd: v.get("costUSD").and_then(Json::as_f64).unwrap_or(0.0),
                });
                let id = v
                    .get("message")
                    .and_then(|m| m.get("id"))
                    .and_then(Json::as_str)
                    .unwrap_or_default();
                facts.usage_key = Some(format!("{id}/{}", s(v, "requestId").unwrap_or_default()));
            }
            if api_error {
                let text = text.unwrap_or_else(|| "API Error".into());
                let hint = ["apiErrorStatus", "api_error_status"]
                    .iter()
                    .find_map(|k| v.get(*k).and_then(Json::as_u64))
                    .and_then(|c| status_hint(&serde_json::json!({ "status": c })))
                    .or_else(|| {
                        s(v, "error").and_then(|e| status_hint(&serde_json::json!({ "type": e })))
                    });
                facts.error = Some(RawError {
                    retry_after: json_delay(v, now_epoch)
                        .or_else(|| plain_delay(&text))
                        .or_else(|| usage_limit_reset(&text, now_epoch))
                        .or_else(|| clock_reset(&text, now_epoch)),
                    text,
                    structured: true,
                    hint,
                });
            } else {
                facts.text = text.map(Cow::Owned);
            }
        }
        "result" => {
            if let Some(usage) = v.get("usage") {
                facts.usage = Some(Usage {
                    input_tokens: u(usage, "input_tokens"),
                    output_tokens: u(usage, "output_tokens"),
                    cached_input_tokens: u(usage, "cache_read_input_tokens"),
                    cost_usd: v
                        .get("total_cost_usd")
                        .and_then(Json::as_f64)
                        .unwrap_or(0.0),
                });
            }
            let is_error = v.get("is_error").and_then(Json::as_bool).unwrap_or(false)
                || (subtype != "success" && !subtype.is_empty());
            if is_error {
                let text = s(v, "result")
                    .map(str::to_string)
                    .or_else(|| {
                        v.get("errors").and_then(Json::as_array).map(|e| {
                            e.iter()
                                .filter_map(Json::as_str)
                                .collect::<Vec<_>>()
                                .join("; ")
                        })
                    })
                    .unwrap_or_else(|| format!("claude result {subtype}"));
                let hint = v
                    .get("api_error_status")
                    .and_then(|c| c.as_u64())
                    .and_then(|c| status_hint(&serde_json::json!({ "status": c })))
                    .or_else(|| {
                        text.to_ascii_lowercase()
                            .contains("usage limit")
                            .then_some(ErrorClass::RateLimit)
                    });
                facts.error = Some(RawError {
                    retry_after: json_delay(v, now_epoch)
                        .or_else(|| usage_limit_reset(&text, now_epoch))
                        .or_else(|| clock_reset(&text, now_epoch)),
                    text,
                    structured: true,
                    hint,
                });
            } else {
                facts.text = s(v, "result").map(|t| Cow::Owned(t.to_string()));
            }
        }
        "system" if subtype == "api_retry" => {
            let text = format!(
                "claude is retrying the API itself: attempt {}/{} after {} ({})",
                u(v, "attempt"),
                u(v, "max_retries"),
                v.get("error_status")
                    .map(|x| x.to_string())
                    .unwrap_or_default(),
                s(v, "error").unwrap_or("error")
            );
            facts.self_retry = Some(super::self_retry::SelfRetry {
                attempt: v.get("attempt").and_then(Json::as_u64),
                max_attempts: v.get("max_retries").and_then(Json::as_u64),
                status: v.get("error_status").and_then(Json::as_u64),
                delay_seconds: num(v, "retry_delay_ms").map(|ms| ms / 1000.0),
                error: s(v, "error").map(str::to_string),
                text: text.clone(),
            });
            facts.notice = Some(text);
        }
        // `system/init` lists paths, tools and MCP servers: never an error channel.
        "system" | "user" | "stream_event" => {}
        "rate_limit_event" => {
            if let Some(info) = v.get("rate_limit_info") {
                facts.rate_limits = claude_rate_limits(info);
            }
            facts.error = structured_error(v, now_epoch);
        }
        "error" => facts.error = structured_error(v, now_epoch),
        _ => {}
    }
    // A usage-limit error names its window: stream-json `api_error_params`, transcripts
    // `apiErrorParams`.
    if ty == "assistant"
        && let Some(info) = ["api_error_params", "apiErrorParams"]
            .iter()
            .find_map(|k| v.get(*k).and_then(|p| p.get("rate_limit_info")))
    {
        facts.rate_limits = claude_rate_limits(info);
    }
    facts
}

fn gemini<'a>(v: &Json, _stream: Stream, now_epoch: f64) -> LineFacts<'a> {
    let mut facts = LineFacts::default();
    let ty = s(v, "type").unwrap_or("");
    match ty {
        "init" => facts.session_id = s(v, "session_id").map(str::to_string),
        "message" if s(v, "role") == Some("assistant") => {
            facts.text = s(v, "content").map(|t| Cow::Owned(t.to_string()));
        }
        "result" => {
            if let Some(stats) = v.get("stats") {
                facts.usage = Some(Usage {
                    input_tokens: u(stats, "input_tokens").max(u(stats, "input")),
                    output_tokens: u(stats, "output_tokens").max(u(stats, "output")),
                    cached_input_tokens: u(stats, "cached"),
                    cost_usd: 0.0,
                });
            }
            if s(v, "status").is_some_and(|st| st != "success") {
                facts.error = structured_error(v, now_epoch).or_else(|| {
                    Some(RawError {
                        text: v.to_string(),
                        structured: true,
                        ..RawError::default()
                    })
                });
            }
        }
        "error" => facts.error = structured_error(v, now_epoch),
        _ => {}
    }
    facts
}

const RELATIVE_KEYS: &[&str] = &[
    "retry_after_seconds",
    "retryAfterSeconds",
    "retry_after",
    "retryAfter",
    "reset_after_seconds",
    "resetAfterSeconds",
    "reset_after",
    "resetAfter",
    "retryDelay",
    "retry_delay",
];
const ABSOLUTE_KEYS: &[&str] = &["resetsAt", "resets_at", "reset_at", "resetAt"];

/// The delay a structured record asks for (D15): relative seconds or `"30s"`, epoch seconds
/// or milliseconds, ISO timestamps; searched in the record, `rate_limit_info`, `error` and
/// `details`, a few levels deep.
pub fn json_delay(v: &Json, now_epoch: f64) -> Option<f64> {
    fn walk(v: &Json, now: f64, depth: u8) -> Option<f64> {
        match v {
            Json::Object(map) => {
                for key in RELATIVE_KEYS {
                    if let Some(d) = map.get(*key).and_then(relative_seconds) {
                        return Some(d.max(0.0));
                    }
                }
                for key in ABSOLUTE_KEYS {
                    if let Some(d) = map.get(*key).and_then(|x| absolute_delay(x, now)) {
                        return Some(d.max(0.0));
                    }
                }
                if depth == 0 {
                    return None;
                }
                // claude's usage-limit errors carry the reset under `api_error_params`
                // (stream-json) or `apiErrorParams` / `quotaLimits` (transcripts).
                [
                    "rate_limit_info",
                    "error",
                    "details",
                    "headers",
                    "api_error_params",
                    "apiErrorParams",
                    "quotaLimits",
                ]
                .iter()
                .filter_map(|k| map.get(*k))
                .find_map(|child| walk(child, now, depth - 1))
            }
            Json::Array(items) if depth > 0 => items.iter().find_map(|i| walk(i, now, depth - 1)),
            _ => None,
        }
    }
    walk(v, now_epoch, 4)
}

fn relative_seconds(v: &Json) -> Option<f64> {
    match v {
        Json::Number(n) => n.as_f64().filter(|f| f.is_finite()),
        Json::String(s) => parse_duration_text(s),
        _ => None,
    }
}

fn absolute_delay(v: &Json, now: f64) -> Option<f64> {
    let epoch = match v {
        Json::Number(n) => n.as_f64()?,
        Json::String(s) => match s.trim().parse::<f64>() {
            Ok(f) => f,
            Err(_) => {
                let t = chrono::DateTime::parse_from_rfc3339(s.trim()).ok()?;
                t.timestamp_millis() as f64 / 1000.0
            }
        },
        _ => return None,
    };
    if !epoch.is_finite() {
        return None;
    }
    // Millisecond epochs are 1000 times larger than any plausible second epoch.
    let secs = if epoch > 1e11 { epoch / 1000.0 } else { epoch };
    Some(secs - now)
}

/// `"30"`, `"30s"`, `"1.5m"`, `"250ms"`, `"2h"`.
fn parse_duration_text(s: &str) -> Option<f64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let factor = match unit.trim() {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
        "ms" => 0.001,
        "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
        "h" | "hour" | "hours" => 3600.0,
        _ => return None,
    };
    Some(n * factor).filter(|f| f.is_finite())
}

/// "retry after 30 seconds", "try again in 2s" in plain error text.
fn plain_delay(line: &str) -> Option<f64> {
    static RE: std::sync::OnceLock<Option<regex::Regex>> = std::sync::OnceLock::new();
    let re = RE
        .get_or_init(|| {
            regex::Regex::new(
                r"(?i)(?:retry[\s_-]*after|try again in|retry in|retrying in)\D{0,12}?(\d+(?:\.\d+)?)\s*(ms|milliseconds?|s|secs?|seconds?|m|mins?|minutes?|h|hours?)?\b",
            )
            .ok()
        })
        .as_ref()?;
    let caps = re.captures(line)?;
    let n = caps.get(1)?.as_str();
    let unit = caps.get(2).map_or("s", |m| m.as_str()).to_ascii_lowercase();
    let unit = match unit.as_str() {
        "milliseconds" | "millisecond" => "ms",
        "secs" | "sec" | "second" | "seconds" => "s",
        "mins" | "min" | "minute" | "minutes" => "m",
        "hours" | "hour" => "h",
        other => other,
    };
    parse_duration_text(&format!("{n}{unit}"))
}

/// The reset in claude's usage-limit text, "You've hit your session limit · resets 9:40am
/// (UTC)" (2.1.197 transcripts carry nothing else): the next time that clock shows that
/// time, in UTC when it says so, else in the local zone (the pane's, which is ours).
fn clock_reset(text: &str, now: f64) -> Option<f64> {
    use chrono::{Duration, NaiveTime, TimeZone};
    static RE: std::sync::OnceLock<Option<regex::Regex>> = std::sync::OnceLock::new();
    let re = RE
        .get_or_init(|| {
            regex::Regex::new(r"(?i)\bresets\s+(\d{1,2})(?::(\d{2}))?\s*(am|pm)\b\s*(\(utc\))?")
                .ok()
        })
        .as_ref()?;
    let caps = re.captures(text)?;
    let hour: u32 = caps.get(1)?.as_str().parse().ok()?;
    let minute: u32 = caps.get(2).map_or(Some(0), |m| m.as_str().parse().ok())?;
    if !(1..=12).contains(&hour) {
        return None;
    }
    let pm = caps.get(3)?.as_str().eq_ignore_ascii_case("pm");
    let hour = hour % 12 + if pm { 12 } else { 0 };
    let time = NaiveTime::from_hms_opt(hour, minute, 0)?;
    let now_t = chrono::DateTime::from_timestamp(now as i64, 0)?;
    // The clock is shown to the minute, the reset cut down to it: "9:40am" is a reset
    // between 9:40:00 and 9:40:59, so the end of that minute is the first safe moment.
    let next = |local_now: chrono::NaiveDateTime| {
        let at = local_now.date().and_time(time) + Duration::minutes(1);
        if at <= local_now {
            at + Duration::days(1)
        } else {
            at
        }
    };
    let at = if caps.get(4).is_some() {
        next(now_t.naive_utc()).and_utc().timestamp()
    } else {
        let local = chrono::Local;
        local
            .from_local_datetime(&next(now_t.with_timezone(&local).naive_local()))
            .earliest()?
            .timestamp()
    };
    Some((at as f64 - now).max(0.0))
}

/// Claude's "usage limit reached|<epoch>" text.
fn usage_limit_reset(text: &str, now: f64) -> Option<f64> {
    let (_, tail) = text.rsplit_once('|')?;
    let epoch: f64 = tail.trim().parse().ok()?;
    absolute_delay(&Json::from(epoch), now).map(|d| d.max(0.0))
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

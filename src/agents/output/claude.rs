//! claude's output: stream-json records and the hybrid pane's transcript records (session
//! id, the agent's text, usage, API errors, its own API retries, rate-limit events), and the
//! resets its usage-limit texts name.

use std::borrow::Cow;

use serde_json::Value as Json;

use super::delay::{absolute_delay, json_delay, plain_delay};
use super::{
    LineFacts, RateLimitReading, RawError, Stream, num, parts_text, s, status_hint,
    structured_error, u,
};
use crate::engine::{ErrorClass, Usage};

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

/// What one claude record tells us.
pub(super) fn parse<'a>(v: &Json, _stream: Stream, now_epoch: f64) -> LineFacts<'a> {
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
            facts.self_retry = Some(crate::agents::self_retry::SelfRetry {
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

/// The reset in claude's usage-limit text, "You've hit your session limit · resets 9:40am
/// (UTC)" (2.1.197 transcripts carry nothing else): the next time that clock shows that
/// time, in UTC when it says so, else in the local zone (the pane's, which is ours).
pub(super) fn clock_reset(text: &str, now: f64) -> Option<f64> {
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
pub(super) fn usage_limit_reset(text: &str, now: f64) -> Option<f64> {
    let (_, tail) = text.rsplit_once('|')?;
    let epoch: f64 = tail.trim().parse().ok()?;
    absolute_delay(&Json::from(epoch), now).map(|d| d.max(0.0))
}

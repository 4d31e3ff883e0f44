//! codex's output: `codex exec --json` events (thread id, the agent's messages, usage,
//! errors and its own stream retries) and the interactive TUI's rollout records (hybrid),
//! with the account's usage windows.

use std::borrow::Cow;

use serde_json::Value as Json;

use super::delay::{json_delay, plain_delay};
use super::{
    LineFacts, RateLimitReading, RawError, Stream, num, parts_text, s, self_retry_notice,
    status_hint, structured_error, u,
};
use crate::engine::Usage;

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

/// What one codex record tells us.
pub(super) fn parse<'a>(v: &Json, _stream: Stream, now_epoch: f64) -> LineFacts<'a> {
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

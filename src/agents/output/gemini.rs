//! gemini's `-o stream-json` records: the session id, the assistant's messages, usage and
//! errors (its stderr retry lines are read with the plain lines).

use std::borrow::Cow;

use serde_json::Value as Json;

use super::{LineFacts, RawError, Stream, s, structured_error, u};
use crate::engine::Usage;

/// What one gemini record tells us.
pub(super) fn parse<'a>(v: &Json, _stream: Stream, now_epoch: f64) -> LineFacts<'a> {
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

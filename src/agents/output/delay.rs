//! The delays the agents ask for before a retry (D15): in structured records (relative
//! seconds or `"30s"`, epoch seconds or milliseconds, ISO timestamps) and in plain error text.

use serde_json::Value as Json;

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

pub(super) fn absolute_delay(v: &Json, now: f64) -> Option<f64> {
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
pub(super) fn plain_delay(line: &str) -> Option<f64> {
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

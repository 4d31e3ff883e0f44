//! Rendering agent output for people: assistant text as text, tool calls as one line,
//! errors marked, protocol noise dropped. Used by the live view, `looper logs` and the
//! supervisor pane. Pure.

use serde_json::Value as Json;

use crate::agents::output::parts_text;

fn s<'a>(v: &'a Json, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Json::as_str)
}

fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max {
        let cut: String = flat.chars().take(max).collect();
        format!("{cut}…")
    } else {
        flat
    }
}

/// Render one output line; `None` hides it.
pub fn render(stream: &str, line: &str) -> Option<String> {
    let t = line.trim_end();
    if t.trim().is_empty() {
        return None;
    }
    let trimmed = t.trim();
    if trimmed.starts_with('{')
        && trimmed.ends_with('}')
        && let Ok(v) = serde_json::from_str::<Json>(trimmed)
        && v.is_object()
    {
        return render_json(&v);
    }
    if stream == "stderr" {
        Some(format!("stderr: {t}"))
    } else {
        Some(t.to_string())
    }
}

fn render_json(v: &Json) -> Option<String> {
    let ty = s(v, "type").unwrap_or("");
    match ty {
        "thread.started" | "turn.started" | "turn.completed" | "init" | "stream_event" => None,
        "item.started" | "item.updated" => None,
        "item.completed" => {
            let item = v.get("item")?;
            match s(item, "type").unwrap_or("") {
                "agent_message" => s(item, "text").map(str::to_string),
                "reasoning" => None,
                "command_execution" => Some(format!(
                    "tool: shell - $ {}",
                    one_line(s(item, "command").unwrap_or(""), 160)
                )),
                "file_change" => Some("tool: file change".into()),
                "error" => s(item, "message").map(|m| format!("warning: {}", one_line(m, 200))),
                other => Some(format!("tool: {other}")),
            }
        }
        "assistant" => {
            let content = v.get("message")?.get("content")?.as_array()?;
            // claude's synthetic API-error record (a hybrid transcript has no `result` to
            // say it): an error, not the agent speaking.
            let api_error = ["isApiErrorMessage", "is_api_error_message"]
                .iter()
                .any(|k| v.get(*k).and_then(Json::as_bool) == Some(true));
            if api_error {
                return Some(format!(
                    "error: {}",
                    parts_text(v.get("message")?.get("content"), "text")
                        .unwrap_or_else(|| "API error".into())
                ));
            }
            let parts: Vec<String> = content
                .iter()
                .filter_map(|c| match s(c, "type")? {
                    "text" => s(c, "text").map(str::to_string),
                    "tool_use" => {
                        let name = s(c, "name").unwrap_or("tool");
                        let input = c.get("input");
                        let desc = input.and_then(|i| s(i, "description"));
                        let cmd = input.and_then(|i| s(i, "command"));
                        let mut line = format!("tool: {name}");
                        if let Some(d) = desc {
                            line.push_str(&format!(" - {}", one_line(d, 120)));
                        }
                        if let Some(c) = cmd {
                            line.push_str(&format!(" $ {}", one_line(c, 160)));
                        } else if desc.is_none()
                            && let Some(i) = input
                        {
                            line.push_str(&format!(" {}", one_line(&i.to_string(), 160)));
                        }
                        Some(line)
                    }
                    _ => None,
                })
                .collect();
            (!parts.is_empty()).then(|| parts.join("\n"))
        }
        "user" => {
            let content = v.get("message")?.get("content")?.as_array()?;
            let parts: Vec<String> = content
                .iter()
                .filter(|c| s(c, "type") == Some("tool_result"))
                .map(|c| {
                    let is_err = c.get("is_error").and_then(Json::as_bool).unwrap_or(false);
                    let body = match c.get("content") {
                        Some(Json::String(t)) => t.clone(),
                        Some(other) => other.to_string(),
                        None => String::new(),
                    };
                    format!(
                        "{} {}",
                        if is_err {
                            "tool error:"
                        } else {
                            "tool result:"
                        },
                        one_line(&body, 160)
                    )
                })
                .collect();
            (!parts.is_empty()).then(|| parts.join("\n"))
        }
        "result" => {
            let is_err = v.get("is_error").and_then(Json::as_bool).unwrap_or(false);
            if is_err {
                Some(format!(
                    "error: {}",
                    s(v, "result").unwrap_or("agent reported an error")
                ))
            } else {
                let cost = v.get("total_cost_usd").and_then(Json::as_f64);
                Some(match cost {
                    Some(c) => format!("result: done (${c:.4})"),
                    None => "result: done".into(),
                })
            }
        }
        "message" => {
            if s(v, "role") == Some("assistant") {
                s(v, "content").map(str::to_string)
            } else {
                None
            }
        }
        "system" => match s(v, "subtype").unwrap_or("") {
            "api_retry" => Some(format!(
                "notice: agent retrying the API (attempt {}, {})",
                v.get("attempt").map(|a| a.to_string()).unwrap_or_default(),
                s(v, "error").unwrap_or("error")
            )),
            // 2.1.332's notices in the conversation ("Usage limit reached · ...").
            "informational" => s(v, "content").map(|c| format!("notice: {}", one_line(c, 200))),
            _ => None,
        },
        "rate_limit_event" => {
            let info = v.get("rate_limit_info").unwrap_or(v);
            let mut line = format!(
                "rate limit event: status={}",
                s(info, "status").unwrap_or("unknown")
            );
            if let Some(w) = s(info, "rateLimitType") {
                line.push_str(&format!(" window={w}"));
            }
            if let Some(u) = info.get("utilization").and_then(Json::as_f64) {
                line.push_str(&format!(" used={:.0}%", u * 100.0));
            }
            if let Some(at) = info
                .get("resetsAt")
                .and_then(Json::as_i64)
                .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
            {
                line.push_str(&format!(" resets={}", at.format("%Y-%m-%d %H:%M UTC")));
            }
            Some(line)
        }
        "error" | "turn.failed" => {
            let msg = s(v, "message")
                .or_else(|| v.get("error").and_then(|e| s(e, "message")))
                .unwrap_or("error");
            Some(format!("error: {msg}"))
        }
        // codex's interactive rollout: the conversation is in `response_item`s; `event_msg`s
        // repeat it, except for a failed turn's error.
        "response_item" => {
            let p = v.get("payload")?;
            match s(p, "type")? {
                "message" if s(p, "role") == Some("assistant") => {
                    parts_text(p.get("content"), "output_text")
                }
                "function_call" | "custom_tool_call" | "local_shell_call" => {
                    let args = p
                        .get("arguments")
                        .or_else(|| p.get("input"))
                        .or_else(|| p.get("action"))
                        .map(|a| a.as_str().map_or_else(|| a.to_string(), str::to_string))
                        .unwrap_or_default();
                    Some(format!(
                        "tool: {} {}",
                        s(p, "name").unwrap_or("shell"),
                        one_line(&args, 160)
                    ))
                }
                _ => None,
            }
        }
        "event_msg" => {
            let p = v.get("payload")?;
            let err = match s(p, "type")? {
                "task_complete" => p.get("error").filter(|e| !e.is_null())?,
                "error" => p,
                _ => return None,
            };
            Some(format!("error: {}", s(err, "message").unwrap_or("error")))
        }
        "tool_use" => Some(format!("tool: {}", s(v, "tool_name").unwrap_or("tool"))),
        "tool_result" => Some(format!("tool result: {}", s(v, "status").unwrap_or(""))),
        _ => None,
    }
}

/// Render a raw log record line (`[stamp] stdout: ...`).
pub fn render_log_record(record: &str) -> Option<String> {
    let rest = record.split_once("] ").map_or(record, |(_, r)| r);
    let (tag, body) = rest.split_once(": ")?;
    match tag.trim_end_matches('*') {
        "stdout" => render("stdout", body),
        "stderr" => render("stderr", body),
        "returncode" => Some(format!("-- exit {body}")),
        "stop_reason" => Some(format!("-- stop: {body}")),
        "looper" => Some(format!("-- {body}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_codex_rollout_as_its_conversation() {
        let rollout = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/clis/codex/hybrid_rollout.jsonl"
        ))
        .unwrap_or_default();
        let shown: Vec<String> = rollout
            .lines()
            .filter_map(|l| render("stdout", l))
            .collect();
        assert_eq!(
            shown,
            [
                "First reply.\nEXIT_SIGNAL: false",
                "error: exceeded retry limit, last status: 429 Too Many Requests",
                "Third reply.\nEXIT_SIGNAL: true",
                "Resumed reply."
            ]
        );
        assert_eq!(
            render(
                "stdout",
                r#"{"type":"response_item","payload":{"type":"function_call","name":"exec_command","arguments":"{\"cmd\":\"ls\"}"}}"#
            ),
            Some(r#"tool: exec_command {"cmd":"ls"}"#.into())
        );
    }

    #[test]
    fn renders_codex_claude_and_noise() {
        assert_eq!(
            render("stdout", r#"{"type":"thread.started","thread_id":"t"}"#),
            None
        );
        assert_eq!(
            render(
                "stdout",
                r#"{"type":"item.completed","item":{"type":"agent_message","text":"hi"}}"#
            ),
            Some("hi".into())
        );
        assert_eq!(
            render(
                "stdout",
                r#"{"type":"assistant","message":{"content":[{"type":"tool_use","name":"Bash","input":{"command":"ls -la","description":"List files"}}]}}"#
            ),
            Some("tool: Bash - List files $ ls -la".into())
        );
        assert_eq!(
            render(
                "stdout",
                r#"{"type":"user","message":{"content":[{"type":"tool_result","content":"a\nb"}]}}"#
            ),
            Some("tool result: a b".into())
        );
        assert_eq!(
            render("stdout", r#"{"type":"system","subtype":"thinking_tokens"}"#),
            None
        );
        assert_eq!(render("stderr", "boom"), Some("stderr: boom".into()));
        // claude 2.1.332's records (tests/fixtures/clis/claude/2.1.332): a usage limit in a
        // hybrid transcript is an error, its rate-limit event says its window.
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/clis/claude/2.1.332/"
        );
        let read = |f: &str| std::fs::read_to_string(format!("{dir}{f}")).unwrap_or_default();
        let shown: Vec<String> = read("hybrid_transcript_usage_limit_auto_continue.jsonl")
            .lines()
            .filter_map(|l| render("stdout", l))
            .collect();
        assert_eq!(
            shown,
            [
                "error: You've hit your 5-hour limit · resets 9:32am (UTC)",
                "notice: Usage limit reached · set to continue automatically at 9:32am"
            ]
        );
        let shown: Vec<String> = read("rate_limit_event_warning.stdout")
            .lines()
            .filter_map(|l| render("stdout", l))
            .filter(|l| l.starts_with("rate limit"))
            .collect();
        assert_eq!(
            shown,
            [
                "rate limit event: status=allowed_warning window=five_hour used=91% resets=2026-12-01 10:29 UTC"
            ]
        );
        assert_eq!(
            render_log_record("[20261121T091032Z] stdout: plain"),
            Some("plain".into())
        );
        assert_eq!(
            render_log_record("[20261121T091032Z] returncode: 0"),
            Some("-- exit 0".into())
        );
    }
}

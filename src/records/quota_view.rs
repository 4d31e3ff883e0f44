//! How `looper status` words what a run knows of its account and its CLI (issue 18): the
//! usage windows (`claude 5h: 82% until 14:05`), the CLI's own retry while it lasts, and a
//! CLI that changed during the run. Text from the records is sanitised (D35).

use chrono::{DateTime, Local, Utc};

use super::accounts::WindowRecord;
use super::fleet::StateView;
use crate::text::sanitize_line;

/// `5h`, `7d`, `7d opus`: a window's name as people say it.
pub fn window_name(w: &WindowRecord) -> String {
    let by_minutes = |m: u64| match m {
        0 => None,
        m if m % 1440 == 0 => Some(format!("{}d", m / 1440)),
        m if m % 60 == 0 => Some(format!("{}h", m / 60)),
        m => Some(format!("{m}m")),
    };
    if let Some(n) = w.window_minutes.and_then(by_minutes) {
        return n;
    }
    let name = sanitize_line(&w.window).into_owned();
    for (long, short) in [("five_hour", "5h"), ("seven_day", "7d")] {
        if let Some(rest) = name.strip_prefix(long) {
            let rest = rest.trim_start_matches('_').replace('_', " ");
            return if rest.is_empty() {
                short.into()
            } else {
                format!("{short} {rest}")
            };
        }
    }
    name
}

/// A reset time: the clock within a day, else the date too (local time).
fn when(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let local = t.with_timezone(&Local);
    if t - now < chrono::TimeDelta::hours(20) {
        local.format("%H:%M").to_string()
    } else {
        local.format("%b %d %H:%M").to_string()
    }
}

/// `5h: 82% until 14:05`.
fn window_text(w: &WindowRecord, now: DateTime<Utc>) -> String {
    let mut s = window_name(w);
    s.push(':');
    if let Some(u) = w.used_percent {
        s.push_str(&format!(" {}%", u.round() as i64));
    }
    match w.resets_at {
        Some(r) if r > now => s.push_str(&format!(" until {}", when(r, now))),
        Some(_) => s.push_str(" (reset since)"),
        None => {}
    }
    if w.status.as_deref() == Some("rejected") {
        s.push_str(" (limited)");
    }
    s
}

/// `claude 5h: 82% until 14:05, 7d: 13% until Dec 05 10:00`: the last reading of each window,
/// per agent.
pub fn limits_line(s: &StateView, now: DateTime<Utc>) -> Option<String> {
    let windows = s.rate_limits.as_ref().filter(|w| !w.is_empty())?;
    let mut agents: Vec<&str> = Vec::new();
    for w in windows {
        let a = w.agent.as_deref().unwrap_or("agent");
        if !agents.contains(&a) {
            agents.push(a);
        }
    }
    let parts: Vec<String> = agents
        .iter()
        .map(|a| {
            let texts: Vec<String> = windows
                .iter()
                .filter(|w| w.agent.as_deref().unwrap_or("agent") == *a)
                .map(|w| window_text(w, now))
                .collect();
            format!("{} {}", sanitize_line(a), texts.join(", "))
        })
        .collect();
    Some(parts.join("; "))
}

/// The CLI changed during the run: `agent CLI changed at 14:02: 2.1.332 -> 2.1.340`.
pub fn cli_change_line(s: &StateView) -> Option<String> {
    let c = s.agent_cli_changed.as_ref()?;
    let v = |x: &Option<String>| {
        x.as_deref()
            .map(|v| sanitize_line(v).into_owned())
            .unwrap_or_else(|| "version unknown".into())
    };
    let at =
        c.at.map(|t| format!(" at {}", t.with_timezone(&Local).format("%H:%M:%S")))
            .unwrap_or_default();
    Some(format!(
        "agent CLI changed{at}: {} -> {} ({})",
        v(&c.previous_version),
        v(&c.version),
        sanitize_line(&c.path)
    ))
}

/// The account's limit the run saw, while it lasts: `account claude:/h/.claude limited until
/// 14:05: You've hit your 5-hour limit`.
pub fn account_limit_line(s: &StateView, now: DateTime<Utc>) -> Option<String> {
    let l = s.account_limit.as_ref()?;
    let until = l.until.filter(|u| *u > now)?;
    Some(format!(
        "account {} limited until {}: {}",
        sanitize_line(s.account.as_deref().unwrap_or("-")),
        when(until, now),
        sanitize_line(&l.reason)
    ))
}

/// The lines under a run's row: its account's windows and limit while it is active, and a
/// CLI that changed during it.
pub fn detail_lines(s: &StateView, now: DateTime<Utc>) -> Vec<String> {
    let mut out = Vec::new();
    if s.is_active()
        && let Some(l) = limits_line(s, now)
    {
        out.push(format!("limits: {l}"));
    }
    if s.is_active()
        && let Some(l) = account_limit_line(s, now)
    {
        out.push(l);
    }
    if let Some(c) = cli_change_line(s) {
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::state::AgentRetryState;

    fn w(agent: &str, window: &str, minutes: Option<u64>, used: f64, resets: &str) -> WindowRecord {
        WindowRecord {
            agent: Some(agent.into()),
            window: window.into(),
            window_minutes: minutes,
            used_percent: Some(used),
            resets_at: crate::records::time::parse(resets),
            ..WindowRecord::default()
        }
    }

    #[test]
    fn windows_read_as_people_say_them() {
        let now = crate::records::time::parse("2026-12-01T10:00:00Z").expect("t");
        let local = |s: &str, fmt: &str| {
            crate::records::time::parse(s)
                .expect("t")
                .with_timezone(&Local)
                .format(fmt)
                .to_string()
        };
        let s = StateView {
            status: Some("running".into()),
            rate_limits: Some(vec![
                w("claude", "five_hour", None, 82.4, "2026-12-01T14:05:00Z"),
                w(
                    "claude",
                    "seven_day_opus",
                    None,
                    13.0,
                    "2026-12-05T10:00:00Z",
                ),
                w("codex", "primary", Some(300), 42.5, "2026-12-01T09:00:00Z"),
            ]),
            ..StateView::default()
        };
        assert_eq!(
            limits_line(&s, now).as_deref(),
            Some(
                format!(
                    "claude 5h: 82% until {}, 7d opus: 13% until {}; codex 5h: 43% (reset since)",
                    local("2026-12-01T14:05:00Z", "%H:%M"),
                    local("2026-12-05T10:00:00Z", "%b %d %H:%M")
                )
                .as_str()
            )
        );
        assert_eq!(detail_lines(&s, now).len(), 1);
        // A finished run's readings are history: not shown under its row.
        let done = StateView {
            status: Some("stopped".into()),
            ..s.clone()
        };
        assert!(detail_lines(&done, now).is_empty());
        let retry = StateView {
            agent_retry: Some(AgentRetryState {
                agent: "claude".into(),
                retry: crate::records::events::AgentRetry {
                    attempt: Some(2),
                    max_attempts: Some(10),
                    status: Some(429),
                    delay_seconds: Some(2.0),
                    error: Some("rate_limit\u{1b}[31m".into()),
                    ..Default::default()
                },
                ..AgentRetryState::default()
            }),
            ..StateView::default()
        };
        assert_eq!(
            super::super::fleet::agent_retry_note(&retry).as_deref(),
            Some("claude retrying itself: 2/10 after 429, next in 2s")
        );
    }
}

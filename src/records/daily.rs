//! What every run on this machine spent today (issue 18, the daily budget): the runs of the
//! machine registry (`runs.jsonl`), each read from its own records.
//!
//! "Today" is the local calendar day, from local midnight to the next (the machine's time
//! zone, `TZ`); on a day with a daylight-saving change it is 23 or 25 hours long. A run
//! counts what its agents reported during today:
//! - a run whose `state.json` was last written before today spent nothing today (its file's
//!   mtime says so without reading it);
//! - a run that started today counts its `usage_total` (the reviewer's receipts included);
//! - a run that started before today counts the receipts of its `prompt_completed` and
//!   `review_completed` events time-stamped today.

use std::collections::HashSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Local, TimeZone, Utc};
use serde::Deserialize;

use super::fleet::UsageView;
use super::{EVENTS_FILE, STATE_FILE, discovery, fsio, time};

/// Today's spending on the machine, and when today ends.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Today {
    pub tokens: u64,
    pub cost_usd: f64,
    /// Runs that spent something today.
    pub runs: usize,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

/// Local midnight at the start of the day holding `now`, and the next one.
pub fn local_day(now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let local = now.with_timezone(&Local);
    let midnight = |d: chrono::NaiveDate| {
        let naive = d.and_hms_opt(0, 0, 0).unwrap_or_default();
        // A midnight that does not exist (a DST jump at 00:00) is the first moment after.
        Local
            .from_local_datetime(&naive)
            .earliest()
            .or_else(|| {
                Local
                    .from_local_datetime(&(naive + chrono::TimeDelta::hours(1)))
                    .earliest()
            })
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(now)
    };
    let today = local.date_naive();
    let start = midnight(today);
    let end = today.succ_opt().map(midnight).unwrap_or(now);
    (start, end)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StateUsage {
    #[serde(with = "time::opt")]
    started_at: Option<DateTime<Utc>>,
    #[serde(with = "time::opt")]
    updated_at: Option<DateTime<Utc>>,
    usage_total: Option<UsageView>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Receipt {
    event: String,
    #[serde(with = "time::opt")]
    ts: Option<DateTime<Utc>>,
    usage: Option<UsageView>,
}

/// What one run spent since `start`.
fn run_spent(dir: &Path, start: DateTime<Utc>) -> Option<(u64, f64)> {
    let state_path = dir.join(STATE_FILE);
    let modified: DateTime<Utc> = std::fs::metadata(&state_path).ok()?.modified().ok()?.into();
    if modified < start {
        return None;
    }
    let bytes = fsio::read_regular(&state_path, fsio::MAX_STATE).ok()?;
    let st: StateUsage = serde_json::from_slice(&bytes).ok()?;
    if st.updated_at.is_some_and(|u| u < start) {
        return None;
    }
    if st.started_at.is_some_and(|s| s >= start) {
        let u = st.usage_total.unwrap_or_default();
        return Some((u.input_tokens + u.output_tokens, u.cost_usd));
    }
    // Begun before today: today's receipts only, read line by line (bounded memory).
    let (file, _) = fsio::open_regular(&dir.join(EVENTS_FILE)).ok()?;
    let (mut tokens, mut cost) = (0u64, 0.0f64);
    for line in std::io::BufReader::new(file)
        .split(b'\n')
        .map_while(|l| l.ok())
    {
        // Only receipts matter: skip the parse of every other line.
        if memchr::memmem::find(&line, b"\"usage\"").is_none() {
            continue;
        }
        let Ok(r) = serde_json::from_slice::<Receipt>(&line) else {
            continue;
        };
        if !matches!(r.event.as_str(), "prompt_completed" | "review_completed")
            || r.ts.is_none_or(|t| t < start)
        {
            continue;
        }
        if let Some(u) = r.usage {
            tokens += u.input_tokens + u.output_tokens;
            cost += u.cost_usd;
        }
    }
    Some((tokens, cost))
}

/// Today's spending of every run in `registry`, and of `own` (the asking run's directory,
/// counted even when the registry does not list it).
pub fn today(registry: Option<&Path>, own: &Path, now: DateTime<Utc>) -> Today {
    let (start, end) = local_day(now);
    let mut dirs: Vec<PathBuf> = registry
        .map(discovery::read_registry)
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.run_dir)
        .collect();
    dirs.push(own.to_path_buf());
    let mut seen = HashSet::new();
    let mut out = Today {
        start: Some(start),
        end: Some(end),
        ..Today::default()
    };
    for dir in dirs {
        let key = std::fs::canonicalize(&dir).unwrap_or(dir);
        if !seen.insert(key.clone()) {
            continue;
        }
        if let Some((tokens, cost)) = run_spent(&key, start) {
            if tokens > 0 || cost > 0.0 {
                out.runs += 1;
            }
            out.tokens += tokens;
            out.cost_usd += cost;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_run(dir: &Path, state: serde_json::Value, events: &[serde_json::Value]) {
        std::fs::create_dir_all(dir).expect("mkdir");
        std::fs::write(dir.join(STATE_FILE), state.to_string()).expect("state");
        let lines: Vec<String> = events.iter().map(|e| e.to_string()).collect();
        std::fs::write(dir.join(EVENTS_FILE), lines.join("\n") + "\n").expect("events");
    }

    #[test]
    fn today_counts_every_registered_run_once_and_only_what_it_spent_today() {
        let root = tempfile::tempdir().expect("tempdir");
        let now = Utc::now();
        let (start, end) = local_day(now);
        assert!(start <= now && now < end);
        let yesterday = time::format(start - chrono::TimeDelta::hours(3));
        let earlier_today = time::format(start + (now - start) / 2);
        let today_s = time::format(now);
        let usage = |t: u64, c: f64| serde_json::json!({"input_tokens": t, "output_tokens": 0, "cost_usd": c});
        // Started today: its total counts.
        let a = root.path().join("a");
        write_run(
            &a,
            serde_json::json!({"started_at": earlier_today, "updated_at": today_s, "usage_total": usage(100, 1.5)}),
            &[],
        );
        // Started yesterday, still running: only today's receipts.
        let b = root.path().join("b");
        write_run(
            &b,
            serde_json::json!({"started_at": yesterday, "updated_at": today_s, "usage_total": usage(10_000, 50.0)}),
            &[
                serde_json::json!({"ts": yesterday, "event": "prompt_completed", "usage": usage(9_000, 45.0)}),
                serde_json::json!({"ts": earlier_today, "event": "prompt_completed", "usage": usage(900, 4.5)}),
                serde_json::json!({"ts": today_s, "event": "review_completed", "usage": usage(100, 0.5)}),
                serde_json::json!({"ts": today_s, "event": "loop_completed", "usage": usage(1000, 5.0)}),
            ],
        );
        // Last written yesterday: nothing today.
        let c = root.path().join("c");
        write_run(
            &c,
            serde_json::json!({"started_at": yesterday, "updated_at": yesterday, "usage_total": usage(7, 7.0)}),
            &[],
        );
        let registry = root.path().join("runs.jsonl");
        let lines: Vec<String> = [&a, &b, &c, &a]
            .iter()
            .map(|d| serde_json::json!({"run_dir": d}).to_string())
            .collect();
        std::fs::write(&registry, lines.join("\n") + "\n").expect("registry");
        let t = today(Some(&registry), &a, now);
        assert_eq!(t.tokens, 100 + 900 + 100);
        assert!((t.cost_usd - (1.5 + 4.5 + 0.5)).abs() < 1e-9, "{t:?}");
        assert_eq!(t.runs, 2);
        assert_eq!(t.end, Some(end));
        // Without a registry, the asking run alone.
        assert_eq!(today(None, &a, now).tokens, 100);
    }
}

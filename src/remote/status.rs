//! `looper status --host`: each host's `looper status --json`, asked in parallel, merged into
//! one table with a HOST column (what needs attention first, across hosts; a host that gave
//! no answer is one row saying why), or into one `agent-looper/status` document whose runs
//! carry `host` and which lists the hosts. `--watch` polls every host on its own thread, so
//! a slow host never holds the view: its rows stay as last seen, marked.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value as Json};

use super::hosts::{self, Host, Hosts};
use super::ssh::{KillSlot, Problem};
use crate::cli::StatusArgs;
use crate::commands::status::{SCHEMA, SCHEMA_VERSION, age, clip, loop_text, usage_text};
use crate::error::Result;
use crate::records::fleet::{Row, StateView, UsageView};
use crate::records::time;

/// How often `--watch` asks each host again (from the start of the previous question).
const WATCH_POLL: Duration = Duration::from_secs(2);
/// A host asked for longer than this is marked slow in `--watch`.
const SLOW: Duration = Duration::from_secs(5);

/// One entry of a remote document's `runs` (docs/status-json.md), as the table needs it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RemoteRun {
    run_dir: String,
    run_id: Option<String>,
    label: Option<String>,
    status: Option<String>,
    stale: bool,
    stale_reason: Option<String>,
    error: Option<String>,
    agent: Option<String>,
    agent_kind: Option<String>,
    #[serde(rename = "loop")]
    loop_number: Option<u64>,
    prompt: Option<u64>,
    total_prompts: Option<u64>,
    #[serde(with = "time::opt")]
    updated_at: Option<DateTime<Utc>>,
    #[serde(with = "time::opt")]
    started_at: Option<DateTime<Utc>>,
    stop_reason: Option<String>,
    exit_code: Option<i64>,
    retry_status: Option<String>,
    #[serde(with = "time::opt")]
    retry_until: Option<DateTime<Utc>>,
    usage_total: Option<UsageView>,
    project: Option<String>,
    pid: Option<i64>,
    group: Option<String>,
    parallel_index: Option<u64>,
    branch: Option<String>,
    commits_ahead: Option<u64>,
    files_changed: Option<u64>,
}

/// A remote run as a fleet row. Staleness is the remote's judgement (its pids are not ours).
fn to_row(r: RemoteRun) -> Row {
    let unreadable = r.status.as_deref() == Some("unreadable");
    let error = if unreadable {
        Some(r.error.unwrap_or_else(|| "unreadable".into()))
    } else {
        None
    };
    let stale = r
        .stale
        .then(|| r.stale_reason.clone().unwrap_or_else(|| "stale".into()));
    let updated = r.updated_at.or(r.started_at);
    Row {
        dir: r.run_dir.into(),
        state: StateView {
            run_id: r.run_id,
            label: r.label,
            status: if unreadable { None } else { r.status },
            agent_name: r.agent,
            agent_kind: r.agent_kind,
            agent_cwd: r.project,
            current_loop: r.loop_number,
            current_prompt_index: r.prompt,
            total_prompts: r.total_prompts,
            updated_at: r.updated_at,
            started_at: r.started_at,
            stop_reason: r.stop_reason,
            exit_code: r.exit_code,
            retry_status: r.retry_status,
            retry_until: r.retry_until,
            usage_total: r.usage_total,
            pid: r.pid,
            stale_reason: r.stale_reason,
            // The group keeps a --parallel group's rows together in the merged table.
            parallel_group: r.group,
            parallel_index: r.parallel_index,
            branch: r.branch,
            commits_ahead: r.commits_ahead,
            files_changed: r.files_changed,
            ..StateView::default()
        },
        error,
        stale,
        updated,
    }
}

/// A host's runs: the table row and the run's JSON object as the host sent it.
type Runs = Vec<(Row, Map<String, Json>)>;

/// Ask one host for its status document and read its runs.
fn fetch(
    hosts: &Hosts,
    host: &Host,
    args: &[String],
    deadline: Option<Duration>,
    slot: &KillSlot,
) -> std::result::Result<Runs, Problem> {
    let (_, doc) = super::ask(hosts, host, args, deadline, slot)?;
    if let Some(p) = super::check_schema(host, &doc, SCHEMA, SCHEMA_VERSION) {
        return Err(p);
    }
    let Some(Json::Array(runs)) = doc.get("runs") else {
        return Err(Problem::BadAnswer(format!(
            "{}'s status document has no runs",
            host.name
        )));
    };
    Ok(runs
        .iter()
        .filter_map(|r| r.as_object().cloned())
        .map(|obj| {
            let run: RemoteRun =
                serde_json::from_value(Json::Object(obj.clone())).unwrap_or_default();
            (to_row(run), obj)
        })
        .collect())
}

/// One line of the merged table.
enum Line<'a> {
    Run(&'a str, &'a Row),
    /// A host with no rows to show: host, status word, note.
    Host(&'a str, String, String),
}

/// The merged table: problem rows first, then every run in status order across hosts.
fn render(lines: &[Line], now: DateTime<Utc>) -> Vec<String> {
    const HEAD: [&str; 9] = [
        "HOST",
        "LABEL",
        "STATUS",
        "AGENT",
        "LOOP",
        "UPDATED",
        "USAGE",
        "STOP/NOTE",
        "PROJECT",
    ];
    let dash = || "-".to_string();
    let cells: Vec<[String; 9]> = lines
        .iter()
        .map(|l| match l {
            Line::Run(host, r) => [
                clip(host, 24),
                clip(&r.label(), 32),
                clip(&r.shown_status(), 16),
                clip(r.state.agent_name.as_deref().unwrap_or("-"), 16),
                loop_text(&r.state),
                age(now, r.updated),
                usage_text(r.state.usage_total.as_ref()),
                clip(&r.note(), 60),
                clip(&r.project().unwrap_or_else(dash), 32),
            ],
            Line::Host(host, status, note) => [
                clip(host, 24),
                dash(),
                clip(status, 16),
                dash(),
                dash(),
                dash(),
                dash(),
                clip(note, 120),
                dash(),
            ],
        })
        .collect();
    let mut widths: [usize; 9] = HEAD.map(str::len);
    for c in &cells {
        for (w, cell) in widths.iter_mut().zip(c.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |c: &[String; 9]| {
        let mut s = String::new();
        for (i, cell) in c.iter().enumerate() {
            s.push_str(cell);
            if i + 1 < c.len() {
                s.extend(std::iter::repeat_n(
                    ' ',
                    widths[i] - cell.chars().count() + 2,
                ));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = vec![line(&HEAD.map(String::from))];
    out.extend(cells.iter().map(line));
    out
}

fn sort_key(
    r: &Row,
) -> (
    u8,
    std::cmp::Reverse<Option<DateTime<Utc>>>,
    std::cmp::Reverse<String>,
) {
    (
        r.group(),
        std::cmp::Reverse(r.updated),
        std::cmp::Reverse(r.name()),
    )
}

/// What one host contributes to a view.
struct HostView<'a> {
    host: &'a Host,
    runs: Option<&'a Runs>,
    /// A row about the host (a problem, or that it is slow or not answered yet).
    note: Option<(String, String)>,
}

fn table(views: &[HostView], now: DateTime<Utc>) -> Vec<String> {
    let mut lines: Vec<Line> = Vec::new();
    for v in views {
        if let Some((status, note)) = &v.note {
            lines.push(Line::Host(&v.host.name, status.clone(), note.clone()));
        }
    }
    let mut runs: Vec<(&str, &Row)> = views
        .iter()
        .flat_map(|v| {
            v.runs
                .into_iter()
                .flatten()
                .map(move |(r, _)| (v.host.name.as_str(), r))
        })
        .collect();
    runs.sort_by_cached_key(|(_, r)| sort_key(r));
    lines.extend(runs.into_iter().map(|(h, r)| Line::Run(h, r)));
    render(&lines, now)
}

/// `Some(exit code)` when `args` names hosts: the merged view was printed.
pub fn status(args: &StatusArgs) -> Result<Option<i32>> {
    if !args.hosts.is_remote() {
        return Ok(None);
    }
    let hosts = hosts::select(&args.hosts, &crate::records::discovery::process_env())?;
    let (remote, _) = super::remote_args(&["watch"])?;
    let deadline = args.hosts.deadline();
    if args.watch {
        return watch(hosts, remote, deadline).map(Some);
    }
    let outcomes = super::on_each(&hosts, |h| {
        fetch(&hosts, h, &remote, deadline, &KillSlot::default())
    });
    let now = Utc::now();
    let text = if args.json {
        merged_json(&outcomes, now)
    } else {
        let views: Vec<HostView> = outcomes
            .iter()
            .map(|o| HostView {
                host: &o.host,
                runs: o.result.as_ref().ok(),
                note: o
                    .result
                    .as_ref()
                    .err()
                    .map(|p| (p.kind().into(), p.message())),
            })
            .collect();
        let mut t = table(&views, now).join("\n");
        t.push('\n');
        t
    };
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    // Hosts that did not answer are rows of the view, not a failure of it.
    Ok(Some(crate::error::exit_code::OK))
}

/// One `agent-looper/status` document: every run with its `host`, in table order, and a
/// `hosts` list saying which hosts answered.
fn merged_json(outcomes: &[super::Outcome<Runs>], now: DateTime<Utc>) -> String {
    let mut runs: Vec<(&Row, Json)> = Vec::new();
    let mut report = Vec::new();
    for o in outcomes {
        match &o.result {
            Ok(rs) => {
                for (row, obj) in rs {
                    let mut obj = obj.clone();
                    obj.insert("host".into(), Json::String(o.host.name.clone()));
                    runs.push((row, Json::Object(obj)));
                }
                report.push(serde_json::json!({
                    "host": o.host.name, "destination": o.host.destination,
                    "ok": true, "runs": rs.len(), "problem": null,
                }));
            }
            Err(p) => report.push(serde_json::json!({
                "host": o.host.name, "destination": o.host.destination,
                "ok": false, "runs": 0, "problem": super::problem_json(p),
            })),
        }
    }
    runs.sort_by_cached_key(|(r, _)| sort_key(r));
    let doc = serde_json::json!({
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "generated_at": time::format(now),
        "runs": runs.into_iter().map(|(_, j)| j).collect::<Vec<_>>(),
        "hosts": report,
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

/// What `--watch` knows about one host.
#[derive(Default)]
struct Seen {
    /// The last answer and when it came.
    runs: Option<(Instant, Runs)>,
    problem: Option<Problem>,
    /// When the question in flight was asked.
    asking_since: Option<Instant>,
}

fn watch(hosts: Hosts, remote: Vec<String>, deadline: Option<Duration>) -> Result<i32> {
    let hosts = Arc::new(hosts);
    let remote = Arc::new(remote);
    let seen: Arc<Mutex<HashMap<String, Seen>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let slots: Vec<KillSlot> = hosts.list.iter().map(|_| KillSlot::default()).collect();
    for (i, host) in hosts.list.iter().enumerate() {
        let (hosts, remote, seen, stop, slot, host) = (
            hosts.clone(),
            remote.clone(),
            seen.clone(),
            stop.clone(),
            slots[i].clone(),
            host.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let started = Instant::now();
                if let Ok(mut s) = seen.lock() {
                    s.entry(host.name.clone()).or_default().asking_since = Some(started);
                }
                let r = fetch(&hosts, &host, &remote, deadline, &slot);
                if let Ok(mut s) = seen.lock() {
                    let e = s.entry(host.name.clone()).or_default();
                    e.asking_since = None;
                    match r {
                        Ok(runs) => {
                            e.runs = Some((Instant::now(), runs));
                            e.problem = None;
                        }
                        Err(p) => {
                            e.runs = None;
                            e.problem = Some(p);
                        }
                    }
                }
                while !stop.load(Ordering::SeqCst) && started.elapsed() < WATCH_POLL {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        });
    }
    let frame = || {
        let now = Utc::now();
        let at = Instant::now();
        let Ok(seen) = seen.lock() else {
            return vec!["looper status: the hosts' answers cannot be read".into()];
        };
        let empty = Seen::default();
        let views: Vec<HostView> = hosts
            .list
            .iter()
            .map(|h| {
                let s = seen.get(&h.name).unwrap_or(&empty);
                let asking = s.asking_since.map(|t| at.duration_since(t));
                let note = match (&s.problem, &s.runs, asking) {
                    (Some(p), _, _) => Some((p.kind().to_string(), p.message())),
                    (None, None, a) => Some((
                        "connecting".to_string(),
                        format!(
                            "waiting for the first answer ({} s)",
                            a.unwrap_or_default().as_secs()
                        ),
                    )),
                    (None, Some((got, _)), Some(a)) if a >= SLOW => Some((
                        "slow".to_string(),
                        format!(
                            "no answer for {} s; its rows are from {} s ago",
                            a.as_secs(),
                            at.duration_since(*got).as_secs()
                        ),
                    )),
                    _ => None,
                };
                HostView {
                    host: h,
                    runs: s.runs.as_ref().map(|(_, r)| r),
                    note,
                }
            })
            .collect();
        let n: usize = views.iter().map(|v| v.runs.map_or(0, Vec::len)).sum();
        let mut lines = vec![format!(
            "looper status  {}  ({n} runs on {} hosts)  q to quit",
            now.with_timezone(&chrono::Local).format("%H:%M:%S"),
            hosts.list.len()
        )];
        lines.extend(table(&views, now));
        lines
    };
    let r = crate::commands::status::watch_frames(frame);
    stop.store(true, Ordering::SeqCst);
    for s in &slots {
        s.kill();
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str) -> Host {
        Host {
            name: name.into(),
            destination: Some(name.into()),
            looper: "looper".into(),
        }
    }

    fn run(label: &str, status: &str, updated: &str) -> (Row, Map<String, Json>) {
        let obj = serde_json::json!({
            "run_dir": format!("/r/{label}"), "label": label, "status": status,
            "stale": false, "updated_at": updated, "agent": "codex", "loop": 2,
            "project": "proj", "exit_code": null,
        });
        let Json::Object(obj) = obj else {
            unreachable!()
        };
        let r: RemoteRun = serde_json::from_value(Json::Object(obj.clone())).expect("run");
        (to_row(r), obj)
    }

    #[test]
    fn the_merged_table_has_a_host_column_and_problem_rows_first() {
        let now = time::parse("2026-01-01T00:01:00Z").expect("t");
        let (a, b, c) = (host("alpha"), host("beta"), host("down"));
        let ra = vec![run("one", "running", "2026-01-01T00:00:50Z")];
        let rb = vec![
            run("two", "stopped", "2026-01-01T00:00:40Z"),
            run("three", "error", "2026-01-01T00:00:30Z"),
        ];
        let views = [
            HostView {
                host: &a,
                runs: Some(&ra),
                note: None,
            },
            HostView {
                host: &b,
                runs: Some(&rb),
                note: None,
            },
            HostView {
                host: &c,
                runs: None,
                note: Some(("unreachable".into(), "ssh: connection refused".into())),
            },
        ];
        let lines = table(&views, now);
        assert_eq!(
            lines,
            [
                "HOST   LABEL  STATUS       AGENT  LOOP  UPDATED  USAGE  STOP/NOTE                PROJECT",
                "down   -      unreachable  -      -     -        -      ssh: connection refused  -",
                "beta   three  error        codex  2     30s ago  -      -                        proj",
                "alpha  one    running      codex  2     10s ago  -      -                        proj",
                "beta   two    stopped      codex  2     20s ago  -      -                        proj",
            ]
        );
    }

    #[test]
    fn merged_json_keeps_the_hosts_fields_and_lists_the_hosts() {
        let now = time::parse("2026-01-01T00:01:00Z").expect("t");
        let outcomes = vec![
            super::super::Outcome {
                host: host("alpha"),
                result: Ok(vec![run("one", "running", "2026-01-01T00:00:50Z")]),
            },
            super::super::Outcome {
                host: host("down"),
                result: Err(Problem::Unreachable("refused".into())),
            },
        ];
        let doc: Json = serde_json::from_str(&merged_json(&outcomes, now)).expect("json");
        assert_eq!(doc["schema"], "agent-looper/status");
        assert_eq!(doc["runs"][0]["host"], "alpha");
        assert_eq!(doc["runs"][0]["label"], "one");
        assert_eq!(doc["hosts"][1]["ok"], false);
        assert_eq!(doc["hosts"][1]["problem"]["kind"], "unreachable");
    }
}

//! Beyond one machine (D34): a subcommand given `--host` runs the same subcommand on each
//! host through the user's `ssh` client with `--json`, every host in parallel, and merges
//! the answers with a host column. No agent of our own runs on the remote: the remote side
//! is the remote `looper`, and the protocol is each subcommand's `--json` output.
//!
//! Plugging a subcommand in takes its `--json` output in one of two shapes and one line:
//! - a document (`control`, and `wait`/`diff` when they exist): the command's `--json`
//!   prints one [`Document`] (wrap the command in [`document`], which keeps the lines it
//!   says and its exit code), and its entry point starts with
//!   `if let Some(code) = remote::forward(&args.hosts, Shape::Document, true)? { return Ok(code); }`
//!   (`true`: the command answers at once, so `--host-timeout` applies; pass `false` for
//!   a command that waits, like `control stop --wait`);
//! - JSON lines (`logs`): each line `{"line": "..."}`, forwarded with [`Shape::Lines`].
//!
//! `status` has its own schema and a merged table (`remote::status`).

pub mod hosts;
pub mod ssh;
pub mod status;

use std::io::Write;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

pub use hosts::HostArgs;
use hosts::{Host, Hosts};
use ssh::{Answer, KillSlot, Problem};

use crate::error::{Error, Result, exit_code};

/// What a forwarded subcommand prints with `--json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// One JSON document, a [`Document`].
    Document,
    /// JSON lines, each `{"line": "..."}`, streamed as they come.
    Lines,
}

/// The document a command prints with `--json` when it has no schema of its own: what it
/// would have said to a person, and how it ended. Fields may be added within version 1.
#[derive(Debug, Serialize, Deserialize)]
pub struct Document {
    /// `agent-looper/<command>`, e.g. `agent-looper/control`.
    pub schema: String,
    pub version: u32,
    /// The agent-looper version that answered.
    #[serde(default)]
    pub looper_version: Option<String>,
    pub exit_code: i32,
    /// The lines the command said, in order, already sanitised.
    #[serde(default)]
    pub lines: Vec<String>,
    /// The error that ended the command, if one did.
    #[serde(default)]
    pub error: Option<String>,
}

/// The version of [`Document`] and of `{"line"}` streams this looper writes and reads.
pub const DOCUMENT_VERSION: u32 = 1;

/// Run `f` with its lines kept, then print them as one [`Document`] on stdout; the exit
/// code is `f`'s (an error becomes its exit code and the document's `error`).
pub fn document(schema: &str, f: impl FnOnce() -> Result<i32>) -> Result<i32> {
    crate::console::capture();
    let r = f();
    let lines = crate::console::take_captured();
    let (code, error) = match r {
        Ok(c) => (c, None),
        Err(e) => (e.exit_code(), Some(e.to_string())),
    };
    let doc = Document {
        schema: schema.to_string(),
        version: DOCUMENT_VERSION,
        looper_version: Some(env!("CARGO_PKG_VERSION").to_string()),
        exit_code: code,
        lines,
        error,
    };
    let mut text = serde_json::to_string(&doc).unwrap_or_default();
    text.push('\n');
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(code)
}

/// One line of a `{"line"}` stream.
#[derive(Debug, Serialize, Deserialize)]
pub struct StreamLine<'a> {
    #[serde(borrow)]
    pub line: std::borrow::Cow<'a, str>,
}

/// The arguments this process was started with, after the program name.
pub fn raw_args() -> Result<Vec<String>> {
    std::env::args_os()
        .skip(1)
        .map(|a| {
            a.into_string().map_err(|a| {
                Error::Usage(format!(
                    "argument {a:?} is not UTF-8 and cannot be sent to another host"
                ))
            })
        })
        .collect()
}

/// `raw` without the flags named in `drop` (and their values), plus `--json` at the end of
/// the options. Which options take a value comes from the clap definition of the subcommand
/// itself, so a value that looks like `--host` is never taken for the flag. Returns the
/// arguments and whether `--json` was given.
pub fn forwarded_args(root: &clap::Command, raw: &[String], drop: &[&str]) -> (Vec<String>, bool) {
    let mut cmd = root;
    let mut out = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        match cmd.find_subcommand(&raw[i]) {
            Some(sub) => {
                out.push(raw[i].clone());
                cmd = sub;
                i += 1;
            }
            None => break,
        }
    }
    let long_takes = |name: &str| {
        cmd.get_arguments().find_map(|a| {
            let names = a.get_all_aliases().unwrap_or_default();
            (a.get_long() == Some(name) || names.contains(&name))
                .then(|| a.get_action().takes_values())
        })
    };
    let short_takes = |c: char| {
        cmd.get_arguments()
            .find(|a| a.get_short() == Some(c))
            .is_some_and(|a| a.get_action().takes_values())
    };
    let mut json = false;
    let mut trailing = Vec::new();
    while i < raw.len() {
        let t = &raw[i];
        i += 1;
        if t == "--" {
            trailing = raw[i - 1..].to_vec();
            break;
        }
        if let Some(long) = t.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, _)) => (n, true),
                None => (long, false),
            };
            let takes = long_takes(name).unwrap_or(false);
            if name == "json" {
                json = true;
                continue;
            }
            let dropped = drop.contains(&name);
            if !dropped {
                out.push(t.clone());
            }
            if takes && !inline && i < raw.len() {
                if !dropped {
                    out.push(raw[i].clone());
                }
                i += 1;
            }
            continue;
        }
        out.push(t.clone());
        if t.len() > 1 && t.starts_with('-') {
            let chars: Vec<char> = t[1..].chars().collect();
            if let Some(k) = chars.iter().position(|c| short_takes(*c))
                && k + 1 == chars.len()
                && i < raw.len()
            {
                out.push(raw[i].clone());
                i += 1;
            }
        }
    }
    out.push("--json".into());
    out.extend(trailing);
    (out, json)
}

/// The arguments to send: this invocation's, without the host flags and `extra_drop`.
pub fn remote_args(extra_drop: &[&str]) -> Result<(Vec<String>, bool)> {
    let root = <crate::cli::Cli as clap::CommandFactory>::command();
    let mut drop: Vec<&str> = hosts::FLAGS.iter().map(|(n, _)| *n).collect();
    drop.extend_from_slice(extra_drop);
    Ok(forwarded_args(&root, &raw_args()?, &drop))
}

/// What came back from one host.
pub struct Outcome<T> {
    pub host: Host,
    pub result: std::result::Result<T, Problem>,
}

/// Run `args` on `host` and read the answer as a document of `schema` (`None`: any
/// `agent-looper/...` object). Problems with reaching the host or with the answer are
/// returned as [`Problem`]s, never as errors.
pub fn ask(
    hosts: &Hosts,
    host: &Host,
    args: &[String],
    deadline: Option<std::time::Duration>,
    slot: &KillSlot,
) -> std::result::Result<(Answer, Json), Problem> {
    let argv = ssh::argv(hosts, host, args).map_err(Problem::BadAnswer)?;
    let answer = ssh::run(&argv, deadline, slot, None).map_err(|e| {
        Problem::Unreachable(format!(
            "cannot run {}: {e}",
            argv.first().map_or("", |s| s)
        ))
    })?;
    if let Some(p) = ssh::classify(host, &answer) {
        return Err(p);
    }
    match serde_json::from_slice::<Json>(&answer.stdout) {
        Ok(doc @ Json::Object(_)) => Ok((answer, doc)),
        _ if answer.code != Some(0) => Err(Problem::Failed {
            code: answer.code,
            message: {
                let w = ssh::last_words(&answer.stderr);
                if w.is_empty() {
                    format!("exited with {:?} and said nothing", answer.code)
                } else {
                    w
                }
            },
        }),
        _ => Err(Problem::BadAnswer(format!(
            "{} did not answer with JSON (is `{}` agent-looper?)",
            host.name, host.looper
        ))),
    }
}

/// Check a document's `schema` and `version`: a version newer than ours changed meaning.
pub fn check_schema(host: &Host, doc: &Json, schema: &str, version: u32) -> Option<Problem> {
    let got = doc.get("schema").and_then(Json::as_str).unwrap_or("");
    if got != schema {
        return Some(Problem::BadAnswer(format!(
            "{} answered with {:?}, not {schema}",
            host.name, got
        )));
    }
    let v = doc.get("version").and_then(Json::as_u64).unwrap_or(0);
    if v > u64::from(version) {
        return Some(Problem::TooOld(format!(
            "{} speaks {schema} version {v}; this looper reads version {version}: update agent-looper here",
            host.name
        )));
    }
    None
}

/// Every host at once, one thread each; answers in the hosts' order.
pub fn on_each<T: Send>(
    hosts: &Hosts,
    f: impl Fn(&Host) -> std::result::Result<T, Problem> + Sync,
) -> Vec<Outcome<T>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = hosts
            .list
            .iter()
            .map(|h| {
                let f = &f;
                (h, s.spawn(move || f(h)))
            })
            .collect();
        handles
            .into_iter()
            .map(|(h, j)| Outcome {
                host: h.clone(),
                result: j.join().unwrap_or_else(|_| {
                    Err(Problem::BadAnswer("the host's thread panicked".into()))
                }),
            })
            .collect()
    })
}

/// `{"kind": ..., "message": ...}` for a problem in merged JSON.
pub fn problem_json(p: &Problem) -> Json {
    serde_json::json!({"kind": p.kind(), "message": p.message()})
}

/// Lines with a host column: the host names padded to one width.
fn with_host(width: usize, host: &str, line: &str) -> String {
    let host = crate::text::sanitize_line(host);
    format!("{host:<width$}  {}", crate::text::sanitize_line(line))
}

/// Run the current subcommand on the hosts `args` names, if it names any: `Ok(None)` when
/// it does not (run here as usual). `quick`: the command answers at once, so the
/// `--host-timeout` deadline applies.
pub fn forward(args: &HostArgs, shape: Shape, quick: bool) -> Result<Option<i32>> {
    if !args.is_remote() {
        return Ok(None);
    }
    let hosts = hosts::select(args, &crate::records::discovery::process_env())?;
    let (remote, local_json) = remote_args(&[])?;
    let deadline = if quick { args.deadline() } else { None };
    let code = match shape {
        Shape::Document => documents(&hosts, &remote, deadline, local_json),
        Shape::Lines => lines(&hosts, &remote, deadline, local_json),
    };
    Ok(Some(code))
}

fn documents(
    hosts: &Hosts,
    remote: &[String],
    deadline: Option<std::time::Duration>,
    local_json: bool,
) -> i32 {
    let schema_of = |doc: &Json| {
        doc.get("schema")
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_string()
    };
    let outcomes = on_each(hosts, |h| {
        let (_, doc) = ask(hosts, h, remote, deadline, &KillSlot::default())?;
        let schema = schema_of(&doc);
        if !schema.starts_with("agent-looper/") {
            return Err(Problem::BadAnswer(format!(
                "{} answered with an unknown document",
                h.name
            )));
        }
        if let Some(p) = check_schema(h, &doc, &schema, DOCUMENT_VERSION) {
            return Err(p);
        }
        Ok(doc)
    });
    let mut code = exit_code::OK;
    let mut first_failure = |c: i32| {
        if code == exit_code::OK {
            code = c;
        }
    };
    let width = hosts.list.iter().map(|h| h.name.len()).max().unwrap_or(4);
    let mut out = String::new();
    let mut merged = Vec::new();
    for o in &outcomes {
        match &o.result {
            Ok(doc) => {
                let d: Option<Document> = serde_json::from_value(doc.clone()).ok();
                let c = d.as_ref().map_or(exit_code::AGENT_FAILED, |d| d.exit_code);
                if c != exit_code::OK {
                    first_failure(c);
                }
                if let Some(d) = &d {
                    for l in &d.lines {
                        out.push_str(&with_host(width, &o.host.name, l));
                        out.push('\n');
                    }
                    if let Some(e) = &d.error {
                        out.push_str(&with_host(width, &o.host.name, &format!("error: {e}")));
                        out.push('\n');
                    }
                }
                merged.push(serde_json::json!({
                    "host": o.host.name, "exit_code": c, "problem": null, "document": doc,
                }));
            }
            Err(p) => {
                first_failure(p.exit_code());
                out.push_str(&with_host(
                    width,
                    &o.host.name,
                    &format!("{}: {}", p.kind(), p.message()),
                ));
                out.push('\n');
                merged.push(serde_json::json!({
                    "host": o.host.name, "exit_code": p.exit_code(),
                    "problem": problem_json(p), "document": null,
                }));
            }
        }
    }
    if local_json {
        let doc = serde_json::json!({
            "schema": "agent-looper/hosts",
            "version": DOCUMENT_VERSION,
            "generated_at": crate::records::time::format(chrono::Utc::now()),
            "results": merged,
        });
        out = serde_json::to_string_pretty(&doc).unwrap_or_default();
        out.push('\n');
    }
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    code
}

fn lines(
    hosts: &Hosts,
    remote: &[String],
    deadline: Option<std::time::Duration>,
    local_json: bool,
) -> i32 {
    let width = hosts.list.iter().map(|h| h.name.len()).max().unwrap_or(4);
    // One host reads like the command run there; several get the host column.
    let column = hosts.list.len() > 1;
    let stdout = Mutex::new(std::io::stdout());
    let print = |host: &str, text: &str, json: Json| {
        let mut s = if local_json {
            serde_json::to_string(&json).unwrap_or_default()
        } else if column {
            with_host(width, host, text)
        } else {
            crate::text::sanitize(text).into_owned()
        };
        s.push('\n');
        if let Ok(mut o) = stdout.lock() {
            let _ = o.write_all(s.as_bytes());
            let _ = o.flush();
        }
    };
    let outcomes = on_each(hosts, |h| {
        let argv = ssh::argv(hosts, h, remote).map_err(Problem::BadAnswer)?;
        let mut on_line = |raw: &[u8]| {
            let text = String::from_utf8_lossy(raw);
            let text = text.trim_end_matches(['\n', '\r']);
            let line = match serde_json::from_str::<StreamLine>(text) {
                Ok(l) => l.line.into_owned(),
                // A line that is not ours is shown as text, made safe.
                Err(_) => text.to_string(),
            };
            print(
                &h.name,
                &line,
                serde_json::json!({"host": h.name, "line": crate::text::sanitize(&line)}),
            );
        };
        let answer = ssh::run(&argv, deadline, &KillSlot::default(), Some(&mut on_line))
            .map_err(|e| Problem::Unreachable(format!("cannot run ssh: {e}")))?;
        if let Some(p) = ssh::classify(h, &answer) {
            return Err(p);
        }
        match answer.code {
            Some(0) => Ok(()),
            code => Err(Problem::Failed {
                code,
                message: ssh::last_words(&answer.stderr),
            }),
        }
    });
    let mut code = exit_code::OK;
    for o in outcomes {
        if let Err(p) = o.result {
            if code == exit_code::OK {
                code = p.exit_code();
            }
            let text = format!("{}: {}", p.kind(), p.message());
            let json = serde_json::json!({"host": o.host.name, "problem": problem_json(&p)});
            if column || local_json {
                print(&o.host.name, &text, json);
            } else {
                print(&o.host.name, &with_host(width, &o.host.name, &text), json);
            }
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn host_flags_are_dropped_and_json_added_by_the_clap_definition() {
        let root = <crate::cli::Cli as clap::CommandFactory>::command();
        let drop: Vec<&str> = hosts::FLAGS.iter().map(|(n, _)| *n).collect();
        let (args, json) = forwarded_args(
            &root,
            &strs(&[
                "control",
                "stop",
                "--host",
                "a",
                "smoke",
                "--reason",
                "--host",
                "--host=b",
                "--all-hosts",
                "--host-timeout",
                "-1",
                "--after-loop",
                "--wait",
            ]),
            &drop,
        );
        // `--reason --host`: clap gives `--reason` the value `--host`; it stays a value.
        assert_eq!(
            args,
            strs(&[
                "control",
                "stop",
                "smoke",
                "--reason",
                "--host",
                "--after-loop",
                "--wait",
                "--json"
            ])
        );
        assert!(!json);
        let (args, json) = forwarded_args(
            &root,
            &strs(&["logs", "-f", "--json", "--host", "x", "run-1"]),
            &drop,
        );
        assert_eq!(args, strs(&["logs", "-f", "run-1", "--json"]));
        assert!(json);
        let (args, _) = forwarded_args(
            &root,
            &strs(&["status", "--watch", "--host", "x", "--state-root", "/r"]),
            &["host", "watch"],
        );
        assert_eq!(args, strs(&["status", "--state-root", "/r", "--json"]));
    }

    #[test]
    fn documents_round_trip() {
        let doc = Document {
            schema: "agent-looper/control".into(),
            version: 1,
            looper_version: Some("0.1.0".into()),
            exit_code: 2,
            lines: vec!["queued".into()],
            error: Some("no run".into()),
        };
        let v = serde_json::to_value(&doc).expect("json");
        let back: Document = serde_json::from_value(v).expect("back");
        assert_eq!(back.lines, ["queued"]);
        assert_eq!(back.exit_code, 2);
    }
}

//! People in the loop (issue 17) through the binaries: an agent that asks and waits, an ask
//! that holds the run at the loop boundary, an approval gate, notifications (once per entry,
//! a hanging notifier killed at its timeout), `looper wait` for each state, an ask that
//! survives a SIGKILL of the supervisor, and `looper mcp` driven by an MCP client (rmcp's
//! client side) and seen connected by the real claude CLI.

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use crate::support::*;

fn looper_path() -> String {
    looper_bin().display().to_string()
}

/// Start `looper --local <args>` in the background.
fn spawn(p: &Project, args: &[&str]) -> Child {
    p.looper()
        .arg("--local")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn looper")
}

fn finish(child: Child) -> Output {
    crate::e2e_support::wait_with_deadline(child, Duration::from_secs(60)).expect("looper ended")
}

fn live_state(p: &Project) -> Option<Json> {
    let run = p.run_dirs().pop()?;
    let bytes = std::fs::read(run.join("state.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn wait_status(p: &Project, status: &str) -> bool {
    wait_until(20.0, || {
        live_state(p).is_some_and(|s| s["status"].as_str() == Some(status))
    })
}

fn cmd(p: &Project, args: &[&str]) -> Output {
    p.looper().args(args).output().expect("looper command")
}

fn logs(run: &Path) -> String {
    let mut names: Vec<PathBuf> = std::fs::read_dir(run)
        .expect("run dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|n| std::fs::read_to_string(n).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n=====\n")
}

fn log_of(run: &Path, loop_number: u64) -> String {
    std::fs::read_to_string(run.join(format!("loop-{loop_number:04}__prompt-001.log")))
        .unwrap_or_default()
}

fn open_asks(run: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(run.join("asks")) else {
        return vec![];
    };
    dir.flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".json")
                .filter(|id| !id.contains('.') && id.starts_with("ask-"))
                .map(str::to_string)
        })
        .collect()
}

fn diagnose(p: &Project, out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}\nevents:\n{}\nlogs:\n{}",
        stdout(out),
        stderr(out),
        p.event_names().join(" "),
        p.run_dirs().last().map(|r| logs(r)).unwrap_or_default()
    )
}

#[test]
fn an_agent_that_asks_with_wait_gets_the_answer_on_stdout() {
    let p = Project::new();
    p.fake_agent(
        &format!(
            "=== call 1\nrun {} ask --wait \"Which database?\" --choice postgres --choice sqlite\n=== default\necho-prompt\n",
            looper_path()
        ),
        "max_loops = 2",
    );
    let child = spawn(&p, &[]);
    assert!(
        wait_until(20.0, || p
            .run_dirs()
            .last()
            .is_some_and(|r| !open_asks(r).is_empty())),
        "the agent asked"
    );
    // While the agent waits, the run needs a person: status says so first, with the question.
    assert!(wait_until(10.0, || {
        stdout(&cmd(&p, &["status"])).contains("needs an answer: Which database?")
    }));
    let answered = cmd(&p, &["answer", "2"]);
    assert!(answered.status.success(), "{}", stderr(&answered));
    assert!(
        stdout(&answered).contains(": sqlite"),
        "{}",
        stdout(&answered)
    );
    let out = finish(child);
    assert!(out.status.success(), "{}", diagnose(&p, &out));
    let run = p.last_run();
    let first = log_of(&run, 1);
    assert!(first.contains("ran: sqlite"), "{first}");
    assert!(first.contains("exit: 0"), "{first}");
    // The next prompt carries the question and the answer once.
    let second = log_of(&run, 2);
    assert!(
        second.contains("You asked: Which database?") && second.contains("The answer: sqlite"),
        "{second}"
    );
    let names = p.event_names();
    assert!(names.contains(&"ask_opened".to_string()));
    assert!(names.contains(&"ask_answered".to_string()));
    assert!(
        !names.contains(&"waiting_for_answer".to_string()),
        "answered in time"
    );
    assert_eq!(
        names.iter().filter(|n| *n == "feedback_delivered").count(),
        1
    );
}

#[test]
fn an_ask_without_wait_holds_the_run_at_the_boundary_until_answered() {
    let p = Project::new();
    p.fake_agent(
        &format!(
            "=== call 1\nrun {} ask \"Drop the legacy table?\"\n=== default\necho-prompt\n",
            looper_path()
        ),
        "max_loops = 2",
    );
    let child = spawn(&p, &[]);
    assert!(wait_status(&p, "waiting_for_answer"), "the run waits");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(p.calls(), 1, "no new loop while waiting");
    let status = stdout(&cmd(&p, &["status"]));
    let first_row = status.lines().nth(1).unwrap_or_default();
    assert!(
        first_row.contains("waiting_for_answer")
            && first_row.contains("needs an answer: Drop the legacy table?"),
        "{status}"
    );
    let json: Json = serde_json::from_slice(&cmd(&p, &["status", "--json"]).stdout).expect("json");
    assert_eq!(
        json["runs"][0]["open_asks"][0]["question"],
        "Drop the legacy table?"
    );
    assert_eq!(json["runs"][0]["needs_input"], true);
    let answered = cmd(&p, &["answer", "yes, drop it"]);
    assert!(answered.status.success(), "{}", stderr(&answered));
    let out = finish(child);
    assert!(out.status.success(), "{}", diagnose(&p, &out));
    assert_eq!(p.calls(), 2);
    let second = log_of(&p.last_run(), 2);
    assert!(second.contains("The answer: yes, drop it"), "{second}");
    // Answering again is refused: the first answer stands.
    let again = cmd(&p, &["answer", "--include-stopped", "no"]);
    assert!(!again.status.success());
}

#[test]
fn an_approval_gate_rejected_once_then_approved() {
    let p = Project::new();
    p.fake_agent(
        "=== default\necho-prompt\nsay EXIT_SIGNAL: true\n",
        "completion_enabled = true\n\n[human]\nrequire_approval = [\"completion\"]",
    );
    let child = spawn(&p, &[]);
    assert!(wait_status(&p, "waiting_for_approval"));
    let status = stdout(&cmd(&p, &["status"]));
    assert!(
        status.contains("needs approval: approve completion after loop 1"),
        "{status}"
    );
    let no_reason = cmd(&p, &["reject"]);
    assert_eq!(
        no_reason.status.code(),
        Some(2),
        "a rejection needs a reason"
    );
    let rejected = cmd(&p, &["reject", "--reason", "the parser has no tests yet"]);
    assert!(rejected.status.success(), "{}", stderr(&rejected));
    // Loop 2 runs with the reason in its prompt, completes again, and waits again.
    assert!(wait_until(20.0, || p.calls() == 2
        && live_state(&p)
            .is_some_and(|s| s["status"] == "waiting_for_approval")));
    let approved = cmd(&p, &["approve"]);
    assert!(approved.status.success(), "{}", stderr(&approved));
    let out = finish(child);
    assert!(out.status.success(), "{}", diagnose(&p, &out));
    assert_eq!(p.state()["stop_reason"], "completion marker");
    let second = log_of(&p.last_run(), 2);
    assert!(second.contains("the parser has no tests yet"), "{second}");
    assert!(!log_of(&p.last_run(), 1).contains("parser"));
    let rejected: Vec<Json> = p
        .events()
        .into_iter()
        .filter(|e| e["event"] == "approval_rejected")
        .collect();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["gate"], "completion");
    assert_eq!(rejected[0]["completion_streak"], 0);
    assert!(p.event_names().contains(&"approval_given".to_string()));
}

#[test]
fn a_notifier_fires_once_per_entry_into_needs_input_and_stopped() {
    let p = Project::new();
    let record = p.join("notified.txt");
    p.fake_agent(
        &format!(
            "=== call 1\nrun {l} ask \"first?\"\nrun {l} ask \"second?\"\n=== default\nsay ok\n",
            l = looper_path()
        ),
        &format!(
            "max_loops = 3\n\n[human]\non_ask = \"continue\"\n\n[notify]\ncommand = [\"/bin/sh\", \"-c\", \"printf '%s|%s|%s\\\\n' \\\"$1\\\" \\\"$2\\\" \\\"$3\\\" >> {}\", \"sh\", \"{{event}}\", \"{{label}}\", \"{{body}}\"]\non = [\"needs_input\", \"stopped\"]\n",
            record.display()
        ),
    );
    let out = p.run(&["--label", "notes"]);
    assert!(out.status.success(), "{}", diagnose(&p, &out));
    let lines: Vec<String> = std::fs::read_to_string(&record)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        lines,
        [
            "needs_input|notes|first?",
            "stopped|notes|max loops reached: 3"
        ],
        "two open asks are one entry into needs_input"
    );
    let sent = p
        .events()
        .into_iter()
        .filter(|e| e["event"] == "notification_sent")
        .count();
    assert_eq!(sent, 2);
}

#[test]
fn a_hanging_notifier_is_killed_at_its_timeout_and_the_loop_goes_on() {
    let p = Project::new();
    let pid_file = p.join("notifier.pid");
    p.fake_agent(
        &format!(
            "=== call 1\nrun {} ask \"anyone?\"\n=== default\nsay ok\n",
            looper_path()
        ),
        &format!(
            "max_loops = 3\n\n[human]\non_ask = \"continue\"\n\n[notify]\ncommand = [\"/bin/sh\", \"-c\", \"echo $$ >> {}; sleep 60\"]\non = [\"needs_input\", \"stopped\"]\ntimeout_seconds = 2\n",
            pid_file.display()
        ),
    );
    let started = std::time::Instant::now();
    let out = p.run(&[]);
    assert!(out.status.success(), "{}", diagnose(&p, &out));
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(p.state()["stop_reason"], "max loops reached: 3");
    let events = p.events();
    let failed: Vec<&Json> = events
        .iter()
        .filter(|e| e["event"] == "notification_failed")
        .collect();
    assert_eq!(failed.len(), 2, "{:?}", p.event_names());
    assert!(
        failed[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("did not finish within 2 s")),
        "{failed:?}"
    );
    // The loop did not wait for the notifier: every loop ended before its timeout.
    let names = p.event_names();
    let last_loop = names
        .iter()
        .rposition(|n| n == "loop_completed")
        .expect("loops");
    let first_failure = names
        .iter()
        .position(|n| n == "notification_failed")
        .expect("failure");
    assert!(last_loop < first_failure, "{names:?}");
    // No notifier is left behind.
    let pids: Vec<i32> = std::fs::read_to_string(&pid_file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(pids.len(), 2);
    for pid in pids {
        assert!(
            !group_alive(i64::from(pid)),
            "notifier group {pid} survived"
        );
    }
}

fn wait_json(p: &Project, args: &[&str]) -> (Option<i32>, Json) {
    let mut full = vec!["wait"];
    full.extend_from_slice(args);
    full.push("--json");
    let out = cmd(p, &full);
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Json::Null);
    (out.status.code(), v)
}

#[test]
fn looper_wait_for_each_state_and_for_the_timeout() {
    // loop_completed, then stopped.
    let p = Project::new();
    p.fake_agent("=== default\nsleep 0.5\nsay ok\n", "max_loops = 2");
    let child = spawn(&p, &[]);
    assert!(wait_status(&p, "running"));
    let (code, v) = wait_json(&p, &["--until", "loop_completed", "--timeout", "20"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["result"], "reached");
    assert_eq!(v["event"]["event"], "loop_completed");
    assert_eq!(v["event"]["loop"], 1);
    let (code, v) = wait_json(&p, &["--until", "stopped", "--timeout", "20"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["status"], "stopped");
    assert!(finish(child).status.success());
    // An ended run does not reach a state it never will: exit 1 (include it to name it).
    let (code, v) = wait_json(&p, &["--include-stopped", "--until", "retry_wait"]);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["result"], "ended");

    // needs_input, and the timeout.
    let p = Project::new();
    p.fake_agent(
        &format!(
            "=== call 1\nsleep 0.5\nrun {} ask \"go on?\"\n=== default\nsay ok\n",
            looper_path()
        ),
        "max_loops = 2",
    );
    let child = spawn(&p, &[]);
    assert!(wait_status(&p, "running"));
    let (code, v) = wait_json(&p, &["--until", "needs_input", "--timeout", "20"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["open_asks"][0]["question"], "go on?");
    assert!(wait_status(&p, "waiting_for_answer"));
    let (code, v) = wait_json(&p, &["--until", "stopped", "--timeout", "0.5"]);
    assert_eq!(code, Some(124), "{v}");
    assert_eq!(v["result"], "timeout");
    assert!(cmd(&p, &["answer", "yes"]).status.success());
    assert!(finish(child).status.success());

    // retry_wait.
    let p = Project::new();
    p.fake_agent(
        "=== call 1\nsleep 0.5\nerr Error: 429 Too Many Requests (rate limit)\nexit 1\n=== default\nsay ok\n",
        "max_loops = 1\nretry_backoff_base_seconds = 0.5",
    );
    let child = spawn(&p, &[]);
    assert!(wait_status(&p, "running"));
    let (code, v) = wait_json(&p, &["--until", "retry_wait", "--timeout", "20"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["event"]["retry_kind"], "rate_limit");
    assert!(finish(child).status.success());
}

#[test]
fn looper_wait_is_pinned_to_the_run_it_named() {
    // Two projects share one state root; the wait names label `x` while only the first
    // (slow) run has it: the second run of label `x` completing a loop does not satisfy it.
    let root = tempfile::tempdir().expect("root");
    let a = Project::new();
    let b = Project::new();
    let log_dir = format!("log_dir = {:?}", root.path().display().to_string());
    a.fake_agent(
        "=== default\nsleep 30\n",
        &format!("max_loops = 1\n{log_dir}"),
    );
    b.fake_agent(
        "=== default\nsleep 1\nsay ok\n",
        &format!("max_loops = 1\n{log_dir}"),
    );
    let slow = spawn(&a, &["--label", "x"]);
    let root_s = root.path().display().to_string();
    assert!(wait_until(20.0, || std::fs::read_dir(root.path())
        .is_ok_and(|d| {
            d.flatten().any(|e| {
                e.path().join("state.json").is_file()
                    && !e.file_name().to_string_lossy().starts_with('.')
            })
        })));
    let waiter = a
        .looper()
        .args([
            "wait",
            "x",
            "--state-root",
            &root_s,
            "--until",
            "loop_completed",
        ])
        .args(["--timeout", "4", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("wait");
    std::thread::sleep(Duration::from_millis(300));
    let fast = b.run(&["--label", "x"]);
    assert!(fast.status.success(), "{}", stderr(&fast));
    let out = finish(waiter);
    assert_eq!(out.status.code(), Some(124), "{}", stdout(&out));
    let stop = cmd(
        &a,
        &["control", "stop", "--now", "--state-root", &root_s, "x"],
    );
    assert!(stop.status.success(), "{}", stderr(&stop));
    let _ = finish(slow);
}

#[test]
fn an_ask_survives_a_sigkill_of_the_supervisor_and_a_new_run_picks_the_answer_up() {
    let p = Project::new();
    p.fake_agent(
        &format!(
            "=== call 1\nrun {} ask \"Keep the v1 API?\" --choice yes --choice no\nsleep 30\n=== default\necho-prompt\n",
            looper_path()
        ),
        "max_loops = 1",
    );
    let mut first = spawn(&p, &[]);
    assert!(wait_until(20.0, || p.run_dirs().last().is_some_and(|r| {
        read_events(r).iter().any(|e| e["event"] == "ask_opened")
    })));
    let old_run = p.last_run();
    // SIGKILL: nothing records the end; the guard takes the agent down with it.
    first.kill().expect("kill");
    let _ = first.wait();
    let pgid = live_state(&p).and_then(|s| s["child_pgid"].as_i64());
    if let Some(pgid) = pgid {
        assert!(wait_until(10.0, || !group_alive(pgid)), "agent group gone");
    }
    // The person answers the dead run's question (it is still listed as active: stale).
    let answered = cmd(&p, &["answer", "no"]);
    assert!(answered.status.success(), "{}", stderr(&answered));
    // A new run in the same project takes the ask over with its answer.
    let out = p.run(&[]);
    assert!(out.status.success(), "{}", diagnose(&p, &out));
    let new_run = p.last_run();
    assert_ne!(new_run, old_run);
    let prompt = log_of(&new_run, 1);
    assert!(
        prompt.contains("You asked: Keep the v1 API?") && prompt.contains("The answer: no"),
        "{prompt}"
    );
    let events = read_events(&new_run);
    let opened = events
        .iter()
        .find(|e| e["event"] == "ask_opened")
        .expect("carried ask");
    assert_eq!(
        opened["carried_from"].as_str(),
        Some(old_run.display().to_string().as_str())
    );
    assert!(events.iter().any(|e| e["event"] == "ask_answered"));
    assert!(!events.iter().any(|e| e["event"] == "waiting_for_answer"));
    // Carried once: a third run finds nothing to take.
    let third = p.run(&[]);
    assert!(third.status.success());
    assert!(
        !read_events(&p.last_run())
            .iter()
            .any(|e| e["event"] == "ask_opened")
    );
}

#[test]
fn an_unanswered_ask_of_a_killed_run_holds_the_next_run_until_answered() {
    let p = Project::new();
    p.fake_agent(
        &format!(
            "=== call 1\nrun {} ask \"Which branch?\"\nsleep 30\n=== default\necho-prompt\n",
            looper_path()
        ),
        "max_loops = 1",
    );
    let mut first = spawn(&p, &[]);
    assert!(wait_until(20.0, || p.run_dirs().last().is_some_and(|r| {
        read_events(r).iter().any(|e| e["event"] == "ask_opened")
    })));
    first.kill().expect("kill");
    let _ = first.wait();
    let second = spawn(&p, &[]);
    assert!(wait_until(20.0, || p.run_dirs().len() == 2));
    assert!(wait_status(&p, "waiting_for_answer"));
    // The new run is the one waiting; the answer goes to it.
    let answered = cmd(&p, &["answer", "main"]);
    assert!(answered.status.success(), "{}", stderr(&answered));
    let out = finish(second);
    assert!(out.status.success(), "{}", diagnose(&p, &out));
    assert!(log_of(&p.last_run(), 1).contains("The answer: main"));
}

#[test]
fn ask_outside_a_run_and_its_timeout_have_documented_exit_codes() {
    let p = Project::new();
    let out = p
        .looper()
        .env_remove("LOOPER_RUN_DIR")
        .env_remove("CODEX_LOOPER_RUN_DIR")
        .args(["ask", "hello?"])
        .output()
        .expect("ask");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("LOOPER_RUN_DIR"), "{}", stderr(&out));
    // A run to ask in: the agent waits with a short timeout and reports 124.
    p.fake_agent(
        &format!(
            "=== default\nrun {} ask --wait --timeout 0.5 \"quick?\"\n",
            looper_path()
        ),
        "max_loops = 1\n\n[human]\non_ask = \"continue\"",
    );
    let out = p.run(&[]);
    assert!(out.status.success(), "{}", diagnose(&p, &out));
    let log = log_of(&p.last_run(), 1);
    assert!(log.contains("exit: 124"), "{log}");
}

mod mcp {
    use super::*;
    use rmcp::ServiceExt;
    use rmcp::model::CallToolRequestParams;
    use rmcp::transport::TokioChildProcess;

    async fn call(
        client: &rmcp::service::RunningService<rmcp::RoleClient, ()>,
        name: &'static str,
        args: Json,
    ) -> (bool, String) {
        let mut params = CallToolRequestParams::new(name);
        params.arguments = args.as_object().cloned();
        let r = client
            .call_tool(params)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let text: String = r
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.clone()))
            .collect::<Vec<_>>()
            .join("\n");
        (r.is_error != Some(true), text)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_mcp_client_lists_the_tools_and_calls_each() {
        let p = Project::new();
        p.fake_agent(
            "=== default\necho-prompt\nsay EXIT_SIGNAL: true\n",
            "completion_enabled = true\n\n[human]\nrequire_approval = [\"completion\"]",
        );
        let child = spawn(&p, &["--label", "mcp"]);
        assert!(wait_status(&p, "waiting_for_approval"));

        let mut server = tokio::process::Command::new(looper_bin());
        server
            .arg("mcp")
            .current_dir(p.path())
            .env("XDG_STATE_HOME", p.join(".xdg-state"))
            .env_remove("LOOPER_RUN_DIR");
        let client =
            ().serve(TokioChildProcess::new(server).expect("spawn looper mcp"))
                .await
                .expect("initialize");
        let info = client.peer_info().expect("server info");
        assert_eq!(
            info.server_info.as_ref().map(|i| i.name.as_str()),
            Some("looper")
        );

        let tools = client.list_all_tools().await.expect("list tools");
        let mut names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "answer",
                "approve",
                "ask",
                "control",
                "list_runs",
                "read_log",
                "reject",
                "show_run",
                "wait"
            ]
        );

        let (ok, text) = call(&client, "list_runs", serde_json::json!({})).await;
        assert!(ok && text.contains("\"waiting_for_approval\""), "{text}");
        let (ok, text) = call(&client, "show_run", serde_json::json!({"target": "mcp"})).await;
        assert!(ok && text.contains("\"approval\""), "{text}");
        let (ok, text) = call(&client, "read_log", serde_json::json!({"target": "mcp"})).await;
        assert!(ok && text.contains("EXIT_SIGNAL: true"), "{text}");
        // A wait returns "needs input" while the run waits for a person.
        let (ok, text) = call(
            &client,
            "wait",
            serde_json::json!({"target": "mcp", "timeout_seconds": 10}),
        )
        .await;
        assert!(ok && text.contains("\"needs_input\""), "{text}");
        // Ask in the run (on behalf of its agent), answer it.
        let (ok, text) = call(
            &client,
            "ask",
            serde_json::json!({"target": "mcp", "question": "tabs or spaces?", "choices": ["tabs", "spaces"]}),
        )
        .await;
        assert!(ok && text.contains("tabs or spaces?"), "{text}");
        let (ok, text) = call(
            &client,
            "answer",
            serde_json::json!({"target": "mcp", "text": "spaces"}),
        )
        .await;
        assert!(ok && text.contains("\"spaces\""), "{text}");
        let (ok, text) = call(
            &client,
            "control",
            serde_json::json!({"target": "mcp", "action": "note", "note": "keep commits small"}),
        )
        .await;
        assert!(ok && text.contains("queued note"), "{text}");
        let (ok, text) = call(&client, "reject", serde_json::json!({"target": "mcp"})).await;
        assert!(
            !ok && text.contains("--reason"),
            "a rejection needs a reason: {text}"
        );
        let (ok, text) = call(
            &client,
            "reject",
            serde_json::json!({"target": "mcp", "reason": "needs a changelog entry"}),
        )
        .await;
        assert!(ok, "{text}");
        // Loop 2 asks for the approval again; approve it and wait for the end.
        let (ok, text) = call(
            &client,
            "wait",
            serde_json::json!({"target": "mcp", "until": "stopped", "timeout_seconds": 20}),
        )
        .await;
        assert!(ok && text.contains("\"needs_input\""), "{text}");
        let (ok, text) = call(&client, "approve", serde_json::json!({"target": "mcp"})).await;
        assert!(ok, "{text}");
        let (ok, text) = call(
            &client,
            "wait",
            serde_json::json!({"target": "mcp", "until": "stopped", "timeout_seconds": 20}),
        )
        .await;
        assert!(ok && text.contains("\"reached\""), "{text}");
        let _ = client.cancel().await;

        let out = finish(child);
        assert!(out.status.success(), "{}", diagnose(&p, &out));
        assert_eq!(p.state()["stop_reason"], "completion marker");
        let second = log_of(&p.last_run(), 2);
        for part in [
            "needs a changelog entry",
            "keep commits small",
            "The answer: spaces",
        ] {
            assert!(second.contains(part), "{part}: {second}");
        }
    }

    #[test]
    fn the_real_claude_cli_sees_looper_mcp_connected() {
        let Some(bin) = crate::e2e_support::require(
            "human::mcp::the_real_claude_cli_sees_looper_mcp_connected",
        ) else {
            return;
        };
        let p = Project::new();
        let home = p.join("home");
        std::fs::create_dir_all(&home).expect("home");
        let claude = bin.join("claude");
        let run = |args: &[&str]| {
            let child = std::process::Command::new(&claude)
                .args(args)
                .current_dir(p.path())
                .env("HOME", &home)
                .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
                .env("DISABLE_AUTOUPDATER", "1")
                .env("ANTHROPIC_API_KEY", "sk-test-key-for-mcp-list-0000000000")
                .env("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
                .env_remove("CLAUDE_CONFIG_DIR")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("claude");
            crate::e2e_support::wait_with_deadline(child, Duration::from_secs(90))
                .expect("claude ended")
        };
        let looper = looper_path();
        let added = run(&[
            "mcp", "add", "--scope", "user", "looper", "--", &looper, "mcp",
        ]);
        assert!(
            added.status.success(),
            "{}\n{}",
            stdout(&added),
            stderr(&added)
        );
        let listed = run(&["mcp", "list"]);
        let text = stdout(&listed);
        let line = text
            .lines()
            .find(|l| l.starts_with("looper"))
            .unwrap_or_else(|| panic!("no looper server in:\n{text}\n{}", stderr(&listed)));
        assert!(line.contains("Connected"), "{text}\n{}", stderr(&listed));
    }
}

//! The hybrid interface with the real claude and codex TUIs in a private tmux server,
//! against the mock model server: the prompt is pasted, the turn ends from the transcript, a
//! prompt that contains the marker does not complete on its own, a reply that carries it
//! does; a codex rate limit is retried in the same session; a screen that needs the user
//! stops the run with an explanation.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value as Json;

use crate::mock_server::{MockServer, Provider, Reply};

use crate::support::*;

/// The installed CLI, or `None` after the tier's loud skip (a failure in CI).
fn cli_bin(name: &str) -> Option<PathBuf> {
    crate::e2e_support::require(&format!("hybrid_{name}")).map(|dir| dir.join(name))
}

fn has_tmux() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A private tmux server: its own socket directory, killed on drop.
struct Tmux {
    dir: tempfile::TempDir,
}

impl Tmux {
    fn new() -> Self {
        Tmux {
            dir: tempfile::tempdir().expect("tmux dir"),
        }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.env("TMUX_TMPDIR", self.dir.path())
            .env_remove("TMUX")
            .env_remove("TMUX_PANE");
        c
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}

/// The looper's outcome in a private tmux session: its exit code (`None` if it did not
/// finish within 120 s) and what its pane showed.
struct TmuxRun {
    exit: Option<String>,
    pane: String,
}

/// Run `looper --local <args>` in `p` inside a new session of `tmux`, as a user would.
fn run_in_tmux(tmux: &Tmux, p: &Project, args: &str) -> TmuxRun {
    start_in_tmux(tmux, p, args);
    wait_in_tmux(tmux, p)
}

fn start_in_tmux(tmux: &Tmux, p: &Project, args: &str) {
    let done = p.join("looper.exit");
    let script = format!(
        "cd {:?} && {:?} --local {args}; echo $? > {:?}",
        p.path(),
        looper_bin(),
        done
    );
    let out = tmux
        .cmd()
        .args([
            "new-session",
            "-d",
            "-s",
            "hy",
            "-x",
            "200",
            "-y",
            "50",
            "sh",
            "-c",
            &script,
        ])
        .env("XDG_STATE_HOME", p.join(".xdg-state"))
        .output()
        .expect("tmux new-session");
    assert!(out.status.success(), "{}", stderr(&out));
}

fn wait_in_tmux(tmux: &Tmux, p: &Project) -> TmuxRun {
    let done = p.join("looper.exit");
    // `echo $? > file` creates the file before it writes the code: wait for the whole line.
    let finished = wait_until(120.0, || {
        std::fs::read_to_string(&done).is_ok_and(|t| t.ends_with('\n'))
    });
    let pane = tmux
        .cmd()
        .args(["capture-pane", "-p", "-t", "hy"])
        .output()
        .map(|o| stdout(&o))
        .unwrap_or_default();
    TmuxRun {
        exit: finished.then(|| {
            std::fs::read_to_string(&done)
                .unwrap_or_default()
                .trim()
                .to_string()
        }),
        pane,
    }
}

fn panes(tmux: &Tmux) -> String {
    tmux.cmd()
        .args(["list-panes", "-a", "-F", "#{pane_id}"])
        .output()
        .map(|o| stdout(&o))
        .unwrap_or_default()
}

fn claude_home(home: &Path, work: &Path, key: &str) {
    std::fs::create_dir_all(home).expect("home");
    let cfg = serde_json::json!({
        "hasCompletedOnboarding": true,
        "theme": "dark",
        "projects": { work.display().to_string(): { "hasTrustDialogAccepted": true, "hasCompletedProjectOnboarding": true } },
        "customApiKeyResponses": { "approved": [key[key.len() - 20..].to_string()], "rejected": [] },
    });
    std::fs::write(home.join(".claude.json"), cfg.to_string()).expect("claude.json");
}

#[test]
fn hybrid_claude_completes_on_the_reply_not_on_the_prompt() {
    let Some(claude) = cli_bin("claude") else {
        return;
    };
    assert!(has_tmux(), "tmux is required (scripts/test installs it)");
    let server = MockServer::start();
    server.push(
        Provider::Anthropic,
        Reply::text("Still working.\nEXIT_SIGNAL: false"),
    );
    server.push(
        Provider::Anthropic,
        Reply::text("All done.\nEXIT_SIGNAL: true"),
    );
    let p = Project::new();
    let home = p.join("home");
    let key = "sk-ant-api03-test-0123456789abcdefghijklmnop";
    claude_home(&home, p.path(), key);
    std::fs::create_dir_all(p.join("tmp")).expect("tmp");
    p.write(
        "PROMPT.md",
        "Finish the task. End with EXIT_SIGNAL: true only when done.",
    );
    p.write(
        "agent-looper.toml",
        &format!(
            "[looper]\ndefault_agent = \"claude\"\nsleep_seconds = 0\ntimeout_seconds = 60\n\n[agents.claude]\nkind = \"claude\"\ninterface = \"hybrid\"\nexecutable = {:?}\nenv = {{ HOME = {:?}, ANTHROPIC_BASE_URL = {:?}, ANTHROPIC_API_KEY = {:?}, CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = \"1\", DISABLE_AUTOUPDATER = \"1\", CLAUDE_CODE_MAX_RETRIES = \"0\", TMPDIR = {:?} }}\n",
            claude.display().to_string(),
            home.display().to_string(),
            server.base_url(),
            key,
            p.join("tmp").display().to_string(),
        ),
    );
    let tmux = Tmux::new();
    let run = run_in_tmux(
        &tmux,
        &p,
        "--max-loops 4 --complete-on 'EXIT_SIGNAL:\\s*true'",
    );
    assert_eq!(run.exit.as_deref(), Some("0"), "{}", run.pane);
    let st = p.state();
    assert_eq!(st["stop_reason"], "completion marker", "{st}");
    assert_eq!(
        st["current_loop"], 2,
        "loop 1's reply said false; the prompt's own marker did not count"
    );
    assert!(
        st["hybrid_pane_id"]
            .as_str()
            .is_some_and(|id| id.starts_with('%')),
        "{st}"
    );
    let prompts = server.prompts(Provider::Anthropic);
    assert_eq!(prompts.len(), 2, "{prompts:?}");
    assert!(
        prompts[0].contains("End with EXIT_SIGNAL: true only when done."),
        "{prompts:?}"
    );
    // The pane is killed at the end of the run.
    let panes = panes(&tmux);
    assert!(
        !panes.contains(st["hybrid_pane_id"].as_str().unwrap_or("?")),
        "{panes}"
    );
}

/// A project whose `claude` agent is the real CLI in a hybrid pane, talking to `server`.
fn claude_hybrid_project(server: &MockServer, claude: &Path) -> Project {
    let p = Project::new();
    let home = p.join("home");
    let key = "sk-ant-api03-test-0123456789abcdefghijklmnop";
    claude_home(&home, p.path(), key);
    std::fs::create_dir_all(p.join("tmp")).expect("tmp");
    p.write("PROMPT.md", "Work on the task.");
    p.write(
        "agent-looper.toml",
        &format!(
            "[looper]\ndefault_agent = \"claude\"\nsleep_seconds = 0\ntimeout_seconds = 60\n\n[agents.claude]\nkind = \"claude\"\ninterface = \"hybrid\"\nexecutable = {:?}\nenv = {{ HOME = {:?}, ANTHROPIC_BASE_URL = {:?}, ANTHROPIC_API_KEY = {:?}, CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = \"1\", DISABLE_AUTOUPDATER = \"1\", CLAUDE_CODE_MAX_RETRIES = \"0\", TMPDIR = {:?} }}\n",
            claude.display().to_string(),
            home.display().to_string(),
            server.base_url(),
            key,
            p.join("tmp").display().to_string(),
        ),
    );
    p
}

/// Issue 14 item 10: with claude's hybrid interface usage was never counted
/// (`usage_total: null`), so `max_tokens` never tripped.
#[test]
fn hybrid_claude_usage_is_counted_and_trips_the_token_budget() {
    let Some(claude) = cli_bin("claude") else {
        return;
    };
    assert!(has_tmux(), "tmux is required (scripts/test installs it)");
    let server = MockServer::start();
    for _ in 0..3 {
        server.push(Provider::Anthropic, Reply::text("Still working."));
    }
    let p = claude_hybrid_project(&server, &claude);
    let tmux = Tmux::new();
    let run = run_in_tmux(&tmux, &p, "--max-loops 3 --max-tokens 1");
    assert_eq!(run.exit.as_deref(), Some("3"), "{}", run.pane);
    let st = p.state();
    assert!(
        st["stop_reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("token budget reached")),
        "{st}"
    );
    assert_eq!(st["current_loop"], 1, "{st}");
    assert!(
        st["usage_total"]["input_tokens"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{st}"
    );
}

/// Issue 14 item 7: `control note --delivery btw` pasted into the pane at once, without the
/// supervisor: landing while a new pane was starting, it took the place of the loop's prompt
/// and the run died. Now the supervisor pastes it between turns and acknowledges it.
#[test]
fn hybrid_claude_btw_notes_go_through_the_supervisor_between_turns() {
    let Some(claude) = cli_bin("claude") else {
        return;
    };
    assert!(has_tmux(), "tmux is required (scripts/test installs it)");
    let server = MockServer::start();
    for _ in 0..4 {
        server.push(Provider::Anthropic, Reply::text("Working on it."));
    }
    let p = claude_hybrid_project(&server, &claude);
    let tmux = Tmux::new();
    start_in_tmux(&tmux, &p, "--max-loops 2 --sleep 3");
    // As soon as the pane exists (its TUI still starting), send the note from another shell.
    assert!(
        wait_until(30.0, || p.run_dirs().len() == 1
            && std::fs::read(p.last_run().join("state.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<Json>(&b).ok())
                .is_some_and(|s| s["hybrid_pane_id"].is_string())),
        "the pane started"
    );
    let note = p
        .looper()
        .args([
            "control",
            "note",
            "--delivery",
            "btw",
            "--note",
            "mind the docs",
        ])
        .env_remove("TMUX")
        .env_remove("TMUX_PANE")
        .output()
        .expect("note");
    assert_eq!(
        note.status.code(),
        Some(0),
        "{}{}",
        stdout(&note),
        stderr(&note)
    );
    assert!(
        stdout(&note).contains("pasted into pane %"),
        "{}",
        stdout(&note)
    );
    let run = wait_in_tmux(&tmux, &p);
    assert_eq!(run.exit.as_deref(), Some("0"), "{}", run.pane);
    assert_eq!(p.state()["stop_reason"], "max loops reached: 2");
    let prompts = server.prompts(Provider::Anthropic);
    let loop_prompts = prompts
        .iter()
        .filter(|t| t.contains("Work on the task."))
        .count();
    assert!(
        loop_prompts >= 2,
        "both loops' prompts reached the model: {prompts:?}"
    );
    let notes = std::fs::read_to_string(p.last_run().join("operator_notes.jsonl")).expect("notes");
    assert!(notes.contains("\"status\":\"delivered\""), "{notes}");
}

/// A claude.ai login whose 5-hour limit is reached on the first turn and resets 8 s later
/// (claude reads the unified rate-limit headers only when signed in, so the test signs in
/// with an OAuth token): the looper waits for the reset and sends exactly one next prompt.
/// claude 2.1.332 would also continue by itself at the reset (on by default); a looper pane
/// turns that off, and its usage-limit dialog is dismissed. The failed turn writes no
/// `turn_duration` on 2.1.332: it ends on its API-error record.
#[test]
fn hybrid_claude_usage_limit_reset_gets_exactly_one_next_prompt() {
    use crate::mock_server::rate_limit_headers::{self, ClaudeWindow};
    let Some(claude) = cli_bin("claude") else {
        return;
    };
    assert!(has_tmux(), "tmux is required (scripts/test installs it)");
    let server = MockServer::start();
    let reset = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + 8;
    server.push(
        Provider::Anthropic,
        Reply::status(429, None).with_headers(rate_limit_headers::claude(
            "rejected",
            "five_hour",
            reset,
            &[ClaudeWindow {
                abbrev: "5h",
                utilization: 1.0,
                resets_at: reset,
            }],
        )),
    );
    server.set_default(
        Provider::Anthropic,
        Reply::text("Continued after the reset.\nEXIT_SIGNAL: true"),
    );
    let p = Project::new();
    let home = p.join("home");
    std::fs::create_dir_all(&home).expect("home");
    let cfg = serde_json::json!({
        "hasCompletedOnboarding": true,
        "theme": "dark",
        "projects": { p.path().display().to_string(): { "hasTrustDialogAccepted": true, "hasCompletedProjectOnboarding": true } },
    });
    std::fs::write(home.join(".claude.json"), cfg.to_string()).expect("claude.json");
    std::fs::create_dir_all(p.join("tmp")).expect("tmp");
    p.write(".gitignore", "home/\ntmp/\n");
    p.write(
        "PROMPT.md",
        "Finish the task. End with EXIT_SIGNAL: true when done.",
    );
    p.write(
        "agent-looper.toml",
        &format!(
            "[looper]\ndefault_agent = \"claude\"\nsleep_seconds = 0\ntimeout_seconds = 60\nrate_limit_max_wait_seconds = 60\n\n[agents.claude]\nkind = \"claude\"\ninterface = \"hybrid\"\nexecutable = {:?}\nenv = {{ HOME = {:?}, ANTHROPIC_BASE_URL = {:?}, CLAUDE_CODE_OAUTH_TOKEN = \"sk-ant-oat01-mock-token\", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = \"1\", DISABLE_AUTOUPDATER = \"1\", CLAUDE_CODE_MAX_RETRIES = \"0\", TMPDIR = {:?} }}\n",
            claude.display().to_string(),
            home.display().to_string(),
            server.base_url(),
            p.join("tmp").display().to_string(),
        ),
    );
    let tmux = Tmux::new();
    start_in_tmux(
        &tmux,
        &p,
        "--max-loops 3 --complete-on 'EXIT_SIGNAL:\\s*true'",
    );
    // While the run waits for the reset, the limit claude reported is in the state and in
    // `looper status` (issue 18 item 1).
    let live = || {
        p.run_dirs()
            .pop()
            .and_then(|d| std::fs::read(d.join("state.json")).ok())
            .and_then(|b| serde_json::from_slice::<Json>(&b).ok())
    };
    let waiting = wait_until(60.0, || {
        live().is_some_and(|s| s["status"] == "retrying" && s["account_limit"]["until"].is_string())
    });
    let table = stdout(&p.looper().arg("status").output().expect("status"));
    let run = wait_in_tmux(&tmux, &p);
    let events = p.events();
    let why = format!("{}\n{events:#?}\n--- status\n{table}", run.pane);
    assert!(waiting, "the wait never had the account's limit: {why}");
    assert!(table.contains("account claude:"), "{why}");
    assert!(table.contains("limited until"), "{why}");
    assert_eq!(run.exit.as_deref(), Some("0"), "{why}");
    let st = p.state();
    assert_eq!(st["stop_reason"], "completion marker", "{st}");
    let recorded: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "account_limit_recorded")
        .collect();
    assert_eq!(recorded.len(), 1, "{why}");
    // 2.1.332 says which window and when it resets; 2.1.197 only words the reset.
    if let Some(w) = st["rate_limits"].as_array() {
        assert_eq!(w[0]["window"], "five_hour", "{st}");
        assert_eq!(w[0]["status"], "rejected", "{st}");
    }
    assert_eq!(st["current_loop"], 1, "the retry is loop 1's: {st}");
    let waits: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "retry_wait")
        .collect();
    assert_eq!(waits.len(), 1, "{why}");
    assert_eq!(waits[0]["retry_kind"], "rate_limit", "{why}");
    // Exactly one next prompt: the looper's, after the reset; none of claude's own.
    let turns = server.turns(Provider::Anthropic);
    assert_eq!(
        turns.len(),
        2,
        "{:?}",
        turns.iter().map(|t| (t.at, t.prompt())).collect::<Vec<_>>()
    );
    assert_eq!(
        turns[1].prompt().as_deref(),
        Some("Finish the task. End with EXIT_SIGNAL: true when done."),
        "the next prompt is the looper's"
    );
    // The reset is 7 to 8 s after the server started (epoch seconds, cut down). 2.1.332
    // says when exactly; 2.1.197 only shows the clock to the minute, waited to its end.
    assert!(
        turns[1].at >= std::time::Duration::from_secs(7),
        "the next prompt waited for the reset: {:?} then {:?}",
        turns[0].at,
        turns[1].at
    );
    let started: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "hybrid_pane_started")
        .collect();
    assert_eq!(started.len(), 1, "the retry stayed in the pane: {why}");
    assert!(
        started[0]["argv"]
            .to_string()
            .contains("autoContinueAtUsageLimit"),
        "{why}"
    );
}

/// A codex set-up isolated in `p`: `CODEX_HOME` with the mock provider (no retries of its
/// own, no update check), the project trusted unless `trusted` is false, and the
/// `[agents.codex]` table of a hybrid run.
fn codex_project(server: &MockServer, codex: &Path, trusted: bool) -> Project {
    let p = Project::new();
    let codex_home = p.join("codex-home");
    std::fs::create_dir_all(&codex_home).expect("codex home");
    std::fs::create_dir_all(p.join("tmp")).expect("tmp");
    let mut cfg = format!(
        "model = \"mock-model\"\nmodel_provider = \"mock\"\ncheck_for_update_on_startup = false\n\n[analytics]\nenabled = false\n\n[model_providers.mock]\nname = \"mock\"\nbase_url = {:?}\nwire_api = \"responses\"\nenv_key = \"MOCK_API_KEY\"\nrequest_max_retries = 0\nstream_max_retries = 0\n\n[features]\nplugins = false\n",
        format!("{}/v1", server.base_url())
    );
    if trusted {
        cfg.push_str(&format!(
            "\n[projects.{:?}]\ntrust_level = \"trusted\"\n",
            p.path().display().to_string()
        ));
    }
    std::fs::write(codex_home.join("config.toml"), cfg).expect("codex config");
    // The codex home is inside the work tree: keep it out of git's view.
    p.write(".gitignore", "codex-home/\ntmp/\nhome/\n");
    p.write(
        "PROMPT.md",
        "Finish the task. End with EXIT_SIGNAL: true only when done.",
    );
    p.write(
        "agent-looper.toml",
        &format!(
            "[looper]\ndefault_agent = \"codex\"\nsleep_seconds = 0\nretry_backoff_base_seconds = 0.2\ntimeout_seconds = 60\n\n[agents.codex]\nkind = \"codex\"\ninterface = \"hybrid\"\nexecutable = {:?}\nenv = {{ HOME = {:?}, CODEX_HOME = {:?}, MOCK_API_KEY = \"mock-key\", TMPDIR = {:?}, NO_PROXY = \"127.0.0.1,localhost\" }}\n",
            codex.display().to_string(),
            p.join("home").display().to_string(),
            codex_home.display().to_string(),
            p.join("tmp").display().to_string(),
        ),
    );
    p
}

/// The codex scenario most tests share: a trusted project whose model answers
/// `EXIT_SIGNAL: false`, then `EXIT_SIGNAL: true`. `None` after the tier's loud skip.
fn codex_two_loops() -> Option<(MockServer, Project)> {
    let codex = cli_bin("codex")?;
    assert!(has_tmux(), "tmux is required (scripts/test installs it)");
    let server = MockServer::start();
    server.push(
        Provider::OpenAi,
        Reply::text("Still working.\nEXIT_SIGNAL: false"),
    );
    server.push(
        Provider::OpenAi,
        Reply::text("All done.\nEXIT_SIGNAL: true"),
    );
    let p = codex_project(&server, &codex, true);
    Some((server, p))
}

/// No process of the project's codex is left (only codex and its children carry its
/// `CODEX_HOME`): no pane, no background server.
fn assert_no_codex_left(p: &Project) {
    let entry = format!("CODEX_HOME={}", p.join("codex-home").display());
    let left = || crate::e2e_support::processes_with_env(&entry);
    assert!(
        wait_until(5.0, || left().is_empty()),
        "codex processes outlived the run: {:?}",
        left()
    );
}

#[test]
fn hybrid_codex_completes_on_the_reply_and_retries_a_rate_limit_in_the_same_session() {
    let Some(codex) = cli_bin("codex") else {
        return;
    };
    assert!(has_tmux(), "tmux is required (scripts/test installs it)");
    let server = MockServer::start();
    server.push(
        Provider::OpenAi,
        Reply::text("Still working.\nEXIT_SIGNAL: false"),
    );
    server.push(Provider::OpenAi, Reply::status(429, None));
    server.push(
        Provider::OpenAi,
        Reply::text("All done.\nEXIT_SIGNAL: true"),
    );
    let p = codex_project(&server, &codex, true);
    let tmux = Tmux::new();
    let run = run_in_tmux(
        &tmux,
        &p,
        "--max-loops 4 --complete-on 'EXIT_SIGNAL:\\s*true'",
    );
    assert_eq!(run.exit.as_deref(), Some("0"), "{}", run.pane);

    let st = p.state();
    assert_eq!(st["stop_reason"], "completion marker", "{st}");
    assert_eq!(
        st["current_loop"], 2,
        "loop 1's reply said false; the prompt's own marker did not count"
    );
    let rate_limited: Vec<_> = p
        .events()
        .into_iter()
        .filter(|e| e["event"] == "prompt_completed" && e["retry_kind"] == "rate_limit")
        .collect();
    assert_eq!(rate_limited.len(), 1, "the 429 turn is a rate limit");

    // Three model turns: loop 1, loop 2, loop 2's retry. A fresh session per loop; the
    // retry goes back into loop 2's session (codex sends the thread id in `session-id`).
    let turns = server.turns(Provider::OpenAi);
    assert_eq!(turns.len(), 3, "{:?}", server.prompts(Provider::OpenAi));
    let thread = |i: usize| turns[i].header("session-id").unwrap_or("?").to_string();
    assert_ne!(thread(0), thread(1), "loop 2 runs a new session");
    assert_eq!(thread(1), thread(2), "the retry resumes loop 2's session");
    assert!(
        turns[0]
            .prompt()
            .is_some_and(|t| t.contains("End with EXIT_SIGNAL: true only when done.")),
        "the prompt arrives whole"
    );
    // The state names the thread the rollout reported, and loop 2 had a pane of its own.
    assert_eq!(st["current_session_id"], thread(2).as_str(), "{st}");
    assert!(st["previous_hybrid_pane_id"].is_string(), "{st}");
    let pane_id = st["hybrid_pane_id"].as_str().unwrap_or("?").to_string();
    assert!(pane_id.starts_with('%'), "{st}");
    // One pane per loop: the retry stayed in loop 2's pane (which learnt its thread id
    // from the rollout), and each pane ran the TUI inline and without the daemon.
    let started = p
        .events()
        .into_iter()
        .filter(|e| e["event"] == "hybrid_pane_started")
        .collect::<Vec<_>>();
    assert_eq!(started.len(), 2, "{started:?}");
    assert_eq!(started[1]["pane_id"], pane_id.as_str());
    for e in &started {
        assert_eq!(e["tui"], "codex");
        assert_eq!(e["session_id"], serde_json::Value::Null, "a new session");
        let argv = e["argv"].to_string();
        assert!(
            argv.contains("--no-alt-screen") && argv.contains("--no-daemon"),
            "{argv}"
        );
    }
    let resets = p
        .events()
        .into_iter()
        .filter(|e| e["event"] == "hybrid_session_reset")
        .collect::<Vec<_>>();
    assert_eq!(resets.len(), 1, "{resets:?}");
    assert_eq!(resets[0]["previous_hybrid_pane_id"], started[0]["pane_id"]);

    // The attempt log holds the rollout records, the agent's reply among them.
    let all_logs: String = std::fs::read_dir(p.last_run())
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("loop-"))
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    assert!(all_logs.contains("task_complete"), "{all_logs:.2000}");
    // ... and `looper logs` renders loop 2's as its conversation.
    let out = Command::new(looper_bin())
        .args(["logs", "--run-dir"])
        .arg(p.last_run())
        .current_dir(p.path())
        .output()
        .expect("looper logs");
    let shown = stdout(&out);
    assert_eq!(
        shown
            .lines()
            .filter(|l| !l.starts_with("--"))
            .collect::<Vec<_>>(),
        [
            "error: exceeded retry limit, last status: 429 Too Many Requests",
            "All done.",
            "EXIT_SIGNAL: true"
        ],
        "{shown}"
    );

    // The pane is killed at the end, and no codex process outlives the run: no pane, and
    // no background server (`--no-daemon`).
    assert!(!panes(&tmux).contains(&pane_id), "{}", panes(&tmux));
    assert_no_codex_left(&p);
}

#[test]
fn hybrid_codex_in_an_untrusted_folder_stops_with_an_explanation() {
    let Some(codex) = cli_bin("codex") else {
        return;
    };
    assert!(has_tmux(), "tmux is required (scripts/test installs it)");
    let server = MockServer::start();
    let p = codex_project(&server, &codex, false);
    let tmux = Tmux::new();
    let run = run_in_tmux(&tmux, &p, "--max-loops 2");
    assert!(run.exit.is_some(), "the run hung: {}", run.pane);
    assert_ne!(run.exit.as_deref(), Some("0"), "{}", run.pane);
    let st = p.state();
    assert!(
        st["stop_reason"]
            .as_str()
            .is_some_and(|r| r.contains("trust") && r.contains("trust_level")),
        "{st}"
    );
    assert!(
        server.turns(Provider::OpenAi).is_empty(),
        "nothing was answered for the user"
    );
    assert_no_codex_left(&p);
}

#[test]
fn hybrid_codex_reused_session_keeps_one_pane_and_can_leave_it_open() {
    let Some((server, p)) = codex_two_loops() else {
        return;
    };
    let tmux = Tmux::new();
    let run = run_in_tmux(
        &tmux,
        &p,
        "--max-loops 3 --reuse-session --keep-agent-pane --complete-on 'EXIT_SIGNAL:\\s*true'",
    );
    assert_eq!(run.exit.as_deref(), Some("0"), "{}", run.pane);
    let st = p.state();
    assert_eq!(st["stop_reason"], "completion marker", "{st}");
    assert_eq!(st["current_loop"], 2, "{st}");
    let started: Vec<_> = p
        .events()
        .into_iter()
        .filter(|e| e["event"] == "hybrid_pane_started")
        .collect();
    assert_eq!(
        started.len(),
        1,
        "one pane for the one session: {started:?}"
    );
    let turns = server.turns(Provider::OpenAi);
    assert_eq!(turns.len(), 2);
    assert_eq!(
        turns[0].header("session-id"),
        turns[1].header("session-id"),
        "loop 2 continued loop 1's thread"
    );
    // --keep-agent-pane: the TUI is still there, at its prompt.
    let pane_id = st["hybrid_pane_id"].as_str().unwrap_or("?").to_string();
    assert!(panes(&tmux).contains(&pane_id), "{}", panes(&tmux));
    let screen = tmux
        .cmd()
        .args(["capture-pane", "-p", "-t", &pane_id])
        .output()
        .map(|o| stdout(&o))
        .unwrap_or_default();
    assert!(screen.contains("All done."), "{screen}");
    drop(tmux);
    assert_no_codex_left(&p);
}

#[test]
fn hybrid_claude_start_up_dialogs_stop_the_run_with_an_explanation() {
    let Some(claude) = cli_bin("claude") else {
        return;
    };
    assert!(has_tmux(), "tmux is required (scripts/test installs it)");
    let key = "sk-ant-api03-test-0123456789abcdefghijklmnop";
    // (what claude.json leaves unanswered, the words the stop reason must carry)
    for (trusted, key_approved, want) in
        [(false, true, "trust this folder"), (true, false, "API key")]
    {
        let server = MockServer::start();
        let p = Project::new();
        let home = p.join("home");
        std::fs::create_dir_all(&home).expect("home");
        let approved: Vec<String> = if key_approved {
            vec![key[key.len() - 20..].to_string()]
        } else {
            vec![]
        };
        let cfg = serde_json::json!({
            "hasCompletedOnboarding": true,
            "theme": "dark",
            "projects": { p.path().display().to_string(): { "hasTrustDialogAccepted": trusted, "hasCompletedProjectOnboarding": true } },
            "customApiKeyResponses": { "approved": approved, "rejected": [] },
        });
        std::fs::write(home.join(".claude.json"), cfg.to_string()).expect("claude.json");
        std::fs::create_dir_all(p.join("tmp")).expect("tmp");
        p.write("PROMPT.md", "Say hello.");
        p.write(
            "agent-looper.toml",
            &format!(
                "[looper]\ndefault_agent = \"claude\"\nsleep_seconds = 0\ntimeout_seconds = 60\n\n[agents.claude]\nkind = \"claude\"\ninterface = \"hybrid\"\nexecutable = {:?}\nenv = {{ HOME = {:?}, ANTHROPIC_BASE_URL = {:?}, ANTHROPIC_API_KEY = {:?}, CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = \"1\", DISABLE_AUTOUPDATER = \"1\", TMPDIR = {:?} }}\n",
                claude.display().to_string(),
                home.display().to_string(),
                server.base_url(),
                key,
                p.join("tmp").display().to_string(),
            ),
        );
        let tmux = Tmux::new();
        let run = run_in_tmux(&tmux, &p, "--max-loops 2");
        assert!(run.exit.is_some(), "{want}: the run hung: {}", run.pane);
        assert_ne!(run.exit.as_deref(), Some("0"), "{want}: {}", run.pane);
        let st = p.state();
        assert!(
            st["stop_reason"]
                .as_str()
                .is_some_and(|r| r.contains("claude is asking") && r.contains(want)),
            "{want}: {st}"
        );
        assert!(
            server.turns(Provider::Anthropic).is_empty(),
            "{want}: nothing was answered for the user"
        );
    }
}

/// claude 2.1.332 draws its full-screen renderer on the alternate screen by default (no
/// scrollback in the pane); a looper pane keeps the classic renderer (`--settings`).
#[test]
fn hybrid_claude_pane_keeps_the_classic_renderer() {
    let Some(claude) = cli_bin("claude") else {
        return;
    };
    assert!(has_tmux(), "tmux is required (scripts/test installs it)");
    let server = MockServer::start();
    server.push(
        Provider::Anthropic,
        Reply::text("All done.\nEXIT_SIGNAL: true"),
    );
    let p = Project::new();
    let home = p.join("home");
    let key = "sk-ant-api03-test-0123456789abcdefghijklmnop";
    claude_home(&home, p.path(), key);
    std::fs::create_dir_all(p.join("tmp")).expect("tmp");
    p.write("PROMPT.md", "Finish the task.");
    p.write(
        "agent-looper.toml",
        &format!(
            "[looper]\ndefault_agent = \"claude\"\nsleep_seconds = 0\ntimeout_seconds = 60\n\n[agents.claude]\nkind = \"claude\"\ninterface = \"hybrid\"\nexecutable = {:?}\nenv = {{ HOME = {:?}, ANTHROPIC_BASE_URL = {:?}, ANTHROPIC_API_KEY = {:?}, CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = \"1\", DISABLE_AUTOUPDATER = \"1\", CLAUDE_CODE_MAX_RETRIES = \"0\", TMPDIR = {:?} }}\n",
            claude.display().to_string(),
            home.display().to_string(),
            server.base_url(),
            key,
            p.join("tmp").display().to_string(),
        ),
    );
    let tmux = Tmux::new();
    let run = run_in_tmux(
        &tmux,
        &p,
        "--max-loops 2 --keep-agent-pane --complete-on 'EXIT_SIGNAL:\\s*true'",
    );
    assert_eq!(run.exit.as_deref(), Some("0"), "{}", run.pane);
    let pane = p.state()["hybrid_pane_id"]
        .as_str()
        .unwrap_or("?")
        .to_string();
    let show = |fmt: &str| {
        tmux.cmd()
            .args(["display-message", "-p", "-t", &pane, fmt])
            .output()
            .map(|o| stdout(&o).trim().to_string())
            .unwrap_or_default()
    };
    assert_eq!(show("#{pane_id}"), pane, "the pane was kept");
    assert_eq!(
        show("#{alternate_on}"),
        "0",
        "the pane is on the alternate screen"
    );
    let screen = tmux
        .cmd()
        .args(["capture-pane", "-p", "-t", &pane])
        .output()
        .map(|o| stdout(&o))
        .unwrap_or_default();
    assert!(screen.contains("All done."), "{screen}");
}

/// Trust given to the folder above the project's git repository: claude 2.1.197 takes it
/// for the repository too; 2.1.332 asks again for the repository (its trust stops at the
/// repository's top), and the run stops with an explanation that says so, never hangs.
#[test]
fn hybrid_claude_trust_of_a_parent_folder_per_version() {
    let Some(claude) = cli_bin("claude") else {
        return;
    };
    assert!(has_tmux(), "tmux is required (scripts/test installs it)");
    let version = Command::new(&claude)
        .arg("--version")
        .output()
        .map(|o| stdout(&o))
        .unwrap_or_default();
    let per_repository = version
        .split_whitespace()
        .next()
        .and_then(|v| {
            let mut it = v.split('.').map(|n| n.parse::<u32>().unwrap_or(0));
            Some((it.next()?, it.next()?, it.next()?))
        })
        .is_some_and(|v| v >= (2, 1, 332));
    let server = MockServer::start();
    server.push(Provider::Anthropic, Reply::text("Done.\nEXIT_SIGNAL: true"));
    let p = Project::new();
    let parent = p.path().parent().expect("parent").to_path_buf();
    let home = p.join("home");
    let key = "sk-ant-api03-test-0123456789abcdefghijklmnop";
    std::fs::create_dir_all(&home).expect("home");
    let cfg = serde_json::json!({
        "hasCompletedOnboarding": true,
        "theme": "dark",
        "projects": { parent.display().to_string(): { "hasTrustDialogAccepted": true, "hasCompletedProjectOnboarding": true } },
        "customApiKeyResponses": { "approved": [key[key.len() - 20..].to_string()], "rejected": [] },
    });
    std::fs::write(home.join(".claude.json"), cfg.to_string()).expect("claude.json");
    std::fs::create_dir_all(p.join("tmp")).expect("tmp");
    p.write(".gitignore", "home/\ntmp/\n");
    p.write("PROMPT.md", "Say hello.");
    p.write(
        "agent-looper.toml",
        &format!(
            "[looper]\ndefault_agent = \"claude\"\nsleep_seconds = 0\ntimeout_seconds = 60\n\n[agents.claude]\nkind = \"claude\"\ninterface = \"hybrid\"\nexecutable = {:?}\nenv = {{ HOME = {:?}, ANTHROPIC_BASE_URL = {:?}, ANTHROPIC_API_KEY = {:?}, CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = \"1\", DISABLE_AUTOUPDATER = \"1\", CLAUDE_CODE_MAX_RETRIES = \"0\", TMPDIR = {:?} }}\n",
            claude.display().to_string(),
            home.display().to_string(),
            server.base_url(),
            key,
            p.join("tmp").display().to_string(),
        ),
    );
    let tmux = Tmux::new();
    let run = run_in_tmux(
        &tmux,
        &p,
        "--max-loops 2 --complete-on 'EXIT_SIGNAL:\\s*true'",
    );
    assert!(run.exit.is_some(), "the run hung: {}", run.pane);
    let st = p.state();
    if per_repository {
        assert_ne!(run.exit.as_deref(), Some("0"), "{version}: {}", run.pane);
        assert!(
            st["stop_reason"].as_str().is_some_and(
                |r| r.contains("trust this folder") && r.contains("each git repository")
            ),
            "{version}: {st}"
        );
        assert!(server.turns(Provider::Anthropic).is_empty(), "{version}");
    } else {
        assert_eq!(run.exit.as_deref(), Some("0"), "{version}: {}", run.pane);
        assert_eq!(st["stop_reason"], "completion marker", "{version}: {st}");
    }
}

#[test]
fn hybrid_codex_pane_closed_between_loops_is_reopened_on_the_same_thread() {
    let Some((server, p)) = codex_two_loops() else {
        return;
    };
    // Time between the loops to close the pane, as a user might.
    let cfg = std::fs::read_to_string(p.join("agent-looper.toml")).expect("config");
    p.write(
        "agent-looper.toml",
        &cfg.replace("sleep_seconds = 0", "sleep_seconds = 3"),
    );
    let tmux = Tmux::new();
    start_in_tmux(
        &tmux,
        &p,
        "--max-loops 3 --reuse-session --complete-on 'EXIT_SIGNAL:\\s*true'",
    );
    let loop_one_done = wait_until(60.0, || {
        p.run_dirs()
            .last()
            .is_some_and(|_| p.events().iter().any(|e| e["event"] == "loop_completed"))
    });
    assert!(loop_one_done, "loop 1 never completed");
    let first = p.state()["hybrid_pane_id"]
        .as_str()
        .unwrap_or("?")
        .to_string();
    let killed = tmux
        .cmd()
        .args(["kill-pane", "-t", &first])
        .output()
        .expect("kill-pane");
    assert!(killed.status.success(), "{}", stderr(&killed));

    let run = wait_in_tmux(&tmux, &p);
    assert_eq!(run.exit.as_deref(), Some("0"), "{}", run.pane);
    let st = p.state();
    assert_eq!(st["stop_reason"], "completion marker", "{st}");
    assert_eq!(st["current_loop"], 2, "{st}");
    let turns = server.turns(Provider::OpenAi);
    assert_eq!(turns.len(), 2);
    let thread = turns[0].header("session-id").unwrap_or("?").to_string();
    assert_eq!(
        turns[1].header("session-id"),
        Some(thread.as_str()),
        "the new pane resumed loop 1's thread"
    );
    let started: Vec<_> = p
        .events()
        .into_iter()
        .filter(|e| e["event"] == "hybrid_pane_started")
        .collect();
    assert_eq!(started.len(), 2, "{started:?}");
    assert_eq!(started[1]["session_id"], thread.as_str());
    let argv: Vec<String> = started[1]["argv"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(argv.get(1).map(String::as_str), Some("resume"), "{argv:?}");
    assert_eq!(argv.last(), Some(&thread), "{argv:?}");
    // One rollout: the resumed session appended to it, and loop 2 read only its own turn.
    let rollouts = std::fs::read_dir(p.join("codex-home/sessions"))
        .map(|_| {
            walk(&p.join("codex-home/sessions"))
                .into_iter()
                .filter(|f| f.to_string_lossy().ends_with(".jsonl"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(rollouts, 1);
    let loop2 =
        std::fs::read_to_string(p.last_run().join("loop-0002__prompt-001.log")).unwrap_or_default();
    assert!(loop2.contains("All done."), "{loop2:.2000}");
    assert!(
        !loop2.contains("Still working."),
        "loop 1's turn was read again"
    );
    assert_no_codex_left(&p);
}

/// Issue 18 item 4: a pane closed between loops whose processes outlive it (here a wrapper
/// that ignores the hangup tmux sends, as a child a TUI leaves behind might) still holds the
/// session: the looper ends them before it reopens the session in a new pane, so two
/// processes never continue one session, and nothing of the pane outlives the run.
#[test]
fn hybrid_codex_session_is_reopened_only_once_the_closed_panes_processes_are_gone() {
    use std::os::unix::fs::PermissionsExt;
    let Some((server, p)) = codex_two_loops() else {
        return;
    };
    let codex = cli_bin("codex").expect("codex");
    let pids = p.join("tmp/pane.pids");
    let overlap = p.join("tmp/overlap");
    // On start: any earlier pane's process still alive is an overlap.
    let wrapper = p.join("tmp/codex-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh
if [ -f {pids:?} ]; then for q in $(cat {pids:?}); do kill -0 \"$q\" 2>/dev/null && echo \"$q\" >> {overlap:?}; done; fi
echo $$ >> {pids:?}
trap '' HUP TERM
( trap - HUP TERM; exec {codex:?} \"$@\" )
exec sleep 60
"
        ),
    )
    .expect("wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let cfg = std::fs::read_to_string(p.join("agent-looper.toml")).expect("config");
    p.write(
        "agent-looper.toml",
        &cfg.replace(
            "sleep_seconds = 0",
            "sleep_seconds = 3\nterminate_grace_seconds = 1",
        )
        .replace(
            &format!("executable = {:?}", codex.display().to_string()),
            &format!("executable = {:?}", wrapper.display().to_string()),
        ),
    );
    let tmux = Tmux::new();
    start_in_tmux(
        &tmux,
        &p,
        "--max-loops 3 --reuse-session --complete-on 'EXIT_SIGNAL:\\s*true'",
    );
    assert!(
        wait_until(60.0, || p.run_dirs().last().is_some_and(|_| p
            .events()
            .iter()
            .any(|e| e["event"] == "loop_completed"))),
        "loop 1 never completed"
    );
    let first = p.state()["hybrid_pane_id"]
        .as_str()
        .unwrap_or("?")
        .to_string();
    let killed = tmux
        .cmd()
        .args(["kill-pane", "-t", &first])
        .output()
        .expect("kill-pane");
    assert!(killed.status.success(), "{}", stderr(&killed));
    let run = wait_in_tmux(&tmux, &p);
    let events = p.events();
    let why = format!("{}\n{events:#?}", run.pane);
    assert_eq!(run.exit.as_deref(), Some("0"), "{why}");
    assert_eq!(p.state()["stop_reason"], "completion marker", "{why}");
    let started: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "hybrid_pane_started")
        .collect();
    assert_eq!(started.len(), 2, "{why}");
    let first_pid = started[0]["pane_pid"].as_i64().expect("pid");
    let ended: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "session_holder_ended")
        .collect();
    assert!(!ended.is_empty(), "{why}");
    assert!(
        ended[0]["pids"]
            .to_string()
            .contains(&first_pid.to_string()),
        "the closed pane's process was ended: {why}"
    );
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    let end_at = names.iter().position(|n| *n == "session_holder_ended");
    let second_at = names
        .iter()
        .enumerate()
        .filter(|(_, n)| **n == "hybrid_pane_started")
        .nth(1)
        .map(|(i, _)| i);
    assert!(end_at < second_at, "ended before the new pane: {names:?}");
    assert!(
        !overlap.exists(),
        "the new pane started while the old one's process ran: {:?} ({why})",
        std::fs::read_to_string(&overlap)
    );
    // The second pane (closed at the run's end) left nothing either.
    assert_no_codex_left(&p);
    assert_eq!(server.turns(Provider::OpenAi).len(), 2, "{why}");
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Recording (not a test of the looper): `AGENT_LOOPER_RECORD_DIR=<dir> cargo test --test it
// hybrid::record_ -- --ignored --nocapture` runs the real claude TUI in a private tmux
// server against the mock server and writes its screens and transcript as fixtures.

mod record {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use super::{Tmux, cli_bin, has_tmux};
    use crate::mock_server::rate_limit_headers::{self, ClaudeWindow};
    use crate::mock_server::{MockServer, Provider, Reply};
    use crate::support::*;

    const KEY: &str = "sk-ant-api03-test-0123456789abcdefghijklmnop";

    fn out(name: &str, text: &str) {
        if let Some(dir) = std::env::var_os("AGENT_LOOPER_RECORD_DIR") {
            let dir = PathBuf::from(dir).join("claude");
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(dir.join(name), text);
        }
        eprintln!("===== {name}\n{text}");
    }

    fn tmux_out(tmux: &Tmux, args: &[&str]) -> String {
        tmux.cmd()
            .args(args)
            .output()
            .map(|o| stdout(&o))
            .unwrap_or_default()
    }

    /// The pane's screen and whether it is on the alternate screen.
    fn screen(tmux: &Tmux) -> (String, String) {
        (
            tmux_out(tmux, &["capture-pane", "-p", "-t", "rec"]),
            tmux_out(
                tmux,
                &["display-message", "-p", "-t", "rec", "#{alternate_on}"],
            )
            .trim()
            .to_string(),
        )
    }

    fn home_json(home: &Path, trusted: &[&Path], oauth: bool) {
        std::fs::create_dir_all(home).expect("home");
        let mut projects = serde_json::Map::new();
        for t in trusted {
            projects.insert(
                t.display().to_string(),
                serde_json::json!({"hasTrustDialogAccepted": true, "hasCompletedProjectOnboarding": true}),
            );
        }
        let mut cfg = serde_json::json!({
            "hasCompletedOnboarding": true,
            "theme": "dark",
            "projects": projects,
        });
        if !oauth {
            cfg["customApiKeyResponses"] = serde_json::json!({"approved": [KEY[KEY.len() - 20..].to_string()], "rejected": []});
        }
        std::fs::write(home.join(".claude.json"), cfg.to_string()).expect("claude.json");
    }

    /// Start `claude <args>` in `cwd` in a new tmux session `rec`.
    fn start(tmux: &Tmux, server: &MockServer, home: &Path, cwd: &Path, args: &str, oauth: bool) {
        let claude = cli_bin("claude").expect("claude");
        let auth = if oauth {
            "CLAUDE_CODE_OAUTH_TOKEN=sk-ant-oat01-mock-token".to_string()
        } else {
            format!("ANTHROPIC_API_KEY={KEY}")
        };
        let tmp = home.join("tmp");
        std::fs::create_dir_all(&tmp).expect("tmp");
        let cmd = format!(
            "env -i PATH=/usr/bin:/bin TERM=xterm-256color LANG=C.UTF-8 HOME={} TMPDIR={} ANTHROPIC_BASE_URL={} {auth} CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 DISABLE_AUTOUPDATER=1 CLAUDE_CODE_MAX_RETRIES=0 {} {args}",
            home.display(),
            tmp.display(),
            server.base_url(),
            claude.display()
        );
        let o = tmux
            .cmd()
            .args([
                "new-session",
                "-d",
                "-s",
                "rec",
                "-x",
                "120",
                "-y",
                "30",
                "-c",
            ])
            .arg(cwd)
            .arg(&cmd)
            .output()
            .expect("tmux");
        assert!(o.status.success(), "{}", stderr(&o));
    }

    fn paste(tmux: &Tmux, text: &str) {
        let mut c = tmux.cmd();
        c.args(["load-buffer", "-b", "rec", "-"]);
        c.stdin(std::process::Stdio::piped());
        let mut child = c.spawn().expect("load-buffer");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write");
        child.wait().expect("wait");
        tmux_out(
            tmux,
            &["paste-buffer", "-p", "-d", "-b", "rec", "-t", "rec"],
        );
        std::thread::sleep(Duration::from_millis(400));
        tmux_out(tmux, &["send-keys", "-t", "rec", "Enter"]);
    }

    #[test]
    #[ignore = "records fixtures from the real claude TUI; run by hand"]
    fn record_claude_tui_screens() {
        if cli_bin("claude").is_none() || !has_tmux() {
            return;
        }
        let tag = std::env::var("RECORD_TAG").unwrap_or_default();
        // 1. A trusted project: the renderer, the ready and busy screens.
        let server = MockServer::start();
        server.push(
            Provider::Anthropic,
            Reply::slow("Still working.\nEXIT_SIGNAL: false", Duration::from_secs(3)),
        );
        let p = Project::new();
        let home = p.join("home");
        home_json(&home, &[p.path()], false);
        let tmux = Tmux::new();
        let id = "11111111-2222-4333-8444-555555555555";
        start(
            &tmux,
            &server,
            &home,
            p.path(),
            &format!("--session-id {id}"),
            false,
        );
        std::thread::sleep(Duration::from_secs(6));
        let (s, alt) = screen(&tmux);
        out(&format!("hybrid_pane_idle{tag}.txt"), &s);
        eprintln!("alternate_on={alt}");
        paste(&tmux, "Do the task");
        std::thread::sleep(Duration::from_millis(1500));
        let (s, alt) = screen(&tmux);
        out(&format!("hybrid_pane_busy{tag}.txt"), &s);
        eprintln!("alternate_on={alt}");
        std::thread::sleep(Duration::from_secs(4));
        let (s, alt) = screen(&tmux);
        out(&format!("hybrid_pane_done{tag}.txt"), &s);
        eprintln!("alternate_on={alt}");
        drop(tmux);

        // 2. A nested repository under a trusted folder.
        let server = MockServer::start();
        let p = Project::new();
        let nested = p.join("nested");
        std::fs::create_dir_all(&nested).expect("nested");
        let g = std::process::Command::new("git")
            .args(["init", "-q"])
            .current_dir(&nested)
            .output()
            .expect("git");
        assert!(g.status.success());
        let home = p.join("home");
        home_json(&home, &[p.path()], false);
        let tmux = Tmux::new();
        start(&tmux, &server, &home, &nested, "", false);
        std::thread::sleep(Duration::from_secs(6));
        let (s, alt) = screen(&tmux);
        out(&format!("hybrid_pane_nested_repo{tag}.txt"), &s);
        eprintln!("alternate_on={alt}");
        drop(tmux);
    }

    /// A claude.ai login whose 5-hour limit is reached, resetting 25 s later: does the TUI
    /// continue by itself at the reset (`extra` = extra claude arguments)?
    #[test]
    #[ignore = "records fixtures from the real claude TUI; run by hand"]
    fn record_claude_tui_limit_reset() {
        if cli_bin("claude").is_none() || !has_tmux() {
            return;
        }
        let tag = std::env::var("RECORD_TAG").unwrap_or_default();
        let extra = std::env::var("RECORD_CLAUDE_ARGS").unwrap_or_default();
        let server = MockServer::start();
        let reset = crate::e2e::record::now() + 25;
        server.push(
            Provider::Anthropic,
            Reply::status(429, None).with_headers(rate_limit_headers::claude(
                "rejected",
                "five_hour",
                reset,
                &[ClaudeWindow {
                    abbrev: "5h",
                    utilization: 1.0,
                    resets_at: reset,
                }],
            )),
        );
        server.set_default(
            Provider::Anthropic,
            Reply::text("Continued.\nEXIT_SIGNAL: true"),
        );
        let p = Project::new();
        let home = p.join("home");
        home_json(&home, &[p.path()], true);
        let tmux = Tmux::new();
        let id = "11111111-2222-4333-8444-666666666666";
        start(
            &tmux,
            &server,
            &home,
            p.path(),
            &format!("--session-id {id} {extra}"),
            true,
        );
        std::thread::sleep(Duration::from_secs(6));
        let (s, _) = screen(&tmux);
        out(&format!("hybrid_pane_oauth_idle{tag}.txt"), &s);
        paste(&tmux, "Do the task");
        std::thread::sleep(Duration::from_secs(3));
        let (s, _) = screen(&tmux);
        out(&format!("hybrid_pane_usage_limit{tag}.txt"), &s);
        // Answer a dialog the limit opened (`RECORD_ANSWER`: tmux key names).
        if let Ok(keys) = std::env::var("RECORD_ANSWER") {
            let mut args = vec!["send-keys", "-t", "rec"];
            args.extend(keys.split_whitespace());
            tmux_out(&tmux, &args);
            std::thread::sleep(Duration::from_secs(2));
            let (s, _) = screen(&tmux);
            out(&format!("hybrid_pane_usage_limit_answered{tag}.txt"), &s);
        }
        std::thread::sleep(Duration::from_secs(40));
        let (s, _) = screen(&tmux);
        out(&format!("hybrid_pane_after_reset{tag}.txt"), &s);
        let turns = server.turns(Provider::Anthropic);
        eprintln!(
            "turns: {:?}",
            turns
                .iter()
                .map(|t| (t.at, t.reply.clone(), t.prompt()))
                .collect::<Vec<_>>()
        );
        let transcript = walk_for(&home.join(".claude/projects"), &format!("{id}.jsonl"));
        if let Some(t) = transcript {
            out(
                &format!("hybrid_transcript_usage_limit{tag}.jsonl"),
                &std::fs::read_to_string(t).unwrap_or_default(),
            );
        }
    }

    fn walk_for(dir: &Path, name: &str) -> Option<PathBuf> {
        super::walk(dir)
            .into_iter()
            .find(|p| p.file_name().is_some_and(|n| n == name))
    }
}

/// Issue 14.4, the hybrid half: a pane is the tmux server's child, so claude in it used to
/// start with the server's environment, not the looper's: a provider key exported in the
/// shell that started the looper (after the server) never reached the TUI, and the agent
/// table's variables went on the `split-window -e` command line, where `ps` shows them. The
/// key here is only in the looper's environment (sourced from a file, so no command line
/// holds it either); the run must complete, and the key must be in no argv, no tmux
/// environment and no pane's start command.
#[test]
fn hybrid_claude_pane_gets_the_loopers_environment_and_no_value_in_argv() {
    let Some(claude) = cli_bin("claude") else {
        return;
    };
    assert!(has_tmux(), "tmux is required (scripts/test installs it)");
    let server = MockServer::start();
    server.push(Provider::Anthropic, Reply::text("Done.\nEXIT_SIGNAL: true"));
    let p = Project::new();
    let home = p.join("home");
    let key = "sk-ant-api03-only-in-the-shell-0123456789abcdefghij";
    claude_home(&home, p.path(), key);
    std::fs::create_dir_all(p.join("tmp")).expect("tmp");
    p.write("PROMPT.md", "Work on the task.");
    p.write(
        "agent-looper.toml",
        &format!(
            "[looper]\ndefault_agent = \"claude\"\nsleep_seconds = 0\ntimeout_seconds = 60\n\n[agents.claude]\nkind = \"claude\"\ninterface = \"hybrid\"\nexecutable = {:?}\nenv = {{ HOME = {:?}, CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = \"1\", DISABLE_AUTOUPDATER = \"1\", CLAUDE_CODE_MAX_RETRIES = \"0\", TMPDIR = {:?} }}\n",
            claude.display().to_string(),
            home.display().to_string(),
            p.join("tmp").display().to_string(),
        ),
    );
    // What the user's shell exported, after the tmux server was started.
    p.write(
        "shell.env",
        &format!(
            "export ANTHROPIC_BASE_URL={}\nexport ANTHROPIC_API_KEY={key}\n",
            server.base_url()
        ),
    );
    // Where the hand-over files go: watched at the end.
    let runtime = p.join("run");
    std::fs::create_dir_all(&runtime).expect("runtime dir");
    std::fs::set_permissions(
        &runtime,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .expect("chmod");
    let tmux = Tmux::new();
    let done = p.join("looper.exit");
    let script = format!(
        "cd {:?} && . ./shell.env && {:?} --local --max-loops 2 --complete-on 'EXIT_SIGNAL:\\s*true'; echo $? > {:?}",
        p.path(),
        looper_bin(),
        done
    );
    let out = tmux
        .cmd()
        .args([
            "new-session",
            "-d",
            "-s",
            "hy",
            "-x",
            "200",
            "-y",
            "50",
            "sh",
            "-c",
            &script,
        ])
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("ANTHROPIC_BASE_URL")
        .env("XDG_STATE_HOME", p.join(".xdg-state"))
        .env("XDG_RUNTIME_DIR", &runtime)
        .output()
        .expect("tmux new-session");
    assert!(out.status.success(), "{}", stderr(&out));
    // While the pane runs: the key is nowhere but in the processes' environments.
    assert!(
        wait_until(60.0, || p.run_dirs().len() == 1
            && std::fs::read(p.last_run().join("state.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<Json>(&b).ok())
                .is_some_and(|s| s["hybrid_pane_id"].is_string())),
        "the pane started"
    );
    let tmux_text = |args: &[&str]| {
        tmux.cmd()
            .args(args)
            .output()
            .map(|o| stdout(&o))
            .unwrap_or_default()
    };
    let starts = tmux_text(&["list-panes", "-a", "-F", "#{pane_start_command}"]);
    assert!(starts.contains("pane-exec"), "{starts}");
    for text in [
        starts,
        tmux_text(&["show-environment", "-g"]),
        tmux_text(&["show-environment", "-t", "hy"]),
    ] {
        assert!(!text.contains(key), "{text}");
    }
    let argv: Vec<String> = std::fs::read_dir("/proc")
        .expect("proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .filter(|t| t.contains(key))
        .collect();
    assert_eq!(argv, Vec::<String>::new());
    let run = wait_in_tmux(&tmux, &p);
    assert_eq!(run.exit.as_deref(), Some("0"), "{}", run.pane);
    assert_eq!(
        p.state()["stop_reason"],
        "completion marker",
        "{}",
        p.state()
    );
    assert_eq!(server.prompts(Provider::Anthropic).len(), 1);
    // The environment file was taken: nothing of it is left.
    assert!(
        runtime.join("agent-looper/farm").is_dir(),
        "the file went there"
    );
    let left: Vec<PathBuf> = walk(&runtime)
        .into_iter()
        .filter(|f| f.extension().is_some_and(|x| x == "env"))
        .collect();
    assert_eq!(left, Vec::<PathBuf>::new());
}

/// A stop asked for while a hybrid TUI is still starting waited for the readiness limit
/// (60 s) before it was acted on; D22 wants it at once. The TUI here never becomes ready (a
/// stub that draws nothing), so only the stop can end the attempt.
#[test]
fn a_stop_while_the_hybrid_tui_starts_is_acted_on_at_once() {
    assert!(has_tmux(), "tmux is required (scripts/test installs it)");
    let p = Project::new();
    let stub = p.join("claude-stub.sh");
    std::fs::write(&stub, "#!/bin/sh\nsleep 300\n").expect("stub");
    std::fs::set_permissions(&stub, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    p.write("PROMPT.md", "Work on the task.");
    p.write(
        "agent-looper.toml",
        &format!(
            "[looper]\ndefault_agent = \"claude\"\nsleep_seconds = 0\ntimeout_seconds = 120\n\n[agents.claude]\nkind = \"claude\"\ninterface = \"hybrid\"\nexecutable = {:?}\n",
            stub.display().to_string()
        ),
    );
    let tmux = Tmux::new();
    start_in_tmux(&tmux, &p, "--once --tmux-layout single");
    assert!(
        wait_until(30.0, || p.run_dirs().len() == 1
            && std::fs::read(p.last_run().join("state.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<Json>(&b).ok())
                .is_some_and(|s| s["hybrid_pane_id"].is_string())),
        "the pane started"
    );
    let asked = std::time::Instant::now();
    let out = p
        .looper()
        .args(["control", "stop", "--now", "--reason", "not now"])
        .env_remove("TMUX")
        .env_remove("TMUX_PANE")
        .output()
        .expect("stop");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        wait_until(20.0, || p.state()["status"] == "stopped"),
        "{}",
        p.state()
    );
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(20),
        "acted on after {:?}",
        asked.elapsed()
    );
    assert_eq!(p.state()["stop_reason"], "control interrupt_now: not now");
    let run = wait_in_tmux(&tmux, &p);
    assert_eq!(run.exit.as_deref(), Some("0"), "{}", run.pane);
}

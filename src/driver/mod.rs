//! The driver: opens the run directory, then runs the async loop that only gathers inputs
//! (an attempt's end, timers, control lines, the focus file, signals) and hands each to the
//! [`dispatch::Dispatcher`], which decides through the engine and acts through the ports.
//! Like nextest's dispatcher: everything that decides is synchronous and unit-tested; this
//! loop only waits.

pub mod dispatch;
pub mod gate_output;
pub mod ports;
pub mod sink;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::config::AgentKind;
use crate::config::run::RunConfig;
use crate::effects::notify::{NotifyOutcome, NotifyRunner};
use crate::effects::{procinfo, tmux};
use crate::engine::{
    AgentCli, DailyBudget, Engine, EngineConfig, Input, RetryPolicy, ReviewGate, VerifyGate,
};
use crate::error::{Error, Result};
use crate::records::accounts::AccountFile;
use crate::records::control::latest_focus;
use crate::records::discovery::accounts_dir;
use crate::records::events::AgentRetry;
use crate::records::events::SupervisorEvent;
use crate::records::inbox::Inbox;
use crate::records::{CONTROL_FILE, FOCUS_FILE, NOTES_FILE, RunStore, asks, discovery, panic};
use dispatch::{Applied, AttemptHandle, Dispatcher, Presentation};
pub use ports::WorktreeLease;
use ports::{
    AccountFiles, Checkout, CliFiles, DiskCli, GitWorkspace, MachineSpend, MainCheckout, Ports,
    ProcessAgents, ProcessHolders, Terminal, TmuxPanes, Workspace,
};

/// How the run presents itself, decided by the caller (terminal, tmux).
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Echo the rendered transcript in this terminal (single layout).
    pub echo_transcript: bool,
    /// Print supervisor lines (status, commands) to stdout.
    pub quiet: bool,
    /// Split layout (D25): once the run directory exists, open the live-view pane; when it
    /// opens, the transcript is not echoed here.
    pub split_live_view: bool,
    /// When the run directory is named (its stamp and random suffix), decided by the caller
    /// so the run lock can name the directory before it exists.
    pub run_id: Option<(chrono::DateTime<Utc>, u32)>,
}

/// The agent's account and its record's file (issue 18, D32); `None` when the agent has no
/// account (a generic agent without `account`) or the machine no state directory.
pub fn account_file(cfg: &RunConfig) -> Option<AccountFile> {
    let a = &cfg.settings.agent;
    let lookup = |k: &str| a.env.get(k).or_else(|| cfg.env.get(k)).cloned();
    let account = crate::config::account::account_of(a.kind, a.account.as_deref(), lookup, &a.cwd)?;
    Some(AccountFile {
        dir: accounts_dir(&cfg.env)?,
        account,
    })
}

/// The program the agent's commands run (its executable; a generic agent's first command),
/// as found on PATH.
fn cli_program(cfg: &RunConfig) -> Option<PathBuf> {
    let a = &cfg.settings.agent;
    let name = match a.kind {
        AgentKind::Generic => a.first_command.as_ref()?.first()?.clone(),
        _ => a.executable.clone(),
    };
    cfg.programs.get(&name).cloned()
}

/// The environment the agent's CLI is probed with: the supervisor's, plus what the agent's
/// table sets to select its login and find its programs.
fn probe_env(cfg: &RunConfig) -> Vec<(String, String)> {
    let a = &cfg.settings.agent;
    [
        "PATH",
        "HOME",
        "TMPDIR",
        "CODEX_HOME",
        "CLAUDE_CONFIG_DIR",
        "GEMINI_CLI_HOME",
    ]
    .iter()
    .filter_map(|k| a.env.get(*k).map(|v| (k.to_string(), v.clone())))
    .collect()
}

/// The agent's CLI as the run starts with it: its file and, for a built-in kind, its
/// `--version` (a generic agent's command is the user's program: never run for a probe).
fn probe_cli(cfg: &RunConfig, disk: &mut dyn CliFiles) -> Option<(PathBuf, AgentCli)> {
    let program = cli_program(cfg)?;
    let mut cli = disk.stamp(&program)?;
    if cfg.settings.agent.kind != AgentKind::Generic {
        cli.version = disk.version(&program);
    }
    Some((program, cli))
}

/// The engine's view of the configuration.
pub fn engine_config(cfg: &RunConfig) -> EngineConfig {
    let s = &cfg.settings;
    EngineConfig {
        label: cfg.label.clone(),
        max_loops: s.max_loops,
        sleep: s.sleep,
        fresh_session_per_loop: s.fresh_session_per_loop,
        reload_prompt_each_loop: s.reload_prompt_each_loop,
        completion_streak: s.completion_marker.as_ref().map(|_| s.completion_streak),
        plan_gate: s.plan_file.is_some(),
        cb_no_progress: s.cb_no_progress,
        cb_output_decline: s.cb_output_decline,
        output_match_repeats: s
            .cb_output_match_pattern
            .as_ref()
            .map(|_| s.cb_output_match_repeats),
        retry: RetryPolicy {
            max_transient_retries: s.max_transient_retries,
            backoff_base: s.retry_backoff_base.as_secs_f64(),
            backoff_max: s.retry_backoff_max.as_secs_f64(),
            rate_limit_max_wait: s.rate_limit_max_wait.as_secs_f64(),
        },
        ignore_nonzero: s.ignore_nonzero,
        timeout: s.timeout,
        dry_run: s.dry_run,
        backup: s.backup_enabled,
        max_runtime: s.max_runtime,
        max_tokens: s.max_tokens,
        max_cost_usd: s.max_cost_usd,
        preassign_session_ids: s.agent.kind.preassigns_session_ids(),
        failed_start_keeps_session: s.agent.kind.keeps_failed_first_session(),
        plan_forbid_removal: s.plan_forbid_removal,
        verify: s.verify.as_ref().map(|v| VerifyGate {
            when: v.when,
            needs_pass_match: v.pass_regex.is_some(),
            min_count: v.min_count,
            feedback: v.feedback,
            cb_failures: v.cb_verify_failures,
            timeout: v.timeout,
        }),
        review: s.review.as_ref().map(|r| ReviewGate {
            when: r.when,
            max_rounds: r.max_rounds,
            preassign_session_ids: r.agent.kind.preassigns_session_ids(),
            timeout: r.timeout,
        }),
        human: s.human.policy.clone(),
        account: account_file(cfg).is_some() && !s.dry_run,
        min_headroom_percent: s.min_headroom_percent,
        daily: (s.daily_max_tokens.is_some() || s.daily_max_cost_usd.is_some()).then_some(
            DailyBudget {
                max_tokens: s.daily_max_tokens,
                max_cost_usd: s.daily_max_cost_usd,
                wait: s.daily_budget_action == crate::config::DailyBudgetAction::Wait,
            },
        ),
        agent_cli: None,
    }
}

/// Open the run directory and write what is known before `run_started`.
fn open_store(cfg: &RunConfig, run_id: (chrono::DateTime<Utc>, u32)) -> Result<RunStore> {
    let s = &cfg.settings;
    let mut store = RunStore::create(&s.log_dir, &cfg.label, run_id.0, run_id.1)?;
    store.set_durable(!s.dry_run);
    if let Some(reg) = discovery::registry_path(&cfg.env) {
        let _ = discovery::register_run(&reg, &store.dir, run_id.0);
    }
    let me = std::process::id() as i32;
    let path = |name: &str| Some(store.dir.join(name).display().to_string());
    let (control, focus, notes) = (path(CONTROL_FILE), path(FOCUS_FILE), path(NOTES_FILE));
    let st = &mut store.state;
    st.schema_version = Some(crate::records::state::SCHEMA_VERSION);
    st.looper_version = Some(env!("CARGO_PKG_VERSION").into());
    st.run_id = Some(store.run_id.clone());
    st.run_dir = Some(store.dir.display().to_string());
    st.label = Some(cfg.label.clone());
    st.agent_name = Some(s.agent.name.clone());
    st.agent_kind = Some(s.agent.kind.as_str().into());
    st.agent_interface = Some(s.agent.interface.as_str().into());
    st.agent_cwd = Some(s.agent.cwd.display().to_string());
    st.config_path = Some(s.config_path.display().to_string());
    st.prompt_file = Some(s.prompt_file.display().to_string());
    st.mode = Some(s.mode.as_str().into());
    st.reload_prompt_each_loop = Some(s.reload_prompt_each_loop);
    st.control_file = control;
    st.focus_log_file = focus;
    st.operator_notes_file = notes;
    st.output_match_pattern = s.cb_output_match_pattern.clone();
    st.pid = Some(i64::from(me));
    st.pid_identity = procinfo::pid_identity(me);
    st.base_commit = crate::effects::diff::head_commit(&s.agent.cwd);
    // `$TMUX` is `<socket>,<pid>,<session>`.
    st.tmux_socket = cfg
        .env
        .get("TMUX")
        .and_then(|t| t.split(',').next())
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    // The supervisor's own pane, so `looper status` can show (and jump to) its window.
    st.tmux_pane = cfg
        .tmux
        .as_ref()
        .map(|t| t.pane.clone())
        .filter(|p| !p.is_empty());
    if let Some((group, index)) = &s.parallel_member {
        st.parallel_group = Some(group.clone());
        st.parallel_index = Some(*index);
    }
    Ok(store)
}

/// Run a validated loop to its end and return the exit code. The run lock must be held;
/// `took_over` is the stale holder it replaced, if any (D18).
pub async fn run(
    mut cfg: RunConfig,
    opts: RunOptions,
    took_over: Option<SupervisorEvent>,
    worktree: Option<WorktreeLease>,
) -> Result<i32> {
    let run_id = opts.run_id.unwrap_or_else(|| (Utc::now(), rand::random()));
    let mut store = open_store(&cfg, run_id)?;
    if !cfg.settings.dry_run {
        match crate::effects::ignore::exclude_run_root(&cfg.settings.log_dir) {
            Ok(Some(x)) => cfg.notices.push(format!(
                "added {} to {} so an agent's `git add -A` leaves the run records out",
                x.pattern,
                x.file.display()
            )),
            Ok(None) => {}
            Err(e) => cfg.notices.push(format!(
                "warning: the run records are not excluded from git ({e}); add .agent-looper/ to .gitignore"
            )),
        }
    }
    if let Some(lease) = &worktree {
        let r = &lease.record;
        let event = SupervisorEvent::WorktreeCreated {
            path: r.path.clone(),
            branch: r.branch.clone(),
            base: r.base.clone(),
            cleanup: r.cleanup,
            trust: r.trust.iter().map(|t| t.file.clone()).collect(),
        };
        store.append_supervisor(&event, Utc::now())?;
        store.write_state(crate::records::store::Sync::Now)?;
    }
    panic::watch(&store.dir);
    let run_dir = store.dir.clone();
    // From here a terminal that stops reading must not stop the run.
    crate::console::detach();
    let excluded = vec![cfg.settings.log_dir.clone(), run_dir.clone()];
    let tmux_pane = cfg.tmux.as_ref().map(|t| t.pane.clone());
    let window = tmux::WindowState::new(tmux_pane, &run_dir);
    let mut echo = opts.echo_transcript;
    if opts.split_live_view {
        match window.open_live_view(&run_dir) {
            Ok(pane) => {
                echo = false;
                cfg.notices.push(format!(
                    "live view in tmux pane {pane}; the transcript is shown there"
                ));
            }
            Err(e) => cfg.notices.push(format!(
                "cannot open the live-view pane ({e}); the transcript is shown here"
            )),
        }
    }
    // What the run changed is measured where it works: its own worktree, else the checkout
    // it started in (when that is a git work tree).
    let checkout: Option<Box<dyn Checkout>> = match worktree {
        Some(lease) => Some(Box::new(lease)),
        None if store.state.base_commit.is_some() && !cfg.settings.dry_run => {
            Some(Box::new(MainCheckout {
                dir: cfg.settings.agent.cwd.clone(),
                excluded: excluded.clone(),
            }))
        }
        None => None,
    };
    let workspace = cfg.workspace.take().map(|ws| {
        let s = &cfg.settings;
        Box::new(GitWorkspace {
            ws,
            excluded,
            backup_prefix: s.backup_prefix.clone(),
            backup_keep: s.backup_keep,
            backup_dirty: s.backup_dirty,
        }) as Box<dyn Workspace + Send>
    });
    if let Some(event) = &took_over {
        store.append_supervisor(event, Utc::now())?;
    }
    // D31: asks a stopped or dead run of this project left unanswered or undelivered are
    // this run's now (records::asks documents how).
    if !cfg.settings.dry_run {
        let carried = asks::carry_over(&cfg.settings.log_dir, &run_dir, Utc::now());
        if !carried.is_empty() {
            cfg.notices.push(format!(
                "carried over {} ask(s) from an earlier run: {}",
                carried.len(),
                carried.join(", ")
            ));
        }
    }
    let (notify_tx, notify_rx) = mpsc::unbounded_channel();
    let notify_in_flight = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let notifier = notify_runner(&cfg, &run_dir, notify_tx, notify_in_flight.clone());
    let header = format!(
        "looper: run {} label {} agent {} ({}, {}) cwd {}",
        store.run_id,
        cfg.label,
        cfg.settings.agent.name,
        cfg.settings.agent.kind.as_str(),
        cfg.settings.agent.interface.as_str(),
        cfg.settings.agent.cwd.display()
    );
    let notices = std::mem::take(&mut cfg.notices);
    let dry_run = cfg.settings.dry_run;
    let max_runtime = cfg.settings.max_runtime;
    let mut disk = DiskCli {
        env: probe_env(&cfg),
    };
    let cli = if dry_run {
        None
    } else {
        probe_cli(&cfg, &mut disk)
    };
    let mut engine_cfg = engine_config(&cfg);
    engine_cfg.agent_cli = cli.as_ref().map(|(_, c)| c.clone());
    let engine = Engine::new(engine_cfg, rand::random());
    let account = account_file(&cfg).filter(|_| !dry_run);
    let daily = engine_config(&cfg).daily.is_some() && !dry_run;
    let ports = Ports {
        agents: Box::new(ProcessAgents),
        panes: Box::new(TmuxPanes),
        workspace,
        records: Box::new(store),
        window: Box::new(window),
        console: Box::new(Terminal { quiet: opts.quiet }),
        checkout,
        notifier: Box::new(notifier),
        accounts: account
            .clone()
            .map(|file| Box::new(AccountFiles { file }) as _),
        daily: daily.then(|| {
            Box::new(MachineSpend {
                registry: discovery::registry_path(&cfg.env),
                own: run_dir.clone(),
            }) as _
        }),
        cli: Box::new(disk),
        holders: Box::new(ProcessHolders {
            grace: cfg.settings.terminate_grace,
        }),
    };
    let presentation = Presentation {
        echo_transcript: echo,
    };
    let (retry_tx, retry_rx) = mpsc::unbounded_channel::<AgentRetry>();
    let mut d = Dispatcher::new(cfg, engine, ports, presentation, run_dir.clone())
        .with_cli(cli)
        .with_retries(retry_tx);
    d.say(&header);
    for n in &notices {
        d.say(&format!("looper: {n}"));
    }
    d.say("focus: not reported yet");
    d.say(&format!(
        "control: looper control stop|pause|note|focus --run-dir {}",
        run_dir.display()
    ));

    let mut notify_rx = notify_rx;
    wait_loop(
        &mut d,
        &run_dir,
        dry_run,
        max_runtime,
        &mut notify_rx,
        retry_rx,
    )
    .await?;
    drain_notifications(&mut d, &mut notify_rx, &notify_in_flight).await;
    let (code, unrecorded) = d.close();
    panic::forget();
    crate::console::flush(Duration::from_secs(2));
    Ok(match unrecorded {
        Some(e) => {
            crate::console::err(&format!(
                "looper: cannot record the end of run {} in state.json ({e}); `looper status` will show it as stale until `looper status --repair-stale`",
                run_dir.display()
            ));
            // The run did not end as asked if its end is not on record.
            if code == 0 {
                crate::error::exit_code::AGENT_FAILED
            } else {
                code
            }
        }
        None => code,
    })
}

/// The notifier of `[notify]`, or none (D33).
fn notify_runner(
    cfg: &RunConfig,
    run_dir: &std::path::Path,
    done: mpsc::UnboundedSender<NotifyOutcome>,
    in_flight: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> Option<NotifyRunner> {
    let n = &cfg.settings.human.notify;
    if !n.enabled() || cfg.settings.dry_run {
        return None;
    }
    let first = n.command.first()?;
    Some(NotifyRunner {
        program: cfg.program_path(first),
        template: n.command.clone(),
        timeout: n.timeout,
        label: cfg.label.clone(),
        run_dir: run_dir.display().to_string(),
        done,
        in_flight,
    })
}

/// At the end: notifiers still running (the `stopped` one, typically) get until their
/// timeout, and what they did is recorded.
async fn drain_notifications(
    d: &mut Dispatcher,
    rx: &mut mpsc::UnboundedReceiver<NotifyOutcome>,
    in_flight: &std::sync::atomic::AtomicUsize,
) {
    use std::sync::atomic::Ordering;
    let timeout = d.config().settings.human.notify.timeout + Duration::from_secs(1);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        while let Ok(outcome) = rx.try_recv() {
            d.notification_done(outcome);
        }
        if in_flight.load(Ordering::SeqCst) == 0 {
            while let Ok(outcome) = rx.try_recv() {
                d.notification_done(outcome);
            }
            return;
        }
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(outcome)) => d.notification_done(outcome),
            Ok(None) | Err(_) => return,
        }
    }
}

/// The operator's files: the control inbox, the focus file (re-read when it grows) and the
/// run's asks (D31).
struct Operator {
    asks: asks::AskBox,
    inbox: Inbox,
    focus_path: PathBuf,
    focus_len: u64,
    focus: Option<String>,
}

impl Operator {
    /// New control commands as inputs; a changed focus straight to the dispatcher.
    fn poll(&mut self, d: &mut Dispatcher) -> Vec<Input> {
        // Control lines first: a note (or a stop) written before an answer or a decision
        // takes effect before what that decision starts (the next loop's prompt), even when
        // both are seen in one wake-up.
        let mut inputs: Vec<Input> = self.inbox.poll().into_iter().map(Input::Control).collect();
        inputs.extend(self.asks.poll().into_iter().map(Input::Human));
        for w in self.inbox.warnings.drain(..) {
            crate::console::err(&format!("looper: warning: {w}"));
        }
        for bad in self.inbox.rejected.drain(..) {
            d.control_rejected(bad);
        }
        let len = std::fs::metadata(&self.focus_path)
            .map(|m| m.len())
            .unwrap_or(0);
        if len != self.focus_len {
            self.focus_len = len;
            let focus = latest_focus(&self.focus_path);
            if let Some(f) = &focus
                && focus != self.focus
            {
                d.focus(f.clone());
                self.focus = focus;
            }
        }
        inputs
    }
}

/// Feed the dispatcher until the run is over.
async fn wait_loop(
    d: &mut Dispatcher,
    run_dir: &std::path::Path,
    dry_run: bool,
    max_runtime: Option<Duration>,
    notify_rx: &mut mpsc::UnboundedReceiver<NotifyOutcome>,
    mut retries: mpsc::UnboundedReceiver<AgentRetry>,
) -> Result<()> {
    let started = Instant::now();
    let now = || started.elapsed().as_secs_f64();
    let mut operator = Operator {
        asks: asks::AskBox::new(run_dir),
        inbox: Inbox::new(&run_dir.join(CONTROL_FILE)),
        focus_path: run_dir.join(FOCUS_FILE),
        focus_len: 0,
        focus: None,
    };
    // Wake-ups: file watch on the operator's files, a slow safety poll, signals.
    let (watch_tx, mut watch_rx) = mpsc::unbounded_channel::<()>();
    // A dry run runs nothing to steer: no watcher thread for it.
    let _watcher = if dry_run {
        None
    } else {
        watch_files(
            &[
                run_dir.join(CONTROL_FILE),
                run_dir.join(FOCUS_FILE),
                asks::asks_dir(run_dir),
            ],
            watch_tx,
        )
    };
    let mut safety_poll = tokio::time::interval(Duration::from_secs(2));
    safety_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let watch_signal = |kind: SignalKind, name: &'static str| {
        signal(kind).map_err(|e| Error::io("cannot watch", name, e))
    };
    let mut sigint = watch_signal(SignalKind::interrupt(), "SIGINT")?;
    let mut sigterm = watch_signal(SignalKind::terminate(), "SIGTERM")?;
    let mut sighup = watch_signal(SignalKind::hangup(), "SIGHUP")?;
    let mut interrupts = 0u32;
    // Validated to at most `MAX_SECONDS`: the deadline cannot overflow.
    let runtime_deadline = max_runtime.map(|m| tokio::time::Instant::now() + m);
    let mut runtime_fired = false;

    let mut attempt: Option<AttemptHandle> = None;
    let mut wait: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    let mut git: Option<GitTask> = None;
    // Asks already there (carried over from an earlier run) reach the engine before its
    // start, so the first loop boundary already holds for them.
    let mut inputs = operator.poll(d);
    inputs.insert(
        inputs
            .iter()
            .position(|i| matches!(i, Input::Control(_)))
            .unwrap_or(inputs.len()),
        Input::Start,
    );
    loop {
        for input in inputs.drain(..) {
            for applied in d.handle(now(), input) {
                take(&mut attempt, &mut wait, &mut git, applied);
            }
        }
        if d.is_done() {
            break;
        }
        tokio::select! {
            done = async { match attempt.as_mut() { Some(f) => (&mut f.0).await, None => std::future::pending().await } } => {
                attempt = None;
                // What the agent wrote before it exited (an ask, a control line) is read
                // before its end is handled: the loop boundary that follows holds for it.
                for input in operator.poll(d) {
                    for applied in d.handle(now(), input) {
                        take(&mut attempt, &mut wait, &mut git, applied);
                    }
                }
                for applied in d.attempt_done(now(), done) {
                    take(&mut attempt, &mut wait, &mut git, applied);
                }
            }
            done = async { match git.as_mut() { Some(t) => t.await, None => std::future::pending().await } } => {
                git = None;
                match done {
                    Ok((ws, input)) => {
                        for applied in d.git_done(now(), ws, input) {
                            take(&mut attempt, &mut wait, &mut git, applied);
                        }
                    }
                    // The job panicked: the workspace is lost; the run cannot go on.
                    Err(e) => inputs.push(Input::Failure(format!("git work failed: {e}"))),
                }
            }
            _ = async { match wait.as_mut() { Some(w) => w.await, None => std::future::pending().await } } => {
                wait = None;
                inputs.push(Input::WaitElapsed);
            }
            Some(retry) = retries.recv() => d.agent_retry(retry),
            Some(()) = watch_rx.recv() => {
                while watch_rx.try_recv().is_ok() {}
                inputs.extend(operator.poll(d));
            }
            _ = safety_poll.tick() => inputs.extend(operator.poll(d)),
            Some(outcome) = notify_rx.recv() => d.notification_done(outcome),
            _ = sigint.recv() => {
                interrupts += 1;
                inputs.push(Input::Signal { name: "SIGINT", forceful: interrupts > 1 });
            }
            _ = sigterm.recv() => inputs.push(Input::Signal { name: "SIGTERM", forceful: false }),
            _ = sighup.recv() => inputs.push(Input::Signal { name: "SIGHUP", forceful: false }),
            _ = async { match runtime_deadline { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } }, if !runtime_fired => {
                runtime_fired = true;
                inputs.push(Input::RuntimeExpired);
            }
        }
    }
    Ok(())
}

type GitTask = tokio::task::JoinHandle<(Box<dyn Workspace + Send>, Input)>;

/// Hold what the dispatcher handed over.
fn take(
    attempt: &mut Option<AttemptHandle>,
    wait: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    git: &mut Option<GitTask>,
    applied: Applied,
) {
    match applied {
        Applied::Attempt(handle) => *attempt = Some(handle),
        Applied::Git(job) => *git = Some(tokio::task::spawn_blocking(job)),
        Applied::Wait(d) => *wait = Some(Box::pin(tokio::time::sleep(d))),
        Applied::CancelWait => *wait = None,
    }
}

/// Watch the operator's files (control, focus); each change pings `tx`. `None` if
/// watching is unavailable (the safety poll still reads the inbox).
fn watch_files(
    files: &[PathBuf],
    tx: mpsc::UnboundedSender<()>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    // Reading the inbox opens it, which is itself an (access) event: only changes count,
    // or every poll would trigger the next one.
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.send(());
        }
    })
    .ok()?;
    for f in files {
        w.watch(f, notify::RecursiveMode::NonRecursive).ok()?;
    }
    Some(w)
}

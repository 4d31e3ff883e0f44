//! The one place decisions meet effects: validate everything, open the run, then feed the
//! engine inputs (attempt results, timers, control commands, signals) and carry out its
//! effects until it finishes.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, Instant};

use chrono::Utc;
use regex::Regex;
use serde_json::{Map, Value as Json, json};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::agents::command::{self, PromptContext};
use crate::agents::{Classifier, Scanner, Stream};
use crate::config::{AgentKind, Interface, Settings};
use crate::console;
use crate::effects::git;
use crate::effects::inbox::{self, Inbox};
use crate::effects::outlog::LogWriter;
use crate::effects::process::{
    self, AttemptControl, AttemptExit, OutputSink, SinkAction, SpawnSpec,
};
use crate::effects::store::{self, RunStore};
use crate::effects::{hybrid, procinfo, tmux};
use crate::engine::{
    AttemptReport, AttemptSpec, BackupInfo, Effect, Engine, EngineConfig, Event, Input,
    RetryPolicy, Status, StopReason, WaitPurpose,
};
use crate::error::{Error, Result};
use crate::prompts::{self, PromptSet};

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

/// Everything checked before `run_started` (D6): regexes, prompts, executable, git, lock.
pub struct Prepared {
    pub settings: Settings,
    pub label: String,
    pub prompts: PromptSet,
    separator: Regex,
    completion: Option<Regex>,
    output_match: Option<Regex>,
    classifier: Classifier,
    workspace: Option<git::Workspace>,
    pub program_path: Option<PathBuf>,
    pub notices: Vec<String>,
}

/// Look a program up like `execvp` would.
pub fn find_program(program: &str, cwd: &Path, path_var: Option<&str>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.is_file()
            && std::fs::metadata(p)
                .map(|m| m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
    };
    if program.contains('/') {
        let p = crate::config::absolutize(cwd, Path::new(program));
        return executable(&p).then_some(p);
    }
    std::env::split_paths(path_var?)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
}

fn random_label() -> String {
    format!("Looper_{:06x}", rand::random::<u32>() & 0xff_ffff)
}

pub fn prepare(mut settings: Settings, env_path: Option<&str>) -> Result<Prepared> {
    let mut notices = Vec::new();
    let separator = prompts::compile_separator(&settings.separator)?;
    let compile = |key: &str, pattern: &str| {
        crate::config::layers::compile_regex(pattern, false).map_err(|e| {
            Error::config(
                settings
                    .layers
                    .get(&format!("looper.{key}"))
                    .map(|e| e.origin.to_string())
                    .unwrap_or_default(),
                format!("looper.{key}"),
                "a valid regular expression",
                format!("{pattern:?} ({e})"),
            )
        })
    };
    let completion = settings
        .completion_marker
        .as_deref()
        .map(|p| compile("completion_marker", p))
        .transpose()?;
    let output_match = settings
        .cb_output_match_pattern
        .as_deref()
        .map(|p| compile("cb_output_match_pattern", p))
        .transpose()?;
    let classifier = Classifier::new(&settings.agent.stop_patterns)
        .map_err(|e| Error::Usage(format!("stop_patterns: {e}")))?;
    let prompts = prompts::load(&settings.prompt_file, settings.mode, &separator)?;
    // D12: a prompt that no argv can carry is refused now, not at the first attempt.
    let probe = crate::engine::SessionRef {
        name: "probe".into(),
        id: Some("probe".into()),
        resume: false,
    };
    for (i, prompt) in prompts.prompts.iter().enumerate() {
        let ctx = PromptContext {
            prompt,
            session: &probe,
            loop_number: 1,
            prompt_index: i + 1,
            label: "probe",
            run_dir: "probe",
        };
        if let Err(e) = command::build(&settings.agent, &ctx) {
            return Err(Error::Prompt(format!(
                "{} prompt {}: {e}",
                settings.prompt_file.display(),
                i + 1
            )));
        }
    }

    // D9: hybrid only by default and not inside tmux -> json, said in one line.
    if settings.agent.interface == Interface::Hybrid {
        let in_tmux = std::env::var_os("TMUX").is_some();
        if settings.agent.interface_explicit && !in_tmux && !settings.dry_run {
            return Err(Error::Usage(format!(
                "agents.{}.interface is \"hybrid\", which needs tmux; run inside tmux (or without --local), or pass --interface json",
                settings.agent.name
            )));
        }
        // A dry run shows the pane command wherever a real run would open the pane (inside
        // tmux), or when hybrid was asked for explicitly.
        let shown_anyway = settings.dry_run && settings.agent.interface_explicit;
        let why = (!in_tmux && !shown_anyway).then_some("not inside tmux");
        if let Some(why) = why {
            notices.push(format!(
                "interface: json ({why}; pass --interface json to silence this)"
            ));
            settings.agent.interface = Interface::Json;
        }
    }

    let program = match (&settings.agent.first_command, settings.agent.kind) {
        (Some(t), _) => t.first().cloned().unwrap_or_default(),
        (None, _) => settings.agent.executable.clone(),
    };
    let program_path = find_program(&program, &settings.agent.cwd, env_path);
    if program_path.is_none() && !settings.dry_run {
        return Err(Error::Usage(format!(
            "agent executable not found: {program} (agent `{}`; install it, put it on PATH, or set agents.{}.executable)",
            settings.agent.name, settings.agent.name
        )));
    }

    let needs_git = (settings.backup_enabled || settings.cb_no_progress > 0) && !settings.dry_run;
    let workspace = if needs_git {
        let what = if settings.backup_enabled {
            "--backup"
        } else {
            "--cb-no-progress"
        };
        let ws = git::Workspace::open(&settings.agent.cwd)
            .map_err(|e| Error::Git(format!("{what} needs a git work tree: {e}")))?;
        ws.require_head()
            .map_err(|e| Error::Git(format!("{what}: {e}")))?;
        if settings.backup_enabled {
            git::backup_branch_name(&settings.backup_prefix, Utc::now(), 1).map_err(|e| {
                Error::config(
                    settings
                        .layers
                        .get("looper.backup_prefix")
                        .map(|e| e.origin.to_string())
                        .unwrap_or_default(),
                    "looper.backup_prefix",
                    "a prefix that makes a valid git branch name",
                    format!("{:?} ({e})", settings.backup_prefix),
                )
            })?;
        }
        Some(ws)
    } else {
        None
    };

    let label = settings.label.clone().unwrap_or_else(random_label);
    if let Some(plan) = &settings.plan_file
        && settings.completion_marker.is_some()
        && !plan.exists()
    {
        notices.push(format!(
            "plan file {} does not exist yet; the completion gate will stop the run if it is still missing when the marker appears",
            plan.display()
        ));
    }
    settings.label = Some(label.clone());
    Ok(Prepared {
        settings,
        label,
        prompts,
        separator,
        completion,
        output_match,
        classifier,
        workspace,
        program_path,
        notices,
    })
}

/// Count unchecked tasks (`- [ ]`, `* [ ]`, indented) in a plan file.
pub fn unchecked_tasks(text: &str) -> usize {
    text.lines()
        .filter(|l| {
            let t = l.trim_start();
            let rest = t.strip_prefix("- ").or_else(|| t.strip_prefix("* "));
            rest.is_some_and(|r| r.trim_start().starts_with("[ ]"))
        })
        .count()
}

pub fn human_bytes(n: u64) -> String {
    let g = |v: f64| {
        let s = format!("{v:.1}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    if n < 1024 {
        format!("{n}B")
    } else if n < 1024 * 1024 {
        format!("{}KiB", g(n as f64 / 1024.0))
    } else {
        format!("{}MiB", g(n as f64 / 1048576.0))
    }
}

/// Where an attempt's output goes: the log, the scanner, and maybe the terminal.
struct Sink {
    log: LogWriter,
    scanner: Scanner,
    echo: Option<Echo>,
    kill_on_error: bool,
    log_error: Option<String>,
    notice: Option<String>,
}

/// Renders complete lines for the terminal, bounded per line.
struct Echo {
    partial: [Vec<u8>; 2],
}

impl Echo {
    /// Plain lines are echoed as they are (no allocation); JSON lines are rendered.
    fn render_into(out: &mut Vec<u8>, stream: Stream, line: &[u8]) {
        let body = line.strip_suffix(b"\r").unwrap_or(line);
        match body.iter().find(|b| !b.is_ascii_whitespace()) {
            None => {}
            Some(b'{') => {
                let text = crate::agents::scanner::text_of(body);
                if let Some(r) = crate::transcript::render(stream.as_str(), &text) {
                    out.extend_from_slice(r.as_bytes());
                    out.push(b'\n');
                }
            }
            Some(_) => {
                if stream == Stream::Stderr {
                    out.extend_from_slice(b"stderr: ");
                }
                out.extend_from_slice(body);
                out.push(b'\n');
            }
        }
    }

    fn feed(&mut self, stream: Stream, data: &[u8]) {
        use std::io::Write;
        let i = usize::from(stream == Stream::Stderr);
        let mut rest = data;
        // Plain stdout lines are echoed as they are: write whole blocks without copying.
        if stream == Stream::Stdout
            && self.partial[i].is_empty()
            && let Some(end) = memchr::memrchr(b'\n', data).map(|e| e + 1)
            && memchr::memchr2(b'{', b'\r', &data[..end]).is_none()
        {
            let _ = std::io::stdout().lock().write_all(&data[..end]);
            rest = &data[end..];
        }
        let mut out = Vec::new();
        while let Some(pos) = memchr::memchr(b'\n', rest) {
            let line: &[u8] = if self.partial[i].is_empty() {
                &rest[..pos]
            } else {
                self.partial[i].extend_from_slice(&rest[..pos]);
                &self.partial[i]
            };
            Self::render_into(&mut out, stream, line);
            rest = &rest[pos + 1..];
            self.partial[i].clear();
        }
        let room = 8192usize.saturating_sub(self.partial[i].len());
        self.partial[i].extend_from_slice(&rest[..rest.len().min(room)]);
        if !out.is_empty() {
            let _ = std::io::stdout().lock().write_all(&out);
        }
    }
}

impl OutputSink for Sink {
    fn chunk(&mut self, stream: Stream, data: &[u8]) -> SinkAction {
        if let Err(e) = self.log.chunk(stream, data)
            && self.log_error.is_none()
        {
            self.log_error = Some(format!("cannot write {}: {e}", self.log.path().display()));
        }
        if let Some(echo) = &mut self.echo {
            echo.feed(stream, data);
        }
        let news = self.scanner.feed(stream, data);
        if news.notice.is_some() {
            self.notice = news.notice;
        }
        if self.log_error.is_some() || (news.error && self.kill_on_error) {
            SinkAction::Terminate
        } else {
            SinkAction::Continue
        }
    }

    fn eof(&mut self, stream: Stream) {
        let _ = self.log.eof(stream);
        let news = self.scanner.finish_stream(stream);
        if news.notice.is_some() {
            self.notice = news.notice;
        }
    }
}

/// An attempt in flight: its exit, its sink, and a failure that prevented it from running.
type AttemptFuture =
    Pin<Box<dyn std::future::Future<Output = (AttemptExit, Sink, Option<String>)>>>;

struct Driver {
    p: Prepared,
    store: RunStore,
    engine: Engine,
    opts: RunOptions,
    started: Instant,
    queue: VecDeque<Input>,
    prompts: PromptSet,
    reload_count: u64,
    attempt: Option<AttemptFuture>,
    attempt_ctl: Option<mpsc::UnboundedSender<AttemptControl>>,
    attempt_log: Option<PathBuf>,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
    inbox: Inbox,
    focus: Option<String>,
    /// Size of focus.jsonl when last read: it is re-read only when it grows.
    focus_len: u64,
    finished: Option<StopReason>,
    excluded: Vec<PathBuf>,
    window: tmux::WindowState,
    /// The hybrid agent pane of the current session.
    pane: Option<hybrid::Pane>,
}

impl Driver {
    fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn say(&self, line: impl AsRef<str>) {
        if !self.opts.quiet {
            console::out(line.as_ref());
        }
    }

    fn record(&mut self, event: &Event, extra: Option<Map<String, Json>>) -> Result<()> {
        self.store.append_event(event, Utc::now(), extra)?;
        let sync = match event {
            Event::RunStarted { .. } | Event::RunStopped { .. } => store::Sync::Now,
            Event::LoopCompleted { .. } => store::Sync::Soon,
            // The snapshot is written once the attempt's process is known (with its pid),
            // which follows these at once: one atomic replace instead of three.
            Event::LoopStarted { .. }
            | Event::PromptStarted { .. }
            | Event::NoteDelivered { .. } => {
                return Ok(());
            }
            _ => store::Sync::No,
        };
        self.store.write_state(sync)
    }

    fn apply(&mut self, effect: Effect) -> Result<()> {
        match effect {
            Effect::Record(event) => self.on_event(event)?,
            Effect::SetStatus(status) => {
                self.store.state.status = Some(status.as_str().into());
                if status == Status::Running {
                    self.window.set_running();
                }
            }
            Effect::LoadPrompts => {
                let input = if self.reload_count == 0 || self.p.settings.reload_prompt_each_loop {
                    match prompts::load(
                        &self.p.settings.prompt_file,
                        self.p.settings.mode,
                        &self.p.separator,
                    ) {
                        Ok(set) => {
                            self.prompts = set;
                            self.reload_count += 1;
                            Input::PromptsLoaded {
                                count: self.prompts.prompts.len(),
                            }
                        }
                        Err(e) => Input::PromptsFailed {
                            error: e.to_string(),
                        },
                    }
                } else {
                    Input::PromptsLoaded {
                        count: self.prompts.prompts.len(),
                    }
                };
                self.note_prompt_facts();
                self.queue.push_back(input);
            }
            Effect::Fingerprint => {
                let input = match self.p.workspace.as_mut() {
                    Some(ws) => Input::Fingerprint(
                        ws.fingerprint(&self.excluded)
                            .map(|f| f.to_string())
                            .map_err(|e| e.to_string()),
                    ),
                    None => Input::Fingerprint(Err("no git work tree".into())),
                };
                self.queue.push_back(input);
            }
            Effect::Backup { loop_number } => {
                let s = &self.p.settings;
                let input = match self.p.workspace.as_ref() {
                    Some(ws) => {
                        let made = ws.create_backup(
                            &s.backup_prefix,
                            Utc::now(),
                            loop_number,
                            s.backup_dirty,
                            &self.excluded,
                        );
                        match made {
                            Ok(b) => {
                                let keep = usize::try_from(s.backup_keep).unwrap_or(usize::MAX);
                                match ws.prune_backups(&s.backup_prefix, keep) {
                                    Ok(pruned) => Input::BackupDone(Ok(BackupInfo {
                                        branch: b.branch,
                                        commit: b.commit,
                                        snapshot: b.snapshot,
                                        pruned,
                                    })),
                                    Err(e) => Input::BackupDone(Err(format!(
                                        "pruning {}: {e}",
                                        s.backup_prefix
                                    ))),
                                }
                            }
                            Err(e) => Input::BackupDone(Err(e.to_string())),
                        }
                    }
                    None => Input::BackupDone(Err("no git work tree".into())),
                };
                self.queue.push_back(input);
            }
            Effect::RunAttempt(spec) => {
                // The engine now waits for this attempt's end: a failure to start it (its
                // log cannot be opened, the run directory is gone) must be that end, or the
                // run would wait forever.
                if let Err(e) = self.start_attempt(spec) {
                    self.attempt_ctl = None;
                    self.queue.push_back(Input::AttemptFinished(AttemptReport {
                        spawn_error: Some(e.to_string()),
                        ..AttemptReport::default()
                    }));
                }
            }
            Effect::Wait { seconds, purpose } => {
                if purpose == WaitPurpose::Sleep {
                    self.say(format!(
                        "sleeping {} before the next loop",
                        crate::engine::stop::fmt_duration(seconds)
                    ));
                } else {
                    self.say(format!(
                        "sleeping {} before retry",
                        crate::engine::stop::fmt_duration(seconds)
                    ));
                }
                let until = tokio::time::Instant::now() + Duration::from_secs_f64(seconds.min(1e9));
                self.wait = Some(Box::pin(tokio::time::sleep_until(until)));
            }
            Effect::CheckPlan => {
                let input = match &self.p.settings.plan_file {
                    Some(plan) => match crate::effects::textfile::read(plan).map(|f| f.bytes) {
                        Ok(bytes) => Input::PlanChecked(Ok(unchecked_tasks(
                            &String::from_utf8_lossy(&bytes),
                        ))),
                        Err(_) => Input::PlanChecked(Err(plan.display().to_string())),
                    },
                    None => Input::PlanChecked(Ok(0)),
                };
                self.queue.push_back(input);
            }
            Effect::Terminate { forceful } => {
                if let Some(tx) = &self.attempt_ctl {
                    let _ = tx.send(AttemptControl::Terminate { forceful });
                }
            }
            Effect::CancelWait => self.wait = None,
            Effect::Finish(reason) => {
                self.say(format!("STOP: {}", reason.reason()));
                self.window.finish(&reason);
                self.finished = Some(reason);
            }
        }
        Ok(())
    }

    fn note_prompt_facts(&mut self) {
        let st = &mut self.store.state;
        st.prompt_sha256 = Some(self.prompts.sha256.clone());
        st.prompt_bytes = Some(self.prompts.bytes);
        st.prompt_mtime = self.prompts.mtime.clone();
        st.prompt_reload_count = Some(self.reload_count);
        st.total_prompts = Some(self.prompts.prompts.len() as u64);
    }

    fn on_event(&mut self, event: Event) -> Result<()> {
        let mut extra = None;
        match &event {
            Event::LoopStarted {
                loop_number,
                session,
                total_prompts,
                ..
            } => {
                self.say(format!(
                    "== loop {loop_number} ({total_prompts} prompt(s)) session {session}"
                ));
            }
            Event::BackupCreated { branch, pruned, .. } => {
                self.say(format!("backup branch: {branch}"));
                for p in pruned {
                    self.say(format!("pruned backup branch: {p}"));
                }
            }
            Event::PromptStarted {
                loop_number,
                prompt_index,
                ..
            } => {
                let log = self.store.path(&format!(
                    "loop-{loop_number:04}__prompt-{prompt_index:03}.log"
                ));
                self.store.state.last_log = Some(log.display().to_string());
                self.attempt_log = Some(log.clone());
                let mut m = Map::new();
                m.insert("log".into(), json!(log));
                extra = Some(m);
            }
            Event::PromptCompleted { error: Some(e), .. } => {
                self.say(format!("agent error: {e}"));
            }
            Event::RetryWait {
                retry_status,
                wait_seconds,
                ..
            } => {
                self.say(format!("RETRY: {retry_status}"));
                if let Some(log) = &self.attempt_log {
                    self.say(format!("last log: {}", log.display()));
                }
                self.window.retrying(
                    retry_status,
                    *wait_seconds,
                    self.p.settings.retry_notify_after_seconds,
                );
            }
            Event::LoopCompleted {
                loop_number,
                duration_seconds,
                output_bytes,
                completion_blocked_by_plan,
                plan_unchecked,
                ..
            } => {
                self.say(format!(
                    "loop metrics: loop={loop_number} duration={}s output={}",
                    {
                        let s = format!("{duration_seconds:.2}");
                        s.trim_end_matches('0').trim_end_matches('.').to_string()
                    },
                    human_bytes(*output_bytes)
                ));
                if *completion_blocked_by_plan {
                    self.say(format!(
                        "completion marker seen but the plan still has {} unchecked task(s); streak reset",
                        plan_unchecked.unwrap_or(0)
                    ));
                }
            }
            Event::ControlCommandReceived { action, id, .. } => {
                self.say(format!("control: received {action} ({id})"));
            }
            Event::Paused { .. } => self.say("paused: waiting for `looper control resume`"),
            Event::Resumed { .. } => self.say("resumed"),
            _ => {}
        }
        self.record(&event, extra)
    }

    fn start_attempt(&mut self, spec: AttemptSpec) -> Result<()> {
        let s = &self.p.settings;
        let Some(base) = self
            .prompts
            .prompts
            .get(spec.prompt_index.saturating_sub(1))
        else {
            self.queue.push_back(Input::AttemptFinished(AttemptReport {
                spawn_error: Some(format!(
                    "prompt {} no longer exists in {}",
                    spec.prompt_index,
                    self.prompts.path.display()
                )),
                ..AttemptReport::default()
            }));
            return Ok(());
        };
        let mut prompt = base.clone();
        for (_, note) in &spec.notes {
            prompt.push_str("\n\nOperator note: ");
            prompt.push_str(note);
        }
        let run_dir = self.store.dir.display().to_string();
        let ctx = PromptContext {
            prompt: &prompt,
            session: &spec.session,
            loop_number: spec.loop_number,
            prompt_index: spec.prompt_index,
            label: &self.p.label,
            run_dir: &run_dir,
        };
        let cmd = match command::build(&s.agent, &ctx) {
            Ok(c) => c,
            Err(e) => {
                self.queue.push_back(Input::AttemptFinished(AttemptReport {
                    spawn_error: Some(e.to_string()),
                    ..AttemptReport::default()
                }));
                return Ok(());
            }
        };
        // The hybrid pane runs the TUI, not this command.
        if s.agent.interface == Interface::Hybrid && !spec.dry_run {
            return self.start_hybrid_attempt(spec, prompt);
        }
        let shown = if s.agent.interface == Interface::Hybrid {
            // Only a dry run gets here: show what the pane would run.
            let argv = command::interactive(&s.agent, &self.program_shown(), &spec.session);
            let (program, args) = argv.split_first().unwrap_or((&s.agent.executable, &[]));
            let pane = command::AgentCommand {
                program: program.clone(),
                args: args.to_vec(),
                stdin: None,
            };
            format!(
                "{} (in a hybrid pane; the prompt is pasted)",
                pane.display()
            )
        } else {
            cmd.display()
        };
        let shown = if shown.len() > 600 {
            format!("{}…", &shown[..shown.floor_char_boundary(600)])
        } else {
            shown
        };
        self.say(format!("$ {shown}"));
        if spec.dry_run {
            self.queue.push_back(Input::AttemptFinished(AttemptReport {
                exit_code: Some(0),
                dry_run: true,
                ..AttemptReport::default()
            }));
            return Ok(());
        }
        let mut log = self.open_attempt_log(&spec, &format!("$ {shown}"))?;
        let env = agent_env(s, &self.store, &self.p.label);
        let spawn_spec = SpawnSpec {
            program: self
                .p
                .program_path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or(cmd.program.clone()),
            args: cmd.args.clone(),
            env,
            cwd: s.agent.cwd.clone(),
            stdin: cmd.stdin.clone(),
            timeout: Duration::from_secs_f64(s.timeout_seconds.min(1e9)),
            grace: Duration::from_secs_f64(s.terminate_grace_seconds),
            leak_timeout: Duration::from_secs_f64(s.pipe_leak_timeout_seconds),
        };
        let spawn_spec = if s.agent.first_command.is_some() {
            SpawnSpec {
                program: self
                    .p
                    .program_path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or(cmd.program),
                ..spawn_spec
            }
        } else {
            spawn_spec
        };
        let spawned = match process::spawn(&spawn_spec) {
            Ok(sp) => sp,
            Err(e) => {
                let _ = log.note("stop_reason", &format!("failed to start agent: {e}"));
                self.queue.push_back(Input::AttemptFinished(AttemptReport {
                    spawn_error: Some(format!("{}: {e}", spawn_spec.program)),
                    ..AttemptReport::default()
                }));
                return Ok(());
            }
        };
        self.store.state.child_pid = Some(i64::from(spawned.pid));
        self.store.state.child_pgid = Some(i64::from(spawned.guard.pgid));
        self.store.write_state(store::Sync::No)?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.attempt_ctl = Some(tx);
        let mut sink = self.new_sink(log, self.opts.echo_transcript);
        self.attempt = Some(Box::pin(async move {
            let exit = process::supervise(spawned, &spawn_spec, &mut sink, &mut rx).await;
            (exit, sink, None)
        }));
        Ok(())
    }

    /// The prompt's log (retries append to it), opened with a note naming the attempt.
    fn open_attempt_log(&self, spec: &AttemptSpec, how: &str) -> Result<LogWriter> {
        let path = self
            .attempt_log
            .clone()
            .unwrap_or_else(|| self.store.path("attempt.log"));
        let mut log = LogWriter::open(&path).map_err(|e| Error::io("cannot open log", &path, e))?;
        let _ = log.note(
            "looper",
            &format!(
                "attempt {} of prompt {}: {how}",
                spec.attempt, spec.prompt_index
            ),
        );
        Ok(log)
    }

    fn new_sink(&self, log: LogWriter, echo: bool) -> Sink {
        let s = &self.p.settings;
        Sink {
            log,
            scanner: Scanner::new(
                s.agent.kind,
                s.agent.scan_stdout_for_stop_patterns,
                self.p.completion.clone(),
                self.p.output_match.clone(),
                self.p.classifier.clone(),
                Utc::now().timestamp_millis() as f64 / 1000.0,
            ),
            echo: echo.then(|| Echo {
                partial: [Vec::new(), Vec::new()],
            }),
            kill_on_error: s.kill_on_stop_pattern,
            log_error: None,
            notice: None,
        }
    }

    /// The agent's program as found on PATH, or as configured.
    fn program_shown(&self) -> String {
        self.p
            .program_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or(self.p.settings.agent.executable.clone())
    }

    /// A turn in the hybrid pane: (re)start the pane for this session, paste, follow the
    /// transcript.
    fn start_hybrid_attempt(&mut self, spec: AttemptSpec, prompt: String) -> Result<()> {
        let s = &self.p.settings;
        let session_id = spec.session.id.clone().unwrap_or_default();
        // A pane serves one session; a new one (a codex session has no id yet) gets its own.
        if self
            .pane
            .as_ref()
            .is_some_and(|p| session_id.is_empty() || p.session_id != session_id)
            && let Some(old) = self.pane.take()
        {
            hybrid::kill_pane(&old);
            let mut m = serde_json::Map::new();
            m.insert("previous_hybrid_pane_id".into(), json!(old.id));
            self.store
                .append_raw("hybrid_session_reset", Utc::now(), m)?;
            self.store.state.previous_hybrid_pane_id = Some(old.id);
        }
        // A pane closed between turns (by hand, or a crash while idle): its session goes on
        // in a new one, resumed by id.
        if let Some(gone) = self.pane.take_if(|p| hybrid::is_gone(p)) {
            self.say(format!(
                "hybrid {} pane {} is gone; reopening session {}",
                gone.tui.name(),
                gone.id,
                gone.session_id
            ));
            hybrid::kill_pane(&gone);
        }
        let mut log = self.open_attempt_log(&spec, "(hybrid pane)")?;
        if self.pane.is_none() {
            let mut env = agent_env(s, &self.store, &self.p.label);
            for k in ["CODEX_HOME", "CLAUDE_CONFIG_DIR", "CLAUDE_HOME"] {
                if !s.agent.env.contains_key(k)
                    && let Ok(v) = std::env::var(k)
                {
                    env.push((k.to_string(), v));
                }
            }
            let argv = command::interactive(&s.agent, &self.program_shown(), &spec.session);
            let lookup = |k: &str| {
                s.agent
                    .env
                    .get(k)
                    .cloned()
                    .or_else(|| std::env::var(k).ok())
            };
            let tui = if s.agent.kind == AgentKind::Codex {
                hybrid::Tui::Codex
            } else {
                hybrid::Tui::Claude
            };
            let transcript = hybrid::pane_transcript(tui, lookup, &s.agent.cwd, &spec.session);
            let target = std::env::var("TMUX_PANE").unwrap_or_default();
            match hybrid::start_pane(
                &target,
                &s.agent.cwd,
                &env,
                &argv,
                tui,
                &session_id,
                transcript,
            ) {
                Ok(pane) => {
                    let session = if session_id.is_empty() {
                        format!("a new {} session", tui.name())
                    } else {
                        format!("session {session_id}")
                    };
                    self.say(format!(
                        "hybrid {} pane {} (pid {}) for {session}",
                        tui.name(),
                        pane.id,
                        pane.pid
                    ));
                    let mut m = serde_json::Map::new();
                    m.insert("tui".into(), json!(tui.name()));
                    m.insert("pane_id".into(), json!(pane.id));
                    m.insert("pane_pid".into(), json!(pane.pid));
                    m.insert(
                        "session_id".into(),
                        json!(Some(&session_id).filter(|s| !s.is_empty())),
                    );
                    m.insert("argv".into(), json!(argv));
                    self.store.state.hybrid_pane_id = Some(pane.id.clone());
                    self.store.state.hybrid_pane_pid = Some(json!(pane.pid));
                    // Held first, so the run's end closes it even if the records fail.
                    self.pane = Some(pane);
                    self.store
                        .append_raw("hybrid_pane_started", Utc::now(), m)?;
                    self.store.write_state(store::Sync::No)?;
                }
                Err(e) => {
                    let _ = log.note("stop_reason", &e);
                    self.queue.push_back(Input::AttemptFinished(AttemptReport {
                        spawn_error: Some(e),
                        ..AttemptReport::default()
                    }));
                    return Ok(());
                }
            }
        }
        let Some(pane) = self.pane.clone() else {
            return Ok(());
        };
        self.say(format!(
            "prompt {} ({} bytes) to {} pane {}",
            spec.prompt_index,
            prompt.len(),
            pane.tui.name(),
            pane.id
        ));
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.attempt_ctl = Some(tx);
        let mut sink = self.new_sink(log, false);
        let timeout = Duration::from_secs_f64(s.timeout_seconds.min(1e9));
        self.attempt = Some(Box::pin(async move {
            match hybrid::run_turn(&pane, &prompt, timeout, &mut sink, &mut rx).await {
                Ok(exit) => (exit, sink, None),
                Err(e) => (AttemptExit::default(), sink, Some(e)),
            }
        }));
        Ok(())
    }

    fn attempt_done(
        &mut self,
        exit: AttemptExit,
        mut sink: Sink,
        failure: Option<String>,
    ) -> Result<()> {
        self.attempt_ctl = None;
        if let Some(e) = failure {
            let _ = sink.log.note("stop_reason", &e);
            self.queue.push_back(Input::AttemptFinished(AttemptReport {
                spawn_error: Some(e),
                output_bytes: sink.scanner.bytes,
                ..AttemptReport::default()
            }));
            return Ok(());
        }
        let rc = match (exit.exit_code, exit.signal) {
            (Some(c), _) => c.to_string(),
            (None, Some(sig)) => format!("signal {sig}"),
            _ => "unknown".into(),
        };
        let _ = sink.log.note("returncode", &rc);
        // The agent's end is not known (issue 13, defect 2): a supervisor failure, never a success.
        if let Some(e) = &exit.error {
            let _ = sink.log.note("stop_reason", e);
            self.queue.push_back(Input::Failure(e.clone()));
        }
        if exit.timed_out {
            let _ = sink.log.note(
                "stop_reason",
                &format!(
                    "local timeout after {} seconds",
                    crate::engine::stop::fmt_secs(self.p.settings.timeout_seconds)
                ),
            );
        } else if let Some(e) = &sink.scanner.error {
            let _ = sink.log.note("stop_reason", &e.reason);
        }
        if exit.pipes_leaked {
            let _ = sink.log.note(
                "looper",
                "the agent exited but a descendant held its output open; the group was killed",
            );
        }
        if let Some(err) = sink.log_error.take() {
            self.queue.push_back(Input::Failure(err));
        }
        if let Some(n) = sink.notice.take() {
            self.store.state.agent_notice = Some(n);
        }
        let sc = &sink.scanner;
        if let Some(pane) = self.pane.as_mut() {
            pane.turns += 1;
            if let Some(id) = &sc.session_id {
                pane.learn_session(id);
            }
        }
        self.queue.push_back(Input::AttemptFinished(AttemptReport {
            exit_code: exit.exit_code,
            signal: exit.signal,
            timed_out: exit.timed_out,
            spawn_error: None,
            output_bytes: sc.bytes,
            completion_seen: sc.completion_seen,
            output_match_seen: sc.match_seen,
            session_id: sc.session_id.clone(),
            usage: sc.usage,
            error: sc.error.clone(),
            dry_run: false,
        }));
        Ok(())
    }

    fn poll_inbox(&mut self) {
        for cmd in self.inbox.poll() {
            self.queue.push_back(Input::Control(cmd));
        }
        for w in self.inbox.warnings.drain(..) {
            console::err(&format!("looper: warning: {w}"));
        }
        let focus_path = self.store.path(store::FOCUS_FILE);
        let len = std::fs::metadata(&focus_path).map(|m| m.len()).unwrap_or(0);
        if len == self.focus_len {
            return;
        }
        self.focus_len = len;
        let focus = inbox::latest_focus(&focus_path);
        if focus.is_some() && focus != self.focus {
            self.say(format!("focus: {}", focus.as_deref().unwrap_or("")));
            self.store.state.focus = focus.clone();
            self.focus = focus;
        }
    }
}

/// The agent's environment: the supervisor's, the agent table's, and the run context with
/// absolute paths under both names (D4).
fn agent_env(s: &Settings, store: &RunStore, label: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = s
        .agent
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let ctx = [
        ("RUN_DIR", store.dir.display().to_string()),
        ("LABEL", label.to_string()),
        (
            "CONTROL_FILE",
            store.path(store::CONTROL_FILE).display().to_string(),
        ),
        (
            "FOCUS_FILE",
            store.path(store::FOCUS_FILE).display().to_string(),
        ),
        (
            "OPERATOR_NOTES_FILE",
            store.path(store::NOTES_FILE).display().to_string(),
        ),
    ];
    for (k, v) in ctx {
        env.push((format!("CODEX_LOOPER_{k}"), v.clone()));
        env.push((format!("LOOPER_{k}"), v));
    }
    env
}

fn engine_config(p: &Prepared) -> EngineConfig {
    let s = &p.settings;
    let pos = |v: f64| (v > 0.0).then_some(v);
    EngineConfig {
        label: p.label.clone(),
        max_loops: s.max_loops,
        sleep_seconds: s.sleep_seconds,
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
            backoff_base: s.retry_backoff_base_seconds,
            backoff_max: s.retry_backoff_max_seconds,
            rate_limit_max_wait: s.rate_limit_max_wait_seconds,
        },
        ignore_nonzero: s.ignore_nonzero,
        timeout_seconds: s.timeout_seconds,
        dry_run: s.dry_run,
        backup: s.backup_enabled,
        max_runtime_seconds: pos(s.max_runtime_seconds),
        max_tokens: (s.max_tokens > 0).then_some(s.max_tokens),
        max_cost_usd: pos(s.max_cost_usd),
        preassign_session_ids: s.agent.kind != AgentKind::Codex,
        failed_start_keeps_session: s.agent.kind != AgentKind::Gemini,
    }
}

/// The run directory of the run in progress, for the panic hook.
static CURRENT_RUN: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

/// Even a panic ends the run on record (D11): the hook marks the state `error` and appends
/// `run_stopped`; the guard process then ends the agent's group as the supervisor exits.
fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let dir = CURRENT_RUN.lock().ok().and_then(|g| g.clone());
        if let Some(dir) = dir {
            let reason = format!("supervisor error: panic: {info}");
            let now = crate::state::timestamp(Utc::now());
            let state_path = dir.join(store::STATE_FILE);
            let state = store::read_state(&state_path).ok();
            // A panic after the end is on record does not rewrite that end; it is noted.
            if state
                .as_ref()
                .is_some_and(|st| st.last_event.as_deref() == Some("run_stopped"))
            {
                let line = json!({"ts": now, "event": "supervisor_panic", "error": reason});
                let _ = store::append_line(&dir.join(store::EVENTS_FILE), &line.to_string());
                previous(info);
                return;
            }
            if let Some(mut st) = state {
                st.status = Some("error".into());
                st.stop_reason = Some(reason.clone());
                st.exit_code = Some(1);
                st.last_event = Some("run_stopped".into());
                st.updated_at = Some(now.clone());
                st.completed_at = Some(now.clone());
                if let Ok(bytes) = serde_json::to_vec_pretty(&st) {
                    let _ = store::write_atomic(&state_path, &bytes, true);
                }
            }
            let line = json!({"ts": now, "event": "run_stopped", "status": "error", "stop_reason": reason, "exit_code": 1});
            let _ = store::append_line(&dir.join(store::EVENTS_FILE), &line.to_string());
        }
        previous(info);
    }));
}

/// Run a prepared loop to its end and return the exit code. The lock must be held.
pub async fn run(mut p: Prepared, mut opts: RunOptions, lock_note: Option<Json>) -> Result<i32> {
    let s = &p.settings;
    let now = Utc::now();
    let (stamp, random) = opts.run_id.unwrap_or_else(|| (now, rand::random()));
    let mut store = RunStore::create(&s.log_dir, &p.label, stamp, random)?;
    store.set_durable(!s.dry_run);
    let env_map: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    if let Some(reg) = store::registry_path(&env_map) {
        let _ = store::register_run(&reg, &store.dir, now);
    }
    let me = std::process::id() as i32;
    let files = [
        store.path(store::CONTROL_FILE).display().to_string(),
        store.path(store::FOCUS_FILE).display().to_string(),
        store.path(store::NOTES_FILE).display().to_string(),
    ];
    {
        let st = &mut store.state;
        st.schema_version = Some(crate::state::SCHEMA_VERSION);
        st.looper_version = Some(env!("CARGO_PKG_VERSION").into());
        st.run_id = Some(store.run_id.clone());
        st.run_dir = Some(store.dir.display().to_string());
        st.label = Some(p.label.clone());
        st.agent_name = Some(s.agent.name.clone());
        st.agent_kind = Some(s.agent.kind.as_str().into());
        st.agent_interface = Some(s.agent.interface.as_str().into());
        st.agent_cwd = Some(s.agent.cwd.display().to_string());
        st.config_path = Some(s.config_path.display().to_string());
        st.prompt_file = Some(s.prompt_file.display().to_string());
        st.mode = Some(s.mode.as_str().into());
        st.reload_prompt_each_loop = Some(s.reload_prompt_each_loop);
        let [control, focus, notes] = files;
        st.control_file = Some(control);
        st.focus_log_file = Some(focus);
        st.operator_notes_file = Some(notes);
        st.output_match_pattern = s.cb_output_match_pattern.clone();
        st.pid = Some(i64::from(me));
        st.pid_identity = procinfo::pid_identity(me);
    }
    let excluded = vec![s.log_dir.clone(), store.dir.clone()];
    install_panic_hook();
    if let Ok(mut current) = CURRENT_RUN.lock() {
        *current = Some(store.dir.clone());
    }
    let inbox = Inbox::new(&store.path(store::CONTROL_FILE));
    let seed: u64 = rand::random();
    let engine = Engine::new(engine_config(&p), seed);
    let window = tmux::WindowState::new(&store.dir);
    if opts.split_live_view {
        match window.open_live_view(&store.dir) {
            Ok(pane) => {
                opts.echo_transcript = false;
                p.notices.push(format!(
                    "live view in tmux pane {pane}; the transcript is shown there"
                ));
            }
            Err(e) => p.notices.push(format!(
                "cannot open the live-view pane ({e}); the transcript is shown here"
            )),
        }
    }
    let prompts = p.prompts.clone();
    let mut d = Driver {
        p,
        store,
        engine,
        opts,
        started: Instant::now(),
        queue: VecDeque::from([Input::Start]),
        prompts,
        reload_count: 0,
        attempt: None,
        attempt_ctl: None,
        attempt_log: None,
        wait: None,
        inbox,
        focus: None,
        focus_len: 0,
        finished: None,
        excluded,
        window,
        pane: None,
    };
    d.say(format!(
        "looper: run {} label {} agent {} ({}, {}) cwd {}",
        d.store.run_id,
        d.p.label,
        d.p.settings.agent.name,
        d.p.settings.agent.kind.as_str(),
        d.p.settings.agent.interface.as_str(),
        d.p.settings.agent.cwd.display()
    ));
    for n in d.p.notices.clone() {
        d.say(format!("looper: {n}"));
    }
    d.say("focus: not reported yet");
    d.say(format!(
        "control: looper control stop|pause|note|focus --run-dir {}",
        d.store.dir.display()
    ));
    if let Some(note) = lock_note
        && let Json::Object(m) = note
    {
        d.store.append_raw("lock_taken_over", Utc::now(), m)?;
    }
    d.window.set_running();

    // Wake-ups: file watch on the run directory, a slow safety poll, signals.
    let (watch_tx, mut watch_rx) = mpsc::unbounded_channel::<()>();
    // A dry run runs nothing to steer: no watcher thread for it.
    let _watcher = if d.p.settings.dry_run {
        None
    } else {
        watch_files(
            &[
                d.store.path(store::CONTROL_FILE),
                d.store.path(store::FOCUS_FILE),
            ],
            watch_tx,
        )
    };
    let mut safety_poll = tokio::time::interval(Duration::from_secs(2));
    safety_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sigint =
        signal(SignalKind::interrupt()).map_err(|e| Error::io("cannot watch", "SIGINT", e))?;
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| Error::io("cannot watch", "SIGTERM", e))?;
    let mut sighup =
        signal(SignalKind::hangup()).map_err(|e| Error::io("cannot watch", "SIGHUP", e))?;
    let mut interrupts = 0u32;
    let runtime_deadline = (d.p.settings.max_runtime_seconds > 0.0).then(|| {
        tokio::time::Instant::now()
            + Duration::from_secs_f64(d.p.settings.max_runtime_seconds.min(1e9))
    });
    let mut runtime_fired = false;
    let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365 * 10);

    d.poll_inbox();
    loop {
        while let Some(input) = d.queue.pop_front() {
            let now = d.now();
            for effect in d.engine.step(now, input) {
                if let Err(e) = d.apply(effect) {
                    // Records failing is itself a reason to stop; say so once.
                    let msg = e.to_string();
                    console::err(&format!("looper: {msg}"));
                    if d.finished.is_none() {
                        d.queue.push_back(Input::Failure(msg));
                    }
                }
            }
        }
        if d.finished.is_some() && d.attempt.is_none() {
            break;
        }
        if d.finished.is_some() && d.engine.is_finished() && d.attempt.is_some() {
            // The engine ended while an attempt still runs (records failed): stop it.
            if let Some(tx) = &d.attempt_ctl {
                let _ = tx.send(AttemptControl::Terminate { forceful: false });
            }
        }
        tokio::select! {
            done = async { match d.attempt.as_mut() { Some(f) => f.await, None => std::future::pending().await } } => {
                d.attempt = None;
                let (exit, sink, failure) = done;
                d.attempt_done(exit, sink, failure)?;
            }
            _ = async { match d.wait.as_mut() { Some(w) => w.await, None => std::future::pending().await } } => {
                d.wait = None;
                d.queue.push_back(Input::WaitElapsed);
            }
            Some(()) = watch_rx.recv() => {
                while watch_rx.try_recv().is_ok() {}
                d.poll_inbox();
            }
            _ = safety_poll.tick() => d.poll_inbox(),
            _ = sigint.recv() => {
                interrupts += 1;
                d.queue.push_back(Input::Signal { name: "SIGINT", forceful: interrupts > 1 });
            }
            _ = sigterm.recv() => d.queue.push_back(Input::Signal { name: "SIGTERM", forceful: false }),
            _ = sighup.recv() => d.queue.push_back(Input::Signal { name: "SIGHUP", forceful: false }),
            _ = tokio::time::sleep_until(runtime_deadline.unwrap_or(far)), if runtime_deadline.is_some() && !runtime_fired => {
                runtime_fired = true;
                d.queue.push_back(Input::RuntimeExpired);
            }
        }
    }
    if let Some(pane) = d.pane.take()
        && !d.p.settings.keep_agent_pane
    {
        hybrid::kill_pane(&pane);
    }
    if let Ok(mut current) = CURRENT_RUN.lock() {
        *current = None;
    }
    // The records of the end may have failed (a full disk): try the final state once more
    // and, if it still cannot be written, say so plainly and do not exit 0 (the run did
    // not end as asked if its end is not on record).
    let unrecorded = d.store.write_state(store::Sync::Now).err();
    if let Some(e) = &unrecorded {
        console::err(&format!(
            "looper: cannot record the end of run {} in state.json ({e}); `looper status` will show it as stale until `looper status --repair-stale`",
            d.store.dir.display()
        ));
    }
    d.store.release_reserve();
    let reason = d.finished.take().unwrap_or(StopReason::Internal(
        "the run ended without a reason".into(),
    ));
    match reason.exit_code() {
        0 if unrecorded.is_some() => Ok(crate::error::exit_code::AGENT_FAILED),
        code => Ok(code),
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

//! The dispatcher, effect by effect, with recording fakes in place of every port (in the
//! style of watchexec's `TestChild`): no process, tmux or git is touched. Each fake appends
//! to one shared list of calls, so a test asserts what was done and in which order.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use super::*;
use crate::agents::Stream;
use crate::config::{Invocation, Settings};
use crate::driver::ports::{
    Accounts, AgentProcesses, Checkout, CliFiles, Console, DailySpend, Finished, NotStarted,
    PaneRequest, Panes, Records, SessionHolders, Window, Workspace,
};
use crate::effects::holders::Holder;
use crate::effects::process::OutputSink;
use crate::effects::worktree::{Changes, Outcome};
use crate::engine::{BackupInfo, SessionRef, WaitPurpose};
use crate::records::RunState;
use crate::records::accounts::{AccountRecord, AccountUpdate};
use crate::records::daily::Today;

#[derive(Clone, Debug, PartialEq)]
enum Call {
    Spawn { program: String, args: Vec<String> },
    OpenPane { session_id: String },
    PaneGone(String),
    ClosePane(String),
    Turn { pane: String, prompt: String },
    PasteNote { pane: String, text: String },
    Note { status: String },
    Fingerprint,
    Backup(u64),
    Append(&'static str),
    AppendSupervisor(&'static str),
    Save(Sync),
    Running,
    Retrying(String),
    Finished(String),
    Say(String),
    Changes(String),
    FinishCheckout { pane_kept: bool },
    RequestApproval(String),
    AsksDelivered(Vec<String>),
    Notify(&'static str),
    ReadAccount,
    UpdateAccount(AccountUpdate),
    Today,
    Stamp(PathBuf),
    Version(PathBuf),
    Release { session_id: String, pgid: i32 },
}

/// Shared by every fake (`Send`: the workspace fake moves to a blocking thread).
type Calls = std::sync::Arc<std::sync::Mutex<Vec<Call>>>;

/// What the fake agent does when spawned: output, then an exit.
#[derive(Clone, Default)]
struct Script {
    stdout: Vec<u8>,
    exit: AttemptExit,
    spawn_error: Option<String>,
}

struct FakeAgents {
    calls: Calls,
    scripts: Rc<RefCell<VecDeque<Script>>>,
    controls: Rc<RefCell<Vec<mpsc::UnboundedReceiver<AttemptControl>>>>,
}

impl AgentProcesses for FakeAgents {
    fn spawn(
        &mut self,
        spec: SpawnSpec,
        mut sink: Sink,
    ) -> std::result::Result<Started, Box<NotStarted>> {
        self.calls.lock().expect("calls").push(Call::Spawn {
            program: spec.program.clone(),
            args: spec.args.clone(),
        });
        let script = self.scripts.borrow_mut().pop_front().unwrap_or_default();
        if let Some(why) = script.spawn_error {
            return Err(Box::new(NotStarted { why, sink }));
        }
        sink.chunk(Stream::Stdout, &script.stdout);
        sink.eof(Stream::Stdout);
        sink.eof(Stream::Stderr);
        let (tx, rx) = mpsc::unbounded_channel();
        self.controls.borrow_mut().push(rx);
        let exit = script.exit;
        Ok(Started {
            pid: Some(4242),
            pgid: Some(4241),
            control: tx,
            done: Box::pin(std::future::ready(Finished {
                exit,
                sink,
                failure: None,
            })),
        })
    }
}

struct FakePanes {
    calls: Calls,
    gone: Rc<RefCell<bool>>,
    opened: u32,
}

impl Panes for FakePanes {
    fn open(&mut self, req: &PaneRequest) -> std::result::Result<Pane, String> {
        self.calls.lock().expect("calls").push(Call::OpenPane {
            session_id: req.session_id.clone(),
        });
        self.opened += 1;
        *self.gone.borrow_mut() = false;
        Ok(Pane {
            id: format!("%{}", self.opened),
            pid: 100 + self.opened as i32,
            tui: req.tui,
            session_id: req.session_id.clone(),
            transcript: req.transcript.clone(),
            started: std::time::SystemTime::now(),
            turns: 0,
        })
    }

    fn gone(&mut self, pane: &Pane) -> bool {
        self.calls
            .lock()
            .expect("calls")
            .push(Call::PaneGone(pane.id.clone()));
        *self.gone.borrow()
    }

    fn close(&mut self, pane: &Pane) {
        self.calls
            .lock()
            .expect("calls")
            .push(Call::ClosePane(pane.id.clone()));
    }

    fn paste_note(&mut self, pane: &Pane, text: &str) -> std::result::Result<(), String> {
        self.calls.lock().expect("calls").push(Call::PasteNote {
            pane: pane.id.clone(),
            text: text.to_string(),
        });
        Ok(())
    }

    fn turn(&mut self, pane: Pane, prompt: String, _timeout: Duration, mut sink: Sink) -> Started {
        self.calls.lock().expect("calls").push(Call::Turn {
            pane: pane.id.clone(),
            prompt,
        });
        sink.eof(Stream::Stdout);
        let (tx, _rx) = mpsc::unbounded_channel();
        Started {
            pid: None,
            pgid: None,
            control: tx,
            done: Box::pin(std::future::ready(Finished {
                exit: AttemptExit {
                    exit_code: Some(0),
                    ..AttemptExit::default()
                },
                sink,
                failure: None,
            })),
        }
    }
}

struct FakeWorkspace {
    calls: Calls,
}

impl Workspace for FakeWorkspace {
    fn fingerprint(&mut self) -> std::result::Result<String, String> {
        self.calls.lock().expect("calls").push(Call::Fingerprint);
        Ok("fp-1".into())
    }

    fn backup(&mut self, loop_number: u64) -> std::result::Result<BackupInfo, String> {
        self.calls
            .lock()
            .expect("calls")
            .push(Call::Backup(loop_number));
        Ok(BackupInfo {
            branch: format!("looper-backup/x-loop-{loop_number:04}"),
            commit: "c0ffee".into(),
            snapshot: false,
            pruned: vec![],
        })
    }
}

/// A checkout that answers with fixed changes and keeps the worktree at its end.
struct FakeCheckout {
    calls: Calls,
    worktree: bool,
}

impl Checkout for FakeCheckout {
    fn changes(&mut self, base: &str) -> std::result::Result<Changes, String> {
        self.calls
            .lock()
            .expect("calls")
            .push(Call::Changes(base.to_string()));
        Ok(Changes {
            branch: Some("looper/t".into()),
            head: "c0ffee".into(),
            commits_ahead: 2,
            files_changed: 5,
            dirty_paths: 0,
        })
    }

    fn finish(&mut self, pane_kept: bool, _closed_pane: Option<i32>) -> Option<Outcome> {
        self.calls
            .lock()
            .expect("calls")
            .push(Call::FinishCheckout { pane_kept });
        self.worktree.then(|| Outcome {
            path: "/repo/.agent-looper/worktrees/t".into(),
            branch: "looper/t".into(),
            removed: false,
            branch_removed: false,
            reasons: vec![crate::engine::worktree::KeepReason::NewCommits(2)],
            facts: crate::engine::worktree::Facts::default(),
            changes: Changes::default(),
            error: None,
        })
    }

    fn is_worktree(&self) -> bool {
        self.worktree
    }
}

struct FakeRecords {
    calls: Calls,
    dir: PathBuf,
    state: RunState,
}

impl Records for FakeRecords {
    fn append(&mut self, event: &Event) -> Result<()> {
        self.calls
            .lock()
            .expect("calls")
            .push(Call::Append(event.name()));
        self.state.apply(event, chrono::Utc::now());
        Ok(())
    }

    fn append_supervisor(&mut self, event: &SupervisorEvent) -> Result<()> {
        self.calls
            .lock()
            .expect("calls")
            .push(Call::AppendSupervisor(event.name()));
        self.state.apply_supervisor(event, chrono::Utc::now());
        Ok(())
    }

    fn save(&mut self, sync: Sync) -> Result<()> {
        self.calls.lock().expect("calls").push(Call::Save(sync));
        Ok(())
    }

    fn state(&mut self) -> &mut RunState {
        &mut self.state
    }

    fn prompt_log(&self, loop_number: u64, prompt_index: usize) -> PathBuf {
        self.dir
            .join(crate::records::prompt_log_name(loop_number, prompt_index))
    }

    fn release_reserve(&mut self) {}

    fn note(&mut self, record: &crate::records::control::NoteRecord) -> Result<()> {
        self.calls.lock().expect("calls").push(Call::Note {
            status: record.status.clone(),
        });
        Ok(())
    }
    fn request_approval(&mut self, req: &crate::engine::ApprovalRequest) -> Result<()> {
        self.calls
            .lock()
            .expect("calls")
            .push(Call::RequestApproval(req.id.clone()));
        Ok(())
    }

    fn asks_delivered(&mut self, ids: &[String]) -> Result<()> {
        self.calls
            .lock()
            .expect("calls")
            .push(Call::AsksDelivered(ids.to_vec()));
        Ok(())
    }
}

struct FakeNotifier {
    calls: Calls,
}

impl crate::driver::ports::Notifier for FakeNotifier {
    fn fire(&mut self, n: &crate::engine::notify::Notification) {
        self.calls
            .lock()
            .expect("calls")
            .push(Call::Notify(n.event));
    }
}

struct FakeWindow {
    calls: Calls,
}

impl Window for FakeWindow {
    fn running(&mut self) {
        self.calls.lock().expect("calls").push(Call::Running);
    }

    fn retrying(&mut self, status: &str, _wait: f64, _notify_after: Duration) {
        self.calls
            .lock()
            .expect("calls")
            .push(Call::Retrying(status.to_string()));
    }

    fn finished(&mut self, reason: &StopReason) {
        self.calls
            .lock()
            .expect("calls")
            .push(Call::Finished(reason.reason()));
    }
}

struct FakeConsole {
    calls: Calls,
}

impl Console for FakeConsole {
    fn say(&mut self, line: &str) {
        self.calls
            .lock()
            .expect("calls")
            .push(Call::Say(line.to_string()));
    }
}

/// The account's record, scripted: what each read returns (then the last again).
struct FakeAccounts {
    calls: Calls,
    records: Rc<RefCell<VecDeque<AccountRecord>>>,
}

impl Accounts for FakeAccounts {
    fn read(&mut self) -> std::result::Result<AccountRecord, String> {
        self.calls.lock().expect("calls").push(Call::ReadAccount);
        let mut q = self.records.borrow_mut();
        if q.len() > 1 {
            Ok(q.pop_front().unwrap_or_default())
        } else {
            Ok(q.front().cloned().unwrap_or_default())
        }
    }

    fn update(&mut self, update: &AccountUpdate) -> std::result::Result<(), String> {
        self.calls
            .lock()
            .expect("calls")
            .push(Call::UpdateAccount(update.clone()));
        Ok(())
    }
}

struct FakeDaily {
    calls: Calls,
    today: Today,
}

impl DailySpend for FakeDaily {
    fn today(&mut self) -> Today {
        self.calls.lock().expect("calls").push(Call::Today);
        self.today.clone()
    }
}

/// The CLI on disk: each stamp is the next of `stamps` (then the last again).
struct FakeCli {
    calls: Calls,
    stamps: Rc<RefCell<VecDeque<AgentCli>>>,
}

impl CliFiles for FakeCli {
    fn stamp(&mut self, program: &Path) -> Option<AgentCli> {
        self.calls
            .lock()
            .expect("calls")
            .push(Call::Stamp(program.to_path_buf()));
        let mut q = self.stamps.borrow_mut();
        if q.len() > 1 {
            q.pop_front()
        } else {
            q.front().cloned()
        }
    }

    fn version(&mut self, path: &Path) -> Option<String> {
        self.calls
            .lock()
            .expect("calls")
            .push(Call::Version(path.to_path_buf()));
        Some("fake 2.0".into())
    }
}

/// Holders: every group still has the pids in `alive` (ended by the release).
struct FakeHolders {
    calls: Calls,
    alive: Rc<RefCell<Vec<i32>>>,
}

impl SessionHolders for FakeHolders {
    fn identify(&mut self, pgid: i32) -> Option<String> {
        Some(format!("id-{pgid}"))
    }

    fn release(&mut self, holder: &Holder) -> std::result::Result<Vec<i32>, String> {
        self.calls.lock().expect("calls").push(Call::Release {
            session_id: holder.session_id.clone(),
            pgid: holder.pgid,
        });
        Ok(std::mem::take(&mut *self.alive.borrow_mut()))
    }
}

/// A project directory with a config and a prompt, and a dispatcher over fakes.
struct Harness {
    _dir: tempfile::TempDir,
    root: PathBuf,
    calls: Calls,
    scripts: Rc<RefCell<VecDeque<Script>>>,
    controls: Rc<RefCell<Vec<mpsc::UnboundedReceiver<AttemptControl>>>>,
    gone: Rc<RefCell<bool>>,
    accounts: Rc<RefCell<VecDeque<AccountRecord>>>,
    stamps: Rc<RefCell<VecDeque<AgentCli>>>,
    alive: Rc<RefCell<Vec<i32>>>,
    d: Dispatcher,
}

fn settings(root: &Path, config: &str, env: &BTreeMap<String, String>) -> (Settings, Invocation) {
    std::fs::write(root.join("agent-looper.toml"), config).expect("config");
    std::fs::write(root.join("PROMPT.md"), "do the thing\n").expect("prompt");
    // A plan the gate can read (prepare refuses a missing one).
    std::fs::write(root.join("plan.md"), "").expect("plan");
    let inv = Invocation {
        wrapper_agent: None,
        base_dir: root.to_path_buf(),
        env: env.clone(),
    };
    let args = crate::cli::RunArgs {
        label: Some("t".into()),
        ..crate::cli::RunArgs::default()
    };
    (crate::config::resolve(&args, &inv).expect("resolve"), inv)
}

impl Harness {
    fn new(config: &str) -> Self {
        Self::with_env(config, BTreeMap::new())
    }

    fn with_env(config: &str, mut env: BTreeMap<String, String>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        let bin = root.join("bin");
        std::fs::create_dir(&bin).expect("bin");
        for name in ["start-agent", "resume-agent", "claude"] {
            use std::os::unix::fs::PermissionsExt;
            let p = bin.join(name);
            std::fs::write(&p, "#!/bin/sh\n").expect("write");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        env.insert("PATH".into(), bin.display().to_string());
        env.insert("HOME".into(), root.display().to_string());
        // A plan the config names must exist when the run starts (D6).
        if config.contains("plan_file") {
            std::fs::write(root.join("plan.md"), "").expect("plan");
        }
        let (s, inv) = settings(&root, config, &env);
        let cfg = crate::config::run::prepare(s, &inv).expect("prepare");
        let run_dir = root.join("run");
        std::fs::create_dir(&run_dir).expect("run dir");
        let calls: Calls = Calls::default();
        let scripts: Rc<RefCell<VecDeque<Script>>> = Rc::default();
        let controls = Rc::default();
        let gone = Rc::new(RefCell::new(false));
        let accounts: Rc<RefCell<VecDeque<AccountRecord>>> = Rc::default();
        let stamps: Rc<RefCell<VecDeque<AgentCli>>> = Rc::default();
        let alive: Rc<RefCell<Vec<i32>>> = Rc::default();
        let ports = Ports {
            agents: Box::new(FakeAgents {
                calls: calls.clone(),
                scripts: scripts.clone(),
                controls: Rc::clone(&controls),
            }),
            panes: Box::new(FakePanes {
                calls: calls.clone(),
                gone: gone.clone(),
                opened: 0,
            }),
            workspace: Some(Box::new(FakeWorkspace {
                calls: calls.clone(),
            })),
            records: Box::new(FakeRecords {
                calls: calls.clone(),
                dir: run_dir.clone(),
                state: RunState::default(),
            }),
            window: Box::new(FakeWindow {
                calls: calls.clone(),
            }),
            console: Box::new(FakeConsole {
                calls: calls.clone(),
            }),
            checkout: None,
            notifier: Box::new(FakeNotifier {
                calls: calls.clone(),
            }),
            accounts: Some(Box::new(FakeAccounts {
                calls: calls.clone(),
                records: accounts.clone(),
            })),
            daily: Some(Box::new(FakeDaily {
                calls: calls.clone(),
                today: Today {
                    tokens: 1200,
                    cost_usd: 2.5,
                    runs: 2,
                    start: None,
                    end: Some(chrono::Utc::now() + chrono::TimeDelta::hours(3)),
                },
            })),
            cli: Box::new(FakeCli {
                calls: calls.clone(),
                stamps: stamps.clone(),
            }),
            holders: Box::new(FakeHolders {
                calls: calls.clone(),
                alive: alive.clone(),
            }),
        };
        let engine = Engine::new(crate::driver::engine_config(&cfg), 7);
        let d = Dispatcher::new(cfg, engine, ports, Presentation::default(), run_dir);
        Harness {
            _dir: dir,
            root,
            calls,
            scripts,
            controls,
            gone,
            accounts,
            stamps,
            alive,
            d,
        }
    }

    fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().expect("calls"))
    }

    fn queued(&mut self) -> Vec<Input> {
        self.d.queue.drain(..).collect()
    }
}

const GENERIC: &str = "[agents.g]\nkind = \"generic\"\nfirst_command = [\"start-agent\", \"{prompt}\"]\nresume_command = [\"resume-agent\", \"{session}\", \"{prompt}\"]\n";

fn generic(looper: &str) -> String {
    format!("[looper]\ndefault_agent = \"g\"\nsleep_seconds = 0\n{looper}\n{GENERIC}")
}

fn spec(loop_number: u64, session: SessionRef) -> AttemptSpec {
    AttemptSpec {
        loop_number,
        prompt_index: 1,
        total_prompts: 1,
        attempt: 1,
        session,
        feedback: None,
        dry_run: false,
    }
}

fn session(id: &str, resume: bool) -> SessionRef {
    SessionRef {
        name: "t-loop-0001".into(),
        id: Some(id.into()),
        resume,
    }
}

/// Run git work handed to the async loop, as its blocking thread would.
fn git_job(applied: Option<Applied>) -> (Box<dyn Workspace + Send>, Input) {
    match applied {
        Some(Applied::Git(job)) => job(),
        other => panic!("expected git work, got {other:?}"),
    }
}

/// Await an attempt handed to the async loop: the fakes' futures are ready at once.
fn finish(applied: Option<Applied>) -> Finished {
    let Some(Applied::Attempt(mut handle)) = applied else {
        panic!("expected an attempt, got {applied:?}");
    };
    let mut cx = Context::from_waker(Waker::noop());
    match handle.0.as_mut().poll(&mut cx) {
        Poll::Ready(f) => f,
        Poll::Pending => panic!("the fake attempt is not ready"),
    }
}

#[test]
fn a_record_is_said_appended_and_saved_as_durably_as_it_needs() {
    let mut h = Harness::new(&generic(""));
    assert!(
        h.d.apply(Effect::Record(Event::Paused {
            reason: Some("lunch".into())
        }))
        .is_none()
    );
    assert_eq!(
        h.take_calls(),
        [
            Call::Say("paused: waiting for `looper control resume`".into()),
            Call::Append("paused"),
            Call::Save(Sync::No),
        ]
    );
    let _ = h.d.apply(Effect::Record(Event::RunStarted {
        dry_run: false,
        agent_cli: None,
    }));
    assert_eq!(
        h.take_calls(),
        [Call::Append("run_started"), Call::Save(Sync::Now)]
    );
    // Prompt starts are saved with the attempt's pid, not on their own.
    let _ = h.d.apply(Effect::Record(Event::PromptStarted {
        loop_number: 3,
        prompt_index: 2,
        total_prompts: 2,
        attempt: 1,
        session: "s".into(),
        session_id: None,
        resume: false,
        notes: vec![],
    }));
    assert_eq!(h.take_calls(), [Call::Append("prompt_started")]);
    assert_eq!(
        h.d.attempt_log.as_deref(),
        Some(h.root.join("run/loop-0003__prompt-002.log").as_path())
    );
}

#[test]
fn status_prompts_fingerprints_backups_and_plans_answer_at_once() {
    let plan_config = generic("completion_enabled = true\nplan_file = \"plan.md\"\n");
    let mut h = Harness::new(&plan_config);
    let _ = h.d.apply(Effect::SetStatus(Status::Running));
    assert_eq!(h.take_calls(), [Call::Running]);
    let _ = h.d.apply(Effect::SetStatus(Status::Paused));
    assert_eq!(h.take_calls(), []);
    assert_eq!(h.d.ports.records.state().status.as_deref(), Some("paused"));

    let _ = h.d.apply(Effect::LoadPrompts);
    assert_eq!(h.queued(), [Input::PromptsLoaded { count: 1 }]);
    assert_eq!(h.d.ports.records.state().prompt_reload_count, Some(1));
    std::fs::remove_file(h.root.join("PROMPT.md")).expect("rm");
    let _ = h.d.apply(Effect::LoadPrompts);
    assert!(matches!(h.queued()[..], [Input::PromptsFailed { .. }]));

    // Git work goes to a blocking thread with the workspace, which comes back with it.
    let (ws, input) = git_job(h.d.apply(Effect::Fingerprint));
    assert!(h.d.ports.workspace.is_none(), "the job holds the workspace");
    assert_eq!(input, Input::Fingerprint(Ok("fp-1".into())));
    h.d.ports.workspace = Some(ws);
    let (ws, input) = git_job(h.d.apply(Effect::Backup { loop_number: 4 }));
    assert!(matches!(&input, Input::BackupDone(Ok(b)) if b.branch.ends_with("-loop-0004")));
    h.d.ports.workspace = Some(ws);
    assert_eq!(h.take_calls(), [Call::Fingerprint, Call::Backup(4)]);
    // Without a work tree the answer is at hand.
    h.d.ports.workspace = None;
    assert!(h.d.apply(Effect::Fingerprint).is_none());
    assert!(matches!(&h.queued()[..], [Input::Fingerprint(Err(_))]));

    // A plan removed during the run is a clear stop at the next check.
    std::fs::remove_file(h.root.join("plan.md")).expect("rm plan");
    let _ = h.d.apply(Effect::CheckPlan);
    assert_eq!(
        h.queued(),
        [Input::PlanChecked(Err(h
            .root
            .join("plan.md")
            .display()
            .to_string()))]
    );
    std::fs::write(h.root.join("plan.md"), "- [ ] a\n- [x] b\n* [ ] c\n").expect("plan");
    let _ = h.d.apply(Effect::CheckPlan);
    assert_eq!(
        h.queued(),
        [Input::PlanChecked(Ok(crate::engine::PlanCheck {
            unchecked: 2,
            removed: vec![]
        }))]
    );
}

#[test]
fn waits_and_their_cancellation_go_back_to_the_async_loop() {
    let mut h = Harness::new(&generic(""));
    let applied = h.d.apply(Effect::Wait {
        duration: Duration::from_millis(1500),
        purpose: WaitPurpose::Sleep,
    });
    assert!(matches!(applied, Some(Applied::Wait(d)) if d == Duration::from_millis(1500)));
    assert_eq!(
        h.take_calls(),
        [Call::Say("sleeping 1.5s before the next loop".into())]
    );
    assert!(matches!(
        h.d.apply(Effect::CancelWait),
        Some(Applied::CancelWait)
    ));
}

/// Defect 1 of issue 13: the resumed prompt of a generic agent ran `first_command[0]`.
#[test]
fn each_command_template_runs_its_own_program() {
    let mut h = Harness::new(&generic(""));
    let bin = h.root.join("bin");
    let f = finish(h.d.apply(Effect::RunAttempt(spec(1, session("s-1", false)))));
    drop(f);
    let f = finish(h.d.apply(Effect::RunAttempt(spec(1, session("s-1", true)))));
    drop(f);
    let spawned: Vec<Call> = h
        .take_calls()
        .into_iter()
        .filter(|c| matches!(c, Call::Spawn { .. }))
        .collect();
    assert_eq!(
        spawned,
        [
            Call::Spawn {
                program: bin.join("start-agent").display().to_string(),
                args: vec!["do the thing".into()],
            },
            Call::Spawn {
                program: bin.join("resume-agent").display().to_string(),
                args: vec!["t-loop-0001".into(), "do the thing".into()],
            },
        ]
    );
}

#[test]
fn an_attempt_is_spawned_recorded_and_reported_when_it_ends() {
    let mut h = Harness::new(&generic("completion_enabled = true\n"));
    let _ = h.d.apply(Effect::Record(Event::PromptStarted {
        loop_number: 1,
        prompt_index: 1,
        total_prompts: 1,
        attempt: 1,
        session: "t".into(),
        session_id: None,
        resume: false,
        notes: vec![],
    }));
    h.scripts.borrow_mut().push_back(Script {
        stdout: b"working\nEXIT_SIGNAL: true\n".to_vec(),
        exit: AttemptExit {
            exit_code: Some(0),
            ..AttemptExit::default()
        },
        spawn_error: None,
    });
    let mut s = spec(1, session("s-1", false));
    s.feedback = Some("--- looper feedback ---\nmind the docs".into());
    let applied = h.d.apply(Effect::RunAttempt(s));
    let calls = h.take_calls();
    assert!(
        calls.contains(&Call::Spawn {
            program: h.root.join("bin/start-agent").display().to_string(),
            args: vec!["do the thing\n\n--- looper feedback ---\nmind the docs".into()],
        }),
        "{calls:?}"
    );
    assert_eq!(calls.last(), Some(&Call::Save(Sync::No)), "{calls:?}");
    assert_eq!(h.d.ports.records.state().child_pgid, Some(4241));
    assert!(!h.d.is_done());
    let done = finish(applied);
    // The engine is not in an attempt here, so the report is checked as queued.
    h.d.engine = Engine::new(crate::driver::engine_config(&h.d.cfg), 1);
    let _ = h.d.attempt_done(1.0, done);
    let log = std::fs::read_to_string(h.root.join("run/loop-0001__prompt-001.log")).expect("log");
    assert!(log.contains("stdout: EXIT_SIGNAL: true"), "{log}");
    assert!(log.contains("returncode: 0"), "{log}");
}

#[test]
fn an_attempt_that_cannot_start_is_its_own_end() {
    let mut h = Harness::new(&generic(""));
    h.scripts.borrow_mut().push_back(Script {
        spawn_error: Some("start-agent: permission denied".into()),
        ..Script::default()
    });
    assert!(
        h.d.apply(Effect::RunAttempt(spec(1, session("s-1", false))))
            .is_none()
    );
    assert!(matches!(
        &h.queued()[..],
        [Input::AttemptFinished(r)] if r.spawn_error.as_deref() == Some("start-agent: permission denied")
    ));
    // A prompt index the file no longer has.
    let mut s = spec(1, session("s-1", false));
    s.prompt_index = 9;
    assert!(h.d.apply(Effect::RunAttempt(s)).is_none());
    assert!(matches!(
        &h.queued()[..],
        [Input::AttemptFinished(r)] if r.spawn_error.as_deref().is_some_and(|e| e.contains("prompt 9 no longer exists"))
    ));
}

#[test]
fn terminate_reaches_the_running_attempt() {
    let mut h = Harness::new(&generic(""));
    let applied =
        h.d.apply(Effect::RunAttempt(spec(1, session("s-1", false))));
    let _ = h.d.apply(Effect::Terminate { forceful: true });
    let mut rx = h.controls.borrow_mut().pop().expect("control channel");
    assert_eq!(
        rx.try_recv().ok(),
        Some(AttemptControl::Terminate { forceful: true })
    );
    drop(applied);
}

#[test]
fn finishing_says_why_sets_the_window_and_closes_the_run() {
    let mut h = Harness::new(&generic(""));
    let _ = h.d.apply(Effect::Finish(StopReason::MaxLoops(2)));
    assert_eq!(
        h.take_calls(),
        [
            Call::Say("STOP: max loops reached: 2".into()),
            Call::Finished("max loops reached: 2".into()),
        ]
    );
    assert!(h.d.is_done());
    let calls = h.calls.clone();
    let (code, unrecorded) = h.d.close();
    assert_eq!(code, 0);
    assert!(unrecorded.is_none());
    assert_eq!(*calls.lock().expect("calls"), [Call::Save(Sync::Now)]);
}

#[test]
fn a_worktree_is_measured_each_loop_and_settled_after_the_pane_closes() {
    let mut h = Harness::new(&generic(""));
    h.d.ports.checkout = Some(Box::new(FakeCheckout {
        calls: h.calls.clone(),
        worktree: true,
    }));
    h.d.ports.records.state().worktree_base = Some("base1".into());
    h.d.ports.records.state().base_commit = Some("head0".into());
    let _ = h.d.apply(Effect::Record(Event::LoopCompleted {
        loop_number: 1,
        duration_seconds: 1.0,
        output_bytes: 3,
        completion_detected: false,
        plan_unchecked: None,
        completion_blocked_by_plan: false,
        blocked_by: None,
        blocked_reason: None,
        plan_removed: Vec::new(),
        verify_passed: None,
        review_approved: None,
        completion_streak: 0,
        fingerprint: None,
        no_progress_count: 0,
        output_decline_count: 0,
        output_match_count: 0,
        usage: crate::engine::Usage::default(),
        usage_total: crate::engine::Usage::default(),
    }));
    let calls = h.take_calls();
    assert!(
        calls.contains(&Call::Changes("base1".into())),
        "measured against the worktree's base: {calls:?}"
    );
    let st = h.d.ports.records.state().clone();
    assert_eq!(
        (st.branch.as_deref(), st.commits_ahead, st.files_changed),
        (Some("looper/t"), Some(2), Some(5))
    );
    let _ = h.d.apply(Effect::Finish(StopReason::MaxLoops(1)));
    h.take_calls();
    let calls = h.calls.clone();
    let _ = h.d.close();
    let calls = calls.lock().expect("calls").clone();
    let finish_at = calls
        .iter()
        .position(|c| *c == Call::FinishCheckout { pane_kept: false });
    let kept_at = calls
        .iter()
        .position(|c| *c == Call::AppendSupervisor("worktree_kept"));
    let saved_at = calls.iter().rposition(|c| *c == Call::Save(Sync::Now));
    assert!(
        finish_at.is_some() && finish_at < kept_at && kept_at < saved_at,
        "settled, recorded, then the final state: {calls:?}"
    );
}

#[test]
fn the_main_checkout_is_measured_only_at_the_end_and_never_settled() {
    let mut h = Harness::new(&generic(""));
    h.d.ports.checkout = Some(Box::new(FakeCheckout {
        calls: h.calls.clone(),
        worktree: false,
    }));
    h.d.ports.records.state().base_commit = Some("head0".into());
    h.d.ports.records.state().start_snapshot = Some("snap".into());
    let _ = h.d.apply(Effect::Finish(StopReason::MaxLoops(1)));
    h.take_calls();
    let calls = h.calls.clone();
    let _ = h.d.close();
    let calls = calls.lock().expect("calls").clone();
    assert!(calls.contains(&Call::Changes("snap".into())), "{calls:?}");
    assert!(
        !calls.iter().any(|c| matches!(c, Call::AppendSupervisor(_))),
        "{calls:?}"
    );
}

fn hybrid_env() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("TMUX".to_string(), "/tmp/tmux-test/default,1,0".to_string()),
        ("TMUX_PANE".to_string(), "%0".to_string()),
    ])
}

const CLAUDE: &str = "[looper]\ndefault_agent = \"claude\"\nsleep_seconds = 0\n[agents.claude]\ninterface = \"hybrid\"\n";

#[test]
fn hybrid_turns_follow_the_pane_policy() {
    let mut h = Harness::with_env(CLAUDE, hybrid_env());
    // First turn: a pane is opened for the session and recorded.
    drop(finish(
        h.d.apply(Effect::RunAttempt(spec(1, session("s-1", false)))),
    ));
    let calls = h.take_calls();
    assert!(
        calls.starts_with(&[
            Call::OpenPane {
                session_id: "s-1".into()
            },
            Call::Say("hybrid claude pane %1 (pid 101) for session s-1".into()),
            Call::AppendSupervisor("hybrid_pane_started"),
            Call::Save(Sync::No),
        ]),
        "{calls:?}"
    );
    assert!(
        calls.contains(&Call::Turn {
            pane: "%1".into(),
            prompt: "do the thing".into()
        }),
        "{calls:?}"
    );
    assert_eq!(
        h.d.ports.records.state().hybrid_pane_id.as_deref(),
        Some("%1")
    );
    // The same session: the pane is reused (after checking it is still there).
    drop(finish(
        h.d.apply(Effect::RunAttempt(spec(1, session("s-1", true)))),
    ));
    let calls = h.take_calls();
    assert_eq!(calls[0], Call::PaneGone("%1".into()));
    assert!(!calls.iter().any(|c| matches!(c, Call::OpenPane { .. })));
    // Closed between turns: reopened on the same session.
    *h.gone.borrow_mut() = true;
    drop(finish(
        h.d.apply(Effect::RunAttempt(spec(1, session("s-1", true)))),
    ));
    let calls = h.take_calls();
    assert_eq!(
        calls[..3],
        [
            Call::PaneGone("%1".into()),
            Call::ClosePane("%1".into()),
            Call::Say("hybrid claude pane %1 is gone; reopening session s-1".into()),
        ]
    );
    assert!(calls.contains(&Call::OpenPane {
        session_id: "s-1".into()
    }));
    // A new session: the old pane is closed and the reset recorded.
    drop(finish(
        h.d.apply(Effect::RunAttempt(spec(2, session("s-2", false)))),
    ));
    let calls = h.take_calls();
    assert_eq!(
        calls[..3],
        [
            Call::ClosePane("%2".into()),
            Call::AppendSupervisor("hybrid_session_reset"),
            Call::OpenPane {
                session_id: "s-2".into()
            },
        ]
    );
    assert_eq!(
        h.d.ports.records.state().previous_hybrid_pane_id.as_deref(),
        Some("%2")
    );
    // The run's end closes the pane.
    let _ = h.d.apply(Effect::Finish(StopReason::Completion));
    let calls = h.calls.clone();
    let _ = h.d.close();
    assert!(
        calls
            .lock()
            .expect("calls")
            .contains(&Call::ClosePane("%3".into()))
    );
}

/// Issue 14 item 7: a `/btw` note is pasted by the supervisor into the pane, and
/// acknowledged; without a pane it fails, acknowledged too.
#[test]
fn a_btw_note_is_pasted_into_the_pane_and_acknowledged() {
    let mut h = Harness::with_env(CLAUDE, hybrid_env());
    let paste = |h: &mut Harness| {
        let _ = h.d.apply(Effect::PasteNote {
            id: "n1".into(),
            text: "also  look\nat the docs".into(),
        });
        h.take_calls()
    };
    let calls = paste(&mut h);
    assert!(calls.contains(&Call::Note {
        status: "failed".into()
    }));
    drop(finish(
        h.d.apply(Effect::RunAttempt(spec(1, session("s-1", false)))),
    ));
    h.take_calls();
    let calls = paste(&mut h);
    assert_eq!(
        calls,
        [
            Call::PasteNote {
                pane: "%1".into(),
                text: "/btw also look at the docs".into()
            },
            Call::Say("note: /btw pasted into pane %1".into()),
            Call::Note {
                status: "delivered".into()
            },
        ]
    );
}

#[test]
fn a_kept_pane_outlives_the_run() {
    let config = format!("{CLAUDE}\n").replace(
        "sleep_seconds = 0\n",
        "sleep_seconds = 0\nkeep_agent_pane = true\n",
    );
    let mut h = Harness::with_env(&config, hybrid_env());
    drop(finish(
        h.d.apply(Effect::RunAttempt(spec(1, session("s-1", false)))),
    ));
    let _ = h.d.apply(Effect::Finish(StopReason::Completion));
    let calls = h.calls.clone();
    calls.lock().expect("calls").clear();
    let _ = h.d.close();
    assert!(
        !calls
            .lock()
            .expect("calls")
            .iter()
            .any(|c| matches!(c, Call::ClosePane(_)))
    );
}

#[test]
fn a_worktree_whose_pane_is_kept_is_told_so() {
    let config = format!("{CLAUDE}\n").replace(
        "sleep_seconds = 0\n",
        "sleep_seconds = 0\nkeep_agent_pane = true\n",
    );
    let mut h = Harness::with_env(&config, hybrid_env());
    h.d.ports.checkout = Some(Box::new(FakeCheckout {
        calls: h.calls.clone(),
        worktree: true,
    }));
    drop(finish(
        h.d.apply(Effect::RunAttempt(spec(1, session("s-1", false)))),
    ));
    let _ = h.d.apply(Effect::Finish(StopReason::Completion));
    let calls = h.calls.clone();
    let _ = h.d.close();
    assert!(
        calls
            .lock()
            .expect("calls")
            .contains(&Call::FinishCheckout { pane_kept: true }),
        "{:?}",
        calls.lock().expect("calls")
    );
}

#[test]
fn a_whole_run_through_handle_stops_at_max_loops_and_backs_up_each_loop() {
    let mut h = Harness::new(&generic("max_loops = 2\n"));
    // Backups need a git work tree to validate; the fake workspace stands in for it.
    h.d.engine = Engine::new(
        crate::engine::EngineConfig {
            backup: true,
            ..crate::driver::engine_config(&h.d.cfg)
        },
        7,
    );
    run_to_end(&mut h);
    assert!(h.d.is_done());
    let calls = h.take_calls();
    let backups: Vec<&Call> = calls
        .iter()
        .filter(|c| matches!(c, Call::Backup(_)))
        .collect();
    assert_eq!(backups, [&Call::Backup(1), &Call::Backup(2)]);
    assert!(calls.contains(&Call::Say("STOP: max loops reached: 2".into())));
    assert_eq!(
        calls
            .iter()
            .filter(|c| matches!(c, Call::Append("run_stopped")))
            .count(),
        1
    );
}

/// Drive a whole run through `handle`, awaiting each fake attempt at once.
fn run_to_end(h: &mut Harness) {
    let mut pending = h.d.handle(0.0, Input::Start);
    let mut now = 0.0;
    while let Some(applied) = pending.pop() {
        now += 1.0;
        match applied {
            a @ Applied::Attempt(_) => pending.extend(h.d.attempt_done(now, finish(Some(a)))),
            Applied::Git(job) => {
                let (ws, input) = job();
                pending.extend(h.d.git_done(now, ws, input));
            }
            Applied::Wait(_) => pending.extend(h.d.handle(now, Input::WaitElapsed)),
            Applied::CancelWait => {}
        }
    }
}

#[test]
fn a_verify_runs_through_the_agent_port_with_its_own_log_and_its_facts_reach_the_engine() {
    let config = format!(
        "{}[verify]\ncommand = [\"start-agent\", \"--check\"]\ncount_regex = '(\\d+) passed'\nmin_count = 3\n",
        generic("completion_enabled = true\nmax_loops = 3\n")
    );
    let mut h = Harness::new(&config);
    let ok = |out: &[u8], code: i32| Script {
        stdout: out.to_vec(),
        exit: AttemptExit {
            exit_code: Some(code),
            ..AttemptExit::default()
        },
        spawn_error: None,
    };
    h.scripts.borrow_mut().extend([
        ok(b"EXIT_SIGNAL: true\n", 0),
        ok(b"test result: 2 passed\n", 0),
        ok(b"EXIT_SIGNAL: true\n", 0),
        ok(b"test result: 3 passed\n", 0),
    ]);
    run_to_end(&mut h);
    let calls = h.take_calls();
    let spawns: Vec<&Call> = calls
        .iter()
        .filter(|c| matches!(c, Call::Spawn { .. }))
        .collect();
    let verify = Call::Spawn {
        program: h.root.join("bin/start-agent").display().to_string(),
        args: vec!["--check".into()],
    };
    assert_eq!(spawns.len(), 4, "{calls:?}");
    assert_eq!(spawns[1], &verify);
    assert_eq!(spawns[3], &verify);
    assert!(calls.contains(&Call::Say("verify: $ start-agent --check".into())));
    assert!(calls.contains(&Call::Append("verify_completed")));
    assert!(
        calls.contains(&Call::Say("STOP: completion marker".into())),
        "{calls:?}"
    );
    let st = h.d.ports.records.state();
    let last = st.verify_last.clone().expect("verify_last");
    assert_eq!(
        (last.loop_number, last.pass, last.count),
        (2, Some(true), Some(3))
    );
    let log = std::fs::read_to_string(h.root.join("run/loop-0001__verify.log")).expect("log");
    assert!(log.contains("stdout: test result: 2 passed"), "{log}");
}

#[test]
fn plan_integrity_compares_the_plan_with_the_loops_start() {
    let mut h = Harness::new(&generic(
        "completion_enabled = true\nplan_file = \"plan.md\"\n",
    ));
    std::fs::write(h.root.join("plan.md"), "- [ ] a\n- [ ] b\n+ [ ] c\n").expect("plan");
    let _ = h.d.apply(Effect::MarkLoopStart { loop_number: 1 });
    std::fs::write(h.root.join("plan.md"), "- [x] a\n1. [ ] c, rewritten\n").expect("plan");
    let _ = h.d.apply(Effect::CheckPlan);
    assert_eq!(
        h.queued(),
        [Input::PlanChecked(Ok(crate::engine::PlanCheck {
            unchecked: 1,
            removed: vec!["b".into(), "c".into()]
        }))]
    );
}

mod quota;

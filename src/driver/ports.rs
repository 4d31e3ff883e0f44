//! The narrow traits the dispatcher acts through, one per kind of effect, each implemented
//! by the effects modules: agent processes, hybrid panes, the git workspace, the run's
//! records, the tmux window and the console. Tests swap any of them for a recording fake.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;

use super::sink::Sink;
use crate::effects::git;
use crate::effects::holders::{self, Holder};
use crate::effects::hybrid::{self, Pane, Transcript, Tui};
use crate::effects::notify::NotifyRunner;
use crate::effects::process::{self, AttemptControl, AttemptExit, SpawnSpec};
use crate::effects::tmux::WindowState;
use crate::effects::worktree::{self, Changes, Outcome};
use crate::engine::notify::Notification;
use crate::engine::{AgentCli, ApprovalRequest, BackupInfo, Event, StopReason};
use crate::error::Result;
use crate::records::accounts::{AccountFile, AccountRecord, AccountUpdate};
use crate::records::control::NoteRecord;
use crate::records::daily::{self, Today};
use crate::records::events::SupervisorEvent;
use crate::records::store::Sync;
use crate::records::{RunState, RunStore};

/// How an attempt ended: what the process (or pane) did, the sink that saw its output, and
/// a failure that kept it from running to an exit.
pub struct Finished {
    pub exit: AttemptExit,
    pub sink: Sink,
    pub failure: Option<String>,
}

pub type AttemptFuture = Pin<Box<dyn Future<Output = Finished>>>;

/// An attempt under way.
pub struct Started {
    /// The agent's pid and process group, when it is a process of ours.
    pub pid: Option<i32>,
    pub pgid: Option<i32>,
    /// Terminate requests reach the attempt here.
    pub control: mpsc::UnboundedSender<AttemptControl>,
    pub done: AttemptFuture,
}

/// An attempt that could not start: why, and its sink back so the log can say so.
pub struct NotStarted {
    pub why: String,
    pub sink: Sink,
}

/// Agent processes (D10): spawn one attempt in its own process group.
pub trait AgentProcesses {
    /// Start `spec`, streaming its output into `sink`.
    fn spawn(
        &mut self,
        spec: SpawnSpec,
        sink: Sink,
    ) -> std::result::Result<Started, Box<NotStarted>>;
}

/// Everything a hybrid pane is opened with.
#[derive(Clone, Debug, PartialEq)]
pub struct PaneRequest {
    /// The pane to split (the supervisor's own).
    pub target: String,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
    pub argv: Vec<String>,
    pub tui: Tui,
    pub session_id: String,
    pub transcript: Transcript,
}

/// Hybrid panes (D26): the agent's TUI in a tmux pane.
pub trait Panes {
    fn open(&mut self, req: &PaneRequest) -> std::result::Result<Pane, String>;
    /// tmux no longer has the pane.
    fn gone(&mut self, pane: &Pane) -> bool;
    fn close(&mut self, pane: &Pane);
    /// Paste `text` now if the pane shows its input prompt (between turns), else say why not.
    fn paste_note(&mut self, pane: &Pane, text: &str) -> std::result::Result<(), String>;
    /// Paste `prompt` and follow the transcript until the turn ends.
    fn turn(&mut self, pane: Pane, prompt: String, timeout: Duration, sink: Sink) -> Started;
}

/// The git work tree (D17, D19).
pub trait Workspace {
    fn fingerprint(&mut self) -> std::result::Result<String, String>;
    /// A backup branch for the loop, then pruning to the newest `backup_keep`.
    fn backup(&mut self, loop_number: u64) -> std::result::Result<BackupInfo, String>;
}

/// The checkout the run works in (issue 16): what it changed so far, and its end.
pub trait Checkout {
    /// Its branch, commits ahead of `base` and files changed since (`looper status`).
    fn changes(&mut self, base: &str) -> std::result::Result<Changes, String>;
    /// The run is over: a looper-made worktree is kept or removed under its cleanup rules
    /// (`None` for the main checkout, which is left as it is). `closed_pane` is the pid of
    /// the hybrid pane just closed: a TUI writes its files (and its config) as it exits, so
    /// it is waited for before anything is judged or removed.
    fn finish(&mut self, pane_kept: bool, closed_pane: Option<i32>) -> Option<Outcome>;
    /// A worktree of the run's own: its changes are measured at every loop's end (the main
    /// checkout's only at the run's end, so a run there costs no extra scan per loop).
    fn is_worktree(&self) -> bool;
}

/// The run's records (D21).
pub trait Records {
    /// Append an engine event and fold it into the state snapshot.
    fn append(&mut self, event: &Event) -> Result<()>;
    fn append_supervisor(&mut self, event: &SupervisorEvent) -> Result<()>;
    /// Write the state snapshot.
    fn save(&mut self, sync: Sync) -> Result<()>;
    fn state(&mut self) -> &mut RunState;
    fn prompt_log(&self, loop_number: u64, prompt_index: usize) -> PathBuf;
    /// The run is over: give back the space held for its last records.
    fn release_reserve(&mut self);
    /// A line of `operator_notes.jsonl` (the acknowledgement of a `/btw` note).
    fn note(&mut self, record: &NoteRecord) -> Result<()>;
    /// Write an approval the run waits for where `looper approve` finds it (D31).
    fn request_approval(&mut self, req: &ApprovalRequest) -> Result<()>;
    /// These asks' answers went into a prompt: they are done.
    fn asks_delivered(&mut self, ids: &[String]) -> Result<()>;
}

/// Notifications for people (D33): started here, run elsewhere, never waited for.
pub trait Notifier {
    fn fire(&mut self, n: &Notification);
}

/// The supervisor's tmux window options (D25).
pub trait Window {
    fn running(&mut self);
    fn retrying(&mut self, status: &str, wait: f64, notify_after: Duration);
    fn finished(&mut self, reason: &StopReason);
}

/// Lines for the person watching the supervisor.
pub trait Console {
    fn say(&mut self, line: &str);
}

/// The agent's account record, shared by every looper on the machine (issue 18, D32).
pub trait Accounts {
    /// The record as it is now (read before every attempt).
    fn read(&mut self) -> std::result::Result<AccountRecord, String>;
    /// Merge what an attempt learned, under the account's lock.
    fn update(&mut self, update: &AccountUpdate) -> std::result::Result<(), String>;
}

/// What every run on the machine spent today (the daily budget, issue 18).
pub trait DailySpend {
    fn today(&mut self) -> Today;
}

/// The agent's CLI on disk (issue 18 item 5).
pub trait CliFiles {
    /// The file `program` resolves to and its identity (no version).
    fn stamp(&mut self, program: &std::path::Path) -> Option<AgentCli>;
    /// What `<path> --version` prints first.
    fn version(&mut self, path: &std::path::Path) -> Option<String>;
}

/// Processes of an earlier attempt or pane that still hold a session (issue 18 item 4).
pub trait SessionHolders {
    /// The identity of the process leading group `pgid` now (`procinfo::pid_identity`).
    fn identify(&mut self, pgid: i32) -> Option<String>;
    /// End whatever of `holder`'s group still lives; the pids that had to be ended.
    fn release(&mut self, holder: &Holder) -> std::result::Result<Vec<i32>, String>;
}

/// Everything the dispatcher acts through.
pub struct Ports {
    pub agents: Box<dyn AgentProcesses>,
    pub panes: Box<dyn Panes>,
    /// `Send`: git work runs on a blocking thread, so signals and control are never held up.
    pub workspace: Option<Box<dyn Workspace + Send>>,
    pub records: Box<dyn Records>,
    pub window: Box<dyn Window>,
    pub console: Box<dyn Console>,
    /// `None` outside a git work tree (and for dry runs).
    pub checkout: Option<Box<dyn Checkout>>,
    pub notifier: Box<dyn Notifier>,
    /// `None` when the agent has no account (a generic agent without `account`), there is no
    /// state directory, or the run is a dry run.
    pub accounts: Option<Box<dyn Accounts>>,
    /// `None` without a daily budget.
    pub daily: Option<Box<dyn DailySpend>>,
    pub cli: Box<dyn CliFiles>,
    pub holders: Box<dyn SessionHolders>,
}

/// The account's file under the state directory.
pub struct AccountFiles {
    pub file: AccountFile,
}

impl Accounts for AccountFiles {
    fn read(&mut self) -> std::result::Result<AccountRecord, String> {
        self.file.read().map_err(|e| e.to_string())
    }

    fn update(&mut self, update: &AccountUpdate) -> std::result::Result<(), String> {
        self.file
            .update(update, Utc::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// The machine registry's runs, read from their records.
pub struct MachineSpend {
    pub registry: Option<PathBuf>,
    pub own: PathBuf,
}

impl DailySpend for MachineSpend {
    fn today(&mut self) -> Today {
        daily::today(self.registry.as_deref(), &self.own, Utc::now())
    }
}

/// The file system, and `--version` run with the supervisor's environment and `env` (the
/// agent's login-selecting variables, so the probe sees the CLI the agent will run).
pub struct DiskCli {
    pub env: Vec<(String, String)>,
}

impl CliFiles for DiskCli {
    fn stamp(&mut self, program: &std::path::Path) -> Option<AgentCli> {
        crate::effects::agent_cli::stamp(program)
    }

    fn version(&mut self, path: &std::path::Path) -> Option<String> {
        crate::effects::agent_cli::version_of(
            path,
            "--version",
            &self.env,
            crate::effects::agent_cli::VERSION_LIMIT,
        )
    }
}

/// Real process groups: `effects::holders`.
pub struct ProcessHolders {
    /// SIGTERM to SIGKILL (`terminate_grace_seconds`).
    pub grace: Duration,
}

impl SessionHolders for ProcessHolders {
    fn identify(&mut self, pgid: i32) -> Option<String> {
        crate::effects::procinfo::pid_identity(pgid)
    }

    fn release(&mut self, holder: &Holder) -> std::result::Result<Vec<i32>, String> {
        holders::release(holder, self.grace)
    }
}

/// Real agent processes: `effects::process`.
pub struct ProcessAgents;

impl AgentProcesses for ProcessAgents {
    fn spawn(
        &mut self,
        spec: SpawnSpec,
        mut sink: Sink,
    ) -> std::result::Result<Started, Box<NotStarted>> {
        let spawned = match process::spawn(&spec) {
            Ok(s) => s,
            Err(e) => {
                return Err(Box::new(NotStarted {
                    why: format!("{}: {e}", spec.program),
                    sink,
                }));
            }
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (pid, pgid) = (spawned.pid, spawned.guard.pgid);
        Ok(Started {
            pid: Some(pid),
            pgid: Some(pgid),
            control: tx,
            done: Box::pin(async move {
                let exit = process::supervise(spawned, &spec, &mut sink, &mut rx).await;
                Finished {
                    exit,
                    sink,
                    failure: None,
                }
            }),
        })
    }
}

/// Real hybrid panes: `effects::hybrid` on the tmux server this looper runs in.
pub struct TmuxPanes;

impl Panes for TmuxPanes {
    fn open(&mut self, req: &PaneRequest) -> std::result::Result<Pane, String> {
        hybrid::start_pane(
            &req.target,
            &req.cwd,
            &req.env,
            &req.argv,
            req.tui,
            &req.session_id,
            req.transcript.clone(),
        )
    }

    fn gone(&mut self, pane: &Pane) -> bool {
        hybrid::is_gone(pane)
    }

    fn close(&mut self, pane: &Pane) {
        hybrid::kill_pane(pane);
    }

    fn paste_note(&mut self, pane: &Pane, text: &str) -> std::result::Result<(), String> {
        hybrid::paste_when_ready(pane, text)
    }

    fn turn(&mut self, pane: Pane, prompt: String, timeout: Duration, mut sink: Sink) -> Started {
        let (tx, mut rx) = mpsc::unbounded_channel();
        Started {
            pid: None,
            pgid: None,
            control: tx,
            done: Box::pin(async move {
                match hybrid::run_turn(&pane, &prompt, timeout, &mut sink, &mut rx).await {
                    Ok(exit) => Finished {
                        exit,
                        sink,
                        failure: None,
                    },
                    Err(e) => Finished {
                        exit: AttemptExit::default(),
                        sink,
                        failure: Some(e),
                    },
                }
            }),
        }
    }
}

/// The real work tree: `effects::git`.
pub struct GitWorkspace {
    pub ws: git::Workspace,
    /// The looper's own files, never progress and never backed up.
    pub excluded: Vec<PathBuf>,
    pub backup_prefix: String,
    pub backup_keep: u64,
    pub backup_dirty: bool,
}

impl Workspace for GitWorkspace {
    fn fingerprint(&mut self) -> std::result::Result<String, String> {
        self.ws
            .fingerprint(&self.excluded)
            .map(|f| f.to_string())
            .map_err(|e| e.to_string())
    }

    fn backup(&mut self, loop_number: u64) -> std::result::Result<BackupInfo, String> {
        let made = self
            .ws
            .create_backup(
                &self.backup_prefix,
                Utc::now(),
                loop_number,
                self.backup_dirty,
                &self.excluded,
            )
            .map_err(|e| e.to_string())?;
        let keep = usize::try_from(self.backup_keep).unwrap_or(usize::MAX);
        let pruned = self
            .ws
            .prune_backups(&self.backup_prefix, keep)
            .map_err(|e| format!("pruning {}: {e}", self.backup_prefix))?;
        Ok(BackupInfo {
            branch: made.branch,
            commit: made.commit,
            snapshot: made.snapshot,
            pruned,
        })
    }
}

impl Records for RunStore {
    fn append(&mut self, event: &Event) -> Result<()> {
        self.append_event(event, Utc::now())
    }

    fn append_supervisor(&mut self, event: &SupervisorEvent) -> Result<()> {
        RunStore::append_supervisor(self, event, Utc::now())
    }

    fn save(&mut self, sync: Sync) -> Result<()> {
        self.write_state(sync)
    }

    fn state(&mut self) -> &mut RunState {
        &mut self.state
    }

    fn prompt_log(&self, loop_number: u64, prompt_index: usize) -> PathBuf {
        RunStore::prompt_log(self, loop_number, prompt_index)
    }

    fn release_reserve(&mut self) {
        RunStore::release_reserve(self);
    }

    fn note(&mut self, record: &NoteRecord) -> Result<()> {
        record.append(&self.dir).map(|_| ())
    }

    fn request_approval(&mut self, req: &ApprovalRequest) -> Result<()> {
        crate::records::asks::open_approval(&self.dir, req, Utc::now())
    }

    fn asks_delivered(&mut self, ids: &[String]) -> Result<()> {
        crate::records::asks::mark_delivered(&self.dir, ids, Utc::now())
    }
}

/// The real notifier: `effects::notify`, or nothing when `[notify]` is off.
impl Notifier for Option<NotifyRunner> {
    fn fire(&mut self, n: &Notification) {
        if let Some(r) = self {
            r.fire(n);
        }
    }
}

impl Window for WindowState {
    fn running(&mut self) {
        self.set_running();
    }

    fn retrying(&mut self, status: &str, wait: f64, notify_after: Duration) {
        WindowState::retrying(self, status, wait, notify_after.as_secs_f64());
    }

    fn finished(&mut self, reason: &StopReason) {
        self.finish(reason);
    }
}

/// The supervisor's terminal; `quiet` says nothing.
pub struct Terminal {
    pub quiet: bool,
}

impl Console for Terminal {
    fn say(&mut self, line: &str) {
        if !self.quiet {
            crate::console::out(line);
        }
    }
}

/// How long a closed hybrid pane's TUI may take to exit before its worktree is settled.
const PANE_EXIT_WAIT: Duration = Duration::from_secs(10);

/// The main checkout of a run without a worktree: measured, never touched.
pub struct MainCheckout {
    pub dir: PathBuf,
    /// The looper's own files, which are no change of the run's.
    pub excluded: Vec<PathBuf>,
}

impl Checkout for MainCheckout {
    fn changes(&mut self, base: &str) -> std::result::Result<Changes, String> {
        worktree::changes(&self.dir, base, &self.excluded).map_err(|e| e.to_string())
    }

    fn finish(&mut self, _pane_kept: bool, _closed_pane: Option<i32>) -> Option<Outcome> {
        None
    }

    fn is_worktree(&self) -> bool {
        false
    }
}

/// A looper-made worktree while its run lasts: settled (kept or removed) exactly once, at the
/// run's end through [`Checkout::finish`], or when dropped on any other way out (an error, a
/// panic unwinding), so no path leaves it unrecorded. Only SIGKILL skips this; then its
/// record names a dead looper and `looper status --repair-stale` settles it.
pub struct WorktreeLease {
    pub record: worktree::Record,
    settled: bool,
}

impl WorktreeLease {
    pub fn new(record: worktree::Record) -> Self {
        Self {
            record,
            settled: false,
        }
    }

    /// Keep or remove it, once.
    pub fn settle(&mut self, pane_kept: bool) -> Option<Outcome> {
        if self.settled {
            return None;
        }
        self.settled = true;
        Some(worktree::finish(&self.record, pane_kept))
    }
}

impl Drop for WorktreeLease {
    fn drop(&mut self) {
        let Some(outcome) = self.settle(false) else {
            return;
        };
        crate::console::err(&format!("looper: {}", outcome.text()));
        // The run's records exist when it got as far as its run directory: say it there too.
        if let Some(dir) = &self.record.run_dir
            && dir.join(crate::records::STATE_FILE).is_file()
        {
            let event = SupervisorEvent::worktree_outcome(&outcome);
            let _ = crate::records::repair::record_after(dir, &event, Utc::now());
        }
    }
}

impl Checkout for WorktreeLease {
    fn changes(&mut self, base: &str) -> std::result::Result<Changes, String> {
        worktree::changes(&self.record.path, base, &[]).map_err(|e| e.to_string())
    }

    fn finish(&mut self, pane_kept: bool, closed_pane: Option<i32>) -> Option<Outcome> {
        if let Some(pid) = closed_pane {
            // Bounded: a TUI that does not exit in time is judged as it is (its files
            // are then what the rules see).
            let until = std::time::Instant::now() + PANE_EXIT_WAIT;
            while crate::effects::procinfo::is_running(pid) && std::time::Instant::now() < until {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.settle(pane_kept)
    }

    fn is_worktree(&self) -> bool {
        true
    }
}

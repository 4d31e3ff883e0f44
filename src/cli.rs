//! Command-line definitions (clap). Parsing only: no I/O, no defaults that live in the config.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::records::control::Delivery;

const RUN_EXAMPLES: &str = "\
Examples:
  codex-looper                                  run PROMPT.md in a loop (writes starter files on first use)
  codex-looper --once --label smoke             one loop, in this terminal's tmux farm window
  codex-looper --local --max-loops 5            five loops in this terminal
  claude-looper --complete-on 'EXIT_SIGNAL:\\s*true' --plan-file fix_plan.md --backup
  codex-looper --cb-no-progress 3 --cb-output-decline 2 --backup --backup-keep 20
  codex-looper --preset rai
  codex-looper --complete-on 'EXIT_SIGNAL:\\s*true' --verify-cmd 'cargo test' --review-agent claude
  codex-looper --dry-run --once                 print the exact agent command and stop
  codex-looper --once -- --model gpt-5.4        pass native flags to the agent after --
  codex-looper --worktree -l fix-ci             a worktree and branch of its own (looper/fix-ci)
  codex-looper --worktree --parallel 3 --local  three runs at once, each in its own worktree
  looper diff fix-ci --stat                     what the run changed";

const TOP_EXAMPLES: &str = "\
The `run` subcommand is optional: `codex-looper` and `codex-looper run` are the same.

Examples:
  codex-looper                          first use: write agent-looper.toml and PROMPT.md; then: loop
  looper demo                           a self-contained demo (throwaway repo, scripted agent)
  looper status                         every run of this project, what needs attention first
  looper control stop LABEL --after-loop
  looper logs LABEL -f                  follow a run's transcript
  looper diff LABEL --stat              what a run changed (its worktree against its base)
  looper doctor                         check agents, tmux and git
  looper config check --show-origin     the resolved configuration and where each value came from";

/// Which agent a wrapper binary selects by default (D1).
pub fn wrapper_agent(bin_name: &str) -> Option<&'static str> {
    match bin_name {
        "codex-looper" => Some("codex"),
        "claude-looper" => Some("claude"),
        "gemini-looper" => Some("gemini"),
        _ => None,
    }
}

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Run AI coding-agent CLIs (codex, claude, gemini, any command) in supervised loops.",
    after_help = TOP_EXAMPLES,
    args_conflicts_with_subcommands = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent in a loop (the default command).
    #[command(after_help = RUN_EXAMPLES)]
    Run(RunArgs),
    /// Write starter agent-looper.toml and PROMPT.md files.
    #[command(after_help = "Examples:\n  looper init\n  looper init --interactive --force")]
    Init(InitArgs),
    /// Steer a running looper: stop, pause, resume, note, focus.
    #[command(subcommand)]
    Control(ControlCommand),
    /// Show the fleet of runs: what needs attention first, then running, then finished.
    #[command(
        after_help = "Examples:\n  looper status\n  looper status --all --watch\n  looper status --json\n  looper status --repair-stale\n  looper status --since 1d          finished runs of the last day only\n  looper status --close-finished    close the farm windows of finished runs\n  looper status --host buildbox --host vm --watch   (hosts from ~/.config/agent-looper/hosts.toml, or ssh destinations)"
    )]
    Status(StatusArgs),
    /// Show a run's current or last loop log as a readable transcript.
    #[command(
        after_help = "Examples:\n  looper logs            the newest run of this project\n  looper logs smoke -f   follow the run labelled smoke\n  looper logs --raw\n  looper logs smoke --host buildbox -f"
    )]
    Logs(LogsArgs),
    /// Show what a run changed: its worktree against its base, or (a run without one) its
    /// checkout against the state at the run's start.
    #[command(
        after_help = "Examples:\n  looper diff              the newest run of this project\n  looper diff fix-ci --stat\n  looper diff --run-dir .agent-looper/runs/20260628T000000Z__fix-ci__abc123 --include-stopped"
    )]
    Diff(DiffArgs),
    /// Check that the configured agents, tmux and git are ready.
    #[command(after_help = "Examples:\n  looper doctor\n  claude-looper doctor")]
    Doctor(DoctorArgs),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  looper completions bash > ~/.local/share/bash-completion/completions/looper\n  looper completions zsh > ~/.zfunc/_looper\n  looper completions fish > ~/.config/fish/completions/looper.fish"
    )]
    Completions(CompletionsArgs),
    /// Run a looper as a systemd user service (a launchd agent on macOS), restarted on failure.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Ask a person a question from inside a run (the agent runs this); the run waits for
    /// the answer at its next loop boundary.
    #[command(after_help = ASK_EXAMPLES)]
    Ask(AskArgs),
    /// Answer a run's question: `looper answer [TARGET] [ASK_ID] TEXT`.
    #[command(
        after_help = "Examples:\n  looper answer \"use postgres\"                the oldest open question of the run that waits\n  looper answer smoke \"use postgres\"\n  looper answer smoke ask-20261201T100000123Z-1a2b3c4d 2   the second choice"
    )]
    Answer(AnswerArgs),
    /// Approve what a run waits for (its completion, or the next loops).
    #[command(after_help = "Examples:\n  looper approve\n  looper approve smoke")]
    Approve(DecisionArgs),
    /// Refuse what a run waits for; the reason goes into its next prompt.
    #[command(
        after_help = "Examples:\n  looper reject --reason \"the tests for the parser are missing\"\n  looper reject smoke --reason \"do not touch the public API\""
    )]
    Reject(DecisionArgs),
    /// Wait until a run reaches a state: stopped, loop_completed, needs_input, retry_wait.
    #[command(after_help = WAIT_EXAMPLES)]
    Wait(WaitArgs),
    /// Serve the fleet to a coding agent over MCP (stdio): runs, logs, control, asks.
    #[command(
        after_help = "Examples:\n  claude mcp add looper -- looper mcp\n  looper mcp --state-root ~/src/proj/.agent-looper/runs"
    )]
    Mcp(McpArgs),
    /// Run a self-contained demo: a throwaway git repository, a plan file and a scripted agent.
    #[command(after_help = "Examples:\n  looper demo\n  looper demo --keep")]
    Demo(DemoArgs),
    /// Internal: the live view drawn in the split pane.
    #[command(hide = true, name = "live-view")]
    LiveView(LiveViewArgs),
    /// Internal: the scripted agent used by `looper demo`.
    #[command(hide = true, name = "demo-agent")]
    DemoAgent(DemoAgentArgs),
    /// Internal: a hybrid pane's first command, which takes the supervisor's environment from
    /// a private file and becomes the agent's TUI.
    #[command(hide = true, name = "pane-exec")]
    PaneExec(PaneExecArgs),
}

const ASK_EXAMPLES: &str = "\
Run by the agent inside a run: the run directory comes from LOOPER_RUN_DIR.

Examples:
  looper ask \"Which database should the service use?\" --choice postgres --choice sqlite
  looper ask \"May I delete the legacy API?\" --wait --timeout 600   prints the answer

Exit codes: 0 asked (or, with --wait, answered: the answer is on stdout); 1 the run ended
before an answer came; 2 usage (no run, an empty question); 124 --timeout passed unanswered.";

const WAIT_EXAMPLES: &str = "\
Pinned to the run it names when it starts: a later run with the same label never satisfies it.

Examples:
  looper wait smoke --until stopped
  looper wait --until needs_input --timeout 3600 --json
  looper wait smoke --until loop_completed && looper logs smoke

Exit codes: 0 the state was reached; 1 the run ended without reaching it; 124 --timeout passed.";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Single,
    Sequence,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Interface {
    Json,
    Hybrid,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WorktreeCleanup {
    Auto,
    Keep,
    Remove,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DailyBudgetAction {
    Wait,
    Stop,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Layout {
    Auto,
    Single,
    Split,
}

#[derive(Clone, Debug, Default, Args)]
pub struct RunArgs {
    /// Agent table to run (default: the wrapper's agent, else [looper].default_agent).
    #[arg(short = 'a', long, value_name = "NAME", value_parser = non_empty)]
    pub agent: Option<String>,
    /// Override the agent's interface for this run.
    #[arg(long, value_enum)]
    pub interface: Option<Interface>,
    /// Project config file [default: agent-looper.toml; a missing file is fine].
    #[arg(short = 'c', long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// A preset TOML layered over the project config: a path, or a name from
    /// ~/.config/agent-looper/presets, ~/.config/codexfarm/presets or the built-in ones (rai).
    #[arg(long, value_name = "NAME_OR_PATH")]
    pub preset: Option<String>,
    /// Prompt mode [default: single; a lone prompts.md implies sequence].
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Prompt file [default: PROMPT.md, or prompts.md in sequence mode].
    #[arg(short = 'p', long, value_name = "PATH")]
    pub prompt_file: Option<PathBuf>,
    /// Run label [default: <directory>-<agent>, with -2, -3, ... while that label is running].
    #[arg(short = 'l', long, value_parser = label_arg)]
    pub label: Option<String>,
    /// Per-prompt wall-clock limit in seconds [default: 7200].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub timeout: Option<String>,
    /// Pause between completed loops in seconds, 0 allowed [default: 2].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub sleep: Option<String>,
    /// Maximum loops; 0 is unlimited [default: 0].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub max_loops: Option<String>,
    /// Cap on transient (non rate-limit) retries of one prompt; 0 is unlimited [default: 12].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub max_transient_retries: Option<String>,
    /// tmux notification for retry waits at least this long; 0 disables [default: 300].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub retry_notify_after: Option<String>,
    /// Enable completion: stop after loops whose agent output matches REGEX.
    #[arg(long, value_name = "REGEX", value_parser = regex_arg)]
    pub complete_on: Option<String>,
    /// Consecutive loops with the completion marker needed to stop [default: 1].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub completion_streak: Option<String>,
    /// Markdown checklist (GitHub task lists): the marker counts only when no open task is left.
    #[arg(long, value_name = "PATH")]
    pub plan_file: Option<PathBuf>,
    /// Plan integrity: open tasks removed from the plan without being ticked block completion.
    #[arg(long)]
    pub plan_forbid_removal: bool,
    /// The marker counts only on the last non-empty line of the agent's final message.
    #[arg(long)]
    pub completion_must_be_last: bool,
    /// Verify gate: completion counts only when CMD exits 0 (split into words like a shell
    /// would, but never run by one; write `sh -c '...'` for a shell).
    #[arg(long, value_name = "CMD", value_parser = argv_words)]
    pub verify_cmd: Option<Argv>,
    /// Run the verify command after every loop, not only when the marker is seen.
    #[arg(long)]
    pub verify_every_loop: bool,
    /// Wall-clock limit for the verify command [default: 1800].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub verify_timeout: Option<String>,
    /// Stop after N consecutive failing verifies (exit 3); 0 is off.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub cb_verify_failures: Option<String>,
    /// Reviewer gate: the agent table that must approve before completion counts.
    #[arg(long, value_name = "NAME", value_parser = non_empty)]
    pub review_agent: Option<String>,
    /// Run the reviewer after every loop, not only when the marker is seen.
    #[arg(long)]
    pub review_every_loop: bool,
    /// Stop after N rejections by the reviewer (exit 3); 0 is unlimited [default: 3].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub review_max_rounds: Option<String>,
    /// Create a git backup branch before each loop.
    #[arg(long)]
    pub backup: bool,
    /// Backups also capture dirty and untracked files (a snapshot commit on top of HEAD).
    #[arg(long)]
    pub backup_dirty: bool,
    /// Backup branch namespace [default: looper-backup].
    #[arg(long, value_name = "PREFIX", value_parser = non_empty)]
    pub backup_prefix: Option<String>,
    /// Keep the newest N backup branches; 0 disables pruning [default: 10].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub backup_keep: Option<String>,
    /// Stop after N loops without a git workspace change; 0 is off.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub cb_no_progress: Option<String>,
    /// Stop after N loops in a row whose output shrank versus the previous loop; 0 is off.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub cb_output_decline: Option<String>,
    /// Stop when the agent's output matches REGEX for --cb-output-match-repeats loops.
    #[arg(long, value_name = "REGEX", value_parser = regex_arg)]
    pub cb_output_match: Option<String>,
    /// Consecutive matching loops before --cb-output-match stops [default: 1].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub cb_output_match_repeats: Option<String>,
    /// Budget: wall-clock seconds for the whole run, waits included; 0 is unlimited.
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub max_runtime: Option<String>,
    /// Budget: total tokens reported by the agent; 0 is unlimited.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub max_tokens: Option<String>,
    /// Budget: total cost in USD reported by the agent; 0 is unlimited.
    #[arg(long, value_name = "USD", allow_negative_numbers = true)]
    pub max_cost: Option<String>,
    /// Machine-wide budget: tokens reported today (local time) by every run on this
    /// machine, checked before each loop; 0 is unlimited.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub daily_max_tokens: Option<String>,
    /// Machine-wide budget: cost in USD reported today (local time) by every run on this
    /// machine, checked before each loop; 0 is unlimited.
    #[arg(long, value_name = "USD", allow_negative_numbers = true)]
    pub daily_max_cost: Option<String>,
    /// When a daily budget is reached: wait for the next day, or stop (exit 3) [default: wait].
    #[arg(long, value_enum, value_name = "ACTION")]
    pub daily_budget_action: Option<DailyBudgetAction>,
    /// Hold new loops while a usage window of the agent's account is more than 100 - N
    /// percent used, until it resets; 0 is off.
    #[arg(long, value_name = "PERCENT", allow_negative_numbers = true)]
    pub min_headroom: Option<String>,
    /// Run exactly one loop (same as --max-loops 1).
    #[arg(long)]
    pub once: bool,
    /// Start a new agent session for each loop (the default).
    #[arg(long, conflicts_with = "reuse_session")]
    pub fresh_session_per_loop: bool,
    /// Reuse one agent session across all loops.
    #[arg(long)]
    pub reuse_session: bool,
    /// Working directory for the agent [default: the current directory].
    #[arg(long, value_name = "PATH")]
    pub cwd: Option<PathBuf>,
    /// Print the exact agent commands without running agents or creating backups.
    #[arg(long)]
    pub dry_run: bool,
    /// Continue after a nonzero agent exit.
    #[arg(long, overrides_with = "stop_on_nonzero")]
    pub ignore_nonzero: bool,
    /// Stop after a nonzero agent exit (the default).
    #[arg(long, overrides_with = "ignore_nonzero")]
    pub stop_on_nonzero: bool,
    /// Wait for Enter before exiting, so a tmux pane stays readable.
    #[arg(long)]
    pub hold_on_stop: bool,
    /// Hybrid: leave the agent pane open when the run ends.
    #[arg(long)]
    pub keep_agent_pane: bool,
    /// Run in a git worktree of its own on a new branch (looper/<label>), made under
    /// .agent-looper/worktrees/ and kept or removed at the end (--worktree-cleanup).
    #[arg(long, overrides_with = "no_worktree")]
    pub worktree: bool,
    /// Run in this checkout even when [looper].worktree is true.
    #[arg(long, overrides_with = "worktree")]
    pub no_worktree: bool,
    /// The worktree's branch [default: looper/<label>]; with --parallel, NAME-1..NAME-N.
    #[arg(long, value_name = "NAME", value_parser = non_empty)]
    pub branch: Option<String>,
    /// Where the worktree's branch starts [default: HEAD].
    #[arg(long, value_name = "REF", value_parser = non_empty)]
    pub base: Option<String>,
    /// At the end: auto keeps a worktree with new commits or changes and removes an untouched
    /// one; a dirty worktree, or commits no other branch has, are never removed [default: auto].
    #[arg(long, value_enum, value_name = "WHEN")]
    pub worktree_cleanup: Option<WorktreeCleanup>,
    /// Hybrid: record folder trust in claude's or codex's config for the worktrees the looper
    /// creates (and removes it with them), so the TUI does not stop at its trust dialog.
    #[arg(long)]
    pub trust_worktree: bool,
    /// Start N runs at once, each in its own worktree (needs --worktree), labelled
    /// <label>-1..<label>-N: N farm windows, or N child processes with --local, whose exit
    /// code is the most serious of theirs (2, then 1, 124, 130, 3; 0 when all ended as asked).
    #[arg(long, value_name = "N", value_parser = parallel_count)]
    pub parallel: Option<u64>,
    /// Internal: this run is number I of a --parallel group.
    #[arg(long, value_name = "I", hide = true)]
    pub parallel_index: Option<u64>,
    /// tmux layout [default: LOOPER_LAYOUT / CODEX_LOOPER_LAYOUT, else auto; the farm uses split].
    #[arg(long, value_enum)]
    pub tmux_layout: Option<Layout>,
    /// Run in this terminal instead of a window of the tmux farm.
    #[arg(long)]
    pub local: bool,
    /// Farm tmux session to open the run in [default: looper].
    #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "")]
    pub farm_session: Option<String>,
    /// Attach to the farm window after launching it.
    #[arg(long)]
    pub farm_attach: bool,
    /// Delegate the farm launch to an external codex-add compatible launcher.
    #[arg(long, value_name = "PATH")]
    pub farm_add_bin: Option<String>,
    /// Internal: the launching shell's environment, handed to a farm window's looper (read,
    /// checked and removed before anything else).
    #[arg(long, value_name = "FILE", hide = true)]
    pub env_file: Option<PathBuf>,
    /// Internal: where a farm window's looper reports whether its run started.
    #[arg(long, value_name = "FILE", hide = true)]
    pub farm_status: Option<PathBuf>,
    /// Native agent arguments, appended to the agent's extra_args.
    #[arg(last = true, value_name = "AGENT_ARGS")]
    pub agent_args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
    /// Ask for the agent, limits and prompts.
    #[arg(short = 'i', long)]
    pub interactive: bool,
}

/// How a control command finds its run.
#[derive(Clone, Debug, Default, Args)]
pub struct TargetArgs {
    /// A label, run id or run directory name [default: the newest active run].
    pub target: Option<String>,
    /// The run directory itself.
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Where runs live (repeatable) [default: LOOPER_STATE_ROOT / CODEX_LOOPER_STATE_ROOT, else .agent-looper/runs].
    #[arg(long, value_name = "DIR")]
    pub state_root: Vec<PathBuf>,
    /// Also consider runs that have stopped.
    #[arg(long)]
    pub include_stopped: bool,
    /// Machine-readable output: one JSON document (`logs`: JSON lines), what `--host` reads.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub hosts: crate::remote::hosts::HostArgs,
}

impl TargetArgs {
    /// The run these flags name, as the records look runs up.
    pub fn query(&self) -> crate::records::discovery::TargetQuery {
        crate::records::discovery::TargetQuery {
            target: self.target.clone(),
            run_dir: self.run_dir.clone(),
            state_root: self.state_root.clone(),
            include_stopped: self.include_stopped,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ControlCommand {
    /// Ask a run to stop at a boundary (after the loop by default).
    #[command(
        after_help = "Examples:\n  looper control stop smoke --after-loop --reason \"merge checkpoint\"\n  looper control stop --after-prompt --wait\n  looper control stop smoke --host buildbox --after-loop --wait\n  looper control stop --run-dir .agent-looper/runs/20260628T000000Z__smoke__abc123 --now"
    )]
    Stop(StopArgs),
    /// Hold the run before its next loop.
    #[command(after_help = "Examples:\n  looper control pause smoke")]
    Pause(SimpleControlArgs),
    /// Continue a paused run.
    #[command(after_help = "Examples:\n  looper control resume smoke")]
    Resume(SimpleControlArgs),
    /// Record an operator note, or deliver it to the agent.
    #[command(
        after_help = "Examples:\n  looper control note smoke --note \"tests are flaky on CI, ignore them\"\n  looper control note --note-file steer.md --delivery next-prompt\n  looper control note --note \"also update the changelog\" --delivery btw"
    )]
    Note(NoteArgs),
    /// Record what the run is focused on (shown by the supervisor and status).
    #[command(
        after_help = "Examples:\n  looper control focus --summary \"migrating the parser to nom\""
    )]
    Focus(FocusArgs),
}

#[derive(Debug, Args)]
pub struct StopArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Stop after the current prompt.
    #[arg(long, conflicts_with_all = ["after_loop", "now"])]
    pub after_prompt: bool,
    /// Stop after the current loop (the default).
    #[arg(long, conflicts_with = "now")]
    pub after_loop: bool,
    /// Stop now: the agent's process group is terminated gracefully.
    #[arg(long)]
    pub now: bool,
    /// Why (recorded in the stop reason).
    #[arg(long, default_value = "operator requested stop")]
    pub reason: String,
    /// Return only when the run has stopped and its supervisor has exited (the worktree is
    /// free for the next looper); print its final reason.
    #[arg(long)]
    pub wait: bool,
    /// If the supervisor does not act within the grace period, signal the agent group and the supervisor.
    #[arg(long)]
    pub force: bool,
    /// Grace period for --force and --wait, in seconds.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value = "5",
        value_parser = duration_seconds,
        allow_negative_numbers = true
    )]
    pub grace_seconds: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct SimpleControlArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Why (recorded).
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct NoteArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The note text.
    #[arg(
        long,
        conflicts_with = "note_file",
        required_unless_present = "note_file"
    )]
    pub note: Option<String>,
    /// Read the note from a file.
    #[arg(long, value_name = "FILE")]
    pub note_file: Option<PathBuf>,
    /// How the note reaches the agent.
    #[arg(long, value_enum, default_value = "record")]
    pub delivery: Delivery,
    /// Who wrote it.
    #[arg(long, default_value = "operator")]
    pub actor: String,
    /// With `--delivery btw`: how long to wait for the supervisor to paste it (between
    /// turns) before returning with the note still queued.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value = "600",
        value_parser = duration_seconds,
        allow_negative_numbers = true
    )]
    pub wait_seconds: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct FocusArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// One sentence on the current focus.
    #[arg(long, required = true)]
    pub summary: String,
    /// Who reports it.
    #[arg(long, default_value = "operator")]
    pub actor: String,
}

#[derive(Debug, Args)]
pub struct AskArgs {
    /// The question, one paragraph.
    pub question: String,
    /// A choice to offer (repeatable); the answer must then be one of them.
    #[arg(long = "choice", value_name = "TEXT")]
    pub choices: Vec<String>,
    /// Block until answered and print the answer on stdout.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this many seconds (exit 124).
    #[arg(
        long,
        value_name = "SECONDS",
        requires = "wait",
        value_parser = duration_seconds,
        allow_negative_numbers = true
    )]
    pub timeout: Option<std::time::Duration>,
    /// The run directory [default: LOOPER_RUN_DIR, else CODEX_LOOPER_RUN_DIR].
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AnswerArgs {
    /// [TARGET] [ASK_ID] TEXT: a run (label, run id or directory name), an ask id (from the
    /// run's console or `looper status`), and the answer (a choice's text or its number).
    #[arg(required = true, num_args = 1..=3, value_name = "ARGS")]
    pub words: Vec<String>,
    /// The run directory itself.
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Where runs live (repeatable) [default: LOOPER_STATE_ROOT / CODEX_LOOPER_STATE_ROOT, else .agent-looper/runs].
    #[arg(long, value_name = "DIR")]
    pub state_root: Vec<PathBuf>,
    /// Also consider runs that have stopped.
    #[arg(long)]
    pub include_stopped: bool,
    /// Who answers.
    #[arg(long, default_value = "operator")]
    pub actor: String,
}

#[derive(Debug, Args)]
pub struct DecisionArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Why (required to reject; it goes into the run's next prompt).
    #[arg(long)]
    pub reason: Option<String>,
    /// Who decides.
    #[arg(long, default_value = "operator")]
    pub actor: String,
}

/// The states `looper wait` waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Until {
    Stopped,
    LoopCompleted,
    NeedsInput,
    RetryWait,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The state to wait for.
    #[arg(long, value_enum)]
    pub until: Until,
    /// Give up after this many seconds (exit 124).
    #[arg(
        long,
        value_name = "SECONDS",
        value_parser = duration_seconds,
        allow_negative_numbers = true
    )]
    pub timeout: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct McpArgs {
    /// Where runs live (repeatable) [default: LOOPER_STATE_ROOT / CODEX_LOOPER_STATE_ROOT, else .agent-looper/runs].
    #[arg(long, value_name = "DIR")]
    pub state_root: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Where runs live (repeatable) [default: LOOPER_STATE_ROOT / CODEX_LOOPER_STATE_ROOT, else .agent-looper/runs].
    #[arg(long, value_name = "DIR")]
    pub state_root: Vec<PathBuf>,
    /// Every run on this machine, from the registry.
    #[arg(long)]
    pub all: bool,
    /// Machine-readable output (schema in the README).
    #[arg(long, conflicts_with = "watch")]
    pub json: bool,
    /// A live view, redrawn until `q`: Up/Down (k/j) select a run, Enter goes to its tmux
    /// window, h hides or shows finished runs older than --since (24h when not given).
    #[arg(long)]
    pub watch: bool,
    /// Mark runs whose supervisor is gone as stopped and record why.
    #[arg(long, alias = "repair-stale-loopers")]
    pub repair_stale: bool,
    /// Close the tmux windows of farm runs that have finished (every pane dead), and say which.
    #[arg(long, conflicts_with = "watch")]
    pub close_finished: bool,
    /// Hide finished runs (stopped, error, interrupted) last updated longer ago than this:
    /// 30m, 2h, 1d, or seconds. Active, stale and waiting runs are always shown.
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = since_duration,
        allow_negative_numbers = true
    )]
    pub since: Option<std::time::Duration>,
    /// Colour the table by status; auto: when stdout is a terminal and NO_COLOR is unset or
    /// empty.
    #[arg(long, value_name = "WHEN", value_enum, default_value_t = clap::ColorChoice::Auto)]
    pub color: clap::ColorChoice,
    #[command(flatten)]
    pub hosts: crate::remote::hosts::HostArgs,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Keep printing new output.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// The log as written, without rendering.
    #[arg(long)]
    pub raw: bool,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// A summary: files changed, insertions and deletions.
    #[arg(long)]
    pub stat: bool,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Check this agent only.
    #[arg(short = 'a', long)]
    pub agent: Option<String>,
    /// Project config file.
    #[arg(short = 'c', long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print it resolved.
    #[command(
        after_help = "Examples:\n  looper config check\n  claude-looper config check --show-origin --preset rai"
    )]
    Check(ConfigCheckArgs),
}

#[derive(Debug, Args)]
pub struct ConfigCheckArgs {
    /// Show where each value came from.
    #[arg(long)]
    pub show_origin: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Write (and start) a user service running `looper run --local ARGS` in a directory.
    #[command(
        after_help = "Examples:\n  looper service install -- --preset rai --backup\n  looper service install --name nightly --dir ~/src/app -- --max-cost 20\n  looper service install --no-start      write the unit only"
    )]
    Install(ServiceInstallArgs),
    /// Stop and remove a service written by `looper service install`.
    #[command(after_help = "Examples:\n  looper service uninstall --name nightly")]
    Uninstall(ServiceNameArgs),
    /// The service's unit, its state in systemd, and its newest run.
    #[command(after_help = "Examples:\n  looper service status --name nightly")]
    Status(ServiceNameArgs),
}

#[derive(Debug, Args)]
pub struct ServiceNameArgs {
    /// Service name [default: the directory's name]; the unit is looper-NAME.service.
    #[arg(long)]
    pub name: Option<String>,
    /// The directory the looper runs in [default: the current directory].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServiceInstallArgs {
    #[command(flatten)]
    pub service: ServiceNameArgs,
    /// Write the unit (or plist) only: do not enable or start it.
    #[arg(long)]
    pub no_start: bool,
    /// Arguments for `looper run --local`, checked now as `looper config check` would.
    #[arg(last = true, value_name = "RUN_ARGS")]
    pub run_args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the demo repository instead of deleting it.
    #[arg(long)]
    pub keep: bool,
    /// Run in this terminal even inside tmux.
    #[arg(long)]
    pub local: bool,
    /// Create the demo repository here instead of a temporary directory.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LiveViewArgs {
    #[arg(long)]
    pub run_dir: PathBuf,
    #[arg(long)]
    pub supervisor_pid: i32,
}

#[derive(Debug, Args)]
pub struct PaneExecArgs {
    /// The 0600 environment file the supervisor wrote (removed once read).
    #[arg(long, value_name = "FILE")]
    pub env_file: PathBuf,
    /// The TUI's argv.
    #[arg(last = true, required = true, value_name = "ARGV")]
    pub argv: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args)]
pub struct DemoAgentArgs {
    /// The plan file to tick.
    #[arg(long)]
    pub plan: PathBuf,
    /// The prompt (ignored beyond being logged).
    pub prompt: Vec<String>,
}

/// A command given as one flag value, as its argv (one value for clap, not many).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Argv(pub Vec<String>);

/// A command line as argv: split into words like a shell would (quotes, escapes), never run
/// by one.
fn argv_words(s: &str) -> Result<Argv, String> {
    match shlex::split(s) {
        Some(words) if !words.is_empty() => Ok(Argv(words)),
        Some(_) => Err("must name a program".into()),
        None => Err("has an unclosed quote".into()),
    }
}

fn non_empty(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(s.to_string())
    }
}

/// The longest label: it names a directory, a tmux window and rows of `looper status`.
pub const MAX_LABEL: usize = 200;

fn label_arg(s: &str) -> Result<String, String> {
    let s = non_empty(s)?;
    if s.len() > MAX_LABEL {
        return Err(format!("{} bytes; at most {MAX_LABEL}", s.len()));
    }
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(s)
}

fn parse_finite(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number"))?;
    if !v.is_finite() {
        return Err("must be a finite number".into());
    }
    Ok(v)
}

/// Seconds flags obey the same range as `*_seconds` keys (`MAX_SECONDS`), so they can
/// become a `Duration` without a panic.
fn seconds(s: &str, exclusive: bool) -> Result<f64, String> {
    let v = parse_finite(s)?;
    let max = crate::config::schema::MAX_SECONDS;
    if crate::config::layers::seconds_in_range(v, 0.0, exclusive) {
        Ok(v)
    } else if v > max {
        Err(format!("must be at most {max} seconds"))
    } else if exclusive {
        Err("must be greater than zero".into())
    } else {
        Err("must be zero or greater".into())
    }
}

/// A seconds flag taken as a `Duration` where it is parsed.
fn duration_seconds(s: &str) -> Result<std::time::Duration, String> {
    let v = seconds(s, false)?;
    std::time::Duration::try_from_secs_f64(v).map_err(|e| e.to_string())
}

/// `--since`: a duration as people write one (`30m`, `2h`, `1d`, `1h30m`, humantime's
/// units), or whole seconds.
fn since_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(n));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("expected a duration such as 30m, 2h, 1d or whole seconds ({e})"))
}

fn positive_int(s: &str) -> Result<u64, String> {
    let v: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number"))?;
    if v == 0 {
        return Err("must be greater than zero".into());
    }
    Ok(v)
}

/// `--parallel N`: at least one run, at most [`MAX_PARALLEL`].
fn parallel_count(s: &str) -> Result<u64, String> {
    let n = positive_int(s)?;
    if n > MAX_PARALLEL {
        return Err(format!("must be at most {MAX_PARALLEL}"));
    }
    Ok(n)
}

/// More worktrees at once than this is a typo, not a plan (each is a full checkout).
pub const MAX_PARALLEL: u64 = 64;

fn regex_arg(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Ok(String::new());
    }
    crate::config::layers::compile_regex(s, false)
        .map(|_| s.to_string())
        .map_err(|e| format!("invalid regex: {e}"))
}

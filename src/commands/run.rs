//! `looper run` (and bare `looper`): first-run set-up, the farm launch, or a local run.

use std::path::Path;

use crate::cli::RunArgs;
use crate::commands::init;
use crate::config::{
    self, DEFAULT_CONFIG_FILE, DEFAULT_PROMPT_FILE, Invocation, LEGACY_PROMPT_FILE,
};
use crate::driver::{self, RunOptions};
use crate::effects::{git, procinfo};
use crate::error::{Error, Result};
use crate::records::events::SupervisorEvent;

/// A directory is initialised once it has a config or a prompt file.
pub fn initialized(dir: &Path) -> bool {
    [DEFAULT_CONFIG_FILE, DEFAULT_PROMPT_FILE, LEGACY_PROMPT_FILE]
        .iter()
        .any(|f| dir.join(f).exists())
}

pub fn run(args: RunArgs, bin: &str, wrapper: Option<&str>, implicit: bool) -> Result<i32> {
    // A farm window's looper takes the launching shell's environment first, and tells its
    // launcher whether the run started (issue 14.4, 14.5).
    if args.env_file.is_some() || args.farm_status.is_some() {
        return crate::commands::farm::in_window(args, |a| start(a, bin, wrapper, implicit));
    }
    start(args, bin, wrapper, implicit)
}

fn start(args: RunArgs, bin: &str, wrapper: Option<&str>, implicit: bool) -> Result<i32> {
    let inv = Invocation::from_process(wrapper)?;
    if implicit && std::env::args_os().len() == 1 && !initialized(&inv.base_dir) {
        return init::first_run(&inv.base_dir, bin);
    }
    if !args.local && !args.dry_run && args.parallel.is_some() {
        let settings = config::resolve(&args, &inv)?;
        return crate::commands::parallel::launch_farm(&args, &settings, &inv);
    }
    if !args.local
        && !args.dry_run
        && let Some(code) = crate::commands::farm::launch(&args, &inv)?
    {
        return Ok(code);
    }
    let settings = config::resolve(&args, &inv)?;
    if settings.parallel.is_some() {
        return crate::commands::parallel::run(&args, &settings, &inv);
    }
    run_local(settings, &inv)
}

/// The fewest open files a run needs: the agent's pipes, the guard's, the run's records, the
/// watcher, the async runtime (which panics when it cannot make its signal pipe).
const MIN_OPEN_FILES: u64 = 64;

/// Raise the soft open-file limit to what a run needs, or say why it cannot run.
fn ensure_open_files() -> Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return Ok(());
    };
    if soft >= MIN_OPEN_FILES {
        return Ok(());
    }
    let want = MIN_OPEN_FILES.min(hard);
    if want >= MIN_OPEN_FILES && setrlimit(Resource::RLIMIT_NOFILE, want, hard).is_ok() {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "the open-file limit is {soft} (ulimit -n, hard limit {hard}); a run needs at least {MIN_OPEN_FILES}: raise it with `ulimit -n {MIN_OPEN_FILES}`"
    )))
}

/// Validate, take the worktree lock, and run the loop in this process.
pub fn run_local(mut settings: config::Settings, inv: &Invocation) -> Result<i32> {
    ensure_open_files()?;
    let hold = settings.hold_on_stop;
    let dry = settings.dry_run;
    let layout = settings.tmux_layout;
    // The label and the run directory are named first: a worktree is made before the run
    // starts, and its record names both.
    let label = match settings.label.clone() {
        Some(l) => l,
        None => config::run::default_label(&settings),
    };
    settings.label = Some(label.clone());
    let run_id = (chrono::Utc::now(), rand::random::<u32>());
    let run_dir = settings
        .log_dir
        .join(crate::records::run_dir_name(run_id.0, &label, run_id.1));
    let worktree = crate::commands::worktree::enter(&mut settings, inv, &label, &run_dir)?;
    let wt_settings = settings.worktree.clone();
    // A failure from here on drops the lease, which settles the worktree (removes it: the
    // run never started in it).
    let mut prepared = config::run::prepare(settings, inv)?;
    if let (Some(lease), Some(w)) = (&worktree, &wt_settings) {
        prepared
            .notices
            .insert(0, crate::commands::worktree::notice(lease, w));
    }

    let mut took_over = None;
    let _lock = if dry {
        None
    } else {
        let me = std::process::id() as i32;
        let holder = git::HolderRecord {
            pid: me as u32,
            pid_identity: procinfo::pid_identity(me),
            label: prepared.label.clone(),
            run_dir: run_dir.clone(),
            started_at: run_id.0,
        };
        let lock_path = git::lock_path_for(&prepared.settings.agent.cwd);
        // A holder that has just taken the lock may not have written its record yet: give it
        // a moment, so the refusal can name it (or the lock is free again and ours).
        let mut attempt = 0;
        let mut finishing_since: Option<std::time::Instant> = None;
        let guard = loop {
            match git::acquire_run_lock(&lock_path, &holder) {
                Err(git::GitError::LockHeld { holder: None, .. }) if attempt < 25 => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                // A holder whose run has recorded its end is finishing (closing its pane,
                // running its notifier): the worktree is free in a moment, so wait for it
                // rather than refuse a looper started as soon as `status` said "stopped".
                Err(git::GitError::LockHeld {
                    holder: Some(h), ..
                }) if has_ended(&h)
                    && finishing_since.is_none_or(|t| t.elapsed() < FINISHING_WAIT) =>
                {
                    if finishing_since.is_none() {
                        crate::console::err(&format!(
                            "looper: the previous run here ({}) has ended; waiting for its supervisor (pid {}) to let go of the worktree",
                            crate::text::sanitize_line(&h.label),
                            h.pid
                        ));
                        finishing_since = Some(std::time::Instant::now());
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => break other?,
            }
        };
        if let Some(prev) = &guard.took_over {
            crate::console::err(&format!(
                "looper: took over a stale run lock from pid {} (label {}, run {})",
                prev.pid,
                prev.label,
                prev.run_dir.display()
            ));
            // A looper restarted after a crash (by a service manager, or by hand) closes the
            // previous run's records before it starts its own.
            if let Some(note) = crate::service::repair_previous_run(&prev.run_dir) {
                crate::console::err(&note);
            }
            took_over = Some(SupervisorEvent::LockTakenOver {
                previous_holder: prev.clone(),
                lock: lock_path.clone(),
            });
        }
        Some(guard)
    };

    let in_tmux = prepared.tmux.is_some();
    let split = !dry && in_tmux && matches!(layout, config::Layout::Split | config::Layout::Auto);
    let opts = RunOptions {
        echo_transcript: true,
        quiet: false,
        split_live_view: split,
        run_id: Some(run_id),
    };
    crate::commands::farm::report_started(&prepared.label, &run_dir);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("cannot start the async runtime", "tokio", e))?;
    let code = rt.block_on(driver::run(prepared, opts, took_over, worktree))?;
    // A stop may have come while git work was under way on a blocking thread: do not wait
    // for it (what it leaves is loose objects at most; refs are written atomically).
    rt.shutdown_background();
    if hold && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        crate::console::err("looper: stopped; press Enter to close");
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    }
    Ok(code)
}

/// How long a looper waits for a holder whose run has ended to exit.
const FINISHING_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether the lock holder's run has recorded its end (it only finishes up now).
fn has_ended(h: &git::HolderRecord) -> bool {
    crate::records::state::read_state(&h.run_dir.join(crate::records::STATE_FILE))
        .is_ok_and(|st| !st.is_active())
}

//! `looper pane-exec`: the first command of a hybrid pane. A pane is the tmux server's child
//! and starts with the server's environment; this takes the supervisor's from the private
//! file it wrote (`effects::envfile`: checked, removed before it is read) and becomes the
//! agent's TUI with it, in the same process (the pane's pid is the TUI's). No value of the
//! environment is ever on a command line (issue 14.4).

use std::os::unix::process::CommandExt;

use crate::cli::PaneExecArgs;
use crate::effects::envfile;
use crate::error::{Error, Result};

/// Returns only on failure (the pane then shows the error: it remains on exit).
pub fn pane_exec(args: &PaneExecArgs) -> Result<i32> {
    let vars = envfile::take_env_file(&args.env_file)?;
    // The pane's own tmux and terminal variables, and the directory it starts in.
    let env =
        envfile::window_environment(vars, |k| std::env::var_os(k), std::env::current_dir().ok());
    let Some((program, rest)) = args.argv.split_first() else {
        return Err(Error::Usage("pane-exec: no command to run after --".into()));
    };
    let err = std::process::Command::new(program)
        .args(rest)
        .env_clear()
        .envs(env)
        .exec();
    Err(Error::io(
        "cannot start",
        program.to_string_lossy().as_ref(),
        err,
    ))
}

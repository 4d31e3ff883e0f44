//! Thin adapters for everything that touches the world: processes, files, git, tmux.

pub mod agent_cli;
pub mod diff;
pub mod envfile;
pub mod git;
#[cfg(target_os = "linux")]
pub mod guard;
pub mod holders;
pub mod hybrid;
pub mod ignore;
pub mod notify;
pub mod outlog;
pub mod process;
pub mod procinfo;
pub mod textfile;
pub mod tmux;
pub mod worktree;

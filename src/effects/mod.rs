//! Thin adapters for everything that touches the world: processes, files, git, tmux.

pub mod diff;
pub mod git;
pub mod hybrid;
pub mod notify;
pub mod outlog;
pub mod process;
pub mod procinfo;
pub mod tmux;

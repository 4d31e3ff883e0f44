//! Thin adapters for everything that touches the world: processes, files, git, tmux.

pub mod inbox;
pub mod outlog;
pub mod procinfo;
pub mod process;
pub mod store;
pub mod git;
pub mod tmux;

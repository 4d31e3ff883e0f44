//! The subcommands, each a thin layer over config, driver and effects.

pub mod control;
pub mod demo;
pub mod diff;
pub mod doctor;
pub mod farm;
pub mod human;
pub mod init;
pub mod live_view;
pub mod logs;
pub mod mcp;
pub mod misc;
pub mod pane_exec;
pub mod parallel;
pub mod run;
pub mod status;
pub mod wait;
pub mod worktree;

//! The integration test binary: every module runs real looper processes against the
//! fake agent in temporary git repositories.

#[path = "../support/mod.rs"]
mod support;

mod cli;
mod control;
mod engine_runs;
mod hybrid;
mod process;
mod reliability;
mod status;
mod tmux;

//! The integration test binary: every module runs real looper processes in temporary git
//! repositories, against the fake agent or (the `e2e` module) the real agent CLIs talking
//! to the mock model server.

#[path = "../support/mod.rs"]
mod support;

#[path = "../support/mock_server.rs"]
mod mock_server;

#[path = "../support/e2e.rs"]
mod e2e_support;

mod e2e;

mod cli;
mod control;
mod engine_runs;
mod fuzz_replay;
mod hardening;
mod human;
mod hybrid;
mod process;
mod reliability;
mod status;
mod tmux;

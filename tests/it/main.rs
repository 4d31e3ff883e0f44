//! The integration test binary: every module runs real looper processes in temporary git
//! repositories, against the fake agent or (the `e2e` module) the real agent CLIs talking
//! to the mock model server.

#[path = "../support/mod.rs"]
mod support;

#[path = "../support/mock_server.rs"]
mod mock_server;

#[path = "../support/e2e.rs"]
mod e2e_support;

#[path = "../support/sshd.rs"]
mod sshd;

mod e2e;
mod e2e_quota;

mod cli;
mod control;
mod engine_runs;
mod examples;
mod first_hour;
mod fuzz_replay;
mod hardening;
mod human;
mod hybrid;
mod process;
mod quick_start;
mod quota;
mod reliability;
mod remote;
mod security;
mod service;
mod status;
mod tmux;
mod verify;
mod worktree;

//! The integration test binary: every module runs real looper processes against the
//! fake agent in temporary git repositories.

#[path = "../support/mod.rs"]
mod support;

mod control;
mod engine_runs;
mod status;

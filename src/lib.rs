//! agent-looper: run AI coding-agent CLIs (codex, claude, gemini, any command) in
//! supervised loops, unattended, with gates that stop them at the right moment.
//!
//! Layout: `cli` parses; `config` validates; `engine` decides (pure); `driver` joins the
//! engine to the `effects` (processes, files, git, tmux); `commands` implement the
//! subcommands on top.

pub mod agents;
pub mod app;
pub mod cli;
pub mod commands;
pub mod config;
pub mod console;
pub mod driver;
pub mod effects;
pub mod engine;
pub mod error;
pub mod prompts;
pub mod records;
pub mod remote;
pub mod service;
pub mod text;
pub mod transcript;

pub use app::main_with;

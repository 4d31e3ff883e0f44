//! Agents: how each kind is invoked (argv) and how its output is understood.

pub mod command;
pub mod long_line;
pub mod output;
mod piece;
pub mod scanner;
pub mod self_retry;

pub use command::{AgentCommand, PromptContext};
pub use output::Stream;
pub use scanner::{Classifier, Scanner};

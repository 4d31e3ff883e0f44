//! Lines for the person at the terminal. The terminal may go away while a run goes on (an
//! SSH session drops, a tmux server is killed): writing to it then fails, and that must
//! neither end nor corrupt the run, so the failure is ignored (`println!` would panic).

use std::io::Write;

/// A line on stdout.
pub fn out(line: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// A line on stderr.
pub fn err(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

pub mod echo;
pub mod words;

//! One error type for everything the looper can report, and the exit codes it maps to.

use std::path::PathBuf;

/// Exit codes, documented once here and in the README (D5).
pub mod exit_code {
    /// The run ended as asked: completion, max loops, dry run, operator stop.
    pub const OK: i32 = 0;
    /// The agent failed: nonzero exit not ignored, a terminal error, the transient-retry cap,
    /// or the supervisor could not keep its records.
    pub const AGENT_FAILED: i32 = 1;
    /// Usage or configuration error; nothing was started.
    pub const USAGE: i32 = 2;
    /// A circuit breaker or a budget stopped the run.
    pub const BREAKER: i32 = 3;
    /// A per-prompt timeout.
    pub const TIMEOUT: i32 = 124;
    /// Interrupted by a signal (SIGINT, SIGTERM, SIGHUP).
    pub const INTERRUPTED: i32 = 130;
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is wrong. `source` names the file (or flag) it came from.
    #[error("{origin}: {key}: expected {expected}, found {found}")]
    Config {
        origin: String,
        key: String,
        expected: String,
        found: String,
    },
    /// A configuration key that does not exist.
    #[error("{origin}: unknown key `{key}`{}", suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    UnknownKey {
        origin: String,
        key: String,
        suggestion: Option<String>,
    },
    /// Several configuration mistakes, all reported at once.
    #[error("{} problems in the configuration:{}", .0.len(), .0.iter().map(|e| format!("\n  - {e}")).collect::<String>())]
    Many(Vec<Error>),
    /// Anything else that makes the invocation invalid before a run starts.
    #[error("{0}")]
    Usage(String),
    /// A prompt file problem (missing, empty, not UTF-8).
    #[error("{0}")]
    Prompt(String),
    /// A filesystem operation failed; always names the path.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A git prerequisite or operation failed; `context` says what needed it (`--backup`).
    /// A held run lock (D18) is `GitError::LockHeld`, with its holder kept as data.
    #[error("{}{source}", context.map(|c| format!("{c}: ")).unwrap_or_default())]
    Git {
        context: Option<&'static str>,
        #[source]
        source: Box<crate::effects::git::GitError>,
    },
    /// Writing into a run directory (or one of its files) was refused: it is a symlink, not
    /// ours, writable by others, or not what it should be.
    #[error("refusing to write {} {}: it {why}", if *run_dir { "into run directory" } else { "to" }, path.display())]
    Unsafe {
        path: PathBuf,
        why: &'static str,
        run_dir: bool,
    },
    /// The agent's program is not installed where the config says.
    #[error(
        "agent executable not found: {program} (agent `{agent}`; install it, put it on PATH, or set agents.{agent}.executable)"
    )]
    AgentNotFound { program: String, agent: String },
    /// tmux is needed and failed.
    #[error("{0}")]
    Tmux(String),
    /// A failure that is reported with a specific exit code (doctor, control --wait, ...).
    #[error("{message}")]
    WithCode { message: String, code: i32 },
}

impl Error {
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub fn unsafe_run_dir(path: &std::path::Path, why: &'static str) -> Self {
        Error::Unsafe {
            path: path.to_path_buf(),
            why,
            run_dir: true,
        }
    }

    pub fn unsafe_file(path: &std::path::Path, why: &'static str) -> Self {
        Error::Unsafe {
            path: path.to_path_buf(),
            why,
            run_dir: false,
        }
    }

    /// A git failure, with what needed git.
    pub fn git(context: &'static str, source: crate::effects::git::GitError) -> Self {
        Error::Git {
            context: Some(context),
            source: Box::new(source),
        }
    }

    pub fn config(
        origin: impl Into<String>,
        key: impl Into<String>,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        Error::Config {
            origin: origin.into(),
            key: key.into(),
            expected: expected.into(),
            found: found.into(),
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config { .. }
            | Error::UnknownKey { .. }
            | Error::Many(_)
            | Error::Usage(_)
            | Error::Prompt(_)
            | Error::Git { .. }
            | Error::Unsafe { .. }
            | Error::AgentNotFound { .. }
            | Error::Tmux(_) => exit_code::USAGE,
            Error::Io { .. } => exit_code::AGENT_FAILED,
            Error::WithCode { code, .. } => *code,
        }
    }
}

impl From<crate::effects::git::GitError> for Error {
    fn from(source: crate::effects::git::GitError) -> Self {
        Error::Git {
            context: None,
            source: Box::new(source),
        }
    }
}

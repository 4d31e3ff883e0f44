//! Environments handed over in private files, never in argv, tmux options or the records
//! (issue 14.4): the farm launcher's for its window's looper (`commands::farm::handoff`), and
//! the supervisor's for the agent's TUI in a hybrid pane (`looper pane-exec`).
//!
//! The files live in one owner-only directory (`$XDG_RUNTIME_DIR/agent-looper/farm`, a tmpfs
//! that never reaches a disk, else `${XDG_STATE_HOME:-~/.local/state}/agent-looper/farm`), are
//! created 0600 with `O_EXCL` (which never follows a symlink) and carry a random name. The
//! taker opens one without following links, checks that it is a regular file of ours with
//! mode 0600, and removes it before it reads it.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

/// Hand-over files older than this are leftovers of a process that died: removed.
pub const STALE_AFTER: Duration = Duration::from_secs(5 * 60);

/// An environment is a few KiB; the kernel refuses more than a few MiB of it at exec anyway.
pub const MAX_ENV_FILE: u64 = 4 << 20;

/// Variables a process taking an environment file keeps from its own environment: they
/// describe where it runs (its tmux pane and terminal), not the shell that wrote the file.
pub const WINDOW_VARS: [&str; 5] = [
    "TMUX",
    "TMUX_PANE",
    "TERM",
    "TERM_PROGRAM",
    "TERM_PROGRAM_VERSION",
];

/// The directory for hand-over files: the runtime directory's (a tmpfs), else the state
/// directory's when that one cannot be used (the first error is the one reported).
pub fn private_dir(env: &BTreeMap<String, String>) -> Result<PathBuf> {
    let absolute = |k: &str| {
        env.get(k)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute() && p.is_dir())
    };
    let state = absolute("XDG_STATE_HOME")
        .or_else(|| env.get("HOME").map(|h| Path::new(h).join(".local/state")));
    let candidates = [absolute("XDG_RUNTIME_DIR"), state]
        .into_iter()
        .flatten()
        .map(|base| base.join("agent-looper").join("farm"));
    let mut first = None;
    for dir in candidates {
        match prepare_private_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    Err(first.unwrap_or_else(|| {
        Error::Usage(
            "cannot place the looper's hand-over files: neither XDG_RUNTIME_DIR, XDG_STATE_HOME nor HOME is set"
                .into(),
        )
    }))
}

/// Create `dir` owner-only if missing; refuse it when it is a link, not ours, or open to
/// others (someone could read the environment files or plant reports there).
fn prepare_private_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io("cannot create", dir, e))?;
    let meta = std::fs::symlink_metadata(dir).map_err(|e| Error::io("cannot inspect", dir, e))?;
    let why = if meta.file_type().is_symlink() {
        Some("is a symbolic link")
    } else if !meta.is_dir() {
        Some("is not a directory")
    } else if meta.uid() != nix::unistd::geteuid().as_raw() {
        Some("is not owned by the current user")
    } else if meta.mode() & 0o077 != 0 {
        Some("is open to group or others (it must be 0700)")
    } else {
        None
    };
    match why {
        Some(why) => Err(Error::Usage(format!(
            "refusing to use {} for the looper's hand-over files: it {why}",
            dir.display()
        ))),
        None => Ok(()),
    }
}

/// Remove hand-over files older than `age` (a launch that died before cleaning up).
pub fn remove_stale(dir: &Path, age: Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let ours = path
            .extension()
            .is_some_and(|x| x == "env" || x == "status");
        let old = e
            .metadata()
            .ok()
            .filter(std::fs::Metadata::is_file)
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|el| el > age);
        if ours && old {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// A new name for a hand-over file, `<32 hex digits>.<extension>` in the private directory
/// ([`private_dir`] of `env`), once the leftovers of processes that died are removed.
pub fn fresh_path(env: &BTreeMap<String, String>, extension: &str) -> Result<PathBuf> {
    let dir = private_dir(env)?;
    remove_stale(&dir, STALE_AFTER);
    Ok(dir.join(format!("{:032x}.{extension}", rand::random::<u128>())))
}

/// `KEY=VALUE\0` for each variable, the layout of `/proc/<pid>/environ`: lossless for
/// names and values that are not UTF-8.
pub fn encode_env(vars: impl IntoIterator<Item = (OsString, OsString)>) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in vars {
        let (k, v) = (k.as_bytes(), v.as_bytes());
        if k.is_empty() || k.contains(&b'=') || k.contains(&0) || v.contains(&0) {
            continue;
        }
        out.extend_from_slice(k);
        out.push(b'=');
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// The inverse of [`encode_env`]; malformed entries are skipped.
pub fn decode_env(bytes: &[u8]) -> Vec<(OsString, OsString)> {
    bytes
        .split(|b| *b == 0)
        .filter_map(|entry| {
            let eq = entry.iter().position(|b| *b == b'=')?;
            (eq > 0).then(|| {
                (
                    OsString::from_vec(entry[..eq].to_vec()),
                    OsString::from_vec(entry[eq + 1..].to_vec()),
                )
            })
        })
        .collect()
}

/// Create a new owner-only file (`O_EXCL`: an existing file or a planted link fails).
pub fn create_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| Error::io("cannot create", path, e))?;
    f.write_all(bytes)
        .map_err(|e| Error::io("cannot write", path, e))
}

/// Read, check and remove the environment file, returning its variables.
pub fn take_env_file(path: &Path) -> Result<Vec<(OsString, OsString)>> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io("cannot open the environment file", path, e))?;
    let meta = f
        .metadata()
        .map_err(|e| Error::io("cannot inspect the environment file", path, e))?;
    let why = if !meta.is_file() {
        Some("is not a regular file")
    } else if meta.uid() != nix::unistd::geteuid().as_raw() {
        Some("is not owned by the current user")
    } else if meta.mode() & 0o777 != 0o600 {
        Some("does not have mode 0600")
    } else if meta.len() > MAX_ENV_FILE {
        Some("is too large for an environment")
    } else {
        None
    };
    if let Some(why) = why {
        return Err(Error::Usage(format!(
            "refusing the environment file {}: it {why}",
            path.display()
        )));
    }
    // Removed before it is read: the values live on only in this process.
    std::fs::remove_file(path)
        .map_err(|e| Error::io("cannot remove the environment file", path, e))?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.take(MAX_ENV_FILE)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("cannot read the environment file", path, e))?;
    Ok(decode_env(&bytes))
}

/// The launching shell's variables, with the window's own tmux and terminal ones and `PWD`.
pub fn window_environment(
    shell: Vec<(OsString, OsString)>,
    own: impl Fn(&str) -> Option<OsString>,
    cwd: Option<PathBuf>,
) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> = shell.into_iter().collect();
    for k in WINDOW_VARS {
        match own(k) {
            Some(v) => env.insert(k.into(), v),
            None => env.remove(OsStr::new(k)),
        };
    }
    if let Some(cwd) = cwd {
        env.insert("PWD".into(), cwd.into_os_string());
    }
    env
}

//! The one reader of the text files a run is given (prompt, plan, config, preset): regular
//! files only, read with a size cap, and opened so that nothing can block the supervisor
//! (issue 20.6). A FIFO used to freeze the run for good (signals and `control stop --now`
//! included) and a prompt linked to `/dev/zero` was read until memory ran out.

use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Larger than any prompt an agent's argv or stdin takes in practice (the argv limit is
/// checked later, with its own message), small enough that reading it is no memory risk.
pub const MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Why a text file could not be read; each names the path.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{} does not exist", path.display())]
    NotFound { path: PathBuf },
    #[error("{} is {kind}, not a regular file", path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{} is larger than {limit} bytes", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ReadError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::NotFound { .. })
    }
}

/// A file's bytes and what `fstat` said about the file they came from.
#[derive(Debug)]
pub struct TextFile {
    pub bytes: Vec<u8>,
    pub metadata: Metadata,
}

/// Reads `path` if it is a regular file of at most [`MAX_BYTES`]. A symlink to a regular file
/// is followed (it is only read). `O_NONBLOCK` makes opening a FIFO return at once (to be
/// refused by its type) instead of waiting for a writer; it does nothing to regular files.
pub fn read(path: &Path) -> Result<TextFile, ReadError> {
    read_capped(path, MAX_BYTES)
}

pub fn read_capped(path: &Path, limit: u64) -> Result<TextFile, ReadError> {
    let io = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ReadError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            ReadError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    };
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io)?;
    let metadata = file.metadata().map_err(io)?;
    let kind = metadata.file_type();
    if !kind.is_file() {
        let kind = if kind.is_fifo() {
            "a FIFO (named pipe)"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_dir() {
            "a directory"
        } else {
            "a special file"
        };
        return Err(ReadError::NotRegular {
            path: path.to_path_buf(),
            kind,
        });
    }
    let too_large = || ReadError::TooLarge {
        path: path.to_path_buf(),
        limit,
    };
    if metadata.len() > limit {
        return Err(too_large());
    }
    // The file may grow between the fstat and the read: never read more than the limit + 1.
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(TextFile { bytes, metadata })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Runs `f` on a thread and fails the test if it does not return in time (a FIFO
    /// would otherwise hang the whole test binary).
    fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the read blocked")
    }

    #[test]
    fn regular_files_and_links_to_them_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("PROMPT.md");
        std::fs::write(&p, "hello\n").expect("write");
        assert_eq!(read(&p).expect("read").bytes, b"hello\n");
        let link = dir.path().join("link.md");
        std::os::unix::fs::symlink(&p, &link).expect("symlink");
        assert_eq!(read(&link).expect("read").bytes, b"hello\n");
        assert!(
            read(&dir.path().join("missing"))
                .expect_err("missing")
                .is_not_found()
        );
    }

    #[test]
    fn fifos_devices_and_directories_are_refused_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let err = within(move || read(&fifo)).expect_err("fifo");
        assert!(
            err.to_string()
                .ends_with("is a FIFO (named pipe), not a regular file"),
            "{err}"
        );
        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
        let err = within(move || read(&zero)).expect_err("device");
        assert!(err.to_string().contains("is a character device"), "{err}");
        let err = read(dir.path()).expect_err("dir");
        assert!(err.to_string().contains("is a directory"), "{err}");
    }

    #[test]
    fn config_files_go_through_the_same_reader() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("agent-looper.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let err = within(move || crate::config::layers::read_text(&fifo, "the config file"))
            .expect_err("fifo");
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("is a FIFO (named pipe)"), "{err}");
    }

    #[test]
    fn files_over_the_limit_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("big");
        std::fs::write(&p, vec![b'x'; 11]).expect("write");
        assert_eq!(read_capped(&p, 11).expect("at the limit").bytes.len(), 11);
        let err = read_capped(&p, 10).expect_err("over");
        assert!(
            err.to_string().ends_with("is larger than 10 bytes"),
            "{err}"
        );
    }
}

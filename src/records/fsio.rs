//! The file primitives every record goes through: private directories, whole-line appends,
//! atomic replacement, and the checks that make writing into a run directory safe (ours, not a
//! symlink, not writable by others). Readers that tolerate torn last lines live here too.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use serde_json::Value as Json;

use crate::error::{Error, Result};

/// The largest JSONL file read whole (the registry); records that can grow without bound are
/// tail-read instead (`read_tail`).
pub const MAX_JSONL: u64 = 64 << 20;
/// The largest `state.json` read: a state is a few KiB; a huge one is somebody else's file.
pub const MAX_STATE: u64 = 4 << 20;

/// Create a directory with owner-only permissions, and its missing parents likewise
/// (`.agent-looper/` and `runs/` hold transcripts: D21).
pub fn create_private_dir(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent()
        && !parent.is_dir()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| Error::io("cannot create", parent, e))?;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(|e| Error::io("cannot create run directory", path, e))
}

/// Open a file for appending, creating it owner-only.
pub fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// `line` plus its newline, as one buffer: one `write` call per line on an `O_APPEND` file is
/// what keeps concurrent appenders from interleaving.
fn with_newline(line: &str) -> Vec<u8> {
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    buf
}

/// Whether the file's last byte is a newline.
fn ends_with_newline(f: &File, len: u64) -> bool {
    use std::os::unix::fs::FileExt;
    let mut last = [0u8];
    f.read_exact_at(&mut last, len - 1).is_ok() && last[0] == b'\n'
}

/// Append one line with a single write so concurrent appenders never interleave.
pub fn append_line(path: &Path, line: &str) -> Result<()> {
    let mut f = open_append(path).map_err(|e| Error::io("cannot open", path, e))?;
    f.write_all(&with_newline(line))
        .map_err(|e| Error::io("cannot append to", path, e))
}

/// Replace a file atomically: temp file in the same directory, then rename.
pub fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".state.")
        .suffix(".tmp")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(|e| Error::io("cannot create a temporary file in", dir, e))?;
    tmp.write_all(bytes)
        .map_err(|e| Error::io("cannot write", tmp.path(), e))?;
    if durable {
        tmp.as_file()
            .sync_data()
            .map_err(|e| Error::io("cannot sync", tmp.path(), e))?;
    }
    tmp.persist(path)
        .map_err(|e| Error::io("cannot replace", path, e.error))?;
    if durable && let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Create a file atomically, only if it does not exist yet: a temp file in the same
/// directory, then a hard link to `path` (which fails if `path` exists). Returns false when
/// another writer got there first: the first of concurrent writers wins, whole.
pub fn create_atomic(path: &Path, bytes: &[u8], durable: bool) -> Result<bool> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".new.")
        .suffix(".tmp")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(|e| Error::io("cannot create a temporary file in", dir, e))?;
    tmp.write_all(bytes)
        .map_err(|e| Error::io("cannot write", tmp.path(), e))?;
    if durable {
        tmp.as_file()
            .sync_data()
            .map_err(|e| Error::io("cannot sync", tmp.path(), e))?;
    }
    match tmp.persist_noclobber(path) {
        Ok(_) => {}
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(Error::io("cannot create", path, e.error)),
    }
    if durable && let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(true)
}

/// Make everything written on the filesystem holding `dir` durable, in one call (`syncfs`,
/// which reports write-back errors since Linux 5.8): far cheaper than an fsync per file when
/// many records were written at once.
pub fn sync_filesystem(dir: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let d = File::open(dir)?;
    // SAFETY: `d` is an open descriptor for the duration of the call; syncfs only reads it.
    if unsafe { libc::syncfs(d.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Create a new owner-only file holding `bytes` (really written, so the space is taken).
pub fn write_new_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

/// Open `path` for reading only if it is a regular file, without following a symlink and
/// without blocking (a FIFO planted as a record would hang the reader for good).
pub fn open_regular(path: &Path) -> std::io::Result<(File, u64)> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok((f, meta.len()))
}

/// A regular file's contents, at most `max` bytes (a larger file is an error naming its size:
/// one huge record must not take the reader's memory).
pub fn read_regular(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let (f, len) = open_regular(path)?;
    read_bounded(f, len, max)
}

/// An open file of `len` bytes, read whole if it is at most `max` bytes.
fn read_bounded(f: File, len: u64, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    if len > max {
        return Err(std::io::Error::other(format!(
            "{len} bytes, over the {max}-byte limit"
        )));
    }
    let mut buf = Vec::with_capacity(len as usize);
    // The file may grow while it is read: never past the limit.
    f.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(std::io::Error::other(format!("over the {max}-byte limit")));
    }
    Ok(buf)
}

/// The last `max` bytes of a regular file, from the first line that starts inside them (a
/// line cut by the window is dropped).
pub fn read_tail(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let (mut f, len) = open_regular(path)?;
    let start = len.saturating_sub(max);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity((len - start) as usize);
    f.take(max).read_to_end(&mut buf)?;
    drop_cut_line(&mut buf, start);
    Ok(buf)
}

/// A window read from `start` begins with the rest of a line cut by it: dropped.
fn drop_cut_line(buf: &mut Vec<u8>, start: u64) {
    if start > 0 {
        match memchr::memchr(b'\n', buf) {
            Some(nl) => {
                buf.drain(..=nl);
            }
            None => buf.clear(),
        }
    }
}

/// Parse JSONL text, skipping blank, malformed and torn lines.
pub fn parse_jsonl(bytes: &[u8]) -> Vec<Json> {
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .filter_map(|l| serde_json::from_slice::<Json>(l).ok())
        .filter(Json::is_object)
        .collect()
}

/// Read a JSONL file, skipping blank, malformed and torn lines.
pub fn read_jsonl(path: &Path) -> Vec<Json> {
    match read_regular(path, MAX_JSONL) {
        Ok(bytes) => parse_jsonl(&bytes),
        Err(_) => vec![],
    }
}

/// Why writing into `path` (a run directory or one of its files) is unsafe, if it is: a
/// symlink could redirect the write, and a file others can write could have been planted.
pub fn unsafe_reason(meta: &std::fs::Metadata) -> Option<&'static str> {
    if meta.file_type().is_symlink() {
        Some("is a symbolic link")
    } else if meta.uid() != euid() {
        Some("is not owned by the current user")
    } else if meta.mode() & 0o022 != 0 {
        Some("is writable by group or others")
    } else {
        None
    }
}

/// The effective user, asked once (checks run for every record of every run listed).
fn euid() -> u32 {
    static EUID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *EUID.get_or_init(|| nix::unistd::geteuid().as_raw())
}

/// Check that a run directory may be written into.
pub fn check_run_dir(dir: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| Error::io("cannot inspect run directory", dir, e))?;
    if let Some(why) = unsafe_reason(&meta) {
        return Err(Error::unsafe_run_dir(dir, why));
    }
    if !meta.is_dir() {
        return Err(Error::unsafe_run_dir(dir, "is not a directory"));
    }
    Ok(())
}

/// Check a file of a run directory before it is rewritten or appended to.
pub fn check_run_file(path: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| Error::io("cannot inspect", path, e))?;
    if let Some(why) = unsafe_reason(&meta) {
        return Err(Error::unsafe_file(path, why));
    }
    if !meta.is_file() {
        return Err(Error::unsafe_file(path, "is not a regular file"));
    }
    Ok(())
}

/// A run file's contents (at most `max` bytes) after the checks of [`check_run_file`], made
/// on the open file itself: one `open` and one `fstat`, no window between check and read.
pub fn read_run_file(path: &Path, max: u64) -> Result<Vec<u8>> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| open_error(path, e))?;
    let len = checked(&f, path)?.len();
    read_bounded(f, len, max).map_err(|e| Error::io("cannot read", path, e))
}

/// A symlink refused by `O_NOFOLLOW` is named as such.
fn open_error(path: &Path, e: std::io::Error) -> Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        Error::unsafe_file(path, "is a symbolic link")
    } else {
        Error::io("cannot open", path, e)
    }
}

/// The open file's metadata, if it is a regular file that is ours and nobody else can write.
fn checked(f: &File, path: &Path) -> Result<std::fs::Metadata> {
    let meta = f
        .metadata()
        .map_err(|e| Error::io("cannot inspect", path, e))?;
    if let Some(why) = unsafe_reason(&meta) {
        return Err(Error::unsafe_file(path, why));
    }
    if !meta.is_file() {
        return Err(Error::unsafe_file(path, "is not a regular file"));
    }
    Ok(meta)
}

/// A run file opened for whole-line appends (and reading), created owner-only; the caller has
/// checked the run directory ([`check_run_dir`]).
pub struct RunAppend {
    file: File,
    len: u64,
    pub path: std::path::PathBuf,
}

impl RunAppend {
    /// Open `<run_dir>/<name>`, refusing symlinks (`O_NOFOLLOW` closes the window between a
    /// check and the open), FIFOs (`O_NONBLOCK`: one planted would hang the writer) and files
    /// someone else could have planted or can modify.
    pub fn open(run_dir: &Path, name: &str) -> Result<RunAppend> {
        let path = run_dir.join(name);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
            .map_err(|e| open_error(&path, e))?;
        let len = checked(&file, &path)?.len();
        Ok(RunAppend { file, len, path })
    }

    /// The last `max` bytes, from the first line that starts inside them.
    pub fn tail(&self, max: u64) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        let start = self.len.saturating_sub(max);
        let mut buf = vec![0; (self.len - start) as usize];
        if self.file.read_exact_at(&mut buf, start).is_err() {
            return Vec::new();
        }
        drop_cut_line(&mut buf, start);
        buf
    }

    /// Append one line with a single `write` (concurrent writers never interleave). A line
    /// always starts on a line boundary: bytes left without a newline (a short write, an
    /// agent writing to the file it was told about) would otherwise swallow this line.
    pub fn append_line(&mut self, line: &str) -> Result<()> {
        let mut buf = Vec::with_capacity(line.len() + 2);
        if self.len > 0 && !ends_with_newline(&self.file, self.len) {
            buf.push(b'\n');
        }
        buf.extend_from_slice(&with_newline(line));
        self.file
            .write_all(&buf)
            .map_err(|e| Error::io("cannot append to", &self.path, e))?;
        self.len += buf.len() as u64;
        Ok(())
    }
}

/// Append one line to `<run_dir>/<name>` with a single `write` on an `O_APPEND` file
/// (concurrent writers never interleave), refusing symlinks and files or directories that
/// someone else could have planted or can modify.
pub fn secure_append(run_dir: &Path, name: &str, line: &str) -> Result<std::path::PathBuf> {
    check_run_dir(run_dir)?;
    let mut f = RunAppend::open(run_dir, name)?;
    f.append_line(line)?;
    Ok(f.path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_jsonl_skips_a_torn_last_line_and_garbage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("e.jsonl");
        std::fs::write(&p, b"{\"a\":1}\n\nnot json\n{\"b\":2}\n{\"c\":").expect("write");
        let lines = read_jsonl(&p);
        assert_eq!(lines.len(), 2);
    }

    #[test]
    fn run_files_are_read_only_when_ours_alone_and_regular() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("state.json");
        std::fs::write(&good, b"{}").expect("write");
        std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(read_run_file(&good, 16).expect("read"), b"{}");
        assert!(read_run_file(&good, 1).is_err(), "over the limit");
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&good, &link).expect("symlink");
        let e = read_run_file(&link, 16).expect_err("symlink").to_string();
        assert!(e.contains("symbolic link"), "{e}");
        std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        let e = read_run_file(&good, 16).expect_err("writable").to_string();
        assert!(e.contains("writable by group or others"), "{e}");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let e = read_run_file(&fifo, 16).expect_err("fifo").to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn secure_append_refuses_symlinks_and_open_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let run = dir.path().join("run");
        std::fs::create_dir(&run).expect("mkdir");
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let p = secure_append(&run, "control.jsonl", "{}").expect("append");
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(dir.path().join("elsewhere"), "").expect("write");
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), run.join("focus.jsonl"))
            .expect("symlink");
        let e = secure_append(&run, "focus.jsonl", "{}").expect_err("symlink");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        let e = secure_append(&run, "control.jsonl", "{}").expect_err("world writable");
        assert!(e.to_string().contains("writable by group or others"), "{e}");
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let e = secure_append(&run, "x.jsonl", "{}").expect_err("open dir");
        assert!(
            e.to_string()
                .contains("refusing to write into run directory"),
            "{e}"
        );
        assert_eq!(e.exit_code(), crate::error::exit_code::USAGE);
    }
}

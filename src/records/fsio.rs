//! The file primitives every record goes through: private directories, whole-line appends,
//! atomic replacement, and the checks that make writing into a run directory safe (ours, not a
//! symlink, not writable by others). Readers that tolerate torn last lines live here too.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use serde_json::Value as Json;

use crate::error::{Error, Result};

/// Create a directory (and parents) with owner-only permissions for the last component.
pub fn create_private_dir(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("cannot create", parent, e))?;
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

/// Create a new owner-only file holding `bytes` (really written, so the space is taken).
pub fn write_new_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

/// Read a JSONL file, skipping blank, malformed and torn lines.
pub fn read_jsonl(path: &Path) -> Vec<Json> {
    let Ok(bytes) = std::fs::read(path) else {
        return vec![];
    };
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .filter_map(|l| serde_json::from_slice::<Json>(l).ok())
        .filter(Json::is_object)
        .collect()
}

/// Why writing into `path` (a run directory or one of its files) is unsafe, if it is: a
/// symlink could redirect the write, and a file others can write could have been planted.
pub fn unsafe_reason(meta: &std::fs::Metadata) -> Option<&'static str> {
    if meta.file_type().is_symlink() {
        Some("is a symbolic link")
    } else if meta.uid() != nix::unistd::geteuid().as_raw() {
        Some("is not owned by the current user")
    } else if meta.mode() & 0o022 != 0 {
        Some("is writable by group or others")
    } else {
        None
    }
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

/// Append one line to `<run_dir>/<name>` with a single `write` on an `O_APPEND` file
/// (concurrent writers never interleave), refusing symlinks and files or directories that
/// someone else could have planted or can modify.
pub fn secure_append(run_dir: &Path, name: &str, line: &str) -> Result<std::path::PathBuf> {
    check_run_dir(run_dir)?;
    let path = run_dir.join(name);
    if path.symlink_metadata().is_ok() {
        check_run_file(&path)?;
    }
    // O_NOFOLLOW closes the window between the check above and the open.
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| Error::io("cannot open", &path, e))?;
    let meta = f
        .metadata()
        .map_err(|e| Error::io("cannot inspect", &path, e))?;
    if let Some(why) = unsafe_reason(&meta) {
        return Err(Error::unsafe_file(&path, why));
    }
    f.write_all(&with_newline(line))
        .map_err(|e| Error::io("cannot append to", &path, e))?;
    Ok(path)
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

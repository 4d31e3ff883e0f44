//! The agent's CLI on disk (issue 18 item 5): the executable a run's commands resolve to,
//! its file identity (size, inode, mtime: one `stat`, cheap enough between every two loops)
//! and the first line of its `--version`, bounded in time.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::engine::AgentCli;

/// How long `--version` may take (a node CLI on a loaded machine needs a few seconds).
pub const VERSION_LIMIT: Duration = Duration::from_secs(5);

/// The file `program` resolves to (symlinks followed) and its identity; `None` when it does
/// not exist. No version: see [`version_of`].
pub fn stamp(program: &Path) -> Option<AgentCli> {
    let path = std::fs::canonicalize(program).ok()?;
    let meta = std::fs::metadata(&path).ok()?;
    let mtime = meta.mtime() as f64 + f64::from(meta.mtime_nsec() as u32) / 1e9;
    Some(AgentCli {
        path: path.display().to_string(),
        version: None,
        size: Some(meta.len()),
        inode: Some(meta.ino()),
        mtime: Some(mtime),
    })
}

/// Whether two stamps name the same file contents as far as `stat` can tell.
pub fn same_file(a: &AgentCli, b: &AgentCli) -> bool {
    a.path == b.path && a.size == b.size && a.inode == b.inode && a.mtime == b.mtime
}

/// The first non-empty line `program --version` prints within `limit`, run with
/// the supervisor's environment plus `env` and stdin from /dev/null, in a process group of
/// its own that is killed if it takes too long (nothing of it outlives the probe).
pub fn version_of(
    program: &Path,
    arg: &str,
    env: &[(String, String)],
    limit: Duration,
) -> Option<String> {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(program)
        .arg(arg)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .ok()?;
    let deadline = std::time::Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => {
                let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
                let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
                let _ = child.wait();
                return None;
            }
        }
    }
    // A CLI that left a child holding stdout must not hang the probe: its group goes.
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    let out = child.wait_with_output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| !l.trim().is_empty())
        .map(|l| crate::text::clip_chars(&crate::text::sanitize_line(l.trim()), 200))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_changes_with_the_file_and_the_version_is_its_first_line() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let exe = dir.path().join("tool");
        std::fs::write(&exe, "#!/bin/sh\necho\necho 'tool 1.2.3'\n").expect("write");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&exe, &link).expect("symlink");
        let a = stamp(&link).expect("stamp");
        assert_eq!(
            a.path,
            exe.canonicalize().expect("canon").display().to_string()
        );
        assert!(same_file(&a, &stamp(&exe).expect("again")));
        assert_eq!(
            version_of(&link, "--version", &[], VERSION_LIMIT).as_deref(),
            Some("tool 1.2.3")
        );
        // Replaced (a new file under the same name), as an update does.
        let tmp = dir.path().join("tool.new");
        std::fs::write(&tmp, "#!/bin/sh\necho 'tool 1.2.4'\n").expect("write");
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::rename(&tmp, &exe).expect("rename");
        let b = stamp(&link).expect("stamp");
        assert!(!same_file(&a, &b));
        assert_eq!(stamp(&dir.path().join("missing")), None);
    }

    #[test]
    fn a_version_probe_that_hangs_is_cut_off() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let exe = dir.path().join("hang");
        std::fs::write(&exe, "#!/bin/sh\nexec sleep 60\n").expect("write");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(
            version_of(&exe, "--version", &[], Duration::from_millis(300)),
            None
        );
    }
}

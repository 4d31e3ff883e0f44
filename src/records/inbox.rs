//! The operator's inbox: `control.jsonl` lines read as they are appended (D22). A watch on
//! the run directory wakes the supervisor within milliseconds; the file is read from the
//! last offset, partial last lines wait for their newline, garbage is skipped.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::control::{BadLine, ControlLine, MAX_CONTROL_LINE};
use crate::engine::ControlCommand;

pub struct Inbox {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    skipping: bool,
    line_no: usize,
    seen: HashSet<String>,
    /// The file was found untrusted since the last read: whatever was appended meanwhile
    /// may be someone else's and is skipped once the file is trusted again.
    tainted: bool,
    pub warnings: Vec<String>,
    /// Lines that were not commands, since the last look (the driver records them).
    pub rejected: Vec<BadLine>,
}

impl Inbox {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            offset: 0,
            partial: Vec::new(),
            skipping: false,
            line_no: 0,
            seen: HashSet::new(),
            tainted: false,
            warnings: Vec::new(),
            rejected: Vec::new(),
        }
    }

    /// The control file must be a regular file of ours that nobody else can write.
    fn trusted(&mut self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = std::fs::symlink_metadata(&self.path) else {
            return false;
        };
        let problem = if !meta.file_type().is_file() {
            Some("is not a regular file")
        } else if meta.uid() != nix::unistd::geteuid().as_raw() {
            Some("is owned by another user")
        } else if meta.mode() & 0o022 != 0 {
            Some("is writable by group or others")
        } else {
            None
        };
        if let Some(p) = problem {
            let w = format!("ignoring control file {}: it {p}", self.path.display());
            if !self.warnings.contains(&w) {
                self.warnings.push(w);
            }
            self.tainted = true;
            return false;
        }
        true
    }

    /// New commands since the last call, each id once.
    pub fn poll(&mut self) -> Vec<ControlCommand> {
        let mut out = Vec::new();
        if !self.trusted() {
            return out;
        }
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return out;
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if std::mem::take(&mut self.tainted) {
            // Lines written while others could write the file are never acted on, even
            // once its mode is restored (found by the reliability suite).
            if len > self.offset {
                self.warnings.push(format!(
                    "skipping {} byte(s) appended to {} while it was not safe",
                    len - self.offset,
                    self.path.display()
                ));
            }
            // A skipped partial last line is skipped up to its newline as well.
            let mut last = [b'\n'];
            if len > 0 && f.seek(SeekFrom::Start(len - 1)).is_ok() {
                let _ = f.read_exact(&mut last);
            }
            self.offset = len;
            self.partial.clear();
            self.skipping = last[0] != b'\n';
            return out;
        }
        if len < self.offset {
            // Truncated or replaced: start over; ids already seen are still remembered.
            self.offset = 0;
            self.partial.clear();
            self.skipping = false;
        }
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return out;
        }
        let mut buf = [0u8; 64 * 1024];
        loop {
            let n = match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            self.offset += n as u64;
            let mut data = &buf[..n];
            while !data.is_empty() {
                match memchr::memchr(b'\n', data) {
                    Some(pos) => {
                        if !self.skipping {
                            self.partial.extend_from_slice(&data[..pos]);
                        }
                        data = &data[pos + 1..];
                        self.line_no += 1;
                        let line = std::mem::take(&mut self.partial);
                        let was_skipping = std::mem::replace(&mut self.skipping, false);
                        if was_skipping {
                            self.rejected.push(BadLine {
                                line_no: self.line_no,
                                why: format!("longer than {MAX_CONTROL_LINE} bytes"),
                                preview: String::new(),
                            });
                            continue;
                        }
                        if line.iter().all(u8::is_ascii_whitespace) {
                            continue;
                        }
                        match ControlLine::parse(&line, self.line_no) {
                            Ok(cmd) if self.seen.insert(cmd.id.clone()) => out.push(cmd),
                            Ok(_) => {}
                            Err(bad) => self.rejected.push(bad),
                        }
                    }
                    None => {
                        if !self.skipping {
                            self.partial.extend_from_slice(data);
                            if self.partial.len() > MAX_CONTROL_LINE {
                                self.partial = Vec::new();
                                self.skipping = true;
                            }
                        }
                        data = &[];
                    }
                }
            }
        }
        out
    }
}

/// For the `control_inbox` fuzz target and its replay: `data` appended to a control file
/// `step` bytes at a time, with a poll after each piece, yields the same commands and the
/// same rejected lines, in the same order, as polling it once whole. A torn write never
/// changes what the supervisor acts on.
#[doc(hidden)]
pub fn split_invariance(data: &[u8], step: usize) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let open = |name: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(dir.path().join(name))
            .map_err(|e| e.to_string())
    };
    open("whole.jsonl")?
        .write_all(data)
        .map_err(|e| e.to_string())?;
    let mut whole = Inbox::new(&dir.path().join("whole.jsonl"));
    let want = whole.poll();
    let mut file = open("split.jsonl")?;
    let mut split = Inbox::new(&dir.path().join("split.jsonl"));
    let mut got = Vec::new();
    for piece in data.chunks(step.max(1)) {
        file.write_all(piece).map_err(|e| e.to_string())?;
        got.extend(split.poll());
    }
    let lines = |b: &[BadLine]| {
        b.iter()
            .map(|l| (l.line_no, l.why.clone()))
            .collect::<Vec<_>>()
    };
    if got != want {
        return Err(format!(
            "commands differ: whole {want:?}, in pieces {got:?}"
        ));
    }
    if lines(&split.rejected) != lines(&whole.rejected) {
        return Err(format!(
            "rejected lines differ: whole {:?}, in pieces {:?}",
            lines(&whole.rejected),
            lines(&split.rejected)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ControlAction;

    #[test]
    fn pieces_of_any_size_read_like_the_whole_file() {
        let data = b"{\"id\":\"1\",\"action\":\"pause\"}\ngarbage\n{\"id\":\"2\",\"action\":\"resume\"}\n{\"id\":\"3\"";
        for step in [1, 2, 7, 31, 4096] {
            split_invariance(data, step).expect("same");
        }
    }

    #[test]
    fn inbox_reads_appends_once_and_waits_for_partial_lines() {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("control.jsonl");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&p)
            .expect("open");
        let mut inbox = Inbox::new(&p);
        assert!(inbox.poll().is_empty());
        f.write_all(b"{\"id\":\"1\",\"action\":\"pause\"}\n{\"id\":\"2\",\"act")
            .expect("write");
        let got = inbox.poll();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id, "1");
        f.write_all(b"ion\":\"resume\"}\n{\"id\":\"1\",\"action\":\"pause\"}\n")
            .expect("write");
        let got = inbox.poll();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].action, ControlAction::Resume);
        let huge = vec![b'x'; MAX_CONTROL_LINE * 2];
        f.write_all(&huge).expect("write");
        f.write_all(b"\n{\"id\":\"3\",\"action\":\"resume\"}\n")
            .expect("write");
        let got = inbox.poll();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id, "3");
    }

    /// Regression (reliability suite): what was appended while the file was writable by
    /// others is not acted on once its mode is restored; later lines are.
    #[test]
    fn lines_written_while_the_file_was_unsafe_are_skipped() {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("control.jsonl");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&p)
            .expect("open");
        let mut inbox = Inbox::new(&p);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        f.write_all(b"{\"id\":\"evil\",\"action\":\"interrupt_now\"}\n{\"id\":\"half")
            .expect("write");
        assert!(inbox.poll().is_empty());
        assert_eq!(inbox.warnings.len(), 1);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(inbox.poll().is_empty());
        f.write_all(b"\",\"action\":\"pause\"}\n{\"id\":\"ok\",\"action\":\"pause\"}\n")
            .expect("write");
        let got = inbox.poll();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].id, "ok");
    }
}

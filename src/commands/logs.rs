//! `looper logs`: a run's current (or last) loop log, rendered as a transcript or raw, and
//! with `-f` followed across prompts until the run ends.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::LogsArgs;
use crate::effects::procinfo;
use crate::error::{Error, Result, exit_code};
use crate::records::RunState;
use crate::records::discovery::{self, Stopped, Target};

/// How often `-f` looks for new bytes and a new log file.
const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// A partial line longer than this is printed as it is rather than buffered further.
const MAX_PARTIAL: usize = 256 * 1024;

/// The log to show: `last_log` from the state (absolute, or relative to where the run was
/// started, as the reference writes it), else the newest `loop-*__prompt-*.log`.
pub fn current_log(dir: &Path, state: Option<&RunState>) -> Option<PathBuf> {
    if let Some(last) = state
        .and_then(|s| s.last_log.as_deref())
        .filter(|l| !l.is_empty())
    {
        let p = PathBuf::from(last);
        if p.is_file() {
            return Some(p);
        }
        // Relative paths in reference runs are relative to their project; the file itself
        // lives in the run directory.
        if let Some(name) = p.file_name() {
            let local = dir.join(name);
            if local.is_file() {
                return Some(local);
            }
        }
    }
    newest_log(dir)
}

fn newest_log(dir: &Path) -> Option<PathBuf> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("loop-") && n.contains("__prompt-") && n.ends_with(".log")
            })
        })
        .collect();
    // Zero-padded numbers: the name order is the loop/prompt order.
    logs.sort();
    logs.pop()
}

/// Turns raw log bytes into output, line by line; keeps the unfinished last line.
struct Printer {
    raw: bool,
    /// `--json`: each line is one `{"line": ...}` object (what `logs --host` reads).
    json: bool,
    partial: Vec<u8>,
}

impl Printer {
    fn feed(&mut self, data: &[u8], out: &mut impl Write) -> std::io::Result<()> {
        if self.raw && !self.json {
            return out.write_all(data);
        }
        let mut rest = data;
        while let Some(pos) = memchr::memchr(b'\n', rest) {
            self.partial.extend_from_slice(&rest[..pos]);
            rest = &rest[pos + 1..];
            let line = std::mem::take(&mut self.partial);
            self.emit(&line, out)?;
        }
        self.partial.extend_from_slice(rest);
        if self.partial.len() > MAX_PARTIAL {
            let line = std::mem::take(&mut self.partial);
            self.emit(&line, out)?;
        }
        Ok(())
    }

    fn emit(&self, line: &[u8], out: &mut impl Write) -> std::io::Result<()> {
        let text = String::from_utf8_lossy(line);
        if self.json {
            let shown = if self.raw {
                Some(text.into_owned())
            } else {
                crate::transcript::render_log_record(&text)
            };
            if let Some(line) = shown {
                let l = crate::remote::StreamLine { line: line.into() };
                let mut j = serde_json::to_vec(&l).unwrap_or_default();
                j.push(b'\n');
                out.write_all(&j)?;
            }
            return Ok(());
        }
        if let Some(r) = crate::transcript::render_log_record(&text) {
            // Rendered for a person: the agent's escapes never reach the terminal (D35);
            // `--raw` gives the bytes as written.
            out.write_all(crate::text::sanitize(&r).as_bytes())?;
            out.write_all(b"\n")?;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.emit(&line, out)?;
        }
        out.flush()
    }
}

/// Copy what is new in `path` since `offset`; returns the new offset.
fn pump(path: &Path, offset: u64, p: &mut Printer, out: &mut impl Write) -> Result<u64> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io("cannot open", path, e))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut offset = if len < offset { 0 } else { offset };
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| Error::io("cannot read", path, e))?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::io("cannot read", path, e))?;
        if n == 0 {
            break;
        }
        offset += n as u64;
        if p.feed(&buf[..n], out).is_err() {
            // The reader went away (`looper logs | head`): nothing left to do.
            return Err(Error::WithCode {
                message: String::new(),
                code: exit_code::OK,
            });
        }
    }
    let _ = out.flush();
    Ok(offset)
}

pub fn logs(args: &LogsArgs) -> Result<i32> {
    let lines = crate::remote::Shape::Lines;
    if let Some(code) = crate::remote::forward(&args.target.hosts, lines, !args.follow)? {
        return Ok(code);
    }
    let t = discovery::resolve(&args.target.query(), Stopped::Fallback)?;
    let mut out = std::io::stdout().lock();
    match run(&t, args, &mut out) {
        Err(Error::WithCode { code, message }) if message.is_empty() => Ok(code),
        other => other,
    }
}

fn run(t: &Target, args: &LogsArgs, out: &mut impl Write) -> Result<i32> {
    let mut printer = Printer {
        raw: args.raw,
        json: args.target.json,
        partial: Vec::new(),
    };
    let mut current = current_log(&t.dir, t.state.as_ref());
    if current.is_none() && !args.follow {
        return Err(Error::Usage(format!(
            "run {} at {} has no log yet",
            t.name,
            t.dir.display()
        )));
    }
    let mut offset = 0;
    if let Some(p) = &current {
        offset = pump(p, 0, &mut printer, out)?;
    }
    if !args.follow {
        let _ = printer.finish(out);
        return Ok(exit_code::OK);
    }
    loop {
        let state = t.reload();
        let active = state.as_ref().is_some_and(RunState::is_active);
        let latest = current_log(&t.dir, state.as_ref());
        if latest.is_some() && latest != current {
            // Drain the old file before switching, so its last lines are not lost.
            if let Some(p) = &current {
                pump(p, offset, &mut printer, out)?;
            }
            let _ = printer.finish(out);
            current = latest;
            offset = 0;
        }
        if let Some(p) = &current {
            offset = pump(p, offset, &mut printer, out)?;
        }
        if !active {
            let _ = printer.finish(out);
            return Ok(exit_code::OK);
        }
        // A supervisor killed with SIGKILL leaves an active state behind: stop following.
        if let Some(s) = &state
            && let Some(why) = procinfo::stale_reason(s.pid, s.pid_identity.as_deref())
        {
            let _ = printer.finish(out);
            crate::say_err!("looper: stopped following: {why} (see `looper status`)");
            return Ok(exit_code::AGENT_FAILED);
        }
        std::thread::sleep(FOLLOW_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_rendered_and_partial_lines_wait() {
        let mut p = Printer {
            raw: false,
            json: false,
            partial: Vec::new(),
        };
        let mut out = Vec::new();
        p.feed(b"[20261121T091032Z] stdout: hel", &mut out)
            .expect("feed");
        assert!(out.is_empty());
        p.feed(b"lo\n[20261121T091032Z] returncode: 0\n", &mut out)
            .expect("feed");
        assert_eq!(String::from_utf8_lossy(&out), "hello\n-- exit 0\n");
        let mut raw = Printer {
            raw: true,
            json: false,
            partial: Vec::new(),
        };
        let mut out = Vec::new();
        raw.feed(b"[x] stdout: \xff\n", &mut out).expect("feed");
        assert_eq!(out, b"[x] stdout: \xff\n");
    }

    #[test]
    fn the_newest_log_is_found_by_name_when_state_has_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        for n in [
            "loop-0001__prompt-002.log",
            "loop-0002__prompt-001.log",
            "other.log",
        ] {
            std::fs::write(dir.path().join(n), "").expect("write");
        }
        assert_eq!(
            current_log(dir.path(), None),
            Some(dir.path().join("loop-0002__prompt-001.log"))
        );
        let st = RunState {
            last_log: Some("elsewhere/loop-0001__prompt-002.log".into()),
            ..RunState::default()
        };
        assert_eq!(
            current_log(dir.path(), Some(&st)),
            Some(dir.path().join("loop-0001__prompt-002.log"))
        );
    }
}

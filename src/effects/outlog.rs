//! The per-prompt loop log: every line of agent output with its stream and a UTC stamp.
//!
//! Record format, one record per log line:
//!   `[20261121T091032Z] stdout: <bytes>` — a line the agent ended with a newline;
//!   `[20261121T091032Z] stdout*: <bytes>` — a piece the agent did not end with a newline
//!   (a long line cut into pieces, or the last bytes before end of stream).
//! Concatenating payloads, adding `\n` after plain records, reproduces each stream byte for
//! byte; invalid UTF-8 is written as is. Supervisor notes use `looper:`, and the attempt's
//! end writes `returncode:` and `stop_reason:` records as the reference does.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::Utc;

use crate::agents::Stream;

/// Longest payload of a single record; longer lines become several `*` records.
pub const MAX_RECORD: usize = 64 * 1024;

pub struct LogWriter {
    path: PathBuf,
    file: File,
    pending: [Vec<u8>; 2],
    stamp_second: i64,
    stamp: String,
    buf: Vec<u8>,
}

fn idx(s: Stream) -> usize {
    match s {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

impl LogWriter {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = crate::records::fsio::open_append(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            pending: [Vec::new(), Vec::new()],
            stamp_second: i64::MIN,
            stamp: String::new(),
            buf: Vec::with_capacity(MAX_RECORD * 2),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn refresh_stamp(&mut self) {
        let now = Utc::now();
        let sec = now.timestamp();
        if sec != self.stamp_second {
            self.stamp_second = sec;
            self.stamp = now.format("[%Y%m%dT%H%M%SZ] ").to_string();
        }
    }

    fn record(&mut self, tag: &str, payload: &[u8], cut: bool) {
        self.buf.extend_from_slice(self.stamp.as_bytes());
        self.buf.extend_from_slice(tag.as_bytes());
        if cut {
            self.buf.push(b'*');
        }
        self.buf.extend_from_slice(b": ");
        self.buf.extend_from_slice(payload);
        self.buf.push(b'\n');
    }

    /// Log a chunk of output. One write per chunk, so a reader following the file sees
    /// whole records.
    pub fn chunk(&mut self, stream: Stream, mut data: &[u8]) -> std::io::Result<()> {
        self.refresh_stamp();
        let i = idx(stream);
        let tag = stream.as_str();
        while let Some(pos) = memchr::memchr(b'\n', data) {
            let (line, rest) = data.split_at(pos);
            data = &rest[1..];
            if self.pending[i].is_empty() {
                self.record(tag, line, false);
            } else {
                let mut joined = std::mem::take(&mut self.pending[i]);
                joined.extend_from_slice(line);
                self.record(tag, &joined, false);
                joined.clear();
                self.pending[i] = joined;
            }
        }
        self.pending[i].extend_from_slice(data);
        while self.pending[i].len() >= MAX_RECORD {
            let piece: Vec<u8> = self.pending[i].drain(..MAX_RECORD).collect();
            self.record(tag, &piece, true);
        }
        self.flush_buf()
    }

    /// End of a stream: an unterminated last line is written as a `*` record.
    pub fn eof(&mut self, stream: Stream) -> std::io::Result<()> {
        let i = idx(stream);
        if self.pending[i].is_empty() {
            return Ok(());
        }
        self.refresh_stamp();
        let piece = std::mem::take(&mut self.pending[i]);
        self.record(stream.as_str(), &piece, true);
        self.flush_buf()
    }

    /// A supervisor record (`returncode`, `stop_reason`, `looper`).
    pub fn note(&mut self, tag: &str, text: &str) -> std::io::Result<()> {
        self.refresh_stamp();
        let one_line = text.replace('\n', "\\n");
        self.record(tag, one_line.as_bytes(), false);
        self.flush_buf()
    }

    fn flush_buf(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let r = self.file.write_all(&self.buf);
        self.buf.clear();
        if self.buf.capacity() > MAX_RECORD * 4 {
            self.buf.shrink_to(MAX_RECORD * 2);
        }
        r
    }
}

/// Rebuild one stream's exact bytes from a log (tests and `looper logs --raw --stream`).
pub fn reconstruct(log: &[u8], stream: Stream) -> Vec<u8> {
    let plain = format!("] {}: ", stream.as_str());
    let cut = format!("] {}*: ", stream.as_str());
    let mut out = Vec::new();
    for record in log.split_inclusive(|b| *b == b'\n') {
        let body = record.strip_suffix(b"\n").unwrap_or(record);
        let head_end = body.iter().position(|b| *b == b']').unwrap_or(0);
        let rest = &body[head_end..];
        if let Some(p) = rest.strip_prefix(plain.as_bytes()) {
            out.extend_from_slice(p);
            out.push(b'\n');
        } else if let Some(p) = rest.strip_prefix(cut.as_bytes()) {
            out.extend_from_slice(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_reconstructs_both_streams_exactly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("l.log");
        let mut w = LogWriter::open(&p).expect("open");
        let big: Vec<u8> = (0..(MAX_RECORD * 3 + 17))
            .map(|i| b'a' + (i % 26) as u8)
            .collect();
        let mut expected_out = Vec::new();
        for chunk in [
            &b"hello\nwor"[..],
            b"ld\n\xff\xfeinvalid\n",
            &big,
            b"\ntail-no-newline",
        ] {
            w.chunk(Stream::Stdout, chunk).expect("chunk");
            w.chunk(Stream::Stderr, b"err line\n").expect("err");
            expected_out.extend_from_slice(chunk);
        }
        w.eof(Stream::Stdout).expect("eof");
        w.note("returncode", "0").expect("note");
        let log = std::fs::read(&p).expect("read");
        assert_eq!(reconstruct(&log, Stream::Stdout), expected_out);
        assert_eq!(reconstruct(&log, Stream::Stderr), b"err line\n".repeat(4));
        assert!(log.ends_with(b"returncode: 0\n"));
    }
}

//! What a verify command printed, as facts for the engine's verdict (issue 15): whether
//! `pass_regex` matched a line, the count `count_regex` captured (its last match: a test
//! runner's summary comes last), and the end of the output for the feedback block. Memory
//! is bounded whatever the command prints (D13): lines longer than [`MAX_LINE`] are matched
//! in pieces, and only the last [`KEEP_TAIL`] bytes are kept.

use regex::Regex;

use crate::agents::Stream;
use crate::agents::scanner::text_of;

/// A line longer than this is matched in pieces.
pub const MAX_LINE: usize = 64 * 1024;
/// The end of the output kept in memory.
pub const KEEP_TAIL: usize = 16 * 1024;
/// How much of a failing verify's output goes into the next prompt ("a few KiB").
pub const FEEDBACK_TAIL: usize = 4 * 1024;

pub struct GateOutput {
    pass: Option<Regex>,
    count: Option<Regex>,
    lines: [Vec<u8>; 2],
    tail: Vec<u8>,
    pub pass_matched: bool,
    pub count_seen: Option<u64>,
}

fn idx(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

impl GateOutput {
    pub fn new(pass: Option<Regex>, count: Option<Regex>) -> Self {
        Self {
            pass,
            count,
            lines: [Vec::new(), Vec::new()],
            tail: Vec::new(),
            pass_matched: false,
            count_seen: None,
        }
    }

    pub fn feed(&mut self, stream: Stream, mut data: &[u8]) {
        self.tail.extend_from_slice(data);
        if self.tail.len() > 2 * KEEP_TAIL {
            let cut = self.tail.len() - KEEP_TAIL;
            self.tail.drain(..cut);
        }
        if self.pass.is_none() && self.count.is_none() {
            return;
        }
        let i = idx(stream);
        while let Some(pos) = memchr::memchr(b'\n', data) {
            self.lines[i].extend_from_slice(&data[..pos]);
            self.line(i);
            data = &data[pos + 1..];
        }
        self.lines[i].extend_from_slice(data);
        if self.lines[i].len() > MAX_LINE {
            self.line(i);
        }
    }

    pub fn finish_stream(&mut self, stream: Stream) {
        let i = idx(stream);
        if !self.lines[i].is_empty() {
            self.line(i);
        }
    }

    fn line(&mut self, i: usize) {
        let bytes = std::mem::take(&mut self.lines[i]);
        let text = text_of(bytes.strip_suffix(b"\r").unwrap_or(&bytes));
        if !self.pass_matched
            && let Some(re) = &self.pass
        {
            self.pass_matched = re.is_match(&text);
        }
        if let Some(re) = &self.count
            && let Some(n) = re
                .captures_iter(&text)
                .filter_map(|c| c.get(1)?.as_str().trim().parse::<u64>().ok())
                .last()
        {
            self.count_seen = Some(n);
        }
        self.lines[i] = bytes;
        self.lines[i].clear();
    }

    /// The end of the output, at most `max` bytes, as text.
    pub fn tail(&self, max: usize) -> String {
        let text = String::from_utf8_lossy(&self.tail);
        crate::text::tail_chars(&text, max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_and_the_last_count_are_found_across_chunks_and_the_tail_is_bounded() {
        let mut g = GateOutput::new(
            Regex::new(r"^test result: ok").ok(),
            Regex::new(r"(\d+) passed").ok(),
        );
        g.feed(Stream::Stdout, b"running 3 tests\n2 pass");
        g.feed(Stream::Stdout, b"ed; 1 ignored\ntest resu");
        g.feed(Stream::Stderr, b"noise 99 passed on stderr too\n");
        g.feed(Stream::Stdout, b"lt: ok. 7 passed; 0 failed");
        g.finish_stream(Stream::Stdout);
        g.finish_stream(Stream::Stderr);
        assert!(g.pass_matched);
        assert_eq!(g.count_seen, Some(7), "the last count wins");
        let mut big = GateOutput::new(None, None);
        for _ in 0..100 {
            big.feed(Stream::Stdout, &[b'x'; 10_000]);
        }
        big.feed(Stream::Stdout, b"THE END");
        assert!(big.tail.len() <= 2 * KEEP_TAIL);
        let t = big.tail(FEEDBACK_TAIL);
        assert!(
            t.ends_with("THE END") && t.len() <= FEEDBACK_TAIL + 3,
            "{}",
            t.len()
        );
    }
}

//! Bounded-memory parsing of one JSON line too long to hold whole (D13, issue 20 item 15):
//! a 2 MB codex `agent_message` must still be read as a record and its text scanned.
//!
//! The line is fed in chunks to a push parser that builds the record as a
//! `serde_json::Value`, except that a string longer than [`KEEP`] bytes is not kept: its
//! decoded text is matched against the scanner's patterns as it streams by (in windows
//! that overlap, like the pieces of a long plain line), and the record holds only its
//! first [`HEAD`] bytes followed by a marker naming it ([`marker`]). The scanner parses the
//! record as usual; when the agent's text carries a marker, the matches of that string
//! count. What is held stays under [`BUDGET`] bytes whatever the line's size: past that
//! (a line of millions of small values), the line is given up as a record.
//!
//! No maintained crate fits: `actson` pushes bytes but hands each string over whole,
//! `struson` streams strings but pulls from a blocking reader, and `serde_json` needs the
//! whole text.

use regex::Regex;
use serde_json::{Map, Value as Json};

use super::piece::{Piece, piece_matches};

/// Strings up to this size are kept whole in the record.
pub const KEEP: usize = 64 * 1024;
/// What is kept of a longer string (its start, for error texts and the live view).
pub const HEAD: usize = 1024;
/// Decoded text of a long string is matched a window of this size at a time.
pub const WINDOW: usize = 64 * 1024;
/// Consecutive windows overlap by this much, so a match shorter than it is never split.
pub const OVERLAP: usize = 4096;
/// Bytes of record held (kept strings, heads, numbers, keys, per-value overhead).
pub const BUDGET: usize = 1 << 20;
/// Nesting deeper than this is not a record any agent writes.
const MAX_DEPTH: usize = 128;
/// The held cost of one value besides its text.
const NODE_COST: usize = 16;

/// The sizes [`LongJson`] works with: the constants above, or small ones that let a fuzz
/// target reach every path with short inputs.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub keep: usize,
    pub head: usize,
    pub window: usize,
    pub overlap: usize,
    pub budget: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            keep: KEEP,
            head: HEAD,
            window: WINDOW,
            overlap: OVERLAP,
            budget: BUDGET,
        }
    }
}

/// The marker that stands for long string `n` at the end of its head. U+FFFC is the
/// "object replacement character": a placeholder by definition.
pub fn marker(n: usize) -> String {
    format!("\u{FFFC}{n}\u{FFFC}")
}

/// The long strings whose markers appear in `text`.
pub fn markers_in(text: &str) -> impl Iterator<Item = usize> + '_ {
    text.split('\u{FFFC}')
        .skip(1)
        .step_by(2)
        .filter_map(|n| n.parse().ok())
}

/// A long line, parsed.
#[derive(Debug, PartialEq)]
pub struct Skimmed {
    /// The record, long strings cut to their head and marker.
    pub value: Json,
    /// For each long string (by marker number), which patterns matched in it.
    pub matched: Vec<Vec<bool>>,
}

#[derive(Debug)]
enum Frame {
    Object {
        map: Map<String, Json>,
        key: Option<String>,
    },
    Array(Vec<Json>),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    /// Before a value (the root, after `:`, after `,` in an array, after `[`).
    Value,
    /// After `{` (a key or `}`) or after `,` in an object (a key).
    Key {
        first: bool,
    },
    Colon,
    /// After a value inside a container, or after the root.
    After,
    Str,
    /// Inside a string, after `\`.
    Escape,
    /// Inside a string, reading `\uXXXX`: the digits so far.
    Unicode {
        digits: u8,
        code: u32,
    },
    /// A number or `true`/`false`/`null`, being read.
    Bare,
    Failed,
}

/// The string being read.
#[derive(Debug, Default)]
struct Text {
    is_key: bool,
    /// Decoded bytes not yet taken (all of it while the string is short).
    buf: Vec<u8>,
    /// The string outgrew [`KEEP`]: its number and its head.
    long: Option<(usize, String)>,
    /// The next window matched is the string's first (`^` may match at its start).
    first_window: bool,
    /// A high surrogate waiting for its low half.
    high: Option<u32>,
}

/// The push parser for one line; see the module docs.
pub struct LongJson {
    limits: Limits,
    patterns: Vec<Option<Regex>>,
    state: State,
    stack: Vec<Frame>,
    root: Option<Json>,
    text: Text,
    bare: Vec<u8>,
    held: usize,
    matched: Vec<Vec<bool>>,
}

impl LongJson {
    /// A parser whose long strings are matched against `patterns` (`None` slots never match).
    pub fn new(patterns: Vec<Option<Regex>>) -> Self {
        Self::with_limits(patterns, Limits::default())
    }

    /// Like [`LongJson::new`] with other sizes (made consistent: a head no longer than
    /// what is kept, an overlap shorter than a window).
    pub fn with_limits(patterns: Vec<Option<Regex>>, limits: Limits) -> Self {
        let window = limits.window.max(8);
        let limits = Limits {
            keep: limits.keep.max(1),
            head: limits.head.min(limits.keep.max(1)),
            window,
            overlap: limits.overlap.clamp(1, window / 2),
            budget: limits.budget,
        };
        LongJson {
            limits,
            patterns,
            state: State::Value,
            stack: Vec::new(),
            root: None,
            text: Text::default(),
            bare: Vec::new(),
            held: 0,
            matched: Vec::new(),
        }
    }

    /// Whether the line was given up (not JSON, or too much to hold).
    pub fn failed(&self) -> bool {
        self.state == State::Failed
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.state == State::Failed {
                return;
            }
            self.byte(b);
        }
    }

    /// The end of the line: the record, or `None` when the line was not one whole JSON value.
    pub fn finish(mut self) -> Option<Skimmed> {
        if self.state == State::Bare && !self.end_bare() {
            return None;
        }
        if self.state != State::After || !self.stack.is_empty() {
            return None;
        }
        Some(Skimmed {
            value: self.root.take()?,
            matched: self.matched,
        })
    }

    fn fail(&mut self) {
        self.state = State::Failed;
        // Nothing held is of use any more.
        self.stack.clear();
        self.text = Text::default();
        self.bare.clear();
    }

    fn charge(&mut self, n: usize) -> bool {
        self.held += n;
        if self.held > self.limits.budget {
            self.fail();
            return false;
        }
        true
    }

    fn byte(&mut self, b: u8) {
        match self.state {
            State::Failed => {}
            State::Value => match b {
                b' ' | b'\t' | b'\n' | b'\r' => {}
                b'{' => self.open(Frame::Object {
                    map: Map::new(),
                    key: None,
                }),
                b'[' => self.open(Frame::Array(Vec::new())),
                b']' if matches!(self.stack.last(), Some(Frame::Array(a)) if a.is_empty()) => {
                    self.close()
                }
                b'"' => self.start_string(false),
                b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                    self.bare.clear();
                    self.bare.push(b);
                    self.state = State::Bare;
                }
                _ => self.fail(),
            },
            State::Key { first } => match b {
                b' ' | b'\t' | b'\n' | b'\r' => {}
                b'"' => self.start_string(true),
                b'}' if first => self.close(),
                _ => self.fail(),
            },
            State::Colon => match b {
                b' ' | b'\t' | b'\n' | b'\r' => {}
                b':' => self.state = State::Value,
                _ => self.fail(),
            },
            State::After => match (b, self.stack.last()) {
                (b' ' | b'\t' | b'\n' | b'\r', _) => {}
                (b',', Some(Frame::Object { .. })) => self.state = State::Key { first: false },
                (b',', Some(Frame::Array(_))) => self.state = State::Value,
                (b'}', Some(Frame::Object { .. })) | (b']', Some(Frame::Array(_))) => self.close(),
                _ => self.fail(),
            },
            State::Bare => match b {
                b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-' | b'a'..=b'z' => {
                    // No number or literal is this long.
                    if self.bare.len() > 1024 {
                        self.fail();
                    } else {
                        self.bare.push(b);
                    }
                }
                _ => {
                    if self.end_bare() {
                        self.byte(b);
                    }
                }
            },
            State::Str => match b {
                b'"' => self.end_string(),
                b'\\' => self.state = State::Escape,
                0x00..=0x1f => self.fail(),
                _ => self.push_text(&[b]),
            },
            State::Escape => {
                let c = match b {
                    b'"' => b'"',
                    b'\\' => b'\\',
                    b'/' => b'/',
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'u' => {
                        self.state = State::Unicode { digits: 0, code: 0 };
                        return;
                    }
                    _ => return self.fail(),
                };
                self.state = State::Str;
                self.push_text(&[c]);
            }
            State::Unicode { digits, code } => {
                let Some(d) = (b as char).to_digit(16) else {
                    return self.fail();
                };
                let code = code * 16 + d;
                if digits < 3 {
                    self.state = State::Unicode {
                        digits: digits + 1,
                        code,
                    };
                } else {
                    self.state = State::Str;
                    self.unicode(code);
                }
            }
        }
    }

    fn unicode(&mut self, code: u32) {
        let high = self.text.high.take();
        let c = match (high, code) {
            (None, 0xD800..=0xDBFF) => {
                self.text.high = Some(code);
                return;
            }
            (Some(h), 0xDC00..=0xDFFF) => {
                char::from_u32(0x10000 + ((h - 0xD800) << 10) + (code - 0xDC00))
            }
            // A lone surrogate: serde_json refuses it; the replacement character keeps
            // the rest of the text scannable.
            (Some(_), _) | (None, 0xDC00..=0xDFFF) => Some('\u{FFFD}'),
            (None, c) => char::from_u32(c),
        };
        let mut b = [0u8; 4];
        let s = c.unwrap_or('\u{FFFD}').encode_utf8(&mut b);
        let bytes = s.as_bytes().to_vec();
        self.push_text(&bytes);
    }

    fn open(&mut self, frame: Frame) {
        if self.stack.len() >= MAX_DEPTH || !self.charge(NODE_COST) {
            return self.fail();
        }
        self.state = match frame {
            Frame::Object { .. } => State::Key { first: true },
            Frame::Array(_) => State::Value,
        };
        self.stack.push(frame);
    }

    fn close(&mut self) {
        let Some(frame) = self.stack.pop() else {
            return self.fail();
        };
        let v = match frame {
            Frame::Object { map, .. } => Json::Object(map),
            Frame::Array(a) => Json::Array(a),
        };
        self.put(v);
    }

    /// A complete value: into its container, or the root.
    fn put(&mut self, v: Json) {
        if !self.charge(NODE_COST) {
            return;
        }
        match self.stack.last_mut() {
            Some(Frame::Object { map, key }) => match key.take() {
                Some(k) => {
                    map.insert(k, v);
                }
                None => return self.fail(),
            },
            Some(Frame::Array(a)) => a.push(v),
            None if self.root.is_none() => self.root = Some(v),
            None => return self.fail(),
        }
        self.state = State::After;
    }

    fn end_bare(&mut self) -> bool {
        let bare = std::mem::take(&mut self.bare);
        let parsed = std::str::from_utf8(&bare)
            .ok()
            .and_then(|t| serde_json::from_str::<Json>(t).ok())
            .filter(|v| !v.is_object() && !v.is_array() && !v.is_string());
        match parsed {
            Some(v) if self.charge(bare.len()) => {
                self.put(v);
                self.state != State::Failed
            }
            _ => {
                self.fail();
                false
            }
        }
    }

    fn start_string(&mut self, is_key: bool) {
        self.text = Text {
            is_key,
            first_window: true,
            ..Text::default()
        };
        self.state = State::Str;
    }

    fn push_text(&mut self, bytes: &[u8]) {
        if self.text.high.take().is_some() {
            // A high surrogate not followed by `\u` + low surrogate.
            self.text.buf.extend_from_slice("\u{FFFD}".as_bytes());
        }
        self.text.buf.extend_from_slice(bytes);
        if self.text.long.is_none() && self.text.buf.len() > self.limits.keep {
            self.become_long();
        }
        if self.text.long.is_some()
            && self.text.buf.len() >= self.limits.window + self.limits.overlap
        {
            self.window(false);
        }
    }

    /// The string outgrew [`KEEP`]: from now on it is matched, not kept.
    fn become_long(&mut self) {
        let n = self.matched.len();
        let head = head_of(&self.text.buf, self.limits.head);
        if !self.charge(head.len() + 8) {
            return;
        }
        self.matched.push(vec![false; self.patterns.len()]);
        self.text.long = Some((n, head));
    }

    /// Match the window held so far; unless it is the string's last, keep its tail as
    /// the start of the next one.
    fn window(&mut self, last: bool) {
        let Some((n, _)) = &self.text.long else {
            return;
        };
        let n = *n;
        // Only complete characters: a multi-byte character cut by the window waits.
        let cut = if last {
            self.text.buf.len()
        } else {
            utf8_prefix(&self.text.buf)
        };
        let text = String::from_utf8_lossy(&self.text.buf[..cut]).into_owned();
        let at = Piece {
            first: self.text.first_window,
            last,
        };
        for (i, re) in self.patterns.iter().enumerate() {
            if let Some(re) = re
                && !self.matched[n][i]
                && piece_matches(re, &text, at)
            {
                self.matched[n][i] = true;
            }
        }
        if last {
            self.text.buf.clear();
            return;
        }
        let mut keep = cut.saturating_sub(self.limits.overlap);
        while keep < cut && !text.is_char_boundary(keep) {
            keep += 1;
        }
        self.text.buf.drain(..keep);
        self.text.first_window = false;
    }

    fn end_string(&mut self) {
        if self.text.high.take().is_some() {
            self.text.buf.extend_from_slice("\u{FFFD}".as_bytes());
        }
        let s = if self.text.long.is_some() {
            self.window(true);
            let Some((n, head)) = self.text.long.take() else {
                return self.fail();
            };
            if self.text.is_key {
                // A key is never agent text: its head is enough.
                head
            } else {
                format!("{head}{}", marker(n))
            }
        } else {
            let buf = std::mem::take(&mut self.text.buf);
            if !self.charge(buf.len()) {
                return;
            }
            match String::from_utf8(buf) {
                Ok(s) => s,
                Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
            }
        };
        if self.text.is_key {
            if let Some(Frame::Object { key, .. }) = self.stack.last_mut() {
                *key = Some(s);
                self.state = State::Colon;
            } else {
                self.fail();
            }
        } else {
            self.put(Json::String(s));
        }
    }
}

/// The longest prefix of `bytes` that does not end inside a multi-byte character.
fn utf8_prefix(bytes: &[u8]) -> usize {
    let mut end = bytes.len();
    // A character is at most 4 bytes: look back at most 3 for its lead byte.
    for back in 1..=3.min(end) {
        let b = bytes[end - back];
        if b & 0xC0 == 0x80 {
            continue;
        }
        let len = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        if len > back {
            end -= back;
        }
        break;
    }
    end
}

/// The first `max` bytes of `bytes` as text, cut at a character boundary.
fn head_of(bytes: &[u8], max: usize) -> String {
    let cut = utf8_prefix(&bytes[..max.min(bytes.len())]);
    String::from_utf8_lossy(&bytes[..cut]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skim(line: &[u8], chunk: usize, patterns: &[&str]) -> Option<Skimmed> {
        let mut p = LongJson::new(
            patterns
                .iter()
                .map(|r| Some(Regex::new(r).expect("regex")))
                .collect(),
        );
        for c in line.chunks(chunk.max(1)) {
            p.feed(c);
        }
        p.finish()
    }

    #[test]
    fn small_records_come_out_as_serde_json_reads_them() {
        let lines = [
            r#"{"type":"item.completed","item":{"id":"item_1","type":"agent_message","text":"a\nb \"q\" \u00e9 \ud83d\ude00 \\ /"}}"#,
            r#"{"a":[1,-2.5e3,true,false,null,[],{}],"b":{"c":[{"d":"e"}]},"n":0}"#,
            r#"  {"x" : [ 1 , 2 ] , "y" : "z" }  "#,
            r#"{"unicode":"ünïcødé ✓","empty":""}"#,
        ];
        for line in lines {
            for chunk in [1, 3, 7, 1000] {
                let got = skim(line.as_bytes(), chunk, &[]).expect(line);
                let want: Json = serde_json::from_str(line).expect("json");
                assert_eq!(got.value, want, "{line} in chunks of {chunk}");
                assert!(got.matched.is_empty());
            }
        }
    }

    #[test]
    fn what_is_not_one_json_value_is_refused() {
        for bad in [
            &b"{"[..],
            b"{\"a\":}",
            b"{\"a\":1}{",
            b"{\"a\":1,}",
            b"[1,]",
            b"{\"a\":tru}",
            b"{\"a\":\"\x01\"}",
            b"{\"a\" 1}",
            b"{\"a\":\"\\x\"}",
            b"{1:2}",
            b"",
        ] {
            assert_eq!(skim(bad, 2, &[]), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    /// Regression (issue 20 item 15): a 2 MB codex `agent_message` ending in the marker.
    #[test]
    fn a_long_string_is_matched_as_it_streams_and_cut_to_a_head_and_marker() {
        let body = "x".repeat(2_000_000);
        let text = format!("{body}\\nEXIT_SIGNAL: true");
        let line = format!(
            r#"{{"type":"item.completed","item":{{"id":"item_1","type":"agent_message","text":"{text}"}}}}"#
        );
        for chunk in [4096, 65_537, 1 << 20] {
            let got = skim(
                line.as_bytes(),
                chunk,
                &[r"EXIT_SIGNAL:\s*true$", "nowhere"],
            )
            .expect("parsed");
            let t = got.value["item"]["text"].as_str().expect("text");
            assert!(t.len() < HEAD + 16, "{}", t.len());
            assert!(t.starts_with("xxxx"));
            assert_eq!(markers_in(t).collect::<Vec<_>>(), [0]);
            assert_eq!(got.matched, [vec![true, false]], "chunks of {chunk}");
            assert_eq!(got.value["type"], "item.completed");
        }
    }

    #[test]
    fn anchors_and_escapes_inside_long_strings() {
        let long = "a".repeat(3 * WINDOW + 17);
        // `$` must not match at a window boundary; the real end does.
        let line = format!(r#"{{"t":"{long}!"}}"#);
        let got = skim(line.as_bytes(), 999, &["(a+)+$", "^a", r"a!$"]).expect("parsed");
        assert_eq!(got.matched, [vec![false, true, true]]);
        // A marker written with escapes, split across windows, decoded before matching.
        let mut s = "b".repeat(WINDOW - 3);
        s.push_str(r"\u0045XIT\u005fSIGNAL: \u0074rue");
        s.push_str(&"c".repeat(WINDOW));
        let line = format!(r#"{{"t":"{s}"}}"#);
        let got = skim(line.as_bytes(), 5, &["EXIT_SIGNAL: true"]).expect("parsed");
        assert_eq!(got.matched, [vec![true]]);
        // A multi-byte character at a window boundary stays whole.
        let s = format!("{}é{}✓", "d".repeat(WINDOW + OVERLAP - 1), "e".repeat(KEEP));
        let line = format!(r#"{{"t":"{s}"}}"#);
        let got = skim(line.as_bytes(), 1, &["dé", "e✓"]).expect("parsed");
        assert_eq!(got.matched, [vec![true, true]]);
    }

    #[test]
    fn memory_stays_bounded_whatever_the_line() {
        // Many small values: given up once the budget is spent, not held.
        let mut p = LongJson::new(vec![]);
        p.feed(b"{\"a\":[");
        for _ in 0..200_000 {
            p.feed(b"1234567,");
            if p.failed() {
                break;
            }
        }
        assert!(p.failed(), "the budget was not enforced");
        // Deep nesting.
        let mut p = LongJson::new(vec![]);
        p.feed(&[b'['; MAX_DEPTH + 1]);
        assert!(p.failed());
        // A long string never holds more than its window.
        let mut p = LongJson::new(vec![Some(Regex::new("z").expect("regex"))]);
        p.feed(b"{\"t\":\"");
        for _ in 0..100 {
            p.feed(&[b'y'; 100_000]);
            assert!(p.text.buf.len() < WINDOW + OVERLAP + 100_000);
        }
        p.feed(b"z\"}");
        let got = p.finish().expect("parsed");
        assert_eq!(got.matched, [vec![true]]);
    }

    #[test]
    fn utf8_prefixes() {
        assert_eq!(utf8_prefix(b"abc"), 3);
        assert_eq!(utf8_prefix("é".as_bytes()), 2);
        assert_eq!(utf8_prefix(&"é".as_bytes()[..1]), 0);
        assert_eq!(utf8_prefix(&"✓".as_bytes()[..2]), 0);
        assert_eq!(utf8_prefix(&"a😀".as_bytes()[..4]), 1);
        assert_eq!(utf8_prefix(b"a\xff"), 2);
    }
}

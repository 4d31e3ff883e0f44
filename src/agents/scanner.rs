//! The per-attempt output scanner: turns raw chunks of stdout and stderr into line facts,
//! with memory bounded whatever the agent prints (D13). Pure: the driver feeds it bytes.

use regex::Regex;

use super::long_line::{self, LongJson, Skimmed};
use super::output::{self, LineFacts, RawError, Stream};
use super::piece::{Piece, piece_matches};
use crate::config::AgentKind;
use crate::engine::{ErrorClass, ErrorSignal, Usage};

/// A line longer than this is scanned in pieces instead of being held whole.
pub const MAX_LINE_BUFFER: usize = 1 << 20;
/// How many stderr lines, and bytes, an unfinished multi-line gemini attempt message may
/// span before it is judged as it stands.
const MAX_HELD_LINES: usize = 8;
const MAX_HELD_BYTES: usize = 64 * 1024;
/// How much of the previous piece of a long line is kept so a marker split across
/// pieces is still found.
const OVERLAP: usize = 4096;

/// Bytes as text: valid UTF-8 is borrowed (the common case, and much cheaper to check than
/// a lossy conversion); anything else is converted lossily for scanning only.
pub fn text_of(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Stop-pattern matching and retry classification.
#[derive(Clone, Debug)]
pub struct Classifier {
    patterns: Vec<Regex>,
}

fn rate_re() -> &'static Regex {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"(?i)rate[\s_-]*limit|\b429\b|too many requests|quota|usage limit|resource[\s_-]*exhausted")
            .unwrap_or_else(|_| unreachable!("constant regex"))
    })
}

fn transient_re() -> &'static Regex {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"(?i)retry[\s_-]*after|back[\s_-]*off|temporarily unavailable|overloaded|\b(?:500|502|503|504|529)\b|high demand|at capacity|service unavailable|internal server error")
            .unwrap_or_else(|_| unreachable!("constant regex"))
    })
}

/// Rate limit, transient, or neither, judged on error text.
pub fn class_of_text(text: &str) -> Option<ErrorClass> {
    if rate_re().is_match(text) {
        Some(ErrorClass::RateLimit)
    } else if transient_re().is_match(text) {
        Some(ErrorClass::Transient)
    } else {
        None
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Classifier {
    pub fn new(patterns: &[String]) -> Result<Self, String> {
        let patterns = patterns
            .iter()
            .map(|p| crate::config::layers::compile_regex(p, true))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { patterns })
    }

    /// An error signal, or `None` when nothing on this error channel calls for action.
    pub fn classify(&self, err: &RawError, stream: Stream) -> Option<ErrorSignal> {
        let haystack = if err.structured {
            std::borrow::Cow::Borrowed(err.text.as_str())
        } else {
            output::strip_paths(&err.text)
        };
        let matched = self.patterns.iter().find_map(|re| re.find(&haystack));
        let Some(m) = matched else {
            // A structured error whose status says what it is still counts.
            return err
                .hint
                .filter(|_| err.structured)
                .map(|class| ErrorSignal {
                    class,
                    reason: format!(
                        "{} error in structured {}: {}",
                        class.as_str(),
                        stream.as_str(),
                        truncate(&err.text, 200)
                    ),
                    retry_after: err.retry_after,
                });
        };
        // The whole text decides, rate-limit words first: "quota ... retry after 2s" is a
        // rate limit even though the pattern that matched was "retry after".
        let class = err
            .hint
            .or_else(|| class_of_text(&haystack))
            .unwrap_or(ErrorClass::Terminal);
        let reason = if err.text.starts_with("rate limit event:") {
            err.text.clone()
        } else {
            let place = if err.structured { "structured " } else { "" };
            let mut r = format!(
                "stop pattern detected in {place}{}: '{}'",
                stream.as_str(),
                m.as_str()
            );
            if haystack.trim() != m.as_str() {
                r.push_str(&format!(" ({})", truncate(haystack.trim(), 200)));
            }
            r
        };
        Some(ErrorSignal {
            class,
            reason,
            retry_after: err.retry_after,
        })
    }
}

/// What a fed chunk changed that the driver may act on at once.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct News {
    /// A non-informational error signal appeared (kill_on_stop_pattern acts on it).
    pub error: bool,
    pub notice: Option<String>,
    /// The notice is the CLI's own retry: what it says (issue 18).
    pub retry: Option<super::self_retry::SelfRetry>,
}

pub struct Scanner {
    kind: AgentKind,
    scan_stdout: bool,
    completion: Option<Regex>,
    output_match: Option<Regex>,
    classifier: Classifier,
    now_epoch: f64,
    partial: [Vec<u8>; 2],
    /// The current line outgrew the buffer: it is being scanned in pieces.
    oversized: [bool; 2],
    /// A structured agent's stdout line that outgrew the buffer, parsed as it streams.
    long_json: Option<LongJson>,
    /// stderr lines of a multi-line message whose verdict is still to come
    /// ([`output::opens_multiline_attempt`]).
    held: Option<String>,
    pub bytes: u64,
    /// Bytes of the agent's own text: a generic agent's stdout, a structured agent's
    /// assistant text (never JSON framing, tool output or the echoed prompt). This is the
    /// output size `--cb-output-decline` compares, for every interface.
    pub text_bytes: u64,
    pub completion_seen: bool,
    /// The completion marker appeared while completion is off (issue 14: a finished agent
    /// was re-prompted forever, silently).
    pub marker_seen_while_off: bool,
    /// The marker looked for while completion is off, to say so.
    ignored_marker: Option<Regex>,
    pub match_seen: bool,
    pub session_id: Option<String>,
    pub usage: Usage,
    pub error: Option<ErrorSignal>,
    pub last_notice: Option<String>,
    /// The agent's own last words on an error channel (a stderr line, a structured error's
    /// message), bounded: what `looper status` shows for a failed run.
    pub last_error_text: Option<String>,
    /// The usage last counted under a repeat key ([`output::LineFacts::usage_key`]), so
    /// the next record of the same response replaces it instead of adding to it.
    last_usage: Option<(String, Usage)>,
    /// The last reading of each usage window the agent reported (issue 18 item 1), in the
    /// order first seen.
    pub rate_limits: Vec<output::RateLimitReading>,
    /// Keep the agent's latest message in `last_text` (see [`Scanner::with_last_text`]).
    keep_last: bool,
    completion_last_only: bool,
    /// The agent's latest non-empty message (its end, at most about [`MAX_LAST_TEXT`]
    /// bytes); for a generic agent, the end of its stdout.
    pub last_text: String,
}

/// How much of the agent's latest message is kept.
pub const MAX_LAST_TEXT: usize = 16 * 1024;

fn idx(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

impl Scanner {
    pub fn new(
        kind: AgentKind,
        scan_stdout: bool,
        completion: Option<Regex>,
        output_match: Option<Regex>,
        classifier: Classifier,
        now_epoch: f64,
    ) -> Self {
        Self {
            kind,
            scan_stdout,
            completion,
            output_match,
            classifier,
            now_epoch,
            partial: [Vec::new(), Vec::new()],
            oversized: [false, false],
            long_json: None,
            held: None,
            bytes: 0,
            text_bytes: 0,
            marker_seen_while_off: false,
            ignored_marker: None,
            completion_seen: false,
            match_seen: false,
            session_id: None,
            usage: Usage::default(),
            error: None,
            last_notice: None,
            last_error_text: None,
            last_usage: None,
            rate_limits: Vec::new(),
            keep_last: false,
            completion_last_only: false,
            last_text: String::new(),
        }
    }

    /// Keep the agent's latest message (a reviewer's verdict for the next prompt); with
    /// `completion_last_only` (`completion_must_be_last`), the marker counts only on the last
    /// non-empty line of that final message, so one quoted or negated earlier does not.
    pub fn with_last_text(mut self, completion_last_only: bool) -> Self {
        self.keep_last = true;
        self.completion_last_only = completion_last_only;
        self
    }

    /// The completion marker was seen, as the configuration counts it.
    pub fn completion(&self) -> bool {
        if !self.completion_last_only {
            return self.completion_seen;
        }
        let last = self.last_text.lines().rev().find(|l| !l.trim().is_empty());
        match (&self.completion, last) {
            (Some(re), Some(line)) => re.is_match(line),
            _ => false,
        }
    }

    /// A structured agent's text fact is a whole message: it replaces the last one. A
    /// generic agent's stdout is one message, line by line: its end is kept.
    fn keep_text(&mut self, text: &str) {
        if self.kind == AgentKind::Generic {
            self.last_text.push_str(text);
            self.last_text.push('\n');
            if self.last_text.len() > 2 * MAX_LAST_TEXT {
                let cut = self
                    .last_text
                    .ceil_char_boundary(self.last_text.len() - MAX_LAST_TEXT);
                self.last_text.drain(..cut);
            }
            return;
        }
        if text.trim().is_empty() {
            return;
        }
        self.last_text.clear();
        let start = text.ceil_char_boundary(text.len().saturating_sub(MAX_LAST_TEXT));
        self.last_text.push_str(&text[start..]);
    }

    /// Feed a chunk of raw output as it arrives.
    pub fn feed(&mut self, stream: Stream, mut data: &[u8]) -> News {
        self.bytes += data.len() as u64;
        if stream == Stream::Stdout && self.kind == AgentKind::Generic {
            self.text_bytes += data.len() as u64;
        }
        let mut news = News::default();
        let i = idx(stream);
        // Chunks rarely end on a newline: finish the line the last one left open, so the
        // rest of this chunk can take the block path.
        if (!self.partial[i].is_empty() || self.oversized[i])
            && let Some(pos) = memchr::memchr(b'\n', data)
        {
            self.end_line(stream, &data[..pos], &mut news);
            data = &data[pos + 1..];
        }
        if let Some(rest) = self.plain_block(stream, data) {
            data = rest;
        }
        while !data.is_empty() {
            match memchr::memchr(b'\n', data) {
                Some(pos) => {
                    self.end_line(stream, &data[..pos], &mut news);
                    data = &data[pos + 1..];
                }
                None => {
                    self.append(stream, data, &mut news);
                    data = &[];
                }
            }
        }
        news
    }

    /// `line` ends at a newline: with what came before it in earlier chunks, a whole line.
    fn end_line(&mut self, stream: Stream, line: &[u8], news: &mut News) {
        let i = idx(stream);
        if self.partial[i].is_empty() && !self.oversized[i] {
            self.line(stream, line, news);
            return;
        }
        self.append(stream, line, news);
        let buf = std::mem::take(&mut self.partial[i]);
        if let Some(long) = self.long_json.take().filter(|_| stream == Stream::Stdout) {
            self.oversized[i] = false;
            self.long_record(stream, long, news);
        } else if self.oversized[i] {
            self.piece(stream, &buf);
            self.oversized[i] = false;
        } else {
            self.line(stream, &buf, news);
        }
        self.partial[i] = buf;
        self.partial[i].clear();
    }

    /// The fast path for the bulk of a plain-text agent's output: the complete lines of a
    /// chunk of generic stdout with no JSON and no `\r` mean nothing but text to match, so
    /// the regexes run once over the block instead of once per line. Returns what is left
    /// (the unterminated tail), or `None` when the chunk needs the line-by-line path.
    fn plain_block<'d>(&mut self, stream: Stream, data: &'d [u8]) -> Option<&'d [u8]> {
        let i = idx(stream);
        if stream != Stream::Stdout
            || self.kind != AgentKind::Generic
            || self.scan_stdout
            || !self.partial[i].is_empty()
            || self.oversized[i]
        {
            return None;
        }
        let end = memchr::memrchr(b'\n', data)? + 1;
        let block = &data[..end];
        if memchr::memchr2(b'{', b'\r', block).is_some() {
            return None;
        }
        let text = text_of(&block[..end - 1]);
        if self.keep_last {
            let tail = &text[text.ceil_char_boundary(text.len().saturating_sub(MAX_LAST_TEXT))..];
            let tail = tail.to_string();
            self.keep_text(&tail);
        }
        if !self.marker_seen_while_off
            && let Some(re) = &self.ignored_marker
        {
            // Once over the block; line by line only when the match crosses a newline
            // (which no line holds on its own), as for the completion marker below.
            self.marker_seen_while_off = match re.find(&text) {
                Some(m) if m.as_str().contains('\n') => {
                    text.split('\n').any(|line| re.is_match(line))
                }
                found => found.is_some(),
            };
        }
        let completion_needed =
            !self.completion_seen && self.completion.is_some() && !self.completion_last_only;
        let match_needed = !self.match_seen && self.output_match.is_some();
        let mut per_line = false;
        for (needed, is_completion) in [(completion_needed, true), (match_needed, false)] {
            if !needed {
                continue;
            }
            let re = if is_completion {
                &self.completion
            } else {
                &self.output_match
            };
            let Some(re) = re else { continue };
            // The leftmost match decides: none means no line matches; one within a line
            // means that line matches on its own (`^`, `$` and `\b` see the same edges in
            // multi-line mode); one that crosses a newline does not exist line by line, so
            // the block is rescanned line by line.
            match re.find(&text) {
                Some(m) if m.as_str().contains('\n') => per_line = true,
                Some(_) if is_completion => self.completion_seen = true,
                Some(_) => self.match_seen = true,
                None => {}
            }
        }
        if per_line {
            for line in block[..end - 1].split(|b| *b == b'\n') {
                self.scan_text(&text_of(line));
            }
        }
        Some(&data[end..])
    }

    /// Flush an unterminated last line at the end of one stream.
    pub fn finish_stream(&mut self, stream: Stream) -> News {
        let mut news = News::default();
        let i = idx(stream);
        let buf = std::mem::take(&mut self.partial[i]);
        if let Some(long) = self.long_json.take().filter(|_| stream == Stream::Stdout) {
            self.long_record(stream, long, &mut news);
        } else if self.oversized[i] {
            self.piece(stream, &buf);
        } else if !buf.is_empty() {
            self.line(stream, &buf, &mut news);
        }
        self.oversized[i] = false;
        if stream == Stream::Stderr
            && let Some(held) = self.held.take()
        {
            self.judge(stream, &held, &mut news);
        }
        news
    }

    fn append(&mut self, stream: Stream, data: &[u8], _news: &mut News) {
        let i = idx(stream);
        if stream == Stream::Stdout
            && let Some(long) = &mut self.long_json
        {
            long.feed(data);
            return;
        }
        self.partial[i].extend_from_slice(data);
        if self.partial[i].len() > MAX_LINE_BUFFER
            && !self.oversized[i]
            && stream == Stream::Stdout
            && self.kind != AgentKind::Generic
            && self.partial[i].trim_ascii_start().starts_with(b"{")
        {
            // A structured agent's record too long to hold (a 2 MB agent message): parsed
            // as it streams, its long strings matched on the way (issue 20 item 15).
            let mut long = LongJson::new(vec![self.completion.clone(), self.output_match.clone()]);
            long.feed(&self.partial[i]);
            self.partial[i] = Vec::new();
            self.long_json = Some(long);
            self.oversized[i] = true;
            return;
        }
        if self.partial[i].len() > MAX_LINE_BUFFER {
            // Scan what we have as plain text, keep an overlap, and stop treating the line
            // as a candidate for JSON parsing: memory stays bounded.
            let buf = std::mem::take(&mut self.partial[i]);
            let first = !self.oversized[i];
            self.piece_of(stream, &buf, Piece { first, last: false });
            let keep = buf.len().saturating_sub(OVERLAP);
            self.partial[i] = buf[keep..].to_vec();
            self.oversized[i] = true;
        }
    }

    /// The last piece of an oversized line (its newline or the end of the stream).
    fn piece(&mut self, stream: Stream, bytes: &[u8]) {
        self.piece_of(
            stream,
            bytes,
            Piece {
                first: false,
                last: true,
            },
        );
    }

    /// A piece of an oversized line: only plain-text scanning, for generic agents.
    fn piece_of(&mut self, stream: Stream, bytes: &[u8], at: Piece) {
        if stream == Stream::Stdout && self.kind == AgentKind::Generic {
            let text = text_of(bytes);
            if !self.completion_seen
                && !self.completion_last_only
                && let Some(re) = &self.completion
            {
                self.completion_seen = piece_matches(re, &text, at);
            }
            if !self.match_seen
                && let Some(re) = &self.output_match
            {
                self.match_seen = piece_matches(re, &text, at);
            }
        }
    }

    /// With completion off, still notice the marker, so the run can say it is ignoring it.
    pub fn with_ignored_marker(mut self, marker: Option<Regex>) -> Self {
        if self.completion.is_none() {
            self.ignored_marker = marker;
        }
        self
    }

    fn scan_text(&mut self, text: &str) {
        if !self.marker_seen_while_off
            && let Some(re) = &self.ignored_marker
        {
            self.marker_seen_while_off = re.is_match(text);
        }
        if self.keep_last {
            self.keep_text(text);
        }
        if !self.completion_seen
            && !self.completion_last_only
            && let Some(re) = &self.completion
        {
            self.completion_seen = re.is_match(text);
        }
        if !self.match_seen
            && let Some(re) = &self.output_match
        {
            self.match_seen = re.is_match(text);
        }
    }

    fn line(&mut self, stream: Stream, bytes: &[u8], news: &mut News) {
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        let text = text_of(bytes);
        if stream == Stream::Stderr {
            if let Some(mut held) = self.held.take() {
                held.push('\n');
                held.push_str(&text);
                if output::opens_multiline_attempt(&held)
                    && held.lines().count() < MAX_HELD_LINES
                    && held.len() < MAX_HELD_BYTES
                {
                    self.held = Some(held);
                } else {
                    self.judge(stream, &held, news);
                }
                return;
            }
            if output::opens_multiline_attempt(&text) {
                self.held = Some(text.into_owned());
                return;
            }
        }
        self.judge(stream, &text, news);
    }

    /// Parse one logical line (a physical line, or a joined multi-line message) and fold
    /// its facts in.
    fn judge(&mut self, stream: Stream, text: &str, news: &mut News) {
        let facts: LineFacts =
            output::parse_line(self.kind, stream, text, self.scan_stdout, self.now_epoch);
        if let Some(t) = &facts.text {
            self.count_text(t);
            self.scan_text(t);
        }
        self.fold(stream, facts, news);
    }

    /// The end of a record parsed by [`LongJson`]: its long strings that are the agent's
    /// text (their markers are in the facts' text) count with the matches found in them.
    fn long_record(&mut self, stream: Stream, long: LongJson, news: &mut News) {
        let Some(Skimmed { value, matched }) = long.finish() else {
            return;
        };
        let facts = output::parse_value(self.kind, stream, &value, self.now_epoch);
        if let Some(t) = &facts.text {
            for n in long_line::markers_in(t) {
                if let Some(m) = matched.get(n) {
                    self.completion_seen |= m.first().copied().unwrap_or(false);
                    self.match_seen |= m.get(1).copied().unwrap_or(false);
                }
            }
            self.count_text(t);
            self.scan_text(t);
        }
        self.fold(stream, facts, news);
    }

    /// A structured agent's text counts by its length (a generic agent's was counted as it
    /// arrived).
    fn count_text(&mut self, t: &str) {
        if self.kind != AgentKind::Generic {
            self.text_bytes += t.len() as u64;
        }
    }

    /// Fold one record's facts into what the attempt has seen.
    fn fold(&mut self, stream: Stream, facts: LineFacts, news: &mut News) {
        if self.session_id.is_none()
            && let Some(id) = facts.session_id
        {
            self.session_id = Some(id);
        }
        match (facts.usage, facts.usage_key) {
            (Some(u), Some(key)) => {
                if let Some((last, counted)) = &self.last_usage
                    && *last == key
                {
                    self.usage.subtract(counted);
                }
                self.usage.add(&u);
                self.last_usage = Some((key, u));
            }
            (Some(u), None) => {
                self.usage.add(&u);
                self.last_usage = None;
            }
            (None, _) => self.last_usage = None,
        }
        for reading in facts.rate_limits {
            match self
                .rate_limits
                .iter_mut()
                .find(|r| r.window == reading.window)
            {
                Some(r) => *r = reading,
                None => self.rate_limits.push(reading),
            }
        }
        if let Some(n) = facts.notice {
            news.retry = Some(
                facts
                    .self_retry
                    .unwrap_or_else(|| super::self_retry::from_text(&n)),
            );
            news.notice = Some(n.clone());
            self.last_notice = Some(n);
        }
        if let Some(raw) = &facts.error {
            let t = raw.text.trim();
            if !t.is_empty() {
                self.last_error_text = Some(bounded_line(t));
            }
        }
        if self.error.is_none()
            && let Some(raw) = facts.error
            && let Some(signal) = self.classifier.classify(&raw, stream)
        {
            self.error = Some(signal);
            news.error = true;
        }
    }
}

/// The longest error line kept for `looper status`.
const MAX_ERROR_LINE: usize = 300;

fn bounded_line(t: &str) -> String {
    let line = t
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(t)
        .trim();
    if line.chars().count() > MAX_ERROR_LINE {
        let cut: String = line.chars().take(MAX_ERROR_LINE - 1).collect();
        format!("{cut}…")
    } else {
        line.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanner(completion: &str) -> Scanner {
        Scanner::new(
            AgentKind::Generic,
            true,
            Some(Regex::new(completion).expect("regex")),
            None,
            Classifier::new(&[]).expect("classifier"),
            0.0,
        )
    }

    fn structured(kind: AgentKind, completion: &str) -> Scanner {
        Scanner::new(
            kind,
            false,
            Some(Regex::new(completion).expect("regex")),
            Some(Regex::new("needle").expect("regex")),
            Classifier::new(&[]).expect("classifier"),
            0.0,
        )
    }

    /// Regression (issue 20 item 15): completion was missed in an agent JSON message over
    /// 1 MiB (a 2 MB codex `agent_message` ending in the marker); the record's other facts
    /// (session, usage) were lost with it.
    #[test]
    fn a_structured_record_longer_than_the_buffer_is_parsed_and_scanned() {
        let body = "word ".repeat(400_000);
        let codex = format!(
            "{{\"type\":\"thread.started\",\"thread_id\":\"t-1\"}}\n{}\n{{\"type\":\"turn.completed\",\"usage\":{{\"input_tokens\":7,\"output_tokens\":3}}}}\n",
            serde_json::json!({"type":"item.completed","item":{"id":"item_1","type":"agent_message","text":format!("{body}\nEXIT_SIGNAL: true")}})
        );
        for chunk in [8192, 1 << 20, 3 << 20] {
            let mut s = structured(AgentKind::Codex, r"(?m)^EXIT_SIGNAL:\s*true$");
            for c in codex.as_bytes().chunks(chunk) {
                s.feed(Stream::Stdout, c);
            }
            s.finish_stream(Stream::Stdout);
            assert!(s.completion_seen, "chunks of {chunk}");
            assert!(!s.match_seen);
            assert_eq!(s.session_id.as_deref(), Some("t-1"));
            assert_eq!(s.usage.input_tokens, 7);
        }
        // claude's final record, without a trailing newline; the output-match pattern
        // found in the middle of the long text.
        let claude = serde_json::json!({"type":"result","subtype":"success","is_error":false,"session_id":"s-2","result":format!("{body}needle{body}EXIT_SIGNAL: true"),"usage":{"input_tokens":1,"output_tokens":2}}).to_string();
        let mut s = structured(AgentKind::Claude, r"EXIT_SIGNAL:\s*true\s*$");
        for c in claude.as_bytes().chunks(100_000) {
            s.feed(Stream::Stdout, c);
        }
        s.finish_stream(Stream::Stdout);
        assert!(s.completion_seen && s.match_seen);
        assert_eq!(s.session_id.as_deref(), Some("s-2"));
        // A long string that is not the agent's text does not complete: a user record
        // echoing the marker (D14).
        let user = serde_json::json!({"type":"user","session_id":"s-3","message":{"content":[{"type":"text","text":format!("{body}EXIT_SIGNAL: true")}]}}).to_string();
        let mut s = structured(AgentKind::Claude, r"EXIT_SIGNAL:\s*true");
        s.feed(Stream::Stdout, user.as_bytes());
        s.feed(Stream::Stdout, b"\n");
        assert!(
            !s.completion_seen,
            "the prompt's echo completed the attempt"
        );
        assert_eq!(s.session_id.as_deref(), Some("s-3"));
    }

    /// Issue 15: with `completion_must_be_last`, a marker quoted or negated earlier in the
    /// final message does not complete; one on its last non-empty line does.
    #[test]
    fn a_marker_counts_only_on_the_last_line_of_the_final_message_when_asked() {
        let codex = |text: &str| {
            format!(
                "{}\n",
                serde_json::json!({"type":"item.completed","item":{"type":"agent_message","text":text}})
            )
        };
        let scan = |kind: AgentKind, out: &[u8], last_only: bool| {
            let mut s = Scanner::new(
                kind,
                false,
                Some(Regex::new(r"EXIT_SIGNAL:\s*true").expect("regex")),
                None,
                Classifier::new(&[]).expect("classifier"),
                0.0,
            );
            if last_only {
                s = s.with_last_text(true);
            }
            s.feed(Stream::Stdout, out);
            s.finish_stream(Stream::Stdout);
            s.completion()
        };
        let quoted = codex("I must not print EXIT_SIGNAL: true yet.\nStill working.");
        let last = codex("All tasks done.\nEXIT_SIGNAL: true\n\n");
        let earlier_message = format!("{}{}", codex("EXIT_SIGNAL: true"), codex("One more thing."));
        assert!(
            scan(AgentKind::Codex, quoted.as_bytes(), false),
            "without the key"
        );
        assert!(!scan(AgentKind::Codex, quoted.as_bytes(), true));
        assert!(scan(AgentKind::Codex, last.as_bytes(), true));
        assert!(!scan(AgentKind::Codex, earlier_message.as_bytes(), true));
        // Plain output of a generic agent: the last non-empty line of stdout, in blocks too.
        let plain = b"EXIT_SIGNAL: true\nnot done yet\n";
        assert!(scan(AgentKind::Generic, plain, false));
        assert!(!scan(AgentKind::Generic, plain, true));
        assert!(scan(
            AgentKind::Generic,
            b"working\nEXIT_SIGNAL: true\n\n",
            true
        ));
        assert!(scan(
            AgentKind::Generic,
            b"working\nEXIT_SIGNAL: true",
            true
        ));
    }

    /// Regression (reliability suite): piece boundaries of an oversized line are not line
    /// ends or starts for anchored completion patterns.
    #[test]
    fn anchors_do_not_match_at_the_boundaries_of_pieces_of_a_long_line() {
        let long = vec![b'a'; 3 * MAX_LINE_BUFFER + 17];
        let mut s = scanner("(a+)+$");
        s.feed(Stream::Stdout, &long);
        s.feed(Stream::Stdout, b"!\n");
        assert!(!s.completion_seen, "`$` matched at a piece boundary");
        let mut s = scanner("^a");
        s.feed(Stream::Stdout, b"b");
        s.feed(Stream::Stdout, &long);
        s.feed(Stream::Stdout, b"\n");
        assert!(!s.completion_seen, "`^` matched at a piece start");
        // A real end of line or a marker inside the long line is still found.
        let mut s = scanner("(a+)+$");
        s.feed(Stream::Stdout, &long);
        s.feed(Stream::Stdout, b"\n");
        assert!(s.completion_seen);
        let mut s = scanner("EXIT_SIGNAL: true");
        s.feed(Stream::Stdout, &long[..MAX_LINE_BUFFER - 5]);
        s.feed(Stream::Stdout, b"EXIT_SIGNAL: true");
        s.feed(Stream::Stdout, &long);
        s.feed(Stream::Stdout, b"\n");
        assert!(s.completion_seen, "a marker across a piece boundary");
    }

    /// Issue 14 item 10: with claude's hybrid interface usage was never counted (only
    /// `result` records were read, and a transcript has none), so `max_tokens` never tripped.
    #[test]
    fn a_claude_transcript_counts_each_response_once() {
        let mut sc = Scanner::new(
            AgentKind::Claude,
            false,
            None,
            None,
            Classifier::new(&[]).expect("classifier"),
            0.0,
        );
        let block = |id: &str, out: u64| {
            format!(
                "{{\"type\":\"assistant\",\"sessionId\":\"s\",\"requestId\":\"r-{id}\",\"message\":{{\"id\":\"{id}\",\"content\":[{{\"type\":\"text\",\"text\":\"x\"}}],\"usage\":{{\"input_tokens\":100,\"output_tokens\":{out},\"cache_read_input_tokens\":7}}}}}}\n"
            )
        };
        let user = "{\"type\":\"user\",\"sessionId\":\"s\",\"message\":{\"role\":\"user\",\"content\":\"go\"}}\n";
        // Two content blocks of one response, then the next response.
        let text = format!(
            "{}{}{user}{}",
            block("m1", 5),
            block("m1", 9),
            block("m2", 3)
        );
        sc.feed(Stream::Stdout, text.as_bytes());
        sc.finish_stream(Stream::Stdout);
        assert_eq!(sc.usage.input_tokens, 200, "two responses");
        assert_eq!(
            sc.usage.output_tokens, 12,
            "the last receipt of m1 (9) and m2 (3)"
        );
        assert_eq!(sc.usage.cached_input_tokens, 14);
        // stream-json assistant records (snake_case session_id) are still not counted.
        let mut json = Scanner::new(
            AgentKind::Claude,
            false,
            None,
            None,
            Classifier::new(&[]).expect("classifier"),
            0.0,
        );
        json.feed(
            Stream::Stdout,
            b"{\"type\":\"assistant\",\"session_id\":\"s\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":5,\"output_tokens\":5}}}\n",
        );
        assert!(json.usage.is_empty());
    }

    /// Issue 14 item 11: a two-line reply in a pane counted as 9.8 KiB of output (the
    /// transcript's JSON): the size the output-decline breaker compares is the agent's text.
    #[test]
    fn the_output_size_is_the_agents_own_text() {
        let classifier = || Classifier::new(&[]).expect("classifier");
        let mut codex = Scanner::new(AgentKind::Codex, false, None, None, classifier(), 0.0);
        let line = br#"{"type":"item.completed","item":{"id":"i","type":"agent_message","text":"two\nlines"}}"#;
        codex.feed(Stream::Stdout, line);
        codex.feed(
            Stream::Stdout,
            b"\n{\"type\":\"turn.completed\",\"usage\":{}}\n",
        );
        codex.feed(Stream::Stderr, b"some warning\n");
        assert_eq!(codex.text_bytes, "two\nlines".len() as u64);
        assert!(codex.bytes > 100);
        let mut generic = Scanner::new(AgentKind::Generic, false, None, None, classifier(), 0.0);
        generic.feed(Stream::Stdout, b"plain output\n");
        generic.feed(Stream::Stderr, b"noise\n");
        assert_eq!(generic.text_bytes, 13);
    }
}

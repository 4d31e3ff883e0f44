//! The per-attempt output scanner: turns raw chunks of stdout and stderr into line facts,
//! with memory bounded whatever the agent prints (D13). Pure: the driver feeds it bytes.

use regex::Regex;

use super::output::{self, LineFacts, RawError, Stream};
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

/// Where a piece of an oversized line sits in its line.
#[derive(Clone, Copy, Debug)]
struct Piece {
    first: bool,
    last: bool,
}

/// Does `re` match in this piece of a long line as it would in the whole line? A piece
/// boundary is not a line boundary: `$` must not match at the end of a piece that is not
/// the line's last, nor `^` at the start of one that is not its first (the reliability
/// suite found `(a+)+$` "completing" on a 10 MiB line ending in `!`). A match refused at
/// the end is not lost: consecutive pieces overlap by `OVERLAP` bytes, so a match shorter
/// than that is seen again by the next piece. At most two searches per piece, each linear.
fn piece_matches(re: &Regex, text: &str, at: Piece) -> bool {
    let mut from = 0;
    for _ in 0..2 {
        let Some(m) = re.find_at(text, from) else {
            return false;
        };
        if !at.last && m.end() == text.len() {
            return false;
        }
        if at.first || m.start() > 0 {
            return true;
        }
        // Not the line's start: search again from the next character (`find_at` keeps the
        // text before `from` as context, so `^` no longer matches).
        from = text.chars().next().map_or(1, char::len_utf8);
    }
    false
}

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
    /// stderr lines of a multi-line message whose verdict is still to come
    /// ([`output::opens_multiline_attempt`]).
    held: Option<String>,
    pub bytes: u64,
    pub completion_seen: bool,
    pub match_seen: bool,
    pub session_id: Option<String>,
    pub usage: Usage,
    pub error: Option<ErrorSignal>,
    pub last_notice: Option<String>,
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
            held: None,
            bytes: 0,
            completion_seen: false,
            match_seen: false,
            session_id: None,
            usage: Usage::default(),
            error: None,
            last_notice: None,
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
        if self.oversized[i] {
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
        if self.oversized[i] {
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
        self.partial[i].extend_from_slice(data);
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

    fn scan_text(&mut self, text: &str) {
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
            self.scan_text(t);
        }
        if self.session_id.is_none()
            && let Some(id) = facts.session_id
        {
            self.session_id = Some(id);
        }
        if let Some(u) = facts.usage {
            self.usage.add(&u);
        }
        if let Some(n) = facts.notice {
            news.notice = Some(n.clone());
            self.last_notice = Some(n);
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
}

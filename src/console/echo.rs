//! The transcript echoed in the supervisor's terminal (single layout): plain output as it is,
//! JSON records rendered readably, each line bounded.

use crate::agents::Stream;

/// Renders complete lines for the terminal, bounded per line.
#[derive(Default)]
pub struct Echo {
    partial: [Vec<u8>; 2],
}

/// Longest part of one line kept while its newline has not arrived.
const MAX_PARTIAL: usize = 8192;

/// Whether bytes may hold something `text::sanitize` removes: an ASCII control other than
/// newline and tab, DEL, or the lead byte of a C1 control or a bidi override in UTF-8. A
/// cheap scan, so plain output is written as it is.
fn may_need_sanitizing(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .any(|&b| (b < 0x20 && b != b'\n' && b != b'\t') || b == 0x7f || b == 0xc2 || b == 0xe2)
}

impl Echo {
    /// Plain lines are echoed as they are unless they hold a control character; JSON lines
    /// are rendered; either way the agent's escapes never reach the terminal (D35).
    fn render_into(out: &mut Vec<u8>, stream: Stream, line: &[u8]) {
        let body = line.strip_suffix(b"\r").unwrap_or(line);
        match body.iter().find(|b| !b.is_ascii_whitespace()) {
            None => {}
            Some(b'{') => {
                let text = crate::agents::scanner::text_of(body);
                if let Some(r) = crate::transcript::render(stream.as_str(), &text) {
                    out.extend_from_slice(crate::text::sanitize(&r).as_bytes());
                    out.push(b'\n');
                }
            }
            Some(_) => {
                if stream == Stream::Stderr {
                    out.extend_from_slice(b"stderr: ");
                }
                if may_need_sanitizing(body) {
                    let text = String::from_utf8_lossy(body);
                    out.extend_from_slice(crate::text::sanitize(&text).as_bytes());
                } else {
                    out.extend_from_slice(body);
                }
                out.push(b'\n');
            }
        }
    }

    /// The end of a stream: a last line the agent did not end with a newline is shown too.
    pub fn finish(&mut self, stream: Stream) {
        let i = usize::from(stream == Stream::Stderr);
        if self.partial[i].is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.partial[i]);
        let mut out = Vec::new();
        Self::render_into(&mut out, stream, &line);
        super::out_bytes(&out);
    }

    pub fn feed(&mut self, stream: Stream, data: &[u8]) {
        let i = usize::from(stream == Stream::Stderr);
        let mut rest = data;
        // Plain stdout lines are echoed as they are: write whole blocks without copying.
        if stream == Stream::Stdout
            && self.partial[i].is_empty()
            && let Some(end) = memchr::memrchr(b'\n', data).map(|e| e + 1)
            && memchr::memchr2(b'{', b'\r', &data[..end]).is_none()
            && !may_need_sanitizing(&data[..end])
        {
            super::out_bytes(&data[..end]);
            rest = &data[end..];
        }
        let mut out = Vec::new();
        while let Some(pos) = memchr::memchr(b'\n', rest) {
            let line: &[u8] = if self.partial[i].is_empty() {
                &rest[..pos]
            } else {
                self.partial[i].extend_from_slice(&rest[..pos]);
                &self.partial[i]
            };
            Self::render_into(&mut out, stream, line);
            rest = &rest[pos + 1..];
            self.partial[i].clear();
        }
        let room = MAX_PARTIAL.saturating_sub(self.partial[i].len());
        self.partial[i].extend_from_slice(&rest[..rest.len().min(room)]);
        if !out.is_empty() {
            super::out_bytes(&out);
        }
    }
}

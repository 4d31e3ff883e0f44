//! The transcript echoed in the supervisor's terminal (single layout): plain output as it is,
//! JSON records rendered readably, each line bounded.

use std::io::Write;

use crate::agents::Stream;

/// Renders complete lines for the terminal, bounded per line.
#[derive(Default)]
pub struct Echo {
    partial: [Vec<u8>; 2],
}

/// Longest part of one line kept while its newline has not arrived.
const MAX_PARTIAL: usize = 8192;

impl Echo {
    /// Plain lines are echoed as they are (no allocation); JSON lines are rendered.
    fn render_into(out: &mut Vec<u8>, stream: Stream, line: &[u8]) {
        let body = line.strip_suffix(b"\r").unwrap_or(line);
        match body.iter().find(|b| !b.is_ascii_whitespace()) {
            None => {}
            Some(b'{') => {
                let text = crate::agents::scanner::text_of(body);
                if let Some(r) = crate::transcript::render(stream.as_str(), &text) {
                    out.extend_from_slice(r.as_bytes());
                    out.push(b'\n');
                }
            }
            Some(_) => {
                if stream == Stream::Stderr {
                    out.extend_from_slice(b"stderr: ");
                }
                out.extend_from_slice(body);
                out.push(b'\n');
            }
        }
    }

    pub fn feed(&mut self, stream: Stream, data: &[u8]) {
        let i = usize::from(stream == Stream::Stderr);
        let mut rest = data;
        // Plain stdout lines are echoed as they are: write whole blocks without copying.
        if stream == Stream::Stdout
            && self.partial[i].is_empty()
            && let Some(end) = memchr::memrchr(b'\n', data).map(|e| e + 1)
            && memchr::memchr2(b'{', b'\r', &data[..end]).is_none()
        {
            let _ = std::io::stdout().lock().write_all(&data[..end]);
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
            let _ = std::io::stdout().lock().write_all(&out);
        }
    }
}

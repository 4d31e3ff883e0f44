//! Text for people: numbers and sizes the way the reference prints them, and the one
//! sanitiser (D35) every human-facing output of agent or file text goes through.

use std::borrow::Cow;

/// Numbers print without a trailing `.0` when whole, as a user would write them.
pub fn format_num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// `1.5KiB`, `12MiB`: sizes the way the reference prints them.
pub fn human_bytes(n: u64) -> String {
    if n < 1024 {
        format!("{n}B")
    } else if n < 1024 * 1024 {
        format!("{}KiB", trim_number(n as f64 / 1024.0, 1))
    } else {
        format!("{}MiB", trim_number(n as f64 / 1048576.0, 1))
    }
}

/// A number with at most `places` decimals, trailing zeros cut: `2.50` -> `2.5`, `3.0` -> `3`.
pub fn trim_number(v: f64, places: usize) -> String {
    let s = format!("{v:.places$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Whether a character must not reach a terminal as it is: C0 controls but newline and tab,
/// DEL, C1 controls (U+0080..U+009F: a lone U+009B is a CSI to many terminals), and the
/// bidirectional overrides that make text read differently from what it is.
fn hostile(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Text made safe to show: terminal escape sequences (CSI, OSC such as clipboard writes and
/// title changes, DCS, and the rest, parsed by `vte` as a terminal would) removed whole, other
/// control characters dropped; newline and tab kept. Borrowed when there was nothing to do.
pub fn sanitize(s: &str) -> Cow<'_, str> {
    if !s.chars().any(hostile) {
        return Cow::Borrowed(s);
    }
    struct Keep(String);
    impl vte::Perform for Keep {
        fn print(&mut self, c: char) {
            if !hostile(c) {
                self.0.push(c);
            }
        }
        fn execute(&mut self, byte: u8) {
            if matches!(byte, b'\n' | b'\t') {
                self.0.push(byte as char);
            }
        }
    }
    let mut keep = Keep(String::with_capacity(s.len()));
    let mut parser = vte::Parser::new();
    parser.advance(&mut keep, s.as_bytes());
    Cow::Owned(keep.0)
}

/// `sanitize` for one line: newlines and tabs become spaces too (table cells, tmux text).
pub fn sanitize_line(s: &str) -> Cow<'_, str> {
    let clean = sanitize(s);
    if clean.contains(['\n', '\t']) {
        Cow::Owned(clean.replace(['\n', '\t'], " "))
    } else {
        clean
    }
}

/// At most `max` bytes of `s` from its start, cut at a character boundary, with `…` when cut.
pub fn clip_chars(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    format!("{}…", &s[..s.floor_char_boundary(max)])
}

/// At most `max` bytes of `s` from its end, cut at a character boundary, with `…` when cut:
/// the end of a failing command's output is where the failure usually is.
pub fn tail_chars(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    format!("…{}", &s[s.ceil_char_boundary(s.len() - max)..])
}

/// `label` with every character that is not safe in a file or branch name (letters, digits,
/// `.`, `_`, `-`) replaced by `-`: run directory and worktree names start from it.
pub fn file_name_chars(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_sizes_read_like_the_reference() {
        assert_eq!(format_num(7200.0), "7200");
        assert_eq!(format_num(0.5), "0.5");
        assert_eq!(trim_number(2.50, 2), "2.5");
        assert_eq!(trim_number(3.0, 1), "3");
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(1536), "1.5KiB");
        assert_eq!(human_bytes(10 * 1024), "10KiB");
        assert_eq!(human_bytes(3 * 1048576 + 300_000), "3.3MiB");
    }

    #[test]
    fn escape_sequences_go_whole_and_controls_go() {
        let cases = [
            (
                "plain text, ünïcode 日本\tok\n",
                "plain text, ünïcode 日本\tok\n",
            ),
            ("\x1b[31mred\x1b[0m", "red"),
            ("before\x1b[2J\x1b[Hafter", "beforeafter"),
            // OSC 52 clipboard write, BEL- and ST-terminated; a title change.
            ("a\x1b]52;c;cm0gLXJmIH4=\x07b", "ab"),
            ("a\x1b]52;c;cm0=\x1b\\b", "ab"),
            ("\x1b]0;pwned\x07title", "title"),
            // DCS, a C1 CSI, DEL, a carriage return, a bidi override.
            ("x\x1bP1$r0m\x1b\\y", "xy"),
            // A lone C1 CSI is dropped; what followed it stays as plain text.
            ("c\u{9b}2Jd", "c2Jd"),
            ("e\x7ff\rg", "efg"),
            ("admin\u{202e}txt.exe", "admintxt.exe"),
        ];
        for (input, want) in cases {
            assert_eq!(sanitize(input), want, "{input:?}");
        }
        assert!(matches!(sanitize("nothing to do"), Cow::Borrowed(_)));
        assert_eq!(
            sanitize_line("two\nlines\tand\x1b[1mbold"),
            "two lines andbold"
        );
    }
}

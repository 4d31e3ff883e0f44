//! Text for people: numbers and sizes the way the reference prints them.

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

/// One line of text for a person (D35): control characters (escape sequences included)
/// become `?`, tabs and newlines spaces, so agent-supplied text cannot drive the terminal.
pub fn sanitize_line(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => ' ',
            c if c.is_control() => '?',
            c => c,
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
}

//! Regex matching in one piece of an oversized line, as if on the whole line. The scanner
//! and the long-JSON skimmer both cut lines too long to hold into pieces.

use regex::Regex;

/// Where a piece of an oversized line sits in its line.
#[derive(Clone, Copy, Debug)]
pub struct Piece {
    pub first: bool,
    pub last: bool,
}

/// Does `re` match in this piece of a long line as it would in the whole line? A piece
/// boundary is not a line boundary: `$` must not match at the end of a piece that is not
/// the line's last, nor `^` at the start of one that is not its first (the reliability
/// suite found `(a+)+$` "completing" on a 10 MiB line ending in `!`). A match refused at
/// the end is not lost: consecutive pieces overlap (the scanner carries the last 4 KiB of a
/// piece into the next), so a shorter match is seen again there. At most two searches per
/// piece, each linear.
pub fn piece_matches(re: &Regex, text: &str, at: Piece) -> bool {
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

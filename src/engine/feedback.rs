//! Feedback into the next prompt (D29): operator notes, a failing verify's tail, a reviewer's
//! rejection, a person's rejection reason, answers to asks. Each item reaches the agent once,
//! in one clearly delimited block after the prompt; the block is bounded (oldest items cut
//! first, with a marker saying so). Pure.

use serde::Serialize;

/// What an item of feedback is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum FeedbackKind {
    OperatorNote,
    VerifyFailure,
    ReviewRejection,
    ApprovalRejection,
    Answer,
}

/// One item for the next prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct Feedback {
    /// The id of what it came from (a control line, a verify, an ask), for the records.
    pub id: String,
    pub kind: FeedbackKind,
    /// One line saying what it is: `operator note`, `verify failed (exit 1)`.
    pub title: String,
    pub text: String,
}

/// The largest block appended to a prompt.
pub const MAX_BLOCK: usize = 16 * 1024;

const OPEN: &str = "--- looper feedback: read before you continue ---";
const CLOSE: &str = "--- end of looper feedback ---";

/// The block for `items` (in the order they arrived), at most `max` bytes; `None` when there
/// is nothing to say. Returns the block and how many of the oldest items were cut.
pub fn render(items: &[Feedback], max: usize) -> Option<(String, usize)> {
    if items.is_empty() {
        return None;
    }
    let entry = |f: &Feedback| format!("[{}]\n{}\n", f.title, f.text.trim_end());
    let frame = OPEN.len() + CLOSE.len() + 4;
    let mut kept: Vec<String> = Vec::new();
    let mut size = frame;
    // Newest first, so the oldest are the ones cut.
    for f in items.iter().rev() {
        let e = entry(f);
        if size + e.len() > max {
            break;
        }
        size += e.len();
        kept.push(e);
    }
    if kept.is_empty() {
        // The newest item alone is too long: keep its end, where failures usually are.
        let e = entry(&items[items.len() - 1]);
        let room = max.saturating_sub(frame + 64);
        let mut start = e.len().saturating_sub(room);
        while !e.is_char_boundary(start) {
            start += 1;
        }
        kept.push(format!(
            "[... cut to its last {} bytes]\n{}",
            room,
            &e[start..]
        ));
    }
    let cut = items.len() - kept.len();
    let mut out = String::with_capacity(size + 96);
    out.push_str(OPEN);
    out.push('\n');
    if cut > 0 {
        out.push_str(&format!(
            "[{cut} earlier item(s) cut to keep this block under {max} bytes]\n"
        ));
    }
    for e in kept.iter().rev() {
        out.push_str(e);
    }
    out.push_str(CLOSE);
    Some((out, cut))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(id: &str, text: &str) -> Feedback {
        Feedback {
            id: id.into(),
            kind: FeedbackKind::OperatorNote,
            title: "operator note".into(),
            text: text.into(),
        }
    }

    #[test]
    fn items_are_delimited_in_arrival_order() {
        let (block, cut) =
            render(&[note("a", "first\n"), note("b", "second")], MAX_BLOCK).expect("block");
        assert_eq!(cut, 0);
        assert_eq!(
            block,
            format!("{OPEN}\n[operator note]\nfirst\n[operator note]\nsecond\n{CLOSE}")
        );
        assert!(render(&[], MAX_BLOCK).is_none());
    }

    #[test]
    fn the_oldest_items_are_cut_first_and_the_block_says_so() {
        let items: Vec<Feedback> = (0..10)
            .map(|i| note(&i.to_string(), &format!("item {i} {}", "x".repeat(300))))
            .collect();
        let (block, cut) = render(&items, 1200).expect("block");
        assert!(block.len() <= 1200 + 80, "{}", block.len());
        assert!(cut > 0);
        assert!(
            block.contains(&format!("[{cut} earlier item(s) cut")),
            "{block}"
        );
        assert!(block.contains("item 9 "), "newest kept");
        assert!(!block.contains("item 0 "), "oldest cut");
    }

    #[test]
    fn one_huge_item_keeps_its_end() {
        let text = format!("{}THE FAILURE", "noise ".repeat(10_000));
        let (block, cut) = render(&[note("a", &text)], 2048).expect("block");
        assert_eq!(cut, 0);
        assert!(block.len() <= 2048, "{}", block.len());
        assert!(block.contains("THE FAILURE"));
        assert!(block.starts_with(OPEN) && block.ends_with(CLOSE));
    }
}

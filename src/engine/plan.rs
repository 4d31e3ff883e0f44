//! The plan gate's reading of a plan file (D20, issue 15): its tasks as GitHub renders them.
//! The plan is parsed as Markdown with GitHub task lists (`pulldown-cmark`, the maintained
//! CommonMark parser), so every list form counts (`-`, `*`, `+`, `1.`, `1)`, nested, inside
//! block quotes) and nothing inside a code block does. Pure.

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

/// One task-list item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    pub checked: bool,
    /// The item's own text (without nested items), whitespace folded.
    pub text: String,
}

/// Every task-list item of a Markdown document, in document order.
pub fn tasks(markdown: &str) -> Vec<Task> {
    let mut out = Vec::new();
    // One entry per open list item: the index in `out` of its task, if it is one.
    let mut items: Vec<Option<usize>> = Vec::new();
    for event in Parser::new_ext(markdown, Options::ENABLE_TASKLISTS) {
        match event {
            Event::Start(Tag::Item) => items.push(None),
            Event::End(TagEnd::Item) => {
                items.pop();
            }
            Event::TaskListMarker(checked) => {
                if let Some(slot) = items.last_mut() {
                    *slot = Some(out.len());
                    out.push(Task {
                        checked,
                        text: String::new(),
                    });
                }
            }
            // A nested list's items are tasks of their own: stop adding to the parent.
            Event::Start(Tag::List(_)) => {
                if let Some(slot) = items.last_mut() {
                    *slot = None;
                }
            }
            Event::Text(t) | Event::Code(t) => {
                if let Some(Some(i)) = items.last() {
                    let text = &mut out[*i].text;
                    if !text.is_empty() && !text.ends_with(' ') {
                        text.push(' ');
                    }
                    text.push_str(t.trim());
                }
            }
            Event::SoftBreak | Event::HardBreak => {
                if let Some(Some(i)) = items.last() {
                    out[*i].text.push(' ');
                }
            }
            _ => {}
        }
    }
    for t in &mut out {
        t.text = t.text.split_whitespace().collect::<Vec<_>>().join(" ");
    }
    out
}

/// How many tasks are still open.
pub fn unchecked_tasks(markdown: &str) -> usize {
    tasks(markdown).iter().filter(|t| !t.checked).count()
}

/// The texts of the open tasks.
pub fn open_tasks(markdown: &str) -> Vec<String> {
    tasks(markdown)
        .into_iter()
        .filter(|t| !t.checked)
        .map(|t| t.text)
        .collect()
}

/// Plan integrity: the open tasks of `before` that `after` no longer has, neither open nor
/// ticked (deleted, or rewritten into something else). Counted as a multiset, so one of two
/// identical tasks going missing is seen.
pub fn removed_open_tasks(before: &[String], after: &str) -> Vec<String> {
    let mut remaining: Vec<String> = tasks(after).into_iter().map(|t| t.text).collect();
    let mut removed = Vec::new();
    for task in before {
        match remaining.iter().position(|t| t == task) {
            Some(i) => {
                remaining.swap_remove(i);
            }
            None => removed.push(task.clone()),
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_list_form_counts_open_and_ticked() {
        // (form, open, ticked): each list marker GitHub renders as a task list.
        for (open, ticked) in [
            ("- [ ] a", "- [x] a"),
            ("* [ ] a", "* [X] a"),
            ("+ [ ] a", "+ [x] a"),
            ("1. [ ] a", "1. [x] a"),
            ("1) [ ] a", "1) [x] a"),
            ("- item\n  - [ ] a", "- item\n  - [x] a"),
            ("> - [ ] a", "> - [x] a"),
            ("> 1. [ ] a\n>    * [ ] b", "> 1. [x] a\n>    * [x] b"),
        ] {
            let n = open.matches("[ ]").count();
            assert_eq!(unchecked_tasks(open), n, "open: {open:?}");
            assert_eq!(tasks(open).len(), n, "open: {open:?}");
            assert_eq!(unchecked_tasks(ticked), 0, "ticked: {ticked:?}");
            assert_eq!(tasks(ticked).len(), n, "ticked: {ticked:?}");
        }
    }

    #[test]
    fn nothing_in_code_blocks_or_prose_counts() {
        let plan = "# Plan\n\n```\n- [ ] fenced\n```\n\n~~~md\n+ [ ] tilde fenced\n~~~\n\n    - [ ] indented code\n\ntext - [ ] not a task\n`- [ ] inline code`\n";
        assert_eq!(tasks(plan), []);
        assert_eq!(unchecked_tasks(plan), 0);
        assert_eq!(unchecked_tasks(""), 0);
    }

    #[test]
    fn nested_tasks_are_their_own_and_texts_are_the_items_own() {
        let plan = "- [ ] parent **bold** `code`\n  continued\n  1. [x] child one\n  2) [ ] child two\n- [ ] next\n";
        let t = tasks(plan);
        let texts: Vec<(&str, bool)> = t.iter().map(|t| (t.text.as_str(), t.checked)).collect();
        assert_eq!(
            texts,
            [
                ("parent bold code continued", false),
                ("child one", true),
                ("child two", false),
                ("next", false)
            ]
        );
        assert_eq!(
            open_tasks(plan),
            ["parent bold code continued", "child two", "next"]
        );
    }

    #[test]
    fn open_tasks_deleted_or_rewritten_are_removed_ticked_ones_are_not() {
        let before = open_tasks("- [ ] one\n- [ ] two\n- [ ] three\n- [ ] three\n");
        // `one` ticked, `two` deleted, one `three` rewritten, a new task added.
        let after = "- [x] one\n- [ ] three\n- [ ] three, done differently\n- [ ] four\n";
        assert_eq!(removed_open_tasks(&before, after), ["two", "three"]);
        assert!(
            removed_open_tasks(&before, "- [x] one\n- [x] two\n- [ ] three\n* [x] three\n")
                .is_empty()
        );
        // The whole plan deleted.
        assert_eq!(removed_open_tasks(&before, "").len(), 4);
    }
}

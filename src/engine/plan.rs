//! The plan gate's reading of a plan file (D20): how many tasks are still open. Pure.

/// Count unchecked tasks (`- [ ]`, `* [ ]`, indented) in a plan file.
pub fn unchecked_tasks(text: &str) -> usize {
    text.lines()
        .filter(|l| {
            let t = l.trim_start();
            let rest = t.strip_prefix("- ").or_else(|| t.strip_prefix("* "));
            rest.is_some_and(|r| r.trim_start().starts_with("[ ]"))
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_tasks_are_counted_and_ticked_ones_are_not() {
        let plan = "# Plan\n- [ ] one\n  * [ ] nested\n- [x] done\n- [X] done too\ntext - [ ] not a task\n";
        assert_eq!(unchecked_tasks(plan), 2);
        assert_eq!(unchecked_tasks(""), 0);
    }
}

//! The reviewer's prompt (issue 15): the built-in rubric, and `{placeholder}` templates for
//! a rubric of one's own, checked when the run is prepared and rendered for each review.

use std::collections::BTreeMap;

/// What a rubric may name: the run's goal prompt, the diff the looper made from git (its
/// text, its `--stat`, the file in the run directory holding it whole), this loop's verify
/// result, the loop number.
pub const PLACEHOLDERS: &[&str] = &["goal", "diff", "diff_stat", "diff_file", "verify", "loop"];

/// The rubric used when `[review].prompt_file` is not set.
pub const BUILTIN: &str =
    "You are reviewing the work of another coding agent. Do not change any file.

The task it was given:
---
{goal}
---

Its verify command: {verify}

What changed since the work began ({diff_stat}); the whole diff is in {diff_file}:
---
{diff}
---

Judge whether this change does what the task asks, completely and correctly, without weakening \
or removing tests. If it does, end your reply with the line `VERDICT: APPROVE`. If it does not, \
say precisely what must change, then end with the line `VERDICT: REJECT`.
";

/// Reject unknown `{name}`s and unmatched braces (`{{` and `}}` are literal braces).
pub fn check(template: &str) -> std::result::Result<(), String> {
    render(template, &BTreeMap::new()).map(|_| ())
}

/// Fill in `values`; a known placeholder without a value renders empty.
pub fn render(
    template: &str,
    values: &BTreeMap<&str, String>,
) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let c = rest.as_bytes()[i];
        let after = &rest[i + 1..];
        if (c == b'{' && after.starts_with('{')) || (c == b'}' && after.starts_with('}')) {
            out.push(c as char);
            rest = &after[1..];
            continue;
        }
        if c == b'}' {
            return Err("an unmatched `}` (write `}}` for a literal brace)".into());
        }
        let Some(end) = after.find('}') else {
            return Err("an unclosed `{` (write `{{` for a literal brace)".into());
        };
        let name = &after[..end];
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "the unknown placeholder {{{name}}} (known: {})",
                PLACEHOLDERS
                    .iter()
                    .map(|p| format!("{{{p}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        out.push_str(values.get(name).map_or("", String::as_str));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_and_unknown_ones_refused() {
        assert!(check(BUILTIN).is_ok());
        let values = BTreeMap::from([("goal", "fix it".to_string()), ("loop", "3".into())]);
        assert_eq!(
            render("{goal} in loop {loop}; {{literal}} {verify}.", &values).as_deref(),
            Ok("fix it in loop 3; {literal} .")
        );
        assert!(check("{prompt}").is_err_and(|e| e.contains("{prompt}")));
        assert!(check("open {").is_err());
        assert!(check("close }").is_err());
    }
}

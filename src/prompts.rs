//! Prompt files: single mode (the whole file is one prompt) and sequence mode (split on
//! separator lines), with the facts recorded about each load.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::PromptMode;
use crate::effects::textfile;
use crate::error::{Error, Result};

/// One load of the prompt file.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptSet {
    pub path: PathBuf,
    pub prompts: Vec<String>,
    pub sha256: String,
    pub bytes: u64,
    /// Modification time, UTC, seconds precision (`2026-11-21T09:10:31Z`).
    pub mtime: Option<String>,
}

/// Split prompt text. Pure, so it can be tested and fuzzed without files.
pub fn split(text: &str, mode: PromptMode, separator: &regex::Regex) -> Vec<String> {
    match mode {
        PromptMode::Single => {
            let t = text.trim();
            if t.is_empty() {
                vec![]
            } else {
                vec![t.to_string()]
            }
        }
        PromptMode::Sequence => {
            let mut prompts = Vec::new();
            let mut current = String::new();
            for line in text.split_inclusive('\n') {
                let bare = line.trim_end_matches(['\n', '\r']);
                if separator.is_match(bare) {
                    push_trimmed(&mut prompts, &current);
                    current.clear();
                } else {
                    current.push_str(line);
                }
            }
            push_trimmed(&mut prompts, &current);
            prompts
        }
    }
}

fn push_trimmed(prompts: &mut Vec<String>, part: &str) {
    let t = part.trim();
    if !t.is_empty() {
        prompts.push(t.to_string());
    }
}

pub fn compile_separator(separator: &str) -> Result<regex::Regex> {
    crate::config::layers::compile_regex(separator, false)
        .map_err(|e| Error::Prompt(format!("invalid prompt separator regex {separator:?}: {e}")))
}

pub fn load(path: &Path, mode: PromptMode, separator: &regex::Regex) -> Result<PromptSet> {
    // Regular files only, capped, never blocking (issue 20.6): a FIFO or a link to
    // /dev/zero is refused with the path (exit 2) instead of freezing or exhausting the run.
    let file = match textfile::read(path) {
        Ok(f) => f,
        Err(e) if e.is_not_found() => {
            return Err(Error::Prompt(format!(
                "prompt file not found: {} (create it, or pass --prompt-file)",
                path.display()
            )));
        }
        Err(e) => return Err(Error::Prompt(format!("prompt file {e}"))),
    };
    let bytes = file.bytes;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        Error::Prompt(format!(
            "prompt file {} is not valid UTF-8 (invalid byte at offset {})",
            path.display(),
            e.valid_up_to()
        ))
    })?;
    if text.contains('\0') {
        return Err(Error::Prompt(format!(
            "prompt file {} contains a NUL byte; prompts must be text",
            path.display()
        )));
    }
    let prompts = split(text, mode, separator);
    if prompts.is_empty() {
        return Err(Error::Prompt(format!(
            "no prompts found in {}",
            path.display()
        )));
    }
    let mtime = file.metadata.modified().ok().map(|t| {
        chrono::DateTime::<chrono::Utc>::from(t)
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    });
    Ok(PromptSet {
        path: path.to_path_buf(),
        prompts,
        sha256: hex(&Sha256::digest(&bytes)),
        bytes: bytes.len() as u64,
        mtime,
    })
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sep() -> regex::Regex {
        compile_separator(r"^---\s*$").expect("default separator compiles")
    }

    #[test]
    fn single_mode_keeps_separators_inside_the_prompt() {
        let text = "one\n---\ntwo\n";
        assert_eq!(
            split(text, PromptMode::Single, &sep()),
            vec!["one\n---\ntwo"]
        );
    }

    #[test]
    fn sequence_mode_splits_on_separator_lines_with_trailing_space() {
        let text = "one\n---  \ntwo\n---\n\n---\nthree";
        assert_eq!(
            split(text, PromptMode::Sequence, &sep()),
            vec!["one", "two", "three"]
        );
    }

    #[test]
    fn four_dashes_are_not_a_separator() {
        let text = "one\n----\ntwo";
        assert_eq!(
            split(text, PromptMode::Sequence, &sep()),
            vec!["one\n----\ntwo"]
        );
    }

    #[test]
    fn crlf_separator_lines_split() {
        let text = "one\r\n---\r\ntwo\r\n";
        assert_eq!(
            split(text, PromptMode::Sequence, &sep()),
            vec!["one", "two"]
        );
    }

    #[test]
    fn blank_text_has_no_prompts() {
        assert!(split("  \n\n", PromptMode::Single, &sep()).is_empty());
        assert!(split("---\n---\n", PromptMode::Sequence, &sep()).is_empty());
    }

    #[test]
    fn load_reports_missing_empty_and_invalid_utf8() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("PROMPT.md");
        let err = load(&p, PromptMode::Single, &sep()).expect_err("missing");
        assert!(
            err.to_string().starts_with("prompt file not found: "),
            "{err}"
        );
        std::fs::write(&p, "  \n").expect("write");
        let err = load(&p, PromptMode::Single, &sep()).expect_err("empty");
        assert_eq!(
            err.to_string(),
            format!("no prompts found in {}", p.display())
        );
        std::fs::write(&p, b"ok \xff\xfe").expect("write");
        let err = load(&p, PromptMode::Single, &sep()).expect_err("utf8");
        assert!(
            err.to_string()
                .contains("is not valid UTF-8 (invalid byte at offset 3)"),
            "{err}"
        );
    }

    #[test]
    fn load_records_sha_bytes_and_mtime() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("PROMPT.md");
        std::fs::write(&p, "hello\n").expect("write");
        let set = load(&p, PromptMode::Single, &sep()).expect("load");
        assert_eq!(set.prompts, vec!["hello"]);
        assert_eq!(set.bytes, 6);
        assert_eq!(
            set.sha256,
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
        assert!(set.mtime.as_deref().is_some_and(|m| m.ends_with('Z')));
    }
}

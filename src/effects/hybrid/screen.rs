//! What a TUI's screen and transcript say, per TUI: its start-up dialogs, whether it is
//! working or waiting for input, and the record that closes a turn. Pure functions of text,
//! tested on captures recorded from the real CLIs (tests/fixtures/clis).

/// Which interactive TUI runs in the pane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tui {
    Claude,
    Codex,
}

impl Tui {
    pub fn name(self) -> &'static str {
        match self {
            Tui::Claude => "claude",
            Tui::Codex => "codex",
        }
    }

    /// A record that closes a turn and says it failed: claude's synthetic API-error record
    /// (`Not logged in`, a usage limit, an API error). `claude -p` exits 1 on the same
    /// failures, so a hybrid turn that ends on one is not a success either: the run's retry
    /// rules (rate limits, transient errors) still apply, anything else stops it.
    pub fn failed_turn(self, line: &str) -> bool {
        match self {
            Tui::Claude => {
                line.contains(r#""type":"assistant""#)
                    && line.contains(r#""isApiErrorMessage":true"#)
            }
            Tui::Codex => false,
        }
    }

    /// The transcript record that closes a turn.
    pub fn ends_turn(self, line: &str) -> bool {
        match self {
            // `system/turn_duration` closes every turn up to 2.1.197; from 2.1.332 a turn
            // that fails (a usage limit) ends with its synthetic API-error record alone.
            Tui::Claude => {
                (line.contains(r#""type":"system""#) && line.contains(r#""turn_duration""#))
                    || (line.contains(r#""type":"assistant""#)
                        && line.contains(r#""isApiErrorMessage":true"#))
            }
            Tui::Codex => {
                line.contains(r#""type":"event_msg""#)
                    && (line.contains(r#""type":"task_complete""#)
                        || line.contains(r#""type":"turn_aborted""#))
            }
        }
    }
}

/// What the pane shows.
#[derive(Clone, Debug, PartialEq)]
pub enum Screen {
    Ready,
    Busy,
    /// A screen the looper must not answer for the user.
    Blocked(String),
    /// codex offers an update; the reference answers "skip" (`2`, Enter), and so do we.
    UpdateOffer,
    /// claude (2.1.332, auto-continue off) asks what to do about a usage limit it hit: the
    /// looper owns the wait and the next prompt, so the dialog is dismissed (Escape leaves
    /// claude idle, with nothing scheduled).
    LimitOptions,
    Starting,
}

/// Classify a pane capture of the TUI: a start-up dialog, or its activity.
pub fn classify(tui: Tui, capture: &str) -> Screen {
    if limit_options(tui, capture) {
        return Screen::LimitOptions;
    }
    dialog(tui, capture).unwrap_or_else(|| activity(tui, capture))
}

/// claude's usage-limit dialog (`/rate-limit-options`).
fn limit_options(tui: Tui, capture: &str) -> bool {
    let lower = capture.to_lowercase();
    tui == Tui::Claude
        && lower.contains("what do you want to do?")
        && lower.contains("stop and wait for limit to reset")
}

/// A start-up dialog (folder trust, sign-in, API key approval, update offer), known by
/// the dialogs' own lines (recorded in tests/fixtures/clis). Only looked for until the
/// pane's first turn is under way: later, the screen shows the conversation.
pub fn dialog(tui: Tui, capture: &str) -> Option<Screen> {
    let lower = capture.to_lowercase();
    let has = |needle: &str| lower.contains(needle);
    let blocked = |why: &str| Some(Screen::Blocked(why.to_string()));
    match tui {
        Tui::Claude => {
            if has("yes, i trust this folder")
                || has("is this a project you created or one you trust")
                || has("do you trust the files in this folder")
            {
                // From 2.1.332 trust is per repository: a trusted folder above a git
                // repository (a nested repository, a worktree) no longer covers it.
                return blocked(
                    "claude is asking whether to trust this folder; open claude once in this directory and accept, or set hasTrustDialogAccepted for it in ~/.claude.json (claude 2.1.332 and later ask again for each git repository, even inside a trusted folder: trust the repository's top directory)",
                );
            }
            if has("detected a custom api key") && has("do you want to use this api key") {
                return blocked(
                    "claude is asking whether to use the API key in the environment; run claude once interactively to approve it",
                );
            }
            // A dialog this looper does not know (a newer claude's): said at once, in its
            // own words, instead of waiting for a ready screen that will not come.
            if has("enter to confirm") && has("esc to cancel") {
                return Some(Screen::Blocked(format!(
                    "claude shows a start-up dialog the looper does not answer; run claude once in this directory to answer it: {}",
                    excerpt(capture)
                )));
            }
        }
        Tui::Codex => {
            if (has("trust this folder?") && has("trust and continue"))
                || (has("trust") && has("directory") && has("press enter to continue"))
            {
                return blocked(
                    "codex is asking whether to trust this folder; run codex once in this directory and trust it, or add `[projects.\"<dir>\"] trust_level = \"trusted\"` to $CODEX_HOME/config.toml",
                );
            }
            if has("sign in with chatgpt") && (has("welcome to codex") || has("api key")) {
                return blocked(
                    "codex is not signed in; run `codex login` once (or configure a model provider with an env_key)",
                );
            }
            if lower.contains("update available") && lower.contains("skip") {
                return Some(Screen::UpdateOffer);
            }
        }
    }
    None
}

/// The first lines of a screen with words in them, joined, for a stop reason: no rules or
/// box drawing, no control characters, at most 300 characters.
fn excerpt(capture: &str) -> String {
    let text = capture
        .lines()
        .map(|l| l.trim())
        .filter(|l| l.chars().any(char::is_alphanumeric))
        .take(6)
        .collect::<Vec<_>>()
        .join(" | ");
    text.chars().filter(|c| !c.is_control()).take(300).collect()
}

/// Whether the TUI is working, waiting for input, or still starting; or asks about a
/// usage limit (a dialog that comes mid-run, after a failed turn).
pub fn activity(tui: Tui, capture: &str) -> Screen {
    if limit_options(tui, capture) {
        return Screen::LimitOptions;
    }
    if capture.to_lowercase().contains("esc to interrupt") {
        return Screen::Busy;
    }
    let prompt_line = |l: &str| match tui {
        Tui::Claude => matches!(l.trim_end(), "❯" | ">" | "> "),
        Tui::Codex => {
            let l = l.trim();
            l.starts_with("› ") || matches!(l, "›" | "❯" | "codex>")
        }
    };
    if capture.contains("? for shortcuts") || capture.lines().any(prompt_line) {
        return Screen::Ready;
    }
    Screen::Starting
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn screens_from_recorded_captures() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/clis/claude/");
        let read = |f: &str| std::fs::read_to_string(format!("{dir}{f}")).unwrap_or_default();
        assert_eq!(
            classify(Tui::Claude, &read("hybrid_pane_idle.txt")),
            Screen::Ready
        );
        assert_eq!(
            classify(Tui::Claude, &read("hybrid_pane_busy.txt")),
            Screen::Busy
        );
        assert!(matches!(
            classify(
                Tui::Claude,
                "Do you trust the files in this folder?\n❯ 1. Yes, proceed"
            ),
            Screen::Blocked(_)
        ));
        for f in ["hybrid_pane_trust.txt", "hybrid_pane_api_key.txt"] {
            assert!(
                matches!(classify(Tui::Claude, &read(f)), Screen::Blocked(_)),
                "{f}"
            );
        }
        assert!(matches!(
            classify(
                Tui::Claude,
                "Detected a custom API key in your environment\nDo you want to use this API key?"
            ),
            Screen::Blocked(_)
        ));
    }

    /// claude 2.1.332 (tests/fixtures/clis/claude/2.1.332): the full-screen renderer a
    /// fresh install starts with, the classic one a looper pane asks for, the trust dialog
    /// of a git repository nested in a trusted folder, and the usage-limit screens.
    #[test]
    fn claude_2_1_332_screens_from_recorded_captures() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/clis/claude/2.1.332/"
        );
        let read = |f: &str| std::fs::read_to_string(format!("{dir}{f}")).unwrap_or_default();
        for f in [
            "hybrid_pane_idle.txt",
            "hybrid_pane_idle_fullscreen.txt",
            "hybrid_pane_done_fullscreen.txt",
            "hybrid_pane_limit_options_escaped.txt",
        ] {
            assert_eq!(classify(Tui::Claude, &read(f)), Screen::Ready, "{f}");
        }
        assert_eq!(
            classify(Tui::Claude, &read("hybrid_pane_busy_fullscreen.txt")),
            Screen::Busy
        );
        assert!(matches!(
            classify(Tui::Claude, &read("hybrid_pane_nested_repo.txt")),
            Screen::Blocked(why) if why.contains("each git repository")
        ));
        // The same nested repository under 2.1.197: trusted through its parent.
        let older = read("../hybrid_pane_nested_repo.txt");
        assert!(!older.is_empty());
        assert_eq!(classify(Tui::Claude, &older), Screen::Ready);
        // A start-up dialog no recording knows yet stops the run at once, in its words.
        let unknown = "Something new\nDo you accept the new terms?\n❯ 1. Yes\n  2. No\n\nEnter to confirm · Esc to cancel\n";
        assert!(matches!(
            classify(Tui::Claude, unknown),
            Screen::Blocked(why) if why.contains("Do you accept the new terms? | ❯ 1. Yes")
        ));
        // With auto-continue off, a usage limit opens a dialog mid-run, on a later turn
        // too (where start-up dialogs are no longer looked for).
        let options = read("hybrid_pane_limit_options.txt");
        assert_eq!(activity(Tui::Claude, &options), Screen::LimitOptions);
        assert_eq!(classify(Tui::Claude, &options), Screen::LimitOptions);
        assert_eq!(activity(Tui::Codex, &options), Screen::Starting);
    }

    /// From 2.1.332 a turn that hits a usage limit writes no `turn_duration`: its
    /// synthetic API-error record is the last of the turn.
    #[test]
    fn a_claude_turn_that_failed_ends_on_its_api_error_record() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/clis/claude/2.1.332/"
        );
        for f in [
            "hybrid_transcript_usage_limit.jsonl",
            "hybrid_transcript_usage_limit_auto_continue.jsonl",
        ] {
            let t = std::fs::read_to_string(format!("{dir}{f}")).unwrap_or_default();
            assert!(!t.contains("turn_duration"), "{f}");
            let ends: Vec<&str> = t.lines().filter(|l| Tui::Claude.ends_turn(l)).collect();
            assert_eq!(ends.len(), 1, "{f}");
            assert!(ends[0].contains("You've hit your 5-hour limit"), "{f}");
        }
        // 2.1.197 writes both for a failed turn: still one turn per turn_duration, and
        // the error record ends it no later.
        let old = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/clis/claude/hybrid_transcript.jsonl"
        ))
        .unwrap_or_default();
        let closing = old.lines().filter(|l| Tui::Claude.ends_turn(l)).count();
        let durations = old.lines().filter(|l| l.contains("turn_duration")).count();
        assert_eq!(closing, durations + 1, "four turns, one of them a 429");
    }

    /// A turn that ends on claude's API-error record failed (`claude -p` exits 1 there); one
    /// that ends on `turn_duration` did not; codex's closing records never say so.
    #[test]
    fn only_claudes_api_error_record_ends_a_turn_as_failed() {
        let read = |f: &str| {
            std::fs::read_to_string(format!(
                "{}/tests/fixtures/clis/{f}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap_or_default()
        };
        let limit = read("claude/2.1.332/hybrid_transcript_usage_limit.jsonl");
        let ends: Vec<&str> = limit.lines().filter(|l| Tui::Claude.ends_turn(l)).collect();
        assert!(!ends.is_empty());
        assert!(ends.iter().all(|l| Tui::Claude.failed_turn(l)));
        let old = read("claude/hybrid_transcript.jsonl");
        let (failed, fine): (Vec<&str>, Vec<&str>) = old
            .lines()
            .filter(|l| Tui::Claude.ends_turn(l))
            .partition(|l| Tui::Claude.failed_turn(l));
        assert_eq!(failed.len(), 1, "the 429 turn");
        assert!(fine.iter().all(|l| l.contains("turn_duration")), "{fine:?}");
        let rollout = read("codex/hybrid_rollout.jsonl");
        assert!(!rollout.lines().any(|l| Tui::Codex.failed_turn(l)));
    }

    #[test]
    fn codex_screens_from_recorded_captures() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/clis/codex/");
        let read = |f: &str| std::fs::read_to_string(format!("{dir}{f}")).unwrap_or_default();
        assert_eq!(
            classify(Tui::Codex, &read("hybrid_pane_idle.txt")),
            Screen::Ready
        );
        assert_eq!(
            classify(Tui::Codex, &read("hybrid_pane_done.txt")),
            Screen::Ready
        );
        assert_eq!(
            classify(Tui::Codex, &read("hybrid_pane_busy.txt")),
            Screen::Busy
        );
        assert!(matches!(
            classify(Tui::Codex, &read("hybrid_pane_trust.txt")),
            Screen::Blocked(why) if why.contains("trust_level")
        ));
        assert!(matches!(
            classify(Tui::Codex, &read("hybrid_pane_sign_in.txt")),
            Screen::Blocked(why) if why.contains("codex login")
        ));
        assert_eq!(
            classify(
                Tui::Codex,
                "Update available! 0.169.0 -> 0.170.0\n1. Update now\n2. Skip\nPress enter to continue"
            ),
            Screen::UpdateOffer
        );
        assert_eq!(classify(Tui::Codex, ""), Screen::Starting);
        // Dialogs are known by their own lines, not by words a reply may use.
        let reply = "• I trust these files in this folder; the directory is fine.\n› Ask Codex to do anything";
        assert_eq!(dialog(Tui::Claude, reply), None);
        assert_eq!(dialog(Tui::Codex, reply), None);
        assert_eq!(activity(Tui::Claude, reply), Screen::Starting);
        assert_eq!(activity(Tui::Codex, reply), Screen::Ready);
    }

    #[test]
    fn turns_end_on_each_tuis_closing_record() {
        let rollout = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/clis/codex/hybrid_rollout.jsonl"
        ))
        .unwrap_or_default();
        let ends = rollout.lines().filter(|l| Tui::Codex.ends_turn(l)).count();
        assert_eq!(ends, 4, "four turns, the 429 one included");
        assert!(!Tui::Claude.ends_turn(rollout.lines().last().unwrap_or("")));
        let claude = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/clis/claude/hybrid_transcript.jsonl"
        ))
        .unwrap_or_default();
        assert!(claude.lines().any(|l| Tui::Claude.ends_turn(l)));
        assert!(!claude.lines().any(|l| Tui::Codex.ends_turn(l)));
    }
}

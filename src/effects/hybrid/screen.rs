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

    /// The transcript record that closes a turn.
    pub fn ends_turn(self, line: &str) -> bool {
        match self {
            Tui::Claude => {
                line.contains(r#""type":"system""#) && line.contains(r#""turn_duration""#)
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
    Starting,
}

/// Classify a pane capture of the TUI: a start-up dialog, or its activity.
pub fn classify(tui: Tui, capture: &str) -> Screen {
    dialog(tui, capture).unwrap_or_else(|| activity(tui, capture))
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
                return blocked(
                    "claude is asking whether to trust this folder; open claude once in this directory and accept, or set hasTrustDialogAccepted for it in ~/.claude.json",
                );
            }
            if has("detected a custom api key") && has("do you want to use this api key") {
                return blocked(
                    "claude is asking whether to use the API key in the environment; run claude once interactively to approve it",
                );
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

/// Whether the TUI is working, waiting for input, or still starting.
pub fn activity(tui: Tui, capture: &str) -> Screen {
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

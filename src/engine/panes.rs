//! The hybrid pane policy (D26): which pane a turn runs in. A pane serves one agent session;
//! a new session gets a fresh pane, a pane closed between turns is reopened on the same
//! session, and the pane is closed at the run's end unless it is to be kept. Pure: the
//! driver observes the pane (is it still there?) and carries the plan out.

/// What is known of the current pane, if there is one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PaneFacts<'a> {
    /// The session the pane runs; empty for a new codex session not yet named.
    pub session_id: &'a str,
    /// tmux no longer has the pane (closed by hand, or crashed while idle).
    pub gone: bool,
}

/// How to get a pane for the next turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PanePlan {
    /// The current pane serves this session: paste into it.
    Reuse,
    /// A new session: close the current pane (recorded as `hybrid_session_reset`), open one.
    Replace,
    /// The pane went away between turns: open one on the same session (`--resume`).
    Reopen,
    /// No pane yet: open one.
    Open,
}

impl PanePlan {
    /// Whether the plan opens a pane.
    pub fn opens(self) -> bool {
        self != PanePlan::Reuse
    }
}

/// Decide for a turn of `session_id` (empty: a new session whose id the agent will report).
pub fn plan(current: Option<PaneFacts<'_>>, session_id: &str) -> PanePlan {
    match current {
        None => PanePlan::Open,
        Some(p) if session_id.is_empty() || p.session_id != session_id => PanePlan::Replace,
        Some(p) if p.gone => PanePlan::Reopen,
        Some(_) => PanePlan::Reuse,
    }
}

/// Whether the pane is closed when the run ends.
pub fn close_at_end(keep_agent_pane: bool) -> bool {
    !keep_agent_pane
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pane(session_id: &str, gone: bool) -> Option<PaneFacts<'_>> {
        Some(PaneFacts { session_id, gone })
    }

    #[test]
    fn each_case_of_the_pane_policy() {
        let cases = [
            (None, "s1", PanePlan::Open),
            (None, "", PanePlan::Open),
            (pane("s1", false), "s1", PanePlan::Reuse),
            (pane("s1", true), "s1", PanePlan::Reopen),
            (pane("s1", false), "s2", PanePlan::Replace),
            // A new session of a gone pane is a new session all the same.
            (pane("s1", true), "s2", PanePlan::Replace),
            // A codex session the looper cannot name in advance is always new.
            (pane("s1", false), "", PanePlan::Replace),
            (pane("", false), "", PanePlan::Replace),
        ];
        for (current, session, want) in cases {
            assert_eq!(plan(current, session), want, "{current:?} for {session:?}");
        }
        assert!(close_at_end(false));
        assert!(!close_at_end(true));
        assert!(!PanePlan::Reuse.opens() && PanePlan::Reopen.opens());
    }
}

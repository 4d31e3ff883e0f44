//! What becomes of a looper-made worktree when its run ends (issue 16, D30): kept or removed
//! under `worktree_cleanup`, decided from a few facts about it. Pure, so the rules that must
//! never lose work are table-tested here; `effects::worktree` gathers the facts and acts.

use serde::{Deserialize, Serialize};

/// `[looper].worktree_cleanup` / `--worktree-cleanup`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CleanupPolicy {
    /// Keep the worktree when its branch has new commits or it is dirty; else remove it.
    #[default]
    Auto,
    /// Always keep it.
    Keep,
    /// Remove it, unless that would lose work (dirty, or commits no other branch has).
    Remove,
}

impl CleanupPolicy {
    pub const WORDS: &'static [&'static str] = &["auto", "keep", "remove"];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "keep" => Some(Self::Keep),
            "remove" => Some(Self::Remove),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Keep => "keep",
            Self::Remove => "remove",
        }
    }
}

/// What is known about a worktree at the end of its run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// Paths `git status` shows (changes and untracked files; ignored files do not count,
    /// as for `git worktree remove`).
    pub dirty_paths: u64,
    /// Commits on the branch that its base does not have.
    pub commits_ahead: u64,
    /// Of those, the commits no other branch (local or remote-tracking) contains: removing
    /// the branch would lose them.
    pub unmerged_commits: u64,
    /// The agent's pane was left open in the worktree (`keep_agent_pane`).
    pub pane_kept: bool,
}

/// Why a worktree is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeepReason {
    Dirty(u64),
    Unmerged(u64),
    NewCommits(u64),
    PaneKept,
    /// `worktree_cleanup = "keep"`.
    Asked,
    /// The facts could not be read: when in doubt, keep.
    Unknown(String),
}

impl KeepReason {
    pub fn text(&self) -> String {
        let plural = |n: u64, one: &str, many: &str| {
            if n == 1 {
                format!("1 {one}")
            } else {
                format!("{n} {many}")
            }
        };
        match self {
            KeepReason::Dirty(n) => format!(
                "it has {} (never removed while dirty)",
                plural(*n, "uncommitted change", "uncommitted changes")
            ),
            KeepReason::Unmerged(n) => format!(
                "its branch has {} no other branch contains",
                plural(*n, "commit", "commits")
            ),
            KeepReason::NewCommits(n) => format!(
                "its branch has {} since its base",
                plural(*n, "new commit", "new commits")
            ),
            KeepReason::PaneKept => "the agent's pane was left open in it".into(),
            KeepReason::Asked => "worktree_cleanup is \"keep\"".into(),
            KeepReason::Unknown(why) => format!("its state could not be read ({why})"),
        }
    }
}

/// The end of a worktree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Remove the worktree and its branch.
    Remove,
    /// Keep both, for these reasons (the first is the main one).
    Keep(Vec<KeepReason>),
}

/// Decide under `policy`. Whatever the policy, a dirty worktree and a branch with commits no
/// other branch contains are never removed (D30); an open agent pane keeps its directory.
pub fn decide(policy: CleanupPolicy, facts: &Facts) -> Decision {
    let mut keep = Vec::new();
    if facts.dirty_paths > 0 {
        keep.push(KeepReason::Dirty(facts.dirty_paths));
    }
    if facts.unmerged_commits > 0 {
        keep.push(KeepReason::Unmerged(facts.unmerged_commits));
    }
    if facts.pane_kept {
        keep.push(KeepReason::PaneKept);
    }
    match policy {
        CleanupPolicy::Keep => keep.push(KeepReason::Asked),
        CleanupPolicy::Auto if facts.commits_ahead > 0 && facts.unmerged_commits == 0 => {
            keep.push(KeepReason::NewCommits(facts.commits_ahead));
        }
        CleanupPolicy::Auto | CleanupPolicy::Remove => {}
    }
    if keep.is_empty() {
        Decision::Remove
    } else {
        Decision::Keep(keep)
    }
}

/// All the reasons in one line: `kept: <reason>; <reason>`.
pub fn reasons_text(reasons: &[KeepReason]) -> String {
    reasons
        .iter()
        .map(KeepReason::text)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(dirty: u64, ahead: u64, unmerged: u64) -> Facts {
        Facts {
            dirty_paths: dirty,
            commits_ahead: ahead,
            unmerged_commits: unmerged,
            pane_kept: false,
        }
    }

    #[test]
    fn the_rules_never_lose_work_whatever_the_policy() {
        use CleanupPolicy::*;
        use Decision::Remove as R;
        let keep = |r: Vec<KeepReason>| Decision::Keep(r);
        let table = [
            // policy, dirty, ahead, unmerged -> decision
            (Auto, 0, 0, 0, R),
            (Auto, 2, 0, 0, keep(vec![KeepReason::Dirty(2)])),
            (Auto, 0, 3, 3, keep(vec![KeepReason::Unmerged(3)])),
            // merged elsewhere, but auto keeps a branch that did something
            (Auto, 0, 1, 0, keep(vec![KeepReason::NewCommits(1)])),
            (Remove, 0, 0, 0, R),
            (Remove, 0, 1, 0, R),
            (Remove, 0, 2, 1, keep(vec![KeepReason::Unmerged(1)])),
            (Remove, 1, 0, 0, keep(vec![KeepReason::Dirty(1)])),
            (Keep, 0, 0, 0, keep(vec![KeepReason::Asked])),
            (
                Keep,
                1,
                1,
                1,
                keep(vec![
                    KeepReason::Dirty(1),
                    KeepReason::Unmerged(1),
                    KeepReason::Asked,
                ]),
            ),
        ];
        for (policy, dirty, ahead, unmerged, want) in table {
            assert_eq!(
                decide(policy, &facts(dirty, ahead, unmerged)),
                want,
                "{policy:?} dirty {dirty} ahead {ahead} unmerged {unmerged}"
            );
        }
    }

    #[test]
    fn an_open_pane_keeps_its_directory() {
        let f = Facts {
            pane_kept: true,
            ..Facts::default()
        };
        assert_eq!(
            decide(CleanupPolicy::Remove, &f),
            Decision::Keep(vec![KeepReason::PaneKept])
        );
    }

    #[test]
    fn reasons_read_as_a_sentence() {
        let text = reasons_text(&[KeepReason::Dirty(1), KeepReason::Unmerged(2)]);
        assert_eq!(
            text,
            "it has 1 uncommitted change (never removed while dirty); its branch has 2 commits no other branch contains"
        );
    }
}

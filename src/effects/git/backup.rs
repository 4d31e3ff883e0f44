//! Backup branches (D19): their names, making one at the start of a loop (at HEAD or at a
//! dirty snapshot), and pruning the looper's own old ones in this worktree's namespace.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use git2::{BranchType, ErrorCode, Reference, Repository};
use serde::{Deserialize, Serialize};

use super::snapshot::{keep_submodule_snapshots, snapshot_commit};
use super::{GitError, MAX_NAME_SUFFIX, MAX_SUBMODULE_DEPTH, Workspace, git_err};

/// What a backup produced, so the caller can record the branch in events (D19).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    /// Short branch name (without `refs/heads/`), as the user would type it.
    pub branch: String,
    /// Hex oid the branch points at.
    pub commit: String,
    /// True when the branch points at a new snapshot commit rather than at HEAD itself.
    pub snapshot: bool,
}

/// The backup branch name for a loop, exposed so configuration checks can validate the prefix
/// before anything runs (D6) with exactly the rule that backups use.
pub fn backup_branch_name(
    prefix: &str,
    stamp: DateTime<Utc>,
    loop_number: u64,
) -> Result<String, GitError> {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return Err(GitError::EmptyBackupPrefix);
    }
    let name = format!(
        "{prefix}/{}-loop-{loop_number:04}",
        stamp.format("%Y%m%dT%H%M%SZ")
    );
    if !Reference::is_valid_name(&format!("refs/heads/{name}")) {
        return Err(GitError::InvalidBackupName { name });
    }
    Ok(name)
}

/// The part of a backup name that says which worktree made it: `@<worktree name>` after the
/// loop number for a linked worktree (`git worktree list` shows the name), nothing for the main
/// worktree, so its names keep the manual's shape exactly. Characters a branch name cannot
/// carry, and the `@` that separates the tag, become `_`.
pub(super) fn worktree_tag(name: &str) -> String {
    let tag: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    // A component may not start with `.` nor end with `.lock` or `.` (git's ref rules).
    let tag = tag.trim_start_matches('.').trim_end_matches('.');
    let tag = tag.strip_suffix(".lock").unwrap_or(tag);
    if tag.is_empty() {
        "_".into()
    } else {
        tag.to_owned()
    }
}

/// What a backup name made by the looper says: `<stamp>-loop-<NNNN>[-<k>][@<worktree>]` under
/// the prefix (`k` is the same-second collision suffix). Anything else under the prefix is a
/// user's branch and is never pruned (issue 20.2).
#[derive(Debug, Clone, PartialEq, Eq)]
struct BackupName<'a> {
    /// `YYYYMMDDTHHMMSSZ`: fixed width, so string order is time order.
    stamp: &'a str,
    loop_number: u64,
    suffix: u32,
    worktree: Option<&'a str>,
}

impl<'a> BackupName<'a> {
    fn parse(rest: &'a str) -> Option<Self> {
        let (body, worktree) = match rest.split_once('@') {
            Some((body, tag)) if !tag.is_empty() && worktree_tag(tag) == tag => (body, Some(tag)),
            Some(_) => return None,
            None => (rest, None),
        };
        let stamp = body.get(..16)?;
        let b = stamp.as_bytes();
        let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
        if !(digits(0..8) && b[8] == b'T' && digits(9..15) && b[15] == b'Z') {
            return None;
        }
        let tail = body[16..].strip_prefix("-loop-")?;
        let (number, suffix) = match tail.split_once('-') {
            Some((n, k)) => (n, Some(k)),
            None => (tail, None),
        };
        let all_digits = |t: &str| !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit());
        if number.len() < 4 || !all_digits(number) {
            return None;
        }
        let suffix = match suffix {
            None => 1,
            Some(k) if all_digits(k) && !k.starts_with('0') => {
                k.parse().ok().filter(|k| *k >= 2)?
            }
            Some(_) => return None,
        };
        Some(BackupName {
            stamp,
            loop_number: number.parse().ok()?,
            suffix,
            worktree,
        })
    }

    /// Age order: stamp, then loop number, then the collision suffix.
    fn age(&self) -> (&'a str, u64, u32) {
        (self.stamp, self.loop_number, self.suffix)
    }
}

impl Workspace {
    /// D19 backup at the start of a loop. Plain backups point at HEAD; `dirty` ones capture the
    /// uncommitted worktree too, in a commit the user can check out, without disturbing the
    /// index or the files the agent is working on.
    pub fn create_backup(
        &self,
        prefix: &str,
        stamp: DateTime<Utc>,
        loop_number: u64,
        dirty: bool,
        excluded: &[PathBuf],
    ) -> Result<Backup, GitError> {
        let base = backup_branch_name(prefix, stamp, loop_number)?;
        let head = self.head_commit()?;
        let mut submodules = Vec::new();
        let (target, snapshot) = if dirty {
            match snapshot_commit(
                &self.repo,
                &self.workdir,
                &self.canonical_workdir,
                &head,
                stamp,
                loop_number,
                excluded,
                0,
                &mut submodules,
            )? {
                Some(oid) => {
                    let commit = self
                        .repo
                        .find_commit(oid)
                        .map_err(git_err("cannot read the snapshot commit in", &self.workdir))?;
                    (commit, true)
                }
                None => (head, false),
            }
        } else {
            (head, false)
        };
        let tag = self
            .worktree
            .as_deref()
            .map(|t| format!("@{t}"))
            .unwrap_or_default();
        for attempt in 1..=MAX_NAME_SUFFIX {
            let name = if attempt == 1 {
                format!("{base}{tag}")
            } else {
                format!("{base}-{attempt}{tag}")
            };
            match self.repo.branch(&name, &target, false) {
                Ok(_) => {
                    keep_submodule_snapshots(&submodules, &name)?;
                    return Ok(Backup {
                        branch: name,
                        commit: target.id().to_string(),
                        snapshot,
                    });
                }
                // Only an existing branch of that exact name means "taken, try the next suffix";
                // other conflicts (a branch named like the prefix itself) would fail for every
                // suffix, so they are reported at once.
                Err(err)
                    if err.code() == ErrorCode::Exists
                        && self
                            .repo
                            .find_reference(&format!("refs/heads/{name}"))
                            .is_ok() => {}
                Err(source) => {
                    if let Some(blocking) = self.blocking_branch(&name) {
                        return Err(GitError::PrefixIsBranch {
                            name,
                            blocking,
                            workdir: self.workdir.clone(),
                        });
                    }
                    return Err(GitError::Backup {
                        name,
                        workdir: self.workdir.clone(),
                        source,
                    });
                }
            }
        }
        Err(GitError::BackupNameTaken {
            name: base,
            workdir: self.workdir.clone(),
        })
    }

    /// D19 pruning after each backup. Only branches the looper made in THIS worktree count:
    /// names of the exact shape `<prefix>/<stamp>-loop-<NNNN>[-k]` (with `@<worktree>` in a
    /// linked worktree), so a user's `<prefix>/1.0-hotfix` or `<prefix>/wip`, neighbouring
    /// namespaces (`<prefix>-old/...`), a branch named like the prefix and another worktree's
    /// backups all survive (issue 20.2). They are ordered by stamp, then loop number, then
    /// suffix; the newest `keep` stay. A branch checked out in any worktree is kept: deleting
    /// it would break that worktree, and git refuses anyway.
    pub fn prune_backups(&self, prefix: &str, keep: usize) -> Result<Vec<String>, GitError> {
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() {
            return Err(GitError::EmptyBackupPrefix);
        }
        if keep == 0 {
            return Ok(Vec::new());
        }
        let namespace = format!("refs/heads/{prefix}/");
        let refs = self
            .repo
            .references_glob(&format!("{namespace}*"))
            .map_err(git_err("cannot list the branches of", &self.workdir))?;
        let mut ours: Vec<(String, (String, u64, u32))> = Vec::new();
        for reference in refs {
            let reference =
                reference.map_err(git_err("cannot list the branches of", &self.workdir))?;
            let Ok(name) = std::str::from_utf8(reference.name_bytes()) else {
                continue;
            };
            let Some(rest) = name.strip_prefix(&namespace) else {
                continue;
            };
            if let Some(parsed) = BackupName::parse(rest)
                && parsed.worktree == self.worktree.as_deref()
            {
                let (stamp, number, suffix) = parsed.age();
                ours.push((
                    name["refs/heads/".len()..].to_owned(),
                    (stamp.to_owned(), number, suffix),
                ));
            }
        }
        ours.sort_by(|a, b| a.1.cmp(&b.1));
        let excess = ours.len().saturating_sub(keep);
        let checked_out = self.checked_out_branches();
        let mut deleted = Vec::new();
        for (name, _) in ours.into_iter().take(excess) {
            if checked_out.contains(&format!("refs/heads/{name}")) {
                continue;
            }
            let mut branch = self
                .repo
                .find_branch(&name, BranchType::Local)
                .map_err(git_err("cannot find old backup branch in", &self.workdir))?;
            branch
                .delete()
                .map_err(git_err("cannot delete old backup branch in", &self.workdir))?;
            prune_in_submodules(&self.repo, &name, 0);
            deleted.push(name);
        }
        Ok(deleted)
    }

    /// The existing branch, if any, whose name is a leading part of `name` (`a` or `a/b` for
    /// `a/b/c`), which is what makes creating `name` impossible.
    fn blocking_branch(&self, name: &str) -> Option<String> {
        name.match_indices('/')
            .map(|(at, _)| &name[..at])
            .find(|ancestor| {
                self.repo
                    .find_reference(&format!("refs/heads/{ancestor}"))
                    .is_ok()
            })
            .map(str::to_owned)
    }

    /// Symbolic HEAD targets of every worktree of this repository, read straight from the HEAD
    /// files (a handful of small reads) so pruning never deletes a branch someone has checked out.
    fn checked_out_branches(&self) -> Vec<String> {
        let common = self.repo.commondir().to_path_buf();
        let mut heads = vec![self.git_dir.join("HEAD"), common.join("HEAD")];
        if let Ok(names) = self.repo.worktrees() {
            for name in names.iter_bytes() {
                let name = std::ffi::OsStr::from_bytes(name);
                heads.push(common.join("worktrees").join(name).join("HEAD"));
            }
        }
        heads
            .iter()
            .filter_map(|path| fs::read_to_string(path).ok())
            .filter_map(|text| text.strip_prefix("ref: ").map(|r| r.trim_end().to_owned()))
            .collect()
    }
}

/// Deletes the branch `name` (a pruned backup) in every checked-out submodule, recursively:
/// it kept that backup's submodule snapshot alive. Best effort: a branch that is checked out
/// there, or a submodule that cannot be opened, keeps its branch.
fn prune_in_submodules(repo: &Repository, name: &str, depth: usize) {
    if depth >= MAX_SUBMODULE_DEPTH {
        return;
    }
    let Ok(submodules) = repo.submodules() else {
        return;
    };
    for sm in submodules {
        let Ok(sub) = sm.open() else { continue };
        if let Ok(mut branch) = sub.find_branch(name, BranchType::Local) {
            let _ = branch.delete();
        }
        prune_in_submodules(&sub, name, depth + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::effects::git::tests::{TestRepo, stamp};
    use tempfile::TempDir;

    #[test]
    fn backup_branch_at_head_with_suffix_on_collision() {
        let repo = TestRepo::new();
        let ws = repo.open();
        assert_eq!(ws.require_head().expect("head").to_string(), repo.head());
        let b = ws
            .create_backup("looper-backup//", stamp(), 3, false, &[])
            .expect("backup");
        assert_eq!(b.branch, "looper-backup/20260102T030405Z-loop-0003");
        assert_eq!(b.commit, repo.head());
        assert!(!b.snapshot);
        let on_disk = repo.git(&[
            "rev-parse",
            "refs/heads/looper-backup/20260102T030405Z-loop-0003",
        ]);
        assert_eq!(on_disk.trim(), repo.head());
        // Two runs in the same second.
        let b2 = ws
            .create_backup("looper-backup", stamp(), 3, false, &[])
            .expect("backup");
        assert_eq!(b2.branch, "looper-backup/20260102T030405Z-loop-0003-2");
        let b3 = ws
            .create_backup("looper-backup", stamp(), 3, false, &[])
            .expect("backup");
        assert_eq!(b3.branch, "looper-backup/20260102T030405Z-loop-0003-3");
        // A dirty backup of a clean worktree is HEAD itself.
        let clean = ws
            .create_backup("looper-backup", stamp(), 4, true, &[])
            .expect("backup");
        assert_eq!(clean.commit, repo.head());
        assert!(!clean.snapshot);
    }

    #[test]
    fn backup_name_validation() {
        assert!(matches!(
            backup_branch_name("", stamp(), 1),
            Err(GitError::EmptyBackupPrefix)
        ));
        let err = backup_branch_name("///", stamp(), 1).expect_err("empty");
        assert_eq!(err.to_string(), "backup_prefix must not be empty");
        let err = backup_branch_name("bad prefix", stamp(), 1).expect_err("space");
        assert!(matches!(err, GitError::InvalidBackupName { .. }), "{err:?}");
        assert!(err.to_string().contains("bad prefix/"), "{err}");
        assert_eq!(
            backup_branch_name("a/b", stamp(), 12345).expect("name"),
            "a/b/20260102T030405Z-loop-12345"
        );
    }

    #[test]
    fn backup_on_detached_head() {
        let repo = TestRepo::new();
        let first = repo.head();
        repo.write("c.txt", "gamma\n");
        repo.commit_all("second");
        repo.git(&["checkout", "-q", "--detach", &first]);
        repo.write("a.txt", "dirty but not captured by a plain backup\n");
        let ws = repo.open();
        let b = ws
            .create_backup("looper-backup", stamp(), 1, false, &[])
            .expect("backup");
        assert_eq!(b.commit, first);
    }

    #[test]
    fn backup_prefix_clashing_with_a_branch_fails_clearly() {
        let repo = TestRepo::new();
        repo.git(&["branch", "looper-backup"]);
        let ws = repo.open();
        let err = ws
            .create_backup("looper-backup", stamp(), 1, false, &[])
            .expect_err("d/f conflict");
        let msg = err.to_string();
        assert!(
            msg.contains("looper-backup/20260102T030405Z-loop-0001"),
            "{msg}"
        );
        assert!(matches!(err, GitError::PrefixIsBranch { .. }), "{err:?}");
        assert!(
            msg.contains("a branch named looper-backup already exists"),
            "{msg}"
        );
        // Pruning leaves the branch named like the prefix alone.
        assert!(
            ws.prune_backups("looper-backup", 1)
                .expect("prune")
                .is_empty()
        );
        repo.git(&["rev-parse", "--verify", "refs/heads/looper-backup"]);
    }

    /// Local branch names as git itself lists them, sorted.
    fn branches(repo: &TestRepo) -> Vec<String> {
        repo.git(&["for-each-ref", "--format=%(refname:short)", "refs/heads"])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn prune_keeps_newest_inside_exact_namespace() {
        let repo = TestRepo::new();
        for name in [
            "looper-backup/20260101T000001Z-loop-0001",
            "looper-backup/20260101T000002Z-loop-0002",
            "looper-backup/20260101T000003Z-loop-0003",
            "looper-backup/20260101T000004Z-loop-0004",
            "looper-backup/20260101T000004Z-loop-0004-2",
            "looper-backup-old/20200101T000000Z-loop-0001",
            "looper-backup-old/20200101T000000Z-loop-0002",
            "looper-backupx",
        ] {
            repo.git(&["branch", name]);
        }
        let ws = repo.open();
        assert!(
            ws.prune_backups("looper-backup", 0)
                .expect("prune")
                .is_empty()
        );
        let deleted = ws.prune_backups("looper-backup/", 2).expect("prune");
        assert_eq!(
            deleted,
            [
                "looper-backup/20260101T000001Z-loop-0001",
                "looper-backup/20260101T000002Z-loop-0002",
                "looper-backup/20260101T000003Z-loop-0003",
            ]
        );
        assert_eq!(
            branches(&repo),
            [
                "looper-backup-old/20200101T000000Z-loop-0001",
                "looper-backup-old/20200101T000000Z-loop-0002",
                "looper-backup/20260101T000004Z-loop-0004",
                "looper-backup/20260101T000004Z-loop-0004-2",
                "looper-backupx",
                "main",
            ]
        );
    }

    #[test]
    fn backup_names_are_parsed_strictly() {
        let p = BackupName::parse;
        assert_eq!(
            p("20260101T000001Z-loop-0001"),
            Some(BackupName {
                stamp: "20260101T000001Z",
                loop_number: 1,
                suffix: 1,
                worktree: None
            })
        );
        assert_eq!(
            p("20260101T000001Z-loop-12345-3@feat_x").map(|b| (
                b.loop_number,
                b.suffix,
                b.worktree
            )),
            Some((12345, 3, Some("feat_x")))
        );
        for user in [
            "1.0-hotfix",
            "wip",
            "zzz",
            "20260101T000001Z",
            "20260101T000001Z-loop-1",
            "20260101T000001Z-loop-0001-",
            "20260101T000001Z-loop-0001-1",
            "20260101T000001Z-loop-0001-02",
            "20260101T000001Z-loop-0001-x",
            "20260101T000001Z-loop-0001@",
            "20260101T000001Z-loop-0001@a b",
            "20260101T000001Z-loop-0001.bak",
            "2026010XT000001Z-loop-0001",
            "20260101T000001Z-loop-0001/x",
        ] {
            assert_eq!(p(user), None, "{user}");
        }
        assert_eq!(worktree_tag("my tree@{1}"), "my_tree__1_");
        assert_eq!(worktree_tag(".x.lock"), "x");
    }

    #[test]
    fn prune_never_touches_a_users_branches_or_another_worktrees_backups() {
        let repo = TestRepo::new();
        let users = [
            "looper-backup/1.0-hotfix",
            "looper-backup/wip",
            "looper-backup/zzz-notes",
            "looper-backup/20260101T000000Z-loop-0001-final",
        ];
        let others = [
            "looper-backup/20250101T000000Z-loop-0001@other",
            "looper-backup/20250101T000001Z-loop-0002@other",
        ];
        let ours = [
            "looper-backup/20260101T000009Z-loop-0001",
            "looper-backup/20260101T000009Z-loop-0002",
            "looper-backup/20260101T000009Z-loop-0002-2",
            "looper-backup/20260101T000010Z-loop-0001",
        ];
        for name in users.iter().chain(&others).chain(&ours) {
            repo.git(&["branch", name]);
        }
        let ws = repo.open();
        // Age order, not name order: loop-0002-2 is newer than loop-0002.
        let deleted = ws.prune_backups("looper-backup", 2).expect("prune");
        assert_eq!(deleted, &ours[..2]);
        let left = branches(&repo);
        for name in users.iter().chain(&others).chain(&ours[2..]) {
            assert!(
                left.contains(&name.to_string()),
                "{name} was deleted: {left:?}"
            );
        }
        // A new backup is never pruned at once because a user's name sorts after it.
        let b = ws
            .create_backup("looper-backup", stamp(), 1, false, &[])
            .expect("backup");
        assert!(
            ws.prune_backups("looper-backup", 3)
                .expect("prune")
                .is_empty()
        );
        assert!(branches(&repo).contains(&b.branch));
    }

    #[test]
    fn linked_worktrees_name_and_prune_their_own_backups() {
        let repo = TestRepo::new();
        let linked = TempDir::new().expect("tempdir");
        let wt = linked.path().join("feature tree");
        repo.git(&[
            "worktree",
            "add",
            "-q",
            "-b",
            "feature",
            &wt.display().to_string(),
        ]);
        let main = repo.open();
        let side = Workspace::open(&wt).expect("open linked worktree");
        let mut main_made = Vec::new();
        let mut side_made = Vec::new();
        for n in 1..=3 {
            main_made.push(
                main.create_backup("looper-backup", stamp(), n, false, &[])
                    .expect("backup")
                    .branch,
            );
            main.prune_backups("looper-backup", 2).expect("prune");
            side_made.push(
                side.create_backup("looper-backup", stamp(), n, false, &[])
                    .expect("backup")
                    .branch,
            );
            side.prune_backups("looper-backup", 2).expect("prune");
        }
        assert_eq!(main_made[0], "looper-backup/20260102T030405Z-loop-0001");
        assert_eq!(
            side_made[0],
            "looper-backup/20260102T030405Z-loop-0001@feature-tree"
        );
        let left = branches(&repo);
        let backups: Vec<&String> = left
            .iter()
            .filter(|b| b.starts_with("looper-backup/"))
            .collect();
        assert_eq!(
            backups,
            [&main_made[1], &side_made[1], &main_made[2], &side_made[2]],
            "{left:?}"
        );
    }

    #[test]
    fn prune_keeps_a_checked_out_backup() {
        let repo = TestRepo::new();
        for name in [
            "lb/20260101T000001Z-loop-0001",
            "lb/20260101T000002Z-loop-0002",
        ] {
            repo.git(&["branch", name]);
        }
        repo.git(&["checkout", "-q", "lb/20260101T000001Z-loop-0001"]);
        let ws = repo.open();
        let b = ws
            .create_backup("lb", stamp(), 3, false, &[])
            .expect("backup");
        let deleted = ws.prune_backups("lb", 1).expect("prune");
        assert_eq!(deleted, ["lb/20260101T000002Z-loop-0002"]);
        let left = branches(&repo);
        assert!(left.contains(&"lb/20260101T000001Z-loop-0001".to_owned()));
        assert!(left.contains(&b.branch));
    }
}

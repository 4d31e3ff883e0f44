//! Worktrees on real repositories made with the git CLI, checked with the git CLI.

use super::*;
use crate::engine::worktree::KeepReason;
use std::process::Command;

fn git_in(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_OPTIONAL_LOCKS", "0")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A repository with two commits on `main`; the project does not ignore `.agent-looper/`.
struct Repo {
    tmp: tempfile::TempDir,
}

impl Repo {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = Repo { tmp };
        r.git(&["init", "-q", "-b", "main"]);
        r.git(&["config", "user.email", "t@example.com"]);
        r.git(&["config", "user.name", "t"]);
        r.write("a.txt", "one\n");
        r.git(&["add", "-A"]);
        r.git(&["commit", "-q", "-m", "first"]);
        r.write("b.txt", "two\n");
        r.git(&["add", "-A"]);
        r.git(&["commit", "-q", "-m", "second"]);
        r
    }

    fn path(&self) -> PathBuf {
        // Canonical: libgit2 reports canonical paths.
        self.tmp.path().canonicalize().expect("canonical")
    }

    fn git(&self, args: &[&str]) -> String {
        git_in(self.tmp.path(), args)
    }

    fn write(&self, rel: &str, text: &str) {
        std::fs::write(self.tmp.path().join(rel), text).expect("write");
    }

    fn rev(&self, r: &str) -> String {
        self.git(&["rev-parse", r]).trim().to_string()
    }

    fn create(&self, label: &str, cleanup: CleanupPolicy, base: Option<&str>) -> Record {
        let name = name_for(label);
        let branch = default_branch(label);
        create(&Request {
            dir: &self.path(),
            name: &name,
            branch: &branch,
            base,
            cleanup,
            label,
            run_dir: None,
        })
        .expect("create")
    }

    fn branches(&self) -> String {
        self.git(&["branch", "--list", "--format=%(refname:short)"])
    }

    fn worktree_list(&self) -> String {
        self.git(&["worktree", "list", "--porcelain"])
    }
}

fn commit_in(dir: &Path, file: &str, text: &str) {
    std::fs::write(dir.join(file), text).expect("write");
    git_in(dir, &["add", "-A"]);
    git_in(dir, &["commit", "-q", "-m", file]);
}

/// The pid of a process that has exited: a looper that died.
fn dead_pid() -> u32 {
    let mut c = Command::new("true").spawn().expect("spawn true");
    let pid = c.id();
    c.wait().expect("wait");
    pid
}

fn kill_creator(record: &Record) -> Record {
    let mut r = record.clone();
    r.pid = dead_pid();
    r.pid_identity = None;
    r.save().expect("save");
    r
}

#[test]
fn a_worktree_is_made_on_a_new_branch_from_head_outside_the_tracked_tree() {
    let repo = Repo::new();
    let before = repo.git(&["status", "--porcelain", "--untracked-files=all"]);
    let head = repo.rev("HEAD");
    let r = repo.create("fix tests", CleanupPolicy::Auto, None);
    assert_eq!(r.name, "fix-tests");
    assert_eq!(r.branch, "looper/fix-tests");
    assert_eq!(r.base, head);
    assert_eq!(r.phase, Phase::Ready);
    assert_eq!(
        r.path,
        repo.path().join(".agent-looper/worktrees/fix-tests")
    );
    assert_eq!(git_in(&r.path, &["rev-parse", "HEAD"]).trim(), head);
    assert_eq!(
        git_in(&r.path, &["branch", "--show-current"]).trim(),
        "looper/fix-tests"
    );
    assert!(r.path.join("b.txt").exists(), "checked out");
    assert_eq!(
        git_in(&r.path, &["status", "--porcelain"]),
        "",
        "complete: nothing missing"
    );
    // The main checkout does not see it, although the project ignores nothing.
    assert_eq!(
        repo.git(&["status", "--porcelain", "--untracked-files=all"]),
        before
    );
    // git knows it, locked with the looper's reason while the run lasts.
    let list = repo.worktree_list();
    assert!(
        list.contains("branch refs/heads/looper/fix-tests"),
        "{list}"
    );
    assert!(
        list.contains("locked agent-looper: label fix tests"),
        "{list}"
    );
}

#[test]
fn labels_become_names_git_accepts() {
    for (label, want) in [
        ("fix tests", "fix-tests"),
        ("..hidden", "hidden"),
        ("a..b", "a.b"),
        ("x.lock", "x"),
        ("///", "worktree"),
        ("ünï", "ünï"),
    ] {
        assert_eq!(name_for(label), want, "{label}");
        assert!(
            git2::Branch::name_is_valid(&default_branch(label)).unwrap_or(false),
            "{label}"
        );
    }
}

#[test]
fn a_worktree_starts_from_base_when_asked() {
    let repo = Repo::new();
    let first = repo.rev("HEAD~1");
    let r = repo.create("old", CleanupPolicy::Auto, Some("HEAD~1"));
    assert_eq!(r.base, first);
    assert_eq!(git_in(&r.path, &["rev-parse", "HEAD"]).trim(), first);
    assert!(!r.path.join("b.txt").exists());
    let e = create(&Request {
        dir: &repo.path(),
        name: "nope",
        branch: "looper/nope",
        base: Some("no-such-ref"),
        cleanup: CleanupPolicy::Auto,
        label: "nope",
        run_dir: None,
    })
    .expect_err("bad base");
    assert!(e.to_string().contains("no-such-ref"), "{e}");
}

#[test]
fn names_already_taken_are_refused_and_nothing_is_touched() {
    let repo = Repo::new();
    repo.git(&["branch", "looper/taken"]);
    let e = create(&Request {
        dir: &repo.path(),
        name: "taken",
        branch: "looper/taken",
        base: None,
        cleanup: CleanupPolicy::Auto,
        label: "taken",
        run_dir: None,
    })
    .expect_err("branch exists");
    assert!(matches!(e, WorktreeError::BranchExists { .. }), "{e}");
    assert!(!repo.path().join(".agent-looper/worktrees/taken").exists());
    let r = repo.create("twice", CleanupPolicy::Auto, None);
    let e = create(&Request {
        dir: &repo.path(),
        name: "twice",
        branch: "looper/other",
        base: None,
        cleanup: CleanupPolicy::Auto,
        label: "twice",
        run_dir: None,
    })
    .expect_err("path taken");
    assert!(matches!(e, WorktreeError::PathTaken { .. }), "{e}");
    assert!(r.path.join("a.txt").exists(), "the first one is intact");
    assert!(!repo.branches().contains("looper/other"));
}

#[test]
fn loopers_creating_worktrees_at_once_do_not_race() {
    for round in 0..3 {
        let repo = Repo::new();
        let path = repo.path();
        // Different names at once (the first worktrees of a repository: libgit2 alone races
        // on `.git/worktrees`), and the same name twice.
        let labels = ["a", "b", "c", "d", "same", "same"];
        let results: Vec<Result<Record, String>> = std::thread::scope(|s| {
            let hs: Vec<_> = labels
                .iter()
                .map(|l| {
                    let path = path.clone();
                    s.spawn(move || {
                        let name = name_for(l);
                        let branch = default_branch(l);
                        create(&Request {
                            dir: &path,
                            name: &name,
                            branch: &branch,
                            base: None,
                            cleanup: CleanupPolicy::Auto,
                            label: l,
                            run_dir: None,
                        })
                        .map_err(|e| e.to_string())
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().expect("join")).collect()
        });
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 5, "round {round}: {results:?}");
        for r in results.iter().flatten() {
            assert_eq!(git_in(&r.path, &["status", "--porcelain"]), "", "complete");
        }
        assert_eq!(repo.worktree_list().matches("worktree ").count(), 6);
    }
}

#[test]
fn auto_removes_an_untouched_worktree_and_its_branch() {
    let repo = Repo::new();
    let before = repo.git(&["status", "--porcelain", "--untracked-files=all"]);
    let r = repo.create("idle", CleanupPolicy::Auto, None);
    let out = finish(&r, false);
    assert!(out.removed && out.branch_removed, "{out:?}");
    assert!(out.text().contains("removed"), "{}", out.text());
    assert!(!r.path.exists());
    assert!(!repo.branches().contains("looper/idle"));
    assert!(!repo.worktree_list().contains("idle"));
    assert!(scan(&repo.path()).is_empty(), "record gone");
    assert_eq!(
        repo.git(&["status", "--porcelain", "--untracked-files=all"]),
        before
    );
}

#[test]
fn auto_keeps_a_worktree_with_a_commit_and_one_that_is_dirty() {
    let repo = Repo::new();
    let r = repo.create("worked", CleanupPolicy::Auto, None);
    commit_in(&r.path, "new.txt", "new\n");
    let out = finish(&r, false);
    assert!(!out.removed, "{out:?}");
    assert_eq!(out.facts.commits_ahead, 1);
    assert_eq!(out.reasons, vec![KeepReason::Unmerged(1)]);
    assert!(
        out.text().contains("1 commit no other branch contains"),
        "{}",
        out.text()
    );
    assert!(r.path.join("new.txt").exists());
    assert!(repo.branches().contains("looper/worked"));
    // Kept worktrees are the user's: git's lock is lifted, the looper forgets it.
    assert!(
        !repo.worktree_list().contains("locked"),
        "{}",
        repo.worktree_list()
    );
    assert!(scan(&repo.path()).is_empty());

    let d = repo.create("dirty", CleanupPolicy::Auto, None);
    std::fs::write(d.path.join("scratch.txt"), "wip\n").expect("write");
    std::fs::write(d.path.join("a.txt"), "changed\n").expect("write");
    let out = finish(&d, false);
    assert!(!out.removed, "{out:?}");
    assert_eq!(out.reasons, vec![KeepReason::Dirty(2)]);
    assert!(d.path.join("scratch.txt").exists());
}

#[test]
fn ignored_files_do_not_keep_a_worktree() {
    let repo = Repo::new();
    repo.write(".gitignore", "target/\n");
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-q", "-m", "ignore"]);
    let r = repo.create("build", CleanupPolicy::Auto, None);
    std::fs::create_dir_all(r.path.join("target")).expect("mkdir");
    std::fs::write(r.path.join("target/out.o"), "bin").expect("write");
    let out = finish(&r, false);
    assert!(out.removed, "{out:?}");
}

#[test]
fn remove_refuses_to_drop_unmerged_commits_but_drops_merged_ones() {
    let repo = Repo::new();
    let r = repo.create("unmerged", CleanupPolicy::Remove, None);
    commit_in(&r.path, "x.txt", "x\n");
    let out = finish(&r, false);
    assert!(!out.removed, "{out:?}");
    assert_eq!(out.reasons, vec![KeepReason::Unmerged(1)]);
    assert!(repo.branches().contains("looper/unmerged"));
    assert!(r.path.join("x.txt").exists());

    // Commits another branch contains are not lost by removing this one.
    let m = repo.create("merged", CleanupPolicy::Remove, None);
    commit_in(&m.path, "y.txt", "y\n");
    repo.git(&["merge", "-q", "--ff-only", "looper/merged"]);
    let out = finish(&m, false);
    assert!(out.removed && out.branch_removed, "{out:?}");
    assert!(repo.path().join("y.txt").exists(), "on main");

    // A dirty worktree is never removed, whatever the setting.
    let d = repo.create("dirty-remove", CleanupPolicy::Remove, None);
    std::fs::write(d.path.join("wip.txt"), "wip\n").expect("write");
    let out = finish(&d, false);
    assert!(!out.removed, "{out:?}");
    assert!(d.path.join("wip.txt").exists());
}

#[test]
fn commits_left_on_a_detached_head_or_another_branch_count() {
    let repo = Repo::new();
    let r = repo.create("detached", CleanupPolicy::Remove, None);
    git_in(&r.path, &["checkout", "-q", "--detach"]);
    commit_in(&r.path, "z.txt", "z\n");
    let out = finish(&r, false);
    assert!(!out.removed, "{out:?}");
    assert_eq!(out.facts.unmerged_commits, 1);
}

#[test]
fn keep_keeps_even_an_untouched_worktree() {
    let repo = Repo::new();
    let r = repo.create("kept", CleanupPolicy::Keep, None);
    let out = finish(&r, false);
    assert!(!out.removed);
    assert_eq!(out.reasons, vec![KeepReason::Asked]);
    assert!(r.path.exists());
}

#[test]
fn a_creation_cut_short_is_rolled_back_by_recovery() {
    let repo = Repo::new();
    let r = repo.create("crashed", CleanupPolicy::Auto, None);
    // As a looper killed mid-checkout leaves it: record `creating`, files half there.
    let mut cut = kill_creator(&r);
    cut.phase = Phase::Creating;
    cut.save().expect("save");
    std::fs::remove_file(r.path.join("a.txt")).expect("rm");
    let found = scan(&repo.path());
    assert_eq!(found.len(), 1);
    assert!(found[0].orphaned.is_some(), "{found:?}");
    let out = recover(&repo.path(), "crashed").expect("recovered");
    assert!(out.removed, "{out:?}");
    assert!(!r.path.exists());
    assert!(!repo.branches().contains("looper/crashed"));
    assert!(!repo.worktree_list().contains("crashed"));
    assert!(scan(&repo.path()).is_empty());
}

#[test]
fn the_next_creation_rolls_back_a_dead_loopers_half_made_worktree() {
    let repo = Repo::new();
    let r = repo.create("half", CleanupPolicy::Auto, None);
    let mut cut = kill_creator(&r);
    cut.phase = Phase::Creating;
    cut.save().expect("save");
    // The same label again: the leftovers are cleared first, under the lock.
    let again = repo.create("half", CleanupPolicy::Auto, None);
    assert_eq!(again.phase, Phase::Ready);
    assert!(again.path.join("a.txt").exists());
}

#[test]
fn a_dead_loopers_worktree_is_settled_by_its_rules() {
    let repo = Repo::new();
    let idle = kill_creator(&repo.create("idle", CleanupPolicy::Auto, None));
    let busy = kill_creator(&repo.create("busy", CleanupPolicy::Auto, None));
    commit_in(&busy.path, "work.txt", "w\n");
    let alive = repo.create("alive", CleanupPolicy::Auto, None);
    let found = scan(&repo.path());
    let orphans: Vec<&str> = found
        .iter()
        .filter(|f| f.orphaned.is_some())
        .map(|f| f.record.name.as_str())
        .collect();
    assert_eq!(orphans, ["busy", "idle"]);
    assert!(recover(&repo.path(), "alive").is_none(), "its looper lives");
    let out = recover(&repo.path(), "idle").expect("idle");
    assert!(out.removed, "{out:?}");
    assert!(!idle.path.exists());
    let out = recover(&repo.path(), "busy").expect("busy");
    assert!(!out.removed, "{out:?}");
    assert!(busy.path.join("work.txt").exists());
    assert!(alive.path.exists());
}

#[test]
fn a_removal_cut_short_is_finished_and_a_moved_branch_kept() {
    let repo = Repo::new();
    let r = repo.create("going", CleanupPolicy::Auto, None);
    let mut cut = kill_creator(&r);
    cut.phase = Phase::Removing;
    cut.removing_tip = Some(r.base.clone());
    cut.save().expect("save");
    std::fs::remove_dir_all(&r.path).expect("rm");
    let out = recover(&repo.path(), "going").expect("recovered");
    assert!(out.removed && out.branch_removed, "{out:?}");
    assert!(!repo.branches().contains("looper/going"));
    assert!(!repo.worktree_list().contains("going"));

    let m = repo.create("moved", CleanupPolicy::Auto, None);
    let mut cut = kill_creator(&m);
    cut.phase = Phase::Removing;
    cut.removing_tip = Some(m.base.clone());
    cut.save().expect("save");
    commit_in(&m.path, "late.txt", "late\n");
    std::fs::remove_dir_all(&m.path).expect("rm");
    let out = recover(&repo.path(), "moved").expect("recovered");
    assert!(!out.branch_removed, "{out:?}");
    assert!(
        repo.branches().contains("looper/moved"),
        "its commit survives"
    );
}

#[test]
fn the_run_lock_is_per_worktree() {
    use crate::effects::git::{GitError, HolderRecord, acquire_run_lock, lock_path_for};
    let repo = Repo::new();
    let a = repo.create("one", CleanupPolicy::Auto, None);
    let b = repo.create("two", CleanupPolicy::Auto, None);
    let holder = |label: &str| HolderRecord {
        pid: std::process::id(),
        pid_identity: None,
        label: label.into(),
        run_dir: PathBuf::from("/runs/x"),
        started_at: Utc::now(),
    };
    let main_lock = acquire_run_lock(&lock_path_for(&repo.path()), &holder("main")).expect("main");
    let la = acquire_run_lock(&lock_path_for(&a.path), &holder("one")).expect("one");
    let lb = acquire_run_lock(&lock_path_for(&b.path.join(".")), &holder("two")).expect("two");
    let again = acquire_run_lock(&lock_path_for(&a.path), &holder("one-again"));
    assert!(
        matches!(&again, Err(GitError::LockHeld { holder: Some(h), .. }) if h.label == "one"),
        "{again:?}"
    );
    drop((main_lock, la, lb));
}

#[test]
fn changes_count_commits_and_files_since_the_base() {
    let repo = Repo::new();
    let r = repo.create("count", CleanupPolicy::Auto, None);
    commit_in(&r.path, "c1.txt", "1\n");
    commit_in(&r.path, "c2.txt", "2\n");
    std::fs::write(r.path.join("a.txt"), "edited\n").expect("write");
    std::fs::write(r.path.join("new.txt"), "n\n").expect("write");
    let c = changes(&r.path, &r.base, &[]).expect("changes");
    assert_eq!(c.branch.as_deref(), Some("looper/count"));
    assert_eq!(c.commits_ahead, 2);
    assert_eq!(c.files_changed, 4);
    // A change reverted in the work tree is no change.
    std::fs::write(r.path.join("c1.txt"), "").expect("write");
    std::fs::remove_file(r.path.join("c1.txt")).expect("rm");
    let c = changes(&r.path, &r.base, &[]).expect("changes");
    assert_eq!(c.files_changed, 3);
}

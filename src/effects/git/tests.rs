//! Test support shared by the tests of the git parts (a scratch repository driven by the git
//! CLI, a fixed stamp, a repository with a submodule), and the tests of opening a workspace.

use super::*;
use chrono::{DateTime, Utc};
use std::process::Command;
use tempfile::TempDir;

/// Runs the git CLI with a fixed identity and no user/system config, so tests do not depend
/// on the machine's git setup.
pub(super) fn git_in(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        // Keeps `git status` from refreshing the index behind the tests' back.
        .env("GIT_OPTIONAL_LOCKS", "0")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 git output")
}

/// A scratch repository with one commit (`a.txt`, `dir/b.txt`) and `.gitignore`.
pub(super) struct TestRepo {
    tmp: TempDir,
}

impl TestRepo {
    /// The usual starting point: a repository with history and ignore rules.
    pub(super) fn new() -> Self {
        let repo = Self::unborn();
        repo.write(".gitignore", "*.log\nbuild/\n");
        repo.write("a.txt", "alpha\n");
        repo.write("dir/b.txt", "beta\n");
        repo.commit_all("initial");
        repo
    }

    /// A fresh `git init` with no commit, for the unborn-HEAD cases.
    pub(super) fn unborn() -> Self {
        let tmp = TempDir::new().expect("tempdir");
        git_in(tmp.path(), &["init", "-q"]);
        TestRepo { tmp }
    }

    pub(super) fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub(super) fn git(&self, args: &[&str]) -> String {
        git_in(self.path(), args)
    }

    pub(super) fn write(&self, rel: &str, content: &str) {
        let path = self.path().join(rel);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, content).expect("write");
    }

    pub(super) fn commit_all(&self, msg: &str) {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", msg]);
    }

    pub(super) fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"]).trim().to_owned()
    }

    pub(super) fn open(&self) -> Workspace {
        Workspace::open(self.path()).expect("open workspace")
    }
}

/// A fixed stamp, so branch names are predictable.
pub(super) fn stamp() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
        .expect("stamp")
        .with_timezone(&Utc)
}

/// A repository with a submodule `sub` (its own repository, one file `s.txt`).
pub(super) fn with_submodule() -> (TestRepo, TestRepo) {
    let upstream = TestRepo::unborn();
    upstream.write("s.txt", "one\n");
    upstream.commit_all("sub initial");
    let repo = TestRepo::new();
    repo.git(&[
        "-c",
        "protocol.file.allow=always",
        "submodule",
        "add",
        "-q",
        &upstream.path().display().to_string(),
        "sub",
    ]);
    repo.commit_all("add submodule");
    (repo, upstream)
}

#[test]
fn open_refuses_non_git_and_bare() {
    let plain = TempDir::new().expect("tempdir");
    let err = Workspace::open(plain.path()).expect_err("not a repo");
    assert!(matches!(err, GitError::NotARepo { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&plain.path().display().to_string()), "{msg}");
    assert!(msg.contains("not inside a git work tree"), "{msg}");

    let bare = TempDir::new().expect("tempdir");
    git_in(bare.path(), &["init", "-q", "--bare"]);
    let err = Workspace::open(bare.path()).expect_err("bare");
    assert!(matches!(err, GitError::BareRepo { .. }), "{err:?}");
    assert!(err.to_string().contains("bare"), "{err}");

    let missing = plain.path().join("does-not-exist");
    let err = Workspace::open(&missing).expect_err("missing");
    assert!(err.to_string().contains("does-not-exist"), "{err}");
}

#[test]
fn unborn_head_is_refused_for_backups() {
    let repo = TestRepo::unborn();
    let ws = repo.open();
    let err = ws.require_head().expect_err("unborn");
    let msg = err.to_string();
    assert!(msg.contains("has no commits yet"), "{msg}");
    assert!(msg.contains("--backup / --cb-no-progress"), "{msg}");
    assert!(
        msg.contains(&ws.workdir().display().to_string()),
        "{msg} should name the repository"
    );
    let err = ws
        .create_backup("looper-backup", stamp(), 1, false, &[])
        .expect_err("unborn");
    assert!(matches!(err, GitError::UnbornHead { .. }), "{err:?}");
}

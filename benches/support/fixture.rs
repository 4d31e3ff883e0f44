//! The 20,000-file benchmark repository shared by the benches (`fingerprint`, `worktree`):
//! 200 directories of 100 tracked files, 1,000 ignored build files, and 200 dirty or
//! untracked paths, generated once under `target/bench-fixtures/`.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Bump when the fixture's shape changes, so a stale cached copy is regenerated.
pub const FIXTURE: &str = "fp-20k-v1";
pub const DIRS: usize = 200;
pub const FILES_PER_DIR: usize = 100;

/// Runs git with a fixed identity and no user or system config, so the fixture is the same on
/// every machine.
pub fn git(repo: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args([
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@example.com",
        ])
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(repo)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdout(Stdio::null())
        .status()
        .expect("run git");
    assert!(status.success(), "git {args:?} failed");
}

/// Deterministic file body of 200 to 600 bytes, so blobs differ and sizes vary like source code.
pub fn body(dir: usize, file: usize, edit: usize) -> String {
    let len = 200 + (dir * 31 + file * 17) % 400;
    let line = format!("dir {dir} file {file} edit {edit} ");
    line.repeat(len / line.len() + 1)[..len].to_owned()
}

/// Next to the crate's target dir, so `cargo clean` removes it with everything else.
pub fn fixture_root() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("bench-fixtures")
}

/// Builds the repository once; later runs reuse it (the marker is written last, so an interrupted
/// generation is redone).
pub fn fixture() -> PathBuf {
    let root = fixture_root();
    let repo = root.join(FIXTURE);
    let marker = root.join(format!("{FIXTURE}.complete"));
    if marker.exists() {
        return repo;
    }
    if repo.exists() {
        fs::remove_dir_all(&repo).expect("remove stale fixture");
    }
    fs::create_dir_all(&repo).expect("create fixture dir");
    git(&repo, &["init", "-q"]);
    fs::write(repo.join(".gitignore"), "build/\n*.log\n").expect("write .gitignore");
    for d in 0..DIRS {
        let dir = repo.join(format!("src/m{d:03}"));
        fs::create_dir_all(&dir).expect("create dir");
        for f in 0..FILES_PER_DIR {
            fs::write(dir.join(format!("f{f:03}.rs")), body(d, f, 0)).expect("write file");
        }
    }
    // Ignored build output: must cost nothing and count for nothing.
    let build = repo.join("build");
    fs::create_dir_all(&build).expect("create build dir");
    for i in 0..1000 {
        fs::write(build.join(format!("o{i}.o")), body(i, i, 9)).expect("write build file");
    }
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "fixture"]);

    // 200 dirty or untracked paths: 20 staged edits, 10 staged new files, 10 deletions,
    // 80 unstaged edits, 60 untracked files in existing dirs, 20 in new directories.
    for i in 0..20 {
        let p = format!("src/m{:03}/f000.rs", i * 10);
        fs::write(repo.join(&p), body(i, 0, 1)).expect("edit");
        git(&repo, &["add", &p]);
    }
    for i in 0..10 {
        let p = format!("src/m{:03}/staged_new.rs", i * 7);
        fs::write(repo.join(&p), body(i, 1, 1)).expect("new file");
        git(&repo, &["add", &p]);
    }
    for i in 0..10 {
        fs::remove_file(repo.join(format!("src/m{:03}/f050.rs", i * 13))).expect("delete");
    }
    for i in 0..80 {
        let p = repo.join(format!("src/m{:03}/f010.rs", (i * 3) % DIRS));
        fs::write(p, body(i, 2, 2)).expect("edit");
    }
    for i in 0..60 {
        let p = repo.join(format!("src/m{:03}/untracked{i}.rs", (i * 5) % DIRS));
        fs::write(p, body(i, 3, 3)).expect("untracked");
    }
    for i in 0..20 {
        let dir = repo.join(format!("new{:02}/sub", i / 5));
        fs::create_dir_all(&dir).expect("new dir");
        fs::write(dir.join(format!("n{i}.rs")), body(i, 4, 4)).expect("untracked");
    }
    // The looper's own run directory inside the worktree: excluded from the fingerprint.
    let run = repo.join(".agent-looper/runs/20260101T000000Z__bench__abcd");
    fs::create_dir_all(&run).expect("run dir");
    for name in [
        "state.json",
        "events.jsonl",
        "loop-0001.log",
        "loop-0002.log",
    ] {
        fs::write(run.join(name), "{}\n").expect("run file");
    }
    // Let the index settle (refreshed stat data, no racily-clean entries), as after any git use.
    std::thread::sleep(Duration::from_millis(1100));
    git(&repo, &["status", "--porcelain"]);
    fs::write(&marker, "").expect("write marker");
    repo
}

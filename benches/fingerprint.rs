//! Cost of one no-progress fingerprint against its floor, `git status --porcelain`, on a
//! 20,000-file repository with 200 dirty or untracked paths (the D17 performance target).

use std::fs;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_looper::effects::git::Workspace;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

/// Bump when the fixture's shape changes, so a stale cached copy is regenerated.
const FIXTURE: &str = "fp-20k-v1";
const DIRS: usize = 200;
const FILES_PER_DIR: usize = 100;

/// Runs git with a fixed identity and no user or system config, so the fixture is the same on
/// every machine.
fn git(repo: &Path, args: &[&str]) {
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
fn body(dir: usize, file: usize, edit: usize) -> String {
    let len = 200 + (dir * 31 + file * 17) % 400;
    let line = format!("dir {dir} file {file} edit {edit} ");
    line.repeat(len / line.len() + 1)[..len].to_owned()
}

/// The floor: what a user would run to see the same changes (default options, as a subprocess).
fn git_status(repo: &Path) -> Vec<u8> {
    let out = Command::new("git")
        .args(["status", "--porcelain"])
        .current_dir(repo)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git status");
    assert!(out.status.success());
    out.stdout
}

/// Next to the crate's target dir, so `cargo clean` removes it with everything else.
fn fixture_root() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("bench-fixtures")
}

/// Builds the repository once; later runs reuse it (the marker is written last, so an interrupted
/// generation is redone).
fn fixture() -> PathBuf {
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

/// Re-stages an edit of one already-staged file, so the index changes but the set of dirty paths
/// does not: what a loop in which the agent ran `git add` looks like to the next fingerprint.
struct IndexToggle {
    repo: PathBuf,
    flip: bool,
}

impl IndexToggle {
    const PATH: &str = "src/m000/f000.rs";

    fn toggle(&mut self) {
        self.flip = !self.flip;
        let edit = if self.flip { 5 } else { 1 };
        fs::write(self.repo.join(Self::PATH), body(0, 0, edit)).expect("edit");
        git(&self.repo, &["add", Self::PATH]);
    }

    /// Leaves the cached fixture exactly as generated.
    fn restore(&mut self) {
        self.flip = true;
        self.toggle();
    }
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// User + system CPU seconds used so far by this thread (`who = RUSAGE_THREAD`) or by the waited-for
/// children (`RUSAGE_CHILDREN`).
fn cpu_ms(who: libc::c_int) -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(who, &mut usage), 0, "getrusage");
        usage
    };
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    ms(usage.ru_utime) + ms(usage.ru_stime)
}

/// Criterion measures one function after the other, so load that comes and goes on a shared
/// 2-core machine skews their ratio; alternating the two, call by call, does not. CPU time is
/// printed too: it hardly moves with other load (git's is summed over its preload threads).
fn paired(ws: &mut Workspace, excluded: &[PathBuf], toggle: Option<&mut IndexToggle>) {
    const ROUNDS: usize = 101;
    let (mut fp, mut st, mut fp_cpu, mut st_cpu) = (vec![], vec![], vec![], vec![]);
    let mut toggle = toggle;
    for _ in 0..ROUNDS {
        if let Some(t) = toggle.as_deref_mut() {
            t.toggle();
        }
        let (start, cpu) = (Instant::now(), cpu_ms(libc::RUSAGE_THREAD));
        black_box(ws.fingerprint(excluded).expect("fingerprint"));
        fp.push(start.elapsed().as_secs_f64() * 1e3);
        fp_cpu.push(cpu_ms(libc::RUSAGE_THREAD) - cpu);
        if let Some(t) = toggle.as_deref_mut() {
            t.toggle();
        }
        let (start, cpu) = (Instant::now(), cpu_ms(libc::RUSAGE_CHILDREN));
        black_box(git_status(ws.workdir()));
        st.push(start.elapsed().as_secs_f64() * 1e3);
        st_cpu.push(cpu_ms(libc::RUSAGE_CHILDREN) - cpu);
    }
    let (fp, st) = (median(&mut fp), median(&mut st));
    let (fp_cpu, st_cpu) = (median(&mut fp_cpu), median(&mut st_cpu));
    let case = if toggle.is_some() {
        "after an index change"
    } else {
        "warm"
    };
    println!(
        "paired, {case}: wall median fingerprint {fp:.2} ms, git status --porcelain {st:.2} ms, \
         ratio {:.2}; cpu median {fp_cpu:.1} ms vs {st_cpu:.1} ms ({ROUNDS} alternating rounds)",
        fp / st
    );
}

fn bench(c: &mut Criterion) {
    let repo = fixture();
    let run_dir = repo.join(".agent-looper/runs/20260101T000000Z__bench__abcd");
    let excluded = vec![run_dir];
    let mut ws = Workspace::open(&repo).expect("open fixture");
    // Warm the caches both sides benefit from (page cache, dentries, the index).
    for _ in 0..3 {
        ws.fingerprint(&excluded).expect("fingerprint");
        git_status(&repo);
    }
    let mut toggle = IndexToggle {
        repo: repo.clone(),
        flip: false,
    };
    // Only under `cargo bench` (which passes --bench), not in `cargo test --benches`.
    if std::env::args().any(|arg| arg == "--bench") {
        paired(&mut ws, &excluded, None);
        paired(&mut ws, &excluded, Some(&mut toggle));
        toggle.restore();
    }

    let mut group = c.benchmark_group("fingerprint_20k");
    group
        .sample_size(60)
        .measurement_time(Duration::from_secs(8));
    group.bench_function("fingerprint", |b| {
        b.iter(|| black_box(ws.fingerprint(&excluded).expect("fingerprint")))
    });
    group.bench_function("git_status_porcelain", |b| {
        b.iter(|| black_box(git_status(&repo)))
    });
    // What a run pays once at start; the loop itself reuses the Workspace.
    group.bench_function("open_and_fingerprint", |b| {
        b.iter(|| {
            let mut fresh = Workspace::open(&repo).expect("open fixture");
            black_box(fresh.fingerprint(&excluded).expect("fingerprint"))
        })
    });
    // The agent changed the index since the last call, so libgit2 must re-read it, as
    // `git status` always does. The setup (an edit and `git add`) is not timed.
    group.bench_function("fingerprint_after_index_change", |b| {
        b.iter_batched(
            || toggle.toggle(),
            |()| black_box(ws.fingerprint(&excluded).expect("fingerprint")),
            BatchSize::PerIteration,
        )
    });
    group.bench_function("git_status_porcelain_after_index_change", |b| {
        b.iter_batched(
            || toggle.toggle(),
            |()| black_box(git_status(&repo)),
            BatchSize::PerIteration,
        )
    });
    group.finish();
    toggle.restore();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Cost of one no-progress fingerprint against its floor, `git status --porcelain`, on a
//! 20,000-file repository with 200 dirty or untracked paths (the D17 performance target).

use std::fs;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use agent_looper::effects::git::Workspace;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

#[path = "support/fixture.rs"]
mod fixture;
use fixture::{body, fixture, git};

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

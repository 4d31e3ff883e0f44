//! Creating and removing a looper worktree (issue 16) against its floor, `git worktree add`
//! followed by `git worktree remove`, on the 20,000-file benchmark repository. The looper's
//! round is what a run with `--worktree` pays: the locked, recorded creation on a new branch
//! (`effects::worktree::create`), then the end of an untouched run under `auto`
//! (`effects::worktree::finish`: the status and history read for the cleanup rules, the
//! removal, the branch deleted). The floor's round is `git worktree add -b <branch>` and
//! `git worktree remove`; it leaves the branch, which the looper deletes.
//!
//! `cargo bench --bench worktree`: the paired figures first (rounds alternating, so load
//! that comes and goes on a shared machine hits both sides alike), then criterion's.

use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use agent_looper::effects::worktree::{self, Request};
use agent_looper::engine::worktree::CleanupPolicy;
use criterion::{Criterion, criterion_group, criterion_main};

#[path = "support/fixture.rs"]
mod fixture;
use fixture::{fixture, git};

/// One looper round: create a worktree, settle it (untouched: removed with its branch).
fn looper_round(repo: &Path, n: usize) {
    let name = format!("bench-looper-{n}");
    let branch = format!("bench/looper-{n}");
    let record = worktree::create(&Request {
        dir: repo,
        name: &name,
        branch: &branch,
        base: None,
        cleanup: CleanupPolicy::Auto,
        label: &name,
        run_dir: None,
    })
    .expect("create");
    let out = worktree::finish(&record, false);
    assert!(out.removed && out.branch_removed, "{out:?}");
}

/// One floor round: `git worktree add -b` then `git worktree remove`.
fn git_round(repo: &Path, n: usize) {
    let path = repo.join(format!(".agent-looper/bench-git-{n}"));
    let path = path.to_string_lossy();
    let branch = format!("bench/git-{n}");
    git(repo, &["worktree", "add", "-q", "-b", &branch, &path]);
    git(repo, &["worktree", "remove", &path]);
    // Not timed on its own: the floor keeps its branch, this only keeps the fixture tidy.
    let _ = &branch;
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Alternate the two, round by round, and print the medians and their ratio.
fn paired(repo: &Path) {
    const ROUNDS: usize = 15;
    let (mut ours, mut floor) = (Vec::new(), Vec::new());
    for n in 0..ROUNDS {
        let start = Instant::now();
        looper_round(repo, n);
        ours.push(start.elapsed().as_secs_f64() * 1e3);
        let start = Instant::now();
        git_round(repo, n);
        floor.push(start.elapsed().as_secs_f64() * 1e3);
        git(repo, &["branch", "-q", "-D", &format!("bench/git-{n}")]);
    }
    let (ours, floor) = (median(&mut ours), median(&mut floor));
    println!(
        "paired: median looper create + finish {ours:.1} ms, git worktree add + remove {floor:.1} ms, ratio {:.2} ({ROUNDS} alternating rounds)",
        ours / floor
    );
}

fn bench(c: &mut Criterion) {
    let repo = fixture();
    // Warm the caches both sides use (page cache, the object store).
    looper_round(&repo, 1000);
    git_round(&repo, 1000);
    git(&repo, &["branch", "-q", "-D", "bench/git-1000"]);
    // Only under `cargo bench` (which passes --bench), not in `cargo test --benches`.
    if std::env::args().any(|arg| arg == "--bench") {
        paired(&repo);
    }
    let mut group = c.benchmark_group("worktree_20k");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    let mut n = 2000;
    group.bench_function("looper_create_and_finish", |b| {
        b.iter(|| {
            n += 1;
            looper_round(&repo, n);
            black_box(n)
        })
    });
    group.bench_function("git_worktree_add_and_remove", |b| {
        b.iter(|| {
            n += 1;
            git_round(&repo, n);
            black_box(n)
        })
    });
    group.finish();
    // The floor's branches, left by its rounds.
    let out = Command::new("git")
        .args([
            "branch",
            "--list",
            "bench/git-*",
            "--format=%(refname:short)",
        ])
        .current_dir(&repo)
        .output()
        .expect("git branch");
    for b in String::from_utf8_lossy(&out.stdout).lines() {
        git(&repo, &["branch", "-q", "-D", b]);
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Inner-loop costs: the output scanner over realistic streams, each agent's line parser,
//! and the log writer. Whole-process workloads live in `scripts/bench`.

use std::hint::black_box;

use agent_looper::agents::output::parse_line;
use agent_looper::agents::{Classifier, Scanner, Stream};
use agent_looper::config::AgentKind;
use agent_looper::config::schema::DEFAULT_STOP_PATTERNS;
use agent_looper::effects::outlog::LogWriter;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn classifier() -> Classifier {
    let p: Vec<String> = DEFAULT_STOP_PATTERNS
        .iter()
        .map(|s| s.to_string())
        .collect();
    Classifier::new(&p).expect("patterns")
}

fn plain_stream(mib: usize) -> Vec<u8> {
    let mut line = vec![b'x'; 99];
    line.push(b'\n');
    line.iter().copied().cycle().take(mib << 20).collect()
}

fn fixture(cli: &str, name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/clis/{cli}/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture")
}

fn scanner(c: &mut Criterion) {
    let data = plain_stream(16);
    let mut g = c.benchmark_group("scanner");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("generic 100-byte lines with --complete-on", |b| {
        b.iter(|| {
            let re = regex::Regex::new(r"EXIT_SIGNAL:\s*true").ok();
            let mut s = Scanner::new(AgentKind::Generic, false, re, None, classifier(), 0.0);
            for chunk in data.chunks(64 * 1024) {
                s.feed(Stream::Stdout, chunk);
            }
            black_box(s.completion_seen)
        })
    });
    let long: Vec<u8> = vec![b'y'; 16 << 20];
    g.bench_function("one 16 MiB line without newline", |b| {
        b.iter(|| {
            let re = regex::Regex::new(r"EXIT_SIGNAL:\s*true").ok();
            let mut s = Scanner::new(AgentKind::Generic, false, re, None, classifier(), 0.0);
            for chunk in long.chunks(64 * 1024) {
                s.feed(Stream::Stdout, chunk);
            }
            black_box(s.finish_stream(Stream::Stdout))
        })
    });
    g.finish();
}

fn parsers(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_line");
    for (kind, cli) in [
        (AgentKind::Codex, "codex"),
        (AgentKind::Claude, "claude"),
        (AgentKind::Gemini, "gemini"),
    ] {
        let text = String::from_utf8_lossy(&fixture(cli, "success.stdout")).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function(format!("{cli} success transcript"), |b| {
            b.iter(|| {
                for l in &lines {
                    black_box(parse_line(kind, Stream::Stdout, l, false, 0.0));
                }
            })
        });
    }
    g.finish();
}

fn log_writer(c: &mut Criterion) {
    let data = plain_stream(16);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut g = c.benchmark_group("log");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("stamp and write 16 MiB of lines", |b| {
        b.iter(|| {
            let p = dir.path().join("l.log");
            let _ = std::fs::remove_file(&p);
            let mut w = LogWriter::open(&p).expect("open");
            for chunk in data.chunks(64 * 1024) {
                w.chunk(Stream::Stdout, chunk).expect("write");
            }
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = scanner, parsers, log_writer
}
criterion_main!(benches);

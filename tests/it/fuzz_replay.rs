//! Replays every seed of `fuzz/corpus/` through the same calls as the fuzz targets, so the
//! ordinary suite (and CI) exercises them without libFuzzer; `scripts/fuzz-short` and
//! `scripts/fuzz-long` do the actual fuzzing.

use std::path::PathBuf;

use agent_looper::agents::output::parse_line;
use agent_looper::agents::{Classifier, Scanner, Stream};
use agent_looper::config::layers::{Layers, Origin};
use agent_looper::config::{AgentKind, PromptMode};
use agent_looper::prompts;
use agent_looper::records::control::ControlLine;

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds for {target}");
    files
        .iter()
        .map(|f| std::fs::read(f).expect("seed"))
        .collect()
}

const KINDS: [AgentKind; 4] = [
    AgentKind::Codex,
    AgentKind::Claude,
    AgentKind::Gemini,
    AgentKind::Generic,
];

#[test]
fn config_document_seeds() {
    for seed in seeds("config_document") {
        if let Ok(text) = std::str::from_utf8(&seed) {
            let _ = Layers::default().apply_document(text, &Origin::File("fuzz.toml".into()));
        }
    }
}

#[test]
fn control_line_seeds() {
    for seed in seeds("control_line") {
        let _ = ControlLine::parse(&seed, 1);
    }
}

#[test]
fn control_inbox_seeds() {
    for seed in seeds("control_inbox") {
        let Some((&step, data)) = seed.split_first() else {
            continue;
        };
        agent_looper::records::inbox::split_invariance(data, usize::from(step) + 1)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn output_parse_line_seeds() {
    for seed in seeds("output_parse_line") {
        let line = String::from_utf8_lossy(&seed);
        for kind in KINDS {
            for stream in [Stream::Stdout, Stream::Stderr] {
                for scan in [false, true] {
                    let _ = parse_line(kind, stream, &line, scan, 1_700_000_000.0);
                }
            }
        }
    }
}

#[test]
fn prompts_split_seeds() {
    let default = prompts::compile_separator(r"^---\s*$").expect("separator");
    for seed in seeds("prompts_split") {
        let text = String::from_utf8_lossy(&seed);
        for mode in [PromptMode::Single, PromptMode::Sequence] {
            let _ = prompts::split(&text, mode, &default);
        }
    }
}

#[test]
fn scanner_feed_seeds() {
    let classifier =
        Classifier::new(&["rate limit".to_string(), "overloaded".to_string()]).expect("classifier");
    let completion = regex::Regex::new(r"EXIT_SIGNAL:\s*true$").ok();
    for seed in seeds("scanner_feed") {
        for kind in KINDS {
            let mut s = Scanner::new(
                kind,
                true,
                completion.clone(),
                None,
                classifier.clone(),
                0.0,
            );
            for chunk in seed.chunks(7) {
                s.feed(Stream::Stdout, chunk);
                s.feed(Stream::Stderr, chunk);
            }
            s.finish_stream(Stream::Stdout);
            s.finish_stream(Stream::Stderr);
        }
    }
}

#[test]
fn long_line_json_seeds() {
    use agent_looper::agents::long_line::{Limits, LongJson};
    let pattern = regex::Regex::new("é✓").ok();
    for seed in seeds("long_line_json") {
        let Some((head, line)) = seed.split_first_chunk::<4>() else {
            continue;
        };
        let limits = Limits {
            keep: usize::from(head[0]) + 1,
            head: usize::from(head[1] % 32),
            window: usize::from(head[2]) + 8,
            overlap: usize::from(head[2] % 16) + 1,
            budget: usize::from(head[3]) * 64 + 64,
        };
        let mut p = LongJson::with_limits(vec![pattern.clone()], limits);
        for c in line.chunks(usize::from(head[3] % 17) + 1) {
            p.feed(c);
        }
        if let Some(got) = p.finish()
            && got.matched.is_empty()
            && let Ok(want) = serde_json::from_slice::<serde_json::Value>(line)
        {
            assert_eq!(got.value, want);
        }
    }
}

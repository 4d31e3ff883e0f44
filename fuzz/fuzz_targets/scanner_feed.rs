//! Fuzz the output scanner with arbitrary bytes cut into arbitrary chunks on both streams:
//! the first byte picks the agent kind, each following pair (length, stream) one chunk.
#![no_main]
use agent_looper::agents::{Classifier, Scanner, Stream};
use agent_looper::config::AgentKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, mut rest)) = data.split_first() else {
        return;
    };
    let kind = match pick % 4 {
        0 => AgentKind::Codex,
        1 => AgentKind::Claude,
        2 => AgentKind::Gemini,
        _ => AgentKind::Generic,
    };
    let classifier = Classifier::new(&[
        "rate limit".to_string(),
        "overloaded".to_string(),
        "(?i)timed out".to_string(),
    ])
    .expect("classifier");
    let completion = regex::Regex::new(r"EXIT_SIGNAL:\s*true$").ok();
    let output_match = regex::Regex::new(r"^STATUS").ok();
    let mut s = Scanner::new(
        kind,
        pick & 4 != 0,
        completion,
        output_match,
        classifier,
        0.0,
    );
    while rest.len() >= 2 {
        let len = usize::from(rest[0]) * if rest[1] & 0x80 != 0 { 64 } else { 1 };
        let stream = if rest[1] & 1 == 0 {
            Stream::Stdout
        } else {
            Stream::Stderr
        };
        rest = &rest[2..];
        let n = len.min(rest.len());
        let _ = s.feed(stream, &rest[..n]);
        rest = &rest[n..];
    }
    let _ = s.finish_stream(Stream::Stdout);
    let _ = s.finish_stream(Stream::Stderr);
});

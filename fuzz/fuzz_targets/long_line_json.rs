//! Fuzz the long-line JSON parser (agents::long_line, issue 20 item 15) with arbitrary
//! bytes in arbitrary chunks and small limits, so that every path (long strings, windows,
//! the budget) is reached by short inputs. The first four bytes pick the limits and the
//! chunk size. Whatever serde_json reads whole and holds no long string must come out equal.
#![no_main]
use agent_looper::agents::long_line::{Limits, LongJson};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((head, line)) = data.split_first_chunk::<4>() else {
        return;
    };
    let limits = Limits {
        keep: usize::from(head[0]) + 1,
        head: usize::from(head[1] % 32),
        window: usize::from(head[2]) + 8,
        overlap: usize::from(head[2] % 16) + 1,
        budget: usize::from(head[3]) * 64 + 64,
    };
    let chunk = usize::from(head[3] % 17) + 1;
    // Compiled once: a regex per input would be most of the run's time.
    static PATTERNS: std::sync::OnceLock<Vec<Option<regex::Regex>>> = std::sync::OnceLock::new();
    let patterns = PATTERNS.get_or_init(|| {
        vec![
            regex::Regex::new(r"EXIT_SIGNAL:\s*true$").ok(),
            regex::Regex::new(r"^ab").ok(),
            regex::Regex::new("é✓").ok(),
        ]
    });
    let mut p = LongJson::with_limits(patterns.clone(), limits);
    for c in line.chunks(chunk) {
        p.feed(c);
    }
    if let Some(got) = p.finish()
        && got.matched.is_empty()
        && let Ok(want) = serde_json::from_slice::<serde_json::Value>(line)
    {
        assert_eq!(got.value, want);
    }
});

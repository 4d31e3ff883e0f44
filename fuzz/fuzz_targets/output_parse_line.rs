//! Fuzz each agent-output parser (codex, claude, gemini, generic) on both streams, with
//! and without stdout scanning, on one arbitrary line.
#![no_main]
use agent_looper::agents::Stream;
use agent_looper::agents::output::parse_line;
use agent_looper::config::AgentKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &str| {
    for kind in [
        AgentKind::Codex,
        AgentKind::Claude,
        AgentKind::Gemini,
        AgentKind::Generic,
    ] {
        for stream in [Stream::Stdout, Stream::Stderr] {
            for scan in [false, true] {
                let _ = parse_line(kind, stream, line, scan, 1_700_000_000.0);
            }
        }
    }
});

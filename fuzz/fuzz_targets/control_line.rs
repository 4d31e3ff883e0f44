//! Fuzz the control-line parser on arbitrary bytes.
#![no_main]
use agent_looper::effects::inbox::parse_control_line;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    let _ = parse_control_line(line, 1);
});

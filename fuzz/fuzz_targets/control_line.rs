//! Fuzz the control-line parser on arbitrary bytes.
#![no_main]
use agent_looper::records::control::ControlLine;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    let _ = ControlLine::parse(line, 1);
});

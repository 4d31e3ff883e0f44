//! Fuzz the control inbox with torn writes: the input (after its first byte, the piece size)
//! appended in pieces, polled between them, must read exactly like the whole file.
#![no_main]
use agent_looper::records::inbox::split_invariance;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&step, data)) = input.split_first() else {
        return;
    };
    if let Err(e) = split_invariance(data, usize::from(step) + 1) {
        panic!("{e}");
    }
});

//! Fuzz the prompt splitter in both modes with the default separator and one taken from
//! the input (first line), on arbitrary text.
#![no_main]
use agent_looper::config::PromptMode;
use agent_looper::prompts;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let default = prompts::compile_separator(r"^---\s*$").expect("default separator");
    for mode in [PromptMode::Single, PromptMode::Sequence] {
        let _ = prompts::split(text, mode, &default);
    }
    if let Some((first, rest)) = text.split_once('\n')
        && first.len() < 64
        && let Ok(sep) = prompts::compile_separator(first)
    {
        let _ = prompts::split(rest, PromptMode::Sequence, &sep);
    }
});

//! Fuzz the config loader: any UTF-8 document merged over the defaults must give a value
//! or an error, never a panic.
#![no_main]
use agent_looper::config::{Layers, Origin};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let mut layers = Layers::default();
    let _ = layers.apply_document(text, &Origin::File("fuzz.toml".into()));
});

//! `codex-looper`: see the crate documentation.
fn main() -> std::process::ExitCode {
    agent_looper::main_with("codex-looper")
}

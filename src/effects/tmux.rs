//! tmux adapter: the window options the farm tooling reads (`@codex_state`,
//! `@codex_stop_reason`, `@looper_run_dir`) and retry notifications. Commands are built
//! with `tmux_interface` and run against the server named by `$TMUX`; outside tmux every
//! call is a no-op.

use std::path::Path;
use std::process::Stdio;

use tmux_interface::{DisplayMessage, SetOption, Tmux, TmuxCommand};

use crate::engine::StopReason;

/// The manual's limit for `@codex_stop_reason`.
pub const STOP_REASON_MAX: usize = 250;

/// True when hybrid panes can be driven by this build.
pub fn hybrid_supported() -> bool {
    false
}

pub fn truncate_reason(reason: &str) -> String {
    reason.chars().take(STOP_REASON_MAX).collect()
}

/// `set-option -w -q -t <pane> <name> <value>`.
pub fn set_window_option<'a>(target: &'a str, name: &'a str, value: &'a str) -> TmuxCommand<'a> {
    SetOption::new()
        .window()
        .quiet()
        .target_pane(target)
        .option(name)
        .value(value)
        .build()
}

/// `display-message -t <pane> <text>`.
pub fn display_message<'a>(target: &'a str, text: &'a str) -> TmuxCommand<'a> {
    DisplayMessage::new()
        .target_pane(target)
        .message(text)
        .build()
}

/// The argv a command runs as (for tests and logs).
pub fn argv(cmd: TmuxCommand<'_>) -> Vec<String> {
    let mut v: Vec<String> = vec!["tmux".into()];
    v.extend(
        Tmux::with_command(cmd)
            .build()
            .to_vec()
            .into_iter()
            .skip(1)
            .map(|c| c.into_owned()),
    );
    v
}

fn run(cmd: TmuxCommand<'_>) {
    let mut c = Tmux::with_command(cmd).into_command();
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _ = c.status();
}

/// The supervisor's tmux window, when there is one.
pub struct WindowState {
    pane: Option<String>,
}

impl WindowState {
    pub fn new(run_dir: &Path) -> Self {
        let pane = std::env::var("TMUX")
            .ok()
            .filter(|t| !t.is_empty())
            .and_then(|_| std::env::var("TMUX_PANE").ok())
            .filter(|p| !p.is_empty());
        let me = Self { pane };
        if let Some(p) = &me.pane {
            let dir = run_dir.display().to_string();
            run(set_window_option(p, "@looper_run_dir", &dir));
        }
        me
    }

    pub fn set_running(&self) {
        if let Some(p) = &self.pane {
            run(set_window_option(p, "@codex_state", "RUN"));
            run(set_window_option(p, "@codex_stop_reason", ""));
        }
    }

    pub fn retrying(&self, status: &str, wait: f64, notify_after: f64) {
        if let Some(p) = &self.pane {
            let text = truncate_reason(status);
            run(set_window_option(p, "@codex_state", "RUN"));
            run(set_window_option(p, "@codex_stop_reason", &text));
            if notify_after > 0.0 && wait >= notify_after {
                let msg = format!("Looper retry wait: {text}");
                run(display_message(p, &msg));
            }
        }
    }

    pub fn finish(&self, reason: &StopReason) {
        if let Some(p) = &self.pane {
            run(set_window_option(p, "@codex_state", reason.window_state()));
            if !matches!(reason, StopReason::MaxLoops(_) | StopReason::DryRun) {
                let text = truncate_reason(&reason.reason());
                run(set_window_option(p, "@codex_stop_reason", &text));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_option_argv_uses_long_names() {
        assert_eq!(
            argv(set_window_option("%3", "@codex_state", "RUN")),
            [
                "tmux",
                "set-option",
                "-q",
                "-w",
                "-t",
                "%3",
                "@codex_state",
                "RUN"
            ]
        );
        assert_eq!(
            argv(display_message("%3", "Looper retry wait: x")),
            [
                "tmux",
                "display-message",
                "-t",
                "%3",
                "Looper retry wait: x"
            ]
        );
    }

    #[test]
    fn stop_reason_is_truncated_to_250_chars() {
        let long = "é".repeat(400);
        assert_eq!(truncate_reason(&long).chars().count(), 250);
    }
}

//! The command line's layer (D8): each `looper run` flag set over the files, with the flag
//! as its origin (so `config check --show-origin` and every error name it).

use super::{Layers, Origin, Value};
use crate::cli::{self, RunArgs};

pub(super) fn flag(name: &str) -> Origin {
    Origin::Flag(format!("--{name}"))
}

/// Layer the command-line flags over the files.
pub(super) fn apply_flags(layers: &mut Layers, args: &RunArgs) {
    gate_flags(layers, args);
    let mut set = |key: &str, value: Value, origin: Origin| {
        layers.set(format!("looper.{key}"), value, origin);
    };

    if let Some(mode) = args.mode {
        let m = match mode {
            cli::Mode::Single => "single",
            cli::Mode::Sequence => "sequence",
        };
        set("mode", Value::Str(m.into()), flag("mode"));
    }
    if let Some(p) = &args.prompt_file {
        set(
            "prompt_file",
            Value::Str(p.to_string_lossy().into()),
            flag("prompt-file"),
        );
    }
    let nums = [
        ("timeout_seconds", args.timeout, "timeout"),
        ("sleep_seconds", args.sleep, "sleep"),
        (
            "retry_notify_after_seconds",
            args.retry_notify_after,
            "retry-notify-after",
        ),
        ("max_runtime_seconds", args.max_runtime, "max-runtime"),
        ("max_cost_usd", args.max_cost, "max-cost"),
    ];
    for (key, value, name) in nums {
        if let Some(v) = value {
            set(key, Value::Num(v), flag(name));
        }
    }
    let ints = [
        ("max_loops", args.max_loops, "max-loops"),
        (
            "max_transient_retries",
            args.max_transient_retries,
            "max-transient-retries",
        ),
        (
            "completion_streak",
            args.completion_streak,
            "completion-streak",
        ),
        ("backup_keep", args.backup_keep, "backup-keep"),
        ("cb_no_progress", args.cb_no_progress, "cb-no-progress"),
        (
            "cb_output_decline",
            args.cb_output_decline,
            "cb-output-decline",
        ),
        (
            "cb_output_match_repeats",
            args.cb_output_match_repeats,
            "cb-output-match-repeats",
        ),
        ("max_tokens", args.max_tokens, "max-tokens"),
    ];
    for (key, value, name) in ints {
        if let Some(v) = value {
            set(
                key,
                Value::Int(i64::try_from(v).unwrap_or(i64::MAX)),
                flag(name),
            );
        }
    }
    if args.once {
        set("max_loops", Value::Int(1), flag("once"));
    }
    if let Some(re) = &args.complete_on {
        set("completion_enabled", Value::Bool(true), flag("complete-on"));
        set(
            "completion_marker",
            Value::Str(re.clone()),
            flag("complete-on"),
        );
    }
    if let Some(p) = &args.plan_file {
        set(
            "plan_file",
            Value::Str(p.to_string_lossy().into()),
            flag("plan-file"),
        );
    }
    if args.backup {
        set("backup_enabled", Value::Bool(true), flag("backup"));
    }
    if args.backup_dirty {
        set("backup_enabled", Value::Bool(true), flag("backup-dirty"));
        set("backup_dirty", Value::Bool(true), flag("backup-dirty"));
    }
    if let Some(p) = &args.backup_prefix {
        set(
            "backup_prefix",
            Value::Str(p.clone()),
            flag("backup-prefix"),
        );
    }
    if let Some(re) = &args.cb_output_match {
        set(
            "cb_output_match_pattern",
            Value::Str(re.clone()),
            flag("cb-output-match"),
        );
    }
    if args.fresh_session_per_loop {
        set(
            "fresh_session_per_loop",
            Value::Bool(true),
            flag("fresh-session-per-loop"),
        );
    }
    if args.reuse_session {
        set(
            "fresh_session_per_loop",
            Value::Bool(false),
            flag("reuse-session"),
        );
    }
    if args.ignore_nonzero {
        set("ignore_nonzero", Value::Bool(true), flag("ignore-nonzero"));
    }
    if args.stop_on_nonzero {
        set(
            "ignore_nonzero",
            Value::Bool(false),
            flag("stop-on-nonzero"),
        );
    }
    if args.hold_on_stop {
        set("hold_on_stop", Value::Bool(true), flag("hold-on-stop"));
    }
    if args.keep_agent_pane {
        set(
            "keep_agent_pane",
            Value::Bool(true),
            flag("keep-agent-pane"),
        );
    }
    if args.plan_forbid_removal {
        set(
            "plan_forbid_removal",
            Value::Bool(true),
            flag("plan-forbid-removal"),
        );
    }
    if args.completion_must_be_last {
        set(
            "completion_must_be_last",
            Value::Bool(true),
            flag("completion-must-be-last"),
        );
    }
    if let Some(layout) = args.tmux_layout {
        let l = match layout {
            cli::Layout::Auto => "auto",
            cli::Layout::Single => "single",
            cli::Layout::Split => "split",
        };
        set("tmux_layout", Value::Str(l.into()), flag("tmux-layout"));
    }
}

/// The `[verify]` and `[review]` flags (issue 15).
fn gate_flags(layers: &mut Layers, args: &RunArgs) {
    let mut set = |key: &str, value: Value, name: &str| layers.set(key, value, flag(name));
    if let Some(cmd) = &args.verify_cmd {
        set("verify.command", Value::List(cmd.0.clone()), "verify-cmd");
    }
    if args.verify_every_loop {
        set(
            "verify.when",
            Value::Str("every_loop".into()),
            "verify-every-loop",
        );
    }
    if let Some(t) = args.verify_timeout {
        set("verify.timeout_seconds", Value::Num(t), "verify-timeout");
    }
    if let Some(n) = args.cb_verify_failures {
        set(
            "verify.cb_verify_failures",
            Value::Int(i64::try_from(n).unwrap_or(i64::MAX)),
            "cb-verify-failures",
        );
    }
    if let Some(a) = &args.review_agent {
        set("review.agent", Value::Str(a.clone()), "review-agent");
    }
    if args.review_every_loop {
        set(
            "review.when",
            Value::Str("every_loop".into()),
            "review-every-loop",
        );
    }
    if let Some(n) = args.review_max_rounds {
        set(
            "review.max_rounds",
            Value::Int(i64::try_from(n).unwrap_or(i64::MAX)),
            "review-max-rounds",
        );
    }
}

//! The command line's layer (D8): each `looper run` flag set over the files, with the flag
//! as its origin (so `config check --show-origin` and every error name it).

use super::{Layers, Origin, Value, WorktreeSettings, layers, schema};
use crate::cli::{self, RunArgs};
use crate::error::{Error, Result};

pub(super) fn flag(name: &str) -> Origin {
    Origin::Flag(format!("--{name}"))
}

/// A numeric flag's token, checked as the key `looper.<key>` would be in a file.
fn number(key: &str, token: &str, name: &str) -> Result<Value> {
    number_in("looper", key, token, name)
}

/// A numeric flag's token for the key `<section>.<key>`.
fn number_in(section: &str, key: &str, token: &str, name: &str) -> Result<Value> {
    let spec = schema::section(section)
        .and_then(|s| s.keys.iter().find(|k| k.name == key))
        .ok_or_else(|| Error::Usage(format!("--{name}: no such key {section}.{key}")))?;
    let t = token.trim();
    let parsed = match spec.kind {
        schema::Kind::Int { .. } => t.parse::<i64>().ok().map(toml::Value::Integer),
        _ => t
            .parse::<f64>()
            .ok()
            .filter(|n| !n.is_nan())
            .map(toml::Value::Float),
    };
    let invalid = || {
        Error::Usage(format!(
            "--{name}: expected {}, found {token}",
            spec.kind.expected()
        ))
    };
    let value = parsed.ok_or_else(invalid)?;
    layers::check(spec, &value, &flag(name), &format!("{section}.{key}")).map_err(|_| invalid())
}

/// Layer the command-line flags over the files.
pub(super) fn apply_flags(layers: &mut Layers, args: &RunArgs) -> Result<()> {
    gate_flags(layers, args)?;
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
    // Numbers arrive as the tokens typed (clap takes `-1` as a value, not a flag) and are
    // checked against the key's schema here, so the message names the flag and the
    // constraint: `--max-loops: expected a whole number >= 0, found -1`.
    let numbers = [
        ("timeout_seconds", &args.timeout, "timeout"),
        ("sleep_seconds", &args.sleep, "sleep"),
        (
            "retry_notify_after_seconds",
            &args.retry_notify_after,
            "retry-notify-after",
        ),
        ("max_runtime_seconds", &args.max_runtime, "max-runtime"),
        ("max_cost_usd", &args.max_cost, "max-cost"),
        ("max_loops", &args.max_loops, "max-loops"),
        (
            "max_transient_retries",
            &args.max_transient_retries,
            "max-transient-retries",
        ),
        (
            "completion_streak",
            &args.completion_streak,
            "completion-streak",
        ),
        ("backup_keep", &args.backup_keep, "backup-keep"),
        ("cb_no_progress", &args.cb_no_progress, "cb-no-progress"),
        (
            "cb_output_decline",
            &args.cb_output_decline,
            "cb-output-decline",
        ),
        (
            "cb_output_match_repeats",
            &args.cb_output_match_repeats,
            "cb-output-match-repeats",
        ),
        ("max_tokens", &args.max_tokens, "max-tokens"),
        (
            "daily_max_tokens",
            &args.daily_max_tokens,
            "daily-max-tokens",
        ),
        ("daily_max_cost_usd", &args.daily_max_cost, "daily-max-cost"),
        ("min_headroom_percent", &args.min_headroom, "min-headroom"),
    ];
    for (key, token, name) in numbers {
        if let Some(token) = token {
            let value = number(key, token, name)?;
            set(key, value, flag(name));
        }
    }
    if args.once {
        set("max_loops", Value::Int(1), flag("once"));
    }
    if let Some(a) = args.daily_budget_action {
        let word = match a {
            cli::DailyBudgetAction::Wait => "wait",
            cli::DailyBudgetAction::Stop => "stop",
        };
        set(
            "daily_budget_action",
            Value::Str(word.into()),
            flag("daily-budget-action"),
        );
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
    if args.worktree {
        set("worktree", Value::Bool(true), flag("worktree"));
    }
    if args.no_worktree {
        set("worktree", Value::Bool(false), flag("no-worktree"));
    }
    if let Some(c) = args.worktree_cleanup {
        let w = match c {
            cli::WorktreeCleanup::Auto => "auto",
            cli::WorktreeCleanup::Keep => "keep",
            cli::WorktreeCleanup::Remove => "remove",
        };
        set(
            "worktree_cleanup",
            Value::Str(w.into()),
            flag("worktree-cleanup"),
        );
    }
    if let Some(b) = &args.base {
        set("worktree_base", Value::Str(b.clone()), flag("base"));
    }
    if args.trust_worktree {
        set("worktree_trust", Value::Bool(true), flag("trust-worktree"));
    }
    if let Some(layout) = args.tmux_layout {
        let l = match layout {
            cli::Layout::Auto => "auto",
            cli::Layout::Single => "single",
            cli::Layout::Split => "split",
        };
        set("tmux_layout", Value::Str(l.into()), flag("tmux-layout"));
    }
    Ok(())
}

/// The `[verify]` and `[review]` flags (issue 15).
fn gate_flags(layers: &mut Layers, args: &RunArgs) -> Result<()> {
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
    if let Some(t) = &args.verify_timeout {
        let v = number_in("verify", "timeout_seconds", t, "verify-timeout")?;
        set("verify.timeout_seconds", v, "verify-timeout");
    }
    if let Some(n) = &args.cb_verify_failures {
        let v = number_in("verify", "cb_verify_failures", n, "cb-verify-failures")?;
        set("verify.cb_verify_failures", v, "cb-verify-failures");
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
    if let Some(n) = &args.review_max_rounds {
        let v = number_in("review", "max_rounds", n, "review-max-rounds")?;
        set("review.max_rounds", v, "review-max-rounds");
    }
    Ok(())
}

/// A run's label, its worktree and its place in a `--parallel` group, from the flags: the
/// flags that describe a worktree need one, and a member of a group (`--parallel-index I`,
/// given by `--parallel` itself) is `<label>-I`, on branch `<branch>-I`.
/// What the flags say about a run's worktree, label and `--parallel` group.
pub(super) struct Identity {
    pub worktree: Option<WorktreeSettings>,
    pub label: Option<String>,
    pub parallel_member: Option<(String, u64)>,
}

pub(super) fn worktree_and_label(
    args: &RunArgs,
    worktree: Option<WorktreeSettings>,
) -> Result<Identity> {
    if worktree.is_none() {
        let needs = [
            ("--branch", args.branch.is_some()),
            ("--base", args.base.is_some()),
            ("--parallel", args.parallel.is_some()),
            ("--trust-worktree", args.trust_worktree),
        ];
        if let Some((flag, _)) = needs.iter().find(|(_, given)| *given) {
            return Err(Error::Usage(format!(
                "{flag} needs --worktree (or [looper].worktree = true): {}",
                if *flag == "--parallel" {
                    "parallel runs in one checkout would work over each other; each needs a worktree of its own"
                } else {
                    "it describes the run's worktree"
                }
            )));
        }
    }
    let (label, member) = match (args.parallel_index, &args.label) {
        (Some(i), Some(group)) => (Some(format!("{group}-{i}")), Some((group.clone(), i))),
        (Some(_), None) => {
            return Err(Error::Usage(
                "--parallel-index is internal to --parallel and needs --label".into(),
            ));
        }
        (None, l) => (l.clone(), None),
    };
    let worktree = worktree.map(|mut w| {
        if let (Some(b), Some((_, i))) = (&w.branch, &member) {
            w.branch = Some(format!("{b}-{i}"));
        }
        w
    });
    Ok(Identity {
        worktree,
        label,
        parallel_member: member,
    })
}

//! Settings resolution (D8, D6): the built-in defaults, the project file, a preset, the
//! environment, flags and agent args layered in that order, the agent selected (D1), then
//! every value read into `Settings`. Nothing is written.

use std::path::{Path, PathBuf};

use super::agent::agent_settings;
use super::reader::Reader;
use super::{
    DEFAULT_CONFIG_FILE, DEFAULT_PROMPT_FILE, DailyBudgetAction, Invocation, LEGACY_PROMPT_FILE,
    Layers, Layout, Origin, PromptMode, Settings, Value, WorktreeSettings, absolutize, flags,
    gates, human, layers, preset, schema,
};
use crate::cli::{self, RunArgs};
use crate::error::{Error, Result};

/// Built-in agents: codex (json), claude (hybrid), gemini (json) (D9, D27).
fn builtin_agents(layers: &mut Layers) {
    for (name, interface) in [("codex", "json"), ("claude", "hybrid"), ("gemini", "json")] {
        layers.set(
            format!("agents.{name}.kind"),
            Value::Str(name.into()),
            Origin::Default,
        );
        layers.set(
            format!("agents.{name}.interface"),
            Value::Str(interface.into()),
            Origin::Default,
        );
    }
}

fn default_layers() -> Layers {
    let mut layers = Layers::default();
    for (section, spec) in schema::SECTIONS
        .iter()
        .flat_map(|s| s.keys.iter().map(move |k| (s.name, k)))
    {
        let value = match spec.default {
            schema::DefaultValue::Str(s) => Value::Str(s.into()),
            schema::DefaultValue::Int(i) => Value::Int(i),
            schema::DefaultValue::Num(n) => Value::Num(n),
            schema::DefaultValue::Bool(b) => Value::Bool(b),
            schema::DefaultValue::EmptyList => Value::List(vec![]),
            schema::DefaultValue::None => continue,
        };
        layers.set(format!("{section}.{}", spec.name), value, Origin::Default);
    }
    builtin_agents(&mut layers);
    layers
}

/// Load, layer and validate. Nothing is written.
pub fn resolve(args: &RunArgs, inv: &Invocation) -> Result<Settings> {
    let mut layers = default_layers();

    let explicit_config = args.config.is_some();
    let config_rel = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_FILE));
    let config_path = inv.base_dir.join(&config_rel);
    let config_found = config_path.is_file();
    if config_found {
        let text = layers::read_text(&config_path, "the config file")?;
        layers.apply_document(&text, &Origin::File(config_rel.to_string_lossy().into()))?;
    } else if explicit_config {
        let what = if config_path.is_dir() {
            "is a directory, not a config file"
        } else if config_path.exists() {
            "is not a regular file"
        } else {
            "file not found"
        };
        return Err(Error::Usage(format!(
            "--config {}: {what}",
            config_rel.display()
        )));
    }

    if let Some(spec) = &args.preset {
        let found = preset::resolve(spec, &inv.base_dir, &inv.env)?;
        layers.apply_document(&found.text, &Origin::Preset(found.display.clone()))?;
    }

    if let Some((var, value)) = inv.env_var("LAYOUT") {
        let spec =
            schema::looper_key("tmux_layout").ok_or_else(|| Error::Usage("schema".into()))?;
        let normalized = value.trim().to_ascii_lowercase();
        let checked = layers::check(
            spec,
            &toml::Value::String(normalized),
            &Origin::Env(var.to_string()),
            "looper.tmux_layout",
        )?;
        layers.set("looper.tmux_layout", checked, Origin::Env(var.to_string()));
    }

    flags::apply_flags(&mut layers, args)?;

    // Agent selection (D1): --agent, then the wrapper's agent, then default_agent.
    let (agent_name, agent_origin) = if let Some(a) = &args.agent {
        (a.clone(), "--agent".to_string())
    } else if let Some(w) = &inv.wrapper_agent {
        (w.clone(), "the wrapper name".to_string())
    } else {
        let entry = layers
            .get("looper.default_agent")
            .ok_or_else(|| Error::Usage("default_agent missing".into()))?;
        let Value::Str(s) = &entry.value else {
            return Err(Error::Usage("default_agent is not a string".into()));
        };
        (
            s.clone(),
            format!("looper.default_agent ({})", entry.origin),
        )
    };
    let known = layers.agent_names();
    if !known.contains(&agent_name) {
        let hint = schema::suggest(&agent_name, known.iter().map(String::as_str))
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        return Err(Error::Usage(format!(
            "unknown agent `{agent_name}` (from {agent_origin}){hint}; available: {}. Define [agents.{agent_name}] in {}",
            known.join(", "),
            DEFAULT_CONFIG_FILE
        )));
    }

    let prefix = format!("agents.{agent_name}");
    if let Some(i) = args.interface {
        let s = match i {
            cli::Interface::Json => "json",
            cli::Interface::Hybrid => "hybrid",
        };
        layers.set(
            format!("{prefix}.interface"),
            Value::Str(s.into()),
            flags::flag("interface"),
        );
    }
    if let Some(cwd) = &args.cwd {
        layers.set(
            format!("{prefix}.cwd"),
            Value::Str(cwd.to_string_lossy().into()),
            flags::flag("cwd"),
        );
    }
    if !args.agent_args.is_empty() {
        let mut extra = match layers
            .get(&format!("{prefix}.extra_args"))
            .map(|e| &e.value)
        {
            Some(Value::List(l)) => l.clone(),
            _ => vec![],
        };
        extra.extend(args.agent_args.iter().cloned());
        layers.set(
            format!("{prefix}.extra_args"),
            Value::List(extra),
            Origin::AgentArgs,
        );
    }

    build(layers, args, inv, agent_name, config_path, config_found)
}

fn build(
    layers: Layers,
    args: &RunArgs,
    inv: &Invocation,
    agent_name: String,
    config_path: PathBuf,
    config_found: bool,
) -> Result<Settings> {
    let r = Reader { layers: &layers };
    let agent = agent_settings(&r, inv, &agent_name)?;

    // Prompt mode and file: the manual's five rules.
    let mode_explicit = r.explicit("looper.mode");
    let prompt_explicit = r.explicit("looper.prompt_file");
    let configured_prompt = PathBuf::from(r.str("looper.prompt_file"));
    let (mode, prompt_file) = match (mode_explicit, prompt_explicit) {
        (true, true) => (parse_mode(&r.str("looper.mode")), configured_prompt),
        (true, false) => {
            let mode = parse_mode(&r.str("looper.mode"));
            let file = match mode {
                PromptMode::Sequence => LEGACY_PROMPT_FILE,
                PromptMode::Single => DEFAULT_PROMPT_FILE,
            };
            (mode, PathBuf::from(file))
        }
        (false, true) => {
            let is_legacy = absolutize(&inv.base_dir, &configured_prompt)
                == inv.base_dir.join(LEGACY_PROMPT_FILE);
            let mode = if is_legacy {
                PromptMode::Sequence
            } else {
                PromptMode::Single
            };
            (mode, configured_prompt)
        }
        (false, false) => {
            if !inv.base_dir.join(DEFAULT_PROMPT_FILE).exists()
                && inv.base_dir.join(LEGACY_PROMPT_FILE).exists()
            {
                (PromptMode::Sequence, PathBuf::from(LEGACY_PROMPT_FILE))
            } else {
                (PromptMode::Single, PathBuf::from(DEFAULT_PROMPT_FILE))
            }
        }
    };

    let flags::Identity {
        worktree,
        label,
        parallel_member,
    } = flags::worktree_and_label(
        args,
        r.bool("looper.worktree").then(|| WorktreeSettings {
            cleanup: crate::engine::worktree::CleanupPolicy::parse(
                &r.str("looper.worktree_cleanup"),
            )
            .unwrap_or_default(),
            base: r.opt_str("looper.worktree_base"),
            branch: args.branch.clone(),
            trust: r.bool("looper.worktree_trust"),
        }),
    )?;

    let completion_marker = r
        .bool("looper.completion_enabled")
        .then(|| r.str("looper.completion_marker"));
    let verify = gates::verify(&r, &inv.base_dir, &agent.cwd)?;
    let review = gates::review(&r, inv)?;
    // The agent's own headroom wins over `[looper]`'s, and `--min-headroom` over both.
    let min_headroom_percent = match layers.get("looper.min_headroom_percent") {
        Some(e) if matches!(e.origin, Origin::Flag(_)) => None,
        _ => agent.min_headroom_percent,
    }
    .or(Some(r.num("looper.min_headroom_percent")))
    .filter(|n| *n > 0.0);
    let layout = match r.str("looper.tmux_layout").as_str() {
        "single" => Layout::Single,
        "split" => Layout::Split,
        _ => Layout::Auto,
    };

    Ok(Settings {
        base_dir: inv.base_dir.clone(),
        config_path,
        config_found,
        preset: args.preset.clone(),
        agent,
        mode,
        prompt_file: absolutize(&inv.base_dir, &prompt_file),
        separator: r.str("looper.separator"),
        label,
        timeout: r.seconds("looper.timeout_seconds"),
        sleep: r.seconds("looper.sleep_seconds"),
        fresh_session_per_loop: r.bool("looper.fresh_session_per_loop"),
        reload_prompt_each_loop: r.bool("looper.reload_prompt_each_loop"),
        max_loops: r.int("looper.max_loops"),
        max_transient_retries: r.int("looper.max_transient_retries"),
        retry_notify_after: r.seconds("looper.retry_notify_after_seconds"),
        retry_backoff_base: r.seconds("looper.retry_backoff_base_seconds"),
        retry_backoff_max: r.seconds("looper.retry_backoff_max_seconds"),
        rate_limit_max_wait: r.seconds("looper.rate_limit_max_wait_seconds"),
        log_dir: absolutize(&inv.base_dir, Path::new(&r.str("looper.log_dir"))),
        kill_on_stop_pattern: r.bool("looper.kill_on_stop_pattern"),
        ignore_nonzero: r.bool("looper.ignore_nonzero"),
        completion_marker,
        completion_streak: r.int("looper.completion_streak").max(1),
        plan_file: r
            .opt_str("looper.plan_file")
            .map(|p| absolutize(&inv.base_dir, Path::new(&p))),
        backup_enabled: r.bool("looper.backup_enabled"),
        backup_prefix: r.str("looper.backup_prefix"),
        backup_keep: r.int("looper.backup_keep"),
        backup_dirty: r.bool("looper.backup_dirty"),
        cb_no_progress: r.int("looper.cb_no_progress"),
        cb_output_decline: r.int("looper.cb_output_decline"),
        cb_output_match_pattern: r.opt_str("looper.cb_output_match_pattern"),
        cb_output_match_repeats: r.int("looper.cb_output_match_repeats").max(1),
        max_runtime: Some(r.seconds("looper.max_runtime_seconds")).filter(|d| !d.is_zero()),
        max_tokens: Some(r.int("looper.max_tokens")).filter(|n| *n > 0),
        max_cost_usd: Some(r.num("looper.max_cost_usd")).filter(|c| *c > 0.0),
        daily_max_tokens: Some(r.int("looper.daily_max_tokens")).filter(|n| *n > 0),
        daily_max_cost_usd: Some(r.num("looper.daily_max_cost_usd")).filter(|c| *c > 0.0),
        daily_budget_action: match r.str("looper.daily_budget_action").as_str() {
            "stop" => DailyBudgetAction::Stop,
            _ => DailyBudgetAction::Wait,
        },
        min_headroom_percent,
        terminate_grace: r.seconds("looper.terminate_grace_seconds"),
        pipe_leak_timeout: r.seconds("looper.pipe_leak_timeout_seconds"),
        tmux_layout: layout,
        hold_on_stop: r.bool("looper.hold_on_stop"),
        keep_agent_pane: r.bool("looper.keep_agent_pane"),
        plan_forbid_removal: r.bool("looper.plan_forbid_removal"),
        completion_must_be_last: r.bool("looper.completion_must_be_last"),
        verify,
        review,
        worktree,
        parallel: args.parallel,
        parallel_member,
        dry_run: args.dry_run,
        human: human::read(&layers)?,
        layers,
    })
}

fn parse_mode(s: &str) -> PromptMode {
    if s == "sequence" {
        PromptMode::Sequence
    } else {
        PromptMode::Single
    }
}

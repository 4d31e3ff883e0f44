//! `looper doctor`: can the configured agents run here? tmux? git? a valid config?

use crate::cli::{DoctorArgs, RunArgs};
use crate::config::run::{self, find_program};
use crate::config::{self, Invocation};
use crate::effects::agent_cli;
use crate::error::{Error, Result, exit_code};

/// First line of `<program> <arg>`, bounded in time, in a process group of its own that is
/// killed afterwards (a hung probe and what it started never outlive `doctor`).
fn version_of(program: &std::path::Path, arg: &str) -> Option<String> {
    agent_cli::version_of(program, arg, &[], agent_cli::VERSION_LIMIT)
}

pub fn doctor(args: &DoctorArgs, wrapper: Option<&str>) -> Result<i32> {
    let inv = Invocation::from_process(wrapper)?;
    let run_args = RunArgs {
        agent: args.agent.clone(),
        config: args.config.clone(),
        ..RunArgs::default()
    };
    let path = inv.env.get("PATH").cloned();
    let mut ok = true;
    let settings = match config::resolve(&run_args, &inv) {
        Ok(s) => {
            crate::say!(
                "ok: config {} ({})",
                s.config_path.display(),
                if s.config_found {
                    "found, valid"
                } else {
                    "not found; defaults apply"
                }
            );
            Some(s)
        }
        Err(e) => {
            crate::say!("error: config: {e}");
            ok = false;
            None
        }
    };
    let selected = settings.as_ref().map(|s| s.agent.name.clone());
    let agents: Vec<String> = match &settings {
        Some(s) if args.agent.is_some() => vec![s.agent.name.clone()],
        Some(s) => s.layers.agent_names(),
        None => vec![],
    };
    let mut selected_runs = true;
    for name in &agents {
        let ra = RunArgs {
            agent: Some(name.clone()),
            config: args.config.clone(),
            ..RunArgs::default()
        };
        let Ok(s) = config::resolve(&ra, &inv) else {
            crate::say!("error: agent {name}: invalid configuration");
            continue;
        };
        let program = s
            .agent
            .first_command
            .as_ref()
            .and_then(|t| t.first().cloned())
            .unwrap_or_else(|| s.agent.executable.clone());
        let role = if Some(name) == selected.as_ref() {
            "selected agent"
        } else {
            "agent"
        };
        match find_program(&program, &s.agent.cwd, path.as_deref()) {
            Some(p) => {
                let version =
                    version_of(&p, "--version").unwrap_or_else(|| "version unknown".into());
                crate::say!(
                    "ok: {name} ({role}, kind {}, interface {}) -> {} ({version})",
                    s.agent.kind.as_str(),
                    s.agent.interface.as_str(),
                    p.display()
                );
            }
            None => {
                crate::say!("missing: {name} ({role}): `{program}` is not on PATH");
                if Some(name) == selected.as_ref() {
                    selected_runs = false;
                }
            }
        }
    }
    match find_program("tmux", &inv.base_dir, path.as_deref()) {
        Some(p) => crate::say!(
            "ok: tmux -> {} ({})",
            p.display(),
            version_of(&p, "-V").unwrap_or_else(|| "version unknown".into())
        ),
        None => crate::say!(
            "missing: tmux (needed for the farm, split layout and hybrid panes; --local runs work without it)"
        ),
    }
    // Would a run start? The same checks as `looper run` (a dry run: programs were
    // looked at above, one by one).
    if let Some(s) = &settings {
        let dry = config::Settings {
            dry_run: true,
            ..s.clone()
        };
        match run::prepare(dry, &inv) {
            Ok(cfg) => crate::say!(
                "ok: a run would start: {} prompt(s) from {} ({} mode), interface {}",
                cfg.prompts.prompts.len(),
                cfg.settings.prompt_file.display(),
                cfg.settings.mode.as_str(),
                cfg.settings.agent.interface.as_str()
            ),
            Err(e) => {
                crate::say!("error: run: {e}");
                ok = false;
            }
        }
    }
    let cwd = settings
        .as_ref()
        .map(|s| s.agent.cwd.clone())
        .unwrap_or_else(|| inv.base_dir.clone());
    match git2::Repository::discover(&cwd) {
        Ok(repo) if repo.workdir().is_some() => {
            let head = repo
                .head()
                .ok()
                .and_then(|h| h.target())
                .map(|o| o.to_string());
            match head {
                Some(h) => crate::say!(
                    "ok: git work tree at {} (HEAD {})",
                    repo.workdir()
                        .map(|w| w.display().to_string())
                        .unwrap_or_default(),
                    &h[..12.min(h.len())]
                ),
                None => crate::say!(
                    "warning: git work tree at {} has no commits yet (--backup and --cb-no-progress need one)",
                    cwd.display()
                ),
            }
        }
        _ => crate::say!(
            "warning: {} is not in a git work tree (--backup and --cb-no-progress need one)",
            cwd.display()
        ),
    }
    if !ok {
        return Err(Error::WithCode {
            message: "the configuration is invalid".into(),
            code: exit_code::USAGE,
        });
    }
    if !selected_runs {
        return Err(Error::WithCode {
            message: format!(
                "the selected agent `{}` cannot run here",
                selected.unwrap_or_default()
            ),
            code: exit_code::AGENT_FAILED,
        });
    }
    Ok(0)
}

//! One agent table resolved into `AgentSettings`: its kind, interface (D9), commands, cwd,
//! environment and stop patterns; the run's agent and the reviewer's alike.

use std::collections::BTreeMap;
use std::path::Path;

use super::reader::Reader;
use super::{AgentKind, AgentSettings, Interface, Invocation, Value, absolutize, schema};
use crate::error::{Error, Result};

/// The agent table `agent_name`, resolved (the run's agent, or the reviewer's).
pub(super) fn agent_settings(
    r: &Reader,
    inv: &Invocation,
    agent_name: &str,
) -> Result<AgentSettings> {
    let a = |k: &str| format!("agents.{agent_name}.{k}");

    let kind_str = r.opt_str(&a("kind")).unwrap_or_else(|| {
        if AgentKind::parse(agent_name).is_some() {
            agent_name.to_string()
        } else {
            "generic".into()
        }
    });
    let kind = AgentKind::parse(&kind_str).ok_or_else(|| {
        Error::config(
            r.origin(&a("kind")),
            a("kind"),
            schema::AGENT_KEYS[0].kind.expected(),
            kind_str.clone(),
        )
    })?;
    let interface_explicit = r.explicit(&a("interface"));
    let interface = match r.opt_str(&a("interface")).as_deref() {
        Some("hybrid") => Interface::Hybrid,
        Some(_) => Interface::Json,
        None if kind == AgentKind::Claude => Interface::Hybrid,
        None => Interface::Json,
    };
    if interface == Interface::Hybrid && !matches!(kind, AgentKind::Claude | AgentKind::Codex) {
        return Err(Error::config(
            r.origin(&a("interface")),
            a("interface"),
            "\"json\" (hybrid is supported for claude and codex agents only)",
            format!("\"hybrid\" for a {} agent", kind.as_str()),
        ));
    }
    let first_command = r.list(&a("first_command"));
    if kind == AgentKind::Generic && first_command.is_none() {
        return Err(Error::config(
            r.origin(&a("kind")),
            a("first_command"),
            "a command template for a generic agent, e.g. first_command = [\"my-agent\", \"{prompt}\"]",
            "nothing",
        ));
    }
    if let Some(cmd) = r.list(&a("interactive_command"))
        && cmd.first().is_none_or(|c| c.trim().is_empty())
    {
        return Err(Error::config(
            r.origin(&a("interactive_command")),
            a("interactive_command"),
            "a non-empty array of strings",
            "an empty command",
        ));
    }
    let cwd_rel = r.opt_str(&a("cwd")).unwrap_or_else(|| ".".into());
    let cwd = absolutize(&inv.base_dir, Path::new(&cwd_rel));
    if !cwd.is_dir() {
        return Err(Error::Usage(format!(
            "agent cwd does not exist or is not a directory: {} (from {})",
            cwd.display(),
            r.origin(&a("cwd"))
        )));
    }
    let stop_patterns = r
        .list(&a("stop_patterns"))
        .or_else(|| r.list("looper.stop_patterns"))
        .unwrap_or_else(|| {
            schema::DEFAULT_STOP_PATTERNS
                .iter()
                .map(|s| s.to_string())
                .collect()
        });
    let scan_stdout = r.bool("looper.scan_stdout_for_stop_patterns")
        || r.opt_bool(&a("scan_stdout_for_stop_patterns"))
            .unwrap_or(false);
    let env = match r.value(&a("env")) {
        Some(Value::Map(m)) => m.clone(),
        _ => BTreeMap::new(),
    };
    Ok(AgentSettings {
        name: agent_name.to_string(),
        kind,
        interface,
        interface_explicit,
        executable: r.opt_str(&a("executable")).unwrap_or_else(|| match kind {
            AgentKind::Generic => String::new(),
            k => k.as_str().to_string(),
        }),
        cwd,
        env,
        extra_args: r.list(&a("extra_args")).unwrap_or_default(),
        model: r.opt_str(&a("model")),
        effort: r.opt_str(&a("effort")),
        interactive_command: r.list(&a("interactive_command")),
        first_command,
        resume_command: r.list(&a("resume_command")),
        stop_patterns,
        scan_stdout_for_stop_patterns: scan_stdout,
        account: r.opt_str(&a("account")),
        min_headroom_percent: match r.value(&a("min_headroom_percent")) {
            Some(Value::Num(n)) => Some(*n),
            Some(Value::Int(i)) => Some(*i as f64),
            _ => None,
        },
    })
}

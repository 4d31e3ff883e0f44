//! Agent argv: the first-prompt and resume commands of each kind (D12, D27), templates for
//! generic agents, and the run-context environment (D4). Prompts are always one argv
//! element (or stdin), never part of a shell string.

use std::collections::BTreeMap;

use crate::config::{AgentKind, AgentSettings};
use crate::engine::SessionRef;
use crate::error::{Error, Result};

/// Linux refuses a single argument longer than this (MAX_ARG_STRLEN minus the NUL).
pub const MAX_ARG_BYTES: usize = 128 * 1024 - 1;

/// What a prompt attempt needs to render a command.
#[derive(Clone, Debug)]
pub struct PromptContext<'a> {
    pub prompt: &'a str,
    pub session: &'a SessionRef,
    pub loop_number: u64,
    pub prompt_index: usize,
    pub label: &'a str,
    pub run_dir: &'a str,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AgentCommand {
    pub program: String,
    pub args: Vec<String>,
    /// When set, written to the agent's stdin (prompts too large for argv).
    pub stdin: Option<String>,
}

impl AgentCommand {
    pub fn argv(&self) -> Vec<String> {
        std::iter::once(self.program.clone())
            .chain(self.args.iter().cloned())
            .collect()
    }

    /// The command as a shell would read it, for `--dry-run` and logs only.
    pub fn display(&self) -> String {
        let quoted: Vec<String> = self
            .argv()
            .iter()
            .map(|a| {
                shlex::try_quote(a)
                    .map(|c| c.into_owned())
                    .unwrap_or_else(|_| format!("{a:?}"))
            })
            .collect();
        let mut s = quoted.join(" ");
        if self.stdin.is_some() {
            s.push_str(" < (prompt on stdin)");
        }
        s
    }
}

/// `extra_args`, then `--model`, then the kind's effort flag.
fn extra(agent: &AgentSettings) -> Vec<String> {
    let mut out = agent.extra_args.clone();
    if let Some(m) = &agent.model {
        out.push("--model".into());
        out.push(m.clone());
    }
    if let Some(e) = &agent.effort {
        match agent.kind {
            AgentKind::Codex => {
                out.push("--config".into());
                out.push(format!(
                    "model_reasoning_effort={}",
                    serde_json::Value::String(e.clone())
                ));
            }
            AgentKind::Claude => {
                out.push("--effort".into());
                out.push(e.clone());
            }
            AgentKind::Gemini | AgentKind::Generic => {}
        }
    }
    out
}

pub fn build(agent: &AgentSettings, ctx: &PromptContext) -> Result<AgentCommand> {
    let resume = ctx.session.resume;
    let template = if resume {
        agent
            .resume_command
            .as_ref()
            .or(agent.first_command.as_ref())
    } else {
        agent.first_command.as_ref()
    };
    if let Some(t) = template {
        return render_template(t, ctx);
    }
    let exe = agent.executable.clone();
    let big = ctx.prompt.len() > MAX_ARG_BYTES;
    let mut args: Vec<String> = Vec::new();
    let mut stdin = None;
    match agent.kind {
        AgentKind::Codex => {
            args.extend(["exec".into(), "--json".into()]);
            args.extend(extra(agent));
            // D27: resume by the exact thread id; never `resume --last`.
            if let (true, Some(id)) = (resume, &ctx.session.id) {
                args.push("resume".into());
                args.push(id.clone());
            }
            if big {
                args.push("-".into());
                stdin = Some(ctx.prompt.to_string());
            } else {
                args.push("--".into());
                args.push(ctx.prompt.to_string());
            }
        }
        AgentKind::Claude => {
            args.extend([
                "-p".into(),
                "--output-format".into(),
                "stream-json".into(),
                "--verbose".into(),
            ]);
            args.extend(extra(agent));
            if let Some(id) = &ctx.session.id {
                args.push(if resume { "--resume" } else { "--session-id" }.into());
                args.push(id.clone());
            }
            if big {
                stdin = Some(ctx.prompt.to_string());
            } else {
                args.push("--".into());
                args.push(ctx.prompt.to_string());
            }
        }
        AgentKind::Gemini => {
            args.extend(["--output-format".into(), "stream-json".into()]);
            args.extend(extra(agent));
            if let Some(id) = &ctx.session.id {
                args.push(if resume { "--resume" } else { "--session-id" }.into());
                args.push(id.clone());
            }
            if big {
                stdin = Some(ctx.prompt.to_string());
                args.push("--prompt=".into());
            } else {
                // `--prompt=<text>` keeps a prompt that starts with `-` a value, not an option.
                args.push(format!("--prompt={}", ctx.prompt));
            }
        }
        AgentKind::Generic => {
            return Err(Error::Usage(format!(
                "agents.{}.first_command: a generic agent needs a command template",
                agent.name
            )));
        }
    }
    Ok(AgentCommand {
        program: exe,
        args,
        stdin,
    })
}

/// claude settings for a looper pane, passed with `--settings` (a JSON string is accepted
/// there since 2.1.x; both pinned versions take it):
/// - `autoContinueAtUsageLimit: false`: from 2.1.332 claude continues a session by itself
///   when a usage limit resets (on by default); in a looper pane the looper owns
///   continuation (issue 18 item 4), so a reset must not produce a second "continue". With
///   it off, claude asks what to do instead, and the looper dismisses that dialog.
/// - `tui: "default"`: the classic renderer. From 2.1.332 a fresh install draws the
///   full-screen renderer on the alternate screen, which leaves no scrollback in the pane.
///
/// Older versions ignore keys they do not know.
pub const CLAUDE_PANE_SETTINGS: &str = r#"{"autoContinueAtUsageLimit":false,"tui":"default"}"#;

/// The argv of a hybrid agent pane (D26): the interactive TUI, not a prompt command.
/// `interactive_command` is used exactly as written. claude gets the session id up front
/// (`--session-id`, later `--resume`). codex runs inline (`--no-alt-screen`, so the pane
/// keeps a readable scrollback) and without its shared background server (`--no-daemon`:
/// the daemon detaches from the pane and would outlive the run); a session it already
/// recorded is reopened with `codex resume <thread id>`.
pub fn interactive(agent: &AgentSettings, program: &str, session: &SessionRef) -> Vec<String> {
    if let Some(cmd) = &agent.interactive_command {
        return cmd.clone();
    }
    let mut argv = vec![program.to_string()];
    match agent.kind {
        AgentKind::Codex => {
            let resume = session.id.as_ref().filter(|_| session.resume);
            if resume.is_some() {
                argv.push("resume".into());
            }
            argv.extend(["--no-alt-screen".into(), "--no-daemon".into()]);
            argv.extend(extra(agent));
            argv.extend(resume.cloned());
        }
        _ => {
            argv.extend(extra(agent));
            // A `--settings` of the user's own wins: claude takes one.
            if agent.kind == AgentKind::Claude
                && !agent
                    .extra_args
                    .iter()
                    .any(|a| a == "--settings" || a.starts_with("--settings="))
            {
                argv.push("--settings".into());
                argv.push(CLAUDE_PANE_SETTINGS.into());
            }
            if let Some(id) = &session.id {
                argv.push(
                    if session.resume {
                        "--resume"
                    } else {
                        "--session-id"
                    }
                    .into(),
                );
                argv.push(id.clone());
            }
        }
    }
    argv
}

/// Render a `first_command`/`resume_command` template. Placeholders were validated at load.
pub fn render_template(template: &[String], ctx: &PromptContext) -> Result<AgentCommand> {
    let values: BTreeMap<&str, String> = BTreeMap::from([
        ("prompt", ctx.prompt.to_string()),
        ("session", ctx.session.name.clone()),
        ("session_id", ctx.session.id.clone().unwrap_or_default()),
        ("loop", ctx.loop_number.to_string()),
        ("prompt_index", ctx.prompt_index.to_string()),
        ("label", ctx.label.to_string()),
        ("run_dir", ctx.run_dir.to_string()),
    ]);
    let mut rendered = Vec::with_capacity(template.len());
    for item in template {
        let arg = render_one(item, &values)?;
        if arg.len() > MAX_ARG_BYTES {
            return Err(Error::Usage(format!(
                "an argument of the agent command is {} bytes; Linux accepts at most {MAX_ARG_BYTES} bytes in one argument (shorten the prompt, or use an agent that reads it from stdin)",
                arg.len()
            )));
        }
        rendered.push(arg);
    }
    let mut it = rendered.into_iter();
    let program = it.next().unwrap_or_default();
    Ok(AgentCommand {
        program,
        args: it.collect(),
        stdin: None,
    })
}

/// One template item with `values` in place of its placeholders (`{{` and `}}` are braces).
pub fn render_one(item: &str, values: &BTreeMap<&str, String>) -> Result<String> {
    let mut out = String::with_capacity(item.len());
    let mut rest = item;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let c = rest.as_bytes()[i];
        let after = &rest[i + 1..];
        if (c == b'{' && after.starts_with('{')) || (c == b'}' && after.starts_with('}')) {
            out.push(c as char);
            rest = &after[1..];
            continue;
        }
        let end = after
            .find('}')
            .filter(|_| c == b'{')
            .ok_or_else(|| Error::Usage(format!("malformed placeholder in {item:?}")))?;
        let name = &after[..end];
        let value = values
            .get(name)
            .ok_or_else(|| Error::Usage(format!("unknown command placeholder: {{{name}}}")))?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests;

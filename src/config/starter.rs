//! Starter files written on first run and by `looper init`.

use super::layers::Value;
use super::schema::{self, DefaultValue as D, LOOPER_KEYS};
use crate::text::format_num;

/// Keys the starter file sets explicitly (the manual's documented defaults); the rest are
/// listed as comments so they can be discovered without reading the README.
const STARTER_KEYS: &[&str] = &[
    "default_agent",
    "mode",
    "prompt_file",
    "timeout_seconds",
    "sleep_seconds",
    "fresh_session_per_loop",
    "reload_prompt_each_loop",
    "max_loops",
    "max_transient_retries",
    "retry_notify_after_seconds",
    "log_dir",
    "completion_enabled",
    "completion_marker",
    "completion_streak",
    "plan_file",
    "backup_enabled",
    "backup_prefix",
    "backup_keep",
    "cb_no_progress",
    "cb_output_decline",
    "cb_output_match_pattern",
    "cb_output_match_repeats",
];

pub const STARTER_PROMPT: &str = "\
Inspect this repository, summarize its layout in a few lines, then implement the
highest-value safe cleanup you can verify with a fast check.
End every reply with a status line: EXIT_SIGNAL: true only when the work is genuinely
complete, otherwise EXIT_SIGNAL: false.
";

/// Answers of `init --interactive`; `None` keeps the default.
#[derive(Clone, Debug, Default)]
pub struct Answers {
    pub default_agent: Option<String>,
    pub timeout_seconds: Option<f64>,
    pub sleep_seconds: Option<f64>,
    pub max_loops: Option<u64>,
    pub max_transient_retries: Option<u64>,
    pub retry_notify_after_seconds: Option<f64>,
    pub sequence: bool,
}

fn default_value(d: D) -> Option<Value> {
    Some(match d {
        D::Str(s) => Value::Str(s.into()),
        D::Int(i) => Value::Int(i),
        D::Num(n) => Value::Num(n),
        D::Bool(b) => Value::Bool(b),
        D::EmptyList => Value::List(vec![]),
        D::None => return None,
    })
}

pub fn starter_config(answers: &Answers) -> String {
    let mut out = String::from(
        "# agent-looper configuration. Every key is optional; these are the defaults.\n\
         # Run `looper config check --show-origin` to see what a run will use.\n\n[looper]\n",
    );
    for spec in LOOPER_KEYS {
        let Some(mut value) = default_value(spec.default) else {
            continue;
        };
        match spec.name {
            "default_agent" => {
                if let Some(a) = &answers.default_agent {
                    value = Value::Str(a.clone());
                }
            }
            "mode" if answers.sequence => value = Value::Str("sequence".into()),
            "prompt_file" if answers.sequence => value = Value::Str("prompts.md".into()),
            "timeout_seconds" => {
                if let Some(v) = answers.timeout_seconds {
                    value = Value::Num(v);
                }
            }
            "sleep_seconds" => {
                if let Some(v) = answers.sleep_seconds {
                    value = Value::Num(v);
                }
            }
            "max_loops" => {
                if let Some(v) = answers.max_loops {
                    value = Value::Int(v as i64);
                }
            }
            "max_transient_retries" => {
                if let Some(v) = answers.max_transient_retries {
                    value = Value::Int(v as i64);
                }
            }
            "retry_notify_after_seconds" => {
                if let Some(v) = answers.retry_notify_after_seconds {
                    value = Value::Num(v);
                }
            }
            // D36: the starter prompt asks for EXIT_SIGNAL: true, so the starter config
            // listens for it (a missing key still means off, as the manual says).
            "completion_enabled" => value = Value::Bool(true),
            _ => {}
        }
        let rendered = match &value {
            Value::Num(n) => format_num(*n),
            other => other.to_string(),
        };
        if STARTER_KEYS.contains(&spec.name) {
            out.push_str(&format!("{} = {rendered}\n", spec.name));
        } else {
            out.push_str(&format!(
                "# {} = {rendered}    # {}\n",
                spec.name, spec.help
            ));
        }
    }
    out.push_str(
        "\n[agents.codex]\n\
         kind = \"codex\"\n\
         interface = \"json\"\n\
         extra_args = []\n\
         # model = \"gpt-5.4\"\n\
         # effort = \"high\"\n\
         # extra_args = [\"--sandbox\", \"workspace-write\"]\n\
         \n[agents.claude]\n\
         kind = \"claude\"\n\
         # interface = \"hybrid\"    # the default: the TUI in a pane inside tmux, `claude -p` (json) outside\n\
         extra_args = []\n\
         # model = \"claude-opus-4-8\"\n\
         # effort = \"max\"\n\
         # extra_args = [\"--dangerously-skip-permissions\"]    # isolated sandboxes only\n\
         \n[agents.gemini]\n\
         kind = \"gemini\"\n\
         extra_args = []\n\
         \n# A custom agent: any command, with placeholders\n\
         # {prompt} {session} {session_id} {loop} {prompt_index} {label} {run_dir}\n\
         # [agents.my_agent]\n\
         # kind = \"generic\"\n\
         # first_command = [\"my-agent\", \"run\", \"--session\", \"{session}\", \"{prompt}\"]\n\
         # resume_command = [\"my-agent\", \"run\", \"--resume\", \"{session}\", \"{prompt}\"]\n",
    );
    // The gates after the marker (D28) are off until a table is given; listed so they can
    // be found without the README.
    for (section, intro) in [
        (
            "verify",
            "# The verify gate: completion counts only when this command passes.",
        ),
        (
            "review",
            "# The reviewer gate: another agent must approve before completion counts.",
        ),
    ] {
        let Some(sec) = schema::section(section) else {
            continue;
        };
        out.push_str(&format!("\n{intro}\n# [{section}]\n"));
        for spec in sec.keys {
            let Some(value) = default_value(spec.default) else {
                continue;
            };
            let rendered = match &value {
                Value::Num(n) => format_num(*n),
                other => other.to_string(),
            };
            out.push_str(&format!(
                "# {} = {rendered}    # {}\n",
                spec.name, spec.help
            ));
        }
    }
    out
}

/// Known agent names offered by `init --interactive`.
pub fn known_agents() -> &'static [&'static str] {
    &schema::KINDS[..3]
}

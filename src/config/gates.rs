//! The `[verify]` and `[review]` tables (issue 15), read from the validated layers into the
//! settings of the two gates after the completion marker and the plan (D28).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{AgentSettings, Interface, Invocation, Reader, absolutize, agent_settings};
use crate::engine::GateWhen;
use crate::error::{Error, Result};

/// Which diff the reviewer sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiffSince {
    /// From HEAD when the run started (`state.json` `base_commit`).
    Run,
    /// From HEAD when the loop started.
    Loop,
}

/// The verify gate: a command, supervised like an agent attempt.
#[derive(Clone, Debug)]
pub struct VerifySettings {
    /// argv; never run through a shell.
    pub command: Vec<String>,
    /// Absolute; the agent's cwd unless configured.
    pub cwd: PathBuf,
    pub timeout: Duration,
    pub when: GateWhen,
    pub pass_regex: Option<String>,
    pub count_regex: Option<String>,
    pub min_count: Option<u64>,
    pub feedback: bool,
    pub cb_verify_failures: u64,
}

/// The reviewer gate: another agent, always in a fresh session, always json.
#[derive(Clone, Debug)]
pub struct ReviewSettings {
    pub agent: AgentSettings,
    pub prompt_file: Option<PathBuf>,
    pub when: GateWhen,
    pub approve_on: String,
    pub max_rounds: u64,
    pub diff_since: DiffSince,
    pub timeout: Duration,
}

fn when(r: &Reader, path: &str) -> GateWhen {
    if r.str(path) == "every_loop" {
        GateWhen::EveryLoop
    } else {
        GateWhen::Completion
    }
}

/// `[verify]`, or `None` when it has no command.
pub(super) fn verify(r: &Reader, base: &Path, agent_cwd: &Path) -> Result<Option<VerifySettings>> {
    let command = r.list("verify.command").unwrap_or_default();
    if command.is_empty() {
        return Ok(None);
    }
    if command[0].trim().is_empty() {
        return Err(Error::config(
            r.origin("verify.command"),
            "verify.command",
            "an argv whose first item names a program",
            "an empty program name",
        ));
    }
    let cwd = match r.opt_str("verify.cwd") {
        Some(c) => absolutize(base, Path::new(&c)),
        None => agent_cwd.to_path_buf(),
    };
    if !cwd.is_dir() {
        return Err(Error::Usage(format!(
            "verify.cwd does not exist or is not a directory: {} (from {})",
            cwd.display(),
            r.origin("verify.cwd")
        )));
    }
    Ok(Some(VerifySettings {
        command,
        cwd,
        timeout: r.seconds("verify.timeout_seconds"),
        when: when(r, "verify.when"),
        pass_regex: r.opt_str("verify.pass_regex"),
        count_regex: r.opt_str("verify.count_regex"),
        min_count: Some(r.int("verify.min_count")).filter(|n| *n > 0),
        feedback: r.bool("verify.feedback"),
        cb_verify_failures: r.int("verify.cb_verify_failures"),
    }))
}

/// `[review]`, or `None` when it names no agent. The reviewer's table is resolved like the
/// maker's, but always runs json (a fresh `-p` session per review, never a pane).
pub(super) fn review(r: &Reader, inv: &Invocation) -> Result<Option<ReviewSettings>> {
    let Some(name) = r.opt_str("review.agent") else {
        return Ok(None);
    };
    let known = r.layers.agent_names();
    if !known.contains(&name) {
        let hint = super::schema::suggest(&name, known.iter().map(String::as_str))
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        return Err(Error::Usage(format!(
            "review.agent: unknown agent `{name}` (from {}){hint}; available: {}",
            r.origin("review.agent"),
            known.join(", ")
        )));
    }
    let mut agent = agent_settings(r, inv, &name)?;
    agent.interface = Interface::Json;
    agent.interface_explicit = false;
    let prompt_file = r
        .opt_str("review.prompt_file")
        .map(|p| absolutize(&inv.base_dir, Path::new(&p)));
    Ok(Some(ReviewSettings {
        agent,
        prompt_file,
        when: when(r, "review.when"),
        approve_on: r.str("review.approve_on"),
        max_rounds: r.int("review.max_rounds"),
        diff_since: if r.str("review.diff_since") == "loop" {
            DiffSince::Loop
        } else {
            DiffSince::Run
        },
        timeout: r.seconds("review.timeout_seconds"),
    }))
}

fn when_text(w: GateWhen) -> &'static str {
    match w {
        GateWhen::Completion => "when the marker stands",
        GateWhen::EveryLoop => "after every loop",
    }
}

/// `looper config check`: the gates at a loop's end in the order they are judged (D28),
/// as this configuration sets them.
pub fn gate_order(s: &super::Settings) -> String {
    let off = "off";
    let marker = match &s.completion_marker {
        Some(m) => format!(
            "the agent's output matches {}, {} loop(s) in a row{}",
            crate::text::clip_chars(m, 60),
            s.completion_streak,
            if s.completion_must_be_last {
                " (on the last line of its final message)"
            } else {
                ""
            }
        ),
        None => off.into(),
    };
    let plan = match &s.plan_file {
        Some(p) => format!(
            "no open task left in {}{}",
            p.display(),
            if s.plan_forbid_removal {
                "; none removed without being ticked"
            } else {
                ""
            }
        ),
        None => off.into(),
    };
    let verify = match &s.verify {
        Some(v) => {
            let shown = shlex::try_join(v.command.iter().map(String::as_str))
                .unwrap_or_else(|_| v.command.join(" "));
            let mut t = format!("$ {shown} passes, {}", when_text(v.when));
            if let Some(min) = v.min_count {
                t.push_str(&format!(", counting at least {min}"));
            }
            if v.cb_verify_failures > 0 {
                t.push_str(&format!(
                    "; {} failures in a row stop the run",
                    v.cb_verify_failures
                ));
            }
            t
        }
        None => off.into(),
    };
    let review = match &s.review {
        Some(r) => format!(
            "{} approves the diff since the {}, {}{}",
            r.agent.name,
            match r.diff_since {
                DiffSince::Run => "run",
                DiffSince::Loop => "loop",
            },
            when_text(r.when),
            if r.max_rounds > 0 {
                format!("; {} rejections stop the run", r.max_rounds)
            } else {
                String::new()
            }
        ),
        None => off.into(),
    };
    format!(
        "\n# A loop's end is judged in this order (D28); each gate runs only when the ones before it pass,\n\
         # and a gate that blocks a seen marker resets the completion streak:\n\
         #   1. operator stop: `looper control stop`\n\
         #   2. completion marker: {marker}\n\
         #   3. plan: {plan}\n\
         #   4. verify: {verify}\n\
         #   5. review: {review}\n\
         # Then the breakers and budgets: no progress, output decline, output match, verify\n\
         # failures, review rejections, tokens, cost, runtime, dry run, max loops.\n"
    )
}

//! `looper mcp` (issue 17): the fleet served to a coding agent over the Model Context
//! Protocol on stdio, built on the official Rust SDK (`rmcp`: its tool macros make each tool
//! a typed function with a JSON schema). The tools call the same functions as the commands:
//! list and show runs, read a run's log, control (stop, pause, resume, note), ask, answer,
//! approve, reject, and wait, which returns early with `needs_input` when a run waits for a
//! person, so the calling agent can answer and wait again.
//!
//! `claude mcp add looper -- looper mcp` makes it a tool of Claude Code.

use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::{ServerHandler, ServiceExt, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::cli::{McpArgs, Until};
use crate::engine::ControlAction;
use crate::error::{Error, Result};
use crate::records::asks;
use crate::records::control::ControlLine;
use crate::records::discovery::{self, Stopped, TargetQuery};
use crate::records::fleet::load_rows;

/// The longest a `wait` call blocks: an MCP client times a call out on its own.
const MAX_WAIT: Duration = Duration::from_secs(600);
/// What `read_log` returns at most.
const MAX_LOG: u64 = 64 * 1024;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListArgs {
    /// Every run on this machine (the registry), not only the state roots'.
    #[serde(default)]
    pub all: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RunArg {
    /// A label, run id, run directory name or run directory path [default: the newest].
    #[serde(default)]
    pub target: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct LogArgs {
    #[serde(default)]
    pub target: Option<String>,
    /// At most this many bytes from the end of the current loop's log [default: 16384].
    #[serde(default)]
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ControlArgs {
    #[serde(default)]
    pub target: Option<String>,
    /// `stop`, `pause`, `resume` or `note`.
    pub action: String,
    /// For `stop`: `after_loop` (default), `after_prompt` or `now`.
    #[serde(default)]
    pub when: Option<String>,
    /// Why (recorded).
    #[serde(default)]
    pub reason: Option<String>,
    /// For `note`: the text, appended once to the run's next prompt.
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct AskArgs {
    /// The run to ask in [default: this agent's own run, LOOPER_RUN_DIR].
    #[serde(default)]
    pub target: Option<String>,
    pub question: String,
    #[serde(default)]
    pub choices: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct AnswerArgs {
    #[serde(default)]
    pub target: Option<String>,
    /// The ask [default: the oldest open question of the run].
    #[serde(default)]
    pub ask_id: Option<String>,
    /// The answer: free text, or one of the ask's choices (its text or its number).
    pub text: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct DecisionArgs {
    #[serde(default)]
    pub target: Option<String>,
    /// Why; required to reject (it goes into the run's next prompt).
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct WaitArgs {
    #[serde(default)]
    pub target: Option<String>,
    /// `stopped` (default), `loop_completed`, `needs_input` or `retry_wait`.
    #[serde(default)]
    pub until: Option<String>,
    /// Give up after this many seconds [default and most: 600].
    #[serde(default)]
    pub timeout_seconds: Option<f64>,
}

/// The server: which state roots it looks in.
#[derive(Clone)]
pub struct Looper {
    roots: Vec<PathBuf>,
    tool_router: ToolRouter<Self>,
}

type ToolResult = std::result::Result<String, String>;

fn json(v: &impl serde::Serialize) -> ToolResult {
    serde_json::to_string_pretty(v).map_err(|e| e.to_string())
}

/// File work and waits run on the blocking pool: the protocol's thread stays free.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> std::result::Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

impl Looper {
    pub fn new(roots: Vec<PathBuf>) -> Self {
        Self {
            roots,
            tool_router: Self::tool_router(),
        }
    }

    /// A target as operator commands take it; a path names the run directory itself.
    fn query(&self, target: Option<String>, include_stopped: bool) -> TargetQuery {
        let (target, run_dir) = match target.filter(|t| !t.trim().is_empty()) {
            Some(t) if t.contains('/') => (None, Some(PathBuf::from(t))),
            other => (other, None),
        };
        TargetQuery {
            target,
            run_dir,
            state_root: self.roots.clone(),
            include_stopped,
        }
    }
}

#[tool_router(router = tool_router)]
impl Looper {
    #[tool(
        description = "List the looper runs (the fleet), runs waiting for a person first: status, loop, stop reason, open questions. Same schema as `looper status --json`."
    )]
    async fn list_runs(&self, Parameters(a): Parameters<ListArgs>) -> ToolResult {
        let roots = self.roots.clone();
        let rows = blocking(move || {
            let env = discovery::process_env();
            let roots = discovery::state_roots(&roots, &env);
            let registry = if a.all {
                discovery::registry_path(&env)
            } else {
                None
            };
            Ok(load_rows(discovery::discover(&roots, registry.as_deref())))
        })
        .await?;
        json(&crate::commands::status::render_json(&rows, Utc::now()))
    }

    #[tool(
        description = "Show one run: its state.json and every ask and approval with its answer."
    )]
    async fn show_run(&self, Parameters(a): Parameters<RunArg>) -> ToolResult {
        let q = self.query(a.target, true);
        let v = blocking(move || {
            let t = discovery::resolve(&q, Stopped::Fallback)?;
            let asks: Vec<serde_json::Value> = asks::list(&t.dir)
                .into_iter()
                .map(|a| {
                    serde_json::json!({
                        "ask": a.record,
                        "answer": a.answer,
                        "delivered": a.delivered,
                        "carried_to": a.carried_to,
                    })
                })
                .collect();
            Ok(serde_json::json!({
                "run_dir": t.dir,
                "state": t.reload(),
                "asks": asks,
            }))
        })
        .await?;
        json(&v)
    }

    #[tool(
        description = "Read the end of a run's current (or last) loop log: the agent's output, timestamped."
    )]
    async fn read_log(&self, Parameters(a): Parameters<LogArgs>) -> ToolResult {
        let q = self.query(a.target, true);
        let max = a.max_bytes.unwrap_or(16 * 1024).clamp(1, MAX_LOG);
        blocking(move || {
            let t = discovery::resolve(&q, Stopped::Fallback)?;
            let state = t.reload();
            let Some(log) = crate::commands::logs::current_log(&t.dir, state.as_ref()) else {
                return Ok(format!("{} has no log yet", t.name));
            };
            let bytes = crate::records::fsio::read_tail(&log, max)
                .map_err(|e| Error::io("cannot read", &log, e))?;
            // D35: what the agent printed is shown to a model and perhaps a person.
            Ok(format!(
                "{}:\n{}",
                log.display(),
                crate::text::sanitize(&String::from_utf8_lossy(&bytes))
            ))
        })
        .await
    }

    #[tool(
        description = "Steer a run: action stop (when: after_loop | after_prompt | now), pause, resume, or note (the note goes once into the run's next prompt)."
    )]
    async fn control(&self, Parameters(a): Parameters<ControlArgs>) -> ToolResult {
        let q = self.query(a.target, false);
        blocking(move || {
            let action = match (a.action.as_str(), a.when.as_deref()) {
                ("stop", None | Some("after_loop")) => ControlAction::StopAfterLoop,
                ("stop", Some("after_prompt")) => ControlAction::StopAfterPrompt,
                ("stop", Some("now")) => ControlAction::InterruptNow,
                ("pause", _) => ControlAction::Pause,
                ("resume", _) => ControlAction::Resume,
                ("note", _) => ControlAction::Note,
                (other, when) => {
                    return Err(Error::Usage(format!(
                        "unknown action {other} (when {when:?}); use stop, pause, resume or note"
                    )));
                }
            };
            let note = a.note.as_deref().map(str::trim).filter(|n| !n.is_empty());
            if action == ControlAction::Note {
                match note {
                    None => return Err(Error::Usage("a note needs its text (note)".into())),
                    Some(n) if n.len() > crate::commands::control::MAX_NOTE_BYTES => {
                        return Err(Error::Usage(format!(
                            "the note is longer than {} bytes",
                            crate::commands::control::MAX_NOTE_BYTES
                        )));
                    }
                    _ => {}
                }
            }
            let t = discovery::resolve(&q, Stopped::Exclude)?;
            let reason = a.reason.as_deref().or(match action {
                ControlAction::StopAfterLoop
                | ControlAction::StopAfterPrompt
                | ControlAction::InterruptNow => Some("requested over MCP"),
                _ => None,
            });
            let line = ControlLine::new(action, reason, note, Utc::now());
            line.append(&t.dir)?;
            Ok(format!(
                "queued {} for {} (control id {}); the supervisor acts within milliseconds",
                action.as_str(),
                t.name,
                line.id()
            ))
        })
        .await
    }

    #[tool(
        description = "Ask a person a question from inside a run (your own run by default, LOOPER_RUN_DIR). The run waits for the answer at its next loop boundary; the answer comes back in the next prompt, and `wait` on the run returns when it is answered."
    )]
    async fn ask(&self, Parameters(a): Parameters<AskArgs>) -> ToolResult {
        let q = self.query(a.target.clone(), false);
        let rec = blocking(move || {
            let dir = match a.target {
                Some(_) => discovery::resolve(&q, Stopped::Exclude)?.dir,
                None => crate::commands::human::own_run_dir(None)?,
            };
            crate::commands::human::ask(&dir, &a.question, &a.choices, "mcp")
        })
        .await?;
        json(&rec)
    }

    #[tool(
        description = "Answer a run's question (the oldest open one unless ask_id names it). The answer reaches the agent in its next prompt."
    )]
    async fn answer(&self, Parameters(a): Parameters<AnswerArgs>) -> ToolResult {
        let q = self.query(a.target, false);
        let done = blocking(move || {
            crate::commands::human::answer(&q, a.ask_id.as_deref(), &a.text, "mcp")
        })
        .await?;
        json(&done)
    }

    #[tool(description = "Approve what a run waits for: its completion, or its next loops.")]
    async fn approve(&self, Parameters(a): Parameters<DecisionArgs>) -> ToolResult {
        let q = self.query(a.target, false);
        let done =
            blocking(move || crate::commands::human::decide(&q, true, a.reason.as_deref(), "mcp"))
                .await?;
        json(&done)
    }

    #[tool(
        description = "Refuse what a run waits for, with a reason: the run goes on and the reason goes into its next prompt."
    )]
    async fn reject(&self, Parameters(a): Parameters<DecisionArgs>) -> ToolResult {
        let q = self.query(a.target, false);
        let done =
            blocking(move || crate::commands::human::decide(&q, false, a.reason.as_deref(), "mcp"))
                .await?;
        json(&done)
    }

    #[tool(
        description = "Wait until a run reaches a state (until: stopped, loop_completed, needs_input, retry_wait). Returns early with result \"needs_input\" and the open questions when the run waits for a person: answer or approve, then wait again. Exits after timeout_seconds (at most 600) with result \"timeout\"."
    )]
    async fn wait(&self, Parameters(a): Parameters<WaitArgs>) -> ToolResult {
        let until = match a.until.as_deref() {
            None => Until::Stopped,
            Some(u) => Until::parse(u).ok_or_else(|| {
                format!("unknown state {u}; use stopped, loop_completed, needs_input or retry_wait")
            })?,
        };
        let timeout = a
            .timeout_seconds
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(MAX_WAIT, |s| Duration::from_secs_f64(s).min(MAX_WAIT));
        let q = self.query(a.target, false);
        let r = blocking(move || {
            let t = crate::commands::wait::pin(&q)?;
            crate::commands::wait::wait_for(&t.dir, until, Some(timeout), true)
        })
        .await?;
        json(&r)
    }
}

#[tool_handler(
    router = self.tool_router,
    name = "looper",
    instructions = "agent-looper's fleet of supervised agent runs: list_runs first; answer questions and approvals the runs wait for; wait returns needs_input when a person (you) is needed."
)]
impl ServerHandler for Looper {}

/// Serve on stdin/stdout until the client goes away.
pub fn serve(a: &McpArgs) -> Result<i32> {
    // One thread serves the protocol; waits and file work go to the blocking pool.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("cannot start", "the MCP server's runtime", e))?;
    let roots = a.state_root.clone();
    rt.block_on(async move {
        let server = Looper::new(roots)
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| Error::Usage(format!("MCP: {e}")))?;
        server
            .waiting()
            .await
            .map_err(|e| Error::Usage(format!("MCP: {e}")))?;
        Ok(crate::error::exit_code::OK)
    })
}

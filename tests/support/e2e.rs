//! Support for the end-to-end tier: finding the real agent CLIs (and deciding, loudly, when
//! the tier cannot run), isolating each CLI in its own HOME / CODEX_HOME / TMPDIR, writing
//! the CLI config files that point them at the mock model server (recipes from
//! `tests/fixtures/clis/FINDINGS.md`), and running the looper with a watchdog.
//!
//! # Where the CLIs come from
//!
//! 1. `AGENT_LOOPER_E2E_BIN` (set by `scripts/test`): a directory holding `codex`, `claude`
//!    and `gemini`.
//! 2. Otherwise, unless `AGENT_LOOPER_E2E_INSTALL=0`, `scripts/install-agent-clis` is run once
//!    per test binary: it returns at once from its cache, installs the pinned versions when
//!    npm can reach the registry, and fails fast (exit 3) when it cannot. This makes a plain
//!    `cargo test` run the tier on a machine that has ever installed the CLIs.
//! 3. Otherwise the tier cannot run: with `CI=true` every e2e test fails with the reason;
//!    elsewhere every e2e test prints `E2E SKIPPED: <test>: <reason>` (and the first one a
//!    banner saying the tier verified nothing) and returns. Those lines are written to the
//!    process's stderr directly, not through `eprintln!`, because the test harness captures
//!    `eprintln!` of passing tests: the skip must show in a plain `cargo test`.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use crate::mock_server::MockServer;
use crate::support::Project;

/// The three CLIs the tier drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cli {
    Codex,
    Claude,
    Gemini,
}

impl Cli {
    pub const ALL: [Cli; 3] = [Cli::Codex, Cli::Claude, Cli::Gemini];

    pub fn name(self) -> &'static str {
        match self {
            Cli::Codex => "codex",
            Cli::Claude => "claude",
            Cli::Gemini => "gemini",
        }
    }
}

/// Environment variables of the developer's shell that would point a CLI somewhere else
/// than the mock server, or give it real credentials. Removed from the looper's
/// environment (the agent inherits it).
const FOREIGN_ENV: &[&str] = &[
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "CODEX_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_MODEL",
    "ANTHROPIC_SMALL_FAST_MODEL",
    "CLAUDE_CONFIG_DIR",
    "CLAUDE_CODE_USE_BEDROCK",
    "CLAUDE_CODE_USE_VERTEX",
    "GOOGLE_API_KEY",
    "GOOGLE_CLOUD_PROJECT",
    "GOOGLE_GENAI_USE_VERTEXAI",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GEMINI_MODEL",
    "GEMINI_CLI_HOME",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_CACHE_HOME",
    "TMUX",
    "TMUX_PANE",
];

/// Longest a single looper run may take before the test kills it and fails: a hung
/// supervisor must fail the tier, not hang it.
pub const RUN_DEADLINE: Duration = Duration::from_secs(150);

static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
/// Scenarios share the machine (2 cores here); a timing-sensitive one (a 5 s timeout that
/// must be reached *after* the CLI started and hung at the server) runs alone, the others
/// side by side. A node CLI needs 2 s to start on an idle core and more than 5 s next to
/// two others.
static MACHINE: RwLock<()> = RwLock::new(());

/// This scenario's share of the machine.
enum Slot {
    Shared(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
    Alone(#[allow(dead_code)] RwLockWriteGuard<'static, ()>),
}

/// How a scenario uses the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timing {
    /// Runs next to other scenarios.
    Shared,
    /// Runs alone: its assertions depend on the CLI starting quickly.
    Alone,
}
static BANNER: OnceLock<()> = OnceLock::new();

/// The directory holding the three CLIs, or why there is none.
fn resolve() -> Result<PathBuf, String> {
    let check = |dir: PathBuf, origin: &str| -> Result<PathBuf, String> {
        let missing: Vec<&str> = Cli::ALL
            .iter()
            .map(|c| c.name())
            .filter(|name| !is_executable(&dir.join(name)))
            .collect();
        if missing.is_empty() {
            Ok(dir)
        } else {
            Err(format!(
                "{origin} {} lacks {} (run scripts/install-agent-clis)",
                dir.display(),
                missing.join(", ")
            ))
        }
    };
    if let Some(dir) = std::env::var_os("AGENT_LOOPER_E2E_BIN").filter(|d| !d.is_empty()) {
        return check(PathBuf::from(dir), "AGENT_LOOPER_E2E_BIN");
    }
    if std::env::var("AGENT_LOOPER_E2E_INSTALL").as_deref() == Ok("0") {
        return Err(
            "AGENT_LOOPER_E2E_BIN is unset and AGENT_LOOPER_E2E_INSTALL=0 forbids installing"
                .into(),
        );
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-agent-clis");
    let child = Command::new(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("AGENT_LOOPER_E2E_BIN is unset and {script:?} cannot start: {e}"))?;
    let out = wait_with_deadline(child, Duration::from_secs(300))
        .map_err(|e| format!("AGENT_LOOPER_E2E_BIN is unset and {script:?} {e}"))?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        let last = why.lines().last().unwrap_or("").trim().to_string();
        return Err(format!(
            "AGENT_LOOPER_E2E_BIN is unset and scripts/install-agent-clis failed ({}): {last}",
            out.status
        ));
    }
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    check(PathBuf::from(dir), "scripts/install-agent-clis gave")
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The CLI bin directory for test `test`, or `None` after printing a loud skip line.
/// Panics when the tier cannot run and `CI=true`: CI must never pass a skipped tier.
pub fn require(test: &str) -> Option<PathBuf> {
    match BIN.get_or_init(resolve) {
        Ok(dir) => Some(dir.clone()),
        Err(why) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("E2E tier cannot run in CI (CI=true): {why}");
            }
            BANNER.get_or_init(|| {
                let banner = format!(
                    "\n==================== E2E SKIPPED ====================\n\
                     The end-to-end tier (real codex/claude/gemini against a mock server)\n\
                     did NOT run: {why}\n\
                     Run scripts/test, or set AGENT_LOOPER_E2E_BIN. These tests report\n\
                     'ok' but verified nothing.\n\
                     =====================================================\n"
                );
                loud(&banner);
            });
            loud(&format!("E2E SKIPPED: {test}: {why}\n"));
            None
        }
    }
}

/// Live processes (not zombies) whose environment has exactly this `KEY=value` entry.
pub fn processes_with_env(entry: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|st| {
                    let close = st.rfind(')')?;
                    st[close + 1..].split_whitespace().next().map(|s| s == "Z")
                })
                .unwrap_or(true);
            !zombie
                && std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == entry.as_bytes()))
        })
        .collect()
}

/// Write to the real stderr, bypassing the harness's capture of `eprintln!` (which would
/// hide a skip inside a passing test).
pub fn loud(text: &str) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}

/// Wait for `child` with a deadline; on expiry kill it (it is ours) and say so.
pub fn wait_with_deadline(mut child: Child, deadline: Duration) -> Result<Output, String> {
    // Drain the pipes on threads so a chatty child never blocks on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let end = Instant::now() + deadline;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                let stdout = out.join().unwrap_or_default();
                let stderr = err.join().unwrap_or_default();
                return Err(format!(
                    "did not finish within {deadline:?} and was killed\n--- stdout\n{}\n--- stderr\n{}",
                    String::from_utf8_lossy(&stdout),
                    String::from_utf8_lossy(&stderr)
                ));
            }
            Err(e) => return Err(format!("cannot be waited for: {e}")),
        }
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// A TOML basic string holding `s`.
fn q(s: impl AsRef<str>) -> String {
    toml::Value::String(s.as_ref().to_owned()).to_string()
}

fn qp(p: &Path) -> String {
    q(p.display().to_string())
}

/// One e2e scenario: a mock server, a temp git project, and an isolated home for the CLI.
pub struct E2e {
    pub cli: Cli,
    pub bin: PathBuf,
    pub server: MockServer,
    pub project: Project,
    /// Holds `home/`, `codex-home/`, `tmp/`; outside the project so the work tree only
    /// changes when the agent changes it.
    pub root: tempfile::TempDir,
    /// Released last, after the survivors are killed.
    _slot: Slot,
}

impl E2e {
    /// A fresh scenario for `cli` whose looper config also carries `looper_extra` lines in
    /// `[looper]`. Retry waits are kept short (`retry_backoff_base_seconds = 0.2`), and a
    /// terminated CLI gets 2 s before SIGKILL.
    pub fn new(cli: Cli, bin: PathBuf, timing: Timing, looper_extra: &str) -> E2e {
        // A failed scenario poisons nothing worth protecting: the lock only orders runs.
        let slot = match timing {
            Timing::Shared => Slot::Shared(MACHINE.read().unwrap_or_else(PoisonError::into_inner)),
            Timing::Alone => Slot::Alone(MACHINE.write().unwrap_or_else(PoisonError::into_inner)),
        };
        let root = tempfile::Builder::new()
            .prefix(&format!("alx-e2e-{}-", cli.name()))
            .tempdir()
            .expect("tempdir");
        for d in ["home", "codex-home", "tmp"] {
            std::fs::create_dir_all(root.path().join(d)).expect("mkdir");
        }
        let e = E2e {
            cli,
            bin,
            server: MockServer::start(),
            project: Project::new(),
            root,
            _slot: slot,
        };
        e.write_cli_config();
        let cfg = format!(
            "[looper]\ndefault_agent = {}\nsleep_seconds = 0\nretry_backoff_base_seconds = 0.2\nterminate_grace_seconds = 2\n{looper_extra}\n\n{}",
            q(cli.name()),
            e.agent_table()
        );
        e.project.write("agent-looper.toml", &cfg);
        e
    }

    pub fn home(&self) -> PathBuf {
        self.root.path().join("home")
    }

    pub fn codex_home(&self) -> PathBuf {
        self.root.path().join("codex-home")
    }

    pub fn tmp(&self) -> PathBuf {
        self.root.path().join("tmp")
    }

    /// The CLI's own config files, per the isolation recipes of FINDINGS.md.
    fn write_cli_config(&self) {
        match self.cli {
            Cli::Codex => {
                // `[features] plugins = false` keeps codex off github.com / chatgpt.com;
                // zero retries make a failing request fail in one round trip, so the
                // looper's retry path (not codex's) is what the tier exercises.
                let cfg = format!(
                    "model = \"mock-model\"\nmodel_provider = \"mock\"\ncheck_for_update_on_startup = false\n\n[analytics]\nenabled = false\n\n[model_providers.mock]\nname = \"mock\"\nbase_url = {}\nwire_api = \"responses\"\nenv_key = \"MOCK_API_KEY\"\nrequest_max_retries = 0\nstream_max_retries = 0\n\n[features]\nplugins = false\n",
                    q(format!("{}/v1", self.server.base_url()))
                );
                std::fs::write(self.codex_home().join("config.toml"), cfg).expect("write");
            }
            Cli::Claude => {}
            Cli::Gemini => {
                // maxAttempts 1: gemini's own backoff starts at 5 s; usage statistics off
                // keeps it off the network.
                let dir = self.home().join(".gemini");
                std::fs::create_dir_all(&dir).expect("mkdir");
                let settings = serde_json::json!({
                    "security": {"auth": {"selectedType": "gemini-api-key"}},
                    "privacy": {"usageStatisticsEnabled": false},
                    "telemetry": {"enabled": false},
                    "general": {
                        "enableAutoUpdate": false,
                        "enableAutoUpdateNotification": false,
                        "maxAttempts": 1
                    }
                });
                std::fs::write(dir.join("settings.json"), settings.to_string()).expect("write");
            }
        }
    }

    /// The `[agents.<cli>]` table: the real binary, JSON interface, isolated environment.
    pub fn agent_table(&self) -> String {
        self.agent_table_for(self.cli)
    }

    /// The same table for another CLI of this scenario (a second agent in one run: the
    /// reviewer of issue 15), sharing its server, HOME and TMPDIR.
    pub fn agent_table_for(&self, cli: Cli) -> String {
        let base = self.server.base_url();
        let mut env: Vec<(&str, String)> = vec![
            ("HOME", self.home().display().to_string()),
            ("TMPDIR", self.tmp().display().to_string()),
            // A proxy in the developer's shell must not see loopback traffic.
            ("NO_PROXY", "127.0.0.1,localhost".into()),
            ("no_proxy", "127.0.0.1,localhost".into()),
        ];
        let extra_args: &[&str] = match cli {
            Cli::Codex => {
                env.push(("CODEX_HOME", self.codex_home().display().to_string()));
                env.push(("MOCK_API_KEY", "mock-key".into()));
                &["--skip-git-repo-check"]
            }
            Cli::Claude => {
                env.extend([
                    ("ANTHROPIC_BASE_URL", base),
                    (
                        "ANTHROPIC_API_KEY",
                        "sk-ant-api03-mock-0123456789abcdefghijklmnop".into(),
                    ),
                    ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".into()),
                    ("DISABLE_AUTOUPDATER", "1".into()),
                    // claude's own retries would hide the 429/5xx from the looper for minutes.
                    ("CLAUDE_CODE_MAX_RETRIES", "0".into()),
                ]);
                &[]
            }
            Cli::Gemini => {
                env.extend([
                    ("GOOGLE_GEMINI_BASE_URL", base),
                    ("GEMINI_API_KEY", "mock-gemini-key".into()),
                    ("GEMINI_CLI_TRUST_WORKSPACE", "true".into()),
                ]);
                &[]
            }
        };
        let env = env
            .iter()
            .map(|(k, v)| format!("{k} = {}", q(v)))
            .collect::<Vec<_>>()
            .join(", ");
        let args = extra_args.iter().map(q).collect::<Vec<_>>().join(", ");
        format!(
            "[agents.{name}]\nkind = {kind}\ninterface = \"json\"\nexecutable = {exe}\nextra_args = [{args}]\nenv = {{ {env} }}\n",
            name = cli.name(),
            kind = q(cli.name()),
            exe = qp(&self.bin.join(cli.name())),
        )
    }

    /// Run `looper --local <args>` in the project, under [`RUN_DEADLINE`].
    pub fn run(&self, args: &[&str]) -> Output {
        let child = self.spawn(args);
        self.finish(child)
    }

    /// Start `looper --local <args>` in the background (see [`E2e::finish`]).
    pub fn spawn(&self, args: &[&str]) -> Child {
        let mut c = self.project.looper();
        for k in FOREIGN_ENV {
            c.env_remove(k);
        }
        // The looper's run registry goes outside the work tree, which then changes only
        // when an agent changes it.
        c.env("XDG_STATE_HOME", self.root.path().join("xdg-state"))
            .env("XDG_CONFIG_HOME", self.root.path().join("xdg-config"));
        c.arg("--local")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.spawn().expect("spawn looper")
    }

    /// Wait for a looper started by [`E2e::spawn`], killing it after [`RUN_DEADLINE`].
    pub fn finish(&self, child: Child) -> Output {
        match wait_with_deadline(child, RUN_DEADLINE) {
            Ok(out) => out,
            Err(e) => {
                self.kill_survivors();
                panic!("looper {e}");
            }
        }
    }

    /// The run's `state.json` while it runs (`None` until it exists and parses: it is
    /// replaced atomically, but may not exist yet).
    pub fn live_state(&self) -> Option<Json> {
        let run = self.project.run_dirs().pop()?;
        let bytes = std::fs::read(run.join("state.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Everything worth seeing when a scenario fails: looper output, state, events, the
    /// attempt logs, and what the mock server saw.
    pub fn diagnose(&self, out: &Output) -> String {
        let mut s = format!(
            "exit {:?}\n--- looper stdout\n{}\n--- looper stderr\n{}\n",
            out.status.code(),
            crate::support::stdout(out),
            crate::support::stderr(out)
        );
        if let Some(run) = self.project.run_dirs().pop() {
            for e in crate::support::read_events(&run) {
                s.push_str(&format!("event {e}\n"));
            }
            if let Ok(dir) = std::fs::read_dir(&run) {
                let mut logs: Vec<PathBuf> = dir
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "log"))
                    .collect();
                logs.sort();
                for log in logs {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    let tail: String = text
                        .lines()
                        .rev()
                        .take(40)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n");
                    s.push_str(&format!("--- {}\n{tail}\n", log.display()));
                }
            }
        }
        for r in self.server.requests() {
            s.push_str(&format!(
                "request {} {} turn={} reply={} at={:?}\n",
                r.method, r.path, r.is_turn, r.reply, r.at
            ));
        }
        s
    }

    /// Processes (other than zombies) whose environment carries this scenario's isolated
    /// HOME: only the CLI and its children have it, never the looper or the test.
    pub fn survivors(&self) -> Vec<i32> {
        processes_with_env(&format!("HOME={}", self.home().display()))
    }

    /// SIGKILL whatever is left of this scenario's CLI processes (found by their isolated
    /// HOME, so never anything this scenario did not start).
    pub fn kill_survivors(&self) {
        for pid in self.survivors() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    pub fn events(&self) -> Vec<Json> {
        self.project.events()
    }

    pub fn events_named(&self, name: &str) -> Vec<Json> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == name)
            .collect()
    }

    pub fn state(&self) -> Json {
        self.project.state()
    }
}

impl Drop for E2e {
    fn drop(&mut self) {
        // A failed assertion must not leave CLIs running against a dropped server.
        self.kill_survivors();
    }
}

/// Every string inside a JSON value, joined with newlines: "does this request carry that
/// text anywhere" without depending on each API's message layout.
pub fn all_strings(v: &Json) -> String {
    fn walk(v: &Json, out: &mut String) {
        match v {
            Json::String(s) => {
                out.push_str(s);
                out.push('\n');
            }
            Json::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Json::Object(m) => m.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut s = String::new();
    walk(v, &mut s);
    s
}

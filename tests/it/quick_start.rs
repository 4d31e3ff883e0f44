//! Issue 14's "Done when": the README's Quick start, read from README.md when the test runs
//! and followed line by line in a fresh repository, works with the real codex and claude CLIs
//! (against the mock model server), outside tmux and inside tmux.
//!
//! # How a pass follows the README
//!
//! The `sh` block under `## Quick start` is read at test time, so the README and this test
//! cannot drift: a line this test does not know fails it. Each line loses its `# comment`;
//! for the claude passes `codex-looper` becomes `claude-looper`. Then, in order:
//!
//! - `cd my-repo`: the fresh repository is really called `my-repo` (a new git repository
//!   with one commit, in a temporary directory), and the shell goes there.
//! - the first `codex-looper`: writes the starter files and prints the next steps; nothing
//!   runs.
//! - `$EDITOR PROMPT.md`: `EDITOR` is a script that writes a prompt asking for one small
//!   change and for the completion line the starter prompt asks for; the line is run as
//!   written (`$EDITOR` expanded by the shell).
//! - the second `codex-looper`: the farm launch; its run must open in a window of the
//!   `looper` session, answer (the model's reply carries the marker) and end on it.
//! - `codex-looper --local --once`: one loop in this shell, ending on the marker.
//! - `looper status`, `looper logs -f`, `looper control stop --after-loop --wait`: they
//!   watch and stop a running loop, and the two runs above have ended (the README offers the
//!   farm loop and the local one as alternatives, and one looper runs per worktree, so the
//!   farm loop of line 4 cannot still be running at line 5). So before the first of them the
//!   farm loop line is run again, and its model turn is held at the mock server: `status`
//!   must list it running next to the two ended runs, `logs -f` (first terminal) must follow
//!   its transcript and end with the run, and `control stop --after-loop --wait` (second
//!   terminal) must be acknowledged while the turn is held, let the loop finish once the
//!   reply is released (a reply without the marker: only the stop can end the run) and exit
//!   0 once the run has stopped.
//!
//! # The user's environment
//!
//! Each pass has its own HOME (claude's `.claude.json` says onboarding is done, the repository
//! is trusted and the API key approved, as after a first interactive start), CODEX_HOME (the
//! mock provider), TMPDIR, XDG directories and TMUX_TMPDIR, built from an empty environment so
//! nothing of the developer's shell leaks in. The agents are found on PATH, as the starter
//! config leaves them: no `[agents]` table of the test points anywhere.
//!
//! Outside tmux, each line runs as `sh -c <line>` with that whole environment, TMUX and
//! TMUX_PANE absent: the farm launch starts the private tmux server itself.
//!
//! Inside tmux, the lines are typed (`send-keys`) into an interactive bash in a pane of a
//! private tmux server, with a client attached through `script` (a terminal, as a user's):
//! typed commands have what a real shell in a pane has (TMUX, TMUX_PANE, a terminal on
//! stdin and stdout, a client whose size the farm copies), which environment variables set
//! on a child of the test would only imitate. The tmux server is started without the
//! agents' variables (CODEX_HOME, the API keys, the base URLs); the user's bash gets them
//! from its rc file, as a user who exported them in a shell of an already running tmux: so
//! what runs in a farm window or in an agent pane only works if the launching shell's
//! environment reaches it (issue 14.4). Exit codes come from bash's PROMPT_COMMAND, the
//! output from the pane's history.
//!
//! Every pass is bounded: each line has a deadline, the tmux server is killed on drop, and
//! at the end no process with the pass's HOME may be left.
//!
//! # What the passes found
//!
//! The claude pass inside tmux failed on two bugs, each with a narrower test here: a hybrid
//! pane's agent got the tmux server's environment instead of the looper's (claude's TUI had
//! no API key), and a claude TUI that answered `Not logged in` was re-prompted forever.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::e2e_support::{self, Cli};
use crate::mock_server::{MockServer, Provider, Reply};
use crate::support::*;

/// A test API key of the shape claude approves by its last 20 characters.
const CLAUDE_KEY: &str = "sk-ant-api03-quickstart-0123456789abcdefghij";

/// What the `$EDITOR` writes into PROMPT.md.
const PROMPT: &str = "Add a file NOTES.md with the single line `The quick start works.`\n\
End every reply with a status line: EXIT_SIGNAL: true only when the work is genuinely\n\
complete, otherwise EXIT_SIGNAL: false.\n";

/// The model's replies: the two loops that end on the marker, and the held one that only
/// an operator stop can end.
const DONE_FARM: &str = "Added NOTES.md with the line.\nEXIT_SIGNAL: true";
const DONE_LOCAL: &str = "NOTES.md is there; nothing left to do.\nEXIT_SIGNAL: true";
const HELD: &str = "Still going over the notes.\nEXIT_SIGNAL: false";

/// How long one line may take (a CLI starting on a loaded 2-core machine, a TUI included).
const LINE_DEADLINE: Duration = Duration::from_secs(150);

/// The Quick start's lines, as run: comments and blank lines removed.
fn quick_start_lines() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let section = readme
        .split("\n## Quick start\n")
        .nth(1)
        .expect("README.md has a `## Quick start` section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("the Quick start has an `sh` block");
    block
        .lines()
        .map(strip_comment)
        .filter(|l| !l.is_empty())
        .collect()
}

/// `line` without its `# comment` (a `#` that starts a word), trimmed.
fn strip_comment(line: &str) -> String {
    let mut prev_blank = true;
    for (i, c) in line.char_indices() {
        if c == '#' && prev_blank {
            return line[..i].trim().to_string();
        }
        prev_blank = c.is_whitespace();
    }
    line.trim().to_string()
}

/// What a Quick start line is, for this test: how it is checked.
#[derive(Clone, Debug, PartialEq)]
enum Step {
    Cd(String),
    FirstRun,
    EditPrompt,
    FarmLoop,
    LocalOnce,
    Status,
    FollowLogs,
    StopAfterLoop,
}

fn step_of(line: &str, wrapper: &str, initialised: bool) -> Step {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words[..] {
        ["cd", dir] => Step::Cd(dir.to_string()),
        [w] if w == wrapper && !initialised => Step::FirstRun,
        [w] if w == wrapper => Step::FarmLoop,
        ["$EDITOR", "PROMPT.md"] => Step::EditPrompt,
        [w, "--local", "--once"] if w == wrapper => Step::LocalOnce,
        ["looper", "status"] => Step::Status,
        ["looper", "logs", "-f"] => Step::FollowLogs,
        ["looper", "control", "stop", "--after-loop", "--wait"] => Step::StopAfterLoop,
        _ => panic!(
            "the README's Quick start has a line this test does not know: `{line}`; teach \
             tests/it/quick_start.rs what it must do"
        ),
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Place {
    OutsideTmux,
    InsideTmux,
}

/// One pass's world: the mock server, the user's home directories, the fresh repository.
struct Fixture {
    cli: Cli,
    wrapper: &'static str,
    provider: Provider,
    /// The real CLIs (`codex`, `claude`).
    cli_bin: PathBuf,
    server: MockServer,
    /// home/, codex-home/, tmp/, xdg-*/, the editor, the rc file, exit codes, gates.
    root: tempfile::TempDir,
    /// Holds `my-repo`.
    work: tempfile::TempDir,
    /// TMUX_TMPDIR: short, the socket path must fit in sun_path.
    tmux_dir: tempfile::TempDir,
}

impl Fixture {
    fn new(cli: Cli, cli_bin: PathBuf) -> Fixture {
        let (wrapper, provider) = match cli {
            Cli::Codex => ("codex-looper", Provider::OpenAi),
            Cli::Claude => ("claude-looper", Provider::Anthropic),
            Cli::Gemini => unreachable!("the Quick start names codex and claude"),
        };
        let f = Fixture {
            cli,
            wrapper,
            provider,
            cli_bin,
            server: MockServer::start(),
            root: tempfile::Builder::new()
                .prefix("qs-")
                .tempdir()
                .expect("root"),
            work: tempfile::Builder::new()
                .prefix("qs-work-")
                .tempdir()
                .expect("work"),
            tmux_dir: tempfile::Builder::new()
                .prefix("qt")
                .tempdir_in("/tmp")
                .expect("tmux dir"),
        };
        for d in ["home", "codex-home", "tmp", "xdg-state", "xdg-config", "rc"] {
            std::fs::create_dir_all(f.root.path().join(d)).expect("mkdir");
        }
        f.fresh_repository();
        f.signed_in_home();
        f.editor();
        f.server.set_default(
            provider,
            Reply::text("Nothing was asked.\nEXIT_SIGNAL: false"),
        );
        f
    }

    fn at(&self, p: &str) -> PathBuf {
        self.root.path().join(p)
    }

    fn home(&self) -> PathBuf {
        self.at("home")
    }

    fn repo(&self) -> PathBuf {
        self.work.path().join("my-repo")
    }

    /// `git init` and one commit: a user's repository, with nothing of the looper in it.
    fn fresh_repository(&self) {
        let repo = self.repo();
        std::fs::create_dir_all(&repo).expect("my-repo");
        std::fs::write(repo.join("README.md"), "my project\n").expect("README");
        for args in [
            &["init", "-q", "-b", "main"][..],
            &["config", "user.email", "user@example.com"],
            &["config", "user.name", "user"],
            &["add", "-A"],
            &["commit", "-q", "-m", "init"],
        ] {
            let out = Command::new("git")
                .args(args)
                .current_dir(&repo)
                .output()
                .expect("git");
            assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
        }
    }

    /// What a signed-in user's home holds: codex's provider config (the mock), claude's
    /// first-run answers (onboarding, trust of the repository, the API key approved).
    fn signed_in_home(&self) {
        let codex = format!(
            "model = \"mock-model\"\nmodel_provider = \"mock\"\ncheck_for_update_on_startup = false\n\n[analytics]\nenabled = false\n\n[model_providers.mock]\nname = \"mock\"\nbase_url = \"{}/v1\"\nwire_api = \"responses\"\nenv_key = \"MOCK_API_KEY\"\nrequest_max_retries = 0\nstream_max_retries = 0\n\n[features]\nplugins = false\n",
            self.server.base_url()
        );
        std::fs::write(self.at("codex-home/config.toml"), codex).expect("codex config");
        let claude = serde_json::json!({
            "hasCompletedOnboarding": true,
            "theme": "dark",
            "projects": { self.repo().display().to_string(): {
                "hasTrustDialogAccepted": true,
                "hasCompletedProjectOnboarding": true,
            } },
            "customApiKeyResponses": {
                "approved": [CLAUDE_KEY[CLAUDE_KEY.len() - 20..].to_string()],
                "rejected": [],
            },
        });
        std::fs::write(self.home().join(".claude.json"), claude.to_string()).expect("claude");
    }

    /// `$EDITOR`: writes [`PROMPT`] into the file it is given.
    fn editor(&self) {
        std::fs::write(self.at("prompt.txt"), PROMPT).expect("prompt");
        let script = format!(
            "#!/bin/sh\ncat {} > \"$1\"\n",
            sh_quote(&self.at("prompt.txt"))
        );
        let path = self.at("editor");
        std::fs::write(&path, script).expect("editor");
        let mut perm = std::fs::metadata(&path).expect("meta").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&path, perm).expect("chmod");
    }

    /// The session's environment (a login's): PATH with the looper binaries and the CLIs,
    /// HOME and the XDG and temp directories of this pass, the editor.
    fn login_env(&self) -> Vec<(String, String)> {
        let looper_dir = looper_bin()
            .parent()
            .expect("bin dir")
            .display()
            .to_string();
        let path = format!(
            "{looper_dir}:{}:{}",
            self.cli_bin.display(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into())
        );
        let d = |p: &str| self.at(p).display().to_string();
        let mut env = vec![
            ("PATH".to_string(), path),
            ("HOME".into(), d("home")),
            ("LANG".into(), "C.UTF-8".into()),
            ("TERM".into(), "xterm-256color".into()),
            ("TMPDIR".into(), d("tmp")),
            ("XDG_STATE_HOME".into(), d("xdg-state")),
            ("XDG_CONFIG_HOME".into(), d("xdg-config")),
            (
                "TMUX_TMPDIR".into(),
                self.tmux_dir.path().display().to_string(),
            ),
            ("EDITOR".into(), d("editor")),
            // A proxy in the developer's shell must not see loopback traffic.
            ("NO_PROXY".into(), "127.0.0.1,localhost".into()),
            ("no_proxy".into(), "127.0.0.1,localhost".into()),
        ];
        for k in ["USER", "LOGNAME"] {
            if let Ok(v) = std::env::var(k) {
                env.push((k.into(), v));
            }
        }
        env
    }

    /// What the user exported for the agents: codex's home and key, claude's endpoint and
    /// key (and the switches that keep it off the network and its own retries off).
    fn agent_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "CODEX_HOME".into(),
                self.at("codex-home").display().to_string(),
            ),
            ("MOCK_API_KEY".into(), "mock-key".into()),
            ("ANTHROPIC_BASE_URL".into(), self.server.base_url()),
            ("ANTHROPIC_API_KEY".into(), CLAUDE_KEY.into()),
            (
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".into(),
                "1".into(),
            ),
            ("DISABLE_AUTOUPDATER".into(), "1".into()),
            ("CLAUDE_CODE_MAX_RETRIES".into(), "0".into()),
        ]
    }

    /// A `tmux` command on this pass's server (TMUX_TMPDIR), from outside it.
    fn tmux(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("tmux")
            .args(args)
            .env_clear()
            .envs(self.login_env())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(stdout(&out))
        } else {
            Err(stderr(&out))
        }
    }

    fn run_dirs(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.repo().join(".agent-looper/runs"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Processes left of this pass: everything whose environment has its HOME.
    fn survivors(&self) -> Vec<i32> {
        e2e_support::processes_with_env(&format!("HOME={}", self.home().display()))
    }

    fn kill_survivors(&self) {
        for pid in self.survivors() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
        self.kill_survivors();
    }
}

fn sh_quote(p: &Path) -> String {
    shlex::try_quote(&p.display().to_string())
        .map(|q| q.into_owned())
        .expect("a quotable path")
}

/// How a line ended: its exit code (`None`: it did not end in time and was stopped) and what
/// it printed.
#[derive(Debug)]
struct Done {
    code: Option<i32>,
    text: String,
}

/// A line started in a terminal, not yet waited for.
enum Running {
    Child(Child),
    Pane {
        pane: String,
        line: String,
        before: usize,
    },
}

/// Where the lines are run: `sh -c` children outside tmux, or an interactive bash in panes
/// of a tmux server the user is attached to.
enum Terminal<'f> {
    Plain {
        f: &'f Fixture,
        cwd: PathBuf,
    },
    Tmux {
        f: &'f Fixture,
        /// `script` running the attached tmux client: the user's terminal.
        client: Child,
        /// The user's shells, by tmux pane id: the first, then a second one split off it.
        panes: Vec<String>,
    },
}

impl<'f> Terminal<'f> {
    fn open(f: &'f Fixture, place: Place) -> Terminal<'f> {
        match place {
            Place::OutsideTmux => Terminal::Plain {
                f,
                cwd: f.work.path().to_path_buf(),
            },
            Place::InsideTmux => Self::open_tmux(f),
        }
    }

    /// The user's bash: the agents' variables exported (not in the tmux server's
    /// environment), a plain prompt, and every exit code appended to `rc/<pane id>`.
    fn bash_command(f: &Fixture) -> String {
        let mut rc = String::from("PS1='$ '\nunset HISTFILE\n");
        for (k, v) in f.agent_env() {
            rc.push_str(&format!(
                "export {k}={}\n",
                shlex::try_quote(&v).expect("quotable")
            ));
        }
        rc.push_str(&format!(
            "PROMPT_COMMAND='echo $? >> {}/\"$TMUX_PANE\"'\n",
            sh_quote(&f.at("rc"))
        ));
        std::fs::write(f.at("bashrc"), rc).expect("bashrc");
        format!("bash --noprofile --rcfile {} -i", sh_quote(&f.at("bashrc")))
    }

    fn open_tmux(f: &'f Fixture) -> Terminal<'f> {
        let shell = Self::bash_command(f);
        let start = format!(
            "stty cols 200 rows 50; exec tmux new-session -s work -c {} {}",
            sh_quote(f.work.path()),
            shlex::try_quote(&shell).expect("quotable")
        );
        let client = Command::new("script")
            .args(["-qec", &start, "/dev/null"])
            .env_clear()
            .envs(f.login_env())
            .current_dir(f.work.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("script (util-linux) gives the tmux client a terminal");
        let mut t = Terminal::Tmux {
            f,
            client,
            panes: vec![],
        };
        let attached = wait_until(30.0, || {
            f.tmux(&["list-clients", "-F", "#{client_session}"])
                .is_ok_and(|s| s.trim() == "work")
        });
        assert!(attached, "no client attached to the user's tmux session");
        let pane = f
            .tmux(&["display-message", "-p", "-t", "=work:", "#{pane_id}"])
            .expect("the user's pane")
            .trim()
            .to_string();
        t.shell_ready(&pane);
        if let Terminal::Tmux { panes, .. } = &mut t {
            panes.push(pane);
        }
        t
    }

    /// Wait for the first prompt of the bash in `pane`.
    fn shell_ready(&self, pane: &str) {
        let Terminal::Tmux { f, .. } = self else {
            return;
        };
        assert!(
            wait_until(30.0, || rc_count(f, pane) >= 1),
            "the shell in {pane} never showed its prompt: {}",
            f.tmux(&["capture-pane", "-p", "-t", pane])
                .unwrap_or_default()
        );
    }

    /// The pane of terminal `n` (0: the first; 1: a second one, split off the first, in the
    /// first one's directory).
    fn pane(&mut self, n: usize) -> String {
        let Terminal::Tmux { f, panes, .. } = self else {
            unreachable!("only tmux terminals have panes")
        };
        while panes.len() <= n {
            let shell = Self::bash_command(f);
            let dir = f
                .tmux(&[
                    "display-message",
                    "-p",
                    "-t",
                    &panes[0],
                    "#{pane_current_path}",
                ])
                .expect("the first shell's directory")
                .trim()
                .to_string();
            let id = f
                .tmux(&[
                    "split-window",
                    "-d",
                    "-v",
                    "-P",
                    "-F",
                    "#{pane_id}",
                    "-t",
                    &panes[0],
                    "-c",
                    &dir,
                    &shell,
                ])
                .expect("a second shell")
                .trim()
                .to_string();
            panes.push(id);
        }
        let pane = panes[n].clone();
        self.shell_ready(&pane);
        pane
    }

    /// Start `line` in terminal `n`.
    fn start(&mut self, line: &str, n: usize) -> Running {
        match self {
            Terminal::Plain { f, cwd } => {
                let child = Command::new("sh")
                    .args(["-c", line])
                    .env_clear()
                    .envs(f.login_env())
                    .envs(f.agent_env())
                    .current_dir(&*cwd)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("sh");
                Running::Child(child)
            }
            Terminal::Tmux { .. } => {
                let pane = self.pane(n);
                let Terminal::Tmux { f, .. } = self else {
                    unreachable!()
                };
                let before = rc_count(f, &pane);
                f.tmux(&["send-keys", "-t", &pane, "-l", line])
                    .expect("type the line");
                f.tmux(&["send-keys", "-t", &pane, "Enter"])
                    .expect("press Enter");
                Running::Pane {
                    pane,
                    line: line.to_string(),
                    before,
                }
            }
        }
    }

    /// Wait for a started line to end, stopping it after `deadline`.
    fn finish(&mut self, running: Running, deadline: Duration) -> Done {
        match (self, running) {
            (Terminal::Plain { .. }, Running::Child(child)) => {
                match e2e_support::wait_with_deadline(child, deadline) {
                    Ok(out) => Done {
                        code: out.status.code(),
                        text: format!("{}{}", stdout(&out), stderr(&out)),
                    },
                    Err(e) => Done {
                        code: None,
                        text: e,
                    },
                }
            }
            (Terminal::Tmux { f, .. }, Running::Pane { pane, line, before }) => {
                let ended = wait_until(deadline.as_secs_f64(), || rc_count(f, &pane) > before);
                if !ended {
                    let _ = f.tmux(&["send-keys", "-t", &pane, "C-c"]);
                }
                let history = || {
                    f.tmux(&["capture-pane", "-p", "-J", "-S", "-", "-t", &pane])
                        .unwrap_or_default()
                        .trim_end()
                        .to_string()
                };
                // PROMPT_COMMAND runs before bash draws the prompt that ends the output.
                let prompt_back = wait_until(5.0, || history().ends_with("\n$"));
                let history = history();
                let echo = format!("$ {line}\n");
                let text = match history.rfind(&echo) {
                    Some(at) => {
                        let after = &history[at + echo.len()..];
                        let after = if prompt_back {
                            after.strip_suffix('$').unwrap_or(after)
                        } else {
                            after
                        };
                        after.to_string()
                    }
                    None => history,
                };
                Done {
                    code: ended.then(|| last_rc(f, &pane)).flatten(),
                    text,
                }
            }
            _ => unreachable!("a line is finished in the terminal that started it"),
        }
    }

    fn run(&mut self, line: &str) -> Done {
        let r = self.start(line, 0);
        self.finish(r, LINE_DEADLINE)
    }

    /// `cd <dir>`: typed into the shell, or (outside tmux, one `sh` per line) where the
    /// next lines run.
    fn cd(&mut self, line: &str, dir: &str) -> Done {
        match self {
            Terminal::Plain { cwd, .. } => {
                let to = cwd.join(dir);
                assert!(to.is_dir(), "`{line}`: {} is not a directory", to.display());
                *cwd = to;
                Done {
                    code: Some(0),
                    text: String::new(),
                }
            }
            Terminal::Tmux { .. } => self.run(line),
        }
    }
}

impl Drop for Terminal<'_> {
    fn drop(&mut self) {
        if let Terminal::Tmux { f, client, .. } = self {
            let _ = f.tmux(&["kill-server"]);
            let _ = client.kill();
            let _ = client.wait();
        }
    }
}

fn rc_lines(f: &Fixture, pane: &str) -> Vec<String> {
    std::fs::read_to_string(f.at("rc").join(pane))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn rc_count(f: &Fixture, pane: &str) -> usize {
    rc_lines(f, pane).len()
}

fn last_rc(f: &Fixture, pane: &str) -> Option<i32> {
    rc_lines(f, pane).last().and_then(|l| l.trim().parse().ok())
}

/// A run's `state.json` (`None` while it does not exist or is being replaced).
fn state_of(run: &Path) -> Option<Json> {
    serde_json::from_slice(&std::fs::read(run.join("state.json")).ok()?).ok()
}

fn alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| {
        st.rfind(')')
            .and_then(|c| st[c + 1..].split_whitespace().next())
            .is_some_and(|s| s != "Z")
    })
}

/// The run that appears after `before` runs, once its state is readable.
fn new_run(f: &Fixture, before: usize, what: &str) -> PathBuf {
    let appeared = wait_until(LINE_DEADLINE.as_secs_f64(), || {
        f.run_dirs()
            .get(before)
            .is_some_and(|r| state_of(r).is_some())
    });
    assert!(appeared, "{what}: no new run ({:?})", f.run_dirs());
    f.run_dirs()[before].clone()
}

/// The run's final state, once it has ended and its supervisor has exited (it still lets go
/// of the worktree after recording its end: the next line must find it free).
fn ended(f: &Fixture, run: &Path, what: &str) -> Json {
    let over = wait_until(LINE_DEADLINE.as_secs_f64(), || {
        state_of(run).is_some_and(|s| {
            !matches!(
                s["status"].as_str(),
                Some("running" | "retrying" | "starting" | "paused")
            ) && !s["pid"].as_i64().is_some_and(alive)
        })
    });
    let st = state_of(run).unwrap_or_default();
    assert!(
        over,
        "{what}: the run did not end: {st}\n{}",
        diagnose(f, run)
    );
    st
}

/// The run's events and the tail of its logs, for a failure message.
fn diagnose(f: &Fixture, run: &Path) -> String {
    let mut s = String::new();
    for e in read_events(run) {
        s.push_str(&format!("event {e}\n"));
    }
    if let Ok(dir) = std::fs::read_dir(run) {
        for p in dir.filter_map(|e| e.ok().map(|e| e.path())) {
            if p.extension().is_some_and(|x| x == "log") {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                s.push_str(&format!("--- {}\n", p.display()));
                for l in tail.into_iter().rev() {
                    s.push_str(l);
                    s.push('\n');
                }
            }
        }
    }
    for r in f.server.requests() {
        s.push_str(&format!(
            "request {} {} turn={} reply={}\n",
            r.method, r.path, r.is_turn, r.reply
        ));
    }
    s
}

/// The session of a run's supervisor pane, asked of the tmux server its state names.
fn session_of(st: &Json) -> String {
    let (Some(socket), Some(pane)) = (st["tmux_socket"].as_str(), st["tmux_pane"].as_str()) else {
        return format!("(no tmux pane in the state: {st})");
    };
    Command::new("tmux")
        .args([
            "-S",
            socket,
            "display-message",
            "-p",
            "-t",
            pane,
            "#{session_name}",
        ])
        .env_remove("TMUX")
        .output()
        .map(|o| stdout(&o).trim().to_string())
        .unwrap_or_default()
}

/// How long each line took, for the report.
struct Timing(Vec<(String, Duration)>);

impl Timing {
    fn note(&mut self, line: &str, since: Instant) {
        self.0.push((line.to_string(), since.elapsed()));
    }
}

/// The README's Quick start, line by line, for `cli` in `place`.
fn follow_the_quick_start(cli: Cli, place: Place, test: &str) {
    let Some(bin) = e2e_support::require(test) else {
        return;
    };
    assert!(
        Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success()),
        "tmux is required (scripts/test installs it)"
    );
    let begun = Instant::now();
    let f = Fixture::new(cli, bin);
    let lines: Vec<String> = quick_start_lines()
        .iter()
        .map(|l| l.replace("codex-looper", f.wrapper))
        .collect();
    let mut t = Terminal::open(&f, place);
    let mut timing = Timing(vec![]);
    let mut initialised = false;
    let mut farm_line: Option<String> = None;
    // The held turn of the loop that the watch-and-stop lines are about, once started.
    let mut watched: Option<(PathBuf, PathBuf)> = None;
    let mut following: Option<(Running, Instant)> = None;
    let interface = |st: &Json| st["agent_interface"].as_str().unwrap_or("?").to_string();
    for line in &lines {
        let what = format!("{} {place:?}: `{line}`", f.cli.name());
        let step = step_of(line, f.wrapper, initialised);
        let since = Instant::now();
        if matches!(step, Step::Status | Step::FollowLogs | Step::StopAfterLoop)
            && watched.is_none()
        {
            let farm = farm_line
                .clone()
                .expect("the Quick start starts a loop before it watches one");
            watched = Some(start_watched_loop(&f, &mut t, &farm));
            timing.note(&format!("{farm} (again, held turn)"), since);
        }
        let since = Instant::now();
        match step.clone() {
            Step::Cd(dir) => {
                let done = t.cd(line, &dir);
                assert_eq!(done.code, Some(0), "{what}: {}", done.text);
            }
            Step::FirstRun => {
                let done = t.run(line);
                assert_eq!(done.code, Some(0), "{what}: {}", done.text);
                assert!(done.text.contains("Next steps:"), "{what}: {}", done.text);
                assert!(
                    done.text
                        .contains(&format!("`{} --local --once`", f.wrapper)),
                    "{what}: {}",
                    done.text
                );
                assert!(f.repo().join("agent-looper.toml").is_file(), "{what}");
                assert!(f.repo().join("PROMPT.md").is_file(), "{what}");
                assert!(
                    f.run_dirs().is_empty(),
                    "{what}: nothing runs the first time"
                );
                initialised = true;
            }
            Step::EditPrompt => {
                let done = t.run(line);
                assert_eq!(done.code, Some(0), "{what}: {}", done.text);
                assert_eq!(
                    std::fs::read_to_string(f.repo().join("PROMPT.md")).unwrap_or_default(),
                    PROMPT,
                    "{what}"
                );
            }
            Step::FarmLoop => {
                farm_line = Some(line.clone());
                assert_eq!(f.server.queued(f.provider), 0, "{what}");
                f.server.push(f.provider, Reply::text(DONE_FARM));
                let before = f.run_dirs().len();
                let done = t.run(line);
                assert_eq!(done.code, Some(0), "{what}: {}", done.text);
                let hint = match place {
                    Place::OutsideTmux => "(attach: tmux attach -t looper)",
                    Place::InsideTmux => "(switch: tmux switch-client -t looper)",
                };
                assert!(
                    done.text.contains("in tmux session looper") && done.text.contains(hint),
                    "{what}: {}",
                    done.text
                );
                let run = new_run(&f, before, &what);
                let st = ended(&f, &run, &what);
                assert_eq!(
                    st["status"],
                    "stopped",
                    "{what}: {st}\n{}",
                    diagnose(&f, &run)
                );
                assert_eq!(st["stop_reason"], "completion marker", "{what}: {st}");
                assert_eq!(st["exit_code"], 0, "{what}: {st}");
                assert_eq!(st["current_loop"], 1, "{what}: {st}");
                assert_eq!(session_of(&st), "looper", "{what}: a window of the farm");
                let want = if cli == Cli::Claude { "hybrid" } else { "json" };
                assert_eq!(interface(&st), want, "{what}: {st}");
                if cli == Cli::Claude {
                    assert!(st["hybrid_pane_id"].is_string(), "{what}: {st}");
                }
                let prompts = f.server.prompts(f.provider);
                assert!(
                    prompts
                        .first()
                        .is_some_and(|p| p.contains("The quick start works.")),
                    "{what}: the edited prompt reached the model: {prompts:?}"
                );
            }
            Step::LocalOnce => {
                assert_eq!(f.server.queued(f.provider), 0, "{what}");
                f.server.push(f.provider, Reply::text(DONE_LOCAL));
                let before = f.run_dirs().len();
                let done = t.run(line);
                let run = f.run_dirs().get(before).cloned();
                assert_eq!(
                    done.code,
                    Some(0),
                    "{what}: {}\n{}",
                    done.text,
                    run.as_deref().map(|r| diagnose(&f, r)).unwrap_or_default()
                );
                let run = run.expect("a run of this shell");
                let st = ended(&f, &run, &what);
                assert_eq!(st["stop_reason"], "completion marker", "{what}: {st}");
                assert_eq!(st["current_loop"], 1, "{what}: {st}");
                assert!(
                    done.text.contains("completion marker"),
                    "{what}: {}",
                    done.text
                );
                let want = match (cli, place) {
                    (Cli::Claude, Place::InsideTmux) => "hybrid",
                    _ => "json",
                };
                assert_eq!(interface(&st), want, "{what}: {st}");
                if (cli, place) == (Cli::Claude, Place::OutsideTmux) {
                    assert!(
                        done.text.contains("interface: json (not inside tmux"),
                        "{what}: the fallback is said: {}",
                        done.text
                    );
                }
            }
            Step::Status => {
                let done = t.run(line);
                assert_eq!(done.code, Some(0), "{what}: {}", done.text);
                let runs = f.run_dirs();
                assert_eq!(runs.len(), 3, "{what}");
                for run in &runs {
                    let label = state_of(run).unwrap_or_default()["label"]
                        .as_str()
                        .unwrap_or("?")
                        .to_string();
                    assert!(done.text.contains(&label), "{what}: {label}: {}", done.text);
                }
                assert!(done.text.contains("running"), "{what}: {}", done.text);
            }
            Step::FollowLogs => {
                // It follows the loop under way, whose turn is held: it is ended by the
                // run's end, after the next line.
                following = Some((t.start(line, 0), since));
            }
            Step::StopAfterLoop => {
                let (run, gate) = watched.clone().expect("a watched loop");
                let terminal = if following.is_some() { 1 } else { 0 };
                let stop = t.start(line, terminal);
                let acked = wait_until(30.0, || {
                    read_events(&run)
                        .iter()
                        .any(|e| e["event"] == "control_command_received")
                });
                assert!(acked, "{what}: not acknowledged\n{}", diagnose(&f, &run));
                // The loop is still in its turn; it ends when the model answers.
                assert!(
                    state_of(&run).is_some_and(|s| s["status"] == "running"),
                    "{what}"
                );
                std::fs::write(&gate, "").expect("release the held turn");
                let done = t.finish(stop, LINE_DEADLINE);
                assert_eq!(
                    done.code,
                    Some(0),
                    "{what}: {}\n{}",
                    done.text,
                    diagnose(&f, &run)
                );
                let st = ended(&f, &run, &what);
                assert_eq!(st["status"], "stopped", "{what}: {st}");
                assert_eq!(st["stop_kind"], "control", "{what}: {st}");
                assert_eq!(
                    st["current_loop"], 1,
                    "{what}: it stopped after the loop: {st}"
                );
                let reason = st["stop_reason"].as_str().unwrap_or("?");
                assert!(done.text.contains(reason), "{what}: {}", done.text);
                if let Some((follow, started)) = following.take() {
                    let done = t.finish(follow, Duration::from_secs(30));
                    assert_eq!(
                        done.code,
                        Some(0),
                        "`looper logs -f` ends with the run: {}",
                        done.text
                    );
                    assert!(
                        done.text.contains("Still going over the notes."),
                        "`looper logs -f` followed the loop's transcript: {}",
                        done.text
                    );
                    assert!(
                        !done.text.contains("nothing left to do"),
                        "`looper logs -f` showed an older run: {}",
                        done.text
                    );
                    timing.note("looper logs -f", started);
                }
            }
        }
        if !matches!(step, Step::FollowLogs) {
            timing.note(line, since);
        }
    }
    assert!(following.is_none(), "`looper logs -f` was never ended");
    assert!(watched.is_some(), "the Quick start never watched a loop");
    // 14.3: the run records stay out of the user's commits.
    let status = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=all"])
        .current_dir(f.repo())
        .output()
        .expect("git status");
    let status = stdout(&status);
    assert!(!status.contains(".agent-looper"), "{status}");
    // No orphans: once the tmux server is gone, nothing of this pass is left.
    drop(t);
    let _ = f.tmux(&["kill-server"]);
    let clean = wait_until(10.0, || f.survivors().is_empty());
    let left: Vec<String> = f
        .survivors()
        .iter()
        .map(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                .unwrap_or_default()
        })
        .collect();
    assert!(clean, "processes left: {left:?}");
    let mut report = format!("{test}: {:.1} s\n", begun.elapsed().as_secs_f64());
    for (line, d) in &timing.0 {
        report.push_str(&format!("  {:>6.1} s  {line}\n", d.as_secs_f64()));
    }
    eprint!("{report}");
    let _ = std::io::stderr().flush();
}

/// Run the README's farm loop line again, its model turn held at the server: the loop that
/// `looper status`, `looper logs -f` and `looper control stop` watch and stop. Returns the
/// run directory and the file that releases the turn.
fn start_watched_loop(f: &Fixture, t: &mut Terminal<'_>, line: &str) -> (PathBuf, PathBuf) {
    let what = format!(
        "{}: `{line}` (again, for the lines that watch a loop)",
        f.cli.name()
    );
    assert_eq!(f.server.queued(f.provider), 0, "{what}");
    let gate = f.at("release-held-turn");
    f.server.push(f.provider, Reply::held(HELD, &gate));
    let turns = f.server.turns(f.provider).len();
    let before = f.run_dirs().len();
    let done = t.run(line);
    assert_eq!(done.code, Some(0), "{what}: {}", done.text);
    let run = new_run(f, before, &what);
    let asked = f
        .server
        .wait_for_turns(f.provider, turns + 1, LINE_DEADLINE);
    assert!(
        asked,
        "{what}: the model was never asked\n{}",
        diagnose(f, &run)
    );
    (run, gate)
}

/// codex outside tmux: every line as `sh -c` with the user's environment; the farm launch
/// starts its own tmux server.
#[test]
fn the_readme_quick_start_works_with_codex_outside_tmux() {
    follow_the_quick_start(
        Cli::Codex,
        Place::OutsideTmux,
        "the_readme_quick_start_works_with_codex_outside_tmux",
    );
}

/// codex inside tmux: every line typed into a bash in a pane of the user's tmux server.
#[test]
fn the_readme_quick_start_works_with_codex_inside_tmux() {
    follow_the_quick_start(
        Cli::Codex,
        Place::InsideTmux,
        "the_readme_quick_start_works_with_codex_inside_tmux",
    );
}

/// claude outside tmux: `--local --once` falls back to `claude -p` (json) and says so; the
/// farm window is inside tmux, so there claude runs its real TUI in a hybrid pane.
#[test]
fn the_readme_quick_start_works_with_claude_outside_tmux() {
    follow_the_quick_start(
        Cli::Claude,
        Place::OutsideTmux,
        "the_readme_quick_start_works_with_claude_outside_tmux",
    );
}

/// claude inside tmux: every loop, the local one too, in claude's real TUI (hybrid pane).
#[test]
fn the_readme_quick_start_works_with_claude_inside_tmux() {
    follow_the_quick_start(
        Cli::Claude,
        Place::InsideTmux,
        "the_readme_quick_start_works_with_claude_inside_tmux",
    );
}

#[test]
fn quick_start_lines_lose_their_comments_and_are_all_known() {
    assert_eq!(
        strip_comment("codex-looper   # first time: writes"),
        "codex-looper"
    );
    assert_eq!(strip_comment("# only a comment"), "");
    assert_eq!(strip_comment("a#b c"), "a#b c");
    let lines = quick_start_lines();
    assert!(lines.len() >= 8, "{lines:?}");
    let mut initialised = false;
    for l in &lines {
        if step_of(l, "codex-looper", initialised) == Step::FirstRun {
            initialised = true;
        }
    }
    assert!(initialised, "{lines:?}");
}

/// A stand-in `claude` for a hybrid pane: answers the looper's `--version` probe, and
/// otherwise writes its environment to `out`, then idles as a TUI waiting for input would.
fn env_recording_claude(dir: &Path, out: &Path) -> PathBuf {
    let path = dir.join("claude");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nif [ \"$1\" = --version ]; then echo '2.1.332 (Claude Code)'; exit 0; fi\nenv > {0}.tmp && mv {0}.tmp {0}\nexec sleep 120\n",
            sh_quote(out)
        ),
    )
    .expect("stub");
    let mut perm = std::fs::metadata(&path).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&path, perm).expect("chmod");
    path
}

/// Found by the claude inside-tmux pass: a hybrid pane is a child of the tmux server, so
/// its agent got the server's environment, not the looper's. A key exported in the shell
/// of an already running tmux (issue 14.4's case) never reached claude's TUI, which
/// answered every prompt with `Not logged in · Please run /login`. The pane now gets the
/// looper's environment through a private file (no value in argv), and keeps its own
/// TMUX_PANE.
#[test]
fn a_hybrid_pane_gets_the_loopers_environment_not_the_tmux_servers() {
    let Some(tmux_dir) = tempfile::Builder::new()
        .prefix("qt")
        .tempdir_in("/tmp")
        .ok()
        .filter(|_| {
            Command::new("tmux")
                .arg("-V")
                .output()
                .is_ok_and(|o| o.status.success())
        })
    else {
        eprintln!("tmux is not installed; skipping");
        return;
    };
    let p = Project::new();
    let out = p.join("pane.env");
    let stub = env_recording_claude(p.path(), &out);
    p.write(
        "agent-looper.toml",
        &format!(
            "[looper]\ndefault_agent = \"claude\"\nsleep_seconds = 0\n\n[agents.claude]\nkind = \"claude\"\ninterface = \"hybrid\"\nexecutable = {:?}\n",
            stub.display().to_string()
        ),
    );
    p.write("PROMPT.md", "go\n");
    let state_home = p.join(".xdg-state");
    let base: Vec<(String, String)> = vec![
        ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
        ("HOME".into(), p.join(".home").display().to_string()),
        ("TMUX_TMPDIR".into(), tmux_dir.path().display().to_string()),
        ("XDG_STATE_HOME".into(), state_home.display().to_string()),
        (
            "XDG_CONFIG_HOME".into(),
            p.join(".xdg-config").display().to_string(),
        ),
        ("TERM".into(), "xterm-256color".into()),
    ];
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .args(args)
            .env_clear()
            .envs(base.clone())
            .output()
            .map(|o| stdout(&o))
            .unwrap_or_default()
    };
    struct Server<'a>(&'a dyn Fn(&[&str]) -> String);
    impl Drop for Server<'_> {
        fn drop(&mut self) {
            (self.0)(&["kill-server"]);
        }
    }
    // The server starts without the variable; only the looper's own environment has it.
    tmux(&["new-session", "-d", "-s", "idle", "sleep 600"]);
    let _server = Server(&tmux);
    let looper = format!(
        "env QS_ONLY_IN_THE_SHELL=reached {} --local --once --tmux-layout single --timeout 5",
        sh_quote(&looper_bin())
    );
    tmux(&[
        "new-window",
        "-t",
        "=idle:",
        "-c",
        &p.path().display().to_string(),
        &looper,
    ]);
    let seen = wait_until(30.0, || out.exists());
    let env = std::fs::read_to_string(&out).unwrap_or_default();
    let live = || p.run_dirs().pop().and_then(|r| state_of(&r));
    wait_until(10.0, || {
        live().is_some_and(|s| s["hybrid_pane_id"].is_string())
    });
    let st = live().unwrap_or_default();
    // The stand-in never shows claude's prompt: the run gives up on it after `--timeout`.
    let over = wait_until(60.0, || {
        live().is_some_and(|s| !matches!(s["status"].as_str(), Some("running" | "starting")))
    });
    assert!(over, "the run did not end: {:?}", live());
    assert!(seen, "the pane's agent never started: {st}");
    assert!(
        env.lines().any(|l| l == "QS_ONLY_IN_THE_SHELL=reached"),
        "the agent in the pane lacks the looper's environment:\n{env}"
    );
    let pane = st["hybrid_pane_id"].as_str().unwrap_or("?");
    assert!(
        env.lines().any(|l| l == format!("TMUX_PANE={pane}")),
        "the pane keeps its own TMUX_PANE ({pane}):\n{env}"
    );
    let left: Vec<PathBuf> = std::fs::read_dir(state_home.join("agent-looper/farm"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "hand-over files left: {left:?}");
}

/// Found by the same pass before its fix: claude's TUI without credentials answers each
/// prompt with a synthetic API-error record (`Not logged in · Please run /login`,
/// `error: authentication_failed`). The hybrid turn counted as a success, so the run
/// re-prompted it forever (`claude -p` exits 1 there, which stops a json run). The turn
/// now ends as a failure: the run stops after the first loop with claude's own words.
#[test]
fn a_claude_tui_that_is_not_signed_in_stops_the_run_instead_of_looping() {
    let Some(dir) =
        e2e_support::require("a_claude_tui_that_is_not_signed_in_stops_the_run_instead_of_looping")
    else {
        return;
    };
    let f = Fixture::new(Cli::Claude, dir.clone());
    let repo = f.repo();
    std::fs::write(repo.join("PROMPT.md"), PROMPT).expect("prompt");
    std::fs::write(
        repo.join("agent-looper.toml"),
        format!(
            "[looper]\ndefault_agent = \"claude\"\nsleep_seconds = 0\ntimeout_seconds = 60\n\n[agents.claude]\nkind = \"claude\"\ninterface = \"hybrid\"\nexecutable = {:?}\n",
            dir.join("claude").display().to_string()
        ),
    )
    .expect("config");
    // A signed-in user's session, but without the API key: nothing signs claude in.
    let mut shell: Vec<(String, String)> = f
        .agent_env()
        .into_iter()
        .filter(|(k, _)| k != "ANTHROPIC_API_KEY")
        .collect();
    shell.extend(f.login_env());
    let exit = f.at("looper.exit");
    let script = format!(
        "cd {} && looper --local --max-loops 3 --tmux-layout single; echo $? > {1}.tmp && mv {1}.tmp {1}",
        sh_quote(&repo),
        sh_quote(&exit)
    );
    let started = Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "200",
            "-y",
            "50",
            "sh",
            "-c",
            &script,
        ])
        .env_clear()
        .envs(shell)
        .output()
        .expect("tmux");
    assert!(started.status.success(), "{}", stderr(&started));
    let ended = wait_until(LINE_DEADLINE.as_secs_f64(), || exit.exists());
    let run = f.run_dirs().pop().expect("a run");
    let st = state_of(&run).unwrap_or_default();
    assert!(ended, "the run never ended: {st}\n{}", diagnose(&f, &run));
    assert_eq!(
        std::fs::read_to_string(&exit).unwrap_or_default().trim(),
        "1",
        "{st}"
    );
    assert_eq!(st["current_loop"], 1, "re-prompted: {st}");
    assert_eq!(st["agent_interface"], "hybrid", "{st}");
    let said = format!("{} {}", st["stop_reason"], st["last_error_line"]);
    assert!(said.contains("Not logged in"), "{st}");
    let status = Command::new(looper_bin())
        .arg("status")
        .current_dir(&repo)
        .env_clear()
        .envs(f.login_env())
        .output()
        .expect("status");
    let status = stdout(&status);
    assert!(
        status.contains("Not logged in") && status.contains("hint: missing credentials"),
        "{status}"
    );
}

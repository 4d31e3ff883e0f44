//! Test support: a project builder (temp git repository, config, prompt, fake-agent
//! script), the binaries under test, and readers for the run records.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub use serde_json::Value as Json;

pub fn looper_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_looper"))
}

pub fn codex_looper_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_codex-looper"))
}

pub fn fake_agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fake-agent"))
}

/// A temporary project directory with a git repository.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    /// An empty git repository with one commit.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("looper-test-")
            .tempdir()
            .expect("tempdir");
        let p = Project { dir };
        p.git(&["init", "-q", "-b", "main"]);
        p.git(&["config", "user.email", "test@example.com"]);
        p.git(&["config", "user.name", "test"]);
        p.write("README.md", "test\n");
        p.write(".gitignore", ".agent-looper/\n");
        p.git(&["add", "-A"]);
        p.git(&["commit", "-q", "-m", "init"]);
        p
    }

    /// A plain directory, not a git repository.
    pub fn bare_dir() -> Self {
        Project {
            dir: tempfile::Builder::new()
                .prefix("looper-test-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn write(&self, name: &str, text: &str) -> &Self {
        let p = self.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, text).expect("write");
        self
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.join(name)).expect("read")
    }

    pub fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(self.path())
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Config with a generic agent `fake` running the fake agent with `script`.
    pub fn fake_agent(&self, script: &str, looper_extra: &str) -> &Self {
        self.write("agent.script", script);
        let cfg = format!(
            "[looper]\ndefault_agent = \"fake\"\nsleep_seconds = 0\n{looper_extra}\n\n[agents.fake]\nkind = \"generic\"\nfirst_command = [{:?}, \"{{prompt}}\"]\nenv = {{ FAKE_AGENT_SCRIPT = {:?} }}\n",
            fake_agent_bin().display().to_string(),
            self.join("agent.script").display().to_string()
        );
        self.write("agent-looper.toml", &cfg);
        if !self.join("PROMPT.md").exists() {
            self.write("PROMPT.md", "do the thing\n");
        }
        self
    }

    /// How many times the fake agent ran.
    pub fn calls(&self) -> usize {
        std::fs::read_to_string(self.join("agent.script.calls"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn looper(&self) -> Command {
        let mut c = Command::new(looper_bin());
        c.current_dir(self.path())
            .env_remove("TMUX")
            .env_remove("TMUX_PANE")
            .env("XDG_STATE_HOME", self.join(".xdg-state"))
            .env("XDG_CONFIG_HOME", self.join(".xdg-config"))
            .stdin(Stdio::null());
        c
    }

    /// Run `looper --local <args>` to the end.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut c = self.looper();
        c.arg("--local").args(args);
        c.output().expect("run looper")
    }

    pub fn runs_dir(&self) -> PathBuf {
        self.join(".agent-looper/runs")
    }

    /// Run directories, oldest first; not a run still being staged (`.<id>.new`, which has
    /// no state yet) nor anything else hidden.
    pub fn run_dirs(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.runs_dir())
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    pub fn last_run(&self) -> PathBuf {
        self.run_dirs().pop().expect("a run directory")
    }

    pub fn state(&self) -> Json {
        read_json(&self.last_run().join("state.json"))
    }

    pub fn events(&self) -> Vec<Json> {
        read_events(&self.last_run())
    }

    pub fn event_names(&self) -> Vec<String> {
        self.events()
            .iter()
            .filter_map(|e| e["event"].as_str().map(str::to_string))
            .collect()
    }
}

pub fn read_json(p: &Path) -> Json {
    serde_json::from_slice(&std::fs::read(p).expect("read json")).expect("parse json")
}

pub fn read_events(run_dir: &Path) -> Vec<Json> {
    let text = std::fs::read_to_string(run_dir.join("events.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Is any process of group `pgid` still alive (zombies excluded)?
pub fn group_alive(pgid: i64) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i64>().ok())
        .any(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some(close) = stat.rfind(')') else {
                return false;
            };
            let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            f.first() != Some(&"Z") && f.get(2).and_then(|g| g.parse::<i64>().ok()) == Some(pgid)
        })
}

/// Poll until `f` is true or `secs` pass.
pub fn wait_until(secs: f64, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + std::time::Duration::from_secs_f64(secs);
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    f()
}

//! The hybrid interface with the real claude TUI in a private tmux server, against the
//! mock model server: the prompt is pasted, the turn ends from the transcript, a prompt
//! that contains the marker does not complete on its own, a reply that carries it does.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::mock_server::{MockServer, Provider, Reply};

use crate::support::*;

/// The installed claude, or `None` after the tier's loud skip (a failure in CI).
fn claude_bin() -> Option<PathBuf> {
    crate::e2e_support::require("hybrid_claude").map(|dir| dir.join("claude"))
}

fn has_tmux() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A private tmux server: its own socket directory, killed on drop.
struct Tmux {
    dir: tempfile::TempDir,
}

impl Tmux {
    fn new() -> Self {
        Tmux {
            dir: tempfile::tempdir().expect("tmux dir"),
        }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.env("TMUX_TMPDIR", self.dir.path())
            .env_remove("TMUX")
            .env_remove("TMUX_PANE");
        c
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}

fn claude_home(home: &Path, work: &Path, key: &str) {
    std::fs::create_dir_all(home).expect("home");
    let cfg = serde_json::json!({
        "hasCompletedOnboarding": true,
        "theme": "dark",
        "projects": { work.display().to_string(): { "hasTrustDialogAccepted": true, "hasCompletedProjectOnboarding": true } },
        "customApiKeyResponses": { "approved": [key[key.len() - 20..].to_string()], "rejected": [] },
    });
    std::fs::write(home.join(".claude.json"), cfg.to_string()).expect("claude.json");
}

#[test]
fn hybrid_claude_completes_on_the_reply_not_on_the_prompt() {
    let Some(claude) = claude_bin() else { return };
    assert!(has_tmux(), "tmux is required (scripts/test installs it)");
    let server = MockServer::start();
    server.push(
        Provider::Anthropic,
        Reply::text("Still working.\nEXIT_SIGNAL: false"),
    );
    server.push(
        Provider::Anthropic,
        Reply::text("All done.\nEXIT_SIGNAL: true"),
    );
    let p = Project::new();
    let home = p.join("home");
    let key = "sk-ant-api03-test-0123456789abcdefghijklmnop";
    claude_home(&home, p.path(), key);
    std::fs::create_dir_all(p.join("tmp")).expect("tmp");
    p.write(
        "PROMPT.md",
        "Finish the task. End with EXIT_SIGNAL: true only when done.",
    );
    p.write(
        "agent-looper.toml",
        &format!(
            "[looper]\ndefault_agent = \"claude\"\nsleep_seconds = 0\ntimeout_seconds = 60\n\n[agents.claude]\nkind = \"claude\"\ninterface = \"hybrid\"\nexecutable = {:?}\nenv = {{ HOME = {:?}, ANTHROPIC_BASE_URL = {:?}, ANTHROPIC_API_KEY = {:?}, CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = \"1\", DISABLE_AUTOUPDATER = \"1\", CLAUDE_CODE_MAX_RETRIES = \"0\", TMPDIR = {:?} }}\n",
            claude.display().to_string(),
            home.display().to_string(),
            server.base_url(),
            key,
            p.join("tmp").display().to_string(),
        ),
    );
    let tmux = Tmux::new();
    let done = p.join("looper.exit");
    let script = format!(
        "cd {:?} && {:?} --local --max-loops 4 --complete-on 'EXIT_SIGNAL:\\s*true'; echo $? > {:?}",
        p.path(),
        looper_bin(),
        done
    );
    let out = tmux
        .cmd()
        .args([
            "new-session",
            "-d",
            "-s",
            "hy",
            "-x",
            "200",
            "-y",
            "50",
            "sh",
            "-c",
            &script,
        ])
        .env("XDG_STATE_HOME", p.join(".xdg-state"))
        .output()
        .expect("tmux new-session");
    assert!(out.status.success(), "{}", stderr(&out));
    let finished = wait_until(120.0, || done.exists());
    let pane_text = tmux
        .cmd()
        .args(["capture-pane", "-p", "-t", "hy"])
        .output()
        .map(|o| stdout(&o))
        .unwrap_or_default();
    assert!(
        finished,
        "the hybrid run did not finish; supervisor pane:\n{pane_text}"
    );
    assert_eq!(
        std::fs::read_to_string(&done).unwrap_or_default().trim(),
        "0",
        "{pane_text}"
    );
    let st = p.state();
    assert_eq!(st["stop_reason"], "completion marker", "{st}");
    assert_eq!(
        st["current_loop"], 2,
        "loop 1's reply said false; the prompt's own marker did not count"
    );
    assert!(
        st["hybrid_pane_id"]
            .as_str()
            .is_some_and(|id| id.starts_with('%')),
        "{st}"
    );
    let prompts = server.prompts(Provider::Anthropic);
    assert_eq!(prompts.len(), 2, "{prompts:?}");
    assert!(
        prompts[0].contains("End with EXIT_SIGNAL: true only when done."),
        "{prompts:?}"
    );
    // The pane is killed at the end of the run.
    let panes = tmux
        .cmd()
        .args(["list-panes", "-a", "-F", "#{pane_id}"])
        .output()
        .map(|o| stdout(&o))
        .unwrap_or_default();
    assert!(
        !panes.contains(st["hybrid_pane_id"].as_str().unwrap_or("?")),
        "{panes}"
    );
}

//! The service files `looper service install` writes, as text, without I/O: a systemd user
//! unit and a launchd agent (macOS). Every value is quoted for the file's own syntax.

use std::path::Path;

/// What a service runs and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// The service name (`looper-<name>.service`, `dev.agent-looper.<name>`).
    pub name: String,
    /// The directory the looper runs in (its project).
    pub dir: std::path::PathBuf,
    /// The full command: the looper binary (absolute), `run`, `--local`, the run arguments.
    pub argv: Vec<String>,
    /// Environment the looper gets beyond the service manager's (PATH as at install).
    pub env: Vec<(String, String)>,
    /// An optional environment file for secrets (API keys), never written by looper.
    pub env_file: std::path::PathBuf,
}

/// The unit's file name.
pub fn unit_name(name: &str) -> String {
    format!("looper-{name}.service")
}

/// A service name names a unit and a launchd label: letters, digits, `_`, `-`, `.`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        || name.starts_with('.')
    {
        return Err("may hold only letters, digits, `_`, `-` and `.` (not first)".into());
    }
    Ok(())
}

/// A directory's name made into a service name (other characters become `-`).
pub fn name_from_dir(dir: &Path) -> String {
    let base = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut n: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    n = n.trim_start_matches('.').to_string();
    if n.is_empty() { "looper".into() } else { n }
}

/// One value in a unit file: no control characters (a newline would end the setting),
/// `%` doubled (specifiers), and for Exec lines `$` doubled (variable expansion); quoted
/// in double quotes, with `\` and `"` escaped, unless it is plainly safe.
fn systemd_word(s: &str, exec: bool) -> Result<String, String> {
    if s.chars().any(char::is_control) {
        return Err(format!(
            "{s:?} holds a control character, which a unit file cannot carry"
        ));
    }
    let mut e = s.replace('%', "%%");
    if exec {
        e = e.replace('$', "$$");
    }
    let plain = !e.is_empty()
        && e.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._=:,+@-".contains(c));
    if plain {
        return Ok(e);
    }
    Ok(format!(
        "\"{}\"",
        e.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// A path setting (`WorkingDirectory=`): taken verbatim up to the line's end, specifiers
/// expanded, no quotes.
fn systemd_path(p: &Path) -> Result<String, String> {
    let s = p.display().to_string();
    if s.chars().any(char::is_control) || !p.is_absolute() {
        return Err(format!(
            "{s:?} must be an absolute path without control characters"
        ));
    }
    Ok(s.replace('%', "%%"))
}

/// The systemd user unit.
///
/// - `Restart=on-failure`, but not after exit 2 (a usage or configuration error: it would
///   only fail again) or 3 (a breaker or budget stopped the run: restarting would defeat
///   it) (D5); a run that ends as asked (0) is done. `StartLimit*` stops a crash loop.
/// - `KillMode=mixed`: `systemctl stop` sends SIGTERM to the looper alone, which stops its
///   agent's process group itself (grace, then SIGKILL, D10) and records the end; only
///   what is left after `TimeoutStopSec` is killed. 130 (ended by that signal) is a success.
/// - No tmux: the looper runs `--local` with `TMUX` unset, so it never opens windows or
///   starts a tmux server inside the unit's cgroup, where stopping the unit would kill the
///   server with every session on it (the trap of units that start tmux). A looper that
///   needs tmux (the hybrid interface) runs in the farm instead.
pub fn systemd_unit(spec: &ServiceSpec) -> Result<String, String> {
    let exec = spec
        .argv
        .iter()
        .map(|a| systemd_word(a, true))
        .collect::<Result<Vec<_>, _>>()?
        .join(" ");
    let mut env = String::new();
    for (k, v) in &spec.env {
        env.push_str(&format!(
            "Environment={}\n",
            systemd_word(&format!("{k}={v}"), false)?
        ));
    }
    let dir = systemd_path(&spec.dir)?;
    let env_file = systemd_path(&spec.env_file)?;
    Ok(format!(
        "# Written by `looper service install` (agent-looper {version}).\n\
         # Remove it with `looper service uninstall --name {name}`.\n\
         [Unit]\n\
         Description=agent-looper {name} in {dir}\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         StartLimitIntervalSec=600\n\
         StartLimitBurst=5\n\
         \n\
         [Service]\n\
         Type=exec\n\
         WorkingDirectory={dir}\n\
         ExecStart={exec}\n\
         {env}\
         EnvironmentFile=-{env_file}\n\
         UnsetEnvironment=TMUX TMUX_PANE\n\
         Restart=on-failure\n\
         RestartSec=30\n\
         RestartPreventExitStatus=2 3\n\
         SuccessExitStatus=130\n\
         KillMode=mixed\n\
         KillSignal=SIGTERM\n\
         TimeoutStopSec=60\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
        version = env!("CARGO_PKG_VERSION"),
        name = spec.name,
    ))
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The launchd agent label.
pub fn launchd_label(name: &str) -> String {
    format!("dev.agent-looper.{name}")
}

/// The launchd agent (macOS; written as documented by launchd.plist(5), not run in CI).
/// `KeepAlive` with `SuccessfulExit = false` restarts the looper after a failure, as
/// `Restart=on-failure` does (launchd cannot exempt exit codes 2 and 3: a breaker's stop
/// is restarted after `ThrottleInterval`; prefer `--max-loops`/budgets that end in 0).
pub fn launchd_plist(spec: &ServiceSpec, log: &Path) -> String {
    let mut args = String::new();
    for a in &spec.argv {
        args.push_str(&format!("    <string>{}</string>\n", xml(a)));
    }
    let mut env = String::new();
    for (k, v) in &spec.env {
        env.push_str(&format!(
            "    <key>{}</key>\n    <string>{}</string>\n",
            xml(k),
            xml(v)
        ));
    }
    let log = xml(&log.display().to_string());
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
         <plist version=\"1.0\">\n\
         <dict>\n\
         \x20 <key>Label</key>\n  <string>{label}</string>\n\
         \x20 <key>ProgramArguments</key>\n  <array>\n{args}  </array>\n\
         \x20 <key>WorkingDirectory</key>\n  <string>{dir}</string>\n\
         \x20 <key>EnvironmentVariables</key>\n  <dict>\n{env}  </dict>\n\
         \x20 <key>RunAtLoad</key>\n  <true/>\n\
         \x20 <key>KeepAlive</key>\n  <dict>\n    <key>SuccessfulExit</key>\n    <false/>\n  </dict>\n\
         \x20 <key>ThrottleInterval</key>\n  <integer>30</integer>\n\
         \x20 <key>ExitTimeOut</key>\n  <integer>60</integer>\n\
         \x20 <key>ProcessType</key>\n  <string>Background</string>\n\
         \x20 <key>StandardOutPath</key>\n  <string>{log}</string>\n\
         \x20 <key>StandardErrorPath</key>\n  <string>{log}</string>\n\
         </dict>\n\
         </plist>\n",
        label = xml(&launchd_label(&spec.name)),
        dir = xml(&spec.dir.display().to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ServiceSpec {
        ServiceSpec {
            name: "app".into(),
            dir: "/home/me/src/my app".into(),
            argv: vec![
                "/usr/local/bin/looper".into(),
                "run".into(),
                "--local".into(),
                "--reason".into(),
                "100% \"sure\" $HOME \\ ;".into(),
            ],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            env_file: "/home/me/.config/agent-looper/services/app.env".into(),
        }
    }

    #[test]
    fn the_unit_restarts_on_failure_and_stops_the_looper_alone() {
        let u = systemd_unit(&spec()).expect("unit");
        for line in [
            "WorkingDirectory=/home/me/src/my app",
            "ExecStart=/usr/local/bin/looper run --local --reason \"100%% \\\"sure\\\" $$HOME \\\\ ;\"",
            "Environment=PATH=/usr/bin:/bin",
            "EnvironmentFile=-/home/me/.config/agent-looper/services/app.env",
            "UnsetEnvironment=TMUX TMUX_PANE",
            "Restart=on-failure",
            "RestartPreventExitStatus=2 3",
            "SuccessExitStatus=130",
            "KillMode=mixed",
            "WantedBy=default.target",
        ] {
            assert!(u.lines().any(|l| l == line), "{line} missing in\n{u}");
        }
        let mut bad = spec();
        bad.argv.push("a\nExecStartPre=/bin/evil".into());
        assert!(systemd_unit(&bad).is_err());
    }

    #[test]
    fn names_are_checked_and_made_from_directories() {
        assert!(check_name("nightly-1.x").is_ok());
        assert!(check_name("a b").is_err());
        assert!(check_name(".hidden").is_err());
        assert!(check_name("../x").is_err());
        assert_eq!(name_from_dir(Path::new("/src/my app")), "my-app");
        assert_eq!(name_from_dir(Path::new("/")), "looper");
    }

    #[test]
    fn the_launchd_agent_keeps_a_failed_looper_alive_and_escapes_xml() {
        let p = launchd_plist(&spec(), Path::new("/tmp/a&b.log"));
        assert!(p.contains("<string>dev.agent-looper.app</string>"));
        assert!(p.contains("<string>100% &quot;sure&quot; $HOME \\ ;</string>"));
        assert!(p.contains("<key>SuccessfulExit</key>\n    <false/>"));
        assert!(p.contains("<string>/tmp/a&amp;b.log</string>"));
        assert!(p.contains("<key>WorkingDirectory</key>\n  <string>/home/me/src/my app</string>"));
    }
}

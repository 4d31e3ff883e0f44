//! `looper service install|uninstall|status`: a looper kept running by the operating
//! system's service manager (a systemd user unit; a launchd agent on macOS), and what a
//! looper started again after a crash does first: close the previous run's records.
//!
//! The unit runs `looper run --local ARGS` in the directory (unit content and why:
//! `unit::systemd_unit`). A looper killed outright (SIGKILL, the OOM killer, a power cut)
//! leaves its run `running`; the restarted looper takes over the run lock (D18), finds
//! that run through the lock's holder record, repairs it (`records::repair`: stopped,
//! `external termination: ...`, one `run_stopped`) and starts a new run as configured.

pub mod unit;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap::FromArgMatches;

use crate::cli::{ServiceCommand, ServiceInstallArgs, ServiceNameArgs};
use crate::config::{self, Invocation};
use crate::error::{Error, Result, exit_code};
use unit::ServiceSpec;

pub fn service(cmd: ServiceCommand, wrapper: Option<&str>) -> Result<i32> {
    match cmd {
        ServiceCommand::Install(a) => install(&a, wrapper),
        ServiceCommand::Uninstall(a) => uninstall(&a),
        ServiceCommand::Status(a) => status(&a),
    }
}

/// The previous run of this worktree, if its supervisor died without recording an end:
/// repaired now, before the new run starts. Says what it did (or why it could not).
pub fn repair_previous_run(run_dir: &Path) -> Option<String> {
    let row = crate::records::fleet::Row::load(run_dir.to_path_buf(), &mut Vec::new());
    if row.error.is_some() || !row.state.is_active() {
        return None;
    }
    let reason =
        crate::effects::procinfo::stale_reason(row.state.pid, row.state.pid_identity.as_deref())?;
    Some(
        match crate::records::repair::repair(run_dir, &reason, chrono::Utc::now()) {
            Ok(r) => format!(
                "looper: repaired the previous run {} ({})",
                run_dir.display(),
                r.stop_reason
            ),
            Err(e) => format!(
                "looper: could not repair the previous run {}: {e}",
                run_dir.display()
            ),
        },
    )
}

fn config_home(env: &std::collections::BTreeMap<String, String>) -> Result<PathBuf> {
    env.get("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| env.get("HOME").map(|h| Path::new(h).join(".config")))
        .ok_or_else(|| Error::Usage("neither XDG_CONFIG_HOME nor HOME is set".into()))
}

/// The service's name and directory, checked.
fn name_and_dir(a: &ServiceNameArgs) -> Result<(String, PathBuf)> {
    let cwd = std::env::current_dir()
        .map_err(|e| Error::io("cannot read the current directory", ".", e))?;
    let dir = match &a.dir {
        Some(d) => config::absolutize(&cwd, d),
        None => cwd,
    };
    let dir = dir
        .canonicalize()
        .map_err(|e| Error::io("cannot find the service directory", &dir, e))?;
    let name = a.name.clone().unwrap_or_else(|| unit::name_from_dir(&dir));
    unit::check_name(&name).map_err(|why| Error::Usage(format!("--name {name:?}: {why}")))?;
    Ok((name, dir))
}

/// Where the service file goes for this platform.
fn service_file(env: &std::collections::BTreeMap<String, String>, name: &str) -> Result<PathBuf> {
    if cfg!(target_os = "macos") {
        let home = env
            .get("HOME")
            .ok_or_else(|| Error::Usage("HOME is not set".into()))?;
        return Ok(Path::new(home)
            .join("Library/LaunchAgents")
            .join(format!("{}.plist", unit::launchd_label(name))));
    }
    Ok(config_home(env)?
        .join("systemd/user")
        .join(unit::unit_name(name)))
}

/// The run arguments as `looper run` reads them, checked as `config check` would, in the
/// service's directory: a mistake fails now, not in a restart loop.
fn check_run_args(args: &[String], dir: &Path, wrapper: Option<&str>) -> Result<()> {
    let mut argv = vec!["run".to_string()];
    argv.extend(args.iter().cloned());
    // As `looper run` parses them: the last of a repeated flag wins (app.rs).
    let cmd = <crate::cli::RunArgs as clap::Args>::augment_args(clap::Command::new("run"))
        .args_override_self(true);
    let matches = cmd
        .try_get_matches_from(&argv)
        .map_err(|e| Error::Usage(format!("the run arguments: {}", e.render())))?;
    let run = crate::cli::RunArgs::from_arg_matches(&matches)
        .map_err(|e| Error::Usage(format!("the run arguments: {e}")))?;
    let mut inv = Invocation::from_process(wrapper)?;
    inv.base_dir = dir.to_path_buf();
    // As under the service manager: not inside tmux.
    inv.env.remove("TMUX");
    inv.env.remove("TMUX_PANE");
    let settings = config::resolve(&run, &inv)?;
    config::run::prepare(
        config::Settings {
            dry_run: true,
            ..settings
        },
        &inv,
    )?;
    Ok(())
}

/// The looper's whole command line in the service.
fn service_argv(args: &[String], wrapper: Option<&str>) -> Result<Vec<String>> {
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map_err(|e| Error::io("cannot locate this binary", "current_exe", e))?;
    let mut argv = vec![exe.display().to_string(), "run".into(), "--local".into()];
    // A wrapper's agent (codex-looper, ...) is passed explicitly, as the farm does (D1, D24).
    let names_agent = args
        .iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "--agent" || a == "-a" || a.starts_with("--agent="));
    if let Some(agent) = wrapper
        && !names_agent
    {
        argv.extend(["--agent".to_string(), agent.to_string()]);
    }
    argv.extend(args.iter().cloned());
    Ok(argv)
}

fn systemctl(args: &[&str]) -> std::result::Result<String, String> {
    let out = Command::new("systemctl")
        .arg("--user")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run systemctl: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(crate::text::sanitize_line(String::from_utf8_lossy(&out.stderr).trim()).into_owned())
    }
}

/// Whether the user's services outlive their logins (`loginctl enable-linger`).
fn lingering() -> Option<bool> {
    let user = nix::unistd::User::from_uid(nix::unistd::getuid()).ok()??;
    let out = Command::new("loginctl")
        .args(["show-user", &user.name, "--property=Linger", "--value"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

fn install(a: &ServiceInstallArgs, wrapper: Option<&str>) -> Result<i32> {
    let (name, dir) = name_and_dir(&a.service)?;
    check_run_args(&a.run_args, &dir, wrapper)?;
    let env = crate::records::discovery::process_env();
    let path = service_file(&env, &name)?;
    let env_file = config_home(&env)?
        .join("agent-looper/services")
        .join(format!("{name}.env"));
    let spec = ServiceSpec {
        name: name.clone(),
        dir: dir.clone(),
        argv: service_argv(&a.run_args, wrapper)?,
        // The agents are found on the PATH of the shell that installed the service; the
        // service manager's own PATH is minimal.
        env: env
            .get("PATH")
            .map(|p| vec![("PATH".to_string(), p.clone())])
            .unwrap_or_default(),
        env_file,
    };
    let text = if cfg!(target_os = "macos") {
        let log = path.with_extension("log");
        unit::launchd_plist(&spec, &log)
    } else {
        unit::systemd_unit(&spec).map_err(Error::Usage)?
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("cannot create", parent, e))?;
    }
    crate::records::fsio::write_atomic(&path, text.as_bytes(), true)?;
    crate::say!("wrote {}", path.display());
    crate::say!(
        "secrets (API keys) go in {} (KEY=value lines, mode 0600); looper never writes it",
        spec.env_file.display()
    );
    if cfg!(target_os = "macos") {
        crate::say!(
            "start it: launchctl bootstrap gui/$(id -u) {}",
            path.display()
        );
        return Ok(exit_code::OK);
    }
    match lingering() {
        Some(false) => crate::say_err!(
            "warning: lingering is off for this user: the service stops when you log out and starts only at your next login; `loginctl enable-linger $USER` keeps it running and starts it at boot"
        ),
        None => crate::say_err!(
            "note: could not check lingering (loginctl); without it the service runs only while you are logged in"
        ),
        Some(true) => {}
    }
    let unit_name = unit::unit_name(&name);
    if a.no_start {
        crate::say!(
            "start it: systemctl --user daemon-reload && systemctl --user enable --now {unit_name}"
        );
        return Ok(exit_code::OK);
    }
    let started =
        systemctl(&["daemon-reload"]).and_then(|_| systemctl(&["enable", "--now", &unit_name]));
    match started {
        Ok(_) => {
            crate::say!("started {unit_name}; `looper service status --name {name}` shows it");
            Ok(exit_code::OK)
        }
        Err(e) => Err(Error::WithCode {
            message: format!(
                "the unit is written but systemd did not start it: {e}\n(no user service manager here? start it later with `systemctl --user daemon-reload && systemctl --user enable --now {unit_name}`)"
            ),
            code: exit_code::AGENT_FAILED,
        }),
    }
}

fn uninstall(a: &ServiceNameArgs) -> Result<i32> {
    let (name, _) = name_and_dir(a)?;
    let env = crate::records::discovery::process_env();
    let path = service_file(&env, &name)?;
    if !path.exists() {
        return Err(Error::Usage(format!(
            "no service {name}: {} does not exist",
            path.display()
        )));
    }
    if cfg!(target_os = "macos") {
        crate::say!(
            "stop it first: launchctl bootout gui/$(id -u)/{}",
            unit::launchd_label(&name)
        );
    } else if let Err(e) = systemctl(&["disable", "--now", &unit::unit_name(&name)]) {
        crate::say_err!("note: systemctl could not stop it: {e}");
    }
    std::fs::remove_file(&path).map_err(|e| Error::io("cannot remove", &path, e))?;
    if !cfg!(target_os = "macos") {
        let _ = systemctl(&["daemon-reload"]);
    }
    crate::say!("removed {}", path.display());
    Ok(exit_code::OK)
}

/// `WorkingDirectory=` of a unit we wrote.
fn unit_dir(text: &str) -> Option<PathBuf> {
    text.lines()
        .find_map(|l| l.strip_prefix("WorkingDirectory="))
        .map(|d| PathBuf::from(d.replace("%%", "%")))
}

fn status(a: &ServiceNameArgs) -> Result<i32> {
    let (name, dir) = name_and_dir(a)?;
    let env = crate::records::discovery::process_env();
    let path = service_file(&env, &name)?;
    let Ok(text) = std::fs::read_to_string(&path) else {
        crate::say!(
            "service {name}: not installed ({} does not exist)",
            path.display()
        );
        return Ok(exit_code::AGENT_FAILED);
    };
    crate::say!("service {name}: {}", path.display());
    let dir = unit_dir(&text).unwrap_or(dir);
    if !cfg!(target_os = "macos") {
        match systemctl(&[
            "show",
            &unit::unit_name(&name),
            "--property=ActiveState,SubState,NRestarts,ExecMainStatus,MainPID",
        ]) {
            Ok(props) => {
                let flat: Vec<&str> = props.lines().filter(|l| !l.is_empty()).collect();
                crate::say!("systemd: {}", flat.join(" "));
            }
            Err(e) => crate::say!("systemd: unknown ({e})"),
        }
    }
    let root = dir.join(".agent-looper/runs");
    let rows = crate::records::fleet::load_rows(crate::records::discovery::discover(
        std::slice::from_ref(&root),
        None,
    ));
    let newest = rows.iter().max_by_key(|r| r.updated);
    match newest {
        Some(r) => crate::say!(
            "newest run: {} {} ({})",
            r.label(),
            r.shown_status(),
            r.note()
        ),
        None => crate::say!("no runs yet under {}", root.display()),
    }
    Ok(exit_code::OK)
}

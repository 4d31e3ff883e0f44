//! The farm launch (D24): without `--local`, a run opens a window of a tmux "farm" session
//! that runs this same binary with `--local`, then returns once that looper has said whether
//! its run started (issue 14.5: with its error and exit code when it did not). `--farm-add-bin`
//! delegates the same launch to an external codex-add compatible launcher instead.
//!
//! The inner argv fixes the reference's three farm bugs (reference 13.1 items 1-3): the
//! added flags go BEFORE any `--`, so agent arguments stay agent arguments and the inner
//! run never relaunches itself; the agent choice is passed explicitly (`--agent`), so the
//! window's looper never depends on how it was started (the reference lost a wrapper's
//! identity there); and `--cwd` is resolved once
//! here, becomes the window's start directory, and is removed from the inner argv so a
//! relative path is not applied twice. In the farm, as in the reference, the project
//! directory is that start directory: relative `--config` and `--prompt-file` paths and the
//! default config are looked up there. A window of an already running tmux server does not
//! inherit this process's environment: it is handed over in a private file instead
//! ([`handoff`], issue 14.4). Without `--label` the window's run names itself as a local
//! run does (`<dir>-<agent>`, issue 14.17) and reports the name back.
//!
//! When tmux is not installed, the run happens in this terminal instead, after one line
//! saying so: a missing multiplexer should not stop an unattended loop from starting.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args as _;

use crate::cli::RunArgs;
use crate::config::run::find_program;
use crate::config::{self, Invocation};
use crate::effects::tmux;
use crate::error::{Error, Result};

mod handoff;
mod windows;

pub use handoff::{in_window, report_started};
pub use windows::close_finished;

/// The farm session used when `--farm-session` is absent or empty (D24).
pub const DEFAULT_SESSION: &str = "looper";

/// Everything a farm launch needs, decided without I/O.
#[derive(Clone, Debug, PartialEq)]
pub struct FarmPlan {
    pub session: String,
    pub window: String,
    /// The project directory's name when it named the window (not `LOOPER_NAME`/`CODEX_NAME`,
    /// which are kept as given): a second window of that name gets the label added.
    pub dir_name: Option<String>,
    /// The resolved `--cwd` (else the current directory): the window's start directory.
    pub cwd: PathBuf,
    /// `--label`, when given; otherwise the run names itself as a local run does
    /// (`config::run::default_label`) and reports the name back.
    pub label: Option<String>,
    /// Arguments after the program name for the inner looper.
    pub inner: Vec<String>,
    /// `--tmux-layout` the inner run gets.
    pub layout: String,
    pub remain_on_exit: bool,
    pub attach: bool,
    /// How long the launch waits for the window's looper to say whether its run started.
    pub start_timeout: Duration,
}

/// `0/false/off/no` in any casing turn a default-on switch off.
pub fn false_word(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "0" | "false" | "off" | "no"
    )
}

/// `LOOPER_<name>` wins over `CODEX_<name>`; empty values do not count.
fn env_pair<'a>(env: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    [format!("LOOPER_{name}"), format!("CODEX_{name}")]
        .iter()
        .find_map(|k| {
            env.get(k)
                .map(String::as_str)
                .filter(|v| !v.trim().is_empty())
        })
}

/// tmux silently rewrites `.` and `:` in session names, and targets cannot express them:
/// refuse such names rather than launch into a session we cannot find again.
fn check_session(name: &str) -> Result<()> {
    if name.chars().any(|c| c == ':' || c == '.' || c.is_control()) {
        return Err(Error::Usage(format!(
            "invalid farm session name {name:?}: it must not contain `:`, `.` or control characters"
        )));
    }
    Ok(())
}

/// How each long and short run option takes its value, from the clap definition itself, so
/// the argv filter below cannot drift from the CLI.
struct OptionShapes {
    long_takes_value: HashMap<String, bool>,
    short_takes_value: HashMap<char, bool>,
}

impl OptionShapes {
    fn new() -> Self {
        let cmd = RunArgs::augment_args(clap::Command::new("run"));
        let mut long_takes_value = HashMap::new();
        let mut short_takes_value = HashMap::new();
        for a in cmd.get_arguments() {
            let takes = a.get_action().takes_values();
            if let Some(l) = a.get_long() {
                long_takes_value.insert(l.to_string(), takes);
            }
            if let Some(s) = a.get_short() {
                short_takes_value.insert(s, takes);
            }
        }
        Self {
            long_takes_value,
            short_takes_value,
        }
    }
}

/// What the inner argv must contain beyond the user's own arguments.
struct InnerExtras<'a> {
    agent: Option<&'a str>,
    layout: &'a str,
}

/// The user's arguments (argv without the program name) minus the farm flags, `--cwd` and
/// the internal hand-over flags, plus `--local`, `--tmux-layout` and `--agent` where missing,
/// all inserted BEFORE any `--` (reference 13.1 item 1: after it they would be agent
/// arguments). No `--label` is added: without one the run names itself as a local run does.
fn inner_argv(raw: &[String], extras: &InnerExtras<'_>) -> Vec<String> {
    let shapes = OptionShapes::new();
    let split = raw.iter().position(|a| a == "--").unwrap_or(raw.len());
    let (own, agent_args) = raw.split_at(split);
    let mut out = Vec::with_capacity(raw.len() + 8);
    let (mut has_local, mut has_layout, mut has_agent) = (false, false, false);
    let mut i = 0;
    while i < own.len() {
        let tok = &own[i];
        i += 1;
        if let Some(long) = tok.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, _)) => (n, true),
                None => (long, false),
            };
            match name {
                "local" => has_local = true,
                "tmux-layout" => has_layout = true,
                "agent" => has_agent = true,
                _ => {}
            }
            let takes = shapes.long_takes_value.get(name).copied().unwrap_or(false);
            let drop = matches!(
                name,
                "farm-session"
                    | "farm-attach"
                    | "farm-add-bin"
                    | "cwd"
                    | "env-file"
                    | "farm-status"
            );
            // `--farm-session` takes an optional value: the next token when it is not a flag.
            let value_follows = !inline
                && takes
                && (name != "farm-session" || own.get(i).is_some_and(|n| !n.starts_with('-')));
            if !drop {
                out.push(tok.clone());
            }
            if value_follows && i < own.len() {
                if !drop {
                    out.push(own[i].clone());
                }
                i += 1;
            }
        } else if let Some(short) = tok.strip_prefix('-').filter(|s| !s.is_empty()) {
            let mut chars = short.chars();
            let c = chars.next().unwrap_or('-');
            if c == 'a' {
                has_agent = true;
            }
            out.push(tok.clone());
            let takes = shapes.short_takes_value.get(&c).copied().unwrap_or(false);
            if takes && chars.as_str().is_empty() && i < own.len() {
                out.push(own[i].clone());
                i += 1;
            }
        } else {
            out.push(tok.clone());
        }
    }
    if !has_local {
        out.push("--local".into());
    }
    if !has_layout {
        out.extend(["--tmux-layout".to_string(), extras.layout.to_string()]);
    }
    if !has_agent && let Some(a) = extras.agent {
        out.extend(["--agent".to_string(), a.to_string()]);
    }
    out.extend(agent_args.iter().cloned());
    out
}

/// `extra` inserted before the first `--` of `inner` (after it, it would be agent arguments).
fn before_agent_args(inner: &[String], extra: &[String]) -> Vec<String> {
    let split = inner.iter().position(|a| a == "--").unwrap_or(inner.len());
    let mut out = inner[..split].to_vec();
    out.extend(extra.iter().cloned());
    out.extend(inner[split..].iter().cloned());
    out
}

/// Decide the launch: session, window name, start directory, inner argv.
pub fn plan(raw: &[String], args: &RunArgs, inv: &Invocation) -> Result<FarmPlan> {
    let session = match args.farm_session.as_deref().map(str::trim) {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => DEFAULT_SESSION.to_string(),
    };
    check_session(&session)?;
    let cwd = match &args.cwd {
        Some(c) => config::absolutize(&inv.base_dir, c),
        None => inv.base_dir.clone(),
    };
    if !cwd.is_dir() {
        return Err(Error::Usage(format!(
            "--cwd is not a directory: {}",
            cwd.display()
        )));
    }
    let dir_name = cwd
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "looper".into());
    let (window, dir_name) = match env_pair(&inv.env, "NAME") {
        Some(n) => (windows::clean_name(n), None),
        None => (windows::clean_name(&dir_name), Some(dir_name)),
    };
    let start_timeout = handoff::start_timeout(inv.env_var("FARM_START_TIMEOUT"))?;
    // The farm defaults to split (manual); a non-auto LOOPER_LAYOUT still wins over that.
    let layout = match inv
        .env_var("LAYOUT")
        .map(|(_, v)| v.trim().to_ascii_lowercase())
    {
        Some(v) if v == "single" || v == "split" => v,
        _ => "split".to_string(),
    };
    let inner = inner_argv(
        raw,
        &InnerExtras {
            agent: inv.wrapper_agent.as_deref(),
            layout: &layout,
        },
    );
    let remain_on_exit = !env_pair(&inv.env, "REMAIN_ON_EXIT").is_some_and(false_word);
    Ok(FarmPlan {
        session,
        window,
        dir_name,
        cwd,
        label: args.label.clone(),
        inner,
        layout,
        remain_on_exit,
        attach: args.farm_attach,
        start_timeout,
    })
}

/// The user's arguments as UTF-8 strings (tmux and the launcher take strings).
pub(crate) fn raw_args() -> Result<Vec<String>> {
    std::env::args_os()
        .skip(1)
        .map(|a| {
            a.into_string().map_err(|a| {
                Error::Usage(format!(
                    "argument is not valid UTF-8: {}",
                    a.to_string_lossy()
                ))
            })
        })
        .collect()
}

pub(crate) fn self_exe() -> Result<PathBuf> {
    std::env::current_exe().map_err(|e| Error::io("cannot locate this binary", "current_exe", e))
}

/// `Some(exit code)` when the run was handed to the farm; `None` to run here instead
/// (tmux is not installed).
pub fn launch(args: &RunArgs, inv: &Invocation) -> Result<Option<i32>> {
    let raw = raw_args()?;
    let plan = plan(&raw, args, inv)?;
    let path = inv.env.get("PATH").map(String::as_str);
    if let Some(bin) = &args.farm_add_bin {
        return launch_external(bin, &plan, args, inv).map(Some);
    }
    if find_program("tmux", &inv.base_dir, path).is_none() {
        eprintln!(
            "looper: tmux is not installed, so this run stays in this terminal (pass --local to skip the farm)"
        );
        return Ok(None);
    }
    let exe = self_exe()?;
    launch_tmux(&plan, &exe, &inv.env).map(Some)
}

/// Open the window: create or reuse the session (sized like the client the launch is typed
/// in, when there is one), a placeholder pane, then `remain-on-exit` and the farm's mark on
/// the window. Returns the new pane's id.
fn open_window(plan: &FarmPlan, name: &str, client: Option<windows::ClientSize>) -> Result<String> {
    let cwd = plan.cwd.display().to_string();
    let new_window = || tmux::output(tmux::new_window(&plan.session, name, &cwd, !plan.attach));
    let created = if tmux::succeeds(tmux::has_session(&plan.session)) {
        new_window()
    } else {
        let size = client.map(|c| c.client);
        // Another launch may create the session between the check and here: then add a window.
        tmux::output(tmux::new_session(&plan.session, name, &cwd, size)).or_else(|e| {
            if tmux::succeeds(tmux::has_session(&plan.session)) {
                new_window()
            } else {
                Err(e)
            }
        })
    };
    let pane = created.map_err(|e| {
        Error::Tmux(format!(
            "cannot open a window in tmux session {}: {e} (pass --local to run in this terminal)",
            plan.session
        ))
    })?;
    let pane = pane.lines().last().unwrap_or_default().to_string();
    if !pane.starts_with('%') {
        return Err(Error::Tmux(format!(
            "tmux printed no pane id for the new window: {pane:?}"
        )));
    }
    if let Some(c) = client {
        windows::fit(&pane, c.window);
    }
    if plan.remain_on_exit {
        let _ = tmux::output(tmux::set_window_option(&pane, "remain-on-exit", "on"));
    }
    let _ = tmux::output(tmux::set_window_option(&pane, windows::FARM_MARK, "1"));
    Ok(pane)
}

/// Create or reuse the session, open the window, start the inner looper in it with the
/// launching shell's environment (through a private file, not argv: issue 14.4), and wait
/// until it says whether its run started (14.5). Returns the exit code for this launch: 0
/// once the run is under way, else the window looper's own (its error is printed here).
pub(crate) fn launch_tmux(
    plan: &FarmPlan,
    exe: &Path,
    env: &BTreeMap<String, String>,
) -> Result<i32> {
    let handoff = handoff::Handoff::create(env)?;
    let client = windows::current_client(env);
    // A second window of the same directory gets the label added (14.6); it is known now
    // when it was given, else once the run has named itself.
    let taken = plan.dir_name.is_some() && windows::names_in(&plan.session).contains(&plan.window);
    let named = |label: &str| match (&plan.dir_name, taken) {
        (Some(dir), true) => windows::labelled(dir, label),
        _ => plan.window.clone(),
    };
    let first = plan
        .label
        .as_deref()
        .map_or_else(|| plan.window.clone(), named);
    let pane = open_window(plan, &first, client)?;
    let mut argv = vec![exe.display().to_string()];
    argv.extend(before_agent_args(&plan.inner, &handoff.args()));
    let cwd = plan.cwd.display().to_string();
    if let Err(e) = tmux::output(tmux::respawn_pane(&pane, &cwd, &[], &argv)) {
        let _ = tmux::output(tmux::kill_window(&pane));
        return Err(Error::Tmux(format!(
            "cannot start the looper in the farm window: {e} (pass --local to run in this terminal)"
        )));
    }
    let outcome =
        handoff::wait_for_start(&handoff, plan.start_timeout, || windows::pane_state(&pane));
    drop(handoff);
    let window = match &outcome {
        handoff::Outcome::Started { label, .. } => named(label),
        _ => first.clone(),
    };
    if window != first {
        let _ = tmux::output(windows::rename_command(&pane, &window));
    }
    let place = format!("tmux session {}, window {window}", plan.session);
    let session =
        shlex::try_quote(&plan.session).map_or_else(|_| plan.session.clone(), |q| q.into_owned());
    let code = |c: i32| if c == 0 { 1 } else { c };
    use handoff::Outcome;
    match outcome {
        Outcome::Started { label, .. } => {
            let hint = match client {
                Some(_) => format!("switch: tmux switch-client -t {session}"),
                None => format!("attach: tmux attach -t {session}"),
            };
            crate::console::out(&format!("started {label} in {place} ({hint})"));
        }
        Outcome::Failed { code: c, error } => {
            // Its error is shown here: the window has nothing more to show.
            let _ = tmux::output(tmux::kill_window(&pane));
            crate::console::err(&format!("looper: error: {error}"));
            return Ok(code(c));
        }
        Outcome::Exited { code: c } => {
            crate::console::err(&format!(
                "looper: the looper in {place} ended (exit {c}) without starting a run"
            ));
            return Ok(c);
        }
        Outcome::Died { code: c } => {
            let how = c.map(|c| format!(" with code {c}")).unwrap_or_default();
            let mut text = format!(
                "looper: error: the looper in {place} exited{how} before its run started; the window is kept; its last lines:"
            );
            for l in windows::last_lines(&pane, 10) {
                text.push_str(&format!("\n  {l}"));
            }
            crate::console::err(&text);
            return Ok(code(c.unwrap_or(1)));
        }
        Outcome::Closed => {
            crate::console::err(&format!(
                "looper: error: the farm window ({place}) closed before its run started (leave LOOPER_REMAIN_ON_EXIT unset to keep the window and see why)"
            ));
            return Ok(1);
        }
        Outcome::TimedOut { began } => {
            let secs = crate::text::format_num(plan.start_timeout.as_secs_f64());
            if !began {
                let _ = tmux::output(tmux::kill_window(&pane));
                crate::console::err(&format!(
                    "looper: error: the looper in {place} did not start within {secs} s; the window was closed"
                ));
            } else {
                crate::console::err(&format!(
                    "looper: the run in {place} has not confirmed its start within {secs} s (LOOPER_FARM_START_TIMEOUT); it may still be starting: tmux attach -t {session}"
                ));
            }
            return Ok(1);
        }
    }
    if !plan.attach {
        return Ok(0);
    }
    let inside = env.get("TMUX").is_some_and(|t| !t.is_empty());
    let cmd = if inside {
        tmux::switch_client(&plan.session)
    } else {
        tmux::attach_session(&plan.session)
    };
    tmux::interactive(cmd).map_err(Error::Tmux)
}

/// The external launcher's argv after its own name: `[-d] [NAME] <cwd>` (reference 1.3).
pub fn launcher_args(plan: &FarmPlan, args: &RunArgs) -> Vec<String> {
    let mut v = Vec::new();
    if !plan.attach {
        v.push("-d".to_string());
    }
    if let Some(name) = args
        .farm_session
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        v.push(name.to_string());
    }
    v.push(plan.cwd.display().to_string());
    v
}

/// The launcher's environment: window name, command, shell-joined arguments, layout.
pub fn launcher_env(plan: &FarmPlan, exe: &Path) -> Result<Vec<(String, String)>> {
    let joined = shlex::try_join(plan.inner.iter().map(String::as_str)).map_err(|e| {
        Error::Usage(format!(
            "cannot quote the looper arguments for the launcher: {e}"
        ))
    })?;
    Ok(vec![
        ("CODEX_NAME".into(), plan.window.clone()),
        ("CODEX_CMD".into(), exe.display().to_string()),
        ("CODEX_ARGS".into(), joined),
        ("CODEX_LOOPER_LAYOUT".into(), plan.layout.clone()),
    ])
}

/// `--farm-add-bin`: hand the launch to a codex-add compatible launcher; its exit status
/// is ours.
fn launch_external(bin: &str, plan: &FarmPlan, args: &RunArgs, inv: &Invocation) -> Result<i32> {
    let path = inv.env.get("PATH").map(String::as_str);
    let launcher = find_program(bin, &inv.base_dir, path)
        .ok_or_else(|| Error::Usage(format!("farm launcher not found: {bin}")))?;
    let exe = self_exe()?;
    let status = std::process::Command::new(&launcher)
        .args(launcher_args(plan, args))
        .envs(launcher_env(plan, &exe)?)
        .status()
        .map_err(|e| Error::io("cannot run the farm launcher", &launcher, e))?;
    Ok(status.code().unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn inv(dir: &Path, wrapper: Option<&str>, env: &[(&str, &str)]) -> Invocation {
        Invocation {
            wrapper_agent: wrapper.map(str::to_string),
            base_dir: dir.to_path_buf(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn parse(raw: &[&str]) -> RunArgs {
        use clap::Parser;
        let cli =
            crate::cli::Cli::try_parse_from(std::iter::once("looper").chain(raw.iter().copied()))
                .expect("valid args");
        match cli.command {
            Some(crate::cli::Command::Run(a)) => a,
            _ => cli.run,
        }
    }

    fn plan_for(raw: &[&str], wrapper: Option<&str>, env: &[(&str, &str)]) -> FarmPlan {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("proj")).expect("mkdir");
        let base = dir.path().join("proj");
        let mut p = plan(&s(raw), &parse(raw), &inv(&base, wrapper, env)).expect("plan");
        p.cwd = p
            .cwd
            .strip_prefix(dir.path())
            .map(Path::to_path_buf)
            .unwrap_or(p.cwd);
        p
    }

    #[test]
    fn flags_go_before_the_agent_arguments() {
        let p = plan_for(
            &[
                "--once",
                "--farm-session",
                "t1",
                "--",
                "--model",
                "x",
                "--local",
            ],
            None,
            &[],
        );
        assert_eq!(p.session, "t1");
        assert_eq!(
            p.inner,
            s(&[
                "--once",
                "--local",
                "--tmux-layout",
                "split",
                "--",
                "--model",
                "x",
                "--local"
            ])
        );
        // No label given: the run names itself (`<dir>-<agent>`, issue 14.17).
        assert_eq!(p.label, None);
        assert_eq!(p.window, "proj");
        assert_eq!(p.dir_name.as_deref(), Some("proj"));
        assert!(p.remain_on_exit);
        assert_eq!(p.start_timeout, handoff::DEFAULT_START_TIMEOUT);
    }

    #[test]
    fn farm_flags_and_cwd_are_removed_and_cwd_becomes_the_start_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("a/sub")).expect("mkdir");
        let raw = [
            "--cwd",
            "sub",
            "--farm-session=",
            "--farm-attach",
            "--farm-add-bin",
            "x",
            "-l",
            "me",
            "--max-loops",
            "2",
        ];
        let p = plan(
            &s(&raw),
            &parse(&raw),
            &inv(&dir.path().join("a"), None, &[]),
        )
        .expect("plan");
        assert_eq!(p.cwd, dir.path().join("a/sub"));
        assert_eq!(p.session, DEFAULT_SESSION);
        assert_eq!(p.window, "sub");
        assert_eq!(p.label.as_deref(), Some("me"));
        assert!(p.attach);
        assert_eq!(
            p.inner,
            s(&[
                "-l",
                "me",
                "--max-loops",
                "2",
                "--local",
                "--tmux-layout",
                "split"
            ])
        );
        let raw = ["--cwd=sub", "--farm-session", "--once"];
        let p = plan(
            &s(&raw),
            &parse(&raw),
            &inv(&dir.path().join("a"), None, &[]),
        )
        .expect("plan");
        assert_eq!(p.session, DEFAULT_SESSION);
        assert_eq!(&p.inner[..2], s(&["--once", "--local"]).as_slice());
    }

    #[test]
    fn wrapper_agent_is_explicit_unless_given() {
        let p = plan_for(&["run", "--once"], Some("claude"), &[]);
        assert_eq!(
            p.inner,
            s(&[
                "run",
                "--once",
                "--local",
                "--tmux-layout",
                "split",
                "--agent",
                "claude"
            ])
        );
        let p = plan_for(
            &["-a", "codex", "--tmux-layout", "single", "--local"],
            Some("claude"),
            &[],
        );
        assert_eq!(
            p.inner,
            s(&["-a", "codex", "--tmux-layout", "single", "--local"])
        );
        let p = plan_for(&["--agent=gemini"], Some("claude"), &[]);
        assert!(!p.inner.contains(&"claude".to_string()));
    }

    #[test]
    fn environment_overrides() {
        let p = plan_for(
            &["--once"],
            None,
            &[
                ("CODEX_NAME", "codex-name"),
                ("LOOPER_NAME", "looper-name"),
                ("CODEX_REMAIN_ON_EXIT", "Off"),
                ("LOOPER_LAYOUT", "single"),
            ],
        );
        assert_eq!(p.window, "looper-name");
        assert!(!p.remain_on_exit);
        assert_eq!(p.layout, "single");
        assert!(p.inner.windows(2).any(|w| w == ["--tmux-layout", "single"]));
        let p = plan_for(
            &["--once"],
            None,
            &[
                ("CODEX_NAME", "codex-name"),
                ("LOOPER_REMAIN_ON_EXIT", "yes"),
                ("CODEX_REMAIN_ON_EXIT", "0"),
            ],
        );
        assert_eq!(p.window, "codex-name");
        assert!(p.remain_on_exit);
        for w in ["0", "false", "OFF", "No"] {
            assert!(false_word(w));
        }
        assert!(!false_word("1"));
    }

    #[test]
    fn bad_session_names_and_missing_cwd_are_usage_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        for raw in [
            &["--farm-session", "a:b"][..],
            &["--farm-session", "a.b"][..],
            &["--cwd", "nope"][..],
        ] {
            let e = plan(&s(raw), &parse(raw), &inv(dir.path(), None, &[])).expect_err("refused");
            assert_eq!(e.exit_code(), 2, "{e}");
        }
    }

    #[test]
    fn external_launcher_argv_and_env() {
        let raw = ["--farm-session", "work", "--label", "sweep", "--", "a b"];
        let dir = tempfile::tempdir().expect("tempdir");
        let args = parse(&raw);
        let p = plan(&s(&raw), &args, &inv(dir.path(), Some("codex"), &[])).expect("plan");
        assert_eq!(
            launcher_args(&p, &args),
            s(&["-d", "work", &dir.path().display().to_string()])
        );
        let env = launcher_env(&p, Path::new("/bin/codex-looper")).expect("env");
        let get = |k: &str| {
            env.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        assert_eq!(get("CODEX_CMD"), "/bin/codex-looper");
        assert_eq!(get("CODEX_LOOPER_LAYOUT"), "split");
        assert_eq!(
            get("CODEX_ARGS"),
            "--label sweep --local --tmux-layout split --agent codex -- 'a b'"
        );
        let args = parse(&["--farm-attach"]);
        let p = plan(&s(&["--farm-attach"]), &args, &inv(dir.path(), None, &[])).expect("plan");
        assert_eq!(
            launcher_args(&p, &args),
            s(&[&dir.path().display().to_string()])
        );
    }

    #[test]
    fn hand_over_flags_go_before_the_agent_arguments_and_are_never_passed_on() {
        let extra = s(&["--env-file", "/e", "--farm-status", "/s"]);
        assert_eq!(
            before_agent_args(&s(&["--once", "--", "--model", "x"]), &extra),
            s(&[
                "--once",
                "--env-file",
                "/e",
                "--farm-status",
                "/s",
                "--",
                "--model",
                "x"
            ])
        );
        assert_eq!(
            before_agent_args(&s(&["--once"]), &extra)[1..3],
            s(&["--env-file", "/e"])
        );
        let p = plan_for(
            &["--env-file", "/x", "--farm-status=/y", "--once"],
            None,
            &[],
        );
        assert_eq!(p.inner, s(&["--once", "--local", "--tmux-layout", "split"]));
    }

    #[test]
    fn an_explicit_window_name_is_kept_and_a_bad_start_timeout_is_a_usage_error() {
        let p = plan_for(&["--once"], None, &[("LOOPER_NAME", "mine")]);
        assert_eq!((p.window.as_str(), p.dir_name), ("mine", None));
        let p = plan_for(
            &["--once"],
            None,
            &[("CODEX_LOOPER_FARM_START_TIMEOUT", "2")],
        );
        assert_eq!(p.start_timeout, Duration::from_secs(2));
        let dir = tempfile::tempdir().expect("tempdir");
        let e = plan(
            &s(&["--once"]),
            &parse(&["--once"]),
            &inv(dir.path(), None, &[("LOOPER_FARM_START_TIMEOUT", "never")]),
        )
        .expect_err("refused");
        assert_eq!(e.exit_code(), 2, "{e}");
    }
}

//! The farm launch (D24): without `--local`, a run opens a window of a tmux "farm" session
//! that runs this same binary with `--local`, then returns at once. `--farm-add-bin`
//! delegates the same launch to an external codex-add compatible launcher instead.
//!
//! The inner argv fixes the reference's three farm bugs (reference 13.1 items 1-3): the
//! added flags go BEFORE any `--`, so agent arguments stay agent arguments and the inner
//! run never relaunches itself; the agent choice is passed explicitly (`--agent`), because
//! a window of an existing tmux server does not inherit this process's environment; and
//! `--cwd` is resolved once here, becomes the window's start directory, and is removed
//! from the inner argv so a relative path is not applied twice. In the farm, as in the
//! reference, the project directory is that start directory: relative `--config` and
//! `--prompt-file` paths and the default config are looked up there.
//!
//! When tmux is not installed, the run happens in this terminal instead, after one line
//! saying so: a missing multiplexer should not stop an unattended loop from starting.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::Args as _;

use crate::cli::RunArgs;
use crate::config::run::find_program;
use crate::config::{self, Invocation};
use crate::effects::tmux;
use crate::error::{Error, Result};

/// The farm session used when `--farm-session` is absent or empty (D24).
pub const DEFAULT_SESSION: &str = "looper";

/// Everything a farm launch needs, decided without I/O.
#[derive(Clone, Debug, PartialEq)]
pub struct FarmPlan {
    pub session: String,
    pub window: String,
    /// The resolved `--cwd` (else the current directory): the window's start directory.
    pub cwd: PathBuf,
    pub label: String,
    /// Arguments after the program name for the inner looper.
    pub inner: Vec<String>,
    /// `--tmux-layout` the inner run gets.
    pub layout: String,
    pub remain_on_exit: bool,
    pub attach: bool,
}

/// A looper-style label, the same shape `driver` generates.
fn random_label() -> String {
    format!("Looper_{:06x}", rand::random::<u32>() & 0xff_ffff)
}

/// `0/false/off/no` in any casing turn a default-on switch off.
pub fn false_word(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "0" | "false" | "off" | "no"
    )
}

/// `LOOPER_<name>` wins over `CODEX_<name>`; empty values do not count.
fn env_pair<'a>(
    env: &'a std::collections::BTreeMap<String, String>,
    name: &str,
) -> Option<&'a str> {
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

/// Window names are shown in status lines: control characters become `_`.
fn clean_window_name(name: &str) -> String {
    let n: String = name
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect();
    if n.trim().is_empty() {
        "looper".into()
    } else {
        n
    }
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
    label: &'a str,
}

/// The user's arguments (argv without the program name) minus the farm flags and `--cwd`,
/// plus `--local`, `--tmux-layout`, `--agent` and `--label` where missing, all inserted
/// BEFORE any `--` (reference 13.1 item 1: after it they would be agent arguments).
fn inner_argv(raw: &[String], extras: &InnerExtras<'_>) -> Vec<String> {
    let shapes = OptionShapes::new();
    let split = raw.iter().position(|a| a == "--").unwrap_or(raw.len());
    let (own, agent_args) = raw.split_at(split);
    let mut out = Vec::with_capacity(raw.len() + 8);
    let (mut has_local, mut has_layout, mut has_agent, mut has_label) =
        (false, false, false, false);
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
                "label" => has_label = true,
                _ => {}
            }
            let takes = shapes.long_takes_value.get(name).copied().unwrap_or(false);
            let drop = matches!(
                name,
                "farm-session" | "farm-attach" | "farm-add-bin" | "cwd"
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
            match c {
                'a' => has_agent = true,
                'l' => has_label = true,
                _ => {}
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
    if !has_label {
        out.extend(["--label".to_string(), extras.label.to_string()]);
    }
    out.extend(agent_args.iter().cloned());
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
    let window = clean_window_name(&match env_pair(&inv.env, "NAME") {
        Some(n) => n.to_string(),
        None => cwd
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| "looper".into()),
    });
    let label = args.label.clone().unwrap_or_else(random_label);
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
            label: &label,
        },
    );
    let remain_on_exit = !env_pair(&inv.env, "REMAIN_ON_EXIT").is_some_and(false_word);
    Ok(FarmPlan {
        session,
        window,
        cwd,
        label,
        inner,
        layout,
        remain_on_exit,
        attach: args.farm_attach,
    })
}

/// Variables the inner looper and its agent need that a window of an already running tmux
/// server would not inherit from us. Never credentials: only the looper's own settings,
/// the search path, and the agents' config locations.
pub(crate) fn forwarded_env(
    env: &std::collections::BTreeMap<String, String>,
) -> Vec<(String, String)> {
    const NAMED: [&str; 6] = [
        "PATH",
        "XDG_CONFIG_HOME",
        "XDG_STATE_HOME",
        "CODEX_HOME",
        "CLAUDE_CONFIG_DIR",
        "CLAUDE_HOME",
    ];
    env.iter()
        .filter(|(k, _)| {
            NAMED.contains(&k.as_str())
                || k.starts_with("LOOPER_")
                || k.starts_with("CODEX_LOOPER_")
        })
        .filter(|(k, v)| !k.contains('=') && !v.contains('\0'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
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
    launch_tmux(&plan, &exe, &forwarded_env(&inv.env)).map(Some)
}

/// Create or reuse the session, open the window, start the inner looper in it.
pub(crate) fn launch_tmux(plan: &FarmPlan, exe: &Path, env: &[(String, String)]) -> Result<i32> {
    let cwd = plan.cwd.display().to_string();
    let new_window = || {
        tmux::output(tmux::new_window(
            &plan.session,
            &plan.window,
            &cwd,
            !plan.attach,
        ))
    };
    let created = if tmux::succeeds(tmux::has_session(&plan.session)) {
        new_window()
    } else {
        // Another launch may create the session between the check and here: then add a window.
        tmux::output(tmux::new_session(&plan.session, &plan.window, &cwd)).or_else(|e| {
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
    if plan.remain_on_exit {
        let _ = tmux::output(tmux::set_window_option(&pane, "remain-on-exit", "on"));
    }
    let mut argv = vec![exe.display().to_string()];
    argv.extend(plan.inner.iter().cloned());
    if let Err(e) = tmux::output(tmux::respawn_pane(&pane, &cwd, env, &argv)) {
        let _ = tmux::output(tmux::kill_window(&pane));
        return Err(Error::Tmux(format!(
            "cannot start the looper in the farm window: {e} (pass --local to run in this terminal)"
        )));
    }
    println!(
        "started {} in tmux session {}, window {} (attach: tmux attach -t {})",
        plan.label, plan.session, plan.window, plan.session
    );
    if !plan.attach {
        return Ok(0);
    }
    let inside = std::env::var_os("TMUX").is_some_and(|t| !t.is_empty());
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
                "--label",
                &p.label,
                "--",
                "--model",
                "x",
                "--local"
            ])
        );
        assert!(p.label.starts_with("Looper_"));
        assert_eq!(p.window, "proj");
        assert!(p.remain_on_exit);
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
        assert_eq!(p.label, "me");
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
                "claude",
                "--label",
                &p.label
            ])
        );
        let p = plan_for(
            &["-a", "codex", "--tmux-layout", "single", "--local"],
            Some("claude"),
            &[],
        );
        assert_eq!(
            p.inner,
            s(&[
                "-a",
                "codex",
                "--tmux-layout",
                "single",
                "--local",
                "--label",
                &p.label
            ])
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
    fn forwarded_env_has_no_credentials() {
        let env: BTreeMap<String, String> = [
            ("PATH", "/bin"),
            ("OPENAI_API_KEY", "k"),
            ("LOOPER_LAYOUT", "split"),
            ("HOME", "/h"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            forwarded_env(&env),
            vec![
                ("LOOPER_LAYOUT".into(), "split".into()),
                ("PATH".into(), "/bin".into())
            ]
        );
    }
}

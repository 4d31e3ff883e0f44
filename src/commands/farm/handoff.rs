//! The hand-over between a farm launch and the looper in its window: the launching shell's
//! environment travels in a private file, never in argv, tmux options or the records (issue
//! 14.4), and the window's looper reports through a second file whether its run started, so
//! the launcher can say so or pass the child's own error and exit code on (issue 14.5).
//!
//! Both files live in one owner-only directory (`$XDG_RUNTIME_DIR/agent-looper/farm`, a
//! tmpfs that never reaches a disk, else `${XDG_STATE_HOME:-~/.local/state}/agent-looper/farm`),
//! are created 0600 with `O_EXCL` (which never follows a symlink) and carry a random name. The
//! window's looper opens the environment file without following links, checks that it is a
//! regular file of ours with mode 0600, removes it, and re-executes itself with exactly that
//! environment (the window's own tmux and terminal variables kept), before anything else runs.
//! Files nobody picked up are removed by the launcher when it learns the window failed, and any
//! older than [`STALE_AFTER`] by the next launch.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cli::RunArgs;
use crate::effects::envfile::{
    create_private, encode_env, fresh_path, take_env_file, window_environment,
};
use crate::error::{Error, Result};

/// How long a launch waits for its window's looper to report by default.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);
pub use crate::effects::envfile::STALE_AFTER;
/// A report is one short JSON line.
const MAX_REPORT: u64 = 64 << 10;

/// What the window's looper reports, as one JSON line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Report {
    /// The run holds its lock and is opening its run directory (`run_dir`, absolute).
    Started { label: String, run_dir: PathBuf },
    /// It stopped before its run started, with this error and exit code.
    Failed { code: i32, error: String },
    /// It ended without starting a run and without an error.
    Exited { code: i32 },
}

/// The launcher's side of one hand-over; dropping it removes whatever is left of its files.
#[derive(Debug)]
pub struct Handoff {
    pub env_file: PathBuf,
    pub status_file: PathBuf,
}

impl Handoff {
    /// Write this process's environment and an empty status file into the private directory.
    pub fn create(env: &BTreeMap<String, String>) -> Result<Self> {
        let env_file = fresh_path(env, "env")?;
        let me = Handoff {
            status_file: env_file.with_extension("status"),
            env_file,
        };
        create_private(&me.status_file, b"")?;
        create_private(&me.env_file, &encode_env(std::env::vars_os()))?;
        Ok(me)
    }

    /// The flags that point the window's looper at the two files.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--env-file".into(),
            self.env_file.display().to_string(),
            "--farm-status".into(),
            self.status_file.display().to_string(),
        ]
    }

    /// Whether the window's looper has taken the environment file.
    pub fn env_taken(&self) -> bool {
        std::fs::symlink_metadata(&self.env_file).is_err()
    }

    /// The report, once a whole line is there.
    pub fn report(&self) -> Option<Report> {
        let bytes = crate::records::fsio::read_regular(&self.status_file, MAX_REPORT).ok()?;
        let line = bytes.strip_suffix(b"\n")?;
        serde_json::from_slice(line).ok()
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.env_file);
        let _ = std::fs::remove_file(&self.status_file);
    }
}

/// What became of the farm window's pane, as the launcher sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaneState {
    Alive,
    /// Dead, with its exit status when tmux knows it.
    Dead(Option<i32>),
    /// The pane (its window) is gone.
    Gone,
}

/// How the window's start ended, as far as the launcher can tell.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Started {
        label: String,
        run_dir: PathBuf,
    },
    Failed {
        code: i32,
        error: String,
    },
    Exited {
        code: i32,
    },
    /// The pane died without a report (or with its run directory never made).
    Died {
        code: Option<i32>,
    },
    /// The window closed without a report.
    Closed,
    /// No answer in time; `began`: the looper took its environment file, so it is there.
    TimedOut {
        began: bool,
    },
}

/// One look at what the window's looper has done so far; `None`: keep waiting. A report wins
/// over the pane's state (the looper reports, then exits); a started run counts once its run
/// directory exists (a failure in between is reported as such).
pub fn decide(
    report: Option<&Report>,
    run_dir_ready: bool,
    pane: PaneState,
    timed_out: bool,
    env_taken: bool,
) -> Option<Outcome> {
    match report {
        Some(Report::Failed { code, error }) => {
            return Some(Outcome::Failed {
                code: *code,
                error: error.clone(),
            });
        }
        Some(Report::Exited { code }) => return Some(Outcome::Exited { code: *code }),
        Some(Report::Started { label, run_dir }) if run_dir_ready => {
            return Some(Outcome::Started {
                label: label.clone(),
                run_dir: run_dir.clone(),
            });
        }
        _ => {}
    }
    match pane {
        PaneState::Dead(code) => Some(Outcome::Died { code }),
        PaneState::Gone => Some(Outcome::Closed),
        PaneState::Alive if timed_out => Some(Outcome::TimedOut { began: env_taken }),
        PaneState::Alive => None,
    }
}

/// Wait (at most `timeout`) until the window's looper has started its run or failed.
pub fn wait_for_start(
    handoff: &Handoff,
    timeout: Duration,
    mut pane: impl FnMut() -> PaneState,
) -> Outcome {
    let begun = Instant::now();
    let mut tick: u32 = 0;
    loop {
        let timed_out = begun.elapsed() >= timeout;
        // The pane is asked about less often than the file is read: each look is a tmux call.
        let state = if tick.is_multiple_of(4) || timed_out {
            pane()
        } else {
            PaneState::Alive
        };
        // A looper reports before it exits: read the report after learning the pane's state.
        let mut report = handoff.report();
        if state != PaneState::Alive && report.is_none() {
            std::thread::sleep(Duration::from_millis(50));
            report = handoff.report();
        }
        let ready = matches!(&report, Some(Report::Started { run_dir, .. })
            if run_dir.join(crate::records::STATE_FILE).exists());
        if let Some(out) = decide(
            report.as_ref(),
            ready,
            state,
            timed_out,
            handoff.env_taken(),
        ) {
            return out;
        }
        tick = tick.wrapping_add(1);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How long a launch waits for its window's report: `LOOPER_FARM_START_TIMEOUT` (or
/// `CODEX_LOOPER_FARM_START_TIMEOUT`) seconds, given as `(name, value)`, else the default.
pub fn start_timeout(value: Option<(&str, &str)>) -> Result<Duration> {
    let Some((name, v)) = value else {
        return Ok(DEFAULT_START_TIMEOUT);
    };
    match v.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= STALE_AFTER.as_secs_f64() => {
            Ok(Duration::from_secs_f64(s))
        }
        _ => Err(Error::Usage(format!(
            "{name}: expected seconds > 0 (at most {}, when unclaimed hand-over files count as stale), found {v:?}",
            STALE_AFTER.as_secs()
        ))),
    }
}

// ---------------------------------------------------------------------------------------
// The window's side.

/// Where this process reports its start, when it is a farm window's looper. One per process:
/// the start is reported deep in the run path (`commands::run::run_local`), once.
static REPORTER: OnceLock<Reporter> = OnceLock::new();

struct Reporter {
    path: PathBuf,
    started: AtomicBool,
}

impl Reporter {
    /// Replace the report with `report`, best effort: the file must still be a regular file of
    /// ours (a launcher that gave up has removed it, and nobody is listening).
    fn send(&self, report: &Report) {
        let Ok(mut line) = serde_json::to_vec(report) else {
            return;
        };
        line.push(b'\n');
        let Ok(f) = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&self.path)
        else {
            return;
        };
        let ours = f.metadata().is_ok_and(|m| {
            m.is_file() && m.uid() == nix::unistd::geteuid().as_raw() && m.mode() & 0o077 == 0
        });
        if ours && f.set_len(0).is_ok() {
            // One positioned write: a reader sees an empty file or the whole line.
            let _ = f.write_all_at(&line, 0);
        }
    }
}

/// argv without `--env-file FILE` (or `--env-file=FILE`) before any `--`.
fn without_env_file(args: &[OsString]) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            out.push(a.clone());
            out.extend(it.by_ref().cloned());
            break;
        }
        if a == "--env-file" {
            it.next();
            continue;
        }
        if a.as_bytes().starts_with(b"--env-file=") {
            continue;
        }
        out.push(a.clone());
    }
    out
}

/// Become this same looper again with the launching shell's environment: returns only on
/// failure.
fn exec_with(shell: Vec<(OsString, OsString)>) -> Error {
    use std::os::unix::process::CommandExt;
    let exe = match crate::commands::farm::self_exe() {
        Ok(e) => e,
        Err(e) => return e,
    };
    let argv: Vec<OsString> = std::env::args_os().collect();
    let (arg0, rest) = match argv.split_first() {
        Some((first, rest)) => (first.clone(), rest),
        None => (exe.clone().into_os_string(), &argv[..]),
    };
    let env = window_environment(shell, |k| std::env::var_os(k), std::env::current_dir().ok());
    let err = std::process::Command::new(&exe)
        .arg0(arg0)
        .args(without_env_file(rest))
        .env_clear()
        .envs(env)
        .exec();
    Error::io(
        "cannot restart the looper with the farm environment",
        exe,
        err,
    )
}

/// A farm window's looper: take the launching shell's environment (re-executing with it),
/// then run, and report to the launcher whether the run started.
pub fn in_window(args: RunArgs, run: impl FnOnce(RunArgs) -> Result<i32>) -> Result<i32> {
    let reporter = args.farm_status.clone().map(|path| Reporter {
        path,
        started: AtomicBool::new(false),
    });
    if let Some(file) = &args.env_file {
        let e = match take_env_file(file) {
            Ok(shell) => exec_with(shell),
            Err(e) => e,
        };
        if let Some(r) = &reporter {
            r.send(&Report::Failed {
                code: e.exit_code(),
                error: e.to_string(),
            });
        }
        return Err(e);
    }
    if let Some(r) = reporter {
        let _ = REPORTER.set(r);
    }
    let result = run(args);
    if let Some(r) = REPORTER.get() {
        match &result {
            // After a start too: the run may have failed before its directory existed.
            Err(e) => r.send(&Report::Failed {
                code: e.exit_code(),
                error: e.to_string(),
            }),
            Ok(code) if !r.started.load(Ordering::SeqCst) => {
                r.send(&Report::Exited { code: *code });
            }
            Ok(_) => {}
        }
    }
    result
}

/// Tell the launcher (if this is a farm window's looper) that the run holds its lock and is
/// opening `run_dir`.
pub fn report_started(label: &str, run_dir: &Path) {
    let Some(r) = REPORTER.get() else { return };
    let run_dir = std::path::absolute(run_dir).unwrap_or_else(|_| run_dir.to_path_buf());
    r.started.store(true, Ordering::SeqCst);
    r.send(&Report::Started {
        label: label.to_string(),
        run_dir,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStringExt;

    use crate::effects::envfile::{decode_env, private_dir, remove_stale};

    fn os(v: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        v.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    #[test]
    fn environment_round_trips_losslessly_and_skips_what_exec_could_not_carry() {
        let mut vars = os(&[("A", "1"), ("EMPTY", ""), ("EQ", "x=y"), ("=bad", "v")]);
        vars.push((
            OsString::from_vec(b"BYTES".to_vec()),
            OsString::from_vec(b"\xff\xfe".to_vec()),
        ));
        let bytes = encode_env(vars);
        assert_eq!(
            decode_env(&bytes),
            vec![
                ("A".into(), "1".into()),
                ("EMPTY".into(), "".into()),
                ("EQ".into(), "x=y".into()),
                (
                    OsString::from("BYTES"),
                    OsString::from_vec(b"\xff\xfe".to_vec())
                ),
            ]
        );
        assert_eq!(decode_env(b"noeq\0=x\0K=v"), os(&[("K", "v")]));
    }

    #[test]
    fn the_window_keeps_its_own_tmux_and_terminal_variables() {
        let shell = os(&[
            ("OPENAI_API_KEY", "k"),
            ("TMUX", "/other/socket,1,0"),
            ("TERM", "xterm"),
            ("TERM_PROGRAM", "iTerm.app"),
            ("PWD", "/launch/dir"),
        ]);
        let own = |k: &str| match k {
            "TMUX" => Some(OsString::from("/farm,2,3")),
            "TMUX_PANE" => Some(OsString::from("%7")),
            "TERM" => Some(OsString::from("tmux-256color")),
            _ => None,
        };
        let env = window_environment(shell, own, Some(PathBuf::from("/project")));
        let get = |k: &str| {
            env.get(OsStr::new(k))
                .map(|v| v.to_string_lossy().into_owned())
        };
        assert_eq!(get("OPENAI_API_KEY").as_deref(), Some("k"));
        assert_eq!(get("TMUX").as_deref(), Some("/farm,2,3"));
        assert_eq!(get("TMUX_PANE").as_deref(), Some("%7"));
        assert_eq!(get("TERM").as_deref(), Some("tmux-256color"));
        assert_eq!(get("TERM_PROGRAM"), None, "the window has none");
        assert_eq!(get("PWD").as_deref(), Some("/project"));
    }

    #[test]
    fn only_the_env_file_flag_is_dropped_and_only_before_the_agent_arguments() {
        let a = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            without_env_file(&a(&[
                "--once",
                "--env-file",
                "/f",
                "--farm-status",
                "/s",
                "--env-file=/g",
                "--",
                "--env-file",
                "x"
            ])),
            a(&["--once", "--farm-status", "/s", "--", "--env-file", "x"])
        );
    }

    fn private(dir: &Path) -> BTreeMap<String, String> {
        [("XDG_RUNTIME_DIR".to_string(), dir.display().to_string())]
            .into_iter()
            .collect()
    }

    #[test]
    fn the_env_file_is_taken_once_and_refused_when_it_is_not_ours_alone() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let h = Handoff::create(&private(tmp.path())).expect("handoff");
        let dir = h.env_file.parent().expect("dir").to_path_buf();
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&h.env_file), 0o600);
        assert_eq!(mode(&h.status_file), 0o600);
        assert!(!h.env_taken());
        let vars = take_env_file(&h.env_file).expect("taken");
        assert!(vars.iter().any(|(k, _)| k == "PATH"), "{vars:?}");
        assert!(h.env_taken(), "removed once read");
        assert!(take_env_file(&h.env_file).is_err(), "only once");

        // A file others could read, and a link, are refused and left alone.
        let loose = dir.join("loose.env");
        std::fs::write(&loose, "A=1\0").expect("write");
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = take_env_file(&loose).expect_err("refused");
        assert!(e.to_string().contains("does not have mode 0600"), "{e}");
        assert!(loose.exists());
        let link = dir.join("link.env");
        std::os::unix::fs::symlink(&loose, &link).expect("symlink");
        assert!(take_env_file(&link).is_err());

        // Dropping the hand-over removes what is left of it.
        let status = h.status_file.clone();
        drop(h);
        assert!(!status.exists());
    }

    #[test]
    fn a_private_dir_open_to_others_is_refused_and_stale_files_are_removed() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = private_dir(&private(tmp.path())).expect("dir");
        let old = dir.join("0ld.env");
        let new = dir.join("n3w.status");
        let other = dir.join("keep.txt");
        for f in [&old, &new, &other] {
            std::fs::write(f, "").expect("write");
        }
        let past = std::time::SystemTime::now() - Duration::from_secs(600);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .and_then(|f| f.set_modified(past))
            .expect("age");
        remove_stale(&dir, STALE_AFTER);
        assert!(!old.exists() && new.exists() && other.exists());

        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let e = private_dir(&private(tmp.path())).expect_err("refused");
        assert!(e.to_string().contains("must be 0700"), "{e}");
        // The state directory's is used instead when there is one.
        let mut env = private(tmp.path());
        let state = tmp.path().join("state");
        std::fs::create_dir(&state).expect("mkdir");
        env.insert("XDG_STATE_HOME".into(), state.display().to_string());
        assert_eq!(
            private_dir(&env).expect("fallback"),
            state.join("agent-looper/farm")
        );
    }

    #[test]
    fn reports_are_read_whole_and_replace_each_other() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let h = Handoff::create(&private(tmp.path())).expect("handoff");
        assert_eq!(h.report(), None);
        let r = Reporter {
            path: h.status_file.clone(),
            started: AtomicBool::new(false),
        };
        let started = Report::Started {
            label: "proj-codex".into(),
            run_dir: "/r/x".into(),
        };
        r.send(&started);
        assert_eq!(h.report(), Some(started));
        let failed = Report::Failed {
            code: 2,
            error: "another looper is already running".into(),
        };
        r.send(&failed);
        assert_eq!(h.report(), Some(failed));
        std::fs::write(&h.status_file, "{\"state\":\"exi").expect("torn");
        assert_eq!(h.report(), None, "a torn line is not a report");
    }

    #[test]
    fn decisions() {
        let started = Report::Started {
            label: "l".into(),
            run_dir: "/r".into(),
        };
        let failed = Report::Failed {
            code: 2,
            error: "locked".into(),
        };
        use PaneState::*;
        assert_eq!(decide(None, false, Alive, false, false), None);
        assert_eq!(
            decide(Some(&started), false, Alive, false, true),
            None,
            "no run directory yet"
        );
        assert_eq!(
            decide(Some(&started), true, Alive, false, true),
            Some(Outcome::Started {
                label: "l".into(),
                run_dir: "/r".into()
            })
        );
        assert_eq!(
            decide(Some(&failed), false, Dead(Some(2)), false, true),
            Some(Outcome::Failed {
                code: 2,
                error: "locked".into()
            }),
            "the report wins over the dead pane"
        );
        assert_eq!(
            decide(None, false, Dead(Some(101)), false, true),
            Some(Outcome::Died { code: Some(101) })
        );
        assert_eq!(
            decide(Some(&started), false, Dead(None), false, true),
            Some(Outcome::Died { code: None })
        );
        assert_eq!(
            decide(None, false, Gone, false, false),
            Some(Outcome::Closed)
        );
        assert_eq!(
            decide(None, false, Alive, true, false),
            Some(Outcome::TimedOut { began: false })
        );
        assert_eq!(
            decide(Some(&started), false, Alive, true, true),
            Some(Outcome::TimedOut { began: true })
        );
    }

    #[test]
    fn start_timeouts() {
        assert_eq!(start_timeout(None).expect("default"), DEFAULT_START_TIMEOUT);
        assert_eq!(
            start_timeout(Some(("LOOPER_FARM_START_TIMEOUT", "2.5"))).expect("set"),
            Duration::from_millis(2500)
        );
        for bad in ["0", "-1", "soon", "NaN", "301"] {
            let e = start_timeout(Some(("LOOPER_FARM_START_TIMEOUT", bad))).expect_err(bad);
            assert!(
                e.to_string()
                    .starts_with("LOOPER_FARM_START_TIMEOUT: expected"),
                "{e}"
            );
            assert_eq!(e.exit_code(), 2);
        }
    }
}

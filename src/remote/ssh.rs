//! Running one looper subcommand on one host: the ssh argv (the user's client and config,
//! `BatchMode`, a connect timeout, the remote command quoted for a POSIX shell with `shlex`),
//! the process with an optional deadline, and what its exit and stderr mean (an unreachable
//! host, a host without looper, a looper too old), decided without I/O in [`classify`].

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::hosts::{Host, Hosts};

/// The most stdout kept from one host's document (a status of 10,000 runs is about 8 MiB).
const MAX_STDOUT: u64 = 256 << 20;
/// The tail of stderr kept for messages.
const MAX_STDERR: usize = 16 << 10;

/// Why a host gave no usable answer: each is one clear row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// ssh could not connect or log in (its own words).
    Unreachable(String),
    /// The looper program is not there.
    NoLooper(String),
    /// The remote looper does not know this subcommand or one of its flags.
    TooOld(String),
    /// No answer within the deadline.
    Timeout(Duration),
    /// The remote looper answered with an error of its own.
    Failed { code: Option<i32>, message: String },
    /// Something answered, but not with what this looper reads.
    BadAnswer(String),
}

impl Problem {
    /// The word the status column and JSON `kind` use.
    pub fn kind(&self) -> &'static str {
        match self {
            Problem::Unreachable(_) => "unreachable",
            Problem::NoLooper(_) => "no looper",
            Problem::TooOld(_) => "looper too old",
            Problem::Timeout(_) => "no answer",
            Problem::Failed { .. } => "error",
            Problem::BadAnswer(_) => "bad answer",
        }
    }

    pub fn message(&self) -> String {
        let text = match self {
            Problem::Unreachable(m)
            | Problem::NoLooper(m)
            | Problem::TooOld(m)
            | Problem::BadAnswer(m) => m.clone(),
            Problem::Failed { message, .. } => message.clone(),
            Problem::Timeout(d) => format!(
                "no answer within {} s (--host-timeout)",
                crate::text::trim_number(d.as_secs_f64(), 1)
            ),
        };
        crate::text::sanitize_line(&text).into_owned()
    }

    /// The exit code a command reports for a host with this problem.
    pub fn exit_code(&self) -> i32 {
        match self {
            Problem::Failed {
                code: Some(code), ..
            } if *code != 0 => *code,
            _ => crate::error::exit_code::AGENT_FAILED,
        }
    }
}

/// What one host printed and how it ended.
#[derive(Debug, Default)]
pub struct Answer {
    /// The remote looper's exit code (`None`: killed by a signal or by the deadline).
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
    /// The deadline that passed before the command ended.
    pub timed_out: Option<Duration>,
}

/// The command line for `host`: the looper itself for `local`, else the ssh client with
/// our options, `--`, the destination and ONE string for the remote shell, every word of
/// which is quoted by `shlex` (the remote shell splits it back into exactly `args`).
pub fn argv(hosts: &Hosts, host: &Host, args: &[String]) -> Result<Vec<String>, String> {
    let Some(dest) = &host.destination else {
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot locate this binary: {e}"))?
            .display()
            .to_string();
        let mut v = vec![exe];
        v.extend(args.iter().cloned());
        return Ok(v);
    };
    let mut v = hosts.ssh.clone();
    for o in [
        "BatchMode=yes".to_string(),
        format!("ConnectTimeout={}", hosts.connect_timeout),
        // A connection that dies while `logs -f` or `control stop --wait` waits is noticed.
        "ServerAliveInterval=15".to_string(),
        "ServerAliveCountMax=3".to_string(),
    ] {
        v.push("-o".into());
        v.push(o);
    }
    v.push("-T".into());
    v.push("--".into());
    v.push(dest.clone());
    v.push(remote_command(&host.looper, args)?);
    Ok(v)
}

/// The remote shell's command: `looper` and the arguments, each quoted. A program given as
/// `~/path` keeps its `~/` unquoted so the remote shell expands it to the remote home.
pub fn remote_command(looper: &str, args: &[String]) -> Result<String, String> {
    let quote = |s: &str| {
        shlex::try_quote(s)
            .map(|q| q.into_owned())
            .map_err(|e| format!("cannot quote {s:?} for the remote shell: {e}"))
    };
    let program = match looper.strip_prefix("~/") {
        Some(rest) if !rest.is_empty() => format!("~/{}", quote(rest)?),
        _ => quote(looper)?,
    };
    let mut words = vec![program];
    for a in args {
        words.push(quote(a)?);
    }
    Ok(words.join(" "))
}

/// Where a running host command can be killed from another thread (the deadline, a watch
/// that quits). The pid is cleared under the lock before the child is reaped, so a kill
/// never reaches a reused pid.
#[derive(Clone, Default)]
pub struct KillSlot(Arc<Mutex<Option<u32>>>);

impl KillSlot {
    pub fn kill(&self) -> bool {
        let Ok(slot) = self.0.lock() else {
            return false;
        };
        match *slot {
            Some(pid) => {
                let pid = nix::unistd::Pid::from_raw(pid as i32);
                nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).is_ok()
            }
            None => false,
        }
    }

    fn set(&self, pid: Option<u32>) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = pid;
        }
    }
}

/// Called with each stdout line of a streaming command, newline included.
pub type OnLine<'a> = &'a mut dyn FnMut(&[u8]);

/// Run `argv` to its end (or the deadline). With `on_line`, stdout is handed over line by
/// line as it comes (`logs -f`) and not kept; otherwise it is kept whole (a document).
pub fn run(
    argv: &[String],
    deadline: Option<Duration>,
    slot: &KillSlot,
    mut on_line: Option<OnLine>,
) -> std::io::Result<Answer> {
    let Some((program, rest)) = argv.split_first() else {
        return Err(std::io::Error::other("empty command"));
    };
    let mut child = Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    slot.set(Some(child.id()));
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let timed_out = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let limit = deadline;
    let watchdog = deadline.map(|d| {
        let slot = slot.clone();
        let timed_out = timed_out.clone();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(d) {
                timed_out.store(true, std::sync::atomic::Ordering::SeqCst);
                slot.kill();
            }
        })
    });
    let stderr = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            while let Ok(n) = e.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > 2 * MAX_STDERR {
                    buf.drain(..buf.len() - MAX_STDERR);
                }
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    });
    let mut stdout = Vec::new();
    if let Some(out) = child.stdout.take() {
        match on_line.as_mut() {
            Some(f) => {
                let mut r = BufReader::new(out);
                let mut line = Vec::new();
                while r.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                    f(&line);
                    line.clear();
                }
            }
            None => {
                let _ = out.take(MAX_STDOUT).read_to_end(&mut stdout);
            }
        }
    }
    drop(done_tx);
    if let Some(w) = watchdog {
        let _ = w.join();
    }
    let stderr = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
    // Cleared before the reap: see `KillSlot`.
    slot.set(None);
    let status = child.wait()?;
    Ok(Answer {
        code: status.code(),
        stdout,
        stderr,
        timed_out: limit.filter(|_| timed_out.load(std::sync::atomic::Ordering::SeqCst)),
    })
}

/// The line worth showing from stderr: the looper's own error line (its first line: what
/// follows lists candidates and the like), else the last line; without the `looper: error: `
/// prefix.
pub fn last_words(stderr: &str) -> String {
    let mut lines = stderr.lines().map(str::trim);
    let line = lines
        .clone()
        .find(|l| l.starts_with("looper: error: "))
        .or_else(|| lines.rfind(|l| !l.is_empty() && !l.starts_with("For more information")))
        .unwrap_or("");
    let line = line.strip_prefix("looper: error: ").unwrap_or(line);
    let line = line.strip_prefix("error: ").unwrap_or(line);
    crate::text::sanitize_line(line).into_owned()
}

/// The first line of stderr (clap puts what it did not know there).
fn first_words(stderr: &str) -> String {
    let line = stderr
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let line = line.strip_prefix("error: ").unwrap_or(line);
    crate::text::sanitize_line(line).into_owned()
}

/// What went wrong on `host`, judged from how the command ended, before its output is read:
/// `None` when the output should be read as an answer.
pub fn classify(host: &Host, answer: &Answer) -> Option<Problem> {
    if let Some(d) = answer.timed_out {
        return Some(Problem::Timeout(d));
    }
    let remote = host.destination.is_some();
    let err = &answer.stderr;
    match answer.code {
        // ssh's own failures: it never got the command to run.
        Some(255) if remote && answer.stdout.is_empty() => {
            let words = last_words(err);
            Some(Problem::Unreachable(if words.is_empty() {
                "ssh failed without a message".into()
            } else {
                words
            }))
        }
        Some(127) => Some(Problem::NoLooper(format!(
            "`{}` was not found on the PATH of a non-interactive ssh session on {}; set `looper = \"/path/to/looper\"` for [hosts.{}] in hosts.toml",
            host.looper, host.name, host.name
        ))),
        Some(126) => Some(Problem::NoLooper(format!(
            "`{}` on {} cannot be run: {}",
            host.looper,
            host.name,
            last_words(err)
        ))),
        // clap's words for a subcommand or flag it does not know (exit 2).
        Some(2)
            if err.contains("unrecognized subcommand")
                || err.contains("unexpected argument")
                || err.contains("Found argument") =>
        {
            Some(Problem::TooOld(format!(
                "the looper on {} does not know this command ({}); install agent-looper {} or newer there",
                host.name,
                first_words(err),
                env!("CARGO_PKG_VERSION")
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(dest: Option<&str>) -> Host {
        Host {
            name: "box".into(),
            destination: dest.map(str::to_string),
            looper: "looper".into(),
        }
    }

    #[test]
    fn the_remote_command_is_quoted_word_by_word() {
        let args: Vec<String> = [
            "control",
            "stop",
            "it's; rm -rf ~ $(reboot) `x`",
            "--reason",
            "a \"b\" \\c\n",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let cmd = remote_command("looper", &args).expect("quote");
        // The remote shell splits it back into exactly these words.
        let back = shlex::split(&cmd).expect("split");
        assert_eq!(back[0], "looper");
        assert_eq!(&back[1..], &args[..]);
        assert!(remote_command("looper", &["a\0b".to_string()]).is_err());
        let home = remote_command("~/.cargo/bin/looper x", &[]).expect("quote");
        assert_eq!(home, "~/'.cargo/bin/looper x'");
    }

    #[test]
    fn ssh_gets_batch_mode_a_timeout_and_the_destination_after_dashes() {
        let hosts = Hosts {
            ssh: vec!["ssh".into(), "-F".into(), "/c".into()],
            connect_timeout: 7,
            list: vec![],
        };
        let v = argv(
            &hosts,
            &host(Some("me@box")),
            &["status".into(), "--json".into()],
        )
        .expect("argv");
        assert_eq!(
            v,
            [
                "ssh",
                "-F",
                "/c",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=7",
                "-o",
                "ServerAliveInterval=15",
                "-o",
                "ServerAliveCountMax=3",
                "-T",
                "--",
                "me@box",
                "looper status --json"
            ]
        );
    }

    #[test]
    fn endings_are_classified() {
        let a = |code, out: &str, err: &str| Answer {
            code,
            stdout: out.as_bytes().to_vec(),
            stderr: err.into(),
            timed_out: None,
        };
        let h = host(Some("box"));
        let p = classify(
            &h,
            &a(
                Some(255),
                "",
                "ssh: connect to host 127.0.0.1 port 9: Connection refused\r\n",
            ),
        );
        assert_eq!(
            p,
            Some(Problem::Unreachable(
                "ssh: connect to host 127.0.0.1 port 9: Connection refused".into()
            ))
        );
        let p = classify(&h, &a(Some(127), "", "sh: 1: looper: not found\n"));
        assert_eq!(p.map(|p| p.kind()), Some("no looper"));
        let p = classify(
            &h,
            &a(
                Some(2),
                "",
                "error: unexpected argument '--json' found\n\nUsage: looper logs [TARGET]\n\nFor more information, try '--help'.\n",
            ),
        );
        assert_eq!(p.as_ref().map(Problem::kind), Some("looper too old"));
        assert!(
            p.map(|p| p.message())
                .is_some_and(|m| m.contains("unexpected argument '--json' found")),
        );
        assert_eq!(
            classify(&h, &a(Some(2), "", "looper: error: no run matches x\n")),
            None
        );
        assert_eq!(classify(&h, &a(Some(0), "{}", "")), None);
        assert_eq!(
            last_words("looper: error: no run matches x; runs:\n  a [stopped] /r/a\n"),
            "no run matches x; runs:"
        );
    }
}

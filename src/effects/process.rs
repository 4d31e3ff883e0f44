//! Agent processes (D10, D12, D13): each attempt runs in its own process group led by a
//! small guard, so a timeout, a stop or the supervisor's own death (even by SIGKILL) ends
//! the whole group; stdout and stderr are read concurrently in bounded chunks.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::agents::Stream;

pub const CHUNK: usize = 256 * 1024;
/// The agent's output pipes get this much buffer: fewer wake-ups of both sides when an
/// agent floods output (the kernel caps it at `/proc/sys/fs/pipe-max-size`).
const PIPE_BUFFER: i32 = 1 << 20;

/// What to run and how long to let it.
#[derive(Clone, Debug)]
pub struct SpawnSpec {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub stdin: Option<String>,
    pub timeout: Duration,
    pub grace: Duration,
    pub leak_timeout: Duration,
}

/// Requests that reach a running attempt from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptControl {
    Terminate { forceful: bool },
}

/// How the sink wants the attempt to continue after a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkAction {
    Continue,
    Terminate,
}

/// Receives output as it arrives (log, scanner, live echo).
pub trait OutputSink {
    fn chunk(&mut self, stream: Stream, data: &[u8]) -> SinkAction;
    fn eof(&mut self, stream: Stream);
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct AttemptExit {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    /// We terminated it (a control command, a signal, a stop pattern).
    pub terminated: bool,
    /// A grandchild held the output pipes open after the agent exited.
    pub pipes_leaked: bool,
    /// The supervisor lost track of the agent (its exit status could not be collected):
    /// the attempt failed, whatever the agent did.
    pub error: Option<String>,
}

/// The guard process: leader of the agent's process group. It holds the read end of a
/// pipe whose write end only the supervisor has; when the supervisor dies for any reason
/// (SIGKILL included) the pipe reads EOF and the guard kills its whole group, itself
/// included. While it lives the group id cannot be reused, so killing the group is never
/// aimed at a stranger.
///
/// The guard is `/bin/sh` running a constant script (no user data ever reaches it), started
/// with a vfork-style spawn: forking the supervisor itself would make it pay copy-on-write
/// faults on every loop.
pub struct Guard {
    pub pgid: i32,
    child: std::process::Child,
    _lifeline: OwnedFd,
}

/// Ignore the signals aimed at the group, wait for the supervisor's end of the pipe to
/// close, then take the whole group down.
const GUARD_SCRIPT: &str = "trap '' INT TERM HUP QUIT PIPE; read -r _; kill -9 0";

impl Guard {
    pub fn spawn() -> std::io::Result<Guard> {
        let (read_end, write_end) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
        let child = std::process::Command::new("/bin/sh")
            .args(["-c", GUARD_SCRIPT])
            .stdin(Stdio::from(read_end))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        Ok(Guard {
            pgid: child.id() as i32,
            child,
            _lifeline: write_end,
        })
    }

    pub fn signal_group(&self, sig: Signal) {
        let _ = killpg(Pid::from_raw(self.pgid), sig);
    }
}

impl Drop for Guard {
    /// Kill whatever is left of the group, then reap the guard: the group id stays ours
    /// until this point, so it cannot have been reused by an unrelated process.
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// A spawned agent: the child and its guard.
pub struct Spawned {
    pub child: tokio::process::Child,
    pub pid: i32,
    pub guard: Guard,
}

pub fn spawn(spec: &SpawnSpec) -> std::io::Result<Spawned> {
    let guard = Guard::spawn()?;
    let mut cmd = tokio::process::Command::new(&spec.program);
    cmd.args(&spec.args)
        .current_dir(&spec.cwd)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(guard.pgid)
        .kill_on_drop(true);
    let child = cmd.spawn()?;
    for fd in [
        child.stdout.as_ref().map(|p| p.as_fd()),
        child.stderr.as_ref().map(|p| p.as_fd()),
    ]
    .into_iter()
    .flatten()
    {
        let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_BUFFER));
    }
    let pid = child.id().map(|p| p as i32).unwrap_or(0);
    Ok(Spawned { child, pid, guard })
}

/// Run a spawned agent to the end: stream its output into `sink`, enforce the timeout,
/// honour control requests, terminate in two stages, and clean up the group.
pub async fn supervise(
    mut spawned: Spawned,
    spec: &SpawnSpec,
    sink: &mut dyn OutputSink,
    control: &mut mpsc::UnboundedReceiver<AttemptControl>,
) -> AttemptExit {
    let mut exit = AttemptExit::default();
    let mut stdout = spawned.child.stdout.take();
    let mut stderr = spawned.child.stderr.take();
    if let (Some(text), Some(mut stdin)) = (spec.stdin.clone(), spawned.child.stdin.take()) {
        tokio::spawn(async move {
            let _ = stdin.write_all(text.as_bytes()).await;
            let _ = stdin.shutdown().await;
        });
    }
    let mut out_buf = vec![0u8; CHUNK];
    let mut err_buf = vec![0u8; CHUNK];
    let deadline = tokio::time::Instant::now() + spec.timeout;
    let mut kill_at: Option<tokio::time::Instant> = None;
    let mut leak_deadline: Option<tokio::time::Instant> = None;
    let mut status: Option<std::process::ExitStatus> = None;
    let mut control_open = true;

    let terminate = |guard: &Guard, forceful: bool, kill_at: &mut Option<tokio::time::Instant>| {
        if forceful {
            guard.signal_group(Signal::SIGKILL);
            *kill_at = None;
        } else {
            guard.signal_group(Signal::SIGTERM);
            let at = tokio::time::Instant::now() + spec.grace;
            *kill_at = Some(kill_at.map_or(at, |k| k.min(at)));
        }
    };

    loop {
        if status.is_some() && stdout.is_none() && stderr.is_none() {
            break;
        }
        if status.is_some() && leak_deadline.is_none() {
            leak_deadline = Some(tokio::time::Instant::now() + spec.leak_timeout);
        }
        let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        tokio::select! {
            n = read_some(&mut stdout, &mut out_buf) => {
                match n {
                    Some(n) if n > 0 => {
                        if sink.chunk(Stream::Stdout, &out_buf[..n]) == SinkAction::Terminate && kill_at.is_none() && status.is_none() {
                            exit.terminated = true;
                            terminate(&spawned.guard, false, &mut kill_at);
                        }
                    }
                    _ => { stdout = None; sink.eof(Stream::Stdout); }
                }
            }
            n = read_some(&mut stderr, &mut err_buf) => {
                match n {
                    Some(n) if n > 0 => {
                        if sink.chunk(Stream::Stderr, &err_buf[..n]) == SinkAction::Terminate && kill_at.is_none() && status.is_none() {
                            exit.terminated = true;
                            terminate(&spawned.guard, false, &mut kill_at);
                        }
                    }
                    _ => { stderr = None; sink.eof(Stream::Stderr); }
                }
            }
            st = spawned.child.wait(), if status.is_none() => {
                match st {
                    Ok(st) => status = Some(st),
                    // Without a status nothing says the agent succeeded (issue 13, defect 2):
                    // the attempt is a failure, and the group is still cleaned up below.
                    Err(e) => {
                        exit.error = Some(format!(
                            "cannot collect the exit status of the agent (pid {}): {e}",
                            spawned.pid
                        ));
                        // Only "it has ended" is known; no code or signal is reported.
                        status = Some(std::os::unix::process::ExitStatusExt::from_raw(0));
                    }
                }
            }
            msg = control.recv(), if control_open => {
                match msg {
                    Some(AttemptControl::Terminate { forceful }) => {
                        exit.terminated = true;
                        terminate(&spawned.guard, forceful, &mut kill_at);
                    }
                    None => control_open = false,
                }
            }
            _ = tokio::time::sleep_until(deadline), if status.is_none() && !exit.timed_out => {
                exit.timed_out = true;
                terminate(&spawned.guard, false, &mut kill_at);
            }
            _ = tokio::time::sleep_until(kill_at.unwrap_or(far)), if kill_at.is_some() => {
                spawned.guard.signal_group(Signal::SIGKILL);
                kill_at = None;
            }
            _ = tokio::time::sleep_until(leak_deadline.unwrap_or(far)), if leak_deadline.is_some() && (stdout.is_some() || stderr.is_some()) => {
                // A grandchild still holds our pipes: end the group, keep what it wrote.
                exit.pipes_leaked = true;
                spawned.guard.signal_group(Signal::SIGKILL);
                leak_deadline = Some(far);
                drain_after_kill(&mut stdout, &mut out_buf, sink, Stream::Stdout).await;
                drain_after_kill(&mut stderr, &mut err_buf, sink, Stream::Stderr).await;
            }
        }
    }
    if let Some(st) = status.filter(|_| exit.error.is_none()) {
        use std::os::unix::process::ExitStatusExt;
        exit.exit_code = st.code();
        exit.signal = st.signal();
    }
    // Dropping the guard kills any straggler in the group and reaps the guard.
    drop(spawned.guard);
    exit
}

async fn read_some(
    pipe: &mut Option<impl tokio::io::AsyncRead + Unpin>,
    buf: &mut [u8],
) -> Option<usize> {
    match pipe {
        Some(p) => p.read(buf).await.ok(),
        None => std::future::pending().await,
    }
}

/// After SIGKILL to the group, read what is left in the pipe (bounded by a short time).
async fn drain_after_kill(
    pipe: &mut Option<impl tokio::io::AsyncRead + Unpin>,
    buf: &mut [u8],
    sink: &mut dyn OutputSink,
    stream: Stream,
) {
    let until = tokio::time::Instant::now() + Duration::from_millis(500);
    while pipe.is_some() {
        match tokio::time::timeout_at(until, read_some(pipe, buf)).await {
            Ok(Some(n)) if n > 0 => {
                let _ = sink.chunk(stream, &buf[..n]);
            }
            _ => {
                *pipe = None;
                sink.eof(stream);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Null;
    impl OutputSink for Null {
        fn chunk(&mut self, _: Stream, _: &[u8]) -> SinkAction {
            SinkAction::Continue
        }
        fn eof(&mut self, _: Stream) {}
    }

    fn spec(program: &str, args: &[&str]) -> SpawnSpec {
        SpawnSpec {
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: vec![],
            cwd: std::env::temp_dir(),
            stdin: None,
            timeout: Duration::from_secs(10),
            grace: Duration::from_millis(200),
            leak_timeout: Duration::from_millis(200),
        }
    }

    /// Defect 2 of issue 13: when the agent's status cannot be collected, the attempt must
    /// not look like a clean exit 0.
    #[tokio::test]
    async fn a_failed_wait_is_an_error_not_exit_zero() {
        let spec = spec("/bin/sh", &["-c", "exit 0"]);
        let spawned = spawn(&spec).expect("spawn");
        // Reap the agent behind tokio's back, so its wait() fails with ECHILD.
        let _ = nix::sys::wait::waitpid(Pid::from_raw(spawned.pid), None);
        let (_tx, mut rx) = mpsc::unbounded_channel();
        let exit = supervise(spawned, &spec, &mut Null, &mut rx).await;
        assert_eq!(exit.exit_code, None, "{exit:?}");
        assert!(
            exit.error
                .as_deref()
                .is_some_and(|e| e.contains("exit status")),
            "{exit:?}"
        );
    }
}

//! The attempt guard (D10, issue 20.5), Linux: the looper binary re-executed in a hidden mode
//! becomes the agent's parent and a child subreaper (`PR_SET_CHILD_SUBREAPER`), so every
//! descendant of the agent that is orphaned (a `setsid` daemon, a double fork) is adopted by
//! it instead of by init. When the attempt ends it kills the agent's process group and every
//! descendant; when the supervisor dies (even by SIGKILL) it does the same, then exits.
//!
//! Why no signal can hit a stranger: the guard never reaps the agent before its last signal
//! to the agent's group (a zombie keeps its pid, and so the group id, from being reused), and
//! beyond that group it only signals its own unreaped children, whose pids cannot be reused
//! either. Descendants further down become its children as their parents die, and are killed
//! in turn.
//!
//! One guard serves a whole run, attempt after attempt: starting a process per attempt would
//! cost every loop an exec. Between attempts it has no children at all.
//!
//! The protocol, over a Unix stream socket that is the guard's stdin. The supervisor sends
//! `S <length>` and the spawn request ([`encode_spawn`]), with the agent's stdin, stdout and
//! stderr attached (`SCM_RIGHTS`); the guard answers `P <agent pid>` or `X <errno>`, later
//! `E <wait status>` when the agent exits. The supervisor sends `T` (SIGTERM to the attempt)
//! and `K` (kill everything that is left of the attempt), answered by `D` once it is done;
//! end of file means the supervisor is gone: the guard kills the attempt and exits. Every
//! message is a tag and a little-endian `i32`; only `S` carries more.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, kill, killpg};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;

use crate::effects::procinfo;

/// `argv[1]` of a guard: no command line of the looper's own can start with it.
pub const GUARD_ARG: &str = "__agent-looper-guard";

/// What the guard shows in `ps` (`argv[0]`).
pub const GUARD_NAME: &str = "looper-guard";

/// How long a sweep keeps killing descendants that keep appearing (a fork loop) before it
/// gives up; a process stuck in the kernel (state D) also ends the wait here.
const SWEEP_LIMIT: Duration = Duration::from_secs(10);

/// A spawn request larger than this is refused (it carries argv: the prompt is in it).
const MAX_REQUEST: usize = 64 * 1024 * 1024;

pub const MSG_SPAWN: u8 = b'S';
pub const MSG_PID: u8 = b'P';
pub const MSG_SPAWN_ERROR: u8 = b'X';
pub const MSG_EXIT: u8 = b'E';
pub const MSG_TERM: u8 = b'T';
pub const MSG_KILL: u8 = b'K';
pub const MSG_DONE: u8 = b'D';

pub fn frame(tag: u8, value: i32) -> [u8; 5] {
    let v = value.to_le_bytes();
    [tag, v[0], v[1], v[2], v[3]]
}

pub fn unframe(buf: [u8; 5]) -> (u8, i32) {
    (buf[0], i32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]))
}

/// What the agent of one attempt is: program, working directory, arguments, and the
/// variables added to the guard's environment (the supervisor's, inherited at its start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnRequest {
    pub program: std::ffi::OsString,
    pub cwd: std::ffi::OsString,
    pub args: Vec<std::ffi::OsString>,
    pub env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
}

/// The request as bytes: each field a little-endian `u32` length and its bytes, the lists
/// preceded by their counts.
pub fn encode_spawn(req: &SpawnRequest) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    fn put(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    let mut out = Vec::new();
    put(&mut out, req.program.as_bytes());
    put(&mut out, req.cwd.as_bytes());
    out.extend_from_slice(&(req.args.len() as u32).to_le_bytes());
    for a in &req.args {
        put(&mut out, a.as_bytes());
    }
    out.extend_from_slice(&(req.env.len() as u32).to_le_bytes());
    for (k, v) in &req.env {
        put(&mut out, k.as_bytes());
        put(&mut out, v.as_bytes());
    }
    out
}

pub fn decode_spawn(mut bytes: &[u8]) -> Option<SpawnRequest> {
    use std::os::unix::ffi::OsStrExt;
    fn number(bytes: &mut &[u8]) -> Option<usize> {
        let (n, rest) = bytes.split_first_chunk::<4>()?;
        *bytes = rest;
        usize::try_from(u32::from_le_bytes(*n)).ok()
    }
    fn field(bytes: &mut &[u8]) -> Option<std::ffi::OsString> {
        let n = number(bytes)?;
        let (f, rest) = bytes.split_at_checked(n)?;
        *bytes = rest;
        Some(std::ffi::OsStr::from_bytes(f).to_os_string())
    }
    let program = field(&mut bytes)?;
    let cwd = field(&mut bytes)?;
    let nargs = number(&mut bytes)?;
    let mut args = Vec::with_capacity(nargs.min(4096));
    for _ in 0..nargs {
        args.push(field(&mut bytes)?);
    }
    let nenv = number(&mut bytes)?;
    let mut env = Vec::with_capacity(nenv.min(4096));
    for _ in 0..nenv {
        env.push((field(&mut bytes)?, field(&mut bytes)?));
    }
    bytes.is_empty().then_some(SpawnRequest {
        program,
        cwd,
        args,
        env,
    })
}

/// The raw `wait` status (`WEXITSTATUS`/`WTERMSIG` encoding) of an exited child, so the
/// supervisor can rebuild an `ExitStatus` from it.
pub fn raw_status(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some((code & 0xff) << 8),
        WaitStatus::Signaled(_, sig, core) => Some(sig as i32 | if core { 0x80 } else { 0 }),
        _ => None,
    }
}

/// The guard's entry point: `Some(exit code)` when this process was started as a guard
/// (`argv[1]` is [`GUARD_ARG`]), `None` otherwise. Called first thing by every binary.
pub fn run_if_guard() -> Option<u8> {
    let mut args = std::env::args_os();
    let _ = args.next();
    if args.next().is_none_or(|a| a != GUARD_ARG) {
        return None;
    }
    Some(match guard_main() {
        Ok(()) => 0,
        Err(_) => 1,
    })
}

fn guard_main() -> std::io::Result<()> {
    // SAFETY: fd 0 is the socket the supervisor gave us as stdin; nothing else owns it.
    let sock = unsafe { UnixStream::from_raw_fd(0) };
    nix::sys::prctl::set_child_subreaper(true)?;
    // SIGCHLD through a signalfd; the stop signals are blocked, not ignored, so the agent
    // does not inherit an ignored disposition (the mask is cleared for it in `start_agent`).
    let mut mask = SigSet::empty();
    for sig in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGPIPE,
    ] {
        mask.add(sig);
    }
    mask.thread_block()?;
    let mut sigfd = SignalFd::with_flags(
        &SigSet::from(Signal::SIGCHLD),
        SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
    )?;
    // One attempt after the other, until the supervisor is gone.
    while let Some((request, fds)) = receive_spawn(&sock)? {
        let mut attempt = match start_agent(request, fds) {
            Ok(a) => a,
            Err(e) => {
                send(
                    &sock,
                    MSG_SPAWN_ERROR,
                    e.raw_os_error().unwrap_or(libc::EIO),
                )?;
                continue;
            }
        };
        send(&sock, MSG_PID, attempt.agent.as_raw())?;
        if attempt.serve(&sock, &mut sigfd) == Outcome::SupervisorGone {
            break;
        }
        send(&sock, MSG_DONE, 0)?;
    }
    Ok(())
}

fn send(mut sock: &UnixStream, tag: u8, value: i32) -> std::io::Result<()> {
    sock.write_all(&frame(tag, value))
}

/// The next spawn request and the agent's stdin, stdout and stderr; `None` at end of file.
fn receive_spawn(sock: &UnixStream) -> std::io::Result<Option<(SpawnRequest, [OwnedFd; 3])>> {
    let mut head = [0u8; 5];
    let mut space = nix::cmsg_space!([RawFd; 3]);
    let mut fds: Vec<OwnedFd> = Vec::new();
    let got = {
        let mut iov = [std::io::IoSliceMut::new(&mut head)];
        let msg = nix::sys::socket::recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(space.as_mut_slice()),
            nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        for c in msg.cmsgs()? {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(raw) = c {
                // SAFETY: SCM_RIGHTS gave us these descriptors; nothing else owns them.
                fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        msg.bytes
    };
    if got == 0 {
        return Ok(None);
    }
    let mut s = sock;
    s.read_exact(&mut head[got..])?;
    let protocol = || std::io::Error::from_raw_os_error(libc::EPROTO);
    let (tag, len) = unframe(head);
    let len = usize::try_from(len).map_err(|_| protocol())?;
    if tag != MSG_SPAWN || len > MAX_REQUEST {
        return Err(protocol());
    }
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload)?;
    let request = decode_spawn(&payload).ok_or_else(protocol)?;
    let fds: [OwnedFd; 3] = fds.try_into().map_err(|_| protocol())?;
    Ok(Some((request, fds)))
}

/// Starts the agent in its own process group.
fn start_agent(request: SpawnRequest, fds: [OwnedFd; 3]) -> std::io::Result<Attempt> {
    let [stdin, stdout, stderr] = fds;
    let mut cmd = std::process::Command::new(&request.program);
    cmd.args(&request.args)
        .current_dir(&request.cwd)
        .envs(request.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .process_group(0);
    // SAFETY: sigemptyset, sigprocmask, prctl and getppid are async-signal-safe. The mask
    // the guard blocks its stop signals with is inherited through fork and exec, and std does
    // not clear it: the agent must start with nothing blocked, or SIGTERM would never reach
    // it. If the guard itself is killed, the agent goes with it instead of running on
    // unwatched.
    unsafe {
        let guard_pid = libc::getpid();
        cmd.pre_exec(move || {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            if libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != guard_pid {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    Ok(Attempt {
        me: Pid::this(),
        agent: Pid::from_raw(child.id() as i32),
        agent_exited: false,
    })
}

/// How an attempt ended for the guard.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// `K`: everything is dead and reaped; wait for the next attempt.
    Ended,
    /// End of file (or garbage): the supervisor is gone; everything is dead, exit.
    SupervisorGone,
}

/// One attempt, from the guard's side.
struct Attempt {
    me: Pid,
    agent: Pid,
    /// The agent has exited (and its status was sent); it stays a zombie, unreaped, until
    /// the attempt's last signal.
    agent_exited: bool,
}

impl Attempt {
    /// Until the supervisor says the attempt is over (or is gone): report the agent's end,
    /// reap adopted orphans as they die, relay SIGTERM.
    fn serve(&mut self, sock: &UnixStream, sigfd: &mut SignalFd) -> Outcome {
        loop {
            let (sock_ready, sig_ready) = {
                let mut fds = [
                    PollFd::new(sock.as_fd(), PollFlags::POLLIN),
                    PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
                ];
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) => (fds[0].any().unwrap_or(true), fds[1].any().unwrap_or(false)),
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => (true, false),
                }
            };
            if sig_ready {
                while let Ok(Some(_)) = sigfd.read_signal() {}
                self.collect(sock);
            }
            if sock_ready {
                let mut buf = [0u8; 5];
                let mut s = sock;
                match s.read_exact(&mut buf) {
                    Ok(()) if buf[0] == MSG_TERM => self.terminate(),
                    Ok(()) if buf[0] == MSG_KILL => {
                        self.sweep(sock, sigfd);
                        return Outcome::Ended;
                    }
                    // End of file (the supervisor died) or garbage: end the attempt and go.
                    _ => {
                        self.sweep(sock, sigfd);
                        return Outcome::SupervisorGone;
                    }
                }
            }
        }
    }

    /// The agent's end (once) and the adopted orphans that have died.
    fn collect(&mut self, sock: &UnixStream) {
        if !self.agent_exited
            && let Ok(st) = waitid(
                Id::Pid(self.agent),
                WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
            )
            && let Some(raw) = raw_status(st)
        {
            self.agent_exited = true;
            // A supervisor that is gone cannot be told; the sweep follows anyway.
            let _ = send(sock, MSG_EXIT, raw);
        }
        for child in procinfo::children(self.me.as_raw()) {
            if child != self.agent.as_raw() {
                let _ = waitpid(Pid::from_raw(child), Some(WaitPidFlag::WNOHANG));
            }
        }
    }

    /// SIGTERM to the agent's group and to the orphans it left: they are the attempt too.
    fn terminate(&self) {
        let _ = killpg(self.agent, Signal::SIGTERM);
        for child in procinfo::children(self.me.as_raw()) {
            if child != self.agent.as_raw() {
                let _ = kill(Pid::from_raw(child), Signal::SIGTERM);
            }
        }
    }

    /// Kill the agent's group and every descendant until none is left, report the agent's
    /// end if that has not happened yet, reap everything, the agent last.
    fn sweep(&mut self, sock: &UnixStream, sigfd: &mut SignalFd) {
        let until = Instant::now() + SWEEP_LIMIT;
        loop {
            // Safe: the agent is not reaped yet, so its pid (the group id) is still ours.
            let _ = killpg(self.agent, Signal::SIGKILL);
            let children = procinfo::children(self.me.as_raw());
            for &child in &children {
                let _ = kill(Pid::from_raw(child), Signal::SIGKILL);
            }
            self.collect(sock);
            let others = children.iter().any(|c| *c != self.agent.as_raw());
            if (!others && self.agent_exited) || Instant::now() >= until {
                break;
            }
            // Woken by the next death (or after a short while, for a child that was not
            // listed yet: a descendant is adopted only when its parent has died).
            let mut fds = [PollFd::new(sigfd.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::from(10u16));
            while let Ok(Some(_)) = sigfd.read_signal() {}
        }
        // An agent that could not be killed in time (stuck in the kernel) is left to init:
        // waiting for it would hold the supervisor.
        if self.agent_exited {
            let _ = waitpid(self.agent, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawn_requests_round_trip_and_garbage_is_refused() {
        use std::os::unix::ffi::OsStrExt;
        let req = SpawnRequest {
            program: "/bin/agent".into(),
            cwd: "/w d".into(),
            args: vec![
                "-p".into(),
                "".into(),
                std::ffi::OsStr::from_bytes(b"\xff;#(x)").into(),
            ],
            env: vec![("K".into(), "v=w".into())],
        };
        let bytes = encode_spawn(&req);
        assert_eq!(decode_spawn(&bytes), Some(req));
        assert_eq!(decode_spawn(&bytes[..bytes.len() - 1]), None);
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode_spawn(&longer), None);
        assert_eq!(decode_spawn(&[0xff; 16]), None);
        assert_eq!(unframe(frame(MSG_EXIT, -7)), (MSG_EXIT, -7));
    }

    #[test]
    fn wait_statuses_keep_codes_and_signals() {
        use std::os::unix::process::ExitStatusExt;
        let pid = Pid::from_raw(1);
        let exited = raw_status(WaitStatus::Exited(pid, 3)).expect("exited");
        assert_eq!(std::process::ExitStatus::from_raw(exited).code(), Some(3));
        let killed = raw_status(WaitStatus::Signaled(pid, Signal::SIGKILL, false)).expect("killed");
        assert_eq!(std::process::ExitStatus::from_raw(killed).signal(), Some(9));
        assert_eq!(raw_status(WaitStatus::StillAlive), None);
    }
}

//! The attempt guard (D10, issue 20.5), Linux: the looper binary re-executed in a hidden mode
//! becomes the agent's parent and a child subreaper (`PR_SET_CHILD_SUBREAPER`), so every
//! descendant of the agent that is orphaned (a `setsid` daemon, a double fork) is adopted by
//! it instead of by init. When the attempt ends, or the supervisor dies (even by SIGKILL),
//! it kills the agent's process group and every descendant, then exits.
//!
//! Why no signal can hit a stranger: the guard never reaps the agent before its last signal
//! to the agent's group (a zombie keeps its pid, and so the group id, from being reused), and
//! beyond that group it only signals its own unreaped children, whose pids cannot be reused
//! either. Descendants further down become its children as their parents die, and are killed
//! in turn.
//!
//! The protocol, over a Unix stream socket that is the guard's stdin: the supervisor sends
//! `F` with the agent's stdin, stdout and stderr attached (`SCM_RIGHTS`); the guard answers
//! `P <agent pid>` or `X <errno>`, later `E <wait status>` when the agent exits. The
//! supervisor sends `T` (SIGTERM to the attempt) and `K` (kill everything, then exit); end of
//! file means the supervisor is gone, which is `K` too. Every message is five bytes: a tag and
//! a little-endian `i32`.

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

pub const MSG_FDS: u8 = b'F';
pub const MSG_PID: u8 = b'P';
pub const MSG_SPAWN_ERROR: u8 = b'X';
pub const MSG_EXIT: u8 = b'E';
pub const MSG_TERM: u8 = b'T';
pub const MSG_KILL: u8 = b'K';

pub fn frame(tag: u8, value: i32) -> [u8; 5] {
    let v = value.to_le_bytes();
    [tag, v[0], v[1], v[2], v[3]]
}

pub fn unframe(buf: [u8; 5]) -> (u8, i32) {
    (buf[0], i32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]))
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
    let program = args.next()?;
    let rest: Vec<std::ffi::OsString> = args.collect();
    Some(match guard_main(&program, &rest) {
        Ok(()) => 0,
        Err(_) => 1,
    })
}

fn guard_main(program: &std::ffi::OsStr, args: &[std::ffi::OsString]) -> std::io::Result<()> {
    // SAFETY: fd 0 is the socket the supervisor gave us as stdin; nothing else owns it.
    let sock = unsafe { UnixStream::from_raw_fd(0) };
    nix::sys::prctl::set_child_subreaper(true)?;
    // SIGCHLD through a signalfd; the stop signals are blocked, not ignored, so the agent
    // does not inherit an ignored disposition (std resets the mask of every child it starts).
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
    let mut guard = match start_agent(&sock, program, args) {
        Ok(g) => g,
        Err(e) => {
            let _ = send(
                &sock,
                MSG_SPAWN_ERROR,
                e.raw_os_error().unwrap_or(libc::EIO),
            );
            return Err(e);
        }
    };
    send(&sock, MSG_PID, guard.agent.as_raw())?;
    guard.serve(&sock, &mut sigfd);
    Ok(())
}

fn send(mut sock: &UnixStream, tag: u8, value: i32) -> std::io::Result<()> {
    sock.write_all(&frame(tag, value))
}

/// Receives the agent's stdio and starts it in its own process group.
fn start_agent(
    sock: &UnixStream,
    program: &std::ffi::OsStr,
    args: &[std::ffi::OsString],
) -> std::io::Result<Guard> {
    let mut buf = [0u8; 5];
    let mut space = nix::cmsg_space!([RawFd; 3]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = nix::sys::socket::recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(space.as_mut_slice()),
        nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for c in msg.cmsgs()? {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: SCM_RIGHTS gave us these descriptors; nothing else owns them.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let (tag, _) = unframe(buf);
    let mut fds = fds.into_iter();
    let (Some(stdin), Some(stdout), Some(stderr), MSG_FDS) =
        (fds.next(), fds.next(), fds.next(), tag)
    else {
        return Err(std::io::Error::from_raw_os_error(libc::EPROTO));
    };
    let mut cmd = std::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .process_group(0);
    // SAFETY: prctl and getppid are async-signal-safe. If the guard itself is killed, the
    // agent goes with it instead of running on unwatched.
    unsafe {
        let guard_pid = libc::getpid();
        cmd.pre_exec(move || {
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
    Ok(Guard {
        me: Pid::this(),
        agent: Pid::from_raw(child.id() as i32),
        agent_exited: false,
        reported: false,
    })
}

struct Guard {
    me: Pid,
    agent: Pid,
    /// The agent has exited; it stays a zombie (unreaped) until the very end.
    agent_exited: bool,
    /// Its status went to the supervisor.
    reported: bool,
}

impl Guard {
    /// Until the supervisor says the attempt is over (or is gone): report the agent's end,
    /// reap adopted orphans as they die, relay SIGTERM.
    fn serve(&mut self, sock: &UnixStream, sigfd: &mut SignalFd) {
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
                    // `K`, end of file (the supervisor died) or garbage: end the attempt.
                    _ => return self.sweep(sock, sigfd),
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
            self.reported = send(sock, MSG_EXIT, raw).is_ok();
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

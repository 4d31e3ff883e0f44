//! Processes that still hold an agent session (issue 18 item 4): the process group of an
//! earlier attempt or of a closed hybrid pane. Before the looper resumes that session in a
//! new process, every live member of the old group is ended, so two processes never
//! continue one session (two TUIs appending to one transcript, two `--resume`s racing).
//!
//! A group is named by its id and its leader's identity (pid plus start time): while any
//! member lives the kernel keeps the id for that group, and once the group is empty the id
//! may be reused only by a new leader with that pid, whose identity then differs.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::procinfo;

/// A process group that works on a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub session_id: String,
    pub pgid: i32,
    /// `procinfo::pid_identity` of the group leader when the group started.
    pub leader_identity: Option<String>,
}

/// How long the old group may take to end by itself before it is signalled.
const SETTLE: Duration = Duration::from_secs(2);

/// The live members of the holder's group (none once it is over, or when its id now
/// belongs to another group).
pub fn live_members(h: &Holder) -> Vec<i32> {
    if h.pgid <= 1 {
        return vec![];
    }
    let members = procinfo::group_members(h.pgid);
    if members.contains(&h.pgid)
        && let (Some(then), Some(now)) = (&h.leader_identity, procinfo::pid_identity(h.pgid))
        && *then != now
    {
        // The id was reused by a new group: nothing of ours.
        return vec![];
    }
    members
}

fn wait_gone(h: &Holder, limit: Duration) -> Vec<i32> {
    let until = Instant::now() + limit;
    loop {
        let left = live_members(h);
        if left.is_empty() || Instant::now() >= until {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// End every live member of the holder's group: a short wait for it to end by itself,
/// then SIGTERM, `grace`, SIGKILL. Returns the pids that had to be signalled; an error when
/// some survived even SIGKILL.
pub fn release(h: &Holder, grace: Duration) -> Result<Vec<i32>, String> {
    let left = wait_gone(h, SETTLE);
    if left.is_empty() {
        return Ok(vec![]);
    }
    for sig in [Signal::SIGTERM, Signal::SIGKILL] {
        // Each pid was just seen in the group (the group keeps its id while it lives).
        for pid in live_members(h) {
            let _ = kill(Pid::from_raw(pid), sig);
        }
        let wait = if sig == Signal::SIGTERM {
            grace
        } else {
            Duration::from_secs(2)
        };
        if wait_gone(h, wait).is_empty() {
            return Ok(left);
        }
    }
    let still = live_members(h);
    Err(format!(
        "processes {still:?} of session {} survived SIGKILL",
        h.session_id
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_that_outlives_its_turn_is_ended_and_a_gone_one_is_free() {
        use std::os::unix::process::CommandExt;
        // A leader that ignores SIGTERM, with a child in its group.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "trap '' TERM; sleep 60 & wait"])
            .process_group(0)
            .spawn()
            .expect("spawn");
        let pgid = child.id() as i32;
        let h = Holder {
            session_id: "s".into(),
            pgid,
            leader_identity: procinfo::pid_identity(pgid),
        };
        assert!(
            (0..100).any(|_| {
                std::thread::sleep(Duration::from_millis(20));
                live_members(&h).len() >= 2
            }),
            "the group is up"
        );
        let reaper = std::thread::spawn(move || child.wait());
        let ended = release(&h, Duration::from_millis(200)).expect("released");
        assert!(ended.contains(&pgid), "{ended:?}");
        assert!(live_members(&h).is_empty());
        let _ = reaper.join();
        // Nothing left: free at once.
        assert_eq!(release(&h, Duration::from_millis(200)), Ok(vec![]));
        // A group id now led by another process (another identity) is not ours.
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .expect("spawn");
        let reused = Holder {
            session_id: "s".into(),
            pgid: other.id() as i32,
            leader_identity: Some("linux-proc:another-boot:1".into()),
        };
        assert!(live_members(&reused).is_empty());
        let _ = other.kill();
        let _ = other.wait();
    }
}

//! Running the notifier (D33): the `[notify].command` argv with the notification's values in
//! its placeholders, never through a shell, in its own process group, on a thread of its own
//! so the loop never waits for it; its group is killed at the timeout, and what happened is
//! sent back to be recorded (a failing notifier is an event, not a stop).

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use crate::engine::notify::Notification;

/// What one notifier run did.
#[derive(Clone, Debug, PartialEq)]
pub struct NotifyOutcome {
    pub event: &'static str,
    /// `Ok(())` when it exited 0; otherwise why not (an exit code, a timeout, no start).
    pub result: Result<(), String>,
    pub seconds: f64,
}

/// Starts notifier runs and reports each one's outcome on `done`.
pub struct NotifyRunner {
    pub program: String,
    pub template: Vec<String>,
    pub timeout: Duration,
    pub label: String,
    pub run_dir: String,
    pub done: UnboundedSender<NotifyOutcome>,
    /// Runs not reported yet: the end of a run waits for them (bounded by the timeout).
    pub in_flight: Arc<AtomicUsize>,
}

/// The argv for `n`: each template item with the notification's values in its placeholders.
pub fn argv(
    template: &[String],
    n: &Notification,
    label: &str,
    run_dir: &str,
) -> Result<Vec<String>, String> {
    let values: BTreeMap<&str, String> = BTreeMap::from([
        ("event", n.event.to_string()),
        ("label", label.to_string()),
        ("title", n.title.clone()),
        ("body", n.body.clone()),
        ("run_dir", run_dir.to_string()),
        ("stop_reason", n.stop_reason.clone().unwrap_or_default()),
        ("question", n.question.clone().unwrap_or_default()),
        (
            "exit_code",
            n.exit_code.map(|c| c.to_string()).unwrap_or_default(),
        ),
    ]);
    template
        .iter()
        .map(|item| crate::agents::command::render_one(item, &values).map_err(|e| e.to_string()))
        .collect()
}

impl NotifyRunner {
    pub fn fire(&self, n: &Notification) {
        let event = n.event;
        let args = match argv(&self.template, n, &self.label, &self.run_dir) {
            Ok(a) => a,
            Err(e) => {
                let _ = self.done.send(NotifyOutcome {
                    event,
                    result: Err(e),
                    seconds: 0.0,
                });
                return;
            }
        };
        let program = self.program.clone();
        let timeout = self.timeout;
        let done = self.done.clone();
        let in_flight = Arc::clone(&self.in_flight);
        in_flight.fetch_add(1, Ordering::SeqCst);
        let spawned = std::thread::Builder::new()
            .name("looper-notify".into())
            .spawn(move || {
                let started = Instant::now();
                let result = run(&program, args.get(1..).unwrap_or_default(), timeout);
                let _ = done.send(NotifyOutcome {
                    event,
                    result,
                    seconds: started.elapsed().as_secs_f64(),
                });
                in_flight.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            let _ = self.done.send(NotifyOutcome {
                event,
                result: Err("cannot start a thread for the notifier".into()),
                seconds: 0.0,
            });
        }
    }
}

/// Run one notifier to its end or its timeout. Its group is killed while the leader is
/// still unreaped (a zombie holds the group id), so the kill never reaches a stranger.
fn run(program: &str, args: &[String], timeout: Duration) -> Result<(), String> {
    use nix::sys::signal::{Signal, killpg};
    use nix::sys::wait::{Id, WaitPidFlag, waitid};
    use nix::unistd::Pid;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let pid = Pid::from_raw(child.id() as i32);
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    loop {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::Pid(pid), flags) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) => {}
            Ok(_) | Err(_) => break,
        }
        if Instant::now() >= deadline {
            timed_out = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Whatever the notifier left behind in its group goes with it.
    let _ = killpg(pid, Signal::SIGKILL);
    let status = child
        .wait()
        .map_err(|e| format!("cannot wait for {program}: {e}"))?;
    if timed_out {
        return Err(format!(
            "{program} did not finish within {} s; its process group was killed",
            crate::text::format_num(timeout.as_secs_f64())
        ));
    }
    match status.code() {
        Some(0) => Ok(()),
        Some(c) => Err(format!("{program} exited with code {c}")),
        None => Err(format!("{program} was killed by a signal")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note() -> Notification {
        Notification {
            event: "stopped",
            title: "looper x: stopped".into(),
            body: "max loops reached: 1".into(),
            question: None,
            stop_reason: Some("max loops reached: 1".into()),
            exit_code: Some(0),
        }
    }

    #[test]
    fn placeholders_become_whole_arguments() {
        let t: Vec<String> = ["n", "{title}", "--", "{body} ({exit_code})", "{{x}}"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            argv(&t, &note(), "x", "/r").expect("argv"),
            [
                "n",
                "looper x: stopped",
                "--",
                "max loops reached: 1 (0)",
                "{x}"
            ]
        );
    }

    #[test]
    fn a_hanging_notifier_is_killed_with_its_group_at_the_timeout() {
        let started = Instant::now();
        let e = run(
            "/bin/sh",
            &["-c".into(), "sleep 30 & sleep 30".into()],
            Duration::from_millis(300),
        )
        .expect_err("timeout");
        assert!(e.contains("did not finish within 0.3 s"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(
            run(
                "/bin/sh",
                &["-c".into(), "exit 3".into()],
                Duration::from_secs(5)
            ),
            Err("/bin/sh exited with code 3".into())
        );
        assert!(run("/bin/true", &[], Duration::from_secs(5)).is_ok());
        assert!(run("/nonexistent/notifier", &[], Duration::from_secs(1)).is_err());
    }
}

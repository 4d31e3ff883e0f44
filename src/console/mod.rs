//! Lines for the person at the terminal. The terminal may go away while a run goes on (an
//! SSH session drops, a tmux server is killed): writing to it then fails, and that must
//! neither end nor corrupt the run, so the failure is ignored (`println!` would panic).
//!
//! A supervisor's terminal may also stop reading (a paused pager, Ctrl-S): then a write
//! blocks, and with it timeouts, control commands and signals. While a run is on, the
//! console is [`detach`]ed: lines and echoed output go through a bounded queue to a writer
//! thread; when the terminal does not keep up, output is dropped (the log keeps everything)
//! and a line says how much was lost once it reads again.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub mod echo;
pub mod words;

/// A line on stdout, sanitised (D35): lines often carry agent or file text.
pub fn out(line: &str) {
    if capture_line(line) {
        return;
    }
    let mut bytes = crate::text::sanitize(line).into_owned().into_bytes();
    bytes.push(b'\n');
    write(Target::Out, bytes);
}

/// A line on stderr, sanitised (D35).
pub fn err(line: &str) {
    if capture_line(line) {
        return;
    }
    let mut bytes = crate::text::sanitize(line).into_owned().into_bytes();
    bytes.push(b'\n');
    write(Target::Err, bytes);
}

/// Bytes already made safe (the transcript echo), on stdout.
pub fn out_bytes(bytes: &[u8]) {
    write(Target::Out, bytes.to_vec());
}

/// `println!` for commands: through [`out`], so the line is sanitised and a closed terminal
/// is not a panic.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { $crate::console::out(&format!($($arg)*)) };
}

/// `eprintln!` for commands: through [`err`].
#[macro_export]
macro_rules! say_err {
    ($($arg:tt)*) => { $crate::console::err(&format!($($arg)*)) };
}

/// Lines kept instead of written while a command's output becomes a JSON document
/// (`--json`, read by `--host`: `remote::document`).
static CAPTURE: Mutex<Option<Vec<String>>> = Mutex::new(None);

/// From now on, [`out`] and [`err`] lines are kept for [`take_captured`] instead of written.
pub fn capture() {
    if let Ok(mut c) = CAPTURE.lock() {
        c.get_or_insert_with(Vec::new);
    }
}

/// The lines kept since [`capture`], sanitised; writing to the terminal resumes.
pub fn take_captured() -> Vec<String> {
    CAPTURE
        .lock()
        .ok()
        .and_then(|mut c| c.take())
        .unwrap_or_default()
}

fn capture_line(line: &str) -> bool {
    let Ok(mut c) = CAPTURE.lock() else {
        return false;
    };
    match c.as_mut() {
        Some(lines) => {
            lines.push(crate::text::sanitize(line).into_owned());
            true
        }
        None => false,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Out,
    Err,
}

enum Job {
    Write(Target, Vec<u8>),
    Flushed(std::sync::mpsc::Sender<()>),
}

/// Bytes queued for the terminal beyond which output is dropped rather than waited for.
const QUEUE_BYTES: usize = 1 << 20;

struct Detached {
    tx: SyncSender<Job>,
    /// Bytes queued and not yet written.
    pending: AtomicUsize,
    /// Bytes dropped since the last note about it.
    dropped: AtomicUsize,
}

static DETACHED: OnceLock<Detached> = OnceLock::new();
/// Serialises direct writes with the switch to the writer thread.
static DIRECT: Mutex<()> = Mutex::new(());

fn write_now(target: Target, bytes: &[u8]) {
    let _ = match target {
        Target::Out => std::io::stdout().lock().write_all(bytes),
        Target::Err => std::io::stderr().lock().write_all(bytes),
    };
}

fn write(target: Target, bytes: Vec<u8>) {
    let Some(d) = DETACHED.get() else {
        let _guard = DIRECT.lock();
        write_now(target, &bytes);
        return;
    };
    let n = bytes.len();
    if d.pending.load(Ordering::Relaxed) + n > QUEUE_BYTES {
        d.dropped.fetch_add(n, Ordering::Relaxed);
        return;
    }
    d.pending.fetch_add(n, Ordering::Relaxed);
    if d.tx.try_send(Job::Write(target, bytes)).is_err() {
        d.pending.fetch_sub(n, Ordering::Relaxed);
        d.dropped.fetch_add(n, Ordering::Relaxed);
    }
}

fn writer(rx: Receiver<Job>) {
    for job in rx {
        match job {
            Job::Write(target, bytes) => {
                if let Some(d) = DETACHED.get() {
                    let lost = d.dropped.swap(0, Ordering::Relaxed);
                    if lost > 0 {
                        let note = format!(
                            "looper: {lost} bytes of terminal output were dropped while the terminal was not reading (the run's logs have everything)\n"
                        );
                        write_now(Target::Err, note.as_bytes());
                    }
                    write_now(target, &bytes);
                    d.pending.fetch_sub(bytes.len(), Ordering::Relaxed);
                }
            }
            Job::Flushed(ack) => {
                let _ = ack.send(());
            }
        }
    }
}

/// From now on, writes never block the caller (see the module docs). Idempotent.
pub fn detach() {
    let _guard = DIRECT.lock();
    if DETACHED.get().is_some() {
        return;
    }
    let (tx, rx) = sync_channel(4096);
    let started = std::thread::Builder::new()
        .name("looper-console".into())
        .spawn(move || writer(rx));
    if started.is_ok() {
        let _ = DETACHED.set(Detached {
            tx,
            pending: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
        });
    }
}

/// Wait up to `limit` for queued output to reach the terminal (a terminal that still does
/// not read is given up on: the process may exit).
pub fn flush(limit: Duration) {
    let Some(d) = DETACHED.get() else {
        let _ = std::io::stdout().flush();
        return;
    };
    let (ack, done) = std::sync::mpsc::channel();
    let deadline = Instant::now() + limit;
    if send_within(&d.tx, Job::Flushed(ack), limit).is_ok() {
        let _ = done.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }
}

/// `SyncSender::send` with a deadline: polls `try_send` (the channel is rarely full).
fn send_within(tx: &SyncSender<Job>, mut job: Job, limit: Duration) -> Result<(), ()> {
    let deadline = Instant::now() + limit;
    loop {
        match tx.try_send(job) {
            Ok(()) => return Ok(()),
            Err(std::sync::mpsc::TrySendError::Full(j)) if Instant::now() < deadline => {
                job = j;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return Err(()),
        }
    }
}

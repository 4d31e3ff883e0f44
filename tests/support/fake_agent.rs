//! The fake agent for integration tests: a script of steps, chosen per invocation, that
//! can speak each real CLI's output format, flood output, sleep, ignore SIGTERM, leave a
//! grandchild holding stdout, exit with a code and report what it was given.
//!
//! Usage: `fake-agent [anything...]` with `FAKE_AGENT_SCRIPT=<file>`. The script holds
//! sections `=== call N` (1-based invocation number) and `=== default`; the invocation
//! number is counted in `<file>.calls`. Each line of a section is one step:
//!
//! say TEXT | err TEXT | raw TEXT (stdout, no newline) | json JSON
//! codex-reply TEXT | claude-reply TEXT | gemini-reply TEXT   (the CLI's JSON events)
//! codex-error MESSAGE | claude-error STATUS MESSAGE | claude-retry STATUS
//! rate-limit-event STATUS [RESETS_IN_SECONDS [UTILIZATION [WINDOW]]]
//! sleep SECONDS | wait-for PATH (until the file exists, at most 120 s) | exit CODE
//! ignore-term | grandchild SECONDS
//! flood BYTES [LINE_LEN] | longline BYTES | repeat CHAR BYTES (no newline) | invalid-utf8
//! record PATH (appends {"argv":[...],"env":{...},"cwd":...} as one JSON line)
//! write PATH TEXT | append PATH TEXT | echo-prompt (prints the last argument)
//! signal-self NAME (kill itself with a signal) | stdin-to PATH (copies stdin to a file)
//! setsid-child SECONDS PATH (a child in a session of its own, holding stdout)
//! double-fork SECONDS PATH (a daemon: setsid and a second fork, stdio on /dev/null)
//! double-fork-stdout SECONDS PATH (the same daemon, still holding stdout)
//! (each appends the pid of the process that stays behind to PATH, one per line)
//! git ARGS... (runs git in the working directory; fails the agent if git does)
//! run ARGV (shell words, no shell: runs it, prints `ran: <its stdout>` and `exit: <code>`;
//!   how a test agent calls `looper ask --wait`)
//!
//! `${NAME}` in a step is replaced by the environment variable NAME (`${LOOPER_LABEL}`).

use std::io::Write;
use std::time::Duration;

fn out(bytes: &[u8]) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(bytes);
    let _ = o.flush();
}

fn line(text: &str) {
    out(format!("{text}\n").as_bytes());
}

fn unescape(s: &str) -> String {
    s.replace("\\n", "\n").replace("\\t", "\t")
}

/// A descendant that leaves the agent's process group and outlives it, as daemons and some
/// MCP servers do: `setsid` (a new session and group), optionally after a second fork so it
/// is orphaned at once, optionally closing its stdio. It appends its pid to `record` and
/// sleeps for `secs`.
fn daemon(secs: f64, record: &str, double_fork: bool, keep_stdout: bool) {
    // SAFETY: the fake agent is single-threaded; the children only call async-signal-safe
    // functions until they have become processes of their own (then plain Rust is fine).
    unsafe {
        let pid = libc::fork();
        if pid != 0 {
            if double_fork && pid > 0 {
                let mut status = 0;
                libc::waitpid(pid, &mut status, 0);
            }
            return;
        }
        libc::setsid();
        if double_fork && libc::fork() != 0 {
            libc::_exit(0);
        }
    }
    if !keep_stdout && let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: plain descriptor duplication in a single-threaded process.
        unsafe {
            libc::dup2(null.as_raw_fd(), 1);
            libc::dup2(null.as_raw_fd(), 2);
        }
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(record)
    {
        let _ = writeln!(f, "{}", std::process::id());
    }
    std::thread::sleep(Duration::from_secs_f64(secs));
    std::process::exit(0);
}

/// `${NAME}` replaced by the environment variable NAME (empty when unset).
fn expand(step: &str) -> String {
    let mut out = String::new();
    let mut rest = step;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        match rest[start + 2..].find('}') {
            Some(end) => {
                let name = &rest[start + 2..start + 2 + end];
                out.push_str(&std::env::var(name).unwrap_or_default());
                rest = &rest[start + 3 + end..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn session_from_argv(argv: &[String]) -> Option<String> {
    argv.windows(2)
        .find(|w| w[0] == "--session-id" || w[0] == "--resume")
        .map(|w| w[1].clone())
        .or_else(|| {
            argv.windows(2)
                .find(|w| w[0] == "resume")
                .map(|w| w[1].clone())
        })
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let Ok(script_path) = std::env::var("FAKE_AGENT_SCRIPT") else {
        eprintln!("fake-agent: FAKE_AGENT_SCRIPT is not set");
        std::process::exit(2);
    };
    let script = std::fs::read_to_string(&script_path).unwrap_or_default();
    let counter = format!("{script_path}.calls");
    let call: usize = std::fs::read_to_string(&counter)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
        + 1;
    let _ = std::fs::write(&counter, call.to_string());

    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    for l in script.lines() {
        if let Some(name) = l.strip_prefix("=== ") {
            sections.push((name.trim().to_string(), vec![]));
        } else if let Some(last) = sections.last_mut() {
            last.1.push(l.to_string());
        } else {
            sections.push(("default".into(), vec![l.to_string()]));
        }
    }
    let wanted = format!("call {call}");
    let steps = sections
        .iter()
        .find(|(n, _)| *n == wanted)
        .or_else(|| sections.iter().find(|(n, _)| n == "default"))
        .map(|(_, s)| s.clone())
        .unwrap_or_default();

    let session = session_from_argv(&argv).unwrap_or_else(|| format!("fake-session-{call}"));
    let prompt = argv.last().cloned().unwrap_or_default();
    for step in steps {
        let step = expand(step.trim_end());
        let step = step.as_str();
        if step.is_empty() || step.starts_with('#') {
            continue;
        }
        let (cmd, rest) = step.split_once(' ').unwrap_or((step, ""));
        match cmd {
            "say" => line(&unescape(rest)),
            "err" => {
                let _ = writeln!(std::io::stderr(), "{}", unescape(rest));
            }
            "raw" => out(unescape(rest).as_bytes()),
            "json" => line(rest),
            "codex-reply" => {
                line(&format!(
                    r#"{{"type":"thread.started","thread_id":"{session}"}}"#
                ));
                line(r#"{"type":"turn.started"}"#);
                line(&serde_json::json!({"type":"item.completed","item":{"id":"item_0","type":"agent_message","text":unescape(rest)}}).to_string());
                line(
                    r#"{"type":"turn.completed","usage":{"input_tokens":100,"cached_input_tokens":10,"output_tokens":20}}"#,
                );
            }
            "codex-error" => {
                line(&format!(
                    r#"{{"type":"thread.started","thread_id":"{session}"}}"#
                ));
                line(&serde_json::json!({"type":"error","message":rest}).to_string());
                line(
                    &serde_json::json!({"type":"turn.failed","error":{"message":rest}}).to_string(),
                );
            }
            "claude-reply" => {
                line(&serde_json::json!({"type":"system","subtype":"init","session_id":session,"cwd":std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),"tools":["Bash"]}).to_string());
                line(&serde_json::json!({"type":"assistant","session_id":session,"message":{"role":"assistant","content":[{"type":"text","text":unescape(rest)}]}}).to_string());
                line(&serde_json::json!({"type":"result","subtype":"success","is_error":false,"result":unescape(rest),"session_id":session,"total_cost_usd":0.01,"usage":{"input_tokens":50,"output_tokens":5}}).to_string());
            }
            "claude-error" => {
                let (status, msg) = rest.split_once(' ').unwrap_or((rest, "API Error"));
                line(
                    &serde_json::json!({"type":"system","subtype":"init","session_id":session})
                        .to_string(),
                );
                line(&serde_json::json!({"type":"result","subtype":"success","is_error":true,"api_error_status":status.parse::<u64>().unwrap_or(500),"result":msg,"session_id":session}).to_string());
            }
            "claude-retry" => {
                line(&serde_json::json!({"type":"system","subtype":"api_retry","attempt":1,"max_retries":10,"retry_delay_ms":1000,"error_status":rest.parse::<u64>().unwrap_or(429),"error":"rate_limit","session_id":session}).to_string());
            }
            "gemini-reply" => {
                line(
                    &serde_json::json!({"type":"init","session_id":session,"model":"fake"})
                        .to_string(),
                );
                line(&serde_json::json!({"type":"message","role":"assistant","content":unescape(rest),"delta":true}).to_string());
                line(&serde_json::json!({"type":"result","status":"success","stats":{"input_tokens":10,"output_tokens":3}}).to_string());
            }
            "rate-limit-event" => {
                let mut parts = rest.split_whitespace();
                let status = parts.next().unwrap_or("rejected");
                let mut info = serde_json::json!({"status": status});
                if let Some(secs) = parts.next().and_then(|s| s.parse::<f64>().ok()) {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs_f64())
                        .unwrap_or(0.0);
                    info["resetsAt"] = serde_json::json!((now + secs).round() as i64);
                }
                // Optionally the window's use (0..1) and its name, as claude 2.1.332 says.
                if let Some(u) = parts.next().and_then(|s| s.parse::<f64>().ok()) {
                    info["utilization"] = serde_json::json!(u);
                }
                if let Some(kind) = parts.next() {
                    info["rateLimitType"] = serde_json::json!(kind);
                }
                line(
                    &serde_json::json!({"type":"rate_limit_event","rate_limit_info":info})
                        .to_string(),
                );
            }
            "sleep" => {
                std::thread::sleep(Duration::from_secs_f64(rest.trim().parse().unwrap_or(0.0)))
            }
            "wait-for" => {
                // A test's go-ahead: holds the agent as long as the test needs, however slow
                // the machine, where a fixed sleep would race.
                let path = std::path::Path::new(rest.trim());
                let give_up = std::time::Instant::now() + Duration::from_secs(120);
                while !path.exists() && std::time::Instant::now() < give_up {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            "exit" => std::process::exit(rest.trim().parse().unwrap_or(0)),
            "ignore-term" => unsafe {
                libc::signal(libc::SIGTERM, libc::SIG_IGN);
            },
            "grandchild" => {
                // A child that inherits stdout and outlives us, ignoring SIGTERM.
                let secs = rest.trim().to_string();
                let _ = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(format!("trap '' TERM; sleep {secs}"))
                    .spawn();
            }
            "flood" => {
                let mut parts = rest.split_whitespace();
                let total: usize = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                let len: usize = parts
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(100)
                    .max(2);
                let mut lineb = vec![b'x'; len - 1];
                lineb.push(b'\n');
                let block: Vec<u8> = lineb
                    .iter()
                    .copied()
                    .cycle()
                    .take(len * (65536 / len).max(1))
                    .collect();
                let mut o = std::io::stdout().lock();
                let mut left = total;
                while left > 0 {
                    let n = left.min(block.len());
                    if o.write_all(&block[..n]).is_err() {
                        break;
                    }
                    left -= n;
                }
                let _ = o.flush();
            }
            "longline" => {
                let total: usize = rest.trim().parse().unwrap_or(0);
                let block = vec![b'y'; 65536];
                let mut o = std::io::stdout().lock();
                let mut left = total;
                while left > 0 {
                    let n = left.min(block.len());
                    if o.write_all(&block[..n]).is_err() {
                        break;
                    }
                    left -= n;
                }
                let _ = o.flush();
            }
            "repeat" => {
                let (ch, n) = rest.split_once(' ').unwrap_or((rest, "0"));
                let byte = ch.bytes().next().unwrap_or(b'a');
                let block = vec![byte; 65536];
                let mut o = std::io::stdout().lock();
                let mut left: usize = n.trim().parse().unwrap_or(0);
                while left > 0 {
                    let k = left.min(block.len());
                    if o.write_all(&block[..k]).is_err() {
                        break;
                    }
                    left -= k;
                }
                let _ = o.flush();
            }
            "invalid-utf8" => out(b"bad bytes: \xff\xfe\xc3\x28\n"),
            "record" => {
                let env: serde_json::Map<String, serde_json::Value> = std::env::vars()
                    .map(|(k, v)| (k, serde_json::Value::String(v)))
                    .collect();
                let rec = serde_json::json!({
                    "argv": argv,
                    "env": env,
                    "cwd": std::env::current_dir().ok(),
                    "pid": std::process::id(),
                    "pgid": unsafe { libc::getpgrp() },
                });
                if let Ok(mut f) = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(rest.trim())
                {
                    let _ = writeln!(f, "{rec}");
                }
            }
            "write" | "append" => {
                let (path, text) = rest.split_once(' ').unwrap_or((rest, ""));
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .append(cmd == "append")
                    .truncate(cmd == "write")
                    .open(path)
                    .expect("fake-agent: open for write");
                let _ = f.write_all(unescape(text).as_bytes());
            }
            "echo-prompt" => line(&prompt),
            "run" => {
                let words = shlex::split(rest).unwrap_or_default();
                let Some((program, args)) = words.split_first() else {
                    line("exit: no command");
                    continue;
                };
                match std::process::Command::new(program).args(args).output() {
                    Ok(o) => {
                        line(&format!(
                            "ran: {}",
                            String::from_utf8_lossy(&o.stdout).trim_end()
                        ));
                        line(&format!(
                            "exit: {}",
                            o.status.code().map_or("signal".into(), |c| c.to_string())
                        ));
                    }
                    Err(e) => line(&format!("exit: cannot run {program}: {e}")),
                }
            }
            "stdin-to" => {
                let mut buf = Vec::new();
                let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf);
                let _ = std::fs::write(rest.trim(), buf);
            }
            "setsid-child" | "double-fork" | "double-fork-stdout" => {
                let (secs, path) = rest.split_once(' ').unwrap_or((rest, "daemon.pids"));
                daemon(
                    secs.trim().parse().unwrap_or(60.0),
                    path.trim(),
                    cmd != "setsid-child",
                    cmd != "double-fork",
                );
            }
            "signal-self" => {
                let sig = match rest.trim() {
                    "KILL" => libc::SIGKILL,
                    "TERM" => libc::SIGTERM,
                    _ => libc::SIGSEGV,
                };
                unsafe {
                    libc::kill(libc::getpid(), sig);
                }
            }
            "git" => {
                let ok = std::process::Command::new("git")
                    .args(rest.split_whitespace())
                    .status()
                    .is_ok_and(|st| st.success());
                if !ok {
                    eprintln!("fake-agent: git {rest} failed");
                    std::process::exit(98);
                }
            }
            other => {
                eprintln!("fake-agent: unknown step `{other}`");
                std::process::exit(99);
            }
        }
    }
}

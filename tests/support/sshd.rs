//! A real OpenSSH server on 127.0.0.1 for the `--host` tests, entirely in a temp dir: its own
//! host key, one user key per test "host", its own `sshd_config` (a free port,
//! `AuthorizedKeysFile` in the temp dir, `StrictModes no`, no PAM, keys only) and an
//! `ssh_config` for the client (`ssh -F`, so the machine's and the user's ssh settings and
//! keys are never used). Never the machine's own sshd.
//!
//! Each "host" is a Host alias in the client config with its own key; the key's
//! `authorized_keys` entry has a `command=` wrapper that sets that host's PATH and
//! environment and then runs the command the client sent through `/bin/sh -c`, as a login
//! shell would: so the quoting of what `looper --host` sends is tested by a real shell.
//! (A wrapper is used rather than sshd's `SetEnv` or `environment=` because it is the
//! only one of the three that also keeps the test user's own shell start-up files out.)
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SSHD: &str = "/usr/sbin/sshd";

/// One test host: a name (the ssh alias), the PATH its sessions get, extra environment,
/// and shell lines run before the command (`sleep 5` makes a slow host).
pub struct HostSpec {
    pub name: String,
    pub path: Vec<PathBuf>,
    pub env: Vec<(String, String)>,
    pub before: String,
}

impl HostSpec {
    pub fn new(name: &str) -> Self {
        HostSpec {
            name: name.into(),
            path: vec![],
            env: vec![],
            before: String::new(),
        }
    }

    pub fn path(mut self, dir: &Path) -> Self {
        self.path.push(dir.to_path_buf());
        self
    }

    pub fn env(mut self, k: &str, v: &Path) -> Self {
        self.env.push((k.into(), v.display().to_string()));
        self
    }

    pub fn before(mut self, sh: &str) -> Self {
        self.before = sh.into();
        self
    }
}

pub struct Sshd {
    pub dir: tempfile::TempDir,
    child: Child,
    pub port: u16,
    /// The client configuration: `ssh -F <this> <alias>`.
    pub ssh_config: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn keygen(path: &Path) -> String {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "looper-test", "-f"])
        .arg(path));
    std::fs::read_to_string(path.with_extension("pub"))
        .expect("public key")
        .trim()
        .to_string()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn user() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .expect("the current user's name")
}

/// sh single-quoting for the wrapper scripts this module writes itself.
fn sq(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Sshd {
    /// Start the server with these hosts, plus the alias `down` (a port nobody listens on).
    /// `None` (the test is skipped, loudly) where sshd is not installed, except in CI,
    /// where `scripts/test` installs it and its absence is a failure.
    pub fn start(hosts: &[HostSpec]) -> Option<Sshd> {
        if !Path::new(SSHD).exists() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{SSHD} is missing: scripts/test installs openssh-server"
            );
            eprintln!("SSH TESTS SKIPPED: {SSHD} is not installed (scripts/test installs it)");
            return None;
        }
        // As root, sshd insists on its privilege-separation directory.
        if nix::unistd::geteuid().is_root() {
            let _ = std::fs::create_dir_all("/run/sshd");
        }
        let dir = tempfile::Builder::new()
            .prefix("looper-sshd-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        let host_key = d.join("host_key");
        let host_pub = keygen(&host_key);
        let mut authorized = String::new();
        let mut client = String::new();
        let port = free_port();
        for h in hosts {
            let key = d.join(format!("key-{}", h.name));
            let public = keygen(&key);
            let wrapper = d.join(format!("wrap-{}.sh", h.name));
            let mut path: Vec<String> = h.path.iter().map(|p| p.display().to_string()).collect();
            path.extend(["/usr/bin".into(), "/bin".into()]);
            let mut sh = format!("#!/bin/sh\nPATH={}\nexport PATH\n", sq(&path.join(":")));
            for (k, v) in &h.env {
                sh.push_str(&format!("{k}={}\nexport {k}\n", sq(v)));
            }
            sh.push_str("unset SSH_AUTH_SOCK\n");
            sh.push_str(&h.before);
            sh.push('\n');
            sh.push_str("exec /bin/sh -c \"$SSH_ORIGINAL_COMMAND\"\n");
            std::fs::write(&wrapper, sh).expect("wrapper");
            run(Command::new("chmod").arg("755").arg(&wrapper));
            authorized.push_str(&format!(
                "command=\"{}\",no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding {public}\n",
                wrapper.display()
            ));
            client.push_str(&format!(
                "Host {}\n  HostName 127.0.0.1\n  Port {port}\n  IdentityFile {}\n\n",
                h.name,
                key.display()
            ));
        }
        client.push_str(&format!(
            "Host down\n  HostName 127.0.0.1\n  Port {}\n\n",
            free_port()
        ));
        client.push_str(&format!(
            "Host *\n  User {}\n  IdentitiesOnly yes\n  IdentityAgent none\n  UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  LogLevel ERROR\n",
            user(),
            d.join("known_hosts").display()
        ));
        std::fs::write(
            d.join("known_hosts"),
            format!("[127.0.0.1]:{port} {host_pub}\n"),
        )
        .expect("known_hosts");
        std::fs::write(d.join("authorized_keys"), authorized).expect("authorized_keys");
        let ssh_config = d.join("ssh_config");
        std::fs::write(&ssh_config, client).expect("ssh_config");
        let server = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
             StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nPrintMotd no\n\
             MaxStartups 200\nMaxSessions 50\nLogLevel ERROR\n",
            host_key.display(),
            d.join("sshd.pid").display(),
            d.join("authorized_keys").display()
        );
        std::fs::write(d.join("sshd_config"), server).expect("sshd_config");
        let log = std::fs::File::create(d.join("sshd.log")).expect("log");
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start sshd");
        let mut sshd = Sshd {
            dir,
            child,
            port,
            ssh_config,
        };
        let end = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(st)) = sshd.child.try_wait() {
                panic!(
                    "sshd exited ({st}): {}",
                    std::fs::read_to_string(sshd.dir.path().join("sshd.log")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < end, "sshd did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(sshd)
    }

    /// hosts.toml for a looper under `xdg_config`: ssh with this client config, and the
    /// given `[hosts.*]` tables (TOML text).
    pub fn write_hosts_toml(&self, xdg_config: &Path, tables: &str) {
        let dir = xdg_config.join("agent-looper");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(
            dir.join("hosts.toml"),
            format!(
                "[ssh]\ncommand = [\"ssh\", \"-F\", {:?}]\nconnect_timeout_seconds = 5\n\n{tables}",
                self.ssh_config.display().to_string()
            ),
        )
        .expect("hosts.toml");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

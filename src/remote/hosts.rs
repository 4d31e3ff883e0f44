//! Which machines `--host` means: the flags every remote-capable subcommand shares, and the
//! hosts list in `${XDG_CONFIG_HOME:-~/.config}/agent-looper/hosts.toml` (D34).
//!
//! ```toml
//! [ssh]
//! command = ["ssh"]              # the client and options of your own (default: ssh)
//! connect_timeout_seconds = 10   # ssh's ConnectTimeout (default 10)
//!
//! [hosts.buildbox]
//! destination = "me@buildbox"    # what ssh connects to (default: the table's name)
//! looper = "~/.cargo/bin/looper" # the remote program (default: looper on the remote PATH)
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};

/// The host name that means this machine, run without ssh.
pub const LOCAL: &str = "local";
/// ssh's ConnectTimeout when hosts.toml does not set one.
pub const DEFAULT_CONNECT_TIMEOUT: u64 = 10;
/// How long a command that answers at once may take on one host.
pub const DEFAULT_HOST_TIMEOUT: Duration = Duration::from_secs(30);

/// `--host`, `--all-hosts`, `--host-timeout`: flattened into each subcommand that can run on
/// other machines. Forwarding strips exactly these flags (`remote::forward`).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct HostArgs {
    /// Run this on another machine through ssh: a name from hosts.toml or an ssh destination
    /// (repeatable; `local` is this machine). The results are merged with a host column.
    #[arg(long = "host", value_name = "HOST", value_parser = host_arg)]
    pub hosts: Vec<String>,
    /// Every host listed in hosts.toml.
    #[arg(long)]
    pub all_hosts: bool,
    /// Seconds a host may take to answer a command that answers at once (not `logs -f`,
    /// not `control stop --wait`); 0 waits as long as ssh does [default: 30].
    #[arg(
        long,
        value_name = "SECONDS",
        value_parser = timeout_arg,
        allow_negative_numbers = true
    )]
    pub host_timeout: Option<Duration>,
}

impl HostArgs {
    /// Did the invocation ask for other machines?
    pub fn is_remote(&self) -> bool {
        !self.hosts.is_empty() || self.all_hosts
    }

    /// The per-host deadline for a command that answers at once.
    pub fn deadline(&self) -> Option<Duration> {
        match self.host_timeout {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => Some(DEFAULT_HOST_TIMEOUT),
        }
    }
}

/// The long flags of [`HostArgs`] and whether each takes a value.
pub const FLAGS: [(&str, bool); 3] = [("host", true), ("all-hosts", false), ("host-timeout", true)];

fn host_arg(s: &str) -> std::result::Result<String, String> {
    check_destination(s)?;
    Ok(s.to_string())
}

fn timeout_arg(s: &str) -> std::result::Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number"))?;
    if !v.is_finite() || !(0.0..=crate::config::schema::MAX_SECONDS).contains(&v) {
        return Err(format!(
            "must be between 0 and {} seconds",
            crate::config::schema::MAX_SECONDS
        ));
    }
    Duration::try_from_secs_f64(v).map_err(|e| e.to_string())
}

/// A destination ssh is given as one argument after `--`: it must not look like an option
/// (`-oProxyCommand=...`), be empty or carry control characters or spaces.
pub fn check_destination(s: &str) -> std::result::Result<(), String> {
    if s.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if s.starts_with('-') {
        return Err("must not start with `-`".into());
    }
    if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must not contain spaces or control characters".into());
    }
    Ok(())
}

/// One machine to run on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// What the host column shows: the name given to `--host` (or the hosts.toml table).
    pub name: String,
    /// The ssh destination; `None` is this machine (no ssh).
    pub destination: Option<String>,
    /// The looper program on that machine.
    pub looper: String,
}

/// The hosts of one invocation and how to reach them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hosts {
    /// The ssh client and its options, before ours.
    pub ssh: Vec<String>,
    pub connect_timeout: u64,
    pub list: Vec<Host>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostsFile {
    #[serde(default)]
    ssh: SshSection,
    #[serde(default)]
    hosts: BTreeMap<String, HostEntry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SshSection {
    command: Option<Vec<String>>,
    connect_timeout_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostEntry {
    destination: Option<String>,
    looper: Option<String>,
}

/// `${XDG_CONFIG_HOME:-~/.config}/agent-looper/hosts.toml`.
pub fn hosts_file(env: &BTreeMap<String, String>) -> Option<PathBuf> {
    env.get("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| env.get("HOME").map(|h| Path::new(h).join(".config")))
        .map(|d| d.join("agent-looper").join("hosts.toml"))
}

fn read_file(path: &Path) -> Result<HostsFile> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HostsFile::default()),
        Err(e) => return Err(Error::io("cannot read", path, e)),
    };
    toml::from_str(&text).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))
}

/// The hosts `args` name, resolved through hosts.toml (a name not listed there is an ssh
/// destination as given).
pub fn select(args: &HostArgs, env: &BTreeMap<String, String>) -> Result<Hosts> {
    let path = hosts_file(env);
    let file = match &path {
        Some(p) => read_file(p)?,
        None => HostsFile::default(),
    };
    resolve(args, file, path.as_deref())
}

fn resolve(args: &HostArgs, file: HostsFile, path: Option<&Path>) -> Result<Hosts> {
    let shown = || {
        path.map(|p| p.display().to_string())
            .unwrap_or_else(|| "hosts.toml".into())
    };
    let ssh = file.ssh.command.unwrap_or_else(|| vec!["ssh".into()]);
    if ssh.first().is_none_or(|p| p.trim().is_empty()) {
        return Err(Error::Usage(format!(
            "{}: ssh.command: expected a non-empty array naming the ssh client",
            shown()
        )));
    }
    let connect_timeout = file
        .ssh
        .connect_timeout_seconds
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT)
        .max(1);
    let mut names: Vec<String> = Vec::new();
    if args.all_hosts {
        if file.hosts.is_empty() {
            return Err(Error::Usage(format!(
                "--all-hosts: no hosts are listed in {} (add a [hosts.NAME] table)",
                shown()
            )));
        }
        names.extend(file.hosts.keys().cloned());
    }
    names.extend(args.hosts.iter().cloned());
    let mut list: Vec<Host> = Vec::new();
    for name in names {
        if list.iter().any(|h| h.name == name) {
            continue;
        }
        let entry = file.hosts.get(&name);
        let destination = match entry.and_then(|e| e.destination.clone()) {
            Some(d) => Some(d),
            None if name == LOCAL => None,
            None => Some(name.clone()),
        };
        if let Some(d) = &destination {
            check_destination(d).map_err(|why| {
                Error::Usage(format!("{}: hosts.{name}.destination: {why}", shown()))
            })?;
        }
        let looper = entry
            .and_then(|e| e.looper.clone())
            .unwrap_or_else(|| "looper".into());
        if looper.trim().is_empty() {
            return Err(Error::Usage(format!(
                "{}: hosts.{name}.looper: expected a program name or path",
                shown()
            )));
        }
        list.push(Host {
            name,
            destination,
            looper,
        });
    }
    Ok(Hosts {
        ssh,
        connect_timeout,
        list,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(hosts: &[&str], all: bool) -> HostArgs {
        HostArgs {
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
            all_hosts: all,
            host_timeout: None,
        }
    }

    #[test]
    fn names_resolve_through_the_file_and_others_are_destinations() {
        let file: HostsFile = toml::from_str(
            "[ssh]\ncommand = [\"ssh\", \"-F\", \"/tmp/cfg\"]\nconnect_timeout_seconds = 3\n\
             [hosts.build]\ndestination = \"me@build.example\"\nlooper = \"~/.cargo/bin/looper\"\n\
             [hosts.vm]\n",
        )
        .expect("parse");
        let h = resolve(
            &args(&["build", "other@box", "local", "build"], false),
            file,
            None,
        )
        .expect("resolve");
        assert_eq!(h.ssh, ["ssh", "-F", "/tmp/cfg"]);
        assert_eq!(h.connect_timeout, 3);
        assert_eq!(
            h.list,
            vec![
                Host {
                    name: "build".into(),
                    destination: Some("me@build.example".into()),
                    looper: "~/.cargo/bin/looper".into()
                },
                Host {
                    name: "other@box".into(),
                    destination: Some("other@box".into()),
                    looper: "looper".into()
                },
                Host {
                    name: "local".into(),
                    destination: None,
                    looper: "looper".into()
                },
            ]
        );
    }

    #[test]
    fn all_hosts_lists_the_file_and_needs_one() {
        let file: HostsFile = toml::from_str("[hosts.a]\n[hosts.b]\n").expect("parse");
        let h = resolve(&args(&[], true), file, None).expect("resolve");
        let names: Vec<&str> = h.list.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        let e = resolve(&args(&[], true), HostsFile::default(), None).expect_err("none");
        assert!(e.to_string().contains("no hosts are listed"), "{e}");
    }

    #[test]
    fn option_like_destinations_and_unknown_keys_are_refused() {
        assert!(check_destination("-oProxyCommand=touch /tmp/x").is_err());
        assert!(check_destination("a b").is_err());
        assert!(check_destination("me@host").is_ok());
        let file: HostsFile =
            toml::from_str("[hosts.x]\ndestination = \"-oProxyCommand=x\"\n").expect("parse");
        assert!(resolve(&args(&["x"], false), file, None).is_err());
        let e = toml::from_str::<HostsFile>("[hosts.x]\ndestinaton = \"y\"\n").expect_err("typo");
        assert!(e.to_string().contains("destination"), "{e}");
    }
}

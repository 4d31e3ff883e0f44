//! The machine-wide account records (issue 18, D32): what the loopers on this machine have
//! learned about an account's limits, one file per account under
//! `${XDG_STATE_HOME:-~/.local/state}/agent-looper/accounts/<id>.json`, shared through the
//! file system with a lock and no daemon.
//!
//! An account is what selects a CLI's login: claude's `CLAUDE_CONFIG_DIR` (or
//! `$HOME/.claude`), codex's `CODEX_HOME` (or `$HOME/.codex`), gemini's `GEMINI_CLI_HOME`
//! (or `$HOME`) `/.gemini`, plus a credential given in the environment (an API key selects
//! the login before any config directory does; only a hash of it is kept), or an explicit
//! `account = "name"` of the agent table (`config::account` finds it). The file name is a
//! hash of that identity.
//!
//! Writers take `<id>.lock` (`flock`, through std's `File::lock`: the kernel drops it when a
//! holder dies, so a killed looper never leaves the account locked), read the record, merge
//! what they learned and replace the file atomically. Readers (every looper, before every
//! prompt) read without the lock: a replaced file is always whole.

use std::fs::OpenOptions;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{fsio, time};
use crate::error::{Error, Result};

pub const ACCOUNTS_SCHEMA_VERSION: u32 = 1;

/// Account files are a few KiB; anything much larger is not ours.
const MAX_ACCOUNT_FILE: u64 = 1 << 20;

/// At most this many windows are kept per account (a CLI reports a handful).
const MAX_WINDOWS: usize = 16;

/// An account: how it is shown, and the id its file is named by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// `claude:/home/me/.claude`, `codex:/srv/codex-home+key#1a2b3c4d`, or the explicit name.
    pub name: String,
    /// The first 16 hex digits of the identity's SHA-256.
    pub id: String,
}

fn short_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Account {
    /// The account an agent table names with `account = "..."`.
    pub fn named(name: &str) -> Account {
        Account {
            name: name.to_string(),
            id: short_hash(&format!("name:{name}"))[..16].to_string(),
        }
    }

    /// The account of a login identity (`claude:/home/me/.claude`, with `+key#...` when a
    /// credential selects it): `config::account` says which identity an agent uses.
    pub fn of_login(identity: String) -> Account {
        Account {
            id: short_hash(&identity)[..16].to_string(),
            name: identity,
        }
    }
}

/// A short hash of credentials: it tells two keys apart and says nothing else.
pub fn credential_hash(text: &str) -> String {
    short_hash(text)[..8].to_string()
}

/// One reading of an account's usage window (state.json's `rate_limits`, and the account
/// files' `windows`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct WindowRecord {
    /// The agent table that reported it (state.json).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// claude's `five_hour`, `seven_day`, ...; codex's `primary`, `secondary`.
    pub window: String,
    pub window_minutes: Option<u64>,
    /// How much of the window is used, 0..100.
    pub used_percent: Option<f64>,
    #[serde(with = "time::opt")]
    pub resets_at: Option<DateTime<Utc>>,
    /// claude's verdict: `allowed`, `allowed_warning`, `rejected`.
    pub status: Option<String>,
    /// When it was read.
    #[serde(with = "time::opt")]
    pub at: Option<DateTime<Utc>>,
    /// The looper (its label) that read it (account files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seen_by: Option<String>,
}

/// Which looper learned something about an account.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Witness {
    pub label: String,
    pub run_dir: PathBuf,
    pub pid: u32,
}

/// An account known to be limited until a time.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Limit {
    #[serde(with = "time::opt")]
    pub until: Option<DateTime<Utc>>,
    /// What was seen: the agent's own error, bounded.
    pub reason: String,
    pub seen_by: Witness,
    #[serde(with = "time::opt")]
    pub seen_at: Option<DateTime<Utc>>,
}

/// One account file.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct AccountRecord {
    pub schema_version: u32,
    pub account: String,
    pub limit: Option<Limit>,
    pub windows: Vec<WindowRecord>,
    #[serde(with = "time::opt")]
    pub updated_at: Option<DateTime<Utc>>,
}

/// What an attempt taught a looper about its account.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AccountUpdate {
    pub windows: Vec<WindowRecord>,
    /// The account is limited until then (a later limit already recorded is kept).
    pub limit: Option<Limit>,
    /// An attempt that started then succeeded: a limit recorded before it is over.
    pub cleared_by_success_since: Option<DateTime<Utc>>,
}

impl AccountUpdate {
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty() && self.limit.is_none() && self.cleared_by_success_since.is_none()
    }
}

impl AccountRecord {
    /// Merge `update` in, as of `now`: windows by name (the newer reading wins; readings of
    /// windows that have reset are dropped), the later of two limits, and a limit recorded
    /// before a success is cleared.
    pub fn merge(&mut self, update: &AccountUpdate, now: DateTime<Utc>) {
        for w in &update.windows {
            match self.windows.iter_mut().find(|x| x.window == w.window) {
                Some(x) if x.at <= w.at => *x = w.clone(),
                Some(_) => {}
                None => self.windows.push(w.clone()),
            }
        }
        self.windows.retain(|w| w.resets_at.is_none_or(|r| r > now));
        if self.windows.len() > MAX_WINDOWS {
            self.windows.sort_by_key(|w| std::cmp::Reverse(w.at));
            self.windows.truncate(MAX_WINDOWS);
        }
        if let (Some(since), Some(old)) = (update.cleared_by_success_since, &self.limit)
            && old.seen_at.is_some_and(|at| at < since)
        {
            self.limit = None;
        }
        if let Some(new) = &update.limit {
            let keep_old = self
                .limit
                .as_ref()
                .is_some_and(|old| old.until > new.until && old.until.is_some_and(|u| u > now));
            if !keep_old {
                self.limit = Some(new.clone());
            }
        }
        if self
            .limit
            .as_ref()
            .is_some_and(|l| l.until.is_none_or(|u| u <= now))
        {
            self.limit = None;
        }
        self.updated_at = Some(now);
    }
}

/// The file of one account in `dir`.
#[derive(Clone, Debug)]
pub struct AccountFile {
    pub dir: PathBuf,
    pub account: Account,
}

impl AccountFile {
    pub fn path(&self) -> PathBuf {
        self.dir.join(format!("{}.json", self.account.id))
    }

    fn lock_path(&self) -> PathBuf {
        self.dir.join(format!("{}.lock", self.account.id))
    }

    /// The record as it is now; an account nobody wrote yet is an empty record.
    pub fn read(&self) -> Result<AccountRecord> {
        let path = self.path();
        match fsio::read_regular(&path, MAX_ACCOUNT_FILE) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::io("cannot parse", &path, std::io::Error::other(e))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AccountRecord {
                schema_version: ACCOUNTS_SCHEMA_VERSION,
                account: self.account.name.clone(),
                ..AccountRecord::default()
            }),
            Err(e) => Err(Error::io("cannot read", &path, e)),
        }
    }

    /// Merge `update` under the account's lock and replace the file; returns the record as
    /// written.
    pub fn update(&self, update: &AccountUpdate, now: DateTime<Utc>) -> Result<AccountRecord> {
        // Owner-only, like the run registry's directory; another looper may be making it
        // at the same moment (`recursive` takes an existing one as made).
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| Error::io("cannot create", &self.dir, e))?;
        let lock_path = self.lock_path();
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| Error::io("cannot open the account lock", &lock_path, e))?;
        // Held until `lock` is dropped at the end of this function.
        lock.lock()
            .map_err(|e| Error::io("cannot take the account lock", &lock_path, e))?;
        // A record that cannot be parsed (a newer schema, a torn disk) is started afresh:
        // the next limit anyone sees is worth more than the old file.
        let mut record = self.read().unwrap_or_default();
        record.schema_version = ACCOUNTS_SCHEMA_VERSION;
        record.account = self.account.name.clone();
        record.merge(update, now);
        let mut bytes = serde_json::to_vec_pretty(&record).unwrap_or_default();
        bytes.push(b'\n');
        fsio::write_atomic(&self.path(), &bytes, false)?;
        drop(lock);
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        time::parse(s).expect("time")
    }

    fn window(name: &str, used: f64, at_s: &str, resets: &str) -> WindowRecord {
        WindowRecord {
            window: name.into(),
            used_percent: Some(used),
            at: Some(at(at_s)),
            resets_at: Some(at(resets)),
            ..WindowRecord::default()
        }
    }

    fn limit(until: &str, seen: &str) -> Limit {
        Limit {
            until: Some(at(until)),
            reason: "429".into(),
            seen_by: Witness::default(),
            seen_at: Some(at(seen)),
        }
    }

    #[test]
    fn merging_keeps_the_newest_reading_and_the_later_limit() {
        let now = at("2026-12-01T10:00:00Z");
        let mut r = AccountRecord::default();
        r.merge(
            &AccountUpdate {
                windows: vec![
                    window(
                        "five_hour",
                        40.0,
                        "2026-12-01T09:59:00Z",
                        "2026-12-01T12:00:00Z",
                    ),
                    window("old", 99.0, "2026-12-01T05:00:00Z", "2026-12-01T09:00:00Z"),
                ],
                limit: Some(limit("2026-12-01T11:00:00Z", "2026-12-01T09:59:00Z")),
                ..AccountUpdate::default()
            },
            now,
        );
        // A window that has reset says nothing any more.
        assert_eq!(r.windows.len(), 1);
        // An older reading does not replace a newer one; a newer one does.
        let older = window(
            "five_hour",
            10.0,
            "2026-12-01T09:00:00Z",
            "2026-12-01T12:00:00Z",
        );
        let newer = window(
            "five_hour",
            80.0,
            "2026-12-01T09:59:30Z",
            "2026-12-01T12:00:00Z",
        );
        r.merge(
            &AccountUpdate {
                windows: vec![older],
                ..AccountUpdate::default()
            },
            now,
        );
        assert_eq!(r.windows[0].used_percent, Some(40.0));
        r.merge(
            &AccountUpdate {
                windows: vec![newer],
                // An earlier limit does not shorten a later one.
                limit: Some(limit("2026-12-01T10:30:00Z", "2026-12-01T09:59:30Z")),
                ..AccountUpdate::default()
            },
            now,
        );
        assert_eq!(r.windows[0].used_percent, Some(80.0));
        assert_eq!(
            r.limit.as_ref().and_then(|l| l.until),
            Some(at("2026-12-01T11:00:00Z"))
        );
        // A success that started after the limit was seen ends it; one that started before
        // does not.
        r.merge(
            &AccountUpdate {
                cleared_by_success_since: Some(at("2026-12-01T09:00:00Z")),
                ..AccountUpdate::default()
            },
            now,
        );
        assert!(r.limit.is_some());
        r.merge(
            &AccountUpdate {
                cleared_by_success_since: Some(at("2026-12-01T09:59:50Z")),
                ..AccountUpdate::default()
            },
            now,
        );
        assert_eq!(r.limit, None);
        // A limit that is over is dropped.
        r.merge(
            &AccountUpdate {
                limit: Some(limit("2026-12-01T09:30:00Z", "2026-12-01T09:00:00Z")),
                ..AccountUpdate::default()
            },
            now,
        );
        assert_eq!(r.limit, None);
    }

    #[test]
    fn updates_from_many_threads_are_all_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = AccountFile {
            dir: dir.path().join("accounts"),
            account: Account {
                name: "team".into(),
                id: "0123456789abcdef".into(),
            },
        };
        let now = Utc::now();
        std::thread::scope(|s| {
            for i in 0..8 {
                let file = file.clone();
                s.spawn(move || {
                    let w = WindowRecord {
                        window: format!("w{i}"),
                        used_percent: Some(f64::from(i)),
                        at: Some(now),
                        resets_at: Some(now + chrono::TimeDelta::hours(1)),
                        ..WindowRecord::default()
                    };
                    file.update(
                        &AccountUpdate {
                            windows: vec![w],
                            ..AccountUpdate::default()
                        },
                        now,
                    )
                    .expect("update");
                });
            }
        });
        let r = file.read().expect("read");
        assert_eq!(r.windows.len(), 8, "{r:?}");
        assert_eq!(r.account, "team");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file.path())
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Nobody wrote it yet: an empty record, not an error.
        let other = AccountFile {
            account: Account {
                name: "x".into(),
                id: "ffffffffffffffff".into(),
            },
            ..file
        };
        assert_eq!(other.read().expect("empty").limit, None);
    }
}

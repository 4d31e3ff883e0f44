//! The dispatcher's side of quota-aware scheduling and of the CLI a run uses (issue 18):
//! the account's shared record and the machine's spending today, read for the engine; what
//! an attempt learned about its account, told to this run's records and to every looper on
//! the machine; the CLIs' own retries, recorded as they happen; and a CLI that changed on
//! disk between loops.

use chrono::{DateTime, Utc};

use super::*;
use crate::agents::Stream;
use crate::agents::output::{self, RateLimitReading};
use crate::engine::{AccountFacts, AccountLimit, DailyUsage, ErrorClass, WindowFacts};
use crate::records::accounts::{AccountRecord, AccountUpdate, Limit, WindowRecord, Witness};

/// How much of a codex rollout is read for its rate-limit figures: its latest records.
const ROLLOUT_TAIL: u64 = 256 * 1024;

fn epoch(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

fn from_epoch(secs: f64) -> Option<DateTime<Utc>> {
    if !secs.is_finite() {
        return None;
    }
    DateTime::from_timestamp_millis((secs * 1000.0) as i64)
}

impl Dispatcher {
    /// The account's record, as the engine judges it (`Effect::CheckAccount`).
    pub(super) fn check_account(&mut self) -> Input {
        let Some(accounts) = self.ports.accounts.as_mut() else {
            return Input::AccountChecked(Err("the run has no account record".into()));
        };
        let now = Utc::now();
        match accounts.read() {
            Ok(record) => {
                let live = record
                    .limit
                    .as_ref()
                    .filter(|l| l.until.is_some_and(|u| u > now));
                self.limit_seen_at = live.and_then(|l| l.seen_at);
                Input::AccountChecked(Ok(self.account_facts(&record, now)))
            }
            Err(e) => {
                self.account_trouble(&format!("cannot read the account record: {e}"));
                Input::AccountChecked(Err(e))
            }
        }
    }

    /// Said once a run: the shared record is a help, never a reason to stop.
    fn account_trouble(&mut self, what: &str) {
        if !std::mem::replace(&mut self.said_account_error, true) {
            self.say(&format!("looper: warning: {what}; going on without it"));
        }
    }

    fn account_facts(&self, r: &AccountRecord, now: DateTime<Utc>) -> AccountFacts {
        let limit = r.limit.as_ref().and_then(|l| {
            let w = &l.seen_by;
            let run = w
                .run_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Some(AccountLimit {
                until: epoch(l.until?),
                reason: crate::text::sanitize_line(&l.reason).into_owned(),
                seen_by: format!(
                    "looper {} (run {run}, pid {})",
                    crate::text::sanitize_line(&w.label),
                    w.pid
                ),
                own: w.run_dir == self.run_dir,
            })
        });
        AccountFacts {
            account: self
                .account
                .as_ref()
                .map_or_else(|| r.account.clone(), |a| a.name.clone()),
            now: epoch(now),
            limit,
            windows: r
                .windows
                .iter()
                .filter_map(|w| {
                    Some(WindowFacts {
                        window: w.window.clone(),
                        used_percent: w.used_percent?,
                        resets_at: epoch(w.resets_at?),
                    })
                })
                .collect(),
        }
    }

    /// What the machine spent today (`Effect::CheckDailyBudget`).
    pub(super) fn check_daily(&mut self) -> Input {
        let Some(daily) = self.ports.daily.as_mut() else {
            return Input::DailyChecked(Err("no daily budget".into()));
        };
        let today = daily.today();
        let now = Utc::now();
        let next_day_in = today
            .end
            .map_or(0.0, |end| (epoch(end) - epoch(now)).max(0.0));
        Input::DailyChecked(Ok(DailyUsage {
            tokens: today.tokens,
            cost_usd: today.cost_usd,
            runs: today.runs,
            next_day_in,
        }))
    }

    /// The windows a codex json run's thread reported: `exec --json` prints none of them,
    /// its rollout has them (`$CODEX_HOME/sessions/.../rollout-*-<thread>.jsonl`).
    fn codex_rollout_windows(&mut self, thread: &str) -> Vec<RateLimitReading> {
        let agent = &self.cfg.settings.agent;
        let path = match &self.rollout {
            Some((t, p)) if t == thread => Some(p.clone()),
            _ => {
                let lookup = |k: &str| agent.env.get(k).or_else(|| self.cfg.env.get(k)).cloned();
                let home = lookup("HOME").map(PathBuf::from).unwrap_or_default();
                let sessions = lookup("CODEX_HOME")
                    .map(|h| agent.cwd.join(h))
                    .unwrap_or_else(|| home.join(".codex"))
                    .join("sessions");
                hybrid::codex_rollout(&sessions, thread)
            }
        };
        let Some(path) = path else {
            return vec![];
        };
        self.rollout = Some((thread.to_string(), path.clone()));
        let Ok(bytes) = crate::records::fsio::read_tail(&path, ROLLOUT_TAIL) else {
            return vec![];
        };
        let now = epoch(Utc::now());
        let mut latest = Vec::new();
        for line in String::from_utf8_lossy(&bytes).lines() {
            let facts = output::parse_line(AgentKind::Codex, Stream::Stdout, line, false, now);
            if !facts.rate_limits.is_empty() {
                latest = facts.rate_limits;
            }
        }
        latest
    }

    /// Tell this run's records and the account's record what an attempt learned: the usage
    /// windows it reported, a limit until a reset, or (a success) that a limit is over.
    pub(super) fn learn_from_attempt(&mut self, report: &AttemptReport, sink: &Sink) -> Result<()> {
        if report.dry_run {
            return Ok(());
        }
        let now = Utc::now();
        let agent = self.cfg.settings.agent.clone();
        let mut readings = sink.scanner.rate_limits.clone();
        if agent.kind == AgentKind::Codex
            && agent.interface == Interface::Json
            && readings.is_empty()
            && let Some(thread) = &report.session_id
        {
            readings = self.codex_rollout_windows(thread);
        }
        let windows: Vec<WindowRecord> = readings
            .iter()
            .map(|r| WindowRecord {
                agent: None,
                window: r.window.clone(),
                window_minutes: r.window_minutes,
                used_percent: r.used_percent,
                resets_at: r.resets_at.and_then(from_epoch),
                status: r.status.clone(),
                at: Some(now),
                seen_by: Some(self.cfg.label.clone()),
            })
            .collect();
        if !windows.is_empty() {
            self.ports
                .records
                .append_supervisor(&SupervisorEvent::RateLimits {
                    agent: agent.name.clone(),
                    windows: windows.clone(),
                })?;
        }
        if self.ports.accounts.is_none() {
            return Ok(());
        }
        // A limit with a known end: the provider's delay, or a window reported rejected.
        let mut until: Option<DateTime<Utc>> = None;
        let mut reason = String::new();
        if let Some(e) = report
            .error
            .as_ref()
            .filter(|e| e.class == ErrorClass::RateLimit)
        {
            reason = crate::text::clip_chars(&e.reason, 300);
            until = e
                .retry_after
                .filter(|d| d.is_finite() && *d > 0.0)
                .and_then(|d| from_epoch(epoch(now) + d));
        }
        for w in windows
            .iter()
            .filter(|w| w.status.as_deref() == Some("rejected"))
        {
            if let Some(r) = w.resets_at.filter(|r| *r > now) {
                until = until.max(Some(r));
                if reason.is_empty() {
                    reason = format!("{} window rejected", w.window);
                }
            }
        }
        let limit = until.map(|until| Limit {
            until: Some(until),
            reason: reason.clone(),
            seen_by: Witness {
                label: self.cfg.label.clone(),
                run_dir: self.run_dir.clone(),
                pid: std::process::id(),
            },
            seen_at: Some(now),
        });
        let succeeded =
            report.spawn_error.is_none() && report.exit_code == Some(0) && report.error.is_none();
        let update = AccountUpdate {
            windows,
            limit,
            cleared_by_success_since: if succeeded && self.limit_seen_at.is_some() {
                self.attempt_started
            } else {
                None
            },
        };
        if update.is_empty() {
            return Ok(());
        }
        let written = self
            .ports
            .accounts
            .as_mut()
            .map(|a| a.update(&update))
            .unwrap_or(Ok(()));
        match written {
            Ok(()) => {
                if let (Some(until), Some(account)) = (until, &self.account) {
                    self.ports.records.append_supervisor(
                        &SupervisorEvent::AccountLimitRecorded {
                            account: account.name.clone(),
                            until,
                            reason,
                        },
                    )?;
                }
                if update.cleared_by_success_since.is_some() {
                    self.limit_seen_at = None;
                }
            }
            Err(e) => self.account_trouble(&format!("cannot update the account record: {e}")),
        }
        Ok(())
    }

    /// The agent's CLI retries by itself (while the attempt goes on): recorded at once, so
    /// `looper status` shows it while it lasts.
    pub fn agent_retry(&mut self, retry: AgentRetry) {
        let shown = crate::text::sanitize_line(&retry.text).into_owned();
        self.say(&format!("agent: {shown} (the CLI's own retry)"));
        let event = SupervisorEvent::AgentRetry {
            agent: self.cfg.settings.agent.name.clone(),
            retry,
        };
        let r = self
            .ports
            .records
            .append_supervisor(&event)
            .and_then(|()| self.ports.records.save(Sync::No));
        self.check(r);
    }

    /// Between loops: is the agent's CLI still the file the run started with? One `stat`;
    /// `--version` only when it changed.
    pub(super) fn check_cli(&mut self) -> Result<()> {
        let Some((program, known)) = self.cli.clone() else {
            return Ok(());
        };
        let Some(mut now) = self.ports.cli.stamp(&program) else {
            return Ok(());
        };
        if crate::effects::agent_cli::same_file(&known, &now) {
            return Ok(());
        }
        if self.cfg.settings.agent.kind != AgentKind::Generic {
            // Run as the agent runs it (a node CLI's wrapper), not as the file it resolves to.
            now.version = self.ports.cli.version(&program);
        }
        let word = |v: &Option<String>| v.clone().unwrap_or_else(|| "version unknown".into());
        self.say(&format!(
            "looper: the agent's CLI changed on disk: {} ({}) is now {} ({}); the next attempts run the new one",
            known.path,
            word(&known.version),
            now.path,
            word(&now.version)
        ));
        self.cli = Some((program, now.clone()));
        self.ports
            .records
            .append_supervisor(&SupervisorEvent::AgentCliChanged {
                previous: known,
                current: now,
            })
    }
}

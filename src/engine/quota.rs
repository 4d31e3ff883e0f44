//! Quota-aware scheduling (issue 18, D32): whether the next prompt may go out now, given
//! what every looper on the machine learned about the agent's account (a limit until a
//! reset, the usage of its windows) and what the machine spent today. Pure: the driver reads
//! the shared files and passes the facts in, with the wall-clock time they are judged at.

use serde::Serialize;

/// The longest single hold: the longest wait of any kind (`config::schema::MAX_SECONDS`).
pub const MAX_HOLD_SECONDS: f64 = 1e9;

/// Why a prompt is held back.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum HoldCause {
    /// A looper saw the account limited until a reset.
    AccountLimit,
    /// A usage window is nearly used up (`min_headroom_percent`).
    Headroom,
    /// The machine-wide daily budget is reached.
    DailyBudget,
    /// A cause written by a newer looper.
    #[serde(other)]
    Unknown,
}

impl HoldCause {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A limit recorded for the account.
#[derive(Clone, Debug, PartialEq)]
pub struct AccountLimit {
    /// Epoch seconds.
    pub until: f64,
    /// What the looper that saw it saw.
    pub reason: String,
    /// That looper, as shown (`label` in run `<id>`).
    pub seen_by: String,
    /// This run recorded it: its own retry already waits for it.
    pub own: bool,
}

/// One usage window of the account.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowFacts {
    pub window: String,
    pub used_percent: f64,
    /// Epoch seconds.
    pub resets_at: f64,
}

/// What the account's shared record says, read just now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AccountFacts {
    /// The account, as shown.
    pub account: String,
    /// The wall-clock time of the reading (epoch seconds).
    pub now: f64,
    pub limit: Option<AccountLimit>,
    pub windows: Vec<WindowFacts>,
}

/// What every run on the machine reported today.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DailyUsage {
    pub tokens: u64,
    pub cost_usd: f64,
    /// Runs that spent something today.
    pub runs: usize,
    /// Seconds from now to the start of the next local day.
    pub next_day_in: f64,
}

/// The machine-wide daily budget.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DailyBudget {
    pub max_tokens: Option<u64>,
    pub max_cost_usd: Option<f64>,
    /// Wait for the next day (`true`) or stop the run.
    pub wait: bool,
}

/// A prompt held back: how long, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Hold {
    pub cause: HoldCause,
    pub seconds: f64,
    pub reason: String,
}

/// "3m 20s", "2h 5m": how long a hold lasts, for its reason.
fn span(secs: f64) -> String {
    let s = secs.max(0.0).ceil() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, s % 3600 / 60),
    }
}

/// Whether the next prompt must wait for the account. Another looper's limit holds every
/// prompt until it ends; a window used beyond `100 - headroom` percent holds a new loop
/// (`new_loop`: the loop's first prompt, first attempt) until the window resets, the latest
/// reset of the windows over the line. A limit this run recorded itself is its own retry's
/// business.
pub fn account_hold(f: &AccountFacts, headroom: Option<f64>, new_loop: bool) -> Option<Hold> {
    if let Some(l) = f.limit.as_ref().filter(|l| !l.own && l.until > f.now) {
        return Some(Hold {
            cause: HoldCause::AccountLimit,
            seconds: l.until - f.now,
            reason: format!(
                "account {} is limited, seen by {}: {}; held {} until the reset",
                f.account,
                l.seen_by,
                crate::text::clip_chars(&l.reason, 160),
                span(l.until - f.now)
            ),
        });
    }
    let headroom = headroom.filter(|h| *h > 0.0 && new_loop)?;
    let line = 100.0 - headroom;
    let over: Vec<&WindowFacts> = f
        .windows
        .iter()
        .filter(|w| w.used_percent > line && w.resets_at > f.now)
        .collect();
    let last = over
        .iter()
        .max_by(|a, b| a.resets_at.total_cmp(&b.resets_at))?;
    let names: Vec<String> = over
        .iter()
        .map(|w| format!("{} {}%", w.window, crate::text::format_num(w.used_percent)))
        .collect();
    Some(Hold {
        cause: HoldCause::Headroom,
        seconds: last.resets_at - f.now,
        reason: format!(
            "less than {}% headroom on account {} ({} used); new loops held {} until {} resets",
            crate::text::format_num(headroom),
            f.account,
            names.join(", "),
            span(last.resets_at - f.now),
            last.window
        ),
    })
}

/// What is over the daily budget, worded; `None` while within it.
pub fn daily_exceeded(u: &DailyUsage, b: &DailyBudget) -> Option<String> {
    let runs = match u.runs {
        1 => "1 run".to_string(),
        n => format!("{n} runs"),
    };
    if let Some(max) = b.max_tokens
        && u.tokens >= max
    {
        return Some(format!(
            "daily token budget reached: {} tokens used today on this machine ({runs}; max {max})",
            u.tokens
        ));
    }
    if let Some(max) = b.max_cost_usd
        && u.cost_usd >= max
    {
        return Some(format!(
            "daily cost budget reached: ${:.4} used today on this machine ({runs}; max ${max:.4})",
            u.cost_usd
        ));
    }
    None
}

/// The hold for a reached daily budget that waits: until the next local day.
pub fn daily_hold(u: &DailyUsage, what: String) -> Hold {
    Hold {
        cause: HoldCause::DailyBudget,
        seconds: u.next_day_in.max(0.0),
        reason: format!("{what}; held {} until the next day", span(u.next_day_in)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(limit: Option<(f64, bool)>, windows: &[(&str, f64, f64)]) -> AccountFacts {
        AccountFacts {
            account: "team".into(),
            now: 1000.0,
            limit: limit.map(|(until, own)| AccountLimit {
                until,
                reason: "rate limit event: status=rejected".into(),
                seen_by: "looper a".into(),
                own,
            }),
            windows: windows
                .iter()
                .map(|(w, used, resets)| WindowFacts {
                    window: w.to_string(),
                    used_percent: *used,
                    resets_at: *resets,
                })
                .collect(),
        }
    }

    /// (limit (until, own), windows, headroom, new loop) -> (cause, seconds)
    type Case<'a> = (
        Option<(f64, bool)>,
        Vec<(&'a str, f64, f64)>,
        Option<f64>,
        bool,
        Option<(HoldCause, f64)>,
    );

    #[test]
    fn every_case_of_the_account_hold() {
        use HoldCause::*;
        // (limit (until, own), windows, headroom, new loop) -> (cause, seconds)
        let cases: Vec<Case> = vec![
            // Nothing known: go.
            (None, vec![], Some(10.0), true, None),
            // Another looper's limit holds every prompt, first of a loop or not.
            (
                Some((1300.0, false)),
                vec![],
                None,
                true,
                Some((AccountLimit, 300.0)),
            ),
            (
                Some((1300.0, false)),
                vec![],
                None,
                false,
                Some((AccountLimit, 300.0)),
            ),
            // Our own limit is our retry's; a limit that is over holds nothing.
            (Some((1300.0, true)), vec![], None, true, None),
            (Some((900.0, false)), vec![], None, true, None),
            (Some((1000.0, false)), vec![], None, true, None),
            // Headroom 10: a window over 90% holds a new loop until it resets.
            (
                None,
                vec![("five_hour", 95.0, 1600.0)],
                Some(10.0),
                true,
                Some((Headroom, 600.0)),
            ),
            (
                None,
                vec![("five_hour", 90.0, 1600.0)],
                Some(10.0),
                true,
                None,
            ),
            (
                None,
                vec![("five_hour", 95.0, 1600.0)],
                Some(10.0),
                false,
                None,
            ),
            (None, vec![("five_hour", 95.0, 1600.0)], None, true, None),
            (
                None,
                vec![("five_hour", 95.0, 1600.0)],
                Some(0.0),
                true,
                None,
            ),
            // A window that already reset holds nothing.
            (
                None,
                vec![("five_hour", 99.0, 999.0)],
                Some(10.0),
                true,
                None,
            ),
            // Several over the line: until the last of them resets.
            (
                None,
                vec![
                    ("five_hour", 95.0, 1600.0),
                    ("seven_day", 97.0, 5000.0),
                    ("opus", 50.0, 9000.0),
                ],
                Some(10.0),
                true,
                Some((Headroom, 4000.0)),
            ),
            // A foreign limit wins over the headroom, own limit leaves the headroom to judge.
            (
                Some((1100.0, false)),
                vec![("five_hour", 95.0, 1600.0)],
                Some(10.0),
                true,
                Some((AccountLimit, 100.0)),
            ),
            (
                Some((1100.0, true)),
                vec![("five_hour", 95.0, 1600.0)],
                Some(10.0),
                true,
                Some((Headroom, 600.0)),
            ),
        ];
        for (limit, windows, headroom, new_loop, want) in cases {
            let f = facts(limit, &windows);
            let got = account_hold(&f, headroom, new_loop).map(|h| (h.cause, h.seconds));
            assert_eq!(
                got, want,
                "{limit:?} {windows:?} headroom {headroom:?} new {new_loop}"
            );
        }
        let h = account_hold(&facts(Some((1300.0, false)), &[]), None, true).expect("hold");
        assert_eq!(
            h.reason,
            "account team is limited, seen by looper a: rate limit event: status=rejected; held 5m 0s until the reset"
        );
        let h = account_hold(
            &facts(None, &[("five_hour", 95.5, 8200.0)]),
            Some(10.0),
            true,
        )
        .expect("hold");
        assert_eq!(
            h.reason,
            "less than 10% headroom on account team (five_hour 95.5% used); new loops held 2h 0m until five_hour resets"
        );
    }

    #[test]
    fn every_case_of_the_daily_budget() {
        let usage = |tokens, cost_usd| DailyUsage {
            tokens,
            cost_usd,
            runs: 2,
            next_day_in: 3600.0,
        };
        let budget = |max_tokens, max_cost_usd| DailyBudget {
            max_tokens,
            max_cost_usd,
            wait: true,
        };
        assert_eq!(
            daily_exceeded(&usage(99, 0.0), &budget(Some(100), None)),
            None
        );
        assert_eq!(
            daily_exceeded(&usage(100, 0.0), &budget(Some(100), None)).as_deref(),
            Some(
                "daily token budget reached: 100 tokens used today on this machine (2 runs; max 100)"
            )
        );
        assert_eq!(
            daily_exceeded(&usage(0, 4.99), &budget(None, Some(5.0))),
            None
        );
        assert_eq!(
            daily_exceeded(&usage(0, 5.0), &budget(Some(1000), Some(5.0))).as_deref(),
            Some(
                "daily cost budget reached: $5.0000 used today on this machine (2 runs; max $5.0000)"
            )
        );
        assert_eq!(
            daily_exceeded(&usage(u64::MAX, 1e9), &budget(None, None)),
            None
        );
        let h = daily_hold(&usage(100, 0.0), "x".into());
        assert_eq!((h.cause, h.seconds), (HoldCause::DailyBudget, 3600.0));
        assert_eq!(h.reason, "x; held 1h 0m until the next day");
    }
}

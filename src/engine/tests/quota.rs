//! Table tests of quota-aware scheduling (issue 18): the account's shared record read before
//! every attempt (another looper's limit, the headroom of its windows), the machine-wide
//! daily budget before every loop, and operator commands and signals during those holds.

use super::*;
use crate::engine::quota::HoldCause;

/// The facts of an account record at engine time `now` (epoch = 1000 + engine seconds).
fn account(now: f64, limit: Option<(f64, bool)>, windows: &[(&str, f64, f64)]) -> AccountFacts {
    AccountFacts {
        account: "team".into(),
        now: 1000.0 + now,
        limit: limit.map(|(until, own)| AccountLimit {
            until,
            reason: "rate limit event: status=rejected".into(),
            seen_by: "looper other (run r, pid 7)".into(),
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

fn with_account(f: impl FnOnce(&mut EngineConfig)) -> EngineConfig {
    with(|c| {
        c.account = true;
        c.max_loops = 1;
        f(c);
    })
}

/// The `quota_wait` events: (cause, seconds, prompt index).
fn holds(sim: &Sim) -> Vec<(HoldCause, f64, usize)> {
    sim.events
        .iter()
        .filter_map(|e| match e {
            Event::QuotaWait {
                cause,
                wait_seconds,
                prompt_index,
                ..
            } => Some((*cause, *wait_seconds, *prompt_index)),
            _ => None,
        })
        .collect()
}

#[test]
fn another_loopers_limit_holds_the_prompt_until_its_reset_then_it_goes() {
    let mut sim = Sim::new(with_account(|_| {}));
    // Limited until epoch 1300; checked again after the wait: over.
    sim.accounts = VecDeque::from([
        Ok(account(0.0, Some((1300.0, false)), &[])),
        Ok(account(300.0, None, &[])),
    ]);
    let sim = sim.run();
    assert_eq!(sim.reason(), "max loops reached: 1");
    assert_eq!(holds(&sim), [(HoldCause::AccountLimit, 300.0, 1)]);
    assert_eq!(sim.waits, [(300.0, WaitPurpose::Retry)]);
    assert_eq!(
        sim.account_checks, 2,
        "checked before the attempt and after the hold"
    );
    assert_eq!(sim.calls(), 1);
    // The hold comes before the prompt starts, and the prompt is the loop's first attempt.
    let names = sim.names();
    let hold = names.iter().position(|n| *n == "quota_wait").expect("hold");
    let started = names
        .iter()
        .position(|n| *n == "prompt_started")
        .expect("start");
    assert!(hold < started, "{names:?}");
    assert_eq!(sim.specs[0].attempt, 1);
    let Some(Event::QuotaWait { reason, .. }) =
        sim.events.iter().find(|e| e.name() == "quota_wait")
    else {
        panic!("no hold");
    };
    assert_eq!(
        reason,
        "account team is limited, seen by looper other (run r, pid 7): rate limit event: status=rejected; held 5m 0s until the reset"
    );
}

#[test]
fn what_holds_and_what_does_not() {
    // (facts of the first check, headroom, prompts) -> holds before the first attempt
    let cases: Vec<(&str, AccountFacts, Option<f64>, Vec<HoldCause>)> = vec![
        ("nothing known", account(0.0, None, &[]), Some(10.0), vec![]),
        (
            "own limit: its retry waits for it",
            account(0.0, Some((1300.0, true)), &[]),
            None,
            vec![],
        ),
        (
            "a limit that is over",
            account(0.0, Some((999.0, false)), &[]),
            None,
            vec![],
        ),
        (
            "a window over the headroom line",
            account(0.0, None, &[("five_hour", 95.0, 1600.0)]),
            Some(10.0),
            vec![HoldCause::Headroom],
        ),
        (
            "headroom off",
            account(0.0, None, &[("five_hour", 95.0, 1600.0)]),
            None,
            vec![],
        ),
        (
            "on the line is not over it",
            account(0.0, None, &[("five_hour", 90.0, 1600.0)]),
            Some(10.0),
            vec![],
        ),
    ];
    for (name, facts, headroom, want) in cases {
        let mut sim = Sim::new(with_account(|c| c.min_headroom_percent = headroom));
        sim.accounts = VecDeque::from([Ok(facts)]);
        let sim = sim.run();
        let got: Vec<HoldCause> = holds(&sim).into_iter().map(|h| h.0).collect();
        assert_eq!(got, want, "{name}");
        assert_eq!(sim.calls(), 1, "{name}");
        assert_eq!(sim.reason(), "max loops reached: 1", "{name}");
    }
}

#[test]
fn the_headroom_holds_new_loops_only_not_a_loops_later_prompts() {
    let mut sim = Sim::new(with_account(|c| c.min_headroom_percent = Some(10.0)));
    sim.prompts = 2;
    let high = |now| account(now, None, &[("five_hour", 97.0, 1600.0)]);
    // Prompt 1: held until the reset (600 s), checked again (reset: go); prompt 2 of the
    // same loop goes even at 97%: the loop is under way.
    sim.accounts = VecDeque::from([
        Ok(high(0.0)),
        Ok(account(600.0, None, &[])),
        Ok(high(601.0)),
    ]);
    let sim = sim.run();
    assert_eq!(holds(&sim), [(HoldCause::Headroom, 600.0, 1)]);
    assert_eq!(sim.account_checks, 3);
    assert_eq!(sim.calls(), 2);
}

#[test]
fn every_retry_is_checked_too_and_keeps_its_attempt_number() {
    let mut sim = Sim::new(with_account(|_| {}));
    // Attempt 1 hits a rate limit (retry after 5 s); before attempt 2 another looper's
    // limit is found (until +100 s): held, then attempt 2 runs.
    sim.accounts = VecDeque::from([
        Ok(account(0.0, None, &[])),
        Ok(account(6.0, Some((1106.0, false)), &[])),
        Ok(account(106.0, None, &[])),
    ]);
    let sim = sim
        .attempts([err(ErrorClass::RateLimit, Some(5.0)), ok()])
        .run();
    assert_eq!(sim.reason(), "max loops reached: 1");
    assert_eq!(holds(&sim), [(HoldCause::AccountLimit, 100.0, 1)]);
    assert_eq!(
        sim.waits,
        [(5.0, WaitPurpose::Retry), (100.0, WaitPurpose::Retry)]
    );
    assert_eq!(
        sim.specs.iter().map(|s| s.attempt).collect::<Vec<_>>(),
        [1, 2]
    );
}

#[test]
fn an_unreadable_account_record_is_no_reason_to_hold() {
    let mut sim = Sim::new(with_account(|c| c.min_headroom_percent = Some(50.0)));
    sim.accounts = VecDeque::from([Err("cannot read".into())]);
    let sim = sim.run();
    assert!(holds(&sim).is_empty());
    assert_eq!(sim.calls(), 1);
}

#[test]
fn without_an_account_or_in_a_dry_run_nothing_is_checked() {
    let sim = Sim::new(with(|c| c.max_loops = 2)).run();
    assert_eq!((sim.account_checks, sim.daily_checks), (0, 0));
    let sim = Sim::new(with_account(|c| {
        c.dry_run = true;
        c.daily = Some(DailyBudget {
            max_tokens: Some(1),
            max_cost_usd: None,
            wait: true,
        });
    }))
    .run();
    assert_eq!((sim.account_checks, sim.daily_checks), (0, 0));
    assert_eq!(sim.reason(), "dry run complete");
}

#[test]
fn control_and_signals_end_a_hold() {
    let limited = || Ok(account(0.0, Some((5000.0, false)), &[]));
    // (the command during the hold, prompts per loop) -> stop reason, attempts run
    let cases = [
        (
            ControlAction::StopAfterPrompt,
            1,
            "control stop_after_prompt: checkpoint",
            0,
        ),
        (
            ControlAction::StopAfterLoop,
            1,
            "control stop_after_loop: checkpoint",
            0,
        ),
        (
            ControlAction::InterruptNow,
            1,
            "control interrupt_now: checkpoint",
            0,
        ),
    ];
    for (action, prompts, reason, calls) in cases {
        let mut sim = Sim::new(with_account(|c| c.max_loops = 3));
        sim.prompts = prompts;
        sim.accounts = VecDeque::from([limited()]);
        sim.control_at_wait = vec![(1, stop_cmd(action))];
        let sim = sim.run();
        assert_eq!(sim.reason(), reason, "{action:?}");
        assert_eq!(sim.calls(), calls, "{action:?}");
        assert_eq!(sim.exit(), 0, "{action:?}");
    }
    // A loop already under way (its second prompt held) finishes before a stop-after-loop.
    let mut sim = Sim::new(with_account(|c| c.max_loops = 3));
    sim.prompts = 2;
    sim.accounts = VecDeque::from([Ok(account(0.0, None, &[])), limited()]);
    sim.control_at_wait = vec![(1, stop_cmd(ControlAction::StopAfterLoop))];
    let sim = sim.run();
    assert_eq!(sim.reason(), "control stop_after_loop: checkpoint");
    assert_eq!(
        sim.calls(),
        2,
        "the loop's second prompt ran after the hold"
    );
    // A signal during a hold ends the run at once.
    let mut engine = Engine::new(with_account(|_| {}), 7);
    let mut fx = engine.step(0.0, Input::Start);
    fx.extend(engine.step(0.0, Input::PromptsLoaded { count: 1 }));
    fx.extend(engine.step(0.0, Input::AccountChecked(limited())));
    assert!(
        fx.iter().any(|e| matches!(e, Effect::Wait { .. })),
        "{fx:?}"
    );
    let fx = engine.step(
        1.0,
        Input::Signal {
            name: "SIGTERM",
            forceful: false,
        },
    );
    assert!(matches!(fx[0], Effect::CancelWait), "{fx:?}");
    assert!(engine.is_finished());
}

fn daily(wait: bool) -> EngineConfig {
    with(|c| {
        c.max_loops = 3;
        c.sleep = Duration::ZERO;
        c.daily = Some(DailyBudget {
            max_tokens: Some(1000),
            max_cost_usd: Some(5.0),
            wait,
        });
    })
}

fn spent(tokens: u64, cost_usd: f64) -> Result<DailyUsage, String> {
    Ok(DailyUsage {
        tokens,
        cost_usd,
        runs: 2,
        next_day_in: 7200.0,
    })
}

#[test]
fn a_reached_daily_budget_waits_for_the_next_day_before_the_next_loop() {
    let mut sim = Sim::new(daily(true));
    // Loop 1 may run; before loop 2 the machine is over; after the wait, a new day.
    sim.dailies = VecDeque::from([spent(10, 0.5), spent(1000, 1.0), spent(0, 0.0)]);
    let sim = sim.run();
    assert_eq!(sim.reason(), "max loops reached: 3");
    assert_eq!(holds(&sim), [(HoldCause::DailyBudget, 7200.0, 0)]);
    assert_eq!(sim.waits, [(7200.0, WaitPurpose::Retry)]);
    assert_eq!(
        sim.daily_checks, 4,
        "before each loop, and again after the wait"
    );
    assert_eq!(sim.calls(), 3);
    // Held between loops 1 and 2: loop 2 starts after the hold.
    let names = sim.names();
    let hold = names.iter().position(|n| *n == "quota_wait").expect("hold");
    let loops: Vec<usize> = names
        .iter()
        .enumerate()
        .filter(|(_, n)| **n == "loop_started")
        .map(|(i, _)| i)
        .collect();
    assert!(loops[0] < hold && hold < loops[1], "{names:?}");
    let Some(Event::QuotaWait { reason, .. }) =
        sim.events.iter().find(|e| e.name() == "quota_wait")
    else {
        panic!("no hold");
    };
    assert_eq!(
        reason,
        "daily token budget reached: 1000 tokens used today on this machine (2 runs; max 1000); held 2h 0m until the next day"
    );
}

#[test]
fn a_reached_daily_budget_stops_when_asked_to() {
    let mut sim = Sim::new(daily(false));
    sim.dailies = VecDeque::from([spent(0, 0.0), spent(0, 5.25)]);
    let sim = sim.run();
    assert_eq!(
        sim.reason(),
        "daily cost budget reached: $5.2500 used today on this machine (2 runs; max $5.0000)"
    );
    assert_eq!(sim.exit(), 3);
    assert_eq!(
        sim.stop.as_ref().map(StopReason::kind),
        Some(StopKind::DailyBudget)
    );
    assert_eq!(sim.calls(), 1);
    // Reached before the first loop: nothing runs at all.
    let mut sim = Sim::new(daily(false));
    sim.dailies = VecDeque::from([spent(5000, 0.0)]);
    let sim = sim.run();
    assert_eq!(sim.calls(), 0);
    assert_eq!(sim.exit(), 3);
}

#[test]
fn a_daily_hold_ends_with_a_stop_and_an_unreadable_spend_goes_on() {
    for action in [ControlAction::StopAfterLoop, ControlAction::StopAfterPrompt] {
        let mut sim = Sim::new(daily(true));
        sim.dailies = VecDeque::from([spent(2000, 0.0)]);
        sim.control_at_wait = vec![(1, stop_cmd(action))];
        let sim = sim.run();
        assert_eq!(sim.calls(), 0, "{action:?}");
        assert!(sim.reason().starts_with("control stop_after"), "{action:?}");
    }
    let mut sim = Sim::new(daily(true));
    sim.dailies = VecDeque::from([Err("unreadable".into())]);
    let sim = sim.run();
    assert_eq!(sim.calls(), 3);
    assert!(holds(&sim).is_empty());
}

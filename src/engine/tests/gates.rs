//! Table tests of the gates after the completion marker (D28, issue 15): the plan, verify and
//! review gates together, streaks, breakers, budgets and operator stops arriving while a
//! verify or a review runs.

use super::*;
use crate::engine::machine::GateWhen;

pub(super) fn pass() -> VerifyReport {
    VerifyReport {
        exit_code: Some(0),
        ..VerifyReport::default()
    }
}

fn fail(code: i32, tail: &str) -> VerifyReport {
    VerifyReport {
        exit_code: Some(code),
        tail: tail.into(),
        ..VerifyReport::default()
    }
}

pub(super) fn approve() -> ReviewReport {
    ReviewReport {
        exit_code: Some(0),
        approved: true,
        text: "Looks right.\nVERDICT: APPROVE".into(),
        ..ReviewReport::default()
    }
}

fn reject(text: &str) -> ReviewReport {
    ReviewReport {
        exit_code: Some(0),
        approved: false,
        text: text.into(),
        ..ReviewReport::default()
    }
}

fn verify(when: GateWhen) -> VerifyGate {
    VerifyGate {
        when,
        needs_pass_match: false,
        min_count: None,
        feedback: true,
        cb_failures: 0,
        timeout: Duration::from_secs(60),
    }
}

fn review(when: GateWhen, max_rounds: u64) -> ReviewGate {
    ReviewGate {
        when,
        max_rounds,
        preassign_session_ids: true,
        timeout: Duration::from_secs(60),
    }
}

/// Completion on, streak 1, sleep 0, at most `max_loops`.
fn gated(max_loops: u64, f: impl FnOnce(&mut EngineConfig)) -> EngineConfig {
    with(|c| {
        c.completion_streak = Some(1);
        c.sleep = Duration::ZERO;
        c.max_loops = max_loops;
        f(c)
    })
}

/// Per loop: (blocked_by, completion_streak, verify_passed, review_approved).
type LoopRow = (Option<Gate>, u64, Option<bool>, Option<bool>);

fn loops(sim: &Sim) -> Vec<LoopRow> {
    sim.events
        .iter()
        .filter_map(|e| match e {
            Event::LoopCompleted {
                blocked_by,
                completion_streak,
                verify_passed,
                review_approved,
                ..
            } => Some((
                *blocked_by,
                *completion_streak,
                *verify_passed,
                *review_approved,
            )),
            _ => None,
        })
        .collect()
}

fn count(sim: &Sim, name: &str) -> usize {
    sim.names().iter().filter(|n| **n == name).count()
}

#[test]
fn marker_plan_verify_and_review_interplay_table() {
    use GateWhen::{Completion, EveryLoop};
    struct Row {
        name: &'static str,
        cfg: EngineConfig,
        attempts: Vec<AttemptReport>,
        plans: Vec<Result<usize, String>>,
        verifies: Vec<VerifyReport>,
        reviews: Vec<ReviewReport>,
        reason: &'static str,
        exit: i32,
        loops: Vec<LoopRow>,
    }
    let v = |when| move |c: &mut EngineConfig| c.verify = Some(verify(when));
    let rows = vec![
        Row {
            name: "every gate passes: completion on loop 1",
            cfg: gated(5, |c| {
                c.plan_gate = true;
                c.verify = Some(verify(Completion));
                c.review = Some(review(Completion, 3));
            }),
            attempts: vec![done()],
            plans: vec![Ok(0)],
            verifies: vec![],
            reviews: vec![],
            reason: "completion marker",
            exit: 0,
            loops: vec![(None, 1, Some(true), Some(true))],
        },
        Row {
            name: "the plan blocks: verify and review do not run",
            cfg: gated(1, |c| {
                c.plan_gate = true;
                c.verify = Some(verify(Completion));
                c.review = Some(review(Completion, 3));
            }),
            attempts: vec![done()],
            plans: vec![Ok(2)],
            verifies: vec![],
            reviews: vec![],
            reason: "max loops reached: 1",
            exit: 0,
            loops: vec![(Some(Gate::Plan), 0, None, None)],
        },
        Row {
            name: "verify fails: the review does not run, the streak resets",
            cfg: gated(2, |c| {
                c.verify = Some(verify(Completion));
                c.review = Some(review(Completion, 3));
            }),
            attempts: vec![done(), done()],
            plans: vec![],
            verifies: vec![fail(1, "1 failed")],
            reviews: vec![],
            reason: "completion marker",
            exit: 0,
            loops: vec![
                (Some(Gate::Verify), 0, Some(false), None),
                (None, 1, Some(true), Some(true)),
            ],
        },
        Row {
            name: "no marker: a completion gate never runs",
            cfg: gated(2, v(Completion)),
            attempts: vec![ok(), ok()],
            plans: vec![],
            verifies: vec![],
            reviews: vec![],
            reason: "max loops reached: 2",
            exit: 0,
            loops: vec![(None, 0, None, None), (None, 0, None, None)],
        },
        Row {
            name: "every_loop verify runs without a marker and its breaker trips",
            cfg: gated(9, |c| {
                c.verify = Some(VerifyGate {
                    cb_failures: 2,
                    ..verify(EveryLoop)
                });
            }),
            attempts: vec![ok(), ok(), ok()],
            plans: vec![],
            verifies: vec![fail(1, "a"), pass(), fail(1, "b"), fail(2, "c")],
            reviews: vec![],
            reason: "verify failed 2 time(s) in a row",
            exit: 3,
            loops: vec![
                (None, 0, Some(false), None),
                (None, 0, Some(true), None),
                (None, 0, Some(false), None),
                (None, 0, Some(false), None),
            ],
        },
        Row {
            name: "the reviewer rejects max_rounds times",
            cfg: gated(9, |c| c.review = Some(review(Completion, 2))),
            attempts: vec![done(), done()],
            plans: vec![],
            verifies: vec![],
            reviews: vec![reject("no tests"), reject("still no tests")],
            reason: "reviewer rejected the work 2 time(s)",
            exit: 3,
            loops: vec![
                (Some(Gate::Review), 0, None, Some(false)),
                (Some(Gate::Review), 0, None, Some(false)),
            ],
        },
        Row {
            name: "a failing verify breaks a streak of 2",
            cfg: gated(9, |c| {
                c.completion_streak = Some(2);
                c.verify = Some(verify(Completion));
            }),
            attempts: vec![done(), done(), done(), done()],
            plans: vec![],
            verifies: vec![pass(), fail(1, "x"), pass(), pass()],
            reviews: vec![],
            reason: "completion marker",
            exit: 0,
            loops: vec![
                (None, 1, Some(true), None),
                (Some(Gate::Verify), 0, Some(false), None),
                (None, 1, Some(true), None),
                (None, 2, Some(true), None),
            ],
        },
        Row {
            name: "every_loop review after a passing every_loop verify, no marker",
            cfg: gated(2, |c| {
                c.verify = Some(verify(EveryLoop));
                c.review = Some(review(EveryLoop, 0));
            }),
            attempts: vec![ok(), ok()],
            plans: vec![],
            verifies: vec![fail(1, "x"), pass()],
            reviews: vec![reject("meh")],
            reason: "max loops reached: 2",
            exit: 0,
            loops: vec![
                (None, 0, Some(false), None),
                (None, 0, Some(true), Some(false)),
            ],
        },
        Row {
            name: "no progress is judged before the verify breaker (D28 order)",
            cfg: gated(9, |c| {
                c.cb_no_progress = 1;
                c.verify = Some(VerifyGate {
                    cb_failures: 1,
                    ..verify(EveryLoop)
                });
            }),
            attempts: vec![ok()],
            plans: vec![],
            verifies: vec![fail(1, "x")],
            reviews: vec![],
            reason: "no git progress for 1 loop(s)",
            exit: 3,
            loops: vec![(None, 0, Some(false), None)],
        },
    ];
    for row in rows {
        let mut sim = Sim::new(row.cfg);
        sim.plans = row.plans.into();
        sim.verifies = row.verifies.into();
        sim.reviews = row.reviews.into();
        let sim = sim.attempts(row.attempts).run();
        assert_eq!(sim.reason(), row.reason, "{}", row.name);
        assert_eq!(sim.exit(), row.exit, "{}", row.name);
        assert_eq!(loops(&sim), row.loops, "{}", row.name);
        assert_eq!(
            count(&sim, "verify_started"),
            count(&sim, "verify_completed"),
            "{}",
            row.name
        );
        assert_eq!(
            sim.verify_specs.len(),
            count(&sim, "verify_completed"),
            "{}",
            row.name
        );
        assert_eq!(sim.names().last(), Some(&"run_stopped"), "{}", row.name);
    }
}

#[test]
fn a_failing_verify_reaches_the_next_prompt_exactly_once_per_failure() {
    let mut sim = Sim::new(gated(9, |c| c.verify = Some(verify(GateWhen::Completion))));
    sim.verifies = [
        fail(1, "FIRST FAILURE"),
        fail(101, "SECOND FAILURE"),
        pass(),
    ]
    .into();
    let sim = sim.attempts([done(), done(), done()]).run();
    assert_eq!(sim.reason(), "completion marker");
    assert_eq!(sim.calls(), 3);
    let feedback: Vec<Option<&str>> = sim.specs.iter().map(|s| s.feedback.as_deref()).collect();
    assert_eq!(feedback[0], None);
    let second = feedback[1].expect("the first failure's block");
    assert!(
        second.contains("[verify failed: exit 1; the end of its output]\nFIRST FAILURE"),
        "{second}"
    );
    let third = feedback[2].expect("the second failure's block");
    assert!(
        third.contains("SECOND FAILURE") && !third.contains("FIRST FAILURE"),
        "{third}"
    );
    assert!(third.contains("exit 101"), "{third}");
    assert_eq!(count(&sim, "feedback_delivered"), 2);
    // Without `feedback`, nothing is fed back.
    let mut sim = Sim::new(gated(9, |c| {
        c.verify = Some(VerifyGate {
            feedback: false,
            ..verify(GateWhen::Completion)
        })
    }));
    sim.verifies = [fail(1, "x"), pass()].into();
    let sim = sim.attempts([done(), done()]).run();
    assert!(sim.specs.iter().all(|s| s.feedback.is_none()));
}

#[test]
fn a_rejection_reaches_the_next_prompt_and_each_review_is_a_fresh_session() {
    let mut sim = Sim::new(gated(9, |c| {
        c.review = Some(review(GateWhen::Completion, 3))
    }));
    sim.reviews = [
        reject("Missing tests for the parser.\nVERDICT: REJECT"),
        approve(),
    ]
    .into();
    let sim = sim
        .attempts([
            AttemptReport {
                session_id: Some("maker-1".into()),
                ..done()
            },
            done(),
        ])
        .run();
    assert_eq!(sim.reason(), "completion marker");
    let block = sim.specs[1].feedback.as_deref().expect("the rejection");
    assert!(block.contains("Missing tests for the parser."), "{block}");
    assert!(block.contains("rejection 1 of at most 3"), "{block}");
    let sessions: Vec<&SessionRef> = sim.review_specs.iter().map(|s| &s.session).collect();
    assert_eq!(sessions.len(), 2);
    assert!(
        sessions
            .iter()
            .all(|s| !s.resume && s.id.as_ref().is_some_and(|i| i.len() == 36))
    );
    assert_ne!(sessions[0].id, sessions[1].id);
    assert!(sessions.iter().all(|s| s.id.as_deref() != Some("maker-1")));
    assert_eq!(sim.review_specs[1].round, 2);
}

#[test]
fn the_verify_verdict_needs_exit_0_the_pass_regex_and_the_count_floor() {
    let gate = VerifyGate {
        needs_pass_match: true,
        min_count: Some(10),
        ..verify(GateWhen::Completion)
    };
    let with = |f: fn(&mut VerifyReport)| {
        let mut r = VerifyReport {
            exit_code: Some(0),
            pass_matched: true,
            count: Some(12),
            ..VerifyReport::default()
        };
        f(&mut r);
        crate::engine::machine::verify_failure(&gate, &r)
    };
    assert_eq!(with(|_| {}), None);
    assert_eq!(
        with(|r| r.count = Some(1)).as_deref(),
        Some("count 1 is below min_count 10")
    );
    assert_eq!(
        with(|r| r.count = None).as_deref(),
        Some("count_regex found no count (min_count 10)")
    );
    assert_eq!(
        with(|r| r.pass_matched = false).as_deref(),
        Some("pass_regex did not match its output")
    );
    assert_eq!(with(|r| r.exit_code = Some(2)).as_deref(), Some("exit 2"));
    assert_eq!(
        with(|r| {
            r.timed_out = true;
            r.signal = Some(15);
            r.exit_code = None;
        })
        .as_deref(),
        Some("timed out after 1m")
    );
}

#[test]
fn plan_integrity_is_recorded_and_blocks_only_when_forbidden() {
    for forbid in [false, true] {
        let mut sim = Sim::new(gated(1, |c| {
            c.plan_gate = true;
            c.plan_forbid_removal = forbid;
        }));
        sim.plans = [Ok(0)].into();
        sim.removed = [vec!["write the docs".to_string()]].into();
        let sim = sim.attempts([done()]).run();
        let (removed, blocked) = sim
            .events
            .iter()
            .find_map(|e| match e {
                Event::LoopCompleted {
                    plan_removed,
                    blocked_by,
                    ..
                } => Some((plan_removed.clone(), *blocked_by)),
                _ => None,
            })
            .expect("loop_completed");
        assert_eq!(removed, ["write the docs"], "forbid={forbid}");
        if forbid {
            assert_eq!(blocked, Some(Gate::PlanIntegrity));
            assert_eq!(sim.reason(), "max loops reached: 1");
        } else {
            assert_eq!(blocked, None);
            assert_eq!(sim.reason(), "completion marker");
        }
    }
}

#[test]
fn the_reviewers_usage_counts_toward_the_budgets() {
    let mut sim = Sim::new(gated(9, |c| {
        c.review = Some(review(GateWhen::Completion, 0));
        c.max_tokens = Some(150);
    }));
    sim.reviews = [ReviewReport {
        usage: Usage {
            input_tokens: 50,
            output_tokens: 10,
            ..Usage::default()
        },
        ..reject("no")
    }]
    .into();
    let sim = sim
        .attempts([AttemptReport {
            usage: Usage {
                input_tokens: 90,
                output_tokens: 10,
                ..Usage::default()
            },
            ..done()
        }])
        .run();
    assert_eq!(
        sim.reason(),
        "token budget reached: 160 tokens used (max 150)"
    );
    assert_eq!(sim.exit(), 3);
    assert_eq!(sim.engine.usage_total().total_tokens(), 160);
}

#[test]
fn operator_stops_and_signals_during_a_verify_or_a_review() {
    let both = |c: &mut EngineConfig| {
        c.verify = Some(verify(GateWhen::Completion));
        c.review = Some(review(GateWhen::Completion, 3));
    };
    // stop_after_loop during the verify: it finishes, the review is skipped, the loop ends.
    let mut sim = Sim::new(gated(9, both));
    sim.control_at_verify = vec![(1, stop_cmd(ControlAction::StopAfterLoop))];
    let sim = sim.attempts([done()]).run();
    assert_eq!(sim.reason(), "control stop_after_loop: checkpoint");
    assert!(sim.review_specs.is_empty());
    assert_eq!(count(&sim, "loop_completed"), 1);
    assert_eq!(count(&sim, "verify_completed"), 1);
    // stop_after_prompt during the review: it finishes, then the run stops at the boundary.
    let mut sim = Sim::new(gated(9, both));
    sim.control_at_review = vec![(1, stop_cmd(ControlAction::StopAfterPrompt))];
    sim.reviews = [reject("no")].into();
    let sim = sim.attempts([done()]).run();
    assert_eq!(sim.reason(), "control stop_after_prompt: checkpoint");
    assert_eq!(count(&sim, "review_completed"), 1);
    assert_eq!(sim.calls(), 1);
    // interrupt_now during the review: the reviewer's group is terminated, the run ends
    // when it has, without a loop_completed.
    let mut sim = Sim::new(gated(9, both));
    sim.control_at_review = vec![(1, stop_cmd(ControlAction::InterruptNow))];
    let sim = sim.attempts([done()]).run();
    assert_eq!(sim.terminated, [false]);
    assert_eq!(sim.reason(), "control interrupt_now: checkpoint");
    assert_eq!(count(&sim, "loop_completed"), 0);
    assert_eq!(count(&sim, "review_completed"), 1);
    // A signal during the verify: terminated, exit 130.
    let mut sim = Sim::new(gated(9, both));
    sim.signal_at_verify = vec![1];
    let sim = sim.attempts([done()]).run();
    assert_eq!(sim.terminated, [false]);
    assert_eq!(sim.reason(), "interrupted by SIGTERM");
    assert_eq!(sim.exit(), 130);
    assert!(sim.review_specs.is_empty());
    // The runtime budget expiring during a verify terminates it too.
    let mut e = Engine::new(
        gated(9, |c| {
            both(c);
            c.max_runtime = Some(Duration::from_secs(10));
        }),
        1,
    );
    e.step(0.0, Input::Start);
    e.step(0.0, Input::PromptsLoaded { count: 1 });
    let fx = e.step(1.0, Input::AttemptFinished(done()));
    assert!(
        fx.iter().any(|f| matches!(f, Effect::RunVerify(_))),
        "{fx:?}"
    );
    assert_eq!(
        e.step(10.0, Input::RuntimeExpired),
        [Effect::Terminate { forceful: false }]
    );
    let fx = e.step(10.5, Input::VerifyFinished(fail(143, "")));
    assert!(
        fx.contains(&Effect::Finish(StopReason::MaxRuntime(10.0))),
        "{fx:?}"
    );
}

#[test]
fn dry_runs_and_stale_answers_run_no_gate() {
    let sim = Sim::new(gated(1, |c| {
        c.dry_run = true;
        c.verify = Some(verify(GateWhen::EveryLoop));
        c.review = Some(review(GateWhen::EveryLoop, 1));
    }))
    .attempts([done()])
    .run();
    assert!(sim.verify_specs.is_empty() && sim.review_specs.is_empty());
    let mut e = Engine::new(
        gated(1, |c| c.verify = Some(verify(GateWhen::EveryLoop))),
        1,
    );
    e.step(0.0, Input::Start);
    assert!(e.step(0.0, Input::VerifyFinished(pass())).is_empty());
    assert!(e.step(0.0, Input::ReviewFinished(approve())).is_empty());
}

#[test]
fn a_rate_limited_or_overloaded_reviewer_is_retried_without_using_a_round() {
    let limited = |class: ErrorClass| ReviewReport {
        exit_code: Some(1),
        error: Some(ErrorSignal {
            class,
            reason: format!("{} error", class.as_str()),
            retry_after: Some(7.0),
        }),
        ..ReviewReport::default()
    };
    let mut sim = Sim::new(gated(9, |c| {
        c.review = Some(review(GateWhen::Completion, 1))
    }));
    sim.reviews = [
        limited(ErrorClass::RateLimit),
        limited(ErrorClass::Transient),
        approve(),
    ]
    .into();
    let sim = sim.attempts([done()]).run();
    assert_eq!(sim.reason(), "completion marker");
    assert_eq!(sim.review_specs.len(), 3);
    assert!(
        sim.review_specs.iter().all(|s| s.round == 1),
        "no round used up"
    );
    let ids: Vec<_> = sim
        .review_specs
        .iter()
        .map(|s| s.session.id.clone())
        .collect();
    assert!(
        ids[0] != ids[1] && ids[1] != ids[2],
        "a fresh session each try"
    );
    let retry_waits: Vec<f64> = sim
        .waits
        .iter()
        .filter(|(_, p)| *p == WaitPurpose::Retry)
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(retry_waits, [7.0, 7.0], "the provider's delay is honoured");
    assert!(
        sim.specs.iter().all(|s| s.feedback.is_none()),
        "a retry is no rejection"
    );
    // Transient errors have their cap, as for the agent: then it counts as a rejection.
    let mut sim = Sim::new(gated(9, |c| {
        c.review = Some(review(GateWhen::Completion, 1));
        c.retry.max_transient_retries = 1;
    }));
    sim.reviews = [
        limited(ErrorClass::Transient),
        limited(ErrorClass::Transient),
    ]
    .into();
    let sim = sim.attempts([done()]).run();
    assert_eq!(sim.review_specs.len(), 2);
    assert_eq!(sim.reason(), "reviewer rejected the work 1 time(s)");
    // An operator stop while the retry waits ends the loop at once.
    let mut e = Engine::new(
        gated(9, |c| c.review = Some(review(GateWhen::Completion, 3))),
        1,
    );
    e.step(0.0, Input::Start);
    e.step(0.0, Input::PromptsLoaded { count: 1 });
    e.step(1.0, Input::AttemptFinished(done()));
    let fx = e.step(2.0, Input::ReviewFinished(limited(ErrorClass::RateLimit)));
    assert!(
        fx.iter().any(|f| matches!(f, Effect::Wait { .. })),
        "{fx:?}"
    );
    let fx = e.step(3.0, Input::Control(stop_cmd(ControlAction::StopAfterLoop)));
    assert!(fx.contains(&Effect::CancelWait), "{fx:?}");
    assert!(
        fx.iter()
            .any(|f| matches!(f, Effect::Record(Event::LoopCompleted { .. })))
    );
    assert!(fx.contains(&Effect::Finish(StopReason::Control {
        action: "stop_after_loop".into(),
        reason: Some("checkpoint".into())
    })));
}

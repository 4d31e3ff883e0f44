//! Table tests of the waiting states (issue 17): asks that hold the run at a loop boundary,
//! approval gates (D28's last gate, and every N loops), and how stops, retries, budgets and
//! the wall clock behave while a person is waited for.

use super::*;

fn asking(wait: bool) -> EngineConfig {
    with(|c| {
        c.max_loops = 3;
        c.human.wait_for_answers = wait;
    })
}

fn opened(id: &str) -> HumanInput {
    HumanInput::AskOpened(AskInfo {
        id: id.into(),
        question: "Which database?".into(),
        choices: vec!["pg".into(), "sqlite".into()],
        carried_from: None,
    })
}

fn answered(id: &str, text: &str) -> HumanInput {
    HumanInput::AskAnswered {
        id: id.into(),
        answer: text.into(),
        actor: Some("me".into()),
    }
}

fn position(names: &[&str], name: &str) -> usize {
    names
        .iter()
        .position(|n| *n == name)
        .unwrap_or_else(|| panic!("no {name} in {names:?}"))
}

fn feedback(sim: &Sim, attempt: usize) -> String {
    sim.specs[attempt].feedback.clone().unwrap_or_default()
}

#[test]
fn an_ask_holds_the_run_at_the_next_loop_boundary_until_answered() {
    let mut sim = Sim::new(asking(true));
    sim.human_at_attempt = vec![(1, opened("ask-1"))];
    sim.answers = VecDeque::from([answered("ask-1", "pg")]);
    let sim = sim.run();
    let names = sim.names();
    // Loop 1 runs to its end; the run waits before loop 2 starts.
    let waiting = position(&names, "waiting_for_answer");
    assert!(position(&names, "ask_opened") < waiting);
    assert!(names[..waiting].contains(&"loop_completed"));
    assert_eq!(
        names[waiting..]
            .iter()
            .filter(|n| **n == "loop_started")
            .count(),
        2
    );
    assert!(waiting < position(&names, "ask_answered"));
    // The next prompt carries the question and the answer, exactly once.
    assert_eq!(sim.calls(), 3);
    assert!(sim.specs[0].feedback.is_none());
    let block = feedback(&sim, 1);
    assert!(
        block.contains("You asked: Which database?") && block.contains("The answer: pg"),
        "{block}"
    );
    assert!(block.contains("Choices: pg | sqlite"), "{block}");
    assert!(sim.specs[2].feedback.is_none());
    assert_eq!(sim.reason(), "max loops reached: 3");
}

#[test]
fn an_ask_answered_before_the_boundary_does_not_hold_the_run() {
    let mut sim = Sim::new(asking(true));
    sim.human_at_attempt = vec![(1, opened("ask-1")), (1, answered("ask-1", "pg"))];
    let sim = sim.run();
    assert!(!sim.names().contains(&"waiting_for_answer"));
    assert!(feedback(&sim, 1).contains("The answer: pg"));
}

#[test]
fn on_ask_continue_never_holds_the_run_and_delivers_the_answer_when_it_comes() {
    let mut sim = Sim::new(asking(false));
    sim.human_at_attempt = vec![(1, opened("ask-1")), (2, answered("ask-1", "sqlite"))];
    let sim = sim.run();
    assert!(!sim.names().contains(&"waiting_for_answer"));
    assert!(sim.specs[1].feedback.is_none());
    assert!(feedback(&sim, 2).contains("The answer: sqlite"));
}

#[test]
fn an_ask_during_a_retry_wait_holds_the_run_at_the_loop_boundary_not_the_retry() {
    let mut e = Engine::new(asking(true), 1);
    e.step(0.0, Input::Start);
    e.step(0.0, Input::PromptsLoaded { count: 1 });
    let fx = e.step(
        1.0,
        Input::AttemptFinished(err(ErrorClass::RateLimit, Some(30.0))),
    );
    assert!(fx.iter().any(|f| matches!(
        f,
        Effect::Wait {
            purpose: WaitPurpose::Retry,
            ..
        }
    )));
    let fx = e.step(2.0, Input::Human(opened("ask-1")));
    assert!(
        fx.iter()
            .any(|f| matches!(f, Effect::Record(Event::AskOpened { .. })))
    );
    assert!(!fx.contains(&Effect::SetStatus(Status::WaitingForAnswer)));
    assert!(!fx.contains(&Effect::CancelWait), "the retry wait goes on");
    // The retry runs as planned.
    let fx = e.step(31.0, Input::WaitElapsed);
    assert!(
        fx.iter()
            .any(|f| matches!(f, Effect::RunAttempt(s) if s.attempt == 2))
    );
    // At the loop's end the run waits for the answer.
    let fx = e.step(32.0, Input::AttemptFinished(ok()));
    assert!(fx.iter().any(|f| matches!(
        f,
        Effect::Wait {
            purpose: WaitPurpose::Sleep,
            ..
        }
    )));
    let fx = e.step(34.0, Input::WaitElapsed);
    assert!(fx.contains(&Effect::SetStatus(Status::WaitingForAnswer)));
    assert!(!fx.contains(&Effect::LoadPrompts));
    let fx = e.step(90.0, Input::Human(answered("ask-1", "pg")));
    assert!(fx.contains(&Effect::SetStatus(Status::Running)));
    assert!(fx.contains(&Effect::LoadPrompts));
    let fx = e.step(90.0, Input::PromptsLoaded { count: 1 });
    let spec = fx
        .iter()
        .find_map(|f| match f {
            Effect::RunAttempt(s) => Some(s.clone()),
            _ => None,
        })
        .expect("loop 2's prompt");
    assert_eq!(spec.loop_number, 2);
    assert!(spec.feedback.unwrap_or_default().contains("The answer: pg"));
}

/// Step to the wait for an answer after loop 1.
fn waiting_engine(cfg: EngineConfig) -> Engine {
    let mut e = Engine::new(cfg, 1);
    e.step(0.0, Input::Start);
    e.step(0.0, Input::PromptsLoaded { count: 1 });
    e.step(0.5, Input::Human(opened("ask-1")));
    e.step(1.0, Input::AttemptFinished(ok()));
    let fx = e.step(3.0, Input::WaitElapsed);
    assert!(fx.contains(&Effect::SetStatus(Status::WaitingForAnswer)));
    e
}

fn finish_of(fx: &[Effect]) -> Option<StopReason> {
    fx.iter().find_map(|f| match f {
        Effect::Finish(r) => Some(r.clone()),
        _ => None,
    })
}

#[test]
fn an_operator_stop_while_waiting_for_an_answer_ends_the_run_at_once() {
    struct Row {
        input: Input,
        reason: &'static str,
        exit: i32,
    }
    let rows = [
        Row {
            input: Input::Control(stop_cmd(ControlAction::StopAfterLoop)),
            reason: "control stop_after_loop: checkpoint",
            exit: 0,
        },
        Row {
            input: Input::Control(stop_cmd(ControlAction::StopAfterPrompt)),
            reason: "control stop_after_prompt: checkpoint",
            exit: 0,
        },
        Row {
            input: Input::Control(stop_cmd(ControlAction::InterruptNow)),
            reason: "control interrupt_now: checkpoint",
            exit: 0,
        },
        Row {
            input: Input::Signal {
                name: "SIGTERM",
                forceful: false,
            },
            reason: "interrupted by SIGTERM",
            exit: 130,
        },
    ];
    for row in rows {
        let mut e = waiting_engine(asking(true));
        let fx = e.step(10.0, row.input);
        let stop = finish_of(&fx).unwrap_or_else(|| panic!("{}: no stop in {fx:?}", row.reason));
        assert_eq!(stop.reason(), row.reason);
        assert_eq!(stop.exit_code(), row.exit);
        assert!(!fx.iter().any(|f| matches!(f, Effect::Terminate { .. })));
        assert!(e.is_finished());
    }
}

#[test]
fn a_pause_while_waiting_holds_the_run_after_the_answer() {
    let mut e = waiting_engine(asking(true));
    e.step(
        5.0,
        Input::Control(ControlCommand {
            id: "p".into(),
            action: ControlAction::Pause,
            reason: None,
            note: None,
            btw: false,
        }),
    );
    let fx = e.step(6.0, Input::Human(answered("ask-1", "pg")));
    assert!(fx.contains(&Effect::SetStatus(Status::Paused)));
    assert!(!fx.contains(&Effect::LoadPrompts));
}

#[test]
fn budgets_and_the_wall_clock_during_a_wait() {
    // The wall clock runs on while a person is waited for: it stops the run (exit 3).
    let mut e = waiting_engine(with(|c| {
        c.human.wait_for_answers = true;
        c.max_runtime = Some(Duration::from_secs(100));
    }));
    let fx = e.step(100.0, Input::RuntimeExpired);
    let stop = finish_of(&fx).expect("stopped");
    assert_eq!(stop.reason(), "max runtime reached: 100");
    assert_eq!(stop.exit_code(), 3);
    // A budget spent by the loop that asked stops the run instead of waiting.
    let mut sim = Sim::new(with(|c| {
        c.human.wait_for_answers = true;
        c.max_tokens = Some(100);
    }));
    sim.human_at_attempt = vec![(1, opened("ask-1"))];
    let sim = sim
        .attempts([AttemptReport {
            usage: Usage {
                input_tokens: 150,
                ..Usage::default()
            },
            ..ok()
        }])
        .run();
    assert_eq!(sim.exit(), 3, "{}", sim.reason());
    assert!(!sim.names().contains(&"waiting_for_answer"));
    // A wall clock already spent at the boundary stops rather than waits.
    let mut sim = Sim::new(with(|c| {
        c.human.wait_for_answers = true;
        c.max_runtime = Some(Duration::from_secs(2));
        c.sleep = Duration::from_secs(5);
    }));
    sim.human_at_attempt = vec![(1, opened("ask-1"))];
    let sim = sim.run();
    assert_eq!(sim.reason(), "max runtime reached: 2");
    assert!(!sim.names().contains(&"waiting_for_answer"));
    // The wall clock during an approval wait, too.
    let mut e = Engine::new(
        with(|c| {
            c.completion_streak = Some(1);
            c.human.approve_completion = true;
            c.max_runtime = Some(Duration::from_secs(50));
        }),
        1,
    );
    e.step(0.0, Input::Start);
    e.step(0.0, Input::PromptsLoaded { count: 1 });
    let fx = e.step(1.0, Input::AttemptFinished(done()));
    assert!(fx.contains(&Effect::SetStatus(Status::WaitingForApproval)));
    let stop = finish_of(&e.step(50.0, Input::RuntimeExpired)).expect("stopped");
    assert_eq!(stop.exit_code(), 3);
}

#[test]
fn asks_carried_over_before_the_start_hold_the_first_loop() {
    let mut e = Engine::new(asking(true), 1);
    assert!(e.step(0.0, Input::Human(opened("ask-1"))).is_empty());
    let fx = e.step(0.0, Input::Start);
    let names: Vec<&str> = fx
        .iter()
        .filter_map(|f| match f {
            Effect::Record(ev) => Some(ev.name()),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["run_started", "ask_opened", "waiting_for_answer"]);
    assert!(!fx.contains(&Effect::LoadPrompts));
    // An ask answered before the restart: no wait, the first prompt carries it.
    let mut sim = Sim::new(asking(true));
    sim.engine.step(0.0, Input::Human(opened("ask-1")));
    sim.engine.step(0.0, Input::Human(answered("ask-1", "pg")));
    let sim = sim.run();
    assert!(!sim.names().contains(&"waiting_for_answer"));
    assert!(feedback(&sim, 0).contains("The answer: pg"));
    assert_eq!(
        sim.names().iter().filter(|n| **n == "ask_opened").count(),
        1,
        "a re-read ask is opened once"
    );
}

#[test]
fn completion_approval_rejected_once_then_approved() {
    let mut sim = Sim::new(with(|c| {
        c.completion_streak = Some(1);
        c.human.approve_completion = true;
    }));
    sim.decisions = VecDeque::from([
        (false, Some("the parser has no tests".into())),
        (true, None),
    ]);
    let sim = sim.attempts([done(), done()]).run();
    assert_eq!(sim.reason(), "completion marker");
    assert_eq!(sim.exit(), 0);
    assert_eq!(sim.calls(), 2);
    assert_eq!(sim.approvals.len(), 2);
    assert_eq!(sim.approvals[0].gate, ApprovalGate::Completion);
    let rejected = sim.events.iter().find_map(|e| match e {
        Event::ApprovalRejected {
            gate,
            reason,
            completion_streak,
            ..
        } => Some((*gate, reason.clone(), *completion_streak)),
        _ => None,
    });
    assert_eq!(
        rejected,
        Some((
            ApprovalGate::Completion,
            "the parser has no tests".into(),
            0
        )),
        "the event says which gate and why, and the streak is reset (D28)"
    );
    let block = feedback(&sim, 1);
    assert!(block.contains("the parser has no tests"), "{block}");
    assert!(block.contains("did not approve the completion"), "{block}");
    let names = sim.names();
    assert!(position(&names, "approval_given") > position(&names, "approval_rejected"));
}

#[test]
fn a_rejected_completion_is_followed_by_the_breakers_and_budgets() {
    let mut sim = Sim::new(with(|c| {
        c.completion_streak = Some(1);
        c.human.approve_completion = true;
        c.max_loops = 1;
    }));
    sim.decisions = VecDeque::from([(false, Some("not yet".into()))]);
    let sim = sim.attempts([done()]).run();
    assert_eq!(sim.reason(), "max loops reached: 1");
    // Without the approval gate the same loop completes.
    let sim = Sim::new(with(|c| {
        c.completion_streak = Some(1);
        c.max_loops = 1;
    }))
    .attempts([done()])
    .run();
    assert_eq!(sim.reason(), "completion marker");
    assert!(sim.approvals.is_empty());
}

#[test]
fn every_n_loops_waits_for_an_approval_before_the_next_loop() {
    let mut sim = Sim::new(with(|c| {
        c.max_loops = 5;
        c.human.approve_every = Some(2);
    }));
    sim.decisions = VecDeque::from([(false, Some("smaller commits".into())), (true, None)]);
    let sim = sim.run();
    assert_eq!(sim.reason(), "max loops reached: 5");
    let loops: Vec<u64> = sim.approvals.iter().map(|a| a.loop_number).collect();
    assert_eq!(loops, [2, 4], "not after the last loop");
    assert!(
        sim.approvals
            .iter()
            .all(|a| a.gate == ApprovalGate::EveryNLoops)
    );
    assert!(feedback(&sim, 2).contains("smaller commits"));
    assert!(sim.specs[4].feedback.is_none());
    // A decision for an approval the run is not waiting for changes nothing.
    let mut e = Engine::new(cfg(), 1);
    e.step(0.0, Input::Start);
    let fx = e.step(
        0.0,
        Input::Human(HumanInput::Decision {
            id: "approval-x".into(),
            approved: true,
            reason: None,
            actor: None,
        }),
    );
    assert!(fx.is_empty());
}

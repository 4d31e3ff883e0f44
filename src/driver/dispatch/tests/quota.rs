//! The dispatcher's side of issue 18 with recording fakes: the account's record read for the
//! engine and told what attempts learned, the day's spending, the CLIs' own retries as they
//! happen, a CLI replaced between loops, and no second process on a held session.

use super::*;
use crate::agents::self_retry::SelfRetry;
use crate::records::accounts::{Limit, WindowRecord, Witness};

fn with_account(agent: &str) -> String {
    format!(
        "[looper]\ndefault_agent = \"{agent}\"\nsleep_seconds = 0\n[agents.{agent}]\ninterface = \"json\"\naccount = \"team\"\n"
    )
}

fn script(stdout: &str, code: i32) -> Script {
    Script {
        stdout: stdout.as_bytes().to_vec(),
        exit: AttemptExit {
            exit_code: Some(code),
            ..AttemptExit::default()
        },
        spawn_error: None,
    }
}

/// Run one attempt to its end (the report goes to a fresh engine: only the records matter).
fn attempt(h: &mut Harness, s: AttemptSpec) {
    let applied = h.d.apply(Effect::RunAttempt(s));
    let done = finish(applied);
    h.d.engine = Engine::new(crate::driver::engine_config(&h.d.cfg), 1);
    let _ = h.d.attempt_done(1.0, done);
}

#[test]
fn the_account_record_is_read_before_an_attempt_as_the_engine_judges_it() {
    let mut h = Harness::new(&with_account("claude"));
    assert!(
        crate::driver::engine_config(&h.d.cfg).account,
        "an account named in the table is checked"
    );
    let now = chrono::Utc::now();
    let other = Limit {
        until: Some(now + chrono::TimeDelta::seconds(300)),
        reason: "rate limit event: status=rejected\u{1b}]0;x\u{7}".into(),
        seen_by: Witness {
            label: "b".into(),
            run_dir: PathBuf::from("/elsewhere/runs/20261201__b__000001"),
            pid: 77,
        },
        seen_at: Some(now),
    };
    let window = WindowRecord {
        window: "five_hour".into(),
        used_percent: Some(96.0),
        resets_at: Some(now + chrono::TimeDelta::seconds(600)),
        ..WindowRecord::default()
    };
    h.accounts.borrow_mut().push_back(AccountRecord {
        limit: Some(other.clone()),
        windows: vec![window],
        ..AccountRecord::default()
    });
    assert!(h.d.apply(Effect::CheckAccount).is_none());
    let Input::AccountChecked(Ok(f)) = h.queued().remove(0) else {
        panic!("no facts");
    };
    assert_eq!(f.account, "team");
    let limit = f.limit.expect("limit");
    assert!(!limit.own);
    assert!((limit.until - f.now - 300.0).abs() < 1.0, "{limit:?}");
    assert_eq!(limit.seen_by, "looper b (run 20261201__b__000001, pid 77)");
    assert!(
        !limit.reason.contains('\u{1b}'),
        "sanitised: {:?}",
        limit.reason
    );
    assert_eq!(f.windows.len(), 1);
    assert_eq!(f.windows[0].used_percent, 96.0);
    assert_eq!(h.take_calls(), [Call::ReadAccount]);
    // A limit this run recorded is its own.
    h.accounts.borrow_mut()[0].limit = Some(Limit {
        seen_by: Witness {
            run_dir: h.root.join("run"),
            ..other.seen_by.clone()
        },
        ..other
    });
    let _ = h.d.apply(Effect::CheckAccount);
    let Input::AccountChecked(Ok(f)) = h.queued().remove(0) else {
        panic!("no facts");
    };
    assert!(f.limit.expect("limit").own);
}

#[test]
fn what_an_attempt_learns_goes_to_the_run_and_to_the_account() {
    let mut h = Harness::new(&with_account("claude"));
    let resets = chrono::Utc::now().timestamp() + 600;
    let out = format!(
        "{{\"type\":\"system\",\"subtype\":\"init\",\"session_id\":\"s-1\"}}\n\
         {{\"type\":\"rate_limit_event\",\"rate_limit_info\":{{\"status\":\"rejected\",\"resetsAt\":{resets},\"rateLimitType\":\"five_hour\",\"utilization\":1.0}},\"session_id\":\"s-1\"}}\n\
         {{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":true,\"api_error_status\":429,\"result\":\"You've hit your 5-hour limit\",\"session_id\":\"s-1\"}}\n"
    );
    h.scripts.borrow_mut().push_back(script(&out, 1));
    attempt(&mut h, spec(1, session("s-1", false)));
    let calls = h.take_calls();
    let update = calls
        .iter()
        .find_map(|c| match c {
            Call::UpdateAccount(u) => Some(u.clone()),
            _ => None,
        })
        .expect("the account was told");
    let limit = update.limit.expect("a limit with a known end");
    let until = limit.until.expect("until").timestamp();
    assert!((until - resets).abs() <= 1, "{until} vs {resets}");
    assert_eq!(limit.seen_by.label, "t");
    assert_eq!(limit.seen_by.run_dir, h.root.join("run"));
    assert_eq!(update.windows.len(), 1);
    assert_eq!(update.windows[0].window, "five_hour");
    assert_eq!(update.windows[0].used_percent, Some(100.0));
    assert_eq!(update.cleared_by_success_since, None);
    let rl = calls
        .iter()
        .position(|c| *c == Call::AppendSupervisor("rate_limits"))
        .expect("rate_limits recorded");
    let lim = calls
        .iter()
        .position(|c| *c == Call::AppendSupervisor("account_limit_recorded"))
        .expect("the limit recorded in the run");
    assert!(rl < lim);
    // state.json has the reading, by agent.
    let st = h.d.ports.records.state();
    let windows = st.rate_limits.clone().expect("rate_limits");
    assert_eq!(windows[0].agent.as_deref(), Some("claude"));
    assert_eq!(st.account.as_deref(), Some("team"));

    // A success of an attempt started after a limit was seen says it is over.
    h.accounts.borrow_mut().push_back(AccountRecord {
        limit: Some(Limit {
            until: Some(chrono::Utc::now() + chrono::TimeDelta::seconds(60)),
            seen_at: Some(chrono::Utc::now() - chrono::TimeDelta::seconds(5)),
            ..Limit::default()
        }),
        ..AccountRecord::default()
    });
    let _ = h.d.apply(Effect::CheckAccount);
    h.queued();
    h.scripts.borrow_mut().push_back(script(
        "{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"result\":\"done\",\"session_id\":\"s-1\"}\n",
        0,
    ));
    attempt(&mut h, spec(1, session("s-1", true)));
    let cleared = h.take_calls().into_iter().find_map(|c| match c {
        Call::UpdateAccount(u) => u.cleared_by_success_since,
        _ => None,
    });
    assert!(cleared.is_some(), "the success cleared the limit");
    // Nothing learned, nothing written.
    h.scripts.borrow_mut().push_back(script(
        "{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"result\":\"done\",\"session_id\":\"s-1\"}\n",
        0,
    ));
    attempt(&mut h, spec(1, session("s-1", true)));
    assert!(
        !h.take_calls()
            .iter()
            .any(|c| matches!(c, Call::UpdateAccount(_))),
        "no update without news"
    );
}

#[test]
fn the_day_is_summed_for_the_engine() {
    let mut h = Harness::new(&generic("daily_max_tokens = 1000\n"));
    assert!(crate::driver::engine_config(&h.d.cfg).daily.is_some());
    let _ = h.d.apply(Effect::CheckDailyBudget);
    let Input::DailyChecked(Ok(u)) = h.queued().remove(0) else {
        panic!("no usage");
    };
    assert_eq!((u.tokens, u.cost_usd, u.runs), (1200, 2.5, 2));
    assert!(u.next_day_in > 3.0 * 3600.0 - 5.0 && u.next_day_in <= 3.0 * 3600.0);
    assert_eq!(h.take_calls(), [Call::Today]);
}

#[test]
fn the_clis_own_retries_are_recorded_while_the_attempt_runs() {
    let mut h = Harness::new(&with_account("claude"));
    let (tx, mut rx) = mpsc::unbounded_channel();
    h.d.retries = Some(tx);
    h.scripts.borrow_mut().push_back(script(
        "{\"type\":\"system\",\"subtype\":\"api_retry\",\"attempt\":2,\"max_retries\":10,\"retry_delay_ms\":1500,\"error_status\":429,\"error\":\"rate_limit\",\"session_id\":\"s-1\"}\n",
        0,
    ));
    // The fake agent's output reaches the sink when it is spawned: the retry is news then,
    // before the attempt's end.
    let applied =
        h.d.apply(Effect::RunAttempt(spec(1, session("s-1", false))));
    let retry: SelfRetry = rx.try_recv().expect("told as it happened");
    assert_eq!(
        (
            retry.attempt,
            retry.max_attempts,
            retry.status,
            retry.delay_seconds
        ),
        (Some(2), Some(10), Some(429), Some(1.5))
    );
    h.take_calls();
    h.d.agent_retry(retry);
    assert_eq!(
        h.take_calls(),
        [
            Call::Say(
                "agent: claude is retrying the API itself: attempt 2/10 after 429 (rate_limit) (the CLI's own retry)"
                    .into()
            ),
            Call::AppendSupervisor("agent_retry"),
            Call::Save(Sync::No),
        ]
    );
    let st = h.d.ports.records.state();
    assert_eq!(
        st.agent_retry.as_ref().and_then(|r| r.retry.status),
        Some(429)
    );
    drop(finish(applied));
}

fn stamp(version: Option<&str>, mtime: f64) -> AgentCli {
    AgentCli {
        path: "/opt/cli/claude-2".into(),
        version: version.map(str::to_string),
        size: Some(10),
        inode: Some(7),
        mtime: Some(mtime),
    }
}

fn loop_completed() -> Event {
    Event::LoopCompleted {
        loop_number: 1,
        duration_seconds: 1.0,
        output_bytes: 0,
        completion_detected: false,
        plan_unchecked: None,
        completion_blocked_by_plan: false,
        blocked_by: None,
        blocked_reason: None,
        plan_removed: vec![],
        verify_passed: None,
        review_approved: None,
        completion_streak: 0,
        fingerprint: None,
        no_progress_count: 0,
        output_decline_count: 0,
        output_match_count: 0,
        usage: crate::engine::Usage::default(),
        usage_total: crate::engine::Usage::default(),
    }
}

#[test]
fn a_cli_replaced_between_loops_is_recorded_with_one_stat_per_loop() {
    let mut h = Harness::new(&with_account("claude"));
    let program = h.root.join("bin/claude");
    h.d.cli = Some((program.clone(), stamp(Some("fake 1.0"), 1.0)));
    h.stamps.borrow_mut().push_back(stamp(None, 1.0));
    let _ = h.d.apply(Effect::Record(loop_completed()));
    let calls = h.take_calls();
    assert!(calls.contains(&Call::Stamp(program.clone())), "{calls:?}");
    assert!(
        !calls.iter().any(|c| matches!(c, Call::Version(_))),
        "an unchanged file is not run: {calls:?}"
    );
    // Updated in place: a new mtime.
    h.stamps.borrow_mut()[0] = stamp(None, 2.0);
    let _ = h.d.apply(Effect::Record(loop_completed()));
    let calls = h.take_calls();
    let at = |c: &Call| calls.iter().position(|x| x == c);
    assert!(at(&Call::Version(program.clone())).is_some(), "{calls:?}");
    assert!(
        at(&Call::AppendSupervisor("agent_cli_changed")) < at(&Call::Append("loop_completed")),
        "{calls:?}"
    );
    assert!(
        calls.iter().any(|c| matches!(c, Call::Say(s) if s.contains("(fake 1.0) is now /opt/cli/claude-2 (fake 2.0)"))),
        "{calls:?}"
    );
    let st = h.d.ports.records.state();
    let change = st.agent_cli_changed.clone().expect("change");
    assert_eq!(change.previous_version.as_deref(), Some("fake 1.0"));
    assert_eq!(change.version.as_deref(), Some("fake 2.0"));
    assert_eq!(
        st.agent_cli.as_ref().and_then(|c| c.version.as_deref()),
        Some("fake 2.0")
    );
    // The new file is the one compared from now on.
    let _ = h.d.apply(Effect::Record(loop_completed()));
    assert!(!h.take_calls().iter().any(|c| matches!(c, Call::Version(_))));
}

#[test]
fn a_json_session_is_never_resumed_while_an_earlier_process_holds_it() {
    let mut h = Harness::new(&generic(""));
    attempt(&mut h, spec(1, session("s-1", false)));
    h.take_calls();
    // Something of the first attempt's group (pgid 4241) still lives.
    *h.alive.borrow_mut() = vec![4243];
    attempt(&mut h, spec(1, session("s-1", true)));
    let calls = h.take_calls();
    let release = calls
        .iter()
        .position(|c| {
            *c == Call::Release {
                session_id: "s-1".into(),
                pgid: 4241,
            }
        })
        .expect("the holder was released");
    let ended = calls
        .iter()
        .position(|c| *c == Call::AppendSupervisor("session_holder_ended"))
        .expect("recorded");
    let spawn = calls
        .iter()
        .position(|c| matches!(c, Call::Spawn { program, .. } if program.ends_with("resume-agent")))
        .expect("resumed");
    assert!(release < ended && ended < spawn, "{calls:?}");
    // A fresh session has nothing to wait for.
    attempt(&mut h, spec(2, session("s-2", false)));
    assert!(
        !h.take_calls()
            .iter()
            .any(|c| matches!(c, Call::Release { .. }))
    );
}

#[test]
fn a_hybrid_pane_is_reopened_on_its_session_only_once_the_old_one_is_gone() {
    let mut h = Harness::with_env(CLAUDE, hybrid_env());
    drop(finish(
        h.d.apply(Effect::RunAttempt(spec(1, session("s-1", false)))),
    ));
    h.take_calls();
    *h.gone.borrow_mut() = true;
    *h.alive.borrow_mut() = vec![101];
    drop(finish(
        h.d.apply(Effect::RunAttempt(spec(1, session("s-1", true)))),
    ));
    let calls = h.take_calls();
    let release = calls.iter().position(|c| {
        *c == Call::Release {
            session_id: "s-1".into(),
            pgid: 101,
        }
    });
    let open = calls
        .iter()
        .position(|c| matches!(c, Call::OpenPane { .. }));
    assert!(
        release.is_some() && release < open,
        "released before the pane is reopened: {calls:?}"
    );
}

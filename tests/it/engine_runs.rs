//! Whole runs with the fake agent: stop reasons, exit codes, records.

use crate::support::*;

#[test]
fn a_one_loop_run_writes_the_reference_event_sequence() {
    let p = Project::new();
    p.fake_agent("=== default\nsay hello\n", "");
    let out = p.run(&["--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        p.event_names(),
        [
            "run_started",
            "loop_started",
            "prompt_started",
            "prompt_completed",
            "loop_completed",
            "run_stopped"
        ]
    );
    let st = p.state();
    assert_eq!(st["status"], "stopped");
    assert_eq!(st["stop_reason"], "max loops reached: 1");
    assert_eq!(st["exit_code"], 0);
    assert_eq!(st["schema_version"], 1);
}

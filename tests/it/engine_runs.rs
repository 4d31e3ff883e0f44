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

/// Defect 1 of issue 13: a generic agent's later prompts ran `first_command[0]`, never the
/// program of `resume_command`.
#[test]
fn a_resumed_prompt_runs_the_resume_commands_own_program() {
    let p = Project::new();
    p.write(
        "resume.sh",
        "#!/bin/sh\nprintf '%s\\n' \"$@\" > \"$(dirname \"$0\")/resumed.txt\"\necho resumed\n",
    );
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p.join("resume.sh"), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
    p.write("PROMPT.md", "first\n---\nsecond\n");
    let cfg = format!(
        "[looper]\ndefault_agent = \"g\"\nsleep_seconds = 0\nmode = \"sequence\"\nprompt_file = \"PROMPT.md\"\n\n[agents.g]\nkind = \"generic\"\nfirst_command = [{:?}, \"{{prompt}}\"]\nresume_command = [{:?}, \"{{session}}\", \"{{prompt}}\"]\nenv = {{ FAKE_AGENT_SCRIPT = {:?} }}\n",
        fake_agent_bin().display().to_string(),
        p.join("resume.sh").display().to_string(),
        p.join("agent.script").display().to_string(),
    );
    p.write("agent.script", "=== default\nsay hello\n");
    p.write("agent-looper.toml", &cfg);
    let out = p.run(&["--once", "--label", "res"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let args = std::fs::read_to_string(p.join("resumed.txt"))
        .expect("the resume command's program ran (resumed.txt)");
    assert_eq!(args, "res-loop-0001\nsecond\n");
}

/// Defect 3 of issue 13: huge second values passed validation, then panicked in
/// `Duration::from_secs_f64` after `run_started`. Each is refused up front, naming the key.
#[test]
fn durations_too_long_for_a_timer_are_refused_naming_the_key() {
    for key in [
        "terminate_grace_seconds",
        "pipe_leak_timeout_seconds",
        "timeout_seconds",
        "max_runtime_seconds",
    ] {
        let p = Project::new();
        p.fake_agent("=== default\nsay hi\n", &format!("{key} = 1e20"));
        let out = p.run(&["--once"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{key}: {err}");
        assert!(
            err.contains(&format!("looper.{key}: expected a number of seconds"))
                && err.contains("<= 1000000000"),
            "{key}: {err}"
        );
        assert!(p.run_dirs().is_empty(), "{key}: nothing was started");
    }
    let p = Project::new();
    p.fake_agent("=== default\nsay hi\n", "");
    let out = p.run(&["--once", "--timeout", "1e20"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--timeout") && stderr(&out).contains("<= 1000000000"),
        "{}",
        stderr(&out)
    );
    let out = p
        .looper()
        .args([
            "control",
            "stop",
            "--now",
            "--force",
            "--grace-seconds",
            "1e20",
        ])
        .output()
        .expect("control");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--grace-seconds") && stderr(&out).contains("at most"),
        "{}",
        stderr(&out)
    );
}

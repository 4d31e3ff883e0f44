//! The templates in `examples/` (a Kubernetes Job, a CI workflow) parse as YAML and name
//! only flags and keys that exist: their looper arguments go through `looper config check`
//! (and other looper lines are run), and their deadlines and exit-code rules agree with the
//! run's budget and the documented exit codes.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_yaml_ng::Value as Yaml;

use crate::support::*;

/// The documented exit codes (README "Exit codes", D5).
const EXIT_CODES: [i64; 6] = [0, 1, 2, 3, 124, 130];

fn example(rel: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(rel),
    )
    .expect("example")
}

fn docs(text: &str) -> Vec<Yaml> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
        .collect()
}

/// A project where the examples' agent (`codex`) is a stub on PATH: config check wants it.
fn project() -> (Project, PathBuf) {
    let p = Project::new();
    let bin = p.join("stub-bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let codex = bin.join("codex");
    std::fs::write(&codex, "#!/bin/sh\nexit 0\n").expect("stub");
    let mut perm = std::fs::metadata(&codex).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&codex, perm).expect("chmod");
    p.write("PROMPT.md", "work\n");
    (p, bin)
}

fn looper_in(p: &Project, bin: &Path, args: &[String]) -> Output {
    p.looper()
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .args(args)
        .output()
        .expect("looper")
}

fn config_check(p: &Project, bin: &Path, run_args: &[String]) {
    let mut args = vec!["config".to_string(), "check".to_string()];
    args.extend(run_args.iter().cloned());
    let out = looper_in(p, bin, &args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "looper {args:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
}

fn flag_value(args: &[String], flag: &str) -> Option<f64> {
    args.windows(2)
        .find(|w| w[0] == flag)
        .and_then(|w| w[1].parse().ok())
}

#[test]
fn the_kubernetes_job_runs_one_bounded_looper_with_documented_exit_codes() {
    let all = docs(&example("kubernetes/looper-job.yaml"));
    let job = all.iter().find(|d| d["kind"] == "Job").expect("a Job");
    let spec = &job["spec"];
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], Yaml::from("Never"));
    let containers = pod["containers"].as_sequence().expect("containers");
    let c = containers
        .iter()
        .find(|c| c["name"] == "looper")
        .expect("the looper container");
    assert_eq!(c["command"][0], Yaml::from("looper"));
    let args: Vec<String> = c["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect();
    assert_eq!(args[0], "run");
    assert!(args.contains(&"--local".to_string()));
    // The deadline comes from the budget, with room for the looper to stop.
    let budget = flag_value(&args, "--max-runtime").expect("--max-runtime");
    let deadline = spec["activeDeadlineSeconds"].as_f64().expect("deadline");
    let grace = pod["terminationGracePeriodSeconds"]
        .as_f64()
        .expect("grace");
    assert!(
        deadline > budget && deadline <= budget + 900.0,
        "{deadline} vs {budget}"
    );
    assert!(deadline - budget >= grace.min(300.0));
    // The state root is on the volume.
    let work_dir = c["workingDir"].as_str().expect("workingDir");
    let mounts = c["volumeMounts"].as_sequence().expect("mounts");
    assert!(mounts.iter().any(|m| {
        m["mountPath"]
            .as_str()
            .is_some_and(|mp| work_dir.starts_with(mp))
    }));
    // Exit codes: only documented ones; 2 and 3 fail the Job without retries.
    let rules = spec["podFailurePolicy"]["rules"]
        .as_sequence()
        .expect("rules");
    let mut fail_job = Vec::new();
    for r in rules {
        if let Some(values) = r["onExitCodes"]["values"].as_sequence() {
            assert_eq!(r["onExitCodes"]["containerName"], Yaml::from("looper"));
            for v in values {
                let v = v.as_i64().expect("code");
                assert!(EXIT_CODES.contains(&v), "{v} is not a documented exit code");
                if r["action"] == "FailJob" {
                    fail_job.push(v);
                }
            }
        }
    }
    fail_job.sort();
    assert_eq!(fail_job, [2, 3]);

    let (p, bin) = project();
    config_check(&p, &bin, &args[1..]);
}

/// `${{ ... }}` expressions become a plain word; the shell line is split as sh would.
fn shell_words(line: &str) -> Vec<String> {
    let re = regex::Regex::new(r"\$\{\{[^}]*\}\}").expect("re");
    let line = re.replace_all(line, "x");
    let mut words = shlex::split(&line).expect("shell words");
    if let Some(i) = words.iter().position(|w| w.starts_with('>')) {
        words.truncate(i);
    }
    words
}

#[test]
fn the_ci_workflow_names_only_existing_flags_and_is_bounded() {
    let doc = &docs(&example("ci/looper.yml"))[0];
    let jobs = doc["jobs"].as_mapping().expect("jobs");
    let (p, bin) = project();
    let mut checked = 0;
    let branch = regex::Regex::new(r"(?m)^\s*(\d+)\)").expect("re");
    for (_, job) in jobs {
        let minutes = job["timeout-minutes"].as_f64().expect("timeout-minutes");
        for step in job["steps"].as_sequence().expect("steps") {
            let Some(run) = step["run"].as_str() else {
                continue;
            };
            for line in run
                .lines()
                .map(str::trim)
                .filter(|l| l.starts_with("looper "))
            {
                let words = shell_words(line);
                if words[1] == "run" {
                    let budget = flag_value(&words, "--max-runtime").expect("--max-runtime");
                    assert!(minutes * 60.0 > budget, "the job outlives the budget");
                    assert!(words.contains(&"--max-loops".to_string()), "bounded");
                    config_check(&p, &bin, &words[2..]);
                } else {
                    let out = looper_in(&p, &bin, &words[1..]);
                    assert_eq!(out.status.code(), Some(0), "{line}: {}", stderr(&out));
                }
                checked += 1;
            }
            // The exit-code branches name documented codes only.
            for code in branch.captures_iter(run) {
                let c: i64 = code[1].parse().expect("code");
                assert!(EXIT_CODES.contains(&c), "{c} is not a documented exit code");
            }
        }
    }
    assert_eq!(checked, 3);
}

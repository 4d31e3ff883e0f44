//! `looper demo`: the real supervisor and the real gates, on a throwaway repository with a
//! scripted agent that ticks one plan item per loop and signals completion when done.

use std::path::{Path, PathBuf};

use crate::cli::{DemoAgentArgs, DemoArgs, RunArgs};
use crate::config::{self, Invocation};
use crate::error::{Error, Result};

const PLAN: &str =
    "# Demo plan\n\n- [ ] write the greeting\n- [ ] add a farewell\n- [ ] sign the guest book\n";
const PROMPT: &str = "Work through fix_plan.md: finish the first unchecked task, tick it, and end with\nEXIT_SIGNAL: true only when no task is left (EXIT_SIGNAL: false otherwise).\n";

fn demo_config(exe: &Path) -> String {
    let exe = toml::Value::String(exe.display().to_string());
    format!(
        "# Written by `looper demo`.\n[looper]\ndefault_agent = \"demo\"\nsleep_seconds = 0.2\nmax_loops = 10\ntimeout_seconds = 60\n\
         completion_enabled = true\ncompletion_marker = \"EXIT_SIGNAL:\\\\s*true\"\nplan_file = \"fix_plan.md\"\n\
         backup_enabled = true\nbackup_prefix = \"demo-backup\"\ncb_no_progress = 2\n\n\
         [agents.demo]\nkind = \"generic\"\nfirst_command = [{exe}, \"demo-agent\", \"--plan\", \"fix_plan.md\", \"--\", \"{{prompt}}\"]\n"
    )
}

fn git_init(dir: &Path) -> Result<()> {
    let git = |source: git2::Error| {
        Error::from(crate::effects::git::GitError::Git {
            action: "cannot set up the demo repository in",
            path: dir.to_path_buf(),
            source,
        })
    };
    let repo = git2::Repository::init(dir).map_err(git)?;
    let mut index = repo.index().map_err(git)?;
    for f in [
        "README.md",
        "fix_plan.md",
        "PROMPT.md",
        "agent-looper.toml",
        ".gitignore",
    ] {
        index.add_path(Path::new(f)).map_err(git)?;
    }
    index.write().map_err(git)?;
    let tree_id = index.write_tree().map_err(git)?;
    let tree = repo.find_tree(tree_id).map_err(git)?;
    let sig = git2::Signature::now("looper demo", "demo@localhost").map_err(git)?;
    repo.commit(Some("HEAD"), &sig, &sig, "demo: initial commit", &tree, &[])
        .map_err(git)?;
    Ok(())
}

pub fn demo(args: &DemoArgs) -> Result<i32> {
    let exe =
        std::env::current_exe().map_err(|e| Error::io("cannot locate", "the looper binary", e))?;
    let (dir, _temp): (PathBuf, Option<tempfile::TempDir>) = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| Error::io("cannot create", d, e))?;
            (d.clone(), None)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("looper-demo-")
                .tempdir()
                .map_err(|e| Error::io("cannot create", "a temporary directory", e))?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| Error::io("cannot write", &p, e))
    };
    write("README.md", "# looper demo\n")?;
    write("fix_plan.md", PLAN)?;
    write("PROMPT.md", PROMPT)?;
    write("agent-looper.toml", &demo_config(&exe))?;
    write(".gitignore", ".agent-looper/\n")?;
    git_init(&dir)?;
    crate::say!("looper demo: repository {}", dir.display());
    crate::say!(
        "looper demo: a scripted agent ticks one task of fix_plan.md per loop; the run stops on"
    );
    crate::say!(
        "  EXIT_SIGNAL: true once the plan gate has no unchecked task left, with a git backup per loop.\n"
    );

    let inv = Invocation {
        base_dir: dir.clone(),
        ..Invocation::from_process(None)?
    };
    let run_args = RunArgs {
        local: true,
        ..RunArgs::default()
    };
    let settings = config::resolve(&run_args, &inv)?;
    let code = crate::commands::run::run_local(settings, &inv)?;

    let plan = std::fs::read_to_string(dir.join("fix_plan.md")).unwrap_or_default();
    crate::say!("\nlooper demo: final plan:\n{plan}");
    if let Ok(repo) = git2::Repository::open(&dir)
        && let Ok(branches) = repo.branches(Some(git2::BranchType::Local))
    {
        let names: Vec<String> = branches
            .filter_map(|b| b.ok()?.0.name().ok().flatten().map(str::to_string))
            .filter(|n| n.starts_with("demo-backup/"))
            .collect();
        crate::say!("looper demo: backup branches: {}", names.join(", "));
    }
    if args.keep
        && let Some(t) = _temp
    {
        let _ = t.keep();
    }
    if args.keep || args.dir.is_some() {
        crate::say!(
            "looper demo: kept {}; its runs: `looper status --state-root {}/.agent-looper/runs`",
            dir.display(),
            dir.display()
        );
    } else {
        crate::say!("looper demo: the demo repository is removed (`looper demo --keep` keeps it)");
    }
    if code == 0 {
        crate::say!("looper demo: completed.");
    }
    Ok(code)
}

/// The scripted agent: tick the first unchecked task; report completion when none is left.
pub fn demo_agent(args: &DemoAgentArgs) -> Result<i32> {
    let text =
        std::fs::read_to_string(&args.plan).map_err(|e| Error::io("cannot read", &args.plan, e))?;
    let mut done = None;
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if done.is_none() && line.trim_start().starts_with("- [ ]") {
            done = Some(line.trim_start()[5..].trim().to_string());
            out.push_str(&line.replacen("- [ ]", "- [x]", 1));
        } else {
            out.push_str(line);
        }
    }
    std::fs::write(&args.plan, &out).map_err(|e| Error::io("cannot write", &args.plan, e))?;
    let left = crate::engine::plan::unchecked_tasks(&out);
    match done {
        Some(task) => crate::say!("working on: {task}\nticked it; {left} task(s) left"),
        None => crate::say!("nothing left to do"),
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    crate::say!("EXIT_SIGNAL: {}", left == 0);
    Ok(0)
}

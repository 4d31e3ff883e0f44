//! `looper init` and the first-run set-up: starter files, never overwriting without --force.

use std::io::{BufRead, Write};
use std::path::Path;

use crate::cli::InitArgs;
use crate::config::starter::{self, Answers};
use crate::config::{DEFAULT_CONFIG_FILE, DEFAULT_PROMPT_FILE, LEGACY_PROMPT_FILE};
use crate::error::{Error, Result};

fn next_steps(bin: &str) -> String {
    format!(
        "Next steps:\n  1. Edit the prompt file with the work you want done each loop.\n  2. Run `{bin}` to start looping (in the tmux farm), or `{bin} --local --once` to try one loop here.\n  3. Watch with `looper status` and `looper logs -f`; stop with `looper control stop --after-loop`.\n  Customise: `{bin} init --interactive --force`, or edit {DEFAULT_CONFIG_FILE} (`looper config check` validates it)."
    )
}

fn write_file(path: &Path, content: &str, force: bool, out: &mut impl Write) -> Result<()> {
    if path.exists() && !force {
        let _ = writeln!(out, "exists, leaving unchanged: {}", path.display());
        return Ok(());
    }
    std::fs::write(path, content).map_err(|e| Error::io("cannot write", path, e))?;
    let _ = writeln!(out, "wrote {}", path.display());
    Ok(())
}

/// `looper` in an empty directory.
pub fn first_run(dir: &Path, bin: &str) -> Result<i32> {
    let mut out = std::io::stdout();
    write_file(
        &dir.join(DEFAULT_CONFIG_FILE),
        &starter::starter_config(&Answers::default()),
        false,
        &mut out,
    )?;
    write_file(
        &dir.join(DEFAULT_PROMPT_FILE),
        starter::STARTER_PROMPT,
        false,
        &mut out,
    )?;
    println!(
        "Initialized Agent Looper starter files.\n{}",
        next_steps(bin)
    );
    Ok(0)
}

pub fn init(args: &InitArgs, bin: &str) -> Result<i32> {
    let dir = std::env::current_dir()
        .map_err(|e| Error::io("cannot read the current directory", ".", e))?;
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut out = std::io::stdout();
    init_in(&dir, args, bin, &mut input, &mut out)
}

/// Testable core of `init`: answers come from `input`.
pub fn init_in(
    dir: &Path,
    args: &InitArgs,
    bin: &str,
    input: &mut impl BufRead,
    out: &mut impl Write,
) -> Result<i32> {
    let (answers, prompts) = if args.interactive {
        interview(input, out)
    } else {
        (Answers::default(), vec![])
    };
    let config = starter::starter_config(&answers);
    write_file(&dir.join(DEFAULT_CONFIG_FILE), &config, args.force, out)?;
    if answers.sequence {
        write_file(
            &dir.join(LEGACY_PROMPT_FILE),
            &format!("{}\n", prompts.join("\n---\n")),
            args.force,
            out,
        )?;
    } else {
        let prompt = prompts
            .first()
            .map(|p| format!("{p}\n"))
            .unwrap_or_else(|| starter::STARTER_PROMPT.to_string());
        write_file(&dir.join(DEFAULT_PROMPT_FILE), &prompt, args.force, out)?;
    }
    let _ = writeln!(out, "Starter files are ready.\n{}", next_steps(bin));
    Ok(0)
}

enum Parsed<T> {
    Ok(T),
    Bad(String),
}

fn ask<T>(
    input: &mut impl BufRead,
    out: &mut impl Write,
    question: &str,
    default: &str,
    parse: impl Fn(&str) -> Parsed<T>,
) -> Option<T> {
    for _ in 0..3 {
        let _ = write!(out, "{question} [{default}]: ");
        let _ = out.flush();
        let mut line = String::new();
        match input.read_line(&mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        let t = line.trim();
        if t.is_empty() {
            return None;
        }
        match parse(t) {
            Parsed::Ok(v) => return Some(v),
            Parsed::Bad(why) => {
                let _ = writeln!(out, "  {why}; try again (Enter keeps {default})");
            }
        }
    }
    let _ = writeln!(out, "  keeping the default {default}");
    None
}

fn number(min: f64, exclusive: bool) -> impl Fn(&str) -> Parsed<f64> {
    move |t| match t.parse::<f64>() {
        Ok(v) if !v.is_finite() => Parsed::Bad(format!("`{t}` is not a finite number")),
        Ok(v) if v < min || (exclusive && v <= min) => Parsed::Bad(format!(
            "must be {} {min}",
            if exclusive {
                "greater than"
            } else {
                "at least"
            }
        )),
        Ok(v) => Parsed::Ok(v),
        Err(_) => Parsed::Bad(format!("`{t}` is not a number")),
    }
}

fn count(t: &str) -> Parsed<u64> {
    match t.parse::<u64>() {
        Ok(v) => Parsed::Ok(v),
        Err(_) => Parsed::Bad(format!("`{t}` is not a whole number >= 0")),
    }
}

fn interview(input: &mut impl BufRead, out: &mut impl Write) -> (Answers, Vec<String>) {
    let agents = starter::known_agents();
    let mut a = Answers {
        default_agent: ask(
            input,
            out,
            &format!("Default agent ({})", agents.join("/")),
            "codex",
            |t| {
                if agents.contains(&t) {
                    Parsed::Ok(t.to_string())
                } else {
                    Parsed::Bad(format!("unknown agent `{t}`"))
                }
            },
        ),
        ..Answers::default()
    };
    a.timeout_seconds = ask(
        input,
        out,
        "Per-prompt timeout in seconds",
        "7200",
        number(0.0, true),
    );
    a.sleep_seconds = ask(
        input,
        out,
        "Sleep between loops in seconds",
        "2",
        number(0.0, false),
    );
    a.max_loops = ask(input, out, "Max loops (0 = unlimited)", "0", count);
    a.max_transient_retries = ask(
        input,
        out,
        "Max transient retries (0 = unlimited)",
        "12",
        count,
    );
    a.retry_notify_after_seconds = ask(
        input,
        out,
        "Notify on retry waits at least this long, seconds (0 = never)",
        "300",
        number(0.0, false),
    );
    let _ = writeln!(
        out,
        "Prompts, one per line; an empty line ends (one prompt: PROMPT.md; several: prompts.md in sequence mode):"
    );
    let mut prompts = Vec::new();
    loop {
        let _ = write!(out, "prompt {}> ", prompts.len() + 1);
        let _ = out.flush();
        let mut line = String::new();
        match input.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let t = line.trim();
        if t.is_empty() {
            break;
        }
        prompts.push(t.to_string());
    }
    let _ = writeln!(out);
    a.sequence = prompts.len() > 1;
    (a, prompts)
}

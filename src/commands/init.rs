//! `looper init` and the first-run set-up: starter files, never overwriting without --force,
//! never written through a symlink, created exclusively and replaced atomically.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use crate::cli::InitArgs;
use crate::config::starter::{self, Answers};
use crate::config::{DEFAULT_CONFIG_FILE, DEFAULT_PROMPT_FILE, LEGACY_PROMPT_FILE};
use crate::error::{Error, Result};

fn next_steps(bin: &str) -> String {
    format!(
        "Next steps:\n  1. Edit the prompt file with the work you want done each loop.\n  2. Run `{bin}` to start looping (in the tmux farm), or `{bin} --local --once` to try one loop here.\n  3. Watch with `looper status` and `looper logs -f`; stop with `looper control stop --after-loop`.\n  Customise: `{bin} init --interactive --force`, or edit {DEFAULT_CONFIG_FILE} (`looper config check` validates it)."
    )
}

/// What writing one starter file will do, decided for every file before any is written.
enum Plan {
    Create,
    /// `--force` over a regular file: a new file renamed over it, with the old mode.
    Replace(u32),
    Leave,
}

/// The looper never writes through a symlink (issue 20.3): a `PROMPT.md` link's target was
/// overwritten by `init --force`, and a dangling `agent-looper.toml` link in a cloned
/// repository made the first run create a file wherever it pointed. Only a link that is left
/// alone anyway (no `--force`, its target exists) is accepted.
fn plan_write(path: &Path, force: bool) -> Result<Plan> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Plan::Create),
        Err(e) => return Err(Error::io("cannot inspect", path, e)),
    };
    let kind = meta.file_type();
    if kind.is_symlink() {
        if !force && path.exists() {
            return Ok(Plan::Leave);
        }
        return Err(Error::Usage(format!(
            "refusing to write {}: it is a symbolic link, and the looper never writes through one; remove the link (or write the file yourself) and run again",
            path.display()
        )));
    }
    if !kind.is_file() {
        return Err(Error::Usage(format!(
            "refusing to write {}: it exists and is not a regular file",
            path.display()
        )));
    }
    if force {
        use std::os::unix::fs::PermissionsExt;
        Ok(Plan::Replace(meta.permissions().mode() & 0o7777))
    } else {
        Ok(Plan::Leave)
    }
}

/// A new file, created exclusively and never through a link: `O_EXCL` fails on anything
/// already there, a link (even a dangling one) included.
fn create_new(path: &Path, content: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    f.write_all(content.as_bytes())?;
    f.sync_all()
}

/// A replacement made beside the file and renamed over it: a reader never sees half a file,
/// and a link planted in the meantime is replaced, not followed.
fn replace(path: &Path, content: &str, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.unwrap_or_default()))
        .tempfile_in(dir)?;
    tmp.write_all(content.as_bytes())?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Write the starter files: every path is checked first, so a refusal writes nothing.
fn write_files(files: &[(PathBuf, String)], force: bool, out: &mut impl Write) -> Result<()> {
    let plans = files
        .iter()
        .map(|(path, _)| plan_write(path, force))
        .collect::<Result<Vec<_>>>()?;
    for ((path, content), plan) in files.iter().zip(plans) {
        let written = match plan {
            Plan::Leave => {
                let _ = writeln!(out, "exists, leaving unchanged: {}", path.display());
                continue;
            }
            Plan::Create => create_new(path, content),
            Plan::Replace(mode) => replace(path, content, mode),
        };
        written.map_err(|e| Error::io("cannot write", path, e))?;
        let _ = writeln!(out, "wrote {}", path.display());
    }
    Ok(())
}

/// `looper` in an empty directory.
pub fn first_run(dir: &Path, bin: &str) -> Result<i32> {
    let mut out = std::io::stdout();
    write_files(
        &[
            (
                dir.join(DEFAULT_CONFIG_FILE),
                starter::starter_config(&Answers::default()),
            ),
            (
                dir.join(DEFAULT_PROMPT_FILE),
                starter::STARTER_PROMPT.to_string(),
            ),
        ],
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
    let prompt_file = if answers.sequence {
        (
            dir.join(LEGACY_PROMPT_FILE),
            format!("{}\n", prompts.join("\n---\n")),
        )
    } else {
        let prompt = prompts
            .first()
            .map(|p| format!("{p}\n"))
            .unwrap_or_else(|| starter::STARTER_PROMPT.to_string());
        (dir.join(DEFAULT_PROMPT_FILE), prompt)
    };
    write_files(
        &[(dir.join(DEFAULT_CONFIG_FILE), config), prompt_file],
        args.force,
        out,
    )?;
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

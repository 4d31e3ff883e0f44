//! Entry point shared by every binary: parse, dispatch, map errors to exit codes.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use crate::cli::{Cli, Command, ConfigCommand, wrapper_agent};
use crate::commands;
use crate::error::{Error, exit_code};

/// The clap command as a binary named `bin` shows it.
pub fn command_for(bin: &str) -> clap::Command {
    let bin: &'static str = Box::leak(bin.to_string().into_boxed_str());
    last_flag_wins(Cli::command().name(bin).bin_name(bin))
}

/// A single-valued flag given twice takes the last value (`--timeout 60 --timeout 90` is
/// 90), as most CLIs do and wrappers and aliases rely on; in every subcommand.
fn last_flag_wins(cmd: clap::Command) -> clap::Command {
    let mut cmd = cmd.args_override_self(true);
    for sub in cmd.get_subcommands_mut() {
        *sub = last_flag_wins(std::mem::take(sub));
    }
    cmd
}

fn bin_name(default: &str) -> String {
    std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
        })
        .filter(|n| wrapper_agent(n).is_some() || n == "looper")
        .unwrap_or_else(|| default.to_string())
}

/// Run the CLI as binary `default_bin` (its wrapper agent applies, D1).
pub fn main_with(default_bin: &str) -> ExitCode {
    // The attempt guard is this binary re-executed (D10): it must not parse a command line.
    #[cfg(target_os = "linux")]
    if let Some(code) = crate::effects::guard::run_if_guard() {
        return ExitCode::from(code);
    }
    let bin = bin_name(default_bin);
    let matches = match command_for(&bin).try_get_matches() {
        Ok(m) => m,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit_code::USAGE as u8
            } else {
                0
            });
        }
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(exit_code::USAGE as u8);
        }
    };
    let wrapper = wrapper_agent(&bin);
    let result = dispatch(cli, &bin, wrapper);
    let code = match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            crate::console::err(&format!("looper: error: {e}"));
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    };
    // A run's console is written by a thread: what it still holds goes out before the exit.
    crate::console::flush(std::time::Duration::from_secs(2));
    code
}

fn dispatch(cli: Cli, bin: &str, wrapper: Option<&str>) -> Result<i32, Error> {
    match cli.command {
        None => commands::run::run(cli.run, bin, wrapper, true),
        Some(Command::Run(args)) => commands::run::run(args, bin, wrapper, false),
        Some(Command::Init(args)) => commands::init::init(&args, bin),
        Some(Command::Doctor(args)) => commands::doctor::doctor(&args, wrapper),
        Some(Command::Config(ConfigCommand::Check(args))) => {
            commands::misc::config_check(&args, wrapper)
        }
        Some(Command::Completions(args)) => commands::misc::completions(args.shell, bin),
        Some(Command::Control(cmd)) => commands::control::control(cmd),
        Some(Command::Status(args)) => match crate::remote::status::status(&args)? {
            Some(code) => Ok(code),
            None => commands::status::status(&args),
        },
        Some(Command::Logs(args)) => commands::logs::logs(&args),
        Some(Command::Diff(args)) => commands::diff::diff(&args),
        Some(Command::Service(cmd)) => crate::service::service(cmd, wrapper),
        Some(Command::Ask(args)) => commands::human::ask_command(&args),
        Some(Command::Answer(args)) => commands::human::answer_command(&args),
        Some(Command::Approve(args)) => commands::human::decide_command(&args, true),
        Some(Command::Reject(args)) => commands::human::decide_command(&args, false),
        Some(Command::Wait(args)) => commands::wait::wait_command(&args),
        Some(Command::Mcp(args)) => commands::mcp::serve(&args),
        Some(Command::Demo(args)) => commands::demo::demo(&args),
        Some(Command::DemoAgent(args)) => commands::demo::demo_agent(&args),
        Some(Command::LiveView(args)) => commands::live_view::live_view(&args),
        Some(Command::PaneExec(args)) => commands::pane_exec::pane_exec(&args),
    }
}

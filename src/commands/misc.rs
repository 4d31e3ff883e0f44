//! Small commands: `config check` and `completions`.

use crate::cli::{ConfigCheckArgs, Shell};
use crate::config::{self, Invocation};
use crate::error::Result;

pub fn config_check(args: &ConfigCheckArgs, wrapper: Option<&str>) -> Result<i32> {
    let inv = Invocation::from_process(wrapper)?;
    let settings = config::resolve(&args.run, &inv)?;
    // Compile the regexes and load the prompts too: "valid" means a run would start.
    let prepared = config::run::prepare(
        config::Settings {
            dry_run: true,
            ..settings
        },
        &inv,
    )?;
    print!(
        "{}",
        config::render_resolved(&prepared.settings, args.show_origin)
    );
    for n in &prepared.notices {
        crate::say!("# note: {n}");
    }
    Ok(0)
}

pub fn completions(shell: Shell, bin: &str) -> Result<i32> {
    let mut cmd = crate::app::command_for(bin);
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut cmd, bin, &mut std::io::stdout());
    Ok(0)
}

//! `completions` and `man`: the shell completion scripts and the manual
//! page, generated from the command-line definition itself.

use std::io::Write;

use clap::{Args, ValueEnum};
use clap_complete::Shell as Generator;
use roff::{Roff, roman};

use crate::error::CliError;

/// The shells completions are made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Shell {
    /// Bash: `source <(carehare completions bash)`.
    Bash,
    /// Zsh: save as `_carehare` in a directory of `$fpath`.
    Zsh,
    /// Fish: save as `~/.config/fish/completions/carehare.fish`.
    Fish,
}

/// `completions SHELL`.
#[derive(Args, Debug)]
pub(crate) struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Writes the completion script for `args.shell` to stdout.
pub(crate) fn completions(
    mut command: clap::Command,
    args: &CompletionsArgs,
) -> Result<(), CliError> {
    let generator = match args.shell {
        Shell::Bash => Generator::Bash,
        Shell::Zsh => Generator::Zsh,
        Shell::Fish => Generator::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(generator, &mut command, "carehare", &mut script);
    write_stdout(&script)
}

/// Writes the manual page, in roff, to stdout: `carehare man > carehare.1`,
/// or `carehare man | man -l -`. One page: the top-level command as
/// clap_mangen lays it out, then a section per subcommand with its whole
/// `--help`.
pub(crate) fn man(mut command: clap::Command) -> Result<(), CliError> {
    command.build();
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone())
        .render(&mut page)
        .map_err(CliError::io("rendering the manual page"))?;
    let mut sections = Roff::new();
    for sub in command.get_subcommands() {
        subcommand_section(&mut sections, sub);
    }
    sections
        .to_writer(&mut page)
        .map_err(CliError::io("rendering the manual page"))?;
    write_stdout(&page)
}

/// A section holding `sub`'s long help as it is (no fill), then one for
/// each of its own subcommands.
fn subcommand_section(roff: &mut Roff, sub: &clap::Command) {
    if sub.is_hide_set() || sub.get_name() == "help" {
        return;
    }
    let name = sub.get_bin_name().unwrap_or(sub.get_name()).to_uppercase();
    roff.control("SH", [name.as_str()]);
    roff.control("nf", []);
    let help = sub.clone().render_long_help().to_string();
    for line in help.lines() {
        roff.text([roman(line)]);
    }
    roff.control("fi", []);
    for nested in sub.get_subcommands() {
        subcommand_section(roff, nested);
    }
}

fn write_stdout(bytes: &[u8]) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        // `carehare man | head`: the reader had enough.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(CliError::io("writing to stdout")),
    }
}

//! `completions <shell>` and `man [--dir DIR]`: shell completion scripts and man pages, made
//! from the command line's definition ([`crate::cli`]), so they always agree with `--help`.
//! What is hidden there (the `component` command, `supervisor --detached`) stays hidden.
//! Neither needs a home.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Command, CommandFactory};
use clap_complete::Shell;

use crate::cli::Cli;
use crate::exit;

/// The program the scripts complete and the pages describe.
const PROGRAM: &str = "imageserving";

/// Prints the completion script of `shell`.
pub(super) fn completions(shell: Shell) -> anyhow::Result<u8> {
    let mut cmd = visible(&Cli::command());
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, PROGRAM, &mut script);
    print(&script)
}

/// Prints `imageserving.1`, or with `dir` writes it and one page per command there, listing
/// the files written.
pub(super) fn man(dir: Option<&Path>) -> anyhow::Result<u8> {
    // `help` is no command of its own in a man page.
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let Some(dir) = dir else {
        let mut page = Vec::new();
        page_of(cmd)
            .render(&mut page)
            .context("rendering the man page")?;
        return print(&page);
    };
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    write_pages(cmd, dir, &mut written)
        .with_context(|| format!("writing the man pages into {}", dir.display()))?;
    let list: String = written
        .iter()
        .map(|p| format!("{}\n", p.display()))
        .collect();
    print(list.as_bytes())
}

/// Writes the page of `cmd` (`imageserving.1`, `imageserving-start.1`, …), then those of its
/// visible subcommands, into `dir`.
fn write_pages(cmd: Command, dir: &Path, written: &mut Vec<PathBuf>) -> io::Result<()> {
    let subcommands: Vec<Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    written.push(page_of(cmd).generate_to(dir)?);
    for sub in subcommands {
        write_pages(sub, dir, written)?;
    }
    Ok(())
}

/// The man page of `cmd`, in section 1, from imageserving of this version (clap_mangen would
/// name a subcommand's source after the subcommand).
fn page_of(cmd: Command) -> clap_mangen::Man {
    clap_mangen::Man::new(cmd).source(format!("{PROGRAM} {}", env!("CARGO_PKG_VERSION")))
}

/// `cmd` without its hidden commands and options: the completion scripts would offer them
/// (clap_mangen leaves them out by itself). What completion needs is kept: names, help,
/// arguments and their values.
fn visible(cmd: &Command) -> Command {
    let mut out = Command::new(cmd.get_name().to_owned())
        .propagate_version(cmd.is_propagate_version_set())
        .args(cmd.get_arguments().filter(|a| !a.is_hide_set()).cloned())
        .subcommands(
            cmd.get_subcommands()
                .filter(|s| !s.is_hide_set())
                .map(visible),
        );
    if let Some(about) = cmd.get_about() {
        out = out.about(about.clone());
    }
    if let Some(about) = cmd.get_long_about() {
        out = out.long_about(about.clone());
    }
    if let Some(version) = cmd.get_version() {
        out = out.version(version.to_owned());
    }
    out
}

/// Writes `bytes` to standard output; a reader that went away (`| head`) is no error.
pub(super) fn print(bytes: &[u8]) -> anyhow::Result<u8> {
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("writing to standard output"))
        }
        _ => Ok(exit::OK),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_command_keeps_the_visible_parts_only() {
        let cmd = visible(&Cli::command());
        let names: Vec<&str> = cmd.get_subcommands().map(clap::Command::get_name).collect();
        assert!(
            names.contains(&"logs") && names.contains(&"start"),
            "{names:?}"
        );
        assert!(!names.contains(&"component"), "{names:?}");
        let supervisor = cmd
            .get_subcommands()
            .find(|s| s.get_name() == "supervisor")
            .expect("supervisor");
        assert!(supervisor
            .get_arguments()
            .all(|a| a.get_id().as_str() != "detached"));
        // Still a valid command line (clap checks its definition when it builds it).
        let mut cmd = cmd;
        cmd.build();
        cmd.try_get_matches_from(["imageserving", "logs", "is", "-f", "-n", "3"])
            .expect("parses");
    }
}

//! `imageserving`: the control CLI, the Server Supervisor daemon and the IPC bridge between them.
//!
//! The supervision tree itself lives in the `imageserving-actors` crate; this crate owns
//! everything around it:
//! - [`cli`]: the command line; [`commands`]: one module per command (the CLI side);
//! - [`client`]: the blocking client of the control socket; [`protocol`]: its wire format;
//! - [`daemon`]: the Server Supervisor process, with the IPC bridge onto the tree; [`peer`]: who
//!   may talk to it;
//! - [`home`]: the home directory layout; [`config`]: the TOML configuration;
//! - [`servers`]: the component servers `ps`, `is`, `svg`; [`imaging`]: the image protocol and
//!   pipeline they share.

pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod exit;
pub mod home;
pub mod imaging;
pub mod peer;
pub mod protocol;
pub mod servers;

use std::process::ExitCode;

use clap::Parser;

/// The whole program: parse, set up logging, run, map the outcome to an exit code.
pub fn main_entry() -> ExitCode {
    let cli = cli::Cli::parse();
    init_tracing(&cli);
    let quiet_errors = matches!(cli.command, cli::Command::Component { .. });
    match commands::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            let code = exit::code_of(&err);
            let message = format!("{err:#}");
            if !message.is_empty() && !quiet_errors {
                eprintln!("imageserving: {message}");
            }
            ExitCode::from(code)
        }
    }
}

/// Sets up the one tracing subscriber. Diagnostics go to standard error (the foreground
/// supervisor's and the component servers' log; the CLI's stays quiet unless asked), except in
/// the detached daemon, which writes its own log, `logs/supervisor.log`, rotated by size (see
/// [`daemon::log`]); should that file not open, it logs to standard error
/// (`logs/supervisor.stderr`).
fn init_tracing(cli: &cli::Cli) {
    use tracing_subscriber::EnvFilter;
    let daemon = matches!(
        cli.command,
        cli::Command::Supervisor { .. } | cli::Command::Component { .. }
    );
    let level = match (cli.global.quiet, cli.global.verbose) {
        (true, _) => "error",
        (false, 0) if daemon => "info",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    // ractor wraps every handler in a span carrying the sender's actor id, which misleads more
    // than it helps here: every line names its component instead.
    let filter = EnvFilter::try_from_env("IMAGESERVING_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},ractor=warn")));
    let ansi = !daemon && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    // An unusable home fails the command itself, with the reason, right after this.
    let own_log = match cli.command {
        cli::Command::Supervisor { detached: true } => home::Home::resolve(cli.global.home.clone())
            .ok()
            .map(|home| daemon::log::SupervisorLog::open(&home)),
        _ => None,
    };
    let _ = match own_log {
        Some(Ok(log)) => builder.with_writer(log).with_ansi(false).try_init(),
        Some(Err(e)) => {
            eprintln!("imageserving: {e}; logging to standard error");
            builder
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .try_init()
        }
        // A component server's standard error is timestamped line by line by the supervisor.
        None if matches!(cli.command, cli::Command::Component { .. }) => builder
            .without_time()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .try_init(),
        None => builder
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .try_init(),
    };
}

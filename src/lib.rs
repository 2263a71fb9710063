//! `imageserving`: the control CLI, the Server Supervisor daemon and the IPC bridge between them.
//!
//! The supervision tree itself lives in the `imageserving-actors` crate; this crate owns
//! everything around it:
//! - [`cli`]: the command line; [`commands`]: one module per command (the CLI side);
//! - [`client`]: the blocking client of the control socket; [`protocol`]: its wire format;
//! - [`daemon`]: the Server Supervisor process, with the IPC bridge onto the tree; [`peer`]: who
//!   may talk to it;
//! - [`home`]: the home directory layout; [`config`]: the TOML configuration; [`notice`]: warnings
//!   about a repeating condition, rate-limited;
//! - [`servers`]: the component servers `ps`, `is`, `svg`; [`imaging`]: the image protocol and
//!   pipeline they share.
//!
//! Which of these may use which (the wire format not the tree, configuration parsing not the
//! servers, the CLI and the daemon not the image code) is checked by `tests/layering.rs`, whose
//! module documentation draws the layers.

mod args;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod exit;
pub mod home;
pub mod imaging;
pub mod notice;
pub mod peer;
pub mod protocol;
pub mod servers;

use std::process::ExitCode;

use clap::Parser;

/// The whole program: parse, set up logging, run, map the outcome to an exit code.
pub fn main_entry() -> ExitCode {
    let cli = cli::Cli::parse();
    let mode = match cli.command {
        cli::Command::Supervisor { detached } => LogMode::Supervisor { detached },
        cli::Command::Component { .. } => LogMode::Component,
        _ => LogMode::Cli,
    };
    init_tracing(mode, &cli.global);
    // `component` only execs `imageserving-server`: what fails here is ours to say.
    finish(commands::run(cli), false)
}

/// The entry point of `imageserving-supervisor`, the daemon's own program (see
/// [`daemon::program`]). Its arguments are few and fixed, so they are read by hand: linking
/// clap here would map its code into the one process meant to stay small.
pub fn supervisor_entry() -> ExitCode {
    let args = match daemon::args::SupervisorArgs::parse(std::env::args_os().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("imageserving-supervisor: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    init_tracing(
        LogMode::Supervisor {
            detached: args.detached,
        },
        &args.global,
    );
    let result = home::Home::resolve(args.global.home)
        .map_err(anyhow::Error::from)
        .and_then(|home| daemon::run(&home, args.detached, &args.exe));
    finish(result, false)
}

/// The entry point of `imageserving-server`, the component servers' own program: `ps`, `is`
/// and `svg` run from it, so that the CLI maps none of the image code and starts quicker (see
/// docs/performance.md). Its arguments are read by hand like the daemon's.
pub fn server_entry() -> ExitCode {
    let args = match servers::args::ServerArgs::parse(std::env::args_os().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("imageserving-server: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    init_tracing(LogMode::Component, &args.global);
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(servers::run(&args.name)))
        .map(|()| exit::OK);
    finish(result, true)
}

/// `name` in the directory of `exe`, if it is an executable file there: how each of our programs
/// finds the others (`imageserving-supervisor`, `imageserving-server`) it is installed with.
pub fn installed_beside(exe: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = exe.parent()?.join(name);
    let meta = std::fs::metadata(&path).ok()?;
    (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then_some(path)
}

/// Maps a command's outcome to the exit code, printing the error unless `quiet`.
fn finish(result: anyhow::Result<u8>, quiet: bool) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            let code = exit::code_of(&err);
            let message = format!("{err:#}");
            if !message.is_empty() && !quiet {
                eprintln!("imageserving: {message}");
            }
            ExitCode::from(code)
        }
    }
}

/// Who is logging: the CLI, a component server, or the Server Supervisor.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LogMode {
    Cli,
    Component,
    Supervisor { detached: bool },
}

/// Sets up the one tracing subscriber. Diagnostics go to standard error (the foreground
/// supervisor's and the component servers' log; the CLI's stays quiet unless asked), except in
/// the detached daemon, which writes its own log, `logs/supervisor.log`, rotated by size (see
/// [`daemon::log`]); should that file not open, it logs to standard error
/// (`logs/supervisor.stderr`).
fn init_tracing(mode: LogMode, global: &cli::GlobalArgs) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let daemon = mode != LogMode::Cli;
    let level = match (global.quiet, global.verbose) {
        (true, _) => "error",
        (false, 0) if daemon => "info",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    // ractor wraps every handler in a span carrying the sender's actor id, which misleads more
    // than it helps here: every line names its component instead.
    // `IMAGESERVING_LOG` takes `level` and `target=level` directives, e.g. `debug,ractor=info`
    // (tracing-subscriber's `Targets`: no regex engine mapped into the daemon).
    let default = || format!("{level},ractor=warn").parse::<Targets>();
    let filter = match std::env::var("IMAGESERVING_LOG") {
        Ok(spec) if !spec.trim().is_empty() => spec.parse::<Targets>().or_else(|e| {
            eprintln!(
                "imageserving: IMAGESERVING_LOG=`{spec}` is not a filter ({e}); using `{level}`"
            );
            default()
        }),
        _ => default(),
    }
    .unwrap_or_default();
    let ansi = !daemon && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_target(false);
    // An unusable home fails the command itself, with the reason, right after this.
    let own_log = match mode {
        LogMode::Supervisor { detached: true } => home::Home::resolve(global.home.clone())
            .ok()
            .map(|home| daemon::log::SupervisorLog::open(&home)),
        _ => None,
    };
    let _ = match own_log {
        Some(Ok(log)) => builder
            .with_writer(log)
            .with_ansi(false)
            .finish()
            .with(filter)
            .try_init(),
        Some(Err(e)) => {
            eprintln!("imageserving: {e}; logging to standard error");
            builder
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .finish()
                .with(filter)
                .try_init()
        }
        // A component server's standard error is timestamped line by line by the supervisor.
        None if mode == LogMode::Component => builder
            .without_time()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .finish()
            .with(filter)
            .try_init(),
        None => builder
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .finish()
            .with(filter)
            .try_init(),
    };
}

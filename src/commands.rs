//! One function per command; each returns the exit code (or an error carrying one).

mod check_config;
mod docs;
mod events;
mod logs;
mod reload;
mod restart;
mod start;
mod status;
mod stop;

use std::time::Duration;

use crate::cli::{Cli, Command};
use crate::client::{Client, ConnectError};
use crate::config::{self, Config};
use crate::exit::{self, Exit};
use crate::home::Home;
use crate::protocol::{ErrorKind, Response};

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    // Made from the command line's definition alone: no home needed (packaging runs these).
    match &cli.command {
        Command::Completions { shell } => return docs::completions(*shell),
        Command::Man { dir } => return docs::man(dir.as_deref()),
        _ => {}
    }
    let home = Home::resolve(cli.global.home.clone())?;
    if !matches!(
        cli.command,
        Command::Component { .. } | Command::Logs(_) | Command::CheckConfig { .. }
    ) {
        // Every other command goes through the control socket.
        home.check_socket_path()?;
    }
    match cli.command {
        Command::Start(wait) => start::run(&home, wait.wait),
        Command::Stop => stop::run(&home),
        Command::Restart {
            component: None,
            wait,
        } => restart::all(&home, wait.wait),
        Command::Restart {
            component: Some(name),
            wait,
        } => restart::one(&home, &name, wait.wait),
        Command::Status { component, json } => status::run(&home, component.as_deref(), json),
        Command::Reload(wait) => reload::run(&home, wait.wait),
        Command::Events { json } => events::run(&home, json),
        Command::Logs(args) => logs::run(&home, &args, cli.global.quiet),
        Command::CheckConfig { file } => check_config::run(&home, file.as_deref()),
        Command::Completions { shell } => docs::completions(shell),
        Command::Man { dir } => docs::man(dir.as_deref()),
        Command::Supervisor { detached } => supervisor(&home, detached, &cli.global),
        Command::Component { name } => component(&name, &cli.global),
    }
}

/// `component NAME`: execs `imageserving-server NAME`, the servers' own program, installed beside
/// this one (the configuration names it directly; this is for `@self component` written by hand
/// and for older configurations). The CLI itself carries none of the servers' code.
fn component(name: &str, global: &crate::cli::GlobalArgs) -> anyhow::Result<u8> {
    use std::os::unix::process::CommandExt;
    let exe = anyhow::Context::context(std::env::current_exe(), "finding this program's path")?;
    let Some(server) = crate::servers::args::program_beside(&exe) else {
        return Err(Exit::new(
            exit::FAILED,
            format!(
                "imageserving-server is not installed beside {} (it runs the component servers;                  `cargo build` builds it)",
                exe.display()
            ),
        )
        .into());
    };
    let args = crate::servers::args::ServerArgs {
        name: name.to_string(),
        global: crate::cli::GlobalArgs {
            home: global.home.clone(),
            verbose: global.verbose,
            quiet: global.quiet,
        },
    };
    let err = std::process::Command::new(&server)
        .args(args.to_args())
        .exec();
    Err(anyhow::Error::from(err).context(format!("running {}", server.display())))
}

/// `supervisor`: the daemon, as `imageserving-supervisor` where it is installed (exec'd, so the
/// pid a service manager or a container runtime knows stays the daemon's), else in this process.
fn supervisor(home: &Home, detached: bool, global: &crate::cli::GlobalArgs) -> anyhow::Result<u8> {
    use std::os::unix::process::CommandExt;
    if crate::daemon::program().is_some() {
        let err = crate::daemon::command(home, detached, global.verbose, global.quiet)?.exec();
        return Err(anyhow::Error::from(err).context("running imageserving-supervisor"));
    }
    let exe = std::env::current_exe()?;
    crate::daemon::run(home, detached, &exe)
}

/// Loads the configuration; an invalid one ends the command with exit code 6.
fn load_config(home: &Home) -> anyhow::Result<Config> {
    let exe = std::env::current_exe()?;
    let self_program = crate::servers::args::self_program(exe);
    config::load(home, &self_program).map_err(|e| Exit::new(exit::BAD_CONFIG, e.to_string()).into())
}

/// The configured name of `name` (or alias), or a usage error listing the configured names.
fn resolve_name(config: &Config, name: &str) -> anyhow::Result<String> {
    config.resolve(name).map(String::from).ok_or_else(|| {
        Exit::new(
            exit::USAGE,
            format!(
                "unknown component `{name}`; configured: {}",
                config.component_names().join(", ")
            ),
        )
        .into()
    })
}

/// Connects to the running supervisor; `Ok(None)` when none runs.
fn connect(home: &Home) -> anyhow::Result<Option<Client>> {
    match Client::connect(home) {
        Ok(c) => Ok(Some(c)),
        Err(ConnectError::NotRunning { .. }) => Ok(None),
        Err(e @ ConnectError::PermissionDenied { .. }) => {
            Err(Exit::new(exit::NO_PERMISSION, e.to_string()).into())
        }
        Err(e) => Err(e.into()),
    }
}

/// The message for a home without a supervisor.
fn not_running(home: &Home) -> String {
    format!(
        "Server Supervisor is not running (home: {})",
        home.root().display()
    )
}

/// Turns an error answer into an error with the matching exit code.
fn answer_error(response: Response) -> anyhow::Error {
    match response {
        Response::Error { kind, message } => {
            let code = match kind {
                ErrorKind::UnknownComponent => exit::USAGE,
                ErrorKind::BadConfig => exit::BAD_CONFIG,
                _ => exit::FAILED,
            };
            Exit::new(code, message).into()
        }
        other => anyhow::anyhow!("unexpected answer from the Server Supervisor: {other:?}"),
    }
}

/// How long to wait for an answer to a request that itself waits `wait`.
fn answer_timeout(wait: Duration) -> Duration {
    wait + Duration::from_secs(15)
}

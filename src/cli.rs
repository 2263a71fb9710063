//! The command line (clap). Doc comments here are the `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Control the Image Serving Server Supervisor and its components.
///
/// The Server Supervisor is a daemon that starts the Platform Server (ps), the Image Server (is)
/// and the SVG server (svg), restarts them when they crash, and stops them in order.
#[derive(Debug, Parser)]
#[command(name = "imageserving", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Options of every command. The programs without clap read them by hand (`crate::args`).
#[derive(Debug, PartialEq, Eq, Args)]
pub struct GlobalArgs {
    /// The home directory (conf/, logs/, run/, images/). Default: /var/lib/imageserving for
    /// root, else $XDG_DATA_HOME/imageserving or ~/.local/share/imageserving.
    #[arg(long, global = true, env = "IMAGESERVING_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,

    /// More diagnostics on standard error (-vv for debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Print only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the Server Supervisor (if needed) and every component.
    Start(WaitArgs),
    /// Stop every component in reverse dependency order, then the Server Supervisor.
    Stop,
    /// Restart everything, the Server Supervisor included; or only the named component.
    Restart {
        /// The component to restart (ps, is, svg, or an alias such as image-server).
        component: Option<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Show the Server Supervisor and each component: state, pid, uptime, memory, restarts.
    Status {
        /// Only this component (its exit code says whether it runs).
        component: Option<String>,
        /// Print one JSON document (the shape is documented in docs/status-json.md).
        #[arg(long)]
        json: bool,
    },
    /// Re-read the configuration and apply the difference: restart only the components whose
    /// settings changed, start added ones, stop removed ones; the others keep running
    /// untouched. An invalid configuration changes nothing and says why (exit 6). SIGHUP to
    /// the Server Supervisor does the same.
    Reload(WaitArgs),
    /// Follow the components' lifecycle events, one line each, as they happen (spawned,
    /// running, exited, backoff, fatal, stopping, stopped, completed, unhealthy, memory_limit).
    /// Runs until interrupted or the Server Supervisor exits.
    Events {
        /// One JSON object per line (the fields are documented in docs/status-json.md).
        #[arg(long)]
        json: bool,
    },
    /// Print the last lines of a component's log, or of the Server Supervisor's; -f follows it.
    ///
    /// Reads the files the configuration gives the component: `logs/<name>.log`, and
    /// `logs/<name>.stderr.log` too with `log_stderr` (each under a `==> file <==` header). When
    /// the log holds fewer lines than asked for since its last rotation, the rest comes from
    /// the rotated files (`<name>.log.1`, ...). A component with `log_to_supervisor` has its lines
    /// read from logs/supervisor.stderr, where a supervisor started by `start` writes them.
    /// `supervisor` shows the Server Supervisor's own log, logs/supervisor.log. Works whether or
    /// not the supervisor runs; a log that does not exist yet is an error, except with -f.
    Logs(LogsArgs),
    /// Check a configuration file and show what `start` would run, without running anything.
    ///
    /// Validates FILE (default: conf/imageserving.toml in the home, or the embedded default
    /// when that file does not exist) exactly as `start` does, then prints the components in
    /// start order with their command, port, dependencies, restart type and policy, readiness
    /// and liveness checks, memory limit and log. Exit code 0 when it is valid; 6, with the file
    /// and the key at fault, when it is not. Needs no supervisor and creates no file.
    CheckConfig {
        /// The configuration to check (default: conf/imageserving.toml in the home).
        file: Option<PathBuf>,
    },
    /// Run the Server Supervisor in the foreground (for systemd Type=simple and containers):
    /// logs to standard error; SIGTERM or SIGINT stops everything in order and exits 0.
    Supervisor {
        /// Started by `start`: do not start the components (the caller asks for that).
        #[arg(long, hide = true)]
        detached: bool,
    },
    /// Print the completion script of a shell: bash, zsh, fish, elvish or powershell.
    ///
    /// For example `imageserving completions bash > /etc/bash_completion.d/imageserving`,
    /// `imageserving completions zsh > /usr/local/share/zsh/site-functions/_imageserving` or
    /// `imageserving completions fish > ~/.config/fish/completions/imageserving.fish`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page of imageserving (roff), or write every command's page into a directory.
    ///
    /// Without --dir, prints imageserving.1 (`imageserving man | man -l -` shows it); with
    /// --dir, writes imageserving.1 and one `imageserving-<command>.1` per command there, e.g.
    /// `imageserving man --dir /usr/local/share/man/man1`.
    Man {
        /// Write the pages into this directory (created if needed) instead of printing one.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Run a component server: ps, is or svg (started by the supervisor, not by hand).
    #[command(hide = true)]
    Component {
        /// ps, is or svg.
        name: String,
    },
}

/// What `logs` shows.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The component (ps, is, svg, or an alias such as image-server), or `supervisor` for the
    /// Server Supervisor's own log.
    pub component: String,
    /// Keep printing lines as they are written, across rotations, until interrupted (Ctrl-C);
    /// a log that does not exist yet is waited for.
    #[arg(short, long)]
    pub follow: bool,
    /// How many of the last lines to print (0: none; with -f, only new lines).
    #[arg(short = 'n', long, value_name = "N", default_value_t = 10)]
    pub lines: usize,
}

/// How long `start` and `restart` wait for the components.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Give up waiting for the components after this long (e.g. 30s, 2m); default: the
    /// configuration's `start_wait` (60s).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub wait: Option<std::time::Duration>,
}

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

/// Options of every command.
#[derive(Debug, Args)]
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
    /// Run the Server Supervisor in the foreground (for systemd Type=simple and containers):
    /// logs to standard error; SIGTERM or SIGINT stops everything in order and exits 0.
    Supervisor {
        /// Started by `start`: do not start the components (the caller asks for that).
        #[arg(long, hide = true)]
        detached: bool,
    },
    /// Run a component server: ps, is or svg (started by the supervisor, not by hand).
    #[command(hide = true)]
    Component {
        /// ps, is or svg.
        name: String,
    },
}

/// How long `start` and `restart` wait for the components.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Give up waiting for the components after this long (e.g. 30s, 2m); default: the
    /// configuration's `start_wait` (60s).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub wait: Option<std::time::Duration>,
}

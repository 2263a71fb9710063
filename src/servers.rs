//! The three component servers, each run by the supervisor as `imageserving component <name>`:
//!
//! - [`platform_server`] (`ps`): the public HTTP front end of the URL protocol;
//! - [`image_server`] (`is`): decodes, processes and encodes images;
//! - [`svg_server`] (`svg`): rasterises SVG sources for `is`.
//!
//! They find each other through the environment the supervisor sets (see
//! `docs/configuration.md`): `IMAGESERVING_LISTEN`, `IMAGESERVING_HOME`,
//! `IMAGESERVING_IS_ADDR`, `IMAGESERVING_SVG_ADDR`. Each module exposes a `serve` function that
//! takes a bound listener and a shutdown future, so tests run them in-process on ephemeral ports.

pub mod args;
pub mod http;
pub mod image_server;
pub mod platform_server;
pub mod svg_server;

use std::future::Future;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

/// Runs the server of component `name` (`ps`, `is` or `svg`) from the environment the
/// supervisor set, until SIGTERM or SIGINT; then it stops accepting, lets the requests in
/// flight finish, and returns.
pub async fn run(name: &str) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    let result = match name {
        "ps" => platform_server::run_from_env(shutdown).await,
        "is" => image_server::run_from_env(shutdown).await,
        "svg" => svg_server::run_from_env(shutdown).await,
        other => anyhow::bail!("no component server is called `{other}` (ps, is, svg)"),
    };
    if let Err(e) = &result {
        // The supervisor shows the exit status; the reason goes to the component's log.
        let error = format!("{e:#}");
        tracing::error!(component = name, %error, "stopped on an error");
    }
    result
}

/// Completes on SIGTERM or SIGINT.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

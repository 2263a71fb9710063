//! The three component servers, each run by the supervisor as `imageserving component <name>`:
//!
//! - [`platform_server`] (`ps`): the public HTTP front end of the URL protocol;
//! - [`image_server`] (`is`): decodes, processes and encodes images;
//! - [`svg_server`] (`svg`): rasterises SVG sources for `is`, which talks to it with
//!   [`svg_client`].
//!
//! All three serve HTTP/1.1 through one skeleton, [`http`]: the accept loop, the connection
//! cap and the other limits, the graceful stop, and one log convention (a `component` field on
//! every line). What each server answers is specified in `docs/image-serving.md`.
//!
//! They find each other through the environment the supervisor sets (see
//! `docs/configuration.md`): `IMAGESERVING_LISTEN`, `IMAGESERVING_HOME`,
//! `IMAGESERVING_IS_ADDR`, `IMAGESERVING_SVG_ADDR`. A server takes the listening socket it is
//! given with the systemd protocol instead of binding `IMAGESERVING_LISTEN` (see [`listen`]).
//! Each module exposes a `serve` function that
//! takes a bound listener and a shutdown future, so tests run them in-process on ephemeral ports.

pub mod args;
pub mod hold;
pub mod http;
pub mod image_server;
pub mod listen;
pub mod notify;
pub mod platform_server;
pub mod svg_client;
pub mod svg_server;
pub mod upstream;

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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::http::HttpLimits;
    use super::{image_server, platform_server, svg_server};

    /// A duration as the documentation writes it: `30 s`, `50 ms`.
    fn shown(duration: Duration) -> String {
        if duration.subsec_nanos() == 0 {
            format!("{} s", duration.as_secs())
        } else {
            format!("{} ms", duration.as_millis())
        }
    }

    #[test]
    fn the_documented_http_limits_are_the_servers_own() {
        let doc = include_str!("../docs/image-serving.md");
        // The `ps`, `is` and `svg` cells of a row of the table.
        let row = |name: &str| -> Vec<&str> {
            let line = doc
                .lines()
                .find(|line| line.starts_with(&format!("| {name} |")))
                .unwrap_or_else(|| panic!("docs/image-serving.md has no row `{name}`"));
            line.split('|').map(str::trim).skip(2).take(3).collect()
        };
        let limits = [
            platform_server::HTTP_LIMITS,
            image_server::HTTP_LIMITS,
            svg_server::HTTP_LIMITS,
        ];
        let cells = |cell: fn(&HttpLimits) -> String| limits.iter().map(cell).collect::<Vec<_>>();
        assert_eq!(
            row("connections served at once"),
            cells(|l| l.max_connections.to_string())
        );
        assert_eq!(
            row("request head deadline"),
            cells(|l| shown(l.header_read_timeout))
        );
        assert_eq!(
            row("largest request head"),
            cells(|l| format!("{} KiB", l.max_head_bytes / 1024))
        );
        assert!(limits.iter().all(|l| l.max_head_bytes % 1024 == 0));
        assert_eq!(
            row("pause after a failed accept"),
            cells(|l| shown(l.accept_backoff))
        );
        // `is` drains for as long as its requests may take, and a margin.
        let drain = image_server::HTTP_LIMITS.drain_deadline;
        assert_eq!(
            drain,
            image_server::DEFAULT_REQUEST_TIMEOUT + image_server::DRAIN_MARGIN
        );
        assert_eq!(
            row("graceful drain"),
            [
                shown(platform_server::HTTP_LIMITS.drain_deadline),
                format!(
                    "the request deadline + {} ({})",
                    shown(image_server::DRAIN_MARGIN),
                    shown(drain)
                ),
                shown(svg_server::HTTP_LIMITS.drain_deadline),
            ]
        );
    }
}

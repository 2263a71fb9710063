//! The client of the SVG server, used by `is`: [`SvgClient`] speaks the protocol that
//! `crate::servers::svg_server` documents and turns every answer that is not a `200` back into
//! the [`ImageError`] the server made, so that `is` answers with the server's own status and
//! message. A server that cannot be reached is a `503`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde::Deserialize;
use tracing::warn;

use crate::imaging::ImageError;
use crate::servers::hold::HoldPolicy;
use crate::servers::svg_server::{
    HEALTH_PATH, HEIGHT_HEADER, RENDER_PATH, SIZE_PATH, WIDTH_HEADER,
};
use crate::servers::upstream::{Answer, Call, Upstream, UpstreamError};

/// How long the client waits for a connection to the SVG server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the client waits for a whole answer; more than the server's render deadline, so
/// that the server's own 503 arrives first.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long [`SvgClient::is_healthy`] waits for the answer of `GET /healthz`.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// The largest error or size answer the client reads.
const MAX_SMALL_ANSWER: usize = 64 * 1024;

/// The client of the SVG server, used by `is`. Cheap to clone; connections are kept alive and
/// reused, and a call is held while the server restarts ([`crate::servers::hold`]).
#[derive(Clone, Debug)]
pub struct SvgClient {
    /// The SVG server's address, `host:port`.
    addr: Arc<str>,
    /// The HTTP client, its holding queue and quarantine.
    upstream: Arc<Upstream>,
}

/// The JSON of a `/size` answer.
#[derive(Deserialize)]
struct SizeAnswer {
    width: f64,
    height: f64,
}

impl SvgClient {
    /// A client of the SVG server at `addr` (`host:port`), holding calls as `policy` says.
    /// Connects lazily; fails only on an address that is not `host:port`.
    pub fn new(addr: String, policy: HoldPolicy) -> anyhow::Result<Self> {
        let upstream = Upstream::new("is", &addr, HEALTH_PATH, CONNECT_TIMEOUT, policy)?;
        Ok(SvgClient {
            addr: addr.into(),
            upstream: Arc::new(upstream),
        })
    }

    /// Whether the SVG server answers `GET /healthz` with 200 within [`HEALTH_TIMEOUT`].
    pub async fn is_healthy(&self) -> bool {
        let call = Call {
            method: Method::GET,
            path: HEALTH_PATH,
            content_type: "",
            body: Bytes::new(),
            limit: MAX_SMALL_ANSWER,
            deadline: HEALTH_TIMEOUT,
            held: false,
        };
        matches!(self.upstream.exchange(call).await, Ok(answer) if answer.status == StatusCode::OK)
    }

    /// The intrinsic size of an SVG source, in CSS pixels.
    pub async fn size(&self, svg: Bytes) -> Result<(f64, f64), ImageError> {
        let answer = self.call(SIZE_PATH, svg, MAX_SMALL_ANSWER).await?;
        let size: SizeAnswer = serde_json::from_slice(&answer.body).map_err(|err| {
            ImageError::internal(format!("the svg server sent an unreadable size: {err}"))
        })?;
        let valid = |side: f64| side.is_finite() && side > 0.0;
        if !valid(size.width) || !valid(size.height) {
            return Err(ImageError::internal(format!(
                "the svg server sent an invalid size {}×{}",
                size.width, size.height
            )));
        }
        Ok((size.width, size.height))
    }

    /// The SVG source rendered at exactly `width`×`height`, on a transparent background.
    pub async fn render(
        &self,
        svg: Bytes,
        width: u32,
        height: u32,
    ) -> Result<image::RgbaImage, ImageError> {
        let expected = u64::from(width) * u64::from(height) * 4;
        let expected = usize::try_from(expected).map_err(|_| {
            ImageError::internal(format!("a {width}×{height} image does not fit in memory"))
        })?;
        let path = format!("{RENDER_PATH}?width={width}&height={height}");
        let answer = self
            .call(&path, svg, expected.max(MAX_SMALL_ANSWER))
            .await?;
        let header = |name: &str| {
            answer
                .headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse::<u32>().ok())
        };
        if header(WIDTH_HEADER) != Some(width) || header(HEIGHT_HEADER) != Some(height) {
            return Err(ImageError::internal(format!(
                "the svg server did not answer with a {width}×{height} image"
            )));
        }
        let received = answer.body.len();
        image::RgbaImage::from_raw(width, height, answer.body.to_vec()).ok_or_else(|| {
            ImageError::internal(format!(
                "the svg server sent {received} bytes for a {width}×{height} image"
            ))
        })
    }

    /// Posts `svg` to `path`, held while the server restarts, and returns a 200 answer read
    /// whole (at most `limit` bytes); any other answer becomes an error with its status and
    /// message. The whole exchange is bounded by [`REQUEST_TIMEOUT`].
    async fn call(&self, path: &str, svg: Bytes, limit: usize) -> Result<Answer, ImageError> {
        let call = Call {
            method: Method::POST,
            path,
            content_type: "image/svg+xml",
            body: svg,
            limit,
            deadline: REQUEST_TIMEOUT,
            held: true,
        };
        let answer = self.upstream.exchange(call).await.map_err(|err| match err {
            UpstreamError::Unavailable(why) => {
                warn!(component = "is", addr = %self.addr, error = %why, "svg server unavailable");
                ImageError::unavailable("svg server is not reachable")
            }
            UpstreamError::Busy => ImageError::unavailable("svg server is not reachable"),
            UpstreamError::TimedOut => ImageError::timeout(format!(
                "svg server did not answer within {REQUEST_TIMEOUT:?}"
            )),
            UpstreamError::Invalid(why) => {
                ImageError::internal(format!("unusable answer from the svg server: {why}"))
            }
            UpstreamError::Quarantined { .. } => ImageError::internal(
                "request quarantined: the svg server failed twice while working on it",
            ),
        })?;
        if answer.status == StatusCode::OK {
            return Ok(answer);
        }
        let status = answer.status;
        let message = String::from_utf8_lossy(&answer.body).trim().to_owned();
        let message = if message.is_empty() {
            format!("svg server answered {status}")
        } else {
            message
        };
        Err(ImageError::new(status.as_u16(), message))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::net::TcpListener;

    use super::*;

    #[tokio::test]
    async fn a_closed_port_is_held_for_the_wait_then_gets_503() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let started = Instant::now();
        let wait = Duration::from_millis(300);
        let policy = HoldPolicy {
            wait,
            ..HoldPolicy::default()
        };
        let client = SvgClient::new(addr, policy).unwrap();
        let error = client
            .size(Bytes::from_static(b"<svg/>"))
            .await
            .unwrap_err();
        assert_eq!(error.status, 503, "{error}");
        let held = started.elapsed();
        assert!(held >= wait - Duration::from_millis(100), "{held:?}");
        // A health check is not held.
        let started = Instant::now();
        assert!(!client.is_healthy().await);
        assert!(started.elapsed() < wait, "{:?}", started.elapsed());
    }
}

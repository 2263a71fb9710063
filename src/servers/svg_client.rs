//! The client of the SVG server, used by `is`: [`SvgClient`] speaks the protocol that
//! `crate::servers::svg_server` documents and turns every answer that is not a `200` back into
//! the [`ImageError`] the server made, so that `is` answers with the server's own status and
//! message. A server that cannot be reached is a `503`.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::Deserialize;
use tracing::warn;

use crate::imaging::ImageError;
use crate::servers::http::error_chain;
use crate::servers::svg_server::{
    HEALTH_PATH, HEIGHT_HEADER, RENDER_PATH, SIZE_PATH, WIDTH_HEADER,
};

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
/// reused.
#[derive(Clone, Debug)]
pub struct SvgClient {
    /// The SVG server's address, `host:port`.
    addr: String,
    /// A keep-alive pool of HTTP/1.1 connections to it.
    http: Client<HttpConnector, Full<Bytes>>,
}

/// The JSON of a `/size` answer.
#[derive(Deserialize)]
struct SizeAnswer {
    width: f64,
    height: f64,
}

impl SvgClient {
    /// A client of the SVG server at `addr` (`host:port`). Connects lazily.
    pub fn new(addr: String) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        SvgClient { addr, http }
    }

    /// Whether the SVG server answers `GET /healthz` with 200 within [`HEALTH_TIMEOUT`].
    pub async fn is_healthy(&self) -> bool {
        let Ok(uri) = format!("http://{}{HEALTH_PATH}", self.addr).parse::<hyper::Uri>() else {
            return false;
        };
        match tokio::time::timeout(HEALTH_TIMEOUT, self.http.get(uri)).await {
            Ok(Ok(response)) => response.status() == StatusCode::OK,
            _ => false,
        }
    }

    /// The intrinsic size of an SVG source, in CSS pixels.
    pub async fn size(&self, svg: Bytes) -> Result<(f64, f64), ImageError> {
        self.call(SIZE_PATH, svg, |response| async move {
            let body = read_limited(response.into_body(), MAX_SMALL_ANSWER).await?;
            let size: SizeAnswer = serde_json::from_slice(&body).map_err(|err| {
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
        })
        .await
    }

    /// The SVG source rendered at exactly `width`×`height`, on a transparent background.
    pub async fn render(
        &self,
        svg: Bytes,
        width: u32,
        height: u32,
    ) -> Result<image::RgbaImage, ImageError> {
        let path = format!("{RENDER_PATH}?width={width}&height={height}");
        self.call(&path, svg, |response| async move {
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.parse::<u32>().ok())
            };
            if header(WIDTH_HEADER) != Some(width) || header(HEIGHT_HEADER) != Some(height) {
                return Err(ImageError::internal(format!(
                    "the svg server did not answer with a {width}×{height} image"
                )));
            }
            let expected = u64::from(width) * u64::from(height) * 4;
            let expected = usize::try_from(expected).map_err(|_| {
                ImageError::internal(format!("a {width}×{height} image does not fit in memory"))
            })?;
            let body = read_limited(response.into_body(), expected).await?;
            let received = body.len();
            image::RgbaImage::from_raw(width, height, body.to_vec()).ok_or_else(|| {
                ImageError::internal(format!(
                    "the svg server sent {received} bytes for a {width}×{height} image"
                ))
            })
        })
        .await
    }

    /// Posts `svg` to `path` and hands a 200 answer to `read`; any other answer becomes an
    /// error with its status and message. The whole exchange is bounded by
    /// [`REQUEST_TIMEOUT`].
    async fn call<T, F, R>(&self, path: &str, svg: Bytes, read: R) -> Result<T, ImageError>
    where
        R: FnOnce(Response<Incoming>) -> F,
        F: Future<Output = Result<T, ImageError>>,
    {
        let uri = format!("http://{}{path}", self.addr);
        let request = Request::post(uri.as_str())
            .header(CONTENT_TYPE, "image/svg+xml")
            .body(Full::new(svg))
            .map_err(|err| ImageError::internal(format!("bad svg server request: {err}")))?;
        let exchange = async {
            let response = self.http.request(request).await.map_err(|err| {
                warn!(component = "is", addr = %self.addr, error = %error_chain(&err), "svg server unreachable");
                if err.is_connect() {
                    ImageError::unavailable("svg server is not reachable")
                } else {
                    ImageError::unavailable("svg server connection failed")
                }
            })?;
            if response.status() == StatusCode::OK {
                return read(response).await;
            }
            let status = response.status();
            let body = read_limited(response.into_body(), MAX_SMALL_ANSWER)
                .await
                .unwrap_or_default();
            let message = String::from_utf8_lossy(&body).trim().to_owned();
            let message = if message.is_empty() {
                format!("svg server answered {status}")
            } else {
                message
            };
            Err(ImageError::new(status.as_u16(), message))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(ImageError::timeout(format!(
                    "svg server did not answer within {REQUEST_TIMEOUT:?}"
                )))
            })
    }
}

/// Reads an answer body of at most `limit` bytes.
async fn read_limited(body: Incoming, limit: usize) -> Result<Bytes, ImageError> {
    Limited::new(body, limit)
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .map_err(|err| {
            if err.is::<http_body_util::LengthLimitError>() {
                ImageError::internal(format!("the svg server sent more than {limit} bytes"))
            } else {
                ImageError::unavailable("svg server connection failed while answering")
            }
        })
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::net::TcpListener;

    use super::*;

    #[tokio::test]
    async fn a_closed_port_gets_503_quickly() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let started = Instant::now();
        let client = SvgClient::new(addr);
        let error = client
            .size(Bytes::from_static(b"<svg/>"))
            .await
            .unwrap_err();
        assert_eq!(error.status, 503, "{error}");
        assert!(!client.is_healthy().await);
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}

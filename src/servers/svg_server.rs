//! The SVG server (`svg`): rasterises SVG 1.1 sources with resvg for the Image Server.
//!
//! `is` reads an SVG source from its catalog, asks `svg` for its intrinsic size, computes the
//! size it wants (keeping the aspect ratio where the request says so), asks `svg` to render at
//! exactly that size, and goes on with the pixels like any decoded image. This module is the
//! HTTP server: the parsing, the checks and the rendering are [`crate::imaging::svg`], and
//! [`SvgClient`] is the client `is` talks to it with.
//!
//! [`SvgClient`]: crate::servers::svg_client::SvgClient
//!
//! ```text
//!  is ──POST /size   (SVG bytes)──────────────────▶ svg ──▶ {"width": 200.0, "height": 100.0}
//!  is ──POST /render?width=W&height=H (SVG bytes)─▶ svg ──▶ W×H×4 bytes of RGBA8
//! ```
//!
//! # The protocol (HTTP/1.1, keep-alive)
//!
//! | request | answer |
//! |---|---|
//! | `POST /size`, body: the SVG | `200 application/json` `{"width": f64, "height": f64}`: the size after parsing, in CSS pixels |
//! | `POST /render?width=W&height=H`, body: the SVG | `200 application/octet-stream`, headers `x-width: W`, `x-height: H`; the body is W×H pixels of RGBA8, straight (not premultiplied) alpha, row-major, top row first: exactly W×H×4 bytes. The whole picture is scaled to W×H, non-uniformly if the ratio differs, on a transparent background |
//! | `GET /healthz` | `200 ok svg` |
//! | another path | `404` |
//! | another method | `405` with `Allow` |
//!
//! Errors are `text/plain`, one line, the message of an [`ImageError`] with its status, so that
//! [`SvgClient`] gives `is` back the very error the server made:
//!
//! | status | when |
//! |---|---|
//! | 403 | the source does not parse (the parser's message), an `<image>` links outside the document, or its intrinsic size is absurd (more than [`svg::MAX_INTRINSIC_SIDE`] a side); `width` or `height` missing, not a whole number, or 0; W×H more than `max_svg_pix`; DTD entities expanding past `max_svg_bytes`; a render needing more than [`svg::OFFSCREEN_FACTOR`] × `max_svg_pix` pixels of intermediate buffers, or too complex to even estimate |
//! | 408 | the request body arrived too slowly (10 s) |
//! | 413 | the body is larger than `max_svg_bytes` |
//! | 415 | the body is gzip-compressed (svgz) or has a `Content-Encoding` |
//! | 500 | the renderer failed (a bug in it) |
//! | 503 | the parse or render, waiting for a free renderer included, took longer than `render_timeout` |
//!
//! # Limits ([`SvgConfig`])
//!
//! - `max_svg_bytes` (catalog default 1 MiB): the body is read frame by frame and never more
//!   than this is buffered. The rest of a too-large body (up to 64 MiB) is read and thrown away
//!   so that the 413 reaches the client instead of a connection reset.
//! - `max_svg_pix` (catalog default 4 Mpx): W×H of a render.
//! - `render_timeout` (10 s) and `max_concurrent` (the number of cores): parses and renders run
//!   on threads of their own (with a [`svg::STACK_SIZE`] stack), at most `max_concurrent` at a
//!   time. A render cannot be cancelled: when its deadline passes the client gets its 503 at
//!   once, but the render keeps its slot until it really ends, so the bound on concurrent
//!   renders always holds.
//! - Connections and request heads: [`HTTP_LIMITS`].
//!
//! Every document is treated as hostile: what that means, and what is not supported (text,
//! images, svgz), is in [`crate::imaging::svg`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ALLOW, CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE,
};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};
use tracing::{debug, error, info};

use crate::imaging::catalog::Attributes;
use crate::imaging::svg::{self, check_render_size, gzip_refused, is_gzip};
use crate::imaging::ImageError;
use crate::servers::hold;
use crate::servers::http::{self, HttpLimits};

/// The environment variable holding the address to listen on, `host:port`.
pub const ENV_LISTEN: &str = "IMAGESERVING_LISTEN";

/// The health check: `GET` answers `200 ok svg`.
pub const HEALTH_PATH: &str = "/healthz";
/// `POST` an SVG source, get its intrinsic size as JSON.
pub const SIZE_PATH: &str = "/size";
/// `POST` an SVG source with `?width=W&height=H`, get W×H raw RGBA8.
pub const RENDER_PATH: &str = "/render";
/// The header of a render answer giving the width of the pixels in the body.
pub const WIDTH_HEADER: &str = "x-width";
/// The header of a render answer giving the height of the pixels in the body.
pub const HEIGHT_HEADER: &str = "x-height";

/// The HTTP limits of `svg`; their values and what a client sees at each one are in
/// `docs/image-serving.md` (*HTTP limits*).
pub const HTTP_LIMITS: HttpLimits = HttpLimits {
    max_connections: 256,
    // Its client is is, from loopback: no cap per address.
    max_per_client: 0,
    header_read_timeout: Duration::from_secs(10),
    max_head_bytes: http::DEFAULT_MAX_HEAD_BYTES,
    accept_backoff: Duration::from_millis(100),
    drain_deadline: Duration::from_secs(5),
};
/// How long a client has to send a request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a too-large body is read and thrown away so that the 413 answer reaches the
/// client: closing a socket with unread data resets it, and the reset can destroy the answer
/// before the client reads it. A body declared larger than this is answered at once.
const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;
/// The limits the SVG server enforces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SvgConfig {
    /// Largest SVG source accepted, in bytes; a larger body gets 413 and is never buffered.
    pub max_svg_bytes: usize,
    /// Largest rasterisation, in pixels (width × height); a larger one gets 403.
    pub max_svg_pix: u64,
    /// How long one parse or render may take, waiting for a free renderer included; past it the
    /// answer is 503 (the render itself keeps its renderer slot until it ends).
    pub render_timeout: Duration,
    /// How many parses or renders run at once (at least 1); further ones wait for a slot.
    pub max_concurrent: usize,
}

impl Default for SvgConfig {
    fn default() -> Self {
        let attributes = Attributes::default();
        SvgConfig {
            max_svg_bytes: attributes.max_svg_bytes,
            max_svg_pix: attributes.max_svg_pix,
            render_timeout: Duration::from_secs(10),
            max_concurrent: std::thread::available_parallelism().map_or(4, std::num::NonZero::get),
        }
    }
}

/// Runs parses and renders off the async runtime, at most [`SvgConfig::max_concurrent`] at a
/// time, each within [`SvgConfig::render_timeout`].
struct Renderer {
    /// The limits.
    config: SvgConfig,
    /// One permit per render slot. A permit moves into the renderer thread and is released when
    /// the work ends, not when the caller gives up: a render cannot be cancelled, and a timed-out
    /// render still occupies its slot, so the bound on concurrent renders holds.
    slots: Arc<Semaphore>,
}

impl Renderer {
    fn new(config: SvgConfig) -> Self {
        let slots = Arc::new(Semaphore::new(config.max_concurrent.max(1)));
        Renderer { config, slots }
    }

    /// Runs `job` on a renderer thread of its own (see [`svg::STACK_SIZE`]); `what` names it in
    /// the timeout message.
    async fn run<T, F>(&self, what: &str, job: F) -> Result<T, ImageError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, ImageError> + Send + 'static,
    {
        let slots = Arc::clone(&self.slots);
        let work = async move {
            let permit = slots
                .acquire_owned()
                .await
                .map_err(|_| ImageError::unavailable("the svg server is shutting down"))?;
            let (answer, answered) = oneshot::channel();
            std::thread::Builder::new()
                .name("svg-render".to_owned())
                .stack_size(svg::STACK_SIZE)
                .spawn(move || {
                    let _permit = permit;
                    // The caller may have timed out and gone: nobody to tell then.
                    let _ = answer.send(job());
                })
                .map_err(|err| {
                    ImageError::unavailable(format!("cannot start a renderer: {err}"))
                })?;
            answered.await.map_err(|_| {
                // The thread panicked (its message went to standard error): a renderer bug.
                error!(component = "svg", "the renderer panicked");
                ImageError::internal("the SVG renderer failed on this document")
            })?
        };
        let deadline = self.config.render_timeout;
        match tokio::time::timeout(deadline, work).await {
            Ok(result) => result,
            Err(_) => Err(ImageError::timeout(format!(
                "SVG {what} took longer than {deadline:?}"
            ))),
        }
    }
}

/// The response body type of the server.
type Body = Full<Bytes>;

/// A `text/plain` answer.
fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{message}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The answer for an error.
fn error_response(error: &ImageError) -> Response<Body> {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    text(status, &error.message)
}

/// 405 naming the methods the path takes.
fn method_not_allowed(allowed: &'static str) -> Response<Body> {
    let mut response = text(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("method not allowed: use {allowed}"),
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allowed));
    response
}

/// What the server shares between connections.
struct State {
    /// The render slots and limits.
    renderer: Renderer,
}

/// Routes one request.
async fn handle(state: Arc<State>, request: Request<Incoming>) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let result = match path.as_str() {
        HEALTH_PATH => {
            return match method {
                Method::GET | Method::HEAD => {
                    let mut response = text(StatusCode::OK, "ok svg");
                    if let Some(class) = hold::previous_exit_class() {
                        response.headers_mut().insert(
                            hold::PREVIOUS_EXIT_HEADER,
                            hyper::header::HeaderValue::from_static(class),
                        );
                    }
                    response
                }
                _ => method_not_allowed("GET, HEAD"),
            }
        }
        SIZE_PATH | RENDER_PATH if method != Method::POST => return method_not_allowed("POST"),
        SIZE_PATH => size_endpoint(&state, request).await,
        RENDER_PATH => render_endpoint(&state, request).await,
        _ => return text(StatusCode::NOT_FOUND, &format!("no such endpoint: {path}")),
    };
    result.unwrap_or_else(|(error, close)| {
        debug!(component = "svg", %path, status = error.status, message = %error.message, "request refused");
        let mut response = error_response(&error);
        if close {
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        response
    })
}

/// An error answer, and whether the connection must close after it (its request body was not
/// read to the end).
type Refusal = (ImageError, bool);

/// `POST /size`: the intrinsic size as JSON.
async fn size_endpoint(
    state: &State,
    request: Request<Incoming>,
) -> Result<Response<Body>, Refusal> {
    let svg = read_svg(request, state.renderer.config.max_svg_bytes).await?;
    let max_svg_bytes = state.renderer.config.max_svg_bytes;
    let (width, height) = state
        .renderer
        .run("parse", move || svg::intrinsic_size(&svg, max_svg_bytes))
        .await
        .map_err(|error| (error, false))?;
    let json = serde_json::json!({ "width": width, "height": height }).to_string();
    let mut response = Response::new(Full::new(Bytes::from(json)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// `POST /render?width=W&height=H`: W×H RGBA8 pixels.
async fn render_endpoint(
    state: &State,
    request: Request<Incoming>,
) -> Result<Response<Body>, Refusal> {
    let query = request.uri().query().unwrap_or("").to_owned();
    // The body is read before the query is judged, so that a refusal never leaves unread data.
    let svg = read_svg(request, state.renderer.config.max_svg_bytes).await?;
    let (width, height) = render_size(&query).map_err(|error| (error, false))?;
    let config = &state.renderer.config;
    check_render_size(width, height, config.max_svg_pix).map_err(|error| (error, false))?;
    let (max_svg_bytes, max_svg_pix) = (config.max_svg_bytes, config.max_svg_pix);
    let rgba = state
        .renderer
        .run("render", move || {
            svg::render(&svg, width, height, max_svg_bytes, max_svg_pix)
        })
        .await
        .map_err(|error| (error, false))?;
    let mut response = Response::new(Full::new(Bytes::from(rgba)));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(WIDTH_HEADER, HeaderValue::from(width));
    headers.insert(HEIGHT_HEADER, HeaderValue::from(height));
    Ok(response)
}

/// The `width` and `height` of a render query.
fn render_size(query: &str) -> Result<(u32, u32), ImageError> {
    let mut width = None;
    let mut height = None;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match name {
            "width" => &mut width,
            "height" => &mut height,
            _ => {
                return Err(ImageError::unsupported(format!(
                    "render parameter `{name}`"
                )))
            }
        };
        let parsed = value
            .parse::<u32>()
            .map_err(|_| ImageError::bad_value(name, value, "not a whole number of pixels"))?;
        *slot = Some(parsed);
    }
    match (width, height) {
        (Some(width), Some(height)) => Ok((width, height)),
        _ => Err(ImageError::new(
            403,
            "a render needs both `width` and `height`",
        )),
    }
}

/// Reads an SVG source: at most `limit` bytes are ever buffered; a larger body is refused
/// with 413, and compressed bodies with 415.
async fn read_svg(request: Request<Incoming>, limit: usize) -> Result<Bytes, Refusal> {
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let too_large = || ImageError::new(413, format!("SVG source is larger than {limit} bytes"));
    if declared.is_some_and(|length| length > DRAIN_LIMIT) {
        return Err((too_large(), true));
    }
    let compressed = request
        .headers()
        .get(CONTENT_ENCODING)
        .is_some_and(|value| value.as_bytes() != b"identity");
    let mut body = request.into_body();
    let read = async {
        let mut svg = BytesMut::new();
        let mut drained: u64 = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|err| {
                (
                    ImageError::new(400, format!("cannot read the request body: {err}")),
                    true,
                )
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if drained == 0 && svg.len() + data.len() <= limit {
                svg.extend_from_slice(&data);
            } else {
                svg = BytesMut::new();
                drained += data.len() as u64;
                if drained > DRAIN_LIMIT {
                    return Err((too_large(), true));
                }
            }
        }
        if drained > 0 {
            return Err((too_large(), false));
        }
        Ok(svg.freeze())
    };
    let svg = tokio::time::timeout(BODY_TIMEOUT, read)
        .await
        .map_err(|_| {
            (
                ImageError::new(
                    408,
                    format!("the request body took longer than {BODY_TIMEOUT:?}"),
                ),
                true,
            )
        })??;
    if compressed || is_gzip(&svg) {
        return Err((gzip_refused(), false));
    }
    Ok(svg)
}

/// Serves the SVG protocol on `listener` until `shutdown` completes, then stops as
/// [`HTTP_LIMITS`] says (see [`http::serve`]).
pub async fn serve(
    listener: TcpListener,
    config: SvgConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = Arc::new(State {
        renderer: Renderer::new(config),
    });
    http::serve(
        "svg",
        listener,
        HTTP_LIMITS,
        shutdown,
        move |request, _peer| {
            let state = Arc::clone(&state);
            async move { handle(state, request).await }
        },
    )
    .await;
    Ok(())
}

/// Runs the SVG server as the supervisor starts it: listens on `IMAGESERVING_LISTEN` with the
/// default limits until `shutdown` completes.
pub async fn run_from_env(
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listen = std::env::var(ENV_LISTEN)
        .with_context(|| format!("{ENV_LISTEN} is not set: where should svg listen?"))?;
    let listener = super::listen::listener(&listen).await?;
    let addr = listener.local_addr().context("no local address")?;
    info!(component = "svg", %addr, "listening");
    serve(listener, SvgConfig::default(), shutdown).await?;
    info!(component = "svg", "stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use resvg::usvg;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::task::{JoinHandle, JoinSet};

    use super::*;
    use crate::servers::hold::HoldPolicy;
    use crate::servers::svg_client::SvgClient;

    const MIB: usize = 1024 * 1024;
    /// The bound of every test that talks to a server.
    const TEST_DEADLINE: Duration = Duration::from_secs(30);

    /// `<svg width="200" height="100">` whose left half is opaque red.
    const HALF_RED: &str = r#"<svg xmlns="http://www.w3.org/2000/svg" width="200" height="100"><rect width="100" height="100" fill="red"/></svg>"#;

    /// A server on an ephemeral port, stopped and awaited when dropped.
    struct TestServer {
        addr: String,
        stop: Option<oneshot::Sender<()>>,
        task: Option<JoinHandle<anyhow::Result<()>>>,
    }

    impl TestServer {
        async fn start(config: SvgConfig) -> TestServer {
            Self::start_on("127.0.0.1:0", config).await
        }

        async fn start_on(addr: &str, config: SvgConfig) -> TestServer {
            let listener = TcpListener::bind(addr).await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(serve(listener, config, async move {
                let _ = stopped.await;
            }));
            TestServer {
                addr,
                stop: Some(stop),
                task: Some(task),
            }
        }

        fn client(&self) -> SvgClient {
            SvgClient::new(self.addr.clone(), HoldPolicy::default()).unwrap()
        }

        /// Stops the server and waits for `serve` to return.
        async fn shutdown(mut self) -> anyhow::Result<()> {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            let task = self.task.take().unwrap();
            tokio::time::timeout(TEST_DEADLINE, task)
                .await
                .unwrap()
                .unwrap()
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            if let Some(task) = self.task.take() {
                task.abort();
            }
        }
    }

    /// Runs `test` bounded by [`TEST_DEADLINE`].
    async fn bounded<T>(test: impl Future<Output = T>) -> T {
        tokio::time::timeout(TEST_DEADLINE, test)
            .await
            .expect("the test took too long")
    }

    /// One raw HTTP/1.1 exchange (`Connection: close`), answering the status and the body.
    async fn raw(addr: &str, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: svg\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status = answer[9..12].parse().unwrap();
        let body = answer.split_once("\r\n\r\n").unwrap().1.to_owned();
        (status, body)
    }

    fn pixel(image: &image::RgbaImage, x: u32, y: u32) -> [u8; 4] {
        image.get_pixel(x, y).0
    }

    #[test]
    fn render_parameters_are_parsed_strictly() {
        assert_eq!(render_size("width=40&height=20").unwrap(), (40, 20));
        assert_eq!(render_size("height=2&width=1").unwrap(), (1, 2));
        assert_eq!(render_size("width=40").unwrap_err().status, 403);
        assert_eq!(render_size("width=-1&height=2").unwrap_err().status, 403);
        assert_eq!(render_size("width=1.5&height=2").unwrap_err().status, 403);
        assert_eq!(render_size("width=1&height=2&x=3").unwrap_err().status, 403);
    }

    #[tokio::test]
    async fn size_of_a_simple_svg() {
        bounded(async {
            let server = TestServer::start(SvgConfig::default()).await;
            let size = server.client().size(Bytes::from(HALF_RED)).await.unwrap();
            assert_eq!(size, (200.0, 100.0));
            let viewbox = r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 30 10"/>"#;
            let size = server.client().size(Bytes::from(viewbox)).await.unwrap();
            assert_eq!(size, (30.0, 10.0));
        })
        .await;
    }

    #[tokio::test]
    async fn render_scales_to_the_requested_size() {
        bounded(async {
            let server = TestServer::start(SvgConfig::default()).await;
            let client = server.client();
            let image = client.render(Bytes::from(HALF_RED), 40, 20).await.unwrap();
            assert_eq!(image.dimensions(), (40, 20));
            assert_eq!(pixel(&image, 5, 10), [255, 0, 0, 255]);
            assert_eq!(pixel(&image, 35, 10), [0, 0, 0, 0]);
            // Non-uniform scaling: the red half stays the left half.
            let image = client.render(Bytes::from(HALF_RED), 10, 30).await.unwrap();
            assert_eq!(pixel(&image, 2, 29), [255, 0, 0, 255]);
            assert_eq!(pixel(&image, 7, 0), [0, 0, 0, 0]);
        })
        .await;
    }

    #[tokio::test]
    async fn an_oversized_body_gets_413() {
        bounded(async {
            let server = TestServer::start(SvgConfig::default()).await;
            let client = server.client();
            let mut svg = HALF_RED.as_bytes().to_vec();
            svg.resize(MIB + 1, b' ');
            let error = client.size(Bytes::from(svg.clone())).await.unwrap_err();
            assert_eq!(error.status, 413, "{error}");
            // Right at the limit is fine (trailing white space after the root element is).
            svg.truncate(MIB);
            assert_eq!(client.size(Bytes::from(svg)).await.unwrap(), (200.0, 100.0));
            // The connection pool still works after a refusal.
            let error = client
                .render(Bytes::from(vec![b' '; 3 * MIB]), 10, 10)
                .await
                .unwrap_err();
            assert_eq!(error.status, 413, "{error}");
            assert!(client.size(Bytes::from(HALF_RED)).await.is_ok());
        })
        .await;
    }

    #[tokio::test]
    async fn too_many_pixels_get_403() {
        bounded(async {
            let server = TestServer::start(SvgConfig::default()).await;
            let client = server.client();
            let error = client
                .render(Bytes::from(HALF_RED), 2001, 2000)
                .await
                .unwrap_err();
            assert_eq!(error.status, 403);
            assert!(error.message.contains("4000000"), "{error}");
            let error = client
                .render(Bytes::from(HALF_RED), 0, 20)
                .await
                .unwrap_err();
            assert_eq!(error.status, 403);
        })
        .await;
    }

    #[tokio::test]
    async fn garbage_gets_403_with_the_parser_message() {
        bounded(async {
            let server = TestServer::start(SvgConfig::default()).await;
            let client = server.client();
            let error = client
                .size(Bytes::from_static(b"this is not <svg at all"))
                .await
                .unwrap_err();
            assert_eq!(error.status, 403);
            assert!(error.message.starts_with("invalid SVG: "), "{error}");
            let error = client
                .render(Bytes::from_static(&[0xff, 0xfe, 0x00, 0x12]), 10, 10)
                .await
                .unwrap_err();
            assert_eq!(error.status, 403);
            let error = client
                .size(Bytes::from_static(br#"<html><body/></html>"#))
                .await
                .unwrap_err();
            assert_eq!(error.status, 403);
        })
        .await;
    }

    #[tokio::test]
    async fn gzip_is_refused_with_415() {
        bounded(async {
            let server = TestServer::start(SvgConfig::default()).await;
            let error = server
                .client()
                .size(Bytes::from_static(&[0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0]))
                .await
                .unwrap_err();
            assert_eq!(error.status, 415);
            assert!(error.message.contains("svgz"), "{error}");
        })
        .await;
    }

    #[tokio::test]
    async fn external_references_are_never_read() {
        bounded(async {
            let dir = tempfile::tempdir().unwrap();
            // A file usvg would happily load and resvg draw (a nested SVG needs no raster
            // decoder): a red square.
            let secret = dir.path().join("secret.svg");
            std::fs::write(
                &secret,
                r#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10" fill="red"/></svg>"#,
            )
            .unwrap();
            let secret = secret.to_str().unwrap().to_owned();
            let referencing = |href: &str| {
                format!(
                    r#"<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="10" height="10"><image width="10" height="10" href="{href}"/><image width="10" height="10" xlink:href="{href}"/></svg>"#
                )
            };
            // The reference is real: usvg's default options would read the file.
            let default = usvg::Tree::from_str(&referencing(&secret), &usvg::Options::default())
                .unwrap();
            assert!(default.root().has_children(), "the default resolver loads it");

            let server = TestServer::start(SvgConfig::default()).await;
            let client = server.client();
            // A link outside the document: refused, naming the link, at once.
            for href in [
                secret.as_str(),
                &format!("file://{secret}"),
                "file:///etc/passwd",
                "/etc/hostname",
                "Cargo.toml",
                "../../secret.svg",
                "http://127.0.0.1:9/evil.svg",
            ] {
                let svg = Bytes::from(referencing(href));
                for error in [
                    client.size(svg.clone()).await.unwrap_err(),
                    client.render(svg, 10, 10).await.unwrap_err(),
                ] {
                    assert_eq!(error.status, 403, "{href}: {error}");
                    assert!(
                        error.message.starts_with("invalid SVG: an image links to `")
                            && error.message.contains(href)
                            && error.message.contains("external references are refused"),
                        "{href}: {error}"
                    );
                }
            }
            // An embedded image is left out.
            let data_url = "data:image/svg+xml;utf8,%3Csvg xmlns='http://www.w3.org/2000/svg' width='10' height='10'%3E%3Crect width='10' height='10' fill='red'/%3E%3C/svg%3E";
            let image = client
                .render(Bytes::from(referencing(data_url)), 10, 10)
                .await
                .unwrap();
            assert!(
                image.pixels().all(|p| p.0 == [0, 0, 0, 0]),
                "the data: URL was drawn"
            );
            // A long link is cut in the message.
            let long = format!("file:///{}", "a".repeat(500));
            let error = client
                .size(Bytes::from(referencing(&long)))
                .await
                .unwrap_err();
            assert!(error.message.contains("aaa…`"), "{error}");
            assert!(error.message.len() < 200, "{error}");
        })
        .await;
    }

    #[tokio::test]
    async fn hostile_documents_get_an_error_or_a_bounded_result() {
        bounded(async {
            let server = TestServer::start(SvgConfig::default()).await;
            let client = server.client();
            let started = Instant::now();

            let nested = format!(
                r#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">{}<rect width="5" height="5" fill="red"/>{}</svg>"#,
                r#"<g opacity="0.9">"#.repeat(10_000),
                "</g>".repeat(10_000)
            );
            let answer = client.render(Bytes::from(nested), 100, 100).await;
            assert!(answer.is_ok() || answer.unwrap_err().status == 403);

            // Just below roxmltree's own depth limit: parsed, and rendered without overflowing
            // the renderer's stack.
            let deep = format!(
                r#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">{}<rect width="5" height="5" fill="red"/>{}</svg>"#,
                r#"<g opacity="0.99">"#.repeat(1000),
                "</g>".repeat(1000)
            );
            let answer = client.render(Bytes::from(deep), 10, 10).await;
            assert!(answer.is_ok() || answer.unwrap_err().status == 403);

            let huge = r#"<svg xmlns="http://www.w3.org/2000/svg" width="1e9" height="1e9" viewBox="0 0 10 10"><rect width="5" height="5"/></svg>"#;
            let error = client.size(Bytes::from(huge)).await.unwrap_err();
            assert_eq!(error.status, 403);
            assert!(error.message.contains("out of range"), "{error}");
            let error = client.render(Bytes::from(huge), 100, 100).await.unwrap_err();
            assert_eq!(error.status, 403);

            // `use` expansion grows quadratically: usvg's node limit stops it.
            let mut chain = String::from(
                r#"<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="10" height="10"><defs><rect id="u0" width="5" height="5"/>"#,
            );
            for i in 1..3000 {
                chain += &format!(r##"<g id="u{i}"><use xlink:href="#u{}"/></g>"##, i - 1);
            }
            chain += r##"</defs><use xlink:href="#u2999"/></svg>"##;
            let answer = client.render(Bytes::from(chain), 10, 10).await;
            assert!(answer.is_ok() || answer.unwrap_err().status == 403);

            assert!(started.elapsed() < Duration::from_secs(20));
        })
        .await;
    }

    #[tokio::test]
    async fn a_slow_render_answers_503_and_keeps_its_slot() {
        bounded(async {
            let config = SvgConfig {
                render_timeout: Duration::from_nanos(1),
                max_concurrent: 1,
                ..SvgConfig::default()
            };
            let server = TestServer::start(config).await;
            let error = server
                .client()
                .render(Bytes::from(HALF_RED), 2000, 2000)
                .await
                .unwrap_err();
            assert_eq!(error.status, 503);
            assert!(error.message.starts_with("timed out"), "{error}");
        })
        .await;
    }

    #[tokio::test]
    async fn the_slot_of_a_timed_out_render_stays_taken_until_it_ends() {
        let renderer = Renderer::new(SvgConfig {
            render_timeout: Duration::from_millis(50),
            max_concurrent: 1,
            ..SvgConfig::default()
        });
        let (release, released) = std::sync::mpsc::channel::<()>();
        let error = renderer
            .run("test", move || {
                let _ = released.recv_timeout(Duration::from_secs(10));
                Ok(())
            })
            .await
            .unwrap_err();
        assert_eq!(error.status, 503);
        assert_eq!(renderer.slots.available_permits(), 0);
        release.send(()).unwrap();
        bounded(async {
            while renderer.slots.available_permits() == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert_eq!(renderer.run("test", || Ok(7)).await.unwrap(), 7);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn twenty_concurrent_renders_all_succeed() {
        bounded(async {
            let server = TestServer::start(SvgConfig::default()).await;
            let client = server.client();
            let mut renders = JoinSet::new();
            for i in 0..20u32 {
                let client = client.clone();
                renders.spawn(async move {
                    let (width, height) = (100 + i, 50 + i);
                    let image = client.render(Bytes::from(HALF_RED), width, height).await?;
                    assert_eq!(image.dimensions(), (width, height));
                    assert_eq!(pixel(&image, 1, 1), [255, 0, 0, 255]);
                    assert_eq!(pixel(&image, width - 1, 1), [0, 0, 0, 0]);
                    Ok::<_, ImageError>(())
                });
            }
            while let Some(result) = renders.join_next().await {
                result.unwrap().unwrap();
            }
        })
        .await;
    }

    #[tokio::test]
    async fn health_unknown_paths_and_methods() {
        bounded(async {
            let server = TestServer::start(SvgConfig::default()).await;
            assert_eq!(
                raw(&server.addr, "GET", "/healthz", b"").await,
                (200, "ok svg\n".to_owned())
            );
            assert_eq!(raw(&server.addr, "GET", "/nope", b"").await.0, 404);
            assert_eq!(raw(&server.addr, "GET", "/render", b"").await.0, 405);
            assert_eq!(raw(&server.addr, "POST", "/healthz", b"x").await.0, 405);
            let (status, body) = raw(&server.addr, "POST", "/size", HALF_RED.as_bytes()).await;
            assert_eq!(status, 200);
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(json, serde_json::json!({"width": 200.0, "height": 100.0}));
            let (status, body) =
                raw(&server.addr, "POST", "/render?width=3", HALF_RED.as_bytes()).await;
            assert_eq!(status, 403, "{body}");
        })
        .await;
    }

    #[tokio::test]
    async fn a_call_is_held_while_the_server_restarts() {
        bounded(async {
            let server = TestServer::start(SvgConfig::default()).await;
            let addr = server.addr.clone();
            let client = server.client();
            assert!(client.size(Bytes::from(HALF_RED)).await.is_ok());
            server.shutdown().await.unwrap();
            let held = tokio::spawn({
                let client = client.clone();
                async move { client.size(Bytes::from(HALF_RED)).await }
            });
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(!held.is_finished(), "held while nothing listens");
            let _server = TestServer::start_on(&addr, SvgConfig::default()).await;
            assert_eq!(held.await.unwrap().unwrap(), (200.0, 100.0));
        })
        .await;
    }

    #[tokio::test]
    async fn shutdown_stops_accepting_and_returns() {
        bounded(async {
            let server = TestServer::start(SvgConfig::default()).await;
            let addr = server.addr.clone();
            let client = server.client();
            assert!(client.size(Bytes::from(HALF_RED)).await.is_ok());
            server.shutdown().await.unwrap();
            let error = SvgClient::new(
                addr,
                HoldPolicy {
                    wait: Duration::ZERO,
                    ..HoldPolicy::default()
                },
            )
            .unwrap()
            .size(Bytes::from(HALF_RED))
            .await
            .unwrap_err();
            assert_eq!(error.status, 503);
        })
        .await;
    }

    #[tokio::test]
    async fn run_from_env_needs_a_listen_address() {
        // Only the failing case: the variable is never set in tests (setting it would race
        // with other tests).
        if std::env::var_os(ENV_LISTEN).is_none() {
            let error = run_from_env(async {}).await.unwrap_err();
            assert!(error.to_string().contains(ENV_LISTEN), "{error:#}");
        }
    }
}

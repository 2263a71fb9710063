//! The Image Server (`is`): decodes, processes and encodes images for the Platform Server.
//!
//! HTTP/1.1 on [`DEFAULT_ADDR`] by default (the supervisor passes `IMAGESERVING_LISTEN`):
//!
//! | request | answer |
//! |---|---|
//! | `POST /render`, body: an [`ImageRequest`] as JSON (≤ [`MAX_REQUEST_BYTES`]) | the image, or the text answer of `req=props|imageprops|exists` |
//! | `GET /healthz` | `200 ok is` |
//! | `GET /info` | `imageServer.*=` lines for the server-properties page of `ps` |
//!
//! One `/render`:
//!
//! ```text
//!  JSON ─▶ catalogs (reloaded when changed) ─▶ resolve object ─▶ read file ─▶ probe
//!     req=exists ─▶ catalogRecord.exists=0|1
//!     req=imageprops ─▶ source properties       (SVG: intrinsic size from the svg server)
//!     req=props ─▶ plan ─▶ reply properties      (SVG: planned on its intrinsic size)
//!     req=img ─▶ [SVG: svg server rasterises] ─▶ render on a worker ─▶ image
//! ```
//!
//! - **Workers.** Decoding, resampling and encoding run on tokio's blocking pool, at most
//!   [`ImageServerConfig::workers`] at once (a semaphore; one per core by default). The permit
//!   moves into the blocking closure, so work that outlives its request's deadline still counts
//!   against the limit until it really ends.
//! - **Deadline.** Each request has [`ImageServerConfig::request_timeout`] (30 s by default);
//!   past it the answer is `503 timed out`.
//! - **Failures.** Errors answer with their [`ImageError`] status and a `text/plain` message. With
//!   the catalog's `ErrorDetail=0` (the default) the message is only its title, the part before
//!   the first `: ` (`cannot decode `x``, `too large`); `ErrorDetail=1` keeps the reason. The full
//!   message is always logged. A panic in the pipeline is caught (`500`, logged) and the server
//!   keeps serving.
//! - **Limits.** Request bodies ≤ [`MAX_REQUEST_BYTES`] (`413` beyond), sources ≤
//!   [`MAX_SOURCE_BYTES`], SVG sources ≤ the catalog's `MaxSvgBytes`, source pixels ≤
//!   `MaxSourcePix`, replies ≤ `MaxReplyBytes` (all `403 too large`); connections and request
//!   heads as [`HTTP_LIMITS`] says.
//! - **Caching.** Images carry `Cache-Control: public, max-age=<catalog Expiration>`, text answers
//!   `max-age=360` (6 minutes, as in the original); errors carry `no-store`. Answers made from a
//!   source file name it for `ps`'s response cache: `x-source-path` (relative to `images/`,
//!   percent-encoded), `x-source-mtime-ns` and `x-source-size`, from the file's metadata before
//!   it was read ([`crate::servers::platform_server::cache`]).
//! - **SVG.** Sources are rasterised by the svg server at `IMAGESERVING_SVG_ADDR`; a call is held
//!   while the svg server restarts and a poison SVG is quarantined ([`crate::servers::hold`]).
//!   Without one, or when it stays down past the hold, SVG sources answer `503` and every other
//!   source is unaffected.
//! - **Stop.** When the shutdown future completes, the listener closes, idle connections close,
//!   and requests in flight get up to their deadline (plus a second) to finish.
//!
//! Catalogs are read at start (an invalid one stops the server from starting) and reloaded as
//! [`crate::imaging::catalog`] describes. Before that, [`run_from_env`] creates the samples of a
//! fresh home when the supervisor asks for them ([`crate::imaging::samples::provision_if_due`]).

use std::future::Future;
use std::io::Read as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{error, info, warn};

use crate::imaging::catalog::{Catalogs, LiveCatalogs, Resolved};
use crate::imaging::pipeline::{
    plan, probe, render, reply_props, source_props, svg_raster_size, svg_source_size, Source,
    SourceFormat, SourceInfo,
};
use crate::imaging::request::{Req, TextFormat};
use crate::imaging::text::{format_props, TEXT_CONTENT_TYPE};
use crate::imaging::{ImageError, ImageRequest};
use crate::servers::hold::{self, HoldPolicy};
use crate::servers::http::{self, HttpLimits};
use crate::servers::platform_server::cache::SourceStamp;
use crate::servers::svg_client::SvgClient;

/// Where `is` listens by default (the original's port).
pub const DEFAULT_ADDR: &str = "127.0.0.1:27345";
/// The largest `/render` body, in bytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// The largest source file, in bytes, whatever the catalog says.
pub const MAX_SOURCE_BYTES: u64 = 256 * 1024 * 1024;
/// The default per-request deadline.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long clients and caches may keep a text answer, in seconds (6 minutes).
pub const TEXT_MAX_AGE: u64 = 360;
/// The HTTP limits of `is`; their values and what a client sees at each one are in
/// `docs/image-serving.md` (*HTTP limits*). The drain deadline is the request deadline
/// ([`ImageServerConfig::request_timeout`]) plus [`DRAIN_MARGIN`], so that a request in flight
/// at shutdown keeps all the time its deadline gives it; the value here is the default's.
pub const HTTP_LIMITS: HttpLimits = HttpLimits {
    max_connections: 1024,
    // Its clients are ps (and tools on the node), all from loopback: no cap per address.
    max_per_client: 0,
    header_read_timeout: Duration::from_secs(10),
    max_head_bytes: http::DEFAULT_MAX_HEAD_BYTES,
    accept_backoff: Duration::from_millis(100),
    drain_deadline: DEFAULT_REQUEST_TIMEOUT.saturating_add(DRAIN_MARGIN),
};
/// What a request in flight at shutdown gets beyond its own deadline to be answered.
pub const DRAIN_MARGIN: Duration = Duration::from_secs(1);

/// The address to listen on, `host:port` (required by [`run_from_env`]).
pub const ENV_LISTEN: &str = "IMAGESERVING_LISTEN";
/// The home directory (required by [`run_from_env`]).
pub const ENV_HOME: &str = "IMAGESERVING_HOME";
/// The svg server's address, `host:port` (optional).
pub const ENV_SVG_ADDR: &str = "IMAGESERVING_SVG_ADDR";

/// What the Image Server runs with.
#[derive(Clone, Debug)]
pub struct ImageServerConfig {
    /// The home: catalogs in `catalog/`, sources in `images/`.
    pub home: PathBuf,
    /// The svg server, `host:port`; `None`: SVG sources answer 503.
    pub svg_addr: Option<String>,
    /// How many images are processed at once; 0 means one per core.
    pub workers: usize,
    /// Deadline of one request.
    pub request_timeout: Duration,
    /// How calls to the svg server are held while it restarts, and poison SVGs quarantined.
    pub hold: HoldPolicy,
}

impl ImageServerConfig {
    /// The defaults for `home`: no svg server, one worker per core, a 30 s deadline.
    pub fn new(home: impl Into<PathBuf>) -> Self {
        ImageServerConfig {
            home: home.into(),
            svg_addr: None,
            workers: 0,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            hold: HoldPolicy::default(),
        }
    }
}

/// The number of cores, the default number of workers.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Every request allocates a few large buffers (decoded pixels, the reply): glibc would map and
/// unmap each one, and the process would pay a page fault per touched page every time. Keep
/// freed memory in the heap for reuse instead; the peak is bounded by the worker pool.
fn keep_freed_memory() {
    const KEEP: libc::c_int = 256 * 1024 * 1024;
    // SAFETY: mallopt only adjusts the allocator's tunables; called before the workers start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, KEEP);
        libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP);
    }
}

/// Runs `is` configured from the environment ([`ENV_LISTEN`], [`ENV_HOME`], [`ENV_SVG_ADDR`])
/// until `shutdown` completes.
pub async fn run_from_env(
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    keep_freed_memory();
    let listen = std::env::var(ENV_LISTEN).with_context(|| {
        format!("{ENV_LISTEN} is not set; the supervisor passes it as host:port")
    })?;
    let home = std::env::var_os(ENV_HOME)
        .filter(|h| !h.is_empty())
        .with_context(|| format!("{ENV_HOME} is not set; the supervisor passes the home"))?;
    let svg_addr = std::env::var(ENV_SVG_ADDR)
        .ok()
        .filter(|a| !a.trim().is_empty());
    // Before the port opens: once `is` counts as running, the samples are served.
    crate::imaging::samples::provision_if_due(std::path::Path::new(&home));
    let listener = super::listen::listener(&listen).await?;
    let shown = listener
        .local_addr()
        .map_or_else(|_| listen.clone(), |addr| addr.to_string());
    let config = ImageServerConfig {
        svg_addr,
        hold: HoldPolicy::from_env()?,
        ..ImageServerConfig::new(home)
    };
    info!(component = "is", addr = %shown, svg = ?config.svg_addr, "listening");
    serve(listener, config, shutdown).await?;
    info!(component = "is", "stopped");
    Ok(())
}

/// Serves `is` on `listener` until `shutdown` completes, then lets the requests in flight finish
/// (each within its deadline, see [`HTTP_LIMITS`]). Fails at once if the catalogs are invalid.
pub async fn serve(
    listener: TcpListener,
    config: ImageServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let limits = HttpLimits {
        drain_deadline: config.request_timeout.saturating_add(DRAIN_MARGIN),
        ..HTTP_LIMITS
    };
    let server = Arc::new(Server::new(config)?);
    http::serve("is", listener, limits, shutdown, move |request, _peer| {
        let server = server.clone();
        async move { server.handle(request).await }
    })
    .await;
    Ok(())
}

/// One answer before it becomes an HTTP response.
struct Answer {
    /// The body.
    body: Bytes,
    /// Its content type.
    content_type: &'static str,
    /// `Cache-Control: public, max-age=` this.
    max_age: u64,
    /// The file it comes from, sent to `ps`'s response cache as `x-source-*` headers.
    stamp: Option<SourceStamp>,
}

impl Answer {
    /// A text answer: `props` in `format`, cached 6 minutes.
    fn text(props: &[(String, String)], format: TextFormat) -> Answer {
        let (content_type, body) = format_props(props, format);
        Answer {
            body: Bytes::from(body),
            content_type,
            max_age: TEXT_MAX_AGE,
            stamp: None,
        }
    }
}

/// What a request other than `req=exists` asks for.
enum Wanted {
    /// `req=imageprops`: properties of the source.
    SourceProps(TextFormat),
    /// `req=props`: properties of the reply.
    ReplyProps(TextFormat),
    /// `req=img`: the reply image.
    Image,
}

/// A source file read and probed.
struct Loaded {
    /// Where the object resolved to.
    resolved: Resolved,
    /// The file's bytes.
    bytes: Bytes,
    /// What the header says.
    info: SourceInfo,
    /// The file's path and metadata from before it was read, for `ps`'s response cache.
    stamp: Option<SourceStamp>,
}

/// The state every request shares.
struct Server {
    /// The source images, `<home>/images`.
    images: PathBuf,
    /// The catalogs, reloaded when their files change.
    catalogs: LiveCatalogs,
    /// The svg server, if one is configured.
    svg: Option<SvgClient>,
    /// One permit per image being processed.
    workers: Arc<Semaphore>,
    /// How many permits there are.
    worker_count: usize,
    /// Deadline of one request.
    request_timeout: Duration,
}

impl Server {
    /// Loads the catalogs and sets up the worker limit.
    fn new(config: ImageServerConfig) -> anyhow::Result<Server> {
        let catalog_dir = config.home.join("catalog");
        let catalogs = LiveCatalogs::open(&catalog_dir).context("cannot load the catalogs")?;
        let worker_count = if config.workers == 0 {
            cores()
        } else {
            config.workers
        };
        Ok(Server {
            images: config.home.join("images"),
            catalogs,
            svg: config
                .svg_addr
                .map(|addr| SvgClient::new(addr, config.hold))
                .transpose()?,
            workers: Arc::new(Semaphore::new(worker_count)),
            worker_count,
            request_timeout: config.request_timeout,
        })
    }

    /// Routes one request.
    async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let method = request.method().clone();
        match (request.uri().path(), &method) {
            ("/render", &Method::POST) => self.render_endpoint(request).await,
            ("/healthz", &Method::GET | &Method::HEAD) => {
                let mut response = plain(StatusCode::OK, "ok is");
                if let Some(class) = hold::previous_exit_class() {
                    response
                        .headers_mut()
                        .insert(hold::PREVIOUS_EXIT_HEADER, HeaderValue::from_static(class));
                }
                response
            }
            ("/info", &Method::GET | &Method::HEAD) => self.info().await,
            ("/render", _) => not_allowed("POST"),
            ("/healthz" | "/info", _) => not_allowed("GET, HEAD"),
            _ => plain(StatusCode::NOT_FOUND, "no such endpoint"),
        }
    }

    /// `POST /render`.
    async fn render_endpoint(self: Arc<Self>, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let body = match Limited::new(request.into_body(), MAX_REQUEST_BYTES)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                return plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("request body larger than {MAX_REQUEST_BYTES} bytes"),
                )
            }
            Err(error) => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    &format!("cannot read the request body: {error}"),
                )
            }
        };
        let request: ImageRequest = match serde_json::from_slice(&body) {
            Ok(request) => request,
            Err(error) => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    &format!("invalid request: {error}"),
                )
            }
        };
        let live = self.clone();
        let catalogs = match run_blocking(move || Ok(live.catalogs.current())).await {
            Ok(catalogs) => catalogs,
            Err(error) => return error_response(&error, false),
        };
        let error_detail = catalogs
            .attributes(catalogs.catalog_of(&request.object))
            .error_detail;
        let object = request.object.clone();
        let deadline = self.request_timeout;
        let result = tokio::time::timeout(deadline, self.answer(catalogs, request))
            .await
            .unwrap_or_else(|_| {
                Err(ImageError::timeout(format!(
                    "the request took longer than {}",
                    humantime::format_duration(deadline)
                )))
            });
        match result {
            Ok(answer) => {
                let mut response = Response::new(Full::new(answer.body.clone()));
                let headers = response.headers_mut();
                headers.insert(CONTENT_TYPE, HeaderValue::from_static(answer.content_type));
                headers.insert(CONTENT_LENGTH, HeaderValue::from(answer.body.len()));
                if let Some(stamp) = &answer.stamp {
                    stamp.to_headers(headers);
                }
                if let Ok(value) =
                    HeaderValue::from_str(&format!("public, max-age={}", answer.max_age))
                {
                    headers.insert(CACHE_CONTROL, value);
                }
                response
            }
            Err(error) => {
                if error.status >= 500 {
                    error!(component = "is", %object, status = error.status, error = %error.message, "request failed");
                } else {
                    info!(component = "is", %object, status = error.status, error = %error.message, "request refused");
                }
                error_response(&error, error_detail)
            }
        }
    }

    /// The answer to one image request.
    async fn answer(
        self: Arc<Self>,
        catalogs: Arc<Catalogs>,
        request: ImageRequest,
    ) -> Result<Answer, ImageError> {
        let wanted = match request.req {
            Req::Exists(format) => return self.exists(catalogs, request.object, format).await,
            Req::ImageProps(format) => Wanted::SourceProps(format),
            Req::Props(format) => Wanted::ReplyProps(format),
            Req::Img => Wanted::Image,
        };
        let images = self.images.clone();
        let object = request.object.clone();
        let default_image = request.default_image.clone();
        let load_catalogs = catalogs.clone();
        let Loaded {
            resolved,
            bytes,
            mut info,
            stamp,
        } = run_blocking(move || {
            load_source(&load_catalogs, &object, default_image.as_deref(), &images)
        })
        .await?;
        let attrs = catalogs.attributes(&resolved.catalog).clone();
        // An SVG is measured by the svg server: its intrinsic size in CSS pixels, which counts
        // as its source size (rounded) for the text answers and for crop and scale.
        let intrinsic = if info.format == SourceFormat::Svg {
            let intrinsic = self.svg()?.size(bytes.clone()).await?;
            (info.width, info.height) = svg_source_size(intrinsic, &request.object)?;
            Some(intrinsic)
        } else {
            None
        };
        if intrinsic.is_none() && !matches!(wanted, Wanted::SourceProps(_)) {
            // Before waiting for a worker; the pipeline checks it again.
            let pixels = u64::from(info.width) * u64::from(info.height);
            if pixels > attrs.max_source_pix {
                return Err(ImageError::too_large(format!(
                    "source of {}×{} pixels exceeds MaxSourcePix {}",
                    info.width, info.height, attrs.max_source_pix
                )));
            }
        }
        let answer = match wanted {
            Wanted::SourceProps(format) => Ok(Answer::text(&source_props(&info), format)),
            Wanted::ReplyProps(format) => {
                let plan = plan((info.width, info.height), &request, &attrs)?;
                Ok(Answer::text(&reply_props(&plan), format))
            }
            Wanted::Image => {
                let raster = match intrinsic {
                    Some(intrinsic) => {
                        let (w, h) = svg_raster_size(intrinsic, &request, &attrs)?;
                        let pixels = self.svg()?.render(bytes.clone(), w, h).await?;
                        Some((pixels, intrinsic))
                    }
                    None => None,
                };
                let max_age = attrs.expiration.as_secs();
                let rendered = self
                    .run_worker(move || {
                        let source = match raster {
                            Some((pixels, intrinsic)) => Source::Svg { pixels, intrinsic },
                            None => Source::Encoded {
                                bytes: &bytes,
                                object: &request.object,
                            },
                        };
                        render(source, &request, &attrs)
                    })
                    .await?;
                Ok(Answer {
                    body: Bytes::from(rendered.bytes),
                    content_type: rendered.mime,
                    max_age,
                    stamp: None,
                })
            }
        };
        answer.map(|answer| Answer { stamp, ..answer })
    }

    /// `req=exists`: whether `object` resolves to a file, without the `DefaultImage` fallback.
    async fn exists(
        &self,
        catalogs: Arc<Catalogs>,
        object: String,
        format: TextFormat,
    ) -> Result<Answer, ImageError> {
        let images = self.images.clone();
        let found = run_blocking(move || match catalogs.resolve_exact(&object, &images) {
            Ok(_) => Ok(true),
            Err(error) if error.status == 404 => Ok(false),
            Err(error) => Err(error),
        })
        .await?;
        let value = if found { "1" } else { "0" };
        Ok(Answer::text(
            &[("catalogRecord.exists".to_owned(), value.to_owned())],
            format,
        ))
    }

    /// The svg client, or 503 when none is configured.
    fn svg(&self) -> Result<&SvgClient, ImageError> {
        self.svg
            .as_ref()
            .ok_or_else(|| ImageError::unavailable("no SVG server is configured"))
    }

    /// Runs CPU-bound `work` on the blocking pool once a worker permit is free. The permit moves
    /// into the closure: it is released when the work ends, even if the request gave up on it.
    async fn run_worker<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, ImageError> + Send + 'static,
    ) -> Result<T, ImageError> {
        let permit = self
            .workers
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ImageError::unavailable("the server is stopping"))?;
        run_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
    }

    /// `GET /info`: the server properties `ps` shows.
    async fn info(self: Arc<Self>) -> Response<Full<Bytes>> {
        let svg = match &self.svg {
            Some(client) if client.is_healthy().await => "ok",
            _ => "unreachable",
        };
        let live = self.clone();
        let catalogs = run_blocking(move || Ok(live.catalogs.current().len()))
            .await
            .unwrap_or(0);
        let body = format!(
            "imageServer.version={}\nimageServer.workers={}\nimageServer.svgServer={svg}\nimageServer.catalogs={catalogs}\n",
            env!("CARGO_PKG_VERSION"),
            self.worker_count,
        );
        plain(StatusCode::OK, &body)
    }
}

/// Resolves `object` (falling back to `default_image`, the request's `defaultImage=`, else the
/// catalog's `DefaultImage`), reads its file within the size limits and probes it.
fn load_source(
    catalogs: &Catalogs,
    object: &str,
    default_image: Option<&str>,
    images: &std::path::Path,
) -> Result<Loaded, ImageError> {
    let resolved = catalogs.resolve_with_default(object, default_image, images)?;
    let attrs = catalogs.attributes(&resolved.catalog);
    let unreadable = |error: std::io::Error| {
        warn!(component = "is", %object, path = %resolved.path.display(), %error, "cannot read a source");
        ImageError::not_found(object)
    };
    // Taken before reading: a stamp older than the bytes is safe (`ps` re-renders when it
    // finds the file changed), a newer one could keep stale bytes.
    let metadata = std::fs::metadata(&resolved.path).map_err(unreadable)?;
    let stamp = SourceStamp::of(&resolved.path, images, &metadata);
    let len = metadata.len();
    if len > MAX_SOURCE_BYTES {
        return Err(ImageError::too_large(format!(
            "source of {len} bytes exceeds {MAX_SOURCE_BYTES}"
        )));
    }
    let looks_svg = resolved
        .path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("svg") || e.eq_ignore_ascii_case("svgz"));
    let svg_limit = |len: u64| {
        if len > attrs.max_svg_bytes as u64 {
            Err(ImageError::too_large(format!(
                "SVG source of {len} bytes exceeds MaxSvgBytes {}",
                attrs.max_svg_bytes
            )))
        } else {
            Ok(())
        }
    };
    if looks_svg {
        svg_limit(len)?;
    }
    // Read at most one byte past the limit, in case the file grew since it was measured.
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    std::fs::File::open(&resolved.path)
        .and_then(|file| file.take(MAX_SOURCE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_SOURCE_BYTES {
        return Err(ImageError::too_large(format!(
            "source larger than {MAX_SOURCE_BYTES} bytes"
        )));
    }
    let info = probe(&bytes, object)?;
    if info.format == SourceFormat::Svg {
        svg_limit(bytes.len() as u64)?;
    }
    let bytes = Bytes::from(bytes);
    Ok(Loaded {
        resolved,
        bytes,
        info,
        stamp,
    })
}

/// Runs blocking `work` on tokio's blocking pool; a panic becomes a logged `500`.
async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ImageError> + Send + 'static,
) -> Result<T, ImageError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(error) if error.is_panic() => {
            let payload = error.into_panic();
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            error!(component = "is", panic = %what, "image processing panicked");
            Err(ImageError::internal("image processing failed"))
        }
        Err(_) => Err(ImageError::internal("image processing was cancelled")),
    }
}

/// A `text/plain` response.
fn plain(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let body = Bytes::from(body.to_owned());
    let mut response = Response::new(Full::new(body.clone()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_CONTENT_TYPE));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    response
}

/// `405` with the methods `Allow`ed.
fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

/// The response for `error`: its message in full with `detail`, else only its title.
fn error_response(error: &ImageError, detail: bool) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = if detail {
        error.message.as_str()
    } else {
        title(&error.message)
    };
    let mut response = plain(status, message);
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// The title of an error message: the part before the first `: `.
fn title(message: &str) -> &str {
    message.split_once(": ").map_or(message, |(title, _)| title)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::OnceLock;

    use http_body_util::BodyExt as _;
    use hyper::HeaderMap;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use tokio::sync::oneshot;
    use tokio::time::{timeout, Instant};

    use super::*;
    use crate::imaging::request::OutputFormat;
    use crate::imaging::samples;

    /// The bound of each step of a test: generous, because debug builds decode slowly.
    const STEP: Duration = Duration::from_secs(60);

    /// The files [`samples::provision`] creates, generated once for all tests.
    fn sample_files() -> &'static Vec<(PathBuf, Vec<u8>)> {
        static FILES: OnceLock<Vec<(PathBuf, Vec<u8>)>> = OnceLock::new();
        FILES.get_or_init(|| {
            let tmp = tempfile::tempdir().unwrap();
            samples::provision(tmp.path())
                .unwrap()
                .into_iter()
                .map(|path| {
                    let bytes = std::fs::read(&path).unwrap();
                    (path.strip_prefix(tmp.path()).unwrap().to_path_buf(), bytes)
                })
                .collect()
        })
    }

    /// A temporary home holding the samples.
    fn sample_home() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        for (relative, bytes) in sample_files() {
            write(&tmp.path().join(relative), bytes);
        }
        tmp
    }

    fn write(path: &Path, bytes: impl AsRef<[u8]>) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// An Image Server on an ephemeral port, stopped on drop.
    struct TestServer {
        addr: String,
        stop: Option<oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<anyhow::Result<()>>,
    }

    impl TestServer {
        async fn start(config: ImageServerConfig) -> TestServer {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(serve(listener, config, async {
                let _ = stopped.await;
            }));
            TestServer {
                addr,
                stop: Some(stop),
                task,
            }
        }

        async fn on(home: &Path) -> TestServer {
            TestServer::start(ImageServerConfig::new(home)).await
        }

        async fn stop(mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            let task = &mut self.task;
            timeout(STEP, task).await.unwrap().unwrap().unwrap();
        }

        async fn post(&self, body: impl Into<Bytes>) -> Reply {
            exchange(
                Request::post(format!("http://{}/render", self.addr))
                    .header(CONTENT_TYPE, "application/json")
                    .body(Full::new(body.into()))
                    .unwrap(),
            )
            .await
        }

        async fn ask(&self, request: &ImageRequest) -> Reply {
            self.post(serde_json::to_vec(request).unwrap()).await
        }

        async fn get(&self, path: &str) -> Reply {
            exchange(
                Request::get(format!("http://{}{path}", self.addr))
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    /// An answer, read whole.
    #[derive(Debug)]
    struct Reply {
        status: u16,
        headers: HeaderMap,
        body: Bytes,
    }

    impl Reply {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }

        fn header(&self, name: &str) -> &str {
            self.headers
                .get(name)
                .map_or("", |v| v.to_str().unwrap_or(""))
        }
    }

    async fn exchange(request: Request<Full<Bytes>>) -> Reply {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        timeout(STEP, async {
            let response = client.request(request).await.unwrap();
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            Reply {
                status,
                headers,
                body,
            }
        })
        .await
        .unwrap()
    }

    fn img(object: &str) -> ImageRequest {
        ImageRequest {
            object: object.to_owned(),
            ..ImageRequest::default()
        }
    }

    fn with_req(object: &str, req: Req) -> ImageRequest {
        ImageRequest { req, ..img(object) }
    }

    fn exists(object: &str) -> ImageRequest {
        with_req(object, Req::Exists(TextFormat::Text))
    }

    /// Polls `check` until it holds, within `within`.
    async fn wait_for<F: Future<Output = bool>>(within: Duration, mut check: impl FnMut() -> F) {
        let deadline = Instant::now() + within;
        while !check().await {
            assert!(Instant::now() < deadline, "condition not met in {within:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn health_info_and_unknown_endpoints() {
        let home = sample_home();
        let server = TestServer::on(home.path()).await;
        let health = server.get("/healthz").await;
        assert_eq!((health.status, health.text().as_str()), (200, "ok is"));

        let info = server.get("/info").await;
        assert_eq!(info.status, 200);
        assert_eq!(info.header("content-type"), "text/plain; charset=utf-8");
        let text = info.text();
        assert!(
            text.contains(&format!(
                "imageServer.version={}\n",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("imageServer.workers={}\n", cores())),
            "{text}"
        );
        assert!(
            text.contains("imageServer.svgServer=unreachable\n"),
            "{text}"
        );
        assert!(text.contains("imageServer.catalogs=2\n"), "{text}");

        assert_eq!(server.get("/nothing").await.status, 404);
        let wrong = server.get("/render").await;
        assert_eq!((wrong.status, wrong.header("allow")), (405, "POST"));
        server.stop().await;
    }

    #[tokio::test]
    async fn bad_requests_get_400_and_oversized_ones_413() {
        let home = sample_home();
        let server = TestServer::on(home.path()).await;
        for body in [
            &b"not json"[..],
            br#"{"object":"sample/photo","bogus":1}"#,
            br#"{"req":"img"}"#,
            b"",
        ] {
            let reply = server.post(body).await;
            assert_eq!(reply.status, 400, "{}", String::from_utf8_lossy(body));
            assert!(reply.text().starts_with("invalid request: "), "{reply:?}");
        }
        let big = format!(r#"{{"object":"{}"}}"#, "a".repeat(MAX_REQUEST_BYTES + 1));
        assert_eq!(server.post(big).await.status, 413);
        // Still serving.
        assert_eq!(server.ask(&exists("sample/photo")).await.status, 200);
        server.stop().await;
    }

    #[tokio::test]
    async fn exists_answers_in_every_format() {
        let home = sample_home();
        let server = TestServer::on(home.path()).await;
        let reply = server.ask(&exists("sample/photo")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), "#S7Z OK\ncatalogRecord.exists=1\n");
        assert_eq!(reply.header("content-type"), "text/plain; charset=utf-8");
        assert_eq!(reply.header("cache-control"), "public, max-age=360");
        assert_eq!(reply.header("content-length"), reply.body.len().to_string());

        // Plain paths below images/ exist too, under a catalog name or not.
        for object in ["sample/photo.jpg", "sample/logo", "sample/logo.png"] {
            assert_eq!(
                server.ask(&exists(object)).await.text(),
                "#S7Z OK\ncatalogRecord.exists=1\n",
                "{object}"
            );
        }

        let reply = server
            .ask(&with_req("sample/nothing", Req::Exists(TextFormat::Json)))
            .await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), "application/json");
        assert_eq!(reply.text(), r#"{"catalogRecord.exists":"0"}"#);

        let reply = server
            .ask(&with_req("sample/photo", Req::Exists(TextFormat::Xml)))
            .await;
        assert_eq!(reply.status, 200);
        assert!(
            reply
                .text()
                .contains(r#"<property name="catalogRecord.exists" value="1"/>"#),
            "{reply:?}"
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn unsafe_paths_are_refused_and_missing_objects_not_found() {
        let home = sample_home();
        let h = home.path();
        write(&h.join("secret.jpg"), sample_files()[2].1.clone());
        std::os::unix::fs::symlink(h.join("secret.jpg"), h.join("images/out.jpg")).unwrap();
        let server = TestServer::on(h).await;
        for object in [
            "../secret.jpg",
            "sample/../../secret.jpg",
            "/etc/passwd",
            "out.jpg",
        ] {
            for request in [img(object), exists(object)] {
                let reply = server.ask(&request).await;
                assert_eq!(reply.status, 403, "{object}: {reply:?}");
                assert_eq!(reply.text(), format!("object `{object}` is not allowed"));
                assert_eq!(reply.header("cache-control"), "no-store");
            }
        }
        let reply = server.ask(&img("sample/nothing")).await;
        assert_eq!(reply.status, 404);
        assert_eq!(reply.text(), "object `sample/nothing` not found");
        assert_eq!(
            server
                .ask(&with_req("nothing.jpg", Req::ImageProps(TextFormat::Text)))
                .await
                .status,
            404
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn an_invalid_catalog_stops_the_start_naming_the_line() {
        let home = sample_home();
        write(
            &home.path().join("catalog/broken.ini"),
            "JpegQuality=80\nNoSuchThing=1\n",
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let result = timeout(
            STEP,
            serve(
                listener,
                ImageServerConfig::new(home.path()),
                std::future::pending(),
            ),
        )
        .await
        .unwrap();
        let message = format!("{:#}", result.unwrap_err());
        assert!(message.contains("broken.ini"), "{message}");
        assert!(message.contains("line 2"), "{message}");
        assert!(
            message.contains("unknown attribute `NoSuchThing`"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn catalogs_are_reloaded_when_their_files_change() {
        let home = sample_home();
        let server = TestServer::on(home.path()).await;
        let answer = |reply: Reply| reply.text();
        assert_eq!(
            answer(server.ask(&exists("sample/again")).await),
            "#S7Z OK\ncatalogRecord.exists=0\n"
        );
        let sample = home.path().join("catalog/sample.ini");
        let mut text = std::fs::read_to_string(&sample).unwrap();
        text.push_str("again=sample/logo.png\n");
        std::fs::write(&sample, text).unwrap();
        wait_for(Duration::from_secs(10), || async {
            server.ask(&exists("sample/again")).await.text() == "#S7Z OK\ncatalogRecord.exists=1\n"
        })
        .await;

        // A broken edit keeps the catalogs in use.
        write(&home.path().join("catalog/default.ini"), "Bogus=1\n");
        tokio::time::sleep(RELOAD_PAUSE).await;
        assert_eq!(
            server.ask(&exists("sample/again")).await.text(),
            "#S7Z OK\ncatalogRecord.exists=1\n"
        );
        server.stop().await;
    }

    /// Longer than the catalog check interval.
    const RELOAD_PAUSE: Duration = Duration::from_millis(1500);

    #[tokio::test]
    async fn svg_without_an_svg_server_is_unavailable_and_others_unaffected() {
        let home = sample_home();
        let server = TestServer::on(home.path()).await;
        let reply = server.ask(&img("sample/drawing")).await;
        assert_eq!(reply.status, 503, "{reply:?}");
        assert_eq!(reply.text(), "temporarily unavailable");
        assert_eq!(server.ask(&exists("sample/drawing")).await.status, 200);
        server.stop().await;
    }

    #[tokio::test]
    async fn a_panic_in_a_worker_is_a_500_and_frees_the_permit() {
        let home = sample_home();
        let server = Server::new(ImageServerConfig {
            workers: 1,
            ..ImageServerConfig::new(home.path())
        })
        .unwrap();
        let result: Result<(), ImageError> =
            server.run_worker(|| panic!("deliberate test panic")).await;
        assert_eq!(result.unwrap_err().status, 500);
        // The only permit came back.
        let ok = timeout(STEP, server.run_worker(|| Ok(7))).await.unwrap();
        assert_eq!(ok.unwrap(), 7);
    }

    /// A request for `object` at width `wid` in `fmt`.
    fn sized(object: &str, wid: u32, fmt: OutputFormat) -> ImageRequest {
        ImageRequest {
            wid: Some(wid),
            fmt: Some(fmt),
            ..img(object)
        }
    }

    fn decode(reply: &Reply) -> image::DynamicImage {
        image::load_from_memory(&reply.body).unwrap()
    }

    #[tokio::test]
    async fn the_sample_photo_renders_at_the_requested_size() {
        let home = sample_home();
        let server = TestServer::on(home.path()).await;
        let reply = server
            .ask(&sized("sample/photo", 300, OutputFormat::Jpeg))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.header("content-type"), "image/jpeg");
        assert_eq!(reply.header("cache-control"), "public, max-age=36000");
        assert_eq!(reply.header("content-length"), reply.body.len().to_string());
        let image = decode(&reply);
        assert_eq!((image.width(), image.height()), (300, 225));

        // The same file by its path, in another format.
        let reply = server
            .ask(&sized("sample/photo.jpg", 200, OutputFormat::Webp))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.header("content-type"), "image/webp");
        assert_eq!(decode(&reply).width(), 200);

        // The logo keeps its alpha in png-alpha.
        let reply = server
            .ask(&sized("sample/logo", 64, OutputFormat::PngAlpha))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let logo = decode(&reply).to_rgba8();
        assert_eq!(logo.dimensions(), (64, 64));
        assert_eq!(logo.get_pixel(0, 0).0[3], 0);
        server.stop().await;
    }

    #[tokio::test]
    async fn props_and_imageprops_answer_in_every_format() {
        let home = sample_home();
        let server = TestServer::on(home.path()).await;
        let ask = |req: Req| ImageRequest {
            req,
            wid: Some(500),
            ..img("sample/photo")
        };
        let reply = server.ask(&ask(Req::ImageProps(TextFormat::Text))).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.header("cache-control"), "public, max-age=360");
        let text = reply.text();
        assert!(text.starts_with("#S7Z OK\n"), "{text}");
        assert!(text.contains("image.width=2000\n"), "{text}");
        assert!(text.contains("image.height=1500\n"), "{text}");

        let reply = server.ask(&ask(Req::Props(TextFormat::Text))).await;
        let text = reply.text();
        assert!(text.contains("image.width=500\n"), "{text}");
        assert!(text.contains("image.height=375\n"), "{text}");

        let reply = server.ask(&ask(Req::Props(TextFormat::Json))).await;
        assert_eq!(reply.header("content-type"), "application/json");
        let json: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(json["image.width"], "500", "{json}");

        let reply = server.ask(&ask(Req::ImageProps(TextFormat::Xml))).await;
        assert!(reply.header("content-type").starts_with("application/xml"));
        let text = reply.text();
        assert!(
            text.contains(r#"<property name="image.width" value="2000"/>"#),
            "{text}"
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn the_request_default_image_is_served_for_a_missing_object() {
        let home = sample_home();
        let server = TestServer::on(home.path()).await;
        let asked = ImageRequest {
            default_image: Some("sample/logo".into()),
            ..sized("nothing/here", 32, OutputFormat::Png)
        };
        let reply = server.ask(&asked).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(decode(&reply).width(), 32);
        // Without it (and no DefaultImage in the catalog): 404; a missing default too.
        let reply = server
            .ask(&sized("nothing/here", 32, OutputFormat::Png))
            .await;
        assert_eq!(reply.status, 404);
        let asked = ImageRequest {
            default_image: Some("sample/gone".into()),
            ..sized("nothing/here", 32, OutputFormat::Png)
        };
        assert_eq!(server.ask(&asked).await.status, 404);
        server.stop().await;
    }

    #[tokio::test]
    async fn a_missing_object_is_served_as_the_default_image_when_set() {
        let home = sample_home();
        let sample = home.path().join("catalog/sample.ini");
        let text = std::fs::read_to_string(&sample).unwrap();
        std::fs::write(&sample, format!("DefaultImage=sample/logo\n{text}")).unwrap();
        let server = TestServer::on(home.path()).await;
        let reply = server
            .ask(&sized("sample/nothing", 32, OutputFormat::Png))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(decode(&reply).width(), 32);
        // It still does not exist, and the default catalog has no default image.
        assert_eq!(
            server.ask(&exists("sample/nothing")).await.text(),
            "#S7Z OK\ncatalogRecord.exists=0\n"
        );
        assert_eq!(server.ask(&img("nothing")).await.status, 404);
        server.stop().await;
    }

    #[tokio::test]
    async fn a_corrupt_source_is_refused_and_the_server_goes_on() {
        let home = sample_home();
        let images = home.path().join("images");
        let photo = std::fs::read(images.join("sample/photo.jpg")).unwrap();
        write(&images.join("bad/truncated.jpg"), &photo[..photo.len() / 3]);
        write(
            &images.join("bad/garbage.png"),
            b"\x89PNG\r\n\x1a\nnot really",
        );
        write(&images.join("bad/text.jpg"), b"hello");
        write(
            &home.path().join("catalog/detailed.ini"),
            "ErrorDetail=1\n[ids]\ngarbage=bad/garbage.png\n",
        );
        let server = TestServer::on(home.path()).await;
        for object in ["bad/truncated.jpg", "bad/garbage.png", "bad/text.jpg"] {
            let reply = server.ask(&sized(object, 100, OutputFormat::Jpeg)).await;
            assert_eq!(reply.status, 403, "{object}: {}", reply.text());
            // ErrorDetail=0: the title only.
            assert_eq!(reply.text(), format!("cannot decode `{object}`"));
            let next = server
                .ask(&sized("sample/photo", 50, OutputFormat::Jpeg))
                .await;
            assert_eq!(next.status, 200, "{}", next.text());
        }
        // ErrorDetail=1: the reason too.
        let reply = server
            .ask(&sized("detailed/garbage", 100, OutputFormat::Jpeg))
            .await;
        assert_eq!(reply.status, 403);
        assert!(
            reply
                .text()
                .starts_with("cannot decode `detailed/garbage`: "),
            "{}",
            reply.text()
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn a_request_past_its_deadline_is_a_503() {
        let home = sample_home();
        let server = TestServer::start(ImageServerConfig {
            request_timeout: Duration::from_millis(1),
            ..ImageServerConfig::new(home.path())
        })
        .await;
        let reply = server
            .ask(&sized("sample/photo", 1000, OutputFormat::Png))
            .await;
        assert_eq!(reply.status, 503, "{}", reply.text());
        assert_eq!(reply.text(), "timed out");
        server.stop().await;
    }

    #[tokio::test]
    async fn svg_sources_are_rasterised_by_the_svg_server() {
        let home = sample_home();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let svg_addr = listener.local_addr().unwrap().to_string();
        let (stop_svg, svg_stopped) = oneshot::channel::<()>();
        let svg = tokio::spawn(crate::servers::svg_server::serve(
            listener,
            crate::servers::svg_server::SvgConfig::default(),
            async {
                let _ = svg_stopped.await;
            },
        ));
        let server = TestServer::start(ImageServerConfig {
            svg_addr: Some(svg_addr),
            ..ImageServerConfig::new(home.path())
        })
        .await;
        let info = server.get("/info").await.text();
        assert!(info.contains("imageServer.svgServer=ok\n"), "{info}");

        let reply = server
            .ask(&with_req(
                "sample/drawing",
                Req::ImageProps(TextFormat::Text),
            ))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert!(
            reply.text().contains("image.width=400\n"),
            "{}",
            reply.text()
        );

        let reply = server
            .ask(&sized("sample/drawing", 200, OutputFormat::PngAlpha))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.header("content-type"), "image/png");
        let image = decode(&reply);
        assert_eq!((image.width(), image.height()), (200, 150));

        server.stop().await;
        let _ = stop_svg.send(());
        timeout(STEP, svg).await.unwrap().unwrap().unwrap();
    }

    #[tokio::test]
    async fn an_svg_larger_than_max_svg_bytes_is_refused() {
        let home = sample_home();
        write(
            &home.path().join("catalog/small.ini"),
            "MaxSvgBytes=100\nErrorDetail=1\n[ids]\ndrawing=sample/drawing.svg\n",
        );
        let server = TestServer::on(home.path()).await;
        let reply = server.ask(&img("small/drawing")).await;
        assert_eq!(reply.status, 403, "{}", reply.text());
        assert!(reply.text().contains("MaxSvgBytes 100"), "{}", reply.text());
        server.stop().await;
    }

    #[test]
    fn titles_stop_at_the_first_colon() {
        assert_eq!(
            title("cannot decode `x`: bad header: more"),
            "cannot decode `x`"
        );
        assert_eq!(title("object `x` not found"), "object `x` not found");
        assert_eq!(
            title("timed out: the request took longer than 30s"),
            "timed out"
        );
    }
}

//! The Platform Server (`ps`): the public HTTP front end of the URL protocol.
//!
//! What `ps` answers, and when, is specified once, in `docs/image-serving.md`: its routes,
//! every status, talking to `is` (the quick `503` and the one retry), the response cache with
//! `ETag` and `Cache-Control`, the access log, and its HTTP limits. This module is the code:
//!
//! ```text
//!  client ──HTTP/1.1──▶ ps ──query::parse──▶ ImageRequest ──▶ response cache ──hit──▶ answer
//!                                                                  │ miss
//!                                     POST /render (JSON, pooled) ◀┘──▶ is ──▶ keep, answer
//!  every request ──▶ logs/access.log (one line, written by its own thread)
//! ```
//!
//! - this file: the configuration, routing, and each answer (the use of the cache, `cache=`,
//!   `ETag` and `304`, the server properties, `/healthz`);
//! - [`upstream`](crate::servers::upstream): the client of `is`, which holds and retries a
//!   request while `is` restarts, and quarantines poison requests ([`hold`](crate::servers::hold));
//! - [`cache`]: the response cache (keys, the bound, the checks of sources and catalogs);
//! - [`access_log`]: the access log's line and its writer thread;
//! - [`http`]: the accept loop, the limits ([`HTTP_LIMITS`]) and the graceful stop.

pub mod access_log;
pub mod cache;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body as _, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::imaging::request::{CacheControl, CacheMode};
use crate::imaging::{query, ImageError, ImageRequest};
use crate::servers::http::{self, HttpLimits};

use self::access_log::{AccessLog, CacheUse};
use self::cache::{CachedAnswer, CatalogWatch, Lookup, ResponseCache, SourceStamp};
use crate::servers::hold::HoldPolicy;
use crate::servers::upstream::{Answer, Call, Upstream, UpstreamError};

/// The address to listen on, `host:port`.
pub const ENV_LISTEN: &str = "IMAGESERVING_LISTEN";
/// The Image Server's address, `host:port`.
pub const ENV_IS_ADDR: &str = "IMAGESERVING_IS_ADDR";
/// The home (optional): sources are checked below its `images/`, the access log is its
/// `logs/access.log`.
pub const ENV_HOME: &str = "IMAGESERVING_HOME";
/// The capacity of the response cache, bytes (optional): `268435456`, or with a binary suffix
/// `256M`, `512K`, `1G` (also `MiB`…); `0` disables the cache.
pub const ENV_CACHE_BYTES: &str = "IMAGESERVING_CACHE_BYTES";
/// How long a cached answer is served before its source is checked again (optional), as
/// `humantime` reads it: `1s`, `250ms`, `0s` (check on every hit).
pub const ENV_CACHE_CHECK: &str = "IMAGESERVING_CACHE_CHECK";

/// The default of [`PlatformConfig::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The default of [`PlatformConfig::request_timeout`]: above the 30 s `is` gives itself, so that
/// `is`'s own timeout answer normally arrives first.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(35);
/// How long `is` has to answer `GET /healthz` (for `/healthz` and the server properties).
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// The default of [`PlatformConfig::max_per_client`]: half of [`HTTP_LIMITS`]'
/// `max_connections`, so that one address never takes them all, while a CDN edge or a NAT with
/// many clients behind one address still gets many.
pub const DEFAULT_MAX_PER_CLIENT: usize = 512;
/// The variable that sets [`PlatformConfig::max_per_client`] (`0`: no cap per address).
pub const ENV_MAX_PER_CLIENT: &str = "IMAGESERVING_MAX_CONNECTIONS_PER_CLIENT";
/// How long `is` has to answer `GET /info`; it probes `svg`, so a little longer than a health check.
pub const INFO_TIMEOUT: Duration = Duration::from_secs(3);
/// The HTTP limits of `ps`; their values and what a client sees at each one are in
/// `docs/image-serving.md` (*HTTP limits*).
pub const HTTP_LIMITS: HttpLimits = HttpLimits {
    max_connections: 1024,
    max_per_client: DEFAULT_MAX_PER_CLIENT,
    header_read_timeout: Duration::from_secs(30),
    max_head_bytes: 16 * 1024,
    accept_backoff: Duration::from_millis(50),
    drain_deadline: Duration::from_secs(5),
};
/// How long the end of [`serve`] waits for the access log to be written.
const ACCESS_LOG_FLUSH: Duration = Duration::from_secs(2);

/// The message of every 503 caused by `is` being down.
const UNAVAILABLE: &str = "image server unavailable, retry shortly";
/// The message of a 500 for a poison request.
const QUARANTINED: &str = "request quarantined: the image server failed twice while working on it";
/// The largest answer of `is` relayed; `is` limits its replies to 16 MB, so more is a bug.
pub const MAX_REPLY: usize = 64 * 1024 * 1024;
/// The routes that exist, for 405's `Allow`.
const ALLOW: &str = "GET, HEAD";
/// Where the image protocol lives.
const IMAGE_PREFIX: &str = "/is/image";

/// What `ps` runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformConfig {
    /// Where `is` listens, `host:port`.
    pub is_addr: String,
    /// Where `svg` listens, `host:port`, when there is one (`IMAGESERVING_SVG_ADDR`): `/healthz`
    /// checks it too.
    pub svg_addr: Option<String>,
    /// How long one connection attempt to `is` may take before the request is answered 503.
    pub connect_timeout: Duration,
    /// How long one whole exchange with `is` (retry included) may take before it is answered 503.
    pub request_timeout: Duration,
    /// The home: sources of cached answers are checked below `<home>/images`, catalogs in
    /// `<home>/catalog`, and requests are logged to `<home>/logs/access.log`. Without a home
    /// there is neither response cache (nothing to check entries against) nor access log.
    pub home: Option<PathBuf>,
    /// The capacity of the response cache in bytes; 0 disables it.
    pub cache_bytes: u64,
    /// How long a cached answer is served before its source file is looked at again: a changed
    /// source is never served from the cache longer than this after the change.
    pub cache_check: Duration,
    /// How requests are held while `is` restarts, and how long poison requests are quarantined.
    pub hold: HoldPolicy,
    /// Connections served at once from one client address (0: no cap); see
    /// [`HttpLimits::max_per_client`].
    pub max_per_client: usize,
}

impl PlatformConfig {
    /// The configuration for `is` at `is_addr`, with the default timeouts and cache settings,
    /// and no home (so no cache and no access log).
    pub fn new(is_addr: impl Into<String>) -> Self {
        PlatformConfig {
            is_addr: is_addr.into(),
            svg_addr: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            home: None,
            cache_bytes: cache::DEFAULT_CAPACITY,
            cache_check: cache::DEFAULT_CHECK_INTERVAL,
            hold: HoldPolicy::default(),
            max_per_client: DEFAULT_MAX_PER_CLIENT,
        }
    }
}

/// Reads a byte count: digits, then optionally `K`, `M`, `G` (binary multiples, `KiB`… and
/// lower case accepted).
fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (number, unit) = text.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a byte count such as 268435456 or 256M"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("{text:?}: unknown unit (K, M or G)")),
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Runs `ps` as the supervisor starts it: listens on `IMAGESERVING_LISTEN`, talks to `is` at
/// `IMAGESERVING_IS_ADDR`, until `shutdown` completes.
pub async fn run_from_env(
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let var = |name: &str| {
        std::env::var(name).with_context(|| format!("environment variable {name} is not set"))
    };
    let listen = var(ENV_LISTEN)?;
    let mut config = PlatformConfig::new(var(ENV_IS_ADDR)?);
    config.svg_addr = std::env::var(super::image_server::ENV_SVG_ADDR)
        .ok()
        .filter(|addr| !addr.trim().is_empty());
    config.home = std::env::var_os(ENV_HOME)
        .filter(|home| !home.is_empty())
        .map(PathBuf::from);
    let optional = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if let Some(bytes) = optional(ENV_CACHE_BYTES) {
        config.cache_bytes =
            parse_bytes(&bytes).map_err(|e| anyhow::anyhow!("{ENV_CACHE_BYTES}: {e}"))?;
    }
    if let Some(check) = optional(ENV_CACHE_CHECK) {
        config.cache_check = humantime::parse_duration(check.trim()).with_context(|| {
            format!("{ENV_CACHE_CHECK}: {check:?} is not a duration such as 1s or 250ms")
        })?;
    }
    config.hold = HoldPolicy::from_env()?;
    if let Some(cap) = optional(ENV_MAX_PER_CLIENT) {
        config.max_per_client = cap.trim().parse().with_context(|| {
            format!("{ENV_MAX_PER_CLIENT}: {cap:?} is not a count such as 512 (0: no cap)")
        })?;
    }
    let listener = super::listen::listener(&listen).await?;
    let local = listener.local_addr().map_or(listen, |a| a.to_string());
    info!(
        component = "ps",
        addr = %local,
        is = %config.is_addr,
        cache_bytes = if config.home.is_some() { config.cache_bytes } else { 0 },
        cache_check = %humantime::format_duration(config.cache_check),
        hold_wait = %humantime::format_duration(config.hold.wait),
        hold_queue = config.hold.queue,
        quarantine = %humantime::format_duration(config.hold.quarantine),
        max_per_client = config.max_per_client,
        "listening"
    );
    serve(listener, config, shutdown).await?;
    info!(component = "ps", "stopped");
    Ok(())
}

/// Serves `ps` on `listener` until `shutdown` completes, then stops as [`HTTP_LIMITS`] says
/// (see [`http::serve`]) and writes the last lines of the access log.
pub async fn serve(
    listener: TcpListener,
    config: PlatformConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = Arc::new(State::new(&config)?);
    let serving = state.clone();
    let limits = HttpLimits {
        max_per_client: config.max_per_client,
        ..HTTP_LIMITS
    };
    http::serve("ps", listener, limits, shutdown, move |request, peer| {
        let state = serving.clone();
        async move { state.handle(request, peer).await }
    })
    .await;
    // The lines of the last requests, written before the process exits.
    let _ = tokio::task::spawn_blocking(move || {
        if let Some(log) = &state.access_log {
            log.flush(ACCESS_LOG_FLUSH);
        }
    })
    .await;
    Ok(())
}

/// Which route a path takes.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    /// `/is/image/{object}`: the raw path after the prefix.
    Image(&'a str),
    /// `/is/image`: the server properties.
    Properties,
    /// `/healthz`: whether the node can serve (`is` answers).
    Health,
    /// `/livez`: whether `ps` itself answers, whatever `is` does (its liveness check).
    Live,
    /// Anything else.
    NotFound,
}

fn route(path: &str) -> Route<'_> {
    match path {
        "/healthz" => Route::Health,
        "/livez" => Route::Live,
        "/is/image" | "/is/image/" => Route::Properties,
        _ => match path
            .strip_prefix(IMAGE_PREFIX)
            .and_then(|rest| rest.strip_prefix('/'))
        {
            Some(object) => Route::Image(object),
            None => Route::NotFound,
        },
    }
}

/// What every request handler shares: the clients of `is`, the response cache, the access log.
struct State {
    /// The clients of `is`.
    upstream: Upstream,
    /// The client of `svg`'s health check, when there is an `svg`.
    svg: Option<Upstream>,
    /// The deadline of one whole exchange with `/render`.
    request_timeout: Duration,
    /// The response cache, when there is a home and a capacity.
    cache: Option<Cache>,
    /// The access log, when there is a home.
    access_log: Option<AccessLog>,
}

/// The response cache and what its checks look at.
struct Cache {
    /// The entries.
    entries: ResponseCache,
    /// `<home>/images`, where the sources of entries are checked.
    images: Arc<PathBuf>,
    /// `<home>/catalog`, whose changes outdate entries.
    catalogs: Arc<CatalogWatch>,
}

impl State {
    fn new(config: &PlatformConfig) -> anyhow::Result<Self> {
        let upstream = Upstream::new(
            "ps",
            &config.is_addr,
            "/healthz",
            config.connect_timeout,
            config.hold,
        )?;
        let svg = match &config.svg_addr {
            Some(addr) => Some(Upstream::new(
                "ps",
                addr,
                "/healthz",
                config.connect_timeout,
                config.hold,
            )?),
            None => None,
        };
        let cache = config
            .home
            .as_ref()
            .filter(|_| config.cache_bytes > 0)
            .map(|home| Cache {
                entries: ResponseCache::new(config.cache_bytes, config.cache_check),
                images: Arc::new(home.join("images")),
                catalogs: Arc::new(CatalogWatch::new(home.join("catalog"), config.cache_check)),
            });
        let access_log = match &config.home {
            Some(home) => {
                Some(AccessLog::open(home).context("cannot start the access log's writer")?)
            }
            None => None,
        };
        Ok(State {
            upstream,
            svg,
            request_timeout: config.request_timeout,
            cache,
            access_log,
        })
    }

    /// Answers one request from `peer` and logs it.
    async fn handle(&self, request: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let started = Instant::now();
        let arrived = SystemTime::now();
        let head = request.method() == Method::HEAD;
        let (response, cache_use) = self.respond(&request).await;
        let response = if head && response.status() != StatusCode::NOT_MODIFIED {
            without_body(response)
        } else {
            response
        };
        let elapsed = started.elapsed();
        if let Some(log) = &self.access_log {
            log.record(&access_log::Entry {
                at: arrived,
                client: peer.ip(),
                method: request.method().as_str(),
                target: request
                    .uri()
                    .path_and_query()
                    .map_or_else(|| request.uri().path(), |target| target.as_str()),
                status: response.status().as_u16(),
                bytes: response.body().size_hint().exact().unwrap_or(0),
                duration: elapsed,
                cache: cache_use,
            });
        }
        debug!(
            component = "ps",
            method = %request.method(),
            uri = %request.uri(),
            status = response.status().as_u16(),
            cache = cache_use.as_str(),
            elapsed_ms = elapsed.as_millis() as u64,
            "request"
        );
        response
    }

    async fn respond(&self, request: &Request<Incoming>) -> (Response<Full<Bytes>>, CacheUse) {
        let route = route(request.uri().path());
        if route == Route::NotFound {
            return (text(StatusCode::NOT_FOUND, "not found"), CacheUse::None);
        }
        if !matches!(*request.method(), Method::GET | Method::HEAD) {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(ALLOW));
            return (response, CacheUse::None);
        }
        if !request.body().is_end_stream() {
            // Close rather than read a body of unknown size to keep the connection alive.
            let mut response = text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "a request body is not accepted",
            );
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return (response, CacheUse::None);
        }
        match route {
            Route::Image(object) => match query::parse(object, request.uri().query()) {
                Ok(image_request) => {
                    let if_none_match = request
                        .headers()
                        .get(header::IF_NONE_MATCH)
                        .and_then(|value| value.to_str().ok());
                    self.image(&image_request, if_none_match).await
                }
                Err(err) => (error_response(&err), CacheUse::None),
            },
            Route::Properties => (self.properties().await, CacheUse::None),
            Route::Health => (self.health().await, CacheUse::None),
            Route::Live => (text(StatusCode::OK, "ok ps"), CacheUse::None),
            Route::NotFound => (text(StatusCode::NOT_FOUND, "not found"), CacheUse::None),
        }
    }

    /// `/is/image/{object}`: from the cache when it can, else from `is` (kept when it can).
    async fn image(
        &self,
        request: &ImageRequest,
        if_none_match: Option<&str>,
    ) -> (Response<Full<Bytes>>, CacheUse) {
        let modes = request.cache.unwrap_or(CacheControl {
            client: CacheMode::On,
            server: CacheMode::On,
        });
        let cache = self
            .cache
            .as_ref()
            .filter(|_| modes.server != CacheMode::Off);
        let keyed = cache.and_then(|cache| match cache::key_of(request) {
            Ok(key) => Some((cache, key)),
            Err(err) => {
                warn!(component = "ps", error = %err, "cannot make a cache key");
                None
            }
        });
        if let Some((cache, key)) = &keyed {
            if modes.server != CacheMode::Update {
                if let Some(served) = self.cached(cache, key, modes, if_none_match).await {
                    return served;
                }
            }
        }
        let cache_use = if modes.server == CacheMode::Off {
            CacheUse::Bypass
        } else {
            CacheUse::Miss
        };
        let requested_at = SystemTime::now();
        let answer = match self.render(request).await {
            Ok(answer) if answer.status == StatusCode::OK => answer,
            Ok(answer) => return (relay(answer), cache_use),
            Err(response) => return (response, cache_use),
        };
        let etag = cache::etag(&answer.body);
        let max_age = max_age_of(&answer.headers);
        let content_type = answer
            .headers
            .get(header::CONTENT_TYPE)
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"));
        let cache_control = match max_age {
            Some(max_age) => client_cache_control(modes.client, max_age),
            None => answer
                .headers
                .get(header::CACHE_CONTROL)
                .cloned()
                .unwrap_or_else(|| HeaderValue::from_static("no-store")),
        };
        if let (Some((cache, key)), Some(source), Some(max_age)) =
            (keyed, SourceStamp::from_headers(&answer.headers), max_age)
        {
            cache.entries.insert(
                key,
                CachedAnswer {
                    body: answer.body.clone(),
                    content_type: content_type.clone(),
                    max_age: Duration::from_secs(max_age),
                    etag: etag.clone(),
                    source,
                    stored: Instant::now(),
                    requested_at,
                },
            );
        }
        let response = ok_answer(
            answer.body,
            content_type,
            &etag,
            cache_control,
            if_none_match,
        );
        (response, cache_use)
    }

    /// The kept answer of `key` if there is one still valid: checked against its source first
    /// when the check interval has passed or `cache=validate` asks.
    async fn cached(
        &self,
        cache: &Cache,
        key: &str,
        modes: CacheControl,
        if_none_match: Option<&str>,
    ) -> Option<(Response<Full<Bytes>>, CacheUse)> {
        let now = Instant::now();
        let force = modes.server == CacheMode::Validate;
        let (answer, cache_use) = match cache.entries.lookup(key, now, force) {
            Lookup::Miss => return None,
            Lookup::Fresh(answer) => (answer, CacheUse::Hit),
            Lookup::Check(answer) => {
                let images = cache.images.clone();
                let catalogs = cache.catalogs.clone();
                let checked = answer.clone();
                let valid = tokio::task::spawn_blocking(move || {
                    checked.source.unchanged(&images)
                        && !catalogs.outdates(checked.requested_at, now)
                })
                .await
                .unwrap_or(false);
                if !valid {
                    debug!(component = "ps", source = %answer.source.path, "cached answer outdated: dropped");
                    cache.entries.discard(key, &answer);
                    return None;
                }
                cache.entries.confirm(key, &answer, now);
                (answer, CacheUse::Revalidated)
            }
        };
        let cache_control = client_cache_control(modes.client, answer.remaining(now).as_secs());
        let response = ok_answer(
            answer.body.clone(),
            answer.content_type.clone(),
            &answer.etag,
            cache_control,
            if_none_match,
        );
        Some((response, cache_use))
    }

    /// Asks `is` to render `request`: its answer, whatever the status, or the error response
    /// when there is none.
    async fn render(&self, request: &ImageRequest) -> Result<Answer, Response<Full<Bytes>>> {
        let json = match serde_json::to_vec(request) {
            Ok(json) => Bytes::from(json),
            Err(err) => return Err(error_response(&ImageError::internal(err))),
        };
        let answer = self
            .upstream
            .exchange(Call {
                method: Method::POST,
                path: "/render",
                content_type: "application/json",
                body: json,
                limit: MAX_REPLY,
                deadline: self.request_timeout,
                held: true,
            })
            .await;
        Err(match answer {
            Ok(answer) => return Ok(answer),
            Err(UpstreamError::Unavailable(why)) => {
                warn!(component = "ps", object = %request.object, error = %why, "image server unavailable");
                error_response(&ImageError::new(503, UNAVAILABLE))
            }
            Err(UpstreamError::Busy) => error_response(&ImageError::new(503, UNAVAILABLE)),
            Err(UpstreamError::Quarantined { now }) => {
                if !now {
                    debug!(component = "ps", object = %request.object, "quarantined request refused");
                }
                error_response(&ImageError::new(500, QUARANTINED))
            }
            Err(UpstreamError::TimedOut) => {
                warn!(component = "ps", object = %request.object, "image server timed out");
                error_response(&ImageError::timeout(
                    "the image server did not answer in time",
                ))
            }
            Err(UpstreamError::Invalid(why)) => {
                warn!(component = "ps", object = %request.object, error = %why, "invalid answer from the image server");
                error_response(&ImageError::internal(
                    "invalid answer from the image server",
                ))
            }
        })
    }

    /// `/is/image`: the server properties, always 200.
    async fn properties(&self) -> Response<Full<Bytes>> {
        let mut lines = vec![
            "#S7Z OK".to_owned(),
            format!(
                "imageServer.platformServer.version={}",
                env!("CARGO_PKG_VERSION")
            ),
        ];
        let healthy = healthy(&self.upstream).await;
        lines.push(format!(
            "imageServer.imageServer={}",
            if healthy { "ok" } else { "unavailable" }
        ));
        if healthy {
            if let Ok(answer) = self
                .upstream
                .exchange(Call {
                    method: Method::GET,
                    path: "/info",
                    content_type: "",
                    body: Bytes::new(),
                    limit: MAX_REPLY,
                    deadline: INFO_TIMEOUT,
                    held: false,
                })
                .await
            {
                if answer.status == StatusCode::OK {
                    let body = String::from_utf8_lossy(&answer.body);
                    lines.extend(
                        body.lines()
                            .map(str::trim)
                            .filter(|line| line.starts_with("imageServer.") && line.contains('='))
                            // ps's own keys are ps's to say.
                            .filter(|line| {
                                !line.starts_with("imageServer.platformServer.")
                                    && !line.starts_with("imageServer.imageServer=")
                            })
                            .map(str::to_owned),
                    );
                }
            }
        }
        if !lines
            .iter()
            .any(|line| line.starts_with("imageServer.svgServer="))
        {
            lines.push("imageServer.svgServer=unknown".to_owned());
        }
        let mut body = lines.join("\n");
        body.push('\n');
        text_body(StatusCode::OK, body)
    }

    /// `/healthz`: 200 while `is` answers its own health check, and `svg` its own when there is one.
    async fn health(&self) -> Response<Full<Bytes>> {
        let svg = async {
            match &self.svg {
                Some(svg) => healthy(svg).await,
                None => true,
            }
        };
        match tokio::join!(healthy(&self.upstream), svg) {
            (true, true) => text(StatusCode::OK, "ok"),
            (false, _) => error_response(&ImageError::new(503, UNAVAILABLE)),
            (true, false) => error_response(&ImageError::new(
                503,
                "the SVG server is unavailable; try again later",
            )),
        }
    }
}

/// Whether the upstream answers `GET /healthz` with 200 within [`HEALTH_TIMEOUT`].
async fn healthy(upstream: &Upstream) -> bool {
    let check = Call {
        method: Method::GET,
        path: "/healthz",
        content_type: "",
        body: Bytes::new(),
        limit: MAX_REPLY,
        deadline: HEALTH_TIMEOUT,
        held: false,
    };
    match upstream.exchange(check).await {
        Ok(answer) => answer.status == StatusCode::OK,
        Err(err) => {
            debug!(component = "ps", error = ?err, "health check of an upstream failed");
            false
        }
    }
}

/// The answer of `is`, relayed: status, `Content-Type`, `Cache-Control`, `Retry-After`, body.
fn relay(answer: Answer) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(answer.body));
    *response.status_mut() = answer.status;
    for name in [
        header::CONTENT_TYPE,
        header::CACHE_CONTROL,
        header::RETRY_AFTER,
    ] {
        if let Some(value) = answer.headers.get(&name) {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}

/// The `max-age` of an answer's `Cache-Control`, in seconds.
fn max_age_of(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(header::CACHE_CONTROL)?.to_str().ok()?;
    value.split(',').find_map(|directive| {
        let (name, seconds) = directive.trim().split_once('=')?;
        if name.trim().eq_ignore_ascii_case("max-age") {
            seconds.trim().trim_matches('"').parse().ok()
        } else {
            None
        }
    })
}

/// `Cache-Control` of a `200` for the client side of `cache=`.
fn client_cache_control(client: CacheMode, max_age: u64) -> HeaderValue {
    match client {
        CacheMode::Off => HeaderValue::from_static("no-store"),
        CacheMode::Validate => HeaderValue::from_static("no-cache"),
        CacheMode::On | CacheMode::Update => {
            HeaderValue::from_str(&format!("public, max-age={max_age}"))
                .unwrap_or_else(|_| HeaderValue::from_static("no-store"))
        }
    }
}

/// A `200` image or text answer with its `ETag`, or `304` without a body when `if_none_match`
/// names that tag.
fn ok_answer(
    body: Bytes,
    content_type: HeaderValue,
    etag: &str,
    cache_control: HeaderValue,
    if_none_match: Option<&str>,
) -> Response<Full<Bytes>> {
    let not_modified = if_none_match.is_some_and(|wanted| cache::none_match(wanted, etag));
    let mut response = if not_modified {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        let mut response = Response::new(Full::new(body));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
        response
    };
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(header::CACHE_CONTROL, cache_control);
    response
}

/// The headers of `response` with an empty body, for `HEAD`: `Content-Length` still says how
/// long the body of the `GET` would be.
fn without_body(response: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    let (mut parts, body) = response.into_parts();
    let length = body.size_hint().exact().unwrap_or(0);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    Response::from_parts(parts, Full::new(Bytes::new()))
}

/// An error answer of `ps`: the status, one line of text, never cached; 503s say when to retry.
fn error_response(err: &ImageError) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(err.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = text(status, &err.message);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// A one-line text answer.
fn text(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    text_body(status, format!("{message}\n"))
}

/// A text answer, never cached.
fn text_body(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests;

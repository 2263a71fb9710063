//! The client a server calls its upstream with (`ps` → `is`, `is` → `svg`), riding out the
//! upstream's restarts and crashes by the rules of [`hold`].
//!
//! What the callers promise about it is in `docs/image-serving.md` (*Talking to `is`*). The
//! shape of the code follows from it:
//!
//! - [`Upstream`] holds two clients. The pooled one keeps connections alive between requests and
//!   drops idle ones after [`POOL_IDLE_TIMEOUT`]. The fresh one has no pool, so that a retry runs
//!   on a brand-new connection and cannot pick another stale pooled one (which is what every
//!   pooled connection is after the upstream restarted).
//! - A try fails in one of three ways (`TryError`): connecting failed (the upstream is not
//!   listening), a connection that was up broke (the upstream died with the request in flight,
//!   or the connection was stale), or the answer is unusable (never retried).
//! - A [`Call`] that is `held` waits, after a failure or while the upstream is known to be down,
//!   until the upstream's health check answers (`until_up`, which also reads how its previous
//!   process ended), then is tried again as [`hold::Attempts`] says: at most
//!   [`HoldPolicy::queue`] held at once, the suspects of a crash one at a time, a poison one
//!   quarantined and reported to the supervisor ([`super::notify`]). A call that is not held (a
//!   health check, which must tell the truth quickly) gets one retry after a broken connection,
//!   none after a refused one.
//! - The answer is read whole, up to [`Call::limit`], before [`Upstream::exchange`] returns, so a
//!   failure mid-body is a broken try (retried) rather than a truncated image.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::header::{self, HeaderMap};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::hold::{self, Attempts, Failure, HoldPolicy, Next, Quarantine};
use crate::servers::http::error_chain;

/// How long idle pooled connections are kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a held call waits for its answer before the upstream's health check is asked, and
/// how long each such check may take. An upstream that answers neither the call nor
/// [`HUNG_CHECKS`] health checks in a row is hung (frozen by SIGSTOP, deadlocked): the call
/// fails as if the upstream had died, instead of waiting for its whole deadline (35 s for a
/// render), and the upstream counts as down, so that the next calls are answered `503` after the
/// hold rather than each waiting as long. A busy upstream still answers its health check (the
/// servers answer it beside their workers), so a slow render is left alone.
pub const HUNG_CHECK: Duration = Duration::from_secs(2);
/// See [`HUNG_CHECK`].
pub const HUNG_CHECKS: u32 = 2;

/// An answer of the upstream, read whole.
#[derive(Debug)]
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its whole body.
    pub body: Bytes,
}

/// One request to the upstream.
#[derive(Debug)]
pub struct Call<'a> {
    /// Its method.
    pub method: Method,
    /// Its path and query.
    pub path: &'a str,
    /// The `Content-Type` of a non-empty body.
    pub content_type: &'static str,
    /// Its body; empty for none.
    pub body: Bytes,
    /// The largest answer body read; more is [`UpstreamError::Invalid`].
    pub limit: usize,
    /// How long the whole exchange may take, holding included.
    pub deadline: Duration,
    /// Whether the call is held and tried again while the upstream restarts, and quarantined
    /// when it is a poison request.
    pub held: bool,
}

/// Why an exchange with the upstream gave no answer.
#[derive(Debug)]
pub enum UpstreamError {
    /// No connection, or the connection broke, until the hold ran out.
    Unavailable(String),
    /// The holding queue was full.
    Busy,
    /// No answer within the deadline.
    TimedOut,
    /// An answer that cannot be used.
    Invalid(String),
    /// A poison request: the upstream died twice with it in flight (`now`), or it was
    /// quarantined before.
    Quarantined {
        /// Whether this exchange made it a suspect, rather than finding it quarantined.
        now: bool,
    },
}

/// How one try failed.
#[derive(Debug)]
enum TryError {
    /// Connecting failed.
    Connect(String),
    /// The connection was up and broke.
    Broken(String),
    /// The answer is unusable.
    Invalid(String),
}

/// The clients of one upstream: a keep-alive pool, a client without one for retries, and the
/// holding queue and quarantine.
#[derive(Debug)]
pub struct Upstream {
    /// Who calls, for the log: `ps`, `is`.
    caller: &'static str,
    /// `http://{addr}`, without a trailing slash.
    base: String,
    /// The keep-alive client.
    pooled: Client<HttpConnector, Full<Bytes>>,
    /// A client without a pool: every request on a new connection, for retries.
    fresh: Client<HttpConnector, Full<Bytes>>,
    /// How calls are held.
    policy: HoldPolicy,
    /// One permit per call being held.
    held: Semaphore,
    /// The poison requests.
    quarantine: Quarantine,
    /// The path of the upstream's health check, polled while a request is held.
    health_path: &'static str,
    /// Whether the upstream is known to be down: a call failed and none succeeded since.
    down: AtomicBool,
    /// One permit: the requests the upstream crashed with once are tried again one at a time.
    suspects: Semaphore,
    /// [`HUNG_CHECK`], shorter in tests.
    hung_check: Duration,
}

impl Upstream {
    /// The clients of the upstream at `addr` (`host:port`) whose health check is a `GET` on
    /// `health_path`, each connection attempt bounded by `connect_timeout`. Connects lazily; fails only on an address that is not `host:port`.
    pub fn new(
        caller: &'static str,
        addr: &str,
        health_path: &'static str,
        connect_timeout: Duration,
        policy: HoldPolicy,
    ) -> anyhow::Result<Upstream> {
        let base = format!("http://{addr}");
        let uri: Uri = format!("{base}/")
            .parse()
            .with_context(|| format!("invalid upstream address {addr:?}"))?;
        if uri.host().is_none() || uri.port().is_none() {
            anyhow::bail!("invalid upstream address {addr:?}: expected host:port");
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let pooled = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector.clone());
        let fresh = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        Ok(Upstream {
            caller,
            base,
            pooled,
            fresh,
            policy,
            held: Semaphore::new(policy.queue),
            quarantine: Quarantine::new(policy.quarantine),
            health_path,
            down: AtomicBool::new(false),
            suspects: Semaphore::new(1),
            hung_check: HUNG_CHECK,
        })
    }

    /// One exchange with the upstream within `call.deadline`, held and tried again as the
    /// module says.
    pub async fn exchange(&self, call: Call<'_>) -> Result<Answer, UpstreamError> {
        // Only held calls are judged: a health check is never a poison request.
        let key = call
            .held
            .then(|| self.quarantine.key(call.path, &call.body));
        if key.is_some_and(|key| self.quarantine.contains(key, Instant::now())) {
            return Err(UpstreamError::Quarantined { now: false });
        }
        let uri = format!("{}{}", self.base, call.path);
        let wait = if call.held {
            self.policy.wait
        } else {
            Duration::ZERO
        };
        let tries = async {
            let mut attempts = Attempts::new();
            let mut client = &self.pooled;
            let mut holding = None;
            let mut last_error = None;
            loop {
                let known_down = self.down.load(Ordering::Relaxed);
                if !wait.is_zero() && (known_down || last_error.is_some()) {
                    if holding.is_none() {
                        match self.held.try_acquire() {
                            Ok(permit) => holding = Some(permit),
                            Err(_) => {
                                warn!(
                                    component = self.caller,
                                    path = call.path,
                                    queue = self.policy.queue,
                                    "upstream unavailable and the holding queue is full"
                                );
                                return Err(UpstreamError::Busy);
                            }
                        }
                    }
                    attempts.hold(Instant::now());
                    let Some(previous_exit) = self.until_up(&attempts, wait).await else {
                        let why = last_error.unwrap_or_else(|| "it was down".to_owned());
                        return Err(UpstreamError::Unavailable(format!(
                            "not back within {}: {why}",
                            humantime::format_duration(wait)
                        )));
                    };
                    let poison = attempts.back(hold::crashed(previous_exit.as_deref()));
                    if let Some(key) = key.filter(|_| poison) {
                        self.quarantine.insert(key, Instant::now());
                        super::notify::poison(self.caller, &self.base["http://".len()..]);
                        warn!(
                            component = self.caller,
                            path = call.path,
                            request = %String::from_utf8_lossy(&call.body[..call.body.len().min(512)]),
                            quarantine = %humantime::format_duration(self.policy.quarantine),
                            "poison request: the upstream crashed twice with it in flight; quarantined"
                        );
                        return Err(UpstreamError::Quarantined { now: true });
                    }
                }
                // A suspect goes alone: a second crash is then pinned on it, not on whatever
                // else was in flight.
                let _alone = if attempts.suspect() {
                    let remaining = attempts.remaining(Instant::now(), wait);
                    match tokio::time::timeout(remaining, self.suspects.acquire()).await {
                        Ok(Ok(permit)) => Some(permit),
                        _ => {
                            return Err(UpstreamError::Unavailable(
                                "other suspects of a crash were being tried again".to_owned(),
                            ))
                        }
                    }
                } else {
                    None
                };
                let answer = if call.held {
                    self.try_watched(client, &call, &uri).await
                } else {
                    try_once(client, &call, &uri).await
                };
                let (failure, why) = match answer {
                    Ok(answer) => {
                        self.down.store(false, Ordering::Relaxed);
                        if attempts.died_once() {
                            debug!(
                                component = self.caller,
                                path = call.path,
                                "answered by the upstream after it died with the request in flight"
                            );
                        }
                        return Ok(answer);
                    }
                    Err(TryError::Invalid(why)) => return Err(UpstreamError::Invalid(why)),
                    Err(TryError::Connect(why)) => (Failure::Unreachable, why),
                    Err(TryError::Broken(why)) => (Failure::Died, why),
                };
                self.down.store(true, Ordering::Relaxed);
                match attempts.failed(failure, Instant::now(), wait) {
                    Next::Retry => {
                        debug!(component = self.caller, path = call.path, ?failure, error = %why, "upstream failed, holding the request");
                        client = &self.fresh;
                        last_error = Some(why);
                    }
                    Next::GiveUp => return Err(UpstreamError::Unavailable(why)),
                }
            }
        };
        tokio::time::timeout(call.deadline, tries)
            .await
            .unwrap_or(Err(UpstreamError::TimedOut))
    }

    /// [`try_once`], with the upstream's health checked while the answer is late: fails as a
    /// broken try when the upstream is hung (see [`HUNG_CHECK`]).
    async fn try_watched(
        &self,
        client: &Client<HttpConnector, Full<Bytes>>,
        call: &Call<'_>,
        uri: &str,
    ) -> Result<Answer, TryError> {
        let attempt = try_once(client, call, uri);
        tokio::pin!(attempt);
        if let Ok(answer) = tokio::time::timeout(self.hung_check, &mut attempt).await {
            return answer;
        }
        let mut failed = 0;
        loop {
            tokio::select! {
                answer = &mut attempt => return answer,
                healthy = self.healthy(self.hung_check) => {
                    if healthy {
                        failed = 0;
                        // Busy, not hung: look again later.
                        if let Ok(answer) = tokio::time::timeout(self.hung_check, &mut attempt).await {
                            return answer;
                        }
                    } else {
                        failed += 1;
                        if failed >= HUNG_CHECKS {
                            warn!(
                                component = self.caller,
                                path = call.path,
                                checks = failed,
                                "the upstream answers neither this request nor its health check: hung"
                            );
                            return Err(TryError::Broken(format!(
                                "the upstream answered neither the request nor {failed} health checks in a row (hung)"
                            )));
                        }
                    }
                }
            }
        }
    }

    /// Whether the upstream's health check answers 200 within `timeout`, on a new connection.
    async fn healthy(&self, timeout: Duration) -> bool {
        let Ok(uri) = format!("{}{}", self.base, self.health_path).parse::<Uri>() else {
            return false;
        };
        matches!(
            tokio::time::timeout(timeout, self.fresh.get(uri)).await,
            Ok(Ok(response)) if response.status() == StatusCode::OK
        )
    }

    /// Polls the upstream's health check on new connections until it answers 200, or the
    /// request's wait runs out (`None`); once back, what the upstream says of how its previous
    /// process ended ([`hold::PREVIOUS_EXIT_HEADER`]).
    async fn until_up(&self, attempts: &Attempts, wait: Duration) -> Option<Option<String>> {
        let uri = format!("{}{}", self.base, self.health_path)
            .parse::<Uri>()
            .ok()?;
        let mut refused = 0;
        loop {
            let remaining = attempts.remaining(Instant::now(), wait);
            if remaining.is_zero() {
                return None;
            }
            match tokio::time::timeout(remaining, self.fresh.get(uri.clone())).await {
                Err(_) => return None,
                Ok(Ok(response)) if response.status() == StatusCode::OK => {
                    let previous_exit = response
                        .headers()
                        .get(hold::PREVIOUS_EXIT_HEADER)
                        .and_then(|value| value.to_str().ok())
                        .map(str::to_owned);
                    return Some(previous_exit);
                }
                Ok(_) => {
                    refused += 1;
                    tokio::time::sleep(hold::pause(refused).min(remaining)).await;
                }
            }
        }
    }
}

/// One try on `client`, the answer read whole.
async fn try_once(
    client: &Client<HttpConnector, Full<Bytes>>,
    call: &Call<'_>,
    uri: &str,
) -> Result<Answer, TryError> {
    let mut builder = Request::builder().method(call.method.clone()).uri(uri);
    if !call.body.is_empty() {
        builder = builder.header(header::CONTENT_TYPE, call.content_type);
    }
    let request = builder
        .body(Full::new(call.body.clone()))
        .map_err(|err| TryError::Invalid(format!("cannot build the request: {err}")))?;
    let response = client.request(request).await.map_err(|err| {
        let why = error_chain(&err);
        if err.is_connect() {
            TryError::Connect(why)
        } else {
            TryError::Broken(why)
        }
    })?;
    let (parts, incoming) = response.into_parts();
    let body = match Limited::new(incoming, call.limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => {
            return Err(TryError::Invalid(format!(
                "answer larger than {} bytes",
                call.limit
            )))
        }
        Err(err) => return Err(TryError::Broken(error_chain(&*err))),
    };
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Call` of a render, held, with a deadline far beyond the test's.
    fn render() -> Call<'static> {
        Call {
            method: Method::POST,
            path: "/render",
            content_type: "application/json",
            body: Bytes::from_static(b"{}"),
            limit: 1024,
            deadline: Duration::from_secs(35),
            held: true,
        }
    }

    /// The client of the upstream at `addr`, checking its health after 100 ms without an answer.
    fn watched(addr: std::net::SocketAddr, policy: HoldPolicy) -> Upstream {
        let mut upstream = Upstream::new(
            "ps",
            &addr.to_string(),
            "/healthz",
            Duration::from_secs(1),
            policy,
        )
        .unwrap();
        upstream.hung_check = Duration::from_millis(100);
        upstream
    }

    /// A held call to an upstream that accepts connections and answers nothing, its health
    /// check included (a process frozen with SIGSTOP behind a held socket), fails after two
    /// failed health checks and the hold, not at its 35 s deadline; one whose health check
    /// answers while the render is slow gets its answer.
    #[tokio::test]
    async fn a_hung_upstream_fails_the_call_early_and_a_busy_one_does_not() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let quick = HoldPolicy {
            wait: Duration::from_millis(300),
            ..HoldPolicy::default()
        };
        let frozen = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = frozen.local_addr().unwrap();
        // Accepted and kept, never read: what the kernel does for a stopped process.
        let keep = tokio::spawn(async move {
            let mut kept = Vec::new();
            while let Ok((stream, _)) = frozen.accept().await {
                kept.push(stream);
            }
        });
        let upstream = watched(addr, quick);
        let started = Instant::now();
        let result = tokio::time::timeout(Duration::from_secs(10), upstream.exchange(render()))
            .await
            .expect("not at the deadline");
        assert!(
            matches!(&result, Err(UpstreamError::Unavailable(why)) if why.contains("hung")),
            "{result:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        keep.abort();

        // Busy: the health check answers at once, the render after 700 ms (seven checks).
        let busy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = busy.local_addr().unwrap();
        let serve = tokio::spawn(async move {
            while let Ok((mut stream, _)) = busy.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0; 4096];
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    if !buf[..n].starts_with(b"GET /healthz") {
                        tokio::time::sleep(Duration::from_millis(700)).await;
                    }
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                });
            }
        });
        let upstream = watched(addr, quick);
        let answer = tokio::time::timeout(Duration::from_secs(10), upstream.exchange(render()))
            .await
            .expect("in time")
            .expect("answered");
        assert_eq!(answer.body.as_ref(), b"ok");
        serve.abort();
    }

    #[test]
    fn addresses_must_be_host_and_port() {
        let timeout = Duration::from_secs(1);
        let new = |addr| Upstream::new("ps", addr, "/healthz", timeout, HoldPolicy::default());
        assert!(new("no port").is_err());
        assert!(new("localhost").is_err());
        assert!(new("127.0.0.1:27345").is_ok());
        assert!(new("[::1]:27345").is_ok());
    }
}

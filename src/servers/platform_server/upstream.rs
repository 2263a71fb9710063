//! The client `ps` talks to the Image Server with, and its one retry.
//!
//! What `ps` promises about it (a quick `503` when `is` is down, one retry, answers read whole)
//! is in `docs/image-serving.md` (*Talking to `is`*). The shape of the code follows from it:
//!
//! - [`Upstream`] holds two clients. The pooled one keeps connections to `is` alive between
//!   requests and drops idle ones after [`POOL_IDLE_TIMEOUT`]. The fresh one has no pool, so
//!   that the retry runs on a brand-new connection and cannot pick another stale pooled one
//!   (which is what every pooled connection is after `is` restarted).
//! - An attempt fails in one of three ways (`AttemptError`): connecting failed (`is` is down:
//!   no retry), a connection that was up broke (worth one retry: rendering is idempotent), or
//!   the answer is unusable.
//! - The answer is read whole, up to [`MAX_REPLY`], before [`Upstream::exchange`] returns, so a
//!   failure of `is` mid-body is a broken attempt (retried, then a clean `503`) rather than a
//!   truncated image.
//!
//! Nothing is remembered between requests: once `is` is back, the next request reconnects.

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::header::{self, HeaderMap};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tracing::debug;

use crate::servers::http::error_chain;

/// The largest answer of `is` relayed; `is` limits its replies to 16 MB, so more is a bug.
pub const MAX_REPLY: usize = 64 * 1024 * 1024;
/// How long idle pooled connections to `is` are kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// An answer of `is`, read whole.
#[derive(Debug)]
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its whole body.
    pub body: Bytes,
}

/// Why an exchange with `is` gave no answer.
#[derive(Debug)]
pub enum UpstreamError {
    /// No connection, or the connection broke (after the retry).
    Unavailable(String),
    /// No answer within the deadline.
    TimedOut,
    /// An answer `ps` cannot relay.
    Invalid(String),
}

/// How one attempt failed.
#[derive(Debug)]
enum AttemptError {
    /// Connecting failed: no retry, `is` is down.
    Connect(String),
    /// The connection was up and broke: worth one retry on a new connection.
    Broken(String),
    /// The answer is unusable.
    Invalid(String),
}

/// The clients of `is`: a keep-alive pool, and a client without one for the retry.
#[derive(Debug)]
pub struct Upstream {
    /// `http://{is_addr}`, without a trailing slash.
    base: String,
    /// The keep-alive client of `is`.
    pooled: Client<HttpConnector, Full<Bytes>>,
    /// A client without a pool: every request on a new connection, for the one retry.
    fresh: Client<HttpConnector, Full<Bytes>>,
}

impl Upstream {
    /// The clients of `is` at `is_addr` (`host:port`), each connection attempt bounded by
    /// `connect_timeout`. Connects lazily; fails only on an address that is not `host:port`.
    pub fn new(is_addr: &str, connect_timeout: Duration) -> anyhow::Result<Upstream> {
        let base = format!("http://{is_addr}");
        let uri: Uri = format!("{base}/render")
            .parse()
            .with_context(|| format!("invalid image server address {is_addr:?}"))?;
        if uri.host().is_none() || uri.port().is_none() {
            anyhow::bail!("invalid image server address {is_addr:?}: expected host:port");
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
            base,
            pooled,
            fresh,
        })
    }

    /// One exchange with `is` within `deadline`: a first attempt on the pooled client and, when
    /// a connection that was up broke, one retry on a new connection. A non-empty `body` is
    /// sent as JSON.
    pub async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        deadline: Duration,
    ) -> Result<Answer, UpstreamError> {
        let uri = format!("{}{path}", self.base);
        let attempts = async {
            let first = attempt(&self.pooled, &method, &uri, body.clone()).await;
            let failure = match first {
                Ok(answer) => return Ok(answer),
                Err(AttemptError::Connect(why)) => return Err(UpstreamError::Unavailable(why)),
                Err(AttemptError::Invalid(why)) => return Err(UpstreamError::Invalid(why)),
                Err(AttemptError::Broken(why)) => why,
            };
            debug!(component = "ps", error = %failure, "connection to the image server broke, retrying once on a new one");
            match attempt(&self.fresh, &method, &uri, body).await {
                Ok(answer) => Ok(answer),
                Err(AttemptError::Connect(why) | AttemptError::Broken(why)) => {
                    Err(UpstreamError::Unavailable(why))
                }
                Err(AttemptError::Invalid(why)) => Err(UpstreamError::Invalid(why)),
            }
        };
        tokio::time::timeout(deadline, attempts)
            .await
            .unwrap_or(Err(UpstreamError::TimedOut))
    }
}

/// One attempt on `client`, the answer read whole.
async fn attempt(
    client: &Client<HttpConnector, Full<Bytes>>,
    method: &Method,
    uri: &str,
    body: Bytes,
) -> Result<Answer, AttemptError> {
    let mut builder = Request::builder().method(method.clone()).uri(uri);
    if !body.is_empty() {
        builder = builder.header(header::CONTENT_TYPE, "application/json");
    }
    let request = builder
        .body(Full::new(body))
        .map_err(|err| AttemptError::Invalid(format!("cannot build the request: {err}")))?;
    let response = client.request(request).await.map_err(|err| {
        let why = error_chain(&err);
        if err.is_connect() {
            AttemptError::Connect(why)
        } else {
            AttemptError::Broken(why)
        }
    })?;
    let (parts, incoming) = response.into_parts();
    let body = match Limited::new(incoming, MAX_REPLY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => {
            return Err(AttemptError::Invalid(format!(
                "answer larger than {MAX_REPLY} bytes"
            )))
        }
        Err(err) => return Err(AttemptError::Broken(error_chain(&*err))),
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

    #[test]
    fn addresses_must_be_host_and_port() {
        let timeout = Duration::from_secs(1);
        assert!(Upstream::new("no port", timeout).is_err());
        assert!(Upstream::new("localhost", timeout).is_err());
        assert!(Upstream::new("127.0.0.1:27345", timeout).is_ok());
        assert!(Upstream::new("[::1]:27345", timeout).is_ok());
    }
}

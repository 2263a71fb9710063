//! The HTTP/1.1 skeleton the three component servers share: the accept loop with its
//! connection cap, the limits of each connection, and the graceful stop. Each server brings
//! its own request handler and its own [`HttpLimits`]; the values each one uses, and what a
//! client sees when it meets a limit, are in `docs/image-serving.md` (*HTTP limits*).
//!
//! ```text
//!  accept ──▶ one task per connection (hyper http1, keep-alive) ──▶ handler(request, peer)
//!    │  at max_connections: stop accepting, newcomers wait in the listen backlog
//!  shutdown ──▶ close the listener; idle connections close at once (one that has not sent its
//!               first request yet gets FIRST_REQUEST_GRACE to send it); requests in flight get
//!               drain_deadline to finish, then their connections are dropped
//! ```
//!
//! Every log line carries `component` (`ps`, `is`, `svg`), like every other line the servers
//! log. Warnings that can repeat for as long as a condition lasts (the cap reached, accept
//! failing) are written at most once per [`NOTICE_INTERVAL`], with the number of times they
//! stand for.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tracing::{debug, error, warn};

use crate::notice::{Notice, NOTICE_INTERVAL};

/// hyper's own bound on the read buffer, which holds the request head: 408 KiB.
pub const DEFAULT_MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;
/// The smallest head limit hyper accepts (it panics below): 8 KiB.
const MIN_HEAD_BYTES: usize = 8192;
/// Once shutdown is asked for, how long a connection accepted but not yet sent a request may
/// still send its first one (it is answered, then closed). Closing it at once would fail a
/// client that connected just before the stop, and whose request was already on its way.
pub const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// The limits of one server's HTTP side. Each server passes its own (`ps`, `is` and `svg` each
/// have a `HTTP_LIMITS` constant, or build one from their configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections served at once. At the cap the server stops accepting: newcomers wait in the
    /// kernel's listen backlog (1024 with tokio, bounded by `net.core.somaxconn`) and are taken
    /// as others close. At least 1.
    pub max_connections: usize,
    /// Connections served at once from one client address (0: no such cap). A connection past
    /// it is closed as soon as it is accepted, so that one address cannot take every slot of
    /// [`Self::max_connections`] (10,000 idle connections from one attacker) while others wait.
    pub max_per_client: usize,
    /// How long a client has to send a whole request head (request line and headers); past it
    /// the connection is closed without an answer. hyper starts this clock as soon as a
    /// connection waits for a request, when it opens and again after each answer, so this is
    /// also how long an idle keep-alive connection stays open: hyper 1 has no separate idle
    /// timeout.
    pub header_read_timeout: Duration,
    /// The largest request head in bytes (hyper's read buffer); a larger one is answered `431`
    /// (`414` for a URI over hyper's 64 KiB that fits in this limit). Values below 8 KiB count as
    /// 8 KiB, hyper's minimum.
    pub max_head_bytes: usize,
    /// The pause after a failed accept (out of file descriptors, say), so that a failure that
    /// lasts does not spin.
    pub accept_backoff: Duration,
    /// Once shutdown is asked for: how long the requests in flight may run on before their
    /// connections are dropped. Idle connections are closed at once, and no new request is
    /// read on a connection whose answer is being finished.
    pub drain_deadline: Duration,
}

/// Serves HTTP/1.1 on `listener` with `handler` until `shutdown` completes, then stops as
/// [`HttpLimits::drain_deadline`] says and returns.
///
/// `component` names the server in every log line. `handler` answers one request from a peer;
/// it is never cancelled by the skeleton before the drain deadline.
pub async fn serve<H, F, B>(
    component: &'static str,
    listener: TcpListener,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
    handler: H,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let max_connections = limits.max_connections.max(1);
    let (stopping, stop) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    let mut full = false;
    let mut cap_notice = Notice::new(NOTICE_INTERVAL);
    let mut accept_notice = Notice::new(NOTICE_INTERVAL);
    let mut client_notice = Notice::new(NOTICE_INTERVAL);
    let per_client = PerClient::default();
    // Everything the server needs is set up: `ready = { notify = true }` is met.
    super::notify::ready(component);
    loop {
        let was_full = full;
        full = connections.len() >= max_connections;
        if full && !was_full {
            if let Some(times) = cap_notice.occurred(Instant::now()) {
                warn!(
                    component,
                    max_connections,
                    times,
                    "connection cap reached: new connections wait in the listen backlog"
                );
            }
        }
        tokio::select! {
            () = &mut shutdown => break,
            Some(ended) = connections.join_next(), if !connections.is_empty() => {
                if let Err(err) = ended {
                    if err.is_panic() {
                        error!(component, "a connection's task panicked");
                    }
                }
            }
            accepted = listener.accept(), if !full => match accepted {
                Ok((stream, peer)) => {
                    let Some(slot) = per_client.take(peer.ip(), limits.max_per_client) else {
                        if let Some(times) = client_notice.occurred(Instant::now()) {
                            warn!(
                                component,
                                client = %peer.ip(),
                                max_per_client = limits.max_per_client,
                                times,
                                "a client address reached its connection cap: its new connections are closed"
                            );
                        }
                        drop(stream);
                        continue;
                    };
                    let serving = connection(
                        component,
                        stream,
                        peer,
                        limits,
                        handler.clone(),
                        stop.clone(),
                    );
                    connections.spawn(async move {
                        serving.await;
                        drop(slot);
                    });
                }
                Err(err) => {
                    if let Some(times) = accept_notice.occurred(Instant::now()) {
                        warn!(component, error = %err, times, "accept failed");
                    }
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(limits.accept_backoff) => {}
                    }
                }
            },
        }
    }
    drop(listener);
    let _ = stopping.send(true);
    let drained = tokio::time::timeout(limits.drain_deadline, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            component,
            dropped = connections.len(),
            drain_deadline = ?limits.drain_deadline,
            "requests still running at the drain deadline: their connections are dropped"
        );
        connections.shutdown().await;
    }
}

/// Serves one connection until it closes, or until `stop` turns true: then the request in
/// progress, if any, is answered and the connection closes.
async fn connection<H, F, B>(
    component: &'static str,
    stream: TcpStream,
    peer: SocketAddr,
    limits: HttpLimits,
    handler: H,
    mut stop: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Send + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // Answers are written whole: waiting for more to fill a packet only adds latency.
    let _ = stream.set_nodelay(true);
    let first_request = Arc::new(Notify::new());
    let started = Arc::new(AtomicBool::new(false));
    let service = service_fn({
        let (first_request, started) = (first_request.clone(), started.clone());
        move |request| {
            if !started.swap(true, Ordering::Relaxed) {
                first_request.notify_one();
            }
            let answer = handler(request, peer);
            async move { Ok::<_, Infallible>(answer.await) }
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_head_bytes.max(MIN_HEAD_BYTES));
    let mut connection = pin!(builder.serve_connection(TokioIo::new(stream), service));
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stopped(&mut stop) => {
            let first = if started.load(Ordering::Relaxed) {
                None
            } else {
                // Accepted just before the stop: its first request may be on its way.
                tokio::select! {
                    result = connection.as_mut() => Some(result),
                    () = first_request.notified() => None,
                    () = tokio::time::sleep(FIRST_REQUEST_GRACE) => None,
                }
            };
            match first {
                Some(result) => result,
                None => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            }
        }
    };
    if let Err(err) = result {
        debug!(component, %peer, error = %err, "connection ended with an error");
    }
}

/// The open connections of each client address, for [`HttpLimits::max_per_client`].
#[derive(Clone, Debug, Default)]
struct PerClient(Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>);

/// One connection counted against its address; uncounted when dropped (its task ended, or was
/// aborted at the drain deadline).
#[derive(Debug)]
struct ClientSlot {
    counts: PerClient,
    ip: std::net::IpAddr,
}

impl PerClient {
    /// A slot for a new connection from `ip`, or none when it has `cap` open already (`cap` 0:
    /// always one).
    fn take(&self, ip: std::net::IpAddr, cap: usize) -> Option<ClientSlot> {
        let mut counts = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let open = counts.entry(ip).or_insert(0);
        if cap > 0 && *open >= cap {
            return None;
        }
        *open += 1;
        Some(ClientSlot {
            counts: self.clone(),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut counts = self
            .counts
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(open) = counts.get_mut(&self.ip) {
            *open -= 1;
            if *open == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Completes once the server is stopping.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the server is gone: stopping as well.
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// An error and its sources on one line, `outer: inner: innermost`, for the logs of the
/// clients between the servers (hyper's errors keep the useful part in their sources).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut chain = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        chain.push_str(": ");
        chain.push_str(&inner.to_string());
        source = inner.source();
    }
    chain
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http_body_util::Full;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::sync::{mpsc, oneshot, Notify};
    use tokio::task::JoinHandle;
    use tokio::time::timeout;

    use super::*;

    /// The bound of every test.
    const TEST_DEADLINE: Duration = Duration::from_secs(20);
    /// How long a test waits to conclude that something does not happen.
    const QUIET: Duration = Duration::from_millis(300);

    /// Long timeouts and a roomy cap: each test shortens what it tests.
    const LIMITS: HttpLimits = HttpLimits {
        max_connections: 64,
        max_per_client: 0,
        header_read_timeout: Duration::from_secs(30),
        max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
        accept_backoff: Duration::from_millis(100),
        drain_deadline: Duration::from_secs(10),
    };

    async fn bounded<T>(test: impl Future<Output = T>) -> T {
        timeout(TEST_DEADLINE, test)
            .await
            .expect("the test took too long")
    }

    /// What the test handler shares with the test: `/slow` tells `entered` and waits for
    /// `release` (forever if it never comes); every other path answers `ok` at once.
    #[derive(Default)]
    struct Shared {
        handled: AtomicUsize,
        release: Notify,
    }

    /// A skeleton serving the test handler on an ephemeral port.
    struct TestServer {
        addr: SocketAddr,
        shared: Arc<Shared>,
        entered: mpsc::UnboundedReceiver<()>,
        stop: Option<oneshot::Sender<()>>,
        task: JoinHandle<()>,
    }

    impl TestServer {
        async fn start(limits: HttpLimits) -> TestServer {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let shared = Arc::new(Shared::default());
            let (entered_tx, entered) = mpsc::unbounded_channel();
            let (stop, stopped) = oneshot::channel::<()>();
            let handler_shared = shared.clone();
            let handler = move |request: Request<Incoming>, _peer: SocketAddr| {
                let shared = handler_shared.clone();
                let entered = entered_tx.clone();
                async move {
                    shared.handled.fetch_add(1, Ordering::SeqCst);
                    if request.uri().path() == "/slow" {
                        let _ = entered.send(());
                        shared.release.notified().await;
                    }
                    Response::new(Full::new(Bytes::from_static(b"ok")))
                }
            };
            let task = tokio::spawn(serve(
                "test",
                listener,
                limits,
                async move {
                    let _ = stopped.await;
                },
                handler,
            ));
            TestServer {
                addr,
                shared,
                entered,
                stop: Some(stop),
                task,
            }
        }

        fn handled(&self) -> usize {
            self.shared.handled.load(Ordering::SeqCst)
        }

        fn shut_down(&mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    /// Sends a GET of `path` on `stream` (keep-alive).
    async fn send_get(stream: &mut TcpStream, path: &str) {
        let head = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
    }

    /// Reads one answer to a GET of the test handler (whose body is `ok`): its status line.
    async fn read_answer(stream: &mut TcpStream) -> io::Result<String> {
        let mut answer = Vec::new();
        let mut buf = [0; 1024];
        while !answer.ends_with(b"\r\n\r\nok") {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            answer.extend_from_slice(&buf[..n]);
        }
        let answer = String::from_utf8_lossy(&answer).into_owned();
        Ok(answer.lines().next().unwrap_or_default().to_owned())
    }

    /// Whether the server closes `stream` (end of file or reset) within `within`.
    async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
        let mut buf = [0; 1024];
        let read = async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        timeout(within, read).await.is_ok()
    }

    #[tokio::test]
    async fn the_connection_cap_is_honoured_and_newcomers_wait() {
        bounded(async {
            let server = TestServer::start(HttpLimits {
                max_connections: 2,
                ..LIMITS
            })
            .await;
            let mut first = TcpStream::connect(server.addr).await.unwrap();
            send_get(&mut first, "/").await;
            assert_eq!(read_answer(&mut first).await.unwrap(), "HTTP/1.1 200 OK");
            let mut second = TcpStream::connect(server.addr).await.unwrap();
            send_get(&mut second, "/").await;
            assert_eq!(read_answer(&mut second).await.unwrap(), "HTTP/1.1 200 OK");

            // Two open connections: a third one connects (the kernel's backlog) but is not
            // served while they stay open.
            let mut third = TcpStream::connect(server.addr).await.unwrap();
            send_get(&mut third, "/").await;
            assert!(timeout(QUIET, read_answer(&mut third)).await.is_err());
            assert_eq!(server.handled(), 2);

            // One closes: the third is taken and answered.
            drop(first);
            assert_eq!(read_answer(&mut third).await.unwrap(), "HTTP/1.1 200 OK");
            assert_eq!(server.handled(), 3);
            // The one left open still works.
            send_get(&mut second, "/").await;
            assert_eq!(read_answer(&mut second).await.unwrap(), "HTTP/1.1 200 OK");
        })
        .await;
    }

    /// One address at its own cap gets its further connections closed at once, while the server
    /// still has room: others are served; a slot freed is taken again.
    #[tokio::test]
    async fn one_client_address_cannot_take_every_connection() {
        bounded(async {
            let server = TestServer::start(HttpLimits {
                max_per_client: 2,
                ..LIMITS
            })
            .await;
            let mut first = TcpStream::connect(server.addr).await.unwrap();
            let mut second = TcpStream::connect(server.addr).await.unwrap();
            send_get(&mut first, "/").await;
            send_get(&mut second, "/").await;
            assert_eq!(read_answer(&mut first).await.unwrap(), "HTTP/1.1 200 OK");
            assert_eq!(read_answer(&mut second).await.unwrap(), "HTTP/1.1 200 OK");
            // A third from the same address (127.0.0.1): closed without an answer.
            let mut third = TcpStream::connect(server.addr).await.unwrap();
            let _ = third.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
            let mut buf = [0u8; 64];
            let read = timeout(Duration::from_secs(5), third.read(&mut buf))
                .await
                .expect("closed at once");
            assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
            // Another address is served meanwhile (127.0.0.2 is loopback too).
            let other = tokio::net::TcpSocket::new_v4().unwrap();
            other.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            let mut other = other.connect(server.addr).await.unwrap();
            send_get(&mut other, "/").await;
            assert_eq!(read_answer(&mut other).await.unwrap(), "HTTP/1.1 200 OK");
            // One of the first two closes: the address may connect again.
            drop(first);
            let mut again = None;
            for _ in 0..50 {
                let mut fourth = TcpStream::connect(server.addr).await.unwrap();
                send_get(&mut fourth, "/").await;
                if let Ok(Some(line)) = timeout(QUIET, read_answer(&mut fourth))
                    .await
                    .map(Result::ok)
                {
                    again = Some(line);
                    break;
                }
            }
            assert_eq!(again.as_deref(), Some("HTTP/1.1 200 OK"));
        })
        .await;
    }

    #[tokio::test]
    async fn reaching_the_cap_again_and_again_is_logged_once() {
        let lines = Arc::new(Mutex::new(Vec::<u8>::new()));
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .with_writer(move || Captured(writer.clone()))
            .finish();
        // A current-thread runtime: the server's tasks run on this thread and see the
        // subscriber.
        let _guard = tracing::subscriber::set_default(subscriber);
        bounded(async {
            let server = TestServer::start(HttpLimits {
                max_connections: 1,
                ..LIMITS
            })
            .await;
            let mut holder = TcpStream::connect(server.addr).await.unwrap();
            send_get(&mut holder, "/").await;
            read_answer(&mut holder).await.unwrap();
            // Each waiting client gets the only slot in turn: the cap is reached every time.
            let mut waiting = Vec::new();
            for _ in 0..5 {
                let mut stream = TcpStream::connect(server.addr).await.unwrap();
                send_get(&mut stream, "/").await;
                waiting.push(stream);
            }
            drop(holder);
            for mut stream in waiting {
                assert_eq!(read_answer(&mut stream).await.unwrap(), "HTTP/1.1 200 OK");
            }
            assert_eq!(server.handled(), 6);
        })
        .await;
        let text = String::from_utf8(lines.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches("connection cap reached").count(), 1, "{text}");
        assert!(text.contains("component=\"test\""), "{text}");
        assert!(text.contains("max_connections=1"), "{text}");
    }

    /// A writer into a shared buffer, for capturing log lines.
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn graceful_drain_finishes_the_request_in_flight() {
        bounded(async {
            let mut server = TestServer::start(LIMITS).await;
            let mut busy = TcpStream::connect(server.addr).await.unwrap();
            send_get(&mut busy, "/slow").await;
            server.entered.recv().await.unwrap();
            let mut idle = TcpStream::connect(server.addr).await.unwrap();
            send_get(&mut idle, "/").await;
            read_answer(&mut idle).await.unwrap();

            server.shut_down();
            // The idle connection closes at once, and the listener with it.
            assert!(closed_within(&mut idle, Duration::from_secs(5)).await);
            assert!(TcpStream::connect(server.addr).await.is_err());
            // The request in flight is still answered, then its connection closes.
            server.shared.release.notify_one();
            assert_eq!(read_answer(&mut busy).await.unwrap(), "HTTP/1.1 200 OK");
            assert!(closed_within(&mut busy, Duration::from_secs(5)).await);
            (&mut server.task).await.unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn a_connection_accepted_just_before_the_stop_gets_its_first_request_answered() {
        bounded(async {
            let mut server = TestServer::start(LIMITS).await;
            let mut early = TcpStream::connect(server.addr).await.unwrap();
            // Once this one is answered, the accept loop has taken `early` (queued before it).
            let mut served = TcpStream::connect(server.addr).await.unwrap();
            send_get(&mut served, "/").await;
            read_answer(&mut served).await.unwrap();

            server.shut_down();
            assert!(closed_within(&mut served, Duration::from_secs(5)).await);
            // The request of `early` was on its way when the stop came: it is answered.
            send_get(&mut early, "/").await;
            assert_eq!(read_answer(&mut early).await.unwrap(), "HTTP/1.1 200 OK");
            assert!(closed_within(&mut early, Duration::from_secs(5)).await);
            (&mut server.task).await.unwrap();
            assert_eq!(server.handled(), 2);
        })
        .await;
    }

    #[tokio::test]
    async fn a_connection_that_sends_nothing_does_not_hold_the_stop_up() {
        bounded(async {
            let mut server = TestServer::start(LIMITS).await;
            let mut silent = TcpStream::connect(server.addr).await.unwrap();
            let mut served = TcpStream::connect(server.addr).await.unwrap();
            send_get(&mut served, "/").await;
            read_answer(&mut served).await.unwrap();
            let stopping = Instant::now();
            server.shut_down();
            assert!(closed_within(&mut silent, FIRST_REQUEST_GRACE * 3).await);
            (&mut server.task).await.unwrap();
            let took = stopping.elapsed();
            assert!(
                took >= FIRST_REQUEST_GRACE - Duration::from_millis(50),
                "{took:?}"
            );
        })
        .await;
    }

    #[tokio::test]
    async fn the_drain_deadline_drops_a_request_that_runs_on() {
        bounded(async {
            let deadline = Duration::from_millis(200);
            let mut server = TestServer::start(HttpLimits {
                drain_deadline: deadline,
                ..LIMITS
            })
            .await;
            let mut stuck = TcpStream::connect(server.addr).await.unwrap();
            send_get(&mut stuck, "/slow").await;
            server.entered.recv().await.unwrap();
            let started = Instant::now();
            server.shut_down();
            (&mut server.task).await.unwrap();
            assert!(started.elapsed() >= deadline);
            assert!(started.elapsed() < deadline + Duration::from_secs(2));
            // Dropped without an answer.
            assert!(read_answer(&mut stuck).await.is_err());
        })
        .await;
    }

    #[tokio::test]
    async fn a_slow_head_and_an_idle_keep_alive_are_cut_by_the_header_timeout() {
        bounded(async {
            let header_read_timeout = Duration::from_millis(300);
            let server = TestServer::start(HttpLimits {
                header_read_timeout,
                ..LIMITS
            })
            .await;
            let started = Instant::now();
            let mut slow = TcpStream::connect(server.addr).await.unwrap();
            slow.write_all(b"GET / HTTP/1.1\r\nHost: te").await.unwrap();
            assert!(closed_within(&mut slow, Duration::from_secs(5)).await);
            assert!(started.elapsed() >= header_read_timeout);

            let mut idle = TcpStream::connect(server.addr).await.unwrap();
            send_get(&mut idle, "/").await;
            read_answer(&mut idle).await.unwrap();
            let answered = Instant::now();
            assert!(closed_within(&mut idle, Duration::from_secs(5)).await);
            assert!(answered.elapsed() >= header_read_timeout);
            assert_eq!(server.handled(), 1);
        })
        .await;
    }

    #[tokio::test]
    async fn a_head_over_the_limit_is_refused_with_431() {
        bounded(async {
            let server = TestServer::start(HttpLimits {
                max_head_bytes: 16 * 1024,
                ..LIMITS
            })
            .await;
            let mut stream = TcpStream::connect(server.addr).await.unwrap();
            let head = format!(
                "GET / HTTP/1.1\r\nHost: test\r\nX-Big: {}\r\n\r\n",
                "a".repeat(16 * 1024)
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer).await;
            let answer = String::from_utf8_lossy(&answer);
            assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
            assert_eq!(server.handled(), 0);
        })
        .await;
    }

    #[test]
    fn error_chains_name_every_source() {
        let inner = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(error_chain(&Wrapped(inner)), "connecting: refused");
    }

    /// An error with a source.
    #[derive(Debug)]
    struct Wrapped(io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("connecting")
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
}

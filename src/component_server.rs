//! Placeholder component servers, standing in for the real `ps`, `is` and `svg` until they exist.
//!
//! The supervisor runs each default component as this binary in a hidden mode,
//! `imageserving component <name>`, which calls [`run`]. The placeholder gives the supervision
//! tree real processes with real ports and a real dependency (the Platform Server needs the Image
//! Server and the SVG server), and says plainly that it serves no images:
//!
//! - `GET /healthz` answers `200 ok <name> pid <pid>`; for `ps` only while `is` and `svg` accept
//!   connections, `503` naming the unreachable one otherwise.
//! - Anything else answers `501 Not Implemented`.
//!
//! Configuration comes from the environment the supervisor sets:
//!
//! | variable | meaning |
//! |---|---|
//! | `IMAGESERVING_LISTEN` | `host:port` to listen on (required) |
//! | `IMAGESERVING_IS_ADDR` | `host:port` of the Image Server (required for `ps`) |
//! | `IMAGESERVING_SVG_ADDR` | `host:port` of the SVG server (required for `ps`) |
//!
//! `ps` first waits up to [`DEPENDENCY_WAIT`] for its back ends to accept a TCP connection and
//! exits 1 if they do not, so that the supervisor sees a failed start rather than a front end
//! that cannot work. The HTTP side is a deliberately small HTTP/1.1 on raw TCP: one request per
//! connection (`Connection: close`), a request head of at most [`MAX_HEAD`] bytes read within
//! [`HEAD_DEADLINE`], at most [`MAX_CONNECTIONS`] connections at once. SIGTERM or SIGINT stops
//! the server and the process exits 0.

use std::fmt;
use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout, Instant};

/// The address to listen on, `host:port`.
pub const ENV_LISTEN: &str = "IMAGESERVING_LISTEN";
/// The Image Server's address, `host:port`, for `ps`.
pub const ENV_IS_ADDR: &str = "IMAGESERVING_IS_ADDR";
/// The SVG server's address, `host:port`, for `ps`.
pub const ENV_SVG_ADDR: &str = "IMAGESERVING_SVG_ADDR";

/// The only path with an answer other than 501.
pub const HEALTH_PATH: &str = "/healthz";
/// The largest request head accepted, in bytes; a longer one gets 431.
pub const MAX_HEAD: usize = 8 * 1024;
/// How long a client has to send its whole request head; a slower one gets 408.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(5);
/// How long `ps` waits at start for its back ends to accept connections.
pub const DEPENDENCY_WAIT: Duration = Duration::from_secs(5);
/// Connections served at once; further ones wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 256;

/// Pause between two connection attempts while waiting for a dependency.
const RETRY_INTERVAL: Duration = Duration::from_millis(100);
/// How long one health probe of a dependency may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long to keep reading (and discarding) after an error answer, so that unread request bytes
/// do not turn the close into a reset that would destroy the answer before the client reads it.
const LINGER: Duration = Duration::from_secs(1);

/// Another component this one needs, e.g. `is` for `ps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// Its component name, used in messages.
    pub name: String,
    /// Where it listens, `host:port`.
    pub addr: String,
}

/// What one placeholder component runs with, read from the environment by [`Settings::from_env`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The component name, e.g. `ps`.
    pub name: String,
    /// Where to listen, `host:port`.
    pub listen: String,
    /// Components that must accept connections before this one starts, and while it is healthy.
    pub dependencies: Vec<Dependency>,
}

impl Settings {
    /// Reads the settings of component `name` from the process environment.
    pub fn from_env(name: &str) -> Result<Self, ComponentError> {
        Self::from_lookup(name, |var| std::env::var(var).ok())
    }

    /// Reads the settings of component `name` through `lookup`, which maps a variable to its
    /// value; [`Settings::from_env`] passes the process environment, tests pass a table.
    pub fn from_lookup(
        name: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ComponentError> {
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ComponentError::BadName {
                name: name.to_owned(),
            });
        }
        let address = |var: &'static str| -> Result<String, ComponentError> {
            let value = lookup(var).ok_or(ComponentError::MissingVar {
                component: name.to_owned(),
                var,
            })?;
            validate_addr(var, &value)
        };
        let listen = address(ENV_LISTEN)?;
        let dependencies = if name == "ps" {
            vec![
                Dependency {
                    name: "is".into(),
                    addr: address(ENV_IS_ADDR)?,
                },
                Dependency {
                    name: "svg".into(),
                    addr: address(ENV_SVG_ADDR)?,
                },
            ]
        } else {
            Vec::new()
        };
        Ok(Settings {
            name: name.to_owned(),
            listen,
            dependencies,
        })
    }
}

/// Checks that `value` looks like `host:port` with a non-zero numeric port. The host is resolved
/// only when used, so a name such as `localhost` is accepted here.
fn validate_addr(var: &'static str, value: &str) -> Result<String, ComponentError> {
    let bad = |reason: &'static str| ComponentError::BadAddress {
        var,
        value: value.to_owned(),
        reason,
    };
    let value = value.trim();
    let (host, port) = value.rsplit_once(':').ok_or_else(|| bad("no `:port`"))?;
    if host.is_empty() || host == "[]" {
        return Err(bad("the host is empty"));
    }
    match port.parse::<u16>() {
        Ok(0) => Err(bad("port 0 is not a fixed port")),
        Ok(_) => Ok(value.to_owned()),
        Err(_) => Err(bad("the port is not a number from 1 to 65535")),
    }
}

/// Why a placeholder component could not start or run. Each message says what was being done.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    /// The component name cannot be used.
    #[error("invalid component name {name:?}: it must be non-empty, without spaces")]
    BadName {
        /// The name as given.
        name: String,
    },
    /// A required variable is not set.
    #[error("{component}: {var} is not set; the supervisor passes it as host:port")]
    MissingVar {
        /// The component being configured.
        component: String,
        /// The missing variable.
        var: &'static str,
    },
    /// A variable does not hold a usable address.
    #[error("{var}={value:?} is not a host:port address: {reason}")]
    BadAddress {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Dependencies did not accept a connection in time.
    #[error(
        "{component} cannot start: {} after waiting {}",
        DisplayList(unreachable),
        humantime::format_duration(*waited)
    )]
    Unreachable {
        /// The component that needs them.
        component: String,
        /// How long it waited.
        waited: Duration,
        /// Each dependency still unreachable, with its last error.
        unreachable: Vec<Unreachable>,
    },
    /// The listening socket could not be opened.
    #[error("{component}: cannot listen on {addr}: {source}")]
    Bind {
        /// The component.
        component: String,
        /// The address from `IMAGESERVING_LISTEN`.
        addr: String,
        /// The OS error, e.g. address in use.
        source: io::Error,
    },
    /// The SIGTERM/SIGINT handlers could not be installed.
    #[error("installing the SIGTERM and SIGINT handlers: {0}")]
    Signals(#[source] io::Error),
}

/// A dependency that did not answer, and how it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable {
    /// The dependency.
    pub dependency: Dependency,
    /// The last connection error, in words.
    pub error: String,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is unreachable at {} ({})",
            self.dependency.name, self.dependency.addr, self.error
        )
    }
}

/// Joins a list with `; ` for a one-line message.
struct DisplayList<'a, T>(&'a [T]);

impl<T: fmt::Display> fmt::Display for DisplayList<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{item}")?;
        }
        Ok(())
    }
}

/// Runs placeholder component `name` configured from the environment, until SIGTERM or SIGINT.
///
/// Prints `<name>: listening on <addr>` on standard error once it accepts connections and
/// `<name>: stopping` when a signal arrives, then returns `Ok`. A start failure (configuration,
/// unreachable dependency, bind) is printed on standard error as `<name>: <error>` and returned.
pub async fn run(name: &str) -> anyhow::Result<()> {
    let result = async {
        let settings = Settings::from_env(name)?;
        let shutdown = shutdown_signal()?;
        run_with(&settings, DEPENDENCY_WAIT, shutdown).await
    }
    .await;
    if let Err(err) = &result {
        // The supervisor keeps this process's standard error in the component's log: say there
        // why it stopped, whatever the caller does with the error.
        eprintln!("{name}: {err}");
    }
    Ok(result?)
}

/// Waits for the dependencies, binds, and serves until `shutdown` completes; the body of [`run`]
/// with the environment and the signals passed in.
pub async fn run_with(
    settings: &Settings,
    dependency_wait: Duration,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ComponentError> {
    let name = &settings.name;
    let mut shutdown = std::pin::pin!(shutdown);
    tokio::select! {
        ready = wait_for_dependencies(name, &settings.dependencies, dependency_wait) => ready?,
        () = &mut shutdown => {
            eprintln!("{name}: stopping");
            return Ok(());
        }
    }
    let listener = TcpListener::bind(&settings.listen)
        .await
        .map_err(|source| ComponentError::Bind {
            component: name.clone(),
            addr: settings.listen.clone(),
            source,
        })?;
    let shown = listener
        .local_addr()
        .map_or_else(|_| settings.listen.clone(), |addr| addr.to_string());
    eprintln!("{name}: listening on {shown}");
    serve(name, &settings.dependencies, listener, shutdown).await;
    eprintln!("{name}: stopping");
    Ok(())
}

/// Completes on the first SIGTERM or SIGINT. The handlers are installed before this returns, so
/// a signal arriving while dependencies are awaited is not lost (nor fatal).
pub fn shutdown_signal() -> Result<impl Future<Output = ()>, ComponentError> {
    let mut term = signal(SignalKind::terminate()).map_err(ComponentError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ComponentError::Signals)?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Waits until every dependency accepts a TCP connection, retrying until `within` has passed.
/// The error lists every dependency still unreachable at the deadline, with its last error.
pub async fn wait_for_dependencies(
    component: &str,
    dependencies: &[Dependency],
    within: Duration,
) -> Result<(), ComponentError> {
    let deadline = Instant::now() + within;
    let mut pending: Vec<Unreachable> = dependencies
        .iter()
        .map(|dependency| Unreachable {
            dependency: dependency.clone(),
            error: "not tried".into(),
        })
        .collect();
    loop {
        let mut still = Vec::new();
        for mut waiting in pending {
            let remaining = deadline.saturating_duration_since(Instant::now());
            // Each attempt gets at least a moment, so that a zero wait still tries once.
            let attempt = remaining.max(RETRY_INTERVAL);
            if let Err(error) = probe(&waiting.dependency.addr, attempt).await {
                waiting.error = error;
                still.push(waiting);
            }
        }
        if still.is_empty() {
            return Ok(());
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(ComponentError::Unreachable {
                component: component.to_owned(),
                waited: within,
                unreachable: still,
            });
        }
        sleep(RETRY_INTERVAL.min(remaining)).await;
        pending = still;
    }
}

/// Tries one TCP connection to `addr` within `limit`, closing it at once.
async fn probe(addr: &str, limit: Duration) -> Result<(), String> {
    match timeout(limit, TcpStream::connect(addr)).await {
        Ok(Ok(_stream)) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(limit)
        )),
    }
}

/// Serves HTTP on `listener` until `shutdown` completes, then drops the connections in flight.
pub async fn serve(
    name: &str,
    dependencies: &[Dependency],
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut connections = JoinSet::new();
    loop {
        // At the connection limit, stop accepting until one finishes.
        let full = connections.len() >= MAX_CONNECTIONS;
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept(), if !full => match accepted {
                Ok((stream, peer)) => {
                    let name = name.to_owned();
                    let dependencies = dependencies.to_vec();
                    connections.spawn(async move {
                        if let Err(err) = handle(stream, &name, &dependencies).await {
                            tracing::debug!(component = %name, %peer, error = %err, "connection failed");
                        }
                    });
                }
                Err(err) => {
                    // Out of file descriptors, or a connection aborted before accept: transient.
                    // Pause so that a persistent failure does not spin.
                    tracing::warn!(component = %name, error = %err, "accept failed");
                    sleep(RETRY_INTERVAL).await;
                }
            },
        }
    }
}

/// The outcome of reading a request head.
enum Head {
    /// The bytes up to and including the blank line.
    Complete(Vec<u8>),
    /// The client closed before sending anything: nobody to answer.
    Closed,
    /// The client closed in the middle of the head.
    Incomplete,
    /// More than [`MAX_HEAD`] bytes without the blank line.
    TooLarge,
}

/// Reads until the blank line that ends a request head, never holding more than `limit` bytes.
async fn read_head(stream: &mut TcpStream, limit: usize) -> io::Result<Head> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let room = (limit - head.len()).min(chunk.len());
        if room == 0 {
            return Ok(Head::TooLarge);
        }
        let n = stream.read(&mut chunk[..room]).await?;
        if n == 0 {
            return Ok(if head.is_empty() {
                Head::Closed
            } else {
                Head::Incomplete
            });
        }
        // The terminator may straddle two reads: search from a little before the new bytes.
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_head_end(&head[from..]) {
            head.truncate(from + end);
            return Ok(Head::Complete(head));
        }
    }
}

/// The length of the head including its terminating blank line, accepting bare `\n` line ends
/// as RFC 9112 allows.
fn find_head_end(bytes: &[u8]) -> Option<usize> {
    (0..bytes.len()).find_map(|i| {
        let rest = &bytes[i..];
        if rest.starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if rest.starts_with(b"\n\n") {
            Some(i + 2)
        } else if rest.starts_with(b"\n\r\n") {
            Some(i + 3)
        } else {
            None
        }
    })
}

/// An HTTP answer: status line, plain-text body.
struct Reply {
    status: u16,
    reason: &'static str,
    body: String,
}

impl Reply {
    fn new(status: u16, reason: &'static str, body: impl Into<String>) -> Self {
        Reply {
            status,
            reason,
            body: body.into(),
        }
    }

    fn to_bytes(&self, with_body: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n\r\n",
            self.status,
            self.reason,
            self.body.len()
        )
        .into_bytes();
        if with_body {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

/// Serves one connection: one request, one answer, close.
async fn handle(mut stream: TcpStream, name: &str, dependencies: &[Dependency]) -> io::Result<()> {
    let head = match timeout(HEAD_DEADLINE, read_head(&mut stream, MAX_HEAD)).await {
        Ok(head) => head?,
        Err(_) => {
            let reply = Reply::new(
                408,
                "Request Timeout",
                "request head not received in time\n",
            );
            return answer_and_linger(stream, &reply).await;
        }
    };
    let head = match head {
        Head::Complete(head) => head,
        Head::Closed => return Ok(()),
        Head::Incomplete => {
            let reply = Reply::new(400, "Bad Request", "incomplete request head\n");
            return answer_and_linger(stream, &reply).await;
        }
        Head::TooLarge => {
            let reply = Reply::new(
                431,
                "Request Header Fields Too Large",
                format!("request head exceeds {MAX_HEAD} bytes\n"),
            );
            return answer_and_linger(stream, &reply).await;
        }
    };
    let Some((method, path)) = parse_request_line(&head) else {
        let reply = Reply::new(400, "Bad Request", "malformed request line\n");
        return answer_and_linger(stream, &reply).await;
    };
    let reply = if (method == "GET" || method == "HEAD") && path == HEALTH_PATH {
        health(name, dependencies).await
    } else {
        Reply::new(
            501,
            "Not Implemented",
            format!("imageserving {name}: this placeholder component serves no images yet\n"),
        )
    };
    stream.write_all(&reply.to_bytes(method != "HEAD")).await?;
    stream.shutdown().await
}

/// Writes an error answer, then reads and discards what the client is still sending for a
/// moment before closing (see [`LINGER`]).
async fn answer_and_linger(mut stream: TcpStream, reply: &Reply) -> io::Result<()> {
    stream.write_all(&reply.to_bytes(true)).await?;
    stream.shutdown().await?;
    let mut sink = [0u8; 4096];
    let mut drained = 0usize;
    let _ = timeout(LINGER, async {
        while drained < 64 * 1024 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
    Ok(())
}

/// Splits `METHOD SP target SP HTTP/1.x` into the method and the path without its query.
fn parse_request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line_end = head.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&head[..line_end]).ok()?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || method.is_empty() || !version.starts_with("HTTP/1.") {
        return None;
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    Some((method, path))
}

/// The `/healthz` answer: 200, or 503 naming each dependency that refuses connections now.
async fn health(name: &str, dependencies: &[Dependency]) -> Reply {
    let pid = std::process::id();
    let mut unreachable = Vec::new();
    for dependency in dependencies {
        if let Err(error) = probe(&dependency.addr, PROBE_TIMEOUT).await {
            unreachable.push(Unreachable {
                dependency: dependency.clone(),
                error,
            });
        }
    }
    if unreachable.is_empty() {
        Reply::new(200, "OK", format!("ok {name} pid {pid}\n"))
    } else {
        Reply::new(
            503,
            "Service Unavailable",
            format!(
                "unhealthy {name} pid {pid}: {}\n",
                DisplayList(&unreachable)
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    /// Every test step is bounded by this.
    const STEP: Duration = Duration::from_secs(10);

    /// A server on an ephemeral port, stopped when dropped.
    struct TestServer {
        addr: String,
        stop: Option<oneshot::Sender<()>>,
        task: Option<JoinHandle<()>>,
    }

    impl TestServer {
        async fn start(name: &str, dependencies: Vec<Dependency>) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let (stop, stopped) = oneshot::channel::<()>();
            let name = name.to_owned();
            let task = tokio::spawn(async move {
                serve(&name, &dependencies, listener, async {
                    let _ = stopped.await;
                })
                .await;
            });
            TestServer {
                addr,
                stop: Some(stop),
                task: Some(task),
            }
        }

        async fn stop(mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            if let Some(task) = self.task.take() {
                timeout(STEP, task).await.unwrap().unwrap();
            }
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            if let Some(task) = &self.task {
                task.abort();
            }
        }
    }

    /// Sends `request` and returns everything the server answers before closing.
    async fn exchange(addr: &str, request: &[u8]) -> io::Result<String> {
        timeout(STEP, async {
            let mut stream = TcpStream::connect(addr).await?;
            // The server may answer and close before reading all of an oversized request.
            let _ = stream.write_all(request).await;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await?;
            Ok(String::from_utf8_lossy(&answer).into_owned())
        })
        .await
        .expect("the server must answer within the step deadline")
    }

    /// An address where nothing listens: a port that was just released.
    async fn dead_addr() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().to_string()
    }

    #[tokio::test]
    async fn healthz_answers_ok_with_name_and_pid() {
        let server = TestServer::start("is", vec![]).await;
        let answer = exchange(
            &server.addr,
            b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
        )
        .await
        .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains("\r\nConnection: close\r\n"), "{answer}");
        assert!(answer.contains("\r\nContent-Type: text/plain"), "{answer}");
        let pid = std::process::id();
        assert!(
            answer.ends_with(&format!("\r\n\r\nok is pid {pid}\n")),
            "{answer}"
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn other_requests_get_501_saying_no_images_are_served() {
        let server = TestServer::start("ps", vec![]).await;
        for request in [
            &b"GET /is/image/sample?wid=100 HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"POST /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            b"GET / HTTP/1.0\n\n",
        ] {
            let answer = exchange(&server.addr, request).await.unwrap();
            assert!(
                answer.starts_with("HTTP/1.1 501 Not Implemented\r\n"),
                "{answer}"
            );
            assert!(
                answer.ends_with(
                    "imageserving ps: this placeholder component serves no images yet\n"
                ),
                "{answer}"
            );
        }
        server.stop().await;
    }

    #[tokio::test]
    async fn healthz_ignores_the_query_and_head_has_no_body() {
        let server = TestServer::start("svg", vec![]).await;
        let answer = exchange(&server.addr, b"GET /healthz?probe=1 HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        let answer = exchange(&server.addr, b"HEAD /healthz HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\n"), "{answer}");
        server.stop().await;
    }

    #[tokio::test]
    async fn oversized_head_is_refused() {
        let server = TestServer::start("is", vec![]).await;
        let mut request = b"GET /healthz HTTP/1.1\r\n".to_vec();
        while request.len() <= 2 * MAX_HEAD {
            request.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        match exchange(&server.addr, &request).await {
            Ok(answer) => assert!(
                answer.is_empty() || answer.starts_with("HTTP/1.1 431 "),
                "{answer}"
            ),
            // A reset is an acceptable way to refuse, too.
            Err(err) => assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}"),
        }
        server.stop().await;
    }

    #[tokio::test]
    async fn malformed_and_truncated_requests_get_400() {
        let server = TestServer::start("is", vec![]).await;
        let answer = exchange(&server.addr, b"NONSENSE\r\n\r\n").await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");

        let answer = timeout(STEP, async {
            let mut stream = TcpStream::connect(&server.addr).await.unwrap();
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\n")
                .await
                .unwrap();
            stream.shutdown().await.unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.unwrap();
            answer
        })
        .await
        .unwrap();
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
        server.stop().await;
    }

    #[tokio::test]
    async fn ps_health_names_the_unreachable_dependency() {
        let is = TestServer::start("is", vec![]).await;
        let svg_addr = dead_addr().await;
        let dependencies = vec![
            Dependency {
                name: "is".into(),
                addr: is.addr.clone(),
            },
            Dependency {
                name: "svg".into(),
                addr: svg_addr.clone(),
            },
        ];
        let ps = TestServer::start("ps", dependencies).await;
        let answer = exchange(&ps.addr, b"GET /healthz HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{answer}"
        );
        assert!(
            answer.contains(&format!("svg is unreachable at {svg_addr}")),
            "{answer}"
        );
        assert!(!answer.contains("is is unreachable"), "{answer}");
        ps.stop().await;
        is.stop().await;
    }

    #[tokio::test]
    async fn ps_with_unreachable_dependencies_fails_within_the_wait() {
        let dependencies = vec![
            Dependency {
                name: "is".into(),
                addr: dead_addr().await,
            },
            Dependency {
                name: "svg".into(),
                addr: dead_addr().await,
            },
        ];
        let wait = Duration::from_millis(300);
        let started = Instant::now();
        let err = timeout(STEP, wait_for_dependencies("ps", &dependencies, wait))
            .await
            .unwrap()
            .unwrap_err();
        let elapsed = started.elapsed();
        assert!(elapsed >= wait, "gave up after {elapsed:?}");
        assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
        let message = err.to_string();
        assert!(
            message.starts_with("ps cannot start: is is unreachable at "),
            "{message}"
        );
        assert!(message.contains("; svg is unreachable at "), "{message}");
        assert!(message.ends_with("after waiting 300ms"), "{message}");
    }

    #[tokio::test]
    async fn run_with_reports_unreachable_dependencies_before_binding() {
        let listen = dead_addr().await;
        let settings = Settings {
            name: "ps".into(),
            listen: listen.clone(),
            dependencies: vec![Dependency {
                name: "is".into(),
                addr: dead_addr().await,
            }],
        };
        let result = timeout(
            STEP,
            run_with(
                &settings,
                Duration::from_millis(200),
                std::future::pending(),
            ),
        )
        .await
        .unwrap();
        assert!(matches!(result, Err(ComponentError::Unreachable { .. })));
        // It never bound its own port.
        assert!(TcpStream::connect(&listen).await.is_err());
    }

    #[tokio::test]
    async fn dependencies_that_come_up_late_are_awaited() {
        let addr = dead_addr().await;
        let late = addr.clone();
        let opener = tokio::spawn(async move {
            sleep(Duration::from_millis(200)).await;
            let listener = TcpListener::bind(&late).await.unwrap();
            // Keep it open while the waiter connects.
            sleep(STEP).await;
            drop(listener);
        });
        let dependencies = vec![Dependency {
            name: "is".into(),
            addr,
        }];
        timeout(STEP, wait_for_dependencies("ps", &dependencies, STEP))
            .await
            .unwrap()
            .unwrap();
        opener.abort();
    }

    #[tokio::test]
    async fn run_with_serves_until_shutdown() {
        let listen = dead_addr().await;
        let settings = Settings {
            name: "svg".into(),
            listen: listen.clone(),
            dependencies: vec![],
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            run_with(&settings, DEPENDENCY_WAIT, async {
                let _ = stopped.await;
            })
            .await
        });
        // Wait for the listener with a deadline rather than a fixed sleep.
        let deadline = Instant::now() + STEP;
        let answer = loop {
            match TcpStream::connect(&listen).await {
                Ok(_) => break exchange(&listen, b"GET /healthz HTTP/1.1\r\n\r\n").await,
                Err(_) if Instant::now() < deadline => sleep(Duration::from_millis(20)).await,
                Err(err) => panic!("the server never listened: {err}"),
            }
        };
        assert!(answer.unwrap().starts_with("HTTP/1.1 200 OK"));
        stop.send(()).unwrap();
        timeout(STEP, server).await.unwrap().unwrap().unwrap();
        assert!(TcpStream::connect(&listen).await.is_err());
    }

    #[tokio::test]
    async fn bind_failure_names_the_address() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let settings = Settings {
            name: "is".into(),
            listen: addr.clone(),
            dependencies: vec![],
        };
        let err = timeout(
            STEP,
            run_with(&settings, DEPENDENCY_WAIT, std::future::pending()),
        )
        .await
        .unwrap()
        .unwrap_err();
        assert!(matches!(err, ComponentError::Bind { .. }));
        assert!(
            err.to_string()
                .starts_with(&format!("is: cannot listen on {addr}: ")),
            "{err}"
        );
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let table: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |var| table.get(var).cloned()
    }

    #[test]
    fn settings_come_from_the_environment() {
        let settings =
            Settings::from_lookup("is", env(&[(ENV_LISTEN, "127.0.0.1:27345")])).unwrap();
        assert_eq!(settings.listen, "127.0.0.1:27345");
        assert!(settings.dependencies.is_empty());

        let settings = Settings::from_lookup(
            "ps",
            env(&[
                (ENV_LISTEN, "0.0.0.0:8080"),
                (ENV_IS_ADDR, "localhost:27345"),
                (ENV_SVG_ADDR, "[::1]:27346"),
            ]),
        )
        .unwrap();
        assert_eq!(
            settings.dependencies,
            vec![
                Dependency {
                    name: "is".into(),
                    addr: "localhost:27345".into()
                },
                Dependency {
                    name: "svg".into(),
                    addr: "[::1]:27346".into()
                },
            ]
        );
    }

    #[test]
    fn missing_or_invalid_addresses_are_clear_errors() {
        let err = Settings::from_lookup("is", env(&[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "is: IMAGESERVING_LISTEN is not set; the supervisor passes it as host:port"
        );

        let err = Settings::from_lookup("ps", env(&[(ENV_LISTEN, "127.0.0.1:8080")])).unwrap_err();
        assert!(err.to_string().contains("IMAGESERVING_IS_ADDR"), "{err}");

        for bad in [
            "8080",
            ":8080",
            "localhost:",
            "localhost:http",
            "localhost:0",
            "h:70000",
        ] {
            let err = Settings::from_lookup("is", env(&[(ENV_LISTEN, bad)])).unwrap_err();
            assert!(
                matches!(err, ComponentError::BadAddress { .. }),
                "{bad}: {err}"
            );
            assert!(err.to_string().starts_with("IMAGESERVING_LISTEN="), "{err}");
        }

        assert!(Settings::from_lookup("", env(&[(ENV_LISTEN, "h:1")])).is_err());
    }

    #[test]
    fn request_lines_are_parsed_strictly() {
        assert_eq!(
            parse_request_line(b"GET /healthz?x=1 HTTP/1.1\r\n\r\n"),
            Some(("GET", "/healthz"))
        );
        assert_eq!(parse_request_line(b"GET /healthz\r\n\r\n"), None);
        assert_eq!(parse_request_line(b"GET  /healthz HTTP/1.1\r\n\r\n"), None);
        assert_eq!(parse_request_line(b"GET /healthz HTTP/2\r\n\r\n"), None);
        assert_eq!(
            find_head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"),
            Some(24)
        );
        assert_eq!(find_head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n"), None);
    }
}

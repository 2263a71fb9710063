//! The tests of `ps`, each against a real `ps` on an ephemeral port and a fake `is` (or the
//! real one), bounded in time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use http_body_util::BodyExt as _;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;

use super::*;
use crate::imaging::request::{OutputFormat, Req, TextFormat};

/// Every test is bounded by this.
const TEST_DEADLINE: Duration = Duration::from_secs(20);
/// The fake image the fake `is` renders.
const FAKE_IMAGE: &[u8] = b"\x89PNG\r\n\x1a\nfake image bytes";

/// What the fake `is` shares with the test.
#[derive(Default)]
struct FakeShared {
    /// The JSON bodies `/render` received.
    seen: Mutex<Vec<ImageRequest>>,
    /// How many `/render` requests still get their connection dropped without an answer.
    drops: AtomicUsize,
    /// When set, objects that are files below this directory are answered with the file's
    /// bytes and the `x-source-*` headers, like the real `is`.
    images: Mutex<Option<PathBuf>>,
    /// What `/healthz` says of how the previous process ended (none: nothing, which counts as
    /// a crash).
    previous_exit: Mutex<Option<&'static str>>,
    /// Notified by a request for the object `crasher`: every connection in flight is dropped,
    /// as when a request crashes `is`.
    crash: tokio::sync::Notify,
}

/// A fake `is` on a real port: `/render` answers [`FAKE_IMAGE`] (or 404 for the object
/// `missing`, a text answer for `req=props`, a slow answer for `slow`), `/healthz` 200,
/// `/info` two lines. Dropping it (or [`FakeIs::stop`]) closes the listener and every
/// connection, like an `is` that exits.
struct FakeIs {
    addr: SocketAddr,
    shared: Arc<FakeShared>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl FakeIs {
    async fn start() -> FakeIs {
        Self::start_on("127.0.0.1:0".parse().unwrap(), Arc::default()).await
    }

    async fn start_on(addr: SocketAddr, shared: Arc<FakeShared>) -> FakeIs {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, mut stopped) = oneshot::channel::<()>();
        let serving = shared.clone();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    () = serving.crash.notified() => connections.abort_all(),
                    Ok((stream, _)) = listener.accept() => {
                        let shared = serving.clone();
                        connections.spawn(async move {
                            let service = service_fn(move |request| fake_is(shared.clone(), request));
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                }
            }
            // Dropping the set aborts every connection: the sockets close at once.
            connections.shutdown().await;
        });
        FakeIs {
            addr,
            shared,
            stop: Some(stop),
            task,
        }
    }

    /// Stops it and waits until its port and connections are closed.
    async fn stop(mut self) -> (SocketAddr, Arc<FakeShared>) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
        (self.addr, self.shared.clone())
    }

    fn seen(&self) -> Vec<ImageRequest> {
        self.shared.seen.lock().unwrap().clone()
    }
}

impl Drop for FakeIs {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn fake_is(
    shared: Arc<FakeShared>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let answer = |status: u16, content_type: &str, body: Bytes| {
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, content_type.parse().unwrap());
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=36000"),
        );
        Ok(response)
    };
    match (method, path.as_str()) {
        (Method::GET, "/healthz") => {
            let mut response = answer(200, "text/plain", Bytes::from("ok\n"))?;
            if let Some(class) = *shared.previous_exit.lock().unwrap() {
                response.headers_mut().insert(
                    crate::servers::hold::PREVIOUS_EXIT_HEADER,
                    HeaderValue::from_static(class),
                );
            }
            Ok(response)
        }
        (Method::GET, "/info") => answer(
            200,
            "text/plain",
            Bytes::from("imageServer.version=0.1.0\nimageServer.svgServer=ok\n"),
        ),
        (Method::POST, "/render") => {
            if shared
                .drops
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                // An error from the service makes hyper close the connection unanswered.
                return Err(std::io::Error::other("dropped on purpose"));
            }
            let request: ImageRequest = serde_json::from_slice(&body).unwrap();
            shared.seen.lock().unwrap().push(request.clone());
            let images = shared.images.lock().unwrap().clone();
            if let Some(images) = images {
                let file = images.join(&request.object);
                if let Ok(metadata) = std::fs::metadata(&file) {
                    let bytes = std::fs::read(&file).unwrap();
                    let (content_type, body) = match request.req {
                        Req::Img => ("image/png", Bytes::from(bytes)),
                        _ => (
                            "text/plain; charset=utf-8",
                            Bytes::from(format!("#S7Z OK\nimage.bytes={}\n", bytes.len())),
                        ),
                    };
                    let mut response = answer(200, content_type, body)?;
                    let stamp = SourceStamp::of(&file, &images, &metadata).unwrap();
                    stamp.to_headers(response.headers_mut());
                    return Ok(response);
                }
            }
            match (request.object.as_str(), request.req) {
                ("crasher", _) => {
                    shared.crash.notify_one();
                    std::future::pending().await
                }
                ("slowish", _) => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    answer(200, "image/png", Bytes::from_static(FAKE_IMAGE))
                }
                ("missing", _) => answer(
                    404,
                    "text/plain; charset=utf-8",
                    Bytes::from("object `missing` not found"),
                ),
                ("slow", _) => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    answer(200, "image/png", Bytes::from_static(FAKE_IMAGE))
                }
                (_, Req::Props(_)) => answer(
                    200,
                    "text/plain; charset=utf-8",
                    Bytes::from("#S7Z OK\nimage.width=2\n"),
                ),
                _ => answer(200, "image/png", Bytes::from_static(FAKE_IMAGE)),
            }
        }
        _ => answer(404, "text/plain", Bytes::from("no")),
    }
}

/// A `ps` serving on an ephemeral port; dropping it shuts it down.
struct Ps {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Ps {
    async fn start(is_addr: SocketAddr) -> Ps {
        Self::start_with(PlatformConfig::new(is_addr.to_string())).await
    }

    async fn start_with(config: PlatformConfig) -> Ps {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, config, async move {
            let _ = stopped.await;
        }));
        Ps {
            addr,
            shutdown: Some(shutdown),
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Ps {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An address where nothing listens (its port may be taken by another test meanwhile: see
/// [`refusing_addr`] for one that stays refused).
async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// An address that refuses connections for as long as the socket returned with it lives: bound,
/// never listening, so no other test's server can take its port meanwhile.
fn refusing_addr() -> (SocketAddr, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    (socket.local_addr().unwrap(), socket)
}

type TestClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// Sends a request and reads the whole answer.
async fn send(client: &TestClient, method: Method, url: &str) -> (StatusCode, HeaderMap, Bytes) {
    let request = Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

async fn get(client: &TestClient, url: &str) -> (StatusCode, HeaderMap, Bytes) {
    send(client, Method::GET, url).await
}

/// A GET with `If-None-Match: tag`.
async fn get_if_none_match(
    client: &TestClient,
    url: &str,
    tag: &str,
) -> (StatusCode, HeaderMap, Bytes) {
    let request = Request::builder()
        .uri(url)
        .header(header::IF_NONE_MATCH, tag)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

/// A fake `is` serving the files of a temporary home, and a `ps` with that home: cache and
/// access log on.
struct Cached {
    home: tempfile::TempDir,
    is: FakeIs,
    ps: Ps,
    client: TestClient,
}

impl Cached {
    async fn start(check: Duration, cache_bytes: u64) -> Cached {
        let home = tempfile::tempdir().unwrap();
        let images = home.path().join("images");
        std::fs::create_dir_all(&images).unwrap();
        let is = FakeIs::start().await;
        *is.shared.images.lock().unwrap() = Some(images);
        let ps = Ps::start_with(PlatformConfig {
            home: Some(home.path().to_path_buf()),
            cache_bytes,
            cache_check: check,
            ..PlatformConfig::new(is.addr.to_string())
        })
        .await;
        Cached {
            home,
            is,
            ps,
            client: client(),
        }
    }

    /// Writes the source `name` below `images/`.
    fn put(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.home.path().join("images").join(name), bytes).unwrap();
    }

    async fn get(&self, path: &str) -> (StatusCode, HeaderMap, Bytes) {
        get(&self.client, &self.ps.url(path)).await
    }

    /// How many `/render` requests `is` received.
    fn renders(&self) -> usize {
        self.is.seen().len()
    }

    /// The access log once it has at least `n` lines (bounded wait).
    async fn log(&self, n: usize) -> Vec<String> {
        let path = self.home.path().join(access_log::FILE);
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_owned).collect();
            if lines.len() >= n {
                return lines;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the access log has {} lines, not {n}: {text}",
                lines.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The cache field of each line of the access log, once it has `n` lines.
    async fn cache_uses(&self, n: usize) -> Vec<String> {
        self.log(n)
            .await
            .iter()
            .map(|line| line.rsplit(' ').next().unwrap().to_owned())
            .collect()
    }
}

const HOUR: Duration = Duration::from_secs(3600);

fn header_of(headers: &HeaderMap, name: header::HeaderName) -> &str {
    headers
        .get(&name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_default()
}

/// Writes raw bytes to `addr` and reads the answer until the server closes or 2 s pass.
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = timeout(Duration::from_secs(2), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

async fn bounded(test: impl Future<Output = ()>) {
    timeout(TEST_DEADLINE, test)
        .await
        .expect("the test took too long");
}

#[test]
fn byte_counts_take_binary_suffixes() {
    assert_eq!(parse_bytes("0"), Ok(0));
    assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
    assert_eq!(parse_bytes("256M"), Ok(256 << 20));
    assert_eq!(parse_bytes("512 KiB"), Ok(512 << 10));
    assert_eq!(parse_bytes("1g"), Ok(1 << 30));
    assert!(parse_bytes("").is_err());
    assert!(parse_bytes("12T").is_err());
    assert!(parse_bytes("-1").is_err());
    assert!(parse_bytes("99999999999999G").is_err());
}

#[test]
fn max_age_and_client_cache_control() {
    let mut headers = HeaderMap::new();
    assert_eq!(max_age_of(&headers), None);
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=360"),
    );
    assert_eq!(max_age_of(&headers), Some(360));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    assert_eq!(max_age_of(&headers), None);
    assert_eq!(client_cache_control(CacheMode::On, 5), "public, max-age=5");
    assert_eq!(
        client_cache_control(CacheMode::Update, 5),
        "public, max-age=5"
    );
    assert_eq!(client_cache_control(CacheMode::Validate, 5), "no-cache");
    assert_eq!(client_cache_control(CacheMode::Off, 5), "no-store");
}

#[tokio::test]
async fn equivalent_urls_share_one_entry_and_one_render() {
    bounded(async {
        let t = Cached::start(HOUR, cache::DEFAULT_CAPACITY).await;
        t.put("a.png", b"first version");
        let (status, headers, body) = t.get("/is/image/a.png?wid=300&hei=200").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.as_ref(), b"first version");
        let etag = header_of(&headers, header::ETAG).to_owned();
        assert_eq!(etag, cache::etag(b"first version"));
        assert_eq!(
            header_of(&headers, header::CACHE_CONTROL),
            "public, max-age=36000"
        );
        for path in [
            "/is/image/a.png?HEI=200&wid=300",
            "/is/image/a.png?hei=200&.comment=anything&wid=300&$var=1",
            "/is/image/a.png?wid=300&hei=200&cache=on",
        ] {
            let (status, headers, body) = t.get(path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(body.as_ref(), b"first version", "{path}");
            assert_eq!(header_of(&headers, header::ETAG), etag, "{path}");
            assert_eq!(header_of(&headers, header::CONTENT_TYPE), "image/png");
            let max_age: u64 = header_of(&headers, header::CACHE_CONTROL)
                .strip_prefix("public, max-age=")
                .unwrap()
                .parse()
                .unwrap();
            assert!((35_990..=36_000).contains(&max_age), "{max_age}");
        }
        // HEAD shares the entry.
        let (status, headers, body) = send(
            &t.client,
            Method::HEAD,
            &t.ps.url("/is/image/a.png?hei=200&wid=300"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.is_empty());
        assert_eq!(header_of(&headers, header::CONTENT_LENGTH), "13");
        assert_eq!(header_of(&headers, header::ETAG), etag);
        assert_eq!(t.renders(), 1, "one render for five spellings");
        // Another request is another entry.
        let (_, _, _) = t.get("/is/image/a.png?wid=301&hei=200").await;
        assert_eq!(t.renders(), 2);
        assert_eq!(
            t.cache_uses(6).await,
            ["miss", "hit", "hit", "hit", "hit", "miss"]
        );
    })
    .await;
}

#[tokio::test]
async fn etags_answer_if_none_match_with_304() {
    bounded(async {
        let t = Cached::start(HOUR, cache::DEFAULT_CAPACITY).await;
        t.put("a.png", b"image bytes");
        let url = t.ps.url("/is/image/a.png");
        let (_, headers, _) = t.get("/is/image/a.png").await;
        let etag = header_of(&headers, header::ETAG).to_owned();
        for tag in [etag.clone(), format!("\"nope\", W/{etag}"), "*".to_owned()] {
            let (status, headers, body) = get_if_none_match(&t.client, &url, &tag).await;
            assert_eq!(status, StatusCode::NOT_MODIFIED, "{tag}");
            assert!(body.is_empty());
            assert_eq!(header_of(&headers, header::ETAG), etag);
            assert!(header_of(&headers, header::CACHE_CONTROL).starts_with("public, max-age="));
        }
        // On the wire: no body, and no `Content-Length: 0` contradicting the image's length.
        let answer = raw(
            t.ps.addr,
            format!(
                "GET /is/image/a.png HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 304"), "{answer}");
        assert!(answer.ends_with("\r\n\r\n"), "{answer}");
        assert!(!answer.to_ascii_lowercase().contains("content-length: 0"), "{answer}");
        let (status, _, body) = get_if_none_match(&t.client, &url, "\"other\"").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.as_ref(), b"image bytes");
        // Uncached answers have the same tag and honour it too.
        let off = t.ps.url("/is/image/a.png?cache=off");
        let (status, headers, _) = get_if_none_match(&t.client, &off, &etag).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert_eq!(header_of(&headers, header::CACHE_CONTROL), "no-store");
        // Text answers carry one as well; errors do not.
        let (status, headers, _) = t.get("/is/image/a.png?req=props").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(header_of(&headers, header::ETAG).len(), 18);
        let (status, headers, _) = t.get("/is/image/missing").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(headers.get(header::ETAG).is_none());
        let lines = t.log(9).await;
        let fields: Vec<&str> = lines[1].split(' ').collect();
        assert_eq!(fields.len(), 8, "{}", lines[1]);
        assert_eq!(fields[1], "127.0.0.1");
        assert_eq!(&fields[2..6], ["GET", "/is/image/a.png", "304", "0"]);
        assert_eq!(fields[7], "hit");
        assert_eq!(lines[5].split(' ').nth(5), Some("11"), "{}", lines[5]);
    })
    .await;
}

#[tokio::test]
async fn update_renders_again_and_validate_checks_the_source_now() {
    bounded(async {
        // A long interval: only `update` and `validate` look again.
        let t = Cached::start(HOUR, cache::DEFAULT_CAPACITY).await;
        t.put("a.png", b"one");
        t.get("/is/image/a.png").await;
        t.put("a.png", b"two!");
        let (_, _, body) = t.get("/is/image/a.png").await;
        assert_eq!(body.as_ref(), b"one", "within the interval, unchecked");
        let (_, _, body) = t.get("/is/image/a.png?cache=update").await;
        assert_eq!(body.as_ref(), b"two!");
        let (_, _, body) = t.get("/is/image/a.png").await;
        assert_eq!(body.as_ref(), b"two!", "update replaced the entry");
        assert_eq!(t.renders(), 2);

        t.put("a.png", b"three");
        let (_, _, body) = t.get("/is/image/a.png?cache=validate").await;
        assert_eq!(body.as_ref(), b"three", "validate saw the change");
        let (_, headers, body) = t.get("/is/image/a.png?cache=on,validate").await;
        assert_eq!(body.as_ref(), b"three");
        assert!(header_of(&headers, header::CACHE_CONTROL).starts_with("public"));
        assert_eq!(t.renders(), 3);
        assert_eq!(
            t.cache_uses(6).await,
            ["miss", "hit", "miss", "hit", "miss", "revalidated"]
        );
    })
    .await;
}

#[tokio::test]
async fn a_changed_source_is_not_served_after_the_check_interval() {
    bounded(async {
        let interval = Duration::from_millis(200);
        let t = Cached::start(interval, cache::DEFAULT_CAPACITY).await;
        t.put("a.png", b"old bytes");
        t.get("/is/image/a.png").await;
        let (_, _, body) = t.get("/is/image/a.png").await;
        assert_eq!(body.as_ref(), b"old bytes");
        assert_eq!(t.renders(), 1);
        // Same size, a new modification time.
        t.put("a.png", b"new bytes");
        let file = t.home.path().join("images/a.png");
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(SystemTime::now() + Duration::from_secs(5))
            .unwrap();
        tokio::time::sleep(interval + Duration::from_millis(50)).await;
        let (_, _, body) = t.get("/is/image/a.png").await;
        assert_eq!(body.as_ref(), b"new bytes");
        assert_eq!(t.renders(), 2);
        // Unchanged after another interval: revalidated without `is`.
        tokio::time::sleep(interval + Duration::from_millis(50)).await;
        let (_, _, body) = t.get("/is/image/a.png").await;
        assert_eq!(body.as_ref(), b"new bytes");
        assert_eq!(t.renders(), 2);
        // Deleted: asked again (the fake then answers its default image, uncached).
        std::fs::remove_file(&file).unwrap();
        tokio::time::sleep(interval + Duration::from_millis(50)).await;
        let (_, _, body) = t.get("/is/image/a.png").await;
        assert_eq!(body.as_ref(), FAKE_IMAGE);
        assert_eq!(
            t.cache_uses(5).await,
            ["miss", "hit", "miss", "revalidated", "miss"]
        );
    })
    .await;
}

#[tokio::test]
async fn a_catalog_change_outdates_entries() {
    bounded(async {
        let interval = Duration::from_millis(100);
        let t = Cached::start(interval, cache::DEFAULT_CAPACITY).await;
        t.put("a.png", b"bytes");
        t.get("/is/image/a.png").await;
        tokio::time::sleep(interval + Duration::from_millis(50)).await;
        t.get("/is/image/a.png").await;
        assert_eq!(t.renders(), 1, "no catalog: revalidated");
        let catalog = t.home.path().join("catalog");
        std::fs::create_dir_all(&catalog).unwrap();
        std::fs::write(catalog.join("default.ini"), "Expiration=1\n").unwrap();
        tokio::time::sleep(interval + Duration::from_millis(50)).await;
        t.get("/is/image/a.png").await;
        assert_eq!(t.renders(), 2, "rendered again after the catalog changed");
    })
    .await;
}

#[tokio::test]
async fn hits_are_served_while_is_is_down() {
    bounded(async {
        let interval = Duration::from_millis(100);
        let Cached {
            home,
            is,
            ps,
            client,
        } = Cached::start(interval, cache::DEFAULT_CAPACITY).await;
        std::fs::write(home.path().join("images/a.png"), b"kept").unwrap();
        let (status, _, _) = get(&client, &ps.url("/is/image/a.png?wid=10")).await;
        assert_eq!(status, StatusCode::OK);
        let (_, shared) = is.stop().await;
        let (status, headers, body) = get(&client, &ps.url("/is/image/a.png?WID=10")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.as_ref(), b"kept");
        assert!(headers.get(header::ETAG).is_some());
        // After the interval the source is checked by `ps` itself: still served.
        tokio::time::sleep(interval + Duration::from_millis(50)).await;
        let (status, _, body) = get(&client, &ps.url("/is/image/a.png?wid=10")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.as_ref(), b"kept");
        // What is not cached is a quick 503.
        let (status, _, _) = get(&client, &ps.url("/is/image/a.png?wid=11")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(shared.seen.lock().unwrap().len(), 1);
        let started = Instant::now();
        let uses = loop {
            let text =
                std::fs::read_to_string(home.path().join(access_log::FILE)).unwrap_or_default();
            let uses: Vec<String> = text
                .lines()
                .map(|line| line.rsplit(' ').next().unwrap().to_owned())
                .collect();
            if uses.len() >= 4 || started.elapsed() > Duration::from_secs(5) {
                break uses;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(uses, ["miss", "hit", "revalidated", "miss"]);
    })
    .await;
}

#[tokio::test]
async fn with_the_real_image_server_a_changed_source_is_never_served_stale() {
    bounded(async {
        let home = tempfile::tempdir().unwrap();
        let catalog = home.path().join("catalog");
        std::fs::create_dir_all(&catalog).unwrap();
        std::fs::write(catalog.join("default.ini"), "").unwrap();
        // Catalogs edited long ago: entries are judged by their source only.
        let long_ago = SystemTime::now() - Duration::from_secs(3600);
        for path in [catalog.join("default.ini"), catalog.clone()] {
            std::fs::File::open(&path)
                .unwrap()
                .set_modified(long_ago)
                .unwrap();
        }
        let images = home.path().join("images");
        std::fs::create_dir_all(&images).unwrap();
        let png = |size: u32| {
            let mut out = std::io::Cursor::new(Vec::new());
            image::RgbImage::from_pixel(size, size, image::Rgb([200, 10, 10]))
                .write_to(&mut out, image::ImageFormat::Png)
                .unwrap();
            out.into_inner()
        };
        std::fs::write(images.join("tiny.png"), png(8)).unwrap();

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let is_addr = listener.local_addr().unwrap();
        let (stop_is, is_stopped) = oneshot::channel::<()>();
        let is = tokio::spawn(crate::servers::image_server::serve(
            listener,
            crate::servers::image_server::ImageServerConfig::new(home.path()),
            async move {
                let _ = is_stopped.await;
            },
        ));
        let interval = Duration::from_millis(150);
        let ps = Ps::start_with(PlatformConfig {
            home: Some(home.path().to_path_buf()),
            cache_check: interval,
            ..PlatformConfig::new(is_addr.to_string())
        })
        .await;
        let client = client();

        // `is` names the source of what it renders, and of nothing else.
        let render = |request: ImageRequest| {
            let client = client.clone();
            async move {
                let request = Request::post(format!("http://{is_addr}/render"))
                    .body(Full::new(Bytes::from(
                        serde_json::to_vec(&request).unwrap(),
                    )))
                    .unwrap();
                client
                    .request(request)
                    .await
                    .unwrap()
                    .into_parts()
                    .0
                    .headers
            }
        };
        let headers = render(ImageRequest {
            object: "tiny.png".into(),
            ..ImageRequest::default()
        })
        .await;
        let stamp = SourceStamp::from_headers(&headers).expect("a source stamp");
        assert_eq!(stamp.path, "tiny.png");
        assert_eq!(stamp.size, png(8).len() as u64);
        let headers = render(ImageRequest {
            object: "tiny.png".into(),
            req: Req::Exists(TextFormat::Text),
            ..ImageRequest::default()
        })
        .await;
        assert!(headers.get(cache::SOURCE_PATH_HEADER).is_none());

        let url = ps.url("/is/image/tiny.png?fmt=png&wid=4");
        let (status, headers, first) = get(&client, &url).await;
        assert_eq!(status, StatusCode::OK);
        let etag = header_of(&headers, header::ETAG).to_owned();
        // `is` stops: the entry is still served, and still after a check of its source.
        let _ = stop_is.send(());
        is.await.unwrap().unwrap();
        let (status, headers, body) = get(&client, &url).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, first);
        assert_eq!(header_of(&headers, header::ETAG), etag);
        tokio::time::sleep(interval + Duration::from_millis(50)).await;
        let (status, _, _) = get(&client, &url).await;
        assert_eq!(status, StatusCode::OK);
        // The source changes: once the interval has passed, never served again.
        std::fs::write(images.join("tiny.png"), png(16)).unwrap();
        tokio::time::sleep(interval + Duration::from_millis(50)).await;
        let (status, _, _) = get(&client, &url).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    })
    .await;
}

#[tokio::test]
async fn the_least_recently_used_entries_are_evicted_by_bytes() {
    bounded(async {
        // Each entry costs about 1000 + 60 + 256 bytes: 12 fit in 16 KiB.
        let t = Cached::start(HOUR, 16 * 1024).await;
        for n in 0..20 {
            t.put(&format!("{n}.png"), &[n as u8; 1000]);
        }
        for n in 0..20 {
            t.get(&format!("/is/image/{n}.png")).await;
        }
        assert_eq!(t.renders(), 20);
        // The newest are kept; keeping 19 fresh makes 10 the oldest.
        t.get("/is/image/19.png").await;
        assert_eq!(t.renders(), 20);
        t.get("/is/image/10.png").await;
        assert_eq!(t.renders(), 20);
        t.get("/is/image/0.png").await;
        assert_eq!(t.renders(), 21, "the oldest was evicted");
        // 0 came back and pushed out the least recently used one: 11, not 10 or 19.
        t.get("/is/image/10.png").await;
        t.get("/is/image/19.png").await;
        assert_eq!(t.renders(), 21);
        t.get("/is/image/11.png").await;
        assert_eq!(t.renders(), 22);
        // Larger than an eighth of the capacity: never kept.
        t.put("big.png", &[1u8; 3000]);
        t.get("/is/image/big.png").await;
        t.get("/is/image/big.png").await;
        assert_eq!(t.renders(), 24);
    })
    .await;
}

#[tokio::test]
async fn cache_off_bypasses_and_the_client_side_sets_cache_control() {
    bounded(async {
        let t = Cached::start(HOUR, cache::DEFAULT_CAPACITY).await;
        t.put("a.png", b"bytes");
        for _ in 0..2 {
            let (status, headers, _) = t.get("/is/image/a.png?cache=off").await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(header_of(&headers, header::CACHE_CONTROL), "no-store");
        }
        assert_eq!(t.renders(), 2);
        // `off` stored nothing.
        t.get("/is/image/a.png").await;
        assert_eq!(t.renders(), 3);
        let (_, headers, _) = t.get("/is/image/a.png?cache=validate,on").await;
        assert_eq!(header_of(&headers, header::CACHE_CONTROL), "no-cache");
        let (_, headers, _) = t.get("/is/image/a.png?cache=off,on").await;
        assert_eq!(header_of(&headers, header::CACHE_CONTROL), "no-store");
        let (_, headers, _) = t.get("/is/image/a.png?cache=on,off").await;
        assert!(header_of(&headers, header::CACHE_CONTROL).starts_with("public, max-age="));
        assert_eq!(t.renders(), 4);
        t.get("/healthz").await;
        t.get("/is/image/a.png?wid=0").await;
        assert_eq!(
            t.cache_uses(8).await,
            ["bypass", "bypass", "miss", "hit", "hit", "bypass", "-", "-"]
        );
    })
    .await;
}

#[test]
fn routes() {
    assert_eq!(route("/healthz"), Route::Health);
    assert_eq!(route("/livez"), Route::Live);
    assert_eq!(route("/is/image"), Route::Properties);
    assert_eq!(route("/is/image/"), Route::Properties);
    assert_eq!(route("/is/image/a/b"), Route::Image("a/b"));
    assert_eq!(route("/is/image//a"), Route::Image("/a"));
    assert_eq!(route("/is/imagex"), Route::NotFound);
    assert_eq!(route("/is/content/a"), Route::NotFound);
    assert_eq!(route("/"), Route::NotFound);
}

#[tokio::test]
async fn an_image_request_is_parsed_forwarded_and_relayed() {
    bounded(async {
        let is = FakeIs::start().await;
        let ps = Ps::start(is.addr).await;
        let client = client();
        let (status, headers, body) = get(
            &client,
            &ps.url("/is/image/cat/my%20id?WID=300&hei=200&fmt=png&.note=x&$v=1"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.as_ref(), FAKE_IMAGE);
        assert_eq!(header_of(&headers, header::CONTENT_TYPE), "image/png");
        assert_eq!(
            header_of(&headers, header::CACHE_CONTROL),
            "public, max-age=36000"
        );
        assert_eq!(
            header_of(&headers, header::CONTENT_LENGTH),
            FAKE_IMAGE.len().to_string()
        );
        assert_eq!(
            is.seen(),
            vec![ImageRequest {
                object: "cat/my id".into(),
                wid: Some(300),
                hei: Some(200),
                fmt: Some(OutputFormat::Png),
                ..ImageRequest::default()
            }]
        );

        // Text answers and error statuses of `is` are relayed too.
        let (status, headers, body) = get(&client, &ps.url("/is/image/a?req=props,json")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            header_of(&headers, header::CONTENT_TYPE),
            "text/plain; charset=utf-8"
        );
        assert_eq!(body.as_ref(), b"#S7Z OK\nimage.width=2\n");
        assert_eq!(is.seen()[1].req, Req::Props(TextFormat::Json));
        let (status, _, body) = get(&client, &ps.url("/is/image/missing")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body.as_ref(), b"object `missing` not found");
    })
    .await;
}

#[tokio::test]
async fn head_relays_the_headers_without_a_body() {
    bounded(async {
        let is = FakeIs::start().await;
        let ps = Ps::start(is.addr).await;
        let client = client();
        let (status, headers, body) = send(&client, Method::HEAD, &ps.url("/is/image/a")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.is_empty());
        assert_eq!(header_of(&headers, header::CONTENT_TYPE), "image/png");
        assert_eq!(
            header_of(&headers, header::CONTENT_LENGTH),
            FAKE_IMAGE.len().to_string()
        );
        // The connection is still usable after a HEAD.
        let (status, _, body) = get(&client, &ps.url("/is/image/a")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.as_ref(), FAKE_IMAGE);
        let (status, _, body) = send(&client, Method::HEAD, &ps.url("/is/image")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_parse_error_is_answered_without_asking_is() {
    bounded(async {
        let is = FakeIs::start().await;
        let ps = Ps::start(is.addr).await;
        let client = client();
        for path in [
            "/is/image/a?wid=0",
            "/is/image/a?foo=1",
            "/is/image/a/%2e%2e/b",
            "/is/image/a%2Fb",
            "/is/image//etc/passwd",
        ] {
            let (status, headers, body) = get(&client, &ps.url(path)).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
            assert_eq!(
                header_of(&headers, header::CONTENT_TYPE),
                "text/plain; charset=utf-8"
            );
            assert_eq!(header_of(&headers, header::CACHE_CONTROL), "no-store");
            assert!(!body.is_empty());
        }
        let (_, _, body) = get(&client, &ps.url("/is/image/a?wid=0")).await;
        assert_eq!(
            body.as_ref(),
            b"invalid value `0` for `wid`: the size must be an integer from 1 to 65535\n"
        );
        assert!(is.seen().is_empty());
    })
    .await;
}

/// A `ps` for `is_addr` that holds requests for `wait` at most, `queue` at once.
async fn ps_holding(is_addr: SocketAddr, wait: Duration, queue: usize) -> Ps {
    Ps::start_with(PlatformConfig {
        hold: HoldPolicy {
            wait,
            queue,
            ..HoldPolicy::default()
        },
        ..PlatformConfig::new(is_addr.to_string())
    })
    .await
}

#[tokio::test]
async fn is_down_is_held_for_the_wait_then_a_503_with_retry_after() {
    bounded(async {
        let wait = Duration::from_millis(400);
        let (dead, _reserved) = refusing_addr();
        let ps = ps_holding(dead, wait, 8).await;
        let client = client();
        let started = Instant::now();
        let (status, headers, body) = get(&client, &ps.url("/is/image/a")).await;
        let held = started.elapsed();
        assert!(held >= wait - Duration::from_millis(100), "{held:?}");
        assert!(held < wait + Duration::from_millis(1000), "{held:?}");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(header_of(&headers, header::RETRY_AFTER), "1");
        assert_eq!(body.as_ref(), b"image server unavailable, retry shortly\n");
        // ps keeps running; /healthz is not held: it says at once that is is down.
        let started = Instant::now();
        let (status, _, _) = get(&client, &ps.url("/healthz")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(started.elapsed() < wait, "{:?}", started.elapsed());
    })
    .await;
}

#[tokio::test]
async fn a_request_is_held_until_is_listens_again() {
    bounded(async {
        let addr = dead_addr().await;
        let ps = ps_holding(addr, Duration::from_secs(5), 8).await;
        let client = client();
        let request = tokio::spawn({
            let url = ps.url("/is/image/a");
            let client = client.clone();
            async move { get(&client, &url).await }
        });
        // The request is held while nothing listens…
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!request.is_finished());
        // …and answered by the `is` that comes back.
        let is = FakeIs::start_on(addr, Arc::default()).await;
        let (status, _, body) = request.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.as_ref(), FAKE_IMAGE);
        assert_eq!(is.seen().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn the_holding_queue_is_bounded() {
    bounded(async {
        let wait = Duration::from_millis(1500);
        let (dead, _reserved) = refusing_addr();
        let ps = ps_holding(dead, wait, 1).await;
        let client = client();
        let held = tokio::spawn({
            let url = ps.url("/is/image/a");
            let client = client.clone();
            async move { get(&client, &url).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The one place is taken: the next failed request is a 503 at once.
        let started = Instant::now();
        let (status, headers, _) = get(&client, &ps.url("/is/image/b")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(header_of(&headers, header::RETRY_AFTER), "1");
        assert!(started.elapsed() < wait / 2, "{:?}", started.elapsed());
        assert!(!held.is_finished());
        let (status, _, _) = held.await.unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    })
    .await;
}

#[tokio::test]
async fn is_restarted_between_requests() {
    bounded(async {
        let is = FakeIs::start().await;
        let ps = ps_holding(is.addr, Duration::from_millis(300), 8).await;
        let client = client();
        let (status, _, _) = get(&client, &ps.url("/is/image/a")).await;
        assert_eq!(status, StatusCode::OK);

        // ps now holds a pooled connection to the old `is`.
        let (addr, shared) = is.stop().await;
        let is = FakeIs::start_on(addr, shared).await;
        let started = Instant::now();
        let (status, _, _) = get(&client, &ps.url("/is/image/b")).await;
        assert!(
            status == StatusCode::OK
                || (status == StatusCode::SERVICE_UNAVAILABLE
                    && started.elapsed() < Duration::from_millis(1500)),
            "{status}"
        );
        let (status, _, body) = get(&client, &ps.url("/is/image/c")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.as_ref(), FAKE_IMAGE);
        assert_eq!(is.seen().last().unwrap().object, "c");

        // Down for a while, then back: ps reconnects by itself.
        let (addr, shared) = is.stop().await;
        let (status, _, _) = get(&client, &ps.url("/is/image/d")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let _is = FakeIs::start_on(addr, shared).await;
        let (status, _, _) = get(&client, &ps.url("/is/image/e")).await;
        assert_eq!(status, StatusCode::OK);
    })
    .await;
}

#[tokio::test]
async fn a_request_in_flight_when_is_dies_is_retried_and_twice_is_quarantined() {
    bounded(async {
        let is = FakeIs::start().await;
        let ps = Ps::start(is.addr).await;
        let client = client();
        is.shared.drops.store(1, Ordering::SeqCst);
        let (status, _, body) = get(&client, &ps.url("/is/image/a")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.as_ref(), FAKE_IMAGE);
        assert_eq!(is.shared.drops.load(Ordering::SeqCst), 0);

        // Twice in a row: a poison request. No third attempt, a 500 with the reason.
        is.shared.drops.store(3, Ordering::SeqCst);
        let (status, _, body) = get(&client, &ps.url("/is/image/poison?wid=10")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(String::from_utf8_lossy(&body), format!("{QUARANTINED}\n"));
        assert_eq!(is.shared.drops.load(Ordering::SeqCst), 1);
        is.shared.drops.store(0, Ordering::SeqCst);

        // Quarantined: the same request, however written, does not reach `is` again…
        let seen = is.seen().len();
        for url in ["/is/image/poison?wid=10", "/is/image/poison?WID=10&"] {
            let (status, headers, _) = get(&client, &ps.url(url)).await;
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{url}");
            assert_eq!(header_of(&headers, header::CACHE_CONTROL), "no-store");
        }
        assert_eq!(is.seen().len(), seen);
        // …and other requests are served.
        let (status, _, _) = get(&client, &ps.url("/is/image/poison?wid=11")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(is.seen().len(), seen + 1);
    })
    .await;
}

#[tokio::test]
async fn a_second_crash_is_pinned_on_the_poison_request_not_on_the_others_in_flight() {
    bounded(async {
        let is = FakeIs::start().await;
        let ps = Ps::start(is.addr).await;
        let client = client();
        // An innocent request in flight when the poison one crashes `is`: both are suspects
        // after the first crash, but are tried again one at a time.
        let innocent = tokio::spawn({
            let (client, url) = (client.clone(), ps.url("/is/image/slowish"));
            async move { get(&client, &url).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (status, _, body) = get(&client, &ps.url("/is/image/crasher")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(String::from_utf8_lossy(&body), format!("{QUARANTINED}\n"));
        let (status, _, body) = innocent.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        // The innocent one is not quarantined; the poison one is.
        let (status, _, _) = get(&client, &ps.url("/is/image/slowish")).await;
        assert_eq!(status, StatusCode::OK);
        let seen = is.seen().len();
        let (status, _, _) = get(&client, &ps.url("/is/image/crasher")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(is.seen().len(), seen);
    })
    .await;
}

#[tokio::test]
async fn deaths_of_is_that_were_not_crashes_make_no_poison_request() {
    bounded(async {
        let is = FakeIs::start().await;
        let ps = Ps::start(is.addr).await;
        let client = client();
        // Killed from outside three times with the request in flight: held, sent again each
        // time, and answered.
        *is.shared.previous_exit.lock().unwrap() = Some("killed");
        is.shared.drops.store(3, Ordering::SeqCst);
        let (status, _, body) = get(&client, &ps.url("/is/image/a")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.as_ref(), FAKE_IMAGE);
        assert_eq!(is.shared.drops.load(Ordering::SeqCst), 0);
        // Crashes are counted: two make a poison request.
        *is.shared.previous_exit.lock().unwrap() = Some("crashed");
        is.shared.drops.store(2, Ordering::SeqCst);
        let (status, _, _) = get(&client, &ps.url("/is/image/a")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    })
    .await;
}

#[tokio::test]
async fn without_a_quarantine_period_a_poison_request_is_tried_again_later() {
    bounded(async {
        let is = FakeIs::start().await;
        let ps = Ps::start_with(PlatformConfig {
            hold: HoldPolicy {
                quarantine: Duration::ZERO,
                ..HoldPolicy::default()
            },
            ..PlatformConfig::new(is.addr.to_string())
        })
        .await;
        let client = client();
        is.shared.drops.store(2, Ordering::SeqCst);
        let (status, _, _) = get(&client, &ps.url("/is/image/a")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        let (status, _, _) = get(&client, &ps.url("/is/image/a")).await;
        assert_eq!(status, StatusCode::OK);
    })
    .await;
}

#[tokio::test]
async fn a_slow_is_is_cut_at_the_request_timeout() {
    bounded(async {
        let is = FakeIs::start().await;
        let ps = Ps::start_with(PlatformConfig {
            request_timeout: Duration::from_millis(300),
            ..PlatformConfig::new(is.addr.to_string())
        })
        .await;
        let started = Instant::now();
        let (status, headers, body) = get(&client(), &ps.url("/is/image/slow")).await;
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(header_of(&headers, header::RETRY_AFTER), "1");
        assert!(String::from_utf8_lossy(&body).contains("timed out"));
    })
    .await;
}

#[tokio::test]
async fn server_properties_with_is_up_and_down() {
    bounded(async {
        let is = FakeIs::start().await;
        let ps = Ps::start(is.addr).await;
        let client = client();
        let version = env!("CARGO_PKG_VERSION");
        for path in ["/is/image", "/is/image/", "/is/image?req=props"] {
            let (status, headers, body) = get(&client, &ps.url(path)).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(
                header_of(&headers, header::CONTENT_TYPE),
                "text/plain; charset=utf-8"
            );
            assert_eq!(
                String::from_utf8_lossy(&body),
                format!(
                    "#S7Z OK\nimageServer.platformServer.version={version}\n\
                     imageServer.imageServer=ok\nimageServer.version=0.1.0\n\
                     imageServer.svgServer=ok\n"
                )
            );
        }
        is.stop().await;
        let (status, _, body) = get(&client, &ps.url("/is/image")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            String::from_utf8_lossy(&body),
            format!(
                "#S7Z OK\nimageServer.platformServer.version={version}\n\
                 imageServer.imageServer=unavailable\nimageServer.svgServer=unknown\n"
            )
        );
    })
    .await;
}

#[tokio::test]
async fn healthz_follows_is() {
    bounded(async {
        let is = FakeIs::start().await;
        let ps = Ps::start(is.addr).await;
        let client = client();
        let (status, _, body) = get(&client, &ps.url("/healthz")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.as_ref(), b"ok\n");
        is.stop().await;
        let started = Instant::now();
        let (status, headers, _) = get(&client, &ps.url("/healthz")).await;
        assert!(started.elapsed() < Duration::from_millis(1500));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(header_of(&headers, header::RETRY_AFTER), "1");
        // Its own liveness does not follow is: a liveness check on /livez restarts ps only
        // for ps's own fault.
        let (status, _, body) = get(&client, &ps.url("/livez")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.as_ref(), b"ok ps\n");
    })
    .await;
}

/// With an `svg` (`IMAGESERVING_SVG_ADDR`), `/healthz` covers it too: 503 while it is down,
/// saying so, though `is` answers.
#[tokio::test]
async fn healthz_covers_svg_when_there_is_one() {
    bounded(async {
        let is = FakeIs::start().await;
        let svg = FakeIs::start().await;
        let mut config = PlatformConfig::new(is.addr.to_string());
        config.svg_addr = Some(svg.addr.to_string());
        let ps = Ps::start_with(config).await;
        let client = client();
        let (status, _, _) = get(&client, &ps.url("/healthz")).await;
        assert_eq!(status, StatusCode::OK);
        svg.stop().await;
        let (status, headers, body) = get(&client, &ps.url("/healthz")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(header_of(&headers, header::RETRY_AFTER), "1");
        assert!(
            String::from_utf8_lossy(&body).contains("SVG server"),
            "{body:?}"
        );
        // Image requests do not depend on svg's health: ps still serves them.
        let (status, _, _) = get(&client, &ps.url("/livez")).await;
        assert_eq!(status, StatusCode::OK);
    })
    .await;
}

#[tokio::test]
async fn unknown_paths_methods_and_bodies() {
    bounded(async {
        let is = FakeIs::start().await;
        let ps = Ps::start(is.addr).await;
        let client = client();
        for path in ["/", "/is/content/a", "/is/imagex", "/healthz/x"] {
            let (status, _, _) = get(&client, &ps.url(path)).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        }
        for path in ["/is/image/a", "/is/image", "/healthz", "/livez"] {
            for method in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
                let (status, headers, _) = send(&client, method.clone(), &ps.url(path)).await;
                assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
                assert_eq!(header_of(&headers, header::ALLOW), "GET, HEAD");
            }
        }
        let answer = raw(
            ps.addr,
            b"GET /is/image/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        let answer = raw(
            ps.addr,
            b"GET /is/image/a?wid=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let huge = format!(
            "GET /is/image/a HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(HTTP_LIMITS.max_head_bytes + 1)
        );
        let answer = raw(ps.addr, huge.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
        assert!(is.seen().len() == 1);
    })
    .await;
}

#[tokio::test]
async fn many_concurrent_requests_are_all_answered() {
    bounded(async {
        let is = FakeIs::start().await;
        let ps = Ps::start(is.addr).await;
        let client = client();
        let mut requests = JoinSet::new();
        for n in 0..50 {
            let client = client.clone();
            let url = ps.url(&format!("/is/image/img{n}?wid={}", n + 1));
            requests.spawn(async move { get(&client, &url).await });
        }
        let mut answered = 0;
        while let Some(result) = requests.join_next().await {
            let (status, _, body) = result.unwrap();
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body.as_ref(), FAKE_IMAGE);
            answered += 1;
        }
        assert_eq!(answered, 50);
        assert_eq!(is.seen().len(), 50);
    })
    .await;
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_returns() {
    bounded(async {
        let is = FakeIs::start().await;
        let mut ps = Ps::start(is.addr).await;
        let client = client();
        // Leaves an idle keep-alive connection open.
        let (status, _, _) = get(&client, &ps.url("/is/image/a")).await;
        assert_eq!(status, StatusCode::OK);
        let _ = ps.shutdown.take().unwrap().send(());
        let started = Instant::now();
        let result = (&mut ps.task).await.unwrap();
        assert!(result.is_ok());
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(TcpStream::connect(ps.addr).await.is_err());
    })
    .await;
}

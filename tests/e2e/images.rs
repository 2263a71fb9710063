//! The image stack through the supervisor: the README's first request, the samples, bad
//! sources, and what a client sees while the Image Server is killed under traffic. Then hostile
//! inputs (issue #6, scenario 7): truncated and corrupt files of every format, decompression
//! bombs, hostile SVGs, path traversal in every encoding and links out of the image root.

use std::fs;
use std::io::{Cursor, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{component_of, free_port, wait_for, TestHome, SETTLE, SUPERVISOR};
use crate::http::{self, Answer};

const ALL: [&str; 3] = ["is", "svg", "ps"];
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// A home running the real stack on ephemeral ports; returns it with the port of `ps`.
fn stack() -> (TestHome, u16) {
    stack_with_ps("")
}

/// [`stack`], with `ps_extra` TOML lines in the table of `ps`.
fn stack_with_ps(ps_extra: &str) -> (TestHome, u16) {
    stack_prepared(ps_extra, |_| {})
}

/// [`stack_with_ps`], with `prepare` called on the home before `start`.
fn stack_prepared(ps_extra: &str, prepare: impl FnOnce(&Path)) -> (TestHome, u16) {
    let ps = free_port();
    let config = format!(
        r#"{SUPERVISOR}
[components.ps]
command = ["@self", "component", "ps"]
port = {ps}
depends_on = ["is", "svg"]
start_secs = "200ms"
{ps_extra}

[components.is]
command = ["@self", "component", "is"]
port = {is}
start_secs = "200ms"

[components.svg]
command = ["@self", "component", "svg"]
port = {svg}
start_secs = "200ms"
"#,
        is = free_port(),
        svg = free_port(),
    );
    let home = TestHome::new(&config);
    prepare(home.path());
    home.run(&["start"]).expect_code(0);
    home.wait_running(&ALL);
    (home, ps)
}

fn get(port: u16, path: &str) -> Answer {
    http::get(port, path, REQUEST_TIMEOUT).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn decode(answer: &Answer) -> image::DynamicImage {
    image::load_from_memory(&answer.body)
        .unwrap_or_else(|e| panic!("not an image ({e}): {:?}", answer.headers))
}

#[test]
fn a_fresh_home_serves_the_readme_request_and_the_samples() {
    let (_home, ps) = stack();

    let webp = get(ps, "/is/image/sample/photo?wid=300&fmt=webp");
    assert_eq!(webp.status, 200, "{}", webp.text());
    assert_eq!(webp.header("content-type"), Some("image/webp"));
    let img = decode(&webp);
    assert_eq!(img.width(), 300);
    assert_eq!(img.height(), 225, "the sample photo is 4:3");

    let png = get(ps, "/is/image/sample/logo?fmt=png-alpha&wid=64");
    assert_eq!(png.status, 200, "{}", png.text());
    assert!(decode(&png).color().has_alpha());

    // The SVG sample goes through the SVG server.
    let svg = get(ps, "/is/image/sample/drawing?wid=200&fmt=png");
    assert_eq!(svg.status, 200, "{}", svg.text());
    assert_eq!(decode(&svg).width(), 200);

    let props = get(ps, "/is/image/sample/photo?req=imageprops");
    assert_eq!(props.status, 200);
    let text = props.text();
    assert!(text.starts_with("#S7Z OK"), "{text}");
    assert!(text.contains("image.width=2000"), "{text}");

    let server = get(ps, "/is/image");
    assert_eq!(server.status, 200);
    assert!(server.text().contains("imageServer."), "{}", server.text());
    assert_eq!(get(ps, "/healthz").status, 200);
}

#[test]
fn bad_sources_get_clear_errors_and_the_servers_keep_serving() {
    let (home, ps) = stack();
    let images = home.path().join("images");
    let photo = fs::read(images.join("sample/photo.jpg")).expect("the sample photo");
    let logo = fs::read(images.join("sample/logo.png")).expect("the sample logo");
    fs::write(images.join("truncated.jpg"), &photo[..photo.len() / 3]).unwrap();
    fs::write(images.join("truncated.png"), &logo[..logo.len() / 2]).unwrap();
    fs::write(images.join("garbage.gif"), b"GIF89a\x01\x00garbage garbage").unwrap();
    fs::write(images.join("noise.webp"), [0x52u8; 300]).unwrap();
    let mut tiff = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_pixel(64, 64, image::Rgb([10, 200, 30]))
        .write_to(&mut tiff, image::ImageFormat::Tiff)
        .expect("encoding a TIFF");
    let tiff = tiff.into_inner();
    fs::write(images.join("truncated.tif"), &tiff[..tiff.len() / 2]).unwrap();
    fs::write(images.join("bomb.png"), png_declaring(100_000, 100_000)).unwrap();
    fs::write(
        images.join("hostile.svg"),
        format!(
            "<svg xmlns='http://www.w3.org/2000/svg' width='100' height='100'>{}{}</svg>",
            "<g>".repeat(20_000),
            "</g>".repeat(20_000)
        ),
    )
    .unwrap();
    for object in [
        "truncated.jpg",
        "truncated.png",
        "garbage.gif",
        "noise.webp",
        "truncated.tif",
        "bomb.png",
        "hostile.svg",
    ] {
        let answer = get(ps, &format!("/is/image/{object}?wid=100"));
        assert!(
            (400..500).contains(&answer.status),
            "{object}: {} {}",
            answer.status,
            answer.text()
        );
        assert!(!answer.text().is_empty(), "{object}: an error says why");
        assert!(
            !answer.text().contains(home.path().to_str().unwrap()),
            "{object}: no paths in messages: {}",
            answer.text()
        );
        let ok = get(ps, "/is/image/sample/photo?wid=50");
        assert_eq!(ok.status, 200, "still serving after {object}");
    }
    // Nothing crashed: no component was restarted.
    let status = home.status_json();
    for c in status["components"].as_array().unwrap() {
        assert_eq!(c["restarts"], 0, "{c}");
        assert_eq!(c["state"], "RUNNING", "{c}");
    }
}

/// A valid PNG signature and IHDR declaring `w`×`h`, and nothing else.
fn png_declaring(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 6, 0, 0, 0]);
    let crc = crc32(&ihdr);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(13u32.to_be_bytes());
    out.extend(&ihdr);
    out.extend(crc.to_be_bytes());
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Runs `during` while `clients` threads loop on an uncached image request to `ps`; the
/// outcome of every request (the status, or the client's error).
fn under_traffic(ps: u16, clients: usize, during: impl FnOnce()) -> Vec<Result<u16, String>> {
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, answered) = (stop.clone(), answered.clone());
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let answer = http::get(
                        ps,
                        "/is/image/sample/photo?wid=120&fmt=jpeg&cache=off",
                        REQUEST_TIMEOUT,
                    );
                    answers.push(answer.map(|a| a.status).map_err(|e| e.to_string()));
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                answers
            })
        })
        .collect();
    // Traffic flows before and after `during` (a few answers each side, however slow the
    // machine), so that what `during` does happens under load from start to end.
    let flowing = |at_least: usize| {
        wait_for(SETTLE, format_args!("{at_least} answers"), || {
            answered.load(Ordering::Relaxed) >= at_least
        });
    };
    flowing(2 * clients);
    during();
    flowing(answered.load(Ordering::Relaxed) + 2 * clients);
    stop.store(true, Ordering::Relaxed);
    threads
        .into_iter()
        .flat_map(|c| c.join().expect("a client thread"))
        .collect()
}

/// Asserts that traffic flowed and that every request was answered 200.
fn assert_none_failed(answers: &[Result<u16, String>]) {
    let failed: Vec<_> = answers.iter().filter(|a| **a != Ok(200)).collect();
    assert!(
        answers.len() >= 10,
        "traffic flowed: {} requests",
        answers.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        answers.len()
    );
}

/// `restart` of each component under traffic (issue #14): each restart is a handover on the
/// socket the supervisor holds (the old process serves until the new one is ready, then
/// finishes its requests), so no request fails: no refused connection, no 503.
#[test]
fn restarting_each_component_under_traffic_fails_no_request() {
    let (home, ps) = stack();
    let answers = under_traffic(ps, 3, || {
        for name in ["ps", "is", "svg", "ps", "is"] {
            let old = home.pid_of(name).expect("it runs");
            home.run(&["restart", name]).expect_code(0);
            assert_ne!(home.pid_of(name), Some(old), "{name} has a new process");
        }
    });
    assert_none_failed(&answers);
}

/// `reload` of a changed `ps` under traffic: a handover, so the old `ps` serves until the new
/// one (with the new settings) is ready, and no request is refused or reset.
#[test]
fn reloading_a_changed_ps_under_traffic_fails_no_request() {
    let (home, ps) = stack();
    let config_file = home.path().join("conf/imageserving.toml");
    let config = std::fs::read_to_string(&config_file).expect("the config");
    let answers = under_traffic(ps, 3, || {
        for check in ["2s", "3s"] {
            let old = home.pid_of("ps").expect("ps runs");
            let changed = config.replace(
                "[components.ps]\n",
                &format!("[components.ps]\nenv = {{ IMAGESERVING_CACHE_CHECK = \"{check}\" }}\n"),
            );
            assert_ne!(changed, config);
            std::fs::write(&config_file, changed).expect("writing the config");
            let out = home.run(&["reload"]);
            out.expect_code(0);
            assert!(out.stdout.contains("changed (restarted): ps"), "{out}");
            assert_ne!(home.pid_of("ps"), Some(old), "ps has a new process");
        }
    });
    assert_none_failed(&answers);
    // Both changes were handovers: the old `ps` served until the new one was ready.
    let log = std::fs::read_to_string(home.path().join("logs/ps.log")).expect("the log");
    assert_eq!(
        log.matches("restarting (requested): handover").count(),
        2,
        "{log}"
    );
}

#[test]
fn killing_the_image_server_under_traffic_costs_latency_not_errors() {
    let (home, ps) = stack();
    let old = home.pid_of("is").expect("is runs");
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match http::get(
                    ps,
                    "/is/image/sample/photo?wid=120&fmt=jpeg&cache=off",
                    REQUEST_TIMEOUT,
                ) {
                    Ok(a) => seen.push((Instant::now(), a.status, a.took)),
                    Err(e) => panic!("ps itself failed: {e}"),
                }
            }
            seen
        })
    };
    // Some traffic first, then the kill.
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 is");
    wait_for(SETTLE, "is restarted", || {
        home.pid_of("is").is_some_and(|p| p != old)
            && home.status_json()["components"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["state"] == "RUNNING")
    });
    let back_at = Instant::now();
    // Traffic after the restart must succeed again.
    wait_for(SETTLE, "a 200 after the restart", || {
        get(ps, "/is/image/sample/photo?wid=120&fmt=jpeg&cache=off").status == 200
    });
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let seen = client.join().expect("the client thread");

    // `is`'s socket is held by the supervisor, so a request made while `is` is down waits in
    // its backlog for the new `is`; the requests in flight when it died are held by `ps` and
    // sent again to the new one (issue #14): slower answers, no error.
    assert!(seen.len() >= 3, "traffic flowed: {} requests", seen.len());
    for (_, status, took) in &seen {
        assert_eq!(*status, 200, "only 200s");
        assert!(
            *took < Duration::from_secs(3),
            "no slow answer: {status} took {took:?}"
        );
    }
    let after: Vec<_> = seen.iter().filter(|(at, _, _)| *at > back_at).collect();
    assert!(
        after.iter().any(|(_, s, _)| *s == 200),
        "200s again after the restart ({} requests after)",
        after.len()
    );
}

/// The port a component's process listens on, from its environment.
fn listen_port_of(home: &TestHome, name: &str) -> u16 {
    let pid = home.pid_of(name).expect("it runs");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("its environment");
    environ
        .split(|b| *b == 0)
        .find_map(|var| var.strip_prefix(b"IMAGESERVING_LISTEN="))
        .and_then(|addr| {
            std::str::from_utf8(addr)
                .ok()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()
        })
        .expect("IMAGESERVING_LISTEN")
}

/// Each new process of `is` learns how the previous one ended, and says it in its health check,
/// so that `ps` tells a request that crashes `is` (a poison request) from a `kill -9`.
#[test]
fn the_image_server_says_how_its_previous_process_ended() {
    let (home, _ps) = stack();
    let is = listen_port_of(&home, "is");
    let previous = || {
        let answer = http::get(is, "/healthz", REQUEST_TIMEOUT).expect("is answers");
        assert_eq!(answer.status, 200);
        answer
            .header("x-imageserving-previous-exit")
            .map(str::to_owned)
    };
    assert_eq!(previous(), None, "the first process");
    let old = home.pid_of("is").expect("is runs");
    home.run(&["restart", "is"]).expect_code(0);
    assert_ne!(home.pid_of("is"), Some(old));
    assert_eq!(previous().as_deref(), Some("stopped"));
    // Signalled from here, and replaced by the supervisor.
    let signal_is = |signal| {
        let old = home.pid_of("is").expect("is runs");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(old as i32), signal).expect("kill");
        wait_for(SETTLE, "is restarted", || {
            home.pid_of("is").is_some_and(|p| p != old)
                && component_of(&home.status_json(), "is")["state"] == "RUNNING"
        });
    };
    signal_is(nix::sys::signal::Signal::SIGKILL);
    assert_eq!(previous().as_deref(), Some("killed"));
    // What an abort (a failed allocation, a panic with panic=abort) dies of. (Not SIGSEGV:
    // Rust's stack overflow handler takes the first one sent from outside.)
    signal_is(nix::sys::signal::Signal::SIGABRT);
    assert_eq!(previous().as_deref(), Some("crashed"));
}

#[test]
fn a_repeated_request_is_a_cache_hit_and_is_served_while_the_image_server_restarts() {
    // A long check interval: the hit below must not depend on when the samples were written.
    let (home, ps) = stack_with_ps(r#"env = { IMAGESERVING_CACHE_CHECK = "1h" }"#);
    let access_log = home.path().join("logs/access.log");
    // Image requests only: the supervisor's readiness checks (`GET /healthz`) are logged too.
    let cache_uses = || -> Vec<String> {
        fs::read_to_string(&access_log)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains(" /is/image/"))
            .map(|line| line.rsplit(' ').next().unwrap_or_default().to_owned())
            .collect()
    };

    let path = "/is/image/sample/photo?wid=120&fmt=png";
    let first = get(ps, path);
    assert_eq!(first.status, 200, "{}", first.text());
    let etag = first.header("etag").expect("an ETag").to_owned();
    let second = get(ps, "/is/image/sample/photo?FMT=png&.why=test&wid=120");
    assert_eq!(second.status, 200);
    assert_eq!(second.body, first.body);
    assert_eq!(second.header("etag"), Some(etag.as_str()));
    wait_for(SETTLE, "the access log says miss, then hit", || {
        cache_uses() == ["miss", "hit"]
    });

    let old = home.pid_of("is").expect("is runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 is");
    // At once, while `is` is dead or restarting: answered from the cache.
    let during = get(ps, path);
    assert_eq!(during.status, 200, "{}", during.text());
    assert_eq!(during.body, first.body);
    wait_for(SETTLE, "a third hit in the access log", || {
        cache_uses() == ["miss", "hit", "hit"]
    });
    wait_for(SETTLE, "is restarted", || {
        home.pid_of("is").is_some_and(|p| p != old)
    });
    let line = fs::read_to_string(&access_log).unwrap();
    let mut image_lines = line.lines().filter(|l| l.contains(" /is/image/"));
    let last: Vec<&str> = image_lines.next_back().unwrap().split(' ').collect();
    assert_eq!(last.len(), 8, "{line}");
    assert_eq!(&last[2..5], ["GET", path, "200"]);
}

// ------------------------------------------------------------------------------------------
// Hostile inputs (issue #6, scenario 7): truncated and corrupt files of every format,
// decompression bombs, hostile SVGs, path traversal. Each gets a clear error, nothing outside
// `images/` is ever read or served, and no input crashes a server: `is` keeps its pid and no
// component is restarted. `benches/reliability/image_inputs.py` is the long run.
// ------------------------------------------------------------------------------------------

/// What the secret planted outside `images/` holds: no answer may ever contain it.
const SECRET: &str = "SECRET-7f3a9c1e-outside-the-image-root";

/// A running stack prepared for hostile inputs.
struct Hostile {
    home: TestHome,
    /// The port of `ps`.
    ps: u16,
    /// `images/bad`: objects `bad/…`, resolved through catalog `bad` (`ErrorDetail=1`, so
    /// that messages give the reason).
    bad: PathBuf,
    /// `images/small`: objects `small/…`, catalog `small` (`ErrorDetail=1`,
    /// `MaxSourcePix=4000000`, so that bombs at the limit stay quick in a debug build).
    small: PathBuf,
    /// `secret/`, beside `images/`: `secret.txt` holds [`SECRET`], `secret.png` is a red
    /// square whose `tEXt` chunk holds it too.
    secret: PathBuf,
    /// The pid of `is` once started.
    is_pid: u32,
}

impl Hostile {
    fn start() -> Hostile {
        let (home, ps) = stack_prepared("", |h| {
            fs::create_dir_all(h.join("catalog")).unwrap();
            fs::write(h.join("catalog/bad.ini"), "ErrorDetail=1\n").unwrap();
            fs::write(
                h.join("catalog/small.ini"),
                "ErrorDetail=1\nMaxSourcePix=4000000\n",
            )
            .unwrap();
            for dir in ["images/bad", "images/small", "secret"] {
                fs::create_dir_all(h.join(dir)).unwrap();
            }
            fs::write(h.join("secret/secret.txt"), format!("{SECRET}\n")).unwrap();
            let red = encode(
                &image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
                    16,
                    16,
                    image::Rgb([255, 0, 0]),
                )),
                image::ImageFormat::Png,
            );
            // The secret in a tEXt chunk before IEND.
            let at = red.len() - 12;
            let mut text = b"Comment\0".to_vec();
            text.extend(SECRET.as_bytes());
            let secret_png = [&red[..at], &png_chunk(b"tEXt", &text), &red[at..]].concat();
            fs::write(h.join("secret/secret.png"), secret_png).unwrap();
        });
        let is_pid = home.pid_of("is").expect("is runs");
        let root = home.path().to_owned();
        Hostile {
            home,
            ps,
            bad: root.join("images/bad"),
            small: root.join("images/small"),
            secret: root.join("secret"),
            is_pid,
        }
    }

    fn get(&self, path: &str) -> Answer {
        get(self.ps, path)
    }

    /// Asserts that `answer` (to `what`) is a clear refusal: `status`, a one-line `text/plain`
    /// message that starts with `starts`, no path of the home, no secret.
    #[track_caller]
    fn assert_refused(&self, what: &str, answer: &Answer, status: u16, starts: &str) {
        let text = answer.text();
        assert_eq!(answer.status, status, "{what}: {text}");
        assert!(
            text.starts_with(starts),
            "{what}: expected a message starting with {starts:?}, got {text:?}"
        );
        assert_eq!(
            text.trim_end().lines().count(),
            1,
            "{what}: one line: {text:?}"
        );
        assert!(
            answer
                .header("content-type")
                .is_some_and(|t| t.starts_with("text/plain")),
            "{what}: {:?}",
            answer.headers
        );
        self.assert_clean(what, answer);
    }

    /// Asserts that `answer` holds neither the secret, nor `/etc/passwd`, nor the home's path
    /// (outside backquotes: there a message quotes the client's own input, which may hold it).
    #[track_caller]
    fn assert_clean(&self, what: &str, answer: &Answer) {
        let body = String::from_utf8_lossy(&answer.body);
        assert!(!body.contains(SECRET), "{what}: the secret was served");
        assert!(
            !body.contains("root:x:0:0"),
            "{what}: /etc/passwd was served"
        );
        let unquoted: String = body.split('`').step_by(2).collect();
        assert!(
            !unquoted.contains(self.home.path().to_str().unwrap()),
            "{what}: a path in the answer: {body}"
        );
    }

    /// Asserts that the stack still serves, and that nothing was restarted: `is` has the pid
    /// it started with, every component is RUNNING with 0 restarts.
    #[track_caller]
    fn assert_still_serving(&self) {
        let ok = self.get("/is/image/sample/photo?wid=50&cache=off");
        assert_eq!(ok.status, 200, "{}", ok.text());
        assert_eq!(
            self.home.pid_of("is"),
            Some(self.is_pid),
            "is was restarted"
        );
        for c in self.home.status_json()["components"].as_array().unwrap() {
            assert_eq!(c["restarts"], 0, "{c}");
            assert_eq!(c["state"], "RUNNING", "{c}");
        }
    }

    /// The peak resident memory of `is` so far, in KiB (`VmHWM`).
    fn is_peak_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.is_pid)).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }
}

/// `image` encoded in `format`.
fn encode(image: &image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image
        .write_to(&mut out, format)
        .unwrap_or_else(|e| panic!("encoding {format:?}: {e}"));
    out.into_inner()
}

/// Valid sources of every format the Image Server decodes, small: `(name, extension, bytes)`.
fn valid_sources(home: &Path) -> Vec<(&'static str, &'static str, Vec<u8>)> {
    use image::ImageFormat::{Gif, Jpeg, Png, Tiff, WebP};
    let rgba = image::RgbaImage::from_fn(64, 48, |x, y| {
        image::Rgba([(x * 4) as u8, (y * 5) as u8, 128, (x * 3 + y) as u8])
    });
    let rgba = image::DynamicImage::ImageRgba8(rgba);
    let rgb = image::DynamicImage::ImageRgb8(rgba.to_rgb8());
    let svg = fs::read(home.join("images/sample/drawing.svg")).expect("the sample drawing");
    let photo = fs::read(home.join("images/sample/photo.jpg")).expect("the sample photo");
    vec![
        ("jpeg", "jpg", encode(&rgb, Jpeg)),
        ("photo", "jpg", photo),
        ("png", "png", encode(&rgb, Png)),
        ("png-alpha", "png", encode(&rgba, Png)),
        ("gif", "gif", encode(&rgba, Gif)),
        ("webp", "webp", encode(&rgb, WebP)),
        ("webp-alpha", "webp", encode(&rgba, WebP)),
        ("tiff", "tif", encode(&rgb, Tiff)),
        ("tiff-alpha", "tif", encode(&rgba, Tiff)),
        ("svg", "svg", svg),
    ]
}

/// Where a file of `len` bytes is cut: every byte of the headers, then quarters. The last 16
/// bytes are left alone: they are trailers (PNG's `IEND`, GIF's trailer, WebP's padding)
/// that some decoders do not need, and a file cut there may still decode.
fn cuts(len: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = [0, 1, 2, 3, 4, 6, 8, 11, 12, 16, 20, 24, 26, 30, 33, 48, 64]
        .into_iter()
        .chain([len / 4, len / 2, 3 * len / 4, len - 16])
        .filter(|&c| c + 16 <= len)
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// A small deterministic generator (xorshift64*), so that the "random" damage is the same on
/// every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// `bytes` with a few bytes damaged, half of the time in the first 200 (the headers).
fn damaged(bytes: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for _ in 0..[1, 2, 4, 8, 32][rng.below(5)] {
        let at = if rng.below(2) == 0 {
            rng.below(out.len())
        } else {
            rng.below(out.len().min(200))
        };
        out[at] = match rng.below(3) {
            0 => out[at] ^ (1 << rng.below(8)),
            1 => [0, 0xFF, 0x7F, 0x80][rng.below(4)],
            _ => rng.next() as u8,
        };
    }
    out
}

/// Whether a 403 message is one of the clear refusals of a bad source.
fn is_source_refusal(text: &str, object: &str) -> bool {
    text.starts_with(&format!("cannot decode `{object}`: "))
        || text.starts_with("too large: ")
        || text.starts_with("invalid SVG: ")
}

#[test]
fn truncated_and_corrupt_files_of_every_format_get_clear_errors() {
    let h = Hostile::start();
    let sources = valid_sources(h.home.path());
    for (name, ext, bytes) in &sources {
        // The source itself is fine.
        fs::write(h.bad.join(format!("{name}.{ext}")), bytes).unwrap();
        let answer = h.get(&format!("/is/image/bad/{name}.{ext}?wid=40&cache=off"));
        assert_eq!(answer.status, 200, "{name}: {}", answer.text());

        for cut in cuts(bytes.len()) {
            let file = format!("trunc-{name}-{cut}.{ext}");
            fs::write(h.bad.join(&file), &bytes[..cut]).unwrap();
            let object = format!("bad/{file}");
            let answer = h.get(&format!("/is/image/{object}?wid=40&cache=off"));
            let text = answer.text();
            // An SVG cut inside its root element no longer parses; one cut before it is not
            // recognised as SVG at all.
            let svg = *ext == "svg" && text.starts_with("invalid SVG: ");
            let starts = if svg {
                "invalid SVG: ".to_owned()
            } else {
                format!("cannot decode `{object}`: ")
            };
            h.assert_refused(&object, &answer, 403, &starts);
        }
    }

    // Damage aimed at each format's header.
    let source = |name: &str| &sources.iter().find(|s| s.0 == name).unwrap().2;
    let png = source("png");
    let tiff_ifd_loop = {
        let mut t = source("tiff").clone();
        let ifd = u32::from_le_bytes(t[4..8].try_into().unwrap()) as usize;
        let count = u16::from_le_bytes(t[ifd..ifd + 2].try_into().unwrap()) as usize;
        let next = ifd + 2 + 12 * count;
        t[next..next + 4].copy_from_slice(&(ifd as u32).to_le_bytes());
        t
    };
    let mut bad_crc = png.clone();
    bad_crc[29] ^= 0xFF;
    let mut chunk_2g = png.clone();
    chunk_2g[33..37].copy_from_slice(&0x7FFF_FFFFu32.to_be_bytes());
    let mut no_components = source("jpeg").clone();
    let sof = no_components
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("a baseline JPEG");
    no_components[sof + 9] = 0;
    let gif_lzw_13 = [
        gif_declaring(16, 16),
        vec![0x2C, 0, 0, 0, 0, 16, 0, 16, 0, 0],
        vec![13, 2, 0xFF, 0xFF, 0, 0x3B],
    ]
    .concat();
    let webp = source("webp");
    let webp_garbage = [&webp[..21], &[0xA5u8; 200][..]].concat();
    for (file, bytes, starts) in [
        ("empty.png", Vec::new(), "unknown image format"),
        ("one-byte.jpg", vec![0xFF], "unknown image format"),
        (
            "text.jpg",
            b"hello, world\n".to_vec(),
            "unknown image format",
        ),
        (
            "html.svg",
            b"<html><body>no svg</body></html>".to_vec(),
            "unknown image format",
        ),
        ("png-bad-ihdr-crc.png", bad_crc, ""),
        ("png-chunk-of-2-gib.png", chunk_2g, ""),
        (
            "png-bad-depth.png",
            png_file(16, 16, 7, 2, &zlib_zeros(16 * 49), &[]),
            "",
        ),
        ("jpeg-no-components.jpg", no_components, ""),
        ("gif-lzw-code-size-13.gif", gif_lzw_13, ""),
        (
            "gif-no-frame.gif",
            [gif_declaring(16, 16), vec![0x3B]].concat(),
            "",
        ),
        ("webp-garbage.webp", webp_garbage, ""),
        ("tiff-ifd-loop.tif", tiff_ifd_loop, ""),
        (
            "tiff-bad-compression.tif",
            tiff_file(8, 8, 50000, &[0; 64]),
            "",
        ),
        (
            "tiff-strip-past-the-end.tif",
            tiff_file(64, 64, 1, &[0; 4096])[..200].to_vec(),
            "",
        ),
    ] {
        fs::write(h.bad.join(file), &bytes).unwrap();
        let object = format!("bad/{file}");
        let answer = h.get(&format!("/is/image/{object}?wid=40&cache=off"));
        h.assert_refused(
            &object,
            &answer,
            403,
            &format!("cannot decode `{object}`: {starts}"),
        );
    }

    // Random damage (the same on every run): a damaged file may still decode, else it is
    // refused clearly.
    let mut rng = Rng(0x5EED_1234_ABCD_0007);
    let mut seen = [0usize; 2];
    for (name, ext, bytes) in &sources {
        for n in 0..24 {
            let file = format!("flip-{name}-{n}.{ext}");
            fs::write(h.bad.join(&file), damaged(bytes, &mut rng)).unwrap();
            let object = format!("bad/{file}");
            let answer = h.get(&format!("/is/image/{object}?wid=40&cache=off"));
            match answer.status {
                200 => seen[0] += 1,
                403 => {
                    seen[1] += 1;
                    assert!(
                        is_source_refusal(&answer.text(), &object),
                        "{object}: {}",
                        answer.text()
                    );
                    h.assert_refused(&object, &answer, 403, "");
                }
                other => panic!("{object}: {other} {}", answer.text()),
            }
            h.assert_clean(&object, &answer);
        }
    }
    assert!(seen[1] > 0, "some damage is refused: {seen:?}");

    // With the default catalog (ErrorDetail=0) the message is the title alone.
    fs::write(
        h.home.path().join("images/cut.png"),
        &source("png-alpha")[..100],
    )
    .unwrap();
    let answer = h.get("/is/image/cut.png?cache=off");
    assert_eq!(answer.status, 403);
    assert_eq!(answer.text(), "cannot decode `cut.png`");
    h.assert_still_serving();
}

#[test]
fn decompression_bombs_are_refused_before_decoding_or_stay_within_the_limits() {
    let h = Hostile::start();
    // Sizes declared in the header, every format: refused from the header, nothing decoded.
    let jpeg = encode(
        &image::DynamicImage::ImageRgb8(image::RgbImage::new(16, 16)),
        image::ImageFormat::Jpeg,
    );
    for (file, bytes, (w, hgt)) in [
        (
            "png-100000x100000.png",
            png_declaring(100_000, 100_000),
            (100_000u64, 100_000u64),
        ),
        (
            "png-2g-wide.png",
            png_declaring(0x7FFF_FFFF, 1),
            (0x7FFF_FFFF, 1),
        ),
        (
            "jpeg-65535x65535.jpg",
            jpeg_sized(&jpeg, 65535, 65535),
            (65535, 65535),
        ),
        (
            "gif-65535x65535.gif",
            [gif_declaring(65535, 65535), vec![0x3B]].concat(),
            (65535, 65535),
        ),
        (
            "webp-16384x16384.webp",
            webp_declaring(16384, 16384),
            (16384, 16384),
        ),
        (
            "tiff-100000x100000.tif",
            tiff_file(100_000, 100_000, 1, &[]),
            (100_000, 100_000),
        ),
        (
            "tiff-4g-wide.tif",
            tiff_file(u32::MAX, 1, 1, &[]),
            (u64::from(u32::MAX), 1),
        ),
    ] {
        fs::write(h.bad.join(file), &bytes).unwrap();
        let object = format!("bad/{file}");
        let answer = h.get(&format!("/is/image/{object}?wid=100&cache=off"));
        h.assert_refused(
            &object,
            &answer,
            403,
            &format!("too large: source of {w}×{hgt} pixels exceeds MaxSourcePix 100000000"),
        );
        assert!(
            answer.took < Duration::from_secs(2),
            "{object}: {:?}",
            answer.took
        );
    }
    // A PNG wider than its format allows is corrupt.
    fs::write(h.bad.join("png-4g.png"), png_declaring(u32::MAX, u32::MAX)).unwrap();
    let answer = h.get("/is/image/bad/png-4g.png?cache=off");
    h.assert_refused(
        "png-4g",
        &answer,
        403,
        "cannot decode `bad/png-4g.png`: corrupt PNG header",
    );
    // Nothing was allocated for them: 10^10 pixels would be 40 GB.
    let peak = h.is_peak_kib();
    assert!(
        peak < 256 * 1024,
        "is peaked at {peak} KiB after header bombs"
    );

    // Small files that decode to the limit (catalog `small`: MaxSourcePix 4000000): a deflate
    // bomb of 2000×2000 RGBA is served, one pixel row more is refused before decoding.
    let zeros =
        |w: u32, hgt: u32, channels: usize| zlib_zeros((1 + w as usize * channels) * hgt as usize);
    fs::write(
        h.small.join("rgba-2000x2000.png"),
        png_file(2000, 2000, 8, 6, &zeros(2000, 2000, 4), &[]),
    )
    .unwrap();
    fs::write(
        h.small.join("rgba-2000x2001.png"),
        png_file(2000, 2001, 8, 6, &zeros(2000, 2001, 4), &[]),
    )
    .unwrap();
    fs::write(
        h.small.join("grey-2000x2000.tif"),
        tiff_file(2000, 2000, 8, &zlib_zeros(2000 * 2000)),
    )
    .unwrap();
    let len = fs::metadata(h.small.join("rgba-2000x2000.png"))
        .unwrap()
        .len();
    assert!(
        len < 200_000,
        "a bomb is small: {len} bytes for 16 MB of pixels"
    );
    for object in ["small/rgba-2000x2000.png", "small/grey-2000x2000.tif"] {
        let answer = h.get(&format!("/is/image/{object}?wid=100&fmt=png&cache=off"));
        assert_eq!(answer.status, 200, "{object}: {}", answer.text());
        assert_eq!(decode(&answer).width(), 100);
    }
    let answer = h.get("/is/image/small/rgba-2000x2001.png?wid=100&cache=off");
    h.assert_refused(
        "2000x2001",
        &answer,
        403,
        "too large: source of 2000×2001 pixels exceeds MaxSourcePix 4000000",
    );

    // Chunks that inflate to 1 GiB beside a 16×16 image, and an image whose data inflates
    // to far more than its size: never inflated in full.
    let big = zlib_zeros(1 << 30);
    let mut ztxt = b"bomb\0\0".to_vec();
    ztxt.extend(&big);
    let mut iccp = b"icc\0\0".to_vec();
    iccp.extend(&big);
    let small_idat = zlib_zeros(16 * 17);
    for (file, bytes) in [
        (
            "ztxt-1g.png",
            png_file(16, 16, 8, 0, &small_idat, &[(*b"zTXt", ztxt)]),
        ),
        (
            "iccp-1g.png",
            png_file(16, 16, 8, 0, &small_idat, &[(*b"iCCP", iccp)]),
        ),
        ("idat-1g.png", png_file(16, 16, 8, 0, &big, &[])),
    ] {
        fs::write(h.bad.join(file), &bytes).unwrap();
        let object = format!("bad/{file}");
        let answer = h.get(&format!("/is/image/{object}?wid=16&cache=off"));
        match answer.status {
            200 => {}
            403 => h.assert_refused(
                &object,
                &answer,
                403,
                &format!("cannot decode `{object}`: "),
            ),
            other => panic!("{object}: {other} {}", answer.text()),
        }
    }
    // A GIF frame far larger than its 8×8 screen: the decoder's memory limit refuses it.
    let gif = [
        gif_declaring(8, 8),
        vec![
            0x2C, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x80, 0, 0, 0, 0xFF, 0xFF, 0xFF,
        ],
        vec![2, 2, 0x4C, 0x01, 0, 0x3B],
    ]
    .concat();
    fs::write(h.bad.join("gif-frame-65535.gif"), gif).unwrap();
    let answer = h.get("/is/image/bad/gif-frame-65535.gif?wid=8&cache=off");
    h.assert_refused(
        "gif frame",
        &answer,
        403,
        "cannot decode `bad/gif-frame-65535.gif`: ",
    );

    // SVG: an absurd intrinsic size, and a sane one asked for at more than MaxSvgPix.
    fs::write(
        h.bad.join("huge.svg"),
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="1e9" height="1e9"><rect width="9" height="9"/></svg>"#,
    )
    .unwrap();
    let answer = h.get("/is/image/bad/huge.svg?wid=100&cache=off");
    h.assert_refused(
        "huge svg",
        &answer,
        403,
        "invalid SVG: intrinsic size 1000000000×1000000000 is out of range",
    );
    fs::write(
        h.bad.join("big.svg"),
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="6000" height="6000"><rect width="9" height="9"/></svg>"#,
    )
    .unwrap();
    let answer = h.get("/is/image/bad/big.svg?scl=1&cache=off");
    h.assert_refused("big svg", &answer, 403, "too large: ");

    // 16 MB of pixels and its premultiplied copy; the iCCP chunk is inflated up to the
    // decoder's allocation budget (64 MiB and its buffers, about 100 MB): far from the 1 GiB
    // each chunk holds.
    let peak = h.is_peak_kib();
    assert!(peak < 256 * 1024, "is peaked at {peak} KiB");
    h.assert_still_serving();
}

#[test]
fn hostile_svgs_get_clear_errors_and_nothing_outside_the_document_is_read() {
    let h = Hostile::start();
    // A listener of ours: no document may make the stack connect to it.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let counter = {
        let (connections, stop) = (connections.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok(_) => {
                        connections.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        })
    };

    let secret_png = h.secret.join("secret.png");
    let secret_png = secret_png.to_str().unwrap();
    let open = r#"<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="100" height="100">"#;
    let image = |attr: &str, href: &str| {
        format!(r#"{open}<image width="100" height="100" {attr}="{href}"/></svg>"#)
    };
    let http = format!("http://127.0.0.1:{port}/x.png");
    let external = "invalid SVG: an image links to `";
    let laughs = {
        let mut dtd = String::from(r#"<!ENTITY l0 "lollollollollollollollollollol">"#);
        for i in 1..10 {
            dtd += &format!(r#"<!ENTITY l{i} "{}">"#, format!("&l{};", i - 1).repeat(10));
        }
        format!(r#"<?xml version="1.0"?><!DOCTYPE svg [{dtd}]>{open}<text>&l9;</text></svg>"#)
    };
    let quadratic = format!(
        r#"<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY q "{}">]>{open}<text>{}</text></svg>"#,
        "x".repeat(50_000),
        "&q;".repeat(100)
    );
    let entities = "too large: SVG entities expand to more than 1048576 bytes";
    for (file, svg, status, starts) in [
        (
            "file-url.svg",
            image("href", &format!("file://{secret_png}")),
            403,
            external,
        ),
        ("path.svg", image("xlink:href", secret_png), 403, external),
        (
            "relative.svg",
            image("href", "../../secret/secret.png"),
            403,
            external,
        ),
        (
            "passwd.svg",
            image("href", "file:///etc/passwd"),
            403,
            external,
        ),
        ("http.svg", image("href", &http), 403, external),
        ("xlink-http.svg", image("xlink:href", &http), 403, external),
        (
            "feimage.svg",
            format!(
                r#"{open}<filter id="f"><feImage href="{http}"/></filter><rect width="9" height="9" filter="url(#f)"/></svg>"#
            ),
            403,
            external,
        ),
        (
            "xxe-file.svg",
            format!(
                r#"<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "file://{secret_png}">]>{open}<text>&x;</text></svg>"#
            ),
            403,
            "invalid SVG: ",
        ),
        (
            "xxe-http.svg",
            format!(
                r#"<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "{http}">]>{open}<text>&x;</text></svg>"#
            ),
            403,
            "invalid SVG: ",
        ),
        ("billion-laughs.svg", laughs, 403, entities),
        ("quadratic.svg", quadratic, 403, entities),
        (
            "parameter-entity.svg",
            format!(r#"<!DOCTYPE svg [<!ENTITY % p SYSTEM "{http}"> %p;]>{open}</svg>"#),
            403,
            "invalid SVG: parameter entities are not supported",
        ),
        (
            "entity-loop.svg",
            format!(
                r#"<!DOCTYPE svg [<!ENTITY a "&b;"><!ENTITY b "&a;">]>{open}<text>&a;</text></svg>"#
            ),
            403,
            "invalid SVG: entity references nest too deeply or loop",
        ),
        (
            "deep.svg",
            format!("{open}{}{}</svg>", "<g>".repeat(5000), "</g>".repeat(5000)),
            403,
            "invalid SVG: ",
        ),
        // Links that usvg never follows: drawn without them.
        (
            "use-external.svg",
            format!(
                r##"{open}<use href="{http}#a"/><use xlink:href="file:///etc/passwd#x"/><rect width="9" height="9"/></svg>"##
            ),
            200,
            "",
        ),
        (
            "css-import.svg",
            format!(
                r#"{open}<style>@import url({http}); rect {{ fill: url({http}#p) }}</style><rect width="9" height="9"/></svg>"#
            ),
            200,
            "",
        ),
        (
            "stylesheet.svg",
            format!(r#"<?xml-stylesheet href="{http}"?>{open}<rect width="9" height="9"/></svg>"#),
            200,
            "",
        ),
    ] {
        fs::write(h.bad.join(file), &svg).unwrap();
        let object = format!("bad/{file}");
        let answer = h.get(&format!("/is/image/{object}?wid=50&fmt=png&cache=off"));
        if status == 200 {
            assert_eq!(answer.status, 200, "{object}: {}", answer.text());
            h.assert_clean(&object, &answer);
        } else {
            h.assert_refused(&object, &answer, status, starts);
        }
    }
    // The gzip form (svgz) is not recognised as an SVG; with the default catalog
    // (ErrorDetail=0), an external link gets the title alone.
    fs::write(
        h.bad.join("gzip.svg"),
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03",
    )
    .unwrap();
    let answer = h.get("/is/image/bad/gzip.svg?cache=off");
    h.assert_refused(
        "svgz",
        &answer,
        403,
        "cannot decode `bad/gzip.svg`: unknown image format",
    );
    fs::write(
        h.home.path().join("images/linked.svg"),
        image("href", &http),
    )
    .unwrap();
    let answer = h.get("/is/image/linked.svg?cache=off");
    assert_eq!(
        (answer.status, answer.text()),
        (403, "invalid SVG".to_owned())
    );

    stop.store(true, Ordering::Relaxed);
    counter.join().unwrap();
    assert_eq!(
        connections.load(Ordering::Relaxed),
        0,
        "the stack connected to a link"
    );
    let drawing = h.get("/is/image/sample/drawing?wid=100&fmt=png&cache=off");
    assert_eq!(drawing.status, 200, "{}", drawing.text());
    h.assert_still_serving();
}

#[test]
fn path_traversal_in_every_encoding_and_links_out_of_the_root_are_refused() {
    let h = Hostile::start();
    let secret = h.secret.to_str().unwrap().to_owned();
    let catalog = h.home.path().join("catalog");
    for (link, target) in [
        ("link-file.png", "../../secret/secret.png".to_owned()),
        ("link-abs.png", format!("{secret}/secret.png")),
        ("link-text.png", format!("{secret}/secret.txt")),
        ("link-dir", secret.clone()),
        ("link-passwd.png", "/etc/passwd".to_owned()),
        ("link-root", "/".to_owned()),
        ("link-catalog", catalog.to_str().unwrap().to_owned()),
        ("link-proc.png", "/proc/self/environ".to_owned()),
        ("link-chain.png", "link-chain-2.png".to_owned()),
        ("link-chain-2.png", "../../secret/secret.png".to_owned()),
        ("link-loop-a.png", "link-loop-b.png".to_owned()),
        ("link-loop-b.png", "link-loop-a.png".to_owned()),
        ("link-dangling.png", "/nonexistent/secret.png".to_owned()),
        ("link-inside.png", "../sample/logo.png".to_owned()),
    ] {
        std::os::unix::fs::symlink(target, h.bad.join(link)).unwrap();
    }
    nix::unistd::mkfifo(
        &h.bad.join("fifo.png"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();

    // Refused by the URL parser of ps: 403 naming the object as written.
    let absolute = format!("/{}/secret.png", secret.trim_start_matches('/'));
    let encoded_absolute = format!("{}%2fsecret.png", secret.replace('/', "%2f"));
    for object in [
        "../secret/secret.png",
        "sample/../../secret/secret.png",
        "%2e%2e/secret/secret.png",
        "%2E%2E/secret/secret.png",
        "%2e%2E/secret/secret.png",
        ".%2e/secret/secret.png",
        "%2e./secret/secret.png",
        "..%2fsecret%2fsecret.png",
        "..%2Fsecret%2Fsecret.png",
        "bad/..%2f..%2fsecret%2fsecret.png",
        "%2e%2e%2fsecret%2fsecret.png",
        "%c0%ae%c0%ae/secret/secret.png",
        "..%5csecret%5csecret.png",
        "%2e%2e%5csecret%5csecret.png",
        "..%5Csecret.png",
        absolute.as_str(),
        encoded_absolute.as_str(),
        "/etc/passwd",
        "%2fetc%2fpasswd",
        "%2Fetc%2Fpasswd",
        "file:///etc/passwd",
        "sample/photo.jpg%00.png",
        "%00/../secret/secret.png",
        "sample%00/photo",
        "sample%0a/photo",
        "./sample/photo",
        "sample//photo",
        "sample/",
        "%zz/secret",
        "%2",
    ] {
        let answer = h.get(&format!("/is/image/{object}?cache=off"));
        h.assert_refused(
            object,
            &answer,
            403,
            &format!("object `{object}` is not allowed"),
        );
    }
    // Decoded once only: a double encoding is a name like any other, which does not exist.
    for object in [
        "%252e%252e/secret/secret.png",
        "%252e%252e%252fsecret%252fsecret.png",
        "..%252fsecret%252fsecret.png",
        "~/secret/secret.png",
    ] {
        let decoded = object.replace("%25", "%");
        let answer = h.get(&format!("/is/image/{object}?cache=off"));
        h.assert_refused(
            object,
            &answer,
            404,
            &format!("object `{decoded}` not found"),
        );
    }
    // Links out of the root are refused by is after resolving them, whatever their form.
    for object in [
        "bad/link-file.png",
        "bad/link-abs.png",
        "bad/link-text.png",
        "bad/link-dir/secret.png",
        "bad/link-passwd.png",
        "bad/link-root/etc/passwd",
        "bad/link-catalog/default.ini",
        "bad/link-proc.png",
        "bad/link-chain.png",
    ] {
        for query in ["wid=50", "req=imageprops", "req=exists"] {
            let answer = h.get(&format!("/is/image/{object}?{query}&cache=off"));
            h.assert_refused(
                object,
                &answer,
                403,
                &format!("object `{object}` is not allowed"),
            );
        }
    }
    // Loops, dangling links and a FIFO are objects that do not exist (and nothing hangs).
    for object in [
        "bad/link-loop-a.png",
        "bad/link-dangling.png",
        "bad/fifo.png",
    ] {
        let answer = h.get(&format!("/is/image/{object}?cache=off"));
        h.assert_refused(
            object,
            &answer,
            404,
            &format!("object `{object}` not found"),
        );
    }
    // `defaultImage=` is checked like the object; a link out of the root as the default too.
    for value in [
        "../secret/secret.png",
        "%2e%2e%2fsecret%2fsecret.png",
        "/etc/passwd",
        "..%5csecret.png",
        "sample/%00",
    ] {
        let answer = h.get(&format!(
            "/is/image/nothing/here?defaultImage={value}&cache=off"
        ));
        h.assert_refused(value, &answer, 403, "invalid value `");
        assert!(answer
            .text()
            .contains("for `defaultImage`: the object path is not allowed"));
    }
    let answer = h.get("/is/image/nothing/here?defaultImage=bad/link-file.png&cache=off");
    h.assert_refused(
        "default link",
        &answer,
        403,
        "object `bad/link-file.png` is not allowed",
    );

    // Raw request lines that a client library would have cleaned up.
    for (line, status, starts) in [
        (
            "GET /is/image/..\\secret\\secret.png HTTP/1.1",
            403,
            "object `..\\secret\\secret.png` is not allowed",
        ),
        (
            "GET http://127.0.0.1/is/image/../secret/secret.png HTTP/1.1",
            403,
            "object `../secret/secret.png` is not allowed",
        ),
        (
            "GET /is/../is/image/../secret/secret.png HTTP/1.1",
            404,
            "not found",
        ),
    ] {
        let answer = raw_request(h.ps, line.as_bytes());
        h.assert_refused(line, &answer, status, starts);
    }
    // A NUL byte in the request line: hyper refuses the request head itself.
    let answer = raw_request(h.ps, b"GET /is/image/sample/photo\0.jpg HTTP/1.1");
    assert_eq!(answer.status, 400, "{}", answer.text());

    // A link that stays inside the root is served.
    let inside = h.get("/is/image/bad/link-inside.png?wid=32&fmt=png&cache=off");
    assert_eq!(inside.status, 200, "{}", inside.text());
    assert_eq!(decode(&inside).width(), 32);
    h.assert_still_serving();
}

/// `line` and a minimal head sent as they are, without any client-side cleaning.
fn raw_request(port: u16, line: &[u8]) -> Answer {
    let started = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connecting to ps");
    stream.set_read_timeout(Some(REQUEST_TIMEOUT)).unwrap();
    stream
        .write_all(&[line, b"\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"].concat())
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("reading the answer");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers: {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    Answer {
        status,
        headers: lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect(),
        body: raw[split + 4..].to_vec(),
        took: started.elapsed(),
    }
}

/// A PNG chunk: length, kind, data, CRC.
fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut crc_input = kind.to_vec();
    crc_input.extend(data);
    let len = u32::try_from(data.len()).expect("a chunk under 4 GiB");
    [
        &len.to_be_bytes()[..],
        kind,
        data,
        &crc32(&crc_input).to_be_bytes(),
    ]
    .concat()
}

/// A PNG of `w`×`h`, bit depth `depth`, colour type `color`, with `idat` as its image data
/// and `extra` chunks before it.
fn png_file(
    w: u32,
    h: u32,
    depth: u8,
    color: u8,
    idat: &[u8],
    extra: &[([u8; 4], Vec<u8>)],
) -> Vec<u8> {
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([depth, color, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(png_chunk(b"IHDR", &ihdr));
    for (kind, data) in extra {
        out.extend(png_chunk(kind, data));
    }
    out.extend(png_chunk(b"IDAT", idat));
    out.extend(png_chunk(b"IEND", b""));
    out
}

/// A GIF89a header and logical screen of `w`×`h`, no colour table.
fn gif_declaring(w: u16, h: u16) -> Vec<u8> {
    [
        &b"GIF89a"[..],
        &w.to_le_bytes(),
        &h.to_le_bytes(),
        &[0, 0, 0],
    ]
    .concat()
}

/// A WebP (VP8X) header declaring `w`×`h`, and nothing else.
fn webp_declaring(w: u32, h: u32) -> Vec<u8> {
    let mut body = b"VP8X".to_vec();
    body.extend(10u32.to_le_bytes());
    body.extend([0x10, 0, 0, 0]);
    body.extend(&(w - 1).to_le_bytes()[..3]);
    body.extend(&(h - 1).to_le_bytes()[..3]);
    [
        &b"RIFF"[..],
        &(4 + body.len() as u32).to_le_bytes(),
        b"WEBP",
        &body,
    ]
    .concat()
}

/// `jpeg` with the size in its frame header replaced.
fn jpeg_sized(jpeg: &[u8], w: u16, h: u16) -> Vec<u8> {
    let mut out = jpeg.to_vec();
    let sof = out
        .windows(2)
        .position(|m| m == [0xFF, 0xC0])
        .expect("a baseline JPEG");
    out[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    out[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    out
}

/// A little-endian, 8-bit grey TIFF of `w`×`h` with one strip, `strip`, compressed with
/// `compression` (1 none, 8 deflate), placed after the directory.
fn tiff_file(w: u32, h: u32, compression: u16, strip: &[u8]) -> Vec<u8> {
    const ENTRIES: u16 = 9;
    let strip_at = 8 + 2 + 12 * u32::from(ENTRIES) + 4;
    let short = |v: u16| u32::from(v);
    let entries: [(u16, u16, u32); ENTRIES as usize] = [
        (256, 4, w),
        (257, 4, h),
        (258, 3, 8),
        (259, 3, short(compression)),
        (262, 3, 1),
        (273, 4, strip_at),
        (277, 3, 1),
        (278, 4, h),
        (279, 4, strip.len() as u32),
    ];
    let mut out = b"II*\0".to_vec();
    out.extend(8u32.to_le_bytes());
    out.extend(ENTRIES.to_le_bytes());
    for (tag, kind, value) in entries {
        out.extend(tag.to_le_bytes());
        out.extend(kind.to_le_bytes());
        out.extend(1u32.to_le_bytes());
        if kind == 3 {
            out.extend((value as u16).to_le_bytes());
            out.extend([0, 0]);
        } else {
            out.extend(value.to_le_bytes());
        }
    }
    out.extend(0u32.to_le_bytes());
    out.extend(strip);
    out
}

/// A zlib stream of `len` zero bytes, without ever holding them: one fixed-Huffman block of a
/// literal 0 and then back-references of 258 bytes at distance 1 (13 bits for 258 bytes, so
/// 1 GiB takes about 7 MB).
fn zlib_zeros(len: usize) -> Vec<u8> {
    struct Bits {
        out: Vec<u8>,
        acc: u64,
        n: u32,
    }
    impl Bits {
        /// `count` bits of `value`, least significant first.
        fn put(&mut self, value: u64, count: u32) {
            self.acc |= value << self.n;
            self.n += count;
            while self.n >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.n -= 8;
            }
        }
        /// A Huffman code of `count` bits, most significant first.
        fn code(&mut self, code: u64, count: u32) {
            let reversed = (0..count).fold(0, |r, i| (r << 1) | ((code >> i) & 1));
            self.put(reversed, count);
        }
    }
    let mut bits = Bits {
        out: vec![0x78, 0x01],
        acc: 0,
        n: 0,
    };
    bits.put(1, 1); // the last block
    bits.put(1, 2); // fixed Huffman codes
    let mut left = len;
    if left > 0 {
        bits.code(0x30, 8); // literal 0
        left -= 1;
    }
    while left >= 258 {
        bits.code(0xC5, 8); // length 258 (code 285)
        bits.code(0, 5); // distance 1 (code 0)
        left -= 258;
    }
    for _ in 0..left {
        bits.code(0x30, 8);
    }
    bits.code(0, 7); // end of block (256)
    if bits.n > 0 {
        bits.put(0, 8 - bits.n);
    }
    let mut out = bits.out;
    // Adler-32 of `len` zeros: a = 1, b = len (mod 65521).
    let b = (len % 65521) as u32;
    out.extend(((b << 16) | 1).to_be_bytes());
    out
}

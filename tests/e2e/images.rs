//! The image stack through the supervisor: the README's first request, the samples, bad
//! sources, and what a client sees while the Image Server is killed under traffic.

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{free_port, wait_for, TestHome, SETTLE, SUPERVISOR};
use crate::http::{self, Answer};

const ALL: [&str; 3] = ["is", "svg", "ps"];
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// A home running the real stack on ephemeral ports; returns it with the port of `ps`.
fn stack() -> (TestHome, u16) {
    stack_with_ps("")
}

/// [`stack`], with `ps_extra` TOML lines in the table of `ps`.
fn stack_with_ps(ps_extra: &str) -> (TestHome, u16) {
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

#[test]
fn killing_the_image_server_under_traffic_gives_fast_503s_then_200s_again() {
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

    assert!(seen.len() > 5, "traffic flowed: {} requests", seen.len());
    for (_, status, took) in &seen {
        assert!(
            *status == 200 || *status == 503,
            "only 200 or 503, got {status}"
        );
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

#[test]
fn a_repeated_request_is_a_cache_hit_and_is_served_while_the_image_server_restarts() {
    // A long check interval: the hit below must not depend on when the samples were written.
    let (home, ps) = stack_with_ps(r#"env = { IMAGESERVING_CACHE_CHECK = "1h" }"#);
    let access_log = home.path().join("logs/access.log");
    let cache_uses = || -> Vec<String> {
        fs::read_to_string(&access_log)
            .unwrap_or_default()
            .lines()
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
    let last: Vec<&str> = line.lines().last().unwrap().split(' ').collect();
    assert_eq!(last.len(), 8, "{line}");
    assert_eq!(&last[2..5], ["GET", path, "200"]);
}

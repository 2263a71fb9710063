//! Sample content for a fresh home, so that the protocol can be tried at once:
//! `/is/image/sample/photo?wid=300&fmt=webp`.
//!
//! [`provision`] creates, when absent:
//!
//! ```text
//! catalog/default.ini         every attribute at its built-in default, commented
//! catalog/sample.ini          ids photo, logo, drawing
//! images/sample/photo.jpg     2000×1500 landscape, generated: gradients, shapes, grain (JPEG q85)
//! images/sample/logo.png      256×256 RGBA: an emblem on transparency
//! images/sample/drawing.svg   a small hand-written SVG 1.1 (shapes, gradients, no text)
//! ```
//!
//! It never overwrites: each file is written to a temporary name, then hard-linked to its final
//! name, which fails if that name exists (even when another process creates it meanwhile), so an
//! interrupted run leaves no half-written sample behind and an edited catalog is never replaced.
//!
//! When: once per start of the Server Supervisor. The daemon, which maps no image code, writes
//! `run/samples.due` ([`Home::samples_due`]) when it starts; the Image Server takes it when it
//! starts, before it loads the catalogs and opens its port ([`provision_if_due`]), so `start`
//! returning with `is` running means the samples are served. A sample the operator deleted is
//! created again by the next start of the supervisor, not by a restart of `is`.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder as _};

use crate::home::Home;
use crate::imaging::catalog::{Attributes, ResMode, NEVER_EXPIRES};

/// Width of the sample photo.
pub const PHOTO_WIDTH: u32 = 2000;
/// Height of the sample photo.
pub const PHOTO_HEIGHT: u32 = 1500;
/// Side of the square sample logo.
pub const LOGO_SIZE: u32 = 256;
/// JPEG quality of the sample photo.
const PHOTO_QUALITY: u8 = 85;

/// The sample drawing: a small landscape in shapes.
const DRAWING_SVG: &str = r##"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="400" height="300" viewBox="0 0 400 300">
  <defs>
    <linearGradient id="sky" x1="0" y1="0" x2="0" y2="1">
      <stop offset="0" stop-color="#1e3c72"/>
      <stop offset="1" stop-color="#8fb8e8"/>
    </linearGradient>
    <radialGradient id="sun" cx="0.5" cy="0.5" r="0.5">
      <stop offset="0" stop-color="#fff6c8"/>
      <stop offset="0.6" stop-color="#ffd34d"/>
      <stop offset="1" stop-color="#ffb000" stop-opacity="0"/>
    </radialGradient>
  </defs>
  <rect width="400" height="300" fill="url(#sky)"/>
  <circle cx="300" cy="80" r="48" fill="url(#sun)"/>
  <path d="M0 200 L70 120 L130 175 L210 90 L300 185 L350 150 L400 190 L400 300 L0 300 Z"
        fill="#4a5a78"/>
  <path d="M0 240 Q100 190 200 230 T400 220 L400 300 L0 300 Z" fill="#3f7d3a"/>
  <g fill="#24461f" stroke="#1a3316" stroke-width="2">
    <polygon points="60,250 80,200 100,250"/>
    <polygon points="95,258 118,196 141,258"/>
    <polygon points="330,245 348,205 366,245"/>
  </g>
  <ellipse cx="220" cy="270" rx="70" ry="14" fill="#6fa8dc" opacity="0.8"/>
  <rect x="8" y="8" width="384" height="284" fill="none" stroke="#ffffff" stroke-width="4"
        stroke-dasharray="12 6" rx="10"/>
</svg>
"##;

/// The sample catalog.
const SAMPLE_INI: &str = "\
# The sample catalog: /is/image/sample/<id> serves the file its id maps to.
# It takes every attribute from default.ini; set one here to override it for this catalog only.

[ids]
photo=sample/photo.jpg
logo=sample/logo.png
drawing=sample/drawing.svg
";

/// Produces the contents of one sample file.
type Generator = fn() -> io::Result<Vec<u8>>;

/// Creates the sample catalogs and images below `home` where they are absent (see the module
/// documentation); returns the files it created. Never overwrites an existing file.
pub fn provision(home: &Path) -> io::Result<Vec<PathBuf>> {
    let catalog = home.join("catalog");
    let sample = home.join("images").join("sample");
    fs::create_dir_all(&catalog)?;
    fs::create_dir_all(&sample)?;
    let files: [(PathBuf, Generator); 5] = [
        (catalog.join("default.ini"), || {
            Ok(default_ini().into_bytes())
        }),
        (catalog.join("sample.ini"), || {
            Ok(SAMPLE_INI.as_bytes().to_vec())
        }),
        (sample.join("photo.jpg"), photo_jpeg),
        (sample.join("logo.png"), logo_png),
        (sample.join("drawing.svg"), || {
            Ok(DRAWING_SVG.as_bytes().to_vec())
        }),
    ];
    let mut created = Vec::new();
    for (path, contents) in files {
        // `symlink_metadata`: a dangling link is an existing name too.
        if fs::symlink_metadata(&path).is_ok() {
            continue;
        }
        if create_new(&path, &contents()?)? {
            created.push(path);
        }
    }
    Ok(created)
}

/// Provisions the samples below `home` if the supervisor asked for them since the last time
/// (`run/samples.due` exists), then takes the request back. A failure (a read-only `images/`)
/// is logged and does not stop the caller.
pub fn provision_if_due(home: &Path) {
    let home = match Home::new(home) {
        Ok(home) => home,
        Err(e) => {
            tracing::warn!(error = %e, "could not create the sample catalog and images");
            return;
        }
    };
    let due = home.samples_due();
    if fs::symlink_metadata(&due).is_err() {
        return;
    }
    match provision(home.root()) {
        Ok(created) if !created.is_empty() => {
            tracing::info!(
                files = created.len(),
                "created the sample catalog and images"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not create the sample catalog and images"),
    }
    match fs::remove_file(&due) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %due.display(), error = %e, "could not remove the request for the samples");
        }
    }
}

/// Writes `path` unless it exists; returns whether it did.
fn create_new(path: &Path, contents: &[u8]) -> io::Result<bool> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        match fs::hard_link(&tmp, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    })();
    let _ = fs::remove_file(&tmp);
    result
}

/// `default.ini` with every attribute at its built-in default, each explained.
pub fn default_ini() -> String {
    let d = Attributes::default();
    let expiration = if d.expiration == NEVER_EXPIRES {
        "-1".to_owned()
    } else {
        format_hours(d.expiration.as_secs())
    };
    let res_mode = match d.res_mode {
        ResMode::Bilin => "bilin",
        ResMode::Bicub => "bicub",
        ResMode::Sharp2 => "sharp2",
        ResMode::Bisharp => "bisharp",
    };
    format!(
        "\
# The default catalog. Every other catalog (catalog/<name>.ini) starts from these attributes
# and overrides the ones it sets. Each value below is the built-in default.
# Names are case-insensitive; `#` and `;` start comments. The Image Server reloads the catalogs
# within a second or so of a change; a broken file is logged and the previous catalogs stay.

# Output size (w,h) when the request gives neither wid, hei nor scl: the image fits inside
# (never enlarged; 0 leaves that side free).
DefaultPix={dw},{dh}
# Largest output (w,h); a larger reply is an error.
MaxPix={mw},{mh}
# Largest source in pixels (width x height), checked before decoding.
MaxSourcePix={msp}
# JPEG and WebP quality (1-100) when the request has no qlt.
JpegQuality={q}
# Background colour, hex RRGGBB or RRGGBBAA, when the request has no bgc.
BkgColor={bkg}
# Hours clients and caches may keep an image (decimals allowed; 0 = at once, -1 = never expire).
Expiration={expiration}
# 1: error messages give details (internal servers); 0: titles only (public servers).
ErrorDetail={ed}
# Object served instead of a missing one (empty: none, a 404).
DefaultImage={di}
# Resampling: bilin, bicub, sharp2 (Lanczos) or bisharp.
ResMode={res_mode}
# Largest reply, in bytes.
MaxReplyBytes={mrb}
# Largest SVG source, in bytes.
MaxSvgBytes={msb}
# Largest SVG rasterisation, in pixels.
MaxSvgPix={msvp}

[ids]
# id=path/below/images, for objects named without a catalog, e.g.
# photo=sample/photo.jpg
",
        dw = d.default_pix.0,
        dh = d.default_pix.1,
        mw = d.max_pix.0,
        mh = d.max_pix.1,
        msp = d.max_source_pix,
        q = d.jpeg_quality,
        bkg = hex_color(d.bkg_color.0),
        ed = u8::from(d.error_detail),
        di = d.default_image.as_deref().unwrap_or(""),
        mrb = d.max_reply_bytes,
        msb = d.max_svg_bytes,
        msvp = d.max_svg_pix,
    )
}

/// `RRGGBB`, or `RRGGBBAA` when not opaque.
fn hex_color([r, g, b, a]: [u8; 4]) -> String {
    if a == 255 {
        format!("{r:02X}{g:02X}{b:02X}")
    } else {
        format!("{r:02X}{g:02X}{b:02X}{a:02X}")
    }
}

/// Seconds as hours, without a trailing `.0` for whole hours.
fn format_hours(secs: u64) -> String {
    if secs.is_multiple_of(3600) {
        (secs / 3600).to_string()
    } else {
        format!("{}", secs as f64 / 3600.0)
    }
}

/// A small deterministic pseudo-random generator (xorshift), so that the samples are the same
/// on every machine without a random-number crate.
fn hash(x: u32, y: u32, seed: u32) -> u32 {
    let mut h = x
        .wrapping_mul(0x9E37_79B1)
        .wrapping_add(y.wrapping_mul(0x85EB_CA77))
        .wrapping_add(seed.wrapping_mul(0xC2B2_AE3D));
    h ^= h >> 15;
    h = h.wrapping_mul(0x2C1B_3C6D);
    h ^= h >> 12;
    h = h.wrapping_mul(0x297A_2D39);
    h ^= h >> 15;
    h
}

/// Smooth value noise in 0..1 with cells of `cell` pixels: what makes skies and fields look
/// less synthetic than plain gradients.
fn value_noise(x: f32, y: f32, cell: f32, seed: u32) -> f32 {
    let (fx, fy) = (x / cell, y / cell);
    let (x0, y0) = (fx.floor(), fy.floor());
    let (tx, ty) = (fx - x0, fy - y0);
    let (sx, sy) = (tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty));
    let (ix, iy) = (x0 as u32, y0 as u32);
    let corner = |dx: u32, dy: u32| (hash(ix + dx, iy + dy, seed) >> 8) as f32 / 16_777_216.0;
    let top = corner(0, 0) + (corner(1, 0) - corner(0, 0)) * sx;
    let bottom = corner(0, 1) + (corner(1, 1) - corner(0, 1)) * sx;
    top + (bottom - top) * sy
}

/// Linear interpolation between two colours.
fn mix(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    let t = t.clamp(0.0, 1.0);
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

/// The sample photo's pixels: a landscape at dusk (sky, sun, two mountain ranges, a field with
/// trees and a lake), with coarse noise for texture and a little grain.
pub fn photo_pixels() -> Vec<u8> {
    let (w, h) = (PHOTO_WIDTH as usize, PHOTO_HEIGHT as usize);
    let (wf, hf) = (w as f32, h as f32);
    let horizon = hf * 0.62;
    let sun = (wf * 0.7, hf * 0.28, hf * 0.07);
    // Ridge heights per column, computed once: sums of sines plus noise.
    let ridge = |x: f32, seed: u32, base: f32, amp: f32| {
        base - amp
            * (0.55 * (x / wf * 7.0 + seed as f32).sin()
                + 0.3 * (x / wf * 17.0 + 2.0 * seed as f32).sin()
                + 0.6 * value_noise(x, 0.0, 60.0, seed))
    };
    let far: Vec<f32> = (0..w)
        .map(|x| ridge(x as f32, 1, horizon, hf * 0.2))
        .collect();
    let near: Vec<f32> = (0..w)
        .map(|x| ridge(x as f32, 2, horizon + hf * 0.06, hf * 0.1))
        .collect();
    let trees: Vec<(f32, f32, f32)> = (0..14)
        .map(|i| {
            let r = hash(i, 7, 3);
            let x = (r % w as u32) as f32;
            let y = hf * 0.8 + ((r >> 12) % (h as u32 / 6)) as f32;
            (x, y, hf * 0.025 + ((r >> 20) % 30) as f32)
        })
        .collect();
    let lake = (wf * 0.35, hf * 0.88, wf * 0.2, hf * 0.05);

    let mut pixels = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        let yf = y as f32;
        for x in 0..w {
            let xf = x as f32;
            let texture = value_noise(xf, yf, 48.0, 11) - 0.5;
            let mut c = if yf < far[x] {
                let t = yf / horizon;
                let mut sky = mix([28.0, 52.0, 110.0], [235.0, 170.0, 120.0], t.powf(1.6));
                let cloud = (value_noise(xf, yf * 2.5, 220.0, 5) - 0.55).max(0.0) * 2.2;
                sky = mix(sky, [245.0, 235.0, 240.0], cloud * (1.0 - t));
                let d = ((xf - sun.0).powi(2) + (yf - sun.1).powi(2)).sqrt();
                if d < sun.2 {
                    [255.0, 244.0, 210.0]
                } else {
                    let glow = (sun.2 * 2.5 / d).powi(2) * 0.5;
                    mix(sky, [255.0, 210.0, 140.0], glow)
                }
            } else if yf < near[x] {
                let t = (yf - far[x]) / hf * 4.0;
                mix([92.0, 100.0, 140.0], [60.0, 70.0, 100.0], t)
            } else {
                let t = (yf - near[x]) / (hf - near[x]).max(1.0);
                let stripes = (xf / 23.0 + yf / 9.0).sin() * 0.08;
                mix([70.0, 120.0, 55.0], [35.0, 80.0, 30.0], t + stripes)
            };
            let (lx, ly) = ((xf - lake.0) / lake.2, (yf - lake.1) / lake.3);
            if lx * lx + ly * ly < 1.0 {
                c = mix(
                    [70.0, 110.0, 160.0],
                    [150.0, 180.0, 210.0],
                    (lx + 1.0) / 2.0,
                );
            }
            for &(tx, ty, tr) in &trees {
                let (dx, dy) = ((xf - tx) / tr, (yf - ty) / (tr * 1.6));
                if dx * dx + dy * dy < 1.0 {
                    c = mix([25.0, 60.0, 25.0], [45.0, 90.0, 40.0], dx + 0.5);
                }
            }
            let grain = (hash(x as u32, y as u32, 99) >> 29) as f32 - 3.5;
            for v in c {
                pixels.push((v * (1.0 + texture * 0.1) + grain).clamp(0.0, 255.0) as u8);
            }
        }
    }
    pixels
}

/// The sample photo as a JPEG.
fn photo_jpeg() -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, PHOTO_QUALITY)
        .write_image(
            &photo_pixels(),
            PHOTO_WIDTH,
            PHOTO_HEIGHT,
            ExtendedColorType::Rgb8,
        )
        .map_err(io::Error::other)?;
    Ok(out)
}

/// The sample logo's RGBA pixels: a ring around a four-pointed star, anti-aliased, on full
/// transparency, with a translucent halo so that the alpha channel has more than two values.
pub fn logo_pixels() -> Vec<u8> {
    let n = LOGO_SIZE as usize;
    let c = n as f32 / 2.0;
    let mut pixels = Vec::with_capacity(n * n * 4);
    for y in 0..n {
        for x in 0..n {
            let (dx, dy) = (x as f32 + 0.5 - c, y as f32 + 0.5 - c);
            let r = (dx * dx + dy * dy).sqrt();
            // Coverage of an edge at distance `d` (positive inside), over one pixel.
            let cover = |d: f32| (d + 0.5).clamp(0.0, 1.0);
            let ring = cover(112.0 - r).min(cover(r - 92.0));
            let halo = cover(124.0 - r).min(cover(r - 112.0)) * 0.35;
            // A star: |dx|^½ + |dy|^½ < k, sharpened towards the points.
            let star_d = 9.0 - (dx.abs().sqrt() + dy.abs().sqrt());
            let star = cover(star_d * 6.0);
            let t = (y as f32) / n as f32;
            let (rgb, alpha) = if star > 0.0 {
                ([255.0, 200.0 - 60.0 * t, 40.0], star.max(ring))
            } else if ring > 0.0 {
                ([200.0 - 120.0 * t, 40.0, 90.0 + 100.0 * t], ring)
            } else {
                ([120.0, 40.0, 160.0], halo)
            };
            for v in rgb {
                pixels.push(v.clamp(0.0, 255.0) as u8);
            }
            pixels.push((alpha * 255.0).round() as u8);
        }
    }
    pixels
}

/// The sample logo as a PNG.
fn logo_png() -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    PngEncoder::new(&mut out)
        .write_image(
            &logo_pixels(),
            LOGO_SIZE,
            LOGO_SIZE,
            ExtendedColorType::Rgba8,
        )
        .map_err(io::Error::other)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::catalog;

    #[test]
    fn provision_creates_everything_once_and_never_overwrites() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path();
        let created = provision(home).unwrap();
        let mut names: Vec<_> = created
            .iter()
            .map(|p| p.strip_prefix(home).unwrap().to_str().unwrap().to_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "catalog/default.ini",
                "catalog/sample.ini",
                "images/sample/drawing.svg",
                "images/sample/logo.png",
                "images/sample/photo.jpg",
            ]
        );
        // No temporary file is left behind.
        for dir in ["catalog", "images/sample"] {
            let entries = fs::read_dir(home.join(dir)).unwrap().count();
            assert_eq!(entries, if dir == "catalog" { 2 } else { 3 });
        }

        // The photo and the logo are what they claim to be.
        let photo = image::open(home.join("images/sample/photo.jpg")).unwrap();
        assert_eq!((photo.width(), photo.height()), (2000, 1500));
        let size = fs::metadata(home.join("images/sample/photo.jpg"))
            .unwrap()
            .len();
        assert!(size > 100_000 && size < 1_000_000, "photo is {size} bytes");
        let logo = image::open(home.join("images/sample/logo.png"))
            .unwrap()
            .to_rgba8();
        assert_eq!(logo.dimensions(), (256, 256));
        let alphas: std::collections::HashSet<u8> = logo.pixels().map(|p| p.0[3]).collect();
        assert!(alphas.contains(&0) && alphas.contains(&255) && alphas.len() > 10);
        let svg = fs::read_to_string(home.join("images/sample/drawing.svg")).unwrap();
        assert!(svg.contains("<svg") && !svg.contains("<text"));

        // Edited files survive a second run, which creates only what is missing.
        fs::write(home.join("catalog/sample.ini"), "# mine\n").unwrap();
        fs::remove_file(home.join("images/sample/logo.png")).unwrap();
        let again = provision(home).unwrap();
        assert_eq!(again, vec![home.join("images/sample/logo.png")]);
        assert_eq!(
            fs::read_to_string(home.join("catalog/sample.ini")).unwrap(),
            "# mine\n"
        );
        assert!(provision(home).unwrap().is_empty());
    }

    #[test]
    fn provision_if_due_runs_once_per_request() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::new(tmp.path()).unwrap();
        home.ensure_layout().unwrap();
        // The slow images exist already: what is created here is what is missing.
        let sample = home.images_dir().join("sample");
        fs::create_dir_all(&sample).unwrap();
        for name in ["photo.jpg", "logo.png", "drawing.svg"] {
            fs::write(sample.join(name), name).unwrap();
        }
        let default_ini = home.catalog_dir().join("default.ini");

        // No request: nothing is created.
        provision_if_due(home.root());
        assert!(!default_ini.exists());

        fs::write(home.samples_due(), "").unwrap();
        provision_if_due(home.root());
        assert!(default_ini.exists() && home.catalog_dir().join("sample.ini").exists());
        assert!(!home.samples_due().exists(), "the request is taken");
        assert_eq!(fs::read(sample.join("photo.jpg")).unwrap(), b"photo.jpg");

        // A deleted sample stays deleted until the next request.
        fs::remove_file(&default_ini).unwrap();
        provision_if_due(home.root());
        assert!(!default_ini.exists());
        fs::write(home.samples_due(), "").unwrap();
        provision_if_due(home.root());
        assert!(default_ini.exists());
    }

    #[test]
    fn provisioned_catalogs_load_to_the_defaults_and_resolve_the_samples() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path();
        // Only the catalogs: images are tested above, and are slow in debug builds.
        fs::create_dir_all(home.join("catalog")).unwrap();
        fs::write(home.join("catalog/default.ini"), default_ini()).unwrap();
        fs::write(home.join("catalog/sample.ini"), SAMPLE_INI).unwrap();
        fs::create_dir_all(home.join("images/sample")).unwrap();
        fs::write(home.join("images/sample/drawing.svg"), DRAWING_SVG).unwrap();
        let catalogs = catalog::load(&home.join("catalog")).unwrap();
        assert_eq!(catalogs.default.attributes, Attributes::default());
        assert_eq!(catalogs.attributes("sample"), &Attributes::default());
        assert_eq!(catalogs.get("sample").unwrap().ids.len(), 3);
        let resolved = catalogs
            .resolve("sample/drawing", &home.join("images"))
            .unwrap();
        assert!(resolved.path.ends_with("sample/drawing.svg"));
    }

    #[test]
    fn hours_and_colours_are_written_as_the_catalog_reads_them() {
        assert_eq!(format_hours(36_000), "10");
        assert_eq!(format_hours(5400), "1.5");
        assert_eq!(hex_color([255, 0, 16, 255]), "FF0010");
        assert_eq!(hex_color([255, 0, 16, 128]), "FF001080");
    }
}

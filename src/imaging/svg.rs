//! Rasterising SVG sources with resvg, every document treated as hostile.
//!
//! `is` measures an SVG source ([`intrinsic_size`]) and has it rendered at exactly the size it
//! wants ([`render`]); the svg server (`crate::servers::svg_server`) runs both for it, off its
//! async runtime, on threads with a [`STACK_SIZE`] stack. This module is the image side: it
//! parses, checks and renders, and answers an [`ImageError`] (403 for a document it refuses,
//! 415 for a compressed one) with the reason.
//!
//! # Hostile input
//!
//! Sources come from the image catalog, which may hold uploads, so every document is treated
//! as hostile:
//!
//! - Nothing outside the document is ever read, and no font is loaded. An `<image>` (or
//!   `<feImage>`) that links outside the document (a file path, a `file:` or `http:` URL) makes
//!   the document invalid (403, naming the link) rather than drawn without it; an embedded
//!   `data:` image is not drawn. `<use>` and paint servers follow links inside the document
//!   only; external DTDs and entities are never loaded.
//! - Size: the caller bounds the body (`max_svg_bytes`); DTD entities are measured before
//!   parsing (`svg/checks.rs`), so a "billion laughs" document is refused instead of expanding to
//!   gigabytes; usvg refuses more than a million elements once `<use>` is expanded, and
//!   roxmltree more than 1024 levels of nesting. An intrinsic size over
//!   [`MAX_INTRINSIC_SIDE`] a side is refused as absurd.
//! - Depth: usvg and resvg recurse once per level, and a stack overflow would abort the whole
//!   server: [`STACK_SIZE`] is the stack a thread running them needs.
//! - Memory: before rendering, the intermediate buffers resvg will allocate (group layers,
//!   clips, masks, filter results, pattern tiles) are estimated and bounded (`svg/checks.rs`):
//!   pattern tiles are the reason, resvg does not clamp them, and a 250-byte document could ask
//!   for 6 GB.
//! - Time: the caller bounds it (the svg server's `render_timeout`).
//!
//! # Not supported
//!
//! - Text: no font is loaded, so `<text>` renders nothing.
//! - Images: no `<image>` is drawn. One that links to a file or URL is refused (403); one
//!   embedded as a `data:` URL is left out.
//! - svgz: gzip-compressed sources are refused with 415 (their decompressed size would escape
//!   `max_svg_bytes`); `is` sends the SVG uncompressed.
//! - What resvg itself does not do: scripts, animation, `<foreignObject>`.

mod checks;

use std::sync::{Arc, Mutex, PoisonError};

use resvg::tiny_skia;
use resvg::usvg;

use crate::imaging::error::shown;
use crate::imaging::ImageError;

/// The largest intrinsic size accepted on either side, in CSS pixels. Larger documents are
/// refused as absurd: no real artwork is a million pixels wide, and scale factors that far from 1
/// only lose precision.
pub const MAX_INTRINSIC_SIDE: f64 = 1_000_000.0;

/// How many times the render's pixel limit (`max_svg_pix`) the offscreen buffers of one render
/// (layers for opacity, clips, masks, filters, pattern tiles) may hold at their peak, as
/// estimated before rendering. resvg bounds a layer to 25 times the canvas but not pattern
/// tiles, so a 250-byte document could otherwise allocate gigabytes.
pub const OFFSCREEN_FACTOR: u64 = 16;

/// The stack a thread running [`intrinsic_size`] or [`render`] needs. usvg and resvg recurse
/// once per nesting level, and roxmltree accepts 1024 levels (more once `<use>` is expanded):
/// the 2 MiB of a default thread overflow at about 1000 levels in a debug build, and an overflow
/// aborts the whole process. Only the pages actually touched cost memory.
pub const STACK_SIZE: usize = 64 * 1024 * 1024;

/// 403 for a source the parser refuses.
fn invalid_svg(why: impl std::fmt::Display) -> ImageError {
    ImageError::new(403, format!("invalid SVG: {why}"))
}

/// The parsing options: nothing outside the document is ever read. `resources_dir` stays unset
/// and both `<image>` resolvers refuse everything, so neither `href="file:///etc/passwd"`, nor a
/// relative path (which usvg would otherwise resolve against the working directory), nor a
/// `data:` URL is loaded. No font database is filled, so text renders nothing.
///
/// The first external reference (anything but a `data:` URL) met while parsing is written to
/// `external`, so that [`parse`] can refuse the document with a clear error instead of
/// drawing it without the referenced image.
fn parse_options(external: Arc<Mutex<Option<String>>>) -> usvg::Options<'static> {
    usvg::Options {
        resources_dir: None,
        image_href_resolver: usvg::ImageHrefResolver {
            resolve_data: Box::new(|_, _, _| None),
            resolve_string: Box::new(move |href, _| {
                let mut first = external.lock().unwrap_or_else(PoisonError::into_inner);
                first.get_or_insert_with(|| shown(href));
                None
            }),
        },
        style_sheet: None,
        ..usvg::Options::default()
    }
}

/// Whether `data` starts like a gzip stream (an `.svgz` file).
pub fn is_gzip(data: &[u8]) -> bool {
    data.starts_with(&[0x1f, 0x8b])
}

/// 415 for compressed input, which is refused: its decompressed size would escape
/// the source size limit.
pub fn gzip_refused() -> ImageError {
    ImageError::new(
        415,
        "gzip-compressed SVG (svgz) is not supported: send the SVG uncompressed",
    )
}

/// Parses an SVG source into a usvg tree, refusing compressed, oversized-when-expanded and
/// absurdly sized documents.
fn parse(data: &[u8], max_svg_bytes: usize) -> Result<usvg::Tree, ImageError> {
    if is_gzip(data) {
        return Err(gzip_refused());
    }
    let text = std::str::from_utf8(data).map_err(|_| invalid_svg("the source is not UTF-8"))?;
    checks::check_entity_expansion(text, max_svg_bytes)?;
    let external = Arc::new(Mutex::new(None));
    let tree = usvg::Tree::from_str(text, &parse_options(external.clone())).map_err(invalid_svg)?;
    let external = external
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Some(href) = external {
        return Err(invalid_svg(format!(
            "an image links to `{href}` outside the document; external references are refused"
        )));
    }
    let size = tree.size();
    let (width, height) = (f64::from(size.width()), f64::from(size.height()));
    let sane = |side: f64| side.is_finite() && side > 0.0 && side <= MAX_INTRINSIC_SIDE;
    if !sane(width) || !sane(height) {
        return Err(invalid_svg(format!(
            "intrinsic size {width}×{height} is out of range (at most {MAX_INTRINSIC_SIDE} px a side)"
        )));
    }
    Ok(tree)
}

/// The intrinsic size of an SVG source, in CSS pixels; `max_svg_bytes` bounds what its DTD
/// entities may expand to.
pub fn intrinsic_size(data: &[u8], max_svg_bytes: usize) -> Result<(f64, f64), ImageError> {
    let size = parse(data, max_svg_bytes)?.size();
    Ok((f64::from(size.width()), f64::from(size.height())))
}

/// Checks a requested render size against the pixel limit: both sides at least 1, at most
/// `max_svg_pix` pixels in all.
pub fn check_render_size(width: u32, height: u32, max_svg_pix: u64) -> Result<(), ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::new(
            403,
            format!("SVG render size {width}×{height} is empty: both sides must be at least 1"),
        ));
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_svg_pix {
        return Err(ImageError::too_large(format!(
            "SVG render size {width}×{height} is {pixels} pixels, more than the {max_svg_pix} allowed"
        )));
    }
    Ok(())
}

/// Parses and renders an SVG source scaled to exactly `width`×`height` (non-uniformly if the
/// ratio differs) on a transparent background; answers RGBA8 with straight alpha, row-major,
/// top row first. `max_svg_bytes` bounds what its DTD entities may expand to, `max_svg_pix` the
/// render (and, times [`OFFSCREEN_FACTOR`], its intermediate buffers). Runs for as long as the
/// document takes: call it on a thread of its own with a [`STACK_SIZE`] stack.
pub fn render(
    data: &[u8],
    width: u32,
    height: u32,
    max_svg_bytes: usize,
    max_svg_pix: u64,
) -> Result<Vec<u8>, ImageError> {
    check_render_size(width, height, max_svg_pix)?;
    let tree = parse(data, max_svg_bytes)?;
    let size = tree.size();
    let transform = tiny_skia::Transform::from_scale(
        width as f32 / size.width(),
        height as f32 / size.height(),
    );
    checks::check_offscreen(&tree, transform, width, height, max_svg_pix)?;
    let mut pixmap = tiny_skia::Pixmap::new(width, height).ok_or_else(|| {
        ImageError::internal(format!("cannot allocate a {width}×{height} canvas"))
    })?;
    resvg::render(&tree, transform, &mut pixmap.as_mut());
    Ok(pixmap.take_demultiplied())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn render_sizes_are_checked_against_the_pixel_limit() {
        assert!(check_render_size(2000, 2000, 4_000_000).is_ok());
        assert_eq!(
            check_render_size(2001, 2000, 4_000_000).unwrap_err().status,
            403
        );
        assert_eq!(check_render_size(0, 20, 4_000_000).unwrap_err().status, 403);
    }

    #[test]
    fn straight_alpha_is_answered() {
        let svg = br##"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10" fill="#ff0000" fill-opacity="0.5"/></svg>"##;
        let rgba = render(svg, 4, 4, MIB, 4_000_000).unwrap();
        let [r, g, b, a] = rgba[..4] else {
            unreachable!()
        };
        assert_eq!((r, g, b), (255, 0, 0));
        assert!((127..=128).contains(&a), "alpha {a}");
    }

    #[test]
    fn gzip_is_recognised_by_its_magic() {
        assert!(is_gzip(&[0x1f, 0x8b, 0x08]));
        assert!(!is_gzip(b"<svg"));
        assert_eq!(
            intrinsic_size(&[0x1f, 0x8b, 0x08, 0x00], MIB)
                .unwrap_err()
                .status,
            415
        );
    }
}

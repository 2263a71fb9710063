//! The image pipeline of `is`: probe a source, plan the reply's geometry, decode, crop, flip,
//! rotate, extend, take a region, scale, sharpen, cut a tile, fill and encode.
//!
//! ```text
//!  bytes ─probe─▶ SourceInfo ─(MaxSourcePix)─▶ plan ─(MaxPix)─▶ Plan ─▶ decode (shrink-on-load)
//!        ─▶ [composite: crop, flip, rotate, extend, rgn at source resolution]
//!        ─▶ resample the visible region ─▶ flip/rotate it ─▶ paste into the view
//!        ─▶ op_sharpen / op_usm ─▶ rect ─▶ encode
//! ```
//!
//! # Semantics
//! The order of operations is that of Image Serving: `crop`/`cropN` → `flip` → `rotate` →
//! `extend`/`extendN` (this is the composite) → `rgn`/`rgnN` → scale/fit (`wid`, `hei`, `fit`,
//! `scl`, `align`) → `op_sharpen` → `op_usm` → `MaxPix` check → `rect` → fill with `bgc` →
//! encode. How it is *computed* differs (see "How" below) but gives the same pixels, up to
//! resampling at the edges. A test pins each step's place
//! (`tests::order::each_step_of_the_view_transform_has_its_place`).
//!
//! - **Crop**: `crop=x,y,w,h` in source pixels, `cropN` in fractions of the source size; each
//!   edge is rounded to a whole pixel (so `cropN` tiles meet exactly), the box is at least 1×1.
//!   It may reach past the source: that part is transparent, which formats without alpha show
//!   as `bgc`.
//! - **Flip** `lr|ud|lrud`, then **rotate** clockwise by any angle (taken modulo 360).
//!   Multiples of 90 are exact pixel moves. Any other angle turns the image about its centre
//!   into the box that holds its four corners (each side rounded up: 100×100 at 45° gives
//!   142×142), sampled bilinearly with alpha premultiplied; what the turn uncovers is
//!   transparent, so formats without alpha show `bgc` there.
//! - **Extend** `extend=l,t,r,b` adds margins (pixels, each rounded) around the rotated image;
//!   `extendN` gives them in fractions of its width (`l`, `r`) and height (`t`, `b`). The new
//!   area is transparent (`bgc` for formats without alpha). Negative margins crop; margins that
//!   leave nothing are refused (403).
//! - **Region** `rgn=x,y,w,h` (pixels) or `rgnN` (fractions) of the *composite*: the image after
//!   crop, flip, rotate and extend. Rounded like `crop`, it may reach past the composite
//!   (transparent there). Our choice, as the difference from `crop`: `crop` is in the source's
//!   pixels and comes first, so it is turned and extended; `rgn` is in the composite's pixels and
//!   comes after, so it can take a part of the margins or of the grown box of a rotation. For a
//!   plain image (no flip, rotate, extend) both give the same pixels.
//! - **Scale/fit**, with `sw×sh` the size of the region (of the oriented crop box when there is
//!   no composite; all sizes rounded to whole pixels, at least 1):
//!   - none of `wid`/`hei`/`scl`: fit inside the catalog's `DefaultPix`, never enlarged (a 0 in
//!     `DefaultPix` leaves that side free);
//!   - `scl=s` alone: `sw/s × sh/s`;
//!   - `wid` alone (or `hei` alone): scaled to exactly that width (height), aspect kept, enlarged
//!     if need be, as most image servers do. Our choice: only an *explicit* `fit=…,0` (of any mode
//!     but `stretch`) forbids enlarging then; other `fit` modes need both sides and are ignored;
//!   - `wid`+`hei` (default `fit=fit,0`): `fit` scales to fit inside, the reply is exactly
//!     `wid×hei` with the image placed by `align` and the rest filled; `constrain` likewise but
//!     the reply is only the scaled image; `crop` scales to cover and crops the overflow at
//!     `align` (not enlarged: a smaller image gives a smaller reply); `wrap` scales to cover
//!     like `crop` but the reply grows to the whole scaled image instead of cropping it (one side
//!     is `wid` or `hei`, the other larger: Adobe's definition); `hfit` scales to exactly `wid`
//!     wide and `vfit` to exactly `hei` high, the reply being `wid×hei` with the other side cut
//!     or filled at `align`; `stretch` gives exactly `wid×hei`. The upscale flag lets every mode
//!     but `stretch` enlarge (without it, `hfit`/`vfit` keep a smaller image at its size in the
//!     `wid×hei` view).
//!   - `scl` with `wid` and/or `hei`: scaled by `scl`, then cut to `wid×hei` (a side not given
//!     is the scaled one) positioned by `align`, filled where the view is larger; `fit` is
//!     ignored.
//!   - `align=h,v` (each clamped to −1…1): offset = (view − image) × (1 + a) / 2, so −1 is
//!     left/top, 0 centred, 1 right/bottom, both when the image is smaller (fill) and larger
//!     (crop) than the view.
//! - **Sharpening** of the scaled view: `op_sharpen=1` is a mild unsharp mask (amount 0.8,
//!   radius 0.6, threshold 0); `op_usm=amount,radius,threshold,mono` an unsharp mask: the
//!   difference between the view and its gaussian blur (standard deviation `radius` reply
//!   pixels) is added `amount` times where it is at least `threshold` levels; `mono=1` does it on
//!   the luminance, adding the same to the three channels. Both given: `op_sharpen` first. Alpha
//!   is not sharpened. Formats without alpha are sharpened after their flattening on `bgc`
//!   (the fill is per pixel, so this only matters where transparency meets the image).
//! - **Tile** `rect=x,y,w,h` of the view (after scaling and sharpening, so tiles of a view meet
//!   into exactly the view): the reply is `w×h`; the part past the view takes the fill, `bgc`
//!   (transparent for alpha formats without `bgc`), as Adobe pads it. `MaxPix` is checked on the
//!   whole view *and* on the tile.
//! - **Limits** (all `too_large`, 403): a view or tile wider or higher than `MaxPix`; a source
//!   with more than `MaxSourcePix` pixels, judged from the header alone before any decode;
//!   decoders also run under `image::Limits` (header size, allocation budget) as a second wall;
//!   a reply of more than `max_reply_bytes`; a scaled image or crop beyond 2^30 pixels a side; a
//!   composite (or its crop or rotated image) of more than `MaxSourcePix` pixels or 64 Mpx.
//! - **Fill**: formats without alpha (jpeg, png, webp, gif, tif) are flattened on `bgc`, default
//!   the catalog's `BkgColor` (its alpha is ignored). Formats with alpha (png-alpha, webp-alpha,
//!   tif-alpha) keep the image's transparency; the view around the image is transparent unless
//!   `bgc` is given, and the part of a crop past the source, the margins of `extend` and the
//!   corners of a rotation stay transparent even then.
//! - **Resampling**: `resMode=` of the request, else the catalog's `ResMode`: `bilin` →
//!   bilinear, `bicub` → Mitchell, `sharp2` → Lanczos3, `bisharp` → Catmull-Rom (all
//!   `fast_image_resize` convolutions), with alpha premultiplied.
//! - **Formats**: sources JPEG, PNG, GIF (first frame), WebP, TIFF (first image), and SVG
//!   rasterised by the svg server ([`svg_raster_size`], [`Source::Svg`]). Replies: JPEG and
//!   lossy WebP at `qlt` (default `JpegQuality`, clamped to 1–100), PNG (fast compression),
//!   GIF (quantised, no transparency), TIFF (uncompressed, RGB or RGBA). JPEG replies are always
//!   4:4:4 (no chroma subsampling: `image`'s encoder has no other mode), which is what the chroma
//!   flag `qlt=…,1` asks; `qlt=…,0` is accepted and gives the same. EXIF orientation is not
//!   applied (as in Image Serving, where it is a catalog option we do not implement).
//! - **Errors**: an unknown, corrupt or truncated source (a JPEG without its end marker
//!   included) is `bad_source` (403) with a short reason and no path; no input makes the
//!   pipeline panic (a decoder's panic is caught and reported as `bad_source`).
//!
//! # How
//! [`plan`] computes everything from sizes (`geometry`); a render then resamples *only the
//! source region that stays visible* straight to its reply size, flips and rotates that small
//! piece, and pastes it into the view (`compose`). So a crop reaching far past the source costs
//! nothing, and flip/rotate work on reply-sized pixels. JPEG sources scaled to ½ or less are
//! decoded at a DCT scale of ½, ¼ or ⅛ (jpeg-decoder's `scale`), the smallest that keeps at least
//! the needed pixels; other sources decode at full size, in their own pixel type (grey stays
//! grey until the small piece is converted).
//!
//! A rotation by an angle that is not a multiple of 90, `extend` or `rgn` leave that fast path:
//! the source is decoded at full size (no shrink-on-load), and the *composite* is built in RGBA
//! at source resolution (crop, flip and quarter turns, the turn by the angle, the window of the
//! extended box cut to `rgn`); the fast path then scales it as if it were the source. An SVG is
//! then rasterised at its intrinsic size (so an enlarged, turned SVG is resampled, not
//! re-rendered). Sharpening works on the whole view (bounded by `MaxPix`), and `rect` is cut
//! from it.

mod compose;
mod decode;
mod encode;
mod geometry;
mod probe;
mod sharpen;
#[cfg(test)]
mod tests;

use image::GenericImageView;
use serde::{Deserialize, Serialize};

use crate::imaging::catalog::Attributes;
use crate::imaging::ImageError;
use crate::imaging::ImageRequest;

pub use crate::imaging::request::OutputFormat;

use self::compose::Colors;
use self::decode::Decoded;
use self::geometry::{Orientation, Rect};

/// A source image format, sniffed from its magic bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceFormat {
    /// JPEG (baseline, progressive; grey, RGB, CMYK).
    Jpeg,
    /// PNG (first image of an APNG).
    Png,
    /// WebP, lossy or lossless.
    Webp,
    /// GIF (first frame).
    Gif,
    /// TIFF (first image).
    Tiff,
    /// SVG, rasterised by the svg server.
    Svg,
}

impl SourceFormat {
    /// The name used in text answers (`image.format=jpeg`).
    pub fn name(self) -> &'static str {
        match self {
            SourceFormat::Jpeg => "jpeg",
            SourceFormat::Png => "png",
            SourceFormat::Webp => "webp",
            SourceFormat::Gif => "gif",
            SourceFormat::Tiff => "tiff",
            SourceFormat::Svg => "svg",
        }
    }

    /// The MIME type.
    pub fn mime(self) -> &'static str {
        match self {
            SourceFormat::Jpeg => "image/jpeg",
            SourceFormat::Png => "image/png",
            SourceFormat::Webp => "image/webp",
            SourceFormat::Gif => "image/gif",
            SourceFormat::Tiff => "image/tiff",
            SourceFormat::Svg => "image/svg+xml",
        }
    }
}

/// What a source's header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// Width in pixels (0 for SVG: the svg server measures it).
    pub width: u32,
    /// Height in pixels (0 for SVG).
    pub height: u32,
    /// The format.
    pub format: SourceFormat,
    /// Whether the image may have transparent pixels (always true for SVG).
    pub has_alpha: bool,
}

/// Sniffs the format from the magic bytes and reads only the header: size and alpha.
///
/// SVG is recognised (text opening like XML with an `<svg` element early on) but not measured:
/// its size is 0×0. An unknown format or a corrupt or short header is `bad_source` (403).
pub fn probe(bytes: &[u8], object: &str) -> Result<SourceInfo, ImageError> {
    let header = probe::header(bytes).map_err(|why| ImageError::bad_source(object, why))?;
    Ok(SourceInfo {
        width: header.width,
        height: header.height,
        format: header.format,
        has_alpha: header.has_alpha,
    })
}

/// The geometry of a reply, computed from the source size and the request without decoding:
/// used by `req=props`, for the SVG raster size, and by [`render`].
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Reply width in pixels.
    pub width: u32,
    /// Reply height in pixels.
    pub height: u32,
    /// Reply format.
    pub format: OutputFormat,
    /// JPEG / WebP quality, 1–100 (kept, unused, for the other formats).
    pub quality: u8,
    /// The source size the plan is for.
    source: (u32, u32),
    /// The crop box in source pixels: integer edges, may reach past the source.
    crop: Rect,
    /// The flip and rotation of the crop box.
    orientation: Orientation,
    /// The size of the oriented crop box once scaled (may exceed the view, which then shows a
    /// part of it).
    scaled: (u32, u32),
    /// Where the scaled image's top-left corner sits in the view (negative when cut).
    offset: (i64, i64),
    /// The whole view (the reply unless `rect` cuts a tile of it).
    view: (u32, u32),
    /// The tile of the view that is replied (`rect`), integer edges; may reach past the view.
    rect: Option<geometry::Rect>,
    /// What is built at source resolution before scaling (a rotation by any angle, `extend`,
    /// `rgn`); `source`, `crop` and `orientation` then describe the composite.
    composite: Option<geometry::Composite>,
}

/// Plans the reply for a source of `source` pixels (width, height): crop, flip, rotate, scale,
/// fit and align, format and quality. Refuses a rotation that is not a multiple of 90
/// (`unsupported`) and a reply larger than `MaxPix` (`too_large`).
pub fn plan(
    source: (u32, u32),
    req: &ImageRequest,
    attrs: &Attributes,
) -> Result<Plan, ImageError> {
    geometry::plan(source, req, attrs)
}

/// The source size an SVG of intrinsic size `(w, h)` counts as: rounded, at least 1×1. Plan an
/// SVG's `req=props` with it (crop pixels and `scl` refer to it), not with the raster size.
/// A size that is not a positive finite number is `bad_source`.
pub fn svg_source_size(intrinsic: (f64, f64), object: &str) -> Result<(u32, u32), ImageError> {
    geometry::svg_source_size(intrinsic, object)
}

/// For an SVG of intrinsic size `(w, h)`, the raster size to ask the svg server for, so that the
/// pipeline then needs no enlarging: the whole (uncropped, unrotated) SVG at the plan's scale,
/// rounded up, at least 1×1. Refused (`too_large`) above `attrs.max_svg_pix`. Pass the raster to
/// [`render`] as [`Source::Svg`] with the same intrinsic size.
pub fn svg_raster_size(
    intrinsic: (f64, f64),
    req: &ImageRequest,
    attrs: &Attributes,
) -> Result<(u32, u32), ImageError> {
    geometry::svg_raster_size(intrinsic, req, attrs)
}

/// What [`render`] works from.
#[derive(Debug)]
pub enum Source<'a> {
    /// An encoded raster image (JPEG, PNG, WebP, GIF, TIFF) as read from disk.
    Encoded {
        /// The file's bytes.
        bytes: &'a [u8],
        /// The object as the client wrote it, for error messages.
        object: &'a str,
    },
    /// Pixels taken at their own size: crop coordinates and scales refer to this image.
    Pixels(image::RgbaImage),
    /// An SVG rasterised at [`svg_raster_size`]: crop coordinates and scales refer to the
    /// intrinsic size, the raster being the SVG at some other scale.
    Svg {
        /// The raster.
        pixels: image::RgbaImage,
        /// The SVG's intrinsic size, as given to [`svg_raster_size`].
        intrinsic: (f64, f64),
    },
}

/// An encoded reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// The encoded image.
    pub bytes: Vec<u8>,
    /// Its MIME type.
    pub mime: &'static str,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// Renders the reply image. CPU-bound: the caller runs it on a blocking thread.
pub fn render(
    source: Source<'_>,
    req: &ImageRequest,
    attrs: &Attributes,
) -> Result<Rendered, ImageError> {
    render_traced(source, req, attrs).map(|(rendered, _)| rendered)
}

/// What a render did, for tests: the decode path is invisible in the reply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Trace {
    /// Whether the source was decoded at all (not when no source pixel is visible).
    pub(crate) decoded: bool,
    /// The JPEG DCT scale denominator: 1 for a full decode, 2, 4 or 8 when shrunk on load.
    pub(crate) jpeg_shrink: u8,
    /// The size of the decoded pixels.
    pub(crate) decoded_size: (u32, u32),
}

/// [`render`], also saying how it went.
pub(crate) fn render_traced(
    source: Source<'_>,
    req: &ImageRequest,
    attrs: &Attributes,
) -> Result<(Rendered, Trace), ImageError> {
    let mut trace = Trace::default();
    let (plan, decoded) = match source {
        Source::Encoded { bytes, object } => {
            let info = probe(bytes, object)?;
            if info.format == SourceFormat::Svg {
                return Err(ImageError::internal(
                    "an SVG source must be rasterised by the svg server first",
                ));
            }
            let pixels = u64::from(info.width) * u64::from(info.height);
            if pixels > attrs.max_source_pix {
                return Err(ImageError::too_large(format!(
                    "a source of {}×{} pixels exceeds MaxSourcePix {}",
                    info.width, info.height, attrs.max_source_pix
                )));
            }
            let mut plan = plan((info.width, info.height), req, attrs)?;
            let decoded = match plan.placement() {
                None => None,
                Some(_) => {
                    // A composite is built at source resolution: no shrink-on-load.
                    let factor = match plan.composite {
                        Some(_) => 1.0,
                        None => {
                            let (ax, ay) = plan.source_factors();
                            ax.max(ay)
                        }
                    };
                    let decoded = decode::decode(bytes, object, &info, factor)?;
                    trace.jpeg_shrink = decoded.shrink;
                    let size = decoded.image.dimensions();
                    // A decoder that disagrees with the header (within its limits) wins.
                    if decoded.shrink == 1 && size != (info.width, info.height) {
                        plan = self::plan(size, req, attrs)?;
                    }
                    Some(decoded)
                }
            };
            (plan, decoded)
        }
        Source::Pixels(pixels) => {
            let plan = plan(pixels.dimensions(), req, attrs)?;
            let decoded = Decoded {
                image: image::DynamicImage::ImageRgba8(pixels),
                scale: (1.0, 1.0),
                shrink: 1,
            };
            (plan, Some(decoded))
        }
        Source::Svg { pixels, intrinsic } => {
            let size = geometry::svg_source_size(intrinsic, &req.object)?;
            let plan = plan(size, req, attrs)?;
            let (w, h) = pixels.dimensions();
            if w == 0 || h == 0 {
                return Err(ImageError::bad_source(
                    &req.object,
                    "the SVG raster is empty",
                ));
            }
            let decoded = Decoded {
                image: image::DynamicImage::ImageRgba8(pixels),
                scale: (
                    f64::from(w) / f64::from(size.0),
                    f64::from(h) / f64::from(size.1),
                ),
                shrink: 1,
            };
            (plan, Some(decoded))
        }
    };
    if let Some(decoded) = &decoded {
        trace.decoded = true;
        trace.decoded_size = decoded.image.dimensions();
    }

    let filter = compose::filter(req.res_mode.unwrap_or(attrs.res_mode));
    let decoded = match (&plan.composite, decoded) {
        (Some(composite), Some(decoded)) => {
            Some(compose::build_composite(decoded, composite, filter)?)
        }
        (_, decoded) => decoded,
    };
    let colors = colors(&plan, req, attrs);
    let mut canvas = compose::compose(&plan, decoded, colors, filter)?;
    for usm in sharpen::masks(req) {
        sharpen::unsharp(&mut canvas, &usm);
    }
    if let Some(rect) = &plan.rect {
        canvas = compose::tile(canvas, rect, colors);
    }
    let bytes = encode::encode(canvas, plan.format, plan.quality)?;
    if bytes.len() > attrs.max_reply_bytes {
        return Err(ImageError::too_large(format!(
            "a reply of {} bytes exceeds {} bytes",
            bytes.len(),
            attrs.max_reply_bytes
        )));
    }
    let rendered = Rendered {
        bytes,
        mime: plan.format.mime(),
        width: plan.width,
        height: plan.height,
    };
    Ok((rendered, trace))
}

/// The fill colours of a reply; see "Fill" in the module documentation.
fn colors(plan: &Plan, req: &ImageRequest, attrs: &Attributes) -> Colors {
    const TRANSPARENT: [u8; 4] = [0, 0, 0, 0];
    if plan.format.has_alpha() {
        Colors {
            view: req.bgc.map_or(TRANSPARENT, |c| c.0),
            outside_source: TRANSPARENT,
            alpha: true,
        }
    } else {
        let [r, g, b, _] = req.bgc.unwrap_or(attrs.bkg_color).0;
        Colors {
            view: [r, g, b, 255],
            outside_source: [r, g, b, 255],
            alpha: false,
        }
    }
}

/// Properties of the reply for `req=props`, as (name, value) pairs in a fixed order:
/// `image.width`, `image.height`, `image.format` (the protocol's name, `png-alpha`),
/// `image.mimeType`, `image.quality` (1–100, meaningful for jpeg and webp), `image.mask`
/// (`1` when the reply keeps alpha, else `0`).
pub fn reply_props(plan: &Plan) -> Vec<(String, String)> {
    vec![
        ("image.width".into(), plan.width.to_string()),
        ("image.height".into(), plan.height.to_string()),
        ("image.format".into(), plan.format.name().into()),
        ("image.mimeType".into(), plan.format.mime().into()),
        ("image.quality".into(), plan.quality.to_string()),
        (
            "image.mask".into(),
            u8::from(plan.format.has_alpha()).to_string(),
        ),
    ]
}

/// Properties of the source for `req=imageprops`, as (name, value) pairs: `image.width`,
/// `image.height` (0 for an SVG not yet measured), `image.format` (`jpeg`, `png`, `webp`, `gif`,
/// `tiff`, `svg`), `image.mimeType`, `image.hasAlpha` (`0` or `1`).
pub fn source_props(info: &SourceInfo) -> Vec<(String, String)> {
    vec![
        ("image.width".into(), info.width.to_string()),
        ("image.height".into(), info.height.to_string()),
        ("image.format".into(), info.format.name().into()),
        ("image.mimeType".into(), info.format.mime().into()),
        (
            "image.hasAlpha".into(),
            u8::from(info.has_alpha).to_string(),
        ),
    ]
}

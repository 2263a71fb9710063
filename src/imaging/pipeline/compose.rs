//! Composing the reply: the one resampling step, the flip and rotation of its (small) result, and
//! the view around it filled with the background.
//!
//! Only the source region that stays visible is resampled, and straight into its final size, so
//! flip and rotation work on reply-sized pixels, and a crop reaching far past the source never
//! allocates its empty part. When the resampled piece is the whole view (the common case), it
//! becomes the reply as is: no canvas, no copy.
//!
//! Also here: the composite of a rotation by any angle, `extend` or `rgn`, built at source
//! resolution before that step ([`build_composite`], with [`rotate_any`]), and the `rect` tile
//! cut from the finished view ([`tile`]).

use fast_image_resize::{FilterType, IntoImageView, ResizeAlg, ResizeOptions, Resizer};
use image::{imageops, DynamicImage, ImageBuffer, Pixel, RgbImage, RgbaImage};

use crate::imaging::catalog::ResMode;
use crate::imaging::ImageError;

use super::decode::Decoded;
use super::geometry::{Composite, Orientation, Placement, Rect};
use super::Plan;

/// The reply's pixels: RGB for formats without alpha, RGBA for the others.
#[derive(Debug)]
pub(crate) enum Canvas {
    /// Opaque, already flattened on the background.
    Rgb(RgbImage),
    /// With alpha.
    Rgba(RgbaImage),
}

impl Canvas {
    /// Width and height.
    pub(crate) fn dimensions(&self) -> (u32, u32) {
        match self {
            Canvas::Rgb(img) => img.dimensions(),
            Canvas::Rgba(img) => img.dimensions(),
        }
    }
}

/// The colours of the parts of the view the source does not cover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Colors {
    /// The view outside the (scaled) crop box: `bgc`, or transparent for alpha formats without
    /// an explicit `bgc`.
    pub(crate) view: [u8; 4],
    /// Inside the crop box where it reaches past the source: transparent for alpha formats;
    /// `view` otherwise.
    pub(crate) outside_source: [u8; 4],
    /// Whether the reply keeps alpha; when not, transparency is flattened on `view`.
    pub(crate) alpha: bool,
}

/// The resampling filter of a `ResMode`.
pub(crate) fn filter(mode: ResMode) -> FilterType {
    match mode {
        ResMode::Bilin => FilterType::Bilinear,
        ResMode::Bicub => FilterType::Mitchell,
        ResMode::Sharp2 => FilterType::Lanczos3,
        ResMode::Bisharp => FilterType::CatmullRom,
    }
}

/// Renders the view of `plan` from `decoded` (`None` when no source pixel is visible).
pub(crate) fn compose(
    plan: &Plan,
    decoded: Option<Decoded>,
    colors: Colors,
    filter: FilterType,
) -> Result<Canvas, ImageError> {
    let view = plan.view;
    let piece = match (plan.placement(), decoded) {
        (Some(placement), Some(decoded)) => Some((
            piece(decoded, &placement, plan.orientation, colors, filter)?,
            placement.dest,
        )),
        _ => None,
    };
    match piece {
        // The piece is the whole view: it is the reply.
        Some((piece, dest)) if dest.x0 == 0.0 && dest.y0 == 0.0 && piece.dimensions() == view => {
            Ok(piece)
        }
        piece => {
            let mut canvas = background(plan, colors);
            if let Some((piece, dest)) = piece {
                // `dest` has integer edges inside the view.
                let (x, y) = (dest.x0 as u32, dest.y0 as u32);
                match (&mut canvas, &piece) {
                    (Canvas::Rgb(c), Canvas::Rgb(p)) => paste(c, p, x, y),
                    (Canvas::Rgba(c), Canvas::Rgba(p)) => paste(c, p, x, y),
                    _ => return Err(ImageError::internal("mismatched pixel types")),
                }
            }
            Ok(canvas)
        }
    }
}

/// The view with nothing of the source in it yet.
fn background(plan: &Plan, colors: Colors) -> Canvas {
    let (w, h) = plan.view;
    if colors.alpha {
        let mut canvas = RgbaImage::from_pixel(w, h, image::Rgba(colors.view));
        if colors.outside_source != colors.view {
            fill(
                &mut canvas,
                &plan.box_in_view(),
                image::Rgba(colors.outside_source),
            );
        }
        Canvas::Rgba(canvas)
    } else {
        let [r, g, b, _] = colors.view;
        Canvas::Rgb(RgbImage::from_pixel(w, h, image::Rgb([r, g, b])))
    }
}

/// Builds the composite of a rotation by any angle, `extend` or `rgn` at source resolution, in
/// RGBA (what the rotation and the margins uncover is transparent): crop, flip and quarter
/// turns, rotation by the angle, then the window of the extended box cut to `rgn`. The result
/// is scaled by the fast path as if it were the source.
pub(crate) fn build_composite(
    decoded: Decoded,
    composite: &Composite,
    filter: FilterType,
) -> Result<Decoded, ImageError> {
    let (sw, sh) = composite.source;
    let image = if decoded.image.width() == sw && decoded.image.height() == sh {
        decoded.image
    } else {
        // An SVG raster (or a decoder that disagrees with the plan): back to the planned size.
        let bounds = Rect::sized(
            f64::from(decoded.image.width()),
            f64::from(decoded.image.height()),
        );
        resample(&decoded.image, bounds, (sw, sh), filter)?
    };
    let rgba = image.into_rgba8();
    let cropped = window(&rgba, &composite.crop, &composite.crop);
    drop(rgba);
    let oriented = orient(cropped, composite.orientation);
    let rotated = if composite.angle == 0.0 {
        oriented
    } else {
        rotate_any(&oriented, composite.angle, composite.rotated)
    };
    let out = window(&rotated, &composite.window, &composite.clip);
    Ok(Decoded {
        image: DynamicImage::ImageRgba8(out),
        scale: (1.0, 1.0),
        shrink: decoded.shrink,
    })
}

/// The `win` part of `img` (integer edges, in `img`'s pixels, may reach past it), showing `img`
/// only inside `clip`: transparent elsewhere.
fn window(img: &RgbaImage, win: &Rect, clip: &Rect) -> RgbaImage {
    let (w, h) = (win.width().max(1.0) as u32, win.height().max(1.0) as u32);
    let mut out = RgbaImage::new(w, h);
    let bounds = Rect::sized(f64::from(img.width()), f64::from(img.height()));
    let shown = win.intersect(clip).intersect(&bounds);
    if shown.is_empty() {
        return out;
    }
    let (x0, y0) = (shown.x0 as u32, shown.y0 as u32);
    let piece = imageops::crop_imm(img, x0, y0, shown.width() as u32, shown.height() as u32);
    // `shown` lies inside `win`, so the offsets are ≥ 0.
    let (dx, dy) = ((shown.x0 - win.x0) as i64, (shown.y0 - win.y0) as i64);
    imageops::replace(&mut out, &*piece, dx, dy);
    out
}

/// Turns `img` clockwise by `degrees` about its centre into a `size` box (the grown box, centred
/// on the same point): each output pixel samples the input bilinearly, alpha premultiplied, and
/// what falls outside the input is transparent, so the edges are smooth.
pub(crate) fn rotate_any(img: &RgbaImage, degrees: f64, size: (u32, u32)) -> RgbaImage {
    let (w, h) = img.dimensions();
    let (sin, cos) = degrees.to_radians().sin_cos();
    let mut out = RgbaImage::new(size.0, size.1);
    let (cx_in, cy_in) = (f64::from(w) / 2.0, f64::from(h) / 2.0);
    let (cx_out, cy_out) = (f64::from(size.0) / 2.0, f64::from(size.1) / 2.0);
    let raw = img.as_raw();
    // Premultiplied value of channel `c` at (x, y), transparent outside the image.
    let at = |x: i64, y: i64| -> [f64; 4] {
        if x < 0 || y < 0 || x >= i64::from(w) || y >= i64::from(h) {
            return [0.0; 4];
        }
        let i = ((y as usize) * (w as usize) + x as usize) * 4;
        let a = f64::from(raw[i + 3]) / 255.0;
        [
            f64::from(raw[i]) * a,
            f64::from(raw[i + 1]) * a,
            f64::from(raw[i + 2]) * a,
            f64::from(raw[i + 3]),
        ]
    };
    for (x, y, pixel) in out.enumerate_pixels_mut() {
        let dx = f64::from(x) + 0.5 - cx_out;
        let dy = f64::from(y) + 0.5 - cy_out;
        // The inverse of a clockwise turn (y pointing down).
        let sx = cx_in + dx * cos + dy * sin - 0.5;
        let sy = cy_in - dx * sin + dy * cos - 0.5;
        let (fx, fy) = (sx.floor(), sy.floor());
        let (tx, ty) = (sx - fx, sy - fy);
        let (ix, iy) = (fx as i64, fy as i64);
        let (p00, p10, p01, p11) = (
            at(ix, iy),
            at(ix + 1, iy),
            at(ix, iy + 1),
            at(ix + 1, iy + 1),
        );
        let mut v = [0.0; 4];
        for c in 0..4 {
            let top = p00[c] * (1.0 - tx) + p10[c] * tx;
            let bottom = p01[c] * (1.0 - tx) + p11[c] * tx;
            v[c] = top * (1.0 - ty) + bottom * ty;
        }
        let alpha = v[3];
        if alpha > 0.0 {
            let k = 255.0 / alpha;
            *pixel = image::Rgba([
                (v[0] * k).round().clamp(0.0, 255.0) as u8,
                (v[1] * k).round().clamp(0.0, 255.0) as u8,
                (v[2] * k).round().clamp(0.0, 255.0) as u8,
                alpha.round().clamp(0.0, 255.0) as u8,
            ]);
        }
    }
    out
}

/// The `rect` tile of a composed view: `rect` (integer edges, may reach past the view) cut out,
/// the part past the view taking the view's fill.
pub(crate) fn tile(canvas: Canvas, rect: &Rect, colors: Colors) -> Canvas {
    let (w, h) = (rect.width() as u32, rect.height() as u32);
    let (dx, dy) = (-(rect.x0 as i64), -(rect.y0 as i64));
    match canvas {
        Canvas::Rgb(view) => {
            let [r, g, b, _] = colors.view;
            let mut out = RgbImage::from_pixel(w, h, image::Rgb([r, g, b]));
            imageops::replace(&mut out, &view, dx, dy);
            Canvas::Rgb(out)
        }
        Canvas::Rgba(view) => {
            let mut out = RgbaImage::from_pixel(w, h, image::Rgba(colors.view));
            imageops::replace(&mut out, &view, dx, dy);
            Canvas::Rgba(out)
        }
    }
}

/// Resamples the placement's source region to its final size, converts it to the canvas's pixel
/// type (flattening alpha when the reply has none), then flips and rotates it.
fn piece(
    decoded: Decoded,
    placement: &Placement,
    orientation: Orientation,
    colors: Colors,
    filter: FilterType,
) -> Result<Canvas, ImageError> {
    let (sx, sy) = decoded.scale;
    let bounds = Rect::sized(
        f64::from(decoded.image.width()),
        f64::from(decoded.image.height()),
    );
    let src = placement.src.scale(sx, sy).snap().intersect(&bounds);
    if src.is_empty() {
        return Err(ImageError::internal("empty source region"));
    }
    let whole = src == bounds
        && decoded.image.width() == placement.piece.0
        && decoded.image.height() == placement.piece.1;
    let resampled = if whole {
        decoded.image
    } else {
        resample(&decoded.image, src, placement.piece, filter)?
    };
    Ok(if colors.alpha {
        Canvas::Rgba(orient(resampled.into_rgba8(), orientation))
    } else if resampled.color().has_alpha() {
        let [r, g, b, _] = colors.view;
        Canvas::Rgb(orient(
            flatten(&resampled.into_rgba8(), [r, g, b]),
            orientation,
        ))
    } else {
        Canvas::Rgb(orient(resampled.into_rgb8(), orientation))
    })
}

/// Resamples `src` (in `image`'s pixels) to `w`×`h`, in `image`'s own pixel type, alpha
/// premultiplied when it has alpha.
fn resample(
    image: &DynamicImage,
    src: Rect,
    (w, h): (u32, u32),
    filter: FilterType,
) -> Result<DynamicImage, ImageError> {
    let converted;
    let image = if IntoImageView::pixel_type(image).is_some() {
        image
    } else {
        converted = DynamicImage::ImageRgba8(image.to_rgba8());
        &converted
    };
    let mut out = DynamicImage::new(w, h, image.color());
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(filter))
        .crop(src.x0, src.y0, src.width(), src.height())
        .use_alpha(image.color().has_alpha());
    Resizer::new()
        .resize(image, &mut out, &options)
        .map_err(|e| ImageError::internal(format!("resampling failed: {e}")))?;
    Ok(out)
}

/// `rgba` over an opaque background.
fn flatten(rgba: &RgbaImage, bg: [u8; 3]) -> RgbImage {
    let (w, h) = rgba.dimensions();
    let mut out = Vec::with_capacity(rgba.as_raw().len() / 4 * 3);
    for p in rgba.as_raw().chunks_exact(4) {
        let a = u32::from(p[3]);
        for c in 0..3 {
            let v = (u32::from(p[c]) * a + u32::from(bg[c]) * (255 - a) + 127) / 255;
            out.push(v as u8);
        }
    }
    // The buffer has exactly w × h × 3 bytes.
    RgbImage::from_raw(w, h, out).unwrap_or_else(|| RgbImage::new(w, h))
}

/// Applies the flip then the clockwise rotation.
fn orient<P>(mut img: ImageBuffer<P, Vec<u8>>, orientation: Orientation) -> ImageBuffer<P, Vec<u8>>
where
    P: Pixel<Subpixel = u8> + 'static,
{
    if orientation.is_identity() {
        return img;
    }
    if orientation.flip_h {
        imageops::flip_horizontal_in_place(&mut img);
    }
    if orientation.flip_v {
        imageops::flip_vertical_in_place(&mut img);
    }
    match orientation.turns {
        1 => imageops::rotate90(&img),
        2 => {
            imageops::rotate180_in_place(&mut img);
            img
        }
        3 => imageops::rotate270(&img),
        _ => img,
    }
}

/// Copies `piece` into `canvas` at `(x, y)`, clipped to the canvas, row by row.
fn paste<P>(canvas: &mut ImageBuffer<P, Vec<u8>>, piece: &ImageBuffer<P, Vec<u8>>, x: u32, y: u32)
where
    P: Pixel<Subpixel = u8>,
{
    let n = usize::from(P::CHANNEL_COUNT);
    let (cw, ch) = canvas.dimensions();
    let (pw, ph) = piece.dimensions();
    if x >= cw || y >= ch {
        return;
    }
    let w = pw.min(cw - x) as usize;
    let rows = ph.min(ch - y) as usize;
    let (cw, pw, x, y) = (cw as usize, pw as usize, x as usize, y as usize);
    let dst: &mut [u8] = canvas;
    let src: &[u8] = piece;
    for row in 0..rows {
        let d = ((y + row) * cw + x) * n;
        let s = row * pw * n;
        if let (Some(d), Some(s)) = (dst.get_mut(d..d + w * n), src.get(s..s + w * n)) {
            d.copy_from_slice(s);
        }
    }
}

/// Fills `rect` (integer edges; clipped to the image) with `color`.
fn fill<P>(img: &mut ImageBuffer<P, Vec<u8>>, rect: &Rect, color: P)
where
    P: Pixel<Subpixel = u8>,
{
    let (w, h) = img.dimensions();
    let r = rect.intersect(&Rect::sized(f64::from(w), f64::from(h)));
    if r.is_empty() {
        return;
    }
    for y in r.y0 as u32..r.y1 as u32 {
        for x in r.x0 as u32..r.x1 as u32 {
            img.put_pixel(x, y, color);
        }
    }
}

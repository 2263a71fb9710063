//! The geometry of a reply, from sizes alone: the crop box, its flip and rotation, the composite
//! of a rotation by any angle, `extend` and `rgn` ([`Composite`]), the scale and the view, the
//! `rect` tile, and which source region lands where.
//!
//! Nothing here touches pixels, so `req=props` and the SVG raster size cost no decode, and
//! [`Plan::placement`] lets a render resample only the source pixels that stay visible.
//!
//! Coordinates are `f64` throughout: every size is bounded by [`MAX_SIDE`], so integers stay exact
//! and no product overflows.

use crate::imaging::catalog::Attributes;
use crate::imaging::request::{Crop, Extend, FitMode, Flip, ImageRequest};
use crate::imaging::ImageError;

use super::{OutputFormat, Plan};

/// Largest side of the crop box or of the scaled image, even when only a small view of it is
/// rendered: keeps coordinates exact in `f64` and every pixel count far from overflow.
pub(crate) const MAX_SIDE: f64 = (1u64 << 30) as f64;

/// Largest reply in pixels whatever the catalog's `MaxPix` says, so that a misconfigured catalog
/// cannot ask for a buffer that does not fit in memory.
const MAX_VIEW_PIXELS: u64 = 1 << 30;

/// Largest composite (and intermediate image) built at source resolution for a rotation by any
/// angle, `extend` or `rgn`, whatever `MaxSourcePix` allows: 64 Mpx, 256 MiB in RGBA.
pub(crate) const MAX_COMPOSITE_PIXELS: u64 = 1 << 26;

/// A half-open rectangle `[x0, x1) × [y0, y1)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Rect {
    /// Left edge.
    pub(crate) x0: f64,
    /// Top edge.
    pub(crate) y0: f64,
    /// Right edge (excluded).
    pub(crate) x1: f64,
    /// Bottom edge (excluded).
    pub(crate) y1: f64,
}

impl Rect {
    /// A rectangle from its edges.
    pub(crate) fn new(x0: f64, y0: f64, x1: f64, y1: f64) -> Self {
        Rect { x0, y0, x1, y1 }
    }

    /// `[0, w) × [0, h)`.
    pub(crate) fn sized(w: f64, h: f64) -> Self {
        Rect::new(0.0, 0.0, w, h)
    }

    /// Width (negative when empty).
    pub(crate) fn width(&self) -> f64 {
        self.x1 - self.x0
    }

    /// Height (negative when empty).
    pub(crate) fn height(&self) -> f64 {
        self.y1 - self.y0
    }

    /// Whether it holds no area (NaN edges count as empty).
    pub(crate) fn is_empty(&self) -> bool {
        !(self.x1 > self.x0 && self.y1 > self.y0)
    }

    /// The common part (empty when they do not overlap).
    pub(crate) fn intersect(&self, other: &Rect) -> Rect {
        Rect::new(
            self.x0.max(other.x0),
            self.y0.max(other.y0),
            self.x1.min(other.x1),
            self.y1.min(other.y1),
        )
    }

    /// Moved by `(dx, dy)`.
    pub(crate) fn translate(&self, dx: f64, dy: f64) -> Rect {
        Rect::new(self.x0 + dx, self.y0 + dy, self.x1 + dx, self.y1 + dy)
    }

    /// Every coordinate multiplied by `kx` or `ky`.
    pub(crate) fn scale(&self, kx: f64, ky: f64) -> Rect {
        Rect::new(self.x0 * kx, self.y0 * ky, self.x1 * kx, self.y1 * ky)
    }

    /// Edges within a millionth of a pixel of an integer put on it, so that float noise does not
    /// turn an exact copy into a resampling.
    pub(crate) fn snap(&self) -> Rect {
        let snap = |v: f64| {
            if (v - v.round()).abs() < 1e-6 {
                v.round()
            } else {
                v
            }
        };
        Rect::new(snap(self.x0), snap(self.y0), snap(self.x1), snap(self.y1))
    }

    /// Every edge rounded to the nearest integer.
    pub(crate) fn round(&self) -> Rect {
        Rect::new(
            self.x0.round(),
            self.y0.round(),
            self.x1.round(),
            self.y1.round(),
        )
    }
}

/// `flip` then `rotate`, applied to the crop box: a mirror first, then quarter turns clockwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Orientation {
    /// Left–right mirror.
    pub(crate) flip_h: bool,
    /// Up–down mirror.
    pub(crate) flip_v: bool,
    /// Quarter turns clockwise, 0–3.
    pub(crate) turns: u8,
}

impl Orientation {
    /// From `flip=` and a number of quarter turns clockwise (taken modulo 4).
    pub(crate) fn new(flip: Option<Flip>, turns: u8) -> Self {
        let (flip_h, flip_v) = match flip {
            None => (false, false),
            Some(Flip::Lr) => (true, false),
            Some(Flip::Ud) => (false, true),
            Some(Flip::Lrud) => (true, true),
        };
        Orientation {
            flip_h,
            flip_v,
            turns: turns % 4,
        }
    }

    /// Whether it changes nothing.
    pub(crate) fn is_identity(&self) -> bool {
        !self.flip_h && !self.flip_v && self.turns == 0
    }

    /// Whether width and height trade places (90° or 270°).
    pub(crate) fn swaps_axes(&self) -> bool {
        self.turns % 2 == 1
    }

    /// The size of a `(w, h)` box once oriented.
    pub(crate) fn oriented_size<T>(&self, (w, h): (T, T)) -> (T, T) {
        if self.swaps_axes() {
            (h, w)
        } else {
            (w, h)
        }
    }

    /// Where a rectangle of an unoriented `(w, h)` box goes in the oriented box.
    pub(crate) fn forward(&self, r: Rect, (w, h): (f64, f64)) -> Rect {
        let mut r = r;
        if self.flip_h {
            r = Rect::new(w - r.x1, r.y0, w - r.x0, r.y1);
        }
        if self.flip_v {
            r = Rect::new(r.x0, h - r.y1, r.x1, h - r.y0);
        }
        match self.turns {
            // (x, y) → (h − y, x)
            1 => Rect::new(h - r.y1, r.x0, h - r.y0, r.x1),
            // (x, y) → (w − x, h − y)
            2 => Rect::new(w - r.x1, h - r.y1, w - r.x0, h - r.y0),
            // (x, y) → (y, w − x)
            3 => Rect::new(r.y0, w - r.x1, r.y1, w - r.x0),
            _ => r,
        }
    }

    /// Where a rectangle of the oriented box comes from in the unoriented `(w, h)` box: the
    /// inverse of [`Orientation::forward`].
    pub(crate) fn inverse(&self, r: Rect, (w, h): (f64, f64)) -> Rect {
        let mut r = match self.turns {
            1 => Rect::new(r.y0, h - r.x1, r.y1, h - r.x0),
            2 => Rect::new(w - r.x1, h - r.y1, w - r.x0, h - r.y0),
            3 => Rect::new(w - r.y1, r.x0, w - r.y0, r.x1),
            _ => r,
        };
        if self.flip_v {
            r = Rect::new(r.x0, h - r.y1, r.x1, h - r.y0);
        }
        if self.flip_h {
            r = Rect::new(w - r.x1, r.y0, w - r.x0, r.y1);
        }
        r
    }
}

/// The one resampling step of a render: which source region is resampled to which part of the
/// view.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Placement {
    /// The part of the view the source pixels cover: integer edges, not empty.
    pub(crate) dest: Rect,
    /// The source region resampled into `dest`, in source pixels (fractional edges, inside the
    /// source).
    pub(crate) src: Rect,
    /// The resampled size before the flip and rotation: `dest`'s size, sides swapped by an odd
    /// number of quarter turns.
    pub(crate) piece: (u32, u32),
}

impl Plan {
    /// The size of the oriented crop box.
    fn oriented_box(&self) -> (f64, f64) {
        self.orientation
            .oriented_size((self.crop.width(), self.crop.height()))
    }

    /// Scale factors from the oriented crop box to the scaled image (reply pixels per source
    /// pixel), along the reply's axes.
    pub(crate) fn factors(&self) -> (f64, f64) {
        let (sw, sh) = self.oriented_box();
        (f64::from(self.scaled.0) / sw, f64::from(self.scaled.1) / sh)
    }

    /// The same factors along the source's axes (swapped by 90° and 270°).
    pub(crate) fn source_factors(&self) -> (f64, f64) {
        self.orientation.oriented_size(self.factors())
    }

    /// The part of the view covered by the scaled crop box: where a crop that reaches past the
    /// source stays transparent in formats with alpha, while the rest of the view takes `bgc`.
    pub(crate) fn box_in_view(&self) -> Rect {
        let (ox, oy) = (self.offset.0 as f64, self.offset.1 as f64);
        Rect::sized(f64::from(self.scaled.0), f64::from(self.scaled.1))
            .translate(ox, oy)
            .intersect(&Rect::sized(f64::from(self.view.0), f64::from(self.view.1)))
    }

    /// Which source pixels are resampled to which part of the view; `None` when no source pixel
    /// is visible (a crop outside the source, or a view that misses the image).
    pub(crate) fn placement(&self) -> Option<Placement> {
        let source = Rect::sized(f64::from(self.source.0), f64::from(self.source.1));
        let real = self.crop.intersect(&source);
        if real.is_empty() {
            return None;
        }
        let box_size = (self.crop.width(), self.crop.height());
        let in_box = real.translate(-self.crop.x0, -self.crop.y0);
        let oriented = self.orientation.forward(in_box, box_size);

        let (kx, ky) = self.factors();
        let scaled = Rect::sized(f64::from(self.scaled.0), f64::from(self.scaled.1));
        let (ox, oy) = (self.offset.0 as f64, self.offset.1 as f64);
        let visible = Rect::sized(f64::from(self.view.0), f64::from(self.view.1))
            .translate(-ox, -oy)
            .intersect(&scaled);
        // Rounded to whole reply pixels: a reply pixel is either the source's or the fill's.
        let dest = oriented
            .scale(kx, ky)
            .round()
            .intersect(&scaled)
            .intersect(&visible);
        if dest.is_empty() {
            return None;
        }

        let back = dest.scale(1.0 / kx, 1.0 / ky).intersect(&oriented);
        let src = self
            .orientation
            .inverse(back, box_size)
            .translate(self.crop.x0, self.crop.y0)
            .snap()
            .intersect(&real);
        if src.is_empty() {
            return None;
        }
        // `dest` has integer edges no larger than the view, so these conversions are exact.
        let size = (dest.width() as u32, dest.height() as u32);
        Some(Placement {
            dest: dest.translate(ox, oy),
            src,
            piece: self.orientation.oriented_size(size),
        })
    }
}

/// The pre-scale part of a request that cannot be folded into the fast path (crop box, flip
/// and quarter turns): a rotation by another angle, `extend`, or `rgn`. The render then builds
/// this composite at source resolution, and the plan scales it as if it were the source.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Composite {
    /// The source size the composite is planned for: the decoded pixels are resampled to it if
    /// they differ (an SVG raster).
    pub(crate) source: (u32, u32),
    /// The crop box in source pixels (integer edges, may reach past the source).
    pub(crate) crop: Rect,
    /// The flip and quarter turns of the crop box.
    pub(crate) orientation: Orientation,
    /// A rotation by any other angle, degrees clockwise, after the orientation (0: none).
    pub(crate) angle: f64,
    /// The size of the rotated image (the grown box).
    pub(crate) rotated: (u32, u32),
    /// The composite, as a window on the rotated image's pixels: the extended box, cut to `rgn`.
    /// Its size is the composite's.
    pub(crate) window: Rect,
    /// The extended box in the rotated image's pixels: the part of the window where the rotated
    /// image shows (a negative margin cuts it); the rest of the window is transparent.
    pub(crate) clip: Rect,
}

impl Composite {
    /// The composite's size in pixels.
    pub(crate) fn size(&self) -> (u32, u32) {
        // The window has integer edges and sides of at least 1, bounded by MAX_SIDE.
        (self.window.width() as u32, self.window.height() as u32)
    }
}

/// The rotation of `rotate=`, split into quarter turns (done exactly, by the fast path) and any
/// other angle (0 when the rotation is a multiple of 90°, else the whole angle, with no turns).
pub(crate) fn split_rotation(rotate: Option<f64>) -> Result<(u8, f64), ImageError> {
    let degrees = rotate.unwrap_or(0.0);
    if !degrees.is_finite() {
        return Err(ImageError::bad_value(
            "rotate",
            &degrees.to_string(),
            "must be a finite number",
        ));
    }
    let degrees = degrees.rem_euclid(360.0);
    let turns = (degrees / 90.0).round();
    if (degrees - turns * 90.0).abs() < 1e-9 {
        // `turns` is 0–4 here.
        Ok(((turns as u8) % 4, 0.0))
    } else {
        Ok((0, degrees))
    }
}

/// The size of a `w`×`h` image turned by `degrees`: the box that holds its four corners, rounded
/// up (a millionth of tolerance keeps an exact side exact), at least 1×1.
pub(crate) fn rotated_size((w, h): (f64, f64), degrees: f64) -> (f64, f64) {
    if degrees == 0.0 {
        return (w, h);
    }
    let (sin, cos) = degrees.to_radians().sin_cos();
    let (sin, cos) = (sin.abs(), cos.abs());
    let side = |v: f64| (v - 1e-6).ceil().max(1.0);
    (side(w * cos + h * sin), side(w * sin + h * cos))
}

/// The composite of `req` for a source of `source` pixels, or `None` when the fast path does it
/// all (no `extend`, no `rgn`, a rotation by a multiple of 90°). Each intermediate image is
/// limited to `MaxSourcePix` pixels (and [`MAX_COMPOSITE_PIXELS`]).
pub(crate) fn composite(
    source: (u32, u32),
    req: &ImageRequest,
    attrs: &Attributes,
) -> Result<Option<Composite>, ImageError> {
    let (turns, angle) = split_rotation(req.rotate)?;
    if angle == 0.0 && req.extend.is_none() && req.rgn.is_none() {
        return Ok(None);
    }
    let limit = attrs.max_source_pix.min(MAX_COMPOSITE_PIXELS);
    let check = |what: &str, (w, h): (f64, f64)| {
        if w > MAX_SIDE || h > MAX_SIDE || w * h > limit as f64 {
            return Err(ImageError::too_large(format!(
                "{what} of {w}×{h} pixels (at most {limit} pixels before scaling)"
            )));
        }
        Ok(())
    };
    let crop = crop_box(source, req)?;
    let orientation = Orientation::new(req.flip, turns);
    let oriented = orientation.oriented_size((crop.width(), crop.height()));
    check("a crop", oriented)?;
    let (rw, rh) = rotated_size(oriented, angle);
    check("a rotated image", (rw, rh))?;

    let clip = match req.extend {
        None => Rect::sized(rw, rh),
        Some(e) => extended_box((rw, rh), e)?,
    };
    let window = match req.rgn {
        None => clip,
        Some(rgn) => {
            let (_, r) = region_box(rgn, ("rgn", "rgnN"), (clip.width(), clip.height()))?;
            r.translate(clip.x0, clip.y0)
        }
    };
    check("a composite", (window.width(), window.height()))?;
    Ok(Some(Composite {
        source,
        crop,
        orientation,
        angle,
        rotated: (rw as u32, rh as u32),
        window,
        clip,
    }))
}

/// The box of `extend` around an image of `(w, h)`, in the image's pixels: integer edges, each
/// margin rounded on its own. Refused when negative margins leave nothing.
fn extended_box((w, h): (f64, f64), e: Extend) -> Result<Rect, ImageError> {
    let name = if e.normalized { "extendN" } else { "extend" };
    let shown = format!("{},{},{},{}", e.l, e.t, e.r, e.b);
    if ![e.l, e.t, e.r, e.b].iter().all(|v| v.is_finite()) {
        return Err(ImageError::bad_value(name, &shown, "needs finite numbers"));
    }
    let (l, t, r, b) = if e.normalized {
        (e.l * w, e.t * h, e.r * w, e.b * h)
    } else {
        (e.l, e.t, e.r, e.b)
    };
    let (l, t, r, b) = (l.round(), t.round(), r.round(), b.round());
    if [l, t, r, b].iter().any(|v| v.abs() > MAX_SIDE) {
        return Err(ImageError::too_large(format!("{name}={shown}")));
    }
    let extended = Rect::new(-l, -t, w + r, h + b);
    if extended.width() < 1.0 || extended.height() < 1.0 {
        return Err(ImageError::bad_value(
            name,
            &shown,
            "the negative margins leave no image",
        ));
    }
    Ok(extended)
}

/// Computes the plan; see [`super::plan`].
pub(super) fn plan(
    source: (u32, u32),
    req: &ImageRequest,
    attrs: &Attributes,
) -> Result<Plan, ImageError> {
    if source.0 == 0 || source.1 == 0 {
        return Err(ImageError::bad_source(
            &req.object,
            "the image has no pixels",
        ));
    }
    let composite = composite(source, req, attrs)?;
    // With a composite, the fast path scales it as it would a source: no crop, no orientation.
    let (base, crop, orientation) = match &composite {
        Some(c) => {
            let size = c.size();
            let whole = Rect::sized(f64::from(size.0), f64::from(size.1));
            (size, whole, Orientation::default())
        }
        None => {
            let (turns, _) = split_rotation(req.rotate)?;
            (
                source,
                crop_box(source, req)?,
                Orientation::new(req.flip, turns),
            )
        }
    };
    let (sw, sh) = orientation.oriented_size((crop.width(), crop.height()));
    let Fitted { scaled, view } = fit(sw, sh, req, attrs)?;

    let (ah, av) = req
        .align
        .map_or((0.0, 0.0), |a| (sanitize_align(a.h), sanitize_align(a.v)));
    let offset = (
        ((view.0 - scaled.0) * (1.0 + ah) / 2.0).round(),
        ((view.1 - scaled.1) * (1.0 + av) / 2.0).round(),
    );

    check_reply_size(view, attrs)?;
    let rect = req.rect.map(|r| {
        Rect::new(
            f64::from(r.x),
            f64::from(r.y),
            f64::from(r.x) + f64::from(r.w.max(1)),
            f64::from(r.y) + f64::from(r.h.max(1)),
        )
    });
    let reply = rect.map_or(view, |r| (r.width(), r.height()));
    if rect.is_some() {
        check_reply_size(reply, attrs)?;
    }

    let format = req.fmt.unwrap_or(OutputFormat::Jpeg);
    let quality = req.qlt.unwrap_or(attrs.jpeg_quality).clamp(1, 100);
    Ok(Plan {
        width: reply.0 as u32,
        height: reply.1 as u32,
        format,
        quality,
        source: base,
        crop,
        orientation,
        scaled: (scaled.0 as u32, scaled.1 as u32),
        offset: (offset.0 as i64, offset.1 as i64),
        view: (view.0 as u32, view.1 as u32),
        rect,
        composite,
    })
}

/// Refuses a view or reply larger than `MaxPix` (or than [`MAX_VIEW_PIXELS`]).
fn check_reply_size(view: (f64, f64), attrs: &Attributes) -> Result<(), ImageError> {
    let (max_w, max_h) = attrs.max_pix;
    if view.0 > f64::from(max_w) || view.1 > f64::from(max_h) {
        return Err(ImageError::too_large(format!(
            "a reply of {}×{} pixels exceeds MaxPix {max_w}×{max_h}",
            view.0, view.1
        )));
    }
    // Both sides are at most MAX_SIDE (2^30), so the product fits in u64.
    if (view.0 as u64) * (view.1 as u64) > MAX_VIEW_PIXELS {
        return Err(ImageError::too_large(format!(
            "a reply of {}×{} pixels",
            view.0, view.1
        )));
    }
    Ok(())
}

/// The crop box in source pixels, integer edges, at least 1×1; the whole source without `crop`.
fn crop_box((w, h): (u32, u32), req: &ImageRequest) -> Result<Rect, ImageError> {
    let (w, h) = (f64::from(w), f64::from(h));
    match req.crop {
        None => Ok(Rect::sized(w, h)),
        Some(crop) => region_box(crop, ("crop", "cropN"), (w, h)).map(|(_, r)| r),
    }
}

/// A region `x,y,w,h` of an image of `(w, h)` pixels (in pixels, or in fractions of its size):
/// integer edges, at least 1×1, may reach past the image. `names` are the commands' names, for
/// messages: (pixels, fractions).
fn region_box(
    region: Crop,
    names: (&'static str, &'static str),
    (w, h): (f64, f64),
) -> Result<(&'static str, Rect), ImageError> {
    let (name, [x, y, cw, ch]) = match region {
        Crop::Pixels { x, y, w, h } => (names.0, [x, y, w, h]),
        Crop::Normalized { x, y, w, h } => (names.1, [x, y, w, h]),
    };
    if ![x, y, cw, ch].iter().all(|v| v.is_finite()) || cw <= 0.0 || ch <= 0.0 {
        return Err(ImageError::bad_value(
            name,
            &format!("{x},{y},{cw},{ch}"),
            "needs finite numbers and a positive size",
        ));
    }
    let (x, y, cw, ch) = match region {
        Crop::Pixels { .. } => (x, y, cw, ch),
        Crop::Normalized { .. } => (x * w, y * h, cw * w, ch * h),
    };
    // Edges are rounded one by one, so that cropN tiles of one image meet without gap or overlap.
    let (x0, y0) = (x.round(), y.round());
    let x1 = (x + cw).round().max(x0 + 1.0);
    let y1 = (y + ch).round().max(y0 + 1.0);
    let within = |v: f64| v.abs() <= MAX_SIDE;
    if ![x0, y0, x1, y1].into_iter().all(within) || x1 - x0 > MAX_SIDE || y1 - y0 > MAX_SIDE {
        return Err(ImageError::too_large(format!(
            "a {name} of {}×{} at {},{}",
            x1 - x0,
            y1 - y0,
            x0,
            y0
        )));
    }
    Ok((name, Rect::new(x0, y0, x1, y1)))
}

/// The size of the scaled image and of the view, in whole pixels.
struct Fitted {
    /// The oriented crop box, scaled.
    scaled: (f64, f64),
    /// The reply.
    view: (f64, f64),
}

/// Scales an oriented crop box of `sw`×`sh` and sizes the view, by `wid`, `hei`, `scl`, `fit`
/// and `DefaultPix`.
fn fit(sw: f64, sh: f64, req: &ImageRequest, attrs: &Attributes) -> Result<Fitted, ImageError> {
    let wid = positive("wid", req.wid)?;
    let hei = positive("hei", req.hei)?;
    let scl = match req.scl {
        Some(s) if !(s.is_finite() && s > 0.0) => {
            return Err(ImageError::bad_value("scl", &s.to_string(), "must be > 0"));
        }
        other => other,
    };
    let (mode, upscale) = req
        .fit
        .map_or((FitMode::Fit, false), |f| (f.mode, f.upscale));

    let sized = |k: f64| -> Result<(f64, f64), ImageError> { Ok((px(sw * k)?, px(sh * k)?)) };
    let (scaled, view) = match (wid, hei, scl) {
        (_, _, Some(s)) => {
            let scaled = (px(sw / s)?, px(sh / s)?);
            (scaled, (wid.unwrap_or(scaled.0), hei.unwrap_or(scaled.1)))
        }
        (None, None, None) => {
            let room = |max: u32, side: f64| {
                if max == 0 {
                    f64::INFINITY
                } else {
                    f64::from(max) / side
                }
            };
            let (dw, dh) = attrs.default_pix;
            let scaled = sized(room(dw, sw).min(room(dh, sh)).min(1.0))?;
            (scaled, scaled)
        }
        (Some(_), None, None) | (None, Some(_), None) => {
            let asked = match (wid, hei) {
                (Some(w), _) => w / sw,
                (_, Some(h)) => h / sh,
                _ => 1.0,
            };
            // Alone, wid or hei scales to exactly that size; an explicit `fit=…,0` forbids
            // enlarging.
            let capped = req.fit.is_some() && !upscale && mode != FitMode::Stretch && asked > 1.0;
            let mut scaled = sized(if capped { 1.0 } else { asked })?;
            if !capped {
                // The asked side is exact, whatever the rounding of the factor.
                scaled = (wid.unwrap_or(scaled.0), hei.unwrap_or(scaled.1));
            }
            (scaled, scaled)
        }
        (Some(w), Some(h), None) => match mode {
            FitMode::Fit | FitMode::Constrain => {
                let mut k = (w / sw).min(h / sh);
                if !upscale {
                    k = k.min(1.0);
                }
                let (dw, dh) = sized(k)?;
                let scaled = (dw.min(w), dh.min(h));
                let view = if mode == FitMode::Fit { (w, h) } else { scaled };
                (scaled, view)
            }
            FitMode::Crop => {
                let mut k = (w / sw).max(h / sh);
                if !upscale {
                    k = k.min(1.0);
                }
                let scaled = sized(k)?;
                (scaled, (scaled.0.min(w), scaled.1.min(h)))
            }
            FitMode::Wrap => {
                let mut k = (w / sw).max(h / sh);
                if !upscale {
                    k = k.min(1.0);
                }
                let scaled = sized(k)?;
                (scaled, scaled)
            }
            FitMode::Hfit | FitMode::Vfit => {
                let asked = if mode == FitMode::Hfit {
                    w / sw
                } else {
                    h / sh
                };
                let k = if upscale { asked } else { asked.min(1.0) };
                let mut scaled = sized(k)?;
                // The fitted side is exact, whatever the rounding of the factor.
                if k == asked {
                    if mode == FitMode::Hfit {
                        scaled.0 = w;
                    } else {
                        scaled.1 = h;
                    }
                }
                (scaled, (w, h))
            }
            FitMode::Stretch => ((w, h), (w, h)),
        },
    };
    Ok(Fitted { scaled, view })
}

/// `wid` or `hei` as a float, refusing 0 (the parser already does; this is the second wall).
fn positive(name: &str, v: Option<u32>) -> Result<Option<f64>, ImageError> {
    match v {
        Some(0) => Err(ImageError::bad_value(name, "0", "must be > 0")),
        Some(v) if f64::from(v) > MAX_SIDE => Err(ImageError::too_large(format!("{name}={v}"))),
        other => Ok(other.map(f64::from)),
    }
}

/// A computed side, rounded to whole pixels, at least 1, refused when absurdly large.
fn px(v: f64) -> Result<f64, ImageError> {
    if !v.is_finite() || v.round() > MAX_SIDE {
        return Err(ImageError::too_large("the scaled image"));
    }
    Ok(v.round().max(1.0))
}

/// An `align` component clamped to −1…1, NaN read as centred.
fn sanitize_align(v: f64) -> f64 {
    if v.is_finite() {
        v.clamp(-1.0, 1.0)
    } else {
        0.0
    }
}

/// The source size the raster pipeline uses for an SVG of intrinsic size `(w, h)`: rounded, at
/// least 1×1.
pub(super) fn svg_source_size((w, h): (f64, f64), object: &str) -> Result<(u32, u32), ImageError> {
    let side = |v: f64| -> Result<u32, ImageError> {
        if !(v.is_finite() && v > 0.0) {
            return Err(ImageError::bad_source(object, "the SVG has no usable size"));
        }
        if v > MAX_SIDE {
            return Err(ImageError::too_large("the SVG's intrinsic size"));
        }
        Ok(v.round().max(1.0) as u32)
    };
    Ok((side(w)?, side(h)?))
}

/// Computes the SVG raster size; see [`super::svg_raster_size`].
pub(super) fn svg_raster_size(
    intrinsic: (f64, f64),
    req: &ImageRequest,
    attrs: &Attributes,
) -> Result<(u32, u32), ImageError> {
    let source = svg_source_size(intrinsic, &req.object)?;
    let plan = plan(source, req, attrs)?;
    // A composite is built at source resolution: the raster is the SVG at its intrinsic size.
    let (ax, ay) = if plan.composite.is_some() {
        (1.0, 1.0)
    } else {
        plan.source_factors()
    };
    // Rounded up so that the raster never needs enlarging; the epsilon keeps 300.0000001 at 300.
    let side = |len: u32, k: f64| -> Result<u32, ImageError> {
        let v = (f64::from(len) * k - 1e-6).ceil().max(1.0);
        if v > MAX_SIDE {
            return Err(ImageError::too_large("the SVG rasterisation"));
        }
        Ok(v as u32)
    };
    let (w, h) = (side(source.0, ax)?, side(source.1, ay)?);
    if u64::from(w) * u64::from(h) > attrs.max_svg_pix {
        return Err(ImageError::too_large(format!(
            "an SVG rasterisation of {w}×{h} pixels exceeds {} pixels",
            attrs.max_svg_pix
        )));
    }
    Ok((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(r: Rect) -> (f64, f64) {
        (r.width(), r.height())
    }

    #[test]
    fn forward_and_inverse_are_inverse_for_every_orientation() {
        let r = Rect::new(1.0, 2.0, 4.0, 3.0);
        let box_size = (10.0, 6.0);
        for flip in [None, Some(Flip::Lr), Some(Flip::Ud), Some(Flip::Lrud)] {
            for rotate in [0, 1, 2, 3] {
                let o = Orientation::new(flip, rotate);
                let f = o.forward(r, box_size);
                assert_eq!(o.inverse(f, box_size), r, "{flip:?} {rotate}");
                let oriented = o.oriented_size(box_size);
                assert!(f.x0 >= 0.0 && f.y0 >= 0.0 && f.x1 <= oriented.0 && f.y1 <= oriented.1);
                assert_eq!(size(f), o.oriented_size(size(r)));
            }
        }
    }

    #[test]
    fn rotation_90_moves_the_top_row_to_the_right_column() {
        let o = Orientation::new(None, 1);
        // The top row of a 10×6 box becomes the right column of the 6×10 box.
        let top = Rect::new(0.0, 0.0, 10.0, 1.0);
        assert_eq!(o.forward(top, (10.0, 6.0)), Rect::new(5.0, 0.0, 6.0, 10.0));
        let o = Orientation::new(None, 3);
        assert_eq!(o.forward(top, (10.0, 6.0)), Rect::new(0.0, 0.0, 1.0, 10.0));
    }

    #[test]
    fn placement_resamples_only_the_visible_source() {
        let attrs = Attributes::default();
        // A crop reaching 100 pixels left of a 400×200 source, halved.
        let req = ImageRequest {
            object: "x".into(),
            crop: Some(Crop::Pixels {
                x: -100.0,
                y: 0.0,
                w: 300.0,
                h: 200.0,
            }),
            scl: Some(2.0),
            ..Default::default()
        };
        let p = plan((400, 200), &req, &attrs).unwrap();
        assert_eq!((p.width, p.height), (150, 100));
        let placement = p.placement().unwrap();
        assert_eq!(placement.dest, Rect::new(50.0, 0.0, 150.0, 100.0));
        assert_eq!(placement.src, Rect::new(0.0, 0.0, 200.0, 200.0));
        assert_eq!(placement.piece, (100, 100));
        // A huge zoom through a small view touches a few source pixels only.
        let req = ImageRequest {
            object: "x".into(),
            scl: Some(0.01),
            wid: Some(100),
            hei: Some(100),
            align: Some(crate::imaging::request::Align { h: -1.0, v: -1.0 }),
            ..Default::default()
        };
        let placement = plan((400, 200), &req, &attrs).unwrap().placement().unwrap();
        assert_eq!(placement.src, Rect::new(0.0, 0.0, 1.0, 1.0));
        assert_eq!(placement.piece, (100, 100));
        // Nothing visible: nothing to decode.
        let req = ImageRequest {
            object: "x".into(),
            crop: Some(Crop::Pixels {
                x: 500.0,
                y: 0.0,
                w: 10.0,
                h: 10.0,
            }),
            ..Default::default()
        };
        assert_eq!(plan((400, 200), &req, &attrs).unwrap().placement(), None);
    }

    #[test]
    fn rotations_split_into_quarter_turns_or_an_angle() {
        assert_eq!(split_rotation(None).unwrap(), (0, 0.0));
        assert_eq!(split_rotation(Some(90.0)).unwrap(), (1, 0.0));
        assert_eq!(split_rotation(Some(450.0)).unwrap(), (1, 0.0));
        assert_eq!(split_rotation(Some(-90.0)).unwrap(), (3, 0.0));
        assert_eq!(split_rotation(Some(360.0)).unwrap(), (0, 0.0));
        assert_eq!(split_rotation(Some(45.0)).unwrap(), (0, 45.0));
        assert_eq!(split_rotation(Some(-30.0)).unwrap(), (0, 330.0));
        assert_eq!(split_rotation(Some(f64::NAN)).unwrap_err().status, 403);
        assert_eq!(rotated_size((100.0, 100.0), 45.0), (142.0, 142.0));
        assert_eq!(rotated_size((100.0, 50.0), 0.0), (100.0, 50.0));
        assert_eq!(rotated_size((100.0, 50.0), 90.0), (50.0, 100.0));
    }
}

//! The request model: one image request, parsed and validated, independent of how it arrived.
//!
//! `ps` builds it from the URL ([`crate::imaging::query::parse`]) and sends it to `is` as JSON;
//! `is` applies the catalog's defaults to what is left unset and runs the pipeline. Every field
//! is `None` when the URL did not set it, so the defaults stay the catalog's business.

use serde::{Deserialize, Serialize};

pub use crate::imaging::catalog::ResMode;

/// One request for an image or for text about it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRequest {
    /// The object, percent-decoded: `[catalog/]id` or a path below the image root, `/`-separated,
    /// never empty, never with `..`, `.` or empty elements (the parser refuses those).
    pub object: String,
    /// What to answer: the image (default) or a text answer.
    #[serde(default)]
    pub req: Req,
    /// View width in pixels.
    pub wid: Option<u32>,
    /// View height in pixels.
    pub hei: Option<u32>,
    /// Inverse scale factor (`scl=2` halves), > 0.
    pub scl: Option<f64>,
    /// How `wid` and `hei` fit the image.
    pub fit: Option<Fit>,
    /// Where the image sits in the view when it does not fill it: each in −1…1, (0, 0) centred.
    pub align: Option<Align>,
    /// Background colour where the image does not cover the view, and under transparency for
    /// formats without alpha.
    pub bgc: Option<Rgba>,
    /// Crop of the source, before anything else.
    pub crop: Option<Crop>,
    /// Mirror, after the crop.
    pub flip: Option<Flip>,
    /// Clockwise rotation in degrees, after the flip, normalised to 0 ≤ angle < 360; the box
    /// grows to hold the turned image.
    pub rotate: Option<f64>,
    /// `extend`/`extendN`: margins added around the (cropped, flipped, rotated) image; negative
    /// margins crop it.
    pub extend: Option<Extend>,
    /// `rgn`/`rgnN`: the region of the composite (the image after crop, flip, rotate and extend)
    /// that is scaled into the view.
    pub rgn: Option<Crop>,
    /// `rect`: the tile of the final view that is replied, after scaling.
    pub rect: Option<ViewRect>,
    /// `op_sharpen=1`: a mild unsharp mask after scaling.
    pub op_sharpen: Option<bool>,
    /// `op_usm`: an unsharp mask after scaling.
    pub op_usm: Option<Usm>,
    /// `resMode`: the resampling filter, instead of the catalog's `ResMode`.
    pub res_mode: Option<ResMode>,
    /// `defaultImage`: the object served when the requested one is missing, instead of the
    /// catalog's `DefaultImage`; checked like the object itself.
    pub default_image: Option<String>,
    /// Output format.
    pub fmt: Option<OutputFormat>,
    /// JPEG / lossy WebP quality, 1–100.
    pub qlt: Option<u8>,
    /// `cache=`: how the client and `ps`'s response cache may keep the reply. Not part of the
    /// reply itself: two requests that differ only here share one cache entry.
    #[serde(default)]
    pub cache: Option<CacheControl>,
}

/// `cache=client,server` (one value sets both).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheControl {
    /// What the client (and proxies) may do: `Cache-Control` of the reply.
    pub client: CacheMode,
    /// What `ps`'s response cache does.
    pub server: CacheMode,
}

/// One side of `cache=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheMode {
    /// Cache as usual (the default).
    On,
    /// Do not cache: the client gets `no-store`; `ps` neither reads nor writes its cache.
    Off,
    /// Check the source before using a cached reply (`ps`); revalidate (client: `no-cache`).
    Validate,
    /// Render again and replace the cached reply (`ps`); for the client, the same as `on`.
    Update,
}

/// What `req=` asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Req {
    /// The image (`req=img`, the default).
    #[default]
    Img,
    /// Properties of the reply image (`req=props`).
    Props(TextFormat),
    /// Properties of the source image (`req=imageprops`).
    ImageProps(TextFormat),
    /// Whether the object exists (`req=exists`): `catalogRecord.exists=0|1`.
    Exists(TextFormat),
}

/// The form of a text answer (`req=props,json`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextFormat {
    /// Java-properties style, starting with `#S7Z OK` (the default).
    #[default]
    Text,
    /// One JSON object.
    Json,
    /// A small XML document.
    Xml,
}

/// `fit=mode[,upscale]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fit {
    /// The mode.
    pub mode: FitMode,
    /// Whether the image may be enlarged (`fit=fit,1`); default no.
    pub upscale: bool,
}

/// How the image fits a `wid`×`hei` view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FitMode {
    /// Fit inside the view, keep the aspect ratio; the reply is exactly `wid`×`hei`, the rest
    /// filled by `bgc` (the default when both are given).
    Fit,
    /// Like `fit`, but the reply is only as large as the scaled image (no fill).
    Constrain,
    /// Cover the view, keep the aspect ratio, crop what overflows (by `align`).
    Crop,
    /// Exactly `wid`×`hei`, aspect ratio not kept.
    Stretch,
    /// Cover the view like `crop`, but the reply grows to the scaled image instead of cropping
    /// it (one side is `wid` or `hei`, the other at least as large).
    Wrap,
    /// Scale to exactly `wid` wide; the reply is `wid`×`hei`, the height cropped or filled by
    /// `align`.
    Hfit,
    /// Scale to exactly `hei` high; the reply is `wid`×`hei`, the width cropped or filled by
    /// `align`.
    Vfit,
}

/// `align=h,v`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Align {
    /// −1 left … 0 centre … 1 right.
    pub h: f64,
    /// −1 top … 0 centre … 1 bottom.
    pub v: f64,
}

/// A colour with alpha, 8 bits per channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rgba(pub [u8; 4]);

/// `crop=x,y,w,h` (source pixels) or `cropN=x,y,w,h` (0–1 of the source size). May reach past
/// the source; the part outside takes `bgc` (or transparency).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Crop {
    /// In source pixels.
    Pixels {
        /// Left.
        x: f64,
        /// Top.
        y: f64,
        /// Width (> 0).
        w: f64,
        /// Height (> 0).
        h: f64,
    },
    /// In fractions of the source size.
    Normalized {
        /// Left.
        x: f64,
        /// Top.
        y: f64,
        /// Width (> 0).
        w: f64,
        /// Height (> 0).
        h: f64,
    },
}

/// `extend=l,t,r,b` (pixels) or `extendN=l,t,r,b` (fractions of the image's width for `l`
/// and `r`, of its height for `t` and `b`). Negative margins crop.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Extend {
    /// Left margin.
    pub l: f64,
    /// Top margin.
    pub t: f64,
    /// Right margin.
    pub r: f64,
    /// Bottom margin.
    pub b: f64,
    /// Whether the margins are fractions of the image size (`extendN`).
    pub normalized: bool,
}

/// `rect=x,y,w,h`: a tile of the view in view pixels; the part past the view takes the fill.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewRect {
    /// Left, ≥ 0.
    pub x: u32,
    /// Top, ≥ 0.
    pub y: u32,
    /// Width, ≥ 1.
    pub w: u32,
    /// Height, ≥ 1.
    pub h: u32,
}

/// `op_usm=amount,radius,threshold,monochrome`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Usm {
    /// Strength, 0–5: the difference from the blurred image is added this many times.
    pub amount: f64,
    /// The blur's standard deviation in reply pixels, 0–250.
    pub radius: f64,
    /// Differences (0–255 levels) below this are left alone, 0–255.
    pub threshold: u8,
    /// Sharpen the luminance only (no colour fringes).
    pub mono: bool,
}

/// `flip=lr|ud|lrud`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flip {
    /// Left–right mirror.
    Lr,
    /// Up–down mirror.
    Ud,
    /// Both.
    Lrud,
}

/// `fmt=` in this release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputFormat {
    /// JPEG, no alpha (the default).
    Jpeg,
    /// PNG without alpha.
    Png,
    /// PNG with alpha.
    PngAlpha,
    /// Lossy WebP without alpha.
    Webp,
    /// Lossy WebP with alpha.
    WebpAlpha,
    /// GIF (palette, no alpha).
    Gif,
    /// TIFF without alpha (uncompressed).
    Tif,
    /// TIFF with alpha (uncompressed).
    TifAlpha,
}

impl OutputFormat {
    /// The MIME type of the reply.
    pub fn mime(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "image/jpeg",
            OutputFormat::Png | OutputFormat::PngAlpha => "image/png",
            OutputFormat::Webp | OutputFormat::WebpAlpha => "image/webp",
            OutputFormat::Gif => "image/gif",
            OutputFormat::Tif | OutputFormat::TifAlpha => "image/tiff",
        }
    }

    /// Whether the reply keeps transparency (else it is flattened on `bgc`).
    pub fn has_alpha(self) -> bool {
        matches!(
            self,
            OutputFormat::PngAlpha | OutputFormat::WebpAlpha | OutputFormat::TifAlpha
        )
    }

    /// The protocol's name (`png-alpha`).
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "jpeg",
            OutputFormat::Png => "png",
            OutputFormat::PngAlpha => "png-alpha",
            OutputFormat::Webp => "webp",
            OutputFormat::WebpAlpha => "webp-alpha",
            OutputFormat::Gif => "gif",
            OutputFormat::Tif => "tif",
            OutputFormat::TifAlpha => "tif-alpha",
        }
    }
}

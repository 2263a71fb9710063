//! Catalogs: `<home>/catalog/*.ini`, their attributes (limits and defaults) and their ids.
//!
//! INTERFACE DRAFT: bodies are being written; the types below are fixed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::imaging::request::Rgba;
use crate::imaging::ImageError;

/// Resampling quality (`ResMode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResMode {
    /// Bilinear.
    Bilin,
    /// Bicubic.
    Bicub,
    /// Lanczos3 (sharper).
    Sharp2,
    /// Catmull-Rom (sharp bicubic).
    Bisharp,
}

/// A catalog's attributes: the limits and defaults of every request resolved through it.
#[derive(Clone, Debug, PartialEq)]
pub struct Attributes {
    /// Output size when neither `wid`, `hei` nor `scl` is given: the image is fitted inside.
    pub default_pix: (u32, u32),
    /// Largest output; a larger one is an error.
    pub max_pix: (u32, u32),
    /// Largest source, in pixels (width × height), checked from the header before decoding.
    pub max_source_pix: u64,
    /// JPEG and lossy WebP quality when `qlt` is not given.
    pub jpeg_quality: u8,
    /// Background colour when `bgc` is not given.
    pub bkg_color: Rgba,
    /// How long clients and caches may keep an image (`Cache-Control: max-age`).
    pub expiration: Duration,
    /// Whether error messages may name objects and reasons in detail (internal servers).
    pub error_detail: bool,
    /// Object served when the requested one is missing (empty: none).
    pub default_image: Option<String>,
    /// Resampling quality.
    pub res_mode: ResMode,
    /// Largest reply, in bytes.
    pub max_reply_bytes: usize,
    /// Largest SVG source, in bytes.
    pub max_svg_bytes: usize,
    /// Largest SVG rasterisation, in pixels.
    pub max_svg_pix: u64,
}

impl Default for Attributes {
    fn default() -> Self {
        Attributes {
            default_pix: (2000, 2000),
            max_pix: (8000, 8000),
            max_source_pix: 100_000_000,
            jpeg_quality: 80,
            bkg_color: Rgba([255, 255, 255, 255]),
            expiration: Duration::from_secs(10 * 3600),
            error_detail: false,
            default_image: None,
            res_mode: ResMode::Sharp2,
            max_reply_bytes: 16 * 1024 * 1024,
            max_svg_bytes: 1024 * 1024,
            max_svg_pix: 4_000_000,
        }
    }
}

/// One catalog.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    /// Its name (`default` for `default.ini`).
    pub name: String,
    /// Its attributes (the default catalog's, overridden by its own).
    pub attributes: Attributes,
    /// Catalog ids → paths below the image root.
    pub ids: HashMap<String, String>,
}

/// Every catalog of a home.
#[derive(Clone, Debug, Default)]
pub struct Catalogs {
    /// `default.ini` (built-in defaults when absent).
    pub default: Catalog,
    /// The others, by name.
    pub named: HashMap<String, Catalog>,
}

/// Where an object resolved to.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    /// The catalog whose attributes apply.
    pub catalog: String,
    /// The source file, absolute, checked to be below the image root (after symlinks).
    pub path: PathBuf,
}

//! Encoding the reply's pixels in the asked format.
//!
//! JPEG, PNG, GIF and TIFF (uncompressed, the only kind `image` writes) through `image`; lossy WebP (with or without alpha) through libwebp, since
//! `image` only writes lossless WebP. Each format's size limit is checked first, so that a
//! reply too large for its format is a clear `too_large` rather than an encoder failure.
//!
//! JPEG chroma: `image`'s `JpegEncoder` always writes 4:4:4 (no chroma subsampling) and has no
//! setting for it, so every JPEG reply is what `qlt=…,1` asks for; `qlt=…,0` (subsampling
//! allowed) is accepted and gives the same 4:4:4 file.

use std::panic::{catch_unwind, AssertUnwindSafe};

use image::codecs::gif::GifEncoder;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::codecs::tiff::TiffEncoder;
use image::{ExtendedColorType, ImageEncoder};

use crate::imaging::ImageError;

use super::compose::Canvas;
use super::OutputFormat;

/// Largest side of a JPEG or GIF.
const MAX_SIDE_16_BIT: u32 = 65_535;
/// Largest side of a WebP.
const MAX_SIDE_WEBP: u32 = 16_383;
/// GIF quantisation speed (1 best … 30 fastest): 10 is NeuQuant's usual trade-off; 1 is far too
/// slow for a server.
const GIF_SPEED: i32 = 10;

/// Encodes `canvas` (RGB for formats without alpha, RGBA for the others).
pub(crate) fn encode(
    canvas: Canvas,
    format: OutputFormat,
    quality: u8,
) -> Result<Vec<u8>, ImageError> {
    let (w, h) = canvas.dimensions();
    let max = match format {
        OutputFormat::Webp | OutputFormat::WebpAlpha => MAX_SIDE_WEBP,
        _ => MAX_SIDE_16_BIT,
    };
    if w > max || h > max {
        return Err(ImageError::too_large(format!(
            "{w}×{h} pixels in {} (at most {max} a side)",
            format.name()
        )));
    }
    // The canvas's pixel type follows the format; convert defensively if it does not.
    let canvas = match (format.has_alpha(), canvas) {
        (true, Canvas::Rgb(img)) => Canvas::Rgba(image::DynamicImage::ImageRgb8(img).into_rgba8()),
        (false, Canvas::Rgba(img)) => Canvas::Rgb(image::DynamicImage::ImageRgba8(img).into_rgb8()),
        (_, canvas) => canvas,
    };
    let quality = quality.clamp(1, 100);
    match catch_unwind(AssertUnwindSafe(|| encode_inner(&canvas, format, quality))) {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(why)) => Err(ImageError::internal(format!(
            "encoding {} failed: {why}",
            format.name()
        ))),
        Err(_) => Err(ImageError::internal(format!(
            "encoding {} failed",
            format.name()
        ))),
    }
}

fn encode_inner(canvas: &Canvas, format: OutputFormat, quality: u8) -> Result<Vec<u8>, String> {
    let (w, h) = canvas.dimensions();
    let (raw, color): (&[u8], _) = match canvas {
        Canvas::Rgb(img) => (img.as_raw(), ExtendedColorType::Rgb8),
        Canvas::Rgba(img) => (img.as_raw(), ExtendedColorType::Rgba8),
    };
    let mut out = Vec::with_capacity(raw.len() / 8);
    match format {
        OutputFormat::Jpeg => JpegEncoder::new_with_quality(&mut out, quality)
            .write_image(raw, w, h, color)
            .map_err(|e| e.to_string())?,
        OutputFormat::Png | OutputFormat::PngAlpha => PngEncoder::new(&mut out)
            .write_image(raw, w, h, color)
            .map_err(|e| e.to_string())?,
        OutputFormat::Gif => GifEncoder::new_with_speed(&mut out, GIF_SPEED)
            .encode(raw, w, h, color)
            .map_err(|e| e.to_string())?,
        OutputFormat::Tif | OutputFormat::TifAlpha => {
            let mut cursor = std::io::Cursor::new(&mut out);
            TiffEncoder::new(&mut cursor)
                .write_image(raw, w, h, color)
                .map_err(|e| e.to_string())?;
        }
        OutputFormat::Webp | OutputFormat::WebpAlpha => {
            let encoder = match canvas {
                Canvas::Rgb(_) => webp::Encoder::from_rgb(raw, w, h),
                Canvas::Rgba(_) => webp::Encoder::from_rgba(raw, w, h),
            };
            let memory = encoder
                .encode_simple(false, f32::from(quality))
                .map_err(|e| format!("{e:?}"))?;
            out.extend_from_slice(&memory);
        }
    }
    Ok(out)
}

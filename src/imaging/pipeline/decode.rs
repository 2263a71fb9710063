//! Decoding an encoded source into pixels: shrink-on-load for JPEG, limits against
//! decompression bombs, and every failure (a decoder's panic included) turned into
//! `bad_source`.
//!
//! The decoded image keeps the decoder's own pixel type (grey, RGB, RGBA, 16-bit…): the resampler
//! works on any of them, so the only conversion is of the small resampled piece.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};

use image::{DynamicImage, GrayImage, ImageFormat, ImageReader, Limits, RgbImage};

use crate::imaging::ImageError;

use super::{SourceFormat, SourceInfo};

/// A decoded source.
#[derive(Debug)]
pub(crate) struct Decoded {
    /// The pixels, in the decoder's pixel type.
    pub(crate) image: DynamicImage,
    /// Decoded pixels per source pixel along each axis: 1 unless shrunk on load (or an SVG
    /// rasterised at another size than its intrinsic one).
    pub(crate) scale: (f64, f64),
    /// The JPEG DCT scale denominator used: 1 for a full decode, 2, 4 or 8 when shrunk on load.
    pub(crate) shrink: u8,
}

/// The denominator (1, 2, 4 or 8) of the smallest JPEG DCT scale that still gives at least
/// `factor` decoded pixels per source pixel: 1 (no shrink-on-load) above ½.
pub(crate) fn jpeg_shrink(factor: f64) -> u8 {
    [8u8, 4, 2]
        .into_iter()
        .find(|&d| factor > 0.0 && factor <= 1.0 / f64::from(d))
        .unwrap_or(1)
}

/// Decodes `bytes`, whose header said `info`; `factor` is the largest of the plan's scale factors
/// (reply pixels per source pixel), which lets a JPEG be decoded at a smaller DCT scale.
pub(crate) fn decode(
    bytes: &[u8],
    object: &str,
    info: &SourceInfo,
    factor: f64,
) -> Result<Decoded, ImageError> {
    match catch_unwind(AssertUnwindSafe(|| decode_inner(bytes, info, factor))) {
        Ok(Ok(decoded)) => Ok(decoded),
        Ok(Err(why)) => Err(ImageError::bad_source(object, why)),
        Err(_) => Err(ImageError::bad_source(object, "the decoder failed")),
    }
}

/// The most a decoder may allocate: the source at 8 bytes a pixel (16-bit RGBA) plus room for
/// the decoder's own buffers. The header's size was checked against `MaxSourcePix` already; this
/// is the second wall, for files whose data disagrees with their header.
fn alloc_budget(info: &SourceInfo) -> u64 {
    u64::from(info.width)
        .saturating_mul(u64::from(info.height))
        .saturating_mul(8)
        .saturating_add(64 << 20)
}

fn decode_inner(bytes: &[u8], info: &SourceInfo, factor: f64) -> Result<Decoded, String> {
    let format = match info.format {
        SourceFormat::Jpeg => {
            // zune-jpeg decodes a truncated file leniently (grey where data is missing): refuse
            // it here instead. Entropy-coded data never holds FF D9, so an EOI after the first
            // scan's start means the file is complete.
            let complete = super::probe::jpeg(bytes)
                .ok()
                .and_then(|(_, _, sos)| sos)
                .and_then(|sos| bytes.get(sos..))
                .is_some_and(|scan| scan.windows(2).rev().any(|w| w == [0xFF, 0xD9]));
            if !complete {
                return Err("truncated JPEG".into());
            }
            let shrink = jpeg_shrink(factor);
            if shrink > 1 {
                if let Some(decoded) = decode_jpeg_scaled(bytes, shrink, info) {
                    return Ok(decoded);
                }
            }
            ImageFormat::Jpeg
        }
        SourceFormat::Png => ImageFormat::Png,
        SourceFormat::Gif => ImageFormat::Gif,
        SourceFormat::Webp => ImageFormat::WebP,
        SourceFormat::Tiff => ImageFormat::Tiff,
        SourceFormat::Svg => return Err("an SVG must be rasterised by the svg server".into()),
    };
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(info.width);
    limits.max_image_height = Some(info.height);
    limits.max_alloc = Some(alloc_budget(info));
    reader.limits(limits);
    // GIF: the decoder's first image is the first frame.
    let image = reader.decode().map_err(|e| short(&e.to_string()))?;
    Ok(Decoded {
        image,
        scale: (1.0, 1.0),
        shrink: 1,
    })
}

/// Decodes a JPEG at 1/`shrink` of its size with jpeg-decoder's DCT scaling; `None` when this
/// path does not apply (CMYK, 16-bit, tiny images) or fails, so that the full decode decides.
fn decode_jpeg_scaled(bytes: &[u8], shrink: u8, info: &SourceInfo) -> Option<Decoded> {
    use jpeg_decoder::{Decoder, PixelFormat};

    let mut decoder = Decoder::new(bytes);
    decoder.set_max_decoding_buffer_size(usize::try_from(alloc_budget(info)).ok()?);
    decoder.read_info().ok()?;
    let meta = decoder.info()?;
    let (w, h) = (meta.width, meta.height);
    // Below 8 pixels the decoder may pick a smaller scale than asked on one axis.
    if w < 8 || h < 8 || !matches!(meta.pixel_format, PixelFormat::L8 | PixelFormat::RGB24) {
        return None;
    }
    let d = u32::from(shrink);
    let want = |len: u16| u16::try_from(u32::from(len).div_ceil(d)).ok();
    let (ow, oh) = decoder.scale(want(w)?, want(h)?).ok()?;
    let pixels = decoder.decode().ok()?;
    let (ow, oh) = (u32::from(ow), u32::from(oh));
    let image = match meta.pixel_format {
        PixelFormat::L8 => DynamicImage::ImageLuma8(GrayImage::from_raw(ow, oh, pixels)?),
        _ => DynamicImage::ImageRgb8(RgbImage::from_raw(ow, oh, pixels)?),
    };
    Some(Decoded {
        image,
        scale: (f64::from(ow) / f64::from(w), f64::from(oh) / f64::from(h)),
        shrink,
    })
}

/// A decoder's message cut to one short line.
fn short(message: &str) -> String {
    let line = message.lines().next().unwrap_or("");
    match line.char_indices().nth(160) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrink_is_the_smallest_dct_scale_that_keeps_enough_pixels() {
        assert_eq!(jpeg_shrink(1.0), 1);
        assert_eq!(jpeg_shrink(0.51), 1);
        assert_eq!(jpeg_shrink(0.5), 2);
        assert_eq!(jpeg_shrink(0.3), 2);
        assert_eq!(jpeg_shrink(0.25), 4);
        assert_eq!(jpeg_shrink(0.15), 4);
        assert_eq!(jpeg_shrink(0.125), 8);
        assert_eq!(jpeg_shrink(0.01), 8);
        assert_eq!(jpeg_shrink(f64::NAN), 1);
        assert_eq!(jpeg_shrink(0.0), 1);
    }

    #[test]
    fn short_messages_are_one_bounded_line() {
        assert_eq!(short("a\nb"), "a");
        assert_eq!(short(&"é".repeat(500)).chars().count(), 161);
    }
}

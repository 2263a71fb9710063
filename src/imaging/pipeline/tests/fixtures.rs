//! What the tests of every stage share: colours, a default request and catalog, test images
//! generated in memory (no file is read), rendering helpers and pixel probes.

use std::io::Cursor;

use image::{DynamicImage, GenericImageView, ImageFormat, Rgb, RgbImage};

use crate::imaging::catalog::Attributes;
use crate::imaging::pipeline::{render_traced, Rendered, Source, Trace};
use crate::imaging::request::{Fit, FitMode, ImageRequest, OutputFormat};
use crate::imaging::ImageError;

pub(super) const RED: [u8; 3] = [255, 0, 0];
pub(super) const GREEN: [u8; 3] = [0, 255, 0];
pub(super) const BLUE: [u8; 3] = [0, 0, 255];
pub(super) const YELLOW: [u8; 3] = [255, 255, 0];
pub(super) const WHITE: [u8; 3] = [255, 255, 255];

pub(super) fn attrs() -> Attributes {
    Attributes::default()
}

pub(super) fn req() -> ImageRequest {
    ImageRequest {
        object: "test/object".into(),
        ..Default::default()
    }
}

pub(super) fn png_req() -> ImageRequest {
    ImageRequest {
        fmt: Some(OutputFormat::Png),
        ..req()
    }
}

pub(super) fn fit(mode: FitMode, upscale: bool) -> Option<Fit> {
    Some(Fit { mode, upscale })
}

/// Encodes `img` in `format` with the `image` crate.
pub(super) fn encoded(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

pub(super) fn jpeg(img: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(img)
        .unwrap();
    out
}

/// A `w`×`h` image whose pixel (x, y) is `f(x, y)`.
pub(super) fn rgb(w: u32, h: u32, mut f: impl FnMut(u32, u32) -> [u8; 3]) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| Rgb(f(x, y)))
}

/// Left half `left`, right half `right`.
pub(super) fn halves(w: u32, h: u32, left: [u8; 3], right: [u8; 3]) -> RgbImage {
    rgb(w, h, |x, _| if x < w / 2 { left } else { right })
}

/// Every pixel different: exact crops can be checked pixel by pixel.
pub(super) fn pattern(w: u32, h: u32) -> RgbImage {
    rgb(w, h, |x, y| [x as u8, y as u8, (x * 7 + y * 13) as u8])
}

/// Deterministic noise (xorshift), for images that compress badly.
pub(super) fn noise(w: u32, h: u32, seed: u64) -> RgbImage {
    let mut s = seed | 1;
    rgb(w, h, |_, _| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        [s as u8, (s >> 8) as u8, (s >> 16) as u8]
    })
}

pub(super) fn png_source(img: RgbImage) -> Vec<u8> {
    encoded(&DynamicImage::ImageRgb8(img), ImageFormat::Png)
}

pub(super) fn render_bytes(
    bytes: &[u8],
    req: &ImageRequest,
    attrs: &Attributes,
) -> Result<(Rendered, Trace), ImageError> {
    render_traced(
        Source::Encoded {
            bytes,
            object: "test/object",
        },
        req,
        attrs,
    )
}

/// Renders and decodes the reply.
pub(super) fn render_image(bytes: &[u8], req: &ImageRequest) -> DynamicImage {
    let (rendered, _) = render_bytes(bytes, req, &attrs()).unwrap();
    let img = image::load_from_memory(&rendered.bytes).unwrap();
    assert_eq!(img.dimensions(), (rendered.width, rendered.height));
    img
}

pub(super) fn render_req(source: &[u8], request: ImageRequest) -> DynamicImage {
    render_image(source, &request)
}

pub(super) fn px(img: &DynamicImage, x: u32, y: u32) -> [u8; 3] {
    let p = img.get_pixel(x, y).0;
    [p[0], p[1], p[2]]
}

pub(super) fn alpha(img: &DynamicImage, x: u32, y: u32) -> u8 {
    img.get_pixel(x, y).0[3]
}

pub(super) fn close(a: [u8; 3], b: [u8; 3], tolerance: u8) -> bool {
    a.iter().zip(b).all(|(&x, y)| x.abs_diff(y) <= tolerance)
}

//! Encoding the reply: every output format round-trips, `qlt` changes the size, TIFF keeps
//! alpha, and a reply above the byte cap is refused.

use image::{DynamicImage, GenericImageView, ImageFormat, Rgba, RgbaImage};

use super::fixtures::{
    attrs, encoded, noise, pattern, png_req, png_source, px, render_bytes, render_req, req, BLUE,
    RED,
};
use crate::imaging::catalog::Attributes;
use crate::imaging::request::{ImageRequest, OutputFormat, Rgba as Color};

#[test]
fn every_output_format_round_trips() {
    let source = png_source(pattern(64, 48));
    for format in [
        OutputFormat::Jpeg,
        OutputFormat::Png,
        OutputFormat::PngAlpha,
        OutputFormat::Webp,
        OutputFormat::WebpAlpha,
        OutputFormat::Gif,
        OutputFormat::Tif,
        OutputFormat::TifAlpha,
    ] {
        let request = ImageRequest {
            wid: Some(32),
            fmt: Some(format),
            ..req()
        };
        let (rendered, _) = render_bytes(&source, &request, &attrs()).unwrap();
        assert_eq!(rendered.mime, format.mime());
        assert_eq!((rendered.width, rendered.height), (32, 24));
        let decoded = image::load_from_memory(&rendered.bytes).unwrap();
        assert_eq!(decoded.dimensions(), (32, 24), "{format:?}");
        let guessed = image::guess_format(&rendered.bytes).unwrap();
        assert_eq!(guessed.to_mime_type(), format.mime(), "{format:?}");
    }
}

#[test]
fn lower_quality_gives_fewer_bytes() {
    let source = png_source(noise(128, 128, 7));
    for format in [
        OutputFormat::Jpeg,
        OutputFormat::Webp,
        OutputFormat::WebpAlpha,
    ] {
        let size = |q| {
            let request = ImageRequest {
                fmt: Some(format),
                qlt: Some(q),
                ..req()
            };
            render_bytes(&source, &request, &attrs())
                .unwrap()
                .0
                .bytes
                .len()
        };
        assert!(size(20) < size(90), "{format:?}");
    }
}

#[test]
fn replies_above_the_byte_cap_are_refused() {
    let source = png_source(noise(200, 200, 5));
    let attrs = Attributes {
        max_reply_bytes: 1000,
        ..attrs()
    };
    let err = render_bytes(&source, &png_req(), &attrs).unwrap_err();
    assert_eq!(err.status, 403);
    assert!(err.message.contains("bytes"), "{err}");
}

#[test]
fn tif_replies_round_trip_with_alpha() {
    let src = RgbaImage::from_fn(20, 10, |x, _| {
        if x < 10 {
            Rgba([0, 0, 0, 0])
        } else {
            Rgba([255, 0, 0, 255])
        }
    });
    let png = encoded(&DynamicImage::ImageRgba8(src), ImageFormat::Png);
    let (rendered, _) = render_bytes(
        &png,
        &ImageRequest {
            fmt: Some(OutputFormat::TifAlpha),
            ..req()
        },
        &attrs(),
    )
    .unwrap();
    assert_eq!(rendered.mime, "image/tiff");
    assert_eq!(
        image::guess_format(&rendered.bytes).unwrap(),
        ImageFormat::Tiff
    );
    let back = image::load_from_memory(&rendered.bytes).unwrap();
    assert!(back.color().has_alpha());
    assert_eq!(back.get_pixel(2, 2).0, [0, 0, 0, 0]);
    assert_eq!(back.get_pixel(15, 2).0, [255, 0, 0, 255]);
    // fmt=tif has no alpha: flattened on bgc, exact (uncompressed).
    let flat = render_req(
        &png,
        ImageRequest {
            fmt: Some(OutputFormat::Tif),
            bgc: Some(Color([0, 0, 255, 255])),
            ..req()
        },
    );
    assert!(!flat.color().has_alpha());
    assert_eq!(px(&flat, 2, 2), BLUE);
    assert_eq!(px(&flat, 15, 2), RED);
}

//! Decoding sources: every raster format (its first frame or image, grey, 16-bit, alpha), JPEG
//! shrink-on-load, and truncated, garbage and corrupted bytes refused without a panic.

use image::{DynamicImage, GenericImageView, ImageFormat, Rgba, RgbaImage};

use super::fixtures::{
    alpha, attrs, close, encoded, halves, jpeg, noise, png_req, px, render_bytes, render_image,
    req, rgb, BLUE, RED, WHITE,
};
use crate::imaging::pipeline::{probe, render_traced, Source, SourceFormat};
use crate::imaging::request::{Crop, ImageRequest, OutputFormat, Rgba as Color};

#[test]
fn alpha_sources_keep_or_flatten_their_transparency() {
    // Left half transparent, right half opaque red.
    let src = RgbaImage::from_fn(64, 32, |x, _| {
        if x < 32 {
            Rgba([0, 0, 0, 0])
        } else {
            Rgba([255, 0, 0, 255])
        }
    });
    let png = encoded(&DynamicImage::ImageRgba8(src.clone()), ImageFormat::Png);
    let info = probe(&png, "x").unwrap();
    assert_eq!((info.format, info.has_alpha), (SourceFormat::Png, true));

    let keep = render_image(
        &png,
        &ImageRequest {
            fmt: Some(OutputFormat::PngAlpha),
            ..req()
        },
    );
    assert_eq!(alpha(&keep, 5, 5), 0);
    assert_eq!(keep.get_pixel(60, 5).0, [255, 0, 0, 255]);
    let webp = render_image(
        &png,
        &ImageRequest {
            fmt: Some(OutputFormat::WebpAlpha),
            ..req()
        },
    );
    assert!(alpha(&webp, 5, 5) < 10);
    assert!(alpha(&webp, 60, 5) > 245);
    let flat = render_image(
        &png,
        &ImageRequest {
            bgc: Some(Color([0, 0, 255, 255])),
            ..png_req()
        },
    );
    assert_eq!(px(&flat, 5, 5), BLUE);
    assert_eq!(px(&flat, 60, 5), RED);
    // Premultiplied resampling: no dark fringe where transparent black meets red.
    let small = render_image(
        &png,
        &ImageRequest {
            wid: Some(16),
            fmt: Some(OutputFormat::PngAlpha),
            ..req()
        },
    );
    for x in 0..16 {
        let p = small.get_pixel(x, 4).0;
        if p[3] > 0 {
            assert!(p[0] > 200, "fringe at {x}: {p:?}");
        }
    }
    // A raw-pixels source (what an already-decoded image would be).
    let (rendered, _) = render_traced(
        Source::Pixels(src),
        &ImageRequest {
            wid: Some(32),
            ..png_req()
        },
        &attrs(),
    )
    .unwrap();
    let img = image::load_from_memory(&rendered.bytes).unwrap();
    assert_eq!(img.dimensions(), (32, 16));
    assert_eq!(px(&img, 2, 2), WHITE);
}

#[test]
fn gif_sources_give_their_first_frame() {
    let frame = |c: [u8; 3]| {
        image::Frame::new(RgbaImage::from_pixel(20, 10, Rgba([c[0], c[1], c[2], 255])))
    };
    let mut gif = Vec::new();
    {
        let mut encoder = image::codecs::gif::GifEncoder::new(&mut gif);
        encoder.encode_frames([frame(RED), frame(BLUE)]).unwrap();
    }
    let info = probe(&gif, "x").unwrap();
    assert_eq!(
        (info.format, info.width, info.height),
        (SourceFormat::Gif, 20, 10)
    );
    let img = render_image(&gif, &png_req());
    assert_eq!(img.dimensions(), (20, 10));
    assert_eq!(px(&img, 10, 5), RED);
}

#[test]
fn tiff_webp_and_grey_sources_decode() {
    let src = halves(60, 30, RED, BLUE);
    for format in [
        ImageFormat::Tiff,
        ImageFormat::WebP,
        ImageFormat::Png,
        ImageFormat::Gif,
    ] {
        let bytes = encoded(&DynamicImage::ImageRgb8(src.clone()), format);
        let info = probe(&bytes, "x").unwrap();
        assert_eq!((info.width, info.height), (60, 30), "{format:?}");
        let img = render_image(
            &bytes,
            &ImageRequest {
                wid: Some(30),
                ..png_req()
            },
        );
        assert_eq!(img.dimensions(), (30, 15), "{format:?}");
        assert!(close(px(&img, 3, 7), RED, 2), "{format:?}");
        assert!(close(px(&img, 27, 7), BLUE, 2), "{format:?}");
    }
    let tiff_alpha = encoded(
        &DynamicImage::ImageRgba8(RgbaImage::new(4, 4)),
        ImageFormat::Tiff,
    );
    assert!(probe(&tiff_alpha, "x").unwrap().has_alpha);
    let webp_alpha = encoded(
        &DynamicImage::ImageRgba8(RgbaImage::new(4, 4)),
        ImageFormat::WebP,
    );
    assert!(probe(&webp_alpha, "x").unwrap().has_alpha);
    // 16-bit and grey sources are resampled in their own type and converted at the end.
    let grey16 = DynamicImage::ImageLuma16(image::ImageBuffer::from_pixel(
        40,
        40,
        image::Luma([32768u16]),
    ));
    let img = render_image(
        &encoded(&grey16, ImageFormat::Png),
        &ImageRequest {
            wid: Some(20),
            ..png_req()
        },
    );
    assert!(
        close(px(&img, 10, 10), [128, 128, 128], 1),
        "{:?}",
        px(&img, 10, 10)
    );
    let grey = DynamicImage::ImageLuma8(image::GrayImage::from_pixel(40, 40, image::Luma([77])));
    let img = render_image(
        &encoded(&grey, ImageFormat::Jpeg),
        &ImageRequest {
            wid: Some(10),
            ..png_req()
        },
    );
    assert!(close(px(&img, 5, 5), [77, 77, 77], 2));
}

#[test]
fn jpeg_sources_shrink_on_load() {
    let colour = |x: u32, _| {
        if x < 1000 {
            [200, 30, 60]
        } else {
            [20, 160, 90]
        }
    };
    let source = jpeg(&rgb(2000, 1500, colour), 90);
    let (rendered, trace) = render_bytes(
        &source,
        &ImageRequest {
            wid: Some(300),
            ..png_req()
        },
        &attrs(),
    )
    .unwrap();
    assert_eq!((rendered.width, rendered.height), (300, 225));
    assert_eq!(trace.jpeg_shrink, 4, "0.15 needs a quarter");
    assert_eq!(trace.decoded_size, (500, 375));
    let img = image::load_from_memory(&rendered.bytes).unwrap();
    assert!(
        close(px(&img, 50, 100), [200, 30, 60], 6),
        "{:?}",
        px(&img, 50, 100)
    );
    assert!(
        close(px(&img, 250, 100), [20, 160, 90], 6),
        "{:?}",
        px(&img, 250, 100)
    );

    // A crop needs more of the decoded pixels: 500×500 shown 200 wide is ×0.4, a half.
    let crop = Some(Crop::Pixels {
        x: 750.0,
        y: 500.0,
        w: 500.0,
        h: 500.0,
    });
    let (rendered, trace) = render_bytes(
        &source,
        &ImageRequest {
            crop,
            wid: Some(200),
            ..png_req()
        },
        &attrs(),
    )
    .unwrap();
    assert_eq!(trace.jpeg_shrink, 2);
    let img = image::load_from_memory(&rendered.bytes).unwrap();
    assert!(close(px(&img, 20, 100), [200, 30, 60], 6));
    assert!(close(px(&img, 180, 100), [20, 160, 90], 6));

    // Above a half: full decode.
    let (_, trace) = render_bytes(
        &source,
        &ImageRequest {
            wid: Some(1200),
            ..png_req()
        },
        &attrs(),
    )
    .unwrap();
    assert_eq!(trace.jpeg_shrink, 1);
    assert_eq!(trace.decoded_size, (2000, 1500));

    // Grey JPEGs take the same path.
    let grey = DynamicImage::ImageLuma8(image::GrayImage::from_pixel(800, 800, image::Luma([90])));
    let bytes = encoded(&grey, ImageFormat::Jpeg);
    let (rendered, trace) = render_bytes(
        &bytes,
        &ImageRequest {
            wid: Some(100),
            ..png_req()
        },
        &attrs(),
    )
    .unwrap();
    assert_eq!(trace.jpeg_shrink, 8);
    let img = image::load_from_memory(&rendered.bytes).unwrap();
    assert!(close(px(&img, 50, 50), [90, 90, 90], 2));
}

#[test]
fn truncated_and_garbage_sources_are_bad_sources() {
    let src = DynamicImage::ImageRgb8(noise(64, 64, 3));
    let mut sources = vec![("jpeg", jpeg(&src.to_rgb8(), 90))];
    for (name, format) in [
        ("png", ImageFormat::Png),
        ("gif", ImageFormat::Gif),
        ("webp", ImageFormat::WebP),
        ("tiff", ImageFormat::Tiff),
    ] {
        sources.push((name, encoded(&src, format)));
    }
    // Lossy WebP (libwebp) too.
    let lossy = webp::Encoder::from_rgb(src.as_bytes(), 64, 64)
        .encode(75.0)
        .to_vec();
    sources.push(("lossy webp", lossy));
    // A JPEG missing only its end marker is truncated too.
    let jpeg_bytes = &sources[0].1;
    let err = render_bytes(&jpeg_bytes[..jpeg_bytes.len() - 2], &req(), &attrs()).unwrap_err();
    assert!(err.message.contains("truncated JPEG"), "{err}");
    for (name, bytes) in &sources {
        assert!(
            render_bytes(bytes, &req(), &attrs()).is_ok(),
            "{name} whole"
        );
        for cut in [bytes.len() / 3, bytes.len() / 2, bytes.len() * 9 / 10] {
            let err = render_bytes(&bytes[..cut], &req(), &attrs())
                .err()
                .unwrap_or_else(|| panic!("{name} cut at {cut}/{} was accepted", bytes.len()));
            assert_eq!(err.status, 403, "{name}");
            assert!(err.message.contains("cannot decode"), "{name}: {err}");
        }
    }
    let mut s = 12345u64;
    let garbage: Vec<u8> = (0..5000)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect();
    for bytes in [
        &garbage[..],
        b"",
        b"\xFF\xD8\xFF",
        b"GIF89a",
        b"RIFF\0\0\0\0WEBP",
    ] {
        let err = probe(bytes, "x").unwrap_err();
        assert_eq!(err.status, 403);
        assert_eq!(
            render_bytes(bytes, &req(), &attrs()).unwrap_err().status,
            403
        );
    }
}

#[test]
fn corrupted_sources_never_panic() {
    let src = DynamicImage::ImageRgb8(noise(48, 40, 11));
    let mut sources = vec![jpeg(&src.to_rgb8(), 80)];
    for format in [
        ImageFormat::Png,
        ImageFormat::Gif,
        ImageFormat::WebP,
        ImageFormat::Tiff,
    ] {
        sources.push(encoded(&src, format));
    }
    let mut s = 99u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    for bytes in &sources {
        for _ in 0..60 {
            let mut bad = bytes.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() % bad.len() as u64) as usize;
                bad[at] = next() as u8;
            }
            let request = ImageRequest {
                wid: Some(20),
                ..req()
            };
            if let Err(e) = render_bytes(&bad, &request, &attrs()) {
                assert!(e.status == 403 || e.status == 500, "{e}");
            }
        }
    }
}

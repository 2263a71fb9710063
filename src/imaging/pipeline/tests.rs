//! Tests of the whole pipeline: plans, pixels, formats, limits and hostile input. Test images are
//! generated here; no file is read.

use std::io::Cursor;

use image::{DynamicImage, GenericImageView, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};

use super::*;
use crate::imaging::catalog::ResMode;
use crate::imaging::request::{
    Align, Crop, Extend, Fit, FitMode, Flip, OutputFormat, Rgba as Color, Usm, ViewRect,
};

const RED: [u8; 3] = [255, 0, 0];
const GREEN: [u8; 3] = [0, 255, 0];
const BLUE: [u8; 3] = [0, 0, 255];
const YELLOW: [u8; 3] = [255, 255, 0];
const WHITE: [u8; 3] = [255, 255, 255];

fn attrs() -> Attributes {
    Attributes::default()
}

fn req() -> ImageRequest {
    ImageRequest {
        object: "test/object".into(),
        ..Default::default()
    }
}

fn png_req() -> ImageRequest {
    ImageRequest {
        fmt: Some(OutputFormat::Png),
        ..req()
    }
}

fn fit(mode: FitMode, upscale: bool) -> Option<Fit> {
    Some(Fit { mode, upscale })
}

/// Encodes `img` in `format` with the `image` crate.
fn encoded(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn jpeg(img: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(img)
        .unwrap();
    out
}

/// A `w`×`h` image whose pixel (x, y) is `f(x, y)`.
fn rgb(w: u32, h: u32, mut f: impl FnMut(u32, u32) -> [u8; 3]) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| Rgb(f(x, y)))
}

/// Left half `left`, right half `right`.
fn halves(w: u32, h: u32, left: [u8; 3], right: [u8; 3]) -> RgbImage {
    rgb(w, h, |x, _| if x < w / 2 { left } else { right })
}

/// Every pixel different: exact crops can be checked pixel by pixel.
fn pattern(w: u32, h: u32) -> RgbImage {
    rgb(w, h, |x, y| [x as u8, y as u8, (x * 7 + y * 13) as u8])
}

/// Deterministic noise (xorshift), for images that compress badly.
fn noise(w: u32, h: u32, seed: u64) -> RgbImage {
    let mut s = seed | 1;
    rgb(w, h, |_, _| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        [s as u8, (s >> 8) as u8, (s >> 16) as u8]
    })
}

fn png_source(img: RgbImage) -> Vec<u8> {
    encoded(&DynamicImage::ImageRgb8(img), ImageFormat::Png)
}

fn render_bytes(
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
fn render_image(bytes: &[u8], req: &ImageRequest) -> DynamicImage {
    let (rendered, _) = render_bytes(bytes, req, &attrs()).unwrap();
    let img = image::load_from_memory(&rendered.bytes).unwrap();
    assert_eq!(img.dimensions(), (rendered.width, rendered.height));
    img
}

fn px(img: &DynamicImage, x: u32, y: u32) -> [u8; 3] {
    let p = img.get_pixel(x, y).0;
    [p[0], p[1], p[2]]
}

fn alpha(img: &DynamicImage, x: u32, y: u32) -> u8 {
    img.get_pixel(x, y).0[3]
}

fn close(a: [u8; 3], b: [u8; 3], tolerance: u8) -> bool {
    a.iter().zip(b).all(|(&x, y)| x.abs_diff(y) <= tolerance)
}

/// A CRC-32 (IEEE), to craft PNG chunks.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

// ---------------------------------------------------------------------------------------------
// Plans

#[test]
fn plan_sizes_for_every_fit_mode_and_combination() {
    use FitMode::{Constrain, Fit, Stretch};
    let crop = |x, y, w, h| Some(Crop::Pixels { x, y, w, h });
    // (what, request, expected reply size, expected scaled image size) for a 400×200 source.
    type Case = (&'static str, ImageRequest, (u32, u32), (u32, u32));
    let cases: Vec<Case> = vec![
        (
            "nothing: source size under DefaultPix",
            req(),
            (400, 200),
            (400, 200),
        ),
        (
            "scl=2",
            ImageRequest {
                scl: Some(2.0),
                ..req()
            },
            (200, 100),
            (200, 100),
        ),
        (
            "scl=0.5",
            ImageRequest {
                scl: Some(0.5),
                ..req()
            },
            (800, 400),
            (800, 400),
        ),
        (
            "scl=3 rounds",
            ImageRequest {
                scl: Some(3.0),
                ..req()
            },
            (133, 67),
            (133, 67),
        ),
        (
            "wid alone",
            ImageRequest {
                wid: Some(100),
                ..req()
            },
            (100, 50),
            (100, 50),
        ),
        (
            "wid alone enlarges",
            ImageRequest {
                wid: Some(800),
                ..req()
            },
            (800, 400),
            (800, 400),
        ),
        (
            "hei alone",
            ImageRequest {
                hei: Some(50),
                ..req()
            },
            (100, 50),
            (100, 50),
        ),
        (
            "wid alone, explicit fit,0",
            ImageRequest {
                wid: Some(800),
                fit: fit(Fit, false),
                ..req()
            },
            (400, 200),
            (400, 200),
        ),
        (
            "wid alone, explicit fit,1",
            ImageRequest {
                wid: Some(800),
                fit: fit(Fit, true),
                ..req()
            },
            (800, 400),
            (800, 400),
        ),
        (
            "wid alone, stretch",
            ImageRequest {
                wid: Some(800),
                fit: fit(Stretch, false),
                ..req()
            },
            (800, 400),
            (800, 400),
        ),
        (
            "tiny hei keeps 1 pixel",
            ImageRequest {
                hei: Some(1),
                wid: None,
                ..req()
            },
            (2, 1),
            (2, 1),
        ),
        (
            "fit (default)",
            ImageRequest {
                wid: Some(100),
                hei: Some(100),
                ..req()
            },
            (100, 100),
            (100, 50),
        ),
        (
            "fit no upscale",
            ImageRequest {
                wid: Some(800),
                hei: Some(800),
                ..req()
            },
            (800, 800),
            (400, 200),
        ),
        (
            "fit,1",
            ImageRequest {
                wid: Some(800),
                hei: Some(800),
                fit: fit(Fit, true),
                ..req()
            },
            (800, 800),
            (800, 400),
        ),
        (
            "constrain",
            ImageRequest {
                wid: Some(100),
                hei: Some(100),
                fit: fit(Constrain, false),
                ..req()
            },
            (100, 50),
            (100, 50),
        ),
        (
            "constrain no upscale",
            ImageRequest {
                wid: Some(800),
                hei: Some(800),
                fit: fit(Constrain, false),
                ..req()
            },
            (400, 200),
            (400, 200),
        ),
        (
            "constrain,1",
            ImageRequest {
                wid: Some(800),
                hei: Some(800),
                fit: fit(Constrain, true),
                ..req()
            },
            (800, 400),
            (800, 400),
        ),
        (
            "crop",
            ImageRequest {
                wid: Some(100),
                hei: Some(100),
                fit: fit(FitMode::Crop, false),
                ..req()
            },
            (100, 100),
            (200, 100),
        ),
        (
            "crop smaller, no upscale",
            ImageRequest {
                wid: Some(800),
                hei: Some(800),
                fit: fit(FitMode::Crop, false),
                ..req()
            },
            (400, 200),
            (400, 200),
        ),
        (
            "crop partly smaller",
            ImageRequest {
                wid: Some(300),
                hei: Some(100),
                fit: fit(FitMode::Crop, false),
                ..req()
            },
            (300, 100),
            (300, 150),
        ),
        (
            "crop,1",
            ImageRequest {
                wid: Some(800),
                hei: Some(800),
                fit: fit(FitMode::Crop, true),
                ..req()
            },
            (800, 800),
            (1600, 800),
        ),
        (
            "stretch",
            ImageRequest {
                wid: Some(100),
                hei: Some(100),
                fit: fit(Stretch, false),
                ..req()
            },
            (100, 100),
            (100, 100),
        ),
        (
            "stretch enlarges",
            ImageRequest {
                wid: Some(800),
                hei: Some(50),
                fit: fit(Stretch, false),
                ..req()
            },
            (800, 50),
            (800, 50),
        ),
        (
            "scl with wid",
            ImageRequest {
                scl: Some(2.0),
                wid: Some(50),
                ..req()
            },
            (50, 100),
            (200, 100),
        ),
        (
            "scl with wid and hei",
            ImageRequest {
                scl: Some(2.0),
                wid: Some(300),
                hei: Some(300),
                ..req()
            },
            (300, 300),
            (200, 100),
        ),
        (
            "scl ignores fit",
            ImageRequest {
                scl: Some(1.0),
                wid: Some(100),
                hei: Some(100),
                fit: fit(Stretch, false),
                ..req()
            },
            (100, 100),
            (400, 200),
        ),
        (
            "rotate swaps sides",
            ImageRequest {
                rotate: Some(90.0),
                wid: Some(100),
                ..req()
            },
            (100, 200),
            (100, 200),
        ),
        (
            "rotate 180 keeps them",
            ImageRequest {
                rotate: Some(180.0),
                ..req()
            },
            (400, 200),
            (400, 200),
        ),
        (
            "crop in pixels",
            ImageRequest {
                crop: crop(10.0, 10.0, 100.0, 50.0),
                ..req()
            },
            (100, 50),
            (100, 50),
        ),
        (
            "crop past the source",
            ImageRequest {
                crop: crop(-50.0, 0.0, 500.0, 200.0),
                ..req()
            },
            (500, 200),
            (500, 200),
        ),
        (
            "cropN",
            ImageRequest {
                crop: Some(Crop::Normalized {
                    x: 0.5,
                    y: 0.0,
                    w: 0.5,
                    h: 0.5,
                }),
                ..req()
            },
            (200, 100),
            (200, 100),
        ),
        (
            "crop then wid",
            ImageRequest {
                crop: crop(0.0, 0.0, 100.0, 100.0),
                wid: Some(50),
                ..req()
            },
            (50, 50),
            (50, 50),
        ),
    ];
    for (what, request, reply, scaled) in cases {
        let plan = plan((400, 200), &request, &attrs()).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!((plan.width, plan.height), reply, "{what}: reply");
        assert_eq!(plan.scaled, scaled, "{what}: scaled image");
    }
}

#[test]
fn default_pix_caps_an_unsized_reply() {
    let attrs = Attributes {
        default_pix: (100, 100),
        ..attrs()
    };
    let p = plan((400, 200), &req(), &attrs).unwrap();
    assert_eq!((p.width, p.height), (100, 50));
    let p = plan((40, 20), &req(), &attrs).unwrap();
    assert_eq!((p.width, p.height), (40, 20), "never enlarged");
    let attrs = Attributes {
        default_pix: (0, 100),
        ..attrs
    };
    let p = plan((4000, 20), &req(), &attrs).unwrap();
    assert_eq!((p.width, p.height), (4000, 20), "0 leaves a side free");
}

#[test]
fn plan_offsets_follow_align() {
    let request = |h, v| ImageRequest {
        wid: Some(300),
        hei: Some(300),
        align: Some(Align { h, v }),
        ..req()
    };
    // 400×200 fits as 300×150 in a 300×300 view: 150 pixels of fill vertically.
    assert_eq!(
        plan((400, 200), &request(0.0, 0.0), &attrs())
            .unwrap()
            .offset,
        (0, 75)
    );
    assert_eq!(
        plan((400, 200), &request(0.0, -1.0), &attrs())
            .unwrap()
            .offset,
        (0, 0)
    );
    assert_eq!(
        plan((400, 200), &request(0.0, 1.0), &attrs())
            .unwrap()
            .offset,
        (0, 150)
    );
    assert_eq!(
        plan((400, 200), &request(0.0, 7.0), &attrs())
            .unwrap()
            .offset,
        (0, 150),
        "clamped"
    );
    assert_eq!(
        plan((400, 200), &request(0.0, f64::NAN), &attrs())
            .unwrap()
            .offset,
        (0, 75)
    );
    // fit=crop: 400×200 covers 100×100 as 200×100; align picks the part kept.
    let crop = |h| ImageRequest {
        wid: Some(100),
        hei: Some(100),
        fit: fit(FitMode::Crop, false),
        align: Some(Align { h, v: 0.0 }),
        ..req()
    };
    assert_eq!(
        plan((400, 200), &crop(-1.0), &attrs()).unwrap().offset,
        (0, 0)
    );
    assert_eq!(
        plan((400, 200), &crop(0.0), &attrs()).unwrap().offset,
        (-50, 0)
    );
    assert_eq!(
        plan((400, 200), &crop(1.0), &attrs()).unwrap().offset,
        (-100, 0)
    );
}

#[test]
fn plan_refuses_what_it_must() {
    let too_wide = ImageRequest {
        wid: Some(9000),
        ..req()
    };
    let err = plan((400, 200), &too_wide, &attrs()).unwrap_err();
    assert_eq!(err.status, 403);
    assert!(err.message.contains("MaxPix"), "{err}");

    let err = plan(
        (400, 200),
        &ImageRequest {
            rotate: Some(f64::INFINITY),
            ..req()
        },
        &attrs(),
    )
    .unwrap_err();
    assert_eq!(err.status, 403);
    assert!(err.message.contains("rotate"), "{err}");

    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let err = plan(
            (400, 200),
            &ImageRequest {
                scl: Some(bad),
                ..req()
            },
            &attrs(),
        )
        .unwrap_err();
        assert_eq!(err.status, 403, "scl={bad}");
    }
    let err = plan(
        (400, 200),
        &ImageRequest {
            scl: Some(1e-12),
            ..req()
        },
        &attrs(),
    )
    .unwrap_err();
    assert!(err.message.contains("too large"), "{err}");
    let huge_crop = ImageRequest {
        crop: Some(Crop::Pixels {
            x: 0.0,
            y: 0.0,
            w: 1e300,
            h: 1.0,
        }),
        ..req()
    };
    assert_eq!(
        plan((400, 200), &huge_crop, &attrs()).unwrap_err().status,
        403
    );
    let nan_crop = ImageRequest {
        crop: Some(Crop::Normalized {
            x: f64::NAN,
            y: 0.0,
            w: 1.0,
            h: 1.0,
        }),
        ..req()
    };
    assert_eq!(
        plan((400, 200), &nan_crop, &attrs()).unwrap_err().status,
        403
    );
    assert_eq!(plan((0, 200), &req(), &attrs()).unwrap_err().status, 403);
    // A huge scaled image seen through a small view is fine: only the view is rendered.
    let zoom = ImageRequest {
        scl: Some(0.001),
        wid: Some(100),
        hei: Some(100),
        ..req()
    };
    let p = plan((400, 200), &zoom, &attrs()).unwrap();
    assert_eq!((p.width, p.height), (100, 100));
}

#[test]
fn plan_format_and_quality() {
    let p = plan((10, 10), &req(), &attrs()).unwrap();
    assert_eq!((p.format, p.quality), (OutputFormat::Jpeg, 80));
    let r = ImageRequest {
        fmt: Some(OutputFormat::WebpAlpha),
        qlt: Some(0),
        ..req()
    };
    let p = plan((10, 10), &r, &attrs()).unwrap();
    assert_eq!(
        (p.format, p.quality),
        (OutputFormat::WebpAlpha, 1),
        "clamped"
    );
    let props = reply_props(&p);
    let get = |k: &str| props.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("image.width"), Some("10"));
    assert_eq!(get("image.format"), Some("webp-alpha"));
    assert_eq!(get("image.mimeType"), Some("image/webp"));
    assert_eq!(get("image.quality"), Some("1"));
    assert_eq!(get("image.mask"), Some("1"));
}

#[test]
fn svg_raster_size_is_the_whole_svg_at_the_plan_scale() {
    let a = attrs();
    let with = |r: ImageRequest| svg_raster_size((100.0, 50.0), &r, &a);
    assert_eq!(with(req()).unwrap(), (100, 50));
    assert_eq!(
        with(ImageRequest {
            wid: Some(400),
            ..req()
        })
        .unwrap(),
        (400, 200)
    );
    assert_eq!(
        with(ImageRequest {
            scl: Some(4.0),
            ..req()
        })
        .unwrap(),
        (25, 13)
    );
    // A 50×50 crop shown 400 wide: the whole SVG at ×8.
    let cropped = ImageRequest {
        crop: Some(Crop::Pixels {
            x: 0.0,
            y: 0.0,
            w: 50.0,
            h: 50.0,
        }),
        wid: Some(400),
        ..req()
    };
    assert_eq!(with(cropped).unwrap(), (800, 400));
    // Rotated 90° (50×100) to 100 wide: ×2 along the source's axes.
    assert_eq!(
        with(ImageRequest {
            rotate: Some(90.0),
            wid: Some(100),
            ..req()
        })
        .unwrap(),
        (200, 100)
    );
    // Stretch scales the axes differently.
    let stretch = ImageRequest {
        wid: Some(50),
        hei: Some(100),
        fit: fit(FitMode::Stretch, false),
        ..req()
    };
    assert_eq!(with(stretch).unwrap(), (50, 100));
    // Tiny but never empty.
    assert_eq!(
        with(ImageRequest {
            scl: Some(1000.0),
            ..req()
        })
        .unwrap(),
        (1, 1)
    );
    // Fractional intrinsic sizes are rounded.
    assert_eq!(
        svg_raster_size((99.6, 50.2), &req(), &a).unwrap(),
        (100, 50)
    );

    let err = with(ImageRequest {
        wid: Some(4000),
        ..req()
    })
    .unwrap_err();
    assert_eq!(err.status, 403);
    assert!(err.message.contains("too large"), "{err}");
    for bad in [(0.0, 10.0), (f64::NAN, 10.0), (10.0, -1.0)] {
        assert_eq!(svg_raster_size(bad, &req(), &a).unwrap_err().status, 403);
    }
}

// ---------------------------------------------------------------------------------------------
// Pixels

#[test]
fn align_places_the_image_and_the_fill_follows() {
    let source = png_source(rgb(100, 50, |_, _| RED));
    let request = |h| ImageRequest {
        wid: Some(200),
        hei: Some(50),
        align: Some(Align { h, v: 0.0 }),
        ..png_req()
    };
    let left = render_image(&source, &request(-1.0));
    assert_eq!(left.dimensions(), (200, 50));
    assert_eq!(px(&left, 10, 25), RED);
    assert_eq!(px(&left, 190, 25), WHITE);
    let right = render_image(&source, &request(1.0));
    assert_eq!(px(&right, 10, 25), WHITE);
    assert_eq!(px(&right, 190, 25), RED);
    let centre = render_image(&source, &request(0.0));
    assert_eq!(px(&centre, 5, 25), WHITE);
    assert_eq!(px(&centre, 100, 25), RED);
    assert_eq!(px(&centre, 195, 25), WHITE);
}

#[test]
fn bgc_fills_the_view_and_alpha_formats_stay_transparent_without_it() {
    let source = png_source(rgb(100, 50, |_, _| RED));
    let mut request = ImageRequest {
        wid: Some(100),
        hei: Some(100),
        bgc: Some(Color([0, 255, 0, 255])),
        ..png_req()
    };
    let img = render_image(&source, &request);
    assert_eq!(px(&img, 0, 0), GREEN);
    assert_eq!(px(&img, 50, 50), RED);

    request.fmt = Some(OutputFormat::PngAlpha);
    let img = render_image(&source, &request);
    assert_eq!(img.get_pixel(0, 0).0, [0, 255, 0, 255]);
    request.bgc = None;
    let img = render_image(&source, &request);
    assert_eq!(alpha(&img, 0, 0), 0);
    assert_eq!(img.get_pixel(50, 50).0, [255, 0, 0, 255]);

    // The catalog's BkgColor is the default for formats without alpha.
    request.fmt = Some(OutputFormat::Png);
    let attrs = Attributes {
        bkg_color: Color([0, 0, 255, 255]),
        ..attrs()
    };
    let (rendered, _) = render_bytes(&source, &request, &attrs).unwrap();
    let img = image::load_from_memory(&rendered.bytes).unwrap();
    assert_eq!(px(&img, 0, 99), BLUE);
}

#[test]
fn fit_crop_and_scl_views_keep_the_part_align_says() {
    let source = png_source(halves(200, 100, RED, BLUE));
    let crop = |h| ImageRequest {
        wid: Some(50),
        hei: Some(50),
        fit: fit(FitMode::Crop, false),
        align: Some(Align { h, v: 0.0 }),
        ..png_req()
    };
    let img = render_image(&source, &crop(-1.0));
    assert_eq!(img.dimensions(), (50, 50));
    assert!(close(px(&img, 25, 25), RED, 2));
    assert!(close(
        px(&render_image(&source, &crop(1.0)), 25, 25),
        BLUE,
        2
    ));

    let scl = |h| ImageRequest {
        scl: Some(1.0),
        wid: Some(50),
        align: Some(Align { h, v: 0.0 }),
        ..png_req()
    };
    let img = render_image(&source, &scl(-1.0));
    assert_eq!(img.dimensions(), (50, 100));
    assert_eq!(px(&img, 25, 50), RED);
    assert_eq!(px(&render_image(&source, &scl(1.0)), 25, 50), BLUE);
}

#[test]
fn flip_lr_mirrors() {
    let source = png_source(halves(100, 50, RED, BLUE));
    let img = render_image(
        &source,
        &ImageRequest {
            flip: Some(Flip::Lr),
            ..png_req()
        },
    );
    assert_eq!(px(&img, 5, 25), BLUE);
    assert_eq!(px(&img, 95, 25), RED);
    let top_bottom = png_source(rgb(100, 50, |_, y| if y < 25 { RED } else { BLUE }));
    let img = render_image(
        &top_bottom,
        &ImageRequest {
            flip: Some(Flip::Ud),
            ..png_req()
        },
    );
    assert_eq!(px(&img, 50, 5), BLUE);
    let img = render_image(
        &source,
        &ImageRequest {
            flip: Some(Flip::Lrud),
            ..png_req()
        },
    );
    assert_eq!(px(&img, 5, 25), BLUE);
}

#[test]
fn rotate_90_turns_clockwise() {
    let source = png_source(rgb(100, 50, |_, y| if y < 25 { RED } else { BLUE }));
    let img = render_image(
        &source,
        &ImageRequest {
            rotate: Some(90.0),
            ..png_req()
        },
    );
    assert_eq!(img.dimensions(), (50, 100));
    assert_eq!(px(&img, 45, 50), RED, "the top is now on the right");
    assert_eq!(px(&img, 5, 50), BLUE);
    let img = render_image(
        &source,
        &ImageRequest {
            rotate: Some(270.0),
            ..png_req()
        },
    );
    assert_eq!(px(&img, 5, 50), RED);
    let img = render_image(
        &source,
        &ImageRequest {
            rotate: Some(180.0),
            ..png_req()
        },
    );
    assert_eq!(px(&img, 50, 45), RED);
}

#[test]
fn crop_is_pixel_exact() {
    let src = pattern(40, 40);
    let source = png_source(src.clone());
    let check = |img: &DynamicImage, x0: u32, y0: u32, w: u32, h: u32| {
        assert_eq!(img.dimensions(), (w, h));
        for y in 0..h {
            for x in 0..w {
                assert_eq!(px(img, x, y), src.get_pixel(x0 + x, y0 + y).0, "({x}, {y})");
            }
        }
    };
    let crop = Some(Crop::Pixels {
        x: 10.0,
        y: 20.0,
        w: 30.0,
        h: 15.0,
    });
    check(
        &render_image(&source, &ImageRequest { crop, ..png_req() }),
        10,
        20,
        30,
        15,
    );
    let crop_n = Some(Crop::Normalized {
        x: 0.25,
        y: 0.5,
        w: 0.5,
        h: 0.25,
    });
    check(
        &render_image(
            &source,
            &ImageRequest {
                crop: crop_n,
                ..png_req()
            },
        ),
        10,
        20,
        20,
        10,
    );
}

#[test]
fn crop_past_the_edge_takes_the_fill() {
    let src = pattern(40, 40);
    let source = png_source(src.clone());
    let crop = Some(Crop::Pixels {
        x: -10.0,
        y: -10.0,
        w: 30.0,
        h: 30.0,
    });
    let img = render_image(&source, &ImageRequest { crop, ..png_req() });
    assert_eq!(img.dimensions(), (30, 30));
    assert_eq!(px(&img, 0, 0), WHITE);
    assert_eq!(px(&img, 9, 29), WHITE);
    assert_eq!(px(&img, 29, 9), WHITE);
    for (x, y) in [(10, 10), (15, 20), (29, 29)] {
        assert_eq!(px(&img, x, y), src.get_pixel(x - 10, y - 10).0);
    }
    // With alpha, the part past the source is transparent, even with an explicit bgc.
    let request = ImageRequest {
        crop,
        fmt: Some(OutputFormat::PngAlpha),
        bgc: Some(Color([0, 255, 0, 255])),
        ..req()
    };
    let img = render_image(&source, &request);
    assert_eq!(alpha(&img, 0, 0), 0);
    assert_eq!(alpha(&img, 20, 20), 255);

    // Rotated, the part past the source moves with the box: the left strip becomes the top.
    let request = ImageRequest {
        crop: Some(Crop::Pixels {
            x: -10.0,
            y: 0.0,
            w: 30.0,
            h: 20.0,
        }),
        rotate: Some(90.0),
        ..png_req()
    };
    let img = render_image(&source, &request);
    assert_eq!(img.dimensions(), (20, 30));
    assert_eq!(px(&img, 5, 5), WHITE);
    // Rotated (x', y') comes from box (y', 19 − x'), that is source (y' − 10, 19 − x').
    assert_eq!(px(&img, 5, 15), src.get_pixel(5, 14).0);
    assert_eq!(px(&img, 19, 29), src.get_pixel(19, 0).0);

    // Entirely outside: nothing to decode, all fill.
    let away = Some(Crop::Pixels {
        x: 1000.0,
        y: 1000.0,
        w: 10.0,
        h: 10.0,
    });
    let (rendered, trace) = render_bytes(
        &source,
        &ImageRequest {
            crop: away,
            ..png_req()
        },
        &attrs(),
    )
    .unwrap();
    assert!(!trace.decoded);
    let img = image::load_from_memory(&rendered.bytes).unwrap();
    assert_eq!(px(&img, 5, 5), WHITE);
}

#[test]
fn crop_then_flip_then_rotate_then_scale() {
    // Quadrants: red | green over blue | yellow.
    let source = png_source(rgb(100, 100, |x, y| match (x < 50, y < 50) {
        (true, true) => RED,
        (false, true) => GREEN,
        (true, false) => BLUE,
        (false, false) => YELLOW,
    }));
    // crop keeps the top half (red | green), flip makes it green | red, rotate 90 puts the left
    // (green) on top: 50×100, green over red; wid=25 halves it. Rotating before flipping would
    // put red on top; cropping after rotating would keep blue and red.
    let request = ImageRequest {
        crop: Some(Crop::Pixels {
            x: 0.0,
            y: 0.0,
            w: 100.0,
            h: 50.0,
        }),
        flip: Some(Flip::Lr),
        rotate: Some(90.0),
        wid: Some(25),
        ..png_req()
    };
    let img = render_image(&source, &request);
    assert_eq!(img.dimensions(), (25, 50));
    assert!(close(px(&img, 12, 10), GREEN, 2), "{:?}", px(&img, 12, 10));
    assert!(close(px(&img, 12, 40), RED, 2), "{:?}", px(&img, 12, 40));
}

#[test]
fn scaling_keeps_colours_and_sizes() {
    let source = png_source(halves(400, 200, RED, BLUE));
    let img = render_image(
        &source,
        &ImageRequest {
            wid: Some(100),
            ..png_req()
        },
    );
    assert_eq!(img.dimensions(), (100, 50));
    assert!(close(px(&img, 10, 25), RED, 1));
    assert!(close(px(&img, 90, 25), BLUE, 1));
    for mode in [
        ResMode::Bilin,
        ResMode::Bicub,
        ResMode::Sharp2,
        ResMode::Bisharp,
    ] {
        let attrs = Attributes {
            res_mode: mode,
            ..attrs()
        };
        let (rendered, _) = render_bytes(
            &source,
            &ImageRequest {
                wid: Some(300),
                ..png_req()
            },
            &attrs,
        )
        .unwrap();
        let img = image::load_from_memory(&rendered.bytes).unwrap();
        assert_eq!(img.dimensions(), (300, 150), "{mode:?}");
        assert!(close(px(&img, 10, 75), RED, 1), "{mode:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Formats

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
fn svg_rasters_are_placed_by_their_intrinsic_size() {
    // An SVG of intrinsic size 100×50, rasterised at what svg_raster_size asks for scl=2.
    let request = ImageRequest {
        scl: Some(2.0),
        ..png_req()
    };
    let (w, h) = svg_raster_size((100.0, 50.0), &request, &attrs()).unwrap();
    assert_eq!((w, h), (50, 25));
    let pixels = RgbaImage::from_fn(w, h, |x, _| {
        if x < w / 2 {
            Rgba([255, 0, 0, 255])
        } else {
            Rgba([0, 0, 255, 255])
        }
    });
    let source = Source::Svg {
        pixels,
        intrinsic: (100.0, 50.0),
    };
    let (rendered, _) = render_traced(source, &request, &attrs()).unwrap();
    assert_eq!(
        (rendered.width, rendered.height),
        (50, 25),
        "scaled once, not twice"
    );
    let img = image::load_from_memory(&rendered.bytes).unwrap();
    assert_eq!(px(&img, 5, 12), RED);
    // A crop in intrinsic units.
    let request = ImageRequest {
        crop: Some(Crop::Pixels {
            x: 50.0,
            y: 0.0,
            w: 50.0,
            h: 50.0,
        }),
        ..png_req()
    };
    let (w, h) = svg_raster_size((100.0, 50.0), &request, &attrs()).unwrap();
    let pixels = RgbaImage::from_fn(w, h, |x, _| {
        if x < w / 2 {
            Rgba([255, 0, 0, 255])
        } else {
            Rgba([0, 0, 255, 255])
        }
    });
    let source = Source::Svg {
        pixels,
        intrinsic: (100.0, 50.0),
    };
    let (rendered, _) = render_traced(source, &request, &attrs()).unwrap();
    let img = image::load_from_memory(&rendered.bytes).unwrap();
    assert_eq!(img.dimensions(), (50, 50));
    assert_eq!(px(&img, 25, 25), BLUE);
    // An SVG's bytes are not for the raster pipeline.
    let svg = b"<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'/>";
    assert_eq!(probe(svg, "x").unwrap().format, SourceFormat::Svg);
    assert!(render_bytes(svg, &req(), &attrs()).is_err());
}

// ---------------------------------------------------------------------------------------------
// Limits and hostile input

#[test]
fn max_pix_is_refused_before_decoding() {
    let source = png_source(pattern(40, 40));
    let err = render_bytes(
        &source,
        &ImageRequest {
            wid: Some(8001),
            ..req()
        },
        &attrs(),
    )
    .unwrap_err();
    assert_eq!(err.status, 403);
    assert!(err.message.contains("MaxPix"), "{err}");
}

#[test]
fn a_header_declaring_a_huge_image_is_refused_before_decoding() {
    // A valid PNG signature and IHDR declaring 100000×100000 RGBA, and nothing else.
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32(&ihdr).to_be_bytes());

    let info = probe(&png, "bomb.png").unwrap();
    assert_eq!(
        (info.width, info.height, info.has_alpha),
        (100_000, 100_000, true)
    );
    // Decoding would fail as bad_source (there is no image data): too_large proves it did not.
    let err = render_bytes(
        &png,
        &ImageRequest {
            wid: Some(100),
            ..req()
        },
        &attrs(),
    )
    .unwrap_err();
    assert_eq!(err.status, 403);
    assert!(err.message.contains("MaxSourcePix"), "{err}");
    assert!(!err.message.contains('/'), "no path in {err}");
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
fn source_props_name_the_format() {
    let bytes = jpeg(&pattern(30, 20), 80);
    let info = probe(&bytes, "x").unwrap();
    assert_eq!(
        info,
        SourceInfo {
            width: 30,
            height: 20,
            format: SourceFormat::Jpeg,
            has_alpha: false
        }
    );
    let props = source_props(&info);
    assert_eq!(
        props,
        vec![
            ("image.width".to_string(), "30".to_string()),
            ("image.height".into(), "20".into()),
            ("image.format".into(), "jpeg".into()),
            ("image.mimeType".into(), "image/jpeg".into()),
            ("image.hasAlpha".into(), "0".into()),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Rotation by any angle, extend, rgn, rect, the new fit modes, resMode, sharpening, TIFF

/// A `w`×`h` source of one colour, as PNG.
fn solid(w: u32, h: u32, c: [u8; 3]) -> Vec<u8> {
    png_source(rgb(w, h, |_, _| c))
}

fn render_req(source: &[u8], request: ImageRequest) -> DynamicImage {
    render_image(source, &request)
}

#[test]
fn rotate_45_grows_the_box_and_fills_the_corners() {
    let source = solid(100, 100, RED);
    let clear = render_req(
        &source,
        ImageRequest {
            rotate: Some(45.0),
            fmt: Some(OutputFormat::PngAlpha),
            ..req()
        },
    );
    let (w, h) = clear.dimensions();
    assert!(w.abs_diff(142) <= 1 && h.abs_diff(142) <= 1, "{w}×{h}");
    // The corners are outside the turned square: transparent; its middle and its own corners,
    // now at the middle of each side, are red.
    for (x, y) in [(0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1), (15, 15)] {
        assert_eq!(alpha(&clear, x, y), 0, "({x}, {y})");
    }
    for (x, y) in [(w / 2, h / 2), (w / 2, 3), (3, h / 2), (w - 4, h / 2)] {
        assert_eq!(clear.get_pixel(x, y).0, [255, 0, 0, 255], "({x}, {y})");
    }
    // Formats without alpha take bgc there.
    let flat = render_req(
        &source,
        ImageRequest {
            rotate: Some(-45.0),
            bgc: Some(Color([0, 255, 0, 255])),
            ..png_req()
        },
    );
    assert_eq!(flat.dimensions(), (w, h));
    assert_eq!(px(&flat, 0, 0), GREEN);
    assert_eq!(px(&flat, w / 2, h / 2), RED);
    // The edge is smooth: some pixel along the diagonal mixes the two.
    let mixed = (0..w / 2)
        .map(|i| px(&flat, i, h / 2 - i / 2))
        .any(|p| p != RED && p != GREEN);
    assert!(mixed);
}

#[test]
fn rotate_by_any_angle_turns_clockwise_and_sizes_the_box() {
    // Top half red, bottom half blue; turned by 30°, the reply is the box of the turned
    // rectangle, and the red half is up-right of the centre.
    let source = png_source(rgb(200, 100, |_, y| if y < 50 { RED } else { BLUE }));
    let request = ImageRequest {
        rotate: Some(30.0),
        ..png_req()
    };
    let p = plan((200, 100), &request, &attrs()).unwrap();
    let (s, c) = (0.5f64, 3f64.sqrt() / 2.0);
    let expect = |v: f64| (v - 1e-6).ceil() as u32;
    assert_eq!(
        (p.width, p.height),
        (expect(200.0 * c + 100.0 * s), expect(200.0 * s + 100.0 * c))
    );
    let img = render_req(&source, request);
    let (w, h) = img.dimensions();
    // Clockwise: the top edge's normal (pointing up) turns towards up-right.
    assert_eq!(px(&img, w / 2 + 10, h / 2 - 20), RED);
    assert_eq!(px(&img, w / 2 - 10, h / 2 + 20), BLUE);
}

#[test]
fn extend_adds_margins_and_negative_margins_crop() {
    let source = png_source(pattern(100, 50));
    let grown = render_req(
        &source,
        ImageRequest {
            extend: Some(Extend {
                l: 10.0,
                t: 20.0,
                r: 30.0,
                b: 40.0,
                normalized: false,
            }),
            bgc: Some(Color([1, 2, 3, 255])),
            ..png_req()
        },
    );
    assert_eq!(grown.dimensions(), (140, 110));
    assert_eq!(px(&grown, 5, 5), [1, 2, 3]);
    assert_eq!(px(&grown, 139, 109), [1, 2, 3]);
    assert_eq!(px(&grown, 10, 20), [0, 0, 0]);
    assert_eq!(
        px(&grown, 10 + 37, 20 + 11),
        [37, 11, (37 * 7 + 11 * 13) as u8]
    );
    // Alpha formats leave the margins transparent.
    let clear = render_req(
        &source,
        ImageRequest {
            extend: Some(Extend {
                l: 10.0,
                t: 0.0,
                r: 0.0,
                b: 0.0,
                normalized: false,
            }),
            fmt: Some(OutputFormat::PngAlpha),
            ..req()
        },
    );
    assert_eq!(clear.dimensions(), (110, 50));
    assert_eq!(alpha(&clear, 5, 5), 0);
    assert_eq!(alpha(&clear, 15, 5), 255);
    // Negative margins crop.
    let cut = render_req(
        &source,
        ImageRequest {
            extend: Some(Extend {
                l: -10.0,
                t: -5.0,
                r: -20.0,
                b: 0.0,
                normalized: false,
            }),
            ..png_req()
        },
    );
    assert_eq!(cut.dimensions(), (70, 45));
    assert_eq!(px(&cut, 0, 0), [10, 5, (10 * 7 + 5 * 13) as u8]);
    // extendN: fractions of the image's width (l, r) and height (t, b).
    let p = plan(
        (100, 50),
        &ImageRequest {
            extend: Some(Extend {
                l: 0.1,
                t: 0.5,
                r: 0.2,
                b: -0.2,
                normalized: true,
            }),
            ..req()
        },
        &attrs(),
    )
    .unwrap();
    assert_eq!((p.width, p.height), (130, 65));
    // Margins that leave nothing are refused.
    let err = plan(
        (100, 50),
        &ImageRequest {
            extend: Some(Extend {
                l: -60.0,
                t: 0.0,
                r: -40.0,
                b: 0.0,
                normalized: false,
            }),
            ..req()
        },
        &attrs(),
    )
    .unwrap_err();
    assert_eq!(err.status, 403);
}

#[test]
fn rgn_is_a_region_of_the_composite() {
    let source = png_source(pattern(100, 50));
    // On a plain image, rgn is a crop.
    let by_rgn = render_req(
        &source,
        ImageRequest {
            rgn: Some(Crop::Pixels {
                x: 10.0,
                y: 5.0,
                w: 30.0,
                h: 20.0,
            }),
            ..png_req()
        },
    );
    let by_crop = render_req(
        &source,
        ImageRequest {
            crop: Some(Crop::Pixels {
                x: 10.0,
                y: 5.0,
                w: 30.0,
                h: 20.0,
            }),
            ..png_req()
        },
    );
    assert_eq!(by_rgn.dimensions(), (30, 20));
    assert_eq!(by_rgn.to_rgb8(), by_crop.to_rgb8());
    // After rotate, its coordinates are the rotated image's (crop's stay the source's): the top
    // 10 rows of the 50×100 turned image are the source's left 10 columns, bottom up.
    let turned = render_req(
        &source,
        ImageRequest {
            rotate: Some(90.0),
            rgn: Some(Crop::Pixels {
                x: 0.0,
                y: 0.0,
                w: 50.0,
                h: 10.0,
            }),
            ..png_req()
        },
    );
    assert_eq!(turned.dimensions(), (50, 10));
    assert_eq!(px(&turned, 0, 0), [0, 49, (49 * 13) as u8]);
    // rgnN is in fractions of the composite; a region past it takes the fill.
    let past = render_req(
        &source,
        ImageRequest {
            rgn: Some(Crop::Normalized {
                x: 0.5,
                y: 0.0,
                w: 1.0,
                h: 1.0,
            }),
            bgc: Some(Color([9, 9, 9, 255])),
            ..png_req()
        },
    );
    assert_eq!(past.dimensions(), (100, 50));
    assert_eq!(px(&past, 0, 0), [50, 0, (50 * 7) as u8]);
    assert_eq!(px(&past, 60, 10), [9, 9, 9]);
}

#[test]
fn rect_replies_a_tile_of_the_scaled_view() {
    let source = png_source(pattern(200, 100));
    let request = |rect| ImageRequest {
        scl: Some(1.0),
        rect: Some(rect),
        bgc: Some(Color([7, 7, 7, 255])),
        ..png_req()
    };
    let tile = render_req(
        &source,
        request(ViewRect {
            x: 10,
            y: 20,
            w: 30,
            h: 40,
        }),
    );
    assert_eq!(tile.dimensions(), (30, 40));
    assert_eq!(px(&tile, 0, 0), [10, 20, (10 * 7 + 20 * 13) as u8]);
    // Past the view: the fill.
    let edge = render_req(
        &source,
        request(ViewRect {
            x: 190,
            y: 90,
            w: 20,
            h: 20,
        }),
    );
    assert_eq!(edge.dimensions(), (20, 20));
    assert_eq!(px(&edge, 0, 0), [190, 90, (190 * 7 + 90 * 13) as u8]);
    assert_eq!(px(&edge, 15, 15), [7, 7, 7]);
    // req=props reports the tile's size.
    let p = plan(
        (200, 100),
        &ImageRequest {
            wid: Some(100),
            rect: Some(ViewRect {
                x: 0,
                y: 0,
                w: 25,
                h: 10,
            }),
            ..req()
        },
        &attrs(),
    )
    .unwrap();
    assert_eq!((p.width, p.height), (25, 10));
}

#[test]
fn tiles_of_a_sharpened_view_reassemble_into_the_view() {
    // Sharpening happens before rect: a tile is exactly that part of the whole view.
    let source = png_source(noise(64, 48, 3));
    let base = ImageRequest {
        wid: Some(40),
        op_usm: Some(Usm {
            amount: 2.0,
            radius: 1.5,
            threshold: 0,
            mono: false,
        }),
        ..png_req()
    };
    let whole = render_req(&source, base.clone()).to_rgb8();
    let tile = render_req(
        &source,
        ImageRequest {
            rect: Some(ViewRect {
                x: 13,
                y: 7,
                w: 20,
                h: 15,
            }),
            ..base
        },
    )
    .to_rgb8();
    for (x, y, p) in tile.enumerate_pixels() {
        assert_eq!(*p, *whole.get_pixel(x + 13, y + 7), "({x}, {y})");
    }
}

#[test]
fn wrap_hfit_and_vfit_sizes() {
    let sizes = |mode, upscale, wid, hei| {
        let p = plan(
            (400, 200),
            &ImageRequest {
                wid: Some(wid),
                hei: Some(hei),
                fit: fit(mode, upscale),
                ..req()
            },
            &attrs(),
        )
        .unwrap();
        ((p.width, p.height), p.scaled)
    };
    // wrap covers the box and the reply grows to the scaled image.
    assert_eq!(
        sizes(FitMode::Wrap, false, 100, 100),
        ((200, 100), (200, 100))
    );
    assert_eq!(
        sizes(FitMode::Wrap, false, 1000, 1000),
        ((400, 200), (400, 200))
    );
    assert_eq!(
        sizes(FitMode::Wrap, true, 1000, 1000),
        ((2000, 1000), (2000, 1000))
    );
    // hfit: exactly wid wide, the height filled or cut; vfit likewise vertically.
    assert_eq!(
        sizes(FitMode::Hfit, false, 100, 100),
        ((100, 100), (100, 50))
    );
    assert_eq!(sizes(FitMode::Hfit, false, 100, 20), ((100, 20), (100, 50)));
    assert_eq!(
        sizes(FitMode::Hfit, false, 800, 100),
        ((800, 100), (400, 200))
    );
    assert_eq!(
        sizes(FitMode::Hfit, true, 800, 100),
        ((800, 100), (800, 400))
    );
    assert_eq!(
        sizes(FitMode::Vfit, false, 100, 100),
        ((100, 100), (200, 100))
    );
    assert_eq!(
        sizes(FitMode::Vfit, true, 100, 300),
        ((100, 300), (600, 300))
    );
    // Pixels: vfit of red | blue into 100×100 keeps the middle (align 0), both colours.
    let source = png_source(halves(400, 200, RED, BLUE));
    let img = render_req(
        &source,
        ImageRequest {
            wid: Some(100),
            hei: Some(100),
            fit: fit(FitMode::Vfit, false),
            ..png_req()
        },
    );
    assert_eq!(img.dimensions(), (100, 100));
    assert_eq!(px(&img, 10, 50), RED);
    assert_eq!(px(&img, 90, 50), BLUE);
}

#[test]
fn res_mode_of_the_request_overrides_the_catalog() {
    let source = png_source(noise(97, 89, 5));
    let with = |mode: Option<ResMode>, catalog: ResMode| {
        let attrs = Attributes {
            res_mode: catalog,
            ..attrs()
        };
        let request = ImageRequest {
            wid: Some(41),
            res_mode: mode,
            ..png_req()
        };
        let (rendered, _) = render_bytes(&source, &request, &attrs).unwrap();
        image::load_from_memory(&rendered.bytes).unwrap().to_rgb8()
    };
    let bilin = with(Some(ResMode::Bilin), ResMode::Sharp2);
    let sharp2 = with(Some(ResMode::Sharp2), ResMode::Bilin);
    assert_ne!(bilin, sharp2);
    assert_eq!(bilin, with(None, ResMode::Bilin));
    assert_eq!(sharp2, with(None, ResMode::Sharp2));
    assert_ne!(with(Some(ResMode::Bicub), ResMode::Bilin), bilin);
    assert_ne!(with(Some(ResMode::Bisharp), ResMode::Bilin), bilin);
}

#[test]
fn unsharp_masks_raise_edge_contrast() {
    let dark = [100, 100, 100];
    let light = [150, 150, 150];
    let source = png_source(halves(40, 10, dark, light));
    let with = |sharpen: Option<bool>, usm: Option<Usm>| {
        render_req(
            &source,
            ImageRequest {
                op_sharpen: sharpen,
                op_usm: usm,
                ..png_req()
            },
        )
    };
    let usm = |amount, radius, threshold, mono| {
        Some(Usm {
            amount,
            radius,
            threshold,
            mono,
        })
    };
    let plain = with(None, None);
    assert_eq!((px(&plain, 19, 5), px(&plain, 20, 5)), (dark, light));
    for mono in [false, true] {
        let sharp = with(None, usm(2.0, 2.0, 0, mono));
        let (l, r) = (px(&sharp, 19, 5)[0], px(&sharp, 20, 5)[0]);
        assert!(l < 100 && r > 150, "mono {mono}: {l} {r}");
        // Far from the edge, nothing changes.
        assert_eq!(px(&sharp, 2, 5), dark);
    }
    // A threshold above the edge's contrast leaves it alone; so does op_sharpen=0.
    assert_eq!(
        with(None, usm(2.0, 2.0, 60, false)).to_rgb8(),
        plain.to_rgb8()
    );
    assert_eq!(with(Some(false), None).to_rgb8(), plain.to_rgb8());
    // op_sharpen=1 is milder than a strong mask, but sharpens.
    let mild = with(Some(true), None);
    let strong = with(None, usm(5.0, 1.0, 0, false));
    let (ml, sl) = (px(&mild, 19, 5)[0], px(&strong, 19, 5)[0]);
    assert!(ml < 100 && sl < ml, "{ml} {sl}");
    // Mono sharpens the luminance: a colour edge of equal luminance is left alone.
    let iso = png_source(halves(40, 10, [200, 0, 0], [0, 102, 0]));
    let mono = render_req(
        &iso,
        ImageRequest {
            op_usm: usm(3.0, 2.0, 0, true),
            ..png_req()
        },
    );
    let colour = render_req(
        &iso,
        ImageRequest {
            op_usm: usm(3.0, 2.0, 0, false),
            ..png_req()
        },
    );
    assert!(
        close(px(&mono, 19, 5), [200, 0, 0], 2),
        "{:?}",
        px(&mono, 19, 5)
    );
    assert_ne!(px(&colour, 19, 5), [200, 0, 0]);
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

#[test]
fn svg_composites_are_rasterised_at_their_intrinsic_size() {
    let request = ImageRequest {
        rotate: Some(45.0),
        wid: Some(50),
        ..req()
    };
    assert_eq!(
        svg_raster_size((100.0, 80.0), &request, &attrs()).unwrap(),
        (100, 80)
    );
    let pixels = RgbaImage::from_pixel(100, 80, Rgba([255, 0, 0, 255]));
    let (rendered, _) = render_traced(
        Source::Svg {
            pixels,
            intrinsic: (100.0, 80.0),
        },
        &request,
        &attrs(),
    )
    .unwrap();
    assert_eq!(rendered.width, 50);
}

#[test]
fn composites_are_bounded_before_decoding() {
    let request = ImageRequest {
        extend: Some(Extend {
            l: 0.0,
            t: 0.0,
            r: 100_000.0,
            b: 100_000.0,
            normalized: false,
        }),
        wid: Some(100),
        ..req()
    };
    let err = plan((100, 100), &request, &attrs()).unwrap_err();
    assert_eq!(err.status, 403);
    assert!(err.message.contains("composite"), "{err}");
}

#[test]
fn each_step_of_the_view_transform_has_its_place() {
    // Quadrants: red | green over blue | yellow.
    let quadrants = |w: u32, h: u32| {
        png_source(rgb(w, h, move |x, y| match (x < w / 2, y < h / 2) {
            (true, true) => RED,
            (false, true) => GREEN,
            (true, false) => BLUE,
            (false, false) => YELLOW,
        }))
    };
    let source = quadrants(100, 100);
    let grey = Color([9, 9, 9, 255]);
    let margin = |l: f64| {
        Some(Extend {
            l,
            t: 0.0,
            r: 0.0,
            b: 0.0,
            normalized: false,
        })
    };

    // crop → flip → rotate on the composite path too (a zero extend forces it): green over red.
    let img = render_req(
        &source,
        ImageRequest {
            crop: Some(Crop::Pixels {
                x: 0.0,
                y: 0.0,
                w: 100.0,
                h: 50.0,
            }),
            flip: Some(Flip::Lr),
            rotate: Some(90.0),
            extend: margin(0.0),
            ..png_req()
        },
    );
    assert_eq!(img.dimensions(), (50, 100));
    assert_eq!((px(&img, 25, 10), px(&img, 25, 90)), (GREEN, RED));

    // rotate → extend: the margin is on the left of the turned 50×100 image (extending first
    // would give 50×110).
    let img = render_req(
        &quadrants(100, 50),
        ImageRequest {
            rotate: Some(90.0),
            extend: margin(10.0),
            bgc: Some(grey),
            ..png_req()
        },
    );
    assert_eq!(img.dimensions(), (60, 100));
    assert_eq!(px(&img, 5, 50), [9, 9, 9]);
    // Turned clockwise, the source's bottom-left (blue) is at the top-left.
    assert_eq!(px(&img, 15, 10), BLUE);

    // extend → rgn: the region is the margin (taken first, it would be red pixels).
    let img = render_req(
        &source,
        ImageRequest {
            extend: margin(10.0),
            rgn: Some(Crop::Pixels {
                x: 0.0,
                y: 0.0,
                w: 10.0,
                h: 50.0,
            }),
            bgc: Some(grey),
            ..png_req()
        },
    );
    assert_eq!(img.dimensions(), (10, 50));
    assert_eq!(px(&img, 5, 25), [9, 9, 9]);

    // rgn → scale: the top-left quadrant scaled to 25×25 is all red (scaling first would show
    // all four colours).
    let img = render_req(
        &source,
        ImageRequest {
            rgn: Some(Crop::Pixels {
                x: 0.0,
                y: 0.0,
                w: 50.0,
                h: 50.0,
            }),
            wid: Some(25),
            ..png_req()
        },
    );
    assert_eq!(img.dimensions(), (25, 25));
    for (x, y) in [(1, 1), (23, 1), (1, 23), (23, 23)] {
        assert_eq!(px(&img, x, y), RED, "({x}, {y})");
    }

    // scale → MaxPix → rect: the whole view is checked against MaxPix, even for a small tile.
    let small = Attributes {
        max_pix: (1000, 1000),
        ..attrs()
    };
    let tile = |wid| ImageRequest {
        wid: Some(wid),
        rect: Some(ViewRect {
            x: 25,
            y: 0,
            w: 25,
            h: 25,
        }),
        ..png_req()
    };
    let err = plan((100, 100), &tile(2000), &small).unwrap_err();
    assert!(err.message.contains("MaxPix"), "{err}");
    // scale → rect: the tile is of the 50×50 view: all green (a tile of the source, scaled,
    // would be 13×13 and half red).
    let img = render_req(&source, tile(50));
    assert_eq!(img.dimensions(), (25, 25));
    for (x, y) in [(1, 1), (23, 1), (1, 23), (23, 23)] {
        assert_eq!(px(&img, x, y), GREEN, "({x}, {y})");
    }

    // scale → sharpen → rect: `tiles_of_a_sharpened_view_reassemble_into_the_view`.
    // … → fill: what the rotation uncovers takes bgc in a format without alpha, and the part of
    // a rect past the view too: `rotate_45_grows_the_box_and_fills_the_corners`,
    // `rect_replies_a_tile_of_the_scaled_view`.
}

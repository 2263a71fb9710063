//! Planning a reply from sizes alone (`plan`, `svg_raster_size`): the reply and scaled sizes of
//! every fit mode, `align` offsets, `DefaultPix`, `MaxPix` and the composite's bounds, format and
//! quality, and the raster size asked of the svg server.

use image::GenericImageView;

use super::fixtures::{
    attrs, fit, halves, pattern, png_req, png_source, px, render_bytes, render_req, req, BLUE, RED,
};
use crate::imaging::catalog::Attributes;
use crate::imaging::pipeline::{plan, reply_props, svg_raster_size};
use crate::imaging::request::{Align, Crop, Extend, FitMode, ImageRequest, OutputFormat};

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

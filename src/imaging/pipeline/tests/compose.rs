//! Composing the view, checked pixel by pixel: `align` and the fill, `crop`, `flip`, `rotate` by
//! quarter turns and by any angle, `extend`, `rgn`, the `rect` tile, resampling and `resMode`,
//! and SVG rasters placed by their intrinsic size.

use image::{DynamicImage, GenericImageView, Rgba, RgbaImage};

use super::fixtures::{
    alpha, attrs, close, fit, halves, noise, pattern, png_req, png_source, px, render_bytes,
    render_image, render_req, req, rgb, BLUE, GREEN, RED, WHITE,
};
use crate::imaging::catalog::{Attributes, ResMode};
use crate::imaging::pipeline::{plan, probe, render_traced, svg_raster_size, Source, SourceFormat};
use crate::imaging::request::{
    Align, Crop, Extend, FitMode, Flip, ImageRequest, OutputFormat, Rgba as Color, ViewRect,
};

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

/// A `w`×`h` source of one colour, as PNG.
fn solid(w: u32, h: u32, c: [u8; 3]) -> Vec<u8> {
    png_source(rgb(w, h, |_, _| c))
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

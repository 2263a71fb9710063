//! The order of the steps, through the whole pipeline: crop, flip, rotate, extend, rgn, scale,
//! `MaxPix`, rect, each in its place.

use image::GenericImageView;

use super::fixtures::{
    attrs, close, png_req, png_source, px, render_image, render_req, rgb, BLUE, GREEN, RED, YELLOW,
};
use crate::imaging::catalog::Attributes;
use crate::imaging::pipeline::plan;
use crate::imaging::request::{Crop, Extend, Flip, ImageRequest, Rgba as Color, ViewRect};

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

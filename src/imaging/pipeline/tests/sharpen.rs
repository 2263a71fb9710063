//! Sharpening the view: `op_sharpen` and `op_usm` (threshold, mono), and tiles of a sharpened
//! view that reassemble into it.

use super::fixtures::{close, halves, noise, png_req, png_source, px, render_req};
use crate::imaging::request::{ImageRequest, Usm, ViewRect};

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

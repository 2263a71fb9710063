//! Sharpening after scaling: `op_sharpen=1` (a mild, fixed unsharp mask) and
//! `op_usm=amount,radius,threshold,mono` (an unsharp mask of the caller's choosing).
//!
//! An unsharp mask adds `amount` times the difference between the image and a gaussian blur of
//! it (standard deviation `radius` pixels) back to the image, where that difference is at least
//! `threshold` levels; `mono` computes the difference on the luminance and adds it to the three
//! channels alike, which sharpens without colour fringes. Alpha is never changed. The blur is a
//! true separable gaussian up to a radius of [`BOX_FROM_RADIUS`], and three box blurs (the usual
//! approximation, constant cost per pixel) above it.

use crate::imaging::request::{ImageRequest, Usm};

use super::compose::Canvas;

/// `op_sharpen=1`: amount, radius, threshold, mono.
pub(crate) const MILD: Usm = Usm {
    amount: 0.8,
    radius: 0.6,
    threshold: 0,
    mono: false,
};

/// Above this radius, the gaussian is approximated by three box blurs.
const BOX_FROM_RADIUS: f32 = 3.0;

/// The masks a request asks for, in the order they apply: `op_sharpen`, then `op_usm`.
pub(crate) fn masks(req: &ImageRequest) -> Vec<Usm> {
    let mut masks = Vec::new();
    if req.op_sharpen == Some(true) {
        masks.push(MILD);
    }
    if let Some(usm) = req.op_usm {
        masks.push(usm);
    }
    masks
}

/// Applies `usm` to `canvas` in place.
pub(crate) fn unsharp(canvas: &mut Canvas, usm: &Usm) {
    let amount = usm.amount.clamp(0.0, 5.0) as f32;
    let radius = usm.radius.clamp(0.0, 250.0) as f32;
    if amount == 0.0 || radius == 0.0 {
        return;
    }
    let (w, h) = canvas.dimensions();
    let (w, h) = (w as usize, h as usize);
    let (raw, n): (&mut [u8], usize) = match canvas {
        Canvas::Rgb(img) => (img, 3),
        Canvas::Rgba(img) => (img, 4),
    };
    let threshold = f32::from(usm.threshold);
    let apply = |v: u8, d: f32| -> u8 {
        if d.abs() < threshold {
            v
        } else {
            (f32::from(v) + amount * d).round().clamp(0.0, 255.0) as u8
        }
    };
    if usm.mono {
        let luma: Vec<f32> = raw
            .chunks_exact(n)
            .map(|p| 0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]))
            .collect();
        let blurred = blur(&luma, w, h, radius);
        for (i, p) in raw.chunks_exact_mut(n).enumerate() {
            let d = luma[i] - blurred[i];
            for v in &mut p[..3] {
                *v = apply(*v, d);
            }
        }
    } else {
        for c in 0..3 {
            let plane: Vec<f32> = raw.chunks_exact(n).map(|p| f32::from(p[c])).collect();
            let blurred = blur(&plane, w, h, radius);
            for (i, p) in raw.chunks_exact_mut(n).enumerate() {
                p[c] = apply(p[c], plane[i] - blurred[i]);
            }
        }
    }
}

/// A gaussian blur of a `w`×`h` plane, standard deviation `sigma`, edges extended.
fn blur(plane: &[f32], w: usize, h: usize, sigma: f32) -> Vec<f32> {
    if sigma <= BOX_FROM_RADIUS {
        let radius = (3.0 * sigma).ceil() as usize;
        let mut kernel: Vec<f32> = (0..=2 * radius)
            .map(|i| {
                let x = i as f32 - radius as f32;
                (-x * x / (2.0 * sigma * sigma)).exp()
            })
            .collect();
        let sum: f32 = kernel.iter().sum();
        kernel.iter_mut().for_each(|k| *k /= sum);
        let horizontal = convolve(plane, w, h, &kernel, true);
        convolve(&horizontal, w, h, &kernel, false)
    } else {
        // Three boxes whose variances add up to sigma² (widths 2r+1, r from the variance).
        let r = (((12.0 * sigma * sigma / 3.0) + 1.0).sqrt() - 1.0) / 2.0;
        let r = r.round().max(1.0) as usize;
        let mut out = plane.to_vec();
        for _ in 0..3 {
            out = box_pass(&out, w, h, r, true);
            out = box_pass(&out, w, h, r, false);
        }
        out
    }
}

/// One pass of `kernel` (odd length, centred) along rows (`horizontal`) or columns.
fn convolve(plane: &[f32], w: usize, h: usize, kernel: &[f32], horizontal: bool) -> Vec<f32> {
    let radius = (kernel.len() / 2) as isize;
    let (len, lines) = if horizontal { (w, h) } else { (h, w) };
    let index = |line: usize, i: usize| {
        if horizontal {
            line * w + i
        } else {
            i * w + line
        }
    };
    let mut out = vec![0.0; plane.len()];
    for line in 0..lines {
        for i in 0..len {
            let mut acc = 0.0;
            for (k, weight) in kernel.iter().enumerate() {
                let j = (i as isize + k as isize - radius).clamp(0, len as isize - 1) as usize;
                acc += weight * plane[index(line, j)];
            }
            out[index(line, i)] = acc;
        }
    }
    out
}

/// One box blur of width `2r+1` along rows or columns, with a running sum (edges extended).
fn box_pass(plane: &[f32], w: usize, h: usize, r: usize, horizontal: bool) -> Vec<f32> {
    let (len, lines) = if horizontal { (w, h) } else { (h, w) };
    let index = |line: usize, i: usize| {
        if horizontal {
            line * w + i
        } else {
            i * w + line
        }
    };
    let at = |line: usize, i: isize| plane[index(line, i.clamp(0, len as isize - 1) as usize)];
    let width = (2 * r + 1) as f32;
    let r = r as isize;
    let mut out = vec![0.0; plane.len()];
    for line in 0..lines {
        let mut acc: f32 = (-r..=r).map(|i| at(line, i)).sum();
        for i in 0..len {
            out[index(line, i)] = acc / width;
            let i = i as isize;
            acc += at(line, i + r + 1) - at(line, i - r);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blurs_keep_a_flat_plane_flat_and_spread_an_edge() {
        let (w, h) = (100, 3);
        let flat = vec![100.0; w * h];
        for sigma in [0.5, 2.0, 10.0] {
            assert!(blur(&flat, w, h, sigma)
                .iter()
                .all(|v| (v - 100.0).abs() < 1e-3));
        }
        let edge: Vec<f32> = (0..w * h)
            .map(|i| if i % w < w / 2 { 0.0 } else { 255.0 })
            .collect();
        for sigma in [1.0, 8.0] {
            let b = blur(&edge, w, h, sigma);
            assert!(b[w / 2 - 1] > 0.0 && b[w / 2] < 255.0, "{sigma}");
            assert!(b[0] < 1.0 && b[w - 1] > 254.0, "{sigma}");
        }
    }
}

//! Tests of the pipeline through its entry points (`probe`, `plan`, `svg_raster_size`,
//! `render`), one file per stage they exercise most, checked on the reply's sizes and pixels.
//!
//! - [`probe`]: format, size and alpha from the header; a declared size refused before decoding;
//! - [`geometry`]: the plan (sizes of every fit mode, `align`, `DefaultPix`, `MaxPix`, the
//!   composite's bounds, format and quality) and the SVG raster size;
//! - [`decode`]: every source format, JPEG shrink-on-load, hostile and corrupted bytes;
//! - [`compose`]: the view pixel by pixel (crop, flip, rotate, extend, rgn, rect, fill,
//!   resampling, SVG rasters);
//! - [`sharpen`]: `op_sharpen` and `op_usm`; [`encode`]: every output format, quality, the byte
//!   cap;
//! - [`order`]: each step of the view transform in its place, through the whole pipeline;
//! - [`fixtures`]: the colours, requests, generated test images and render helpers they share.
//!
//! The unit tests of a stage's internals sit beside its code (`pipeline/geometry.rs` etc.).

mod compose;
mod decode;
mod encode;
mod fixtures;
mod geometry;
mod order;
mod probe;
mod sharpen;

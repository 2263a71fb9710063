//! The image side shared by the three servers: the request model of the URL protocol, the
//! catalog, the processing pipeline, SVG rasterising, and the errors they answer with.
//!
//! ```text
//!  ps: URL ──query::parse──▶ ImageRequest ──JSON──▶ is: catalog::resolve ─▶ read source
//!                                                        │ SVG? ──▶ svg server: svg::render
//!                                                        ▼
//!                                           pipeline::render ─▶ encoded reply
//! ```

pub mod catalog;
pub mod error;
pub mod pipeline;
pub mod query;
pub mod request;
pub mod samples;
pub mod svg;
pub mod text;

pub use error::ImageError;
pub use request::ImageRequest;

//! The three component servers, each run by the supervisor as `imageserving component <name>`:
//!
//! - [`platform_server`] (`ps`): the public HTTP front end of the URL protocol;
//! - [`image_server`] (`is`): decodes, processes and encodes images;
//! - [`svg_server`] (`svg`): rasterises SVG sources for `is`.
//!
//! They find each other through the environment the supervisor sets (see
//! `docs/configuration.md`): `IMAGESERVING_LISTEN`, `IMAGESERVING_HOME`,
//! `IMAGESERVING_IS_ADDR`, `IMAGESERVING_SVG_ADDR`. Each module exposes a `serve` function that
//! takes a bound listener and a shutdown future, so tests run them in-process on ephemeral ports.

pub mod image_server;
pub mod platform_server;
pub mod svg_server;

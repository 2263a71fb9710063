//! Property-based fuzzing, on the stable toolchain, of every parser that reads input from outside
//! the process: the control socket's framing and codec ([`imageserving::protocol`]), the
//! configuration file ([`imageserving::config::parse`]), the image URL
//! ([`imageserving::imaging::query::parse`]), source image headers
//! ([`imageserving::imaging::pipeline::probe`]) and catalog files
//! ([`imageserving::imaging::catalog::load`]).
//!
//! Each parser gets two kinds of input: arbitrary bytes or strings, and *structured* input, i.e.
//! valid input built from the grammar's pieces and then mutated by inserting, deleting,
//! replacing and duplicating characters taken from a pool of the grammar's delimiters. The
//! second kind reaches far deeper than random bytes, which a parser rejects on the first
//! character. Every property asserts more than "no panic": what an answer must satisfy when the
//! parser accepts, and what its error must say when it refuses.
//!
//! One test binary (`cargo test --test fuzz`), one file per parser:
//! - [`harness`]: the bounded case count, a runtime for readers, the mutations;
//! - [`ipc`]: the control socket's framing and codec; [`config`]: the configuration file;
//! - [`url`]: image URLs; [`request_json`]: the parsed request's JSON hop from `ps` to `is`;
//! - [`probe`]: source image headers; [`catalog`]: catalog files.
//!
//! Each property runs a bounded number of cases so that `cargo test` stays fast; the environment
//! variable `PROPTEST_CASES` overrides them all for a longer run (see `fuzz/README.md`). Failures
//! are not persisted to files: a failing input found once is added to its parser's file as a
//! named regression test instead, where it documents itself.

mod catalog;
mod config;
mod harness;
mod ipc;
mod probe;
mod request_json;
mod url;

//! Fuzzes the image URL parser: the input is `path?query`; what parses must name a plain
//! relative object, what does not must be a 403.
#![no_main]

use std::path::{Component, Path};

use imageserving::imaging::query;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(url) = std::str::from_utf8(data) else {
        return;
    };
    let (path, query_string) = match url.split_once('?') {
        Some((path, query_string)) => (path, Some(query_string)),
        None => (url, None),
    };
    match query::parse(path, query_string) {
        Ok(request) => {
            for object in std::iter::once(&request.object).chain(&request.default_image) {
                assert!(!object.is_empty());
                assert!(object
                    .split('/')
                    .all(|e| !e.is_empty() && e != "." && e != ".." && !e.contains('\\')));
                assert!(Path::new(object)
                    .components()
                    .all(|c| matches!(c, Component::Normal(_))));
            }
        }
        Err(e) => assert!(matches!(e.status, 403 | 404), "{e}"),
    }
});

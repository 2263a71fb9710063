//! The image request's JSON hop from `ps` to `is` (`POST /render`): `is` must render exactly the
//! request `ps` parsed (and keyed its cache by). A bug found here once is kept as a named
//! regression test beside the property that found it.

use imageserving::imaging::query;
use imageserving::imaging::request::ImageRequest;
use proptest::prelude::*;

use crate::harness::config;
use crate::url::{raw_path, raw_query};

/// The request `ps` parsed, after the JSON hop to `is` (`POST /render`).
pub(crate) fn through_json(r: &ImageRequest) -> ImageRequest {
    let json = serde_json::to_vec(r).expect("a request serializes");
    serde_json::from_slice(&json).expect("is accepts what ps sends")
}

/// Found by `modifiers_are_applied_or_refused_with_a_403`: serde_json, built without its
/// `float_roundtrip` feature, parsed some floats one ULP away from what it printed, so `is`
/// rendered a request that differed from the one `ps` parsed (and keyed its cache by). Fixed by
/// enabling that feature.
#[test]
fn regression_extend_float_survives_the_json_hop() {
    let request = query::parse("a", Some("extend=0,0,0,106.15793854682701")).unwrap();
    assert_eq!(through_json(&request), request);
    let request = query::parse("a", Some("rotate=113943.55032409201")).unwrap();
    assert_eq!(through_json(&request), request);
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn image_requests_cross_the_json_hop_exactly(path in raw_path(), query_string in raw_query()) {
        if let Ok(request) = query::parse(&path, Some(&query_string)) {
            prop_assert_eq!(through_json(&request), request);
        }
    }
}

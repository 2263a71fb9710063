//! Image URLs ([`imageserving::imaging::query::parse`]): objects against a model of the
//! documented rules, modifiers applied within their ranges or refused with a 403, and valid URLs
//! mutated with the characters the grammar cares about.

use std::path::{Component, Path};

use imageserving::imaging::query;
use imageserving::imaging::request::{Crop, ImageRequest};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;

use crate::harness::{char_from, config, edits, mutate_str};
use crate::request_json::through_json;

/// Elements of an object path, raw (percent-encoded), that the parser accepts.
const GOOD_ELEMENTS: &[&str] = &[
    "a",
    "img",
    "photo.jpg",
    "default",
    "my catalog",
    "x+y",
    "caf%C3%A9",
    "%e2%82%ac",
    "~user",
    "...",
    ".hidden",
    "%2e%2e%2e",
    "%25",
    "%20",
];

/// Elements it refuses: every spelling of `.`, `..`, a separator, a control character and a bad
/// escape.
const BAD_ELEMENTS: &[&str] = &[
    ".",
    "..",
    "%2e",
    "%2E%2e",
    ".%2e",
    "%2e.",
    "%2e%2e%2f",
    "a%2Fb",
    "a%2fb",
    "%5c",
    "a\\b",
    "%00",
    "%0a",
    "%7f",
    "%zz",
    "%4",
    "%",
    "%%",
    "%c0%ae",
    "%c0%af",
    "%ff",
    "",
];

/// Characters a mutation of a URL inserts.
const URL_CHARS: &[char] = &[
    '&', '=', ',', '%', '.', '/', '\\', '$', '+', ' ', '0', '1', '9', '-', 'e', 'a', 'F', 'x', '2',
    'C', '\0', '\u{7f}', 'é', '\n',
];

/// Commands of the URL protocol, in several spellings, and names that are not.
const MODIFIER_NAMES: &[&str] = &[
    "req",
    "wid",
    "WID",
    "hei",
    "scl",
    "fit",
    "align",
    "bgc",
    "crop",
    "cropN",
    "cropn",
    "flip",
    "rotate",
    "extend",
    "extendN",
    "rgn",
    "rgnN",
    "rect",
    "op_sharpen",
    "op_usm",
    "resMode",
    "defaultImage",
    "defaultimage",
    "fmt",
    "Fmt",
    "qlt",
    "cache",
    "w%69d",
    "%77id",
    "layer",
    "icc",
    "size",
    "$var",
    "$",
    ".comment",
    "",
    "bogus",
    "%zz",
    "wid%3D",
];

/// Value items: numbers at and beyond every range, keywords of every command, paths.
const VALUE_ITEMS: &[&str] = &[
    "0",
    "1",
    "2",
    "-1",
    "0.5",
    "-0",
    "1.5",
    "100",
    "101",
    "255",
    "256",
    "360",
    "-90",
    "65535",
    "65536",
    "4294967296",
    "00001",
    "1e3",
    "1e309",
    "-1e309",
    "NaN",
    "inf",
    "-inf",
    "0x",
    "0xf80",
    "0xGG",
    "0x80",
    "f80",
    "ff8800",
    "FF880080",
    "img",
    "props",
    "imageprops",
    "exists",
    "json",
    "xml",
    "html",
    "fit",
    "crop",
    "constrain",
    "lr",
    "ud",
    "none",
    "bilin",
    "trilin",
    "jpeg",
    "png-alpha",
    "webp",
    "lossy",
    "tif",
    "lzw",
    "gray",
    "rgb",
    "avif",
    "on",
    "off",
    "validate",
    "a/b",
    "../x",
    "a/./b",
    "/abs",
    "a//b",
    "a\\b",
    "%2C",
    "%2c",
    "%00",
    "%2e%2e",
    "%zz",
    "%",
    "+",
    "",
];

/// Percent-decodes one element the way the module documentation says: `%` and two hex digits,
/// `+` stays `+`, and the result must be UTF-8.
fn model_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The object the documentation promises for a raw path, or `None` where it promises a 403.
fn model_object(raw: &str) -> Option<String> {
    if raw.is_empty() {
        return None;
    }
    let mut elements = Vec::new();
    for raw_element in raw.split('/') {
        let element = model_decode(raw_element)?;
        let bad = element
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control());
        if element.is_empty() || element == "." || element == ".." || bad {
            return None;
        }
        elements.push(element);
    }
    Some(elements.join("/"))
}

/// An object `is` may join to its image root: relative, plain elements only.
fn check_object(object: &str, what: &str) -> Result<(), TestCaseError> {
    prop_assert!(!object.is_empty(), "{what}: empty object");
    for element in object.split('/') {
        prop_assert!(
            !element.is_empty() && element != "." && element != "..",
            "{what}: element {element:?} in {object:?}"
        );
        prop_assert!(
            !element.contains('\\') && !element.chars().any(char::is_control),
            "{what}: element {element:?} in {object:?}"
        );
    }
    prop_assert!(
        Path::new(object)
            .components()
            .all(|c| matches!(c, Component::Normal(_))),
        "{what}: {object:?} is not a plain relative path"
    );
    Ok(())
}

/// Everything a parsed request promises `is` (see the table of the query module).
fn check_request(r: &ImageRequest) -> Result<(), TestCaseError> {
    check_object(&r.object, "object")?;
    if let Some(default) = &r.default_image {
        check_object(default, "defaultImage")?;
    }
    for size in [r.wid, r.hei].into_iter().flatten() {
        prop_assert!((1..=query::MAX_DIMENSION).contains(&size), "{size}");
    }
    if let Some(scl) = r.scl {
        prop_assert!(scl.is_finite() && scl > 0.0, "scl {scl}");
    }
    if let Some(rotate) = r.rotate {
        prop_assert!((0.0..360.0).contains(&rotate), "rotate {rotate}");
    }
    if let Some(align) = r.align {
        prop_assert!((-1.0..=1.0).contains(&align.h) && (-1.0..=1.0).contains(&align.v));
    }
    for crop in [r.crop, r.rgn].into_iter().flatten() {
        let (Crop::Pixels { x, y, w, h } | Crop::Normalized { x, y, w, h }) = crop;
        prop_assert!([x, y, w, h].iter().all(|v| v.is_finite()), "{crop:?}");
        prop_assert!(w > 0.0 && h > 0.0, "{crop:?}");
    }
    if let Some(e) = r.extend {
        prop_assert!([e.l, e.t, e.r, e.b].iter().all(|v| v.is_finite()), "{e:?}");
        if e.normalized {
            prop_assert!(
                [e.l, e.t, e.r, e.b].iter().all(|v| v.abs() <= 100.0),
                "{e:?}"
            );
        }
    }
    if let Some(rect) = r.rect {
        prop_assert!(rect.x <= query::MAX_DIMENSION && rect.y <= query::MAX_DIMENSION);
        prop_assert!((1..=query::MAX_DIMENSION).contains(&rect.w));
        prop_assert!((1..=query::MAX_DIMENSION).contains(&rect.h));
    }
    if let Some(usm) = r.op_usm {
        prop_assert!((0.0..=5.0).contains(&usm.amount) && (0.0..=250.0).contains(&usm.radius));
    }
    if let Some(q) = r.qlt {
        prop_assert!((1..=100).contains(&q), "qlt {q}");
    }
    // `ps` sends the request to `is` as JSON (and keys its cache by that JSON): `is` must accept
    // it and see exactly the same request.
    let back = through_json(r);
    prop_assert_eq!(&back, r, "the JSON hop to `is` changed the request");
    Ok(())
}

/// Parses and checks: an error is a 403 (or 404) with a message, a success keeps every promise.
fn check_url(
    path: &str,
    query_string: Option<&str>,
) -> Result<Option<ImageRequest>, TestCaseError> {
    match query::parse(path, query_string) {
        Ok(request) => {
            check_request(&request)?;
            Ok(Some(request))
        }
        Err(e) => {
            prop_assert!(matches!(e.status, 403 | 404), "{e}");
            prop_assert!(!e.message.is_empty());
            prop_assert!(
                !e.message.contains('\n'),
                "a message is one line: {:?}",
                e.message
            );
            Ok(None)
        }
    }
}

pub(crate) fn raw_path() -> impl Strategy<Value = String> {
    let element = prop_oneof![6 => select(GOOD_ELEMENTS), 1 => select(BAD_ELEMENTS)];
    (vec(element, 1..5), prop::bool::weighted(0.1)).prop_map(|(elements, leading)| {
        let path = elements.join("/");
        if leading {
            format!("/{path}")
        } else {
            path
        }
    })
}

/// A numeric item outside the fixed pool: any float or integer, as a URL would spell it.
fn number_item() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<f64>().prop_map(|x| x.to_string()),
        (-1000.0..1000.0f64).prop_map(|x| x.to_string()),
        any::<u32>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
    ]
}

fn modifier() -> impl Strategy<Value = String> {
    let item = prop_oneof![4 => select(VALUE_ITEMS).prop_map(str::to_owned), 1 => number_item()];
    let separator = select(&[",", ",", ",", "%2C", "/"][..]);
    let value = vec((item, separator), 0..5).prop_map(|items| {
        let mut value = String::new();
        for (i, (item, separator)) in items.iter().enumerate() {
            if i > 0 {
                value.push_str(separator);
            }
            value.push_str(item);
        }
        value
    });
    (select(MODIFIER_NAMES), option::of(value)).prop_map(|(name, value)| match value {
        Some(value) => format!("{name}={value}"),
        None => name.to_owned(),
    })
}

/// A finite float as a URL spells it.
fn float_in(range: std::ops::Range<f64>) -> impl Strategy<Value = String> + Clone {
    range.prop_map(|x| x.to_string())
}

/// Four comma-separated items.
fn four(items: impl Strategy<Value = String> + Clone) -> impl Strategy<Value = String> {
    (items.clone(), items.clone(), items.clone(), items)
        .prop_map(|(a, b, c, d)| format!("{a},{b},{c},{d}"))
}

/// A modifier with a value its command accepts (mostly: the ranges reach just past the limits).
fn valid_modifier() -> impl Strategy<Value = String> {
    let keyword = |name: &'static str, words: &'static [&'static str]| {
        select(words).prop_map(move |w| format!("{name}={w}"))
    };
    let good_path = vec(select(GOOD_ELEMENTS), 1..3).prop_map(|e| e.join("/"));
    prop_oneof![
        keyword(
            "req",
            &[
                "img",
                "props",
                "imageprops,json",
                "exists,xml",
                "PROPS,text"
            ]
        ),
        (select(&["wid", "hei"][..]), 0..=65536u32).prop_map(|(n, v)| format!("{n}={v}")),
        float_in(-0.1..100.0).prop_map(|v| format!("scl={v}")),
        keyword(
            "fit",
            &[
                "fit",
                "constrain,1",
                "crop,0",
                "wrap",
                "stretch",
                "hfit,1",
                "Vfit"
            ]
        ),
        (float_in(-1.1..1.1), float_in(-1.1..1.1)).prop_map(|(h, v)| format!("align={h},{v}")),
        prop_oneof![
            "[0-9a-fA-F]{6}|[0-9a-fA-F]{8}|0x[0-9a-f]{3}|0x[0-9a-f]{2}|[a-f]{3}",
            (0..300u32).prop_map(|g| g.to_string()),
            (0..300u32, 0..300u32, 0..300u32).prop_map(|(r, g, b)| format!("{r},{g},{b}")),
        ]
        .prop_map(|v| format!("bgc={v}")),
        (
            select(&["crop", "cropN", "rgn", "rgnN"][..]),
            four(float_in(-10.0..1000.0))
        )
            .prop_map(|(n, v)| format!("{n}={v}")),
        keyword("flip", &["lr", "ud", "lrud", "none", "LR"]),
        prop_oneof![
            any::<f64>().prop_map(|x| x.to_string()),
            float_in(-1e6..1e6)
        ]
        .prop_map(|v| format!("rotate={v}")),
        (
            select(&["extend", "extendN"][..]),
            four(float_in(-120.0..120.0))
        )
            .prop_map(|(n, v)| format!("{n}={v}")),
        four((0..=65536u32).prop_map(|v| v.to_string())).prop_map(|v| format!("rect={v}")),
        keyword("op_sharpen", &["0", "1"]),
        (float_in(0.0..5.5), float_in(0.0..260.0), 0..300u32, 0..2u32)
            .prop_map(|(a, r, t, m)| format!("op_usm={a},{r},{t},{m}")),
        keyword("resMode", &["bilin", "bicub", "sharp2", "bisharp"]),
        good_path.prop_map(|p| format!("defaultImage={p}")),
        keyword(
            "fmt",
            &[
                "jpg",
                "png",
                "png-alpha,rgb",
                "webp,rgb,lossy",
                "gif",
                "tif",
                "tiff-alpha"
            ]
        ),
        (0..=101u32).prop_map(|q| format!("qlt={q}")),
        keyword("cache", &["on", "off", "validate,update", "off,on"]),
        Just("$var=anything".to_owned()),
        Just(".a comment, with = and ,".to_owned()),
    ]
}

pub(crate) fn raw_query() -> impl Strategy<Value = String> {
    vec(prop_oneof![4 => valid_modifier(), 1 => modifier()], 0..6)
        .prop_map(|modifiers| modifiers.join("&"))
}

/// URLs that parse, to be mutated.
const VALID_URLS: &[(&str, &str)] = &[
    (
        "sample/photo.jpg",
        "wid=200&hei=100&fit=crop,1&fmt=png-alpha",
    ),
    ("catalog/id", "req=props,json&cache=off,on"),
    (
        "a/b/c.png",
        "crop=10,10,100,50&rotate=-30.5&flip=lr&bgc=0xf80",
    ),
    (
        "x",
        "cropN=0.1,0.1,0.5,0.5&extendN=0.1,0,0.1,0&rgn=0,0,10,10&rect=0,0,256,256",
    ),
    (
        "img%20one",
        "op_usm=1,2,3,1&resMode=bisharp&qlt=85,1&align=-1,1",
    ),
    (
        "caf%C3%A9/x.tif",
        "defaultImage=missing/other.jpg&$v=1&.note&&scl=2.5",
    ),
];

proptest! {
    #![proptest_config(config(4096))]

    #[test]
    fn url_parser_survives_arbitrary_strings(path in any::<String>(), query_string in option::of(any::<String>())) {
        check_url(&path, query_string.as_deref())?;
    }

    /// Every spelling of `.`, `..`, separators and bad escapes: the parser agrees with a model of
    /// the documented rules, and what it accepts is a plain relative path.
    #[test]
    fn objects_follow_the_documented_rules(path in raw_path()) {
        let got = check_url(&path, None)?.map(|r| r.object);
        prop_assert_eq!(got, model_object(&path), "path {:?}", path);
    }

    #[test]
    fn modifiers_are_applied_or_refused_with_a_403(path in raw_path(), query_string in raw_query()) {
        check_url(&path, Some(&query_string))?;
    }

    /// Valid URLs, damaged with the characters the grammar cares about.
    #[test]
    fn mutated_urls_are_parsed_or_refused_with_a_403(
        url in select(VALID_URLS),
        path_edits in edits(char_from(URL_CHARS), 3),
        query_edits in edits(char_from(URL_CHARS), 6),
    ) {
        let path = mutate_str(url.0, &path_edits);
        let query_string = mutate_str(url.1, &query_edits);
        check_url(&path, Some(&query_string))?;
    }
}

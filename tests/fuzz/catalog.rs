//! Catalog files ([`imageserving::imaging::catalog::load`]): every error names its file and a
//! line that exists; every loaded catalog keeps its limits in range and its paths relative.

use std::path::{Component, Path};

use imageserving::imaging::catalog;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;

use crate::harness::{char_from, config, edits, mutate_str};

/// Catalog lines that are valid on their own (an attribute given twice is still refused).
const GOOD_CATALOG_LINES: &[&str] = &[
    "# comment",
    "; comment",
    "",
    "[attributes]",
    "[ids]",
    "[ IDS ]",
    "DefaultPix=0,0",
    "MaxPix=8000,8000",
    "MaxSourcePix=1000",
    "JpegQuality=85",
    "BkgColor=#FFFFFF",
    "BkgColor=0x11223344",
    "Expiration=-1",
    "Expiration=8760",
    "Expiration=1e-300",
    "ErrorDetail=1",
    "DefaultImage=",
    "DefaultImage=a/b.jpg",
    "ResMode=bisharp",
    "MaxReplyBytes=1",
    "MaxSvgPix=5",
    "photo=sample/photo.jpg",
    "a/b = c/d",
];

/// Catalog lines that are refused, at least where they stand.
const BAD_CATALOG_LINES: &[&str] = &[
    "[other]",
    "DefaultPix=100,x",
    "MaxPix=0,10",
    "MaxSourcePix=0",
    "MaxSourcePix=18446744073709551616",
    "JpegQuality=101",
    "BkgColor=ééé",
    "Expiration=8760.1",
    "Expiration=NaN",
    "DefaultImage=../x",
    "MaxSvgBytes=-1",
    "Bogus=1",
    "x=/etc/passwd",
    "x=a/../b",
    "x=a//b",
    "../x=y",
    "=nothing",
    "no equals sign",
];

/// What the catalog module promises of ids and paths: relative, `/`-separated, no `..`, `.` or
/// empty element, no NUL. (Unlike URL objects, other control characters and `\` are allowed:
/// a URL cannot name such an id, and the file system takes such a path as it is.)
fn check_catalog_path(path: &str) -> Result<(), TestCaseError> {
    prop_assert!(!path.is_empty() && !path.contains('\0'), "{:?}", path);
    prop_assert!(
        path.split('/')
            .all(|e| !e.is_empty() && e != "." && e != ".."),
        "{:?}",
        path
    );
    prop_assert!(
        Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_))),
        "{:?}",
        path
    );
    Ok(())
}

fn catalog_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![8 => select(GOOD_CATALOG_LINES), 1 => select(BAD_CATALOG_LINES)];
    let edit_chars = &[
        '=', '[', ']', '/', '.', ',', '\n', '#', '\u{feff}', '\r', '\0',
    ];
    (vec(line, 0..10), edits(char_from(edit_chars), 2))
        .prop_map(|(lines, edits)| mutate_str(&lines.join("\n"), &edits))
}

proptest! {
    #![proptest_config(config(512))]

    /// Catalog files on disk: every error names its file and a line that exists; every loaded
    /// catalog keeps its limits in range and its paths relative.
    #[test]
    fn catalogs_load_or_name_file_and_line(default in catalog_text(), named in catalog_text()) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        std::fs::write(dir.path().join("default.ini"), &default).map_err(|e| TestCaseError::fail(e.to_string()))?;
        std::fs::write(dir.path().join("shop.ini"), &named).map_err(|e| TestCaseError::fail(e.to_string()))?;
        match catalog::load(dir.path()) {
            Ok(catalogs) => {
                prop_assert_eq!(catalogs.len(), 2);
                for c in [&catalogs.default, &catalogs.named["shop"]] {
                    let a = &c.attributes;
                    prop_assert!((1..=100).contains(&a.jpeg_quality));
                    prop_assert!(a.max_pix.0 > 0 && a.max_pix.1 > 0);
                    prop_assert!(a.expiration <= catalog::NEVER_EXPIRES);
                    if let Some(d) = &a.default_image {
                        check_catalog_path(d)?;
                    }
                    for (id, path) in &c.ids {
                        check_catalog_path(id)?;
                        check_catalog_path(path)?;
                    }
                }
            }
            Err(catalog::CatalogError::Parse { path, line, message }) => {
                let text = if path.ends_with("default.ini") { &default } else { &named };
                prop_assert!(path.ends_with("default.ini") || path.ends_with("shop.ini"));
                prop_assert!(line >= 1 && line <= text.lines().count(), "line {} of {:?}: {}", line, text, message);
            }
            Err(other) => prop_assert!(false, "{}", other),
        }
    }
}

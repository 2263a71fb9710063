//! Probing a source (`probe`): format, size and alpha from the header alone, and a declared
//! size refused before anything is decoded.

use super::fixtures::{attrs, jpeg, pattern, render_bytes, req};
use crate::imaging::pipeline::{probe, source_props, SourceFormat, SourceInfo};
use crate::imaging::request::ImageRequest;

/// A CRC-32 (IEEE), to craft PNG chunks.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn a_header_declaring_a_huge_image_is_refused_before_decoding() {
    // A valid PNG signature and IHDR declaring 100000×100000 RGBA, and nothing else.
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32(&ihdr).to_be_bytes());

    let info = probe(&png, "bomb.png").unwrap();
    assert_eq!(
        (info.width, info.height, info.has_alpha),
        (100_000, 100_000, true)
    );
    // Decoding would fail as bad_source (there is no image data): too_large proves it did not.
    let err = render_bytes(
        &png,
        &ImageRequest {
            wid: Some(100),
            ..req()
        },
        &attrs(),
    )
    .unwrap_err();
    assert_eq!(err.status, 403);
    assert!(err.message.contains("MaxSourcePix"), "{err}");
    assert!(!err.message.contains('/'), "no path in {err}");
}

#[test]
fn source_props_name_the_format() {
    let bytes = jpeg(&pattern(30, 20), 80);
    let info = probe(&bytes, "x").unwrap();
    assert_eq!(
        info,
        SourceInfo {
            width: 30,
            height: 20,
            format: SourceFormat::Jpeg,
            has_alpha: false
        }
    );
    let props = source_props(&info);
    assert_eq!(
        props,
        vec![
            ("image.width".to_string(), "30".to_string()),
            ("image.height".into(), "20".into()),
            ("image.format".into(), "jpeg".into()),
            ("image.mimeType".into(), "image/jpeg".into()),
            ("image.hasAlpha".into(), "0".into()),
        ]
    );
}

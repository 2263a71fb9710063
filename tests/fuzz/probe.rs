//! Source image headers ([`imageserving::imaging::pipeline::probe`]): magic numbers with
//! arbitrary tails and mutated, truncated images of every format give a size or a 403.

use std::io::Cursor;
use std::sync::OnceLock;

use imageserving::imaging::pipeline::{self, SourceFormat};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::TestCaseError;

use crate::harness::{apply_edits, config, edits};

/// One small image in every raster format the server reads, encoded once.
fn sample_images() -> &'static [Vec<u8>] {
    static IMAGES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let rgba = image::RgbaImage::from_pixel(9, 7, image::Rgba([1, 2, 3, 128]));
        let rgb = image::DynamicImage::ImageRgba8(rgba.clone()).to_rgb8();
        let mut images = Vec::new();
        for format in [
            image::ImageFormat::Png,
            image::ImageFormat::Gif,
            image::ImageFormat::Tiff,
            image::ImageFormat::WebP,
        ] {
            let mut out = Cursor::new(Vec::new());
            rgba.write_to(&mut out, format).expect("encodes");
            images.push(out.into_inner());
        }
        let mut out = Cursor::new(Vec::new());
        rgb.write_to(&mut out, image::ImageFormat::Jpeg)
            .expect("encodes");
        images.push(out.into_inner());
        images.push(b"<?xml version=\"1.0\"?><svg xmlns=\"http://www.w3.org/2000/svg\"/>".to_vec());
        images
    })
}

/// Magic numbers, so that random tails reach every header parser.
const MAGICS: &[&[u8]] = &[
    b"\xFF\xD8\xFF",
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"RIFF\0\0\0\0WEBPVP8 ",
    b"RIFF\0\0\0\0WEBPVP8L",
    b"RIFF\0\0\0\0WEBPVP8X",
    b"II*\0",
    b"MM\0*",
    b"<svg",
    b"\xEF\xBB\xBF <svg>",
];

fn check_probe(bytes: &[u8]) -> Result<(), TestCaseError> {
    match pipeline::probe(bytes, "fuzz/object") {
        Ok(info) if info.format == SourceFormat::Svg => {
            prop_assert_eq!((info.width, info.height), (0, 0));
        }
        Ok(info) => prop_assert!(info.width > 0 && info.height > 0, "{info:?}"),
        Err(e) => prop_assert_eq!(e.status, 403, "{}", e),
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(4096))]

    #[test]
    fn probe_survives_magic_and_arbitrary_tail(magic in select(MAGICS), tail in vec(any::<u8>(), 0..96)) {
        check_probe(&[magic, &tail[..]].concat())?;
    }

    #[test]
    fn probe_survives_mutated_images(
        image in any::<Index>(),
        edits in edits(any::<u8>(), 8),
        cut in option::of(any::<Index>()),
    ) {
        let images = sample_images();
        let mut bytes = images[image.index(images.len())].clone();
        apply_edits(&mut bytes, &edits);
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        check_probe(&bytes)?;
    }
}

//! Sniffing a source: its format from the magic bytes, its size and alpha from the header only.
//!
//! The headers are parsed here rather than through the decoders because a decoder may read (and
//! allocate for) more than the header, and a file that only *declares* a huge size must be
//! refused before anything is allocated for it. Every read is bounds-checked: a short or corrupt
//! header is an error, never a panic.

use super::SourceFormat;

/// What the header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Header {
    /// The format.
    pub(super) format: SourceFormat,
    /// Width in pixels (0 for SVG).
    pub(super) width: u32,
    /// Height in pixels (0 for SVG).
    pub(super) height: u32,
    /// Whether the image may have transparent pixels.
    pub(super) has_alpha: bool,
}

/// How far into a text file `<svg` is looked for.
const SVG_SNIFF_LEN: usize = 64 * 1024;

/// Sniffs the format and reads the header; the error is a short reason for the client.
pub(super) fn header(b: &[u8]) -> Result<Header, &'static str> {
    let (format, (width, height, has_alpha)) = if b.starts_with(&[0xFF, 0xD8, 0xFF]) {
        (SourceFormat::Jpeg, jpeg(b).map(|(w, h, _)| (w, h, false))?)
    } else if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        (SourceFormat::Png, png(b)?)
    } else if b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a") {
        (SourceFormat::Gif, gif(b)?)
    } else if b.starts_with(b"RIFF") && b.get(8..12) == Some(b"WEBP") {
        (SourceFormat::Webp, webp(b)?)
    } else if b.starts_with(b"II*\0") || b.starts_with(b"MM\0*") {
        (SourceFormat::Tiff, tiff(b)?)
    } else if looks_like_svg(b) {
        (SourceFormat::Svg, (0, 0, true))
    } else {
        return Err("unknown image format");
    };
    if format != SourceFormat::Svg && (width == 0 || height == 0) {
        return Err("the header declares an empty image");
    }
    Ok(Header {
        format,
        width,
        height,
        has_alpha,
    })
}

fn bytes<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    bytes(b, at).map(u16::from_be_bytes)
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    bytes(b, at).map(u32::from_be_bytes)
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    bytes(b, at).map(u16::from_le_bytes)
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    bytes(b, at).map(u32::from_le_bytes)
}

fn le24(b: &[u8], at: usize) -> Option<u32> {
    bytes::<3>(b, at).map(|[a, c, d]| u32::from_le_bytes([a, c, d, 0]))
}

/// The JPEG frame header: width, height, and the offset just past the first start-of-scan
/// segment's marker (or `None` when the headers end before any scan).
pub(super) fn jpeg(b: &[u8]) -> Result<(u32, u32, Option<usize>), &'static str> {
    const SHORT: &str = "truncated JPEG header";
    let mut i = 2usize;
    let mut frame = None;
    loop {
        // Bytes before a marker are tolerated (libjpeg warns and skips them), as are fill bytes.
        while b.get(i).is_some_and(|&v| v != 0xFF) {
            i += 1;
        }
        while b.get(i) == Some(&0xFF) {
            i += 1;
        }
        let Some(&marker) = b.get(i) else {
            return match frame {
                Some((w, h)) => Ok((w, h, None)),
                None => Err(SHORT),
            };
        };
        i += 1;
        match marker {
            // Markers without a length.
            0x01 | 0xD0..=0xD8 => continue,
            0xD9 => return Err("JPEG without a frame header"),
            0xDA => {
                return match frame {
                    Some((w, h)) => Ok((w, h, Some(i))),
                    None => Err("JPEG without a frame header"),
                };
            }
            _ => {}
        }
        let len = usize::from(be16(b, i).ok_or(SHORT)?);
        if len < 2 {
            return Err("corrupt JPEG header");
        }
        let is_frame = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_frame && frame.is_none() {
            let h = be16(b, i + 3).ok_or(SHORT)?;
            let w = be16(b, i + 5).ok_or(SHORT)?;
            if h == 0 {
                return Err("JPEG whose height is set by a DNL marker (unsupported)");
            }
            frame = Some((u32::from(w), u32::from(h)));
        }
        i = i.checked_add(len).ok_or(SHORT)?;
    }
}

fn png(b: &[u8]) -> Result<(u32, u32, bool), &'static str> {
    const SHORT: &str = "truncated PNG header";
    if be32(b, 8) != Some(13) || b.get(12..16) != Some(b"IHDR") {
        return Err(if b.len() < 16 {
            SHORT
        } else {
            "corrupt PNG header"
        });
    }
    let w = be32(b, 16).ok_or(SHORT)?;
    let h = be32(b, 20).ok_or(SHORT)?;
    let color = *b.get(25).ok_or(SHORT)?;
    if w > i32::MAX as u32 || h > i32::MAX as u32 {
        return Err("corrupt PNG header");
    }
    // Grey with alpha or RGBA; else a tRNS chunk before the image data.
    let mut alpha = matches!(color, 4 | 6);
    let mut i = 8 + 8 + 13 + 4;
    while !alpha {
        let (Some(len), Some(kind)) = (be32(b, i), b.get(i + 4..i + 8)) else {
            break;
        };
        match kind {
            b"tRNS" => alpha = true,
            b"IDAT" | b"IEND" => break,
            _ => {}
        }
        let Some(next) = usize::try_from(len)
            .ok()
            .and_then(|len| i.checked_add(12)?.checked_add(len))
        else {
            break;
        };
        i = next;
    }
    Ok((w, h, alpha))
}

fn gif(b: &[u8]) -> Result<(u32, u32, bool), &'static str> {
    const SHORT: &str = "truncated GIF header";
    let w = le16(b, 6).ok_or(SHORT)?;
    let h = le16(b, 8).ok_or(SHORT)?;
    let flags = *b.get(10).ok_or(SHORT)?;
    let mut i = 13usize;
    if flags & 0x80 != 0 {
        i += 3 << ((flags & 7) + 1);
    }
    // Transparency of the first frame: a graphic control extension before its descriptor.
    let mut alpha = false;
    while b.get(i) == Some(&0x21) {
        let label = b.get(i + 1).copied();
        i += 2;
        if label == Some(0xF9) && b.get(i) == Some(&4) {
            alpha |= b.get(i + 1).is_some_and(|p| p & 1 != 0);
        }
        // Skip the data sub-blocks.
        while let Some(&n) = b.get(i) {
            i += 1 + usize::from(n);
            if n == 0 {
                break;
            }
        }
    }
    Ok((u32::from(w), u32::from(h), alpha))
}

fn webp(b: &[u8]) -> Result<(u32, u32, bool), &'static str> {
    const SHORT: &str = "truncated WebP header";
    match b.get(12..16).ok_or(SHORT)? {
        b"VP8 " => {
            if b.get(23..26).ok_or(SHORT)? != [0x9D, 0x01, 0x2A] {
                return Err("corrupt WebP header");
            }
            let w = le16(b, 26).ok_or(SHORT)? & 0x3FFF;
            let h = le16(b, 28).ok_or(SHORT)? & 0x3FFF;
            Ok((u32::from(w), u32::from(h), false))
        }
        b"VP8L" => {
            if b.get(20).ok_or(SHORT)? != &0x2F {
                return Err("corrupt WebP header");
            }
            let bits = le32(b, 21).ok_or(SHORT)?;
            let w = (bits & 0x3FFF) + 1;
            let h = ((bits >> 14) & 0x3FFF) + 1;
            Ok((w, h, (bits >> 28) & 1 == 1))
        }
        b"VP8X" => {
            let flags = *b.get(20).ok_or(SHORT)?;
            let w = le24(b, 24).ok_or(SHORT)? + 1;
            let h = le24(b, 27).ok_or(SHORT)? + 1;
            Ok((w, h, flags & 0x10 != 0))
        }
        _ => Err("corrupt WebP header"),
    }
}

fn tiff(b: &[u8]) -> Result<(u32, u32, bool), &'static str> {
    const SHORT: &str = "truncated TIFF header";
    let little = b.starts_with(b"II");
    let u16_at = |at: usize| if little { le16(b, at) } else { be16(b, at) };
    let u32_at = |at: usize| if little { le32(b, at) } else { be32(b, at) };
    let ifd = usize::try_from(u32_at(4).ok_or(SHORT)?).map_err(|_| SHORT)?;
    let count = usize::from(u16_at(ifd).ok_or(SHORT)?);
    let (mut w, mut h) = (None, None);
    let (mut photometric, mut samples, mut extra) = (None, 1u32, false);
    for k in 0..count {
        let at = ifd
            .checked_add(2)
            .and_then(|a| a.checked_add(k.checked_mul(12)?))
            .ok_or(SHORT)?;
        let tag = u16_at(at).ok_or(SHORT)?;
        let kind = u16_at(at + 2).ok_or(SHORT)?;
        // A single SHORT or LONG sits in the value field itself.
        let value = match kind {
            3 => u16_at(at + 8).map(u32::from),
            4 => u32_at(at + 8),
            _ => None,
        };
        match tag {
            256 => w = value,
            257 => h = value,
            262 => photometric = value,
            277 => samples = value.unwrap_or(1),
            // ExtraSamples: 1 associated alpha, 2 unassociated alpha.
            338 => extra = matches!(value, Some(1 | 2)),
            _ => {}
        }
    }
    let (Some(w), Some(h)) = (w, h) else {
        return Err("TIFF without a size");
    };
    let alpha = extra
        || match photometric {
            Some(0 | 1) => samples >= 2,
            Some(2) => samples >= 4,
            _ => false,
        };
    Ok((w, h, alpha))
}

/// Text that opens like XML (optional BOM, blanks, declaration, comments, doctype) and has an
/// `<svg` element early on.
fn looks_like_svg(b: &[u8]) -> bool {
    let head = &b[..b.len().min(SVG_SNIFF_LEN)];
    let head = head.strip_prefix(&[0xEF, 0xBB, 0xBF][..]).unwrap_or(head);
    let start = head
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(head.len());
    if head.get(start) != Some(&b'<') {
        return false;
    }
    head.windows(5).any(|w| {
        w.starts_with(b"<svg") && (w[4].is_ascii_whitespace() || matches!(w[4], b'>' | b'/'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_is_sniffed_with_bom_declaration_and_comments() {
        let svg = "\u{feff}  <?xml version=\"1.0\"?>\n<!-- drawn by hand -->\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\"/>";
        let h = header(svg.as_bytes()).unwrap();
        assert_eq!(h.format, SourceFormat::Svg);
        assert_eq!((h.width, h.height), (0, 0));
        assert_eq!(header(b"<svg>").unwrap().format, SourceFormat::Svg);
        assert!(header(b"hello <svg>").is_err());
        assert!(header(b"<html><svgfoo>").is_err());
        assert!(header(b"").is_err());
    }

    #[test]
    fn jpeg_header_walk_survives_every_truncation() {
        let mut bytes = Vec::new();
        let img = image::RgbImage::from_pixel(33, 17, image::Rgb([10, 20, 30]));
        image::codecs::jpeg::JpegEncoder::new(&mut bytes)
            .encode_image(&img)
            .unwrap();
        let (w, h, sos) = jpeg(&bytes).unwrap();
        assert_eq!((w, h), (33, 17));
        assert!(sos.is_some());
        for len in 0..bytes.len() {
            let _ = header(&bytes[..len]);
        }
    }

    #[test]
    fn headers_of_every_format_survive_every_truncation_and_corruption() {
        let img = image::RgbaImage::from_pixel(9, 7, image::Rgba([1, 2, 3, 128]));
        for format in [
            image::ImageFormat::Png,
            image::ImageFormat::Gif,
            image::ImageFormat::Tiff,
            image::ImageFormat::WebP,
        ] {
            let mut bytes = std::io::Cursor::new(Vec::new());
            img.write_to(&mut bytes, format).unwrap();
            let bytes = bytes.into_inner();
            let h = header(&bytes).unwrap();
            assert_eq!((h.width, h.height), (9, 7), "{format:?}");
            for len in 0..bytes.len() {
                let _ = header(&bytes[..len]);
            }
            for i in 0..bytes.len().min(200) {
                let mut bad = bytes.clone();
                bad[i] ^= 0xFF;
                let _ = header(&bad);
            }
        }
    }
}

//! Parsing the URL protocol into an [`ImageRequest`]: `/is/image/{object}?{modifier}&…`.
//!
//! [`parse`] takes the raw (still percent-encoded) path after `/is/image/` and the raw query, and
//! either builds the typed request `ps` sends to `is`, or answers the [`ImageError`] (403) that
//! names the command and the value it refused. It never touches the file system: whether the
//! object exists is `is`'s business.
//!
//! # The object
//!
//! The path is split on `/` and each element is percent-decoded on its own, then read as UTF-8.
//! Refused, whatever their encoding (`..`, `%2e%2e`, `%2E.`, `.%2e` are all the same after
//! decoding): an empty object, empty elements (so no leading `/`, no `//`, no trailing `/`: an
//! absolute path cannot be written), `.` and `..`, an element containing `/` (`a%2Fb`), `\` or a
//! control character (NUL included), invalid UTF-8 (so overlong encodings of `.` or `/` cannot
//! exist), and a malformed escape (`%zz`, `%4`). `+` stays `+`.
//!
//! # The modifiers
//!
//! The query is split on `&`. Empty elements are skipped; an element starting with `.` is a
//! comment and runs to the next `&`. Each other element is `name[=value]`, split at the first
//! `=`; the name is case-insensitive, the value is percent-decoded and then split on `,`. Every
//! command, the values it accepts and the choices where the original's documentation is silent
//! are specified in `docs/image-serving.md` (the command table and the rules beside it), which
//! `tests/docs/` keeps in step with this parser. Commands of the protocol that this release does
//! not implement ([`NOT_IN_THIS_RELEASE`]) are refused by name; any other name is an unknown
//! command: nothing is silently ignored.

use crate::imaging::error::{shown, ImageError};
use crate::imaging::request::{
    Align, CacheControl, CacheMode, Crop, Extend, Fit, FitMode, Flip, ImageRequest, OutputFormat,
    Req, ResMode, Rgba, TextFormat, Usm, ViewRect,
};

/// The largest `wid` or `hei`; the catalog's `MaxPix` limits the area further, in `is`.
pub const MAX_DIMENSION: u32 = 65535;

/// Commands of the protocol that exist in the original but not in this release, lower-case.
/// They are refused by name rather than as unknown.
pub const NOT_IN_THIS_RELEASE: &[&str] = &[
    "anchor",
    "attachment",
    "bgcolor",
    "clippath",
    "clipxpath",
    "color",
    "dpr",
    "effect",
    "hide",
    "icc",
    "iccembed",
    "id",
    "layer",
    "mask",
    "maskuse",
    "op_blur",
    "op_brightness",
    "op_colorbalance",
    "op_colorize",
    "op_contrast",
    "op_hue",
    "op_invert",
    "op_noise",
    "op_saturation",
    "opac",
    "origin",
    "pos",
    "printres",
    "quantize",
    "res",
    "size",
    "src",
    "text",
    "textps",
];

/// Parses one request: `path_after_prefix` is the raw path after `/is/image/` (still
/// percent-encoded), `raw_query` the raw query string, without the `?`.
pub fn parse(path_after_prefix: &str, raw_query: Option<&str>) -> Result<ImageRequest, ImageError> {
    let mut request = ImageRequest {
        object: parse_object(path_after_prefix)?,
        ..ImageRequest::default()
    };
    for element in raw_query.unwrap_or("").split('&') {
        // An empty element (`&&`, a trailing `&`) says nothing; `&.` starts a comment.
        if element.is_empty() || element.starts_with('.') {
            continue;
        }
        let (raw_name, raw_value) = element.split_once('=').unwrap_or((element, ""));
        let name = percent_decode(raw_name).map_err(|_| {
            ImageError::unsupported(format!("unknown command `{}`", shown(raw_name)))
        })?;
        let value = percent_decode(raw_value)
            .map_err(|why| ImageError::bad_value(&shown(&name), &shown(raw_value), why))?;
        apply(&mut request, &name, &value)?;
    }
    Ok(request)
}

/// Decodes and checks the object path (see the module doc).
fn parse_object(raw: &str) -> Result<String, ImageError> {
    if raw.is_empty() {
        return Err(ImageError::new(
            403,
            "no object: the URL is /is/image/{object}",
        ));
    }
    let refused = || ImageError::refused_path(&shown(raw));
    let mut elements = Vec::new();
    for raw_element in raw.split('/') {
        let element = percent_decode(raw_element).map_err(|_| refused())?;
        let bad_char = element
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control());
        if element.is_empty() || element == "." || element == ".." || bad_char {
            return Err(refused());
        }
        elements.push(element);
    }
    Ok(elements.join("/"))
}

/// Percent-decodes `raw` and reads the bytes as UTF-8; `+` stays `+`.
///
/// Strict: every `%` must be followed by exactly two hex digits (`%zz`, `%4` and `%+1` are
/// malformed). The one decoder of the crate: the URL's object and modifiers, and the source
/// path `is` sends `ps` in a header.
pub fn percent_decode(raw: &str) -> Result<String, &'static str> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |j: usize| bytes.get(j).and_then(|b| (*b as char).to_digit(16));
            match (hex(i + 1), hex(i + 2)) {
                (Some(high), Some(low)) => out.push((high * 16 + low) as u8),
                _ => return Err("malformed percent-encoding"),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "not UTF-8 after percent-decoding")
}

/// One modifier being applied: its name as the client wrote it and its decoded value.
struct Command<'a> {
    name: &'a str,
    value: &'a str,
}

impl Command<'_> {
    /// The 403 for this command's value.
    fn bad(&self, why: impl std::fmt::Display) -> ImageError {
        ImageError::bad_value(&shown(self.name), &shown(self.value), why)
    }

    /// The comma-separated items, after checking there is a value at all.
    fn items(&self) -> Result<Vec<&str>, ImageError> {
        if self.value.is_empty() {
            return Err(self.bad("a value is required"));
        }
        Ok(self.value.split(',').collect())
    }

    /// Exactly `n` items.
    fn exactly(&self, n: usize, what: &str) -> Result<Vec<&str>, ImageError> {
        let items = self.items()?;
        if items.len() != n {
            return Err(self.bad(format!("expected {what}")));
        }
        Ok(items)
    }

    /// A finite number.
    fn number(&self, item: &str, what: &str) -> Result<f64, ImageError> {
        match item.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(x),
            _ => Err(self.bad(format!("{what} must be a finite number"))),
        }
    }

    /// An integer of decimal digits only, within `min..=max`.
    fn integer(&self, item: &str, min: u32, max: u32, what: &str) -> Result<u32, ImageError> {
        let in_range = || self.bad(format!("{what} must be an integer from {min} to {max}"));
        if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
            return Err(in_range());
        }
        match item.parse::<u64>() {
            Ok(n) if (u64::from(min)..=u64::from(max)).contains(&n) => Ok(n as u32),
            _ => Err(in_range()),
        }
    }

    /// A `0|1` flag.
    fn flag(&self, item: &str, what: &str) -> Result<bool, ImageError> {
        match item {
            "0" => Ok(false),
            "1" => Ok(true),
            _ => Err(self.bad(format!("{what} must be 0 or 1"))),
        }
    }
}

/// Applies one modifier to the request.
fn apply(request: &mut ImageRequest, name: &str, value: &str) -> Result<(), ImageError> {
    if name.starts_with('$') {
        return Ok(());
    }
    if name.is_empty() {
        return Err(ImageError::unsupported("a modifier without a name"));
    }
    let command = Command { name, value };
    match name.to_ascii_lowercase().as_str() {
        "req" => request.req = parse_req(&command)?,
        "wid" => request.wid = Some(parse_dimension(&command)?),
        "hei" => request.hei = Some(parse_dimension(&command)?),
        "scl" => request.scl = Some(parse_scl(&command)?),
        "fit" => request.fit = Some(parse_fit(&command)?),
        "align" => request.align = Some(parse_align(&command)?),
        "bgc" => request.bgc = Some(parse_color(&command)?),
        "crop" => request.crop = Some(parse_crop(&command, false)?),
        "cropn" => request.crop = Some(parse_crop(&command, true)?),
        "flip" => request.flip = parse_flip(&command)?,
        "rotate" => request.rotate = Some(parse_rotate(&command)?),
        "extend" => request.extend = Some(parse_extend(&command, false)?),
        "extendn" => request.extend = Some(parse_extend(&command, true)?),
        "rgn" => request.rgn = Some(parse_crop(&command, false)?),
        "rgnn" => request.rgn = Some(parse_crop(&command, true)?),
        "rect" => request.rect = Some(parse_rect(&command)?),
        "op_sharpen" => {
            let items = command.exactly(1, "0 or 1")?;
            request.op_sharpen = Some(command.flag(items[0], "the value")?);
        }
        "op_usm" => request.op_usm = Some(parse_usm(&command)?),
        "resmode" => request.res_mode = Some(parse_res_mode(&command)?),
        "defaultimage" => request.default_image = Some(parse_default_image(&command)?),
        "fmt" => request.fmt = Some(parse_fmt(&command)?),
        "qlt" => request.qlt = Some(parse_qlt(&command)?),
        "cache" => request.cache = Some(parse_cache(&command)?),
        known if NOT_IN_THIS_RELEASE.contains(&known) => {
            return Err(ImageError::unsupported(format!(
                "`{}` (not in this release)",
                shown(name)
            )))
        }
        _ => {
            return Err(ImageError::unsupported(format!(
                "unknown command `{}`",
                shown(name)
            )))
        }
    }
    Ok(())
}

/// `req=img|props|imageprops|exists[,text|json|xml]`.
fn parse_req(command: &Command) -> Result<Req, ImageError> {
    let items = command.items()?;
    if items.len() > 2 {
        return Err(command.bad("expected `type[,format]`"));
    }
    let format = match items.get(1).map(|f| f.to_ascii_lowercase()) {
        None => None,
        Some(f) => Some(match f.as_str() {
            "" | "text" => TextFormat::Text,
            "json" => TextFormat::Json,
            "xml" => TextFormat::Xml,
            "javascript" | "html" => {
                return Err(ImageError::unsupported(format!(
                    "req format `{f}` (text, json or xml in this release)"
                )))
            }
            _ => return Err(command.bad("the format must be text, json or xml")),
        }),
    };
    let kind = items[0].to_ascii_lowercase();
    Ok(match kind.as_str() {
        "img" if format.is_none() => Req::Img,
        "img" => return Err(command.bad("`img` takes no text format")),
        "props" => Req::Props(format.unwrap_or_default()),
        "imageprops" => Req::ImageProps(format.unwrap_or_default()),
        "exists" => Req::Exists(format.unwrap_or_default()),
        "contents" | "imageset" | "map" | "mask" | "mbrset" | "params" | "set" | "targets"
        | "tmb" | "userdata" | "validate" | "xmp" => {
            return Err(ImageError::unsupported(format!(
                "req={kind} (not in this release)"
            )))
        }
        _ => return Err(command.bad("expected img, props, imageprops or exists")),
    })
}

/// `wid=` / `hei=`: 1–65535 pixels.
fn parse_dimension(command: &Command) -> Result<u32, ImageError> {
    let items = command.exactly(1, "one integer")?;
    command.integer(items[0], 1, MAX_DIMENSION, "the size")
}

/// `scl=`: a finite factor > 0.
fn parse_scl(command: &Command) -> Result<f64, ImageError> {
    let items = command.exactly(1, "one number")?;
    let scl = command.number(items[0], "the scale")?;
    if scl <= 0.0 {
        return Err(command.bad("the scale must be more than 0"));
    }
    Ok(scl)
}

/// `fit=mode[,upscale]`.
fn parse_fit(command: &Command) -> Result<Fit, ImageError> {
    let items = command.items()?;
    if items.len() > 2 {
        return Err(command.bad("expected `mode[,upscale]`"));
    }
    let mode = items[0].to_ascii_lowercase();
    let mode = match mode.as_str() {
        "fit" => FitMode::Fit,
        "constrain" => FitMode::Constrain,
        "crop" => FitMode::Crop,
        "stretch" => FitMode::Stretch,
        "wrap" => FitMode::Wrap,
        "hfit" => FitMode::Hfit,
        "vfit" => FitMode::Vfit,
        _ => {
            return Err(
                command.bad("the mode must be fit, constrain, crop, wrap, stretch, hfit or vfit")
            )
        }
    };
    let upscale = match items.get(1) {
        Some(flag) => command.flag(flag, "upscale")?,
        None => false,
    };
    Ok(Fit { mode, upscale })
}

/// `align=h,v`, each in −1…1.
fn parse_align(command: &Command) -> Result<Align, ImageError> {
    let items = command.exactly(2, "`h,v`")?;
    let mut hv = [0.0; 2];
    for (slot, item) in hv.iter_mut().zip(&items) {
        let x = command.number(item, "each value")?;
        if !(-1.0..=1.0).contains(&x) {
            return Err(command.bad("each value must be in -1…1"));
        }
        *slot = x;
    }
    Ok(Align { h: hv[0], v: hv[1] })
}

/// `bgc=`: the colour forms of the module doc.
fn parse_color(command: &Command) -> Result<Rgba, ImageError> {
    let items = command.items()?;
    let why = "expected RRGGBB, RRGGBBAA, 0xRGB, 0xGG, a gray 0–255 or r,g,b";
    if items.len() == 3 {
        let mut rgb = [0u8; 3];
        for (slot, item) in rgb.iter_mut().zip(&items) {
            *slot = command.integer(item, 0, 255, "each component")? as u8;
        }
        return Ok(Rgba([rgb[0], rgb[1], rgb[2], 255]));
    }
    if items.len() != 1 {
        return Err(command.bad(why));
    }
    let item = items[0];
    let (prefixed, digits) = match item.strip_prefix("0x").or_else(|| item.strip_prefix("0X")) {
        Some(rest) => (true, rest),
        None => (false, item),
    };
    if !prefixed && item.bytes().all(|b| b.is_ascii_digit()) && item.len() <= 3 {
        let gray = command.integer(item, 0, 255, "a decimal gray")? as u8;
        return Ok(Rgba([gray, gray, gray, 255]));
    }
    let nibbles: Vec<u8> = digits
        .chars()
        .map(|c| c.to_digit(16).map(|d| d as u8))
        .collect::<Option<_>>()
        .ok_or_else(|| command.bad(why))?;
    let byte = |i: usize| nibbles[i] * 16 + nibbles[i + 1];
    match (nibbles.len(), prefixed) {
        (2, true) => Ok(Rgba([byte(0), byte(0), byte(0), 255])),
        (3, _) => {
            let [r, g, b] = [nibbles[0], nibbles[1], nibbles[2]].map(|n| n * 17);
            Ok(Rgba([r, g, b, 255]))
        }
        (6, _) => Ok(Rgba([byte(0), byte(2), byte(4), 255])),
        (8, _) => Ok(Rgba([byte(0), byte(2), byte(4), byte(6)])),
        _ => Err(command.bad(why)),
    }
}

/// `crop=x,y,w,h` (pixels) or `cropN=x,y,w,h` (fractions).
fn parse_crop(command: &Command, normalized: bool) -> Result<Crop, ImageError> {
    let items = command.exactly(4, "`x,y,w,h`")?;
    let mut xywh = [0.0; 4];
    for (slot, item) in xywh.iter_mut().zip(&items) {
        *slot = command.number(item, "each value")?;
    }
    let [x, y, w, h] = xywh;
    if w <= 0.0 || h <= 0.0 {
        return Err(command.bad("the width and height must be more than 0"));
    }
    Ok(if normalized {
        Crop::Normalized { x, y, w, h }
    } else {
        Crop::Pixels { x, y, w, h }
    })
}

/// `flip=lr|ud|lrud|none`.
fn parse_flip(command: &Command) -> Result<Option<Flip>, ImageError> {
    let items = command.exactly(1, "one of lr, ud, lrud, none")?;
    match items[0].to_ascii_lowercase().as_str() {
        "lr" => Ok(Some(Flip::Lr)),
        "ud" => Ok(Some(Flip::Ud)),
        "lrud" => Ok(Some(Flip::Lrud)),
        "none" => Ok(None),
        _ => Err(command.bad("expected lr, ud, lrud or none")),
    }
}

/// `rotate=degrees`, any finite angle, normalised to 0 ≤ angle < 360.
fn parse_rotate(command: &Command) -> Result<f64, ImageError> {
    let items = command.exactly(1, "one number of degrees")?;
    let degrees = command.number(items[0], "the angle")?;
    let normalized = degrees.rem_euclid(360.0);
    // `rem_euclid` of a tiny negative angle can round up to 360 itself.
    Ok(if normalized >= 360.0 { 0.0 } else { normalized })
}

/// `extend=l,t,r,b` (pixels) or `extendN=l,t,r,b` (fractions of the image size).
fn parse_extend(command: &Command, normalized: bool) -> Result<Extend, ImageError> {
    let items = command.exactly(4, "`l,t,r,b`")?;
    let mut ltrb = [0.0; 4];
    for (slot, item) in ltrb.iter_mut().zip(&items) {
        *slot = command.number(item, "each margin")?;
    }
    let [l, t, r, b] = ltrb;
    if normalized && ltrb.iter().any(|v| v.abs() > 100.0) {
        return Err(command.bad("each margin must be from -100 to 100 times the image size"));
    }
    Ok(Extend {
        l,
        t,
        r,
        b,
        normalized,
    })
}

/// `rect=x,y,w,h`: integers, `x`, `y` 0–65535, `w`, `h` 1–65535.
fn parse_rect(command: &Command) -> Result<ViewRect, ImageError> {
    let items = command.exactly(4, "`x,y,w,h`")?;
    Ok(ViewRect {
        x: command.integer(items[0], 0, MAX_DIMENSION, "x")?,
        y: command.integer(items[1], 0, MAX_DIMENSION, "y")?,
        w: command.integer(items[2], 1, MAX_DIMENSION, "the width")?,
        h: command.integer(items[3], 1, MAX_DIMENSION, "the height")?,
    })
}

/// `op_usm=amount,radius,threshold,mono`: amount 0–5, radius 0–250 (numbers), threshold 0–255
/// (an integer), mono `0|1`. The last two may be left out (0 each).
fn parse_usm(command: &Command) -> Result<Usm, ImageError> {
    let items = command.items()?;
    if !(2..=4).contains(&items.len()) {
        return Err(command.bad("expected `amount,radius[,threshold[,mono]]`"));
    }
    let amount = command.number(items[0], "the amount")?;
    if !(0.0..=5.0).contains(&amount) {
        return Err(command.bad("the amount must be from 0 to 5"));
    }
    let radius = command.number(items[1], "the radius")?;
    if !(0.0..=250.0).contains(&radius) {
        return Err(command.bad("the radius must be from 0 to 250"));
    }
    let threshold = match items.get(2) {
        Some(t) => command.integer(t, 0, 255, "the threshold")? as u8,
        None => 0,
    };
    let mono = match items.get(3) {
        Some(m) => command.flag(m, "mono")?,
        None => false,
    };
    Ok(Usm {
        amount,
        radius,
        threshold,
        mono,
    })
}

/// `resMode=bilin|bicub|sharp2|bisharp`.
fn parse_res_mode(command: &Command) -> Result<ResMode, ImageError> {
    let items = command.exactly(1, "one of bilin, bicub, sharp2, bisharp")?;
    match items[0].to_ascii_lowercase().as_str() {
        "bilin" => Ok(ResMode::Bilin),
        "bicub" => Ok(ResMode::Bicub),
        "sharp2" => Ok(ResMode::Sharp2),
        "bisharp" => Ok(ResMode::Bisharp),
        "trilin" => Err(ImageError::unsupported(
            "resMode=trilin (not in this release)",
        )),
        _ => Err(command.bad("expected bilin, bicub, sharp2 or bisharp")),
    }
}

/// `defaultImage=object`: checked like the object of the URL (the value is already decoded, so
/// `/` separates elements here).
fn parse_default_image(command: &Command) -> Result<String, ImageError> {
    let value = command.value;
    let bad = value.split('/').any(|element| {
        element.is_empty()
            || element == "."
            || element == ".."
            || element.chars().any(|c| c == '\\' || c.is_control())
    });
    if value.is_empty() || bad {
        return Err(command.bad("the object path is not allowed"));
    }
    Ok(value.to_owned())
}

/// `fmt=format[,pixelType[,compression]]`.
fn parse_fmt(command: &Command) -> Result<OutputFormat, ImageError> {
    let items = command.items()?;
    if items.len() > 3 {
        return Err(command.bad("expected `format[,pixelType[,compression]]`"));
    }
    let name = items[0].to_ascii_lowercase();
    let format = match name.as_str() {
        "jpeg" | "jpg" => OutputFormat::Jpeg,
        "png" => OutputFormat::Png,
        "png-alpha" => OutputFormat::PngAlpha,
        "webp" => OutputFormat::Webp,
        "webp-alpha" => OutputFormat::WebpAlpha,
        "gif" => OutputFormat::Gif,
        "tif" | "tiff" => OutputFormat::Tif,
        "tif-alpha" | "tiff-alpha" => OutputFormat::TifAlpha,
        "gif-alpha" | "avif" | "avif-alpha" | "heic" | "pdf"
        | "eps" | "swf" | "swf-alpha" | "swf3" | "swf3-alpha" | "jpeg2000" | "jpeg2000-alpha"
        | "jpegxr" | "jpegxr-alpha" | "png8" | "m3u8" | "f4m" => {
            return Err(ImageError::unsupported(format!(
                "fmt={name} (jpeg, png, png-alpha, webp, webp-alpha, gif, tif or tif-alpha in this release)"
            )))
        }
        _ => {
            return Err(command
                .bad("the format must be jpeg, jpg, png, png-alpha, webp, webp-alpha, gif, tif or tif-alpha"))
        }
    };
    let pixel_type = items.get(1).map(|p| p.to_ascii_lowercase());
    match pixel_type.as_deref() {
        None | Some("" | "rgb") => {}
        Some(p @ ("gray" | "cmyk")) => {
            return Err(ImageError::unsupported(format!(
                "fmt pixel type `{p}` (a later release)"
            )))
        }
        Some(_) => return Err(command.bad("the pixel type must be rgb")),
    }
    let compression = items.get(2).map(|c| c.to_ascii_lowercase());
    let webp = matches!(format, OutputFormat::Webp | OutputFormat::WebpAlpha);
    match compression.as_deref() {
        None | Some("") => {}
        Some("lossy") if webp => {}
        Some(c @ ("lossless" | "none" | "lzw" | "zip" | "jpeg")) => {
            return Err(ImageError::unsupported(format!(
                "fmt compression `{c}` for {} (a later release)",
                format.name()
            )))
        }
        Some(_) => return Err(command.bad("unknown compression")),
    }
    Ok(format)
}

/// `qlt=quality[,chroma]`: 1–100; the chroma flag is checked, not stored (see the module doc).
fn parse_qlt(command: &Command) -> Result<u8, ImageError> {
    let items = command.items()?;
    if items.len() > 2 {
        return Err(command.bad("expected `quality[,chroma]`"));
    }
    let quality = command.integer(items[0], 1, 100, "the quality")? as u8;
    if let Some(chroma) = items.get(1) {
        command.flag(chroma, "the chroma flag")?;
    }
    Ok(quality)
}

/// `cache=on|off|validate|update`, or `client,server` with one of those each.
fn parse_cache(command: &Command) -> Result<CacheControl, ImageError> {
    let items = command.items()?;
    let mode = |item: &str| match item.to_ascii_lowercase().as_str() {
        "on" => Ok(CacheMode::On),
        "off" => Ok(CacheMode::Off),
        "validate" => Ok(CacheMode::Validate),
        "update" => Ok(CacheMode::Update),
        _ => Err(command.bad("expected on, off, validate or update")),
    };
    match items[..] {
        [both] => {
            let m = mode(both)?;
            Ok(CacheControl {
                client: m,
                server: m,
            })
        }
        [client, server] => Ok(CacheControl {
            client: mode(client)?,
            server: mode(server)?,
        }),
        _ => Err(command.bad("expected `mode` or `client,server`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(path: &str, query: &str) -> ImageRequest {
        match parse(path, Some(query)) {
            Ok(request) => request,
            Err(err) => panic!("{path}?{query}: {err}"),
        }
    }

    fn err(path: &str, query: &str) -> ImageError {
        match parse(path, Some(query)) {
            Ok(request) => panic!("{path}?{query} parsed: {request:?}"),
            Err(err) => {
                assert_eq!(err.status, 403, "{err}");
                err
            }
        }
    }

    fn message(query: &str) -> String {
        err("a", query).message
    }

    #[test]
    fn defaults_with_no_query() {
        let request = parse("cat/id", None).unwrap();
        assert_eq!(
            request,
            ImageRequest {
                object: "cat/id".into(),
                ..ImageRequest::default()
            }
        );
        assert_eq!(ok("x", ""), parse("x", None).unwrap());
        assert_eq!(ok("x", "&&"), parse("x", None).unwrap());
    }

    #[test]
    fn percent_escapes_need_two_hex_digits() {
        assert_eq!(percent_decode("a%41%62").as_deref(), Ok("aAb"));
        for malformed in ["%", "%4", "%zz", "%+1", "%-1", "% 1", "%1 ", "%\u{e9}1"] {
            assert!(percent_decode(malformed).is_err(), "{malformed:?}");
        }
    }

    #[test]
    fn object_is_percent_decoded_per_element() {
        assert_eq!(ok("my%20cat/a%2Bb+c.jpg", "").object, "my cat/a+b+c.jpg");
        assert_eq!(ok("caf%C3%A9/%E2%82%AC", "").object, "café/€");
        assert_eq!(ok("a/.hidden/b..c", "").object, "a/.hidden/b..c");
    }

    #[test]
    fn dot_dot_is_refused_in_every_encoding() {
        for path in [
            "..",
            ".",
            "%2e%2e",
            "%2E%2E",
            "%2E%2e",
            "%2E.",
            "%2e.",
            ".%2E",
            ".%2e",
            "%2e",
            "a/../b",
            "a/%2e%2e/b",
            "a/%2E%2E",
            "../etc/passwd",
            "a/./b",
            "a/%2e/b",
        ] {
            let e = err(path, "");
            assert!(e.message.contains("not allowed"), "{path}: {e}");
        }
    }

    #[test]
    fn bad_elements_are_refused() {
        for path in [
            "",
            "/",
            "/etc/passwd",
            "%2Fetc%2Fpasswd",
            "a%2Fb",
            "a%2fb",
            "a%5Cb",
            "a\\b",
            "a%00b",
            "a%0Ab",
            "a//b",
            "a/",
            "%C0%AE%C0%AE",
            "%C0%AF",
            "%ff",
            "%zz",
            "a%2",
            "a%",
        ] {
            err(path, "");
        }
        assert!(err("", "").message.contains("no object"));
    }

    #[test]
    fn names_are_case_insensitive_values_keep_case() {
        let request = ok("a", "WID=300&Hei=200&FMT=PNG-Alpha&Req=Props,JSON");
        assert_eq!(request.wid, Some(300));
        assert_eq!(request.hei, Some(200));
        assert_eq!(request.fmt, Some(OutputFormat::PngAlpha));
        assert_eq!(request.req, Req::Props(TextFormat::Json));
    }

    #[test]
    fn comments_and_custom_variables_are_skipped() {
        let request = ok("a", ".foo=bar&wid=3&.wid=7&$var=1,2&$=x");
        assert_eq!(request.wid, Some(3));
        assert_eq!(ok("a", "wid=3&.&hei=4").hei, Some(4));
    }

    #[test]
    fn unknown_and_unsupported_commands() {
        assert_eq!(
            message("foo=1"),
            "unsupported: unknown command `foo`".to_string()
        );
        assert!(message("Foo").contains("`Foo`"));
        assert!(message("=3").contains("without a name"));
        for name in ["layer", "op_blur", "icc", "size", "mask"] {
            let m = message(&format!("{name}=1"));
            assert!(m.contains(&format!("`{name}`")), "{m}");
            assert!(m.contains("not in this release"), "{m}");
        }
    }

    #[test]
    fn last_command_wins() {
        let request = ok("a", "wid=1&wid=2&crop=0,0,5,5&cropN=0,0,0.5,0.5");
        assert_eq!(request.wid, Some(2));
        assert_eq!(
            request.crop,
            Some(Crop::Normalized {
                x: 0.0,
                y: 0.0,
                w: 0.5,
                h: 0.5
            })
        );
        assert_eq!(ok("a", "flip=lr&flip=none").flip, None);
    }

    #[test]
    fn values_are_percent_decoded_and_plus_stays() {
        assert_eq!(ok("a", "wid=%33%30").wid, Some(30));
        assert_eq!(
            ok("a", "align=-1%2C1").align,
            Some(Align { h: -1.0, v: 1.0 })
        );
        assert_eq!(ok("a", "scl=+2").scl, Some(2.0));
        assert!(message("wid=%zz").contains("percent"));
        assert!(message("wid=%+1").contains("percent"));
        assert!(message("wid=%ff").contains("UTF-8"));
    }

    #[test]
    fn req_values() {
        assert_eq!(ok("a", "req=img").req, Req::Img);
        assert_eq!(ok("a", "req=props").req, Req::Props(TextFormat::Text));
        assert_eq!(ok("a", "req=props,xml").req, Req::Props(TextFormat::Xml));
        assert_eq!(
            ok("a", "req=imageprops,text").req,
            Req::ImageProps(TextFormat::Text)
        );
        assert_eq!(
            ok("a", "req=exists,json").req,
            Req::Exists(TextFormat::Json)
        );
        for bad in [
            "req",
            "req=",
            "req=foo",
            "req=img,json",
            "req=props,yaml",
            "req=props,json,x",
        ] {
            let m = message(bad);
            assert!(m.contains("`req`"), "{bad}: {m}");
        }
        assert!(message("req=tmb").contains("req=tmb (not in this release)"));
        assert!(message("req=props,javascript").contains("unsupported"));
    }

    #[test]
    fn wid_and_hei() {
        assert_eq!(ok("a", "wid=1").wid, Some(1));
        assert_eq!(ok("a", "hei=65535").hei, Some(65535));
        assert_eq!(ok("a", "wid=007").wid, Some(7));
        for bad in [
            "wid=0",
            "wid=65536",
            "wid=-1",
            "wid=+1",
            "wid=1.5",
            "wid=abc",
            "wid=",
            "wid",
            "wid=1,2",
            "wid=99999999999999999999999",
            "hei= 3",
        ] {
            let m = message(bad);
            let name = bad.split('=').next().unwrap();
            assert!(m.contains(&format!("`{name}`")), "{bad}: {m}");
        }
        assert_eq!(
            message("wid=0"),
            "invalid value `0` for `wid`: the size must be an integer from 1 to 65535"
        );
    }

    #[test]
    fn scl_values() {
        assert_eq!(ok("a", "scl=2").scl, Some(2.0));
        assert_eq!(ok("a", "scl=0.25").scl, Some(0.25));
        assert_eq!(ok("a", "scl=1e1").scl, Some(10.0));
        for bad in [
            "scl=0", "scl=-1", "scl=inf", "scl=NaN", "scl=x", "scl=1,2", "scl=",
        ] {
            assert!(message(bad).contains("`scl`"), "{bad}");
        }
    }

    #[test]
    fn fit_values() {
        let fit = |q: &str| ok("a", q).fit.unwrap();
        assert_eq!(
            fit("fit=fit"),
            Fit {
                mode: FitMode::Fit,
                upscale: false
            }
        );
        assert_eq!(
            fit("fit=Constrain,1"),
            Fit {
                mode: FitMode::Constrain,
                upscale: true
            }
        );
        assert_eq!(fit("fit=crop,0").mode, FitMode::Crop);
        assert_eq!(fit("fit=stretch").mode, FitMode::Stretch);
        assert_eq!(fit("fit=WRAP").mode, FitMode::Wrap);
        assert_eq!(
            fit("fit=hfit,1"),
            Fit {
                mode: FitMode::Hfit,
                upscale: true
            }
        );
        assert_eq!(fit("fit=vfit").mode, FitMode::Vfit);
        for bad in ["fit=squash", "fit=fit,2", "fit=fit,1,1", "fit="] {
            assert!(message(bad).contains("`fit`"), "{bad}");
        }
    }

    #[test]
    fn align_values() {
        assert_eq!(ok("a", "align=-1,1").align, Some(Align { h: -1.0, v: 1.0 }));
        assert_eq!(ok("a", "align=0.5,0").align, Some(Align { h: 0.5, v: 0.0 }));
        for bad in [
            "align=2,0",
            "align=0,-1.5",
            "align=0",
            "align=0,0,0",
            "align=a,b",
        ] {
            assert!(message(bad).contains("`align`"), "{bad}");
        }
    }

    #[test]
    fn bgc_values() {
        let bgc = |q: &str| ok("a", q).bgc.unwrap().0;
        assert_eq!(bgc("bgc=ff8000"), [255, 128, 0, 255]);
        assert_eq!(bgc("bgc=0xFF8000"), [255, 128, 0, 255]);
        assert_eq!(bgc("bgc=ff800080"), [255, 128, 0, 128]);
        assert_eq!(bgc("bgc=0xf80"), [255, 136, 0, 255]);
        assert_eq!(bgc("bgc=f80"), [255, 136, 0, 255]);
        assert_eq!(bgc("bgc=0x80"), [128, 128, 128, 255]);
        assert_eq!(bgc("bgc=128"), [128, 128, 128, 255]);
        assert_eq!(bgc("bgc=0"), [0, 0, 0, 255]);
        assert_eq!(bgc("bgc=214,245,130"), [214, 245, 130, 255]);
        for bad in [
            "bgc=256",
            "bgc=ff",
            "bgc=fffff",
            "bgc=ggg",
            "bgc=0x",
            "bgc=1,2",
            "bgc=1,2,256",
            "bgc=",
            "bgc=#ffffff",
        ] {
            assert!(message(bad).contains("`bgc`"), "{bad}");
        }
    }

    #[test]
    fn crop_values() {
        assert_eq!(
            ok("a", "crop=-10,5.5,100,200").crop,
            Some(Crop::Pixels {
                x: -10.0,
                y: 5.5,
                w: 100.0,
                h: 200.0
            })
        );
        assert_eq!(
            ok("a", "CROPN=0.1,0.2,0.5,1.5").crop,
            Some(Crop::Normalized {
                x: 0.1,
                y: 0.2,
                w: 0.5,
                h: 1.5
            })
        );
        for bad in [
            "crop=0,0,0,1",
            "crop=0,0,1,-1",
            "crop=0,0,1",
            "crop=a,0,1,1",
            "crop=0,0,inf,1",
        ] {
            assert!(message(bad).contains("`crop`"), "{bad}");
        }
        assert!(message("cropN=0,0,0,1").contains("`cropN`"));
    }

    #[test]
    fn flip_values() {
        assert_eq!(ok("a", "flip=lr").flip, Some(Flip::Lr));
        assert_eq!(ok("a", "flip=UD").flip, Some(Flip::Ud));
        assert_eq!(ok("a", "flip=lrud").flip, Some(Flip::Lrud));
        assert_eq!(ok("a", "flip=none").flip, None);
        for bad in ["flip=rl", "flip=", "flip=lr,ud"] {
            assert!(message(bad).contains("`flip`"), "{bad}");
        }
    }

    #[test]
    fn rotate_is_normalised() {
        let rotate = |q: &str| ok("a", q).rotate.unwrap();
        assert_eq!(rotate("rotate=0"), 0.0);
        assert_eq!(rotate("rotate=90"), 90.0);
        assert_eq!(rotate("rotate=-90"), 270.0);
        assert_eq!(rotate("rotate=450"), 90.0);
        assert_eq!(rotate("rotate=360"), 0.0);
        assert_eq!(rotate("rotate=-720"), 0.0);
        assert_eq!(rotate("rotate=45"), 45.0);
        assert_eq!(rotate("rotate=-30.5"), 329.5);
        assert_eq!(rotate("rotate=-1e-20"), 0.0);
        for bad in ["rotate=x", "rotate=", "rotate=inf", "rotate=90,1"] {
            assert!(message(bad).contains("`rotate`"), "{bad}");
        }
    }

    #[test]
    fn extend_rgn_and_rect_values() {
        let e = ok("a", "extend=10,-5,0,2.5").extend.unwrap();
        assert_eq!(
            (e.l, e.t, e.r, e.b, e.normalized),
            (10.0, -5.0, 0.0, 2.5, false)
        );
        let e = ok("a", "EXTENDN=0.1,0,0.1,-0.5").extend.unwrap();
        assert_eq!((e.l, e.b, e.normalized), (0.1, -0.5, true));
        for bad in [
            "extend=1,2,3",
            "extend=a,0,0,0",
            "extend=",
            "extend=inf,0,0,0",
        ] {
            assert!(message(bad).contains("`extend`"), "{bad}");
        }
        assert!(message("extendN=1000,0,0,0").contains("`extendN`"));
        assert_eq!(
            ok("a", "rgn=10,20,30,40").rgn,
            Some(Crop::Pixels {
                x: 10.0,
                y: 20.0,
                w: 30.0,
                h: 40.0
            })
        );
        assert!(matches!(
            ok("a", "rgnN=0,0,0.5,0.5").rgn,
            Some(Crop::Normalized { .. })
        ));
        assert!(message("rgn=0,0,0,1").contains("`rgn`"));
        assert_eq!(
            ok("a", "rect=0,600,2000,600").rect,
            Some(ViewRect {
                x: 0,
                y: 600,
                w: 2000,
                h: 600
            })
        );
        for bad in [
            "rect=-1,0,1,1",
            "rect=0,0,0,1",
            "rect=0,0,1",
            "rect=0.5,0,1,1",
        ] {
            assert!(message(bad).contains("`rect`"), "{bad}");
        }
    }

    #[test]
    fn sharpening_values() {
        assert_eq!(ok("a", "op_sharpen=1").op_sharpen, Some(true));
        assert_eq!(ok("a", "OP_SHARPEN=0").op_sharpen, Some(false));
        assert!(message("op_sharpen=2").contains("`op_sharpen`"));
        assert_eq!(
            ok("a", "op_usm=1.5,2,10,1").op_usm,
            Some(Usm {
                amount: 1.5,
                radius: 2.0,
                threshold: 10,
                mono: true
            })
        );
        let usm = ok("a", "op_usm=.9,2").op_usm.unwrap();
        assert_eq!((usm.threshold, usm.mono), (0, false));
        for bad in [
            "op_usm=6,1",
            "op_usm=1,251",
            "op_usm=1,1,256",
            "op_usm=1,1,0,2",
            "op_usm=1",
            "op_usm=-1,1",
            "op_usm=1,1,0,0,0",
        ] {
            assert!(message(bad).contains("`op_usm`"), "{bad}");
        }
    }

    #[test]
    fn res_mode_and_default_image_values() {
        assert_eq!(ok("a", "resMode=bilin").res_mode, Some(ResMode::Bilin));
        assert_eq!(ok("a", "RESMODE=BiCub").res_mode, Some(ResMode::Bicub));
        assert_eq!(ok("a", "resmode=sharp2").res_mode, Some(ResMode::Sharp2));
        assert_eq!(ok("a", "resMode=bisharp").res_mode, Some(ResMode::Bisharp));
        assert!(message("resMode=nearest").contains("`resMode`"));
        assert!(message("resMode=trilin").contains("unsupported"));
        assert_eq!(
            ok("a", "defaultImage=sample/My%20Logo").default_image,
            Some("sample/My Logo".into())
        );
        for bad in [
            "defaultImage=",
            "defaultImage=../x",
            "defaultImage=a/%2e%2e/b",
            "defaultImage=/etc/passwd",
            "defaultImage=a//b",
            "defaultImage=a%5Cb",
            "defaultImage=a%00",
        ] {
            assert!(message(bad).contains("`defaultImage`"), "{bad}");
        }
    }

    #[test]
    fn fmt_values_and_aliases() {
        let fmt = |q: &str| ok("a", q).fmt.unwrap();
        assert_eq!(fmt("fmt=jpeg"), OutputFormat::Jpeg);
        assert_eq!(fmt("fmt=jpg"), OutputFormat::Jpeg);
        assert_eq!(fmt("fmt=JPG,rgb"), OutputFormat::Jpeg);
        assert_eq!(fmt("fmt=png"), OutputFormat::Png);
        assert_eq!(fmt("fmt=png-alpha"), OutputFormat::PngAlpha);
        assert_eq!(fmt("fmt=webp"), OutputFormat::Webp);
        assert_eq!(fmt("fmt=webp-alpha,rgb,lossy"), OutputFormat::WebpAlpha);
        assert_eq!(fmt("fmt=gif,,"), OutputFormat::Gif);
        assert_eq!(fmt("fmt=tif"), OutputFormat::Tif);
        assert_eq!(fmt("fmt=TIF-alpha,rgb"), OutputFormat::TifAlpha);
        assert!(message("fmt=tif,rgb,lzw").contains("compression `lzw`"));
        for unsupported in ["fmt=avif", "fmt=gif-alpha", "fmt=jpeg2000"] {
            let m = message(unsupported);
            assert!(m.starts_with("unsupported: fmt="), "{unsupported}: {m}");
        }
        assert!(message("fmt=jpeg,cmyk").contains("pixel type `cmyk`"));
        assert!(message("fmt=jpeg,gray").contains("unsupported"));
        assert!(message("fmt=webp,rgb,lossless").contains("compression `lossless`"));
        for bad in [
            "fmt=bmp",
            "fmt=jpeg,rgba",
            "fmt=jpeg,rgb,lossy",
            "fmt=png,rgb,x",
            "fmt=",
            "fmt=a,b,c,d",
        ] {
            assert!(message(bad).contains("`fmt`"), "{bad}");
        }
    }

    #[test]
    fn qlt_values() {
        assert_eq!(ok("a", "qlt=1").qlt, Some(1));
        assert_eq!(ok("a", "qlt=100").qlt, Some(100));
        assert_eq!(ok("a", "qlt=85,1").qlt, Some(85));
        assert_eq!(ok("a", "qlt=85,0").qlt, Some(85));
        for bad in [
            "qlt=0",
            "qlt=101",
            "qlt=x",
            "qlt=80,2",
            "qlt=80,1,1",
            "qlt=",
        ] {
            assert!(message(bad).contains("`qlt`"), "{bad}");
        }
    }

    #[test]
    fn messages_are_short_single_lines() {
        let long = "x".repeat(500);
        let m = message(&format!("wid={long}"));
        assert!(m.len() < 200, "{m}");
        let m = message("wid=1%0A2");
        assert!(!m.contains('\n'), "{m}");
    }

    #[test]
    fn request_round_trips_through_json() {
        let request = ok(
            "cat/id",
            "req=props,json&wid=10&hei=20&scl=2&fit=crop,1&align=-1,0&bgc=ff0000&crop=0,0,1,1\
             &flip=lr&rotate=90&fmt=png&qlt=50&extendN=0.1,0,0,0&rgn=0,0,5,5&rect=1,2,3,4\
             &op_sharpen=1&op_usm=1,2,3,1&resMode=bilin&defaultImage=cat/missing",
        );
        let json = serde_json::to_string(&request).unwrap();
        let back: ImageRequest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, request);
    }

    #[test]
    fn cache_takes_one_mode_or_client_and_server() {
        let both = ok("a", "cache=OFF").cache.unwrap();
        assert_eq!((both.client, both.server), (CacheMode::Off, CacheMode::Off));
        let split = ok("a", "cache=on,validate").cache.unwrap();
        assert_eq!(
            (split.client, split.server),
            (CacheMode::On, CacheMode::Validate)
        );
        assert_eq!(err("a", "cache=sometimes").status, 403);
        assert_eq!(err("a", "cache=on,off,on").status, 403);
    }
}

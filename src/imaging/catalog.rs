//! Catalogs: `<home>/catalog/*.ini`, their attributes (limits and defaults) and their ids.
//!
//! A catalog file is a list of lines:
//!
//! ```text
//! # a comment; `;` starts one too
//! JpegQuality=85          attribute names are case-insensitive
//! BkgColor=FFFFFF
//! [ids]                   from here on, `id=path below images/`
//! photo=sample/photo.jpg
//! ```
//!
//! The attributes: `DefaultPix` (`w,h`, 0 for a side left free) and `MaxPix` (`w,h`), `MaxSourcePix` (width × height, our
//! extension), `JpegQuality` (1–100), `BkgColor` (`RRGGBB` or `RRGGBBAA`, optionally prefixed by
//! `0x` or `#`), `Expiration` (hours, decimals allowed, rounded to whole seconds; `0` expires at
//! once, `-1` means never, sent as one year; at most 8760), `ErrorDetail` (`0|1`), `DefaultImage`
//! (an object; empty for none), `ResMode` (`bilin|bicub|sharp2|bisharp`), `MaxReplyBytes`,
//! `MaxSvgBytes`, `MaxSvgPix`. An unknown attribute, a bad value, an attribute or id given twice,
//! or an id path that is absolute or has `..`, `.` or empty elements is an error naming the file
//! and the line. An optional `[attributes]` header may open the attribute part.
//!
//! `default.ini` is the default catalog (built-in [`Attributes::default`] when absent); every
//! other `<name>.ini` is catalog `<name>`, which starts from the default catalog's attributes and
//! overrides those it sets. Ids are case-sensitive, like the paths they map to.
//!
//! Resolution ([`Catalogs::resolve`]) of an object `a/b/c`: if `a` names a catalog (`default`
//! included) that has id `b/c`, its path; else if the default catalog has id `a/b/c`, its path;
//! else the path `a/b/c` itself, below the image root. The attributes are those of catalog `a` if
//! it exists, else the default catalog's. The file must exist and, with symbolic links resolved,
//! lie below the (canonical) image root. A missing file falls back to the catalog's
//! `DefaultImage` (or the request's `defaultImage=`, which takes its place:
//! [`Catalogs::resolve_with_default`]), resolved by the same rules, once (a missing default image
//! is a 404 naming the requested object); the requested catalog's attributes still apply.
//!
//! Reloading ([`LiveCatalogs`]): the Image Server checks the catalog directory at most once per
//! [`RELOAD_CHECK_INTERVAL`] and reloads every catalog when the set of `*.ini` files or one's
//! modification time, size or inode changed. A reload that fails keeps the catalogs in use and
//! logs the error once; the next change is tried again. At start, an invalid catalog is fatal.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::imaging::request::Rgba;
use crate::imaging::ImageError;

/// Resampling quality (`ResMode`, and `resMode=` of a request).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResMode {
    /// Bilinear.
    Bilin,
    /// Bicubic.
    Bicub,
    /// Lanczos3 (sharper).
    Sharp2,
    /// Catmull-Rom (sharp bicubic).
    Bisharp,
}

/// A catalog's attributes: the limits and defaults of every request resolved through it.
#[derive(Clone, Debug, PartialEq)]
pub struct Attributes {
    /// Output size when neither `wid`, `hei` nor `scl` is given: the image is fitted inside.
    pub default_pix: (u32, u32),
    /// Largest output; a larger one is an error.
    pub max_pix: (u32, u32),
    /// Largest source, in pixels (width × height), checked from the header before decoding.
    pub max_source_pix: u64,
    /// JPEG and lossy WebP quality when `qlt` is not given.
    pub jpeg_quality: u8,
    /// Background colour when `bgc` is not given.
    pub bkg_color: Rgba,
    /// How long clients and caches may keep an image (`Cache-Control: max-age`).
    pub expiration: Duration,
    /// Whether error messages may name objects and reasons in detail (internal servers).
    pub error_detail: bool,
    /// Object served when the requested one is missing (empty: none).
    pub default_image: Option<String>,
    /// Resampling quality.
    pub res_mode: ResMode,
    /// Largest reply, in bytes.
    pub max_reply_bytes: usize,
    /// Largest SVG source, in bytes.
    pub max_svg_bytes: usize,
    /// Largest SVG rasterisation, in pixels.
    pub max_svg_pix: u64,
}

impl Default for Attributes {
    fn default() -> Self {
        Attributes {
            default_pix: (2000, 2000),
            max_pix: (8000, 8000),
            max_source_pix: 100_000_000,
            jpeg_quality: 80,
            bkg_color: Rgba([255, 255, 255, 255]),
            expiration: Duration::from_secs(10 * 3600),
            error_detail: false,
            default_image: None,
            res_mode: ResMode::Sharp2,
            max_reply_bytes: 16 * 1024 * 1024,
            max_svg_bytes: 1024 * 1024,
            max_svg_pix: 4_000_000,
        }
    }
}

/// One catalog.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    /// Its name (`default` for `default.ini`).
    pub name: String,
    /// Its attributes (the default catalog's, overridden by its own).
    pub attributes: Attributes,
    /// Catalog ids → paths below the image root.
    pub ids: HashMap<String, String>,
}

/// Every catalog of a home.
#[derive(Clone, Debug, Default)]
pub struct Catalogs {
    /// `default.ini` (built-in defaults when absent).
    pub default: Catalog,
    /// The others, by name.
    pub named: HashMap<String, Catalog>,
}

/// Where an object resolved to.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    /// The catalog whose attributes apply.
    pub catalog: String,
    /// The source file, absolute, checked to be below the image root (after symlinks).
    pub path: PathBuf,
}

/// The name of the default catalog, and of its file (`default.ini`).
pub const DEFAULT_CATALOG: &str = "default";

/// How often, at most, [`LiveCatalogs::current`] looks at the catalog files for changes.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What `Expiration=-1` ("never") is sent as: one year, the longest `max-age` RFC 9111 advises.
pub const NEVER_EXPIRES: Duration = Duration::from_secs(365 * 24 * 3600);

/// The largest finite `Expiration`, in hours (one year).
const MAX_EXPIRATION_HOURS: f64 = 8760.0;

/// Why the catalogs cannot be loaded. Each message names the file, and the line when there is one.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The catalog directory exists but cannot be listed.
    #[error("cannot list catalog directory `{}`: {source}", path.display())]
    ReadDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A catalog file cannot be read (or is not UTF-8).
    #[error("cannot read catalog `{}`: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A catalog file name cannot be a catalog name.
    #[error("catalog file `{}` has no usable name: {reason}", path.display())]
    BadName {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// A line of a catalog file is invalid.
    #[error("catalog `{}` line {line}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
}

/// Loads every catalog of `catalog_dir` (`<home>/catalog`). A missing directory, or a missing
/// `default.ini`, gives the built-in defaults. Files other than `*.ini`, and hidden files, are
/// ignored.
pub fn load(catalog_dir: &Path) -> Result<Catalogs, CatalogError> {
    let mut files = ini_files(catalog_dir)?;
    let mut default = Catalog {
        name: DEFAULT_CATALOG.to_owned(),
        ..Catalog::default()
    };
    if let Some(at) = files.iter().position(|(name, _)| name == DEFAULT_CATALOG) {
        let (_, path) = files.remove(at);
        let parsed = parse_file(&path)?;
        for (_, setting) in &parsed.settings {
            setting.apply(&mut default.attributes);
        }
        default.ids = parsed.ids;
    }
    let mut named = HashMap::new();
    for (name, path) in files {
        let parsed = parse_file(&path)?;
        let mut attributes = default.attributes.clone();
        for (_, setting) in &parsed.settings {
            setting.apply(&mut attributes);
        }
        named.insert(
            name.clone(),
            Catalog {
                name,
                attributes,
                ids: parsed.ids,
            },
        );
    }
    Ok(Catalogs { default, named })
}

/// The `*.ini` files of `dir` as (catalog name, path), sorted by name; none if `dir` is missing.
fn ini_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, CatalogError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CatalogError::ReadDir {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| CatalogError::ReadDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        if path.extension().is_none_or(|ext| ext != "ini") {
            continue;
        }
        let Some(stem) = path.file_stem() else {
            continue;
        };
        if stem.as_encoded_bytes().starts_with(b".") {
            continue;
        }
        let Some(name) = stem.to_str() else {
            return Err(CatalogError::BadName {
                path,
                reason: "it is not valid UTF-8",
            });
        };
        // Follow links: a catalog may be a symbolic link to a shared file.
        if !path.is_file() {
            continue;
        }
        files.push((name.to_owned(), path));
    }
    files.sort();
    Ok(files)
}

/// One attribute setting of a catalog file.
#[derive(Clone, Debug, PartialEq)]
enum Setting {
    DefaultPix((u32, u32)),
    MaxPix((u32, u32)),
    MaxSourcePix(u64),
    JpegQuality(u8),
    BkgColor(Rgba),
    Expiration(Duration),
    ErrorDetail(bool),
    DefaultImage(Option<String>),
    ResMode(ResMode),
    MaxReplyBytes(usize),
    MaxSvgBytes(usize),
    MaxSvgPix(u64),
}

impl Setting {
    /// Parses `name=value`; the name is case-insensitive.
    fn parse(name: &str, value: &str) -> Result<Setting, String> {
        let bad = |why: &str| format!("invalid {name} `{value}`: {why}");
        Ok(match name.to_ascii_lowercase().as_str() {
            "defaultpix" => Setting::DefaultPix(parse_size(value, true).map_err(&bad)?),
            "maxpix" => Setting::MaxPix(parse_size(value, false).map_err(&bad)?),
            "maxsourcepix" => Setting::MaxSourcePix(parse_positive(value).map_err(&bad)?),
            "jpegquality" => match value.parse::<u8>() {
                Ok(q @ 1..=100) => Setting::JpegQuality(q),
                _ => return Err(bad("expected an integer from 1 to 100")),
            },
            "bkgcolor" => Setting::BkgColor(parse_color(value).map_err(&bad)?),
            "expiration" => Setting::Expiration(parse_expiration(value).map_err(&bad)?),
            "errordetail" => match value {
                "0" => Setting::ErrorDetail(false),
                "1" => Setting::ErrorDetail(true),
                _ => return Err(bad("expected 0 or 1")),
            },
            "defaultimage" if value.is_empty() => Setting::DefaultImage(None),
            "defaultimage" => {
                check_relative(value).map_err(&bad)?;
                Setting::DefaultImage(Some(value.to_owned()))
            }
            "resmode" => Setting::ResMode(match value.to_ascii_lowercase().as_str() {
                "bilin" => ResMode::Bilin,
                "bicub" => ResMode::Bicub,
                "sharp2" => ResMode::Sharp2,
                "bisharp" => ResMode::Bisharp,
                _ => return Err(bad("expected bilin, bicub, sharp2 or bisharp")),
            }),
            "maxreplybytes" => Setting::MaxReplyBytes(parse_positive(value).map_err(&bad)?),
            "maxsvgbytes" => Setting::MaxSvgBytes(parse_positive(value).map_err(&bad)?),
            "maxsvgpix" => Setting::MaxSvgPix(parse_positive(value).map_err(&bad)?),
            _ => {
                return Err(format!(
                    "unknown attribute `{name}` (known: DefaultPix, MaxPix, MaxSourcePix, \
                     JpegQuality, BkgColor, Expiration, ErrorDetail, DefaultImage, ResMode, \
                     MaxReplyBytes, MaxSvgBytes, MaxSvgPix; ids go after an [ids] line)"
                ))
            }
        })
    }

    /// Sets this attribute in `attributes`.
    fn apply(&self, attributes: &mut Attributes) {
        match self.clone() {
            Setting::DefaultPix(v) => attributes.default_pix = v,
            Setting::MaxPix(v) => attributes.max_pix = v,
            Setting::MaxSourcePix(v) => attributes.max_source_pix = v,
            Setting::JpegQuality(v) => attributes.jpeg_quality = v,
            Setting::BkgColor(v) => attributes.bkg_color = v,
            Setting::Expiration(v) => attributes.expiration = v,
            Setting::ErrorDetail(v) => attributes.error_detail = v,
            Setting::DefaultImage(v) => attributes.default_image = v,
            Setting::ResMode(v) => attributes.res_mode = v,
            Setting::MaxReplyBytes(v) => attributes.max_reply_bytes = v,
            Setting::MaxSvgBytes(v) => attributes.max_svg_bytes = v,
            Setting::MaxSvgPix(v) => attributes.max_svg_pix = v,
        }
    }

    /// The setting's kind, to find an attribute set twice.
    fn kind(&self) -> std::mem::Discriminant<Setting> {
        std::mem::discriminant(self)
    }
}

/// `w,h`: both positive, or with `zero_ok` (`DefaultPix`), 0 for a side left unconstrained.
fn parse_size(value: &str, zero_ok: bool) -> Result<(u32, u32), &'static str> {
    let why = if zero_ok {
        "expected `width,height`, two integers (0: that side unconstrained)"
    } else {
        "expected `width,height`, two positive integers"
    };
    let (w, h) = value.split_once(',').ok_or(why)?;
    match (w.trim().parse::<u32>(), h.trim().parse::<u32>()) {
        (Ok(w), Ok(h)) if zero_ok || (w > 0 && h > 0) => Ok((w, h)),
        _ => Err(why),
    }
}

/// A positive integer.
fn parse_positive<T: std::str::FromStr + Default + PartialOrd>(
    value: &str,
) -> Result<T, &'static str> {
    match value.parse::<T>() {
        Ok(n) if n > T::default() => Ok(n),
        _ => Err("expected a positive integer"),
    }
}

/// `RRGGBB` or `RRGGBBAA` in hex, optionally prefixed by `0x` or `#`.
fn parse_color(value: &str) -> Result<Rgba, &'static str> {
    const WHY: &str = "expected RRGGBB or RRGGBBAA in hexadecimal";
    let hex = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
        .or_else(|| value.strip_prefix('#'))
        .unwrap_or(value);
    if !(hex.len() == 6 || hex.len() == 8) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(WHY);
    }
    let mut rgba = [0, 0, 0, 255];
    for (i, channel) in rgba.iter_mut().enumerate().take(hex.len() / 2) {
        *channel = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| WHY)?;
    }
    Ok(Rgba(rgba))
}

/// Hours, decimals allowed, rounded to whole seconds; `-1` is "never" ([`NEVER_EXPIRES`]).
fn parse_expiration(value: &str) -> Result<Duration, &'static str> {
    const WHY: &str = "expected hours from 0 to 8760 (decimals allowed), or -1 for never";
    let hours: f64 = value.parse().map_err(|_| WHY)?;
    if hours == -1.0 {
        return Ok(NEVER_EXPIRES);
    }
    if !(0.0..=MAX_EXPIRATION_HOURS).contains(&hours) {
        return Err(WHY);
    }
    Ok(Duration::from_secs((hours * 3600.0).round() as u64))
}

/// Checks that `path` is relative, `/`-separated, without `..`, `.` or empty elements.
fn check_relative(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty path");
    }
    if path.starts_with('/') {
        return Err("absolute paths are not allowed");
    }
    if path.contains('\0') {
        return Err("NUL is not allowed");
    }
    if path
        .split('/')
        .any(|e| e.is_empty() || e == "." || e == "..")
    {
        return Err("`..`, `.` and empty path elements are not allowed");
    }
    // Belt and braces: the platform must see only normal elements too.
    if !Path::new(path)
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err("only plain path elements are allowed");
    }
    Ok(())
}

/// What one catalog file says.
#[derive(Debug, Default)]
struct Parsed {
    /// Attribute settings with their line numbers, in file order.
    settings: Vec<(usize, Setting)>,
    /// Ids → paths.
    ids: HashMap<String, String>,
}

/// Reads and parses one catalog file.
fn parse_file(path: &Path) -> Result<Parsed, CatalogError> {
    let text = fs::read_to_string(path).map_err(|source| CatalogError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_text(&text).map_err(|(line, message)| CatalogError::Parse {
        path: path.to_path_buf(),
        line,
        message,
    })
}

/// Parses the text of one catalog file; an error carries its line number (from 1).
fn parse_text(text: &str) -> Result<Parsed, (usize, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut parsed = Parsed::default();
    let mut in_ids = false;
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            match section.trim().to_ascii_lowercase().as_str() {
                "ids" => in_ids = true,
                "attributes" if !in_ids => {}
                _ => {
                    return Err((
                        number,
                        format!(
                            "unknown section `[{section}]` (known: [attributes] first, then [ids])"
                        ),
                    ))
                }
            }
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            return Err((number, format!("expected `Name=value`, found `{line}`")));
        };
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty() {
            return Err((number, "the name before `=` is empty".to_owned()));
        }
        if in_ids {
            check_relative(name).map_err(|why| (number, format!("invalid id `{name}`: {why}")))?;
            check_relative(value).map_err(|why| {
                (
                    number,
                    format!("invalid path `{value}` for id `{name}`: {why}"),
                )
            })?;
            if parsed
                .ids
                .insert(name.to_owned(), value.to_owned())
                .is_some()
            {
                return Err((number, format!("id `{name}` is given twice")));
            }
        } else {
            let setting = Setting::parse(name, value).map_err(|message| (number, message))?;
            if let Some((first, _)) = parsed
                .settings
                .iter()
                .find(|(_, s)| s.kind() == setting.kind())
            {
                return Err((
                    number,
                    format!("attribute `{name}` is already set on line {first}"),
                ));
            }
            parsed.settings.push((number, setting));
        }
    }
    Ok(parsed)
}

/// Where [`Catalogs::locate`] found an object.
enum Located {
    /// An existing file below the image root.
    Found(Resolved),
    /// No such file; the catalog whose attributes apply.
    Missing(String),
}

impl Catalogs {
    /// The catalog named `name` (`default` included), if there is one.
    pub fn get(&self, name: &str) -> Option<&Catalog> {
        if name == DEFAULT_CATALOG {
            Some(&self.default)
        } else {
            self.named.get(name)
        }
    }

    /// The name of the catalog whose attributes apply to `object`: its first path element if
    /// that names a catalog (and more follows), else `default`.
    pub fn catalog_of(&self, object: &str) -> &str {
        object
            .split_once('/')
            .and_then(|(first, _)| self.get(first))
            .map_or(DEFAULT_CATALOG, |c| c.name.as_str())
    }

    /// How many catalogs there are, the default one included.
    pub fn len(&self) -> usize {
        1 + self.named.len()
    }

    /// Always false: there is at least the default catalog. (For clippy's `len_without_is_empty`.)
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The attributes of catalog `catalog`, or of the default catalog when there is no such one.
    pub fn attributes(&self, catalog: &str) -> &Attributes {
        self.get(catalog)
            .map_or(&self.default.attributes, |c| &c.attributes)
    }

    /// Resolves `object` to an existing file below `image_root`, falling back to the catalog's
    /// `DefaultImage` when it is missing (see the module documentation).
    ///
    /// Errors: 403 ([`ImageError::refused_path`]) for an absolute path, `..`, `.` or empty
    /// elements, or a file that lies outside the image root once symbolic links are resolved;
    /// 404 ([`ImageError::not_found`]) when neither the object nor the default image exists.
    pub fn resolve(&self, object: &str, image_root: &Path) -> Result<Resolved, ImageError> {
        self.resolve_with_default(object, None, image_root)
    }

    /// [`Catalogs::resolve`] with the request's `defaultImage=` (when given) in place of the
    /// catalog's `DefaultImage`: resolved by the same rules, once.
    pub fn resolve_with_default(
        &self,
        object: &str,
        default_image: Option<&str>,
        image_root: &Path,
    ) -> Result<Resolved, ImageError> {
        match self.locate(object, image_root)? {
            Located::Found(resolved) => Ok(resolved),
            Located::Missing(catalog) => {
                let fallback = default_image
                    .map(str::to_owned)
                    .or_else(|| self.attributes(&catalog).default_image.clone());
                match fallback {
                    Some(default) if default != object => {
                        match self.locate(&default, image_root)? {
                            Located::Found(resolved) => Ok(Resolved {
                                catalog,
                                path: resolved.path,
                            }),
                            Located::Missing(_) => Err(ImageError::not_found(object)),
                        }
                    }
                    _ => Err(ImageError::not_found(object)),
                }
            }
        }
    }

    /// Like [`Catalogs::resolve`], without the `DefaultImage` fallback: what `req=exists` asks.
    pub fn resolve_exact(&self, object: &str, image_root: &Path) -> Result<Resolved, ImageError> {
        match self.locate(object, image_root)? {
            Located::Found(resolved) => Ok(resolved),
            Located::Missing(_) => Err(ImageError::not_found(object)),
        }
    }

    /// Applies the lookup rules to `object` and checks the file.
    fn locate(&self, object: &str, image_root: &Path) -> Result<Located, ImageError> {
        check_relative(object).map_err(|_| ImageError::refused_path(object))?;
        let named = object
            .split_once('/')
            .and_then(|(first, rest)| self.get(first).map(|catalog| (catalog, rest)));
        let catalog = named.map_or(DEFAULT_CATALOG, |(c, _)| c.name.as_str());
        let relative = named
            .and_then(|(c, rest)| c.ids.get(rest))
            .or_else(|| self.default.ids.get(object))
            .map_or(object, String::as_str);
        // Ids were checked at load; this keeps the invariant even for hand-built catalogs.
        check_relative(relative).map_err(|_| ImageError::refused_path(object))?;
        let missing = || Ok(Located::Missing(catalog.to_owned()));
        let root = match fs::canonicalize(image_root) {
            Ok(root) => root,
            Err(error) => {
                tracing::warn!(root = %image_root.display(), %error, "cannot resolve the image root");
                return missing();
            }
        };
        let real = match fs::canonicalize(root.join(relative)) {
            Ok(real) => real,
            Err(error) => {
                // NotFound, a file used as a directory, a link loop, no permission: the client
                // learns only that there is no such object.
                if error.kind() != io::ErrorKind::NotFound {
                    tracing::debug!(object, %error, "object cannot be resolved");
                }
                return missing();
            }
        };
        if !real.starts_with(&root) {
            return Err(ImageError::refused_path(object));
        }
        if !real.is_file() {
            return missing();
        }
        Ok(Located::Found(Resolved {
            catalog: catalog.to_owned(),
            path: real,
        }))
    }
}

/// What identifies the state of the catalog files: each `*.ini` with its modification time,
/// size and inode.
type Stamp = Vec<(String, Option<SystemTime>, u64, u64)>;

/// The stamp of `dir` now; an unreadable directory gives an empty stamp.
fn stamp(dir: &Path) -> Stamp {
    let Ok(files) = ini_files(dir) else {
        return Vec::new();
    };
    files
        .into_iter()
        .map(|(name, path)| match fs::metadata(&path) {
            Ok(meta) => (name, meta.modified().ok(), meta.len(), meta.ino()),
            Err(_) => (name, None, 0, 0),
        })
        .collect()
}

/// The catalogs of a running server, reloaded when their files change (see the module
/// documentation). Shared by every request; cheap to ask.
#[derive(Debug)]
pub struct LiveCatalogs {
    /// The catalog directory.
    dir: PathBuf,
    /// The catalogs in use and when they were last checked.
    state: Mutex<LiveState>,
}

/// The mutable part of [`LiveCatalogs`].
#[derive(Debug)]
struct LiveState {
    /// The catalogs in use.
    catalogs: Arc<Catalogs>,
    /// The files they were loaded from (or the last failed attempt's, so a broken file is
    /// reported once, not every second).
    stamp: Stamp,
    /// When the files were last looked at.
    checked: Instant,
}

impl LiveCatalogs {
    /// Loads the catalogs of `dir`; an invalid catalog is an error.
    pub fn open(dir: &Path) -> Result<LiveCatalogs, CatalogError> {
        let stamp = stamp(dir);
        let catalogs = load(dir)?;
        Ok(LiveCatalogs {
            dir: dir.to_path_buf(),
            state: Mutex::new(LiveState {
                catalogs: Arc::new(catalogs),
                stamp,
                checked: Instant::now(),
            }),
        })
    }

    /// The catalogs to use now, reloaded first if the files changed. Does file system I/O at
    /// most once per [`RELOAD_CHECK_INTERVAL`]: call it where blocking is allowed.
    pub fn current(&self) -> Arc<Catalogs> {
        self.current_at(Instant::now())
    }

    /// [`LiveCatalogs::current`] with the clock passed in, for tests.
    fn current_at(&self, now: Instant) -> Arc<Catalogs> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if now.saturating_duration_since(state.checked) < RELOAD_CHECK_INTERVAL {
            return state.catalogs.clone();
        }
        state.checked = now;
        let now_stamp = stamp(&self.dir);
        if now_stamp != state.stamp {
            state.stamp = now_stamp;
            match load(&self.dir) {
                Ok(catalogs) => {
                    tracing::info!(
                        catalogs = catalogs.len(),
                        dir = %self.dir.display(),
                        "catalogs reloaded"
                    );
                    state.catalogs = Arc::new(catalogs);
                }
                Err(error) => {
                    tracing::error!(%error, "catalogs not reloaded; the previous ones stay in use");
                }
            }
        }
        state.catalogs.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    /// A home with `catalog/` and `images/`, and a few images.
    fn home() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        for file in [
            "images/sample/photo.jpg",
            "images/plain/a.png",
            "images/x/y.jpg",
        ] {
            write(&tmp.path().join(file), "data");
        }
        tmp
    }

    #[test]
    fn missing_directory_or_default_gives_builtin_defaults() {
        let tmp = tempfile::tempdir().unwrap();
        let catalogs = load(&tmp.path().join("none")).unwrap();
        assert_eq!(catalogs.default.attributes, Attributes::default());
        assert_eq!(catalogs.default.name, "default");
        assert_eq!(catalogs.len(), 1);

        write(&tmp.path().join("c/other.ini"), "JpegQuality=90\n");
        let catalogs = load(&tmp.path().join("c")).unwrap();
        assert_eq!(catalogs.default.attributes, Attributes::default());
        assert_eq!(catalogs.attributes("other").jpeg_quality, 90);
        assert_eq!(catalogs.len(), 2);
    }

    #[test]
    fn every_attribute_parses_case_insensitively() {
        let text = "\u{feff}; comment\n# another\n\n[Attributes]\n\
            defaultpix = 300, 200\nMAXPIX=4000,3000\nMaxSourcePix=1000\nJpegQuality=95\n\
            BkgColor=0x102030\nExpiration=1.5\nErrorDetail=1\nDefaultImage=sample/none\n\
            ResMode=BiCub\nMaxReplyBytes=1000\nMaxSvgBytes=2000\nMaxSvgPix=3000\n\
            [IDS]\nphoto = sample/photo.jpg\nsub/id=x/y.jpg\n";
        let parsed = parse_text(text).unwrap();
        let mut attributes = Attributes::default();
        for (_, s) in &parsed.settings {
            s.apply(&mut attributes);
        }
        assert_eq!(
            attributes,
            Attributes {
                default_pix: (300, 200),
                max_pix: (4000, 3000),
                max_source_pix: 1000,
                jpeg_quality: 95,
                bkg_color: Rgba([0x10, 0x20, 0x30, 255]),
                expiration: Duration::from_secs(5400),
                error_detail: true,
                default_image: Some("sample/none".into()),
                res_mode: ResMode::Bicub,
                max_reply_bytes: 1000,
                max_svg_bytes: 2000,
                max_svg_pix: 3000,
            }
        );
        assert_eq!(parsed.ids["photo"], "sample/photo.jpg");
        assert_eq!(parsed.ids["sub/id"], "x/y.jpg");
    }

    #[test]
    fn colours_and_expirations() {
        assert_eq!(parse_size("0, 300", true), Ok((0, 300)));
        assert!(parse_size("0,300", false).is_err());
        assert_eq!(parse_color("FF000080"), Ok(Rgba([255, 0, 0, 128])));
        assert_eq!(parse_color("#00ff00"), Ok(Rgba([0, 255, 0, 255])));
        assert!(parse_color("fff").is_err());
        assert!(parse_color("gg0000").is_err());
        assert_eq!(parse_expiration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_expiration("-1"), Ok(NEVER_EXPIRES));
        assert_eq!(parse_expiration("0.25"), Ok(Duration::from_secs(900)));
        assert!(parse_expiration("-2").is_err());
        assert!(parse_expiration("NaN").is_err());
        assert!(parse_expiration("1e9").is_err());
    }

    #[test]
    fn errors_name_the_file_and_the_line() {
        let tmp = tempfile::tempdir().unwrap();
        let cases = [
            ("JpegQuality=80\n\nFoo=1\n", 3, "unknown attribute `Foo`"),
            ("JpegQuality=101\n", 1, "invalid JpegQuality `101`"),
            ("MaxPix=10\n", 1, "invalid MaxPix `10`"),
            ("MaxPix=0,10\n", 1, "invalid MaxPix `0,10`"),
            ("DefaultPix=-1,10\n", 1, "invalid DefaultPix"),
            ("BkgColor=red\n", 1, "invalid BkgColor"),
            ("ResMode=nearest\n", 1, "invalid ResMode"),
            ("just words\n", 1, "expected `Name=value`"),
            (
                "JpegQuality=80\njpegquality=81\n",
                2,
                "already set on line 1",
            ),
            ("[ids]\na=b.jpg\na=c.jpg\n", 3, "id `a` is given twice"),
            ("[ids]\na=../b.jpg\n", 2, "invalid path `../b.jpg`"),
            ("[ids]\na=/etc/passwd\n", 2, "absolute"),
            ("[other]\n", 1, "unknown section"),
            ("[ids]\nJpegQuality\n", 2, "expected `Name=value`"),
            ("DefaultImage=../x\n", 1, "invalid DefaultImage"),
        ];
        for (text, line, needle) in cases {
            let dir = tmp.path().join(format!("c{line}{}", text.len()));
            write(&dir.join("bad.ini"), text);
            let err = load(&dir).unwrap_err();
            let message = err.to_string();
            assert!(
                matches!(err, CatalogError::Parse { line: l, .. } if l == line),
                "{text:?}: {message}"
            );
            assert!(message.contains("bad.ini"), "{message}");
            assert!(message.contains(&format!("line {line}:")), "{message}");
            assert!(message.contains(needle), "{text:?}: {message}");
        }
    }

    #[test]
    fn named_catalogs_inherit_the_default_attributes() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            &tmp.path().join("default.ini"),
            "JpegQuality=70\nMaxPix=100,100\n",
        );
        write(&tmp.path().join("a.ini"), "JpegQuality=90\n");
        write(&tmp.path().join(".hidden.ini"), "Bogus=1\n");
        write(&tmp.path().join("notes.txt"), "Bogus=1\n");
        let catalogs = load(tmp.path()).unwrap();
        assert_eq!(catalogs.attributes("default").jpeg_quality, 70);
        assert_eq!(catalogs.attributes("a").jpeg_quality, 90);
        assert_eq!(catalogs.attributes("a").max_pix, (100, 100));
        // An unknown catalog gets the default's.
        assert_eq!(catalogs.attributes("zzz").jpeg_quality, 70);
        assert_eq!(catalogs.len(), 2);
    }

    fn catalogs_for(home: &Path, default: &str, sample: &str) -> Catalogs {
        write(&home.join("catalog/default.ini"), default);
        write(&home.join("catalog/sample.ini"), sample);
        load(&home.join("catalog")).unwrap()
    }

    #[test]
    fn objects_resolve_by_catalog_id_then_default_id_then_path() {
        let tmp = home();
        let h = tmp.path();
        let images = h.join("images");
        let real = fs::canonicalize(&images).unwrap();
        let catalogs = catalogs_for(
            h,
            "[ids]\nsample/alias=x/y.jpg\ntop=plain/a.png\n",
            "JpegQuality=90\n[ids]\nphoto=sample/photo.jpg\nnested/id=plain/a.png\n",
        );
        let resolve = |o: &str| catalogs.resolve(o, &images);
        assert_eq!(
            resolve("sample/photo").unwrap(),
            Resolved {
                catalog: "sample".into(),
                path: real.join("sample/photo.jpg")
            }
        );
        assert_eq!(
            resolve("sample/nested/id").unwrap().path,
            real.join("plain/a.png")
        );
        // Not an id of `sample`: the default catalog's id, with `sample`'s attributes.
        assert_eq!(
            resolve("sample/alias").unwrap(),
            Resolved {
                catalog: "sample".into(),
                path: real.join("x/y.jpg")
            }
        );
        assert_eq!(
            resolve("top").unwrap(),
            Resolved {
                catalog: "default".into(),
                path: real.join("plain/a.png")
            }
        );
        assert_eq!(
            resolve("default/top").unwrap().path,
            real.join("plain/a.png")
        );
        // Plain paths, under a catalog name or not.
        assert_eq!(
            resolve("sample/photo.jpg").unwrap(),
            Resolved {
                catalog: "sample".into(),
                path: real.join("sample/photo.jpg")
            }
        );
        assert_eq!(
            resolve("plain/a.png").unwrap(),
            Resolved {
                catalog: "default".into(),
                path: real.join("plain/a.png")
            }
        );
    }

    #[test]
    fn unsafe_paths_are_refused_and_missing_ones_not_found() {
        let tmp = home();
        let h = tmp.path();
        let images = h.join("images");
        write(&h.join("secret.txt"), "secret");
        std::os::unix::fs::symlink(h.join("secret.txt"), images.join("link.jpg")).unwrap();
        std::os::unix::fs::symlink(h, images.join("up")).unwrap();
        std::os::unix::fs::symlink(images.join("plain/a.png"), images.join("inside.png")).unwrap();
        let catalogs = catalogs_for(h, "", "");
        let status = |o: &str| catalogs.resolve(o, &images).map_err(|e| e.status);
        for refused in [
            "../secret.txt",
            "sample/../../secret.txt",
            "/etc/passwd",
            "a//b",
            "./plain/a.png",
            "link.jpg",
            "up/secret.txt",
            "",
        ] {
            assert_eq!(status(refused), Err(403), "{refused}");
        }
        for missing in ["nothing.jpg", "sample/nothing", "plain", "plain/a.png/x"] {
            assert_eq!(status(missing), Err(404), "{missing}");
        }
        // A link that stays inside is fine, and resolves to its target.
        assert_eq!(
            catalogs.resolve("inside.png", &images).unwrap().path,
            fs::canonicalize(images.join("plain/a.png")).unwrap()
        );
        // The message names the object, never the file.
        let err = catalogs.resolve("link.jpg", &images).unwrap_err();
        assert!(!err.message.contains(h.to_str().unwrap()), "{err}");
    }

    #[test]
    fn a_missing_object_falls_back_to_the_default_image() {
        let tmp = home();
        let h = tmp.path();
        let images = h.join("images");
        let catalogs = catalogs_for(
            h,
            "DefaultImage=plain/a.png\n",
            "DefaultImage=sample/photo\n[ids]\nphoto=sample/photo.jpg\n",
        );
        let real = fs::canonicalize(&images).unwrap();
        assert_eq!(
            catalogs.resolve("nothing.jpg", &images).unwrap(),
            Resolved {
                catalog: "default".into(),
                path: real.join("plain/a.png")
            }
        );
        assert_eq!(
            catalogs.resolve("sample/nothing", &images).unwrap(),
            Resolved {
                catalog: "sample".into(),
                path: real.join("sample/photo.jpg")
            }
        );
        assert_eq!(
            catalogs
                .resolve_exact("sample/nothing", &images)
                .unwrap_err()
                .status,
            404
        );
        // A refused path does not fall back.
        assert_eq!(catalogs.resolve("../x", &images).unwrap_err().status, 403);

        // A missing default image is a 404 about the object asked for.
        let catalogs = catalogs_for(h, "DefaultImage=gone.jpg\n", "");
        let err = catalogs.resolve("nothing.jpg", &images).unwrap_err();
        assert_eq!(err, ImageError::not_found("nothing.jpg"));
    }

    #[test]
    fn the_request_default_image_takes_the_catalog_one_s_place() {
        let tmp = home();
        let h = tmp.path();
        let images = h.join("images");
        let real = fs::canonicalize(&images).unwrap();
        let catalogs = catalogs_for(
            h,
            "DefaultImage=plain/a.png\n",
            "[ids]\nphoto=sample/photo.jpg\n",
        );
        // Given by the request: resolved like any object (here through catalog `sample`).
        let found = catalogs
            .resolve_with_default("nothing.jpg", Some("sample/photo"), &images)
            .unwrap();
        assert_eq!(found.path, real.join("sample/photo.jpg"));
        assert_eq!(found.catalog, "default");
        // Not given: the catalog's.
        let found = catalogs
            .resolve_with_default("nothing.jpg", None, &images)
            .unwrap();
        assert_eq!(found.path, real.join("plain/a.png"));
        // An existing object ignores it; a missing default is a 404 about the object.
        let found = catalogs
            .resolve_with_default("plain/a.png", Some("sample/photo"), &images)
            .unwrap();
        assert_eq!(found.path, real.join("plain/a.png"));
        let err = catalogs
            .resolve_with_default("nothing.jpg", Some("gone.jpg"), &images)
            .unwrap_err();
        assert_eq!(err, ImageError::not_found("nothing.jpg"));
        // Without any default image: 404.
        let bare = catalogs_for(h, "", "");
        let err = bare
            .resolve_with_default("nothing.jpg", None, &images)
            .unwrap_err();
        assert_eq!(err.status, 404);
    }

    #[test]
    fn live_catalogs_reload_changed_files_at_most_once_per_interval() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("catalog");
        write(&dir.join("default.ini"), "JpegQuality=70\n");
        let live = LiveCatalogs::open(&dir).unwrap();
        let start = Instant::now();
        assert_eq!(live.current_at(start).default.attributes.jpeg_quality, 70);

        // Another size, so the change shows whatever the file system's time resolution.
        write(&dir.join("default.ini"), "JpegQuality=75\n\n");
        write(&dir.join("new.ini"), "");
        let soon = start + RELOAD_CHECK_INTERVAL / 2;
        assert_eq!(live.current_at(soon).default.attributes.jpeg_quality, 70);
        let later = start + RELOAD_CHECK_INTERVAL * 2;
        let catalogs = live.current_at(later);
        assert_eq!(catalogs.default.attributes.jpeg_quality, 75);
        assert!(catalogs.get("new").is_some());

        // A broken file keeps the previous catalogs.
        write(&dir.join("default.ini"), "Bogus=1\n");
        let catalogs = live.current_at(later + RELOAD_CHECK_INTERVAL * 2);
        assert_eq!(catalogs.default.attributes.jpeg_quality, 75);

        // Fixing it is picked up; removing a catalog too.
        write(&dir.join("default.ini"), "JpegQuality=60\n");
        fs::remove_file(dir.join("new.ini")).unwrap();
        let catalogs = live.current_at(later + RELOAD_CHECK_INTERVAL * 4);
        assert_eq!(catalogs.default.attributes.jpeg_quality, 60);
        assert!(catalogs.get("new").is_none());
    }

    #[test]
    fn an_invalid_catalog_at_start_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        write(&tmp.path().join("default.ini"), "Bogus=1\n");
        assert!(LiveCatalogs::open(tmp.path()).is_err());
    }
}

//! The checks that keep a hostile SVG from costing unbounded memory, run before the work they
//! guard: DTD entities are measured before parsing, the offscreen buffers of a render are
//! estimated before rendering. See the module doc of [`super`] for the whole list of defences.

use std::collections::HashMap;

use resvg::tiny_skia;
use resvg::usvg;

use super::{invalid_svg, OFFSCREEN_FACTOR};
use crate::imaging::ImageError;

/// How many tree nodes the resource estimate visits before it calls a document too complex.
/// Shared patterns and masks are visited once per use, as resvg renders them once per use.
const MAX_VISITS: u64 = 2_000_000;

/// How deeply entity references may nest inside each other (roxmltree allows 10).
const MAX_ENTITY_DEPTH: u32 = 10;

/// Refuses documents whose internal DTD entities would expand past `budget` bytes.
///
/// roxmltree expands entities while parsing and only bounds their nesting, so a 14 kB
/// "billion laughs" document still expands to gigabytes. This scan over-estimates: every
/// reference to a declared entity, wherever it appears, counts its full expansion.
pub(super) fn check_entity_expansion(text: &str, budget: usize) -> Result<(), ImageError> {
    const DECLARATION: &str = "<!ENTITY";
    if !text.contains(DECLARATION) {
        return Ok(());
    }
    let mut values: HashMap<&str, &str> = HashMap::new();
    let mut rest = text;
    while let Some(at) = rest.find(DECLARATION) {
        rest = &rest[at + DECLARATION.len()..];
        let declaration = rest.trim_start();
        if declaration.starts_with('%') {
            return Err(invalid_svg("parameter entities are not supported"));
        }
        let name_end = declaration
            .find(|c: char| c.is_whitespace())
            .unwrap_or(declaration.len());
        let name = &declaration[..name_end];
        let after = declaration[name_end..].trim_start();
        // An external entity (SYSTEM or PUBLIC) is never loaded: it expands to nothing.
        let value = match after.chars().next() {
            Some(quote @ ('"' | '\'')) => {
                let body = &after[1..];
                body.find(quote).map_or(body, |end| &body[..end])
            }
            _ => "",
        };
        // XML: the first declaration of a name wins.
        values.entry(name).or_insert(value);
    }

    let mut expanded: HashMap<&str, usize> = HashMap::new();
    let mut total: usize = 0;
    for name in references(text) {
        if values.contains_key(name) {
            let size = expansion(name, &values, &mut expanded, 0)?;
            total = total.saturating_add(size);
            if total > budget {
                return Err(ImageError::too_large(format!(
                    "SVG entities expand to more than {budget} bytes"
                )));
            }
        }
    }
    Ok(())
}

/// The names of the entity references (`&name;`) in `text`, character references excluded.
fn references(text: &str) -> impl Iterator<Item = &str> {
    text.split('&').skip(1).filter_map(|after| {
        let end = after.find(';')?;
        let name = &after[..end];
        let plausible = !name.is_empty()
            && !name.starts_with('#')
            && name.len() <= 256
            && !name.contains(|c: char| c.is_whitespace() || c == '<' || c == '>');
        plausible.then_some(name)
    })
}

/// The size of entity `name` once fully expanded (over-estimated: reference texts are counted
/// as well as what they expand to).
fn expansion<'a>(
    name: &'a str,
    values: &HashMap<&'a str, &'a str>,
    expanded: &mut HashMap<&'a str, usize>,
    depth: u32,
) -> Result<usize, ImageError> {
    if let Some(&size) = expanded.get(name) {
        return Ok(size);
    }
    if depth > MAX_ENTITY_DEPTH {
        return Err(invalid_svg("entity references nest too deeply or loop"));
    }
    let value = values.get(name).copied().unwrap_or("");
    let mut size = value.len();
    for inner in references(value) {
        if values.contains_key(inner) {
            size = size.saturating_add(expansion(inner, values, expanded, depth + 1)?);
        }
    }
    expanded.insert(name, size);
    Ok(size)
}

/// An estimate of the offscreen pixels resvg allocates at its peak while rendering, following
/// resvg 0.49's renderer: an isolated group (opacity, clip, mask, filter, blend) renders into a
/// layer of its bounding box clamped to 25 canvases, a clip or a mask adds a pixmap of the
/// layer's size, each filter primitive keeps a result of the layer's size, and a pattern renders
/// its tile (unclamped) once for every shape it paints.
struct OffscreenEstimate {
    /// The largest layer resvg allocates: 25 canvases.
    max_layer: f64,
    /// Nodes visited so far, bounded by [`MAX_VISITS`].
    visits: u64,
}

impl OffscreenEstimate {
    /// The peak offscreen pixels of rendering `group` with `transform` (its parent's).
    fn group(
        &mut self,
        group: &usvg::Group,
        transform: tiny_skia::Transform,
    ) -> Result<f64, ImageError> {
        self.visit()?;
        let transform = transform.pre_concat(group.transform());
        let mut own = 0.0;
        let mut nested: f64 = 0.0;
        if group.should_isolate() {
            let layer = group
                .layer_bounding_box()
                .transform(transform)
                .map_or(0.0, |r| {
                    (f64::from(r.width()) + 4.0) * (f64::from(r.height()) + 4.0)
                })
                .min(self.max_layer);
            let mut buffers = 1.0;
            if let Some(clip) = group.clip_path() {
                buffers += 1.0;
                nested = nested.max(self.clip(clip, transform)?);
            }
            if let Some(mask) = group.mask() {
                nested = nested.max(self.mask(mask, transform, &mut buffers)?);
            }
            for filter in group.filters() {
                buffers += filter.primitives().len() as f64 + 2.0;
                for primitive in filter.primitives() {
                    if let usvg::filter::Kind::Image(image) = primitive.kind() {
                        nested = nested.max(self.group(image.root(), transform)?);
                    }
                }
            }
            own = layer * buffers;
        }
        for child in group.children() {
            nested = nested.max(self.node(child, transform)?);
        }
        Ok(own + nested)
    }

    /// The peak offscreen pixels of one child node.
    fn node(
        &mut self,
        node: &usvg::Node,
        transform: tiny_skia::Transform,
    ) -> Result<f64, ImageError> {
        match node {
            usvg::Node::Group(group) => self.group(group, transform),
            usvg::Node::Path(path) => {
                self.visit()?;
                let mut peak: f64 = 0.0;
                let paints = [
                    path.fill().map(resvg::usvg::Fill::paint),
                    path.stroke().map(resvg::usvg::Stroke::paint),
                ];
                for paint in paints.into_iter().flatten() {
                    if let usvg::Paint::Pattern(pattern) = paint {
                        peak = peak.max(self.pattern(pattern, transform)?);
                    }
                }
                Ok(peak)
            }
            // No images are ever loaded, and text has no fonts to render with.
            _ => self.visit().map(|()| 0.0),
        }
    }

    /// A pattern tile and what rendering its content needs.
    fn pattern(
        &mut self,
        pattern: &usvg::Pattern,
        transform: tiny_skia::Transform,
    ) -> Result<f64, ImageError> {
        let (sx, sy) = transform.pre_concat(pattern.transform()).get_scale();
        let rect = pattern.rect();
        let tile = f64::from(rect.width() * sx).round() * f64::from(rect.height() * sy).round();
        let content = self.group(pattern.root(), tiny_skia::Transform::from_scale(sx, sy))?;
        Ok(tile + content)
    }

    /// What rendering a clip path's content needs (its pixmap is counted by the group).
    fn clip(
        &mut self,
        clip: &usvg::ClipPath,
        transform: tiny_skia::Transform,
    ) -> Result<f64, ImageError> {
        let transform = transform.pre_concat(clip.transform());
        let mut peak = self.group(clip.root(), transform)?;
        if let Some(inner) = clip.clip_path() {
            peak = peak.max(self.clip(inner, transform)?);
        }
        Ok(peak)
    }

    /// What rendering a mask's content needs; counts its pixmaps (one a nested mask) in
    /// `buffers`.
    fn mask(
        &mut self,
        mask: &usvg::Mask,
        transform: tiny_skia::Transform,
        buffers: &mut f64,
    ) -> Result<f64, ImageError> {
        *buffers += 1.0;
        let mut peak = self.group(mask.root(), transform)?;
        if let Some(inner) = mask.mask() {
            peak = peak.max(self.mask(inner, transform, buffers)?);
        }
        Ok(peak)
    }

    /// Counts a visit, refusing documents that take too long to even estimate.
    fn visit(&mut self) -> Result<(), ImageError> {
        self.visits += 1;
        if self.visits > MAX_VISITS {
            return Err(ImageError::too_large(
                "the SVG is too complex to render (too many shapes once patterns, masks and clips are expanded)",
            ));
        }
        Ok(())
    }
}

/// Refuses to render `tree` at `width`×`height` when its offscreen buffers would exceed
/// [`OFFSCREEN_FACTOR`] × `max_svg_pix` pixels.
pub(super) fn check_offscreen(
    tree: &usvg::Tree,
    transform: tiny_skia::Transform,
    width: u32,
    height: u32,
    max_svg_pix: u64,
) -> Result<(), ImageError> {
    let canvas = f64::from(width) * f64::from(height);
    let mut estimate = OffscreenEstimate {
        max_layer: 25.0 * canvas,
        visits: 0,
    };
    let peak = estimate.group(tree.root(), transform)?;
    let budget = (OFFSCREEN_FACTOR * max_svg_pix) as f64;
    // NaN comes from absurd transforms.
    if peak.is_nan() || peak > budget {
        return Err(ImageError::too_large(format!(
            "rendering this SVG at {width}×{height} needs about {peak:.0} pixels of intermediate buffers, more than the {budget:.0} allowed"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::imaging::svg::{intrinsic_size, render};

    const MIB: usize = 1024 * 1024;

    #[test]
    fn entity_bombs_are_refused_before_parsing() {
        let lol = "x".repeat(10_000);
        let svg = format!(
            "<?xml version='1.0'?><!DOCTYPE svg [<!ENTITY a '{lol}'><!ENTITY b '{}'>]>\
             <svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'><desc>{}</desc></svg>",
            "&a;".repeat(250),
            "&b;".repeat(1000)
        );
        let started = Instant::now();
        let error = intrinsic_size(svg.as_bytes(), MIB).unwrap_err();
        assert_eq!(error.status, 403);
        assert!(error.message.contains("entities"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(1));

        let looping = "<!DOCTYPE svg [<!ENTITY a '&b;'><!ENTITY b '&a;'>]><svg>&a;</svg>";
        assert_eq!(
            intrinsic_size(looping.as_bytes(), MIB).unwrap_err().status,
            403
        );
        let parameter = "<!DOCTYPE svg [<!ENTITY % p 'x'>]><svg/>";
        assert_eq!(
            intrinsic_size(parameter.as_bytes(), MIB)
                .unwrap_err()
                .status,
            403
        );

        // Illustrator-style namespace entities are fine.
        let illustrator = r#"<?xml version="1.0"?>
<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd" [
  <!ENTITY ns_svg "http://www.w3.org/2000/svg">
  <!ENTITY ns_xlink "http://www.w3.org/1999/xlink">
]>
<svg xmlns="&ns_svg;" xmlns:xlink="&ns_xlink;" width="30" height="20"><rect width="30" height="20"/></svg>"#;
        assert_eq!(
            intrinsic_size(illustrator.as_bytes(), MIB).unwrap(),
            (30.0, 20.0)
        );
    }

    #[test]
    fn a_pattern_bomb_is_refused_before_rendering() {
        let svg = br#"<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100"><pattern id="p" width="40000" height="40000" patternUnits="userSpaceOnUse"><rect width="40000" height="40000" fill="red"/></pattern><rect width="100" height="100" fill="url(#p)"/></svg>"#;
        let error = render(svg, 100, 100, MIB, 4_000_000).unwrap_err();
        assert_eq!(error.status, 403);
        assert!(error.message.contains("intermediate buffers"), "{error}");
        // A reasonable pattern still renders.
        let fine = br#"<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100"><pattern id="p" width="10" height="10" patternUnits="userSpaceOnUse"><rect width="5" height="10" fill="red"/></pattern><rect width="100" height="100" fill="url(#p)"/></svg>"#;
        let rgba = render(fine, 100, 100, MIB, 4_000_000).unwrap();
        assert_eq!(&rgba[..4], [255, 0, 0, 255]);
    }

    #[test]
    fn huge_filter_layers_are_refused() {
        let svg = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100"><filter id="f" x="-100" y="-100" width="200" height="200"><feGaussianBlur stdDeviation="1"/></filter>{}<rect width="100" height="100" fill="red"/>{}</svg>"#,
            r#"<g filter="url(#f)">"#.repeat(20),
            "</g>".repeat(20)
        );
        let error = render(svg.as_bytes(), 2000, 2000, MIB, 4_000_000).unwrap_err();
        assert_eq!(error.status, 403, "{error}");
    }
}

//! Text answers (`req=props`, `req=imageprops`, `req=exists`): a list of `name=value` properties
//! written in one of the three forms of [`TextFormat`].
//!
//! - `text` (the default): `#S7Z OK` on the first line, then one `name=value` line per property,
//!   escaped as in a Java properties file. The answer is UTF-8 (`text/plain; charset=utf-8`):
//!   only control characters are written as `\uXXXX`, not every non-ASCII character as Java's
//!   ISO-8859-1 files would, because every client of ours reads UTF-8.
//! - `json`: one object, `{"image.width":"2000",...}`, in the order given. Every value is a JSON
//!   **string**, numbers included: the same strings as the text form, so a client parses both forms
//!   the same way and no formatting (`0.50`, `007`) is lost in a round trip through a number.
//! - `xml`: `<?xml version="1.0" encoding="UTF-8"?>` then `<imageProperties>` with one
//!   `<property name=".." value=".."/>` per line. Characters XML 1.0 cannot carry at all (most C0
//!   controls) become U+FFFD; tab, line feed and carriage return are written as character
//!   references so that attribute normalisation keeps them.

use std::fmt::Write as _;

use crate::imaging::request::TextFormat;

/// The content type of a `text` answer.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";
/// The content type of a `json` answer.
pub const JSON_CONTENT_TYPE: &str = "application/json";
/// The content type of an `xml` answer.
pub const XML_CONTENT_TYPE: &str = "application/xml; charset=utf-8";

/// The first line of every `text` answer, as in the original.
const TEXT_HEADER: &str = "#S7Z OK\n";

/// Writes `props` in `format`; returns the content type and the body.
pub fn format_props(props: &[(String, String)], format: TextFormat) -> (&'static str, String) {
    match format {
        TextFormat::Text => (TEXT_CONTENT_TYPE, to_text(props)),
        TextFormat::Json => (JSON_CONTENT_TYPE, to_json(props)),
        TextFormat::Xml => (XML_CONTENT_TYPE, to_xml(props)),
    }
}

/// The Java-properties form.
fn to_text(props: &[(String, String)]) -> String {
    let mut out = String::from(TEXT_HEADER);
    for (name, value) in props {
        escape_property(&mut out, name, true);
        out.push('=');
        escape_property(&mut out, value, false);
        out.push('\n');
    }
    out
}

/// Appends `s` escaped for a properties file: a key also escapes the characters that would end
/// it (`=`, `:`, white space) or start a comment (`#`, `!`); a value escapes a leading space,
/// which a reader would otherwise strip.
fn escape_property(out: &mut String, s: &str, key: bool) {
    for (i, c) in s.chars().enumerate() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{c}' => out.push_str("\\f"),
            '=' | ':' | '#' | '!' if key => {
                out.push('\\');
                out.push(c);
            }
            ' ' if key || i == 0 => out.push_str("\\ "),
            c if c.is_control() => {
                // Controls outside the BMP do not exist, so one `\uXXXX` always suffices.
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

/// The JSON form: one object, every value a string.
fn to_json(props: &[(String, String)]) -> String {
    let mut out = String::from("{");
    for (i, (name, value)) in props.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_string(&mut out, name);
        out.push(':');
        json_string(&mut out, value);
    }
    out.push('}');
    out
}

/// Appends `s` as a JSON string literal.
fn json_string(out: &mut String, s: &str) {
    // Serialising a `str` cannot fail; the fallback only keeps the output valid JSON regardless.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned()));
}

/// The XML form.
fn to_xml(props: &[(String, String)]) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<imageProperties>\n");
    for (name, value) in props {
        out.push_str("<property name=\"");
        xml_attribute(&mut out, name);
        out.push_str("\" value=\"");
        xml_attribute(&mut out, value);
        out.push_str("\"/>\n");
    }
    out.push_str("</imageProperties>\n");
    out
}

/// Appends `s` escaped for a double-quoted XML attribute value.
fn xml_attribute(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            // XML 1.0 allows no other C0 control and neither U+FFFE nor U+FFFF, even escaped.
            c if (c < ' ') || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn text_starts_with_the_ok_line_and_lists_properties() {
        let (mime, body) = format_props(
            &props(&[("image.width", "2000"), ("image.height", "2400")]),
            TextFormat::Text,
        );
        assert_eq!(mime, "text/plain; charset=utf-8");
        assert_eq!(body, "#S7Z OK\nimage.width=2000\nimage.height=2400\n");
    }

    #[test]
    fn text_escapes_like_java_properties() {
        let (_, body) = format_props(
            &props(&[
                ("a key=x:y#!", " lead\\back\nline\ttab=kept:é"),
                ("ctl", "\u{1}"),
            ]),
            TextFormat::Text,
        );
        assert_eq!(
            body,
            "#S7Z OK\na\\ key\\=x\\:y\\#\\!=\\ lead\\\\back\\nline\\ttab=kept:é\nctl=\\u0001\n"
        );
    }

    #[test]
    fn text_of_nothing_is_only_the_ok_line() {
        assert_eq!(format_props(&[], TextFormat::Text).1, "#S7Z OK\n");
    }

    #[test]
    fn json_is_one_object_of_strings_in_order() {
        let (mime, body) = format_props(
            &props(&[("image.width", "2000"), ("b", "say \"hi\"\n\\"), ("a", "é")]),
            TextFormat::Json,
        );
        assert_eq!(mime, "application/json");
        assert_eq!(
            body,
            r#"{"image.width":"2000","b":"say \"hi\"\n\\","a":"é"}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["b"], "say \"hi\"\n\\");
        assert_eq!(format_props(&[], TextFormat::Json).1, "{}");
    }

    #[test]
    fn xml_escapes_attributes() {
        let (mime, body) = format_props(
            &props(&[("image.width", "2000"), ("x<&>", "\"'\t\u{1}")]),
            TextFormat::Xml,
        );
        assert_eq!(mime, "application/xml; charset=utf-8");
        assert_eq!(
            body,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<imageProperties>\n\
             <property name=\"image.width\" value=\"2000\"/>\n\
             <property name=\"x&lt;&amp;&gt;\" value=\"&quot;&apos;&#9;\u{FFFD}\"/>\n\
             </imageProperties>\n"
        );
    }
}

//! `docs/image-serving.md` against the URL parser: the command table of "Requests" names every
//! command [`query::parse`] accepts, and only those.
//!
//! The parser keeps no list of its commands, so both directions go through what it does:
//! - every example of the table is accepted, and names every command of its row, so every
//!   documented command exists;
//! - every field of [`ImageRequest`] (but the object) is set by some example, so a command
//!   added to the parser, which needs a field to put its value in, cannot stay undocumented.
//!
//! Every documented command needs a value, and the commands the page says this release refuses
//! by name must be refused as such.

use std::collections::{BTreeMap, BTreeSet};

use imageserving::imaging::query::{self, NOT_IN_THIS_RELEASE};
use imageserving::imaging::ImageRequest;
use serde_json::Value;

use crate::markdown::{code_spans, Doc};
use crate::report;

const DOC: Doc = Doc {
    path: "docs/image-serving.md",
    text: include_str!("../../docs/image-serving.md"),
};

const REQUESTS_HEADING: &str = "## Requests";

/// The object every example is parsed with.
const OBJECT: &str = "sample/photo";

#[test]
fn url_commands_match_the_parser() {
    let section = DOC.section(REQUESTS_HEADING);
    let table = section.table(&["command", "values", "default", "example"]);
    let place = &table.place;
    let mut problems = Vec::new();

    let defaults = match parse(None) {
        Ok(request) => fields(&request),
        Err(message) => panic!("the parser refuses /is/image/{OBJECT} without a query: {message}"),
    };
    let mut set_by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut documented = BTreeSet::new();
    for row in &table.rows {
        let commands: Vec<String> = code_spans(table.cell(row, "command"))
            .into_iter()
            .map(String::from)
            .collect();
        if commands.is_empty() {
            problems.push(format!(
                "{place}: a row names no command in `code`: {row:?}"
            ));
            continue;
        }
        documented.extend(commands.iter().map(|c| c.to_ascii_lowercase()));
        let examples = code_spans(table.cell(row, "example"));
        let mut shown = BTreeSet::new();
        for example in &examples {
            shown.extend(names(example));
            let request = match parse(Some(example)) {
                Ok(request) => request,
                Err(message) => {
                    problems.push(format!(
                        "{place}: the example `{example}` is refused by the parser: {message}"
                    ));
                    continue;
                }
            };
            let changed: Vec<String> = fields(&request)
                .into_iter()
                .filter(|(field, value)| defaults.get(field) != Some(value))
                .map(|(field, _)| field)
                .collect();
            if changed.is_empty() {
                problems.push(format!(
                    "{place}: the example `{example}` asks for nothing but the defaults"
                ));
            }
            for field in changed {
                set_by.entry(field).or_default().push(example.to_string());
            }
        }
        for command in &commands {
            if !shown.contains(&command.to_ascii_lowercase()) {
                problems.push(format!(
                    "{place}: the row of `{command}` has no example using it (the `example` column)"
                ));
            }
        }
    }

    for field in defaults.keys().filter(|f| *f != "object") {
        if !set_by.contains_key(field) {
            problems.push(format!(
                "{place}: no example sets `ImageRequest::{field}`: the command that sets it is missing from the table, or its example asks for its default"
            ));
        }
    }

    for command in &documented {
        // Known, and needing a value, as the page says of every command.
        match parse(Some(&format!("{command}="))) {
            Ok(_) => problems.push(format!(
                "{place}: `{command}=` is accepted, but the page says every command needs a value"
            )),
            Err(message) if message.contains("unknown command") => problems.push(format!(
                "{place}: `{command}` is documented, but the parser answers: {message}"
            )),
            Err(_) => {}
        }
        if NOT_IN_THIS_RELEASE.contains(&command.as_str()) {
            problems.push(format!(
                "{place}: `{command}` is documented, but the parser refuses it as not in this release"
            ));
        }
    }
    // The commands the prose names as refused by this release.
    let prose = section.prose();
    let marker = "does not implement (";
    match prose.split_once(marker) {
        None => problems.push(format!(
            "{}: no \"{marker}…)\" list of the commands this release refuses",
            section.place()
        )),
        Some((_, rest)) => {
            let list = rest.split(')').next().unwrap_or_default();
            for command in code_spans(list) {
                match parse(Some(&format!("{command}=1"))) {
                    Err(message) if message.contains("not in this release") => {}
                    other => problems.push(format!(
                        "{}: `{command}` is said not to be in this release, but the parser answers {other:?}",
                        section.place()
                    )),
                }
            }
        }
    }
    report(problems);
}

fn parse(query: Option<&str>) -> Result<ImageRequest, String> {
    query::parse(OBJECT, query).map_err(|e| e.message)
}

/// The names of the modifiers of a query, lower-cased.
fn names(query: &str) -> Vec<String> {
    query
        .split('&')
        .filter(|element| !element.is_empty())
        .map(|element| {
            element
                .split_once('=')
                .map_or(element, |(name, _)| name)
                .to_ascii_lowercase()
        })
        .collect()
}

/// The fields of a request as serde writes them (the request travels from `ps` to `is` as JSON).
fn fields(request: &ImageRequest) -> BTreeMap<String, Value> {
    match serde_json::to_value(request) {
        Ok(Value::Object(map)) => map.into_iter().collect(),
        other => panic!("an ImageRequest serializes to a JSON object, not {other:?}"),
    }
}

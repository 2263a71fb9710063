//! `docs/configuration.md` against the configuration parser: the key tables under "Keys" list
//! exactly the keys [`config::parse`] accepts in each table of the file, and every default
//! written there as a TOML value is the parser's default.
//!
//! The parser's keys are read from its own answer to an unknown key: every table of the file is
//! a serde struct with `deny_unknown_fields`, whose error lists the keys it accepts ("unknown
//! field `x`, expected one of `a`, `b`"). A default is checked by parsing a file without the key
//! and the same file with `key = <documented default>`: the two configurations must be equal.

use std::collections::BTreeSet;

use imageserving::config::{self, Config};
use imageserving::home::Home;

use crate::markdown::{code_spans, Doc, Section, Table};
use crate::report;

const DOC: Doc = Doc {
    path: "docs/configuration.md",
    text: include_str!("../../docs/configuration.md"),
};

const KEYS_HEADING: &str = "## Keys";
const CHECKS_HEADING: &str = "### `ready` and `health`";

/// The key the probes write, which no table accepts.
const UNKNOWN: &str = "__not_a_key__";

/// A component every probe and default check can extend: one with a port, so that `host`,
/// `ready` and `health` may be given.
const COMPONENT: &str = "[components.a]\ncommand = [\"sleep\", \"60\"]\nport = 40000\n";

/// One table of the configuration file: where its keys are documented and how to make the
/// parser list the keys it accepts there.
struct FileTable {
    /// How messages name it.
    name: &'static str,
    /// A file with [`UNKNOWN`] in that table.
    probe: String,
}

#[test]
fn configuration_keys_match_the_parser() {
    let keys = DOC.section(KEYS_HEADING);
    let mut problems = Vec::new();

    // The top level: one `### `[table]`` section per table the file may have.
    let documented_tables: BTreeSet<String> = keys
        .headings()
        .iter()
        .filter_map(|h| table_of_heading(h))
        .collect();
    let top = FileTable {
        name: "the top level",
        probe: format!("{UNKNOWN} = 1\n"),
    };
    compare(
        &keys.place(),
        &top,
        &documented_tables,
        "has no \"### `[<table>]`\" section under \"## Keys\"",
        &mut problems,
    );

    let supervisor = FileTable {
        name: "[supervisor]",
        probe: format!("[supervisor]\n{UNKNOWN} = 1\n"),
    };
    let supervisor_table = key_table(&keys, "### `[supervisor]`");
    compare(
        &supervisor_table.place,
        &supervisor,
        &documented(&supervisor_table, None),
        "is missing from the table",
        &mut problems,
    );

    let component = FileTable {
        name: "[components.<name>]",
        probe: format!("{COMPONENT}{UNKNOWN} = 1\n"),
    };
    let component_table = key_table(&keys, "### `[components.<name>]`");
    compare(
        &component_table.place,
        &component,
        &documented(&component_table, None),
        "is missing from the table",
        &mut problems,
    );

    let checks = keys.subsection(CHECKS_HEADING);
    let checks_table = checks.table(&["key", "in", "type", "default", "meaning"]);
    for inline in ["ready", "health"] {
        let table = FileTable {
            name: inline,
            probe: format!("{COMPONENT}{inline} = {{ {UNKNOWN} = 1 }}\n"),
        };
        compare(
            &checks_table.place,
            &table,
            &documented(&checks_table, Some(inline)),
            "is missing from the table",
            &mut problems,
        );
    }
    report(problems);
}

#[test]
fn documented_defaults_are_the_parsers() {
    let keys = DOC.section(KEYS_HEADING);
    let mut problems = Vec::new();
    let supervisor = key_table(&keys, "### `[supervisor]`");
    for (key, default) in literal_defaults(&supervisor, None) {
        check_default(
            &supervisor.place,
            &format!("[supervisor]\n{COMPONENT}"),
            &format!("[supervisor]\n{key} = {default}\n{COMPONENT}"),
            &key,
            &default,
            &mut problems,
        );
    }
    let component = key_table(&keys, "### `[components.<name>]`");
    for (key, default) in literal_defaults(&component, None) {
        check_default(
            &component.place,
            COMPONENT,
            &format!("{COMPONENT}{key} = {default}\n"),
            &key,
            &default,
            &mut problems,
        );
    }
    let checks = keys
        .subsection(CHECKS_HEADING)
        .table(&["key", "in", "type", "default", "meaning"]);
    for inline in ["ready", "health"] {
        for (key, default) in literal_defaults(&checks, Some(inline)) {
            check_default(
                &checks.place,
                &format!("{COMPONENT}{inline} = {{ tcp = true }}\n"),
                &format!("{COMPONENT}{inline} = {{ tcp = true, {key} = {default} }}\n"),
                &format!("{inline}.{key}"),
                &default,
                &mut problems,
            );
        }
    }
    report(problems);
}

/// `supervisor` for "### `[supervisor]`", `components` for "### `[components.<name>]`".
fn table_of_heading(heading: &str) -> Option<String> {
    let title = heading.trim_start_matches('#').trim();
    let span = title.strip_prefix("`[")?.strip_suffix("]`")?;
    Some(span.split('.').next().unwrap_or(span).to_string())
}

/// The `| key | type | default | meaning |` table under `heading`.
fn key_table(keys: &Section, heading: &str) -> Table {
    keys.subsection(heading)
        .table(&["key", "type", "default", "meaning"])
}

/// The keys of a table's `key` column; with `only`, the rows whose `in` column names it.
fn documented(table: &Table, only: Option<&str>) -> BTreeSet<String> {
    table
        .rows
        .iter()
        .filter(|row| only.is_none_or(|name| code_spans(table.cell(row, "in")).contains(&name)))
        .flat_map(|row| code_spans(table.cell(row, "key")))
        .map(String::from)
        .collect()
}

/// The keys whose `default` cell is a single TOML value in a code span (`"60s"`, `10`, `[]`),
/// with that value; "none", "required" and prose defaults are left out.
fn literal_defaults(table: &Table, only: Option<&str>) -> Vec<(String, String)> {
    table
        .rows
        .iter()
        .filter(|row| only.is_none_or(|name| code_spans(table.cell(row, "in")).contains(&name)))
        .filter_map(|row| {
            let cell = table.cell(row, "default");
            let key = code_spans(table.cell(row, "key")).first()?.to_string();
            let value = cell.strip_prefix('`')?.strip_suffix('`')?;
            let is_toml =
                !value.contains('`') && format!("v = {value}").parse::<toml::Table>().is_ok();
            is_toml.then(|| (key, value.to_string()))
        })
        .collect()
}

/// The keys the parser names in its answer to [`UNKNOWN`] in `table`.
fn parser_keys(table: &FileTable) -> Result<BTreeSet<String>, String> {
    let Err(message) = parse(&table.probe) else {
        return Err(format!(
            "the parser accepts the unknown key `{UNKNOWN}` in {}",
            table.name
        ));
    };
    let marker = format!("unknown field `{UNKNOWN}`, expected");
    let Some((_, expected)) = message.split_once(&marker) else {
        return Err(format!(
            "the parser's answer to an unknown key in {} does not list the keys it accepts: {message}",
            table.name
        ));
    };
    // serde writes "expected `a`" or "expected one of `a`, `b`"; toml may add more lines after.
    let list = expected.lines().next().unwrap_or_default();
    let keys: BTreeSet<String> = code_spans(list).into_iter().map(String::from).collect();
    if keys.is_empty() {
        return Err(format!(
            "the parser's answer to an unknown key in {} names no key: {message}",
            table.name
        ));
    }
    Ok(keys)
}

/// The documented keys of `table` against the parser's.
fn compare(
    place: &str,
    table: &FileTable,
    documented: &BTreeSet<String>,
    missing_phrase: &str,
    problems: &mut Vec<String>,
) {
    let accepted = match parser_keys(table) {
        Ok(keys) => keys,
        Err(why) => {
            problems.push(format!("{place}: cannot check {}: {why}", table.name));
            return;
        }
    };
    for missing in accepted.difference(documented) {
        problems.push(format!(
            "{place}: the parser accepts `{missing}` in {}; it {missing_phrase}",
            table.name
        ));
    }
    for extra in documented.difference(&accepted) {
        problems.push(format!(
            "{place}: `{extra}` is documented for {} but the parser refuses it there",
            table.name
        ));
    }
}

/// Parsing `without` and `with` (the same file plus `key = default`) gives the same
/// configuration.
fn check_default(
    place: &str,
    without: &str,
    with: &str,
    key: &str,
    default: &str,
    problems: &mut Vec<String>,
) {
    let base = match parse(without) {
        Ok(config) => config,
        Err(e) => {
            problems.push(format!(
                "{place}: the base file for `{key}` does not parse: {e}"
            ));
            return;
        }
    };
    match parse(with) {
        Ok(config) if format!("{config:?}") == format!("{base:?}") => {}
        Ok(_) => problems.push(format!(
            "{place}: `{key}` is documented with the default `{default}`, but giving it that value changes the configuration"
        )),
        Err(e) => problems.push(format!(
            "{place}: `{key}` is documented with the default `{default}`, which the parser refuses: {e}"
        )),
    }
}

fn parse(text: &str) -> Result<Config, String> {
    let home = Home::new("/nonexistent-imageserving-docs/home").map_err(|e| e.to_string())?;
    config::parse(
        text,
        "test.toml",
        &home,
        &config::SelfProgram::new("/nonexistent-imageserving-docs/bin/imageserving"),
    )
    .map_err(|e| e.to_string())
}

//! `docs/status-json.md` against the protocol's types: the key tables of `status --json` and
//! `events --json` list exactly the keys serde writes for [`StatusReport`] and [`EventReport`],
//! with the types and the nullability they have, and every example is what the types would
//! write (no key missing, none extra, timestamps that agree with their `_unix_ms` twins).
//!
//! The values below are built field by field, without `..`, so that a field added to a type
//! stops this test from compiling until the document has been looked at.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, UNIX_EPOCH};

use imageserving::protocol::{
    rfc3339_ms, ComponentStatus, EventReport, OutgoingProcess, State, StatusReport,
    SupervisorStatus,
};
use imageserving_actors::events::EventKind;
use imageserving_actors::lifecycle::ExitReason;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::markdown::{code_spans, Doc, Table};
use crate::report;

const DOC: Doc = Doc {
    path: "docs/status-json.md",
    text: include_str!("../../docs/status-json.md"),
};

const STATUS_HEADING: &str = "## `status --json`";
const EVENTS_HEADING: &str = "## `events --json`";

#[test]
fn status_json_keys_match_status_report() {
    let section = DOC.section(STATUS_HEADING);
    let table = section.table(&["key", "type", "meaning"]);
    let mut problems = Vec::new();

    let full = to_value(&status_report(true));
    let empty = to_value(&status_report(false));
    check_key_table(
        &table,
        "StatusReport",
        &leaves(&full),
        &leaves(&empty),
        &mut problems,
    );

    let examples = section.code_blocks("json");
    if examples.is_empty() {
        problems.push(format!("{}: no ```json example", section.place()));
    }
    let shapes = object_shapes(&full);
    for (n, text) in examples.iter().enumerate() {
        let what = format!("{}, example {}", section.place(), n + 1);
        let example: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("{what}: not JSON: {e}"));
                continue;
            }
        };
        check_example_keys(&what, &example, &shapes, &mut problems);
        check_round_trip::<StatusReport>(&what, &example, &mut problems);
        check_example_types(&what, &table, &example, &mut problems);
        for (i, component) in example["components"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            check_timestamp(
                &format!("{what}, components[{i}]"),
                component,
                "since",
                "since_unix_ms",
                &mut problems,
            );
        }
    }
    report(problems);
}

#[test]
fn events_json_keys_match_event_report() {
    let section = DOC.section(EVENTS_HEADING);
    let always = section.table(&["key", "type", "meaning"]);
    let optional = section.table(&["key", "with", "meaning"]);
    let mut problems = Vec::new();

    // The keys of an event with no details are the ones every line has; the others are the
    // details, each written only where it applies.
    let full = to_value(&event_report(true));
    let bare = to_value(&event_report(false));
    check_key_table(
        &always,
        "EventReport",
        &leaves(&bare),
        &leaves(&bare),
        &mut problems,
    );
    let detail_keys: BTreeSet<String> = leaves(&full)
        .into_keys()
        .filter(|k| !bare.as_object().is_some_and(|o| o.contains_key(k)))
        .collect();
    let documented = documented_keys(&optional);
    compare_keys(
        &optional.place,
        "EventReport (its optional fields)",
        &documented.keys().cloned().collect(),
        &detail_keys,
        &mut problems,
    );

    // The event names: the `event` row's list against the tree's event kinds.
    let names: BTreeSet<String> = event_kinds().iter().map(|k| k.name().to_string()).collect();
    let listed: BTreeSet<String> = always
        .rows
        .iter()
        .find(|row| code_spans(always.cell(row, "key")) == ["event"])
        .map(|row| {
            code_spans(always.cell(row, "type"))
                .into_iter()
                .chain(code_spans(always.cell(row, "meaning")))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    for missing in names.difference(&listed) {
        problems.push(format!(
            "{}: the `event` row does not list `{missing}`, an event the supervisor sends",
            always.place
        ));
    }
    for extra in listed.difference(&names) {
        problems.push(format!(
            "{}: the `event` row lists `{extra}`, which is no event the supervisor sends",
            always.place
        ));
    }
    // Which events carry each detail.
    let with: BTreeMap<String, BTreeSet<String>> = optional
        .rows
        .iter()
        .flat_map(|row| {
            let events: BTreeSet<String> = code_spans(optional.cell(row, "with"))
                .into_iter()
                .map(String::from)
                .collect();
            code_spans(optional.cell(row, "key"))
                .into_iter()
                .map(move |key| (key.to_string(), events.clone()))
        })
        .collect();
    for (key, events) in &with {
        for event in events.difference(&names) {
            problems.push(format!(
                "{}: `{key}` is said to come with `{event}`, which is no event",
                optional.place
            ));
        }
    }

    let lines: Vec<String> = section
        .code_blocks("json")
        .iter()
        .flat_map(|block| block.lines().map(str::to_string).collect::<Vec<_>>())
        .filter(|line| !line.trim().is_empty())
        .collect();
    if lines.is_empty() {
        problems.push(format!("{}: no ```json example", section.place()));
    }
    let all_keys: BTreeSet<String> = leaves(&full).into_keys().collect();
    let bare_keys: BTreeSet<String> = leaves(&bare).into_keys().collect();
    for (n, line) in lines.iter().enumerate() {
        let what = format!("{}, example line {}", section.place(), n + 1);
        let example: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("{what}: not JSON: {e}"));
                continue;
            }
        };
        let keys: BTreeSet<String> = leaves(&example).into_keys().collect();
        for missing in bare_keys.difference(&keys) {
            problems.push(format!("{what}: `{missing}` is missing; every line has it"));
        }
        for extra in keys.difference(&all_keys) {
            problems.push(format!("{what}: `{extra}` is no key of EventReport"));
        }
        let event = example["event"].as_str().unwrap_or_default();
        if !names.contains(event) {
            problems.push(format!("{what}: `{event}` is no event"));
        }
        for key in keys.intersection(&detail_keys) {
            if with.get(key).is_some_and(|events| !events.contains(event)) {
                problems.push(format!(
                    "{what}: `{key}` appears with `{event}`, which the table of details does not say"
                ));
            }
        }
        check_round_trip::<EventReport>(&what, &example, &mut problems);
        check_example_types(&what, &always, &example, &mut problems);
        check_timestamp(&what, &example, "at", "at_unix_ms", &mut problems);
    }
    report(problems);
}

/// A report whose optional values are all set (`full`) or all absent.
fn status_report(full: bool) -> StatusReport {
    let some = |n: u64| full.then_some(n);
    let text = |s: &str| full.then(|| s.to_string());
    StatusReport {
        home: "/var/lib/imageserving".into(),
        supervisor: SupervisorStatus {
            pid: 4242,
            version: "0.1.0".into(),
            started_at: "2026-11-26T20:23:00.000Z".into(),
            uptime_ms: 3_600_000,
            memory_bytes: some(8_388_608),
            strategy: "one_for_one".into(),
            group_restarts: 0,
            escalation: text("is went FATAL and is critical"),
        },
        components: vec![ComponentStatus {
            name: "is".into(),
            state: State::Running,
            since: "2026-11-26T20:23:05.120Z".into(),
            since_unix_ms: 1_795_724_585_120,
            pid: full.then_some(4250),
            uptime_ms: some(3_594_880),
            memory_bytes: some(52_428_800),
            restarts: 0,
            info: String::new(),
            last_exit: text("exited with status 1"),
            next_retry_unix_ms: some(1_795_724_589_120),
            fatal_reason: text("6 failures in 1m"),
            depends_on: vec!["svg".into()],
            restart: "permanent".into(),
            critical: false,
            memory_limit_bytes: some(536_870_912),
            log_dropped_bytes: 0,
            outgoing: if full {
                vec![OutgoingProcess {
                    pid: 4249,
                    uptime_ms: 7_200_000,
                    state: "DRAINING".into(),
                    draining_ms: Some(1_500),
                }]
            } else {
                Vec::new()
            },
        }],
    }
}

/// An event whose details are all set (`full`) or all absent.
fn event_report(full: bool) -> EventReport {
    let some = |n: u64| full.then_some(n);
    EventReport {
        component: "is".into(),
        event: "exited".into(),
        at: "2026-11-27T02:10:03.123Z".into(),
        at_unix_ms: 1_795_745_403_123,
        text: "is exited: pid 4242 killed by signal 9 (SIGKILL)".into(),
        pid: full.then_some(4242),
        attempt: some(7),
        exit_code: full.then_some(1),
        signal: full.then_some(9),
        delay_ms: some(400),
        reason: full.then(|| "too many failures".to_string()),
        used_bytes: some(641_728_512),
        limit_bytes: some(536_870_912),
    }
}

/// One event of each kind the tree sends.
fn event_kinds() -> Vec<EventKind> {
    vec![
        EventKind::Spawned { pid: 1, attempt: 1 },
        EventKind::Running { pid: 1 },
        EventKind::Exited {
            pid: Some(1),
            reason: ExitReason::Code(1),
        },
        EventKind::Backoff {
            delay: Duration::from_millis(100),
        },
        EventKind::Fatal {
            reason: String::new(),
        },
        EventKind::Stopping,
        EventKind::Stopped,
        EventKind::Completed,
        EventKind::Unhealthy {
            reason: String::new(),
        },
        EventKind::MemoryLimit { used: 2, limit: 1 },
        EventKind::HandoverStarted { old: 1 },
        EventKind::Draining { pid: 1 },
    ]
}

fn to_value(value: &impl Serialize) -> Value {
    serde_json::to_value(value).expect("the protocol's types serialize to JSON")
}

/// The leaf keys of a JSON value with the values found there: `home`, `supervisor.pid`,
/// `components[].name`. Objects and arrays of objects are walked into; any other value (an
/// array of strings included) is a leaf.
fn leaves(value: &Value) -> BTreeMap<String, Vec<&Value>> {
    fn walk<'a>(prefix: &str, value: &'a Value, out: &mut BTreeMap<String, Vec<&'a Value>>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(&path, value, out);
                }
            }
            Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => {
                for item in items {
                    walk(&format!("{prefix}[]"), item, out);
                }
            }
            leaf => out.entry(prefix.to_string()).or_default().push(leaf),
        }
    }
    let mut out = BTreeMap::new();
    walk("", value, &mut out);
    out
}

/// The key set of every object in a value, by path (`""`, `supervisor`, `components[]`).
fn object_shapes(value: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let mut shapes = BTreeMap::new();
    for (path, object) in objects(value) {
        shapes.insert(
            generic(&path),
            object.keys().cloned().collect::<BTreeSet<_>>(),
        );
    }
    shapes
}

/// Every object in a value with its path, array elements numbered: `components[1]`.
fn objects(value: &Value) -> Vec<(String, &serde_json::Map<String, Value>)> {
    fn walk<'a>(
        path: String,
        value: &'a Value,
        out: &mut Vec<(String, &'a serde_json::Map<String, Value>)>,
    ) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    let child = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    walk(child, value, out);
                }
                out.push((path, map));
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(format!("{path}[{i}]"), item, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(String::new(), value, &mut out);
    out
}

/// `components[1].x` becomes `components[].x`.
fn generic(path: &str) -> String {
    let mut out = String::new();
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            c => out.push(c),
        }
    }
    out
}

/// The documented keys of a table (its `key` column; a cell may name several), with their row.
fn documented_keys(table: &Table) -> BTreeMap<String, &Vec<String>> {
    let mut keys = BTreeMap::new();
    for row in &table.rows {
        for key in code_spans(table.cell(row, "key")) {
            keys.insert(key.to_string(), row);
        }
    }
    keys
}

/// The table against the keys `type_name` serializes, and its `type` column against the values
/// written when everything optional is set (`full`) and when nothing is (`empty`).
fn check_key_table(
    table: &Table,
    type_name: &str,
    full: &BTreeMap<String, Vec<&Value>>,
    empty: &BTreeMap<String, Vec<&Value>>,
    problems: &mut Vec<String>,
) {
    let documented = documented_keys(table);
    compare_keys(
        &table.place,
        type_name,
        &documented.keys().cloned().collect(),
        &full.keys().cloned().collect(),
        problems,
    );
    for (key, row) in &documented {
        let ty = table.cell(row, "type");
        for value in full.get(key).into_iter().flatten() {
            if !value.is_null() && !type_admits(ty, value) {
                problems.push(format!(
                    "{}: `{key}` is documented as {ty:?} but {type_name} writes {value}",
                    table.place
                ));
            }
        }
        let nullable = ty.split(" or ").any(|t| t.trim() == "null");
        for value in empty.get(key).into_iter().flatten() {
            if value.is_null() && !nullable {
                problems.push(format!(
                    "{}: `{key}` is documented as {ty:?} but {type_name} writes null when it is absent: add \"or null\"",
                    table.place
                ));
            }
            if !value.is_null() && nullable {
                problems.push(format!(
                    "{}: `{key}` is documented as {ty:?} but {type_name} never writes null there",
                    table.place
                ));
            }
        }
    }
}

fn compare_keys(
    place: &str,
    type_name: &str,
    documented: &BTreeSet<String>,
    actual: &BTreeSet<String>,
    problems: &mut Vec<String>,
) {
    for missing in actual.difference(documented) {
        problems.push(format!(
            "{place}: `{missing}` is missing from the table; {type_name} writes it"
        ));
    }
    for extra in documented.difference(actual) {
        problems.push(format!(
            "{place}: the table documents `{extra}`, which {type_name} does not write"
        ));
    }
}

/// Whether a JSON value is of a documented type: `integer`, `string`, `boolean`, `null`,
/// `array of strings`, or several joined by ` or `.
fn type_admits(ty: &str, value: &Value) -> bool {
    ty.split(" or ").any(|t| match t.trim() {
        "integer" => value.is_u64() || value.is_i64(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "array of strings" => value
            .as_array()
            .is_some_and(|items| items.iter().all(Value::is_string)),
        _ => false,
    })
}

/// Every object of an example has exactly the keys the type writes at that place.
fn check_example_keys(
    what: &str,
    example: &Value,
    shapes: &BTreeMap<String, BTreeSet<String>>,
    problems: &mut Vec<String>,
) {
    for (path, object) in objects(example) {
        let Some(expected) = shapes.get(&generic(&path)) else {
            problems.push(format!("{what}: `{path}` is no object of the report"));
            continue;
        };
        let keys: BTreeSet<String> = object.keys().cloned().collect();
        let at = |key: &str| {
            if path.is_empty() {
                key.to_string()
            } else {
                format!("{path}.{key}")
            }
        };
        for missing in expected.difference(&keys) {
            problems.push(format!(
                "{what}: `{}` is missing (every key is always present)",
                at(missing)
            ));
        }
        for extra in keys.difference(expected) {
            problems.push(format!("{what}: `{}` is no key of the report", at(extra)));
        }
    }
}

/// The example reads as the type and writes back unchanged. (Missing and extra keys are
/// reported by the key checks; this names the values the types would write otherwise.)
fn check_round_trip<T: Serialize + DeserializeOwned>(
    what: &str,
    example: &Value,
    problems: &mut Vec<String>,
) {
    match serde_json::from_value::<T>(example.clone()) {
        Ok(parsed) => diff_values(what, "", example, &to_value(&parsed), problems),
        Err(e) => problems.push(format!("{what}: does not read as the protocol's type: {e}")),
    }
}

/// The values that differ between `documented` and `written`, by path; keys present on one
/// side only are left to the key checks.
fn diff_values(
    what: &str,
    path: &str,
    documented: &Value,
    written: &Value,
    problems: &mut Vec<String>,
) {
    match (documented, written) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                if let Some(other) = b.get(key) {
                    let child = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    diff_values(what, &child, value, other, problems);
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (value, other)) in a.iter().zip(b).enumerate() {
                diff_values(what, &format!("{path}[{i}]"), value, other, problems);
            }
        }
        (a, b) if a != b => problems.push(format!(
            "{what}: `{path}` is {a} but the types would write {b}"
        )),
        _ => {}
    }
}

/// Every value of an example is of the type its table row says.
fn check_example_types(what: &str, table: &Table, example: &Value, problems: &mut Vec<String>) {
    let documented = documented_keys(table);
    for (key, values) in leaves(example) {
        let Some(row) = documented.get(&key) else {
            continue;
        };
        let ty = table.cell(row, "type");
        for value in values {
            if !type_admits(ty, value) {
                problems.push(format!(
                    "{what}: `{key}` is {value}, not of the documented type {ty:?}"
                ));
            }
        }
    }
}

/// The RFC 3339 timestamp `text_key` and the milliseconds `ms_key` are the same instant.
fn check_timestamp(
    what: &str,
    object: &Value,
    text_key: &str,
    ms_key: &str,
    problems: &mut Vec<String>,
) {
    let (Some(text), Some(ms)) = (object[text_key].as_str(), object[ms_key].as_u64()) else {
        return;
    };
    let expected = rfc3339_ms(UNIX_EPOCH + Duration::from_millis(ms));
    if text != expected {
        problems.push(format!(
            "{what}: `{text_key}` is {text} but `{ms_key}` {ms} is {expected}"
        ));
    }
}

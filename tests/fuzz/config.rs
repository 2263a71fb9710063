//! The configuration file ([`imageserving::config::parse`]): arbitrary text, files built from the
//! schema's pieces and mutated valid files are parsed into a configuration that keeps every
//! promise the daemon relies on, or refused with an error that names the file first.

use std::path::Path;
use std::sync::OnceLock;

use imageserving::config::{self, ConfigError, EMBEDDED_ORIGIN};
use imageserving::home::Home;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::TestCaseError;

use crate::harness::{char_from, config, edits, mutate_str};

/// Component names, valid and not, bare and quoted.
const COMPONENT_NAMES: &[&str] = &[
    "ps",
    "is",
    "svg",
    "a",
    "b",
    "x-y",
    "x_y",
    "A",
    "1x",
    "-x",
    "\"q q\"",
    "\"\"",
    "\"a.b\"",
    "abcdefghijklmnopqrstuvwxyzabcdefg",
];

/// Values of every type the schema has, valid and not, at and beyond every range.
const CONFIG_VALUES: &[&str] = &[
    "\"10s\"",
    "\"0s\"",
    "\"500ms\"",
    "\"2m\"",
    "\"-1s\"",
    "\"1000000000000000000000000s\"",
    "\"584942417355y\"",
    "\"ten\"",
    "\"\"",
    "0",
    "1",
    "-1",
    "3",
    "8080",
    "65535",
    "65536",
    "99999999999999999999",
    "1.5",
    "true",
    "false",
    "[]",
    "[\"@self\", \"component\", \"ps\"]",
    "[\"sleep\", \"100\"]",
    "[\"\"]",
    "[\"is\", \"svg\"]",
    "[\"ps\"]",
    "[\"a\", \"a\"]",
    "[\"web\"]",
    "[0, 256]",
    "[-1]",
    "{ http = \"/healthz\" }",
    "{ http = \"no slash\" }",
    "{ tcp = true }",
    "{ tcp = false }",
    "{ file = \"\" }",
    "{ file = \"run/ready\" }",
    "{ http = \"/\", tcp = true }",
    "{ tcp = true, interval = \"0s\", max_failed = 0 }",
    "\"::\"",
    "\"0.0.0.0\"",
    "\"localhost\"",
    "\"not an ip\"",
    "\"SIGTERM\"",
    "\"int\"",
    "\"SIGSTOP\"",
    "\"SIGKILL\"",
    "\"NOPE\"",
    "9",
    "19",
    "2147483648",
    "\"512MiB\"",
    "\"18446744073709551615GiB\"",
    "\"1 kb\"",
    "\"x\"",
    "{ A = \"b\" }",
    "{ IMAGESERVING_HOME = \"x\" }",
    "{ IMAGESERVING_PS_ADDR = \"x\" }",
    "{ \"\" = \"x\" }",
    "{ \"A=B\" = \"x\" }",
    "{ A = \"\\u0000\" }",
    "\"one_for_all\"",
    "\"rest_for_one\"",
    "\"on-failure\"",
    "\"never\"",
    "\"/tmp\"",
    "\"../..\"",
];

const DURATIONS: &[&str] = &[
    "\"10s\"",
    "\"500ms\"",
    "\"2m\"",
    "\"1h\"",
    "\"0s\"",
    "\"-1s\"",
    "\"ten\"",
    "\"1000000000000000000000000s\"",
    "\"584942417355y\"",
];
const COUNTS: &[&str] = &["0", "1", "3", "4294967296"];
const BOOLS: &[&str] = &["true", "false"];
const SIZES: &[&str] = &[
    "\"512MiB\"",
    "\"1 kb\"",
    "1048576",
    "0",
    "-1",
    "\"18446744073709551615GiB\"",
    "\"x\"",
];
const CHECKS: &[&str] = &[
    "{ http = \"/healthz\" }",
    "{ http = \"no slash\" }",
    "{ tcp = true }",
    "{ tcp = false }",
    "{ file = \"run/ready\" }",
    "{ file = \"\" }",
    "{ http = \"/\", tcp = true }",
    "{ tcp = true, interval = \"5s\", timeout = \"1s\", max_failed = 2 }",
    "{ tcp = true, interval = \"0s\" }",
    "{ file = \"/tmp/alive\", max_failed = 0 }",
];

/// `[supervisor]` keys and the values they are mostly given.
const SUPERVISOR_KEYS: &[(&str, &[&str])] = &[
    ("start_wait", DURATIONS),
    (
        "strategy",
        &[
            "\"one_for_one\"",
            "\"ONE_FOR_ALL\"",
            "\"rest_for_one\"",
            "\"all\"",
        ],
    ),
    ("max_restarts", COUNTS),
    ("max_window", DURATIONS),
];

/// `[components.<name>]` keys and the values they are mostly given.
const COMPONENT_KEYS: &[(&str, &[&str])] = &[
    (
        "aliases",
        &[
            "[\"web\"]",
            "[\"platform-server\"]",
            "[\"ps\"]",
            "[\"A\"]",
            "[]",
            "[\"w\", \"w\"]",
        ],
    ),
    (
        "host",
        &[
            "\"::\"",
            "\"0.0.0.0\"",
            "\"localhost\"",
            "\"127.0.0.1\"",
            "\"not an ip\"",
        ],
    ),
    ("port", &["8080", "8081", "9000", "0", "65535", "65536"]),
    (
        "depends_on",
        &[
            "[\"a\"]",
            "[\"b\"]",
            "[\"ps\"]",
            "[\"is\", \"svg\"]",
            "[]",
            "[\"web\"]",
        ],
    ),
    (
        "env",
        &[
            "{ A = \"b\" }",
            "{ IMAGESERVING_HOME = \"x\" }",
            "{ IMAGESERVING_A_ADDR = \"x\" }",
            "{ \"\" = \"x\" }",
            "{ \"A=B\" = \"x\" }",
            "{ A = \"\\u0000\" }",
        ],
    ),
    ("cwd", &["\"images\"", "\"/tmp\"", "\"../..\"", "\"\""]),
    ("start_secs", DURATIONS),
    ("start_timeout", DURATIONS),
    ("stable_after", DURATIONS),
    ("backoff_initial", DURATIONS),
    ("backoff_max", DURATIONS),
    ("max_restarts", COUNTS),
    ("max_window", DURATIONS),
    (
        "stop_signal",
        &[
            "\"SIGTERM\"",
            "\"int\"",
            "\"SIGSTOP\"",
            "\"SIGKILL\"",
            "\"NOPE\"",
            "1",
            "9",
            "19",
            "31",
            "32",
            "2147483648",
            "1.5",
        ],
    ),
    ("stop_timeout", DURATIONS),
    (
        "restart",
        &[
            "\"permanent\"",
            "\"on-failure\"",
            "\"Temporary\"",
            "\"never\"",
            "\"sometimes\"",
        ],
    ),
    ("success_exit_codes", &["[0, 2]", "[]", "[256]", "[-1]"]),
    ("retry_fatal_after", DURATIONS),
    ("critical", BOOLS),
    ("memory_limit", SIZES),
    ("memory_check_interval", DURATIONS),
    ("ready", CHECKS),
    ("health", CHECKS),
    ("log_max_bytes", SIZES),
    ("log_backups", COUNTS),
    ("log_stderr", BOOLS),
    ("log_to_supervisor", BOOLS),
    ("bogus", &["1"]),
];

const COMMANDS: &[&str] = &[
    "[\"@self\", \"component\", \"ps\"]",
    "[\"sleep\", \"100\"]",
    "[\"/bin/true\"]",
    "[]",
    "[\"\"]",
    "\"sleep\"",
];

/// `key = value` lines for one table: distinct keys, each mostly with a value of its type and
/// sometimes with any value of the pool.
fn table_body(
    keys: &'static [(&'static str, &'static [&'static str])],
) -> impl Strategy<Value = String> {
    let line = (
        any::<Index>(),
        any::<Index>(),
        prop::bool::weighted(0.15),
        select(CONFIG_VALUES),
    );
    vec(line, 0..6).prop_map(move |lines| {
        let mut seen = Vec::new();
        let mut body = String::new();
        for (key, value, wild, any_value) in lines {
            let (key, values) = keys[key.index(keys.len())];
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            let value = if wild {
                any_value
            } else {
                values[value.index(values.len())]
            };
            body.push_str(&format!("{key} = {value}\n"));
        }
        body
    })
}

fn component_table() -> impl Strategy<Value = String> {
    (
        prop_oneof![4 => select(&["ps", "is", "svg", "a", "b"][..]), 1 => select(COMPONENT_NAMES)],
        prop_oneof![6 => select(&COMMANDS[..3]), 1 => select(COMMANDS), 1 => Just("")],
        table_body(COMPONENT_KEYS),
    )
        .prop_map(|(name, command, body)| {
            let command = if command.is_empty() {
                String::new()
            } else {
                format!("command = {command}\n")
            };
            format!("[components.{name}]\n{command}{body}")
        })
}

/// A configuration file shaped like the schema: an optional `[supervisor]` table and a few
/// components, with keys of the schema given values mostly of their type. Many of them are
/// valid, so validation, not only TOML, gets fuzzed; the rest are refused by a specific check.
fn config_text() -> impl Strategy<Value = String> {
    (
        option::of(table_body(SUPERVISOR_KEYS)),
        vec(component_table(), 0..4),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(supervisor, components, empty_components)| {
            let mut text = String::new();
            if let Some(body) = supervisor {
                text.push_str(&format!("[supervisor]\n{body}\n"));
            }
            if empty_components {
                text.push_str("[components]\n");
            }
            text.push_str(&components.join("\n"));
            text
        })
}

/// Configurations that parse, to be mutated.
const VALID_CONFIGS: &[&str] = &[
    config::DEFAULT_CONFIG,
    "[supervisor]\nstrategy = \"one_for_all\"\n\n[components.solo]\ncommand = [\"sleep\", \"100\"]\n",
    "[components.front]\ncommand = [\"@self\", \"component\", \"ps\"]\naliases = [\"web\"]\nhost = \"0.0.0.0\"\nport = 9080\ndepends_on = [\"back\"]\nenv = { RUST_LOG = \"debug\" }\nready = { http = \"/healthz\" }\nhealth = { tcp = true, interval = \"5s\" }\nmemory_limit = \"512MiB\"\nstop_signal = \"int\"\n\n[components.back]\ncommand = [\"/bin/true\"]\nport = 9081\nrestart = \"never\"\ncritical = true\n",
];

const TOML_CHARS: &[char] = &[
    '[', ']', '{', '}', '"', '\'', '=', ',', '.', '\n', ' ', '#', '\\', '0', '9', '-', 's', 'a',
    '_', '\0', 'é',
];

fn origin() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(EMBEDDED_ORIGIN.to_owned()),
        "[a-zA-Z0-9_./ -]{1,24}\\.toml",
    ]
}

/// One home for every case: `parse` only reads its path.
fn home() -> &'static Home {
    static HOME: OnceLock<(tempfile::TempDir, Home)> = OnceLock::new();
    &HOME
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let home = Home::new(dir.path()).expect("a temporary home");
            (dir, home)
        })
        .1
}

const SELF_EXE: &str = "/opt/imageserving/bin/imageserving";

/// Parses `text`: an error names `origin` first; a configuration keeps every promise the daemon
/// relies on without checking again.
fn check_config(text: &str, origin: &str) -> Result<(), TestCaseError> {
    let config = match config::parse(text, origin, home(), &config::SelfProgram::new(SELF_EXE)) {
        Ok(config) => config,
        Err(e) => {
            prop_assert!(
                matches!(e, ConfigError::Syntax { .. } | ConfigError::Invalid { .. }),
                "{e}"
            );
            let message = e.to_string();
            prop_assert!(
                message.starts_with(&format!("{origin}: ")),
                "the error does not name {:?} first: {}",
                origin,
                message
            );
            return Ok(());
        }
    };
    prop_assert!(config.source.is_none());
    prop_assert!(!config.start_wait.is_zero());
    let components = &config.tree.components;
    prop_assert!(!components.is_empty());
    let names: Vec<&str> = components.iter().map(|c| c.name.as_str()).collect();
    for c in components {
        prop_assert!(
            imageserving_actors::spec::valid_component_name(&c.name),
            "{}",
            c.name
        );
        prop_assert_eq!(names.iter().filter(|n| **n == c.name).count(), 1);
        prop_assert!(c.command.first().is_some_and(|p| !p.is_empty()));
        prop_assert!(
            c.command[0] != config::SELF_COMMAND,
            "`@self` was not replaced"
        );
        prop_assert!(c.cwd.as_deref().is_some_and(Path::is_absolute));
        prop_assert!(c.policy.start_timeout >= c.policy.start_secs);
        prop_assert!(c.policy.backoff_max >= c.policy.backoff_initial);
        prop_assert!(!c.policy.max_window.is_zero());
        prop_assert!(
            (1..32).contains(&c.policy.stop_signal)
                && ![libc::SIGKILL, libc::SIGSTOP].contains(&c.policy.stop_signal),
            "stop_signal {}",
            c.policy.stop_signal
        );
        prop_assert!(c.env.iter().any(|(k, _)| k == config::HOME_ENV));
        prop_assert_eq!(config.resolve(&c.name), Some(c.name.as_str()));
        for d in &c.depends_on {
            prop_assert!(names.contains(&d.as_str()), "unknown dependency {}", d);
        }
    }
    let ports: Vec<u16> = components
        .iter()
        .filter_map(|c| c.probe)
        .map(|a| a.port())
        .collect();
    for p in &ports {
        prop_assert!(*p != 0);
        prop_assert_eq!(ports.iter().filter(|q| *q == p).count(), 1, "port {}", p);
    }
    for (alias, component) in &config.aliases {
        prop_assert_eq!(config.resolve(alias), Some(component.as_str()));
    }
    // The start order is every component once, each after its dependencies.
    let order = config.component_names();
    prop_assert_eq!(order.len(), names.len());
    for (i, name) in order.iter().enumerate() {
        let spec = config
            .component(name)
            .ok_or_else(|| TestCaseError::fail("unknown name"))?;
        for d in &spec.depends_on {
            prop_assert!(
                order[..i].contains(&d.as_str()),
                "{} starts before {}",
                name,
                d
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn config_parser_survives_arbitrary_text(text in any::<String>(), origin in origin()) {
        check_config(&text, &origin)?;
    }

    #[test]
    fn config_from_schema_pieces_parses_or_names_the_origin(text in config_text(), origin in origin()) {
        check_config(&text, &origin)?;
    }

    #[test]
    fn mutated_configs_parse_or_name_the_origin(
        base in select(VALID_CONFIGS),
        edits in edits(char_from(TOML_CHARS), 6),
        origin in origin(),
    ) {
        check_config(&mutate_str(base, &edits), &origin)?;
    }
}

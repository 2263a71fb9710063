//! The configuration file as written: serde types that mirror its tables, each refusing unknown
//! keys, with durations and sizes kept as text so that [`super::values`] can name the key when
//! one is wrong.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    #[serde(default)]
    pub(super) supervisor: RawSupervisor,
    /// Spanned so the components keep the order of the file.
    pub(super) components: Option<BTreeMap<String, toml::Spanned<RawComponent>>>,
}

/// `[supervisor]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSupervisor {
    pub(super) start_wait: Option<DurationText>,
    pub(super) strategy: Option<String>,
    pub(super) max_restarts: Option<u32>,
    pub(super) max_window: Option<DurationText>,
}

/// `[components.<name>]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawComponent {
    pub(super) command: Option<Vec<String>>,
    #[serde(default)]
    pub(super) aliases: Vec<String>,
    pub(super) host: Option<String>,
    pub(super) port: Option<u16>,
    pub(super) hold_socket: Option<bool>,
    pub(super) listen_backlog: Option<u32>,
    #[serde(default)]
    pub(super) depends_on: Vec<String>,
    #[serde(default)]
    pub(super) env: BTreeMap<String, String>,
    pub(super) cwd: Option<PathBuf>,
    pub(super) start_secs: Option<DurationText>,
    pub(super) start_timeout: Option<DurationText>,
    pub(super) stable_after: Option<DurationText>,
    pub(super) backoff_initial: Option<DurationText>,
    pub(super) backoff_max: Option<DurationText>,
    pub(super) max_restarts: Option<u32>,
    pub(super) max_window: Option<DurationText>,
    /// A name or a number, hence a plain value.
    pub(super) stop_signal: Option<toml::Value>,
    pub(super) stop_timeout: Option<DurationText>,
    pub(super) handover_grace: Option<DurationText>,
    pub(super) restart: Option<String>,
    pub(super) success_exit_codes: Option<Vec<i64>>,
    pub(super) retry_fatal_after: Option<DurationText>,
    #[serde(default)]
    pub(super) critical: bool,
    pub(super) memory_limit: Option<SizeText>,
    pub(super) memory_check_interval: Option<DurationText>,
    pub(super) ready: Option<RawCheck>,
    pub(super) health: Option<RawHealth>,
    pub(super) log_max_bytes: Option<SizeText>,
    pub(super) log_backups: Option<u32>,
    #[serde(default)]
    pub(super) log_stderr: bool,
    #[serde(default)]
    pub(super) log_to_supervisor: bool,
}

/// `ready = { http = "/healthz" }` as written: exactly one kind of check.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCheck {
    pub(super) http: Option<String>,
    pub(super) tcp: Option<bool>,
    pub(super) file: Option<PathBuf>,
    /// `notify = true`: the process says READY=1 (only for `ready`).
    pub(super) notify: Option<bool>,
}

/// `health = { http = "/healthz", interval = "5s" }` as written: one kind of check and its
/// timing. (Not a flattened [`RawCheck`]: serde's `flatten` disables `deny_unknown_fields`.)
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    pub(super) http: Option<String>,
    pub(super) tcp: Option<bool>,
    pub(super) file: Option<PathBuf>,
    pub(super) interval: Option<DurationText>,
    pub(super) timeout: Option<DurationText>,
    pub(super) max_failed: Option<u32>,
}

/// A duration as written, parsed later by [`duration`] so its error can name the key. Its own
/// `Deserialize` makes a wrong type say what is expected.
#[derive(Debug)]
pub(super) struct DurationText(pub(super) String);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = DurationText;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration string such as \"10s\" or \"500ms\"")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<DurationText, E> {
                Ok(DurationText(text.to_string()))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// A size as written: a number of bytes, or a string with a unit (`"512MiB"`), parsed later by
/// [`size`] so its error can name the key.
#[derive(Debug)]
pub(super) enum SizeText {
    Bytes(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for SizeText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = SizeText;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a size such as \"512MiB\" or a number of bytes")
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<SizeText, E> {
                Ok(SizeText::Bytes(n))
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<SizeText, E> {
                Ok(SizeText::Text(text.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Reads `text` into the file's shape; `origin` names it in errors.
pub(super) fn read_raw(text: &str, origin: &str) -> Result<RawFile, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Syntax {
        origin: origin.to_string(),
        message: e.to_string().trim_end().to_string(),
    })
}

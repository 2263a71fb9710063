//! The values of the configuration file that are more than a TOML type: durations, sizes,
//! signals, and the names of strategies and restart types.

use std::str::FromStr;
use std::time::Duration;

use imageserving_actors::spec::{RestartType, Strategy};

use super::raw::SizeText;
use super::{invalid, ConfigError};

pub(super) fn duration(origin: &str, key: &str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text).map_err(|e| {
        invalid(
            origin,
            key,
            format!("invalid duration {text:?}: {e} (write e.g. \"10s\", \"500ms\", \"2m\")"),
        )
    })
}

/// OTP's restart strategy called `text` (ASCII case ignored).
pub(super) fn strategy(text: &str) -> Option<Strategy> {
    [
        Strategy::OneForOne,
        Strategy::OneForAll,
        Strategy::RestForOne,
    ]
    .into_iter()
    .find(|s| s.as_str().eq_ignore_ascii_case(text))
}

/// The restart type called `text`: OTP's names, or the supervisord/systemd words `always`,
/// `on-failure` and `never` (ASCII case ignored).
pub(super) fn restart_type(text: &str) -> Option<RestartType> {
    let text = text.to_ascii_lowercase();
    match text.as_str() {
        "permanent" | "always" => Some(RestartType::Permanent),
        "transient" | "on-failure" => Some(RestartType::Transient),
        "temporary" | "never" => Some(RestartType::Temporary),
        _ => None,
    }
}

/// A size in bytes: a TOML integer, or a whole number and a unit among B, KB, KiB, MB, MiB, GB
/// and GiB (KB = 1000 bytes, KiB = 1024; case ignored; a space between them allowed).
pub(super) fn size(value: &SizeText) -> Result<u64, String> {
    let text = match value {
        SizeText::Bytes(n) => {
            return u64::try_from(*n)
                .map_err(|_| format!("{n} is not a size: it must not be negative"))
        }
        SizeText::Text(text) => text,
    };
    let bad = || {
        format!("invalid size {text:?}: write a whole number and a unit among B, KB, KiB, MB, MiB, GB and GiB, e.g. \"512MiB\"")
    };
    let trimmed = text.trim();
    let digits = trimmed.len()
        - trimmed
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .len();
    let (number, unit) = trimmed.split_at(digits);
    let unit: u64 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" => 1 << 10,
        "mb" => 1000 * 1000,
        "mib" => 1 << 20,
        "gb" => 1000 * 1000 * 1000,
        "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    let number: u64 = number.parse().map_err(|_| bad())?;
    number
        .checked_mul(unit)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

/// A signal from a name (`SIGTERM`, `TERM`, `term`) or a number. Uncatchable signals are
/// refused: the component must get a chance to stop cleanly.
pub(super) fn signal(value: &toml::Value) -> Result<i32, String> {
    use nix::sys::signal::Signal;
    let number = match value {
        toml::Value::Integer(n) => {
            i32::try_from(*n).map_err(|_| format!("signal number {n} is out of range"))?
        }
        toml::Value::String(text) => {
            let upper = text.to_ascii_uppercase();
            let full = if upper.starts_with("SIG") {
                upper
            } else {
                format!("SIG{upper}")
            };
            Signal::from_str(&full).map_err(|_| format!("unknown signal {text:?}"))? as i32
        }
        other => {
            return Err(format!(
                "expected a signal name like \"SIGTERM\" or a number, found a {}",
                other.type_str()
            ))
        }
    };
    if number == libc::SIGSTOP {
        return Err(
            "SIGSTOP cannot be caught; use a signal that asks the component to exit".into(),
        );
    }
    Ok(number)
}

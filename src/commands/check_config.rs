//! `check-config [FILE]`: validates a configuration exactly as `start` does (the home's file
//! through [`config::load`]; another file through [`config::parse`], which is what `load` runs
//! on the home's), then explains it: what would run, in which order, and how it is supervised.
//! It needs no supervisor and writes nothing.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::time::Duration;

use imageserving_actors::format;
use imageserving_actors::spec::{ComponentSpec, Health, LogSpec, Ready, RestartType, Strategy};

use crate::config::{self, Config, ConfigError, SelfProgram, HOME_ENV, LISTEN_ENV};
use crate::exit::{self, Exit};
use crate::home::Home;

pub(super) fn run(home: &Home, file: Option<&Path>) -> anyhow::Result<u8> {
    let self_program = crate::servers::args::self_program(std::env::current_exe()?);
    let config = match file {
        None => config::load(home, &self_program),
        Some(path) => load_file(path, home, &self_program),
    }
    .map_err(|e| Exit::new(exit::BAD_CONFIG, e.to_string()))?;
    let text = explain(&config, home).map_err(|e| Exit::new(exit::BAD_CONFIG, e))?;
    super::docs::print(text.as_bytes())
}

/// `path` read and validated as [`config::load`] does the home's file.
fn load_file(path: &Path, home: &Home, self_program: &SelfProgram) -> Result<Config, ConfigError> {
    let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut config = config::parse(&text, &path.display().to_string(), home, self_program)?;
    config.source = Some(path.to_path_buf());
    Ok(config)
}

/// What `config` runs: the supervisor's settings, then each component in start order. `Err`
/// only if the start order cannot be computed, which validation rules out.
fn explain(config: &Config, home: &Home) -> Result<String, String> {
    let mut out = String::new();
    match &config.source {
        Some(path) => {
            let _ = writeln!(out, "{}: valid", path.display());
        }
        None => {
            let _ = writeln!(
                out,
                "{} does not exist: `start` uses the embedded default configuration, which is valid",
                home.conf_file().display()
            );
        }
    }
    let tree = &config.tree;
    let _ = write!(
        out,
        "Server Supervisor: home {}; `start` waits up to {}; strategy {}",
        home.root().display(),
        duration(config.start_wait),
        tree.strategy.as_str()
    );
    if tree.strategy != Strategy::OneForOne {
        let _ = write!(
            out,
            ", escalation after more than {} group restarts within {}",
            tree.max_restarts,
            duration(tree.max_window)
        );
    }
    let order = tree
        .start_order()
        .map_err(|e| format!("{}: {e}", config.origin()))?;
    let _ = writeln!(
        out,
        "\n\n{} component{} in start order (stop order is the reverse):",
        order.len(),
        if order.len() == 1 { "" } else { "s" }
    );
    for (i, c) in order.iter().enumerate() {
        let aliases: Vec<&str> = config
            .aliases
            .iter()
            .filter(|(_, owner)| *owner == c.name)
            .map(|(alias, _)| alias.as_str())
            .collect();
        let _ = write!(out, "\n{}. {}", i + 1, c.name);
        if !aliases.is_empty() {
            let _ = write!(out, " (alias {})", aliases.join(", "));
        }
        out.push('\n');
        for (key, value) in component(c, home) {
            let _ = writeln!(out, "   {key:<12}{value}");
        }
    }
    Ok(out)
}

/// The lines explaining one component: `(what, how)`.
fn component(c: &ComponentSpec, home: &Home) -> Vec<(&'static str, String)> {
    let p = &c.policy;
    let mut lines = vec![("command", command_line(&c.command))];
    if let Some(cwd) = &c.cwd {
        lines.push(("directory", cwd.display().to_string()));
    }
    let env: Vec<String> = c
        .env
        .iter()
        .filter(|(var, _)| var != HOME_ENV && var != LISTEN_ENV)
        .map(|(var, value)| format!("{var}={}", quote(value)))
        .collect();
    if !env.is_empty() {
        lines.push(("environment", env.join(" ")));
    }
    lines.push((
        "port",
        match (&c.socket, c.probe) {
            (Some(socket), _) => format!(
                "{} (socket held by the supervisor, backlog {})",
                socket.addr, socket.backlog
            ),
            (None, Some(addr)) => addr.to_string(),
            (None, None) => "none".into(),
        },
    ));
    lines.push((
        "depends on",
        if c.depends_on.is_empty() {
            "nothing".into()
        } else {
            c.depends_on.join(", ")
        },
    ));
    let mut restart = match p.restart {
        RestartType::Permanent => "permanent (restarted after every exit)".to_string(),
        RestartType::Transient => format!(
            "transient (restarted unless it exits with {} or by its stop signal)",
            p.success_exit_codes
                .iter()
                .map(i32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        RestartType::Temporary => "temporary (never restarted)".to_string(),
    };
    let _ = write!(
        restart,
        "; FATAL after more than {} failures within {}",
        p.max_restarts,
        duration(p.max_window)
    );
    if let Some(retry) = p.retry_fatal_after {
        let _ = write!(restart, ", started again {} after", duration(retry));
    }
    lines.push(("restart", restart));
    lines.push((
        "backoff",
        format!(
            "at once, then from {} doubling up to {}; the count resets after {} running",
            duration(p.backoff_initial),
            duration(p.backoff_max),
            duration(p.stable_after)
        ),
    ));
    if c.critical {
        lines.push((
            "critical",
            "yes: when it goes FATAL, the supervisor stops everything and exits 1".into(),
        ));
    }
    lines.push((
        "start",
        format!(
            "running once up {} and ready; a failure if not within {}",
            duration(p.start_secs),
            duration(p.start_timeout)
        ),
    ));
    lines.push(("ready", check(&c.ready, c)));
    lines.push((
        "health",
        c.health.as_ref().map_or("none".into(), |h| health(h, c)),
    ));
    lines.push((
        "stop",
        format!(
            "{}, then SIGKILL after {}",
            signal_name(p.stop_signal),
            duration(p.stop_timeout)
        ),
    ));
    if c.hands_over() {
        lines.push((
            "handover",
            format!(
                "`restart` starts the new process beside the old one; the old one drains once the new one is ready (SIGKILL after {})",
                duration(p.handover_grace)
            ),
        ));
    }
    if let Some(limit) = c.memory_limit {
        lines.push((
            "memory",
            format!(
                "restarted above {} (its whole process tree), checked every {}",
                format::bytes(limit),
                duration(c.memory_check_interval)
            ),
        ));
    }
    lines.push(("log", log(&c.name, &c.log, home)));
    lines
}

/// A readiness or liveness check of `c`.
fn check(ready: &Ready, c: &ComponentSpec) -> String {
    match (ready, c.probe) {
        (Ready::Port, Some(addr)) => format!("TCP connection to {addr}"),
        (Ready::Port, None) => format!(
            "none (no port): running once up {}",
            duration(c.policy.start_secs)
        ),
        (Ready::Http(path), Some(addr)) => format!("GET http://{addr}{path} answers 2xx"),
        // Validation refuses an http check without a port.
        (Ready::Http(path), None) => format!("GET {path} answers 2xx"),
        (Ready::File(path), _) => format!("{} exists", path.display()),
        (Ready::Notify, _) => "its main process says READY=1 on NOTIFY_SOCKET".to_string(),
    }
}

fn health(h: &Health, c: &ComponentSpec) -> String {
    format!(
        "{}, every {} within {}; restarted after {} failures in a row",
        check(&h.check, c),
        duration(h.interval),
        duration(h.timeout),
        h.max_failed
    )
}

/// Where the output of component `name` goes.
fn log(name: &str, log: &LogSpec, home: &Home) -> String {
    if log.to_supervisor {
        return format!(
            "the Server Supervisor's standard error, each line prefixed `{name} | ` (not rotated)"
        );
    }
    let shown = |p: &Path| {
        p.strip_prefix(home.root())
            .unwrap_or(p)
            .display()
            .to_string()
    };
    let files = match (&log.stdout, &log.stderr) {
        (None, None) => return "discarded".into(),
        (Some(out), None) => shown(out),
        (Some(out), Some(err)) if out == err => shown(out),
        (Some(out), Some(err)) => format!(
            "{} (standard output), {} (standard error)",
            shown(out),
            shown(err)
        ),
        (None, Some(err)) => format!("{} (standard error only)", shown(err)),
    };
    let kept = match log.backups {
        0 => "replaced when full (no rotated file kept)".to_string(),
        1 => format!(
            "rotated at {}, 1 rotated file kept",
            format::bytes(log.max_bytes)
        ),
        n => format!(
            "rotated at {}, {n} rotated files kept",
            format::bytes(log.max_bytes)
        ),
    };
    format!("{files}; {kept}")
}

/// A duration as the configuration writes it: `100ms`, `30s`, `1m 30s`.
fn duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// `SIGTERM`, or the number of a signal without a name here.
fn signal_name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal).map_or(signal.to_string(), |s| s.as_str().into())
}

/// The command as a shell would take it.
fn command_line(command: &[String]) -> String {
    command
        .iter()
        .map(|arg| quote(arg))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `arg` in single quotes when a shell would split or expand it.
fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_configuration_is_explained_in_start_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = Home::new(dir.path()).expect("home");
        let exe = SelfProgram::new("/opt/is bin/imageserving");
        let config = config::load(&home, &exe).expect("the embedded default");
        let text = explain(&config, &home).expect("explained");
        assert!(text.contains("embedded default"), "{text}");
        let at = |name: &str| text.find(&format!(". {name} (alias")).expect(name);
        assert!(at("is") < at("svg") && at("svg") < at("ps"), "{text}");
        assert!(
            text.contains("command     '/opt/is bin/imageserving' component ps"),
            "{text}"
        );
        assert!(text.contains("depends on  is, svg"), "{text}");
        assert!(text.contains("SIGTERM, then SIGKILL after 10s"), "{text}");
        assert!(text.contains("logs/is.log; rotated at 50.0 MiB"), "{text}");
        // Creating nothing in the home.
        assert_eq!(fs::read_dir(dir.path()).expect("home").count(), 0);
    }

    #[test]
    fn quoting_is_only_for_what_a_shell_would_change() {
        assert_eq!(quote("/usr/bin/x"), "/usr/bin/x");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
        assert_eq!(signal_name(libc::SIGINT), "SIGINT");
    }
}

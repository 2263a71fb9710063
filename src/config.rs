//! The validated configuration the daemon runs on, read from `conf/imageserving.toml` in the
//! home, or the embedded [`DEFAULT_CONFIG`] when that file is absent.
//!
//! Parsing happens in two steps: serde reads the TOML into private `Raw*` types that mirror the
//! file (every table with `deny_unknown_fields`), then [`parse`] turns them into a
//! [`TreeSpec`] for the actors crate, checked by [`TreeSpec::validate`]. Every error names the
//! file (or "embedded default") and the key, so a user can find the line to fix.
//!
//! Parsing is pure: the text, the home and what `@self` stands for ([`SelfProgram`], which the
//! caller resolves) give the configuration. Nothing here looks at which programs are installed;
//! only [`load`] reads a file, the home's configuration.
//! `docs/configuration.md` documents every key: `tests/docs/` checks its key tables and
//! defaults against this parser, and a unit test keeps it in step with [`DEFAULT_CONFIG`].

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use imageserving_actors::process::{COMPONENT_ENV, TREE_ENV};
use imageserving_actors::spec::{
    valid_component_name, ComponentSpec, Health, LogSpec, Ready, RestartPolicy, RestartType,
    SpecError, Strategy, TreeSpec,
};
use serde::Deserialize;

use crate::home::Home;

/// The configuration used when the home has no `conf/imageserving.toml`: the three components
/// of the original on their documented ports, the front end started after its back ends.
pub const DEFAULT_CONFIG: &str = r#"# The embedded default configuration of imageserving.
# Copy it to conf/imageserving.toml in the home to change it.

[supervisor]
start_wait = "60s"

# Platform Server: the public HTTP front end.
[components.ps]
command = ["@self", "component", "ps"]
aliases = ["platform-server"]
port = 8080
depends_on = ["is", "svg"]

# Image Server: decodes, processes and encodes images for ps.
[components.is]
command = ["@self", "component", "is"]
aliases = ["image-server"]
port = 27345

# SVG server: rasterises SVG sources for is.
[components.svg]
command = ["@self", "component", "svg"]
aliases = ["svg-server"]
port = 27346
"#;

/// What a leading `@self` in a component's `command` stands for, as the caller found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelfProgram {
    /// This program (`imageserving`), which `@self` names.
    pub exe: PathBuf,
    /// The component servers' own program (`imageserving-server`) when it is installed beside
    /// `exe`: `@self component NAME` then runs it directly (one exec instead of two, and the
    /// CLI, which maps no image code, is not in between).
    pub server_exe: Option<PathBuf>,
}

impl SelfProgram {
    /// `@self` is `exe`, and `@self component NAME` runs `exe component NAME`.
    pub fn new(exe: impl Into<PathBuf>) -> Self {
        SelfProgram {
            exe: exe.into(),
            server_exe: None,
        }
    }
}

/// What [`Config::source`] is called in messages when it is `None`.
pub const EMBEDDED_ORIGIN: &str = "embedded default";

/// The leading `command` element that stands for this `imageserving` binary.
pub const SELF_COMMAND: &str = "@self";
/// The name no component may have (nor an alias): the Server Supervisor's, whose log is
/// `logs/supervisor.log` and which `imageserving logs supervisor` shows.
pub const RESERVED_NAME: &str = "supervisor";

/// The home, exported to every component.
pub const HOME_ENV: &str = "IMAGESERVING_HOME";
/// The address a component with a `port` should listen on, exported to it.
pub const LISTEN_ENV: &str = "IMAGESERVING_LISTEN";

const DEFAULT_START_WAIT: Duration = Duration::from_secs(60);
const DEFAULT_HOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_HEALTH_MAX_FAILED: u32 = 3;

/// The configuration the daemon runs on.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from; `None` for the embedded default.
    pub source: Option<PathBuf>,
    /// How long `start` and `restart` wait for the components to settle.
    pub start_wait: Duration,
    /// The validated supervision tree.
    pub tree: TreeSpec,
    /// `(alias, component)` pairs, in configuration order.
    pub aliases: Vec<(String, String)>,
}

/// Why the configuration cannot be used. Each message names the file and, when it can, the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but cannot be read.
    #[error("cannot read configuration `{}`: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The text is not TOML, or does not fit the schema (unknown key, wrong type); toml's
    /// message gives the line and column.
    #[error("{origin}: {message}")]
    Syntax {
        /// The file, or "embedded default".
        origin: String,
        /// toml's message.
        message: String,
    },
    /// A value the schema allows but the daemon cannot run.
    #[error("{origin}: {key}: {message}")]
    Invalid {
        /// The file, or "embedded default".
        origin: String,
        /// The dotted key, e.g. `components.ps.stop_timeout`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

impl Config {
    /// The component called `name_or_alias` (a name or an alias, ASCII case ignored).
    pub fn resolve(&self, name_or_alias: &str) -> Option<&str> {
        if let Some(c) = self
            .tree
            .components
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name_or_alias))
        {
            return Some(&c.name);
        }
        self.aliases
            .iter()
            .find(|(alias, _)| alias.eq_ignore_ascii_case(name_or_alias))
            .map(|(_, component)| component.as_str())
    }

    /// The component names in start order (dependencies first, then configuration order).
    pub fn component_names(&self) -> Vec<&str> {
        match self.tree.start_order() {
            Ok(order) => order.into_iter().map(|c| c.name.as_str()).collect(),
            // Unreachable for a validated tree; configuration order is the honest fallback.
            Err(_) => self
                .tree
                .components
                .iter()
                .map(|c| c.name.as_str())
                .collect(),
        }
    }

    /// The spec of component `name` (a name, not an alias).
    pub fn component(&self, name: &str) -> Option<&ComponentSpec> {
        self.tree.components.iter().find(|c| c.name == name)
    }

    /// Where this configuration came from, as used in messages.
    pub fn origin(&self) -> String {
        match &self.source {
            Some(path) => path.display().to_string(),
            None => EMBEDDED_ORIGIN.to_string(),
        }
    }
}

/// Reads `home`'s `conf/imageserving.toml`, or the embedded default when it does not exist.
/// `self_program` replaces a leading `@self` in commands.
pub fn load(home: &Home, self_program: &SelfProgram) -> Result<Config, ConfigError> {
    let path = home.conf_file();
    match fs::read_to_string(&path) {
        Ok(text) => {
            let mut config = parse(&text, &path.display().to_string(), home, self_program)?;
            config.source = Some(path);
            Ok(config)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            parse(DEFAULT_CONFIG, EMBEDDED_ORIGIN, home, self_program)
        }
        Err(source) => Err(ConfigError::Read { path, source }),
    }
}

/// Parses and validates configuration `text`; `origin` names it in errors. The result's
/// `source` is `None`: [`load`] fills it in for a file. `home` places the logs, `cwd` and the
/// file checks; `self_program` replaces a leading `@self` in commands.
pub fn parse(
    text: &str,
    origin: &str,
    home: &Home,
    self_program: &SelfProgram,
) -> Result<Config, ConfigError> {
    let raw = read_raw(text, origin)?;
    let start_wait = match &raw.supervisor.start_wait {
        None => DEFAULT_START_WAIT,
        Some(DurationText(text)) => {
            let wait = duration(origin, "supervisor.start_wait", text)?;
            if wait.is_zero() {
                return Err(invalid(
                    origin,
                    "supervisor.start_wait",
                    "must be longer than 0",
                ));
            }
            wait
        }
    };
    let components = match raw.components {
        Some(components) => components,
        // No [components] table: the default set, with the file's [supervisor] settings.
        None => read_raw(DEFAULT_CONFIG, EMBEDDED_ORIGIN)?
            .components
            .unwrap_or_default(),
    };
    if components.is_empty() {
        return Err(invalid(
            origin,
            "components",
            "defines no component; remove the table to use the default set",
        ));
    }
    // The map is sorted by name; the order of the file is the tie-break of the start order.
    let mut components: Vec<(String, toml::Spanned<RawComponent>)> =
        components.into_iter().collect();
    components.sort_by_key(|(_, c)| c.span().start);
    let components: Vec<(String, RawComponent)> = components
        .into_iter()
        .map(|(name, c)| (name, c.into_inner()))
        .collect();

    let builder = Builder {
        origin,
        home,
        self_program,
    };
    let mut built = Vec::with_capacity(components.len());
    for (name, raw) in &components {
        built.push(builder.component(name, raw)?);
    }
    let aliases = builder.aliases(&components)?;
    builder.add_env(&components, &mut built)?;

    let mut tree = TreeSpec::new(home.tree_id(), built);
    supervisor(origin, &raw.supervisor, &mut tree)?;
    tree.validate()
        .map_err(|e| spec_error(origin, e, &aliases))?;
    Ok(Config {
        source: None,
        start_wait,
        tree,
        aliases,
    })
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    supervisor: RawSupervisor,
    /// Spanned so the components keep the order of the file.
    components: Option<BTreeMap<String, toml::Spanned<RawComponent>>>,
}

/// `[supervisor]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSupervisor {
    start_wait: Option<DurationText>,
    strategy: Option<String>,
    max_restarts: Option<u32>,
    max_window: Option<DurationText>,
}

/// `[components.<name>]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    command: Option<Vec<String>>,
    #[serde(default)]
    aliases: Vec<String>,
    host: Option<String>,
    port: Option<u16>,
    #[serde(default)]
    depends_on: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<PathBuf>,
    start_secs: Option<DurationText>,
    start_timeout: Option<DurationText>,
    stable_after: Option<DurationText>,
    backoff_initial: Option<DurationText>,
    backoff_max: Option<DurationText>,
    max_restarts: Option<u32>,
    max_window: Option<DurationText>,
    /// A name or a number, hence a plain value.
    stop_signal: Option<toml::Value>,
    stop_timeout: Option<DurationText>,
    restart: Option<String>,
    success_exit_codes: Option<Vec<i64>>,
    retry_fatal_after: Option<DurationText>,
    #[serde(default)]
    critical: bool,
    memory_limit: Option<SizeText>,
    memory_check_interval: Option<DurationText>,
    ready: Option<RawCheck>,
    health: Option<RawHealth>,
    log_max_bytes: Option<SizeText>,
    log_backups: Option<u32>,
    #[serde(default)]
    log_stderr: bool,
    #[serde(default)]
    log_to_supervisor: bool,
}

/// `ready = { http = "/healthz" }` as written: exactly one kind of check.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    http: Option<String>,
    tcp: Option<bool>,
    file: Option<PathBuf>,
}

/// `health = { http = "/healthz", interval = "5s" }` as written: one kind of check and its
/// timing. (Not a flattened [`RawCheck`]: serde's `flatten` disables `deny_unknown_fields`.)
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    http: Option<String>,
    tcp: Option<bool>,
    file: Option<PathBuf>,
    interval: Option<DurationText>,
    timeout: Option<DurationText>,
    max_failed: Option<u32>,
}

/// A duration as written, parsed later by [`duration`] so its error can name the key. Its own
/// `Deserialize` makes a wrong type say what is expected.
#[derive(Debug)]
struct DurationText(String);

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
enum SizeText {
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

/// Applies `[supervisor]`'s strategy and group-restart budget to `tree`.
fn supervisor(origin: &str, raw: &RawSupervisor, tree: &mut TreeSpec) -> Result<(), ConfigError> {
    if let Some(text) = &raw.strategy {
        tree.strategy = strategy(text).ok_or_else(|| {
            invalid(
                origin,
                "supervisor.strategy",
                format!("unknown strategy {text:?}: use \"one_for_one\", \"one_for_all\" or \"rest_for_one\""),
            )
        })?;
    }
    if let Some(max) = raw.max_restarts {
        tree.max_restarts = max;
    }
    if let Some(DurationText(text)) = &raw.max_window {
        tree.max_window = duration(origin, "supervisor.max_window", text)?;
    }
    Ok(())
}

fn read_raw(text: &str, origin: &str) -> Result<RawFile, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Syntax {
        origin: origin.to_string(),
        message: e.to_string().trim_end().to_string(),
    })
}

/// Turns raw components into specs; holds what every step needs.
struct Builder<'a> {
    origin: &'a str,
    home: &'a Home,
    self_program: &'a SelfProgram,
}

impl Builder<'_> {
    fn err(&self, name: &str, field: &str, message: impl Into<String>) -> ConfigError {
        invalid(self.origin, &key(name, field), message)
    }

    /// Everything but the environment, which needs all components' addresses.
    fn component(&self, name: &str, raw: &RawComponent) -> Result<ComponentSpec, ConfigError> {
        if !valid_component_name(name) {
            return Err(invalid(
                self.origin,
                &key(name, ""),
                format!("`{name}` is not a valid component name: use 1-32 characters among a-z, 0-9, `-` and `_`, starting with a letter"),
            ));
        }
        if name == RESERVED_NAME {
            return Err(invalid(
                self.origin,
                &key(name, ""),
                format!("`{name}` is reserved: it names the Server Supervisor (its log is logs/supervisor.log, `imageserving logs supervisor` shows it); choose another name"),
            ));
        }
        let command = self.command(name, raw.command.as_deref())?;
        let probe = match (raw.port, &raw.host) {
            (None, None) => None,
            (None, Some(_)) => return Err(self.err(name, "host", "is set but `port` is not")),
            (Some(0), _) => {
                return Err(self.err(
                    name,
                    "port",
                    "must not be 0: the supervisor probes a fixed port",
                ))
            }
            (Some(port), host) => Some(SocketAddr::new(self.host(name, host.as_deref())?, port)),
        };
        let cwd = match &raw.cwd {
            None => self.home.root().to_path_buf(),
            Some(dir) => self.home.root().join(dir),
        };
        let mut spec = ComponentSpec::new(name, command);
        spec.cwd = Some(cwd);
        spec.probe = probe;
        spec.depends_on = raw.depends_on.clone();
        if let Some(ready) = &raw.ready {
            spec.ready = self.check(
                name,
                "ready",
                ready.http.as_deref(),
                ready.tcp,
                ready.file.as_deref(),
                probe.is_some(),
            )?;
        }
        if let Some(health) = &raw.health {
            spec.health = Some(self.health(name, health, probe.is_some())?);
        }
        spec.log = self.log(name, raw)?;
        spec.policy = self.policy(name, raw)?;
        spec.critical = raw.critical;
        if spec.critical && spec.policy.retry_fatal_after.is_some() {
            // A critical FATAL escalates at once: the retry would never come.
            return Err(self.err(
                name,
                "retry_fatal_after",
                "cannot be used with `critical = true`: a critical component escalates as soon as it goes FATAL",
            ));
        }
        if let Some(limit) = &raw.memory_limit {
            spec.memory_limit = Some(self.size(name, "memory_limit", limit)?);
        }
        if let Some(DurationText(text)) = &raw.memory_check_interval {
            spec.memory_check_interval = self.positive(name, "memory_check_interval", text)?;
        }
        Ok(spec)
    }

    /// A duration that must be longer than 0.
    fn positive(&self, name: &str, field: &str, text: &str) -> Result<Duration, ConfigError> {
        let d = duration(self.origin, &key(name, field), text)?;
        if d.is_zero() {
            return Err(self.err(name, field, "must be longer than 0"));
        }
        Ok(d)
    }

    fn size(&self, name: &str, field: &str, value: &SizeText) -> Result<u64, ConfigError> {
        size(value).map_err(|m| self.err(name, field, m))
    }

    /// One check of `ready` or `health` (`field`): exactly one of `http`, `tcp` and `file`.
    /// A relative file is relative to the home, like `cwd`.
    fn check(
        &self,
        name: &str,
        field: &str,
        http: Option<&str>,
        tcp: Option<bool>,
        file: Option<&Path>,
        has_port: bool,
    ) -> Result<Ready, ConfigError> {
        let kinds =
            usize::from(http.is_some()) + usize::from(tcp.is_some()) + usize::from(file.is_some());
        if kinds != 1 {
            return Err(self.err(
                name,
                field,
                "give exactly one of `http`, `tcp` and `file`, e.g. { http = \"/healthz\" }",
            ));
        }
        let needs_port = |what: &str| {
            if has_port {
                Ok(())
            } else {
                Err(self.err(
                    name,
                    field,
                    format!("{what} check needs the component's `port`"),
                ))
            }
        };
        if let Some(path) = http {
            if !path.starts_with('/')
                || path.contains(|c: char| c.is_whitespace() || c.is_control())
            {
                return Err(self.err(
                    name,
                    &format!("{field}.http"),
                    format!("{path:?} is not a request path: write e.g. \"/healthz\""),
                ));
            }
            needs_port("an `http`")?;
            return Ok(Ready::Http(path.to_string()));
        }
        if let Some(path) = file {
            if path.as_os_str().is_empty() {
                return Err(self.err(name, &format!("{field}.file"), "must not be empty"));
            }
            return Ok(Ready::File(self.home.root().join(path)));
        }
        if tcp == Some(false) {
            return Err(self.err(
                name,
                &format!("{field}.tcp"),
                "can only be `true`; use `http` or `file` for another kind of check",
            ));
        }
        needs_port("a `tcp`")?;
        Ok(Ready::Port)
    }

    fn health(&self, name: &str, raw: &RawHealth, has_port: bool) -> Result<Health, ConfigError> {
        let check = self.check(
            name,
            "health",
            raw.http.as_deref(),
            raw.tcp,
            raw.file.as_deref(),
            has_port,
        )?;
        let timing = |field: &str, value: &Option<DurationText>, default: Duration| match value {
            None => Ok(default),
            Some(DurationText(text)) => self.positive(name, &format!("health.{field}"), text),
        };
        let max_failed = raw.max_failed.unwrap_or(DEFAULT_HEALTH_MAX_FAILED);
        if max_failed == 0 {
            return Err(self.err(name, "health.max_failed", "must be above 0"));
        }
        Ok(Health {
            check,
            interval: timing("interval", &raw.interval, DEFAULT_HEALTH_INTERVAL)?,
            timeout: timing("timeout", &raw.timeout, DEFAULT_HEALTH_TIMEOUT)?,
            max_failed,
        })
    }

    /// `logs/<name>.log` for both streams, or standard error apart in `logs/<name>.stderr.log`,
    /// or the supervisor's standard error instead of files.
    fn log(&self, name: &str, raw: &RawComponent) -> Result<LogSpec, ConfigError> {
        let mut log = LogSpec::discard();
        if raw.log_to_supervisor {
            if raw.log_stderr {
                return Err(self.err(name, "log_stderr", "cannot be used with `log_to_supervisor = true`, which sends both streams to the supervisor's standard error"));
            }
            log.to_supervisor = true;
        } else {
            log.stdout = Some(self.home.component_log(name));
            if raw.log_stderr {
                log.stderr = Some(self.home.logs_dir().join(format!("{name}.stderr.log")));
            }
        }
        if let Some(max) = &raw.log_max_bytes {
            log.max_bytes = self.size(name, "log_max_bytes", max)?;
        }
        if let Some(backups) = raw.log_backups {
            log.backups = backups;
        }
        Ok(log)
    }

    fn command(&self, name: &str, command: Option<&[String]>) -> Result<Vec<String>, ConfigError> {
        let Some(command) = command else {
            return Err(self.err(name, "command", "is missing: give the program and its arguments, e.g. [\"@self\", \"component\", \"ps\"]"));
        };
        let Some(program) = command.first() else {
            return Err(self.err(name, "command", "must not be empty"));
        };
        if program.is_empty() {
            return Err(self.err(name, "command", "names an empty program"));
        }
        let mut command = command.to_vec();
        if program == SELF_COMMAND {
            let exe = &self.self_program.exe;
            let Some(exe_text) = exe.to_str() else {
                return Err(self.err(
                    name,
                    "command",
                    format!(
                        "cannot use `@self`: this program's path `{}` is not UTF-8",
                        exe.display()
                    ),
                ));
            };
            command[0] = exe_text.to_string();
            // `@self component NAME`: the servers' own program, when there is one.
            if command.get(1).map(String::as_str) == Some("component") {
                if let Some(server) = self
                    .self_program
                    .server_exe
                    .as_deref()
                    .and_then(Path::to_str)
                {
                    command.splice(0..2, [server.to_string()]);
                }
            }
        }
        Ok(command)
    }

    fn host(&self, name: &str, host: Option<&str>) -> Result<IpAddr, ConfigError> {
        match host {
            None => Ok(DEFAULT_HOST),
            Some("localhost") => Ok(DEFAULT_HOST),
            Some(text) => IpAddr::from_str(text).map_err(|_| {
                self.err(
                    name,
                    "host",
                    format!("{text:?} is not an IP address (or \"localhost\")"),
                )
            }),
        }
    }

    fn policy(&self, name: &str, raw: &RawComponent) -> Result<RestartPolicy, ConfigError> {
        let d = RestartPolicy::default();
        let dur = |field: &str, value: &Option<DurationText>, default: Duration| match value {
            None => Ok(default),
            Some(DurationText(text)) => duration(self.origin, &key(name, field), text),
        };
        let stop_signal = match &raw.stop_signal {
            None => d.stop_signal,
            Some(value) => signal(value).map_err(|m| self.err(name, "stop_signal", m))?,
        };
        let restart = match &raw.restart {
            None => d.restart,
            Some(text) => restart_type(text).ok_or_else(|| {
                self.err(name, "restart", format!("unknown restart type {text:?}: use \"permanent\" (or \"always\"), \"transient\" (or \"on-failure\") or \"temporary\" (or \"never\")"))
            })?,
        };
        let success_exit_codes = match &raw.success_exit_codes {
            None => d.success_exit_codes.clone(),
            Some(codes) => codes
                .iter()
                .map(|&code| {
                    u8::try_from(code).map(i32::from).map_err(|_| {
                        self.err(
                            name,
                            "success_exit_codes",
                            format!("{code} is not an exit code: exit codes are 0-255"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let retry_fatal_after = match &raw.retry_fatal_after {
            None => d.retry_fatal_after,
            Some(DurationText(text)) => Some(self.positive(name, "retry_fatal_after", text)?),
        };
        Ok(RestartPolicy {
            start_secs: dur("start_secs", &raw.start_secs, d.start_secs)?,
            start_timeout: dur("start_timeout", &raw.start_timeout, d.start_timeout)?,
            stable_after: dur("stable_after", &raw.stable_after, d.stable_after)?,
            backoff_initial: dur("backoff_initial", &raw.backoff_initial, d.backoff_initial)?,
            backoff_max: dur("backoff_max", &raw.backoff_max, d.backoff_max)?,
            max_restarts: raw.max_restarts.unwrap_or(d.max_restarts),
            max_window: dur("max_window", &raw.max_window, d.max_window)?,
            stop_signal,
            stop_timeout: dur("stop_timeout", &raw.stop_timeout, d.stop_timeout)?,
            restart,
            success_exit_codes,
            retry_fatal_after,
        })
    }

    /// `(alias, component)` pairs; an alias must be a valid name, unique, and no component's name.
    fn aliases(
        &self,
        components: &[(String, RawComponent)],
    ) -> Result<Vec<(String, String)>, ConfigError> {
        let mut owner: HashMap<&str, &str> = HashMap::new();
        let mut aliases = Vec::new();
        for (name, raw) in components {
            for alias in &raw.aliases {
                if !valid_component_name(alias) {
                    return Err(self.err(name, "aliases", format!("`{alias}` is not a valid alias: use 1-32 characters among a-z, 0-9, `-` and `_`, starting with a letter")));
                }
                if alias == RESERVED_NAME {
                    return Err(self.err(
                        name,
                        "aliases",
                        format!("`{alias}` is reserved: it names the Server Supervisor"),
                    ));
                }
                if components.iter().any(|(n, _)| n == alias) {
                    return Err(self.err(
                        name,
                        "aliases",
                        format!("`{alias}` is the name of a component"),
                    ));
                }
                if let Some(other) = owner.insert(alias, name) {
                    return Err(self.err(
                        name,
                        "aliases",
                        format!("`{alias}` is already an alias of `{other}`"),
                    ));
                }
                aliases.push((alias.clone(), name.clone()));
            }
        }
        Ok(aliases)
    }

    /// The user's `env` plus what the supervisor exports: the home, the component's own
    /// listening address, and every component's address.
    fn add_env(
        &self,
        components: &[(String, RawComponent)],
        built: &mut [ComponentSpec],
    ) -> Result<(), ConfigError> {
        let mut addrs: Vec<(String, String)> = Vec::new();
        let mut owners: HashMap<String, String> = HashMap::new();
        for spec in built.iter() {
            let Some(probe) = spec.probe else { continue };
            let var = addr_env(&spec.name);
            if let Some(other) = owners.insert(var.clone(), spec.name.clone()) {
                return Err(self.err(&spec.name, "", format!("its address variable {var} is also that of component `{other}`; rename one of them")));
            }
            addrs.push((var, loopback_if_unspecified(probe).to_string()));
        }
        let shared: Arc<[(String, String)]> = Arc::from(addrs);
        let home = self.home.tree_id();
        for ((name, raw), spec) in components.iter().zip(built.iter_mut()) {
            let mut env = Vec::new();
            for (var, value) in &raw.env {
                let field = format!("env.{var}");
                if var.is_empty() || var.contains(['=', '\0']) {
                    return Err(self.err(name, &field, "is not a valid variable name"));
                }
                if value.contains('\0') {
                    return Err(self.err(name, &field, "must not contain a NUL character"));
                }
                let reserved = [HOME_ENV, LISTEN_ENV, TREE_ENV, COMPONENT_ENV]
                    .contains(&var.as_str())
                    || owners.contains_key(var);
                if reserved {
                    return Err(self.err(
                        name,
                        &field,
                        "is set by the supervisor and cannot be overridden",
                    ));
                }
                env.push((var.clone(), value.clone()));
            }
            env.push((HOME_ENV.to_string(), home.clone()));
            if let Some(listen) = spec.probe {
                env.push((LISTEN_ENV.to_string(), listen.to_string()));
            }
            spec.env = env;
            spec.shared_env = Arc::clone(&shared);
        }
        Ok(())
    }
}

/// `IMAGESERVING_<NAME>_ADDR` for component `name`.
pub fn addr_env(name: &str) -> String {
    format!(
        "IMAGESERVING_{}_ADDR",
        name.to_ascii_uppercase().replace('-', "_")
    )
}

/// The address to connect to for one a server listens on: a wildcard listener is reached on
/// the loopback address of its family.
fn loopback_if_unspecified(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

/// `components.<name>.<field>`, quoting a name that is not a bare TOML key.
fn key(name: &str, field: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    let name = if bare {
        name.to_string()
    } else {
        format!("{name:?}")
    };
    if field.is_empty() {
        format!("components.{name}")
    } else {
        format!("components.{name}.{field}")
    }
}

fn invalid(origin: &str, key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        origin: origin.to_string(),
        key: key.to_string(),
        message: message.into(),
    }
}

fn duration(origin: &str, key: &str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text).map_err(|e| {
        invalid(
            origin,
            key,
            format!("invalid duration {text:?}: {e} (write e.g. \"10s\", \"500ms\", \"2m\")"),
        )
    })
}

/// OTP's restart strategy called `text` (ASCII case ignored).
fn strategy(text: &str) -> Option<Strategy> {
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
fn restart_type(text: &str) -> Option<RestartType> {
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
fn size(value: &SizeText) -> Result<u64, String> {
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
fn signal(value: &toml::Value) -> Result<i32, String> {
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

/// Restates a [`SpecError`] in terms of the configuration file's keys.
fn spec_error(origin: &str, e: SpecError, aliases: &[(String, String)]) -> ConfigError {
    let (key, message) = match e {
        SpecError::BadTree { key, reason } => (format!("supervisor.{key}"), reason.to_string()),
        SpecError::DuplicateName(name) => (key(&name, ""), "is defined twice".to_string()),
        SpecError::InvalidName(name) => (
            key(&name, ""),
            format!("`{name}` is not a valid component name"),
        ),
        SpecError::EmptyCommand(name) => (key(&name, "command"), "must name a program".to_string()),
        SpecError::UnknownDependency {
            component,
            dependency,
        } => {
            let hint = match aliases.iter().find(|(a, _)| *a == dependency) {
                Some((_, name)) => {
                    format!(" (`{dependency}` is an alias of `{name}`; use the name)")
                }
                None => String::new(),
            };
            (
                key(&component, "depends_on"),
                format!("unknown component `{dependency}`{hint}"),
            )
        }
        SpecError::DependencyCycle(cycle) => {
            let first = cycle.first().cloned().unwrap_or_default();
            (
                key(&first, "depends_on"),
                format!("dependency cycle: {}", cycle.join(" -> ")),
            )
        }
        SpecError::DuplicatePort(first, second, port) => (
            key(&second, "port"),
            format!("port {port} is already used by component `{first}`"),
        ),
        SpecError::BadPolicy {
            component,
            key: field,
            reason,
        } => (key(&component, field), reason.to_string()),
    };
    invalid(origin, &key, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXE: &str = "/opt/imageserving/bin/imageserving";
    const SERVER_EXE: &str = "/opt/imageserving/bin/imageserving-server";

    fn self_program() -> SelfProgram {
        SelfProgram::new(EXE)
    }

    fn home() -> Home {
        Home::new("/nonexistent-imageserving/home").unwrap()
    }

    fn parse_ok(text: &str) -> Config {
        parse(text, "test.toml", &home(), &self_program()).unwrap()
    }

    /// The error message for `text`, which must be invalid.
    fn parse_err(text: &str) -> String {
        let e = parse(text, "test.toml", &home(), &self_program()).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("test.toml: "), "{msg}");
        msg
    }
    #[test]
    fn supervisor_is_not_a_component_name_nor_an_alias() {
        let msg = parse_err("[components.supervisor]\ncommand = [\"sleep\", \"1\"]\n");
        assert!(msg.contains("`supervisor` is reserved"), "{msg}");
        let msg =
            parse_err("[components.a]\ncommand = [\"sleep\", \"1\"]\naliases = [\"supervisor\"]\n");
        assert!(msg.contains("`supervisor` is reserved"), "{msg}");
    }

    fn env<'a>(c: &'a ComponentSpec, var: &str) -> Option<&'a str> {
        c.env
            .iter()
            .chain(c.shared_env.iter())
            .find(|(k, _)| k == var)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn default_has_three_components_back_ends_first() {
        let c = parse(DEFAULT_CONFIG, EMBEDDED_ORIGIN, &home(), &self_program()).unwrap();
        assert_eq!(c.component_names(), ["is", "svg", "ps"]);
        assert_eq!(c.start_wait, Duration::from_secs(60));
        assert_eq!(c.tree.tree_id, "/nonexistent-imageserving/home");
        assert_eq!(
            c.aliases,
            [
                ("platform-server".to_string(), "ps".to_string()),
                ("image-server".to_string(), "is".to_string()),
                ("svg-server".to_string(), "svg".to_string()),
            ]
        );
        let ps = c.component("ps").unwrap();
        assert_eq!(ps.command, [EXE, "component", "ps"]);
        assert_eq!(ps.probe, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(ps.depends_on, ["is", "svg"]);
        assert_eq!(
            ps.cwd.as_deref(),
            Some(Path::new("/nonexistent-imageserving/home"))
        );
        assert_eq!(
            ps.log.stdout.as_deref(),
            Some(Path::new("/nonexistent-imageserving/home/logs/ps.log"))
        );
        assert_eq!(ps.policy, RestartPolicy::default());
        for comp in &c.tree.components {
            assert_eq!(
                env(comp, "IMAGESERVING_HOME"),
                Some("/nonexistent-imageserving/home")
            );
            assert_eq!(env(comp, "IMAGESERVING_PS_ADDR"), Some("127.0.0.1:8080"));
            assert_eq!(env(comp, "IMAGESERVING_IS_ADDR"), Some("127.0.0.1:27345"));
            assert_eq!(env(comp, "IMAGESERVING_SVG_ADDR"), Some("127.0.0.1:27346"));
        }
        assert_eq!(env(ps, "IMAGESERVING_LISTEN"), Some("127.0.0.1:8080"));
        assert_eq!(
            env(c.component("svg").unwrap(), "IMAGESERVING_LISTEN"),
            Some("127.0.0.1:27346")
        );
    }

    #[test]
    fn load_falls_back_to_the_default_and_reads_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::new(tmp.path()).unwrap();
        let c = load(&home, &self_program()).unwrap();
        assert_eq!(c.source, None);
        assert_eq!(c.origin(), "embedded default");
        assert_eq!(c.tree.components.len(), 3);

        home.ensure_layout().unwrap();
        fs::write(
            home.conf_file(),
            "[components.solo]\ncommand = [\"sleep\", \"100\"]\n",
        )
        .unwrap();
        let c = load(&home, &self_program()).unwrap();
        assert_eq!(c.source.as_deref(), Some(home.conf_file().as_path()));
        assert_eq!(c.component_names(), ["solo"]);

        fs::write(home.conf_file(), "[components.solo]\ncommand = []\n").unwrap();
        let msg = load(&home, &self_program()).unwrap_err().to_string();
        assert!(
            msg.contains("imageserving.toml: components.solo.command"),
            "{msg}"
        );
    }

    const FULL: &str = r#"
[supervisor]
start_wait = "2m"
strategy = "rest_for_one"
max_restarts = 4
max_window = "10m"

[components.front]
command = ["@self", "component", "ps", "--verbose"]
aliases = ["web", "http"]
host = "0.0.0.0"
port = 9080
depends_on = ["back"]
env = { RUST_LOG = "debug", GREETING = "hello world" }
cwd = "images"
start_secs = "2s"
start_timeout = "45s"
stable_after = "1m"
backoff_initial = "250ms"
backoff_max = "1m"
max_restarts = 3
max_window = "5m"
stop_signal = "int"
stop_timeout = "20s"
restart = "on-failure"
success_exit_codes = [0, 2]
retry_fatal_after = "10m"
memory_limit = "512MiB"
memory_check_interval = "5s"
ready = { http = "/healthz" }
health = { http = "/live", interval = "5s", timeout = "1s", max_failed = 5 }
log_max_bytes = "10MB"
log_backups = 3
log_stderr = true

[components.back]
command = ["/usr/bin/python3", "-m", "http.server", "9081"]
host = "::"
port = 9081
cwd = "/tmp"
stop_signal = 1
restart = "Temporary"
critical = true
memory_limit = 1048576
ready = { file = "run/back.ready" }
health = { tcp = true }

[components.worker]
command = ["sleep", "infinity"]
stop_signal = "SIGUSR1"
restart = "never"
log_to_supervisor = true

[components.worker.health]
file = "/tmp/worker.alive"
"#;

    #[test]
    fn full_example_uses_every_key() {
        let c = parse_ok(FULL);
        assert_eq!(c.start_wait, Duration::from_secs(120));
        assert_eq!(c.tree.strategy, Strategy::RestForOne);
        assert_eq!(c.tree.max_restarts, 4);
        assert_eq!(c.tree.max_window, Duration::from_secs(600));
        assert_eq!(c.component_names(), ["back", "worker", "front"]);
        assert_eq!(c.resolve("web"), Some("front"));
        let front = c.component("front").unwrap();
        assert_eq!(front.command, [EXE, "component", "ps", "--verbose"]);
        assert_eq!(front.probe, Some("0.0.0.0:9080".parse().unwrap()));
        assert_eq!(
            front.cwd.as_deref(),
            Some(Path::new("/nonexistent-imageserving/home/images"))
        );
        assert_eq!(env(front, "RUST_LOG"), Some("debug"));
        assert_eq!(env(front, "GREETING"), Some("hello world"));
        assert_eq!(env(front, "IMAGESERVING_LISTEN"), Some("0.0.0.0:9080"));
        assert_eq!(
            front.policy,
            RestartPolicy {
                start_secs: Duration::from_secs(2),
                start_timeout: Duration::from_secs(45),
                stable_after: Duration::from_secs(60),
                backoff_initial: Duration::from_millis(250),
                backoff_max: Duration::from_secs(60),
                max_restarts: 3,
                max_window: Duration::from_secs(300),
                stop_signal: libc::SIGINT,
                stop_timeout: Duration::from_secs(20),
                restart: RestartType::Transient,
                success_exit_codes: vec![0, 2],
                retry_fatal_after: Some(Duration::from_secs(600)),
            }
        );
        assert!(!front.critical);
        assert_eq!(front.memory_limit, Some(512 * 1024 * 1024));
        assert_eq!(front.memory_check_interval, Duration::from_secs(5));
        assert_eq!(front.ready, Ready::Http("/healthz".into()));
        assert_eq!(
            front.health,
            Some(Health {
                check: Ready::Http("/live".into()),
                interval: Duration::from_secs(5),
                timeout: Duration::from_secs(1),
                max_failed: 5,
            })
        );
        assert_eq!(
            front.log,
            LogSpec {
                stdout: Some("/nonexistent-imageserving/home/logs/front.log".into()),
                stderr: Some("/nonexistent-imageserving/home/logs/front.stderr.log".into()),
                max_bytes: 10_000_000,
                backups: 3,
                ..LogSpec::discard()
            }
        );
        let back = c.component("back").unwrap();
        assert_eq!(back.cwd.as_deref(), Some(Path::new("/tmp")));
        assert_eq!(back.policy.stop_signal, libc::SIGHUP);
        assert_eq!(back.policy.restart, RestartType::Temporary);
        assert!(back.critical);
        assert_eq!(back.memory_limit, Some(1024 * 1024));
        assert_eq!(back.memory_check_interval, Duration::from_secs(1));
        // Relative to the home, not to the component's `cwd`.
        assert_eq!(
            back.ready,
            Ready::File("/nonexistent-imageserving/home/run/back.ready".into())
        );
        assert_eq!(
            back.health,
            Some(Health {
                check: Ready::Port,
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(2),
                max_failed: 3,
            })
        );
        assert_eq!(env(back, "IMAGESERVING_LISTEN"), Some("[::]:9081"));
        let worker = c.component("worker").unwrap();
        assert_eq!(worker.probe, None);
        assert_eq!(worker.policy.stop_signal, libc::SIGUSR1);
        assert_eq!(worker.policy.restart, RestartType::Temporary);
        assert_eq!(worker.ready, Ready::Port);
        assert_eq!(
            worker.health.as_ref().map(|h| &h.check),
            Some(&Ready::File("/tmp/worker.alive".into()))
        );
        assert_eq!(
            worker.log,
            LogSpec {
                to_supervisor: true,
                ..LogSpec::discard()
            }
        );
        assert_eq!(env(worker, "IMAGESERVING_LISTEN"), None);
        // Wildcard listeners are reached on loopback; every component knows every address.
        for comp in &c.tree.components {
            assert_eq!(env(comp, "IMAGESERVING_FRONT_ADDR"), Some("127.0.0.1:9080"));
            assert_eq!(env(comp, "IMAGESERVING_BACK_ADDR"), Some("[::1]:9081"));
            assert_eq!(env(comp, "IMAGESERVING_WORKER_ADDR"), None);
        }
    }

    #[test]
    fn supervisor_table_alone_keeps_the_default_components() {
        let c = parse_ok("[supervisor]\nstart_wait = \"5s\"\n");
        assert_eq!(c.start_wait, Duration::from_secs(5));
        assert_eq!(c.component_names(), ["is", "svg", "ps"]);
    }

    #[test]
    fn resolve_takes_names_and_aliases() {
        let c = parse_ok(DEFAULT_CONFIG);
        assert_eq!(c.resolve("ps"), Some("ps"));
        assert_eq!(c.resolve("PS"), Some("ps"));
        assert_eq!(c.resolve("image-server"), Some("is"));
        assert_eq!(c.resolve("svg-server"), Some("svg"));
        assert_eq!(c.resolve("tomcat"), None);
    }

    #[test]
    fn self_is_replaced_only_in_first_place() {
        let c = parse_ok("[components.a]\ncommand = [\"@self\", \"@self\"]\n");
        assert_eq!(c.component("a").unwrap().command, [EXE, "@self"]);
    }

    #[test]
    fn self_component_runs_the_server_program_when_there_is_one() {
        let text = "[components.a]\ncommand = [\"@self\", \"component\", \"is\", \"-v\"]\n\
                    [components.b]\ncommand = [\"@self\", \"status\"]\n";
        let with_server = SelfProgram {
            exe: EXE.into(),
            server_exe: Some(SERVER_EXE.into()),
        };
        let c = parse(text, "test.toml", &home(), &with_server).unwrap();
        assert_eq!(c.component("a").unwrap().command, [SERVER_EXE, "is", "-v"]);
        assert_eq!(c.component("b").unwrap().command, [EXE, "status"]);
        let c = parse_ok(text);
        assert_eq!(
            c.component("a").unwrap().command,
            [EXE, "component", "is", "-v"]
        );
    }

    #[test]
    fn self_needs_a_utf8_path() {
        use std::os::unix::ffi::OsStrExt as _;
        let exe = PathBuf::from(std::ffi::OsStr::from_bytes(b"/opt/\xff/imageserving"));
        let e = parse(
            "[components.a]\ncommand = [\"@self\", \"component\", \"is\"]\n",
            "test.toml",
            &home(),
            &SelfProgram::new(exe),
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("test.toml: components.a.command: cannot use `@self`"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_key_is_reported_with_its_line() {
        let msg = parse_err("[components.ps]\ncommand = [\"x\"]\nprot = 80\n");
        assert!(msg.contains("prot"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
        let msg = parse_err("[supervisor]\nstart_wiat = \"1s\"\n");
        assert!(msg.contains("start_wiat"), "{msg}");
        let msg = parse_err("[supervisors]\n");
        assert!(msg.contains("supervisors"), "{msg}");
    }

    #[test]
    fn bad_duration_names_the_key() {
        let msg = parse_err("[components.ps]\ncommand = [\"x\"]\nstop_timeout = \"ten\"\n");
        assert!(
            msg.contains("components.ps.stop_timeout: invalid duration \"ten\""),
            "{msg}"
        );
        let msg = parse_err("[supervisor]\nstart_wait = \"soon\"\n");
        assert!(
            msg.contains("supervisor.start_wait: invalid duration"),
            "{msg}"
        );
        let msg = parse_err("[supervisor]\nstart_wait = \"0s\"\n");
        assert!(
            msg.contains("supervisor.start_wait: must be longer than 0"),
            "{msg}"
        );
    }

    #[test]
    fn missing_or_empty_command_names_the_key() {
        let msg = parse_err("[components.ps]\nport = 1000\n");
        assert!(msg.contains("components.ps.command: is missing"), "{msg}");
        let msg = parse_err("[components.ps]\ncommand = []\n");
        assert!(
            msg.contains("components.ps.command: must not be empty"),
            "{msg}"
        );
        let msg = parse_err("[components.ps]\ncommand = [\"\"]\n");
        assert!(msg.contains("components.ps.command"), "{msg}");
    }

    #[test]
    fn unknown_dependency_names_the_key() {
        let msg = parse_err("[components.a]\ncommand = [\"x\"]\ndepends_on = [\"b\"]\n");
        assert!(
            msg.contains("components.a.depends_on: unknown component `b`"),
            "{msg}"
        );
        let msg = parse_err(
            "[components.a]\ncommand = [\"x\"]\ndepends_on = [\"bee\"]\n[components.b]\ncommand = [\"x\"]\naliases = [\"bee\"]\n",
        );
        assert!(msg.contains("alias of `b`"), "{msg}");
    }

    #[test]
    fn dependency_cycle_names_the_key() {
        let msg = parse_err(
            "[components.a]\ncommand = [\"x\"]\ndepends_on = [\"b\"]\n[components.b]\ncommand = [\"x\"]\ndepends_on = [\"a\"]\n",
        );
        assert!(
            msg.contains("components.a.depends_on: dependency cycle: a -> b -> a"),
            "{msg}"
        );
    }

    #[test]
    fn duplicate_port_names_the_key() {
        let msg = parse_err(
            "[components.a]\ncommand = [\"x\"]\nport = 5000\n[components.b]\ncommand = [\"x\"]\nport = 5000\n",
        );
        assert!(
            msg.contains("components.b.port: port 5000 is already used by component `a`"),
            "{msg}"
        );
    }

    #[test]
    fn port_zero_and_bad_host_are_refused() {
        let msg = parse_err("[components.a]\ncommand = [\"x\"]\nport = 0\n");
        assert!(msg.contains("components.a.port: must not be 0"), "{msg}");
        let msg = parse_err("[components.a]\ncommand = [\"x\"]\nport = 70000\n");
        assert!(msg.contains("port"), "{msg}");
        let msg =
            parse_err("[components.a]\ncommand = [\"x\"]\nhost = \"example.com\"\nport = 80\n");
        assert!(msg.contains("components.a.host"), "{msg}");
        let msg = parse_err("[components.a]\ncommand = [\"x\"]\nhost = \"::1\"\n");
        assert!(
            msg.contains("components.a.host: is set but `port` is not"),
            "{msg}"
        );
    }

    #[test]
    fn colliding_aliases_are_refused() {
        let two = |a_aliases: &str, b_aliases: &str| {
            format!("[components.a]\ncommand = [\"x\"]\naliases = {a_aliases}\n[components.b]\ncommand = [\"x\"]\naliases = {b_aliases}\n")
        };
        let msg = parse_err(&two("[\"b\"]", "[]"));
        assert!(
            msg.contains("components.a.aliases: `b` is the name of a component"),
            "{msg}"
        );
        let msg = parse_err(&two("[\"web\"]", "[\"web\"]"));
        assert!(
            msg.contains("components.b.aliases: `web` is already an alias of `a`"),
            "{msg}"
        );
        let msg = parse_err(&two("[\"Web Server\"]", "[]"));
        assert!(
            msg.contains("components.a.aliases: `Web Server` is not a valid alias"),
            "{msg}"
        );
    }

    #[test]
    fn invalid_name_and_empty_set_are_refused() {
        let msg = parse_err("[components.\"Image Server\"]\ncommand = [\"x\"]\n");
        assert!(
            msg.contains(
                "components.\"Image Server\": `Image Server` is not a valid component name"
            ),
            "{msg}"
        );
        let msg = parse_err("[components]\n");
        assert!(
            msg.contains("test.toml: components: defines no component"),
            "{msg}"
        );
    }

    #[test]
    fn bad_policy_and_signal_name_the_key() {
        let msg = parse_err("[components.a]\ncommand = [\"x\"]\nstart_secs = \"40s\"\n");
        assert!(
            msg.contains("components.a.start_timeout: must not be shorter than `start_secs`"),
            "{msg}"
        );
        let msg = parse_err("[components.a]\ncommand = [\"x\"]\nstop_signal = \"KILL\"\n");
        assert!(msg.contains("components.a.stop_signal"), "{msg}");
        let msg = parse_err("[components.a]\ncommand = [\"x\"]\nstop_signal = \"SIGFOO\"\n");
        assert!(
            msg.contains("components.a.stop_signal: unknown signal \"SIGFOO\""),
            "{msg}"
        );
        let msg = parse_err("[components.a]\ncommand = [\"x\"]\nstop_signal = 99\n");
        assert!(msg.contains("components.a.stop_signal"), "{msg}");
        let msg = parse_err("[components.a]\ncommand = [\"x\"]\nstop_signal = \"STOP\"\n");
        assert!(msg.contains("components.a.stop_signal: SIGSTOP"), "{msg}");
    }

    /// `[components.a]` with a port and `extra` lines.
    fn one(extra: &str) -> String {
        format!("[components.a]\ncommand = [\"x\"]\nport = 5000\n{extra}\n")
    }

    #[test]
    fn new_keys_default_to_the_spec_defaults() {
        let c = parse_ok(&one(""));
        assert_eq!(c.tree.strategy, Strategy::OneForOne);
        assert_eq!(c.tree.max_restarts, 10);
        assert_eq!(c.tree.max_window, Duration::from_secs(60));
        let a = c.component("a").unwrap();
        let d = ComponentSpec::new("a", vec![]);
        assert_eq!(a.policy, RestartPolicy::default());
        assert_eq!(a.ready, d.ready);
        assert_eq!(a.health, d.health);
        assert_eq!(a.critical, d.critical);
        assert_eq!(a.memory_limit, d.memory_limit);
        assert_eq!(a.memory_check_interval, d.memory_check_interval);
        assert_eq!(
            a.log,
            LogSpec::file("/nonexistent-imageserving/home/logs/a.log".into())
        );
    }

    #[test]
    fn strategy_and_supervisor_budget() {
        for (word, strategy) in [
            ("one_for_one", Strategy::OneForOne),
            ("one_for_all", Strategy::OneForAll),
            ("rest_for_one", Strategy::RestForOne),
        ] {
            let c = parse_ok(&format!("[supervisor]\nstrategy = \"{word}\"\n"));
            assert_eq!(c.tree.strategy, strategy);
        }
        let msg = parse_err("[supervisor]\nstrategy = \"all_for_one\"\n");
        assert!(
            msg.contains("supervisor.strategy: unknown strategy \"all_for_one\""),
            "{msg}"
        );
        let msg = parse_err("[supervisor]\nmax_window = \"0s\"\n");
        assert!(
            msg.contains("supervisor.max_window: must be longer than 0"),
            "{msg}"
        );
        let msg = parse_err("[supervisor]\nmax_window = \"a while\"\n");
        assert!(
            msg.contains("supervisor.max_window: invalid duration"),
            "{msg}"
        );
        let msg = parse_err("[supervisor]\nmax_restarts = -1\n");
        assert!(msg.contains("max_restarts"), "{msg}");
    }

    #[test]
    fn restart_types_and_their_aliases() {
        for (word, restart) in [
            ("permanent", RestartType::Permanent),
            ("always", RestartType::Permanent),
            ("transient", RestartType::Transient),
            ("on-failure", RestartType::Transient),
            ("temporary", RestartType::Temporary),
            ("never", RestartType::Temporary),
        ] {
            let c = parse_ok(&one(&format!("restart = \"{word}\"")));
            assert_eq!(c.component("a").unwrap().policy.restart, restart, "{word}");
        }
        let msg = parse_err(&one("restart = \"sometimes\""));
        assert!(
            msg.contains("components.a.restart: unknown restart type \"sometimes\""),
            "{msg}"
        );
    }

    #[test]
    fn success_exit_codes_are_0_to_255() {
        let c = parse_ok(&one("success_exit_codes = [0, 2, 255]"));
        assert_eq!(
            c.component("a").unwrap().policy.success_exit_codes,
            [0, 2, 255]
        );
        for bad in ["300", "-1"] {
            let msg = parse_err(&one(&format!("success_exit_codes = [0, {bad}]")));
            assert!(
                msg.contains(&format!(
                    "components.a.success_exit_codes: {bad} is not an exit code"
                )),
                "{msg}"
            );
        }
    }

    #[test]
    fn retry_fatal_after_and_critical() {
        let c = parse_ok(&one("retry_fatal_after = \"10m\""));
        let a = c.component("a").unwrap();
        assert_eq!(a.policy.retry_fatal_after, Some(Duration::from_secs(600)));
        assert!(!a.critical);
        assert!(
            parse_ok(&one("critical = true"))
                .component("a")
                .unwrap()
                .critical
        );
        let msg = parse_err(&one("retry_fatal_after = \"0s\""));
        assert!(
            msg.contains("components.a.retry_fatal_after: must be longer than 0"),
            "{msg}"
        );
        let msg = parse_err(&one("critical = true\nretry_fatal_after = \"1m\""));
        assert!(
            msg.contains("components.a.retry_fatal_after: cannot be used with `critical = true`"),
            "{msg}"
        );
        let msg = parse_err(&one("critical = \"yes\""));
        assert!(msg.contains("critical"), "{msg}");
    }

    #[test]
    fn sizes_take_decimal_and_binary_units() {
        let bytes = |text: &str| size(&SizeText::Text(text.into()));
        assert_eq!(bytes("512MiB"), Ok(512 << 20));
        assert_eq!(bytes("512 mib"), Ok(512 << 20));
        assert_eq!(bytes("2KB"), Ok(2000));
        assert_eq!(bytes("2kib"), Ok(2048));
        assert_eq!(bytes("3MB"), Ok(3_000_000));
        assert_eq!(bytes("1GB"), Ok(1_000_000_000));
        assert_eq!(bytes("1GiB"), Ok(1 << 30));
        assert_eq!(bytes("100B"), Ok(100));
        assert_eq!(bytes("100"), Ok(100));
        assert_eq!(size(&SizeText::Bytes(4096)), Ok(4096));
        for bad in ["", "MiB", "1.5GiB", "12 parsecs", "-5MB", "5 M"] {
            assert!(bytes(bad).is_err(), "{bad:?}");
        }
        assert!(bytes("99999999999999GiB")
            .unwrap_err()
            .contains("too large"));
        assert!(size(&SizeText::Bytes(-1)).is_err());
    }

    #[test]
    fn memory_limit_and_check_interval() {
        let c = parse_ok(&one(
            "memory_limit = \"1GiB\"\nmemory_check_interval = \"250ms\"",
        ));
        let a = c.component("a").unwrap();
        assert_eq!(a.memory_limit, Some(1 << 30));
        assert_eq!(a.memory_check_interval, Duration::from_millis(250));
        let msg = parse_err(&one("memory_limit = \"12 parsecs\""));
        assert!(
            msg.contains("components.a.memory_limit: invalid size \"12 parsecs\""),
            "{msg}"
        );
        let msg = parse_err(&one("memory_limit = -1"));
        assert!(msg.contains("components.a.memory_limit"), "{msg}");
        let msg = parse_err(&one("memory_limit = \"0MiB\""));
        assert!(
            msg.contains("components.a.memory_limit: must be above 0"),
            "{msg}"
        );
        let msg = parse_err(&one("memory_limit = true"));
        assert!(msg.contains("a size such as"), "{msg}");
        let msg = parse_err(&one("memory_check_interval = \"0s\""));
        assert!(
            msg.contains("components.a.memory_check_interval: must be longer than 0"),
            "{msg}"
        );
    }

    #[test]
    fn ready_takes_one_kind_of_check() {
        let ready = |extra: &str| parse_ok(&one(extra)).component("a").unwrap().ready.clone();
        assert_eq!(
            ready("ready = { http = \"/healthz\" }"),
            Ready::Http("/healthz".into())
        );
        assert_eq!(
            ready("ready = { file = \"run/ready\" }"),
            Ready::File("/nonexistent-imageserving/home/run/ready".into())
        );
        assert_eq!(
            ready("cwd = \"images\"\nready = { file = \"/var/run/a.ready\" }"),
            Ready::File("/var/run/a.ready".into())
        );
        assert_eq!(ready("ready = { tcp = true }"), Ready::Port);

        let msg = parse_err(&one(
            "ready = { http = \"/healthz\", file = \"run/ready\" }",
        ));
        assert!(
            msg.contains("components.a.ready: give exactly one of `http`, `tcp` and `file`"),
            "{msg}"
        );
        let msg = parse_err(&one("ready = {}"));
        assert!(
            msg.contains("components.a.ready: give exactly one"),
            "{msg}"
        );
        let msg = parse_err(&one("ready = { http = \"healthz\" }"));
        assert!(
            msg.contains("components.a.ready.http: \"healthz\" is not a request path"),
            "{msg}"
        );
        let msg = parse_err(&one("ready = { tcp = false }"));
        assert!(
            msg.contains("components.a.ready.tcp: can only be `true`"),
            "{msg}"
        );
        let msg = parse_err(&one("ready = { file = \"\" }"));
        assert!(
            msg.contains("components.a.ready.file: must not be empty"),
            "{msg}"
        );
        let msg = parse_err(&one("ready = { exec = \"true\" }"));
        assert!(msg.contains("exec"), "{msg}");
        let msg = parse_err("[components.a]\ncommand = [\"x\"]\nready = { http = \"/healthz\" }\n");
        assert!(
            msg.contains("components.a.ready: an `http` check needs the component's `port`"),
            "{msg}"
        );
        let msg = parse_err("[components.a]\ncommand = [\"x\"]\nready = { tcp = true }\n");
        assert!(
            msg.contains("components.a.ready: a `tcp` check needs the component's `port`"),
            "{msg}"
        );
    }

    #[test]
    fn health_takes_one_kind_of_check_and_positive_timing() {
        let c = parse_ok(&one("health = { file = \"run/alive\", max_failed = 1 }"));
        assert_eq!(
            c.component("a").unwrap().health,
            Some(Health {
                check: Ready::File("/nonexistent-imageserving/home/run/alive".into()),
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(2),
                max_failed: 1,
            })
        );
        let msg = parse_err(&one("health = { interval = \"5s\" }"));
        assert!(
            msg.contains("components.a.health: give exactly one of `http`, `tcp` and `file`"),
            "{msg}"
        );
        let msg = parse_err(&one("health = { tcp = true, http = \"/x\" }"));
        assert!(
            msg.contains("components.a.health: give exactly one"),
            "{msg}"
        );
        let msg = parse_err(&one("health = { tcp = true, interval = \"0s\" }"));
        assert!(
            msg.contains("components.a.health.interval: must be longer than 0"),
            "{msg}"
        );
        let msg = parse_err(&one("health = { tcp = true, timeout = \"0ms\" }"));
        assert!(
            msg.contains("components.a.health.timeout: must be longer than 0"),
            "{msg}"
        );
        let msg = parse_err(&one("health = { tcp = true, max_failed = 0 }"));
        assert!(
            msg.contains("components.a.health.max_failed: must be above 0"),
            "{msg}"
        );
        let msg = parse_err(&one("health = { tcp = true, retries = 3 }"));
        assert!(msg.contains("retries"), "{msg}");
        let msg = parse_err("[components.a]\ncommand = [\"x\"]\nhealth = { http = \"/live\" }\n");
        assert!(
            msg.contains("components.a.health: an `http` check needs the component's `port`"),
            "{msg}"
        );
    }

    #[test]
    fn log_keys() {
        let log = |extra: &str| parse_ok(&one(extra)).component("a").unwrap().log.clone();
        let l = log("log_max_bytes = \"1MiB\"\nlog_backups = 0");
        assert_eq!((l.max_bytes, l.backups), (1 << 20, 0));
        assert_eq!(l.stderr, None);
        let l = log("log_stderr = true");
        assert_eq!(
            l.stderr.as_deref(),
            Some(Path::new(
                "/nonexistent-imageserving/home/logs/a.stderr.log"
            ))
        );
        let l = log("log_to_supervisor = true");
        assert!(l.to_supervisor);
        assert_eq!((l.stdout, l.stderr), (None, None));

        let msg = parse_err(&one("log_max_bytes = \"12 parsecs\""));
        assert!(
            msg.contains("components.a.log_max_bytes: invalid size"),
            "{msg}"
        );
        let msg = parse_err(&one("log_max_bytes = 0"));
        assert!(
            msg.contains("components.a.log_max_bytes: must be above 0"),
            "{msg}"
        );
        let msg = parse_err(&one("log_stderr = true\nlog_to_supervisor = true"));
        assert!(
            msg.contains("components.a.log_stderr: cannot be used"),
            "{msg}"
        );
        let msg = parse_err(&one("log_backups = -1"));
        assert!(msg.contains("log_backups"), "{msg}");
    }

    #[test]
    fn reserved_and_colliding_variables_are_refused() {
        let msg =
            parse_err("[components.a]\ncommand = [\"x\"]\nenv = { IMAGESERVING_HOME = \"/x\" }\n");
        assert!(
            msg.contains("components.a.env.IMAGESERVING_HOME: is set by the supervisor"),
            "{msg}"
        );
        let msg = parse_err(
            "[components.a-b]\ncommand = [\"x\"]\nport = 1000\n[components.a_b]\ncommand = [\"x\"]\nport = 1001\n",
        );
        assert!(msg.contains("IMAGESERVING_A_B_ADDR"), "{msg}");
    }

    #[test]
    fn docs_show_the_default_and_valid_examples() {
        let docs = include_str!("../docs/configuration.md");
        assert!(
            docs.contains(DEFAULT_CONFIG),
            "docs/configuration.md must show DEFAULT_CONFIG verbatim"
        );
        let mut blocks = 0;
        for block in docs.split("```toml\n").skip(1) {
            let text = block.split("```").next().unwrap_or_default();
            if let Err(e) = parse(text, "docs", &home(), &self_program()) {
                panic!("a TOML example in docs/configuration.md does not parse: {e}\n{text}");
            }
            blocks += 1;
        }
        assert!(
            blocks >= 2,
            "expected the default and the other-ports example"
        );
    }
}

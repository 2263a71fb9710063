//! The validated configuration the daemon runs on, read from `conf/imageserving.toml` in the
//! home, or the embedded [`DEFAULT_CONFIG`] when that file is absent.
//!
//! Parsing happens in two steps: serde reads the TOML into the `Raw*` types that mirror the
//! file (`raw.rs`; every table with `deny_unknown_fields`), then [`parse`] turns them into a
//! [`TreeSpec`] for the actors crate (`build.rs`, with the value syntax of `values.rs`), checked
//! by [`TreeSpec::validate`]. Every error names the file (or "embedded default") and the key, so
//! a user can find the line to fix.
//!
//! Parsing is pure: the text, the home and what `@self` stands for ([`SelfProgram`], which the
//! caller resolves) give the configuration. Nothing here looks at which programs are installed;
//! only [`load`] reads a file, the home's configuration.
//! `docs/configuration.md` documents every key: `tests/docs/` checks its key tables and
//! defaults against this parser, and a unit test keeps it in step with [`DEFAULT_CONFIG`].

use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use imageserving_actors::spec::{ComponentSpec, SpecError, TreeSpec};

use crate::home::Home;

mod build;
mod raw;
mod values;

pub use build::addr_env;
use build::{supervisor, Builder};
use raw::{read_raw, DurationText, RawComponent};
use values::duration;

/// The configuration used when the home has no `conf/imageserving.toml`: the three components
/// of the original on their documented ports, the front end started after its back ends.
pub const DEFAULT_CONFIG: &str = r#"# The embedded default configuration of imageserving.
# Copy it to conf/imageserving.toml in the home to change it.

[supervisor]
start_wait = "60s"

# Each server has a liveness check (a frozen server is restarted within about 10 s) and is
# started again 1 minute after it goes FATAL, again and again, so that a node heals without a
# person: status says when the next try is.

# Platform Server: the public HTTP front end. Its /healthz follows is (for load balancers);
# its liveness is /livez, so that it is not restarted for is's fault.
[components.ps]
command = ["@self", "component", "ps"]
aliases = ["platform-server"]
port = 8080
depends_on = ["is", "svg"]
health = { http = "/livez", interval = "1s", timeout = "2s", max_failed = 3 }
retry_fatal_after = "1m"

# Image Server: decodes, processes and encodes images for ps.
[components.is]
command = ["@self", "component", "is"]
aliases = ["image-server"]
port = 27345
health = { http = "/healthz", interval = "1s", timeout = "2s", max_failed = 3 }
retry_fatal_after = "1m"

# SVG server: rasterises SVG sources for is.
[components.svg]
command = ["@self", "component", "svg"]
aliases = ["svg-server"]
port = 27346
health = { http = "/healthz", interval = "1s", timeout = "2s", max_failed = 3 }
retry_fatal_after = "1m"
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
    tree.notify_socket = Some(home.notify_socket_path());
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
mod tests;

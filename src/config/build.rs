//! From the file's shape to the actors crate's specs: each `[components.<name>]` becomes a
//! [`ComponentSpec`] (its command, address, policy, checks and log), then every component gets
//! the shared block of addresses; `[supervisor]` sets the tree's strategy and budget.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use imageserving_actors::lifecycle::PREVIOUS_EXIT_ENV;
use imageserving_actors::process::{COMPONENT_ENV, TREE_ENV};
use imageserving_actors::spec::{
    valid_component_name, ComponentSpec, Health, LogSpec, Ready, RestartPolicy, SocketSpec,
    TreeSpec, DEFAULT_BACKLOG,
};

use super::raw::{DurationText, RawComponent, RawHealth, RawSupervisor, SizeText};
use super::values::{duration, restart_type, signal, size, strategy};
use super::{
    invalid, key, ConfigError, SelfProgram, HOME_ENV, LISTEN_ENV, RESERVED_NAME, SELF_COMMAND,
};
use crate::home::Home;

const DEFAULT_HOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_HEALTH_MAX_FAILED: u32 = 3;

/// Applies `[supervisor]`'s strategy and group-restart budget to `tree`.
pub(super) fn supervisor(
    origin: &str,
    raw: &RawSupervisor,
    tree: &mut TreeSpec,
) -> Result<(), ConfigError> {
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

/// Turns raw components into specs; holds what every step needs.
pub(super) struct Builder<'a> {
    /// The file, or "embedded default", for messages.
    pub(super) origin: &'a str,
    /// Places the logs, `cwd` and the file checks.
    pub(super) home: &'a Home,
    /// What a leading `@self` in a command stands for.
    pub(super) self_program: &'a SelfProgram,
}

impl Builder<'_> {
    fn err(&self, name: &str, field: &str, message: impl Into<String>) -> ConfigError {
        invalid(self.origin, &key(name, field), message)
    }

    /// Everything but the environment, which needs all components' addresses.
    pub(super) fn component(
        &self,
        name: &str,
        raw: &RawComponent,
    ) -> Result<ComponentSpec, ConfigError> {
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
            spec.ready = match ready.notify {
                Some(true)
                    if ready.http.is_none() && ready.tcp.is_none() && ready.file.is_none() =>
                {
                    Ready::Notify
                }
                Some(true) => {
                    return Err(self.err(
                        name,
                        "ready",
                        "give exactly one of `http`, `tcp`, `file` and `notify`",
                    ))
                }
                Some(false) => {
                    return Err(self.err(
                        name,
                        "ready.notify",
                        "can only be `true`; leave it out for another kind of check",
                    ))
                }
                None => self.check(
                    name,
                    "ready",
                    ready.http.as_deref(),
                    ready.tcp,
                    ready.file.as_deref(),
                    probe.is_some(),
                )?,
            };
        }
        if let Some(health) = &raw.health {
            spec.health = Some(self.health(name, health, probe.is_some())?);
        }
        spec.socket = self.socket(name, raw, probe)?;
        if spec.socket.is_some() && raw.ready.is_none() && is_builtin_server(raw) {
            // A held socket accepts before the server does, and during a handover the old
            // process answers on it too: the new process itself says when it serves.
            spec.ready = Ready::Notify;
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

    /// `hold_socket` and `listen_backlog`: whether the supervisor holds the component's
    /// listening socket (by default for the built-in servers, which take it), and its backlog.
    fn socket(
        &self,
        name: &str,
        raw: &RawComponent,
        addr: Option<SocketAddr>,
    ) -> Result<Option<SocketSpec>, ConfigError> {
        let hold = raw.hold_socket.unwrap_or_else(|| is_builtin_server(raw));
        match (hold, addr) {
            (true, Some(addr)) => {
                let backlog = raw.listen_backlog.unwrap_or(DEFAULT_BACKLOG);
                if backlog == 0 {
                    return Err(self.err(name, "listen_backlog", "must be above 0"));
                }
                Ok(Some(SocketSpec { addr, backlog }))
            }
            (true, None) if raw.hold_socket == Some(true) => {
                Err(self.err(name, "hold_socket", "needs the component's `port`"))
            }
            // `listen_backlog` alone (or `hold_socket` by default on a component without a port)
            // changes nothing.
            _ => Ok(None),
        }
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
            handover_grace: dur("handover_grace", &raw.handover_grace, d.handover_grace)?,
            restart,
            success_exit_codes,
            retry_fatal_after,
        })
    }

    /// `(alias, component)` pairs; an alias must be a valid name, unique, and no component's name.
    pub(super) fn aliases(
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
    pub(super) fn add_env(
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
                let reserved = [
                    HOME_ENV,
                    LISTEN_ENV,
                    TREE_ENV,
                    COMPONENT_ENV,
                    PREVIOUS_EXIT_ENV,
                ]
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

/// Whether the component runs one of the built-in servers (`@self component ps|is|svg`), which
/// take a socket passed to them.
fn is_builtin_server(raw: &RawComponent) -> bool {
    matches!(
        raw.command.as_deref(),
        Some([program, component, server, ..])
            if program == SELF_COMMAND && component == "component"
                && matches!(server.as_str(), "ps" | "is" | "svg")
    )
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
pub(super) fn loopback_if_unspecified(addr: SocketAddr) -> SocketAddr {
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

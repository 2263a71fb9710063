//! What the tree runs: validated component specs and their restart policy.
//!
//! These types are the library's input. The `imageserving` binary builds them from its TOML
//! configuration; an embedding app builds them in code. Both go through [`TreeSpec::validate`],
//! so a tree never starts half-configured.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Everything one supervision tree runs.
#[derive(Clone, Debug)]
pub struct TreeSpec {
    /// Identifies this tree's processes: every process of every component inherits it in the
    /// environment variable [`crate::process::TREE_ENV`], so that leftovers can be found (and
    /// only ours are killed) after a crash. The daemon uses its home directory.
    pub tree_id: String,
    /// The components, in configuration order. Start order is derived from `depends_on`.
    pub components: Vec<ComponentSpec>,
    /// What else restarts when a component fails.
    pub strategy: Strategy,
    /// More than this many group restarts (`one_for_all`, `rest_for_one`) within `max_window`
    /// is escalation: the supervisor stops everything and exits non-zero.
    pub max_restarts: u32,
    /// The window of that budget.
    pub max_window: Duration,
    /// Where the supervisor listens for its components' notifications
    /// ([`crate::process::NotifySocket`]), given to every process in `NOTIFY_SOCKET`; none
    /// without it. The daemon uses `run/notify.sock` in its home.
    pub notify_socket: Option<std::path::PathBuf>,
}

/// OTP's restart strategies: what else restarts when a component fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strategy {
    /// Only the failed component (the default).
    #[default]
    OneForOne,
    /// Every other component is stopped in reverse dependency order, then all start in order.
    OneForAll,
    /// The failed component and every component that depends on it, directly or not.
    RestForOne,
}

impl Strategy {
    /// OTP's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::OneForOne => "one_for_one",
            Strategy::OneForAll => "one_for_all",
            Strategy::RestForOne => "rest_for_one",
        }
    }
}

/// OTP's restart types: which exits restart a component.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RestartType {
    /// Every exit restarts it (supervisord's `always`; the default).
    #[default]
    Permanent,
    /// Only an abnormal exit restarts it: not an exit code in `success_exit_codes`, nor death by
    /// our own stop signal (systemd's `on-failure`).
    Transient,
    /// Never restarted (systemd's `never`).
    Temporary,
}

impl RestartType {
    /// OTP's name.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartType::Permanent => "permanent",
            RestartType::Transient => "transient",
            RestartType::Temporary => "temporary",
        }
    }
}

/// When a started component counts as ready (besides having stayed up `start_secs`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Ready {
    /// Its `probe` address accepts a TCP connection (nothing more when it has none).
    #[default]
    Port,
    /// `GET <path>` on its `probe` address answers 2xx.
    Http(String),
    /// This file exists.
    File(PathBuf),
    /// The component's main process said `READY=1` on the notification socket (systemd's
    /// `Type=notify`; see [`crate::process::NotifySocket`]): the process itself says when it
    /// serves. Only for `ready`, not for a liveness check; needs the tree's notification socket.
    Notify,
}

/// A liveness probe: run every `interval` while the component runs; `max_failed` failures in a
/// row restart it (counted as a failure).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// What to check: `Ready::Port` (TCP connect), `Ready::Http(path)` or `Ready::File(path)`.
    pub check: Ready,
    /// Time between two probes.
    pub interval: Duration,
    /// How long one probe may take.
    pub timeout: Duration,
    /// Failures in a row that restart the component.
    pub max_failed: u32,
}

/// Where a component's output goes and how its log files rotate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSpec {
    /// The log file of standard output, and of standard error unless `stderr` is set; `None`
    /// discards the output (unless `to_supervisor`).
    pub stdout: Option<PathBuf>,
    /// A separate log file for standard error.
    pub stderr: Option<PathBuf>,
    /// Write every line to the supervisor's standard error, prefixed with the component's name,
    /// instead of files (for containers); no rotation applies.
    pub to_supervisor: bool,
    /// A log file is rotated when it would grow past this size.
    pub max_bytes: u64,
    /// Rotated files kept (`name.log.1` newest … `name.log.N`); the oldest is deleted.
    pub backups: u32,
    /// The longest line written; longer output is cut into pieces with a marker.
    pub max_line: usize,
}

impl LogSpec {
    /// Both streams into `file`, with the default rotation.
    pub fn file(file: PathBuf) -> Self {
        LogSpec {
            stdout: Some(file),
            ..LogSpec::discard()
        }
    }

    /// No output kept.
    pub fn discard() -> Self {
        LogSpec {
            stdout: None,
            stderr: None,
            to_supervisor: false,
            max_bytes: 50 * 1024 * 1024,
            backups: 10,
            max_line: 64 * 1024,
        }
    }
}

/// One supervised component: one OS process (and whatever it forks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentSpec {
    /// Unique name (`ps`, `is`, `svg` in the default configuration).
    pub name: String,
    /// Program and arguments; run directly, never through a shell.
    pub command: Vec<String>,
    /// Extra environment variables, on top of the supervisor's environment and
    /// `shared_env`.
    pub env: Vec<(String, String)>,
    /// Environment shared by many components (the configuration file puts every component's
    /// address here): one allocation for the whole tree, not one copy per component, which at
    /// a thousand components with ports would be a million strings. `env` overrides it.
    pub shared_env: Arc<[(String, String)]>,
    /// Working directory; the supervisor's own when `None`.
    pub cwd: Option<PathBuf>,
    /// The component's address (its `port`): the readiness probe connects to it (and `ready`
    /// may ask more of it).
    pub probe: Option<SocketAddr>,
    /// When a started component counts as ready, besides having stayed up `start_secs`.
    pub ready: Ready,
    /// A liveness probe while it runs.
    pub health: Option<Health>,
    /// Components that must be running before this one starts.
    pub depends_on: Vec<String>,
    /// Where the component's standard output and error go, one timestamped line at a time.
    pub log: LogSpec,
    /// How the component is started, restarted and stopped.
    pub policy: RestartPolicy,
    /// When it goes FATAL, the supervisor stops everything and exits non-zero (escalation).
    pub critical: bool,
    /// Resident memory of its whole process tree above which it is restarted (a failure).
    pub memory_limit: Option<u64>,
    /// How often that memory is sampled (only with a `memory_limit`).
    pub memory_check_interval: Duration,
    /// A listening socket the supervisor binds on the component's first start and holds until
    /// the component's actor stops, passed to every process of the component with the systemd
    /// protocol. `None`: the program binds its own port, which is checked to be free before
    /// each start.
    pub socket: Option<SocketSpec>,
}

/// A listening socket held by the supervisor (see [`ComponentSpec::socket`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketSpec {
    /// Where it listens.
    pub addr: SocketAddr,
    /// How many connections may wait to be accepted (the kernel caps it at
    /// `net.core.somaxconn`): while the component restarts, the ones that arrive wait there.
    pub backlog: u32,
}

/// The backlog of a held socket unless the configuration says otherwise.
pub const DEFAULT_BACKLOG: u32 = 1024;

impl ComponentSpec {
    /// A component running `command`, with every other setting at its default: no address,
    /// no dependencies, output discarded, the default policy.
    pub fn new(name: impl Into<String>, command: Vec<String>) -> Self {
        ComponentSpec {
            name: name.into(),
            command,
            env: Vec::new(),
            shared_env: Arc::from(Vec::new()),
            cwd: None,
            probe: None,
            ready: Ready::Port,
            health: None,
            depends_on: Vec::new(),
            log: LogSpec::discard(),
            policy: RestartPolicy::default(),
            critical: false,
            memory_limit: None,
            memory_check_interval: Duration::from_secs(1),
            socket: None,
        }
    }

    /// A builder for a component running `program`, every other setting at its default (see
    /// [`ComponentBuilder`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use imageserving_actors::spec::{ComponentSpec, RestartType};
    ///
    /// let web = ComponentSpec::builder("web", "python3")
    ///     .args(["-m", "http.server", "8000"])
    ///     .port(8000)
    ///     .restart(RestartType::Permanent)
    ///     .stop_timeout(Duration::from_secs(5))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(web.command, ["python3", "-m", "http.server", "8000"]);
    ///
    /// // The configuration file's checks apply: a name must be usable in file names.
    /// let err = ComponentSpec::builder("Web Server", "true").build().unwrap_err();
    /// assert!(err.to_string().contains("invalid"));
    /// ```
    pub fn builder(name: impl Into<String>, program: impl Into<String>) -> ComponentBuilder {
        ComponentBuilder {
            spec: ComponentSpec::new(name, vec![program.into()]),
        }
    }

    /// Whether `other` runs differently: any setting but `shared_env` differs. The shared block
    /// holds every component's address, so adding one component would otherwise count as a
    /// change of all of them; a component sees the new block at its next start.
    pub fn differs_from(&self, other: &ComponentSpec) -> bool {
        let mut other = other.clone();
        other.shared_env = Arc::clone(&self.shared_env);
        *self != other
    }

    /// Whether a restart of this component is a handover: its new process starts on the held
    /// listening socket while the old one still serves, and the old one is told to stop only
    /// once the new one said it is ready. That needs a socket the supervisor holds
    /// ([`ComponentSpec::socket`]) and a readiness signal that comes from the new process itself
    /// ([`Ready::Notify`]): a probe through the shared socket could be answered by the old one.
    pub fn hands_over(&self) -> bool {
        self.socket.is_some() && self.ready == Ready::Notify
    }

    /// Checks this component on its own, exactly as [`TreeSpec::validate`] (and so the
    /// configuration file) does: its name, its command, its policy and its probes. What involves
    /// other components (duplicate names and ports, dependencies) is the tree's to check.
    pub fn validate(&self) -> Result<(), SpecError> {
        if !valid_component_name(&self.name) {
            return Err(SpecError::InvalidName(self.name.clone()));
        }
        if self.command.first().is_none_or(String::is_empty) {
            return Err(SpecError::EmptyCommand(self.name.clone()));
        }
        self.policy.validate(&self.name)?;
        self.validate_probes()
    }
}

/// Builds a [`ComponentSpec`] in code; [`ComponentBuilder::build`] validates it like the
/// configuration file is validated.
#[derive(Clone, Debug)]
#[must_use]
pub struct ComponentBuilder {
    spec: ComponentSpec,
}

impl ComponentBuilder {
    /// Appends one argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.spec.command.push(arg.into());
        self
    }

    /// Appends arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.spec.command.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable (on top of the supervisor's environment).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.spec.env.push((key.into(), value.into()));
        self
    }

    /// Runs it in `dir`.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spec.cwd = Some(dir.into());
        self
    }

    /// Its address is `127.0.0.1:port`: it counts as ready once that port accepts a connection.
    pub fn port(mut self, port: u16) -> Self {
        self.spec.probe = Some(SocketAddr::from(([127, 0, 0, 1], port)));
        self
    }

    /// Its address, for the readiness probe (and `ready`, `health`).
    pub fn probe(mut self, addr: SocketAddr) -> Self {
        self.spec.probe = Some(addr);
        self
    }

    /// The supervisor holds a listening socket on `addr` for it (see [`ComponentSpec::socket`]).
    pub fn socket(mut self, addr: SocketAddr, backlog: u32) -> Self {
        self.spec.socket = Some(SocketSpec { addr, backlog });
        self
    }

    /// When it counts as ready (default: its port accepts, when it has one).
    pub fn ready(mut self, ready: Ready) -> Self {
        self.spec.ready = ready;
        self
    }

    /// A liveness probe while it runs.
    pub fn health(mut self, health: Health) -> Self {
        self.spec.health = Some(health);
        self
    }

    /// Starts only once `component` runs (and stops before it).
    pub fn depends_on(mut self, component: impl Into<String>) -> Self {
        self.spec.depends_on.push(component.into());
        self
    }

    /// Where its output goes (default: discarded).
    pub fn log(mut self, log: LogSpec) -> Self {
        self.spec.log = log;
        self
    }

    /// Its whole restart and stop policy.
    pub fn policy(mut self, policy: RestartPolicy) -> Self {
        self.spec.policy = policy;
        self
    }

    /// Which exits restart it (default: every one).
    pub fn restart(mut self, restart: RestartType) -> Self {
        self.spec.policy.restart = restart;
        self
    }

    /// How long it must stay up to count as running (default 1 s).
    pub fn start_secs(mut self, start_secs: Duration) -> Self {
        self.spec.policy.start_secs = start_secs;
        self
    }

    /// The signal that asks it to stop (default SIGTERM).
    pub fn stop_signal(mut self, signal: i32) -> Self {
        self.spec.policy.stop_signal = signal;
        self
    }

    /// How long it has after its stop signal before SIGKILL (default 10 s).
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.spec.policy.stop_timeout = timeout;
        self
    }

    /// How long the process a handover replaces has to finish its requests once its successor
    /// is ready, before SIGKILL (default 35 s; see [`ComponentSpec::hands_over`]).
    pub fn handover_grace(mut self, grace: Duration) -> Self {
        self.spec.policy.handover_grace = grace;
        self
    }

    /// Its going FATAL stops the whole tree (escalation).
    pub fn critical(mut self, critical: bool) -> Self {
        self.spec.critical = critical;
        self
    }

    /// Restart it when its process tree's resident memory exceeds `bytes`.
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.spec.memory_limit = Some(bytes);
        self
    }

    /// The component, validated as [`ComponentSpec::validate`] does.
    pub fn build(self) -> Result<ComponentSpec, SpecError> {
        self.spec.validate()?;
        Ok(self.spec)
    }
}

/// Builds a [`TreeSpec`] in code; [`TreeBuilder::build`] validates the whole tree.
///
/// ```
/// use imageserving_actors::spec::{ComponentSpec, Strategy, TreeSpec};
///
/// let db = ComponentSpec::builder("db", "sleep").arg("1000").build().unwrap();
/// let app = ComponentSpec::builder("app", "sleep").arg("1000").depends_on("db").build().unwrap();
/// let tree = TreeSpec::builder("my-app")
///     .component(app)
///     .component(db)
///     .strategy(Strategy::RestForOne)
///     .build()
///     .unwrap();
/// let order: Vec<_> = tree.start_order().unwrap().iter().map(|c| c.name.as_str()).collect();
/// assert_eq!(order, ["db", "app"]);
///
/// let cycle = TreeSpec::builder("bad")
///     .component(ComponentSpec::builder("a", "true").depends_on("b").build().unwrap())
///     .component(ComponentSpec::builder("b", "true").depends_on("a").build().unwrap())
///     .build();
/// assert!(cycle.unwrap_err().to_string().contains("cycle"));
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct TreeBuilder {
    spec: TreeSpec,
}

impl TreeBuilder {
    /// Adds a component.
    pub fn component(mut self, component: ComponentSpec) -> Self {
        self.spec.components.push(component);
        self
    }

    /// What else restarts when a component fails (default: only it).
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.spec.strategy = strategy;
        self
    }

    /// The notification socket's path ([`TreeSpec::notify_socket`]).
    pub fn notify_socket(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.spec.notify_socket = Some(path.into());
        self
    }

    /// More than `max_restarts` group restarts within `window` stop the tree (escalation).
    pub fn max_restarts(mut self, max_restarts: u32, window: Duration) -> Self {
        self.spec.max_restarts = max_restarts;
        self.spec.max_window = window;
        self
    }

    /// The tree, validated as [`TreeSpec::validate`] does.
    pub fn build(self) -> Result<TreeSpec, SpecError> {
        self.spec.validate()?;
        Ok(self.spec)
    }
}

/// The restart and stop rules of one component (see `docs/configuration.md`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestartPolicy {
    /// The process must stay up this long before it can count as running.
    pub start_secs: Duration,
    /// A start that has not become running within this time is killed and counts as a failure.
    pub start_timeout: Duration,
    /// Running this long makes the component stable: its failure count (for backoff) resets.
    pub stable_after: Duration,
    /// The delay before the second restart after a stable period; doubles with each failure.
    pub backoff_initial: Duration,
    /// The cap of the backoff delay.
    pub backoff_max: Duration,
    /// More than this many failures within `max_window` make the component FATAL.
    pub max_restarts: u32,
    /// The window of the restart budget.
    pub max_window: Duration,
    /// The signal that asks the component's process group to stop.
    pub stop_signal: i32,
    /// How long to wait after `stop_signal` before SIGKILL.
    pub stop_timeout: Duration,
    /// How long the process a handover replaces may take to finish its requests in flight once
    /// its successor is ready (`stop_signal`, then SIGKILL after this long).
    pub handover_grace: Duration,
    /// Which exits restart the component.
    pub restart: RestartType,
    /// Exit codes that count as a normal exit (for `Transient`).
    pub success_exit_codes: Vec<i32>,
    /// Retry a FATAL component after this long (slowly, again and again) instead of giving up.
    pub retry_fatal_after: Option<Duration>,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            start_secs: Duration::from_secs(1),
            start_timeout: Duration::from_secs(30),
            stable_after: Duration::from_secs(30),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            max_restarts: 5,
            max_window: Duration::from_secs(60),
            stop_signal: libc::SIGTERM,
            stop_timeout: Duration::from_secs(10),
            handover_grace: Duration::from_secs(35),
            restart: RestartType::Permanent,
            success_exit_codes: vec![0],
            retry_fatal_after: None,
        }
    }
}

/// Why a [`TreeSpec`] cannot run. Each message names the component and the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    /// Two components share a name.
    #[error("component `{0}` is defined twice")]
    DuplicateName(String),
    /// A name that cannot be used in status tables, environment variables and file names.
    #[error("component name `{0}` is invalid: use 1-32 characters among a-z, 0-9, `-` and `_`, starting with a letter")]
    InvalidName(String),
    /// `command` is empty or has an empty program.
    #[error("component `{0}`: `command` is missing or empty")]
    EmptyCommand(String),
    /// `depends_on` names a component that does not exist.
    #[error("component `{component}`: `depends_on` names unknown component `{dependency}`")]
    UnknownDependency {
        /// The component whose `depends_on` is wrong.
        component: String,
        /// The name it gave.
        dependency: String,
    },
    /// The dependencies form a cycle.
    #[error("dependency cycle: {}", .0.join(" -> "))]
    DependencyCycle(Vec<String>),
    /// Two components probe the same address.
    #[error("components `{0}` and `{1}` both use port {2}")]
    DuplicatePort(String, String, u16),
    /// A supervisor-wide setting that makes no sense.
    #[error("supervisor: `{key}` {reason}")]
    BadTree {
        /// The setting.
        key: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A policy value that makes no sense.
    #[error("component `{component}`: `{key}` {reason}")]
    BadPolicy {
        /// The component.
        component: String,
        /// The policy key.
        key: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Whether `name` can name a component (it ends up in file names and environment variables).
pub fn valid_component_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && name.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

impl TreeSpec {
    /// A builder for a tree identified by `tree_id` (see [`TreeBuilder`]). The tree id marks
    /// every process of the tree: give each tree of a machine its own (the daemon uses its
    /// home directory).
    pub fn builder(tree_id: impl Into<String>) -> TreeBuilder {
        TreeBuilder {
            spec: TreeSpec::new(tree_id, Vec::new()),
        }
    }

    /// A tree of `components` with the default strategy and budget.
    pub fn new(tree_id: impl Into<String>, components: Vec<ComponentSpec>) -> Self {
        TreeSpec {
            tree_id: tree_id.into(),
            components,
            strategy: Strategy::OneForOne,
            max_restarts: 10,
            max_window: Duration::from_secs(60),
            notify_socket: None,
        }
    }

    /// Checks names, commands, dependencies (known, acyclic), ports and policies.
    pub fn validate(&self) -> Result<(), SpecError> {
        let mut seen = HashSet::new();
        let mut ports: HashMap<u16, &str> = HashMap::new();
        for c in &self.components {
            if !seen.insert(c.name.as_str()) {
                return Err(SpecError::DuplicateName(c.name.clone()));
            }
            c.validate()?;
            if c.ready == Ready::Notify && self.notify_socket.is_none() {
                return Err(SpecError::BadPolicy {
                    component: c.name.clone(),
                    key: "ready",
                    reason: "is a notify check, but the tree has no notification socket",
                });
            }
            if let Some(addr) = c.probe {
                if let Some(other) = ports.insert(addr.port(), &c.name) {
                    return Err(SpecError::DuplicatePort(
                        other.to_string(),
                        c.name.clone(),
                        addr.port(),
                    ));
                }
            }
        }
        if self.max_window.is_zero() {
            return Err(SpecError::BadTree {
                key: "max_window",
                reason: "must be longer than 0",
            });
        }
        for c in &self.components {
            for d in &c.depends_on {
                if !seen.contains(d.as_str()) {
                    return Err(SpecError::UnknownDependency {
                        component: c.name.clone(),
                        dependency: d.clone(),
                    });
                }
            }
        }
        self.levels().map(|_| ())
    }

    /// The dependency level of each component, by index: 0 for no dependencies, else one more
    /// than the highest level among its dependencies. Fails on a cycle.
    pub fn levels(&self) -> Result<Vec<usize>, SpecError> {
        let index: HashMap<&str, usize> = self
            .components
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.as_str(), i))
            .collect();
        // 0 = unvisited, 1 = on the current path, 2 = done.
        let mut mark = vec![0u8; self.components.len()];
        let mut level = vec![0usize; self.components.len()];
        fn visit(
            i: usize,
            spec: &TreeSpec,
            index: &HashMap<&str, usize>,
            mark: &mut [u8],
            level: &mut [usize],
            path: &mut Vec<usize>,
        ) -> Result<usize, SpecError> {
            match mark[i] {
                2 => return Ok(level[i]),
                1 => {
                    let start = path.iter().position(|&p| p == i).unwrap_or(0);
                    let mut cycle: Vec<String> = path[start..]
                        .iter()
                        .map(|&p| spec.components[p].name.clone())
                        .collect();
                    cycle.push(spec.components[i].name.clone());
                    return Err(SpecError::DependencyCycle(cycle));
                }
                _ => {}
            }
            mark[i] = 1;
            path.push(i);
            let mut l = 0;
            for d in &spec.components[i].depends_on {
                if let Some(&j) = index.get(d.as_str()) {
                    l = l.max(visit(j, spec, index, mark, level, path)? + 1);
                }
            }
            path.pop();
            mark[i] = 2;
            level[i] = l;
            Ok(l)
        }
        let mut path = Vec::new();
        for i in 0..self.components.len() {
            visit(i, self, &index, &mut mark, &mut level, &mut path)?;
        }
        Ok(level)
    }

    /// The components in start order: by dependency level, then configuration order.
    pub fn start_order(&self) -> Result<Vec<&ComponentSpec>, SpecError> {
        let levels = self.levels()?;
        let mut order: Vec<usize> = (0..self.components.len()).collect();
        order.sort_by_key(|&i| (levels[i], i));
        Ok(order.into_iter().map(|i| &self.components[i]).collect())
    }
}

impl ComponentSpec {
    fn validate_probes(&self) -> Result<(), SpecError> {
        let bad = |key, reason| SpecError::BadPolicy {
            component: self.name.clone(),
            key,
            reason,
        };
        let needs_addr = |r: &Ready| matches!(r, Ready::Http(_));
        if needs_addr(&self.ready) && self.probe.is_none() {
            return Err(bad(
                "ready",
                "asks for an HTTP check but the component has no `port`",
            ));
        }
        if let Some(h) = &self.health {
            if h.check == Ready::Notify {
                return Err(bad(
                    "health",
                    "cannot be a notify check: a process says READY=1 once, at its start",
                ));
            }
            if h.check == Ready::Port && self.probe.is_none()
                || needs_addr(&h.check) && self.probe.is_none()
            {
                return Err(bad(
                    "health",
                    "checks the port but the component has no `port`",
                ));
            }
            if h.interval.is_zero() || h.timeout.is_zero() || h.max_failed == 0 {
                return Err(bad(
                    "health",
                    "needs an interval, a timeout and max_failed above 0",
                ));
            }
        }
        // The kernel completes connections on a held socket before any process accepts them.
        let held = self.socket.is_some();
        if held && self.ready == Ready::Port {
            return Err(bad(
                "ready",
                "cannot be a TCP check when the supervisor holds the socket (it accepts before the program does): use an `http` or `file` check",
            ));
        }
        if held && self.health.as_ref().is_some_and(|h| h.check == Ready::Port) {
            return Err(bad(
                "health",
                "cannot be a TCP check when the supervisor holds the socket: use an `http` or `file` check",
            ));
        }
        if self.memory_limit == Some(0) {
            return Err(bad("memory_limit", "must be above 0"));
        }
        if self.memory_limit.is_some() && self.memory_check_interval.is_zero() {
            return Err(bad("memory_check_interval", "must be longer than 0"));
        }
        if self.log.max_bytes == 0 || self.log.max_line == 0 {
            return Err(bad("log_max_bytes", "must be above 0"));
        }
        Ok(())
    }
}

impl RestartPolicy {
    fn validate(&self, component: &str) -> Result<(), SpecError> {
        let bad = |key, reason| SpecError::BadPolicy {
            component: component.to_string(),
            key,
            reason,
        };
        if self.start_timeout < self.start_secs {
            return Err(bad(
                "start_timeout",
                "must not be shorter than `start_secs`",
            ));
        }
        if self.backoff_max < self.backoff_initial {
            return Err(bad(
                "backoff_max",
                "must not be shorter than `backoff_initial`",
            ));
        }
        if self.max_window.is_zero() {
            return Err(bad("max_window", "must be longer than 0"));
        }
        if self.stop_signal <= 0 || self.stop_signal >= 32 || self.stop_signal == libc::SIGKILL {
            return Err(bad(
                "stop_signal",
                "must be a catchable standard signal (SIGKILL follows by itself after `stop_timeout`)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comp(name: &str, deps: &[&str]) -> ComponentSpec {
        let mut c = ComponentSpec::new(name, vec!["true".into()]);
        c.depends_on = deps.iter().map(ToString::to_string).collect();
        c
    }

    fn tree(components: Vec<ComponentSpec>) -> TreeSpec {
        TreeSpec::new("t", components)
    }

    #[test]
    fn default_stack_orders_back_ends_first() {
        let t = tree(vec![
            comp("ps", &["is", "svg"]),
            comp("is", &["svg"]),
            comp("svg", &[]),
        ]);
        t.validate().unwrap();
        let names: Vec<_> = t
            .start_order()
            .unwrap()
            .iter()
            .map(|c| c.name.clone())
            .collect();
        assert_eq!(names, ["svg", "is", "ps"]);
    }

    #[test]
    fn cycle_is_named() {
        let t = tree(vec![
            comp("a", &["b"]),
            comp("b", &["c"]),
            comp("c", &["a"]),
        ]);
        assert_eq!(
            t.validate(),
            Err(SpecError::DependencyCycle(vec![
                "a".into(),
                "b".into(),
                "c".into(),
                "a".into()
            ]))
        );
    }

    #[test]
    fn unknown_dependency_duplicate_and_names() {
        assert!(matches!(
            tree(vec![comp("a", &["zz"])]).validate(),
            Err(SpecError::UnknownDependency { .. })
        ));
        assert_eq!(
            tree(vec![comp("a", &[]), comp("a", &[])]).validate(),
            Err(SpecError::DuplicateName("a".into()))
        );
        assert_eq!(
            tree(vec![comp("A b", &[])]).validate(),
            Err(SpecError::InvalidName("A b".into()))
        );
        let mut c = comp("a", &[]);
        c.command.clear();
        assert_eq!(
            tree(vec![c]).validate(),
            Err(SpecError::EmptyCommand("a".into()))
        );
    }

    #[test]
    fn duplicate_port_and_bad_policy() {
        let mut a = comp("a", &[]);
        let mut b = comp("b", &[]);
        a.probe = Some("127.0.0.1:5000".parse().unwrap());
        b.probe = Some("127.0.0.1:5000".parse().unwrap());
        assert_eq!(
            tree(vec![a, b.clone()]).validate(),
            Err(SpecError::DuplicatePort("a".into(), "b".into(), 5000))
        );
        b.policy.stop_signal = libc::SIGKILL;
        b.probe = None;
        assert!(matches!(
            tree(vec![b]).validate(),
            Err(SpecError::BadPolicy {
                key: "stop_signal",
                ..
            })
        ));
    }
}

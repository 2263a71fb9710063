//! The probes of docs/scaling.md and deploy/kubernetes/imageserving.yaml, run against a live stack.
//!
//! Nothing here restates the manifest: each test reads from the manifest file itself the
//! container's command, the configuration of its ConfigMap, the startup, readiness and liveness
//! probes with their timings, the preStop delay and the termination grace period (simple line
//! parsing, no YAML library). It runs that configuration on a temporary home, its ports replaced
//! by ephemeral ones and `ps` moved to loopback, under `imageserving supervisor` in the
//! foreground as the container does, and runs the probes as the kubelet would: an exec probe as
//! the command (the program and the pod's home replaced by the binary under test and the
//! temporary home), within its `timeoutSeconds`, passing on exit 0; the HTTP probe as a `GET` on
//! `ps`'s port within its `timeoutSeconds`, passing on 200–399.
//!
//! What is checked: a healthy node passes all three probes, and a SIGTERM stops it within the
//! grace period; with `is` held down (a broken catalog, then killed) readiness is 503 while
//! liveness stays 0 and `ps`'s own health check passes; a crash of `ps` or of `is`, which the
//! supervisor repairs, fails fewer probes in a row than their failure thresholds; a new node
//! whose `is` cannot start never passes its startup probe; a killed supervisor fails liveness
//! with exit 3; and the manifest agrees with itself (ports, probe commands, grace period).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{
    component_of, free_port, pid, run_command, wait_for, Output, TestHome, BIN, SETTLE, TREE_ENV,
};
use crate::http::{self, Answer};
use crate::procs::{self, ProcId};

/// The manifest, the single source of the probes.
const MANIFEST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/kubernetes/imageserving.yaml"
);

/// The home inside the pod; replaced by the temporary home.
const POD_HOME: &str = "/var/lib/imageserving";

/// The program the manifest's commands run; replaced by the binary under test.
const PROGRAM: &str = "imageserving";

/// `status`: the supervisor, or the component asked for, is not running (src/exit.rs).
const NOT_RUNNING: i32 = 3;

/// The components of the manifest's configuration.
const ALL: [&str; 3] = ["is", "svg", "ps"];

/// The Kubernetes defaults of a probe's fields.
const DEFAULT_PERIOD: u64 = 10;
const DEFAULT_TIMEOUT: u64 = 1;
const DEFAULT_FAILURE_THRESHOLD: u32 = 3;

/// One meaningful line of the manifest: its indentation (a list item's `- ` counts as
/// indentation, so the item's first key lines up with its other keys) and its text.
#[derive(Clone, Copy, Debug)]
struct Line<'a> {
    indent: usize,
    text: &'a str,
}

/// The manifest, read from the file, as lines.
struct Manifest {
    raw: String,
}

impl Manifest {
    fn load() -> Manifest {
        let raw =
            fs::read_to_string(MANIFEST).unwrap_or_else(|e| panic!("reading {MANIFEST}: {e}"));
        Manifest { raw }
    }

    /// Every line but blank lines and comments.
    fn lines(&self) -> Vec<Line<'_>> {
        self.raw
            .lines()
            .filter_map(|line| {
                let mut indent = line.len() - line.trim_start().len();
                let mut text = line.trim();
                if text.is_empty() || text.starts_with('#') {
                    return None;
                }
                while let Some(rest) = text.strip_prefix("- ") {
                    let rest_trimmed = rest.trim_start();
                    indent += text.len() - rest_trimmed.len();
                    text = rest_trimmed;
                }
                Some(Line { indent, text })
            })
            .collect()
    }

    /// The container (the first and only one).
    fn container(&self) -> Vec<Line<'_>> {
        section(&self.lines(), "containers").to_vec()
    }

    /// The probe `name` (`startupProbe`, `readinessProbe`, `livenessProbe`) of the container.
    fn probe(&self, name: &str) -> Probe {
        let container = self.container();
        let lines = section(&container, name);
        let seconds = |key: &str, default: u64| {
            field(lines, key).map_or(default, |v| {
                v.parse()
                    .unwrap_or_else(|e| panic!("{name}.{key}: {v:?}: {e}"))
            })
        };
        let action = if has_key(lines, "exec") {
            let command = field(section(lines, "exec"), "command")
                .unwrap_or_else(|| panic!("{name}.exec has no command"));
            Action::Exec(flow_list(command))
        } else if has_key(lines, "httpGet") {
            let get = section(lines, "httpGet");
            Action::Http {
                path: field(get, "path")
                    .unwrap_or_else(|| panic!("{name}.httpGet has no path"))
                    .to_owned(),
                port: field(get, "port")
                    .unwrap_or_else(|| panic!("{name}.httpGet has no port"))
                    .to_owned(),
            }
        } else {
            panic!("{name}: neither exec nor httpGet");
        };
        let failure_threshold =
            field(lines, "failureThreshold").map_or(DEFAULT_FAILURE_THRESHOLD, |v| {
                v.parse()
                    .unwrap_or_else(|e| panic!("{name}.failureThreshold: {e}"))
            });
        Probe {
            name: name.to_owned(),
            action,
            initial_delay: Duration::from_secs(seconds("initialDelaySeconds", 0)),
            period: Duration::from_secs(seconds("periodSeconds", DEFAULT_PERIOD)),
            timeout: Duration::from_secs(seconds("timeoutSeconds", DEFAULT_TIMEOUT)),
            failure_threshold,
        }
    }

    /// The container's `command` followed by its `args`.
    fn container_argv(&self) -> Vec<String> {
        let container = self.container();
        let mut argv = flow_list(field(&container, "command").expect("the container's command"));
        argv.extend(flow_list(
            field(&container, "args").expect("the container's args"),
        ));
        argv
    }

    /// The `containerPort` of the container's port called `name`.
    fn container_port(&self, name: &str) -> u16 {
        let container = self.container();
        let mut current = None;
        for line in section(&container, "ports") {
            if let Some(n) = line.text.strip_prefix("name:") {
                current = Some(unquote(n));
            } else if let Some(port) = line.text.strip_prefix("containerPort:") {
                if current == Some(name) {
                    return unquote(port).parse().expect("a containerPort number");
                }
            }
        }
        panic!("the container has no port called {name:?}");
    }

    /// The Service's `targetPort`.
    fn service_target_port(&self) -> String {
        field(&self.lines(), "targetPort")
            .expect("the Service's targetPort")
            .to_owned()
    }

    /// `terminationGracePeriodSeconds`.
    fn grace_period(&self) -> Duration {
        let v = field(&self.lines(), "terminationGracePeriodSeconds")
            .expect("terminationGracePeriodSeconds");
        Duration::from_secs(v.parse().expect("a number of seconds"))
    }

    /// How long the preStop hook (`sleep N`) holds the container before its SIGTERM.
    fn pre_stop(&self) -> Duration {
        let container = self.container();
        let hook = section(section(&container, "preStop"), "exec");
        let command = flow_list(field(hook, "command").expect("preStop.exec.command"));
        assert_eq!(command.len(), 2, "preStop: {command:?}");
        assert_eq!(command[0], "sleep", "preStop: {command:?}");
        Duration::from_secs(command[1].parse().expect("sleep's seconds"))
    }

    /// The text of the ConfigMap's `imageserving.toml`, its block indentation removed.
    fn config(&self) -> String {
        let mut lines = self.raw.lines();
        let key = lines
            .by_ref()
            .find(|l| l.trim() == "imageserving.toml: |")
            .expect("the ConfigMap's `imageserving.toml: |`");
        let key_indent = key.len() - key.trim_start().len();
        let block: Vec<&str> = lines
            .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > key_indent)
            .collect();
        let indent = block
            .iter()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.len() - l.trim_start().len())
            .min()
            .expect("an empty imageserving.toml");
        block
            .iter()
            .map(|l| l.get(indent..).unwrap_or("").trim_end())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The lines of the block under the first line `key:` (those indented deeper than it).
#[track_caller]
fn section<'a, 'b>(lines: &'b [Line<'a>], key: &str) -> &'b [Line<'a>] {
    let header = format!("{key}:");
    let start = lines
        .iter()
        .position(|l| l.text == header)
        .unwrap_or_else(|| panic!("no `{key}:` in the manifest"));
    let indent = lines[start].indent;
    let len = lines[start + 1..]
        .iter()
        .take_while(|l| l.indent > indent)
        .count();
    &lines[start + 1..start + 1 + len]
}

/// Whether `lines` hold a line `key:` opening a block.
fn has_key(lines: &[Line<'_>], key: &str) -> bool {
    let header = format!("{key}:");
    lines.iter().any(|l| l.text == header)
}

/// The value of `key: value` at the shallowest level of `lines` where it occurs (so a
/// container's `command` is not taken from one of its probes).
fn field<'a>(lines: &[Line<'a>], key: &str) -> Option<&'a str> {
    let prefix = format!("{key}:");
    lines
        .iter()
        .filter(|l| l.text.starts_with(&prefix) && l.text.len() > prefix.len())
        .min_by_key(|l| l.indent)
        .map(|l| unquote(&l.text[prefix.len()..]))
}

/// A scalar without its surrounding spaces and quotes.
fn unquote(value: &str) -> &str {
    value.trim().trim_matches('"')
}

/// `["a", "b"]` → `a`, `b`.
#[track_caller]
fn flow_list(value: &str) -> Vec<String> {
    let inner = value
        .trim()
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or_else(|| panic!("not a one-line list: {value:?}"));
    inner
        .split(',')
        .map(|item| unquote(item).to_owned())
        .collect()
}

/// A probe as the manifest gives it.
#[derive(Debug)]
struct Probe {
    name: String,
    action: Action,
    initial_delay: Duration,
    period: Duration,
    timeout: Duration,
    failure_threshold: u32,
}

impl Probe {
    /// How long a condition may last before the kubelet acts on it: it sees at most
    /// `ceil(outage / period)` failures in a row, so an outage shorter than
    /// `(failureThreshold - 1) × period` never reaches the threshold.
    fn tolerated_outage(&self) -> Duration {
        self.period * (self.failure_threshold - 1)
    }

    /// The whole time a startup probe allows.
    fn startup_budget(&self) -> Duration {
        self.initial_delay + self.period * self.failure_threshold
    }
}

#[derive(Debug)]
enum Action {
    /// Run this command in the container; exit 0 passes.
    Exec(Vec<String>),
    /// `GET path` on the container port called `port`; 200–399 passes.
    Http { path: String, port: String },
}

/// One node of the fleet: the manifest's configuration under a foreground supervisor.
struct Node {
    home: TestHome,
    manifest: Manifest,
    /// `ps`'s port (the manifest's container port, replaced).
    ps: u16,
    /// The foreground supervisor: the container's PID 1.
    supervisor: u32,
    /// The configuration the node runs (the manifest's, with ports replaced).
    config: String,
    /// When the supervisor was started.
    launched: Instant,
}

impl Node {
    /// Starts the manifest's configuration as the container does, and waits (within the
    /// startup probe's budget) until the startup probe passes.
    fn start() -> Node {
        let node = Node::launch(|_| {});
        let startup = node.manifest.probe("startupProbe");
        let budget = startup.startup_budget();
        wait_for(budget, "the startup probe to pass", || {
            node.passes(&startup)
        });
        node.home.wait_running(&ALL);
        eprintln!(
            "scaling: startup probe passed after {:?} (budget {budget:?})",
            node.launched.elapsed()
        );
        node
    }

    /// Starts the manifest's configuration as the container does, `prepare` called on the
    /// home before the supervisor starts; does not wait for anything.
    fn launch(prepare: impl FnOnce(&Path)) -> Node {
        let manifest = Manifest::load();
        let argv = manifest.container_argv();
        assert_eq!(
            argv,
            [PROGRAM, "--home", POD_HOME, "supervisor"],
            "the container runs the supervisor in the foreground on the pod's home: \
             what TestHome::spawn_foreground runs"
        );
        let container_port = manifest.container_port("http");
        let (ps, is, svg) = (free_port(), free_port(), free_port());
        let mut config = manifest.config();
        for (from, to) in [
            (
                format!("port = {container_port}\n"),
                format!("port = {ps}\n"),
            ),
            ("port = 27345\n".to_owned(), format!("port = {is}\n")),
            ("port = 27346\n".to_owned(), format!("port = {svg}\n")),
            (
                "host = \"0.0.0.0\"\n".to_owned(),
                "host = \"127.0.0.1\"\n".to_owned(),
            ),
        ] {
            assert_eq!(
                config.matches(&from).count(),
                1,
                "the manifest's configuration has one `{}`:\n{config}",
                from.trim()
            );
            config = config.replace(&from, &to);
        }
        let home = TestHome::new(&config);
        prepare(home.path());
        let launched = Instant::now();
        let supervisor = home.spawn_foreground();
        Node {
            home,
            manifest,
            ps,
            supervisor,
            config,
            launched,
        }
    }

    /// Runs an exec probe's command: `Ok` with its output when it ended within the probe's
    /// timeout, `Err` when the kubelet would have given up on it.
    fn exec(&self, probe: &Probe) -> Result<Output, Output> {
        let Action::Exec(argv) = &probe.action else {
            panic!("{} is not an exec probe", probe.name);
        };
        assert_eq!(argv[0], PROGRAM, "{}: {argv:?}", probe.name);
        let home = self.home.path().to_str().expect("a UTF-8 home");
        let args: Vec<&str> = argv[1..]
            .iter()
            .map(|a| if a == POD_HOME { home } else { a.as_str() })
            .collect();
        assert!(
            args.contains(&home),
            "{}: the probe names the pod's home: {argv:?}",
            probe.name
        );
        let mut cmd = Command::new(BIN);
        cmd.args(&args)
            .env_remove("IMAGESERVING_HOME")
            .env_remove("IMAGESERVING_LOG")
            .env_remove(TREE_ENV);
        run_command(cmd, args.join(" "), probe.timeout)
    }

    /// Runs an exec probe's command, which must end within the probe's timeout.
    #[track_caller]
    fn exec_in_time(&self, probe: &Probe) -> Output {
        self.exec(probe).unwrap_or_else(|out| {
            panic!("{} timed out after {:?}\n{out}", probe.name, probe.timeout)
        })
    }

    /// An exec probe's exit code; `None` when it timed out (a failure for the kubelet).
    fn exit_code(&self, probe: &Probe) -> Option<i32> {
        self.exec(probe).ok().and_then(|out| out.code())
    }

    /// Runs an HTTP probe within its timeout.
    fn get(&self, probe: &Probe) -> std::io::Result<Answer> {
        let Action::Http { path, port } = &probe.action else {
            panic!("{} is not an HTTP probe", probe.name);
        };
        assert_eq!(
            self.manifest.container_port(port),
            self.manifest.container_port("http"),
            "{}: probes ps's port",
            probe.name
        );
        http::get(self.ps, path, probe.timeout)
    }

    /// Whether the kubelet would count `probe` as passed now.
    fn passes(&self, probe: &Probe) -> bool {
        match probe.action {
            Action::Exec(_) => self.exit_code(probe) == Some(0),
            Action::Http { .. } => self
                .get(probe)
                .is_ok_and(|a| (200..400).contains(&a.status)),
        }
    }

    /// Runs `imageserving status [component]` the usual way.
    fn status(&self, args: &[&str]) -> Output {
        let mut all = vec!["status"];
        all.extend_from_slice(args);
        self.home.run(&all)
    }

    /// The pid of a component, from `status --json`.
    fn pid_of(&self, name: &str) -> Option<u32> {
        self.home.pid_of(name)
    }

    /// SIGKILLs the process `pid`.
    fn kill(&self, what: &str, pid: u32) {
        let id = ProcId::of(pid).unwrap_or_else(|| panic!("{what} (pid {pid}) is gone"));
        assert!(procs::kill(id), "could not kill {what} (pid {pid})");
    }
}

/// The `http` path of `health = { http = "…", … }` in the table of `component`.
fn health_path(config: &str, component: &str) -> String {
    let header = format!("[components.{component}]");
    let table: Vec<&str> = config
        .lines()
        .skip_while(|l| l.trim() != header)
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with('['))
        .collect();
    let health = table
        .iter()
        .find(|l| l.trim_start().starts_with("health"))
        .unwrap_or_else(|| panic!("{component} has no health check in:\n{config}"));
    let (_, rest) = health
        .split_once("http = \"")
        .unwrap_or_else(|| panic!("{component}'s health check is not an HTTP one: {health}"));
    rest.split('"').next().unwrap_or_default().to_owned()
}

#[test]
fn the_manifest_is_consistent_with_itself() {
    let manifest = Manifest::load();
    // The Service and the readiness probe reach the port ps listens on.
    let port = manifest.container_port("http");
    assert_eq!(manifest.service_target_port(), "http");
    let readiness = manifest.probe("readinessProbe");
    let Action::Http { path, port: name } = &readiness.action else {
        panic!("readiness is an HTTP probe: {readiness:?}");
    };
    assert_eq!(path, "/healthz");
    assert_eq!(manifest.container_port(name), port);
    assert!(
        manifest.config().contains(&format!("port = {port}\n")),
        "ps's port in the configuration is the container port {port}"
    );
    // Liveness and startup run `status ps` on the pod's home.
    for name in ["livenessProbe", "startupProbe"] {
        let probe = manifest.probe(name);
        let Action::Exec(argv) = &probe.action else {
            panic!("{name} is an exec probe: {probe:?}");
        };
        assert_eq!(
            argv,
            &[PROGRAM, "--home", POD_HOME, "status", "ps"],
            "{name}"
        );
    }
    // The grace period covers the preStop delay and the worst ordered stop with the
    // configuration's stop_timeouts (none is set: 10 s each): ps, then is and svg together,
    // then the supervisor's own exit (its bounded waits: 5 s for the tree, 1 s for the runtime).
    assert!(
        !manifest.config().contains("stop_timeout"),
        "the sum below assumes the default stop_timeout"
    );
    let ordered_stop = Duration::from_secs(10 + 10 + 6);
    assert!(
        manifest.pre_stop() + ordered_stop < manifest.grace_period(),
        "terminationGracePeriodSeconds {:?} must exceed preStop {:?} + the ordered stop {ordered_stop:?}",
        manifest.grace_period(),
        manifest.pre_stop()
    );
}

#[test]
fn a_healthy_node_passes_every_probe_and_stops_within_its_grace_period() {
    let node = Node::start();
    let readiness = node.manifest.probe("readinessProbe");
    let liveness = node.manifest.probe("livenessProbe");

    // Readiness starts once startup has passed; the first probe must pass.
    let ready = node.get(&readiness).expect("the readiness probe answers");
    assert_eq!(ready.status, 200, "ready: {}", ready.text());
    assert_eq!(ready.text().trim(), "ok");
    let alive = node.exec_in_time(&liveness);
    assert_eq!(alive.code(), Some(0), "alive\n{alive}");
    assert!(alive.stdout.contains("RUNNING"), "{alive}");
    node.status(&[]).expect_code(0);

    // The kubelet's stop: preStop, then SIGTERM to PID 1, SIGKILL at the end of the grace
    // period. The ordered stop must end well within what is left of it.
    let left = node.manifest.grace_period() - node.manifest.pre_stop();
    let pid1 = ProcId::of(node.supervisor).expect("the supervisor runs");
    let asked = Instant::now();
    assert!(procs::signal(pid1, libc::SIGTERM), "could not SIGTERM it");
    let exit = node.home.wait_foreground(left);
    let took = asked.elapsed();
    assert_eq!(exit.code(), Some(0), "an ordered stop exits 0: {exit}");
    eprintln!("scaling: ordered stop took {took:?} (grace left after preStop: {left:?})");

    // The supervisor is gone: liveness says 3, readiness gets no answer at all.
    let dead = node.exec_in_time(&liveness);
    assert_eq!(dead.code(), Some(NOT_RUNNING), "{dead}");
    assert!(dead.stdout.contains("is not running"), "{dead}");
    assert!(
        node.get(&readiness).is_err(),
        "nothing listens on ps's port any more"
    );
}

#[test]
fn with_the_image_server_held_down_the_node_is_alive_but_not_ready() {
    let node = Node::start();
    let readiness = node.manifest.probe("readinessProbe");
    let liveness = node.manifest.probe("livenessProbe");
    assert!(node.passes(&readiness), "ready before the fault");
    assert_eq!(node.exit_code(&liveness), Some(0), "alive before the fault");
    let ps_pid = node.pid_of("ps").expect("ps runs");

    // A broken catalog on the content volume: the running `is` keeps its catalogs, but a new
    // one cannot start. Then `is` dies, and every restart fails.
    let broken = node.home.path().join("catalog/broken.ini");
    fs::write(&broken, "this line is not Name=value\n").expect("writing a broken catalog");
    let is_pid = node.pid_of("is").expect("is runs");
    node.kill("is", is_pid);

    wait_for(SETTLE, "readiness 503", || {
        node.get(&readiness).is_ok_and(|a| a.status == 503)
    });
    // Held down: the supervisor gave up on `is` for now (it retries after retry_fatal_after).
    let mut status = serde_json::Value::Null;
    wait_for(SETTLE, "is FATAL", || {
        status = node.home.status_json();
        component_of(&status, "is")["state"] == "FATAL"
    });

    // Not ready: ps answers, 503 with Retry-After.
    let not_ready = node
        .get(&readiness)
        .expect("ps answers its readiness probe");
    assert_eq!(not_ready.status, 503, "{}", not_ready.text());
    assert_eq!(not_ready.header("retry-after"), Some("1"));
    // Alive: the liveness probe passes, the node must not be restarted for this.
    let alive = node.exec_in_time(&liveness);
    assert_eq!(alive.code(), Some(0), "ps runs while is is down\n{alive}");
    node.status(&[]).expect_code(0);
    // `status is` would say 3: a liveness probe on it would restart the pod for this.
    node.status(&["is"]).expect_code(NOT_RUNNING);
    // ps's own health check in the supervisor passes too: ps is not restarted for is's fault.
    let ps_health = health_path(&node.config, "ps");
    assert_eq!(ps_health, "/livez", "ps's liveness is its own");
    let live = http::get(node.ps, &ps_health, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("GET {ps_health}: {e}"));
    assert_eq!(live.status, 200, "{}", live.text());
    let ps_now = component_of(&status, "ps");
    assert_eq!(ps_now["state"], "RUNNING");
    assert_eq!(pid(&ps_now["pid"]), Some(ps_pid), "ps was not restarted");
    assert_eq!(ps_now["restarts"], 0);

    // The cause removed and `is` started again: ready again, with the same PID 1.
    fs::remove_file(&broken).expect("removing the broken catalog");
    node.home.run(&["restart", "is"]).expect_code(0);
    wait_for(SETTLE, "readiness 200 again", || node.passes(&readiness));
    assert_eq!(node.exit_code(&liveness), Some(0));
    assert_eq!(
        pid(&node.home.status_json()["supervisor"]["pid"]),
        Some(node.supervisor),
        "the same supervisor: the pod was never restarted"
    );
}

#[test]
fn component_crashes_the_supervisor_repairs_never_reach_a_failure_threshold() {
    let node = Node::start();
    let readiness = node.manifest.probe("readinessProbe");
    let liveness = node.manifest.probe("livenessProbe");

    // A crash of `is`: the liveness probe never fails, and readiness is back before a second
    // failed readiness probe could take the pod out of the Service.
    let is_pid = node.pid_of("is").expect("is runs");
    let killed = Instant::now();
    node.kill("is", is_pid);
    assert_eq!(
        node.exit_code(&liveness),
        Some(0),
        "alive while is restarts"
    );
    wait_for(
        readiness.tolerated_outage(),
        "readiness after an is crash",
        || node.passes(&readiness),
    );
    eprintln!(
        "scaling: is killed -> ready again in {:?} (tolerated: {:?})",
        killed.elapsed(),
        readiness.tolerated_outage()
    );
    assert_eq!(node.exit_code(&liveness), Some(0));

    // A crash of `ps`: `status ps` says 3 while the supervisor replaces it, for less than
    // the liveness probe tolerates.
    let ps_pid = node.pid_of("ps").expect("ps runs");
    let killed = Instant::now();
    node.kill("ps", ps_pid);
    wait_for(
        liveness.tolerated_outage(),
        "liveness after a ps crash",
        || node.passes(&liveness) && node.pid_of("ps").is_some_and(|p| p != ps_pid),
    );
    let outage = killed.elapsed();
    eprintln!(
        "scaling: ps killed -> liveness passes again in {outage:?} (tolerated: {:?})",
        liveness.tolerated_outage()
    );
    wait_for(SETTLE, "readiness after a ps crash", || {
        node.passes(&readiness)
    });
    let status = node.home.status_json();
    assert_eq!(component_of(&status, "ps")["restarts"], 1, "{status:#}");
    assert_eq!(pid(&status["supervisor"]["pid"]), Some(node.supervisor));
}

#[test]
fn a_killed_supervisor_fails_liveness_with_exit_3() {
    let node = Node::start();
    let liveness = node.manifest.probe("livenessProbe");
    assert_eq!(node.exit_code(&liveness), Some(0));

    // SIGKILL: no ordered stop, the control socket stays behind, stale. (In a container the
    // runtime sees PID 1 die; on a VM the init system does. The probe must say so too.)
    let pid1 = ProcId::of(node.supervisor).expect("the supervisor runs");
    assert!(procs::kill(pid1), "could not kill the supervisor");
    let exit = node.home.wait_foreground(Duration::from_secs(10));
    assert_eq!(exit.code(), None, "killed by a signal: {exit}");
    assert!(node.home.socket().exists(), "the stale socket is left");

    let dead = node.exec_in_time(&liveness);
    assert_eq!(dead.code(), Some(NOT_RUNNING), "{dead}");
    assert!(dead.stdout.contains("is not running"), "{dead}");
    // The components followed their supervisor (PR_SET_PDEATHSIG): nothing answers.
    wait_for(SETTLE, "ps gone with its supervisor", || {
        std::net::TcpStream::connect(("127.0.0.1", node.ps)).is_err()
    });
}

#[test]
fn a_new_node_whose_image_server_cannot_start_never_passes_its_startup_probe() {
    // The same broken catalog, there before the node starts: `is` never runs, so `ps`, which
    // waits for it, is never started.
    let node = Node::launch(|home| {
        fs::create_dir_all(home.join("catalog")).expect("creating catalog/");
        fs::write(
            home.join("catalog/broken.ini"),
            "this line is not Name=value\n",
        )
        .expect("writing a broken catalog");
    });
    let startup = node.manifest.probe("startupProbe");
    let readiness = node.manifest.probe("readinessProbe");
    wait_for(SETTLE, "is FATAL", || {
        node.home
            .try_status_json()
            .is_some_and(|s| component_of(&s, "is")["state"] == "FATAL")
    });
    let status = node.home.status_json();
    let ps = component_of(&status, "ps");
    assert_eq!(ps["pid"], serde_json::Value::Null, "{status:#}");
    assert!(
        ps["info"].as_str().is_some_and(|i| i.contains("is FATAL")),
        "ps says why it was not started: {status:#}"
    );
    // The startup probe fails (the kubelet restarts the container once its budget is spent),
    // and readiness gets no answer: the pod never joins the Service.
    let probe = node.exec_in_time(&startup);
    assert_eq!(probe.code(), Some(NOT_RUNNING), "{probe}");
    assert!(
        node.get(&readiness).is_err(),
        "nothing listens on ps's port"
    );
}

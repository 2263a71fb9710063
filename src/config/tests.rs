//! Unit tests of the configuration parser.

use std::path::Path;

use imageserving_actors::spec::{Health, LogSpec, Ready, RestartPolicy, RestartType, Strategy};

use super::raw::SizeText;
use super::values::size;
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
    // Every server: a liveness check of its own (ps's /livez, which does not follow is), and a
    // FATAL retried after a minute, so that a node heals by itself.
    for (name, path) in [("ps", "/livez"), ("is", "/healthz"), ("svg", "/healthz")] {
        let comp = c.component(name).unwrap();
        assert_eq!(
            comp.policy,
            RestartPolicy {
                retry_fatal_after: Some(Duration::from_secs(60)),
                ..RestartPolicy::default()
            },
            "{name}"
        );
        assert_eq!(
            comp.health,
            Some(Health {
                check: Ready::Http(path.into()),
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(2),
                max_failed: 3,
            }),
            "{name}"
        );
    }
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
handover_grace = "45s"
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
            handover_grace: Duration::from_secs(45),
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
    let msg = parse_err("[components.a]\ncommand = [\"x\"]\nhost = \"example.com\"\nport = 80\n");
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
        msg.contains("components.\"Image Server\": `Image Server` is not a valid component name"),
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
fn ready_can_wait_for_the_process_to_say_so() {
    let config = parse_ok(&one("ready = { notify = true }"));
    assert_eq!(config.component("a").unwrap().ready, Ready::Notify);
    assert_eq!(
        config.tree.notify_socket.as_deref(),
        Some(std::path::Path::new(
            "/nonexistent-imageserving/home/run/notify.sock"
        ))
    );
    let msg = parse_err(&one("ready = { notify = true, http = \"/healthz\" }"));
    assert!(
        msg.contains("components.a.ready: give exactly one"),
        "{msg}"
    );
    let msg = parse_err(&one("ready = { notify = false }"));
    assert!(
        msg.contains("components.a.ready.notify: can only be `true`"),
        "{msg}"
    );
    let msg = parse_err(&one("health = { notify = true }"));
    assert!(msg.contains("notify"), "{msg}");
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
        "[components.a]\ncommand = [\"x\"]\nenv = { IMAGESERVING_PREVIOUS_EXIT = \"killed\" }\n",
    );
    assert!(msg.contains("is set by the supervisor"), "{msg}");
    let msg = parse_err(
        "[components.a-b]\ncommand = [\"x\"]\nport = 1000\n[components.a_b]\ncommand = [\"x\"]\nport = 1001\n",
    );
    assert!(msg.contains("IMAGESERVING_A_B_ADDR"), "{msg}");
}

#[test]
fn docs_show_the_default_and_valid_examples() {
    let docs = include_str!("../../docs/configuration.md");
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

#[test]
fn held_sockets_default_to_the_built_in_servers_and_need_a_real_readiness_check() {
    // The default configuration: every server's socket held, ready once its process says so,
    // so that its restarts are handovers.
    let c = parse(DEFAULT_CONFIG, EMBEDDED_ORIGIN, &home(), &self_program()).unwrap();
    for name in ["ps", "is", "svg"] {
        let spec = c.component(name).unwrap();
        let socket = spec.socket.as_ref().expect("held");
        assert_eq!(Some(socket.addr), spec.probe, "{name}");
        assert_eq!(socket.backlog, 1024);
        assert_eq!(spec.ready, Ready::Notify, "{name}");
        assert!(spec.hands_over(), "{name}");
        assert_eq!(
            spec.policy.handover_grace,
            Duration::from_secs(35),
            "{name}"
        );
    }
    let server = |extra: &str| {
        format!(
            "[components.is]\ncommand = [\"@self\", \"component\", \"is\"]\nport = 5000\n{extra}\n"
        )
    };
    let own = parse_ok(&server("hold_socket = false"));
    let is = own.component("is").unwrap();
    assert!(is.socket.is_none());
    assert_eq!(is.ready, Ready::Port);
    let backlog = parse_ok(&server("listen_backlog = 64"));
    assert_eq!(
        backlog
            .component("is")
            .unwrap()
            .socket
            .as_ref()
            .unwrap()
            .backlog,
        64
    );

    // Another program: its own socket unless asked, and then a TCP check cannot tell it is ready.
    assert!(parse_ok(&one("")).component("a").unwrap().socket.is_none());
    let msg = parse_err(&one("hold_socket = true"));
    assert!(
        msg.contains("components.a.ready: cannot be a TCP check"),
        "{msg}"
    );
    let msg = parse_err(&one("hold_socket = true\nready = { tcp = true }"));
    assert!(
        msg.contains("components.a.ready: cannot be a TCP check"),
        "{msg}"
    );
    let held = parse_ok(&one("hold_socket = true\nready = { http = \"/up\" }"));
    assert!(held.component("a").unwrap().socket.is_some());
    let msg = parse_err(&one(
        "hold_socket = true\nready = { http = \"/up\" }\nhealth = { tcp = true }",
    ));
    assert!(
        msg.contains("components.a.health: cannot be a TCP check"),
        "{msg}"
    );
    let msg = parse_err("[components.a]\ncommand = [\"x\"]\nhold_socket = true\n");
    assert!(
        msg.contains("components.a.hold_socket: needs the component's `port`"),
        "{msg}"
    );
    let msg = parse_err(&server("listen_backlog = 0"));
    assert!(
        msg.contains("components.is.listen_backlog: must be above 0"),
        "{msg}"
    );
}

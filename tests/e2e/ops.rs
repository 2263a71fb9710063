//! Operations recipes of docs/operations.md, tried: the systemd unit, the LSB init script, the
//! foreground supervisor as PID 1 of a new PID namespace.
//!
//! - The unit (`packaging/systemd/imageserving.service`) is read for what keeps the ordered stop
//!   (`KillMode=mixed`, a `TimeoutStopSec` above the sum of the default stop timeouts) and checked
//!   by `systemd-analyze verify`, on a copy whose program paths name the binary under test. That
//!   check is skipped, with the reason printed, only where `systemd-analyze` is not installed.
//! - The init script (`packaging/init.d/ImageServing`) runs under `sh` with an overrides file
//!   named by `IMAGESERVING_DEFAULTS`, so that nothing in /etc is touched.
//! - PID 1 needs root (`unshare --pid`): it fails rather than skips when `CI` is set.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{
    component, component_of, pid, pids, require_root, run_command, wait_for, Output, TestHome, BIN,
    COMMAND_TIMEOUT, SETTLE, SUPERVISOR, TREE_ENV,
};
use crate::procs::{self, ProcId, Stat};

/// The repository's packaging directory.
fn packaging(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("packaging")
        .join(file)
}

// ---------------------------------------------------------------------------------------------
// systemd

/// The program path the unit names (replaced by the binary under test for `verify`).
const UNIT_PROGRAM: &str = "/usr/local/bin/imageserving";

/// The default `stop_timeout` of a component (docs/configuration.md) and the number of
/// components of the embedded default: the unit's `TimeoutStopSec` must cover their sum...
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_COMPONENTS: u32 = 3;
/// ...plus what the supervisor itself may take to exit once the components are down: up to
/// 5 s for the tree to finish and 1 s for its runtime (src/daemon.rs).
const SUPERVISOR_EXIT: Duration = Duration::from_secs(6);

/// `key=value` settings of a unit file, by section (`Service.KillMode`), every value of a key
/// in order.
fn unit_settings(text: &str) -> HashMap<String, Vec<String>> {
    let mut section = String::new();
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not a setting: {line}"));
        out.entry(format!("{section}.{}", key.trim()))
            .or_default()
            .push(value.trim().to_string());
    }
    out
}

/// The one value of `key`, failing the test if it is missing or repeated.
#[track_caller]
fn one<'a>(settings: &'a HashMap<String, Vec<String>>, key: &str) -> &'a str {
    match settings.get(key).map(Vec::as_slice) {
        Some([value]) => value,
        other => panic!("{key}: expected one value, found {other:?}"),
    }
}

/// `systemd-analyze` on the PATH (or where Debian puts it).
fn systemd_analyze() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("systemd-analyze"))
        .find(|p| p.is_file())
}

#[test]
fn systemd_unit_keeps_the_ordered_stop_and_passes_systemd_analyze_verify() {
    let unit_path = packaging("systemd/imageserving.service");
    let text = fs::read_to_string(&unit_path).expect("reading the unit");
    let s = unit_settings(&text);

    // The foreground supervisor, and the reload command, on one home outside /tmp (PrivateTmp
    // would give the service a /tmp of its own, where the CLI outside could not find it).
    let start = one(&s, "Service.ExecStart");
    assert_eq!(
        start,
        format!("{UNIT_PROGRAM} --home /var/lib/imageserving supervisor")
    );
    assert_eq!(
        one(&s, "Service.ExecReload"),
        format!("{UNIT_PROGRAM} --home /var/lib/imageserving reload")
    );
    assert_eq!(one(&s, "Service.StateDirectory"), "imageserving");
    assert!(
        matches!(one(&s, "Service.Type"), "exec" | "simple"),
        "the supervisor runs in the foreground"
    );
    assert!(
        !s.contains_key("Service.DynamicUser"),
        "DynamicUser moves the home to /var/lib/private"
    );

    // SIGTERM to the supervisor only, which stops the components in order; SIGKILL for what
    // is left when the timeout runs out.
    assert_eq!(one(&s, "Service.KillMode"), "mixed");
    assert_eq!(one(&s, "Service.KillSignal"), "SIGTERM");
    let timeout = humantime::parse_duration(one(&s, "Service.TimeoutStopSec"))
        .expect("TimeoutStopSec is a duration");
    let needed = DEFAULT_STOP_TIMEOUT * DEFAULT_COMPONENTS + SUPERVISOR_EXIT;
    assert!(
        timeout > needed,
        "TimeoutStopSec {timeout:?} must exceed {needed:?}"
    );
    assert_eq!(one(&s, "Service.Restart"), "on-failure");
    // Exit 2 (usage) and 6 (invalid configuration) are not cured by restarting.
    let prevent: Vec<&str> = one(&s, "Service.RestartPreventExitStatus")
        .split_whitespace()
        .collect();
    assert_eq!(prevent, ["2", "6"]);
    assert_eq!(one(&s, "Service.OOMPolicy"), "continue");
    assert_eq!(one(&s, "Install.WantedBy"), "multi-user.target");

    let Some(analyze) = systemd_analyze() else {
        eprintln!(
            "skipping `systemd-analyze verify` of {}: systemd-analyze is not installed",
            unit_path.display()
        );
        return;
    };
    // verify insists that the programs exist: a copy naming the binary under test.
    let dir = tempfile::tempdir().expect("a directory for the unit");
    let copy = dir.path().join("imageserving.service");
    fs::write(&copy, text.replace(UNIT_PROGRAM, BIN)).expect("writing the copy");
    let mut cmd = Command::new(&analyze);
    cmd.arg("verify").arg(&copy);
    let out = run_command(cmd, "systemd-analyze verify".into(), COMMAND_TIMEOUT)
        .unwrap_or_else(|out| panic!("systemd-analyze timed out\n{out}"));
    out.expect_code(0);
    // verify exits 0 after warnings such as an unknown key or a bad value: there must be none
    // about our unit (other units of the machine may have their own).
    let ours: Vec<&str> = out
        .stderr
        .lines()
        .chain(out.stdout.lines())
        .filter(|l| l.contains("imageserving"))
        .collect();
    assert!(ours.is_empty(), "systemd-analyze verify warns:\n{out}");
}

// ---------------------------------------------------------------------------------------------
// The LSB init script

/// The init script with `args`, under `sh`, with `vars` as its environment's overrides
/// (`IMAGESERVING_DEFAULTS` among them) and nothing else of ours inherited.
fn init_script(args: &[&str], vars: &[(&str, &OsStr)]) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg(packaging("init.d/ImageServing")).args(args);
    for var in [
        "IMAGESERVING_DEFAULTS",
        "IMAGESERVING_BIN",
        "IMAGESERVING_HOME",
        "IMAGESERVING_USER",
        "IMAGESERVING_LOG",
        TREE_ENV,
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let what = format!("init.d/ImageServing {}", args.join(" "));
    run_command(cmd, what, COMMAND_TIMEOUT)
        .unwrap_or_else(|out| panic!("the init script timed out\n{out}"))
}

/// An overrides file (as /etc/default/ImageServing would be) in `dir`.
fn overrides(dir: &Path, bin: &str, home: &Path, user: Option<&str>) -> PathBuf {
    let path = dir.join("ImageServing");
    let mut text = format!(
        "# test overrides\nIMAGESERVING_BIN={bin}\nIMAGESERVING_HOME={}\n",
        home.display()
    );
    if let Some(user) = user {
        text.push_str(&format!("IMAGESERVING_USER={user}\n"));
    }
    fs::write(&path, text).expect("writing the overrides");
    path
}

#[test]
fn init_script_has_an_lsb_header_for_imageserving() {
    let text = fs::read_to_string(packaging("init.d/ImageServing")).expect("the init script");
    assert!(text.starts_with("#!/bin/sh\n"), "POSIX sh");
    let header: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != "### BEGIN INIT INFO")
        .take_while(|l| *l != "### END INIT INFO")
        .collect();
    for field in [
        "# Provides:          ImageServing",
        "# Required-Start:",
        "# Required-Stop:",
        "# Default-Start:     2 3 4 5",
        "# Default-Stop:      0 1 6",
        "# Short-Description:",
        "# Description:",
    ] {
        assert!(
            header.iter().any(|l| l.starts_with(field)),
            "the LSB header lacks `{field}`:\n{}",
            header.join("\n")
        );
    }
    // `sh -n`: the whole script parses.
    let mut cmd = Command::new("sh");
    cmd.arg("-n").arg(packaging("init.d/ImageServing"));
    run_command(cmd, "sh -n".into(), COMMAND_TIMEOUT)
        .unwrap_or_else(|out| panic!("sh -n timed out\n{out}"))
        .expect_code(0);
}

#[test]
fn init_script_starts_reports_and_stops_the_stack_with_lsb_exit_codes() {
    const ALL: [&str; 3] = ["is", "svg", "ps"];
    let home = TestHome::stack();
    let etc = tempfile::tempdir().expect("a directory for the overrides");
    let defaults = overrides(etc.path(), BIN, home.path(), None);
    let vars = [("IMAGESERVING_DEFAULTS", defaults.as_os_str())];

    let out = init_script(&["start"], &vars);
    out.expect_code(0);
    let status = home.wait_running(&ALL);
    for name in ALL {
        assert!(
            out.stdout.contains(name) && out.stdout.contains("RUNNING"),
            "{out}"
        );
        assert_eq!(component_of(&status, name)["state"], "RUNNING");
    }
    let sup = ProcId::of(pid(&status["supervisor"]["pid"]).expect("a supervisor pid"))
        .expect("the supervisor runs");
    let components: Vec<ProcId> = pids(&status)
        .values()
        .map(|&p| ProcId::of(p).expect("a component runs"))
        .collect();

    // LSB: start of a running service succeeds and changes nothing; status says 0.
    let again = init_script(&["start"], &vars);
    again.expect_code(0);
    assert!(again.stdout.contains("already running"), "{again}");
    init_script(&["status"], &vars).expect_code(0);
    assert_eq!(home.supervisor_pid(), sup.pid);

    let out = init_script(&["stop"], &vars);
    out.expect_code(0);
    assert!(out.stdout.contains("stopped: ps, svg, is"), "{out}");
    for id in components.iter().chain([&sup]) {
        assert!(!id.is_alive(), "pid {} survived stop", id.pid);
    }
    home.assert_nothing_runs();
    let out = init_script(&["status"], &vars);
    out.expect_code(3);
    assert!(out.stdout.contains("not running"), "{out}");
    // LSB: stop of a stopped service succeeds.
    init_script(&["stop"], &vars).expect_code(0);

    // LSB: restart of a stopped service starts it.
    init_script(&["restart"], &vars).expect_code(0);
    home.wait_running(&ALL);
    init_script(&["status"], &vars).expect_code(0);
    init_script(&["stop"], &vars).expect_code(0);
    home.assert_nothing_runs();
}

#[test]
fn init_script_reports_usage_missing_program_and_bad_configuration_with_lsb_codes() {
    let home = TestHome::new(&format!(
        "{SUPERVISOR}{}",
        component("a", &["sleep", "1000"], "")
    ));
    let etc = tempfile::tempdir().expect("a directory for the overrides");

    // Usage: no action, an unknown one, two at once.
    for args in [&[][..], &["frobnicate"][..], &["start", "stop"][..]] {
        let out = init_script(args, &[]);
        out.expect_code(2);
        assert!(out.stderr.contains("Usage:"), "{out}");
    }

    // The program is missing: 5 ("not installed"), and 4 ("unknown") for status.
    let missing = overrides(etc.path(), "/nonexistent/imageserving", home.path(), None);
    let vars = [("IMAGESERVING_DEFAULTS", missing.as_os_str())];
    let out = init_script(&["start"], &vars);
    out.expect_code(5);
    assert!(out.stderr.contains("not installed"), "{out}");
    init_script(&["status"], &vars).expect_code(4);

    // Without an overrides file, the environment speaks: the home has no supervisor.
    let none = etc.path().join("absent");
    let out = init_script(
        &["status"],
        &[
            ("IMAGESERVING_DEFAULTS", none.as_os_str()),
            ("IMAGESERVING_BIN", OsStr::new(BIN)),
            ("IMAGESERVING_HOME", home.path().as_os_str()),
        ],
    );
    out.expect_code(3);
    assert!(
        out.stdout.contains(&home.path().display().to_string()),
        "{out}"
    );

    // An invalid configuration: 6 ("not configured"), and nothing starts.
    fs::write(
        home.path().join("conf/imageserving.toml"),
        "[supervisor]\nstart_wait = \"ten\"\n",
    )
    .expect("breaking the configuration");
    let defaults = overrides(etc.path(), BIN, home.path(), None);
    let out = init_script(
        &["start"],
        &[("IMAGESERVING_DEFAULTS", defaults.as_os_str())],
    );
    out.expect_code(6);
    assert!(out.stderr.contains("start_wait"), "{out}");
    home.assert_nothing_runs();
}

/// The uid of `pid`, from `/proc/PID/status`.
fn uid_of(pid: u32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Links (or copies) `from` into `dir`, for a user who cannot reach the build directory.
fn install_into(dir: &Path, from: &str) -> PathBuf {
    let to = dir.join(Path::new(from).file_name().expect("a file name"));
    if fs::hard_link(from, &to).is_err() {
        fs::copy(from, &to).expect("copying the program");
    }
    to
}

#[test]
fn init_script_runs_the_supervisor_as_the_configured_user() {
    use std::os::unix::fs::PermissionsExt;

    if !require_root("init_script_runs_the_supervisor_as_the_configured_user") {
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("reading the user database")
        .expect("a user `nobody`");
    let uid = nobody.uid.as_raw();
    let home = TestHome::new(&format!(
        "{SUPERVISOR}{}",
        component("a", &["sleep", "1000"], "")
    ));
    // The home belongs to that user, and the programs are where it can run them.
    for path in [
        home.path().to_path_buf(),
        home.path().join("conf"),
        home.path().join("conf/imageserving.toml"),
    ] {
        std::os::unix::fs::chown(&path, Some(uid), None).expect("chown");
    }
    let bin_dir = tempfile::tempdir().expect("a directory for the programs");
    fs::set_permissions(bin_dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let bin = install_into(bin_dir.path(), BIN);
    install_into(
        bin_dir.path(),
        env!("CARGO_BIN_EXE_imageserving-supervisor"),
    );
    let etc = tempfile::tempdir().expect("a directory for the overrides");
    let defaults = overrides(
        etc.path(),
        bin.to_str().expect("a UTF-8 path"),
        home.path(),
        Some("nobody"),
    );
    let vars = [("IMAGESERVING_DEFAULTS", defaults.as_os_str())];

    init_script(&["start"], &vars).expect_code(0);
    let status = home.wait_running(&["a"]);
    let sup = pid(&status["supervisor"]["pid"]).expect("a supervisor pid");
    let a = pid(&component_of(&status, "a")["pid"]).expect("a's pid");
    assert_eq!(uid_of(sup), Some(uid), "the supervisor's uid");
    assert_eq!(uid_of(a), Some(uid), "the component's uid");
    let meta = fs::metadata(home.path().join("run")).expect("run/");
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        uid,
        "run/'s owner"
    );

    init_script(&["status"], &vars).expect_code(0);
    init_script(&["stop"], &vars).expect_code(0);
    home.assert_nothing_runs();
    init_script(&["status"], &vars).expect_code(3);
}

// ---------------------------------------------------------------------------------------------
// PID 1 of a PID namespace (a container's entry point)

/// The children of `pid` (every thread's), host pids.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// `pid` and every process below it.
fn tree(pid: u32) -> Vec<ProcId> {
    let mut out = Vec::new();
    let mut next = vec![pid];
    while let Some(p) = next.pop() {
        if let Some(id) = ProcId::of(p) {
            out.push(id);
            next.extend(children(p));
        }
    }
    out
}

/// The arguments of `pid` (empty for a zombie).
fn cmdline(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// `unshare --pid --fork --mount-proc imageserving supervisor`, killed with its namespace
/// when dropped: SIGKILL to the namespace's PID 1 kills every process in it.
struct Namespace {
    unshare: Child,
    /// The namespace's PID 1 (the supervisor), as the host sees it.
    init: Option<ProcId>,
}

impl Namespace {
    fn start(home: &TestHome) -> Namespace {
        let log = fs::File::create(home.path().join("logs/pid1.log")).expect("creating a log");
        let mut cmd = Command::new("unshare");
        // --kill-child: if unshare itself dies, PID 1 gets SIGKILL (the guard's second line).
        cmd.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
            .arg(BIN)
            .arg("--home")
            .arg(home.path())
            .arg("supervisor")
            .env_remove("IMAGESERVING_HOME")
            .env_remove("IMAGESERVING_LOG")
            .env_remove(TREE_ENV)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("duplicating the log"))
            .stderr(log);
        let unshare = cmd.spawn().expect("running unshare (util-linux)");
        let mut ns = Namespace {
            unshare,
            init: None,
        };
        let parent = ns.unshare.id();
        wait_for(SETTLE, "unshare's child, PID 1 of the namespace", || {
            ns.init = children(parent).first().and_then(|&p| ProcId::of(p));
            ns.init.is_some()
        });
        ns
    }

    /// The host pid of the namespace's PID 1.
    fn init(&self) -> ProcId {
        self.init.expect("PID 1 is known")
    }

    /// Waits up to `timeout` for unshare (and so PID 1, whose exit status it passes on).
    fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let until = Instant::now() + timeout;
        loop {
            if let Some(status) = self.unshare.try_wait().expect("waiting for unshare") {
                return status;
            }
            assert!(
                Instant::now() < until,
                "the namespace's PID 1 did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Ok(None) = self.unshare.try_wait() {
            if let Some(init) = self.init {
                procs::kill(init);
            }
            let _ = self.unshare.kill();
            let _ = self.unshare.wait();
        }
    }
}

#[test]
fn foreground_supervisor_as_pid_1_reaps_orphans_and_stops_in_order_on_sigterm() {
    if !require_root("foreground_supervisor_as_pid_1_reaps_orphans_and_stops_in_order_on_sigterm") {
        return;
    }
    // `back` leaves two orphans (their parent subshell exits at once), which the kernel gives
    // to the namespace's PID 1; they exit once the test creates `release` in the home (the
    // components' working directory). `front` depends on `back`, so it must stop first: each
    // writes its name to `order` when SIGTERM reaches it.
    let orphan = "while [ ! -e release ]; do sleep 0.05; done";
    let back = format!(
        "trap 'echo back >> order; exit 0' TERM; \
         (sh -c '{orphan}' &); (sh -c '{orphan}' &); sleep 1000 & wait"
    );
    let front = "trap 'echo front >> order; exit 0' TERM; sleep 1000 & wait";
    let home = TestHome::new(&format!(
        "{SUPERVISOR}{}{}",
        component("back", &["sh", "-c", &back], ""),
        component("front", &["sh", "-c", front], "depends_on = [\"back\"]"),
    ));
    fs::create_dir_all(home.path().join("logs")).expect("creating logs/");
    let mut ns = Namespace::start(&home);
    let init = ns.init();

    let status = home.wait_running(&["back", "front"]);
    // Inside the namespace the supervisor is PID 1.
    assert_eq!(pid(&status["supervisor"]["pid"]), Some(1), "{status:#}");

    // The orphans: children of PID 1 that run the orphan's loop.
    let mut orphans = Vec::new();
    wait_for(SETTLE, "two orphans re-parented to PID 1", || {
        orphans = children(init.pid)
            .into_iter()
            .filter(|&p| cmdline(p).get(2).map(String::as_str) == Some(orphan))
            .filter_map(ProcId::of)
            .collect();
        orphans.len() == 2
    });
    let before: Vec<ProcId> = tree(init.pid);

    // They exit; PID 1 must reap them: gone from /proc, no zombie among its children.
    fs::write(home.path().join("release"), "").expect("releasing the orphans");
    wait_for(SETTLE, "the orphans reaped and no zombie left", || {
        // A zombie keeps its /proc entry (same pid, same start time) until it is reaped.
        let reaped = orphans.iter().all(|o| ProcId::of(o.pid) != Some(*o));
        let zombies = children(init.pid)
            .into_iter()
            .filter(|&p| Stat::read(p).is_some_and(|s| !s.is_alive()))
            .count();
        reaped && zombies == 0
    });
    // The stack did not notice.
    let after = home.status_json();
    for name in ["back", "front"] {
        assert_eq!(component_of(&after, name)["state"], "RUNNING", "{after:#}");
        assert_eq!(component_of(&after, name)["restarts"], 0, "{after:#}");
    }

    // SIGTERM to PID 1, as `docker stop` or the kubelet sends it: the ordered stop, exit 0.
    assert!(procs::signal(init, libc::SIGTERM), "could not signal PID 1");
    let exit = ns.wait(SETTLE);
    assert_eq!(exit.code(), Some(0), "{exit}\n{}", home.logs());
    let order = fs::read_to_string(home.path().join("order")).unwrap_or_default();
    assert_eq!(order, "front\nback\n", "stop order\n{}", home.logs());
    let log = fs::read_to_string(home.path().join("logs/pid1.log")).unwrap_or_default();
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(log.contains("Server Supervisor stopped"), "{log}");

    // Nothing of the namespace is left.
    let left: Vec<&ProcId> = before.iter().filter(|id| id.is_alive()).collect();
    assert!(left.is_empty(), "left of the namespace: {left:?}");
    assert!(!init.is_alive());
    home.assert_nothing_runs();
}

/// Socket activation (docs/operations.md): the supervisor started by systemd with a socket
/// passed as descriptor 3 (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`) hands that very socket
/// to the component it names, instead of binding one. The test plays systemd: it binds the
/// port and keeps its copy, so a supervisor that tried to bind the port itself would fail with
/// "port … is in use by another program".
#[test]
fn a_socket_activated_supervisor_hands_the_passed_socket_to_its_component() {
    use std::os::fd::AsRawFd as _;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let config = format!(
        "{SUPERVISOR}\n[components.svg]\ncommand = [\"@self\", \"component\", \"svg\"]\nport = {port}\nstart_secs = \"100ms\"\n"
    );
    let home = TestHome::new(&config);
    home.spawn_foreground_activated(&[("svg", &listener)]);
    home.wait_running(&["svg"]);
    let svg = home.pid_of("svg").expect("svg runs");
    let ours = fs::read_link(format!("/proc/self/fd/{}", listener.as_raw_fd())).expect("ours");
    let theirs = fs::read_link(format!("/proc/{svg}/fd/3")).expect("svg's descriptor 3");
    assert_eq!(ours, theirs, "svg serves on the socket systemd passed");
    let answer = crate::http::get(port, "/healthz", Duration::from_secs(5)).expect("svg answers");
    assert_eq!(answer.status, 200);
    home.run(&["stop"]).expect_code(0);
    assert!(home.wait_foreground(Duration::from_secs(20)).success());
    home.assert_nothing_runs();
}

//! The test fixture: a temporary home with its own configuration, a way to run the real
//! binary against it with a deadline, and a guard that leaves no process behind.
//!
//! The test process makes itself a *child subreaper* once: a daemon started by `start` calls
//! `setsid` and its parent (the CLI) exits, so without this it would be reparented to init and
//! out of our reach. With it, the daemon (and any orphan of a killed daemon) becomes our child,
//! which the guard can reap.
//!
//! [`TestHome`]'s `Drop` runs even when the test panics: it runs `stop`, then SIGKILLs every
//! process carrying `IMAGESERVING_TREE=<home>` (the daemon and everything the components
//! started), then reaps those of them that are our zombies.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, Once, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::procs::{self, ProcId};

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_imageserving");

/// The marker variable the daemon and every component process carry.
pub(crate) const TREE_ENV: &str = "IMAGESERVING_TREE";

/// The default deadline of one command. Generous: a loaded CI machine is slow, and configs
/// here keep `start_wait` well below it so that `start` reports before we give up.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// How long to wait for a state the supervisor should reach on its own.
pub(crate) const SETTLE: Duration = Duration::from_secs(20);

/// How long the guard's `stop` may take before the guard kills instead.
const GUARD_STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// How long the guard keeps killing marked processes.
const GUARD_KILL_DEADLINE: Duration = Duration::from_secs(5);

/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(20);

/// Makes this test process a child subreaper, once.
fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        nix::sys::prctl::set_child_subreaper(true).expect("prctl(PR_SET_CHILD_SUBREAPER)");
    });
}

/// A free TCP port on the loopback interface: bound, read, released. Another process could
/// take it in between, which is unlikely enough for tests and never the default ports.
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral port");
    listener
        .local_addr()
        .expect("reading the local address")
        .port()
}

/// The three components of the embedded default (`ps` needs `is` and `svg`), on
/// ephemeral ports, with a short `start_secs` so the tests do not wait a second per level.
pub(crate) fn stack_config() -> String {
    format!(
        r#"
[components.ps]
command = ["@self", "component", "ps"]
aliases = ["platform-server"]
port = {ps}
depends_on = ["is", "svg"]
start_secs = "200ms"
stop_timeout = "5s"

[components.is]
command = ["@self", "component", "is"]
aliases = ["image-server"]
port = {is}
start_secs = "200ms"
stop_timeout = "5s"

[components.svg]
command = ["@self", "component", "svg"]
aliases = ["svg-server"]
port = {svg}
start_secs = "200ms"
stop_timeout = "5s"
"#,
        ps = free_port(),
        is = free_port(),
        svg = free_port(),
    )
}

/// A `[components.<name>]` table running `command`, with `extra` TOML lines.
pub(crate) fn component(name: &str, command: &[&str], extra: &str) -> String {
    let command: Vec<String> = command.iter().map(|a| format!("{a:?}")).collect();
    format!(
        "\n[components.{name}]\ncommand = [{}]\nstart_secs = \"200ms\"\n{extra}\n",
        command.join(", ")
    )
}

/// The `[supervisor]` table every test uses: `start` reports well before
/// [`COMMAND_TIMEOUT`].
pub(crate) const SUPERVISOR: &str = "[supervisor]\nstart_wait = \"20s\"\n";

/// What a finished command did.
pub(crate) struct Output {
    /// The command line, for messages.
    pub args: String,
    /// How it ended.
    pub status: ExitStatus,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
    /// How long it ran.
    pub elapsed: Duration,
}

impl Output {
    /// The exit code; `None` when killed by a signal.
    pub(crate) fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Asserts the exit code, showing everything on failure.
    #[track_caller]
    pub(crate) fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code(), Some(code), "unexpected exit code\n{self}");
        self
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "$ imageserving {}  => {} after {:?}",
            self.args, self.status, self.elapsed
        )?;
        writeln!(f, "--- stdout\n{}", self.stdout)?;
        write!(f, "--- stderr\n{}", self.stderr)
    }
}

/// Runs `cmd` with piped output, killing it if it outlives `timeout`. `Err` carries what it
/// printed before it was killed.
pub(crate) fn run_command(
    mut cmd: Command,
    args: String,
    timeout: Duration,
) -> Result<Output, Output> {
    become_subreaper();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {args}: {e}"));
    // Read both pipes on their own threads so a chatty command never blocks on a full pipe.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let until = started + timeout;
    let (status, timed_out) = loop {
        match child.try_wait() {
            Ok(Some(status)) => break (status, false),
            Ok(None) if Instant::now() >= until => {
                let _ = child.kill();
                break (child.wait().expect("waiting for a killed command"), true);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("waiting for {args}: {e}"),
        }
    };
    let output = Output {
        args,
        status,
        stdout: stdout.take(),
        stderr: stderr.take(),
        elapsed: started.elapsed(),
    };
    if timed_out {
        Err(output)
    } else {
        Ok(output)
    }
}

/// The text read from a pipe by a background thread.
struct Drained {
    text: Arc<Mutex<Vec<u8>>>,
    done: Arc<Mutex<bool>>,
}

impl Drained {
    /// What was read, waiting briefly for the end of the pipe. A grandchild that inherited
    /// the pipe could hold it open forever, so the wait is bounded.
    fn take(self) -> String {
        let until = Instant::now() + Duration::from_secs(2);
        while !*self.done.lock().unwrap_or_else(PoisonError::into_inner) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(2));
        }
        let bytes = self.text.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> Drained {
    let text = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(Mutex::new(false));
    let (t, d) = (text.clone(), done.clone());
    std::thread::spawn(move || {
        if let Some(mut pipe) = pipe {
            let mut buf = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                t.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend_from_slice(&buf[..n]);
            }
        }
        *d.lock().unwrap_or_else(PoisonError::into_inner) = true;
    });
    Drained { text, done }
}

/// Polls `cond` every 20 ms until it holds, panicking with `what` after `timeout`.
#[track_caller]
pub(crate) fn wait_for(timeout: Duration, what: impl fmt::Display, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if Instant::now() >= until {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(POLL);
    }
}

/// Whether the current user is root; when not, either skips the test (returns false) or, in
/// CI, fails it: a CI run must not silently skip what it is meant to check.
pub(crate) fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test} needs root, and CI is set: run the e2e tests as root in CI");
    }
    eprintln!("skipping {test}: it needs root");
    false
}

/// The machine the tests share. Every home holds it shared; a test that loads the machine on
/// purpose (many clients at once) holds it alone, so that it neither starves the others nor is
/// starved by them. A thread must not hold two homes at once: the second would wait behind a
/// test waiting to be alone, which waits for the first.
static MACHINE: RwLock<()> = RwLock::new(());

/// A temporary home for one test. Dropping it stops everything it started.
pub(crate) struct TestHome {
    /// Keeps the directory alive; removed on drop.
    _dir: tempfile::TempDir,
    /// The home: absolute and canonical, as the daemon spells it (its tree id).
    root: PathBuf,
    /// Every process of this home we have seen: the guard reaps those that are our zombies.
    seen: Mutex<Vec<ProcId>>,
    /// A supervisor run in the foreground by the test, if any.
    foreground: Mutex<Option<Child>>,
    /// Our share of the machine (see [`MACHINE`]), held until everything has been cleaned up.
    _shared: Option<RwLockReadGuard<'static, ()>>,
    /// The whole machine, for a test that must run alone.
    _alone: Option<RwLockWriteGuard<'static, ()>>,
}

impl TestHome {
    /// A home whose `conf/imageserving.toml` is `config`.
    pub(crate) fn new(config: &str) -> TestHome {
        Self::at("", config)
    }

    /// A home at `sub` below a fresh temporary directory (`""`: the directory itself), with
    /// `config` as its configuration. Nothing else of the layout is created: the binary does.
    pub(crate) fn at(sub: &str, config: &str) -> TestHome {
        let shared = MACHINE.read().unwrap_or_else(PoisonError::into_inner);
        Self::build(sub, config, Some(shared), None)
    }

    /// A home for a test that loads the machine: it waits until no other test runs, and no
    /// other test starts until it is dropped.
    pub(crate) fn alone(config: &str) -> TestHome {
        let alone = MACHINE.write().unwrap_or_else(PoisonError::into_inner);
        Self::build("", config, None, Some(alone))
    }

    fn build(
        sub: &str,
        config: &str,
        shared: Option<RwLockReadGuard<'static, ()>>,
        alone: Option<RwLockWriteGuard<'static, ()>>,
    ) -> TestHome {
        become_subreaper();
        let dir = tempfile::Builder::new()
            .prefix("is-e2e-")
            .tempdir()
            .expect("creating a temporary home");
        let base = fs::canonicalize(dir.path()).expect("canonicalizing the temporary home");
        let root = if sub.is_empty() { base } else { base.join(sub) };
        fs::create_dir_all(root.join("conf")).expect("creating conf/");
        fs::write(root.join("conf/imageserving.toml"), config).expect("writing the config");
        TestHome {
            _dir: dir,
            root,
            seen: Mutex::new(Vec::new()),
            foreground: Mutex::new(None),
            _shared: shared,
            _alone: alone,
        }
    }

    /// A home running the three components (ps, is, svg) on ephemeral ports.
    pub(crate) fn stack() -> TestHome {
        Self::new(&format!("{SUPERVISOR}{}", stack_config()))
    }

    /// The home directory.
    pub(crate) fn path(&self) -> &Path {
        &self.root
    }

    /// `run/control.sock`.
    pub(crate) fn socket(&self) -> PathBuf {
        self.root.join("run/control.sock")
    }

    /// `run/supervisor.pid`.
    pub(crate) fn pid_file(&self) -> PathBuf {
        self.root.join("run/supervisor.pid")
    }

    /// `run/supervisor.lock`.
    pub(crate) fn lock_file(&self) -> PathBuf {
        self.root.join("run/supervisor.lock")
    }

    /// The environment entry every process of this home carries.
    pub(crate) fn marker(&self) -> String {
        format!("{TREE_ENV}={}", self.root.display())
    }

    /// Live processes carrying this home's marker (remembered for the guard).
    pub(crate) fn marked(&self) -> Vec<ProcId> {
        let found = procs::marked(&self.marker());
        self.remember(found.iter().copied());
        found
    }

    /// A command running the binary on this home, `IMAGESERVING_HOME` cleared so that only
    /// `--home` speaks.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("--home")
            .arg(&self.root)
            .args(args)
            .env_remove("IMAGESERVING_HOME")
            .env_remove("IMAGESERVING_LOG")
            .env_remove(TREE_ENV);
        cmd
    }

    /// Runs the binary with `args`, failing the test if it outlives [`COMMAND_TIMEOUT`].
    #[track_caller]
    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.run_timeout(args, COMMAND_TIMEOUT)
    }

    /// Runs the binary with `args`, failing the test if it outlives `timeout`.
    #[track_caller]
    pub(crate) fn run_timeout(&self, args: &[&str], timeout: Duration) -> Output {
        let out = run_command(self.command(args), args.join(" "), timeout)
            .unwrap_or_else(|out| panic!("command timed out after {timeout:?}\n{out}"));
        self.remember_supervisor();
        out
    }

    /// `status --json`, which must succeed.
    #[track_caller]
    pub(crate) fn status_json(&self) -> Value {
        let out = self.run(&["status", "--json"]);
        out.expect_code(0);
        let status: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("status --json is not JSON: {e}\n{out}"));
        self.remember_status(&status);
        status
    }

    /// `status --json` if a supervisor answers, else `None`.
    pub(crate) fn try_status_json(&self) -> Option<Value> {
        let out = run_command(
            self.command(&["status", "--json"]),
            "status --json".into(),
            COMMAND_TIMEOUT,
        )
        .ok()?;
        if out.code() != Some(0) {
            return None;
        }
        let status: Value = serde_json::from_str(&out.stdout).ok()?;
        self.remember_status(&status);
        Some(status)
    }

    /// The supervisor's pid, from `status`.
    #[track_caller]
    pub(crate) fn supervisor_pid(&self) -> u32 {
        let status = self.status_json();
        pid(&status["supervisor"]["pid"]).expect("status without a supervisor pid")
    }

    /// The pid of `component`, from `status`; `None` while it has no process.
    #[track_caller]
    pub(crate) fn pid_of(&self, component: &str) -> Option<u32> {
        let status = self.status_json();
        pid(&component_of(&status, component)["pid"])
    }

    /// Waits until every one of `names` is RUNNING with a pid; returns that status.
    #[track_caller]
    pub(crate) fn wait_running(&self, names: &[&str]) -> Value {
        let mut last = Value::Null;
        wait_for(SETTLE, format_args!("{names:?} RUNNING"), || {
            let Some(status) = self.try_status_json() else {
                return false;
            };
            let ok = names.iter().all(|n| {
                let c = component_of(&status, n);
                c["state"] == "RUNNING" && c["pid"].is_u64()
            });
            last = status;
            ok
        });
        last
    }

    /// Asserts that nothing of this home runs: no marked process, no socket, no pid file,
    /// and the lock free (a live daemon holds it).
    #[track_caller]
    pub(crate) fn assert_nothing_runs(&self) {
        let left = self.marked();
        assert!(
            left.is_empty(),
            "processes of {} still run: {}",
            self.root.display(),
            describe(&left)
        );
        assert!(!self.socket().exists(), "the control socket is still there");
        assert!(!self.pid_file().exists(), "the pid file is still there");
        assert!(!self.is_locked(), "the home's lock is still held");
    }

    /// Whether someone holds the home's lock (a live daemon does).
    pub(crate) fn is_locked(&self) -> bool {
        use nix::fcntl::{Flock, FlockArg};
        let Ok(file) = fs::File::open(self.lock_file()) else {
            return false;
        };
        match Flock::lock(file, FlockArg::LockSharedNonblock) {
            Ok(_) => false,
            Err((_, e)) => e == nix::errno::Errno::EWOULDBLOCK,
        }
    }

    /// Starts `imageserving supervisor` in the foreground as our child; output goes to
    /// `logs/foreground.log`. The guard terminates it.
    pub(crate) fn spawn_foreground(&self) -> u32 {
        self.spawn_foreground_command(self.command(&["supervisor"]))
    }

    /// [`Self::spawn_foreground`] as systemd's socket activation starts it: `listeners` passed
    /// as descriptors 3, 4, … with `LISTEN_FDS`, `LISTEN_FDNAMES` (their names) and
    /// `LISTEN_PID` (the supervisor's pid, set by a shell that then execs it).
    pub(crate) fn spawn_foreground_activated(&self, listeners: &[(&str, &TcpListener)]) -> u32 {
        use std::os::fd::AsRawFd as _;
        use std::os::unix::process::CommandExt as _;
        let inner = self.command(&["supervisor"]);
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\"")
            .arg(inner.get_program())
            .args(inner.get_args())
            .env_remove("IMAGESERVING_HOME")
            .env_remove("IMAGESERVING_LOG")
            .env_remove(TREE_ENV)
            .env("LISTEN_FDS", listeners.len().to_string())
            .env(
                "LISTEN_FDNAMES",
                listeners
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(":"),
            );
        let fds: Vec<i32> = listeners.iter().map(|(_, l)| l.as_raw_fd()).collect();
        // SAFETY: only dup2, async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                for (i, fd) in fds.iter().enumerate() {
                    let target = 3 + i as i32;
                    // dup2 onto itself keeps close-on-exec: clear it instead.
                    let done = if *fd == target {
                        libc::fcntl(target, libc::F_SETFD, 0)
                    } else {
                        libc::dup2(*fd, target)
                    };
                    if done < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        self.spawn_foreground_command(cmd)
    }

    fn spawn_foreground_command(&self, mut cmd: Command) -> u32 {
        fs::create_dir_all(self.root.join("logs")).expect("creating logs/");
        let log = fs::File::create(self.root.join("logs/foreground.log")).expect("creating a log");
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("duplicating the log"))
            .stderr(log);
        let child = cmd.spawn().expect("spawning the foreground supervisor");
        let pid = child.id();
        *self
            .foreground
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(child);
        pid
    }

    /// Waits up to `timeout` for the foreground supervisor to exit.
    #[track_caller]
    pub(crate) fn wait_foreground(&self, timeout: Duration) -> ExitStatus {
        let mut guard = self
            .foreground
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let child = guard.as_mut().expect("no foreground supervisor");
        let until = Instant::now() + timeout;
        loop {
            if let Some(status) = child
                .try_wait()
                .expect("waiting for the foreground supervisor")
            {
                *guard = None;
                return status;
            }
            if Instant::now() >= until {
                panic!("the foreground supervisor did not exit within {timeout:?}");
            }
            std::thread::sleep(POLL);
        }
    }

    /// The last lines of the supervisor's logs, for a failing test's message.
    pub(crate) fn logs(&self) -> String {
        let mut out = String::new();
        let Ok(entries) = fs::read_dir(self.root.join("logs")) else {
            return out;
        };
        for entry in entries.filter_map(Result::ok) {
            let text = fs::read_to_string(entry.path()).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            out.push_str(&format!(
                "--- {} (last {} lines)\n{}\n",
                entry.path().display(),
                tail.len(),
                tail.join("\n")
            ));
        }
        out
    }

    fn remember(&self, ids: impl IntoIterator<Item = ProcId>) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        for id in ids {
            if !seen.contains(&id) {
                seen.push(id);
            }
        }
    }

    /// Remembers the daemon named by the pid file: once `start` has exited, it is our child.
    fn remember_supervisor(&self) {
        let pid = fs::read_to_string(self.pid_file())
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        self.remember(pid.and_then(ProcId::of));
    }

    fn remember_status(&self, status: &Value) {
        let mut pids = vec![pid(&status["supervisor"]["pid"])];
        if let Some(components) = status["components"].as_array() {
            pids.extend(components.iter().map(|c| pid(&c["pid"])));
        }
        let foreground = self
            .foreground
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(Child::id);
        // The foreground supervisor is a `Child` of ours: std reaps it, never the guard.
        self.remember(
            pids.into_iter()
                .flatten()
                .filter(|&p| Some(p) != foreground)
                .filter_map(ProcId::of),
        );
    }

    /// SIGTERM, then SIGKILL, the foreground supervisor, and reaps it.
    fn end_foreground(&self) {
        let Some(mut child) = self
            .foreground
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            if let Some(id) = ProcId::of(child.id()) {
                procs::signal(id, libc::SIGTERM);
            }
            let until = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < until {
                std::thread::sleep(POLL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestHome {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("e2e: logs of {}:\n{}", self.root.display(), self.logs());
        }
        self.end_foreground();
        // The daemon becomes our zombie when it exits: note it while its pid file names it.
        self.remember_supervisor();
        // The orderly way first, so a failing test still exercises the real shutdown...
        if self.socket().exists() {
            let stop = run_command(self.command(&["stop"]), "stop".into(), GUARD_STOP_TIMEOUT);
            if let Err(out) = stop {
                eprintln!("e2e: the guard's stop timed out\n{out}");
            }
        }
        // ...then by force: whatever still carries the marker.
        let until = Instant::now() + GUARD_KILL_DEADLINE;
        loop {
            let left = self.marked();
            if left.is_empty() {
                break;
            }
            for id in &left {
                procs::kill(*id);
            }
            if Instant::now() >= until {
                eprintln!(
                    "e2e: processes of {} survived SIGKILL: {}",
                    self.root.display(),
                    describe(&left)
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let seen = self
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        procs::reap(&seen, Duration::from_secs(2));
    }
}

/// `pid 123 (sleep), ...` for messages.
pub(crate) fn describe(ids: &[ProcId]) -> String {
    ids.iter()
        .map(|id| {
            let comm = procs::Stat::read(id.pid).map_or("?".into(), |s| s.comm);
            format!("pid {} ({comm})", id.pid)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A JSON pid (a positive integer), or `None` for `null`.
pub(crate) fn pid(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|p| u32::try_from(p).ok())
}

/// The component called `name` in a status report; panics if absent.
#[track_caller]
pub(crate) fn component_of<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["components"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no component {name} in {status:#}"))
}

/// `name -> pid` of every component with a process.
pub(crate) fn pids(status: &Value) -> HashMap<String, u32> {
    status["components"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| Some((c["name"].as_str()?.to_string(), pid(&c["pid"])?)))
        .collect()
}

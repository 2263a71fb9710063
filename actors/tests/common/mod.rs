//! The harness of the tree tests: a tree per test under a unique marker, tiny components, waits
//! with deadlines, and a guard that leaves no process behind even when a test fails.
//!
//! Shared by several test binaries, each of which uses only part of it.
#![allow(dead_code)]

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use imageserving_actors::process::{find_marked, kill_marked};
use imageserving_actors::{
    spec::LogSpec, ComponentSpec, ComponentStatus, RestartPolicy, SupervisorHandle, TreeSpec,
    TreeStatus,
};
use ractor::ActorCell;
use tempfile::TempDir;
use tokio::task::JoinHandle;

/// The bound of every test body.
pub(crate) const TEST_LIMIT: Duration = Duration::from_secs(60);
/// How often the waits look again.
const POLL: Duration = Duration::from_millis(20);
/// How long the guard keeps killing before it gives up (and says so).
const REAP_LIMIT: Duration = Duration::from_secs(10);

/// Runs a test body with the time limit every test has.
pub(crate) async fn bounded(body: impl Future<Output = ()>) {
    tokio::time::timeout(TEST_LIMIT, body)
        .await
        .expect("the test exceeded its time limit");
}

/// A tree id no other test (or earlier run) uses: the marker every process of the tree carries.
pub(crate) fn unique_tree_id(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("test-{tag}-{}-{nanos}", std::process::id())
}

/// A policy short enough for tests: running after 150 ms, quick backoff, generous budget.
pub(crate) fn fast_policy() -> RestartPolicy {
    RestartPolicy {
        start_secs: Duration::from_millis(150),
        start_timeout: Duration::from_secs(5),
        stable_after: Duration::from_secs(30),
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_secs(1),
        max_restarts: 10,
        max_window: Duration::from_secs(60),
        stop_signal: libc::SIGTERM,
        stop_timeout: Duration::from_secs(2),
        ..RestartPolicy::default()
    }
}

/// A component running `argv`, logging into `dir`, with [`fast_policy`] and no dependencies.
pub(crate) fn command(dir: &Path, name: &str, argv: &[&str]) -> ComponentSpec {
    let mut spec = ComponentSpec::new(name, argv.iter().map(ToString::to_string).collect());
    spec.log = LogSpec::file(dir.join(format!("{name}.log")));
    spec.policy = fast_policy();
    spec
}

/// A component running `sh -c script`.
pub(crate) fn shell(dir: &Path, name: &str, script: &str) -> ComponentSpec {
    command(dir, name, &["sh", "-c", script])
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port")
}

/// The loopback address with `port`.
pub(crate) fn local(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// On drop: kills the root actor, then every process marked with the tree until none is left.
struct Reaper {
    tree_id: String,
    root: Option<ActorCell>,
}

impl Drop for Reaper {
    fn drop(&mut self) {
        // Without its actors nobody spawns a replacement while we kill.
        if let Some(root) = self.root.take() {
            root.kill();
        }
        let until = Instant::now() + REAP_LIMIT;
        let mut quiet_rounds = 0;
        // Two empty scans in a row: a process may be forking, or a spawn landing, while we kill.
        while quiet_rounds < 2 {
            if kill_marked(&self.tree_id, None) == 0 && find_marked(&self.tree_id, None).is_empty()
            {
                quiet_rounds += 1;
            } else {
                quiet_rounds = 0;
            }
            if Instant::now() >= until {
                eprintln!(
                    "tree {}: processes survive cleanup: {:?}",
                    self.tree_id,
                    find_marked(&self.tree_id, None)
                );
                return;
            }
            std::thread::sleep(POLL);
        }
    }
}

/// One spawned tree with its temporary directory and its cleanup guard.
pub(crate) struct Fixture {
    /// Declared first so it is dropped first: it kills before the directory goes.
    _reaper: Reaper,
    /// The tree's marker.
    pub tree_id: String,
    /// Logs and whatever files the components write.
    pub dir: TempDir,
    /// The handle under test.
    pub handle: SupervisorHandle,
    /// Completes when the root actor has stopped.
    pub join: Option<JoinHandle<()>>,
}

impl Fixture {
    /// Spawns a tree of the components `build` makes in the fixture's directory (not started).
    pub(crate) async fn spawn(
        tag: &str,
        build: impl FnOnce(&Path) -> Vec<ComponentSpec>,
    ) -> Fixture {
        let tree_id = unique_tree_id(tag);
        let mut reaper = Reaper {
            tree_id: tree_id.clone(),
            root: None,
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spec = TreeSpec::new(tree_id.clone(), build(dir.path()));
        spec.notify_socket = Some(dir.path().join("notify.sock"));
        let (handle, join) = SupervisorHandle::spawn(spec)
            .await
            .expect("spawning the tree");
        reaper.root = Some(handle.actor().get_cell());
        Fixture {
            _reaper: reaper,
            tree_id,
            dir,
            handle,
            join: Some(join),
        }
    }

    /// Starts every component and waits until each one is RUNNING.
    pub(crate) async fn start_all_running(&self) -> TreeStatus {
        self.handle.start(&[]).await.expect("start");
        self.wait_status("every component RUNNING", Duration::from_secs(10), |s| {
            s.components
                .iter()
                .all(|c| c.state == imageserving_actors::State::Running)
        })
        .await
    }

    /// The status (without failing the test on a slow answer: that is tested apart).
    pub(crate) async fn status(&self) -> TreeStatus {
        self.handle.status().await.expect("status")
    }

    /// The status of one component.
    pub(crate) async fn component(&self, name: &str) -> ComponentStatus {
        component(&self.status().await, name).clone()
    }

    /// Polls the status until `condition` holds; panics with the last status after `timeout`.
    pub(crate) async fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        mut condition: impl FnMut(&TreeStatus) -> bool,
    ) -> TreeStatus {
        let until = Instant::now() + timeout;
        loop {
            let status = self.status().await;
            if condition(&status) {
                return status;
            }
            if Instant::now() >= until {
                panic!(
                    "timed out after {timeout:?} waiting for: {what}\nlast status: {:#?}\nlogs:\n{}",
                    status.components,
                    self.logs()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The marked processes of one component (all components when `None`).
    pub(crate) fn marked(&self, component: Option<&str>) -> Vec<u32> {
        find_marked(&self.tree_id, component)
    }

    /// Every component log in the directory, for failure messages.
    pub(crate) fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "log") {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    out.push_str(&format!("== {}\n{text}", path.display()));
                }
            }
        }
        out
    }
}

/// The named component of a status; panics if it is missing.
pub(crate) fn component<'a>(status: &'a TreeStatus, name: &str) -> &'a ComponentStatus {
    status
        .components
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no component {name} in {status:#?}"))
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub(crate) async fn wait_for(mut condition: impl FnMut() -> bool, timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Whether `pid` names a live (non-zombie) process.
pub(crate) fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|i| stat[i + 1..].split_ascii_whitespace().next())
            .is_some_and(|state| !matches!(state, "Z" | "X" | "x"))
    })
}

/// Sends SIGKILL to one process.
pub(crate) fn kill9(pid: u32) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid fits"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill -9");
}

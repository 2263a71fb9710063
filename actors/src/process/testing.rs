//! Helpers shared by the unit tests of the process modules: unique tree ids, a guard that kills
//! a test's processes, requests for `sh -c` scripts, bounded waits and log reading. They use the
//! module's public API only, as any caller would.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::logs::ComponentLog;
use crate::process::{find_marked, kill_marked, SpawnRequest, Spawned};
use crate::spec::LogSpec;

/// The bound of every wait in these tests.
pub(super) const LIMIT: Duration = Duration::from_secs(20);

pub(super) fn unique_tree(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("test-{}-{nanos}-{tag}", std::process::id())
}

/// Kills every process marked with its tree when dropped, even when the test panics.
pub(super) struct Reaper(pub(super) String);

impl Drop for Reaper {
    fn drop(&mut self) {
        // Loop: a process may be forking while it is killed.
        let start = Instant::now();
        while !find_marked(&self.0, None).is_empty() && start.elapsed() < LIMIT {
            kill_marked(&self.0, None);
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

pub(super) fn request(tree: &str, script: &str, log_file: Option<PathBuf>) -> SpawnRequest {
    let spec = log_file.map_or_else(LogSpec::discard, LogSpec::file);
    request_with(tree, script, ComponentLog::new(&spec, "web"))
}

pub(super) fn request_with(tree: &str, script: &str, log: ComponentLog) -> SpawnRequest {
    SpawnRequest {
        command: vec!["sh".into(), "-c".into(), script.into()],
        env: vec![("EXTRA_TEST_VAR".into(), "yes".into())],
        shared_env: Arc::from(Vec::new()),
        cwd: None,
        tree_id: tree.into(),
        component: "web".into(),
        log: Arc::new(log),
        sockets: Vec::new(),
    }
}

/// Whether `pid` now runs `comm` (its exec is over).
pub(super) fn exec_done(pid: u32, comm: &str) -> bool {
    fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
}

pub(super) async fn wait_for(mut condition: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < LIMIT {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}

pub(super) async fn wait_exit(spawned: &mut Spawned) -> std::process::ExitStatus {
    tokio::time::timeout(LIMIT, spawned.child.wait())
        .await
        .expect("process did not exit in time")
        .expect("wait failed")
}

/// The log's lines, each split into its timestamp and its text.
pub(super) fn log_lines(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = fs::read(path).unwrap_or_default();
    bytes
        .split_inclusive(|&b| b == b'\n')
        .filter(|line| line.ends_with(b"\n"))
        .filter_map(|line| {
            let space = line.iter().position(|&b| b == b' ')?;
            let stamp = String::from_utf8_lossy(&line[..space]).into_owned();
            Some((stamp, line[space + 1..line.len() - 1].to_vec()))
        })
        .collect()
}

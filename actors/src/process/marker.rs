//! The environment entries that mark every process of a component, and finding the marked
//! processes in `/proc`.
//!
//! Descendants that leave their component's process group (`setsid`, a daemonizing double fork)
//! still inherit [`TREE_ENV`], [`COMPONENT_ENV`] and [`ATTEMPT_ENV`] from the environment; they
//! are found by those exact entries, so only this tree's processes are ever taken for leftovers.

use std::fs;
use std::io;

use nix::unistd::geteuid;
use tracing::{error, warn};

use super::procfs::{other_pids, own_live_processes, read_real_uid, read_stat};

/// Environment variable naming the tree (the daemon: its home) in every process of a component.
pub const TREE_ENV: &str = "IMAGESERVING_TREE";
/// Environment variable naming the component in every process of a component.
pub const COMPONENT_ENV: &str = "IMAGESERVING_COMPONENT";
/// Environment variable naming the spawn attempt (unique within the daemon's life) in every
/// process of one attempt: the cleanup of an old attempt never touches a newer one.
pub const ATTEMPT_ENV: &str = "IMAGESERVING_ATTEMPT";

/// The environment entries that mark a process as part of a tree (and of a component).
pub(super) struct Marker {
    tree: Vec<u8>,
    component: Option<Vec<u8>>,
    attempt: Option<Vec<u8>>,
}

impl Marker {
    pub(super) fn new(tree_id: &str, component: Option<&str>) -> Self {
        Self {
            tree: format!("{TREE_ENV}={tree_id}").into_bytes(),
            component: component.map(|c| format!("{COMPONENT_ENV}={c}").into_bytes()),
            attempt: None,
        }
    }

    pub(super) fn for_attempt(tree_id: &str, component: &str, attempt: &str) -> Self {
        Self {
            attempt: Some(format!("{ATTEMPT_ENV}={attempt}").into_bytes()),
            ..Self::new(tree_id, Some(component))
        }
    }

    /// Whether the NUL-separated `environ` holds the exact marker entries.
    fn matches(&self, environ: &[u8]) -> bool {
        let has = |want: &[u8]| environ.split(|&b| b == 0).any(|entry| entry == want);
        has(&self.tree)
            && self.component.as_deref().is_none_or(has)
            && self.attempt.as_deref().is_none_or(has)
    }

    pub(super) fn matches_pid(&self, pid: u32) -> bool {
        fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| self.matches(&environ))
    }

    /// Whether `pid` is, right now, a live process of this user carrying the marker.
    pub(super) fn holds_for(&self, pid: u32) -> bool {
        read_stat(pid).is_some_and(|s| s.is_alive())
            && read_real_uid(pid) == Some(geteuid().as_raw())
            && self.matches_pid(pid)
    }
}

/// Pids of live (non-zombie) processes of this user whose environment carries
/// `TREE_ENV=tree_id` and, when given, `COMPONENT_ENV=component`.
///
/// If `/proc` cannot be listed, logs an error and returns nothing.
pub fn find_marked(tree_id: &str, component: Option<&str>) -> Vec<u32> {
    let marker = Marker::new(tree_id, component);
    match marked_processes(&marker) {
        Ok(pids) => pids,
        Err(e) => {
            error!(error = %e, tree_id, "cannot scan /proc for marked processes");
            Vec::new()
        }
    }
}

/// Live processes of this user carrying `marker`. The environment is read first: one read per
/// process of the machine, and the state and owner only of the few that match.
fn marked_processes(marker: &Marker) -> io::Result<Vec<u32>> {
    let uid = geteuid().as_raw();
    Ok(other_pids()?
        .filter(|&pid| marker.matches_pid(pid))
        .filter(|&pid| {
            read_stat(pid).is_some_and(|s| s.is_alive()) && read_real_uid(pid) == Some(uid)
        })
        .collect())
}

/// Pid and component of every live process of this user marked with `tree_id`.
pub(super) fn marked_components(tree_id: &str) -> Vec<(u32, Vec<u8>)> {
    let marker = Marker::new(tree_id, None);
    let processes = match own_live_processes() {
        Ok(processes) => processes,
        Err(e) => {
            warn!(error = %e, tree_id, "cannot scan /proc for marked processes");
            return Vec::new();
        }
    };
    processes
        .iter()
        .filter_map(|p| Some((p.pid, marked_component(p.pid, &marker)?)))
        .collect()
}

/// The component of tree `tree_id` that process `pid` belongs to, by its marker: for a process
/// the supervisor may not have heard of yet (it just started).
pub fn component_of(tree_id: &str, pid: u32) -> Option<String> {
    let name = marked_component(pid, &Marker::new(tree_id, None))?;
    String::from_utf8(name).ok()
}

/// The component `pid` belongs to, if its environment carries `marker`.
pub(super) fn marked_component(pid: u32, marker: &Marker) -> Option<Vec<u8>> {
    let environ = fs::read(format!("/proc/{pid}/environ")).ok()?;
    if !marker.matches(&environ) {
        return None;
    }
    let prefix = format!("{COMPONENT_ENV}=");
    environ
        .split(|&b| b == 0)
        .find_map(|entry| entry.strip_prefix(prefix.as_bytes()))
        .map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_match_exact_entries_only() {
        let environ = b"A=1\0IMAGESERVING_TREE=t1\0IMAGESERVING_COMPONENT=web\0";
        assert!(Marker::new("t1", None).matches(environ));
        assert!(Marker::new("t1", Some("web")).matches(environ));
        assert!(!Marker::new("t", None).matches(environ));
        assert!(!Marker::new("t1", Some("we")).matches(environ));
        assert!(!Marker::new("t2", Some("web")).matches(environ));
    }
}

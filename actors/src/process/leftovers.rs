//! Killing what a component leaves behind: its process group once the main process has
//! exited, and every process carrying its marker, each pinned by a pidfd and checked again
//! before the signal, so that a reused pid or group number is never hit (the invariants are in
//! [the parent module](super)).

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, warn};

use super::marker::{find_marked, Marker};
use super::procfs::{own_live_below, own_live_processes, read_stat, OwnProcess};
use super::registry::{adopts_orphans, waited};
use super::signal::{checked_pgid, kill_checked, signal_group};

/// How often [`kill_leftovers`] looks again.
const POLL: Duration = Duration::from_millis(10);

/// Sends SIGKILL to every process [`find_marked`] finds (verified again through a pidfd, so a
/// reused pid is never hit). Returns how many were signalled.
pub fn kill_marked(tree_id: &str, component: Option<&str>) -> usize {
    let marker = Marker::new(tree_id, component);
    find_marked(tree_id, component)
        .into_iter()
        .filter(|&pid| kill_verified(pid, &marker))
        .count()
}

/// Kills every process marked with `tree_id` (and `component`, when given) and waits, up to
/// `deadline`, until none is left. Returns how many were killed and whether some survived.
/// Blocking (it polls `/proc`): the daemon calls it before its runtime starts, an actor from
/// the blocking pool.
pub fn sweep_marked(tree_id: &str, component: Option<&str>, deadline: Duration) -> (usize, bool) {
    let until = Instant::now() + deadline;
    let mut total = 0;
    let marker = Marker::new(tree_id, component);
    loop {
        // One scan when nothing is left (the usual case), a last one after each round of kills.
        let found = find_marked(tree_id, component);
        if found.is_empty() {
            return (total, false);
        }
        total += found
            .into_iter()
            .filter(|&pid| kill_verified(pid, &marker))
            .count();
        if Instant::now() >= until {
            return (total, true);
        }
        std::thread::sleep(POLL);
    }
}

/// Like [`kill_marked`], for the processes of one spawn attempt only.
pub fn kill_attempt(tree_id: &str, component: &str, attempt: &str) -> usize {
    let marker = Marker::for_attempt(tree_id, component, attempt);
    match own_live_processes() {
        Ok(processes) => processes
            .iter()
            .filter(|p| kill_verified(p.pid, &marker))
            .count(),
        Err(e) => {
            error!(error = %e, tree_id, "cannot scan /proc for marked processes");
            0
        }
    }
}

/// After a component's main process has exited: SIGKILL what is left of its group and of the
/// descendants marked with its `attempt`, and wait (polling, up to `deadline`) until none is
/// alive. Returns an error naming the survivors if some outlive the deadline.
///
/// Only this attempt's processes are touched, so a cleanup that is still running when a newer
/// attempt of the same component starts (its actor was replaced) never kills the newer one.
pub async fn kill_leftovers(
    pgid: u32,
    tree_id: &str,
    component: &str,
    attempt: &str,
    deadline: Duration,
) -> io::Result<()> {
    checked_pgid(pgid)?;
    let marker = Arc::new(Marker::for_attempt(tree_id, component, attempt));
    let started = Instant::now();
    let mut first = true;
    let mut warned_reused = false;
    loop {
        let sweep_marker = Arc::clone(&marker);
        // A sweep reads all of /proc: keep it off the runtime's workers.
        let left = tokio::task::spawn_blocking(move || sweep(pgid, &sweep_marker, first))
            .await
            .map_err(|e| io::Error::other(format!("sweeping leftovers of {component}: {e}")))??;
        first = false;
        if left.group_reused && !warned_reused {
            warned_reused = true;
            warn!(
                component,
                pgid, "process group number now belongs to another process; not signalling it"
            );
        }
        if left.survivors.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= deadline {
            let names: Vec<String> = left
                .survivors
                .iter()
                .map(|(pid, comm)| format!("{pid} ({comm})"))
                .collect();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "leftovers of component {component} (process group {pgid}) still alive after \
                     {}: {}",
                    humantime::format_duration(deadline),
                    names.join(", ")
                ),
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// SIGKILLs `pid` if it still carries `marker`, checked after pinning it with a pidfd.
fn kill_verified(pid: u32, marker: &Marker) -> bool {
    kill_checked(pid, |pid| marker.holds_for(pid))
}

/// What one [`sweep`] found still alive.
struct Leftovers {
    /// Pid and name of each process in the group or carrying the marker.
    survivors: BTreeMap<u32, String>,
    /// The group number now belongs to an unrelated live leader, so the group was left alone.
    group_reused: bool,
}

/// One round of [`kill_leftovers`]: find what is left, and SIGKILL it.
fn sweep(pgid: u32, marker: &Marker, first: bool) -> io::Result<Leftovers> {
    // Adopting orphans, every process a component started is still below us: walk that
    // subtree instead of reading every process of the machine.
    let processes = if adopts_orphans() {
        own_live_descendants()
    } else {
        own_live_processes()?
    };
    // Our leader has exited; a live process now leading a group under its number is not ours
    // unless it carries our marker. Its environment is read without the uid filter, so that a
    // foreign user's process (killable by a root daemon) is never mistaken for ours.
    let group_reused = read_stat(pgid).is_some_and(|s| {
        s.is_alive() && i64::from(s.pgrp) == i64::from(pgid) && !marker.matches_pid(pgid)
    });
    let mut survivors = BTreeMap::new();
    let mut group_alive = false;
    let mut marked = Vec::new();
    for p in &processes {
        let in_group = !group_reused && i64::from(p.stat.pgrp) == i64::from(pgid);
        let is_marked = marker.matches_pid(p.pid);
        if in_group || is_marked {
            group_alive |= in_group;
            survivors.insert(p.pid, p.stat.comm.clone());
        }
        if is_marked {
            marked.push(p.pid);
        }
    }
    if !group_reused && (first || group_alive) {
        if let Err(e) = signal_group(pgid, libc::SIGKILL) {
            warn!(pgid, error = %e, "cannot kill process group");
        }
    }
    for pid in marked {
        kill_verified(pid, marker);
    }
    Ok(Leftovers {
        survivors,
        group_reused,
    })
}

/// Live processes of this user below this one, except the subtrees of the component processes
/// still waited for: those belong to components that are running. The leftovers of a component
/// are looked for once its main process is reaped, and then they are below us (adopted when
/// their parent died, or below another leftover), never below another component's process.
/// So a cleanup at a thousand components reads a few files, not a few thousand.
fn own_live_descendants() -> Vec<OwnProcess> {
    own_live_below(waited().clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::spawn;
    use crate::process::testing::{request, unique_tree, wait_exit, wait_for, Reaper, LIMIT};
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;

    #[tokio::test]
    async fn kill_leftovers_reaches_the_group_and_setsid_escapees() {
        let tree = unique_tree("leftovers");
        let _reaper = Reaper(tree.clone());
        let script = "sleep 30 & setsid sleep 31 & wait";
        let mut spawned = spawn(request(&tree, script, None)).await.expect("spawn");
        let pid = spawned.pid;

        let escaped = || {
            find_marked(&tree, None).iter().any(|&p| {
                p != pid && read_stat(p).is_some_and(|s| i64::from(s.session) == i64::from(p))
            })
        };
        assert!(wait_for(|| find_marked(&tree, None).len() >= 3 && escaped()).await);

        kill(
            Pid::from_raw(i32::try_from(pid).expect("pid")),
            Signal::SIGKILL,
        )
        .expect("kill");
        wait_exit(&mut spawned).await;
        // Another attempt of the same component: its cleanup must not touch this one.
        let mut other = spawn(request(&tree, "sleep 32", None))
            .await
            .expect("spawn");
        kill_leftovers(pid, &tree, "web", &spawned.attempt, LIMIT)
            .await
            .expect("no survivors");
        let left = find_marked(&tree, None);
        assert!(left.contains(&other.pid), "{left:?}");
        assert!(left
            .iter()
            .all(|&p| Marker::for_attempt(&tree, "web", &other.attempt).holds_for(p)));
        assert!(other.child.try_wait().expect("try_wait").is_none());
        kill_attempt(&tree, "web", &other.attempt);
        wait_exit(&mut other).await;
        assert!(wait_for(|| find_marked(&tree, None).is_empty()).await);
    }
}

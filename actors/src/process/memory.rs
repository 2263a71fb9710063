//! Memory figures: the resident memory of each component, counted over its process tree and
//! the marked processes that escaped it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;

use tracing::warn;

use super::marker::{marked_component, marked_components, Marker};
use super::procfs::{own_live_below, own_live_processes, OwnProcess};
use super::registry::adopts_orphans;

/// Resident memory in bytes of each component, given its name and main pid: its process tree
/// (the main process and all its descendants, threads counted once), plus every live process
/// marked with `tree_id` and that component (and their descendants) that escaped the tree, e.g.
/// by a daemonizing double fork. Each process is counted once per component. A component with
/// no live process is absent from the answer.
///
/// Blocking. Adopting orphans (see [`adopt_orphans`](super::adopt_orphans)), every such process
/// is below us: it walks our own subtree, and reads the environment only of the processes
/// outside every component's tree (adopted escapees). Otherwise it reads `/proc/*/stat` and the
/// environment of all this user's processes. Then it reads the resident memory of the
/// components' processes only.
pub fn component_memory(tree_id: &str, roots: &[(String, u32)]) -> HashMap<String, u64> {
    let adopting = adopts_orphans();
    let tree = if adopting {
        ProcessTree::from_processes(own_live_below(BTreeSet::new()))
    } else {
        ProcessTree::take()
    };
    let mut sets: Vec<(&String, HashSet<u32>)> = roots
        .iter()
        .map(|(name, root)| (name, tree.subtree(*root)))
        .collect();
    let marked = if adopting {
        let covered: HashSet<u32> = sets.iter().flat_map(|(_, p)| p.iter().copied()).collect();
        let marker = Marker::new(tree_id, None);
        let me = std::process::id();
        tree.alive
            .iter()
            .filter(|&&pid| pid != me && !covered.contains(&pid))
            .filter_map(|&pid| Some((pid, marked_component(pid, &marker)?)))
            .collect()
    } else {
        marked_components(tree_id)
    };
    for (name, pids) in &mut sets {
        for (pid, _) in marked.iter().filter(|(_, c)| c == name.as_bytes()) {
            pids.extend(tree.subtree(*pid));
        }
    }
    let memory = memory_of(sets.iter().flat_map(|(_, pids)| pids.iter().copied()));
    sets.into_iter()
        .filter(|(_, pids)| pids.iter().any(|p| memory.contains_key(p)))
        .map(|(name, pids)| {
            (
                name.clone(),
                pids.iter().filter_map(|p| memory.get(p)).sum(),
            )
        })
        .collect()
}

/// Who is whose child, among this user's live processes (from `/proc/*/stat`: processes only,
/// never their threads).
struct ProcessTree {
    alive: HashSet<u32>,
    children: HashMap<u32, Vec<u32>>,
}

impl ProcessTree {
    /// All of this user's processes.
    fn take() -> Self {
        let processes = own_live_processes().unwrap_or_else(|e| {
            warn!(error = %e, "cannot scan /proc for memory figures");
            Vec::new()
        });
        Self::from_processes(processes)
    }

    fn from_processes(processes: Vec<OwnProcess>) -> Self {
        let mut alive = HashSet::new();
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        // Our own process is left out of the scans, but may be asked about (tests, the daemon).
        alive.insert(std::process::id());
        for p in processes {
            alive.insert(p.pid);
            if let Ok(parent) = u32::try_from(p.stat.ppid) {
                children.entry(parent).or_default().push(p.pid);
            }
        }
        Self { alive, children }
    }

    /// `root` and all its descendants; empty if `root` is not alive.
    fn subtree(&self, root: u32) -> HashSet<u32> {
        let mut seen = HashSet::new();
        if !self.alive.contains(&root) {
            return seen;
        }
        let mut todo = vec![root];
        while let Some(pid) = todo.pop() {
            if seen.insert(pid) {
                todo.extend(self.children.get(&pid).into_iter().flatten().copied());
            }
        }
        seen
    }
}

/// Resident memory of exactly these processes (each listed once: threads never are).
fn memory_of(pids: impl IntoIterator<Item = u32>) -> HashMap<u32, u64> {
    pids.into_iter()
        .collect::<HashSet<u32>>()
        .into_iter()
        .filter_map(|pid| Some((pid, resident_memory(pid)?)))
        .collect()
}

/// The resident memory of `pid` in bytes (`/proc/PID/statm`, the figure `ps` and sysinfo
/// report): one read, where sysinfo reads four files per process and two of the system's.
/// `None` if the process is gone.
pub fn resident_memory(pid: u32) -> Option<u64> {
    let statm = fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_ascii_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf takes an integer and has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok().filter(|&p| p > 0).unwrap_or(4096))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::testing::{request, unique_tree, wait_for, Reaper};
    use crate::process::{find_marked, signal_group, spawn};

    #[tokio::test]
    async fn memory_counts_the_tree_and_marked_escapees() {
        let me = std::process::id();
        let me_only = component_memory("no-such-tree", &[("me".to_owned(), me)]);
        assert!(me_only.get("me").is_some_and(|&m| m > 0));
        assert!(component_memory("no-such-tree", &[("x".to_owned(), u32::MAX)]).is_empty());

        let tree = unique_tree("memory");
        let _reaper = Reaper(tree.clone());
        // The subshell exits at once, so `sleep 31` is orphaned: outside the tree, still marked.
        let script = "(setsid sleep 31 &); sleep 30";
        let spawned = spawn(request(&tree, script, None)).await.expect("spawn");
        let pid = spawned.pid;
        let orphaned = || {
            find_marked(&tree, None)
                .into_iter()
                .any(|p| !ProcessTree::take().subtree(pid).contains(&p))
        };
        assert!(wait_for(orphaned).await);

        // Under another tree id nothing is marked: the process tree alone.
        let in_tree = component_memory("no-such-tree", &[("web".to_owned(), pid)])
            .get("web")
            .copied()
            .unwrap_or_default();
        let roots = [("web".to_owned(), pid), ("absent".to_owned(), u32::MAX)];
        let by_component = component_memory(&tree, &roots);
        assert!(in_tree > 0);
        assert!(
            by_component.get("web").is_some_and(|&m| m > in_tree),
            "{by_component:?}"
        );
        assert!(!by_component.contains_key("absent"));
        signal_group(pid, libc::SIGKILL).expect("kill");
    }
}

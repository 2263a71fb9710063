//! Memory figures: the resident memory of each component, counted over its process tree and
//! the marked processes that escaped it.
//!
//! # How a sample is taken
//!
//! When this process adopts orphans (the daemon does), every process of every component is
//! below it: the components' main processes are its children, and a process that escaped its
//! tree (a daemonizing double fork) was handed to it as an orphan. A sample walks that subtree
//! once. Of each process it reads `/proc/PID/statm` (its resident memory; all zeros for a
//! zombie), the link count of `/proc/PID/task` (two plus its threads) and its main thread's
//! `children` list (the children of every thread, for the few processes with more than one).
//! Only the processes outside every component's tree have their environment read, to find
//! their marker.
//!
//! Opening a `/proc` file costs about three times as much as reading it again, so a
//! [`MemorySampler`] keeps the three files of each process open from one sample to the next: the
//! next sample reads them again with one system call each, opens files only for the processes
//! that are new, and closes those of the processes that are gone. With many processes, two
//! threads share the walk.
//!
//! # Reading only what changed
//!
//! The shape of the tree changes only when a process is created or goes: a process's parent
//! changes only when that parent dies. So a [`MemorySampler`] keeps the tree it saw, with the last
//! pid the kernel had given out before that sample began (`/proc/loadavg`; pids are given out
//! in increasing order, to processes and threads alike). The next sample then reads, instead of
//! walking everything again:
//!
//! - the resident memory of every process it knows (`statm`, one read each): if one is gone or
//!   a zombie, the tree has changed under it, and it walks the whole tree instead;
//! - the pids given out since: of each that is still a live process (not a thread) whose parent
//!   is in the tree, its files. Its own children came after it, so the same pass finds them, and
//!   the escapee of a double fork, handed to us as an orphan, has us for its parent.
//!
//! When the pids wrapped around, or more pids were given out since than half the processes it
//! knows (checking them would cost more than the walk), it walks the whole tree. The figures are
//! those of a walk (the tests compare them), read at the time of the sample: only the tree's
//! shape is carried over, and only while the kernel says nothing could have changed it. What it
//! cannot see is a process created with a chosen pid below the last one (`clone3` with
//! `set_tid`, or a write to `ns_last_pid`: checkpoint/restore tools, which need
//! `CAP_SYS_ADMIN`), until a process of the tree next goes. Nothing runs between two samples.
//!
//! Otherwise (an embedding application that does not adopt orphans), a sample reads
//! `/proc/*/stat` and the environment of all this user's processes, then the resident memory of
//! the components' processes.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use tracing::warn;

use super::marker::{marked_component, marked_components, Marker};
use super::procfs::{
    children_of_into, is_process, last_pid, own_live_processes, parse_statm, read_from_start,
    read_stat, OwnProcess, ProcFiles, ProcStat, Usage,
};
use super::registry::adopts_orphans;

/// Resident memory in bytes of each component, given its name and main pid: its process tree
/// (the main process and all its descendants, threads counted once), plus every live process
/// marked with `tree_id` and that component (and their descendants) that escaped the tree, e.g.
/// by a daemonizing double fork. Each process is counted once per component. A component with
/// no live process is absent from the answer.
///
/// Blocking. A sample of its own, that keeps no file open: [`MemorySampler`] takes samples one
/// after another more cheaply. The module documentation says how the processes are found.
pub fn component_memory(tree_id: &str, roots: &[(String, u32)]) -> HashMap<String, u64> {
    MemorySampler::one_shot().sample(tree_id, roots)
}

/// Takes memory samples of the same processes again and again (the daemon's `status`): what
/// [`component_memory`] answers, but with the `/proc` files of the processes it saw kept open
/// for the next sample.
///
/// It keeps three files per process (with two pages of kernel buffer), for at most a quarter of
/// the open-file limit (beyond, it opens and closes them at each sample), and closes them as
/// their processes go.
#[derive(Debug, Default)]
pub struct MemorySampler {
    /// The files of the processes seen by the last sample.
    files: PidMap<ProcFiles>,
    /// Whether files are kept from one sample to the next.
    one_shot: bool,
    /// The buffer every file is read into.
    buf: Vec<u8>,
    /// The tree the last sample saw, for the next to re-read (see the module documentation).
    known: Option<Known>,
    /// Samples that walked the whole tree.
    full_walks: u64,
}

/// The tree a sample saw, and the last pid given out before it began.
#[derive(Debug)]
struct Known {
    last_pid: u32,
    tree: Tree,
}

impl MemorySampler {
    /// A sampler that keeps the files of the processes it saw for the next sample.
    pub fn new() -> Self {
        Self::default()
    }

    fn one_shot() -> Self {
        Self {
            one_shot: true,
            ..Self::default()
        }
    }

    /// How many processes' files are open, waiting for the next sample.
    pub fn open_processes(&self) -> usize {
        self.files.len()
    }

    /// How many samples walked the whole tree below this process; the others re-read only the
    /// memory of the processes they knew and the processes created since (see the module
    /// documentation).
    pub fn full_walks(&self) -> u64 {
        self.full_walks
    }

    /// The resident memory of each component, as [`component_memory`] says. Blocking.
    pub fn sample(&mut self, tree_id: &str, roots: &[(String, u32)]) -> HashMap<String, u64> {
        if adopts_orphans() {
            self.sample_below_us(tree_id, roots)
        } else {
            self.files.clear();
            scan_all(tree_id, roots)
        }
    }

    /// A sample from the processes below this one (see the module documentation).
    fn sample_below_us(&mut self, tree_id: &str, roots: &[(String, u32)]) -> HashMap<String, u64> {
        // Read before anything else: a process created from here on has a later pid, which the
        // next sample checks.
        let now = if self.one_shot { None } else { last_pid() };
        let known = self.known.take();
        let reread = now
            .zip(known)
            .and_then(|(now, known)| self.reread(known, now));
        let tree = reread.unwrap_or_else(|| {
            self.full_walks += 1;
            self.walk_below_us()
        });
        let out = tree.by_component(tree_id, roots);
        self.known = now.map(|last_pid| Known { last_pid, tree });
        out
    }

    /// The tree `known` now: the memory of its processes read again, and the processes created
    /// since added; `None` if that cannot be trusted to be the whole tree (a process of it
    /// went, the pids wrapped around) or would cost more than a walk.
    fn reread(&mut self, known: Known, now: u32) -> Option<Tree> {
        let Known {
            last_pid: before,
            mut tree,
        } = known;
        let created = now.checked_sub(before)?;
        if usize::try_from(created).ok()? > tree.nodes.len() / 2 + 8 {
            return None;
        }
        let files = tree
            .nodes
            .keys()
            .map(|&pid| Some((pid, self.files.get(&pid)?)))
            .collect::<Option<Vec<_>>>()?;
        for (pid, pages) in resident_pages_of(&files, &mut self.buf)? {
            if let Some(node) = tree.nodes.get_mut(&pid) {
                node.resident = pages.saturating_mul(page_size());
            }
        }
        let room = kept_processes_limit();
        for pid in before.saturating_add(1)..=now {
            if tree.nodes.contains_key(&pid) {
                continue;
            }
            let Some(parent) = read_stat(pid)
                .filter(ProcStat::is_alive)
                .and_then(|s| u32::try_from(s.ppid).ok())
            else {
                continue;
            };
            if !tree.nodes.contains_key(&parent) || !is_process(pid) {
                continue;
            }
            let Some(files) = ProcFiles::open(pid) else {
                continue;
            };
            let Some(usage) = files.usage(&mut self.buf).filter(|u| u.alive) else {
                continue;
            };
            tree.nodes.insert(
                pid,
                Node {
                    resident: usage.resident_pages.saturating_mul(page_size()),
                    children: Vec::new(),
                },
            );
            if let Some(node) = tree.nodes.get_mut(&parent) {
                node.children.push(pid);
            }
            // Without its files kept, the next sample walks the whole tree.
            if self.files.len() < room {
                self.files.insert(pid, files);
            }
        }
        Some(tree)
    }

    /// Every live process from this one down: its resident memory and its children. With many
    /// children, two threads share the walk (see [`PARALLEL_WALK_FROM`]).
    fn walk_below_us(&mut self) -> Tree {
        let me = std::process::id();
        let keep = if self.one_shot {
            0
        } else {
            kept_processes_limit()
        };
        let room = AtomicUsize::new(keep);
        let last = Mutex::new(std::mem::take(&mut self.files));
        let mut walk = Walk::new(&last, &room, std::mem::take(&mut self.buf));
        let ours = walk.visit(me);
        let mut others = None;
        if ours.len() >= PARALLEL_WALK_FROM {
            let (one, two) = ours.split_at(ours.len() / 2);
            std::thread::scope(|scope| {
                let helper = std::thread::Builder::new()
                    .name("memory-sample".into())
                    .spawn_scoped(scope, || {
                        let mut other = Walk::new(&last, &room, Vec::new());
                        other.run(two.to_vec());
                        other
                    });
                walk.run(one.to_vec());
                match helper.map(std::thread::ScopedJoinHandle::join) {
                    Ok(Ok(other)) => others = Some(other),
                    // No thread to be had (or it failed): this one walks the other half too.
                    _ => walk.run(two.to_vec()),
                }
            });
        } else {
            walk.run(ours);
        }
        let Walk {
            mut nodes,
            kept,
            buf,
            ..
        } = walk;
        self.buf = buf;
        let mut kept = kept;
        if let Some(other) = others {
            for (pid, node) in other.nodes {
                nodes.entry(pid).or_insert(node);
            }
            kept.extend(other.kept);
        }
        // The files of processes gone since the last sample are closed here, with `last`.
        self.files = kept.into_iter().collect();
        Tree { me, nodes }
    }
}

/// The resident pages of each of these processes now; `None` if one is gone or a zombie. With
/// many processes, on two threads (as [`MemorySampler::walk_below_us`]).
fn resident_pages_of(files: &[(u32, &ProcFiles)], buf: &mut Vec<u8>) -> Option<Vec<(u32, u64)>> {
    fn read(files: &[(u32, &ProcFiles)], buf: &mut Vec<u8>) -> Option<Vec<(u32, u64)>> {
        files
            .iter()
            .map(|&(pid, f)| Some((pid, f.resident_pages(buf)?)))
            .collect()
    }
    if files.len() < PARALLEL_WALK_FROM {
        return read(files, buf);
    }
    let (one, two) = files.split_at(files.len() / 2);
    std::thread::scope(|scope| {
        let helper = std::thread::Builder::new()
            .name("memory-sample".into())
            .spawn_scoped(scope, || read(two, &mut Vec::new()));
        let out = read(one, buf);
        let rest = match helper.map(std::thread::ScopedJoinHandle::join) {
            Ok(Ok(rest)) => rest,
            // No thread to be had (or it failed): this one reads the other half too.
            _ => read(two, buf),
        };
        let mut out = out?;
        out.extend(rest?);
        Some(out)
    })
}

/// From this many children of ours, a sample walks their trees on two threads: reading `/proc`
/// is kernel work, which a second core halves. Below, a thread costs more than it saves.
const PARALLEL_WALK_FROM: usize = 128;

/// One thread's part of a walk: the processes it reached, and their files.
struct Walk<'a> {
    /// The files kept by the last sample, taken out as their processes are reached.
    last: &'a Mutex<PidMap<ProcFiles>>,
    /// How many more processes may have their files kept; the files of the others are closed
    /// as soon as they are read.
    room: &'a AtomicUsize,
    buf: Vec<u8>,
    nodes: PidMap<Node>,
    kept: Vec<(u32, ProcFiles)>,
}

impl<'a> Walk<'a> {
    fn new(last: &'a Mutex<PidMap<ProcFiles>>, room: &'a AtomicUsize, buf: Vec<u8>) -> Self {
        Self {
            last,
            room,
            buf,
            nodes: PidMap::default(),
            kept: Vec::new(),
        }
    }

    /// Visits the trees of `todo`.
    fn run(&mut self, mut todo: Vec<u32>) {
        while let Some(pid) = todo.pop() {
            todo.extend(self.visit(pid));
        }
    }

    /// Reads `pid` (once), records it, and returns its children (none if it is gone, a zombie,
    /// or was visited already).
    fn visit(&mut self, pid: u32) -> Vec<u32> {
        if self.nodes.contains_key(&pid) {
            return Vec::new();
        }
        let kept = self
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&pid);
        let Some((files, usage)) = self.read(pid, kept) else {
            return Vec::new();
        };
        if !usage.alive {
            return Vec::new();
        }
        let mut children = Vec::new();
        if usage.threads <= 1 {
            files.main_thread_children(&mut self.buf, &mut children);
        } else {
            children = children_of_into(pid, &mut self.buf);
        }
        let resident = usage.resident_pages.saturating_mul(page_size());
        self.nodes.insert(
            pid,
            Node {
                resident,
                children: children.clone(),
            },
        );
        let taken = self
            .room
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        if taken.is_ok() {
            self.kept.push((pid, files));
        }
        children
    }

    /// The files of `pid` (those kept from the last sample if they still read) and what they
    /// say now; `None` if it is gone.
    fn read(&mut self, pid: u32, kept: Option<ProcFiles>) -> Option<(ProcFiles, Usage)> {
        if let Some(files) = kept {
            if let Some(usage) = files.usage(&mut self.buf) {
                return Some((files, usage));
            }
            // That process is gone; its pid may be another's now.
        }
        let files = ProcFiles::open(pid)?;
        let usage = files.usage(&mut self.buf)?;
        Some((files, usage))
    }
}

/// At most a quarter of the open-file limit (three files per process) stays open between
/// samples, so that the components' own descriptors (pipes, pidfds, logs) never run short
/// because of it.
fn kept_processes_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    usize::try_from(limit.rlim_cur / 12).unwrap_or(usize::MAX)
}

fn page_size() -> u64 {
    // SAFETY: sysconf takes an integer and has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(page).ok().filter(|&p| p > 0).unwrap_or(4096)
}

/// A map keyed by pid.
type PidMap<V> = HashMap<u32, V, BuildHasherDefault<PidHasher>>;
/// A set of pids.
type PidSet = HashSet<u32, BuildHasherDefault<PidHasher>>;

/// Hashes a pid with one multiplication (Fibonacci hashing). Pids are small distinct numbers
/// that no one chooses to collide, and the default SipHash would be about 40 % of a sample's
/// own instructions.
#[derive(Debug, Default, Clone, Copy)]
struct PidHasher(u64);

impl Hasher for PidHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The live processes from this one down, as one sample saw them.
#[derive(Debug)]
struct Tree {
    me: u32,
    nodes: PidMap<Node>,
}

#[derive(Debug)]
struct Node {
    /// Resident memory in bytes.
    resident: u64,
    children: Vec<u32>,
}

impl Tree {
    /// The figures of [`component_memory`]: each root's subtree, plus the subtrees of the marked
    /// processes outside every root's subtree (below us, they are escapees).
    fn by_component(&self, tree_id: &str, roots: &[(String, u32)]) -> HashMap<String, u64> {
        let mut out: HashMap<String, u64> = HashMap::with_capacity(roots.len());
        // The main processes are distinct children of ours, so their trees are disjoint: one
        // set of the processes seen serves them all.
        let mut covered = PidSet::with_capacity_and_hasher(self.nodes.len(), Default::default());
        for (name, root) in roots {
            if self.nodes.contains_key(root) {
                let used = self.add_subtree(*root, &mut covered);
                *out.entry(name.clone()).or_default() += used;
            }
        }
        let marker = Marker::new(tree_id, None);
        let mut escaped: HashMap<&str, PidSet> = HashMap::new();
        for &pid in self.nodes.keys() {
            if pid == self.me || covered.contains(&pid) {
                continue;
            }
            let Some(component) = marked_component(pid, &marker) else {
                continue;
            };
            if let Some((name, _)) = roots.iter().find(|(n, _)| n.as_bytes() == component) {
                let seen = escaped.entry(name.as_str()).or_default();
                self.add_subtree(pid, seen);
            }
        }
        for (name, pids) in escaped {
            let used: u64 = pids
                .iter()
                .filter_map(|p| self.nodes.get(p))
                .map(|n| n.resident)
                .sum();
            *out.entry(name.to_owned()).or_default() += used;
        }
        out
    }

    /// Adds `root` and its descendants to `seen`; returns the resident memory of those that
    /// were not in it yet.
    fn add_subtree(&self, root: u32, seen: &mut PidSet) -> u64 {
        let mut used = 0;
        let mut todo = vec![root];
        while let Some(pid) = todo.pop() {
            let Some(node) = self.nodes.get(&pid) else {
                continue;
            };
            if seen.insert(pid) {
                used += node.resident;
                todo.extend(&node.children);
            }
        }
        used
    }
}

/// [`component_memory`] without adopting orphans: from every process of this user.
fn scan_all(tree_id: &str, roots: &[(String, u32)]) -> HashMap<String, u64> {
    let tree = ProcessTree::take();
    let mut sets: Vec<(&String, HashSet<u32>)> = roots
        .iter()
        .map(|(name, root)| (name, tree.subtree(*root)))
        .collect();
    let marked = marked_components(tree_id);
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
    let statm = File::open(format!("/proc/{pid}/statm")).ok()?;
    let mut buf = Vec::new();
    let (_, pages) = parse_statm(read_from_start(&statm, &mut buf, true).ok()?)?;
    Some(pages.saturating_mul(page_size()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::procfs::read_stat;
    use crate::process::testing::{exec_done, request, unique_tree, wait_exit, wait_for, Reaper};
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

    /// The walk below us, with its files kept: the same figures as a scan of every process, and
    /// the files of a process that went are closed by the next sample.
    #[tokio::test]
    async fn the_walk_below_us_keeps_files_for_the_next_sample() {
        let tree = unique_tree("walk");
        let _reaper = Reaper(tree.clone());
        // `main` has a child; `loose` is a process of ours outside `main`'s tree, marked as
        // `web`'s: what an adopted escapee looks like from here.
        let main = spawn(request(&tree, "sleep 30 & sleep 30", None))
            .await
            .expect("spawn");
        let mut loose = spawn(request(&tree, "exec sleep 31", None))
            .await
            .expect("spawn");
        let both_run =
            || exec_done(loose.pid, "sleep") && ProcessTree::take().subtree(main.pid).len() >= 2;
        assert!(wait_for(both_run).await);

        let roots = [("web".to_owned(), main.pid)];
        let mut sampler = MemorySampler::new();
        let walked = sampler.sample_below_us(&tree, &roots);
        let scanned = scan_all(&tree, &roots);
        let (Some(&walked_web), Some(&scanned_web)) = (walked.get("web"), scanned.get("web"))
        else {
            panic!("web missing: {walked:?} {scanned:?}");
        };
        let main_alone = sampler.sample_below_us("no-such-tree", &roots)["web"];
        let loose_alone = resident_memory(loose.pid).expect("loose runs");
        assert!(
            walked_web.abs_diff(scanned_web) <= walked_web / 20,
            "{walked_web} vs {scanned_web}"
        );
        assert!(walked_web.abs_diff(main_alone + loose_alone) <= walked_web / 20);
        // This process, `main`, its child and `loose` at least (other tests' processes too).
        assert!(
            sampler.open_processes() >= 4,
            "{}",
            sampler.open_processes()
        );

        // `loose` goes: its files are closed, and `web` is its tree alone.
        let opened = sampler.open_processes();
        signal_group(loose.pid, libc::SIGKILL).expect("kill");
        wait_exit(&mut loose).await;
        let after = sampler.sample_below_us(&tree, &roots)["web"];
        assert!(
            after.abs_diff(main_alone) <= main_alone / 20,
            "{after} vs {main_alone}"
        );
        assert!(!sampler.files.contains_key(&loose.pid));
        assert!(
            sampler.open_processes() < opened + 8,
            "{opened} -> {}",
            sampler.open_processes()
        );
        // A component whose processes are all gone is absent.
        signal_group(main.pid, libc::SIGKILL).expect("kill");
        let gone = || !sampler.sample_below_us(&tree, &roots).contains_key("web");
        assert!(wait_for(gone).await);
    }

    /// A child started by another thread than the main one is listed under that thread only.
    #[tokio::test]
    async fn children_of_other_threads_are_counted() {
        let tree = unique_tree("threads");
        let _reaper = Reaper(tree.clone());
        let script = "exec python3 -c 'import subprocess, threading, time
def run():
    subprocess.Popen([\"sleep\", \"30\"])
    time.sleep(30)
threading.Thread(target=run).start()
time.sleep(30)'";
        let main = spawn(request(&tree, script, None)).await.expect("spawn");
        // `python3` may be a wrapper script: wait for python itself, with its `sleep`.
        let sleep_of_python = || -> Option<u32> {
            read_stat(main.pid).filter(|s| s.comm.starts_with("python"))?;
            let below = ProcessTree::take().subtree(main.pid);
            let child = below.into_iter().find(|&p| p != main.pid)?;
            exec_done(child, "sleep").then_some(child)
        };
        assert!(wait_for(|| sleep_of_python().is_some()).await);
        let sleep = sleep_of_python().expect("the sleep runs");
        let mut sampler = MemorySampler::new();
        let walked = sampler.walk_below_us();
        assert!(walked.nodes[&main.pid].children.contains(&sleep));
        let roots = [("web".to_owned(), main.pid)];
        let python_alone = resident_memory(main.pid).unwrap_or_default();
        assert!(sampler.sample_below_us(&tree, &roots)["web"] > python_alone);
        signal_group(main.pid, libc::SIGKILL).expect("kill");
    }

    /// Kills and reaps its children when dropped, even when the test panics.
    struct Children(Vec<std::process::Child>);

    impl Drop for Children {
        fn drop(&mut self) {
            for child in &mut self.0 {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// With more children than [`PARALLEL_WALK_FROM`], two threads share the walk: every process
    /// is reached once, and its files are kept.
    #[test]
    fn a_wide_walk_is_shared_by_two_threads() {
        let count = PARALLEL_WALK_FROM + 8;
        let mut children = Children(Vec::new());
        for _ in 0..count {
            let child = std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .expect("sleep");
            children.0.push(child);
        }
        let pids: Vec<u32> = children.0.iter().map(std::process::Child::id).collect();
        let mut sampler = MemorySampler::new();
        let tree = sampler.walk_below_us();
        assert!(pids
            .iter()
            .all(|p| tree.nodes.get(p).is_some_and(|n| n.resident > 0)));
        assert!(pids.iter().all(|p| sampler.files.contains_key(p)));
        let again = sampler.walk_below_us();
        assert!(pids.iter().all(|p| again.nodes.contains_key(p)));
        let one_shot = MemorySampler::one_shot().walk_below_us();
        assert!(pids.iter().all(|p| one_shot.nodes.contains_key(p)));
        drop(children);
        let after = sampler.walk_below_us();
        assert!(pids.iter().all(|p| !after.nodes.contains_key(p)));
        assert!(pids.iter().all(|p| !sampler.files.contains_key(p)));
    }
}

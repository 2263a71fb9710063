//! The OS side of a component: spawning its process, signalling its group, finding and killing
//! leftovers by marker, sampling memory, and pumping its output into a timestamped log.
//!
//! The supervisor's one promise is that no process it started outlives it or its component.
//! These invariants keep that promise:
//!
//! * **One spawner thread.** Every component process is started by a single dedicated std
//!   thread that starts on first use and never exits, with a `vfork`-style `clone` that does not
//!   copy the daemon ([`child`] says why and how). The child arms `PR_SET_PDEATHSIG(SIGKILL)`
//!   before `exec`, and Linux fires that signal when the *thread* that started it exits, not the
//!   process. Starting from a tokio worker (which retires when idle) would kill components at
//!   random; from the spawner thread, the signal fires exactly when the daemon dies. The child
//!   also checks that its parent is still the daemon after arming it, closing the window of a
//!   daemon dying mid-spawn. A panic while spawning is caught so the thread survives it.
//! * **Own process group.** Each main process leads a new group (pgid == pid), so one `killpg`
//!   reaches every ordinary descendant, and never the daemon (whose group is refused).
//! * **Markers.** Descendants that leave the group (`setsid`, a daemonizing double fork) still
//!   inherit [`TREE_ENV`] and [`COMPONENT_ENV`] from the environment; [`find_marked`] finds them in
//!   `/proc` by those exact entries, so after a crash only this tree's processes are ever killed.
//!   A process that clears or rewrites its environment (`env -i`, setproctitle) loses the marker;
//!   if it stayed in the group, the group kill still reaches it.
//! * **Never a bare recorded pid.** A pid is only a number: once its process is reaped the kernel
//!   hands it to anyone. So a marked process is signalled through a pidfd opened *before* its
//!   marker is read again: the pidfd pins one process, so a pid reused in between is never hit.
//!   A process group number cannot be reused while a member lives; [`kill_leftovers`] signals a
//!   group only while it has members or right after the leader exited, and leaves it alone if a
//!   live, unmarked process now leads a group under that number (the number was reused).
//!
//! Output is drained by two tasks per process (stdout and stderr) that never stop reading while
//! the pipe is open, so a component never blocks on a full pipe, even when its log cannot be
//! written. They cut it into lines of at most the log's `max_line` bytes (longer ones are cut
//! into marked pieces), so memory stays bounded, and hand them, each stream tagged, to the
//! component's [`ComponentLog`], which stamps, rotates and routes them (see [`crate::logs`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::signal::{kill, Signal};
use nix::unistd::{geteuid, getpgrp, pipe2, Pid};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{error, warn};

use crate::logs::{ComponentLog, Stream};

mod child;
pub use child::Child;

/// Environment variable naming the tree (the daemon: its home) in every process of a component.
pub const TREE_ENV: &str = "IMAGESERVING_TREE";
/// Environment variable naming the component in every process of a component.
pub const COMPONENT_ENV: &str = "IMAGESERVING_COMPONENT";
/// Environment variable naming the spawn attempt (unique within the daemon's life) in every
/// process of one attempt: the cleanup of an old attempt never touches a newer one.
pub const ATTEMPT_ENV: &str = "IMAGESERVING_ATTEMPT";

/// Numbers the attempts of this process's life.
static ATTEMPTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// How much is read from a pipe at once.
const READ_CHUNK: usize = 16 * 1024;

/// How often [`kill_leftovers`] looks again.
const POLL: Duration = Duration::from_millis(10);

/// What to run for one attempt of a component.
#[derive(Clone, Debug)]
pub struct SpawnRequest {
    /// Program and arguments (non-empty).
    pub command: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Environment shared with other components; `env` overrides it.
    pub shared_env: Arc<[(String, String)]>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// Tree id, exported as [`TREE_ENV`].
    pub tree_id: String,
    /// Component name, exported as [`COMPONENT_ENV`].
    pub component: String,
    /// Where standard output and error go, line by line, timestamped: the component's log,
    /// shared by all its attempts (one per component actor), so that rotation and the
    /// supervisor's markers apply to the same files.
    pub log: Arc<ComponentLog>,
}

/// A spawned component process, the leader of its own process group (pgid == pid).
#[derive(Debug)]
pub struct Spawned {
    /// Its pid, also its process group id.
    pub pid: u32,
    /// The handle to wait on. Its stdout/stderr are already taken by the log pump tasks.
    pub child: Child,
    /// The attempt id its processes carry in [`ATTEMPT_ENV`].
    pub attempt: String,
    /// The output pumps: done once every process holding the output pipes is gone and the
    /// last line is in the log.
    pub drained: Drained,
}

/// The two output pumps of one process.
#[derive(Debug)]
pub struct Drained(Vec<JoinHandle<()>>);

impl Drained {
    /// Waits until both pumps have written their last line, at most `limit` (a descendant that
    /// escaped the kill may hold a pipe open). Returns whether they finished.
    pub async fn wait(self, limit: Duration) -> bool {
        let all = async {
            for pump in self.0 {
                // A pump only fails if the runtime shuts down: it is done either way.
                let _ = pump.await;
            }
        };
        tokio::time::timeout(limit, all).await.is_ok()
    }
}

/// Spawns `req` from the dedicated spawner thread (so `PR_SET_PDEATHSIG` stays armed for the
/// life of the process), in a new process group, with the marker variables set, stdin from
/// /dev/null, and stdout/stderr pumped line by line into the component's log.
///
/// The child is registered with (and its output pumped on) the caller's tokio runtime. If this
/// future is dropped before the answer arrives, the new process group is killed.
pub async fn spawn(req: SpawnRequest) -> io::Result<Spawned> {
    if req.command.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("spawning component {:?}: empty command", req.component),
        ));
    }
    let runtime = Handle::try_current().map_err(|e| {
        io::Error::other(format!(
            "spawning {:?}: not in a tokio runtime: {e}",
            req.command[0]
        ))
    })?;
    let (reply, answer) = oneshot::channel();
    spawner()?
        .send(Job::Spawn(SpawnJob {
            req,
            runtime,
            reply,
        }))
        .map_err(|_| io::Error::other("spawning: the spawner thread is gone"))?;
    answer
        .await
        .map_err(|_| io::Error::other("spawning: the spawner thread dropped the request"))?
}

/// Sends `signal` to the process group `pgid`. A group that no longer exists is not an error.
///
/// Refuses groups 0 and 1 and the daemon's own group. Safe while the caller holds the leader's
/// unreaped [`Spawned::child`] or the group has members: until then the number cannot be reused.
pub fn signal_group(pgid: u32, signal: i32) -> io::Result<()> {
    let group = checked_pgid(pgid)?;
    // SAFETY: killpg only takes integers and has no memory-safety preconditions.
    if unsafe { libc::killpg(group, signal) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        return Ok(());
    }
    Err(io::Error::new(
        err.kind(),
        format!("sending signal {signal} to process group {pgid}: {err}"),
    ))
}

// ---------------------------------------------------------------------------------------------
// Adopting orphans.

/// Whether this process is a child subreaper (see [`adopt_orphans`]).
static ADOPTING: AtomicBool = AtomicBool::new(false);

/// The children a [`Spawned::child`] handle waits for: registered by the spawner thread right
/// after the `clone`, forgotten when [`Child`] reaps them. The orphan reaper leaves them to
/// their handles.
static WAITED: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// Whether [`adopt_orphans`] made this process a child subreaper.
pub fn adopts_orphans() -> bool {
    ADOPTING.load(Ordering::Relaxed)
}

fn waited() -> std::sync::MutexGuard<'static, BTreeSet<u32>> {
    WAITED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Makes this process a child subreaper (`PR_SET_CHILD_SUBREAPER`), so that a descendant whose
/// parent dies (a double fork, a `setsid` daemon) is re-parented to us instead of to init, and
/// reaps those adopted orphans when they die. From then on the cleanup after a component's
/// exit walks our own subtree for its leftovers (a few files per supervised process) instead
/// of reading every process of the machine.
///
/// Process-wide: the daemon calls it once, inside its runtime, before spawning anything. An
/// application embedding the tree may call it too, if it reaps no children of its own with
/// `waitpid(-1)` (this reaper reaps only adopted processes, never a child it did not adopt).
pub fn adopt_orphans() -> io::Result<()> {
    let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let jobs = spawner()?;
    ADOPTING.store(true, Ordering::Relaxed);
    tokio::spawn(async move {
        while sigchld.recv().await.is_some() {
            if jobs.send(Job::ReapAdopted).is_err() {
                break;
            }
        }
    });
    Ok(())
}

/// Reaps every zombie child that no handle waits for: adopted orphans. Runs on the spawner
/// thread, so no child is between its fork and its registration.
fn reap_adopted() {
    let me = std::process::id();
    let zombies: Vec<u32> = {
        let waited = waited();
        children_of(me)
            .into_iter()
            .filter(|pid| !waited.contains(pid))
            .filter(|&pid| read_stat(pid).is_some_and(|s| s.state == 'Z'))
            .collect()
    };
    for pid in zombies {
        // SAFETY: waitpid on a specific pid with a null status pointer.
        unsafe { libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), libc::WNOHANG) };
    }
}

/// The children of `pid`, from every thread's `children` list.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for task in tasks.filter_map(Result::ok) {
        let Ok(list) = fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        out.extend(
            list.split_ascii_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    out
}

/// Live processes of this user below this one, except the subtrees of the component processes
/// still waited for: those belong to components that are running. The leftovers of a component
/// are looked for once its main process is reaped, and then they are below us (adopted when
/// their parent died, or below another leftover), never below another component's process.
/// So a cleanup at a thousand components reads a few files, not a few thousand.
fn own_live_descendants() -> Vec<OwnProcess> {
    own_live_below(waited().clone())
}

/// Live processes of this user below this one, except `skip` and the processes below them.
fn own_live_below(skip: BTreeSet<u32>) -> Vec<OwnProcess> {
    let uid = geteuid().as_raw();
    let mut out = Vec::new();
    let mut seen = skip;
    let mut next = children_of(std::process::id());
    while let Some(pid) = next.pop() {
        if !seen.insert(pid) {
            continue;
        }
        next.extend(children_of(pid));
        if let Some(stat) = read_stat(pid).filter(ProcStat::is_alive) {
            if read_real_uid(pid) == Some(uid) {
                out.push(OwnProcess { pid, stat });
            }
        }
    }
    out
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

/// Resident memory in bytes of each component, given its name and main pid: its process tree
/// (the main process and all its descendants, threads counted once), plus every live process
/// marked with `tree_id` and that component (and their descendants) that escaped the tree, e.g.
/// by a daemonizing double fork. Each process is counted once per component. A component with
/// no live process is absent from the answer.
///
/// Blocking. Adopting orphans (see [`adopt_orphans`]), every such process is below us: it
/// walks our own subtree, and reads the environment only of the processes outside every
/// component's tree (adopted escapees). Otherwise it reads `/proc/*/stat` and the environment
/// of all this user's processes. Then it reads the resident memory of the components'
/// processes only.
pub fn component_memory(tree_id: &str, roots: &[(String, u32)]) -> HashMap<String, u64> {
    let adopting = ADOPTING.load(Ordering::Relaxed);
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

// ---------------------------------------------------------------------------------------------
// The spawner thread.

/// One spawn handed to the spawner thread.
struct SpawnJob {
    req: SpawnRequest,
    /// The caller's runtime: the child is reaped, and its output pumped, there.
    runtime: Handle,
    /// Where the result goes; if the caller is gone, the new process is killed.
    reply: oneshot::Sender<io::Result<Spawned>>,
}

/// What the spawner thread does: spawn, or reap the adopted orphans that died. Both on the
/// one thread, so that a reap never runs between a fork and the registration of its child.
enum Job {
    Spawn(SpawnJob),
    ReapAdopted,
}

/// The spawner thread's mailbox. The sender lives forever, so the thread never sees its channel
/// close and never exits.
static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
/// Serializes the start of the spawner thread, so that a failed start can be retried.
static SPAWNER_START: Mutex<()> = Mutex::new(());

fn spawner() -> io::Result<&'static mpsc::Sender<Job>> {
    if let Some(sender) = SPAWNER.get() {
        return Ok(sender);
    }
    let _starting = SPAWNER_START.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(sender) = SPAWNER.get() {
        return Ok(sender);
    }
    let (sender, jobs) = mpsc::channel();
    std::thread::Builder::new()
        .name("imageserving-spawner".into())
        .spawn(move || spawner_loop(&jobs))
        .map_err(|e| io::Error::new(e.kind(), format!("starting the spawner thread: {e}")))?;
    Ok(SPAWNER.get_or_init(|| sender))
}

fn spawner_loop(jobs: &mpsc::Receiver<Job>) {
    // Mapped on the first spawn; a failure fails that spawn, and the next one tries again.
    let mut stack: Option<child::Stack> = None;
    // The environment of the last spawn's shared block, reused while the block is the same.
    let mut base_env: Option<child::BaseEnv> = None;
    while let Ok(job) = jobs.recv() {
        let SpawnJob {
            req,
            runtime,
            reply,
        } = match job {
            Job::Spawn(job) => job,
            Job::ReapAdopted => {
                reap_adopted();
                continue;
            }
        };
        let program = req.command.first().cloned().unwrap_or_default();
        let _entered = runtime.enter();
        // If this thread died, every component it forked would get SIGKILL: survive any panic.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let stack = match &mut stack {
                Some(stack) => stack,
                empty => empty.insert(child::Stack::new().map_err(|e| {
                    io::Error::new(e.kind(), format!("mapping a stack for children: {e}"))
                })?),
            };
            let base = match &mut base_env {
                Some(base) if base.is_for(&req.shared_env) => base,
                cached => cached.insert(child::BaseEnv::new(&req.shared_env).map_err(|e| {
                    io::Error::new(e.kind(), format!("spawning {program:?}: environment: {e}"))
                })?),
            };
            spawn_here(req, &runtime, stack, base)
        }))
        .unwrap_or_else(|_| Err(io::Error::other(format!("spawning {program:?}: panicked"))));
        if let Err(Ok(unwanted)) = reply.send(result) {
            // Nobody holds this process any more, so nobody would ever stop it. Its leader is
            // not reaped yet (we hold its handle), so the group number is still ours.
            warn!(
                pid = unwanted.pid,
                "spawn cancelled by its caller; killing the new process"
            );
            if let Err(e) = signal_group(unwanted.pid, libc::SIGKILL) {
                error!(pid = unwanted.pid, error = %e, "cannot kill an unwanted process");
            }
        }
    }
}

/// Starts `req` (see [`child`]); runs on the spawner thread, inside `runtime`, with the thread's
/// child `stack` and the environment `base` built from `req.shared_env`.
fn spawn_here(
    req: SpawnRequest,
    runtime: &Handle,
    stack: &child::Stack,
    base: &child::BaseEnv,
) -> io::Result<Spawned> {
    let Some((program, args)) = req.command.split_first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
    };
    // The log files exist from the first start on, even if the component never writes.
    req.log.open_files();
    let attempt = format!(
        "{}-{}",
        std::process::id(),
        ATTEMPTS.fetch_add(1, Ordering::Relaxed)
    );
    let context = |e: io::Error| {
        let place = req
            .cwd
            .as_ref()
            .map(|cwd| format!(" in {}", cwd.display()))
            .unwrap_or_default();
        io::Error::new(e.kind(), format!("spawning {program:?}{place}: {e}"))
    };
    let pipe = || {
        pipe2(OFlag::O_CLOEXEC)
            .map_err(|e| io::Error::other(format!("creating a pipe: {e}")))
            .map_err(context)
    };
    let (out_reader, out_writer) = pipe()?;
    let (err_reader, err_writer) = pipe()?;
    let null = File::open("/dev/null").map_err(context)?;
    let env = req
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        // Last, so that `req.env` cannot override the markers.
        .chain([
            (TREE_ENV, req.tree_id.as_str()),
            (COMPONENT_ENV, req.component.as_str()),
            (ATTEMPT_ENV, attempt.as_str()),
        ]);
    let exec = child::Exec::new(
        program,
        args,
        base,
        env,
        req.cwd.as_deref(),
        [null.into(), out_writer, err_writer],
    )
    .map_err(context)?;
    let (pid, pidfd) = child::spawn(&exec, stack).map_err(context)?;
    // Our ends of the child's output pipes close here: the pumps see the end of the output
    // once the child and its descendants close theirs.
    drop(exec);
    waited().insert(pid);
    let child = child::Child::new(pid, pidfd).inspect_err(|_| {
        // Nobody could wait for it: it must not run unsupervised, and the orphan reaper (run
        // on this thread, after this spawn) reaps it once it is dead.
        let _ = signal_group(pid, libc::SIGKILL);
        waited().remove(&pid);
    });
    let child = child.map_err(context)?;
    let mut pumps = Vec::with_capacity(2);
    for (reader, stream) in [(out_reader, Stream::Stdout), (err_reader, Stream::Stderr)] {
        match tokio::net::unix::pipe::Receiver::from_owned_fd(reader) {
            Ok(pipe) => pumps.push(runtime.spawn(pump(pipe, Arc::clone(&req.log), stream))),
            Err(e) => warn!(component = req.component, stream = stream.as_str(), error = %e,
                "cannot read component output"),
        }
    }
    Ok(Spawned {
        pid,
        child,
        attempt,
        drained: Drained(pumps),
    })
}

// ---------------------------------------------------------------------------------------------
// Output pumps.

/// Reads `pipe` until end of file, handing its lines (cut to the log's line bound) to `log`.
/// Reading never stops before the end, whatever happens to the log.
async fn pump<R: AsyncRead + Unpin>(mut pipe: R, log: Arc<ComponentLog>, stream: Stream) {
    let keep = log.keeps(stream);
    // Filled by `read_buf` without zeroing first: until output arrives, no page of it is
    // touched, so a quiet component costs no resident memory here (a thousand of them would
    // otherwise hold 32 MiB of zeroes).
    let mut buf = Vec::with_capacity(READ_CHUNK);
    let mut lines = log.line_buffer();
    loop {
        buf.clear();
        let n = match pipe.read_buf(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                warn!(component = log.component(), stream = stream.as_str(), error = %e,
                    "cannot read component output");
                break;
            }
        };
        if keep {
            let mut out = Vec::new();
            lines.push(&buf[..n], &mut out);
            write_lines(&log, stream, out).await;
        }
    }
    if keep {
        let mut out = Vec::new();
        lines.finish(&mut out);
        write_lines(&log, stream, out).await;
    }
}

async fn write_lines(log: &Arc<ComponentLog>, stream: Stream, lines: Vec<u8>) {
    if lines.is_empty() {
        return;
    }
    let log = Arc::clone(log);
    // A write may block on a slow disk (or rotate): do it on the blocking pool. It only fails
    // if the runtime shuts down, and then nothing is left to log to.
    let _ = tokio::task::spawn_blocking(move || log.write_lines(stream, &lines)).await;
}

// ---------------------------------------------------------------------------------------------
// /proc, markers and pidfds.

fn checked_pgid(pgid: u32) -> io::Result<libc::pid_t> {
    let refuse = |why: &str| {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal process group {pgid}: {why}"),
        ))
    };
    match libc::pid_t::try_from(pgid) {
        Ok(group) if group > 1 && group == getpgrp().as_raw() => refuse("it is the daemon's own"),
        Ok(group) if group > 1 => Ok(group),
        _ => refuse("not a component's group"),
    }
}

/// The fields of `/proc/PID/stat` this module needs.
#[derive(Debug, PartialEq, Eq)]
struct ProcStat {
    comm: String,
    state: char,
    ppid: i32,
    pgrp: i32,
    session: i32,
}

impl ProcStat {
    fn is_alive(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses `pid (comm) state ppid pgrp session ...`; `comm` may hold spaces and parentheses, so
/// the fields are read after the last `)`.
fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let mut fields = text.get(close + 1..)?.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    Some(ProcStat {
        comm,
        state,
        ppid,
        pgrp,
        session,
    })
}

fn read_stat(pid: u32) -> Option<ProcStat> {
    let bytes = fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&String::from_utf8_lossy(&bytes))
}

/// The real uid on the `Uid:` line of `/proc/PID/status`.
fn parse_real_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))?
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

fn read_real_uid(pid: u32) -> Option<u32> {
    parse_real_uid(&fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// Every pid in `/proc` but this process's own.
fn other_pids() -> io::Result<impl Iterator<Item = u32>> {
    let me = std::process::id();
    let entries = fs::read_dir("/proc")
        .map_err(|e| io::Error::new(e.kind(), format!("listing /proc: {e}")))?;
    Ok(entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(move |&pid| pid != me))
}

/// A live (non-zombie) process of this user, other than the daemon itself.
struct OwnProcess {
    pid: u32,
    stat: ProcStat,
}

/// Lists live processes of this user. Processes that vanish or cannot be read are skipped.
fn own_live_processes() -> io::Result<Vec<OwnProcess>> {
    let uid = geteuid().as_raw();
    Ok(other_pids()?
        .filter_map(|pid| {
            let stat = read_stat(pid).filter(ProcStat::is_alive)?;
            (read_real_uid(pid)? == uid).then_some(OwnProcess { pid, stat })
        })
        .collect())
}

/// The environment entries that mark a process as part of a tree (and of a component).
struct Marker {
    tree: Vec<u8>,
    component: Option<Vec<u8>>,
    attempt: Option<Vec<u8>>,
}

impl Marker {
    fn new(tree_id: &str, component: Option<&str>) -> Self {
        Self {
            tree: format!("{TREE_ENV}={tree_id}").into_bytes(),
            component: component.map(|c| format!("{COMPONENT_ENV}={c}").into_bytes()),
            attempt: None,
        }
    }

    fn for_attempt(tree_id: &str, component: &str, attempt: &str) -> Self {
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

    fn matches_pid(&self, pid: u32) -> bool {
        fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| self.matches(&environ))
    }

    /// Whether `pid` is, right now, a live process of this user carrying the marker.
    fn holds_for(&self, pid: u32) -> bool {
        read_stat(pid).is_some_and(|s| s.is_alive())
            && read_real_uid(pid) == Some(geteuid().as_raw())
            && self.matches_pid(pid)
    }
}

/// SIGKILLs `pid` if it still carries `marker`, checked after pinning it with a pidfd.
fn kill_verified(pid: u32, marker: &Marker) -> bool {
    kill_checked(pid, |pid| marker.holds_for(pid))
}

/// SIGKILLs `pid` if `check(pid)` holds after the process was pinned with a pidfd: if the pid
/// was reused before the pidfd was opened, the check sees the new process; if it is reused
/// after, the pidfd still names the old one, and the signal fails.
fn kill_checked(pid: u32, check: impl Fn(u32) -> bool) -> bool {
    match pidfd_open(pid) {
        Ok(pidfd) => check(pid) && pidfd_kill(&pidfd).is_ok(),
        // Kernels before 5.3: the check is as close to the kill as it gets.
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            check(pid)
                && i32::try_from(pid)
                    .is_ok_and(|raw| kill(Pid::from_raw(raw), Signal::SIGKILL).is_ok())
        }
        // Gone already (ESRCH), or otherwise out of reach.
        Err(_) => false,
    }
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("pidfd out of range"))?;
    // SAFETY: the kernel just created this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn pidfd_kill(pidfd: &OwnedFd) -> io::Result<()> {
    // SAFETY: a valid pidfd, a signal number, a null siginfo (allowed) and no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0 as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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
    let processes = if ADOPTING.load(Ordering::Relaxed) {
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

/// Pid and component of every live process of this user marked with `tree_id`.
fn marked_components(tree_id: &str) -> Vec<(u32, Vec<u8>)> {
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

/// The component `pid` belongs to, if its environment carries `marker`.
fn marked_component(pid: u32, marker: &Marker) -> Option<Vec<u8>> {
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

// ---------------------------------------------------------------------------------------------
// Memory.

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
    use crate::logs::{DEFAULT_MAX_LINE, MARKER_TAG};
    use crate::spec::LogSpec;
    use std::path::Path;
    use std::time::{SystemTime, UNIX_EPOCH};

    /// The bound of every wait in these tests.
    const LIMIT: Duration = Duration::from_secs(20);

    fn unique_tree(tag: &str) -> String {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        format!("test-{}-{nanos}-{tag}", std::process::id())
    }

    /// Kills every process marked with its tree when dropped, even when the test panics.
    struct Reaper(String);

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

    fn request(tree: &str, script: &str, log_file: Option<PathBuf>) -> SpawnRequest {
        let spec = log_file.map_or_else(LogSpec::discard, LogSpec::file);
        request_with(tree, script, ComponentLog::new(&spec, "web"))
    }

    fn request_with(tree: &str, script: &str, log: ComponentLog) -> SpawnRequest {
        SpawnRequest {
            command: vec!["sh".into(), "-c".into(), script.into()],
            env: vec![("EXTRA_TEST_VAR".into(), "yes".into())],
            shared_env: Arc::from(Vec::new()),
            cwd: None,
            tree_id: tree.into(),
            component: "web".into(),
            log: Arc::new(log),
        }
    }

    /// Whether `pid` now runs `comm` (its exec is over).
    fn exec_done(pid: u32, comm: &str) -> bool {
        fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
    }

    async fn wait_for(mut condition: impl FnMut() -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < LIMIT {
            if condition() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        condition()
    }

    async fn wait_exit(spawned: &mut Spawned) -> std::process::ExitStatus {
        tokio::time::timeout(LIMIT, spawned.child.wait())
            .await
            .expect("process did not exit in time")
            .expect("wait failed")
    }

    /// The log's lines, each split into its timestamp and its text.
    fn log_lines(path: &Path) -> Vec<(String, Vec<u8>)> {
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

    #[tokio::test]
    async fn output_of_both_streams_is_logged_with_timestamps() {
        let tree = unique_tree("log");
        let _reaper = Reaper(tree.clone());
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("sub/dir/web.log");
        let script = "echo hello; echo err >&2; sleep 30";
        let spawned = spawn(request(&tree, script, Some(log.clone())))
            .await
            .expect("spawn");

        let has = |text: &[u8]| log_lines(&log).iter().any(|(_, line)| line == text);
        assert!(
            wait_for(|| has(b"hello") && has(b"err")).await,
            "log: {:?}",
            fs::read_to_string(&log)
        );
        for (stamp, _) in log_lines(&log) {
            assert!(stamp.ends_with('Z') && stamp.contains('.'), "{stamp}");
            humantime::parse_rfc3339(&stamp).expect("an RFC 3339 timestamp");
        }
        signal_group(spawned.pid, libc::SIGKILL).expect("kill");
    }

    #[tokio::test]
    async fn child_leads_its_own_group_and_carries_the_marker() {
        let tree = unique_tree("marker");
        let _reaper = Reaper(tree.clone());
        let mut spawned = spawn(request(&tree, "exec sleep 30", None))
            .await
            .expect("spawn");
        let pid = spawned.pid;
        // While `sh` execs `sleep`, its environment reads empty for an instant: wait it out.
        assert!(wait_for(|| exec_done(pid, "sleep")).await);
        let raw = Pid::from_raw(i32::try_from(pid).expect("pid"));

        assert_eq!(nix::unistd::getpgid(Some(raw)).expect("getpgid"), raw);
        assert!(find_marked(&tree, None).contains(&pid));
        assert!(find_marked(&tree, Some("web")).contains(&pid));
        assert!(!find_marked(&tree, Some("other")).contains(&pid));
        assert!(!find_marked(&unique_tree("other"), None).contains(&pid));
        let environ = fs::read(format!("/proc/{pid}/environ")).expect("environ");
        assert!(environ
            .split(|&b| b == 0)
            .any(|e| e == b"EXTRA_TEST_VAR=yes"));

        assert_eq!(kill_marked(&tree, Some("web")), 1);
        assert!(!wait_exit(&mut spawned).await.success());
        assert!(find_marked(&tree, None).is_empty());
    }

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

    #[tokio::test]
    async fn a_long_line_is_cut_without_losing_bytes() {
        let tree = unique_tree("long");
        let _reaper = Reaper(tree.clone());
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("long.log");
        let script = "head -c 204800 /dev/zero | tr '\\0' a; echo";
        let mut spawned = spawn(request(&tree, script, Some(log.clone())))
            .await
            .expect("spawn");
        assert!(wait_exit(&mut spawned).await.success());
        assert!(spawned.drained.wait(LIMIT).await);

        // Each piece, without its cut marks.
        let pieces: Vec<Vec<u8>> = log_lines(&log)
            .into_iter()
            .map(|(_, l)| {
                let l = l.strip_prefix(b"[cut] ").unwrap_or(&l);
                l.strip_suffix(b" [cut]").unwrap_or(l).to_vec()
            })
            .collect();
        assert_eq!(pieces.iter().map(Vec::len).sum::<usize>(), 204_800);
        assert_eq!(pieces.len(), 4);
        assert!(pieces
            .iter()
            .all(|l| l.len() <= DEFAULT_MAX_LINE && l.iter().all(|&b| b == b'a')));
    }

    #[tokio::test]
    async fn output_is_drained_without_a_log_or_with_an_unwritable_one() {
        let tree = unique_tree("drain");
        let _reaper = Reaper(tree.clone());
        // Far more than a pipe holds: the process only exits if its output is read.
        let script = "head -c 2000000 /dev/zero; head -c 2000000 /dev/zero >&2";
        for log in [None, Some(PathBuf::from("/dev/null/cannot/web.log"))] {
            let mut spawned = spawn(request(&tree, script, log)).await.expect("spawn");
            assert!(wait_exit(&mut spawned).await.success());
        }
    }

    #[tokio::test]
    async fn a_missing_program_is_named_in_the_error() {
        let mut req = request(&unique_tree("missing"), "", None);
        req.command = vec!["/nonexistent/imageserving-no-such-program".into()];
        let err = spawn(req).await.expect_err("must fail");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(
            err.to_string().contains("imageserving-no-such-program"),
            "{err}"
        );

        req = request(&unique_tree("empty"), "", None);
        req.command.clear();
        assert_eq!(
            spawn(req).await.expect_err("must fail").kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[tokio::test]
    async fn signal_group_accepts_a_dead_group_and_refuses_dangerous_ones() {
        let tree = unique_tree("dead");
        let _reaper = Reaper(tree.clone());
        let mut spawned = spawn(request(&tree, "exit 0", None)).await.expect("spawn");
        assert!(wait_exit(&mut spawned).await.success());
        signal_group(spawned.pid, libc::SIGTERM).expect("a dead group is fine");

        for pgid in [0, 1, u32::MAX] {
            assert!(signal_group(pgid, 0).is_err(), "{pgid}");
        }
        let own = u32::try_from(getpgrp().as_raw()).expect("pgid");
        assert!(signal_group(own, 0).is_err());
    }

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

    /// The hexadecimal mask of `field` (`SigBlk`, `SigIgn`…) in `/proc/PID/status`.
    fn signal_mask(pid: u32, field: &str) -> u64 {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .expect("field");
        u64::from_str_radix(line.trim(), 16).expect("hex")
    }

    #[tokio::test]
    async fn a_child_starts_clean_whatever_the_spawning_thread_blocks_or_ignores() {
        let tree = unique_tree("clean");
        let _reaper = Reaper(tree.clone());
        // A handler in this process (the daemon has several), which must not reach the child.
        let _usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
            .expect("handler");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut req = request(&tree, "exec sleep 30", None);
        req.cwd = Some(dir.path().to_owned());
        let mut spawned = spawn(req).await.expect("spawn");
        let pid = spawned.pid;
        assert!(wait_for(|| exec_done(pid, "sleep")).await);

        assert_eq!(signal_mask(pid, "SigBlk"), 0, "no signal blocked");
        let pipe_bit = 1 << (libc::SIGPIPE - 1);
        assert_eq!(
            signal_mask(pid, "SigIgn") & pipe_bit,
            0,
            "SIGPIPE back to default"
        );
        assert_eq!(
            fs::read_link(format!("/proc/{pid}/cwd")).expect("cwd"),
            dir.path().canonicalize().expect("canonical")
        );
        let stdin = fs::read_link(format!("/proc/{pid}/fd/0")).expect("stdin");
        assert_eq!(stdin, Path::new("/dev/null"));
        // Past the three standard ones, only descriptors this process itself lets cross an
        // exec (inherited from whoever started the tests) reach the child: none of ours.
        let leaked: Vec<RawFd> = fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("fds")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|&fd: &RawFd| fd > 2)
            // SAFETY: F_GETFD on a descriptor number only reads its flags.
            .filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } & libc::FD_CLOEXEC != 0)
            .collect();
        assert_eq!(leaked, Vec::<RawFd>::new());
        signal_group(pid, libc::SIGTERM).expect("term");
        let status = wait_exit(&mut spawned).await;
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGTERM),
            "SIGTERM's default action, not a handler"
        );
        // Reaped: the pid is no longer a child of ours.
        assert!(spawned.child.try_wait().expect("try_wait").is_some());
        assert!(!waited().contains(&pid));
    }

    #[tokio::test]
    async fn own_variables_override_shared_ones_and_the_markers_override_both() {
        let tree = unique_tree("env");
        let _reaper = Reaper(tree.clone());
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("web.log");
        let script = r#"echo "$SHARED_A $SHARED_B $IMAGESERVING_COMPONENT ${HOME:+home}""#;
        let mut req = request(&tree, script, Some(log.clone()));
        let shared: Arc<[(String, String)]> = Arc::from(vec![
            ("SHARED_A".to_owned(), "a".to_owned()),
            ("SHARED_B".to_owned(), "shared".to_owned()),
        ]);
        req.shared_env = Arc::clone(&shared);
        req.env.push(("SHARED_B".into(), "own".into()));
        req.env.push((COMPONENT_ENV.into(), "impostor".into()));
        let mut spawned = spawn(req).await.expect("spawn");
        assert!(wait_exit(&mut spawned).await.success());
        assert!(spawned.drained.wait(LIMIT).await);
        let lines: Vec<Vec<u8>> = log_lines(&log).into_iter().map(|(_, l)| l).collect();
        // The daemon's own environment (HOME) is inherited too.
        let expected = if std::env::var_os("HOME").is_some() {
            "a own web home"
        } else {
            "a own web "
        };
        assert_eq!(lines, vec![expected.as_bytes().to_vec()]);

        // The next spawn with the same shared block reuses it; a new block is taken as new.
        let mut req = request(&tree, "echo \"$SHARED_A\"", Some(log.clone()));
        req.shared_env = Arc::from(vec![("SHARED_A".to_owned(), "changed".to_owned())]);
        let mut spawned = spawn(req).await.expect("spawn");
        assert!(wait_exit(&mut spawned).await.success());
        assert!(spawned.drained.wait(LIMIT).await);
        let last = log_lines(&log).pop().map(|(_, l)| l);
        assert_eq!(last.as_deref(), Some(&b"changed"[..]));
    }

    #[tokio::test]
    async fn what_fails_before_the_exec_is_named_and_leaves_no_child() {
        let tree = unique_tree("fails");
        let dir = tempfile::tempdir().expect("tempdir");
        let not_executable = dir.path().join("data");
        fs::write(&not_executable, "just data").expect("write");
        // A child that failed before its exec still has the spawner thread's name.
        let failed_children = || {
            children_of(std::process::id())
                .into_iter()
                .filter(|&pid| exec_done(pid, "imageserving-sp"))
                .collect::<Vec<_>>()
        };

        let mut req = request(&tree, "true", None);
        req.cwd = Some(dir.path().join("missing"));
        let err = spawn(req).await.expect_err("a missing directory");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("changing directory"), "{err}");
        assert!(err.to_string().contains("missing"), "{err}");

        let mut req = request(&tree, "", None);
        req.command = vec![not_executable.display().to_string()];
        let err = spawn(req).await.expect_err("not executable");
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");

        let mut req = request(&tree, "", None);
        req.command = vec!["imageserving-no-such-program-on-path".into()];
        let err = spawn(req).await.expect_err("not on PATH");
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");

        let mut req = request(&tree, "", None);
        req.env.push(("BAD".into(), "a\0b".into()));
        let err = spawn(req).await.expect_err("a NUL byte");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");

        // Each failed child was reaped before `spawn` returned: no zombie is left behind.
        assert_eq!(failed_children(), Vec::<u32>::new());
    }

    #[tokio::test]
    async fn rotation_loses_no_line_of_a_process() {
        let tree = unique_tree("rotate");
        let _reaper = Reaper(tree.clone());
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = LogSpec {
            max_bytes: 10 * 1024,
            backups: 100,
            ..LogSpec::file(dir.path().join("web.log"))
        };
        let log = ComponentLog::new(&spec, "web");
        let mut spawned = spawn(request_with(&tree, "seq 1 20000", log))
            .await
            .expect("spawn");
        assert!(wait_exit(&mut spawned).await.success());
        assert!(spawned.drained.wait(LIMIT).await);

        let mut files: Vec<PathBuf> = (1..=100)
            .rev()
            .map(|n| dir.path().join(format!("web.log.{n}")))
            .filter(|p| p.exists())
            .collect();
        files.push(dir.path().join("web.log"));
        assert!(files.len() > 10, "{files:?}");
        let mut numbers = Vec::new();
        for file in &files {
            assert!(fs::metadata(file).expect("a log file").len() <= 10 * 1024);
            for (_, text) in log_lines(file) {
                numbers.push(String::from_utf8(text).expect("UTF-8"));
            }
        }
        let expected: Vec<String> = (1..=20_000).map(|n| n.to_string()).collect();
        assert_eq!(numbers, expected);
    }

    #[tokio::test]
    async fn standard_error_goes_to_its_own_file_with_the_markers() {
        let tree = unique_tree("stderr");
        let _reaper = Reaper(tree.clone());
        let dir = tempfile::tempdir().expect("tempdir");
        let (out, err) = (dir.path().join("web.log"), dir.path().join("web.err.log"));
        let spec = LogSpec {
            stderr: Some(err.clone()),
            ..LogSpec::file(out.clone())
        };
        let log = Arc::new(ComponentLog::new(&spec, "web"));
        log.marker("starting");
        let mut req = request(&tree, "echo hello; echo oops >&2", None);
        req.log = Arc::clone(&log);
        let mut spawned = spawn(req).await.expect("spawn");
        assert!(wait_exit(&mut spawned).await.success());
        assert!(spawned.drained.wait(LIMIT).await);
        log.marker("exited with status 0");

        let texts = |path: &Path| -> Vec<String> {
            log_lines(path)
                .into_iter()
                .map(|(_, t)| String::from_utf8(t).expect("UTF-8"))
                .collect()
        };
        let marker = |text: &str| format!("{MARKER_TAG} {text}");
        assert_eq!(
            texts(&out),
            [
                marker("starting"),
                "hello".into(),
                marker("exited with status 0")
            ]
        );
        assert_eq!(
            texts(&err),
            [
                marker("starting"),
                "oops".into(),
                marker("exited with status 0")
            ]
        );
    }

    #[tokio::test]
    async fn to_supervisor_writes_prefixed_lines_and_no_file() {
        let tree = unique_tree("container");
        let _reaper = Reaper(tree.clone());
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = LogSpec {
            to_supervisor: true,
            ..LogSpec::file(dir.path().join("web.log"))
        };
        let written = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&written);
        let log = ComponentLog::with_supervisor_writer(&spec, "web", move |bytes| {
            sink.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(bytes);
            Ok(())
        });
        let mut spawned = spawn(request_with(&tree, "echo hello; echo oops >&2", log))
            .await
            .expect("spawn");
        assert!(wait_exit(&mut spawned).await.success());
        assert!(spawned.drained.wait(LIMIT).await);

        let bytes = written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let text = String::from_utf8(bytes).expect("UTF-8");
        let mut lines: Vec<&str> = text
            .lines()
            .map(|l| {
                let rest = l.strip_prefix("web | ").expect("prefixed");
                rest.split_once(' ').expect("stamped").1
            })
            .collect();
        lines.sort_unstable();
        assert_eq!(lines, ["hello", "oops"]);
        assert!(!dir.path().join("web.log").exists());
    }

    #[test]
    fn stat_is_parsed_after_the_last_parenthesis() {
        let stat = parse_stat("42 (a (b) c) Z 1 40 41 0 -1").expect("parses");
        assert_eq!(
            stat,
            ProcStat {
                comm: "a (b) c".into(),
                state: 'Z',
                ppid: 1,
                pgrp: 40,
                session: 41
            }
        );
        assert!(!stat.is_alive());
        assert!(parse_stat("42 (x) S").is_none());
    }

    #[test]
    fn real_uid_comes_from_the_status_file() {
        let status = "Name:\tsh\nUid:\t1000\t0\t0\t0\nGid:\t1\t1\t1\t1\n";
        assert_eq!(parse_real_uid(status), Some(1000));
        assert_eq!(parse_real_uid("Name:\tsh\n"), None);
    }

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

//! The spawner thread: the one std thread, started on first use and never ending, that starts
//! every component process ([`spawn`]) and reaps the orphans this process adopted.
//!
//! A child's `PR_SET_PDEATHSIG(SIGKILL)` fires when the *thread* that started it exits, so
//! starting from this thread makes it fire exactly when the daemon dies (the invariants are in
//! [the parent module](super)); a panic while spawning is caught so the thread survives it.
//! Reaping on the same thread means a reap never runs between a fork and the registration of
//! its child in the [`registry`].

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock, PoisonError};

use nix::fcntl::OFlag;
use nix::unistd::pipe2;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tracing::{error, warn};

use crate::logs::ComponentLog;

use super::child::{self, Child};
use super::marker::{ATTEMPT_ENV, COMPONENT_ENV, TREE_ENV};
use super::pump::{self, Drained};
use super::registry::{self, waited};
use super::signal::signal_group;

/// Numbers the attempts of this process's life.
static ATTEMPTS: AtomicU64 = AtomicU64::new(1);

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
    /// Listening sockets passed with the systemd protocol: descriptors 3 onwards, in order,
    /// with `LISTEN_FDS`, `LISTEN_FDNAMES` (the names, `:`-separated) and `LISTEN_PID` (the
    /// child's own pid) set, so that any program written for socket activation takes them.
    /// The caller keeps them open across attempts; each child gets its own copies.
    pub sockets: Vec<PassedSocket>,
}

/// A listening socket handed to a component's processes (see [`SpawnRequest::sockets`]).
#[derive(Debug, Clone)]
pub struct PassedSocket {
    /// The name the child reads in `LISTEN_FDNAMES`: letters, digits, `.`, `_` and `-`.
    pub name: String,
    /// The socket, held by the caller for as long as the component may start.
    pub fd: Arc<OwnedFd>,
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

/// One spawn handed to the spawner thread.
pub(super) struct SpawnJob {
    req: SpawnRequest,
    /// The caller's runtime: the child is reaped, and its output pumped, there.
    runtime: Handle,
    /// Where the result goes; if the caller is gone, the new process is killed.
    reply: oneshot::Sender<io::Result<Spawned>>,
}

/// What the spawner thread does: spawn, or reap the adopted orphans that died. Both on the
/// one thread, so that a reap never runs between a fork and the registration of its child.
pub(super) enum Job {
    Spawn(SpawnJob),
    ReapAdopted,
}

/// The spawner thread's mailbox. The sender lives forever, so the thread never sees its channel
/// close and never exits.
static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
/// Serializes the start of the spawner thread, so that a failed start can be retried.
static SPAWNER_START: Mutex<()> = Mutex::new(());

/// The spawner thread's mailbox, starting the thread on first use.
pub(super) fn spawner() -> io::Result<&'static mpsc::Sender<Job>> {
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
                registry::reap_adopted();
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
    .and_then(|exec| exec.with_sockets(&req.sockets))
    .map_err(context)?;
    let (pid, pidfd) = child::spawn(&exec, stack).map_err(context)?;
    // Our ends of the child's output pipes close here: the pumps see the end of the output
    // once the child and its descendants close theirs.
    drop(exec);
    waited().insert(pid);
    let child = Child::new(pid, pidfd).inspect_err(|_| {
        // Nobody could wait for it: it must not run unsupervised, and the orphan reaper (run
        // on this thread, after this spawn) reaps it once it is dead.
        let _ = signal_group(pid, libc::SIGKILL);
        waited().remove(&pid);
    });
    let child = child.map_err(context)?;
    let drained = pump::start(runtime, out_reader, err_reader, &req.log, &req.component);
    Ok(Spawned {
        pid,
        child,
        attempt,
        drained,
    })
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::fd::RawFd;
    use std::path::Path;

    use nix::unistd::{getpgid, Pid};

    use super::*;
    use crate::process::procfs::children_of;
    use crate::process::testing::{
        exec_done, log_lines, request, unique_tree, wait_exit, wait_for, Reaper, LIMIT,
    };
    use crate::process::{find_marked, kill_marked};

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

        assert_eq!(getpgid(Some(raw)).expect("getpgid"), raw);
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

    /// Sockets go with the systemd protocol: descriptors 3 onwards (and no more), the count,
    /// the names, and the child's own pid, whatever the request's environment says.
    #[tokio::test]
    async fn sockets_are_passed_as_systemd_passes_them() {
        let tree = unique_tree("sockets");
        let _reaper = Reaper(tree.clone());
        let dir = tempfile::tempdir().expect("tempdir");
        let report = dir.path().join("report");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let script = format!(
            "open=''; for fd in 3 4 5; do [ -e /proc/$$/fd/$fd ] && open=\"$open $fd\"; done
             echo \"$LISTEN_PID $$ $LISTEN_FDS $LISTEN_FDNAMES$open\" > {report}
             exec python3 -c 'import socket
s = socket.socket(fileno=3)
c, _ = s.accept()
c.sendall(b\"served by the child\")
c.close()'",
            report = report.display()
        );
        let mut req = request(&tree, &script, None);
        req.env.push(("LISTEN_FDS".into(), "9".into()));
        req.sockets = vec![PassedSocket {
            name: "http".into(),
            fd: Arc::new(OwnedFd::from(listener)),
        }];
        let mut spawned = spawn(req).await.expect("spawn");
        let reported = || fs::read_to_string(&report).is_ok_and(|r| r.ends_with('\n'));
        assert!(wait_for(reported).await);
        let pid = spawned.pid;
        assert_eq!(
            fs::read_to_string(&report).expect("report").trim(),
            format!("{pid} {pid} 1 http 3")
        );
        let mut answer = String::new();
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(LIMIT)).expect("read timeout");
        std::io::Read::read_to_string(&mut stream, &mut answer).expect("read");
        assert_eq!(answer, "served by the child");
        assert!(wait_exit(&mut spawned).await.success());
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
}

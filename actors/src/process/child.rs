//! Starting a component process without copying the daemon, and waiting for it through a pidfd.
//!
//! `fork` copies the page tables of the whole daemon, and every page the daemon writes afterwards
//! takes a copy-on-write fault, once per fork: with a thousand components the cold start would be
//! quadratic, spent in the kernel. Like `posix_spawn`, [`spawn`] uses
//! `clone(CLONE_VM | CLONE_VFORK)`: the child borrows the daemon's memory until its `exec`, and
//! the calling thread sleeps until then. `posix_spawn` itself cannot be used, because the child
//! must arm `PR_SET_PDEATHSIG`, which only the child can do.
//!
//! The child runs on a stack of its own and may only make raw system calls: it shares the
//! daemon's memory, and another thread may hold the allocator's lock. So everything it needs
//! (paths, arguments, environment, descriptors) is prepared by [`Exec::new`] beforehand, and the
//! child reports a failure by writing the error number into memory the parent reads when it
//! resumes. Every signal is blocked across the `clone`; the child resets the handlers the daemon
//! installed (they would run on shared memory) before it unblocks them.

use std::cell::UnsafeCell;
use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::ptr;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::runtime::Handle;

use super::spawner::PassedSocket;

/// The child's stack: it is only touched between `clone` and `exec`.
const STACK_SIZE: usize = 256 * 1024;
/// The highest signal number on Linux (`_NSIG - 1`).
const LAST_SIGNAL: libc::c_int = 64;

/// The environment every component starts from: the daemon's own, overridden by the addresses
/// all components share. Built once per shared block (at a thousand components with ports,
/// that block holds a thousand variables), then reused by every spawn that has the same one.
pub(super) struct BaseEnv {
    shared: Arc<[(String, String)]>,
    /// `KEY=VALUE` entries, sorted by key, each with the length of its key.
    entries: Vec<(usize, CString)>,
}

impl BaseEnv {
    /// The daemon's environment (as it is now) overridden by `shared`.
    pub(super) fn new(shared: &Arc<[(String, String)]>) -> io::Result<BaseEnv> {
        let mut vars: BTreeMap<OsString, OsString> = std::env::vars_os().collect();
        for (key, value) in shared.iter() {
            vars.insert(key.into(), value.into());
        }
        let entries = vars
            .into_iter()
            .map(|(k, v)| {
                let key_len = k.len();
                let mut entry = k.into_vec();
                entry.push(b'=');
                entry.extend(v.into_vec());
                Ok((key_len, c_string(&entry)?))
            })
            .collect::<io::Result<_>>()?;
        Ok(BaseEnv {
            shared: Arc::clone(shared),
            entries,
        })
    }

    /// Whether this was built from `shared` (the same block, not an equal one).
    pub(super) fn is_for(&self, shared: &Arc<[(String, String)]>) -> bool {
        Arc::ptr_eq(&self.shared, shared)
    }

    fn key(entry: &(usize, CString)) -> &[u8] {
        &entry.1.as_bytes()[..entry.0]
    }

    fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let i = self
            .entries
            .binary_search_by(|e| Self::key(e).cmp(key))
            .ok()?;
        let (len, entry) = &self.entries[i];
        Some(&entry.as_bytes()[len + 1..])
    }
}

/// Everything the child needs, prepared before the `clone`.
pub(super) struct Exec<'a> {
    /// Where the program may be, in order (one entry when it names a path).
    candidates: Vec<CString>,
    /// Kept alive for `argv`.
    _args: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    /// The entries of `envp` that are not in the base: kept alive for it.
    _overrides: Vec<CString>,
    /// Points into the base and into the overrides.
    envp: Vec<*const libc::c_char>,
    /// The base `envp` points into.
    _base: &'a BaseEnv,
    cwd: Option<CString>,
    /// Descriptors for 0, 1 and 2, each above 2 (so that no `dup2` overwrites another).
    stdio: [OwnedFd; 3],
    /// Listening sockets for 3, 4…, each above the last of those (see [`Exec::with_sockets`]).
    sockets: Vec<OwnedFd>,
    /// `LISTEN_FDS` and `LISTEN_FDNAMES`: kept alive for `envp`.
    socket_env: Vec<CString>,
    /// `LISTEN_PID=` and room for the child's pid, which only the child knows: it writes it
    /// there (its own memory until the `exec`, the parent being suspended) before the `exec`.
    listen_pid: Option<Box<UnsafeCell<[u8; LISTEN_PID_LEN]>>>,
    /// The daemon's pid: the child exits if its parent is no longer the daemon.
    parent: libc::pid_t,
}

impl<'a> Exec<'a> {
    /// Prepares `program` with `args`, the environment `base` overridden by `env` (later
    /// entries win), in `cwd`, with `stdio` as its standard input, output and error. A program
    /// without a slash is looked for in the `PATH` the child will have.
    pub(super) fn new<'e>(
        program: &str,
        args: &[String],
        base: &'a BaseEnv,
        env: impl IntoIterator<Item = (&'e str, &'e str)>,
        cwd: Option<&Path>,
        stdio: [OwnedFd; 3],
    ) -> io::Result<Exec<'a>> {
        // Later entries win: keep the last of each key (a handful, so a scan is enough).
        let mut overrides: Vec<(&str, &str)> = Vec::new();
        for (key, value) in env {
            match overrides.iter_mut().find(|(k, _)| *k == key) {
                Some(entry) => entry.1 = value,
                None => overrides.push((key, value)),
            }
        }
        let path = overrides
            .iter()
            .find(|(k, _)| *k == "PATH")
            .map(|(_, v)| v.as_bytes())
            .or_else(|| base.get(b"PATH"));
        let candidates = if program.contains('/') {
            vec![c_string(program.as_bytes())?]
        } else {
            path.unwrap_or(b"/bin:/usr/bin")
                .split(|&b| b == b':')
                .map(|dir| {
                    let dir = if dir.is_empty() { &b"."[..] } else { dir };
                    let mut full = dir.to_vec();
                    full.push(b'/');
                    full.extend_from_slice(program.as_bytes());
                    c_string(&full)
                })
                .collect::<io::Result<_>>()?
        };
        let args: Vec<CString> = std::iter::once(program)
            .chain(args.iter().map(String::as_str))
            .map(|a| c_string(a.as_bytes()))
            .collect::<io::Result<_>>()?;
        let own: Vec<CString> = overrides
            .iter()
            .map(|(k, v)| c_string(format!("{k}={v}").as_bytes()))
            .collect::<io::Result<_>>()?;
        let mut envp: Vec<*const libc::c_char> =
            Vec::with_capacity(base.entries.len() + own.len() + 1);
        envp.extend(
            base.entries
                .iter()
                .filter(|e| {
                    let key = BaseEnv::key(e);
                    !overrides.iter().any(|(k, _)| k.as_bytes() == key)
                })
                .map(|(_, entry)| entry.as_ptr()),
        );
        envp.extend(own.iter().map(|e| e.as_ptr()));
        envp.push(ptr::null());
        let cwd = cwd
            .map(|c| c_string(c.as_os_str().as_bytes()))
            .transpose()?;
        let [a, b, c] = stdio.map(above_stdio);
        Ok(Exec {
            candidates,
            argv: null_terminated(&args),
            _args: args,
            _overrides: own,
            envp,
            _base: base,
            cwd,
            stdio: [a?, b?, c?],
            sockets: Vec::new(),
            socket_env: Vec::new(),
            listen_pid: None,
            parent: std::process::id() as libc::pid_t,
        })
    }

    /// Passes `sockets` with the systemd protocol: the child gets them as descriptors 3
    /// onwards, with `LISTEN_FDS`, `LISTEN_FDNAMES` and `LISTEN_PID` set (any such variables
    /// from elsewhere are dropped). Nothing changes without sockets.
    pub(super) fn with_sockets(mut self, sockets: &[PassedSocket]) -> io::Result<Exec<'a>> {
        if sockets.is_empty() {
            return Ok(self);
        }
        let first_free = SD_LISTEN_FDS_START + sockets.len() as RawFd;
        for socket in sockets {
            // Above every target, so that no `dup2` in the child overwrites a socket not yet
            // moved; close-on-exec, so that only the targets reach the program.
            // SAFETY: fcntl on a descriptor the `Arc<OwnedFd>` keeps open; the result is new.
            let copy =
                unsafe { libc::fcntl(socket.fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, first_free) };
            if copy < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: F_DUPFD_CLOEXEC returned a descriptor nothing else owns.
            self.sockets.push(unsafe { OwnedFd::from_raw_fd(copy) });
        }
        let names: Vec<&str> = sockets.iter().map(|s| s.name.as_str()).collect();
        self.socket_env = vec![
            c_string(format!("LISTEN_FDS={}", sockets.len()).as_bytes())?,
            c_string(format!("LISTEN_FDNAMES={}", names.join(":")).as_bytes())?,
        ];
        let mut pid = [0u8; LISTEN_PID_LEN];
        pid[..LISTEN_PID_PREFIX.len()].copy_from_slice(LISTEN_PID_PREFIX);
        let pid = Box::new(UnsafeCell::new(pid));
        // Drop the terminating null and any inherited variable of the protocol, then add ours.
        self.envp.pop();
        self.envp.retain(|&entry| {
            // SAFETY: every entry points to a NUL-terminated string `self` keeps alive.
            let entry = unsafe { std::ffi::CStr::from_ptr(entry) }.to_bytes();
            !SOCKET_VARIABLES.iter().any(|v| entry.starts_with(v))
        });
        self.envp.extend(self.socket_env.iter().map(|e| e.as_ptr()));
        self.envp
            .push(pid.get().cast::<libc::c_char>().cast_const());
        self.envp.push(ptr::null());
        self.listen_pid = Some(pid);
        Ok(self)
    }
}

/// The first descriptor of the systemd protocol's sockets (`SD_LISTEN_FDS_START`).
const SD_LISTEN_FDS_START: RawFd = 3;
/// The variables of the systemd protocol, as they start an environment entry.
const SOCKET_VARIABLES: [&[u8]; 3] = [b"LISTEN_FDS=", b"LISTEN_FDNAMES=", b"LISTEN_PID="];
const LISTEN_PID_PREFIX: &[u8] = b"LISTEN_PID=";
/// The prefix, up to 20 digits and the terminating NUL.
const LISTEN_PID_LEN: usize = 32;

/// Writes `pid` in decimal, NUL-terminated, after the prefix of `buf`: in the child, so no
/// allocation and no formatting machinery.
fn write_listen_pid(buf: &mut [u8; LISTEN_PID_LEN], pid: libc::pid_t) {
    let mut digits = [0u8; 20];
    let mut n = u64::try_from(pid).unwrap_or(0);
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let start = LISTEN_PID_PREFIX.len();
    for i in 0..len {
        buf[start + i] = digits[len - 1 - i];
    }
    buf[start + len] = 0;
}

fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a NUL byte in {:?}",
                String::from_utf8_lossy(bytes)
                    .chars()
                    .take(80)
                    .collect::<String>()
            ),
        )
    })
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(ptr::null()))
        .collect()
}

/// `fd` itself if it is above 2, else a close-on-exec duplicate that is (an embedding program
/// may have closed its standard descriptors, so a new pipe can be 0, 1 or 2).
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    fd.as_fd().try_clone_to_owned().and_then(|dup| {
        if dup.as_raw_fd() > 2 {
            Ok(dup)
        } else {
            above_stdio(dup)
        }
    })
}

/// A stack for the child, mapped once per spawning thread, with a guard page below it.
pub(super) struct Stack {
    base: *mut libc::c_void,
    len: usize,
}

impl Stack {
    pub(super) fn new() -> io::Result<Stack> {
        let page = 4096;
        let len = STACK_SIZE + page;
        // SAFETY: an anonymous private mapping with no address hint; checked below.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the first page of the mapping just made. A failure leaves no guard page,
        // which only loses the overflow check.
        unsafe { libc::mprotect(base, page, libc::PROT_NONE) };
        Ok(Stack { base, len })
    }

    fn top(&self) -> *mut libc::c_void {
        // The mapping is page-aligned and so is its length, so the end is 16-byte aligned.
        self.base.cast::<u8>().wrapping_add(self.len).cast()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer used by any child (each `spawn` returns
        // only after its child has exec'd or exited).
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// Which step failed in the child, to name it in the error.
#[derive(Clone, Copy)]
#[repr(i32)]
enum Step {
    DeathSignal = 1,
    Group = 2,
    Redirect = 3,
    Chdir = 4,
    Exec = 5,
    Sockets = 6,
}

/// What the child shares with its parent.
struct Shared<'a> {
    exec: &'a Exec<'a>,
    /// `step << 16 | errno` of a failure, 0 if the child reached its program.
    failure: AtomicI32,
}

/// Starts `exec` as a child in a new process group, with `PR_SET_PDEATHSIG(SIGKILL)` armed (it
/// fires when the calling thread ends). Returns its pid and a pidfd for it, once the program
/// runs; an error if any step before failed (the child is reaped then).
pub(super) fn spawn(exec: &Exec<'_>, stack: &Stack) -> io::Result<(u32, OwnedFd)> {
    let shared = Shared {
        exec,
        failure: AtomicI32::new(0),
    };
    let mut pidfd: libc::c_int = -1;
    // SAFETY: sigset_t is plain data; the sets are initialized by sigfillset before use.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut before: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: blocking every signal on this thread for the duration of the clone, then the
    // clone itself: `child` only makes system calls, on its own stack, on data that `shared`
    // and `exec` keep alive until it has exec'd or exited (CLONE_VFORK makes this thread wait
    // for that). CLONE_PIDFD writes a close-on-exec pidfd into `pidfd`.
    let pid = unsafe {
        libc::sigfillset(&raw mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &raw const all, &raw mut before);
        let pid = libc::clone(
            child,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
            (&raw const shared).cast_mut().cast(),
            &raw mut pidfd,
        );
        let err = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &raw const before, ptr::null_mut());
        if pid < 0 {
            return Err(err);
        }
        pid
    };
    // SAFETY: CLONE_PIDFD stored a new descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let failure = shared.failure.load(Ordering::Acquire);
    if failure != 0 {
        // The child has exited (or is exiting): reap it so it leaves no zombie.
        // SAFETY: waitpid on our own child with a null status pointer.
        while unsafe { libc::waitpid(pid, ptr::null_mut(), 0) } < 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
        {}
        let err = io::Error::from_raw_os_error(failure & 0xffff);
        let step = match failure >> 16 {
            x if x == Step::DeathSignal as i32 => "arming the parent-death signal",
            x if x == Step::Group as i32 => "creating its process group",
            x if x == Step::Redirect as i32 => "redirecting its output",
            x if x == Step::Chdir as i32 => "changing directory",
            x if x == Step::Sockets as i32 => "passing its listening sockets",
            _ => return Err(err),
        };
        return Err(io::Error::new(err.kind(), format!("{step}: {err}")));
    }
    Ok((pid as u32, pidfd))
}

/// The child, between `clone` and `exec`: raw system calls only, no allocation, no panic.
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Shared` the parent keeps alive until this process execs or exits.
    let shared = unsafe { &*arg.cast_const().cast::<Shared<'_>>() };
    let exec = shared.exec;
    let fail = |step: Step| -> ! {
        let errno = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        shared
            .failure
            .store(((step as i32) << 16) | (errno & 0xffff), Ordering::Release);
        // SAFETY: leaving the child without running anything of the parent's.
        unsafe { libc::_exit(127) }
    };
    // SAFETY: each call below is a system call on integers, on this process's own copies of
    // signal dispositions and descriptors, or on the NUL-terminated strings and arrays `exec`
    // holds.
    unsafe {
        // The daemon's handlers would run here, on its memory: back to the defaults. SIGPIPE,
        // which Rust programs ignore, is reset like `std::process::Command` does.
        for signal in 1..=LAST_SIGNAL {
            let mut action: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, ptr::null(), &raw mut action) != 0 {
                continue;
            }
            let handled =
                action.sa_sigaction != libc::SIG_IGN && action.sa_sigaction != libc::SIG_DFL;
            let ignored_pipe = signal == libc::SIGPIPE && action.sa_sigaction == libc::SIG_IGN;
            if handled || ignored_pipe {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(signal, &raw const default, ptr::null_mut());
            }
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
            fail(Step::DeathSignal);
        }
        // The daemon died before the signal was armed: nobody would ever stop us.
        if libc::getppid() != exec.parent {
            libc::_exit(1);
        }
        if libc::setpgid(0, 0) != 0 {
            fail(Step::Group);
        }
        for (target, fd) in exec.stdio.iter().enumerate() {
            if libc::dup2(fd.as_raw_fd(), target as RawFd) < 0 {
                fail(Step::Redirect);
            }
        }
        // After the standard descriptors: a socket's target may be one of their sources.
        for (i, fd) in exec.sockets.iter().enumerate() {
            if libc::dup2(fd.as_raw_fd(), SD_LISTEN_FDS_START + i as RawFd) < 0 {
                fail(Step::Sockets);
            }
        }
        if let Some(pid) = &exec.listen_pid {
            write_listen_pid(&mut *pid.get(), libc::getpid());
        }
        if let Some(cwd) = &exec.cwd {
            if libc::chdir(cwd.as_ptr()) != 0 {
                fail(Step::Chdir);
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut empty);
        libc::pthread_sigmask(libc::SIG_SETMASK, &raw const empty, ptr::null_mut());
        // Like execvp: go on past the places where the program is not, and report a
        // permission problem over "not found".
        let mut denied = false;
        for candidate in &exec.candidates {
            libc::execve(candidate.as_ptr(), exec.argv.as_ptr(), exec.envp.as_ptr());
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EACCES) => denied = true,
                Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::ENAMETOOLONG) => {}
                _ => fail(Step::Exec),
            }
        }
        if denied {
            shared.failure.store(
                ((Step::Exec as i32) << 16) | libc::EACCES,
                Ordering::Release,
            );
            libc::_exit(127);
        }
        fail(Step::Exec)
    }
}

/// A started process, reaped through [`Child::wait`] or, if the handle is dropped first, by a
/// task on the runtime it was started in.
#[derive(Debug)]
pub struct Child {
    pid: u32,
    /// Readable once the process has ended; `None` once it is reaped.
    pidfd: Option<AsyncFd<OwnedFd>>,
    status: Option<ExitStatus>,
}

impl Child {
    /// Registers the process `pid` with the current runtime through `pidfd`.
    pub(super) fn new(pid: u32, pidfd: OwnedFd) -> io::Result<Child> {
        // SAFETY: the `OwnedFd` keeps its descriptor open, and unchanged, for as long as the
        // `AsyncFd` owns it.
        let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }?;
        Ok(Child {
            pid,
            pidfd: Some(pidfd),
            status: None,
        })
    }

    /// The process id (also its process group id).
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Waits for the process to end and reaps it.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            let Some(pidfd) = &self.pidfd else {
                return Err(io::Error::other("the process was already reaped"));
            };
            let mut ready = pidfd.readable().await?;
            if let Some(status) = reap(self.pid)? {
                drop(ready);
                self.status = Some(status);
                self.pidfd = None;
                return Ok(status);
            }
            ready.clear_ready();
        }
    }

    /// Reaps the process if it has ended.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let status = reap(self.pid)?;
        if status.is_some() {
            self.status = status;
            self.pidfd = None;
        }
        Ok(status)
    }
}

/// `waitpid(pid, WNOHANG)`: the status if `pid` had ended and is now reaped. `pid` leaves the
/// registry of waited children under the lock held across the reap, so a new child given the
/// same number (only possible once this one is reaped) is registered after, never forgotten by
/// mistake.
fn reap(pid: u32) -> io::Result<Option<ExitStatus>> {
    let mut waited = super::registry::waited();
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: waitpid on a specific pid with a valid status pointer.
        match unsafe { libc::waitpid(pid as libc::pid_t, &raw mut status, libc::WNOHANG) } {
            0 => return Ok(None),
            n if n > 0 => {
                waited.remove(&pid);
                return Ok(Some(ExitStatus::from_raw(status)));
            }
            _ => {
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EINTR) => {}
                    Some(libc::ECHILD) => {
                        // Reaped by someone else (a `waitpid(-1)` of an embedding program).
                        waited.remove(&pid);
                        return Err(io::Error::new(
                            err.kind(),
                            format!("process {pid} was reaped by someone else: {err}"),
                        ));
                    }
                    _ => return Err(err),
                }
            }
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !matches!(self.try_wait(), Ok(None)) {
            return;
        }
        // Still running: reap it when it ends, so it never stays a zombie. Without a runtime,
        // the orphan reaper (if any) takes it.
        let (Some(pidfd), Ok(runtime)) = (self.pidfd.take(), Handle::try_current()) else {
            super::registry::waited().remove(&self.pid);
            return;
        };
        let pid = self.pid;
        runtime.spawn(async move {
            while let Ok(mut ready) = pidfd.readable().await {
                if !matches!(reap(pid), Ok(None)) {
                    break;
                }
                ready.clear_ready();
            }
        });
    }
}

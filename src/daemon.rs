//! The Server Supervisor daemon: one per home, holding the home's lock, running the
//! supervision tree and serving the control socket.
//!
//! Start-up order matters: the lock first (so nothing of a live supervisor is ever touched),
//! then the cleanup of what a killed supervisor left (socket, pid file, marked processes),
//! then the pid file, the request for the samples of a fresh home (`run/samples.due`, which
//! the Image Server takes), the tree and the socket. Shut-down is the reverse; the lock is
//! released last, when the process exits.
//!
//! Detached (started by `start`), the daemon logs to `logs/supervisor.log`, rotated (see
//! [`log`]); in the foreground, to standard error.

mod activation;
pub mod args;
mod bridge;
pub mod log;

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use imageserving_actors::{process, SupervisorHandle};
use nix::fcntl::{Flock, FlockArg};
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use crate::config::{self, Config};
use crate::exit::{self, Exit};
use crate::home::Home;
use crate::notice::{Notice, NOTICE_INTERVAL};
use crate::protocol::Response;

/// The blocking pool's size (tokio's default is 512).
const BLOCKING_THREADS: usize = 8;

/// Runs the daemon until it is told to stop. `detached`: started by `start`, which asks for
/// the components itself; in the foreground every component starts at once.
///
/// Detached, tracing already writes `logs/supervisor.log` (set up by `init_tracing`), while
/// standard error is `logs/supervisor.stderr`: a panic and the error the daemon ends with are
/// logged there too, so that `supervisor.log` tells the whole story.
///
/// `self_exe` is the program `@self` names in the configuration.
pub fn run(home: &Home, detached: bool, self_exe: &Path) -> anyhow::Result<u8> {
    if !detached {
        return run_daemon(home, detached, self_exe);
    }
    log::install_panic_hook();
    let result = run_daemon(home, detached, self_exe);
    if let Err(e) = &result {
        if exit::code_of(e) == exit::LOCKED {
            // Another `start` won the race: its daemon runs; this one was never needed.
            info!("{e:#}; exiting");
        } else {
            error!("the Server Supervisor failed: {e:#}");
        }
    }
    result
}

/// The daemon's own program, `imageserving-supervisor`, when it is installed beside this one.
/// Without it (`cargo run` builds only the binary it runs), this program runs the daemon
/// itself, the same code with more of it mapped.
pub fn program() -> Option<PathBuf> {
    crate::installed_beside(&std::env::current_exe().ok()?, "imageserving-supervisor")
}

/// What `@self` stands for in the configuration when `exe` is the `imageserving` program. Read
/// at each load, so that a reload sees a server program installed since.
fn self_program(exe: &Path) -> config::SelfProgram {
    crate::servers::args::self_program(exe.to_path_buf())
}

/// The command that runs the daemon on `home`: `imageserving-supervisor` if installed, else
/// this program's `supervisor` command. `@self` stays this program either way.
pub fn command(home: &Home, detached: bool, verbose: u8, quiet: bool) -> anyhow::Result<Command> {
    let exe = std::env::current_exe().context("finding this program's path")?;
    let cmd = match program() {
        Some(program) => {
            let args = args::SupervisorArgs {
                global: crate::cli::GlobalArgs {
                    home: Some(home.root().to_path_buf()),
                    verbose,
                    quiet,
                },
                detached,
                exe,
            };
            let mut cmd = Command::new(program);
            cmd.args(args.to_args());
            cmd
        }
        None => {
            let mut cmd = Command::new(exe);
            cmd.arg("--home").arg(home.root()).arg("supervisor");
            if detached {
                cmd.arg("--detached");
            }
            if quiet {
                cmd.arg("-q");
            }
            for _ in 0..verbose {
                cmd.arg("-v");
            }
            cmd
        }
    };
    Ok(cmd)
}

fn run_daemon(home: &Home, detached: bool, exe: &Path) -> anyhow::Result<u8> {
    // First: the sockets systemd may have passed (descriptors 3…), before anything else could
    // take those numbers.
    let handed = activation::take(|name| std::env::var(name).ok());
    home.ensure_layout()?;
    home.check_socket_path()?;
    let config = config::load(home, &self_program(exe))
        .map_err(|e| Exit::new(exit::BAD_CONFIG, e.to_string()))?;
    let _lock = lock(home, detached)?;
    raise_open_file_limit();
    sweep_leftovers(home);
    write_pid_file(home)?;
    request_samples(home);
    // One thread runs every actor and the control socket: their handlers only compute and
    // send messages; what blocks (/proc scans, log writes, kills and waits) goes to the
    // blocking pool, and spawning to the spawner thread. Supervising needs no parallelism,
    // and one thread maps less (no work-stealing scheduler, no per-worker state).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // /proc scans and log writes wait their turn rather than each take a thread: with a
        // thousand components starting, an unbounded pool would hold hundreds of threads.
        .max_blocking_threads(BLOCKING_THREADS)
        .thread_name("supervisor")
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(serve(home, config, detached, exe, handed));
    // The sockets and tasks go with the runtime; the files are ours to remove.
    runtime.shutdown_timeout(Duration::from_secs(1));
    let _ = fs::remove_file(home.socket_path());
    let _ = fs::remove_file(home.pid_file());
    result
}

/// Takes the home's exclusive lock. The lock file is never removed: removing it would let a
/// second daemon lock a new inode while the first still holds the old one.
fn lock(home: &Home, detached: bool) -> anyhow::Result<Flock<File>> {
    let path = home.lock_file();
    // std opens files close-on-exec, so no component inherits the lock.
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening the lock file {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(Exit::new(
            if detached { exit::LOCKED } else { exit::FAILED },
            format!(
                "another Server Supervisor is already running for {}",
                home.root().display()
            ),
        )
        .into()),
        Err((_, e)) => Err(anyhow::anyhow!("locking {}: {e}", path.display())),
    }
}

/// Whether a supervisor holds the lock of `home` right now (used by `stop` to wait for the
/// daemon's exit).
pub fn is_locked(home: &Home) -> bool {
    let Ok(file) = File::open(home.lock_file()) else {
        return false;
    };
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(lock) => {
            drop(lock);
            false
        }
        Err((_, e)) => e == nix::errno::Errno::EWOULDBLOCK,
    }
}

/// Removes the socket and pid file of a supervisor that died without cleaning up, and kills
/// every process it left (components whose own children escaped their group).
fn sweep_leftovers(home: &Home) {
    for path in [home.socket_path(), home.pid_file()] {
        match fs::remove_file(&path) {
            Ok(()) => {
                info!(path = %path.display(), "removed a stale file of an earlier supervisor");
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => warn!(path = %path.display(), error = %e, "could not remove a stale file"),
        }
    }
    // The processes an earlier daemon left are swept by the tree itself, before it starts
    // anything (`ServerSupervisor::pre_start`).
}

/// Many control clients at once, and a log file and pipes per component, need descriptors:
/// raise the soft limit to the hard one (what a service manager would grant anyway).
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            let wanted = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
                warn!("could not raise the open-file limit");
            }
        }
    }
}

/// Asks the Image Server to create the samples of a fresh home where they are missing, once per
/// start of the supervisor (see `imaging::samples`): the daemon maps no image code itself.
fn request_samples(home: &Home) {
    let path = home.samples_due();
    if let Err(e) = File::create(&path) {
        warn!(path = %path.display(), error = %e, "could not ask for the sample catalog and images");
    }
}

fn write_pid_file(home: &Home) -> anyhow::Result<()> {
    let path = home.pid_file();
    let mut f = File::create(&path).with_context(|| format!("writing {}", path.display()))?;
    writeln!(f, "{}", std::process::id())?;
    Ok(())
}

async fn serve(
    home: &Home,
    config: Config,
    detached: bool,
    exe: &Path,
    handed: Vec<(String, std::os::fd::OwnedFd)>,
) -> anyhow::Result<u8> {
    let started_at = SystemTime::now();
    // Descendants that leave their component's process group stay below us, so a component's
    // leftovers are found without reading all of /proc (see `process::adopt_orphans`).
    if let Err(e) = process::adopt_orphans() {
        warn!(error = %e, "cannot become a child subreaper; leftovers are found by scanning /proc");
    }
    let listeners = activation::assign(&config.tree, handed);
    let (handle, mut tree_done) =
        SupervisorHandle::spawn_with_listeners(config.tree.clone(), listeners)
            .await
            .context("spawning the supervision tree")?;
    let listener = bind(home)?;
    info!(pid = std::process::id(), home = %home.root().display(), config = %config.origin(), "Server Supervisor started");

    let (shutdown_tx, mut shutdown_rx) = tokio::sync::watch::channel(false);
    let bridge = Arc::new(bridge::Bridge::new(
        handle.clone(),
        config,
        home,
        exe.to_path_buf(),
        started_at,
        shutdown_tx,
    ));
    if !detached {
        let bridge = bridge.clone();
        tokio::spawn(async move { bridge.start_all_and_log().await });
    }
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut tree_died = false;
    let mut accept_notice = Notice::new(NOTICE_INTERVAL);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => bridge.clone().accept(stream),
                Err(e) => {
                    // EMFILE and friends: keep serving, but do not spin, nor flood the log.
                    if let Some(times) = accept_notice.occurred(std::time::Instant::now()) {
                        warn!(error = %e, times, "accept failed on the control socket");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = sigterm.recv() => { info!("SIGTERM received"); break; }
            _ = sigint.recv() => { info!("SIGINT received"); break; }
            _ = sighup.recv() => {
                info!("SIGHUP received: reloading the configuration");
                let bridge = bridge.clone();
                tokio::spawn(async move {
                    if let Response::Error { message, .. } = bridge.reload(None).await {
                        warn!(%message, "SIGHUP reload failed");
                    }
                });
            }
            _ = shutdown_rx.changed() => break,
            _ = &mut tree_done => { tree_died = true; break; }
        }
    }
    drop(listener);
    if let Some(reason) = tree_died.then(|| handle.escalation()).flatten() {
        // What systemd or a container runtime needs to restart the whole unit: a non-zero
        // exit, with the reason in the log and on standard error.
        error!(%reason, "escalation: every component stopped; the Server Supervisor exits 1");
        eprintln!("imageserving: Server Supervisor escalation: {reason}");
        return Ok(exit::FAILED);
    }
    if bridge.shutting_down() {
        // A `stop` asked for it: let its answer be written before the process exits.
        let _ =
            tokio::time::timeout(Duration::from_secs(5), shutdown_rx.wait_for(|done| *done)).await;
    } else if tree_died {
        error!("the supervision tree stopped unexpectedly; every component was killed");
        return Ok(exit::FAILED);
    } else if let Err(e) = handle.shutdown().await {
        error!(error = %e, "orderly shutdown failed");
    }
    if !tree_died {
        let _ = tokio::time::timeout(Duration::from_secs(5), tree_done).await;
    }
    info!("Server Supervisor stopped");
    Ok(exit::OK)
}

/// Binds the control socket: in the 0700 run directory, mode 0600.
fn bind(home: &Home) -> anyhow::Result<UnixListener> {
    let path = home.socket_path();
    let listener = std::os::unix::net::UnixListener::bind(&path)
        .with_context(|| format!("binding the control socket {}", path.display()))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))?;
    listener.set_nonblocking(true)?;
    Ok(UnixListener::from_std(listener)?)
}

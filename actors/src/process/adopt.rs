//! Adopting orphans: this process becomes a child subreaper, so that what a component leaves
//! behind stays below us, and the orphans it adopts are reaped when they die.

use std::io;

use super::registry;
use super::spawner::{spawner, Job};

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
    registry::set_adopting();
    tokio::spawn(async move {
        while sigchld.recv().await.is_some() {
            if jobs.send(Job::ReapAdopted).is_err() {
                break;
            }
        }
    });
    Ok(())
}

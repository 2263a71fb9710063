//! Who reaps which child of this process: the state shared by the spawner thread, the [`Child`]
//! handles, the orphan reaper and the scans that walk our own subtree.
//!
//! A component process is registered as *waited* by the spawner thread right after its `clone`,
//! and forgotten when its [`Child`] handle reaps it. Once this process adopts orphans (see
//! [`adopt_orphans`]), every other child that dies is an adopted orphan, reaped by
//! [`reap_adopted`]. That runs on the spawner thread too, so it never runs between a fork and
//! the registration of its child.
//!
//! [`Child`]: super::Child
//! [`adopt_orphans`]: super::adopt_orphans

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::procfs::{children_of, read_stat};

/// Whether this process is a child subreaper (see [`adopt_orphans`](super::adopt_orphans)).
static ADOPTING: AtomicBool = AtomicBool::new(false);

/// The children a [`Spawned::child`](super::Spawned::child) handle waits for: registered by the
/// spawner thread right after the `clone`, forgotten when [`Child`](super::Child) reaps them. The
/// orphan reaper leaves them to their handles.
static WAITED: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// Whether [`adopt_orphans`](super::adopt_orphans) made this process a child subreaper.
pub fn adopts_orphans() -> bool {
    ADOPTING.load(Ordering::Relaxed)
}

/// Records that this process is now a child subreaper.
pub(super) fn set_adopting() {
    ADOPTING.store(true, Ordering::Relaxed);
}

/// The children a handle waits for, locked.
pub(super) fn waited() -> MutexGuard<'static, BTreeSet<u32>> {
    WAITED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reaps every zombie child that no handle waits for: adopted orphans. Runs on the spawner
/// thread, so no child is between its fork and its registration.
pub(super) fn reap_adopted() {
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

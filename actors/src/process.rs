//! The OS side of a component: spawning its process, signalling its group, finding and killing
//! leftovers by marker, sampling memory, and pumping its output into a timestamped log.
//!
//! The supervisor's one promise is that no process it started outlives it or its component.
//! These invariants keep that promise:
//!
//! * **One spawner thread.** Every component process is started by a single dedicated std
//!   thread that starts on first use and never exits, with a `vfork`-style `clone` that does not
//!   copy the daemon (the `child` module says why and how). The child arms
//!   `PR_SET_PDEATHSIG(SIGKILL)` before `exec`, and Linux fires that signal when the *thread*
//!   that started it exits, not the process. Starting from a tokio worker (which retires when
//!   idle) would kill components at random; from the spawner thread, the signal fires exactly
//!   when the daemon dies. The child also checks that its parent is still the daemon after
//!   arming it, closing the window of a daemon dying mid-spawn. A panic while spawning is caught
//!   so the thread survives it.
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
//! written; they hand it line by line to the component's
//! [`ComponentLog`](crate::logs::ComponentLog).
//!
//! # Modules
//!
//! Each one imports only modules listed before it, so they form no import circle:
//!
//! - `procfs`: reading `/proc` (state, parent, group, owner; our own subtree; every process).
//! - `registry`: the state shared by spawning, waiting and adoption: which children a [`Child`]
//!   handle waits for, whether this process adopts orphans ([`adopts_orphans`]), and the reaping
//!   of the adopted ones.
//! - `signal`: [`signal_group`], and SIGKILL through a pidfd after a last check.
//! - `marker`: the marker variables ([`TREE_ENV`], [`COMPONENT_ENV`], [`ATTEMPT_ENV`]) and
//!   [`find_marked`].
//! - `pump`: the output pumps ([`Drained`]).
//! - `child`: starting one process with a `vfork`-style `clone`, and waiting for it ([`Child`]).
//! - `spawner`: the spawner thread, [`spawn`] ([`SpawnRequest`], [`Spawned`], the listening
//!   sockets it passes: [`PassedSocket`]).
//! - `socket`: the listening sockets the supervisor holds ([`bind_listener`]), and
//!   [`check_port_free`].
//! - `adopt`: [`adopt_orphans`], which makes this process a child subreaper.
//! - `leftovers`: [`kill_leftovers`], [`kill_attempt`], [`kill_marked`], [`sweep_marked`].
//! - `memory`: [`component_memory`], [`MemorySampler`] and [`resident_memory`].

mod adopt;
mod child;
mod leftovers;
mod marker;
mod memory;
mod notify;
mod procfs;
mod pump;
mod registry;
mod signal;
mod socket;
mod spawner;
#[cfg(test)]
mod testing;

pub use adopt::adopt_orphans;
pub use child::Child;
pub use leftovers::{kill_attempt, kill_leftovers, kill_marked, sweep_marked};
pub use marker::{component_of, find_marked, ATTEMPT_ENV, COMPONENT_ENV, TREE_ENV};
pub use memory::{component_memory, resident_memory, MemorySampler};
pub use notify::{Notification, NotifySocket, NOTIFY_SOCKET_ENV};
pub use pump::Drained;
pub use registry::adopts_orphans;
pub use signal::signal_group;
pub use socket::{bind_listener, check_port_free, listening_address, set_backlog};
pub use spawner::{spawn, PassedSocket, SpawnRequest, Spawned};

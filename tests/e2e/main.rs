//! End-to-end tests: the real `imageserving` binary driven on temporary homes.
//!
//! One test binary (`cargo test --test e2e`) with a small harness:
//! - [`harness`]: the temporary home, running the binary with a deadline, the guard that
//!   leaves no process behind;
//! - [`procs`]: the bits of `/proc` the checks need, independent of the code under test;
//! - [`lifecycle`]: start, status, stop, restart, the foreground supervisor;
//! - [`failures`]: crashing, hung, forking components and a killed supervisor;
//! - [`handover`]: `restart` as a handover: both processes, draining, failure, a killed supervisor;
//! - [`cli`]: commands without a supervisor, bad configurations, impossible homes;
//! - [`everyday`]: `logs` (and `-f` across rotations), `check-config`, `completions`, `man`;
//! - [`ipc`]: the control socket spoken to directly, and who may use it;
//! - [`policy`]: restart types, strategies, escalation, memory limits, probes, log rotation;
//! - [`images`]: the image stack through the supervisor; [`http`]: a tiny HTTP client;
//! - [`guard`]: the harness keeps its own promise: a failing test leaves no process behind;
//! - [`ops`]: the operations recipes (systemd, init script, PID 1); [`scaling`]: the probes
//!   an orchestrator uses.
//!
//! Every test runs on its own home with ephemeral ports, so they run in parallel.

mod cli;
mod everyday;
mod failures;
mod guard;
mod handover;
mod harness;
mod http;
mod images;
mod ipc;
mod lifecycle;
mod ops;
mod policy;
mod procs;
mod reload;
mod scaling;

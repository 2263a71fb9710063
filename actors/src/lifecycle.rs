//! The lifecycle of one supervised process, as a pure state machine.
//!
//! [`Lifecycle::step`] is the one transition function: it takes an [`Event`] and the current
//! time and returns the [`Action`]s the component actor must carry out (spawn, signal, arm a
//! timer). It does no I/O and reads no clock, so unit tests drive it with a fake clock and a
//! fixed random source.
//!
//! ```text
//!            Start                 up start_secs + probe ok
//!  STOPPED ─────────▶ STARTING ───────────────────────────▶ RUNNING
//!     ▲                 │  ▲  exit (failure)                    │ exit (failure)
//!     │ Stop            │  └────────────┐                       │
//!     │                 ▼               │ 1st failure: at once  ▼
//!  STOPPING ◀── Stop ── any live state  ├────────────────── failure rule
//!                                       │ n-th: after backoff    │ budget exceeded
//!                                    BACKOFF                   FATAL
//! ```
//!
//! Every spawn attempt gets a new *generation*; events carry the generation they belong to and
//! events of an earlier generation are ignored (a timer that fired late, the exit of a process
//! that was already replaced).
//!
//! ## Handover
//!
//! A component that can hand over ([`Lifecycle::set_handover`]: its socket is held by the
//! supervisor and its processes say when they are ready) restarts without a gap. `Restart` of a
//! RUNNING component keeps its process as an [`Outgoing`] one, still serving, and starts a new
//! generation beside it (STARTING). Once the new one is RUNNING, every outgoing process that
//! still serves gets its stop signal and `handover_grace` to finish its requests (SIGKILL after
//! that). If the new one fails to start instead, nothing was lost: the outgoing process becomes
//! the live one again (RUNNING, `last_exit` says why the handover failed), and no failure is
//! counted. A `Stop` stops the outgoing processes too, and STOPPED waits until they are gone.
//!
//! ```text
//!  RUNNING(old) ──Restart──▶ STARTING(new) + old serving ──new ready──▶ RUNNING(new) + old draining
//!                                 │ new fails to start                        │ old exits (or SIGKILL
//!                                 ▼                                           ▼  after handover_grace)
//!                           RUNNING(old), "handover failed: …"          RUNNING(new)
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::spec::{RestartPolicy, RestartType};

/// The states of a component, with the names supervisord's users know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Not running, and not asked to run (or waiting for a dependency).
    Stopped,
    /// Spawned; not yet up for `start_secs` with its readiness probe passed.
    Starting,
    /// Up and ready.
    Running,
    /// Failed; waiting for the backoff delay before the next attempt.
    Backoff,
    /// Asked to stop: the stop signal was sent, SIGKILL follows after `stop_timeout`.
    Stopping,
    /// Exited and left down by its restart type (`transient` after a normal exit, `temporary`
    /// after any).
    Exited,
    /// Gave up: too many failures within the budget window.
    Fatal,
}

impl State {
    /// The upper-case name shown in `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Stopped => "STOPPED",
            State::Starting => "STARTING",
            State::Running => "RUNNING",
            State::Backoff => "BACKOFF",
            State::Stopping => "STOPPING",
            State::Exited => "EXITED",
            State::Fatal => "FATAL",
        }
    }

    /// Whether a process of the component may exist in this state.
    pub fn is_live(self) -> bool {
        matches!(self, State::Starting | State::Running | State::Stopping)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// It exited with this status code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl ExitReason {
    /// Converts a standard exit status.
    pub fn from_status(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => ExitReason::Code(code),
            (None, Some(sig)) => ExitReason::Signal(sig),
            (None, None) => ExitReason::Code(-1),
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Code(c) => write!(f, "exited with status {c}"),
            ExitReason::Signal(s) => write!(f, "killed by signal {s} ({})", signal_name(*s)),
        }
    }
}

/// The variable that tells each new process of a component how the previous one ended (unset
/// for the first): `<class>: <how>`, from [`previous_exit`]. A server whose clients hold
/// requests across its crashes says the class in its health check, so that they tell a crash
/// caused by a request from a kill from outside (`src/servers/hold.rs`).
pub const PREVIOUS_EXIT_ENV: &str = "IMAGESERVING_PREVIOUS_EXIT";

/// Why the supervisor stopped a process, when it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopCause {
    /// `stop`, `restart`, a group restart, a reload: nothing wrong with the process.
    Asked,
    /// A failed health check or its memory limit: the process was at fault.
    Fault,
}

/// Signals a process gets for what it did itself (a bad memory access, an abort, …), as
/// opposed to signals sent to it from outside (`SIGKILL`, `SIGTERM`, …).
const OWN_DOING: [i32; 9] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGABRT,
    libc::SIGSYS,
    libc::SIGTRAP,
    libc::SIGXCPU,
    libc::SIGXFSZ,
];

/// How a process ended, as its successor is told in [`PREVIOUS_EXIT_ENV`]: `crashed` (by its
/// own doing: a signal such as `SIGSEGV` or `SIGABRT`, a non-zero exit, or stopped by the
/// supervisor for a failed health check or its memory limit), `killed` (by a signal from
/// outside, `kill -9` or the kernel's OOM killer alike), `stopped` (asked to, `cause`
/// [`StopCause::Asked`]) or `exited` (status 0); then a colon and the exit.
pub fn previous_exit(reason: ExitReason, cause: Option<StopCause>) -> String {
    let class = match (cause, reason) {
        (Some(StopCause::Asked), _) => "stopped",
        (Some(StopCause::Fault), _) => "crashed",
        (None, ExitReason::Code(0)) => "exited",
        (None, ExitReason::Code(_)) => "crashed",
        (None, ExitReason::Signal(s)) if OWN_DOING.contains(&s) => "crashed",
        (None, ExitReason::Signal(_)) => "killed",
    };
    format!("{class}: {reason}")
}

/// The conventional name of a signal number (`SIGKILL` for 9), or `signal N`.
pub fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map_or_else(|_| format!("signal {sig}"), |s| s.as_str().to_string())
}

/// The timers a component arms; each fires an [`Event`] carrying its generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    /// `start_secs` after the spawn.
    StartSecs,
    /// `start_timeout` after the spawn.
    StartTimeout,
    /// The backoff delay before the next attempt.
    Backoff,
    /// `stable_after` after becoming running.
    Stable,
    /// `stop_timeout` after the stop signal.
    StopTimeout,
    /// `retry_fatal_after` after going FATAL.
    RetryFatal,
    /// The end of an outgoing process's grace (`handover_grace`, or `stop_timeout` when the
    /// component is stopped): SIGKILL. Armed with the outgoing process's generation.
    Drain,
}

/// What happened to a component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// An operator (or the supervisor) wants it running. Clears FATAL and the budget.
    Start,
    /// An operator (or the supervisor) wants it stopped.
    Stop,
    /// Stop if live, then start again; clears FATAL and the budget.
    Restart,
    /// The process of `generation` was spawned with this pid (also its process group).
    Spawned {
        /// The attempt.
        generation: u64,
        /// Its pid.
        pid: u32,
    },
    /// The process of `generation` could not be spawned.
    SpawnFailed {
        /// The attempt.
        generation: u64,
        /// Why.
        error: String,
    },
    /// The readiness probe of `generation` connected.
    ProbePassed {
        /// The attempt.
        generation: u64,
    },
    /// The process of `generation` exited, and its leftovers are gone.
    Exited {
        /// The attempt.
        generation: u64,
        /// How the main process ended.
        reason: ExitReason,
    },
    /// A timer fired.
    Timer {
        /// Which one.
        timer: Timer,
        /// The attempt it was armed for.
        generation: u64,
    },
    /// The process of `generation` is unhealthy (over its memory limit, failing its liveness
    /// probe): stop it gracefully, then count a failure with `reason`.
    Unhealthy {
        /// The attempt.
        generation: u64,
        /// Why, as `status` shows it.
        reason: String,
    },
    /// The actor that owned the component failed and was replaced by a new one, which
    /// inherited this lifecycle; its process was killed. Counts as a failure when `wanted`.
    ActorReplaced {
        /// Why the old actor failed.
        reason: String,
        /// Whether the component should be running.
        wanted: bool,
    },
}

/// What the actor must do after a transition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Spawn a new process for this generation; report `Spawned` or `SpawnFailed`.
    Spawn {
        /// The new attempt.
        generation: u64,
    },
    /// Probe readiness until it passes; report `ProbePassed`.
    StartProbe {
        /// The attempt.
        generation: u64,
    },
    /// Stop probing.
    CancelProbe,
    /// Send `signal` to the process group `pgid`.
    Signal {
        /// The process group (the main process's pid).
        pgid: u32,
        /// The signal number.
        signal: i32,
    },
    /// Arm `timer` to fire after `after`.
    Arm {
        /// Which timer.
        timer: Timer,
        /// The attempt.
        generation: u64,
        /// The delay.
        after: Duration,
    },
    /// Disarm `timer` (its event would be ignored anyway; this frees the task).
    Disarm(Timer),
}

/// A source of randomness for the backoff jitter; tests inject a fixed one.
pub trait Jitter: Send {
    /// A number in `[0, 1)`.
    fn next_unit(&mut self) -> f64;
}

/// A small xorshift generator seeded from the clock and pid: jitter needs spread, not secrecy.
#[derive(Debug)]
pub struct XorShift(u64);

impl XorShift {
    /// Seeds from the current time and process id.
    pub fn from_entropy() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        XorShift((nanos ^ (u64::from(std::process::id()) << 32)) | 1)
    }
}

impl Jitter for XorShift {
    fn next_unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The failure history that decides backoff and FATAL. A replacement actor inherits it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Budget {
    /// Times of the failures within the window.
    pub failures: VecDeque<Instant>,
    /// Failures since the component was last stable (drives the backoff exponent).
    pub since_stable: u32,
    /// Automatic restarts performed so far.
    pub restarts: u32,
    /// Every failure so far (the supervisor's group strategies watch it grow).
    pub failures_total: u64,
}

/// What to do once a stop completes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum AfterStop {
    Stay,
    StartAgain,
    /// We stopped it because it failed while running (memory limit, liveness): count the
    /// failure with this reason once it is down.
    Fail(String),
}

/// A process a handover replaces: it serves until its successor is ready, then drains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// Its attempt: events of this generation are its own.
    pub generation: u64,
    /// Its pid (and process group).
    pub pid: u32,
    /// When it was spawned.
    pub spawned_at: Instant,
    /// When it was told to stop: none while it still serves.
    pub draining_since: Option<Instant>,
}

/// The lifecycle of one component.
#[derive(Clone, Debug)]
pub struct Lifecycle {
    policy: RestartPolicy,
    has_probe: bool,
    /// Whether `Restart` is a handover (see the module's doc).
    handover: bool,
    state: State,
    since: Instant,
    generation: u64,
    /// The highest generation ever given out: a failed handover makes an earlier generation
    /// current again, and the next attempt must still get one never seen before.
    issued: u64,
    /// The processes being handed over from, oldest first.
    outgoing: Vec<Outgoing>,
    /// STOPPING with the live process gone: only the outgoing ones are left to exit.
    awaiting_outgoing: bool,
    pid: Option<u32>,
    spawned_at: Option<Instant>,
    up_long_enough: bool,
    probe_passed: bool,
    budget: Budget,
    last_exit: Option<String>,
    fatal_reason: Option<String>,
    next_retry: Option<Instant>,
    /// Why the current attempt is being killed, when we kill it (start timeout).
    kill_reason: Option<String>,
    after_stop: AfterStop,
}

impl Lifecycle {
    /// A stopped component with this policy.
    pub fn new(policy: RestartPolicy, has_probe: bool, now: Instant) -> Self {
        Lifecycle {
            policy,
            has_probe,
            handover: false,
            state: State::Stopped,
            since: now,
            generation: 0,
            issued: 0,
            outgoing: Vec::new(),
            awaiting_outgoing: false,
            pid: None,
            spawned_at: None,
            up_long_enough: false,
            probe_passed: false,
            budget: Budget::default(),
            last_exit: None,
            fatal_reason: None,
            next_retry: None,
            kill_reason: None,
            after_stop: AfterStop::Stay,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }
    /// When the current state was entered.
    pub fn since(&self) -> Instant {
        self.since
    }
    /// The current attempt.
    pub fn generation(&self) -> u64 {
        self.generation
    }
    /// The main process, while one exists.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }
    /// When the current process was spawned.
    pub fn spawned_at(&self) -> Option<Instant> {
        self.pid.and(self.spawned_at)
    }
    /// The failure history.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }
    /// Takes up to `crashes` of the latest failures out of the restart budget's window (they
    /// were caused by a request its clients have since quarantined); the backoff, which paces
    /// restarts, keeps counting them. How many were taken out.
    pub fn forgive(&mut self, crashes: u32) -> u32 {
        let mut forgiven = 0;
        while forgiven < crashes && self.budget.failures.pop_back().is_some() {
            forgiven += 1;
        }
        forgiven
    }

    /// How the last failed attempt ended.
    pub fn last_exit(&self) -> Option<&str> {
        self.last_exit.as_deref()
    }
    /// Why the component is FATAL.
    pub fn fatal_reason(&self) -> Option<&str> {
        self.fatal_reason.as_deref()
    }
    /// When BACKOFF ends.
    pub fn next_retry(&self) -> Option<Instant> {
        self.next_retry
    }
    /// The policy.
    pub fn policy(&self) -> &RestartPolicy {
        &self.policy
    }
    /// The processes being handed over from (see the module's doc), oldest first.
    pub fn outgoing(&self) -> &[Outgoing] {
        &self.outgoing
    }
    /// The outgoing process that still serves, while a handover waits for its successor.
    pub fn serving_outgoing(&self) -> Option<&Outgoing> {
        self.outgoing.iter().find(|o| o.draining_since.is_none())
    }

    /// Whether a `Restart` is a handover (see the module's doc).
    pub fn set_handover(&mut self, on: bool) {
        self.handover = on;
    }

    /// Takes a new policy and readiness check (a reload changed them); they apply from the next
    /// attempt on, and to the timers armed from now on.
    pub fn reconfigure(&mut self, policy: RestartPolicy, has_probe: bool, handover: bool) {
        self.policy = policy;
        self.has_probe = has_probe;
        self.handover = handover;
    }

    /// Takes over the failure history and last exit of a previous incarnation.
    pub fn inherit(&mut self, budget: Budget, last_exit: Option<String>) {
        self.budget = budget;
        self.last_exit = last_exit;
    }

    /// The transition function.
    pub fn step(&mut self, event: Event, now: Instant, jitter: &mut dyn Jitter) -> Vec<Action> {
        let mut out = Vec::new();
        let of_outgoing = match &event {
            Event::Exited { generation, .. }
            | Event::Timer { generation, .. }
            | Event::Unhealthy { generation, .. } => self
                .outgoing
                .iter()
                .position(|o| o.generation == *generation),
            _ => None,
        };
        if let Some(i) = of_outgoing {
            self.step_outgoing(i, event, now, jitter, &mut out);
            return out;
        }
        match event {
            Event::Start => match self.state {
                State::Stopped | State::Exited | State::Fatal => {
                    self.clear_failures();
                    self.spawn(now, &mut out);
                }
                State::Backoff => {
                    out.push(Action::Disarm(Timer::Backoff));
                    self.spawn(now, &mut out);
                }
                State::Stopping if self.awaiting_outgoing => {
                    self.start_beside_outgoing(now, &mut out);
                }
                State::Stopping => self.after_stop = AfterStop::StartAgain,
                State::Starting | State::Running => {}
            },
            Event::Restart => match self.state {
                State::Running if self.handover && self.pid.is_some() => {
                    self.hand_over(now, &mut out);
                }
                State::Starting | State::Running => {
                    self.begin_stop(now, AfterStop::StartAgain, &mut out);
                }
                State::Stopping if self.awaiting_outgoing => {
                    self.start_beside_outgoing(now, &mut out);
                }
                State::Stopping => self.after_stop = AfterStop::StartAgain,
                State::Backoff => {
                    out.push(Action::Disarm(Timer::Backoff));
                    self.clear_failures();
                    self.spawn(now, &mut out);
                }
                State::Stopped | State::Exited | State::Fatal => {
                    self.clear_failures();
                    self.spawn(now, &mut out);
                }
            },
            Event::Stop => match self.state {
                State::Starting | State::Running => {
                    self.stop_outgoing(now, &mut out);
                    self.begin_stop(now, AfterStop::Stay, &mut out);
                }
                State::Stopping => {
                    self.stop_outgoing(now, &mut out);
                    self.after_stop = AfterStop::Stay;
                }
                State::Backoff => {
                    out.push(Action::Disarm(Timer::Backoff));
                    // A new generation makes a late backoff timer harmless.
                    self.new_generation();
                    self.stop_outgoing(now, &mut out);
                    self.stop_when_outgoing_gone(now);
                }
                State::Exited | State::Fatal => {
                    out.push(Action::Disarm(Timer::RetryFatal));
                    self.stop_outgoing(now, &mut out);
                    self.stop_when_outgoing_gone(now);
                }
                State::Stopped => {}
            },
            Event::Spawned { generation, pid } => {
                if generation != self.generation || self.pid.is_some() {
                    // Cannot happen while spawns are serialised; never leave such a process.
                    out.push(Action::Signal {
                        pgid: pid,
                        signal: libc::SIGKILL,
                    });
                    return out;
                }
                self.pid = Some(pid);
                self.spawned_at = Some(now);
                match self.state {
                    State::Starting => {
                        out.push(Action::Arm {
                            timer: Timer::StartSecs,
                            generation,
                            after: self.policy.start_secs,
                        });
                        out.push(Action::Arm {
                            timer: Timer::StartTimeout,
                            generation,
                            after: self.policy.start_timeout,
                        });
                        if self.has_probe {
                            out.push(Action::StartProbe { generation });
                        }
                    }
                    // Stopped while the spawn was in flight.
                    State::Stopping => self.send_stop_signal(&mut out),
                    _ => out.push(Action::Signal {
                        pgid: pid,
                        signal: libc::SIGKILL,
                    }),
                }
            }
            Event::SpawnFailed { generation, error } => {
                if generation != self.generation {
                    return out;
                }
                match self.state {
                    State::Starting => self.failure(
                        format!("could not be started: {error}"),
                        now,
                        jitter,
                        &mut out,
                    ),
                    State::Stopping => self.finish_stop(now, jitter, &mut out),
                    _ => {}
                }
            }
            Event::ProbePassed { generation } => {
                if generation == self.generation && self.state == State::Starting {
                    self.probe_passed = true;
                    self.maybe_running(now, &mut out);
                }
            }
            Event::Exited { generation, reason } => {
                if generation != self.generation || self.pid.is_none() {
                    return out;
                }
                self.pid = None;
                out.push(Action::CancelProbe);
                match self.state {
                    State::Starting => {
                        // A failed start, whatever the exit code.
                        let why = self
                            .kill_reason
                            .take()
                            .unwrap_or_else(|| format!("{reason} before it was ready"));
                        self.abnormal_exit(why, now, jitter, &mut out);
                    }
                    State::Running => {
                        let normal = match reason {
                            ExitReason::Code(c) => self.policy.success_exit_codes.contains(&c),
                            ExitReason::Signal(s) => s == self.policy.stop_signal,
                        };
                        match (self.policy.restart, normal) {
                            (RestartType::Permanent, _) | (RestartType::Transient, false) => {
                                self.failure(reason.to_string(), now, jitter, &mut out);
                            }
                            (RestartType::Transient, true) | (RestartType::Temporary, _) => {
                                self.last_exit = Some(reason.to_string());
                                self.enter(State::Exited, now);
                            }
                        }
                    }
                    State::Stopping => {
                        out.push(Action::Disarm(Timer::StopTimeout));
                        if self.after_stop == AfterStop::Stay && !self.outgoing.is_empty() {
                            // STOPPED once the outgoing processes are gone too.
                            self.awaiting_outgoing = true;
                            return out;
                        }
                        self.finish_stop(now, jitter, &mut out);
                    }
                    _ => {}
                }
            }
            Event::Timer { timer, generation } => {
                if generation != self.generation {
                    return out;
                }
                self.on_timer(timer, now, &mut out);
            }
            Event::Unhealthy { generation, reason } => {
                if generation == self.generation
                    && matches!(self.state, State::Starting | State::Running)
                {
                    self.begin_stop(now, AfterStop::Fail(reason), &mut out);
                }
            }
            Event::ActorReplaced { reason, wanted } => {
                // The old actor's guard killed every process of the component.
                self.pid = None;
                self.outgoing.clear();
                self.awaiting_outgoing = false;
                self.new_generation();
                self.enter(State::Stopped, now);
                if wanted {
                    self.failure(reason, now, jitter, &mut out);
                }
            }
        }
        out
    }

    fn on_timer(&mut self, timer: Timer, now: Instant, out: &mut Vec<Action>) {
        // (Timers of earlier generations never reach here.)
        match (timer, self.state) {
            (Timer::StartSecs, State::Starting) => {
                self.up_long_enough = true;
                self.maybe_running(now, out);
            }
            (Timer::StartTimeout, State::Starting) => {
                if let Some(pgid) = self.pid {
                    let mut why = format!(
                        "not ready within {}",
                        humantime::format_duration(self.policy.start_timeout)
                    );
                    if self.has_probe && !self.probe_passed {
                        why.push_str(" (its port never accepted a connection)");
                    }
                    self.kill_reason = Some(why);
                    out.push(Action::CancelProbe);
                    out.push(Action::Signal {
                        pgid,
                        signal: libc::SIGKILL,
                    });
                }
            }
            (Timer::Backoff, State::Backoff) => {
                self.budget.restarts += 1;
                self.spawn(now, out);
            }
            (Timer::Stable, State::Running) => self.budget.since_stable = 0,
            (Timer::RetryFatal, State::Fatal) => {
                self.clear_failures();
                self.budget.restarts += 1;
                self.spawn(now, out);
            }
            (Timer::StopTimeout, State::Stopping) => {
                if let Some(pgid) = self.pid {
                    out.push(Action::Signal {
                        pgid,
                        signal: libc::SIGKILL,
                    });
                }
            }
            _ => {}
        }
    }

    fn enter(&mut self, state: State, now: Instant) {
        if state != self.state {
            self.state = state;
            self.since = now;
        }
        if !matches!(state, State::Backoff | State::Fatal) {
            self.next_retry = None;
        }
    }

    fn clear_failures(&mut self) {
        self.budget.failures.clear();
        self.budget.since_stable = 0;
        self.fatal_reason = None;
    }

    fn spawn(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.new_generation();
        self.awaiting_outgoing = false;
        self.pid = None;
        self.spawned_at = None;
        self.up_long_enough = false;
        self.probe_passed = !self.has_probe;
        self.kill_reason = None;
        self.after_stop = AfterStop::Stay;
        self.fatal_reason = None;
        self.enter(State::Starting, now);
        out.push(Action::Spawn {
            generation: self.generation,
        });
    }

    fn maybe_running(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.up_long_enough && self.probe_passed {
            self.enter(State::Running, now);
            self.drain_outgoing(now, self.policy.handover_grace, out);
            out.push(Action::Disarm(Timer::StartTimeout));
            out.push(Action::Arm {
                timer: Timer::Stable,
                generation: self.generation,
                after: self.policy.stable_after,
            });
        }
    }

    fn begin_stop(&mut self, now: Instant, after: AfterStop, out: &mut Vec<Action>) {
        self.after_stop = after;
        self.enter(State::Stopping, now);
        out.push(Action::CancelProbe);
        if self.pid.is_some() {
            self.send_stop_signal(out);
        }
    }

    fn send_stop_signal(&mut self, out: &mut Vec<Action>) {
        if let Some(pgid) = self.pid {
            out.push(Action::Signal {
                pgid,
                signal: self.policy.stop_signal,
            });
            out.push(Action::Arm {
                timer: Timer::StopTimeout,
                generation: self.generation,
                after: self.policy.stop_timeout,
            });
        }
    }

    fn finish_stop(&mut self, now: Instant, jitter: &mut dyn Jitter, out: &mut Vec<Action>) {
        self.pid = None;
        match std::mem::replace(&mut self.after_stop, AfterStop::Stay) {
            AfterStop::StartAgain => {
                self.clear_failures();
                self.spawn(now, out);
            }
            AfterStop::Stay => self.enter(State::Stopped, now),
            AfterStop::Fail(reason) => self.abnormal_exit(reason, now, jitter, out),
        }
    }

    /// A failure whatever the restart type: a failed start, a process we had to stop. A
    /// temporary component is never restarted, so it goes FATAL.
    fn abnormal_exit(
        &mut self,
        why: String,
        now: Instant,
        jitter: &mut dyn Jitter,
        out: &mut Vec<Action>,
    ) {
        if self.serving_outgoing().is_some() {
            self.handover_failed(&why, now, out);
            return;
        }
        if self.policy.restart == RestartType::Temporary {
            self.budget.failures_total += 1;
            self.last_exit = Some(why.clone());
            self.go_fatal(
                format!("{why}; temporary components are not restarted"),
                now,
                out,
            );
        } else {
            self.failure(why, now, jitter, out);
        }
    }

    /// Gives up, or with `retry_fatal_after`, gives up for that long.
    fn go_fatal(&mut self, reason: String, now: Instant, out: &mut Vec<Action>) {
        self.fatal_reason = Some(reason);
        self.new_generation();
        self.enter(State::Fatal, now);
        if let Some(after) = self.policy.retry_fatal_after {
            self.next_retry = Some(now + after);
            out.push(Action::Arm {
                timer: Timer::RetryFatal,
                generation: self.generation,
                after,
            });
        }
    }

    /// The restart rule: count the failure, then restart at once, back off, or give up.
    fn failure(
        &mut self,
        why: String,
        now: Instant,
        jitter: &mut dyn Jitter,
        out: &mut Vec<Action>,
    ) {
        if self.serving_outgoing().is_some() {
            self.handover_failed(&why, now, out);
            return;
        }
        self.last_exit = Some(why.clone());
        let window = self.policy.max_window;
        let budget = &mut self.budget;
        budget.failures.push_back(now);
        while budget
            .failures
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= window)
        {
            budget.failures.pop_front();
        }
        budget.since_stable += 1;
        budget.failures_total += 1;
        let in_window = budget.failures.len();
        if in_window > self.policy.max_restarts as usize {
            let reason = format!(
                "{in_window} failures in {}; last: {why}",
                humantime::format_duration(window)
            );
            self.go_fatal(reason, now, out);
            return;
        }
        match backoff_delay(&self.policy, self.budget.since_stable, jitter) {
            None => {
                self.budget.restarts += 1;
                self.spawn(now, out);
            }
            Some(delay) => {
                self.enter(State::Backoff, now);
                self.next_retry = Some(now + delay);
                out.push(Action::Arm {
                    timer: Timer::Backoff,
                    generation: self.generation,
                    after: delay,
                });
            }
        }
    }
}

impl Lifecycle {
    /// Gives the next attempt a generation never seen before.
    fn new_generation(&mut self) {
        self.issued = self.issued.max(self.generation) + 1;
        self.generation = self.issued;
    }

    /// `Restart` of a RUNNING component that can hand over: its process stays, serving, and a
    /// new one starts beside it.
    fn hand_over(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Some(pid) = self.pid else { return };
        self.outgoing.push(Outgoing {
            generation: self.generation,
            pid,
            spawned_at: self.spawned_at.unwrap_or(now),
            draining_since: None,
        });
        self.clear_failures();
        self.spawn(now, out);
    }

    /// Tells every outgoing process that still serves to stop, with `grace` before SIGKILL.
    fn drain_outgoing(&mut self, now: Instant, grace: Duration, out: &mut Vec<Action>) {
        let signal = self.policy.stop_signal;
        for o in self
            .outgoing
            .iter_mut()
            .filter(|o| o.draining_since.is_none())
        {
            o.draining_since = Some(now);
            out.push(Action::Signal {
                pgid: o.pid,
                signal,
            });
            out.push(Action::Arm {
                timer: Timer::Drain,
                generation: o.generation,
                after: grace,
            });
        }
    }

    /// A `Stop` during a handover: the outgoing processes stop too, within `stop_timeout` like
    /// the live one: those that still serve get their stop signal, those already draining keep
    /// what is left of their grace, up to `stop_timeout`.
    fn stop_outgoing(&mut self, now: Instant, out: &mut Vec<Action>) {
        let (grace, stop) = (self.policy.handover_grace, self.policy.stop_timeout);
        for o in &self.outgoing {
            if let Some(since) = o.draining_since {
                let left = (since + grace).saturating_duration_since(now);
                out.push(Action::Arm {
                    timer: Timer::Drain,
                    generation: o.generation,
                    after: left.min(stop),
                });
            }
        }
        self.drain_outgoing(now, stop, out);
    }

    /// `Start` while a stop waits only for outgoing processes to exit: a new process starts
    /// now; they go on draining.
    fn start_beside_outgoing(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.clear_failures();
        self.spawn(now, out);
    }

    /// STOPPED now, or once the outgoing processes are gone (STOPPING until then).
    fn stop_when_outgoing_gone(&mut self, now: Instant) {
        self.after_stop = AfterStop::Stay;
        if self.outgoing.is_empty() {
            self.enter(State::Stopped, now);
        } else {
            self.awaiting_outgoing = true;
            self.enter(State::Stopping, now);
        }
    }

    /// The new process of a handover failed to start (`why`): the outgoing one that still
    /// serves is the live process again, as if the restart had not been asked. Not a failure of
    /// the component: it never stopped serving.
    fn handover_failed(&mut self, why: &str, now: Instant, out: &mut Vec<Action>) {
        let Some(i) = self
            .outgoing
            .iter()
            .position(|o| o.draining_since.is_none())
        else {
            return;
        };
        let o = self.outgoing.remove(i);
        self.last_exit = Some(format!(
            "handover failed: the new process {why}; pid {} kept serving",
            o.pid
        ));
        self.generation = o.generation;
        self.pid = Some(o.pid);
        self.spawned_at = Some(o.spawned_at);
        self.up_long_enough = true;
        self.probe_passed = true;
        self.kill_reason = None;
        self.after_stop = AfterStop::Stay;
        self.enter(State::Running, now);
        out.push(Action::Disarm(Timer::StartTimeout));
        out.push(Action::Arm {
            timer: Timer::Stable,
            generation: o.generation,
            after: self.policy.stable_after,
        });
    }

    /// An event of the outgoing process `i`.
    fn step_outgoing(
        &mut self,
        i: usize,
        event: Event,
        now: Instant,
        jitter: &mut dyn Jitter,
        out: &mut Vec<Action>,
    ) {
        match event {
            Event::Exited { reason, .. } => {
                let o = self.outgoing.remove(i);
                if o.draining_since.is_none() {
                    // It died while its successor was starting: that one is coming anyway.
                    self.last_exit = Some(format!(
                        "pid {} {reason} while handing over to its successor",
                        o.pid
                    ));
                }
                if self.outgoing.is_empty() && self.awaiting_outgoing {
                    // The live process is gone already: the stop is complete.
                    self.awaiting_outgoing = false;
                    self.finish_stop(now, jitter, out);
                }
            }
            Event::Timer {
                timer: Timer::Drain,
                ..
            } => {
                out.push(Action::Signal {
                    pgid: self.outgoing[i].pid,
                    signal: libc::SIGKILL,
                });
            }
            // Its other timers, its health: it is on its way out.
            _ => {}
        }
    }
}

/// The delay before restarting after the `n`-th failure since the component was stable:
/// none for the first, then `backoff_initial × 2^(n−2)` capped at `backoff_max`, ±10 %.
pub fn backoff_delay(policy: &RestartPolicy, n: u32, jitter: &mut dyn Jitter) -> Option<Duration> {
    if n <= 1 {
        return None;
    }
    let exp = (n - 2).min(30);
    let base = policy
        .backoff_initial
        .saturating_mul(1u32 << exp)
        .min(policy.backoff_max);
    let factor = 0.9 + 0.2 * jitter.next_unit();
    Some(base.mul_f64(factor))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Always the middle of the jitter range: no jitter at all.
    struct NoJitter;
    impl Jitter for NoJitter {
        fn next_unit(&mut self) -> f64 {
            0.5
        }
    }

    /// A fake clock and a lifecycle, with helpers that play the actor's part.
    struct Rig {
        lc: Lifecycle,
        now: Instant,
        next_pid: u32,
    }

    impl Rig {
        fn new(policy: RestartPolicy, probe: bool) -> Self {
            let now = Instant::now();
            Rig {
                lc: Lifecycle::new(policy, probe, now),
                now,
                next_pid: 100,
            }
        }
        fn step(&mut self, e: Event) -> Vec<Action> {
            self.lc.step(e, self.now, &mut NoJitter)
        }
        fn advance(&mut self, d: Duration) {
            self.now += d;
        }
        fn gen(&self) -> u64 {
            self.lc.generation()
        }
        /// Completes a spawn and returns the pid.
        fn spawned(&mut self) -> u32 {
            self.next_pid += 1;
            let pid = self.next_pid;
            let g = self.gen();
            self.step(Event::Spawned { generation: g, pid });
            pid
        }
        fn timer(&mut self, timer: Timer) -> Vec<Action> {
            let g = self.gen();
            self.step(Event::Timer {
                timer,
                generation: g,
            })
        }
        fn exit(&mut self, reason: ExitReason) -> Vec<Action> {
            let g = self.gen();
            self.step(Event::Exited {
                generation: g,
                reason,
            })
        }
        /// Start → spawned → start_secs elapsed: RUNNING.
        fn run(&mut self) -> u32 {
            self.step(Event::Start);
            let pid = self.spawned();
            self.timer(Timer::StartSecs);
            assert_eq!(self.lc.state(), State::Running);
            pid
        }
    }

    fn policy() -> RestartPolicy {
        RestartPolicy::default()
    }

    fn backoff_of(actions: &[Action]) -> Option<Duration> {
        actions.iter().find_map(|a| match a {
            Action::Arm {
                timer: Timer::Backoff,
                after,
                ..
            } => Some(*after),
            _ => None,
        })
    }

    #[test]
    fn start_becomes_running_after_start_secs_and_probe() {
        let mut r = Rig::new(policy(), true);
        let a = r.step(Event::Start);
        assert_eq!(a, vec![Action::Spawn { generation: 1 }]);
        assert_eq!(r.lc.state(), State::Starting);
        let g = r.gen();
        let a = r.step(Event::Spawned {
            generation: g,
            pid: 42,
        });
        assert!(a.contains(&Action::StartProbe { generation: 1 }));
        r.timer(Timer::StartSecs);
        assert_eq!(r.lc.state(), State::Starting, "probe has not passed yet");
        r.step(Event::ProbePassed { generation: 1 });
        assert_eq!(r.lc.state(), State::Running);
        assert_eq!(r.lc.pid(), Some(42));
    }

    #[test]
    fn exit_before_ready_is_a_failed_start_with_its_reason() {
        let mut r = Rig::new(policy(), false);
        r.step(Event::Start);
        r.spawned();
        let a = r.exit(ExitReason::Code(1));
        // The first failure since stable restarts at once.
        assert_eq!(
            a,
            vec![Action::CancelProbe, Action::Spawn { generation: 2 }]
        );
        assert_eq!(
            r.lc.last_exit(),
            Some("exited with status 1 before it was ready")
        );
        assert_eq!(r.lc.budget().restarts, 1);
    }

    #[test]
    fn backoff_sequence_doubles_from_the_second_failure_and_caps() {
        let mut p = policy();
        p.max_restarts = 100;
        p.max_window = Duration::from_secs(3600);
        p.backoff_max = Duration::from_millis(1000);
        let mut r = Rig::new(p, false);
        r.run();
        let mut delays = Vec::new();
        for _ in 0..7 {
            let a = r.exit(ExitReason::Signal(9));
            match backoff_of(&a) {
                Some(d) => {
                    assert_eq!(r.lc.state(), State::Backoff);
                    assert_eq!(r.lc.next_retry(), Some(r.now + d));
                    delays.push(d.as_millis());
                    r.advance(d);
                    let a = r.timer(Timer::Backoff);
                    assert!(matches!(a[..], [Action::Spawn { .. }]));
                }
                None => delays.push(0),
            }
            r.spawned();
        }
        assert_eq!(delays, [0, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(r.lc.budget().restarts, 7);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        struct Fixed(f64);
        impl Jitter for Fixed {
            fn next_unit(&mut self) -> f64 {
                self.0
            }
        }
        let p = policy();
        let low = backoff_delay(&p, 3, &mut Fixed(0.0)).unwrap();
        let high = backoff_delay(&p, 3, &mut Fixed(0.999_999)).unwrap();
        assert_eq!(low, Duration::from_millis(180));
        assert!(high > Duration::from_millis(219) && high <= Duration::from_millis(220));
        let mut rng = XorShift::from_entropy();
        for _ in 0..1000 {
            let u = rng.next_unit();
            assert!((0.0..1.0).contains(&u));
        }
    }

    #[test]
    fn budget_exceeded_is_fatal_with_reason_and_start_clears_it() {
        let mut p = policy();
        p.backoff_initial = Duration::from_millis(10);
        let mut r = Rig::new(p, false);
        r.run();
        for i in 0..6 {
            let a = r.exit(ExitReason::Signal(9));
            if i == 5 {
                assert!(a.iter().all(|a| !matches!(a, Action::Spawn { .. })));
                break;
            }
            if let Some(d) = backoff_of(&a) {
                r.advance(d);
                r.timer(Timer::Backoff);
            }
            r.spawned();
            r.timer(Timer::StartSecs);
            r.advance(Duration::from_millis(500));
        }
        assert_eq!(r.lc.state(), State::Fatal);
        assert_eq!(
            r.lc.fatal_reason(),
            Some("6 failures in 1m; last: killed by signal 9 (SIGKILL)")
        );
        // A late timer of the dead attempt changes nothing.
        assert!(r.timer(Timer::Backoff).is_empty());
        assert_eq!(r.lc.state(), State::Fatal);
        r.step(Event::Start);
        assert_eq!(r.lc.state(), State::Starting);
        assert_eq!(r.lc.fatal_reason(), None);
        assert!(r.lc.budget().failures.is_empty());
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let mut p = policy();
        p.max_restarts = 2;
        p.max_window = Duration::from_secs(10);
        p.stable_after = Duration::from_secs(3600);
        let mut r = Rig::new(p, false);
        r.run();
        for _ in 0..10 {
            r.advance(Duration::from_secs(6));
            let a = r.exit(ExitReason::Code(3));
            if let Some(d) = backoff_of(&a) {
                r.advance(d);
                r.timer(Timer::Backoff);
            }
            assert_eq!(r.lc.state(), State::Starting, "never more than 2 in 10 s");
            r.spawned();
        }
    }

    #[test]
    fn stable_running_resets_the_backoff_exponent() {
        let mut r = Rig::new(policy(), false);
        r.run();
        r.exit(ExitReason::Code(1)); // 1st: at once
        r.spawned();
        let a = r.exit(ExitReason::Code(1)); // 2nd: 100 ms
        assert_eq!(backoff_of(&a), Some(Duration::from_millis(100)));
        r.advance(Duration::from_millis(100));
        r.timer(Timer::Backoff);
        r.spawned();
        r.timer(Timer::StartSecs);
        assert_eq!(r.lc.state(), State::Running);
        r.advance(Duration::from_secs(30));
        r.timer(Timer::Stable);
        assert_eq!(r.lc.budget().since_stable, 0);
        let a = r.exit(ExitReason::Code(1));
        assert!(
            a.contains(&Action::Spawn {
                generation: r.gen()
            }),
            "at once again"
        );
    }

    #[test]
    fn stale_events_of_an_earlier_generation_are_ignored() {
        let mut r = Rig::new(policy(), true);
        let old = r.run_with_probe();
        let old_gen = r.gen();
        r.exit(ExitReason::Code(1));
        r.spawned();
        assert!(r
            .step(Event::Exited {
                generation: old_gen,
                reason: ExitReason::Code(1)
            })
            .is_empty());
        assert!(r
            .step(Event::Timer {
                timer: Timer::StartTimeout,
                generation: old_gen
            })
            .is_empty());
        r.step(Event::ProbePassed {
            generation: old_gen,
        });
        assert_eq!(r.lc.state(), State::Starting);
        assert_ne!(r.lc.pid(), Some(old));
    }

    impl Rig {
        fn run_with_probe(&mut self) -> u32 {
            self.step(Event::Start);
            let pid = self.spawned();
            self.timer(Timer::StartSecs);
            let g = self.gen();
            self.step(Event::ProbePassed { generation: g });
            assert_eq!(self.lc.state(), State::Running);
            pid
        }
    }

    #[test]
    fn stop_signals_the_group_then_kills_after_the_timeout_and_is_no_failure() {
        let mut r = Rig::new(policy(), false);
        let pid = r.run();
        let a = r.step(Event::Stop);
        assert_eq!(r.lc.state(), State::Stopping);
        assert!(a.contains(&Action::Signal {
            pgid: pid,
            signal: libc::SIGTERM
        }));
        let a = r.timer(Timer::StopTimeout);
        assert_eq!(
            a,
            vec![Action::Signal {
                pgid: pid,
                signal: libc::SIGKILL
            }]
        );
        r.exit(ExitReason::Signal(9));
        assert_eq!(r.lc.state(), State::Stopped);
        assert_eq!(r.lc.budget().failures.len(), 0);
        assert_eq!(r.lc.last_exit(), None);
    }

    #[test]
    fn stop_cancels_a_pending_restart() {
        let mut r = Rig::new(policy(), false);
        r.run();
        r.exit(ExitReason::Code(1));
        r.spawned();
        r.exit(ExitReason::Code(1));
        assert_eq!(r.lc.state(), State::Backoff);
        let backoff_gen = r.gen();
        let a = r.step(Event::Stop);
        assert_eq!(a, vec![Action::Disarm(Timer::Backoff)]);
        assert_eq!(r.lc.state(), State::Stopped);
        let a = r.step(Event::Timer {
            timer: Timer::Backoff,
            generation: backoff_gen,
        });
        assert!(a.is_empty());
        assert_eq!(r.lc.state(), State::Stopped);
    }

    #[test]
    fn restart_stops_then_spawns_without_counting_a_failure() {
        let mut r = Rig::new(policy(), false);
        let pid = r.run();
        r.step(Event::Restart);
        assert_eq!(r.lc.state(), State::Stopping);
        let a = r.exit(ExitReason::Signal(libc::SIGTERM));
        assert!(matches!(a.last(), Some(Action::Spawn { .. })));
        assert_eq!(r.lc.state(), State::Starting);
        let new = r.spawned();
        assert_ne!(new, pid);
        assert_eq!(r.lc.budget().restarts, 0);
        assert_eq!(r.lc.budget().failures.len(), 0);
    }

    #[test]
    fn start_timeout_kills_and_counts_as_failure() {
        let mut r = Rig::new(policy(), true);
        r.step(Event::Start);
        let pid = r.spawned();
        r.timer(Timer::StartSecs);
        let a = r.timer(Timer::StartTimeout);
        assert!(a.contains(&Action::Signal {
            pgid: pid,
            signal: libc::SIGKILL
        }));
        r.exit(ExitReason::Signal(9));
        assert_eq!(
            r.lc.last_exit(),
            Some("not ready within 30s (its port never accepted a connection)")
        );
        assert_eq!(r.lc.state(), State::Starting);
    }

    #[test]
    fn stop_while_the_spawn_is_in_flight_signals_on_arrival() {
        let mut r = Rig::new(policy(), false);
        r.step(Event::Start);
        let a = r.step(Event::Stop);
        assert!(a.iter().all(|a| !matches!(a, Action::Signal { .. })));
        assert_eq!(r.lc.state(), State::Stopping);
        let g = r.gen();
        let a = r.step(Event::Spawned {
            generation: g,
            pid: 7,
        });
        assert!(a.contains(&Action::Signal {
            pgid: 7,
            signal: libc::SIGTERM
        }));
    }

    #[test]
    fn spawn_failure_is_a_failure_and_a_replaced_actor_keeps_its_budget() {
        let mut p = policy();
        p.max_restarts = 1;
        let mut r = Rig::new(p.clone(), false);
        r.step(Event::Start);
        let g = r.gen();
        r.step(Event::SpawnFailed {
            generation: g,
            error: "No such file or directory".into(),
        });
        assert_eq!(
            r.lc.last_exit(),
            Some("could not be started: No such file or directory")
        );
        assert_eq!(r.lc.state(), State::Starting);
        // The actor dies; a new one inherits the budget and the failure counts.
        let mut fresh = Lifecycle::new(p, false, r.now);
        fresh.inherit(r.lc.budget().clone(), r.lc.last_exit().map(String::from));
        fresh.step(
            Event::ActorReplaced {
                reason: "component actor panicked: boom".into(),
                wanted: true,
            },
            r.now,
            &mut NoJitter,
        );
        assert_eq!(fresh.state(), State::Fatal);
        assert_eq!(
            fresh.fatal_reason(),
            Some("2 failures in 1m; last: component actor panicked: boom")
        );
    }

    fn with_restart(restart: RestartType) -> RestartPolicy {
        RestartPolicy {
            restart,
            success_exit_codes: vec![0, 3],
            ..policy()
        }
    }

    #[test]
    fn transient_restarts_only_abnormal_exits() {
        let mut r = Rig::new(with_restart(RestartType::Transient), false);
        r.run();
        r.exit(ExitReason::Code(3));
        assert_eq!(r.lc.state(), State::Exited, "3 is a success code");
        assert_eq!(r.lc.last_exit(), Some("exited with status 3"));
        r.run();
        r.exit(ExitReason::Signal(libc::SIGTERM));
        assert_eq!(
            r.lc.state(),
            State::Exited,
            "death by our stop signal is normal"
        );
        r.run();
        r.exit(ExitReason::Code(1));
        assert_eq!(r.lc.state(), State::Starting, "1 is a failure: restarted");
        r.spawned();
        r.exit(ExitReason::Signal(libc::SIGKILL));
        assert_eq!(r.lc.state(), State::Backoff);
    }

    #[test]
    fn temporary_never_restarts_and_a_failed_start_is_fatal() {
        let mut r = Rig::new(with_restart(RestartType::Temporary), false);
        r.run();
        r.exit(ExitReason::Code(1));
        assert_eq!(r.lc.state(), State::Exited);
        r.step(Event::Start);
        r.spawned();
        let a = r.exit(ExitReason::Code(0));
        assert!(a.iter().all(|a| !matches!(a, Action::Spawn { .. })));
        assert_eq!(
            r.lc.state(),
            State::Fatal,
            "exited before start_secs: a failed start"
        );
        assert_eq!(
            r.lc.fatal_reason(),
            Some(
                "exited with status 0 before it was ready; temporary components are not restarted"
            )
        );
    }

    #[test]
    fn an_exit_before_start_secs_fails_the_start_whatever_its_code() {
        let mut r = Rig::new(with_restart(RestartType::Transient), false);
        r.step(Event::Start);
        r.spawned();
        r.exit(ExitReason::Code(0));
        assert_eq!(r.lc.state(), State::Starting, "restarted: a failed start");
        assert_eq!(r.lc.budget().failures_total, 1);
    }

    #[test]
    fn unhealthy_stops_gracefully_then_counts_a_failure_with_the_reason() {
        let mut r = Rig::new(policy(), false);
        let pid = r.run();
        let g = r.gen();
        let a = r.step(Event::Unhealthy {
            generation: g,
            reason: "restarted: memory 612 MiB over limit 512 MiB".into(),
        });
        assert!(a.contains(&Action::Signal {
            pgid: pid,
            signal: libc::SIGTERM
        }));
        assert_eq!(r.lc.state(), State::Stopping);
        r.exit(ExitReason::Signal(libc::SIGTERM));
        assert_eq!(
            r.lc.state(),
            State::Starting,
            "the first failure restarts at once"
        );
        assert_eq!(
            r.lc.last_exit(),
            Some("restarted: memory 612 MiB over limit 512 MiB")
        );
        assert_eq!(r.lc.budget().failures_total, 1);
        // A stale report about the old process changes nothing.
        assert!(r
            .step(Event::Unhealthy {
                generation: g,
                reason: "late".into()
            })
            .is_empty());
    }

    #[test]
    fn retry_fatal_after_starts_a_fatal_component_again() {
        let mut p = policy();
        p.max_restarts = 0;
        p.retry_fatal_after = Some(Duration::from_secs(600));
        let mut r = Rig::new(p, false);
        r.run();
        let a = r.exit(ExitReason::Code(1));
        assert_eq!(r.lc.state(), State::Fatal);
        assert!(a.contains(&Action::Arm {
            timer: Timer::RetryFatal,
            generation: r.gen(),
            after: Duration::from_secs(600)
        }));
        assert_eq!(r.lc.next_retry(), Some(r.now + Duration::from_secs(600)));
        r.advance(Duration::from_secs(600));
        let a = r.timer(Timer::RetryFatal);
        assert!(matches!(a[..], [Action::Spawn { .. }]));
        assert_eq!(r.lc.state(), State::Starting);
        assert_eq!(r.lc.fatal_reason(), None);
    }

    #[test]
    fn the_previous_exit_says_who_is_to_blame() {
        use super::{previous_exit, StopCause};
        let sig = ExitReason::Signal;
        assert_eq!(
            previous_exit(sig(libc::SIGSEGV), None),
            "crashed: killed by signal 11 (SIGSEGV)"
        );
        assert!(previous_exit(sig(libc::SIGABRT), None).starts_with("crashed: "));
        assert!(previous_exit(ExitReason::Code(101), None).starts_with("crashed: "));
        assert_eq!(
            previous_exit(sig(libc::SIGKILL), None),
            "killed: killed by signal 9 (SIGKILL)"
        );
        assert!(previous_exit(sig(libc::SIGTERM), None).starts_with("killed: "));
        assert_eq!(
            previous_exit(ExitReason::Code(0), None),
            "exited: exited with status 0"
        );
        assert!(previous_exit(sig(libc::SIGKILL), Some(StopCause::Asked)).starts_with("stopped: "));
        assert!(previous_exit(sig(libc::SIGTERM), Some(StopCause::Fault)).starts_with("crashed: "));
    }

    /// A RUNNING component that hands over, with a readiness signal (as `ready = notify`).
    fn handing_over() -> (Rig, u32) {
        let mut r = Rig::new(policy(), true);
        r.lc.set_handover(true);
        r.step(Event::Start);
        let pid = r.spawned();
        r.timer(Timer::StartSecs);
        let g = r.gen();
        r.step(Event::ProbePassed { generation: g });
        assert_eq!(r.lc.state(), State::Running);
        (r, pid)
    }

    /// Makes the new process of a handover ready.
    fn ready(r: &mut Rig) -> Vec<Action> {
        let mut a = r.timer(Timer::StartSecs);
        let g = r.gen();
        a.extend(r.step(Event::ProbePassed { generation: g }));
        a
    }

    fn signals(actions: &[Action]) -> Vec<(u32, i32)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Signal { pgid, signal } => Some((*pgid, *signal)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_handover_starts_the_new_process_beside_the_old_and_drains_the_old_once_the_new_is_ready() {
        let (mut r, old) = handing_over();
        let old_gen = r.gen();
        let a = r.step(Event::Restart);
        assert!(
            signals(&a).is_empty(),
            "the old process still serves: {a:?}"
        );
        assert_eq!(
            a.last(),
            Some(&Action::Spawn {
                generation: old_gen + 1
            })
        );
        assert_eq!(r.lc.state(), State::Starting);
        assert_eq!(r.lc.serving_outgoing().map(|o| o.pid), Some(old));
        let new = r.spawned();
        assert_eq!(r.lc.pid(), Some(new));

        // start_secs alone is not enough: the new one must say it is ready.
        let a = r.timer(Timer::StartSecs);
        assert!(signals(&a).is_empty());
        r.advance(Duration::from_millis(300));
        let g = r.gen();
        let a = r.step(Event::ProbePassed { generation: g });
        assert_eq!(r.lc.state(), State::Running);
        assert_eq!(signals(&a), vec![(old, libc::SIGTERM)]);
        assert!(a.contains(&Action::Arm {
            timer: Timer::Drain,
            generation: old_gen,
            after: policy().handover_grace,
        }));
        assert_eq!(r.lc.outgoing()[0].draining_since, Some(r.now));

        // Its grace runs out: SIGKILL, to the old process only.
        let a = r.step(Event::Timer {
            timer: Timer::Drain,
            generation: old_gen,
        });
        assert_eq!(signals(&a), vec![(old, libc::SIGKILL)]);
        // Its exit is its own: the new process stays RUNNING, and nothing counts as a failure.
        let a = r.step(Event::Exited {
            generation: old_gen,
            reason: ExitReason::Signal(libc::SIGKILL),
        });
        assert!(a.is_empty(), "{a:?}");
        assert_eq!((r.lc.state(), r.lc.pid()), (State::Running, Some(new)));
        assert!(r.lc.outgoing().is_empty());
        assert_eq!(r.lc.budget().failures_total, 0);
        assert_eq!(r.lc.last_exit(), None);
    }

    #[test]
    fn a_failed_handover_leaves_the_old_process_serving_and_counts_no_failure() {
        for how in ["exit", "spawn", "timeout"] {
            let (mut r, old) = handing_over();
            let old_gen = r.gen();
            r.step(Event::Restart);
            let failed_gen = r.gen();
            let a = match how {
                "exit" => {
                    r.spawned();
                    r.exit(ExitReason::Code(1))
                }
                "spawn" => r.step(Event::SpawnFailed {
                    generation: failed_gen,
                    error: "no such file".into(),
                }),
                _ => {
                    let new = r.spawned();
                    let a = r.timer(Timer::StartTimeout);
                    assert_eq!(signals(&a), vec![(new, libc::SIGKILL)], "{how}");
                    r.exit(ExitReason::Signal(libc::SIGKILL))
                }
            };
            assert!(
                signals(&a).is_empty(),
                "{how}: the old process is left alone: {a:?}"
            );
            assert_eq!(
                (r.lc.state(), r.lc.pid(), r.gen()),
                (State::Running, Some(old), old_gen),
                "{how}"
            );
            assert!(r.lc.outgoing().is_empty(), "{how}");
            let why = r.lc.last_exit().unwrap_or_default();
            assert!(
                why.starts_with("handover failed: the new process "),
                "{how}: {why}"
            );
            assert!(
                why.ends_with(&format!("pid {old} kept serving")),
                "{how}: {why}"
            );
            assert_eq!(
                (r.lc.budget().failures_total, r.lc.budget().restarts),
                (0, 0),
                "{how}"
            );

            // The old process is the live one again: its exit is handled, and the next
            // attempt gets a generation the failed one never had.
            let a = r.exit(ExitReason::Code(3));
            assert_eq!(
                a.last(),
                Some(&Action::Spawn {
                    generation: failed_gen + 1
                }),
                "{how}"
            );
            assert_eq!(r.lc.budget().failures_total, 1, "{how}");
        }
    }

    #[test]
    fn a_stop_during_a_handover_stops_both_and_is_stopped_once_both_are_gone() {
        let (mut r, old) = handing_over();
        let old_gen = r.gen();
        r.step(Event::Restart);
        let new = r.spawned();
        let a = r.step(Event::Stop);
        assert_eq!(
            signals(&a),
            vec![(old, libc::SIGTERM), (new, libc::SIGTERM)]
        );
        assert!(
            a.contains(&Action::Arm {
                timer: Timer::Drain,
                generation: old_gen,
                after: policy().stop_timeout,
            }),
            "the old one gets stop_timeout, as the new one: {a:?}"
        );
        r.exit(ExitReason::Signal(libc::SIGTERM));
        assert_eq!(
            (r.lc.state(), r.lc.pid()),
            (State::Stopping, None),
            "the old one is alive"
        );
        r.step(Event::Exited {
            generation: old_gen,
            reason: ExitReason::Signal(libc::SIGTERM),
        });
        assert_eq!(r.lc.state(), State::Stopped);

        // The same, the old one exiting first.
        let (mut r, _) = handing_over();
        let old_gen = r.gen();
        r.step(Event::Restart);
        r.spawned();
        r.step(Event::Stop);
        r.step(Event::Exited {
            generation: old_gen,
            reason: ExitReason::Signal(libc::SIGTERM),
        });
        assert_eq!(r.lc.state(), State::Stopping);
        r.exit(ExitReason::Signal(libc::SIGTERM));
        assert_eq!(r.lc.state(), State::Stopped);
    }

    #[test]
    fn a_stop_cuts_the_grace_of_a_draining_process_to_stop_timeout() {
        let (mut r, old) = handing_over();
        let old_gen = r.gen();
        r.step(Event::Restart);
        let new = r.spawned();
        ready(&mut r);
        r.advance(Duration::from_secs(1));
        let a = r.step(Event::Stop);
        assert_eq!(
            signals(&a),
            vec![(new, libc::SIGTERM)],
            "the old one was told already"
        );
        assert!(
            a.contains(&Action::Arm {
                timer: Timer::Drain,
                generation: old_gen,
                after: policy().stop_timeout,
            }),
            "{a:?}"
        );
        let a = r.step(Event::Timer {
            timer: Timer::Drain,
            generation: old_gen,
        });
        assert_eq!(signals(&a), vec![(old, libc::SIGKILL)]);
    }

    #[test]
    fn a_start_while_a_stop_waits_for_a_draining_process_starts_at_once() {
        let (mut r, _) = handing_over();
        let old_gen = r.gen();
        r.step(Event::Restart);
        r.spawned();
        ready(&mut r);
        r.step(Event::Stop);
        r.exit(ExitReason::Signal(libc::SIGTERM));
        assert_eq!(r.lc.state(), State::Stopping, "the old one still drains");
        let a = r.step(Event::Start);
        assert!(matches!(a.last(), Some(Action::Spawn { .. })), "{a:?}");
        assert_eq!(r.lc.state(), State::Starting);
        r.spawned();
        r.step(Event::Exited {
            generation: old_gen,
            reason: ExitReason::Code(0),
        });
        assert_eq!(
            r.lc.state(),
            State::Starting,
            "the old one's exit is not the new one's"
        );
    }

    #[test]
    fn handovers_in_a_row_drain_each_old_process_with_its_own_timer() {
        let (mut r, first) = handing_over();
        let first_gen = r.gen();
        r.step(Event::Restart);
        let second = r.spawned();
        let second_gen = r.gen();
        ready(&mut r);
        r.step(Event::Restart);
        let third = r.spawned();
        assert_eq!(r.lc.outgoing().len(), 2);
        let a = ready(&mut r);
        assert_eq!(
            signals(&a),
            vec![(second, libc::SIGTERM)],
            "the first one was told already"
        );
        let a = r.step(Event::Timer {
            timer: Timer::Drain,
            generation: first_gen,
        });
        assert_eq!(signals(&a), vec![(first, libc::SIGKILL)]);
        r.step(Event::Exited {
            generation: second_gen,
            reason: ExitReason::Code(0),
        });
        r.step(Event::Exited {
            generation: first_gen,
            reason: ExitReason::Signal(9),
        });
        // A late drain timer of a process that is gone signals nobody.
        let a = r.step(Event::Timer {
            timer: Timer::Drain,
            generation: second_gen,
        });
        assert!(signals(&a).is_empty());
        assert_eq!(
            (r.lc.state(), r.lc.pid(), r.lc.outgoing().len()),
            (State::Running, Some(third), 0)
        );
    }

    #[test]
    fn a_crash_of_the_new_process_after_the_handover_is_an_ordinary_failure() {
        let (mut r, _) = handing_over();
        r.step(Event::Restart);
        r.spawned();
        ready(&mut r);
        let a = r.exit(ExitReason::Signal(libc::SIGSEGV));
        assert!(matches!(a.last(), Some(Action::Spawn { .. })), "{a:?}");
        assert_eq!(r.lc.budget().failures_total, 1);
        assert_eq!(r.lc.outgoing().len(), 1, "the old one still drains");
    }

    #[test]
    fn without_handover_a_restart_stops_first() {
        let mut r = Rig::new(policy(), true);
        r.step(Event::Start);
        let pid = r.spawned();
        ready(&mut r);
        let a = r.step(Event::Restart);
        assert_eq!(signals(&a), vec![(pid, libc::SIGTERM)]);
        assert_eq!(r.lc.state(), State::Stopping);
        assert!(r.lc.outgoing().is_empty());
    }
}

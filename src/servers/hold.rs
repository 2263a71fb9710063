//! How a server rides out the restarts and crashes of the server it calls (`ps` → `is`,
//! `is` → `svg`): the rules, without any I/O, so that they are tested with a made-up clock.
//!
//! A request whose upstream fails is **held** instead of being answered `503` at once: it waits
//! until the upstream answers its health check again, then is sent again on a new connection.
//! The failures:
//!
//! - *unreachable*: connecting failed (the upstream is restarting and does not hold its socket
//!   in the supervisor, or is down);
//! - *died*: a connection that was up broke before the whole answer arrived (the upstream died
//!   with the request in flight, or the connection was a stale one from before a restart).
//!
//! While the upstream is known to be down (a request to it failed and none has succeeded since),
//! new requests are held in the same way before their first try, instead of queueing on a socket
//! nobody accepts on. The health check is polled on new connections, [`pause`]d 10 ms, 20 ms,
//! 40 ms… at most 100 ms apart when it is refused; with a socket held by the supervisor, a check
//! waits in the backlog and is answered as soon as the replacement accepts.
//!
//! A request that was in flight when the upstream **crashed twice** is a suspect, a *poison
//! request*: it is not tried a third time, it is answered `500`, and its key (the normalised
//! request: the path and the body sent upstream) is kept in the [`Quarantine`] for
//! [`HoldPolicy::quarantine`], during which the same request is answered `500` without being
//! sent. One bad URL thus crashes the upstream at most twice per quarantine period, instead of
//! crash-looping it. *Crashed*, not merely *died*: the upstream's health check says how its
//! previous process ended ([`PREVIOUS_EXIT_HEADER`], from what the supervisor tells each new
//! process), and a death that was not a crash (a `kill -9` from outside, a deliberate stop) does
//! not count against the requests that were in flight. An upstream that does not say counts
//! every death as a crash. With holding off there is no health check to ask: a second death is
//! a `503`, never a quarantine. After its first crash a request is tried again *alone* (no other
//! suspect in flight at the same time), so that a second crash is pinned on the request that
//! caused it, not on an innocent one that happened to be in flight with it both times.
//!
//! Holding is bounded twice: in time by [`HoldPolicy::wait`] per outage, counted from the moment
//! a request is held until the upstream answers its health check again (then `503` with
//! `Retry-After`; an upstream that goes down again gives the request another wait, all of them
//! within the request's own deadline), and in number by [`HoldPolicy::queue`], the requests
//! that may be held at once (past it, `503` at once).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// How long a request is held, at most, from its first failure. Variable of the calling server.
pub const ENV_WAIT: &str = "IMAGESERVING_HOLD_WAIT";
/// How many requests may be held at once.
pub const ENV_QUEUE: &str = "IMAGESERVING_HOLD_QUEUE";
/// How long a poison request stays quarantined; `0s` answers it `500` but remembers nothing.
pub const ENV_QUARANTINE: &str = "IMAGESERVING_QUARANTINE";
/// What the supervisor tells each new process of a component about how the previous one ended:
/// `<class>: <how>`, the class one of `crashed`, `killed`, `stopped`, `exited`; unset for the
/// first process.
pub const ENV_PREVIOUS_EXIT: &str = "IMAGESERVING_PREVIOUS_EXIT";
/// The header of a server's health check answer that says how the server's previous process
/// ended: the class of `IMAGESERVING_PREVIOUS_EXIT` (`crashed`, `killed`, `stopped`, `exited`).
pub const PREVIOUS_EXIT_HEADER: &str = "x-imageserving-previous-exit";

/// The default of [`HoldPolicy::wait`].
pub const DEFAULT_WAIT: Duration = Duration::from_secs(2);
/// The default of [`HoldPolicy::queue`].
pub const DEFAULT_QUEUE: usize = 256;
/// The default of [`HoldPolicy::quarantine`].
pub const DEFAULT_QUARANTINE: Duration = Duration::from_secs(600);
/// The most requests kept in quarantine; past it, the oldest is forgotten first. Each entry is
/// a few dozen bytes, and one needs two crashes of the upstream, so this is never reached but
/// by a flood of poison requests.
pub const MAX_QUARANTINED: usize = 4096;

/// The first pause between two refused health checks; it doubles each time.
const FIRST_PAUSE: Duration = Duration::from_millis(10);
/// The longest pause between two health checks.
const MAX_PAUSE: Duration = Duration::from_millis(100);
/// Crashes of the upstream with the request in flight that make the request a suspect.
const DEATHS_OF_A_SUSPECT: u32 = 2;

/// The pause after the `n`-th refused health check in a row (from 1): 10 ms, 20 ms, 40 ms, 80 ms,
/// then 100 ms.
pub fn pause(n: u32) -> Duration {
    let doublings = n.saturating_sub(1).min(16);
    FIRST_PAUSE.saturating_mul(1 << doublings).min(MAX_PAUSE)
}

/// The settings of holding, read by `ps` for `is` and by `is` for `svg`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldPolicy {
    /// How long a failed request is held and tried again, from its first failure. `0s` turns
    /// holding off: an unreachable upstream is a `503` at once, a broken connection is tried
    /// once more.
    pub wait: Duration,
    /// How many requests may be held at once; past it, `503` at once.
    pub queue: usize,
    /// How long a poison request is remembered.
    pub quarantine: Duration,
}

impl Default for HoldPolicy {
    fn default() -> Self {
        HoldPolicy {
            wait: DEFAULT_WAIT,
            queue: DEFAULT_QUEUE,
            quarantine: DEFAULT_QUARANTINE,
        }
    }
}

impl HoldPolicy {
    /// The policy from [`ENV_WAIT`], [`ENV_QUEUE`] and [`ENV_QUARANTINE`], each defaulted when
    /// unset or empty. An unreadable value is an error naming the variable.
    pub fn from_env() -> anyhow::Result<HoldPolicy> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// The policy from the variables `var` gives.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<HoldPolicy> {
        let var = |name: &str| var(name).filter(|value| !value.trim().is_empty());
        let duration = |name: &str, default: Duration| -> anyhow::Result<Duration> {
            var(name).map_or(Ok(default), |value| {
                humantime::parse_duration(value.trim()).with_context(|| {
                    format!("{name}: {value:?} is not a duration such as 2s or 500ms")
                })
            })
        };
        let queue = var(ENV_QUEUE).map_or(Ok(DEFAULT_QUEUE), |value| {
            value
                .trim()
                .parse::<usize>()
                .with_context(|| format!("{ENV_QUEUE}: {value:?} is not a count such as 256"))
        })?;
        Ok(HoldPolicy {
            wait: duration(ENV_WAIT, DEFAULT_WAIT)?,
            queue,
            quarantine: duration(ENV_QUARANTINE, DEFAULT_QUARANTINE)?,
        })
    }
}

/// How one try failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No connection: the upstream is not listening.
    Unreachable,
    /// A connection that was up broke before the whole answer arrived.
    Died,
}

/// What to do after a failed try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Hold the request until the upstream is back (when holding is on), then try again on a
    /// new connection.
    Retry,
    /// Stop: answer `503` with `Retry-After`.
    GiveUp,
}

/// The failed tries of one request so far, and since when it is held.
#[derive(Debug, Default)]
pub struct Attempts {
    /// When the request was first held (or first failed).
    held_since: Option<Instant>,
    /// Tries during which the upstream died.
    deaths: u32,
    /// Whether the last death is not judged yet: crash or not, the upstream's health check
    /// tells once it is back.
    unjudged: bool,
    /// Deaths that were crashes.
    crashes: u32,
}

impl Attempts {
    /// No failure yet.
    pub fn new() -> Attempts {
        Attempts::default()
    }

    /// Marks the request as held from `now`, unless it already is.
    pub fn hold(&mut self, now: Instant) {
        self.held_since.get_or_insert(now);
    }

    /// How much of `wait` is left at `now` (all of it before the request is held).
    pub fn remaining(&self, now: Instant, wait: Duration) -> Duration {
        self.held_since.map_or(wait, |since| {
            wait.saturating_sub(now.saturating_duration_since(since))
        })
    }

    /// Records a try that failed at `now` and says what to do next, holding for at most `wait`.
    /// With no `wait` (holding off), a death is still tried again once, at once: the
    /// connection may have been a stale pooled one.
    pub fn failed(&mut self, failure: Failure, now: Instant, wait: Duration) -> Next {
        self.hold(now);
        if failure == Failure::Died {
            self.deaths += 1;
            if wait.is_zero() {
                return if self.deaths == 1 {
                    Next::Retry
                } else {
                    Next::GiveUp
                };
            }
            self.unjudged = true;
        }
        if self.remaining(now, wait).is_zero() {
            Next::GiveUp
        } else {
            Next::Retry
        }
    }

    /// The upstream is back, and says whether its previous process `crashed`: judges the last
    /// death, if any is unjudged, and ends the current wait. Whether the request is now a poison
    /// request (two crashes).
    pub fn back(&mut self, crashed: bool) -> bool {
        // The wait bounds each outage: if the upstream goes down again, the request may wait
        // for it again (the request's deadline bounds the whole).
        self.held_since = None;
        if std::mem::take(&mut self.unjudged) && crashed {
            self.crashes += 1;
        }
        self.crashes >= DEATHS_OF_A_SUSPECT
    }

    /// Whether the upstream crashed with this request in flight once: it is then tried again
    /// alone, so that a second crash is pinned on it rather than on another request in flight.
    pub fn suspect(&self) -> bool {
        self.crashes > 0
    }

    /// Whether the upstream died with this request in flight at least once.
    pub fn died_once(&self) -> bool {
        self.deaths > 0
    }
}

/// The class of this process's [`ENV_PREVIOUS_EXIT`], read once: what a server's health check
/// sends in [`PREVIOUS_EXIT_HEADER`].
pub fn previous_exit_class() -> Option<&'static str> {
    static CLASS: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    CLASS
        .get_or_init(|| {
            let value = std::env::var(ENV_PREVIOUS_EXIT).ok()?;
            let class = value.split(':').next().unwrap_or_default().trim();
            let known = ["crashed", "killed", "stopped", "exited"].contains(&class);
            known.then(|| class.to_owned())
        })
        .as_deref()
}

/// Whether a previous exit, as a health check's [`PREVIOUS_EXIT_HEADER`] says it, was a crash;
/// no header counts as one.
pub fn crashed(previous_exit: Option<&str>) -> bool {
    !matches!(
        previous_exit.map(str::trim),
        Some("killed" | "stopped" | "exited")
    )
}

/// The poison requests remembered, by key, each until its quarantine ends.
#[derive(Debug)]
pub struct Quarantine {
    /// How long a request stays.
    period: Duration,
    /// Key → end of its quarantine.
    until: Mutex<HashMap<u64, Instant>>,
    /// Keys are hashed with a secret seed, so that nobody can choose a request that collides
    /// with another one to have it refused.
    seed: RandomState,
}

impl Quarantine {
    /// An empty quarantine keeping requests for `period` (`0s`: none).
    pub fn new(period: Duration) -> Quarantine {
        Quarantine {
            period,
            until: Mutex::new(HashMap::new()),
            seed: RandomState::new(),
        }
    }

    /// The key of a request: its path (with the query) and body, as sent upstream.
    pub fn key(&self, path: &str, body: &[u8]) -> u64 {
        self.seed.hash_one((path, body))
    }

    /// Whether `key` is quarantined at `now`.
    pub fn contains(&self, key: u64, now: Instant) -> bool {
        let mut until = self
            .until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match until.get(&key) {
            Some(end) if *end > now => true,
            Some(_) => {
                until.remove(&key);
                false
            }
            None => false,
        }
    }

    /// Quarantines `key` from `now` for the period; the oldest entries make room past
    /// [`MAX_QUARANTINED`].
    pub fn insert(&self, key: u64, now: Instant) {
        if self.period.is_zero() {
            return;
        }
        let mut until = self
            .until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if until.len() >= MAX_QUARANTINED && !until.contains_key(&key) {
            until.retain(|_, end| *end > now);
            while until.len() >= MAX_QUARANTINED {
                let oldest = until.iter().min_by_key(|(_, end)| **end).map(|(k, _)| *k);
                match oldest {
                    Some(oldest) => until.remove(&oldest),
                    None => break,
                };
            }
        }
        until.insert(key, now + self.period);
    }

    /// How many requests are remembered (expired ones included until looked at).
    pub fn len(&self) -> usize {
        self.until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(2);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn pauses_double_up_to_a_tenth_of_a_second() {
        let pauses: Vec<_> = (1..=7).map(pause).collect();
        assert_eq!(
            pauses,
            [ms(10), ms(20), ms(40), ms(80), ms(100), ms(100), ms(100)]
        );
        assert_eq!(pause(u32::MAX), ms(100));
    }

    #[test]
    fn an_unreachable_upstream_is_tried_again_until_the_wait_ends() {
        let t0 = Instant::now();
        let mut attempts = Attempts::new();
        assert_eq!(attempts.remaining(t0, WAIT), WAIT, "not held yet");
        assert_eq!(attempts.failed(Failure::Unreachable, t0, WAIT), Next::Retry);
        assert_eq!(attempts.remaining(t0 + ms(500), WAIT), ms(1500));
        assert_eq!(
            attempts.failed(Failure::Unreachable, t0 + ms(1999), WAIT),
            Next::Retry
        );
        assert_eq!(
            attempts.failed(Failure::Unreachable, t0 + WAIT, WAIT),
            Next::GiveUp
        );
        assert!(!attempts.died_once());
        assert!(!attempts.back(true), "no death, no suspect");
    }

    #[test]
    fn the_wait_counts_from_when_the_request_is_first_held() {
        let t0 = Instant::now();
        let mut attempts = Attempts::new();
        // Held before its first try (the upstream was known to be down)…
        attempts.hold(t0);
        attempts.hold(t0 + ms(700));
        assert_eq!(attempts.remaining(t0 + ms(700), WAIT), ms(1300));
        // …so a failure after the wait gives up at once.
        assert_eq!(
            attempts.failed(Failure::Unreachable, t0 + ms(2100), WAIT),
            Next::GiveUp
        );
    }

    #[test]
    fn two_crashes_with_the_request_in_flight_make_a_suspect() {
        let t0 = Instant::now();
        let mut attempts = Attempts::new();
        assert_eq!(attempts.failed(Failure::Died, t0, WAIT), Next::Retry);
        assert!(attempts.died_once());
        assert!(!attempts.suspect(), "not judged yet");
        assert!(!attempts.back(true), "one crash");
        assert!(attempts.suspect());
        // The replacement is not listening yet: no new death to judge.
        assert_eq!(
            attempts.failed(Failure::Unreachable, t0 + ms(1), WAIT),
            Next::Retry
        );
        assert!(!attempts.back(true));
        assert_eq!(
            attempts.failed(Failure::Died, t0 + ms(40), WAIT),
            Next::Retry
        );
        assert!(attempts.back(true), "two crashes");
    }

    #[test]
    fn each_outage_gets_its_own_wait() {
        let t0 = Instant::now();
        let mut attempts = Attempts::new();
        attempts.failed(Failure::Died, t0, WAIT);
        assert_eq!(attempts.remaining(t0 + ms(1500), WAIT), ms(500));
        assert!(!attempts.back(false));
        // Down again 1.8 s after the first hold: a whole wait again.
        assert_eq!(
            attempts.failed(Failure::Died, t0 + ms(1800), WAIT),
            Next::Retry
        );
        assert_eq!(attempts.remaining(t0 + ms(1800), WAIT), WAIT);
    }

    #[test]
    fn deaths_that_were_not_crashes_do_not_make_a_suspect() {
        let t0 = Instant::now();
        let mut attempts = Attempts::new();
        for n in 0..5 {
            assert_eq!(
                attempts.failed(Failure::Died, t0 + ms(n * 100), WAIT),
                Next::Retry
            );
            assert!(!attempts.back(false), "killed from outside, {n}");
            assert!(!attempts.suspect());
        }
        // One crash among them is one crash.
        attempts.failed(Failure::Died, t0 + ms(600), WAIT);
        assert!(!attempts.back(true));
        // The wait still bounds each outage.
        attempts.failed(Failure::Died, t0 + ms(700), WAIT);
        assert_eq!(
            attempts.failed(Failure::Unreachable, t0 + ms(700) + WAIT, WAIT),
            Next::GiveUp
        );
    }

    #[test]
    fn the_previous_exit_header_says_what_was_a_crash() {
        assert!(crashed(None), "an upstream that does not say");
        assert!(crashed(Some("crashed")));
        assert!(crashed(Some("something new")));
        for other in ["killed", "stopped", "exited", " killed "] {
            assert!(!crashed(Some(other)), "{other}");
        }
    }

    #[test]
    fn without_a_wait_a_death_is_tried_again_once_and_never_makes_a_suspect() {
        let t0 = Instant::now();
        let mut refused = Attempts::new();
        assert_eq!(
            refused.failed(Failure::Unreachable, t0, Duration::ZERO),
            Next::GiveUp
        );
        let mut died = Attempts::new();
        assert_eq!(died.failed(Failure::Died, t0, Duration::ZERO), Next::Retry);
        assert_eq!(
            died.failed(Failure::Unreachable, t0, Duration::ZERO),
            Next::GiveUp
        );
        let mut twice = Attempts::new();
        assert_eq!(twice.failed(Failure::Died, t0, Duration::ZERO), Next::Retry);
        assert_eq!(
            twice.failed(Failure::Died, t0, Duration::ZERO),
            Next::GiveUp
        );
        assert!(!twice.back(true), "deaths without holding are never judged");
    }

    #[test]
    fn quarantined_keys_expire_and_the_quarantine_is_bounded() {
        let t0 = Instant::now();
        let quarantine = Quarantine::new(Duration::from_secs(60));
        let bad = quarantine.key("/render", b"{\"object\":\"bad\"}");
        let good = quarantine.key("/render", b"{\"object\":\"good\"}");
        assert_ne!(bad, good);
        assert_eq!(bad, quarantine.key("/render", b"{\"object\":\"bad\"}"));
        assert!(!quarantine.contains(bad, t0));
        quarantine.insert(bad, t0);
        assert!(quarantine.contains(bad, t0 + Duration::from_secs(59)));
        assert!(!quarantine.contains(good, t0 + Duration::from_secs(1)));
        assert!(!quarantine.contains(bad, t0 + Duration::from_secs(60)));
        assert!(quarantine.is_empty(), "an expired key is forgotten");

        for n in 0..MAX_QUARANTINED as u64 + 10 {
            quarantine.insert(n, t0 + ms(n));
        }
        assert_eq!(quarantine.len(), MAX_QUARANTINED);
        assert!(!quarantine.contains(0, t0 + ms(1)), "the oldest made room");
        assert!(quarantine.contains(MAX_QUARANTINED as u64 + 9, t0 + ms(1)));

        let off = Quarantine::new(Duration::ZERO);
        off.insert(bad, t0);
        assert!(!off.contains(bad, t0));
    }

    #[test]
    fn the_policy_reads_its_variables() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| (*value).to_owned())
            }
        };
        assert_eq!(
            HoldPolicy::from_vars(vars(&[])).unwrap(),
            HoldPolicy::default()
        );
        assert_eq!(
            HoldPolicy::from_vars(vars(&[
                (ENV_WAIT, "500ms"),
                (ENV_QUEUE, " 8 "),
                (ENV_QUARANTINE, "0s"),
            ]))
            .unwrap(),
            HoldPolicy {
                wait: ms(500),
                queue: 8,
                quarantine: Duration::ZERO,
            }
        );
        let error = HoldPolicy::from_vars(vars(&[(ENV_QUEUE, "many")])).unwrap_err();
        assert!(format!("{error:#}").contains(ENV_QUEUE), "{error:#}");
        let error = HoldPolicy::from_vars(vars(&[(ENV_WAIT, "soon")])).unwrap_err();
        assert!(format!("{error:#}").contains(ENV_WAIT), "{error:#}");
    }
}

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
//! A request that was in flight when the upstream died **twice** is a suspect, a *poison
//! request*: it is not tried a third time, it is answered `500`, and its key (the normalised
//! request: the path and the body sent upstream) is kept in the [`Quarantine`] for
//! [`HoldPolicy::quarantine`], during which the same request is answered `500` without being
//! sent. One bad URL thus crashes the upstream at most twice per quarantine period, instead of
//! crash-looping it.
//!
//! Holding is bounded twice: in time by [`HoldPolicy::wait`], counted from the moment a request
//! is first held (then `503` with `Retry-After`), and in number by [`HoldPolicy::queue`], the
//! requests that may be held at once (past it, `503` at once).

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
/// Deaths of the upstream with the request in flight that make the request a suspect.
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
    /// The upstream died twice with this request in flight: quarantine it, answer `500`.
    Poison,
}

/// The failed tries of one request so far, and since when it is held.
#[derive(Debug, Default)]
pub struct Attempts {
    /// When the request was first held (or first failed).
    held_since: Option<Instant>,
    /// Tries during which the upstream died.
    deaths: u32,
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
        match failure {
            Failure::Died => {
                self.deaths += 1;
                if self.deaths >= DEATHS_OF_A_SUSPECT {
                    Next::Poison
                } else if self.deaths == 1 && wait.is_zero() {
                    Next::Retry
                } else if self.remaining(now, wait).is_zero() {
                    Next::GiveUp
                } else {
                    Next::Retry
                }
            }
            Failure::Unreachable if self.remaining(now, wait).is_zero() => Next::GiveUp,
            Failure::Unreachable => Next::Retry,
        }
    }

    /// Whether the upstream died with this request in flight at least once.
    pub fn died_once(&self) -> bool {
        self.deaths > 0
    }
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
    fn a_death_is_tried_again_and_a_second_one_makes_a_suspect() {
        let t0 = Instant::now();
        let mut attempts = Attempts::new();
        assert_eq!(attempts.failed(Failure::Died, t0, WAIT), Next::Retry);
        assert!(attempts.died_once());
        // The replacement is not listening yet.
        assert_eq!(
            attempts.failed(Failure::Unreachable, t0 + ms(1), WAIT),
            Next::Retry
        );
        // Dead again with the request in flight, even after the wait: a suspect.
        assert_eq!(
            attempts.failed(Failure::Died, t0 + ms(3000), WAIT),
            Next::Poison
        );
    }

    #[test]
    fn without_a_wait_only_a_death_is_tried_again_once() {
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
            Next::Poison
        );
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

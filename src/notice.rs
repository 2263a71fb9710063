//! Warnings about a condition that can repeat for as long as it lasts (a connection cap reached,
//! `accept` failing for want of file descriptors), written at most once per interval with the
//! number of times they stand for: the component servers' HTTP skeleton and the daemon's
//! control socket share it.

use std::time::{Duration, Instant};

/// The shortest interval between two warnings about one repeating condition.
pub const NOTICE_INTERVAL: Duration = Duration::from_secs(60);

/// Rate-limits a warning about a condition that can repeat for as long as it lasts: the first
/// occurrence is reported, then at most one per interval.
#[derive(Debug)]
pub struct Notice {
    /// The shortest time between two reports.
    interval: Duration,
    /// When the last report was made.
    last: Option<Instant>,
    /// Occurrences since the last report.
    unreported: u64,
}

impl Notice {
    /// A notice that reports at most once per `interval`.
    pub fn new(interval: Duration) -> Notice {
        Notice {
            interval,
            last: None,
            unreported: 0,
        }
    }

    /// Counts one occurrence at `now`; when it is time to report, answers how many occurrences
    /// the report stands for (this one included).
    pub fn occurred(&mut self, now: Instant) -> Option<u64> {
        self.unreported += 1;
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < self.interval)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_is_given_first_then_at_most_once_per_interval() {
        let mut notice = Notice::new(Duration::from_secs(60));
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        assert_eq!(notice.occurred(at(0)), Some(1));
        assert_eq!(notice.occurred(at(1)), None);
        assert_eq!(notice.occurred(at(59)), None);
        assert_eq!(notice.occurred(at(60)), Some(3));
        assert_eq!(notice.occurred(at(61)), None);
        assert_eq!(notice.occurred(at(200)), Some(2));
    }
}

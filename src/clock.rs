//! Time as the watch loop sees it: read once per turn, then passed down. In-memory deadlines
//! are instants on tokio's clock (paused in tests); only what is persisted uses wall time.

use std::time::Duration;

use jiff::Timestamp;
use tokio::time::Instant;

/// A deadline so far ahead that it never comes; where a duration would overflow the clock.
const FAR: Duration = Duration::from_secs(100 * 365 * 86_400);

/// One moment on both clocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// tokio's monotonic clock: backoff, verification, polls, flap windows.
    pub at: Instant,
    /// The wall clock: persisted episodes, critical windows, alert timestamps.
    pub wall: Timestamp,
}

impl Now {
    /// The only place the watch loop reads the clocks.
    pub fn read() -> Now {
        Now {
            at: Instant::now(),
            wall: Timestamp::now(),
        }
    }

    /// `d` from now; never overflows.
    pub fn after(&self, d: Duration) -> Instant {
        later(self.at, d)
    }

    /// The instant at which the wall clock reads `t`, assuming it keeps pace; a time already
    /// past is now.
    pub fn instant_of(&self, t: Timestamp) -> Instant {
        let ahead = t.duration_since(self.wall);
        match Duration::try_from(ahead) {
            Ok(d) => self.after(d),
            Err(_) => self.at,
        }
    }

    /// Both clocks moved on by `d`: how a test or a simulation steps time.
    pub fn advanced(&self, d: Duration) -> Now {
        Now {
            at: self.after(d),
            wall: add(self.wall, d),
        }
    }
}

/// `at + d`, or a far-away instant where that would overflow.
pub fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d)
        .or_else(|| at.checked_add(FAR))
        .unwrap_or(at)
}

/// Saturating: a duration too large for the calendar means "never" in practice.
pub fn add(t: Timestamp, d: Duration) -> Timestamp {
    let d = jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX);
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_never_overflow() {
        let now = Now {
            at: Instant::now(),
            wall: Timestamp::from_second(1_800_000_000).unwrap(),
        };
        assert!(now.after(Duration::MAX) > now.at);
        assert_eq!(add(now.wall, Duration::MAX), Timestamp::MAX);
        let later = now.advanced(Duration::from_secs(90));
        assert_eq!(later.at - now.at, Duration::from_secs(90));
        assert_eq!(now.instant_of(later.wall) - now.at, Duration::from_secs(90));
        assert_eq!(later.instant_of(now.wall), later.at, "the past is now");
    }

    /// Whatever a config or a state file holds, no deadline computation panics: the far end
    /// of either clock is "never", the near end is "now".
    #[test]
    fn extreme_instants_and_durations_saturate() {
        let now = Now {
            at: Instant::now(),
            wall: Timestamp::now(),
        };
        for d in [Duration::ZERO, Duration::from_secs(u64::MAX), Duration::MAX] {
            assert!(now.after(d) >= now.at);
            assert!(now.advanced(d).wall >= now.wall);
            assert!(later(now.after(Duration::MAX), d) >= now.at);
            assert!(add(Timestamp::MAX, d) == Timestamp::MAX);
        }
        assert!(now.instant_of(Timestamp::MAX) > now.at);
        assert_eq!(now.instant_of(Timestamp::MIN), now.at);
        let edge = Now {
            at: now.at,
            wall: Timestamp::MAX,
        };
        assert_eq!(edge.advanced(Duration::MAX).wall, Timestamp::MAX);
        assert_eq!(edge.instant_of(Timestamp::MIN), now.at);
    }
}

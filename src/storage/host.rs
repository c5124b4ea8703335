//! What the log takes from the machine it runs on: a disk and a clock. Production code gets
//! [`Host::os`] (the real file system and the wall clock); the deterministic simulation gets a
//! simulated disk and a clock it moves by hand, so one seed decides everything.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use crate::disk::{self, DiskRef};

/// Milliseconds since the Unix epoch, from the wall clock or from a simulation.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> i64 + Send + Sync>);

impl Clock {
    pub fn system() -> Clock {
        Clock(Arc::new(crate::partition::now_ms))
    }

    /// A clock that reads `time` (which the caller moves).
    pub fn manual(time: Arc<AtomicI64>) -> Clock {
        Clock(Arc::new(move || time.load(Ordering::SeqCst)))
    }

    pub fn now_ms(&self) -> i64 {
        (self.0)()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Clock({})", self.now_ms())
    }
}

#[derive(Debug, Clone)]
pub struct Host {
    pub disk: DiskRef,
    pub clock: Clock,
    /// The append clock every partition of this process stamps its batches from.
    pub append_clock: AppendClock,
}

impl Host {
    pub fn os() -> Host {
        Host::new(disk::os(), Clock::system())
    }

    /// A host with its own append clock (one per writer process).
    pub fn new(disk: DiskRef, clock: Clock) -> Host {
        Host { disk, clock, append_clock: AppendClock::default() }
    }
}

/// How far behind the last append time the wall clock must be to count as having stepped
/// back (see [`AppendClock::next`]).
pub const CLOCK_STEP_MS: i64 = 1_000;

/// Hands out append times: the wall clock, clamped so that append times never decrease —
/// whatever the clock does (NTP steps, a VM restored from a snapshot) — across every partition
/// of the writer, not only within one. So when an append is acknowledged before another one
/// starts, in any partitions, the later one's append time is not smaller, and an as-of cut
/// taken at any instant is consistent across partitions and topics. While the clock is
/// behind, batches get the last append time handed out.
#[derive(Debug, Clone)]
pub struct AppendClock {
    last: Arc<AtomicI64>,
    behind: Arc<AtomicBool>,
}

impl Default for AppendClock {
    fn default() -> Self {
        AppendClock { last: Arc::new(AtomicI64::new(i64::MIN)), behind: Arc::default() }
    }
}

impl AppendClock {
    /// The append time for an append at `now_ms`, and whether the clock just fell behind the
    /// last append time by [`CLOCK_STEP_MS`] or more (to warn once per episode). Smaller gaps
    /// are concurrent appends that read the clock in one order and took the log in the other:
    /// under load they happen all the time (a warning each flooded the log) and say nothing
    /// about the clock. Either way the append time never goes back.
    pub fn next(&self, now_ms: i64) -> (i64, bool) {
        let last = self.last.fetch_max(now_ms, Ordering::SeqCst);
        if now_ms < last {
            let stepped_back = last - now_ms >= CLOCK_STEP_MS;
            (last, stepped_back && !self.behind.swap(true, Ordering::SeqCst))
        } else {
            self.behind.store(false, Ordering::SeqCst);
            (now_ms, false)
        }
    }

    /// Makes every later append time at least `appended` (an append time the log holds).
    pub fn observe(&self, appended: i64) {
        self.last.fetch_max(appended, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_step_back_is_told_once_and_concurrent_reorderings_not_at_all() {
        let clock = AppendClock::default();
        let steps: Vec<(i64, bool)> = [1_000, 990, 1_005, 0, 1, 2_000, 500, 1_990].map(|t| clock.next(t)).to_vec();
        let want = [
            (1_000, false),
            (1_000, false), // 10 ms: two appends that read the clock in the other order
            (1_005, false),
            (1_005, true),  // stepped back
            (1_005, false), // the same episode
            (2_000, false), // caught up
            (2_000, true),
            (2_000, false),
        ];
        assert_eq!(steps, want);
    }
}

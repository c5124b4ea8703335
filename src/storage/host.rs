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
    /// last append time (to warn once per episode).
    pub fn next(&self, now_ms: i64) -> (i64, bool) {
        let last = self.last.fetch_max(now_ms, Ordering::SeqCst);
        if now_ms < last {
            (last, !self.behind.swap(true, Ordering::SeqCst))
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

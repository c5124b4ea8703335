//! What the log takes from the machine it runs on: a disk and a clock. Production code gets
//! [`Host::os`] (the real file system and the wall clock); the deterministic simulation gets a
//! simulated disk and a clock it moves by hand, so one seed decides everything.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

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
}

impl Host {
    pub fn os() -> Host {
        Host { disk: disk::os(), clock: Clock::system() }
    }
}

//! Blocking work (disk reads, hashing, compression, decompression) run from async code.
//!
//! On a multi-thread runtime (every runtime tierlog's binary builds) the work goes to tokio's
//! blocking pool, so the async workers keep serving. On a current-thread runtime it runs
//! inline. That is the deterministic simulation's runtime, with paused time: while a task
//! waits on the blocking pool the runtime looks idle, and the paused clock jumps to the next
//! timer (a prefetch's timeout, a simulated latency), so a run would depend on how fast the
//! machine did the work. Inline, it cannot.

use tokio::runtime::{Handle, RuntimeFlavor};

/// Runs `work` off the async workers where there are any, inline otherwise. A panic in
/// `work` resumes in the caller.
pub async fn run<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    if Handle::current().runtime_flavor() == RuntimeFlavor::CurrentThread {
        return work();
    }
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("blocking task did not finish: {e}"),
    }
}

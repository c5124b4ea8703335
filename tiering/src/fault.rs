//! An object store wrapper that injects faults and counts requests, for tests.
//!
//! Faults: failing PUTs (before storing), PUTs that store the object and then report a
//! timeout (the ambiguous case object_store does not retry), failing GETs, and added latency.
//! [`Faults::seeded`] draws the same faults at random from a seed, for the deterministic
//! simulation: one seed, one sequence of failures for the same sequence of requests.
//! Counters: requests by kind and bytes fetched, so tests can prove request budgets.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult,
};

/// Counts of requests that reached the wrapper.
#[derive(Debug, Default)]
pub struct Counters {
    pub puts: AtomicU64,
    pub gets: AtomicU64,
    pub heads: AtomicU64,
    pub lists: AtomicU64,
    pub deletes: AtomicU64,
    /// Multipart uploads started (also counted in `puts`).
    pub multipart_uploads: AtomicU64,
}

impl Counters {
    pub fn snapshot(&self) -> [u64; 5] {
        [&self.puts, &self.gets, &self.heads, &self.lists, &self.deletes].map(|c| c.load(Ordering::SeqCst))
    }
}

/// What to inject. Each count is consumed as faults fire.
#[derive(Debug, Default)]
pub struct Faults {
    /// The next N PUTs fail without storing anything.
    pub fail_puts: AtomicU64,
    /// The next N PUTs store the object, then report a timeout.
    pub timeout_after_store_puts: AtomicU64,
    /// Every PUT whose key contains this text fails (a "hard" failure), when set.
    pub fail_puts_matching: std::sync::Mutex<Option<String>>,
    /// The next N GETs fail.
    pub fail_gets: AtomicU64,
    /// Added to every request.
    pub latency_ms: AtomicU64,
    /// Random faults from a seed, when set.
    pub seeded: std::sync::Mutex<Option<SeededFaults>>,
}

/// Probabilities (parts per million per request) of faults drawn from a seeded generator.
#[derive(Debug)]
pub struct SeededFaults {
    rng: rand::rngs::StdRng,
    pub put_fail_per_million: u32,
    pub put_timeout_after_store_per_million: u32,
    pub get_fail_per_million: u32,
    pub head_fail_per_million: u32,
    pub delete_fail_per_million: u32,
}

impl SeededFaults {
    pub fn new(seed: u64, per_million: u32) -> Self {
        use rand::SeedableRng;
        SeededFaults {
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            put_fail_per_million: per_million,
            put_timeout_after_store_per_million: per_million,
            get_fail_per_million: per_million,
            head_fail_per_million: per_million,
            delete_fail_per_million: per_million,
        }
    }
}

#[derive(Clone, Copy)]
enum Draw {
    PutFail,
    PutTimeoutAfterStore,
    GetFail,
    HeadFail,
    DeleteFail,
}

impl Faults {
    fn draw(&self, what: Draw) -> bool {
        use rand::Rng;
        let mut seeded = self.seeded.lock().expect("fault lock");
        let Some(s) = seeded.as_mut() else { return false };
        let per_million = match what {
            Draw::PutFail => s.put_fail_per_million,
            Draw::PutTimeoutAfterStore => s.put_timeout_after_store_per_million,
            Draw::GetFail => s.get_fail_per_million,
            Draw::HeadFail => s.head_fail_per_million,
            Draw::DeleteFail => s.delete_fail_per_million,
        };
        s.rng.random_range(0..1_000_000u32) < per_million
    }
}

#[derive(Debug)]
pub struct FaultStore {
    inner: Arc<dyn ObjectStore>,
    pub faults: Arc<Faults>,
    pub counters: Arc<Counters>,
}

impl FaultStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        FaultStore { inner, faults: Arc::default(), counters: Arc::default() }
    }

    async fn delay(&self) {
        let ms = self.faults.latency_ms.load(Ordering::SeqCst);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
}

fn take(counter: &AtomicU64) -> bool {
    counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
}

fn injected(what: &str) -> object_store::Error {
    object_store::Error::Generic { store: "FaultStore", source: format!("injected fault: {what}").into() }
}

impl fmt::Display for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.counters.puts.fetch_add(1, Ordering::SeqCst);
        self.delay().await;
        let hard = self
            .faults
            .fail_puts_matching
            .lock()
            .expect("fault lock")
            .as_ref()
            .is_some_and(|m| location.as_ref().contains(m.as_str()));
        if hard || take(&self.faults.fail_puts) || self.faults.draw(Draw::PutFail) {
            return Err(injected("PUT failed"));
        }
        let result = self.inner.put_opts(location, payload, opts).await?;
        if take(&self.faults.timeout_after_store_puts) || self.faults.draw(Draw::PutTimeoutAfterStore) {
            return Err(injected("PUT timed out (after the object was stored)"));
        }
        Ok(result)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.counters.puts.fetch_add(1, Ordering::SeqCst);
        self.counters.multipart_uploads.fetch_add(1, Ordering::SeqCst);
        self.delay().await;
        if take(&self.faults.fail_puts) || self.faults.draw(Draw::PutFail) {
            return Err(injected("multipart PUT failed"));
        }
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        if options.head {
            self.counters.heads.fetch_add(1, Ordering::SeqCst);
        } else {
            self.counters.gets.fetch_add(1, Ordering::SeqCst);
        }
        self.delay().await;
        let drawn = self.faults.draw(if options.head { Draw::HeadFail } else { Draw::GetFail });
        if take(&self.faults.fail_gets) || drawn {
            return Err(injected("GET failed"));
        }
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.counters.deletes.fetch_add(1, Ordering::SeqCst);
        if self.faults.draw(Draw::DeleteFail) {
            use futures::StreamExt;
            return locations.map(|_| Err(injected("DELETE failed"))).boxed();
        }
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.counters.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.counters.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

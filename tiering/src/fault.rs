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
use futures::future::BoxFuture;
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
    /// The next N DELETEs fail without deleting anything.
    pub fail_deletes: AtomicU64,
    /// Added to every request.
    pub latency_ms: AtomicU64,
    /// Random faults from a seed, when set.
    pub seeded: std::sync::Mutex<Option<SeededFaults>>,
    /// Seeded faults (errors and stale LISTs) are not drawn while set; the simulated clock
    /// still runs, so objects keep simulated stamps.
    pub paused: std::sync::atomic::AtomicBool,
}

/// Probabilities (parts per million per request) of faults drawn from a seeded generator,
/// and, for the simulation, a server clock: every request moves `clock` on by a random
/// latency (now and then a long stall), and objects are stamped with that clock's time
/// instead of the wall clock's, so object ages follow simulated time.
#[derive(Debug)]
pub struct SeededFaults {
    rng: rand::rngs::StdRng,
    pub put_fail_per_million: u32,
    pub put_timeout_after_store_per_million: u32,
    pub get_fail_per_million: u32,
    pub head_fail_per_million: u32,
    pub delete_fail_per_million: u32,
    /// The simulation's clock (ms since the epoch), moved by requests.
    pub clock: Option<Arc<std::sync::atomic::AtomicI64>>,
    pub latency_ms_max: u64,
    pub stall_per_million: u32,
    pub stall_ms: u64,
    /// A LIST may leave out an object stored less than `list_lag_ms` ago (simulated time),
    /// with this probability per object: the staleness some S3-compatible stores show.
    pub list_stale_per_million: u32,
    pub list_lag_ms: i64,
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
            clock: None,
            latency_ms_max: 0,
            stall_per_million: 0,
            stall_ms: 0,
            list_stale_per_million: 0,
            list_lag_ms: 0,
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
    /// Moves the simulated clock on by one request's latency; returns the time the request
    /// started (objects are stamped with it: `last_modified` is never later than a PUT's start,
    /// the assumption scrub's age rule is checked against).
    fn tick(&self) -> Option<i64> {
        use rand::Rng;
        let mut seeded = self.seeded.lock().expect("fault lock");
        let s = seeded.as_mut()?;
        let clock = s.clock.clone()?;
        let mut ms = s.rng.random_range(0..=s.latency_ms_max);
        if !self.paused.load(Ordering::SeqCst) && s.rng.random_range(0..1_000_000u32) < s.stall_per_million {
            ms += s.stall_ms;
        }
        Some(clock.fetch_add(ms as i64, Ordering::SeqCst))
    }

    /// Of the objects stamped at `stamps`, those a stale LIST leaves out this time.
    fn stale(&self, stamps: &std::collections::HashMap<Path, chrono::DateTime<chrono::Utc>>) -> Vec<Path> {
        use rand::Rng;
        let mut seeded = self.seeded.lock().expect("fault lock");
        let Some(s) = seeded.as_mut().filter(|_| !self.paused.load(Ordering::SeqCst)) else { return Vec::new() };
        let Some(now) = s.clock.as_ref().map(|c| c.load(Ordering::SeqCst)) else { return Vec::new() };
        let mut recent: Vec<&Path> =
            stamps.iter().filter(|(_, t)| now - t.timestamp_millis() < s.list_lag_ms).map(|(p, _)| p).collect();
        recent.sort(); // a HashMap's order differs per run; the draws must not
        recent.into_iter().filter(|_| s.rng.random_range(0..1_000_000u32) < s.list_stale_per_million).cloned().collect()
    }

    fn draw(&self, what: Draw) -> bool {
        use rand::Rng;
        let mut seeded = self.seeded.lock().expect("fault lock");
        let Some(s) = seeded.as_mut().filter(|_| !self.paused.load(Ordering::SeqCst)) else { return false };
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

/// Runs before a PUT of `location`; an error fails the PUT before anything is stored.
pub type BeforePut = Arc<dyn Fn(&Path) -> BoxFuture<'static, object_store::Result<()>> + Send + Sync>;
/// Runs after a PUT of `location` stored its object.
pub type AfterPut = Arc<dyn Fn(&Path) + Send + Sync>;

/// Code a test runs around requests: to hold a PUT in flight, move a clock while it is, fail
/// it, or act between a LIST and what follows it.
#[derive(Default)]
pub struct Hooks {
    pub before_put: Option<BeforePut>,
    pub after_put: Option<AfterPut>,
    /// Runs once, after the first LIST has been read to its end.
    pub after_first_list: Option<BoxFuture<'static, ()>>,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("before_put", &self.before_put.is_some())
            .field("after_put", &self.after_put.is_some())
            .field("after_first_list", &self.after_first_list.is_some())
            .finish()
    }
}

#[derive(Debug)]
pub struct FaultStore {
    inner: Arc<dyn ObjectStore>,
    pub faults: Arc<Faults>,
    pub counters: Arc<Counters>,
    pub hooks: std::sync::Mutex<Hooks>,
    /// Simulated `last_modified` of objects written while a simulated clock ran.
    stamps: std::sync::Mutex<std::collections::HashMap<Path, chrono::DateTime<chrono::Utc>>>,
}

impl FaultStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        FaultStore {
            inner,
            faults: Arc::default(),
            counters: Arc::default(),
            hooks: Default::default(),
            stamps: Default::default(),
        }
    }

    /// Whether the first LIST's hook is still waiting to run.
    pub fn list_hook_pending(&self) -> bool {
        self.hooks.lock().expect("hook lock").after_first_list.is_some()
    }

    async fn before_put(&self, location: &Path) -> object_store::Result<()> {
        let hook = self.hooks.lock().expect("hook lock").before_put.clone();
        match hook {
            Some(hook) => hook(location).await,
            None => Ok(()),
        }
    }

    fn after_put(&self, location: &Path) {
        let hook = self.hooks.lock().expect("hook lock").after_put.clone();
        if let Some(hook) = hook {
            hook(location);
        }
    }

    fn stamp(&self, location: &Path, now_ms: Option<i64>) {
        if let Some(time) = now_ms.and_then(chrono::DateTime::from_timestamp_millis) {
            self.stamps.lock().expect("stamp lock").insert(location.clone(), time);
        }
    }

    /// The object's simulated modification time, where it has one.
    fn restamp(&self, mut meta: ObjectMeta) -> ObjectMeta {
        if let Some(time) = self.stamps.lock().expect("stamp lock").get(&meta.location) {
            meta.last_modified = *time;
        }
        meta
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
        self.before_put(location).await?;
        let now = self.faults.tick();
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
        self.stamp(location, now);
        self.after_put(location);
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
        self.before_put(location).await?;
        // Multipart objects are stamped when the upload starts, as S3 does.
        let now = self.faults.tick();
        self.stamp(location, now);
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
        self.faults.tick();
        let drawn = self.faults.draw(if options.head { Draw::HeadFail } else { Draw::GetFail });
        if take(&self.faults.fail_gets) || drawn {
            return Err(injected("GET failed"));
        }
        let mut result = self.inner.get_opts(location, options).await?;
        result.meta = self.restamp(result.meta);
        Ok(result)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.counters.deletes.fetch_add(1, Ordering::SeqCst);
        self.faults.tick();
        if take(&self.faults.fail_deletes) || self.faults.draw(Draw::DeleteFail) {
            use futures::StreamExt;
            return locations.map(|_| Err(injected("DELETE failed"))).boxed();
        }
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        use futures::StreamExt;
        self.counters.lists.fetch_add(1, Ordering::SeqCst);
        self.faults.tick();
        let stamps = self.stamps.lock().expect("stamp lock").clone();
        let stale = self.faults.stale(&stamps);
        let after = self.hooks.lock().expect("hook lock").after_first_list.take();
        let after = futures::stream::iter(after).then(|hook| hook).filter_map(|()| futures::future::ready(None));
        self.inner
            .list(prefix)
            .chain(after)
            .filter(move |meta| futures::future::ready(!meta.as_ref().is_ok_and(|m| stale.contains(&m.location))))
            .map(move |meta| {
                meta.map(|mut m| {
                    if let Some(time) = stamps.get(&m.location) {
                        m.last_modified = *time;
                    }
                    m
                })
            })
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.counters.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

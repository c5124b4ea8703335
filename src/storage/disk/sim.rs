//! An in-memory [`Disk`] with crash semantics and seeded faults, for the deterministic
//! simulation (`tests/simulation.rs`). Everything it does is decided by its seed.
//!
//! The model, kept close to what Linux and ext4/xfs actually do:
//! - Each file has the bytes the running process sees and the bytes that are durable. A
//!   successful `sync_data` makes the former durable.
//! - Directory entries (creations, renames, removals) are durable only after `sync_dir` of
//!   their directory; at a crash, the durable namespace comes back. Directories themselves are
//!   durable once created (a simplification: the log creates them once, up front).
//! - At a crash ([`SimDisk::crash`]), each file keeps its durable bytes plus a random prefix of
//!   its unsynced tail (a torn write), or a random choice between an unsynced truncation and
//!   the old length.
//! - A failed fsync (the "fsyncgate" case) reports an error once; the unsynced bytes stay
//!   readable from the cache but are marked lost: even a later *successful* fsync persists
//!   zeros in their place, as Linux does after writeback errors.
//! - A write can stop part-way with ENOSPC, having written a random prefix.
//! - [`SimDisk::flip_bit`] damages one durable byte (a bad sector that still reads).
//! - [`SimDisk::crash_after`] arms a power cut after N more operations: from then on, every
//!   operation fails without effect until [`SimDisk::crash`] resolves the crash, so a crash can
//!   land between any two I/O calls inside a library call, not only between calls.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Disk, DiskFile, FileRef};

/// A small deterministic generator (SplitMix64): the same seed gives the same stream on every
/// machine, which is all the simulation needs from randomness.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    pub fn new(seed: u64) -> Self {
        SimRng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "empty range");
        self.next_u64() % n
    }

    /// True with probability `per_million / 1_000_000`.
    pub fn chance(&mut self, per_million: u32) -> bool {
        self.below(1_000_000) < u64::from(per_million)
    }
}

/// Fault probabilities, in parts per million per operation.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiskFaults {
    /// An append writes a random prefix, then fails with ENOSPC.
    pub enospc_per_million: u32,
    /// An fsync fails with EIO and the page cache forgets the unsynced bytes.
    pub fsync_error_per_million: u32,
}

#[derive(Debug, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// Ranges whose cached bytes were never written back (failed fsync): they read as zeros
    /// once the cache is gone, whatever later fsyncs report.
    lost: Vec<(usize, usize)>,
    mtime_ms: i64,
}

impl Inode {
    /// What the medium holds for `bytes`: lost ranges read as zeros.
    fn persisted(&self, bytes: &[u8]) -> Vec<u8> {
        let mut out = bytes.to_vec();
        for &(from, to) in &self.lost {
            let to = to.min(out.len());
            if from < to {
                out[from..to].fill(0);
            }
        }
        out
    }
}

#[derive(Debug)]
struct State {
    rng: SimRng,
    faults: DiskFaults,
    now_ms: i64,
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    /// What the running process sees.
    names: BTreeMap<PathBuf, u64>,
    /// What a crash brings back.
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    /// Incremented by every crash: handles from before it are dead.
    generation: u64,
    /// Operations left before the power cut, when one is armed.
    crash_countdown: Option<u64>,
    /// The power is off: every operation fails until `crash` resolves it.
    dead: bool,
    /// Operations performed, for the trace.
    ops: u64,
    /// Appends (resp. fsyncs) left before one fails for sure, for targeted tests.
    append_countdown: Option<u64>,
    sync_countdown: Option<u64>,
    /// File fsyncs that fail in a row once `sync_countdown` runs out.
    sync_failures: u64,
    dir_sync_countdown: Option<u64>,
    /// Directories created and directories fsynced, for tests of directory durability.
    dirs_created: Vec<PathBuf>,
    dirs_synced: Vec<PathBuf>,
    /// Run (without the disk's lock) right before the next file fsync.
    before_sync: Option<SyncHook>,
    /// File fsyncs attempted.
    file_syncs: u64,
}

/// A callback run right before a file fsync (a test looks at the disk at that moment).
pub struct SyncHook(pub Box<dyn FnOnce() + Send>);

impl std::fmt::Debug for SyncHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncHook")
    }
}

/// The simulated disk. Cloning shares it.
#[derive(Debug, Clone)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

fn dead_error() -> io::Error {
    io::Error::other("simulated power loss: the process is dead")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{}: no such file (simulated)", path.display()))
}

impl SimDisk {
    pub fn new(seed: u64, faults: DiskFaults) -> Self {
        let state = State {
            rng: SimRng::new(seed),
            faults,
            now_ms: 0,
            inodes: BTreeMap::new(),
            next_inode: 1,
            names: BTreeMap::new(),
            durable_names: BTreeMap::new(),
            dirs: BTreeSet::new(),
            generation: 0,
            crash_countdown: None,
            dead: false,
            ops: 0,
            append_countdown: None,
            sync_countdown: None,
            sync_failures: 0,
            dir_sync_countdown: None,
            dirs_created: Vec::new(),
            dirs_synced: Vec::new(),
            before_sync: None,
            file_syncs: 0,
        };
        SimDisk { state: Arc::new(Mutex::new(state)) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the time stamped on modified files.
    pub fn set_now_ms(&self, now_ms: i64) {
        self.lock().now_ms = now_ms;
    }

    pub fn set_faults(&self, faults: DiskFaults) {
        self.lock().faults = faults;
    }

    /// Makes the append after `ok` more successful ones fail with ENOSPC part-way.
    pub fn fail_append_after(&self, ok: u64) {
        self.lock().append_countdown = Some(ok);
    }

    /// Makes the fsync after `ok` more successful ones fail with EIO.
    pub fn fail_sync_after(&self, ok: u64) {
        self.fail_syncs_after(ok, 1);
    }

    /// Makes the `failures` fsyncs after `ok` more successful ones fail with EIO (a device
    /// that keeps failing, so the undo's fsync fails too).
    pub fn fail_syncs_after(&self, ok: u64, failures: u64) {
        let mut state = self.lock();
        (state.sync_countdown, state.sync_failures) = (Some(ok), failures);
    }

    /// Makes the directory fsync after `ok` more successful ones fail with EIO.
    pub fn fail_dir_sync_after(&self, ok: u64) {
        self.lock().dir_sync_countdown = Some(ok);
    }

    /// Runs `hook` right before the next file fsync, without the disk's lock held.
    pub fn before_next_sync(&self, hook: impl FnOnce() + Send + 'static) {
        self.lock().before_sync = Some(SyncHook(Box::new(hook)));
    }

    /// Cancels every armed targeted failure (appends, fsyncs, directory fsyncs).
    pub fn disarm(&self) {
        let mut state = self.lock();
        (state.append_countdown, state.sync_countdown, state.dir_sync_countdown) = (None, None, None);
        state.sync_failures = 0;
    }

    /// Removes the hook set by [`Self::before_next_sync`] if no fsync ran it; whether one was
    /// pending.
    pub fn cancel_sync_hook(&self) -> bool {
        self.lock().before_sync.take().is_some()
    }

    /// File fsyncs attempted so far (failed ones included).
    pub fn file_syncs(&self) -> u64 {
        self.lock().file_syncs
    }

    /// Directories created and directories fsynced since the last call, and forgets them.
    pub fn take_dir_log(&self) -> (Vec<PathBuf>, Vec<PathBuf>) {
        let mut state = self.lock();
        (std::mem::take(&mut state.dirs_created), std::mem::take(&mut state.dirs_synced))
    }

    /// Arms a power cut after `ops` more operations (0: the next one fails).
    pub fn crash_after(&self, ops: u64) {
        self.lock().crash_countdown = Some(ops);
    }

    /// Whether a power cut is armed ([`crash_after`](Self::crash_after)) or has happened.
    pub fn crash_pending(&self) -> bool {
        let state = self.lock();
        state.dead || state.crash_countdown.is_some()
    }

    /// Whether the power is off (an armed crash fired).
    pub fn is_dead(&self) -> bool {
        self.lock().dead
    }

    /// Operations performed so far.
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// The power cut itself: keeps what is durable plus random torn tails, restores the
    /// durable namespace, and kills every open handle. The disk is usable again afterwards.
    pub fn crash(&self) {
        let mut state = self.lock();
        let state = &mut *state;
        state.names = state.durable_names.clone();
        let live: BTreeSet<u64> = state.names.values().copied().collect();
        state.inodes.retain(|id, _| live.contains(id));
        for inode in state.inodes.values_mut() {
            let durable = inode.persisted(&inode.durable);
            let survived = if inode.data.len() > durable.len() && inode.data.starts_with(&inode.durable) {
                // An unsynced tail: a random prefix of it reached the medium.
                let keep = state.rng.below((inode.data.len() - durable.len()) as u64 + 1) as usize;
                let mut bytes = durable.clone();
                bytes.extend_from_slice(&inode.data[durable.len()..durable.len() + keep]);
                inode.persisted(&bytes)
            } else if inode.data.len() < durable.len() && state.rng.chance(500_000) {
                // An unsynced truncation that did reach the medium.
                durable[..inode.data.len()].to_vec()
            } else {
                durable
            };
            inode.data = survived.clone();
            inode.durable = survived;
            inode.lost.clear();
        }
        state.generation += 1;
        state.crash_countdown = None;
        state.dead = false;
    }

    /// Flips one bit of the durable and cached content of `path` at `position` (a bad sector
    /// that still reads). Returns false when there is no such byte.
    pub fn flip_bit(&self, path: &Path, position: u64, bit: u8) -> bool {
        let mut state = self.lock();
        let Some(id) = state.names.get(path).copied() else { return false };
        let inode = state.inodes.get_mut(&id).expect("named inode exists");
        let at = position as usize;
        if at >= inode.data.len() {
            return false;
        }
        inode.data[at] ^= 1 << (bit % 8);
        if at < inode.durable.len() {
            inode.durable[at] ^= 1 << (bit % 8);
        }
        true
    }

    /// Names of files, for the harness to pick targets.
    pub fn files(&self) -> Vec<PathBuf> {
        self.lock().names.keys().cloned().collect()
    }

    /// The bytes a reader sees in `path` now.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.lock();
        state.names.get(path).map(|id| state.inodes[id].data.clone())
    }

    /// Overwrites the content of `path` as if restored by an operator (durable at once).
    pub fn restore(&self, path: &Path, bytes: &[u8]) {
        let mut state = self.lock();
        if let Some(id) = state.names.get(path).copied() {
            let inode = state.inodes.get_mut(&id).expect("named inode exists");
            inode.data = bytes.to_vec();
            inode.durable = bytes.to_vec();
            inode.lost.clear();
        }
    }

    fn file(&self, path: &Path, id: u64, mode: Mode) -> FileRef {
        let generation = self.lock().generation;
        Arc::new(SimFile { disk: self.clone(), path: path.to_path_buf(), id, mode, generation })
    }
}

impl State {
    /// Counts an operation and applies a pending power cut. Fails when the power is off.
    fn begin(&mut self) -> io::Result<()> {
        if self.dead {
            return Err(dead_error());
        }
        self.ops += 1;
        if let Some(left) = self.crash_countdown.as_mut() {
            if *left == 0 {
                self.dead = true;
                return Err(dead_error());
            }
            *left -= 1;
        }
        Ok(())
    }

    /// Whether this append (or fsync) must fail: the countdown ran out, or the dice said so.
    fn fails(countdown: &mut Option<u64>, rng: &mut SimRng, per_million: u32) -> bool {
        match countdown {
            Some(0) => {
                *countdown = None;
                true
            }
            Some(left) => {
                *left -= 1;
                false
            }
            None => rng.chance(per_million),
        }
    }

    fn parent_exists(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() && !self.dirs.contains(dir) => Err(not_found(dir)),
            _ => Ok(()),
        }
    }

    fn sync_dir(&mut self, dir: &Path) {
        let in_dir = |p: &Path| p.parent() == Some(dir);
        self.durable_names.retain(|p, _| !in_dir(p));
        let entries: Vec<(PathBuf, u64)> =
            self.names.iter().filter(|(p, _)| in_dir(p)).map(|(p, id)| (p.clone(), *id)).collect();
        self.durable_names.extend(entries);
    }

    fn new_inode(&mut self) -> u64 {
        let id = self.next_inode;
        self.next_inode += 1;
        self.inodes.insert(id, Inode { mtime_ms: self.now_ms, ..Inode::default() });
        id
    }
}

impl Disk for SimDisk {
    fn create_new(&self, path: &Path) -> io::Result<FileRef> {
        let id = {
            let mut state = self.lock();
            state.begin()?;
            state.parent_exists(path)?;
            if state.names.contains_key(path) {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} exists", path.display())));
            }
            let id = state.new_inode();
            state.names.insert(path.to_path_buf(), id);
            id
        };
        Ok(self.file(path, id, Mode::Append))
    }

    fn open(&self, path: &Path, append: bool) -> io::Result<FileRef> {
        let id = {
            let mut state = self.lock();
            state.begin()?;
            *state.names.get(path).ok_or_else(|| not_found(path))?
        };
        Ok(self.file(path, id, if append { Mode::Append } else { Mode::Read }))
    }

    fn open_rw(&self, path: &Path) -> io::Result<FileRef> {
        let id = {
            let mut state = self.lock();
            state.begin()?;
            state.parent_exists(path)?;
            match state.names.get(path) {
                Some(id) => *id,
                None => {
                    let id = state.new_inode();
                    state.names.insert(path.to_path_buf(), id);
                    id
                }
            }
        };
        Ok(self.file(path, id, Mode::ReadWrite))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut state = self.lock();
        state.begin()?;
        let id = *state.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(state.inodes[&id].data.clone())
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        // Each step is its own operation, so a power cut can fall between them.
        let tmp = super::temp_path(path);
        let file = self.create_new(&tmp)?;
        if let Err(e) = file.append(bytes).and_then(|()| file.sync_data()) {
            let _ = self.remove_file(&tmp);
            return Err(e);
        }
        {
            let mut state = self.lock();
            state.begin()?;
            let id = state.names.remove(&tmp).ok_or_else(|| not_found(&tmp))?;
            state.names.insert(path.to_path_buf(), id);
        }
        match path.parent() {
            Some(dir) => self.sync_dir(dir),
            None => Ok(()),
        }
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut state = self.lock();
        state.begin()?;
        if !state.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        let files = state.names.keys().filter(|p| p.parent() == Some(dir));
        let subdirs = state.dirs.iter().filter(|p| p.parent() == Some(dir));
        Ok(files.chain(subdirs).filter_map(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).collect())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.begin()?;
        state.names.remove(path).map(|_| ()).ok_or_else(|| not_found(path))
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.begin()?;
        for ancestor in dir.ancestors() {
            if !ancestor.as_os_str().is_empty() && state.dirs.insert(ancestor.to_path_buf()) {
                state.dirs_created.push(ancestor.to_path_buf());
            }
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut guard = self.lock();
        let state = &mut *guard;
        state.begin()?;
        if State::fails(&mut state.dir_sync_countdown, &mut state.rng, 0) {
            return Err(io::Error::other("fsync of directory: input/output error (simulated)"));
        }
        state.sync_dir(dir);
        state.dirs_synced.push(dir.to_path_buf());
        Ok(())
    }

    fn is_file(&self, path: &Path) -> bool {
        self.lock().names.contains_key(path)
    }

    fn is_dir(&self, path: &Path) -> bool {
        self.lock().dirs.contains(path)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Read,
    Append,
    ReadWrite,
}

#[derive(Debug)]
struct SimFile {
    disk: SimDisk,
    path: PathBuf,
    id: u64,
    mode: Mode,
    generation: u64,
}

impl SimFile {
    /// Runs `f` on the inode, after the checks every operation makes.
    fn with<T>(&self, f: impl FnOnce(&mut Inode, &mut State) -> io::Result<T>) -> io::Result<T> {
        let mut state = self.disk.lock();
        state.begin()?;
        if state.generation != self.generation {
            return Err(io::Error::other(format!("{}: handle from before a crash", self.path.display())));
        }
        // An unlinked file stays usable through its handle, as on Unix.
        let mut inode = state.inodes.remove(&self.id).unwrap_or_default();
        let result = f(&mut inode, &mut state);
        state.inodes.insert(self.id, inode);
        result
    }
}

impl DiskFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        self.with(|inode, _| Ok(inode.data.len() as u64))
    }

    fn modified_ms(&self) -> io::Result<i64> {
        self.with(|inode, _| Ok(inode.mtime_ms))
    }

    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> io::Result<()> {
        self.with(|inode, _| {
            let from = position as usize;
            let to = from + buf.len();
            if to > inode.data.len() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end (simulated)"));
            }
            buf.copy_from_slice(&inode.data[from..to]);
            Ok(())
        })
    }

    fn append(&self, bytes: &[u8]) -> io::Result<()> {
        if self.mode != Mode::Append {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "file not opened for appends"));
        }
        self.with(|inode, state| {
            inode.mtime_ms = state.now_ms;
            if State::fails(&mut state.append_countdown, &mut state.rng, state.faults.enospc_per_million) {
                let part = state.rng.below(bytes.len() as u64 + 1) as usize;
                inode.data.extend_from_slice(&bytes[..part]);
                return Err(io::Error::new(io::ErrorKind::StorageFull, "no space left on device (simulated)"));
            }
            inode.data.extend_from_slice(bytes);
            Ok(())
        })
    }

    fn write_at(&self, position: u64, bytes: &[u8]) -> io::Result<()> {
        if self.mode != Mode::ReadWrite {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "file not opened for writes"));
        }
        self.with(|inode, state| {
            inode.mtime_ms = state.now_ms;
            let (from, to) = (position as usize, position as usize + bytes.len());
            if inode.data.len() < to {
                inode.data.resize(to, 0);
            }
            inode.data[from..to].copy_from_slice(bytes);
            Ok(())
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(|inode, state| {
            inode.mtime_ms = state.now_ms;
            inode.data.resize(len as usize, 0);
            for range in &mut inode.lost {
                range.1 = range.1.min(len as usize);
            }
            inode.lost.retain(|(from, to)| from < to);
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        let hook = self.disk.lock().before_sync.take();
        if let Some(SyncHook(hook)) = hook {
            hook();
        }
        self.with(|inode, state| {
            state.file_syncs += 1;
            let fails = State::fails(&mut state.sync_countdown, &mut state.rng, state.faults.fsync_error_per_million);
            if fails && state.sync_failures > 1 {
                (state.sync_countdown, state.sync_failures) = (Some(0), state.sync_failures - 1);
            }
            if fails {
                let unsynced_from = common_prefix(&inode.data, &inode.durable);
                if unsynced_from < inode.data.len() {
                    inode.lost.push((unsynced_from, inode.data.len()));
                }
                return Err(io::Error::other("fsync: input/output error (simulated)"));
            }
            inode.durable = inode.data.clone();
            Ok(())
        })
    }
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk() -> SimDisk {
        let disk = SimDisk::new(7, DiskFaults::default());
        disk.create_dir_all(Path::new("/d")).unwrap();
        disk
    }

    #[test]
    fn synced_bytes_and_synced_names_survive_a_crash() {
        let disk = disk();
        let file = disk.create_new(Path::new("/d/a")).unwrap();
        file.append(b"hello").unwrap();
        file.sync_data().unwrap();
        disk.sync_dir(Path::new("/d")).unwrap();
        file.append(b" world").unwrap();
        disk.crash();
        let bytes = disk.read(Path::new("/d/a")).unwrap();
        assert!(bytes.starts_with(b"hello") && b"hello world".starts_with(&bytes[..]), "{bytes:?}");
        assert!(file.len().is_err(), "handles from before the crash are dead");
    }

    #[test]
    fn an_unsynced_directory_entry_vanishes_at_a_crash() {
        let disk = disk();
        let file = disk.create_new(Path::new("/d/a")).unwrap();
        file.append(b"x").unwrap();
        file.sync_data().unwrap();
        disk.crash();
        assert!(!disk.is_file(Path::new("/d/a")));
    }

    #[test]
    fn after_a_failed_fsync_a_later_successful_one_does_not_save_the_lost_bytes() {
        let disk = disk();
        let file = disk.create_new(Path::new("/d/a")).unwrap();
        disk.sync_dir(Path::new("/d")).unwrap();
        file.append(b"acked").unwrap();
        file.sync_data().unwrap();
        disk.set_faults(DiskFaults { fsync_error_per_million: 1_000_000, ..DiskFaults::default() });
        file.append(b"LOST").unwrap();
        assert!(file.sync_data().is_err());
        disk.set_faults(DiskFaults::default());
        file.append(b"next").unwrap();
        file.sync_data().unwrap();
        assert_eq!(disk.contents(Path::new("/d/a")).unwrap(), b"ackedLOSTnext", "the cache still shows them");
        disk.crash();
        assert_eq!(disk.read(Path::new("/d/a")).unwrap(), b"acked\0\0\0\0next");
    }

    #[test]
    fn an_armed_power_cut_fails_every_operation_until_the_crash_is_resolved() {
        let disk = disk();
        let file = disk.create_new(Path::new("/d/a")).unwrap();
        disk.crash_after(1);
        file.append(b"one").unwrap();
        assert!(file.append(b"two").is_err());
        assert!(disk.is_dead());
        assert!(disk.sync_dir(Path::new("/d")).is_err());
        disk.crash();
        assert!(!disk.is_dead());
        assert!(!disk.is_file(Path::new("/d/a")), "the entry was never made durable");
    }

    #[test]
    fn the_same_seed_tears_the_same_way() {
        let run = |seed| {
            let disk = SimDisk::new(seed, DiskFaults::default());
            disk.create_dir_all(Path::new("/d")).unwrap();
            let file = disk.create_new(Path::new("/d/a")).unwrap();
            disk.sync_dir(Path::new("/d")).unwrap();
            file.append(&[1u8; 1000]).unwrap();
            disk.crash();
            disk.read(Path::new("/d/a")).unwrap().len()
        };
        assert_eq!(run(42), run(42));
    }
}

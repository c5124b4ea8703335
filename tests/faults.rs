//! The append and recovery paths under injected disk faults (the simulated disk of
//! `tierlog::disk::sim`): a write that stops part-way (ENOSPC), a failed fsync, a power cut,
//! a flipped bit. Each test names the acknowledged records it proves are kept.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use tierlog::config::{Config, FsyncPolicy};
use tierlog::disk::Disk;
use tierlog::disk::sim::{DiskFaults, SimDisk};
use tierlog::host::{Clock, Host};
use tierlog::{Error, Log, Record};

struct Fixture {
    _dir: tempfile::TempDir,
    disk: SimDisk,
    host: Host,
    config: Config,
}

fn fixture(fsync: FsyncPolicy) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new(1, DiskFaults::default());
    let host = Host::new(Arc::new(disk.clone()), Clock::manual(Arc::new(AtomicI64::new(1_000))));
    let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
    config.durability.fsync = fsync;
    config.segment.index_interval_bytes = 256;
    Fixture { _dir: dir, disk, host, config }
}

impl Fixture {
    fn open(&self) -> tierlog::Result<Log> {
        Log::open_on(self.host.clone(), self.config.clone())
    }

    fn segment(&self, base: u64) -> std::path::PathBuf {
        self.config.data_dir.join("topics/t/0").join(format!("{base:020}.log"))
    }
}

fn record(i: u64) -> Record {
    Record { timestamp: 1_000 + i as i64, key: None, value: format!("value-{i:05}").into_bytes(), headers: vec![] }
}

fn records(range: std::ops::Range<u64>) -> Vec<Record> {
    range.map(record).collect()
}

/// Every stored record of topic `t` partition 0, in offset order.
fn stored(log: &Log) -> Vec<tierlog::StoredRecord> {
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    let mut out = Vec::new();
    loop {
        let batch = p.read(out.len() as u64, 1 << 20).unwrap();
        if batch.is_empty() {
            return out;
        }
        out.extend(batch);
    }
}

fn values(log: &Log) -> Vec<(u64, String)> {
    stored(log).into_iter().map(|s| (s.offset, String::from_utf8(s.record.value).unwrap())).collect()
}

fn expected(values: &[u64]) -> Vec<(u64, String)> {
    values.iter().enumerate().map(|(offset, i)| (offset as u64, format!("value-{i:05}"))).collect()
}

#[test]
fn a_write_that_stops_part_way_leaves_no_bytes_and_later_acknowledged_records_survive_a_restart() {
    let f = fixture(FsyncPolicy::Batch);
    let log = f.open().unwrap();
    let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    p.append(&records(0..3), 1_000).unwrap();
    f.disk.fail_append_after(0);
    let err = p.append(&records(3..6), 1_000).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    // The partition goes on (the disk may have space again); the failed records are gone.
    assert_eq!(p.append(&records(6..9), 1_000).unwrap().first_offset, 3);
    assert_eq!(values(&log), expected(&[0, 1, 2, 6, 7, 8]));
    drop((p, log));
    f.disk.crash();
    assert_eq!(values(&f.open().unwrap()), expected(&[0, 1, 2, 6, 7, 8]), "after a power cut and recovery");
}

/// A Kafka producer's batch stored as sent goes through the same all-or-nothing write: a
/// write that fails leaves no byte of it, and its offsets go to the next append.
#[test]
fn a_batch_stored_as_sent_that_fails_to_write_leaves_nothing() {
    let f = fixture(FsyncPolicy::Batch);
    let log = f.open().unwrap();
    let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    p.append(&records(0..3), 1_000).unwrap();
    let sent = tierlog::batch::encode(0, &records(3..6)); // what an uncompressed producer sends
    f.disk.fail_append_after(0);
    let err = p.append_as_sent(&sent, 1_000).expect("storable as sent").unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    let produced = p.append_as_sent(&sent, 1_000).unwrap().unwrap();
    let (appended, count) = (produced.appended, produced.records);
    assert_eq!((appended.first_offset, appended.last_offset, count), (3, 5, 3), "the failed call's offsets are reused");
    assert_eq!(values(&log), expected(&[0, 1, 2, 3, 4, 5]));
    drop((p, log));
    f.disk.crash();
    assert_eq!(values(&f.open().unwrap()), expected(&[0, 1, 2, 3, 4, 5]), "after a power cut and recovery");
}

#[test]
fn a_multi_batch_append_that_fails_after_rolling_segments_writes_none_of_it() {
    let mut f = fixture(FsyncPolicy::Batch);
    f.config.segment.max_bytes = 128 * 1024;
    let log = f.open().unwrap();
    let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    p.append(&records(0..2), 1_000).unwrap();
    // 60 KiB records in one call: several batches over several segments; the seventh write
    // fails (the batch after the first roll, which wrote the append-time floor, three index
    // files and a producer snapshot).
    let big: Vec<Record> = (0..40).map(|i| Record { value: vec![b'x'; 60 * 1024], ..record(100 + i) }).collect();
    f.disk.fail_append_after(6);
    assert!(p.append(&big, 1_000).is_err());
    assert_eq!(p.end_offset(), 2, "no offset of the failed call was handed out");
    assert!(p.sealed_segments().is_empty(), "the segments the call rolled were undone");
    assert_eq!(values(&log), expected(&[0, 1]));
    let files = f.disk.files();
    assert_eq!(files.iter().filter(|f| f.extension().is_some_and(|e| e != "json")).count(), 1, "{files:?}");
    // The partition goes on, and the same call now succeeds whole.
    assert_eq!(p.append(&big, 1_000).unwrap().first_offset, 2);
    drop((p, log));
    f.disk.crash();
    assert_eq!(values(&f.open().unwrap()).len(), 42);
}

#[test]
fn a_failed_fsync_stops_the_partition_and_no_acknowledged_record_is_lost_at_the_next_crash() {
    let f = fixture(FsyncPolicy::Batch);
    let log = f.open().unwrap();
    let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    p.append(&records(0..3), 1_000).unwrap();
    f.disk.fail_sync_after(0);
    let err = p.append(&records(3..6), 1_000).unwrap_err();
    assert!(matches!(err, Error::Stopped { .. }), "{err}");
    let again = p.append(&records(6..9), 1_000).unwrap_err();
    assert!(
        matches!(again, Error::Stopped { .. }),
        "an fsync error is never retried as if the data were safe: {again}"
    );
    assert!(again.to_string().contains("t/0") && again.to_string().contains("restart"), "{again}");
    assert_eq!(values(&log), expected(&[0, 1, 2]));
    drop((p, log));
    f.disk.crash();
    let log = f.open().unwrap();
    assert_eq!(values(&log), expected(&[0, 1, 2]));
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    assert_eq!(p.append(&records(9..10), 1_000).unwrap().first_offset, 3, "reopened, it appends again");
}

#[test]
fn a_failed_interval_fsync_stops_the_partition_instead_of_reporting_success_next_time() {
    let f = fixture(FsyncPolicy::Interval);
    let log = f.open().unwrap();
    let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    p.append(&records(0..3), 1_000).unwrap();
    f.disk.fail_sync_after(0);
    assert!(matches!(p.flush().unwrap_err(), Error::Stopped { .. }));
    assert!(p.flush().is_err(), "the next flush must not report success");
    assert!(matches!(p.append(&records(3..4), 1_000).unwrap_err(), Error::Stopped { .. }));
}

#[test]
fn one_flipped_bit_in_the_middle_of_the_active_segment_refuses_to_open_and_cuts_nothing() {
    let f = fixture(FsyncPolicy::Batch);
    {
        let log = f.open().unwrap();
        let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
        for i in 0..1000 {
            p.append(&records(i..i + 1), 1_000).unwrap();
        }
    }
    let path = f.segment(0);
    let before = f.disk.contents(&path).unwrap();
    let batch_bytes = before.len() as u64 / 1000;
    assert!(f.disk.flip_bit(&path, 2 * batch_bytes + 60, 3), "flip a bit inside batch 3");
    let err = f.open().err().expect("the partition must not open for writing");
    let text = err.to_string();
    assert!(matches!(err, Error::Damaged { .. }), "{text}");
    assert!(text.contains(&format!("bytes {}..{}", 2 * batch_bytes, 3 * batch_bytes)), "names the range: {text}");
    assert!(text.contains("valid batches follow"), "{text}");
    let mut flipped = before.clone();
    flipped[(2 * batch_bytes + 60) as usize] ^= 1 << 3;
    assert_eq!(f.disk.contents(&path).unwrap(), flipped, "nothing was cut");
    // Read-only access still serves what precedes the damage.
    let read_only = Log::open_read_only_on(f.host.clone(), f.config.clone()).unwrap();
    assert_eq!(values(&read_only).len(), 2);
}

#[test]
fn a_torn_tail_with_nothing_valid_after_it_is_cut_and_everything_before_it_kept() {
    let f = fixture(FsyncPolicy::Never);
    {
        let log = f.open().unwrap();
        let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
        p.append(&records(0..5), 1_000).unwrap();
        p.flush().unwrap();
    }
    let path = f.segment(0);
    let good = f.disk.contents(&path).unwrap();
    let mut torn = good.clone();
    torn.extend_from_slice(&good[..good.len() / 2]); // half a batch: a torn write
    f.disk.restore(&path, &torn);
    let log = f.open().unwrap();
    assert_eq!(values(&log), expected(&[0, 1, 2, 3, 4]));
    assert_eq!(f.disk.contents(&path).unwrap(), good, "the torn half batch was cut");
}

#[test]
fn with_fsync_never_a_sealed_segment_is_durable_before_its_index_files() {
    let mut f = fixture(FsyncPolicy::Never);
    f.config.segment.max_bytes = 4096;
    {
        let log = f.open().unwrap();
        let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
        for i in 0..300 {
            p.append(&records(i..i + 1), 1_000).unwrap();
        }
        assert!(p.sealed_segments().len() >= 2);
    }
    f.disk.crash();
    let log = f.open().expect("every sealed segment survives a power cut whole");
    let got = values(&log);
    let sealed_end = log.topic("t").unwrap().partition(0).unwrap().sealed_segments().last().unwrap().next_offset;
    assert!(got.len() as u64 >= sealed_end, "{} records, sealed up to {sealed_end}", got.len());
    assert_eq!(got[..sealed_end as usize], expected(&(0..sealed_end).collect::<Vec<_>>())[..]);
}

#[test]
fn data_dir_paths_live_on_the_simulated_disk_only() {
    let f = fixture(FsyncPolicy::Batch);
    let log = f.open().unwrap();
    log.create_topic("t", 1).unwrap();
    assert!(f.disk.is_file(&f.config.data_dir.join("topics/t/topic.json")));
    assert!(!Path::new(&f.config.data_dir.join("topics/t/topic.json")).exists(), "nothing reached the real disk");
}

/// Review finding: a record value that happens to contain a valid batch (any producer can
/// send one) makes an ordinary torn tail look like mid-file damage. The torn batch's header
/// says it runs past the end of the file, yet `next_valid_batch_after` searches *inside* it,
/// finds the embedded batch, and recovery refuses to open the partition for writing.
#[test]
fn review_a_torn_tail_whose_value_embeds_a_batch_is_still_a_torn_tail() {
    let f = fixture(FsyncPolicy::Batch);
    {
        let log = f.open().unwrap();
        let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
        p.append(&records(0..5), 1_000).unwrap();
    }
    let path = f.segment(0);
    let good = f.disk.contents(&path).unwrap();
    // The unacknowledged append in flight at the power cut: one record whose value starts
    // with the bytes of a complete, valid batch, followed by padding.
    let mut value = tierlog::batch::encode(77, &[record(0)]);
    value.extend_from_slice(&[b'p'; 8192]);
    let in_flight = tierlog::batch::encode(5, &[Record { value, ..record(5) }]);
    let mut torn = good.clone();
    torn.extend_from_slice(&in_flight[..in_flight.len() / 2]); // a prefix reached the medium
    f.disk.restore(&path, &torn);
    let log = f.open().expect("a torn tail must be cut, not reported as mid-file damage");
    assert_eq!(values(&log), expected(&[0, 1, 2, 3, 4]));
}

/// Review finding: the directories of a new topic and partition are created but the entry
/// for each in its parent is never fsynced (only the partition directory itself is), so on
/// Linux a power cut after acknowledged appends can lose the whole topic directory. SimDisk
/// hides this by treating every directory as durable the moment it is created.
#[test]
fn review_new_topic_and_partition_directories_are_made_durable_in_their_parents() {
    let f = fixture(FsyncPolicy::Batch);
    let log = f.open().unwrap();
    f.disk.take_dir_log();
    let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    p.append(&records(0..3), 1_000).unwrap(); // acknowledged under fsync = batch
    let (created, synced) = f.disk.take_dir_log();
    assert!(!created.is_empty());
    let not_durable: Vec<_> =
        created.iter().filter(|d| !synced.iter().any(|s| Some(s.as_path()) == d.parent())).collect();
    assert!(
        not_durable.is_empty(),
        "directories created for an acknowledged append whose parent was never fsynced: {not_durable:?} (synced: {synced:?})"
    );
}

/// Review finding: a read-only reader of the same data directory (`Log::open_read_only`,
/// `refresh()`, as `tierlog consume` and the reader use) indexes and serves batches the writer
/// has written but not acknowledged. Here the writer's call fails (ENOSPC after a roll) and
/// is undone, yet the reader already served its record at offset 3; after the writer appends
/// a different record at offset 3, the reader's index no longer matches the file.
#[test]
fn review_a_read_only_reader_never_serves_a_record_of_a_failed_append() {
    // One call, two ~3 KB batches: the first lands in the active segment, the second needs a
    // roll (whose fsync runs the look: the reader looks now) and then fails with ENOSPC.
    assert_a_reader_never_sees_the_failed_call(2, 1, |f, look| f.disk.before_next_sync(look));
}

/// A writer holding records 0..3 and a read-only reader of the same data directory; a call of
/// `batches` ~3 KB records whose write after `ok_appends` successful ones fails with ENOSPC,
/// so the call is undone; `arm` decides when during the call the reader refreshes and reads.
/// The reader must never serve a record of the call, and must see the writer's next record.
fn assert_a_reader_never_sees_the_failed_call(
    batches: u64,
    ok_appends: u64,
    arm: impl FnOnce(&Fixture, Box<dyn FnOnce() + Send>),
) {
    use std::sync::Mutex;
    let mut f = fixture(FsyncPolicy::Batch);
    f.config.segment.max_bytes = 4096;
    let log = f.open().unwrap();
    let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    p.append(&records(0..3), 1_000).unwrap();
    let reader = Log::open_read_only_on(f.host.clone(), f.config.clone()).unwrap();
    let rp = reader.topic("t").unwrap().partition(0).unwrap().clone();
    assert_eq!(rp.read(0, 1 << 20).unwrap().len(), 3);

    let failed: Vec<Record> = (0..batches).map(|i| Record { value: vec![b'F'; 3000], ..record(100 + i) }).collect();
    let seen: Arc<Mutex<Vec<(u64, usize)>>> = Arc::default();
    let (looker, looked) = (rp.clone(), seen.clone());
    arm(
        &f,
        Box::new(move || {
            looker.refresh().unwrap();
            let got = looker.read(3, 1 << 20).unwrap();
            looked.lock().unwrap().extend(got.iter().map(|s| (s.offset, s.record.value.len())));
        }),
    );
    f.disk.fail_append_after(ok_appends);
    assert!(p.append(&failed, 1_000).is_err(), "the call fails and is undone");
    assert_eq!(p.end_offset(), 3);
    // The writer goes on: a different, acknowledged record at offset 3.
    p.append(&[Record { value: vec![b'Y'; 500], ..record(3) }], 1_000).unwrap();
    let later = rp
        .refresh()
        .and_then(|()| rp.read(3, 1 << 20))
        .map(|v| v.iter().map(|s| s.record.value.len()).collect::<Vec<_>>());
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.is_empty(),
        "the reader served records of the failed, undone call: (offset, value bytes) {seen:?}; \
         after the writer acknowledged another record at offset 3 the reader returns {later:?} (expected [500])"
    );
}

/// Review finding: when the directory fsync inside `Segment::create` fails during a roll,
/// the new segment file stays in the directory but not in the partition's state. The call
/// is undone and the partition is *not* stopped, yet every later roll tries `create_new` on
/// the same name and fails with "exists": the partition refuses every append needing a roll
/// (all of them, once the active segment is full) with a misleading I/O error, until restart.
#[test]
fn review_a_failed_directory_fsync_during_a_roll_does_not_wedge_the_partition() {
    let mut f = fixture(FsyncPolicy::Batch);
    f.config.segment.max_bytes = 4096;
    let log = f.open().unwrap();
    let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    let big = |i: u64| Record { value: vec![b'x'; 1500], ..record(i) };
    p.append(&[big(0), big(1)], 1_000).unwrap();
    // The next record needs a roll; the directory fsync of the new segment fails once (the
    // append-time floor's and the three index files' atomic writes sync the directory first).
    let names_before = f.disk.files();
    f.disk.fail_dir_sync_after(4);
    assert!(p.append(&[big(2)], 1_000).is_err(), "the injected directory fsync failure fails the call");
    assert_eq!(p.end_offset(), 2);
    let leftover: Vec<_> = f.disk.files().into_iter().filter(|n| !names_before.contains(n)).collect();
    let next = p.append(&[big(3)], 1_000);
    assert!(
        next.is_ok() || matches!(next, Err(Error::Stopped { .. })),
        "after one failed directory fsync the partition must either go on or stop cleanly; got {next:?} (files left by the failed roll: {leftover:?})"
    );
}

/// Review finding (ack-end): a call that rolls part-way exposes its first batches to
/// read-only readers before it is acknowledged. The roll writes the full segment's index
/// files and publishes `ack-end` naming the *new* segment, so a reader that refreshes now
/// loads the old segment as sealed — `limit_for` says "complete" for every segment before
/// the named one, and sealed segments are not limited at all — and serves the call's first
/// batch. The call then fails (ENOSPC on its third batch) and is undone: the reader served a
/// record of an undone append, and after the writer acknowledges a different record at that
/// offset the reader's view disagrees with the log.
#[test]
fn review_a_read_only_reader_never_serves_a_batch_sealed_by_a_roll_inside_a_failing_call() {
    // The reader looks at the first file fsync after the call's first roll completed (segment
    // 4 exists): the second roll's fsync. Appends: b1, the three index files of segment 0, b2,
    // the three of segment 4, then b3 fails.
    fn when_rolled(disk: SimDisk, segment_4: std::path::PathBuf, then: Box<dyn FnOnce() + Send>) {
        let d = disk.clone();
        disk.before_next_sync(
            move || {
                if d.files().contains(&segment_4) { then() } else { when_rolled(d, segment_4, then) }
            },
        );
    }
    assert_a_reader_never_sees_the_failed_call(3, 6, |f, look| when_rolled(f.disk.clone(), f.segment(4), look));
}

/// Review finding (ack-end): the writer refuses to open a data directory when it cannot
/// create or write the `ack-end` file (a full disk, where a data directory from a build
/// before `ack-end` has no such file yet and creating it needs a block), although nothing
/// needs it: readers fall back without it, and every later publication failure is only
/// logged (`publish_ack_end`). A full disk is exactly when the operator restarts the
/// writer to let retention free space; here the whole log is refused instead.
#[test]
fn review_the_writer_opens_when_the_ack_end_file_cannot_be_written() {
    #[derive(Debug)]
    struct NoAckEnd(SimDisk);
    impl Disk for NoAckEnd {
        fn create_new(&self, p: &Path) -> std::io::Result<tierlog::disk::FileRef> {
            self.0.create_new(p)
        }
        fn open(&self, p: &Path, a: bool) -> std::io::Result<tierlog::disk::FileRef> {
            self.0.open(p, a)
        }
        fn open_rw(&self, _p: &Path) -> std::io::Result<tierlog::disk::FileRef> {
            Err(std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device (simulated)"))
        }
        fn read(&self, p: &Path) -> std::io::Result<Vec<u8>> {
            self.0.read(p)
        }
        fn write_atomic(&self, p: &Path, b: &[u8]) -> std::io::Result<()> {
            self.0.write_atomic(p, b)
        }
        fn list(&self, d: &Path) -> std::io::Result<Vec<String>> {
            self.0.list(d)
        }
        fn remove_file(&self, p: &Path) -> std::io::Result<()> {
            self.0.remove_file(p)
        }
        fn create_dir_all(&self, d: &Path) -> std::io::Result<()> {
            self.0.create_dir_all(d)
        }
        fn sync_dir(&self, d: &Path) -> std::io::Result<()> {
            self.0.sync_dir(d)
        }
        fn is_file(&self, p: &Path) -> bool {
            self.0.is_file(p)
        }
        fn is_dir(&self, p: &Path) -> bool {
            self.0.is_dir(p)
        }
    }
    let f = fixture(FsyncPolicy::Batch);
    let log = f.open().unwrap();
    let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    p.append(&records(0..3), 1_000).unwrap();
    drop((p, log));
    // A data directory from before ack-end existed.
    f.disk.remove_file(&f.config.data_dir.join("topics/t/0/ack-end")).unwrap();
    let host = Host::new(Arc::new(NoAckEnd(f.disk.clone())), f.host.clock.clone());
    let reopened = Log::open_on(host, f.config.clone());
    assert!(
        reopened.is_ok(),
        "the writer refuses the whole data directory because ack-end cannot be created: {}",
        reopened.err().unwrap()
    );
    assert_eq!(values(&reopened.unwrap()), expected(&[0, 1, 2]));
}

/// Found by the simulation (seed 1094 of a release soak): after a failed fsync the page cache
/// keeps the unwritten bytes, marked clean, so a restarted writer read them back as valid,
/// later fsyncs "succeeded" without writing them, and a power cut left zeros where acknowledged
/// records were. The stopped writer leaves a marker; the next one rewrites the active segment.
#[test]
fn a_restart_after_a_failed_fsync_rewrites_the_active_segment_so_later_fsyncs_cover_it() {
    let f = fixture(FsyncPolicy::Interval);
    {
        let log = f.open().unwrap();
        let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
        p.append(&records(0..3), 1_000).unwrap(); // acknowledged, waiting for the interval fsync
        f.disk.fail_sync_after(0);
        assert!(matches!(p.flush().unwrap_err(), Error::Stopped { .. }));
    } // the operator restarts the process; the machine keeps running (page cache intact)
    {
        let log = f.open().unwrap();
        let p = log.topic("t").unwrap().partition(0).unwrap().clone();
        assert_eq!(p.append(&records(3..5), 1_000).unwrap().first_offset, 3);
        p.flush().unwrap(); // covers everything acknowledged so far
    }
    f.disk.crash();
    let log = f.open().expect("nothing acknowledged and fsynced may be damaged after the power cut");
    assert_eq!(values(&log), expected(&[0, 1, 2, 3, 4]));
}

/// Review finding: the first design wrote an `fsync-failed` marker when the fsync failed, on
/// a disk that had just failed (an ENOSPC on the marker's one block lost it, and the restarted
/// writer trusted the poisoned page-cache bytes: the seed-1094 loss again). Now the marker
/// (`writer-open`) is written when a writer opens and removed only on a clean close; a writer
/// that cannot rewrite the segment or write the marker refuses to open instead of going on.
#[test]
fn review_a_failed_fsync_whose_marker_cannot_be_written_still_protects_the_next_writer() {
    let f = fixture(FsyncPolicy::Interval);
    {
        let log = f.open().unwrap();
        let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
        p.append(&records(0..3), 1_000).unwrap(); // acknowledged, waiting for the interval fsync
        f.disk.fail_sync_after(0);
        assert!(matches!(p.flush().unwrap_err(), Error::Stopped { .. }));
    } // the operator restarts the process; the machine keeps running (page cache intact)
    assert!(f.disk.is_file(&f.config.data_dir.join("topics/t/0/writer-open")), "a stopped writer never closes cleanly");
    f.disk.fail_append_after(0); // the disk is full: the rewrite cannot be written
    let refused = f.open().err().expect("the writer must not open on bytes it could not rewrite");
    assert!(
        matches!(&refused, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull),
        "{refused}"
    );
    {
        let log = f.open().expect("space freed: it opens, after rewriting the active segment");
        let p = log.topic("t").unwrap().partition(0).unwrap().clone();
        assert_eq!(p.append(&records(3..5), 1_000).unwrap().first_offset, 3);
        p.flush().unwrap();
    }
    f.disk.crash();
    assert_eq!(values(&f.open().unwrap()), expected(&[0, 1, 2, 3, 4]));
}

/// Review finding (rewrite vs read-only readers): `rewrite_after_failed_fsync` replaces the
/// active segment by rename, so a read-only reader that was open across the writer's restart
/// keeps the old, unlinked inode. `refresh` sees the same file names, the same `active_base`
/// in ack-end and an old file no shorter than its index, so it scans the dead inode and never
/// sees another record until the segment rolls (by default 1 GiB or 7 days later).
#[test]
fn review_a_following_reader_sees_records_appended_after_the_rewrite() {
    let f = fixture(FsyncPolicy::Interval);
    {
        let log = f.open().unwrap();
        let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
        p.append(&records(0..3), 1_000).unwrap();
        f.disk.fail_sync_after(0);
        assert!(matches!(p.flush().unwrap_err(), Error::Stopped { .. }));
    }
    let reader = Log::open_read_only_on(f.host.clone(), f.config.clone()).unwrap();
    let rp = reader.topic("t").unwrap().partition(0).unwrap().clone();
    assert_eq!(rp.read(0, 1 << 20).unwrap().len(), 3);
    // The writer restarts (rewriting the active segment) and acknowledges more records.
    let log = f.open().unwrap();
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    p.append(&records(3..5), 1_000).unwrap();
    p.flush().unwrap();
    p.append(&records(5..6), 1_000).unwrap();
    p.flush().unwrap();
    rp.refresh().unwrap();
    let seen: Vec<u64> = rp.read(0, 1 << 20).unwrap().iter().map(|s| s.offset).collect();
    assert_eq!(seen, vec![0, 1, 2, 3, 4, 5], "the reader is stuck on the replaced inode");
}

/// Review finding (undo): when removing the segment a failing call created fails (its
/// directory fsync), `rewind` returned before rewinding the index, so the stopped partition
/// served the call's first batch. Now memory always goes back to the call's start. On disk
/// the first segment is cut only once every created segment is gone (cutting it first leaves
/// a hole that recovery refuses, as the simulation showed with seed 142), so after a restart
/// the call's first batches may be there, like a call cut short by a crash: at most a
/// prefix of the call, after every acknowledged record, never anything else.
#[test]
fn review_an_undo_that_fails_part_way_serves_nothing_and_leaves_at_most_a_prefix_of_the_call() {
    let mut f = fixture(FsyncPolicy::Batch);
    f.config.segment.max_bytes = 4096;
    let served: Vec<usize>;
    {
        let log = f.open().unwrap();
        let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
        p.append(&records(0..3), 1_000).unwrap();
        // One call, two ~3 KB batches: b1 in segment 0, a roll (fsync ok, the append-time floor,
        // three index files, a producer snapshot, new segment), b2 in segment 4, then the call's
        // fsync fails; undoing it removes the snapshot and segment 4, and that removal's
        // directory fsync fails too.
        let failed: Vec<Record> = (0..2).map(|i| Record { value: vec![b'F'; 3000], ..record(100 + i) }).collect();
        f.disk.fail_sync_after(6); // segment 0 at the roll, the floor, three index files, the snapshot, then segment 4 fails
        f.disk.fail_dir_sync_after(7); // floor, index files, snapshot, segment 4 created, snapshot removed, then segment 4's removal fails
        let err = p.append(&failed, 1_000).unwrap_err();
        assert!(matches!(err, Error::Stopped { .. }), "{err}");
        served = p.read(3, 1 << 20).unwrap().iter().map(|s| s.record.value.len()).collect();
    }
    let log = f.open().unwrap();
    let got: Vec<usize> = log
        .topic("t")
        .unwrap()
        .partition(0)
        .unwrap()
        .read(0, 1 << 20)
        .unwrap()
        .iter()
        .map(|s| s.record.value.len())
        .collect();
    assert!(served.is_empty(), "the stopped writer served records of the failed call: value sizes {served:?}");
    assert_eq!(got[..3], [11, 11, 11], "every acknowledged record, first");
    assert!(got.len() <= 5 && got[3..].iter().all(|len| *len == 3000), "then at most a prefix of the call: {got:?}");
}

/// Soak seed 20811 (found before the simulation's keys were seeded): a call starts in an
/// empty active segment, rolls (the roll's fsync makes its first batch durable), and its
/// fsync fails; the undo cuts the segment back to empty, but that fsync fails too. The
/// restarted writer saw an empty segment and skipped the rewrite that makes its view durable,
/// so after a power cut the failed call's first batch was back, above an end that readers had
/// already been shown.
#[test]
fn a_restart_after_a_failed_undo_makes_an_empty_active_segment_durable_too() {
    let mut f = fixture(FsyncPolicy::Batch);
    f.config.segment.max_bytes = 4096;
    {
        let log = f.open().unwrap();
        let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
        p.append(&records(0..3), 1_000).unwrap();
        p.seal_active(1_000).unwrap(); // segment 3 is active and empty
        let failed: Vec<Record> = (0..2).map(|i| Record { value: vec![b'F'; 3000], ..record(100 + i) }).collect();
        // Segment 3 at the roll, the append-time floor, its three index files, the producer
        // snapshot, then segment 4's fsync and the undo's.
        f.disk.fail_syncs_after(6, 2);
        let err = p.append(&failed, 1_000).unwrap_err();
        assert!(matches!(err, Error::Stopped { .. }), "{err}");
    }
    {
        let log = f.open().unwrap(); // the operator restarts the process; the page cache stays
        assert_eq!(values(&log), expected(&[0, 1, 2]), "the restarted writer shows the call undone");
    }
    f.disk.crash();
    assert_eq!(values(&f.open().unwrap()), expected(&[0, 1, 2]), "what the restarted writer showed is what is durable");
}

/// Review: a Kafka produce partition may carry at most `PRODUCE_RECORDS_MAX` records (the
/// decoding path refuses more); a batch stored as sent is not held to it.
#[test]
fn review_a_batch_stored_as_sent_is_held_to_the_produce_record_count_limit() {
    let f = fixture(FsyncPolicy::Batch);
    let log = f.open().unwrap();
    let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    let n = tierlog::kafka::records::PRODUCE_RECORDS_MAX as usize + 1;
    let sent = tierlog::batch::encode(0, &vec![Record { timestamp: 1_000, ..Record::default() }; n]);
    let refused = tierlog::kafka::records::decode_produce(bytes::Bytes::from(sent.clone()), 0).map(|(r, _)| r.len());
    assert!(refused.is_err(), "the decoding path refuses {n} records");
    match p.append_as_sent(&sent, 1_000) {
        None | Some(Err(_)) => {}
        Some(Ok(produced)) => panic!(
            "{} records in one produce partition ({} bytes) stored as sent at offsets {}..={}; the decoding \
             path refuses them: {:?}",
            produced.records,
            sent.len(),
            produced.appended.first_offset,
            produced.appended.last_offset,
            refused.err().map(|e| e.message)
        ),
    }
}

fn stamp(id: i64, first_sequence: i32) -> tierlog::batch::ProducerStamp {
    tierlog::batch::ProducerStamp { id, epoch: 0, first_sequence }
}

/// An idempotent producer's batch that was written but whose answer was lost is recognised
/// when sent again after a power cut, whether the batch is in the active segment (replayed
/// from the log) or in segments sealed since (read from the producer snapshot taken at each
/// seal); and one that a failed write left out is appended, not taken for a duplicate.
#[test]
fn an_idempotent_retry_after_a_power_cut_is_recognised_and_a_failed_batch_is_written_once() {
    let mut f = fixture(FsyncPolicy::Batch);
    f.config.segment.max_bytes = 200; // about one batch per segment: every append seals one
    let log = f.open().unwrap();
    let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    for i in 0..6u64 {
        let r = &records(2 * i..2 * i + 2);
        let produced = p.append_stamped(r, stamp(7, 2 * i as i32), 1_000).unwrap();
        assert_eq!((produced.appended.first_offset, produced.duplicate), (2 * i, false));
    }
    f.disk.fail_append_after(0);
    assert!(matches!(p.append_stamped(&records(12..14), stamp(7, 12), 1_000), Err(Error::Io { .. })));
    drop((p, log));
    f.disk.crash();
    let log = f.open().unwrap();
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    let files: Vec<String> = f.disk.list(&f.config.data_dir.join("topics/t/0")).unwrap();
    assert!(files.iter().any(|n| n.ends_with(".producers")), "seals took snapshots: {files:?}");
    // The last five batches are remembered, the newest in the active segment.
    for i in 1..6u64 {
        let produced = p.append_stamped(&records(2 * i..2 * i + 2), stamp(7, 2 * i as i32), 1_000).unwrap();
        assert_eq!((produced.appended.first_offset, produced.duplicate), (2 * i, true), "batch {i} sent again");
    }
    let written = p.append_stamped(&records(12..14), stamp(7, 12), 1_000).unwrap();
    assert_eq!((written.appended.first_offset, written.duplicate), (12, false), "the failed batch is new");
    let gap = p.append_stamped(&records(20..21), stamp(7, 20), 1_000).unwrap_err();
    assert!(matches!(gap, Error::Producer { .. }), "{gap}");
    assert!(gap.to_string().contains("sent sequence 20 where 14 comes next"), "{gap}");
    assert_eq!(values(&log), expected(&(0..14).collect::<Vec<_>>()), "every record once");
}

/// A damaged newest snapshot is skipped: recovery takes the one before it and replays the
/// batches after it, so retries are still recognised.
#[test]
fn a_damaged_producer_snapshot_is_skipped_for_the_one_before_it() {
    let mut f = fixture(FsyncPolicy::Batch);
    f.config.segment.max_bytes = 200;
    let log = f.open().unwrap();
    let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    for i in 0..4u64 {
        p.append_stamped(&records(2 * i..2 * i + 2), stamp(3, 2 * i as i32), 1_000).unwrap();
    }
    p.seal_active(1_000).unwrap();
    drop((p, log));
    let dir = f.config.data_dir.join("topics/t/0");
    let mut snapshots: Vec<String> =
        f.disk.list(&dir).unwrap().into_iter().filter(|n| n.ends_with(".producers")).collect();
    snapshots.sort();
    assert_eq!(snapshots.len(), 2, "the newest two are kept: {snapshots:?}");
    let newest = dir.join(snapshots.last().unwrap());
    let mut bytes = f.disk.read(&newest).unwrap();
    bytes[30] ^= 0x40;
    f.disk.write_atomic(&newest, &bytes).unwrap();
    let log = f.open().unwrap();
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    let produced = p.append_stamped(&records(6..8), stamp(3, 6), 1_000).unwrap();
    assert_eq!((produced.appended.first_offset, produced.duplicate), (6, true));
    assert_eq!(values(&log), expected(&(0..8).collect::<Vec<_>>()));
}

// ---------------------------------------------------------------------------------------
// Adversarial review of a9c883f (idempotent producers).
// ---------------------------------------------------------------------------------------

/// A client picks its producer id freely (nothing checks it was handed out): one batch
/// stamped with id i64::MAX - 1 is remembered, so the next open sets the id floor to
/// i64::MAX. Handing out ids must then neither overflow (a panic in debug builds) nor hand
/// out negative ids / write a negative next id that makes the next open refuse the data
/// directory (release builds wrap).
#[test]
fn review_a_client_chosen_producer_id_near_i64_max_does_not_break_id_allocation() {
    let f = fixture(FsyncPolicy::Batch);
    let log = f.open().unwrap();
    let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    p.append_stamped(&records(0..1), stamp(i64::MAX - 1, 0), 1_000).unwrap();
    drop((p, log));
    let log = f.open().expect("the writer opens");
    let ids: Vec<tierlog::Result<i64>> = (0..3).map(|_| log.allocate_producer_id()).collect();
    // Refusing is fine; wrapping or panicking is not.
    for id in ids.iter().flatten() {
        assert!(*id >= 0, "a negative producer id was handed out: {ids:?}");
    }
    drop(log);
    f.open().expect("the data directory still opens after producer ids were handed out");
}

/// Same, with the largest id a batch can carry: the floor `id + 1` at open overflows.
#[test]
fn review_a_client_chosen_producer_id_i64_max_does_not_stop_the_next_open() {
    let f = fixture(FsyncPolicy::Batch);
    let log = f.open().unwrap();
    let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    p.append_stamped(&records(0..1), stamp(i64::MAX, 0), 1_000).unwrap();
    drop((p, log));
    let log = f.open().expect("the writer opens");
    if let Ok(id) = log.allocate_producer_id() {
        assert!(id >= 0, "negative producer id {id}");
    }
}

fn snapshot_names(f: &Fixture) -> Vec<String> {
    let dir = f.config.data_dir.join("topics/t/0");
    let mut names: Vec<String> = f.disk.list(&dir).unwrap().into_iter().filter(|n| n.ends_with(".producers")).collect();
    names.sort();
    names
}

fn damage(f: &Fixture, name: &str) {
    let path = f.config.data_dir.join("topics/t/0").join(name);
    let mut bytes = f.disk.read(&path).unwrap();
    bytes[30] ^= 0x40;
    f.disk.write_atomic(&path, &bytes).unwrap();
}

/// Local retention removes sealed (tiered) segments; the newest snapshot is damaged. Recovery
/// falls back to the snapshot before it but can replay only the local segments, so the
/// batches between the two snapshots (remote-only now) are not remembered: a retry of the
/// producer's last batch, whose answer was lost, is stored a second time. This double fault
/// (a damaged snapshot, and the retried batch already gone from the local disk) is a
/// documented limit (docs/KAFKA.md, "Idempotent producers"; recovery logs it): the partition
/// opens, nothing acknowledged is lost, and the retry is stored again.
#[test]
fn review_a_damaged_newest_snapshot_after_local_retention_stores_a_retry_twice() {
    let mut f = fixture(FsyncPolicy::Batch);
    f.config.segment.max_bytes = 200; // two batches per segment
    let log = f.open().unwrap();
    let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    for i in 0..4u64 {
        p.append_stamped(&records(2 * i..2 * i + 2), stamp(3, 2 * i as i32), 1_000).unwrap();
    }
    p.seal_active(1_000).unwrap();
    // Local retention (after tiering) removes every sealed segment, oldest first.
    let dir = f.config.data_dir.join("topics/t/0");
    let mut bases: Vec<u64> =
        f.disk.list(&dir).unwrap().iter().filter_map(|n| n.strip_suffix(".log")?.parse().ok()).collect();
    bases.sort();
    for base in &bases[..bases.len() - 1] {
        p.remove_sealed(*base).unwrap();
    }
    drop((p, log));
    // Segments 0 (offsets 0..=3) and 4 (4..=7) are remote-only now; snapshots at 4 and 8.
    let snapshots = snapshot_names(&f);
    assert_eq!(snapshots, ["00000000000000000004.producers", "00000000000000000008.producers"]);
    damage(&f, snapshots.last().unwrap());
    let log = f.open().unwrap();
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    // The last two batches (sequences 4..=5 and 6..=7, offsets 4..=7) are sent again: their
    // answers were lost.
    let produced = p.append_stamped(&records(4..6), stamp(3, 4), 1_000).unwrap();
    assert_eq!(
        (produced.appended.first_offset, produced.duplicate),
        (8, false),
        "the documented limit: a retry of a batch only the remote tier holds is stored again"
    );
}

/// Both kept snapshots are unreadable: recovery replays only the last sealed segment and the
/// active one (the "no snapshot at all" fallback), not the whole local log, so a producer
/// whose last batches are in older local segments is forgotten and its retry stored twice.
#[test]
fn review_when_every_snapshot_is_damaged_recovery_replays_too_little() {
    let mut f = fixture(FsyncPolicy::Batch);
    f.config.segment.max_bytes = 200;
    let log = f.open().unwrap();
    let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    p.append_stamped(&records(0..2), stamp(3, 0), 1_000).unwrap(); // producer 3: offsets 0..=1
    for i in 1..5u64 {
        p.append_stamped(&records(2 * i..2 * i + 2), stamp(4, 2 * i as i32), 1_000).unwrap(); // producer 4
    }
    p.seal_active(1_000).unwrap();
    drop((p, log));
    for name in snapshot_names(&f) {
        damage(&f, &name);
    }
    let log = f.open().unwrap();
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    let produced = p.append_stamped(&records(0..2), stamp(3, 0), 1_000).unwrap();
    assert_eq!(
        (produced.appended.first_offset, produced.duplicate),
        (0, true),
        "producer 3's batch at offsets 0..=1 is in the local log but was stored again"
    );
}

// ---- Adversarial review of e2c5da6: crash sweeps over the new writes ----

/// (offset, append time) of every record of topic `t` partition 0.
fn review_e2c5_times(log: &Log) -> Vec<(u64, Option<i64>)> {
    stored(log).into_iter().map(|s| (s.offset, s.append_time)).collect()
}

/// Every sealed segment (a `.log` with a later `.log`) that has `.index` and `.timeindex` on
/// the durable disk also has `.appendindex`, or `load_files` derives "no append times".
fn review_e2c5_check_index_triples(f: &Fixture, what: &str) {
    let files: Vec<String> = f
        .disk
        .files()
        .into_iter()
        .filter(|p| p.parent() == Some(&f.config.data_dir.join("topics/t/0")))
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let mut logs: Vec<u64> = files.iter().filter_map(|n| n.strip_suffix(".log")?.parse().ok()).collect();
    logs.sort();
    for base in logs.iter().take(logs.len().saturating_sub(1)) {
        let has = |ext: &str| files.contains(&format!("{base:020}.{ext}"));
        if has("index") && has("timeindex") {
            assert!(
                has("appendindex"),
                "{what}: sealed segment {base} has .index and .timeindex but no .appendindex: {files:?}"
            );
        }
    }
}

/// The local as-of cut at each instant: the first offset appended after it.
fn review_e2c5_check_as_of(log: &Log, what: &str) {
    let stored = review_e2c5_times(log);
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    let mut instants: Vec<i64> = stored.iter().filter_map(|(_, t)| *t).collect();
    instants.dedup();
    for t in instants.iter().flat_map(|t| [t - 1, *t]) {
        let want = stored.iter().find(|(_, a)| a.is_some_and(|a| a > t)).map_or(p.end_offset(), |(o, _)| *o);
        let cut = p.offset_as_of(t).unwrap();
        assert_eq!(cut.offset, want, "{what}: as of {t}: {cut:?}, stored {stored:?}");
        assert_ne!(cut.previous_unstamped, Some(true), "{what}: as of {t}: every batch is stamped: {cut:?}");
    }
}

#[test]
fn review_e2c5_a_power_cut_anywhere_in_a_seal_keeps_append_times_indexes_and_the_clock() {
    for n in 0.. {
        let f = fixture(FsyncPolicy::Batch);
        let log = f.open().unwrap();
        let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
        p.append(&records(0..2), 1_000).unwrap();
        p.append(&records(2..4), 2_000).unwrap();
        p.seal_active(2_000).unwrap();
        p.append(&records(4..6), 3_000).unwrap();
        f.disk.crash_after(n);
        let _ = p.seal_active(3_000);
        let finished = !f.disk.is_dead();
        drop((p, log));
        f.disk.crash();
        let what = format!("power cut after {n} operations of the seal");
        review_e2c5_check_index_triples(&f, &what);
        let log = f.open().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(values(&log), expected(&[0, 1, 2, 3, 4, 5]), "{what}");
        review_e2c5_check_as_of(&log, &what);
        let p = log.topic("t").unwrap().partition(0).unwrap().clone();
        let next = p.append(&records(6..7), 500).unwrap(); // the wall clock is behind
        assert!(next.append_time >= Some(3_000), "{what}: {next:?}");
        drop((p, log));
        let log = f.open().unwrap_or_else(|e| panic!("{what}, reopened: {e}"));
        review_e2c5_check_as_of(&log, &format!("{what}, reopened"));
        if finished {
            eprintln!("SWEEP done at n={n}");
            break;
        }
    }
}

/// A call that rolls and then fails is undone; a power cut lands anywhere in the undo.
#[test]
fn review_e2c5_a_power_cut_anywhere_in_an_undo_after_a_roll_keeps_append_times_and_indexes() {
    for fail_after in 0..14u64 {
        for n in 0..200u64 {
            let mut f = fixture(FsyncPolicy::Batch);
            f.config.segment.max_bytes = 4096;
            let log = f.open().unwrap();
            let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
            p.append(&records(0..2), 1_000).unwrap();
            p.seal_active(1_000).unwrap();
            p.append(&records(2..4), 2_000).unwrap();
            let big: Vec<Record> = (0..3).map(|i| Record { value: vec![b'F'; 3000], ..record(100 + i) }).collect();
            f.disk.fail_append_after(fail_after);
            f.disk.crash_after(n);
            let result = p.append(&big, 3_000);
            let acked = result.is_ok();
            let finished = !f.disk.is_dead();
            drop((p, log));
            f.disk.crash();
            f.disk.fail_append_after(u64::MAX);
            let what = format!("append failing after {fail_after} writes, power cut after {n} operations");
            review_e2c5_check_index_triples(&f, &what);
            let log = f.open().unwrap_or_else(|e| panic!("{what}: {e}"));
            let stored = review_e2c5_times(&log);
            assert!(stored.len() >= 4, "{what}: {stored:?}");
            if acked {
                assert_eq!(stored.len(), 7, "{what}");
            }
            review_e2c5_check_as_of(&log, &what);
            let p = log.topic("t").unwrap().partition(0).unwrap().clone();
            let next = p.append(&records(6..7), 500).unwrap();
            assert!(next.append_time >= Some(2_000), "{what}: {next:?}");
            if acked {
                assert!(next.append_time >= Some(3_000), "{what}: {next:?}");
            }
            drop((p, log));
            let log = f.open().unwrap_or_else(|e| panic!("{what}, reopened: {e}"));
            review_e2c5_check_as_of(&log, &format!("{what}, reopened"));
            if finished {
                eprintln!("UNDO fail_after={fail_after} done at n={n} acked={acked} stored={}", stored.len());
                break;
            }
        }
    }
}

/// Copies the version-1 fixture's data directory (written by the build before append times)
/// onto the simulated disk, durably.
fn review_e2c5_load_legacy(f: &Fixture) {
    fn copy(f: &Fixture, from: &Path, to: &Path) {
        f.disk.create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy(f, &entry.path(), &target);
            } else {
                f.disk.write_atomic(&target, &std::fs::read(entry.path()).unwrap()).unwrap();
            }
        }
        f.disk.sync_dir(to).unwrap();
    }
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1/legacy-data");
    copy(f, &fixture, &f.config.data_dir);
}

/// The first writable open of a data directory from before append times upgrades topic.json
/// and writes the derived `.appendindex` of old sealed segments; a power cut anywhere in it.
#[test]
fn review_e2c5_a_power_cut_anywhere_in_the_upgrading_open_leaves_the_partition_openable() {
    for n in 0.. {
        let mut f = fixture(FsyncPolicy::Batch);
        f.config.segment.max_bytes = 4096;
        review_e2c5_load_legacy(&f);
        let read = |log: &Log| {
            let p = log.topic("legacy").unwrap().partition(0).unwrap().clone();
            let mut out = Vec::new();
            let mut at = p.start_offset();
            loop {
                let batch = p.read(at, 1 << 20).unwrap();
                if batch.is_empty() {
                    return out;
                }
                at = batch.last().unwrap().offset + 1;
                out.extend(batch.into_iter().map(|s| (s.offset, s.record.value, s.append_time)));
            }
        };
        let before = {
            let log = Log::open_read_only_on(f.host.clone(), f.config.clone()).unwrap();
            read(&log)
        };
        assert_eq!(before.len(), 70);
        f.disk.crash_after(n);
        let opened = f.open();
        let finished = !f.disk.is_dead();
        drop(opened);
        f.disk.crash();
        let what = format!("power cut after {n} operations of the first open");
        let log = f.open().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(read(&log), before, "{what}");
        let p = log.topic("legacy").unwrap().partition(0).unwrap().clone();
        let appended = p.append(&records(0..1), 5_000).unwrap();
        assert_eq!(p.offset_as_of(4_999).unwrap().offset, appended.first_offset, "{what}");
        assert_eq!(p.offset_as_of(4_999).unwrap().previous_unstamped, Some(true), "{what}");
        let meta = f.disk.contents(&f.config.data_dir.join("topics/legacy/topic.json")).unwrap();
        let meta: serde_json::Value = serde_json::from_slice(&meta).unwrap();
        assert_eq!(meta["version"], 2, "{what}");
        if finished {
            eprintln!("SWEEP done at n={n}");
            break;
        }
    }
}

/// Injected fsync and directory-fsync failures anywhere in a run of appends that roll, seals
/// and more appends: whatever was acknowledged survives a power cut, append times and as-of
/// answers stay right, and the clock does not go back.
#[test]
fn review_e2c5_injected_fsync_failures_around_rolls_keep_append_times_and_the_clock() {
    for kind in 0..3 {
        for k in 0..40u64 {
            let mut f = fixture(FsyncPolicy::Batch);
            f.config.segment.max_bytes = 4096;
            let log = f.open().unwrap();
            let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
            p.append(&records(0..2), 1_000).unwrap();
            match kind {
                0 => f.disk.fail_dir_sync_after(k),
                1 => f.disk.fail_sync_after(k),
                _ => f.disk.fail_append_after(k),
            }
            let mut acked: Vec<String> = vec![format!("value-{:05}", 0), format!("value-{:05}", 1)];
            let mut next = 2u64;
            let mut max_acked = 1_000;
            for step in 0..6u64 {
                let now = 2_000 + step as i64 * 1_000;
                let _ = if step % 3 == 2 { p.seal_active(now) } else { Ok(()) };
                let big: Vec<Record> = (0..2)
                    .map(|i| Record {
                        value: format!("big-{}-{}", next + i, "x".repeat(1500)).into_bytes(),
                        ..record(next + i)
                    })
                    .collect();
                if let Ok(a) = p.append(&big, now) {
                    acked.extend(big.iter().map(|r| String::from_utf8(r.value.clone()).unwrap()));
                    max_acked = max_acked.max(a.append_time.unwrap());
                }
                next += 2;
            }
            drop((p, log));
            f.disk.crash();
            f.disk.fail_dir_sync_after(u64::MAX);
            f.disk.fail_sync_after(u64::MAX);
            f.disk.fail_append_after(u64::MAX);
            let what = format!("failure kind {kind} after {k}");
            review_e2c5_check_index_triples(&f, &what);
            let log = f.open().unwrap_or_else(|e| panic!("{what}: {e}"));
            let got: Vec<String> = values(&log).into_iter().map(|(_, v)| v).collect();
            assert!(got == acked, "{what}: {} records stored, {} acknowledged", got.len(), acked.len());
            review_e2c5_check_as_of(&log, &what);
            let p = log.topic("t").unwrap().partition(0).unwrap().clone();
            let a = p.append(&records(100..101), 500).unwrap();
            assert!(a.append_time >= Some(max_acked), "{what}: {a:?} after {max_acked}");
        }
    }
}

/// A replica's partition moves its empty log forward by creating the next segment before
/// removing the old one: when the creation fails (a directory fsync), it keeps serving its
/// old end, wakes no follower, leaves no new file behind, and moves at the next attempt. A
/// partition holding records is never moved, nor is one moved backwards.
#[test]
fn a_replica_partition_that_cannot_create_its_next_segment_keeps_its_old_end_and_moves_later() {
    let f = fixture(FsyncPolicy::Never);
    let log = f.open().unwrap();
    let spec = tierlog::topic::TopicMetadata {
        version: 0,
        name: "t".into(),
        partitions: 1,
        created_ms: 0,
        timestamp_type: Default::default(),
        settings: Default::default(),
    };
    let p = log.restore_topic(&spec, &[(100, None)]).unwrap().partition(0).unwrap().clone();
    assert!(p.advance_empty(150).is_err(), "only a replica's partition moves");
    p.refuse_appends("s3://bucket/prefix");
    assert!(matches!(p.append(&records(0..1), 1_000), Err(Error::Replica { .. })));
    let woken = p.watch_end();
    f.disk.fail_dir_sync_after(0);
    assert!(p.advance_empty(150).is_err());
    assert_eq!((p.start_offset(), p.end_offset()), (100, 100));
    assert!(!woken.has_changed().unwrap(), "no follower is told about an end that did not happen");
    assert!(f.disk.is_file(&f.segment(100)) && !f.disk.is_file(&f.segment(150)), "no half-made segment");
    p.advance_empty(150).unwrap();
    assert_eq!((p.start_offset(), p.end_offset()), (150, 150));
    assert!(woken.has_changed().unwrap());
    assert!(!f.disk.is_file(&f.segment(100)) && f.disk.is_file(&f.segment(150)));
    assert!(p.advance_empty(120).is_err(), "never backwards");
    p.advance_empty(150).unwrap();
    assert_eq!(p.end_offset(), 150);

    // A partition holding records is never moved, replica or not.
    let q = log.create_topic("u", 1).unwrap().partition(0).unwrap().clone();
    q.append(&records(0..3), 1_000).unwrap();
    q.refuse_appends("s3://bucket/prefix");
    assert!(q.advance_empty(10).is_err());
    assert_eq!(q.end_offset(), 3);
}

/// An alter writes `topic.json` before it puts the new settings in force: a write, fsync or
/// directory fsync that fails leaves the old settings in force on the live partitions, and the
/// file readable with the old settings, also after a power cut.
#[test]
fn a_failed_write_of_topic_json_during_an_alter_keeps_the_old_settings_in_force_and_the_file_readable() {
    use tierlog::settings::{NewTopicSettings, SettingsChange};
    for (fault, inject) in [
        ("write", (|d: &SimDisk| d.fail_append_after(0)) as fn(&SimDisk)),
        ("fsync", |d: &SimDisk| d.fail_sync_after(0)),
        ("directory fsync", |d: &SimDisk| d.fail_dir_sync_after(0)),
    ] {
        let f = fixture(FsyncPolicy::Batch);
        let log = f.open().unwrap();
        let new = NewTopicSettings::parse("t", [("segment.bytes", "8192")]).unwrap();
        log.create_topic_with_settings("t", 1, &new).unwrap();
        let change = SettingsChange { set: vec![("segment.bytes".into(), "4096".into())], unset: vec![] };
        inject(&f.disk);
        let err = log.alter_topic("t", &change).unwrap_err();
        assert!(
            matches!(err, Error::Io { .. }) && err.to_string().contains("previous ones stay in force"),
            "{fault}: {err}"
        );
        let topic = log.topic("t").unwrap();
        assert_eq!(topic.settings(&f.config).segment_bytes.value, 8192, "{fault}: the old settings are in force");
        assert_eq!(topic.partition(0).unwrap().roll_policy().0, 8192, "{fault}: on the partition too");
        drop((topic, log));
        assert_eq!(reopened_segment_bytes(&f), 8192, "{fault}: the file holds the old settings");
        f.disk.crash();
        assert_eq!(reopened_segment_bytes(&f), 8192, "{fault}: after a power cut too");
        // The disk works again: the same alter goes through.
        let log = f.open().unwrap();
        log.alter_topic("t", &change).unwrap();
        drop(log);
        f.disk.crash();
        assert_eq!(reopened_segment_bytes(&f), 4096, "{fault}: a successful alter is durable");
    }
}

fn reopened_segment_bytes(f: &Fixture) -> u64 {
    f.open().unwrap().topic("t").unwrap().settings(&f.config).segment_bytes.value
}

/// Group commit under faults. A first append holds its fsync open (`before_next_sync`) while
/// `calls` more appends queue behind it, one thread each, in order; `arm` runs when all are
/// queued, just before the first append's fsync. Returns the first append's result and each
/// queued call's, in queue order. Records: the first call 0..3, queued call `k` 10k..10k+3.
fn group_behind_a_held_fsync(
    f: &Fixture,
    p: &tierlog::partition::Partition,
    calls: u64,
    arm: impl FnOnce() + Send + 'static,
) -> (tierlog::Result<tierlog::partition::Appended>, Vec<tierlog::Result<tierlog::partition::Appended>>) {
    let queued = (1..=calls).map(|k| records(10 * k..10 * k + 3)).collect();
    group_of(f, p, records(0..3), queued, arm)
}

/// [`group_behind_a_held_fsync`] with the calls' records given.
fn group_of(
    f: &Fixture,
    p: &tierlog::partition::Partition,
    first: Vec<Record>,
    queued: Vec<Vec<Record>>,
    arm: impl FnOnce() + Send + 'static,
) -> (tierlog::Result<tierlog::partition::Appended>, Vec<tierlog::Result<tierlog::partition::Appended>>) {
    let (held, wait_held) = std::sync::mpsc::channel::<()>();
    let (release, wait_release) = std::sync::mpsc::channel::<()>();
    f.disk.before_next_sync(move || {
        held.send(()).unwrap();
        wait_release.recv().unwrap();
        arm();
    });
    std::thread::scope(|scope| {
        let first = scope.spawn(|| p.append(&first, 1_000));
        wait_held.recv().unwrap();
        let queued: Vec<_> = queued
            .into_iter()
            .enumerate()
            .map(|(k, call)| {
                let handle = scope.spawn(move || p.append(&call, 1_000));
                while p.appends_waiting() <= k {
                    std::thread::yield_now();
                }
                handle
            })
            .collect();
        release.send(()).unwrap();
        (first.join().unwrap(), queued.into_iter().map(|h| h.join().unwrap()).collect())
    })
}

/// Appends that queue while another one fsyncs are written together after it, in the order
/// they came, and share one fsync; each is acknowledged with its own dense offsets and append
/// time, and all of them survive a power cut.
#[test]
fn appends_queued_behind_an_fsync_share_the_next_one_and_survive_a_power_cut() {
    let f = fixture(FsyncPolicy::Batch);
    let log = f.open().unwrap();
    let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    let syncs_before = f.disk.file_syncs();
    let (first, queued) = group_behind_a_held_fsync(&f, &p, 3, || {});
    assert_eq!(first.unwrap().first_offset, 0);
    let offsets: Vec<(u64, u64)> = queued
        .iter()
        .map(|r| {
            let a = r.as_ref().unwrap();
            (a.first_offset, a.last_offset)
        })
        .collect();
    assert_eq!(offsets, vec![(3, 5), (6, 8), (9, 11)], "queue order, dense offsets");
    assert_eq!(f.disk.file_syncs() - syncs_before, 2, "one fsync for the first append, one for the three queued");
    let all = expected(&[0, 1, 2, 10, 11, 12, 20, 21, 22, 30, 31, 32]);
    assert_eq!(values(&log), all);
    drop((p, log));
    f.disk.crash();
    assert_eq!(values(&f.open().unwrap()), all, "every acknowledged record after a power cut");
}

/// The group's one fsync fails: every call of the group fails, none of their records is
/// served or comes back after a power cut, and the partition stops.
#[test]
fn a_failed_group_fsync_fails_every_call_of_the_group_and_leaves_none_of_them() {
    let f = fixture(FsyncPolicy::Batch);
    let log = f.open().unwrap();
    let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    let disk = f.disk.clone();
    // The first append's fsync passes; the next one, the group's, fails.
    let (first, queued) = group_behind_a_held_fsync(&f, &p, 3, move || disk.fail_sync_after(1));
    assert_eq!(first.unwrap().last_offset, 2);
    for (k, result) in queued.iter().enumerate() {
        let err = result.as_ref().unwrap_err();
        assert!(matches!(err, Error::Stopped { .. } | Error::Io { .. }), "call {k}: {err}");
    }
    assert_eq!(values(&log), expected(&[0, 1, 2]), "no record of the failed group is served");
    assert!(matches!(p.append(&records(40..41), 1_000), Err(Error::Stopped { .. })));
    drop((p, log));
    f.disk.crash();
    assert_eq!(values(&f.open().unwrap()), expected(&[0, 1, 2]), "after a power cut");
}

/// One call of a group fails to write (ENOSPC): it alone is undone; the calls before and
/// after it are acknowledged with dense offsets, and survive a power cut.
#[test]
fn a_write_failing_inside_a_group_undoes_that_call_alone() {
    let f = fixture(FsyncPolicy::Batch);
    let log = f.open().unwrap();
    let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    let disk = f.disk.clone();
    // In the group: the first queued call's write passes, the second's fails.
    let (first, queued) = group_behind_a_held_fsync(&f, &p, 3, move || disk.fail_append_after(1));
    first.unwrap();
    assert_eq!(queued[0].as_ref().unwrap().first_offset, 3);
    assert!(matches!(queued[1], Err(Error::Io { .. })), "{:?}", queued[1]);
    assert_eq!(queued[2].as_ref().unwrap().first_offset, 6, "the failed call's offsets go to the next");
    let kept = expected(&[0, 1, 2, 10, 11, 12, 30, 31, 32]);
    assert_eq!(values(&log), kept);
    assert_eq!(p.append(&records(40..41), 1_000).unwrap().first_offset, 9, "the partition goes on");
    drop((p, log));
    f.disk.crash();
    let mut kept = kept;
    kept.push((9, "value-00040".to_string()));
    assert_eq!(values(&f.open().unwrap()), kept, "after a power cut");
}

/// A call of a group fails to write, and the fsync that would make the call written before it
/// durable fails: the partition stops, both calls fail and are no longer served; after a
/// power cut at most a prefix of the two calls comes back, after every acknowledged record.
#[test]
fn an_fsync_failing_before_an_undo_in_a_group_fails_the_calls_written_before_it_and_serves_none() {
    let f = fixture(FsyncPolicy::Batch);
    let log = f.open().unwrap();
    let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    let disk = f.disk.clone();
    let (first, queued) = group_behind_a_held_fsync(&f, &p, 2, move || {
        disk.fail_append_after(1);
        disk.fail_sync_after(1); // the first append's fsync passes, the one before the undo fails
    });
    first.unwrap();
    for (k, result) in queued.iter().enumerate() {
        assert!(matches!(result, Err(Error::Stopped { .. })), "call {k}: {result:?}");
    }
    assert_eq!(values(&log), expected(&[0, 1, 2]), "the stopped writer serves no record of the group");
    assert_eq!(p.end_offset(), 3);
    drop((p, log));
    f.disk.crash();
    let got = values(&f.open().unwrap());
    let group = expected(&[0, 1, 2, 10, 11, 12, 20, 21, 22]);
    assert!(
        got.len() >= 3 && group.starts_with(&got),
        "every acknowledged record, then a prefix of the group: {got:?}"
    );
}

/// In a group, a call's write fails; the call before it is made durable (an fsync before the
/// undo) and the failed one undone; then the group's fsync fails: the call made durable is
/// acknowledged (it is on the medium and comes back after a power cut), the call after the
/// failed one fails and does not come back.
#[test]
fn a_call_made_durable_before_an_undo_in_its_group_is_acknowledged_even_when_the_group_fsync_fails() {
    let f = fixture(FsyncPolicy::Batch);
    let log = f.open().unwrap();
    let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    let disk = f.disk.clone();
    let (first, queued) = group_behind_a_held_fsync(&f, &p, 3, move || {
        disk.fail_append_after(1); // the second queued call's write fails
        // The first append's fsync, the one before the undo and the undo's pass; the group's fails.
        disk.fail_sync_after(3);
    });
    first.unwrap();
    assert_eq!(queued[0].as_ref().unwrap().first_offset, 3, "durable since the fsync before the undo");
    assert!(matches!(queued[1], Err(Error::Io { .. })), "{:?}", queued[1]);
    assert!(matches!(queued[2], Err(Error::Stopped { .. })), "{:?}", queued[2]);
    let kept = expected(&[0, 1, 2, 10, 11, 12]);
    assert_eq!(values(&log), kept);
    drop((p, log));
    f.disk.crash();
    assert_eq!(values(&f.open().unwrap()), kept, "after a power cut");
}

/// A read-only reader looking while a group's failed call is being undone (in the fsync
/// before the undo) must not see the call written before it in the group: that call is not
/// durable yet, and here that fsync fails, so it is never acknowledged.
#[test]
fn a_read_only_reader_never_serves_a_group_call_that_an_undo_leaves_unacknowledged() {
    use std::sync::Mutex;
    let f = fixture(FsyncPolicy::Batch);
    let log = f.open().unwrap();
    let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    p.append(&records(0..3), 1_000).unwrap();
    let reader = Log::open_read_only_on(f.host.clone(), f.config.clone()).unwrap();
    let rp = reader.topic("t").unwrap().partition(0).unwrap().clone();
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let (looker, looked, disk) = (rp.clone(), seen.clone(), f.disk.clone());
    let (first, queued) = group_behind_a_held_fsync(&f, &p, 2, move || {
        disk.fail_append_after(1); // the second queued call's write fails
        disk.fail_sync_after(1); // the first append's fsync passes, the next fails
        disk.before_next_sync(move || {
            // In the fsync before the undo: the call before the failed one is written, not durable.
            looker.refresh().unwrap();
            looked.lock().unwrap().extend(looker.read(6, 1 << 20).unwrap().iter().map(|s| s.offset));
        });
    });
    assert_eq!(first.unwrap().first_offset, 3);
    assert!(queued.iter().all(|r| matches!(r, Err(Error::Stopped { .. }))), "{queued:?}");
    let seen = seen.lock().unwrap().clone();
    assert!(seen.is_empty(), "the reader served offsets {seen:?} of a call that was never acknowledged");
}

/// Calls of a group roll segments (each roll's fsync makes the calls before it durable), then
/// a write, an fsync or a directory fsync fails (each write, each directory fsync and each of
/// the first file fsyncs tried in turn as the first failure; file fsyncs keep failing after
/// it, a disk returning EIO everywhere), and undos may fail too. The call before the first
/// roll must be answered as what it is: acknowledged, it must survive a power cut; answered
/// as failed, it must not come back (a client told it failed resends it, and the log would
/// hold it twice). Every acknowledged call must survive.
#[test]
fn a_call_made_durable_by_a_roll_in_its_group_is_not_answered_as_failed() {
    let value = |i: u64, bytes: usize| Record {
        value: format!("value-{i:05}-{}", "x".repeat(bytes)).into_bytes(),
        ..record(i)
    };
    let (mut undo_failed, mut q0_failed) = (0, 0);
    let syncs = [None, Some(1), Some(2), Some(3), Some(4)];
    let points = (1..10).flat_map(|a| (0..16).flat_map(move |d| syncs.map(move |s| (a, d, s))));
    for (appends_ok, dir_syncs_ok, syncs_ok) in points {
        let mut f = fixture(FsyncPolicy::Batch);
        f.config.segment.max_bytes = 4096;
        let log = f.open().unwrap();
        let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
        let disk = f.disk.clone();
        // ~3.1 KB; q0 (~0.5 KB) fits in the segment; q1 (~1 KB) rolls it; q2 (~3.5 KB) rolls
        // again.
        let first: Vec<Record> = (0..3).map(|i| value(i, 1000)).collect();
        let queued = vec![vec![value(10, 500)], vec![value(20, 1000)], vec![value(30, 3500)]];
        let (first, queued) = group_of(&f, &p, first, queued, move || {
            disk.fail_append_after(appends_ok);
            disk.fail_dir_sync_after(dir_syncs_ok);
            if let Some(ok) = syncs_ok {
                disk.fail_syncs_after(ok, 100);
            }
        });
        let at = format!("write {appends_ok}, dir fsync {dir_syncs_ok}, fsync {syncs_ok:?}");
        let first = first.unwrap_or_else(|e| panic!("{at}: the first call, before any fault: {e}"));
        let undo = queued.iter().any(|r| r.as_ref().is_err_and(|e| e.to_string().contains("also failed")));
        undo_failed += usize::from(undo);
        q0_failed += usize::from(queued[0].is_err());
        drop((p, log));
        f.disk.disarm();
        f.disk.crash();
        let got: Vec<String> = values(&f.open().unwrap()).into_iter().map(|(_, v)| v).collect();
        let kept = |i: u64| got.iter().any(|v| v.starts_with(&format!("value-{i:05}")));
        assert!(kept(0) && first.last_offset == 2, "{at}: the first call is lost");
        for (k, result) in queued.iter().enumerate() {
            if result.is_ok() {
                assert!(kept(10 * (k as u64 + 1)), "{at}: q{k} was acknowledged and is lost");
            }
        }
        if let Err(e) = &queued[0] {
            assert!(!kept(10), "{at}: q0 was answered '{e}' and is in the log after a power cut");
        }
    }
    assert!(
        undo_failed > 0 && q0_failed > 0,
        "the injection points never reach a failed undo ({undo_failed}) or a failed q0 ({q0_failed})"
    );
}

//! Consumer groups: named, independent positions in a topic. A group's committed offset for
//! a partition is the next offset it will read (Kafka semantics). Stored per group and topic
//! in `<data_dir>/groups/<group>/<topic>.json`; readers that commit do not need the writer
//! lock. Two processes consuming the same partition as the same group at once overwrite each
//! other's commits for that partition (last commit wins), as with an unmanaged Kafka group.
//!
//! A commit is a load-merge-write of the whole file, so commits of *different* partitions
//! (the CLI's per-partition streams, concurrent HTTP requests, several processes) must not
//! interleave, or one would write back a stale offset of another's partition. Each commit
//! therefore holds an OS file lock on `<group>/<topic>.lock` (`flock`: it serialises threads
//! and processes alike, and the OS releases it when a process dies) from the load to the
//! rename. The new file is written under a temp name unique to the commit, fsynced, renamed
//! over the old one, and the directory is fsynced, so readers (who do not lock) see the old
//! or the new offsets, never a torn file.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::topic::validate_name;

const VERSION: u32 = 1;

#[derive(Debug, Default, Serialize, Deserialize)]
struct GroupFile {
    version: u32,
    offsets: BTreeMap<u32, u64>,
}

/// Group names follow the rules of topic names: they become directory names.
pub fn check_name(group: &str) -> Result<()> {
    validate_name(group)
        .map_err(|_| Error::Invalid(format!("invalid group name {group:?}: use letters, digits, '.', '_' and '-'")))
}

fn path(data_dir: &Path, group: &str, topic: &str) -> Result<PathBuf> {
    check_name(group)?;
    validate_name(topic)?;
    Ok(data_dir.join("groups").join(group).join(format!("{topic}.json")))
}

/// Every group with committed offsets (a directory under `<data_dir>/groups` holding at least
/// one topic's offsets; a deleted group keeps its directory and lock files), sorted.
pub fn list(data_dir: &Path) -> Result<Vec<String>> {
    Ok(with_topics(data_dir)?.into_iter().map(|(group, _)| group).collect())
}

/// Every group with committed offsets and the topics it has them in, sorted; each group's
/// directory is read once.
fn with_topics(data_dir: &Path) -> Result<Vec<(String, Vec<String>)>> {
    let dir = data_dir.join("groups");
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&dir, "list groups", e)),
    };
    let mut groups = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(&dir, "list groups", e))?;
        if let Some(name) = entry.file_name().to_str().filter(|n| validate_name(n).is_ok()) {
            let topics = topics(data_dir, name)?;
            if !topics.is_empty() {
                groups.push((name.to_string(), topics));
            }
        }
    }
    groups.sort();
    Ok(groups)
}

/// The topics `group` has committed offsets in, sorted.
fn topics(data_dir: &Path, group: &str) -> Result<Vec<String>> {
    let dir = data_dir.join("groups").join(group);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&dir, "list group topics", e)),
    };
    let mut topics: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".json").map(str::to_string))
        .filter(|topic| validate_name(topic).is_ok())
        .collect();
    topics.sort();
    Ok(topics)
}

/// The topics `group` has committed offsets in (what [`delete`] would delete), sorted.
pub fn topics_of(data_dir: &Path, group: &str) -> Result<Vec<String>> {
    check_name(group)?;
    topics(data_dir, group)
}

/// Deletes `group`'s committed offsets in `topic`, or in every topic: what was deleted, by
/// topic, and whether all went well. What was deleted before an error is returned too, so the
/// caller can report (and audit) it. Each topic's file goes under the lock every commit
/// takes, and the removal is made durable (directory fsync) before the next. A file the store
/// cannot read (damaged, or from a newer version) is deleted too, its offsets reported empty:
/// deleting the group is what it is for. The directory and lock files stay: a commit that
/// waits on the lock must keep locking the same file. A consumer still running commits again
/// afterwards; stop the group first.
pub fn delete(data_dir: &Path, group: &str, topic: Option<&str>) -> (Vec<Committed>, Result<()>) {
    let mut deleted = Vec::new();
    let result = delete_into(data_dir, group, topic, &mut deleted);
    (deleted, result)
}

fn delete_into(data_dir: &Path, group: &str, topic: Option<&str>, deleted: &mut Vec<Committed>) -> Result<()> {
    check_name(group)?;
    let dir = data_dir.join("groups").join(group);
    let names = match topic {
        Some(topic) => vec![topic.to_string()],
        None => topics(data_dir, group)?,
    };
    for topic in names {
        let path = path(data_dir, group, &topic)?;
        if !path.exists() {
            continue;
        }
        let _lock = lock(&dir, &topic)?;
        let offsets = load(data_dir, group, &topic).unwrap_or_else(|e| {
            tracing::warn!(group, topic, error = %e, "deleting committed offsets that cannot be read");
            BTreeMap::new()
        });
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // deleted meanwhile
            Err(e) => return Err(Error::io(&path, "delete group offsets", e)),
        }
        deleted.push(Committed { group: group.to_string(), topic, offsets });
        File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(&dir, "fsync directory", e))?;
    }
    Ok(())
}

/// One group's committed offsets in one topic.
pub struct Committed {
    pub group: String,
    pub topic: String,
    /// Partition → next offset the group reads.
    pub offsets: BTreeMap<u32, u64>,
}

/// Every committed offset in the store, sorted by group and topic.
pub fn all(data_dir: &Path) -> Result<Vec<Committed>> {
    let mut out = Vec::new();
    for (group, topics) in with_topics(data_dir)? {
        for topic in topics {
            let offsets = load(data_dir, &group, &topic)?;
            out.push(Committed { group: group.clone(), topic, offsets });
        }
    }
    Ok(out)
}

/// Committed offsets of `group` in `topic`, by partition (empty for a new group).
pub fn load(data_dir: &Path, group: &str, topic: &str) -> Result<BTreeMap<u32, u64>> {
    let path = path(data_dir, group, topic)?;
    match fs::read(&path) {
        Ok(bytes) => {
            let file: GroupFile =
                serde_json::from_slice(&bytes).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
            if file.version != VERSION {
                return Err(Error::Invalid(format!("{}: unsupported version {}", path.display(), file.version)));
            }
            Ok(file.offsets)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(Error::io(&path, "read group offsets", e)),
    }
}

/// Commits `offsets` (partition → next offset to read) for `group` in `topic`, keeping the
/// committed offsets of every other partition. Durable when it returns.
pub fn commit(data_dir: &Path, group: &str, topic: &str, offsets: &BTreeMap<u32, u64>) -> Result<()> {
    let path = path(data_dir, group, topic)?;
    let dir = path.parent().expect("group file path is <data_dir>/groups/<group>/<topic>.json");
    create_dir_durably(dir)?;
    let _lock = lock(dir, topic)?;
    let mut merged = load(data_dir, group, topic)?;
    merged.extend(offsets);
    remove_leftover_temps(dir, topic)?;
    let bytes = serde_json::to_vec_pretty(&GroupFile { version: VERSION, offsets: merged })
        .expect("a map of integers always serializes");
    crate::disk::replace_via(&path, &temp_path(dir, topic), &bytes)
        .map_err(|e| Error::io(&path, "commit group offsets to", e))
}

/// Creates the group directory, and fsyncs its parent when it was new so the directory entry
/// survives a power cut along with the first commit.
fn create_dir_durably(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create group directory", e))?;
    let parent = dir.parent().unwrap_or(dir);
    File::open(parent).and_then(|d| d.sync_all()).map_err(|e| Error::io(parent, "fsync directory", e))
}

/// Blocks until this commit owns `<topic>.lock`; the lock is released when the file closes.
fn lock(dir: &Path, topic: &str) -> Result<File> {
    let path = dir.join(format!("{topic}.lock"));
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(&path, "open group lock file", e))?;
    file.lock().map_err(|e| Error::io(&path, "lock group offsets with", e))?;
    Ok(file)
}

/// `<topic>.<pid>-<sequence>.tmp`: unique per commit in this process and across processes.
fn temp_path(dir: &Path, topic: &str) -> PathBuf {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{topic}.{}-{sequence}.tmp", std::process::id()))
}

/// Whether `name` is a temp file of `topic`'s commits (and not of a topic whose name merely
/// starts with `topic`: names may contain dots).
fn is_temp_of(name: &str, topic: &str) -> bool {
    let Some(rest) = name.strip_prefix(topic).and_then(|r| r.strip_prefix('.')) else { return false };
    let Some((pid, sequence)) = rest.strip_suffix(".tmp").and_then(|r| r.split_once('-')) else { return false };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(pid) && digits(sequence)
}

/// Removes temp files of commits that died before their rename. Called under the lock, so
/// no live commit of this topic owns one.
fn remove_leftover_temps(dir: &Path, topic: &str) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io(dir, "list group directory", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, "list group directory", e))?;
        if entry.file_name().to_str().is_some_and(|name| is_temp_of(name, topic)) {
            let stale = entry.path();
            fs::remove_file(&stale).map_err(|e| Error::io(&stale, "remove leftover temp file", e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn commits_merge_per_partition_and_groups_are_independent() {
        let dir = tempfile::tempdir().unwrap();
        super::commit(dir.path(), "audit", "t", &[(0, 5)].into()).unwrap();
        super::commit(dir.path(), "audit", "t", &[(1, 7)].into()).unwrap();
        super::commit(dir.path(), "billing", "t", &[(0, 1)].into()).unwrap();
        assert_eq!(super::load(dir.path(), "audit", "t").unwrap(), [(0, 5), (1, 7)].into());
        assert_eq!(super::load(dir.path(), "billing", "t").unwrap(), [(0, 1)].into());
        assert!(super::load(dir.path(), "../x", "t").is_err());
    }

    #[test]
    fn a_deleted_group_is_gone_from_the_store_and_can_commit_again() {
        let dir = tempfile::tempdir().unwrap();
        super::commit(dir.path(), "audit", "t", &[(0, 5)].into()).unwrap();
        super::commit(dir.path(), "audit", "u", &[(1, 7)].into()).unwrap();
        super::commit(dir.path(), "billing", "t", &[(0, 1)].into()).unwrap();
        let one = super::delete(dir.path(), "audit", Some("u")).0;
        assert_eq!((one[0].topic.as_str(), &one[0].offsets), ("u", &[(1, 7)].into()));
        assert_eq!(super::list(dir.path()).unwrap(), ["audit", "billing"]);
        let rest = super::delete(dir.path(), "audit", None).0;
        assert_eq!(rest.iter().map(|c| c.topic.as_str()).collect::<Vec<_>>(), ["t"]);
        assert_eq!(super::list(dir.path()).unwrap(), ["billing"], "a group without offsets is not listed");
        assert!(super::load(dir.path(), "audit", "t").unwrap().is_empty());
        let (again, result) = super::delete(dir.path(), "audit", None);
        assert!(again.is_empty() && result.is_ok(), "deleting again: nothing, no error");
        assert!(super::delete(dir.path(), "../x", None).1.is_err());
        super::commit(dir.path(), "audit", "t", &[(0, 9)].into()).unwrap();
        assert_eq!(super::load(dir.path(), "audit", "t").unwrap(), [(0, 9)].into());
    }

    /// Deletes racing commits of the same group and topic: every call succeeds, no temp file
    /// is left, and the file is either gone or holds offsets a commit wrote (never torn).
    #[test]
    fn deletes_racing_commits_never_fail_or_tear_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let errors: Vec<String> = std::thread::scope(|scope| {
            let committer = scope.spawn(|| {
                (1..=300u64)
                    .filter_map(|n| super::commit(dir.path(), "g", "t", &[(0, n)].into()).err())
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
            });
            let deleter = scope.spawn(|| {
                (0..300)
                    .filter_map(|_| super::delete(dir.path(), "g", None).1.err())
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
            });
            committer.join().unwrap().into_iter().chain(deleter.join().unwrap()).collect()
        });
        assert!(errors.is_empty(), "{errors:?}");
        let left = super::load(dir.path(), "g", "t").unwrap();
        assert!(left.is_empty() || left.get(&0).is_some_and(|&n| n >= 1), "{left:?}");
        let temps = std::fs::read_dir(dir.path().join("groups/g"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".tmp"))
            .count();
        assert_eq!(temps, 0);
    }

    #[test]
    fn temp_files_belong_to_their_topic_only() {
        assert!(super::is_temp_of("t.12-3.tmp", "t"));
        assert!(!super::is_temp_of("t.x.12-3.tmp", "t"), "a temp of topic t.x");
        assert!(!super::is_temp_of("t.json", "t"));
        assert!(!super::is_temp_of("t.-3.tmp", "t"));
    }

    #[test]
    fn a_temp_file_left_by_a_dead_commit_is_removed_by_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        super::commit(dir.path(), "audit", "t", &[(0, 5)].into()).unwrap();
        let stale = dir.path().join("groups/audit/t.999-0.tmp");
        std::fs::write(&stale, b"{half").unwrap();
        super::commit(dir.path(), "audit", "t", &[(1, 7)].into()).unwrap();
        assert!(!stale.exists());
        assert_eq!(super::load(dir.path(), "audit", "t").unwrap(), [(0, 5), (1, 7)].into());
    }

    /// Each thread commits its own partition, round after round, as the CLI's per-partition
    /// streams and the server's concurrent requests do. No commit may fail or be lost.
    #[test]
    fn given_concurrent_commits_of_different_partitions_when_done_then_every_last_offset_is_kept() {
        const THREADS: u32 = 8;
        const ROUNDS: u64 = 200;
        let dir = tempfile::tempdir().unwrap();
        let errors: Vec<String> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..THREADS)
                .map(|p| {
                    let dir = dir.path();
                    scope.spawn(move || {
                        (1..=ROUNDS)
                            .filter_map(|next| super::commit(dir, "audit", "t", &[(p, next)].into()).err())
                            .map(|e| e.to_string())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
        });
        assert!(errors.is_empty(), "{} commits failed, first: {}", errors.len(), errors[0]);
        let expected: std::collections::BTreeMap<u32, u64> = (0..THREADS).map(|p| (p, ROUNDS)).collect();
        assert_eq!(super::load(dir.path(), "audit", "t").unwrap(), expected);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("groups/audit"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "temp files left behind: {leftovers:?}");
    }
}

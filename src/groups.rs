//! Consumer groups: named, independent positions in a topic. A group's committed offset for
//! a partition is the next offset it will read (Kafka semantics). Stored per group and topic
//! in `<data_dir>/groups/<group>/<topic>.json`, written atomically; readers that commit do
//! not need the writer lock. Two processes consuming as the same group at once overwrite
//! each other's commits (last commit wins), as with an unmanaged Kafka group.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::index::write_atomic;
use crate::topic::validate_name;

const VERSION: u32 = 1;

#[derive(Debug, Default, Serialize, Deserialize)]
struct GroupFile {
    version: u32,
    offsets: BTreeMap<u32, u64>,
}

fn path(data_dir: &Path, group: &str, topic: &str) -> Result<PathBuf> {
    validate_name(group)
        .map_err(|_| Error::Invalid(format!("invalid group name {group:?}: use letters, digits, '.', '_' and '-'")))?;
    validate_name(topic)?;
    Ok(data_dir.join("groups").join(group).join(format!("{topic}.json")))
}

/// Committed offsets of `group` in `topic`, by partition (empty for a new group).
pub fn load(data_dir: &Path, group: &str, topic: &str) -> Result<BTreeMap<u32, u64>> {
    let path = path(data_dir, group, topic)?;
    match std::fs::read(&path) {
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

/// Commits `offsets` (partition → next offset to read) for `group` in `topic`.
pub fn commit(data_dir: &Path, group: &str, topic: &str, offsets: &BTreeMap<u32, u64>) -> Result<()> {
    let path = path(data_dir, group, topic)?;
    let mut merged = load(data_dir, group, topic)?;
    merged.extend(offsets);
    let dir = path.parent().expect("group file has a directory");
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create group directory", e))?;
    let bytes = serde_json::to_vec_pretty(&GroupFile { version: VERSION, offsets: merged }).expect("offsets serialize");
    write_atomic(&path, &bytes).map_err(|e| Error::io(&path, "commit group offsets to", e))
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
}

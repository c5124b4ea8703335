//! Legal holds: ranges of a topic that remote retention must never expire, kept in the bucket
//! so that every writer (and a node restored from the bucket) honours them.
//!
//! A numbered series of create-only documents, each holding the complete set of holds, in the
//! manifest's two-line layout:
//!
//! ```text
//! <prefix>/holds/<version:020>.json  format "tierlog-holds", format_version 1
//! {"version":N,"written_ms":…,"writer":{"id":"<who>","epoch":0},"change":"<what this version did, and why>",
//!  "holds":[{"id","topic","from_ms","to_ms","reason","set_ms","set_by"}]}
//! ```
//!
//! Setting or releasing a hold writes the next version (a race for the number is retried on
//! top of the winner), so the series is the history of every hold ever set and released.
//! Reading fails closed: retention expires nothing while the newest version cannot be read
//! (unlike the catalog, a damaged newest version is never skipped: it may hold the newest hold).

use serde::{Deserialize, Serialize};

use crate::catalog::{self, Document};
use crate::error::{Error, Result};
use crate::manifest::{self, Writer};
use crate::store::RemoteStore;

pub const HOLDS_FORMAT: &str = "tierlog-holds";

/// One legal hold on a topic: every record whose timestamp lies in `[from_ms, to_ms)` (an
/// absent end is open) is kept, and so is everything after the first segment holding one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hold {
    pub id: String,
    pub topic: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_ms: Option<i64>,
    pub reason: String,
    pub set_ms: i64,
    /// Who set it: the OS user and host, or a token name.
    pub set_by: String,
}

impl Hold {
    /// The held record-time range `[from, to)`.
    pub fn range(&self) -> (i64, i64) {
        (self.from_ms.unwrap_or(i64::MIN), self.to_ms.unwrap_or(i64::MAX))
    }
}

/// Every hold in force, as of `written_ms`, and who wrote this version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldSet {
    pub version: u64,
    pub written_ms: i64,
    pub writer: Writer,
    /// What this version changed and why ("set <id>: <reason>", "release <id>: <reason>").
    pub change: String,
    pub holds: Vec<Hold>,
}

impl Document for HoldSet {
    const FORMAT: &'static str = HOLDS_FORMAT;
    const FOLDER: &'static str = "holds";
    const LOCKED: bool = true;

    fn version(&self) -> u64 {
        self.version
    }

    fn set_version(&mut self, version: u64) {
        self.version = version;
    }

    fn same_contents(&self, other: &Self) -> bool {
        self.holds == other.holds
    }
}

/// The newest hold set (empty when none was ever written) and its version, probing from
/// `hint`. Fails when the newest version cannot be read: callers must not expire anything then.
pub async fn latest(store: &RemoteStore, hint: u64) -> Result<HoldSet> {
    let newest = manifest::latest_number(store, |v| catalog::key::<HoldSet>(store, v), hint).await?;
    if newest == 0 {
        // No version 1: make sure the series is empty, not cut off at its start (a missing
        // first version must not read as "no holds").
        let folder = store.key(&[<HoldSet as Document>::FOLDER]);
        let mut listing = store.store.list(Some(&folder));
        if let Some(found) =
            futures::TryStreamExt::try_next(&mut listing).await.map_err(|e| store.error(format!("LIST {folder}"), e))?
        {
            return Err(Error::Corrupt {
                key: found.location.to_string(),
                reason: format!(
                    "{folder}/ holds objects but no version 1: the legal holds cannot be trusted, so retention expires nothing; restore the missing versions from a backup or the bucket's object versions"
                ),
            });
        }
        let writer = Writer { id: String::new(), epoch: 0 };
        return Ok(HoldSet { version: 0, written_ms: 0, writer, change: String::new(), holds: Vec::new() });
    }
    let key = catalog::key::<HoldSet>(store, newest);
    let bytes = manifest::get_bytes(store, &key).await?;
    catalog::from_bytes::<HoldSet>(&bytes, key.as_ref(), newest)
}

/// The newest hold set, given one already read: one HEAD when nothing changed.
pub async fn refresh(store: &RemoteStore, known: &HoldSet) -> Result<HoldSet> {
    let newest = manifest::latest_number(store, |v| catalog::key::<HoldSet>(store, v), known.version).await?;
    if newest == known.version {
        return Ok(known.clone()); // (an empty series was checked when `known` was read)
    }
    latest(store, newest).await
}

/// Applies `change` to the newest hold set and writes the result as the next version,
/// create-only; a race for the number is retried on top of the winner's set. Returns the new set.
pub async fn update(
    store: &RemoteStore,
    by: &str,
    now_ms: i64,
    what: &str,
    change: impl Fn(&mut Vec<Hold>) -> Result<()>,
) -> Result<HoldSet> {
    let mut hint = 0;
    for _ in 0..catalog::RACES_MAX {
        let current = latest(store, hint).await?;
        let mut holds = current.holds.clone();
        change(&mut holds)?;
        let next = HoldSet {
            version: current.version + 1,
            written_ms: now_ms,
            writer: Writer { id: by.to_string(), epoch: 0 },
            change: what.to_string(),
            holds,
        };
        match catalog::put_create(store, &next).await? {
            true => return Ok(next),
            false => hint = next.version,
        }
    }
    Err(Error::Format("holds: other writers keep taking the next version number; try again".into()))
}

/// The ranges held on `topic`, for remote retention.
pub fn ranges(set: &HoldSet, topic: &str) -> Vec<(i64, i64)> {
    set.holds.iter().filter(|h| h.topic == topic).map(Hold::range).collect()
}

#[cfg(test)]
mod tests {
    use object_store::ObjectStoreExt;

    use super::*;
    use crate::manifest::tests_support::memory_store;

    fn hold(id: &str, from: Option<i64>, to: Option<i64>) -> Hold {
        Hold {
            id: id.into(),
            topic: "t".into(),
            from_ms: from,
            to_ms: to,
            reason: "case 1".into(),
            set_ms: 1,
            set_by: "alice@host".into(),
        }
    }

    #[tokio::test]
    async fn holds_are_set_and_released_as_a_history_of_versions_and_read_fails_closed() {
        let store = memory_store();
        assert!(latest(&store, 0).await.unwrap().holds.is_empty());
        update(&store, "alice@host", 5, "set a: case 1", |h| {
            h.push(hold("a", Some(10), Some(20)));
            Ok(())
        })
        .await
        .unwrap();
        let set = update(&store, "bob@host", 6, "set b: case 2", |h| {
            h.push(hold("b", None, None));
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(set.version, 2);
        assert_eq!(ranges(&set, "t"), vec![(10, 20), (i64::MIN, i64::MAX)]);
        assert!(ranges(&set, "other").is_empty());
        let released = update(&store, "alice@host", 7, "release b: closed", |h| {
            h.retain(|x| x.id != "b");
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!((released.version, released.holds.len()), (3, 1));
        assert_eq!(latest(&store, 0).await.unwrap(), released);
        // A damaged newest version is an error, never skipped (it may hold the newest hold).
        let key = catalog::key::<HoldSet>(&store, 3);
        store.store.put(&key, b"garbage".to_vec().into()).await.unwrap();
        assert!(latest(&store, 0).await.is_err());
        // Version 1 gone: not "no holds" but an error.
        store.store.delete(&catalog::key::<HoldSet>(&store, 1)).await.unwrap();
        let e = latest(&store, 0).await.unwrap_err();
        assert!(e.to_string().contains("no version 1"), "{e}");
    }

    #[test]
    fn hold_set_golden_bytes() {
        let set = HoldSet {
            version: 1,
            written_ms: 1_700_000_000_000,
            writer: Writer { id: "alice@host".into(), epoch: 0 },
            change: "set a: case 1".into(),
            holds: vec![hold("a", Some(10), None)],
        };
        let bytes = String::from_utf8(catalog::to_bytes(&set)).unwrap();
        let body = r#"{"version":1,"written_ms":1700000000000,"writer":{"id":"alice@host","epoch":0},"change":"set a: case 1","holds":[{"id":"a","topic":"t","from_ms":10,"reason":"case 1","set_ms":1,"set_by":"alice@host"}]}"#;
        assert_eq!(bytes.split_once('\n').unwrap().1.trim_end(), body);
        assert!(bytes.starts_with(r#"{"format":"tierlog-holds","format_version":1,"#));
        assert_eq!(catalog::from_bytes::<HoldSet>(bytes.as_bytes(), "k", 1).unwrap(), set);
    }
}

//! The record: what producers write and consumers read. Owns the in-memory shape only; the
//! byte layout is `batch`'s, the JSON envelope is `envelope`'s.

/// One record. Its offset is not stored here: offsets are assigned densely by the partition
/// at append time and carried beside the record on read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// Milliseconds since the Unix epoch, producer-given or append time.
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    /// Ordered name/value pairs; names are UTF-8, values are bytes. Duplicates are allowed.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// A record read back from the log, with the offset the partition gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub offset: u64,
    pub record: Record,
    /// When the log appended the record's batch (ms since the epoch); `None` for records
    /// written before append times were recorded.
    pub append_time: Option<i64>,
}

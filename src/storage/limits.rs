//! The record limits of the log: one table that the write path checks before anything is
//! appended ([`check_record`], called by `Partition::check_records`) and that the batch
//! decoder enforces on read, so the log never accepts a record it cannot read back.
//!
//! Owns the format's hard limits only. The operator's policy (`log.max_record_bytes`, at most
//! 32 MiB) is checked beside it by the partition and is always tighter than these.
//!
//! The decoder must never become stricter than a previous writer was: a record that an older
//! build accepted and could read stays readable. So every limit here is either one the decoder
//! always enforced (headers per record) or one the batch length bound already implies (bytes).

use crate::batch::{BATCH_BYTES_MAX, HEADER_BYTES};
use crate::record::Record;

/// Headers per record. The decoder refuses more, so a corrupt-but-checksummed count cannot
/// make a reader loop or allocate without limit; Kafka clients rarely send more than a few.
pub const RECORD_HEADERS_MAX: usize = 1024;
/// Records one partition of a Kafka produce request may carry: checked before they are read,
/// since readers (the `kafka-protocol` crate's, and the log's views) reserve memory per record.
pub const PRODUCE_RECORDS_MAX: usize = 1_000_000;
/// Idempotent producers one partition remembers (see `producers`): each takes a few hundred
/// bytes, and a client can make new ones at will.
pub const PRODUCERS_PER_PARTITION_MAX: usize = 10_000;
/// Encoded bytes of one record: it must fit in one batch beside the batch header.
pub const RECORD_BYTES_MAX: usize = BATCH_BYTES_MAX - HEADER_BYTES;
/// Bytes of a key, a value, a header name or a header value: no field can outgrow its record
/// (and every length fits the formats' length fields: `u32` in version 1, an `int32` varint
/// in version 2).
pub const FIELD_BYTES_MAX: usize = RECORD_BYTES_MAX;

/// Which limit a record is over. The caller adds topic, partition and the record's position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("has {count} headers; the maximum is {RECORD_HEADERS_MAX} (headers per record)")]
    Headers { count: usize },
    #[error("has a {field} of {bytes} bytes; the maximum is {FIELD_BYTES_MAX} ({field} bytes)")]
    Field { field: &'static str, bytes: usize },
    #[error("encodes to {bytes} bytes; the maximum is {RECORD_BYTES_MAX} (record bytes)")]
    RecordBytes { bytes: usize },
}

/// Checks `record` against every limit the decoder enforces. Header names need no check:
/// they are `String`s, so always the UTF-8 the decoder requires.
pub fn check_record(record: &Record) -> Result<(), LimitError> {
    if record.headers.len() > RECORD_HEADERS_MAX {
        return Err(LimitError::Headers { count: record.headers.len() });
    }
    let key = record.key.as_ref().map_or(0, Vec::len);
    check_field("key", key)?;
    check_field("value", record.value.len())?;
    for (name, value) in &record.headers {
        check_field("header name", name.len())?;
        check_field("header value", value.len())?;
    }
    check_record_bytes(crate::batch::record_encoded_len(record))
}

/// Checks a record's encoded length (`batch::record_encoded_len`) against the format's limit.
pub fn check_record_bytes(bytes: usize) -> Result<(), LimitError> {
    if bytes > RECORD_BYTES_MAX { Err(LimitError::RecordBytes { bytes }) } else { Ok(()) }
}

fn check_field(field: &'static str, bytes: usize) -> Result<(), LimitError> {
    if bytes > FIELD_BYTES_MAX { Err(LimitError::Field { field, bytes }) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_headers(count: usize) -> Record {
        Record { headers: vec![("h".into(), b"v".to_vec()); count], ..Record::default() }
    }

    #[test]
    fn headers_per_record_are_refused_one_past_the_maximum() {
        assert_eq!(check_record(&with_headers(RECORD_HEADERS_MAX)), Ok(()));
        let err = check_record(&with_headers(RECORD_HEADERS_MAX + 1)).unwrap_err();
        assert_eq!(err.to_string(), "has 1025 headers; the maximum is 1024 (headers per record)");
    }

    #[test]
    fn a_record_that_cannot_fit_in_a_batch_is_refused_by_its_field_first() {
        let value = vec![0u8; RECORD_BYTES_MAX + 1];
        let err = check_record(&Record { value, ..Record::default() }).unwrap_err();
        assert_eq!(err, LimitError::Field { field: "value", bytes: RECORD_BYTES_MAX + 1 });
        // At most 36 bytes of fixed fields (attributes and six varints at their widest) plus
        // the value.
        let fits = Record { value: vec![0u8; RECORD_BYTES_MAX - 36], ..Record::default() };
        assert_eq!(check_record(&fits), Ok(()));
        let value = vec![0u8; RECORD_BYTES_MAX - 35];
        let err = check_record(&Record { value, ..Record::default() }).unwrap_err();
        assert_eq!(err, LimitError::RecordBytes { bytes: RECORD_BYTES_MAX + 1 });
    }
}

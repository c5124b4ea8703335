//! Record batch format, version 1: the unit the log appends, checksums, indexes and tiers.
//!
//! Owns the byte layout of a batch (documented in `docs/FORMAT.md`), its encoding, and its
//! validation on read. It does not know about files: `segment` decides where batches live.
//!
//! A batch holds one or more records with dense offsets `base_offset ..= base_offset + count - 1`.
//! Every batch starts with a magic and carries a CRC32C over everything after the checksum
//! field, so a torn or flipped byte anywhere in the batch is detected before a record is used.

use crate::record::Record;

/// `b"TLB1"` read as a little-endian u32: the first four bytes of every batch.
pub const BATCH_MAGIC: u32 = u32::from_le_bytes(*b"TLB1");
/// Version of the batch layout written by this build. Readers reject any other version.
pub const BATCH_VERSION: u8 = 1;
/// Fixed header size in bytes; records follow it.
pub const HEADER_BYTES: usize = 48;
/// Upper bound on one encoded batch. Positions inside a segment are u32, and a single batch
/// this large would already stall every reader behind it; producers split larger inputs.
pub const BATCH_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Headers per record: defined in the one limit table that writers check too.
pub use crate::limits::RECORD_HEADERS_MAX;

const OFF_CRC: usize = 4;
const OFF_LEN: usize = 8;
const OFF_VERSION: usize = 12;
const OFF_ATTRIBUTES: usize = 13;
const OFF_BASE_OFFSET: usize = 16;
const OFF_MIN_TS: usize = 24;
const OFF_MAX_TS: usize = 32;
const OFF_COUNT: usize = 40;

/// Why a byte range is not a valid batch. Callers add the file and position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("need {needed} bytes, only {available} available (torn write?)")]
    Truncated { needed: usize, available: usize },
    #[error("bad magic {found:#010x} (expected {BATCH_MAGIC:#010x})")]
    BadMagic { found: u32 },
    #[error("unsupported batch version {0} (this build reads version {BATCH_VERSION})")]
    UnsupportedVersion(u8),
    #[error("batch length {0} is outside {HEADER_BYTES}..={BATCH_BYTES_MAX}")]
    BadLength(usize),
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("malformed batch body: {0}")]
    Malformed(&'static str),
    #[error("record at offset {offset} {limit}")]
    OverLimit { offset: u64, limit: crate::limits::LimitError },
}

/// The fixed fields of a batch, readable without decoding its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: u64,
    pub record_count: u32,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    /// Total encoded length including the header.
    pub length: usize,
}

impl BatchHeader {
    pub fn last_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count) - 1
    }

    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count)
    }
}

/// Encoded size of one record inside a batch.
pub fn record_encoded_len(record: &Record) -> usize {
    let headers: usize = record.headers.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    8 + 4 + record.key.as_ref().map_or(0, |k| k.len()) + 4 + record.value.len() + 4 + headers
}

/// Encodes `records` as one batch whose first record gets `base_offset`.
///
/// Panics on an empty slice or a batch over [`BATCH_BYTES_MAX`]: both are programmer errors,
/// callers split input by size before encoding.
pub fn encode(base_offset: u64, records: &[Record]) -> Vec<u8> {
    assert!(!records.is_empty(), "a batch holds at least one record");
    let body: usize = records.iter().map(record_encoded_len).sum();
    let length = HEADER_BYTES + body;
    assert!(length <= BATCH_BYTES_MAX, "batch of {length} bytes exceeds the maximum");
    let min_ts = records.iter().map(|r| r.timestamp).min().unwrap_or_default();
    let max_ts = records.iter().map(|r| r.timestamp).max().unwrap_or_default();

    let mut buf = Vec::with_capacity(length);
    buf.extend_from_slice(&BATCH_MAGIC.to_le_bytes());
    buf.extend_from_slice(&0u32.to_le_bytes()); // crc, filled below
    buf.extend_from_slice(&(length as u32).to_le_bytes());
    buf.push(BATCH_VERSION);
    buf.push(0); // attributes: reserved, must be zero
    buf.extend_from_slice(&0u16.to_le_bytes());
    buf.extend_from_slice(&base_offset.to_le_bytes());
    buf.extend_from_slice(&min_ts.to_le_bytes());
    buf.extend_from_slice(&max_ts.to_le_bytes());
    buf.extend_from_slice(&(records.len() as u32).to_le_bytes());
    buf.extend_from_slice(&0u32.to_le_bytes());
    debug_assert_eq!(buf.len(), HEADER_BYTES);
    for record in records {
        encode_record(&mut buf, record);
    }
    debug_assert_eq!(buf.len(), length);
    let crc = crc32c::crc32c(&buf[OFF_LEN..]);
    buf[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    buf
}

fn encode_record(buf: &mut Vec<u8>, record: &Record) {
    buf.extend_from_slice(&record.timestamp.to_le_bytes());
    match &record.key {
        Some(key) => {
            buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
            buf.extend_from_slice(key);
        }
        None => buf.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
    buf.extend_from_slice(&(record.value.len() as u32).to_le_bytes());
    buf.extend_from_slice(&record.value);
    buf.extend_from_slice(&(record.headers.len() as u32).to_le_bytes());
    for (name, value) in &record.headers {
        buf.extend_from_slice(&(name.len() as u32).to_le_bytes());
        buf.extend_from_slice(name.as_bytes());
        buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
        buf.extend_from_slice(value);
    }
}

/// Reads the header at the start of `bytes` and checks magic, version and length bounds.
/// Does not check the CRC: use [`validate`] before trusting the body.
pub fn peek_header(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    if bytes.len() < HEADER_BYTES {
        return Err(BatchError::Truncated { needed: HEADER_BYTES, available: bytes.len() });
    }
    let magic = u32_at(bytes, 0);
    if magic != BATCH_MAGIC {
        return Err(BatchError::BadMagic { found: magic });
    }
    let length = u32_at(bytes, OFF_LEN) as usize;
    if !(HEADER_BYTES..=BATCH_BYTES_MAX).contains(&length) {
        return Err(BatchError::BadLength(length));
    }
    let version = bytes[OFF_VERSION];
    if version != BATCH_VERSION {
        return Err(BatchError::UnsupportedVersion(version));
    }
    let record_count = u32_at(bytes, OFF_COUNT);
    if record_count == 0 || bytes[OFF_ATTRIBUTES] != 0 {
        return Err(BatchError::Malformed("zero records or unknown attributes"));
    }
    Ok(BatchHeader {
        base_offset: u64_at(bytes, OFF_BASE_OFFSET),
        record_count,
        min_timestamp: u64_at(bytes, OFF_MIN_TS) as i64,
        max_timestamp: u64_at(bytes, OFF_MAX_TS) as i64,
        length,
    })
}

/// Checks the header and CRC of the batch at the start of `bytes`; returns its header.
/// `bytes` may extend past the batch.
pub fn validate(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = peek_header(bytes)?;
    if bytes.len() < header.length {
        return Err(BatchError::Truncated { needed: header.length, available: bytes.len() });
    }
    let stored = u32_at(bytes, OFF_CRC);
    let computed = crc32c::crc32c(&bytes[OFF_LEN..header.length]);
    if stored != computed {
        return Err(BatchError::Checksum { stored, computed });
    }
    Ok(header)
}

/// Whether `bytes` are exactly one whole batch whose length field alone is damaged: with the
/// field read as `bytes.len()`, header and CRC (which covers the length field) check out.
/// A torn write cannot produce this; a flipped bit in the length field can.
pub fn is_whole_with_damaged_length(bytes: &[u8]) -> Option<BatchHeader> {
    if bytes.len() < HEADER_BYTES || u32_at(bytes, OFF_LEN) as usize == bytes.len() {
        return None;
    }
    let mut patched = bytes.to_vec();
    patched[OFF_LEN..OFF_LEN + 4].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
    validate(&patched).ok().filter(|header| header.length == bytes.len())
}

/// A record borrowed from a batch's bytes: reading through views costs no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub offset: u64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    header_count: usize,
    headers: &'a [u8],
}

impl<'a> RecordView<'a> {
    /// Header name/value pairs in order. Their layout was checked when the view was made.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        let mut cursor = Cursor { bytes: self.headers };
        (0..self.header_count).map(move |_| cursor.header().expect("headers were checked when the view was made"))
    }

    pub fn to_record(&self) -> Record {
        Record {
            timestamp: self.timestamp,
            key: self.key.map(<[u8]>::to_vec),
            value: self.value.to_vec(),
            headers: self.headers().map(|(k, v)| (k.to_string(), v.to_vec())).collect(),
        }
    }
}

/// Validates the batch at the start of `bytes` and returns views of its records.
pub fn views(bytes: &[u8]) -> Result<(BatchHeader, Vec<RecordView<'_>>), BatchError> {
    validate(bytes)?;
    views_of_validated(bytes)
}

/// Like [`views`] for bytes that already passed [`validate`] (the CRC is not computed twice).
pub fn views_of_validated(bytes: &[u8]) -> Result<(BatchHeader, Vec<RecordView<'_>>), BatchError> {
    let header = peek_header(bytes)?;
    if bytes.len() < header.length {
        return Err(BatchError::Truncated { needed: header.length, available: bytes.len() });
    }
    let mut cursor = Cursor { bytes: &bytes[HEADER_BYTES..header.length] };
    // A count larger than the body could possibly hold is corrupt; cap the allocation by it.
    let capacity = (header.record_count as usize).min(cursor.bytes.len() / 20 + 1);
    let mut records = Vec::with_capacity(capacity);
    for i in 0..u64::from(header.record_count) {
        records.push(cursor.record(header.base_offset + i)?);
    }
    if !cursor.bytes.is_empty() {
        return Err(BatchError::Malformed("trailing bytes after the last record"));
    }
    Ok((header, records))
}

/// Validates the batch at the start of `bytes` and decodes its records as `(offset, record)`.
pub fn decode(bytes: &[u8]) -> Result<(BatchHeader, Vec<(u64, Record)>), BatchError> {
    let (header, views) = views(bytes)?;
    Ok((header, views.iter().map(|v| (v.offset, v.to_record())).collect()))
}

struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BatchError> {
        if self.bytes.len() < n {
            return Err(BatchError::Malformed("record runs past the end of the batch"));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, BatchError> {
        Ok(u32_at(self.take(4)?, 0))
    }

    fn record(&mut self, offset: u64) -> Result<RecordView<'a>, BatchError> {
        let timestamp = u64_at(self.take(8)?, 0) as i64;
        let key_len = self.u32()?;
        let key = if key_len == u32::MAX { None } else { Some(self.take(key_len as usize)?) };
        let value_len = self.u32()? as usize;
        let value = self.take(value_len)?;
        let header_count = self.u32()? as usize;
        if header_count > RECORD_HEADERS_MAX {
            let limit = crate::limits::LimitError::Headers { count: header_count };
            return Err(BatchError::OverLimit { offset, limit });
        }
        let headers_start = self.bytes;
        for _ in 0..header_count {
            self.header()?;
        }
        let headers = &headers_start[..headers_start.len() - self.bytes.len()];
        Ok(RecordView { offset, timestamp, key, value, header_count, headers })
    }

    fn header(&mut self) -> Result<(&'a str, &'a [u8]), BatchError> {
        let name_len = self.u32()? as usize;
        let name =
            std::str::from_utf8(self.take(name_len)?).map_err(|_| BatchError::Malformed("header name is not UTF-8"))?;
        let value_len = self.u32()? as usize;
        Ok((name, self.take(value_len)?))
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4-byte slice"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8-byte slice"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<Record> {
        vec![
            Record {
                timestamp: 1_700_000_000_000,
                key: Some(b"acct-1".to_vec()),
                value: b"{\"amount\":12}".to_vec(),
                headers: vec![("source".into(), b"pos".to_vec())],
            },
            Record { timestamp: 1_699_999_999_000, key: None, value: b"x".to_vec(), headers: vec![] },
        ]
    }

    /// Golden bytes for version 1. If this test fails, the on-disk format changed: bump
    /// BATCH_VERSION and keep a reader for the old version instead of editing the constant.
    #[test]
    fn batch_v1_golden_bytes() {
        let bytes = encode(7, &sample());
        let golden = "544c423168e015797d0000000100000007000000000000001864e5cf8b0100000068e5cf8b010000\
                      02000000000000000068e5cf8b01000006000000616363742d310d0000007b22616d6f756e74223a31327d\
                      0100000006000000736f7572636503000000706f731864e5cf8b010000ffffffff010000007800000000";
        let golden: String = golden.split_whitespace().collect();
        assert_eq!(hex(&bytes), golden);
    }

    #[test]
    fn decode_returns_dense_offsets_and_header_summary() {
        let (header, records) = decode(&encode(100, &sample())).unwrap();
        assert_eq!(header.base_offset, 100);
        assert_eq!(header.last_offset(), 101);
        assert_eq!(header.min_timestamp, 1_699_999_999_000);
        assert_eq!(header.max_timestamp, 1_700_000_000_000);
        assert_eq!(records.iter().map(|(o, _)| *o).collect::<Vec<_>>(), vec![100, 101]);
        assert_eq!(records.into_iter().map(|(_, r)| r).collect::<Vec<_>>(), sample());
    }

    #[test]
    fn truncated_batch_is_reported_as_truncated() {
        let bytes = encode(0, &sample());
        let err = validate(&bytes[..bytes.len() - 1]).unwrap_err();
        assert!(matches!(err, BatchError::Truncated { .. }), "{err}");
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub(crate) fn arb_record() -> impl Strategy<Value = Record> {
        (
            any::<i64>(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..32)),
            proptest::collection::vec(any::<u8>(), 0..256),
            proptest::collection::vec(("[a-z]{0,8}", proptest::collection::vec(any::<u8>(), 0..16)), 0..4),
        )
            .prop_map(|(timestamp, key, value, headers)| Record { timestamp, key, value, headers })
    }

    proptest! {
        #[test]
        fn round_trip_preserves_every_record(base in 0u64..u64::MAX / 2,
                                             records in proptest::collection::vec(arb_record(), 1..20)) {
            let bytes = encode(base, &records);
            let (header, decoded) = decode(&bytes).unwrap();
            prop_assert_eq!(header.length, bytes.len());
            prop_assert_eq!(header.record_count as usize, records.len());
            let decoded: Vec<Record> = decoded.into_iter().map(|(_, r)| r).collect();
            prop_assert_eq!(decoded, records);
        }

        #[test]
        fn any_single_byte_corruption_is_detected(records in proptest::collection::vec(arb_record(), 1..8),
                                                  position in any::<prop::sample::Index>(),
                                                  flip in 1u8..=255) {
            let mut bytes = encode(3, &records);
            let at = position.index(bytes.len());
            bytes[at] ^= flip;
            prop_assert!(decode(&bytes).is_err(), "flip at {} of {} went unnoticed", at, bytes.len());
        }
    }
}

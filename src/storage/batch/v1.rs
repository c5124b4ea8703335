//! Batch format version 1 (`TLB1`, tierlog's own layout, little-endian), written by builds
//! before the switch to Kafka's RecordBatch v2. Read only: segments and archive objects of
//! that time stay readable forever. Layout in `docs/FORMAT.md`.

use super::{BatchError, BatchHeader, Cursor, RECORD_HEADERS_MAX, RecordView};

/// `b"TLB1"` read as a little-endian u32: the first four bytes of every version-1 batch.
pub const MAGIC: u32 = u32::from_le_bytes(*b"TLB1");
pub const HEADER_BYTES: usize = 48;
const VERSION: u8 = 1;

const OFF_CRC: usize = 4;
const OFF_LEN: usize = 8;
const OFF_VERSION: usize = 12;
const OFF_ATTRIBUTES: usize = 13;
const OFF_BASE_OFFSET: usize = 16;
const OFF_MIN_TS: usize = 24;
const OFF_MAX_TS: usize = 32;
const OFF_COUNT: usize = 40;

/// Whether `bytes` start with the version-1 magic.
pub fn is_v1(bytes: &[u8]) -> bool {
    bytes.len() >= 4 && u32_at(bytes, 0) == MAGIC
}

/// Reads and checks the fixed header; `bytes` starts with the version-1 magic.
pub fn peek_header(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    if bytes.len() < HEADER_BYTES {
        return Err(BatchError::Truncated { needed: HEADER_BYTES, available: bytes.len() });
    }
    let length = u32_at(bytes, OFF_LEN) as usize;
    if !(HEADER_BYTES..=super::BATCH_BYTES_MAX).contains(&length) {
        return Err(BatchError::BadLength(length));
    }
    let version = bytes[OFF_VERSION];
    if version != VERSION {
        return Err(BatchError::UnsupportedVersion(version));
    }
    let record_count = u32_at(bytes, OFF_COUNT);
    if record_count == 0 || bytes[OFF_ATTRIBUTES] != 0 {
        return Err(BatchError::Malformed("zero records or unknown attributes"));
    }
    Ok(BatchHeader {
        version: 1,
        base_offset: u64_at(bytes, OFF_BASE_OFFSET),
        record_count,
        min_timestamp: u64_at(bytes, OFF_MIN_TS) as i64,
        max_timestamp: u64_at(bytes, OFF_MAX_TS) as i64,
        append_time: None,
        length,
        producer: None,
        checksum: u32_at(bytes, OFF_CRC),
    })
}

/// The stored and the computed CRC (which covers the length field and everything after it).
pub fn checksums(bytes: &[u8], header: &BatchHeader) -> (u32, u32) {
    (u32_at(bytes, OFF_CRC), crc32c::crc32c(&bytes[OFF_LEN..header.length]))
}

/// The records of a validated batch.
pub fn views<'a>(bytes: &'a [u8], header: &BatchHeader) -> Result<Vec<RecordView<'a>>, BatchError> {
    let mut cursor = Cursor { bytes: &bytes[HEADER_BYTES..header.length] };
    // A count larger than the body could possibly hold is corrupt; cap the allocation by it.
    let capacity = (header.record_count as usize).min(cursor.bytes.len() / 20 + 1);
    let mut records = Vec::with_capacity(capacity);
    for i in 0..u64::from(header.record_count) {
        records.push(record(&mut cursor, header.base_offset + i)?);
    }
    if !cursor.bytes.is_empty() {
        return Err(BatchError::Malformed("trailing bytes after the last record"));
    }
    Ok(records)
}

fn record<'a>(cursor: &mut Cursor<'a>, offset: u64) -> Result<RecordView<'a>, BatchError> {
    let timestamp = u64_at(cursor.take(8)?, 0) as i64;
    let key_len = u32_at(cursor.take(4)?, 0);
    let key = if key_len == u32::MAX { None } else { Some(cursor.take(key_len as usize)?) };
    let value_len = u32_at(cursor.take(4)?, 0) as usize;
    let value = cursor.take(value_len)?;
    let header_count = u32_at(cursor.take(4)?, 0) as usize;
    if header_count > RECORD_HEADERS_MAX {
        let limit = crate::limits::LimitError::Headers { count: header_count };
        return Err(BatchError::OverLimit { offset, limit });
    }
    let headers_start = cursor.bytes;
    for _ in 0..header_count {
        header_pair(cursor)?;
    }
    let headers = &headers_start[..headers_start.len() - cursor.bytes.len()];
    Ok(RecordView { offset, timestamp, append_time: None, key, value, version: 1, header_count, headers })
}

/// One header of a record: a UTF-8 name and a value.
pub fn header_pair<'a>(cursor: &mut Cursor<'a>) -> Result<(&'a str, &'a [u8]), BatchError> {
    let name_len = u32_at(cursor.take(4)?, 0) as usize;
    let name =
        std::str::from_utf8(cursor.take(name_len)?).map_err(|_| BatchError::Malformed("header name is not UTF-8"))?;
    let value_len = u32_at(cursor.take(4)?, 0) as usize;
    Ok((name, cursor.take(value_len)?))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4-byte slice"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8-byte slice"))
}

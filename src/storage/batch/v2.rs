//! Batch format version 2: Kafka's RecordBatch v2 (magic 2), uncompressed, as Apache Kafka
//! documents it ("Record Batch" in the protocol's message format). The layout is in
//! `docs/FORMAT.md`; this module encodes it and reads it back.
//!
//! Kafka's CRC32C covers the bytes from `attributes` to the end. The three fields before it
//! are checked otherwise: `batchLength` by the structure (the CRC over exactly that many bytes
//! must match), `partitionLeaderEpoch` by its fixed value (-1: tierlog has no leader epochs),
//! and `baseOffset` by every reader, against the offset the segment index or the previous
//! batch says comes next (a batch read in isolation cannot know its offset is wrong).

use super::{BatchError, BatchHeader, Cursor, ProducerStamp, RECORD_HEADERS_MAX, RecordView};
use crate::record::Record;

/// Kafka's magic byte for RecordBatch v2, at byte 16.
pub const MAGIC: u8 = 2;
/// The fixed header: `baseOffset` through `recordCount`.
pub const HEADER_BYTES: usize = 61;
/// tierlog has no partition leaders; Kafka's "no epoch".
const NO_LEADER_EPOCH: i32 = -1;
const NO_PRODUCER_ID: i64 = -1;
const NO_PRODUCER_EPOCH: i16 = -1;
const NO_SEQUENCE: i32 = -1;
/// Kafka's timestamp-type bit of `attributes`: set, `maxTimestamp` holds the time the log
/// appended the batch (LogAppendTime) while the records keep the producer's timestamps in
/// `baseTimestamp` + deltas. tierlog sets it on every batch it writes (see `stamp`).
const LOG_APPEND_TIME: i16 = 0x08;

const OFF_LENGTH: usize = 8;
const OFF_EPOCH: usize = 12;
pub const OFF_MAGIC: usize = 16;
const OFF_CRC: usize = 17;
/// The CRC covers everything from here to the end of the batch.
const OFF_ATTRIBUTES: usize = 21;
const OFF_LAST_DELTA: usize = 23;
const OFF_BASE_TS: usize = 27;
const OFF_MAX_TS: usize = 35;
const OFF_PRODUCER_ID: usize = 43;
const OFF_PRODUCER_EPOCH: usize = 51;
const OFF_BASE_SEQUENCE: usize = 53;
const OFF_COUNT: usize = 57;
/// `batchLength` counts the bytes after itself.
const LENGTH_FIELD_END: usize = 12;

/// Encoded size of one record, including its length prefix, with the timestamp delta and
/// the offset delta at their widest: an upper bound that does not depend on the batch.
pub fn record_len_bound(record: &Record) -> usize {
    let headers = record.headers.iter().map(|(k, v)| (k.len(), v.len()));
    len_bound(record.key.as_ref().map_or(0, Vec::len), record.value.len(), headers)
}

/// [`record_len_bound`] of a record read from a batch.
pub fn view_len_bound(view: &RecordView<'_>) -> usize {
    len_bound(view.key.map_or(0, <[u8]>::len), view.value.len(), view.headers().map(|(k, v)| (k.len(), v.len())))
}

fn len_bound(key: usize, value: usize, headers: impl Iterator<Item = (usize, usize)>) -> usize {
    const VARLONG_MAX: usize = 10;
    const VARINT_MAX: usize = 5;
    let headers: usize = headers.map(|(k, v)| 2 * VARINT_MAX + k + v).sum();
    // Length, attributes, timestamp delta, offset delta, key length, key, value length,
    // value, header count, headers.
    VARINT_MAX + 1 + VARLONG_MAX + VARINT_MAX + VARINT_MAX + key + VARINT_MAX + value + VARINT_MAX + headers
}

/// A batch a Kafka producer sent that the log can store exactly as it is, once its base
/// offset is set: one batch filling `bytes`, uncompressed, neither transactional nor control,
/// producer fields either all -1 or an idempotent producer's (see [`peek_header`]), its CRC
/// right, and records this module reads back as they are (known timestamps, none below the
/// base, no null value or header value). Its records, or `None` for anything else (the caller
/// decodes and re-encodes those).
pub fn storable(bytes: &[u8]) -> Option<(BatchHeader, Vec<RecordView<'_>>)> {
    // Producers send CreateTime batches; the append time is the log's to set.
    if bytes.len() < HEADER_BYTES || bytes[OFF_MAGIC] != MAGIC || bytes[OFF_ATTRIBUTES..OFF_LAST_DELTA] != [0, 0] {
        return None;
    }
    // Producers send a leader epoch (librdkafka: 0); the stored batch gets -1 (see
    // `with_base_offset`), which is what the header must read as.
    let mut fixed = [0u8; HEADER_BYTES];
    fixed.copy_from_slice(&bytes[..HEADER_BYTES]);
    fixed[OFF_EPOCH..OFF_MAGIC].copy_from_slice(&NO_LEADER_EPOCH.to_be_bytes());
    let header = peek_header(&fixed).ok()?;
    // A negative timestamp may be Kafka's "none" (-1), which the decoding path replaces. The
    // record count is held to the produce limit before records are read (a view each).
    let many = header.record_count as usize > crate::limits::PRODUCE_RECORDS_MAX;
    if header.length != bytes.len() || header.min_timestamp < 0 || many {
        return None;
    }
    let (stored, computed) = checksums(bytes, &header);
    if stored != computed {
        return None;
    }
    let views = views(bytes, &header).ok()?;
    // The header's timestamps must be the records' own smallest and largest: the indexes and
    // time lookups trust them (a producer may claim a max no record reaches).
    let min = views.iter().map(|v| v.timestamp).min()?;
    let max = views.iter().map(|v| v.timestamp).max()?;
    (min == header.min_timestamp && max == header.max_timestamp).then_some((header, views))
}

/// The producer id field of the version-2 batch at the start of `bytes`, as sent (not
/// validated), if `bytes` hold one.
pub fn claimed_producer_id(bytes: &[u8]) -> Option<i64> {
    (bytes.len() >= HEADER_BYTES && bytes[OFF_MAGIC] == MAGIC)
        .then(|| i64::from_be_bytes(array(bytes, OFF_PRODUCER_ID)))
}

/// A copy of the batch `bytes` starting at `base_offset`, with no leader epoch (-1). Neither
/// field is covered by the CRC.
pub fn with_base_offset(bytes: &[u8], base_offset: u64) -> Vec<u8> {
    let mut out = bytes.to_vec();
    set_base_offset(&mut out, base_offset);
    out
}

/// Moves the batch in `bytes` to start at `base_offset` (no leader epoch): fields outside
/// the CRC, so it stays valid.
pub fn set_base_offset(bytes: &mut [u8], base_offset: u64) {
    let base = i64::try_from(base_offset).expect("offsets fit in Kafka's int64");
    bytes[..8].copy_from_slice(&base.to_be_bytes());
    bytes[OFF_EPOCH..OFF_MAGIC].copy_from_slice(&NO_LEADER_EPOCH.to_be_bytes());
}

/// Encodes `records` as one batch of at most `max_length` bytes (panics past it: callers split
/// input by size). Its `baseTimestamp` is the smallest timestamp of the batch (Kafka writes
/// the first record's; readers add each record's delta either way). With `append_time` the
/// batch is stamped (LogAppendTime, see [`stamp`]); without, it is CreateTime.
pub fn encode(
    base_offset: u64,
    records: &[Record],
    producer: Option<ProducerStamp>,
    append_time: Option<i64>,
    max_length: usize,
) -> Vec<u8> {
    assert!(!records.is_empty(), "a batch holds at least one record");
    let base_offset = i64::try_from(base_offset).expect("offsets fit in Kafka's int64");
    let min_ts = records.iter().map(|r| r.timestamp).min().unwrap_or_default();
    let max_ts = records.iter().map(|r| r.timestamp).max().unwrap_or_default();
    let bodies: Vec<usize> = records.iter().enumerate().map(|(i, r)| body_len(r, i, min_ts)).collect();
    let length = HEADER_BYTES + bodies.iter().map(|&b| varint_len(b as i64) + b).sum::<usize>();
    assert!(length <= max_length, "batch of {length} bytes exceeds the maximum of {max_length}");
    let count = i32::try_from(records.len()).expect("a batch's record count fits in int32");

    let mut buf = Vec::with_capacity(length);
    buf.extend_from_slice(&base_offset.to_be_bytes());
    buf.extend_from_slice(&((length - LENGTH_FIELD_END) as i32).to_be_bytes());
    buf.extend_from_slice(&NO_LEADER_EPOCH.to_be_bytes());
    buf.push(MAGIC);
    buf.extend_from_slice(&0u32.to_be_bytes()); // crc, filled below
    // attributes: no compression, not transactional; CreateTime or LogAppendTime
    buf.extend_from_slice(&(if append_time.is_some() { LOG_APPEND_TIME } else { 0 }).to_be_bytes());
    buf.extend_from_slice(&(count - 1).to_be_bytes());
    buf.extend_from_slice(&min_ts.to_be_bytes());
    buf.extend_from_slice(&append_time.unwrap_or(max_ts).to_be_bytes());
    let stamp =
        producer.map_or((NO_PRODUCER_ID, NO_PRODUCER_EPOCH, NO_SEQUENCE), |p| (p.id, p.epoch, p.first_sequence));
    buf.extend_from_slice(&stamp.0.to_be_bytes());
    buf.extend_from_slice(&stamp.1.to_be_bytes());
    buf.extend_from_slice(&stamp.2.to_be_bytes());
    buf.extend_from_slice(&count.to_be_bytes());
    debug_assert_eq!(buf.len(), HEADER_BYTES);
    for (i, (record, body)) in records.iter().zip(bodies).enumerate() {
        put_varint(&mut buf, body as i64);
        let start = buf.len();
        buf.push(0); // record attributes: unused by Kafka
        put_varint(&mut buf, record.timestamp.wrapping_sub(min_ts));
        put_varint(&mut buf, i as i64);
        put_bytes(&mut buf, record.key.as_deref());
        put_bytes(&mut buf, Some(&record.value));
        put_varint(&mut buf, record.headers.len() as i64);
        for (name, value) in &record.headers {
            put_bytes(&mut buf, Some(name.as_bytes()));
            put_bytes(&mut buf, Some(value));
        }
        debug_assert_eq!(buf.len() - start, body);
    }
    debug_assert_eq!(buf.len(), length);
    let crc = crc32c::crc32c(&buf[OFF_ATTRIBUTES..]);
    buf[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    buf
}

/// Bytes of a record after its length prefix.
fn body_len(record: &Record, index: usize, min_ts: i64) -> usize {
    let field = |bytes: Option<&[u8]>| bytes.map_or(varint_len(-1), |b| varint_len(b.len() as i64) + b.len());
    let headers: usize =
        record.headers.iter().map(|(name, value)| field(Some(name.as_bytes())) + field(Some(value))).sum();
    1 + varint_len(record.timestamp.wrapping_sub(min_ts))
        + varint_len(index as i64)
        + field(record.key.as_deref())
        + field(Some(&record.value))
        + varint_len(record.headers.len() as i64)
        + headers
}

fn put_bytes(buf: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(buf, -1),
        Some(bytes) => {
            put_varint(buf, bytes.len() as i64);
            buf.extend_from_slice(bytes);
        }
    }
}

/// Kafka's zig-zag varint/varlong (the same encoding for both widths).
fn put_varint(buf: &mut Vec<u8>, value: i64) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    while raw >= 0x80 {
        buf.push((raw as u8) | 0x80);
        raw >>= 7;
    }
    buf.push(raw as u8);
}

fn varint_len(value: i64) -> usize {
    let raw = ((value << 1) ^ (value >> 63)) as u64;
    (64 - raw.leading_zeros() as usize).max(1).div_ceil(7)
}

/// Reads and checks the fixed header; `bytes` starts with a batch whose magic byte is 2.
pub fn peek_header(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let mut header = fixed_header(bytes)?;
    // A stamped batch's header holds the append time where CreateTime holds the largest
    // record timestamp, which the indexes need: read it off the records.
    if header.append_time.is_some() {
        if bytes.len() < header.length {
            return Err(BatchError::Truncated { needed: header.length, available: bytes.len() });
        }
        let records = &bytes[HEADER_BYTES..header.length];
        header.max_timestamp = largest_timestamp(records, header.min_timestamp, header.record_count)?;
    }
    Ok(header)
}

/// The framing fields of the batch at the start of `bytes` (which may hold its header only):
/// what a scan needs to step over it, judge a torn tail or see its append time.
pub fn peek_frame(bytes: &[u8]) -> Result<super::Frame, BatchError> {
    let h = fixed_header(bytes)?;
    Ok(super::Frame {
        version: 2,
        base_offset: h.base_offset,
        record_count: h.record_count,
        length: h.length,
        append_time: h.append_time,
    })
}

/// Reads and checks the fixed header alone. For a stamped batch `max_timestamp` is the
/// header's field (the append time), not yet the largest record timestamp.
fn fixed_header(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    if bytes.len() < HEADER_BYTES {
        return Err(BatchError::Truncated { needed: HEADER_BYTES, available: bytes.len() });
    }
    let length = i32::from_be_bytes(array(bytes, OFF_LENGTH)) as i64 + LENGTH_FIELD_END as i64;
    if !(HEADER_BYTES as i64..=super::BATCH_BYTES_MAX as i64).contains(&length) {
        return Err(BatchError::BadLength(length.max(0) as usize));
    }
    let base_offset = i64::from_be_bytes(array(bytes, 0));
    if base_offset < 0 {
        return Err(BatchError::Malformed("negative base offset"));
    }
    if i32::from_be_bytes(array(bytes, OFF_EPOCH)) != NO_LEADER_EPOCH {
        return Err(BatchError::Malformed("partition leader epoch is not -1 (tierlog writes no epochs)"));
    }
    let stamped = match i16::from_be_bytes(array(bytes, OFF_ATTRIBUTES)) {
        0 => false,
        LOG_APPEND_TIME => true,
        _ => return Err(BatchError::Malformed("attributes other than 0 or LogAppendTime (compression, transactions)")),
    };
    let count = i32::from_be_bytes(array(bytes, OFF_COUNT));
    let last_delta = i32::from_be_bytes(array(bytes, OFF_LAST_DELTA));
    if count < 1 || last_delta != count - 1 {
        return Err(BatchError::Malformed("record count is zero or does not match lastOffsetDelta"));
    }
    let max_field = i64::from_be_bytes(array(bytes, OFF_MAX_TS));
    Ok(BatchHeader {
        version: 2,
        base_offset: base_offset as u64,
        record_count: count as u32,
        min_timestamp: i64::from_be_bytes(array(bytes, OFF_BASE_TS)),
        max_timestamp: max_field,
        append_time: stamped.then_some(max_field),
        length: length as usize,
        producer: producer(bytes)?,
        checksum: u32::from_be_bytes(array(bytes, OFF_CRC)),
    })
}

/// The largest record timestamp of a stamped batch's `records`, read without decoding keys,
/// values or headers (their checks are the decoder's, on every read of the records).
fn largest_timestamp(records: &[u8], base: i64, count: u32) -> Result<i64, BatchError> {
    let mut cursor = Cursor { bytes: records };
    let mut max = i64::MIN;
    for _ in 0..count {
        let len = length(&mut cursor, "record length")?;
        let mut record = Cursor { bytes: cursor.take(len)? };
        record.take(1)?; // attributes
        max = max.max(base.wrapping_add(varint(&mut record)?));
    }
    Ok(max)
}

/// Sets the append time of a version-2 batch (LogAppendTime, `maxTimestamp` = `append_time`)
/// and its CRC. The records' own timestamps are untouched.
pub fn stamp(bytes: &mut [u8], append_time: i64) {
    bytes[OFF_ATTRIBUTES..OFF_LAST_DELTA].copy_from_slice(&LOG_APPEND_TIME.to_be_bytes());
    bytes[OFF_MAX_TS..OFF_PRODUCER_ID].copy_from_slice(&append_time.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[OFF_ATTRIBUTES..]);
    bytes[OFF_CRC..OFF_ATTRIBUTES].copy_from_slice(&crc.to_be_bytes());
}

/// The CRC the batch had before it was stamped (CreateTime, `maxTimestamp` = the largest
/// record timestamp): what an idempotent producer's retry of it carries.
pub fn sent_checksum(bytes: &[u8], header: &BatchHeader) -> u32 {
    if header.append_time.is_none() {
        return header.checksum;
    }
    let crc = crc32c::crc32c(&0i16.to_be_bytes());
    let crc = crc32c::crc32c_append(crc, &bytes[OFF_LAST_DELTA..OFF_MAX_TS]);
    let crc = crc32c::crc32c_append(crc, &header.max_timestamp.to_be_bytes());
    crc32c::crc32c_append(crc, &bytes[OFF_PRODUCER_ID..header.length])
}

/// A validated batch as Kafka would serve it from a CreateTime topic: a stamped batch with
/// its append time removed (CreateTime, `maxTimestamp` = the largest record timestamp, the
/// CRC set again), anything else as it is.
pub fn unstamped(bytes: &[u8], header: &BatchHeader, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&bytes[..header.length]);
    if header.append_time.is_some() {
        let batch = &mut out[start..];
        batch[OFF_ATTRIBUTES..OFF_LAST_DELTA].fill(0);
        batch[OFF_MAX_TS..OFF_PRODUCER_ID].copy_from_slice(&header.max_timestamp.to_be_bytes());
        let crc = crc32c::crc32c(&batch[OFF_ATTRIBUTES..]);
        batch[OFF_CRC..OFF_ATTRIBUTES].copy_from_slice(&crc.to_be_bytes());
    }
}

/// The producer fields: all -1 (no idempotent producer), or an idempotent producer's id,
/// epoch and first sequence, none negative. Anything else is a damaged header.
fn producer(bytes: &[u8]) -> Result<Option<ProducerStamp>, BatchError> {
    let id = i64::from_be_bytes(array(bytes, OFF_PRODUCER_ID));
    let epoch = i16::from_be_bytes(array(bytes, OFF_PRODUCER_EPOCH));
    let first_sequence = i32::from_be_bytes(array(bytes, OFF_BASE_SEQUENCE));
    match (id, epoch, first_sequence) {
        (NO_PRODUCER_ID, NO_PRODUCER_EPOCH, NO_SEQUENCE) => Ok(None),
        (0.., 0.., 0..) => Ok(Some(ProducerStamp { id, epoch, first_sequence })),
        _ => Err(BatchError::Malformed("producer id, epoch and sequence are neither all -1 nor all non-negative")),
    }
}

/// The stored and the computed CRC of a batch whose `header` was read from `bytes`.
pub fn checksums(bytes: &[u8], header: &BatchHeader) -> (u32, u32) {
    (u32::from_be_bytes(array(bytes, OFF_CRC)), crc32c::crc32c(&bytes[OFF_ATTRIBUTES..header.length]))
}

/// The records of a validated batch.
pub fn views<'a>(bytes: &'a [u8], header: &BatchHeader) -> Result<Vec<RecordView<'a>>, BatchError> {
    let mut cursor = Cursor { bytes: &bytes[HEADER_BYTES..header.length] };
    // A count larger than the body could possibly hold is corrupt; cap the allocation by it.
    let capacity = (header.record_count as usize).min(cursor.bytes.len() / 7 + 1);
    let mut records = Vec::with_capacity(capacity);
    for i in 0..header.record_count {
        let offset = header.base_offset + u64::from(i);
        let len = length(&mut cursor, "record length")?;
        let mut record = Cursor { bytes: cursor.take(len)? };
        if record.take(1)?[0] != 0 {
            return Err(BatchError::Malformed("record attributes other than 0"));
        }
        let timestamp = header.min_timestamp.wrapping_add(varint(&mut record)?);
        if !(header.min_timestamp..=header.max_timestamp).contains(&timestamp) {
            return Err(BatchError::Malformed("record timestamp outside the batch's base and max timestamps"));
        }
        if varint32(&mut record)? != i64::from(i) {
            return Err(BatchError::Malformed("record offset delta is not its place in the batch"));
        }
        let key = nullable(&mut record)?;
        let value = nullable(&mut record)?.ok_or(BatchError::Malformed("null value"))?;
        let header_count = varint32(&mut record)?;
        if !(0..=RECORD_HEADERS_MAX as i64).contains(&header_count) {
            let limit = crate::limits::LimitError::Headers { count: header_count.max(0) as usize };
            return Err(BatchError::OverLimit { offset, limit });
        }
        let headers = record.bytes;
        for _ in 0..header_count {
            header_pair(&mut record)?;
        }
        if !record.bytes.is_empty() {
            return Err(BatchError::Malformed("bytes after the record's last header"));
        }
        records.push(RecordView {
            offset,
            timestamp,
            append_time: header.append_time,
            key,
            value,
            version: 2,
            header_count: header_count as usize,
            headers,
        });
    }
    if !cursor.bytes.is_empty() {
        return Err(BatchError::Malformed("trailing bytes after the last record"));
    }
    Ok(records)
}

/// One header of a record: a UTF-8 name and a (non-null) value.
pub fn header_pair<'a>(cursor: &mut Cursor<'a>) -> Result<(&'a str, &'a [u8]), BatchError> {
    let len = length(cursor, "header name length")?;
    let name = std::str::from_utf8(cursor.take(len)?).map_err(|_| BatchError::Malformed("header name is not UTF-8"))?;
    let value = nullable(cursor)?.ok_or(BatchError::Malformed("null header value"))?;
    Ok((name, value))
}

fn nullable<'a>(cursor: &mut Cursor<'a>) -> Result<Option<&'a [u8]>, BatchError> {
    match varint32(cursor)? {
        -1 => Ok(None),
        len if len >= 0 => Ok(Some(cursor.take(len as usize)?)),
        _ => Err(BatchError::Malformed("negative field length")),
    }
}

fn length(cursor: &mut Cursor<'_>, what: &'static str) -> Result<usize, BatchError> {
    usize::try_from(varint32(cursor)?).map_err(|_| BatchError::Malformed(what))
}

/// A zig-zag varint of an `int32` field: at most 5 bytes and within `i32`, as Kafka's own
/// decoders require (its Java client refuses a longer one).
fn varint32(cursor: &mut Cursor<'_>) -> Result<i64, BatchError> {
    let value = zigzag(cursor, 5)?;
    if i32::try_from(value).is_err() {
        return Err(BatchError::Malformed("int32 varint out of range"));
    }
    Ok(value)
}

/// A zig-zag varlong (`int64` field) of at most 10 bytes.
fn varint(cursor: &mut Cursor<'_>) -> Result<i64, BatchError> {
    zigzag(cursor, 10)
}

fn zigzag(cursor: &mut Cursor<'_>, max_bytes: usize) -> Result<i64, BatchError> {
    let mut raw: u64 = 0;
    for i in 0..max_bytes {
        let byte = cursor.take(1)?[0];
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
        }
    }
    Err(BatchError::Malformed("varint longer than its field allows"))
}

fn array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    bytes[at..at + N].try_into().expect("slice of the array's length")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_every_width() {
        for value in [0, 1, -1, 63, -64, 64, 300, -300, i32::MAX as i64, i32::MIN as i64, i64::MAX, i64::MIN] {
            let mut buf = Vec::new();
            put_varint(&mut buf, value);
            assert_eq!(buf.len(), varint_len(value), "{value}");
            assert_eq!(varint(&mut Cursor { bytes: &buf }).unwrap(), value);
        }
    }

    /// `int32` fields take at most 5 bytes and an `i32` value, as Kafka's Java client requires
    /// (found in review: a 6-byte key length was stored as sent and stopped Java consumers).
    #[test]
    fn int32_varints_are_at_most_five_bytes_and_in_range() {
        for value in [0, -1, i32::MAX as i64, i32::MIN as i64] {
            let mut buf = Vec::new();
            put_varint(&mut buf, value);
            assert_eq!(varint32(&mut Cursor { bytes: &buf }).unwrap(), value);
        }
        let six_bytes_minus_one = [0x81, 0x80, 0x80, 0x80, 0x80, 0x00];
        assert!(varint32(&mut Cursor { bytes: &six_bytes_minus_one }).is_err());
        let mut past_i32 = Vec::new();
        put_varint(&mut past_i32, i32::MAX as i64 + 1);
        assert!(varint32(&mut Cursor { bytes: &past_i32 }).is_err());
    }
}

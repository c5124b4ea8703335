//! Record batch formats: the unit the log appends, checksums, indexes and tiers.
//!
//! This build writes version 2, which is Kafka's RecordBatch v2 (magic 2) uncompressed, so a
//! Kafka fetch is a byte copy and the archive is readable by anything that knows Kafka's
//! documented format. It reads version 1 too (tierlog's own `TLB1` layout, written by earlier
//! builds): a segment may hold both, and every reader tells them apart per batch (a version-1
//! batch starts with `TLB1`, which as Kafka's big-endian base offset would be above 6·10^18).
//! Layouts in `docs/FORMAT.md`; `v1` and `v2` own the bytes, this module the common API.
//!
//! Every batch carries a CRC32C, so a torn or flipped byte is detected before a record is used.
//! Version 2's CRC does not cover the base offset: readers check it against the offset they
//! expect (see `v2`).

mod v1;
mod v2;

use crate::record::Record;

/// Fixed header size of the version this build writes; records follow it.
pub const HEADER_BYTES: usize = v2::HEADER_BYTES;
/// The smallest fixed header of any version: less than this cannot be a batch.
pub const HEADER_BYTES_MIN: usize = v1::HEADER_BYTES;
/// Upper bound on one encoded batch. Positions inside a segment are u32, and a single batch
/// this large would already stall every reader behind it; producers split larger inputs.
pub const BATCH_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Headers per record: defined in the one limit table that writers check too.
pub use crate::limits::RECORD_HEADERS_MAX;

/// Why a byte range is not a valid batch. Callers add the file and position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("need {needed} bytes, only {available} available (torn write?)")]
    Truncated { needed: usize, available: usize },
    #[error("neither a version-1 magic (TLB1) nor Kafka's magic 2 at byte 16 (found {found})")]
    BadMagic { found: u8 },
    #[error("unsupported batch version {0} (this build reads versions 1 and 2)")]
    UnsupportedVersion(u8),
    #[error("batch length {0} is outside {HEADER_BYTES_MIN}..={BATCH_BYTES_MAX}")]
    BadLength(usize),
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("malformed batch body: {0}")]
    Malformed(&'static str),
    #[error("record at offset {offset} {limit}")]
    OverLimit { offset: u64, limit: crate::limits::LimitError },
    #[error("batch base offset {found} where offset {expected} comes next (damaged base offset field?)")]
    NotDense { expected: u64, found: u64 },
}

/// The fixed fields of a batch, readable without decoding its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Format version: 1 (`TLB1`) or 2 (Kafka RecordBatch v2).
    pub version: u8,
    pub base_offset: u64,
    pub record_count: u32,
    /// The smallest and largest timestamps its records carry (event time: the producer's).
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    /// When the log appended the batch (ms since the epoch, by the partition's never-decreasing
    /// clock): Kafka's LogAppendTime `maxTimestamp`. `None` for batches written before append
    /// times were recorded (every version-1 batch, and version-2 batches with CreateTime).
    pub append_time: Option<i64>,
    /// Total encoded length including the header.
    pub length: usize,
    /// The idempotent producer that wrote the batch, if one did (version 2 only).
    pub producer: Option<ProducerStamp>,
    /// The CRC32C the batch carries (checked by [`validate`], not by [`peek_header`]): what
    /// tells a producer's retry (the same bytes) from another batch with the same sequence.
    pub checksum: u32,
}

/// What a scan needs to step over a batch, readable from its fixed header alone (no walk
/// over the records, unlike a stamped batch's [`BatchHeader`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub version: u8,
    pub base_offset: u64,
    pub record_count: u32,
    /// Total encoded length including the header.
    pub length: usize,
    /// As [`BatchHeader::append_time`].
    pub append_time: Option<i64>,
}

impl Frame {
    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count)
    }

    /// Whether the batch must be rewritten to be served to Kafka clients of a topic of
    /// `timestamps` type: a version-1 batch always; a stamped one for CreateTime (its header
    /// holds the append time where a CreateTime batch holds its largest record timestamp).
    pub fn needs_rewrite_for_kafka(&self, timestamps: TimestampType) -> bool {
        self.version != 2 || (self.append_time.is_some() && timestamps == TimestampType::CreateTime)
    }
}

/// Which of a batch's two clocks a Kafka client sees as its records' timestamps, per topic
/// (Kafka's `message.timestamp.type`). Both are stored either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum TimestampType {
    /// The producer's timestamps (Kafka's default).
    #[default]
    CreateTime,
    /// The time the log appended the batch.
    LogAppendTime,
}

impl TimestampType {
    pub fn as_str(self) -> &'static str {
        match self {
            TimestampType::CreateTime => "CreateTime",
            TimestampType::LogAppendTime => "LogAppendTime",
        }
    }
}

impl std::str::FromStr for TimestampType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "CreateTime" => Ok(TimestampType::CreateTime),
            "LogAppendTime" => Ok(TimestampType::LogAppendTime),
            other => Err(format!("timestamp type {other:?} is neither CreateTime nor LogAppendTime")),
        }
    }
}

/// Kafka's producer fields of a batch written by an idempotent producer: its producer id and
/// epoch, and the sequence number of its first record (each record takes the next one). The
/// log keeps them as sent, so a retried batch is recognised (see `producers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProducerStamp {
    pub id: i64,
    pub epoch: i16,
    pub first_sequence: i32,
}

impl ProducerStamp {
    /// The sequence number of the last of `count` records. Sequences wrap from `i32::MAX` to 0,
    /// as Kafka's do.
    pub fn last_sequence(&self, count: u32) -> i32 {
        ((i64::from(self.first_sequence) + i64::from(count) - 1) % (i64::from(i32::MAX) + 1)) as i32
    }
}

impl BatchHeader {
    pub fn last_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count) - 1
    }

    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count)
    }

    /// Checks that this batch starts at `expected`: the one check that covers version 2's
    /// base offset, which its CRC does not.
    pub fn expect_base(&self, expected: u64) -> Result<(), BatchError> {
        if self.base_offset == expected {
            Ok(())
        } else {
            Err(BatchError::NotDense { expected, found: self.base_offset })
        }
    }
}

/// Upper bound on the bytes one record adds to a batch (exact up to the widths of two varints).
pub fn record_encoded_len(record: &Record) -> usize {
    v2::record_len_bound(record)
}

/// [`record_encoded_len`] of a record read from a version-2 batch.
pub fn view_encoded_len(view: &RecordView<'_>) -> usize {
    v2::view_len_bound(view)
}

/// A producer's Kafka RecordBatch v2 that can be stored as sent (see `v2::storable`): its
/// header and records, or `None`.
pub fn storable(bytes: &[u8]) -> Option<(BatchHeader, Vec<RecordView<'_>>)> {
    v2::storable(bytes)
}

/// The producer id a Kafka producer's first batch in `bytes` carries, read before anything is
/// validated (to refuse ids the broker never handed out), if `bytes` start with a batch of
/// version 2.
pub fn claimed_producer_id(bytes: &[u8]) -> Option<i64> {
    v2::claimed_producer_id(bytes)
}

/// A copy of a [`storable`] batch starting at `base_offset`.
pub fn with_base_offset(bytes: &[u8], base_offset: u64) -> Vec<u8> {
    v2::with_base_offset(bytes, base_offset)
}

/// Encodes `records` as one batch (version 2) whose first record gets `base_offset`, without
/// an append time (CreateTime: what a producer sends; the log stamps it, see [`stamp`]).
///
/// Panics on an empty slice or a batch over [`BATCH_BYTES_MAX`]: both are programmer errors,
/// callers split input by size before encoding.
pub fn encode(base_offset: u64, records: &[Record]) -> Vec<u8> {
    v2::encode(base_offset, records, None, None, BATCH_BYTES_MAX)
}

/// [`encode`] with an append time and, for an idempotent producer's records, its producer
/// stamp: the batch as the log stores it.
pub fn encode_appended(
    base_offset: u64,
    records: &[Record],
    producer: Option<ProducerStamp>,
    append_time: i64,
) -> Vec<u8> {
    v2::encode(base_offset, records, producer, Some(append_time), BATCH_BYTES_MAX)
}

/// Places a batch encoded by [`encode`] (or a [`storable`] one) where the log stores it: at
/// `base_offset` (no leader epoch), stamped with `append_time`. For a batch of [`encode`],
/// the same bytes as [`encode_appended`] without a producer gives at that offset and time, so
/// a batch can be encoded before the log end and its append time are known (outside the
/// partition's lock); a storable batch keeps its records' bytes as the client encoded them.
pub fn place(bytes: &mut [u8], base_offset: u64, append_time: i64) {
    v2::set_base_offset(bytes, base_offset);
    stamp(bytes, append_time);
}

/// Records `append_time` in a version-2 batch (Kafka's LogAppendTime: the timestamp-type bit
/// of `attributes` and `maxTimestamp`) and sets its CRC again. The records' timestamps are
/// untouched. Panics on a version-1 batch (this build never writes one).
pub fn stamp(bytes: &mut [u8], append_time: i64) {
    assert!(!v1::is_v1(bytes), "only version-2 batches are written");
    v2::stamp(bytes, append_time);
}

/// The CRC32C of a validated batch as it was before the log stamped it with its append time:
/// the CRC an idempotent producer's retry of it carries.
pub fn sent_checksum(bytes: &[u8], header: &BatchHeader) -> u32 {
    match header.version {
        1 => header.checksum,
        _ => v2::sent_checksum(bytes, header),
    }
}

/// Whether a batch of some version could start at `bytes[0]`, judged by its magic alone: a
/// cheap filter before [`peek_header`] when searching damaged bytes for the next batch.
pub fn has_magic(bytes: &[u8]) -> bool {
    v1::is_v1(bytes) || bytes.get(v2::OFF_MAGIC) == Some(&v2::MAGIC)
}

/// The framing fields of the batch at the start of `bytes`, which may hold its fixed header
/// only (unlike [`peek_header`], which reads a stamped batch's records for its largest
/// timestamp). Checks what [`peek_header`] checks in the fixed header.
pub fn peek_frame(bytes: &[u8]) -> Result<Frame, BatchError> {
    if v1::is_v1(bytes) || bytes.get(v2::OFF_MAGIC) != Some(&v2::MAGIC) {
        let h = peek_header(bytes)?; // version 1 (or an error): its header says everything
        let (base_offset, record_count, length) = (h.base_offset, h.record_count, h.length);
        return Ok(Frame { version: h.version, base_offset, record_count, length, append_time: None });
    }
    v2::peek_frame(bytes)
}

/// Reads the header at the start of `bytes` and checks magic, version and length bounds.
/// Does not check the CRC: use [`validate`] before trusting the body. A stamped version-2
/// batch must be whole in `bytes` (its largest record timestamp is read off its records);
/// [`BatchError::Truncated`] names its length otherwise.
pub fn peek_header(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    if v1::is_v1(bytes) {
        return v1::peek_header(bytes);
    }
    match bytes.get(v2::OFF_MAGIC) {
        Some(&v2::MAGIC) => v2::peek_header(bytes),
        Some(&found) if found < v2::MAGIC => Err(BatchError::UnsupportedVersion(found)),
        Some(&found) => Err(BatchError::BadMagic { found }),
        // Too short to tell the version: ask for at least the smallest header.
        None => {
            let needed = if bytes.len() < 4 { HEADER_BYTES_MIN } else { HEADER_BYTES };
            Err(BatchError::Truncated { needed, available: bytes.len() })
        }
    }
}

/// Checks the header and CRC of the batch at the start of `bytes`; returns its header.
/// `bytes` may extend past the batch.
pub fn validate(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = peek_header(bytes)?;
    if bytes.len() < header.length {
        return Err(BatchError::Truncated { needed: header.length, available: bytes.len() });
    }
    let (stored, computed) = match header.version {
        1 => v1::checksums(bytes, &header),
        _ => v2::checksums(bytes, &header),
    };
    if stored != computed {
        return Err(BatchError::Checksum { stored, computed });
    }
    Ok(header)
}

/// Whether `bytes` are exactly one whole batch, written in full, whatever its header fields
/// outside the checksum say: the CRC stored in the batch matches the bytes it covers, up to
/// the end of `bytes` (version 1: bytes 8.. by the CRC at 4..8; version 2: bytes 21.. by the
/// CRC at 17..21). A torn write cannot produce this (a CRC over bytes cut short does not
/// match), so a batch that fails [`validate`] but passes this has a damaged length, base
/// offset, leader epoch or magic: it was complete, and perhaps acknowledged.
pub fn is_whole_by_checksum(bytes: &[u8]) -> bool {
    if !(HEADER_BYTES_MIN..=BATCH_BYTES_MAX).contains(&bytes.len()) {
        return false;
    }
    let v1 = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")) == crc32c::crc32c(&bytes[8..]);
    let v2 = bytes.len() >= HEADER_BYTES
        && u32::from_be_bytes(bytes[17..21].try_into().expect("4 bytes")) == crc32c::crc32c(&bytes[21..]);
    v1 || v2
}

/// A record borrowed from a batch's bytes: reading through views costs no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub offset: u64,
    pub timestamp: i64,
    /// The batch's append time, if it has one.
    pub append_time: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    version: u8,
    header_count: usize,
    headers: &'a [u8],
}

impl<'a> RecordView<'a> {
    /// Header name/value pairs in order. Their layout was checked when the view was made.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        let mut cursor = Cursor { bytes: self.headers };
        let version = self.version;
        (0..self.header_count).map(move |_| {
            let pair = if version == 1 { v1::header_pair(&mut cursor) } else { v2::header_pair(&mut cursor) };
            pair.expect("headers were checked when the view was made")
        })
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
    let views = match header.version {
        1 => v1::views(bytes, &header)?,
        _ => v2::views(bytes, &header)?,
    };
    Ok((header, views))
}

/// Validates the batch at the start of `bytes` and decodes its records as `(offset, record)`.
pub fn decode(bytes: &[u8]) -> Result<(BatchHeader, Vec<(u64, Record)>), BatchError> {
    let (header, views) = views(bytes)?;
    Ok((header, views.iter().map(|v| (v.offset, v.to_record())).collect()))
}

/// Validated batches as Kafka RecordBatch v2 bytes for a topic of `timestamps` type:
/// version-2 batches as they are (for CreateTime, with their append time removed, see
/// [`Frame::needs_rewrite_for_kafka`]), version-1 batches re-encoded (same offsets, records and
/// timestamps; a re-encoded batch may outgrow [`BATCH_BYTES_MAX`], which bounds stored
/// batches, not Kafka's). `expected` is the base offset of the first batch; every batch must
/// continue the one before it.
pub fn to_kafka(
    bytes: &[u8],
    mut expected: u64,
    timestamps: TimestampType,
    out: &mut Vec<u8>,
) -> Result<(), BatchError> {
    let mut at = 0;
    while at < bytes.len() {
        let header = validate(&bytes[at..])?;
        header.expect_base(expected)?;
        let batch = &bytes[at..at + header.length];
        if header.version == 2 && timestamps == TimestampType::CreateTime {
            v2::unstamped(batch, &header, out);
        } else if header.version == 2 {
            out.extend_from_slice(batch);
        } else {
            let (_, views) = views_of_validated(batch)?;
            let records: Vec<Record> = views.iter().map(RecordView::to_record).collect();
            out.extend_from_slice(&v2::encode(header.base_offset, &records, None, None, i32::MAX as usize));
        }
        expected = header.next_offset();
        at += header.length;
    }
    Ok(())
}

/// Where [`first_appended_after`] found the first batch appended after a time: its base
/// offset, and whether the batch before it has no append time (`None`: nothing before it).
pub type AppendedAfter = (u64, Option<bool>);

/// In validated, dense `bytes`: the base offset of the first batch appended after `time`,
/// with whether the batch before it has no append time; `previous` says that of the batch
/// before `bytes` on entry, and of the last batch of `bytes` when none is found (`None`).
/// Batches without an append time count as appended before every time.
pub fn first_appended_after(
    bytes: &[u8],
    time: i64,
    previous: &mut Option<bool>,
) -> Result<Option<AppendedAfter>, (usize, BatchError)> {
    let mut at = 0;
    while at < bytes.len() {
        let frame = peek_frame(&bytes[at..]).map_err(|e| (at, e))?;
        if frame.append_time.is_some_and(|t| t > time) {
            return Ok(Some((frame.base_offset, *previous)));
        }
        *previous = Some(frame.append_time.is_none());
        at += frame.length;
    }
    Ok(None)
}

/// A read position inside a batch's bytes.
pub struct Cursor<'a> {
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

    const V1_GOLDEN: &str = "544c423168e015797d0000000100000007000000000000001864e5cf8b0100000068e5cf8b010000\
        02000000000000000068e5cf8b01000006000000616363742d310d0000007b22616d6f756e74223a31327d\
        0100000006000000736f7572636503000000706f731864e5cf8b010000ffffffff010000007800000000";

    /// Version 1 as earlier builds wrote it (`sample()` at base offset 7): still readable.
    #[test]
    fn batch_v1_golden_bytes_still_decode() {
        let bytes = unhex(V1_GOLDEN);
        let (header, records) = decode(&bytes).unwrap();
        assert_eq!((header.version, header.base_offset, header.length), (1, 7, bytes.len()));
        assert_eq!(records.into_iter().map(|(_, r)| r).collect::<Vec<_>>(), sample());
    }

    /// Golden bytes for version 2. If this test fails, the on-disk format changed: add a
    /// version and keep a reader for this one instead of editing the constant.
    #[test]
    fn batch_v2_golden_bytes() {
        let bytes = encode(7, &sample());
        let golden = "00000000000000070000005fffffffff02efe699aa000000000001\
                      0000018bcfe564180000018bcfe56800ffffffffffffffffffffffffffff00000002\
                      4a00d00f000c616363742d311a7b22616d6f756e74223a31327d020c736f7572636506706f73\
                      0e00000201027800";
        assert_eq!(hex(&bytes), golden.split_whitespace().collect::<String>());
    }

    /// The bytes tierlog writes are Kafka's: the `kafka-protocol` crate (not written here)
    /// reads back the same offsets, timestamps, keys, values and headers.
    #[test]
    fn version_2_is_what_a_kafka_decoder_reads() {
        let records = sample();
        let mut bytes = bytes::Bytes::from(encode(41, &records));
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes).unwrap();
        let got: Vec<(i64, Record)> = set
            .records
            .into_iter()
            .map(|r| {
                let headers = r.headers.iter().map(|(k, v)| (k.to_string(), v.clone().unwrap().to_vec())).collect();
                let record = Record {
                    timestamp: r.timestamp,
                    key: r.key.map(|k| k.to_vec()),
                    value: r.value.unwrap().to_vec(),
                    headers,
                };
                (r.offset, record)
            })
            .collect();
        assert_eq!(got, vec![(41, records[0].clone()), (42, records[1].clone())]);
    }

    #[test]
    fn to_kafka_copies_version_2_and_re_encodes_version_1() {
        let (v1, v2) = (unhex(V1_GOLDEN), encode(9, &sample()));
        let mut out = Vec::new();
        to_kafka(&[&v1[..], &v2[..]].concat(), 7, TimestampType::CreateTime, &mut out).unwrap();
        assert_eq!(out, [encode(7, &sample()), v2.clone()].concat());
        let err = to_kafka(&v2, 8, TimestampType::CreateTime, &mut Vec::new()).unwrap_err();
        assert_eq!(err, BatchError::NotDense { expected: 8, found: 9 });
    }

    const APPENDED_AT: i64 = 1_700_000_360_000;

    /// Golden bytes of a stamped batch (what this build stores): Kafka's LogAppendTime
    /// attribute (0x0008) and the append time in `maxTimestamp`; the records, their
    /// `baseTimestamp` and deltas are those of the unstamped batch. A failure means the stored
    /// format changed.
    #[test]
    fn stamped_batch_v2_golden_bytes() {
        let bytes = encode_appended(7, &sample(), None, APPENDED_AT);
        let golden = "00000000000000070000005fffffffff0282f28d19000800000001\
                      0000018bcfe564180000018bcfeae640ffffffffffffffffffffffffffff00000002\
                      4a00d00f000c616363742d311a7b22616d6f756e74223a31327d020c736f7572636506706f73\
                      0e00000201027800";
        assert_eq!(hex(&bytes), golden.split_whitespace().collect::<String>());
        let plain = encode(7, &sample());
        assert_eq!(bytes[..17], plain[..17], "offset, length, epoch and magic are unchanged");
        assert_eq!(bytes[23..35], plain[23..35]);
        assert_eq!(bytes[43..], plain[43..], "producer fields and records are unchanged");
    }

    #[test]
    fn a_stamped_batch_keeps_both_clocks_and_its_sent_checksum() {
        let plain = encode(7, &sample());
        let stamped = encode_appended(7, &sample(), None, APPENDED_AT);
        let mut restamped = plain.clone();
        stamp(&mut restamped, APPENDED_AT);
        assert_eq!(restamped, stamped, "stamping equals encoding with the append time");
        let (header, records) = decode(&stamped).unwrap();
        assert_eq!(header.append_time, Some(APPENDED_AT));
        assert_eq!((header.min_timestamp, header.max_timestamp), (1_699_999_999_000, 1_700_000_000_000));
        assert_eq!(records.into_iter().map(|(_, r)| r).collect::<Vec<_>>(), sample(), "producer timestamps kept");
        let (_, views) = views(&stamped).unwrap();
        assert!(views.iter().all(|v| v.append_time == Some(APPENDED_AT)));
        assert_eq!(sent_checksum(&stamped, &header), peek_header(&plain).unwrap().checksum);
        assert_eq!(peek_header(&plain).unwrap().append_time, None);
        // Served to a CreateTime topic: exactly the batch as sent; to a LogAppendTime one: as stored.
        let mut out = Vec::new();
        to_kafka(&stamped, 7, TimestampType::CreateTime, &mut out).unwrap();
        assert_eq!(out, plain);
        out.clear();
        to_kafka(&stamped, 7, TimestampType::LogAppendTime, &mut out).unwrap();
        assert_eq!(out, stamped);
        // The header alone frames it; the full header needs the records.
        let frame = peek_frame(&stamped[..HEADER_BYTES]).unwrap();
        assert_eq!((frame.base_offset, frame.record_count, frame.length), (7, 2, stamped.len()));
        let cut = peek_header(&stamped[..HEADER_BYTES]).unwrap_err();
        assert_eq!(cut, BatchError::Truncated { needed: stamped.len(), available: HEADER_BYTES });
        // Producers do not choose the append time: a batch sent stamped is re-encoded.
        assert!(storable(&stamped).is_none());
        assert!(storable(&plain).is_some());
    }

    /// A Kafka decoder (the `kafka-protocol` crate) reads a stamped batch as LogAppendTime
    /// (Kafka's Java client and librdkafka then show `maxTimestamp`, the append time, as every
    /// record's timestamp; this crate keeps each record's own, the producer's).
    #[test]
    fn a_kafka_decoder_reads_a_stamped_batch_as_log_append_time() {
        let mut bytes = bytes::Bytes::from(encode_appended(41, &sample(), None, APPENDED_AT));
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes).unwrap();
        for (r, sent) in set.records.iter().zip(sample()) {
            assert_eq!(r.timestamp_type, kafka_protocol::records::TimestampType::LogAppend);
            assert_eq!(r.timestamp, sent.timestamp);
        }
        assert_eq!(set.records.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![41, 42]);
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

    fn unhex(text: &str) -> Vec<u8> {
        let text: String = text.split_whitespace().collect();
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
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
        fn stamped_batches_round_trip_and_unstamp_to_the_batch_as_sent(
            base in 0u64..u64::MAX / 2,
            records in proptest::collection::vec(arb_record(), 1..20),
            appended in any::<i64>(),
        ) {
            let plain = encode(base, &records);
            let stamped = encode_appended(base, &records, None, appended);
            let (header, decoded) = decode(&stamped).unwrap();
            prop_assert_eq!(header.append_time, Some(appended));
            prop_assert_eq!(header.max_timestamp, records.iter().map(|r| r.timestamp).max().unwrap());
            prop_assert_eq!(decoded.into_iter().map(|(_, r)| r).collect::<Vec<_>>(), records);
            prop_assert_eq!(sent_checksum(&stamped, &header), peek_header(&plain).unwrap().checksum);
            let mut out = Vec::new();
            to_kafka(&stamped, base, TimestampType::CreateTime, &mut out).unwrap();
            prop_assert_eq!(out, plain);
        }

        /// Group commit encodes a batch before it knows where it lands: placing it after must
        /// give the very bytes encoding it there would have.
        #[test]
        fn a_batch_placed_after_encoding_is_the_batch_encoded_in_place(
            encoded_at in 0u64..u64::MAX / 2,
            base in 0u64..u64::MAX / 2,
            records in proptest::collection::vec(arb_record(), 1..20),
            appended in any::<i64>(),
        ) {
            let mut placed = encode(encoded_at, &records);
            place(&mut placed, base, appended);
            prop_assert_eq!(placed, encode_appended(base, &records, None, appended));
        }

        #[test]
        fn any_single_byte_corruption_is_detected(records in proptest::collection::vec(arb_record(), 1..8),
                                                  stamped in any::<bool>(),
                                                  position in any::<prop::sample::Index>(),
                                                  flip in 1u8..=255) {
            let mut bytes = if stamped { encode_appended(3, &records, None, 1_700_000_000_000) } else { encode(3, &records) };
            let at = position.index(bytes.len());
            bytes[at] ^= flip;
            // The CRC does not cover the base offset: readers check it against the offset
            // they expect next, as here.
            let found = decode(&bytes).and_then(|(header, _)| header.expect_base(3));
            prop_assert!(found.is_err(), "flip at {} of {} went unnoticed", at, bytes.len());
        }
    }
}

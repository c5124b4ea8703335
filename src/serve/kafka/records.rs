//! Record mapping between Kafka's RecordBatch v2 and tierlog's [`Record`] (docs/KAFKA.md).
//! A produced batch (any compression) is decoded into records, checked against the log's
//! limits and appended, which stores them as an uncompressed RecordBatch v2 (`batch`), so a
//! fetch sends the stored bytes unchanged.
//! The wire format itself is the `kafka-protocol` crate's; this module owns only the mapping
//! and the limits that make untrusted batches safe to hand to the crate's decoder (record and
//! header counts it would allocate for, decompressed sizes).

use std::io::Read;

use bytes::{Buf, Bytes};
use kafka_protocol::ResponseError;
use kafka_protocol::records::{Compression, NO_PRODUCER_ID, NO_TIMESTAMP, RecordBatchDecoder};

use crate::batch::ProducerStamp;
use crate::limits::RECORD_HEADERS_MAX;
use crate::record::Record;

/// Bytes the batches of one produce partition may decompress to, together: the log's largest
/// batch. Small compressed batches cannot make the broker allocate more than this.
pub const DECOMPRESSED_BATCH_BYTES_MAX: usize = crate::batch::BATCH_BYTES_MAX;
/// Records one produce partition may carry ([`crate::limits::PRODUCE_RECORDS_MAX`]); the crate
/// reserves memory for the count a batch header claims, so the claim is checked first.
pub const PRODUCE_RECORDS_MAX: i64 = crate::limits::PRODUCE_RECORDS_MAX as i64;

/// Why a produced batch was refused: the Kafka error code and a message naming the record.
#[derive(Debug)]
pub struct Refused {
    pub code: ResponseError,
    pub message: String,
    /// Position of the refused record among the partition's records, when one record is at fault.
    pub record: Option<usize>,
}

impl Refused {
    fn new(code: ResponseError, message: impl Into<String>) -> Refused {
        Refused { code, message: message.into(), record: None }
    }
}

/// Decodes the records of one produce partition (one or more RecordBatch v2, any of Kafka's
/// compressions; exactly one for an idempotent producer, whose stamp comes back with the
/// records). A record without a timestamp gets `now_ms`.
pub fn decode_produce(mut bytes: Bytes, now_ms: i64) -> Result<(Vec<Record>, Option<ProducerStamp>), Refused> {
    let producer = check_batch_headers(&bytes)?;
    // The bound holds for all batches of the partition together: many small compressed
    // batches must not add up to more memory than one large one may.
    let room = std::cell::Cell::new(DECOMPRESSED_BATCH_BYTES_MAX);
    let decompress = |compressed: &mut Bytes, compression: Compression| -> anyhow::Result<Bytes> {
        let raw = bounded_decompress(compressed, compression, room.get())?;
        room.set(room.get() - raw.len());
        Ok(raw)
    };
    let mut out = Vec::new();
    while bytes.has_remaining() {
        let set = RecordBatchDecoder::decode_with_custom_compression(&mut bytes, Some(&decompress)).map_err(|e| {
            Refused::new(ResponseError::CorruptMessage, format!("cannot decode the record batch: {e:#}"))
        })?;
        for record in set.records {
            let position = out.len();
            out.push(to_record(record, now_ms).map_err(|message| Refused {
                code: ResponseError::InvalidRecord,
                message: format!("record {position} of the batch: {message}"),
                record: Some(position),
            })?);
        }
    }
    if out.is_empty() {
        return Err(Refused::new(ResponseError::InvalidRecord, "the produce request holds no record"));
    }
    Ok((out, producer))
}

/// Checks every batch header before any batch is decoded: magic 2, a plausible record count,
/// no transactional or control batch, and an idempotent producer's batch alone and with
/// valid producer fields. The idempotent producer's stamp, if any.
fn check_batch_headers(bytes: &Bytes) -> Result<Option<ProducerStamp>, Refused> {
    const MAGIC_AT: usize = 16;
    if bytes.len() > MAGIC_AT && bytes[MAGIC_AT] != 2 {
        let magic = bytes[MAGIC_AT];
        return Err(Refused::new(
            ResponseError::UnsupportedForMessageFormat,
            format!("message format v{magic}: only RecordBatch v2 (magic 2) is accepted"),
        ));
    }
    let infos = RecordBatchDecoder::decode_batch_info(&mut bytes.clone())
        .map_err(|e| Refused::new(ResponseError::CorruptMessage, format!("cannot decode the record batch: {e:#}")))?;
    let mut records: i64 = 0;
    let batches = infos.len();
    let mut producer = None;
    for info in infos {
        if info.transactional || info.control {
            return Err(Refused::new(
                ResponseError::InvalidRecord,
                "transactional and control batches are not supported (tierlog has no transactions yet)",
            ));
        }
        if info.producer_id != NO_PRODUCER_ID {
            let (id, epoch, first_sequence) = (info.producer_id, info.producer_epoch, info.base_sequence);
            if batches != 1 || id < 0 || epoch < 0 || first_sequence < 0 {
                return Err(Refused::new(
                    ResponseError::InvalidRecord,
                    format!(
                        "batch of idempotent producer {id} (epoch {epoch}, sequence {first_sequence}) among {batches} batches: \
                         an idempotent producer sends one batch per partition, with non-negative epoch and sequence"
                    ),
                ));
            }
            producer = Some(ProducerStamp { id, epoch, first_sequence });
        }
        records += i64::from(info.record_count);
    }
    if records > PRODUCE_RECORDS_MAX {
        return Err(Refused::new(
            ResponseError::InvalidRecord,
            format!("{records} records in one partition of a produce request; the maximum is {PRODUCE_RECORDS_MAX}"),
        ));
    }
    Ok(producer)
}

/// Kafka record → tierlog record. Tierlog records always have a value and header values, so
/// Kafka's null value and null header value are refused rather than silently turned into
/// empty bytes.
fn to_record(record: kafka_protocol::records::Record, now_ms: i64) -> Result<Record, String> {
    let value = record.value.ok_or("null value (a tombstone): tierlog records always have a value")?;
    let mut headers = Vec::with_capacity(record.headers.len());
    for (name, value) in record.headers {
        let value = value
            .ok_or_else(|| format!("header {:?} has a null value: tierlog header values are bytes", name.as_str()))?;
        headers.push((name.as_str().to_string(), value.to_vec()));
    }
    let timestamp = if record.timestamp == NO_TIMESTAMP { now_ms } else { record.timestamp };
    Ok(Record { timestamp, key: record.key.map(|k| k.to_vec()), value: value.to_vec(), headers })
}

/// The crate's decompression step, bounded: at most `room` bytes out (what is left of
/// [`DECOMPRESSED_BATCH_BYTES_MAX`] for the partition), then a scan that refuses header counts
/// the crate would reserve memory for blindly.
fn bounded_decompress(compressed: &mut Bytes, compression: Compression, room: usize) -> anyhow::Result<Bytes> {
    let input = compressed.copy_to_bytes(compressed.remaining());
    let raw = match compression {
        Compression::None => input,
        Compression::Gzip => read_bounded(flate2::read::GzDecoder::new(&input[..]), room)?,
        Compression::Zstd => read_bounded(zstd::stream::read::Decoder::new(&input[..])?, room)?,
        Compression::Lz4 => read_bounded(lz4::Decoder::new(&input[..])?, room)?,
        Compression::Snappy => snappy(&input, room)?,
    };
    anyhow::ensure!(raw.len() <= room, "{}", too_large());
    scan_records(&raw)?;
    Ok(raw)
}

fn too_large() -> String {
    format!("the partition's batches decompress to more than {DECOMPRESSED_BATCH_BYTES_MAX} bytes")
}

fn read_bounded(reader: impl Read, room: usize) -> anyhow::Result<Bytes> {
    let mut out = Vec::new();
    reader.take(room as u64 + 1).read_to_end(&mut out)?;
    anyhow::ensure!(out.len() <= room, "{}", too_large());
    Ok(out.into())
}

/// Kafka's snappy: xerial framing (magic, version, compatible version, then length-prefixed
/// raw snappy blocks), or a bare raw snappy block, as the Java client accepts.
fn snappy(input: &[u8], room: usize) -> anyhow::Result<Bytes> {
    const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
    let mut blocks: Vec<&[u8]> = Vec::new();
    if let Some(mut rest) = input.strip_prefix(XERIAL_MAGIC) {
        anyhow::ensure!(rest.len() >= 8, "truncated snappy header");
        rest = &rest[8..];
        while !rest.is_empty() {
            anyhow::ensure!(rest.len() >= 4, "truncated snappy block length");
            let len = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
            anyhow::ensure!(rest.len() >= 4 + len, "truncated snappy block");
            blocks.push(&rest[4..4 + len]);
            rest = &rest[4 + len..];
        }
    } else {
        blocks.push(input);
    }
    let mut out = Vec::new();
    for block in blocks {
        let len = snap::raw::decompress_len(block)?;
        anyhow::ensure!(out.len() + len <= room, "{}", too_large());
        let at = out.len();
        out.resize(at + len, 0);
        snap::raw::Decoder::new().decompress(block, &mut out[at..])?;
    }
    Ok(out.into())
}

/// Walks the records of a decompressed batch body and refuses a header count above the
/// log's limit, or above what the record's bytes could hold, before the crate reserves
/// memory for it. Everything else is left to the crate's decoder.
fn scan_records(mut body: &[u8]) -> anyhow::Result<()> {
    while !body.is_empty() {
        let size = varint(&mut body)?;
        anyhow::ensure!(size >= 0 && size as usize <= body.len(), "record length {size} past the batch end");
        let (mut record, rest) = body.split_at(size as usize);
        body = rest;
        record = record.get(1..).ok_or_else(|| anyhow::anyhow!("empty record"))?; // attributes
        varint(&mut record)?; // timestamp delta
        varint(&mut record)?; // offset delta
        for _ in 0..2 {
            let len = varint(&mut record)?; // key, then value
            if len > 0 {
                record = record.get(len as usize..).ok_or_else(|| anyhow::anyhow!("field past the record end"))?;
            }
        }
        let headers = varint(&mut record)?;
        anyhow::ensure!(
            headers <= RECORD_HEADERS_MAX as i64 && headers as usize <= record.len() / 2 + 1,
            "a record claims {headers} headers; the maximum is {RECORD_HEADERS_MAX}"
        );
    }
    Ok(())
}

/// A zig-zag varint (Kafka's varint and varlong share the encoding), at most 10 bytes.
fn varint(buf: &mut &[u8]) -> anyhow::Result<i64> {
    let mut raw: u64 = 0;
    for i in 0..10 {
        let (&byte, rest) = buf.split_first().ok_or_else(|| anyhow::anyhow!("truncated varint"))?;
        *buf = rest;
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
        }
    }
    anyhow::bail!("varint longer than 10 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{RecordBatchEncoder, RecordEncodeOptions, TimestampType};

    /// What the log stores is what a Kafka producer may send: stored batches decode as a
    /// produce request's records.
    #[test]
    fn stored_batches_decode_as_produced_records() {
        let record = |offset: i64, key: Option<&str>, value: &str, headers: &[(&str, &str)]| Record {
            timestamp: 1_700_000_000_000 + offset,
            key: key.map(|k| k.into()),
            value: value.into(),
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect(),
        };
        let records = vec![
            record(40, Some("k"), "v0", &[("h", "1")]),
            record(41, None, "", &[]),
            record(42, Some(""), "v2", &[("a", ""), ("b", "x")]),
        ];
        let bytes = Bytes::from(crate::batch::encode(40, &records));
        let info = RecordBatchDecoder::decode_batch_info(&mut bytes.clone()).unwrap();
        assert_eq!((info[0].min_offset, info[0].record_count, info[0].base_sequence), (40, 3, -1));
        assert_eq!(decode_produce(bytes, 0).unwrap().0, records);
    }

    fn batch(records: &[kafka_protocol::records::Record], compression: Compression) -> Bytes {
        let mut out = BytesMut::new();
        RecordBatchEncoder::encode(&mut out, records.iter(), &RecordEncodeOptions { version: 2, compression }).unwrap();
        out.freeze()
    }

    fn kafka_record(value: Option<&str>) -> kafka_protocol::records::Record {
        kafka_protocol::records::Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: -1,
            timestamp: NO_TIMESTAMP,
            key: None,
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            headers: IndexMap::new(),
        }
    }

    /// A producer's uncompressed batch with ascending timestamps is stored as sent: the log
    /// reads back exactly the records the decoding path would have stored. Anything the log
    /// could not store unchanged goes the decoding path instead.
    #[test]
    fn a_batch_stored_as_sent_reads_back_what_decoding_it_gives() {
        let record = |i: i64, key: Option<&str>, value: &str| {
            let mut headers = IndexMap::new();
            headers.insert(StrBytes::from_string(format!("h{i}")), Some(Bytes::from(format!("v{i}"))));
            kafka_protocol::records::Record {
                offset: i,
                sequence: i as i32 - 1, // base sequence -1: not an idempotent producer
                timestamp: 1_700_000_000_000 + i * 7,
                key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
                headers,
                ..kafka_record(Some(value))
            }
        };
        let sent: Vec<_> = (0..5).map(|i| record(i, (i % 2 == 0).then_some("k"), &"x".repeat(i as usize))).collect();
        let bytes = batch(&sent, Compression::None);
        let (_, views) = crate::batch::storable(&bytes).expect("stored as sent");
        let stored: Vec<Record> = views.iter().map(|v| v.to_record()).collect();
        assert_eq!(stored, decode_produce(bytes.clone(), 0).unwrap().0);

        // librdkafka sends leader epoch 0: stored as sent, the epoch becomes -1.
        let mut epoch_0 = BytesMut::from(&bytes[..]);
        epoch_0[12..16].copy_from_slice(&0i32.to_be_bytes());
        assert!(crate::batch::storable(&epoch_0).is_some(), "leader epoch 0");
        let stored_bytes = crate::batch::with_base_offset(&epoch_0, 40);
        assert_eq!(crate::batch::decode(&stored_bytes).unwrap().0.base_offset, 40);
        assert!(crate::batch::storable(&batch(&sent, Compression::Zstd)).is_none(), "compressed");
        let unordered: Vec<_> = sent
            .iter()
            .rev()
            .cloned()
            .enumerate()
            .map(|(i, r)| kafka_protocol::records::Record { offset: i as i64, ..r })
            .collect();
        assert!(
            crate::batch::storable(&batch(&unordered, Compression::None)).is_none(),
            "first timestamp not the smallest"
        );
        let idempotent: Vec<_> = sent
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, r)| kafka_protocol::records::Record {
                producer_id: 7,
                producer_epoch: 0,
                sequence: 10 + i as i32,
                ..r
            })
            .collect();
        let (header, _) = crate::batch::storable(&batch(&idempotent, Compression::None)).expect("idempotent producer");
        let stamp = crate::batch::ProducerStamp { id: 7, epoch: 0, first_sequence: 10 };
        assert_eq!(header.producer, Some(stamp), "the stamp is stored with the batch");
        let half_stamped: Vec<_> =
            idempotent.iter().cloned().map(|r| kafka_protocol::records::Record { sequence: -1, ..r }).collect();
        assert!(
            crate::batch::storable(&batch(&half_stamped, Compression::None)).is_none(),
            "producer id without sequence"
        );
        let mut claims_more = BytesMut::from(&bytes[..]);
        claims_more[35..43].copy_from_slice(&(1_800_000_000_000i64).to_be_bytes()); // maxTimestamp
        let crc = crc32c::crc32c(&claims_more[21..]);
        claims_more[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(crate::batch::storable(&claims_more).is_none(), "a max timestamp no record reaches");
        assert!(crate::batch::storable(&[bytes.clone(), bytes].concat()).is_none(), "two batches");
    }

    /// Review: what is stored as sent must be byte for byte what the decoding path would
    /// store (docs/FORMAT.md: record attributes 0). A producer's non-zero record attributes
    /// byte is kept instead.
    #[test]
    fn review_a_record_attributes_byte_is_not_stored_as_sent() {
        let sent: Vec<_> = (0..2)
            .map(|i| kafka_protocol::records::Record {
                offset: i,
                sequence: i as i32 - 1, // one batch, base sequence -1
                timestamp: 1_700_000_000_000 + i,
                ..kafka_record(Some("v"))
            })
            .collect();
        let canonical = batch(&sent, Compression::None);
        let mut bytes = BytesMut::from(&canonical[..]);
        assert_eq!(bytes[62], 0, "first record's attributes byte");
        bytes[62] = 0x7f;
        let crc = crc32c::crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        let bytes = bytes.freeze();
        assert!(crate::batch::storable(&canonical).is_some(), "the producer's unmodified batch is stored as sent");
        if crate::batch::storable(&bytes).is_some() {
            let as_sent = crate::batch::with_base_offset(&bytes, 0);
            let decoded = crate::batch::encode(0, &decode_produce(bytes.clone(), 0).unwrap().0);
            assert_eq!(as_sent[62], decoded[62], "record attributes byte stored as sent vs by the decoding path");
        }
    }

    /// Review: a varint of an int32 field longer than 5 bytes (docs/FORMAT.md: "up to 5 bytes
    /// for int32 values"; Kafka's Java client throws "Varint is too long") is stored as sent,
    /// though the decoding path refuses it and a Kafka decoder cannot read the fetched bytes.
    #[test]
    fn review_an_overlong_int32_varint_is_not_stored_as_sent() {
        let sent = kafka_protocol::records::Record { timestamp: 1_700_000_000_000, ..kafka_record(Some("a")) };
        let canonical = batch(&[sent], Compression::None);
        // Record: length, attributes, timestamp delta, offset delta, key length (-1 = 0x01), ...
        assert_eq!(&canonical[61..66], &[0x0e, 0x00, 0x00, 0x00, 0x01]);
        let mut bytes = BytesMut::from(&canonical[..65]);
        bytes.extend_from_slice(&[0x81, 0x80, 0x80, 0x80, 0x80, 0x00]); // -1 in 6 bytes: no key
        bytes.extend_from_slice(&canonical[66..]);
        bytes[61] += 10; // zig-zag: the record is 5 bytes longer
        let batch_len = i32::from_be_bytes(bytes[8..12].try_into().unwrap()) + 5;
        bytes[8..12].copy_from_slice(&batch_len.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        let bytes = bytes.freeze();
        let decoding_path = decode_produce(bytes.clone(), 0).map(|(records, _)| records).map_err(|e| e.message);
        if let Some((_, views)) = crate::batch::storable(&bytes) {
            let tierlog_reads: Vec<Record> = views.iter().map(|v| v.to_record()).collect();
            let mut stored = Bytes::from(crate::batch::with_base_offset(&bytes, 0));
            let kafka_reads =
                RecordBatchDecoder::decode(&mut stored).map(|set| set.records.len()).map_err(|e| e.to_string());
            panic!(
                "stored as sent; tierlog reads {tierlog_reads:?}; a Kafka decoder reads the stored bytes as {kafka_reads:?}; \
                 the decoding path gives {decoding_path:?}"
            );
        }
    }

    #[test]
    fn every_kafka_compression_is_accepted() {
        for compression in
            [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd]
        {
            let records = decode_produce(batch(&[kafka_record(Some("hello"))], compression), 7).unwrap().0;
            assert_eq!(
                records,
                vec![Record { timestamp: 7, value: b"hello".to_vec(), ..Record::default() }],
                "{compression:?}"
            );
        }
    }

    #[test]
    fn a_null_value_is_refused_as_an_invalid_record() {
        let err =
            decode_produce(batch(&[kafka_record(Some("a")), kafka_record(None)], Compression::None), 0).unwrap_err();
        assert_eq!((err.code, err.record), (ResponseError::InvalidRecord, Some(1)));
        assert!(err.message.contains("null value"), "{}", err.message);
    }

    #[test]
    fn a_record_claiming_two_billion_headers_is_refused_before_decoding() {
        let mut bytes = BytesMut::from(&batch(&[kafka_record(Some("a"))], Compression::None)[..]);
        // The last byte is the header count (0); make it a 5-byte varint of i32::MAX, then fix
        // the lengths and the CRC so only the count is wrong.
        let n = bytes.len();
        bytes.truncate(n - 1);
        bytes.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0x0f]);
        let record_len_at = 61;
        bytes[record_len_at] += 8; // zig-zag: +4 bytes of record
        let batch_len = i32::from_be_bytes(bytes[8..12].try_into().unwrap()) + 4;
        bytes[8..12].copy_from_slice(&batch_len.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        let err = decode_produce(bytes.freeze(), 0).unwrap_err();
        assert_eq!(err.code, ResponseError::CorruptMessage, "{}", err.message);
        assert!(err.message.contains("headers"), "{}", err.message);
    }

    #[test]
    fn many_small_compressed_batches_cannot_decompress_past_the_bound_together() {
        // Ten zstd batches of a few KiB each, every one within the per-batch bound, that
        // together decompress to 80 MiB: the partition's records must stay within the bound.
        let mut record = kafka_record(None);
        record.value = Some(Bytes::from(vec![0u8; 8 << 20]));
        let one = batch(&[record], Compression::Zstd);
        assert!(one.len() < 64 << 10, "{} bytes", one.len());
        let mut many = BytesMut::new();
        for _ in 0..10 {
            many.extend_from_slice(&one);
        }
        let err = match decode_produce(many.freeze(), 0) {
            Ok((records, _)) => panic!("{} records of 8 MiB accepted", records.len()),
            Err(err) => err,
        };
        assert_eq!(err.code, ResponseError::CorruptMessage, "{}", err.message);
        assert!(err.message.contains("decompress"), "{}", err.message);
    }

    #[test]
    fn varints_decode_like_kafkas_zigzag() {
        for (bytes, value) in
            [(&[0x00][..], 0), (&[0x01], -1), (&[0x02], 1), (&[0xfe, 0xff, 0xff, 0xff, 0x0f], i32::MAX as i64)]
        {
            assert_eq!(varint(&mut &bytes[..]).unwrap(), value);
        }
    }
}

//! `tierlog verify`'s view of records: the [`SegmentCheck`] that walks a decompressed
//! segment's batches for the tiering crate's verifier (which knows no records). The checks
//! themselves, and what they prove, are in `tierlog_tiering::verify`.

use std::sync::Arc;

use tierlog_tiering::verify::{SegmentCheck, SegmentFacts};

use crate::batch;

/// Checks every batch of a raw segment: header, CRC, and offsets dense from `base_offset`.
pub fn segment_check() -> SegmentCheck {
    Arc::new(|raw, base_offset, boundary| walk(raw, base_offset, boundary))
}

fn walk(raw: &[u8], base_offset: u64, boundary: &mut dyn FnMut(u64)) -> Result<SegmentFacts, String> {
    let (mut position, mut next, mut records) = (0usize, base_offset, 0u64);
    let (mut min_timestamp, mut max_timestamp) = (i64::MAX, i64::MIN);
    while position < raw.len() {
        let header = batch::validate(&raw[position..])
            .map_err(|e| format!("the batch at raw position {position} (offset {next} expected there): {e}"))?;
        header.expect_base(next).map_err(|e| format!("the batch at raw position {position}: {e}"))?;
        boundary(position as u64);
        records += u64::from(header.record_count);
        next = header.next_offset();
        min_timestamp = min_timestamp.min(header.min_timestamp);
        max_timestamp = max_timestamp.max(header.max_timestamp);
        position += header.length;
    }
    if next == base_offset {
        return Err("the segment holds no batch".into());
    }
    Ok(SegmentFacts { records, last_offset: next - 1, min_timestamp, max_timestamp })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Record;

    fn segment(base: u64, batches: &[usize]) -> Vec<u8> {
        let mut raw = Vec::new();
        let mut offset = base;
        for &n in batches {
            let records: Vec<Record> = (0..n)
                .map(|i| Record {
                    timestamp: 1000 + offset as i64,
                    value: format!("v{i}").into_bytes(),
                    ..Record::default()
                })
                .collect();
            raw.extend(batch::encode(offset, &records));
            offset += n as u64;
        }
        raw
    }

    #[test]
    fn a_whole_segment_is_counted_and_its_batch_starts_reported() {
        let raw = segment(10, &[3, 1, 4]);
        let mut starts = Vec::new();
        let facts = walk(&raw, 10, &mut |p| starts.push(p)).unwrap();
        assert_eq!((facts.records, facts.last_offset), (8, 17));
        assert_eq!(starts.len(), 3);
        assert_eq!(starts[0], 0);
    }

    #[test]
    fn a_flipped_byte_a_gap_or_a_wrong_base_is_named() {
        let raw = segment(10, &[3, 1, 4]);
        let mut flipped = raw.clone();
        let at = flipped.len() - 3;
        flipped[at] ^= 1;
        let err = walk(&flipped, 10, &mut |_| {}).unwrap_err();
        assert!(err.contains("offset 14 expected"), "{err}");
        let err = walk(&raw, 9, &mut |_| {}).unwrap_err();
        assert!(err.contains("raw position 0"), "{err}");
        let mut gap = segment(10, &[3]);
        gap.extend(segment(14, &[1]));
        let err = walk(&gap, 10, &mut |_| {}).unwrap_err();
        assert!(err.contains("13") && err.contains("14"), "{err}");
    }
}

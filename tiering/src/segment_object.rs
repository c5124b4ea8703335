//! Segment object format: one sealed segment as an object in the bucket. Its chunk index is
//! version 2 (per chunk: append times too); version 1 indexes are still read.
//!
//! ```text
//! [zstd frame: chunk 0][zstd frame: chunk 1]…[skippable frame 0x184D2A50: tierlog chunk index]
//! [skippable frame 0x184D2A5E: zstd seekable-format seek table]
//! ```
//!
//! Each chunk is a run of whole batches (about `chunk_bytes` raw) compressed as an independent
//! zstd frame with a content checksum, so one ranged GET of one chunk serves a seek. The chunk
//! index (first/last offset, min/max timestamp, raw and compressed position and length, CRC32C
//! of the compressed bytes) is a skippable frame that the standard `zstd -d` ignores: decoding
//! the whole object with the zstd CLI yields exactly the bytes of the local segment file. The
//! seek table last makes the object readable by third-party zstd seekable readers.
//!
//! Encrypted objects (chunk index version 3): each chunk's zstd frame is sealed with
//! AES-256-GCM ([`crate::encryption`]) and stored as `nonce ‖ ciphertext ‖ tag`; the index
//! names the key id, and its positions, lengths and CRC32C describe the stored (sealed) bytes,
//! so size, SHA-256 and CRC checks need no key. `zstd -d` no longer decodes such an object:
//! decrypt first (`tierlog decrypt`). Objects without encryption are written as version 2,
//! byte for byte as before.
//!
//! This module owns the byte layout only: no I/O, no records. The caller supplies the batch
//! boundaries of the raw segment.

use crate::encryption::{self, DataKey, Keyring};
use crate::error::{Error, Result};
use std::cell::RefCell;

/// Skippable-frame magic of the tierlog chunk index.
pub const INDEX_FRAME_MAGIC: u32 = 0x184D_2A50;
/// Skippable-frame magic of the zstd seekable format's seek table.
pub const SEEK_TABLE_FRAME_MAGIC: u32 = 0x184D_2A5E;
/// Footer magic of the zstd seekable format.
pub const SEEKABLE_MAGIC: u32 = 0x8F92_EAB1;
/// `b"TLSO"`: first bytes of the chunk index payload.
pub const INDEX_MAGIC: u32 = u32::from_le_bytes(*b"TLSO");
/// `b"TLSI"`: last bytes of the chunk index payload, so a reader can find it from the end.
pub const INDEX_TRAILER_MAGIC: u32 = u32::from_le_bytes(*b"TLSI");
/// The chunk index version this build writes for objects in clear; it reads 1, 2 and 3.
pub const FORMAT_VERSION: u8 = 2;
/// The chunk index version of encrypted objects: version 2 plus the key id after the header,
/// chunks stored sealed. Builds that read only 1 and 2 refuse it by its number.
pub const ENCRYPTED_FORMAT_VERSION: u8 = 3;
const INDEX_HEADER_BYTES: usize = 32;
/// A chunk entry of version 1; version 2 adds the chunk's smallest and largest append time.
const CHUNK_ENTRY_BYTES_V1: usize = 60;
const CHUNK_ENTRY_BYTES: usize = 76;
/// Stands for the append time of a batch written before append times were recorded (and for
/// every chunk of a version-1 index): such batches precede every stamped one in a partition.
pub const NO_APPEND_TIME: i64 = i64::MIN;
/// crc32c (4) + payload length (4) + trailer magic (4).
const INDEX_TRAILER_BYTES: usize = 12;
/// Most chunks one object may have: bounds what a reader allocates for a (checksummed) index.
pub const CHUNKS_MAX: usize = 1 << 20;

/// A batch boundary in the raw segment, supplied by the log crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMark {
    pub base_offset: u64,
    pub last_offset: u64,
    pub position: u64,
    pub length: u64,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    /// When the log appended the batch, or [`NO_APPEND_TIME`].
    pub append_time: i64,
}

/// One chunk's entry in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkMeta {
    pub first_offset: u64,
    pub last_offset: u64,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    /// Smallest and largest append time of the chunk's batches ([`NO_APPEND_TIME`] for a batch
    /// without one, and for both in a version-1 index).
    pub min_append_time: i64,
    pub max_append_time: i64,
    pub raw_position: u64,
    pub raw_len: u32,
    pub compressed_position: u64,
    pub compressed_len: u32,
    pub crc32c: u32,
}

/// The parsed chunk index of a segment object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkIndex {
    pub base_offset: u64,
    pub raw_bytes: u64,
    pub chunks: Vec<ChunkMeta>,
    /// The id of the key the chunks are sealed with (version 3); `None`: stored in clear.
    pub key_id: Option<String>,
}

impl ChunkIndex {
    /// The chunk holding `offset`, if the segment has it.
    pub fn chunk_for_offset(&self, offset: u64) -> Option<&ChunkMeta> {
        let i = self.chunks.partition_point(|c| c.last_offset < offset);
        self.chunks.get(i).filter(|c| c.first_offset <= offset)
    }

    /// The first chunk holding a record with timestamp ≥ `time` (all earlier chunks hold only
    /// older records, so the answer of a time lookup lies in it).
    pub fn chunk_for_time(&self, time: i64) -> Option<&ChunkMeta> {
        self.chunks.iter().find(|c| c.max_timestamp >= time)
    }

    /// The smallest and largest append time of the segment, `None` for [`NO_APPEND_TIME`] (as
    /// a manifest entry records them).
    pub fn append_time_range(&self) -> (Option<i64>, Option<i64>) {
        let known = |t: i64| (t != NO_APPEND_TIME).then_some(t);
        let min = self.chunks.iter().map(|c| c.min_append_time).min().and_then(known);
        (min, self.chunks.iter().map(|c| c.max_append_time).max().and_then(known))
    }

    /// The first chunk holding a batch appended after `time` (append times never decrease, so
    /// every earlier chunk was appended at or before it), and its number.
    pub fn chunk_for_append_time(&self, time: i64) -> Option<(usize, &ChunkMeta)> {
        self.chunks.iter().enumerate().find(|(_, c)| c.max_append_time > time)
    }
}

/// A built object: its bytes and where its index lies (stored in the manifest so a reader
/// fetches the index with one exact ranged GET).
#[derive(Debug, Clone)]
pub struct BuiltObject {
    pub bytes: Vec<u8>,
    pub index: ChunkIndex,
    pub index_position: u64,
    pub index_len: u64,
}

/// What sealing the chunks of one segment needs: the key, the partition (for the AAD) and a
/// nonce source (random in production, fixed in golden tests).
pub struct Sealing<'a> {
    pub key: &'a DataKey,
    pub topic: &'a str,
    pub partition: u32,
    pub nonce: &'a mut dyn FnMut() -> Result<[u8; encryption::NONCE_BYTES]>,
}

/// What opening the chunks of one encrypted segment needs.
#[derive(Debug, Clone, Copy)]
pub struct Opening<'a> {
    pub key: &'a DataKey,
    pub topic: &'a str,
    pub partition: u32,
    pub base_offset: u64,
}

/// Chunks one build has in flight per thread of the compression pool: two keep every thread
/// busy while the builder appends the finished ones in order. A build therefore holds at most
/// `2 × threads` compressed chunks beside the object it is assembling (docs/ARCHITECTURE.md,
/// "Memory and parallelism").
const CHUNKS_IN_FLIGHT_PER_THREAD: usize = 2;

/// How a build runs the compression (and sealing) of its chunks. The bytes are the same either
/// way: chunks are independent zstd frames, appended in chunk order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Schedule {
    /// On rayon's global pool (one thread per core, shared by every build in the process).
    Parallel,
    /// One chunk after the other on the calling thread (the reference the tests compare with).
    #[cfg_attr(not(test), allow(dead_code))]
    Sequential,
}

/// Builds the object for a raw segment. `batches` must cover `raw` exactly, in order. Chunks
/// are compressed in parallel on all cores; the bytes are those of a sequential build.
pub fn build(raw: &[u8], batches: &[BatchMark], chunk_bytes: u64, zstd_level: i32) -> Result<BuiltObject> {
    build_with(raw, batches, chunk_bytes, zstd_level, None, Schedule::Parallel)
}

/// Builds an encrypted object (chunk index version 3): each chunk compressed, then sealed.
/// Nonces are drawn in chunk order on the calling thread, as a sequential build draws them.
pub fn build_sealed(
    raw: &[u8],
    batches: &[BatchMark],
    chunk_bytes: u64,
    zstd_level: i32,
    sealing: Sealing<'_>,
) -> Result<BuiltObject> {
    build_with(raw, batches, chunk_bytes, zstd_level, Some(sealing), Schedule::Parallel)
}

/// The batches `start..end` that make up one chunk.
type Group = std::ops::Range<usize>;

/// Splits the batches into chunks of about `chunk_bytes` raw (at least one batch each).
fn plan_chunks(batches: &[BatchMark], chunk_bytes: u64) -> Vec<Group> {
    let mut groups = Vec::new();
    let mut start = 0;
    while start < batches.len() {
        let mut end = start + 1;
        while end < batches.len()
            && batches[end].position + batches[end].length - batches[start].position <= chunk_bytes
        {
            end += 1;
        }
        groups.push(start..end);
        start = end;
    }
    groups
}

fn build_with(
    raw: &[u8],
    batches: &[BatchMark],
    chunk_bytes: u64,
    zstd_level: i32,
    mut sealing: Option<Sealing<'_>>,
    schedule: Schedule,
) -> Result<BuiltObject> {
    check_marks(raw, batches)?;
    let base_offset = batches[0].base_offset;
    let groups = plan_chunks(batches, chunk_bytes);
    if groups.len() > CHUNKS_MAX {
        return Err(Error::Format(format!("{} chunks; at most {CHUNKS_MAX}: raise the chunk size", groups.len())));
    }
    // What a pool thread needs to seal a chunk (the nonce source stays on this thread).
    let seal_with = sealing.as_ref().map(|s| (s.key, s.topic, s.partition));
    let stored_chunk = |chunk_no: usize, group: &Group, nonce: Option<[u8; encryption::NONCE_BYTES]>| {
        let (first, last) = (&batches[group.start], &batches[group.end - 1]);
        let plain = &raw[first.position as usize..(last.position + last.length) as usize];
        let compressed = compress(plain, zstd_level)?;
        let stored = match (seal_with, nonce) {
            (Some((key, topic, partition)), Some(nonce)) => {
                let chunk_no = u32::try_from(chunk_no).expect("chunk count is bounded by CHUNKS_MAX");
                key.seal(nonce, &encryption::chunk_aad(topic, partition, base_offset, chunk_no)?, &compressed)?
            }
            _ => compressed,
        };
        let crc = crc32c::crc32c(&stored);
        Ok::<_, Error>((stored, crc))
    };
    let window = match schedule {
        Schedule::Parallel => rayon::current_num_threads().max(1) * CHUNKS_IN_FLIGHT_PER_THREAD,
        Schedule::Sequential => 1,
    };
    let mut bytes = Vec::with_capacity(raw.len() / 3 + 1024);
    let mut chunks = Vec::with_capacity(groups.len());
    for (w, in_window) in groups.chunks(window).enumerate() {
        let first_no = w * window;
        let nonces = match sealing.as_mut() {
            Some(s) => in_window.iter().map(|_| (s.nonce)().map(Some)).collect::<Result<Vec<_>>>()?,
            None => vec![None; in_window.len()],
        };
        let jobs: Vec<(usize, &Group, Option<[u8; encryption::NONCE_BYTES]>)> =
            in_window.iter().zip(nonces).enumerate().map(|(i, (g, n))| (first_no + i, g, n)).collect();
        let done: Vec<Result<(Vec<u8>, u32)>> = match schedule {
            Schedule::Parallel => {
                use rayon::prelude::*;
                jobs.into_par_iter().map(|(no, group, nonce)| stored_chunk(no, group, nonce)).collect()
            }
            Schedule::Sequential => jobs.into_iter().map(|(no, group, nonce)| stored_chunk(no, group, nonce)).collect(),
        };
        for (group, result) in in_window.iter().zip(done) {
            let (stored, crc32c) = result?;
            chunks.push(chunk_meta(&batches[group.clone()], bytes.len() as u64, &stored, crc32c)?);
            bytes.extend_from_slice(&stored);
        }
    }
    let key_id = sealing.map(|s| s.key.id().to_string());
    let index = ChunkIndex { base_offset, raw_bytes: raw.len() as u64, chunks, key_id };
    let index_position = bytes.len() as u64;
    write_skippable(&mut bytes, INDEX_FRAME_MAGIC, &encode_index(&index));
    let index_len = bytes.len() as u64 - index_position;
    write_skippable(&mut bytes, SEEK_TABLE_FRAME_MAGIC, &seek_table(&index.chunks));
    Ok(BuiltObject { bytes, index, index_position, index_len })
}

/// The index entry of the chunk made of `group`, stored at `compressed_position`.
fn chunk_meta(group: &[BatchMark], compressed_position: u64, stored: &[u8], crc32c: u32) -> Result<ChunkMeta> {
    let raw_len = group.iter().map(|b| b.length).sum::<u64>();
    Ok(ChunkMeta {
        first_offset: group[0].base_offset,
        last_offset: group[group.len() - 1].last_offset,
        min_timestamp: group.iter().map(|b| b.min_timestamp).min().unwrap_or(i64::MAX),
        max_timestamp: group.iter().map(|b| b.max_timestamp).max().unwrap_or(i64::MIN),
        min_append_time: group.iter().map(|b| b.append_time).min().unwrap_or(NO_APPEND_TIME),
        max_append_time: group.iter().map(|b| b.append_time).max().unwrap_or(NO_APPEND_TIME),
        raw_position: group[0].position,
        raw_len: u32::try_from(raw_len).map_err(|_| Error::Format("chunk larger than 4 GiB".into()))?,
        compressed_position,
        compressed_len: stored.len() as u32,
        crc32c,
    })
}

fn check_marks(raw: &[u8], batches: &[BatchMark]) -> Result<()> {
    let mut position = 0;
    for b in batches {
        if b.position != position || b.length == 0 || b.last_offset < b.base_offset {
            return Err(Error::Format(format!("batch marks do not tile the segment at byte {position}")));
        }
        position += b.length;
    }
    if batches.windows(2).any(|w| w[1].append_time < w[0].append_time) {
        return Err(Error::Format("batch append times decrease inside the segment".into()));
    }
    if position != raw.len() as u64 || batches.is_empty() {
        return Err(Error::Format(format!("batch marks cover {position} of {} bytes", raw.len())));
    }
    Ok(())
}

fn compress(plain: &[u8], level: i32) -> Result<Vec<u8>> {
    let mut encoder = zstd::bulk::Compressor::new(level).map_err(|e| Error::Format(format!("zstd init: {e}")))?;
    encoder.include_checksum(true).map_err(|e| Error::Format(format!("zstd checksum flag: {e}")))?;
    encoder.include_contentsize(true).map_err(|e| Error::Format(format!("zstd content size flag: {e}")))?;
    encoder.compress(plain).map_err(|e| Error::Format(format!("zstd compress: {e}")))
}

fn write_skippable(out: &mut Vec<u8>, magic: u32, payload: &[u8]) {
    out.extend_from_slice(&magic.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
}

fn encode_index(index: &ChunkIndex) -> Vec<u8> {
    let mut out = Vec::with_capacity(INDEX_HEADER_BYTES + index.chunks.len() * CHUNK_ENTRY_BYTES + INDEX_TRAILER_BYTES);
    out.extend_from_slice(&INDEX_MAGIC.to_le_bytes());
    out.push(if index.key_id.is_some() { ENCRYPTED_FORMAT_VERSION } else { FORMAT_VERSION });
    out.extend_from_slice(&[0u8; 3]);
    out.extend_from_slice(&(index.chunks.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&index.base_offset.to_le_bytes());
    out.extend_from_slice(&index.raw_bytes.to_le_bytes());
    if let Some(id) = &index.key_id {
        // Key ids are checked (1..=64 bytes) when a key is made.
        out.push(id.len() as u8);
        out.extend_from_slice(id.as_bytes());
    }
    for c in &index.chunks {
        out.extend_from_slice(&c.first_offset.to_le_bytes());
        out.extend_from_slice(&c.last_offset.to_le_bytes());
        out.extend_from_slice(&c.min_timestamp.to_le_bytes());
        out.extend_from_slice(&c.max_timestamp.to_le_bytes());
        out.extend_from_slice(&c.raw_position.to_le_bytes());
        out.extend_from_slice(&c.raw_len.to_le_bytes());
        out.extend_from_slice(&c.compressed_position.to_le_bytes());
        out.extend_from_slice(&c.compressed_len.to_le_bytes());
        out.extend_from_slice(&c.crc32c.to_le_bytes());
        out.extend_from_slice(&c.min_append_time.to_le_bytes());
        out.extend_from_slice(&c.max_append_time.to_le_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    let payload_len = (out.len() + 8) as u32;
    out.extend_from_slice(&payload_len.to_le_bytes());
    out.extend_from_slice(&INDEX_TRAILER_MAGIC.to_le_bytes());
    out
}

/// The zstd seekable format's seek table payload: per frame compressed and decompressed
/// sizes (no per-frame checksums: descriptor 0), then frame count, descriptor, magic.
fn seek_table(chunks: &[ChunkMeta]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunks.len() * 8 + 9);
    for c in chunks {
        out.extend_from_slice(&c.compressed_len.to_le_bytes());
        out.extend_from_slice(&c.raw_len.to_le_bytes());
    }
    out.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
    out.push(0);
    out.extend_from_slice(&SEEKABLE_MAGIC.to_le_bytes());
    out
}

/// Parses the chunk index from the exact bytes of its skippable frame (as located by the
/// manifest's `index_position`/`index_len`).
pub fn parse_index_frame(frame: &[u8]) -> Result<ChunkIndex> {
    let bad = |why: &str| Error::Format(format!("segment object chunk index: {why}"));
    if frame.len() < 8 || u32_at(frame, 0) != INDEX_FRAME_MAGIC || u32_at(frame, 4) as usize != frame.len() - 8 {
        return Err(bad("not an index frame (wrong magic or length)"));
    }
    parse_index_payload(&frame[8..])
}

fn parse_index_payload(p: &[u8]) -> Result<ChunkIndex> {
    let bad = |why: &str| Error::Format(format!("segment object chunk index: {why}"));
    if p.len() < INDEX_HEADER_BYTES + INDEX_TRAILER_BYTES || u32_at(p, 0) != INDEX_MAGIC {
        return Err(bad("bad magic"));
    }
    let entry_bytes = match p[4] {
        1 => CHUNK_ENTRY_BYTES_V1,
        2 | ENCRYPTED_FORMAT_VERSION => CHUNK_ENTRY_BYTES,
        other => return Err(bad(&format!("unsupported version {other} (this build reads 1, 2 and 3)"))),
    };
    let (key_id, entries_at) = match p[4] {
        ENCRYPTED_FORMAT_VERSION => {
            let len = usize::from(p[INDEX_HEADER_BYTES]);
            let id =
                p.get(INDEX_HEADER_BYTES + 1..INDEX_HEADER_BYTES + 1 + len).ok_or_else(|| bad("key id cut short"))?;
            let id = std::str::from_utf8(id).ok().filter(|id| encryption::check_key_id(id).is_ok());
            (Some(id.ok_or_else(|| bad("key id is not a valid key id"))?.to_string()), INDEX_HEADER_BYTES + 1 + len)
        }
        _ => (None, INDEX_HEADER_BYTES),
    };
    let count = u32_at(p, 8) as usize;
    if count > CHUNKS_MAX || p.len() != entries_at + count * entry_bytes + INDEX_TRAILER_BYTES {
        return Err(bad("length does not match the chunk count"));
    }
    let body_end = p.len() - INDEX_TRAILER_BYTES;
    if u32_at(p, body_end + 4) as usize != p.len() || u32_at(p, body_end + 8) != INDEX_TRAILER_MAGIC {
        return Err(bad("bad trailer"));
    }
    if crc32c::crc32c(&p[..body_end]) != u32_at(p, body_end) {
        return Err(bad("checksum mismatch"));
    }
    let mut chunks = Vec::with_capacity(count);
    for i in 0..count {
        let e = &p[entries_at + i * entry_bytes..];
        let appended = |at: usize| if entry_bytes == CHUNK_ENTRY_BYTES { u64_at(e, at) as i64 } else { NO_APPEND_TIME };
        chunks.push(ChunkMeta {
            first_offset: u64_at(e, 0),
            last_offset: u64_at(e, 8),
            min_timestamp: u64_at(e, 16) as i64,
            max_timestamp: u64_at(e, 24) as i64,
            raw_position: u64_at(e, 32),
            raw_len: u32_at(e, 40),
            compressed_position: u64_at(e, 44),
            compressed_len: u32_at(e, 52),
            crc32c: u32_at(e, 56),
            min_append_time: appended(60),
            max_append_time: appended(68),
        });
    }
    let ordered = chunks.windows(2).all(|w| w[0].max_append_time <= w[1].min_append_time)
        && chunks.iter().all(|c| c.min_append_time <= c.max_append_time);
    if !ordered {
        return Err(bad("append times decrease"));
    }
    Ok(ChunkIndex { base_offset: u64_at(p, 16), raw_bytes: u64_at(p, 24), chunks, key_id })
}

/// Finds and parses the chunk index from a whole object (for `verify` and tests; readers use
/// the manifest's index position instead).
pub fn parse_index_from_object(object: &[u8]) -> Result<ChunkIndex> {
    let (position, len) = locate_index(object)?;
    parse_index_frame(&object[position as usize..(position + len) as usize])
}

/// Where the chunk index frame lies in a whole object (position, length), found from the end
/// through the seek table: what a manifest entry's `index_position`/`index_len` must say.
pub fn locate_index(object: &[u8]) -> Result<(u64, u64)> {
    let bad = |why: &str| Error::Format(format!("segment object: {why}"));
    if object.len() < 17 || u32_at(object, object.len() - 4) != SEEKABLE_MAGIC {
        return Err(bad("no seek table at the end"));
    }
    let frames = u32_at(object, object.len() - 9) as usize;
    let seek_frame = 8 + frames.checked_mul(8).ok_or_else(|| bad("seek table too large"))? + 9;
    let seek_start = object.len().checked_sub(seek_frame).ok_or_else(|| bad("seek table larger than the object"))?;
    if seek_start < 8 + INDEX_HEADER_BYTES || u32_at(object, seek_start) != SEEK_TABLE_FRAME_MAGIC {
        return Err(bad("seek table frame header missing"));
    }
    if u32_at(object, seek_start - 4) != INDEX_TRAILER_MAGIC {
        return Err(bad("chunk index trailer missing"));
    }
    let payload_len = u32_at(object, seek_start - 8) as usize;
    let frame_start = payload_len
        .checked_add(8)
        .and_then(|frame| seek_start.checked_sub(frame))
        .ok_or_else(|| bad("chunk index longer than the object"))?;
    Ok((frame_start as u64, (seek_start - frame_start) as u64))
}

/// A chunk's stored bytes (compressed, or sealed) that have the index's length and CRC32C,
/// from [`check_stored_chunk`]: what [`decode_chunk`] and [`open_chunk`] take, so a chunk is
/// never decoded unchecked, nor checked twice by a caller that checks before it decodes.
pub struct CheckedChunk<B>(B);

/// Checks that `stored`, a chunk's stored bytes (compressed, or sealed), have the index's
/// length and CRC32C: what can be checked of an encrypted chunk without its key.
pub fn check_stored_chunk<B: AsRef<[u8]>>(meta: &ChunkMeta, stored: B) -> Result<CheckedChunk<B>> {
    let bytes = stored.as_ref();
    if bytes.len() != meta.compressed_len as usize {
        return Err(Error::Format(format!(
            "chunk at {} has {} bytes, index says {}",
            meta.compressed_position,
            bytes.len(),
            meta.compressed_len
        )));
    }
    let crc = crc32c::crc32c(bytes);
    if crc != meta.crc32c {
        return Err(Error::Format(format!(
            "chunk at byte {} (offsets {}..={}): CRC32C {crc:#010x} != index {:#010x}",
            meta.compressed_position, meta.first_offset, meta.last_offset, meta.crc32c
        )));
    }
    Ok(CheckedChunk(stored))
}

/// Decompresses one checked chunk of an object in clear, appending its raw bytes to `out`
/// (left as it was on an error). A caller decoding many chunks passes one buffer (or a whole
/// segment's): a fresh buffer per chunk costs a page fault per 4 KiB.
pub fn decode_chunk(meta: &ChunkMeta, chunk: &CheckedChunk<impl AsRef<[u8]>>, out: &mut Vec<u8>) -> Result<()> {
    decompress(meta, chunk.0.as_ref(), out)
}

/// Decrypts and decompresses checked chunk `chunk_no` of an encrypted object, appending its
/// raw bytes to `out` (left as it was on an error). The CRC32C of the stored bytes was checked
/// before the key is used.
pub fn open_chunk(
    meta: &ChunkMeta,
    chunk_no: usize,
    chunk: &CheckedChunk<impl AsRef<[u8]>>,
    opening: &Opening<'_>,
    out: &mut Vec<u8>,
) -> Result<()> {
    let number = u32::try_from(chunk_no).map_err(|_| Error::Format("chunk number above u32".into()))?;
    let aad = encryption::chunk_aad(opening.topic, opening.partition, opening.base_offset, number)?;
    let compressed = opening.key.open(&aad, chunk.0.as_ref()).map_err(|e| {
        Error::Format(format!(
            "chunk {chunk_no} at byte {} (offsets {}..={}): {e}",
            meta.compressed_position, meta.first_offset, meta.last_offset
        ))
    })?;
    decompress(meta, &compressed, out)
}

thread_local! {
    /// One zstd decompression context per thread, reused: a fresh one per chunk allocates and
    /// initialises its tables each time.
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Decompresses a chunk's frame after the end of `out`, which must come to exactly the index's
/// `raw_len` bytes; on any error `out` keeps its length.
fn decompress(meta: &ChunkMeta, compressed: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let zstd_error =
        |e: std::io::Error| Error::Format(format!("chunk at byte {}: zstd: {e}", meta.compressed_position));
    let start = out.len();
    // Not `reserve_exact`: an index whose segment size is too small would make every chunk
    // of a whole-object decode move the buffer.
    out.reserve(meta.raw_len as usize);
    // Writes at `start` into the spare capacity (the cursor's position), never before it.
    let mut tail = std::io::Cursor::new(&mut *out);
    tail.set_position(start as u64);
    let written = DECOMPRESSOR.with(|slot| {
        let mut slot = slot.borrow_mut();
        let decompressor = match slot.as_mut() {
            Some(d) => d,
            None => slot.insert(zstd::bulk::Decompressor::new().map_err(zstd_error)?),
        };
        decompressor.decompress_to_buffer(compressed, &mut tail).map_err(zstd_error)
    })?;
    if written != meta.raw_len as usize {
        out.truncate(start);
        return Err(Error::Format(format!(
            "chunk at byte {} decompressed to {written} bytes, index says {}",
            meta.compressed_position, meta.raw_len
        )));
    }
    Ok(())
}

/// Decodes a whole object in clear back to the raw segment bytes, checking every chunk. An
/// encrypted object is refused, naming its key id: see [`decode_object_with`].
pub fn decode_object(object: &[u8]) -> Result<Vec<u8>> {
    decode_object_with(object, None, "", 0)
}

/// Decodes a whole object, in clear or encrypted (with a key of `keys`, for the segment of
/// `topic`/`partition` whose base offset the index names), to the raw segment bytes.
pub fn decode_object_with(object: &[u8], keys: Option<&Keyring>, topic: &str, partition: u32) -> Result<Vec<u8>> {
    let index = parse_index_from_object(object)?;
    let key = match &index.key_id {
        None => None,
        Some(id) => Some(keys.and_then(|k| k.get(id)).ok_or_else(|| {
            Error::Format(format!(
                "the object is encrypted with key id '{id}', which {}: decrypt it with a keyring that holds that key",
                keys.map_or("no keyring was given".to_string(), |k| format!(
                    "the keyring {} does not hold",
                    k.source()
                ))
            ))
        })?),
    };
    let mut raw = Vec::with_capacity(index.raw_bytes as usize);
    for (chunk_no, c) in index.chunks.iter().enumerate() {
        let start = c.compressed_position as usize;
        let end = start + c.compressed_len as usize;
        let compressed =
            object.get(start..end).ok_or_else(|| Error::Format("chunk past the end of the object".into()))?;
        if c.raw_position != raw.len() as u64 {
            return Err(Error::Format("chunks do not tile the segment".into()));
        }
        let stored = check_stored_chunk(c, compressed)?;
        match &key {
            None => decode_chunk(c, &stored, &mut raw)?,
            Some(key) => {
                let opening = Opening { key, topic, partition, base_offset: index.base_offset };
                open_chunk(c, chunk_no, &stored, &opening, &mut raw)?
            }
        }
    }
    if raw.len() as u64 != index.raw_bytes {
        return Err(Error::Format(format!("object decodes to {} bytes, index says {}", raw.len(), index.raw_bytes)));
    }
    Ok(raw)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// See `encrypted_segment_object_v3_golden_bytes`: chunk 0 (nonce 01…, ciphertext, tag),
    /// chunk 1 (nonce 02…), then the version-3 chunk index (key id `k1` after the header) and
    /// the seek table.
    const GOLDEN_V3_HEX: &str = concat!(
        "0101010101010101010101015f76cac84cadd566d42c1779610a37b6bf4eeaadfbf079b2d3d907dac2ced4794cf29036",
        "ae3b655856af9c56c32458a1a0d5bbbd020202020202020202020202b39d36469dc78c5bcbfdc3815e1cb4673c8cd906",
        "e73b16d1325cd135da4f61851d967e1856ed0a9a6cc31d6c88b1dcb259ad1ee3502a4d18c7000000544c534f03000000",
        "02000000000000000a000000000000004600000000000000026b310a000000000000000e000000000000000000000000",
        "0000000300000000000000000000000000000028000000000000000000000040000000c054e268000000000000008000",
        "000000000000800f00000000000000130000000000000007000000000000000a0000000000000028000000000000001e",
        "0000004000000000000000400000001f286c1ce903000000000000e903000000000000dcb79a85c7000000544c53495e",
        "2a4d18190000004000000028000000400000001e0000000200000000b1ea928f",
    );

    /// A fake segment of `sizes.len()` "batches" (the format does not look inside them).
    fn segment(sizes: &[usize]) -> (Vec<u8>, Vec<BatchMark>) {
        let mut raw = Vec::new();
        let mut marks = Vec::new();
        for (i, size) in sizes.iter().enumerate() {
            let position = raw.len() as u64;
            raw.extend((0..*size).map(|j| b"payment event json "[(i + j) % 19]));
            let base = 10 + 5 * i as u64;
            marks.push(BatchMark {
                base_offset: base,
                last_offset: base + 4,
                position,
                length: *size as u64,
                min_timestamp: i as i64 * 7,
                max_timestamp: i as i64 * 7 + 3,
                append_time: if i == 0 { NO_APPEND_TIME } else { 1_000 + i as i64 },
            });
        }
        (raw, marks)
    }

    #[test]
    fn chunks_are_batch_aligned_and_index_round_trips() {
        let (raw, marks) = segment(&[300, 300, 300, 900, 100]);
        let built = build(&raw, &marks, 700, 3).unwrap();
        let ranges: Vec<(u64, u64)> = built.index.chunks.iter().map(|c| (c.first_offset, c.last_offset)).collect();
        assert_eq!(ranges, vec![(10, 19), (20, 24), (25, 29), (30, 34)]);
        assert_eq!(parse_index_from_object(&built.bytes).unwrap(), built.index);
        let frame = &built.bytes[built.index_position as usize..(built.index_position + built.index_len) as usize];
        assert_eq!(parse_index_frame(frame).unwrap(), built.index);
        assert_eq!(decode_object(&built.bytes).unwrap(), raw);
        assert_eq!(built.index.chunk_for_offset(22).unwrap().first_offset, 20);
        assert!(built.index.chunk_for_offset(35).is_none());
        assert_eq!(built.index.chunk_for_time(15).unwrap().first_offset, 20);
    }

    #[test]
    fn standard_zstd_decoder_yields_the_raw_segment() {
        let (raw, marks) = segment(&[5000, 7000, 3000]);
        let built = build(&raw, &marks, 8000, 1).unwrap();
        // The reference decoder (libzstd's streaming API, as used by `zstd -d`) skips the
        // skippable frames and concatenates the chunk frames.
        let decoded = zstd::stream::decode_all(&built.bytes[..]).unwrap();
        assert_eq!(decoded, raw);
    }

    #[test]
    fn a_flipped_byte_in_a_chunk_is_caught_by_its_crc() {
        let (raw, marks) = segment(&[4000, 4000]);
        let mut built = build(&raw, &marks, 4000, 3).unwrap();
        built.bytes[10] ^= 0x40;
        let err = decode_object(&built.bytes).unwrap_err().to_string();
        assert!(err.contains("CRC32C") && err.contains("offsets 10..=14"), "{err}");
    }

    /// A frame that decodes to more or fewer bytes than the index says is refused, and the
    /// buffer it was decoded after keeps what it held (decoding appends to a caller's buffer).
    #[test]
    fn a_chunk_decoding_to_another_length_than_its_index_says_leaves_the_buffer_as_it_was() {
        let (raw, marks) = segment(&[4000, 4000]);
        let built = build(&raw, &marks, 4000, 3).unwrap();
        let meta = built.index.chunks[1];
        let stored = &built.bytes[meta.compressed_position as usize..][..meta.compressed_len as usize];
        for raw_len in [meta.raw_len - 1, meta.raw_len + 1, 0] {
            let mut out = b"held".to_vec();
            out.reserve(2 * meta.raw_len as usize); // room for a longer frame to land in
            let wrong = ChunkMeta { raw_len, ..meta };
            let checked = check_stored_chunk(&wrong, stored).unwrap();
            let err = decode_chunk(&wrong, &checked, &mut out).unwrap_err().to_string();
            assert!(err.contains("index says") || err.contains("zstd"), "raw_len {raw_len}: {err}");
            assert_eq!(out, b"held", "raw_len {raw_len}");
        }
        let mut out = b"held".to_vec();
        decode_chunk(&meta, &check_stored_chunk(&meta, stored).unwrap(), &mut out).unwrap();
        assert_eq!(&out[4..], &raw[meta.raw_position as usize..][..meta.raw_len as usize]);
    }

    /// The chunk index and seek table of a one-chunk object as version 1 wrote them (before
    /// append times): still read, with no append time for the chunk.
    #[test]
    fn segment_object_v1_golden_bytes_still_parse() {
        let hex = "502a4d1868000000544c534f0100000001000000000000000a000000000000002800000000000000\
             0a000000000000000e000000000000000000000000000000030000000000000000000000000000002800\
             00000000000000000000240000000d11061800e71d7968000000544c53495e2a4d181100000024000000\
             280000000100000000b1ea928f";
        let hex: String = hex.split_whitespace().collect();
        let tail: Vec<u8> =
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        let index = parse_index_frame(&tail[..8 + 0x68]).unwrap();
        let c = index.chunks[0];
        assert_eq!((index.base_offset, index.raw_bytes, c.first_offset, c.last_offset), (10, 40, 10, 14));
        assert_eq!((c.min_timestamp, c.max_timestamp, c.raw_len, c.compressed_len), (0, 3, 40, 36));
        assert_eq!((c.min_append_time, c.max_append_time), (NO_APPEND_TIME, NO_APPEND_TIME));
    }

    /// Golden bytes of a two-chunk object's index and seek table, version 2 (append times per
    /// chunk). A failure means the format changed: bump FORMAT_VERSION and keep a reader for
    /// this one.
    #[test]
    fn segment_object_v2_golden_bytes() {
        let (raw, marks) = segment(&[40, 30]);
        let built = build(&raw, &marks, 40, 3).unwrap();
        let tail = &built.bytes[built.index_position as usize..];
        let hex: String = tail.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "502a4d18c4000000544c534f0200000002000000000000000a0000000000000046000000000000000a00000000000000\
             0e0000000000000000000000000000000300000000000000000000000000000028000000000000000000000024000000\
             0d110618000000000000008000000000000000800f00000000000000130000000000000007000000000000000a000000\
             0000000028000000000000001e000000240000000000000024000000eeab336be903000000000000e903000000000000\
             52386e16c4000000544c53495e2a4d18190000002400000028000000240000001e0000000200000000b1ea928f"
        );
    }

    #[test]
    fn append_times_are_indexed_per_chunk_and_looked_up() {
        let (raw, marks) = segment(&[300, 300, 300, 900, 100]);
        let built = build(&raw, &marks, 700, 3).unwrap();
        let times: Vec<(i64, i64)> =
            built.index.chunks.iter().map(|c| (c.min_append_time, c.max_append_time)).collect();
        assert_eq!(times, vec![(NO_APPEND_TIME, 1_001), (1_002, 1_002), (1_003, 1_003), (1_004, 1_004)]);
        assert_eq!(built.index.chunk_for_append_time(i64::MIN).unwrap().0, 0);
        assert_eq!(built.index.chunk_for_append_time(1_001).unwrap().0, 1);
        assert_eq!(built.index.chunk_for_append_time(1_003).unwrap().0, 3);
        assert!(built.index.chunk_for_append_time(1_004).is_none());
        let mut backwards = marks.clone();
        backwards[2].append_time = 1_000;
        assert!(build(&raw, &backwards, 700, 3).is_err());
    }

    /// The key of the encryption tests: bytes 0..32, id `k1`.
    fn key() -> DataKey {
        DataKey::new("k1", &(0u8..32).collect::<Vec<_>>()).unwrap()
    }

    fn keyring(keys: Vec<DataKey>) -> Keyring {
        let current = keys[0].id().to_string();
        Keyring::new(keys, &current, "test keyring").unwrap()
    }

    /// Seals with nonces 1,1,…,1 then 2,2,…,2 (golden tests only: production nonces are random).
    fn build_sealed_counting(raw: &[u8], marks: &[BatchMark], chunk_bytes: u64, topic: &str) -> BuiltObject {
        let mut counter = 0u8;
        let mut nonce = || {
            counter += 1;
            Ok([counter; encryption::NONCE_BYTES])
        };
        let sealing = Sealing { key: &key(), topic, partition: 3, nonce: &mut nonce };
        build_sealed(raw, marks, chunk_bytes, 3, sealing).unwrap()
    }

    /// Golden bytes of a two-chunk encrypted object (chunk index version 3), key bytes 0..32,
    /// nonces 01…01 and 02…02, topic `t`, partition 3. Each chunk is `nonce ‖ ciphertext ‖ tag`;
    /// the ciphertexts and tags were checked with Python's `cryptography` (AESGCM, an
    /// implementation not used here) decrypting to the zstd frames of `build` with the AAD of
    /// `encryption::chunk_aad`, and `integration/scripts/decrypt-object.py` decrypts the
    /// object to the segment. A failure means the format changed: add a version.
    #[test]
    fn encrypted_segment_object_v3_golden_bytes() {
        let (raw, marks) = segment(&[40, 30]);
        let built = build_sealed_counting(&raw, &marks, 40, "t");
        let hex: String = built.bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, GOLDEN_V3_HEX);
        assert_eq!(built.bytes[built.index_position as usize + 12], ENCRYPTED_FORMAT_VERSION);
        assert_eq!(built.index.key_id.as_deref(), Some("k1"));
        assert_eq!(parse_index_from_object(&built.bytes).unwrap(), built.index);
        assert_eq!(decode_object_with(&built.bytes, Some(&keyring(vec![key()])), "t", 3).unwrap(), raw);
        // Stored in clear, the same segment still gives version 2, byte for byte as before.
        let clear = build(&raw, &marks, 40, 3).unwrap();
        assert_eq!(clear.bytes[clear.index_position as usize + 12], FORMAT_VERSION);
    }

    #[test]
    fn an_encrypted_object_is_not_zstd_and_needs_its_key_named_by_id() {
        let (raw, marks) = segment(&[5000, 7000, 3000]);
        let built = build_sealed_counting(&raw, &marks, 8000, "t");
        assert!(zstd::stream::decode_all(&built.bytes[..]).is_err(), "zstd -d must fail loudly, not print ciphertext");
        let err = decode_object(&built.bytes).unwrap_err().to_string();
        assert!(err.contains("encrypted with key id 'k1'") && err.contains("no keyring"), "{err}");
        let other = keyring(vec![DataKey::new("k2", &[9; 32]).unwrap()]);
        let err = decode_object_with(&built.bytes, Some(&other), "t", 3).unwrap_err().to_string();
        assert!(err.contains("'k1'") && err.contains("test keyring does not hold"), "{err}");
        // A key under the right id but with other bytes fails authentication, never decodes.
        let impostor = keyring(vec![DataKey::new("k1", &[9; 32]).unwrap()]);
        let err = decode_object_with(&built.bytes, Some(&impostor), "t", 3).unwrap_err().to_string();
        assert!(err.contains("authentication failed"), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
        /// Sealed segments round-trip; a flipped bit anywhere in a sealed chunk fails even with
        /// its CRC32C fixed up (so only GCM can catch it); a chunk opened at another place
        /// (swapped with its neighbour, another topic, partition or segment) fails; a flip in a
        /// version-3 index is detected.
        #[test]
        fn sealed_segments_round_trip_and_any_tampering_fails(
            sizes in proptest::collection::vec(1usize..3000, 1..16),
            chunk_bytes in 64u64..10_000,
            flip in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let (raw, marks) = segment(&sizes);
            let mut nonce = encryption::random_nonce;
            let sealing = Sealing { key: &key(), topic: "pay", partition: 3, nonce: &mut nonce };
            let built = build_sealed(&raw, &marks, chunk_bytes, 1, sealing).unwrap();
            let ring = keyring(vec![key()]);
            prop_assert_eq!(decode_object_with(&built.bytes, Some(&ring), "pay", 3).unwrap(), raw);
            let chunks = &built.index.chunks;
            let stored = |c: &ChunkMeta| {
                built.bytes[c.compressed_position as usize..(c.compressed_position + u64::from(c.compressed_len)) as usize].to_vec()
            };
            let k = key();
            let open = |meta: &ChunkMeta, no: usize, bytes: &[u8], topic: &str, partition: u32, base: u64| {
                let opening = Opening { key: &k, topic, partition, base_offset: base };
                // Appends after what the buffer holds, and leaves it as it was on an error.
                let mut out = b"before".to_vec();
                let opened = check_stored_chunk(meta, bytes).and_then(|c| open_chunk(meta, no, &c, &opening, &mut out));
                assert!(out.starts_with(b"before") && (opened.is_ok() || out == b"before"));
                opened.map(|()| out.split_off(6))
            };
            let base = built.index.base_offset;
            let no = flip.index(chunks.len());
            let (meta, bytes) = (chunks[no], stored(&chunks[no]));
            prop_assert!(open(&meta, no, &bytes, "pay", 3, base).is_ok());
            let mut flipped = bytes.clone();
            let at = flip.index(flipped.len());
            flipped[at] ^= 1 << bit;
            let refreshed = ChunkMeta { crc32c: crc32c::crc32c(&flipped), ..meta };
            let err = open(&refreshed, no, &flipped, "pay", 3, base).unwrap_err().to_string();
            prop_assert!(err.contains("authentication failed"), "flip at {} of chunk {}: {}", at, no, err);
            prop_assert!(open(&meta, no, &bytes, "pax", 3, base).is_err(), "another topic");
            prop_assert!(open(&meta, no, &bytes, "pay", 4, base).is_err(), "another partition");
            prop_assert!(open(&meta, no, &bytes, "pay", 3, base + 1).is_err(), "another segment");
            if chunks.len() > 1 {
                let other = (no + 1) % chunks.len();
                let swapped = ChunkMeta { ..chunks[other] };
                prop_assert!(open(&swapped, no, &stored(&chunks[other]), "pay", 3, base).is_err(), "chunk {} as {}", other, no);
            }
            let mut frame = built.bytes[built.index_position as usize..(built.index_position + built.index_len) as usize].to_vec();
            let at = flip.index(frame.len());
            frame[at] ^= 1 << bit;
            prop_assert!(parse_index_frame(&frame).is_err(), "index flip at {} undetected", at);
        }
    }

    /// Nonces 1,1,…,1 then 2,2,…,2 and so on, failing (as a broken random source would) on
    /// draw number `fail_at` (1-based), if any.
    fn counting_nonces(fail_at: Option<u8>) -> impl FnMut() -> Result<[u8; encryption::NONCE_BYTES]> {
        let mut counter = 0u8;
        move || {
            counter += 1;
            match fail_at {
                Some(n) if n == counter => Err(Error::Format("injected: the system random source failed".into())),
                _ => Ok([counter; encryption::NONCE_BYTES]),
            }
        }
    }

    fn build_counting(raw: &[u8], marks: &[BatchMark], chunk_bytes: u64, schedule: Schedule) -> Result<BuiltObject> {
        let mut nonce = counting_nonces(None);
        let sealing = Sealing { key: &key(), topic: "pay", partition: 3, nonce: &mut nonce };
        build_with(raw, marks, chunk_bytes, 1, Some(sealing), schedule)
    }

    /// Runs `f` on a pool of two threads, so a build's window (threads × chunks in flight per
    /// thread) is the same on every machine and the tests below span several windows.
    fn on_two_threads<R: Send>(f: impl FnOnce() -> R + Send) -> R {
        rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap().install(f)
    }

    /// A seal that fails part-way through a parallel build (the nonce of a chunk in a later
    /// window than the first) fails the whole build: no object, nothing partial to upload.
    /// Built again, the object is byte for byte the sequential build with the same nonces.
    #[test]
    fn a_failure_in_the_middle_of_a_parallel_build_yields_no_object_and_a_retry_the_same_bytes() {
        on_two_threads(failure_in_the_middle_of_a_parallel_build);
    }

    fn failure_in_the_middle_of_a_parallel_build() {
        let (raw, marks) = segment(&[900; 24]);
        let window = rayon::current_num_threads() * CHUNKS_IN_FLIGHT_PER_THREAD;
        assert!(24 > 2 * window, "the failing chunk must lie past the first window");
        let fail_at = u8::try_from(window + 2).unwrap();
        let mut nonce = counting_nonces(Some(fail_at));
        let sealing = Sealing { key: &key(), topic: "pay", partition: 3, nonce: &mut nonce };
        let err = build_with(&raw, &marks, 1000, 1, Some(sealing), Schedule::Parallel).unwrap_err();
        assert!(err.to_string().contains("random source failed"), "{err}");
        let retried = build_counting(&raw, &marks, 1000, Schedule::Parallel).unwrap();
        let sequential = build_counting(&raw, &marks, 1000, Schedule::Sequential).unwrap();
        assert_eq!(retried.index.chunks.len(), 24);
        assert_eq!(retried.bytes, sequential.bytes);
        assert_eq!(decode_object_with(&retried.bytes, Some(&keyring(vec![key()])), "pay", 3).unwrap(), raw);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
        /// Parallel and sequential builds give identical objects (same frames, same order, same
        /// index), in clear and sealed, for any segment and chunk size — also with many more
        /// chunks than a build has in flight at once.
        #[test]
        fn parallel_and_sequential_builds_give_identical_bytes(
            sizes in proptest::collection::vec(1usize..3000, 1..60),
            chunk_bytes in 64u64..6_000,
            level in 1i32..4,
        ) {
            let (raw, marks) = segment(&sizes);
            let parallel =
                on_two_threads(|| build_with(&raw, &marks, chunk_bytes, level, None, Schedule::Parallel)).unwrap();
            let sequential = build_with(&raw, &marks, chunk_bytes, level, None, Schedule::Sequential).unwrap();
            prop_assert_eq!(&parallel.index, &sequential.index);
            prop_assert_eq!((parallel.index_position, parallel.index_len), (sequential.index_position, sequential.index_len));
            prop_assert!(parallel.bytes == sequential.bytes, "object bytes differ");
            prop_assert_eq!(decode_object(&parallel.bytes).unwrap(), raw.clone());
            let parallel = on_two_threads(|| build_counting(&raw, &marks, chunk_bytes, Schedule::Parallel)).unwrap();
            let sequential = build_counting(&raw, &marks, chunk_bytes, Schedule::Sequential).unwrap();
            prop_assert!(parallel.bytes == sequential.bytes, "sealed object bytes differ");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
        #[test]
        fn any_segment_round_trips_and_any_index_flip_is_detected(
            sizes in proptest::collection::vec(1usize..3000, 1..20),
            chunk_bytes in 64u64..10_000,
            flip in any::<prop::sample::Index>(),
        ) {
            let (raw, marks) = segment(&sizes);
            let built = build(&raw, &marks, chunk_bytes, 1).unwrap();
            prop_assert_eq!(decode_object(&built.bytes).unwrap(), raw);
            let mut frame = built.bytes[built.index_position as usize..(built.index_position + built.index_len) as usize].to_vec();
            let at = flip.index(frame.len());
            frame[at] ^= 0x01;
            prop_assert!(parse_index_frame(&frame).is_err(), "flip at {} undetected", at);
        }
    }
}

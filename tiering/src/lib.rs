//! tierlog-tiering: the remote tier of tierlog.
//!
//! Moves *sealed segments* (raw bytes plus batch boundaries supplied by the caller) to object
//! storage and keeps, per partition, the manifest that is the one source of truth for what
//! the remote tier holds. It knows nothing about records.
//!
//! - [`store`]: the object store from configuration (S3 with aws-config credentials, or a
//!   local directory), fail-fast checks, the conditional-write probe.
//! - [`segment_object`]: the chunked-zstd segment object format.
//! - [`encryption`]: the keyring and AES-256-GCM sealing of chunks (optional).
//! - [`keys`]: object key layout.
//! - [`manifest`]: the versioned, hash-chained, create-only manifest.
//! - [`uploader`]: build, upload with retries, commit in offset order.
//! - [`remote_reader`]: offset/time → one ranged GET of one chunk; cache, prefetch, coalescing.
//! - [`retention`]: remote retention: expiry commits and deleting expired objects after a grace.
//! - [`verify`]: proves a bucket's manifests and objects, from the bucket alone.
//! - [`signing`]: Ed25519 manifest signatures and published public keys.
//! - [`lock`]: S3 Object Lock: locked writes, the bucket check, extensions, legal-hold flags,
//!   version-aware deletes (aws-sdk-s3).
//! - [`holds`]: legal holds in the bucket, which remote retention never expires.
//! - [`catalog`]: the topic catalog and consumer-group offset snapshots in the bucket.
//! - [`audit`]: the hash-chained audit trail of every change to the archive, in the bucket.
//! - [`blocking`]: blocking work from async code (inline in the simulation).
//! - [`fault`]: an object store wrapper that injects faults and counts requests (tests).

pub mod audit;
pub mod blocking;
pub mod catalog;
pub mod encryption;
pub mod error;
pub mod fault;
pub mod holds;
pub mod keys;
pub mod lock;
pub mod manifest;
pub mod remote_reader;
pub mod retention;
pub mod scrub;
pub mod segment_object;
pub mod signing;
pub mod store;
pub mod uploader;
pub mod verify;

pub use error::{Error, Result};

/// Hex SHA-256, the digest used for raw segments, objects and manifests. ring's
/// implementation: on CPUs without SHA extensions its assembly is about twice as fast as the
/// portable one, and hashing every segment twice (raw and compressed) is the largest cost of
/// tiering and of `verify --deep` (`bench verify`).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

//! tierlog: an append-only, partitioned commit log whose recent segments live on local disk
//! and whose sealed segments are tiered to S3-compatible object storage.
//!
//! Module map (one responsibility each):
//! - [`storage`]: the storage engine — record, batch format, limits, segment and indexes,
//!   partition, idempotent producers, topic, log, writer lock, disk and clock. Its modules are
//!   re-exported here (`tierlog::batch`, `tierlog::partition`, …).
//! - [`tier`]: drives the remote tier (upload, commit, local retention); the bucket formats
//!   live in the `tierlog-tiering` crate (`tiering/`).
//! - [`reader`]: the unified reader over both tiers (offsets and time).
//! - [`serve`]: the front ends of `tierlog serve` — HTTP, Kafka, auth, and the append path
//!   they share (re-exported as `tierlog::kafka`, `tierlog::auth`, `tierlog::append`).
//! - [`audit`]: the log's actions as events of the audit trail in the bucket (actors, queue).
//! - [`restore`]: rebuilds a data directory from the bucket alone.
//! - [`verify`]: the record-level checks `tierlog verify` hands to the tiering crate's verifier.
//! - [`groups`]: committed consumer-group offsets, shared by every front end and the CLI.
//! - [`config`]: TOML + environment configuration.
//! - [`envelope`], [`time`], [`sample`]: the JSON record envelope, time parsing, sample data.

pub mod audit;
pub mod config;
pub mod envelope;
pub mod error;
pub mod groups;
pub mod plain_json;
pub mod reader;
pub mod replica;
pub mod restore;
pub mod sample;
pub mod serve;
pub mod storage;
pub mod tier;
pub mod time;
pub mod verify;

pub use serve::{append, auth, kafka};
pub use storage::{
    ack_end, append_floor, batch, disk, group_commit, host, index, limits, lock, log, partition, producers, record,
    segment, settings, topic,
};

pub use error::{Error, ErrorKind, Result};
pub use log::Log;
pub use record::{Record, StoredRecord};

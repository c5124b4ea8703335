//! tierlog: an append-only, partitioned commit log whose recent segments live on local disk
//! and whose sealed segments are tiered to S3-compatible object storage.
//!
//! Module map (one responsibility each):
//! - [`record`], [`batch`], [`limits`]: the record, the checksummed batch format and the one
//!   table of record limits that writers check and the decoder enforces.
//! - [`index`], [`segment`]: one segment file and its sparse offset/time indexes.
//! - [`ack_end`]: the acknowledged end the writer publishes for read-only readers.
//! - [`partition`]: dense offsets, rolling, fsync policy, recovery, lookups.
//! - [`producers`]: idempotent producers' state per partition (retries stored once).
//! - [`topic`], [`log`], [`lock`]: topics, the data directory and its writer lock.
//! - [`config`]: TOML + environment configuration.
//! - [`disk`]: the file-system trait the log writes through (real, or simulated with crashes).
//! - [`tier`]: drives the remote tier (upload, commit, local retention).
//! - [`reader`]: the unified reader over both tiers (offsets and time).
//! - [`append`]: appending a request's records, shared by the HTTP and Kafka front ends.
//! - [`server`], [`kafka`], [`auth`]: the HTTP and Kafka front ends of `tierlog serve`.
//! - [`envelope`], [`time`]: the JSON record envelope of the CLI (and later HTTP).

pub mod ack_end;
pub mod append;
pub mod auth;
pub mod batch;
pub mod config;
pub mod disk;
pub mod envelope;
pub mod error;
pub mod groups;
pub mod host;
pub mod index;
pub mod kafka;
pub mod limits;
pub mod lock;
pub mod log;
pub mod partition;
pub mod producers;
pub mod reader;
pub mod record;
pub mod sample;
pub mod segment;
pub mod server;
pub mod tier;
pub mod time;
pub mod topic;

pub use error::{Error, ErrorKind, Result};
pub use log::Log;
pub use record::{Record, StoredRecord};

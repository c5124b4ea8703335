//! The storage engine: the local log of topics and partitions, and everything it is made of.
//!
//! - [`record`], [`batch`], [`limits`]: the record, the checksummed batch format and the one
//!   table of record limits that writers check and the decoder enforces.
//! - [`index`], [`segment`]: one segment file and its sparse offset/time indexes.
//! - [`ack_end`]: the acknowledged end the writer publishes for read-only readers.
//! - [`partition`]: dense offsets, rolling, fsync policy, recovery, lookups.
//! - [`group_commit`]: concurrent appends to a partition written together, one fsync.
//! - [`producers`]: idempotent producers' state per partition (retries stored once).
//! - [`topic`], [`settings`], [`log`], [`lock`]: topics and their per-topic settings, the data
//!   directory and its writer lock.
//! - [`disk`], [`host`]: the file system and clock the engine runs on (real, or simulated
//!   with crashes).
//!
//! It knows nothing of the remote tier (`tier`) or of the front ends (`serve`).

pub mod ack_end;
pub mod append_floor;
pub mod batch;
pub mod disk;
pub mod group_commit;
pub mod host;
pub mod index;
pub mod limits;
pub mod lock;
pub mod log;
pub mod partition;
pub mod producers;
pub mod record;
pub mod segment;
pub mod settings;
pub mod topic;

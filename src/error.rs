//! The log crate's error type. Variants carry the context a user needs to act: topic,
//! partition, offset, file and position. [`Error::kind`] folds them into what a caller
//! should do (fix the input, retry, repair data, stop).

use std::path::{Path, PathBuf};

use crate::batch::BatchError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request or configuration is wrong: fix it, retrying will not help.
    Invalid,
    /// Stored data is damaged or missing: repair or restore, never trust it.
    Data,
    /// A resource is busy or unreachable: retry later.
    Unavailable,
    /// Another writer owns the data: stop writing.
    Fenced,
    /// An operating error of this machine (I/O): look at the message.
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot {action} {path}: {source}")]
    Io { path: PathBuf, action: &'static str, source: std::io::Error },
    #[error(
        "corrupt batch in {path} at byte {position}: {error}. The file is left untouched; restore it from the remote tier or move it aside"
    )]
    Corrupt { path: PathBuf, position: u64, error: BatchError },
    #[error("data directory {dir} is locked by another tierlog process ({holder}); stop it or use another --data-dir")]
    Locked { dir: PathBuf, holder: String },
    #[error("data directory {0} is opened read-only; this operation needs the writer")]
    ReadOnly(PathBuf),
    /// A write to a read-only replica (`serve --replica`): it serves what the bucket holds.
    #[error(
        "{what}: this node is a read-only replica of {remote}: it serves what the bucket holds and takes no writes; send writes to the writer node"
    )]
    Replica { what: String, remote: String },
    #[error("topic '{0}' does not exist (list topics with `tierlog topic list`)")]
    UnknownTopic(String),
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName { name: String, reason: &'static str },
    #[error("topic '{topic}' has no partition {partition} (it has {partitions}: 0..={max})", max = partitions - 1)]
    UnknownPartition { topic: String, partition: u32, partitions: u32 },
    #[error(
        "{topic}/{partition}: record {index} of the append {limit}; nothing of the append was written. Split the record or move data out of its headers"
    )]
    RecordLimit { topic: String, partition: u32, index: usize, limit: crate::limits::LimitError },
    #[error("record of {bytes} bytes for {topic}/{partition} exceeds log.max_record_bytes = {max}")]
    RecordTooLarge { topic: String, partition: u32, bytes: usize, max: usize },
    #[error(
        "offset {offset} of {topic}/{partition} is below the log start {start}: {why}; the earliest available offset is {start}"
    )]
    OffsetBelowStart { topic: String, partition: u32, offset: u64, start: u64, why: String },
    /// A question (an as-of time, a restore point) whose answer lies in what retention expired.
    #[error(
        "{topic}/{partition}: {asked} lies in what retention expired: {why}; the earliest available offset is {start}"
    )]
    Expired { topic: String, partition: u32, asked: String, start: u64, why: String },
    /// An as-of question whose answer depends on records without an append time.
    #[error(
        "{topic}/{partition}: what was known at {time} cannot be told: the records before offset {offset} were written by a build that did not record append times (tierlog records them from offset {offset} on). Ask for a time at or after that offset's append time, or read those records by offset or by their own timestamps"
    )]
    AppendTimeUnknown { topic: String, partition: u32, time: String, offset: u64 },
    #[error("{topic}/{partition} is damaged: {detail}")]
    Damaged { topic: String, partition: u32, detail: String },
    /// A write or fsync failed in a way that leaves the durability of the active segment
    /// unknown: the partition refuses appends until it is reopened (recovery re-validates it).
    #[error(
        "{topic}/{partition} refuses appends: {reason}. Every acknowledged record is kept; records of the appends that failed may or may not be in the log after the restart (after every acknowledged one, never between). Fix the disk, then restart tierlog: recovery re-validates the active segment"
    )]
    Stopped { topic: String, partition: u32, reason: String },
    /// An idempotent producer's batch that is neither the next in its sequence nor a retry of
    /// a stored one, or from a fenced producer (see `producers`).
    #[error("{topic}/{partition}: {refusal}; nothing was written")]
    Producer { topic: String, partition: u32, refusal: crate::producers::Refusal },
    #[error(transparent)]
    Remote(#[from] tierlog_tiering::Error),
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The server's encryption keyring could not be loaded on the read path (missing file,
    /// broken TOML, bad key). The operator's to fix, not the reader's: Internal, never Invalid.
    /// The detail names the keyring's path: [`Error::client_message`] leaves it out.
    #[error("the encryption keyring could not be loaded: {0}")]
    Keyring(String),
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// What a remote client (HTTP, Kafka) is told: the full message, except where it names
    /// this server's files (the keyring's path), which the server log keeps.
    pub fn client_message(&self) -> String {
        match self {
            Error::Keyring(_) => {
                "the server's encryption keyring could not be loaded; the server's log says why".to_string()
            }
            other => other.to_string(),
        }
    }

    pub fn io(path: &Path, action: &'static str, source: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), action, source }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { .. } | Error::Stopped { .. } | Error::Keyring(_) => ErrorKind::Internal,
            Error::Remote(e) => match e {
                tierlog_tiering::Error::Fenced { .. } => ErrorKind::Fenced,
                tierlog_tiering::Error::Store { .. } | tierlog_tiering::Error::Timeout { .. } => ErrorKind::Unavailable,
                tierlog_tiering::Error::Config(_) => ErrorKind::Invalid,
                // The server lacks a key: the operator's to fix, neither the client's nor damage.
                tierlog_tiering::Error::Io { .. } | tierlog_tiering::Error::KeyMissing { .. } => ErrorKind::Internal,
                _ => ErrorKind::Data,
            },
            Error::Corrupt { .. } | Error::Damaged { .. } => ErrorKind::Data,
            Error::Locked { .. } | Error::ReadOnly(_) | Error::Replica { .. } => ErrorKind::Fenced,
            Error::UnknownTopic(_)
            | Error::TopicExists(_)
            | Error::InvalidTopicName { .. }
            | Error::UnknownPartition { .. }
            | Error::RecordTooLarge { .. }
            | Error::RecordLimit { .. }
            | Error::OffsetBelowStart { .. }
            | Error::Expired { .. }
            | Error::AppendTimeUnknown { .. }
            | Error::Producer { .. }
            | Error::Config(_)
            | Error::Invalid(_) => ErrorKind::Invalid,
        }
    }
}

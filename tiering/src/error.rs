//! Errors of the remote tier. Variants name the object key, the store (endpoint and bucket,
//! never credentials) and say what to check.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The remote configuration is unusable (bad URL, unknown scheme…).
    #[error("remote tier configuration: {0}")]
    Config(String),
    /// The store could not be reached or refused us; `hint` says what to check.
    #[error("object store {store}: {action} failed: {source}. {hint}")]
    Store { store: String, action: String, hint: &'static str, source: Box<object_store::Error> },
    /// The store did not answer in time: an outage or overload, not damage; try again.
    #[error(
        "object store {store}: {action}: no answer within {after_ms} ms ({setting}); try again, or raise it if the store is merely slow"
    )]
    Timeout { store: String, action: String, after_ms: u64, setting: &'static str },
    /// Bytes in the bucket (or built for it) break the format: never trusted.
    #[error("{0}")]
    Format(String),
    /// An object failed verification: key and reason.
    #[error("object {key}: {reason}")]
    Corrupt { key: String, reason: String },
    /// An object the manifest lists is missing from the bucket.
    #[error("object {key} is listed in the manifest but missing from the bucket")]
    Missing { key: String },
    /// Another writer committed to this partition's manifest.
    #[error(
        "{topic}/{partition}: manifest version {version} was written by another writer ({other}); this writer is fenced. Stop the other writer or point this one at another prefix"
    )]
    Fenced { topic: String, partition: u32, version: u64, other: String },
    /// An upload's commit window passed before a manifest version could list it. Scrub
    /// counts objects that old as orphans, so the commit is not attempted.
    #[error(
        "{topic}/{partition}: {what} {key}: the commit window (tiering.commit_window_ms) of the segment at offset {base_offset} has passed, so it is not committed; the uploaded object is left for scrub and the segment is uploaded again on the next run. If uploads or commits are routinely this slow, raise tiering.commit_window_ms"
    )]
    CommitWindow { topic: String, partition: u32, base_offset: u64, what: &'static str, key: String },
    /// The remote tier disagrees with the local log in a way that cannot be reconciled.
    #[error("{topic}/{partition}: {detail}")]
    Diverged { topic: String, partition: u32, detail: String },
    #[error("local file {path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// An encrypted segment's key is not in the keyring (or no keyring is configured). Not
    /// damage: the bytes may be fine; the reader lacks the key.
    #[error(
        "{topic}/{partition}: the segment at offsets {base_offset}..={last_offset} (object {key}) is encrypted with key id '{key_id}', and {why}. Add that key to the keyring ([encryption] key_file or TIERLOG_ENCRYPTION_KEYS): after a rotation, old keys stay in the keyring for reading"
    )]
    KeyMissing {
        topic: String,
        partition: u32,
        base_offset: u64,
        last_offset: u64,
        key: String,
        key_id: String,
        why: String,
    },
}

impl Error {
    pub fn is_fenced(&self) -> bool {
        matches!(self, Error::Fenced { .. })
    }

    /// A copy for one of several callers that share one failed load: the same variant where
    /// it tells callers what to do (an outage stays retryable); sources kept as text.
    pub fn copy(&self) -> Error {
        match self {
            Error::Timeout { store, action, after_ms, setting } => {
                Error::Timeout { store: store.clone(), action: action.clone(), after_ms: *after_ms, setting }
            }
            Error::Store { store, action, hint, source } => Error::Store {
                store: store.clone(),
                action: action.clone(),
                hint,
                source: Box::new(object_store::Error::Generic {
                    store: "shared load",
                    source: source.to_string().into(),
                }),
            },
            Error::Missing { key } => Error::Missing { key: key.clone() },
            Error::KeyMissing { topic, partition, base_offset, last_offset, key, key_id, why } => Error::KeyMissing {
                topic: topic.clone(),
                partition: *partition,
                base_offset: *base_offset,
                last_offset: *last_offset,
                key: key.clone(),
                key_id: key_id.clone(),
                why: why.clone(),
            },
            Error::Io { path, source } => {
                Error::Io { path: path.clone(), source: std::io::Error::new(source.kind(), source.to_string()) }
            }
            other => Error::Format(other.to_string()),
        }
    }
}

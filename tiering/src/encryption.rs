//! Client-side encryption of segment objects: AES-256-GCM per chunk (ring), keys from a
//! keyring.
//!
//! Owns: the keyring (its file format, its validation, which key is current), the AAD that
//! binds a chunk to its place, and sealing/opening one chunk. Does not own: where sealed
//! chunks lie in an object ([`crate::segment_object`]), or which key a segment used (the
//! manifest entry's `key_id`, and the object's chunk index, name it).
//!
//! - A chunk is compressed first, then sealed: `nonce (12) ‖ ciphertext ‖ tag (16)`. The
//!   nonce is 96 random bits per chunk from the operating system's CSPRNG. Random, not derived:
//!   a segment is uploaded again under the same key after a failed attempt, possibly at another
//!   zstd level, and a derived nonce would then repeat with different plaintext. Under one key
//!   the chance of any repeat stays below 2^-32 for 2^32 chunks (NIST SP 800-38D §8.3), that is
//!   16 PiB of 4 MiB chunks: rotate long before.
//! - The AAD is `tierlog-chunk-v1 \0 ‖ topic length u16 ‖ topic ‖ partition u32 ‖ segment base
//!   offset u64 ‖ chunk number u32` (little-endian), so a chunk moved to another place, another
//!   segment or another partition fails authentication.
//! - Key material never reaches a log or an error: [`DataKey`] and [`Keyring`] print ids only,
//!   and a string that failed validation as a key id (or a `current` that names no key) is
//!   never echoed, since it may be a key pasted into the wrong field: errors give its position
//!   and length instead.
//! - The AAD names a place, not an object: it does not bind the object's key, upload or the
//!   bucket prefix, so a chunk sealed under the same key for the same topic, partition, base
//!   offset and chunk number (a re-created topic, another cluster sharing the keyring)
//!   authenticates in its stead. The manifest's `object_sha256` and `raw_sha256` are what tie
//!   an object to its commit (docs/FORMAT.md, "Encryption").

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;

use crate::error::{Error, Result};

/// Bytes of an AES-256 key.
pub const KEY_BYTES: usize = 32;
/// Bytes of a GCM nonce (96 bits, the size GCM is defined for without hashing the nonce).
pub const NONCE_BYTES: usize = NONCE_LEN;
/// Bytes of a GCM tag.
pub const TAG_BYTES: usize = 16;
/// What sealing adds to a chunk: nonce before, tag after.
pub const SEAL_OVERHEAD_BYTES: usize = NONCE_BYTES + TAG_BYTES;
/// Longest key id: it is stored in every encrypted object's chunk index and manifest entry.
pub const KEY_ID_BYTES_MAX: usize = 64;
/// Most keys a keyring holds: one per rotation, so decades of quarterly rotations fit.
pub const KEYS_MAX: usize = 1024;
/// Largest keyring file read (a key is about 100 bytes of TOML, so [`KEYS_MAX`] keys fit many
/// times over). Enforced on the bytes read, not on the file's reported size, which a FIFO or a
/// file still growing does not tell truthfully.
const KEYRING_FILE_BYTES_MAX: u64 = 1024 * 1024;
/// First bytes of every chunk's AAD: names the scheme, so a future layout cannot be confused.
const AAD_DOMAIN: &[u8] = b"tierlog-chunk-v1\0";
/// Environment variable holding keys instead of a file (`id:base64[,id:base64…]`, the first is
/// current). Read directly, never as a configuration key, so `config explain` cannot show it.
pub const KEYS_ENV: &str = "TIERLOG_ENCRYPTION_KEYS";

/// One AES-256-GCM key and its id. Debug prints the id only.
pub struct DataKey {
    id: String,
    key: LessSafeKey,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKey({}, <redacted>)", self.id)
    }
}

impl DataKey {
    /// A key from its 32 raw bytes. `id` must be a valid key id (see [`check_key_id`]).
    pub fn new(id: &str, bytes: &[u8]) -> Result<DataKey> {
        check_key_id(id)?;
        if bytes.len() != KEY_BYTES {
            return Err(Error::Config(format!(
                "encryption key '{id}': {} bytes, AES-256 needs exactly {KEY_BYTES} (create one with `openssl rand -base64 32`)",
                bytes.len()
            )));
        }
        let unbound = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| Error::Config(format!("encryption key '{id}': rejected by AES-256-GCM")))?;
        Ok(DataKey { id: id.to_string(), key: LessSafeKey::new(unbound) })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `plain` under `nonce` and `aad`: `nonce ‖ ciphertext ‖ tag`.
    pub fn seal(&self, nonce: [u8; NONCE_BYTES], aad: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(plain.len() + SEAL_OVERHEAD_BYTES);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut out[NONCE_BYTES..])
            .map_err(|_| Error::Format(format!("AES-256-GCM seal under key '{}' failed", self.id)))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Opens what [`DataKey::seal`] made. Any changed byte (nonce, ciphertext, tag) or another
    /// AAD fails: the error says so and names the key id, never the key.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
        if sealed.len() < SEAL_OVERHEAD_BYTES {
            return Err(Error::Format(format!("sealed chunk of {} bytes is shorter than nonce and tag", sealed.len())));
        }
        let nonce: [u8; NONCE_BYTES] = sealed[..NONCE_BYTES].try_into().expect("nonce bytes");
        let mut in_out = sealed[NONCE_BYTES..].to_vec();
        let plain_len = self
            .key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut in_out)
            .map_err(|_| {
                Error::Format(format!(
                    "AES-256-GCM authentication failed under key '{}': the chunk was altered, moved from another place, or sealed with another key of the same id",
                    self.id
                ))
            })?
            .len();
        in_out.truncate(plain_len);
        Ok(in_out)
    }
}

/// A fresh random nonce from the operating system's CSPRNG.
pub fn random_nonce() -> Result<[u8; NONCE_BYTES]> {
    let mut nonce = [0u8; NONCE_BYTES];
    SystemRandom::new().fill(&mut nonce).map_err(|_| Error::Format("the system random source failed".into()))?;
    Ok(nonce)
}

/// The AAD of chunk `chunk` of the segment at `base_offset` of `topic`/`partition`. A topic
/// longer than the AAD's u16 length field is an error, not a panic: `tierlog decrypt` passes
/// an operator's `--topic` here.
pub fn chunk_aad(topic: &str, partition: u32, base_offset: u64, chunk: u32) -> Result<Vec<u8>> {
    let topic_len = u16::try_from(topic.len()).map_err(|_| {
        Error::Format(format!(
            "a topic name of {} bytes cannot be part of a chunk's authenticated data (at most {}); topic names are at most 249 bytes",
            topic.len(),
            u16::MAX
        ))
    })?;
    let mut aad = Vec::with_capacity(AAD_DOMAIN.len() + 2 + topic.len() + 16);
    aad.extend_from_slice(AAD_DOMAIN);
    aad.extend_from_slice(&topic_len.to_le_bytes());
    aad.extend_from_slice(topic.as_bytes());
    aad.extend_from_slice(&partition.to_le_bytes());
    aad.extend_from_slice(&base_offset.to_le_bytes());
    aad.extend_from_slice(&chunk.to_le_bytes());
    Ok(aad)
}

/// Key ids are names an operator chooses (`2026-q2`): 1 to 64 of `A-Z a-z 0-9 . _ -`, so they
/// are safe in object indexes, manifests, logs and file names.
/// The error never repeats `id`: a string that is not a key id may be a key in the wrong field.
pub fn check_key_id(id: &str) -> Result<()> {
    key_id_problem(id).map_or(Ok(()), |why| Err(Error::Config(format!("encryption key id {why}"))))
}

/// Why `id` is not a key id (its length, never its text), or None if it is one.
fn key_id_problem(id: &str) -> Option<String> {
    let ok = !id.is_empty()
        && id.len() <= KEY_ID_BYTES_MAX
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    (!ok).then(|| {
        format!(
            "of {} bytes is not a key id (not shown: it may be a key in the wrong field): expected 1 to {KEY_ID_BYTES_MAX} of A-Z a-z 0-9 . _ -",
            id.len()
        )
    })
}

/// The keys a process can read with, and the one it writes with. Debug prints ids only.
#[derive(Clone)]
pub struct Keyring {
    keys: BTreeMap<String, Arc<DataKey>>,
    current: String,
    /// Where the keys came from (a file path or the environment variable), for errors.
    source: String,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("source", &self.source)
            .field("current", &self.current)
            .field("ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The keyring file: `current = "<id>"` and `[[keys]]` tables of `id` and `key` (standard
/// base64 of 32 bytes).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile {
    current: String,
    keys: Vec<KeyringEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringEntry {
    id: String,
    key: String,
}

impl Keyring {
    /// A keyring of `keys`; `current` must be one of them. Ids must be unique.
    pub fn new(keys: Vec<DataKey>, current: &str, source: &str) -> Result<Keyring> {
        let bad = |why: String| Error::Config(format!("{source}: {why}"));
        if keys.is_empty() {
            return Err(bad("no keys".into()));
        }
        if keys.len() > KEYS_MAX {
            return Err(bad(format!("{} keys; at most {KEYS_MAX}", keys.len())));
        }
        let mut map = BTreeMap::new();
        for key in keys {
            let id = key.id.clone();
            if map.insert(id.clone(), Arc::new(key)).is_some() {
                return Err(bad(format!("key id '{id}' appears twice; every key needs an id of its own")));
            }
        }
        if !map.contains_key(current) {
            // Not echoed: a `current` that names no key may be a key pasted in the wrong field.
            return Err(bad(format!(
                "the current key (a string of {} bytes, not shown) is not among the key ids ({})",
                current.len(),
                map.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(Keyring { keys: map, current: current.to_string(), source: source.to_string() })
    }

    /// Loads a keyring file (TOML, see the module doc and README).
    pub fn from_file(path: &Path) -> Result<Keyring> {
        let source = path.display().to_string();
        let io = |e: std::io::Error| Error::Io { path: source.clone(), source: e };
        let file = std::fs::File::open(path).map_err(io)?;
        warn_if_readable_by_others(path);
        // The limit holds on what is read: one byte more than allowed tells "too large".
        let mut bytes = Vec::new();
        file.take(KEYRING_FILE_BYTES_MAX + 1).read_to_end(&mut bytes).map_err(io)?;
        if bytes.len() as u64 > KEYRING_FILE_BYTES_MAX {
            return Err(Error::Config(format!(
                "{source}: more than {KEYRING_FILE_BYTES_MAX} bytes; a keyring is at most {KEYRING_FILE_BYTES_MAX}"
            )));
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            Error::Config(format!("{source}: not UTF-8 text (at byte {})", e.utf8_error().valid_up_to()))
        })?;
        Keyring::from_toml(&text, &source)
    }

    /// Parses keyring text (the file's contents); `source` names it in errors.
    pub fn from_toml(text: &str, source: &str) -> Result<Keyring> {
        // toml's own error would quote the offending line, which may hold a key: say where only.
        let file: KeyringFile = toml::from_str(text).map_err(|e| {
            let at = e.span().map_or(String::new(), |s| format!(" at byte {}", s.start));
            Error::Config(format!(
                "{source}: not a keyring{at}: expected `current = \"<id>\"` and [[keys]] tables of `id` and `key` only"
            ))
        })?;
        let keys = (file.keys.iter().enumerate())
            .map(|(i, k)| decode_key(&k.id, &k.key, &format!("{source}: [[keys]] table {}", i + 1)))
            .collect::<Result<Vec<_>>>()?;
        Keyring::new(keys, &file.current, source)
    }

    /// Parses [`KEYS_ENV`]'s value: `id:base64[,id:base64…]`, the first key current.
    pub fn from_env_value(value: &str) -> Result<Keyring> {
        let mut keys = Vec::new();
        for (i, item) in value.split(',').map(str::trim).enumerate() {
            let Some((id, key)) = item.split_once(':') else {
                return Err(Error::Config(format!("{KEYS_ENV}: item {} is not `id:base64-key`", i + 1)));
            };
            keys.push(decode_key(id.trim(), key.trim(), &format!("{KEYS_ENV}: item {} (`id:base64-key`)", i + 1))?);
        }
        let current = keys.first().map(|k| k.id.clone()).unwrap_or_default();
        Keyring::new(keys, &current, KEYS_ENV)
    }

    /// The keyring a configuration names: `key_file` (empty: none) or the value of
    /// [`KEYS_ENV`] (absent or empty: none). Both at once is refused: which one rotates?
    pub fn from_config(key_file: &str, env_value: Option<&str>) -> Result<Option<Keyring>> {
        match (key_file.is_empty(), env_value.filter(|v| !v.trim().is_empty())) {
            (true, None) => Ok(None),
            (false, None) => Keyring::from_file(Path::new(key_file)).map(Some),
            (true, Some(value)) => Keyring::from_env_value(value).map(Some),
            (false, Some(_)) => Err(Error::Config(format!(
                "both encryption.key_file ({key_file}) and {KEYS_ENV} are set: keep one, so there is one keyring to rotate"
            ))),
        }
    }

    /// The key new segments are sealed with.
    pub fn current(&self) -> Arc<DataKey> {
        self.keys[&self.current].clone()
    }

    pub fn get(&self, id: &str) -> Option<Arc<DataKey>> {
        self.keys.get(id).cloned()
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    pub fn source(&self) -> &str {
        &self.source
    }
}

/// Refuses to tier `topic`/`partition` with `keyring` when its manifest says that would lose
/// data or confidentiality: (a) the manifest's entries are encrypted and no keyring is
/// configured, so new segments would go up in clear next to them; (b) an entry is sealed under
/// a key id the keyring lacks, so those segments could no longer be read once their local
/// copies go. Checks the manifest's own `entries` only: archived entries are older, and their
/// keys are checked when read. Key ids only reach the error, never key material.
pub fn check_manifest_keys(
    topic: &str,
    partition: u32,
    manifest: &crate::manifest::Manifest,
    keyring: Option<&Keyring>,
) -> Result<()> {
    let needed: std::collections::BTreeSet<&str> =
        manifest.entries.iter().filter_map(|e| e.key_id.as_deref()).collect();
    if needed.is_empty() {
        return Ok(());
    }
    let quoted = |ids: &[&str]| ids.iter().map(|id| format!("'{id}'")).collect::<Vec<_>>().join(", ");
    let Some(keyring) = keyring else {
        let ids = needed.iter().copied().collect::<Vec<_>>();
        return Err(Error::Config(format!(
            "{topic}/{partition}: the partition's segments are encrypted (key id {}) but no keyring is configured: new segments would go up in clear next to them; set [encryption] key_file or {KEYS_ENV}",
            quoted(&ids)
        )));
    };
    let lacking: Vec<&str> = needed.iter().copied().filter(|id| keyring.get(id).is_none()).collect();
    if lacking.is_empty() {
        return Ok(());
    }
    let first = manifest
        .entries
        .iter()
        .find(|e| e.key_id.as_deref() == Some(lacking[0]))
        .expect("a lacking id comes from an entry");
    Err(Error::Config(format!(
        "{topic}/{partition}: committed segments (the first at offset {}) are sealed under key {}, which the keyring ({}) lacks: add it back (after a rotation, old keys stay in the keyring for reading) or they cannot be read once their local copies are deleted",
        first.base_offset,
        quoted(&lacking),
        keyring.source()
    )))
}

/// One key of a keyring; `at` says where it was written (file and table, or item), for errors.
fn decode_key(id: &str, base64_key: &str, at: &str) -> Result<DataKey> {
    if let Some(why) = key_id_problem(id) {
        return Err(Error::Config(format!("{at}: the id {why}")));
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(base64_key.trim()).map_err(|_| {
        Error::Config(format!("{at}: key '{id}' is not standard base64 (create one with `openssl rand -base64 32`)"))
    })?;
    // The message without this crate's "remote tier configuration:" prefix, which the
    // returned error adds once.
    DataKey::new(id, &bytes).map_err(|e| match e {
        Error::Config(why) => Error::Config(format!("{at}: {why}")),
        other => other,
    })
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777), "the encryption keyring is readable by other users; chmod 600 it");
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="; // bytes 0..32
    const KEY_B: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="; // bytes 32..64

    fn ring_text(current: &str) -> String {
        format!(
            "current = \"{current}\"\n[[keys]]\nid = \"a\"\nkey = \"{KEY_A}\"\n[[keys]]\nid = \"b\"\nkey = \"{KEY_B}\"\n"
        )
    }

    #[test]
    fn a_keyring_file_names_its_current_key_and_keeps_old_ones() {
        let ring = Keyring::from_toml(&ring_text("b"), "ring.toml").unwrap();
        assert_eq!(ring.current().id(), "b");
        assert!(ring.get("a").is_some() && ring.get("c").is_none());
        assert_eq!(ring.ids().collect::<Vec<_>>(), vec!["a", "b"]);
    }

    #[test]
    fn bad_keyrings_are_refused_naming_the_file_and_key_id_never_the_key() {
        let cases = [
            (ring_text("c"), "the current key (a string of 1 bytes, not shown) is not among the key ids (a, b)"),
            (ring_text("a").replace("id = \"b\"", "id = \"a\""), "key id 'a' appears twice"),
            (ring_text("a").replace(KEY_B, "AAEC"), "key 'b': 3 bytes, AES-256 needs exactly 32"),
            (ring_text("a").replace(KEY_B, "not base64!"), "key 'b' is not standard base64"),
            (
                ring_text("a").replace("id = \"b\"", "id = \"b/../x\""),
                "[[keys]] table 2: the id of 6 bytes is not a key id",
            ),
            (format!("{}extra = 1\n", ring_text("a")), "not a keyring"),
            ("current = \"a\"\nkeys = []\n".to_string(), "no keys"),
        ];
        for (text, expected) in cases {
            let err = Keyring::from_toml(&text, "/etc/tierlog/ring.toml").unwrap_err().to_string();
            assert!(err.contains("/etc/tierlog/ring.toml") && err.contains(expected), "{err}");
            assert!(!err.contains(KEY_A) && !err.contains(KEY_B), "key material in an error: {err}");
            assert_eq!(err.matches("remote tier configuration").count(), 1, "{err}");
        }
    }

    #[test]
    fn a_string_that_is_not_a_key_id_is_never_echoed() {
        let env = Keyring::from_env_value(&format!("a:{KEY_A},{KEY_B}:a")).unwrap_err().to_string();
        assert!(env.contains("item 2") && env.contains("of 44 bytes is not a key id"), "{env}");
        let toml = format!("current = \"{KEY_B}\"\n[[keys]]\nid = \"a\"\nkey = \"{KEY_A}\"\n");
        let current = Keyring::from_toml(&toml, "ring.toml").unwrap_err().to_string();
        assert!(current.contains("a string of 44 bytes, not shown"), "{current}");
        for err in [env, current, check_key_id(KEY_B).unwrap_err().to_string()] {
            assert!(!err.contains(&KEY_B[..8]), "{err}");
        }
    }

    #[test]
    fn a_keyring_file_over_the_limit_is_refused_whatever_its_reported_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ring.toml");
        let padding = "#".repeat(KEYRING_FILE_BYTES_MAX as usize);
        std::fs::write(&path, format!("{}{padding}\n", ring_text("a"))).unwrap();
        let err = Keyring::from_file(&path).unwrap_err().to_string();
        assert!(err.contains(&format!("more than {KEYRING_FILE_BYTES_MAX} bytes")), "{err}");
        std::fs::write(&path, ring_text("a")).unwrap();
        assert_eq!(Keyring::from_file(&path).unwrap().current().id(), "a");
    }

    fn manifest_with(key_ids: &[Option<&str>]) -> crate::manifest::Manifest {
        let writer = crate::manifest::Writer { id: "w".into(), epoch: 1 };
        let mut manifest = crate::manifest::Manifest::empty("pay", 3, writer);
        for (i, key_id) in key_ids.iter().enumerate() {
            let mut entry = crate::manifest::tests_support::entry(i as u64 * 10, i as u64 * 10 + 9);
            entry.key_id = key_id.map(str::to_string);
            manifest.entries.push(entry);
        }
        manifest
    }

    #[test]
    fn given_encrypted_entries_when_no_keyring_then_tiering_is_refused() {
        let manifest = manifest_with(&[None, Some("a")]);
        let err = check_manifest_keys("pay", 3, &manifest, None).unwrap_err().to_string();
        assert!(
            err.contains("pay/3") && err.contains("key id 'a'") && err.contains("no keyring is configured"),
            "{err}"
        );
        assert!(err.contains("go up in clear") && err.contains(KEYS_ENV), "{err}");
    }

    #[test]
    fn given_entries_under_a_key_the_keyring_lacks_then_tiering_is_refused() {
        let ring = Keyring::from_toml(&ring_text("a"), "ring.toml").unwrap();
        let manifest = manifest_with(&[Some("old"), Some("a"), Some("older"), Some("old")]);
        let err = check_manifest_keys("pay", 3, &manifest, Some(&ring)).unwrap_err().to_string();
        assert!(
            err.contains("pay/3") && err.contains("'old', 'older'") && err.contains("the first at offset 0"),
            "{err}"
        );
        assert!(err.contains("which the keyring (ring.toml) lacks: add it back"), "{err}");
    }

    #[test]
    fn given_keys_the_keyring_holds_or_entries_in_clear_then_tiering_goes_on() {
        let ring = Keyring::from_toml(&ring_text("b"), "ring.toml").unwrap();
        check_manifest_keys("pay", 3, &manifest_with(&[None, Some("a"), Some("b")]), Some(&ring)).unwrap();
        check_manifest_keys("pay", 3, &manifest_with(&[None, None]), None).unwrap();
        check_manifest_keys("pay", 3, &manifest_with(&[]), None).unwrap();
        check_manifest_keys("pay", 3, &manifest_with(&[None]), Some(&ring)).unwrap();
    }

    #[test]
    fn debug_output_redacts_key_material() {
        let ring = Keyring::from_toml(&ring_text("a"), "ring.toml").unwrap();
        let shown = format!("{ring:?} {:?}", ring.current());
        assert!(shown.contains("\"a\"") && shown.contains("<redacted>"), "{shown}");
        let raw: Vec<u8> = (0u8..32).collect();
        assert!(!shown.contains(KEY_A) && !shown.contains(&format!("{raw:?}")), "{shown}");
    }

    #[test]
    fn keys_from_the_environment_take_the_first_as_current() {
        let ring = Keyring::from_env_value(&format!("b:{KEY_B}, a:{KEY_A}")).unwrap();
        assert_eq!(ring.current().id(), "b");
        assert!(ring.get("a").is_some());
        let err = Keyring::from_env_value("b").unwrap_err().to_string();
        assert!(err.contains(KEYS_ENV), "{err}");
        let both = Keyring::from_config("/x/ring.toml", Some("a:b")).unwrap_err().to_string();
        assert!(both.contains("both encryption.key_file"), "{both}");
        assert!(Keyring::from_config("", Some("  ")).unwrap().is_none());
    }

    #[test]
    fn the_aad_binds_topic_partition_base_offset_and_chunk() {
        let aad = chunk_aad("pay", 3, 0x0102, 7).unwrap();
        let hex: String = aad.iter().map(|b| format!("{b:02x}")).collect();
        // "tierlog-chunk-v1\0", 3u16, "pay", 3u32, 0x0102u64, 7u32.
        assert_eq!(hex, "746965726c6f672d6368756e6b2d763100030070617903000000020100000000000007000000");
        let err = chunk_aad(&"x".repeat(70_000), 3, 0, 0).unwrap_err().to_string();
        assert!(err.contains("70000 bytes"), "{err}");
    }
}

//! Manifest signatures: Ed25519 (ring), so that write access to the bucket alone cannot
//! rewrite history consistently: `verify --public-key` proves every version was written by a
//! holder of the signing key.
//!
//! - The signing key is a PKCS#8 PEM file, as `openssl genpkey -algorithm ed25519` writes.
//! - A key is named by its id: the first 16 hex digits of the SHA-256 of its 32-byte public
//!   key. The public key is published create-only at `<prefix>/keys/<key_id>.pem` (SPKI PEM, as
//!   `openssl pkey -pubout` writes), for convenience: an auditor takes the public key from the
//!   key holder, not from the bucket it is meant to check.
//! - The signed message is, in UTF-8 with `\n` between the fields:
//!   `tierlog-manifest-signature-v1`, topic, partition, manifest version, body SHA-256 (hex).
//!   The body names topic, partition and version too; the message repeats them so that a
//!   signature cannot be moved to another version or partition. It does not name the bucket
//!   prefix: a signed history copied from another prefix is caught by its entries' object keys,
//!   which name their prefix, topic, partition and offset and are covered by the signature
//!   (`verify` reports any other key as `foreign_key`).
//! - Rotation: a new key signs new versions and names itself; old versions keep their
//!   signatures and verify with the old public key (pass both to `verify`).

use std::collections::BTreeMap;

use base64::Engine;
use object_store::{PutMode, PutOptions, PutPayload};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::RemoteStore;

pub const ALGORITHM: &str = "ed25519";
const MESSAGE_PREFIX: &str = "tierlog-manifest-signature-v1";
/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the 32-byte key follows.
const SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
/// Longest PEM file read (a key is a few hundred bytes).
const PEM_BYTES_MAX: u64 = 64 * 1024;

/// A signature in a manifest version's header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    pub algorithm: String,
    pub key_id: String,
    /// Base64 (standard, padded) of the 64-byte Ed25519 signature.
    pub value: String,
}

/// The text a signature covers.
pub fn message(topic: &str, partition: u32, version: u64, body_sha256: &str) -> String {
    format!("{MESSAGE_PREFIX}\n{topic}\n{partition}\n{version}\n{body_sha256}")
}

/// The id of a raw 32-byte public key.
pub fn key_id(public_key: &[u8]) -> String {
    crate::sha256_hex(public_key)[..16].to_string()
}

/// A signing key loaded from a PEM file.
pub struct Signer {
    pair: Ed25519KeyPair,
    pub key_id: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", self.key_id)
    }
}

impl Signer {
    /// Loads a PKCS#8 PEM Ed25519 private key (`openssl genpkey -algorithm ed25519`).
    pub fn from_file(path: &std::path::Path) -> Result<Signer> {
        let der = read_pem(path, "PRIVATE KEY")?;
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|e| {
            Error::Config(format!(
                "{}: not an Ed25519 private key ({e}); create one with `openssl genpkey -algorithm ed25519 -out {}`",
                path.display(),
                path.display()
            ))
        })?;
        Ok(Signer::from_pair(pair))
    }

    /// A fresh key and its PKCS#8 PEM (tests, `tierlog tier keygen`).
    pub fn generate() -> Result<(Signer, String)> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 =
            Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| Error::Config("generating a key failed".into()))?;
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|e| Error::Config(e.to_string()))?;
        Ok((Signer::from_pair(pair), pem("PRIVATE KEY", pkcs8.as_ref())))
    }

    fn from_pair(pair: Ed25519KeyPair) -> Signer {
        let key_id = key_id(pair.public_key().as_ref());
        Signer { pair, key_id }
    }

    pub fn sign(&self, topic: &str, partition: u32, version: u64, body_sha256: &str) -> Signature {
        let signature = self.pair.sign(message(topic, partition, version, body_sha256).as_bytes());
        Signature {
            algorithm: ALGORITHM.into(),
            key_id: self.key_id.clone(),
            value: base64::engine::general_purpose::STANDARD.encode(signature.as_ref()),
        }
    }

    /// The public key as SPKI PEM.
    pub fn public_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(self.pair.public_key().as_ref());
        pem("PUBLIC KEY", &der)
    }

    /// Publishes the public key at `<prefix>/keys/<key_id>.pem`, create-only. An existing
    /// object with other contents there is refused (someone planted a key under our id).
    pub async fn publish(&self, store: &RemoteStore) -> Result<()> {
        let key = store.key(&["keys", &format!("{}.pem", self.key_id)]);
        let pem = self.public_pem();
        let options = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
        match store.store.put_opts(&key, PutPayload::from(pem.clone().into_bytes()), options).await {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                let existing = crate::manifest::get_bytes(store, &key).await?;
                let mut found = PublicKeys::default();
                let same = std::str::from_utf8(&existing)
                    .ok()
                    .and_then(|text| found.add_pem(text, key.as_ref()).ok())
                    .is_some_and(|id| id == self.key_id);
                if same {
                    Ok(())
                } else {
                    Err(Error::Corrupt {
                        key: key.to_string(),
                        reason: "holds another public key under this key's id".into(),
                    })
                }
            }
            Err(e) => Err(store.error(format!("PUT {key} (public key)"), e)),
        }
    }
}

/// Why a signature did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyError {
    UnknownKey,
    Invalid,
}

/// Public keys by id.
#[derive(Debug, Clone, Default)]
pub struct PublicKeys(BTreeMap<String, Vec<u8>>);

impl PublicKeys {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn ids(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }

    /// Adds a public key from SPKI PEM text; returns its id.
    pub fn add_pem(&mut self, text: &str, origin: &str) -> Result<String> {
        let der = pem_body(text, "PUBLIC KEY").map_err(|why| Error::Config(format!("{origin}: {why}")))?;
        let raw = der.strip_prefix(&SPKI_PREFIX[..]).filter(|raw| raw.len() == 32).ok_or_else(|| {
            Error::Config(format!("{origin}: not an Ed25519 public key (SPKI PEM, as `openssl pkey -pubout` writes)"))
        })?;
        let id = key_id(raw);
        self.0.insert(id.clone(), raw.to_vec());
        Ok(id)
    }

    pub fn add_file(&mut self, path: &std::path::Path) -> Result<String> {
        let text = read_text(path)?;
        self.add_pem(&text, &path.display().to_string())
    }

    pub fn verify(
        &self,
        signature: &Signature,
        topic: &str,
        partition: u32,
        version: u64,
        body_sha256: &str,
    ) -> std::result::Result<(), VerifyError> {
        let key = self.0.get(&signature.key_id).ok_or(VerifyError::UnknownKey)?;
        let value =
            base64::engine::general_purpose::STANDARD.decode(&signature.value).map_err(|_| VerifyError::Invalid)?;
        if signature.algorithm != ALGORITHM {
            return Err(VerifyError::Invalid);
        }
        UnparsedPublicKey::new(&ED25519, key)
            .verify(message(topic, partition, version, body_sha256).as_bytes(), &value)
            .map_err(|_| VerifyError::Invalid)
    }
}

/// The public keys published under `<prefix>/keys/` (unreadable or foreign objects skipped).
pub async fn published_keys(store: &RemoteStore) -> Result<PublicKeys> {
    use futures::TryStreamExt;
    let dir = store.key(&["keys"]);
    let objects: Vec<_> =
        store.store.list(Some(&dir)).try_collect().await.map_err(|e| store.error(format!("LIST {dir}/"), e))?;
    let mut keys = PublicKeys::default();
    for object in objects {
        if object.size > PEM_BYTES_MAX {
            continue;
        }
        let bytes = crate::manifest::get_bytes(store, &object.location).await?;
        let name = object.location.filename().unwrap_or_default().to_string();
        let mut one = PublicKeys::default();
        match std::str::from_utf8(&bytes).ok().map(|t| one.add_pem(t, object.location.as_ref())) {
            Some(Ok(id)) if name == format!("{id}.pem") => keys.0.extend(one.0),
            _ => tracing::warn!(key = %object.location, "not a tierlog public key under its id; ignored"),
        }
    }
    Ok(keys)
}

fn read_text(path: &std::path::Path) -> Result<String> {
    use std::io::Read;
    let io = |source| Error::Io { path: path.display().to_string(), source };
    let mut text = String::new();
    std::fs::File::open(path).map_err(io)?.take(PEM_BYTES_MAX).read_to_string(&mut text).map_err(io)?;
    Ok(text)
}

fn read_pem(path: &std::path::Path, label: &str) -> Result<Vec<u8>> {
    let text = read_text(path)?;
    pem_body(&text, label).map_err(|why| Error::Config(format!("{}: {why}", path.display())))
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> =
        body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).expect("base64 is ASCII")).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

fn pem_body(text: &str, label: &str) -> std::result::Result<Vec<u8>, String> {
    let (begin, end) = (format!("-----BEGIN {label}-----"), format!("-----END {label}-----"));
    let start = text.find(&begin).ok_or_else(|| format!("no `{begin}` line (a PEM file is expected)"))?;
    let rest = &text[start + begin.len()..];
    let stop = rest.find(&end).ok_or_else(|| format!("no `{end}` line"))?;
    let body: String = rest[..stop].chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(body).map_err(|e| format!("bad base64 in the PEM body: {e}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_with_its_public_key_and_nothing_else() {
        let (signer, _) = Signer::generate().unwrap();
        let mut keys = PublicKeys::default();
        assert_eq!(keys.add_pem(&signer.public_pem(), "test").unwrap(), signer.key_id);
        let signature = signer.sign("t", 0, 7, "ab");
        assert_eq!(keys.verify(&signature, "t", 0, 7, "ab"), Ok(()));
        assert_eq!(keys.verify(&signature, "t", 0, 8, "ab"), Err(VerifyError::Invalid), "another version");
        assert_eq!(keys.verify(&signature, "t", 1, 7, "ab"), Err(VerifyError::Invalid), "another partition");
        assert_eq!(keys.verify(&signature, "t", 0, 7, "ac"), Err(VerifyError::Invalid), "another body");
        let (other, _) = Signer::generate().unwrap();
        assert_eq!(keys.verify(&other.sign("t", 0, 7, "ab"), "t", 0, 7, "ab"), Err(VerifyError::UnknownKey));
    }

    #[test]
    fn a_generated_pem_loads_back() {
        let (signer, pem) = Signer::generate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        std::fs::write(&path, pem).unwrap();
        assert_eq!(Signer::from_file(&path).unwrap().key_id, signer.key_id);
        std::fs::write(&path, signer.public_pem()).unwrap();
        let err = Signer::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("PRIVATE KEY") && err.contains("key.pem"), "{err}");
    }

    /// An OpenSSL-generated key (`openssl genpkey -algorithm ed25519`, PKCS#8 v1 without the
    /// public key) and its `openssl pkey -pubout`: the id and signature agree with OpenSSL's
    /// (the signature below was made by `openssl pkeyutl -sign -rawin` over the message).
    #[test]
    fn openssl_keys_golden() {
        let signer = golden_signer();
        assert_eq!(signer.key_id, "689463b339b9c919", "sha256 of the raw key, by Python's hashlib");
        assert_eq!(signer.public_pem(), GOLDEN_PUBLIC);
        let mut keys = PublicKeys::default();
        keys.add_pem(GOLDEN_PUBLIC, "golden").unwrap();
        let signature =
            Signature { algorithm: "ed25519".into(), key_id: signer.key_id.clone(), value: GOLDEN_SIGNATURE.into() };
        assert_eq!(keys.verify(&signature, "payments", 3, 12, &"0".repeat(64)), Ok(()));
        assert_eq!(signer.sign("payments", 3, 12, &"0".repeat(64)).value, GOLDEN_SIGNATURE, "Ed25519 is deterministic");
    }

    /// The OpenSSL-generated golden key (a test key: it signs nothing real).
    pub(crate) fn golden_signer() -> Signer {
        let private = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINUbsuOt9UGWo40/bzTZt2xNchXL4muxVUOGgwdjooSW\n-----END PRIVATE KEY-----\n";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        std::fs::write(&path, private).unwrap();
        Signer::from_file(&path).unwrap()
    }

    /// The same public key already under its id in another PEM layout (CRLF line ends, as an
    /// editor or a copy from Windows leaves it) is our key: the writer starts.
    #[tokio::test]
    async fn publishing_accepts_our_own_key_in_another_pem_layout() {
        use object_store::ObjectStoreExt;
        let store = RemoteStore {
            store: std::sync::Arc::new(object_store::memory::InMemory::new()),
            prefix: object_store::path::Path::from("cluster"),
            display: "memory".into(),
            ids: crate::keys::UniqueIds::seeded(7),
            lock: None,
            records_lock: None,
        };
        let signer = golden_signer();
        let key = store.key(&["keys", &format!("{}.pem", signer.key_id)]);
        let crlf = signer.public_pem().replace('\n', "\r\n");
        store.store.put(&key, PutPayload::from(crlf.into_bytes())).await.unwrap();
        signer.publish(&store).await.expect("the key published under our id is our key");
        let (other, _) = Signer::generate().unwrap();
        store.store.put(&key, PutPayload::from(other.public_pem().into_bytes())).await.unwrap();
        assert!(signer.publish(&store).await.is_err(), "another key under our id is refused");
    }

    const GOLDEN_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAey/5UZdoQ9wQDzpc0s4g51SjQuFxBTtb9pnoibssXXk=\n-----END PUBLIC KEY-----\n";
    const GOLDEN_SIGNATURE: &str =
        "sJcIUlj4R825dBtFPn2Ba7+33ML/qxI19IazhWVbK4cRpDMhkRM9zKgx4cbKvxD20z+K+j7TD7VpkYFon3wqBQ==";
}

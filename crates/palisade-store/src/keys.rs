//! Envelope encryption of tenant state: a key-encryption key (KEK) from a [`KeyProvider`]
//! wraps per-tenant data keys (one per tenant and scope: each key-value namespace, and the
//! tenant's secrets), which seal values with XChaCha20-Poly1305. The associated data of every
//! sealed value binds its tenant, scope, name and key version, so a ciphertext copied to
//! another row, tenant or namespace fails to open. Destroying a data key makes everything it
//! sealed unreadable (crypto-shredding).
//!
//! The local provider reads a 256-bit KEK from a file or an environment variable; an external
//! KMS fits behind the same trait (wrap and unwrap 32-byte keys).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Mutex;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

const NONCE_BYTES: usize = 24;

/// A cryptographic operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The ciphertext does not open with this key and associated data: it was tampered with,
    /// moved to another row, or sealed under another key.
    #[error(
        "the sealed value does not authenticate (tampered, moved, or sealed under another key)"
    )]
    Authentication,
    /// The key material is not usable.
    #[error("bad key material: {0}")]
    BadKey(String),
    /// The system random number generator failed.
    #[error("the system random number generator failed: {0}")]
    Random(String),
}

fn random<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| CryptoError::Random(e.to_string()))?;
    Ok(bytes)
}

/// Seals `plaintext` under `key`, bound to `aad`: `nonce || ciphertext+tag`.
pub fn seal(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let cipher = XChaCha20Poly1305::new(&(*key).into());
    let nonce: [u8; NONCE_BYTES] = random()?;
    let sealed = cipher
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| CryptoError::BadKey("encryption failed".into()))?;
    let mut out = Vec::with_capacity(NONCE_BYTES + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens what [`seal`] made, with the same key and associated data.
pub fn open(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < NONCE_BYTES + 16 {
        return Err(CryptoError::Authentication);
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
    let mut nonce_bytes = [0u8; NONCE_BYTES];
    nonce_bytes.copy_from_slice(nonce);
    XChaCha20Poly1305::new(&(*key).into())
        .decrypt(
            &XNonce::from(nonce_bytes),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| CryptoError::Authentication)
}

/// Associated data: a domain label and length-prefixed parts, so no two different lists of
/// parts give the same bytes.
pub fn aad(label: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in std::iter::once(label.as_bytes()).chain(parts.iter().copied()) {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// Wraps and unwraps data keys with a key-encryption key the store never sees.
pub trait KeyProvider: Send + Sync + fmt::Debug {
    /// A stable, non-secret id of the key-encryption key, stored with every key it wraps.
    fn id(&self) -> String;
    fn wrap(&self, key: &[u8; 32], aad: &[u8]) -> Result<Vec<u8>, CryptoError>;
    fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<[u8; 32], CryptoError>;
}

/// A 256-bit key-encryption key held in this process.
pub struct LocalKek {
    key: [u8; 32],
    id: String,
}

impl fmt::Debug for LocalKek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKek")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl LocalKek {
    pub fn from_bytes(key: [u8; 32]) -> Self {
        let digest = Sha256::digest([b"palisade-kek-id:".as_slice(), &key].concat());
        Self {
            key,
            id: format!("local:{}", hex::encode(&digest[..8])),
        }
    }

    /// Reads a KEK written as 64 hex characters (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<Self, CryptoError> {
        let text = text.trim();
        let mut key = [0u8; 32];
        hex::decode_to_slice(text, &mut key).map_err(|_| {
            CryptoError::BadKey("a key-encryption key is 64 hex characters (256 bits)".into())
        })?;
        Ok(Self::from_bytes(key))
    }

    /// Reads a KEK file.
    pub fn load(path: &Path) -> Result<Self, CryptoError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CryptoError::BadKey(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text)
    }

    /// A fresh random KEK written to `path` (mode 0600, created only if absent).
    pub fn generate(path: &Path) -> Result<Self, CryptoError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let key: [u8; 32] = random()?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| CryptoError::BadKey(format!("cannot create {}: {e}", path.display())))?;
        file.write_all(format!("{}\n", hex::encode(key)).as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| CryptoError::BadKey(format!("cannot write {}: {e}", path.display())))?;
        Ok(Self::from_bytes(key))
    }
}

impl KeyProvider for LocalKek {
    fn id(&self) -> String {
        self.id.clone()
    }

    fn wrap(&self, key: &[u8; 32], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        seal(&self.key, aad, key)
    }

    fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<[u8; 32], CryptoError> {
        let key = open(&self.key, aad, wrapped)?;
        key.try_into()
            .map_err(|_| CryptoError::BadKey("a wrapped data key is not 32 bytes".into()))
    }
}

/// Unwrapped data keys kept in memory, by tenant, scope and version. Emptied for a tenant
/// when its keys are destroyed.
#[derive(Debug, Default)]
pub struct KeyCache {
    keys: Mutex<HashMap<(String, String, i64), [u8; 32]>>,
}

impl KeyCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String, i64), [u8; 32]>> {
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn get(&self, tenant: &str, scope: &str, version: i64) -> Option<[u8; 32]> {
        self.lock()
            .get(&(tenant.to_owned(), scope.to_owned(), version))
            .copied()
    }

    pub fn put(&self, tenant: &str, scope: &str, version: i64, key: [u8; 32]) {
        self.lock()
            .insert((tenant.to_owned(), scope.to_owned(), version), key);
    }

    /// Forgets the tenant's keys (all scopes, or one).
    pub fn forget(&self, tenant: &str, scope: Option<&str>) {
        self.lock()
            .retain(|(t, s, _), _| t != tenant || scope.is_some_and(|scope| s != scope));
    }
}

/// The associated data of a wrapped data key.
pub fn data_key_aad(tenant: &str, scope: &str, version: i64) -> Vec<u8> {
    aad(
        "palisade-data-key-v1",
        &[tenant.as_bytes(), scope.as_bytes(), &version.to_be_bytes()],
    )
}

/// A fresh random data key.
pub fn new_data_key() -> Result<[u8; 32], CryptoError> {
    random()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_associated_data() {
        let key = [7u8; 32];
        let sealed = seal(&key, b"tenant=acme", b"secret value").unwrap_or_default();
        assert_eq!(
            open(&key, b"tenant=acme", &sealed).ok(),
            Some(b"secret value".to_vec())
        );
        assert_eq!(
            open(&key, b"tenant=globex", &sealed),
            Err(CryptoError::Authentication)
        );
        assert_eq!(
            open(&[8u8; 32], b"tenant=acme", &sealed),
            Err(CryptoError::Authentication)
        );
        let mut tampered = sealed.clone();
        if let Some(byte) = tampered.last_mut() {
            *byte ^= 1;
        }
        assert_eq!(
            open(&key, b"tenant=acme", &tampered),
            Err(CryptoError::Authentication)
        );
        assert_eq!(open(&key, b"", &[0; 10]), Err(CryptoError::Authentication));
        // Two seals of the same value differ (random nonces).
        assert_ne!(seal(&key, b"", b"x").ok(), seal(&key, b"", b"x").ok());
    }

    #[test]
    fn associated_data_is_unambiguous() {
        assert_ne!(aad("l", &[b"ab", b"c"]), aad("l", &[b"a", b"bc"]));
    }

    #[test]
    fn kek_wraps_and_names_itself() {
        let kek = LocalKek::parse(&"11".repeat(32)).unwrap_or_else(|e| panic!("{e}"));
        let other = LocalKek::parse(&"22".repeat(32)).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(kek.id(), other.id());
        let wrapped = kek.wrap(&[5u8; 32], b"aad").unwrap_or_default();
        assert_eq!(kek.unwrap(&wrapped, b"aad").ok(), Some([5u8; 32]));
        assert!(other.unwrap(&wrapped, b"aad").is_err());
        assert!(LocalKek::parse("not hex").is_err());
        assert!(
            !format!("{kek:?}").contains("1111"),
            "Debug must not print the key"
        );
    }
}

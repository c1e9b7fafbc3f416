//! Key-value state that outlives an invocation (API 1.1): isolated per tenant and namespace,
//! encrypted at rest by the host, held to the tenant's quotas.
//!
//! ```no_run
//! use palisade_guest::kv;
//!
//! # fn demo() -> Result<(), palisade_guest::Error> {
//! let own = kv::Namespace::own();
//! own.set("last-order", b"A-1001")?;
//! let seen = own.increment("orders-seen", 1)?;
//! let last = own.get("last-order")?;
//! # let _ = (seen, last); Ok(()) }
//! ```
//!
//! The manifest must request each namespace (`[capabilities] kv = ["self", "shared"]`) and
//! the tenant's policy must grant it. Errors are typed ([`KvError`]); `?` in a handler turns
//! one into [`crate::Error::Failed`].

use crate::bindings::palisade::extension::kv as host;

pub use host::Error as KvError;

/// A page of keys from [`Namespace::list_keys`]; pass `next` as `after` for the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPage {
    pub keys: Vec<Vec<u8>>,
    pub next: Option<Vec<u8>>,
}

/// A key-value namespace: the extension's own, or one shared by the tenant's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace(String);

impl Namespace {
    /// This extension's own namespace.
    pub fn own() -> Self {
        Self(String::new())
    }

    /// A namespace shared by the tenant's extensions that request it.
    pub fn shared(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, KvError> {
        host::get(&self.0, key.as_ref())
    }

    pub fn set(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<(), KvError> {
        host::set(&self.0, key.as_ref(), value.as_ref())
    }

    /// Whether the key existed.
    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool, KvError> {
        host::delete(&self.0, key.as_ref())
    }

    pub fn exists(&self, key: impl AsRef<[u8]>) -> Result<bool, KvError> {
        host::exists(&self.0, key.as_ref())
    }

    /// Keys starting with `prefix`, in byte order, after `after`, at most `limit` (1-1000).
    pub fn list_keys(
        &self,
        prefix: impl AsRef<[u8]>,
        after: Option<&[u8]>,
        limit: u32,
    ) -> Result<KeyPage, KvError> {
        let page = host::list_keys(&self.0, prefix.as_ref(), after, limit)?;
        Ok(KeyPage {
            keys: page.keys,
            next: page.next,
        })
    }

    /// Adds `delta` to the decimal integer at `key` (absent is 0); returns the new value.
    pub fn increment(&self, key: impl AsRef<[u8]>, delta: i64) -> Result<i64, KvError> {
        host::increment(&self.0, key.as_ref(), delta)
    }

    /// Stores `value` only if the current value is `expected` (`None`: absent).
    pub fn compare_and_swap(
        &self,
        key: impl AsRef<[u8]>,
        expected: Option<&[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<bool, KvError> {
        host::compare_and_swap(&self.0, key.as_ref(), expected, value.as_ref())
    }
}

/// The error's kind as the host names it (`quota_exceeded`, `denied`, ...).
pub fn kind(error: &KvError) -> &'static str {
    match error {
        KvError::QuotaExceeded(_) => "quota_exceeded",
        KvError::InvalidKey(_) => "invalid_key",
        KvError::ValueTooLarge(_) => "value_too_large",
        KvError::Denied(_) => "denied",
        KvError::WrongType(_) => "wrong_type",
        KvError::Unavailable(_) => "unavailable",
    }
}

/// The error's message.
pub fn message(error: &KvError) -> &str {
    match error {
        KvError::QuotaExceeded(m)
        | KvError::InvalidKey(m)
        | KvError::ValueTooLarge(m)
        | KvError::Denied(m)
        | KvError::WrongType(m)
        | KvError::Unavailable(m) => m,
    }
}

impl From<KvError> for crate::Error {
    fn from(error: KvError) -> Self {
        crate::Error::Failed(format!("key-value {}: {}", kind(&error), message(&error)))
    }
}

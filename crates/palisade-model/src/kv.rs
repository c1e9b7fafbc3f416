//! Key-value calls as they cross from a guest to the host: the operations, their answers and
//! typed errors, and the rules every key, namespace and value must meet. The supervisor side
//! checks them again (the worker is not trusted); the rules live here so every layer applies
//! the same ones.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Largest value, in bytes (a policy can only lower what is stored in total).
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Most keys one `list-keys` call returns.
pub const MAX_LIST_LIMIT: u32 = 1_000;
/// The namespace name that means "this extension's own namespace".
pub const OWN_NAMESPACE: &str = "self";

/// One key-value operation. `namespace` is as the guest wrote it (`""` or `"self"` for its
/// own namespace, or a shared namespace's name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOp {
    Get {
        namespace: String,
        key: Vec<u8>,
    },
    Set {
        namespace: String,
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    Delete {
        namespace: String,
        key: Vec<u8>,
    },
    Exists {
        namespace: String,
        key: Vec<u8>,
    },
    /// Keys starting with `prefix`, in byte order, after `after`, at most `limit`.
    List {
        namespace: String,
        prefix: Vec<u8>,
        after: Option<Vec<u8>>,
        limit: u32,
    },
    /// Adds `delta` to the decimal integer stored at `key` (absent counts as 0).
    Increment {
        namespace: String,
        key: Vec<u8>,
        delta: i64,
    },
    /// Stores `value` only if the current value is `expected` (`None`: the key is absent).
    CompareAndSwap {
        namespace: String,
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        expected: Option<Vec<u8>>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
}

impl KvOp {
    pub fn namespace(&self) -> &str {
        match self {
            Self::Get { namespace, .. }
            | Self::Set { namespace, .. }
            | Self::Delete { namespace, .. }
            | Self::Exists { namespace, .. }
            | Self::List { namespace, .. }
            | Self::Increment { namespace, .. }
            | Self::CompareAndSwap { namespace, .. } => namespace,
        }
    }

    /// The key the operation works on (the prefix for a listing).
    pub fn key(&self) -> &[u8] {
        match self {
            Self::Get { key, .. }
            | Self::Set { key, .. }
            | Self::Delete { key, .. }
            | Self::Exists { key, .. }
            | Self::Increment { key, .. }
            | Self::CompareAndSwap { key, .. } => key,
            Self::List { prefix, .. } => prefix,
        }
    }

    /// Whether the operation writes (needs `kv:write`, counts against the write rate).
    pub fn writes(&self) -> bool {
        matches!(
            self,
            Self::Set { .. }
                | Self::Delete { .. }
                | Self::Increment { .. }
                | Self::CompareAndSwap { .. }
        )
    }

    /// The bytes the operation would write.
    pub fn write_bytes(&self) -> u64 {
        match self {
            Self::Set { key, value, .. } | Self::CompareAndSwap { key, value, .. } => {
                (key.len() + value.len()) as u64
            }
            Self::Increment { key, .. } => key.len() as u64 + 20,
            Self::Delete { key, .. } => key.len() as u64,
            _ => 0,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Get { .. } => "get",
            Self::Set { .. } => "set",
            Self::Delete { .. } => "delete",
            Self::Exists { .. } => "exists",
            Self::List { .. } => "list-keys",
            Self::Increment { .. } => "increment",
            Self::CompareAndSwap { .. } => "compare-and-swap",
        }
    }

    /// Checks the key, value and limits of the operation, and the namespace's length (its
    /// name is resolved with the extension's name, [`KvScope::resolve`]).
    pub fn validate(&self) -> Result<(), KvError> {
        let key = match self {
            Self::List { prefix, limit, .. } => {
                if *limit == 0 || *limit > MAX_LIST_LIMIT {
                    return Err(KvError::new(
                        KvErrorKind::InvalidKey,
                        format!("list-keys takes a limit of 1 to {MAX_LIST_LIMIT}"),
                    ));
                }
                check_namespace_length(self.namespace())?;
                if prefix.len() > MAX_KEY_BYTES {
                    return Err(KvError::new(
                        KvErrorKind::InvalidKey,
                        format!(
                            "the prefix is {} bytes; keys are at most {MAX_KEY_BYTES}",
                            prefix.len()
                        ),
                    ));
                }
                return Ok(());
            }
            Self::Get { key, .. }
            | Self::Set { key, .. }
            | Self::Delete { key, .. }
            | Self::Exists { key, .. }
            | Self::Increment { key, .. }
            | Self::CompareAndSwap { key, .. } => key,
        };
        check_key(key)?;
        check_namespace_length(self.namespace())?;
        if let Self::CompareAndSwap {
            expected: Some(expected),
            ..
        } = self
            && expected.len() > MAX_VALUE_BYTES
        {
            return Err(KvError::new(
                KvErrorKind::ValueTooLarge,
                format!(
                    "the expected value is {} bytes; the maximum is {MAX_VALUE_BYTES}",
                    expected.len()
                ),
            ));
        }
        if let Self::Set { value, .. } | Self::CompareAndSwap { value, .. } = self
            && value.len() > MAX_VALUE_BYTES
        {
            return Err(KvError::new(
                KvErrorKind::ValueTooLarge,
                format!(
                    "the value is {} bytes; the maximum is {MAX_VALUE_BYTES}",
                    value.len()
                ),
            ));
        }
        Ok(())
    }
}

/// Longest namespace name (the rules of extension names).
const MAX_NAMESPACE_BYTES: usize = 63;

/// Refuses a namespace longer than any valid name without echoing it (a guest's 90 MiB name
/// must not become a 90 MiB error message).
fn check_namespace_length(namespace: &str) -> Result<(), KvError> {
    if namespace.len() > MAX_NAMESPACE_BYTES {
        return Err(KvError::new(
            KvErrorKind::InvalidKey,
            format!(
                "the namespace is {} bytes; names are at most {MAX_NAMESPACE_BYTES}",
                namespace.len()
            ),
        ));
    }
    Ok(())
}

/// A key is 1 to [`MAX_KEY_BYTES`] bytes, any bytes (keys are data, never paths).
pub fn check_key(key: &[u8]) -> Result<(), KvError> {
    if key.is_empty() {
        return Err(KvError::new(KvErrorKind::InvalidKey, "the key is empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KvError::new(
            KvErrorKind::InvalidKey,
            format!(
                "the key is {} bytes; the maximum is {MAX_KEY_BYTES}",
                key.len()
            ),
        ));
    }
    Ok(())
}

/// What marks a private namespace's storage name. Namespace and extension names never hold a
/// `:` (they follow the rules of extension names), so `ext:NAME` never equals a shared name.
pub const PRIVATE_PREFIX: &str = "ext:";

/// Which key-value namespace a call means: an extension's own (private) state, or a namespace
/// shared by the tenant's extensions. The two sets are disjoint everywhere: in storage (the
/// namespace column and the data key's scope), in encryption (the AAD names the storage
/// name) and in policy (the `KvNamespace` resource is named by the storage name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KvScope {
    /// The extension's own namespace (`""` or `"self"` as the guest writes it).
    Private(String),
    /// A shared namespace of the tenant.
    Shared(String),
}

impl KvScope {
    /// The namespace an extension means: its own for `""` and `"self"`, else the named shared
    /// one, which must be a valid name (the rules of extension names).
    pub fn resolve(extension: &str, namespace: &str) -> Result<Self, KvError> {
        if namespace.is_empty() || namespace == OWN_NAMESPACE {
            return Ok(Self::Private(valid_name(extension)?));
        }
        valid_name(namespace).map(Self::Shared)
    }

    /// The name under which the namespace is stored, keyed and authorized: `ext:NAME` for a
    /// private namespace, `NAME` for a shared one (never equal, as names hold no `:`).
    pub fn storage_name(&self) -> String {
        match self {
            Self::Private(extension) => format!("{PRIVATE_PREFIX}{extension}"),
            Self::Shared(name) => name.clone(),
        }
    }

    /// Reads a storage name back (`ext:NAME` or `NAME`), as administrators write it.
    pub fn parse(storage_name: &str) -> Result<Self, KvError> {
        match storage_name.strip_prefix(PRIVATE_PREFIX) {
            Some(extension) => valid_name(extension).map(Self::Private),
            None => valid_name(storage_name).map(Self::Shared),
        }
    }
}

impl fmt::Display for KvScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.storage_name())
    }
}

fn valid_name(name: &str) -> Result<String, KvError> {
    check_namespace_length(name)?;
    crate::manifest::ExtensionName::new(name)
        .map(|name| name.as_str().to_owned())
        .map_err(|e| KvError::new(KvErrorKind::InvalidKey, e.to_string()))
}

/// The storage name of the namespace an extension means ([`KvScope::resolve`]): `ext:NAME`
/// for its own (`""`, `"self"`), the shared namespace's name otherwise.
pub fn resolve_namespace(extension: &str, namespace: &str) -> Result<String, KvError> {
    KvScope::resolve(extension, namespace).map(|scope| scope.storage_name())
}

/// The key and byte quotas one write is held to: the tenant's keys and bytes over all its
/// namespaces (`kv_keys`, `kv_bytes`), and the namespace written as the calling extension may
/// fill it (its deployment's limits: the manifest may ask for less than the tenant's). The
/// store and the local in-memory store both hold writes to it with [`KvQuota::check_write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvQuota {
    pub max_keys: u64,
    pub max_bytes: u64,
    pub namespace_max_keys: u64,
    pub namespace_max_bytes: u64,
}

/// Keys and bytes (key plus value) held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvUsage {
    pub keys: u64,
    pub bytes: u64,
}

impl KvQuota {
    /// Whether replacing a key's entry of `old_bytes` (`None`: absent) with one of
    /// `new_bytes` (`None`: a delete) keeps `tenant` and `namespace` within the quota, given
    /// their usage now. Deletes and writes that shrink what is stored always pass.
    pub fn check_write(
        &self,
        tenant: &str,
        namespace: &str,
        tenant_now: KvUsage,
        namespace_now: KvUsage,
        old_bytes: Option<u64>,
        new_bytes: Option<u64>,
    ) -> Result<(), KvError> {
        let Some(new) = new_bytes else {
            return Ok(());
        };
        let old = old_bytes.unwrap_or(0);
        let added_key = u64::from(old_bytes.is_none());
        let over = |message: String| Err(KvError::new(KvErrorKind::QuotaExceeded, message));
        let keys_after = tenant_now.keys + added_key;
        let bytes_after = (tenant_now.bytes + new).saturating_sub(old);
        let ns_keys_after = namespace_now.keys + added_key;
        let ns_bytes_after = (namespace_now.bytes + new).saturating_sub(old);
        if keys_after > self.max_keys {
            return over(format!(
                "tenant {tenant} has {} keys; its quota is {} (kv_keys)",
                tenant_now.keys, self.max_keys
            ));
        }
        if bytes_after > self.max_bytes && bytes_after > tenant_now.bytes {
            return over(format!(
                "the write would store {bytes_after} bytes for tenant {tenant}; its quota is {} (kv_bytes)",
                self.max_bytes
            ));
        }
        if ns_keys_after > self.namespace_max_keys {
            return over(format!(
                "namespace {namespace} of tenant {tenant} has {} keys; this extension may keep {} there (kv_keys of the extension)",
                namespace_now.keys, self.namespace_max_keys
            ));
        }
        if ns_bytes_after > self.namespace_max_bytes && ns_bytes_after > namespace_now.bytes {
            return over(format!(
                "the write would store {ns_bytes_after} bytes in namespace {namespace} of tenant {tenant}; this extension may keep {} there (kv_bytes of the extension)",
                self.namespace_max_bytes
            ));
        }
        Ok(())
    }
}

/// The answer to one operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvReply {
    /// `get`: the value, if any.
    Value(#[serde(with = "serde_bytes")] Option<Vec<u8>>),
    /// `set`.
    Done,
    /// `delete` (whether it existed), `exists`, `compare-and-swap` (whether it swapped).
    Bool(bool),
    /// `list-keys`: a page of keys and where the next page starts.
    Keys {
        keys: Vec<Vec<u8>>,
        next: Option<Vec<u8>>,
    },
    /// `increment`: the new value.
    Counter(i64),
}

/// Why a key-value call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvErrorKind {
    /// A quota of the tenant is used up: keys, stored bytes, operations or bytes written per
    /// second (after waiting as long as the deadline allowed).
    QuotaExceeded,
    /// The invocation used up its key-value operations (`kv_ops`): the invocation ends with
    /// `kv_quota_exceeded`.
    InvocationBudget,
    /// The key, prefix, limit or namespace is not acceptable.
    InvalidKey,
    /// The value is larger than allowed.
    ValueTooLarge,
    /// The manifest does not request this namespace, or the policy does not grant it.
    Denied,
    /// The stored value is not what the operation needs (not a decimal integer, for example).
    WrongType,
    /// The store failed or the key-value interface is not available here.
    Unavailable,
}

impl KvErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::QuotaExceeded => "quota_exceeded",
            Self::InvocationBudget => "invocation_budget",
            Self::InvalidKey => "invalid_key",
            Self::ValueTooLarge => "value_too_large",
            Self::Denied => "denied",
            Self::WrongType => "wrong_type",
            Self::Unavailable => "unavailable",
        }
    }
}

/// A typed key-value error with a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct KvError {
    pub kind: KvErrorKind,
    pub message: String,
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

impl KvError {
    pub fn new(kind: KvErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// Values by `(namespace, key)`, in byte order.
pub type Entries = BTreeMap<(String, Vec<u8>), Vec<u8>>;

/// One operation on an ordered map of `(namespace, key) → value`: the reference semantics
/// that the persistent store implements too.
pub fn apply(data: &mut Entries, namespace: &str, op: KvOp) -> Result<KvReply, KvError> {
    let slot = |key: Vec<u8>| (namespace.to_owned(), key);
    Ok(match op {
        KvOp::Get { key, .. } => KvReply::Value(data.get(&slot(key)).cloned()),
        KvOp::Set { key, value, .. } => {
            data.insert(slot(key), value);
            KvReply::Done
        }
        KvOp::Delete { key, .. } => KvReply::Bool(data.remove(&slot(key)).is_some()),
        KvOp::Exists { key, .. } => KvReply::Bool(data.contains_key(&slot(key))),
        KvOp::List {
            prefix,
            after,
            limit,
            ..
        } => {
            let start = match &after {
                Some(after) if after.as_slice() > prefix.as_slice() => slot(after.clone()),
                _ => slot(prefix.clone()),
            };
            let mut keys: Vec<Vec<u8>> = data
                .range(start..)
                .map(|((ns, key), _)| (ns, key))
                .take_while(|(ns, key)| *ns == namespace && key.starts_with(&prefix))
                .filter(|(_, key)| after.as_ref().is_none_or(|a| key.as_slice() > a.as_slice()))
                .map(|(_, key)| key.clone())
                .take(limit as usize + 1)
                .collect();
            let next = (keys.len() > limit as usize).then(|| {
                keys.truncate(limit as usize);
                keys.last().cloned().unwrap_or_default()
            });
            KvReply::Keys { keys, next }
        }
        KvOp::Increment { key, delta, .. } => {
            let current = match data.get(&slot(key.clone())) {
                None => 0,
                Some(bytes) => parse_counter(bytes)?,
            };
            let updated = current.checked_add(delta).ok_or_else(|| {
                KvError::new(
                    KvErrorKind::WrongType,
                    "the counter would overflow a signed 64-bit integer",
                )
            })?;
            data.insert(slot(key), updated.to_string().into_bytes());
            KvReply::Counter(updated)
        }
        KvOp::CompareAndSwap {
            key,
            expected,
            value,
            ..
        } => {
            let key = slot(key);
            if data.get(&key) == expected.as_ref() {
                data.insert(key, value);
                KvReply::Bool(true)
            } else {
                KvReply::Bool(false)
            }
        }
    })
}

/// A counter is stored as a decimal integer's ASCII text.
pub fn parse_counter(bytes: &[u8]) -> Result<i64, KvError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| {
            KvError::new(
                KvErrorKind::WrongType,
                "the stored value is not a decimal integer",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op_set(ns: &str, key: &[u8], value: &[u8]) -> KvOp {
        KvOp::Set {
            namespace: ns.into(),
            key: key.to_vec(),
            value: value.to_vec(),
        }
    }

    #[test]
    fn the_reference_semantics_hold() {
        let mut data = Entries::new();
        let mut kv = |op| apply(&mut data, "ext:ext", op);
        for key in [b"a/1".as_slice(), b"a/2", b"a/3", b"b/1"] {
            assert_eq!(kv(op_set("", key, b"v")), Ok(KvReply::Done));
        }
        let list = |after: Option<&[u8]>| KvOp::List {
            namespace: "self".into(),
            prefix: b"a/".to_vec(),
            after: after.map(<[u8]>::to_vec),
            limit: 2,
        };
        assert_eq!(
            kv(list(None)),
            Ok(KvReply::Keys {
                keys: vec![b"a/1".to_vec(), b"a/2".to_vec()],
                next: Some(b"a/2".to_vec())
            })
        );
        assert_eq!(
            kv(list(Some(b"a/2"))),
            Ok(KvReply::Keys {
                keys: vec![b"a/3".to_vec()],
                next: None
            })
        );
        let incr = |delta| KvOp::Increment {
            namespace: String::new(),
            key: b"n".to_vec(),
            delta,
        };
        assert_eq!(kv(incr(5)), Ok(KvReply::Counter(5)));
        assert_eq!(kv(incr(-2)), Ok(KvReply::Counter(3)));
        let wrong = kv(KvOp::Increment {
            namespace: String::new(),
            key: b"a/1".to_vec(),
            delta: 1,
        });
        assert_eq!(wrong.map_err(|e| e.kind), Err(KvErrorKind::WrongType));
        let cas = |expected: Option<&[u8]>| KvOp::CompareAndSwap {
            namespace: String::new(),
            key: b"c".to_vec(),
            expected: expected.map(<[u8]>::to_vec),
            value: b"new".to_vec(),
        };
        assert_eq!(kv(cas(Some(b"x"))), Ok(KvReply::Bool(false)));
        assert_eq!(kv(cas(None)), Ok(KvReply::Bool(true)));
        assert_eq!(kv(cas(None)), Ok(KvReply::Bool(false)));
    }

    fn set(key: &[u8], value: usize) -> KvOp {
        KvOp::Set {
            namespace: String::new(),
            key: key.to_vec(),
            value: vec![0; value],
        }
    }

    #[test]
    fn keys_and_values_are_checked() {
        assert!(set(b"k", 1).validate().is_ok());
        assert!(
            set(b"../../etc/passwd", 1).validate().is_ok(),
            "keys are data"
        );
        assert!(set(&[0xff, 0x00, 0xfe], 1).validate().is_ok(), "any bytes");
        let kind = |op: KvOp| op.validate().err().map(|e| e.kind);
        assert_eq!(kind(set(b"", 1)), Some(KvErrorKind::InvalidKey));
        assert_eq!(
            kind(set(&[b'k'; MAX_KEY_BYTES + 1], 1)),
            Some(KvErrorKind::InvalidKey)
        );
        assert_eq!(
            kind(set(b"k", MAX_VALUE_BYTES + 1)),
            Some(KvErrorKind::ValueTooLarge)
        );
        let list = |limit| KvOp::List {
            namespace: String::new(),
            prefix: Vec::new(),
            after: None,
            limit,
        };
        assert_eq!(kind(list(0)), Some(KvErrorKind::InvalidKey));
        assert!(list(MAX_LIST_LIMIT).validate().is_ok());
    }

    #[test]
    fn namespaces_resolve_to_the_extension_or_a_valid_name() {
        assert_eq!(
            resolve_namespace("orders", "").ok().as_deref(),
            Some("ext:orders")
        );
        assert_eq!(
            resolve_namespace("orders", "self").ok().as_deref(),
            Some("ext:orders")
        );
        assert_eq!(
            resolve_namespace("orders", "shared").ok().as_deref(),
            Some("shared")
        );
        for bad in ["../x", "Shared", "a/b", "x\0", "ext:orders"] {
            assert!(resolve_namespace("orders", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn oversized_namespaces_and_values_are_refused_without_echoing_them() {
        let huge = "n".repeat(1 << 20);
        let op = KvOp::Get {
            namespace: huge.clone(),
            key: b"k".to_vec(),
        };
        let error = op.validate().err();
        assert_eq!(
            error.as_ref().map(|e| e.kind),
            Some(KvErrorKind::InvalidKey)
        );
        assert!(error.is_some_and(|e| e.message.len() < 100));
        let error = resolve_namespace("orders", &huge).err();
        assert!(error.is_some_and(|e| e.message.len() < 100));
        let cas = KvOp::CompareAndSwap {
            namespace: String::new(),
            key: b"k".to_vec(),
            expected: Some(vec![0; MAX_VALUE_BYTES + 1]),
            value: Vec::new(),
        };
        assert_eq!(
            cas.validate().map_err(|e| e.kind),
            Err(KvErrorKind::ValueTooLarge)
        );
    }

    #[test]
    fn a_private_namespace_never_resolves_like_a_shared_one_of_the_same_name() {
        let own = KvScope::resolve("victim", "self").ok();
        let shared = KvScope::resolve("thief", "victim").ok();
        assert_eq!(own, Some(KvScope::Private("victim".into())));
        assert_eq!(shared, Some(KvScope::Shared("victim".into())));
        let own = own.map(|s| s.storage_name());
        let shared = shared.map(|s| s.storage_name());
        assert_ne!(own, shared);
        // A shared namespace can never be named like a private one's storage name.
        assert!(KvScope::resolve("thief", "ext:victim").is_err());
        for scope in [
            KvScope::Private("victim".into()),
            KvScope::Shared("victim".into()),
        ] {
            assert_eq!(KvScope::parse(&scope.storage_name()).ok(), Some(scope));
        }
        assert!(KvScope::parse("ext:").is_err());
        assert!(KvScope::parse("ext:ext:x").is_err());
    }
}

//! Key-value calls as they cross from a guest to the host: the operations, their answers and
//! typed errors, and the rules every key, namespace and value must meet. The supervisor side
//! checks them again (the worker is not trusted); the rules live here so every layer applies
//! the same ones.

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

    /// Checks the key, value and limits of the operation (not the namespace, which needs the
    /// extension's name).
    pub fn validate(&self) -> Result<(), KvError> {
        let key = match self {
            Self::List { prefix, limit, .. } => {
                if *limit == 0 || *limit > MAX_LIST_LIMIT {
                    return Err(KvError::new(
                        KvErrorKind::InvalidKey,
                        format!("list-keys takes a limit of 1 to {MAX_LIST_LIMIT}"),
                    ));
                }
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

/// The namespace an extension means: its own for `""` and `"self"`, else the named shared
/// one, which must be a valid name (the rules of extension names).
pub fn resolve_namespace(extension: &str, namespace: &str) -> Result<String, KvError> {
    if namespace.is_empty() || namespace == OWN_NAMESPACE {
        return Ok(extension.to_owned());
    }
    crate::manifest::ExtensionName::new(namespace)
        .map(|name| name.as_str().to_owned())
        .map_err(|e| KvError::new(KvErrorKind::InvalidKey, e.to_string()))
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

#[cfg(test)]
mod tests {
    use super::*;

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
            Some("orders")
        );
        assert_eq!(
            resolve_namespace("orders", "self").ok().as_deref(),
            Some("orders")
        );
        assert_eq!(
            resolve_namespace("orders", "shared").ok().as_deref(),
            Some("shared")
        );
        for bad in ["../x", "Shared", "a/b", "x\0"] {
            assert!(resolve_namespace("orders", bad).is_err(), "{bad}");
        }
    }
}

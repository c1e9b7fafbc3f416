//! Host calls that leave the wasm sandbox: the interface the runtime's `kv` import calls, and
//! its implementations. In a worker process it forwards each call to the supervisor over IPC;
//! the control plane answers it from the encrypted store, after checking policy and quotas.
//! For local runs (`palisade run`, `palisade test`) an in-memory store with the same rules
//! stands in, so authors can exercise their extension's state without a server.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use palisade_model::egress::{EgressError, EgressErrorKind, HttpRequest, HttpResponse};
use palisade_model::kv::{
    KvError, KvErrorKind, KvOp, KvQuota, KvReply, KvUsage, resolve_namespace,
};

/// Answers one invocation's host calls. One value per invocation: it knows whose they are.
#[async_trait::async_trait]
pub trait HostCalls: Send + Sync {
    async fn kv(&self, op: KvOp) -> Result<KvReply, KvError>;

    /// One outbound HTTP request; hosts without an egress gateway refuse it.
    async fn http(&self, request: HttpRequest) -> Result<HttpResponse, EgressError> {
        Err(EgressError::new(
            EgressErrorKind::Unavailable,
            format!(
                "outbound HTTP needs the egress gateway of a Palisade server ({} {})",
                request.method, request.url
            ),
        ))
    }
}

/// For hosts that offer no key-value state: every call is `unavailable`.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHostCalls;

#[async_trait::async_trait]
impl HostCalls for NoHostCalls {
    async fn kv(&self, op: KvOp) -> Result<KvReply, KvError> {
        Err(KvError::new(
            KvErrorKind::Unavailable,
            format!("key-value state is not available here ({})", op.name()),
        ))
    }
}

/// Values by `(namespace, key)`, in byte order.
pub type Entries = BTreeMap<(String, Vec<u8>), Vec<u8>>;

/// An in-memory key-value store for one extension's local runs: the namespaces its manifest
/// requests, the same key and value rules, and a per-invocation operation budget. Not
/// persistent, not encrypted, not shared between processes.
#[derive(Debug)]
pub struct MemoryKv {
    extension: String,
    namespaces: BTreeSet<String>,
    data: Mutex<Entries>,
    ops_left: AtomicU64,
    /// The key and byte quotas, held exactly as the server's store holds them.
    quota: Option<KvQuota>,
}

impl MemoryKv {
    /// A store for `extension` that grants `namespaces` (already resolved) and allows
    /// `ops` operations until [`MemoryKv::reset_budget`].
    pub fn new(extension: &str, namespaces: impl IntoIterator<Item = String>, ops: u64) -> Self {
        Self {
            extension: extension.to_owned(),
            namespaces: namespaces.into_iter().collect(),
            data: Mutex::default(),
            ops_left: AtomicU64::new(ops),
            quota: None,
        }
    }

    /// Holds every write to `quota` (the data here plays the tenant's whole state).
    pub fn with_quota(mut self, quota: KvQuota) -> Self {
        self.quota = Some(quota);
        self
    }

    /// Gives the next invocation a fresh operation budget (the data stays).
    pub fn reset_budget(&self, ops: u64) {
        self.ops_left.store(ops, Ordering::Release);
    }
}

#[async_trait::async_trait]
impl HostCalls for MemoryKv {
    async fn kv(&self, op: KvOp) -> Result<KvReply, KvError> {
        op.validate()?;
        let namespace = resolve_namespace(&self.extension, op.namespace())?;
        if !self.namespaces.contains(&namespace) {
            return Err(KvError::new(
                KvErrorKind::Denied,
                format!("the manifest does not request key-value namespace `{namespace}`"),
            ));
        }
        if self
            .ops_left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_err()
        {
            return Err(KvError::new(
                KvErrorKind::InvocationBudget,
                "the invocation used all of its key-value operations",
            ));
        }
        let mut data = self
            .data
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(quota) = self.quota.filter(|_| op.writes()) else {
            return apply(&mut data, &namespace, op);
        };
        let slot = (namespace.clone(), op.key().to_vec());
        let entry_bytes = |value: &Vec<u8>| (slot.1.len() + value.len()) as u64;
        let usage = |only: Option<&str>| {
            data.iter()
                .filter(|((ns, _), _)| only.is_none_or(|only| ns == only))
                .fold(KvUsage::default(), |usage, ((_, key), value)| KvUsage {
                    keys: usage.keys + 1,
                    bytes: usage.bytes + (key.len() + value.len()) as u64,
                })
        };
        let (tenant_now, namespace_now) = (usage(None), usage(Some(&namespace)));
        let before = data.get(&slot).cloned();
        let reply = apply(&mut data, &namespace, op)?;
        let after = data.get(&slot).map(entry_bytes);
        if let Err(error) = quota.check_write(
            "local",
            &namespace,
            tenant_now,
            namespace_now,
            before.as_ref().map(entry_bytes),
            after,
        ) {
            // Undo: the write never happened.
            match before {
                Some(value) => data.insert(slot, value),
                None => data.remove(&slot),
            };
            return Err(error);
        }
        Ok(reply)
    }
}

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

    #[tokio::test]
    async fn local_runs_hold_the_key_and_byte_quotas_exactly() {
        let kv = MemoryKv::new("ext", ["ext:ext".to_owned()], 100).with_quota(KvQuota {
            max_keys: 2,
            max_bytes: 100,
            namespace_max_keys: 2,
            namespace_max_bytes: 10,
        });
        assert_eq!(kv.kv(op_set("", b"a", b"1234")).await, Ok(KvReply::Done));
        assert_eq!(kv.kv(op_set("", b"b", b"1234")).await, Ok(KvReply::Done));
        // A third key is over kv_keys; overwriting an existing one is fine.
        let third = kv.kv(op_set("", b"c", b"1")).await;
        assert_eq!(third.map_err(|e| e.kind), Err(KvErrorKind::QuotaExceeded));
        assert_eq!(kv.kv(op_set("", b"b", b"1")).await, Ok(KvReply::Done));
        // 5 + 2 bytes stored; growing `b` to 9 bytes (10 with its key) is over the 10 bytes.
        let grown = kv.kv(op_set("", b"b", b"123456789")).await;
        assert_eq!(grown.map_err(|e| e.kind), Err(KvErrorKind::QuotaExceeded));
        let get = KvOp::Get {
            namespace: String::new(),
            key: b"b".to_vec(),
        };
        assert_eq!(kv.kv(get).await, Ok(KvReply::Value(Some(b"1".to_vec()))));
    }

    #[tokio::test]
    async fn the_reference_semantics_hold() {
        let kv = MemoryKv::new("ext", ["ext:ext".to_owned()], 100);
        for key in [b"a/1".as_slice(), b"a/2", b"a/3", b"b/1"] {
            assert_eq!(kv.kv(op_set("", key, b"v")).await, Ok(KvReply::Done));
        }
        let list = |after: Option<&[u8]>| KvOp::List {
            namespace: "self".into(),
            prefix: b"a/".to_vec(),
            after: after.map(<[u8]>::to_vec),
            limit: 2,
        };
        assert_eq!(
            kv.kv(list(None)).await,
            Ok(KvReply::Keys {
                keys: vec![b"a/1".to_vec(), b"a/2".to_vec()],
                next: Some(b"a/2".to_vec())
            })
        );
        assert_eq!(
            kv.kv(list(Some(b"a/2"))).await,
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
        assert_eq!(kv.kv(incr(5)).await, Ok(KvReply::Counter(5)));
        assert_eq!(kv.kv(incr(-2)).await, Ok(KvReply::Counter(3)));
        let wrong = kv
            .kv(KvOp::Increment {
                namespace: String::new(),
                key: b"a/1".to_vec(),
                delta: 1,
            })
            .await;
        assert_eq!(wrong.map_err(|e| e.kind), Err(KvErrorKind::WrongType));
        let cas = |expected: Option<&[u8]>| KvOp::CompareAndSwap {
            namespace: String::new(),
            key: b"c".to_vec(),
            expected: expected.map(<[u8]>::to_vec),
            value: b"new".to_vec(),
        };
        assert_eq!(kv.kv(cas(Some(b"x"))).await, Ok(KvReply::Bool(false)));
        assert_eq!(kv.kv(cas(None)).await, Ok(KvReply::Bool(true)));
        assert_eq!(kv.kv(cas(None)).await, Ok(KvReply::Bool(false)));
    }

    #[tokio::test]
    async fn unrequested_namespaces_and_the_budget_are_enforced() {
        let kv = MemoryKv::new("ext", ["ext:ext".to_owned()], 1);
        let denied = kv.kv(op_set("shared", b"k", b"v")).await;
        assert_eq!(denied.map_err(|e| e.kind), Err(KvErrorKind::Denied));
        assert!(kv.kv(op_set("", b"k", b"v")).await.is_ok());
        let over = kv.kv(op_set("", b"k", b"v")).await;
        assert_eq!(over.map_err(|e| e.kind), Err(KvErrorKind::InvocationBudget));
    }
}

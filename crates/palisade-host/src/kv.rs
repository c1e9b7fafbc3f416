//! The key-value host service: what a deployment may do with its state (namespaces requested
//! by the manifest, read/write granted by policy per call), its quotas, the tenant's rate
//! buckets, and where the data lives ([`KvBackend`]: the encrypted store on a server, memory
//! for local runs). Both backends hold the same key and byte quotas
//! ([`palisade_model::kv::KvQuota::check_write`]) and the same semantics
//! ([`palisade_model::kv::apply`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use palisade_egress::TokenBucket;
use palisade_model::kv::{Entries, KvError, KvOp, KvQuota, KvReply, KvUsage, apply};
use palisade_policy::{
    Action, CallContext, EffectiveLimits, LimitKey, PreparedDeployment, Resource, TenantId,
};

/// Where key-value data lives. Called after every check of the host service (validation,
/// namespace, grants, budget, rates); the backend applies the op and holds the stored quotas
/// in the write's own critical section.
#[async_trait::async_trait]
pub trait KvBackend: Send + Sync + std::fmt::Debug {
    async fn kv(
        &self,
        tenant: &str,
        namespace: &str,
        op: KvOp,
        quota: KvQuota,
    ) -> Result<KvReply, KvError>;
}

#[async_trait::async_trait]
impl KvBackend for palisade_store::Store {
    async fn kv(
        &self,
        tenant: &str,
        namespace: &str,
        op: KvOp,
        quota: KvQuota,
    ) -> Result<KvReply, KvError> {
        palisade_store::Store::kv(self, tenant, namespace, op, quota).await
    }
}

/// Key-value data in this process's memory (local runs): not persistent, not encrypted, not
/// shared between processes; the quotas held exactly as the store holds them.
#[derive(Debug, Default)]
pub struct MemoryKv {
    /// By tenant, then `(namespace, key)`.
    tenants: Mutex<HashMap<String, Entries>>,
}

#[async_trait::async_trait]
impl KvBackend for MemoryKv {
    async fn kv(
        &self,
        tenant: &str,
        namespace: &str,
        op: KvOp,
        quota: KvQuota,
    ) -> Result<KvReply, KvError> {
        op.validate()?;
        let mut tenants = self
            .tenants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let data = tenants.entry(tenant.to_owned()).or_default();
        if !op.writes() {
            return apply(data, namespace, op);
        }
        let slot = (namespace.to_owned(), op.key().to_vec());
        let entry_bytes = |value: &Vec<u8>| (slot.1.len() + value.len()) as u64;
        let usage = |data: &Entries, only: Option<&str>| {
            data.iter()
                .filter(|((ns, _), _)| only.is_none_or(|only| ns == only))
                .fold(KvUsage::default(), |usage, ((_, key), value)| KvUsage {
                    keys: usage.keys + 1,
                    bytes: usage.bytes + (key.len() + value.len()) as u64,
                })
        };
        let (tenant_now, namespace_now) = (usage(data, None), usage(data, Some(namespace)));
        let before = data.get(&slot).cloned();
        let reply = apply(data, namespace, op)?;
        let after = data.get(&slot).map(entry_bytes);
        if let Err(error) = quota.check_write(
            tenant,
            namespace,
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

/// What a deployment may do with key-value state. The namespaces its manifest requests are
/// fixed at resolve; whether the policy grants read or write is asked per call, with that
/// call's time: the prepared deployment answers from its precomputed decisions only where no
/// layer looks at the context (a `when { context.time < ... }` rule is evaluated every time).
#[derive(Debug, Clone)]
pub struct KvGrants {
    prepared: Arc<PreparedDeployment>,
    tenant: TenantId,
    /// Namespaces the manifest requests (a call outside them is denied as not requested).
    requested: BTreeSet<String>,
}

impl KvGrants {
    /// The grants of a deployment over the namespaces its manifest requests.
    pub fn new(
        prepared: Arc<PreparedDeployment>,
        tenant: TenantId,
        requested: Vec<String>,
    ) -> Self {
        Self {
            prepared,
            tenant,
            requested: requested.into_iter().collect(),
        }
    }

    /// Whether the manifest requests `namespace` (a storage name).
    pub fn requests(&self, namespace: &str) -> bool {
        self.requested.contains(namespace)
    }

    /// Whether the policy layers allow `action` on `namespace` now.
    pub fn allows(&self, action: Action, namespace: &str) -> bool {
        let resource = Resource::KvNamespace {
            tenant: self.tenant.clone(),
            name: namespace.to_owned(),
        };
        self.prepared
            .authorize(action, &resource, &CallContext::now())
            .allowed
    }
}

/// A tenant's (or one extension's) key-value rate quotas, shared by all its invocations.
#[derive(Debug)]
pub struct TenantRates {
    pub(crate) ops: TokenBucket,
    pub(crate) write_bytes: TokenBucket,
    limits: (u64, u64),
}

/// Every tenant's rate buckets; replaced for a tenant when its limits change.
#[derive(Debug, Default)]
pub struct KvRates {
    tenants: Mutex<HashMap<String, Arc<TenantRates>>>,
}

impl KvRates {
    /// The buckets of `owner`: a tenant (`acme`) or one of its extensions (`acme/orders`;
    /// names never hold a `/`, so the two cannot meet). New buckets when the limits changed.
    pub fn for_owner(
        &self,
        owner: &str,
        ops_per_second: u64,
        write_bytes_per_second: u64,
    ) -> Arc<TenantRates> {
        let mut tenants = self
            .tenants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let limits = (ops_per_second, write_bytes_per_second);
        match tenants.get(owner) {
            Some(rates) if rates.limits == limits => Arc::clone(rates),
            _ => {
                let rates = Arc::new(TenantRates {
                    ops: TokenBucket::new(ops_per_second),
                    write_bytes: TokenBucket::new(write_bytes_per_second),
                    limits,
                });
                tenants.insert(owner.to_owned(), Arc::clone(&rates));
                rates
            }
        }
    }
}

/// A deployment's key-value quotas: the tenant's totals from `tenant` (its effective
/// limits), this extension's share from `deployment` (tenant ∩ manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvQuotas {
    pub stored: KvQuota,
    /// Operations per invocation (`kv_ops`).
    pub ops: u64,
    /// `kv_rate` and `disk_io` of the tenant, then of the extension.
    pub tenant_rates: (u64, u64),
    pub extension_rates: (u64, u64),
}

impl KvQuotas {
    pub fn new(tenant: &EffectiveLimits, deployment: &EffectiveLimits) -> Self {
        Self {
            stored: KvQuota {
                max_keys: tenant.get(LimitKey::KvKeys),
                max_bytes: tenant.get(LimitKey::KvBytes),
                namespace_max_keys: deployment.get(LimitKey::KvKeys),
                namespace_max_bytes: deployment.get(LimitKey::KvBytes),
            },
            ops: deployment.get(LimitKey::KvOps),
            tenant_rates: (tenant.get(LimitKey::KvRate), tenant.get(LimitKey::DiskIo)),
            extension_rates: (
                deployment.get(LimitKey::KvRate),
                deployment.get(LimitKey::DiskIo),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(namespace: &str, key: &[u8], value: &[u8]) -> KvOp {
        KvOp::Set {
            namespace: namespace.into(),
            key: key.to_vec(),
            value: value.to_vec(),
        }
    }

    #[tokio::test]
    async fn the_memory_backend_holds_the_key_and_byte_quotas_exactly() {
        let kv = MemoryKv::default();
        let quota = KvQuota {
            max_keys: 2,
            max_bytes: 1_000,
            namespace_max_keys: 2,
            namespace_max_bytes: 10,
        };
        kv.kv("t", "ext:e", set("", b"a", b"1234"), quota)
            .await
            .unwrap();
        kv.kv("t", "ext:e", set("", b"b", b"1234"), quota)
            .await
            .unwrap();
        let third = kv.kv("t", "ext:e", set("", b"c", b"1"), quota).await;
        assert_eq!(
            third.unwrap_err().kind,
            palisade_model::kv::KvErrorKind::QuotaExceeded
        );
        // A refused write leaves nothing behind; another tenant's data is its own.
        let get = KvOp::Get {
            namespace: String::new(),
            key: b"c".to_vec(),
        };
        assert_eq!(
            kv.kv("t", "ext:e", get.clone(), quota).await.unwrap(),
            KvReply::Value(None)
        );
        kv.kv("u", "ext:e", set("", b"c", b"1"), quota)
            .await
            .unwrap();
        assert_eq!(
            kv.kv("t", "ext:e", get, quota).await.unwrap(),
            KvReply::Value(None)
        );
    }
}

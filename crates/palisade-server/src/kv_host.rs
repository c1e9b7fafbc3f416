//! The supervisor-side answer to an invocation's key-value calls. Everything the worker sends
//! is checked again here: the key and value rules, that the manifest requests the namespace
//! and the policy grants it (read or write), the invocation's `kv_ops`, the tenant's rate
//! (`kv_rate`) and write bandwidth (`disk_io`), then the store holds the key and byte quotas
//! in the write's own transaction. Rate quotas slow a caller down within its deadline before
//! they refuse it.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use palisade_model::kv::{KvError, KvErrorKind, KvOp, KvReply, resolve_namespace};
use palisade_policy::{Action, CallContext, LimitKey, PreparedDeployment, Resource, TenantId};
use palisade_runtime::HostCalls;
use palisade_store::{KvQuota, Store};

use crate::admission::TokenBucket;

/// What a deployment may do with key-value state, decided when it is resolved.
#[derive(Debug, Clone, Default)]
pub struct KvGrants {
    pub read: BTreeSet<String>,
    pub write: BTreeSet<String>,
    /// Namespaces the manifest requests (a call outside them is denied as not requested).
    pub requested: BTreeSet<String>,
}

impl KvGrants {
    /// The grants of a deployment: each requested namespace, read and write, as the policy
    /// layers decide (precomputed decisions).
    pub fn decide(
        prepared: &PreparedDeployment,
        tenant: &TenantId,
        requested: Vec<String>,
    ) -> Self {
        let mut grants = Self::default();
        for name in requested {
            let resource = Resource::KvNamespace {
                tenant: tenant.clone(),
                name: name.clone(),
            };
            let context = CallContext::now();
            if prepared
                .authorize(Action::KvRead, &resource, &context)
                .allowed
            {
                grants.read.insert(name.clone());
            }
            if prepared
                .authorize(Action::KvWrite, &resource, &context)
                .allowed
            {
                grants.write.insert(name.clone());
            }
            grants.requested.insert(name);
        }
        grants
    }
}

/// A tenant's key-value rate quotas, shared by all its invocations.
#[derive(Debug)]
pub struct TenantRates {
    ops: TokenBucket,
    write_bytes: TokenBucket,
    limits: (u64, u64),
}

/// Every tenant's rate buckets; replaced for a tenant when its limits change.
#[derive(Debug, Default)]
pub struct KvRates {
    tenants: Mutex<HashMap<String, Arc<TenantRates>>>,
}

impl KvRates {
    pub fn for_tenant(
        &self,
        tenant: &str,
        ops_per_second: u64,
        write_bytes_per_second: u64,
    ) -> Arc<TenantRates> {
        let mut tenants = self
            .tenants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let limits = (ops_per_second, write_bytes_per_second);
        match tenants.get(tenant) {
            Some(rates) if rates.limits == limits => Arc::clone(rates),
            _ => {
                let rates = Arc::new(TenantRates {
                    ops: TokenBucket::new(ops_per_second),
                    write_bytes: TokenBucket::new(write_bytes_per_second),
                    limits,
                });
                tenants.insert(tenant.to_owned(), Arc::clone(&rates));
                rates
            }
        }
    }
}

/// One invocation's key-value calls.
pub struct InvocationKv {
    pub store: Store,
    pub tenant: String,
    pub extension: String,
    pub grants: Arc<KvGrants>,
    pub quota: KvQuota,
    pub ops_left: AtomicU64,
    pub rates: Arc<TenantRates>,
    pub deadline: tokio::time::Instant,
}

impl std::fmt::Debug for InvocationKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvocationKv")
            .field("tenant", &self.tenant)
            .field("extension", &self.extension)
            .finish_non_exhaustive()
    }
}

/// The key and byte quotas, and the rates, from a tenant's effective limits.
pub fn quotas(limits: &palisade_policy::EffectiveLimits) -> (KvQuota, u64, u64, u64) {
    (
        KvQuota {
            max_keys: limits.get(LimitKey::KvKeys),
            max_bytes: limits.get(LimitKey::KvBytes),
        },
        limits.get(LimitKey::KvOps),
        limits.get(LimitKey::KvRate),
        limits.get(LimitKey::DiskIo),
    )
}

fn denied(message: String) -> KvError {
    KvError::new(KvErrorKind::Denied, message)
}

#[async_trait::async_trait]
impl HostCalls for InvocationKv {
    async fn kv(&self, op: KvOp) -> Result<KvReply, KvError> {
        op.validate()?;
        let namespace = resolve_namespace(&self.extension, op.namespace())?;
        if !self.grants.requested.contains(&namespace) {
            return Err(denied(format!(
                "the manifest does not request key-value namespace `{namespace}`"
            )));
        }
        let granted = if op.writes() {
            &self.grants.write
        } else {
            &self.grants.read
        };
        if !granted.contains(&namespace) {
            let action = if op.writes() { "kv:write" } else { "kv:read" };
            return Err(denied(format!(
                "the policy does not grant {action} on namespace `{namespace}` of tenant {}",
                self.tenant
            )));
        }
        if self
            .ops_left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_err()
        {
            return Err(KvError::new(
                KvErrorKind::InvocationBudget,
                "the invocation used all of its key-value operations (kv_ops)",
            ));
        }
        if let Err(wait) = self.rates.ops.take_by(1, self.deadline).await {
            return Err(KvError::new(
                KvErrorKind::QuotaExceeded,
                format!(
                    "tenant {} is over its key-value rate (kv_rate); the next operation is due in {wait:?}, after this invocation's deadline",
                    self.tenant
                ),
            ));
        }
        let bytes = op.write_bytes();
        if bytes > 0
            && let Err(wait) = self.rates.write_bytes.take_by(bytes, self.deadline).await
        {
            return Err(KvError::new(
                KvErrorKind::QuotaExceeded,
                format!(
                    "tenant {} is over its write bandwidth (disk_io); {bytes} bytes would be due in {wait:?}, after this invocation's deadline",
                    self.tenant
                ),
            ));
        }
        self.store
            .kv(&self.tenant, &namespace, op, self.quota)
            .await
    }
}

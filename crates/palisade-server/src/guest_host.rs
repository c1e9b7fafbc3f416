//! The supervisor-side answer to an invocation's host calls: key-value state and outbound
//! HTTP. Everything the worker sends is checked again here. For key-value calls: the key and
//! value rules, that the manifest requests the namespace and the policy grants it (read or
//! write), the invocation's `kv_ops`, the tenant's rate (`kv_rate`) and write bandwidth
//! (`disk_io`), then the store holds the key and byte quotas in the write's own transaction.
//! Rate quotas slow a caller down within its deadline before they refuse it. Outbound HTTP
//! goes to the egress gateway with this invocation's policy, secrets and budgets.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use palisade_egress::Gateway;
use palisade_model::egress::{EgressError, HttpRequest, HttpResponse};
use palisade_model::kv::{KvError, KvErrorKind, KvOp, KvReply, resolve_namespace};
use palisade_policy::{Action, CallContext, LimitKey, PreparedDeployment, Resource, TenantId};
use palisade_runtime::HostCalls;
use palisade_store::{KvQuota, Store};

use palisade_egress::TokenBucket;
use palisade_egress::bucket::take_by;

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

/// One invocation's host calls.
pub struct GuestHost {
    pub store: Store,
    pub tenant: String,
    pub extension: String,
    pub grants: Arc<KvGrants>,
    pub quota: KvQuota,
    pub ops_left: AtomicU64,
    /// The tenant's `kv_rate` and `disk_io` buckets, shared by all its extensions.
    pub rates: Arc<TenantRates>,
    /// This extension's own, within the tenant's, when its manifest asks for less.
    pub extension_rates: Option<Arc<TenantRates>>,
    pub deadline: tokio::time::Instant,
    pub egress: Egress,
}

/// The gateway and this invocation's egress context, and where to count.
#[derive(Debug)]
pub struct Egress {
    pub gateway: Arc<Gateway>,
    pub invocation: palisade_egress::Invocation,
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl std::fmt::Debug for GuestHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvocationKv")
            .field("tenant", &self.tenant)
            .field("extension", &self.extension)
            .finish_non_exhaustive()
    }
}

/// A deployment's key-value quotas: the tenant's totals from `tenant` (its effective
/// limits), this extension's share from `deployment` (tenant ∩ manifest).
#[derive(Debug, Clone, Copy)]
pub struct KvQuotas {
    pub stored: KvQuota,
    /// Operations per invocation (`kv_ops`).
    pub ops: u64,
    /// `kv_rate` and `disk_io` of the tenant, then of the extension.
    pub tenant_rates: (u64, u64),
    pub extension_rates: (u64, u64),
}

pub fn quotas(
    tenant: &palisade_policy::EffectiveLimits,
    deployment: &palisade_policy::EffectiveLimits,
) -> KvQuotas {
    KvQuotas {
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

fn denied(message: String) -> KvError {
    KvError::new(KvErrorKind::Denied, message)
}

#[async_trait::async_trait]
impl HostCalls for GuestHost {
    async fn http(&self, request: HttpRequest) -> Result<HttpResponse, EgressError> {
        let egress = &self.egress;
        let sent = request.body.len() as u64;
        let result = egress.gateway.send(&egress.invocation, request).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(error) => error.kind.as_str(),
        };
        let received = result.as_ref().map_or(0, |r| r.body.len() as u64);
        egress
            .metrics
            .record_egress(&self.tenant, outcome, sent, received);
        if let Err(error) = &result {
            tracing::info!(kind = error.kind.as_str(), reason = %error.message, "egress refused or failed");
        }
        result
    }

    async fn kv(&self, op: KvOp) -> Result<KvReply, KvError> {
        op.validate()?;
        let namespace = resolve_namespace(&self.extension, op.namespace())?;
        if !self.grants.requests(&namespace) {
            return Err(denied(format!(
                "the manifest does not request key-value namespace `{namespace}`"
            )));
        }
        let action = if op.writes() {
            Action::KvWrite
        } else {
            Action::KvRead
        };
        if !self.grants.allows(action, &namespace) {
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
        let bytes = op.write_bytes();
        let buckets = self
            .extension_rates
            .iter()
            .map(|rates| (rates, "extension"))
            .chain([(&self.rates, "tenant")]);
        for (rates, owner) in buckets {
            let who = || match owner {
                "extension" => format!("extension {}/{}", self.tenant, self.extension),
                _ => format!("tenant {}", self.tenant),
            };
            if let Err(wait) = take_by(&rates.ops, 1, self.deadline).await {
                return Err(KvError::new(
                    KvErrorKind::QuotaExceeded,
                    format!(
                        "{} is over its key-value rate (kv_rate); the next operation is due in {wait:?}, after this invocation's deadline",
                        who()
                    ),
                ));
            }
            if bytes > 0
                && let Err(wait) = take_by(&rates.write_bytes, bytes, self.deadline).await
            {
                return Err(KvError::new(
                    KvErrorKind::QuotaExceeded,
                    format!(
                        "{} is over its write bandwidth (disk_io); {bytes} bytes would be due in {wait:?}, after this invocation's deadline",
                        who()
                    ),
                ));
            }
        }
        self.store
            .kv(&self.tenant, &namespace, op, self.quota)
            .await
    }
}

/// A deployment's policy decisions for outbound HTTP, at the exact address about to be used.
#[derive(Debug)]
pub struct DeploymentEgressPolicy {
    pub prepared: Arc<PreparedDeployment>,
    pub invocation_id: String,
}

impl palisade_egress::EgressPolicy for DeploymentEgressPolicy {
    fn authorize(
        &self,
        destination: &palisade_model::egress::Destination,
        ip: std::net::IpAddr,
        method: &str,
    ) -> Result<(), String> {
        let resource = Resource::Host(palisade_policy::Host {
            scheme: destination.scheme.clone(),
            hostname: destination.host.clone(),
            port: destination.port,
            path: destination.path.clone(),
            ip: Some(ip),
        });
        let context = CallContext {
            method: Some(method.to_owned()),
            invocation_id: Some(self.invocation_id.clone()),
            ..CallContext::now()
        };
        let decision = self
            .prepared
            .authorize(Action::HttpRequest, &resource, &context);
        if decision.allowed {
            return Ok(());
        }
        let reasons: Vec<String> = decision
            .reasons
            .iter()
            .map(|r| match (&r.policy, &r.message) {
                (Some(policy), _) => format!("{} `{policy}`", r.layer),
                (None, Some(message)) => format!("{}: {message}", r.layer),
                (None, None) => r.layer.clone(),
            })
            .collect();
        Err(format!("denied by policy ({})", reasons.join(", ")))
    }
}

/// A tenant's secrets, for credential injection.
#[derive(Debug)]
pub struct TenantSecrets {
    pub store: Store,
    pub tenant: String,
}

#[async_trait::async_trait]
impl palisade_egress::SecretSource for TenantSecrets {
    async fn secret(&self, name: &str) -> Result<Option<Vec<u8>>, String> {
        self.store
            .secret_value(&self.tenant, name)
            .await
            .map_err(|e| e.to_string())
    }
}

//! A deployment made ready under the policy that governs it: everything its invocations need
//! that does not change from one call to the next (limits, key-value quotas and grants, the
//! admission quota, outbound HTTP destinations and egress rules). The server builds one per
//! active deployment and caches it until the deployment or the policy changes; `palisade run`
//! builds one from the installed baseline (and `--policy`), so both apply the same limits.

use std::sync::Arc;

use palisade_model::{Limits, Manifest};
use palisade_policy::{EffectiveLimits, LimitKey, PolicyEngine, PreparedDeployment, TenantId};
use palisade_worker::ExtensionSource;

use crate::kv::{KvGrants, KvQuotas};

/// A tenant's admission limits, from its effective policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantQuota {
    /// Invocations per second (also the burst).
    pub rate: u64,
    /// Invocations in flight.
    pub concurrency: u64,
}

/// How the egress gateway treats a tenant's traffic, from its policy layers.
#[derive(Debug, Clone, Default)]
pub struct EgressSetup {
    pub allow_private: Vec<palisade_egress::Cidr>,
    pub credentials: Vec<palisade_egress::Credential>,
    pub tokens: Vec<palisade_egress::TokenGrant>,
    pub tls: Vec<palisade_egress::TlsExtra>,
}

/// One deployment (tenant, extension, version, component) under one policy engine.
#[derive(Debug)]
pub struct DeploymentPlan {
    pub tenant: TenantId,
    pub extension: String,
    pub version: String,
    pub source: ExtensionSource,
    /// The tenant's effective limits (baseline ∩ tenant layer).
    pub tenant_limits: EffectiveLimits,
    /// This deployment's (tenant ∩ manifest).
    pub effective: EffectiveLimits,
    /// What the runtime enforces per invocation.
    pub limits: Limits,
    pub quota: TenantQuota,
    pub kv: KvQuotas,
    /// The key-value namespaces the manifest requests and the policy grants.
    pub grants: Arc<KvGrants>,
    /// The deployment's decisions (outbound HTTP is decided per request, from these).
    pub prepared: Arc<PreparedDeployment>,
    /// The outbound HTTP destinations the manifest requests.
    pub http: Vec<palisade_model::egress::UrlPattern>,
    pub egress: EgressSetup,
}

impl DeploymentPlan {
    /// Plans `manifest` (the manifest of `source`) for `tenant` under `engine`.
    pub fn new(
        engine: &Arc<PolicyEngine>,
        tenant: TenantId,
        manifest: Manifest,
        source: ExtensionSource,
    ) -> Self {
        let extension = manifest.extension.name.to_string();
        let version = manifest.extension.version.to_string();
        let deployed = palisade_policy::Deployment::new(tenant.clone(), manifest);
        let tenant_limits = engine.tenant_limits(&tenant);
        let effective = engine.effective_limits(&deployed);
        let prepared = Arc::new(engine.prepare(&deployed));
        let grants = KvGrants::new(
            Arc::clone(&prepared),
            tenant.clone(),
            deployed.kv_namespaces(),
        );
        Self {
            extension,
            version,
            source,
            limits: effective.runtime(),
            quota: tenant_quota(&tenant_limits),
            kv: KvQuotas::new(&tenant_limits, &effective),
            grants: Arc::new(grants),
            prepared,
            http: deployed.manifest.capabilities.http_patterns(),
            egress: egress_setup(engine, &tenant),
            tenant_limits,
            effective,
            tenant,
        }
    }
}

/// A tenant's admission quota from its effective limits.
pub fn tenant_quota(limits: &EffectiveLimits) -> TenantQuota {
    TenantQuota {
        rate: limits.get(LimitKey::Rate),
        concurrency: limits.get(LimitKey::Concurrency),
    }
}

/// How the egress gateway treats `tenant`'s traffic: the baseline's private ranges and the
/// tenant layer's credentials, tokens and TLS extras.
pub fn egress_setup(engine: &PolicyEngine, tenant: &TenantId) -> EgressSetup {
    let allow_private = engine
        .baseline()
        .document()
        .egress
        .allow_private
        .iter()
        .filter_map(|cidr| palisade_egress::Cidr::parse(cidr))
        .collect();
    let rules = engine
        .layer(&palisade_policy::Scope::Tenant(tenant.clone()))
        .map(|layer| layer.document().egress.clone())
        .unwrap_or_default();
    EgressSetup {
        allow_private,
        credentials: rules
            .credentials
            .into_iter()
            .map(|r| palisade_egress::Credential {
                host: r.host,
                header: r.header,
                secret: r.secret,
                format: r.format,
            })
            .collect(),
        tokens: rules
            .tokens
            .into_iter()
            .map(|r| palisade_egress::TokenGrant {
                host: r.host,
                header: r.header,
                audience: r.audience,
                ttl: r.ttl.map_or(std::time::Duration::from_secs(60), |t| t.0),
            })
            .collect(),
        tls: rules
            .ca
            .into_iter()
            .map(|r| palisade_egress::TlsExtra::Ca {
                host: r.host,
                secret: r.secret,
            })
            .chain(
                rules
                    .client_certs
                    .into_iter()
                    .map(|r| palisade_egress::TlsExtra::ClientCert {
                        host: r.host,
                        cert_secret: r.cert_secret,
                        key_secret: r.key_secret,
                    }),
            )
            .collect(),
    }
}

/// Every tenant's worker-level limits under `engine` (`worker_memory`, `worker_cpu`), for the
/// executor to write into each tenant's cgroup.
pub fn worker_limits(engine: &PolicyEngine) -> palisade_worker::WorkerLimitTable {
    let of = |limits: EffectiveLimits| palisade_worker::WorkerLimits {
        memory_bytes: limits.get(LimitKey::WorkerMemory),
        cpu_millicores: limits.get(LimitKey::WorkerCpu),
    };
    palisade_worker::WorkerLimitTable {
        default: Some(of(engine.baseline_limits())),
        tenants: engine
            .tenants()
            .map(|tenant| (tenant.as_str().to_owned(), of(engine.tenant_limits(tenant))))
            .collect(),
    }
}

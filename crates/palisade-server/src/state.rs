//! The server's shared state: the store, the caches that keep the invoke path free of
//! database reads (tokens, tenant states, resolved deployments, the policy engine), admission,
//! the host (`palisade-host`: executor and host services) and metrics.
//!
//! Caches are invalidated by the handlers that change what they hold, in this process; a
//! multi-node deployment (PostgreSQL, later) will need cross-node invalidation. Each cache
//! carries a generation that every invalidation bumps: a fill that read the database before
//! an invalidation never installs its (stale) result, so a deploy, rollback, policy change or
//! suspension that lands during a cold resolve is never lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use palisade_api::{Deployment, ExtensionVersion, TenantState};
use palisade_host::{Admission, DeploymentPlan, Host};
use palisade_model::Manifest;
use palisade_policy::{EffectiveLimits, PolicyEngine, TenantId};
use palisade_store::Store;
use palisade_worker::ExtensionSource;

use crate::auth::TokenCache;
use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;

/// Server behaviour the operator chooses.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Versions must be approved by a platform reviewer before they can be deployed.
    pub require_review: bool,
}

/// An active deployment made ready to invoke: the deployment and version records, and its
/// plan (component verified when read from the artifact store, limits from the policy).
#[derive(Debug)]
pub struct Resolved {
    pub deployment: Deployment,
    pub version: ExtensionVersion,
    pub plan: DeploymentPlan,
}

type DeploymentKey = (String, String);

/// Everything handlers share.
#[derive(Debug)]
pub struct AppState {
    pub store: Store,
    pub settings: Settings,
    pub tokens: TokenCache,
    /// Runs invocations: the executor and the host services (store-backed key-value and
    /// secrets, the egress gateway, these metrics as its observer).
    pub host: Host,
    pub metrics: Arc<Metrics>,
    pub admission: Admission,
    /// The host's egress gateway, for the JWKS and signing-key rotation.
    pub gateway: Arc<palisade_egress::Gateway>,
    policy: RwLock<Arc<PolicyEngine>>,
    /// Held by a policy change from reading the stored head to installing the new engine.
    pub policy_writes: tokio::sync::Mutex<()>,
    tenants: Generational<HashMap<String, TenantState>>,
    deployments: Generational<HashMap<DeploymentKey, Arc<Resolved>>>,
    /// Set when shutdown starts: `/readyz` fails so load balancers stop sending work.
    pub draining: AtomicBool,
    /// Each tenant's host uid slot, shared with the jail launcher (set by `build_state`).
    pub tenant_uids: palisade_worker::jailed::TenantUids,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A cache map with a generation: [`Generational::invalidate`] bumps it under the lock, and
/// [`Generational::install`] installs a value read from the database only when no
/// invalidation happened since [`Generational::generation`] was taken before that read.
#[derive(Debug, Default)]
pub struct Generational<T> {
    map: Mutex<T>,
    generation: AtomicU64,
}

impl<T> Generational<T> {
    /// The generation to pass to `install` after reading from the database.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, T> {
        lock(&self.map)
    }

    /// Changes the map and bumps the generation, so fills that started before cannot install.
    pub fn invalidate(&self, change: impl FnOnce(&mut T)) {
        let mut map = lock(&self.map);
        change(&mut map);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Runs `fill` on the map if the generation is still `seen`; returns whether it ran.
    pub fn install(&self, seen: u64, fill: impl FnOnce(&mut T)) -> bool {
        let mut map = lock(&self.map);
        // Invalidations bump the generation while holding this lock, so the check and the
        // fill are atomic with respect to them.
        if self.generation.load(Ordering::Acquire) != seen {
            return false;
        }
        fill(&mut map);
        true
    }
}

impl AppState {
    /// `host`'s egress gateway is `gateway`, and its observer `metrics`.
    pub fn new(
        store: Store,
        settings: Settings,
        host: Host,
        metrics: Arc<Metrics>,
        admission: Admission,
        policy: PolicyEngine,
        gateway: Arc<palisade_egress::Gateway>,
    ) -> Self {
        host.executor()
            .set_worker_limits(palisade_host::plan::worker_limits(&policy));
        Self {
            store,
            settings,
            tokens: TokenCache::default(),
            host,
            metrics,
            admission,
            gateway,
            policy: RwLock::new(Arc::new(policy)),
            policy_writes: tokio::sync::Mutex::new(()),
            tenants: Generational::default(),
            deployments: Generational::default(),
            draining: AtomicBool::new(false),
            tenant_uids: palisade_worker::jailed::TenantUids::default(),
        }
    }

    pub fn policy(&self) -> Arc<PolicyEngine> {
        Arc::clone(
            &self
                .policy
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Installs a new policy engine; every resolved deployment is resolved again (its limits
    /// may have changed).
    pub fn set_policy(&self, engine: PolicyEngine) {
        self.host
            .executor()
            .set_worker_limits(palisade_host::plan::worker_limits(&engine));
        *self
            .policy
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(engine);
        self.deployments.invalidate(HashMap::clear);
    }

    /// The tenant's state, or `None` if it does not exist.
    pub async fn tenant_state(&self, tenant: &str) -> ApiResult<Option<TenantState>> {
        if let Some(state) = self.tenants.lock().get(tenant) {
            return Ok(Some(*state));
        }
        let seen = self.tenants.generation();
        let Some(found) = self.store.tenant(tenant).await? else {
            return Ok(None);
        };
        let state = found.state;
        self.tenants.install(seen, |tenants| {
            tenants.insert(found.id, state);
        });
        Ok(Some(state))
    }

    pub fn tenant_changed(&self, tenant: &str, state: TenantState) {
        self.tenants.invalidate(|tenants| {
            tenants.insert(tenant.to_owned(), state);
        });
    }

    /// Fails with `404` unless the tenant exists.
    pub async fn require_tenant(&self, tenant: &str) -> ApiResult<TenantState> {
        self.tenant_state(tenant)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("tenant {tenant}")))
    }

    /// Fails with `404` unless the tenant exists, and `409` when it is decommissioned (nothing
    /// more can be published, deployed or stored for it).
    pub async fn require_open_tenant(&self, tenant: &str) -> ApiResult<TenantState> {
        match self.require_tenant(tenant).await? {
            TenantState::Decommissioned => Err(ApiError::conflict(format!(
                "tenant {tenant} is decommissioned"
            ))),
            state => Ok(state),
        }
    }

    pub fn deployment_changed(&self, tenant: &str, name: &str) {
        self.deployments.invalidate(|deployments| {
            deployments.remove(&(tenant.to_owned(), name.to_owned()));
        });
    }

    /// The tenant-wide limits from the effective policy (baseline ∩ tenant policy).
    pub fn tenant_limits(&self, tenant: &str) -> ApiResult<EffectiveLimits> {
        let tenant = TenantId::new(tenant).map_err(|e| ApiError::invalid(e.to_string()))?;
        Ok(self.policy().tenant_limits(&tenant))
    }

    /// The active deployment of `tenant/name`, ready to invoke.
    pub async fn resolve(&self, tenant: &str, name: &str) -> ApiResult<Arc<Resolved>> {
        let key = (tenant.to_owned(), name.to_owned());
        if let Some(resolved) = self.deployments.lock().get(&key) {
            return Ok(Arc::clone(resolved));
        }
        let seen = self.deployments.generation();
        let deployment = self
            .store
            .active_deployment(tenant, name)
            .await?
            .ok_or_else(|| {
                ApiError::not_found(format!("an active deployment of {tenant}/{name}"))
            })?;
        let version = self
            .store
            .version(tenant, name, &deployment.version)
            .await?
            .ok_or_else(|| {
                ApiError::internal(format!(
                    "deployment {} names {tenant}/{name}@{}, which is not stored",
                    deployment.seq, deployment.version
                ))
            })?;
        let wasm = self.store.artifact(&version.component_sha256).await?;
        let manifest = Manifest::parse(&version.manifest).map_err(|e| {
            ApiError::internal(format!(
                "the stored manifest of {tenant}/{name} is invalid: {e}"
            ))
        })?;
        let tenant_id = TenantId::new(tenant).map_err(|e| ApiError::internal(e.to_string()))?;
        let source = ExtensionSource::new(version.manifest.clone(), wasm);
        let resolved = Arc::new(Resolved {
            plan: DeploymentPlan::new(&self.policy(), tenant_id, manifest, source),
            deployment,
            version,
        });
        self.deployments.install(seen, |deployments| {
            deployments.insert(key, Arc::clone(&resolved));
        });
        Ok(resolved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fill_that_started_before_an_invalidation_never_installs() {
        let cache: Generational<HashMap<&str, u32>> = Generational::default();
        // A cold resolve takes the generation, then reads v1 from the database...
        let seen = cache.generation();
        // ...while a deploy of v2 lands and invalidates the entry.
        cache.invalidate(|map| {
            map.remove("ext");
        });
        // The stale v1 must not be installed.
        assert!(!cache.install(seen, |map| {
            map.insert("ext", 1);
        }));
        assert!(cache.lock().get("ext").is_none());
        // A fill that started after the invalidation installs.
        let seen = cache.generation();
        assert!(cache.install(seen, |map| {
            map.insert("ext", 2);
        }));
        assert_eq!(cache.lock().get("ext"), Some(&2));
    }
}

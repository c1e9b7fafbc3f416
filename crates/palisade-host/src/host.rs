//! [`Host`]: the one invocation path. A front end turns its input into a
//! [`DeploymentPlan`] and an [`InvocationRequest`]; the host admits nothing and stores
//! nothing itself (admission and resolution are the caller's, for now), it assembles the
//! invocation's host calls from its [`Services`], runs it on its [`Executor`] under the plan's
//! limits and reports it to its [`InvocationEvents`] observer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_egress::{Cidr, Gateway, NoPolicyLayers};
use palisade_model::{InvocationError, InvocationRequest, Outcome};
use palisade_policy::LimitKey;
use palisade_worker::ExtensionSource;

use crate::calls::GuestCalls;
use crate::events::InvocationEvents;
use crate::executor::Executor;
use crate::http::{DeploymentEgressPolicy, SecretBackend, TenantSecrets};
use crate::kv::{KvBackend, KvRates};
use crate::plan::DeploymentPlan;

/// Whose decisions outbound HTTP is held to, besides the manifest's destinations and the
/// gateway's own address checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressDecisions {
    /// Every policy layer's Cedar rules, at the exact address about to be used (servers).
    Policy,
    /// The manifest's destinations only (local runs: `palisade policy explain` answers for
    /// the layers).
    ManifestOnly,
}

/// Outbound HTTP for the host's invocations.
#[derive(Debug, Clone)]
pub struct EgressService {
    pub gateway: Arc<Gateway>,
    pub decisions: EgressDecisions,
    /// Private ranges reachable beyond the policy's own (`palisade run --egress-allow-private`).
    pub allow_private: Vec<Cidr>,
}

/// Where the host's capabilities come from.
#[derive(Debug, Clone)]
pub struct Services {
    pub kv: Arc<dyn KvBackend>,
    pub secrets: Arc<dyn SecretBackend>,
    /// `None`: outbound HTTP fails with `egress_unavailable`, saying [`Services::egress_off`].
    pub egress: Option<EgressService>,
    pub egress_off: &'static str,
    pub events: Arc<dyn InvocationEvents>,
}

/// Runs invocations: one per call to [`Host::invoke`], under a plan's limits.
#[derive(Debug)]
pub struct Host {
    executor: Arc<Executor>,
    services: Services,
    kv_rates: KvRates,
}

/// How long before the deadline rate quotas stop waiting, so the guest still has time to
/// handle the refusal: a tenth of the deadline, at most 100 ms.
pub fn quota_deadline(start: tokio::time::Instant, wall_time: Duration) -> tokio::time::Instant {
    start + wall_time - (wall_time / 10).min(Duration::from_millis(100))
}

impl Host {
    pub fn new(executor: Arc<Executor>, services: Services) -> Self {
        Self {
            executor,
            services,
            kv_rates: KvRates::default(),
        }
    }

    pub fn executor(&self) -> &Arc<Executor> {
        &self.executor
    }

    pub fn services(&self) -> &Services {
        &self.services
    }

    /// Compiles and checks `source` where `tenant`'s invocations will run it.
    pub async fn validate(
        &self,
        tenant: &str,
        source: &ExtensionSource,
    ) -> Result<(), InvocationError> {
        self.executor.validate(tenant, source).await
    }

    /// Runs one invocation of `plan`'s deployment.
    pub async fn invoke(
        &self,
        plan: &DeploymentPlan,
        invocation_id: &str,
        request: InvocationRequest,
    ) -> Outcome {
        let tenant = plan.tenant.as_str();
        let span = tracing::info_span!("invocation", %invocation_id, tenant,
            extension = %plan.extension, version = %plan.version);
        let calls = self.calls(plan, invocation_id);
        let started = Instant::now();
        let outcome = tracing::Instrument::instrument(
            self.executor
                .invoke(tenant, &plan.source, request, &plan.limits, calls),
            span.clone(),
        )
        .await;
        self.services.events.invocation(
            tenant,
            &plan.extension,
            &plan.version,
            &outcome,
            started.elapsed().as_secs_f64(),
        );
        span.in_scope(|| log_outcome(&outcome));
        outcome
    }

    /// The host calls of one invocation of `plan`.
    fn calls(&self, plan: &DeploymentPlan, invocation_id: &str) -> Arc<GuestCalls> {
        let tenant = plan.tenant.as_str();
        let limits = &plan.limits;
        let deadline = quota_deadline(tokio::time::Instant::now(), limits.wall_time);
        let egress = self.services.egress.as_ref().map(|service| {
            let policy: Arc<dyn palisade_egress::EgressPolicy> = match service.decisions {
                EgressDecisions::Policy => Arc::new(DeploymentEgressPolicy {
                    prepared: Arc::clone(&plan.prepared),
                    invocation_id: invocation_id.to_owned(),
                }),
                EgressDecisions::ManifestOnly => Arc::new(NoPolicyLayers),
            };
            let rules = &plan.egress;
            let invocation = palisade_egress::Invocation::new(palisade_egress::InvocationSpec {
                tenant: tenant.to_owned(),
                extension: plan.extension.clone(),
                version: plan.version.clone(),
                invocation_id: invocation_id.to_owned(),
                patterns: plan.http.clone(),
                policy,
                secrets: Arc::new(TenantSecrets {
                    backend: Arc::clone(&self.services.secrets),
                    tenant: tenant.to_owned(),
                }),
                credentials: rules.credentials.clone(),
                tokens: rules.tokens.clone(),
                tls: rules.tls.clone(),
                allow_private: rules
                    .allow_private
                    .iter()
                    .chain(&service.allow_private)
                    .cloned()
                    .collect(),
                max_requests: plan.effective.get(LimitKey::EgressRequests),
                max_bytes: plan.effective.get(LimitKey::EgressBytes),
                deadline,
                request_timeout: Duration::from_micros(
                    plan.tenant_limits.get(LimitKey::EgressTimeout),
                ),
                bandwidth: plan.tenant_limits.get(LimitKey::Bandwidth),
                connections: plan.tenant_limits.get(LimitKey::EgressConnections),
            });
            (Arc::clone(&service.gateway), invocation)
        });
        let kv = plan.kv;
        Arc::new(GuestCalls {
            kv: Arc::clone(&self.services.kv),
            tenant: tenant.to_owned(),
            extension: plan.extension.clone(),
            grants: Arc::clone(&plan.grants),
            quota: kv.stored,
            ops_left: std::sync::atomic::AtomicU64::new(kv.ops),
            rates: self
                .kv_rates
                .for_owner(tenant, kv.tenant_rates.0, kv.tenant_rates.1),
            extension_rates: (kv.extension_rates != kv.tenant_rates).then(|| {
                self.kv_rates.for_owner(
                    &format!("{tenant}/{}", plan.extension),
                    kv.extension_rates.0,
                    kv.extension_rates.1,
                )
            }),
            deadline,
            egress,
            egress_off: self.services.egress_off,
            events: Arc::clone(&self.services.events),
        })
    }

    pub async fn shutdown(&self) {
        self.executor.shutdown().await;
    }
}

fn log_outcome(outcome: &Outcome) {
    // Guest text only ever goes in a quoted field (`line="..."`), never the message: in the
    // text format it cannot put `level=error ...` or fake fields ahead of the real ones.
    for entry in &outcome.logs {
        tracing::info!(
            target: "palisade::guest",
            level = ?entry.level,
            source = ?entry.source,
            elapsed_us = entry.elapsed_us,
            line = ?entry.message,
            "guest log"
        );
    }
    match &outcome.result {
        Ok(_) => tracing::info!(
            fuel = outcome.usage.fuel_consumed,
            wall_time_us = outcome.usage.wall_time_us,
            isolation = ?outcome.isolation.mode,
            "invocation succeeded"
        ),
        Err(error) => {
            tracing::warn!(kind = %error.kind, message = %error.message, "invocation failed")
        }
    }
}

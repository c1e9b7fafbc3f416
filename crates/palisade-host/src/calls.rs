//! One invocation's host calls, answered outside the worker: key-value state and outbound
//! HTTP. Everything the worker sends is checked again here. For key-value calls: the key and
//! value rules, that the manifest requests the namespace and the policy grants it (read or
//! write), the invocation's `kv_ops`, the tenant's rate (`kv_rate`) and write bandwidth
//! (`disk_io`), then the backend holds the key and byte quotas in the write's own critical
//! section. Rate quotas slow a caller down within its deadline before they refuse it.
//! Outbound HTTP goes to the egress gateway with this invocation's policy, secrets and budgets.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use palisade_egress::Gateway;
use palisade_egress::bucket::take_by;
use palisade_model::egress::{EgressError, EgressErrorKind, HttpRequest, HttpResponse};
use palisade_model::kv::{KvError, KvErrorKind, KvOp, KvQuota, KvReply, resolve_namespace};
use palisade_policy::Action;
use palisade_runtime::HostCalls;

use crate::events::InvocationEvents;
use crate::kv::{KvBackend, KvGrants, TenantRates};

/// One invocation's host calls.
pub struct GuestCalls {
    pub(crate) kv: Arc<dyn KvBackend>,
    pub(crate) tenant: String,
    pub(crate) extension: String,
    pub(crate) grants: Arc<KvGrants>,
    pub(crate) quota: KvQuota,
    pub(crate) ops_left: AtomicU64,
    /// The tenant's `kv_rate` and `disk_io` buckets, shared by all its extensions.
    pub(crate) rates: Arc<TenantRates>,
    /// This extension's own, within the tenant's, when its manifest asks for less.
    pub(crate) extension_rates: Option<Arc<TenantRates>>,
    pub(crate) deadline: tokio::time::Instant,
    /// The gateway and this invocation's egress context; `None`: outbound HTTP is off here.
    pub(crate) egress: Option<(Arc<Gateway>, palisade_egress::Invocation)>,
    /// Why outbound HTTP is off, when it is.
    pub(crate) egress_off: &'static str,
    pub(crate) events: Arc<dyn InvocationEvents>,
}

impl std::fmt::Debug for GuestCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestCalls")
            .field("tenant", &self.tenant)
            .field("extension", &self.extension)
            .finish_non_exhaustive()
    }
}

fn denied(message: String) -> KvError {
    KvError::new(KvErrorKind::Denied, message)
}

#[async_trait::async_trait]
impl HostCalls for GuestCalls {
    async fn http(&self, request: HttpRequest) -> Result<HttpResponse, EgressError> {
        let Some((gateway, invocation)) = &self.egress else {
            return Err(EgressError::new(
                EgressErrorKind::Unavailable,
                format!("{} ({} {})", self.egress_off, request.method, request.url),
            ));
        };
        let sent = request.body.len() as u64;
        let result = gateway.send(invocation, request).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(error) => error.kind.as_str(),
        };
        let received = result.as_ref().map_or(0, |r| r.body.len() as u64);
        self.events.egress(&self.tenant, outcome, sent, received);
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
        self.kv.kv(&self.tenant, &namespace, op, self.quota).await
    }
}

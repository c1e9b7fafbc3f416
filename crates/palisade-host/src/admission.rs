//! Admission control for invocations: per tenant, a token bucket (its `rate` limit) and a
//! concurrency cap (its `concurrency` limit) with a short bounded queue; over all tenants, a
//! cap on invocations in flight with its own bounded queue. A call that cannot be admitted
//! is answered at once with a typed, retryable error (`rate_limited` 429 or `overloaded` 503,
//! with `Retry-After`), so a flood costs the server a table lookup per call, never memory or
//! latency that grows without bound, and never another tenant's capacity.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use palisade_egress::TokenBucket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use crate::plan::TenantQuota;

/// The global side of admission.
#[derive(Debug, Clone)]
pub struct AdmissionConfig {
    /// Invocations in flight over all tenants.
    pub max_in_flight: usize,
    /// Invocations waiting for a global slot.
    pub max_queued: usize,
    /// How long a call waits for a slot (its tenant's or the global one) before it is shed.
    pub queue_timeout: Duration,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 64,
            max_queued: 128,
            queue_timeout: Duration::from_millis(500),
        }
    }
}

/// A call that was not admitted: why (for metrics), what to tell the caller, and when a
/// retry may succeed. `Rate` and `Concurrency` are the tenant's own quota (`rate_limited`),
/// `Overloaded` the whole host's capacity (`overloaded`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    pub reason: Rejection,
    pub message: String,
    pub retry_after: Duration,
}

/// Why a call was not admitted, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Rate,
    Concurrency,
    Overloaded,
}

impl Rejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rate => "rate",
            Self::Concurrency => "concurrency",
            Self::Overloaded => "overloaded",
        }
    }
}

#[derive(Debug)]
struct TenantGate {
    quota: TenantQuota,
    bucket: TokenBucket,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
}

impl TenantGate {
    fn new(quota: TenantQuota, ceiling: usize) -> Self {
        Self {
            quota,
            bucket: TokenBucket::new(quota.rate),
            slots: Arc::new(Semaphore::new(clamp(quota.concurrency).min(ceiling))),
            waiting: AtomicUsize::new(0),
        }
    }
}

/// The most invocations one tenant may have in flight, whatever its policy says: strictly
/// below the global cap (three quarters of it), so one tenant can never take every global
/// slot and shut the others out.
pub fn tenant_ceiling(max_in_flight: usize) -> usize {
    let max_in_flight = max_in_flight.max(1);
    if max_in_flight == 1 {
        return 1;
    }
    (max_in_flight - (max_in_flight / 4).max(1)).max(1)
}

fn clamp(value: u64) -> usize {
    usize::try_from(value)
        .unwrap_or(usize::MAX)
        .clamp(1, Semaphore::MAX_PERMITS)
}

/// An admitted call: holds its tenant and global slots until dropped.
#[derive(Debug)]
pub struct Admitted {
    _tenant: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
}

/// Admission for every tenant.
#[derive(Debug)]
pub struct Admission {
    config: AdmissionConfig,
    global: Arc<Semaphore>,
    global_waiting: AtomicUsize,
    tenants: Mutex<HashMap<String, Arc<TenantGate>>>,
}

/// Counts a waiter for as long as it waits.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    pub fn new(config: AdmissionConfig) -> Self {
        Self {
            global: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            global_waiting: AtomicUsize::new(0),
            config,
            tenants: Mutex::default(),
        }
    }

    fn gate(&self, tenant: &str, quota: TenantQuota) -> Arc<TenantGate> {
        let mut tenants = self
            .tenants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match tenants.get(tenant) {
            Some(gate) if gate.quota == quota => Arc::clone(gate),
            // A new tenant or a changed policy: a fresh gate. Calls holding slots of the old
            // one finish against it.
            _ => {
                let gate = Arc::new(TenantGate::new(
                    quota,
                    tenant_ceiling(self.config.max_in_flight),
                ));
                tenants.insert(tenant.to_owned(), Arc::clone(&gate));
                gate
            }
        }
    }

    /// Admits one invocation of `tenant`, or says why not.
    pub async fn admit(&self, tenant: &str, quota: TenantQuota) -> Result<Admitted, Refused> {
        let gate = self.gate(tenant, quota);
        if let Err(wait) = gate.bucket.take(1, Instant::now()) {
            return Err(Refused {
                reason: Rejection::Rate,
                message: format!(
                    "tenant {tenant} is over its rate of {} invocations per second",
                    quota.rate
                ),
                retry_after: wait,
            });
        }
        let tenant_slot = match Arc::clone(&gate.slots).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let concurrency_error = || Refused {
                    reason: Rejection::Concurrency,
                    message: format!(
                        "tenant {tenant} has {} invocations in flight, its concurrency limit",
                        quota.concurrency
                    ),
                    retry_after: Duration::from_secs(1),
                };
                let queue = clamp(quota.concurrency).min(tenant_ceiling(self.config.max_in_flight));
                if gate.waiting.fetch_add(1, Ordering::AcqRel) >= queue {
                    gate.waiting.fetch_sub(1, Ordering::AcqRel);
                    return Err(concurrency_error());
                }
                let _waiting = Waiting(&gate.waiting);
                match tokio::time::timeout(
                    self.config.queue_timeout,
                    Arc::clone(&gate.slots).acquire_owned(),
                )
                .await
                {
                    Ok(Ok(permit)) => permit,
                    _ => return Err(concurrency_error()),
                }
            }
        };
        let global_slot = match Arc::clone(&self.global).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let overloaded = || Refused {
                    reason: Rejection::Overloaded,
                    message: "the server is running as many invocations as it can; retry shortly"
                        .to_owned(),
                    retry_after: Duration::from_secs(1),
                };
                if self.global_waiting.fetch_add(1, Ordering::AcqRel) >= self.config.max_queued {
                    self.global_waiting.fetch_sub(1, Ordering::AcqRel);
                    return Err(overloaded());
                }
                let _waiting = Waiting(&self.global_waiting);
                match tokio::time::timeout(
                    self.config.queue_timeout,
                    Arc::clone(&self.global).acquire_owned(),
                )
                .await
                {
                    Ok(Ok(permit)) => permit,
                    _ => return Err(overloaded()),
                }
            }
        };
        Ok(Admitted {
            _tenant: tenant_slot,
            _global: global_slot,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(rate: u64, concurrency: u64) -> TenantQuota {
        TenantQuota { rate, concurrency }
    }

    #[tokio::test]
    async fn the_rate_is_a_token_bucket_per_tenant() {
        let admission = Admission::new(AdmissionConfig::default());
        let mut admitted = Vec::new();
        for _ in 0..5 {
            admitted.push(admission.admit("acme", quota(5, 100)).await.ok());
        }
        assert!(admitted.iter().all(Option::is_some));
        let refused = admission.admit("acme", quota(5, 100)).await.err();
        let refused = refused.unwrap_or_else(|| panic!("the sixth call was admitted"));
        assert_eq!(refused.reason, Rejection::Rate);
        assert!(refused.retry_after <= Duration::from_millis(200));
        // Another tenant is untouched.
        assert!(admission.admit("globex", quota(5, 100)).await.is_ok());
    }

    #[tokio::test]
    async fn one_tenant_never_holds_every_global_slot() {
        let admission = Admission::new(AdmissionConfig {
            max_in_flight: 4,
            queue_timeout: Duration::from_millis(20),
            ..Default::default()
        });
        // The tenant's policy allows 64 at once; the server has 4 slots in all.
        let mut held = Vec::new();
        while let Ok(admitted) = admission.admit("greedy", quota(1000, 64)).await {
            held.push(admitted);
            assert!(held.len() <= 4, "admitted past the global cap");
        }
        assert_eq!(held.len(), tenant_ceiling(4));
        assert!(held.len() < 4);
        // Another tenant still gets in.
        assert!(admission.admit("quiet", quota(1000, 64)).await.is_ok());
        assert_eq!(tenant_ceiling(1), 1);
        assert_eq!(tenant_ceiling(64), 48);
    }

    #[tokio::test]
    async fn concurrency_waits_briefly_then_sheds() {
        let admission = Admission::new(AdmissionConfig {
            queue_timeout: Duration::from_millis(20),
            ..Default::default()
        });
        let held = admission.admit("acme", quota(100, 1)).await.ok();
        assert!(held.is_some());
        let refused = admission.admit("acme", quota(100, 1)).await.err();
        assert_eq!(refused.map(|r| r.reason), Some(Rejection::Concurrency));
        drop(held);
        assert!(admission.admit("acme", quota(100, 1)).await.is_ok());
    }

    #[tokio::test]
    async fn the_global_cap_sheds_with_overloaded() {
        let admission = Admission::new(AdmissionConfig {
            max_in_flight: 1,
            max_queued: 0,
            queue_timeout: Duration::from_millis(20),
        });
        let held = admission.admit("acme", quota(100, 10)).await.ok();
        assert!(held.is_some());
        let refused = admission.admit("globex", quota(100, 10)).await.err();
        let refused = refused.unwrap_or_else(|| panic!("admitted over the global cap"));
        assert_eq!(refused.reason, Rejection::Overloaded);
    }
}

//! `/metrics`: invocations by tenant, extension, version and outcome kind; latency, fuel and
//! peak-memory histograms; admissions refused by reason; HTTP requests by route and status;
//! worker starts, evictions and crashes. Label cardinality is bounded: only the first
//! `max_tenant_labels` tenants seen get their own label (later ones are `_other`, and with 0
//! no tenant or extension label is kept), so a platform with many tenants cannot blow up the
//! time-series database.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use palisade_model::Outcome;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use palisade_host::Executor;

/// The label value of tenants beyond the cap.
pub const OTHER: &str = "_other";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InvocationLabels {
    tenant: String,
    extension: String,
    version: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExtensionLabels {
    tenant: String,
    extension: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectionLabels {
    tenant: String,
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EgressLabels {
    tenant: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    tenant: String,
    direction: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: String,
    status: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs to ~52 s.
    Histogram::new(exponential_buckets(0.000_1, 2.0, 20))
}

fn fuel_histogram() -> Histogram {
    // 1,000 to ~10^10 instructions.
    Histogram::new(exponential_buckets(1_000.0, 4.0, 12))
}

fn memory_histogram() -> Histogram {
    // 64 KiB to 2 GiB.
    Histogram::new(exponential_buckets(65_536.0, 2.0, 16))
}

/// Decides which tenants get their own label.
#[derive(Debug)]
struct TenantLabels {
    max: usize,
    seen: Mutex<HashSet<String>>,
}

impl TenantLabels {
    fn label(&self, tenant: &str) -> String {
        if self.max == 0 {
            return OTHER.into();
        }
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.contains(tenant) {
            return tenant.to_owned();
        }
        if seen.len() < self.max {
            seen.insert(tenant.to_owned());
            return tenant.to_owned();
        }
        OTHER.into()
    }
}

/// Every metric the server exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    tenants: TenantLabels,
    invocations: Family<InvocationLabels, Counter>,
    latency: HistogramFamily<ExtensionLabels>,
    fuel: HistogramFamily<ExtensionLabels>,
    memory: HistogramFamily<ExtensionLabels>,
    rejected: Family<RejectionLabels, Counter>,
    http: Family<HttpLabels, Counter>,
    egress: Family<EgressLabels, Counter>,
    egress_bytes: Family<DirectionLabels, Counter>,
}

/// Reads the worker pool's counters at each scrape.
#[derive(Debug)]
struct PoolCollector(Arc<Executor>);

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(pool) = self.0.pool_snapshot() else {
            return Ok(());
        };
        for (name, help, value) in [
            (
                "palisade_workers_started",
                "Worker processes started.",
                pool.started,
            ),
            (
                "palisade_workers_evicted",
                "Idle worker processes evicted (least recently used first).",
                pool.evicted,
            ),
            (
                "palisade_workers_crashed",
                "Worker processes that died (crash, OOM kill, seccomp kill, protocol violation, deadline kill).",
                pool.crashed,
            ),
        ] {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        let live = ConstGauge::new(i64::try_from(pool.live.len()).unwrap_or(i64::MAX));
        let metric = encoder.encode_descriptor(
            "palisade_workers_live",
            "Worker processes alive now.",
            None,
            live.metric_type(),
        )?;
        live.encode(metric)
    }
}

impl Metrics {
    pub fn new(max_tenant_labels: usize, executor: Arc<Executor>) -> Self {
        let mut registry = Registry::default();
        let invocations = Family::<InvocationLabels, Counter>::default();
        registry.register(
            "palisade_invocations",
            "Invocations by tenant, extension, version and outcome (`ok` or the error kind).",
            invocations.clone(),
        );
        let latency = HistogramFamily::<ExtensionLabels>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "palisade_invocation_duration_seconds",
            "Wall time of invocations as the server saw them (admission to answer).",
            latency.clone(),
        );
        let fuel = HistogramFamily::<ExtensionLabels>::new_with_constructor(
            fuel_histogram as fn() -> Histogram,
        );
        registry.register(
            "palisade_invocation_fuel",
            "Fuel (wasm instructions) consumed per invocation.",
            fuel.clone(),
        );
        let memory = HistogramFamily::<ExtensionLabels>::new_with_constructor(
            memory_histogram as fn() -> Histogram,
        );
        registry.register(
            "palisade_invocation_peak_memory_bytes",
            "Peak linear memory per invocation.",
            memory.clone(),
        );
        let rejected = Family::<RejectionLabels, Counter>::default();
        registry.register(
            "palisade_admissions_rejected",
            "Invocations refused before running, by reason (rate, concurrency, overloaded, suspended).",
            rejected.clone(),
        );
        let http = Family::<HttpLabels, Counter>::default();
        registry.register(
            "palisade_http_requests",
            "HTTP requests by route template, method and status.",
            http.clone(),
        );
        let egress = Family::<EgressLabels, Counter>::default();
        registry.register(
            "palisade_egress_requests",
            "Outbound HTTP requests through the egress gateway, by tenant and outcome (`ok` or the refusal kind).",
            egress.clone(),
        );
        let egress_bytes = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "palisade_egress_bytes",
            "Bytes through the egress gateway (request bodies sent, response bodies received), by tenant.",
            egress_bytes.clone(),
        );
        registry.register_collector(Box::new(PoolCollector(executor)));
        Self {
            registry,
            tenants: TenantLabels {
                max: max_tenant_labels,
                seen: Mutex::default(),
            },
            invocations,
            latency,
            fuel,
            memory,
            rejected,
            http,
            egress,
            egress_bytes,
        }
    }

    fn extension_labels(&self, tenant: &str, extension: &str) -> ExtensionLabels {
        let tenant = self.tenants.label(tenant);
        let extension = if tenant == OTHER {
            OTHER.to_owned()
        } else {
            extension.to_owned()
        };
        ExtensionLabels { tenant, extension }
    }

    pub fn record_http(&self, route: &str, method: &str, status: u16) {
        self.http
            .get_or_create(&HttpLabels {
                route: route.to_owned(),
                method: method.to_owned(),
                status: status.to_string(),
            })
            .inc();
    }

    /// The text exposition (OpenMetrics 1.0, which Prometheus scrapes).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

impl palisade_host::InvocationEvents for Metrics {
    fn invocation(
        &self,
        tenant: &str,
        extension: &str,
        version: &str,
        outcome: &Outcome,
        seconds: f64,
    ) {
        let labels = self.extension_labels(tenant, extension);
        let kind = match &outcome.result {
            Ok(_) => "ok".to_owned(),
            Err(error) => error.kind.as_str().to_owned(),
        };
        let version = if labels.tenant == OTHER {
            OTHER.to_owned()
        } else {
            version.to_owned()
        };
        self.invocations
            .get_or_create(&InvocationLabels {
                tenant: labels.tenant.clone(),
                extension: labels.extension.clone(),
                version,
                outcome: kind,
            })
            .inc();
        self.latency.get_or_create(&labels).observe(seconds);
        self.fuel
            .get_or_create(&labels)
            .observe(outcome.usage.fuel_consumed as f64);
        self.memory
            .get_or_create(&labels)
            .observe(outcome.usage.peak_memory_bytes as f64);
    }

    fn rejected(&self, tenant: &str, reason: &str) {
        self.rejected
            .get_or_create(&RejectionLabels {
                tenant: self.tenants.label(tenant),
                reason: reason.to_owned(),
            })
            .inc();
    }

    fn egress(&self, tenant: &str, outcome: &str, sent: u64, received: u64) {
        let tenant = self.tenants.label(tenant);
        self.egress
            .get_or_create(&EgressLabels {
                tenant: tenant.clone(),
                outcome: outcome.to_owned(),
            })
            .inc();
        for (direction, bytes) in [("sent", sent), ("received", received)] {
            self.egress_bytes
                .get_or_create(&DirectionLabels {
                    tenant: tenant.clone(),
                    direction: direction.into(),
                })
                .inc_by(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_labels_are_capped() {
        let labels = TenantLabels {
            max: 2,
            seen: Mutex::default(),
        };
        assert_eq!(labels.label("a"), "a");
        assert_eq!(labels.label("b"), "b");
        assert_eq!(labels.label("c"), OTHER);
        assert_eq!(labels.label("a"), "a");
        let none = TenantLabels {
            max: 0,
            seen: Mutex::default(),
        };
        assert_eq!(none.label("a"), OTHER);
    }
}

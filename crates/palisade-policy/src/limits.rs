//! Limits as policy data: one key per enforced limit, the partial set each layer writes, and
//! the intersection every invocation and tenant is held to.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use palisade_model::limits::WASM_PAGE;
use palisade_model::units::{ByteSize, DurationSpec};
use palisade_model::{Limits, RequestedLimits};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::error::{Location, PolicyError};

/// Every limit a policy can set. The first seven are the per-invocation runtime limits of a
/// manifest; the rest are enforced by the egress, state and worker layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKey {
    /// Instruction budget per invocation.
    Fuel,
    /// Wall-clock deadline per invocation (stored in microseconds).
    WallTime,
    /// Linear memory per invocation, bytes.
    Memory,
    /// Response body per invocation, bytes.
    Output,
    /// Log bytes per invocation.
    Logs,
    /// Log messages per invocation.
    LogLines,
    /// Request body per invocation, bytes.
    Input,
    /// Outbound HTTP requests per invocation.
    EgressRequests,
    /// Outbound HTTP bytes (sent + received) per invocation.
    EgressBytes,
    /// Time one outbound request may take, start to last byte.
    EgressTimeout,
    /// Outbound connections open at once, per tenant.
    EgressConnections,
    /// Key-value keys per tenant.
    KvKeys,
    /// Key-value bytes stored per tenant.
    KvBytes,
    /// Key-value operations per invocation.
    KvOps,
    /// Key-value operations per second, per tenant (calls over it wait, then fail).
    KvRate,
    /// Invocations per second per tenant.
    Rate,
    /// Concurrent invocations per tenant.
    Concurrency,
    /// Network bandwidth per tenant, bytes per second.
    Bandwidth,
    /// Disk I/O of the tenant's worker, bytes per second.
    DiskIo,
    /// CPU of the tenant's worker, millicores (1000 = one core).
    WorkerCpu,
    /// Memory of the tenant's worker, bytes.
    WorkerMemory,
}

/// How a limit's value is read and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Bytes,
    Micros,
    PerSecond,
    BytesPerSecond,
    Millicores,
}

impl LimitKey {
    pub const ALL: [Self; 21] = [
        Self::Fuel,
        Self::WallTime,
        Self::Memory,
        Self::Output,
        Self::Logs,
        Self::LogLines,
        Self::Input,
        Self::EgressRequests,
        Self::EgressBytes,
        Self::EgressTimeout,
        Self::EgressConnections,
        Self::KvKeys,
        Self::KvBytes,
        Self::KvOps,
        Self::KvRate,
        Self::Rate,
        Self::Concurrency,
        Self::Bandwidth,
        Self::DiskIo,
        Self::WorkerCpu,
        Self::WorkerMemory,
    ];

    /// The key as written in a policy's `[limits]` table.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fuel => "fuel",
            Self::WallTime => "wall_time",
            Self::Memory => "memory",
            Self::Output => "output",
            Self::Logs => "logs",
            Self::LogLines => "log_lines",
            Self::Input => "input",
            Self::EgressRequests => "egress_requests",
            Self::EgressBytes => "egress_bytes",
            Self::EgressTimeout => "egress_timeout",
            Self::EgressConnections => "egress_connections",
            Self::KvKeys => "kv_keys",
            Self::KvBytes => "kv_bytes",
            Self::KvOps => "kv_ops",
            Self::KvRate => "kv_rate",
            Self::Rate => "rate",
            Self::Concurrency => "concurrency",
            Self::Bandwidth => "bandwidth",
            Self::DiskIo => "disk_io",
            Self::WorkerCpu => "worker_cpu",
            Self::WorkerMemory => "worker_memory",
        }
    }

    pub fn unit(self) -> Unit {
        match self {
            Self::Fuel
            | Self::LogLines
            | Self::EgressRequests
            | Self::EgressConnections
            | Self::KvKeys
            | Self::KvOps
            | Self::Concurrency => Unit::Count,
            Self::WallTime | Self::EgressTimeout => Unit::Micros,
            Self::Memory
            | Self::Output
            | Self::Logs
            | Self::Input
            | Self::EgressBytes
            | Self::KvBytes
            | Self::WorkerMemory => Unit::Bytes,
            Self::Rate | Self::KvRate => Unit::PerSecond,
            Self::Bandwidth | Self::DiskIo => Unit::BytesPerSecond,
            Self::WorkerCpu => Unit::Millicores,
        }
    }

    /// The absolute ceiling of this build: no layer can grant more.
    pub fn platform_ceiling(self) -> u64 {
        let c = Limits::CEILING;
        match self {
            Self::Fuel => c.fuel,
            Self::WallTime => micros(c.wall_time),
            Self::Memory => c.memory_bytes,
            Self::Output => c.output_bytes,
            Self::Logs => c.log_bytes,
            Self::LogLines => u64::from(c.log_lines),
            Self::Input => c.input_bytes,
            Self::EgressRequests => 10_000,
            Self::EgressBytes => 1 << 30,
            Self::EgressTimeout => micros(c.wall_time),
            Self::EgressConnections => 1_024,
            Self::KvKeys => 10_000_000,
            Self::KvBytes => 10 << 30,
            Self::KvOps => 100_000,
            Self::KvRate => 1_000_000,
            Self::Rate => 100_000,
            Self::Concurrency => 1_024,
            Self::Bandwidth => 10 << 30,
            Self::DiskIo => 10 << 30,
            Self::WorkerCpu => 64_000,
            Self::WorkerMemory => 64 << 30,
        }
    }

    /// The smallest value that can run anything; zero is refused for these.
    fn minimum(self) -> Option<(u64, &'static str)> {
        match self {
            Self::Fuel | Self::Rate | Self::Concurrency | Self::WorkerCpu => {
                Some((1, "must be greater than zero"))
            }
            Self::WallTime => Some((1, "must be greater than zero")),
            Self::Memory => Some((
                WASM_PAGE,
                "is below one WebAssembly page (64 KiB), so nothing could run",
            )),
            Self::WorkerMemory => Some((16 << 20, "is below 16 MiB, so no worker could start")),
            _ => None,
        }
    }

    /// The value written the way a person reads it: `64 MiB`, `250ms`, `100/s`, `2000m`.
    pub fn format(self, value: u64) -> String {
        match self.unit() {
            Unit::Count => value.to_string(),
            Unit::Bytes => ByteSize(value).to_string(),
            Unit::Micros => DurationSpec(Duration::from_micros(value)).to_string(),
            Unit::PerSecond => format!("{value}/s"),
            Unit::BytesPerSecond => format!("{}/s", ByteSize(value)),
            Unit::Millicores => format!("{value}m"),
        }
    }

    /// The value as a TOML value that parses back to the same limit.
    fn to_toml(self, value: u64) -> toml::Value {
        let integer = |v: u64| toml::Value::Integer(i64::try_from(v).unwrap_or(i64::MAX));
        match self.unit() {
            Unit::Micros => {
                toml::Value::String(DurationSpec(Duration::from_micros(value)).to_string())
            }
            Unit::Bytes | Unit::BytesPerSecond => {
                let text = ByteSize(value).to_string();
                if text.ends_with(" B") {
                    integer(value)
                } else {
                    toml::Value::String(text)
                }
            }
            _ => integer(value),
        }
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// The limits one layer sets. A missing key leaves the limit to the other layers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct LimitSet(BTreeMap<LimitKey, u64>);

impl LimitSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, key: LimitKey) -> Option<u64> {
        self.0.get(&key).copied()
    }

    pub fn set(&mut self, key: LimitKey, value: u64) {
        self.0.insert(key, value);
    }

    pub fn remove(&mut self, key: LimitKey) {
        self.0.remove(&key);
    }

    pub fn iter(&self) -> impl Iterator<Item = (LimitKey, u64)> + '_ {
        self.0.iter().map(|(k, v)| (*k, *v))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The set as a TOML `[limits]` table.
    pub(crate) fn to_toml(&self) -> toml::Table {
        self.iter()
            .map(|(key, value)| (key.as_str().to_owned(), key.to_toml(value)))
            .collect()
    }
}

/// A complete set of limits: what a tenant or one deployment is actually held to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct EffectiveLimits(BTreeMap<LimitKey, u64>);

impl EffectiveLimits {
    /// Every limit at the platform ceiling.
    pub fn platform() -> Self {
        Self(
            LimitKey::ALL
                .iter()
                .map(|k| (*k, k.platform_ceiling()))
                .collect(),
        )
    }

    pub fn get(&self, key: LimitKey) -> u64 {
        self.0.get(&key).copied().unwrap_or(0)
    }

    pub fn iter(&self) -> impl Iterator<Item = (LimitKey, u64)> + '_ {
        self.0.iter().map(|(k, v)| (*k, *v))
    }

    /// Each limit lowered to what `layer` sets, if it sets it.
    pub fn cap(&self, layer: &LimitSet) -> Self {
        Self(
            self.iter()
                .map(|(key, value)| (key, layer.get(key).map_or(value, |l| l.min(value))))
                .collect(),
        )
    }

    /// The per-invocation limits lowered to what the manifest asks for. A limit the manifest
    /// does not request takes the platform default, never more: nothing beyond the manifest.
    pub fn cap_manifest(&self, requested: &RequestedLimits) -> Self {
        let asked = Limits::resolve(requested, &Limits::DEFAULT, &Limits::CEILING);
        // State quotas have no platform default of their own: unset, the extension may use
        // what the tenant may.
        let mut state = LimitSet::new();
        for (key, value) in [
            (LimitKey::KvKeys, requested.kv_keys),
            (LimitKey::KvBytes, requested.kv_bytes.map(|b| b.bytes())),
            (LimitKey::KvRate, requested.kv_rate),
            (LimitKey::DiskIo, requested.disk_io.map(|b| b.bytes())),
        ] {
            if let Some(value) = value {
                state.set(key, value);
            }
        }
        self.cap_runtime(&asked).cap(&state)
    }

    /// The per-invocation limits lowered to `limits`.
    pub fn cap_runtime(&self, limits: &Limits) -> Self {
        let mut set = LimitSet::new();
        set.set(LimitKey::Fuel, limits.fuel);
        set.set(LimitKey::WallTime, micros(limits.wall_time));
        set.set(LimitKey::Memory, limits.memory_bytes);
        set.set(LimitKey::Output, limits.output_bytes);
        set.set(LimitKey::Logs, limits.log_bytes);
        set.set(LimitKey::LogLines, u64::from(limits.log_lines));
        set.set(LimitKey::Input, limits.input_bytes);
        self.cap(&set)
    }

    /// The per-invocation limits the runtime enforces.
    pub fn runtime(&self) -> Limits {
        Limits {
            fuel: self.get(LimitKey::Fuel),
            wall_time: Duration::from_micros(self.get(LimitKey::WallTime)),
            memory_bytes: self.get(LimitKey::Memory),
            output_bytes: self.get(LimitKey::Output),
            log_bytes: self.get(LimitKey::Logs),
            log_lines: u32::try_from(self.get(LimitKey::LogLines)).unwrap_or(u32::MAX),
            input_bytes: self.get(LimitKey::Input),
        }
    }
}

/// The `[limits]` table as written, with the place of each value for error messages.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    fuel: Option<Spanned<u64>>,
    wall_time: Option<Spanned<DurationSpec>>,
    memory: Option<Spanned<ByteSize>>,
    output: Option<Spanned<ByteSize>>,
    logs: Option<Spanned<ByteSize>>,
    log_lines: Option<Spanned<u32>>,
    input: Option<Spanned<ByteSize>>,
    egress_requests: Option<Spanned<u64>>,
    egress_bytes: Option<Spanned<ByteSize>>,
    egress_timeout: Option<Spanned<DurationSpec>>,
    egress_connections: Option<Spanned<u64>>,
    kv_keys: Option<Spanned<u64>>,
    kv_bytes: Option<Spanned<ByteSize>>,
    kv_ops: Option<Spanned<u64>>,
    kv_rate: Option<Spanned<u64>>,
    rate: Option<Spanned<u64>>,
    concurrency: Option<Spanned<u64>>,
    bandwidth: Option<Spanned<ByteSize>>,
    disk_io: Option<Spanned<ByteSize>>,
    worker_cpu: Option<Spanned<u64>>,
    worker_memory: Option<Spanned<ByteSize>>,
}

impl RawLimits {
    fn entries(&self) -> Vec<(LimitKey, u64, Range<usize>)> {
        fn n(v: &Option<Spanned<u64>>) -> Option<(u64, Range<usize>)> {
            v.as_ref().map(|s| (*s.get_ref(), s.span()))
        }
        fn b(v: &Option<Spanned<ByteSize>>) -> Option<(u64, Range<usize>)> {
            v.as_ref().map(|s| (s.get_ref().0, s.span()))
        }
        let entries = [
            (LimitKey::Fuel, n(&self.fuel)),
            (
                LimitKey::WallTime,
                self.wall_time
                    .as_ref()
                    .map(|s| (micros(s.get_ref().0), s.span())),
            ),
            (LimitKey::Memory, b(&self.memory)),
            (LimitKey::Output, b(&self.output)),
            (LimitKey::Logs, b(&self.logs)),
            (
                LimitKey::LogLines,
                self.log_lines
                    .as_ref()
                    .map(|s| (u64::from(*s.get_ref()), s.span())),
            ),
            (LimitKey::Input, b(&self.input)),
            (LimitKey::EgressRequests, n(&self.egress_requests)),
            (LimitKey::EgressBytes, b(&self.egress_bytes)),
            (
                LimitKey::EgressTimeout,
                self.egress_timeout
                    .as_ref()
                    .map(|s| (micros(s.get_ref().0), s.span())),
            ),
            (LimitKey::EgressConnections, n(&self.egress_connections)),
            (LimitKey::KvKeys, n(&self.kv_keys)),
            (LimitKey::KvBytes, b(&self.kv_bytes)),
            (LimitKey::KvOps, n(&self.kv_ops)),
            (LimitKey::KvRate, n(&self.kv_rate)),
            (LimitKey::Rate, n(&self.rate)),
            (LimitKey::Concurrency, n(&self.concurrency)),
            (LimitKey::Bandwidth, b(&self.bandwidth)),
            (LimitKey::DiskIo, b(&self.disk_io)),
            (LimitKey::WorkerCpu, n(&self.worker_cpu)),
            (LimitKey::WorkerMemory, b(&self.worker_memory)),
        ];
        entries
            .into_iter()
            .filter_map(|(key, value)| value.map(|(v, span)| (key, v, span)))
            .collect()
    }

    /// Checks every value and returns the set. `text` is the whole document, for locations.
    pub(crate) fn validate(&self, text: &str) -> Result<LimitSet, PolicyError> {
        let mut set = LimitSet::new();
        for (key, value, span) in self.entries() {
            let error = |message: String| PolicyError::Limit {
                location: Some(Location::of(text, span.start)),
                field: key.as_str(),
                message,
            };
            if let Some((minimum, problem)) = key.minimum()
                && value < minimum
            {
                return Err(error(format!("is {}, which {problem}", key.format(value))));
            }
            let ceiling = key.platform_ceiling();
            if value > ceiling {
                return Err(error(format!(
                    "is {}, above the platform ceiling of {}",
                    key.format(value),
                    key.format(ceiling)
                )));
            }
            set.set(key, value);
        }
        if let (Some(0), Some(logs)) = (set.get(LimitKey::LogLines), set.get(LimitKey::Logs))
            && logs > 0
            && let Some(lines) = &self.log_lines
        {
            return Err(PolicyError::Limit {
                location: Some(Location::of(text, lines.span().start)),
                field: "log_lines",
                message: "is zero while `logs` allows bytes; set both to zero to forbid logging"
                    .into(),
            });
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_formats_and_round_trips_through_toml() {
        for key in LimitKey::ALL {
            for value in [1, 1000, 64 << 10, 1_500_000, key.platform_ceiling()] {
                let table: toml::Table = [(key.as_str().to_owned(), key.to_toml(value))]
                    .into_iter()
                    .collect();
                let raw: RawLimits = toml::from_str(&toml::to_string(&table).unwrap()).unwrap();
                let parsed = raw.entries();
                assert_eq!(parsed.len(), 1, "{key:?}");
                assert_eq!(parsed[0].1, value, "{key:?} {}", key.format(value));
            }
        }
    }

    #[test]
    fn runtime_limits_round_trip() {
        let limits = EffectiveLimits::platform();
        assert_eq!(limits.runtime(), Limits::CEILING);
        let capped = limits.cap_manifest(&RequestedLimits::default());
        assert_eq!(capped.runtime(), Limits::DEFAULT);
    }
}

//! Resource limits: what a manifest requests and what an invocation is actually held to.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::units::{ByteSize, DurationSpec};

/// Limits an extension asks for in its manifest. Every field is optional; a missing one takes
/// the platform default, and every requested value is capped by the platform ceiling.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestedLimits {
    /// Instruction budget (wasmtime fuel units, about one per wasm instruction).
    pub fuel: Option<u64>,
    /// Wall-clock deadline for the whole invocation, host calls included.
    pub wall_time: Option<DurationSpec>,
    /// Linear memory, summed over the component's memories.
    pub memory: Option<ByteSize>,
    /// Response body size.
    pub output: Option<ByteSize>,
    /// Total bytes of log messages per invocation.
    pub logs: Option<ByteSize>,
    /// Number of log messages per invocation.
    pub log_lines: Option<u32>,
    /// Request body size.
    pub input: Option<ByteSize>,
    /// Keys this extension may keep in each key-value namespace it writes (within the
    /// tenant's `kv_keys`, which counts all its extensions together).
    pub kv_keys: Option<u64>,
    /// Bytes (keys and values) this extension may keep in each namespace it writes.
    pub kv_bytes: Option<ByteSize>,
    /// Key-value operations per second of this extension (within the tenant's `kv_rate`).
    pub kv_rate: Option<u64>,
    /// Bytes per second this extension may write to key-value state (within the tenant's
    /// `disk_io`).
    pub disk_io: Option<ByteSize>,
}

/// The limits one invocation runs under. Every one is enforced, none is advisory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub fuel: u64,
    #[serde(with = "duration_ms")]
    pub wall_time: Duration,
    pub memory_bytes: u64,
    pub output_bytes: u64,
    pub log_bytes: u64,
    pub log_lines: u32,
    pub input_bytes: u64,
}

/// A limit value that makes no sense (zero deadline, memory below one page, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("limit `{field}` {problem}")]
pub struct LimitError {
    pub field: &'static str,
    pub problem: String,
}

/// One WebAssembly page: no memory limit below this can run anything.
pub const WASM_PAGE: u64 = 64 * 1024;

impl Limits {
    /// Platform defaults, for limits an extension does not request.
    pub const DEFAULT: Self = Self {
        fuel: 100_000_000,
        wall_time: Duration::from_secs(1),
        memory_bytes: 64 << 20,
        output_bytes: 1 << 20,
        log_bytes: 64 << 10,
        log_lines: 1_000,
        input_bytes: 1 << 20,
    };

    /// Platform ceilings: no request, however large, gets more than this.
    pub const CEILING: Self = Self {
        fuel: 10_000_000_000,
        wall_time: Duration::from_secs(60),
        memory_bytes: 1 << 30,
        output_bytes: 16 << 20,
        log_bytes: 1 << 20,
        log_lines: 10_000,
        input_bytes: 16 << 20,
    };

    /// The effective limits: each requested value capped by `ceiling`, each missing one
    /// taking `defaults` (itself capped by `ceiling`).
    pub fn resolve(requested: &RequestedLimits, defaults: &Self, ceiling: &Self) -> Self {
        fn pick<T: Ord + Copy>(requested: Option<T>, default: T, ceiling: T) -> T {
            requested.unwrap_or(default).min(ceiling)
        }
        Self {
            fuel: pick(requested.fuel, defaults.fuel, ceiling.fuel),
            wall_time: pick(
                requested.wall_time.map(|d| d.0),
                defaults.wall_time,
                ceiling.wall_time,
            ),
            memory_bytes: pick(
                requested.memory.map(ByteSize::bytes),
                defaults.memory_bytes,
                ceiling.memory_bytes,
            ),
            output_bytes: pick(
                requested.output.map(ByteSize::bytes),
                defaults.output_bytes,
                ceiling.output_bytes,
            ),
            log_bytes: pick(
                requested.logs.map(ByteSize::bytes),
                defaults.log_bytes,
                ceiling.log_bytes,
            ),
            log_lines: pick(requested.log_lines, defaults.log_lines, ceiling.log_lines),
            input_bytes: pick(
                requested.input.map(ByteSize::bytes),
                defaults.input_bytes,
                ceiling.input_bytes,
            ),
        }
    }

    /// Each limit taken as the smaller of the two: used to intersect layers of policy.
    pub fn min(&self, other: &Self) -> Self {
        Self {
            fuel: self.fuel.min(other.fuel),
            wall_time: self.wall_time.min(other.wall_time),
            memory_bytes: self.memory_bytes.min(other.memory_bytes),
            output_bytes: self.output_bytes.min(other.output_bytes),
            log_bytes: self.log_bytes.min(other.log_bytes),
            log_lines: self.log_lines.min(other.log_lines),
            input_bytes: self.input_bytes.min(other.input_bytes),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl RequestedLimits {
    /// Rejects values that can never run: zero budgets and deadlines, memory below one page.
    pub fn validate(&self) -> Result<(), LimitError> {
        let zero = |field| LimitError {
            field,
            problem: "must be greater than zero".into(),
        };
        if self.fuel == Some(0) {
            return Err(zero("fuel"));
        }
        if self.wall_time.is_some_and(|d| d.0.is_zero()) {
            return Err(zero("wall_time"));
        }
        if self.log_lines == Some(0) && self.logs.is_some_and(|l| l.0 > 0) {
            return Err(LimitError {
                field: "log_lines",
                problem: "is zero while `logs` allows bytes; set both to zero to forbid logging"
                    .into(),
            });
        }
        if let Some(memory) = self.memory
            && memory.0 < WASM_PAGE
        {
            return Err(LimitError {
                field: "memory",
                problem: format!("is {memory}, below one WebAssembly page (64 KiB)"),
            });
        }
        Ok(())
    }
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_requests_take_defaults_and_requests_are_capped() {
        let requested = RequestedLimits {
            fuel: Some(u64::MAX),
            memory: Some(ByteSize::mib(8)),
            ..Default::default()
        };
        let limits = Limits::resolve(&requested, &Limits::DEFAULT, &Limits::CEILING);
        assert_eq!(limits.fuel, Limits::CEILING.fuel);
        assert_eq!(limits.memory_bytes, 8 << 20);
        assert_eq!(limits.wall_time, Limits::DEFAULT.wall_time);
    }

    #[test]
    fn nonsense_limits_are_rejected() {
        let zero_fuel = RequestedLimits {
            fuel: Some(0),
            ..Default::default()
        };
        assert_eq!(zero_fuel.validate().map_err(|e| e.field), Err("fuel"));
        let zero_time = RequestedLimits {
            wall_time: Some(DurationSpec(Duration::ZERO)),
            ..Default::default()
        };
        assert_eq!(zero_time.validate().map_err(|e| e.field), Err("wall_time"));
        let tiny_memory = RequestedLimits {
            memory: Some(ByteSize(100)),
            ..Default::default()
        };
        assert_eq!(tiny_memory.validate().map_err(|e| e.field), Err("memory"));
    }
}

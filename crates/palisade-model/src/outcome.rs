//! One invocation's input, and what it produced: the response or a typed error, with usage
//! and captured logs.

use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// One invocation's input: the same value from the edge (HTTP body, CLI input file) through
/// the worker socket to the guest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvocationRequest {
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    pub content_type: String,
    pub metadata: Vec<(String, String)>,
}

/// Every way an invocation can fail. The names are part of the public API (JSON, CLI exit
/// codes, HTTP statuses, test vectors): never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The instruction budget (fuel) ran out.
    FuelExhausted,
    /// The wall-clock deadline passed.
    Timeout,
    /// The guest tried to grow linear memory or tables beyond its limit.
    MemoryLimit,
    /// The guest's call stack exceeded the engine's maximum.
    StackOverflow,
    /// The guest trapped (panic, unreachable, out-of-bounds access, ...).
    Trap,
    /// The response body exceeded the output limit.
    OutputTooLarge,
    /// The guest logged more bytes or lines than allowed.
    LogLimit,
    /// The invocation used up its key-value operations (`kv_ops`).
    KvQuotaExceeded,
    /// The request body exceeded the input limit.
    InputTooLarge,
    /// The extension returned its own error.
    GuestError,
    /// The component imports an interface outside the API catalog.
    ImportNotAllowed,
    /// The component is not a valid component for this API (bad bytes, wrong exports, digest mismatch).
    InvalidComponent,
    /// The manifest is malformed or asks for something impossible.
    InvalidManifest,
    /// No capacity right now; retry later.
    Overloaded,
    /// The tenant's invocation rate or concurrency quota is used up; retry after the time the
    /// caller is given (HTTP `Retry-After`).
    RateLimited,
    /// The worker process running the invocation died (out of memory, killed by seccomp,
    /// crashed, or broke the IPC protocol). The message names the reason.
    WorkerCrashed,
    /// The host cannot apply an isolation layer and strict mode refuses to run guests.
    IsolationUnavailable,
    /// A fault in Palisade itself, not in the extension or the input.
    Internal,
}

/// Which party an error is about; decides CLI exit codes and (later) HTTP statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The extension ran and failed or broke a limit.
    Extension,
    /// The extension could not be loaded (manifest, component, imports).
    Load,
    /// The caller's input was refused.
    Input,
    /// Palisade could not serve the call now.
    Capacity,
    /// Palisade failed.
    Internal,
}

impl ErrorKind {
    pub const ALL: [Self; 18] = [
        Self::FuelExhausted,
        Self::Timeout,
        Self::MemoryLimit,
        Self::StackOverflow,
        Self::Trap,
        Self::OutputTooLarge,
        Self::LogLimit,
        Self::KvQuotaExceeded,
        Self::InputTooLarge,
        Self::GuestError,
        Self::ImportNotAllowed,
        Self::InvalidComponent,
        Self::InvalidManifest,
        Self::Overloaded,
        Self::RateLimited,
        Self::WorkerCrashed,
        Self::IsolationUnavailable,
        Self::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::FuelExhausted => "fuel_exhausted",
            Self::Timeout => "timeout",
            Self::MemoryLimit => "memory_limit",
            Self::StackOverflow => "stack_overflow",
            Self::Trap => "trap",
            Self::OutputTooLarge => "output_too_large",
            Self::LogLimit => "log_limit",
            Self::KvQuotaExceeded => "kv_quota_exceeded",
            Self::InputTooLarge => "input_too_large",
            Self::GuestError => "guest_error",
            Self::ImportNotAllowed => "import_not_allowed",
            Self::InvalidComponent => "invalid_component",
            Self::InvalidManifest => "invalid_manifest",
            Self::Overloaded => "overloaded",
            Self::RateLimited => "rate_limited",
            Self::WorkerCrashed => "worker_crashed",
            Self::IsolationUnavailable => "isolation_unavailable",
            Self::Internal => "internal",
        }
    }

    pub fn class(self) -> ErrorClass {
        match self {
            Self::FuelExhausted
            | Self::Timeout
            | Self::MemoryLimit
            | Self::StackOverflow
            | Self::Trap
            | Self::OutputTooLarge
            | Self::LogLimit
            | Self::KvQuotaExceeded
            | Self::GuestError
            | Self::WorkerCrashed => ErrorClass::Extension,
            Self::ImportNotAllowed | Self::InvalidComponent | Self::InvalidManifest => {
                ErrorClass::Load
            }
            Self::InputTooLarge => ErrorClass::Input,
            Self::Overloaded | Self::RateLimited => ErrorClass::Capacity,
            Self::IsolationUnavailable | Self::Internal => ErrorClass::Internal,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A typed invocation error: the kind callers match on, and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct InvocationError {
    pub kind: ErrorKind,
    pub message: String,
}

impl InvocationError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// Severity of a captured guest log message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// Where a captured message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogSource {
    /// The `log` interface.
    Log,
    /// The guest's standard output (for example `println!`).
    Stdout,
    /// The guest's standard error (for example a panic message).
    Stderr,
}

/// One captured guest message. `message` has control characters escaped already.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub level: LogLevel,
    pub source: LogSource,
    pub message: String,
    /// Microseconds since the invocation started.
    pub elapsed_us: u64,
    /// Milliseconds since the Unix epoch.
    pub unix_ms: u64,
}

/// What an invocation consumed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub fuel_consumed: u64,
    pub wall_time_us: u64,
    /// Largest total linear memory the instance held.
    pub peak_memory_bytes: u64,
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub log_bytes: u64,
    pub log_lines: u32,
}

/// A response body and its media type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    pub content_type: String,
}

/// How the invocation was isolated below the wasm sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Isolation {
    /// `jailed`: a confined worker process with every layer; `degraded`: a worker with the
    /// layers in `missing` not applied (only when explicitly allowed); `in_process`: no worker
    /// at all (`--no-jail`, for debugging).
    pub mode: IsolationMode,
    /// Layers that could not be applied.
    /// (Always present: the IPC encoding is not self-describing, so no field is skipped.)
    #[serde(default)]
    pub missing: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IsolationMode {
    Jailed,
    Degraded,
    #[default]
    InProcess,
}

/// Everything one invocation produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub result: Result<Output, InvocationError>,
    pub usage: Usage,
    pub logs: Vec<LogEntry>,
    #[serde(default)]
    pub isolation: Isolation,
}

impl Outcome {
    /// An outcome for a call that never reached the guest.
    pub fn rejected(error: InvocationError) -> Self {
        Self {
            result: Err(error),
            usage: Usage::default(),
            logs: Vec::new(),
            isolation: Isolation::default(),
        }
    }

    /// The stable JSON form:
    /// `{"outcome": "ok"|"error", "error": {"kind", "message"}, "output" | "output_base64",
    /// "content_type", "usage": {...}, "logs": [...], "isolation": {"mode", "missing"}}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut object = serde_json::Map::new();
        match &self.result {
            Ok(output) => {
                object.insert("outcome".into(), "ok".into());
                match std::str::from_utf8(&output.body) {
                    Ok(text) => object.insert("output".into(), text.into()),
                    Err(_) => object.insert(
                        "output_base64".into(),
                        base64::engine::general_purpose::STANDARD
                            .encode(&output.body)
                            .into(),
                    ),
                };
                object.insert("content_type".into(), output.content_type.clone().into());
            }
            Err(error) => {
                object.insert("outcome".into(), "error".into());
                object.insert(
                    "error".into(),
                    serde_json::json!({"kind": error.kind, "message": error.message}),
                );
            }
        }
        object.insert(
            "usage".into(),
            serde_json::to_value(self.usage).unwrap_or_default(),
        );
        object.insert(
            "logs".into(),
            serde_json::to_value(&self.logs).unwrap_or_default(),
        );
        object.insert(
            "isolation".into(),
            serde_json::to_value(&self.isolation).unwrap_or_default(),
        );
        serde_json::Value::Object(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_serialize_as_their_documented_names() {
        for kind in ErrorKind::ALL {
            let json = serde_json::to_value(kind).unwrap_or_default();
            assert_eq!(json, serde_json::Value::from(kind.as_str()));
            let back: ErrorKind = serde_json::from_value(json).unwrap_or(ErrorKind::Internal);
            assert_eq!(back, kind);
        }
    }

    #[test]
    fn binary_output_is_base64_in_json() {
        let outcome = Outcome {
            result: Ok(Output {
                body: vec![0xff, 0x00],
                content_type: "application/octet-stream".into(),
            }),
            usage: Usage::default(),
            logs: Vec::new(),
            isolation: Isolation::default(),
        };
        let json = outcome.to_json();
        assert_eq!(json["outcome"], "ok");
        assert_eq!(json["output_base64"], "/wA=");
        assert!(json.get("output").is_none());
    }

    #[test]
    fn errors_carry_kind_and_message() {
        let json =
            Outcome::rejected(InvocationError::new(ErrorKind::InputTooLarge, "too big")).to_json();
        assert_eq!(json["outcome"], "error");
        assert_eq!(json["error"]["kind"], "input_too_large");
        assert_eq!(json["error"]["message"], "too big");
    }
}

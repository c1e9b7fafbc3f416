//! Host side of the extension API: the per-invocation store data, the `log`, `config` and
//! `kv` imports, and the resource limiter that caps linear memory and tables.

use std::collections::BTreeMap;
use std::sync::Arc;

use palisade_model::LogLevel;
use palisade_model::kv::{KvError, KvErrorKind, KvOp, KvReply};
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::capture::SharedCapture;
use crate::egress::EgressHooks;
use crate::host_calls::HostCalls;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Bindings for the newest 1.x API, `palisade:extension@1.2.0`. Components built against an
/// older 1.x (1.0.0, 1.1.0) link against them too: the linker matches imports by semver, and the
/// catalog still holds each component to the interfaces of the version its manifest names. A
/// new major version gets a module of its own so both can be served side by side.
pub mod v1 {
    wasmtime::component::bindgen!({
        path: "../../wit/extension@1.2.0",
        world: "palisade:extension/extension@1.2.0",
        imports: {
            "palisade:extension/log.write": trappable,
            "palisade:extension/kv": async | trappable,
            default: tracing,
        },
        exports: { default: async },
        trappable_error_type: {
            "palisade:extension/kv.error" => palisade_model::kv::KvError,
        },
    });
}

/// The invocation used up its key-value operations: ends it as `kv_quota_exceeded`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key-value budget exhausted: {0}")]
pub struct KvBudgetExhausted(pub String);

/// Everything one invocation's store holds. Dropped with the store after the call.
pub(crate) struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) capture: SharedCapture,
    pub(crate) config: Arc<BTreeMap<String, String>>,
    pub(crate) host: Arc<dyn HostCalls>,
    pub(crate) http: WasiHttpCtx,
    pub(crate) egress: EgressHooks,
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.egress,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl v1::palisade::extension::types::Host for HostState {}

impl v1::palisade::extension::log::Host for HostState {
    fn write(
        &mut self,
        level: v1::palisade::extension::log::Level,
        message: String,
    ) -> wasmtime::Result<()> {
        use v1::palisade::extension::log::Level;
        let level = match level {
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        self.capture
            .log(level, &message)
            .map_err(wasmtime::Error::new)
    }
}

impl v1::palisade::extension::config::Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }
}

type KvResult<T> = Result<T, KvError>;

fn unexpected(op: &str, reply: KvReply) -> KvError {
    KvError::new(
        KvErrorKind::Unavailable,
        format!("the host answered {op} with {reply:?}"),
    )
}

impl v1::palisade::extension::kv::Host for HostState {
    async fn get(&mut self, namespace: String, key: Vec<u8>) -> KvResult<Option<Vec<u8>>> {
        match self.host.kv(KvOp::Get { namespace, key }).await? {
            KvReply::Value(value) => Ok(value),
            other => Err(unexpected("get", other)),
        }
    }

    async fn set(&mut self, namespace: String, key: Vec<u8>, value: Vec<u8>) -> KvResult<()> {
        match self
            .host
            .kv(KvOp::Set {
                namespace,
                key,
                value,
            })
            .await?
        {
            KvReply::Done => Ok(()),
            other => Err(unexpected("set", other)),
        }
    }

    async fn delete(&mut self, namespace: String, key: Vec<u8>) -> KvResult<bool> {
        match self.host.kv(KvOp::Delete { namespace, key }).await? {
            KvReply::Bool(existed) => Ok(existed),
            other => Err(unexpected("delete", other)),
        }
    }

    async fn exists(&mut self, namespace: String, key: Vec<u8>) -> KvResult<bool> {
        match self.host.kv(KvOp::Exists { namespace, key }).await? {
            KvReply::Bool(exists) => Ok(exists),
            other => Err(unexpected("exists", other)),
        }
    }

    async fn list_keys(
        &mut self,
        namespace: String,
        prefix: Vec<u8>,
        after: Option<Vec<u8>>,
        limit: u32,
    ) -> KvResult<v1::palisade::extension::kv::KeyPage> {
        let op = KvOp::List {
            namespace,
            prefix,
            after,
            limit,
        };
        match self.host.kv(op).await? {
            KvReply::Keys { keys, next } => Ok(v1::palisade::extension::kv::KeyPage { keys, next }),
            other => Err(unexpected("list-keys", other)),
        }
    }

    async fn increment(&mut self, namespace: String, key: Vec<u8>, delta: i64) -> KvResult<i64> {
        match self
            .host
            .kv(KvOp::Increment {
                namespace,
                key,
                delta,
            })
            .await?
        {
            KvReply::Counter(value) => Ok(value),
            other => Err(unexpected("increment", other)),
        }
    }

    async fn compare_and_swap(
        &mut self,
        namespace: String,
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
    ) -> KvResult<bool> {
        let op = KvOp::CompareAndSwap {
            namespace,
            key,
            expected,
            value,
        };
        match self.host.kv(op).await? {
            KvReply::Bool(swapped) => Ok(swapped),
            other => Err(unexpected("compare-and-swap", other)),
        }
    }

    fn convert_error(
        &mut self,
        error: KvError,
    ) -> wasmtime::Result<v1::palisade::extension::kv::Error> {
        use v1::palisade::extension::kv::Error;
        Ok(match error.kind {
            KvErrorKind::InvocationBudget => {
                return Err(wasmtime::Error::new(KvBudgetExhausted(error.message)));
            }
            KvErrorKind::QuotaExceeded => Error::QuotaExceeded(error.message),
            KvErrorKind::InvalidKey => Error::InvalidKey(error.message),
            KvErrorKind::ValueTooLarge => Error::ValueTooLarge(error.message),
            KvErrorKind::Denied => Error::Denied(error.message),
            KvErrorKind::WrongType => Error::WrongType(error.message),
            KvErrorKind::Unavailable => Error::Unavailable(error.message),
        })
    }
}

/// The guest asked for more linear memory than its limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "memory limit exceeded: the guest asked for {requested} bytes of linear memory, the limit is {limit}"
)]
pub struct MemoryLimitExceeded {
    pub requested: u64,
    pub limit: u64,
}

/// The guest asked for more table elements than allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "table limit exceeded: the guest asked for {requested} table elements, the limit is {limit}"
)]
pub struct TableLimitExceeded {
    pub requested: usize,
    pub limit: usize,
}

/// Caps the sum of all linear memories of one instance and records the peak.
///
/// Denial is an error (a trap), not a `memory.grow` result of -1: a guest allocator that
/// ignores the failure would otherwise turn the limit into an unrelated trap, and the caller
/// must learn that it was the memory limit.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    pub(crate) limit_bytes: u64,
    pub(crate) max_table_elements: usize,
    pub(crate) current_bytes: u64,
    pub(crate) peak_bytes: u64,
}

impl MemoryLimiter {
    pub(crate) fn new(limit_bytes: u64, max_table_elements: usize) -> Self {
        Self {
            limit_bytes,
            max_table_elements,
            current_bytes: 0,
            peak_bytes: 0,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current) as u64;
        let total = self.current_bytes.saturating_add(growth);
        if total > self.limit_bytes {
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                requested: total,
                limit: self.limit_bytes,
            }));
        }
        self.current_bytes = total;
        self.peak_bytes = self.peak_bytes.max(total);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_table_elements {
            return Err(wasmtime::Error::new(TableLimitExceeded {
                requested: desired,
                limit: self.max_table_elements,
            }));
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_limit_counts_all_memories_and_keeps_the_peak() {
        let mut limiter = MemoryLimiter::new(1 << 20, 10);
        assert!(limiter.memory_growing(0, 512 << 10, None).is_ok());
        assert!(limiter.memory_growing(0, 256 << 10, None).is_ok());
        let denied = limiter.memory_growing(512 << 10, 1 << 20, None);
        assert!(denied.is_err_and(|e| e.downcast_ref::<MemoryLimitExceeded>().is_some()));
        assert_eq!(limiter.peak_bytes, 768 << 10);
        assert!(limiter.table_growing(0, 11, None).is_err());
    }
}

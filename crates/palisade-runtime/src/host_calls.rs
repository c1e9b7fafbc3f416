//! Host calls that leave the wasm sandbox: the interface the runtime's `kv` and `http` imports
//! call. In a worker process it forwards each call to the supervisor over IPC; the host
//! (`palisade-host`) answers it after checking policy and quotas, from the encrypted store on
//! a server or from memory for local runs.

use palisade_model::egress::{EgressError, EgressErrorKind, HttpRequest, HttpResponse};
use palisade_model::kv::{KvError, KvErrorKind, KvOp, KvReply};

/// Answers one invocation's host calls. One value per invocation: it knows whose they are.
#[async_trait::async_trait]
pub trait HostCalls: Send + Sync {
    async fn kv(&self, op: KvOp) -> Result<KvReply, KvError>;

    /// One outbound HTTP request; hosts without an egress gateway refuse it.
    async fn http(&self, request: HttpRequest) -> Result<HttpResponse, EgressError> {
        Err(EgressError::new(
            EgressErrorKind::Unavailable,
            format!(
                "outbound HTTP needs the egress gateway of a Palisade server ({} {})",
                request.method, request.url
            ),
        ))
    }
}

/// For hosts that offer no key-value state: every call is `unavailable`.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHostCalls;

#[async_trait::async_trait]
impl HostCalls for NoHostCalls {
    async fn kv(&self, op: KvOp) -> Result<KvReply, KvError> {
        Err(KvError::new(
            KvErrorKind::Unavailable,
            format!("key-value state is not available here ({})", op.name()),
        ))
    }
}

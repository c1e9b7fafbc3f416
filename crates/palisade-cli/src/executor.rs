//! Where `run` and `test` execute extensions: in a jailed per-tenant worker process by
//! default, or in this process with `--no-jail` (debugging only, and said loudly). Host
//! calls are answered here: key-value state from an in-memory store, outbound HTTP by a
//! local egress gateway with `--egress`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use palisade_egress::{
    Cidr, Gateway, Invocation, InvocationSpec, NoPolicyLayers, NoSecrets, SystemResolver,
};
use palisade_model::egress::{EgressError, EgressErrorKind, HttpRequest, HttpResponse};
use palisade_model::kv::{KvError, KvOp, KvReply};
use palisade_model::{ErrorKind, InvocationError, Limits, Outcome};
use palisade_policy::{EffectiveLimits, LimitKey, PolicyEngine, TenantId};
use palisade_runtime::{Extension, HostCalls, MemoryKv, Request, Runtime};
use palisade_worker::protocol::WireRequest;
use palisade_worker::{ExtensionSource, JailLauncher, Supervisor, SupervisorConfig, WorkerCommand};

use crate::EngineArgs;
use crate::load::LocalExtension;

/// The tenant local runs are attributed to (its own cgroup and uid).
const LOCAL_TENANT: &str = "local";

pub enum Executor {
    InProcess(Box<Runtime>),
    Workers(Supervisor),
}

/// An extension made ready for invocations, with the in-memory key-value store its local
/// runs use (the namespaces its manifest requests; data kept for this command's lifetime).
pub struct Prepared {
    target: Target,
    kv: Arc<MemoryKv>,
    egress: Option<PreparedEgress>,
    /// Numbers this command's invocations (`inv-local-N`).
    invocations: AtomicU64,
}

/// `--egress`: the production gateway's code with a local stand-in for what a server knows.
/// The manifest's destinations and the address checks are the gateway's own. The quotas are
/// the shipped baseline's (`--policy` sets the invocation's limits, not these). There are no
/// Cedar layers (every destination the manifest requests is permitted; `palisade policy
/// explain` answers for the layers) and no secrets, so no credentials or tokens are injected.
#[derive(Debug, Clone)]
pub struct LocalEgress {
    gateway: Arc<Gateway>,
    allow_private: Vec<Cidr>,
    limits: EffectiveLimits,
}

impl LocalEgress {
    pub fn new(allow_private: Vec<Cidr>) -> Result<Self, InvocationError> {
        let limits = PolicyEngine::shipped()
            .map_err(internal)?
            .tenant_limits(&TenantId::new(LOCAL_TENANT).map_err(internal)?);
        Ok(Self {
            gateway: Arc::new(Gateway::new(Arc::new(SystemResolver), None)),
            allow_private,
            limits,
        })
    }
}

struct PreparedEgress {
    local: LocalEgress,
    extension: String,
    version: String,
    patterns: Vec<palisade_model::egress::UrlPattern>,
}

impl PreparedEgress {
    fn invocation(&self, limits: &Limits, number: u64) -> Invocation {
        let get = |key| self.local.limits.get(key);
        Invocation::new(InvocationSpec {
            tenant: LOCAL_TENANT.into(),
            extension: self.extension.clone(),
            version: self.version.clone(),
            invocation_id: format!("inv-local-{number}"),
            patterns: self.patterns.clone(),
            policy: Arc::new(NoPolicyLayers),
            secrets: Arc::new(NoSecrets),
            credentials: Vec::new(),
            tokens: Vec::new(),
            tls: Vec::new(),
            allow_private: self.local.allow_private.clone(),
            max_requests: get(LimitKey::EgressRequests),
            max_bytes: get(LimitKey::EgressBytes),
            deadline: tokio::time::Instant::now() + limits.wall_time,
            request_timeout: std::time::Duration::from_micros(get(LimitKey::EgressTimeout)),
            bandwidth: get(LimitKey::Bandwidth),
            connections: get(LimitKey::EgressConnections),
        })
    }
}

/// One local invocation's host calls.
struct LocalHost {
    kv: Arc<MemoryKv>,
    egress: Option<(Arc<Gateway>, Invocation)>,
}

#[async_trait::async_trait]
impl HostCalls for LocalHost {
    async fn kv(&self, op: KvOp) -> Result<KvReply, KvError> {
        self.kv.kv(op).await
    }

    async fn http(&self, request: HttpRequest) -> Result<HttpResponse, EgressError> {
        match &self.egress {
            Some((gateway, invocation)) => gateway.send(invocation, request).await,
            None => Err(EgressError::new(
                EgressErrorKind::Unavailable,
                format!(
                    "outbound HTTP from a local run needs --egress (a local egress gateway) ({} {})",
                    request.method, request.url
                ),
            )),
        }
    }
}

enum Target {
    InProcess(Result<Extension, InvocationError>),
    Worker(ExtensionSource),
}

/// Key-value operations per invocation for local runs: the shipped baseline's `kv_ops`.
const LOCAL_KV_OPS: u64 = 1_000;

impl Executor {
    pub fn new(args: &EngineArgs) -> Result<Self, InvocationError> {
        if args.no_jail {
            eprintln!(
                "WARNING: --no-jail: the extension runs inside this process, with no worker process, \
                 namespaces, seccomp, Landlock or cgroups below the wasm sandbox. Use it only to debug."
            );
            return args
                .runtime()
                .map(|runtime| Self::InProcess(Box::new(runtime)))
                .map_err(|e| InvocationError::new(ErrorKind::Internal, e.to_string()));
        }
        let exe = palisade_worker::jailed::current_exe().map_err(internal)?;
        let mut template = palisade_jail::JailConfig::new(LOCAL_TENANT, 0, 0);
        template.mode = palisade_worker::jailed::mode(args.allow_degraded);
        template.launcher = Some(exe.clone());
        template.launcher_args = vec!["__jail-launcher".into()];
        let command = WorkerCommand {
            program: exe,
            args: vec!["__worker".into(), "--jailed".into()],
        };
        let launcher = JailLauncher::new(command, template).map_err(internal)?;
        Ok(Self::Workers(Supervisor::new(
            Arc::new(launcher),
            SupervisorConfig::default(),
        )))
    }

    pub fn prepare(&self, local: &LocalExtension, egress: Option<&LocalEgress>) -> Prepared {
        let target = match self {
            Self::InProcess(runtime) => {
                Target::InProcess(runtime.load(&local.manifest, &local.wasm))
            }
            Self::Workers(_) => {
                Target::Worker(ExtensionSource::new(local.text.clone(), local.wasm.clone()))
            }
        };
        let name = &local.manifest.extension.name;
        let mut kv = MemoryKv::new(
            name.as_str(),
            local.manifest.capabilities.kv_namespaces(name),
            LOCAL_KV_OPS,
        );
        if let Some(quota) = local_kv_quota(&local.manifest) {
            kv = kv.with_quota(quota);
        }
        let egress = egress.map(|gateway| PreparedEgress {
            local: gateway.clone(),
            extension: name.to_string(),
            version: local.manifest.extension.version.to_string(),
            patterns: local.manifest.capabilities.http_patterns(),
        });
        Prepared {
            target,
            kv: Arc::new(kv),
            egress,
            invocations: AtomicU64::new(1),
        }
    }

    pub async fn invoke(&self, prepared: &Prepared, request: Request, limits: &Limits) -> Outcome {
        prepared.kv.reset_budget(LOCAL_KV_OPS);
        let number = prepared.invocations.fetch_add(1, Ordering::Relaxed);
        let host: Arc<dyn HostCalls> = Arc::new(LocalHost {
            kv: Arc::clone(&prepared.kv),
            egress: prepared.egress.as_ref().map(|egress| {
                (
                    Arc::clone(&egress.local.gateway),
                    egress.invocation(limits, number),
                )
            }),
        });
        match (self, &prepared.target) {
            (Self::InProcess(runtime), Target::InProcess(Ok(extension))) => {
                runtime.invoke_with(extension, request, limits, host).await
            }
            (Self::InProcess(_), Target::InProcess(Err(error))) => Outcome::rejected(error.clone()),
            (Self::Workers(supervisor), Target::Worker(source)) => {
                let request = WireRequest {
                    body: request.body,
                    content_type: request.content_type,
                    metadata: request.metadata,
                };
                supervisor
                    .invoke_with(LOCAL_TENANT, source, request, limits, host)
                    .await
            }
            _ => Outcome::rejected(InvocationError::new(
                ErrorKind::Internal,
                "prepared for another executor",
            )),
        }
    }

    pub async fn shutdown(&self) {
        if let Self::Workers(supervisor) = self {
            supervisor.shutdown().await;
        }
    }
}

fn internal(error: impl std::fmt::Display) -> InvocationError {
    InvocationError::new(ErrorKind::Internal, error.to_string())
}

/// The limits a manifest gets: its requests, platform defaults for the rest, platform ceilings
/// over all, then the local policy file's limits if one was given.
/// The key and byte quotas of a local run, as a server with the shipped baseline holds
/// them: `kv_keys`/`kv_bytes` for the whole (local) tenant, the manifest's own for each
/// namespace the extension writes.
fn local_kv_quota(manifest: &palisade_model::Manifest) -> Option<palisade_model::kv::KvQuota> {
    let engine = PolicyEngine::shipped().ok()?;
    let tenant = TenantId::new(LOCAL_TENANT).ok()?;
    let tenant_limits = engine.tenant_limits(&tenant);
    let deployment =
        engine.effective_limits(&palisade_policy::Deployment::new(tenant, manifest.clone()));
    Some(palisade_model::kv::KvQuota {
        max_keys: tenant_limits.get(LimitKey::KvKeys),
        max_bytes: tenant_limits.get(LimitKey::KvBytes),
        namespace_max_keys: deployment.get(LimitKey::KvKeys),
        namespace_max_bytes: deployment.get(LimitKey::KvBytes),
    })
}

pub fn manifest_limits(local: &LocalExtension, policy: Option<Limits>) -> Limits {
    let limits = Limits::resolve(
        local.manifest.limits.get_ref(),
        &Limits::DEFAULT,
        &Limits::CEILING,
    );
    policy.map_or(limits, |p| limits.min(&p))
}

//! Where `run` and `test` execute extensions: in a jailed per-tenant worker process by
//! default, or in this process with `--no-jail` (debugging only, and said loudly).

use std::sync::Arc;

use palisade_model::{ErrorKind, InvocationError, Limits, Outcome};
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

    pub fn prepare(&self, local: &LocalExtension) -> Prepared {
        let target = match self {
            Self::InProcess(runtime) => {
                Target::InProcess(runtime.load(&local.manifest, &local.wasm))
            }
            Self::Workers(_) => {
                Target::Worker(ExtensionSource::new(local.text.clone(), local.wasm.clone()))
            }
        };
        let name = &local.manifest.extension.name;
        let kv = MemoryKv::new(
            name.as_str(),
            local.manifest.capabilities.kv_namespaces(name),
            LOCAL_KV_OPS,
        );
        Prepared {
            target,
            kv: Arc::new(kv),
        }
    }

    pub async fn invoke(&self, prepared: &Prepared, request: Request, limits: &Limits) -> Outcome {
        prepared.kv.reset_budget(LOCAL_KV_OPS);
        let host: Arc<dyn HostCalls> = Arc::clone(&prepared.kv) as Arc<dyn HostCalls>;
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
pub fn manifest_limits(local: &LocalExtension, policy: Option<Limits>) -> Limits {
    let limits = Limits::resolve(
        local.manifest.limits.get_ref(),
        &Limits::DEFAULT,
        &Limits::CEILING,
    );
    policy.map_or(limits, |p| limits.min(&p))
}

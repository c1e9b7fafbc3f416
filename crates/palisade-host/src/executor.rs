//! Where extensions run: in per-tenant worker processes (jailed by default, plain processes
//! only when the operator turns the jail off), or inside this process for tests and
//! debugging. The same two operations either way: validate a component (compile and check its
//! imports, in the tenant's worker) and invoke it. The server and `palisade run` use this one
//! executor.

use std::path::PathBuf;
use std::sync::Arc;

use palisade_model::{ErrorKind, InvocationError, InvocationRequest, Limits, Manifest, Outcome};
use palisade_runtime::{HostCalls, Runtime, RuntimeConfig};
use palisade_worker::{
    ExtensionSource, JailLauncher, PlainLauncher, PoolSnapshot, Supervisor, SupervisorConfig,
    WorkerCommand,
};

/// How guests are isolated below the wasm sandbox.
#[derive(Debug, Clone)]
pub enum Isolation {
    /// Jailed worker processes (the default). `allow_degraded` runs even when a layer is
    /// missing on this host, and says so in every outcome; otherwise a missing layer refuses.
    Jailed { allow_degraded: bool },
    /// Unconfined worker processes: no namespaces, seccomp, Landlock or cgroups.
    Plain,
    /// Inside this process: no worker at all (tests and debugging only), 16 invocations at
    /// once; [`Executor::in_process`] takes other runtime settings.
    InProcess,
}

/// The worker program: the `palisade` binary (which embeds the worker and the jail launcher
/// as hidden subcommands) or any binary that does the same.
#[derive(Debug, Clone)]
pub struct WorkerProgram {
    pub program: PathBuf,
    /// Arguments that make it a worker (`__worker`); `--jailed` is added for jails.
    pub worker_args: Vec<String>,
    /// Arguments that make it the jail launcher (`__jail-launcher`).
    pub launcher_args: Vec<String>,
}

/// Runs invocations.
pub enum Executor {
    Workers(Supervisor),
    InProcess(Box<Runtime>),
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Workers(supervisor) => f.debug_tuple("Workers").field(supervisor).finish(),
            Self::InProcess(_) => f.write_str("InProcess"),
        }
    }
}

/// The executor could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error("could not prepare the jail for workers: {0}")]
    Jail(String),
    #[error("could not start the in-process wasm runtime: {0}")]
    Runtime(#[from] palisade_runtime::RuntimeError),
}

impl Executor {
    /// `uids` holds each tenant's host uid slot (from the store); jailed workers run under the
    /// uid of their tenant's slot.
    pub fn new(
        isolation: &Isolation,
        program: &WorkerProgram,
        pool: SupervisorConfig,
        uids: palisade_worker::jailed::TenantUids,
    ) -> Result<Self, ExecutorError> {
        let mut worker_args = program.worker_args.clone();
        match isolation {
            Isolation::InProcess => Self::in_process(RuntimeConfig {
                max_concurrent: 16,
                ..Default::default()
            }),
            Isolation::Plain => {
                let launcher = PlainLauncher {
                    command: WorkerCommand {
                        program: program.program.clone(),
                        args: worker_args.into_iter().map(Into::into).collect(),
                    },
                };
                Ok(Self::Workers(Supervisor::new(Arc::new(launcher), pool)))
            }
            Isolation::Jailed { allow_degraded } => {
                worker_args.push("--jailed".into());
                let mut template = palisade_jail::JailConfig::new("unused", 0, 0);
                template.mode = palisade_worker::jailed::mode(*allow_degraded);
                template.launcher = Some(program.program.clone());
                template.launcher_args = program.launcher_args.iter().map(Into::into).collect();
                let command = WorkerCommand {
                    program: program.program.clone(),
                    args: worker_args.into_iter().map(Into::into).collect(),
                };
                let launcher = JailLauncher::new(command, template)
                    .map_err(|e| ExecutorError::Jail(e.to_string()))?
                    .with_uids(uids);
                Ok(Self::Workers(Supervisor::new(Arc::new(launcher), pool)))
            }
        }
    }

    /// Runs every invocation inside this process, with no worker below the wasm sandbox.
    pub fn in_process(config: RuntimeConfig) -> Result<Self, ExecutorError> {
        Ok(Self::InProcess(Box::new(Runtime::new(config)?)))
    }

    /// Installs every tenant's worker-level limits: jailed workers get them in their cgroup,
    /// running ones at once. Plain and in-process execution have no per-tenant worker limits.
    pub fn set_worker_limits(&self, limits: palisade_worker::WorkerLimitTable) {
        if let Self::Workers(supervisor) = self {
            supervisor.set_worker_limits(limits);
        }
    }

    /// Compiles and checks `source` where `tenant`'s invocations will run it.
    pub async fn validate(
        &self,
        tenant: &str,
        source: &ExtensionSource,
    ) -> Result<(), InvocationError> {
        match self {
            Self::Workers(supervisor) => supervisor.load(tenant, source).await,
            Self::InProcess(runtime) => {
                let manifest = Manifest::parse(&source.manifest)
                    .map_err(|e| InvocationError::new(ErrorKind::InvalidManifest, e.to_string()))?;
                runtime.load(&manifest, &source.wasm).map(|_| ())
            }
        }
    }

    /// Runs one invocation; `host` answers its key-value calls.
    pub async fn invoke(
        &self,
        tenant: &str,
        source: &ExtensionSource,
        request: InvocationRequest,
        limits: &Limits,
        host: Arc<dyn HostCalls>,
    ) -> Outcome {
        match self {
            Self::Workers(supervisor) => {
                supervisor
                    .invoke_with(tenant, source, request, limits, host)
                    .await
            }
            Self::InProcess(runtime) => {
                let loaded = Manifest::parse(&source.manifest)
                    .map_err(|e| InvocationError::new(ErrorKind::InvalidManifest, e.to_string()))
                    .and_then(|manifest| runtime.load(&manifest, &source.wasm));
                match loaded {
                    Ok(extension) => runtime.invoke_with(&extension, request, limits, host).await,
                    Err(error) => Outcome::rejected(error),
                }
            }
        }
    }

    /// The worker pool's counters, when there is a pool.
    pub fn pool_snapshot(&self) -> Option<PoolSnapshot> {
        match self {
            Self::Workers(supervisor) => Some(supervisor.snapshot()),
            Self::InProcess(_) => None,
        }
    }

    pub async fn shutdown(&self) {
        if let Self::Workers(supervisor) = self {
            supervisor.shutdown().await;
        }
    }
}

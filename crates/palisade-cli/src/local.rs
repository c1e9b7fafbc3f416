//! The local profile of `palisade run` and `palisade test`: the same core a server runs
//! (`palisade-host`) with local stand-ins for what only a server has. The extension runs in a
//! jailed worker of the local tenant by default, or in this process with `--no-jail`
//! (debugging only, and said loudly). Its limits, key-value quotas and grants come from the
//! shipped baseline (and `--policy`), exactly as a server with that policy computes them;
//! key-value state lives in memory for the command's lifetime; outbound HTTP goes through a
//! local egress gateway with `--egress` (the manifest's destinations and the gateway's address
//! checks; no Cedar layers and no secrets, so nothing is injected).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use palisade_host::{
    DeploymentPlan, EgressDecisions, EgressService, Executor, Host, Isolation, MemoryKv, NoEvents,
    NoSecrets, Services, WorkerProgram,
};
use palisade_model::{ErrorKind, InvocationError, InvocationRequest, Limits, Outcome};
use palisade_policy::{CompiledLayer, PolicyDocument, PolicyEngine, Scope, TenantId};
use palisade_worker::ExtensionSource;

use crate::EngineArgs;
use crate::load::LocalExtension;

/// The tenant local runs are attributed to (its own cgroup and uid) unless `--policy` is a
/// tenant layer, which names its own.
const LOCAL_TENANT: &str = "local";

/// The local host and the one extension it runs.
pub struct Local {
    host: Host,
    plan: DeploymentPlan,
    /// Numbers this command's invocations (`inv-local-N`).
    invocations: AtomicU64,
}

fn internal(error: impl std::fmt::Display) -> InvocationError {
    InvocationError::new(ErrorKind::Internal, error.to_string())
}

/// `--policy FILE`: a policy document, validated and compiled when the arguments are parsed.
pub fn parse_policy_layer(path: &str) -> Result<CompiledLayer, String> {
    PolicyDocument::load(Path::new(path))
        .and_then(|document| document.compile())
        .map_err(|e| e.to_string())
}

/// The tenant layer of the local tenant when `--policy` gives none: it permits everything,
/// so the baseline alone decides (on a server a tenant without a policy is denied everything;
/// locally that would only hide what the baseline allows).
const LOCAL_TENANT_POLICY: &str = r#"format = 1
layer = "tenant"
tenant = "local"
description = "local runs: the baseline alone decides"

[cedar]
text = '''
@id("local-permit-all")
permit (principal, action, resource);
'''
"#;

/// The policy local runs are held to: the shipped baseline, and `policy` on top (a baseline
/// layer replaces the shipped one; a tenant layer is installed, and runs are that tenant's).
fn local_policy(
    policy: Option<&CompiledLayer>,
) -> Result<(Arc<PolicyEngine>, TenantId), InvocationError> {
    let mut engine = PolicyEngine::shipped().map_err(internal)?;
    let mut tenant = TenantId::new(LOCAL_TENANT).map_err(internal)?;
    let local_layer = || {
        PolicyDocument::parse(LOCAL_TENANT_POLICY, None)
            .and_then(|document| document.compile())
            .map_err(internal)
    };
    match policy.map(|layer| (layer, layer.scope().clone())) {
        None => engine.install(local_layer()?),
        Some((layer, Scope::Baseline)) => {
            engine = PolicyEngine::new(layer.clone()).map_err(|e| {
                InvocationError::new(ErrorKind::InvalidManifest, format!("--policy: {e}"))
            })?;
            engine.install(local_layer()?);
        }
        Some((layer, Scope::Tenant(owner))) => {
            tenant = owner;
            engine.install(layer.clone());
        }
    }
    Ok((Arc::new(engine), tenant))
}

impl Local {
    /// The executor `args` ask for and the plan of `local` under the local policy.
    pub fn new(
        args: &EngineArgs,
        local: &LocalExtension,
        policy: Option<&CompiledLayer>,
    ) -> Result<Self, InvocationError> {
        let (engine, tenant) = local_policy(policy)?;
        let executor = if args.no_jail {
            eprintln!(
                "WARNING: --no-jail: the extension runs inside this process, with no worker process, \
                 namespaces, seccomp, Landlock or cgroups below the wasm sandbox. Use it only to debug."
            );
            Executor::in_process(args.runtime_config()).map_err(internal)?
        } else {
            let program = WorkerProgram {
                program: palisade_worker::jailed::current_exe().map_err(internal)?,
                worker_args: vec!["__worker".into()],
                launcher_args: vec!["__jail-launcher".into()],
            };
            let isolation = Isolation::Jailed {
                allow_degraded: args.allow_degraded,
            };
            Executor::new(&isolation, &program, Default::default(), Default::default())
                .map_err(internal)?
        };
        executor.set_worker_limits(palisade_host::plan::worker_limits(&engine));
        let egress = args.egress.then(|| EgressService {
            gateway: Arc::new(palisade_egress::Gateway::new(
                Arc::new(palisade_egress::SystemResolver),
                None,
            )),
            decisions: EgressDecisions::ManifestOnly,
            allow_private: args.egress_allow_private.clone(),
        });
        let host = Host::new(
            Arc::new(executor),
            Services {
                kv: Arc::new(MemoryKv::default()),
                secrets: Arc::new(NoSecrets),
                egress,
                egress_off: "outbound HTTP from a local run needs --egress (a local egress gateway)",
                events: Arc::new(NoEvents),
            },
        );
        let source = ExtensionSource::new(local.text.clone(), local.wasm.clone());
        let plan = DeploymentPlan::new(&engine, tenant, local.manifest.clone(), source);
        Ok(Self {
            host,
            plan,
            invocations: AtomicU64::new(1),
        })
    }

    /// The limits every invocation runs under.
    pub fn limits(&self) -> &Limits {
        &self.plan.limits
    }

    pub async fn invoke(&self, request: InvocationRequest) -> Outcome {
        let number = self.invocations.fetch_add(1, Ordering::Relaxed);
        self.host
            .invoke(&self.plan, &format!("inv-local-{number}"), request)
            .await
    }

    pub async fn shutdown(&self) {
        self.host.shutdown().await;
    }
}

//! A deployed extension (tenant + manifest) under the policy layers: its effective limits, the
//! capabilities its manifest requests, decisions precomputed for the hot path, and the dry run
//! that tells what a policy change would newly deny or allow.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use palisade_model::{ApiPackage, Manifest};
use serde::Serialize;

use crate::engine::{Decision, PolicyEngine, Reason, ReasonKind};
use crate::limits::{EffectiveLimits, LimitKey};
use crate::request::{Action, CallContext, Principal, Resource, TenantId};

/// An extension deployed for a tenant.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub tenant: TenantId,
    pub manifest: Manifest,
}

impl Deployment {
    pub fn new(tenant: TenantId, manifest: Manifest) -> Self {
        Self { tenant, manifest }
    }

    pub fn principal(&self) -> Principal {
        Principal {
            tenant: self.tenant.clone(),
            name: self.manifest.extension.name.clone(),
            version: self.manifest.extension.version.clone(),
        }
    }

    /// The capabilities the manifest requests. Every 1.x API has `log` and `config`; API 1.1
    /// adds key-value state for the namespaces the manifest lists.
    pub fn requested_actions(&self) -> BTreeSet<Action> {
        let api = &self.manifest.extension.api;
        let v1 = ApiPackage::extension_v1();
        if api.namespace != v1.namespace || api.name != v1.name || api.version.major != 1 {
            return BTreeSet::new();
        }
        let mut actions = BTreeSet::from([Action::LogWrite, Action::ConfigRead]);
        if !self.kv_namespaces().is_empty() {
            actions.extend([Action::KvRead, Action::KvWrite]);
        }
        if !self.manifest.capabilities.http.is_empty() {
            actions.insert(Action::HttpRequest);
        }
        actions
    }

    /// The key-value namespaces the manifest requests, resolved (`self` is the extension).
    pub fn kv_namespaces(&self) -> Vec<String> {
        self.manifest
            .capabilities
            .kv_namespaces(&self.manifest.extension.name)
    }

    /// Every (action, resource) this deployment can ask for that is known at deploy time:
    /// writing its tenant's logs and reading each of its configuration keys.
    pub fn known_checks(&self) -> Vec<(Action, Resource)> {
        let mut checks = vec![(
            Action::LogWrite,
            Resource::LogStream {
                tenant: self.tenant.clone(),
            },
        )];
        for name in self.kv_namespaces() {
            for action in [Action::KvRead, Action::KvWrite] {
                checks.push((
                    action,
                    Resource::KvNamespace {
                        tenant: self.tenant.clone(),
                        name: name.clone(),
                    },
                ));
            }
        }
        for key in self.manifest.config_values().into_keys() {
            checks.push((
                Action::ConfigRead,
                Resource::ConfigKey {
                    tenant: self.tenant.clone(),
                    key,
                },
            ));
        }
        checks
    }
}

impl PolicyEngine {
    /// The limits one invocation of `deployment` runs under: platform ∩ baseline ∩ tenant ∩
    /// manifest request.
    pub fn effective_limits(&self, deployment: &Deployment) -> EffectiveLimits {
        self.tenant_limits(&deployment.tenant)
            .cap_manifest(deployment.manifest.limits.get_ref())
    }

    /// The full decision for a deployment: the manifest must request the capability and
    /// every policy layer must allow it.
    pub fn authorize_deployment(
        &self,
        deployment: &Deployment,
        action: Action,
        resource: &Resource,
        context: &CallContext,
    ) -> Decision {
        if !deployment.requested_actions().contains(&action) {
            return not_requested(action);
        }
        self.authorize(&deployment.principal(), action, resource, context)
    }

    /// Precomputes the decisions of `deployment` that cannot change between calls: every
    /// known check whose action no layer decides by `context`, and every action the manifest
    /// does not request. Rebuild after any policy change.
    pub fn prepare(self: &Arc<Self>, deployment: &Deployment) -> PreparedDeployment {
        let principal = deployment.principal();
        let requested = deployment.requested_actions();
        let mut decisions: Vec<HashMap<Resource, Decision>> =
            Action::ALL.iter().map(|_| HashMap::new()).collect();
        let context = CallContext::default();
        for (action, resource) in deployment.known_checks() {
            if requested.contains(&action) && !self.depends_on_context(&deployment.tenant, action) {
                let decision = self.authorize(&principal, action, &resource, &context);
                if let Some(map) = decisions.get_mut(action.index()) {
                    map.insert(resource, decision);
                }
            }
        }
        let not_requested = Action::ALL
            .iter()
            .map(|a| (!requested.contains(a)).then(|| not_requested(*a)))
            .collect();
        PreparedDeployment {
            engine: Arc::clone(self),
            principal,
            limits: self.effective_limits(deployment),
            decisions,
            not_requested,
        }
    }
}

fn not_requested(action: Action) -> Decision {
    Decision::deny(Reason {
        layer: "manifest".into(),
        policy: None,
        effect: ReasonKind::NotRequested,
        message: Some(format!("the manifest does not request {action}")),
    })
}

/// A deployment with its decisions precomputed: what the runtime holds per loaded extension.
#[derive(Debug)]
pub struct PreparedDeployment {
    engine: Arc<PolicyEngine>,
    principal: Principal,
    limits: EffectiveLimits,
    /// Per action (by index), the precomputed decision per resource.
    decisions: Vec<HashMap<Resource, Decision>>,
    not_requested: Vec<Option<Decision>>,
}

impl PreparedDeployment {
    pub fn limits(&self) -> &EffectiveLimits {
        &self.limits
    }

    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// How many decisions were precomputed.
    pub fn precomputed(&self) -> usize {
        self.decisions.iter().map(HashMap::len).sum()
    }

    /// The decision for one host call: precomputed when possible, else evaluated.
    pub fn authorize(
        &self,
        action: Action,
        resource: &Resource,
        context: &CallContext,
    ) -> Cow<'_, Decision> {
        if let Some(Some(decision)) = self.not_requested.get(action.index()) {
            return Cow::Borrowed(decision);
        }
        if let Some(decision) = self.lookup(action, resource) {
            return Cow::Borrowed(decision);
        }
        Cow::Owned(
            self.engine
                .authorize(&self.principal, action, resource, context),
        )
    }

    fn lookup(&self, action: Action, resource: &Resource) -> Option<&Decision> {
        self.decisions.get(action.index())?.get(resource)
    }
}

/// One capability whose decision a change flips.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flip {
    pub action: Action,
    pub resource: String,
    /// The reasons of the new decision.
    pub reasons: Vec<Reason>,
}

/// One limit a change moves for a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LimitChange {
    pub limit: LimitKey,
    pub before: u64,
    pub after: u64,
    /// `before` and `after` as a person reads them.
    pub text: String,
}

/// What a change does to one deployed extension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeploymentImpact {
    pub extension: String,
    pub newly_denied: Vec<Flip>,
    pub newly_allowed: Vec<Flip>,
    pub limits: Vec<LimitChange>,
}

/// Evaluates every deployment's known checks and limits under `before` and `after`, and lists
/// those that change.
pub fn dry_run(
    before: &PolicyEngine,
    after: &PolicyEngine,
    deployments: &[Deployment],
    context: &CallContext,
) -> Vec<DeploymentImpact> {
    let mut impacts = Vec::new();
    for deployment in deployments {
        let mut impact = DeploymentImpact {
            extension: deployment.principal().to_string(),
            newly_denied: Vec::new(),
            newly_allowed: Vec::new(),
            limits: Vec::new(),
        };
        for (action, resource) in deployment.known_checks() {
            let old = before.authorize_deployment(deployment, action, &resource, context);
            let new = after.authorize_deployment(deployment, action, &resource, context);
            let flip = || Flip {
                action,
                resource: resource.cedar_ref(),
                reasons: new.reasons.clone(),
            };
            match (old.allowed, new.allowed) {
                (true, false) => impact.newly_denied.push(flip()),
                (false, true) => impact.newly_allowed.push(flip()),
                _ => {}
            }
        }
        let (old, new) = (
            before.effective_limits(deployment),
            after.effective_limits(deployment),
        );
        for (key, before) in old.iter() {
            let after = new.get(key);
            if before != after {
                impact.limits.push(LimitChange {
                    limit: key,
                    before,
                    after,
                    text: format!("{} -> {}", key.format(before), key.format(after)),
                });
            }
        }
        if !(impact.newly_denied.is_empty()
            && impact.newly_allowed.is_empty()
            && impact.limits.is_empty())
        {
            impacts.push(impact);
        }
    }
    impacts
}

//! Compiling documents into Cedar policy sets, and the decision itself: every layer must allow,
//! a `forbid` in any layer denies, an evaluation error denies, and the reasons name the
//! policies that decided.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use cedar_policy::{
    ActionConstraint, AuthorizationError, Authorizer, Effect, PolicyId, PolicySet, Request, Schema,
    ValidationMode, Validator,
};
use miette::Diagnostic;
use serde::Serialize;

use crate::document::{PolicyDocument, Scope};
use crate::error::{Location, PolicyError, SchemaProblem};
use crate::limits::EffectiveLimits;
use crate::request::{Action, CallContext, CedarNames, Principal, Resource, TenantId};

/// The Cedar schema every policy is validated against.
pub const SCHEMA: &str = include_str!("../schema/palisade.cedarschema");

/// The parsed schema, shared.
pub fn schema() -> Result<&'static Schema, PolicyError> {
    static SCHEMA_CELL: OnceLock<Result<Schema, String>> = OnceLock::new();
    SCHEMA_CELL
        .get_or_init(|| {
            Schema::from_cedarschema_str(SCHEMA)
                .map(|(schema, _warnings)| schema)
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| PolicyError::Internal(format!("the Palisade schema is invalid: {e}")))
}

/// A document whose Cedar parsed and validated: ready to decide.
#[derive(Debug, Clone)]
pub struct CompiledLayer {
    document: PolicyDocument,
    policies: PolicySet,
    /// The same policies split by the action they can apply to (indexed by `Action::index`):
    /// a request is evaluated against its action's slice only.
    by_action: Vec<PolicySet>,
    /// The policy ids in source order.
    ids: Vec<String>,
    /// Actions some policy of this layer decides using `context`: their decisions cannot be
    /// precomputed.
    context_actions: BTreeSet<Action>,
}

impl CompiledLayer {
    pub fn document(&self) -> &PolicyDocument {
        &self.document
    }

    pub fn scope(&self) -> &Scope {
        &self.document.scope
    }

    /// The policy ids in source order.
    pub fn policy_ids(&self) -> &[String] {
        &self.ids
    }

    /// A policy's text, as Cedar prints it.
    pub fn policy_text(&self, id: &str) -> Option<String> {
        let id = PolicyId::new(id);
        self.policies.policy(&id).map(ToString::to_string)
    }

    /// A policy's effect.
    pub fn policy_effect(&self, id: &str) -> Option<Effect> {
        self.policies.policy(&PolicyId::new(id)).map(|p| p.effect())
    }

    pub(crate) fn depends_on_context(&self, action: Action) -> bool {
        self.context_actions.contains(&action)
    }
}

fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

fn first_location<D: Diagnostic + ?Sized>(diagnostic: &D, text: &str) -> Option<Location> {
    diagnostic
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|label| Location::of(text, label.offset()))
}

/// Does this policy's JSON form read the variable `context` anywhere?
fn reads_context(json: &serde_json::Value) -> bool {
    match json {
        serde_json::Value::Object(map) => map.iter().any(|(key, value)| {
            (key == "Var" && value.as_str() == Some("context")) || reads_context(value)
        }),
        serde_json::Value::Array(items) => items.iter().any(reads_context),
        _ => false,
    }
}

impl PolicyDocument {
    /// Parses the Cedar text, names each policy (`@id("...")` or `policyN` by position),
    /// refuses templates and duplicate ids, and validates against the schema (strict mode).
    pub fn compile(&self) -> Result<CompiledLayer, PolicyError> {
        let source_name = self.cedar_source.clone();
        let parsed =
            PolicySet::from_str(&self.cedar).map_err(|errors| PolicyError::CedarSyntax {
                source_name: source_name.clone(),
                location: first_location(&errors, &self.cedar),
                message: errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            })?;
        if let Some(template) = parsed.templates().next() {
            return Err(PolicyError::Template {
                source_name,
                policy: template
                    .annotation("id")
                    .map_or_else(|| template.id().to_string(), str::to_owned),
            });
        }
        // `from_str` numbers policies policy0, policy1, ... in source order.
        let mut originals: Vec<_> = parsed.policies().collect();
        originals.sort_by_key(|p| {
            p.id()
                .to_string()
                .trim_start_matches("policy")
                .parse::<usize>()
                .unwrap_or(usize::MAX)
        });
        let mut policies = PolicySet::new();
        let mut ids = Vec::with_capacity(originals.len());
        let mut context_actions = BTreeSet::new();
        let mut by_action: Vec<PolicySet> = Action::ALL.iter().map(|_| PolicySet::new()).collect();
        for policy in originals {
            let id = policy
                .annotation("id")
                .map_or_else(|| policy.id().to_string(), str::to_owned);
            if !valid_id(&id) {
                return Err(PolicyError::InvalidPolicyId {
                    source_name,
                    policy: id,
                });
            }
            if ids.contains(&id) {
                return Err(PolicyError::DuplicatePolicyId {
                    source_name,
                    policy: id,
                });
            }
            let json = policy
                .to_json()
                .map_err(|e| PolicyError::Internal(e.to_string()))?;
            // The schema has no action groups, so a policy applies exactly to the actions its
            // scope names (validation below refuses unknown actions).
            let actions: Vec<Action> = match policy.action_constraint() {
                ActionConstraint::Any => Action::ALL.to_vec(),
                ActionConstraint::Eq(uid) => action_of(&uid).into_iter().collect(),
                ActionConstraint::In(uids) => uids.iter().filter_map(action_of).collect(),
            };
            if reads_context(&json) {
                context_actions.extend(actions.iter().copied());
            }
            let renamed = policy.new_id(PolicyId::new(&id));
            for action in &actions {
                if let Some(slice) = by_action.get_mut(action.index()) {
                    slice
                        .add(renamed.clone())
                        .map_err(|e| PolicyError::Internal(e.to_string()))?;
                }
            }
            policies
                .add(renamed)
                .map_err(|e| PolicyError::Internal(e.to_string()))?;
            ids.push(id);
        }
        let validation =
            Validator::new(schema()?.clone()).validate(&policies, ValidationMode::Strict);
        if !validation.validation_passed() {
            let problems = validation
                .validation_errors()
                .map(|error| SchemaProblem {
                    policy: error.policy_id().to_string(),
                    location: first_location(error, &self.cedar),
                    message: error.to_string(),
                })
                .collect();
            return Err(PolicyError::Schema {
                source_name,
                problems,
            });
        }
        Ok(CompiledLayer {
            document: self.clone(),
            policies,
            by_action,
            ids,
            context_actions,
        })
    }
}

fn action_of(uid: &cedar_policy::EntityUid) -> Option<Action> {
    Action::from_str(uid.id().unescaped()).ok()
}

/// Why a layer allowed or denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonKind {
    /// This permit policy matched.
    Permit,
    /// This forbid policy matched: deny, whatever else matched.
    Forbid,
    /// The layer has policies, but no permit matched (Cedar's default deny).
    NoPermit,
    /// There is no policy for this tenant: least privilege denies.
    NoPolicy,
    /// A policy could not be evaluated (or the request not built): denied, fail closed.
    Error,
    /// The manifest does not request this capability: nothing beyond the manifest is granted.
    NotRequested,
}

/// One reason of a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// `baseline`, `tenant:NAME` or `manifest`.
    pub layer: String,
    /// The deciding policy's id, when one decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    pub effect: ReasonKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A decision and the policies that made it. Denied: the forbids, default denies and errors
/// of the layers that denied. Allowed: the permits of every layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub allowed: bool,
    pub reasons: Vec<Reason>,
}

impl Decision {
    pub(crate) fn deny(reason: Reason) -> Self {
        Self {
            allowed: false,
            reasons: vec![reason],
        }
    }

    /// The decision as the lines `palisade policy explain` prints.
    pub fn render(&self, principal: &Principal, action: Action, resource: &Resource) -> String {
        let address = match resource {
            Resource::Host(host) => host
                .ip
                .map(|ip| format!(" (ip {})", ip.to_canonical()))
                .unwrap_or_default(),
            _ => String::new(),
        };
        let mut out = format!(
            "{} {action} by {principal} on {resource}{address}\n",
            if self.allowed { "ALLOW" } else { "DENY" }
        );
        for reason in &self.reasons {
            let effect = serde_json::to_value(reason.effect).unwrap_or_default();
            out.push_str(&format!(
                "  {:<13} {:<16} {}",
                effect.as_str().unwrap_or("?"),
                reason.layer,
                reason.policy.as_deref().unwrap_or("-")
            ));
            if let Some(message) = &reason.message {
                out.push_str(&format!("  ({message})"));
            }
            out.push('\n');
        }
        out
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", if self.allowed { "allow" } else { "deny" })
    }
}

/// The policy layers in force: one baseline and any number of tenant policies. Decisions for a
/// tenant read the baseline and that tenant's layer only, so the cost does not grow with the
/// number of tenants.
#[derive(Debug)]
pub struct PolicyEngine {
    baseline: CompiledLayer,
    tenants: HashMap<TenantId, CompiledLayer>,
    names: CedarNames,
    authorizer: Authorizer,
}

impl PolicyEngine {
    /// An engine with `baseline` and no tenant policies (every tenant denied until it has one).
    pub fn new(baseline: CompiledLayer) -> Result<Self, PolicyError> {
        if baseline.scope() != &Scope::Baseline {
            return Err(PolicyError::Layer {
                location: None,
                message: format!("{} is not a baseline", baseline.scope()),
            });
        }
        Ok(Self {
            baseline,
            tenants: HashMap::new(),
            names: CedarNames::new().map_err(PolicyError::Internal)?,
            authorizer: Authorizer::new(),
        })
    }

    /// An engine with the shipped baseline.
    pub fn shipped() -> Result<Self, PolicyError> {
        Self::new(PolicyDocument::shipped_baseline()?.compile()?)
    }

    /// Installs a layer: the baseline or a tenant's policy, replacing the one in force.
    pub fn install(&mut self, layer: CompiledLayer) {
        match layer.scope().clone() {
            Scope::Baseline => self.baseline = layer,
            Scope::Tenant(tenant) => {
                self.tenants.insert(tenant, layer);
            }
        }
    }

    /// Removes a tenant's policy (its extensions are denied everything afterwards).
    pub fn remove_tenant(&mut self, tenant: &TenantId) -> Option<CompiledLayer> {
        self.tenants.remove(tenant)
    }

    pub fn baseline(&self) -> &CompiledLayer {
        &self.baseline
    }

    pub fn layer(&self, scope: &Scope) -> Option<&CompiledLayer> {
        match scope {
            Scope::Baseline => Some(&self.baseline),
            Scope::Tenant(tenant) => self.tenants.get(tenant),
        }
    }

    pub fn tenants(&self) -> impl Iterator<Item = &TenantId> {
        self.tenants.keys()
    }

    /// The limits of a tenant without a layer of its own: platform ceilings capped by the
    /// baseline.
    pub fn baseline_limits(&self) -> EffectiveLimits {
        EffectiveLimits::platform().cap(&self.baseline.document.limits)
    }

    /// The tenant-wide limits: platform ceilings, capped by the baseline and the tenant layer.
    pub fn tenant_limits(&self, tenant: &TenantId) -> EffectiveLimits {
        let limits = self.baseline_limits();
        match self.tenants.get(tenant) {
            Some(layer) => limits.cap(&layer.document.limits),
            None => limits,
        }
    }

    /// Whether some layer deciding for `tenant` reads `context` for `action`.
    pub(crate) fn depends_on_context(&self, tenant: &TenantId, action: Action) -> bool {
        self.baseline.depends_on_context(action)
            || self
                .tenants
                .get(tenant)
                .is_some_and(|layer| layer.depends_on_context(action))
    }

    /// Decides whether `principal` may do `action` on `resource`, by the policy layers alone
    /// (see `Deployment` for the manifest's part). Every layer must allow; a `forbid` anywhere
    /// denies; a request that cannot be evaluated is denied.
    pub fn authorize(
        &self,
        principal: &Principal,
        action: Action,
        resource: &Resource,
        context: &CallContext,
    ) -> Decision {
        let request = match self.request(principal, action, resource, context) {
            Ok(request) => request,
            Err(message) => {
                return Decision::deny(Reason {
                    layer: "request".into(),
                    policy: None,
                    effect: ReasonKind::Error,
                    message: Some(message),
                });
            }
        };
        let (request, entities) = request;
        let tenant_scope = format!("tenant:{}", principal.tenant);
        let baseline = self.evaluate("baseline", &self.baseline, action, &request, &entities);
        let tenant = match self.tenants.get(&principal.tenant) {
            Some(layer) => self.evaluate(&tenant_scope, layer, action, &request, &entities),
            None => Decision::deny(Reason {
                layer: tenant_scope,
                policy: None,
                effect: ReasonKind::NoPolicy,
                message: Some("the tenant has no policy".into()),
            }),
        };
        if baseline.allowed && tenant.allowed {
            let mut reasons = baseline.reasons;
            reasons.extend(tenant.reasons);
            Decision {
                allowed: true,
                reasons,
            }
        } else {
            let reasons = [baseline, tenant]
                .into_iter()
                .filter(|d| !d.allowed)
                .flat_map(|d| d.reasons)
                .collect();
            Decision {
                allowed: false,
                reasons,
            }
        }
    }

    fn request(
        &self,
        principal: &Principal,
        action: Action,
        resource: &Resource,
        context: &CallContext,
    ) -> Result<(Request, cedar_policy::Entities), String> {
        let entities = self.names.entities(principal, resource)?;
        let request = Request::new(
            self.names.principal(principal),
            self.names.action(action)?,
            self.names.resource(resource)?,
            context.to_cedar()?,
            None,
        )
        .map_err(|e| e.to_string())?;
        Ok((request, entities))
    }

    fn evaluate(
        &self,
        layer_name: &str,
        layer: &CompiledLayer,
        action: Action,
        request: &Request,
        entities: &cedar_policy::Entities,
    ) -> Decision {
        let Some(slice) = layer.by_action.get(action.index()) else {
            return Decision::deny(Reason {
                layer: layer_name.to_owned(),
                policy: None,
                effect: ReasonKind::Error,
                message: Some(format!("no policies indexed for {action}")),
            });
        };
        let response = self.authorizer.is_authorized(request, slice, entities);
        let diagnostics = response.diagnostics();
        let reason = |policy: &PolicyId, effect, message| Reason {
            layer: layer_name.to_owned(),
            policy: Some(policy.to_string()),
            effect,
            message,
        };
        let errors: Vec<Reason> = diagnostics
            .errors()
            .map(|error| match error {
                AuthorizationError::PolicyEvaluationError(e) => reason(
                    e.policy_id(),
                    ReasonKind::Error,
                    Some(e.inner().to_string()),
                ),
            })
            .collect();
        if !errors.is_empty() {
            // Cedar skips a policy that errors; a skipped forbid would fail open, so any
            // evaluation error denies.
            return Decision {
                allowed: false,
                reasons: errors,
            };
        }
        let allowed = response.decision() == cedar_policy::Decision::Allow;
        let mut reasons: Vec<Reason> = diagnostics
            .reason()
            .map(|id| {
                let effect = match layer.policies.policy(id).map(|p| p.effect()) {
                    Some(Effect::Forbid) => ReasonKind::Forbid,
                    _ => ReasonKind::Permit,
                };
                reason(id, effect, None)
            })
            .collect();
        reasons.sort_by(|a, b| a.policy.cmp(&b.policy));
        if !allowed && reasons.is_empty() {
            reasons.push(Reason {
                layer: layer_name.to_owned(),
                policy: None,
                effect: ReasonKind::NoPermit,
                message: Some("no permit matched".into()),
            });
        }
        Decision { allowed, reasons }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-action slices decide exactly like the whole policy set.
    #[test]
    fn action_slices_decide_like_the_whole_set() {
        let tenant = PolicyDocument::parse(
            r#"
format = 1
layer = "tenant"
tenant = "acme"
[cedar]
text = '''
permit (principal, action, resource);
permit (principal, action == Action::"kv:read", resource is KvNamespace) when { resource.name == "a" };
forbid (principal, action in [Action::"kv:write", Action::"log:write"], resource) when { context.time > 100 };
forbid (principal, action == Action::"http:request", resource is Host) when { resource.port == 8080 };
'''
"#,
            None,
        )
        .and_then(|d| d.compile())
        .unwrap();
        let mut engine = PolicyEngine::shipped().unwrap();
        engine.install(tenant.clone());
        let principal = Principal::parse("acme/x@1.0.0").unwrap();
        let acme = principal.tenant.clone();
        for action in Action::ALL {
            for text in [
                "kv:a",
                "kv:b",
                "kv:globex/a",
                "log",
                "config:k",
                "secret:s",
                "https://203.0.113.1/",
                "https://203.0.113.1:8080/",
                "http://10.0.0.1/",
            ] {
                let resource = Resource::parse(text, &acme).unwrap();
                for time in [0, 1_000] {
                    let context = CallContext::at(time);
                    let (request, entities) = engine
                        .request(&principal, action, &resource, &context)
                        .unwrap();
                    let sliced = engine.evaluate("t", &tenant, action, &request, &entities);
                    let whole =
                        engine
                            .authorizer
                            .is_authorized(&request, &tenant.policies, &entities);
                    assert_eq!(
                        sliced.allowed,
                        whole.decision() == cedar_policy::Decision::Allow,
                        "{action} {text} {time}"
                    );
                    let mut whole_reasons: Vec<String> = whole
                        .diagnostics()
                        .reason()
                        .map(ToString::to_string)
                        .collect();
                    whole_reasons.sort();
                    let sliced_reasons: Vec<String> = sliced
                        .reasons
                        .iter()
                        .filter_map(|r| r.policy.clone())
                        .collect();
                    assert_eq!(sliced_reasons, whole_reasons, "{action} {text} {time}");
                }
            }
        }
    }
}

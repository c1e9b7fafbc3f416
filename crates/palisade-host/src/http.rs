//! The outbound HTTP host service's seams: the deployment's policy decision at the exact
//! address about to be used, and where a tenant's secrets come from for credential injection.
//! The gateway itself (`palisade-egress`) enforces the rest.

use std::sync::Arc;

use palisade_policy::{Action, CallContext, PreparedDeployment, Resource};

/// A deployment's policy decisions for outbound HTTP, at the exact address about to be used.
#[derive(Debug)]
pub struct DeploymentEgressPolicy {
    pub prepared: Arc<PreparedDeployment>,
    pub invocation_id: String,
}

impl palisade_egress::EgressPolicy for DeploymentEgressPolicy {
    fn authorize(
        &self,
        destination: &palisade_model::egress::Destination,
        ip: std::net::IpAddr,
        method: &str,
    ) -> Result<(), String> {
        let resource = Resource::Host(palisade_policy::Host {
            scheme: destination.scheme.clone(),
            hostname: destination.host.clone(),
            port: destination.port,
            path: destination.path.clone(),
            ip: Some(ip),
        });
        let context = CallContext {
            method: Some(method.to_owned()),
            invocation_id: Some(self.invocation_id.clone()),
            ..CallContext::now()
        };
        let decision = self
            .prepared
            .authorize(Action::HttpRequest, &resource, &context);
        if decision.allowed {
            return Ok(());
        }
        let reasons: Vec<String> = decision
            .reasons
            .iter()
            .map(|r| match (&r.policy, &r.message) {
                (Some(policy), _) => format!("{} `{policy}`", r.layer),
                (None, Some(message)) => format!("{}: {message}", r.layer),
                (None, None) => r.layer.clone(),
            })
            .collect();
        Err(format!("denied by policy ({})", reasons.join(", ")))
    }
}

/// Where every tenant's secrets live (the encrypted store on a server; none locally).
#[async_trait::async_trait]
pub trait SecretBackend: Send + Sync + std::fmt::Debug {
    async fn secret(&self, tenant: &str, name: &str) -> Result<Option<Vec<u8>>, String>;
}

#[async_trait::async_trait]
impl SecretBackend for palisade_store::Store {
    async fn secret(&self, tenant: &str, name: &str) -> Result<Option<Vec<u8>>, String> {
        self.secret_value(tenant, name)
            .await
            .map_err(|e| e.to_string())
    }
}

/// No secrets at all: a credential rule finds its secret missing and the request is refused.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoSecrets;

#[async_trait::async_trait]
impl SecretBackend for NoSecrets {
    async fn secret(&self, _: &str, _: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(None)
    }
}

/// One tenant's secrets, for one invocation's credential injection.
#[derive(Debug)]
pub struct TenantSecrets {
    pub backend: Arc<dyn SecretBackend>,
    pub tenant: String,
}

#[async_trait::async_trait]
impl palisade_egress::SecretSource for TenantSecrets {
    async fn secret(&self, name: &str) -> Result<Option<Vec<u8>>, String> {
        self.backend.secret(&self.tenant, name).await
    }
}

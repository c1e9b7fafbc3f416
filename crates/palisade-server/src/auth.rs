//! Authentication (bearer tokens) and authorization (roles × actions, tenant scope).
//!
//! The rule that matters most: a tenant role never learns that another tenant, or anything of
//! it, exists. Every action on another tenant's resources answers exactly like an action on a
//! tenant that does not exist (`404 not_found`), before the role's permissions are even
//! looked at; `403 forbidden` only ever concerns the caller's own tenant or platform actions.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use palisade_api::{ApiErrorKind, PrincipalInfo, Role};
use palisade_store::{AuthenticatedToken, Store, hash_secret, now_ms};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// What a request does, for the permission table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    CreateTenant,
    ListTenants,
    ReadTenant,
    ChangeTenantState,
    CreateToken,
    ListTokens,
    RevokeToken,
    ReadExtensions,
    Publish,
    Review,
    Deploy,
    Invoke,
    ReadTenantPolicy,
    WriteTenantPolicy,
    ReadBaseline,
    WriteBaseline,
    ReadAudit,
    WriteSecrets,
    ListSecrets,
    ReadKeys,
    RotateKeys,
    DestroyState,
    Decommission,
    /// The server's own token-signing key (platform administrators only).
    RotateSigningKey,
    /// `/metrics`: every tenant's names, extensions and outcomes, so platform roles only.
    ReadMetrics,
}

/// The permission table. Tenant roles get these on their own tenant only.
fn role_allows(role: Role, action: Action) -> bool {
    use Action as A;
    match role {
        Role::PlatformAdmin => true,
        Role::PlatformReviewer => matches!(
            action,
            A::ListTenants
                | A::ReadTenant
                | A::ReadExtensions
                | A::Review
                | A::ReadTenantPolicy
                | A::ReadBaseline
                | A::ReadAudit
                | A::ListSecrets
                | A::ReadKeys
                | A::ReadMetrics
        ),
        Role::TenantAdmin => matches!(
            action,
            A::ListTenants
                | A::ReadTenant
                | A::CreateToken
                | A::ListTokens
                | A::RevokeToken
                | A::ReadExtensions
                | A::Publish
                | A::Deploy
                | A::Invoke
                | A::ReadTenantPolicy
                | A::WriteSecrets
                | A::ListSecrets
                | A::ReadKeys
                | A::RotateKeys
                | A::DestroyState
        ),
        Role::TenantDeveloper => matches!(
            action,
            A::ListTenants
                | A::ReadTenant
                | A::ReadExtensions
                | A::Publish
                | A::Invoke
                | A::ReadTenantPolicy
                | A::ListSecrets
        ),
        Role::Invoker => matches!(action, A::Invoke),
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token_id: String,
    pub principal: PrincipalInfo,
    pub expires_ms: i64,
}

impl Caller {
    /// The principal id the audit log records.
    pub fn actor(&self) -> palisade_store::Actor {
        palisade_store::Actor {
            principal: self.principal.id.clone(),
            request_id: crate::telemetry::current_request_id(),
        }
    }

    /// The tenant a tenant role belongs to (`None` for platform roles).
    pub fn own_tenant(&self) -> Option<&str> {
        if self.principal.role.is_platform() {
            None
        } else {
            self.principal.tenant.as_deref()
        }
    }

    /// Whether `tenant` is invisible to this caller.
    pub fn is_foreign(&self, tenant: &str) -> bool {
        self.own_tenant().is_some_and(|own| own != tenant)
    }

    /// Authorizes an action on `tenant`'s resources: another tenant's look absent; then the
    /// role must allow the action.
    pub fn authorize_tenant(&self, action: Action, tenant: &str) -> ApiResult<()> {
        if self.is_foreign(tenant) {
            return Err(ApiError::not_found(format!("tenant {tenant}")));
        }
        self.authorize(action)
    }

    /// Authorizes an action that belongs to no tenant.
    pub fn authorize(&self, action: Action) -> ApiResult<()> {
        if role_allows(self.principal.role, action) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "role {} may not do this ({action:?})",
                self.principal.role
            )))
        }
    }
}

/// Authenticated tokens by the hash of their secret, so a request costs no database read.
/// Bounded; emptied on every revocation, so a revoked token stops working at once. Expiry is
/// checked on every use. Revocation wins over a racing authentication: an authentication that
/// read the database before a revocation committed installs nothing (the generation moved).
#[derive(Debug, Default)]
pub struct TokenCache {
    entries: crate::state::Generational<HashMap<String, AuthenticatedToken>>,
}

const TOKEN_CACHE_ENTRIES: usize = 10_000;

impl TokenCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, AuthenticatedToken>> {
        self.entries.lock()
    }

    /// Forgets every token; call after the revocation has committed.
    pub fn clear(&self) {
        self.entries.invalidate(HashMap::clear);
    }

    pub async fn authenticate(
        &self,
        store: &Store,
        secret: &str,
    ) -> ApiResult<Option<AuthenticatedToken>> {
        let hash = hash_secret(secret);
        let cached = self.lock().get(&hash).cloned();
        if let Some(token) = cached {
            if token.expires_ms > now_ms() {
                return Ok(Some(token));
            }
            self.lock().remove(&hash);
            return Ok(None);
        }
        let seen = self.entries.generation();
        let token = store.authenticate(secret).await?;
        if let Some(token) = &token {
            self.entries.install(seen, |entries| {
                if entries.len() >= TOKEN_CACHE_ENTRIES {
                    entries.clear();
                }
                entries.insert(hash, token.clone());
            });
        }
        Ok(token)
    }
}

fn unauthenticated(message: &str) -> ApiError {
    ApiError::new(ApiErrorKind::Unauthenticated, message)
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| unauthenticated("send a token as `Authorization: Bearer <token>`"))?;
        let secret = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= 256)
            .ok_or_else(|| unauthenticated("the Authorization header is not `Bearer <token>`"))?;
        let token = state
            .tokens
            .authenticate(&state.store, secret)
            .await?
            .ok_or_else(|| unauthenticated("the token is unknown, expired or revoked"))?;
        let caller = Self {
            token_id: token.token_id,
            principal: token.principal,
            expires_ms: token.expires_ms,
        };
        // Tenant scope before anything reads the body: a request for another tenant's
        // resources is answered here, as for a missing tenant, so its body (up to the
        // route's limit) is never buffered or parsed.
        if let Ok(params) = axum::extract::RawPathParams::from_request_parts(parts, state).await
            && let Some((_, segment)) = params.iter().find(|(name, _)| *name == "tenant")
        {
            let tenant = crate::routes::split_verb(segment).0;
            if caller.is_foreign(tenant) {
                return Err(ApiError::not_found(format!("tenant {tenant}")));
            }
        }
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role, tenant: Option<&str>) -> Caller {
        Caller {
            token_id: "tok-1".into(),
            principal: PrincipalInfo {
                id: "p-1".into(),
                name: "test".into(),
                role,
                tenant: tenant.map(str::to_owned),
            },
            expires_ms: i64::MAX,
        }
    }

    #[test]
    fn other_tenants_look_absent_before_permissions_are_checked() {
        let invoker = caller(Role::Invoker, Some("acme"));
        let status = |r: ApiResult<()>| r.err().map(|e| e.status.as_u16());
        assert_eq!(
            status(invoker.authorize_tenant(Action::Invoke, "acme")),
            None
        );
        assert_eq!(
            status(invoker.authorize_tenant(Action::Deploy, "acme")),
            Some(403)
        );
        assert_eq!(
            status(invoker.authorize_tenant(Action::Deploy, "globex")),
            Some(404)
        );
        assert_eq!(
            status(invoker.authorize_tenant(Action::Invoke, "globex")),
            Some(404)
        );
        let reviewer = caller(Role::PlatformReviewer, None);
        assert_eq!(
            status(reviewer.authorize_tenant(Action::Review, "globex")),
            None
        );
        assert_eq!(
            status(reviewer.authorize_tenant(Action::Deploy, "globex")),
            Some(403)
        );
    }
}

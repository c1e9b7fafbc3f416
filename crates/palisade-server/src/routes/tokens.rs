//! API tokens: mint (shown once), list, revoke, and `whoami`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use palisade_api::{CreateToken, CreatedToken, Role, TokenInfo, Whoami};
use palisade_store::{NewToken, now_ms};
use serde::Deserialize;

use super::{ApiJson, ApiPath, ApiQuery};
use crate::auth::{Action, Caller};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Default token lifetime: 90 days.
pub const DEFAULT_TOKEN_LIFETIME_S: u64 = 90 * 86_400;
/// Longest token lifetime: 400 days.
pub const MAX_TOKEN_LIFETIME_S: u64 = 400 * 86_400;

/// Who the token in the request is.
#[utoipa::path(get, path = "/v1/whoami", tag = "tokens",
    responses((status = 200, body = Whoami), (status = 401, body = palisade_api::ErrorBody)))]
pub async fn whoami(caller: Caller) -> Json<Whoami> {
    Json(Whoami {
        principal: caller.principal,
        token_id: caller.token_id,
        expires_ms: caller.expires_ms,
    })
}

/// Mints a token. Platform administrators mint any; a tenant administrator mints tenant
/// roles of its own tenant. The answer holds the secret, the only time it is shown.
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = 400, body = palisade_api::ErrorBody),
              (status = 403, body = palisade_api::ErrorBody)))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let lifetime = body.expires_in_s.unwrap_or(DEFAULT_TOKEN_LIFETIME_S);
    if lifetime == 0 || lifetime > MAX_TOKEN_LIFETIME_S {
        return Err(ApiError::invalid(format!(
            "`expires_in_s` must be 1 to {MAX_TOKEN_LIFETIME_S} seconds"
        )));
    }
    let expires_ms = now_ms().saturating_add(i64::try_from(lifetime * 1000).unwrap_or(i64::MAX));
    let new = match body {
        CreateToken {
            principal: Some(principal),
            name: None,
            role: None,
            tenant: None,
            ..
        } => {
            let missing = || ApiError::not_found(format!("principal {principal}"));
            let existing = state
                .store
                .principal(&principal)
                .await?
                .ok_or_else(missing)?;
            // For a tenant role, a principal of another tenant or of the platform answers
            // exactly as a missing one: the caller must not learn that it, or its tenant,
            // exists.
            if caller
                .own_tenant()
                .is_some_and(|own| existing.tenant.as_deref() != Some(own))
            {
                return Err(missing());
            }
            authorize_minting(&caller, existing.role, existing.tenant.as_deref())?;
            NewToken::For {
                principal,
                expires_ms,
            }
        }
        CreateToken {
            principal: None,
            name: Some(name),
            role: Some(role),
            tenant,
            ..
        } => {
            authorize_minting(&caller, role, tenant.as_deref())?;
            NewToken::Principal {
                name,
                role,
                tenant,
                expires_ms,
            }
        }
        _ => {
            return Err(ApiError::invalid(
                "give either `name` and `role` (and `tenant` for tenant roles) for a new \
                 principal, or only `principal` for another token of an existing one",
            ));
        }
    };
    let (token, info) = state.store.create_token(&caller.actor(), new).await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { token, info })))
}

/// A tenant administrator mints only tenant roles of its own tenant; platform roles need a
/// platform administrator.
fn authorize_minting(caller: &Caller, role: Role, tenant: Option<&str>) -> ApiResult<()> {
    match tenant {
        Some(tenant) if !role.is_platform() => caller.authorize_tenant(Action::CreateToken, tenant),
        _ if caller.principal.role == Role::PlatformAdmin => Ok(()),
        _ => Err(ApiError::forbidden(
            "only a platform administrator mints platform roles",
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFilter {
    /// Only the tokens of this tenant's principals.
    tenant: Option<String>,
}

/// Lists tokens (never their secrets): all for a platform administrator, its tenant's for a
/// tenant administrator.
#[utoipa::path(get, path = "/v1/tokens", tag = "tokens",
    params(("tenant" = Option<String>, Query, description = "only this tenant's tokens")),
    responses((status = 200, body = Vec<TokenInfo>)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(filter): ApiQuery<TokenFilter>,
) -> ApiResult<Json<Vec<TokenInfo>>> {
    let tenant = match (caller.own_tenant(), filter.tenant) {
        (Some(own), Some(asked)) if own != asked => {
            return Err(ApiError::not_found(format!("tenant {asked}")));
        }
        (Some(own), _) => Some(own.to_owned()),
        (None, asked) => asked,
    };
    match &tenant {
        Some(tenant) => caller.authorize_tenant(Action::ListTokens, tenant)?,
        None => caller.authorize(Action::ListTokens)?,
    }
    Ok(Json(state.store.tokens(tenant.as_deref()).await?))
}

/// Revokes a token at once.
#[utoipa::path(delete, path = "/v1/tokens/{token}", tag = "tokens",
    params(("token" = String, Path, description = "the token id (`tok-...`), not the secret")),
    responses((status = 200, body = TokenInfo), (status = 404, body = palisade_api::ErrorBody)))]
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(token): ApiPath<String>,
) -> ApiResult<Json<TokenInfo>> {
    let found = state
        .store
        .token(&token)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("token {token}")))?;
    match found.principal.tenant.as_deref() {
        // A token of another tenant is as absent as a token that does not exist.
        Some(tenant) if caller.is_foreign(tenant) => {
            return Err(ApiError::not_found(format!("token {token}")));
        }
        Some(tenant) => caller.authorize_tenant(Action::RevokeToken, tenant)?,
        None if caller.principal.role == Role::PlatformAdmin => {}
        None => {
            return Err(ApiError::forbidden(
                "only a platform administrator revokes platform tokens",
            ));
        }
    }
    let revoked = state.store.revoke_token(&caller.actor(), &token).await?;
    state.tokens.clear();
    Ok(Json(revoked))
}

//! Tenant state through the API: write-only secrets, data-key status and rotation (with the
//! re-encryption running in the background), destroying a key-value namespace,
//! decommissioning a tenant (crypto-shredding everything it stored), and rotating the
//! server's token-signing key.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use base64::Engine as _;
use palisade_api::{Destroyed, KeysStatus, SecretInfo, SetSecret, SigningKeyRotation, Tenant};

use super::{ApiJson, ApiPath};
use crate::auth::{Action, Caller};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Largest secret value.
pub const MAX_SECRET_BYTES: usize = 64 << 10;

/// Stores a new version of a secret. The value is sealed under the tenant's secrets key and
/// never returned by any API; the egress gateway alone reads it.
#[utoipa::path(put, path = "/v1/tenants/{tenant}/secrets/{name}", tag = "state",
    params(("tenant" = String, Path), ("name" = String, Path)), request_body = SetSecret,
    responses((status = 200, body = SecretInfo), (status = 400, body = palisade_api::ErrorBody)))]
pub async fn set_secret(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath((tenant, name)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<SetSecret>,
) -> ApiResult<Json<SecretInfo>> {
    caller.authorize_tenant(Action::WriteSecrets, &tenant)?;
    state.require_open_tenant(&tenant).await?;
    let value = match (body.value, body.value_base64) {
        (Some(text), None) => text.into_bytes(),
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded.as_bytes())
            .map_err(|e| ApiError::invalid(format!("`value_base64` is not base64: {e}")))?,
        _ => {
            return Err(ApiError::invalid(
                "give exactly one of `value` and `value_base64`",
            ));
        }
    };
    if value.is_empty() || value.len() > MAX_SECRET_BYTES {
        return Err(ApiError::invalid(format!(
            "a secret is 1 to {MAX_SECRET_BYTES} bytes"
        )));
    }
    Ok(Json(
        state
            .store
            .set_secret(&caller.actor(), &tenant, &name, &value)
            .await?,
    ))
}

/// The tenant's secrets: names and versions, never values.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/secrets", tag = "state",
    params(("tenant" = String, Path)),
    responses((status = 200, body = Vec<SecretInfo>)))]
pub async fn secrets(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(tenant): ApiPath<String>,
) -> ApiResult<Json<Vec<SecretInfo>>> {
    caller.authorize_tenant(Action::ListSecrets, &tenant)?;
    state.require_tenant(&tenant).await?;
    Ok(Json(state.store.secrets(&tenant).await?))
}

/// Deletes every version of a secret.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/secrets/{name}", tag = "state",
    params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = Destroyed), (status = 404, body = palisade_api::ErrorBody)))]
pub async fn delete_secret(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath((tenant, name)): ApiPath<(String, String)>,
) -> ApiResult<Json<Destroyed>> {
    caller.authorize_tenant(Action::WriteSecrets, &tenant)?;
    state.require_tenant(&tenant).await?;
    state
        .store
        .delete_secret(&caller.actor(), &tenant, &name)
        .await?;
    Ok(Json(Destroyed { values: 1 }))
}

/// The tenant's data keys: every version, what it seals, and the re-encryption left.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/keys", tag = "state",
    params(("tenant" = String, Path)),
    responses((status = 200, body = KeysStatus)))]
pub async fn keys(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(tenant): ApiPath<String>,
) -> ApiResult<Json<KeysStatus>> {
    caller.authorize_tenant(Action::ReadKeys, &tenant)?;
    state.require_tenant(&tenant).await?;
    Ok(Json(KeysStatus {
        versions: state.store.key_versions(&tenant).await?,
        stale_values: state.store.stale_values(&tenant).await?,
    }))
}

/// `POST /v1/tenants/{tenant}/keys:rotate`.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/keys:rotate", tag = "state",
    params(("tenant" = String, Path)),
    responses((status = 200, body = KeysStatus, description = "new versions made; values move over in the background")))]
pub async fn rotate_keys(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(tenant): ApiPath<String>,
) -> ApiResult<Json<KeysStatus>> {
    caller.authorize_tenant(Action::RotateKeys, &tenant)?;
    state.require_open_tenant(&tenant).await?;
    let versions = state
        .store
        .rotate_data_keys(&caller.actor(), &tenant)
        .await?;
    let stale_values = state.store.stale_values(&tenant).await?;
    spawn_reencryption(Arc::clone(&state), tenant);
    Ok(Json(KeysStatus {
        versions,
        stale_values,
    }))
}

/// `POST /v1/keys/signing:rotate`: a new key signs the gateway's short-lived tokens from now
/// on; the retired key's private part is destroyed and its public key stays in the JWKS
/// until every token it signed has expired.
#[utoipa::path(post, path = "/v1/keys/signing:rotate", tag = "state",
    responses((status = 200, body = SigningKeyRotation), (status = 409, body = palisade_api::ErrorBody,
        description = "another rotation happened at the same time, or too many retired keys are still published")))]
pub async fn rotate_signing_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<SigningKeyRotation>> {
    caller.authorize(Action::RotateSigningKey)?;
    let keys = state
        .gateway
        .signing_keys()
        .ok_or_else(|| ApiError::internal("this server has no token-signing key"))?;
    let (rotated, until_ms) = crate::signing::rotate(&state.store, &caller.actor(), &keys).await?;
    let rotation = SigningKeyRotation {
        kid: rotated.current.kid().to_owned(),
        retired: keys.current.kid().to_owned(),
        retired_published_until_s: until_ms / 1000,
    };
    state.gateway.set_signing_keys(rotated);
    tracing::info!(kid = %rotation.kid, retired = %rotation.retired, "token-signing key rotated");
    Ok(Json(rotation))
}

/// Re-seals the tenant's values under its newest keys, a batch per transaction, so
/// invocations keep running meanwhile; old key versions are destroyed when they seal nothing.
fn spawn_reencryption(state: Arc<AppState>, tenant: String) {
    tokio::spawn(async move {
        loop {
            match state.store.reencrypt(&tenant, 200).await {
                Ok(0) => {
                    tracing::info!(%tenant, "re-encryption after key rotation is complete");
                    return;
                }
                Ok(left) => tracing::debug!(%tenant, left, "re-encrypting"),
                Err(error) => {
                    tracing::error!(%tenant, %error, "re-encryption failed; it resumes on the next rotation");
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
}

/// Destroys a key-value namespace of the tenant: its values and its data keys.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/kv/{namespace}", tag = "state",
    params(("tenant" = String, Path), ("namespace" = String, Path)),
    responses((status = 200, body = Destroyed)))]
pub async fn destroy_namespace(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath((tenant, namespace)): ApiPath<(String, String)>,
) -> ApiResult<Json<Destroyed>> {
    caller.authorize_tenant(Action::DestroyState, &tenant)?;
    state.require_tenant(&tenant).await?;
    // `NAME` is a shared namespace, `ext:NAME` the own state of extension NAME.
    let namespace = palisade_model::kv::KvScope::parse(&namespace)
        .map_err(|e| ApiError::invalid(e.message))?
        .storage_name();
    let values = state
        .store
        .destroy_namespace(&caller.actor(), &tenant, &namespace)
        .await?;
    Ok(Json(Destroyed { values }))
}

/// Decommissions a tenant (platform administrators): its state, secrets and data keys are
/// destroyed, its tokens revoked, its extensions stop; its history stays. Final.
#[utoipa::path(post, path = "/v1/tenants/{tenant}:decommission", tag = "tenants",
    params(("tenant" = String, Path)),
    responses((status = 200, body = Tenant), (status = 404, body = palisade_api::ErrorBody)))]
pub async fn decommission(
    state: &AppState,
    caller: &Caller,
    tenant: &str,
) -> ApiResult<Json<Tenant>> {
    caller.authorize_tenant(Action::Decommission, tenant)?;
    state.require_tenant(tenant).await?;
    let tenant = state
        .store
        .decommission_tenant(&caller.actor(), tenant)
        .await?;
    state.tenant_changed(&tenant.id, tenant.state);
    state.tokens.clear();
    Ok(Json(tenant))
}

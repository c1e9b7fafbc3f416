//! Tenants: create, list, read, suspend, resume.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use palisade_api::{CreateTenant, Tenant, TenantState};

use super::{ApiJson, ApiPath, split_verb};
use crate::auth::{Action, Caller};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Creates a tenant (platform administrators only).
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body = CreateTenant,
    responses((status = 201, body = Tenant), (status = 400, body = palisade_api::ErrorBody),
              (status = 409, body = palisade_api::ErrorBody)))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateTenant>,
) -> ApiResult<(StatusCode, Json<Tenant>)> {
    caller.authorize(Action::CreateTenant)?;
    let tenant = state.store.create_tenant(&caller.actor(), &body.id).await?;
    // The slot allocated with the tenant, so its first worker runs under its own uid.
    if let Some(slot) = state.store.tenant_uid_slot(&tenant.id).await? {
        state.tenant_uids.set(&tenant.id, slot);
    }
    state.tenant_changed(&tenant.id, tenant.state);
    Ok((StatusCode::CREATED, Json(tenant)))
}

/// Lists tenants: all of them for platform roles, only its own for a tenant role.
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants",
    responses((status = 200, body = Vec<Tenant>)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<Vec<Tenant>>> {
    caller.authorize(Action::ListTenants)?;
    let tenants = match caller.own_tenant() {
        None => state.store.tenants().await?,
        Some(own) => state.store.tenant(own).await?.into_iter().collect(),
    };
    Ok(Json(tenants))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}", tag = "tenants",
    params(("tenant" = String, Path)),
    responses((status = 200, body = Tenant), (status = 404, body = palisade_api::ErrorBody)))]
pub async fn read(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(tenant): ApiPath<String>,
) -> ApiResult<Json<Tenant>> {
    caller.authorize_tenant(Action::ReadTenant, &tenant)?;
    let found = state
        .store
        .tenant(&tenant)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("tenant {tenant}")))?;
    Ok(Json(found))
}

/// `POST /v1/tenants/{tenant}:suspend` and `:resume`.
pub async fn custom_method(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(segment): ApiPath<String>,
) -> ApiResult<Json<Tenant>> {
    match split_verb(&segment) {
        (tenant, Some("suspend")) => suspend(&state, &caller, tenant).await,
        (tenant, Some("resume")) => resume(&state, &caller, tenant).await,
        (tenant, Some("decommission")) => super::state::decommission(&state, &caller, tenant).await,
        _ => Err(super::no_route_error(
            "POST",
            &format!("/v1/tenants/{segment}"),
        )),
    }
}

/// Suspends a tenant: its invocations are refused with `tenant_suspended`; nothing is deleted.
#[utoipa::path(post, path = "/v1/tenants/{tenant}:suspend", tag = "tenants",
    params(("tenant" = String, Path)),
    responses((status = 200, body = Tenant), (status = 404, body = palisade_api::ErrorBody)))]
pub async fn suspend(state: &AppState, caller: &Caller, tenant: &str) -> ApiResult<Json<Tenant>> {
    set_state(state, caller, tenant, TenantState::Suspended).await
}

/// Resumes a suspended tenant.
#[utoipa::path(post, path = "/v1/tenants/{tenant}:resume", tag = "tenants",
    params(("tenant" = String, Path)),
    responses((status = 200, body = Tenant), (status = 404, body = palisade_api::ErrorBody)))]
pub async fn resume(state: &AppState, caller: &Caller, tenant: &str) -> ApiResult<Json<Tenant>> {
    set_state(state, caller, tenant, TenantState::Active).await
}

async fn set_state(
    state: &AppState,
    caller: &Caller,
    tenant: &str,
    target: TenantState,
) -> ApiResult<Json<Tenant>> {
    caller.authorize_tenant(Action::ChangeTenantState, tenant)?;
    let changed = state
        .store
        .set_tenant_state(&caller.actor(), tenant, target)
        .await?;
    state.tenant_changed(tenant, changed.state);
    Ok(Json(changed))
}

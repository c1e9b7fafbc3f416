//! Policy layers through the API: read the version in force, apply a new one (validated, with
//! its diff), list every version, revert to one. Every change is audited and takes effect at
//! once for new invocations.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use palisade_api::{ApplyPolicy, PolicyChange, PolicyVersion, RevertPolicy};
use palisade_policy::store::{Applied, ChangeMeta, PolicyStore, VersionRecord, engine_at};
use palisade_policy::{PolicyDocument, Scope, TenantId};

use super::{ApiJson, ApiPath};
use crate::auth::{Action, Caller};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

fn version_of(record: VersionRecord) -> PolicyVersion {
    PolicyVersion {
        scope: record.scope,
        version: record.version,
        author: record.author,
        time_s: record.time,
        reason: record.reason,
        change: match record.change {
            palisade_policy::store::ChangeKind::Apply => "apply".into(),
            palisade_policy::store::ChangeKind::Revert => "revert".into(),
        },
        restored: record.restored,
        sha256: record.sha256,
        diff: record.diff,
        document: record.document,
    }
}

fn tenant_scope(tenant: &str) -> ApiResult<Scope> {
    TenantId::new(tenant)
        .map(Scope::Tenant)
        .map_err(|e| ApiError::invalid(e.to_string()))
}

async fn history(state: &AppState, scope: &Scope) -> ApiResult<Vec<PolicyVersion>> {
    let snapshot = state.store.policy_snapshot().await?;
    let records = snapshot
        .history(scope)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(records.into_iter().map(version_of).collect())
}

/// The version in force, or for the baseline the shipped document as version 0.
async fn head(state: &AppState, scope: &Scope) -> ApiResult<PolicyVersion> {
    if let Some(last) = history(state, scope).await?.pop() {
        return Ok(last);
    }
    match scope {
        Scope::Baseline => {
            let shipped = PolicyDocument::shipped_baseline()
                .map_err(|e| ApiError::internal(e.to_string()))?;
            let document = shipped.to_toml();
            Ok(PolicyVersion {
                scope: "baseline".into(),
                version: 0,
                author: "palisade".into(),
                time_s: 0,
                reason: "shipped baseline".into(),
                change: "apply".into(),
                restored: None,
                sha256: palisade_model::audit::digest_of(document.as_bytes()),
                diff: String::new(),
                document,
            })
        }
        Scope::Tenant(tenant) => Err(ApiError::not_found(format!("a policy for tenant {tenant}"))),
    }
}

/// Runs `change` (the policy crate's apply or revert) against the stored versions, stores
/// the version it makes with its audit entry, and installs the new engine.
async fn change(
    state: &AppState,
    caller: &Caller,
    change: impl FnOnce(&dyn PolicyStore, &ChangeMeta) -> Result<Applied, palisade_policy::StoreError>,
    reason: String,
) -> ApiResult<PolicyChange> {
    if reason.trim().is_empty() {
        return Err(ApiError::invalid("give a `reason` for the change"));
    }
    // One policy change at a time, from reading the head to installing the engine, so a
    // change is always planned on the stored head and the engine in force is always built
    // from it (racing changes used to install engines built from their own stale snapshots).
    let _serialised = state.policy_writes.lock().await;
    let snapshot = state.store.policy_snapshot().await?;
    let meta = ChangeMeta {
        author: caller.principal.id.clone(),
        reason,
        time: palisade_policy::now_unix(),
    };
    let applied = change(&snapshot, &meta).map_err(|error| match error {
        palisade_policy::StoreError::Invalid(policy) => ApiError::invalid(policy.to_string()),
        palisade_policy::StoreError::NoSuchVersion { .. } => ApiError::not_found(error.to_string()),
        other => ApiError::internal(other.to_string()),
    })?;
    match applied {
        Applied::Unchanged { version } => Ok(PolicyChange {
            stored: false,
            version,
            diff: String::new(),
        }),
        Applied::Stored { record, diff } => {
            state.store.append_policy(&caller.actor(), &record).await?;
            let head = state.store.policy_snapshot().await?;
            let engine = engine_at(&head, None).map_err(|e| ApiError::internal(e.to_string()))?;
            state.set_policy(engine);
            Ok(PolicyChange {
                stored: true,
                version: record.version,
                diff: diff.to_string(),
            })
        }
    }
}

fn parse_document(text: &str, expected: &Scope) -> ApiResult<PolicyDocument> {
    let document =
        PolicyDocument::parse(text, None).map_err(|e| ApiError::invalid(e.to_string()))?;
    if &document.scope != expected {
        return Err(ApiError::invalid(format!(
            "the document is for {}, not {expected}",
            document.scope
        )));
    }
    Ok(document)
}

/// The tenant's policy version in force.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/policy", tag = "policies",
    params(("tenant" = String, Path)),
    responses((status = 200, body = PolicyVersion), (status = 404, body = palisade_api::ErrorBody)))]
pub async fn read_tenant(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(tenant): ApiPath<String>,
) -> ApiResult<Json<PolicyVersion>> {
    caller.authorize_tenant(Action::ReadTenantPolicy, &tenant)?;
    state.require_tenant(&tenant).await?;
    Ok(Json(head(&state, &tenant_scope(&tenant)?).await?))
}

/// Every version of the tenant's policy, oldest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/policy/versions", tag = "policies",
    params(("tenant" = String, Path)),
    responses((status = 200, body = Vec<PolicyVersion>)))]
pub async fn tenant_versions(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(tenant): ApiPath<String>,
) -> ApiResult<Json<Vec<PolicyVersion>>> {
    caller.authorize_tenant(Action::ReadTenantPolicy, &tenant)?;
    state.require_tenant(&tenant).await?;
    Ok(Json(history(&state, &tenant_scope(&tenant)?).await?))
}

/// Applies a tenant policy (platform administrators): validated against the schema, stored
/// as a new version with its diff, in force at once.
#[utoipa::path(put, path = "/v1/tenants/{tenant}/policy", tag = "policies",
    params(("tenant" = String, Path)), request_body = ApplyPolicy,
    responses((status = 200, body = PolicyChange), (status = 400, body = palisade_api::ErrorBody)))]
pub async fn apply_tenant(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(tenant): ApiPath<String>,
    ApiJson(body): ApiJson<ApplyPolicy>,
) -> ApiResult<Json<PolicyChange>> {
    caller.authorize_tenant(Action::WriteTenantPolicy, &tenant)?;
    state.require_tenant(&tenant).await?;
    let document = parse_document(&body.document, &tenant_scope(&tenant)?)?;
    let applied = change(
        &state,
        &caller,
        |store, meta| palisade_policy::store::apply(store, &document, meta),
        body.reason,
    )
    .await?;
    Ok(Json(applied))
}

/// Restores an earlier version of the tenant's policy, as a new version.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/policy:revert", tag = "policies",
    params(("tenant" = String, Path)), request_body = RevertPolicy,
    responses((status = 200, body = PolicyChange), (status = 404, body = palisade_api::ErrorBody)))]
pub async fn revert_tenant(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(tenant): ApiPath<String>,
    ApiJson(body): ApiJson<RevertPolicy>,
) -> ApiResult<Json<PolicyChange>> {
    caller.authorize_tenant(Action::WriteTenantPolicy, &tenant)?;
    state.require_tenant(&tenant).await?;
    let scope = tenant_scope(&tenant)?;
    let applied = change(
        &state,
        &caller,
        |store, meta| palisade_policy::store::revert(store, &scope, body.to, meta),
        body.reason,
    )
    .await?;
    Ok(Json(applied))
}

/// The baseline in force (the shipped one, as version 0, until an operator applies one).
#[utoipa::path(get, path = "/v1/policies/baseline", tag = "policies",
    responses((status = 200, body = PolicyVersion)))]
pub async fn read_baseline(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<PolicyVersion>> {
    caller.authorize(Action::ReadBaseline)?;
    Ok(Json(head(&state, &Scope::Baseline).await?))
}

#[utoipa::path(get, path = "/v1/policies/baseline/versions", tag = "policies",
    responses((status = 200, body = Vec<PolicyVersion>)))]
pub async fn baseline_versions(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<Vec<PolicyVersion>>> {
    caller.authorize(Action::ReadBaseline)?;
    Ok(Json(history(&state, &Scope::Baseline).await?))
}

/// Applies a platform baseline (platform administrators).
#[utoipa::path(put, path = "/v1/policies/baseline", tag = "policies", request_body = ApplyPolicy,
    responses((status = 200, body = PolicyChange), (status = 400, body = palisade_api::ErrorBody)))]
pub async fn apply_baseline(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(body): ApiJson<ApplyPolicy>,
) -> ApiResult<Json<PolicyChange>> {
    caller.authorize(Action::WriteBaseline)?;
    let document = parse_document(&body.document, &Scope::Baseline)?;
    let applied = change(
        &state,
        &caller,
        |store, meta| palisade_policy::store::apply(store, &document, meta),
        body.reason,
    )
    .await?;
    Ok(Json(applied))
}

/// Restores an earlier baseline version, as a new version.
#[utoipa::path(post, path = "/v1/policies/baseline:revert", tag = "policies", request_body = RevertPolicy,
    responses((status = 200, body = PolicyChange), (status = 404, body = palisade_api::ErrorBody)))]
pub async fn revert_baseline(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(body): ApiJson<RevertPolicy>,
) -> ApiResult<Json<PolicyChange>> {
    caller.authorize(Action::WriteBaseline)?;
    let applied = change(
        &state,
        &caller,
        |store, meta| palisade_policy::store::revert(store, &Scope::Baseline, body.to, meta),
        body.reason,
    )
    .await?;
    Ok(Json(applied))
}

//! Extensions: publish (validated in the tenant's worker before it is stored), review,
//! deploy, roll back, read, and invoke.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use palisade_api::{
    ApiErrorKind, Deploy, Deployment, Extension, ExtensionSummary, ExtensionVersion,
    InvokeEnvelope, PublishVersion, Review, Rollback, TenantState,
};
use palisade_model::InvocationRequest;
use palisade_model::manifest::{ExtensionName, Sha256Digest};
use palisade_model::{ErrorKind, InvocationError, Manifest, Outcome};
use palisade_worker::ExtensionSource;
use serde::Deserialize;

use super::{ApiJson, ApiPath, ApiQuery, json_or_default, no_route_error, split_verb};
use crate::auth::{Action, Caller};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::telemetry::{INVOCATION_ID_HEADER, current_request_id, new_id};
use palisade_host::InvocationEvents as _;

/// Request headers whose suffix and value the extension receives as metadata.
pub const METADATA_HEADER_PREFIX: &str = "palisade-meta-";
/// Metadata keys the server sets itself (a caller cannot forge them).
pub const REQUEST_ID_METADATA: &str = "palisade-request-id";
pub const INVOCATION_ID_METADATA: &str = "palisade-invocation-id";
const MAX_METADATA_ENTRIES: usize = 32;

fn check_name(name: &str) -> ApiResult<()> {
    ExtensionName::new(name)
        .map(|_| ())
        .map_err(|e| ApiError::invalid(e.to_string()))
}

fn check_version(version: &str) -> ApiResult<semver::Version> {
    semver::Version::parse(version)
        .map_err(|e| ApiError::invalid(format!("`{version}` is not a semver version: {e}")))
}

/// A tenant's extensions.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/extensions", tag = "extensions",
    params(("tenant" = String, Path)),
    responses((status = 200, body = Vec<ExtensionSummary>), (status = 404, body = palisade_api::ErrorBody)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(tenant): ApiPath<String>,
) -> ApiResult<Json<Vec<ExtensionSummary>>> {
    caller.authorize_tenant(Action::ReadExtensions, &tenant)?;
    state.require_tenant(&tenant).await?;
    Ok(Json(state.store.extensions(&tenant).await?))
}

/// An extension: its versions, the active deployment, and the limits its invocations run
/// under (platform ∩ baseline ∩ tenant policy ∩ manifest).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/extensions/{name}", tag = "extensions",
    params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = Extension), (status = 404, body = palisade_api::ErrorBody)))]
pub async fn read(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath((tenant, name)): ApiPath<(String, String)>,
) -> ApiResult<Json<Extension>> {
    caller.authorize_tenant(Action::ReadExtensions, &tenant)?;
    state.require_tenant(&tenant).await?;
    let created_ms = state
        .store
        .extension_created(&tenant, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("extension {tenant}/{name}")))?;
    let active = state.store.active_deployment(&tenant, &name).await?;
    let effective_limits = match &active {
        Some(_) => {
            let resolved = state.resolve(&tenant, &name).await?;
            let limits: serde_json::Map<String, serde_json::Value> = resolved
                .plan
                .effective
                .iter()
                .map(|(key, value)| (key.as_str().to_owned(), value.into()))
                .collect();
            Some(serde_json::Value::Object(limits))
        }
        None => None,
    };
    Ok(Json(Extension {
        versions: state.store.versions(&tenant, &name).await?,
        tenant,
        name,
        created_ms,
        active,
        effective_limits,
    }))
}

/// Publishes a version. The manifest is parsed strictly, the digest checked, and the
/// component compiled and its imports checked inside the tenant's worker before anything is
/// stored; a version, once published, never changes.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/extensions/{name}/versions", tag = "extensions",
    params(("tenant" = String, Path), ("name" = String, Path)),
    request_body = PublishVersion,
    responses((status = 201, body = ExtensionVersion),
              (status = 400, body = palisade_api::ErrorBody, description = "malformed body, name mismatch"),
              (status = 409, body = palisade_api::ErrorBody, description = "the version exists"),
              (status = 413, body = palisade_api::ErrorBody),
              (status = 422, body = palisade_api::ErrorBody, description = "invalid_manifest, invalid_component, import_not_allowed")))]
pub async fn publish(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath((tenant, name)): ApiPath<(String, String)>,
    request: axum::extract::Request,
) -> ApiResult<(StatusCode, Json<ExtensionVersion>)> {
    // Authorized before the body (up to 90 MiB) is read: a caller who may not publish here
    // never makes the server buffer or parse it.
    caller.authorize_tenant(Action::Publish, &tenant)?;
    state.require_open_tenant(&tenant).await?;
    check_name(&name)?;
    let ApiJson(body) =
        <ApiJson<PublishVersion> as axum::extract::FromRequest<()>>::from_request(request, &())
            .await?;
    let manifest = Manifest::parse(&body.manifest).map_err(|e| {
        ApiError::invocation(&InvocationError::new(
            ErrorKind::InvalidManifest,
            e.to_string(),
        ))
    })?;
    if manifest.extension.name.as_str() != name {
        return Err(ApiError::invalid(format!(
            "the manifest is for extension `{}`, not `{name}`",
            manifest.extension.name
        )));
    }
    let declared =
        Sha256Digest::parse(&body.sha256).map_err(|e| ApiError::invalid(e.to_string()))?;
    let wasm = base64::engine::general_purpose::STANDARD
        .decode(body.component_base64.as_bytes())
        .map_err(|e| ApiError::invalid(format!("`component_base64` is not base64: {e}")))?;
    if wasm.len() as u64 > palisade_store::MAX_ARTIFACT_BYTES {
        return Err(ApiError::new(
            ApiErrorKind::PayloadTooLarge,
            format!(
                "the component is {} bytes; the maximum is {}",
                wasm.len(),
                palisade_store::MAX_ARTIFACT_BYTES
            ),
        ));
    }
    let source = ExtensionSource::new(body.manifest.clone(), wasm);
    let integrity = |message: String| {
        ApiError::invocation(&InvocationError::new(ErrorKind::InvalidComponent, message))
    };
    if source.digest != declared {
        return Err(integrity(format!(
            "the component's SHA-256 is {}, not the declared {declared}: it was damaged or swapped in transit",
            source.digest
        )));
    }
    if let Some(pinned) = manifest.component.sha256
        && pinned != source.digest
    {
        return Err(integrity(format!(
            "the manifest pins component.sha256 = {pinned}, but the component's is {}",
            source.digest
        )));
    }
    let version = manifest.extension.version.to_string();
    if state
        .store
        .version(&tenant, &name, &version)
        .await?
        .is_some()
    {
        return Err(ApiError::conflict(format!(
            "{tenant}/{name}@{version} is published already; versions are immutable, publish a new one"
        )));
    }
    state
        .host
        .validate(&tenant, &source)
        .await
        .map_err(|e| ApiError::invocation(&e))?;
    let stored = state
        .store
        .publish_version(
            &caller.actor(),
            palisade_store::NewVersion {
                tenant,
                name,
                version: manifest.extension.version.clone(),
                api: manifest.extension.api.to_string(),
                manifest: body.manifest,
                component: Arc::unwrap_or_clone(source.wasm),
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(stored)))
}

/// One version, with its manifest.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/extensions/{name}/versions/{version}", tag = "extensions",
    params(("tenant" = String, Path), ("name" = String, Path), ("version" = String, Path)),
    responses((status = 200, body = ExtensionVersion), (status = 404, body = palisade_api::ErrorBody)))]
pub async fn read_version(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath((tenant, name, version)): ApiPath<(String, String, String)>,
) -> ApiResult<Json<ExtensionVersion>> {
    caller.authorize_tenant(Action::ReadExtensions, &tenant)?;
    state.require_tenant(&tenant).await?;
    let found = state
        .store
        .version(&tenant, &name, &version)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("{tenant}/{name}@{version}")))?;
    Ok(Json(found))
}

/// `POST .../versions/{version}:approve` and `:reject`.
pub async fn review(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath((tenant, name, segment)): ApiPath<(String, String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Json<ExtensionVersion>> {
    let body: Review = json_or_default(&body)?;
    match split_verb(&segment) {
        (version, Some("approve")) => approve(&state, &caller, &tenant, &name, version, body).await,
        (version, Some("reject")) => reject(&state, &caller, &tenant, &name, version, body).await,
        _ => Err(no_route_error(
            "POST",
            &format!("/v1/tenants/{tenant}/extensions/{name}/versions/{segment}"),
        )),
    }
}

/// Approves a version waiting for review (platform reviewers and administrators).
#[utoipa::path(post, path = "/v1/tenants/{tenant}/extensions/{name}/versions/{version}:approve", tag = "extensions",
    params(("tenant" = String, Path), ("name" = String, Path), ("version" = String, Path)),
    request_body(content = Review, description = "optional"),
    responses((status = 200, body = ExtensionVersion), (status = 409, body = palisade_api::ErrorBody)))]
pub async fn approve(
    state: &AppState,
    caller: &Caller,
    tenant: &str,
    name: &str,
    version: &str,
    body: Review,
) -> ApiResult<Json<ExtensionVersion>> {
    decide(state, caller, tenant, name, version, true, body).await
}

/// Rejects a version waiting for review: it can never be deployed.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/extensions/{name}/versions/{version}:reject", tag = "extensions",
    params(("tenant" = String, Path), ("name" = String, Path), ("version" = String, Path)),
    request_body(content = Review, description = "optional"),
    responses((status = 200, body = ExtensionVersion), (status = 409, body = palisade_api::ErrorBody)))]
pub async fn reject(
    state: &AppState,
    caller: &Caller,
    tenant: &str,
    name: &str,
    version: &str,
    body: Review,
) -> ApiResult<Json<ExtensionVersion>> {
    decide(state, caller, tenant, name, version, false, body).await
}

async fn decide(
    state: &AppState,
    caller: &Caller,
    tenant: &str,
    name: &str,
    version: &str,
    approved: bool,
    body: Review,
) -> ApiResult<Json<ExtensionVersion>> {
    caller.authorize_tenant(Action::Review, tenant)?;
    state.require_tenant(tenant).await?;
    let reviewed = state
        .store
        .review_version(&caller.actor(), tenant, name, version, approved, body.note)
        .await?;
    Ok(Json(reviewed))
}

/// Every deployment of an extension, oldest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/extensions/{name}/deployments", tag = "extensions",
    params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = Vec<Deployment>), (status = 404, body = palisade_api::ErrorBody)))]
pub async fn deployments(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath((tenant, name)): ApiPath<(String, String)>,
) -> ApiResult<Json<Vec<Deployment>>> {
    caller.authorize_tenant(Action::ReadExtensions, &tenant)?;
    state.require_tenant(&tenant).await?;
    if state
        .store
        .extension_created(&tenant, &name)
        .await?
        .is_none()
    {
        return Err(ApiError::not_found(format!("extension {tenant}/{name}")));
    }
    Ok(Json(state.store.deployments(&tenant, &name).await?))
}

/// Makes a version the active one (approved versions only while the server requires review).
#[utoipa::path(post, path = "/v1/tenants/{tenant}/extensions/{name}/deployments", tag = "extensions",
    params(("tenant" = String, Path), ("name" = String, Path)),
    request_body = Deploy,
    responses((status = 201, body = Deployment), (status = 404, body = palisade_api::ErrorBody),
              (status = 409, body = palisade_api::ErrorBody, description = "not approved, or rejected")))]
pub async fn deploy(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath((tenant, name)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<Deploy>,
) -> ApiResult<(StatusCode, Json<Deployment>)> {
    caller.authorize_tenant(Action::Deploy, &tenant)?;
    state.require_open_tenant(&tenant).await?;
    check_version(&body.version)?;
    let deployment = state
        .store
        .deploy(
            &caller.actor(),
            &tenant,
            &name,
            &body.version,
            state.settings.require_review,
        )
        .await?;
    state.deployment_changed(&tenant, &name);
    Ok((StatusCode::CREATED, Json(deployment)))
}

/// `POST /v1/tenants/{tenant}/extensions/{name}:invoke` and `:rollback`.
pub async fn custom_method(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath((tenant, segment)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<InvokeQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match split_verb(&segment) {
        (name, Some("invoke")) => invoke(&state, &caller, &tenant, name, query, &headers, body)
            .await
            .unwrap_or_else(IntoResponse::into_response),
        (name, Some("rollback")) => {
            let rolled = async {
                let bytes = axum::body::to_bytes(body, super::MAX_JSON_BODY)
                    .await
                    .map_err(|e| ApiError::invalid(format!("cannot read the body: {e}")))?;
                rollback(&state, &caller, &tenant, name, json_or_default(&bytes)?).await
            };
            rolled.await.into_response()
        }
        _ => no_route_error(
            "POST",
            &format!("/v1/tenants/{tenant}/extensions/{segment}"),
        )
        .into_response(),
    }
}

/// Rolls back to the version active before the current one, or to any version deployed
/// before (`to`), in one call.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/extensions/{name}:rollback", tag = "extensions",
    params(("tenant" = String, Path), ("name" = String, Path)),
    request_body(content = Rollback, description = "optional"),
    responses((status = 200, body = Deployment), (status = 409, body = palisade_api::ErrorBody)))]
pub async fn rollback(
    state: &AppState,
    caller: &Caller,
    tenant: &str,
    name: &str,
    body: Rollback,
) -> ApiResult<Json<Deployment>> {
    caller.authorize_tenant(Action::Deploy, tenant)?;
    state.require_open_tenant(tenant).await?;
    if let Some(to) = &body.to {
        check_version(to)?;
    }
    let deployment = state
        .store
        .rollback(&caller.actor(), tenant, name, body.to.as_deref())
        .await?;
    state.deployment_changed(tenant, name);
    Ok(Json(deployment))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvokeQuery {
    /// Answer with the full outcome as JSON (usage, logs, isolation) instead of the output.
    #[serde(default)]
    envelope: bool,
}

/// Invokes the active version with the request body as input. Without `envelope`, success is
/// the extension's output with its content type; a failure is the error body with the status
/// of its kind (413 `input_too_large`, 422 a limit or the extension's own error, 429
/// `rate_limited`, 502 `worker_crashed`, 503 `overloaded`, 504 `timeout`, ...). Request
/// headers `Palisade-Meta-<key>` reach the extension as metadata.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/extensions/{name}:invoke", tag = "invoke",
    params(("tenant" = String, Path), ("name" = String, Path),
           ("envelope" = Option<bool>, Query, description = "answer with the full outcome as JSON")),
    request_body(content = Vec<u8>, description = "the input, any media type", content_type = "*/*"),
    responses((status = 200, description = "the extension's output (or, with `envelope`, InvokeEnvelope)", body = InvokeEnvelope),
              (status = 403, body = palisade_api::ErrorBody, description = "tenant_suspended"),
              (status = 404, body = palisade_api::ErrorBody, description = "no active deployment"),
              (status = 413, body = palisade_api::ErrorBody, description = "input_too_large"),
              (status = 422, body = palisade_api::ErrorBody, description = "fuel_exhausted, memory_limit, trap, guest_error, ..."),
              (status = 429, body = palisade_api::ErrorBody, description = "rate_limited (Retry-After)"),
              (status = 502, body = palisade_api::ErrorBody, description = "worker_crashed"),
              (status = 503, body = palisade_api::ErrorBody, description = "overloaded (Retry-After)"),
              (status = 504, body = palisade_api::ErrorBody, description = "timeout")))]
pub async fn invoke(
    state: &AppState,
    caller: &Caller,
    tenant: &str,
    name: &str,
    query: InvokeQuery,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    caller.authorize_tenant(Action::Invoke, tenant)?;
    let tenant_state = state.require_tenant(tenant).await?;
    if tenant_state != TenantState::Active {
        state.metrics.rejected(tenant, "suspended");
        return Err(ApiError::new(
            ApiErrorKind::TenantSuspended,
            format!(
                "tenant {tenant} is {}; its extensions do not run",
                tenant_state.as_str()
            ),
        ));
    }
    let resolved = state.resolve(tenant, name).await?;
    let invocation_id = new_id("inv-");
    // The input is read, under a deadline, before admission: a client that sends headers and
    // then nothing holds no tenant or global slot, and is cut off.
    let input = read_input(headers, body, resolved.plan.limits.input_bytes)
        .await
        .map_err(|e| e.with_invocation(&invocation_id))?;
    let _admitted = state
        .admission
        .admit(tenant, resolved.plan.quota)
        .await
        .map_err(|refused| {
            state.metrics.rejected(tenant, refused.reason.as_str());
            ApiError::refused(refused)
        })?;
    let request_id = current_request_id();
    let request = InvocationRequest {
        body: input,
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned(),
        metadata: metadata(headers, &request_id, &invocation_id)?,
    };
    let version = resolved.deployment.version.clone();
    let outcome = state
        .host
        .invoke(&resolved.plan, &invocation_id, request)
        .await;
    Ok(respond(
        outcome,
        query.envelope,
        Ids {
            request: request_id,
            invocation: invocation_id,
            tenant: tenant.to_owned(),
            extension: name.to_owned(),
            version,
        },
    ))
}

/// The input, refused before reading when its declared length is over the limit, while
/// reading when it grows past it, and when it does not arrive in time (`408
/// request_timeout`: every request body has a deadline, [`super::body_deadline`]).
async fn read_input(headers: &HeaderMap, body: Body, limit: u64) -> ApiResult<Vec<u8>> {
    let too_large = |size: String| {
        ApiError::invocation(&InvocationError::new(
            ErrorKind::InputTooLarge,
            format!("the input is {size}; this extension accepts at most {limit} bytes"),
        ))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(declared) = declared
        && declared > limit
    {
        return Err(too_large(format!("{declared} bytes")));
    }
    let cap = usize::try_from(limit).unwrap_or(usize::MAX);
    axum::body::to_bytes(body, cap)
        .await
        .map(|bytes| bytes.to_vec())
        .map_err(|error| {
            let source = std::error::Error::source(&error);
            if source.is_some_and(|s| s.is::<http_body_util::LengthLimitError>()) {
                too_large("larger than that".into())
            } else if source.is_some_and(super::is_body_timeout) {
                super::body_timed_out()
            } else {
                ApiError::invocation(&InvocationError::new(
                    ErrorKind::InputTooLarge,
                    format!("the input could not be read: {error}"),
                ))
            }
        })
}

/// `Palisade-Meta-<key>: value` headers, plus the ids the server sets (which a caller
/// cannot override).
fn metadata(
    headers: &HeaderMap,
    request_id: &str,
    invocation_id: &str,
) -> ApiResult<Vec<(String, String)>> {
    let mut metadata = Vec::new();
    for (name, value) in headers {
        let Some(key) = name.as_str().strip_prefix(METADATA_HEADER_PREFIX) else {
            continue;
        };
        let value = value
            .to_str()
            .map_err(|_| ApiError::invalid(format!("header {name} is not visible ASCII")))?;
        metadata.push((key.to_owned(), value.to_owned()));
    }
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(ApiError::invalid(format!(
            "at most {MAX_METADATA_ENTRIES} `{METADATA_HEADER_PREFIX}*` headers"
        )));
    }
    metadata.retain(|(key, _)| key != REQUEST_ID_METADATA && key != INVOCATION_ID_METADATA);
    metadata.push((REQUEST_ID_METADATA.into(), request_id.to_owned()));
    metadata.push((INVOCATION_ID_METADATA.into(), invocation_id.to_owned()));
    Ok(metadata)
}

/// Guest log lines become server log events (already sanitised), carrying the invocation's
/// span: request id, invocation id, tenant, extension and version.
struct Ids {
    request: String,
    invocation: String,
    tenant: String,
    extension: String,
    version: String,
}

fn respond(outcome: Outcome, envelope: bool, ids: Ids) -> Response {
    let status = match &outcome.result {
        Ok(_) => StatusCode::OK,
        Err(error) => StatusCode::from_u16(palisade_api::invocation_status(error.kind))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    };
    let mut response = if envelope {
        let json = outcome.to_json();
        let field = |name: &str| json.get(name).cloned().unwrap_or_default();
        let text = |name: &str| json.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        let body = InvokeEnvelope {
            outcome: text("outcome").unwrap_or_default(),
            output: text("output"),
            output_base64: text("output_base64"),
            content_type: text("content_type"),
            error: outcome
                .result
                .as_ref()
                .err()
                .map(|e| palisade_api::ErrorDetail {
                    kind: e.kind.to_string(),
                    message: e.message.clone(),
                }),
            usage: field("usage"),
            logs: field("logs").as_array().cloned().unwrap_or_default(),
            isolation: field("isolation"),
            request_id: ids.request.clone(),
            invocation_id: ids.invocation.clone(),
            tenant: ids.tenant,
            extension: ids.extension,
            version: ids.version.clone(),
        };
        (status, Json(body)).into_response()
    } else {
        match outcome.result {
            Ok(output) => {
                let content_type = HeaderValue::from_str(&output.content_type)
                    .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
                let mut response = (status, output.body).into_response();
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, content_type);
                let usage = outcome.usage;
                for (name, value) in [
                    ("x-palisade-fuel", usage.fuel_consumed.to_string()),
                    ("x-palisade-wall-time-us", usage.wall_time_us.to_string()),
                ] {
                    if let Ok(value) = HeaderValue::from_str(&value) {
                        response.headers_mut().insert(name, value);
                    }
                }
                response
            }
            Err(error) => {
                return ApiError::invocation(&error)
                    .with_invocation(&ids.invocation)
                    .into_response();
            }
        }
    };
    for (name, value) in [
        (INVOCATION_ID_HEADER, ids.invocation.as_str()),
        ("x-palisade-version", ids.version.as_str()),
    ] {
        if let Ok(value) = HeaderValue::from_str(value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

//! Liveness, readiness, metrics and the API description: the endpoints that need no token
//! (but `/metrics`, which needs a platform role's token).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use palisade_api::Health;

use crate::auth::{Action, Caller};
use crate::error::ApiError;
use crate::state::AppState;

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// The server takes work: the store answers and shutdown has not started.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let status = if state.draining.load(Ordering::Acquire) {
        Some("draining")
    } else if state.store.ping().await.is_err() {
        Some("store_unavailable")
    } else {
        None
    };
    match status {
        None => Json(Health {
            status: "ok".into(),
        })
        .into_response(),
        Some(status) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: status.into(),
            }),
        )
            .into_response(),
    }
}

/// Metrics in the Prometheus/OpenMetrics text format. They name every tenant, extension and
/// outcome, so they need a platform role's token (Prometheus: `authorization` with a
/// platform-reviewer token in a `credentials_file`).
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text"),
              (status = 401, body = palisade_api::ErrorBody), (status = 403, body = palisade_api::ErrorBody)))]
pub async fn metrics(State(state): State<Arc<AppState>>, caller: Caller) -> Response {
    if let Err(error) = caller.authorize(Action::ReadMetrics) {
        return error.into_response();
    }
    match state.metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(error) => ApiError::internal(format!("cannot encode metrics: {error}")).into_response(),
    }
}

/// This API's OpenAPI 3 description, generated from the code.
#[utoipa::path(get, path = "/openapi.json", tag = "health",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document(),
    )
        .into_response()
}

/// The public keys of the short-lived tokens the egress gateway injects (a JWK set), so the
/// SaaS can verify them.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "health",
    responses((status = 200, body = palisade_api::Jwks)))]
pub async fn jwks(State(state): State<Arc<AppState>>) -> Json<palisade_api::Jwks> {
    Json(state.gateway.jwks(palisade_store::now_ms()))
}

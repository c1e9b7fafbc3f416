//! The HTTP API's routes and what they share: the JSON body extractor that turns every bad
//! body into a typed `400`/`413`/`415`, custom methods (`/...{name}:invoke`), and the
//! fallbacks for unknown routes and methods.

pub mod audit;
pub mod extensions;
pub mod health;
pub mod policies;
pub mod state;
pub mod tenants;
pub mod tokens;

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use axum::routing::{get, post};
use palisade_api::ApiErrorKind;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;

/// Largest JSON body of any endpoint but publishing.
pub const MAX_JSON_BODY: usize = 1 << 20;
/// Largest publish body: a 64 MiB component in base64 plus its manifest.
pub const MAX_PUBLISH_BODY: usize = 90 << 20;

/// Every route as `(method, OpenAPI path)`: what the router serves and `/openapi.json`
/// documents; a test holds the two to this list.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/.well-known/jwks.json"),
    ("GET", "/v1/whoami"),
    ("POST", "/v1/tenants"),
    ("GET", "/v1/tenants"),
    ("GET", "/v1/tenants/{tenant}"),
    ("POST", "/v1/tenants/{tenant}:suspend"),
    ("POST", "/v1/tenants/{tenant}:resume"),
    ("POST", "/v1/tenants/{tenant}:decommission"),
    ("POST", "/v1/tokens"),
    ("GET", "/v1/tokens"),
    ("DELETE", "/v1/tokens/{token}"),
    ("GET", "/v1/tenants/{tenant}/extensions"),
    ("GET", "/v1/tenants/{tenant}/extensions/{name}"),
    ("POST", "/v1/tenants/{tenant}/extensions/{name}/versions"),
    (
        "GET",
        "/v1/tenants/{tenant}/extensions/{name}/versions/{version}",
    ),
    (
        "POST",
        "/v1/tenants/{tenant}/extensions/{name}/versions/{version}:approve",
    ),
    (
        "POST",
        "/v1/tenants/{tenant}/extensions/{name}/versions/{version}:reject",
    ),
    ("GET", "/v1/tenants/{tenant}/extensions/{name}/deployments"),
    ("POST", "/v1/tenants/{tenant}/extensions/{name}/deployments"),
    ("POST", "/v1/tenants/{tenant}/extensions/{name}:rollback"),
    ("POST", "/v1/tenants/{tenant}/extensions/{name}:invoke"),
    ("GET", "/v1/tenants/{tenant}/policy"),
    ("PUT", "/v1/tenants/{tenant}/policy"),
    ("GET", "/v1/tenants/{tenant}/policy/versions"),
    ("POST", "/v1/tenants/{tenant}/policy:revert"),
    ("GET", "/v1/policies/baseline"),
    ("PUT", "/v1/policies/baseline"),
    ("GET", "/v1/policies/baseline/versions"),
    ("POST", "/v1/policies/baseline:revert"),
    ("PUT", "/v1/tenants/{tenant}/secrets/{name}"),
    ("DELETE", "/v1/tenants/{tenant}/secrets/{name}"),
    ("GET", "/v1/tenants/{tenant}/secrets"),
    ("GET", "/v1/tenants/{tenant}/keys"),
    ("POST", "/v1/tenants/{tenant}/keys:rotate"),
    ("DELETE", "/v1/tenants/{tenant}/kv/{namespace}"),
    ("POST", "/v1/keys/signing:rotate"),
    ("GET", "/v1/audit"),
    ("GET", "/v1/audit/verify"),
];

/// The router of the whole API.
pub fn router(state: Arc<AppState>) -> Router {
    let publish = post(extensions::publish).layer(DefaultBodyLimit::max(MAX_PUBLISH_BODY));
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(health::openapi))
        .route("/.well-known/jwks.json", get(health::jwks))
        .route("/v1/whoami", get(tokens::whoami))
        .route("/v1/tenants", post(tenants::create).get(tenants::list))
        // `{tenant}` alone for GET; `{tenant}:suspend` / `:resume` for POST (custom methods
        // share the segment, which the router cannot split).
        .route(
            "/v1/tenants/{tenant}",
            get(tenants::read).post(tenants::custom_method),
        )
        .route("/v1/tokens", post(tokens::create).get(tokens::list))
        .route("/v1/tokens/{token}", axum::routing::delete(tokens::revoke))
        .route("/v1/tenants/{tenant}/extensions", get(extensions::list))
        .route(
            "/v1/tenants/{tenant}/extensions/{name}",
            get(extensions::read).post(extensions::custom_method),
        )
        .route("/v1/tenants/{tenant}/extensions/{name}/versions", publish)
        .route(
            "/v1/tenants/{tenant}/extensions/{name}/versions/{version}",
            get(extensions::read_version).post(extensions::review),
        )
        .route(
            "/v1/tenants/{tenant}/extensions/{name}/deployments",
            get(extensions::deployments).post(extensions::deploy),
        )
        .route(
            "/v1/tenants/{tenant}/policy",
            get(policies::read_tenant).put(policies::apply_tenant),
        )
        .route(
            "/v1/tenants/{tenant}/policy/versions",
            get(policies::tenant_versions),
        )
        .route(
            "/v1/tenants/{tenant}/policy:revert",
            post(policies::revert_tenant),
        )
        .route(
            "/v1/policies/baseline",
            get(policies::read_baseline).put(policies::apply_baseline),
        )
        .route(
            "/v1/policies/baseline/versions",
            get(policies::baseline_versions),
        )
        .route(
            "/v1/policies/baseline:revert",
            post(policies::revert_baseline),
        )
        .route("/v1/tenants/{tenant}/secrets", get(state::secrets))
        .route(
            "/v1/tenants/{tenant}/secrets/{name}",
            axum::routing::put(state::set_secret).delete(state::delete_secret),
        )
        .route("/v1/tenants/{tenant}/keys", get(state::keys))
        .route("/v1/tenants/{tenant}/keys:rotate", post(state::rotate_keys))
        .route(
            "/v1/tenants/{tenant}/kv/{namespace}",
            axum::routing::delete(state::destroy_namespace),
        )
        .route("/v1/keys/signing:rotate", post(state::rotate_signing_key))
        .route("/v1/audit", get(audit::page))
        .route("/v1/audit/verify", get(audit::verify))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            count_requests,
        ))
        .fallback(no_route)
        .method_not_allowed_fallback(no_method)
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(axum::middleware::from_fn(body_deadline))
        .layer(axum::middleware::from_fn(crate::telemetry::request_context))
        .with_state(state)
}

/// The message of the fallback's 404, which tests use to tell "no route" from "no resource".
pub const NO_ROUTE: &str = "no API route matches";

/// The 404 of a path no route serves (also for custom methods that do not exist).
pub fn no_route_error(method: &str, path: &str) -> ApiError {
    ApiError::new(
        ApiErrorKind::NotFound,
        format!("{NO_ROUTE} {method} {path} (see /openapi.json)"),
    )
}

async fn no_route(request: Request) -> ApiError {
    no_route_error(request.method().as_str(), request.uri().path())
}

async fn no_method(request: Request) -> ApiError {
    ApiError::new(
        ApiErrorKind::MethodNotAllowed,
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

/// Counts every routed request by route template (bounded: the templates, not the paths).
async fn count_requests(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    state
        .metrics
        .record_http(&route, &method, response.status().as_u16());
    response
}

/// How long a request body may take to arrive: a base allowance plus time at a minimum
/// transfer rate for the bytes it declares (or, without a length, for the largest body any
/// route takes). A client that sends headers and then nothing, or trickles, is cut off.
pub fn body_read_timeout(declared: Option<u64>) -> Duration {
    const BASE: Duration = Duration::from_secs(10);
    const MIN_BYTES_PER_SECOND: u64 = 256 << 10;
    let bytes = declared.unwrap_or(MAX_PUBLISH_BODY as u64);
    BASE + Duration::from_secs(bytes / MIN_BYTES_PER_SECOND)
}

/// The error a request body that did not arrive in time reads as.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimedOut;

/// `408 request_timeout`.
pub fn body_timed_out() -> ApiError {
    ApiError::new(
        ApiErrorKind::RequestTimeout,
        "the request body did not arrive in time (send it at 256 KiB/s or faster)",
    )
}

/// A body that fails with [`BodyTimedOut`] once its deadline passes.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl axum::body::HttpBody for DeadlineBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Gives every request body a deadline ([`body_read_timeout`]).
async fn body_deadline(request: Request, next: axum::middleware::Next) -> Response {
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let timeout = body_read_timeout(declared);
    let request = request.map(|inner| {
        Body::new(DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        })
    });
    next.run(request).await
}

/// Splits `name:verb` into its parts.
pub fn split_verb(segment: &str) -> (&str, Option<&str>) {
    match segment.split_once(':') {
        Some((name, verb)) => (name, Some(verb)),
        None => (segment, None),
    }
}

/// A JSON body whose every failure is a typed error: malformed or mistyped JSON and unknown
/// fields `400 invalid_request` (naming the problem), a missing JSON content type `415`, an
/// oversized body `413`.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => {
                if std::error::Error::source(&rejection).is_some_and(is_body_timeout) {
                    return Err(body_timed_out());
                }
                let kind = match rejection.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => ApiErrorKind::PayloadTooLarge,
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiErrorKind::UnsupportedMediaType,
                    _ => ApiErrorKind::InvalidRequest,
                };
                Err(ApiError::new(kind, rejection.body_text()))
            }
        }
    }
}

pub(crate) fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<BodyTimedOut>() {
            return true;
        }
        current = error.source();
    }
    false
}

/// Path parameters whose rejection (not UTF-8, wrong shape) is a typed `400`.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Self(value))
            .map_err(|rejection| ApiError::invalid(rejection.body_text()))
    }
}

/// Query parameters whose rejection (unknown or mistyped parameters) is a typed `400`.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|rejection| ApiError::invalid(rejection.body_text()))
    }
}

/// Reads an optional JSON body from raw bytes (for custom methods whose handler also takes
/// other bodies): empty means the default.
pub fn json_or_default<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid(format!("the request body is not valid: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_methods_split_off_the_last_segment() {
        assert_eq!(split_verb("acme:suspend"), ("acme", Some("suspend")));
        assert_eq!(split_verb("acme"), ("acme", None));
        assert_eq!(split_verb("a:b:c"), ("a", Some("b:c")));
    }
}

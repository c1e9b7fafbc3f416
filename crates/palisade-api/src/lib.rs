//! The wire types of Palisade's HTTP API, version 1: the resources the server returns, the
//! bodies it accepts, and its one error body. The server serializes them, the client
//! deserializes them, the store returns them; the `openapi` feature derives their schemas for
//! `/openapi.json`. No I/O.
//!
//! Every request body rejects unknown fields, so a typo is a `400 invalid_request` naming the
//! field instead of a silently ignored setting.

#![forbid(unsafe_code)]

use std::fmt;

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// What a principal may do. Platform roles act on every tenant; tenant roles only on their
/// own tenant, and another tenant's resources look to them as if they did not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Everything, on every tenant.
    PlatformAdmin,
    /// Reads everything, reviews (approves or rejects) extension versions, reads the audit log.
    PlatformReviewer,
    /// Everything on its own tenant: tokens, publishing, deploying, rolling back, invoking.
    TenantAdmin,
    /// Publishes and reads its tenant's extensions, invokes them.
    TenantDeveloper,
    /// Only invokes its tenant's extensions.
    Invoker,
}

impl Role {
    pub const ALL: [Self; 5] = [
        Self::PlatformAdmin,
        Self::PlatformReviewer,
        Self::TenantAdmin,
        Self::TenantDeveloper,
        Self::Invoker,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PlatformAdmin => "platform-admin",
            Self::PlatformReviewer => "platform-reviewer",
            Self::TenantAdmin => "tenant-admin",
            Self::TenantDeveloper => "tenant-developer",
            Self::Invoker => "invoker",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.as_str() == text)
    }

    /// Platform roles have no tenant; every other role belongs to exactly one.
    pub fn is_platform(self) -> bool {
        matches!(self, Self::PlatformAdmin | Self::PlatformReviewer)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a tenant's extensions may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TenantState {
    Active,
    /// Invocations are refused with `tenant_suspended`; everything is kept.
    Suspended,
    /// Its state, secrets and data keys are destroyed and its tokens revoked; its history
    /// (versions, deployments, audit) is kept. Final.
    Decommissioned,
}

impl TenantState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Decommissioned => "decommissioned",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Active, Self::Suspended, Self::Decommissioned]
            .into_iter()
            .find(|state| state.as_str() == text)
    }
}

/// A customer of the platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Tenant {
    /// 1-63 lowercase letters, digits and hyphens, starting with a letter.
    pub id: String,
    pub state: TenantState,
    /// Unix milliseconds.
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// `POST /v1/tenants`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    pub id: String,
}

/// Who a token speaks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PrincipalInfo {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// The tenant of a tenant role; absent for platform roles.
    pub tenant: Option<String>,
}

/// An API token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TokenInfo {
    pub id: String,
    pub principal: PrincipalInfo,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub revoked_ms: Option<i64>,
}

/// `POST /v1/tokens`: a token for a new principal (`name`, `role`, `tenant`) or another
/// token for an existing one (`principal`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// A label for people: `ci-deployer`, `alice`.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub role: Option<Role>,
    /// Required for tenant roles, refused for platform roles.
    #[serde(default)]
    pub tenant: Option<String>,
    /// An existing principal to add a token to (rotation without downtime).
    #[serde(default)]
    pub principal: Option<String>,
    /// Lifetime in seconds (default 90 days, at most 400 days).
    #[serde(default)]
    pub expires_in_s: Option<u64>,
}

/// The answer to `POST /v1/tokens`: the only time the secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CreatedToken {
    /// Send as `Authorization: Bearer <token>`. Stored only as a hash; it cannot be shown again.
    pub token: String,
    pub info: TokenInfo,
}

/// `GET /v1/whoami`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Whoami {
    pub principal: PrincipalInfo,
    pub token_id: String,
    pub expires_ms: i64,
}

/// `POST /v1/tenants/{tenant}/extensions/{name}/versions`: publish a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PublishVersion {
    /// The `palisade.toml` text. Its name and version must match the path; a pinned
    /// `component.sha256` must match the component.
    pub manifest: String,
    /// The WebAssembly component, base64 (standard alphabet, padded).
    pub component_base64: String,
    /// SHA-256 of the component as the publisher computed it (64 lowercase hex).
    pub sha256: String,
}

/// Where a version is in review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum VersionState {
    /// Published, waiting for review; cannot be deployed while the server requires review.
    Published,
    /// Approved by a reviewer: deployable.
    Approved,
    /// Rejected by a reviewer: never deployable.
    Rejected,
}

impl VersionState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Published => "published",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Published, Self::Approved, Self::Rejected]
            .into_iter()
            .find(|state| state.as_str() == text)
    }
}

/// One published version of an extension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ExtensionVersion {
    pub tenant: String,
    pub name: String,
    pub version: String,
    /// The API package it is built against: `palisade:extension@1.0.0`.
    pub api: String,
    pub component_sha256: String,
    pub component_bytes: u64,
    pub state: VersionState,
    pub published_ms: i64,
    pub published_by: String,
    pub reviewed_ms: Option<i64>,
    pub reviewed_by: Option<String>,
    pub review_note: Option<String>,
    /// The manifest as published.
    pub manifest: String,
}

/// `POST .../versions/{version}:approve` and `:reject`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Review {
    #[serde(default)]
    pub note: Option<String>,
}

/// How a deployment came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeploymentKind {
    Deploy,
    Rollback,
}

impl DeploymentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deploy => "deploy",
            Self::Rollback => "rollback",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Deploy, Self::Rollback]
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }
}

/// One deployment: which version became active for a tenant's extension, when and by whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Deployment {
    /// Increases with every deployment on the server.
    pub seq: u64,
    pub tenant: String,
    pub name: String,
    pub version: String,
    pub kind: DeploymentKind,
    /// The version that was active before, if any.
    pub previous_version: Option<String>,
    pub deployed_ms: i64,
    pub deployed_by: String,
}

/// `POST /v1/tenants/{tenant}/extensions/{name}/deployments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    pub version: String,
}

/// `POST /v1/tenants/{tenant}/extensions/{name}:rollback`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// A version deployed before; default: the one active before the current one.
    #[serde(default)]
    pub to: Option<String>,
}

/// An extension of a tenant, with its versions and what is deployed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Extension {
    pub tenant: String,
    pub name: String,
    pub created_ms: i64,
    /// The active deployment, if any.
    pub active: Option<Deployment>,
    /// Every version, oldest first (manifests left out; read a version for its manifest).
    pub versions: Vec<VersionSummary>,
    /// The limits an invocation of the active version runs under: platform ceiling ∩
    /// baseline ∩ tenant policy ∩ manifest, by policy key (`fuel`, `wall_time` in
    /// microseconds, `memory` in bytes, ...).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub effective_limits: Option<serde_json::Value>,
}

/// A version in a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct VersionSummary {
    pub version: String,
    pub state: VersionState,
    pub component_sha256: String,
    pub published_ms: i64,
}

/// An extension in a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ExtensionSummary {
    pub tenant: String,
    pub name: String,
    pub created_ms: i64,
    pub active_version: Option<String>,
    pub latest_version: Option<String>,
}

/// `PUT /v1/tenants/{tenant}/policy` and `PUT /v1/policies/baseline`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ApplyPolicy {
    /// The policy document (TOML, Cedar inline), as `palisade policy validate` reads it.
    pub document: String,
    pub reason: String,
}

/// `POST .../policy:revert`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RevertPolicy {
    /// The version to restore (stored again as a new version).
    pub to: u64,
    pub reason: String,
}

/// One stored version of a policy layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PolicyVersion {
    /// `baseline` or `tenant:NAME`.
    pub scope: String,
    pub version: u64,
    pub author: String,
    /// Unix seconds.
    pub time_s: i64,
    pub reason: String,
    /// `apply` or `revert`.
    pub change: String,
    pub restored: Option<u64>,
    pub sha256: String,
    pub diff: String,
    pub document: String,
}

/// The answer to applying or reverting a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PolicyChange {
    /// False when the document equals the stored head (nothing stored).
    pub stored: bool,
    pub version: u64,
    pub diff: String,
}

/// `PUT /v1/tenants/{tenant}/secrets/{name}`: a new version of a secret. Write-only: no API
/// returns it again; only the egress gateway uses it, to inject credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetSecret {
    /// The value as text, or
    #[serde(default)]
    pub value: Option<String>,
    /// the value as base64 (exactly one of the two).
    #[serde(default)]
    pub value_base64: Option<String>,
}

/// A secret as listed: its name and newest version, never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SecretInfo {
    pub name: String,
    pub version: u64,
    pub created_ms: i64,
    pub created_by: String,
}

/// One version of one of a tenant's data keys (`kv:NAMESPACE` or `secrets`) and how many
/// values it still seals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct KeyVersion {
    pub scope: String,
    pub version: u64,
    pub created_ms: i64,
    /// The key-encryption key that wraps it (an id, never key material).
    pub kek_id: String,
    pub sealed_values: u64,
}

/// A tenant's data keys and the re-encryption still to do after a rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct KeysStatus {
    pub versions: Vec<KeyVersion>,
    /// Values still sealed under an older version (0: rotation complete).
    pub stale_values: u64,
}

/// What destroying state removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Destroyed {
    pub values: u64,
}

/// The kinds of API errors, besides the invocation error kinds of `palisade-model`
/// (`fuel_exhausted`, `timeout`, ...), which `:invoke` returns with their own statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ApiErrorKind {
    /// 400: malformed JSON, unknown fields, invalid names or versions.
    InvalidRequest,
    /// 401: no token, an unknown, expired or revoked token.
    Unauthenticated,
    /// 403: the token's role may not do this (on a resource it may see).
    Forbidden,
    /// 404: no such resource, or one of another tenant.
    NotFound,
    /// 405: the path exists, the method does not.
    MethodNotAllowed,
    /// 408: the request body did not arrive in time (a slow or silent client).
    RequestTimeout,
    /// 409: the change conflicts with the current state (exists already, not approved, ...).
    Conflict,
    /// 413: the body exceeds the limit for this endpoint or extension.
    PayloadTooLarge,
    /// 415: the body's media type is not accepted here.
    UnsupportedMediaType,
    /// 403: the tenant is suspended; its extensions do not run.
    TenantSuspended,
    /// 429: the tenant's rate or concurrency quota is used up (see `Retry-After`).
    RateLimited,
    /// 503: the server is at capacity or shutting down (see `Retry-After`).
    Overloaded,
    /// 500: a fault in Palisade.
    Internal,
}

impl ApiErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::RequestTimeout => "request_timeout",
            Self::Conflict => "conflict",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::TenantSuspended => "tenant_suspended",
            Self::RateLimited => "rate_limited",
            Self::Overloaded => "overloaded",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status of this kind.
    pub fn status(self) -> u16 {
        match self {
            Self::InvalidRequest => 400,
            Self::Unauthenticated => 401,
            Self::Forbidden | Self::TenantSuspended => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::RequestTimeout => 408,
            Self::Conflict => 409,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::RateLimited => 429,
            Self::Overloaded => 503,
            Self::Internal => 500,
        }
    }
}

impl fmt::Display for ApiErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The HTTP status `:invoke` answers an invocation error kind with.
pub fn invocation_status(kind: palisade_model::ErrorKind) -> u16 {
    use palisade_model::ErrorKind as K;
    match kind {
        K::InputTooLarge => 413,
        K::Timeout => 504,
        K::WorkerCrashed => 502,
        K::RateLimited => 429,
        K::Overloaded | K::IsolationUnavailable => 503,
        K::Internal => 500,
        // The extension ran and failed or broke a limit, or the deployed component cannot load.
        _ => 422,
    }
}

/// The error part of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ErrorDetail {
    /// An `ApiErrorKind` or, from `:invoke`, an invocation error kind (`fuel_exhausted`,
    /// `timeout`, `worker_crashed`, ...).
    pub kind: String,
    pub message: String,
}

/// Every error response: `{"error": {"kind", "message"}, "request_id"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
    pub request_id: String,
    /// Set by `:invoke` when the invocation got an id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<String>,
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Health {
    /// `ok`, or for `/readyz` `starting` / `draining`.
    pub status: String,
}

/// The full outcome of `:invoke?envelope=true`; without `envelope`, a success answers with
/// the extension's output bytes and content type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct InvokeEnvelope {
    /// `ok` or `error`.
    pub outcome: String,
    /// The output, when it is UTF-8.
    #[serde(default)]
    pub output: Option<String>,
    /// The output, base64, when it is not UTF-8.
    #[serde(default)]
    pub output_base64: Option<String>,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub error: Option<ErrorDetail>,
    /// Fuel, wall time, peak memory, bytes in and out, log bytes and lines.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub usage: serde_json::Value,
    /// The guest's captured log lines (sanitised).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub logs: Vec<serde_json::Value>,
    /// `{"mode": "jailed" | "degraded" | "in_process", "missing": [...]}`.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub isolation: serde_json::Value,
    pub request_id: String,
    pub invocation_id: String,
    pub tenant: String,
    pub extension: String,
    pub version: String,
}

/// One page of `GET /v1/audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditPage {
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub entries: Vec<palisade_model::audit::AuditEntry>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<u64>,
}

/// One public key as a JSON Web Key (RFC 8037: `OKP`, `Ed25519`), as the server publishes the
/// keys that sign the egress gateway's short-lived tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Jwk {
    /// `OKP`.
    pub kty: String,
    /// `Ed25519`.
    pub crv: String,
    /// The public key, base64url without padding.
    pub x: String,
    pub kid: String,
    /// `sig`.
    #[serde(rename = "use")]
    pub usage: String,
    /// `EdDSA`.
    pub alg: String,
}

/// A JWK set: `{"keys": [...]}` (`/.well-known/jwks.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// `POST /v1/keys/signing:rotate`: the token-signing key that replaced the one in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SigningKeyRotation {
    /// The key that signs from now on.
    pub kid: String,
    /// The key retired: its private part is destroyed, its public key stays in the JWKS
    /// until every token it signed has expired.
    pub retired: String,
    /// Unix seconds when the retired key leaves the JWKS.
    pub retired_published_until_s: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
            let json = serde_json::to_value(role).unwrap_or_default();
            assert_eq!(json, role.as_str());
        }
        assert_eq!(Role::parse("root"), None);
        for state in [TenantState::Active, TenantState::Suspended] {
            assert_eq!(TenantState::parse(state.as_str()), Some(state));
        }
    }

    #[test]
    fn request_bodies_refuse_unknown_fields() {
        let error = serde_json::from_str::<CreateTenant>(r#"{"id":"acme","plan":"gold"}"#).err();
        assert!(error.is_some_and(|e| e.to_string().contains("unknown field `plan`")));
    }
}

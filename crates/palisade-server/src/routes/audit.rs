//! The audit log through the API: pages of entries (for `palisade audit export`, which
//! verifies the chain itself) and the server's own verification of the stored chain.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use palisade_api::AuditPage;
use palisade_model::audit::Anchor;
use palisade_store::AuditReport;
use serde::Deserialize;

use super::ApiQuery;
use crate::auth::{Action, Caller};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

const MAX_PAGE: u32 = 1_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Entries after this sequence number.
    #[serde(default)]
    after: u64,
    #[serde(default)]
    limit: Option<u32>,
}

/// Audit entries in order, `limit` (at most 1000) after `after`.
#[utoipa::path(get, path = "/v1/audit", tag = "audit",
    params(("after" = Option<u64>, Query), ("limit" = Option<u32>, Query)),
    responses((status = 200, body = AuditPage), (status = 403, body = palisade_api::ErrorBody)))]
pub async fn page(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Json<AuditPage>> {
    caller.authorize(Action::ReadAudit)?;
    let limit = query.limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
    let entries = state.store.audit_entries(query.after, limit).await?;
    let next_after = (entries.len() == limit as usize)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    Ok(Json(AuditPage {
        entries,
        next_after,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyQuery {
    /// `SEQ:HASH` of an entry recorded earlier: also check it is still there, unchanged.
    anchor: Option<String>,
}

/// Verifies the stored chain from the first entry: the first bad entry, or the head.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit",
    params(("anchor" = Option<String>, Query, description = "SEQ:HASH printed by an earlier verification")),
    responses((status = 200, description = "{verified, head, broken}", body = Object)))]
pub async fn verify(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(query): ApiQuery<VerifyQuery>,
) -> ApiResult<Json<AuditReport>> {
    caller.authorize(Action::ReadAudit)?;
    let anchor = query
        .anchor
        .map(|text| {
            Anchor::parse(&text).ok_or_else(|| {
                ApiError::invalid(format!("`{text}` is not an anchor (SEQ:64-hex-hash)"))
            })
        })
        .transpose()?;
    Ok(Json(state.store.verify_audit(anchor).await?))
}

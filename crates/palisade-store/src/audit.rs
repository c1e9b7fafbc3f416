//! Appending to and reading the hash-chained audit log. Entries are appended only inside the
//! transaction of the change they record; nothing updates or deletes them.

use palisade_model::audit::{
    Anchor, AuditEntry, ChainBreak, ChainHead, ChainVerifier, GENESIS_HASH, digest_of,
};
use serde::Serialize;
use sqlx::{Sqlite, Transaction};

use crate::{Actor, Store, StoreError, now_ms, signed, unsigned};

/// What one change did, as its audit entry records it.
#[derive(Debug, Clone)]
pub struct Change {
    pub action: &'static str,
    pub tenant: Option<String>,
    pub target: String,
    pub before: Option<String>,
    pub after: Option<String>,
    pub detail: serde_json::Value,
}

impl Change {
    pub fn new(action: &'static str, tenant: Option<&str>, target: impl Into<String>) -> Self {
        Self {
            action,
            tenant: tenant.map(str::to_owned),
            target: target.into(),
            before: None,
            after: None,
            detail: serde_json::Value::Object(serde_json::Map::new()),
        }
    }

    /// Records the digests of the target's state before and after (its JSON form).
    pub fn states<T: Serialize>(mut self, before: Option<&T>, after: Option<&T>) -> Self {
        let digest = |value: &T| digest_of(&serde_json::to_vec(value).unwrap_or_default());
        self.before = before.map(digest);
        self.after = after.map(digest);
        self
    }

    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }
}

type AuditRow = (
    i64,
    i64,
    String,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    String,
    String,
    String,
);

const COLUMNS: &str = "seq, time_ms, request_id, principal, action, tenant_id, target, \
                       before_sha256, after_sha256, detail, prev_hash, hash";

fn entry_of(row: AuditRow) -> AuditEntry {
    AuditEntry {
        seq: unsigned(row.0),
        time_ms: row.1,
        request_id: row.2,
        principal: row.3,
        action: row.4,
        tenant: row.5,
        target: row.6,
        before: row.7,
        after: row.8,
        detail: row.9,
        prev_hash: row.10,
        hash: row.11,
    }
}

/// Appends the entry for `change` inside `tx`, chained to the newest entry.
pub(crate) async fn append(
    tx: &mut Transaction<'static, Sqlite>,
    actor: &Actor,
    change: Change,
) -> Result<AuditEntry, StoreError> {
    let last: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut **tx)
            .await?;
    let (seq, prev_hash) = last.map_or((1, GENESIS_HASH.to_owned()), |(seq, hash)| {
        (unsigned(seq) + 1, hash)
    });
    let entry = AuditEntry {
        seq,
        time_ms: now_ms(),
        request_id: actor.request_id.clone(),
        principal: actor.principal.clone(),
        action: change.action.to_owned(),
        tenant: change.tenant,
        target: change.target,
        before: change.before,
        after: change.after,
        detail: change.detail.to_string(),
        prev_hash,
        hash: String::new(),
    }
    .seal();
    sqlx::query(
        "INSERT INTO audit_log (seq, time_ms, request_id, principal, action, tenant_id, target, \
         before_sha256, after_sha256, detail, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(signed(entry.seq))
    .bind(entry.time_ms)
    .bind(&entry.request_id)
    .bind(&entry.principal)
    .bind(&entry.action)
    .bind(&entry.tenant)
    .bind(&entry.target)
    .bind(&entry.before)
    .bind(&entry.after)
    .bind(&entry.detail)
    .bind(&entry.prev_hash)
    .bind(&entry.hash)
    .execute(&mut **tx)
    .await?;
    Ok(entry)
}

/// The result of verifying the stored chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// Entries verified before the first break (all of them when intact).
    pub verified: u64,
    /// The head of the chain, when intact.
    pub head: Option<ChainHead>,
    /// The first break, if any.
    pub broken: Option<ChainBreak>,
}

impl Store {
    /// Up to `limit` entries with `seq > after`, in order.
    pub async fn audit_entries(
        &self,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let rows: Vec<AuditRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"
        )))
        .bind(signed(after))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(entry_of).collect())
    }

    /// Verifies the whole stored chain, page by page, from the genesis (and, with `anchor`,
    /// that a known entry is still there unchanged).
    pub async fn verify_audit(&self, anchor: Option<Anchor>) -> Result<AuditReport, StoreError> {
        let mut verifier = ChainVerifier::new(anchor);
        let mut after = 0;
        let mut verified = 0;
        loop {
            let page = self.audit_entries(after, 1_000).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for entry in &page {
                if let Err(broken) = verifier.push(entry) {
                    return Ok(AuditReport {
                        verified,
                        head: None,
                        broken: Some(broken),
                    });
                }
                verified += 1;
            }
        }
        Ok(match verifier.finish() {
            Ok(head) => AuditReport {
                verified,
                head: Some(head),
                broken: None,
            },
            Err(broken) => AuditReport {
                verified,
                head: None,
                broken: Some(broken),
            },
        })
    }
}

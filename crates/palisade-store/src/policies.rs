//! Policy versions in the database. The policy crate's `apply`/`revert` logic (validation,
//! diff, append-only versions) runs against a [`PolicySnapshot`] read from here; the version it
//! produces is then stored in one transaction with its audit entry, so two concurrent changes
//! to one layer cannot both win (the second is a conflict).

use std::collections::BTreeMap;
use std::sync::Mutex;

use palisade_policy::store::{AuditEvent, ChangeKind, PolicyStore, VersionRecord};
use palisade_policy::{Scope, StoreError as PolicyStoreError};

use crate::audit::{Change, append};
use crate::{Actor, Store, StoreError, signed, unsigned};

/// Every stored policy version, read at one moment: a `PolicyStore` the policy crate can
/// apply changes to. What it appends is kept in memory until [`Store::append_policy`] stores it.
#[derive(Debug, Default)]
pub struct PolicySnapshot {
    versions: Mutex<BTreeMap<String, Vec<VersionRecord>>>,
}

impl PolicySnapshot {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<VersionRecord>>> {
        self.versions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl PolicyStore for PolicySnapshot {
    fn history(&self, scope: &Scope) -> Result<Vec<VersionRecord>, PolicyStoreError> {
        Ok(self
            .lock()
            .get(&scope.to_string())
            .cloned()
            .unwrap_or_default())
    }

    fn append(&self, record: &VersionRecord) -> Result<(), PolicyStoreError> {
        let mut versions = self.lock();
        let history = versions.entry(record.scope.clone()).or_default();
        let expected = history.last().map_or(1, |r| r.version + 1);
        if record.version != expected {
            return Err(PolicyStoreError::Conflict {
                scope: record.scope.clone(),
                version: record.version,
            });
        }
        history.push(record.clone());
        Ok(())
    }

    fn scopes(&self) -> Result<Vec<Scope>, PolicyStoreError> {
        Ok(self.lock().keys().filter_map(|s| Scope::parse(s)).collect())
    }

    fn audit(&self) -> Result<Vec<AuditEvent>, PolicyStoreError> {
        let mut events: Vec<AuditEvent> = self
            .lock()
            .values()
            .flatten()
            .map(AuditEvent::from)
            .collect();
        events.sort_by_key(|e| e.time);
        Ok(events)
    }
}

type PolicyRow = (
    String,
    i64,
    String,
    i64,
    String,
    String,
    Option<i64>,
    String,
    String,
    String,
);

fn record_of(row: PolicyRow) -> Result<VersionRecord, StoreError> {
    let change = match row.5.as_str() {
        "apply" => ChangeKind::Apply,
        "revert" => ChangeKind::Revert,
        other => {
            return Err(StoreError::Corrupt(format!(
                "policy {} version {} has change `{other}`",
                row.0, row.1
            )));
        }
    };
    Ok(VersionRecord {
        scope: row.0,
        version: unsigned(row.1),
        author: row.2,
        time: row.3,
        reason: row.4,
        change,
        restored: row.6.map(unsigned),
        sha256: row.7,
        diff: row.8,
        document: row.9,
    })
}

impl Store {
    /// Every policy version of every scope.
    pub async fn policy_snapshot(&self) -> Result<PolicySnapshot, StoreError> {
        let rows: Vec<PolicyRow> = sqlx::query_as(
            "SELECT scope, version, author, time_s, reason, change, restored, sha256, diff, \
             document FROM policy_versions ORDER BY scope, version",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut versions: BTreeMap<String, Vec<VersionRecord>> = BTreeMap::new();
        for row in rows {
            let record = record_of(row)?;
            versions
                .entry(record.scope.clone())
                .or_default()
                .push(record);
        }
        Ok(PolicySnapshot {
            versions: Mutex::new(versions),
        })
    }

    /// Stores a version the policy crate produced, with its audit entry. A version that
    /// exists already (a concurrent change won) is a conflict; nothing is stored.
    pub async fn append_policy(
        &self,
        actor: &Actor,
        record: &VersionRecord,
    ) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let previous: Option<(String,)> = sqlx::query_as(
            "SELECT sha256 FROM policy_versions WHERE scope = $1 ORDER BY version DESC LIMIT 1",
        )
        .bind(&record.scope)
        .fetch_optional(&mut *tx)
        .await?;
        let change = match record.change {
            ChangeKind::Apply => "apply",
            ChangeKind::Revert => "revert",
        };
        let inserted = sqlx::query(
            "INSERT INTO policy_versions (scope, version, author, time_s, reason, change, \
             restored, sha256, diff, document) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&record.scope)
        .bind(signed(record.version))
        .bind(&record.author)
        .bind(record.time)
        .bind(&record.reason)
        .bind(change)
        .bind(record.restored.map(signed))
        .bind(&record.sha256)
        .bind(&record.diff)
        .bind(&record.document)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(error) if StoreError::is_unique_violation(&error) => {
                return Err(StoreError::Conflict(format!(
                    "version {} of {} was stored by a concurrent change; retry",
                    record.version, record.scope
                )));
            }
            other => other?,
        };
        let tenant = record.scope.strip_prefix("tenant:");
        let action = match record.change {
            ChangeKind::Apply => "policy.apply",
            ChangeKind::Revert => "policy.revert",
        };
        let mut audited = Change::new(action, tenant, format!("policy:{}", record.scope)).detail(
            serde_json::json!({
                "version": record.version,
                "restored": record.restored,
                "reason": record.reason,
                "diff": record.diff,
            }),
        );
        audited.before = previous.map(|(sha,)| sha);
        audited.after = Some(record.sha256.clone());
        append(&mut tx, actor, audited).await?;
        tx.commit().await?;
        Ok(())
    }
}

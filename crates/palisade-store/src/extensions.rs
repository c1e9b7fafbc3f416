//! Extensions, their immutable versions (manifest + component digest), reviews, and
//! deployments: which version is active per tenant and extension, with the full history and
//! rollback to any version deployed before.

use palisade_api::{
    Deployment, DeploymentKind, ExtensionSummary, ExtensionVersion, VersionState, VersionSummary,
};
use palisade_model::manifest::ExtensionName;

use crate::audit::{Change, append};
use crate::tenants::check_tenant_id;
use crate::{Actor, Store, StoreError, now_ms, signed, unsigned};

/// A version to publish. The caller has parsed the manifest and checked the component.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub tenant: String,
    pub name: String,
    pub version: semver::Version,
    pub api: String,
    pub manifest: String,
    pub component: Vec<u8>,
}

type VersionRow = (
    String,
    String,
    String,
    String,
    String,
    i64,
    String,
    i64,
    String,
    Option<i64>,
    Option<String>,
    Option<String>,
    String,
);

const VERSION_COLUMNS: &str = "tenant_id, name, version, api, component_sha256, \
     component_bytes, state, published_ms, published_by, reviewed_ms, reviewed_by, review_note, \
     manifest";

fn version_of(row: VersionRow) -> Result<ExtensionVersion, StoreError> {
    let state = VersionState::parse(&row.6).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "{}/{}@{} has state `{}`",
            row.0, row.1, row.2, row.6
        ))
    })?;
    Ok(ExtensionVersion {
        tenant: row.0,
        name: row.1,
        version: row.2,
        api: row.3,
        component_sha256: row.4,
        component_bytes: unsigned(row.5),
        state,
        published_ms: row.7,
        published_by: row.8,
        reviewed_ms: row.9,
        reviewed_by: row.10,
        review_note: row.11,
        manifest: row.12,
    })
}

type SummaryRow = (String, String, i64, Option<String>, Option<String>);

type DeploymentRow = (
    i64,
    String,
    String,
    String,
    String,
    Option<String>,
    i64,
    String,
);

const DEPLOYMENT_COLUMNS: &str =
    "seq, tenant_id, name, version, kind, previous_version, deployed_ms, deployed_by";

fn deployment_of(row: DeploymentRow) -> Result<Deployment, StoreError> {
    let kind = DeploymentKind::parse(&row.4)
        .ok_or_else(|| StoreError::Corrupt(format!("deployment {} has kind `{}`", row.0, row.4)))?;
    Ok(Deployment {
        seq: unsigned(row.0),
        tenant: row.1,
        name: row.2,
        version: row.3,
        kind,
        previous_version: row.5,
        deployed_ms: row.6,
        deployed_by: row.7,
    })
}

fn check_name(name: &str) -> Result<(), StoreError> {
    ExtensionName::new(name)
        .map(|_| ())
        .map_err(|e| StoreError::Invalid(e.to_string()))
}

fn label(tenant: &str, name: &str, version: &str) -> String {
    format!("extension:{tenant}/{name}@{version}")
}

impl Store {
    /// Publishes a version: the component is stored (and synced) first, then the version row
    /// and its audit entry in one transaction. Versions are immutable: publishing one that
    /// exists is a conflict, whatever its content.
    pub async fn publish_version(
        &self,
        actor: &Actor,
        new: NewVersion,
    ) -> Result<ExtensionVersion, StoreError> {
        check_tenant_id(&new.tenant)?;
        check_name(&new.name)?;
        let version_text = new.version.to_string();
        if self
            .version(&new.tenant, &new.name, &version_text)
            .await?
            .is_some()
        {
            return Err(StoreError::Conflict(format!(
                "{}/{}@{} is published already; versions are immutable, publish a new one",
                new.tenant, new.name, version_text
            )));
        }
        let artifacts = self.artifacts.clone();
        let bytes = new.component.len();
        let component = new.component;
        let digest = tokio::task::spawn_blocking(move || artifacts.put(&component))
            .await
            .map_err(|e| StoreError::Corrupt(format!("artifact writer failed: {e}")))??;
        let now = now_ms();
        let version = ExtensionVersion {
            tenant: new.tenant,
            name: new.name,
            version: version_text,
            api: new.api,
            component_sha256: digest,
            component_bytes: bytes as u64,
            state: VersionState::Published,
            published_ms: now,
            published_by: actor.principal.clone(),
            reviewed_ms: None,
            reviewed_by: None,
            review_note: None,
            manifest: new.manifest,
        };
        let mut tx = self.write().await?;
        let tenant: Option<(String,)> = sqlx::query_as("SELECT id FROM tenants WHERE id = $1")
            .bind(&version.tenant)
            .fetch_optional(&mut *tx)
            .await?;
        if tenant.is_none() {
            return Err(StoreError::NotFound(format!("tenant {}", version.tenant)));
        }
        sqlx::query(
            "INSERT INTO extensions (tenant_id, name, created_ms) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&version.tenant)
        .bind(&version.name)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let inserted = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO extension_versions ({VERSION_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        )))
        .bind(&version.tenant)
        .bind(&version.name)
        .bind(&version.version)
        .bind(&version.api)
        .bind(&version.component_sha256)
        .bind(signed(version.component_bytes))
        .bind(version.state.as_str())
        .bind(version.published_ms)
        .bind(&version.published_by)
        .bind(version.reviewed_ms)
        .bind(&version.reviewed_by)
        .bind(&version.review_note)
        .bind(&version.manifest)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(error) if StoreError::is_unique_violation(&error) => {
                return Err(StoreError::Conflict(format!(
                    "{}/{}@{} is published already; versions are immutable, publish a new one",
                    version.tenant, version.name, version.version
                )));
            }
            other => other?,
        };
        let change = Change::new(
            "extension.publish",
            Some(&version.tenant),
            label(&version.tenant, &version.name, &version.version),
        )
        .states(None, Some(&version))
        .detail(serde_json::json!({
            "component_sha256": version.component_sha256,
            "component_bytes": version.component_bytes,
            "api": version.api,
        }));
        append(&mut tx, actor, change).await?;
        tx.commit().await?;
        Ok(version)
    }

    pub async fn version(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
    ) -> Result<Option<ExtensionVersion>, StoreError> {
        let row: Option<VersionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {VERSION_COLUMNS} FROM extension_versions \
             WHERE tenant_id = $1 AND name = $2 AND version = $3"
        )))
        .bind(tenant)
        .bind(name)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        row.map(version_of).transpose()
    }

    /// Every version of an extension, oldest first.
    pub async fn versions(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Vec<VersionSummary>, StoreError> {
        let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
            "SELECT version, state, component_sha256, published_ms FROM extension_versions \
             WHERE tenant_id = $1 AND name = $2 ORDER BY published_ms, version",
        )
        .bind(tenant)
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(version, state, digest, published_ms)| {
                let state = VersionState::parse(&state).ok_or_else(|| {
                    StoreError::Corrupt(format!("{tenant}/{name}@{version} has state `{state}`"))
                })?;
                Ok(VersionSummary {
                    version,
                    state,
                    component_sha256: digest,
                    published_ms,
                })
            })
            .collect()
    }

    /// A tenant's extensions, by name.
    pub async fn extensions(&self, tenant: &str) -> Result<Vec<ExtensionSummary>, StoreError> {
        let rows: Vec<SummaryRow> = sqlx::query_as(
            "SELECT e.tenant_id, e.name, e.created_ms, \
               (SELECT d.version FROM deployments d \
                 WHERE d.tenant_id = e.tenant_id AND d.name = e.name ORDER BY d.seq DESC LIMIT 1), \
               (SELECT v.version FROM extension_versions v \
                 WHERE v.tenant_id = e.tenant_id AND v.name = e.name \
                 ORDER BY v.published_ms DESC, v.version DESC LIMIT 1) \
             FROM extensions e WHERE e.tenant_id = $1 ORDER BY e.name",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(tenant, name, created_ms, active_version, latest_version)| ExtensionSummary {
                    tenant,
                    name,
                    created_ms,
                    active_version,
                    latest_version,
                },
            )
            .collect())
    }

    /// When the extension was first published, if it exists.
    pub async fn extension_created(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<i64>, StoreError> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT created_ms FROM extensions WHERE tenant_id = $1 AND name = $2")
                .bind(tenant)
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(created,)| created))
    }

    /// Approves or rejects a published version. Only a version waiting for review can be
    /// reviewed; a decision is final (publish a new version instead).
    pub async fn review_version(
        &self,
        actor: &Actor,
        tenant: &str,
        name: &str,
        version: &str,
        approve: bool,
        note: Option<String>,
    ) -> Result<ExtensionVersion, StoreError> {
        let mut tx = self.write().await?;
        let row: Option<VersionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {VERSION_COLUMNS} FROM extension_versions \
             WHERE tenant_id = $1 AND name = $2 AND version = $3"
        )))
        .bind(tenant)
        .bind(name)
        .bind(version)
        .fetch_optional(&mut *tx)
        .await?;
        let before = row
            .map(version_of)
            .transpose()?
            .ok_or_else(|| StoreError::NotFound(format!("{tenant}/{name}@{version}")))?;
        if before.state != VersionState::Published {
            return Err(StoreError::Conflict(format!(
                "{tenant}/{name}@{version} was {} already; a review is final",
                before.state.as_str()
            )));
        }
        let after = ExtensionVersion {
            state: if approve {
                VersionState::Approved
            } else {
                VersionState::Rejected
            },
            reviewed_ms: Some(now_ms()),
            reviewed_by: Some(actor.principal.clone()),
            review_note: note,
            ..before.clone()
        };
        sqlx::query(
            "UPDATE extension_versions SET state = $1, reviewed_ms = $2, reviewed_by = $3, \
             review_note = $4 WHERE tenant_id = $5 AND name = $6 AND version = $7",
        )
        .bind(after.state.as_str())
        .bind(after.reviewed_ms)
        .bind(&after.reviewed_by)
        .bind(&after.review_note)
        .bind(tenant)
        .bind(name)
        .bind(version)
        .execute(&mut *tx)
        .await?;
        let action = if approve {
            "extension.approve"
        } else {
            "extension.reject"
        };
        let change = Change::new(action, Some(tenant), label(tenant, name, version))
            .states(Some(&before), Some(&after))
            .detail(serde_json::json!({ "note": after.review_note }));
        append(&mut tx, actor, change).await?;
        tx.commit().await?;
        Ok(after)
    }

    /// The active deployment of an extension, if any.
    pub async fn active_deployment(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<Deployment>, StoreError> {
        let row: Option<DeploymentRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE tenant_id = $1 AND name = $2 \
             ORDER BY seq DESC LIMIT 1"
        )))
        .bind(tenant)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(deployment_of).transpose()
    }

    /// Every deployment of an extension, oldest first.
    pub async fn deployments(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Vec<Deployment>, StoreError> {
        let rows: Vec<DeploymentRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE tenant_id = $1 AND name = $2 \
             ORDER BY seq"
        )))
        .bind(tenant)
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(deployment_of).collect()
    }

    /// Makes `version` the active one. With `require_approved`, only an approved version can
    /// be deployed; a rejected one never can. Deploying the active version changes nothing.
    pub async fn deploy(
        &self,
        actor: &Actor,
        tenant: &str,
        name: &str,
        version: &str,
        require_approved: bool,
    ) -> Result<Deployment, StoreError> {
        let mut tx = self.write().await?;
        let state: Option<(String,)> = sqlx::query_as(
            "SELECT state FROM extension_versions WHERE tenant_id = $1 AND name = $2 AND version = $3",
        )
        .bind(tenant)
        .bind(name)
        .bind(version)
        .fetch_optional(&mut *tx)
        .await?;
        let state = state
            .and_then(|(state,)| VersionState::parse(&state))
            .ok_or_else(|| StoreError::NotFound(format!("{tenant}/{name}@{version}")))?;
        match state {
            VersionState::Rejected => {
                return Err(StoreError::Conflict(format!(
                    "{tenant}/{name}@{version} was rejected in review and cannot be deployed"
                )));
            }
            VersionState::Published if require_approved => {
                return Err(StoreError::Conflict(format!(
                    "{tenant}/{name}@{version} is waiting for review; a platform reviewer must \
                     approve it before it can be deployed"
                )));
            }
            _ => {}
        }
        let current = active_in(&mut tx, tenant, name).await?;
        if let Some(current) = current.as_ref().filter(|c| c.version == version) {
            return Ok(current.clone());
        }
        let deployment = insert_deployment(
            &mut tx,
            actor,
            tenant,
            name,
            version,
            DeploymentKind::Deploy,
            current,
        )
        .await?;
        tx.commit().await?;
        Ok(deployment)
    }

    /// Rolls back to `to`, or to the version active before the current one: any version
    /// deployed before, in one call, recorded as a new deployment.
    pub async fn rollback(
        &self,
        actor: &Actor,
        tenant: &str,
        name: &str,
        to: Option<&str>,
    ) -> Result<Deployment, StoreError> {
        let mut tx = self.write().await?;
        let history: Vec<DeploymentRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE tenant_id = $1 AND name = $2 \
             ORDER BY seq"
        )))
        .bind(tenant)
        .bind(name)
        .fetch_all(&mut *tx)
        .await?;
        let history = history
            .into_iter()
            .map(deployment_of)
            .collect::<Result<Vec<_>, _>>()?;
        let Some(current) = history.last().cloned() else {
            return Err(StoreError::NotFound(format!(
                "a deployment of {tenant}/{name}"
            )));
        };
        let target = match to {
            Some(to) => {
                if !history.iter().any(|d| d.version == to) {
                    return Err(StoreError::Conflict(format!(
                        "{tenant}/{name}@{to} was never deployed; roll back only to a version \
                         deployed before"
                    )));
                }
                to.to_owned()
            }
            None => current.previous_version.clone().ok_or_else(|| {
                StoreError::Conflict(format!(
                    "{tenant}/{name} has had one version deployed only; nothing to roll back to"
                ))
            })?,
        };
        if target == current.version {
            return Err(StoreError::Conflict(format!(
                "{tenant}/{name}@{target} is the active version already"
            )));
        }
        let deployment = insert_deployment(
            &mut tx,
            actor,
            tenant,
            name,
            &target,
            DeploymentKind::Rollback,
            Some(current),
        )
        .await?;
        tx.commit().await?;
        Ok(deployment)
    }
}

async fn active_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    tenant: &str,
    name: &str,
) -> Result<Option<Deployment>, StoreError> {
    let row: Option<DeploymentRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE tenant_id = $1 AND name = $2 \
         ORDER BY seq DESC LIMIT 1"
    )))
    .bind(tenant)
    .bind(name)
    .fetch_optional(&mut **tx)
    .await?;
    row.map(deployment_of).transpose()
}

async fn insert_deployment(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    actor: &Actor,
    tenant: &str,
    name: &str,
    version: &str,
    kind: DeploymentKind,
    current: Option<Deployment>,
) -> Result<Deployment, StoreError> {
    let (last,): (Option<i64>,) = sqlx::query_as("SELECT MAX(seq) FROM deployments")
        .fetch_one(&mut **tx)
        .await?;
    let deployment = Deployment {
        seq: unsigned(last.unwrap_or(0)) + 1,
        tenant: tenant.to_owned(),
        name: name.to_owned(),
        version: version.to_owned(),
        kind,
        previous_version: current.as_ref().map(|c| c.version.clone()),
        deployed_ms: now_ms(),
        deployed_by: actor.principal.clone(),
    };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO deployments ({DEPLOYMENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    )))
    .bind(signed(deployment.seq))
    .bind(&deployment.tenant)
    .bind(&deployment.name)
    .bind(&deployment.version)
    .bind(kind.as_str())
    .bind(&deployment.previous_version)
    .bind(deployment.deployed_ms)
    .bind(&deployment.deployed_by)
    .execute(&mut **tx)
    .await?;
    let action = match kind {
        DeploymentKind::Deploy => "deployment.deploy",
        DeploymentKind::Rollback => "deployment.rollback",
    };
    let change = Change::new(action, Some(tenant), format!("deployment:{tenant}/{name}"))
        .states(current.as_ref(), Some(&deployment))
        .detail(serde_json::json!({
            "version": deployment.version,
            "previous_version": deployment.previous_version,
        }));
    append(tx, actor, change).await?;
    Ok(deployment)
}

//! Tenants: created, listed, suspended and resumed.

use palisade_api::{Tenant, TenantState};

use crate::audit::{Change, append};
use crate::{Actor, Store, StoreError, now_ms};

type TenantRow = (String, String, i64, i64);

fn tenant_of(row: TenantRow) -> Result<Tenant, StoreError> {
    let state = TenantState::parse(&row.1)
        .ok_or_else(|| StoreError::Corrupt(format!("tenant {} has state `{}`", row.0, row.1)))?;
    Ok(Tenant {
        id: row.0,
        state,
        created_ms: row.2,
        updated_ms: row.3,
    })
}

/// Refuses names that are not valid tenant ids (the rules of extension names).
pub(crate) fn check_tenant_id(id: &str) -> Result<(), StoreError> {
    palisade_policy::TenantId::new(id)
        .map(|_| ())
        .map_err(|e| StoreError::Invalid(e.to_string()))
}

impl Store {
    pub async fn create_tenant(&self, actor: &Actor, id: &str) -> Result<Tenant, StoreError> {
        check_tenant_id(id)?;
        let now = now_ms();
        let tenant = Tenant {
            id: id.to_owned(),
            state: TenantState::Active,
            created_ms: now,
            updated_ms: now,
        };
        let mut tx = self.write().await?;
        let inserted = sqlx::query(
            "INSERT INTO tenants (id, state, created_ms, updated_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(tenant.state.as_str())
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(error) if StoreError::is_unique_violation(&error) => {
                return Err(StoreError::Conflict(format!("tenant {id} exists already")));
            }
            other => other?,
        };
        // The next free slot; the one writer connection serialises creations, and the UNIQUE
        // constraint would refuse a duplicate anyway.
        sqlx::query(
            "INSERT INTO tenant_uid_slots (tenant_id, slot) \
             SELECT $1, COALESCE(MAX(slot) + 1, 0) FROM tenant_uid_slots",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let change = Change::new("tenant.create", Some(id), format!("tenant:{id}"))
            .states(None, Some(&tenant));
        append(&mut tx, actor, change).await?;
        tx.commit().await?;
        Ok(tenant)
    }

    /// Every tenant's host uid slot (unique, never reused while the tenant exists).
    pub async fn tenant_uid_slots(&self) -> Result<Vec<(String, u32)>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT tenant_id, slot FROM tenant_uid_slots ORDER BY slot")
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|(tenant, slot)| {
                u32::try_from(slot)
                    .map(|slot| (tenant.clone(), slot))
                    .map_err(|_| {
                        StoreError::Corrupt(format!("tenant {tenant} has uid slot {slot}"))
                    })
            })
            .collect()
    }

    /// One tenant's host uid slot.
    pub async fn tenant_uid_slot(&self, id: &str) -> Result<Option<u32>, StoreError> {
        let slot: Option<i64> =
            sqlx::query_scalar("SELECT slot FROM tenant_uid_slots WHERE tenant_id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        slot.map(|slot| {
            u32::try_from(slot)
                .map_err(|_| StoreError::Corrupt(format!("tenant {id} has uid slot {slot}")))
        })
        .transpose()
    }

    pub async fn tenant(&self, id: &str) -> Result<Option<Tenant>, StoreError> {
        let row: Option<TenantRow> =
            sqlx::query_as("SELECT id, state, created_ms, updated_ms FROM tenants WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(tenant_of).transpose()
    }

    /// The tenant `id` as `tx` sees it.
    pub(crate) async fn tenant_in(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
        id: &str,
    ) -> Result<Option<Tenant>, StoreError> {
        let row: Option<TenantRow> =
            sqlx::query_as("SELECT id, state, created_ms, updated_ms FROM tenants WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut **tx)
                .await?;
        row.map(tenant_of).transpose()
    }

    pub async fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows: Vec<TenantRow> =
            sqlx::query_as("SELECT id, state, created_ms, updated_ms FROM tenants ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(tenant_of).collect()
    }

    /// Suspends or resumes a tenant. Setting the state it already has changes nothing and
    /// records nothing.
    pub async fn set_tenant_state(
        &self,
        actor: &Actor,
        id: &str,
        state: TenantState,
    ) -> Result<Tenant, StoreError> {
        let mut tx = self.write().await?;
        let row: Option<TenantRow> =
            sqlx::query_as("SELECT id, state, created_ms, updated_ms FROM tenants WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let before = row
            .map(tenant_of)
            .transpose()?
            .ok_or_else(|| StoreError::NotFound(format!("tenant {id}")))?;
        if before.state == state {
            return Ok(before);
        }
        if before.state == TenantState::Decommissioned {
            return Err(StoreError::Conflict(format!(
                "tenant {id} is decommissioned; that is final"
            )));
        }
        let after = Tenant {
            state,
            updated_ms: now_ms(),
            ..before.clone()
        };
        sqlx::query("UPDATE tenants SET state = $1, updated_ms = $2 WHERE id = $3")
            .bind(state.as_str())
            .bind(after.updated_ms)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let action = match state {
            TenantState::Active => "tenant.resume",
            TenantState::Suspended => "tenant.suspend",
            TenantState::Decommissioned => {
                return Err(StoreError::Invalid(
                    "decommission a tenant with decommission_tenant".into(),
                ));
            }
        };
        let change = Change::new(action, Some(id), format!("tenant:{id}"))
            .states(Some(&before), Some(&after));
        append(&mut tx, actor, change).await?;
        tx.commit().await?;
        Ok(after)
    }
}

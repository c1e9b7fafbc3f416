//! Principals and their API tokens. A token is 256 random bits shown once; only its SHA-256
//! is stored (a fast hash is enough for a secret with this much entropy), so a copy of the
//! database does not hold a usable token.

use palisade_api::{PrincipalInfo, Role, TokenInfo};
use sha2::{Digest, Sha256};

use crate::audit::{Change, append};
use crate::tenants::check_tenant_id;
use crate::{Actor, Store, StoreError, now_ms};

/// Every token starts with this, so secret scanners and people can recognise one.
pub const TOKEN_PREFIX: &str = "pal_";

/// The stored form of a token secret.
pub fn hash_secret(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn random_hex(bytes: usize) -> Result<String, StoreError> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).map_err(|e| StoreError::Random(e.to_string()))?;
    Ok(hex::encode(buffer))
}

/// A token to mint: for a new principal, or for an existing one.
#[derive(Debug, Clone)]
pub enum NewToken {
    Principal {
        name: String,
        role: Role,
        tenant: Option<String>,
        expires_ms: i64,
    },
    For {
        principal: String,
        expires_ms: i64,
    },
}

/// A token that authenticated: who it is, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedToken {
    pub token_id: String,
    pub principal: PrincipalInfo,
    pub expires_ms: i64,
}

type TokenRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    i64,
    i64,
    Option<i64>,
);

const TOKEN_COLUMNS: &str = "t.id, p.id, p.name, p.role, p.tenant_id, t.created_ms, \
                             t.expires_ms, t.revoked_ms";

fn info_of(row: TokenRow) -> Result<TokenInfo, StoreError> {
    let role = Role::parse(&row.3)
        .ok_or_else(|| StoreError::Corrupt(format!("principal {} has role `{}`", row.1, row.3)))?;
    Ok(TokenInfo {
        id: row.0,
        principal: PrincipalInfo {
            id: row.1,
            name: row.2,
            role,
            tenant: row.4,
        },
        created_ms: row.5,
        expires_ms: row.6,
        revoked_ms: row.7,
    })
}

impl Store {
    /// Mints a token; returns its secret (the only copy) and what it is.
    pub async fn create_token(
        &self,
        actor: &Actor,
        new: NewToken,
    ) -> Result<(String, TokenInfo), StoreError> {
        let secret = format!("{TOKEN_PREFIX}{}", random_hex(32)?);
        let token_id = format!("tok-{}", random_hex(8)?);
        let now = now_ms();
        let mut tx = self.write().await?;
        let (principal, expires_ms) = match new {
            NewToken::Principal {
                name,
                role,
                tenant,
                expires_ms,
            } => {
                if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
                    return Err(StoreError::Invalid(
                        "a principal name is 1-128 printable characters".into(),
                    ));
                }
                match (&tenant, role.is_platform()) {
                    (Some(_), true) => {
                        return Err(StoreError::Invalid(format!(
                            "role {role} is a platform role and belongs to no tenant"
                        )));
                    }
                    (None, false) => {
                        return Err(StoreError::Invalid(format!(
                            "role {role} belongs to a tenant: give `tenant`"
                        )));
                    }
                    _ => {}
                }
                if let Some(tenant) = &tenant {
                    check_tenant_id(tenant)?;
                    let exists: Option<(String,)> =
                        sqlx::query_as("SELECT id FROM tenants WHERE id = $1")
                            .bind(tenant)
                            .fetch_optional(&mut *tx)
                            .await?;
                    if exists.is_none() {
                        return Err(StoreError::NotFound(format!("tenant {tenant}")));
                    }
                }
                let principal = PrincipalInfo {
                    id: format!("p-{}", random_hex(8)?),
                    name,
                    role,
                    tenant,
                };
                sqlx::query(
                    "INSERT INTO principals (id, name, role, tenant_id, created_ms) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&principal.id)
                .bind(&principal.name)
                .bind(principal.role.as_str())
                .bind(&principal.tenant)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                (principal, expires_ms)
            }
            NewToken::For {
                principal,
                expires_ms,
            } => {
                let row: Option<(String, String, String, Option<String>)> = sqlx::query_as(
                    "SELECT id, name, role, tenant_id FROM principals WHERE id = $1",
                )
                .bind(&principal)
                .fetch_optional(&mut *tx)
                .await?;
                let (id, name, role, tenant) =
                    row.ok_or_else(|| StoreError::NotFound(format!("principal {principal}")))?;
                let role = Role::parse(&role).ok_or_else(|| {
                    StoreError::Corrupt(format!("principal {id} has role `{role}`"))
                })?;
                (
                    PrincipalInfo {
                        id,
                        name,
                        role,
                        tenant,
                    },
                    expires_ms,
                )
            }
        };
        if expires_ms <= now {
            return Err(StoreError::Invalid(
                "the token would be expired already".into(),
            ));
        }
        sqlx::query(
            "INSERT INTO tokens (id, principal_id, secret_sha256, created_ms, expires_ms) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&token_id)
        .bind(&principal.id)
        .bind(hash_secret(&secret))
        .bind(now)
        .bind(expires_ms)
        .execute(&mut *tx)
        .await?;
        let info = TokenInfo {
            id: token_id.clone(),
            principal,
            created_ms: now,
            expires_ms,
            revoked_ms: None,
        };
        let tenant = info.principal.tenant.clone();
        let change = Change::new(
            "token.create",
            tenant.as_deref(),
            format!("token:{token_id}"),
        )
        .states(None, Some(&info))
        .detail(serde_json::json!({
            "principal": info.principal.id,
            "role": info.principal.role,
            "expires_ms": info.expires_ms,
        }));
        append(&mut tx, actor, change).await?;
        tx.commit().await?;
        Ok((secret, info))
    }

    /// The token whose secret is `secret`, if it exists, is not revoked and has not expired.
    pub async fn authenticate(
        &self,
        secret: &str,
    ) -> Result<Option<AuthenticatedToken>, StoreError> {
        let row: Option<TokenRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens t JOIN principals p ON p.id = t.principal_id \
             WHERE t.secret_sha256 = $1"
        )))
        .bind(hash_secret(secret))
        .fetch_optional(&self.pool)
        .await?;
        let Some(info) = row.map(info_of).transpose()? else {
            return Ok(None);
        };
        if info.revoked_ms.is_some() || info.expires_ms <= now_ms() {
            return Ok(None);
        }
        Ok(Some(AuthenticatedToken {
            token_id: info.id,
            principal: info.principal,
            expires_ms: info.expires_ms,
        }))
    }

    /// Tokens, newest first: all of them, or those of one tenant's principals.
    pub async fn tokens(&self, tenant: Option<&str>) -> Result<Vec<TokenInfo>, StoreError> {
        let select = format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens t JOIN principals p ON p.id = t.principal_id"
        );
        let order = "ORDER BY t.created_ms DESC, t.id";
        let rows: Vec<TokenRow> = match tenant {
            Some(tenant) => {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "{select} WHERE p.tenant_id = $1 {order}"
                )))
                .bind(tenant)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query_as(sqlx::AssertSqlSafe(format!("{select} {order}")))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.into_iter().map(info_of).collect()
    }

    pub async fn token(&self, id: &str) -> Result<Option<TokenInfo>, StoreError> {
        let row: Option<TokenRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens t JOIN principals p ON p.id = t.principal_id \
             WHERE t.id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(info_of).transpose()
    }

    pub async fn principal(&self, id: &str) -> Result<Option<PrincipalInfo>, StoreError> {
        let row: Option<(String, String, String, Option<String>)> =
            sqlx::query_as("SELECT id, name, role, tenant_id FROM principals WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(id, name, role, tenant)| {
            let role = Role::parse(&role)
                .ok_or_else(|| StoreError::Corrupt(format!("principal {id} has role `{role}`")))?;
            Ok(PrincipalInfo {
                id,
                name,
                role,
                tenant,
            })
        })
        .transpose()
    }

    /// Revokes a token at once. Revoking a revoked token changes nothing.
    pub async fn revoke_token(&self, actor: &Actor, id: &str) -> Result<TokenInfo, StoreError> {
        let mut tx = self.write().await?;
        let row: Option<TokenRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens t JOIN principals p ON p.id = t.principal_id \
             WHERE t.id = $1"
        )))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let before = row
            .map(info_of)
            .transpose()?
            .ok_or_else(|| StoreError::NotFound(format!("token {id}")))?;
        if before.revoked_ms.is_some() {
            return Ok(before);
        }
        let after = TokenInfo {
            revoked_ms: Some(now_ms()),
            ..before.clone()
        };
        sqlx::query("UPDATE tokens SET revoked_ms = $1 WHERE id = $2")
            .bind(after.revoked_ms)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let tenant = before.principal.tenant.clone();
        let change = Change::new("token.revoke", tenant.as_deref(), format!("token:{id}"))
            .states(Some(&before), Some(&after));
        append(&mut tx, actor, change).await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Whether any platform administrator holds a live token (first start needs one).
    pub async fn has_live_admin(&self) -> Result<bool, StoreError> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT t.id FROM tokens t JOIN principals p ON p.id = t.principal_id \
             WHERE p.role = 'platform-admin' AND t.revoked_ms IS NULL AND t.expires_ms > $1 \
             LIMIT 1",
        )
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }
}

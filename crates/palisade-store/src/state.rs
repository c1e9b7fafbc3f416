//! Tenant state: the key-value store and secrets, sealed under the tenant's data keys; key
//! rotation (re-wrapping under a new key-encryption key, new data-key versions re-encrypted
//! in the background); and crypto-shredding (destroying a namespace's or a tenant's keys).
//!
//! Every write is one `BEGIN IMMEDIATE` transaction that also updates the tenant's usage
//! totals, so quotas hold exactly and a crash loses no acknowledged write.

use std::sync::Arc;

use palisade_api::{KeyVersion, SecretInfo};
use palisade_model::kv::{KvError, KvErrorKind, KvOp, KvQuota, KvReply, KvUsage};
use sqlx::{Sqlite, Transaction};

use crate::audit::{Change, append};
use crate::keys::{self, CryptoError, KeyCache, KeyProvider};
use crate::{Actor, Store, StoreError, now_ms, unsigned};

/// The provider of the key-encryption key, and the data keys unwrapped so far.
#[derive(Debug)]
pub(crate) struct Keyring {
    provider: Arc<dyn KeyProvider>,
    cache: KeyCache,
}

const CHECK_ID: &str = "kek";
/// What the check row seals (32 bytes, the size of a data key).
const CHECK_MARKER: [u8; 32] = *b"palisade key-encryption key chk1";

/// The scope of a namespace's data key. `namespace` is a storage name
/// ([`palisade_model::kv::KvScope::storage_name`]: `ext:NAME` for an extension's own, `NAME`
/// for a shared one), so a private and a shared namespace never share a data key.
fn kv_scope(namespace: &str) -> String {
    format!("kv:{namespace}")
}

const SECRETS_SCOPE: &str = "secrets";

/// What a signing key's wrapping is bound to: its use and its key id.
fn signing_key_aad(kid: &str) -> Vec<u8> {
    keys::aad("palisade-signing-key-v1", &[kid.as_bytes()])
}

/// Makes a new signing key and stores its seed wrapped by the KEK; returns the seed and
/// its key id.
async fn insert_signing_key(
    tx: &mut Transaction<'static, Sqlite>,
    keyring: &Keyring,
    kid_of: impl Fn(&[u8; 32]) -> String,
) -> Result<([u8; 32], String), StoreError> {
    let seed = keys::new_data_key().map_err(crypto)?;
    let kid = kid_of(&seed);
    let wrapped = keyring
        .provider
        .wrap(&seed, &signing_key_aad(&kid))
        .map_err(crypto)?;
    sqlx::query(
        "INSERT INTO signing_keys (kid, wrapped, kek_id, created_ms) VALUES ($1, $2, $3, $4)",
    )
    .bind(&kid)
    .bind(wrapped)
    .bind(keyring.provider.id())
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok((seed, kid))
}

fn crypto(error: CryptoError) -> StoreError {
    StoreError::Crypto(error.to_string())
}

fn kv_error(kind: KvErrorKind, message: impl Into<String>) -> KvError {
    KvError::new(kind, message)
}

/// A store failure as the guest sees it (details go to the server's log).
/// Refuses anything that would store or seal state for a decommissioned (or missing)
/// tenant, inside the caller's write transaction, so it is ordered with the decommission.
async fn ensure_live(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: &str,
) -> Result<(), StoreError> {
    let state: Option<(String,)> = sqlx::query_as("SELECT state FROM tenants WHERE id = $1")
        .bind(tenant)
        .fetch_optional(&mut **tx)
        .await?;
    match state {
        None => Err(StoreError::NotFound(format!("tenant {tenant}"))),
        Some((state,)) if state == "decommissioned" => Err(StoreError::Conflict(format!(
            "tenant {tenant} is decommissioned: nothing of it is stored any more"
        ))),
        Some(_) => Ok(()),
    }
}

fn unavailable(error: StoreError) -> KvError {
    tracing::error!(%error, "key-value store failure");
    match error {
        StoreError::Crypto(message) => kv_error(
            KvErrorKind::Unavailable,
            format!("stored value rejected: {message}"),
        ),
        other => kv_error(
            KvErrorKind::Unavailable,
            format!("the store failed: {other}"),
        ),
    }
}

fn value_aad(tenant: &str, namespace: &str, key: &[u8], version: i64) -> Vec<u8> {
    keys::aad(
        "palisade-kv-v1",
        &[
            tenant.as_bytes(),
            namespace.as_bytes(),
            key,
            &version.to_be_bytes(),
        ],
    )
}

fn secret_aad(tenant: &str, name: &str, secret_version: i64, key_version: i64) -> Vec<u8> {
    keys::aad(
        "palisade-secret-v1",
        &[
            tenant.as_bytes(),
            name.as_bytes(),
            &secret_version.to_be_bytes(),
            &key_version.to_be_bytes(),
        ],
    )
}

/// The smallest byte string greater than every string starting with `prefix`, if any.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl Store {
    /// Unlocks tenant state with `provider`. The first time, records a check value sealed
    /// under its key; afterwards a different key is refused (`WrongKek`) before anything is
    /// read or written.
    pub async fn with_key_provider(
        mut self,
        provider: Arc<dyn KeyProvider>,
    ) -> Result<Self, StoreError> {
        let check: Option<(String, Vec<u8>)> =
            sqlx::query_as("SELECT kek_id, sealed FROM kek_check WHERE id = $1")
                .bind(CHECK_ID)
                .fetch_optional(&self.pool)
                .await?;
        let aad = keys::aad("palisade-kek-check-v1", &[]);
        match check {
            Some((kek_id, sealed)) => {
                if provider.unwrap(&sealed, &aad).ok() != Some(CHECK_MARKER) {
                    return Err(StoreError::WrongKek(format!(
                        "the data directory's state was sealed under key-encryption key {kek_id}, \
                         and the key given ({}) does not open it; nothing was read or changed",
                        provider.id()
                    )));
                }
            }
            None => {
                let (keys_stored,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM data_keys")
                    .fetch_one(&self.pool)
                    .await?;
                if keys_stored > 0 {
                    return Err(StoreError::WrongKek(
                        "data keys exist but the key-encryption key check is missing; refusing to \
                         guess which key sealed them"
                            .into(),
                    ));
                }
                let sealed = provider.wrap(&CHECK_MARKER, &aad).map_err(crypto)?;
                sqlx::query("INSERT INTO kek_check (id, kek_id, sealed) VALUES ($1, $2, $3)")
                    .bind(CHECK_ID)
                    .bind(provider.id())
                    .bind(sealed)
                    .execute(&self.pool)
                    .await?;
            }
        }
        self.keys = Some(Arc::new(Keyring {
            provider,
            cache: KeyCache::default(),
        }));
        Ok(self)
    }

    /// Rotates the key-encryption key: every data key wrapped under `previous` is re-wrapped
    /// under `next`, and the check value re-sealed, in one transaction (values are not touched:
    /// that is the point of envelope encryption). Refuses unless the state was sealed under
    /// `previous`; running it again after it completed changes nothing. Returns how many keys
    /// were re-wrapped.
    pub async fn rotate_kek(
        &self,
        previous: &dyn KeyProvider,
        next: &dyn KeyProvider,
    ) -> Result<u64, StoreError> {
        let aad = keys::aad("palisade-kek-check-v1", &[]);
        let mut tx = self.write().await?;
        let check: Option<(String, Vec<u8>)> =
            sqlx::query_as("SELECT kek_id, sealed FROM kek_check WHERE id = $1")
                .bind(CHECK_ID)
                .fetch_optional(&mut *tx)
                .await?;
        match &check {
            Some((_, sealed)) if next.unwrap(sealed, &aad).ok() == Some(CHECK_MARKER) => {
                return Ok(0);
            }
            Some((_, sealed)) if previous.unwrap(sealed, &aad).ok() == Some(CHECK_MARKER) => {}
            Some((kek_id, _)) => {
                return Err(StoreError::WrongKek(format!(
                    "the state is sealed under key-encryption key {kek_id}, which is neither the \
                     previous ({}) nor the new one ({}); nothing was changed",
                    previous.id(),
                    next.id()
                )));
            }
            None => return Ok(0),
        }
        let rows: Vec<WrappedDataKey> = sqlx::query_as(
            "SELECT tenant_id, scope, version, wrapped, wrapped_scope FROM data_keys WHERE kek_id = $1",
        )
        .bind(previous.id())
        .fetch_all(&mut *tx)
        .await?;
        for (tenant, scope, version, wrapped, wrapped_scope) in &rows {
            // A key moved by migration 0005 is still wrapped under its old scope's name; the
            // new wrapping names the scope it is in now.
            let old_aad =
                keys::data_key_aad(tenant, wrapped_scope.as_deref().unwrap_or(scope), *version);
            let key = previous.unwrap(wrapped, &old_aad).map_err(crypto)?;
            let key_aad = keys::data_key_aad(tenant, scope, *version);
            sqlx::query(
                "UPDATE data_keys SET wrapped = $1, kek_id = $2, wrapped_scope = NULL \
                 WHERE tenant_id = $3 AND scope = $4 AND version = $5",
            )
            .bind(next.wrap(&key, &key_aad).map_err(crypto)?)
            .bind(next.id())
            .bind(tenant)
            .bind(scope)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        }
        let signing: Vec<(String, Vec<u8>)> =
            sqlx::query_as("SELECT kid, wrapped FROM signing_keys WHERE kek_id = $1")
                .bind(previous.id())
                .fetch_all(&mut *tx)
                .await?;
        for (kid, wrapped) in &signing {
            let key_aad = signing_key_aad(kid);
            let seed = previous.unwrap(wrapped, &key_aad).map_err(crypto)?;
            sqlx::query("UPDATE signing_keys SET wrapped = $1, kek_id = $2 WHERE kid = $3")
                .bind(next.wrap(&seed, &key_aad).map_err(crypto)?)
                .bind(next.id())
                .bind(kid)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("UPDATE kek_check SET kek_id = $1, sealed = $2 WHERE id = $3")
            .bind(next.id())
            .bind(next.wrap(&CHECK_MARKER, &aad).map_err(crypto)?)
            .bind(CHECK_ID)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows.len() as u64)
    }

    /// The seed of the server's token-signing key, made (and stored wrapped by the KEK) on
    /// first use. `kid_of` names a key from its seed.
    pub async fn signing_seed(
        &self,
        kid_of: impl Fn(&[u8; 32]) -> String,
    ) -> Result<[u8; 32], StoreError> {
        let keyring = self.keyring()?;
        let row: Option<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT kid, wrapped FROM signing_keys ORDER BY created_ms DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        if let Some((kid, wrapped)) = row {
            return keyring
                .provider
                .unwrap(&wrapped, &signing_key_aad(&kid))
                .map_err(crypto);
        }
        let mut tx = self.write().await?;
        let (seed, _) = insert_signing_key(&mut tx, keyring, kid_of).await?;
        tx.commit().await?;
        Ok(seed)
    }

    /// Replaces the token-signing key `retiring` (the one in force) with a new one, in one
    /// audited transaction: the retiring seed is deleted (it never signs again) and its public
    /// key, `retiring_jwk`, is kept for publishing until `published_until_ms`. Refuses with
    /// `Conflict` when `retiring` is no longer the key in force (another rotation won).
    pub async fn rotate_signing_key(
        &self,
        actor: &Actor,
        retiring: &str,
        retiring_jwk: &str,
        published_until_ms: i64,
        kid_of: impl Fn(&[u8; 32]) -> String,
    ) -> Result<[u8; 32], StoreError> {
        let keyring = self.keyring()?;
        let mut tx = self.write().await?;
        let deleted = sqlx::query("DELETE FROM signing_keys WHERE kid = $1")
            .bind(retiring)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted != 1 {
            return Err(StoreError::Conflict(format!(
                "signing key {retiring} is no longer the one in force; nothing was changed"
            )));
        }
        let now = now_ms();
        sqlx::query(
            "INSERT INTO retired_signing_keys (kid, jwk, retired_ms, published_until_ms) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(retiring)
        .bind(retiring_jwk)
        .bind(now)
        .bind(published_until_ms)
        .execute(&mut *tx)
        .await?;
        let (seed, kid) = insert_signing_key(&mut tx, keyring, kid_of).await?;
        let change = Change::new("keys.rotate_signing", None, format!("signing-key:{kid}")).detail(
            serde_json::json!({ "retired": retiring, "published_until_ms": published_until_ms }),
        );
        append(&mut tx, actor, change).await?;
        tx.commit().await?;
        Ok(seed)
    }

    /// The public keys (JWK JSON) of retired signing keys still to be published at `now_ms`,
    /// each with the time it stops being published; the ones past their time are deleted.
    pub async fn retired_signing_keys(
        &self,
        now_ms: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let mut tx = self.write().await?;
        sqlx::query("DELETE FROM retired_signing_keys WHERE published_until_ms <= $1")
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT jwk, published_until_ms FROM retired_signing_keys \
             ORDER BY retired_ms DESC, kid",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows)
    }

    fn keyring(&self) -> Result<&Keyring, StoreError> {
        self.keys.as_deref().ok_or_else(|| {
            StoreError::Crypto("tenant state is locked: no key-encryption key was given".into())
        })
    }

    /// The newest data key of `(tenant, scope)`, made if there is none.
    async fn current_key(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        tenant: &str,
        scope: &str,
    ) -> Result<(i64, [u8; 32]), StoreError> {
        let keyring = self.keyring()?;
        ensure_live(tx, tenant).await?;
        let row: Option<(i64, Vec<u8>, Option<String>)> = sqlx::query_as(
            "SELECT version, wrapped, wrapped_scope FROM data_keys WHERE tenant_id = $1 AND scope = $2 \
             ORDER BY version DESC LIMIT 1",
        )
        .bind(tenant)
        .bind(scope)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some((version, wrapped, wrapped_scope)) = row {
            let key =
                self.unwrap_key(tenant, scope, wrapped_scope.as_deref(), version, &wrapped)?;
            return Ok((version, key));
        }
        let key = keys::new_data_key().map_err(crypto)?;
        let wrapped = keyring
            .provider
            .wrap(&key, &keys::data_key_aad(tenant, scope, 1))
            .map_err(crypto)?;
        sqlx::query(
            "INSERT INTO data_keys (tenant_id, scope, version, wrapped, kek_id, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(tenant)
        .bind(scope)
        .bind(1_i64)
        .bind(wrapped)
        .bind(keyring.provider.id())
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
        keyring.cache.put(tenant, scope, 1, key);
        Ok((1, key))
    }

    /// Unwraps the data key `(tenant, scope, version)`; `wrapped_scope` is the scope its
    /// wrapping names when that is not `scope` (a key moved by migration 0005).
    fn unwrap_key(
        &self,
        tenant: &str,
        scope: &str,
        wrapped_scope: Option<&str>,
        version: i64,
        wrapped: &[u8],
    ) -> Result<[u8; 32], StoreError> {
        let keyring = self.keyring()?;
        if let Some(key) = keyring.cache.get(tenant, scope, version) {
            return Ok(key);
        }
        let aad_scope = wrapped_scope.unwrap_or(scope);
        let key = keyring
            .provider
            .unwrap(wrapped, &keys::data_key_aad(tenant, aad_scope, version))
            .map_err(crypto)?;
        keyring.cache.put(tenant, scope, version, key);
        Ok(key)
    }

    /// The data key `(tenant, scope, version)`; absent when it was destroyed.
    async fn key_version<'e, E>(
        &self,
        executor: E,
        tenant: &str,
        scope: &str,
        version: i64,
    ) -> Result<[u8; 32], StoreError>
    where
        E: sqlx::Executor<'e, Database = Sqlite>,
    {
        let keyring = self.keyring()?;
        if let Some(key) = keyring.cache.get(tenant, scope, version) {
            return Ok(key);
        }
        let row: Option<(Vec<u8>, Option<String>)> = sqlx::query_as(
            "SELECT wrapped, wrapped_scope FROM data_keys WHERE tenant_id = $1 AND scope = $2 AND version = $3",
        )
        .bind(tenant)
        .bind(scope)
        .bind(version)
        .fetch_optional(executor)
        .await?;
        let (wrapped, wrapped_scope) = row.ok_or_else(|| {
            StoreError::Crypto(format!(
                "data key {scope} v{version} of tenant {tenant} was destroyed; what it sealed is unreadable"
            ))
        })?;
        self.unwrap_key(tenant, scope, wrapped_scope.as_deref(), version, &wrapped)
    }

    /// Opens a value of `namespace` (a storage name); `sealed_namespace` is the namespace its
    /// AAD names when that is not `namespace` (a value moved by migration 0005).
    #[allow(clippy::too_many_arguments)]
    async fn read_value<'e, E>(
        &self,
        executor: E,
        tenant: &str,
        namespace: &str,
        sealed_namespace: Option<&str>,
        key: &[u8],
        sealed: &[u8],
        version: i64,
    ) -> Result<Vec<u8>, StoreError>
    where
        E: sqlx::Executor<'e, Database = Sqlite>,
    {
        let data_key = self
            .key_version(executor, tenant, kv_scope(namespace).as_str(), version)
            .await?;
        let aad_namespace = sealed_namespace.unwrap_or(namespace);
        keys::open(
            &data_key,
            &value_aad(tenant, aad_namespace, key, version),
            sealed,
        )
        .map_err(crypto)
    }

    /// One key-value operation in `tenant`'s `namespace` (both already authorized), within
    /// `quota`.
    pub async fn kv(
        &self,
        tenant: &str,
        namespace: &str,
        op: KvOp,
        quota: KvQuota,
    ) -> Result<KvReply, KvError> {
        op.validate()?;
        let result = if op.writes() {
            self.kv_write(tenant, namespace, op, quota).await
        } else {
            self.kv_read(tenant, namespace, op).await
        };
        result.unwrap_or_else(|error| Err(unavailable(error)))
    }

    async fn kv_read(
        &self,
        tenant: &str,
        namespace: &str,
        op: KvOp,
    ) -> Result<Result<KvReply, KvError>, StoreError> {
        match op {
            KvOp::Get { key, .. } => {
                let row: Option<(Vec<u8>, i64, Option<String>)> = sqlx::query_as(
                    "SELECT sealed, key_version, sealed_namespace FROM kv_entries \
                     WHERE tenant_id = $1 AND namespace = $2 AND key = $3",
                )
                .bind(tenant)
                .bind(namespace)
                .bind(&key)
                .fetch_optional(&self.pool)
                .await?;
                let value = match row {
                    Some((sealed, version, sealed_as)) => Some(
                        self.read_value(
                            &self.pool,
                            tenant,
                            namespace,
                            sealed_as.as_deref(),
                            &key,
                            &sealed,
                            version,
                        )
                        .await?,
                    ),
                    None => None,
                };
                Ok(Ok(KvReply::Value(value)))
            }
            KvOp::Exists { key, .. } => {
                let row: Option<(i64,)> = sqlx::query_as(
                    "SELECT 1 FROM kv_entries WHERE tenant_id = $1 AND namespace = $2 AND key = $3",
                )
                .bind(tenant)
                .bind(namespace)
                .bind(&key)
                .fetch_optional(&self.pool)
                .await?;
                Ok(Ok(KvReply::Bool(row.is_some())))
            }
            KvOp::List {
                prefix,
                after,
                limit,
                ..
            } => {
                let start = match after {
                    Some(after) if after > prefix => after,
                    _ => prefix.clone(),
                };
                let end = prefix_end(&prefix);
                let fetch = i64::from(limit) + 1;
                let mut keys: Vec<Vec<u8>> =
                    match &end {
                        Some(end) => sqlx::query_as::<_, (Vec<u8>,)>(
                            "SELECT key FROM kv_entries WHERE tenant_id = $1 AND namespace = $2 \
                         AND key > $3 AND key < $4 ORDER BY key LIMIT $5",
                        )
                        .bind(tenant)
                        .bind(namespace)
                        .bind(&start)
                        .bind(end)
                        .bind(fetch)
                        .fetch_all(&self.pool)
                        .await?,
                        None => sqlx::query_as::<_, (Vec<u8>,)>(
                            "SELECT key FROM kv_entries WHERE tenant_id = $1 AND namespace = $2 \
                         AND key > $3 ORDER BY key LIMIT $4",
                        )
                        .bind(tenant)
                        .bind(namespace)
                        .bind(&start)
                        .bind(fetch)
                        .fetch_all(&self.pool)
                        .await?,
                    }
                    .into_iter()
                    .map(|(key,)| key)
                    .collect();
                // `key > start` skips a key equal to the prefix itself; it belongs in the page.
                if start == prefix && !prefix.is_empty() {
                    let exact: Option<(i64,)> = sqlx::query_as(
                        "SELECT 1 FROM kv_entries WHERE tenant_id = $1 AND namespace = $2 AND key = $3",
                    )
                    .bind(tenant)
                    .bind(namespace)
                    .bind(&prefix)
                    .fetch_optional(&self.pool)
                    .await?;
                    if exact.is_some() {
                        keys.insert(0, prefix.clone());
                    }
                }
                let next = (keys.len() > limit as usize).then(|| {
                    keys.truncate(limit as usize);
                    keys.last().cloned().unwrap_or_default()
                });
                Ok(Ok(KvReply::Keys { keys, next }))
            }
            _ => Ok(Err(kv_error(KvErrorKind::Unavailable, "not a read"))),
        }
    }

    async fn kv_write(
        &self,
        tenant: &str,
        namespace: &str,
        op: KvOp,
        quota: KvQuota,
    ) -> Result<Result<KvReply, KvError>, StoreError> {
        let mut tx = self.write().await?;
        if let Err(error) = ensure_live(&mut tx, tenant).await {
            return match error {
                StoreError::Conflict(message) => Ok(Err(kv_error(KvErrorKind::Denied, message))),
                other => Err(other),
            };
        }
        let key = match &op {
            KvOp::Set { key, .. }
            | KvOp::Delete { key, .. }
            | KvOp::Increment { key, .. }
            | KvOp::CompareAndSwap { key, .. } => key.clone(),
            _ => return Ok(Err(kv_error(KvErrorKind::Unavailable, "not a write"))),
        };
        let current: Option<(Vec<u8>, i64, i64, Option<String>)> = sqlx::query_as(
            "SELECT sealed, key_version, value_bytes, sealed_namespace FROM kv_entries \
             WHERE tenant_id = $1 AND namespace = $2 AND key = $3",
        )
        .bind(tenant)
        .bind(namespace)
        .bind(&key)
        .fetch_optional(&mut *tx)
        .await?;
        let old_bytes = current
            .as_ref()
            .map_or(0, |(_, _, bytes, _)| unsigned(*bytes) + key.len() as u64);
        let old_value = match &current {
            Some((sealed, version, _, sealed_as))
                if matches!(op, KvOp::Increment { .. } | KvOp::CompareAndSwap { .. }) =>
            {
                Some(
                    self.read_value(
                        &mut *tx,
                        tenant,
                        namespace,
                        sealed_as.as_deref(),
                        &key,
                        sealed,
                        *version,
                    )
                    .await?,
                )
            }
            _ => None,
        };
        let (new_value, reply) = match op {
            KvOp::Set { value, .. } => (Some(value), KvReply::Done),
            KvOp::Delete { .. } => (None, KvReply::Bool(current.is_some())),
            KvOp::Increment { delta, .. } => {
                let base = match &old_value {
                    Some(bytes) => match parse_counter(bytes) {
                        Ok(value) => value,
                        Err(error) => return Ok(Err(error)),
                    },
                    None => 0,
                };
                let Some(updated) = base.checked_add(delta) else {
                    return Ok(Err(kv_error(
                        KvErrorKind::WrongType,
                        "the counter would overflow a signed 64-bit integer",
                    )));
                };
                (
                    Some(updated.to_string().into_bytes()),
                    KvReply::Counter(updated),
                )
            }
            KvOp::CompareAndSwap {
                expected, value, ..
            } => {
                let matches = match (&expected, &current) {
                    (None, None) => true,
                    (Some(expected), Some(_)) => old_value.as_ref() == Some(expected),
                    _ => false,
                };
                if !matches {
                    return Ok(Ok(KvReply::Bool(false)));
                }
                (Some(value), KvReply::Bool(true))
            }
            _ => return Ok(Err(kv_error(KvErrorKind::Unavailable, "not a write"))),
        };
        let usage: Option<(i64, i64)> =
            sqlx::query_as("SELECT keys, bytes FROM kv_usage WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_optional(&mut *tx)
                .await?;
        let (keys_now, bytes_now) = usage.map_or((0, 0), |(k, b)| (unsigned(k), unsigned(b)));
        let namespace_usage: Option<(i64, i64)> = sqlx::query_as(
            "SELECT keys, bytes FROM kv_namespace_usage WHERE tenant_id = $1 AND namespace = $2",
        )
        .bind(tenant)
        .bind(namespace)
        .fetch_optional(&mut *tx)
        .await?;
        let (ns_keys_now, ns_bytes_now) =
            namespace_usage.map_or((0, 0), |(k, b)| (unsigned(k), unsigned(b)));
        let new_bytes = new_value.as_ref().map(|v| (v.len() + key.len()) as u64);
        if let Err(error) = quota.check_write(
            tenant,
            namespace,
            KvUsage {
                keys: keys_now,
                bytes: bytes_now,
            },
            KvUsage {
                keys: ns_keys_now,
                bytes: ns_bytes_now,
            },
            current.is_some().then_some(old_bytes),
            new_bytes,
        ) {
            return Ok(Err(error));
        }
        let new_bytes = new_bytes.unwrap_or(0);
        let added_key = u64::from(new_value.is_some() && current.is_none());
        let removed_key = u64::from(new_value.is_none() && current.is_some());
        let keys_after = (keys_now + added_key).saturating_sub(removed_key);
        let bytes_after = (bytes_now + new_bytes).saturating_sub(old_bytes);
        let ns_keys_after = (ns_keys_now + added_key).saturating_sub(removed_key);
        let ns_bytes_after = (ns_bytes_now + new_bytes).saturating_sub(old_bytes);
        match &new_value {
            Some(value) => {
                let (version, data_key) = self
                    .current_key(&mut tx, tenant, &kv_scope(namespace))
                    .await?;
                let sealed = keys::seal(
                    &data_key,
                    &value_aad(tenant, namespace, &key, version),
                    value,
                )
                .map_err(crypto)?;
                sqlx::query(
                    "INSERT INTO kv_entries (tenant_id, namespace, key, sealed, key_version, value_bytes, updated_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (tenant_id, namespace, key) DO UPDATE SET sealed = excluded.sealed, \
                     key_version = excluded.key_version, value_bytes = excluded.value_bytes, \
                     updated_ms = excluded.updated_ms, sealed_namespace = NULL",
                )
                .bind(tenant)
                .bind(namespace)
                .bind(&key)
                .bind(sealed)
                .bind(version)
                .bind(value.len() as i64)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            }
            None if current.is_some() => {
                sqlx::query(
                    "DELETE FROM kv_entries WHERE tenant_id = $1 AND namespace = $2 AND key = $3",
                )
                .bind(tenant)
                .bind(namespace)
                .bind(&key)
                .execute(&mut *tx)
                .await?;
            }
            None => {}
        }
        sqlx::query(
            "INSERT INTO kv_usage (tenant_id, keys, bytes) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id) DO UPDATE SET keys = excluded.keys, bytes = excluded.bytes",
        )
        .bind(tenant)
        .bind(i64::try_from(keys_after).unwrap_or(i64::MAX))
        .bind(i64::try_from(bytes_after).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO kv_namespace_usage (tenant_id, namespace, keys, bytes) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, namespace) DO UPDATE SET keys = excluded.keys, bytes = excluded.bytes",
        )
        .bind(tenant)
        .bind(namespace)
        .bind(i64::try_from(ns_keys_after).unwrap_or(i64::MAX))
        .bind(i64::try_from(ns_bytes_after).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok(reply))
    }

    /// Stores a new version of a tenant secret, sealed under the tenant's secrets key. The
    /// audit entry records the name and version, never the value or its digest.
    pub async fn set_secret(
        &self,
        actor: &Actor,
        tenant: &str,
        name: &str,
        value: &[u8],
    ) -> Result<SecretInfo, StoreError> {
        check_secret_name(name)?;
        let mut tx = self.write().await?;
        let exists: Option<(String,)> = sqlx::query_as("SELECT id FROM tenants WHERE id = $1")
            .bind(tenant)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound(format!("tenant {tenant}")));
        }
        let (last,): (Option<i64>,) =
            sqlx::query_as("SELECT MAX(version) FROM secrets WHERE tenant_id = $1 AND name = $2")
                .bind(tenant)
                .bind(name)
                .fetch_one(&mut *tx)
                .await?;
        let version = last.unwrap_or(0) + 1;
        let (key_version, data_key) = self.current_key(&mut tx, tenant, SECRETS_SCOPE).await?;
        let sealed = keys::seal(
            &data_key,
            &secret_aad(tenant, name, version, key_version),
            value,
        )
        .map_err(crypto)?;
        let info = SecretInfo {
            name: name.to_owned(),
            version: unsigned(version),
            created_ms: now_ms(),
            created_by: actor.principal.clone(),
        };
        sqlx::query(
            "INSERT INTO secrets (tenant_id, name, version, sealed, key_version, created_ms, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(tenant)
        .bind(name)
        .bind(version)
        .bind(sealed)
        .bind(key_version)
        .bind(info.created_ms)
        .bind(&info.created_by)
        .execute(&mut *tx)
        .await?;
        let change = Change::new(
            "secret.set",
            Some(tenant),
            format!("secret:{tenant}/{name}"),
        )
        .detail(serde_json::json!({ "version": info.version }));
        append(&mut tx, actor, change).await?;
        tx.commit().await?;
        Ok(info)
    }

    /// A tenant's secrets: the newest version of each, never a value.
    pub async fn secrets(&self, tenant: &str) -> Result<Vec<SecretInfo>, StoreError> {
        let rows: Vec<(String, i64, i64, String)> = sqlx::query_as(
            "SELECT s.name, s.version, s.created_ms, s.created_by FROM secrets s \
             WHERE s.tenant_id = $1 AND s.version = \
               (SELECT MAX(version) FROM secrets m WHERE m.tenant_id = s.tenant_id AND m.name = s.name) \
             ORDER BY s.name",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(name, version, created_ms, created_by)| SecretInfo {
                name,
                version: unsigned(version),
                created_ms,
                created_by,
            })
            .collect())
    }

    /// The newest value of a secret, for the egress gateway only (never for extensions).
    pub async fn secret_value(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let row: Option<(i64, Vec<u8>, i64)> = sqlx::query_as(
            "SELECT version, sealed, key_version FROM secrets WHERE tenant_id = $1 AND name = $2 \
             ORDER BY version DESC LIMIT 1",
        )
        .bind(tenant)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        let Some((version, sealed, key_version)) = row else {
            return Ok(None);
        };
        let data_key = self
            .key_version(&self.pool, tenant, SECRETS_SCOPE, key_version)
            .await?;
        keys::open(
            &data_key,
            &secret_aad(tenant, name, version, key_version),
            &sealed,
        )
        .map(Some)
        .map_err(crypto)
    }

    /// Deletes every version of a secret.
    pub async fn delete_secret(
        &self,
        actor: &Actor,
        tenant: &str,
        name: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let deleted = sqlx::query("DELETE FROM secrets WHERE tenant_id = $1 AND name = $2")
            .bind(tenant)
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(StoreError::NotFound(format!(
                "secret {name} of tenant {tenant}"
            )));
        }
        let change = Change::new(
            "secret.delete",
            Some(tenant),
            format!("secret:{tenant}/{name}"),
        )
        .detail(serde_json::json!({ "versions": deleted }));
        append(&mut tx, actor, change).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Destroys a key-value namespace: its values and its data keys (crypto-shredding).
    pub async fn destroy_namespace(
        &self,
        actor: &Actor,
        tenant: &str,
        namespace: &str,
    ) -> Result<u64, StoreError> {
        let mut tx = self.write().await?;
        let (keys, bytes): (i64, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*), SUM(value_bytes + LENGTH(key)) FROM kv_entries \
             WHERE tenant_id = $1 AND namespace = $2",
        )
        .bind(tenant)
        .bind(namespace)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM kv_entries WHERE tenant_id = $1 AND namespace = $2")
            .bind(tenant)
            .bind(namespace)
            .execute(&mut *tx)
            .await?;
        let destroyed = sqlx::query("DELETE FROM data_keys WHERE tenant_id = $1 AND scope = $2")
            .bind(tenant)
            .bind(kv_scope(namespace))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(
            "UPDATE kv_usage SET keys = keys - $1, bytes = bytes - $2 WHERE tenant_id = $3",
        )
        .bind(keys)
        .bind(bytes.unwrap_or(0))
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM kv_namespace_usage WHERE tenant_id = $1 AND namespace = $2")
            .bind(tenant)
            .bind(namespace)
            .execute(&mut *tx)
            .await?;
        let change = Change::new(
            "kv.destroy",
            Some(tenant),
            format!("kv:{tenant}/{namespace}"),
        )
        .detail(serde_json::json!({ "values": keys, "data_keys_destroyed": destroyed }));
        append(&mut tx, actor, change).await?;
        tx.commit().await?;
        if let Some(keyring) = &self.keys {
            keyring.cache.forget(tenant, Some(&kv_scope(namespace)));
        }
        Ok(unsigned(keys))
    }

    /// Decommissions a tenant: destroys its key-value state, secrets and every data key
    /// (what remains anywhere on disk is unreadable), revokes its tokens, and marks it
    /// decommissioned. Its history (versions, deployments, audit) stays. Final.
    pub async fn decommission_tenant(
        &self,
        actor: &Actor,
        tenant: &str,
    ) -> Result<palisade_api::Tenant, StoreError> {
        let mut tx = self.write().await?;
        // Read inside the write transaction: a write that committed before it is deleted
        // below, one that starts after it sees the tenant decommissioned and is refused.
        let before = self
            .tenant_in(&mut tx, tenant)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("tenant {tenant}")))?;
        // A repeated decommission runs every delete again: whatever is left is removed.
        let mut counts = serde_json::Map::new();
        for (label, sql) in [
            ("kv_values", "DELETE FROM kv_entries WHERE tenant_id = $1"),
            (
                "secret_versions",
                "DELETE FROM secrets WHERE tenant_id = $1",
            ),
            ("data_keys", "DELETE FROM data_keys WHERE tenant_id = $1"),
            ("usage", "DELETE FROM kv_usage WHERE tenant_id = $1"),
            (
                "namespace_usage",
                "DELETE FROM kv_namespace_usage WHERE tenant_id = $1",
            ),
        ] {
            let affected = sqlx::query(sql)
                .bind(tenant)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            counts.insert(label.into(), affected.into());
        }
        let now = now_ms();
        let revoked = sqlx::query(
            "UPDATE tokens SET revoked_ms = $1 WHERE revoked_ms IS NULL AND principal_id IN \
             (SELECT id FROM principals WHERE tenant_id = $2)",
        )
        .bind(now)
        .bind(tenant)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        counts.insert("tokens_revoked".into(), revoked.into());
        sqlx::query("UPDATE tenants SET state = 'decommissioned', updated_ms = $1 WHERE id = $2")
            .bind(now)
            .bind(tenant)
            .execute(&mut *tx)
            .await?;
        let after = palisade_api::Tenant {
            state: palisade_api::TenantState::Decommissioned,
            updated_ms: now,
            ..before.clone()
        };
        let change = Change::new(
            "tenant.decommission",
            Some(tenant),
            format!("tenant:{tenant}"),
        )
        .states(Some(&before), Some(&after))
        .detail(serde_json::Value::Object(counts));
        append(&mut tx, actor, change).await?;
        tx.commit().await?;
        if let Some(keyring) = &self.keys {
            keyring.cache.forget(tenant, None);
        }
        Ok(after)
    }

    /// Starts a new version of every data key of `tenant`: new values are sealed under it at
    /// once, older values move over as they are written or as [`Store::reencrypt`] runs.
    pub async fn rotate_data_keys(
        &self,
        actor: &Actor,
        tenant: &str,
    ) -> Result<Vec<KeyVersion>, StoreError> {
        let keyring = self.keyring()?;
        let mut tx = self.write().await?;
        let scopes: Vec<(String, i64)> = sqlx::query_as(
            "SELECT scope, MAX(version) FROM data_keys WHERE tenant_id = $1 GROUP BY scope ORDER BY scope",
        )
        .bind(tenant)
        .fetch_all(&mut *tx)
        .await?;
        for (scope, version) in &scopes {
            let next = version + 1;
            let key = keys::new_data_key().map_err(crypto)?;
            let wrapped = keyring
                .provider
                .wrap(&key, &keys::data_key_aad(tenant, scope, next))
                .map_err(crypto)?;
            sqlx::query(
                "INSERT INTO data_keys (tenant_id, scope, version, wrapped, kek_id, created_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(tenant)
            .bind(scope)
            .bind(next)
            .bind(wrapped)
            .bind(keyring.provider.id())
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        }
        let change = Change::new("keys.rotate", Some(tenant), format!("keys:{tenant}")).detail(
            serde_json::json!({ "scopes": scopes.iter().map(|(s, _)| s).collect::<Vec<_>>() }),
        );
        append(&mut tx, actor, change).await?;
        tx.commit().await?;
        self.key_versions(tenant).await
    }

    /// Re-seals up to `batch` of `tenant`'s values that are under an older data key, and
    /// destroys data key versions that no longer seal anything. Returns how many values still
    /// wait.
    pub async fn reencrypt(&self, tenant: &str, batch: u32) -> Result<u64, StoreError> {
        let mut tx = self.write().await?;
        let stale: Vec<StaleValue> = sqlx::query_as(
            "SELECT e.namespace, e.sealed_namespace, e.key, e.sealed, e.key_version, \
               (SELECT MAX(version) FROM data_keys d WHERE d.tenant_id = e.tenant_id AND d.scope = 'kv:' || e.namespace) \
             FROM kv_entries e WHERE e.tenant_id = $1 AND e.key_version < \
               (SELECT MAX(version) FROM data_keys d WHERE d.tenant_id = e.tenant_id AND d.scope = 'kv:' || e.namespace) \
             LIMIT $2",
        )
        .bind(tenant)
        .bind(i64::from(batch))
        .fetch_all(&mut *tx)
        .await?;
        for (namespace, sealed_as, key, sealed, version, newest) in &stale {
            let value = self
                .read_value(
                    &mut *tx,
                    tenant,
                    namespace,
                    sealed_as.as_deref(),
                    key,
                    sealed,
                    *version,
                )
                .await?;
            let data_key = self
                .key_version(&mut *tx, tenant, &kv_scope(namespace), *newest)
                .await?;
            let resealed = keys::seal(
                &data_key,
                &value_aad(tenant, namespace, key, *newest),
                &value,
            )
            .map_err(crypto)?;
            sqlx::query(
                "UPDATE kv_entries SET sealed = $1, key_version = $2, sealed_namespace = NULL \
                 WHERE tenant_id = $3 AND namespace = $4 AND key = $5",
            )
            .bind(resealed)
            .bind(newest)
            .bind(tenant)
            .bind(namespace)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        }
        let secrets: Vec<StaleSecret> = sqlx::query_as(
            "SELECT s.name, s.version, s.sealed, s.key_version, \
               (SELECT MAX(version) FROM data_keys d WHERE d.tenant_id = s.tenant_id AND d.scope = 'secrets') \
             FROM secrets s WHERE s.tenant_id = $1 AND s.key_version < \
               (SELECT MAX(version) FROM data_keys d WHERE d.tenant_id = s.tenant_id AND d.scope = 'secrets') \
             LIMIT $2",
        )
        .bind(tenant)
        .bind(i64::from(batch))
        .fetch_all(&mut *tx)
        .await?;
        for (name, secret_version, sealed, version, newest) in &secrets {
            let old_key = self
                .key_version(&mut *tx, tenant, SECRETS_SCOPE, *version)
                .await?;
            let value = keys::open(
                &old_key,
                &secret_aad(tenant, name, *secret_version, *version),
                sealed,
            )
            .map_err(crypto)?;
            let new_key = self
                .key_version(&mut *tx, tenant, SECRETS_SCOPE, *newest)
                .await?;
            let resealed = keys::seal(
                &new_key,
                &secret_aad(tenant, name, *secret_version, *newest),
                &value,
            )
            .map_err(crypto)?;
            sqlx::query(
                "UPDATE secrets SET sealed = $1, key_version = $2 \
                 WHERE tenant_id = $3 AND name = $4 AND version = $5",
            )
            .bind(resealed)
            .bind(newest)
            .bind(tenant)
            .bind(name)
            .bind(secret_version)
            .execute(&mut *tx)
            .await?;
        }
        // Old versions that seal nothing any more are destroyed.
        sqlx::query(
            "DELETE FROM data_keys WHERE tenant_id = $1 \
             AND version < (SELECT MAX(version) FROM data_keys m WHERE m.tenant_id = data_keys.tenant_id AND m.scope = data_keys.scope) \
             AND NOT EXISTS (SELECT 1 FROM kv_entries e WHERE e.tenant_id = data_keys.tenant_id \
                   AND 'kv:' || e.namespace = data_keys.scope AND e.key_version = data_keys.version) \
             AND NOT EXISTS (SELECT 1 FROM secrets s WHERE s.tenant_id = data_keys.tenant_id \
                   AND data_keys.scope = 'secrets' AND s.key_version = data_keys.version)",
        )
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.stale_values(tenant).await
    }

    /// How many of the tenant's values are sealed under an older data key version.
    pub async fn stale_values(&self, tenant: &str) -> Result<u64, StoreError> {
        let (kv,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM kv_entries e WHERE e.tenant_id = $1 AND e.key_version < \
               (SELECT MAX(version) FROM data_keys d WHERE d.tenant_id = e.tenant_id AND d.scope = 'kv:' || e.namespace)",
        )
        .bind(tenant)
        .fetch_one(&self.pool)
        .await?;
        let (secrets,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM secrets s WHERE s.tenant_id = $1 AND s.key_version < \
               (SELECT MAX(version) FROM data_keys d WHERE d.tenant_id = s.tenant_id AND d.scope = 'secrets')",
        )
        .bind(tenant)
        .fetch_one(&self.pool)
        .await?;
        Ok(unsigned(kv) + unsigned(secrets))
    }

    /// Every data key version of a tenant and how many values each seals.
    pub async fn key_versions(&self, tenant: &str) -> Result<Vec<KeyVersion>, StoreError> {
        let rows: Vec<(String, i64, i64, String, i64)> = sqlx::query_as(
            "SELECT d.scope, d.version, d.created_ms, d.kek_id, \
               (SELECT COUNT(*) FROM kv_entries e WHERE e.tenant_id = d.tenant_id \
                  AND 'kv:' || e.namespace = d.scope AND e.key_version = d.version) + \
               (SELECT COUNT(*) FROM secrets s WHERE s.tenant_id = d.tenant_id \
                  AND d.scope = 'secrets' AND s.key_version = d.version) \
             FROM data_keys d WHERE d.tenant_id = $1 ORDER BY d.scope, d.version",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(scope, version, created_ms, kek_id, sealed)| KeyVersion {
                scope,
                version: unsigned(version),
                created_ms,
                kek_id,
                sealed_values: unsigned(sealed),
            })
            .collect())
    }
}

/// A data key as stored: tenant, scope, version, wrapped, the scope its wrapping names when
/// not that one.
type WrappedDataKey = (String, String, i64, Vec<u8>, Option<String>);
/// A value sealed under an older data key: namespace, the namespace its AAD names when not
/// that one, key, sealed, its key version, newest.
type StaleValue = (String, Option<String>, Vec<u8>, Vec<u8>, i64, i64);
/// A secret version under an older data key: name, version, sealed, key version, newest.
type StaleSecret = (String, i64, Vec<u8>, i64, i64);

fn parse_counter(bytes: &[u8]) -> Result<i64, KvError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| {
            kv_error(
                KvErrorKind::WrongType,
                "the stored value is not a decimal integer",
            )
        })
}

/// Secret names: 1-128 characters of `[A-Za-z0-9_.-]`.
fn check_secret_name(name: &str) -> Result<(), StoreError> {
    let valid = (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "`{name}` is not a secret name: use 1-128 letters, digits, `_`, `.` and `-`"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_are_the_next_byte_string() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[b'a', 0xff]), Some(b"b".to_vec()));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }

    fn quota() -> KvQuota {
        KvQuota {
            max_keys: 100,
            max_bytes: 1 << 20,
            namespace_max_keys: 100,
            namespace_max_bytes: 1 << 20,
        }
    }

    fn get(namespace: &str, key: &[u8]) -> KvOp {
        KvOp::Get {
            namespace: namespace.into(),
            key: key.to_vec(),
        }
    }

    /// A database at the schema before migration 0005 (extension `orders` of `acme` with
    /// values in its own namespace, a shared namespace `cache`), each value sealed the old way
    /// under a data key of scope `kv:NAMESPACE`. Upgrading moves `orders` to `ext:orders` and
    /// leaves `cache` shared, and both stay readable, rotatable and writable.
    #[tokio::test]
    async fn upgrading_moves_namespaces_named_like_an_extension_to_its_private_scope() {
        use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let connect = SqliteConnectOptions::new()
            .filename(dir.path().join(crate::DATABASE_FILE))
            .create_if_missing(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(connect)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let before: Vec<_> = crate::migrator().iter().take(4).cloned().collect();
        sqlx::migrate::Migrator::with_migrations(before)
            .run(&pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let kek = keys::LocalKek::from_bytes([7; 32]);
        let run = |sql: &'static str| sqlx::query(sql);
        run("INSERT INTO tenants (id, state, created_ms, updated_ms) VALUES ('acme', 'active', 0, 0)")
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        run("INSERT INTO extensions (tenant_id, name, created_ms) VALUES ('acme', 'orders', 0)")
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        run("INSERT INTO kek_check (id, kek_id, sealed) VALUES ($1, $2, $3)")
            .bind(CHECK_ID)
            .bind(kek.id())
            .bind(
                kek.wrap(&CHECK_MARKER, &keys::aad("palisade-kek-check-v1", &[]))
                    .unwrap_or_else(|e| panic!("{e}")),
            )
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for (namespace, key, value) in [
            ("orders", b"own".as_slice(), b"private value".as_slice()),
            ("cache", b"k".as_slice(), b"shared value".as_slice()),
        ] {
            let data_key = keys::new_data_key().unwrap_or_else(|e| panic!("{e}"));
            let scope = format!("kv:{namespace}");
            run(
                "INSERT INTO data_keys (tenant_id, scope, version, wrapped, kek_id, created_ms) \
                 VALUES ('acme', $1, 1, $2, $3, 0)",
            )
            .bind(&scope)
            .bind(
                kek.wrap(&data_key, &keys::data_key_aad("acme", &scope, 1))
                    .unwrap_or_else(|e| panic!("{e}")),
            )
            .bind(kek.id())
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
            let sealed = keys::seal(&data_key, &value_aad("acme", namespace, key, 1), value)
                .unwrap_or_else(|e| panic!("{e}"));
            run("INSERT INTO kv_entries (tenant_id, namespace, key, sealed, key_version, value_bytes, updated_ms) \
                 VALUES ('acme', $1, $2, $3, 1, $4, 0)")
            .bind(namespace)
            .bind(key)
            .bind(sealed)
            .bind(value.len() as i64)
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
            run("INSERT INTO kv_namespace_usage (tenant_id, namespace, keys, bytes) VALUES ('acme', $1, 1, $2)")
                .bind(namespace)
                .bind((key.len() + value.len()) as i64)
                .execute(&pool)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        pool.close().await;

        let store = Store::open(dir.path(), crate::StoreOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .with_key_provider(Arc::new(keys::LocalKek::from_bytes([7; 32])))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let read = |namespace: &'static str, key: &'static [u8]| {
            let store = store.clone();
            async move {
                store
                    .kv("acme", namespace, get(namespace, key), quota())
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
            }
        };
        let value = |v: &[u8]| KvReply::Value(Some(v.to_vec()));
        assert_eq!(read("ext:orders", b"own").await, value(b"private value"));
        assert_eq!(read("orders", b"own").await, KvReply::Value(None));
        assert_eq!(read("cache", b"k").await, value(b"shared value"));
        assert_eq!(read("ext:cache", b"k").await, KvReply::Value(None));
        let usage: Vec<(String, i64)> = sqlx::query_as(
            "SELECT namespace, keys FROM kv_namespace_usage WHERE tenant_id = 'acme' ORDER BY namespace",
        )
        .fetch_all(&store.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            usage,
            [("cache".to_owned(), 1), ("ext:orders".to_owned(), 1)]
        );
        let scopes: Vec<(String,)> =
            sqlx::query_as("SELECT scope FROM data_keys WHERE tenant_id = 'acme' ORDER BY scope")
                .fetch_all(&store.pool)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            scopes,
            [("kv:cache".to_owned(),), ("kv:ext:orders".to_owned(),)]
        );

        // The moved key and value survive a KEK rotation, a data-key rotation and
        // re-encryption, which seal them under their new names.
        let next = keys::LocalKek::from_bytes([8; 32]);
        store
            .rotate_kek(&keys::LocalKek::from_bytes([7; 32]), &next)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(dir.path(), crate::StoreOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .with_key_provider(Arc::new(next))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let actor = Actor {
            principal: "p-test".into(),
            request_id: "-".into(),
        };
        store
            .rotate_data_keys(&actor, "acme")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.reencrypt("acme", 100).await.ok(), Some(0));
        let legacy: (i64,) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM kv_entries WHERE sealed_namespace IS NOT NULL) \
                  + (SELECT COUNT(*) FROM data_keys WHERE wrapped_scope IS NOT NULL)",
        )
        .fetch_one(&store.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(legacy, (0,));
        let got = store
            .kv("acme", "ext:orders", get("ext:orders", b"own"), quota())
            .await;
        assert_eq!(got, Ok(value(b"private value")));
    }
}

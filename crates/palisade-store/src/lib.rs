//! Palisade's control-plane store: tenants, principals and their API tokens, extensions and
//! their versions, deployments, policy versions, and the hash-chained audit log, in SQLite
//! (WAL mode), with components kept as content-addressed artifacts beside it.
//!
//! Every change is one transaction that also appends its audit entry, so a change and its
//! audit entry are stored together or not at all; a component's artifact is written (and
//! synced) before the row that names it, so a crash never leaves a row without its bytes.
//! The SQL is written so PostgreSQL can run it too (numbered `$n` parameters, no
//! AUTOINCREMENT, BIGINT and TEXT only), for the multi-node backend that comes later.
//!
//! ```no_run
//! # async fn demo() -> Result<(), palisade_store::StoreError> {
//! use palisade_store::{Actor, Store, StoreOptions};
//!
//! let store = Store::open(std::path::Path::new("/var/lib/palisade"), StoreOptions::default()).await?;
//! let tenant = store.create_tenant(&Actor::system(), "acme").await?;
//! assert_eq!(tenant.id, "acme");
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod artifacts;
mod audit;
mod error;
mod extensions;
pub mod keys;
mod policies;
mod state;
mod tenants;
mod tokens;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

pub use artifacts::{ArtifactStore, MAX_ARTIFACT_BYTES};
pub use audit::{AuditReport, Change};
pub use error::StoreError;
pub use extensions::NewVersion;
pub use keys::{CryptoError, KeyProvider, LocalKek};
pub use palisade_model::kv::KvQuota;
pub use policies::PolicySnapshot;
pub use tokens::{AuthenticatedToken, NewToken, TOKEN_PREFIX, hash_secret};

/// Who makes a change, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// A principal id, or `system`.
    pub principal: String,
    /// The API request, or `-`.
    pub request_id: String,
}

impl Actor {
    /// Changes the server makes by itself (bootstrap).
    pub fn system() -> Self {
        Self {
            principal: "system".into(),
            request_id: "-".into(),
        }
    }
}

/// How the store is opened.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Connections for reads; writes take one of them with `BEGIN IMMEDIATE`.
    pub max_connections: u32,
    /// How long a statement waits for SQLite's write lock.
    pub busy_timeout: Duration,
    /// `FULL` makes every acknowledged commit survive power loss, not only a crash.
    pub synchronous_full: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            busy_timeout: Duration::from_secs(5),
            synchronous_full: true,
        }
    }
}

/// The database file inside a data directory.
pub const DATABASE_FILE: &str = "palisade.db";

/// The store: a SQLite pool and the artifact directory.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    artifacts: ArtifactStore,
    data_dir: PathBuf,
    /// Set by [`Store::with_key_provider`]: tenant state is locked without it.
    keys: Option<Arc<state::Keyring>>,
}

/// The schema's migrations, embedded: `migrations/NNNN_*.sql`, applied in order, each once,
/// with its checksum recorded so an edited migration is refused.
fn migrator() -> sqlx::migrate::Migrator {
    use std::borrow::Cow;

    use sqlx::migrate::{Migration, MigrationType};
    let migrations = vec![
        Migration::new(
            1,
            Cow::Borrowed("control plane"),
            MigrationType::Simple,
            sqlx::SqlStr::from_static(include_str!("../migrations/0001_control_plane.sql")),
            false,
        ),
        Migration::new(
            2,
            Cow::Borrowed("tenant state"),
            MigrationType::Simple,
            sqlx::SqlStr::from_static(include_str!("../migrations/0002_tenant_state.sql")),
            false,
        ),
        Migration::new(
            3,
            Cow::Borrowed("signing key rotation"),
            MigrationType::Simple,
            sqlx::SqlStr::from_static(include_str!("../migrations/0003_signing_key_rotation.sql")),
            false,
        ),
        Migration::new(
            4,
            Cow::Borrowed("kv namespace usage"),
            MigrationType::Simple,
            sqlx::SqlStr::from_static(include_str!("../migrations/0004_kv_namespace_usage.sql")),
            false,
        ),
        Migration::new(
            5,
            Cow::Borrowed("kv private namespaces"),
            MigrationType::Simple,
            sqlx::SqlStr::from_static(include_str!("../migrations/0005_kv_private_namespaces.sql")),
            false,
        ),
        Migration::new(
            6,
            Cow::Borrowed("tenant uid slots"),
            MigrationType::Simple,
            sqlx::SqlStr::from_static(include_str!("../migrations/0006_tenant_uid_slots.sql")),
            false,
        ),
    ];
    sqlx::migrate::Migrator::with_migrations(migrations)
}

impl Store {
    /// Opens (creating) the store in `data_dir`: the database in WAL mode with foreign keys
    /// on, migrated to the current schema, and the artifact directory.
    pub async fn open(data_dir: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        let data_error = |error| StoreError::DataDir {
            path: data_dir.to_owned(),
            error,
        };
        std::fs::create_dir_all(data_dir).map_err(data_error)?;
        restrict_permissions(data_dir).map_err(data_error)?;
        let path = data_dir.join(DATABASE_FILE);
        let connect = SqliteConnectOptions::from_str("sqlite:")?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if options.synchronous_full {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            .foreign_keys(true)
            .busy_timeout(options.busy_timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .connect_with(connect)
            .await?;
        migrator().run(&pool).await?;
        let artifacts = ArtifactStore::open(data_dir.join("artifacts"))?;
        Ok(Self {
            pool,
            artifacts,
            data_dir: data_dir.to_owned(),
            keys: None,
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn artifacts(&self) -> &ArtifactStore {
        &self.artifacts
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes every connection (checkpointing the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A write transaction: `BEGIN IMMEDIATE` takes SQLite's write lock up front, so two
    /// writers never deadlock upgrading a read lock, and sequence numbers read inside it
    /// cannot be taken by anyone else.
    async fn write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Reads an artifact off the blocking thread pool, verified against its digest.
    pub async fn artifact(&self, digest: &str) -> Result<Vec<u8>, StoreError> {
        let artifacts = self.artifacts.clone();
        let digest = digest.to_owned();
        tokio::task::spawn_blocking(move || artifacts.get(&digest))
            .await
            .map_err(|e| StoreError::Corrupt(format!("artifact reader failed: {e}")))?
    }

    /// Checks what a crash could have broken: every version's artifact exists and verifies,
    /// and the audit chain is intact. Returns the problems found (empty: consistent).
    pub async fn check_consistency(&self) -> Result<Vec<String>, StoreError> {
        let mut problems = Vec::new();
        let digests: Vec<(String, String, String, String)> = sqlx::query_as(
            "SELECT tenant_id, name, version, component_sha256 FROM extension_versions",
        )
        .fetch_all(&self.pool)
        .await?;
        for (tenant, name, version, digest) in digests {
            if let Err(error) = self.artifact(&digest).await {
                problems.push(format!("{tenant}/{name}@{version}: {error}"));
            }
        }
        let report = self.verify_audit(None).await?;
        if let Some(problem) = report.broken {
            problems.push(format!("audit log: {problem}"));
        }
        Ok(problems)
    }
}

fn restrict_permissions(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `u64` from a BIGINT column that the schema keeps non-negative.
fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A BIGINT for a `u64` (saturating; the values stored here are far below `i64::MAX`).
fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[tokio::test]
    async fn upgrading_to_namespace_usage_counts_what_is_already_stored() {
        let connect =
            SqliteConnectOptions::from_str("sqlite::memory:").unwrap_or_else(|e| panic!("{e}"));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(connect)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // A database as the release before namespace usage left it, with stored values.
        let before: Vec<_> = migrator().iter().take(3).cloned().collect();
        sqlx::migrate::Migrator::with_migrations(before)
            .run(&pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for (tenant, namespace, key, value_bytes) in [
            ("acme", "orders", b"a".as_slice(), 10_i64),
            ("acme", "orders", b"bb".as_slice(), 20),
            ("acme", "shared:cache", b"c".as_slice(), 5),
            ("globex", "orders", b"d".as_slice(), 7),
        ] {
            sqlx::query(
                "INSERT INTO kv_entries (tenant_id, namespace, key, sealed, key_version, value_bytes, updated_ms) \
                 VALUES ($1, $2, $3, x'00', 1, $4, 0)",
            )
            .bind(tenant)
            .bind(namespace)
            .bind(key)
            .bind(value_bytes)
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        }
        migrator()
            .run(&pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let usage: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT tenant_id, namespace, keys, bytes FROM kv_namespace_usage ORDER BY tenant_id, namespace",
        )
        .fetch_all(&pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let row = |t: &str, n: &str, k, b| (t.to_owned(), n.to_owned(), k, b);
        assert_eq!(
            usage,
            [
                row("acme", "orders", 2, 10 + 1 + 20 + 2),
                row("acme", "shared:cache", 1, 5 + 1),
                row("globex", "orders", 1, 7 + 1),
            ]
        );
    }
}

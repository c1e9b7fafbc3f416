//! The store against a real SQLite database in a temporary directory: tenants, tokens,
//! versions, reviews, deployments and rollbacks keep their rules; every change lands in the
//! hash-chained audit log; and tampering with the database behind the store's back (editing,
//! deleting, inserting or reordering audit rows, swapping an artifact) is detected and named.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test setup: a failure should stop the test loudly"
)]

use palisade_api::{DeploymentKind, Role, TenantState, VersionState};
use palisade_model::audit::ChainProblem;
use palisade_store::{Actor, NewToken, NewVersion, Store, StoreError, StoreOptions, now_ms};

fn actor() -> Actor {
    Actor {
        principal: "p-test".into(),
        request_id: "req-test".into(),
    }
}

async fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, StoreOptions::default()).await.unwrap()
}

fn version(tenant: &str, name: &str, version: &str, component: &[u8]) -> NewVersion {
    NewVersion {
        tenant: tenant.into(),
        name: name.into(),
        version: semver::Version::parse(version).unwrap(),
        api: "palisade:extension@1.0.0".into(),
        manifest: format!("[extension]\nname = \"{name}\"\nversion = \"{version}\"\n"),
        component: component.to_vec(),
    }
}

/// A store with tenant `acme` and versions 1.0.0 and 1.1.0 of `ext`, both approved.
async fn populated(dir: &std::path::Path) -> Store {
    let store = open(dir).await;
    store.create_tenant(&actor(), "acme").await.unwrap();
    for v in ["1.0.0", "1.1.0"] {
        store
            .publish_version(&actor(), version("acme", "ext", v, v.as_bytes()))
            .await
            .unwrap();
        store
            .review_version(&actor(), "acme", "ext", v, true, None)
            .await
            .unwrap();
    }
    store
}

#[tokio::test]
async fn tenants_are_unique_validated_and_suspendable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store.create_tenant(&actor(), "acme").await.unwrap();
    assert!(matches!(
        store.create_tenant(&actor(), "acme").await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.create_tenant(&actor(), "Not A Name").await,
        Err(StoreError::Invalid(_))
    ));
    let suspended = store
        .set_tenant_state(&actor(), "acme", TenantState::Suspended)
        .await
        .unwrap();
    assert_eq!(suspended.state, TenantState::Suspended);
    assert!(matches!(
        store
            .set_tenant_state(&actor(), "nobody", TenantState::Active)
            .await,
        Err(StoreError::NotFound(_))
    ));
    let actions: Vec<String> = store
        .audit_entries(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(actions, ["tenant.create", "tenant.suspend"]);
}

#[tokio::test]
async fn tokens_authenticate_until_revoked_or_expired_and_only_hashes_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store.create_tenant(&actor(), "acme").await.unwrap();
    let (secret, info) = store
        .create_token(
            &actor(),
            NewToken::Principal {
                name: "ci".into(),
                role: Role::Invoker,
                tenant: Some("acme".into()),
                expires_ms: now_ms() + 60_000,
            },
        )
        .await
        .unwrap();
    assert!(secret.starts_with("pal_") && secret.len() == 4 + 64);
    let found = store.authenticate(&secret).await.unwrap().unwrap();
    assert_eq!(found.principal.role, Role::Invoker);
    assert!(store.authenticate("pal_wrong").await.unwrap().is_none());

    // The database holds no secret, only its hash.
    let database = std::fs::read(dir.path().join("palisade.db")).unwrap();
    let wal = std::fs::read(dir.path().join("palisade.db-wal")).unwrap_or_default();
    for bytes in [&database, &wal] {
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
    }

    store.revoke_token(&actor(), &info.id).await.unwrap();
    assert!(store.authenticate(&secret).await.unwrap().is_none());

    // Platform roles have no tenant, tenant roles need one.
    for (role, tenant) in [
        (Role::PlatformAdmin, Some("acme".to_owned())),
        (Role::TenantAdmin, None),
    ] {
        let refused = store
            .create_token(
                &actor(),
                NewToken::Principal {
                    name: "x".into(),
                    role,
                    tenant,
                    expires_ms: now_ms() + 60_000,
                },
            )
            .await;
        assert!(matches!(refused, Err(StoreError::Invalid(_))), "{role}");
    }
}

#[tokio::test]
async fn versions_are_immutable_reviewed_once_and_deployed_only_when_approved() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store.create_tenant(&actor(), "acme").await.unwrap();
    let published = store
        .publish_version(&actor(), version("acme", "ext", "1.0.0", b"wasm"))
        .await
        .unwrap();
    assert_eq!(published.state, VersionState::Published);
    assert!(matches!(
        store
            .publish_version(&actor(), version("acme", "ext", "1.0.0", b"other"))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.deploy(&actor(), "acme", "ext", "1.0.0", true).await,
        Err(StoreError::Conflict(_))
    ));
    store
        .review_version(&actor(), "acme", "ext", "1.0.0", false, Some("no".into()))
        .await
        .unwrap();
    assert!(matches!(
        store
            .review_version(&actor(), "acme", "ext", "1.0.0", true, None)
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.deploy(&actor(), "acme", "ext", "1.0.0", false).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store
            .publish_version(&actor(), version("ghost", "ext", "1.0.0", b"wasm"))
            .await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn deployments_keep_history_and_roll_back_to_any_earlier_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated(dir.path()).await;
    assert!(matches!(
        store.rollback(&actor(), "acme", "ext", None).await,
        Err(StoreError::NotFound(_))
    ));
    store
        .deploy(&actor(), "acme", "ext", "1.0.0", true)
        .await
        .unwrap();
    assert!(matches!(
        store.rollback(&actor(), "acme", "ext", None).await,
        Err(StoreError::Conflict(_))
    ));
    let second = store
        .deploy(&actor(), "acme", "ext", "1.1.0", true)
        .await
        .unwrap();
    assert_eq!(second.previous_version.as_deref(), Some("1.0.0"));
    // Deploying the active version again changes nothing.
    let same = store
        .deploy(&actor(), "acme", "ext", "1.1.0", true)
        .await
        .unwrap();
    assert_eq!(same.seq, second.seq);

    let back = store.rollback(&actor(), "acme", "ext", None).await.unwrap();
    assert_eq!(
        (back.kind, back.version.as_str()),
        (DeploymentKind::Rollback, "1.0.0")
    );
    let forward = store
        .rollback(&actor(), "acme", "ext", Some("1.1.0"))
        .await
        .unwrap();
    assert_eq!(forward.version, "1.1.0");
    assert!(matches!(
        store.rollback(&actor(), "acme", "ext", Some("9.9.9")).await,
        Err(StoreError::Conflict(_))
    ));
    let active = store
        .active_deployment("acme", "ext")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(active.seq, forward.seq);
    assert_eq!(store.deployments("acme", "ext").await.unwrap().len(), 4);
    assert!(store.check_consistency().await.unwrap().is_empty());
}

async fn raw(dir: &std::path::Path) -> sqlx::SqlitePool {
    sqlx::SqlitePool::connect(&format!("sqlite:{}", dir.join("palisade.db").display()))
        .await
        .unwrap()
}

async fn first_break(store: &Store) -> Option<(u64, ChainProblem)> {
    let report = store.verify_audit(None).await.unwrap();
    report.broken.map(|b| (b.seq, b.problem))
}

#[tokio::test]
async fn editing_deleting_inserting_or_reordering_audit_rows_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated(dir.path()).await;
    let intact = store.verify_audit(None).await.unwrap();
    assert_eq!(intact.verified, 5, "create + 2 × (publish + approve)");
    assert!(intact.broken.is_none());
    assert_eq!(intact.head.map(|h| h.entries), Some(5));

    let db = raw(dir.path()).await;
    sqlx::query("UPDATE audit_log SET principal = 'p-someone-else' WHERE seq = 3")
        .execute(&db)
        .await
        .unwrap();
    assert_eq!(first_break(&store).await, Some((3, ChainProblem::Edited)));

    let dir = tempfile::tempdir().unwrap();
    let store = populated(dir.path()).await;
    let db = raw(dir.path()).await;
    sqlx::query("DELETE FROM audit_log WHERE seq = 2")
        .execute(&db)
        .await
        .unwrap();
    assert_eq!(
        first_break(&store).await,
        Some((2, ChainProblem::OutOfSequence { found: 3 }))
    );

    let dir = tempfile::tempdir().unwrap();
    let store = populated(dir.path()).await;
    let db = raw(dir.path()).await;
    // Swap the contents of rows 2 and 3 (keeping their sequence numbers).
    sqlx::query("UPDATE audit_log SET seq = -2 WHERE seq = 2")
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_log SET seq = 2 WHERE seq = 3")
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_log SET seq = 3 WHERE seq = -2")
        .execute(&db)
        .await
        .unwrap();
    assert_eq!(first_break(&store).await.map(|b| b.0), Some(2));

    let dir = tempfile::tempdir().unwrap();
    let store = populated(dir.path()).await;
    let db = raw(dir.path()).await;
    // Insert a forged entry at the end that claims to follow the last one but was not sealed
    // by the store.
    sqlx::query(
        "INSERT INTO audit_log SELECT seq + 1, time_ms, request_id, 'p-forger', action, \
         tenant_id, target, before_sha256, after_sha256, detail, hash, hash FROM audit_log \
         WHERE seq = 5",
    )
    .execute(&db)
    .await
    .unwrap();
    assert_eq!(first_break(&store).await, Some((6, ChainProblem::Edited)));

    // Truncation leaves a valid chain; an anchor kept elsewhere catches it.
    let dir = tempfile::tempdir().unwrap();
    let store = populated(dir.path()).await;
    let anchor = store.verify_audit(None).await.unwrap().head.unwrap();
    assert_eq!(anchor.last_hash.len(), 64);
    let db = raw(dir.path()).await;
    sqlx::query("DELETE FROM audit_log WHERE seq >= 4")
        .execute(&db)
        .await
        .unwrap();
    let anchored = palisade_model::audit::Anchor {
        seq: anchor.entries,
        hash: anchor.last_hash,
    };
    let report = store.verify_audit(Some(anchored)).await.unwrap();
    assert!(matches!(
        report.broken.map(|b| (b.seq, b.problem)),
        Some((5, ChainProblem::AnchorMismatch { .. }))
    ));
}

#[tokio::test]
async fn a_swapped_artifact_is_refused_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated(dir.path()).await;
    let v = store
        .version("acme", "ext", "1.0.0")
        .await
        .unwrap()
        .unwrap();
    let path = dir
        .path()
        .join("artifacts/sha256")
        .join(&v.component_sha256[..2])
        .join(&v.component_sha256);
    std::fs::write(&path, b"evil").unwrap();
    assert!(matches!(
        store.artifact(&v.component_sha256).await,
        Err(StoreError::Corrupt(_))
    ));
    let problems = store.check_consistency().await.unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("acme/ext@1.0.0"));
}

#[tokio::test]
async fn concurrent_writers_never_lose_a_change_or_break_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.create_tenant(&actor(), &format!("t{i}")).await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(store.tenants().await.unwrap().len(), 40);
    let report = store.verify_audit(None).await.unwrap();
    assert_eq!(report.verified, 40);
    assert!(report.broken.is_none());
}

#[tokio::test]
async fn every_tenant_gets_its_own_uid_slot_and_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    // Tenants whose names collided under the old hash allocation get distinct slots.
    for tenant in ["acme", "globex", "initech"] {
        store.create_tenant(&actor(), tenant).await.unwrap();
    }
    let slots = store.tenant_uid_slots().await.unwrap();
    assert_eq!(
        slots,
        vec![
            ("acme".to_owned(), 0),
            ("globex".to_owned(), 1),
            ("initech".to_owned(), 2)
        ]
    );
    // A refused duplicate allocates nothing; a suspended tenant keeps its slot; the next
    // tenant gets a fresh one.
    assert!(store.create_tenant(&actor(), "acme").await.is_err());
    store
        .set_tenant_state(&actor(), "globex", TenantState::Suspended)
        .await
        .unwrap();
    store.create_tenant(&actor(), "hooli").await.unwrap();
    assert_eq!(store.tenant_uid_slot("globex").await.unwrap(), Some(1));
    assert_eq!(store.tenant_uid_slot("hooli").await.unwrap(), Some(3));
    assert_eq!(store.tenant_uid_slot("nowhere").await.unwrap(), None);
    // Reopening keeps them.
    store.close().await;
    let store = open(dir.path()).await;
    assert_eq!(store.tenant_uid_slots().await.unwrap().len(), 4);
}

/// A store with tenant `acme`, unlocked with a local key-encryption key.
async fn unlocked(dir: &std::path::Path) -> Store {
    let store = open(dir).await;
    store.create_tenant(&actor(), "acme").await.unwrap();
    store
        .with_key_provider(std::sync::Arc::new(palisade_store::LocalKek::from_bytes(
            [9; 32],
        )))
        .await
        .unwrap()
}

const QUOTA: palisade_store::KvQuota = palisade_store::KvQuota {
    max_keys: 100,
    max_bytes: 1 << 20,
    namespace_max_keys: 100,
    namespace_max_bytes: 1 << 20,
};

/// The storage name of what `extension` means by `namespace` (`self` or a shared name).
fn scope(extension: &str, namespace: &str) -> String {
    palisade_model::kv::KvScope::resolve(extension, namespace)
        .unwrap()
        .storage_name()
}

async fn kv(store: &Store, namespace: &str, op: KvOp) -> KvReply {
    store.kv("acme", namespace, op, QUOTA).await.unwrap()
}

fn set(key: &[u8], value: &[u8]) -> KvOp {
    KvOp::Set {
        namespace: String::new(),
        key: key.to_vec(),
        value: value.to_vec(),
    }
}

fn get(key: &[u8]) -> KvOp {
    KvOp::Get {
        namespace: String::new(),
        key: key.to_vec(),
    }
}

fn list() -> KvOp {
    KvOp::List {
        namespace: String::new(),
        prefix: Vec::new(),
        after: None,
        limit: 100,
    }
}

use palisade_model::kv::{KvOp, KvReply};

#[tokio::test]
async fn an_extensions_own_state_and_a_shared_namespace_of_its_name_are_separate() {
    let dir = tempfile::tempdir().unwrap();
    let store = unlocked(dir.path()).await;
    // `victim`'s own state, and the shared namespace `victim` as `thief` (kv = ["victim"])
    // reaches it: never the same storage.
    let own = scope("victim", "self");
    let shared = scope("thief", "victim");
    assert_ne!(own, shared);
    assert_eq!(
        kv(&store, &own, set(b"secret", b"own")).await,
        KvReply::Done
    );
    assert_eq!(
        kv(&store, &shared, get(b"secret")).await,
        KvReply::Value(None)
    );
    assert_eq!(
        kv(&store, &shared, list()).await,
        KvReply::Keys {
            keys: vec![],
            next: None
        }
    );
    // Overwriting through the shared namespace leaves the private value alone, and the
    // other way round.
    assert_eq!(
        kv(&store, &shared, set(b"secret", b"shared")).await,
        KvReply::Done
    );
    assert_eq!(
        kv(&store, &own, get(b"secret")).await,
        KvReply::Value(Some(b"own".to_vec()))
    );
    assert_eq!(
        kv(&store, &shared, set(b"only-shared", b"x")).await,
        KvReply::Done
    );
    assert_eq!(
        kv(&store, &own, list()).await,
        KvReply::Keys {
            keys: vec![b"secret".to_vec()],
            next: None
        }
    );
    assert_eq!(
        kv(&store, &shared, list()).await,
        KvReply::Keys {
            keys: vec![b"only-shared".to_vec(), b"secret".to_vec()],
            next: None
        }
    );
    assert_eq!(
        kv(&store, &own, get(b"only-shared")).await,
        KvReply::Value(None)
    );
    // Destroying the shared namespace leaves the private one (its own data key too).
    assert_eq!(
        store
            .destroy_namespace(&actor(), "acme", &shared)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        kv(&store, &own, get(b"secret")).await,
        KvReply::Value(Some(b"own".to_vec()))
    );
}

#[tokio::test]
async fn an_extension_named_like_a_shared_namespace_does_not_get_it_as_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let store = unlocked(dir.path()).await;
    // Extensions share namespace `cache`; an extension named `cache` writes "self".
    let shared = scope("writer", "cache");
    assert_eq!(
        kv(&store, &shared, set(b"k", b"shared")).await,
        KvReply::Done
    );
    let own = scope("cache", "self");
    assert_eq!(kv(&store, &own, get(b"k")).await, KvReply::Value(None));
    assert_eq!(
        kv(&store, &own, list()).await,
        KvReply::Keys {
            keys: vec![],
            next: None
        }
    );
    assert_eq!(kv(&store, &own, set(b"k", b"own")).await, KvReply::Done);
    assert_eq!(
        kv(&store, &shared, get(b"k")).await,
        KvReply::Value(Some(b"shared".to_vec()))
    );
    // Separate data keys: each namespace has its own scope.
    let scopes: Vec<String> = store
        .key_versions("acme")
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.scope)
        .collect();
    assert_eq!(scopes, ["kv:cache", "kv:ext:cache"]);
}

#[tokio::test]
async fn writes_racing_a_decommission_leave_nothing_and_a_repeat_removes_what_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(unlocked(dir.path()).await);
    let own = scope("ext", "self");
    kv(&store, &own, set(b"before", b"v")).await;
    store
        .set_secret(&actor(), "acme", "api-key", b"s3cret")
        .await
        .unwrap();

    // Writers keep going while the tenant is decommissioned.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = std::sync::Arc::clone(&store);
            let own = own.clone();
            tokio::spawn(async move {
                // Until the decommission refuses one (bounded, so a missing refusal fails).
                let key = format!("w{w}");
                for _ in 0..50_000 {
                    if let Err(e) = store
                        .kv("acme", &own, set(key.as_bytes(), b"v"), QUOTA)
                        .await
                    {
                        assert_eq!(e.kind, palisade_model::kv::KvErrorKind::Denied, "{e}");
                        return true;
                    }
                    tokio::task::yield_now().await;
                }
                false
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    store.decommission_tenant(&actor(), "acme").await.unwrap();
    for w in writers {
        assert!(w.await.unwrap(), "a writer was never refused");
    }

    let pool = raw(dir.path()).await;
    let count = |table: &'static str| {
        let pool = pool.clone();
        let sql = match table {
            "kv_entries" => "SELECT COUNT(*) FROM kv_entries WHERE tenant_id = 'acme'",
            "data_keys" => "SELECT COUNT(*) FROM data_keys WHERE tenant_id = 'acme'",
            _ => "SELECT COUNT(*) FROM secrets WHERE tenant_id = 'acme'",
        };
        async move {
            let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&pool).await.unwrap();
            n
        }
    };
    for table in ["kv_entries", "data_keys", "secrets"] {
        assert_eq!(count(table).await, 0, "{table} after the decommission");
    }
    // After it, nothing writes, seals or makes a key.
    let e = store
        .kv("acme", &own, set(b"after", b"v"), QUOTA)
        .await
        .unwrap_err();
    assert_eq!(e.kind, palisade_model::kv::KvErrorKind::Denied);
    assert!(matches!(
        store
            .set_secret(&actor(), "acme", "api-key", b"again")
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(count("data_keys").await, 0);

    // Something left behind (a row written by an older release, say) is removed by a repeat.
    sqlx::query(
        "INSERT INTO kv_entries (tenant_id, namespace, key, sealed, key_version, value_bytes, updated_ms) \
         VALUES ('acme', 'ext:ext', X'6c656674', X'00', 1, 1, 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let again = store.decommission_tenant(&actor(), "acme").await.unwrap();
    assert_eq!(again.state, TenantState::Decommissioned);
    assert_eq!(count("kv_entries").await, 0);
}

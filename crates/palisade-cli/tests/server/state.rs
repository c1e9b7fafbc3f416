//! Tenant state from inside real guests (the kv-probe fixture in jailed workers, its calls
//! going over IPC to the supervisor): isolation between tenants, extensions and namespaces,
//! crafted keys, policy grants, every quota at its exact limit, encryption at rest (moved and
//! tampered ciphertext, plaintext never on disk, a wrong key-encryption key refused at start),
//! key rotation, secrets that no extension can read, crypto-shredding on decommission, and no
//! acknowledged write lost to `kill -9`.

use std::time::Duration;

use axum::http::Method;
use palisade_client::PolicyLayer;
use serde_json::{Value, json};

use crate::{InProcess, ServerProcess, fixture, publish_body};

const PERMIT_KV: &str = r#"
@id("kv")
permit (principal, action in [Action::"kv:read", Action::"kv:write"], resource is KvNamespace);
"#;

fn policy(tenant: &str, limits: &str, cedar: &str) -> Value {
    json!({
        "document": format!(
            "format = 1\nlayer = \"tenant\"\ntenant = \"{tenant}\"\n\n[limits]\n{limits}\n\n[cedar]\ntext = '''{cedar}'''\n"
        ),
        "reason": "test",
    })
}

/// A world with tenants `acme` and `globex`, each with the kv-probe deployed and kv granted.
async fn world() -> InProcess {
    let world = InProcess::new().await;
    for tenant in ["acme", "globex"] {
        world
            .admin(Method::POST, "/v1/tenants", Some(json!({ "id": tenant })))
            .await;
        world
            .admin(
                Method::PUT,
                &format!("/v1/tenants/{tenant}/policy"),
                Some(policy(tenant, "", PERMIT_KV)),
            )
            .await;
        world.ship(tenant, "fixtures/kv-probe", "1.0.0").await;
    }
    world
}

/// Runs the probe's `ops` in `tenant/name`; the list of results.
async fn probe(world: &InProcess, tenant: &str, name: &str, ops: Value) -> Vec<Value> {
    let answer = probe_raw(world, tenant, name, ops).await;
    assert_eq!(answer.status, 200, "{}", answer.json);
    answer.json.as_array().cloned().unwrap_or_default()
}

async fn probe_raw(world: &InProcess, tenant: &str, name: &str, ops: Value) -> crate::Answer {
    let request = axum::http::Request::builder()
        .method(Method::POST)
        .uri(format!("/v1/tenants/{tenant}/extensions/{name}:invoke"))
        .header("authorization", format!("Bearer {}", world.admin))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(json!({ "ops": ops }).to_string()))
        .unwrap();
    world.raw(request).await
}

fn error_kind(result: &Value) -> &str {
    result["error"]["kind"].as_str().unwrap_or("")
}

/// Publishes the probe under another name with other namespaces, approved and deployed.
async fn ship_probe_as(world: &InProcess, tenant: &str, name: &str, namespaces: &str) {
    ship_probe_with_limits(world, tenant, name, namespaces, "").await;
}

/// The same, with more `[limits]` lines in its manifest.
async fn ship_probe_with_limits(
    world: &InProcess,
    tenant: &str,
    name: &str,
    namespaces: &str,
    limits: &str,
) {
    let (manifest, wasm) = fixture("fixtures/kv-probe", "1.0.0");
    let manifest = manifest
        .replacen("name = \"kv-probe\"", &format!("name = \"{name}\""), 1)
        .replace("kv = [\"self\", \"shared\"]", &format!("kv = {namespaces}"))
        .replacen("[limits]\n", &format!("[limits]\n{limits}\n"), 1);
    world
        .admin(
            Method::POST,
            &format!("/v1/tenants/{tenant}/extensions/{name}/versions"),
            Some(publish_body(&manifest, &wasm)),
        )
        .await;
    world
        .admin(
            Method::POST,
            &format!("/v1/tenants/{tenant}/extensions/{name}/versions/1.0.0:approve"),
            None,
        )
        .await;
    world
        .admin(
            Method::POST,
            &format!("/v1/tenants/{tenant}/extensions/{name}/deployments"),
            Some(json!({ "version": "1.0.0" })),
        )
        .await;
}

#[tokio::test]
async fn a_shared_namespace_named_like_an_extension_never_reaches_its_own_state() {
    let world = world().await;
    // The policy grants every namespace; the manifests ask for `self` and for `victim`.
    ship_probe_as(&world, "acme", "victim", r#"["self"]"#).await;
    ship_probe_as(&world, "acme", "thief", r#"["victim"]"#).await;
    let results = probe(
        &world,
        "acme",
        "victim",
        json!([{ "op": "set", "key": "secret", "value": "victim-secret" }]),
    )
    .await;
    assert_eq!(results[0]["ok"], "done", "{results:?}");
    let results = probe(
        &world,
        "acme",
        "thief",
        json!([
            { "op": "get", "ns": "victim", "key": "secret" },
            { "op": "list", "ns": "victim" },
            { "op": "set", "ns": "victim", "key": "secret", "value": "overwritten" },
        ]),
    )
    .await;
    assert_eq!(results[0]["ok"], Value::Null, "{results:?}");
    assert_eq!(results[1]["ok"], json!([]), "{results:?}");
    assert_eq!(results[2]["ok"], "done", "{results:?}");
    // The victim's own state is untouched, and holds nothing of the shared namespace.
    let results = probe(
        &world,
        "acme",
        "victim",
        json!([
            { "op": "get", "key": "secret" },
            { "op": "list" },
        ]),
    )
    .await;
    assert_eq!(results[0]["ok"], "victim-secret", "{results:?}");
    assert_eq!(results[1]["ok"], json!(["secret"]), "{results:?}");
    // An extension named like a shared namespace does not read it as its own.
    ship_probe_as(&world, "acme", "shared", r#"["self"]"#).await;
    let results = probe(
        &world,
        "acme",
        "kv-probe",
        json!([{ "op": "set", "ns": "shared", "key": "k", "value": "shared-value" }]),
    )
    .await;
    assert_eq!(results[0]["ok"], "done", "{results:?}");
    let results = probe(
        &world,
        "acme",
        "shared",
        json!([{ "op": "get", "key": "k" }]),
    )
    .await;
    assert_eq!(results[0]["ok"], Value::Null, "{results:?}");
    world.shutdown().await;
}

#[tokio::test]
async fn tenants_extensions_and_namespaces_cannot_reach_each_other() {
    let world = world().await;
    ship_probe_as(&world, "acme", "other-probe", r#"["self"]"#).await;
    let set = probe(
        &world,
        "acme",
        "kv-probe",
        json!([
            { "op": "set", "key": "card", "value": "acme-secret-4242" },
            { "op": "set", "key_hex": "ff00fe", "value": "binary key" },
            { "op": "set", "ns": "shared", "key": "note", "value": "for acme's extensions" },
        ]),
    )
    .await;
    assert!(set.iter().all(|r| r["ok"] == "done"), "{set:?}");

    // Another tenant's extension of the same name sees its own, empty namespace.
    let globex = probe(
        &world,
        "globex",
        "kv-probe",
        json!([
            { "op": "get", "key": "card" },
            { "op": "get", "key_hex": "ff00fe" },
            { "op": "get", "ns": "shared", "key": "note" },
            { "op": "list", "prefix": "", "limit": 100 },
        ]),
    )
    .await;
    assert_eq!(globex[0]["ok"], Value::Null);
    assert_eq!(globex[1]["ok"], Value::Null);
    assert_eq!(globex[2]["ok"], Value::Null);
    assert_eq!(globex[3]["ok"], json!([]));

    // Another extension of the same tenant: its own namespace is empty, the first one's
    // namespace is not requested, crafted names and keys are refused or stay keys.
    let other = probe(
        &world,
        "acme",
        "other-probe",
        json!([
            { "op": "get", "key": "card" },
            { "op": "get", "ns": "kv-probe", "key": "card" },
            { "op": "get", "ns": "shared", "key": "note" },
            { "op": "get", "ns": "../kv-probe", "key": "card" },
            { "op": "get", "ns": "globex/kv-probe", "key": "card" },
            { "op": "get", "key": "../kv-probe/card" },
            { "op": "get", "key": "" },
            { "op": "get", "key_len": 513 },
            { "op": "set", "key": "big", "value_len": 1_048_577 },
        ]),
    )
    .await;
    assert_eq!(other[0]["ok"], Value::Null, "own namespace");
    assert_eq!(error_kind(&other[1]), "denied", "{:?}", other[1]);
    assert_eq!(
        error_kind(&other[2]),
        "denied",
        "shared is not requested by other-probe"
    );
    assert_eq!(error_kind(&other[3]), "invalid_key");
    assert_eq!(error_kind(&other[4]), "invalid_key");
    assert_eq!(other[5]["ok"], Value::Null, "a path-like key is just a key");
    assert_eq!(error_kind(&other[6]), "invalid_key");
    assert_eq!(error_kind(&other[7]), "invalid_key");
    assert_eq!(error_kind(&other[8]), "value_too_large");

    // The owner still reads its data, binary keys included, and the shared namespace.
    let back = probe(
        &world,
        "acme",
        "kv-probe",
        json!([
            { "op": "get", "key": "card" },
            { "op": "get", "key_hex": "ff00fe" },
            { "op": "get", "ns": "shared", "key": "note" },
            { "op": "list", "prefix": "", "limit": 100 },
        ]),
    )
    .await;
    assert_eq!(back[0]["ok"], "acme-secret-4242");
    assert_eq!(back[1]["ok"], "binary key");
    assert_eq!(back[2]["ok"], "for acme's extensions");
    assert_eq!(back[3]["ok"], json!(["card", { "hex": "ff00fe" }]));
    world.shutdown().await;
}

#[tokio::test]
async fn an_extension_is_held_to_its_own_share_of_the_tenants_quotas() {
    let world = world().await;
    // The tenant allows 100 keys; this extension's manifest asks for 3 keys and 1 KiB, and
    // 5 operations a second.
    ship_probe_with_limits(
        &world,
        "acme",
        "small",
        "[\"self\", \"shared\"]",
        "kv_keys = 3\nkv_bytes = \"1 KiB\"\nkv_rate = 5",
    )
    .await;
    world
        .admin(
            Method::PUT,
            "/v1/tenants/acme/policy",
            Some(policy("acme", "kv_keys = 100", PERMIT_KV)),
        )
        .await;
    let results = probe(
        &world,
        "acme",
        "small",
        json!([{ "op": "set", "key": "key{i}", "value": "v", "repeat": 4 }]),
    )
    .await;
    assert_eq!(error_kind(&results[0]), "quota_exceeded", "{results:?}");
    assert_eq!(results[0]["at"], 3, "the fourth key is refused");
    assert!(
        results[0]["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("kv_keys of the extension"),
        "{results:?}"
    );
    // The cap is per namespace it writes: the shared one has room for three more of its
    // keys, and another extension of the tenant still has the tenant's whole quota.
    let shared = probe(
        &world,
        "acme",
        "small",
        json!([{ "op": "set", "ns": "shared", "key": "s{i}", "value": "v", "repeat": 3 }]),
    )
    .await;
    assert_eq!(shared[0]["ok"], "done", "{shared:?}");
    let other = probe(
        &world,
        "acme",
        "kv-probe",
        json!([{ "op": "set", "key": "key{i}", "value": "v", "repeat": 10 }]),
    )
    .await;
    assert_eq!(other[0]["ok"], "done", "{other:?}");
    // Bytes: 1 KiB in its namespace, whatever the tenant allows.
    world
        .admin(Method::DELETE, "/v1/tenants/acme/kv/ext:small", None)
        .await;
    let results = probe(
        &world,
        "acme",
        "small",
        json!([
            { "op": "set", "key": "a", "value_len": 1023 },
            { "op": "set", "key": "b", "value_len": 1 },
        ]),
    )
    .await;
    assert_eq!(results[0]["ok"], "done");
    assert_eq!(error_kind(&results[1]), "quota_exceeded", "{results:?}");
    // Rate: its own 5 a second run out within a 1 s deadline (the tenant's 50 would not).
    world
        .admin(
            Method::PUT,
            "/v1/tenants/acme/policy",
            Some(policy(
                "acme",
                "kv_keys = 100\nwall_time = \"1s\"",
                PERMIT_KV,
            )),
        )
        .await;
    let answer = probe_raw(
        &world,
        "acme",
        "small",
        json!([{ "op": "exists", "key": "x", "repeat": 12 }]),
    )
    .await;
    let message = answer.json.to_string();
    assert!(
        message.contains("extension acme/small is over its key-value rate"),
        "{message}"
    );
    world.shutdown().await;
}

#[tokio::test]
async fn the_policy_decides_read_and_write_per_namespace() {
    let world = world().await;
    world
        .admin(
            Method::PUT,
            "/v1/tenants/acme/policy",
            Some(policy(
                "acme",
                "",
                r#"
@id("own-kv")
permit (principal, action in [Action::"kv:read", Action::"kv:write"], resource is KvNamespace)
when { resource.name like "ext:*" };

@id("shared-read-only")
permit (principal, action == Action::"kv:read", resource is KvNamespace)
when { resource.name == "shared" };
"#,
            )),
        )
        .await;
    let results = probe(
        &world,
        "acme",
        "kv-probe",
        json!([
            { "op": "set", "key": "k", "value": "v" },
            { "op": "get", "ns": "shared", "key": "k" },
            { "op": "set", "ns": "shared", "key": "k", "value": "v" },
        ]),
    )
    .await;
    assert_eq!(results[0]["ok"], "done");
    assert_eq!(results[1]["ok"], Value::Null);
    assert_eq!(error_kind(&results[2]), "denied");
    assert!(
        results[2]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("kv:write")
    );

    // A tenant without a kv permit gets nothing, whatever the manifest asks.
    world
        .admin(
            Method::PUT,
            "/v1/tenants/globex/policy",
            Some(policy(
                "globex",
                "",
                "@id(\"logs\")\npermit (principal, action == Action::\"log:write\", resource);",
            )),
        )
        .await;
    let results = probe(
        &world,
        "globex",
        "kv-probe",
        json!([{ "op": "get", "key": "k" }]),
    )
    .await;
    assert_eq!(error_kind(&results[0]), "denied");
    world.shutdown().await;
}

#[tokio::test]
async fn a_time_conditioned_grant_ends_on_time_while_the_deployment_stays_cached() {
    let world = world().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let until = now + 3;
    world
        .admin(
            Method::PUT,
            "/v1/tenants/acme/policy",
            Some(policy(
                "acme",
                "",
                &format!(
                    r#"
@id("read")
permit (principal, action == Action::"kv:read", resource is KvNamespace);

@id("write-until")
permit (principal, action == Action::"kv:write", resource is KvNamespace)
when {{ context.time < {until} }};
"#
                ),
            )),
        )
        .await;
    let set = json!([{ "op": "set", "key": "k", "value": "before" }]);
    let results = probe(&world, "acme", "kv-probe", set).await;
    assert_eq!(results[0]["ok"], "done", "{results:?}");

    // The resolved deployment stays cached (nothing changed); the grant must still end.
    tokio::time::sleep(Duration::from_secs(until - now + 1)).await;
    let results = probe(
        &world,
        "acme",
        "kv-probe",
        json!([
            { "op": "set", "key": "k", "value": "after" },
            { "op": "get", "key": "k" },
        ]),
    )
    .await;
    assert_eq!(error_kind(&results[0]), "denied", "{results:?}");
    assert_eq!(results[1]["ok"], "before", "{results:?}");
    world.shutdown().await;
}

#[tokio::test]
async fn every_quota_holds_at_its_exact_limit() {
    let world = world().await;
    let set_limits = |limits: &str| {
        world.admin(
            Method::PUT,
            "/v1/tenants/acme/policy",
            Some(policy("acme", limits, PERMIT_KV)),
        )
    };

    // Keys: the fifth key is stored, the sixth is refused; overwriting an existing key is fine.
    set_limits("kv_keys = 5").await;
    let results = probe(
        &world,
        "acme",
        "kv-probe",
        json!([
            { "op": "set", "key": "key{i}", "value": "v", "repeat": 6 },
            { "op": "set", "key": "key0", "value": "again" },
        ]),
    )
    .await;
    assert_eq!(error_kind(&results[0]), "quota_exceeded", "{results:?}");
    assert_eq!(results[0]["at"], 5);
    assert_eq!(results[1]["ok"], "done");
    world
        .admin(Method::DELETE, "/v1/tenants/acme/kv/ext:kv-probe", None)
        .await;

    // Bytes (key + value): exactly 1000 fits, one more byte does not.
    set_limits("kv_bytes = 1000").await;
    let results = probe(
        &world,
        "acme",
        "kv-probe",
        json!([
            { "op": "set", "key": "a", "value_len": 899 },
            { "op": "set", "key": "b", "value_len": 99 },
            { "op": "set", "key": "c", "value_len": 1 },
        ]),
    )
    .await;
    assert_eq!(results[0]["ok"], "done");
    assert_eq!(results[1]["ok"], "done", "900 + 100 = 1000 bytes");
    assert_eq!(error_kind(&results[2]), "quota_exceeded", "{results:?}");
    world
        .admin(Method::DELETE, "/v1/tenants/acme/kv/ext:kv-probe", None)
        .await;

    // Operations per invocation: the fourth ends the invocation with kv_quota_exceeded.
    set_limits("kv_ops = 3").await;
    let answer = probe_raw(
        &world,
        "acme",
        "kv-probe",
        json!([{ "op": "exists", "key": "x", "repeat": 3 }]),
    )
    .await;
    assert_eq!(answer.status, 200, "three operations fit: {}", answer.json);
    let answer = probe_raw(
        &world,
        "acme",
        "kv-probe",
        json!([{ "op": "exists", "key": "x", "repeat": 4 }]),
    )
    .await;
    assert_eq!(
        (answer.status.as_u16(), answer.kind()),
        (422, "kv_quota_exceeded"),
        "{}",
        answer.json
    );

    // Operations per second: calls over the rate wait (the invocation slows down), then
    // fail once waiting would miss the deadline (2 s here): at 10/s, about 10 + 20 fit.
    set_limits("kv_rate = 10\nwall_time = \"2s\"").await;
    let started = std::time::Instant::now();
    let results = probe(
        &world,
        "acme",
        "kv-probe",
        json!([{ "op": "exists", "key": "x", "repeat": 100 }]),
    )
    .await;
    let at = results[0]["at"].as_u64().unwrap_or(0);
    assert_eq!(error_kind(&results[0]), "quota_exceeded", "{results:?}");
    assert!(
        (20..=35).contains(&at),
        "at 10/s with a 2 s deadline, {at} operations got through"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1_000),
        "it slowed down first"
    );

    // Write bandwidth (disk_io): 1 KiB/s; 400-byte writes slow down, then fail.
    set_limits("disk_io = \"1 KiB\"\nwall_time = \"2s\"").await;
    let results = probe(
        &world,
        "acme",
        "kv-probe",
        json!([{ "op": "set", "key": "w{i}", "value_len": 400, "repeat": 20 }]),
    )
    .await;
    let at = results[0]["at"].as_u64().unwrap_or(0);
    assert_eq!(error_kind(&results[0]), "quota_exceeded", "{results:?}");
    assert!(
        (4..=9).contains(&at),
        "1 KiB burst + 2 s at 1 KiB/s ≈ 7 writes of 400 B; got {at}"
    );
    world.shutdown().await;
}

async fn raw_db(world: &InProcess) -> sqlx::SqlitePool {
    sqlx::SqlitePool::connect(&format!(
        "sqlite:{}",
        world.dir.path().join("palisade.db").display()
    ))
    .await
    .unwrap()
}

#[tokio::test]
async fn values_are_sealed_bound_to_their_row_and_never_stored_in_the_clear() {
    let world = world().await;
    let plaintext = "PLAINTEXT-MARKER-7f3a9c";
    for tenant in ["acme", "globex"] {
        probe(
            &world,
            tenant,
            "kv-probe",
            json!([{ "op": "set", "key": "k", "value": format!("{tenant}:{plaintext}") }]),
        )
        .await;
    }
    world
        .admin(
            Method::PUT,
            "/v1/tenants/acme/secrets/api-key",
            Some(json!({ "value": "SECRET-MARKER-c0ffee" })),
        )
        .await;
    // Every commit is on disk (WAL, synchronous FULL): read the files as an attacker would.
    for file in ["palisade.db", "palisade.db-wal"] {
        let bytes = std::fs::read(world.dir.path().join(file)).unwrap_or_default();
        for marker in [plaintext, "SECRET-MARKER-c0ffee"] {
            assert!(
                !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
                "{marker} found in {file}"
            );
        }
    }

    // Move acme's ciphertext into globex's row: it does not open there.
    let db = raw_db(&world).await;
    sqlx::query(
        "UPDATE kv_entries SET sealed = (SELECT sealed FROM kv_entries WHERE tenant_id = 'acme'), \
         key_version = (SELECT key_version FROM kv_entries WHERE tenant_id = 'acme') \
         WHERE tenant_id = 'globex'",
    )
    .execute(&db)
    .await
    .unwrap();
    let moved = probe(
        &world,
        "globex",
        "kv-probe",
        json!([{ "op": "get", "key": "k" }]),
    )
    .await;
    assert_eq!(error_kind(&moved[0]), "unavailable", "{moved:?}");
    assert!(
        moved[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("authenticate")
    );

    // Flip one bit of acme's ciphertext: refused too.
    let (sealed,): (Vec<u8>,) =
        sqlx::query_as("SELECT sealed FROM kv_entries WHERE tenant_id = 'acme'")
            .fetch_one(&db)
            .await
            .unwrap();
    let mut flipped = sealed.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    sqlx::query("UPDATE kv_entries SET sealed = $1 WHERE tenant_id = 'acme'")
        .bind(flipped)
        .execute(&db)
        .await
        .unwrap();
    let tampered = probe(
        &world,
        "acme",
        "kv-probe",
        json!([{ "op": "get", "key": "k" }]),
    )
    .await;
    assert_eq!(error_kind(&tampered[0]), "unavailable", "{tampered:?}");
    world.shutdown().await;
}

#[tokio::test]
async fn a_wrong_key_encryption_key_refuses_to_start_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let right = "ab".repeat(32);
    let wrong = "cd".repeat(32);
    let open = |kek: &str, previous: Option<std::path::PathBuf>| {
        let mut config = crate::config(dir.path());
        config.kek = palisade_server::KekSource::Hex(kek.to_owned());
        config.previous_kek = previous;
        config
    };
    {
        let (state, _) = palisade_server::build_state(&open(&right, None))
            .await
            .unwrap();
        state
            .store
            .create_tenant(&palisade_store::Actor::system(), "acme")
            .await
            .unwrap();
        state
            .store
            .set_secret(&palisade_store::Actor::system(), "acme", "token", b"s3cret")
            .await
            .unwrap();
        state.store.close().await;
    }
    let digest = |path: std::path::PathBuf| {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(
            std::fs::read(path).unwrap_or_default(),
        ))
    };
    let before = digest(dir.path().join("palisade.db"));
    let refused = palisade_server::build_state(&open(&wrong, None)).await;
    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("does not open it"), "{message}");
    assert_eq!(
        digest(dir.path().join("palisade.db")),
        before,
        "nothing was changed"
    );

    // Rotation: the new key with the previous one given re-wraps; afterwards only the new
    // key opens the state, and the secret is intact.
    let previous = dir.path().join("previous.kek");
    std::fs::write(&previous, &right).unwrap();
    let (state, _) = palisade_server::build_state(&open(&wrong, Some(previous)))
        .await
        .unwrap();
    assert_eq!(
        state
            .store
            .secret_value("acme", "token")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"s3cret"[..])
    );
    let new_kek =
        palisade_store::KeyProvider::id(&palisade_store::LocalKek::parse(&wrong).unwrap());
    let versions = state.store.key_versions("acme").await.unwrap();
    assert!(
        !versions.is_empty() && versions.iter().all(|v| v.kek_id == new_kek),
        "{versions:?}"
    );
    state.store.close().await;
    assert!(
        palisade_server::build_state(&open(&right, None))
            .await
            .is_err()
    );
    assert!(
        palisade_server::build_state(&open(&wrong, None))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn rotated_data_keys_reencrypt_in_the_background_and_old_versions_are_destroyed() {
    let world = world().await;
    probe(
        &world,
        "acme",
        "kv-probe",
        json!([{ "op": "set", "key": "k{i}", "value": "v", "repeat": 50 }]),
    )
    .await;
    world
        .admin(
            Method::PUT,
            "/v1/tenants/acme/secrets/s",
            Some(json!({ "value": "x" })),
        )
        .await;
    let rotated = world
        .admin(Method::POST, "/v1/tenants/acme/keys:rotate", None)
        .await;
    assert!(
        rotated["versions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["version"] == 2)
    );
    let mut status = Value::Null;
    for _ in 0..100 {
        status = world
            .admin(Method::GET, "/v1/tenants/acme/keys", None)
            .await;
        if status["stale_values"] == 0
            && status["versions"]
                .as_array()
                .unwrap()
                .iter()
                .all(|v| v["version"] == 2)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status["stale_values"], 0, "{status}");
    assert!(
        status["versions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["version"] == 2),
        "version 1 keys are destroyed once they seal nothing: {status}"
    );
    let back = probe(
        &world,
        "acme",
        "kv-probe",
        json!([{ "op": "get", "key": "k49" }]),
    )
    .await;
    assert_eq!(back[0]["ok"], "v");
    assert_eq!(
        world
            .state
            .store
            .secret_value("acme", "s")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"x"[..])
    );
    world.shutdown().await;
}

#[tokio::test]
async fn secrets_are_write_only_and_no_extension_can_read_them() {
    let world = world().await;
    ship_probe_as(&world, "acme", "snoop", r#"["self", "secrets", "shared"]"#).await;
    let set = world
        .admin(
            Method::PUT,
            "/v1/tenants/acme/secrets/stripe-key",
            Some(json!({ "value": "sk_live_DO_NOT_LEAK" })),
        )
        .await;
    assert_eq!(set["version"], 1);
    assert!(!set.to_string().contains("DO_NOT_LEAK"));
    world
        .admin(
            Method::PUT,
            "/v1/tenants/acme/secrets/stripe-key",
            Some(json!({ "value": "sk_live_DO_NOT_LEAK_2" })),
        )
        .await;
    let listed = world
        .admin(Method::GET, "/v1/tenants/acme/secrets", None)
        .await;
    assert_eq!(
        listed,
        json!([{ "name": "stripe-key", "version": 2, "created_ms": listed[0]["created_ms"], "created_by": listed[0]["created_by"] }])
    );

    // An extension looking for it by name in every namespace it can reach finds nothing.
    let found = probe(
        &world,
        "acme",
        "snoop",
        json!([
            { "op": "get", "key": "stripe-key" },
            { "op": "get", "ns": "secrets", "key": "stripe-key" },
            { "op": "get", "ns": "shared", "key": "stripe-key" },
            { "op": "list", "ns": "secrets", "prefix": "", "limit": 100 },
        ]),
    )
    .await;
    let text = serde_json::to_string(&found).unwrap();
    assert!(!text.contains("DO_NOT_LEAK"), "{text}");

    // Roles: a developer lists but cannot set; another tenant cannot see they exist.
    let developer = world.token("tenant-developer", Some("acme")).await;
    let answer = world
        .call(
            Some(&developer),
            Method::GET,
            "/v1/tenants/acme/secrets",
            None,
        )
        .await;
    assert_eq!(answer.status, 200);
    let answer = world
        .call(
            Some(&developer),
            Method::PUT,
            "/v1/tenants/acme/secrets/x",
            Some(json!({ "value": "y" })),
        )
        .await;
    assert_eq!(answer.status, 403);
    let outsider = world.token("tenant-admin", Some("globex")).await;
    let answer = world
        .call(
            Some(&outsider),
            Method::GET,
            "/v1/tenants/acme/secrets",
            None,
        )
        .await;
    assert_eq!(answer.status, 404);
    world
        .admin(Method::DELETE, "/v1/tenants/acme/secrets/stripe-key", None)
        .await;
    let listed = world
        .admin(Method::GET, "/v1/tenants/acme/secrets", None)
        .await;
    assert_eq!(listed, json!([]));
    world.shutdown().await;
}

/// A `kv_entries` row as an attacker could copy it: namespace, key, sealed value, key
/// version, value length.
type SealedRow = (String, Vec<u8>, Vec<u8>, i64, i64);

#[tokio::test]
async fn after_decommission_nothing_of_the_tenant_can_be_decrypted() {
    let world = world().await;
    probe(
        &world,
        "acme",
        "kv-probe",
        json!([{ "op": "set", "key": "k", "value": "acme data" }]),
    )
    .await;
    world
        .admin(
            Method::PUT,
            "/v1/tenants/acme/secrets/s",
            Some(json!({ "value": "acme secret" })),
        )
        .await;
    let db = raw_db(&world).await;
    // What an attacker might recover from the disk later: the sealed rows.
    let kept: Vec<SealedRow> = sqlx::query_as(
        "SELECT namespace, key, sealed, key_version, value_bytes FROM kv_entries WHERE tenant_id = 'acme'",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(kept.len(), 1);

    let token = world.token("invoker", Some("acme")).await;
    let tenant = world
        .admin(Method::POST, "/v1/tenants/acme:decommission", None)
        .await;
    assert_eq!(tenant["state"], "decommissioned");
    let (keys,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM data_keys WHERE tenant_id = 'acme'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(keys, 0, "every data key of the tenant is destroyed");
    // Its tokens are revoked, its extensions stop.
    assert_eq!(
        world
            .call(Some(&token), Method::GET, "/v1/whoami", None)
            .await
            .status,
        401
    );
    assert_eq!(
        world
            .invoke(&world.admin, "acme", "kv-probe", b"{}")
            .await
            .kind(),
        "tenant_suspended"
    );
    // Restore the recovered ciphertext: it cannot be opened any more.
    for (namespace, key, sealed, version, bytes) in kept {
        sqlx::query(
            "INSERT INTO kv_entries (tenant_id, namespace, key, sealed, key_version, value_bytes, updated_ms) \
             VALUES ('acme', $1, $2, $3, $4, $5, 0)",
        )
        .bind(namespace)
        .bind(key)
        .bind(sealed)
        .bind(version)
        .bind(bytes)
        .execute(&db)
        .await
        .unwrap();
    }
    let recovered = world
        .state
        .store
        .kv(
            "acme",
            "ext:kv-probe",
            palisade_model::kv::KvOp::Get {
                namespace: String::new(),
                key: b"k".to_vec(),
            },
            palisade_store::KvQuota {
                max_keys: 10,
                max_bytes: 1000,
                namespace_max_keys: 10,
                namespace_max_bytes: 1000,
            },
        )
        .await;
    let error = recovered.err().map(|e| e.message).unwrap_or_default();
    assert!(error.contains("destroyed"), "{error}");
    assert_eq!(
        world.state.store.secret_value("acme", "s").await.unwrap(),
        None
    );
    // globex is untouched.
    let untouched = probe(
        &world,
        "globex",
        "kv-probe",
        json!([{ "op": "set", "key": "k", "value": "v" }]),
    )
    .await;
    assert_eq!(untouched[0]["ok"], "done");
    world.shutdown().await;
}

#[test]
fn kill_9_during_writes_loses_no_acknowledged_write() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), &[]);
    let admin = server.client(&server.admin_token());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    runtime.block_on(async {
        admin.create_tenant("acme").await.unwrap();
        let document = policy("acme", "", PERMIT_KV)["document"]
            .as_str()
            .unwrap()
            .to_owned();
        admin
            .apply_policy(PolicyLayer::Tenant("acme"), &document, "kv")
            .await
            .unwrap();
        let (manifest, wasm) = fixture("fixtures/kv-probe", "1.0.0");
        admin
            .publish("acme", "kv-probe", &manifest, &wasm)
            .await
            .unwrap();
        admin
            .review("acme", "kv-probe", "1.0.0", true, None)
            .await
            .unwrap();
        admin.deploy("acme", "kv-probe", "1.0.0").await.unwrap();
        let writers: Vec<_> = (0..3)
            .map(|writer| {
                let admin = admin.clone();
                let acknowledged = std::sync::Arc::clone(&acknowledged);
                tokio::spawn(async move {
                    for n in 0.. {
                        let key = format!("w{writer}-{n}");
                        let input = json!({ "ops": [{ "op": "set", "key": key, "value": key }] });
                        match admin
                            .invoke(
                                "acme",
                                "kv-probe",
                                input.to_string().into_bytes(),
                                "application/json",
                            )
                            .await
                        {
                            Ok(answer)
                                if String::from_utf8_lossy(&answer.body).contains("done") =>
                            {
                                acknowledged.lock().unwrap().push(key);
                            }
                            _ => return,
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(2_000)).await;
        server.kill_9();
        for writer in writers {
            writer.await.unwrap();
        }
    });
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 10,
        "only {} writes before the kill",
        acknowledged.len()
    );
    let server = ServerProcess::start(data.path(), &[]);
    let admin = server.client(&server.admin_token());
    runtime.block_on(async {
        for chunk in acknowledged.chunks(100) {
            let ops: Vec<Value> = chunk
                .iter()
                .map(|key| json!({ "op": "get", "key": key }))
                .collect();
            let answer = admin
                .invoke(
                    "acme",
                    "kv-probe",
                    json!({ "ops": ops }).to_string().into_bytes(),
                    "application/json",
                )
                .await
                .unwrap();
            let results: Vec<Value> = serde_json::from_slice(&answer.body).unwrap();
            for (key, result) in chunk.iter().zip(results) {
                assert_eq!(
                    result["ok"],
                    Value::String(key.clone()),
                    "acknowledged write {key} is lost"
                );
            }
        }
    });
    assert!(server.terminate().success());
}

//! Crash safety: `kill -9` of the server in the middle of a burst of publishes and deploys.
//! After a restart the store is consistent (every version has its verified artifact, every
//! change its audit entry and no audit entry lacks its change), every change the server
//! acknowledged is there, nothing half-written is visible, and `palisade audit verify` passes.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_client::Client;

use crate::{PALISADE, ServerProcess, fixture};

/// Publishes, approves and deploys versions `worker.N` until the server stops answering;
/// records what was acknowledged.
async fn burst(client: Client, worker: u64, acknowledged: Arc<Mutex<BTreeSet<(String, String)>>>) {
    let (manifest, wasm) = fixture("fixtures/echo", "1.0.0");
    for n in 0.. {
        let version = format!("{worker}.{n}.0");
        let text = manifest.replacen(
            "version = \"1.0.0\"",
            &format!("version = \"{version}\""),
            1,
        );
        if client.publish("acme", "echo", &text, &wasm).await.is_err() {
            return;
        }
        acknowledged
            .lock()
            .unwrap()
            .insert(("publish".into(), version.clone()));
        if client
            .review("acme", "echo", &version, true, None)
            .await
            .is_err()
        {
            return;
        }
        acknowledged
            .lock()
            .unwrap()
            .insert(("approve".into(), version.clone()));
        if client.deploy("acme", "echo", &version).await.is_err() {
            return;
        }
        acknowledged
            .lock()
            .unwrap()
            .insert(("deploy".into(), version));
    }
}

#[test]
fn kill_9_during_a_burst_loses_nothing_acknowledged_and_leaves_the_store_consistent() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), &[]);
    let admin = server.client(&server.admin_token());
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        admin.create_tenant("acme").await.unwrap();
        let tasks: Vec<_> = (1..=4)
            .map(|worker| tokio::spawn(burst(admin.clone(), worker, Arc::clone(&acknowledged))))
            .collect();
        // Let the burst get going (the first publish starts the tenant's jailed worker).
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        server.kill_9();
        for task in tasks {
            task.await.unwrap();
        }
    });
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged
            .iter()
            .filter(|(what, _)| what == "deploy")
            .count()
            >= 3,
        "the burst barely started: {acknowledged:?}"
    );

    // The store, opened cold.
    runtime.block_on(async {
        let store =
            palisade_store::Store::open(data.path(), palisade_store::StoreOptions::default())
                .await
                .unwrap();
        let problems = store.check_consistency().await.unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        let versions = store.versions("acme", "echo").await.unwrap();
        let deployments = store.deployments("acme", "echo").await.unwrap();
        let audit = store.audit_entries(0, 100_000).await.unwrap();
        for (what, version) in &acknowledged {
            let found = match what.as_str() {
                "publish" => versions.iter().any(|v| &v.version == version),
                "approve" => versions.iter().any(|v| {
                    &v.version == version && v.state == palisade_api::VersionState::Approved
                }),
                _ => deployments.iter().any(|d| &d.version == version),
            };
            assert!(found, "acknowledged {what} of {version} is lost");
        }
        // Every stored change has its audit entry and every entry its change.
        let count = |action: &str| audit.iter().filter(|e| e.action == action).count();
        assert_eq!(count("extension.publish"), versions.len());
        assert_eq!(
            count("extension.approve"),
            versions
                .iter()
                .filter(|v| v.state == palisade_api::VersionState::Approved)
                .count()
        );
        assert_eq!(count("deployment.deploy"), deployments.len());
        // Nothing half-written: no temporary artifact is left, every artifact is named by a
        // version or is a complete, verifiable leftover of a publish that did not commit.
        for digest in store.artifacts().list().unwrap() {
            assert!(store.artifact(&digest).await.is_ok());
        }
        store.close().await;
    });
    let leftovers: Vec<_> = walk(&data.path().join("artifacts"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let verify = std::process::Command::new(PALISADE)
        .args(["audit", "verify", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );

    // And the server comes back and serves the active version.
    let server = ServerProcess::start(data.path(), &[]);
    let admin = server.client(&server.admin_token());
    runtime.block_on(async {
        let answer = admin
            .invoke("acme", "echo", b"alive".to_vec(), "text/plain")
            .await
            .unwrap();
        assert_eq!(answer.body, b"alive");
    });
    assert!(server.terminate().success());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

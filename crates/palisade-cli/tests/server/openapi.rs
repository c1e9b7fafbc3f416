//! `/openapi.json` is generated from the code and kept in sync: it documents exactly the
//! routes the router serves, every documented operation is routed, and the committed copy
//! (`crates/palisade-server/openapi.json`, for readers and client generators) matches it.
//! Regenerate the copy with `PALISADE_BLESS=1 cargo test -p palisade-cli --test server openapi`.

use axum::http::Method;

use crate::InProcess;

#[test]
fn the_document_describes_exactly_the_routes() {
    let mut documented = palisade_server::openapi::operations();
    documented.sort();
    let mut routed: Vec<(String, String)> = palisade_server::routes::ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    routed.sort();
    assert_eq!(documented, routed);
}

#[test]
fn the_committed_copy_matches_the_generated_document() {
    let path = palisade_testkit::repo_root().join("crates/palisade-server/openapi.json");
    let generated = palisade_server::openapi::document();
    if std::env::var_os("PALISADE_BLESS").is_some() {
        std::fs::write(&path, format!("{generated}\n")).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed.trim_end() == generated.trim_end(),
        "{} is stale: regenerate it with PALISADE_BLESS=1 cargo test -p palisade-cli --test server openapi",
        path.display()
    );
    let document: serde_json::Value = serde_json::from_str(&generated).unwrap();
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3."))
    );
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let world = InProcess::new().await;
    for (method, path) in palisade_server::routes::ROUTES {
        let concrete = path
            .replace("{tenant}", "acme")
            .replace("{name}", "echo")
            .replace("{version}", "1.0.0")
            .replace("{token}", "tok-0");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let answer = world
            .call(Some(&world.admin), method.clone(), &concrete, None)
            .await;
        let message = answer.json["error"]["message"].as_str().unwrap_or("");
        assert!(
            !message.starts_with(palisade_server::routes::NO_ROUTE) && answer.status != 405,
            "{method} {concrete} is documented but not routed: {} {}",
            answer.status,
            answer.json
        );
    }
    // And what is not documented is not routed.
    for (method, path) in [
        (Method::POST, "/v1/tenants/acme:explode"),
        (Method::POST, "/v1/tenants/acme/extensions/echo:detonate"),
        (Method::GET, "/v1/secrets"),
        (Method::PATCH, "/v1/tenants"),
    ] {
        let answer = world
            .call(Some(&world.admin), method.clone(), path, None)
            .await;
        assert!(
            matches!(answer.status.as_u16(), 404 | 405),
            "{method} {path}: {}",
            answer.status
        );
    }
    world.shutdown().await;
}

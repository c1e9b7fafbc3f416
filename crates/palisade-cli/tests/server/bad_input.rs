//! Bad input to every kind of endpoint: oversized bodies, malformed JSON, unknown fields,
//! invalid names and versions, bad components, wrong media types. Each gets a 4xx with a
//! typed kind and a message that says what is wrong, and nothing is stored.

use axum::body::Body;
use axum::http::{Method, Request};
use serde_json::json;

use crate::{InProcess, fixture, publish_body};

fn raw(
    method: Method,
    path: &str,
    token: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Request<Body> {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"));
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    request.body(Body::from(body)).unwrap()
}

#[tokio::test]
async fn bad_input_is_a_typed_4xx_and_stores_nothing() {
    let world = InProcess::new().await;
    world
        .admin(Method::POST, "/v1/tenants", Some(json!({ "id": "acme" })))
        .await;
    world.ship("acme", "fixtures/echo", "1.0.0").await;
    let admin = world.admin.clone();
    let audit_before = world.audit_len().await;

    let (manifest, wasm) = fixture("fixtures/echo", "1.1.0");
    let (forbidden_manifest, forbidden_wasm) = fixture("fixtures/forbidden-import", "1.0.0");
    let publish = "/v1/tenants/acme/extensions/echo/versions";
    let mut tampered = publish_body(&manifest, &wasm);
    tampered["sha256"] = json!("0".repeat(64));
    let pinned = manifest.replace(
        "[component]",
        &format!("[component]\nsha256 = \"{}\"", "a".repeat(64)),
    );
    let cases: Vec<(&str, Request<Body>, u16, &str, &str)> = vec![
        (
            "malformed JSON",
            raw(Method::POST, "/v1/tenants", &admin, Some("application/json"), b"{\"id\":".to_vec()),
            400, "invalid_request", "EOF",
        ),
        (
            "unknown field",
            raw(Method::POST, "/v1/tenants", &admin, Some("application/json"), br#"{"id":"globex","plan":"gold"}"#.to_vec()),
            400, "invalid_request", "unknown field `plan`",
        ),
        (
            "wrong type",
            raw(Method::POST, "/v1/tenants", &admin, Some("application/json"), br#"{"id":7}"#.to_vec()),
            400, "invalid_request", "invalid type",
        ),
        (
            "invalid tenant name",
            raw(Method::POST, "/v1/tenants", &admin, Some("application/json"), br#"{"id":"Globex Corp"}"#.to_vec()),
            400, "invalid_request", "not a valid",
        ),
        (
            "no JSON media type",
            raw(Method::POST, "/v1/tenants", &admin, Some("text/plain"), br#"{"id":"globex"}"#.to_vec()),
            415, "unsupported_media_type", "application/json",
        ),
        (
            "oversized JSON body",
            raw(Method::POST, "/v1/tenants", &admin, Some("application/json"),
                format!("{{\"id\":\"{}\"}}", "x".repeat(2 << 20)).into_bytes()),
            413, "payload_too_large", "",
        ),
        (
            "invalid role",
            raw(Method::POST, "/v1/tokens", &admin, Some("application/json"),
                br#"{"name":"x","role":"root"}"#.to_vec()),
            400, "invalid_request", "unknown variant `root`",
        ),
        (
            "token lifetime out of range",
            raw(Method::POST, "/v1/tokens", &admin, Some("application/json"),
                br#"{"name":"x","role":"platform-reviewer","expires_in_s":999999999}"#.to_vec()),
            400, "invalid_request", "expires_in_s",
        ),
        (
            "malformed manifest",
            raw(Method::POST, publish, &admin, Some("application/json"),
                publish_body(&manifest.replace("[limits]", "[limits]\ncpu = 3"), &wasm).to_string().into_bytes()),
            422, "invalid_manifest", "unknown field `cpu`",
        ),
        (
            "manifest for another extension",
            raw(Method::POST, "/v1/tenants/acme/extensions/other/versions", &admin, Some("application/json"),
                publish_body(&manifest, &wasm).to_string().into_bytes()),
            400, "invalid_request", "not `other`",
        ),
        (
            "invalid extension name",
            raw(Method::POST, "/v1/tenants/acme/extensions/Bad_Name/versions", &admin, Some("application/json"),
                publish_body(&manifest, &wasm).to_string().into_bytes()),
            400, "invalid_request", "not a valid extension name",
        ),
        (
            "digest mismatch",
            raw(Method::POST, publish, &admin, Some("application/json"), tampered.to_string().into_bytes()),
            422, "invalid_component", "declared",
        ),
        (
            "pinned digest mismatch",
            raw(Method::POST, publish, &admin, Some("application/json"),
                publish_body(&pinned, &wasm).to_string().into_bytes()),
            422, "invalid_component", "pins component.sha256",
        ),
        (
            "not base64",
            raw(Method::POST, publish, &admin, Some("application/json"),
                json!({"manifest": manifest, "component_base64": "%%%", "sha256": "0".repeat(64)}).to_string().into_bytes()),
            400, "invalid_request", "base64",
        ),
        (
            "garbage component",
            raw(Method::POST, publish, &admin, Some("application/json"),
                publish_body(&manifest, b"\0asm garbage").to_string().into_bytes()),
            422, "invalid_component", "",
        ),
        (
            "import outside the catalog",
            raw(Method::POST, "/v1/tenants/acme/extensions/forbidden-import/versions", &admin, Some("application/json"),
                publish_body(&forbidden_manifest, &forbidden_wasm).to_string().into_bytes()),
            422, "import_not_allowed", "",
        ),
        (
            "the version exists",
            raw(Method::POST, publish, &admin, Some("application/json"),
                publish_body(&fixture("fixtures/echo", "1.0.0").0, &wasm).to_string().into_bytes()),
            409, "conflict", "immutable",
        ),
        (
            "invalid version",
            raw(Method::POST, "/v1/tenants/acme/extensions/echo/deployments", &admin, Some("application/json"),
                br#"{"version":"1.x"}"#.to_vec()),
            400, "invalid_request", "semver",
        ),
        (
            "unknown version",
            raw(Method::POST, "/v1/tenants/acme/extensions/echo/deployments", &admin, Some("application/json"),
                br#"{"version":"9.9.9"}"#.to_vec()),
            404, "not_found", "does not exist",
        ),
        (
            "rollback to a version never deployed",
            raw(Method::POST, "/v1/tenants/acme/extensions/echo:rollback", &admin, Some("application/json"),
                br#"{"to":"9.9.9"}"#.to_vec()),
            409, "conflict", "never deployed",
        ),
        (
            "bad rollback body",
            raw(Method::POST, "/v1/tenants/acme/extensions/echo:rollback", &admin, Some("application/json"),
                br#"{"to":"1.0.0","force":true}"#.to_vec()),
            400, "invalid_request", "unknown field `force`",
        ),
        (
            "input over the extension's limit",
            raw(Method::POST, "/v1/tenants/acme/extensions/echo:invoke", &admin, Some("text/plain"),
                vec![b'x'; 2 << 20]),
            413, "input_too_large", "at most",
        ),
        (
            "unknown query parameter",
            raw(Method::POST, "/v1/tenants/acme/extensions/echo:invoke?verbose=1", &admin, Some("text/plain"),
                b"hi".to_vec()),
            400, "invalid_request", "unknown field `verbose`",
        ),
        (
            "invalid policy document",
            raw(Method::PUT, "/v1/tenants/acme/policy", &admin, Some("application/json"),
                json!({"document": "format = 1\nlayer = \"tenant\"\ntenant = \"acme\"\n[limits]\nfuel = 0\n", "reason": "x"}).to_string().into_bytes()),
            400, "invalid_request", "fuel",
        ),
        (
            "policy for another tenant",
            raw(Method::PUT, "/v1/tenants/acme/policy", &admin, Some("application/json"),
                json!({"document": "format = 1\nlayer = \"tenant\"\ntenant = \"globex\"\n", "reason": "x"}).to_string().into_bytes()),
            400, "invalid_request", "not tenant:acme",
        ),
        (
            "policy change without a reason",
            raw(Method::PUT, "/v1/tenants/acme/policy", &admin, Some("application/json"),
                json!({"document": "format = 1\nlayer = \"tenant\"\ntenant = \"acme\"\n", "reason": " "}).to_string().into_bytes()),
            400, "invalid_request", "reason",
        ),
        (
            "bad audit anchor",
            raw(Method::GET, "/v1/audit/verify?anchor=12", &admin, None, Vec::new()),
            400, "invalid_request", "anchor",
        ),
    ];
    for (what, request, status, kind, text) in cases {
        let answer = world.raw(request).await;
        let message = answer.json["error"]["message"].as_str().unwrap_or("");
        assert_eq!(
            (answer.status.as_u16(), answer.kind()),
            (status, kind),
            "{what}: {}",
            answer.json
        );
        assert!(
            message.contains(text),
            "{what}: message {message:?} lacks {text:?}"
        );
        assert!(answer.json["request_id"].as_str().is_some(), "{what}");
    }

    // Nothing was stored: no new audit entry, tenant, version or deployment.
    assert_eq!(world.audit_len().await, audit_before);
    let tenants = world.admin(Method::GET, "/v1/tenants", None).await;
    assert_eq!(tenants.as_array().map(Vec::len), Some(1));
    let echo = world
        .admin(Method::GET, "/v1/tenants/acme/extensions/echo", None)
        .await;
    assert_eq!(echo["versions"].as_array().map(Vec::len), Some(1));
    assert_eq!(echo["active"]["version"], "1.0.0");
    let extensions = world
        .admin(Method::GET, "/v1/tenants/acme/extensions", None)
        .await;
    assert_eq!(extensions.as_array().map(Vec::len), Some(1));
    // And the extension still works.
    let answer = world.invoke(&admin, "acme", "echo", b"still here").await;
    assert_eq!(
        (answer.status.as_u16(), answer.bytes.as_slice()),
        (200, &b"still here"[..])
    );
    world.shutdown().await;
}

#[tokio::test]
async fn an_oversized_publish_is_refused_with_413() {
    let world = InProcess::new().await;
    world
        .admin(Method::POST, "/v1/tenants", Some(json!({ "id": "acme" })))
        .await;
    let body = vec![b' '; palisade_server::routes::MAX_PUBLISH_BODY + 1];
    let answer = world
        .raw(raw(
            Method::POST,
            "/v1/tenants/acme/extensions/echo/versions",
            &world.admin,
            Some("application/json"),
            body,
        ))
        .await;
    assert_eq!(
        (answer.status.as_u16(), answer.kind()),
        (413, "payload_too_large")
    );
    world.shutdown().await;
}

//! The egress gateway from inside real guests (the http-probe fixture, and waki-probe built on
//! a third-party wasi:http library) in jailed workers, against HTTP servers on loopback (the
//! test baseline allows 127.0.0.1 explicitly: CIDR in `[egress] allow_private`, exception in
//! the Cedar forbid). Every refusal is asserted by its kind and reason, and nothing reaches
//! the upstream that should not.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::http::Method;
use palisade_client::PolicyLayer;
use serde_json::{Value, json};

use crate::{InProcess, fixture, publish_body};

/// A local upstream: what the gateway talks to, what it counts, and the headers of the last
/// request it got (as the SaaS on the other side would see them).
struct Upstream {
    port: u16,
    hits: Arc<AtomicUsize>,
    last_headers: Arc<std::sync::Mutex<HashMap<String, String>>>,
}

async fn upstream() -> Upstream {
    use axum::response::IntoResponse;
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&hits);
    let last_headers = Arc::new(std::sync::Mutex::new(HashMap::new()));
    let seen = Arc::clone(&last_headers);
    let app = axum::Router::new()
        .route("/ok", axum::routing::get(|| async { "hello from upstream" }).post(|body: String| async move { format!("got {} bytes", body.len()) }))
        .route(
            "/echo",
            axum::routing::get(|headers: axum::http::HeaderMap| async move {
                let map: serde_json::Map<String, Value> = headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), Value::from(v.to_str().unwrap_or("?"))))
                    .collect();
                axum::Json(Value::Object(map))
            }),
        )
        .route(
            "/big",
            axum::routing::get(|axum::extract::Query(q): axum::extract::Query<HashMap<String, usize>>| async move {
                vec![b'b'; q.get("n").copied().unwrap_or(0)]
            }),
        )
        .route(
            "/redirect",
            axum::routing::get(|axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>| async move {
                (
                    axum::http::StatusCode::FOUND,
                    [(axum::http::header::LOCATION, q.get("to").cloned().unwrap_or_default())],
                )
                    .into_response()
            }),
        )
        .route("/admin", axum::routing::get(|| async { "the admin panel" }))
        .layer(axum::middleware::from_fn(move |request: axum::extract::Request, next: axum::middleware::Next| {
            let counted = Arc::clone(&counted);
            let seen = Arc::clone(&seen);
            async move {
                counted.fetch_add(1, Ordering::Relaxed);
                *seen.lock().unwrap() = request
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_owned()))
                    .collect();
                next.run(request).await
            }
        }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Upstream {
        port,
        hits,
        last_headers,
    }
}

/// A slowloris upstream: answers with a 100-byte body, one byte every 200 ms.
async fn slow_upstream() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                let _ = socket.read(&mut buffer).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
                    .await;
                for _ in 0..100 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if socket.write_all(b".").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

fn tenant_policy(port: u16, limits: &str, egress: &str) -> Value {
    json!({
        "document": format!(
            "format = 1\nlayer = \"tenant\"\ntenant = \"acme\"\n\n[limits]\n{limits}\n\n{egress}\n\n[cedar]\ntext = '''\n\
             @id(\"upstream\")\n\
             permit (principal, action == Action::\"http:request\", resource is Host)\n\
             when {{ resource.hostname == \"upstream.test\" && resource.port == {port} &&\n\
                     context has method && [\"GET\", \"POST\"].contains(context.method) }};\n\
             @id(\"no-admin\")\n\
             forbid (principal, action == Action::\"http:request\", resource is Host)\n\
             when {{ resource.path like \"/admin*\" }};\n'''\n"
        ),
        "reason": "test",
    })
}

struct World {
    world: InProcess,
    upstream: Upstream,
}

/// Tenant `acme` with the probe deployed for `destinations`, resolving the test names.
async fn world(limits: &str, egress: &str, destinations: &[&str]) -> World {
    let upstream = upstream().await;
    let resolver = palisade_egress::StaticResolver {
        hosts: HashMap::from([
            (
                "upstream.test".to_owned(),
                vec![IpAddr::from([127, 0, 0, 1])],
            ),
            ("other.test".to_owned(), vec![IpAddr::from([127, 0, 0, 1])]),
            ("rebind.test".to_owned(), vec![IpAddr::from([10, 0, 0, 5])]),
            (
                "metadata.test".to_owned(),
                vec![IpAddr::from([169, 254, 169, 254])],
            ),
            (
                "mapped.test".to_owned(),
                vec!["::ffff:127.0.0.1".parse().unwrap()],
            ),
        ]),
    };
    let world = InProcess::with(|config| config.resolver = Arc::new(resolver)).await;
    world
        .admin(
            Method::PUT,
            "/v1/policies/baseline",
            Some(json!({ "document": palisade_testkit::loopback_baseline(), "reason": "loopback for tests" })),
        )
        .await;
    world
        .admin(Method::POST, "/v1/tenants", Some(json!({ "id": "acme" })))
        .await;
    world
        .admin(
            Method::PUT,
            "/v1/tenants/acme/policy",
            Some(tenant_policy(upstream.port, limits, egress)),
        )
        .await;
    ship_with(&world, "fixtures/http-probe", "http-probe", destinations).await;
    World { world, upstream }
}

async fn ship_with(world: &InProcess, fixture_dir: &str, name: &str, destinations: &[&str]) {
    let (manifest, wasm) = fixture(fixture_dir, "1.0.0");
    let list = destinations
        .iter()
        .map(|d| format!("{d:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let manifest = manifest.replace(
        "http = [\"https://api.example.com/*\"]",
        &format!("http = [{list}]"),
    );
    world
        .admin(
            Method::POST,
            &format!("/v1/tenants/acme/extensions/{name}/versions"),
            Some(publish_body(&manifest, &wasm)),
        )
        .await;
    world
        .admin(
            Method::POST,
            &format!("/v1/tenants/acme/extensions/{name}/versions/1.0.0:approve"),
            None,
        )
        .await;
    world
        .admin(
            Method::POST,
            &format!("/v1/tenants/acme/extensions/{name}/deployments"),
            Some(json!({ "version": "1.0.0" })),
        )
        .await;
}

async fn probe(world: &InProcess, requests: Value) -> Vec<Value> {
    let request = axum::http::Request::builder()
        .method(Method::POST)
        .uri("/v1/tenants/acme/extensions/http-probe:invoke")
        .header("authorization", format!("Bearer {}", world.admin))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(
            json!({ "requests": requests }).to_string(),
        ))
        .unwrap();
    let answer = world.raw(request).await;
    assert_eq!(answer.status, 200, "{}", answer.json);
    answer.json.as_array().cloned().unwrap_or_default()
}

fn refusal(result: &Value) -> (&str, &str) {
    (
        result["error"]["kind"].as_str().unwrap_or(""),
        result["error"]["message"].as_str().unwrap_or(""),
    )
}

const DESTINATIONS: &[&str] = &[
    "http://upstream.test:*/*",
    "http://other.test:*/*",
    "http://rebind.test:*/*",
    "http://metadata.test:*/*",
    "http://mapped.test:*/*",
    "http://127.0.0.1:*/*",
    "http://169.254.169.254/*",
];

#[tokio::test]
async fn allowed_calls_go_through_and_every_other_one_is_refused_with_its_reason() {
    let World { world, upstream } = world("", "", DESTINATIONS).await;
    let port = upstream.port;
    let at = |host: &str, path: &str| format!("http://{host}:{port}{path}");
    let results = probe(
        &world,
        json!([
            { "url": at("upstream.test", "/ok") },
            { "method": "POST", "url": at("upstream.test", "/ok"), "body": "twelve bytes" },
            { "url": at("other.test", "/ok") },
            { "url": format!("http://upstream.test:{}/ok", port + 1) },
            { "method": "DELETE", "url": at("upstream.test", "/ok") },
            { "url": at("upstream.test", "/admin") },
            { "url": "http://elsewhere.test/ok" },
            { "url": at("rebind.test", "/ok") },
            { "url": at("metadata.test", "/ok") },
            { "url": "http://169.254.169.254/latest/meta-data/" },
            { "url": at("mapped.test", "/ok") },
            { "url": at("127.0.0.1", "/ok") },
            { "url": format!("https://upstream.test:{port}/ok") },
        ]),
    )
    .await;
    assert_eq!(results[0]["status"], 200, "{:?}", results[0]);
    assert_eq!(results[0]["body"], "hello from upstream");
    assert_eq!(results[1]["body"], "got 12 bytes");
    let expect = |index: usize, kind: &str, reason: &str| {
        let (found, message) = refusal(&results[index]);
        assert_eq!(found, kind, "request {index}: {:?}", results[index]);
        assert!(
            message.contains(reason),
            "request {index}: {message:?} lacks {reason:?}"
        );
    };
    expect(2, "egress_denied", "denied by policy");
    expect(3, "egress_denied", "denied by policy");
    expect(4, "egress_denied", "denied by policy");
    expect(5, "egress_denied", "no-admin");
    expect(6, "egress_denied", "the manifest does not request");
    // The name resolves to a private address: refused on the address, never connected.
    expect(7, "egress_denied", "10.0.0.5 is a private address");
    expect(8, "egress_denied", "link-local");
    expect(9, "egress_denied", "link-local");
    expect(10, "egress_denied", "IPv4-mapped");
    // Allowed CIDR and permitted by the baseline, but the tenant only permits upstream.test.
    expect(11, "egress_denied", "denied by policy");
    // https to the plain-HTTP upstream: not requested by the manifest (http only).
    expect(12, "egress_denied", "the manifest does not request");
    assert_eq!(
        upstream.hits.load(Ordering::Relaxed),
        2,
        "only the two allowed calls reached it"
    );
    world.shutdown().await;
}

#[tokio::test]
async fn request_bodies_over_one_stream_write_go_out_whole() {
    // The SDK wrote the whole body before sending the request; a body stream holds one
    // chunk until the request is sent, so bodies of 8 KiB or more hung until the deadline.
    let World { world, upstream } = world("", "", DESTINATIONS).await;
    let url = format!("http://upstream.test:{}/ok", upstream.port);
    let results = probe(
        &world,
        json!([
            { "method": "POST", "url": url, "body_len": 8192 },
            { "method": "POST", "url": url, "body_len": 65_537 },
        ]),
    )
    .await;
    assert_eq!(results[0]["body"], "got 8192 bytes", "{:?}", results[0]);
    assert_eq!(results[1]["body"], "got 65537 bytes", "{:?}", results[1]);
    world.shutdown().await;
}

#[tokio::test]
async fn redirects_are_not_followed_by_the_gateway_and_each_hop_is_checked() {
    let World { world, upstream } = world("", "", DESTINATIONS).await;
    let port = upstream.port;
    let results = probe(
        &world,
        json!([
            { "url": format!("http://upstream.test:{port}/redirect?to=http://metadata.test:{port}/ok") },
            { "url": format!("http://metadata.test:{port}/ok") },
        ]),
    )
    .await;
    assert_eq!(results[0]["status"], 302);
    assert_eq!(
        results[0]["headers"]["location"],
        format!("http://metadata.test:{port}/ok")
    );
    let (kind, message) = refusal(&results[1]);
    assert_eq!(kind, "egress_denied");
    assert!(message.contains("169.254.169.254"), "{message}");

    // A standard library that follows redirects by itself gets the same refusal for the hop.
    ship_with(&world, "fixtures/waki-probe", "waki-probe", DESTINATIONS).await;
    let answer = world
        .invoke(
            &world.admin,
            "acme",
            "waki-probe",
            format!("http://upstream.test:{port}/ok").as_bytes(),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.json);
    assert_eq!(
        String::from_utf8_lossy(&answer.bytes),
        "200 hello from upstream"
    );
    let answer = world
        .invoke(
            &world.admin,
            "acme",
            "waki-probe",
            format!("http://metadata.test:{port}/ok").as_bytes(),
        )
        .await;
    assert_eq!(answer.kind(), "guest_error");
    assert!(
        answer.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("egress_denied"),
        "{}",
        answer.json
    );
    world.shutdown().await;
}

#[tokio::test]
async fn oversized_and_slow_responses_are_cut_off() {
    let World { world, upstream } = world(
        "egress_bytes = \"100 KiB\"\negress_timeout = \"1s\"",
        "",
        DESTINATIONS,
    )
    .await;
    let port = upstream.port;
    let slow = slow_upstream().await;
    world
        .admin(
            Method::PUT,
            "/v1/tenants/acme/policy",
            Some(
                tenant_policy(
                    port,
                    "egress_bytes = \"100 KiB\"\negress_timeout = \"1s\"",
                    "",
                )
                .to_string()
                .replace(
                    "resource.port == ",
                    &format!("[{slow}].contains(resource.port) || resource.port == "),
                )
                .parse::<Value>()
                .unwrap(),
            ),
        )
        .await;
    let started = Instant::now();
    let results = probe(
        &world,
        json!([
            { "url": format!("http://upstream.test:{port}/big?n=50000") },
            { "url": format!("http://upstream.test:{port}/big?n=200000") },
            { "url": format!("http://upstream.test:{slow}/slow") },
        ]),
    )
    .await;
    assert_eq!(results[0]["bytes"], 50_000);
    let (kind, message) = refusal(&results[1]);
    assert_eq!(kind, "failed", "{:?}", results[1]);
    assert!(message.contains("egress_bytes"), "{message}");
    let (kind, message) = refusal(&results[2]);
    assert_eq!(kind, "failed");
    assert!(
        message.contains("egress_timeout") || message.contains("Timeout"),
        "{message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the slow answer was cut off at egress_timeout"
    );
    world.shutdown().await;
}

#[tokio::test]
async fn request_and_bandwidth_quotas_slow_down_then_refuse() {
    // Two requests per invocation.
    let World { world, upstream } = world("egress_requests = 2", "", DESTINATIONS).await;
    let ok = format!("http://upstream.test:{}/ok", upstream.port);
    let results = probe(&world, json!([{ "url": ok, "repeat": 3 }])).await;
    let (kind, message) = refusal(&results[0]);
    assert_eq!(kind, "egress_quota_exceeded");
    assert!(message.contains("egress_requests"), "{message}");
    world.shutdown().await;

    // 20 KiB/s for the tenant, shared by two invocations at once: 2 × 30 KB cannot both fit
    // in one second's burst, so they slow down; over the deadline they fail.
    let World { world, upstream } = self::world(
        "bandwidth = \"20 KiB\"\nwall_time = \"3s\"",
        "",
        DESTINATIONS,
    )
    .await;
    let big = format!("http://upstream.test:{}/big?n=15000", upstream.port);
    let started = Instant::now();
    let (a, b) = tokio::join!(
        probe(&world, json!([{ "url": big, "repeat": 2 }])),
        probe(&world, json!([{ "url": big, "repeat": 2 }])),
    );
    let elapsed = started.elapsed();
    assert!(
        a[0]["bytes"] == 15_000 && b[0]["bytes"] == 15_000,
        "{a:?} {b:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(1_000),
        "60 KB at 20 KiB/s took only {elapsed:?}"
    );
    let results = probe(&world, json!([{ "url": big, "repeat": 10 }])).await;
    let (kind, message) = refusal(&results[0]);
    assert_eq!(kind, "egress_quota_exceeded", "{results:?}");
    assert!(message.contains("bandwidth"), "{message}");
    world.shutdown().await;
}

#[tokio::test]
async fn injected_credentials_never_reach_the_guest() {
    let egress = "[[egress.credentials]]\nhost = \"upstream.test\"\nheader = \"authorization\"\nsecret = \"upstream-key\"\nformat = \"Bearer {secret}\"\n\n[[egress.tokens]]\nhost = \"upstream.test\"\nheader = \"x-palisade-token\"\naudience = \"upstream-api\"\nttl = \"30s\"";
    let World { world, upstream } = world("", egress, DESTINATIONS).await;
    world
        .admin(
            Method::PUT,
            "/v1/tenants/acme/secrets/upstream-key",
            Some(json!({ "value": "sk_live_NEVER_SEEN_42" })),
        )
        .await;
    let echo = format!("http://upstream.test:{}/echo", upstream.port);
    // The guest tries: asks the upstream to echo every header, sends its own Authorization,
    // and logs everything it gets.
    let request = axum::http::Request::builder()
        .method(Method::POST)
        .uri("/v1/tenants/acme/extensions/http-probe:invoke?envelope=true")
        .header("authorization", format!("Bearer {}", world.admin))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(
            json!({ "requests": [{ "url": echo, "headers": { "authorization": "Bearer guest-chosen" } }] }).to_string(),
        ))
        .unwrap();
    let answer = world.raw(request).await;
    assert_eq!(answer.status, 200, "{}", answer.json);
    let everything = answer.json.to_string();
    assert!(
        !everything.contains("NEVER_SEEN"),
        "the secret leaked to the guest: {everything}"
    );
    let results: Vec<Value> =
        serde_json::from_str(answer.json["output"].as_str().unwrap()).unwrap();
    let echoed: Value = serde_json::from_str(results[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        echoed["authorization"], "Bearer [redacted]",
        "the gateway set it and scrubbed the echo"
    );
    assert_ne!(
        echoed["authorization"], "Bearer guest-chosen",
        "the guest cannot choose the credential"
    );

    assert_eq!(
        echoed["x-palisade-token"], "Bearer [redacted]",
        "tokens are scrubbed too"
    );
    // What the upstream really got: the secret, set by the gateway.
    let seen = upstream.last_headers.lock().unwrap().clone();
    assert_eq!(
        seen.get("authorization").map(String::as_str),
        Some("Bearer sk_live_NEVER_SEEN_42")
    );
    // And the secret never appears in the server's logs or the guest's captured logs.
    assert!(!answer.json["logs"].to_string().contains("NEVER_SEEN"));
    world.shutdown().await;
}

#[tokio::test]
async fn short_lived_tokens_verify_against_the_published_keys() {
    let egress = "[[egress.tokens]]\nhost = \"upstream.test\"\nheader = \"x-saas-token\"\naudience = \"saas-api\"\nttl = \"30s\"";
    let World { world, upstream } = world("", egress, DESTINATIONS).await;
    // The guest sees the token scrubbed; the SaaS (the upstream) gets it and verifies it
    // against the server's published keys.
    let results = probe(
        &world,
        json!([{ "url": format!("http://upstream.test:{}/echo", upstream.port) }]),
    )
    .await;
    let echoed: Value = serde_json::from_str(results[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(echoed["x-saas-token"], "Bearer [redacted]");
    let seen = upstream.last_headers.lock().unwrap().clone();
    let token = seen["x-saas-token"]
        .strip_prefix("Bearer ")
        .unwrap()
        .to_owned();
    let jwks = world
        .call(None, Method::GET, "/.well-known/jwks.json", None)
        .await;
    assert_eq!(jwks.status, 200);
    let keys: palisade_egress::Jwks = serde_json::from_value(jwks.json.clone()).unwrap();
    assert_eq!(
        (keys.keys[0].kty.as_str(), keys.keys[0].crv.as_str()),
        ("OKP", "Ed25519")
    );
    let now = palisade_policy::now_unix();
    let claims = palisade_egress::tokens::verify(&token, &keys, Some("saas-api"), now).unwrap();
    assert_eq!(
        (claims.tenant.as_str(), claims.extension.as_str()),
        ("acme", "http-probe")
    );
    assert!(claims.invocation_id.starts_with("inv-"));
    assert!(claims.exp - claims.iat == 30, "{claims:?}");
    assert!(palisade_egress::tokens::verify(&token, &keys, Some("other-api"), now).is_err());
    assert!(palisade_egress::tokens::verify(&token, &keys, None, now + 31).is_err());

    // Rotation: new tokens are signed by a new key at once; the JWKS carries both, so the
    // token minted before still verifies; a restart loads the same keys.
    let old_kid = keys.keys[0].kid.clone();
    let rotation = world
        .admin(Method::POST, "/v1/keys/signing:rotate", None)
        .await;
    assert_eq!(rotation["retired"], old_kid.as_str());
    let new_kid = rotation["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, old_kid);
    assert!(rotation["retired_published_until_s"].as_i64().unwrap() >= now + 3600);
    probe(
        &world,
        json!([{ "url": format!("http://upstream.test:{}/echo", upstream.port) }]),
    )
    .await;
    let seen = upstream.last_headers.lock().unwrap().clone();
    let newer = seen["x-saas-token"]
        .strip_prefix("Bearer ")
        .unwrap()
        .to_owned();
    let jwks = world
        .call(None, Method::GET, "/.well-known/jwks.json", None)
        .await;
    let keys: palisade_egress::Jwks = serde_json::from_value(jwks.json.clone()).unwrap();
    let kids: Vec<&str> = keys.keys.iter().map(|k| k.kid.as_str()).collect();
    assert_eq!(kids, [new_kid.as_str(), old_kid.as_str()]);
    let header: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            newer.split('.').next().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], new_kid.as_str());
    let now = palisade_policy::now_unix();
    for minted in [&token, &newer] {
        palisade_egress::tokens::verify(minted, &keys, Some("saas-api"), now).unwrap();
    }
    let only_new = palisade_egress::Jwks {
        keys: vec![keys.keys[0].clone()],
    };
    assert!(palisade_egress::tokens::verify(&token, &only_new, None, now).is_err());
    let reloaded = palisade_server::signing::load(&world.state.store)
        .await
        .unwrap();
    assert_eq!(reloaded.current.kid(), new_kid);
    assert_eq!(reloaded.jwks(palisade_store::now_ms()), keys);
    // The retired key's seed is gone: it cannot be retired (or used) again.
    let again = world
        .state
        .store
        .rotate_signing_key(
            &palisade_store::Actor {
                principal: "test".into(),
                request_id: "r".into(),
            },
            &old_kid,
            "{}",
            0,
            |_| "unused".into(),
        )
        .await;
    assert!(
        matches!(again, Err(palisade_store::StoreError::Conflict(_))),
        "{again:?}"
    );
    // Retired keys are capped, so rotating in a loop cannot grow the JWKS without bound.
    for _ in 1..palisade_server::signing::MAX_PUBLISHED_RETIRED {
        world
            .admin(Method::POST, "/v1/keys/signing:rotate", None)
            .await;
    }
    let refused = world
        .call(
            Some(&world.admin),
            Method::POST,
            "/v1/keys/signing:rotate",
            None,
        )
        .await;
    assert_eq!(refused.status, 409, "{}", refused.json);
    let jwks = world
        .call(None, Method::GET, "/.well-known/jwks.json", None)
        .await;
    assert_eq!(
        jwks.json["keys"].as_array().unwrap().len(),
        palisade_server::signing::MAX_PUBLISHED_RETIRED + 1
    );
    world.shutdown().await;
}

#[test]
fn proxy_environment_variables_are_not_honoured() {
    // A server whose environment points every proxy variable at a black hole still talks to
    // the destination directly (and only the gateway talks at all).
    let data = tempfile::tempdir().unwrap();
    let server = crate::ServerProcess::start(
        data.path(),
        &[
            ("HTTP_PROXY", "http://127.0.0.1:9"),
            ("HTTPS_PROXY", "http://127.0.0.1:9"),
            ("ALL_PROXY", "http://127.0.0.1:9"),
            ("http_proxy", "http://127.0.0.1:9"),
        ],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let upstream = upstream().await;
        let admin = server.client(&server.admin_token());
        admin.create_tenant("acme").await.unwrap();
        admin
            .apply_policy(
                PolicyLayer::Baseline,
                &palisade_testkit::loopback_baseline(),
                "loopback for tests",
            )
            .await
            .unwrap();
        let tenant = tenant_policy(upstream.port, "", "")["document"]
            .as_str()
            .unwrap()
            .replace("upstream.test", "127.0.0.1");
        admin
            .apply_policy(PolicyLayer::Tenant("acme"), &tenant, "t")
            .await
            .unwrap();
        let (manifest, wasm) = fixture("fixtures/http-probe", "1.0.0");
        let manifest = manifest.replace(
            "http = [\"https://api.example.com/*\"]",
            "http = [\"http://127.0.0.1:*/*\"]",
        );
        admin
            .publish("acme", "http-probe", &manifest, &wasm)
            .await
            .unwrap();
        admin
            .review("acme", "http-probe", "1.0.0", true, None)
            .await
            .unwrap();
        admin.deploy("acme", "http-probe", "1.0.0").await.unwrap();
        let input =
            json!({ "requests": [{ "url": format!("http://127.0.0.1:{}/ok", upstream.port) }] });
        let answer = admin
            .invoke(
                "acme",
                "http-probe",
                input.to_string().into_bytes(),
                "application/json",
            )
            .await
            .unwrap();
        let results: Vec<Value> = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(results[0]["body"], "hello from upstream", "{results:?}");
        assert_eq!(upstream.hits.load(Ordering::Relaxed), 1);
    });
    assert!(server.terminate().success());
}

/// A certificate authority and what it signed, as PEM.
struct Pki {
    ca_pem: String,
    server_cert: String,
    server_key: String,
    client_ca_pem: String,
    client_cert: String,
    client_key: String,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let authority = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), Issuer::new(params, key))
    };
    let (ca_pem, ca) = authority("test server CA");
    let (client_ca_pem, client_ca) = authority("test client CA");
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["secure.test".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(vec!["acme-client".to_owned()]).unwrap();
    client_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "acme");
    let client = client_params.signed_by(&client_key, &client_ca).unwrap();
    Pki {
        ca_pem,
        server_cert: server.pem(),
        server_key: server_key.serialize_pem(),
        client_ca_pem,
        client_cert: client.pem(),
        client_key: client_key.serialize_pem(),
    }
}

/// An HTTPS upstream for `secure.test`; with `client_ca`, it requires a client certificate
/// signed by it. Answers "secure hello" to anything.
async fn tls_upstream(pki: &Pki, require_client: bool) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if require_client {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pki.client_ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pki.server_cert.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(pki.server_key.as_bytes()).unwrap();
    let config = builder.with_single_cert(chain, key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let mut buffer = [0u8; 4096];
                let _ = tls.read(&mut buffer).await;
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\nconnection: close\r\n\r\nsecure hello")
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

async fn secure_world(egress: &str) -> InProcess {
    let resolver = palisade_egress::StaticResolver {
        hosts: HashMap::from([("secure.test".to_owned(), vec![IpAddr::from([127, 0, 0, 1])])]),
    };
    let world = InProcess::with(|config| config.resolver = Arc::new(resolver)).await;
    world
        .admin(
            Method::PUT,
            "/v1/policies/baseline",
            Some(json!({ "document": palisade_testkit::loopback_baseline(), "reason": "loopback for tests" })),
        )
        .await;
    world
        .admin(Method::POST, "/v1/tenants", Some(json!({ "id": "acme" })))
        .await;
    let document = format!(
        "format = 1\nlayer = \"tenant\"\ntenant = \"acme\"\n\n{egress}\n\n[cedar]\ntext = '''\n@id(\"secure\")\npermit (principal, action == Action::\"http:request\", resource is Host)\nwhen {{ resource.hostname == \"secure.test\" && resource.scheme == \"https\" }};\n'''\n"
    );
    world
        .admin(
            Method::PUT,
            "/v1/tenants/acme/policy",
            Some(json!({ "document": document, "reason": "test" })),
        )
        .await;
    ship_with(
        &world,
        "fixtures/http-probe",
        "http-probe",
        &["https://secure.test:*/*"],
    )
    .await;
    world
}

#[tokio::test]
async fn tls_is_verified_with_webpki_roots_a_tenant_ca_and_client_certificates() {
    let pki = pki();
    let port = tls_upstream(&pki, false).await;
    let url = format!("https://secure.test:{port}/");

    // Without the tenant's CA, the self-made certificate is not trusted.
    let world = secure_world("").await;
    let results = probe(&world, json!([{ "url": url }])).await;
    assert_eq!(results[0]["error"]["kind"], "failed", "{results:?}");
    assert!(
        results[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Tls"),
        "{results:?}"
    );
    world.shutdown().await;

    // With it (a PEM in a tenant secret, named by the policy), the same request succeeds.
    let world = secure_world("[[egress.ca]]\nhost = \"secure.test\"\nsecret = \"secure-ca\"").await;
    world
        .admin(
            Method::PUT,
            "/v1/tenants/acme/secrets/secure-ca",
            Some(json!({ "value": pki.ca_pem })),
        )
        .await;
    let results = probe(&world, json!([{ "url": url }])).await;
    assert_eq!(results[0]["body"], "secure hello", "{results:?}");
    world.shutdown().await;

    // A destination that demands a client certificate: refused without, accepted with one.
    let mutual = tls_upstream(&pki, true).await;
    let url = format!("https://secure.test:{mutual}/");
    let world = secure_world("[[egress.ca]]\nhost = \"secure.test\"\nsecret = \"secure-ca\"").await;
    world
        .admin(
            Method::PUT,
            "/v1/tenants/acme/secrets/secure-ca",
            Some(json!({ "value": pki.ca_pem })),
        )
        .await;
    let results = probe(&world, json!([{ "url": url }])).await;
    assert!(
        results[0].get("error").is_some(),
        "no client certificate, no answer: {results:?}"
    );
    world.shutdown().await;
    let world = secure_world(
        "[[egress.ca]]\nhost = \"secure.test\"\nsecret = \"secure-ca\"\n\n[[egress.client_certs]]\nhost = \"secure.test\"\ncert_secret = \"client-cert\"\nkey_secret = \"client-key\"",
    )
    .await;
    for (name, value) in [
        ("secure-ca", &pki.ca_pem),
        ("client-cert", &pki.client_cert),
        ("client-key", &pki.client_key),
    ] {
        world
            .admin(
                Method::PUT,
                &format!("/v1/tenants/acme/secrets/{name}"),
                Some(json!({ "value": value })),
            )
            .await;
    }
    let results = probe(&world, json!([{ "url": url }])).await;
    assert_eq!(results[0]["body"], "secure hello", "{results:?}");
    world.shutdown().await;
}

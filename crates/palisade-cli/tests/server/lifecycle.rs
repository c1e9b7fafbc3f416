//! An extension's life through the API, and what the server does around each invocation:
//! review gates deployment, rollback restores, suspension stops invocations, admission sheds
//! a tenant over its rate without touching another tenant, errors carry their kind and
//! status, metrics count it all, and one invocation can be followed through the logs of every
//! layer by its ids. Shutdown finishes the invocation in flight.

use std::time::Duration;

use axum::http::Method;
use serde_json::json;

use crate::{InProcess, ServerProcess, fixture, publish_body};

#[tokio::test]
async fn publish_review_deploy_invoke_and_roll_back() {
    let world = InProcess::new().await;
    world
        .admin(Method::POST, "/v1/tenants", Some(json!({ "id": "acme" })))
        .await;
    let admin = world.admin.clone();
    let developer = world.token("tenant-developer", Some("acme")).await;
    let tenant_admin = world.token("tenant-admin", Some("acme")).await;
    let ext = "/v1/tenants/acme/extensions/echo";

    let (manifest, wasm) = fixture("fixtures/echo", "1.0.0");
    let published = world
        .call(
            Some(&developer),
            Method::POST,
            &format!("{ext}/versions"),
            Some(publish_body(&manifest, &wasm)),
        )
        .await;
    assert_eq!(published.status, 201, "{}", published.json);
    assert_eq!(published.json["state"], "published");

    // Not invocable before it is deployed; not deployable before it is approved.
    let answer = world.invoke(&developer, "acme", "echo", b"x").await;
    assert_eq!((answer.status.as_u16(), answer.kind()), (404, "not_found"));
    let deploy = json!({ "version": "1.0.0" });
    let refused = world
        .call(
            Some(&tenant_admin),
            Method::POST,
            &format!("{ext}/deployments"),
            Some(deploy.clone()),
        )
        .await;
    assert_eq!((refused.status.as_u16(), refused.kind()), (409, "conflict"));
    assert!(
        refused.json["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("review")
    );

    world
        .admin(
            Method::POST,
            &format!("{ext}/versions/1.0.0:approve"),
            Some(json!({"note": "looks fine"})),
        )
        .await;
    let deployed = world
        .call(
            Some(&tenant_admin),
            Method::POST,
            &format!("{ext}/deployments"),
            Some(deploy),
        )
        .await;
    assert_eq!(deployed.status, 201, "{}", deployed.json);

    let answer = world.invoke(&developer, "acme", "echo", b"hello").await;
    assert_eq!(
        (answer.status.as_u16(), answer.bytes.as_slice()),
        (200, &b"hello"[..])
    );
    assert!(
        answer.headers["x-palisade-invocation-id"]
            .to_str()
            .unwrap()
            .starts_with("inv-")
    );
    assert_eq!(answer.headers["x-palisade-version"], "1.0.0");

    // The extension shows its limits: the manifest's requests under the platform's.
    let shown = world.admin(Method::GET, ext, None).await;
    assert_eq!(shown["effective_limits"]["fuel"], 10_000_000);
    assert_eq!(shown["effective_limits"]["memory"], 16 << 20);
    assert_eq!(shown["effective_limits"]["rate"], 1_000);

    // A second version, then a rollback in one call.
    world.ship("acme", "fixtures/echo", "1.1.0").await;
    let answer = world.invoke(&developer, "acme", "echo", b"v").await;
    assert_eq!(answer.headers["x-palisade-version"], "1.1.0");
    let rolled = world
        .call(
            Some(&tenant_admin),
            Method::POST,
            &format!("{ext}:rollback"),
            None,
        )
        .await;
    assert_eq!(rolled.status, 200, "{}", rolled.json);
    assert_eq!(
        (
            rolled.json["version"].as_str(),
            rolled.json["kind"].as_str()
        ),
        (Some("1.0.0"), Some("rollback"))
    );
    let answer = world.invoke(&developer, "acme", "echo", b"v").await;
    assert_eq!(answer.headers["x-palisade-version"], "1.0.0");
    let history = world
        .admin(Method::GET, &format!("{ext}/deployments"), None)
        .await;
    assert_eq!(history.as_array().map(Vec::len), Some(3));

    // Suspension stops invocations at once and keeps everything; resuming restores them.
    world
        .admin(Method::POST, "/v1/tenants/acme:suspend", None)
        .await;
    let answer = world.invoke(&developer, "acme", "echo", b"x").await;
    assert_eq!(
        (answer.status.as_u16(), answer.kind()),
        (403, "tenant_suspended")
    );
    world
        .admin(Method::POST, "/v1/tenants/acme:resume", None)
        .await;
    assert_eq!(
        world.invoke(&developer, "acme", "echo", b"x").await.status,
        200
    );

    // Every change is in the audit log, and the chain holds.
    let audit = world.admin(Method::GET, "/v1/audit", None).await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for action in [
        "tenant.create",
        "token.create",
        "extension.publish",
        "extension.approve",
        "deployment.deploy",
        "deployment.rollback",
        "tenant.suspend",
        "tenant.resume",
    ] {
        assert!(
            actions.contains(&action),
            "{action} missing from {actions:?}"
        );
    }
    let verified = world.admin(Method::GET, "/v1/audit/verify", None).await;
    assert!(verified["broken"].is_null(), "{verified}");
    let _ = admin;
    world.shutdown().await;
}

#[tokio::test]
async fn invocation_errors_carry_their_kind_status_and_ids() {
    let world = InProcess::new().await;
    world
        .admin(Method::POST, "/v1/tenants", Some(json!({ "id": "acme" })))
        .await;
    for fixture in [
        "fixtures/infinite-loop",
        "fixtures/guest-error",
        "fixtures/memory-bomb",
    ] {
        world.ship("acme", fixture, "1.0.0").await;
    }
    let token = world.token("invoker", Some("acme")).await;
    for (name, status, kind) in [
        ("infinite-loop", 422, "fuel_exhausted"),
        ("guest-error", 422, "guest_error"),
        ("memory-bomb", 422, "memory_limit"),
    ] {
        let answer = world.invoke(&token, "acme", name, b"").await;
        assert_eq!(
            (answer.status.as_u16(), answer.kind()),
            (status, kind),
            "{name}: {}",
            answer.json
        );
        assert!(
            answer.json["invocation_id"]
                .as_str()
                .is_some_and(|id| id.starts_with("inv-"))
        );
        assert!(
            answer.json["request_id"]
                .as_str()
                .is_some_and(|id| id.starts_with("req-"))
        );
    }
    // With `envelope`, the full outcome: usage, logs and the isolation mode.
    let request = axum::http::Request::builder()
        .method(Method::POST)
        .uri("/v1/tenants/acme/extensions/guest-error:invoke?envelope=true")
        .header("authorization", format!("Bearer {token}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let answer = world.raw(request).await;
    assert_eq!(answer.status, 422);
    assert_eq!(answer.json["outcome"], "error");
    assert_eq!(answer.json["error"]["kind"], "guest_error");
    assert_eq!(answer.json["isolation"]["mode"], "jailed");
    assert!(
        answer.json["usage"]["fuel_consumed"]
            .as_u64()
            .is_some_and(|f| f > 0)
    );
    world.shutdown().await;
}

#[tokio::test]
async fn a_tenant_over_its_rate_is_shed_with_429_and_others_are_untouched() {
    let world = InProcess::new().await;
    for tenant in ["acme", "globex"] {
        world
            .admin(Method::POST, "/v1/tenants", Some(json!({ "id": tenant })))
            .await;
        world.ship(tenant, "fixtures/echo", "1.0.0").await;
    }
    world
        .admin(
            Method::PUT,
            "/v1/tenants/acme/policy",
            Some(json!({
                "document": "format = 1\nlayer = \"tenant\"\ntenant = \"acme\"\n\n[limits]\nrate = 3\n",
                "reason": "small plan",
            })),
        )
        .await;
    let token = world.admin.clone();
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let answer = world.invoke(&token, "acme", "echo", b"x").await;
        if answer.status == 429 {
            assert_eq!(answer.kind(), "rate_limited");
            let retry: u64 = answer.headers["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=2).contains(&retry), "Retry-After {retry}");
        }
        statuses.push(answer.status.as_u16());
    }
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        (3..=4).contains(&admitted),
        "rate 3/s admitted {admitted}: {statuses:?}"
    );
    assert!(statuses.contains(&429));
    for _ in 0..10 {
        assert_eq!(
            world.invoke(&token, "globex", "echo", b"x").await.status,
            200
        );
    }
    // The refusals are counted.
    let metrics = world
        .call(Some(&world.admin), Method::GET, "/metrics", None)
        .await;
    let text = String::from_utf8_lossy(&metrics.bytes);
    assert!(
        text.contains(r#"palisade_admissions_rejected_total{tenant="acme",reason="rate"}"#),
        "{text}"
    );
    assert!(text.contains(
        r#"palisade_invocations_total{tenant="globex",extension="echo",version="1.0.0",outcome="ok"} 10"#
    ));
    assert!(text.contains("palisade_workers_started_total"));
    assert!(text.contains("palisade_invocation_duration_seconds_bucket"));
    world.shutdown().await;
}

#[tokio::test]
async fn metric_labels_stop_at_the_configured_number_of_tenants() {
    let world = InProcess::with(|config| config.max_tenant_labels = 1).await;
    for tenant in ["acme", "globex"] {
        world
            .admin(Method::POST, "/v1/tenants", Some(json!({ "id": tenant })))
            .await;
        world.ship(tenant, "fixtures/echo", "1.0.0").await;
        assert_eq!(
            world
                .invoke(&world.admin, tenant, "echo", b"x")
                .await
                .status,
            200
        );
    }
    let metrics = world
        .call(Some(&world.admin), Method::GET, "/metrics", None)
        .await;
    let text = String::from_utf8_lossy(&metrics.bytes);
    assert!(text.contains(r#"tenant="acme""#));
    assert!(!text.contains(r#"tenant="globex""#), "{text}");
    assert!(text.contains(r#"tenant="_other""#));
    world.shutdown().await;
}

/// Follows one invocation through the server's JSON logs by its ids.
#[test]
fn one_invocation_is_followed_through_every_layer_by_its_ids() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        data.path(),
        &[
            ("PALISADE_LOG_FORMAT", "json"),
            ("PALISADE_LOG", "info,palisade_worker=debug"),
        ],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (request_id, invocation_id) = runtime.block_on(async {
        let admin = server.client(&server.admin_token());
        admin.create_tenant("acme").await.unwrap();
        let dir = palisade_testkit::guest_dir("examples/order-totals");
        let text = std::fs::read_to_string(dir.join("palisade.toml")).unwrap();
        let manifest = palisade_model::Manifest::parse(&text).unwrap();
        let wasm = std::fs::read(dir.join(&manifest.component.path)).unwrap();
        admin
            .publish("acme", "order-totals", &text, &wasm)
            .await
            .unwrap();
        admin
            .review("acme", "order-totals", "1.0.0", true, None)
            .await
            .unwrap();
        admin.deploy("acme", "order-totals", "1.0.0").await.unwrap();
        let input = std::fs::read(dir.join("order.json")).unwrap();
        let answer = admin
            .invoke("acme", "order-totals", input, "application/json")
            .await
            .unwrap();
        (answer.request_id, answer.invocation_id)
    });
    assert!(request_id.starts_with("req-") && invocation_id.starts_with("inv-"));
    std::thread::sleep(Duration::from_millis(300));
    let logs = server.logs();
    let lines: Vec<serde_json::Value> = logs
        .iter()
        .filter(|line| line.contains(&invocation_id))
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let targets: Vec<&str> = lines.iter().filter_map(|l| l["target"].as_str()).collect();
    // The guest's own log line, the supervisor's dispatch to the worker, the worker's own
    // lines (sent over IPC, logged in the invocation's span), the host's verdict.
    for target in [
        "palisade::guest",
        "palisade_worker::supervisor",
        "palisade_worker::worker",
        "palisade_host::host",
    ] {
        assert!(
            targets.contains(&target),
            "no {target} line carries {invocation_id}: {targets:?}"
        );
    }
    for line in &lines {
        let text = line.to_string();
        assert!(text.contains(&request_id), "{text}");
    }
    let guest = lines
        .iter()
        .find(|l| l["target"] == "palisade::guest")
        .unwrap();
    // Guest text is a quoted (Debug) field, never the message.
    assert_eq!(guest["fields"]["message"], "guest log", "{guest}");
    assert!(
        guest["fields"]["line"]
            .as_str()
            .unwrap()
            .starts_with("\"order totals"),
        "{guest}"
    );
    let dispatch = lines
        .iter()
        .find(|l| l["target"] == "palisade_worker::supervisor")
        .unwrap();
    assert!(
        dispatch["fields"]["worker_pid"].as_u64().is_some(),
        "{dispatch}"
    );
    let worker = lines
        .iter()
        .find(|l| {
            l["target"] == "palisade_worker::worker"
                && l["fields"]["line"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("\"invocation finished in the worker: ok"))
        })
        .unwrap_or_else(|| panic!("no worker line with the outcome: {lines:?}"));
    assert_eq!(
        worker["fields"]["worker_pid"],
        dispatch["fields"]["worker_pid"]
    );
    // The request's own completion line carries the request id too.
    assert!(
        logs.iter()
            .any(|l| l.contains(&request_id) && l.contains("request served")),
    );
    assert!(server.terminate().success());
}

#[test]
fn shutdown_finishes_the_invocation_in_flight() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let admin = server.client(&server.admin_token());
    runtime.block_on(async {
        admin.create_tenant("acme").await.unwrap();
        let (manifest, wasm) = fixture("fixtures/spin", "1.0.0");
        let manifest = manifest
            .replace("fuel = 100_000_000", "fuel = 10_000_000_000")
            .replace("wall_time = \"2s\"", "wall_time = \"20s\"");
        admin
            .publish("acme", "spin", &manifest, &wasm)
            .await
            .unwrap();
        admin
            .review("acme", "spin", "1.0.0", true, None)
            .await
            .unwrap();
        admin.deploy("acme", "spin", "1.0.0").await.unwrap();
    });
    let slow = {
        let admin = admin.clone();
        std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                admin
                    .invoke("acme", "spin", b"400000000".to_vec(), "text/plain")
                    .await
            })
        })
    };
    std::thread::sleep(Duration::from_millis(400));
    let status = server.terminate();
    let answer = slow.join().unwrap().unwrap();
    assert!(
        !answer.body.is_empty(),
        "the invocation in flight was answered"
    );
    assert!(status.success(), "{status}");
}

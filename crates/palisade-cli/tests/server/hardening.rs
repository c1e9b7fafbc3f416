//! Regression tests for the holes an outside attacker found in the control plane: each
//! attack runs against the real router, store and jailed workers, and asserts the exact
//! typed answer and that other tenants are unaffected.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request};
use serde_json::json;

use crate::InProcess;

/// A request body that never sends a byte (a client that sent its headers and went quiet).
struct Silent;

impl axum::body::HttpBody for Silent {
    type Data = axum::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Poll::Pending
    }
}

fn silent_request(token: &str, method: Method, path: &str, declared: u64) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("content-length", declared.to_string())
        .body(Body::new(Silent))
        .unwrap()
}

/// Answers within `limit` or fails the test (the attack would hang the handler).
async fn within(world: &InProcess, request: Request<Body>, limit: Duration) -> crate::Answer {
    tokio::time::timeout(limit, world.raw(request))
        .await
        .unwrap_or_else(|_| panic!("no answer within {limit:?}: the body was awaited"))
}

#[tokio::test]
async fn publish_is_refused_before_its_body_is_read() {
    let world = InProcess::new().await;
    for tenant in ["acme", "globex"] {
        world
            .admin(Method::POST, "/v1/tenants", Some(json!({ "id": tenant })))
            .await;
    }
    let invoker = world.token("invoker", Some("acme")).await;
    // Another tenant's publish route, 85 MiB declared and never sent: answered at once as for
    // a missing tenant, without reading (or buffering) the body.
    let foreign = within(
        &world,
        silent_request(
            &invoker,
            Method::POST,
            "/v1/tenants/globex/extensions/echo/versions",
            85 << 20,
        ),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        (foreign.status.as_u16(), foreign.kind()),
        (404, "not_found")
    );
    // Its own tenant's publish route, for a role that may not publish: 403 before the body.
    let own = within(
        &world,
        silent_request(
            &invoker,
            Method::POST,
            "/v1/tenants/acme/extensions/echo/versions",
            85 << 20,
        ),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!((own.status.as_u16(), own.kind()), (403, "forbidden"));
    // Every tenant-scoped route with a body refuses another tenant before reading it.
    let policy = within(
        &world,
        silent_request(&invoker, Method::PUT, "/v1/tenants/globex/policy", 1000),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(policy.status.as_u16(), 404);
    world.shutdown().await;
}

#[tokio::test]
async fn silent_invoke_bodies_hold_no_slot_and_time_out() {
    let world = InProcess::with(|config| {
        config.admission.max_in_flight = 4;
    })
    .await;
    for tenant in ["acme", "initech", "globex"] {
        world
            .admin(Method::POST, "/v1/tenants", Some(json!({ "id": tenant })))
            .await;
        world.ship(tenant, "fixtures/echo", "1.0.0").await;
    }
    // Two tenants open three invocations each that send headers and no body: before the fix
    // they held six admission slots (more than the four there are).
    let mut silent = Vec::new();
    for tenant in ["acme", "initech"] {
        for _ in 0..3 {
            let request = silent_request(
                &world.admin,
                Method::POST,
                &format!("/v1/tenants/{tenant}/extensions/echo:invoke"),
                100,
            );
            let app = world.app.clone();
            silent.push(tokio::spawn(async move {
                use tower::ServiceExt as _;
                app.oneshot(request).await.map(|r| r.status().as_u16())
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A third tenant is served.
    let quiet = world.invoke(&world.admin, "globex", "echo", b"hello").await;
    assert_eq!(quiet.status, 200, "{}", quiet.json);
    // The silent ones end with a typed 408 once their body deadline passes.
    for call in silent {
        let status = tokio::time::timeout(Duration::from_secs(60), call)
            .await
            .expect("the silent invocation was never cut off")
            .unwrap()
            .unwrap();
        assert_eq!(status, 408);
    }
    world.shutdown().await;
}

#[tokio::test]
async fn minting_for_another_tenants_principal_answers_as_for_a_missing_one() {
    let world = InProcess::new().await;
    for tenant in ["acme", "globex"] {
        world
            .admin(Method::POST, "/v1/tenants", Some(json!({ "id": tenant })))
            .await;
    }
    let victim = world
        .admin(
            Method::POST,
            "/v1/tokens",
            Some(json!({ "name": "victim", "role": "invoker", "tenant": "globex" })),
        )
        .await;
    let victim_principal = victim["info"]["principal"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let attacker = world.token("tenant-admin", Some("acme")).await;
    let mint = |principal: String| {
        let world = &world;
        let attacker = attacker.clone();
        async move {
            world
                .call(
                    Some(&attacker),
                    Method::POST,
                    "/v1/tokens",
                    Some(json!({ "principal": principal })),
                )
                .await
        }
    };
    let foreign = mint(victim_principal.clone()).await;
    let missing = mint("p-0000000000000000".into()).await;
    assert_eq!(
        (foreign.status.as_u16(), foreign.kind()),
        (404, "not_found")
    );
    assert_eq!(missing.status, foreign.status);
    let message = |a: &crate::Answer, id: &str| {
        a.json["error"]["message"]
            .as_str()
            .unwrap_or("")
            .replace(id, "P")
    };
    assert_eq!(
        message(&foreign, &victim_principal),
        message(&missing, "p-0000000000000000"),
        "the answer names the other tenant"
    );
    assert!(!foreign.bytes.windows(6).any(|w| w == b"globex"));
    world.shutdown().await;
}

#[tokio::test]
async fn metrics_need_a_platform_token() {
    let world = InProcess::new().await;
    world
        .admin(Method::POST, "/v1/tenants", Some(json!({ "id": "acme" })))
        .await;
    let none = world.call(None, Method::GET, "/metrics", None).await;
    assert_eq!(
        (none.status.as_u16(), none.kind()),
        (401, "unauthenticated")
    );
    let tenant_admin = world.token("tenant-admin", Some("acme")).await;
    let tenant = world
        .call(Some(&tenant_admin), Method::GET, "/metrics", None)
        .await;
    assert_eq!((tenant.status.as_u16(), tenant.kind()), (403, "forbidden"));
    let reviewer = world.token("platform-reviewer", None).await;
    let allowed = world
        .call(Some(&reviewer), Method::GET, "/metrics", None)
        .await;
    assert_eq!(allowed.status, 200);
    assert!(String::from_utf8_lossy(&allowed.bytes).contains("palisade_"));
    world.shutdown().await;
}

#[tokio::test]
async fn racing_policy_changes_leave_the_stored_head_in_force() {
    let world = InProcess::new().await;
    world
        .admin(Method::POST, "/v1/tenants", Some(json!({ "id": "acme" })))
        .await;
    let scope = palisade_policy::Scope::Tenant(palisade_policy::TenantId::new("acme").unwrap());
    for round in 0..4u64 {
        let changes = (0..8u64).map(|n| {
            world.call(
                Some(&world.admin),
                Method::PUT,
                "/v1/tenants/acme/policy",
                Some(json!({
                    "document": crate::authz::tenant_policy("acme", round * 100 + n),
                    "reason": "race",
                })),
            )
        });
        for answer in futures_join_all(changes).await {
            assert_eq!(answer.status, 200, "{}", answer.json);
        }
        let head = world
            .admin(Method::GET, "/v1/tenants/acme/policy", None)
            .await;
        let stored =
            palisade_policy::PolicyDocument::parse(head["document"].as_str().unwrap(), None)
                .unwrap()
                .description;
        let policy = world.state.policy();
        let enforced = policy
            .layer(&scope)
            .map(|layer| layer.document().description.clone());
        assert_eq!(enforced, Some(stored), "round {round}");
    }
    world.shutdown().await;
}

fn worker_policy(memory: &str, cpu: u64) -> serde_json::Value {
    let document = format!(
        "format = 1\nlayer = \"tenant\"\ntenant = \"acme\"\n\n[limits]\n\
         worker_memory = \"{memory}\"\nworker_cpu = {cpu}\n\n[cedar]\n\
         text = '''@id(\"all\")\npermit (principal, action, resource);'''\n"
    );
    json!({ "document": document, "reason": "worker limits" })
}

/// The memory limit and CPU quota (µs per 100 ms period) of the cgroup `pid` runs in, read
/// from the cgroup files (v1 or v2).
fn cgroup_limits(pid: u32) -> (u64, u64) {
    let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path_of = |wanted: &str| {
        membership.lines().find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let hit = if wanted.is_empty() {
                controllers.is_empty()
            } else {
                controllers.split(',').any(|c| c == wanted)
            };
            hit.then(|| path.trim_start_matches('/').to_owned())
        })
    };
    let read = |file: std::path::PathBuf| {
        std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .trim()
            .to_owned()
    };
    let cgroup = std::path::Path::new("/sys/fs/cgroup");
    if let (Some(memory), Some(cpu)) = (path_of("memory"), path_of("cpu")) {
        (
            read(
                cgroup
                    .join("memory")
                    .join(memory)
                    .join("memory.limit_in_bytes"),
            )
            .parse()
            .unwrap(),
            read(cgroup.join("cpu").join(cpu).join("cpu.cfs_quota_us"))
                .parse()
                .unwrap(),
        )
    } else {
        let root = if cgroup.join("cgroup.controllers").exists() {
            cgroup.to_owned()
        } else {
            cgroup.join("unified")
        };
        let dir = root.join(path_of("").unwrap());
        let cpu = read(dir.join("cpu.max"));
        (
            read(dir.join("memory.max")).parse().unwrap(),
            cpu.split_whitespace().next().unwrap().parse().unwrap(),
        )
    }
}

#[tokio::test]
async fn worker_limits_from_policy_reach_the_tenants_cgroup_and_follow_changes() {
    let world = InProcess::new().await;
    world
        .admin(Method::POST, "/v1/tenants", Some(json!({ "id": "acme" })))
        .await;
    world
        .admin(
            Method::PUT,
            "/v1/tenants/acme/policy",
            Some(worker_policy("96 MiB", 250)),
        )
        .await;
    world.ship("acme", "fixtures/echo", "1.0.0").await;
    let answer = world.invoke(&world.admin, "acme", "echo", b"hello").await;
    assert_eq!(answer.status, 200, "{}", answer.json);
    let pid = || {
        let snapshot = world.state.host.executor().pool_snapshot().unwrap();
        let at = snapshot.live.iter().position(|t| t == "acme").unwrap();
        snapshot.pids[at]
    };
    let worker = pid();
    // 250 millicores is a quarter of a core: 25 ms of every 100 ms.
    assert_eq!(cgroup_limits(worker), (96 << 20, 25_000));

    // A policy change reaches the running worker, and a worker started later has it too.
    world
        .admin(
            Method::PUT,
            "/v1/tenants/acme/policy",
            Some(worker_policy("128 MiB", 500)),
        )
        .await;
    assert_eq!(cgroup_limits(worker), (128 << 20, 50_000));
    let answer = world.invoke(&world.admin, "acme", "echo", b"again").await;
    assert_eq!(answer.status, 200, "{}", answer.json);
    assert_eq!(cgroup_limits(pid()), (128 << 20, 50_000));
    world.shutdown().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::config(dir.path());
    config.header_timeout = Duration::from_secs(1);
    let server = palisade_server::Server::start(config).await.unwrap();
    let mut quiet = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    quiet
        .write_all(b"POST /v1/tenants/acme/extensions/echo:invoke HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // The server closes the connection (or answers it) once the header timeout passes; a
    // bound far above it keeps a regression from hanging the suite.
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(30), quiet.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(_)) | Ok(Err(_))),
        "the connection was still open after 30 s"
    );
    // The server still serves others.
    let health = plain_get(server.local_addr()).await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    server.shutdown().await;
}

/// `GET /healthz` over a plain socket; the status line and headers.
async fn plain_get(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// Runs the futures concurrently on this task and collects their outputs in order.
async fn futures_join_all<F: Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for future in futures {
        set.push(Box::pin(future));
    }
    let mut outputs: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in set.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

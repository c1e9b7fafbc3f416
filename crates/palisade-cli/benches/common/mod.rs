//! What the benchmarks that drive a real server share: an in-process server with jailed
//! workers (the `palisade` binary as the worker program), admin calls through the router,
//! publishing and deploying a guest fixture, and the median time of an invocation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request};
use base64::Engine as _;
use palisade_server::{AppState, Isolation, ServerConfig, WorkerProgram};
use serde_json::{Value, json};
use sha2::Digest as _;
use tower::ServiceExt;

pub struct Bench {
    pub app: axum::Router,
    pub admin: String,
    pub state: Arc<AppState>,
    _dir: tempfile::TempDir,
}

impl Bench {
    /// A server in a temporary data directory with jailed workers and no review gate;
    /// `configure` adjusts the configuration first.
    pub async fn start(configure: impl FnOnce(&mut ServerConfig)) -> Self {
        palisade_testkit::build_guests();
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::new(dir.path().to_owned(), "127.0.0.1:0".parse().unwrap());
        config.isolation = Isolation::Jailed {
            allow_degraded: false,
        };
        config.worker = WorkerProgram {
            program: env!("CARGO_BIN_EXE_palisade").into(),
            worker_args: vec!["__worker".into()],
            launcher_args: vec!["__jail-launcher".into()],
        };
        config.settings.require_review = false;
        configure(&mut config);
        let (state, admin) = palisade_server::build_state(&config).await.unwrap();
        Self {
            app: palisade_server::routes::router(Arc::clone(&state)),
            admin: admin.unwrap(),
            state,
            _dir: dir,
        }
    }

    pub async fn call(&self, method: Method, path: &str, body: Value) -> (u16, Value) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {}", self.admin))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    pub async fn ok(&self, method: Method, path: &str, body: Value) -> Value {
        let (status, json) = self.call(method, path, body).await;
        assert!((200..300).contains(&status), "{path}: {status} {json}");
        json
    }

    /// Sets the baseline and creates tenant `bench` with `tenant_policy`.
    pub async fn tenant(&self, baseline: &str, tenant_policy: &str) {
        self.ok(
            Method::PUT,
            "/v1/policies/baseline",
            json!({ "document": baseline, "reason": "bench" }),
        )
        .await;
        self.ok(Method::POST, "/v1/tenants", json!({ "id": "bench" }))
            .await;
        self.ok(
            Method::PUT,
            "/v1/tenants/bench/policy",
            json!({ "document": tenant_policy, "reason": "bench" }),
        )
        .await;
    }

    /// Publishes the fixture in `guests/fixtures/<name>` for tenant `bench`, its manifest
    /// passed through `edit`, and deploys it.
    pub async fn ship(&self, name: &str, edit: impl FnOnce(String) -> String) {
        let dir = palisade_testkit::guest_dir(&format!("fixtures/{name}"));
        let manifest = std::fs::read_to_string(dir.join("palisade.toml")).unwrap();
        let parsed = palisade_model::Manifest::parse(&manifest).unwrap();
        let wasm = std::fs::read(dir.join(&parsed.component.path)).unwrap();
        self.ok(
            Method::POST,
            &format!("/v1/tenants/bench/extensions/{name}/versions"),
            json!({
                "manifest": edit(manifest),
                "component_base64": base64::engine::general_purpose::STANDARD.encode(&wasm),
                "sha256": hex::encode(sha2::Sha256::digest(&wasm)),
            }),
        )
        .await;
        self.ok(
            Method::POST,
            &format!("/v1/tenants/bench/extensions/{name}/deployments"),
            json!({ "version": parsed.extension.version.to_string() }),
        )
        .await;
    }

    /// Median wall time of `n` invocations of extension `name` with `input`; each must
    /// succeed with no `"error"` anywhere in its output.
    pub async fn time(&self, n: usize, name: &str, input: &Value) -> Duration {
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let started = Instant::now();
            let (status, json) = self
                .call(
                    Method::POST,
                    &format!("/v1/tenants/bench/extensions/{name}:invoke"),
                    input.clone(),
                )
                .await;
            times.push(started.elapsed());
            assert_eq!(status, 200, "{json}");
            assert!(!json.to_string().contains("\"error\""), "{json}");
        }
        times.sort();
        times[n / 2]
    }
}

/// Invocations per row: `PALISADE_BENCH_N`, 30 by default.
pub fn rounds() -> usize {
    std::env::var("PALISADE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
}

//! Key-value latency and throughput from inside an extension: the kv-probe guest in a jailed
//! worker runs N operations in one invocation (each a host call over IPC to the server, the
//! policy and quota checks, SQLite, the AEAD), compared with the same invocation doing
//! nothing; plus the AEAD alone, which is what encryption adds to each operation.
//!
//! `cargo bench -p palisade-cli --bench kv` (PALISADE_BENCH_N sets the invocations per row).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "benchmark: a failure should stop the run loudly"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request};
use palisade_server::{Isolation, ServerConfig, WorkerProgram};
use serde_json::{Value, json};
use tower::ServiceExt;

const OPS: u64 = 200;

struct Bench {
    app: axum::Router,
    admin: String,
}

impl Bench {
    async fn call(&self, method: Method, path: &str, body: Value) -> (u16, Value) {
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

    async fn ok(&self, method: Method, path: &str, body: Value) -> Value {
        let (status, json) = self.call(method, path, body).await;
        assert!((200..300).contains(&status), "{path}: {status} {json}");
        json
    }

    /// Median wall time of `n` invocations of the probe with `ops`.
    async fn time(&self, n: usize, ops: Value) -> Duration {
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let started = Instant::now();
            let (status, json) = self
                .call(
                    Method::POST,
                    "/v1/tenants/bench/extensions/kv-probe:invoke",
                    json!({ "ops": ops }),
                )
                .await;
            times.push(started.elapsed());
            assert_eq!(status, 200, "{json}");
            assert!(json.to_string().find("\"error\"").is_none(), "{json}");
        }
        times.sort();
        times[n / 2]
    }
}

fn aead(size: usize) -> (Duration, Duration) {
    let key = [9u8; 32];
    let value = vec![7u8; size];
    let aad = palisade_store::keys::aad("bench", &[b"tenant", b"namespace", b"key"]);
    let rounds = 20_000;
    let started = Instant::now();
    let mut sealed = Vec::new();
    for _ in 0..rounds {
        sealed = palisade_store::keys::seal(&key, &aad, &value).unwrap();
    }
    let seal = started.elapsed() / rounds;
    let started = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(palisade_store::keys::open(&key, &aad, &sealed).unwrap());
    }
    (seal, started.elapsed() / rounds)
}

fn main() {
    let n: usize = std::env::var("PALISADE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
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
        let (state, admin) = palisade_server::build_state(&config).await.unwrap();
        let bench = Bench {
            app: palisade_server::routes::router(Arc::clone(&state)),
            admin: admin.unwrap(),
        };
        let root = palisade_testkit::repo_root();
        let baseline = std::fs::read_to_string(root.join("crates/palisade-policy/baseline/baseline.toml"))
            .unwrap()
            .replace("kv_rate = 10_000", "kv_rate = 1_000_000")
            .replace("disk_io = \"100 MiB\"", "disk_io = \"10 GiB\"");
        bench
            .ok(Method::PUT, "/v1/policies/baseline", json!({ "document": baseline, "reason": "bench" }))
            .await;
        bench.ok(Method::POST, "/v1/tenants", json!({ "id": "bench" })).await;
        let policy = "format = 1\nlayer = \"tenant\"\ntenant = \"bench\"\n\n[cedar]\ntext = '''\n@id(\"kv\")\npermit (principal, action in [Action::\"kv:read\", Action::\"kv:write\"], resource is KvNamespace);\n'''\n";
        bench
            .ok(Method::PUT, "/v1/tenants/bench/policy", json!({ "document": policy, "reason": "bench" }))
            .await;
        let dir = palisade_testkit::guest_dir("fixtures/kv-probe");
        let manifest = std::fs::read_to_string(dir.join("palisade.toml")).unwrap();
        let parsed = palisade_model::Manifest::parse(&manifest).unwrap();
        let wasm = std::fs::read(dir.join(&parsed.component.path)).unwrap();
        use base64::Engine as _;
        use sha2::Digest as _;
        bench
            .ok(
                Method::POST,
                "/v1/tenants/bench/extensions/kv-probe/versions",
                json!({
                    "manifest": manifest,
                    "component_base64": base64::engine::general_purpose::STANDARD.encode(&wasm),
                    "sha256": hex::encode(sha2::Sha256::digest(&wasm)),
                }),
            )
            .await;
        bench
            .ok(
                Method::POST,
                "/v1/tenants/bench/extensions/kv-probe/deployments",
                json!({ "version": parsed.extension.version.to_string() }),
            )
            .await;

        let empty = bench.time(n, json!([])).await;
        println!("kv-probe in a jailed worker, {OPS} operations per invocation, median of {n} invocations");
        println!("empty invocation (no operations): {:.3} ms", empty.as_secs_f64() * 1e3);
        println!();
        println!("| operation | value | per operation | operations/s in one invocation |");
        println!("|---|---|---|---|");
        for size in [100u64, 4096] {
            for (name, op) in [
                ("set", json!({ "op": "set", "key": format!("s{size}-{{i}}"), "value_len": size, "repeat": OPS })),
                ("get", json!({ "op": "get", "key": format!("s{size}-{{i}}"), "repeat": OPS })),
                ("exists", json!({ "op": "exists", "key": format!("s{size}-{{i}}"), "repeat": OPS })),
            ] {
                let total = bench.time(n, json!([op])).await;
                let per_op = total.saturating_sub(empty) / OPS as u32;
                println!(
                    "| {name} | {size} B | {:.1} µs | {:.0} |",
                    per_op.as_secs_f64() * 1e6,
                    1.0 / per_op.as_secs_f64()
                );
            }
        }
        println!();
        println!("| AEAD alone (XChaCha20-Poly1305) | seal | open |");
        println!("|---|---|---|");
        for size in [100usize, 4096] {
            let (seal, open) = aead(size);
            println!(
                "| {size} B | {:.2} µs | {:.2} µs |",
                seal.as_secs_f64() * 1e6,
                open.as_secs_f64() * 1e6
            );
        }
        state.executor.shutdown().await;
    });
}

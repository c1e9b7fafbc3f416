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

mod common;

use std::time::{Duration, Instant};

use serde_json::json;

const OPS: u64 = 200;

const TENANT_POLICY: &str = r#"format = 1
layer = "tenant"
tenant = "bench"

[cedar]
text = '''
@id("kv")
permit (principal, action in [Action::"kv:read", Action::"kv:write"], resource is KvNamespace);
'''
"#;

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
    let n = common::rounds();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let bench = common::Bench::start(|_| {}).await;
        let baseline = std::fs::read_to_string(
            palisade_testkit::repo_root().join("crates/palisade-policy/baseline/baseline.toml"),
        )
        .unwrap()
        .replace("kv_rate = 10_000", "kv_rate = 1_000_000")
        .replace("disk_io = \"100 MiB\"", "disk_io = \"10 GiB\"");
        bench.tenant(&baseline, TENANT_POLICY).await;
        bench.ship("kv-probe", |manifest| manifest).await;

        let empty = bench.time(n, "kv-probe", &json!({ "ops": [] })).await;
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
                let total = bench.time(n, "kv-probe", &json!({ "ops": [op] })).await;
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
        bench.state.host.shutdown().await;
    });
}

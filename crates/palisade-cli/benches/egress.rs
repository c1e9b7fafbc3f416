//! Outbound HTTP from inside an extension: the http-probe guest in a jailed worker sends N
//! requests in one invocation through the standard `wasi:http` interface; each is a host
//! call over IPC to the server, whose egress gateway checks the manifest destination, the
//! Cedar policy and the address class, counts the quotas, opens a fresh connection to an
//! upstream on loopback and returns the buffered response. Per-request time is the invocation
//! minus the same invocation sending nothing, divided by N; the same request sent directly
//! from the host is the floor.
//!
//! `cargo bench -p palisade-cli --bench egress` (PALISADE_BENCH_N sets the invocations per row).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "benchmark: a failure should stop the run loudly"
)]

mod common;

use std::time::{Duration, Instant};

use serde_json::json;

const TENANT_POLICY: &str = r#"format = 1
layer = "tenant"
tenant = "bench"

[cedar]
text = '''
@id("loopback-upstream")
permit (principal, action == Action::"http:request", resource is Host)
when { resource has ip && resource.ip.isInRange(ip("127.0.0.1/32")) };
'''
"#;

/// An upstream on loopback: `/small` answers 13 bytes, `/mib` one MiB.
async fn upstream() -> u16 {
    let mib = vec![b'x'; 1 << 20];
    let app = axum::Router::new()
        .route("/small", axum::routing::get(|| async { "hello, world\n" }))
        .route(
            "/mib",
            axum::routing::get(move || async move { mib.clone() }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    port
}

/// Median time of a GET sent from the host over a fresh connection (HTTP/1.1, `connection:
/// close`), the response read to the end.
async fn direct(n: usize, port: u16, path: &str) -> Duration {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request =
        format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n\r\n");
    let mut response = Vec::with_capacity(2 << 20);
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        response.clear();
        stream.read_to_end(&mut response).await.unwrap();
        times.push(started.elapsed());
        assert!(response.starts_with(b"HTTP/1.1 200"));
    }
    times.sort();
    times[n / 2]
}

fn main() {
    let n = common::rounds();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let port = upstream().await;
        let bench = common::Bench::start(|_| {}).await;
        let baseline = palisade_testkit::loopback_baseline()
            .replace("egress_requests = 100", "egress_requests = 10_000")
            .replace("egress_bytes = \"64 MiB\"", "egress_bytes = \"1 GiB\"")
            .replace("bandwidth = \"100 MiB\"", "bandwidth = \"10 GiB\"");
        bench.tenant(&baseline, TENANT_POLICY).await;
        bench
            .ship("http-probe", |manifest| {
                manifest.replace(
                    "http = [\"https://api.example.com/*\"]",
                    "http = [\"http://127.0.0.1:*/*\"]",
                )
            })
            .await;

        let empty = bench
            .time(n, "http-probe", &json!({ "requests": [] }))
            .await;
        println!("http-probe in a jailed worker, median of {n} invocations");
        println!(
            "empty invocation (no requests): {:.3} ms",
            empty.as_secs_f64() * 1e3
        );
        println!();
        println!("| request | per request from the guest | direct from the host | guest, MiB/s |");
        println!("|---|---|---|---|");
        for (name, path, repeat, bytes) in [
            ("GET, 13-byte body", "/small", 100u32, 13.0),
            ("GET, 1 MiB body", "/mib", 20, f64::from(1u32 << 20)),
        ] {
            let url = format!("http://127.0.0.1:{port}{path}");
            let input = json!({ "requests": [{ "url": url, "repeat": repeat, "summary": true }] });
            let total = bench.time(n, "http-probe", &input).await;
            let per_request = total.saturating_sub(empty) / repeat;
            let floor = direct(n * 10, port, path).await;
            println!(
                "| {name} | {:.1} µs | {:.1} µs | {:.0} |",
                per_request.as_secs_f64() * 1e6,
                floor.as_secs_f64() * 1e6,
                bytes / per_request.as_secs_f64() / f64::from(1u32 << 20),
            );
        }
        bench.state.host.shutdown().await;
    });
}

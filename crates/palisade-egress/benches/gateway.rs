//! What the egress gateway adds to one request, against the same request sent directly from
//! the host: both open a fresh TCP connection to an HTTP server on loopback (the gateway never
//! reuses connections across requests), the gateway also parses and checks the URL, resolves,
//! classifies the address, asks the policy, counts bytes against the invocation and the
//! tenant's bandwidth bucket, and scrubs injected secrets. Then throughput with 1 MiB bodies.
//!
//! `cargo bench -p palisade-egress --bench gateway` (PALISADE_BENCH_N sets the requests).

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "benchmark: a failure should stop the run loudly"
)]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use palisade_egress::{
    Cidr, Gateway, Invocation, InvocationSpec, NoPolicyLayers, NoSecrets, StaticResolver,
};
use palisade_model::egress::{HttpRequest, UrlPattern};

async fn upstream() -> u16 {
    let app = axum::Router::new()
        .route("/ok", axum::routing::get(|| async { "ok" }))
        .route("/big", axum::routing::get(|| async { vec![b'b'; 1 << 20] }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    port
}

async fn direct(port: u16, path: &str) -> usize {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get(path)
        .header("host", format!("upstream.test:{port}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .len()
}

fn invocation(requests: u64) -> Invocation {
    Invocation::new(InvocationSpec {
        tenant: "bench".into(),
        extension: "bench".into(),
        version: "1.0.0".into(),
        invocation_id: "inv-bench".into(),
        patterns: vec![UrlPattern::parse("http://upstream.test:*/*").unwrap()],
        policy: Arc::new(NoPolicyLayers),
        secrets: Arc::new(NoSecrets),
        credentials: Vec::new(),
        tokens: Vec::new(),
        tls: Vec::new(),
        allow_private: vec![Cidr::parse("127.0.0.1/32").unwrap()],
        max_requests: requests,
        max_bytes: u64::MAX / 2,
        deadline: tokio::time::Instant::now() + Duration::from_secs(3_600),
        request_timeout: Duration::from_secs(10),
        bandwidth: 10 << 30,
        connections: 64,
    })
}

fn percentile(times: &mut [Duration], p: f64) -> Duration {
    times.sort();
    times[((times.len() as f64 - 1.0) * p) as usize]
}

fn main() {
    let n: usize = std::env::var("PALISADE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let port = upstream().await;
        let resolver = StaticResolver {
            hosts: [(
                "upstream.test".to_owned(),
                vec![IpAddr::from([127, 0, 0, 1])],
            )]
            .into(),
        };
        let gateway = Gateway::new(Arc::new(resolver), None);
        let invocation = invocation(u64::MAX / 2);
        let request = |path: &str| HttpRequest {
            method: "GET".into(),
            url: format!("http://upstream.test:{port}{path}"),
            headers: vec![("accept".into(), b"*/*".to_vec())],
            body: Vec::new(),
            timeout_ms: None,
        };
        for _ in 0..200 {
            direct(port, "/ok").await;
            gateway.send(&invocation, request("/ok")).await.unwrap();
        }
        let mut direct_times = Vec::with_capacity(n);
        let mut gateway_times = Vec::with_capacity(n);
        for _ in 0..n {
            let started = Instant::now();
            direct(port, "/ok").await;
            direct_times.push(started.elapsed());
            let started = Instant::now();
            gateway.send(&invocation, request("/ok")).await.unwrap();
            gateway_times.push(started.elapsed());
        }
        println!("small GET on loopback, fresh connection each, {n} requests");
        println!("| path | p50 | p99 |");
        println!("|---|---|---|");
        for (name, times) in [
            ("direct from the host", &mut direct_times),
            ("through the gateway", &mut gateway_times),
        ] {
            println!(
                "| {name} | {:.1} µs | {:.1} µs |",
                percentile(times, 0.5).as_secs_f64() * 1e6,
                percentile(times, 0.99).as_secs_f64() * 1e6
            );
        }
        let rounds = 200;
        let started = Instant::now();
        let mut bytes = 0;
        for _ in 0..rounds {
            bytes += direct(port, "/big").await;
        }
        let direct_rate = bytes as f64 / started.elapsed().as_secs_f64() / (1 << 20) as f64;
        let started = Instant::now();
        let mut bytes = 0;
        for _ in 0..rounds {
            bytes += gateway
                .send(&invocation, request("/big"))
                .await
                .unwrap()
                .body
                .len();
        }
        let gateway_rate = bytes as f64 / started.elapsed().as_secs_f64() / (1 << 20) as f64;
        println!();
        println!("1 MiB responses, {rounds} in a row");
        println!("| path | throughput |");
        println!("|---|---|");
        println!("| direct from the host | {direct_rate:.0} MiB/s |");
        println!("| through the gateway | {gateway_rate:.0} MiB/s |");
    });
}

//! Runtime benchmarks: invoke latency with the pooling allocator vs on-demand, loading a
//! component compiled vs cached (memory, disk), and the cost of fuel metering on a
//! compute-heavy guest. Results and the command are recorded in BENCHMARKS.md.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test and benchmark setup: a failure should stop the run loudly"
)]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use palisade_model::InvocationRequest;
use palisade_model::Limits;
use palisade_runtime::{Runtime, RuntimeConfig};
use palisade_testkit::guest;

fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn order() -> InvocationRequest {
    InvocationRequest {
        body: br#"{"currency":"EUR","discount_percent":10,"items":[{"sku":"A-1","quantity":2,"unit_price_cents":1250},{"sku":"B-2","quantity":1,"unit_price_cents":999}]}"#.to_vec(),
        content_type: "application/json".into(),
        metadata: vec![],
    }
}

fn invoke_latency(c: &mut Criterion) {
    let rt = tokio();
    let (manifest, wasm) = guest("examples/order-totals");
    let mut group = c.benchmark_group("invoke/order-totals");
    for (label, pooling) in [("pooling", true), ("on-demand", false)] {
        let runtime = Runtime::new(RuntimeConfig {
            pooling,
            ..Default::default()
        })
        .unwrap();
        let extension = runtime.load(&manifest, &wasm).unwrap();
        let limits = extension.limits();
        group.bench_function(label, |b| {
            b.iter(|| {
                let outcome = rt.block_on(runtime.invoke(&extension, order(), &limits));
                assert!(outcome.result.is_ok());
            });
        });
    }
    group.finish();
}

fn load_latency(c: &mut Criterion) {
    let (manifest, wasm) = guest("examples/order-totals");
    let mut group = c.benchmark_group("load/order-totals");
    group.sample_size(20);
    let compile = Runtime::new(RuntimeConfig {
        cache_memory_bytes: 0,
        ..Default::default()
    })
    .unwrap();
    group.bench_function("uncached (compile)", |b| {
        b.iter(|| compile.load(&manifest, &wasm).unwrap())
    });
    let dir = tempfile::tempdir().unwrap();
    let disk = Runtime::new(RuntimeConfig {
        cache_memory_bytes: 0,
        cache_dir: Some(dir.path().to_owned()),
        ..Default::default()
    })
    .unwrap();
    disk.load(&manifest, &wasm).unwrap();
    group.bench_function("disk cache", |b| {
        b.iter(|| disk.load(&manifest, &wasm).unwrap())
    });
    let memory = Runtime::new(RuntimeConfig::default()).unwrap();
    memory.load(&manifest, &wasm).unwrap();
    group.bench_function("memory cache", |b| {
        b.iter(|| memory.load(&manifest, &wasm).unwrap())
    });
    group.finish();
}

fn metering_cost(c: &mut Criterion) {
    let rt = tokio();
    let (manifest, wasm) = guest("fixtures/spin");
    let mut group = c.benchmark_group("metering/spin-1M");
    group.sample_size(20);
    for (label, fuel_metering) in [("fuel+epoch", true), ("epoch only", false)] {
        let runtime = Runtime::new(RuntimeConfig {
            fuel_metering,
            ..Default::default()
        })
        .unwrap();
        let extension = runtime.load(&manifest, &wasm).unwrap();
        let limits = Limits {
            fuel: Limits::CEILING.fuel,
            wall_time: Duration::from_secs(10),
            ..extension.limits()
        };
        group.bench_function(label, |b| {
            b.iter(|| {
                let request = InvocationRequest {
                    body: b"1000000".to_vec(),
                    content_type: "text/plain".into(),
                    metadata: vec![],
                };
                let outcome = rt.block_on(runtime.invoke(&extension, request, &limits));
                assert!(outcome.result.is_ok(), "{outcome:?}");
            });
        });
    }
    group.finish();
}

criterion_group!(benches, invoke_latency, load_latency, metering_cost);
criterion_main!(benches);

//! Worker-pool benchmark: invocation latency in-process vs through a warm worker (p50/p99),
//! idle worker memory, and pool churn (1,000 invocations over 50 tenants with 10 workers).
//! Prints a table; BENCHMARKS.md records the figures and this command:
//! `cargo bench -p palisade-worker --bench pool`.

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "benchmark: fail loudly, print results"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_model::InvocationRequest;
use palisade_model::{Limits, Manifest};
use palisade_runtime::{Runtime, RuntimeConfig};
use palisade_worker::{
    ExtensionSource, PlainLauncher, Supervisor, SupervisorConfig, WorkerCommand,
};

const N: usize = 2000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn report(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{label:<44} n={:<5} p50={:>9.1?} p99={:>9.1?} max={:>9.1?}",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        samples[samples.len() - 1]
    );
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Latency of `N` calls through a warm worker, after its first (cold) call and 100 warm-ups.
fn warm_worker(
    rt: &tokio::runtime::Runtime,
    supervisor: &Supervisor,
    source: &ExtensionSource,
    limits: &Limits,
) -> (Vec<Duration>, Duration) {
    rt.block_on(async {
        let started = Instant::now();
        let outcome = supervisor.invoke("bench", source, wire(), limits).await;
        assert!(outcome.result.is_ok(), "{outcome:?}");
        let first = started.elapsed();
        for _ in 0..100 {
            supervisor.invoke("bench", source, wire(), limits).await;
        }
        let mut samples = Vec::with_capacity(N);
        for _ in 0..N {
            let started = Instant::now();
            let outcome = supervisor.invoke("bench", source, wire(), limits).await;
            assert!(outcome.result.is_ok(), "{outcome:?}");
            samples.push(started.elapsed());
        }
        (samples, first)
    })
}

/// A supervisor whose workers are plain child processes (no jail).
fn plain_supervisor(config: SupervisorConfig) -> Arc<Supervisor> {
    let launcher = PlainLauncher {
        command: WorkerCommand {
            program: env!("CARGO_BIN_EXE_palisade-worker").into(),
            args: vec![],
        },
    };
    Arc::new(Supervisor::new(Arc::new(launcher), config))
}

fn wire() -> InvocationRequest {
    InvocationRequest {
        body: b"ping".to_vec(),
        content_type: "text/plain".into(),
        metadata: vec![],
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = palisade_testkit::guest_dir("fixtures/echo");
    let manifest_text = std::fs::read_to_string(dir.join("palisade.toml")).unwrap();
    let manifest = Manifest::parse(&manifest_text).unwrap();
    let wasm = std::fs::read(dir.join(&manifest.component.path)).unwrap();
    let source = ExtensionSource::new(manifest_text, wasm.clone());
    let limits = Limits::DEFAULT;

    // In-process.
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let extension = runtime.load(&manifest, &wasm).unwrap();
    let request = wire;
    let samples = rt.block_on(async {
        for _ in 0..100 {
            runtime.invoke(&extension, request(), &limits).await;
        }
        let mut samples = Vec::with_capacity(N);
        for _ in 0..N {
            let started = Instant::now();
            assert!(
                runtime
                    .invoke(&extension, request(), &limits)
                    .await
                    .result
                    .is_ok()
            );
            samples.push(started.elapsed());
        }
        samples
    });
    report("echo, in-process", samples);

    // Through a warm worker.
    let supervisor = plain_supervisor(SupervisorConfig::default());
    let (samples, first) = warm_worker(&rt, &supervisor, &source, &limits);
    report("echo, warm worker (no jail)", samples);
    println!(
        "{:<44} {first:.1?}",
        "first call: worker start + compile + call"
    );
    let snapshot = supervisor.snapshot();
    if let Some(kib) = snapshot.pids.first().and_then(|pid| rss_kib(*pid)) {
        println!("{:<44} {kib} KiB", "idle worker RSS (after 2,100 calls)");
    }
    rt.block_on(supervisor.shutdown());

    // Through a warm jailed worker (every layer, strict mode).
    let worker = env!("CARGO_BIN_EXE_palisade-worker");
    let mut template = palisade_jail::JailConfig::new("bench", 0, 0);
    template.launcher = Some(worker.into());
    template.launcher_args = vec!["__jail-launcher".into()];
    let command = WorkerCommand {
        program: worker.into(),
        args: vec!["--jailed".into()],
    };
    let launcher = palisade_worker::JailLauncher::new(command, template).unwrap();
    let supervisor = Arc::new(Supervisor::new(
        Arc::new(launcher),
        SupervisorConfig::default(),
    ));
    let (samples, first) = warm_worker(&rt, &supervisor, &source, &limits);
    report("echo, warm jailed worker", samples);
    println!(
        "{:<44} {first:.1?}",
        "first call: jail + worker start + compile"
    );
    rt.block_on(supervisor.shutdown());

    // Churn: 1,000 invocations over 50 tenants, at most 10 workers, 10 callers at a time.
    let supervisor = plain_supervisor(SupervisorConfig {
        max_workers: 10,
        ..Default::default()
    });
    let started = Instant::now();
    let (ok, overloaded, samples) = rt.block_on(async {
        let mut handles = Vec::new();
        for caller in 0..10u64 {
            let supervisor = Arc::clone(&supervisor);
            let source = source.clone();
            handles.push(tokio::spawn(async move {
                let mut state = caller.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                let (mut ok, mut overloaded, mut samples) = (0, 0, Vec::new());
                for _ in 0..100 {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let tenant = format!("tenant-{}", state % 50);
                    let t = Instant::now();
                    let outcome = supervisor.invoke(&tenant, &source, wire(), &limits).await;
                    samples.push(t.elapsed());
                    match outcome.result {
                        Ok(_) => ok += 1,
                        Err(e) if e.kind == palisade_model::ErrorKind::Overloaded => {
                            overloaded += 1
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                (ok, overloaded, samples)
            }));
        }
        let (mut ok, mut overloaded, mut samples) = (0, 0, Vec::new());
        for handle in handles {
            let (o, v, s) = handle.await.unwrap();
            ok += o;
            overloaded += v;
            samples.extend(s);
        }
        (ok, overloaded, samples)
    });
    let elapsed = started.elapsed();
    let snapshot = supervisor.snapshot();
    report("churn: 1,000 calls / 50 tenants / 10 workers", samples);
    println!(
        "churn totals: {elapsed:.2?} wall, {ok} ok, {overloaded} overloaded, {} workers started, {} evicted, {} crashed",
        snapshot.started, snapshot.evicted, snapshot.crashed
    );
    rt.block_on(supervisor.shutdown());
}

//! The language-level sandbox against hostile guests: each limit is attacked by a real
//! fixture compiled from `guests/fixtures`, and each test asserts the exact error kind, that
//! the attack stayed bounded in time, and that the same runtime then serves a normal call.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test and benchmark setup: a failure should stop the run loudly"
)]

use std::time::{Duration, Instant};

use palisade_model::InvocationRequest;
use palisade_model::{ErrorKind, Limits, Manifest, Outcome};
use palisade_runtime::{CacheSource, Extension, Runtime, RuntimeConfig};
use palisade_testkit::guest;

/// Generous bound for "did not hang": limits here are 100s of ms; CI machines are slow.
const BOUNDED: Duration = Duration::from_secs(20);

fn runtime(pooling: bool) -> Runtime {
    Runtime::new(RuntimeConfig {
        pooling,
        max_concurrent: 8,
        ..Default::default()
    })
    .unwrap()
}

fn load(runtime: &Runtime, fixture: &str) -> (Manifest, Extension) {
    let (manifest, wasm) = guest(fixture);
    let extension = runtime
        .load(&manifest, &wasm)
        .unwrap_or_else(|e| panic!("{fixture}: {e}"));
    (manifest, extension)
}

fn text(body: &str) -> InvocationRequest {
    InvocationRequest {
        body: body.as_bytes().to_vec(),
        content_type: "text/plain".into(),
        metadata: vec![],
    }
}

async fn invoke(
    runtime: &Runtime,
    extension: &Extension,
    request: InvocationRequest,
    limits: &Limits,
) -> (Outcome, Duration) {
    let started = Instant::now();
    let outcome = runtime.invoke(extension, request, limits).await;
    (outcome, started.elapsed())
}

fn kind(outcome: &Outcome) -> Option<ErrorKind> {
    outcome.result.as_ref().err().map(|e| e.kind)
}

/// After an attack, the same runtime must still serve an ordinary extension.
async fn assert_still_serves(runtime: &Runtime) {
    let (_, echo) = load(runtime, "fixtures/echo");
    let (outcome, _) = invoke(runtime, &echo, text("still alive"), &echo.limits()).await;
    let output = outcome
        .result
        .unwrap_or_else(|e| panic!("the runtime no longer serves: {e}"));
    assert_eq!(output.body, b"still alive");
}

async fn assert_attack_contained(
    fixture: &str,
    limits: Option<Limits>,
    expected: ErrorKind,
) -> Outcome {
    for pooling in [true, false] {
        let runtime = runtime(pooling);
        let (_, extension) = load(&runtime, fixture);
        let limits = limits.unwrap_or_else(|| extension.limits());
        let (outcome, elapsed) = invoke(&runtime, &extension, text("attack"), &limits).await;
        assert_eq!(
            kind(&outcome),
            Some(expected),
            "{fixture} (pooling: {pooling}): {outcome:?}"
        );
        assert!(elapsed < BOUNDED, "{fixture} took {elapsed:?}");
        assert_still_serves(&runtime).await;
        if pooling {
            continue;
        }
        return outcome;
    }
    unreachable!()
}

#[tokio::test]
async fn infinite_loop_exhausts_fuel() {
    let outcome =
        assert_attack_contained("fixtures/infinite-loop", None, ErrorKind::FuelExhausted).await;
    let (manifest, _) = guest("fixtures/infinite-loop");
    assert_eq!(
        Some(outcome.usage.fuel_consumed),
        manifest.limits.get_ref().fuel
    );
}

#[tokio::test]
async fn infinite_loop_hits_the_deadline_when_fuel_is_plentiful() {
    let limits = Limits {
        fuel: Limits::CEILING.fuel,
        wall_time: Duration::from_millis(200),
        ..Limits::DEFAULT
    };
    let outcome =
        assert_attack_contained("fixtures/infinite-loop", Some(limits), ErrorKind::Timeout).await;
    assert!(outcome.usage.wall_time_us >= 200_000, "{:?}", outcome.usage);
}

#[tokio::test]
async fn deadline_holds_without_fuel_metering() {
    let runtime = Runtime::new(RuntimeConfig {
        fuel_metering: false,
        ..Default::default()
    })
    .unwrap();
    let (_, extension) = load(&runtime, "fixtures/infinite-loop");
    let limits = Limits {
        wall_time: Duration::from_millis(150),
        ..extension.limits()
    };
    let (outcome, elapsed) = invoke(&runtime, &extension, text(""), &limits).await;
    assert_eq!(kind(&outcome), Some(ErrorKind::Timeout), "{outcome:?}");
    assert!(elapsed < BOUNDED);
    assert_still_serves(&runtime).await;
}

#[tokio::test]
async fn host_side_resources_count_against_the_memory_limit() {
    // Header maps live on the host's side; the guest's own memory barely grows.
    let outcome =
        assert_attack_contained("fixtures/host-hoard", None, ErrorKind::MemoryLimit).await;
    let message = outcome.result.unwrap_err().message;
    assert!(message.contains("resources"), "{message}");
    // One header map grown without bound is stopped the same way.
    let runtime = runtime(true);
    let (_, extension) = load(&runtime, "fixtures/host-hoard");
    let (outcome, _) = invoke(
        &runtime,
        &extension,
        text("one-big-map"),
        &extension.limits(),
    )
    .await;
    assert_eq!(kind(&outcome), Some(ErrorKind::MemoryLimit), "{outcome:?}");
}

#[tokio::test]
async fn a_memory_limit_over_what_the_engine_gives_is_refused_or_held_as_memory_limit() {
    let small = |pooling| {
        Runtime::new(RuntimeConfig {
            pooling,
            max_concurrent: 2,
            max_memory_bytes: 16 << 20,
            ..Default::default()
        })
        .unwrap()
    };
    let dir = palisade_testkit::guest_dir("fixtures/memory-bomb");
    let text_of = std::fs::read_to_string(dir.join("palisade.toml")).unwrap();
    let (asks_32, wasm) = guest("fixtures/memory-bomb");
    let asks_16 =
        Manifest::parse(&text_of.replace("memory = \"32 MiB\"", "memory = \"16 MiB\"")).unwrap();
    for pooling in [true, false] {
        let runtime = small(pooling);
        // The manifest asks for 32 MiB: refused at load, clearly.
        let refused = runtime.load(&asks_32, &wasm).err();
        assert_eq!(refused.map(|e| e.kind), Some(ErrorKind::InvalidManifest));
        // A caller passing more than the engine gives still gets `memory_limit`.
        let extension = runtime.load(&asks_16, &wasm).unwrap();
        let limits = Limits {
            memory_bytes: 1 << 30,
            ..extension.limits()
        };
        let (outcome, _) = invoke(&runtime, &extension, text(""), &limits).await;
        assert_eq!(
            kind(&outcome),
            Some(ErrorKind::MemoryLimit),
            "pooling {pooling}: {outcome:?}"
        );
    }
}

#[tokio::test]
async fn memory_bomb_hits_the_memory_limit() {
    let outcome =
        assert_attack_contained("fixtures/memory-bomb", None, ErrorKind::MemoryLimit).await;
    let (manifest, _) = guest("fixtures/memory-bomb");
    let limit = manifest.limits.get_ref().memory.map(|m| m.bytes()).unwrap();
    assert!(
        outcome.usage.peak_memory_bytes <= limit,
        "{:?}",
        outcome.usage
    );
    assert!(
        outcome.usage.peak_memory_bytes > limit / 2,
        "{:?}",
        outcome.usage
    );
}

#[tokio::test]
async fn deep_recursion_overflows_the_stack() {
    assert_attack_contained("fixtures/deep-recursion", None, ErrorKind::StackOverflow).await;
}

#[tokio::test]
async fn huge_output_is_refused() {
    let outcome =
        assert_attack_contained("fixtures/huge-output", None, ErrorKind::OutputTooLarge).await;
    assert_eq!(outcome.usage.output_bytes, 0);
}

#[tokio::test]
async fn log_flood_hits_the_log_limit() {
    let outcome = assert_attack_contained("fixtures/log-flood", None, ErrorKind::LogLimit).await;
    let (manifest, _) = guest("fixtures/log-flood");
    let limits = Limits::resolve(
        manifest.limits.get_ref(),
        &Limits::DEFAULT,
        &Limits::CEILING,
    );
    assert!(outcome.usage.log_bytes <= limits.log_bytes);
    assert!(outcome.usage.log_lines <= limits.log_lines);
    assert!(!outcome.logs.is_empty(), "logs up to the limit are kept");
}

#[tokio::test]
async fn panics_are_traps_with_the_panic_message() {
    let outcome = assert_attack_contained("fixtures/panic", None, ErrorKind::Trap).await;
    let message = outcome.result.unwrap_err().message;
    assert!(message.contains("fixture panicked on purpose"), "{message}");
}

#[tokio::test]
async fn guest_errors_are_reported_as_guest_error() {
    let outcome =
        assert_attack_contained("fixtures/guest-error", None, ErrorKind::GuestError).await;
    assert!(
        outcome
            .result
            .unwrap_err()
            .message
            .contains("fixture refuses")
    );
}

#[tokio::test]
async fn oversized_input_is_refused_before_the_guest_runs() {
    let runtime = runtime(true);
    let (_, echo) = load(&runtime, "fixtures/echo");
    let limits = Limits {
        input_bytes: 1024,
        ..echo.limits()
    };
    let (outcome, _) = invoke(&runtime, &echo, text(&"x".repeat(1025)), &limits).await;
    assert_eq!(kind(&outcome), Some(ErrorKind::InputTooLarge));
    assert_eq!(outcome.usage.fuel_consumed, 0, "the guest never ran");
    let (outcome, _) = invoke(&runtime, &echo, text(&"x".repeat(1024)), &limits).await;
    assert!(
        outcome.result.is_ok(),
        "exactly at the limit is allowed: {outcome:?}"
    );
}

#[tokio::test]
async fn every_invocation_gets_a_fresh_instance() {
    let runtime = runtime(true);
    let (_, counter) = load(&runtime, "fixtures/counter");
    for _ in 0..5 {
        let (outcome, _) = invoke(&runtime, &counter, text(""), &counter.limits()).await;
        assert_eq!(
            outcome.result.unwrap().body,
            b"1",
            "state leaked between invocations"
        );
    }
}

#[tokio::test]
async fn imports_outside_the_catalog_are_refused_by_name() {
    let runtime = runtime(true);
    let (manifest, wasm) = guest("fixtures/forbidden-import");
    let error = runtime.load(&manifest, &wasm).unwrap_err();
    assert_eq!(error.kind, ErrorKind::ImportNotAllowed);
    assert!(
        error.message.contains("evil:backdoor/shell@0.1.0"),
        "{}",
        error.message
    );
    assert_still_serves(&runtime).await;
}

#[tokio::test]
async fn garbage_and_mismatched_components_are_invalid() {
    let runtime = runtime(true);
    let (manifest, wasm) = guest("fixtures/echo");
    let error = runtime
        .load(&manifest, b"\0asm garbage \xff\xfe not a component")
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidComponent);
    let mut pinned = manifest.clone();
    pinned.component.sha256 = Some(palisade_model::manifest::Sha256Digest([7; 32]));
    let error = runtime.load(&pinned, &wasm).unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidComponent);
    assert!(
        error.message.contains("component.sha256"),
        "{}",
        error.message
    );
    // A core module is not a component of the extension world either.
    let error = runtime.load(&manifest, b"\0asm\x01\0\0\0").unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidComponent);
    assert_still_serves(&runtime).await;
}

#[tokio::test]
async fn echo_round_trips_bytes_and_usage_is_reported() {
    let runtime = runtime(true);
    let (_, echo) = load(&runtime, "fixtures/echo");
    let request = InvocationRequest {
        body: vec![0, 159, 146, 150, 255],
        content_type: "application/octet-stream".into(),
        metadata: vec![("request-id".into(), "r-1".into())],
    };
    let (outcome, _) = invoke(&runtime, &echo, request, &echo.limits()).await;
    let output = outcome.result.as_ref().unwrap();
    assert_eq!(output.body, [0, 159, 146, 150, 255]);
    assert_eq!(output.content_type, "application/octet-stream");
    assert!(outcome.usage.fuel_consumed > 0);
    assert!(outcome.usage.peak_memory_bytes > 0);
    assert_eq!(outcome.usage.input_bytes, 5);
    assert_eq!(outcome.usage.output_bytes, 5);
}

#[tokio::test]
async fn concurrent_invocations_share_one_engine_safely() {
    let runtime = std::sync::Arc::new(
        Runtime::new(RuntimeConfig {
            max_concurrent: 2,
            ..Default::default()
        })
        .unwrap(),
    );
    let (_, counter) = load(&runtime, "fixtures/counter");
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let runtime = std::sync::Arc::clone(&runtime);
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            runtime.invoke(&counter, text(""), &counter.limits()).await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().result.unwrap().body, b"1");
    }
}

#[tokio::test]
async fn compiled_components_are_cached_in_memory_and_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        cache_dir: Some(dir.path().to_owned()),
        ..Default::default()
    };
    let (manifest, wasm) = guest("fixtures/echo");
    let first = Runtime::new(config.clone()).unwrap();
    assert_eq!(
        first.load(&manifest, &wasm).unwrap().cache_source(),
        CacheSource::Compiled
    );
    assert_eq!(
        first.load(&manifest, &wasm).unwrap().cache_source(),
        CacheSource::Memory
    );

    let second = Runtime::new(config.clone()).unwrap();
    let extension = second.load(&manifest, &wasm).unwrap();
    assert_eq!(extension.cache_source(), CacheSource::Disk);
    let (outcome, _) = invoke(&second, &extension, text("from disk"), &extension.limits()).await;
    assert_eq!(outcome.result.unwrap().body, b"from disk");

    // A corrupted artifact is detected and replaced, never executed.
    let path = second.cache().disk_path(&extension.digest()).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let third = Runtime::new(config).unwrap();
    let extension = third.load(&manifest, &wasm).unwrap();
    assert_eq!(extension.cache_source(), CacheSource::Compiled);
    let (outcome, _) = invoke(&third, &extension, text("recompiled"), &extension.limits()).await;
    assert_eq!(outcome.result.unwrap().body, b"recompiled");
}

#[tokio::test]
async fn memory_cache_evicts_least_recently_used_within_its_budget() {
    let (echo_manifest, echo) = guest("fixtures/echo");
    let (counter_manifest, counter) = guest("fixtures/counter");
    let (panic_manifest, panic) = guest("fixtures/panic");
    let probe = Runtime::new(RuntimeConfig::default()).unwrap();
    probe.load(&echo_manifest, &echo).unwrap();
    let one = probe.cache().resident_bytes();
    // Room for about two components.
    let runtime = Runtime::new(RuntimeConfig {
        cache_memory_bytes: one * 5 / 2,
        ..Default::default()
    })
    .unwrap();
    let echo_digest = runtime.load(&echo_manifest, &echo).unwrap().digest();
    let counter_digest = runtime.load(&counter_manifest, &counter).unwrap().digest();
    // Touch echo so counter becomes the least recently used.
    assert_eq!(
        runtime.load(&echo_manifest, &echo).unwrap().cache_source(),
        CacheSource::Memory
    );
    let panic_digest = runtime.load(&panic_manifest, &panic).unwrap().digest();
    assert_eq!(runtime.cache().resident(), vec![echo_digest, panic_digest]);
    assert!(!runtime.cache().resident().contains(&counter_digest));

    let disabled = Runtime::new(RuntimeConfig {
        cache_memory_bytes: 0,
        ..Default::default()
    })
    .unwrap();
    disabled.load(&echo_manifest, &echo).unwrap();
    assert_eq!(
        disabled.load(&echo_manifest, &echo).unwrap().cache_source(),
        CacheSource::Compiled
    );
    assert!(disabled.cache().resident().is_empty());
}

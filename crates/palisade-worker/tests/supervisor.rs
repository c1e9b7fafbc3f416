//! The supervisor against real worker processes and against hostile fake workers: deadlines
//! enforced from outside, crashes and protocol violations turned into `worker_crashed` for
//! every invocation held, deterministic eviction, and no invocation lost.

#![allow(
    clippy::unwrap_used,
    reason = "test setup: a failure should stop the test loudly"
)]

use std::sync::Arc;
use std::time::Duration;

use palisade_model::InvocationRequest;
use palisade_model::{ErrorKind, Limits, Outcome};
use palisade_worker::{
    ExtensionSource, PlainLauncher, Supervisor, SupervisorConfig, WorkerCommand,
};

fn real_workers(config: SupervisorConfig) -> Supervisor {
    let launcher = PlainLauncher {
        command: WorkerCommand {
            program: env!("CARGO_BIN_EXE_palisade-worker").into(),
            args: vec![],
        },
    };
    Supervisor::new(Arc::new(launcher), config)
}

/// A "worker" written in shell: the script talks to the supervisor on fd 0, the socket.
fn fake_workers(script: &str, config: SupervisorConfig) -> Supervisor {
    let launcher = PlainLauncher {
        command: WorkerCommand {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
        },
    };
    Supervisor::new(Arc::new(launcher), config)
}

/// `Ready { pid: 1 }` as a frame (length, protocol version 3, postcard).
const READY: &str = r"\000\000\000\003\003\000\001";
/// `Loaded { extension: 1, result: Ok(()) }` as a frame.
const LOADED_1: &str = r"\000\000\000\004\003\001\001\000";

fn fixture(name: &str) -> ExtensionSource {
    let dir = palisade_testkit::guest_dir(name);
    let manifest = std::fs::read_to_string(dir.join("palisade.toml")).unwrap();
    let parsed = palisade_model::Manifest::parse(&manifest).unwrap();
    // The worker re-reads the manifest without our directory: point it nowhere it could use.
    let wasm = std::fs::read(dir.join(&parsed.component.path)).unwrap();
    ExtensionSource::new(manifest, wasm)
}

fn text(body: &str) -> InvocationRequest {
    InvocationRequest {
        body: body.as_bytes().to_vec(),
        content_type: "text/plain".into(),
        metadata: vec![],
    }
}

fn kind(outcome: &Outcome) -> Option<ErrorKind> {
    outcome.result.as_ref().err().map(|e| e.kind)
}

fn limits(wall_ms: u64) -> Limits {
    Limits {
        wall_time: Duration::from_millis(wall_ms),
        ..Limits::DEFAULT
    }
}

#[tokio::test]
async fn invocations_run_in_a_worker_and_limits_hold_there() {
    let supervisor = real_workers(SupervisorConfig::default());
    let echo = fixture("fixtures/echo");
    let outcome = supervisor
        .invoke("acme", &echo, text("hello"), &limits(2000))
        .await;
    assert_eq!(outcome.result.unwrap().body, b"hello");

    let looping = fixture("fixtures/infinite-loop");
    let fuel = Limits {
        fuel: 5_000_000,
        ..limits(5000)
    };
    let outcome = supervisor.invoke("acme", &looping, text(""), &fuel).await;
    assert_eq!(
        kind(&outcome),
        Some(ErrorKind::FuelExhausted),
        "{outcome:?}"
    );

    let outcome = supervisor
        .invoke("acme", &echo, text("again"), &limits(2000))
        .await;
    assert_eq!(outcome.result.unwrap().body, b"again");
    let snapshot = supervisor.snapshot();
    assert_eq!(
        (snapshot.started, snapshot.crashed),
        (1, 0),
        "one warm worker served all"
    );
    supervisor.shutdown().await;
    assert!(supervisor.snapshot().live.is_empty());
}

#[tokio::test]
async fn the_same_bytes_under_another_manifest_are_another_load() {
    let supervisor = real_workers(SupervisorConfig::default());
    let hi = fixture("examples/greeter");
    let hello = ExtensionSource::new(
        hi.manifest
            .replace("greeting = \"Hi\"", "greeting = \"Hello\""),
        hi.wasm.as_ref().clone(),
    );
    assert_eq!(hi.digest, hello.digest);
    assert_ne!(hi.load_key, hello.load_key);
    for (source, expected) in [
        (&hi, "Hi, Ada!"),
        (&hello, "Hello, Ada!"),
        (&hi, "Hi, Ada!"),
    ] {
        let outcome = supervisor
            .invoke("acme", source, text("Ada"), &limits(2000))
            .await;
        assert_eq!(outcome.result.unwrap().body, expected.as_bytes());
    }
    // One worker served both: the second manifest was loaded beside the first.
    assert_eq!(supervisor.snapshot().started, 1);
    supervisor.shutdown().await;
}

#[tokio::test]
async fn a_silent_worker_is_killed_at_the_deadline() {
    let script = format!(
        "printf '{READY}' >&0; /usr/bin/head -c 4 >/dev/null; printf '{LOADED_1}' >&0; exec /bin/sleep 30"
    );
    let supervisor = fake_workers(
        &script,
        SupervisorConfig {
            deadline_grace: Duration::from_millis(100),
            ..Default::default()
        },
    );
    let started = std::time::Instant::now();
    let outcome = supervisor
        .invoke("acme", &fixture("fixtures/echo"), text(""), &limits(200))
        .await;
    assert_eq!(kind(&outcome), Some(ErrorKind::Timeout), "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // The killed worker is gone, and counted (once its exit has been reaped).
    for _ in 0..100 {
        if supervisor.snapshot().crashed == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(supervisor.snapshot().crashed, 1);
    assert!(supervisor.snapshot().live.is_empty());
}

#[tokio::test]
async fn a_worker_that_dies_fails_every_invocation_it_held() {
    // Says Ready and Loaded, reads the invocations, then exits with status 3.
    let script = format!(
        "printf '{READY}' >&0; /usr/bin/head -c 4 >/dev/null; printf '{LOADED_1}' >&0; /bin/sleep 1; exit 3"
    );
    let supervisor = Arc::new(fake_workers(&script, SupervisorConfig::default()));
    let echo = fixture("fixtures/echo");
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let supervisor = Arc::clone(&supervisor);
        let echo = echo.clone();
        tasks.push(tokio::spawn(async move {
            supervisor
                .invoke("acme", &echo, text(""), &limits(5000))
                .await
        }));
    }
    for task in tasks {
        let outcome = task.await.unwrap();
        assert_eq!(
            kind(&outcome),
            Some(ErrorKind::WorkerCrashed),
            "{outcome:?}"
        );
        let message = outcome.result.unwrap_err().message;
        assert!(message.contains("exited with status 3"), "{message}");
    }
}

#[tokio::test]
async fn protocol_violations_kill_the_worker() {
    for (garbage, expected) in [
        (r"\377\377\377\377", "exceeds"), // a frame far over the maximum
        (r"\000\000\000\002\007\000", "version"), // wrong protocol version
        (
            r"\000\000\000\004\003\001\011\000",
            "which it was not loading",
        ), // an answer nobody asked for
        (r"\000\000\000\004\003\002\011\000", "malformed"), // a truncated message
        (
            r"\000\000\000\010\003\003\011\000\000\000\000\000",
            "host call for invocation 9, which it does not hold",
        ), // a key-value call for an invocation it was never given
    ] {
        let script = format!(
            "printf '{READY}' >&0; /usr/bin/head -c 4 >/dev/null; printf '{garbage}' >&0; exec /bin/sleep 30"
        );
        let supervisor = fake_workers(&script, SupervisorConfig::default());
        let outcome = supervisor
            .invoke("acme", &fixture("fixtures/echo"), text(""), &limits(5000))
            .await;
        assert_eq!(
            kind(&outcome),
            Some(ErrorKind::WorkerCrashed),
            "{garbage}: {outcome:?}"
        );
        let message = outcome.result.unwrap_err().message;
        assert!(
            message.contains("protocol violation") && message.contains(expected),
            "{message}"
        );
    }
}

#[tokio::test]
async fn a_worker_that_never_starts_is_reported_and_backed_off() {
    let supervisor = fake_workers("exit 9", SupervisorConfig::default());
    let outcome = supervisor
        .invoke("acme", &fixture("fixtures/echo"), text(""), &limits(100))
        .await;
    assert_eq!(kind(&outcome), Some(ErrorKind::WorkerCrashed));
    assert!(
        outcome
            .result
            .unwrap_err()
            .message
            .contains("exited with status 9")
    );
    // Within the backoff window a second call fails fast instead of forking again.
    let config = SupervisorConfig {
        restart_backoff: (Duration::from_secs(30), Duration::from_secs(30)),
        ..Default::default()
    };
    let supervisor = fake_workers("exit 9", config);
    supervisor
        .invoke("acme", &fixture("fixtures/echo"), text(""), &limits(100))
        .await;
    let outcome = supervisor
        .invoke("acme", &fixture("fixtures/echo"), text(""), &limits(100))
        .await;
    assert!(outcome.result.unwrap_err().message.contains("backing off"));
    assert_eq!(supervisor.snapshot().started, 1);
}

#[tokio::test]
async fn idle_workers_are_evicted_least_recently_used_first() {
    let supervisor = real_workers(SupervisorConfig {
        max_workers: 2,
        ..Default::default()
    });
    let echo = fixture("fixtures/echo");
    for tenant in ["b", "a", "b", "c"] {
        let outcome = supervisor
            .invoke(tenant, &echo, text(tenant), &limits(5000))
            .await;
        assert_eq!(outcome.result.unwrap().body, tenant.as_bytes());
    }
    let snapshot = supervisor.snapshot();
    assert_eq!(snapshot.live, ["b", "c"], "a was the least recently used");
    assert_eq!(
        (snapshot.started, snapshot.evicted, snapshot.crashed),
        (3, 1, 0)
    );
    supervisor.shutdown().await;
}

#[tokio::test]
async fn many_tenants_over_a_small_pool_lose_nothing() {
    let supervisor = Arc::new(real_workers(SupervisorConfig {
        max_workers: 3,
        ..Default::default()
    }));
    let counter = fixture("fixtures/counter");
    let mut tasks = Vec::new();
    for i in 0..24 {
        let supervisor = Arc::clone(&supervisor);
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let tenant = format!("t{}", i % 6);
            supervisor
                .invoke(&tenant, &counter, text(""), &limits(20_000))
                .await
        }));
    }
    let mut answered = 0;
    for task in tasks {
        let outcome = task.await.unwrap();
        match &outcome.result {
            Ok(output) => assert_eq!(output.body, b"1"),
            // Every worker busy is a typed, retryable answer, never a loss.
            Err(error) => assert_eq!(error.kind, ErrorKind::Overloaded, "{error}"),
        }
        answered += 1;
    }
    assert_eq!(answered, 24);
    assert_eq!(supervisor.snapshot().crashed, 0);
    supervisor.shutdown().await;
}

#[tokio::test]
async fn an_outcome_over_its_bounds_is_a_protocol_violation() {
    use palisade_model::{InvocationError, LogEntry, LogLevel, LogSource, Output};
    use palisade_worker::protocol::{FromWorker, encode};
    let output = |content_type: String| Outcome {
        result: Ok(Output {
            body: b"ok".to_vec(),
            content_type,
        }),
        usage: Default::default(),
        logs: Vec::new(),
        isolation: Default::default(),
    };
    let mut forged_log = output("text/plain".into());
    forged_log.logs.push(LogEntry {
        level: LogLevel::Info,
        source: LogSource::Log,
        message: "fine\n2026-01-01T00:00:00Z ERROR forged\u{1b}[2J".into(),
        elapsed_us: 0,
        unix_ms: 0,
    });
    let cases = [
        (output("x".repeat(32 << 10)), "content type"),
        (
            Outcome::rejected(InvocationError::new(
                ErrorKind::GuestError,
                "e".repeat(64 << 10),
            )),
            "error message",
        ),
        (forged_log, "unescaped control characters"),
        (
            Outcome {
                result: Ok(Output {
                    body: vec![0; 2 << 20],
                    content_type: "text/plain".into(),
                }),
                ..output(String::new())
            },
            "over its limit",
        ),
    ];
    for (outcome, expected) in cases {
        // Ids come from one counter: the load took 1, the invocation gets 2.
        let frame = encode(&FromWorker::Done {
            invocation: 2,
            outcome,
        })
        .unwrap();
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &frame).unwrap();
        // Answers the load, waits until the invocation is surely sent, then sends the outcome.
        let script = format!(
            "printf '{READY}' >&0; /usr/bin/head -c 4 >/dev/null; printf '{LOADED_1}' >&0; /bin/sleep 1; /bin/cat {} >&0; exec /bin/sleep 30",
            file.path().display()
        );
        let supervisor = fake_workers(&script, SupervisorConfig::default());
        let mut limits = limits(10_000);
        limits.output_bytes = 1 << 20;
        let outcome = supervisor
            .invoke("acme", &fixture("fixtures/echo"), text(""), &limits)
            .await;
        assert_eq!(
            kind(&outcome),
            Some(ErrorKind::WorkerCrashed),
            "{expected}: {outcome:?}"
        );
        let message = outcome.result.unwrap_err().message;
        assert!(
            message.contains("protocol violation") && message.contains(expected),
            "{message}"
        );
    }
}

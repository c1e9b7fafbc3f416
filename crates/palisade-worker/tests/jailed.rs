//! Workers in real jails: every wasm-level attack still gets its exact typed error through a
//! confined worker, an attack the wasm layer does not stop (memory beyond the tenant's cgroup)
//! kills only that tenant's worker and is reported as `worker_crashed` with the reason, and
//! strict mode refuses to run when a layer is missing.

#![allow(
    clippy::unwrap_used,
    reason = "test setup: a failure should stop the test loudly"
)]

use std::sync::Arc;
use std::time::Duration;

use palisade_jail::{CgroupVersion, JailConfig, Mode};
use palisade_model::InvocationRequest;
use palisade_model::{ErrorKind, IsolationMode, Limits, Outcome};
use palisade_worker::{ExtensionSource, JailLauncher, Supervisor, SupervisorConfig, WorkerCommand};

const WORKER: &str = env!("CARGO_BIN_EXE_palisade-worker");

fn jailed_supervisor(template: JailConfig) -> Supervisor {
    let mut template = template;
    template.launcher = Some(WORKER.into());
    template.launcher_args = vec!["__jail-launcher".into()];
    let command = WorkerCommand {
        program: WORKER.into(),
        args: vec!["--jailed".into()],
    };
    let launcher = JailLauncher::new(command, template).unwrap();
    Supervisor::new(Arc::new(launcher), SupervisorConfig::default())
}

fn fixture(name: &str) -> (ExtensionSource, Limits) {
    let dir = palisade_testkit::guest_dir(name);
    let text = std::fs::read_to_string(dir.join("palisade.toml")).unwrap();
    let manifest = palisade_model::Manifest::parse(&text).unwrap();
    let wasm = std::fs::read(dir.join(&manifest.component.path)).unwrap();
    let limits = Limits::resolve(
        manifest.limits.get_ref(),
        &Limits::DEFAULT,
        &Limits::CEILING,
    );
    (ExtensionSource::new(text, wasm), limits)
}

fn input() -> InvocationRequest {
    InvocationRequest {
        body: b"hi".to_vec(),
        content_type: "text/plain".into(),
        metadata: vec![],
    }
}

fn kind(outcome: &Outcome) -> Option<ErrorKind> {
    outcome.result.as_ref().err().map(|e| e.kind)
}

#[tokio::test]
async fn wasm_attacks_get_the_same_typed_errors_inside_the_jail() {
    let supervisor = jailed_supervisor(JailConfig::new("unused", 0, 0));
    for (name, expected) in [
        ("fixtures/infinite-loop", Some(ErrorKind::FuelExhausted)),
        ("fixtures/memory-bomb", Some(ErrorKind::MemoryLimit)),
        ("fixtures/deep-recursion", Some(ErrorKind::StackOverflow)),
        ("fixtures/huge-output", Some(ErrorKind::OutputTooLarge)),
        ("fixtures/log-flood", Some(ErrorKind::LogLimit)),
        ("fixtures/panic", Some(ErrorKind::Trap)),
        ("fixtures/guest-error", Some(ErrorKind::GuestError)),
        (
            "fixtures/forbidden-import",
            Some(ErrorKind::ImportNotAllowed),
        ),
        ("fixtures/counter", None),
        ("fixtures/echo", None),
    ] {
        let (source, limits) = fixture(name);
        let outcome = supervisor.invoke("acme", &source, input(), &limits).await;
        assert_eq!(kind(&outcome), expected, "{name}: {outcome:?}");
        assert_eq!(outcome.isolation.mode, IsolationMode::Jailed, "{name}");
        assert!(outcome.isolation.missing.is_empty());
    }
    let snapshot = supervisor.snapshot();
    assert_eq!(
        (snapshot.started, snapshot.crashed),
        (1, 0),
        "one jailed worker survived every attack"
    );
    supervisor.shutdown().await;
}

#[tokio::test]
async fn memory_beyond_the_tenant_cgroup_kills_only_that_worker() {
    let mut template = JailConfig::new("unused", 0, 0);
    template.limits.memory_max = Some(96 << 20);
    let supervisor = jailed_supervisor(template);
    let (bomb, limits) = fixture("fixtures/memory-bomb");
    // The wasm layer would allow 200 MiB; the tenant's cgroup allows 96 MiB for the process.
    let generous = Limits {
        memory_bytes: 200 << 20,
        wall_time: Duration::from_secs(20),
        ..limits
    };
    let (echo, echo_limits) = fixture("fixtures/echo");
    let neighbour = supervisor
        .invoke("neighbour", &echo, input(), &echo_limits)
        .await;
    assert!(neighbour.result.is_ok());

    let outcome = supervisor.invoke("greedy", &bomb, input(), &generous).await;
    assert_eq!(
        kind(&outcome),
        Some(ErrorKind::WorkerCrashed),
        "{outcome:?}"
    );
    let message = outcome.result.unwrap_err().message;
    assert!(message.contains("out-of-memory"), "{message}");

    // The other tenant's worker is untouched and still serves.
    let neighbour = supervisor
        .invoke("neighbour", &echo, input(), &echo_limits)
        .await;
    assert_eq!(neighbour.result.unwrap().body, b"hi");
    // The greedy tenant gets a fresh worker after its backoff.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = supervisor
        .invoke("greedy", &echo, input(), &echo_limits)
        .await;
    assert_eq!(again.result.unwrap().body, b"hi");
    let snapshot = supervisor.snapshot();
    assert_eq!(snapshot.crashed, 1);
    assert_eq!(snapshot.started, 3);
    supervisor.shutdown().await;
}

/// The cgroup hierarchy this host does not use, so asking for it must fail.
fn unavailable_cgroup_version() -> CgroupVersion {
    let cgroups = palisade_jail::doctor()
        .into_iter()
        .find(|l| l.name == "cgroups")
        .unwrap();
    if cgroups.detail.contains("using v1") {
        CgroupVersion::V2
    } else {
        CgroupVersion::V1
    }
}

#[tokio::test]
async fn strict_mode_refuses_and_degraded_mode_says_what_is_missing() {
    let mut template = JailConfig::new("unused", 0, 0);
    template.cgroup_version = unavailable_cgroup_version();
    let (echo, limits) = fixture("fixtures/echo");

    let strict = jailed_supervisor(template.clone());
    let outcome = strict.invoke("acme", &echo, input(), &limits).await;
    assert_eq!(
        kind(&outcome),
        Some(ErrorKind::IsolationUnavailable),
        "{outcome:?}"
    );
    assert!(outcome.result.unwrap_err().message.contains("cgroups"));

    template.mode = Mode::AllowDegraded;
    let degraded = jailed_supervisor(template);
    let outcome = degraded.invoke("acme", &echo, input(), &limits).await;
    assert_eq!(outcome.result.as_ref().unwrap().body, b"hi");
    assert_eq!(outcome.isolation.mode, IsolationMode::Degraded);
    assert_eq!(outcome.isolation.missing, ["cgroups"]);
    degraded.shutdown().await;
}

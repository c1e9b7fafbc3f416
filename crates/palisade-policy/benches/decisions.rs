//! Decision latency for a realistic policy set: the shipped baseline plus 100 tenants with 10
//! rules each (1,000 rules), and one tenant holding all 1,000 rules itself. Precomputed
//! (`PreparedDeployment::authorize`, a table lookup) against evaluated (`PolicyEngine::authorize`,
//! Cedar on the baseline and the tenant layer). Criterion reports means; `percentiles` prints
//! p50/p99 over batches. Results and the command are recorded in BENCHMARKS.md.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test and benchmark setup: a failure should stop the run loudly"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use palisade_policy::{
    Action, CallContext, Deployment, LimitSet, PolicyDocument, PolicyEngine, Principal, Resource,
    Scope, TenantId,
};

/// Ten rules of the kinds a tenant writes: logs and config, a few API hosts, namespaces, a
/// forbidden secret, a time-of-day rule.
fn tenant_rules(tenant: &str, count: usize) -> String {
    let mut cedar = String::from(
        "permit (principal, action in [Action::\"log:write\", Action::\"config:read\"], resource);\n",
    );
    for i in 1..count {
        let rule = match i % 6 {
            0 => format!(
                "permit (principal, action == Action::\"http:request\", resource is Host) when {{ resource.hostname == \"api{i}.{tenant}.example\" && resource.port == 443 }};"
            ),
            1 => format!(
                "permit (principal, action in [Action::\"kv:read\", Action::\"kv:write\"], resource is KvNamespace) when {{ resource.name == \"ns{i}\" }};"
            ),
            2 => format!(
                "forbid (principal, action == Action::\"secret:use\", resource is Secret) when {{ resource.name == \"root{i}\" }};"
            ),
            3 => format!(
                "permit (principal, action == Action::\"secret:use\", resource is Secret) when {{ resource.name == \"key{i}\" && principal.name == \"ext{}\" }};",
                i % 7
            ),
            4 => format!(
                "permit (principal, action == Action::\"http:request\", resource is Host) when {{ resource.hostname == \"hooks{i}.example\" && context has method && context.method == \"POST\" }};"
            ),
            _ => format!(
                "forbid (principal, action == Action::\"kv:write\", resource is KvNamespace) when {{ resource.name == \"frozen{i}\" && context.time > 4102444800 }};"
            ),
        };
        cedar.push_str(&rule);
        cedar.push('\n');
    }
    cedar
}

fn layer(tenant: &str, rules: usize) -> palisade_policy::CompiledLayer {
    PolicyDocument {
        scope: Scope::Tenant(TenantId::new(tenant).unwrap()),
        description: None,
        limits: LimitSet::new(),
        egress: Default::default(),
        cedar: tenant_rules(tenant, rules),
        cedar_source: "bench".into(),
    }
    .compile()
    .unwrap()
}

fn setup() -> Arc<PolicyEngine> {
    let mut engine = PolicyEngine::shipped().unwrap();
    for t in 0..100 {
        engine.install(layer(&format!("tenant{t}"), 10));
    }
    engine.install(layer("big", 1_000));
    Arc::new(engine)
}

fn manifest() -> palisade_model::Manifest {
    palisade_model::Manifest::parse(
        "[extension]\nname = \"ext1\"\nversion = \"1.0.0\"\napi = \"palisade:extension@1.0.0\"\n[component]\npath = \"x.wasm\"\n[config]\ngreeting = \"hi\"\n",
    )
    .unwrap()
}

struct Case {
    name: &'static str,
    principal: Principal,
    action: Action,
    resource: Resource,
}

fn cases() -> Vec<Case> {
    let t42 = TenantId::new("tenant42").unwrap();
    let big = TenantId::new("big").unwrap();
    let mut https = Resource::parse("https://api6.tenant42.example/v1", &t42).unwrap();
    if let Resource::Host(host) = &mut https {
        host.ip = Some("203.0.113.10".parse().unwrap());
    }
    vec![
        Case {
            name: "log:write, 100 tenants x 10 rules",
            principal: Principal::parse("tenant42/ext1@1.0.0").unwrap(),
            action: Action::LogWrite,
            resource: Resource::parse("log", &t42).unwrap(),
        },
        Case {
            name: "log:write, one tenant with 1000 rules",
            principal: Principal::parse("big/ext1@1.0.0").unwrap(),
            action: Action::LogWrite,
            resource: Resource::parse("log", &big).unwrap(),
        },
        Case {
            name: "http:request, 100 tenants x 10 rules",
            principal: Principal::parse("tenant42/ext1@1.0.0").unwrap(),
            action: Action::HttpRequest,
            resource: https,
        },
    ]
}

fn decisions(c: &mut Criterion) {
    let engine = setup();
    let context = CallContext::at(1_750_000_000);
    let mut group = c.benchmark_group("policy");
    for case in cases() {
        group.bench_function(format!("evaluated/{}", case.name), |b| {
            b.iter(|| {
                black_box(engine.authorize(
                    black_box(&case.principal),
                    case.action,
                    black_box(&case.resource),
                    &context,
                ))
            })
        });
        if case.action == Action::LogWrite {
            let deployment = Deployment::new(case.principal.tenant.clone(), manifest());
            let prepared = engine.prepare(&deployment);
            assert_eq!(prepared.precomputed(), 2);
            group.bench_function(format!("precomputed/{}", case.name), |b| {
                b.iter(|| {
                    black_box(
                        prepared
                            .authorize(case.action, black_box(&case.resource), &context)
                            .allowed,
                    )
                })
            });
        }
    }
    group.finish();
}

/// p50 and p99 of per-call latency, measured over batches (one timer read per batch, so the
/// timer's own cost does not swamp a table lookup).
fn percentiles(_: &mut Criterion) {
    let engine = setup();
    let context = CallContext::at(1_750_000_000);
    let measure = |batch: usize, f: &mut dyn FnMut()| {
        let mut samples: Vec<f64> = (0..2_000)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..batch {
                    f();
                }
                start.elapsed().as_nanos() as f64 / batch as f64
            })
            .collect();
        samples.sort_by(f64::total_cmp);
        (
            samples[samples.len() / 2],
            samples[samples.len() * 99 / 100],
        )
    };
    println!("\npolicy decision latency per call (2,000 batches):");
    for case in cases() {
        let (p50, p99) = measure(10, &mut || {
            black_box(engine.authorize(&case.principal, case.action, &case.resource, &context));
        });
        println!(
            "  evaluated   {:<40} p50 {:>9.0} ns  p99 {:>9.0} ns",
            case.name, p50, p99
        );
        if case.action == Action::LogWrite {
            let prepared =
                engine.prepare(&Deployment::new(case.principal.tenant.clone(), manifest()));
            let (p50, p99) = measure(1_000, &mut || {
                black_box(
                    prepared
                        .authorize(case.action, black_box(&case.resource), &context)
                        .allowed,
                );
            });
            println!(
                "  precomputed {:<40} p50 {:>9.1} ns  p99 {:>9.1} ns",
                case.name, p50, p99
            );
        }
    }
}

criterion_group!(benches, decisions, percentiles);
criterion_main!(benches);

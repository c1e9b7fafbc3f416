//! Property tests of the layering rules: effective limits never exceed any layer, a `forbid`
//! in any layer always denies, removing a permit never grants more, and no input panics.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test setup: a failure should stop the run loudly"
)]

mod common;

use common::manifest;
use palisade_model::RequestedLimits;
use palisade_model::units::{ByteSize, DurationSpec};
use palisade_policy::{
    Action, CallContext, Deployment, LimitKey, LimitSet, PolicyDocument, PolicyEngine, Principal,
    Resource, Scope, TenantId,
};
use proptest::prelude::*;

fn document(scope: Scope, limits: LimitSet, cedar: String) -> PolicyDocument {
    PolicyDocument {
        scope,
        description: None,
        limits,
        egress: Default::default(),
        cedar,
        cedar_source: "test".into(),
    }
}

/// A valid value for `key`: between its minimum and the platform ceiling.
fn limit_value(key: LimitKey) -> impl Strategy<Value = u64> {
    let low = match key {
        LimitKey::Memory => 64 << 10,
        LimitKey::WorkerMemory => 16 << 20,
        LimitKey::Fuel
        | LimitKey::WallTime
        | LimitKey::Rate
        | LimitKey::Concurrency
        | LimitKey::WorkerCpu
        | LimitKey::LogLines => 1,
        _ => 0,
    };
    low..=key.platform_ceiling()
}

fn limit_set() -> impl Strategy<Value = LimitSet> {
    let entries: Vec<_> = LimitKey::ALL
        .iter()
        .map(|key| proptest::option::of(limit_value(*key)).prop_map(move |v| (*key, v)))
        .collect();
    entries.prop_map(|entries| {
        let mut set = LimitSet::new();
        for (key, value) in entries {
            if let Some(value) = value {
                set.set(key, value);
            }
        }
        set
    })
}

fn requested() -> impl Strategy<Value = RequestedLimits> {
    (
        proptest::option::of(1u64..=20_000_000_000),
        proptest::option::of(1u64..=120_000_000),
        proptest::option::of(64u64 << 10..=2 << 30),
        proptest::option::of(0u64..=32 << 20),
        proptest::option::of(1u32..=20_000),
    )
        .prop_map(|(fuel, wall, memory, output, lines)| RequestedLimits {
            fuel,
            wall_time: wall.map(|us| DurationSpec(std::time::Duration::from_micros(us))),
            memory: memory.map(ByteSize),
            output: output.map(ByteSize),
            log_lines: lines,
            ..Default::default()
        })
}

const RUNTIME_KEYS: [LimitKey; 7] = [
    LimitKey::Fuel,
    LimitKey::WallTime,
    LimitKey::Memory,
    LimitKey::Output,
    LimitKey::Logs,
    LimitKey::LogLines,
    LimitKey::Input,
];

fn manifest_value(requested: &RequestedLimits, key: LimitKey) -> u64 {
    let resolved = palisade_model::Limits::resolve(
        requested,
        &palisade_model::Limits::DEFAULT,
        &palisade_model::Limits::CEILING,
    );
    match key {
        LimitKey::Fuel => resolved.fuel,
        LimitKey::WallTime => resolved.wall_time.as_micros() as u64,
        LimitKey::Memory => resolved.memory_bytes,
        LimitKey::Output => resolved.output_bytes,
        LimitKey::Logs => resolved.log_bytes,
        LimitKey::LogLines => u64::from(resolved.log_lines),
        LimitKey::Input => resolved.input_bytes,
        _ => u64::MAX,
    }
}

/// One generated Cedar rule: effect, action, and a condition fitting the action's resource.
#[derive(Debug, Clone)]
struct Rule {
    permit: bool,
    action: Action,
    condition: usize,
}

fn conditions(action: Action) -> &'static [&'static str] {
    match action {
        Action::HttpRequest => &[
            "true",
            "resource.hostname == \"api.example\"",
            "resource.port == 443",
            "resource has ip && resource.ip.isInRange(ip(\"10.0.0.0/8\"))",
            "context has method && context.method == \"GET\"",
            "principal.name == \"ext-a\"",
        ],
        Action::KvRead | Action::KvWrite => &[
            "true",
            "resource.name == \"orders\"",
            "resource.tenant == principal.tenant",
            "principal.name == \"ext-a\"",
            "context.time > 1000",
        ],
        _ => &[
            "true",
            "resource.tenant == principal.tenant",
            "principal.name == \"ext-b\"",
            "principal in Tenant::\"acme\"",
        ],
    }
}

fn rule() -> impl Strategy<Value = Rule> {
    (any::<bool>(), 0usize..6, 0usize..6).prop_map(|(permit, action, condition)| {
        let action = Action::ALL[action];
        Rule {
            permit,
            action,
            condition: condition % conditions(action).len(),
        }
    })
}

fn cedar(prefix: &str, rules: &[Rule]) -> String {
    rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            format!(
                "@id(\"{prefix}-{i}\")\n{} (principal, action == Action::\"{}\", resource) when {{ {} }};\n",
                if rule.permit { "permit" } else { "forbid" },
                rule.action,
                conditions(rule.action)[rule.condition]
            )
        })
        .collect()
}

fn principals() -> Vec<Principal> {
    ["acme/ext-a@1.0.0", "acme/ext-b@1.0.0", "globex/ext-a@2.0.0"]
        .iter()
        .map(|p| Principal::parse(p).unwrap())
        .collect()
}

/// A request from a small pool: (principal index, action, resource text, ip, time, method).
fn request() -> impl Strategy<Value = (usize, Action, Resource, CallContext)> {
    let acme = TenantId::new("acme").unwrap();
    (
        0usize..3,
        0usize..6,
        0usize..3,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(move |(p, a, r, late, get)| {
            let action = Action::ALL[a];
            let text = match action {
                Action::HttpRequest => [
                    "https://api.example/",
                    "https://other.example:8443/",
                    "http://10.1.1.1/",
                ][r],
                Action::KvRead | Action::KvWrite => {
                    ["kv:orders", "kv:globex/orders", "kv:acme/cache"][r]
                }
                Action::SecretUse => ["secret:key", "secret:globex/key", "secret:acme/key"][r],
                Action::LogWrite => ["log", "log:globex", "log:acme"][r],
                Action::ConfigRead => ["config:k", "config:globex/k", "config:acme/k"][r],
            };
            let mut resource = Resource::parse(text, &acme).unwrap();
            if let Resource::Host(host) = &mut resource
                && host.ip.is_none()
            {
                host.ip = Some("203.0.113.5".parse().unwrap());
            }
            let context = CallContext {
                time: if late { 5_000 } else { 10 },
                method: get.then(|| "GET".to_owned()),
                ..CallContext::default()
            };
            (p, action, resource, context)
        })
}

fn engine(baseline: &[Rule], acme: &[Rule], globex: &[Rule]) -> PolicyEngine {
    let compile = |scope: Scope, prefix, rules: &[Rule]| {
        document(scope, LimitSet::new(), cedar(prefix, rules))
            .compile()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let mut engine = PolicyEngine::new(compile(Scope::Baseline, "b", baseline)).unwrap();
    engine.install(compile(
        Scope::Tenant(TenantId::new("acme").unwrap()),
        "acme",
        acme,
    ));
    engine.install(compile(
        Scope::Tenant(TenantId::new("globex").unwrap()),
        "globex",
        globex,
    ));
    engine
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn effective_limits_never_exceed_any_layer(
        baseline in limit_set(),
        tenant in limit_set(),
        requested in requested(),
    ) {
        let acme = TenantId::new("acme").unwrap();
        let mut engine = PolicyEngine::new(
            document(Scope::Baseline, baseline.clone(), String::new()).compile().unwrap(),
        )
        .unwrap();
        engine.install(
            document(Scope::Tenant(acme.clone()), tenant.clone(), String::new()).compile().unwrap(),
        );
        let mut manifest = manifest("x", "");
        *manifest.limits.get_mut() = requested.clone();
        let limits = engine.effective_limits(&Deployment::new(acme, manifest));
        for key in LimitKey::ALL {
            let value = limits.get(key);
            prop_assert!(value <= key.platform_ceiling(), "{key:?} above the platform");
            if let Some(b) = baseline.get(key) {
                prop_assert!(value <= b, "{key:?} above the baseline");
            }
            if let Some(t) = tenant.get(key) {
                prop_assert!(value <= t, "{key:?} above the tenant");
            }
            if RUNTIME_KEYS.contains(&key) {
                prop_assert!(value <= manifest_value(&requested, key), "{key:?} above the manifest");
            }
            // And it is the minimum, not something smaller.
            let expected = [
                Some(key.platform_ceiling()),
                baseline.get(key),
                tenant.get(key),
                RUNTIME_KEYS.contains(&key).then(|| manifest_value(&requested, key)),
            ]
            .into_iter()
            .flatten()
            .min();
            prop_assert_eq!(Some(value), expected, "{:?}", key);
        }
    }

    #[test]
    fn a_forbid_in_any_layer_always_denies(
        baseline in proptest::collection::vec(rule(), 0..8),
        acme in proptest::collection::vec(rule(), 0..8),
        globex in proptest::collection::vec(rule(), 0..8),
        (p, action, resource, context) in request(),
        layer in 0usize..2,
    ) {
        let mut rules = [baseline, acme, globex];
        let principal = &principals()[p];
        let tenant_layer = if principal.tenant.as_str() == "acme" { 1 } else { 2 };
        let target = if layer == 0 { 0 } else { tenant_layer };
        // A forbid that matches this action unconditionally.
        rules[target].push(Rule { permit: false, action, condition: 0 });
        let forbid_id = format!(
            "{}-{}",
            ["b", "acme", "globex"][target],
            rules[target].len() - 1
        );
        let engine = engine(&rules[0], &rules[1], &rules[2]);
        let decision = engine.authorize(principal, action, &resource, &context);
        prop_assert!(!decision.allowed, "{decision:?}");
        prop_assert!(
            decision.reasons.iter().any(|r| r.policy.as_deref() == Some(forbid_id.as_str())),
            "the forbid {} is not among the reasons {:?}", forbid_id, decision.reasons
        );
    }

    #[test]
    fn removing_a_permit_never_grants_more(
        baseline in proptest::collection::vec(rule(), 0..8),
        acme in proptest::collection::vec(rule(), 1..8),
        globex in proptest::collection::vec(rule(), 0..8),
        requests in proptest::collection::vec(request(), 1..8),
        layer in 0usize..3,
        pick in any::<prop::sample::Index>(),
    ) {
        let mut rules = [baseline, acme, globex];
        let full = engine(&rules[0], &rules[1], &rules[2]);
        let permits: Vec<usize> = rules[layer]
            .iter()
            .enumerate()
            .filter(|(_, r)| r.permit)
            .map(|(i, _)| i)
            .collect();
        prop_assume!(!permits.is_empty());
        rules[layer].remove(permits[pick.index(permits.len())]);
        let reduced = engine(&rules[0], &rules[1], &rules[2]);
        for (p, action, resource, context) in requests {
            let principal = &principals()[p];
            let before = full.authorize(principal, action, &resource, &context);
            let after = reduced.authorize(principal, action, &resource, &context);
            prop_assert!(!after.allowed || before.allowed, "removing a permit granted {action} on {resource}");
        }
    }

    #[test]
    fn no_document_text_panics(text in "\\PC{0,400}") {
        let _ = PolicyDocument::parse(&text, None).and_then(|d| d.compile());
    }

    #[test]
    fn no_mutation_of_a_valid_document_panics(
        cut in 0usize..common::ACME.len(),
        insert in "[ -~\\n]{0,12}",
    ) {
        let mut text = common::ACME.to_owned();
        let mut cut = cut;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.insert_str(cut, &insert);
        let _ = PolicyDocument::parse(&text, None).and_then(|d| d.compile());
        let _ = PolicyDocument::parse(&text[..cut], None).and_then(|d| d.compile());
    }
}

//! The policy engine end to end: malformed documents, decisions and their reasons, the
//! manifest layer, precomputed decisions, dry runs, diffs, the store, and golden explain output.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test setup: a failure should stop the run loudly"
)]

mod common;

use std::sync::Arc;

use common::{ACME, engine_with, layer, manifest};
use palisade_policy::store::{self, Applied, ChangeKind, ChangeMeta, DirStore, PolicyStore};
use palisade_policy::{
    Action, CallContext, Deployment, LayerDiff, LimitKey, PolicyDocument, PolicyEngine,
    PolicyError, Principal, ReasonKind, Resource, Scope, StoreError, TenantId,
};

fn acme_ext() -> Principal {
    Principal::parse("acme/order-totals@1.0.0").unwrap()
}

fn resource(text: &str) -> Resource {
    Resource::parse(text, &acme_ext().tenant).unwrap()
}

fn host(url: &str, ip: &str) -> Resource {
    let mut resource = resource(url);
    if let Resource::Host(host) = &mut resource {
        host.ip = Some(ip.parse().unwrap());
    }
    resource
}

fn decide(engine: &PolicyEngine, action: Action, resource: &Resource) -> palisade_policy::Decision {
    engine.authorize(
        &acme_ext(),
        action,
        resource,
        &CallContext::at(1_750_000_000),
    )
}

fn policies(decision: &palisade_policy::Decision) -> Vec<&str> {
    decision
        .reasons
        .iter()
        .filter_map(|r| r.policy.as_deref())
        .collect()
}

// ---- malformed documents: one typed error per kind, with a place, never a panic ----

const GOOD_HEAD: &str = "format = 1\nlayer = \"tenant\"\ntenant = \"acme\"\n";

fn error_for(text: &str) -> PolicyError {
    match PolicyDocument::parse(text, None).and_then(|d| d.compile()) {
        Ok(_) => panic!("should be rejected:\n{text}"),
        Err(error) => error,
    }
}

#[test]
fn every_kind_of_malformed_policy_is_a_typed_error_with_its_place() {
    let cedar = |policies: &str| format!("{GOOD_HEAD}[cedar]\ntext = '''\n{policies}\n'''\n");
    let cases: Vec<(String, &str, Option<usize>)> = vec![
        (String::new(), "syntax", Some(1)),
        ("[[[".into(), "syntax", Some(1)),
        (format!("{GOOD_HEAD}colour = \"red\"\n"), "syntax", Some(4)),
        (format!("{GOOD_HEAD}[limits]\ncpu = 3\n"), "syntax", Some(5)),
        (
            format!("{GOOD_HEAD}[limits]\nmemory = \"16 parsecs\"\n"),
            "syntax",
            Some(5),
        ),
        (
            format!("{GOOD_HEAD}[limits]\nwall_time = \"soon\"\n"),
            "syntax",
            Some(5),
        ),
        (
            format!("{GOOD_HEAD}[limits]\nfuel = -1\n"),
            "syntax",
            Some(5),
        ),
        (
            "format = 2\nlayer = \"baseline\"\n".into(),
            "unsupported_format",
            Some(1),
        ),
        (
            "format = 1\nlayer = \"tenant\"\n".into(),
            "invalid_layer",
            Some(2),
        ),
        (
            "format = 1\nlayer = \"platform\"\n".into(),
            "syntax",
            Some(2),
        ),
        (
            "format = 1\nlayer = \"baseline\"\ntenant = \"acme\"\n".into(),
            "invalid_layer",
            Some(3),
        ),
        (
            "format = 1\nlayer = \"tenant\"\ntenant = \"Acme Corp\"\n".into(),
            "invalid_layer",
            Some(3),
        ),
        (
            format!("{GOOD_HEAD}[limits]\nwall_time = \"0ms\"\n"),
            "invalid_limit",
            Some(5),
        ),
        (
            format!("{GOOD_HEAD}[limits]\nfuel = 0\n"),
            "invalid_limit",
            Some(5),
        ),
        (
            format!("{GOOD_HEAD}[limits]\nmemory = \"1 KiB\"\n"),
            "invalid_limit",
            Some(5),
        ),
        (
            format!("{GOOD_HEAD}[limits]\nconcurrency = 0\n"),
            "invalid_limit",
            Some(5),
        ),
        (
            format!("{GOOD_HEAD}[limits]\nrate = 0\n"),
            "invalid_limit",
            Some(5),
        ),
        (
            format!("{GOOD_HEAD}[limits]\nworker_memory = \"1 MiB\"\n"),
            "invalid_limit",
            Some(5),
        ),
        (
            format!("{GOOD_HEAD}[limits]\nfuel = 20_000_000_000\n"),
            "invalid_limit",
            Some(5),
        ),
        (
            format!("{GOOD_HEAD}[limits]\nlogs = \"1 KiB\"\nlog_lines = 0\n"),
            "invalid_limit",
            Some(6),
        ),
        (
            format!("{GOOD_HEAD}[cedar]\ntext = \"\"\nfile = \"x.cedar\"\n"),
            "invalid_cedar_source",
            Some(4),
        ),
        (
            format!("{GOOD_HEAD}[cedar]\n"),
            "invalid_cedar_source",
            Some(4),
        ),
        (
            format!("{GOOD_HEAD}[cedar]\nfile = \"x.cedar\"\n"),
            "invalid_cedar_source",
            Some(4),
        ),
        (
            cedar("permit (principal, action, resource)"),
            "cedar_syntax",
            Some(1),
        ),
        (
            cedar("permit (principal, action, resource);\n\npermit (principal, action resource);"),
            "cedar_syntax",
            Some(3),
        ),
        (
            cedar("permit (principal == ?principal, action, resource);"),
            "cedar_template",
            None,
        ),
        (
            cedar(
                "@id(\"a\") permit (principal, action, resource);\n@id(\"a\") forbid (principal, action, resource);",
            ),
            "duplicate_policy_id",
            None,
        ),
        (
            cedar("@id(\"has space\") permit (principal, action, resource);"),
            "invalid_policy_id",
            None,
        ),
        (
            cedar("permit (principal, action == Action::\"fs:write\", resource);"),
            "schema_violation",
            Some(1),
        ),
        (
            cedar("permit (principal, action, resource is Bucket);"),
            "schema_violation",
            Some(1),
        ),
        (
            cedar(
                "permit (principal, action == Action::\"kv:read\", resource) when { resource.colour == \"red\" };",
            ),
            "schema_violation",
            Some(1),
        ),
        (
            cedar(
                "permit (principal, action == Action::\"http:request\", resource) when { resource.ip.isLoopback() };",
            ),
            "schema_violation",
            Some(1),
        ),
        (
            cedar("permit (principal, action, resource) when { context.time == \"now\" };"),
            "schema_violation",
            Some(1),
        ),
        (
            "x".repeat(palisade_policy::document::MAX_POLICY_BYTES + 1),
            "too_large",
            None,
        ),
    ];
    for (text, kind, line) in cases {
        let error = error_for(&text);
        assert_eq!(error.kind(), kind, "{error}\n---\n{text}");
        assert_eq!(
            error.location().map(|l| l.line),
            line,
            "{error}\n---\n{text}"
        );
        assert!(!error.to_string().is_empty());
        assert_eq!(error.to_json()["kind"], kind);
    }
}

#[test]
fn every_malformed_egress_rule_is_refused_before_it_is_applied() {
    let credential = |extra: &str| {
        format!(
            "{GOOD_HEAD}\n[[egress.credentials]]\nhost = \"api.example.com\"\nheader = \"authorization\"\n\
             secret = \"key\"\n{extra}"
        )
    };
    let cases = [
        (
            format!("{GOOD_HEAD}\n[egress]\nallow_private = [\"10.0.0.0/8\"]\n"),
            "belongs in the baseline",
        ),
        (
            credential("format = \"Bearer\"\n"),
            "must contain `{secret}` once",
        ),
        (
            credential("format = \"Bearer {secret}\\r\\nx-forged: 1\"\n"),
            "must not contain control characters",
        ),
        (
            credential("").replace("\"authorization\"", "\"Transfer-Encoding\""),
            "is not a header the gateway may set",
        ),
        (
            credential("").replace("\"api.example.com\"", "\"api.*.com\""),
            "is not a lowercase host name",
        ),
        (
            format!(
                "{GOOD_HEAD}\n[[egress.tokens]]\nhost = \"api.saas.example\"\nheader = \"x-token\"\n\
                 audience = \"saas\"\nttl = \"61m\"\n"
            ),
            "outside 1s to 1h",
        ),
    ];
    for (text, expected) in cases {
        let error = error_for(&text).to_string();
        assert!(
            error.contains(expected),
            "{expected:?} not in {error}\n{text}"
        );
    }
    let shipped = PolicyDocument::shipped_baseline().unwrap().to_toml();
    for (extra, expected) in [
        (
            "[egress]\nallow_private = [\"10.0.0.0/33\"]\n",
            "is not a CIDR",
        ),
        (
            "[[egress.ca]]\nhost = \"api.example.com\"\nsecret = \"ca\"\n",
            "belong to a tenant policy",
        ),
    ] {
        let error = error_for(&format!("{shipped}\n{extra}")).to_string();
        assert!(error.contains(expected), "{expected:?} not in {error}");
    }
}

#[test]
fn cedar_files_are_read_next_to_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("acme.cedar"),
        "@id(\"logs\") permit (principal, action == Action::\"log:write\", resource);",
    )
    .unwrap();
    let path = dir.path().join("acme.toml");
    std::fs::write(
        &path,
        format!("{GOOD_HEAD}[cedar]\nfile = \"acme.cedar\"\n"),
    )
    .unwrap();
    let layer = PolicyDocument::load(&path).unwrap().compile().unwrap();
    assert_eq!(layer.policy_ids(), ["logs"]);
    // The stored form is self-contained and parses back to the same document.
    let again = PolicyDocument::parse(&layer.document().to_toml(), None).unwrap();
    assert_eq!(again.cedar, layer.document().cedar);
    assert_eq!(again.limits, layer.document().limits);

    std::fs::write(
        &path,
        format!("{GOOD_HEAD}[cedar]\nfile = \"missing.cedar\"\n"),
    )
    .unwrap();
    assert_eq!(
        PolicyDocument::load(&path).unwrap_err().kind(),
        "invalid_cedar_source"
    );
    assert_eq!(
        PolicyDocument::load(&dir.path().join("nope.toml"))
            .unwrap_err()
            .kind(),
        "unreadable"
    );
}

#[test]
fn documents_round_trip_through_their_stored_form() {
    let document = PolicyDocument::parse(ACME, None).unwrap();
    let again = PolicyDocument::parse(&document.to_toml(), None).unwrap();
    assert_eq!(again.scope, document.scope);
    assert_eq!(again.limits, document.limits);
    assert_eq!(again.cedar, document.cedar);
    assert_eq!(again.description, document.description);
}

// ---- decisions ----

#[test]
fn the_shipped_baseline_is_valid_and_permits_nothing_alone() {
    let engine = PolicyEngine::shipped().unwrap();
    assert!(engine.baseline().policy_ids().len() >= 10);
    let decision = decide(&engine, Action::LogWrite, &resource("log"));
    assert!(!decision.allowed, "a tenant without a policy gets nothing");
    assert_eq!(decision.reasons[0].effect, ReasonKind::NoPolicy);
    assert_eq!(decision.reasons[0].layer, "tenant:acme");
}

#[test]
fn a_capability_needs_a_permit_in_every_layer() {
    let engine = engine_with(&[ACME]);
    let decision = decide(&engine, Action::LogWrite, &resource("log"));
    assert!(decision.allowed);
    assert_eq!(
        policies(&decision),
        ["baseline-permit-own-logs", "acme-logs-and-config"]
    );
    // Tenant permits, baseline has no permit for plain HTTP: denied by the baseline.
    let tenant_only = engine_with(&[&ACME.replace(
        "resource.hostname == \"api.payments.example\" && resource.port == 443",
        "true",
    )]);
    let decision = decide(
        &tenant_only,
        Action::HttpRequest,
        &host("http://api.payments.example/", "203.0.113.9"),
    );
    assert!(!decision.allowed);
    assert_eq!(decision.reasons[0].effect, ReasonKind::NoPermit);
    assert_eq!(decision.reasons[0].layer, "baseline");
    // Baseline permits public HTTPS, tenant does not permit this host.
    let decision = decide(
        &engine,
        Action::HttpRequest,
        &host("https://elsewhere.example/", "203.0.113.9"),
    );
    assert!(!decision.allowed);
    assert_eq!(decision.reasons[0].layer, "tenant:acme");
    assert_eq!(decision.reasons[0].effect, ReasonKind::NoPermit);
    let decision = decide(
        &engine,
        Action::HttpRequest,
        &host("https://api.payments.example/v1", "203.0.113.9"),
    );
    assert!(decision.allowed, "{decision:?}");
    assert_eq!(
        policies(&decision),
        ["baseline-permit-public-https", "acme-payments-api"]
    );
}

#[test]
fn the_baseline_forbids_cross_tenant_resources_whatever_the_tenant_permits() {
    let engine = engine_with(&[ACME]);
    for (action, text, forbid) in [
        (
            Action::KvRead,
            "kv:globex/orders",
            "baseline-forbid-cross-tenant-kv",
        ),
        (
            Action::SecretUse,
            "secret:globex/stripe",
            "baseline-forbid-cross-tenant-secrets",
        ),
        (
            Action::LogWrite,
            "log:globex",
            "baseline-forbid-cross-tenant-logs",
        ),
        (
            Action::ConfigRead,
            "config:globex/key",
            "baseline-forbid-cross-tenant-config",
        ),
    ] {
        let decision = decide(&engine, action, &resource(text));
        assert!(!decision.allowed, "{text}");
        assert!(
            decision
                .reasons
                .iter()
                .any(|r| r.policy.as_deref() == Some(forbid) && r.effect == ReasonKind::Forbid),
            "{text}: {decision:?}"
        );
    }
    // The same tenant's own namespace is allowed.
    assert!(decide(&engine, Action::KvWrite, &resource("kv:orders")).allowed);
}

#[test]
fn the_baseline_forbids_private_and_metadata_addresses() {
    let everything = engine_with(&[&ACME.replace(
        "resource.hostname == \"api.payments.example\" && resource.port == 443",
        "true",
    )]);
    for (url, ip, forbid) in [
        (
            "https://internal.example/",
            "10.1.2.3",
            "baseline-forbid-private-addresses",
        ),
        (
            "https://internal.example/",
            "192.168.0.1",
            "baseline-forbid-private-addresses",
        ),
        (
            "https://internal.example/",
            "172.20.0.1",
            "baseline-forbid-private-addresses",
        ),
        (
            "https://internal.example/",
            "100.64.0.1",
            "baseline-forbid-private-addresses",
        ),
        (
            "https://internal.example/",
            "127.0.0.1",
            "baseline-forbid-private-addresses",
        ),
        (
            "https://internal.example/",
            "::1",
            "baseline-forbid-private-addresses",
        ),
        (
            "https://internal.example/",
            "fd12::1",
            "baseline-forbid-private-addresses",
        ),
        (
            "https://internal.example/",
            "fe80::1",
            "baseline-forbid-private-addresses",
        ),
        (
            "https://internal.example/",
            "::ffff:10.0.0.1",
            "baseline-forbid-private-addresses",
        ),
        (
            "https://internal.example/",
            "0.0.0.0",
            "baseline-forbid-private-addresses",
        ),
        (
            "https://x.example/",
            "169.254.169.254",
            "baseline-forbid-metadata-endpoints",
        ),
        (
            "https://x.example/",
            "fd00:ec2::254",
            "baseline-forbid-metadata-endpoints",
        ),
        (
            "https://metadata.google.internal/",
            "203.0.113.7",
            "baseline-forbid-metadata-endpoints",
        ),
    ] {
        let decision = decide(&everything, Action::HttpRequest, &host(url, ip));
        assert!(!decision.allowed, "{url} {ip}");
        assert!(
            policies(&decision).contains(&forbid),
            "{url} {ip}: {decision:?}"
        );
    }
    // An IP literal in the URL counts as the address.
    let decision = decide(
        &everything,
        Action::HttpRequest,
        &resource("https://169.254.169.254/latest"),
    );
    assert!(policies(&decision).contains(&"baseline-forbid-metadata-endpoints"));
    // A host that was not resolved is denied: the egress layer must pass the address.
    let decision = decide(
        &everything,
        Action::HttpRequest,
        &resource("https://api.example/"),
    );
    assert_eq!(policies(&decision), ["baseline-forbid-unresolved-host"]);
    // A public address is allowed.
    assert!(
        decide(
            &everything,
            Action::HttpRequest,
            &host("https://api.example/", "203.0.113.7")
        )
        .allowed
    );
}

/// ACME with one more Cedar policy.
fn acme_with(extra: &str) -> String {
    let end = ACME.rfind("'''").unwrap();
    format!("{}{extra}\n{}", &ACME[..end], &ACME[end..])
}

#[test]
fn a_tenant_forbid_wins_over_every_permit() {
    let engine = engine_with(&[&acme_with(
        "@id(\"acme-no-logs\")\nforbid (principal, action == Action::\"log:write\", resource);",
    )]);
    let decision = decide(&engine, Action::LogWrite, &resource("log"));
    assert!(!decision.allowed);
    assert_eq!(policies(&decision), ["acme-no-logs"]);
    assert_eq!(decision.reasons[0].effect, ReasonKind::Forbid);
}

#[test]
fn a_policy_that_fails_to_evaluate_denies() {
    // Overflows at evaluation time (validation cannot see it). Cedar skips an erroring policy;
    // a skipped forbid must not fail open.
    let engine = engine_with(&[&acme_with(
        "@id(\"acme-overflowing-forbid\")\nforbid (principal, action, resource) when { context.time * 100000000000 > 0 };",
    )]);
    let decision = decide(&engine, Action::LogWrite, &resource("log"));
    assert!(!decision.allowed, "{decision:?}");
    assert_eq!(decision.reasons[0].effect, ReasonKind::Error);
    assert_eq!(
        decision.reasons[0].policy.as_deref(),
        Some("acme-overflowing-forbid")
    );
}

#[test]
fn policies_only_decide_for_their_own_tenant() {
    let globex = ACME.replace("tenant = \"acme\"", "tenant = \"globex\"");
    let engine = engine_with(&[&globex]);
    let decision = decide(&engine, Action::LogWrite, &resource("log"));
    assert!(
        !decision.allowed,
        "globex's policy must not grant acme anything"
    );
    assert_eq!(decision.reasons[0].effect, ReasonKind::NoPolicy);
}

// ---- the manifest layer, effective limits, precomputed decisions ----

#[test]
fn nothing_beyond_the_manifest_is_granted() {
    let engine = engine_with(&[ACME]);
    let deployment = Deployment::new(TenantId::new("acme").unwrap(), manifest("order-totals", ""));
    let decision = engine.authorize_deployment(
        &deployment,
        Action::KvRead,
        &resource("kv:orders"),
        &CallContext::now(),
    );
    assert!(!decision.allowed, "API v1 manifests cannot request kv");
    assert_eq!(decision.reasons[0].effect, ReasonKind::NotRequested);
    assert!(
        engine
            .authorize(
                &deployment.principal(),
                Action::KvRead,
                &resource("kv:orders"),
                &CallContext::now()
            )
            .allowed
    );
    assert!(
        engine
            .authorize_deployment(
                &deployment,
                Action::LogWrite,
                &resource("log"),
                &CallContext::now()
            )
            .allowed
    );
}

#[test]
fn effective_limits_are_the_minimum_of_platform_baseline_tenant_and_manifest() {
    let engine = engine_with(&[ACME]);
    let deployment = Deployment::new(
        TenantId::new("acme").unwrap(),
        manifest(
            "x",
            "[limits]\nfuel = 80_000_000\nwall_time = \"200ms\"\nmemory = \"64 MiB\"\n",
        ),
    );
    let limits = engine.effective_limits(&deployment);
    assert_eq!(
        limits.get(LimitKey::Fuel),
        50_000_000,
        "tenant caps the manifest"
    );
    assert_eq!(
        limits.get(LimitKey::WallTime),
        200_000,
        "manifest below the tenant"
    );
    assert_eq!(
        limits.get(LimitKey::Memory),
        32 << 20,
        "tenant caps the manifest"
    );
    assert_eq!(
        limits.get(LimitKey::Output),
        1 << 20,
        "unrequested: the platform default"
    );
    assert_eq!(
        limits.get(LimitKey::EgressRequests),
        10,
        "tenant below the baseline"
    );
    assert_eq!(limits.get(LimitKey::KvOps), 1_000, "the baseline alone");
    let runtime = limits.runtime();
    assert_eq!(runtime.fuel, 50_000_000);
    assert_eq!(runtime.wall_time, std::time::Duration::from_millis(200));
}

#[test]
fn precomputed_decisions_equal_evaluated_ones() {
    let engine = Arc::new(engine_with(&[ACME]));
    let deployment = Deployment::new(
        TenantId::new("acme").unwrap(),
        manifest("x", "[config]\ngreeting = \"hi\"\n"),
    );
    let prepared = engine.prepare(&deployment);
    assert_eq!(prepared.precomputed(), 2, "log stream and one config key");
    let context = CallContext::now();
    for (action, resource) in deployment.known_checks().into_iter().chain([
        (Action::ConfigRead, resource("config:other")),
        (Action::KvRead, resource("kv:orders")),
        (
            Action::HttpRequest,
            host("https://api.payments.example/", "203.0.113.9"),
        ),
    ]) {
        let fast = prepared.authorize(action, &resource, &context);
        let slow = engine.authorize_deployment(&deployment, action, &resource, &context);
        assert_eq!(*fast, slow, "{action} {resource}");
    }
}

#[test]
fn decisions_that_read_the_context_are_not_precomputed() {
    let business_hours = ACME.replace(
        "permit (principal, action in [Action::\"log:write\", Action::\"config:read\"], resource);",
        "permit (principal, action in [Action::\"log:write\", Action::\"config:read\"], resource) when { context.time < 1000 };",
    );
    let engine = Arc::new(engine_with(&[&business_hours]));
    let deployment = Deployment::new(
        TenantId::new("acme").unwrap(),
        manifest("x", "[config]\ngreeting = \"hi\"\n"),
    );
    let prepared = engine.prepare(&deployment);
    assert_eq!(prepared.precomputed(), 0);
    assert!(
        prepared
            .authorize(Action::LogWrite, &resource("log"), &CallContext::at(10))
            .allowed
    );
    assert!(
        !prepared
            .authorize(Action::LogWrite, &resource("log"), &CallContext::at(5_000))
            .allowed
    );
}

// ---- dry run and diff ----

#[test]
fn a_dry_run_lists_what_a_change_newly_denies_and_allows() {
    let before = engine_with(&[ACME]);
    let stricter = ACME
        .replace(
            "Action::\"log:write\", Action::\"config:read\"",
            "Action::\"config:read\"",
        )
        .replace("fuel = 50_000_000", "fuel = 10_000_000");
    let after = engine_with(&[&stricter]);
    let deployments = [
        Deployment::new(TenantId::new("acme").unwrap(), manifest("order-totals", "")),
        Deployment::new(TenantId::new("globex").unwrap(), manifest("other", "")),
    ];
    let impact = palisade_policy::dry_run(&before, &after, &deployments, &CallContext::now());
    assert_eq!(impact.len(), 1, "globex is not affected: {impact:?}");
    assert_eq!(impact[0].extension, "acme/order-totals@1.0.0");
    assert_eq!(impact[0].newly_denied.len(), 1);
    assert_eq!(impact[0].newly_denied[0].action, Action::LogWrite);
    assert!(impact[0].newly_allowed.is_empty());
    assert_eq!(impact[0].limits.len(), 1);
    assert_eq!(impact[0].limits[0].limit, LimitKey::Fuel);
    assert_eq!(impact[0].limits[0].text, "50000000 -> 10000000");

    let back = palisade_policy::dry_run(&after, &before, &deployments, &CallContext::now());
    assert_eq!(back[0].newly_allowed.len(), 1);
}

#[test]
fn diffs_name_limits_and_policies() {
    let old = layer(ACME);
    let new = layer(
        &ACME
            .replace("wall_time = \"500ms\"", "wall_time = \"2s\"")
            .replace("egress_requests = 10\n", "")
            .replace("memory = \"32 MiB\"", "memory = \"16 MiB\"\nkv_ops = 50")
            .replace("@id(\"acme-orders\")", "@id(\"acme-orders-v2\")")
            .replace("resource.port == 443", "resource.port == 8443"),
    );
    let diff = LayerDiff::between(Some(&old), &new);
    let text = diff.to_string();
    for expected in [
        "limits.wall_time: 500ms -> 2s (loosened)",
        "limits.memory: 32 MiB -> 16 MiB (tightened)",
        "limits.egress_requests: 10 -> unset (cap removed)",
        "limits.kv_ops: unset -> 50 (now capped)",
        "~ policy acme-payments-api",
        "- policy acme-orders\n",
        "+ policy acme-orders-v2\n",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(LayerDiff::between(Some(&old), &old).is_empty());
    assert_eq!(
        LayerDiff::between(Some(&old), &old).to_string(),
        "no changes\n"
    );
}

#[test]
fn diffs_name_each_egress_rule_added_and_removed() {
    let credential = |secret: &str| {
        format!(
            "\n[[egress.credentials]]\nhost = \"api.payments.example\"\nheader = \"authorization\"\n\
             secret = \"{secret}\"\nformat = \"Bearer {{secret}}\"\n"
        )
    };
    let token = "\n[[egress.tokens]]\nhost = \"api.saas.example\"\nheader = \"x-palisade-token\"\n\
                 audience = \"saas-api\"\nttl = \"30s\"\n";
    let ca = "\n[[egress.ca]]\nhost = \"api.payments.example\"\nsecret = \"payments-ca\"\n";
    let old = layer(&format!("{ACME}{}{ca}", credential("payments-key")));
    let new = layer(&format!(
        "{ACME}{}{token}{ca}",
        credential("payments-key-2")
    ));
    let diff = LayerDiff::between(Some(&old), &new);
    let text = diff.to_string();
    assert_eq!(
        text,
        "- egress.credentials { host = \"api.payments.example\", header = \"authorization\", \
         secret = \"payments-key\", format = \"Bearer {secret}\" }\n\
         + egress.credentials { host = \"api.payments.example\", header = \"authorization\", \
         secret = \"payments-key-2\", format = \"Bearer {secret}\" }\n\
         + egress.tokens { host = \"api.saas.example\", header = \"x-palisade-token\", \
         audience = \"saas-api\", ttl = \"30s\" }\n"
    );
    let json = serde_json::to_value(&diff).unwrap();
    assert_eq!(json["egress"][0]["section"], "credentials");
    assert_eq!(json["egress"][0]["change"], "removed");
    assert_eq!(json["egress"][2]["change"], "added");
    assert!(LayerDiff::between(Some(&new), &new).is_empty());

    // A first version lists every rule it brings.
    let first = LayerDiff::between(None, &old).to_string();
    assert!(
        first.contains(
            "+ egress.ca { host = \"api.payments.example\", secret = \"payments-ca\" }\n"
        ),
        "{first}"
    );

    // Reordered rules are a change too.
    let swapped = layer(&format!("{ACME}{ca}{}", credential("payments-key")));
    let both = layer(&format!(
        "{ACME}{ca}{}{}",
        credential("a-key"),
        credential("b-key")
    ));
    let reordered = layer(&format!(
        "{ACME}{ca}{}{}",
        credential("b-key"),
        credential("a-key")
    ));
    assert!(LayerDiff::between(Some(&old), &swapped).is_empty());
    assert_eq!(
        LayerDiff::between(Some(&both), &reordered).to_string(),
        "~ egress.credentials (the same rules, in another order or without a duplicate)\n"
    );

    // A bare value: a CIDR the baseline lets the gateway reach.
    let shipped = PolicyDocument::shipped_baseline().unwrap().to_toml();
    let private = layer(&format!(
        "{shipped}\n[egress]\nallow_private = [\"127.0.0.0/8\"]\n"
    ));
    assert_eq!(
        LayerDiff::between(Some(&layer(&shipped)), &private).to_string(),
        "+ egress.allow_private \"127.0.0.0/8\"\n"
    );
}

// ---- the store ----

fn meta(author: &str, reason: &str, time: i64) -> ChangeMeta {
    ChangeMeta {
        author: author.into(),
        reason: reason.into(),
        time,
    }
}

#[test]
fn the_store_versions_every_change_and_restores_any_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = DirStore::new(dir.path());
    let acme = Scope::parse("tenant:acme").unwrap();
    let v1 = PolicyDocument::parse(ACME, None).unwrap();
    let v2 = PolicyDocument::parse(
        &ACME.replace("fuel = 50_000_000", "fuel = 20_000_000"),
        None,
    )
    .unwrap();

    let Applied::Stored { record, .. } =
        store::apply(&store, &v1, &meta("ada", "onboard acme", 100)).unwrap()
    else {
        panic!("first apply stores")
    };
    assert_eq!(record.version, 1);
    assert!(
        record.diff.contains("+ policy acme-orders"),
        "{}",
        record.diff
    );
    let Applied::Stored { record, .. } =
        store::apply(&store, &v2, &meta("bob", "cheaper plan", 200)).unwrap()
    else {
        panic!("a change stores")
    };
    assert_eq!(record.version, 2);
    assert_eq!(
        record.diff,
        "limits.fuel: 50000000 -> 20000000 (tightened)\n"
    );
    assert!(matches!(
        store::apply(&store, &v2, &meta("bob", "again", 250)).unwrap(),
        Applied::Unchanged { version: 2 }
    ));
    let Applied::Stored { record, .. } = store::revert(
        &store,
        &acme,
        1,
        &meta("cy", "plan change was a mistake", 300),
    )
    .unwrap() else {
        panic!("a revert stores")
    };
    assert_eq!(record.version, 3);
    assert_eq!(record.change, ChangeKind::Revert);
    assert_eq!(record.restored, Some(1));

    let history = store.history(&acme).unwrap();
    assert_eq!(
        history.iter().map(|r| r.version).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(history[1].author, "bob");
    assert_eq!(history[1].reason, "cheaper plan");
    assert_eq!(history[1].time, 200);
    assert_eq!(history[2].document, history[0].document);
    let audit = store.audit().unwrap();
    assert_eq!(audit.len(), 3);
    assert_eq!(audit[2].author, "cy");
    assert_eq!(store.scopes().unwrap(), std::slice::from_ref(&acme));

    // The layers in force at a past time.
    let fuel = |at| {
        let engine = store::engine_at(&store, Some(at)).unwrap();
        engine
            .tenant_limits(&TenantId::new("acme").unwrap())
            .get(LimitKey::Fuel)
    };
    assert_eq!(fuel(150), 50_000_000);
    assert_eq!(fuel(250), 20_000_000);
    assert_eq!(fuel(300), 50_000_000);
    assert!(matches!(
        store::revert(&store, &acme, 9, &meta("cy", "x", 400)),
        Err(StoreError::NoSuchVersion { version: 9, .. })
    ));
    // No temporary files left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("tenant-acme"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn stored_versions_are_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let store = DirStore::new(dir.path());
    let document = PolicyDocument::parse(ACME, None).unwrap();
    let Applied::Stored { record, .. } =
        store::apply(&store, &document, &meta("ada", "x", 1)).unwrap()
    else {
        panic!("stores")
    };
    let mut forged = record.clone();
    forged.reason = "a second writer".into();
    assert!(matches!(
        store.append(&forged),
        Err(StoreError::Conflict { version: 1, .. })
    ));
    assert_eq!(
        store
            .history(&Scope::parse("tenant:acme").unwrap())
            .unwrap()[0]
            .reason,
        "x"
    );
}

#[test]
fn tampered_versions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = DirStore::new(dir.path());
    let document = PolicyDocument::parse(ACME, None).unwrap();
    store::apply(&store, &document, &meta("ada", "x", 1)).unwrap();
    let path = dir.path().join("tenant-acme/000001.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("fuel = 50000000", "fuel = 9000000000")).unwrap();
    assert!(matches!(
        store::engine_at(&store, None),
        Err(StoreError::Corrupt { .. })
    ));
    std::fs::write(&path, "not json").unwrap();
    assert!(matches!(
        store.history(&Scope::parse("tenant:acme").unwrap()),
        Err(StoreError::Corrupt { .. })
    ));
}

#[test]
fn invalid_documents_are_never_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = DirStore::new(dir.path());
    let document = PolicyDocument::parse(
        &ACME.replace("resource.name == \"orders\"", "resource.colour == \"red\""),
        None,
    )
    .unwrap();
    assert!(matches!(
        store::apply(&store, &document, &meta("ada", "x", 1)),
        Err(StoreError::Invalid(PolicyError::Schema { .. }))
    ));
    assert!(store.scopes().unwrap().is_empty());
    assert!(store.audit().unwrap().is_empty());
}

// ---- golden explain output ----

fn golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    assert_eq!(
        actual, expected,
        "golden {name} differs (UPDATE_GOLDEN=1 rewrites it)"
    );
}

#[test]
fn explain_output_matches_the_golden_files() {
    let engine = engine_with(&[ACME]);
    let principal = acme_ext();
    let mut text = String::new();
    let mut json = Vec::new();
    for (action, resource) in [
        (Action::LogWrite, resource("log")),
        (Action::KvRead, resource("kv:globex/orders")),
        (
            Action::HttpRequest,
            host("https://api.payments.example/v1/charges", "203.0.113.9"),
        ),
        (
            Action::HttpRequest,
            host("https://api.payments.example/", "10.0.0.8"),
        ),
        (
            Action::HttpRequest,
            resource("http://169.254.169.254/latest/meta-data"),
        ),
        (Action::SecretUse, resource("secret:stripe")),
    ] {
        let decision = engine.authorize(
            &principal,
            action,
            &resource,
            &CallContext::at(1_750_000_000),
        );
        text.push_str(&decision.render(&principal, action, &resource));
        json.push(serde_json::json!({
            "action": action,
            "resource": resource.cedar_ref(),
            "decision": decision,
        }));
    }
    golden("explain.txt", &text);
    golden(
        "explain.json",
        &format!("{}\n", serde_json::to_string_pretty(&json).unwrap()),
    );
}

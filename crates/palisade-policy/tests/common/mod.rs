//! Shared fixtures for the policy integration tests.

#![allow(dead_code, reason = "each test binary uses a subset")]

use palisade_policy::{CompiledLayer, PolicyDocument, PolicyEngine};

/// A tenant policy for `acme`: logs and config, HTTPS to one API, its own `orders` namespace.
pub const ACME: &str = r#"
format = 1
layer = "tenant"
tenant = "acme"
description = "Acme, standard plan"

[limits]
fuel = 50_000_000
wall_time = "500ms"
memory = "32 MiB"
egress_requests = 10
concurrency = 8

[cedar]
text = '''
@id("acme-logs-and-config")
permit (principal, action in [Action::"log:write", Action::"config:read"], resource);

@id("acme-payments-api")
permit (principal, action == Action::"http:request", resource is Host)
when { resource.hostname == "api.payments.example" && resource.port == 443 };

@id("acme-orders")
permit (principal, action in [Action::"kv:read", Action::"kv:write"], resource is KvNamespace)
when { resource.name == "orders" };

@id("acme-reads-anything")
permit (principal, action in [Action::"kv:read", Action::"secret:use"], resource)
when { principal.tenant == "acme" };
'''
"#;

pub fn layer(text: &str) -> CompiledLayer {
    PolicyDocument::parse(text, None)
        .and_then(|d| d.compile())
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
}

pub fn engine_with(tenants: &[&str]) -> PolicyEngine {
    let mut engine = PolicyEngine::shipped().unwrap();
    for text in tenants {
        engine.install(layer(text));
    }
    engine
}

pub fn manifest(name: &str, extra: &str) -> palisade_model::Manifest {
    palisade_model::Manifest::parse(&format!(
        "[extension]\nname = \"{name}\"\nversion = \"1.0.0\"\napi = \"palisade:extension@1.0.0\"\n[component]\npath = \"x.wasm\"\n{extra}"
    ))
    .unwrap()
}

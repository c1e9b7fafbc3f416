//! The OpenAPI 3 description of the API, generated from the handlers' annotations and the
//! wire types; served at `/openapi.json` and held to the router by tests.

use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::routes::{audit, extensions, health, policies, state, tenants, tokens};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Palisade API",
        description = "Run a SaaS's customers' extensions safely: tenants, tokens, extensions, \
                       deployments, policies, the audit log, and invocation.",
        version = "1"
    ),
    paths(
        health::healthz,
        health::readyz,
        health::metrics,
        health::openapi,
        health::jwks,
        tokens::whoami,
        tokens::create,
        tokens::list,
        tokens::revoke,
        tenants::create,
        tenants::list,
        tenants::read,
        tenants::suspend,
        tenants::resume,
        state::decommission,
        state::set_secret,
        state::secrets,
        state::delete_secret,
        state::keys,
        state::rotate_keys,
        state::destroy_namespace,
        state::rotate_signing_key,
        extensions::list,
        extensions::read,
        extensions::publish,
        extensions::read_version,
        extensions::approve,
        extensions::reject,
        extensions::deployments,
        extensions::deploy,
        extensions::rollback,
        extensions::invoke,
        policies::read_tenant,
        policies::apply_tenant,
        policies::tenant_versions,
        policies::revert_tenant,
        policies::read_baseline,
        policies::apply_baseline,
        policies::baseline_versions,
        policies::revert_baseline,
        audit::page,
        audit::verify,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "health", description = "No token needed."),
        (name = "tenants"), (name = "tokens"), (name = "extensions"), (name = "invoke"),
        (name = "policies"), (name = "state"), (name = "audit"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as pretty JSON (stable across runs: the committed copy in
/// `crates/palisade-server/openapi.json` is compared with it by a test).
pub fn document() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// Every `(method, path)` the document describes.
pub fn operations() -> Vec<(String, String)> {
    let doc = ApiDoc::openapi();
    let mut operations = Vec::new();
    for (path, item) in &doc.paths.paths {
        for (method, operation) in [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PUT", &item.put),
            ("DELETE", &item.delete),
            ("PATCH", &item.patch),
        ] {
            if operation.is_some() {
                operations.push((method.to_owned(), path.clone()));
            }
        }
    }
    operations.sort();
    operations
}

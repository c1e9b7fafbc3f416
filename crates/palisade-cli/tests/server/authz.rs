//! The authorization matrix: every endpoint × every role × own and other tenant, asserting
//! the exact status. The expectations are written out here, independently of the server's
//! permission table, so a change to either shows up as a failure. Tenant roles must see
//! another tenant exactly as they see a tenant that does not exist.

use axum::http::Method;
use serde_json::{Value, json};

use crate::InProcess;

/// The roles, in the order of the expectation columns.
const ROLES: [&str; 5] = [
    "platform-admin",
    "platform-reviewer",
    "tenant-admin",
    "tenant-developer",
    "invoker",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Whoami,
    CreateTenant,
    ListTenants,
    ReadTenant,
    Suspend,
    Resume,
    CreateToken,
    ListTokens,
    RevokeToken,
    ListExtensions,
    ReadExtension,
    Publish,
    ReadVersion,
    Approve,
    Reject,
    ListDeployments,
    Deploy,
    Rollback,
    Invoke,
    ReadPolicy,
    ApplyPolicy,
    PolicyVersions,
    RevertPolicy,
    ReadBaseline,
    ApplyBaseline,
    BaselineVersions,
    RevertBaseline,
    AuditPage,
    AuditVerify,
    Decommission,
    SetSecret,
    ListSecrets,
    DeleteSecret,
    ReadKeys,
    RotateKeys,
    DestroyNamespace,
    RotateSigningKey,
    Metrics,
}

use Endpoint as E;

/// Expected statuses: platform-admin, platform-reviewer, and the three tenant roles acting
/// on their own tenant. (On another tenant every tenant role gets 404.) `None` for
/// platform-level endpoints marks that they have no tenant.
const MATRIX: &[(Endpoint, [u16; 5], bool)] = &[
    (E::Whoami, [200, 200, 200, 200, 200], false),
    (E::CreateTenant, [201, 403, 403, 403, 403], false),
    (E::ListTenants, [200, 200, 200, 200, 403], false),
    (E::ReadTenant, [200, 200, 200, 200, 403], true),
    (E::Suspend, [200, 403, 403, 403, 403], true),
    (E::Resume, [200, 403, 403, 403, 403], true),
    (E::CreateToken, [201, 403, 201, 403, 403], true),
    (E::ListTokens, [200, 403, 200, 403, 403], true),
    (E::RevokeToken, [200, 403, 200, 403, 403], true),
    (E::ListExtensions, [200, 200, 200, 200, 403], true),
    (E::ReadExtension, [200, 200, 200, 200, 403], true),
    (E::Publish, [201, 403, 201, 201, 403], true),
    (E::ReadVersion, [200, 200, 200, 200, 403], true),
    (E::Approve, [200, 200, 403, 403, 403], true),
    (E::Reject, [200, 200, 403, 403, 403], true),
    (E::ListDeployments, [200, 200, 200, 200, 403], true),
    (E::Deploy, [201, 403, 201, 403, 403], true),
    (E::Rollback, [200, 403, 200, 403, 403], true),
    (E::Invoke, [200, 403, 200, 200, 200], true),
    (E::ReadPolicy, [200, 200, 200, 200, 403], true),
    (E::ApplyPolicy, [200, 403, 403, 403, 403], true),
    (E::PolicyVersions, [200, 200, 200, 200, 403], true),
    (E::RevertPolicy, [200, 403, 403, 403, 403], true),
    (E::ReadBaseline, [200, 200, 403, 403, 403], false),
    (E::ApplyBaseline, [200, 403, 403, 403, 403], false),
    (E::BaselineVersions, [200, 200, 403, 403, 403], false),
    (E::RevertBaseline, [200, 403, 403, 403, 403], false),
    (E::AuditPage, [200, 200, 403, 403, 403], false),
    (E::AuditVerify, [200, 200, 403, 403, 403], false),
    (E::Decommission, [200, 403, 403, 403, 403], true),
    (E::SetSecret, [200, 403, 200, 403, 403], true),
    (E::ListSecrets, [200, 200, 200, 200, 403], true),
    (E::DeleteSecret, [200, 403, 200, 403, 403], true),
    (E::ReadKeys, [200, 200, 200, 403, 403], true),
    (E::RotateKeys, [200, 403, 200, 403, 403], true),
    (E::DestroyNamespace, [200, 403, 200, 403, 403], true),
    (E::RotateSigningKey, [200, 403, 403, 403, 403], false),
    (E::Metrics, [200, 200, 403, 403, 403], false),
];

const OWN: &str = "acme";
const OTHER: &str = "globex";
const ABSENT: &str = "nowhere";

pub(crate) fn tenant_policy(tenant: &str, n: u64) -> String {
    format!(
        "format = 1\nlayer = \"tenant\"\ntenant = \"{tenant}\"\ndescription = \"plan {n}\"\n\n\
         [limits]\nwall_time = \"2s\"\n"
    )
}

fn baseline(n: u64) -> String {
    let shipped = std::fs::read_to_string(
        palisade_testkit::repo_root().join("crates/palisade-policy/baseline/baseline.toml"),
    )
    .unwrap();
    let description = shipped
        .lines()
        .find(|l| l.starts_with("description"))
        .unwrap()
        .to_owned();
    shipped.replacen(&description, &format!("description = \"baseline {n}\""), 1)
}

/// A request: method, path, JSON body (or raw text for invoke).
struct Call {
    method: Method,
    path: String,
    body: Option<Value>,
}

fn call(method: Method, path: String, body: Option<Value>) -> Call {
    Call { method, path, body }
}

/// Sets up what `endpoint` needs on `tenant` (as the administrator) and builds its request.
/// With `prepare == false` (for a tenant that does not exist), only builds the request.
async fn request(
    world: &InProcess,
    endpoint: Endpoint,
    tenant: &str,
    prepare: bool,
    column: usize,
) -> Call {
    let n = world.next();
    let fresh = format!("2.0.{n}");
    let ext = format!("/v1/tenants/{tenant}/extensions/echo");
    match endpoint {
        E::Whoami => call(Method::GET, "/v1/whoami".into(), None),
        E::CreateTenant => call(
            Method::POST,
            "/v1/tenants".into(),
            Some(json!({ "id": format!("t{n}") })),
        ),
        E::ListTenants => call(Method::GET, "/v1/tenants".into(), None),
        E::ReadTenant => call(Method::GET, format!("/v1/tenants/{tenant}"), None),
        E::Suspend => call(Method::POST, format!("/v1/tenants/{tenant}:suspend"), None),
        E::Resume => {
            if prepare {
                world
                    .admin(Method::POST, &format!("/v1/tenants/{tenant}:suspend"), None)
                    .await;
            }
            call(Method::POST, format!("/v1/tenants/{tenant}:resume"), None)
        }
        E::CreateToken => call(
            Method::POST,
            "/v1/tokens".into(),
            Some(
                json!({ "name": format!("dev{n}"), "role": "tenant-developer", "tenant": tenant }),
            ),
        ),
        E::ListTokens => call(Method::GET, format!("/v1/tokens?tenant={tenant}"), None),
        E::RevokeToken => {
            let id = if prepare {
                let created = world
                    .admin(
                        Method::POST,
                        "/v1/tokens",
                        Some(json!({ "name": format!("victim{n}"), "role": "invoker", "tenant": tenant })),
                    )
                    .await;
                created["info"]["id"].as_str().unwrap().to_owned()
            } else {
                format!("tok-{n:016x}")
            };
            call(Method::DELETE, format!("/v1/tokens/{id}"), None)
        }
        E::ListExtensions => call(
            Method::GET,
            format!("/v1/tenants/{tenant}/extensions"),
            None,
        ),
        E::ReadExtension => call(Method::GET, ext, None),
        E::Publish => {
            let (manifest, wasm) = crate::fixture("fixtures/echo", &fresh);
            call(
                Method::POST,
                format!("{ext}/versions"),
                Some(crate::publish_body(&manifest, &wasm)),
            )
        }
        E::ReadVersion => call(Method::GET, format!("{ext}/versions/1.0.0"), None),
        E::Approve | E::Reject => {
            if prepare {
                world.publish(tenant, "fixtures/echo", &fresh).await;
            }
            let verb = if endpoint == E::Approve {
                "approve"
            } else {
                "reject"
            };
            call(Method::POST, format!("{ext}/versions/{fresh}:{verb}"), None)
        }
        E::ListDeployments => call(Method::GET, format!("{ext}/deployments"), None),
        E::Deploy => {
            if prepare {
                world.publish(tenant, "fixtures/echo", &fresh).await;
                world
                    .admin(
                        Method::POST,
                        &format!("{ext}/versions/{fresh}:approve"),
                        None,
                    )
                    .await;
            }
            call(
                Method::POST,
                format!("{ext}/deployments"),
                Some(json!({ "version": fresh })),
            )
        }
        E::Rollback => {
            if prepare {
                world.ship(tenant, "fixtures/echo", &fresh).await;
            }
            call(Method::POST, format!("{ext}:rollback"), None)
        }
        E::Invoke => call(Method::POST, format!("{ext}:invoke"), None),
        E::ReadPolicy => call(Method::GET, format!("/v1/tenants/{tenant}/policy"), None),
        E::ApplyPolicy => call(
            Method::PUT,
            format!("/v1/tenants/{tenant}/policy"),
            Some(json!({ "document": tenant_policy(tenant, n), "reason": "matrix" })),
        ),
        E::PolicyVersions => call(
            Method::GET,
            format!("/v1/tenants/{tenant}/policy/versions"),
            None,
        ),
        E::RevertPolicy => call(
            Method::POST,
            format!("/v1/tenants/{tenant}/policy:revert"),
            Some(json!({ "to": 1, "reason": "matrix" })),
        ),
        E::ReadBaseline => call(Method::GET, "/v1/policies/baseline".into(), None),
        E::ApplyBaseline => call(
            Method::PUT,
            "/v1/policies/baseline".into(),
            Some(json!({ "document": baseline(n), "reason": "matrix" })),
        ),
        E::BaselineVersions => call(Method::GET, "/v1/policies/baseline/versions".into(), None),
        E::RevertBaseline => call(
            Method::POST,
            "/v1/policies/baseline:revert".into(),
            Some(json!({ "to": 1, "reason": "matrix" })),
        ),
        E::AuditPage => call(Method::GET, "/v1/audit?limit=5".into(), None),
        E::AuditVerify => call(Method::GET, "/v1/audit/verify".into(), None),
        E::Decommission => {
            // A platform administrator may decommission: let it destroy a throwaway tenant,
            // not the one the other cells use.
            let target = if prepare && column == 0 {
                let id = format!("doomed{n}");
                world
                    .admin(Method::POST, "/v1/tenants", Some(json!({ "id": id })))
                    .await;
                id
            } else {
                tenant.to_owned()
            };
            call(
                Method::POST,
                format!("/v1/tenants/{target}:decommission"),
                None,
            )
        }
        E::SetSecret => call(
            Method::PUT,
            format!("/v1/tenants/{tenant}/secrets/s{n}"),
            Some(json!({ "value": "v" })),
        ),
        E::ListSecrets => call(Method::GET, format!("/v1/tenants/{tenant}/secrets"), None),
        E::DeleteSecret => {
            if prepare {
                world
                    .admin(
                        Method::PUT,
                        &format!("/v1/tenants/{tenant}/secrets/d{n}"),
                        Some(json!({ "value": "v" })),
                    )
                    .await;
            }
            call(
                Method::DELETE,
                format!("/v1/tenants/{tenant}/secrets/d{n}"),
                None,
            )
        }
        E::ReadKeys => call(Method::GET, format!("/v1/tenants/{tenant}/keys"), None),
        E::RotateKeys => call(
            Method::POST,
            format!("/v1/tenants/{tenant}/keys:rotate"),
            None,
        ),
        E::DestroyNamespace => call(
            Method::DELETE,
            format!("/v1/tenants/{tenant}/kv/echo"),
            None,
        ),
        E::RotateSigningKey => call(Method::POST, "/v1/keys/signing:rotate".into(), None),
        E::Metrics => call(Method::GET, "/metrics".into(), None),
    }
}

async fn send(world: &InProcess, token: Option<&str>, call: &Call) -> crate::Answer {
    if call.path.ends_with(":invoke") {
        let mut request = axum::http::Request::builder()
            .method(Method::POST)
            .uri(&call.path)
            .header("content-type", "text/plain");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        return world
            .raw(request.body(axum::body::Body::from("ping")).unwrap())
            .await;
    }
    world
        .call(token, call.method.clone(), &call.path, call.body.clone())
        .await
}

/// Undoes what a cell changed that would disturb later cells.
async fn restore(world: &InProcess, endpoint: Endpoint, tenant: &str) {
    if matches!(endpoint, E::Suspend | E::Resume) {
        world
            .admin(Method::POST, &format!("/v1/tenants/{tenant}:resume"), None)
            .await;
    }
}

#[tokio::test]
async fn every_endpoint_role_and_tenant_answers_exactly_as_specified() {
    let world = InProcess::new().await;
    for tenant in [OWN, OTHER] {
        world
            .admin(Method::POST, "/v1/tenants", Some(json!({ "id": tenant })))
            .await;
        world.ship(tenant, "fixtures/echo", "1.0.0").await;
        world.ship(tenant, "fixtures/echo", "1.0.1").await;
        world
            .admin(
                Method::PUT,
                &format!("/v1/tenants/{tenant}/policy"),
                Some(json!({ "document": tenant_policy(tenant, 0), "reason": "setup" })),
            )
            .await;
    }
    world
        .admin(
            Method::PUT,
            "/v1/policies/baseline",
            Some(json!({ "document": baseline(0), "reason": "setup" })),
        )
        .await;
    let mut tokens = vec![
        world.admin.clone(),
        world.token("platform-reviewer", None).await,
    ];
    for role in &ROLES[2..] {
        tokens.push(world.token(role, Some(OWN)).await);
    }

    let mut failures = Vec::new();
    let mut cells = 0;
    for &(endpoint, expected, tenant_scoped) in MATRIX {
        for (column, role) in ROLES.iter().enumerate() {
            let token = &tokens[column];
            let tenants: &[&str] = if tenant_scoped { &[OWN, OTHER] } else { &[OWN] };
            for &tenant in tenants {
                let foreign = tenant == OTHER && column >= 2;
                let want = if foreign { 404 } else { expected[column] };
                let request = request(&world, endpoint, tenant, true, column).await;
                let answer = send(&world, Some(token), &request).await;
                cells += 1;
                if answer.status.as_u16() != want {
                    failures.push(format!(
                        "{endpoint:?} as {role} on {tenant}: {} {}: {} (wanted {want}): {}",
                        request.method, request.path, answer.status, answer.json
                    ));
                }
                if foreign {
                    // Indistinguishable from a tenant that does not exist.
                    let absent = request_for_absent(&world, endpoint).await;
                    let other = send(&world, Some(token), &absent).await;
                    let strip = |text: &str, name: &str| text.replace(name, "T");
                    let message = answer.json["error"]["message"].as_str().unwrap_or("");
                    let absent_message = other.json["error"]["message"].as_str().unwrap_or("");
                    let same = other.status == answer.status
                        && other.kind() == answer.kind()
                        && strip(message, OTHER).split("tok-").next()
                            == strip(absent_message, ABSENT).split("tok-").next();
                    if !same {
                        failures.push(format!(
                            "{endpoint:?} as {role}: another tenant answers {} {}, a missing one {} {}",
                            answer.status, answer.json, other.status, other.json
                        ));
                    }
                }
                restore(&world, endpoint, tenant).await;
            }
        }
    }
    assert_eq!(cells, 27 * 5 * 2 + 11 * 5, "every cell of the matrix ran");
    assert!(
        failures.is_empty(),
        "{} of {cells} cells differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    world.shutdown().await;
}

async fn request_for_absent(world: &InProcess, endpoint: Endpoint) -> Call {
    request(world, endpoint, ABSENT, false, 2).await
}

#[tokio::test]
async fn no_token_or_a_bad_token_is_401_everywhere_and_health_needs_none() {
    let world = InProcess::new().await;
    world
        .admin(Method::POST, "/v1/tenants", Some(json!({ "id": OWN })))
        .await;
    let revoked = {
        let created = world
            .admin(
                Method::POST,
                "/v1/tokens",
                Some(json!({ "name": "gone", "role": "tenant-admin", "tenant": OWN })),
            )
            .await;
        let id = created["info"]["id"].as_str().unwrap().to_owned();
        let secret = created["token"].as_str().unwrap().to_owned();
        // Used once (so it is cached), then revoked: it must stop working at once.
        assert_eq!(
            world
                .call(Some(&secret), Method::GET, "/v1/whoami", None)
                .await
                .status,
            200
        );
        world
            .admin(Method::DELETE, &format!("/v1/tokens/{id}"), None)
            .await;
        secret
    };
    for &(endpoint, _, _) in MATRIX {
        let request = request(&world, endpoint, OWN, false, 2).await;
        for token in [
            None,
            Some("pal_0000"),
            Some("not a token"),
            Some(revoked.as_str()),
        ] {
            let answer = send(&world, token, &request).await;
            assert_eq!(
                (answer.status.as_u16(), answer.kind()),
                (401, "unauthenticated"),
                "{endpoint:?} with {token:?}: {}",
                answer.json
            );
            assert!(
                answer.json["request_id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with("req-"))
            );
        }
    }
    for path in [
        "/healthz",
        "/readyz",
        "/openapi.json",
        "/.well-known/jwks.json",
    ] {
        let answer = world.call(None, Method::GET, path, None).await;
        assert_eq!(answer.status, 200, "{path}");
    }
    world.shutdown().await;
}

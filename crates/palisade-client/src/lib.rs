//! A typed client of Palisade's HTTP API (v1), for calling applications written in Rust and
//! for the `palisade` CLI. Every method returns the API's own types or a [`ClientError`]
//! that says whether the server was unreachable, refused the token, or answered with a typed
//! error (its `kind`, message and request id).
//!
//! ```no_run
//! # async fn demo() -> Result<(), palisade_client::ClientError> {
//! let client = palisade_client::Client::new("http://127.0.0.1:8700", "pal_...")?;
//! let answer = client.invoke("acme", "order-totals", br#"{"items":[]}"#.to_vec(), "application/json").await?;
//! println!("{}", String::from_utf8_lossy(&answer.body));
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

use std::time::Duration;

use base64::Engine as _;
use palisade_api::{
    ApplyPolicy, AuditPage, CreateTenant, CreateToken, CreatedToken, Deploy, Deployment, Destroyed,
    ErrorBody, Extension, ExtensionSummary, ExtensionVersion, InvokeEnvelope, KeysStatus,
    PolicyChange, PolicyVersion, PublishVersion, RevertPolicy, Review, Rollback, SecretInfo,
    SetSecret, SigningKeyRotation, Tenant, TokenInfo, Whoami,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

/// What went wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL given for the server is not usable.
    #[error("`{url}` is not a server URL: {reason}")]
    BadUrl { url: String, reason: String },
    /// The extra certificate authority for https:// servers is not usable.
    #[error("the CA certificate is not usable: {0}")]
    Tls(String),
    /// Nothing answered (refused, unresolvable, timed out).
    #[error("cannot reach the Palisade server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The server answered with a typed error.
    #[error("{status} {kind}: {message} (request {request_id})")]
    Api {
        status: u16,
        kind: String,
        message: String,
        request_id: String,
    },
    /// The server answered something that is not the API's JSON.
    #[error("unexpected answer from {url} (HTTP {status}): {reason}")]
    Unexpected {
        url: String,
        status: u16,
        reason: String,
    },
}

impl ClientError {
    /// The typed error's kind, when the server gave one.
    pub fn kind(&self) -> Option<&str> {
        match self {
            Self::Api { kind, .. } => Some(kind),
            _ => None,
        }
    }
}

/// The answer of `:invoke`: the output and what the server said about it.
#[derive(Debug, Clone)]
pub struct Invoked {
    pub body: Vec<u8>,
    pub content_type: String,
    pub invocation_id: String,
    pub request_id: String,
    pub version: String,
}

/// Which policy layer a policy call is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyLayer<'a> {
    /// The platform baseline (platform administrators).
    Baseline,
    /// One tenant's layer.
    Tenant(&'a str),
}

impl PolicyLayer<'_> {
    fn path(self) -> String {
        match self {
            Self::Baseline => "/v1/policies/baseline".to_owned(),
            Self::Tenant(tenant) => format!("/v1/tenants/{tenant}/policy"),
        }
    }
}

/// A client bound to one server and one token.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// How a [`Client`] connects, beyond the server's URL and the token.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Certificate authorities (PEM) trusted for an `https://` server besides the webpki
    /// roots: for a server with a private or self-signed certificate.
    pub ca_pem: Option<Vec<u8>>,
}

/// TLS for `https://` servers: rustls with ring, the webpki roots and `ca_pem`, HTTP/1.1.
fn tls_config(ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, ClientError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(pem) = ca_pem {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| ClientError::Tls(format!("not PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| ClientError::Tls(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(ClientError::Tls("it holds no PEM certificate".into()));
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

impl Client {
    /// A client of the server at `base` (`http://host:port` or `https://...`), sending
    /// `token`.
    pub fn new(base: &str, token: &str) -> Result<Self, ClientError> {
        Self::with_options(base, Some(token), &ClientOptions::default())
    }

    /// A client without a token (health endpoints only).
    pub fn anonymous(base: &str) -> Result<Self, ClientError> {
        Self::with_options(base, None, &ClientOptions::default())
    }

    /// A client with `options` (a CA for a server with a private certificate).
    pub fn with_options(
        base: &str,
        token: Option<&str>,
        options: &ClientOptions,
    ) -> Result<Self, ClientError> {
        let trimmed = base.trim_end_matches('/');
        if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) {
            return Err(ClientError::BadUrl {
                url: base.to_owned(),
                reason: "it must start with http:// or https://".into(),
            });
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .tls_backend_preconfigured(tls_config(options.ca_pem.as_deref())?)
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| ClientError::BadUrl {
                url: base.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            http,
            base: trimmed.to_owned(),
            token: token.map(str::to_owned),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    async fn send(
        &self,
        builder: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let response = builder.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            reason: describe(&e),
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(self.error_of(response).await)
    }

    async fn error_of(&self, response: reqwest::Response) -> ClientError {
        let status = response.status().as_u16();
        let url = response.url().to_string();
        match response.bytes().await {
            Ok(bytes) => match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => ClientError::Api {
                    status,
                    kind: body.error.kind,
                    message: body.error.message,
                    request_id: body.request_id,
                },
                Err(_) => ClientError::Unexpected {
                    url,
                    status,
                    reason: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
                },
            },
            Err(error) => ClientError::Unexpected {
                url,
                status,
                reason: error.to_string(),
            },
        }
    }

    async fn json<T: DeserializeOwned>(
        &self,
        builder: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let response = self.send(builder).await?;
        let status = response.status().as_u16();
        let url = response.url().to_string();
        response.json().await.map_err(|e| ClientError::Unexpected {
            url,
            status,
            reason: e.to_string(),
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.json(self.request(reqwest::Method::GET, path)).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.json(self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    /// `GET /readyz`: whether the server takes work.
    pub async fn ready(&self) -> Result<(), ClientError> {
        self.send(self.request(reqwest::Method::GET, "/readyz"))
            .await
            .map(|_| ())
    }

    /// The server's published token keys (`/.well-known/jwks.json`).
    pub async fn jwks(&self) -> Result<palisade_api::Jwks, ClientError> {
        self.get("/.well-known/jwks.json").await
    }

    pub async fn whoami(&self) -> Result<Whoami, ClientError> {
        self.get("/v1/whoami").await
    }

    pub async fn create_tenant(&self, id: &str) -> Result<Tenant, ClientError> {
        self.post("/v1/tenants", &CreateTenant { id: id.to_owned() })
            .await
    }

    pub async fn tenants(&self) -> Result<Vec<Tenant>, ClientError> {
        self.get("/v1/tenants").await
    }

    pub async fn tenant(&self, tenant: &str) -> Result<Tenant, ClientError> {
        self.get(&format!("/v1/tenants/{tenant}")).await
    }

    pub async fn suspend_tenant(&self, tenant: &str) -> Result<Tenant, ClientError> {
        self.post(
            &format!("/v1/tenants/{tenant}:suspend"),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn resume_tenant(&self, tenant: &str) -> Result<Tenant, ClientError> {
        self.post(
            &format!("/v1/tenants/{tenant}:resume"),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn create_token(&self, request: &CreateToken) -> Result<CreatedToken, ClientError> {
        self.post("/v1/tokens", request).await
    }

    pub async fn tokens(&self, tenant: Option<&str>) -> Result<Vec<TokenInfo>, ClientError> {
        let mut builder = self.request(reqwest::Method::GET, "/v1/tokens");
        if let Some(tenant) = tenant {
            builder = builder.query(&[("tenant", tenant)]);
        }
        self.json(builder).await
    }

    pub async fn revoke_token(&self, id: &str) -> Result<TokenInfo, ClientError> {
        self.json(self.request(reqwest::Method::DELETE, &format!("/v1/tokens/{id}")))
            .await
    }

    /// Publishes a version: the manifest text and the component's bytes (their SHA-256 is
    /// computed here and checked by the server).
    pub async fn publish(
        &self,
        tenant: &str,
        name: &str,
        manifest: &str,
        component: &[u8],
    ) -> Result<ExtensionVersion, ClientError> {
        let body = PublishVersion {
            manifest: manifest.to_owned(),
            component_base64: base64::engine::general_purpose::STANDARD.encode(component),
            sha256: hex::encode(Sha256::digest(component)),
        };
        self.post(
            &format!("/v1/tenants/{tenant}/extensions/{name}/versions"),
            &body,
        )
        .await
    }

    pub async fn extensions(&self, tenant: &str) -> Result<Vec<ExtensionSummary>, ClientError> {
        self.get(&format!("/v1/tenants/{tenant}/extensions")).await
    }

    pub async fn extension(&self, tenant: &str, name: &str) -> Result<Extension, ClientError> {
        self.get(&format!("/v1/tenants/{tenant}/extensions/{name}"))
            .await
    }

    pub async fn version(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
    ) -> Result<ExtensionVersion, ClientError> {
        self.get(&format!(
            "/v1/tenants/{tenant}/extensions/{name}/versions/{version}"
        ))
        .await
    }

    /// Approves (or with `approve = false` rejects) a version waiting for review.
    pub async fn review(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
        approve: bool,
        note: Option<String>,
    ) -> Result<ExtensionVersion, ClientError> {
        let verb = if approve { "approve" } else { "reject" };
        self.post(
            &format!("/v1/tenants/{tenant}/extensions/{name}/versions/{version}:{verb}"),
            &Review { note },
        )
        .await
    }

    pub async fn deploy(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
    ) -> Result<Deployment, ClientError> {
        self.post(
            &format!("/v1/tenants/{tenant}/extensions/{name}/deployments"),
            &Deploy {
                version: version.to_owned(),
            },
        )
        .await
    }

    pub async fn deployments(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Vec<Deployment>, ClientError> {
        self.get(&format!(
            "/v1/tenants/{tenant}/extensions/{name}/deployments"
        ))
        .await
    }

    pub async fn rollback(
        &self,
        tenant: &str,
        name: &str,
        to: Option<&str>,
    ) -> Result<Deployment, ClientError> {
        self.post(
            &format!("/v1/tenants/{tenant}/extensions/{name}:rollback"),
            &Rollback {
                to: to.map(str::to_owned),
            },
        )
        .await
    }

    /// Invokes the active version; a failed invocation is `ClientError::Api` with its kind.
    pub async fn invoke(
        &self,
        tenant: &str,
        name: &str,
        input: Vec<u8>,
        content_type: &str,
    ) -> Result<Invoked, ClientError> {
        let builder = self
            .request(
                reqwest::Method::POST,
                &format!("/v1/tenants/{tenant}/extensions/{name}:invoke"),
            )
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(input);
        let response = self.send(builder).await?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let content_type = header("content-type");
        let invocation_id = header("x-palisade-invocation-id");
        let request_id = header("x-request-id");
        let version = header("x-palisade-version");
        let status = response.status().as_u16();
        let url = response.url().to_string();
        let body = response
            .bytes()
            .await
            .map_err(|e| ClientError::Unexpected {
                url,
                status,
                reason: e.to_string(),
            })?
            .to_vec();
        Ok(Invoked {
            body,
            content_type,
            invocation_id,
            request_id,
            version,
        })
    }

    /// Invokes and returns the full outcome (usage, logs, isolation), whether or not the
    /// invocation succeeded; only errors before the invocation are `ClientError`s.
    pub async fn invoke_envelope(
        &self,
        tenant: &str,
        name: &str,
        input: Vec<u8>,
        content_type: &str,
        metadata: &[(String, String)],
    ) -> Result<InvokeEnvelope, ClientError> {
        let mut builder = self
            .request(
                reqwest::Method::POST,
                &format!("/v1/tenants/{tenant}/extensions/{name}:invoke"),
            )
            .query(&[("envelope", "true")])
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(input);
        for (key, value) in metadata {
            builder = builder.header(format!("palisade-meta-{key}"), value);
        }
        let response = builder.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            reason: describe(&e),
        })?;
        let status = response.status().as_u16();
        let url = response.url().to_string();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::Unexpected {
                url: url.clone(),
                status,
                reason: e.to_string(),
            })?;
        if let Ok(envelope) = serde_json::from_slice::<InvokeEnvelope>(&bytes) {
            return Ok(envelope);
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => Err(ClientError::Api {
                status,
                kind: body.error.kind,
                message: body.error.message,
                request_id: body.request_id,
            }),
            Err(_) => Err(ClientError::Unexpected {
                url,
                status,
                reason: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
            }),
        }
    }

    /// The version in force of a policy layer (for the baseline with nothing applied, the
    /// shipped document as version 0).
    pub async fn policy(&self, layer: PolicyLayer<'_>) -> Result<PolicyVersion, ClientError> {
        self.get(&layer.path()).await
    }

    /// Every stored version of a policy layer, oldest first.
    pub async fn policy_versions(
        &self,
        layer: PolicyLayer<'_>,
    ) -> Result<Vec<PolicyVersion>, ClientError> {
        self.get(&format!("{}/versions", layer.path())).await
    }

    /// Validates `document` on the server and stores it as the layer's next version.
    pub async fn apply_policy(
        &self,
        layer: PolicyLayer<'_>,
        document: &str,
        reason: &str,
    ) -> Result<PolicyChange, ClientError> {
        let body = ApplyPolicy {
            document: document.to_owned(),
            reason: reason.to_owned(),
        };
        self.json(
            self.request(reqwest::Method::PUT, &layer.path())
                .json(&body),
        )
        .await
    }

    /// Stores version `to` of the layer again as its newest version.
    pub async fn revert_policy(
        &self,
        layer: PolicyLayer<'_>,
        to: u64,
        reason: &str,
    ) -> Result<PolicyChange, ClientError> {
        self.post(
            &format!("{}:revert", layer.path()),
            &RevertPolicy {
                to,
                reason: reason.to_owned(),
            },
        )
        .await
    }

    pub async fn decommission_tenant(&self, tenant: &str) -> Result<Tenant, ClientError> {
        self.post(
            &format!("/v1/tenants/{tenant}:decommission"),
            &serde_json::json!({}),
        )
        .await
    }

    /// Stores a new version of a secret (write-only: no call returns it).
    pub async fn set_secret(
        &self,
        tenant: &str,
        name: &str,
        value: &[u8],
    ) -> Result<SecretInfo, ClientError> {
        let body = match std::str::from_utf8(value) {
            Ok(text) => SetSecret {
                value: Some(text.to_owned()),
                value_base64: None,
            },
            Err(_) => SetSecret {
                value: None,
                value_base64: Some(base64::engine::general_purpose::STANDARD.encode(value)),
            },
        };
        self.json(
            self.request(
                reqwest::Method::PUT,
                &format!("/v1/tenants/{tenant}/secrets/{name}"),
            )
            .json(&body),
        )
        .await
    }

    pub async fn secrets(&self, tenant: &str) -> Result<Vec<SecretInfo>, ClientError> {
        self.get(&format!("/v1/tenants/{tenant}/secrets")).await
    }

    pub async fn delete_secret(&self, tenant: &str, name: &str) -> Result<Destroyed, ClientError> {
        self.json(self.request(
            reqwest::Method::DELETE,
            &format!("/v1/tenants/{tenant}/secrets/{name}"),
        ))
        .await
    }

    pub async fn keys(&self, tenant: &str) -> Result<KeysStatus, ClientError> {
        self.get(&format!("/v1/tenants/{tenant}/keys")).await
    }

    /// Replaces the server's token-signing key (platform administrators).
    pub async fn rotate_signing_key(&self) -> Result<SigningKeyRotation, ClientError> {
        self.post("/v1/keys/signing:rotate", &serde_json::json!({}))
            .await
    }

    pub async fn rotate_keys(&self, tenant: &str) -> Result<KeysStatus, ClientError> {
        self.post(
            &format!("/v1/tenants/{tenant}/keys:rotate"),
            &serde_json::json!({}),
        )
        .await
    }

    /// Destroys a key-value namespace of a tenant (values and data keys).
    pub async fn destroy_namespace(
        &self,
        tenant: &str,
        namespace: &str,
    ) -> Result<Destroyed, ClientError> {
        self.json(self.request(
            reqwest::Method::DELETE,
            &format!("/v1/tenants/{tenant}/kv/{namespace}"),
        ))
        .await
    }

    /// One page of the audit log.
    pub async fn audit_page(&self, after: u64) -> Result<AuditPage, ClientError> {
        self.json(
            self.request(reqwest::Method::GET, "/v1/audit")
                .query(&[("after", after)]),
        )
        .await
    }

    /// The whole audit log, in order.
    pub async fn audit_all(&self) -> Result<Vec<palisade_model::audit::AuditEntry>, ClientError> {
        let mut entries = Vec::new();
        let mut after = 0;
        loop {
            let page = self.audit_page(after).await?;
            entries.extend(page.entries);
            match page.next_after {
                Some(next) => after = next,
                None => return Ok(entries),
            }
        }
    }
}

fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

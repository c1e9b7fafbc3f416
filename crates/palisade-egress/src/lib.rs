//! The egress gateway: the one place outbound HTTP leaves from. Workers have no network; a
//! guest's `wasi:http` request reaches the gateway over IPC, and the gateway decides and does
//! everything that matters:
//!
//! 1. the URL is parsed strictly; the manifest must request the destination
//!    (`[capabilities] http`), and the invocation must have requests left (`egress_requests`);
//! 2. the gateway resolves the name itself and checks every address it might connect to:
//!    loopback, private, link-local (cloud metadata), CGNAT, multicast, unspecified, reserved,
//!    IPv4-mapped/compatible, NAT64, 6to4, Teredo and ULA addresses are refused unless the
//!    baseline allows that CIDR, and the Cedar policy decides for the exact address;
//! 3. it connects to exactly the address it checked (no second lookup: DNS rebinding cannot
//!    switch the destination), with TLS (rustls, webpki roots, a tenant CA, a client
//!    certificate) where the scheme is https, and plain HTTP only where policy permits;
//! 4. it injects credentials from tenant secrets and per-invocation tokens, which the guest
//!    never sees, and scrubs their values from whatever comes back;
//! 5. it counts bytes both ways against the invocation (`egress_bytes`) and the tenant's
//!    bandwidth (`bandwidth`, shared by all its invocations) and connections
//!    (`egress_connections`): over a rate quota it slows down within the deadline, then
//!    fails with `egress_quota_exceeded`; every request is bounded by `egress_timeout`.
//!
//! Redirects are never followed here: a guest that follows one sends a new request, which is
//! checked like any other. No proxy environment variable is read.

#![forbid(unsafe_code)]

pub mod address;
pub mod bucket;
pub mod tokens;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use palisade_model::egress::{
    Destination, EgressError, EgressErrorKind, HttpRequest, HttpResponse, UrlPattern,
};
use tokio::sync::Semaphore;
use tokio::time::Instant;

pub use address::Cidr;
pub use bucket::TokenBucket;
pub use palisade_api::{Jwk, Jwks};
pub use tokens::{Claims, SigningKeys, TokenSigner};

/// How long a name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// What replaces an injected secret found in a response.
const REDACTED: &[u8] = b"[redacted]";

/// Resolves host names for the gateway (and only for it).
#[async_trait::async_trait]
pub trait Resolver: Send + Sync + std::fmt::Debug {
    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<IpAddr>, String>;
}

/// The system resolver (`getaddrinfo` through tokio).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

#[async_trait::async_trait]
impl Resolver for SystemResolver {
    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<IpAddr>, String> {
        let addresses = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("`{host}` does not resolve: {e}"))?;
        Ok(addresses.map(|a| a.ip()).collect())
    }
}

/// Fixed answers (tests, or hosts pinned by the operator).
#[derive(Debug, Default, Clone)]
pub struct StaticResolver {
    pub hosts: HashMap<String, Vec<IpAddr>>,
}

#[async_trait::async_trait]
impl Resolver for StaticResolver {
    async fn resolve(&self, host: &str, _port: u16) -> Result<Vec<IpAddr>, String> {
        self.hosts
            .get(host)
            .cloned()
            .ok_or_else(|| format!("`{host}` does not resolve"))
    }
}

/// The policy decision for one destination and the exact address about to be used.
pub trait EgressPolicy: Send + Sync {
    /// `Ok` when every policy layer permits `method` to `destination` at `ip`; else the
    /// reason (the deciding policies).
    fn authorize(&self, destination: &Destination, ip: IpAddr, method: &str) -> Result<(), String>;
}

/// Tenant secrets, for credential injection (decrypted only here, in the supervisor).
#[async_trait::async_trait]
pub trait SecretSource: Send + Sync {
    async fn secret(&self, name: &str) -> Result<Option<Vec<u8>>, String>;
}

/// For hosts without Cedar layers (local runs, benchmarks): every destination the manifest
/// requests is permitted at any address the address check lets through. Never for a server.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoPolicyLayers;

impl EgressPolicy for NoPolicyLayers {
    fn authorize(&self, _: &Destination, _: IpAddr, _: &str) -> Result<(), String> {
        Ok(())
    }
}

/// For hosts without tenant secrets: no credential can be injected.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoSecrets;

#[async_trait::async_trait]
impl SecretSource for NoSecrets {
    async fn secret(&self, _: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(None)
    }
}

/// A header the gateway sets from a secret, for requests to `host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub host: String,
    pub header: String,
    pub secret: String,
    pub format: Option<String>,
}

/// A token the gateway mints per invocation and audience, for requests to `host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    pub host: String,
    pub header: String,
    pub audience: String,
    pub ttl: Duration,
}

/// Extra trust or identity for TLS to `host`: a CA (PEM secret), a client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsExtra {
    Ca {
        host: String,
        secret: String,
    },
    ClientCert {
        host: String,
        cert_secret: String,
        key_secret: String,
    },
}

/// Everything the gateway knows about one invocation's egress: what the caller said and the
/// counters the gateway spends.
pub struct Invocation {
    pub spec: InvocationSpec,
    pub requests_left: AtomicU64,
    pub bytes_left: AtomicU64,
    minted: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for Invocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invocation")
            .field("spec", &self.spec)
            .field("requests_left", &self.requests_left)
            .field("bytes_left", &self.bytes_left)
            .finish_non_exhaustive()
    }
}

/// One invocation's egress as the caller describes it; [`Invocation::new`] adds the counters.
pub struct InvocationSpec {
    pub tenant: String,
    pub extension: String,
    pub version: String,
    pub invocation_id: String,
    /// The manifest's `[capabilities] http`.
    pub patterns: Vec<UrlPattern>,
    pub policy: Arc<dyn EgressPolicy>,
    pub secrets: Arc<dyn SecretSource>,
    pub credentials: Vec<Credential>,
    pub tokens: Vec<TokenGrant>,
    pub tls: Vec<TlsExtra>,
    /// Private ranges the baseline allows (the policy must permit them too).
    pub allow_private: Vec<Cidr>,
    pub max_requests: u64,
    pub max_bytes: u64,
    pub deadline: Instant,
    pub request_timeout: Duration,
    /// The tenant's `bandwidth` (bytes per second) and `egress_connections`.
    pub bandwidth: u64,
    pub connections: u64,
}

impl std::fmt::Debug for InvocationSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvocationSpec")
            .field("tenant", &self.tenant)
            .field("extension", &self.extension)
            .field("invocation_id", &self.invocation_id)
            .finish_non_exhaustive()
    }
}

impl Invocation {
    pub fn new(spec: InvocationSpec) -> Self {
        Self {
            requests_left: AtomicU64::new(spec.max_requests),
            bytes_left: AtomicU64::new(spec.max_bytes),
            spec,
            minted: Mutex::default(),
        }
    }
}

/// A tenant's shared egress state: its bandwidth bucket and connection slots.
#[derive(Debug)]
struct TenantEgress {
    bandwidth: TokenBucket,
    connections: Arc<Semaphore>,
    limits: (u64, u64),
}

/// The gateway. One per server; tenants share nothing but its code.
pub struct Gateway {
    resolver: Arc<dyn Resolver>,
    roots: Arc<rustls::RootCertStore>,
    /// Replaced whole when the signing key rotates; requests take the signer in force.
    signing: std::sync::RwLock<Option<SigningKeys>>,
    tenants: Mutex<HashMap<String, Arc<TenantEgress>>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("resolver", &self.resolver)
            .finish_non_exhaustive()
    }
}

fn error(kind: EgressErrorKind, message: impl Into<String>) -> EgressError {
    EgressError::new(kind, message)
}

fn quota(message: impl Into<String>) -> EgressError {
    error(EgressErrorKind::QuotaExceeded, message)
}

/// Whether `host` matches a rule's `host` (exact, or `*.domain`).
fn host_matches(rule: &str, host: &str) -> bool {
    match rule.strip_prefix("*.") {
        Some(domain) => host.ends_with(&format!(".{domain}")),
        None => rule == host,
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Spends `bytes` of the tenant's bandwidth, waiting until `deadline` at most.
async fn take_bandwidth(
    tenant: &TenantEgress,
    invocation: &Invocation,
    shown: &str,
    bytes: u64,
    deadline: Instant,
) -> Result<(), EgressError> {
    bucket::take_by(&tenant.bandwidth, bytes, deadline)
        .await
        .map_err(|_| {
            quota(format!(
                "{shown}: tenant {} is over its bandwidth (bandwidth)",
                invocation.spec.tenant
            ))
        })
}

/// Replaces every occurrence of each secret in `bytes`.
fn scrub(bytes: &[u8], secrets: &[Vec<u8>]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        let mut scrubbed = Vec::with_capacity(out.len());
        let mut rest = out.as_slice();
        while let Some(at) = rest
            .windows(secret.len())
            .position(|w| w == secret.as_slice())
        {
            scrubbed.extend_from_slice(&rest[..at]);
            scrubbed.extend_from_slice(REDACTED);
            rest = &rest[at + secret.len()..];
        }
        scrubbed.extend_from_slice(rest);
        out = scrubbed;
    }
    out
}

/// Headers a guest may not set: the gateway owns the connection and the framing.
const HOP_BY_HOP: [&str; 8] = [
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

impl Gateway {
    /// A gateway that resolves with `resolver` and trusts the webpki roots; `signing` mints
    /// short-lived tokens (none: token rules are refused).
    pub fn new(resolver: Arc<dyn Resolver>, signing: Option<SigningKeys>) -> Self {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        Self {
            resolver,
            roots: Arc::new(roots),
            signing: std::sync::RwLock::new(signing),
            tenants: Mutex::default(),
        }
    }

    /// The key that signs tokens now.
    pub fn signer(&self) -> Option<Arc<TokenSigner>> {
        self.signing
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|keys| Arc::clone(&keys.current))
    }

    /// The key set in force (none without a signer).
    pub fn signing_keys(&self) -> Option<SigningKeys> {
        self.signing
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The public keys to publish at `now_ms` (empty without a signer).
    pub fn jwks(&self, now_ms: i64) -> Jwks {
        self.signing
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|keys| keys.jwks(now_ms))
            .unwrap_or_default()
    }

    /// Installs rotated keys: tokens minted from now on are signed by `keys.current`.
    pub fn set_signing_keys(&self, keys: SigningKeys) {
        *self
            .signing
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(keys);
    }

    fn tenant(&self, invocation: &Invocation) -> Arc<TenantEgress> {
        let mut tenants = self
            .tenants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let limits = (invocation.spec.bandwidth, invocation.spec.connections);
        match tenants.get(&invocation.spec.tenant) {
            Some(tenant) if tenant.limits == limits => Arc::clone(tenant),
            _ => {
                let tenant = Arc::new(TenantEgress {
                    bandwidth: TokenBucket::new(invocation.spec.bandwidth),
                    connections: Arc::new(Semaphore::new(
                        usize::try_from(invocation.spec.connections)
                            .unwrap_or(usize::MAX)
                            .clamp(1, Semaphore::MAX_PERMITS),
                    )),
                    limits,
                });
                tenants.insert(invocation.spec.tenant.clone(), Arc::clone(&tenant));
                tenant
            }
        }
    }

    /// Sends one request for `invocation`, or says why not.
    pub async fn send(
        &self,
        invocation: &Invocation,
        request: HttpRequest,
    ) -> Result<HttpResponse, EgressError> {
        let destination = Destination::parse(&request.url)?;
        let method = request.method.to_ascii_uppercase();
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(error(
                EgressErrorKind::InvalidRequest,
                format!("`{}` is not an HTTP method", request.method),
            ));
        }
        let shown = format!(
            "{method} {}://{}:{}{}",
            destination.scheme, destination.host, destination.port, destination.path
        );
        if !invocation
            .spec
            .patterns
            .iter()
            .any(|p| p.matches(&destination))
        {
            return Err(EgressError::denied(format!(
                "{shown}: the manifest does not request this destination ([capabilities] http)"
            )));
        }
        if invocation
            .requests_left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_err()
        {
            return Err(quota(format!(
                "{shown}: the invocation used all of its requests (egress_requests)"
            )));
        }
        let ip = self
            .choose_address(invocation, &destination, &method, &shown)
            .await?;

        // Headers: the guest's, minus what the gateway owns, plus what it injects.
        let injected = self.injections(invocation, &destination).await?;
        let secrets: Vec<Vec<u8>> = injected
            .iter()
            .filter_map(|(_, _, secret)| secret.clone())
            .collect();
        let mut headers: Vec<(String, Vec<u8>)> = request
            .headers
            .into_iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value))
            .filter(|(name, _)| !HOP_BY_HOP.contains(&name.as_str()))
            .filter(|(name, _)| !injected.iter().any(|(header, _, _)| header == name))
            .collect();
        headers.extend(
            injected
                .into_iter()
                .map(|(header, value, _)| (header, value)),
        );

        let request_bytes = request.body.len() as u64
            + headers
                .iter()
                .map(|(n, v)| (n.len() + v.len()) as u64)
                .sum::<u64>();
        self.charge(invocation, request_bytes, &shown)?;
        let tenant = self.tenant(invocation);
        let deadline = invocation
            .spec
            .deadline
            .min(Instant::now() + invocation.spec.request_timeout);
        take_bandwidth(&tenant, invocation, &shown, request_bytes, deadline).await?;
        let _connection = tokio::time::timeout_at(
            deadline,
            Arc::clone(&tenant.connections).acquire_owned(),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or_else(|| {
            quota(format!(
                "{shown}: tenant {} has all of its {} connections open (egress_connections)",
                invocation.spec.tenant, invocation.spec.connections
            ))
        })?;

        let exchange = self.exchange(
            invocation,
            &tenant,
            &destination,
            ip,
            &method,
            headers,
            request.body,
            &secrets,
            deadline,
            &shown,
        );
        match tokio::time::timeout_at(deadline, exchange).await {
            Ok(result) => result,
            Err(_) => Err(error(
                EgressErrorKind::Timeout,
                format!(
                    "{shown}: no complete answer within egress_timeout ({:?}) or the invocation's deadline",
                    invocation.spec.request_timeout
                ),
            )),
        }
    }

    /// Resolves (unless the host is an address) and returns the first address that is
    /// allowed and permitted; else the reasons every candidate was refused.
    async fn choose_address(
        &self,
        invocation: &Invocation,
        destination: &Destination,
        method: &str,
        shown: &str,
    ) -> Result<IpAddr, EgressError> {
        let literal = destination.host.parse::<IpAddr>().ok();
        let candidates = match literal {
            Some(ip) => vec![ip],
            None => tokio::time::timeout(
                RESOLVE_TIMEOUT,
                self.resolver.resolve(&destination.host, destination.port),
            )
            .await
            .map_err(|_| {
                error(
                    EgressErrorKind::DnsError,
                    format!("{shown}: the name did not resolve in time"),
                )
            })?
            .map_err(|e| error(EgressErrorKind::DnsError, format!("{shown}: {e}")))?,
        };
        if candidates.is_empty() {
            return Err(error(
                EgressErrorKind::DnsError,
                format!("{shown}: the name has no addresses"),
            ));
        }
        let mut reasons = Vec::new();
        for ip in candidates {
            if let Some(reason) = address::forbidden(ip)
                && !invocation.spec.allow_private.iter().any(|c| c.contains(ip))
            {
                reasons.push(reason);
                continue;
            }
            match invocation.spec.policy.authorize(destination, ip, method) {
                Ok(()) => return Ok(ip),
                Err(reason) => reasons.push(format!("{ip}: {reason}")),
            }
        }
        Err(EgressError::denied(format!(
            "{shown}: {}",
            reasons.join("; ")
        )))
    }

    /// The headers to inject for `destination`: `(name, value, secret to scrub)`.
    async fn injections(
        &self,
        invocation: &Invocation,
        destination: &Destination,
    ) -> Result<Vec<(String, Vec<u8>, Option<Vec<u8>>)>, EgressError> {
        let mut headers = Vec::new();
        for rule in invocation
            .spec
            .credentials
            .iter()
            .filter(|r| host_matches(&r.host, &destination.host))
        {
            let secret = invocation
                .spec
                .secrets
                .secret(&rule.secret)
                .await
                .map_err(|e| {
                    error(
                        EgressErrorKind::Unavailable,
                        format!("secret `{}`: {e}", rule.secret),
                    )
                })?
                .ok_or_else(|| {
                    EgressError::denied(format!(
                        "the credential for {} needs secret `{}`, which the tenant has not set",
                        destination.host, rule.secret
                    ))
                })?;
            let value = match &rule.format {
                Some(format) => {
                    let (before, after) = format.split_once("{secret}").unwrap_or((format, ""));
                    [before.as_bytes(), &secret, after.as_bytes()].concat()
                }
                None => secret.clone(),
            };
            headers.push((rule.header.clone(), value, Some(secret)));
        }
        for grant in invocation
            .spec
            .tokens
            .iter()
            .filter(|g| host_matches(&g.host, &destination.host))
        {
            let signer = self.signer().ok_or_else(|| {
                error(
                    EgressErrorKind::Unavailable,
                    "this gateway has no token signer",
                )
            })?;
            let token = {
                let mut minted = invocation
                    .minted
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                minted
                    .entry(grant.audience.clone())
                    .or_insert_with(|| {
                        let now = now_unix();
                        signer.sign(&Claims {
                            iss: tokens::ISSUER.into(),
                            sub: format!(
                                "{}/{}",
                                invocation.spec.tenant, invocation.spec.extension
                            ),
                            aud: grant.audience.clone(),
                            tenant: invocation.spec.tenant.clone(),
                            extension: invocation.spec.extension.clone(),
                            version: invocation.spec.version.clone(),
                            invocation_id: invocation.spec.invocation_id.clone(),
                            iat: now,
                            exp: now + i64::try_from(grant.ttl.as_secs()).unwrap_or(60),
                        })
                    })
                    .clone()
            };
            let value = format!("Bearer {token}").into_bytes();
            headers.push((grant.header.clone(), value, Some(token.into_bytes())));
        }
        Ok(headers)
    }

    /// Takes `bytes` from the invocation's `egress_bytes`.
    fn charge(&self, invocation: &Invocation, bytes: u64, shown: &str) -> Result<(), EgressError> {
        invocation
            .bytes_left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| left.checked_sub(bytes))
            .map(|_| ())
            .map_err(|left| quota(format!("{shown}: {bytes} more bytes would exceed the invocation's egress_bytes ({left} left)")))
    }

    fn tls_config(
        &self,
        ca: Option<Vec<u8>>,
        client: Option<(Vec<u8>, Vec<u8>)>,
    ) -> Result<rustls::ClientConfig, EgressError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let tls_error = |m: String| error(EgressErrorKind::TlsError, m);
        let mut roots = (*self.roots).clone();
        if let Some(pem) = ca {
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| tls_error(format!("the tenant CA is not PEM: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| tls_error(format!("the tenant CA is not usable: {e}")))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(e.to_string()))?
            .with_root_certificates(roots);
        let mut config = match client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(&cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| tls_error(format!("the client certificate is not PEM: {e}")))?;
                let key = PrivateKeyDer::from_pem_slice(&key)
                    .map_err(|e| tls_error(format!("the client key is not PEM: {e}")))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| tls_error(format!("the client certificate is not usable: {e}")))?
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    async fn secret_pem(
        &self,
        invocation: &Invocation,
        name: &str,
    ) -> Result<Vec<u8>, EgressError> {
        invocation
            .spec
            .secrets
            .secret(name)
            .await
            .map_err(|e| {
                error(
                    EgressErrorKind::Unavailable,
                    format!("secret `{name}`: {e}"),
                )
            })?
            .ok_or_else(|| {
                error(
                    EgressErrorKind::TlsError,
                    format!("secret `{name}` is not set"),
                )
            })
    }

    #[allow(clippy::too_many_arguments, reason = "one request's parts, used once")]
    async fn exchange(
        &self,
        invocation: &Invocation,
        tenant: &TenantEgress,
        destination: &Destination,
        ip: IpAddr,
        method: &str,
        headers: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
        secrets: &[Vec<u8>],
        deadline: Instant,
        shown: &str,
    ) -> Result<HttpResponse, EgressError> {
        let address = SocketAddr::new(ip, destination.port);
        let stream = tokio::net::TcpStream::connect(address).await.map_err(|e| {
            error(
                EgressErrorKind::ConnectionFailed,
                format!("{shown}: cannot connect to {address}: {e}"),
            )
        })?;
        let _ = stream.set_nodelay(true);
        let authority = if (destination.scheme == "https" && destination.port == 443)
            || (destination.scheme == "http" && destination.port == 80)
        {
            destination.host.clone()
        } else {
            format!("{}:{}", destination.host, destination.port)
        };
        let mut builder = http::Request::builder()
            .method(method)
            .uri(destination.target());
        builder = builder.header(http::header::HOST, authority);
        for (name, value) in &headers {
            builder = builder.header(name.as_str(), value.as_slice());
        }
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| error(EgressErrorKind::InvalidRequest, format!("{shown}: {e}")))?;

        let response = if destination.scheme == "https" {
            let mut ca = None;
            let mut client = None;
            for extra in &invocation.spec.tls {
                match extra {
                    TlsExtra::Ca { host, secret } if host_matches(host, &destination.host) => {
                        ca = Some(self.secret_pem(invocation, secret).await?);
                    }
                    TlsExtra::ClientCert {
                        host,
                        cert_secret,
                        key_secret,
                    } if host_matches(host, &destination.host) => {
                        client = Some((
                            self.secret_pem(invocation, cert_secret).await?,
                            self.secret_pem(invocation, key_secret).await?,
                        ));
                    }
                    _ => {}
                }
            }
            let config = self.tls_config(ca, client)?;
            let name = rustls::pki_types::ServerName::try_from(destination.host.clone())
                .map_err(|e| error(EgressErrorKind::TlsError, format!("{shown}: {e}")))?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, stream)
                .await
                .map_err(|e| {
                    error(
                        EgressErrorKind::TlsError,
                        format!("{shown}: TLS handshake failed: {e}"),
                    )
                })?;
            send_http1(tls, request, shown).await?
        } else {
            send_http1(stream, request, shown).await?
        };

        let (parts, mut incoming) = response.into_parts();
        let mut body = Vec::new();
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|e| {
                error(
                    EgressErrorKind::ResponseError,
                    format!("{shown}: the response broke off: {e}"),
                )
            })?;
            let Ok(chunk) = frame.into_data() else {
                continue;
            };
            let bytes = chunk.len() as u64;
            self.charge(invocation, bytes, shown).map_err(|_| {
                error(
                    EgressErrorKind::ResponseError,
                    format!("{shown}: the response exceeds the invocation's egress_bytes after {} bytes", body.len()),
                )
            })?;
            take_bandwidth(tenant, invocation, shown, bytes, deadline).await?;
            body.extend_from_slice(&chunk);
        }
        let headers = parts
            .headers
            .iter()
            .filter(|(name, _)| !HOP_BY_HOP.contains(&name.as_str()))
            .map(|(name, value)| (name.as_str().to_owned(), scrub(value.as_bytes(), secrets)))
            .collect();
        Ok(HttpResponse {
            status: parts.status.as_u16(),
            headers,
            body: scrub(&body, secrets),
        })
    }
}

async fn send_http1<S>(
    stream: S,
    request: http::Request<Full<Bytes>>,
    shown: &str,
) -> Result<http::Response<hyper::body::Incoming>, EgressError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| error(EgressErrorKind::ConnectionFailed, format!("{shown}: {e}")))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| error(EgressErrorKind::ResponseError, format!("{shown}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_scrubbed_wherever_they_appear() {
        let secrets = vec![b"sk_live_123".to_vec()];
        assert_eq!(
            scrub(b"echo: Bearer sk_live_123, again sk_live_123.", &secrets),
            b"echo: Bearer [redacted], again [redacted].".to_vec()
        );
        assert_eq!(scrub(b"nothing here", &secrets), b"nothing here".to_vec());
    }

    #[test]
    fn host_rules_match_exactly_or_by_subdomain() {
        assert!(host_matches("api.example.com", "api.example.com"));
        assert!(!host_matches("api.example.com", "evil.api.example.com"));
        assert!(host_matches("*.example.com", "a.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
    }
}

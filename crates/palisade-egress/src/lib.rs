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

/// The forms in which a secret can come back: as it is, in standard base64 and base64url
/// (padded and not, and the parts that do not depend on the bytes around it at each of the
/// three alignments), in lowercase and uppercase hex, and percent-encoded (either hex case).
/// Longest first, so that a longer form is replaced before a shorter form inside it.
fn secret_forms(secret: &[u8]) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let mut forms = vec![secret.to_vec()];
    for engine in [&STANDARD, &URL_SAFE] {
        forms.push(engine.encode(secret).into_bytes());
    }
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        forms.push(engine.encode(secret).into_bytes());
        for offset in 0..3usize {
            let mut shifted = vec![0u8; offset];
            shifted.extend_from_slice(secret);
            let encoded = engine.encode(&shifted).into_bytes();
            // Characters made only of the secret's bits: from the first one after the
            // `offset` leading bytes to the last one before the unknown bytes after it.
            let first = (offset * 8).div_ceil(6);
            let last = (offset + secret.len()) * 8 / 6;
            if let Some(core) = encoded.get(first..last)
                && core.len() >= 4
            {
                forms.push(core.to_vec());
            }
        }
    }
    let hex_lower: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    forms.push(hex_lower.to_ascii_uppercase().into_bytes());
    forms.push(hex_lower.into_bytes());
    for upper in [true, false] {
        let mut encoded = Vec::with_capacity(secret.len() * 3);
        for &b in secret {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                encoded.push(b);
            } else if upper {
                encoded.extend_from_slice(format!("%{b:02X}").as_bytes());
            } else {
                encoded.extend_from_slice(format!("%{b:02x}").as_bytes());
            }
        }
        forms.push(encoded);
    }
    forms.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    forms.dedup();
    forms
}

/// Replaces every occurrence of each secret in `bytes`, in each of its [`secret_forms`].
fn scrub(bytes: &[u8], secrets: &[Vec<u8>]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let mut forms: Vec<Vec<u8>> = secrets
        .iter()
        .filter(|s| s.len() >= 4)
        .flat_map(|s| secret_forms(s))
        .collect();
    forms.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    forms.dedup();
    for form in &forms {
        let mut scrubbed = Vec::with_capacity(out.len());
        let mut rest = out.as_slice();
        while let Some(at) = rest.windows(form.len()).position(|w| w == form.as_slice()) {
            scrubbed.extend_from_slice(&rest[..at]);
            scrubbed.extend_from_slice(REDACTED);
            rest = &rest[at + form.len()..];
        }
        scrubbed.extend_from_slice(rest);
        out = scrubbed;
    }
    out
}

/// The headers sent upstream: the guest's (lowercased), minus what the gateway owns and
/// what it injects, plus the injected ones. A request that carries an injected credential
/// asks for `accept-encoding: identity` whatever the guest asked for, so that the answer
/// can be scrubbed (a compressed echo of a secret would pass the scrubber).
fn outgoing_headers(
    guest: Vec<(String, Vec<u8>)>,
    injected: Vec<(String, Vec<u8>, Option<Vec<u8>>)>,
) -> Vec<(String, Vec<u8>)> {
    let credentialed = injected.iter().any(|(_, _, secret)| secret.is_some());
    let mut headers: Vec<(String, Vec<u8>)> = guest
        .into_iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value))
        .filter(|(name, _)| !HOP_BY_HOP.contains(&name.as_str()))
        .filter(|(name, _)| {
            !injected
                .iter()
                .any(|(header, _, _)| header.eq_ignore_ascii_case(name))
        })
        .filter(|(name, _)| !(credentialed && name == "accept-encoding"))
        .collect();
    headers.extend(
        injected
            .into_iter()
            .map(|(header, value, _)| (header, value)),
    );
    if credentialed {
        headers.push(("accept-encoding".into(), b"identity".to_vec()));
    }
    headers
}

/// Refuses the answer to a credentialed request when it is content- or transfer-coded
/// (anything but identity, and chunked framing): its bytes could hold a secret the scrubber
/// cannot see.
fn refuse_encoded_response(headers: &http::HeaderMap, shown: &str) -> Result<(), EgressError> {
    let coded = |name: http::header::HeaderName, allowed: &[&str]| {
        headers.get_all(name).iter().any(|value| {
            value
                .as_bytes()
                .split(|&b| b == b',')
                .map(|coding| String::from_utf8_lossy(coding).trim().to_ascii_lowercase())
                .any(|coding| !coding.is_empty() && !allowed.contains(&coding.as_str()))
        })
    };
    if coded(http::header::CONTENT_ENCODING, &["identity"])
        || coded(http::header::TRANSFER_ENCODING, &["identity", "chunked"])
    {
        return Err(error(
            EgressErrorKind::ResponseError,
            format!(
                "{shown}: the answer to a request with an injected credential is encoded \
                 (content-encoding or transfer-encoding other than identity); it is not \
                 handed to the guest, since injected secrets could not be scrubbed from it"
            ),
        ));
    }
    Ok(())
}

/// Methods the gateway never forwards: CONNECT opens a tunnel the gateway could not check,
/// TRACE (and IIS's TRACK) echo the request, injected credentials included.
const NEVER_FORWARDED: [&str; 3] = ["CONNECT", "TRACE", "TRACK"];

/// Headers a guest may not set: the gateway owns the connection and the framing.
const HOP_BY_HOP: [&str; 9] = [
    "host",
    "te",
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
        if NEVER_FORWARDED.contains(&method.as_str()) {
            return Err(EgressError::denied(format!(
                "{shown}: the gateway never forwards {method} requests"
            )));
        }
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
        let credentialed = !secrets.is_empty();
        let headers = outgoing_headers(request.headers, injected);

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
            credentialed,
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
        credentialed: bool,
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
        if credentialed {
            refuse_encoded_response(&parts.headers, shown)?;
        }
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
    #[test]
    fn secrets_are_scrubbed_in_base64_hex_and_percent_encoding() {
        use base64::Engine as _;
        use base64::engine::general_purpose::{
            STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
        };
        // Bytes chosen so that standard and url-safe base64 differ (`+/` vs `-_`) and padding
        // is needed, and percent-encoding differs from the raw form.
        let secret = b"sk?>~/ \xfb\xffQ".to_vec();
        let secrets = vec![secret.clone()];
        let hex_lower: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        let forms = [
            ("standard base64", STANDARD.encode(&secret)),
            ("standard base64 unpadded", STANDARD_NO_PAD.encode(&secret)),
            ("base64url", URL_SAFE.encode(&secret)),
            ("base64url unpadded", URL_SAFE_NO_PAD.encode(&secret)),
            ("lowercase hex", hex_lower.clone()),
            ("uppercase hex", hex_lower.to_ascii_uppercase()),
            ("percent-encoding", "sk%3F%3E~%2F%20%FB%FFQ".to_owned()),
            (
                "lowercase percent-encoding",
                "sk%3f%3e~%2f%20%fb%ffQ".to_owned(),
            ),
        ];
        assert_ne!(
            forms[0].1, forms[2].1,
            "the test secret must tell the alphabets apart"
        );
        assert!(
            forms[0].1.ends_with('='),
            "the test secret must need padding"
        );
        for (name, form) in &forms {
            let body = format!("echo: <{form}> end");
            let scrubbed = scrub(body.as_bytes(), &secrets);
            assert_eq!(
                String::from_utf8_lossy(&scrubbed),
                "echo: <[redacted]> end",
                "{name}: {form}"
            );
        }
        // A secret inside a longer base64 value, at each alignment.
        for prefix in ["", "u", "us", "use"] {
            let encoded = STANDARD.encode([prefix.as_bytes(), &secret, b"!rest"].concat());
            let scrubbed = scrub(encoded.as_bytes(), &secrets);
            assert!(
                scrubbed.windows(REDACTED.len()).any(|w| w == REDACTED),
                "base64 of `{prefix}` + secret: {encoded}"
            );
        }
    }

    #[test]
    fn a_credentialed_request_asks_for_identity_encoding_even_if_the_guest_asked_for_gzip() {
        let guest = vec![
            ("Accept-Encoding".to_owned(), b"gzip, br".to_vec()),
            ("TE".to_owned(), b"gzip".to_vec()),
            ("x-other".to_owned(), b"1".to_vec()),
        ];
        let injected = vec![(
            "authorization".to_owned(),
            b"Bearer sk_live_123".to_vec(),
            Some(b"sk_live_123".to_vec()),
        )];
        let headers = outgoing_headers(guest.clone(), injected);
        let encodings: Vec<&[u8]> = headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("accept-encoding"))
            .map(|(_, value)| value.as_slice())
            .collect();
        assert_eq!(encodings, vec![b"identity".as_slice()]);
        assert!(!headers.iter().any(|(name, _)| name == "te"));
        assert!(headers.iter().any(|(name, _)| name == "x-other"));
        // Without a credential the guest's choice stands.
        let plain = outgoing_headers(guest, Vec::new());
        assert!(plain.contains(&("accept-encoding".to_owned(), b"gzip, br".to_vec())));
    }

    #[test]
    fn an_encoded_answer_to_a_credentialed_request_is_refused() {
        let mut headers = http::HeaderMap::new();
        assert!(refuse_encoded_response(&headers, "x").is_ok());
        headers.insert(
            http::header::CONTENT_ENCODING,
            http::HeaderValue::from_static("identity"),
        );
        assert!(refuse_encoded_response(&headers, "x").is_ok());
        headers.insert(
            http::header::CONTENT_ENCODING,
            http::HeaderValue::from_static("gzip"),
        );
        let err = refuse_encoded_response(&headers, "x").err();
        assert_eq!(err.map(|e| e.kind), Some(EgressErrorKind::ResponseError));
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::TRANSFER_ENCODING,
            http::HeaderValue::from_static("gzip, chunked"),
        );
        assert!(refuse_encoded_response(&headers, "x").is_err());
    }

    /// A loopback upstream that records each request head and answers with `answer`.
    async fn upstream(answer: &'static str) -> (u16, Arc<Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("addr: {e}"))
            .port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                record
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(String::from_utf8_lossy(&head).into_owned());
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        });
        (port, seen)
    }

    struct TestSecrets;

    #[async_trait::async_trait]
    impl SecretSource for TestSecrets {
        async fn secret(&self, name: &str) -> Result<Option<Vec<u8>>, String> {
            Ok((name == "api").then(|| b"sk_live_123456".to_vec()))
        }
    }

    fn test_invocation(port: u16, credentialed: bool) -> Invocation {
        let pattern = format!("http://127.0.0.1:{port}/ok/*");
        Invocation::new(InvocationSpec {
            tenant: "t".into(),
            extension: "e".into(),
            version: "1.0.0".into(),
            invocation_id: "inv".into(),
            patterns: vec![UrlPattern::parse(&pattern).unwrap_or_else(|e| panic!("{e}"))],
            policy: Arc::new(NoPolicyLayers),
            secrets: Arc::new(TestSecrets),
            credentials: if credentialed {
                vec![Credential {
                    host: "127.0.0.1".into(),
                    header: "authorization".into(),
                    secret: "api".into(),
                    format: Some("Bearer {secret}".into()),
                }]
            } else {
                Vec::new()
            },
            tokens: Vec::new(),
            tls: Vec::new(),
            allow_private: vec![Cidr::parse("127.0.0.1/32").unwrap_or_else(|| panic!("cidr"))],
            max_requests: 100,
            max_bytes: 1 << 20,
            deadline: Instant::now() + Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            bandwidth: 1 << 30,
            connections: 4,
        })
    }

    fn get(method: &str, port: u16, path: &str, headers: Vec<(String, Vec<u8>)>) -> HttpRequest {
        HttpRequest {
            method: method.into(),
            url: format!("http://127.0.0.1:{port}{path}"),
            headers,
            body: Vec::new(),
            timeout_ms: None,
        }
    }

    const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";

    fn request_lines(seen: &Mutex<Vec<String>>) -> Vec<String> {
        seen.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|head| head.lines().next().unwrap_or_default().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn the_upstream_receives_the_normalised_path_and_dot_segments_never_reach_admin() {
        let (port, seen) = upstream(OK).await;
        let gateway = Gateway::new(Arc::new(StaticResolver::default()), None);
        let invocation = test_invocation(port, true);
        for (path, expected) in [
            (
                "/ok/./x%7euser?q=%2e%2e",
                "GET /ok/x~user?q=%2e%2e HTTP/1.1",
            ),
            ("/ok//../a%2db", "GET /ok/a-b HTTP/1.1"),
        ] {
            let response = gateway
                .send(&invocation, get("GET", port, path, Vec::new()))
                .await
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(response.status, 200);
            assert_eq!(
                request_lines(&seen).last().map(String::as_str),
                Some(expected)
            );
        }
        for path in [
            "/ok/../admin",
            "/ok/%2e%2e/admin",
            "/ok/%2E%2E/admin",
            "/ok/.%2e/admin",
            "/ok/%2e./admin",
        ] {
            let err = gateway
                .send(&invocation, get("GET", port, path, Vec::new()))
                .await
                .err()
                .unwrap_or_else(|| panic!("{path} must not be sent"));
            assert_eq!(err.kind, EgressErrorKind::Denied, "{path}: {err}");
        }
        for path in ["/ok/..%2fadmin", "/ok/%5c..%5cadmin", "/ok/%00"] {
            let err = gateway
                .send(&invocation, get("GET", port, path, Vec::new()))
                .await
                .err()
                .unwrap_or_else(|| panic!("{path} must not be sent"));
            assert_eq!(err.kind, EgressErrorKind::InvalidRequest, "{path}: {err}");
        }
        let lines = request_lines(&seen);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(!lines.iter().any(|l| l.contains("admin")), "{lines:?}");
    }

    #[tokio::test]
    async fn connect_and_trace_are_never_forwarded() {
        let (port, seen) = upstream(OK).await;
        let gateway = Gateway::new(Arc::new(StaticResolver::default()), None);
        let invocation = test_invocation(port, true);
        for method in ["CONNECT", "TRACE", "trace", "Connect"] {
            let err = gateway
                .send(&invocation, get(method, port, "/ok/x", Vec::new()))
                .await
                .err()
                .unwrap_or_else(|| panic!("{method} must be refused"));
            assert_eq!(err.kind, EgressErrorKind::Denied, "{method}: {err}");
            assert!(err.message.contains("never forwards"), "{err}");
        }
        assert!(request_lines(&seen).is_empty());
        assert_eq!(invocation.requests_left.load(Ordering::Acquire), 100);
    }

    #[tokio::test]
    async fn a_credentialed_request_goes_out_with_identity_and_a_gzip_answer_is_refused() {
        let gzip = "HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
        let (port, seen) = upstream(gzip).await;
        let gateway = Gateway::new(Arc::new(StaticResolver::default()), None);
        let guest = vec![("accept-encoding".to_owned(), b"gzip".to_vec())];
        let err = gateway
            .send(
                &test_invocation(port, true),
                get("GET", port, "/ok/x", guest.clone()),
            )
            .await
            .err()
            .unwrap_or_else(|| panic!("a gzip answer to a credentialed request must be refused"));
        assert_eq!(err.kind, EgressErrorKind::ResponseError, "{err}");
        let heads = seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let head = heads
            .first()
            .cloned()
            .unwrap_or_default()
            .to_ascii_lowercase();
        assert!(head.contains("accept-encoding: identity\r\n"), "{head}");
        assert!(!head.contains("gzip"), "{head}");
        // Without a credential nothing is injected and the guest's choice stands.
        let response = gateway
            .send(
                &test_invocation(port, false),
                get("GET", port, "/ok/x", guest),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(response.status, 200);
    }
}

//! Outbound HTTP as it crosses from a guest to the egress gateway: the request the guest
//! built (through `wasi:http/outgoing-handler`), the response it gets, and the typed reasons a
//! request is refused. The worker only forwards these; the gateway in the supervisor decides,
//! resolves, connects and counts.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Largest request body a guest may send through the gateway (a policy can only lower it).
pub const MAX_REQUEST_BODY_BYTES: usize = 16 << 20;

/// Longest lifetime of a short-lived token the gateway injects. The policy refuses longer
/// `ttl`s, and a retired signing key stays published this long after its last signature.
pub const MAX_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// One outbound request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRequest {
    pub method: String,
    /// An absolute `http://` or `https://` URL.
    pub url: String,
    pub headers: Vec<(String, Vec<u8>)>,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// The guest's own timeout for the whole exchange, if it set one (`wasi:http` options).
    pub timeout_ms: Option<u64>,
}

/// The answer, with the whole body (read up to the limits).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// Why a request was refused or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EgressErrorKind {
    /// The manifest does not request it, or a policy layer does not permit it (scheme, host,
    /// port, method, path), or the destination address is private and not allowed.
    Denied,
    /// The invocation's requests or bytes, or the tenant's bandwidth or connections, are used
    /// up (after waiting as long as the deadline allowed).
    QuotaExceeded,
    /// The name does not resolve.
    DnsError,
    /// The connection was refused or reset.
    ConnectionFailed,
    /// No answer in time.
    Timeout,
    /// The TLS handshake failed (certificate, protocol).
    TlsError,
    /// The request is malformed (URL, headers) or its body too large.
    InvalidRequest,
    /// The response exceeded the bytes allowed, or is malformed.
    ResponseError,
    /// The gateway is not available here.
    Unavailable,
}

impl EgressErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Denied => "egress_denied",
            Self::QuotaExceeded => "egress_quota_exceeded",
            Self::DnsError => "egress_dns_error",
            Self::ConnectionFailed => "egress_connection_failed",
            Self::Timeout => "egress_timeout",
            Self::TlsError => "egress_tls_error",
            Self::InvalidRequest => "egress_invalid_request",
            Self::ResponseError => "egress_response_error",
            Self::Unavailable => "egress_unavailable",
        }
    }
}

/// A typed egress error with its reason (never containing a secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct EgressError {
    pub kind: EgressErrorKind,
    pub message: String,
}

impl fmt::Display for EgressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

impl EgressError {
    pub fn new(kind: EgressErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn denied(message: impl Into<String>) -> Self {
        Self::new(EgressErrorKind::Denied, message)
    }
}

/// A destination an extension requests in its manifest (`[capabilities] http = [...]`):
/// `https://api.example.com/v1/*`, `https://*.example.com`, `http://127.0.0.1:8080/*`. The
/// scheme is exact; the host exact or `*.` and a domain (any subdomain, not the domain
/// itself); the port explicit, `*`, or the scheme's default; the path a prefix ending in `*`, or
/// exact, or absent (any path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlPattern {
    pub scheme: String,
    pub host: String,
    pub port: Option<u16>,
    pub any_port: bool,
    pub path: Option<String>,
}

/// The parts of a URL a pattern and a policy look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub scheme: String,
    /// Lowercase; IPv6 without brackets.
    pub host: String,
    pub port: u16,
    /// The path, without the query.
    pub path: String,
    /// The query, without the `?`, if any.
    pub query: Option<String>,
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    }
}

/// Splits `scheme://host[:port][/path][?query]`, refusing user info, fragments, empty hosts
/// and schemes other than http and https.
type UrlParts = (String, String, Option<String>, String, Option<String>);

fn split_url(url: &str) -> Result<UrlParts, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("`{url}` is not an absolute URL"))?;
    let scheme = scheme.to_ascii_lowercase();
    if default_port(&scheme).is_none() {
        return Err(format!("scheme `{scheme}` is not http or https"));
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.contains('@') {
        return Err("URLs with user information are refused".into());
    }
    if tail.contains('#') {
        return Err("URLs with fragments are refused".into());
    }
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .ok_or_else(|| format!("`{authority}` has an unclosed IPv6 bracket"))?;
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port.to_owned()),
            None if after.is_empty() => None,
            None => return Err(format!("`{authority}` is not host:port")),
        };
        (host.to_owned(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port.to_owned())),
            None => (authority.to_owned(), None),
        }
    };
    if host.is_empty() {
        return Err("the URL has no host".into());
    }
    let (path, query) = match tail.split_once('?') {
        Some((path, query)) => (path, Some(query.to_owned())),
        None => (tail, None),
    };
    let path = if path.is_empty() { "/" } else { path };
    Ok((
        scheme,
        host.to_ascii_lowercase(),
        port,
        path.to_owned(),
        query,
    ))
}

impl Destination {
    pub fn parse(url: &str) -> Result<Self, EgressError> {
        let invalid = |m: String| EgressError::new(EgressErrorKind::InvalidRequest, m);
        let (scheme, host, port, path, query) = split_url(url).map_err(invalid)?;
        let port = match port {
            Some(port) => port
                .parse()
                .map_err(|_| invalid(format!("`{port}` is not a port")))?,
            None => default_port(&scheme).unwrap_or(443),
        };
        if host
            .bytes()
            .any(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_')))
        {
            return Err(invalid(format!("`{host}` is not a host name or address")));
        }
        Ok(Self {
            scheme,
            host,
            port,
            path,
            query,
        })
    }

    /// The request target for HTTP/1: the path and the query.
    pub fn target(&self) -> String {
        match &self.query {
            Some(query) => format!("{}?{query}", self.path),
            None => self.path.clone(),
        }
    }
}

impl UrlPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (scheme, host, port, path, _) = split_url(text)?;
        let (port, any_port) = match port.as_deref() {
            Some("*") => (None, true),
            Some(port) => (
                Some(
                    port.parse()
                        .map_err(|_| format!("`{port}` is not a port"))?,
                ),
                false,
            ),
            None => (default_port(&scheme), false),
        };
        let wildcard_ok = match host.strip_prefix("*.") {
            Some(domain) => !domain.is_empty() && !domain.contains('*'),
            None => !host.contains('*'),
        };
        if !wildcard_ok {
            return Err(format!(
                "`{host}`: a wildcard is only allowed as `*.domain`"
            ));
        }
        let path = (path != "/" || text.trim_end_matches('*').ends_with('/')).then_some(path);
        Ok(Self {
            scheme,
            host,
            port,
            any_port,
            path: path.filter(|p| p != "/*" && p != "*"),
        })
    }

    pub fn matches(&self, destination: &Destination) -> bool {
        let host = match self.host.strip_prefix("*.") {
            Some(domain) => destination.host.ends_with(&format!(".{domain}")),
            None => destination.host == self.host,
        };
        let port = self.any_port || self.port == Some(destination.port);
        let path = match &self.path {
            None => true,
            Some(pattern) => match pattern.strip_suffix('*') {
                Some(prefix) => destination.path.starts_with(prefix),
                None => destination.path == *pattern,
            },
        };
        self.scheme == destination.scheme && host && port && path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(url: &str) -> Destination {
        Destination::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn urls_are_split_strictly() {
        let d = dest("https://API.Example.com/v1/charges?x=1");
        assert_eq!(
            (d.scheme.as_str(), d.host.as_str(), d.port, d.path.as_str()),
            ("https", "api.example.com", 443, "/v1/charges")
        );
        assert_eq!(dest("http://[::1]:8080").host, "::1");
        assert_eq!(dest("http://127.0.0.1:9000/x").port, 9000);
        for bad in [
            "ftp://x/",
            "https://user:pw@example.com/",
            "https:///nohost",
            "example.com/x",
            "https://example.com:99999/",
            "https://exa mple.com/",
            "https://example.com/#frag",
        ] {
            assert!(Destination::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn patterns_match_scheme_host_port_and_path() {
        let p = |t: &str| UrlPattern::parse(t).unwrap_or_else(|e| panic!("{t}: {e}"));
        let api = p("https://api.example.com/v1/*");
        assert!(api.matches(&dest("https://api.example.com/v1/charges")));
        assert!(!api.matches(&dest("https://api.example.com/v2/charges")));
        assert!(!api.matches(&dest("http://api.example.com/v1/charges")));
        assert!(!api.matches(&dest("https://api.example.com:8443/v1/charges")));
        assert!(!api.matches(&dest("https://evil-api.example.com/v1/x")));
        let wild = p("https://*.example.com");
        assert!(wild.matches(&dest("https://a.b.example.com/anything")));
        assert!(!wild.matches(&dest("https://example.com/")));
        assert!(!wild.matches(&dest("https://example.com.evil.net/")));
        let any_port = p("http://127.0.0.1:*/*");
        assert!(any_port.matches(&dest("http://127.0.0.1:41234/x")));
        assert!(UrlPattern::parse("https://*evil.com").is_err());
        assert!(UrlPattern::parse("https://a.*.com").is_err());
    }
}

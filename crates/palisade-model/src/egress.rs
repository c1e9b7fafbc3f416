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

/// Whether `b` is an RFC 3986 unreserved character (`ALPHA DIGIT - . _ ~`).
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Whether `b` is a control byte (`%00`-`%1F`, `%7F`).
fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The one canonical form of a request path, used for pattern matching, for the policy
/// (`resource.path`) and as the target sent upstream: percent-escapes of unreserved
/// characters decoded, the other escapes in uppercase hex, then RFC 3986 `remove_dot_segments`.
/// Refused (never guessed at): a path not starting with `/`, non-ASCII or control bytes, raw
/// spaces, a backslash raw or encoded, an encoded `/`, encoded control bytes, malformed escapes, and
/// dot segments that would climb above the root. `//` is kept as it is.
pub fn normalize_path(raw: &str) -> Result<String, String> {
    if !raw.starts_with('/') {
        return Err(format!(
            "the path `{}` does not start with `/`",
            raw.escape_debug()
        ));
    }
    let bytes = raw.as_bytes();
    let mut decoded = String::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if !b.is_ascii() {
            return Err("the path contains non-ASCII bytes (percent-encode them)".into());
        }
        if is_control(b) || b == b' ' {
            return Err("the path contains a control byte or a raw space".into());
        }
        if b == b'\\' {
            return Err("the path contains `\\`".into());
        }
        if b != b'%' {
            decoded.push(char::from(b));
            i += 1;
            continue;
        }
        let value = match (
            bytes.get(i + 1).copied().and_then(hex_value),
            bytes.get(i + 2).copied().and_then(hex_value),
        ) {
            (Some(hi), Some(lo)) => hi << 4 | lo,
            _ => return Err("the path contains a malformed percent-escape".into()),
        };
        if value == b'/' || value == b'\\' || is_control(value) {
            return Err(format!(
                "the path contains `%{value:02X}` (an encoded `/`, `\\` or control byte)"
            ));
        }
        if is_unreserved(value) {
            decoded.push(char::from(value));
        } else {
            decoded.push_str(&format!("%{value:02X}"));
        }
        i += 3;
    }
    remove_dot_segments(&decoded)
}

/// RFC 3986 section 5.2.4 on an absolute path, segment by segment, refusing (rather than
/// clamping) a `..` that would climb above the root.
fn remove_dot_segments(path: &str) -> Result<String, String> {
    let rest = path.strip_prefix('/').unwrap_or(path);
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len().saturating_sub(1);
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (index, segment) in segments.iter().enumerate() {
        match *segment {
            "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err("the path climbs above the root with `..`".into());
                }
            }
            other => {
                out.push(other);
                continue;
            }
        }
        // A dot segment at the end leaves a directory: `/a/.` is `/a/`, `/a/b/..` is `/a/`.
        if index == last {
            out.push("");
        }
    }
    Ok(format!("/{}", out.join("/")))
}

/// Refuses control bytes, raw spaces and non-ASCII bytes in a query.
fn check_query(query: &str) -> Result<(), String> {
    if query
        .bytes()
        .any(|b| !b.is_ascii() || is_control(b) || b == b' ')
    {
        return Err("the query contains a control byte, a raw space or a non-ASCII byte".into());
    }
    Ok(())
}

impl Destination {
    /// Parses `url` strictly; the path is normalised once here ([`normalize_path`]), so the
    /// pattern check, the policy and the upstream all see the same path.
    pub fn parse(url: &str) -> Result<Self, EgressError> {
        let invalid = |m: String| EgressError::new(EgressErrorKind::InvalidRequest, m);
        let (scheme, host, port, path, query) = split_url(url).map_err(invalid)?;
        let path = normalize_path(&path).map_err(invalid)?;
        if let Some(query) = &query {
            check_query(query).map_err(invalid)?;
        }
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
        let path = normalize_path(&path).map_err(|e| format!("`{text}`: {e}"))?;
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
    #[test]
    fn dot_segments_and_unreserved_escapes_are_normalised_before_matching() {
        for (raw, normal) in [
            ("/ok/../admin", "/admin"),
            ("/ok/%2e%2e/admin", "/admin"),
            ("/ok/%2E%2E/admin", "/admin"),
            ("/ok/.%2e/admin", "/admin"),
            ("/ok/%2e./admin", "/admin"),
            ("/ok//../admin", "/ok/admin"),
            ("/ok/./x", "/ok/x"),
            ("/ok/%7Euser", "/ok/~user"),
            ("/ok/a%2db", "/ok/a-b"),
            ("/ok/a%3fb%3Ac", "/ok/a%3Fb%3Ac"),
            ("/ok/.", "/ok/"),
            ("/ok/x/..", "/ok/"),
            ("/ok/", "/ok/"),
            ("/", "/"),
        ] {
            assert_eq!(dest(&format!("http://h:8080{raw}")).path, normal, "{raw}");
        }
        let ok = UrlPattern::parse("http://h:8080/ok/*").unwrap_or_else(|e| panic!("{e}"));
        for raw in [
            "/ok/../admin",
            "/ok/%2e%2e/admin",
            "/ok/%2E%2E/admin",
            "/ok/.%2e/admin",
            "/ok/%2e./admin",
            "/ok/x/../../admin",
        ] {
            let d = dest(&format!("http://h:8080{raw}"));
            assert!(d.path.starts_with("/admin"), "{raw} -> {}", d.path);
            assert!(!ok.matches(&d), "{raw} must not match /ok/*");
        }
        assert!(ok.matches(&dest("http://h:8080/ok/./x")));
        assert_eq!(
            dest("http://h:8080/ok/%2e%2e/admin?a=%2e%2e").target(),
            "/admin?a=%2e%2e"
        );
    }

    #[test]
    fn ambiguous_paths_and_queries_are_refused_as_invalid_requests() {
        for raw in [
            "/ok/..%2fadmin",
            "/ok/..%2Fadmin",
            "/ok/%5c..%5cadmin",
            "/ok/\\..\\admin",
            "/%00",
            "/ok/%1f",
            "/ok/%7F",
            "/ok/%",
            "/ok/%g1",
            "/ok/%2",
            "/..",
            "/ok/../..",
            "/%2e%2e/etc",
            "/ok/caf\u{e9}",
            "/ok/a b",
            "/ok/a\tb",
            "/ok?a=b c",
            "/ok?a=\u{1}",
        ] {
            let err = Destination::parse(&format!("http://h:8080{raw}"))
                .err()
                .unwrap_or_else(|| panic!("{raw:?} must be refused"));
            assert_eq!(err.kind, EgressErrorKind::InvalidRequest, "{raw:?}");
        }
        assert!(normalize_path("ok").is_err());
    }

    #[test]
    fn patterns_are_normalised_like_destinations() {
        let p = UrlPattern::parse("http://h:8080/ok/./sub/../*").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.path.as_deref(), Some("/ok/*"));
        let p = UrlPattern::parse("http://h:8080/ok/a%2db/*").unwrap_or_else(|e| panic!("{e}"));
        assert!(p.matches(&dest("http://h:8080/ok/a-b/x")));
        assert!(p.matches(&dest("http://h:8080/ok/a%2Db/x")));
        assert!(UrlPattern::parse("http://h:8080/../*").is_err());
        assert!(UrlPattern::parse("http://h:8080/ok%2f*").is_err());
    }
}

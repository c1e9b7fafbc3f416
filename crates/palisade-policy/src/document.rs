//! Policy documents: a TOML file with the layer it belongs to, its `[limits]` and its Cedar
//! policies (inline or in a file next to it). Parsing is strict and every error has a place.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::error::{Location, PolicyError};
use crate::limits::{LimitSet, RawLimits};
use crate::request::TenantId;

/// The document format this build reads and writes.
pub const FORMAT: u32 = 1;
/// Policy documents (and Cedar files) larger than this are refused before parsing.
pub const MAX_POLICY_BYTES: usize = 1 << 20;

/// The shipped platform baseline.
pub const SHIPPED_BASELINE: &str = include_str!("../baseline/baseline.toml");

/// Which layer a document is: the platform baseline or one tenant's policy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    Baseline,
    Tenant(TenantId),
}

impl Scope {
    /// Reads `baseline` or `tenant:NAME`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.split_once(':') {
            None if text == "baseline" => Some(Self::Baseline),
            Some(("tenant", name)) => TenantId::new(name).ok().map(Self::Tenant),
            _ => None,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Baseline => f.write_str("baseline"),
            Self::Tenant(tenant) => write!(f, "tenant:{tenant}"),
        }
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A parsed, checked policy document. Its Cedar text is resolved (a `cedar.file` has been
/// read), so the document is self-contained; `compile` validates the Cedar against the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDocument {
    pub scope: Scope,
    pub description: Option<String>,
    pub limits: LimitSet,
    /// How the egress gateway treats this layer's traffic: private ranges allowed (baseline),
    /// credentials and short-lived tokens injected, extra CAs and client certificates (tenant).
    pub egress: EgressRules,
    /// The Cedar policies, as text.
    pub cedar: String,
    /// Where the Cedar text came from, for error messages (`cedar.text` or a path).
    pub cedar_source: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum LayerKind {
    Baseline,
    Tenant,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocument {
    format: Spanned<u32>,
    layer: Spanned<LayerKind>,
    #[serde(default)]
    tenant: Option<Spanned<String>>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    egress: Option<Spanned<EgressRules>>,
    #[serde(default)]
    cedar: Option<Spanned<RawCedar>>,
}

/// The `[egress]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressRules {
    /// CIDRs the gateway may connect to although they are loopback, private, link-local, ...
    /// (baseline only: the platform decides; the Cedar policies must permit them too).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_private: Vec<String>,
    /// Headers the gateway adds from tenant secrets (the guest never sees the value).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<CredentialRule>,
    /// Short-lived, per-invocation tokens the gateway mints and adds (for calls back into
    /// the SaaS's own API).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<TokenRule>,
    /// Extra certificate authorities (PEM in a tenant secret) trusted for a host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca: Vec<CaRule>,
    /// Client certificates (PEM in tenant secrets) presented to a host (mutual TLS).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_certs: Vec<ClientCertRule>,
}

impl EgressRules {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialRule {
    /// The exact host, or `*.domain`.
    pub host: String,
    /// The header to set (lowercase); the guest's own header of that name is dropped.
    pub header: String,
    /// The tenant secret whose value goes in.
    pub secret: String,
    /// The header value, with `{secret}` where the value goes (default: the value alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRule {
    pub host: String,
    pub header: String,
    /// The token's `aud` claim.
    pub audience: String,
    /// Lifetime, 1 s to 1 h (default 60 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<palisade_model::units::DurationSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaRule {
    pub host: String,
    pub secret: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCertRule {
    pub host: String,
    pub cert_secret: String,
    pub key_secret: String,
}

/// `*.domain` or an exact host name or address, lowercase.
fn valid_host_rule(host: &str) -> bool {
    let name = host.strip_prefix("*.").unwrap_or(host);
    !name.is_empty()
        && !name.contains('*')
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b':')
        })
}

fn valid_header(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'))
        && !matches!(
            name,
            "host" | "content-length" | "transfer-encoding" | "connection"
        )
}

/// `address/prefix` with a prefix that fits the address family.
pub fn parse_cidr(text: &str) -> Option<(std::net::IpAddr, u8)> {
    let (address, prefix) = text.split_once('/')?;
    let address: std::net::IpAddr = address.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then_some((address, prefix))
}

impl EgressRules {
    fn validate(&self, scope: &Scope) -> Result<(), String> {
        if !self.allow_private.is_empty() && scope != &Scope::Baseline {
            return Err("`allow_private` belongs in the baseline: the platform decides which private ranges are reachable".into());
        }
        for cidr in &self.allow_private {
            if parse_cidr(cidr).is_none() {
                return Err(format!("`{cidr}` is not a CIDR (address/prefix)"));
            }
        }
        let hosts = self
            .credentials
            .iter()
            .map(|r| &r.host)
            .chain(self.tokens.iter().map(|r| &r.host))
            .chain(self.ca.iter().map(|r| &r.host))
            .chain(self.client_certs.iter().map(|r| &r.host));
        for host in hosts {
            if !valid_host_rule(host) {
                return Err(format!(
                    "`{host}` is not a lowercase host name or `*.domain`"
                ));
            }
        }
        for header in self
            .credentials
            .iter()
            .map(|r| &r.header)
            .chain(self.tokens.iter().map(|r| &r.header))
        {
            if !valid_header(header) {
                return Err(format!(
                    "`{header}` is not a header the gateway may set (lowercase token, not a hop-by-hop header)"
                ));
            }
        }
        for rule in &self.credentials {
            if let Some(format) = &rule.format
                && format.matches("{secret}").count() != 1
            {
                return Err(format!(
                    "credential format `{format}` must contain `{{secret}}` once"
                ));
            }
            // A header value: a newline would start another header.
            if rule
                .format
                .as_deref()
                .is_some_and(|f| f.chars().any(char::is_control))
            {
                return Err(format!(
                    "credential format for {} must not contain control characters",
                    rule.host
                ));
            }
        }
        for rule in &self.tokens {
            if let Some(ttl) = rule.ttl
                && !(std::time::Duration::from_secs(1)..=palisade_model::egress::MAX_TOKEN_TTL)
                    .contains(&ttl.0)
            {
                return Err(format!("token ttl {ttl} is outside 1s to 1h"));
            }
        }
        if (!self.credentials.is_empty()
            || !self.tokens.is_empty()
            || !self.ca.is_empty()
            || !self.client_certs.is_empty())
            && scope == &Scope::Baseline
        {
            return Err(
                "credentials, tokens, CAs and client certificates belong to a tenant policy".into(),
            );
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCedar {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    file: Option<PathBuf>,
}

impl PolicyDocument {
    /// Parses a document's text. A `cedar.file` is read relative to `base`; without a base,
    /// a `cedar.file` is an error.
    pub fn parse(text: &str, base: Option<&Path>) -> Result<Self, PolicyError> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge {
                bytes: text.len(),
                max: MAX_POLICY_BYTES,
            });
        }
        let raw: RawDocument = toml::from_str(text).map_err(|error| PolicyError::Syntax {
            location: error.span().map(|span| Location::of(text, span.start)),
            message: error.message().trim().to_owned(),
        })?;
        let at = |offset: usize| Some(Location::of(text, offset));
        if *raw.format.get_ref() != FORMAT {
            return Err(PolicyError::UnsupportedFormat {
                location: at(raw.format.span().start),
                found: *raw.format.get_ref(),
                supported: FORMAT,
            });
        }
        let scope = match (raw.layer.get_ref(), &raw.tenant) {
            (LayerKind::Baseline, None) => Scope::Baseline,
            (LayerKind::Baseline, Some(tenant)) => {
                return Err(PolicyError::Layer {
                    location: at(tenant.span().start),
                    message: "a baseline applies to every tenant; remove `tenant`".into(),
                });
            }
            (LayerKind::Tenant, None) => {
                return Err(PolicyError::Layer {
                    location: at(raw.layer.span().start),
                    message: "a tenant policy needs `tenant = \"NAME\"`".into(),
                });
            }
            (LayerKind::Tenant, Some(tenant)) => Scope::Tenant(
                TenantId::new(tenant.get_ref()).map_err(|e| PolicyError::Layer {
                    location: at(tenant.span().start),
                    message: e.to_string(),
                })?,
            ),
        };
        let limits = raw.limits.validate(text)?;
        let egress = match raw.egress {
            None => EgressRules::default(),
            Some(egress) => {
                let location = at(egress.span().start);
                let rules = egress.into_inner();
                rules
                    .validate(&scope)
                    .map_err(|message| PolicyError::Layer {
                        location,
                        message: format!("[egress]: {message}"),
                    })?;
                rules
            }
        };
        let (cedar, cedar_source) = match raw.cedar {
            None => (String::new(), "cedar.text".to_owned()),
            Some(cedar) => {
                let location = at(cedar.span().start);
                let source_error = |message: String| PolicyError::CedarSource { location, message };
                match cedar.into_inner() {
                    RawCedar {
                        text: Some(text),
                        file: None,
                    } => (text, "cedar.text".to_owned()),
                    RawCedar {
                        text: None,
                        file: Some(file),
                    } => {
                        let base = base.ok_or_else(|| {
                            source_error(
                                "`file` needs a policy read from disk; inline the policies with `text`".into(),
                            )
                        })?;
                        let path = base.join(&file);
                        let text = read_capped(&path).map_err(|e| {
                            source_error(format!("cannot read {}: {e}", path.display()))
                        })?;
                        (text, path.display().to_string())
                    }
                    _ => return Err(source_error("set exactly one of `text` and `file`".into())),
                }
            }
        };
        Ok(Self {
            scope,
            description: raw.description,
            limits,
            egress,
            cedar,
            cedar_source,
        })
    }

    /// Reads and parses a document from disk; `cedar.file` is relative to its directory.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = read_capped(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, Some(path.parent().unwrap_or(Path::new("."))))
    }

    /// The baseline shipped with this build.
    pub fn shipped_baseline() -> Result<Self, PolicyError> {
        Self::parse(SHIPPED_BASELINE, None)
            .map_err(|e| PolicyError::Internal(format!("the shipped baseline is invalid: {e}")))
    }

    /// The document as self-contained TOML (Cedar inlined) that parses back to itself.
    pub fn to_toml(&self) -> String {
        let mut table = toml::Table::new();
        table.insert("format".into(), toml::Value::Integer(i64::from(FORMAT)));
        match &self.scope {
            Scope::Baseline => {
                table.insert("layer".into(), "baseline".into());
            }
            Scope::Tenant(tenant) => {
                table.insert("layer".into(), "tenant".into());
                table.insert("tenant".into(), tenant.as_str().into());
            }
        }
        if let Some(description) = &self.description {
            table.insert("description".into(), description.as_str().into());
        }
        table.insert("limits".into(), toml::Value::Table(self.limits.to_toml()));
        if !self.egress.is_empty()
            && let Ok(egress) = toml::Value::try_from(&self.egress)
        {
            table.insert("egress".into(), egress);
        }
        let mut cedar = toml::Table::new();
        cedar.insert("text".into(), self.cedar.as_str().into());
        table.insert("cedar".into(), toml::Value::Table(cedar));
        toml::to_string(&table).unwrap_or_default()
    }
}

fn read_capped(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut text = String::new();
    file.take(MAX_POLICY_BYTES as u64 + 1)
        .read_to_string(&mut text)?;
    if text.len() > MAX_POLICY_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("larger than the {MAX_POLICY_BYTES}-byte limit"),
        ));
    }
    Ok(text)
}

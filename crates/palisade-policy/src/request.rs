//! What is being authorized: the principal (an extension of a tenant), the action, the
//! resource and the context of the call, and their Cedar form.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression,
};
use palisade_model::manifest::ExtensionName;
use serde::Serialize;

use crate::error::RequestError;

/// A tenant: a customer of the platform. Same rules as extension names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct TenantId(String);

impl TenantId {
    pub fn new(id: &str) -> Result<Self, RequestError> {
        ExtensionName::new(id)
            .map(|_| Self(id.to_owned()))
            .map_err(|_| RequestError::Tenant(id.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The principal: one extension of one tenant. `Extension::"<tenant>/<name>"` in Cedar, a
/// member of `Tenant::"<tenant>"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Principal {
    pub tenant: TenantId,
    pub name: ExtensionName,
    pub version: semver::Version,
}

impl Principal {
    /// Reads `tenant/name` or `tenant/name@version` (version 0.0.0 when left out).
    pub fn parse(text: &str) -> Result<Self, RequestError> {
        let error = |reason: String| RequestError::Extension {
            text: text.to_owned(),
            reason,
        };
        let (tenant, rest) = text
            .split_once('/')
            .ok_or_else(|| error("the tenant is missing".into()))?;
        let (name, version) = match rest.split_once('@') {
            Some((name, version)) => (
                name,
                semver::Version::parse(version).map_err(|e| error(format!("bad version: {e}")))?,
            ),
            None => (rest, semver::Version::new(0, 0, 0)),
        };
        Ok(Self {
            tenant: TenantId::new(tenant).map_err(|e| error(e.to_string()))?,
            name: ExtensionName::new(name).map_err(|e| error(e.to_string()))?,
            version,
        })
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.tenant, self.name, self.version)
    }
}

/// The actions of the schema: one per host capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Action {
    #[serde(rename = "http:request")]
    HttpRequest,
    #[serde(rename = "kv:read")]
    KvRead,
    #[serde(rename = "kv:write")]
    KvWrite,
    #[serde(rename = "secret:use")]
    SecretUse,
    #[serde(rename = "log:write")]
    LogWrite,
    #[serde(rename = "config:read")]
    ConfigRead,
}

impl Action {
    pub const ALL: [Self; 6] = [
        Self::HttpRequest,
        Self::KvRead,
        Self::KvWrite,
        Self::SecretUse,
        Self::LogWrite,
        Self::ConfigRead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::HttpRequest => "http:request",
            Self::KvRead => "kv:read",
            Self::KvWrite => "kv:write",
            Self::SecretUse => "secret:use",
            Self::LogWrite => "log:write",
            Self::ConfigRead => "config:read",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Self::HttpRequest => 0,
            Self::KvRead => 1,
            Self::KvWrite => 2,
            Self::SecretUse => 3,
            Self::LogWrite => 4,
            Self::ConfigRead => 5,
        }
    }
}

impl FromStr for Action {
    type Err = RequestError;
    fn from_str(text: &str) -> Result<Self, RequestError> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == text)
            .ok_or_else(|| RequestError::Action(text.to_owned()))
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An outbound HTTP destination. `ip` is the address about to be connected to; the shipped
/// baseline forbids any host without one, so the egress layer must resolve first.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Host {
    pub scheme: String,
    pub hostname: String,
    pub port: u16,
    pub path: String,
    pub ip: Option<IpAddr>,
}

/// What an action touches.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Resource {
    Host(Host),
    KvNamespace { tenant: TenantId, name: String },
    Secret { tenant: TenantId, name: String },
    LogStream { tenant: TenantId },
    ConfigKey { tenant: TenantId, key: String },
}

impl Resource {
    /// Reads a resource as the CLI writes it: `https://host[:port][/path]`, `kv:NAME`,
    /// `secret:NAME`, `log`, `config:KEY`; the last four may name another tenant as
    /// `kv:TENANT/NAME`, `log:TENANT`. Without one, the resource is `tenant`'s own.
    pub fn parse(text: &str, tenant: &TenantId) -> Result<Self, RequestError> {
        let error = |reason: &str| RequestError::Resource {
            text: text.to_owned(),
            reason: reason.to_owned(),
        };
        let owned = |rest: &str| -> Result<(TenantId, String), RequestError> {
            match rest.split_once('/') {
                Some((t, name)) => Ok((
                    TenantId::new(t).map_err(|e| error(&e.to_string()))?,
                    name.to_owned(),
                )),
                None => Ok((tenant.clone(), rest.to_owned())),
            }
        };
        if text.contains("://") {
            return parse_url(text).map(Resource::Host);
        }
        let (kind, rest) = text.split_once(':').unwrap_or((text, ""));
        let resource = match kind {
            "kv" => owned(rest).map(|(tenant, name)| Self::KvNamespace { tenant, name })?,
            "secret" => owned(rest).map(|(tenant, name)| Self::Secret { tenant, name })?,
            "config" => owned(rest).map(|(tenant, key)| Self::ConfigKey { tenant, key })?,
            "log" if rest.is_empty() => Self::LogStream {
                tenant: tenant.clone(),
            },
            "log" => Self::LogStream {
                tenant: TenantId::new(rest).map_err(|e| error(&e.to_string()))?,
            },
            _ => {
                return Err(error(
                    "expected a URL, kv:NAME, secret:NAME, log or config:KEY",
                ));
            }
        };
        match &resource {
            Self::KvNamespace { name, .. } | Self::Secret { name, .. } if name.is_empty() => {
                Err(error("the name is empty"))
            }
            Self::ConfigKey { key, .. } if key.is_empty() => Err(error("the key is empty")),
            _ => Ok(resource),
        }
    }

    /// The resource's Cedar type.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Host(_) => "Host",
            Self::KvNamespace { .. } => "KvNamespace",
            Self::Secret { .. } => "Secret",
            Self::LogStream { .. } => "LogStream",
            Self::ConfigKey { .. } => "ConfigKey",
        }
    }

    /// The resource's Cedar entity id.
    pub fn entity_id(&self) -> String {
        match self {
            Self::Host(host) => format!(
                "{}://{}:{}{}",
                host.scheme,
                bracket(&host.hostname),
                host.port,
                host.path
            ),
            Self::KvNamespace { tenant, name } | Self::Secret { tenant, name } => {
                format!("{tenant}/{name}")
            }
            Self::LogStream { tenant } => tenant.to_string(),
            Self::ConfigKey { tenant, key } => format!("{tenant}/{key}"),
        }
    }

    /// `Type::"id"`, as Cedar writes it.
    pub fn cedar_ref(&self) -> String {
        format!("{}::{:?}", self.type_name(), self.entity_id())
    }

    fn attrs(&self) -> HashMap<String, RestrictedExpression> {
        let s = |v: &str| RestrictedExpression::new_string(v.to_owned());
        let mut attrs = HashMap::new();
        match self {
            Self::Host(host) => {
                attrs.insert("scheme".into(), s(&host.scheme));
                attrs.insert("hostname".into(), s(&host.hostname));
                attrs.insert(
                    "port".into(),
                    RestrictedExpression::new_long(i64::from(host.port)),
                );
                attrs.insert("path".into(), s(&host.path));
                if let Some(ip) = host.ip {
                    // `::ffff:10.0.0.1` connects to 10.0.0.1: decide on the IPv4 address
                    // (Cedar also refuses the embedded form).
                    let ip = ip.to_canonical();
                    attrs.insert("ip".into(), RestrictedExpression::new_ip(ip.to_string()));
                }
            }
            Self::KvNamespace { tenant, name } | Self::Secret { tenant, name } => {
                attrs.insert("tenant".into(), s(tenant.as_str()));
                attrs.insert("name".into(), s(name));
            }
            Self::LogStream { tenant } => {
                attrs.insert("tenant".into(), s(tenant.as_str()));
            }
            Self::ConfigKey { tenant, key } => {
                attrs.insert("tenant".into(), s(tenant.as_str()));
                attrs.insert("key".into(), s(key));
            }
        }
        attrs
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.cedar_ref())
    }
}

fn bracket(hostname: &str) -> String {
    if hostname.contains(':') {
        format!("[{hostname}]")
    } else {
        hostname.to_owned()
    }
}

/// `scheme://host[:port][/path]`; the hostname is lowercased and loses a trailing dot, and an
/// IP literal becomes the host's `ip`.
fn parse_url(text: &str) -> Result<Host, RequestError> {
    let error = |reason: &str| RequestError::Resource {
        text: text.to_owned(),
        reason: reason.to_owned(),
    };
    let (scheme, rest) = text.split_once("://").ok_or_else(|| error("no scheme"))?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => return Err(error("the scheme must be http or https")),
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.contains('@') {
        return Err(error("user information in the URL is not allowed"));
    }
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let (host, after) = inner.split_once(']').ok_or_else(|| error("unclosed `[`"))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(port) => port.parse().map_err(|_| error("bad port"))?,
        None => default_port,
    };
    let hostname = host.trim_end_matches('.').to_ascii_lowercase();
    if hostname.is_empty() {
        return Err(error("the host is empty"));
    }
    let ip = hostname.parse::<IpAddr>().ok();
    Ok(Host {
        scheme,
        hostname,
        port,
        path: path.to_owned(),
        ip,
    })
}

/// What is known about the call: the time, and for HTTP the method.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CallContext {
    /// Seconds since the Unix epoch.
    pub time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
}

impl CallContext {
    /// A context at `time` with nothing else known.
    pub fn at(time: i64) -> Self {
        Self {
            time,
            ..Self::default()
        }
    }

    /// A context at the current time.
    pub fn now() -> Self {
        Self::at(crate::now_unix())
    }

    pub(crate) fn to_cedar(&self) -> Result<Context, String> {
        let mut pairs = vec![("time".to_owned(), RestrictedExpression::new_long(self.time))];
        for (key, value) in [
            ("method", &self.method),
            ("invocation_id", &self.invocation_id),
            ("trigger", &self.trigger),
        ] {
            if let Some(value) = value {
                pairs.push((
                    key.to_owned(),
                    RestrictedExpression::new_string(value.clone()),
                ));
            }
        }
        Context::from_pairs(pairs).map_err(|e| e.to_string())
    }
}

/// The Cedar type names and action ids, parsed once.
#[derive(Debug, Clone)]
pub(crate) struct CedarNames {
    tenant: EntityTypeName,
    extension: EntityTypeName,
    resources: HashMap<&'static str, EntityTypeName>,
    actions: Vec<EntityUid>,
}

impl CedarNames {
    pub(crate) fn new() -> Result<Self, String> {
        let name = |n: &str| EntityTypeName::from_str(n).map_err(|e| e.to_string());
        let mut resources = HashMap::new();
        for r in ["Host", "KvNamespace", "Secret", "LogStream", "ConfigKey"] {
            resources.insert(r, name(r)?);
        }
        let action_type = name("Action")?;
        Ok(Self {
            tenant: name("Tenant")?,
            extension: name("Extension")?,
            resources,
            actions: Action::ALL
                .iter()
                .map(|a| {
                    EntityUid::from_type_name_and_id(action_type.clone(), EntityId::new(a.as_str()))
                })
                .collect(),
        })
    }

    pub(crate) fn action(&self, action: Action) -> Result<EntityUid, String> {
        self.actions
            .get(action.index())
            .cloned()
            .ok_or_else(|| format!("no Cedar id for {action}"))
    }

    pub(crate) fn principal(&self, principal: &Principal) -> EntityUid {
        EntityUid::from_type_name_and_id(
            self.extension.clone(),
            EntityId::new(format!("{}/{}", principal.tenant, principal.name)),
        )
    }

    pub(crate) fn resource(&self, resource: &Resource) -> Result<EntityUid, String> {
        let type_name = self
            .resources
            .get(resource.type_name())
            .cloned()
            .ok_or_else(|| format!("no Cedar type {}", resource.type_name()))?;
        Ok(EntityUid::from_type_name_and_id(
            type_name,
            EntityId::new(resource.entity_id()),
        ))
    }

    /// The entities a request needs: the extension (in its tenant), the tenant, the resource.
    pub(crate) fn entities(
        &self,
        principal: &Principal,
        resource: &Resource,
    ) -> Result<Entities, String> {
        let tenant = EntityUid::from_type_name_and_id(
            self.tenant.clone(),
            EntityId::new(principal.tenant.as_str()),
        );
        let s = |v: &str| RestrictedExpression::new_string(v.to_owned());
        let extension = Entity::new(
            self.principal(principal),
            HashMap::from([
                ("tenant".to_owned(), s(principal.tenant.as_str())),
                ("name".to_owned(), s(principal.name.as_str())),
                ("version".to_owned(), s(&principal.version.to_string())),
            ]),
            HashSet::from([tenant.clone()]),
        )
        .map_err(|e| e.to_string())?;
        let resource = Entity::new(self.resource(resource)?, resource.attrs(), HashSet::new())
            .map_err(|e| e.to_string())?;
        Entities::from_entities(
            [
                extension,
                Entity::new_no_attrs(tenant, HashSet::new()),
                resource,
            ],
            None,
        )
        .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme() -> TenantId {
        TenantId::new("acme").unwrap()
    }

    #[test]
    fn urls_become_hosts_with_literal_ips() {
        let Resource::Host(host) =
            Resource::parse("HTTPS://API.Example.com./v1?x=1", &acme()).unwrap()
        else {
            panic!("not a host")
        };
        assert_eq!(host.hostname, "api.example.com");
        assert_eq!(host.port, 443);
        assert_eq!(host.path, "/v1?x=1");
        assert_eq!(host.ip, None);
        let Resource::Host(host) = Resource::parse("http://[::1]:8080", &acme()).unwrap() else {
            panic!("not a host")
        };
        assert_eq!(host.ip, Some("::1".parse().unwrap()));
        assert_eq!(host.port, 8080);
        assert_eq!(
            Resource::parse("http://[::1]:8080", &acme())
                .unwrap()
                .cedar_ref(),
            r#"Host::"http://[::1]:8080/""#
        );
    }

    #[test]
    fn bad_resources_are_typed_errors() {
        for text in [
            "ftp://x",
            "https://",
            "https://user@host",
            "https://h:99999",
            "kv:",
            "kv:Bad Tenant/x",
            "bucket:x",
            "config:",
        ] {
            assert!(
                matches!(
                    Resource::parse(text, &acme()),
                    Err(RequestError::Resource { .. })
                ),
                "{text}"
            );
        }
    }

    #[test]
    fn resources_default_to_the_principals_tenant() {
        assert_eq!(
            Resource::parse("kv:orders", &acme()).unwrap(),
            Resource::KvNamespace {
                tenant: acme(),
                name: "orders".into()
            }
        );
        assert_eq!(
            Resource::parse("secret:globex/key", &acme())
                .unwrap()
                .entity_id(),
            "globex/key"
        );
    }

    #[test]
    fn principals_and_actions_parse() {
        let p = Principal::parse("acme/order-totals@1.2.0").unwrap();
        assert_eq!(p.to_string(), "acme/order-totals@1.2.0");
        assert!(Principal::parse("order-totals").is_err());
        assert!(Principal::parse("acme/Order").is_err());
        assert_eq!("kv:write".parse::<Action>(), Ok(Action::KvWrite));
        assert!("kv:delete".parse::<Action>().is_err());
    }
}

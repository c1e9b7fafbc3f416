//! `palisade.toml`: what an extension is, which component it ships, what it asks for, and how
//! to test it. Parsing is strict: unknown fields, bad units and nonsense limits are errors that
//! name the line and column.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::api::ApiPackage;
use crate::limits::RequestedLimits;
use crate::outcome::ErrorKind;

/// Manifests larger than this are refused before parsing.
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;
const MAX_CONFIG_KEY_BYTES: usize = 128;
const MAX_CONFIG_VALUE_BYTES: usize = 64 << 10;

/// A parsed, validated `palisade.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub extension: ExtensionInfo,
    pub component: ComponentRef,
    #[serde(default = "no_limits_requested")]
    pub limits: Spanned<RequestedLimits>,
    #[serde(default)]
    pub capabilities: Capabilities,
    #[serde(default)]
    pub config: BTreeMap<Spanned<String>, String>,
    #[serde(default)]
    pub tests: Vec<Spanned<TestVector>>,
}

fn no_limits_requested() -> Spanned<RequestedLimits> {
    Spanned::new(0..0, RequestedLimits::default())
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExtensionInfo {
    pub name: ExtensionName,
    pub version: semver::Version,
    /// The API package the component is built against.
    pub api: ApiPackage,
    #[serde(default)]
    pub description: Option<String>,
}

/// Where the compiled component is, relative to the manifest, and its pinned digest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentRef {
    pub path: PathBuf,
    #[serde(default)]
    pub sha256: Option<Sha256Digest>,
}

/// Capabilities the extension requests beyond logs and configuration. Nothing is granted that
/// is not requested here, and the policy layers must grant it too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Key-value namespaces the extension reads and writes (API 1.1): `"self"` for its own,
    /// or names of namespaces shared by the tenant's extensions.
    #[serde(default)]
    pub kv: Vec<Spanned<String>>,
    /// Outbound HTTP destinations (API 1.2): URL patterns such as
    /// `https://api.example.com/v1/*` or `https://*.example.com`.
    #[serde(default)]
    pub http: Vec<Spanned<String>>,
}

impl Capabilities {
    /// The storage names of the key-value namespaces requested ([`crate::kv::KvScope`]):
    /// `"self"` becomes `ext:EXTENSION`, a shared name stays as written.
    pub fn kv_namespaces(&self, extension: &ExtensionName) -> Vec<String> {
        let mut names: Vec<String> = self
            .kv
            .iter()
            .filter_map(|n| crate::kv::resolve_namespace(extension.as_str(), n.get_ref()).ok())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The outbound HTTP destinations requested (invalid ones were refused at parse time).
    pub fn http_patterns(&self) -> Vec<crate::egress::UrlPattern> {
        self.http
            .iter()
            .filter_map(|p| crate::egress::UrlPattern::parse(p.get_ref()).ok())
            .collect()
    }
}

/// A test vector: an input and exactly one expectation.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TestVector {
    pub name: String,
    /// Text input.
    #[serde(default)]
    pub input: Option<String>,
    /// A TOML value sent as JSON.
    #[serde(default)]
    pub input_json: Option<toml::Value>,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The output must equal this value as JSON.
    #[serde(default)]
    pub expect_json: Option<toml::Value>,
    /// The output must be exactly this text.
    #[serde(default)]
    pub expect_output: Option<String>,
    /// The invocation must fail with this error kind.
    #[serde(default)]
    pub expect_error: Option<ErrorKind>,
}

/// What a test vector expects.
#[derive(Debug, Clone, PartialEq)]
pub enum Expectation {
    Json(serde_json::Value),
    Output(String),
    Error(ErrorKind),
}

impl TestVector {
    /// The input bytes and content type this vector sends.
    pub fn request_body(&self) -> (Vec<u8>, String) {
        match (&self.input, &self.input_json) {
            (_, Some(value)) => (
                serde_json::to_vec(value).unwrap_or_default(),
                self.content_type
                    .clone()
                    .unwrap_or_else(|| "application/json".into()),
            ),
            (Some(text), None) => (
                text.clone().into_bytes(),
                self.content_type
                    .clone()
                    .unwrap_or_else(|| "text/plain".into()),
            ),
            (None, None) => (Vec::new(), self.content_type.clone().unwrap_or_default()),
        }
    }

    /// The vector's single expectation (validated at parse time).
    pub fn expectation(&self) -> Expectation {
        if let Some(kind) = self.expect_error {
            Expectation::Error(kind)
        } else if let Some(text) = &self.expect_output {
            Expectation::Output(text.clone())
        } else {
            let value = self.expect_json.as_ref().map(serde_json::to_value);
            Expectation::Json(value.and_then(Result::ok).unwrap_or_default())
        }
    }
}

/// An extension name: lowercase letters, digits and hyphens, starting with a letter, at most
/// 63 bytes (so it fits a DNS label, a file name and a metric label).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct ExtensionName(String);

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a valid extension name: use 1-63 lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen"
)]
pub struct InvalidName(pub String);

impl ExtensionName {
    pub fn new(name: &str) -> Result<Self, InvalidName> {
        let valid = (1..=63).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && !name.ends_with('-')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if valid {
            Ok(Self(name.to_owned()))
        } else {
            Err(InvalidName(name.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ExtensionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ExtensionName {
    type Error = InvalidName;
    fn try_from(name: String) -> Result<Self, InvalidName> {
        Self::new(&name)
    }
}

impl From<ExtensionName> for String {
    fn from(name: ExtensionName) -> String {
        name.0
    }
}

/// A SHA-256 digest written as 64 lowercase hex characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha256Digest(pub [u8; 32]);

/// Why a digest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a SHA-256 digest: expected 64 lowercase hex characters")]
pub struct InvalidDigest(pub String);

impl Sha256Digest {
    pub fn parse(text: &str) -> Result<Self, InvalidDigest> {
        let lowercase = text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let mut bytes = [0u8; 32];
        match hex::decode_to_slice(text, &mut bytes) {
            Ok(()) if lowercase => Ok(Self(bytes)),
            _ => Err(InvalidDigest(text.to_owned())),
        }
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl TryFrom<String> for Sha256Digest {
    type Error = InvalidDigest;
    fn try_from(text: String) -> Result<Self, InvalidDigest> {
        Self::parse(&text)
    }
}

impl From<Sha256Digest> for String {
    fn from(digest: Sha256Digest) -> String {
        digest.to_hex()
    }
}

/// A manifest that could not be accepted, with the place in the file that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestError {
    /// 1-based line, when the error has a place in the file.
    pub line: Option<usize>,
    /// 1-based column.
    pub column: Option<usize>,
    /// The field at fault, when known (`limits.memory`, `tests[2]`, ...).
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid manifest")?;
        if let Some(line) = self.line {
            write!(f, " at line {line}")?;
            if let Some(column) = self.column {
                write!(f, ", column {column}")?;
            }
        }
        if let Some(field) = &self.field {
            write!(f, " (field `{field}`)")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl ManifestError {
    fn at(text: &str, offset: usize, field: impl Into<String>, message: impl Into<String>) -> Self {
        let (line, column) = line_and_column(text, offset);
        Self {
            line: Some(line),
            column: Some(column),
            field: Some(field.into()),
            message: message.into(),
        }
    }
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

impl Manifest {
    /// Parses and validates a manifest's text.
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        if text.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError {
                line: None,
                column: None,
                field: None,
                message: format!(
                    "the manifest is {} bytes; the maximum is {MAX_MANIFEST_BYTES}",
                    text.len()
                ),
            });
        }
        let manifest: Self = toml::from_str(text).map_err(|error| {
            let (line, column) = match error.span() {
                Some(span) => {
                    let (line, column) = line_and_column(text, span.start);
                    (Some(line), Some(column))
                }
                None => (None, None),
            };
            ManifestError {
                line,
                column,
                field: None,
                message: error.message().trim().to_owned(),
            }
        })?;
        manifest.validate(text)?;
        Ok(manifest)
    }

    fn validate(&self, text: &str) -> Result<(), ManifestError> {
        if self.component.path.as_os_str().is_empty() {
            let offset = text.find("[component]").unwrap_or(0);
            return Err(ManifestError::at(
                text,
                offset,
                "component.path",
                "must not be empty",
            ));
        }
        if let Err(error) = self.limits.get_ref().validate() {
            return Err(ManifestError::at(
                text,
                self.limits.span().start,
                format!("limits.{}", error.field),
                error.to_string(),
            ));
        }
        for namespace in &self.capabilities.kv {
            if let Err(error) = crate::kv::resolve_namespace("self", namespace.get_ref()) {
                return Err(ManifestError::at(
                    text,
                    namespace.span().start,
                    "capabilities.kv",
                    error.message,
                ));
            }
        }
        for pattern in &self.capabilities.http {
            if let Err(problem) = crate::egress::UrlPattern::parse(pattern.get_ref()) {
                return Err(ManifestError::at(
                    text,
                    pattern.span().start,
                    "capabilities.http",
                    problem,
                ));
            }
        }
        if !self.capabilities.http.is_empty()
            && self.extension.api.version < semver::Version::new(1, 2, 0)
        {
            let offset = text.find("[capabilities").unwrap_or(0);
            return Err(ManifestError::at(
                text,
                offset,
                "capabilities.http",
                format!(
                    "outbound HTTP needs API palisade:extension@1.2.0 or later; this manifest asks for {}",
                    self.extension.api
                ),
            ));
        }
        if !self.capabilities.kv.is_empty()
            && self.extension.api.version < semver::Version::new(1, 1, 0)
        {
            let offset = text.find("[capabilities").unwrap_or(0);
            return Err(ManifestError::at(
                text,
                offset,
                "capabilities.kv",
                format!(
                    "key-value state needs API palisade:extension@1.1.0 or later; this manifest asks for {}",
                    self.extension.api
                ),
            ));
        }
        for (key, value) in &self.config {
            let problem = if key.get_ref().is_empty() || key.get_ref().len() > MAX_CONFIG_KEY_BYTES
            {
                Some(format!(
                    "config keys must be 1 to {MAX_CONFIG_KEY_BYTES} bytes"
                ))
            } else if value.len() > MAX_CONFIG_VALUE_BYTES {
                Some(format!(
                    "config values must be at most {MAX_CONFIG_VALUE_BYTES} bytes"
                ))
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(ManifestError::at(
                    text,
                    key.span().start,
                    format!("config.{}", key.get_ref()),
                    problem,
                ));
            }
        }
        for (index, vector) in self.tests.iter().enumerate() {
            let test = vector.get_ref();
            let field = format!("tests[{index}]");
            let expectations = usize::from(test.expect_json.is_some())
                + usize::from(test.expect_output.is_some())
                + usize::from(test.expect_error.is_some());
            let problem = if test.name.trim().is_empty() {
                Some("a test needs a non-empty `name`".to_owned())
            } else if test.input.is_some() && test.input_json.is_some() {
                Some(format!(
                    "test `{}` sets both `input` and `input_json`; choose one",
                    test.name
                ))
            } else if expectations != 1 {
                Some(format!(
                    "test `{}` must set exactly one of `expect_json`, `expect_output`, `expect_error` (it sets {expectations})",
                    test.name
                ))
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(ManifestError::at(text, vector.span().start, field, problem));
            }
        }
        Ok(())
    }

    /// Configuration values as plain strings.
    pub fn config_values(&self) -> BTreeMap<String, String> {
        self.config
            .iter()
            .map(|(k, v)| (k.get_ref().clone(), v.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[extension]
name = "order-totals"
version = "1.2.3"
api = "palisade:extension@1.0.0"

[component]
path = "order_totals.wasm"
sha256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

[limits]
fuel = 5_000_000
wall_time = "250ms"
memory = "16 MiB"

[config]
currency = "EUR"

[[tests]]
name = "totals"
input_json = { items = [] }
expect_json = { total_cents = 0 }

[[tests]]
name = "rejects text"
input = "nope"
expect_error = "guest_error"
"#;

    #[test]
    fn parses_a_complete_manifest() {
        let manifest = Manifest::parse(GOOD).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(manifest.extension.version, semver::Version::new(1, 2, 3));
        assert_eq!(manifest.limits.get_ref().fuel, Some(5_000_000));
        assert_eq!(
            manifest.config_values().get("currency").map(String::as_str),
            Some("EUR")
        );
        let (body, content_type) = manifest.tests[0].get_ref().request_body();
        assert_eq!(body, br#"{"items":[]}"#);
        assert_eq!(content_type, "application/json");
        assert_eq!(
            manifest.tests[1].get_ref().expectation(),
            Expectation::Error(ErrorKind::GuestError)
        );
    }

    fn error_for(text: &str) -> ManifestError {
        match Manifest::parse(text) {
            Ok(_) => panic!("manifest should be rejected:\n{text}"),
            Err(error) => error,
        }
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_line() {
        let error = error_for(&GOOD.replace("fuel = 5_000_000", "fuel = 5_000_000\ncpu = 3"));
        assert_eq!(error.line, Some(13));
        assert!(error.message.contains("unknown field `cpu`"), "{error}");
    }

    #[test]
    fn bad_units_name_the_line() {
        let error = error_for(&GOOD.replace("\"16 MiB\"", "\"16 parsecs\""));
        assert_eq!(error.line, Some(14));
        assert!(error.message.contains("byte size"), "{error}");
    }

    #[test]
    fn bad_names_versions_digests_and_api_are_rejected() {
        assert!(
            error_for(&GOOD.replace("order-totals", "Order Totals"))
                .message
                .contains("extension name")
        );
        assert_eq!(error_for(&GOOD.replace("1.2.3", "1.2")).line, Some(4));
        assert!(
            error_for(&GOOD.replace("ba7816bf", "BA7816BF"))
                .message
                .contains("SHA-256")
        );
        assert!(
            error_for(&GOOD.replace("@1.0.0", ""))
                .message
                .contains("API package")
        );
    }

    #[test]
    fn nonsense_limits_and_tests_are_rejected() {
        let error = error_for(&GOOD.replace("\"250ms\"", "\"0ms\""));
        assert_eq!(error.field.as_deref(), Some("limits.wall_time"));
        assert_eq!(error.line, Some(11));
        let error = error_for(&GOOD.replace("expect_error = \"guest_error\"", ""));
        assert_eq!(error.field.as_deref(), Some("tests[1]"));
        let error = error_for(&GOOD.replace(
            "expect_error = \"guest_error\"",
            "expect_error = \"melted\"",
        ));
        assert!(error.message.contains("unknown variant"), "{error}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for text in [
            "",
            "\u{0}\u{1}",
            "[extension",
            "[[tests]]\nname = 3",
            &"x".repeat(MAX_MANIFEST_BYTES + 1),
        ] {
            assert!(Manifest::parse(text).is_err());
        }
    }
}

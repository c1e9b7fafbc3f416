//! Typed errors: every way a policy document, a request or the store can be refused.

use std::fmt;
use std::path::PathBuf;

/// A place in a file: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// The line and column of byte `offset` in `text`.
    pub fn of(text: &str, offset: usize) -> Self {
        let mut end = offset.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let before = &text[..end];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Self { line, column }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

fn at(location: &Option<Location>) -> String {
    location.map(|l| format!(" at {l}")).unwrap_or_default()
}

/// One problem the Cedar schema validator found in one policy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SchemaProblem {
    /// The policy's id (its `@id` annotation, or `policyN` by position).
    pub policy: String,
    pub location: Option<Location>,
    pub message: String,
}

impl fmt::Display for SchemaProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "policy `{}`{}: {}",
            self.policy,
            at(&self.location),
            self.message
        )
    }
}

/// A policy document that cannot be accepted. Never a panic: every malformed input is one of
/// these, with the place in the file when there is one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The document is larger than the maximum policy size.
    #[error("the policy is {bytes} bytes; the maximum is {max}")]
    TooLarge { bytes: usize, max: usize },
    /// The document could not be read from disk.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The document is not valid TOML or does not match the policy format (unknown fields,
    /// wrong types, bad units).
    #[error("invalid policy{}: {message}", at(location))]
    Syntax {
        location: Option<Location>,
        message: String,
    },
    /// The `format` version is not one this build understands.
    #[error(
        "invalid policy{}: `format = {found}` is not supported (this build reads format {supported})",
        at(location)
    )]
    UnsupportedFormat {
        location: Option<Location>,
        found: u32,
        supported: u32,
    },
    /// `layer` and `tenant` do not fit together.
    #[error("invalid policy{}: {message}", at(location))]
    Layer {
        location: Option<Location>,
        message: String,
    },
    /// A limit makes no sense (zero deadline, memory below a page, above the platform ceiling).
    #[error("invalid policy{} (field `limits.{field}`): {message}", at(location))]
    Limit {
        location: Option<Location>,
        field: &'static str,
        message: String,
    },
    /// The `[cedar]` table is wrong: both or neither of `text` and `file`, or an unreadable file.
    #[error("invalid policy{} (table `cedar`): {message}", at(location))]
    CedarSource {
        location: Option<Location>,
        message: String,
    },
    /// The Cedar text does not parse. The location is in the Cedar text (`source`).
    #[error("invalid Cedar in {source_name}{}: {message}", at(location))]
    CedarSyntax {
        source_name: String,
        location: Option<Location>,
        message: String,
    },
    /// A Cedar template (`?principal`, `?resource`): Palisade policies are static.
    #[error("invalid Cedar in {source_name}: templates are not supported (policy `{policy}`)")]
    Template { source_name: String, policy: String },
    /// Two policies of one document have the same id.
    #[error("invalid Cedar in {source_name}: two policies have the id `{policy}`")]
    DuplicatePolicyId { source_name: String, policy: String },
    /// A policy id (`@id("...")`) is empty or uses characters other than letters, digits, `-`,
    /// `_`, `.` and `:`.
    #[error(
        "invalid Cedar in {source_name}: `{policy}` is not a valid policy id (use letters, digits, `-`, `_`, `.`, `:`; at most 128)"
    )]
    InvalidPolicyId { source_name: String, policy: String },
    /// The policies do not conform to Palisade's Cedar schema.
    #[error(
        "the Cedar policies in {source_name} do not match the Palisade schema:\n{}",
        list(problems)
    )]
    Schema {
        source_name: String,
        problems: Vec<SchemaProblem>,
    },
    /// The shipped schema or baseline is broken: a bug in this build, not in the input.
    #[error("internal policy error: {0}")]
    Internal(String),
}

fn list(problems: &[SchemaProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl PolicyError {
    /// A stable snake_case name for JSON output and scripts.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::Read { .. } => "unreadable",
            Self::Syntax { .. } => "syntax",
            Self::UnsupportedFormat { .. } => "unsupported_format",
            Self::Layer { .. } => "invalid_layer",
            Self::Limit { .. } => "invalid_limit",
            Self::CedarSource { .. } => "invalid_cedar_source",
            Self::CedarSyntax { .. } => "cedar_syntax",
            Self::Template { .. } => "cedar_template",
            Self::DuplicatePolicyId { .. } => "duplicate_policy_id",
            Self::InvalidPolicyId { .. } => "invalid_policy_id",
            Self::Schema { .. } => "schema_violation",
            Self::Internal(_) => "internal",
        }
    }

    /// Where in the document (or its Cedar text) the problem is, when known.
    pub fn location(&self) -> Option<Location> {
        match self {
            Self::Syntax { location, .. }
            | Self::UnsupportedFormat { location, .. }
            | Self::Layer { location, .. }
            | Self::Limit { location, .. }
            | Self::CedarSource { location, .. }
            | Self::CedarSyntax { location, .. } => *location,
            Self::Schema { problems, .. } => problems.first().and_then(|p| p.location),
            _ => None,
        }
    }

    /// The error as one JSON object: `{"kind", "message", "line"?, "column"?}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut json = serde_json::json!({"kind": self.kind(), "message": self.to_string()});
        if let (Some(location), Some(object)) = (self.location(), json.as_object_mut()) {
            object.insert("line".into(), location.line.into());
            object.insert("column".into(), location.column.into());
        }
        if let (Self::Schema { problems, .. }, Some(object)) = (self, json.as_object_mut()) {
            object.insert(
                "problems".into(),
                serde_json::to_value(problems).unwrap_or_default(),
            );
        }
        json
    }
}

/// A request that cannot be built: a bad tenant, action or resource name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// Tenant ids follow the extension-name rules.
    #[error(
        "`{0}` is not a valid tenant id: use 1-63 lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen"
    )]
    Tenant(String),
    /// Not one of the actions of the schema.
    #[error(
        "`{0}` is not an action: expected one of http:request, kv:read, kv:write, secret:use, log:write, config:read"
    )]
    Action(String),
    /// A resource that cannot be read.
    #[error("`{text}` is not a resource: {reason}")]
    Resource { text: String, reason: String },
    /// An extension reference that cannot be read.
    #[error("`{text}` is not an extension: {reason} (expected TENANT/NAME or TENANT/NAME@VERSION)")]
    Extension { text: String, reason: String },
}

/// The policy store failed or refused a change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Reading or writing the store failed.
    #[error("policy store {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A stored version does not parse or its digest does not match its content.
    #[error("policy store {}: corrupt record: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// Another change was written first; re-read the head and try again.
    #[error(
        "policy store: version {version} of {scope} already exists (a concurrent change); retry"
    )]
    Conflict { scope: String, version: u64 },
    /// There is no such version.
    #[error("policy store: {scope} has no version {version}")]
    NoSuchVersion { scope: String, version: u64 },
    /// The version to write does not pass validation.
    #[error(transparent)]
    Invalid(#[from] PolicyError),
}

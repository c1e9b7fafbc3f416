//! Names of extension API packages (`palisade:extension@1.0.0`) as manifests request them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A versioned WIT package name: `namespace:name@version`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ApiPackage {
    pub namespace: String,
    pub name: String,
    pub version: semver::Version,
}

/// Why an API package name could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not an API package: {reason} (expected e.g. \"palisade:extension@1.0.0\")")]
pub struct ApiPackageError {
    pub text: String,
    pub reason: String,
}

impl ApiPackage {
    /// The package every version-1 extension is written against.
    pub fn extension_v1() -> Self {
        Self {
            namespace: "palisade".into(),
            name: "extension".into(),
            version: semver::Version::new(1, 0, 0),
        }
    }

    pub fn parse(text: &str) -> Result<Self, ApiPackageError> {
        let error = |reason: &str| ApiPackageError {
            text: text.to_owned(),
            reason: reason.to_owned(),
        };
        let (package, version) = text
            .split_once('@')
            .ok_or_else(|| error("the version after `@` is missing"))?;
        let (namespace, name) = package
            .split_once(':')
            .ok_or_else(|| error("the namespace before `:` is missing"))?;
        let is_label = |s: &str| {
            !s.is_empty()
                && s.starts_with(|c: char| c.is_ascii_lowercase())
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        if !is_label(namespace) || !is_label(name) {
            return Err(error("namespace and name must be lowercase kebab-case"));
        }
        let version =
            semver::Version::parse(version).map_err(|e| error(&format!("bad version: {e}")))?;
        Ok(Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            version,
        })
    }
}

impl fmt::Display for ApiPackage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}@{}", self.namespace, self.name, self.version)
    }
}

impl TryFrom<String> for ApiPackage {
    type Error = ApiPackageError;
    fn try_from(text: String) -> Result<Self, ApiPackageError> {
        Self::parse(&text)
    }
}

impl From<ApiPackage> for String {
    fn from(package: ApiPackage) -> String {
        package.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_round_trip() {
        let package = ApiPackage::parse("palisade:extension@1.0.0");
        assert_eq!(package, Ok(ApiPackage::extension_v1()));
        assert_eq!(
            ApiPackage::extension_v1().to_string(),
            "palisade:extension@1.0.0"
        );
    }

    #[test]
    fn rejects_malformed_names() {
        for text in [
            "palisade:extension",
            "extension@1.0.0",
            "Pal:ext@1.0.0",
            "a:b@one",
            ":b@1.0.0",
        ] {
            assert!(
                ApiPackage::parse(text).is_err(),
                "{text} should be rejected"
            );
        }
    }
}

//! The extension API catalog: which API packages this host serves, and for each the exact set
//! of interfaces a component may import. Anything else is refused before instantiation, with
//! an error that names the import.

use palisade_model::{ApiPackage, ErrorKind, InvocationError};
use wasmtime::Engine;
use wasmtime::component::Component;

/// One interface a component may import: `namespace:package/interface`, at any version that is
/// semver-compatible with `version` and not newer than it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedInterface {
    pub package: &'static str,
    pub interface: &'static str,
    pub version: semver::Version,
}

/// An API package served by this host and what it lets a component import.
#[derive(Debug, Clone)]
pub struct CatalogEntry {
    pub api: ApiPackage,
    pub imports: Vec<AllowedInterface>,
}

/// Every API version this host serves.
#[derive(Debug, Clone)]
pub struct Catalog {
    entries: Vec<CatalogEntry>,
}

/// WASI 0.2 interfaces that language standard libraries import. With no preopened
/// directories, no environment, no arguments and no sockets in the context, they give a
/// guest clocks, randomness and captured stdout/stderr, and nothing else.
const WASI_STD: [(&str, &str); 20] = [
    ("wasi:cli", "environment"),
    ("wasi:cli", "exit"),
    ("wasi:cli", "stdin"),
    ("wasi:cli", "stdout"),
    ("wasi:cli", "stderr"),
    ("wasi:cli", "terminal-input"),
    ("wasi:cli", "terminal-output"),
    ("wasi:cli", "terminal-stdin"),
    ("wasi:cli", "terminal-stdout"),
    ("wasi:cli", "terminal-stderr"),
    ("wasi:io", "error"),
    ("wasi:io", "poll"),
    ("wasi:io", "streams"),
    ("wasi:clocks", "monotonic-clock"),
    ("wasi:clocks", "wall-clock"),
    ("wasi:random", "random"),
    ("wasi:random", "insecure"),
    ("wasi:random", "insecure-seed"),
    ("wasi:filesystem", "types"),
    ("wasi:filesystem", "preopens"),
];

/// Outbound HTTP, from API 1.2: sent by the egress gateway, never by the guest's process.
const WASI_HTTP: [(&str, &str); 2] = [("wasi:http", "types"), ("wasi:http", "outgoing-handler")];

/// The WASI 0.2 release the host's bindings implement.
const WASI_VERSION: semver::Version = semver::Version::new(0, 2, 12);

impl Catalog {
    /// The catalog of this build: `palisade:extension@1.0.0` (logs, configuration),
    /// `palisade:extension@1.1.0` (adds key-value state) and `palisade:extension@1.2.0` (adds
    /// outbound HTTP: the standard `wasi:http/outgoing-handler` and `wasi:http/types`). Older
    /// entries stay served.
    pub fn builtin() -> Self {
        let entry = |version: semver::Version, interfaces: &[&'static str], http: bool| {
            let mut imports: Vec<AllowedInterface> = interfaces
                .iter()
                .map(|interface| AllowedInterface {
                    package: "palisade:extension",
                    interface,
                    version: version.clone(),
                })
                .collect();
            imports.extend(
                WASI_STD
                    .iter()
                    .map(|(package, interface)| AllowedInterface {
                        package,
                        interface,
                        version: WASI_VERSION,
                    }),
            );
            if http {
                imports.extend(
                    WASI_HTTP
                        .iter()
                        .map(|(package, interface)| AllowedInterface {
                            package,
                            interface,
                            version: WASI_VERSION,
                        }),
                );
            }
            CatalogEntry {
                api: ApiPackage {
                    version,
                    ..ApiPackage::extension_v1()
                },
                imports,
            }
        };
        Self {
            entries: vec![
                entry(
                    semver::Version::new(1, 0, 0),
                    &["types", "log", "config"],
                    false,
                ),
                entry(
                    semver::Version::new(1, 1, 0),
                    &["types", "log", "config", "kv"],
                    false,
                ),
                entry(
                    semver::Version::new(1, 2, 0),
                    &["types", "log", "config", "kv"],
                    true,
                ),
            ],
        }
    }

    pub fn entries(&self) -> &[CatalogEntry] {
        &self.entries
    }

    /// The entry serving `api`: the same package, semver-compatible, not newer than served.
    pub fn entry(&self, api: &ApiPackage) -> Result<&CatalogEntry, InvocationError> {
        self.entries
            .iter()
            .find(|entry| {
                entry.api.namespace == api.namespace
                    && entry.api.name == api.name
                    && compatible(&api.version, &entry.api.version)
            })
            .ok_or_else(|| {
                let served: Vec<String> = self.entries.iter().map(|e| e.api.to_string()).collect();
                InvocationError::new(
                    ErrorKind::InvalidManifest,
                    format!(
                        "API package {api} is not served by this host (served: {})",
                        served.join(", ")
                    ),
                )
            })
    }

    /// Refuses a component that imports anything outside `entry`, naming the first such import.
    pub fn check_imports(
        &self,
        entry: &CatalogEntry,
        engine: &Engine,
        component: &Component,
    ) -> Result<(), InvocationError> {
        let component_type = component.component_type();
        let mut refused: Vec<String> = component_type
            .imports(engine)
            .map(|(name, _)| name)
            .filter(|name| !entry.allows(name))
            .map(str::to_owned)
            .collect();
        if refused.is_empty() {
            return Ok(());
        }
        refused.sort();
        Err(InvocationError::new(
            ErrorKind::ImportNotAllowed,
            format!(
                "the component imports `{}`, which is not in the catalog of {}{}",
                refused[0],
                entry.api,
                if refused.len() > 1 {
                    format!(" (also refused: {})", refused[1..].join(", "))
                } else {
                    String::new()
                }
            ),
        ))
    }
}

impl CatalogEntry {
    /// Whether an import name such as `wasi:io/streams@0.2.6` is allowed.
    pub fn allows(&self, import: &str) -> bool {
        let Some((path, version)) = import.split_once('@') else {
            return false;
        };
        let Some((package, interface)) = path.split_once('/') else {
            return false;
        };
        let Ok(version) = semver::Version::parse(version) else {
            return false;
        };
        self.imports.iter().any(|allowed| {
            allowed.package == package
                && allowed.interface == interface
                && compatible(&version, &allowed.version)
        })
    }
}

/// Whether a guest built against `requested` can use what the host serves as `served`:
/// the same compatibility class (major, or minor for 0.x) and not newer.
fn compatible(requested: &semver::Version, served: &semver::Version) -> bool {
    let same_class = if served.major == 0 {
        requested.major == 0 && requested.minor == served.minor
    } else {
        requested.major == served.major
    };
    same_class && requested <= served
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_catalog_interfaces_at_compatible_versions() {
        let catalog = Catalog::builtin();
        let entry = &catalog.entries()[0];
        assert!(entry.allows("palisade:extension/log@1.0.0"));
        assert!(entry.allows("wasi:io/streams@0.2.6"));
        assert!(entry.allows("wasi:cli/stdout@0.2.0"));
    }

    #[test]
    fn refuses_everything_else() {
        let catalog = Catalog::builtin();
        let entry = &catalog.entries()[0];
        for name in [
            "wasi:sockets/tcp@0.2.6",
            "wasi:http/outgoing-handler@0.2.6",
            "palisade:extension/log@2.0.0",
            "palisade:extension/log@1.1.0",
            "wasi:io/streams@0.3.0",
            "evil:backdoor/shell@0.1.0",
            "palisade:extension/log",
            "log",
            "wasi:io/streams@garbage",
        ] {
            assert!(!entry.allows(name), "{name} must be refused");
        }
    }

    #[test]
    fn each_version_allows_its_own_interfaces_only() {
        let catalog = Catalog::builtin();
        let v1_1 = ApiPackage::parse("palisade:extension@1.1.0").unwrap();
        let entry = catalog.entry(&v1_1).unwrap();
        assert!(entry.allows("palisade:extension/kv@1.1.0"));
        assert!(entry.allows("palisade:extension/log@1.0.0"));
        assert!(!entry.allows("wasi:http/outgoing-handler@0.2.6"));
        let v1_2 = ApiPackage::parse("palisade:extension@1.2.0").unwrap();
        let entry = catalog.entry(&v1_2).unwrap();
        assert!(entry.allows("wasi:http/outgoing-handler@0.2.6"));
        assert!(entry.allows("wasi:http/types@0.2.0"));
        assert!(!entry.allows("wasi:sockets/tcp@0.2.6"));
        let entry = catalog.entry(&ApiPackage::extension_v1()).unwrap();
        assert_eq!(entry.api.version, semver::Version::new(1, 0, 0));
        assert!(!entry.allows("palisade:extension/kv@1.1.0"));
    }

    #[test]
    fn unknown_api_versions_are_invalid_manifests() {
        let catalog = Catalog::builtin();
        let api = ApiPackage::parse("palisade:extension@2.0.0").unwrap();
        assert_eq!(
            catalog.entry(&api).unwrap_err().kind,
            ErrorKind::InvalidManifest
        );
        assert!(catalog.entry(&ApiPackage::extension_v1()).is_ok());
    }
}

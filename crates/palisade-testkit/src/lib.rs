//! Test support: builds every guest component (examples and hostile fixtures) from source
//! once per test process, and finds their manifests.
//!
//! Tests that claim a limit works run a real hostile guest compiled by the real toolchain, so
//! the fixtures are rebuilt from `guests/` rather than checked in as binaries.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use palisade_model::Manifest;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The guest workspace (`guests/`).
pub fn guests_dir() -> PathBuf {
    repo_root().join("guests")
}

/// Builds all guests (release, wasm32-wasip2) once per process; later calls return at once.
/// Cargo's own lock serialises concurrent test binaries.
///
/// # Panics
/// When the build fails: every test that needs a guest would fail anyway, and the panic
/// carries cargo's output.
pub fn build_guests() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let guests = guests_dir();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = Command::new(cargo)
            .current_dir(&guests)
            .args([
                "build",
                "--release",
                "--quiet",
                "--target",
                "wasm32-wasip2",
                "--target-dir",
            ])
            .arg(guests.join("target"))
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .output();
        match output {
            Ok(output) if output.status.success() => guests,
            Ok(output) => panic!(
                "building the guests failed ({}):\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(error) => panic!("could not run cargo to build the guests: {error}"),
        }
    })
}

/// A guest's directory under `guests/` (`"fixtures/infinite-loop"`, `"examples/order-totals"`).
pub fn guest_dir(relative: &str) -> PathBuf {
    build_guests().join(relative)
}

/// A guest's manifest and component bytes, built if needed.
///
/// # Panics
/// When the fixture is missing or its manifest does not parse: a broken test fixture.
pub fn guest(relative: &str) -> (Manifest, Vec<u8>) {
    let dir = guest_dir(relative);
    let text = std::fs::read_to_string(dir.join("palisade.toml"))
        .unwrap_or_else(|e| panic!("reading {relative}/palisade.toml: {e}"));
    let manifest =
        Manifest::parse(&text).unwrap_or_else(|e| panic!("{relative}/palisade.toml: {e}"));
    let wasm = std::fs::read(dir.join(&manifest.component.path))
        .unwrap_or_else(|e| panic!("reading the component of {relative}: {e}"));
    (manifest, wasm)
}

/// The shipped baseline policy opened for loopback, so tests and benchmarks can run an
/// upstream on 127.0.0.1: the CIDR allowed in `[egress] allow_private`, the Cedar
/// private-address forbid given an exception for it, plain HTTP permitted to it.
///
/// # Panics
/// When the shipped baseline no longer has the rules this edits: the edit would silently do
/// nothing, and every caller relies on it.
pub fn loopback_baseline() -> String {
    let shipped =
        std::fs::read_to_string(repo_root().join("crates/palisade-policy/baseline/baseline.toml"))
            .unwrap_or_default();
    let forbid = "@id(\"baseline-forbid-private-addresses\")\nforbid (principal, action == Action::\"http:request\", resource is Host)\nwhen {";
    let permit = "@id(\"baseline-permit-public-https\")";
    assert!(
        shipped.contains(forbid) && shipped.contains(permit) && shipped.contains("[cedar]"),
        "the shipped baseline changed shape; update loopback_baseline"
    );
    shipped
        .replace(
            forbid,
            "@id(\"baseline-forbid-private-addresses\")\nforbid (principal, action == Action::\"http:request\", resource is Host)\nunless { resource has ip && resource.ip.isInRange(ip(\"127.0.0.1/32\")) }\nwhen {",
        )
        .replacen(
            "[cedar]",
            "[egress]\nallow_private = [\"127.0.0.1/32\"]\n\n[cedar]",
            1,
        )
        .replacen(
            permit,
            "@id(\"baseline-permit-loopback-http\")\npermit (principal, action == Action::\"http:request\", resource is Host)\nwhen { resource.scheme == \"http\" && resource has ip && resource.ip.isInRange(ip(\"127.0.0.1/32\")) };\n\n@id(\"baseline-permit-public-https\")",
            1,
        )
}

//! Reads an extension from disk: its manifest (a file, or `palisade.toml` in a directory) and
//! the component the manifest points at, with size caps and typed errors.

use std::io::Read;
use std::path::{Path, PathBuf};

use palisade_model::manifest::MAX_MANIFEST_BYTES;
use palisade_model::{ErrorKind, InvocationError, Manifest};

/// Components larger than this are refused before reading them whole.
pub const MAX_COMPONENT_BYTES: u64 = 64 << 20;

/// An extension as found on disk.
#[derive(Debug)]
pub struct LocalExtension {
    /// The manifest's text, as workers re-read it.
    pub text: String,
    pub manifest: Manifest,
    pub wasm: Vec<u8>,
}

pub fn manifest_path(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("palisade.toml")
    } else {
        path.to_owned()
    }
}

impl LocalExtension {
    /// The SHA-256 of the component bytes.
    pub fn digest(&self) -> palisade_model::manifest::Sha256Digest {
        palisade_worker::ExtensionSource::new(String::new(), self.wasm.clone()).digest
    }
}

/// Loads the manifest and the component bytes; does not compile anything.
pub fn load(path: &Path) -> Result<LocalExtension, InvocationError> {
    let manifest_path = manifest_path(path);
    let text = read_capped(&manifest_path, MAX_MANIFEST_BYTES as u64).map_err(|e| {
        InvocationError::new(
            ErrorKind::InvalidManifest,
            format!("cannot read {}: {e}", manifest_path.display()),
        )
    })?;
    let text = String::from_utf8(text).map_err(|_| {
        InvocationError::new(
            ErrorKind::InvalidManifest,
            format!("{} is not UTF-8", manifest_path.display()),
        )
    })?;
    let manifest = Manifest::parse(&text).map_err(|e| {
        InvocationError::new(
            ErrorKind::InvalidManifest,
            format!("{}: {e}", manifest_path.display()),
        )
    })?;
    let base = manifest_path.parent().unwrap_or(Path::new("."));
    let component_path = base.join(&manifest.component.path);
    let wasm = read_capped(&component_path, MAX_COMPONENT_BYTES).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            " (build the extension first, e.g. `cargo build --release` in its crate)"
        } else {
            ""
        };
        InvocationError::new(
            ErrorKind::InvalidComponent,
            format!(
                "cannot read component {}: {e}{hint}",
                component_path.display()
            ),
        )
    })?;
    Ok(LocalExtension {
        text,
        manifest,
        wasm,
    })
}

/// Reads at most `max` bytes; a longer file is an error, not a truncation.
pub fn read_capped(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    read_stream_capped(file, max)
}

pub fn read_stream_capped(reader: impl Read, max: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("larger than the {max}-byte limit"),
        ));
    }
    Ok(bytes)
}

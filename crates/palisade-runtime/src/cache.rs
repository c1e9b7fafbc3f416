//! Compiled-component cache: in memory (LRU within a byte budget) and on disk (serialized
//! artifacts keyed by the component's SHA-256 and the engine's compatibility hash).
//!
//! Compiling a component costs tens to hundreds of milliseconds; loading a cached artifact
//! costs well under one. Eviction is deterministic: least recently used first, where "use" is
//! a monotonically increasing counter, so two entries never tie.

use std::collections::HashMap;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use palisade_model::manifest::Sha256Digest;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

const DISK_MAGIC: &[u8; 16] = b"PALISADE-CWASM1\n";

/// Where a component came from on this load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheSource {
    Memory,
    Disk,
    Compiled,
}

/// Why a component could not be compiled.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CompileError(pub String);

#[derive(Debug)]
struct Entry {
    component: Component,
    bytes: u64,
    last_used: u64,
}

#[derive(Debug, Default)]
struct Lru {
    entries: HashMap<Sha256Digest, Entry>,
    total_bytes: u64,
    clock: u64,
}

/// Cache of compiled components for one engine.
#[derive(Debug)]
pub struct ComponentCache {
    memory: Mutex<Lru>,
    memory_budget_bytes: u64,
    disk_dir: Option<PathBuf>,
    engine_key: String,
}

impl ComponentCache {
    pub fn new(engine: &Engine, memory_budget_bytes: u64, disk_dir: Option<PathBuf>) -> Self {
        Self {
            memory: Mutex::new(Lru::default()),
            memory_budget_bytes,
            disk_dir,
            engine_key: engine_key(engine),
        }
    }

    /// The compiled component for `digest`, from memory, disk, or by compiling `wasm`.
    /// The caller has already checked that `wasm` hashes to `digest`.
    pub fn get_or_compile(
        &self,
        engine: &Engine,
        digest: Sha256Digest,
        wasm: &[u8],
    ) -> Result<(Component, CacheSource), CompileError> {
        if let Some(component) = self.lookup(&digest) {
            return Ok((component, CacheSource::Memory));
        }
        let from_disk = self
            .disk_path(&digest)
            .and_then(|path| load_artifact(engine, &path));
        let (component, source) = match from_disk {
            Some(component) => (component, CacheSource::Disk),
            None => {
                let component =
                    Component::new(engine, wasm).map_err(|e| CompileError(format!("{e:#}")))?;
                if let Some(path) = self.disk_path(&digest)
                    && let Err(error) = store_artifact(&component, &path)
                {
                    // The disk cache is an optimisation: failing to fill it must not fail the load.
                    tracing::warn!(path = %path.display(), %error, "could not write compiled artifact");
                }
                (component, CacheSource::Compiled)
            }
        };
        self.insert(digest, component.clone(), wasm.len() as u64);
        Ok((component, source))
    }

    fn lookup(&self, digest: &Sha256Digest) -> Option<Component> {
        let mut lru = self
            .memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        lru.clock += 1;
        let now = lru.clock;
        lru.entries.get_mut(digest).map(|entry| {
            entry.last_used = now;
            entry.component.clone()
        })
    }

    fn insert(&self, digest: Sha256Digest, component: Component, wasm_bytes: u64) {
        let image = component.image_range();
        let bytes = wasm_bytes + (image.end as u64).saturating_sub(image.start as u64);
        let mut lru = self
            .memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        lru.clock += 1;
        let last_used = lru.clock;
        if let Some(old) = lru.entries.insert(
            digest,
            Entry {
                component,
                bytes,
                last_used,
            },
        ) {
            lru.total_bytes -= old.bytes;
        }
        lru.total_bytes += bytes;
        // A budget of zero disables the memory cache: the entry just inserted goes too.
        while lru.total_bytes > self.memory_budget_bytes {
            let oldest = lru
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.last_used)
                .map(|(key, _)| *key);
            let Some(oldest) = oldest else { break };
            if let Some(evicted) = lru.entries.remove(&oldest) {
                lru.total_bytes -= evicted.bytes;
            }
        }
    }

    /// Digests held in memory, least recently used first.
    pub fn resident(&self) -> Vec<Sha256Digest> {
        let lru = self
            .memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut entries: Vec<_> = lru.entries.iter().map(|(k, e)| (e.last_used, *k)).collect();
        entries.sort();
        entries.into_iter().map(|(_, k)| k).collect()
    }

    /// Bytes held in memory (source plus compiled image).
    pub fn resident_bytes(&self) -> u64 {
        self.memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .total_bytes
    }

    /// The artifact path for `digest`, when a disk cache is configured.
    pub fn disk_path(&self, digest: &Sha256Digest) -> Option<PathBuf> {
        self.disk_dir
            .as_ref()
            .map(|dir| dir.join(format!("{}-{}.cwasm", digest.to_hex(), self.engine_key)))
    }
}

/// A short, stable key for the engine's compilation settings and wasmtime version.
fn engine_key(engine: &Engine) -> String {
    struct Sha(Sha256);
    impl Hasher for Sha {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut hasher = Sha(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..8])
}

/// Writes `magic || sha256(artifact) || artifact` atomically: temp file, fsync, rename.
fn store_artifact(component: &Component, path: &Path) -> std::io::Result<()> {
    let artifact = component
        .serialize()
        .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("artifact path has no parent"))?;
    fs::create_dir_all(dir)?;
    let temp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let mut file = fs::File::create(&temp)?;
    file.write_all(DISK_MAGIC)?;
    file.write_all(&Sha256::digest(&artifact))?;
    file.write_all(&artifact)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temp, path)?;
    fs::File::open(dir)?.sync_all()
}

/// Loads an artifact written by [`store_artifact`]; `None` (so the caller recompiles) when it
/// is missing, truncated, corrupted or built by an incompatible engine.
fn load_artifact(engine: &Engine, path: &Path) -> Option<Component> {
    let bytes = fs::read(path).ok()?;
    let rest = bytes.strip_prefix(DISK_MAGIC.as_slice())?;
    let (checksum, artifact) = rest.split_at_checked(32)?;
    if Sha256::digest(artifact).as_slice() != checksum {
        tracing::warn!(path = %path.display(), "compiled artifact failed its checksum; recompiling");
        return None;
    }
    match deserialize_checked(engine, artifact) {
        Ok(component) => Some(component),
        Err(error) => {
            tracing::warn!(path = %path.display(), error = %format!("{error:#}"), "compiled artifact rejected; recompiling");
            None
        }
    }
}

#[allow(
    unsafe_code,
    reason = "wasmtime's artifact deserialization is unsafe by signature; see SAFETY"
)]
fn deserialize_checked(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `Component::deserialize` requires bytes produced by `Component::serialize` of a
    // compatible wasmtime; arbitrary bytes could hold arbitrary machine code. These bytes come
    // only from `store_artifact`, written by this process family into the operator's cache
    // directory (trusted like the binary itself), and `load_artifact` has just verified their
    // SHA-256 against the checksum written with them, so truncation and corruption are caught
    // here. Engine and version mismatches are rejected by wasmtime's own header check.
    unsafe { Component::deserialize(engine, artifact) }
}

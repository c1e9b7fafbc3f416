//! Content-addressed artifacts on local disk: `DIR/sha256/ab/abcdef...`. Written atomically
//! (temporary file, fsync, rename, fsync of the directory), so a crash leaves either the whole
//! file or none; verified against their digest on every read, so a corrupted or swapped file
//! is an error, never executed.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::StoreError;

/// Largest artifact read back (a component); larger files are refused before reading.
pub const MAX_ARTIFACT_BYTES: u64 = 64 << 20;

const TEMP_PREFIX: &str = ".tmp-";

/// The artifact directory.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    root: PathBuf,
}

/// A digest as 64 lowercase hex characters, or `None`.
fn checked_hex(digest: &str) -> Option<&str> {
    (digest.len() == 64
        && digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
    .then_some(digest)
}

impl ArtifactStore {
    /// Opens (creating) `root`, and removes temporary files a crash left behind.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        let data_dir = |error| StoreError::DataDir {
            path: root.clone(),
            error,
        };
        std::fs::create_dir_all(root.join("sha256")).map_err(data_dir)?;
        let store = Self { root };
        store.remove_leftovers();
        Ok(store)
    }

    fn path_of(&self, digest: &str) -> Option<PathBuf> {
        let digest = checked_hex(digest)?;
        Some(self.root.join("sha256").join(&digest[..2]).join(digest))
    }

    /// Stores `bytes` under their SHA-256 and returns it (hex). Idempotent.
    pub fn put(&self, bytes: &[u8]) -> Result<String, StoreError> {
        let digest = hex::encode(Sha256::digest(bytes));
        let path = self
            .path_of(&digest)
            .ok_or_else(|| StoreError::Corrupt(format!("computed digest {digest} is not hex")))?;
        let failed = |error| StoreError::Artifact {
            digest: digest.clone(),
            error,
        };
        if self.get(&digest).is_ok() {
            return Ok(digest);
        }
        let dir = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(failed)?;
        let mut temp = tempfile_in(dir).map_err(failed)?;
        let written = (|| {
            temp.file.write_all(bytes)?;
            temp.file.sync_all()?;
            std::fs::rename(&temp.path, &path)?;
            sync_dir(dir)
        })();
        if let Err(error) = written {
            let _ = std::fs::remove_file(&temp.path);
            return Err(failed(error));
        }
        Ok(digest)
    }

    /// Reads the artifact `digest` and checks that its bytes still hash to it.
    pub fn get(&self, digest: &str) -> Result<Vec<u8>, StoreError> {
        let path = self
            .path_of(digest)
            .ok_or_else(|| StoreError::Invalid(format!("`{digest}` is not a SHA-256 digest")))?;
        let failed = |error| StoreError::Artifact {
            digest: digest.to_owned(),
            error,
        };
        let size = std::fs::metadata(&path).map_err(failed)?.len();
        if size > MAX_ARTIFACT_BYTES {
            return Err(StoreError::Corrupt(format!(
                "artifact {digest} is {size} bytes, over the {MAX_ARTIFACT_BYTES}-byte maximum"
            )));
        }
        let bytes = std::fs::read(&path).map_err(failed)?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if actual != digest {
            return Err(StoreError::Corrupt(format!(
                "artifact {digest} now hashes to {actual}: it was modified on disk"
            )));
        }
        Ok(bytes)
    }

    /// Every stored digest (for consistency checks).
    pub fn list(&self) -> Result<Vec<String>, StoreError> {
        let mut digests = Vec::new();
        let shards =
            std::fs::read_dir(self.root.join("sha256")).map_err(|error| StoreError::DataDir {
                path: self.root.clone(),
                error,
            })?;
        for shard in shards.flatten() {
            for file in std::fs::read_dir(shard.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if let Some(name) = file.file_name().to_str()
                    && checked_hex(name).is_some()
                {
                    digests.push(name.to_owned());
                }
            }
        }
        digests.sort();
        Ok(digests)
    }

    fn remove_leftovers(&self) {
        let Ok(shards) = std::fs::read_dir(self.root.join("sha256")) else {
            return;
        };
        for shard in shards.flatten() {
            for file in std::fs::read_dir(shard.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if file
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(TEMP_PREFIX))
                {
                    let _ = std::fs::remove_file(file.path());
                }
            }
        }
    }
}

struct TempFile {
    file: std::fs::File,
    path: PathBuf,
}

fn tempfile_in(dir: &Path) -> std::io::Result<TempFile> {
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(std::io::Error::other)?;
    let path = dir.join(format!("{TEMP_PREFIX}{}", hex::encode(suffix)));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    Ok(TempFile { file, path })
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_are_content_addressed_and_verified_on_read() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = ArtifactStore::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let digest = store.put(b"component").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.put(b"component").ok(), Some(digest.clone()));
        assert_eq!(store.get(&digest).ok(), Some(b"component".to_vec()));
        assert_eq!(store.list().ok(), Some(vec![digest.clone()]));

        let path = store.path_of(&digest).unwrap_or_default();
        std::fs::write(&path, b"swapped").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(store.get(&digest), Err(StoreError::Corrupt(_))));
        assert!(matches!(
            store.get("../../etc/passwd"),
            Err(StoreError::Invalid(_))
        ));
        // A corrupt file is replaced by a good write of the same bytes.
        assert_eq!(store.put(b"component").ok(), Some(digest.clone()));
        assert!(store.get(&digest).is_ok());
    }

    #[test]
    fn leftover_temporary_files_are_removed_on_open() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let shard = dir.path().join("sha256").join("ab");
        std::fs::create_dir_all(&shard).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(shard.join(".tmp-0011"), b"half").unwrap_or_else(|e| panic!("{e}"));
        let _store = ArtifactStore::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert!(!shard.join(".tmp-0011").exists());
    }
}

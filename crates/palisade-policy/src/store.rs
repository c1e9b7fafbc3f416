//! The versioned policy store: append-only history per layer with author, time, reason and a
//! human-readable diff per version, restores as new versions, and an audit event per change.
//! `DirStore` keeps it in a local directory; the control plane will implement `PolicyStore`
//! on its database.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::diff::LayerDiff;
use crate::document::{PolicyDocument, Scope};
use crate::engine::{CompiledLayer, PolicyEngine};
use crate::error::StoreError;

/// What a version did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Apply,
    Revert,
}

/// One stored version of one layer. Never rewritten once stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    /// `baseline` or `tenant:NAME`.
    pub scope: String,
    /// 1, 2, 3, ... per scope.
    pub version: u64,
    pub author: String,
    /// Seconds since the Unix epoch.
    pub time: i64,
    pub reason: String,
    pub change: ChangeKind,
    /// For a revert, the version restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored: Option<u64>,
    /// SHA-256 of `document`.
    pub sha256: String,
    /// The change against the previous version, as a person reads it.
    pub diff: String,
    /// The self-contained policy document (TOML, Cedar inlined).
    pub document: String,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub time: i64,
    pub scope: String,
    pub version: u64,
    pub author: String,
    pub reason: String,
    pub change: ChangeKind,
    pub sha256: String,
}

impl From<&VersionRecord> for AuditEvent {
    fn from(record: &VersionRecord) -> Self {
        Self {
            time: record.time,
            scope: record.scope.clone(),
            version: record.version,
            author: record.author.clone(),
            reason: record.reason.clone(),
            change: record.change,
            sha256: record.sha256.clone(),
        }
    }
}

/// Where versions live. Implementations must make `append` atomic and refuse to overwrite an
/// existing version (`StoreError::Conflict`), so history is append-only.
pub trait PolicyStore {
    /// Every version of `scope`, oldest first.
    fn history(&self, scope: &Scope) -> Result<Vec<VersionRecord>, StoreError>;
    /// Writes `record` as the next version of its scope and emits its audit event.
    fn append(&self, record: &VersionRecord) -> Result<(), StoreError>;
    /// The scopes that have at least one version.
    fn scopes(&self) -> Result<Vec<Scope>, StoreError>;
    /// Every audit event, oldest first.
    fn audit(&self) -> Result<Vec<AuditEvent>, StoreError>;

    /// The newest version of `scope`.
    fn head(&self, scope: &Scope) -> Result<Option<VersionRecord>, StoreError> {
        Ok(self.history(scope)?.pop())
    }
}

/// Who changes a policy, when and why.
#[derive(Debug, Clone)]
pub struct ChangeMeta {
    pub author: String,
    pub reason: String,
    pub time: i64,
}

/// The result of `apply` or `revert`.
#[derive(Debug, Clone)]
pub enum Applied {
    /// A new version was stored.
    Stored {
        record: Box<VersionRecord>,
        diff: Box<LayerDiff>,
    },
    /// The document equals the head: nothing stored.
    Unchanged { version: u64 },
}

fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Compiles a stored record back into a layer, checking its digest.
pub fn compile_record(record: &VersionRecord) -> Result<CompiledLayer, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        path: PathBuf::from(format!("{}/{}", record.scope, record.version)),
        reason,
    };
    if sha256(&record.document) != record.sha256 {
        return Err(corrupt("the document does not match its SHA-256".into()));
    }
    let layer = PolicyDocument::parse(&record.document, None)
        .and_then(|d| d.compile())
        .map_err(|e| corrupt(e.to_string()))?;
    if layer.scope().to_string() != record.scope {
        return Err(corrupt(format!("the document is for {}", layer.scope())));
    }
    Ok(layer)
}

/// Validates `document` and stores it as the next version of its scope, unless it equals the
/// head.
pub fn apply(
    store: &dyn PolicyStore,
    document: &PolicyDocument,
    meta: &ChangeMeta,
) -> Result<Applied, StoreError> {
    write_version(store, document, meta, ChangeKind::Apply, None)
}

/// Stores version `to` of `scope` again as a new version (history is never rewritten).
pub fn revert(
    store: &dyn PolicyStore,
    scope: &Scope,
    to: u64,
    meta: &ChangeMeta,
) -> Result<Applied, StoreError> {
    let history = store.history(scope)?;
    let record =
        history
            .iter()
            .find(|r| r.version == to)
            .ok_or_else(|| StoreError::NoSuchVersion {
                scope: scope.to_string(),
                version: to,
            })?;
    let layer = compile_record(record)?;
    write_version(store, layer.document(), meta, ChangeKind::Revert, Some(to))
}

fn write_version(
    store: &dyn PolicyStore,
    document: &PolicyDocument,
    meta: &ChangeMeta,
    change: ChangeKind,
    restored: Option<u64>,
) -> Result<Applied, StoreError> {
    let layer = document.compile()?;
    let text = document.to_toml();
    let head = store.head(&document.scope)?;
    let previous = head.as_ref().map(compile_record).transpose()?;
    if let Some(head) = &head
        && head.document == text
    {
        return Ok(Applied::Unchanged {
            version: head.version,
        });
    }
    let diff = LayerDiff::between(previous.as_ref(), &layer);
    let record = VersionRecord {
        scope: document.scope.to_string(),
        version: head.map_or(1, |h| h.version + 1),
        author: meta.author.clone(),
        time: meta.time,
        reason: meta.reason.clone(),
        change,
        restored,
        sha256: sha256(&text),
        diff: diff.to_string(),
        document: text,
    };
    store.append(&record)?;
    Ok(Applied::Stored {
        record: Box::new(record),
        diff: Box::new(diff),
    })
}

/// The layers in force at `at` (the newest version of each scope stored at or before it), or
/// now with `None`. Without a stored baseline, the shipped one.
pub fn engine_at(store: &dyn PolicyStore, at: Option<i64>) -> Result<PolicyEngine, StoreError> {
    let mut engine = PolicyEngine::shipped()?;
    for scope in store.scopes()? {
        let history = store.history(&scope)?;
        let record = history
            .iter()
            .rev()
            .find(|r| at.is_none_or(|at| r.time <= at));
        if let Some(record) = record {
            engine.install(compile_record(record)?);
        }
    }
    Ok(engine)
}

/// A store in a local directory: `DIR/<scope>/<version>.json` (one file per version, written
/// to a temporary file, fsynced, then linked into place so an existing version is never
/// replaced) and `DIR/audit.jsonl` (one event per line, appended and fsynced).
#[derive(Debug, Clone)]
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn scope_dir(&self, scope: &Scope) -> PathBuf {
        // `tenant:acme` becomes `tenant-acme`: no colons in file names.
        self.root.join(scope.to_string().replace(':', "-"))
    }

    fn io(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
        move |source| StoreError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    File::open(path)?.sync_all()
}

impl PolicyStore for DirStore {
    fn history(&self, scope: &Scope) -> Result<Vec<VersionRecord>, StoreError> {
        let dir = self.scope_dir(scope);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::io(&dir)(e)),
        };
        let mut records = Vec::new();
        for entry in entries {
            let path = entry.map_err(Self::io(&dir))?.path();
            let Some(version) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let bytes = std::fs::read(&path).map_err(Self::io(&path))?;
            let record: VersionRecord =
                serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            if record.version != version || record.scope != scope.to_string() {
                return Err(StoreError::Corrupt {
                    path,
                    reason: "the record's scope or version does not match its file name".into(),
                });
            }
            records.push(record);
        }
        records.sort_by_key(|r| r.version);
        Ok(records)
    }

    fn append(&self, record: &VersionRecord) -> Result<(), StoreError> {
        let scope = Scope::parse(&record.scope).ok_or_else(|| StoreError::Corrupt {
            path: self.root.clone(),
            reason: format!("`{}` is not a scope", record.scope),
        })?;
        let dir = self.scope_dir(&scope);
        std::fs::create_dir_all(&dir).map_err(Self::io(&dir))?;
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| StoreError::Corrupt {
            path: dir.clone(),
            reason: e.to_string(),
        })?;
        let final_path = dir.join(format!("{:06}.json", record.version));
        let temp_path = dir.join(format!(".{:06}.{}.tmp", record.version, std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp_path)?;
            file.write_all(&bytes)?;
            file.sync_all()
        };
        write().map_err(Self::io(&temp_path))?;
        // `hard_link` fails if the version exists: two writers cannot both store version N.
        let linked = std::fs::hard_link(&temp_path, &final_path);
        let _ = std::fs::remove_file(&temp_path);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StoreError::Conflict {
                    scope: record.scope.clone(),
                    version: record.version,
                });
            }
            Err(e) => return Err(Self::io(&final_path)(e)),
        }
        sync_dir(&dir).map_err(Self::io(&dir))?;
        let audit_path = self.root.join("audit.jsonl");
        let mut line =
            serde_json::to_string(&AuditEvent::from(record)).map_err(|e| StoreError::Corrupt {
                path: audit_path.clone(),
                reason: e.to_string(),
            })?;
        line.push('\n');
        let append = || -> std::io::Result<()> {
            let mut file = OpenOptions::new()
                .append(true)
                .create(true)
                .open(&audit_path)?;
            file.write_all(line.as_bytes())?;
            file.sync_all()
        };
        append().map_err(Self::io(&audit_path))?;
        sync_dir(&self.root).map_err(Self::io(&self.root))
    }

    fn scopes(&self) -> Result<Vec<Scope>, StoreError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::io(&self.root)(e)),
        };
        let mut scopes = Vec::new();
        for entry in entries {
            let entry = entry.map_err(Self::io(&self.root))?;
            if !entry.path().is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().replacen('-', ":", 1);
            if let Some(scope) = Scope::parse(&name) {
                scopes.push(scope);
            }
        }
        scopes.sort();
        Ok(scopes)
    }

    fn audit(&self) -> Result<Vec<AuditEvent>, StoreError> {
        let path = self.root.join("audit.jsonl");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::io(&path)(e)),
        };
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line).map_err(|e| StoreError::Corrupt {
                    path: path.clone(),
                    reason: e.to_string(),
                })
            })
            .collect()
    }
}

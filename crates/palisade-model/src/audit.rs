//! The tamper-evident audit log's entries and chain: each entry carries the hash of the one
//! before it, so any edit, deletion, insertion or reordering breaks the chain at the first
//! entry it touches. Shared by the store that writes the log and every tool that verifies an
//! export of it, so both compute the same hash.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audited change. `detail` is JSON text, hashed exactly as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// 1, 2, 3, ... without gaps.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// The API request that made the change (`-` for changes made outside a request).
    pub request_id: String,
    /// Who made the change: a principal id, or `system`.
    pub principal: String,
    /// What was done: `tenant.create`, `deployment.rollback`, `policy.apply`, ...
    pub action: String,
    /// The tenant the change belongs to, if any.
    pub tenant: Option<String>,
    /// What was changed: `tenant:acme`, `extension:acme/order-totals@1.0.0`, ...
    pub target: String,
    /// SHA-256 of the target's state before the change (absent when it did not exist).
    pub before: Option<String>,
    /// SHA-256 of the target's state after the change (absent when it was removed).
    pub after: Option<String>,
    /// Further facts about the change, as a JSON object's text.
    pub detail: String,
    /// `hash` of the previous entry, or [`GENESIS_HASH`].
    pub prev_hash: String,
    /// SHA-256 over every field above.
    pub hash: String,
}

impl AuditEntry {
    /// The hash this entry must carry: SHA-256 over the JSON array of every other field, in
    /// order. Arrays of strings and integers serialize the same way everywhere.
    pub fn compute_hash(&self) -> String {
        let fields = (
            self.seq,
            self.time_ms,
            &self.request_id,
            &self.principal,
            &self.action,
            &self.tenant,
            &self.target,
            &self.before,
            &self.after,
            &self.detail,
            &self.prev_hash,
        );
        let bytes = serde_json::to_vec(&fields).unwrap_or_default();
        hex::encode(Sha256::digest(&bytes))
    }

    /// Seals an entry: fills in `hash` from the other fields.
    pub fn seal(mut self) -> Self {
        self.hash = self.compute_hash();
        self
    }
}

/// SHA-256 of a value's bytes, as the `before`/`after` digest of audit entries.
pub fn digest_of(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Where and how the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainBreak {
    /// The sequence number of the first entry that is wrong (for a missing entry: the one
    /// expected there).
    pub seq: u64,
    pub problem: ChainProblem,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChainProblem {
    /// The entry's fields do not match its hash: it was edited.
    Edited,
    /// The entry does not link to the one before it: something was inserted, deleted or
    /// moved before it.
    Unlinked {
        expected_prev: String,
        found: String,
    },
    /// The sequence jumps: entries are missing, duplicated or out of order.
    OutOfSequence { found: u64 },
    /// The last entry is not the anchor the verifier was given: the log was truncated or
    /// rewritten after the anchor.
    AnchorMismatch { expected: String, found: String },
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.problem {
            ChainProblem::Edited => write!(
                f,
                "entry {} was edited: its contents do not match its hash",
                self.seq
            ),
            ChainProblem::Unlinked {
                expected_prev,
                found,
            } => write!(
                f,
                "entry {} does not follow the entry before it (prev_hash {found}, expected \
                 {expected_prev}): an entry was inserted, deleted or moved",
                self.seq
            ),
            ChainProblem::OutOfSequence { found } => write!(
                f,
                "expected entry {} but found entry {found}: entries are missing, duplicated or \
                 reordered",
                self.seq
            ),
            ChainProblem::AnchorMismatch { expected, found } => write!(
                f,
                "entry {} has hash {found}, not the anchored {expected}: the log was truncated \
                 or rewritten",
                self.seq
            ),
        }
    }
}

/// The end of a verified chain: how many entries and the last hash (an anchor to keep outside
/// the database, so truncation can be detected later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    pub entries: u64,
    pub last_hash: String,
}

/// A known point of the chain kept outside the store: entry `seq` had hash `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub seq: u64,
    pub hash: String,
}

impl Anchor {
    /// Reads `SEQ:HASH`, as `palisade audit verify` prints it.
    pub fn parse(text: &str) -> Option<Self> {
        let (seq, hash) = text.split_once(':')?;
        let valid = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
        Some(Self {
            seq: seq.parse().ok()?,
            hash: valid.then(|| hash.to_ascii_lowercase())?,
        })
    }
}

/// Verifies entries one by one, in the order given; stops at the first break.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    next_seq: u64,
    prev_hash: String,
    anchor: Option<Anchor>,
    anchor_seen: bool,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self::new(None)
    }
}

impl ChainVerifier {
    /// A verifier from the genesis, optionally holding the chain to an anchor.
    pub fn new(anchor: Option<Anchor>) -> Self {
        Self {
            next_seq: 1,
            prev_hash: GENESIS_HASH.to_owned(),
            anchor,
            anchor_seen: false,
        }
    }

    pub fn push(&mut self, entry: &AuditEntry) -> Result<(), ChainBreak> {
        if entry.seq != self.next_seq {
            return Err(ChainBreak {
                seq: self.next_seq,
                problem: ChainProblem::OutOfSequence { found: entry.seq },
            });
        }
        if entry.compute_hash() != entry.hash {
            return Err(ChainBreak {
                seq: entry.seq,
                problem: ChainProblem::Edited,
            });
        }
        if entry.prev_hash != self.prev_hash {
            return Err(ChainBreak {
                seq: entry.seq,
                problem: ChainProblem::Unlinked {
                    expected_prev: self.prev_hash.clone(),
                    found: entry.prev_hash.clone(),
                },
            });
        }
        if let Some(anchor) = &self.anchor
            && anchor.seq == entry.seq
        {
            if anchor.hash != entry.hash {
                return Err(ChainBreak {
                    seq: entry.seq,
                    problem: ChainProblem::AnchorMismatch {
                        expected: anchor.hash.clone(),
                        found: entry.hash.clone(),
                    },
                });
            }
            self.anchor_seen = true;
        }
        self.next_seq += 1;
        self.prev_hash.clone_from(&entry.hash);
        Ok(())
    }

    /// Ends verification: the chain's head, or a break if the anchor was never reached.
    pub fn finish(self) -> Result<ChainHead, ChainBreak> {
        if let Some(anchor) = &self.anchor
            && !self.anchor_seen
        {
            return Err(ChainBreak {
                seq: anchor.seq,
                problem: ChainProblem::AnchorMismatch {
                    expected: anchor.hash.clone(),
                    found: "(no such entry)".into(),
                },
            });
        }
        Ok(ChainHead {
            entries: self.next_seq - 1,
            last_hash: self.prev_hash,
        })
    }
}

/// Verifies a whole chain.
pub fn verify_chain<'a>(
    entries: impl IntoIterator<Item = &'a AuditEntry>,
    anchor: Option<Anchor>,
) -> Result<ChainHead, ChainBreak> {
    let mut verifier = ChainVerifier::new(anchor);
    for entry in entries {
        verifier.push(entry)?;
    }
    verifier.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<AuditEntry> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let entry = AuditEntry {
                    seq,
                    time_ms: 1_700_000_000_000 + seq as i64,
                    request_id: format!("req-{seq}"),
                    principal: "p-admin".into(),
                    action: "tenant.create".into(),
                    tenant: Some(format!("t{seq}")),
                    target: format!("tenant:t{seq}"),
                    before: None,
                    after: Some(digest_of(format!("t{seq}").as_bytes())),
                    detail: "{}".into(),
                    prev_hash: prev.clone(),
                    hash: String::new(),
                }
                .seal();
                prev.clone_from(&entry.hash);
                entry
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies_and_reports_its_head() {
        let entries = chain(5);
        let head = verify_chain(&entries, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(head.entries, 5);
        assert_eq!(head.last_hash, entries[4].hash);
        let anchor = Anchor::parse(&format!("3:{}", entries[2].hash));
        assert!(verify_chain(&entries, anchor).is_ok());
    }

    #[test]
    fn every_kind_of_tampering_names_the_first_bad_entry() {
        let mut edited = chain(5);
        edited[2].target = "tenant:evil".into();
        let error = verify_chain(&edited, None).err();
        assert_eq!(
            error.map(|e| (e.seq, e.problem)),
            Some((3, ChainProblem::Edited))
        );

        let mut resealed = chain(5);
        resealed[2].target = "tenant:evil".into();
        resealed[2] = resealed[2].clone().seal();
        let error = verify_chain(&resealed, None).err();
        assert!(matches!(
            error.map(|e| (e.seq, e.problem)),
            Some((4, ChainProblem::Unlinked { .. }))
        ));

        let mut deleted = chain(5);
        deleted.remove(1);
        let error = verify_chain(&deleted, None).err();
        assert_eq!(
            error.map(|e| (e.seq, e.problem)),
            Some((2, ChainProblem::OutOfSequence { found: 3 }))
        );

        let mut reordered = chain(5);
        reordered.swap(1, 2);
        assert_eq!(verify_chain(&reordered, None).err().map(|e| e.seq), Some(2));

        let mut inserted = chain(5);
        let mut forged = inserted[1].clone();
        forged.seq = 3;
        forged.prev_hash = inserted[1].hash.clone();
        inserted.insert(2, forged.seal());
        for (index, entry) in inserted.iter_mut().enumerate().skip(3) {
            entry.seq = index as u64 + 1;
        }
        let error = verify_chain(&inserted, None).err();
        assert_eq!(error.map(|e| e.seq), Some(4));
    }

    #[test]
    fn truncation_is_caught_by_an_anchor() {
        let mut entries = chain(5);
        let anchor = Anchor::parse(&format!("5:{}", entries[4].hash));
        entries.truncate(3);
        assert!(verify_chain(&entries, None).is_ok());
        let error = verify_chain(&entries, anchor).err();
        assert!(matches!(
            error.map(|e| (e.seq, e.problem)),
            Some((5, ChainProblem::AnchorMismatch { .. }))
        ));
        assert_eq!(Anchor::parse("x:y"), None);
        assert_eq!(Anchor::parse("3:abc"), None);
    }
}

//! Checking stored records against their hash chains: that nothing was
//! modified, deleted, inserted or reordered since a sink wrote them.
//!
//! Every file and database sink chains its records (see the crate docs):
//! each record names its `chain`, has the next `seq` in it, and a `hash`
//! over its canonical bytes and the previous record's hash. A [`Verifier`]
//! reads records in stored order, follows each chain and names every break
//! precisely ([`Break`]); [`verify_files`] does it over the file sink's
//! daily files and `Store::verify` over a database.
//!
//! What a chain alone proves, and what it does not: a change to a stored
//! record, a record deleted from the middle, one inserted or moved, are
//! each found and named. Deleting the newest records of a chain (its tail)
//! leaves a shorter chain that verifies, and whoever can write the store
//! can also rewrite a whole chain from the changed record on. Signed
//! checkpoints kept elsewhere close both gaps; they are not part of this
//! release yet.
//!
//! Records without a chain (written before chains, or by a sink that does
//! not chain) are counted, not judged.
//!
//! # Examples
//!
//! ```
//! use fabric_audit::verify::Verifier;
//! # let records: Vec<fabric_audit::AuditRecord> = Vec::new();
//! let mut verifier = Verifier::new();
//! for record in &records {
//!     verifier.check(record);
//! }
//! let verification = verifier.finish();
//! assert!(verification.is_intact());
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::chain;
pub use crate::chain::Break;
use crate::{AuditRecord, Error, Result};

/// Checks records, in stored order, against their chains.
#[derive(Debug, Default)]
pub struct Verifier {
    chains: BTreeMap<String, Followed>,
    unchained: u64,
    unreadable: Vec<Unreadable>,
    buf: Vec<u8>,
}

/// One chain as the verifier follows it.
#[derive(Debug)]
struct Followed {
    verifier: chain::Verifier,
    first_seq: Option<u64>,
    gaps: Vec<Gap>,
}

/// The action of the records a sink's worker adds to its chain when
/// records were lost (see [`Gap`]).
pub const GAP_ACTION: &str = "fabric_audit.gap";

/// Records lost at the time they were written, as the chain's gap record
/// reported them: not tampering, but not stored either.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Gap {
    /// The gap record's `seq`.
    pub seq: u64,
    /// Records dropped by the overflow policy (never given a `seq`).
    pub dropped: u64,
    /// Records that had a `seq` and were refused or given up.
    pub failed: u64,
    /// The `seq` range the failed records lie in.
    pub failed_seqs: Option<(u64, u64)>,
    /// The records found missing in that range (at most `failed`).
    pub missing: u64,
}

impl Gap {
    /// The gap `record` reports; the deletions it explains leave the
    /// chain's breaks. A gap record claiming less than is missing explains
    /// nothing (the deletions stay breaks).
    fn read(record: &AuditRecord, chain: &mut chain::Verifier) -> Option<Self> {
        let number = |key: &str| match record.detail_value(key)? {
            crate::DetailValue::I64(n) => u64::try_from(n).ok(),
            crate::DetailValue::U64(n) => Some(n),
            _ => None,
        };
        let seq = record.seq()?;
        let failed = number("failed").unwrap_or(0);
        let failed_seqs = number("failed_from").zip(number("failed_to"));
        let missing = match failed_seqs {
            Some((from, to)) => chain.explain_gap(from, to, failed)?,
            None => 0,
        };
        Some(Self {
            seq,
            dropped: number("dropped").unwrap_or(0),
            failed,
            failed_seqs,
            missing,
        })
    }
}

impl Verifier {
    /// A verifier that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the next stored record. Records of different chains may come
    /// interleaved; each chain's must come in stored order.
    pub fn check(&mut self, record: &AuditRecord) {
        self.check_stored(record, None);
    }

    /// Checks the next record read from a JSON line (without its newline):
    /// as [`check`](Self::check), and the line must be the bytes the sink
    /// wrote for it ([`Break::Reformatted`] otherwise).
    pub fn check_line(&mut self, record: &AuditRecord, line: &[u8]) {
        self.check_stored(record, Some(line));
    }

    fn check_stored(&mut self, record: &AuditRecord, line: Option<&[u8]>) {
        let Some(name) = record.chain() else {
            self.unchained += 1;
            return;
        };
        // Read from a line that is not the one the sink wrote for it?
        let reformatted = match (line, record.seq()) {
            (Some(line), Some(seq)) => {
                self.buf.clear();
                record.write_json(&mut self.buf);
                (self.buf != line).then_some(seq)
            }
            _ => None,
        };
        let followed = match self.chains.get_mut(name) {
            Some(followed) => followed,
            None => self.chains.entry(name.to_owned()).or_insert(Followed {
                verifier: chain::Verifier::new(name),
                first_seq: None,
                gaps: Vec::new(),
            }),
        };
        followed.first_seq = followed.first_seq.or(record.seq());
        followed.verifier.check_record(record, &mut self.buf);
        if let Some(seq) = reformatted {
            followed.verifier.note(Break::Reformatted { seq });
        }
        if record.action() == GAP_ACTION {
            if let Some(gap) = Gap::read(record, &mut followed.verifier) {
                followed.gaps.push(gap);
            }
        }
    }

    /// Notes a stored line or row that is not a record at all (it cannot
    /// be placed in a chain; the record it was is then missing from one).
    pub fn unreadable(&mut self, place: impl Into<String>, error: impl std::fmt::Display) {
        self.unreadable.push(Unreadable {
            place: place.into(),
            error: error.to_string(),
        });
    }

    /// Counts records without a chain, read elsewhere.
    #[cfg(db)]
    pub(crate) fn add_unchained(&mut self, records: u64) {
        self.unchained += records;
    }

    /// What was found.
    pub fn finish(self) -> Verification {
        let chains = self
            .chains
            .into_iter()
            .map(|(chain, followed)| {
                let last_seq = Some(followed.verifier.head().seq()).filter(|&s| s > 0);
                let head = last_seq.map(|_| chain::to_hex(followed.verifier.head().head()));
                let (records, breaks) = followed.verifier.finish();
                ChainReport {
                    chain,
                    records,
                    first_seq: followed.first_seq,
                    last_seq,
                    head,
                    breaks,
                    gaps: followed.gaps,
                }
            })
            .collect();
        Verification {
            chains,
            unchained: self.unchained,
            unreadable: self.unreadable,
        }
    }
}

/// The result of a verification.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Verification {
    /// Each chain found, by name.
    pub chains: Vec<ChainReport>,
    /// Records without a chain: counted, not judged.
    pub unchained: u64,
    /// Stored lines or rows that are not records.
    pub unreadable: Vec<Unreadable>,
}

impl Verification {
    /// Whether every chain is unbroken and every line or row a record.
    pub fn is_intact(&self) -> bool {
        self.unreadable.is_empty() && self.chains.iter().all(|c| c.breaks.is_empty())
    }

    /// Records checked in chains.
    pub fn chained(&self) -> u64 {
        self.chains.iter().map(|c| c.records).sum()
    }
}

/// One chain's result.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct ChainReport {
    /// The chain's name: `<instance>/<sink>`.
    pub chain: String,
    /// Its records read (with a valid `seq` and `hash`).
    pub records: u64,
    /// The `seq` of its first record read (1 unless older records were
    /// purged: the gap before it is then named as deleted).
    pub first_seq: Option<u64>,
    /// The `seq` of its last record read.
    pub last_seq: Option<u64>,
    /// The hash of its last record read: what a checkpoint of this chain
    /// must name.
    pub head: Option<String>,
    /// Every break found, in order.
    pub breaks: Vec<Break>,
    /// Records lost when they were written, as the chain reported them at
    /// the time (not breaks).
    pub gaps: Vec<Gap>,
}

/// A stored line or row that is not a record.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Unreadable {
    /// Where: `file:line`, or a row's id.
    pub place: String,
    /// Why it could not be read.
    pub error: String,
}

/// Verifies the file sink's files: one file, or every `*.jsonl` file of a
/// directory, in name (that is, date) order, each line a record.
///
/// # Errors
///
/// The path cannot be read (a missing file, a directory without access).
pub fn verify_files(path: impl AsRef<Path>) -> Result<Verification> {
    let mut verifier = Verifier::new();
    for file in files(path.as_ref())? {
        check_file(&file, &mut verifier)?;
    }
    Ok(verifier.finish())
}

/// The files to read: `path` itself, or a directory's `*.jsonl` files by
/// name.
fn files(path: &Path) -> Result<Vec<PathBuf>> {
    let cannot = |e| Error::io(format!("cannot read {}", path.display()), e);
    if !path.is_dir() {
        std::fs::metadata(path).map_err(cannot)?;
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(cannot)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    Ok(files)
}

fn check_file(path: &Path, verifier: &mut Verifier) -> Result<()> {
    let cannot = |e| Error::io(format!("cannot read {}", path.display()), e);
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path).map_err(cannot)?);
    let mut line = Vec::with_capacity(4096);
    let mut number = 0_u64;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(cannot)? == 0 {
            return Ok(());
        }
        number += 1;
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        match serde_json::from_slice::<AuditRecord>(text) {
            Ok(record) => verifier.check_line(&record, text),
            Err(error) => verifier.unreadable(format!("{}:{number}", path.display()), error),
        }
    }
}

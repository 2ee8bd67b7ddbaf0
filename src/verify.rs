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

use serde::Serialize;

mod files;

pub use self::files::{verify_files, verify_files_with};

use crate::chain;
use crate::chain::checkpoint::{self, NoteError, Stated};
pub use crate::chain::Break;
use crate::checkpoint::PublicKey;
use crate::AuditRecord;

/// Checks records, in stored order, against their chains.
#[derive(Debug, Default)]
pub struct Verifier {
    chains: BTreeMap<String, Followed>,
    unchained: u64,
    unreadable: Vec<Unreadable>,
    buf: Vec<u8>,
    /// The keys checkpoints must be signed by; none: signatures are not
    /// checked (nor required).
    keys: Vec<PublicKey>,
    /// Copies of checkpoint records kept elsewhere, by chain: the stored
    /// chain must hold each, unchanged.
    witnessed: BTreeMap<String, BTreeMap<u64, Witnessed>>,
    /// What retention purges stated they removed, by chain: the newest
    /// cut each statement that holds (signed by a known key, if keys are
    /// given) allows.
    purged: BTreeMap<String, Vec<(u64, chain::Hash)>>,
    /// Told the records checked so far, every [`PROGRESS_EVERY`].
    progress: Progress,
    checked: u64,
}

/// How often [`Verifier::progress`]'s function is called, in records.
pub const PROGRESS_EVERY: u64 = 10_000;

/// A function told how far a verification is.
#[derive(Default)]
struct Progress(Option<Box<dyn FnMut(u64) + Send>>);

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}

/// A checkpoint record as its copy states it.
#[derive(Debug)]
struct Witnessed {
    hash: Option<chain::Hash>,
    found: bool,
}

/// One chain as the verifier follows it.
#[derive(Debug)]
struct Followed {
    verifier: chain::Verifier,
    first_seq: Option<u64>,
    gaps: Vec<Gap>,
    checkpoints: Checkpoints,
    /// The chain's first record read, when it is a checkpoint after a
    /// purged prefix: its `seq` and the head it states (which its own
    /// hash is checked against).
    anchor: Option<(u64, chain::Hash)>,
    /// Only the records of this `seq` range are read (a time window):
    /// what lies outside is not judged.
    window: Option<Window>,
}

/// The part of a chain a windowed verification reads.
#[derive(Clone, Copy, Debug)]
struct Window {
    first: u64,
    last: u64,
    /// The record before `first` was read and its hash taken as the head
    /// the window's first record follows.
    anchored: bool,
    /// The window reaches the chain's last stored record: its end is the
    /// chain's, held to a due checkpoint as a whole chain's is.
    ends_chain: bool,
}

impl Followed {
    fn new(name: &str) -> Self {
        Self {
            verifier: chain::Verifier::new(name),
            first_seq: None,
            gaps: Vec::new(),
            checkpoints: Checkpoints::default(),
            anchor: None,
            window: None,
        }
    }
}

/// A chain's checkpoints, as the verifier has met them.
#[derive(Debug, Default)]
struct Checkpoints {
    /// Checkpoint records that match the chain.
    count: u64,
    /// Of those, signed by a key the verifier holds.
    signed: u64,
    /// The last one's `seq` and the `seq` by which the next was due.
    last: Option<(u64, Option<u64>)>,
    /// The link (SHA-256 of the signature) of the last signed one.
    link: Option<chain::Hash>,
    /// A checkpoint overdue: reported unless the next is a restart's.
    overdue: Option<(u64, u64)>,
    /// The chain's last record read is a checkpoint written at shutdown.
    closed: bool,
}

/// The action of the records a sink's worker adds to its chain when
/// records were lost (see [`Gap`]).
pub const GAP_ACTION: &str = "fabric_audit.gap";

/// The action of the records a sink's worker adds to its chain to
/// checkpoint it: every N records, every interval while records come, at
/// a restart and at shutdown. Each states the `seq` and hash of the record
/// before it (`head_seq`, `head`), the `seq` by which the next checkpoint
/// is due (`next_by`), and, when a key is configured, a signed note of the
/// same (`note`; see [`crate::checkpoint`]).
pub const CHECKPOINT_ACTION: &str = "fabric_audit.checkpoint";

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

    /// Requires every checkpoint to be signed by one of `keys` (every key
    /// that ever signed: a rotated key still verifies older checkpoints).
    /// Without keys, checkpoints are compared with their chains but their
    /// signatures are not checked.
    #[must_use]
    pub fn keys(mut self, keys: impl IntoIterator<Item = PublicKey>) -> Self {
        self.keys.extend(keys);
        self
    }

    /// Calls `report` with the number of records checked so far, every
    /// [`PROGRESS_EVERY`] records (for a progress display on large
    /// inputs; `fabric-audit verify` shows one).
    #[must_use]
    pub fn progress(mut self, report: impl FnMut(u64) + Send + 'static) -> Self {
        self.progress = Progress(Some(Box::new(report)));
        self
    }

    /// Adds the copy of a checkpoint record kept in another store (see
    /// `AuditLayerBuilder::checkpoint_copy`): the chain must hold that
    /// record unchanged, so that a chain cut short or rewritten from its
    /// last checkpoint on is caught ([`Break::Truncated`],
    /// [`Break::WitnessMismatch`]). Its signature is checked as the stored
    /// checkpoints' are. Add copies before checking records.
    pub fn witness(&mut self, copy: &AuditRecord) {
        let (Some(name), Some(seq)) = (copy.chain(), copy.seq()) else {
            self.unreadable("a checkpoint copy", "it has no chain or seq");
            return;
        };
        if copy.action() != CHECKPOINT_ACTION {
            self.unreadable(
                format!("the copy of {name} #{seq}"),
                "it is not a checkpoint record",
            );
            return;
        }
        if let Some(note) = Stated::read(copy).and_then(|s| s.note) {
            if !self.keys.is_empty() {
                if let Err(error) = checkpoint::open(note, &self.keys) {
                    self.unreadable(format!("the copy of {name} #{seq}"), error);
                }
            }
        }
        self.witnessed.entry(name.to_owned()).or_default().insert(
            seq,
            Witnessed {
                hash: copy.hash().and_then(chain::from_hex),
                found: false,
            },
        );
    }

    /// Adds what a retention purge stated it removed from `chain`: its
    /// records before `below_seq`, the last of which hashed to `head`.
    /// With keys, the statement counts only when `note` is it, signed by
    /// one of them; otherwise it is listed as unreadable and the records
    /// stay missing.
    pub(crate) fn purge_statement(
        &mut self,
        statement: &checkpoint::PurgeStatement,
        note: Option<&str>,
    ) {
        let place = || {
            format!(
                "the purge statement of {} below seq {}",
                statement.chain, statement.below_seq
            )
        };
        if !self.keys.is_empty() {
            let checked = match note {
                None => Err("it is not signed".to_owned()),
                Some(note) => statement.check(note, &self.keys).map_err(|e| e.to_string()),
            };
            if let Err(error) = checked {
                self.unreadable(place(), error);
                return;
            }
        }
        self.purged
            .entry(statement.chain.clone())
            .or_default()
            .push((statement.below_seq, statement.head));
    }

    /// Verifies only `chain`: copies of other chains' checkpoints are
    /// set aside (they would name those chains as cut to nothing).
    #[cfg(db)]
    pub(crate) fn only_chain(&mut self, chain: &str) {
        self.witnessed.retain(|name, _| name == chain);
    }

    /// Verifies only records `first..=last` of `chain` (a time window's):
    /// `before`, the stored record `first − 1` when there is one, is the
    /// head the first is checked against (not judged itself); without it,
    /// that one record is named deleted. Copies of checkpoints outside
    /// the range are set aside. Unless the window `ends_chain`, a
    /// checkpoint due after its end is not asked for (the next one may
    /// follow just after it). Call it before checking the chain's records;
    /// after every window, [`windows_only`](Self::windows_only).
    ///
    /// `checkpoint`, the chain's last checkpoint record before the window,
    /// says by which `seq` the window's first checkpoint is due.
    #[cfg(db)]
    pub(crate) fn window(
        &mut self,
        chain: &str,
        (first, last): (u64, u64),
        ends_chain: bool,
        before: Option<&AuditRecord>,
        checkpoint: Option<&AuditRecord>,
    ) {
        let mut followed = Followed::new(chain);
        if let Some(checkpoint) = checkpoint.filter(|c| c.seq() < Some(first)) {
            let due = Stated::read(checkpoint).and_then(|s| s.next_by);
            followed.checkpoints.last = checkpoint.seq().map(|seq| (seq, due));
        }
        let head = before
            .filter(|b| first > 1 && b.seq() == Some(first - 1))
            .and_then(|b| b.hash().and_then(chain::from_hex));
        if let Some(head) = head {
            followed.verifier =
                chain::Verifier::anchored(chain::Chain::resume(chain, first - 1, head));
        }
        followed.window = Some(Window {
            first,
            last,
            anchored: head.is_some(),
            ends_chain,
        });
        if let Some(copies) = self.witnessed.get_mut(chain) {
            copies.retain(|&seq, _| (first..=last).contains(&seq));
        }
        self.chains.insert(chain.to_owned(), followed);
    }

    /// Sets aside the copies of checkpoints of chains with no window: no
    /// record of theirs is in it.
    #[cfg(db)]
    pub(crate) fn windows_only(&mut self) {
        let chains = &self.chains;
        self.witnessed.retain(|name, _| chains.contains_key(name));
    }

    /// Checks the next stored record. Records of different chains may come
    /// interleaved; each chain's must come in stored order.
    pub fn check(&mut self, record: &AuditRecord) {
        self.check_stored(record, false, None);
    }

    /// Checks the next record read from a JSON line (without its newline):
    /// as [`check`](Self::check), and the line must be the bytes the sink
    /// wrote for it ([`Break::Reformatted`] otherwise).
    pub fn check_line(&mut self, record: &AuditRecord, line: &[u8]) {
        let reformatted = record.chain().is_some() && {
            self.buf.clear();
            record.write_json(&mut self.buf);
            self.buf != line
        };
        self.check_stored(record, reformatted, None);
    }

    /// Checks a record: `reformatted` when its line is not the one the
    /// sink wrote for it, `hashed` when its hash was computed ahead (by a
    /// worker of `files`).
    fn check_stored(
        &mut self,
        record: &AuditRecord,
        reformatted: bool,
        hashed: Option<chain::Hashed>,
    ) {
        self.checked += 1;
        if self.checked % PROGRESS_EVERY == 0 {
            if let Some(report) = &mut self.progress.0 {
                report(self.checked);
            }
        }
        let Some(name) = record.chain() else {
            self.unchained += 1;
            return;
        };
        // Read from a line that is not the one the sink wrote for it?
        let reformatted = record.seq().filter(|_| reformatted);
        let followed = match self.chains.get_mut(name) {
            Some(followed) => followed,
            None => self
                .chains
                .entry(name.to_owned())
                .or_insert_with(|| Followed::new(name)),
        };
        let first = followed.first_seq.is_none();
        followed.first_seq = followed.first_seq.or(record.seq());
        if followed.window.is_some_and(|w| w.anchored) {
            // Follows the record before the window, read as its anchor.
        } else if first && record.action() == CHECKPOINT_ACTION {
            followed.anchor_on(record, &mut self.buf);
        } else if let Some(cuts) = self.purged.get(name).filter(|_| first) {
            followed.anchor_on_cut(record, cuts, &mut self.buf);
        }
        let before = followed.verifier.head();
        let mut before = (before.seq(), *before.head());
        if let Some((seq, head)) = followed.anchor.filter(|_| first) {
            // What came before the first record read is gone: it is
            // compared with the head it states (`anchor_on`).
            before = (seq - 1, head);
        }
        followed
            .verifier
            .check_hashed(record, hashed, &mut self.buf);
        if let (Some(seq), Some(copies)) = (record.seq(), self.witnessed.get_mut(name)) {
            if let Some(copy) = copies.get_mut(&seq) {
                copy.found = true;
                if copy.hash.is_none() || copy.hash != record.hash().and_then(chain::from_hex) {
                    followed.verifier.note(Break::WitnessMismatch { seq });
                }
            }
        }
        followed.checkpoints.closed = false;
        if let Some(seq) = record.seq() {
            followed.checkpoints.note_record(seq);
        }
        if let Some(seq) = reformatted {
            followed.verifier.note(Break::Reformatted { seq });
        }
        if record.action() == GAP_ACTION {
            if let Some(gap) = Gap::read(record, &mut followed.verifier) {
                followed.gaps.push(gap);
            }
        } else if record.action() == CHECKPOINT_ACTION {
            followed.check_checkpoint(name, record, before, &self.keys);
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
    pub fn finish(mut self) -> Verification {
        // Chains that copies of their checkpoints name but that hold none
        // of their records: cut to nothing.
        for name in self.witnessed.keys() {
            if !self.chains.contains_key(name) {
                self.chains.insert(name.clone(), Followed::new(name));
            }
        }
        let mut witnessed = self.witnessed;
        let mut purged = self.purged;
        let chains = self
            .chains
            .into_iter()
            .map(|(chain, mut followed)| {
                let last_seq = Some(followed.verifier.head().seq()).filter(|&s| s > 0);
                let head = last_seq.map(|_| chain::to_hex(followed.verifier.head().head()));
                let window = followed.window;
                if let Some((after, by)) = followed.checkpoints.overdue.take() {
                    // A window that ends before the chain does may end
                    // just before the next checkpoint.
                    if window.is_none_or(|w| w.ends_chain) {
                        followed
                            .verifier
                            .note(Break::MissingCheckpoint { after, by });
                    }
                }
                // Copies of checkpoints past the stored end: a cut tail
                // (within the window, when there is one).
                let beyond = witnessed
                    .remove(&chain)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|(seq, copy)| !copy.found && *seq > last_seq.unwrap_or(0))
                    .filter(|(seq, _)| window.is_none_or(|w| *seq <= w.last))
                    .map(|(seq, _)| seq)
                    .max();
                if let Some(to) = beyond {
                    followed.verifier.note(Break::Truncated {
                        from: last_seq.unwrap_or(0) + 1,
                        to,
                    });
                }
                let purged_below = purged
                    .remove(&chain)
                    .and_then(|cuts| followed.explain_purge(&cuts));
                // A window whose record before it is gone: that one record
                // is missing, not the chain's whole prefix.
                if let Some(w) = window.filter(|w| !w.anchored && w.first > 1) {
                    if purged_below.is_none() && followed.first_seq == Some(w.first) {
                        followed.verifier.replace_prefix(w.first - 1, w.first);
                    }
                }
                let checkpoints = &followed.checkpoints;
                let last_checkpoint = checkpoints.last.map(|(seq, _)| seq);
                let (records, breaks) = followed.verifier.finish();
                ChainReport {
                    chain,
                    records,
                    first_seq: followed.first_seq,
                    last_seq,
                    head,
                    breaks,
                    gaps: followed.gaps,
                    checkpoints: checkpoints.count,
                    signed_checkpoints: checkpoints.signed,
                    last_checkpoint,
                    unanchored: last_seq
                        .unwrap_or(0)
                        .saturating_sub(last_checkpoint.unwrap_or(0)),
                    closed: checkpoints.closed,
                    purged_below,
                    window: window.map(|w| (w.first, w.last)),
                }
            })
            .collect();
        Verification {
            chains,
            unchained: self.unchained,
            unreadable: self.unreadable,
            signatures_checked: !self.keys.is_empty(),
        }
    }
}

impl Followed {
    /// The chain's first record read is a checkpoint: if records before it
    /// are gone, its hash is checked against the head it states (the only
    /// link left to them), and it anchors the chain for a purge.
    fn anchor_on(&mut self, record: &AuditRecord, buf: &mut Vec<u8>) {
        let (Some(seq), Some(stated)) = (record.seq(), Stated::read(record)) else {
            return;
        };
        let Some(head) = stated
            .head
            .filter(|_| seq > 1 && stated.head_seq + 1 == seq)
        else {
            return;
        };
        self.anchor_at(record, seq, head, buf);
    }

    /// Anchors the chain's first record read on the head a purge statement
    /// gives for it (a file sink's purge deletes whole files, so the first
    /// record kept is seldom a checkpoint): it must follow that head.
    fn anchor_on_cut(
        &mut self,
        record: &AuditRecord,
        cuts: &[(u64, chain::Hash)],
        buf: &mut Vec<u8>,
    ) {
        let Some(seq) = record.seq().filter(|&seq| seq > 1) else {
            return;
        };
        let Some(&(_, head)) = cuts.iter().find(|&&(below, _)| below == seq) else {
            return;
        };
        self.anchor_at(record, seq, head, buf);
    }

    /// Anchors the chain at its first record read, `seq`, if that record
    /// follows `head` (the hash of the record before it, which is gone);
    /// names it modified otherwise.
    fn anchor_at(&mut self, record: &AuditRecord, seq: u64, head: chain::Hash, buf: &mut Vec<u8>) {
        let stored = record.hash().and_then(chain::from_hex);
        if stored == Some(chain::hash_record(&head, record, buf)) {
            self.anchor = Some((seq, head));
        } else {
            self.verifier.note(Break::Modified { seq });
        }
    }

    /// Takes the chain's missing prefix (`deleted: 1..first − 1`) out of
    /// its breaks when a purge statement covers it: one that cut the chain
    /// at its first record read (a checkpoint stating the same head), or
    /// later (records the purge had not removed yet). Returns the `seq`
    /// before which records were purged. A prefix only partly covered
    /// stays a break from where the statements end.
    fn explain_purge(&mut self, cuts: &[(u64, chain::Hash)]) -> Option<u64> {
        let first = self.first_seq.filter(|&f| f > 1)?;
        let covers = |&&(below, head): &&(u64, chain::Hash)| {
            below > first || (below == first && self.anchor == Some((first, head)))
        };
        let below = match cuts.iter().find(covers) {
            Some(_) => first,
            None => cuts
                .iter()
                .map(|&(below, _)| below)
                .filter(|&below| below < first)
                .max()?,
        };
        self.verifier.replace_prefix(below, first);
        Some(below)
    }

    /// Checks a checkpoint record against the chain it stands in: the head
    /// it states is the record before it, and its note (if any) states the
    /// same, is signed by a known key and links to the chain's previous
    /// signed checkpoint.
    fn check_checkpoint(
        &mut self,
        name: &str,
        record: &AuditRecord,
        (before_seq, before_head): (u64, chain::Hash),
        keys: &[PublicKey],
    ) {
        let Some(seq) = record.seq() else { return };
        let Some(stated) = Stated::read(record) else {
            self.verifier.note(Break::CheckpointMismatch { seq });
            return;
        };
        let cp = &mut self.checkpoints;
        let mut matches = stated.head_seq + 1 == seq
            && stated.head_seq == before_seq
            && stated.head == Some(before_head);
        let note = match (stated.note, keys.is_empty()) {
            (None, true) => None,
            (None, false) => {
                self.verifier.note(Break::Unsigned { seq });
                None
            }
            (Some(note), true) => Some(checkpoint::read_unchecked(note).map(|c| (c, None))),
            (Some(note), false) => {
                Some(checkpoint::open(note, keys).map(|(c, link)| (c, Some(link))))
            }
        };
        match note {
            None => {}
            Some(Ok((note, link))) => {
                matches &= note.chain == name
                    && note.seq == stated.head_seq
                    && Some(note.head) == stated.head;
                // Within a run each signed checkpoint links to the one before.
                if note.prev.is_some() && cp.link.is_some() && note.prev != cp.link {
                    matches = false;
                }
                if let Some(link) = link {
                    cp.signed += 1;
                    cp.link = Some(link);
                }
            }
            Some(Err(error)) => {
                // The next checkpoint's link cannot be checked against it.
                cp.link = None;
                match error {
                    NoteError::UnknownKey(key) => {
                        self.verifier.note(Break::UnknownKey { seq, key })
                    }
                    NoteError::BadSignature(key) => {
                        self.verifier.note(Break::BadSignature { seq, key });
                    }
                    NoteError::Malformed(_) => matches = false,
                }
            }
        }
        if !matches {
            self.verifier.note(Break::CheckpointMismatch { seq });
        }
        cp.count += 1;
        if let Some((after, by)) = cp.overdue.take() {
            if !stated.resumed {
                self.verifier.note(Break::MissingCheckpoint { after, by });
            }
        }
        cp.last = Some((seq, stated.next_by));
        cp.closed = stated.last;
    }
}

impl Checkpoints {
    /// Notes the chain's record `seq`: past the `seq` by which a checkpoint
    /// was due, one is overdue.
    fn note_record(&mut self, seq: u64) {
        if let Some((after, Some(by))) = self.last {
            if seq > by && self.overdue.is_none() {
                self.overdue = Some((after, by));
            }
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
    /// Whether checkpoints' signatures were checked (the verifier held
    /// keys, [`Verifier::keys`]).
    pub signatures_checked: bool,
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
    /// Its checkpoint records that match it.
    pub checkpoints: u64,
    /// Of those, signed by a key the verifier holds.
    pub signed_checkpoints: u64,
    /// The `seq` of its last checkpoint record.
    pub last_checkpoint: Option<u64>,
    /// Records after its last checkpoint: a chain being written has some;
    /// only a copy of a later checkpoint kept elsewhere can show that such
    /// a tail was not cut short.
    pub unanchored: u64,
    /// Whether its last record is the checkpoint written at shutdown.
    pub closed: bool,
    /// Its records before this `seq` were removed by the retention purge,
    /// as a purge statement says (signed by a known key, when keys are
    /// given) and the checkpoint it cut at confirms: not a break.
    pub purged_below: Option<u64>,
    /// When only a time window was verified
    /// ([`Store::verify_between`](crate::Store::verify_between)): the
    /// `seq` range of the chain's records in it (from the first to the
    /// last record stamped in the window, and every record between).
    /// Records outside are not judged: the first one read is checked
    /// against the record before it, and the window's end may come before
    /// a due checkpoint.
    pub window: Option<(u64, u64)>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::checkpoint::{Policy, SigningKey, Why};
    use crate::chain::{Chain, Linker};
    use std::sync::Arc;
    use std::time::Duration;

    const EVERY: u64 = 50;
    /// Checkpoints may come this many records late (a batch).
    const BATCH: u64 = 10;

    fn policy(key: Option<&Arc<SigningKey>>) -> Policy {
        Policy {
            every_records: EVERY,
            every: Duration::from_secs(60),
            key: key.cloned(),
        }
    }

    /// `n` records of chain `api-1/file` as a worker writes them: a
    /// checkpoint after each `EVERY` records, one at the end.
    fn written(n: u64, key: Option<&Arc<SigningKey>>) -> Vec<AuditRecord> {
        let mut records = Vec::new();
        extend(&mut records, n, key, false);
        records
    }

    /// `records` continued by a run of `n` records signed by `key` (the
    /// run's first checkpoint marked `resumed` if asked).
    fn extend(
        records: &mut Vec<AuditRecord>,
        n: u64,
        key: Option<&Arc<SigningKey>>,
        resumed: bool,
    ) {
        extend_every(records, n, EVERY, key, resumed);
    }

    /// As `extend`, checkpointing every `every` records.
    fn extend_every(
        records: &mut Vec<AuditRecord>,
        n: u64,
        every: u64,
        key: Option<&Arc<SigningKey>>,
        resumed: bool,
    ) {
        let mut linker = Linker::new(match records.last() {
            None => Chain::new("api-1/file"),
            Some(last) => Chain::resume(
                "api-1/file",
                last.seq().unwrap(),
                chain::from_hex(last.hash().unwrap()).unwrap(),
            ),
        });
        let mut link = None;
        let mut since = 0;
        let mut first = resumed;
        for i in 0..n {
            let mut record = AuditRecord::builder("invoice.sent").detail("n", i).build();
            linker.link(&mut record);
            records.push(record);
            since += 1;
            if since == every || i + 1 == n {
                let why = Why {
                    last: i + 1 == n,
                    resumed: std::mem::take(&mut first),
                };
                let mut cp = checkpoint::record(
                    linker.chain(),
                    &policy(key),
                    EVERY + BATCH + 1,
                    why,
                    &mut link,
                );
                linker.link(&mut cp);
                records.push(cp);
                since = 0;
            }
        }
    }

    /// Links `records` again from `from` (an index) on, as someone who can
    /// write the store but holds no key would after changing one: the
    /// chain's hashes are right again.
    fn relink(records: &mut [AuditRecord], from: usize) {
        let before = &records[from - 1];
        let head = chain::from_hex(before.hash().unwrap()).unwrap();
        let mut linker = Linker::new(Chain::resume("api-1/file", before.seq().unwrap(), head));
        for record in &mut records[from..] {
            linker.link(record);
        }
    }

    fn verify(
        records: &[AuditRecord],
        keys: &[&Arc<SigningKey>],
        copies: &[AuditRecord],
    ) -> ChainReport {
        let mut verifier = Verifier::new().keys(keys.iter().map(|k| k.public_key()));
        for copy in copies {
            verifier.witness(copy);
        }
        records.iter().for_each(|r| verifier.check(r));
        let v = verifier.finish();
        assert!(v.unreadable.is_empty(), "{v:?}");
        assert_eq!(v.chains.len(), 1, "{v:?}");
        v.chains.into_iter().next().unwrap()
    }

    fn key(name: &str) -> Arc<SigningKey> {
        Arc::new(SigningKey::generate(name).unwrap())
    }

    fn index_of_seq(records: &[AuditRecord], seq: u64) -> usize {
        records.iter().position(|r| r.seq() == Some(seq)).unwrap()
    }

    #[test]
    fn progress_is_told_every_ten_thousand_records() {
        let told = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = told.clone();
        let mut verifier = Verifier::new().progress(move |n| seen.lock().unwrap().push(n));
        let records = written(25_000, None);
        records.iter().for_each(|r| verifier.check(r));
        let v = verifier.finish();
        assert!(v.is_intact());
        // 25 000 records and their 500 checkpoints.
        assert_eq!(v.chains[0].records, 25_500);
        assert_eq!(*told.lock().unwrap(), [10_000, 20_000]);
    }

    #[test]
    fn signed_checkpoints_verify_with_their_key_and_are_counted() {
        let k = key("api.example.com");
        let records = written(120, Some(&k));
        let report = verify(&records, &[&k], &[]);
        assert_eq!(report.breaks, []);
        // After 50, after 100, and at the end.
        assert_eq!((report.checkpoints, report.signed_checkpoints), (3, 3));
        assert_eq!(report.last_checkpoint, Some(123));
        assert_eq!((report.unanchored, report.closed), (0, true));
        // Without keys: compared with the chain, signatures not checked.
        let report = verify(&records, &[], &[]);
        assert_eq!(
            (
                report.breaks.len(),
                report.checkpoints,
                report.signed_checkpoints
            ),
            (0, 3, 0)
        );
        // Unsigned checkpoints are refused when signatures are required.
        let unsigned = written(60, None);
        assert_eq!(
            verify(&unsigned, &[&k], &[]).breaks,
            [Break::Unsigned { seq: 51 }, Break::Unsigned { seq: 62 }]
        );
    }

    #[test]
    fn a_rotated_key_keeps_older_checkpoints_valid_and_an_unknown_key_is_named() {
        let old = key("api.example.com");
        let new = key("api.example.com");
        let mut records = written(60, Some(&old));
        // The next run signs with the new key (a chain signed by both).
        extend(&mut records, 60, Some(&new), false);
        let report = verify(&records, &[&old, &new], &[]);
        assert_eq!(report.breaks, []);
        assert_eq!(report.signed_checkpoints, 4);
        let report = verify(&records, &[&new], &[]);
        assert_eq!(
            report.breaks,
            [
                Break::UnknownKey {
                    seq: 51,
                    key: "api.example.com".into()
                },
                Break::UnknownKey {
                    seq: 62,
                    key: "api.example.com".into()
                },
            ]
        );
    }

    #[test]
    fn a_changed_note_a_moved_checkpoint_and_a_broken_link_are_caught() {
        let k = key("k");
        let records = written(120, Some(&k));
        let at = index_of_seq(&records, 51);

        // The note's time changed, the chain linked again: the signature.
        let mut changed = records.clone();
        let note = match changed[at].detail_value("note") {
            Some(crate::DetailValue::Str(s)) => s.replacen("time 20", "time 19", 1),
            other => panic!("{other:?}"),
        };
        changed[at] = rebuild(&changed[at], "note", note.into());
        relink(&mut changed, at);
        // The later checkpoints name the heads before the change.
        assert_eq!(
            verify(&changed, &[&k], &[]).breaks,
            [
                Break::BadSignature {
                    seq: 51,
                    key: "k".into()
                },
                Break::CheckpointMismatch { seq: 102 },
                Break::CheckpointMismatch { seq: 123 },
            ]
        );

        // The stated head changed (and the chain linked again).
        let mut moved = records.clone();
        moved[at] = rebuild(&moved[at], "head_seq", 49.into());
        relink(&mut moved, at);
        assert_eq!(
            verify(&moved, &[&k], &[]).breaks,
            [51, 102, 123].map(|seq| Break::CheckpointMismatch { seq })
        );

        // A record before a checkpoint changed and everything linked again
        // by someone without the key: the signed note names the old head.
        let mut rewritten = records.clone();
        rewritten[10] = rebuild(&rewritten[10], "n", 999.into());
        relink(&mut rewritten, 10);
        let breaks = verify(&rewritten, &[&k], &[]).breaks;
        assert_eq!(
            breaks[0],
            Break::CheckpointMismatch { seq: 51 },
            "{breaks:?}"
        );
    }

    /// `record` with one detail value replaced (its chain fields kept).
    fn rebuild(record: &AuditRecord, key: &str, value: serde_json::Value) -> AuditRecord {
        let mut json = serde_json::to_value(record).unwrap();
        json["detail"][key] = value;
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn checkpoints_removed_from_a_rewritten_chain_are_missed() {
        let k = key("k");
        let records = written(200, Some(&k));
        // Rewritten from record 60 on without the key: the checkpoints
        // after it, which would name the old heads, dropped.
        let mut forged: Vec<AuditRecord> = records
            .iter()
            .enumerate()
            .filter(|(i, r)| *i < 60 || r.action() != CHECKPOINT_ACTION)
            .map(|(_, r)| r.clone())
            .collect();
        forged[60] = rebuild(&forged[60], "n", 999.into());
        relink(&mut forged, 60);
        assert_eq!(
            verify(&forged, &[&k], &[]).breaks,
            [Break::MissingCheckpoint {
                after: 51,
                by: 51 + EVERY + BATCH + 1
            }]
        );
        // A restart explains a late checkpoint: the run's first is marked.
        // (Killed after 60 records, then a run that checkpoints late.)
        let mut resumed = records[..60].to_vec();
        extend_every(&mut resumed, EVERY + BATCH + 5, u64::MAX, Some(&k), true);
        assert_eq!(resumed.last().unwrap().seq(), Some(126));
        assert_eq!(verify(&resumed, &[&k], &[]).breaks, []);
        // Without the mark, the same is a missing checkpoint.
        let mut late = records[..60].to_vec();
        extend_every(&mut late, EVERY + BATCH + 5, u64::MAX, Some(&k), false);
        assert_eq!(
            verify(&late, &[&k], &[]).breaks,
            [Break::MissingCheckpoint {
                after: 51,
                by: 51 + EVERY + BATCH + 1
            }]
        );
    }

    #[test]
    fn a_copy_kept_elsewhere_catches_a_cut_tail_and_a_rewrite() {
        let k = key("k");
        let records = written(120, Some(&k));
        let copies: Vec<AuditRecord> = records
            .iter()
            .filter(|r| r.action() == CHECKPOINT_ACTION)
            .cloned()
            .collect();
        assert_eq!(verify(&records, &[&k], &copies).breaks, []);
        // Cut after the first checkpoint: the chain alone still verifies.
        let cut = &records[..=index_of_seq(&records, 51)];
        assert_eq!(verify(cut, &[&k], &[]).breaks, []);
        assert_eq!(
            verify(cut, &[&k], &copies).breaks,
            [Break::Truncated { from: 52, to: 123 }]
        );
        // Rewritten from its last checkpoint on (the checkpoint forged
        // unsigned): the copy differs.
        let mut rewritten = records.clone();
        let last = rewritten.len() - 1;
        rewritten[last - 3] = rebuild(&rewritten[last - 3], "n", 999.into());
        relink(&mut rewritten, last - 3);
        let breaks = verify(&rewritten, &[], &copies).breaks;
        assert!(
            breaks.contains(&Break::WitnessMismatch { seq: 123 }),
            "{breaks:?}"
        );
        // A chain gone entirely, though copies name it.
        assert_eq!(
            {
                let mut verifier = Verifier::new();
                copies.iter().for_each(|c| verifier.witness(c));
                verifier.finish().chains[0].breaks.clone()
            },
            [Break::Truncated { from: 1, to: 123 }]
        );
    }
}

//! Tamper evidence: hash chains over stored records, and signed
//! checkpoints of their heads.
//!
//! This module is the chain's arithmetic, independent of any sink: what a
//! record's hash covers ([`record_hash`]), how a chain advances
//! ([`Chain::link`]), how a sequence of stored records is checked
//! ([`Verifier`]), and how a head is signed ([`checkpoint`]).
//!
//! # The record hash
//!
//! ```text
//! hash_n = SHA-256( "fabric-audit/record/v1\n" || hash_{n-1} || JCS(record_n without "hash") )
//! ```
//!
//! `hash_{n-1}` is the 32 raw bytes of the previous record's hash in the
//! same chain (32 zero bytes before the first record), and the record
//! includes its `chain` and `seq`. JCS is RFC 8785 with exact integers
//! ([`canonical`]). The hash is stored as 64 lower-case hex digits.
//!
//! Because each hash covers the one before, changing a stored record
//! breaks its own hash; deleting records leaves a gap in `seq`; inserting
//! or reordering records breaks `seq` order. Deleting the newest records
//! (truncating the tail) leaves a valid shorter chain: only a checkpoint
//! kept elsewhere, signed with a key the attacker lacks, shows it.

pub(crate) mod canonical;
pub(crate) mod checkpoint;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::AuditRecord;

/// A SHA-256 digest.
pub(crate) type Hash = [u8; 32];

/// The hash "before" a chain's first record.
pub(crate) const GENESIS: Hash = [0; 32];

const RECORD_DOMAIN: &[u8] = b"fabric-audit/record/v1\n";

/// The hash of `record` (a JSON object; its `hash` key, if any, is left
/// out) following `prev`.
pub(crate) fn record_hash(prev: &Hash, record: &Map<String, Value>) -> Hash {
    let mut body = Vec::with_capacity(512);
    if record.contains_key("hash") {
        let mut without = record.clone();
        without.remove("hash");
        canonical::write(&Value::Object(without), &mut body);
    } else {
        canonical::write_object(record, &mut body);
    }
    let mut hasher = Sha256::new();
    hasher.update(RECORD_DOMAIN);
    hasher.update(prev);
    hasher.update(&body);
    hasher.finalize().into()
}

/// The hash of `record` following `prev`: the same as [`record_hash`] over
/// its JSON object, written straight from the record (`buf` is scratch
/// space, kept between calls).
pub(crate) fn hash_record(prev: &Hash, record: &AuditRecord, buf: &mut Vec<u8>) -> Hash {
    buf.clear();
    record.write_canonical(buf);
    let mut hasher = Sha256::new();
    hasher.update(RECORD_DOMAIN);
    hasher.update(prev);
    hasher.update(&buf[..]);
    hasher.finalize().into()
}

/// A record's hash computed ahead (on another thread) following `prev`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hashed {
    pub(crate) prev: Hash,
    pub(crate) hash: Hash,
}

/// Extends one sink's chain, on its worker thread: gives each record it is
/// about to store its `chain`, the next `seq` and its `hash`.
#[derive(Debug)]
pub(crate) struct Linker {
    chain: Chain,
    buf: Vec<u8>,
}

impl Linker {
    pub(crate) fn new(chain: Chain) -> Self {
        Self {
            chain,
            buf: Vec::with_capacity(1024),
        }
    }

    /// Places `record` next in the chain; the chain's head moves to it.
    pub(crate) fn link(&mut self, record: &mut AuditRecord) {
        let seq = self.chain.seq + 1;
        // The hash covers `chain` and `seq`, not itself.
        record.set_link(&self.chain.id, seq, "");
        let hash = hash_record(&self.chain.head, record, &mut self.buf);
        let mut hex = [0u8; 64];
        record.set_hash(hex_into(&hash, &mut hex));
        self.chain.seq = seq;
        self.chain.head = hash;
    }

    pub(crate) fn chain(&self) -> &Chain {
        &self.chain
    }
}

/// Lower-case hex of a hash, into `out`.
fn hex_into<'a>(hash: &Hash, out: &'a mut [u8; 64]) -> &'a str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in hash.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(byte >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(byte & 0xf)];
    }
    // Hex digits are ASCII.
    std::str::from_utf8(out).unwrap_or_default()
}

/// Lower-case hex of a hash.
pub(crate) fn to_hex(hash: &Hash) -> String {
    hex_into(hash, &mut [0; 64]).to_owned()
}

/// A hash from 64 hex digits.
pub(crate) fn from_hex(text: &str) -> Option<Hash> {
    // Lower-case only: the one spelling a sink writes, so that a stored
    // hash edited to upper case is not read as the same hash.
    fn digit(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            _ => None,
        }
    }
    let text: &[u8; 64] = text.as_bytes().try_into().ok()?;
    let mut hash = [0; 32];
    for (byte, pair) in hash.iter_mut().zip(text.chunks_exact(2)) {
        *byte = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(hash)
}

/// One chain's head, as its writer advances it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Chain {
    id: String,
    /// The `seq` of the last linked record; 0 before the first.
    seq: u64,
    head: Hash,
}

impl Chain {
    /// A chain with no record yet.
    pub(crate) fn new(id: impl Into<String>) -> Self {
        Self::resume(id, 0, GENESIS)
    }

    /// A chain continuing after its record `seq` whose hash is `head`.
    pub(crate) fn resume(id: impl Into<String>, seq: u64, head: Hash) -> Self {
        Self {
            id: id.into(),
            seq,
            head,
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    pub(crate) fn head(&self) -> &Hash {
        &self.head
    }

    /// Adds `chain` and the next `seq` to `record`, hashes it and adds
    /// `hash`; the chain's head moves to it.
    pub(crate) fn link(&mut self, record: &mut Map<String, Value>) {
        record.remove("hash");
        record.insert("chain".into(), Value::from(self.id.as_str()));
        record.insert("seq".into(), Value::from(self.seq + 1));
        let hash = record_hash(&self.head, record);
        record.insert("hash".into(), Value::from(to_hex(&hash)));
        self.seq += 1;
        self.head = hash;
    }
}

/// What is wrong at one place of a chain: what verification names.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Break {
    /// The record at `seq` is not what was hashed: it was changed after it
    /// was written (or the record before it was changed and given a new
    /// hash).
    Modified {
        /// The changed record's `seq`.
        seq: u64,
    },
    /// Records `from..=to` are missing: deleted, or (at the end of what
    /// was read) never there.
    Deleted {
        /// The first missing `seq`.
        from: u64,
        /// The last missing `seq`.
        to: u64,
    },
    /// The record at `seq` came after the one at `after`: inserted, or
    /// moved.
    OutOfOrder {
        /// The record's `seq`.
        seq: u64,
        /// The `seq` of the record before it.
        after: u64,
    },
    /// The stored line of the record at `seq` is not the bytes the sink
    /// wrote, though it reads as the same record (a hex digit's case in
    /// the id, an escape spelled differently): the file was edited.
    Reformatted {
        /// The record's `seq`.
        seq: u64,
    },
    /// The record names the chain but has no valid `seq` or `hash` (its
    /// position among the chain's records read, from 0).
    Unchained {
        /// Its position among the chain's records as read.
        index: usize,
    },
    /// The checkpoint record at `seq` does not state the chain before it
    /// (another head or `seq`, a note for another chain, a broken link to
    /// the previous checkpoint, an unreadable note): forged, or moved.
    CheckpointMismatch {
        /// The checkpoint record's `seq`.
        seq: u64,
    },
    /// The checkpoint at `seq` is signed by a key the verifier holds, but
    /// the signature does not match: its note was changed.
    BadSignature {
        /// The checkpoint record's `seq`.
        seq: u64,
        /// The key's name.
        key: String,
    },
    /// The checkpoint at `seq` is signed by no key the verifier holds.
    UnknownKey {
        /// The checkpoint record's `seq`.
        seq: u64,
        /// The name the signature gives.
        key: String,
    },
    /// The checkpoint at `seq` is not signed, though the verifier requires
    /// signatures (it holds keys).
    Unsigned {
        /// The checkpoint record's `seq`.
        seq: u64,
    },
    /// After the checkpoint at `after`, the next was due by `by` and the
    /// chain went past it without one (and not because of a restart):
    /// checkpoints were removed, or the chain rewritten without the key.
    MissingCheckpoint {
        /// The last checkpoint's `seq`.
        after: u64,
        /// The `seq` by which the next was due.
        by: u64,
    },
    /// A copy of a checkpoint kept elsewhere names records `from..=to`
    /// that the chain no longer holds: its tail was cut.
    Truncated {
        /// The first missing `seq`.
        from: u64,
        /// The `seq` of the copied checkpoint.
        to: u64,
    },
    /// The stored record at `seq` is not the checkpoint a copy kept
    /// elsewhere shows: the chain was rewritten from there.
    WitnessMismatch {
        /// The record's `seq`.
        seq: u64,
    },
}

/// Checks one chain's records in stored order.
#[derive(Debug)]
pub(crate) struct Verifier {
    chain: Chain,
    records: u64,
    breaks: Vec<Break>,
    index: usize,
}

impl Verifier {
    /// Starts at the chain's beginning.
    pub(crate) fn new(chain: impl Into<String>) -> Self {
        Self::anchored(Chain::new(chain))
    }

    /// Starts after a known head (a checkpoint, or the last record a purge
    /// removed).
    pub(crate) fn anchored(chain: Chain) -> Self {
        Self {
            chain,
            records: 0,
            breaks: Vec::new(),
            index: 0,
        }
    }

    /// Checks the next stored record, as a JSON object.
    pub(crate) fn check(&mut self, record: &Map<String, Value>) {
        let seq = record.get("seq").and_then(Value::as_u64);
        let stored = record
            .get("hash")
            .and_then(Value::as_str)
            .and_then(from_hex);
        self.check_parts(seq, stored, |prev| record_hash(prev, record));
    }

    /// A gap record said that up to `failed` records with a `seq` in
    /// `from..=to` were lost when written: the deletions found in that
    /// range are those records, not tampering, if there are no more of
    /// them than it says. Returns how many missing records it explains.
    pub(crate) fn explain_gap(&mut self, from: u64, to: u64, failed: u64) -> Option<u64> {
        let inside =
            |b: &Break| matches!(b, Break::Deleted { from: f, to: t } if *f >= from && *t <= to);
        let missing: u64 = self
            .breaks
            .iter()
            .filter(|b| inside(b))
            .map(|b| match b {
                Break::Deleted { from, to } => to - from + 1,
                _ => 0,
            })
            .sum();
        if missing > failed {
            return None;
        }
        self.breaks.retain(|b| !inside(b));
        Some(missing)
    }

    /// Notes a break found outside the chain's arithmetic.
    pub(crate) fn note(&mut self, found: Break) {
        self.breaks.push(found);
    }

    /// Checks the next stored record (`buf` is scratch space).
    pub(crate) fn check_record(&mut self, record: &AuditRecord, buf: &mut Vec<u8>) {
        self.check_hashed(record, None, buf);
    }

    /// As [`check_record`](Self::check_record), with the record's hash
    /// already computed following some `prev`: used when `prev` is the
    /// head it follows here, computed again otherwise.
    pub(crate) fn check_hashed(
        &mut self,
        record: &AuditRecord,
        hashed: Option<Hashed>,
        buf: &mut Vec<u8>,
    ) {
        let stored = record.hash().and_then(from_hex);
        self.check_parts(record.seq(), stored, |prev| match hashed {
            Some(Hashed {
                prev: assumed,
                hash,
            }) if assumed == *prev => hash,
            _ => hash_record(prev, record, buf),
        });
    }

    /// The next record's `seq` and stored hash, and how to hash it after a
    /// given previous hash.
    fn check_parts(
        &mut self,
        seq: Option<u64>,
        stored: Option<Hash>,
        hash: impl FnOnce(&Hash) -> Hash,
    ) {
        let index = self.index;
        self.index += 1;
        let (Some(seq), Some(stored)) = (seq, stored) else {
            self.breaks.push(Break::Unchained { index });
            return;
        };
        self.records += 1;
        let expected = self.chain.seq + 1;
        if seq < expected {
            self.breaks.push(Break::OutOfOrder {
                seq,
                after: self.chain.seq,
            });
            return;
        }
        if seq > expected {
            self.breaks.push(Break::Deleted {
                from: expected,
                to: seq - 1,
            });
        } else if hash(&self.chain.head) != stored {
            self.breaks.push(Break::Modified { seq });
        }
        // Go on from what is stored, so that one bad record is named alone.
        self.chain.seq = seq;
        self.chain.head = stored;
    }

    /// The chain's head after the records checked so far.
    /// Replaces the break for the missing records before the chain's first
    /// record read (`deleted: 1..first − 1`) by the part of them before
    /// `below` was not purged: `deleted: below..first − 1`, or nothing.
    pub(crate) fn replace_prefix(&mut self, below: u64, first: u64) {
        let prefix = Break::Deleted {
            from: 1,
            to: first - 1,
        };
        if let Some(at) = self.breaks.iter().position(|b| *b == prefix) {
            if below >= first {
                self.breaks.remove(at);
            } else {
                self.breaks[at] = Break::Deleted {
                    from: below,
                    to: first - 1,
                };
            }
        }
    }

    pub(crate) fn head(&self) -> &Chain {
        &self.chain
    }

    /// Records checked, and what was wrong.
    pub(crate) fn finish(self) -> (u64, Vec<Break>) {
        (self.records, self.breaks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chained(n: u64) -> Vec<Map<String, Value>> {
        let mut chain = Chain::new("host-1/file");
        (0..n)
            .map(|i| {
                let mut record = json!({
                    "id": format!("01a2{i:028}"),
                    "action": "invoice.sent",
                    "detail": {"n": i, "big": u64::MAX - i, "f": 0.1 * i as f64, "s": "é\u{0}🦀"},
                })
                .as_object()
                .unwrap()
                .clone();
                chain.link(&mut record);
                record
            })
            .collect()
    }

    fn verify(records: &[Map<String, Value>]) -> (u64, Vec<Break>) {
        let mut verifier = Verifier::new("host-1/file");
        records.iter().for_each(|r| verifier.check(r));
        verifier.finish()
    }

    #[test]
    fn an_untouched_chain_verifies_and_survives_a_json_round_trip() {
        let records = chained(50);
        assert_eq!(verify(&records), (50, vec![]));
        let read_back: Vec<Map<String, Value>> = records
            .iter()
            .map(|r| serde_json::from_str(&serde_json::to_string_pretty(r).unwrap()).unwrap())
            .collect();
        assert_eq!(verify(&read_back), (50, vec![]));
        assert_eq!(records[49]["seq"], 50);
        assert_eq!(records[0]["chain"], "host-1/file");
    }

    #[test]
    fn every_kind_of_tampering_is_named_where_it_happened() {
        let records = chained(10);

        let mut modified = records.clone();
        modified[3]["detail"]["big"] = json!(u64::MAX - 4); // the last digit only
        assert_eq!(verify(&modified).1, vec![Break::Modified { seq: 4 }]);

        let mut deleted = records.clone();
        deleted.drain(4..7);
        assert_eq!(verify(&deleted).1, vec![Break::Deleted { from: 5, to: 7 }]);

        let mut swapped = records.clone();
        swapped.swap(2, 3);
        let breaks = verify(&swapped).1;
        assert!(
            breaks.contains(&Break::Deleted { from: 3, to: 3 }),
            "{breaks:?}"
        );
        assert!(
            breaks.contains(&Break::OutOfOrder { seq: 3, after: 4 }),
            "{breaks:?}"
        );

        let mut inserted = records.clone();
        inserted.insert(5, inserted[2].clone());
        assert_eq!(
            verify(&inserted).1,
            vec![Break::OutOfOrder { seq: 3, after: 5 }]
        );

        let mut rehashed = records.clone();
        // Changing a record and recomputing its hash breaks the next one.
        rehashed[6]["action"] = json!("invoice.voided");
        let prev = from_hex(rehashed[5]["hash"].as_str().unwrap()).unwrap();
        let forged = record_hash(&prev, &rehashed[6]);
        rehashed[6]["hash"] = json!(to_hex(&forged));
        assert_eq!(verify(&rehashed).1, vec![Break::Modified { seq: 8 }]);

        let mut unchained = records;
        unchained[1].remove("hash");
        assert_eq!(
            verify(&unchained).1,
            vec![
                Break::Unchained { index: 1 },
                Break::Deleted { from: 2, to: 2 }
            ]
        );
    }

    #[test]
    fn a_linked_record_verifies_as_its_json_object() {
        let mut linker = Linker::new(Chain::resume("host-1/db", 41, [7; 32]));
        let mut verifier = Verifier::anchored(Chain::resume("host-1/db", 41, [7; 32]));
        for i in 0..5_i64 {
            let mut record = crate::AuditRecord::builder("invoice.sent")
                .detail("n", i)
                .detail("big", u64::MAX)
                .detail("f", 0.1 * i as f64)
                .detail("s", "é\u{0}🦀\u{e000}")
                .build();
            linker.link(&mut record);
            assert_eq!(record.seq(), Some(42 + i as u64));
            assert_eq!(record.chain(), Some("host-1/db"));
            let json = serde_json::to_value(&record).unwrap();
            verifier.check(json.as_object().unwrap());
            let mut hex = [0; 64];
            assert_eq!(
                record.hash(),
                Some(hex_into(linker.chain().head(), &mut hex))
            );
        }
        assert_eq!(verifier.finish(), (5, vec![]));
        assert_eq!(linker.chain().seq(), 46);
    }

    #[test]
    fn hex_round_trips_and_refuses_garbage() {
        let hash = record_hash(&GENESIS, &Map::new());
        assert_eq!(from_hex(&to_hex(&hash)), Some(hash));
        let mut hex = [0; 64];
        assert_eq!(hex_into(&hash, &mut hex), to_hex(&hash));
        for bad in [
            "",
            "00",
            &"g".repeat(64),
            &"é".repeat(32),
            &"0".repeat(65),
            &"A".repeat(64),
        ] {
            assert_eq!(from_hex(bad), None, "{bad}");
        }
    }
}

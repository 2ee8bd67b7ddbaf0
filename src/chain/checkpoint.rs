//! Signed checkpoints of a chain's head, as C2SP signed notes.
//!
//! A checkpoint says "chain C had N records, the last one hashing to H, at
//! time T" and links to the checkpoint before it. It is written as a
//! [signed note](https://github.com/C2SP/C2SP/blob/main/signed-note.md)
//! (the format of Go's checksum database and of transparency logs), so a
//! verifier in another language can check it with an existing library:
//!
//! ```text
//! fabric-audit/api-1/database
//! 1042
//! 3q2+7w…base64 of the head hash…=
//! time 2026-12-01T10:00:00.000000Z
//! prev 9f86d0…base64 of SHA-256 of the previous checkpoint's signature…=
//!
//! — audit.example.com Ab3xY…base64(key hash ‖ Ed25519 signature)…
//! ```
//!
//! Keys are Ed25519, in the signed-note key formats: the signing key
//! `PRIVATE+KEY+<name>+<hash>+<base64(0x01 ‖ seed)>` and the verifier key
//! `<name>+<hash>+<base64(0x01 ‖ public key)>`, where `<hash>` (the key
//! id) is the first four bytes of SHA-256(name ‖ `\n` ‖ 0x01 ‖ public key)
//! in hex. A verifier holds every key that ever signed (rotation keeps old
//! checkpoints verifiable) and picks the one named by the signature line.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signer as _, SigningKey as Ed25519Key, VerifyingKey};
use sha2::{Digest, Sha256};

use super::Hash;
use crate::{AuditRecord, DetailValue, Error, Result};

/// The signature algorithm byte of Ed25519 in signed-note keys.
const ED25519: u8 = 0x01;

/// A chain's head at one moment, linked to the checkpoint before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub(crate) chain: String,
    pub(crate) seq: u64,
    pub(crate) head: Hash,
    pub(crate) time: DateTime<Utc>,
    /// SHA-256 of the previous checkpoint's signature; `None` for a
    /// chain's first.
    pub(crate) prev: Option<Hash>,
}

/// Why a note is not a checkpoint this verifier accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum NoteError {
    /// Not a signed note, or its body is not a checkpoint.
    Malformed(&'static str),
    /// Signed, but by no key the verifier holds.
    UnknownKey(String),
    /// A known key, but the signature does not match the body.
    BadSignature(String),
}

impl fmt::Display for NoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(why) => write!(f, "malformed checkpoint: {why}"),
            Self::UnknownKey(name) => write!(f, "checkpoint signed by an unknown key `{name}`"),
            Self::BadSignature(name) => write!(f, "bad signature by key `{name}`"),
        }
    }
}

impl Checkpoint {
    /// The note's body: five lines, each ending in a newline.
    pub(crate) fn body(&self) -> String {
        let prev = self
            .prev
            .map_or_else(|| "-".to_owned(), |p| BASE64.encode(p));
        format!(
            "fabric-audit/{}\n{}\n{}\ntime {}\nprev {}\n",
            self.chain,
            self.seq,
            BASE64.encode(self.head),
            self.time
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            prev,
        )
    }

    fn parse(body: &str) -> Result<Self, NoteError> {
        let malformed = NoteError::Malformed;
        let mut lines = body
            .strip_suffix('\n')
            .ok_or(malformed("no final newline"))?
            .split('\n');
        let mut next = || lines.next().ok_or(malformed("too few lines"));
        let chain = next()?
            .strip_prefix("fabric-audit/")
            .ok_or(malformed("not a fabric-audit origin"))?
            .to_owned();
        let seq = next()?.parse().map_err(|_| malformed("bad record count"))?;
        let head = decode_hash(next()?).ok_or(malformed("bad head hash"))?;
        let time = next()?
            .strip_prefix("time ")
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .ok_or(malformed("bad time"))?
            .with_timezone(&Utc);
        let prev = match next()?
            .strip_prefix("prev ")
            .ok_or(malformed("no prev line"))?
        {
            "-" => None,
            p => Some(decode_hash(p).ok_or(malformed("bad prev hash"))?),
        };
        Ok(Self {
            chain,
            seq,
            head,
            time,
            prev,
        })
    }
}

fn decode_hash(text: &str) -> Option<Hash> {
    BASE64.decode(text).ok()?.try_into().ok()
}

fn key_hash(name: &str, public: &VerifyingKey) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ED25519]);
    h.update(public.as_bytes());
    let digest = h.finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Whether `name` may name a key: printable, no spaces or `+`.
fn valid_key_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_graphic() && c != '+')
}

/// The key that signs checkpoints: Ed25519, with a name (the signer's,
/// such as a host name) that signature lines carry.
///
/// Kept in a file in the signed-note form
/// `PRIVATE+KEY+<name>+<key id>+<base64>`, which `fabric-audit keygen`
/// writes; [`public_key`](Self::public_key) is what verifiers hold. Its
/// `Debug` never shows the key.
///
/// # Examples
///
/// ```
/// use fabric_audit::checkpoint::{PublicKey, SigningKey};
///
/// let key = SigningKey::generate("audit.example.com")?;
/// let public = key.public_key().to_string();
/// assert_eq!(PublicKey::parse(&public)?, key.public_key());
/// assert!(!format!("{key:?}").contains("PRIVATE"));
/// # Ok::<(), fabric_audit::Error>(())
/// ```
pub struct SigningKey {
    name: String,
    key: Ed25519Key,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("SigningKey")
            .field("name", &self.name)
            .field("id", &self.public_key().id())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new random key named `name`.
    ///
    /// # Errors
    ///
    /// The name is empty or has a space, a `+` or a character that is not
    /// printable ASCII; the system has no randomness.
    pub fn generate(name: &str) -> Result<Self> {
        if !valid_key_name(name) {
            return Err(bad_name(name));
        }
        let mut seed = [0; 32];
        getrandom::fill(&mut seed).map_err(|e| {
            Error::config("no randomness to make a key from").because(e.to_string())
        })?;
        Ok(Self::from_seed(name, seed))
    }

    fn from_seed(name: &str, seed: [u8; 32]) -> Self {
        Self {
            name: name.to_owned(),
            key: Ed25519Key::from_bytes(&seed),
        }
    }

    /// Reads a key in its text form (surrounding white space ignored).
    ///
    /// # Errors
    ///
    /// The text is not an Ed25519 signing key in the signed-note form, or
    /// its key id does not match it. The error never quotes the text.
    pub fn parse(text: &str) -> Result<Self> {
        Self::read(text).ok_or_else(|| {
            Error::config("not a checkpoint signing key (`PRIVATE+KEY+<name>+<id>+<key>`)")
        })
    }

    fn read(text: &str) -> Option<Self> {
        let rest = text.trim().strip_prefix("PRIVATE+KEY+")?;
        let (name, hash, key) = split_key(rest)?;
        let (&kind, seed) = key.split_first()?;
        if kind != ED25519 || !valid_key_name(name) {
            return None;
        }
        let signer = Self::from_seed(name, seed.try_into().ok()?);
        (key_hash(name, &signer.key.verifying_key()) == hash).then_some(signer)
    }

    /// Reads the key file at `path` (as [`parse`](Self::parse)).
    ///
    /// # Errors
    ///
    /// The file cannot be read or holds no key; the message names the
    /// file, never its content.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("cannot read the key file {}", path.display()), e))?;
        Self::parse(&text).map_err(|_| {
            Error::config(format!(
                "{} is not a checkpoint signing key (make one with `fabric-audit keygen`)",
                path.display()
            ))
        })
    }

    /// The key in its text form: a secret, for the key file.
    pub fn to_secret_text(&self) -> String {
        let mut key = vec![ED25519];
        key.extend_from_slice(self.key.as_bytes());
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            key_hash(&self.name, &self.key.verifying_key()),
            BASE64.encode(key)
        )
    }

    /// The public half, for verifiers.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// The checkpoint as a signed note, and SHA-256 of its signature (what
    /// the next checkpoint links to as `prev`).
    pub(crate) fn sign(&self, checkpoint: &Checkpoint) -> (String, Hash) {
        self.sign_body(&checkpoint.body())
    }

    /// Any note body (lines, each ending in a newline) as a signed note.
    fn sign_body(&self, body: &str) -> (String, Hash) {
        let signature = self.key.sign(body.as_bytes());
        let mut blob = key_hash(&self.name, &self.key.verifying_key())
            .to_be_bytes()
            .to_vec();
        let signature = signature.to_bytes();
        blob.extend_from_slice(&signature);
        let note = format!("{body}\n\u{2014} {} {}\n", self.name, BASE64.encode(blob));
        (note, Sha256::digest(signature).into())
    }
}

fn bad_name(name: &str) -> Error {
    Error::config(format!(
        "a key name is printable ASCII without spaces or `+`: {name:?}"
    ))
}

/// A checkpoint verifier's key: the public half of a [`SigningKey`], in
/// the signed-note form `<name>+<key id>+<base64>` (its `Display`).
///
/// Verifiers hold every key that ever signed: after a rotation, the old
/// public key still verifies the old checkpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    name: String,
    key: VerifyingKey,
}

impl PublicKey {
    /// Reads a public key in its text form (surrounding white space
    /// ignored).
    ///
    /// # Errors
    ///
    /// The text is not an Ed25519 key in the signed-note form, or its key
    /// id does not match it.
    pub fn parse(text: &str) -> Result<Self> {
        Self::read(text).ok_or_else(|| {
            Error::invalid("not a checkpoint public key (`<name>+<id>+<key>`)".to_owned())
        })
    }

    fn read(text: &str) -> Option<Self> {
        let (name, hash, key) = split_key(text.trim())?;
        let (&kind, public) = key.split_first()?;
        let key = VerifyingKey::from_bytes(public.try_into().ok()?).ok()?;
        (kind == ED25519 && valid_key_name(name) && key_hash(name, &key) == hash).then(|| Self {
            name: name.to_owned(),
            key,
        })
    }

    /// Reads a file of public keys, one per line (blank lines and lines
    /// starting with `#` skipped).
    ///
    /// # Errors
    ///
    /// The file cannot be read, or a line is not a key (named by number).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Vec<Self>> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("cannot read the key file {}", path.display()), e))?;
        text.lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
            .map(|(n, line)| {
                Self::read(line).ok_or_else(|| {
                    Error::invalid(format!(
                        "{}:{}: not a checkpoint public key (`<name>+<id>+<key>`)",
                        path.display(),
                        n + 1
                    ))
                })
            })
            .collect()
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id: the first four bytes of the key hash, in hex.
    pub fn id(&self) -> String {
        format!("{:08x}", key_hash(&self.name, &self.key))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut key = vec![ED25519];
        key.extend_from_slice(self.key.as_bytes());
        write!(
            f,
            "{}+{:08x}+{}",
            self.name,
            key_hash(&self.name, &self.key),
            BASE64.encode(key)
        )
    }
}

/// `<name>+<8 hex>+<base64>` → its parts.
fn split_key(text: &str) -> Option<(&str, u32, Vec<u8>)> {
    let mut parts = text.splitn(3, '+');
    let (name, hash, key) = (parts.next()?, parts.next()?, parts.next()?);
    if hash.len() != 8 {
        return None;
    }
    Some((
        name,
        u32::from_str_radix(hash, 16).ok()?,
        BASE64.decode(key).ok()?,
    ))
}

/// Checks `note` against `keys`: the checkpoint, and SHA-256 of the
/// signature that the next checkpoint links to. Every signature line by a
/// known key must verify; at least one must be by a known key.
pub(crate) fn open(note: &str, keys: &[PublicKey]) -> Result<(Checkpoint, Hash), NoteError> {
    let (body, link) = open_body(note, keys)?;
    Ok((Checkpoint::parse(body)?, link))
}

/// Checks the signatures of any signed note against `keys`: its body, and
/// SHA-256 of the first good signature.
fn open_body<'a>(note: &'a str, keys: &[PublicKey]) -> Result<(&'a str, Hash), NoteError> {
    let split = note
        .rfind("\n\n")
        .ok_or(NoteError::Malformed("no signature block"))?;
    let (body, signatures) = (&note[..split + 1], &note[split + 2..]);
    let mut link = None;
    let mut unknown = None;
    for line in signatures.lines() {
        let line = line
            .strip_prefix("\u{2014} ")
            .ok_or(NoteError::Malformed("a signature line without the em dash"))?;
        let (name, blob) = line
            .split_once(' ')
            .ok_or(NoteError::Malformed("a signature line without a signature"))?;
        let blob = BASE64
            .decode(blob)
            .map_err(|_| NoteError::Malformed("a signature that is not base64"))?;
        if blob.len() != 68 {
            return Err(NoteError::Malformed(
                "an Ed25519 signature of the wrong length",
            ));
        }
        let hash = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]);
        let Some(key) = keys
            .iter()
            .find(|k| k.name == name && key_hash(&k.name, &k.key) == hash)
        else {
            unknown = Some(name.to_owned());
            continue;
        };
        let signature = ed25519_dalek::Signature::from_slice(&blob[4..])
            .map_err(|_| NoteError::Malformed("an unreadable signature"))?;
        key.key
            .verify_strict(body.as_bytes(), &signature)
            .map_err(|_| NoteError::BadSignature(name.to_owned()))?;
        link.get_or_insert_with(|| Sha256::digest(&blob[4..]).into());
    }
    match (link, unknown) {
        (Some(link), _) => Ok((body, link)),
        (None, Some(name)) => Err(NoteError::UnknownKey(name)),
        (None, None) => Err(NoteError::Malformed("no signature")),
    }
}

/// Reads a note's checkpoint without checking its signatures (a
/// verifier that holds no key still compares it with the chain).
pub(crate) fn read_unchecked(note: &str) -> Result<Checkpoint, NoteError> {
    let split = note
        .rfind("\n\n")
        .ok_or(NoteError::Malformed("no signature block"))?;
    Checkpoint::parse(&note[..split + 1])
}

/// What a checkpoint record states: its detail, read back.
#[derive(Debug)]
pub(crate) struct Stated<'a> {
    /// The `seq` of the record before it, which it anchors.
    pub(crate) head_seq: u64,
    /// That record's hash (`None`: not a hash).
    pub(crate) head: Option<Hash>,
    /// The `seq` by which the chain's next checkpoint is due.
    pub(crate) next_by: Option<u64>,
    /// The first checkpoint of a run that continued a stored chain: a
    /// restart explains a late checkpoint.
    pub(crate) resumed: bool,
    /// Written at shutdown: the run's last record.
    pub(crate) last: bool,
    /// The signed note, when a key signed it.
    pub(crate) note: Option<&'a str>,
}

impl<'a> Stated<'a> {
    /// The statement of a checkpoint record (`None`: its detail is not one).
    pub(crate) fn read(record: &'a AuditRecord) -> Option<Self> {
        let number = |key: &str| match record.detail_value(key)? {
            DetailValue::U64(n) => Some(n),
            DetailValue::I64(n) => u64::try_from(n).ok(),
            _ => None,
        };
        let flag = |key: &str| matches!(record.detail_value(key), Some(DetailValue::Bool(true)));
        let text = |key: &str| match record.detail_value(key)? {
            DetailValue::Str(s) => Some(s),
            _ => None,
        };
        Some(Self {
            head_seq: number("head_seq")?,
            head: text("head").and_then(super::from_hex),
            next_by: number("next_by"),
            resumed: flag("resumed"),
            last: flag("final"),
            note: text("note"),
        })
    }
}

/// When a sink's chain is checkpointed, and by which key: see
/// `AuditLayerBuilder::checkpoints`.
#[derive(Clone, Debug)]
pub(crate) struct Policy {
    /// A checkpoint after this many records at most.
    pub(crate) every_records: u64,
    /// And at least this often while records come.
    pub(crate) every: Duration,
    /// Signs each checkpoint; unsigned without.
    pub(crate) key: Option<Arc<SigningKey>>,
}

/// A checkpoint record of `chain`'s head, to be linked next: signed when
/// the policy has a key, with `prev` the link of the run's checkpoint
/// before it (updated to this one's).
pub(crate) fn record(
    chain: &super::Chain,
    policy: &Policy,
    due_within: u64,
    why: Why,
    link: &mut Option<Hash>,
) -> AuditRecord {
    let now = Utc::now();
    // The checkpoint's own seq is the head's + 1; the next one comes after
    // at most `due_within` more records.
    let next_by = chain.seq().saturating_add(1).saturating_add(due_within);
    let mut builder = AuditRecord::builder(crate::verify::CHECKPOINT_ACTION)
        .timestamp(now)
        .detail("head_seq", chain.seq())
        .detail("head", super::to_hex(chain.head()))
        .detail("next_by", next_by);
    if why.resumed {
        builder = builder.detail("resumed", true);
    }
    if why.last {
        builder = builder.detail("final", true);
    }
    if let Some(key) = &policy.key {
        let (note, signed) = key.sign(&Checkpoint {
            chain: chain.id().to_owned(),
            seq: chain.seq(),
            head: *chain.head(),
            time: now,
            prev: *link,
        });
        *link = Some(signed);
        builder = builder.detail("note", note);
    }
    builder.build()
}

/// What a retention purge removed from a chain: its records before
/// `below_seq`, whose last one hashed to `head` (as the checkpoint record
/// at `below_seq` states), because they were older than `cutoff`. Signed
/// as a note of its own:
///
/// ```text
/// fabric-audit-purge/<chain>
/// <below_seq>
/// <head, base64>
/// time <when>
/// cutoff <records before this had expired>
/// records <how many>
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PurgeStatement {
    pub(crate) chain: String,
    pub(crate) below_seq: u64,
    pub(crate) head: Hash,
    pub(crate) time: DateTime<Utc>,
    pub(crate) cutoff: DateTime<Utc>,
    pub(crate) records: u64,
}

impl PurgeStatement {
    fn body(&self) -> String {
        let at = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        format!(
            "fabric-audit-purge/{}\n{}\n{}\ntime {}\ncutoff {}\nrecords {}\n",
            self.chain,
            self.below_seq,
            BASE64.encode(self.head),
            at(&self.time),
            at(&self.cutoff),
            self.records
        )
    }

    /// The statement as a signed note.
    pub(crate) fn sign(&self, key: &SigningKey) -> String {
        key.sign_body(&self.body()).0
    }

    /// Whether `note` is this statement, signed by one of `keys`.
    pub(crate) fn check(&self, note: &str, keys: &[PublicKey]) -> Result<(), NoteError> {
        let (body, _) = open_body(note, keys)?;
        // The note's time and cutoff are kept to the microsecond, as the
        // table keeps them.
        if body == self.body() {
            Ok(())
        } else {
            Err(NoteError::Malformed("the note states another purge"))
        }
    }
}

/// A purge statement as a line of a file sink's `<prefix>.purges` file:
/// the file sink's counterpart of a row of `audit_purges`.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StatementLine {
    chain: String,
    below_seq: u64,
    /// 64 hex digits.
    head: String,
    /// RFC 3339, to the microsecond (what the note states).
    time: String,
    cutoff: String,
    records: u64,
    note: Option<String>,
}

impl PurgeStatement {
    /// The statement, with its signed note if any, as one JSON line
    /// (without the newline).
    pub(crate) fn to_json_line(&self, note: Option<&str>) -> Vec<u8> {
        let at = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let line = StatementLine {
            chain: self.chain.clone(),
            below_seq: self.below_seq,
            head: super::to_hex(&self.head),
            time: at(&self.time),
            cutoff: at(&self.cutoff),
            records: self.records,
            note: note.map(str::to_owned),
        };
        // Strings and integers only: serializing cannot fail.
        serde_json::to_vec(&line).unwrap_or_default()
    }

    /// A statement and its note read from a line `to_json_line` wrote.
    pub(crate) fn from_json_line(line: &[u8]) -> Result<(Self, Option<String>), String> {
        let line: StatementLine = serde_json::from_slice(line).map_err(|e| e.to_string())?;
        let at = |what: &str, text: &str| {
            DateTime::parse_from_rfc3339(text)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| format!("`{what}`: {e}"))
        };
        let statement = Self {
            head: super::from_hex(&line.head).ok_or("`head` is not 64 lower-case hex digits")?,
            time: at("time", &line.time)?,
            cutoff: at("cutoff", &line.cutoff)?,
            chain: line.chain,
            below_seq: line.below_seq,
            records: line.records,
        };
        Ok((statement, line.note))
    }
}

/// Why a checkpoint is written, beyond its period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Why {
    /// The first of a run that continued a stored chain.
    pub(crate) resumed: bool,
    /// At shutdown: the run's last record.
    pub(crate) last: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            chain: "api-1/database".into(),
            seq: 1042,
            head: [7; 32],
            time: DateTime::parse_from_rfc3339("2026-12-01T10:00:00.123456Z")
                .unwrap()
                .with_timezone(&Utc),
            prev: Some([9; 32]),
        }
    }

    #[test]
    fn a_signed_checkpoint_opens_with_its_key_and_reads_back_the_same() {
        let signer = SigningKey::generate("audit.example.com").unwrap();
        let (note, signed_link) = signer.sign(&checkpoint());
        let (read, link) = open(&note, &[signer.public_key()]).unwrap();
        assert_eq!(read, checkpoint());
        assert_eq!(link, signed_link);
        // The key texts round-trip; the verifier text holds no secret.
        let again = SigningKey::parse(&signer.to_secret_text()).unwrap();
        assert_eq!(again.public_key(), signer.public_key());
        let public = signer.public_key().to_string();
        assert_eq!(PublicKey::parse(&public).unwrap(), signer.public_key());
        assert!(!public.contains(&signer.to_secret_text()[12..]));
        assert!(!format!("{signer:?}").contains("PRIVATE"));
    }

    #[test]
    fn a_changed_body_a_wrong_key_or_a_rotated_key_are_told_apart() {
        let old = SigningKey::generate("audit.example.com").unwrap();
        let new = SigningKey::generate("audit.example.com").unwrap();
        let (note, _) = old.sign(&checkpoint());

        let forged = note.replacen("\n1042\n", "\n1041\n", 1);
        assert_eq!(
            open(&forged, &[old.public_key()]),
            Err(NoteError::BadSignature("audit.example.com".into()))
        );
        assert_eq!(
            open(&note, &[new.public_key()]),
            Err(NoteError::UnknownKey("audit.example.com".into()))
        );
        // After a rotation the verifier holds both keys: old notes still open.
        assert!(open(&note, &[new.public_key(), old.public_key()]).is_ok());
        assert!(open(
            &new.sign(&checkpoint()).0,
            &[new.public_key(), old.public_key()]
        )
        .is_ok());
    }

    #[test]
    fn hostile_notes_and_keys_are_refused_without_panicking() {
        let signer = SigningKey::generate("k").unwrap();
        let (good, _) = signer.sign(&checkpoint());
        let keys = [signer.public_key()];
        for bad in [
            String::new(),
            "\n\n".into(),
            good.replace('\u{2014}', "-"),
            good.replace("fabric-audit/", "other/"),
            good.replace("\n1042\n", "\n-1\n"),
            good.replace("\n1042\n", "\n99999999999999999999999\n"),
            good.replace("time 2026", "time 1e9"),
            format!("{good}\u{2014} k AAAA\n"),
            good.replacen("\n\n", "\n\0\n\n", 1),
            "x".repeat(1 << 20),
        ] {
            assert!(open(&bad, &keys).is_err(), "{bad:?}");
        }
        for bad in [
            "",
            "PRIVATE+KEY+",
            "PRIVATE+KEY+a b+00000000+AQ==",
            "k+zz+AQ==",
            &"+".repeat(3),
        ] {
            assert!(SigningKey::parse(bad).is_err(), "{bad}");
            assert!(PublicKey::parse(bad).is_err(), "{bad}");
        }
        // A key whose hash does not match its name is refused.
        let text = signer.public_key().to_string().replacen("k+", "j+", 1);
        assert!(PublicKey::parse(&text).is_err());
        assert!(SigningKey::generate("has space").is_err());
        assert!(SigningKey::generate("").is_err());
    }

    #[test]
    fn the_first_checkpoint_has_no_link_and_says_so() {
        let signer = SigningKey::generate("k").unwrap();
        let first = Checkpoint {
            prev: None,
            ..checkpoint()
        };
        let (note, _) = signer.sign(&first);
        assert!(note.contains("\nprev -\n"));
        assert_eq!(open(&note, &[signer.public_key()]).unwrap().0, first);
    }
}

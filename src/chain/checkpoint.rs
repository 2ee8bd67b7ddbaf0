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

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use super::Hash;

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

/// An Ed25519 signing key with its name.
pub(crate) struct Signer {
    name: String,
    key: SigningKey,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("Signer")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A new random key named `name` (`None` if the name cannot name a
    /// key, or the system has no randomness).
    pub(crate) fn generate(name: &str) -> Option<Self> {
        let mut seed = [0; 32];
        getrandom::fill(&mut seed).ok()?;
        Self::from_seed(name, seed)
    }

    fn from_seed(name: &str, seed: [u8; 32]) -> Option<Self> {
        valid_key_name(name).then(|| Self {
            name: name.to_owned(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Reads `PRIVATE+KEY+<name>+<hash>+<base64>`.
    pub(crate) fn from_text(text: &str) -> Option<Self> {
        let rest = text.trim().strip_prefix("PRIVATE+KEY+")?;
        let (name, hash, key) = split_key(rest)?;
        let (&kind, seed) = key.split_first()?;
        let signer = Self::from_seed(name, seed.try_into().ok()?)?;
        (kind == ED25519 && key_hash(name, &signer.key.verifying_key()) == hash).then_some(signer)
    }

    /// The key in signed-note form: a secret.
    pub(crate) fn to_text(&self) -> String {
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
    pub(crate) fn verifier(&self) -> Verifier {
        Verifier {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// The checkpoint as a signed note.
    pub(crate) fn sign(&self, checkpoint: &Checkpoint) -> String {
        let body = checkpoint.body();
        let signature = self.key.sign(body.as_bytes());
        let mut blob = key_hash(&self.name, &self.key.verifying_key())
            .to_be_bytes()
            .to_vec();
        blob.extend_from_slice(&signature.to_bytes());
        format!("{body}\n\u{2014} {} {}\n", self.name, BASE64.encode(blob))
    }
}

/// An Ed25519 verifier key with its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Verifier {
    name: String,
    key: VerifyingKey,
}

impl Verifier {
    /// Reads `<name>+<hash>+<base64>`.
    pub(crate) fn from_text(text: &str) -> Option<Self> {
        let (name, hash, key) = split_key(text.trim())?;
        let (&kind, public) = key.split_first()?;
        let key = VerifyingKey::from_bytes(public.try_into().ok()?).ok()?;
        (kind == ED25519 && valid_key_name(name) && key_hash(name, &key) == hash).then(|| Self {
            name: name.to_owned(),
            key,
        })
    }

    pub(crate) fn to_text(&self) -> String {
        let mut key = vec![ED25519];
        key.extend_from_slice(self.key.as_bytes());
        format!(
            "{}+{:08x}+{}",
            self.name,
            key_hash(&self.name, &self.key),
            BASE64.encode(key)
        )
    }

    /// The key id: the first four bytes of the key hash, in hex.
    pub(crate) fn id(&self) -> String {
        format!("{:08x}", key_hash(&self.name, &self.key))
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
pub(crate) fn open(note: &str, keys: &[Verifier]) -> Result<(Checkpoint, Hash), NoteError> {
    let split = note
        .rfind("\n\n")
        .ok_or(NoteError::Malformed("no signature block"))?;
    let (body, signatures) = (&note[..split + 1], &note[split + 2..]);
    let checkpoint = Checkpoint::parse(body)?;
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
        (Some(link), _) => Ok((checkpoint, link)),
        (None, Some(name)) => Err(NoteError::UnknownKey(name)),
        (None, None) => Err(NoteError::Malformed("no signature")),
    }
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
        let signer = Signer::generate("audit.example.com").unwrap();
        let note = signer.sign(&checkpoint());
        let (read, link) = open(&note, &[signer.verifier()]).unwrap();
        assert_eq!(read, checkpoint());
        assert_ne!(link, [0; 32]);
        // The key texts round-trip; the verifier text holds no secret.
        let again = Signer::from_text(&signer.to_text()).unwrap();
        assert_eq!(again.verifier(), signer.verifier());
        let public = signer.verifier().to_text();
        assert_eq!(Verifier::from_text(&public), Some(signer.verifier()));
        assert!(!public.contains(&signer.to_text()[12..]));
        assert!(!format!("{signer:?}").contains("PRIVATE"));
    }

    #[test]
    fn a_changed_body_a_wrong_key_or_a_rotated_key_are_told_apart() {
        let old = Signer::generate("audit.example.com").unwrap();
        let new = Signer::generate("audit.example.com").unwrap();
        let note = old.sign(&checkpoint());

        let forged = note.replacen("\n1042\n", "\n1041\n", 1);
        assert_eq!(
            open(&forged, &[old.verifier()]),
            Err(NoteError::BadSignature("audit.example.com".into()))
        );
        assert_eq!(
            open(&note, &[new.verifier()]),
            Err(NoteError::UnknownKey("audit.example.com".into()))
        );
        // After a rotation the verifier holds both keys: old notes still open.
        assert!(open(&note, &[new.verifier(), old.verifier()]).is_ok());
        assert!(open(&new.sign(&checkpoint()), &[new.verifier(), old.verifier()]).is_ok());
    }

    #[test]
    fn hostile_notes_and_keys_are_refused_without_panicking() {
        let signer = Signer::generate("k").unwrap();
        let good = signer.sign(&checkpoint());
        let keys = [signer.verifier()];
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
            assert!(Signer::from_text(bad).is_none(), "{bad}");
            assert!(Verifier::from_text(bad).is_none(), "{bad}");
        }
        // A key whose hash does not match its name is refused.
        let text = signer.verifier().to_text().replacen("k+", "j+", 1);
        assert!(Verifier::from_text(&text).is_none());
        assert!(Signer::generate("has space").is_none());
        assert!(Signer::generate("").is_none());
    }

    #[test]
    fn the_first_checkpoint_has_no_link_and_says_so() {
        let signer = Signer::generate("k").unwrap();
        let first = Checkpoint {
            prev: None,
            ..checkpoint()
        };
        let note = signer.sign(&first);
        assert!(note.contains("\nprev -\n"));
        assert_eq!(open(&note, &[signer.verifier()]).unwrap().0, first);
    }
}

//! The audit record: who did what to which resource, when, from where.
//!
//! A record is made on the emitting thread, so its layout is chosen for a
//! cheap build: every string lives in one buffer and fields are ranges into
//! it, which costs one allocation instead of one per field. Readers see plain
//! accessors; sinks see the same JSON object everywhere (file, database, API).

pub(crate) mod builder;
mod canonical;
pub(crate) mod fields;
pub(crate) mod json;
pub(crate) mod json_line;
pub(crate) mod time;
#[cfg(all(db, feature = "http"))]
pub(crate) mod written;

use std::fmt;

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use self::builder::RecordBuilder;
pub(crate) use self::fields::Field;

/// One audit record, as written to every sink.
///
/// Records are made by [`AuditLayer`](crate::AuditLayer) from `audit!`
/// events, by [`AuditRecord::builder`], or by deserializing the JSON object
/// of [the record format](crate#the-record). Serializing gives that object:
///
/// ```text
/// {"id":"…","timestamp":"2026-11-27T10:00:00.000000Z","action":"post.created",
///  "actor_id":"u1","actor_type":"user","actor_email":null,"actor_name":null,
///  "actor_flags":[],"resource_type":"post","resource_id":"42",
///  "detail":{"title":"hello"},"request_id":null,"client_ip":null,"user_agent":null,
///  "chain":null,"seq":null,"hash":null}
/// ```
///
/// # Examples
///
/// ```
/// use fabric_audit::AuditRecord;
///
/// let record = AuditRecord::builder("post.created")
///     .actor_id("u1")
///     .resource("post", "42")
///     .detail("words", 120)
///     .build();
/// let json = serde_json::to_value(&record).unwrap();
/// assert_eq!(json["action"], "post.created");
/// assert_eq!(json["detail"]["words"], 120);
/// let back: AuditRecord = serde_json::from_value(json).unwrap();
/// assert_eq!(back, record);
/// ```
#[derive(Clone)]
pub struct AuditRecord {
    id: Uuid,
    /// Microseconds since the Unix epoch, UTC.
    micros: i64,
    text: String,
    text_fields: [TextRange; Field::COUNT],
    flags: Vec<TextRange>,
    detail: Vec<(TextRange, Value)>,
    /// The record's place in its chain (with the `chain` and `hash` text
    /// fields); `None` in a record not stored in a chain.
    seq: Option<u64>,
    /// Bytes of text the record may hold before values are cut (see
    /// `AuditLayerBuilder::max_record_bytes`).
    limit: u32,
}

/// The names of event and span fields that hold the actor's flags.
pub(crate) fn is_flags_name(name: &str) -> bool {
    matches!(name, "actor.flags" | "actor_flags")
}

/// A range of [`AuditRecord::text`]; `NONE` marks an absent value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TextRange {
    start: u32,
    end: u32,
}

impl TextRange {
    pub(crate) const NONE: TextRange = TextRange {
        start: u32::MAX,
        end: u32::MAX,
    };

    fn is_none(self) -> bool {
        self.start == u32::MAX
    }
}

/// A typed detail value, stored compactly.
#[derive(Clone, Debug)]
pub(crate) enum Value {
    Str(TextRange),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
    /// Nested JSON (`null`, arrays, objects) read back from storage.
    Json(Box<serde_json::Value>),
}

/// A detail value of a record, borrowed from it.
///
/// Numbers stay numbers and booleans stay booleans; values recorded with
/// `%` or `?` in `audit!` are strings.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum DetailValue<'a> {
    /// A string.
    Str(&'a str),
    /// A signed integer.
    I64(i64),
    /// An unsigned integer.
    U64(u64),
    /// A floating-point number.
    F64(f64),
    /// A boolean.
    Bool(bool),
    /// Any other JSON value (found only in records read back from storage).
    Json(&'a serde_json::Value),
}

impl DetailValue<'_> {
    /// The value as JSON.
    pub fn to_json(self) -> serde_json::Value {
        match self {
            DetailValue::Str(s) => serde_json::Value::from(s),
            DetailValue::I64(n) => serde_json::Value::from(n),
            DetailValue::U64(n) => serde_json::Value::from(n),
            DetailValue::F64(n) => serde_json::Value::from(n),
            DetailValue::Bool(b) => serde_json::Value::from(b),
            DetailValue::Json(v) => v.clone(),
        }
    }
}

impl AuditRecord {
    /// Starts a record for `action`, with a fresh UUID v7 id and the current
    /// time; see [`RecordBuilder`].
    pub fn builder(action: impl AsRef<str>) -> RecordBuilder {
        RecordBuilder::new(action.as_ref())
    }

    /// The record's id: a UUID v7, ordered by time.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// When the event was emitted, in UTC with microsecond precision.
    pub fn timestamp(&self) -> DateTime<Utc> {
        time::datetime(self.micros)
    }

    /// What happened, as a dotted name: `post.created`.
    pub fn action(&self) -> &str {
        self.get(Field::Action).unwrap_or_default()
    }

    /// Microseconds since the Unix epoch.
    #[cfg(db)]
    pub(crate) fn timestamp_micros(&self) -> i64 {
        self.micros
    }

    /// The record's place in its [chain](Self::chain): 1 for the chain's
    /// first record, each next one 1 more. Absent in a record not yet
    /// stored in a chain.
    pub fn seq(&self) -> Option<u64> {
        self.seq
    }

    /// The actor's flags (roles, markers such as `impersonated`).
    pub fn actor_flags(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.flags.iter().map(|&range| self.str(range))
    }

    /// Every other field of the event, in the order it was given.
    pub fn detail(&self) -> impl ExactSizeIterator<Item = (&str, DetailValue<'_>)> + '_ {
        self.detail
            .iter()
            .map(|(key, value)| (self.str(*key), self.value(value)))
    }

    /// Bytes of text the record holds, in all its fields.
    #[cfg(db)]
    pub(crate) fn text_len(&self) -> usize {
        self.text.len()
    }

    /// The detail field named `key`.
    pub fn detail_value(&self, key: &str) -> Option<DetailValue<'_>> {
        self.detail().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Heap bytes the record holds on to: what keeping it for reuse costs.
    pub(crate) fn retained_bytes(&self) -> usize {
        self.text.capacity()
            + self.flags.capacity() * std::mem::size_of::<TextRange>()
            + self.detail.capacity() * std::mem::size_of::<(TextRange, Value)>()
    }

    pub(crate) fn get(&self, field: Field) -> Option<&str> {
        let range = self.text_fields[field as usize];
        (!range.is_none()).then(|| self.str(range))
    }

    fn str(&self, range: TextRange) -> &str {
        &self.text[range.start as usize..range.end as usize]
    }

    fn value<'a>(&'a self, value: &'a Value) -> DetailValue<'a> {
        match value {
            Value::Str(range) => DetailValue::Str(self.str(*range)),
            Value::I64(n) => DetailValue::I64(*n),
            Value::U64(n) => DetailValue::U64(*n),
            Value::F64(n) => DetailValue::F64(*n),
            Value::Bool(b) => DetailValue::Bool(*b),
            Value::Json(v) => DetailValue::Json(v),
        }
    }
}

impl PartialEq for AuditRecord {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.micros == other.micros
            && (0..Field::COUNT).all(|i| {
                let (a, b) = (self.text_fields[i], other.text_fields[i]);
                a.is_none() == b.is_none() && (a.is_none() || self.str(a) == other.str(b))
            })
            && self.actor_flags().eq(other.actor_flags())
            && self.detail().eq(other.detail())
            && self.seq == other.seq
    }
}

impl fmt::Debug for AuditRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditRecord")
            .field("id", &self.id)
            .field("timestamp", &self.timestamp())
            .field("action", &self.action())
            .field("actor_id", &self.actor_id())
            .field("actor_type", &self.actor_type())
            .field("actor_flags", &self.actor_flags().collect::<Vec<_>>())
            .field("resource_type", &self.resource_type())
            .field("resource_id", &self.resource_id())
            .field("detail", &self.detail().collect::<Vec<_>>())
            .field("request_id", &self.request_id())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_map_both_spellings() {
        let cases = [
            ("actor.id", Some(Field::ActorId)),
            ("actor_id", Some(Field::ActorId)),
            ("resource.type", Some(Field::ResourceType)),
            ("request_id", Some(Field::RequestId)),
            ("user_agent", Some(Field::UserAgent)),
            ("title", None),
            ("actor", None),
            ("actor.flags", None),
        ];
        for (name, want) in cases {
            assert_eq!(Field::from_name(name), want, "{name}");
        }
    }

    #[test]
    fn integers_are_written_as_decimal_text() {
        let cases: [(u64, bool, &str); 5] = [
            (0, false, "0"),
            (7, false, "7"),
            (1, true, "-1"),
            (i64::MIN.unsigned_abs(), true, "-9223372036854775808"),
            (u64::MAX, false, "18446744073709551615"),
        ];
        for (magnitude, negative, want) in cases {
            let mut record = AuditRecord::empty();
            record.set_int(Field::ResourceId, magnitude, negative);
            assert_eq!(record.resource_id(), Some(want));
        }
    }

    #[test]
    fn accessors_read_what_the_builder_wrote() {
        let r = AuditRecord::builder("post.deleted")
            .actor_id("u1")
            .actor_type("user")
            .actor_flags(["admin", "ops"])
            .resource("post", "7")
            .detail("n", -3)
            .detail("ok", true)
            .detail("title", "hé")
            .request_id("r-1")
            .build();
        assert_eq!(r.action(), "post.deleted");
        assert_eq!(r.actor_id(), Some("u1"));
        assert_eq!(r.actor_email(), None);
        assert_eq!(r.actor_flags().collect::<Vec<_>>(), ["admin", "ops"]);
        assert_eq!(r.resource_id(), Some("7"));
        assert_eq!(r.detail_value("n"), Some(DetailValue::I64(-3)));
        assert_eq!(r.detail_value("ok"), Some(DetailValue::Bool(true)));
        assert_eq!(r.detail_value("title"), Some(DetailValue::Str("hé")));
        assert_eq!(r.request_id(), Some("r-1"));
        assert_eq!(r.client_ip(), None);
    }
}

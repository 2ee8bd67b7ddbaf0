//! Building records: the public builder, and the in-place setters the layer
//! uses on the emitting thread.

use std::fmt::{self, Write as _};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{time, AuditRecord, Field, TextRange, Value};

/// Room for a typical record's strings, so that most records are built
/// without growing the buffer.
const TEXT_CAPACITY: usize = 256;

/// Room for a typical record's detail fields.
const DETAIL_CAPACITY: usize = 8;

/// The most text a record can hold at all: its ranges are `u32`.
const MAX_TEXT: usize = u32::MAX as usize - 1;

/// Every value keeps at least this many bytes when the record's budget is
/// spent, so that a huge value early in the event does not blank out the
/// request id or the resource after it.
pub(crate) const MIN_KEPT_BYTES: usize = 256;

/// The detail key prefix of the marker left by a cut value; the marker's
/// value is the original length in bytes.
pub(crate) const TRUNCATED_PREFIX: &str = "fabric_audit.truncated.";

/// What a value is, to name it in the marker when it is cut.
#[derive(Clone, Copy, Debug)]
enum Part {
    Field(Field),
    Flag,
    DetailKey,
    /// A detail value; its key is at this range.
    Detail(TextRange),
}

/// Builds an [`AuditRecord`] by hand: for tests of your own sinks, imports
/// and tools. Events emitted with `audit!` do not need it.
///
/// Made by [`AuditRecord::builder`], which sets the action, a fresh UUID v7
/// id and the current time. Every setter replaces an earlier value.
///
/// # Examples
///
/// ```
/// use fabric_audit::{AuditRecord, DetailValue};
///
/// let record = AuditRecord::builder("user.deactivated")
///     .actor_id("admin-1")
///     .actor_flags(["admin"])
///     .resource("user", "u-9")
///     .detail("reason", "abuse")
///     .build();
/// assert_eq!(record.resource_id(), Some("u-9"));
/// assert_eq!(record.detail_value("reason"), Some(DetailValue::Str("abuse")));
/// ```
#[derive(Debug)]
#[must_use]
pub struct RecordBuilder {
    record: AuditRecord,
}

impl RecordBuilder {
    pub(crate) fn new(action: &str) -> Self {
        let mut record = AuditRecord::empty();
        record.stamp_now();
        record.set(Field::Action, action);
        Self { record }
    }

    /// Sets the id (for records read back from storage).
    pub fn id(mut self, id: Uuid) -> Self {
        self.record.id = id;
        self
    }

    /// Sets the timestamp; it is kept to the microsecond.
    pub fn timestamp(mut self, timestamp: DateTime<Utc>) -> Self {
        self.record.micros = timestamp.timestamp_micros();
        self
    }

    /// Sets the actor's flags.
    pub fn actor_flags<I>(mut self, flags: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.record.flags.clear();
        for flag in flags {
            self.record.push_flag(flag.as_ref());
        }
        self
    }

    /// Sets the resource's type and id.
    pub fn resource(self, kind: impl AsRef<str>, id: impl AsRef<str>) -> Self {
        self.with(Field::ResourceType, kind.as_ref())
            .with(Field::ResourceId, id.as_ref())
    }

    /// Adds a detail field; numbers and booleans keep their type.
    pub fn detail(mut self, key: impl AsRef<str>, value: impl Into<serde_json::Value>) -> Self {
        let key = key.as_ref();
        let record = &mut self.record;
        record
            .detail
            .retain(|(k, _)| &record.text[k.start as usize..k.end as usize] != key);
        record.push_json(key, value.into());
        self
    }

    /// Finishes the record.
    pub fn build(self) -> AuditRecord {
        self.record
    }

    pub(super) fn with(mut self, field: Field, value: &str) -> Self {
        self.record.set(field, value);
        self
    }

    #[cfg(test)]
    pub(crate) fn record_mut(&mut self) -> &mut AuditRecord {
        &mut self.record
    }
}

/// A record's values as a reader found them (a JSON object, a row), before
/// they are put into the record's buffer. `S` is its text (borrowed from
/// the input where it can be), `D` a detail value.
#[derive(Debug)]
pub(crate) struct Parts<S, D = serde_json::Value> {
    pub(crate) id: Uuid,
    /// Microseconds since the Unix epoch, UTC.
    pub(crate) micros: i64,
    /// The text fields, by [`Field`] position.
    pub(crate) texts: [Option<S>; Field::COUNT],
    pub(crate) flags: Vec<S>,
    pub(crate) detail: Vec<(S, D)>,
    pub(crate) seq: Option<u64>,
}

/// A detail value as a reader found it.
pub(crate) trait GivenValue {
    /// Adds it to `record`'s detail under `key`.
    fn push_into(self, key: &str, record: &mut AuditRecord);
}

impl GivenValue for serde_json::Value {
    fn push_into(self, key: &str, record: &mut AuditRecord) {
        record.push_json(key, self);
    }
}

/// A detail value read from JSON without a `serde_json::Value` for the
/// usual scalar: the same detail [`AuditRecord::push_json`] makes of it.
#[derive(Debug)]
pub(crate) enum Given<S> {
    Str(S),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
    /// `null`, an array or an object.
    Json(serde_json::Value),
}

impl<S: AsRef<str>> GivenValue for Given<S> {
    fn push_into(self, key: &str, record: &mut AuditRecord) {
        let value = match self {
            Given::Str(text) => return record.push_detail_str(key, text.as_ref()),
            Given::I64(n) => Value::I64(n),
            Given::U64(n) => Value::U64(n),
            Given::F64(n) => Value::F64(n),
            Given::Bool(b) => Value::Bool(b),
            Given::Json(json) => return record.push_json(key, json),
        };
        record.push_detail(key, value);
    }
}

impl<S: AsRef<str>, D: GivenValue> Parts<S, D> {
    /// The record these values make: the one way a record read back from
    /// JSON or from a row is built.
    pub(crate) fn into_record(self) -> AuditRecord {
        let mut record = AuditRecord::empty();
        record.id = self.id;
        record.micros = self.micros;
        record.seq = self.seq;
        for (field, value) in Field::ALL.into_iter().zip(&self.texts) {
            if let Some(value) = value {
                record.set(field, value.as_ref());
            }
        }
        for flag in &self.flags {
            record.push_flag(flag.as_ref());
        }
        for (key, value) in self.detail {
            value.push_into(key.as_ref(), &mut record);
        }
        record
    }
}

/// In-place setters: the layer fills a (possibly reused) record directly.
impl AuditRecord {
    pub(crate) fn empty() -> Self {
        Self {
            id: Uuid::nil(),
            micros: 0,
            text: String::with_capacity(TEXT_CAPACITY),
            text_fields: [TextRange::NONE; Field::COUNT],
            flags: Vec::new(),
            detail: Vec::with_capacity(DETAIL_CAPACITY),
            seq: None,
            limit: MAX_TEXT as u32,
        }
    }

    /// Empties the record, keeping its buffers, stamps it with the current
    /// time and a UUID v7 of that time, and sets its size budget: past
    /// `max_text_bytes` of text, values are cut (see [`MIN_KEPT_BYTES`]).
    pub(crate) fn reset_now(&mut self, max_text_bytes: usize) {
        self.text.clear();
        self.text_fields = [TextRange::NONE; Field::COUNT];
        self.flags.clear();
        self.detail.clear();
        self.seq = None;
        self.limit = max_text_bytes.min(MAX_TEXT) as u32;
        self.stamp_now();
    }

    fn stamp_now(&mut self) {
        (self.micros, self.id) = time::now();
    }

    pub(crate) fn has(&self, field: Field) -> bool {
        !self.text_fields[field as usize].is_none()
    }

    pub(crate) fn has_flags(&self) -> bool {
        !self.flags.is_empty()
    }

    pub(crate) fn action_is_empty(&self) -> bool {
        self.get(Field::Action).is_none_or(str::is_empty)
    }

    pub(crate) fn set(&mut self, field: Field, value: &str) {
        self.text_fields[field as usize] = self.push_str(value, Part::Field(field));
    }

    /// Places the record in a hash chain: its `chain`, `seq` and `hash`.
    /// (Values of up to `MIN_KEPT_BYTES` are never cut.)
    pub(crate) fn set_link(&mut self, chain: &str, seq: u64, hash: &str) {
        self.set(Field::Chain, chain);
        self.set_hash(hash);
        self.seq = Some(seq);
    }

    pub(crate) fn set_hash(&mut self, hash: &str) {
        self.set(Field::Hash, hash);
    }

    pub(crate) fn set_debug(&mut self, field: Field, value: &dyn fmt::Debug) {
        self.text_fields[field as usize] = self.push_debug(value, Part::Field(field));
    }

    pub(crate) fn set_display(&mut self, field: Field, value: &dyn fmt::Display) {
        let start = self.text.len();
        let _ = write!(self.text, "{value}");
        self.text_fields[field as usize] = self.finish(start, Part::Field(field));
    }

    /// Sets a field to an integer's decimal text (ids are often integers):
    /// without the formatting machinery, which costs more than the rest of
    /// the field.
    pub(crate) fn set_int(&mut self, field: Field, magnitude: u64, negative: bool) {
        let mut digits = [0u8; 21];
        let text = decimal(magnitude, negative, &mut digits);
        self.set(field, text);
    }

    pub(crate) fn push_flag(&mut self, flag: &str) {
        let range = self.push_str(flag, Part::Flag);
        self.flags.push(range);
    }

    pub(crate) fn push_detail_str(&mut self, key: &str, value: &str) {
        let key = self.push_str(key, Part::DetailKey);
        let value = self.push_str(value, Part::Detail(key));
        self.detail.push((key, Value::Str(value)));
    }

    pub(crate) fn push_detail_debug(&mut self, key: &str, value: &dyn fmt::Debug) {
        let key = self.push_str(key, Part::DetailKey);
        let value = self.push_debug(value, Part::Detail(key));
        self.detail.push((key, Value::Str(value)));
    }

    pub(crate) fn push_detail(&mut self, key: &str, value: Value) {
        let key = self.push_str(key, Part::DetailKey);
        self.detail.push((key, value));
    }

    pub(crate) fn push_json(&mut self, key: &str, value: serde_json::Value) {
        let value = match value {
            serde_json::Value::String(s) => {
                let key = self.push_str(key, Part::DetailKey);
                let value = self.push_str(&s, Part::Detail(key));
                self.detail.push((key, Value::Str(value)));
                return;
            }
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => Value::I64(i),
                (None, Some(u), _) => Value::U64(u),
                (None, None, Some(f)) => Value::F64(f),
                _ => Value::Json(Box::new(serde_json::Value::Number(n))),
            },
            other => Value::Json(Box::new(other)),
        };
        self.push_detail(key, value);
    }

    fn push_str(&mut self, value: &str, part: Part) -> TextRange {
        let start = self.text.len();
        self.text.push_str(value);
        self.finish(start, part)
    }

    fn push_debug(&mut self, value: &dyn fmt::Debug, part: Part) -> TextRange {
        let start = self.text.len();
        let _ = write!(self.text, "{value:?}");
        self.finish(start, part)
    }

    /// The range written since `start`, cut to the record's budget: a value
    /// may take what is left of it, and at least [`MIN_KEPT_BYTES`]. A cut
    /// value leaves a marker in `detail` with its original length.
    fn finish(&mut self, start: usize, part: Part) -> TextRange {
        let allowed = (self.limit as usize)
            .saturating_sub(start)
            .max(MIN_KEPT_BYTES)
            .min(MAX_TEXT.saturating_sub(start));
        let len = self.text.len() - start;
        if len > allowed {
            return self.cut(start, allowed, len, part);
        }
        TextRange {
            start: start as u32,
            end: self.text.len() as u32,
        }
    }

    #[cold]
    fn cut(&mut self, start: usize, allowed: usize, len: usize, part: Part) -> TextRange {
        let mut end = start + allowed;
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        self.text.truncate(end);
        let range = TextRange {
            start: start as u32,
            end: end as u32,
        };
        let name = match part {
            Part::Field(field) => field.name().to_owned(),
            Part::Flag => "actor_flags".to_owned(),
            Part::DetailKey => "detail_key".to_owned(),
            Part::Detail(key) => format!("detail.{}", self.str(key)),
        };
        // The marker itself is not held to the budget: one short key per
        // cut value.
        let key_start = self.text.len();
        self.text.push_str(TRUNCATED_PREFIX);
        self.text.push_str(&name);
        let key = TextRange {
            start: key_start as u32,
            end: self.text.len() as u32,
        };
        // As JSON reads it back: a number that fits is signed.
        self.detail.push((key, Value::I64(len as i64)));
        range
    }
}

/// The decimal text of an integer given as its magnitude and sign, written
/// at the end of `digits`: without the formatting machinery, which costs
/// more than a short field.
pub(crate) fn decimal(magnitude: u64, negative: bool, digits: &mut [u8; 21]) -> &str {
    let mut at = digits.len();
    let mut n = magnitude;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if negative {
        at -= 1;
        digits[at] = b'-';
    }
    // ASCII digits only.
    std::str::from_utf8(&digits[at..]).unwrap_or_default()
}

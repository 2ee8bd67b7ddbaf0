//! Turning an event's fields, and its spans' fields, into a record.
//!
//! Two visitors, both run on the emitting thread (so neither does I/O nor
//! holds a lock):
//!
//! - [`EventVisitor`] fills the record from the `audit!` event itself. A
//!   field whose name is one of the record's text fields (either spelling:
//!   `actor.id` or `actor_id`, see [`Field::from_name`]) becomes that
//!   field; `actor.flags` becomes the flags; every other field goes to
//!   `detail` with its type (numbers stay numbers).
//! - [`SpanContext`] keeps, per span, the *context* fields a span may carry
//!   for the events inside it: the actor's fields and flags, and the
//!   request's. It is filled when the span is created and updated when a
//!   field is recorded later (auth middleware sets `actor.id` after the
//!   request span exists), and copied into a record when an event is
//!   emitted inside the span ([`AuditLayer`](crate::AuditLayer) walks the
//!   scope from the innermost span out).
//!
//! The two context groups are inherited differently (see
//! `record::fields::Group`): the actor as a whole, from the nearest span
//! that names one, so that an email of one actor is never paired with
//! another's id; the request field by field, as each is usually recorded by
//! a different layer of middleware.

use std::fmt;

use tracing_core::field::{Field as TracingField, Visit};

use crate::record::{is_flags_name, Field, Value};
use crate::AuditRecord;

/// Visits an audit event's fields into a record: the record's own text
/// fields into their place, flags into the flags, everything else into
/// `detail` with its type.
pub(crate) struct EventVisitor<'a> {
    pub(crate) record: &'a mut AuditRecord,
}

impl EventVisitor<'_> {
    /// A number or boolean: as text in a field of the record (an id given
    /// as a number is still an id), typed in `detail`.
    fn scalar(&mut self, field: &TracingField, value: Value, text: &dyn fmt::Display) {
        let name = field.name();
        match Field::from_name(name) {
            Some(record_field) => self.record.set_display(record_field, text),
            None if is_flags_name(name) => push_flags(self.record, &text.to_string()),
            None => self.record.push_detail(name, value),
        }
    }
}

impl Visit for EventVisitor<'_> {
    fn record_str(&mut self, field: &TracingField, value: &str) {
        let name = field.name();
        match Field::from_name(name) {
            Some(record_field) => self.record.set(record_field, value),
            None if is_flags_name(name) => push_flags(self.record, value),
            None => self.record.push_detail_str(name, value),
        }
    }

    fn record_debug(&mut self, field: &TracingField, value: &dyn fmt::Debug) {
        let name = field.name();
        match Field::from_name(name) {
            Some(record_field) => self.record.set_debug(record_field, value),
            None if is_flags_name(name) => push_flags(self.record, &format!("{value:?}")),
            None => self.record.push_detail_debug(name, value),
        }
    }

    fn record_i64(&mut self, field: &TracingField, value: i64) {
        let name = field.name();
        match Field::from_name(name) {
            Some(record_field) => {
                self.record
                    .set_int(record_field, value.unsigned_abs(), value < 0)
            }
            None if is_flags_name(name) => push_flags(self.record, &value.to_string()),
            None => self.record.push_detail(name, Value::I64(value)),
        }
    }

    fn record_u64(&mut self, field: &TracingField, value: u64) {
        let name = field.name();
        match Field::from_name(name) {
            Some(record_field) => self.record.set_int(record_field, value, false),
            None if is_flags_name(name) => push_flags(self.record, &value.to_string()),
            // As JSON reads it back: a number that fits is signed.
            None => match i64::try_from(value) {
                Ok(n) => self.record.push_detail(name, Value::I64(n)),
                Err(_) => self.record.push_detail(name, Value::U64(value)),
            },
        }
    }

    fn record_i128(&mut self, field: &TracingField, value: i128) {
        match i64::try_from(value) {
            Ok(n) => self.record_i64(field, n),
            Err(_) => self.record_debug(field, &value),
        }
    }

    fn record_u128(&mut self, field: &TracingField, value: u128) {
        match u64::try_from(value) {
            Ok(n) => self.record_u64(field, n),
            Err(_) => self.record_debug(field, &value),
        }
    }

    fn record_f64(&mut self, field: &TracingField, value: f64) {
        self.scalar(field, Value::F64(value), &value);
    }

    fn record_bool(&mut self, field: &TracingField, value: bool) {
        self.scalar(field, Value::Bool(value), &value);
    }

    // A 128-bit integer that fits 64 bits is that integer; a bigger one is
    // kept as its decimal text (JSON numbers past 64 bits do not read back).

    fn record_error(&mut self, field: &TracingField, value: &(dyn std::error::Error + 'static)) {
        // Display, not Debug: an error's Debug is for developers.
        let name = field.name();
        let text = value.to_string();
        match Field::from_name(name) {
            Some(record_field) => self.record.set(record_field, &text),
            None => self.record.push_detail_str(name, &text),
        }
    }
}

/// Reads flags given as a JSON array of strings (what `audit!` emits for a
/// principal), else as a comma-separated list.
pub(crate) fn push_flags(record: &mut AuditRecord, text: &str) {
    let text = text.trim();
    if text.starts_with('[') {
        if let Ok(flags) = serde_json::from_str::<Vec<String>>(text) {
            flags.iter().for_each(|f| record.push_flag(f));
            return;
        }
    }
    text.split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .for_each(|f| record.push_flag(f));
}

/// The audit context a span carries, kept in the span's extensions.
///
/// Only context fields are stored, as text; they are copied into a record
/// when an event inside the span is emitted, so a value recorded after the
/// span was created (auth middleware filling `actor.id`) is seen.
#[derive(Debug, Default)]
pub(crate) struct SpanContext {
    values: Vec<(ContextKey, String)>,
}

/// Which context value a [`SpanContext`] entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ContextKey {
    /// An actor or request field of the record.
    Field(Field),
    /// The actor's flags, as recorded (a JSON array or a comma list).
    Flags,
}

impl SpanContext {
    /// Sets a value; an empty one clears the field (tracing cannot unset a
    /// span field, so recording `""` is how a new actor without an email
    /// replaces one with).
    fn set(&mut self, key: ContextKey, value: String) {
        let at = self.values.iter().position(|(k, _)| *k == key);
        match (at, value.is_empty()) {
            (Some(i), true) => {
                self.values.remove(i);
            }
            (Some(i), false) => self.values[i].1 = value,
            (None, _) => self.values.push((key, value)),
        }
    }

    /// Takes the values recorded on the span later.
    pub(crate) fn merge(&mut self, update: SpanContext) {
        for (key, value) in update.values {
            self.set(key, value);
        }
    }

    /// The request id recorded on the span.
    pub(crate) fn request_id(&self) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, v)| *k == ContextKey::Field(Field::RequestId) && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// Whether nothing was recorded (cleared fields count as recorded).
    pub(crate) fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Fills the record's missing request context from this span.
    pub(crate) fn fill_request(&self, record: &mut AuditRecord) {
        for (key, value) in &self.values {
            if let ContextKey::Field(field) = *key {
                if field.is_request() && !value.is_empty() && !record.has(field) {
                    record.set(field, value);
                }
            }
        }
    }

    /// Copies this span's actor into the record, if it names one: all of
    /// its actor fields, so that no field of another actor is mixed in.
    pub(crate) fn fill_actor(&self, record: &mut AuditRecord) -> bool {
        if !self
            .values
            .iter()
            .any(|(k, v)| *k == ContextKey::Field(Field::ActorId) && !v.is_empty())
        {
            return false;
        }
        let flags_given = record.has_flags();
        for (key, value) in &self.values {
            match *key {
                ContextKey::Field(_) if value.is_empty() => {}
                ContextKey::Field(field) if field.is_actor() => record.set(field, value),
                ContextKey::Flags if !flags_given => push_flags(record, value),
                ContextKey::Flags => {}
                ContextKey::Field(_) => {}
            }
        }
        true
    }
}

impl SpanContext {
    /// Keeps a context field's value; any other field of the span is not
    /// the audit's business and is not even formatted (`value` is lazy).
    fn record(&mut self, field: &TracingField, value: impl FnOnce() -> String) {
        let name = field.name();
        let key = match Field::from_name(name) {
            Some(f) if f.is_actor() || f.is_request() => ContextKey::Field(f),
            None if is_flags_name(name) => ContextKey::Flags,
            _ => return,
        };
        self.set(key, value());
    }
}

impl Visit for SpanContext {
    fn record_str(&mut self, field: &TracingField, value: &str) {
        self.record(field, || value.to_owned());
    }

    fn record_debug(&mut self, field: &TracingField, value: &dyn fmt::Debug) {
        self.record(field, || format!("{value:?}"));
    }

    fn record_i64(&mut self, field: &TracingField, value: i64) {
        self.record(field, || value.to_string());
    }

    fn record_u64(&mut self, field: &TracingField, value: u64) {
        self.record(field, || value.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AuditRecord;

    #[test]
    fn flags_parse_from_json_or_commas() {
        let cases: [(&str, &[&str]); 5] = [
            (r#"["admin","ops"]"#, &["admin", "ops"]),
            (r#"["a,b"]"#, &["a,b"]),
            ("admin, ops", &["admin", "ops"]),
            ("", &[]),
            ("[not json", &["[not json"]),
        ];
        for (text, want) in cases {
            let mut b = AuditRecord::builder("a");
            push_flags(b.record_mut(), text);
            let r = b.build();
            assert_eq!(r.actor_flags().collect::<Vec<_>>(), want, "{text}");
        }
    }
}

//! Records as rows, and rows as records.

#[cfg(feature = "http")]
mod json;

use std::borrow::Cow;

use diesel::prelude::*;

use super::schema::{audit_event_flags, audit_events};
use super::stored::{self, Changes};
use crate::record::builder::Parts;
use crate::record::json::parse_object;
use crate::record::Field;
use crate::AuditRecord;

/// Defines [`NewEvent`] and [`EventRow`], a column per field of the list
/// (`record::fields`), and [`EventRow::stores`], which compares them.
macro_rules! define_rows {
    (; $({ $key:ident, $column:ident, ($($sql:tt)*), ($($read:tt)*), ($($write:tt)*),
            $role:ident ( $($arg:tt)* ) })*) => {
        /// A record to insert, in its stored form (see [`super::stored`]):
        /// text borrowed from the record unless it had to change.
        #[derive(Insertable, Debug, Clone, PartialEq, Eq)]
        #[diesel(table_name = audit_events, treat_none_as_default_value = false)]
        pub(crate) struct NewEvent<'a> {
            $(pub(crate) $column: $($write)*,)*
        }

        /// A row as read back.
        #[derive(Queryable, Selectable, Debug)]
        #[diesel(table_name = audit_events)]
        pub(crate) struct EventRow {
            $($column: $($read)*,)*
        }

        impl EventRow {
            /// Whether this row is what `event` would store: the same record.
            pub(crate) fn stores(&self, event: &NewEvent<'_>) -> bool {
                true $(&& Cell::cell(&self.$column) == Cell::cell(&event.$column))*
            }

            /// The row `event` stores, as it reads back.
            fn stored(event: &NewEvent<'_>) -> Self {
                Self {
                    $($column: ToRead::to_read(&event.$column),)*
                }
            }
        }
    };
}

crate::record::fields::with_record_fields!(define_rows!());

/// Moves the text fields of a row into an array by [`Field`] position,
/// and makes a [`NewEvent`] of an array of stored texts.
macro_rules! define_text_columns {
    (; $({ $column:ident $variant:ident $($rest:tt)* })*) => {
        impl EventRow {
            fn take_texts(&mut self) -> [Option<String>; Field::COUNT] {
                let mut texts: [Option<String>; Field::COUNT] = Default::default();
                $(texts[Field::$variant as usize] = Cell::into_text(std::mem::take(&mut self.$column));)*
                texts
            }
        }

        impl<'a> NewEvent<'a> {
            fn new(
                id: String,
                timestamp_us: i64,
                actor_flags: String,
                detail: String,
                seq: Option<i64>,
                mut texts: [Option<Cow<'a, str>>; Field::COUNT],
            ) -> Self {
                Self {
                    id,
                    timestamp_us,
                    actor_flags,
                    detail,
                    seq,
                    $($column: FromText::from_text(texts[Field::$variant as usize].take()),)*
                }
            }
        }
    };
}

crate::record::fields::with_text_fields!(define_text_columns!());

/// A column's value to insert as the same column read back.
trait ToRead<R> {
    fn to_read(&self) -> R;
}

impl ToRead<String> for String {
    fn to_read(&self) -> String {
        self.clone()
    }
}

impl ToRead<String> for Cow<'_, str> {
    fn to_read(&self) -> String {
        self.to_string()
    }
}

impl ToRead<Option<String>> for Option<Cow<'_, str>> {
    fn to_read(&self) -> Option<String> {
        self.as_ref().map(|s| s.to_string())
    }
}

impl ToRead<i64> for i64 {
    fn to_read(&self) -> i64 {
        *self
    }
}

impl ToRead<Option<i64>> for Option<i64> {
    fn to_read(&self) -> Option<i64> {
        *self
    }
}

/// The record as the database sink stores it and the store reads it
/// back, when that is not `record` itself: a value cut to fit its column
/// (and the detail that says so). `None` when nothing is cut, which is
/// told without building the row for the usual small record.
pub(crate) fn stored_form(record: &AuditRecord) -> Option<AuditRecord> {
    if !stored::may_cut(record) {
        return None;
    }
    let new = NewRecord::new(record);
    let row = EventRow::stored(&new.event);
    let back = row.into_record().ok()?;
    (back != *record).then_some(back)
}

/// The value of a column, whatever its Rust type in a row: for the
/// generated code above, which handles every column alike.
trait Cell {
    /// The value, to compare a row read with a row written.
    fn cell(&self) -> Option<CellRef<'_>>;

    /// The text of a text column, moved out.
    fn into_text(self) -> Option<String>
    where
        Self: Sized,
    {
        None
    }
}

/// A text column of a row to insert, from a stored text (`None`: absent).
trait FromText<'a> {
    fn from_text(text: Option<Cow<'a, str>>) -> Self;
}

impl<'a> FromText<'a> for Cow<'a, str> {
    /// A required column: the record always has it (an empty text if not).
    fn from_text(text: Option<Cow<'a, str>>) -> Self {
        text.unwrap_or_default()
    }
}

impl<'a> FromText<'a> for Option<Cow<'a, str>> {
    fn from_text(text: Option<Cow<'a, str>>) -> Self {
        text
    }
}

#[derive(PartialEq)]
enum CellRef<'a> {
    Text(&'a str),
    Int(i64),
}

impl Cell for String {
    fn cell(&self) -> Option<CellRef<'_>> {
        Some(CellRef::Text(self))
    }
    fn into_text(self) -> Option<String> {
        Some(self)
    }
}

impl Cell for Option<String> {
    fn cell(&self) -> Option<CellRef<'_>> {
        self.as_deref().map(CellRef::Text)
    }
    fn into_text(self) -> Option<String> {
        self
    }
}

impl Cell for i64 {
    fn cell(&self) -> Option<CellRef<'_>> {
        Some(CellRef::Int(*self))
    }
}

impl Cell for Option<i64> {
    fn cell(&self) -> Option<CellRef<'_>> {
        self.map(CellRef::Int)
    }
}

impl Cell for Cow<'_, str> {
    fn cell(&self) -> Option<CellRef<'_>> {
        Some(CellRef::Text(self))
    }
}

impl Cell for Option<Cow<'_, str>> {
    fn cell(&self) -> Option<CellRef<'_>> {
        self.as_deref().map(CellRef::Text)
    }
}

/// A record's row and its flag rows, ready to insert.
#[derive(Debug, Clone)]
pub(crate) struct NewRecord<'a> {
    pub(crate) event: NewEvent<'a>,
    /// The stored forms of its flags, each once.
    pub(crate) flags: Vec<Cow<'a, str>>,
}

impl<'a> NewRecord<'a> {
    /// The stored form of `record`.
    pub(crate) fn new(record: &'a AuditRecord) -> Self {
        let mut changes = Changes::default();
        let texts = Field::ALL.map(|field| {
            record.get(field).map(|value| {
                let stored = stored::store(value, stored::limit(field));
                changes.note(field.name(), &stored);
                stored.text
            })
        });
        let (actor_flags, kept, dropped_from) = stored::flags_json(record);
        if let Some(of) = dropped_from {
            changes.note_dropped_flags(of);
        }
        let mut detail = stored::detail_json(record, &mut changes);
        changes.mark(record, &mut detail);
        let mut flags: Vec<Cow<'a, str>> = Vec::with_capacity(kept.len());
        for flag in kept {
            let flag = stored::short(flag);
            if !flags.contains(&flag) {
                flags.push(flag);
            }
        }
        let event = NewEvent::new(
            record.id().hyphenated().to_string(),
            record.timestamp_micros(),
            actor_flags,
            detail,
            // The deserializer and the chain keep it within i64.
            record.seq().and_then(|seq| i64::try_from(seq).ok()),
            texts,
        );
        Self { event, flags }
    }

    /// The flag rows of this record.
    pub(crate) fn flag_rows(&self) -> impl Iterator<Item = NewFlag<'_>> {
        self.flags.iter().map(|flag| NewFlag {
            flag,
            timestamp_us: self.event.timestamp_us,
            event_id: &self.event.id,
        })
    }
}

/// One flag of a record.
#[derive(Insertable, Debug, Clone, Copy)]
#[diesel(table_name = audit_event_flags)]
pub(crate) struct NewFlag<'a> {
    pub(crate) flag: &'a str,
    pub(crate) timestamp_us: i64,
    pub(crate) event_id: &'a str,
}

impl EventRow {
    /// The record this row stores.
    ///
    /// # Errors
    ///
    /// A row that no sink of this crate wrote: a bad id, or flags or detail
    /// that are not the JSON they should be.
    pub(crate) fn into_record(mut self) -> crate::Result<AuditRecord> {
        let bad = |what: &str| crate::Error::database(format!("row {:?}: bad {what}", self.id));
        let id = uuid::Uuid::parse_str(&self.id).map_err(|e| bad("id").because(e))?;
        let flags: Vec<String> =
            serde_json::from_str(&self.actor_flags).map_err(|e| bad("actor_flags").because(e))?;
        let mut detail = parse_object(&self.detail).map_err(|e| bad("detail").because(e))?;
        let seq = self
            .seq
            .map(u64::try_from)
            .transpose()
            .map_err(|e| bad("seq").because(e))?;
        let mut texts = self.take_texts();
        let mut named: Vec<(&'static str, Option<String>)> = Field::ALL
            .into_iter()
            .zip(&mut texts)
            .map(|(field, text)| (field.name(), text.take()))
            .collect();
        stored::restore(&mut named, &mut detail);
        for (text, (_, restored)) in texts.iter_mut().zip(named) {
            *text = restored;
        }
        let parts = Parts {
            id,
            micros: self.timestamp_us,
            texts,
            flags,
            detail,
            seq,
        };
        Ok(parts.into_record())
    }

    /// Where a page that ends with this row ends.
    ///
    /// # Errors
    ///
    /// A bad id, as for [`into_record`](Self::into_record).
    pub(crate) fn cursor(&self) -> crate::Result<super::query::Cursor> {
        let id = uuid::Uuid::parse_str(&self.id).map_err(|e| {
            crate::Error::database(format!("row {:?}: bad id", self.id)).because(e)
        })?;
        Ok(super::query::Cursor {
            timestamp_us: self.timestamp_us,
            id,
        })
    }

    /// The row's id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The row's `seq`.
    pub(crate) fn seq(&self) -> Option<i64> {
        self.seq
    }
}

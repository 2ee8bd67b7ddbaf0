//! Records as rows, and rows as records.

use std::borrow::Cow;

use diesel::prelude::*;

use super::schema::{audit_event_flags, audit_events};
use super::stored::{self, Changes, Limit};
use crate::record::json::parse_object;
use crate::record::{Field, RecordBuilder};
use crate::AuditRecord;

/// A record to insert, in its stored form (see [`super::stored`]): text
/// borrowed from the record unless it had to change.
#[derive(Insertable, Debug, Clone, PartialEq, Eq)]
#[diesel(table_name = audit_events, treat_none_as_default_value = false)]
pub(crate) struct NewEvent<'a> {
    pub(crate) id: String,
    pub(crate) timestamp_us: i64,
    pub(crate) action: Cow<'a, str>,
    pub(crate) actor_id: Option<Cow<'a, str>>,
    pub(crate) actor_type: Option<Cow<'a, str>>,
    pub(crate) actor_email: Option<Cow<'a, str>>,
    pub(crate) actor_name: Option<Cow<'a, str>>,
    pub(crate) actor_flags: String,
    pub(crate) resource_type: Option<Cow<'a, str>>,
    pub(crate) resource_id: Option<Cow<'a, str>>,
    pub(crate) detail: String,
    pub(crate) request_id: Option<Cow<'a, str>>,
    pub(crate) client_ip: Option<Cow<'a, str>>,
    pub(crate) user_agent: Option<Cow<'a, str>>,
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
        let mut text = |(name, field, limit): (&'static str, Field, Limit)| {
            record.get(field).map(|value| {
                let stored = stored::store(value, limit);
                changes.note(name, &stored);
                stored.text
            })
        };
        let [action, actor_id, actor_type, actor_email, actor_name, resource_type, resource_id, request_id, client_ip, user_agent] =
            stored::COLUMNS.map(&mut text);
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
        let event = NewEvent {
            id: record.id().hyphenated().to_string(),
            timestamp_us: record.timestamp_micros(),
            action: action.unwrap_or_default(),
            actor_id,
            actor_type,
            actor_email,
            actor_name,
            actor_flags,
            resource_type,
            resource_id,
            detail,
            request_id,
            client_ip,
            user_agent,
        };
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

/// A row as read back.
#[derive(Queryable, Selectable, Debug)]
#[diesel(table_name = audit_events)]
pub(crate) struct EventRow {
    id: String,
    timestamp_us: i64,
    action: String,
    actor_id: Option<String>,
    actor_type: Option<String>,
    actor_email: Option<String>,
    actor_name: Option<String>,
    actor_flags: String,
    resource_type: Option<String>,
    resource_id: Option<String>,
    detail: String,
    request_id: Option<String>,
    client_ip: Option<String>,
    user_agent: Option<String>,
}

impl EventRow {
    /// The record this row stores.
    ///
    /// # Errors
    ///
    /// A row that no sink of this crate wrote: a bad id, or flags or detail
    /// that are not the JSON they should be.
    pub(crate) fn into_record(self) -> Result<AuditRecord, String> {
        let id = uuid::Uuid::parse_str(&self.id)
            .map_err(|e| format!("row {:?}: bad id: {e}", self.id))?;
        let flags: Vec<String> = serde_json::from_str(&self.actor_flags)
            .map_err(|e| format!("row {}: bad actor_flags: {e}", self.id))?;
        let mut detail =
            parse_object(&self.detail).map_err(|e| format!("row {}: bad detail: {e}", self.id))?;
        let mut builder = RecordBuilder::with_id(id, self.timestamp_us);
        let r = builder.record_mut();
        let mut strings = [
            ("action", Some(self.action)),
            ("actor_id", self.actor_id),
            ("actor_type", self.actor_type),
            ("actor_email", self.actor_email),
            ("actor_name", self.actor_name),
            ("resource_type", self.resource_type),
            ("resource_id", self.resource_id),
            ("request_id", self.request_id),
            ("client_ip", self.client_ip),
            ("user_agent", self.user_agent),
        ];
        stored::restore(&mut strings, &mut detail);
        for ((_, field, _), (_, value)) in stored::COLUMNS.iter().zip(strings) {
            if let Some(value) = value {
                r.set(*field, &value);
            }
        }
        for flag in &flags {
            r.push_flag(flag);
        }
        for (key, value) in detail {
            r.push_json(&key, value);
        }
        Ok(builder.build())
    }

    /// The row's id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Whether this row is what `event` would store: the same record.
    pub(crate) fn stores(&self, event: &NewEvent<'_>) -> bool {
        let same = |a: &Option<String>, b: &Option<Cow<'_, str>>| a.as_deref() == b.as_deref();
        self.id == event.id
            && self.timestamp_us == event.timestamp_us
            && self.action == event.action
            && same(&self.actor_id, &event.actor_id)
            && same(&self.actor_type, &event.actor_type)
            && same(&self.actor_email, &event.actor_email)
            && same(&self.actor_name, &event.actor_name)
            && self.actor_flags == event.actor_flags
            && same(&self.resource_type, &event.resource_type)
            && same(&self.resource_id, &event.resource_id)
            && self.detail == event.detail
            && same(&self.request_id, &event.request_id)
            && same(&self.client_ip, &event.client_ip)
            && same(&self.user_agent, &event.user_agent)
    }
}

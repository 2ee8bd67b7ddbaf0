//! Records as rows, and rows as records.

use diesel::prelude::*;

use super::schema::{audit_event_flags, audit_events};
use crate::record::json::parse_object;
use crate::record::{Field, RecordBuilder};
use crate::AuditRecord;

/// A record to insert, borrowing its text from the record.
#[derive(Insertable)]
#[diesel(table_name = audit_events, treat_none_as_default_value = false)]
pub(crate) struct NewEvent<'a> {
    pub(crate) id: String,
    pub(crate) timestamp_us: i64,
    pub(crate) action: &'a str,
    pub(crate) actor_id: Option<&'a str>,
    pub(crate) actor_type: Option<&'a str>,
    pub(crate) actor_email: Option<&'a str>,
    pub(crate) actor_name: Option<&'a str>,
    pub(crate) actor_flags: String,
    pub(crate) resource_type: Option<&'a str>,
    pub(crate) resource_id: Option<&'a str>,
    pub(crate) detail: String,
    pub(crate) request_id: Option<&'a str>,
    pub(crate) client_ip: Option<&'a str>,
    pub(crate) user_agent: Option<&'a str>,
}

impl<'a> NewEvent<'a> {
    pub(crate) fn new(record: &'a AuditRecord) -> Self {
        let flags: Vec<&str> = record.actor_flags().collect();
        Self {
            id: record.id().hyphenated().to_string(),
            timestamp_us: record.timestamp_micros(),
            action: record.action(),
            actor_id: record.actor_id(),
            actor_type: record.actor_type(),
            actor_email: record.actor_email(),
            actor_name: record.actor_name(),
            actor_flags: serde_json::to_string(&flags).unwrap_or_else(|_| "[]".into()),
            resource_type: record.resource_type(),
            resource_id: record.resource_id(),
            detail: record.detail_json(),
            request_id: record.request_id(),
            client_ip: record.client_ip(),
            user_agent: record.user_agent(),
        }
    }
}

/// One flag of a record.
#[derive(Insertable)]
#[diesel(table_name = audit_event_flags)]
pub(crate) struct NewFlag<'a> {
    pub(crate) flag: &'a str,
    pub(crate) timestamp_us: i64,
    pub(crate) event_id: &'a str,
}

impl<'a> NewFlag<'a> {
    #[cfg(feature = "mysql")]
    pub(crate) fn event_id(&self) -> &str {
        self.event_id
    }

    /// The flag rows of `record`, whose event row is `event`.
    pub(crate) fn of(
        record: &'a AuditRecord,
        event: &'a NewEvent<'_>,
    ) -> impl Iterator<Item = Self> + 'a {
        record.actor_flags().map(move |flag| Self {
            flag,
            timestamp_us: event.timestamp_us,
            event_id: &event.id,
        })
    }
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
        let detail =
            parse_object(&self.detail).map_err(|e| format!("row {}: bad detail: {e}", self.id))?;
        let mut builder = RecordBuilder::with_id(id, self.timestamp_us);
        let r = builder.record_mut();
        let strings = [
            (Field::Action, Some(self.action)),
            (Field::ActorId, self.actor_id),
            (Field::ActorType, self.actor_type),
            (Field::ActorEmail, self.actor_email),
            (Field::ActorName, self.actor_name),
            (Field::ResourceType, self.resource_type),
            (Field::ResourceId, self.resource_id),
            (Field::RequestId, self.request_id),
            (Field::ClientIp, self.client_ip),
            (Field::UserAgent, self.user_agent),
        ];
        for (field, value) in strings {
            if let Some(value) = value {
                r.set(field, &value);
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
}

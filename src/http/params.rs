//! The list endpoint's query string, read strictly.

use chrono::{DateTime, Utc};

use super::error::ApiError;
use crate::{AuditQuery, Cursor};

/// The filters as given, for the `audit.read` record.
#[derive(Debug, Default)]
pub(crate) struct Filters {
    pub(crate) actor_id: Option<String>,
    pub(crate) actor_type: Option<String>,
    pub(crate) action: Option<String>,
    pub(crate) resource_type: Option<String>,
    pub(crate) resource_id: Option<String>,
    pub(crate) from: Option<String>,
    pub(crate) to: Option<String>,
    pub(crate) has_flag: Option<String>,
    pub(crate) limit: Option<String>,
    pub(crate) cursor: Option<String>,
}

/// Reads `query` (the raw query string): every parameter known, given once
/// and well formed, or a 400 naming it.
pub(crate) fn parse(query: Option<&str>) -> Result<(AuditQuery, Filters), ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|_| ApiError::bad_request("the query string is not valid form encoding"))?;
    let mut f = Filters::default();
    for (key, value) in pairs {
        let slot = match key.as_str() {
            "actor_id" => &mut f.actor_id,
            "actor_type" => &mut f.actor_type,
            "action" => &mut f.action,
            "resource_type" => &mut f.resource_type,
            "resource_id" => &mut f.resource_id,
            "from" => &mut f.from,
            "to" => &mut f.to,
            "has_flag" => &mut f.has_flag,
            "limit" => &mut f.limit,
            "cursor" => &mut f.cursor,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter `{}`",
                    truncate(&key)
                )))
            }
        };
        if value.is_empty() {
            return Err(ApiError::bad_request(format!("`{key}` is empty")));
        }
        if slot.replace(value).is_some() {
            return Err(ApiError::bad_request(format!("`{key}` is given twice")));
        }
    }
    let mut q = AuditQuery::new();
    if let Some(v) = &f.actor_id {
        q = q.actor_id(v);
    }
    if let Some(v) = &f.actor_type {
        q = q.actor_type(v);
    }
    if let Some(v) = &f.action {
        q = q.action(v);
    }
    if let Some(v) = &f.resource_type {
        q = q.resource_type(v);
    }
    if let Some(v) = &f.resource_id {
        q = q.resource_id(v);
    }
    if let Some(v) = &f.from {
        q = q.from(timestamp("from", v)?);
    }
    if let Some(v) = &f.to {
        q = q.to(timestamp("to", v)?);
    }
    if let Some(v) = &f.has_flag {
        q = q.has_flag(v);
    }
    if let Some(v) = &f.limit {
        let limit = v
            .parse::<u32>()
            .map_err(|_| ApiError::bad_request("`limit` must be a whole number from 1 to 1000"))?;
        q = q.limit(limit)?;
    }
    if let Some(v) = &f.cursor {
        q = q.after(v.parse::<Cursor>()?);
    }
    Ok((q, f))
}

fn timestamp(key: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ApiError::bad_request(format!("`{key}` is not an RFC 3339 timestamp")))
}

/// Echoes at most 64 characters of a caller's input.
fn truncate(text: &str) -> String {
    text.chars().take(64).collect()
}

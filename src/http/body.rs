//! The answers that carry records, written straight from the rows (see
//! `EventRow::write_json`): the bytes serde gave for them, without making
//! each record and serializing it.

use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};

use crate::db::{EventRow, RowPage};
use crate::record::json_line::write_str;
use crate::{Result, Total};

/// Room for a typical record's JSON, so that a page's buffer is rarely
/// grown.
const RECORD_BYTES: usize = 640;

/// A JSON answer: the bytes and the `Content-Type` of axum's `Json`.
#[derive(Debug)]
pub(crate) struct JsonBody(Vec<u8>);

impl JsonBody {
    /// The list's answer: `{"items": [records, newest first],
    /// "next_cursor": string|null}`, then with a total `"total": n,
    /// "total_is_lower_bound": bool`.
    pub(crate) fn page(page: RowPage, total: Option<Total>) -> Result<Self> {
        let mut out = Vec::with_capacity(64 + page.rows.len() * RECORD_BYTES);
        out.extend_from_slice(b"{\"items\":[");
        for (i, row) in page.rows.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            row.write_json(&mut out)?;
        }
        out.extend_from_slice(b"],\"next_cursor\":");
        match page.next_cursor {
            Some(cursor) => write_str(&mut out, &cursor.to_string()),
            None => out.extend_from_slice(b"null"),
        }
        if let Some(total) = total {
            out.extend_from_slice(b",\"total\":");
            out.extend_from_slice(total.count.to_string().as_bytes());
            out.extend_from_slice(b",\"total_is_lower_bound\":");
            out.extend_from_slice(if total.is_lower_bound {
                b"true"
            } else {
                b"false"
            });
        }
        out.push(b'}');
        Ok(Self(out))
    }

    /// One record's answer: its JSON object.
    pub(crate) fn record(row: EventRow) -> Result<Self> {
        let mut out = Vec::with_capacity(RECORD_BYTES);
        row.write_json(&mut out)?;
        Ok(Self(out))
    }
}

impl IntoResponse for JsonBody {
    fn into_response(self) -> Response {
        let mut response = Body::from(self.0).into_response();
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }
}

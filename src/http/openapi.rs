//! The query API's contract as an OpenAPI 3.1 document, served at
//! `GET /api/v1/audit/openapi.json` without authentication.
//!
//! The document is built here from the code's own lists, so that it cannot
//! drift from what the router does: the query parameters are
//! [`AuditQuery::PARAMETERS`](crate::AuditQuery::PARAMETERS) (a test fails
//! when a parameter has no description here), the record's properties are
//! held to a serialized record's keys by a test, and the checked-in copy
//! (`openapi.json` at the repository root) is held to this one by another.
//! CI fuzzes a running server from it with schemathesis.

use std::sync::OnceLock;

use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// The path the document is served at.
pub(crate) const PATH: &str = "/api/v1/audit/openapi.json";

/// A UUID as the API writes it (hyphenated; any case is read).
const UUID_PATTERN: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// The document, as served.
pub(crate) fn document() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let mut text = serde_json::to_string_pretty(&build()).expect("JSON values serialize");
        text.push('\n');
        text
    })
}

/// `GET /api/v1/audit/openapi.json`.
pub(crate) async fn serve() -> Response {
    ([(CONTENT_TYPE, "application/json")], document()).into_response()
}

/// What a cursor looks like (`Cursor`'s text form).
const CURSOR_PATTERN: &str = "^[0-9a-fA-F]{1,16}-[0-9a-fA-F]{32}$";

/// Each query parameter of the list: its schema and what it means.
fn parameter(name: &str) -> Option<(Value, &'static str)> {
    let text = || json!({"type": "string", "minLength": 1});
    Some(match name {
        "actor_id" => (text(), "Records of this actor."),
        "actor_type" => (text(), "Records of actors of this type (`user`, `service`, …)."),
        "action" => (
            text(),
            "Records of this action; ending in `.`, of every action under this prefix (`invoice.`).",
        ),
        "resource_type" => (text(), "Records about resources of this type."),
        "resource_id" => (text(), "Records about the resource with this id."),
        "from" => (
            json!({"type": "string", "format": "date-time"}),
            "Records at or after this RFC 3339 time.",
        ),
        "to" => (
            json!({"type": "string", "format": "date-time"}),
            "Records before this RFC 3339 time.",
        ),
        "has_flag" => (text(), "Records whose actor carried this flag (a role, a scope)."),
        "limit" => (
            json!({"type": "integer", "minimum": 1, "maximum": crate::db::query::MAX_LIMIT, "default": crate::db::query::DEFAULT_LIMIT}),
            "Records per page.",
        ),
        "cursor" => (
            json!({"type": "string", "pattern": CURSOR_PATTERN}),
            "The `next_cursor` of the previous page: the records after it.",
        ),
        _ => return None,
    })
}

/// The record's properties, in the order of its JSON form.
fn record_schema() -> Value {
    let text = || json!({"type": ["string", "null"]});
    json!({
        "type": "object",
        "description": "One audit record: who did what to which resource, when, from where.",
        "required": [
            "id", "timestamp", "action", "actor_id", "actor_type", "actor_email", "actor_name",
            "actor_flags", "resource_type", "resource_id", "detail", "request_id", "client_ip",
            "user_agent", "chain", "seq", "hash"
        ],
        "properties": {
            "id": {"type": "string", "format": "uuid", "description": "UUID v7, ordered by time."},
            "timestamp": {"type": "string", "format": "date-time", "description": "UTC, microseconds."},
            "action": {"type": "string", "description": "What happened, dotted: `post.created`."},
            "actor_id": text(),
            "actor_type": text(),
            "actor_email": text(),
            "actor_name": text(),
            "actor_flags": {"type": "array", "items": {"type": "string"}},
            "resource_type": text(),
            "resource_id": text(),
            "detail": {"type": "object", "description": "Every other field of the event, typed."},
            "request_id": text(),
            "client_ip": text(),
            "user_agent": text(),
            "chain": {"type": ["string", "null"], "description": "The hash chain the record was stored in (writing instance and sink); null if none."},
            "seq": {"type": ["integer", "null"], "minimum": 0, "maximum": 9223372036854775807_i64, "description": "The record's place in its chain, from 1, gap-free."},
            "hash": {"type": ["string", "null"], "description": "SHA-256 of the record and the previous hash in its chain, 64 lower-case hex digits."}
        }
    })
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

/// The answers every guarded operation may give besides its own.
fn guarded_responses(mut own: serde_json::Map<String, Value>) -> Value {
    for (status, description) in [
        (
            "400",
            "A parameter is unknown, empty, repeated or malformed.",
        ),
        (
            "401",
            "No credentials, or credentials the server does not know.",
        ),
        ("403", "The caller lacks the `audit:read` permission."),
        ("405", "Another method than GET."),
        ("500", "The server failed; the body says no more."),
        (
            "503",
            "The database is unreachable; try again (`Retry-After`).",
        ),
    ] {
        own.insert(status.into(), error_response(description));
    }
    Value::Object(own)
}

fn build() -> Value {
    let parameters: Vec<Value> = crate::AuditQuery::PARAMETERS
        .iter()
        .map(|&name| {
            let (schema, description) =
                parameter(name).unwrap_or_else(|| (json!({"type": "string"}), ""));
            json!({"name": name, "in": "query", "required": false,
                   "description": description, "schema": schema})
        })
        .chain(std::iter::once(json!({
            "name": "count", "in": "query", "required": false,
            "description": "`true` adds `total`: the records matching the filters, exact up to the server's cap, beyond it a lower bound (`total_is_lower_bound`).",
            "schema": {"type": "boolean", "default": false}
        })))
        .collect();
    // The checkpoints' route takes the time filters and the paging ones.
    let checkpoint_parameters: Vec<Value> = parameters
        .iter()
        .filter(|p| {
            matches!(
                p["name"].as_str(),
                Some("from" | "to" | "limit" | "cursor" | "count")
            )
        })
        .cloned()
        .collect();
    let checkpoints_ok = json!({"200": {
        "description": "A page of checkpoint records (action `fabric_audit.checkpoint`), newest first.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Page"}}}
    }});
    let list_ok = json!({"200": {
        "description": "A page of records, newest first.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Page"}}}
    }});
    let get_ok = json!({
        "200": {
            "description": "The record.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AuditRecord"}}}
        },
        "404": error_response("No record has this id.")
    });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "fabric-audit query API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Read-only queries over an audit log. Every operation but this document needs a caller with the `audit:read` permission; every answer, errors included, is JSON."
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/audit": {"get": {
                "operationId": "listAuditRecords",
                "summary": "Records matching every filter given, newest first, a page at a time.",
                "parameters": parameters,
                "responses": guarded_responses(list_ok.as_object().cloned().unwrap_or_default())
            }},
            "/api/v1/audit/checkpoints": {"get": {
                "operationId": "listCheckpoints",
                "summary": "The hash chains' checkpoint records, newest first, a page at a time: each states a chain's `seq` and head hash and, when the service signs them, carries a signed note (`detail.note`).",
                "parameters": checkpoint_parameters,
                "responses": guarded_responses(checkpoints_ok.as_object().cloned().unwrap_or_default())
            }},
            "/api/v1/audit/{id}": {"get": {
                "operationId": "getAuditRecord",
                "summary": "One record by its id.",
                // A pattern as well as the format: `checkpoints` and
                // `openapi.json` (the concrete paths beside this one) are
                // never ids, which some clients only learn from a pattern.
                "parameters": [{"name": "id", "in": "path", "required": true,
                                "schema": {"type": "string", "format": "uuid",
                                           "pattern": UUID_PATTERN}}],
                "responses": guarded_responses(get_ok.as_object().cloned().unwrap_or_default())
            }},
            PATH: {"get": {
                "operationId": "getOpenApiDocument",
                "summary": "This document.",
                "security": [],
                "responses": {"200": {
                    "description": "The OpenAPI 3.1 document of this API.",
                    "content": {"application/json": {"schema": {"type": "object"}}}
                }}
            }}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "AuditRecord": record_schema(),
                "Page": {
                    "type": "object",
                    "required": ["items", "next_cursor"],
                    "properties": {
                        "items": {"type": "array", "items": {"$ref": "#/components/schemas/AuditRecord"}},
                        "next_cursor": {"type": ["string", "null"], "pattern": CURSOR_PATTERN,
                                        "description": "Pass as `cursor` for the next page; null on the last."},
                        "total": {"type": "integer", "minimum": 0,
                                  "description": "With `count=true`: the matching records, up to the cap."},
                        "total_is_lower_bound": {"type": "boolean",
                                                 "description": "With `count=true`: whether more than `total` match."}
                    }
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": {"type": "string", "enum": [
                                "bad_request", "unauthorized", "forbidden", "not_found",
                                "method_not_allowed", "unavailable", "internal"
                            ]},
                            "message": {"type": "string"}
                        }
                    }}
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_query_parameter_is_described() {
        for name in crate::AuditQuery::PARAMETERS {
            let (_, description) =
                parameter(name).unwrap_or_else(|| panic!("`{name}` is not described"));
            assert!(!description.is_empty());
        }
    }

    #[test]
    fn the_record_schema_has_exactly_the_keys_of_a_record() {
        let record = crate::AuditRecord::builder("x.y").build();
        let keys: Vec<String> = match serde_json::to_value(&record).unwrap() {
            Value::Object(map) => map.keys().cloned().collect(),
            other => panic!("{other}"),
        };
        let schema = record_schema();
        let mut properties: Vec<String> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let mut required: Vec<String> = serde_json::from_value(schema["required"].clone()).unwrap();
        let mut keys = keys;
        keys.sort();
        properties.sort();
        required.sort();
        assert_eq!(properties, keys);
        assert_eq!(required, keys);
    }

    #[test]
    fn the_checked_in_document_is_the_served_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
        if std::env::var_os("FABRIC_AUDIT_WRITE_OPENAPI").is_some() {
            std::fs::write(path, document()).unwrap();
        }
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == document(),
            "openapi.json differs from the served document: regenerate it with \
             FABRIC_AUDIT_WRITE_OPENAPI=1 cargo test --all-features --lib openapi"
        );
    }
}

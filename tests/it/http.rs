//! The query API through the router, in process (`oneshot`, no socket).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{Duration, Utc};
use fabric_audit::http::{self, BearerTokens, AUDIT_READ};
use fabric_audit::{AuditLayer, AuditRecord, Batch, DatabaseSink, Sink, Store};
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::Value;
use tower::ServiceExt;

use crate::db::TestDb;
use crate::support::{pipeline, Collect};

const READER: &str = "reader-token";
const OUTSIDER: &str = "outsider-token";

/// A router over 40 stored records in a fresh SQLite database, and what
/// they are.
async fn app() -> (axum::Router, Vec<AuditRecord>, TestDb) {
    let db = crate::db::sqlite();
    let (app, model) = app_on(&db.url).await;
    (app, model, db)
}

/// A router over 40 records stored in the database at `url`.
async fn app_on(url: &str) -> (axum::Router, Vec<AuditRecord>) {
    let url = url.to_owned();
    let now = Utc::now();
    let records: Vec<Arc<AuditRecord>> = (0..40)
        .map(|i| {
            let b = AuditRecord::builder(
                ["post.created", "post.deleted", "user.login", "post%_.odd"][i % 4],
            )
            .timestamp(now - Duration::minutes(i as i64))
            .actor_id(format!("u-{}", i % 3))
            .actor_type(if i % 5 == 0 { "service" } else { "user" })
            .actor_flags(if i % 7 == 0 { vec!["admin"] } else { vec![] })
            .resource("post", (i % 4).to_string());
            Arc::new(b.build())
        })
        .collect();
    let model = records.iter().map(|r| (**r).clone()).collect();
    let u = url.clone();
    tokio::task::spawn_blocking(move || {
        DatabaseSink::builder(u)
            .build()
            .unwrap()
            .write(&Batch::new(&records))
            .unwrap()
    })
    .await
    .unwrap();
    let store = Store::connect(&url).await.unwrap();
    let tokens = BearerTokens::new()
        .token("dashboard", READER, [AUDIT_READ])
        .token("intern", OUTSIDER, ["posts:write"]);
    (http::router(store, tokens), model)
}

async fn call(app: &axum::Router, uri: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut request = Request::get(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, body)
}

fn ids_of(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

fn newest_first_ids(model: &[AuditRecord], keep: impl Fn(&AuditRecord) -> bool) -> Vec<String> {
    let mut kept: Vec<&AuditRecord> = model.iter().filter(|r| keep(r)).collect();
    kept.sort_by_key(|r| std::cmp::Reverse((r.timestamp(), r.id())));
    kept.iter().map(|r| r.id().to_string()).collect()
}

/// Follows `next_cursor` from `uri` to the end.
async fn walk(app: &axum::Router, uri: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut next = uri.to_owned();
    loop {
        let (status, body) = call(app, &next, Some(READER)).await;
        assert_eq!(status, StatusCode::OK, "{next}: {body}");
        ids.extend(ids_of(&body));
        match body["next_cursor"].as_str() {
            Some(cursor) => next = format!("{uri}&cursor={cursor}"),
            None => return ids,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_filter_and_combination_over_http() {
    let (app, model, _dir) = app().await;
    let mid = model[20].timestamp();
    let mid_text = mid.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let enc = |s: &str| s.replace('%', "%25").replace('+', "%2B");
    type Keep = Box<dyn Fn(&AuditRecord) -> bool>;
    let cases: Vec<(String, Keep)> = vec![
        ("limit=7".into(), Box::new(|_| true)),
        (
            "actor_id=u-1&limit=7".into(),
            Box::new(|r| r.actor_id() == Some("u-1")),
        ),
        (
            "actor_type=service&limit=7".into(),
            Box::new(|r| r.actor_type() == Some("service")),
        ),
        (
            "action=post.created&limit=7".into(),
            Box::new(|r| r.action() == "post.created"),
        ),
        (
            "action=post.&limit=7".into(),
            Box::new(|r| r.action().starts_with("post.")),
        ),
        (
            format!("action={}&limit=7", enc("post%_.")),
            Box::new(|r| r.action().starts_with("post%_.")),
        ),
        (
            "resource_type=post&resource_id=2&limit=7".into(),
            Box::new(|r| r.resource_id() == Some("2")),
        ),
        (
            format!("from={}&limit=7", enc(&mid_text)),
            Box::new(move |r| r.timestamp() >= mid),
        ),
        (
            format!("to={}&limit=7", enc(&mid_text)),
            Box::new(move |r| r.timestamp() < mid),
        ),
        (
            "has_flag=admin&limit=7".into(),
            Box::new(|r| r.actor_flags().any(|f| f == "admin")),
        ),
        (
            format!("action=post.&actor_type=user&to={}&limit=7", enc(&mid_text)),
            Box::new(move |r| {
                r.action().starts_with("post.")
                    && r.actor_type() == Some("user")
                    && r.timestamp() < mid
            }),
        ),
    ];
    for (query, keep) in cases {
        let got = walk(&app, &format!("/api/v1/audit?{query}")).await;
        assert_eq!(got, newest_first_ids(&model, keep), "{query}");
    }
    let (status, body) = call(&app, "/api/v1/audit", Some(READER)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["items"].as_array().unwrap().len(),
        40,
        "default limit 50"
    );
    assert_eq!(body["next_cursor"], Value::Null);
}

#[tokio::test(flavor = "multi_thread")]
async fn authorization_not_found_and_one_record() {
    let (app, model, _dir) = app().await;
    let one = &model[3];
    let uri = format!("/api/v1/audit/{}", one.id());
    let cases = [
        (None, StatusCode::UNAUTHORIZED, "unauthorized"),
        (
            Some("wrong-token"),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (Some(OUTSIDER), StatusCode::FORBIDDEN, "forbidden"),
    ];
    for path in ["/api/v1/audit", uri.as_str()] {
        for (token, status, code) in cases {
            let (got, body) = call(&app, path, token).await;
            assert_eq!(got, status, "{path} {token:?}");
            assert_eq!(body["error"]["code"], code, "{body}");
        }
    }
    let (status, body) = call(&app, &uri, Some(READER)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json::from_value::<AuditRecord>(body).unwrap(), *one);
    let missing = format!("/api/v1/audit/{}", uuid::Uuid::now_v7());
    let (status, body) = call(&app, &missing, Some(READER)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_a_400_with_a_json_body() {
    let (app, _, _dir) = app().await;
    let cases = [
        ("/api/v1/audit?actor=u-1", "unknown parameter `actor`"),
        (
            "/api/v1/audit?from=yesterday",
            "`from` is not an RFC 3339 timestamp",
        ),
        (
            "/api/v1/audit?to=2026-13-01T00:00:00Z",
            "`to` is not an RFC 3339 timestamp",
        ),
        ("/api/v1/audit?limit=0", "`limit` must be from 1 to 1000"),
        ("/api/v1/audit?limit=1001", "`limit` must be from 1 to 1000"),
        ("/api/v1/audit?limit=ten", "`limit` must be a whole number"),
        ("/api/v1/audit?cursor=abc", "`cursor` is not a cursor"),
        (
            "/api/v1/audit?actor_id=a&actor_id=b",
            "`actor_id` is given twice",
        ),
        ("/api/v1/audit?actor_id=", "`actor_id` is empty"),
        ("/api/v1/audit/not-a-uuid", "the id is not a UUID"),
    ];
    for (uri, message) in cases {
        let (status, body) = call(&app, uri, Some(READER)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(body["error"]["code"], "bad_request", "{uri}");
        let text = body["error"]["message"].as_str().unwrap();
        assert!(text.starts_with(message), "{uri}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_query_strings_are_refused_by_name_or_matched_as_given() {
    let (app, model, _dir) = app().await;
    // Near the longest URI `http` admits (64 KiB); 1 MiB values are the
    // parser's unit tests' (`AuditQuery::from_pairs`).
    let mega = "a".repeat(60_000);
    let refused = [
        ("actor_id=%FF", "`actor_id` is not valid UTF-8".to_owned()),
        (
            "action=post.%C3%28",
            "`action` is not valid UTF-8".to_owned(),
        ),
        (
            "%FF%FE=1",
            "unknown parameter `\u{fffd}\u{fffd}`".to_owned(),
        ),
        ("action%00=post.", "unknown parameter `action\0`".to_owned()),
        (
            &*format!("{mega}=1"),
            format!("unknown parameter `{}`", "a".repeat(64)),
        ),
        (
            "limit=-1",
            "`limit` must be a whole number from 1 to 1000".into(),
        ),
        (
            "limit=18446744073709551616",
            "`limit` must be a whole number from 1 to 1000".into(),
        ),
        (
            "limit=4294967295",
            "`limit` must be from 1 to 1000, not 4294967295".into(),
        ),
        ("limit=1&limit=1", "`limit` is given twice".into()),
        ("limit=1&limit=", "`limit` is empty".into()),
        ("from=", "`from` is empty".into()),
        ("from", "`from` is empty".into()),
        (
            "from=2026-01-01T00:00:00Z%00",
            "`from` is not an RFC 3339 timestamp".into(),
        ),
        (
            &*format!("to={mega}"),
            "`to` is not an RFC 3339 timestamp".into(),
        ),
    ];
    for (query, message) in &refused {
        let (status, body) = call(&app, &format!("/api/v1/audit?{query}"), Some(READER)).await;
        let shown: String = query.chars().take(40).collect();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{shown}");
        assert_eq!(body["error"]["code"], "bad_request", "{shown}");
        assert_eq!(body["error"]["message"], message.as_str(), "{shown}");
    }
    // Text that no record has is a filter like any other: nothing matches.
    for value in ["%00", "a%07b%0D%0A", "%25_%5C", &*mega, "%E2%82%AC"] {
        let (status, body) = call(
            &app,
            &format!("/api/v1/audit?actor_id={value}"),
            Some(READER),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{}", &value[..value.len().min(20)]);
        assert_eq!(body["items"], serde_json::json!([]));
    }
    // `+` is a space, stray `&` are nothing, and `%2B` is a plus sign.
    let (status, body) = call(
        &app,
        "/api/v1/audit?&&action=user.login&limit=%2B2&",
        Some(READER),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let newest = model.iter().filter(|r| r.action() == "user.login").take(2);
    let want: Vec<String> = newest.map(|r| r.id().to_string()).collect();
    let got: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread")]
async fn count_true_adds_a_total_bounded_by_the_stores_cap() {
    let (app, model, db) = app().await;
    // Default cap: exact. Only with count=true; the page is unchanged.
    let (status, body) = call(
        &app,
        "/api/v1/audit?action=post.&limit=3&count=true",
        Some(READER),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let matching = model
        .iter()
        .filter(|r| r.action().starts_with("post."))
        .count();
    assert_eq!(body["total"], matching);
    assert_eq!(body["total_is_lower_bound"], false);
    assert_eq!(body["items"].as_array().unwrap().len(), 3);
    for uri in ["/api/v1/audit?action=post.", "/api/v1/audit?count=false"] {
        let (_, body) = call(&app, uri, Some(READER)).await;
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["items", "next_cursor"], "{uri}");
    }
    // A store with a small cap: cap - 1, cap, cap + 1 matching.
    let store = Store::builder(&db.url)
        .count_cap(10)
        .connect()
        .await
        .unwrap();
    let tokens = BearerTokens::new().token("dashboard", READER, [AUDIT_READ]);
    let small: axum::Router = http::router(store, tokens);
    let cases = [
        (9, 9, false),
        (10, 10, false),
        (11, 10, true),
        (40, 10, true),
    ];
    for (limit_to, total, lower) in cases {
        // The newest `limit_to` records are those after the next one's time.
        let mut uri = "/api/v1/audit?count=true".to_owned();
        if let Some(next) = model.get(limit_to) {
            let from = next.timestamp() + chrono::Duration::microseconds(1);
            uri = format!("{uri}&from={}", from.format("%Y-%m-%dT%H:%M:%S%.6fZ"));
        }
        let (status, body) = call(&small, &uri, Some(READER)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            (
                body["total"].as_u64(),
                body["total_is_lower_bound"].as_bool()
            ),
            (Some(total), Some(lower)),
            "{limit_to} matching"
        );
    }
    // Hostile values of `count`.
    let refused = [
        ("count=TRUE", "`count` must be true or false"),
        ("count=1", "`count` must be true or false"),
        ("count=true%00", "`count` must be true or false"),
        ("count=%FF", "`count` must be true or false"),
        ("count=", "`count` is empty"),
        ("count=true&count=false", "`count` is given twice"),
    ];
    for (query, message) in refused {
        let (status, body) = call(&app, &format!("/api/v1/audit?{query}"), Some(READER)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(body["error"]["message"], message, "{query}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_record_carries_every_parameter_as_given() {
    let (app, _, _dir) = app().await;
    let sink = Collect::default();
    let (dispatch, audit) = pipeline(AuditLayer::builder().sink("collect", sink.clone()));
    let given = [
        ("actor_id", "u%001", "u\u{0}1"),
        ("actor_type", "user", "user"),
        ("action", "post.", "post."),
        ("resource_type", "post", "post"),
        ("resource_id", "a+b", "a b"),
        (
            "from",
            "2026-01-01T00:00:00%2B01:00",
            "2026-01-01T00:00:00+01:00",
        ),
        ("to", "2027-01-01T00:00:00Z", "2027-01-01T00:00:00Z"),
        ("has_flag", "admin", "admin"),
        ("limit", "007", "007"),
    ];
    let query: Vec<String> = given.iter().map(|(k, v, _)| format!("{k}={v}")).collect();
    {
        let _guard = tracing::dispatcher::set_default(&dispatch);
        let uri = format!("/api/v1/audit?{}", query.join("&"));
        let (status, body) = call(&app, &uri, Some(READER)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    audit.shutdown().await;
    let records = sink.records();
    assert_eq!(records.len(), 1, "{records:?}");
    let detail: Vec<(String, Value)> = records[0]
        .detail()
        .map(|(k, v)| (k.to_owned(), v.to_json()))
        .collect();
    let want: Vec<(String, Value)> = given
        .iter()
        .map(|(k, _, v)| (format!("filter.{k}"), Value::from(*v)))
        .collect();
    assert_eq!(
        detail, want,
        "the keys users know, the values as given, nothing else"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_are_audited() {
    let (app, model, _dir) = app().await;
    let sink = Collect::default();
    let (dispatch, audit) = pipeline(AuditLayer::builder().sink("collect", sink.clone()));
    {
        let _guard = tracing::dispatcher::set_default(&dispatch);
        call(&app, "/api/v1/audit?action=post.&limit=5", Some(READER)).await;
        call(
            &app,
            &format!("/api/v1/audit/{}", model[0].id()),
            Some(READER),
        )
        .await;
        // A refused request reads nothing: it is recorded as denied.
        call(&app, "/api/v1/audit", Some(OUTSIDER)).await;
    }
    audit.shutdown().await;
    let records = sink.records();
    let reads: Vec<_> = records
        .iter()
        .filter(|r| r.action() == "audit.read")
        .collect();
    assert_eq!(reads.len(), 2, "{records:?}");
    assert!(reads.iter().all(|r| r.actor_id() == Some("dashboard")));
    assert_eq!(reads[0].actor_type(), Some("api_key"));
    assert_eq!(
        reads[0].detail_value("filter.action").unwrap().to_json(),
        "post."
    );
    assert_eq!(
        reads[0].detail_value("filter.limit").unwrap().to_json(),
        "5"
    );
    assert_eq!(reads[0].detail_value("filter.actor_id"), None);
    assert_eq!(
        reads[1].detail_value("filter.id").unwrap().to_json(),
        model[0].id().to_string()
    );
    assert_eq!(records.len(), 3, "and one denied: {records:?}");
}

/// An answer: status, headers, body as JSON (`Null` when it is not JSON).
struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

async fn send(app: &axum::Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

fn request(method: &str, uri: &str, authorization: &[&str]) -> Request<Body> {
    let mut request = Request::builder().method(method).uri(uri);
    for value in authorization {
        request = request.header("authorization", *value);
    }
    request.body(Body::empty()).unwrap()
}

/// Asserts the JSON error body with `code`, and the header every 401 has.
fn assert_error(reply: &Reply, status: StatusCode, code: &str, case: &str) {
    assert_eq!(reply.status, status, "{case}: {}", reply.body);
    assert_eq!(reply.body["error"]["code"], code, "{case}: {}", reply.body);
    assert!(reply.body["error"]["message"].is_string(), "{case}");
    assert_eq!(
        reply.headers.get("content-type").unwrap(),
        "application/json",
        "{case}"
    );
    let challenge = reply.headers.get("www-authenticate");
    if status == StatusCode::UNAUTHORIZED {
        assert_eq!(challenge.unwrap(), "Bearer realm=\"audit\"", "{case}");
    } else {
        assert_eq!(challenge, None, "{case}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_are_authenticated_first_and_answered_in_json() {
    let (app, model, _dir) = app().await;
    let one = format!("/api/v1/audit/{}", model[0].id());
    let reader = format!("Bearer {READER}");
    let outsider = format!("Bearer {OUTSIDER}");
    let targets = [
        ("GET", "/api/v1/audit/%FF"),
        ("GET", "/api/v1/audit/%00"),
        ("GET", "/api/v1/audit/not-a-uuid"),
        ("GET", "/api/v1/audit?%ZZ=1"),
        ("GET", "/api/v1/audit?limit=%FF"),
        ("POST", "/api/v1/audit"),
        ("DELETE", one.as_str()),
        ("PUT", "/api/v1/audit/%FF"),
        ("PATCH", one.as_str()),
    ];
    for (method, uri) in targets {
        let refusals = [
            (None, StatusCode::UNAUTHORIZED, "unauthorized"),
            (
                Some("Bearer nope"),
                StatusCode::UNAUTHORIZED,
                "unauthorized",
            ),
            (Some(outsider.as_str()), StatusCode::FORBIDDEN, "forbidden"),
        ];
        for (authorization, status, code) in refusals {
            let case = format!("{method} {uri} with {authorization:?}");
            let reply = send(&app, request(method, uri, &Vec::from_iter(authorization))).await;
            assert_error(&reply, status, code, &case);
        }

        let case = format!("{method} {uri} with credentials");
        let reply = send(&app, request(method, uri, &[&reader])).await;
        if method == "GET" {
            assert_error(&reply, StatusCode::BAD_REQUEST, "bad_request", &case);
        } else {
            assert_error(
                &reply,
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                &case,
            );
            let allow = reply.headers.get("allow").unwrap().to_str().unwrap();
            assert!(allow.contains("GET"), "{case}: {allow}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bearer_scheme_is_case_insensitive_and_ambiguity_is_refused() {
    let (app, _, _dir) = app().await;
    for value in [
        format!("Bearer {READER}"),
        format!("bearer {READER}"),
        format!("BEARER   {READER}"),
        format!("Bearer\t{READER}"),
    ] {
        let reply = send(&app, request("GET", "/api/v1/audit?limit=1", &[&value])).await;
        assert_eq!(reply.status, StatusCode::OK, "{value:?}: {}", reply.body);
    }
    let huge = format!("Bearer {}", "A".repeat(1 << 20));
    let cases: [&[&str]; 6] = [
        &["Basic cmVhZGVyOnRva2Vu"],
        &[&huge],
        &["Bearer"],
        &["Bearer reader-token extra"],
        &["Bearerreader-token"],
        // Two headers, one good: which one was meant is not ours to guess.
        &["Bearer reader-token", "Bearer nope"],
    ];
    for authorization in cases {
        let reply = send(&app, request("GET", "/api/v1/audit", authorization)).await;
        let case = format!("{authorization:?}");
        assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized", &case);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn denied_reads_are_audited_with_the_reason() {
    let (app, _, _dir) = app().await;
    // As an application mounts it: behind the request-context layer.
    let app = app.layer(http::request_context());
    let outsider = format!("Bearer {OUTSIDER}");
    let calls = [
        ("/api/v1/audit?action=post.", None),
        ("/api/v1/audit/%FF", Some("Bearer guessed")),
        ("/api/v1/audit?limit=3", Some(outsider.as_str())),
    ];
    let sink = Collect::default();
    let (dispatch, audit) = pipeline(AuditLayer::builder().sink("collect", sink.clone()));
    {
        let _guard = tracing::dispatcher::set_default(&dispatch);
        for (uri, authorization) in calls {
            let mut request = request("GET", uri, &Vec::from_iter(authorization));
            let peer: std::net::SocketAddr = "203.0.113.9:5000".parse().unwrap();
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            let reply = send(&app, request).await;
            assert!(reply.status.is_client_error());
        }
    }
    let report = audit.shutdown().await;
    assert!(report.is_lossless(), "{report}");
    let records = sink.records();
    assert_eq!(records.len(), 3, "{records:?}");
    let want = [
        (None, "no_credentials", 401, "/api/v1/audit"),
        (None, "bad_credentials", 401, "/api/v1/audit/%FF"),
        (Some("intern"), "missing_permission", 403, "/api/v1/audit"),
    ];
    for (r, (actor, reason, status, path)) in records.iter().zip(want) {
        assert_eq!(r.action(), "audit.read.denied");
        assert_eq!(r.actor_id(), actor, "{r:?}");
        let detail = |key| r.detail_value(key).unwrap().to_json();
        assert_eq!(detail("reason"), reason);
        assert_eq!(detail("status"), status);
        assert_eq!(detail("path"), path);
        assert_eq!(detail("method"), "GET");
        assert_eq!(detail("suppressed"), 0);
        assert_eq!(r.client_ip(), Some("203.0.113.9"), "from the request span");
        assert!(r.request_id().is_some());
    }
    assert_eq!(records[2].actor_type(), Some("api_key"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_denied_reads_gives_a_bounded_number_of_records() {
    use std::time::{Duration as StdDuration, Instant};
    const FLOOD: usize = 10_000;
    let (app, _, _dir) = app().await;
    let sink = Collect::default();
    let (dispatch, audit) = pipeline(AuditLayer::builder().sink("collect", sink.clone()));
    let _guard = tracing::dispatcher::set_default(&dispatch);
    let started = Instant::now();
    for i in 0..FLOOD {
        let authorization: &[&str] = if i % 2 == 0 { &[] } else { &["Bearer guessed"] };
        let reply = send(&app, request("GET", "/api/v1/audit", authorization)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    // The windows the flood touched, whole seconds.
    let windows = started.elapsed().as_secs() + 2;
    audit.flush().await.unwrap();
    let during = sink.len();
    assert!(
        during as u64 <= 10 * windows,
        "{during} records over {windows} windows"
    );
    assert!(during >= 10, "the first second's budget is used: {during}");

    // Once the budget is back, the next denied record counts the rest:
    // wait for it (bounded), knocking until one is recorded.
    let deadline = Instant::now() + StdDuration::from_secs(5);
    let mut sent = FLOOD;
    while sink.len() == during {
        assert!(
            Instant::now() < deadline,
            "no denied record after the flood"
        );
        tokio::time::sleep(StdDuration::from_millis(20)).await;
        send(&app, request("GET", "/api/v1/audit", &[])).await;
        sent += 1;
        audit.flush().await.unwrap();
    }
    let records = sink.records();
    assert!(records.iter().all(|r| r.action() == "audit.read.denied"));
    let suppressed: Vec<usize> = records
        .iter()
        .map(|r| {
            let n = r.detail_value("suppressed").unwrap().to_json();
            usize::try_from(n.as_u64().unwrap()).unwrap()
        })
        .collect();
    assert!(*suppressed.last().unwrap() > 0, "{suppressed:?}");
    assert_eq!(
        records.len() + suppressed.iter().sum::<usize>(),
        sent,
        "every refusal is a record or counted in one"
    );
}

/// Query strings with hostile values: NUL, control characters, long
/// values (as long as a URI may be: the `http` crate caps a URI at 64 KiB,
/// so a 1 MB value cannot be sent), bad percent-encoding, unknown and
/// repeated keys.
fn hostile_query() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("actor_id"),
        Just("actor_type"),
        Just("action"),
        Just("resource_type"),
        Just("resource_id"),
        Just("has_flag"),
        Just("from"),
        Just("to"),
        Just("limit"),
        Just("cursor"),
        Just("bogus"),
    ];
    // At most 10 000 characters, 30 KB encoded: two fit in a URI.
    let long = ("[a-z.\\x00\\x01]{1,4}", 0usize..10_000)
        .prop_map(|(s, n)| s.repeat(n).chars().take(10_000).collect::<String>());
    let value = prop_oneof![
        4 => any::<String>(),
        2 => "[\\x00-\\x1f\\x7f.%_a]{1,20}",
        1 => long,
        1 => Just("\0".to_owned()),
        1 => Just("post.\0".to_owned()),
    ];
    let encoded = prop::collection::vec((key, value), 1..3)
        .prop_map(|pairs| serde_urlencoded::to_string(&pairs).unwrap());
    prop_oneof![
        3 => encoded,
        1 => "[a-z_=&%.:+0-9A-Fé-]{0,40}".prop_map(|q| q.replace('é', "%C3%A9")),
    ]
}

/// The property: whatever the query string, the answer is not a 5xx.
fn never_a_5xx(url: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (app, _) = rt.block_on(app_on(url));
    let config = ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    runner
        .run(&hostile_query(), |query| {
            let uri = format!("/api/v1/audit?{query}");
            let (status, body) = rt.block_on(call(&app, &uri, Some(READER)));
            prop_assert!(!status.is_server_error(), "{status}: {body}");
            Ok(())
        })
        .unwrap();
}

mod never_a_5xx {
    #[test]
    fn sqlite() {
        let db = crate::db::sqlite();
        super::never_a_5xx(&db.url);
    }

    #[cfg(feature = "postgres")]
    #[test]
    #[ignore = "needs PostgreSQL (see .ci/run)"]
    fn postgres() {
        let db = crate::db::postgres();
        super::never_a_5xx(&db.url);
    }

    #[cfg(feature = "mysql")]
    #[test]
    #[ignore = "needs MariaDB (see .ci/run)"]
    fn mysql() {
        let db = crate::db::mysql();
        super::never_a_5xx(&db.url);
    }
}

mod context {
    use std::net::SocketAddr;

    use axum::extract::{ConnectInfo, Request};
    use axum::middleware::{from_fn, Next};
    use axum::response::Response;
    use axum::routing::post;
    use axum::Router;
    use fabric_audit::audit;
    use fabric_audit::http::{request_context, ClientIpSource, RequestContextLayer, RequestSpan};

    use super::*;
    use crate::support::User;

    /// What an application's authentication does: find the user, record it
    /// on the request span.
    async fn demo_auth(request: Request, next: Next) -> Response {
        if request.headers().contains_key("x-demo-user") {
            let span = request.extensions().get::<RequestSpan>().unwrap().clone();
            span.record_actor(&User::alice());
        }
        next.run(request).await
    }

    async fn create_post() -> &'static str {
        audit!(
            action = "post.created",
            resource_type = "post",
            resource_id = 7
        );
        "created"
    }

    fn app(layer: RequestContextLayer) -> Router {
        Router::new()
            .route("/posts", post(create_post))
            .layer(from_fn(demo_auth))
            .layer(layer)
    }

    async fn post_with(app: &Router, headers: &[(&str, &str)]) -> AuditRecord {
        let sink = Collect::default();
        let (dispatch, audit) = pipeline(AuditLayer::builder().sink("collect", sink.clone()));
        {
            let _guard = tracing::dispatcher::set_default(&dispatch);
            let mut request = Request::post("/posts");
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let mut request = request.body(Body::empty()).unwrap();
            let peer: SocketAddr = "203.0.113.9:5000".parse().unwrap();
            request.extensions_mut().insert(ConnectInfo(peer));
            let response = app.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        }
        let report = audit.shutdown().await;
        assert_eq!(sink.len(), 1, "{report}");
        sink.only()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn handlers_get_the_request_and_the_actor_from_the_span() {
        let app = app(request_context());
        let r = post_with(
            &app,
            &[
                ("x-request-id", "req-1"),
                ("user-agent", "test/1"),
                ("x-demo-user", "alice"),
            ],
        )
        .await;
        assert_eq!(r.request_id(), Some("req-1"));
        assert_eq!(r.client_ip(), Some("203.0.113.9"));
        assert_eq!(r.user_agent(), Some("test/1"));
        assert_eq!(r.actor_id(), Some("u-alice"));
        assert_eq!(r.actor_type(), Some("user"));
        assert_eq!(r.actor_email(), Some("alice@example.com"));
        assert_eq!(r.actor_flags().collect::<Vec<_>>(), ["admin", "billing,ro"]);
        assert_eq!(r.resource_id(), Some("7"));

        // No request id given: one is made; no user: no actor.
        let r = post_with(&app, &[("x-forwarded-for", "198.51.100.1")]).await;
        let id = uuid::Uuid::parse_str(r.request_id().unwrap()).unwrap();
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(r.actor_id(), None);
        assert_eq!(
            r.client_ip(),
            Some("203.0.113.9"),
            "X-Forwarded-For is not trusted by default"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_client_address_comes_from_the_chosen_source_only() {
        let spoofed = [
            ("x-forwarded-for", "6.6.6.6, 198.51.100.1"),
            ("x-real-ip", "6.6.6.7"),
            ("forwarded", "for=6.6.6.8"),
            ("cf-connecting-ip", "6.6.6.9"),
        ];
        type Headers<'a> = &'a [(&'a str, &'a str)];
        let cases: [(ClientIpSource, Headers, Option<&str>); 9] = [
            // The default: the socket's peer, whatever the headers say.
            (ClientIpSource::ConnectInfo, &spoofed, Some("203.0.113.9")),
            // The proxy appends the peer it saw: the client wrote the rest.
            (
                ClientIpSource::RightmostXForwardedFor,
                &[("x-forwarded-for", "6.6.6.6, 10.9.9.9, 198.51.100.1")],
                Some("198.51.100.1"),
            ),
            (
                ClientIpSource::RightmostXForwardedFor,
                &[
                    ("x-forwarded-for", "6.6.6.6"),
                    ("x-forwarded-for", "198.51.100.2"),
                ],
                Some("198.51.100.2"),
            ),
            (
                ClientIpSource::RightmostXForwardedFor,
                &[("x-forwarded-for", "198.51.100.1, not an address")],
                None,
            ),
            (ClientIpSource::RightmostXForwardedFor, &[], None),
            (
                ClientIpSource::RightmostForwarded,
                &[("forwarded", "for=6.6.6.6, for=\"[2001:db8::1]:4711\"")],
                Some("2001:db8::1"),
            ),
            (
                ClientIpSource::XRealIp,
                &[("x-real-ip", "198.51.100.3")],
                Some("198.51.100.3"),
            ),
            (
                ClientIpSource::CfConnectingIp,
                &[
                    ("cf-connecting-ip", "198.51.100.4"),
                    ("x-real-ip", "6.6.6.6"),
                ],
                Some("198.51.100.4"),
            ),
            (ClientIpSource::XRealIp, &[("x-real-ip", "\u{1F600}")], None),
        ];
        for (source, headers, want) in cases {
            let app = app(request_context().client_ip_source(source.clone()));
            let r = post_with(&app, headers).await;
            assert_eq!(r.client_ip(), want, "{source:?} {headers:?}");
        }
    }

    /// Logs in twice on one request: the second actor must not inherit
    /// anything of the first.
    async fn switch_user(request: Request, next: Next) -> Response {
        let span = request.extensions().get::<RequestSpan>().unwrap().clone();
        span.record_actor(&User::alice());
        span.record_actor(&Bare("u-bob"));
        next.run(request).await
    }

    struct Bare(&'static str);

    impl fabric_audit::Principal for Bare {
        fn id(&self) -> std::borrow::Cow<'_, str> {
            self.0.into()
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn recording_an_actor_replaces_every_field_of_the_previous_one() {
        let app = Router::new()
            .route("/posts", post(create_post))
            .layer(from_fn(switch_user))
            .layer(request_context());
        let r = post_with(&app, &[]).await;
        assert_eq!(r.actor_id(), Some("u-bob"));
        assert_eq!(r.actor_flags().count(), 0, "alice's flags (admin!) stay");
        assert_ne!(r.actor_email(), Some("alice@example.com"));
        assert_ne!(r.actor_type(), Some("user"));
        // Needs the layer to read an empty string as absent (the lead's
        // change to src/layer/visit.rs); before it these are `Some("")`.
        assert_eq!(r.actor_email(), None);
        assert_eq!(r.actor_type(), None);
        assert_eq!(r.actor_name(), None);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn hostile_request_headers_are_contained() {
        let app = app(request_context());
        let huge = "x".repeat(1 << 20);
        for id in [huge.as_str(), "a\tb", "", "a b"] {
            let r = post_with(&app, &[("x-request-id", id)]).await;
            let made = uuid::Uuid::parse_str(r.request_id().unwrap()).unwrap();
            assert_eq!(made.get_version_num(), 7, "{:.20?} replaced", id);
        }
        let r = post_with(&app, &[("user-agent", &huge)]).await;
        assert_eq!(r.user_agent(), Some("x".repeat(512).as_str()));
        let r = post_with(&app, &[("user-agent", "a\tb")]).await;
        assert_eq!(r.user_agent(), Some("ab"));

        // Bytes that are not UTF-8 (obs-text), as a client may send them.
        let sink = Collect::default();
        let (dispatch, audit) = pipeline(AuditLayer::builder().sink("collect", sink.clone()));
        {
            let _guard = tracing::dispatcher::set_default(&dispatch);
            let mut request = Request::post("/posts").body(Body::empty()).unwrap();
            let agent = axum::http::HeaderValue::from_bytes(b"caf\xe9/1\xff").unwrap();
            request.headers_mut().insert("user-agent", agent);
            let response = app.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        }
        audit.shutdown().await;
        assert_eq!(sink.only().user_agent(), Some("caf\u{fffd}/1\u{fffd}"));
    }
}

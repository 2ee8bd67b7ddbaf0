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

use crate::support::{pipeline, Collect};

const READER: &str = "reader-token";
const OUTSIDER: &str = "outsider-token";

/// A router over 40 stored records, and what they are.
async fn app() -> (axum::Router, Vec<AuditRecord>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
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
    (http::router(store, tokens), model, dir)
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
        // Refused requests read nothing and record nothing.
        call(&app, "/api/v1/audit", Some(OUTSIDER)).await;
    }
    audit.shutdown().await;
    let reads = sink.records();
    assert_eq!(reads.len(), 2, "{reads:?}");
    assert!(reads
        .iter()
        .all(|r| r.action() == "audit.read" && r.actor_id() == Some("dashboard")));
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
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn arbitrary_query_strings_never_give_a_5xx(query in "[a-z_=&%.:+0-9A-Fé-]{0,40}") {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let status = rt.block_on(async {
            let (app, _, _dir) = app().await;
            call(&app, &format!("/api/v1/audit?{}", query.replace('é', "%C3%A9")), Some(READER)).await.0
        });
        prop_assert!(!status.is_server_error(), "{query}: {status}");
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
    use fabric_audit::http::{request_context, RequestContextLayer, RequestSpan};

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
        audit.shutdown().await;
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
    async fn behind_a_proxy_the_forwarded_address_is_used_when_trusted() {
        let app = app(request_context().trust_forwarded_for(true));
        let r = post_with(&app, &[("x-forwarded-for", "198.51.100.1, 10.0.0.1")]).await;
        assert_eq!(r.client_ip(), Some("198.51.100.1"));
        let r = post_with(&app, &[("x-forwarded-for", "not an address")]).await;
        assert_eq!(r.client_ip(), Some("203.0.113.9"));
    }
}

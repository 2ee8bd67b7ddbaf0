//! Request outcomes on record, through a router in process.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::Router;
use fabric_audit::http::{audit_outcomes, request_context, RequestSpan};
use fabric_audit::{AuditLayer, AuditRecord, DetailValue};
use tower::ServiceExt;
use tracing::instrument::WithSubscriber;

use crate::support::{pipeline, Collect, User};

fn app() -> Router {
    Router::new()
        .route("/posts/{id}", get(|| async { "a post" }))
        .route("/secret", get(|| async { StatusCode::FORBIDDEN }))
        .route("/boom", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
        .route("/bad", get(|| async { StatusCode::UNPROCESSABLE_ENTITY }))
        .route_layer(audit_outcomes())
        .layer(axum::middleware::from_fn(
            |request: axum::extract::Request, next: axum::middleware::Next| async move {
                if request.headers().contains_key("x-user") {
                    let span = request.extensions().get::<RequestSpan>().unwrap();
                    span.record_actor(&User::alice());
                }
                next.run(request).await
            },
        ))
        .layer(request_context())
}

async fn outcomes(app: Router, requests: &[(&str, bool)]) -> Vec<AuditRecord> {
    let sink = Collect::default();
    let (dispatch, audit) = pipeline(AuditLayer::builder().sink("collect", sink.clone()));
    for (uri, user) in requests {
        let mut request = Request::get(*uri).header("x-request-id", format!("req{uri}"));
        if *user {
            request = request.header("x-user", "1");
        }
        let request = request.body(Body::empty()).unwrap();
        app.clone()
            .oneshot(request)
            .with_subscriber(dispatch.clone())
            .await
            .unwrap();
    }
    audit.shutdown().await;
    sink.records()
}

#[tokio::test]
async fn each_request_leaves_its_outcome_with_route_and_actor() {
    let records = outcomes(
        app(),
        &[
            ("/posts/42", true),
            ("/secret", false),
            ("/boom", true),
            ("/bad", false),
            ("/nowhere", false),
        ],
    )
    .await;
    let actions: Vec<&str> = records.iter().map(|r| r.action()).collect();
    // The unmatched route is not wrapped by a route layer: not recorded.
    assert_eq!(
        actions,
        [
            "http.request.ok",
            "http.request.denied",
            "http.request.failed",
            "http.request.invalid"
        ]
    );
    let first = &records[0];
    assert_eq!(
        first.detail_value("http.route"),
        Some(DetailValue::Str("/posts/{id}"))
    );
    assert_eq!(
        first.detail_value("http.method"),
        Some(DetailValue::Str("GET"))
    );
    assert_eq!(
        first.detail_value("http.status"),
        Some(DetailValue::I64(200))
    );
    assert!(matches!(first.detail_value("latency_ms"), Some(DetailValue::F64(ms)) if ms >= 0.0));
    assert_eq!(first.actor_id(), Some("u-alice"));
    assert_eq!(first.request_id(), Some("req/posts/42"));
    let denied = &records[1];
    assert_eq!(denied.actor_id(), None);
    assert_eq!(
        denied.detail_value("http.status"),
        Some(DetailValue::I64(403))
    );
    assert_eq!(records[2].actor_id(), Some("u-alice"));
}

#[tokio::test]
async fn errors_only_skips_the_successes() {
    let app = Router::new()
        .route("/ok", get(|| async { "fine" }))
        .route("/secret", get(|| async { StatusCode::UNAUTHORIZED }))
        .route_layer(audit_outcomes().errors_only(true))
        .layer(request_context());
    let records = outcomes(app, &[("/ok", false), ("/secret", false), ("/ok", false)]).await;
    let actions: Vec<&str> = records.iter().map(|r| r.action()).collect();
    assert_eq!(actions, ["http.request.denied"]);
}

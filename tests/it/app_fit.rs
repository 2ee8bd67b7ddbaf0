//! Fitting into a real application: its state, its filters, its headers.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::Router;
use fabric_audit::http::{self, request_context, BearerTokens, AUDIT_READ};
use fabric_audit::{audit, exclude_audit, AuditLayer, Store};
use tower::ServiceExt;
use tracing::instrument::WithSubscriber;
use tracing_subscriber::prelude::*;

use crate::support::Collect;

/// An application's own state, as axum apps have.
#[derive(Clone)]
struct AppState {
    greeting: Arc<str>,
}

async fn hello(State(state): State<AppState>) -> String {
    audit!(action = "hello.said", "words" = state.greeting.len());
    state.greeting.to_string()
}

#[tokio::test]
async fn the_query_api_merges_into_a_router_with_state_and_echoes_the_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    let u = url.clone();
    tokio::task::spawn_blocking(move || fabric_audit::migrate(&u).unwrap())
        .await
        .unwrap();
    let store = Store::connect(&url).await.unwrap();
    let tokens = BearerTokens::new().token("ops", "t0ken", [AUDIT_READ]);
    // Merged before `with_state`: the API takes the application's state type.
    let app: Router = Router::<AppState>::new()
        .route("/hello", get(hello))
        .merge(http::router(store, tokens))
        .with_state(AppState {
            greeting: "hi".into(),
        })
        .layer(request_context());

    let response = app
        .clone()
        .oneshot(
            Request::get("/hello")
                .header("x-request-id", "req-from-client")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-request-id"], "req-from-client");

    // Without one, the response carries the id made for the request.
    let response = app
        .oneshot(
            Request::get("/api/v1/audit")
                .header("authorization", "Bearer t0ken")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let made = response.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(made).unwrap().get_version_num(), 7);
}

/// Collects every span name and field value another layer sees.
#[derive(Clone, Default)]
struct Printed(Arc<Mutex<Vec<String>>>);

impl<S> tracing_subscriber::Layer<S> for Printed
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0.lock().unwrap().push(format!(
            "span {} {:?}",
            attrs.metadata().name(),
            attrs.values()
        ));
    }

    fn on_record(
        &self,
        _: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0.lock().unwrap().push(format!("record {values:?}"));
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        self.0.lock().unwrap().push(format!("event {event:?}"));
    }
}

#[tokio::test]
async fn exclude_audit_keeps_the_request_span_and_its_actor_out_of_other_layers() {
    let printed = Printed::default();
    let sink = Collect::default();
    let (layer, audit) = AuditLayer::builder()
        .sink("collect", sink.clone())
        .build()
        .unwrap();
    let subscriber = tracing_subscriber::registry()
        .with(printed.clone().with_filter(exclude_audit()))
        .with(layer);
    let app: Router = Router::new()
        .route(
            "/me",
            get(|| async {
                tracing::info!(target: "app", "handling");
                audit!(action = "me.read");
                "me"
            }),
        )
        .layer(axum::middleware::from_fn(
            |request: axum::extract::Request, next: axum::middleware::Next| async move {
                let span = request.extensions().get::<http::RequestSpan>().unwrap();
                span.record_actor(&crate::support::User::alice());
                next.run(request).await
            },
        ))
        .layer(request_context());
    app.oneshot(Request::get("/me").body(Body::empty()).unwrap())
        .with_subscriber(subscriber)
        .await
        .unwrap();
    audit.shutdown().await;
    let record = sink.only();
    assert_eq!(record.actor_email(), Some("alice@example.com"));
    let printed = printed.0.lock().unwrap().join("\n");
    assert!(printed.contains("handling"), "{printed}");
    for secret in ["alice@example.com", "u-alice", "me.read"] {
        assert!(!printed.contains(secret), "{secret} leaked: {printed}");
    }
}

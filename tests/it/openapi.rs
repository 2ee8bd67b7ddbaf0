//! The served OpenAPI document: public, JSON, and the checked-in copy.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use fabric_audit::http::{router, BearerTokens};
use fabric_audit::Store;
use http_body_util::BodyExt;
use tower::ServiceExt;

#[tokio::test]
async fn the_document_is_served_without_credentials_and_equals_the_checked_in_one() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    let store = Store::connect(&url).await.unwrap();
    let app: axum::Router = router(
        store,
        BearerTokens::new().token("t", "secret", ["audit:read"]),
    );
    for auth in [None, Some("Bearer wrong"), Some("Bearer secret")] {
        let mut request = Request::get("/api/v1/audit/openapi.json");
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = app
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{auth:?}");
        assert_eq!(response.headers()["content-type"], "application/json");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let checked_in =
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json")).unwrap();
        assert!(
            body == checked_in,
            "openapi.json is not what the router serves"
        );
        let document: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(document["openapi"], "3.1.0");
    }
    // The rest of the API still wants credentials.
    let response = app
        .oneshot(Request::get("/api/v1/audit").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

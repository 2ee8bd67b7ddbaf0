//! The query API's requests through the `metrics` facade (feature
//! `metrics`): `fabric_audit_http_requests_total` by route pattern, method
//! and status, and `fabric_audit_http_request_duration_seconds` by route.
//! The route is axum's matched pattern (`/api/v1/audit/{id}`), never the
//! raw path, so an id does not become a label value.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

/// Counts the request and times it, around everything else (the refusals
/// of authentication included).
pub(crate) async fn count(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("fabric_audit_http_requests_total",
        "route" => route.clone(), "method" => method, "status" => status)
    .increment(1);
    metrics::histogram!("fabric_audit_http_request_duration_seconds", "route" => route)
        .record(started.elapsed());
    response
}

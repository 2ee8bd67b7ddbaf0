//! Request outcomes on record: a tower layer that audits how each request
//! of the routes it wraps ended, so that denied and failed requests are on
//! record without a line in any handler.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::MatchedPath;
use axum::http::{Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use crate::audit;

/// A tower layer that emits one audit record per request, when its
/// response is ready: the method, the matched route, the status and the
/// latency, with the actor and request context of the enclosing request
/// span (see [`request_context`](super::request_context)).
///
/// | status | action |
/// |---|---|
/// | 1xx to 3xx | `http.request.ok` |
/// | 401, 403 | `http.request.denied` |
/// | other 4xx | `http.request.invalid` |
/// | 5xx, or an error from the service | `http.request.failed` |
///
/// The detail holds `http.method`, `http.route` (the route pattern, such
/// as `/posts/{id}`, never the raw path with its ids), `http.status` and
/// `latency_ms`. Add it with `Router::route_layer`, so that the route is
/// known, inside the request-context layer, so that the actor is:
///
/// ```
/// use axum::{routing::get, Router};
/// use fabric_audit::http::{audit_outcomes, request_context};
///
/// let app: Router = Router::new()
///     .route("/posts/{id}", get(|| async { "a post" }))
///     .route_layer(audit_outcomes())
///     .layer(request_context());
/// ```
///
/// [`errors_only`](Self::errors_only) records only statuses from 400 up.
#[derive(Clone, Copy, Debug, Default)]
#[must_use]
pub struct AuditOutcomesLayer {
    errors_only: bool,
}

/// The layer that audits request outcomes; see [`AuditOutcomesLayer`].
pub fn audit_outcomes() -> AuditOutcomesLayer {
    AuditOutcomesLayer::default()
}

impl AuditOutcomesLayer {
    /// Record only requests answered with a status of 400 or more (and
    /// errors): denied, invalid and failed requests.
    pub fn errors_only(self, errors_only: bool) -> Self {
        Self { errors_only }
    }
}

impl<S> Layer<S> for AuditOutcomesLayer {
    type Service = AuditOutcomes<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuditOutcomes {
            inner,
            errors_only: self.errors_only,
        }
    }
}

/// The service made by [`AuditOutcomesLayer`].
#[derive(Clone, Debug)]
pub struct AuditOutcomes<S> {
    inner: S,
    errors_only: bool,
}

impl<S, B, R> Service<Request<B>> for AuditOutcomes<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = OutcomeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let seen = Seen {
            method: request.method().to_string(),
            route: request
                .extensions()
                .get::<MatchedPath>()
                .map(|p| p.as_str().to_owned()),
            started: Instant::now(),
            errors_only: self.errors_only,
        };
        OutcomeFuture {
            inner: self.inner.call(request),
            seen: Some(seen),
        }
    }
}

/// What the future keeps of the request until the response.
#[derive(Debug)]
struct Seen {
    method: String,
    route: Option<String>,
    started: Instant,
    errors_only: bool,
}

impl Seen {
    /// Emits the outcome record; `status` is `None` when the service failed.
    fn record(self, status: Option<StatusCode>) {
        let code = status.map(|s| s.as_u16());
        let action = match code {
            Some(401 | 403) => "http.request.denied",
            Some(400..=499) => "http.request.invalid",
            Some(500..) | None => "http.request.failed",
            Some(_) => "http.request.ok",
        };
        if self.errors_only && action == "http.request.ok" {
            return;
        }
        let latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        audit!(
            action = action,
            "http.method" = self.method.as_str(),
            "http.route" = self.route.as_deref(),
            "http.status" = code,
            latency_ms = latency_ms,
        );
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`AuditOutcomes`].
    pub struct OutcomeFuture<F> {
        #[pin]
        inner: F,
        seen: Option<Seen>,
    }
}

impl<F> std::fmt::Debug for OutcomeFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutcomeFuture").finish_non_exhaustive()
    }
}

impl<F, R, E> Future for OutcomeFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = std::task::ready!(this.inner.poll(cx));
        if let Some(seen) = this.seen.take() {
            seen.record(output.as_ref().ok().map(Response::status));
        }
        Poll::Ready(output)
    }
}

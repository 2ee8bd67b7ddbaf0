//! The request span: what lets `audit!` in a handler know the request and
//! the actor without being told.

use std::net::SocketAddr;
use std::task::{Context, Poll};

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderValue, Request};
use tower_layer::Layer;
use tower_service::Service;
use tracing::field::Empty;
use tracing::instrument::{Instrument, Instrumented};
use tracing::Span;

use crate::Principal;

/// The header a request id is read from and echoed back in.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// A tower layer that runs each request inside an `INFO` span named
/// `request` carrying `request_id` (from `x-request-id`, else a new UUID
/// v7), `client_ip` and `user_agent`, and empty actor fields that
/// authentication fills with [`RequestSpan::record_actor`]. Every `audit!`
/// in the request then carries them.
///
/// The client address comes from axum's `ConnectInfo` (serve with
/// `into_make_service_with_connect_info`); behind a proxy, opt in to the
/// first `X-Forwarded-For` address with
/// [`trust_forwarded_for`](Self::trust_forwarded_for).
///
/// # Examples
///
/// ```
/// use axum::{routing::post, Extension, Router};
/// use fabric_audit::audit;
/// use fabric_audit::http::{request_context, RequestSpan};
///
/// async fn create_post() -> &'static str {
///     // request_id, client_ip, user_agent and the actor come from the span
///     audit!(action = "post.created", resource_type = "post", resource_id = 42);
///     "created"
/// }
///
/// let app: Router = Router::new()
///     .route("/posts", post(create_post))
///     .layer(request_context());
/// ```
#[derive(Clone, Copy, Debug, Default)]
#[must_use]
pub struct RequestContextLayer {
    trust_forwarded_for: bool,
}

/// The layer that opens request spans; see [`RequestContextLayer`].
pub fn request_context() -> RequestContextLayer {
    RequestContextLayer::default()
}

impl RequestContextLayer {
    /// Take the client address from the first `X-Forwarded-For` entry. Only
    /// behind a proxy that sets it: clients can send anything.
    pub fn trust_forwarded_for(self, trust: bool) -> Self {
        Self {
            trust_forwarded_for: trust,
        }
    }
}

impl<S> Layer<S> for RequestContextLayer {
    type Service = RequestContext<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestContext {
            inner,
            trust_forwarded_for: self.trust_forwarded_for,
        }
    }
}

/// The service made by [`RequestContextLayer`].
#[derive(Clone, Debug)]
pub struct RequestContext<S> {
    inner: S,
    trust_forwarded_for: bool,
}

/// The request's span, in the request's extensions: authentication
/// middleware records the actor on it, so that handlers need not pass the
/// principal to `audit!`.
#[derive(Clone, Debug)]
pub struct RequestSpan(pub Span);

impl RequestSpan {
    /// Records `principal` as the request's actor.
    pub fn record_actor(&self, principal: &impl Principal) {
        let span = &self.0;
        span.record("actor.id", principal.id());
        span.record("actor.type", principal.kind());
        span.record("actor.email", principal.email());
        span.record("actor.name", principal.name());
        if !principal.flags().is_empty() {
            span.record(
                "actor.flags",
                tracing::field::debug(crate::__private::Flags(principal.flags())),
            );
        }
    }
}

impl<S, B> Service<Request<B>> for RequestContext<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let request_id = header(request.headers(), REQUEST_ID_HEADER)
            .filter(|id| id.len() <= 128)
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let client_ip = self.client_ip(&request);
        let span = tracing::info_span!(
            "request",
            method = %request.method(),
            path = request.uri().path(),
            request_id = %request_id,
            client_ip = client_ip.as_deref(),
            user_agent = header(request.headers(), "user-agent"),
            "actor.id" = Empty,
            "actor.type" = Empty,
            "actor.email" = Empty,
            "actor.name" = Empty,
            "actor.flags" = Empty,
        );
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            request.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        request.extensions_mut().insert(RequestSpan(span.clone()));
        self.inner.call(request).instrument(span)
    }
}

impl<S> RequestContext<S> {
    fn client_ip<B>(&self, request: &Request<B>) -> Option<String> {
        if self.trust_forwarded_for {
            let forwarded = header(request.headers(), "x-forwarded-for")
                .and_then(|v| v.split(',').next())
                .map(str::trim)
                .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok());
            if let Some(ip) = forwarded {
                return Some(ip.to_owned());
            }
        }
        request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_string())
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

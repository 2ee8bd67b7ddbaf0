//! The request span: what lets `audit!` in a handler know the request and
//! the actor without being told.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::ConnectInfo;
use axum::http::header::USER_AGENT;
use axum::http::{Extensions, HeaderValue, Request, Response};
use axum_client_ip::ClientIpSource;
use tower_layer::Layer;
use tower_service::Service;
use tracing::field::Empty;
use tracing::instrument::{Instrument, Instrumented};
use tracing::Span;

use crate::Principal;

/// The header a request id is read from and echoed back in.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The longest `x-request-id` taken from a request; a longer one is
/// replaced by a new id.
const MAX_REQUEST_ID: usize = 128;

/// The longest user agent recorded, in characters; the rest is cut.
const MAX_USER_AGENT: usize = 512;

/// A tower layer that runs each request inside an `INFO` span named
/// `request`, of target `audit` (so that the one directive `audit=info`
/// enables audit events and their context alike, and
/// [`exclude_audit`](crate::exclude_audit) keeps both out of other layers),
/// carrying `request_id`, `client_ip` and `user_agent`, and empty actor
/// fields that authentication fills with [`RequestSpan::record_actor`].
/// Every `audit!` in the request then carries them.
///
/// - `request_id` is the `x-request-id` header when it is 1 to 128 visible
///   ASCII characters (no space, no control character), else a new UUID v7;
///   the request goes on with that id in its header, and the response
///   carries it back in `x-request-id` (unless the handler set one).
/// - `client_ip` comes from the [`ClientIpSource`] chosen with
///   [`client_ip_source`](Self::client_ip_source): by default the socket's
///   peer address (axum's `ConnectInfo`: serve with
///   `into_make_service_with_connect_info`). Behind a proxy, name the header
///   *that proxy* sets, read from its trusted end (the rightmost
///   `X-Forwarded-For` entry, RFC 7239 `Forwarded`, `X-Real-Ip`, …): the
///   leftmost entries are whatever the client sent. When the source gives
///   no address, `client_ip` stays empty rather than falling back to
///   another source.
/// - `user_agent` is the header as text (bytes that are not UTF-8 become
///   U+FFFD, control characters are dropped), cut at 512 characters.
///
/// # Examples
///
/// ```
/// use axum::{routing::post, Extension, Router};
/// use fabric_audit::audit;
/// use fabric_audit::http::{request_context, ClientIpSource, RequestSpan};
///
/// async fn create_post() -> &'static str {
///     // request_id, client_ip, user_agent and the actor come from the span
///     audit!(action = "post.created", resource_type = "post", resource_id = 42);
///     "created"
/// }
///
/// let app: Router = Router::new()
///     .route("/posts", post(create_post))
///     // behind a proxy that appends the peer to X-Forwarded-For
///     .layer(request_context().client_ip_source(ClientIpSource::RightmostXForwardedFor));
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct RequestContextLayer {
    client_ip_source: ClientIpSource,
}

impl Default for RequestContextLayer {
    fn default() -> Self {
        Self {
            client_ip_source: ClientIpSource::ConnectInfo,
        }
    }
}

/// The layer that opens request spans; see [`RequestContextLayer`].
pub fn request_context() -> RequestContextLayer {
    RequestContextLayer::default()
}

impl RequestContextLayer {
    /// Where the client address comes from (the `client_ip_source`
    /// setting); [`ClientIpSource::ConnectInfo`], the socket's peer, by
    /// default. Choose a header only behind a proxy that sets it: clients
    /// can send any header.
    pub fn client_ip_source(self, source: ClientIpSource) -> Self {
        Self {
            client_ip_source: source,
        }
    }
}

impl<S> Layer<S> for RequestContextLayer {
    type Service = RequestContext<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestContext {
            inner,
            client_ip_source: self.client_ip_source.clone(),
        }
    }
}

/// The service made by [`RequestContextLayer`].
#[derive(Clone, Debug)]
pub struct RequestContext<S> {
    inner: S,
    client_ip_source: ClientIpSource,
}

/// The request's span, in the request's extensions: authentication
/// middleware records the actor on it, so that handlers need not pass the
/// principal to `audit!`.
#[derive(Clone, Debug)]
pub struct RequestSpan(pub Span);

/// Records `principal` as the actor of the request whose extensions these
/// are: the one line an application's own authentication extractor needs.
/// Returns whether the request has a request span (that is, runs inside
/// [`request_context`]).
///
/// # Examples
///
/// ```
/// use axum::extract::FromRequestParts;
/// use axum::http::{request::Parts, StatusCode};
/// use fabric_audit::Principal;
///
/// struct CurrentUser(String);
///
/// impl Principal for CurrentUser {
///     fn id(&self) -> std::borrow::Cow<'_, str> {
///         self.0.as_str().into()
///     }
/// }
///
/// impl<S: Send + Sync> FromRequestParts<S> for CurrentUser {
///     type Rejection = StatusCode;
///
///     async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, StatusCode> {
///         let user = parts
///             .headers
///             .get("x-user")
///             .and_then(|v| v.to_str().ok())
///             .map(|name| CurrentUser(name.to_owned()))
///             .ok_or(StatusCode::UNAUTHORIZED)?;
///         fabric_audit::http::record_actor(&parts.extensions, &user);
///         Ok(user)
///     }
/// }
/// ```
pub fn record_actor(extensions: &Extensions, principal: &impl Principal) -> bool {
    match extensions.get::<RequestSpan>() {
        Some(span) => {
            span.record_actor(principal);
            true
        }
        None => false,
    }
}

impl RequestSpan {
    /// Records `principal` as the request's actor, replacing every actor
    /// field a previous call recorded: an absent type, email or name is
    /// recorded as an empty string (read as absent) and no flags as `[]`,
    /// so that nothing of an earlier actor survives.
    pub fn record_actor(&self, principal: &impl Principal) {
        let span = &self.0;
        span.record("actor.id", &*principal.id());
        span.record("actor.type", principal.kind().unwrap_or(""));
        span.record("actor.email", principal.email().unwrap_or(""));
        span.record("actor.name", principal.name().unwrap_or(""));
        span.record(
            "actor.flags",
            tracing::field::debug(crate::__private::Flags(principal.flags())),
        );
    }
}

impl<S, B, R> Service<Request<B>> for RequestContext<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Instrumented<EchoRequestId<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let request_id = request
            .headers()
            .get(REQUEST_ID_HEADER)
            .filter(|v| is_request_id(v.as_bytes()))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let client_ip = client_ip(&self.client_ip_source, &request);
        let user_agent = request.headers().get(USER_AGENT).map(user_agent);
        let span = tracing::info_span!(
            target: "audit",
            "request",
            method = %request.method(),
            path = request.uri().path(),
            request_id = %request_id,
            client_ip = client_ip.map(tracing::field::display),
            user_agent = user_agent.as_deref(),
            "actor.id" = Empty,
            "actor.type" = Empty,
            "actor.email" = Empty,
            "actor.name" = Empty,
            "actor.flags" = Empty,
        );
        let echo = HeaderValue::from_str(&request_id).ok();
        if let Some(value) = &echo {
            request
                .headers_mut()
                .insert(REQUEST_ID_HEADER, value.clone());
        }
        request.extensions_mut().insert(RequestSpan(span.clone()));
        EchoRequestId {
            inner: self.inner.call(request),
            request_id: echo,
        }
        .instrument(span)
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`RequestContext`]: the response carries the
    /// request id in `x-request-id`, so that a client can quote it.
    pub struct EchoRequestId<F> {
        #[pin]
        inner: F,
        request_id: Option<HeaderValue>,
    }
}

impl<F> std::fmt::Debug for EchoRequestId<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoRequestId")
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

impl<F, R, E> Future for EchoRequestId<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut output = std::task::ready!(this.inner.poll(cx));
        if let (Ok(response), Some(id)) = (&mut output, this.request_id.take()) {
            response
                .headers_mut()
                .entry(REQUEST_ID_HEADER)
                .or_insert(id);
        }
        Poll::Ready(output)
    }
}

/// 1 to 128 visible ASCII characters: nothing that could forge a log line
/// or a column.
fn is_request_id(bytes: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID).contains(&bytes.len()) && bytes.iter().all(u8::is_ascii_graphic)
}

/// The client's address as `source` says, or none.
fn client_ip<B>(source: &ClientIpSource, request: &Request<B>) -> Option<IpAddr> {
    let headers = request.headers();
    let ip = match source {
        ClientIpSource::ConnectInfo => {
            return request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip());
        }
        ClientIpSource::RightmostXForwardedFor => client_ip::rightmost_x_forwarded_for(headers),
        ClientIpSource::RightmostForwarded => client_ip::rightmost_forwarded(headers),
        ClientIpSource::XRealIp => client_ip::x_real_ip(headers),
        ClientIpSource::CfConnectingIp => client_ip::cf_connecting_ip(headers),
        ClientIpSource::CloudFrontViewerAddress => client_ip::cloudfront_viewer_address(headers),
        ClientIpSource::FlyClientIp => client_ip::fly_client_ip(headers),
        ClientIpSource::TrueClientIp => client_ip::true_client_ip(headers),
        ClientIpSource::XEnvoyExternalAddress => client_ip::x_envoy_external_address(headers),
        // A source added by a later axum-client-ip: no address rather than
        // a guess.
        _ => return None,
    };
    ip.ok()
}

/// The header as text, without control characters, cut at 512 characters.
fn user_agent(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes())
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_USER_AGENT)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_short_visible_ascii() {
        let long = "a".repeat(MAX_REQUEST_ID + 1);
        let cases: [(&[u8], bool); 8] = [
            (b"req-1", true),
            (b"Root=1-67891233-abcdef;Parent=53995c3f", true),
            (&long.as_bytes()[1..], true),
            (long.as_bytes(), false),
            (b"", false),
            (b"a b", false),
            (b"a\tb", false),
            ("caf\u{e9}".as_bytes(), false),
        ];
        for (id, ok) in cases {
            assert_eq!(is_request_id(id), ok, "{:?}", String::from_utf8_lossy(id));
        }
    }

    #[test]
    fn user_agents_are_cleaned_and_cut() {
        let cases: [(&[u8], &str); 4] = [
            (b"curl/8.5", "curl/8.5"),
            (b"a\tb", "ab"),
            (b"caf\xe9/1", "caf\u{fffd}/1"),
            (b"\xff\xfe", "\u{fffd}\u{fffd}"),
        ];
        for (bytes, want) in cases {
            let value = HeaderValue::from_bytes(bytes).unwrap();
            assert_eq!(user_agent(&value), want);
        }
        let huge = HeaderValue::from_bytes(&vec![b'x'; 1 << 20]).unwrap();
        assert_eq!(user_agent(&huge), "x".repeat(MAX_USER_AGENT));
    }
}

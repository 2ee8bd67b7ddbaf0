//! The accept loop: every connection and request bounded, so that a client
//! holding connections open (half a header, a response never read) cannot
//! starve the others or the process's open files.
//!
//! axum's own `serve` keeps a connection for as long as the client likes;
//! hyper's HTTP/1 builder has the header-read timeout, and the loop counts
//! connections and requests itself.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};

use super::limits::{Bite, Limits};

static CONNECTIONS_FULL: Bite = Bite::new(
    "max_connections",
    "no room for a new connection (every one busy): answered 503 and closed",
);
static CONNECTION_REPLACED: Bite = Bite::new(
    "max_connections",
    "the oldest connection without a request in progress was closed for a new one",
);
static REQUESTS_FULL: Bite = Bite::new("max_requests", "a request was answered 503 busy");
static REQUEST_TIMEOUT: Bite = Bite::new(
    "request_timeout_secs",
    "a request took too long: answered 503 timeout",
);
static HEADER_TIMEOUT: Bite = Bite::new(
    "header_read_timeout_secs",
    "a client did not send a request's header in time: its connection was closed",
);
static ACCEPT_FAILED: Bite = Bite::new(
    "open files",
    "a connection could not be accepted (out of file descriptors?)",
);

/// At most this many connections closing to make room at once, and this
/// many refusals being written: together half the files kept in reserve
/// beyond `max_connections`.
const MAX_EVICTING: usize = 16;
const MAX_REFUSING: usize = 16;

/// How long `accept` backs off after an error such as `EMFILE`, so that
/// the loop does not spin while files are short.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// Serves `app` on `listener` within `limits` until `stop` resolves, then
/// lets the connections finish their requests; returns when none is left.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    stop: impl Future<Output = ()>,
) {
    let server = Arc::new(Server::new(app, limits));
    let (closing, closed) = watch::channel(false);
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => server.admit(stream, peer, closed.clone()).await,
            Err(e) => {
                ACCEPT_FAILED.bit(limits.max_connections);
                tracing::debug!(target: "fabric_audit", error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    drop(listener);
    closing.send_replace(true);
    server.close_idle();
    let mut open = server.open.subscribe();
    // An error means the sender is gone: nothing left to wait for.
    let _ = open.wait_for(|n| *n == 0).await;
}

/// Whether a new connection has room.
#[derive(Debug)]
enum Room {
    /// Registered.
    Made,
    /// Not yet: connections are closing to make some.
    Closing,
    /// None: every connection has a request in progress.
    None,
}

/// The connections and the request permits.
#[derive(Debug)]
struct Server {
    app: Router,
    limits: Limits,
    builder: hyper::server::conn::http1::Builder,
    requests: Arc<Semaphore>,
    /// Open connections by age (ids grow).
    connections: Mutex<BTreeMap<u64, Arc<Connection>>>,
    next_id: AtomicU64,
    /// Connections chosen to make room that have not closed yet.
    evicting: AtomicUsize,
    /// One of those closed.
    closed_one: Notify,
    /// Refusals being written.
    refusing: AtomicUsize,
    /// How many connections are open: watched by the shutdown.
    open: watch::Sender<usize>,
}

/// One open connection, as the loop sees it.
#[derive(Debug, Default)]
struct Connection {
    /// Requests in progress.
    in_flight: AtomicUsize,
    /// Chosen to make room: no longer a candidate.
    evicted: AtomicBool,
    evict: Notify,
}

impl Server {
    fn new(app: Router, limits: Limits) -> Self {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .keep_alive(true);
        Self {
            app,
            limits,
            builder,
            requests: Arc::new(Semaphore::new(limits.max_requests)),
            connections: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(0),
            evicting: AtomicUsize::new(0),
            closed_one: Notify::new(),
            refusing: AtomicUsize::new(0),
            open: watch::Sender::new(0),
        }
    }

    /// Serves the connection if there is room (making room by closing the
    /// oldest connection without a request in progress); else answers 503.
    async fn admit(
        self: &Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        closed: watch::Receiver<bool>,
    ) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let connection = Arc::new(Connection::default());
        loop {
            match self.make_room(id, &connection) {
                Room::Made => break,
                // Closed connections free their files a moment later: the
                // loop waits for them rather than let a flood past the
                // file limit (new connections wait in the backlog).
                Room::Closing => self.closed_one.notified().await,
                Room::None => {
                    CONNECTIONS_FULL.bit(self.limits.max_connections);
                    self.refuse(stream);
                    return;
                }
            }
        }
        let server = Arc::clone(self);
        tokio::spawn(async move {
            server.run(stream, peer, &connection, closed).await;
            let mut connections = server.lock();
            connections.remove(&id);
            if connection.evicted.load(Ordering::Relaxed) {
                server.evicting.fetch_sub(1, Ordering::Relaxed);
                server.closed_one.notify_one();
            }
            server.open.send_replace(connections.len());
        });
    }

    /// Registers the connection if there is room, or if the oldest
    /// connection without a request in progress can be closed for it.
    fn make_room(&self, id: u64, connection: &Arc<Connection>) -> Room {
        let mut connections = self.lock();
        let evicting = self.evicting.load(Ordering::Relaxed);
        if connections.len() - evicting >= self.limits.max_connections {
            if evicting >= MAX_EVICTING {
                return Room::Closing;
            }
            let Some(oldest) = connections.values().find(|c| {
                !c.evicted.load(Ordering::Relaxed) && c.in_flight.load(Ordering::Acquire) == 0
            }) else {
                return if evicting > 0 {
                    Room::Closing
                } else {
                    Room::None
                };
            };
            oldest.evicted.store(true, Ordering::Relaxed);
            self.evicting.fetch_add(1, Ordering::Relaxed);
            oldest.evict.notify_one();
            CONNECTION_REPLACED.bit(self.limits.max_connections);
        }
        connections.insert(id, Arc::clone(connection));
        self.open.send_replace(connections.len());
        Room::Made
    }

    /// Answers 503 and closes, reading what the client sent meanwhile (a
    /// close with unread data would reset the connection, and the answer
    /// with it): at most [`MAX_REFUSING`] at once, for at most a second;
    /// past that, closes at once.
    fn refuse(self: &Arc<Self>, stream: TcpStream) {
        if self.refusing.fetch_add(1, Ordering::AcqRel) >= MAX_REFUSING {
            self.refusing.fetch_sub(1, Ordering::AcqRel);
            let _ = stream.try_write(&REFUSAL);
            return;
        }
        let server = Arc::clone(self);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(1), refuse(stream)).await;
            server.refusing.fetch_sub(1, Ordering::AcqRel);
        });
    }

    /// Closes at once the connections without a request in progress: an
    /// idle one would close on its own, but one still sending its header
    /// would hold the stop until the header timeout.
    fn close_idle(&self) {
        for connection in self.lock().values() {
            if connection.in_flight.load(Ordering::Acquire) == 0 {
                connection.evict.notify_one();
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Connection>>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves one connection until it closes, is evicted (dropped at
    /// once), or the server stops (after the request in progress).
    async fn run(
        self: &Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        connection: &Arc<Connection>,
        mut closed: watch::Receiver<bool>,
    ) {
        let service = {
            let server = Arc::clone(self);
            let connection = Arc::clone(connection);
            hyper::service::service_fn(move |request: Request<Incoming>| {
                let server = Arc::clone(&server);
                let connection = Arc::clone(&connection);
                async move { Ok::<_, Infallible>(server.handle(request, peer, &connection).await) }
            })
        };
        let served = self.builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(served);
        let mut closing = false;
        let result = loop {
            tokio::select! {
                result = served.as_mut() => break result,
                () = connection.evict.notified() => return,
                true = stopping(&mut closed), if !closing => {
                    closing = true;
                    served.as_mut().graceful_shutdown();
                }
            }
        };
        if let Err(e) = result {
            if e.is_timeout() {
                HEADER_TIMEOUT.bit(self.limits.header_read_timeout.as_secs() as usize);
            } else {
                tracing::debug!(target: "fabric_audit", error = %e, "connection closed");
            }
        }
    }

    /// One request, within the request cap and timeout.
    async fn handle(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
        connection: &Connection,
    ) -> Response<Body> {
        let Ok(_permit) = Arc::clone(&self.requests).try_acquire_owned() else {
            REQUESTS_FULL.bit(self.limits.max_requests);
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many requests in progress; try again shortly",
            );
        };
        let _in_flight = InFlight::enter(connection);
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        let mut app = self.app.clone();
        let respond = async move {
            std::future::poll_fn(|cx| {
                tower_service::Service::<Request<Body>>::poll_ready(&mut app, cx)
            })
            .await?;
            tower_service::Service::call(&mut app, request).await
        };
        match tokio::time::timeout(self.limits.request_timeout, respond).await {
            Ok(Ok(response)) => response,
            Ok(Err(never)) => match never {},
            Err(_) => {
                REQUEST_TIMEOUT.bit(self.limits.request_timeout.as_secs() as usize);
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "timeout",
                    "the request took too long; try again later",
                )
            }
        }
    }
}

/// Resolves once the server stops (`false`: it never will).
async fn stopping(closed: &mut watch::Receiver<bool>) -> bool {
    closed.wait_for(|stop| *stop).await.is_ok()
}

/// Marks a request in progress on its connection for as long as it lives
/// (a timed-out request is dropped, and leaves too).
struct InFlight<'a>(&'a Connection);

impl<'a> InFlight<'a> {
    fn enter(connection: &'a Connection) -> Self {
        connection.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(connection)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The API's error body, `{"error": {"code", "message"}}`; a 503 asks the
/// client to come back in a second.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// The whole answer to a connection past the cap, written without waiting.
static REFUSAL: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let body = serde_json::json!({"error": {
        "code": "busy",
        "message": "too many connections; try again shortly",
    }})
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
});

/// Writes [`REFUSAL`], then reads until the client closes.
async fn refuse(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if stream.write_all(&REFUSAL).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    let mut buf = [0; 1024];
    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
}

//! Quick start: a small axum app whose handlers emit audit events, with the
//! query API mounted, writing to the embedded SQLite database and the daily
//! JSON-lines file.
//!
//! ```sh
//! cargo run --features http --example quickstart              # http://127.0.0.1:3000, Ctrl-C to stop
//! cargo run --features http --example quickstart -- --port 8000
//! cargo run --features http --example quickstart -- --smoke   # calls itself a few times, then exits
//! cargo run --features http,metrics --example quickstart      # also Prometheus metrics at /metrics
//! ```
//!
//! Then, with the token it prints:
//!
//! ```sh
//! curl -X POST -H 'x-demo-user: alice' localhost:3000/posts
//! curl -X DELETE -H 'x-demo-user: bob' localhost:3000/posts/1
//! curl -H "authorization: Bearer $TOKEN" 'localhost:3000/api/v1/audit?action=post.'
//! ```

use std::collections::HashMap;
use std::future::IntoFuture;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{from_fn, Next};
use axum::response::Response;
use axum::routing::{delete, post};
use axum::Router;
use fabric_audit::http::{
    self, audit_outcomes, request_context, BearerTokens, RequestSpan, AUDIT_READ,
};
use fabric_audit::{audit, exclude_audit, AuditLayer, Principal, Store};
use tracing_subscriber::filter::FilterExt;
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

/// The demo's users, picked by the `x-demo-user` header.
struct User {
    id: &'static str,
    email: &'static str,
    roles: Vec<String>,
}

impl Principal for User {
    fn id(&self) -> std::borrow::Cow<'_, str> {
        self.id.into()
    }
    fn kind(&self) -> Option<&str> {
        Some("user")
    }
    fn email(&self) -> Option<&str> {
        Some(self.email)
    }
    fn flags(&self) -> &[String] {
        &self.roles
    }
}

fn user(name: &str) -> Option<User> {
    match name {
        "alice" => Some(User {
            id: "u-alice",
            email: "alice@example.com",
            roles: vec!["editor".into()],
        }),
        "bob" => Some(User {
            id: "u-bob",
            email: "bob@example.com",
            roles: vec!["admin".into()],
        }),
        _ => None,
    }
}

/// Demo authentication: a real app checks a session or a token here. It
/// records the user on the request span, so handlers need not pass it.
async fn demo_auth(request: Request, next: Next) -> Result<Response, StatusCode> {
    let name = request
        .headers()
        .get("x-demo-user")
        .and_then(|v| v.to_str().ok());
    let user = name.and_then(user).ok_or(StatusCode::UNAUTHORIZED)?;
    if let Some(span) = request.extensions().get::<RequestSpan>() {
        span.record_actor(&user);
    }
    Ok(next.run(request).await)
}

#[derive(Default)]
struct Posts {
    next_id: u64,
    titles: HashMap<u64, String>,
}

type Db = Arc<Mutex<Posts>>;

async fn create_post(State(posts): State<Db>) -> (StatusCode, String) {
    let id = {
        let mut posts = posts.lock().unwrap_or_else(|e| e.into_inner());
        posts.next_id += 1;
        let id = posts.next_id;
        posts.titles.insert(id, format!("post {id}"));
        id
    };
    audit!(
        action = "post.created",
        resource_type = "post",
        resource_id = id
    );
    (StatusCode::CREATED, format!("{{\"id\":{id}}}\n"))
}

async fn delete_post(State(posts): State<Db>, Path(id): Path<u64>) -> StatusCode {
    let removed = posts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .titles
        .remove(&id);
    match removed {
        Some(title) => {
            audit!(action = "post.deleted", resource_type = "post", resource_id = id, title = %title);
            StatusCode::NO_CONTENT
        }
        None => StatusCode::NOT_FOUND,
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let smoke = args.iter().any(|a| a == "--smoke");
    let port: u16 = match args.iter().position(|a| a == "--port") {
        Some(i) => args.get(i + 1).ok_or("--port needs a number")?.parse()?,
        None if smoke => 0,
        None => 3000,
    };

    // With the feature `metrics`, the pipeline's counters and the query
    // API's requests go to the `metrics` facade: here a Prometheus recorder,
    // scraped at /metrics.
    #[cfg(feature = "metrics")]
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;

    // 1. The audit layer next to an ordinary log that never sees audit events.
    let dir = if smoke {
        tempfile_dir()?
    } else {
        "logs".into()
    };
    std::fs::create_dir_all(&dir)?;
    let database = format!("sqlite://{dir}/audit.db");
    let (audit_layer, audit) = AuditLayer::builder()
        .database(&database)
        .file(format!("{dir}/audit.jsonl"))
        .build()?;
    // The app's own filter (RUST_LOG) goes on its fmt layer, never in front
    // of every layer, where it would switch auditing off; exclude_audit()
    // keeps audit records and the actor out of stdout. `try_init` leaves an
    // app that already has a `log` logger (env_logger) standing.
    let env_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_filter(env_filter.and(exclude_audit())))
        .with(audit_layer)
        .try_init()?;
    // Fails loudly if the subscriber switches auditing off.
    audit.check()?;

    // 2. The app: its own routes behind demo auth, and the query API.
    let token = uuid::Uuid::new_v4().simple().to_string();
    let tokens = BearerTokens::new().token("demo", &token, [AUDIT_READ]);
    let store = Store::connect(&database).await?;
    let app = Router::new()
        .route("/posts", post(create_post))
        .route("/posts/{id}", delete(delete_post))
        .layer(from_fn(demo_auth))
        // Every request's outcome on record, outside the authentication so
        // that the requests it refuses are on record too.
        .route_layer(audit_outcomes())
        .with_state(Db::default())
        .merge(http::router(store, tokens))
        .layer(request_context());
    #[cfg(feature = "metrics")]
    let app = {
        let prometheus = prometheus.clone();
        app.route(
            "/metrics",
            axum::routing::get(move || async move { prometheus.render() }),
        )
    };

    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}");
    println!("demo token: {token}");
    println!("  curl -X POST -H 'x-demo-user: alice' {addr}/posts");
    println!("  curl -H 'authorization: Bearer {token}' '{addr}/api/v1/audit?action=post.'");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = shutdown_signal() => {}
                _ = stopped => {}
            }
        })
        .into_future(),
    );

    if smoke {
        for line in tokio::task::spawn_blocking(move || call_the_app(addr)).await?? {
            println!("{line}");
        }
        // What was emitted so far is in the database once flushed.
        audit.flush().await?;
        let auth = format!("authorization: Bearer {token}");
        let answer = tokio::task::spawn_blocking(move || {
            request(addr, "GET", "/api/v1/audit?action=post.", &auth)
        })
        .await??;
        if !answer.starts_with("HTTP/1.1 200") || !answer.contains("post.deleted") {
            return Err(format!("the query API answered {answer}").into());
        }
        // The refused request is on record too.
        let auth = format!("authorization: Bearer {token}");
        let denied = tokio::task::spawn_blocking(move || {
            request(
                addr,
                "GET",
                "/api/v1/audit?action=http.request.denied",
                &auth,
            )
        })
        .await??;
        if !denied.contains("\"http.status\":401") {
            return Err(format!("the refused request is not on record: {denied}").into());
        }
        println!("{}", answer.split("\r\n\r\n").nth(1).unwrap_or_default());
        #[cfg(feature = "metrics")]
        print_metrics(addr)?;
        let _ = stop.send(());
    }
    server.await??;

    // 3. At shutdown, everything emitted so far reaches every sink.
    let report = audit.shutdown().await;
    println!("audit log closed: {report}");
    if !report.is_lossless() {
        return Err(format!("records were lost: {report}").into());
    }
    Ok(())
}

/// Ctrl-C, or SIGTERM (what Docker and Kubernetes send): either way the
/// server stops taking requests and the audit pipeline is shut down, so the
/// last records are written.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

/// Calls the running app the way the curl commands above do; returns the
/// status lines, and fails if any call went wrong.
fn call_the_app(addr: SocketAddr) -> Result<Vec<String>, String> {
    let calls = [
        ("POST", "/posts", "x-demo-user: alice", "201"),
        ("POST", "/posts", "x-demo-user: alice", "201"),
        ("DELETE", "/posts/1", "x-demo-user: bob", "204"),
        ("DELETE", "/posts/1", "x-demo-user: bob", "404"),
        ("POST", "/posts", "x-demo-user: mallory", "401"),
    ];
    let mut lines = Vec::new();
    for (method, path, header, want) in calls {
        let response = request(addr, method, path, header)?;
        let status = response.lines().next().unwrap_or_default().to_owned();
        if !status.contains(want) {
            return Err(format!("{method} {path}: {status}"));
        }
        lines.push(format!("{method} {path} ({header}): {status}"));
    }
    Ok(lines)
}

fn request(addr: SocketAddr, method: &str, path: &str, header: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{header}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    Ok(response)
}

/// Scrapes /metrics and prints the pipeline's lines; fails unless the
/// database sink's written records are among them.
#[cfg(feature = "metrics")]
fn print_metrics(addr: SocketAddr) -> Result<(), String> {
    let scrape = request(addr, "GET", "/metrics", "accept: text/plain")?;
    let body = scrape.split("\r\n\r\n").nth(1).unwrap_or_default();
    if !body.contains("fabric_audit_records_written_total{sink=\"database\"}") {
        return Err(format!("no sink counters at /metrics: {scrape}"));
    }
    let counters = body
        .lines()
        .filter(|l| l.starts_with("fabric_audit_") && !l.contains("quantile="));
    for line in counters {
        println!("{line}");
    }
    Ok(())
}

/// A fresh directory for a smoke run, so that it leaves nothing behind in
/// the working tree.
fn tempfile_dir() -> Result<String, Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!(
        "fabric-audit-quickstart-{}",
        uuid::Uuid::new_v4().simple()
    ));
    Ok(dir.to_string_lossy().into_owned())
}

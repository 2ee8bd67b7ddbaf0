//! A real axum application with fabric-audit dropped in: its own state, its
//! own `EnvFilter` (RUST_LOG), its own authentication extractor, and every
//! request's outcome on record.
//!
//! ```sh
//! RUST_LOG=warn cargo run --features http --example axum_app              # http://127.0.0.1:3001
//! RUST_LOG=warn cargo run --features http --example axum_app -- --self-test
//! ```
//!
//! `--self-test` (what CI runs) serves on a free port, calls itself over
//! HTTP and checks that: every record carries its full context (request
//! id, client address, user agent, actor) under the app's `RUST_LOG=warn`;
//! none of the audit data reaches the app's own log output; and an app that
//! sets its filter up the common wrong way (a global `EnvFilter`) is told
//! so on standard error.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use fabric_audit::http::{self, audit_outcomes, request_context, BearerTokens, AUDIT_READ};
use fabric_audit::{audit, exclude_audit, AuditLayer, AuditQuery, Principal, Store};
use tracing_subscriber::filter::FilterExt;
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The application's state: its notes, and nothing of fabric-audit.
#[derive(Clone, Default)]
struct AppState {
    notes: Arc<Mutex<HashMap<u64, Note>>>,
}

#[derive(Clone, serde::Serialize)]
struct Note {
    id: u64,
    owner: String,
    text: String,
}

/// The application's own user, with a numeric id it does not keep as text.
struct CurrentUser {
    id: u64,
    email: String,
}

impl Principal for CurrentUser {
    fn id(&self) -> std::borrow::Cow<'_, str> {
        format!("user-{}", self.id).into()
    }
    fn kind(&self) -> Option<&str> {
        Some("user")
    }
    fn email(&self) -> Option<&str> {
        Some(&self.email)
    }
}

/// The application's own authentication: `authorization: Bearer user-<n>`.
impl<S: Send + Sync> FromRequestParts<S> for CurrentUser {
    type Rejection = StatusCode;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, StatusCode> {
        let id = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer user-"))
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or(StatusCode::UNAUTHORIZED)?;
        let user = CurrentUser {
            id,
            email: format!("user{id}@example.com"),
        };
        // The one line that gives every audit! of this request its actor.
        http::record_actor(&parts.extensions, &user);
        Ok(user)
    }
}

async fn list_notes(_: CurrentUser, State(state): State<AppState>) -> Json<Vec<Note>> {
    let notes = state.notes.lock().unwrap();
    Json(notes.values().cloned().collect())
}

async fn create_note(
    user: CurrentUser,
    State(state): State<AppState>,
    text: String,
) -> (StatusCode, Json<Note>) {
    let mut notes = state.notes.lock().unwrap();
    let id = notes.len() as u64 + 1;
    let note = Note {
        id,
        owner: user.id().into_owned(),
        text,
    };
    notes.insert(id, note.clone());
    audit!(
        action = "note.created",
        resource_type = "note",
        resource_id = id,
        length = note.text.len()
    );
    tracing::info!("note {id} created"); // below RUST_LOG=warn: not printed
    (StatusCode::CREATED, Json(note))
}

async fn delete_note(
    user: CurrentUser,
    State(state): State<AppState>,
    Path(id): Path<u64>,
) -> StatusCode {
    let mut notes = state.notes.lock().unwrap();
    match notes.get(&id) {
        None => StatusCode::NOT_FOUND,
        Some(note) if note.owner != user.id() => {
            tracing::warn!("user tried to delete a note that is not theirs");
            StatusCode::FORBIDDEN
        }
        Some(_) => {
            notes.remove(&id);
            audit!(
                action = "note.deleted",
                resource_type = "note",
                resource_id = id
            );
            StatusCode::NO_CONTENT
        }
    }
}

/// Where the app's fmt layer writes: stdout, or a buffer the self-test reads.
#[derive(Clone, Default)]
struct Output(Option<Arc<Mutex<Vec<u8>>>>);

impl std::io::Write for Output {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match &self.0 {
            Some(buffer) => buffer.lock().unwrap().write(bytes),
            None => std::io::stdout().write(bytes),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--wrong-filter") {
        return wrong_filter();
    }
    let self_test = args.iter().any(|a| a == "--self-test");
    let dir = if self_test {
        std::env::temp_dir().join(format!("axum-app-{}", uuid::Uuid::new_v4().simple()))
    } else {
        "logs".into()
    };
    std::fs::create_dir_all(&dir)?;
    let database = format!("sqlite://{}", dir.join("audit.db").display());

    // The app's logging, as it was, with fabric-audit beside it: the
    // EnvFilter on the fmt layer, together with exclude_audit().
    let captured = self_test.then(|| Arc::new(Mutex::new(Vec::new())));
    let output = Output(captured.clone());
    let env_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (audit_layer, audit) = AuditLayer::builder()
        .database(&database)
        .file(dir.join("audit.jsonl"))
        .build()?;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || output.clone())
                .with_filter(env_filter.and(exclude_audit())),
        )
        .with(audit_layer)
        .try_init()?;
    audit.check()?;

    let store = Store::connect(&database).await?;
    let token = uuid::Uuid::new_v4().simple().to_string();
    let app = Router::<AppState>::new()
        .route("/notes", get(list_notes).post(create_note))
        .route("/notes/{id}", delete(delete_note))
        .route_layer(audit_outcomes())
        .merge(http::router(
            store.clone(),
            BearerTokens::new().token("ops", &token, [AUDIT_READ]),
        ))
        .with_state(AppState::default())
        .layer(request_context());

    let port = if self_test { 0 } else { 3001 };
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}; audit token {token}");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stopped.await;
        })
        .await
    });
    if self_test {
        let calls = tokio::task::spawn_blocking(move || exercise(addr)).await?;
        let _ = stop.send(());
        server.await??;
        let report = audit.shutdown().await;
        calls?;
        let log = String::from_utf8(captured.unwrap().lock().unwrap().clone())?;
        check_records(&store, &log, &report).await?;
        check_wrong_filter_is_told()?;
        let _ = std::fs::remove_dir_all(&dir);
        println!("self-test passed: {report}");
        return Ok(());
    }
    tokio::signal::ctrl_c().await?;
    let _ = stop.send(());
    server.await??;
    println!("audit log closed: {}", audit.shutdown().await);
    Ok(())
}

/// The calls of the self-test: a user's notes, someone else's, no token.
fn exercise(addr: SocketAddr) -> Result<(), BoxError> {
    let calls = [
        ("POST", "/notes", Some("user-1"), "hello", "201"),
        ("POST", "/notes", Some("user-1"), "again", "201"),
        ("DELETE", "/notes/1", Some("user-2"), "", "403"),
        ("DELETE", "/notes/1", Some("user-1"), "", "204"),
        ("GET", "/notes", None, "", "401"),
    ];
    for (method, path, user, body, want) in calls {
        let status = call(addr, method, path, user, body)?;
        if !status.contains(want) {
            return Err(format!("{method} {path}: {status}, expected {want}").into());
        }
    }
    Ok(())
}

fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    user: Option<&str>,
    body: &str,
) -> Result<String, BoxError> {
    let mut stream = TcpStream::connect(addr)?;
    let auth = user
        .map(|u| format!("authorization: Bearer {u}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nuser-agent: axum-app-self-test/1.0\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response.lines().next().unwrap_or_default().to_owned())
}

/// Every record has its full context; the app's log has none of it.
async fn check_records(
    store: &Store,
    log: &str,
    report: &fabric_audit::Report,
) -> Result<(), BoxError> {
    if !report.is_lossless() || report.unseen() != 0 {
        return Err(format!("records were lost or unseen: {report}").into());
    }
    let page = store.query(&AuditQuery::new().limit(100)?).await?;
    let actions: Vec<&str> = page.items.iter().map(|r| r.action()).collect();
    let expected = [
        "note.created",
        "note.deleted",
        "http.request.ok",
        "http.request.denied",
    ];
    for action in expected {
        if !actions.contains(&action) {
            return Err(format!("no {action} record among {actions:?}").into());
        }
    }
    for record in &page.items {
        let context = (record.request_id(), record.client_ip(), record.user_agent());
        if !matches!(
            context,
            (Some(_), Some("127.0.0.1"), Some("axum-app-self-test/1.0"))
        ) {
            return Err(format!("record without its request context: {record:?}").into());
        }
        let anonymous = record.action() == "http.request.denied"
            && record.detail_value("http.status") == Some(fabric_audit::DetailValue::I64(401));
        if !anonymous && record.actor_id().is_none() {
            return Err(format!("record without its actor: {record:?}").into());
        }
    }
    if !log.contains("user tried to delete a note that is not theirs") {
        return Err(format!("the app's own warning is missing from its log: {log:?}").into());
    }
    for secret in [
        "user1@example.com",
        "user-1",
        "note.created",
        "http.request",
    ] {
        if log.contains(secret) {
            return Err(format!("audit data `{secret}` leaked into the app's log: {log}").into());
        }
    }
    println!(
        "{} records with full context; the app's log ({} bytes) holds none of them",
        page.items.len(),
        log.len()
    );
    Ok(())
}

/// Runs this program with the usual mistake and reads what it is told.
fn check_wrong_filter_is_told() -> Result<(), BoxError> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .arg("--wrong-filter")
        .env("RUST_LOG", "warn")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in ["fabric-audit: WARNING", "audit=info", "auditing is off"] {
        if !stderr.contains(needle) {
            return Err(format!("the wrong set-up was not told `{needle}`: {stderr}").into());
        }
    }
    println!(
        "a global EnvFilter is told: {}",
        stderr.lines().next().unwrap_or_default()
    );
    Ok(())
}

/// The common mistake: the app's EnvFilter in front of every layer.
fn wrong_filter() -> Result<(), BoxError> {
    let dir = std::env::temp_dir().join(format!("axum-app-{}", uuid::Uuid::new_v4().simple()));
    let (audit_layer, audit) = AuditLayer::builder()
        .file(dir.join("audit.jsonl"))
        .build()?;
    tracing_subscriber::registry()
        .with(EnvFilter::from_default_env())
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(audit_layer)
        .init();
    audit!(action = "lost.in.the.filter");
    if let Err(error) = audit.check() {
        eprintln!("{error}");
    }
    let report = audit.shutdown_blocking();
    eprintln!("{report}");
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

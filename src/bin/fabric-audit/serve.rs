//! `fabric-audit serve`: the query API over a database, held under hostile
//! load.
//!
//! # Layout
//! - this file: the command, its start-up (the open-file limit raised, the
//!   router, the audit subscriber) and its graceful stop;
//! - `limits.rs`: what is bounded, from the configuration and the flags,
//!   and the rate-limited warnings when a bound bites;
//! - `listen.rs`: the accept loop that enforces the bounds.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context as _};
use axum::http::StatusCode;
use clap::Args;
use fabric_audit::http::{self, Authorizer, BearerTokens, Caller, Unauthenticated, AUDIT_READ};
use fabric_audit::{exclude_audit, AuditConfig, AuditHandle, AuditLayer, DatabaseSink};
use tracing_subscriber::filter::{EnvFilter, FilterExt, LevelFilter};
use tracing_subscriber::prelude::*;

use self::limits::{Limits, Overrides};
use super::{serve_metrics, store, Database, Usage};

#[path = "serve/limits.rs"]
mod limits;
#[path = "serve/listen.rs"]
mod listen;

#[derive(Args)]
pub(crate) struct Serve {
    #[command(flatten)]
    db: Database,
    /// Address to listen on (default: `bind` from the configuration).
    #[arg(long)]
    bind: Option<SocketAddr>,
    /// Serve without authentication (refused otherwise when no token is
    /// configured).
    #[arg(long)]
    no_auth: bool,
    /// Serve Prometheus metrics on this address (default:
    /// `metrics_bind` from the configuration; none when unset).
    #[arg(long, value_name = "ADDR")]
    metrics_bind: Option<SocketAddr>,
    #[command(flatten)]
    limits: Overrides,
}

/// Admits everyone, with `audit:read`: for `serve --no-auth` only.
pub(crate) struct NoAuth;

impl Authorizer for NoAuth {
    async fn authorize(&self, _: &axum::http::request::Parts) -> Result<Caller, Unauthenticated> {
        Ok(Caller::new("anonymous", "anonymous", [AUDIT_READ]))
    }
}

/// How long connections still open at shutdown get to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// `fabric-audit serve`: the API until SIGINT or SIGTERM, then the
/// requests in flight are finished and the audit records flushed.
pub(crate) async fn run(args: Serve) -> anyhow::Result<()> {
    // First: the limits found here bound what follows (the store's files
    // too), and a bad flag is refused before anything starts.
    let open_files = limits::raise_open_file_limit();
    let (config, url) = args.db.resolve()?;
    let mut limits = Limits::new(&config, &args.limits)?;
    if let Some(addr) = args.metrics_bind.or(config.metrics_bind) {
        serve_metrics(addr)?;
    }
    let store = store(&config, &url).await?;
    let api = if args.no_auth {
        http::router(store, NoAuth)
    } else {
        http::router(store, tokens(&config)?)
    };
    let app = api
        .fallback(no_such_route)
        .layer(http::request_context().client_ip_source(config.client_ip_source.clone()));
    let bind = args.bind.unwrap_or(config.bind);
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| Usage(format!("cannot listen on {bind}: {e}")))?;
    // Before the address is printed: whoever reads it may signal at once.
    let stop = Stop::listen()?;
    let audit = install_subscriber(&config, &url)?;
    report_open_files(&open_files, &mut limits);
    println!("serving the audit API on http://{}", listener.local_addr()?);
    let server = listen::serve(listener, app, limits, stop.requested());
    // Graceful, but bounded: a client holding its connection open does not
    // keep the process (and the audit records queued) alive.
    tokio::select! {
        () = server => {}
        () = stop.drain_deadline(DRAIN_TIMEOUT) => {
            tracing::warn!(target: "fabric_audit", "connections still open after {DRAIN_TIMEOUT:?}: closing them");
        }
    }
    let report = audit.shutdown().await;
    if !report.is_lossless() {
        tracing::error!(target: "fabric_audit", %report, "audit records of the query API were lost");
    }
    Ok(())
}

/// Logs what raising the open-file limit gave, and fits `max_connections`
/// under it.
fn report_open_files(open_files: &limits::OpenFiles, limits: &mut Limits) {
    if let Some(e) = &open_files.error {
        tracing::warn!(target: "fabric_audit", error = %e, "cannot raise the open-file limit");
    }
    let Some(now) = open_files.now else { return };
    let wanted = limits.max_connections;
    if let Some(fitted) = limits.fit_to(now) {
        tracing::warn!(
            target: "fabric_audit",
            open_file_limit = now,
            was = ?open_files.was,
            "limit reached: max_connections {wanted} does not fit the open-file limit: at most {fitted} connections"
        );
    }
}

/// The configured tokens, or a usage error without any.
fn tokens(config: &AuditConfig) -> anyhow::Result<BearerTokens> {
    if config.tokens.is_empty() {
        bail!(Usage(
            "no tokens configured: add [[audit.tokens]] to the configuration, or pass --no-auth"
                .into()
        ));
    }
    let mut tokens = BearerTokens::new();
    for t in &config.tokens {
        tokens = match (&t.token, &t.sha256) {
            (Some(secret), _) => tokens.token(&t.name, secret, &t.permissions),
            (None, Some(digest)) => tokens.token_sha256(&t.name, digest, &t.permissions)?,
            (None, None) => bail!("token `{}` has neither `token` nor `sha256`", t.name),
        };
    }
    Ok(tokens)
}

/// Outside the API's routes: the same JSON error body.
async fn no_such_route() -> axum::response::Response {
    listen::error(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// Installs the process's subscriber: the audit layer, writing the API's
/// `audit.read` records into the database it serves, and warnings and
/// errors (`RUST_LOG` to change the level) on stderr, without audit events.
///
/// Only the database: the file sink wants one writing process per file, and
/// `log_file` usually names the application's own file. The records are
/// kept forever here: purging is for the application's sink or
/// `fabric-audit purge`, never a side effect of reading.
fn install_subscriber(config: &AuditConfig, url: &str) -> anyhow::Result<AuditHandle> {
    let database = DatabaseSink::builder(url).keep_forever().build_lazy()?;
    let (audit_layer, audit) = AuditLayer::builder()
        .queue_capacity(config.queue_maxsize)
        .sink("database", database)
        .build()?;
    // The level filter is the stderr layer's own: a global one would
    // disable the audit events (INFO) too.
    let level = EnvFilter::builder()
        .with_default_directive(LevelFilter::WARN.into())
        .from_env_lossy();
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(level.and(exclude_audit()));
    let subscriber = tracing_subscriber::registry()
        .with(stderr)
        .with(audit_layer);
    tracing::subscriber::set_global_default(subscriber)
        .context("cannot install the tracing subscriber")?;
    Ok(audit)
}

/// SIGINT or SIGTERM: stop accepting, finish the requests in flight.
struct Stop {
    requested: tokio::sync::watch::Receiver<bool>,
}

impl Stop {
    /// Starts listening for the signals now, so that none is missed.
    fn listen() -> anyhow::Result<Self> {
        let (tell, requested) = tokio::sync::watch::channel(false);
        let signalled = signals()?;
        tokio::spawn(async move {
            signalled.await;
            tell.send_replace(true);
        });
        Ok(Self { requested })
    }

    /// Resolves once a signal came (at once if one already has).
    fn requested(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut requested = self.requested.clone();
        async move {
            // An error means the signal task is gone: never a stop then.
            if requested.wait_for(|stop| *stop).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    async fn drain_deadline(&self, timeout: Duration) {
        self.requested().await;
        tokio::time::sleep(timeout).await;
    }
}

#[cfg(unix)]
fn signals() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

#[cfg(not(unix))]
fn signals() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

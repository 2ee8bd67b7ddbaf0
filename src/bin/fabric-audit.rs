//! `fabric-audit`: serve, query, import, purge and migrate an audit log.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use clap::{Args, Parser, Subcommand};
use fabric_audit::http::{self, Authorizer, BearerTokens, Caller, Unauthenticated, AUDIT_READ};
use fabric_audit::{
    exclude_audit, AuditConfig, AuditHandle, AuditLayer, AuditQuery, AuditRecord, Batch, Cursor,
    DatabaseSink, Retention, Store,
};
use tracing_subscriber::filter::{EnvFilter, FilterExt, LevelFilter};
use tracing_subscriber::prelude::*;

#[cfg(feature = "nats")]
#[path = "fabric-audit/collect.rs"]
mod collect;

/// Immutable audit logs: serve, query, import, purge, migrate.
#[derive(Parser)]
#[command(name = "fabric-audit", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the query API (GET /api/v1/audit) over a database.
    Serve {
        #[command(flatten)]
        db: Database,
        /// Address to listen on (default: `bind` from the configuration).
        #[arg(long)]
        bind: Option<SocketAddr>,
        /// Serve without authentication (refused otherwise when no token is
        /// configured).
        #[arg(long)]
        no_auth: bool,
    },
    /// Print records, newest first.
    Query {
        #[command(flatten)]
        db: Database,
        #[command(flatten)]
        filters: Filters,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Load JSON-lines files written by the file sink into the database.
    Import {
        #[command(flatten)]
        db: Database,
        /// Files to import; a file with a bad line is not imported at all.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Delete records older than the retention window.
    Purge {
        #[command(flatten)]
        db: Database,
        /// Days to keep, from 1 to 36525 (default: `db_retention_days`).
        #[arg(long, value_name = "DAYS", allow_hyphen_values = true)]
        days: Option<String>,
    },
    /// Create or update the audit tables.
    Migrate {
        #[command(flatten)]
        db: Database,
        /// Print the schema's SQL for the URL's backend instead of applying
        /// it (for an application whose own migration tool owns the schema).
        #[arg(long)]
        print_sql: bool,
    },
    /// Write the records of the NATS JetStream stream into the database
    /// (feature `nats`): exactly once, acknowledged after the commit.
    #[cfg(feature = "nats")]
    Collect(collect::Collect),
}

#[derive(Args)]
struct Database {
    /// Configuration file (TOML or YAML, `audit` section).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Database URL: sqlite://PATH, postgres://…, mysql://… (overrides the
    /// configuration).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
}

#[derive(Args)]
struct Filters {
    #[arg(long)]
    actor_id: Option<String>,
    #[arg(long)]
    actor_type: Option<String>,
    /// Exact, or a prefix when it ends in `.`.
    #[arg(long)]
    action: Option<String>,
    #[arg(long)]
    resource_type: Option<String>,
    #[arg(long)]
    resource_id: Option<String>,
    /// RFC 3339, inclusive.
    #[arg(long)]
    from: Option<String>,
    /// RFC 3339, exclusive.
    #[arg(long)]
    to: Option<String>,
    #[arg(long)]
    has_flag: Option<String>,
    /// Records per page, 1 to 1000.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Continue after a previous page.
    #[arg(long)]
    cursor: Option<String>,
}

/// A mistake of the user's: one line, exit code 2.
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let usage = e.downcast_ref::<Usage>().is_some()
                || e.downcast_ref::<fabric_audit::Error>()
                    .is_some_and(|e| e.is_invalid_input());
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

impl Database {
    /// The configuration and the database URL to use.
    fn resolve(&self) -> anyhow::Result<(AuditConfig, String)> {
        let config = AuditConfig::load(self.config.as_deref())?;
        let url = self
            .database_url
            .clone()
            .unwrap_or_else(|| config.database_url.clone());
        Ok((config, url))
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        #[cfg(feature = "nats")]
        Command::Collect(args) => {
            let (config, url) = args.db.resolve()?;
            collect::run(args, &config, url).await?;
        }
        Command::Migrate {
            db,
            print_sql: true,
        } => {
            let (_, url) = db.resolve()?;
            print!("{}", fabric_audit::schema_sql(&url)?);
        }
        Command::Migrate { db, .. } => {
            let (_, url) = db.resolve()?;
            blocking(move || fabric_audit::migrate(&url)).await?;
            println!("audit tables are up to date");
        }
        Command::Purge { db, days } => {
            let (config, url) = db.resolve()?;
            let days_given = days.is_some();
            let retention = match days {
                Some(days) => days
                    .parse::<Retention>()
                    .map_err(|e| Usage(format!("--days: {e}")))?,
                None => config.db_retention_days,
            };
            let Some(days) = retention.as_days() else {
                if days_given {
                    bail!(Usage(
                        "--days forever keeps every record: there is nothing to purge".into()
                    ));
                }
                println!("nothing to purge: db_retention_days is forever");
                return Ok(());
            };
            let deleted = blocking(move || fabric_audit::purge(&url, retention)).await?;
            println!("purged {deleted} records older than {days} days");
        }
        Command::Query { db, filters, json } => {
            let (_, url) = db.resolve()?;
            let store = Store::connect(&url).await?;
            let page = store.query(&filters.query()?).await?;
            print_page(&page.items, json)?;
            if let Some(cursor) = page.next_cursor {
                eprintln!("next page: --cursor {cursor}");
            }
        }
        Command::Import { db, files } => {
            let (_, url) = db.resolve()?;
            import(url, files).await?;
        }
        Command::Serve { db, bind, no_auth } => {
            let (config, url) = db.resolve()?;
            serve(&config, &url, bind.unwrap_or(config.bind), no_auth).await?;
        }
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> fabric_audit::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    Ok(tokio::task::spawn_blocking(f).await??)
}

impl Filters {
    fn query(&self) -> anyhow::Result<AuditQuery> {
        let mut q = AuditQuery::new().limit(self.limit)?;
        let text = [
            (
                &self.actor_id,
                AuditQuery::actor_id as fn(AuditQuery, String) -> AuditQuery,
            ),
            (&self.actor_type, AuditQuery::actor_type),
            (&self.action, AuditQuery::action),
            (&self.resource_type, AuditQuery::resource_type),
            (&self.resource_id, AuditQuery::resource_id),
            (&self.has_flag, AuditQuery::has_flag),
        ];
        for (value, set) in text {
            if let Some(value) = value {
                q = set(q, value.clone());
            }
        }
        if let Some(from) = &self.from {
            q = q.from(timestamp("--from", from)?);
        }
        if let Some(to) = &self.to {
            q = q.to(timestamp("--to", to)?);
        }
        if let Some(cursor) = &self.cursor {
            q = q.after(cursor.parse::<Cursor>()?);
        }
        Ok(q)
    }
}

fn timestamp(flag: &str, value: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| Usage(format!("{flag} is not an RFC 3339 timestamp: {value:?}")).into())
}

fn print_page(records: &[AuditRecord], json: bool) -> anyhow::Result<()> {
    if json {
        for record in records {
            println!("{}", serde_json::to_string(record)?);
        }
        return Ok(());
    }
    println!(
        "{:<27}  {:<24}  {:<20}  {:<24}  ID",
        "TIMESTAMP", "ACTION", "ACTOR", "RESOURCE"
    );
    for r in records {
        let resource = match (r.resource_type(), r.resource_id()) {
            (Some(t), Some(id)) => format!("{t}/{id}"),
            (Some(t), None) => t.to_owned(),
            (None, Some(id)) => id.to_owned(),
            (None, None) => "-".to_owned(),
        };
        println!(
            "{:<27}  {:<24}  {:<20}  {:<24}  {}",
            r.timestamp().format("%Y-%m-%dT%H:%M:%S%.6fZ"),
            r.action(),
            r.actor_id().unwrap_or("-"),
            resource,
            r.id()
        );
    }
    Ok(())
}

/// A file's records, each with its line number.
struct Loaded {
    path: PathBuf,
    records: Vec<Arc<AuditRecord>>,
    lines: Vec<usize>,
}

impl Loaded {
    /// The line of the record with this id (the last, if it is there twice:
    /// a conflict is found at the later copy).
    fn line_of(&self, id: uuid::Uuid) -> usize {
        self.records
            .iter()
            .zip(&self.lines)
            .rev()
            .find(|(r, _)| r.id() == id)
            .map_or(0, |(_, line)| *line)
    }
}

/// Reads a whole file as records, or says which line is bad.
fn read_records(path: &Path) -> anyhow::Result<Loaded> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let mut loaded = Loaded {
        path: path.to_owned(),
        records: Vec::new(),
        lines: Vec::new(),
    };
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record: AuditRecord = serde_json::from_str(line)
            .map_err(|e| Usage(format!("{}:{}: {e}", path.display(), n + 1)))?;
        loaded.records.push(Arc::new(record));
        loaded.lines.push(n + 1);
    }
    Ok(loaded)
}

/// What an import did, over all its files.
#[derive(Default)]
struct ImportTotals {
    stored: usize,
    present: usize,
    /// `file:line: …` for each record not imported.
    problems: Vec<String>,
}

async fn import(url: String, files: Vec<PathBuf>) -> anyhow::Result<()> {
    // Every file is read whole before anything is written: a file with a
    // bad line is not imported at all. Records are stored by id, so an
    // import run twice stores each record once; an id stored with other
    // content is a conflict, reported with its file and line.
    let mut loaded = Vec::new();
    for path in &files {
        loaded.push(read_records(path)?);
    }
    let read: usize = loaded.iter().map(|l| l.records.len()).sum();
    let totals = tokio::task::spawn_blocking(move || -> anyhow::Result<ImportTotals> {
        let mut sink = DatabaseSink::builder(&url).keep_forever().build()?;
        let bar = indicatif::ProgressBar::new(read as u64);
        if read < 10_000 {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let mut totals = ImportTotals::default();
        for file in &loaded {
            for chunk in file.records.chunks(1000) {
                let done = sink
                    .import(&Batch::new(chunk))
                    .with_context(|| format!("{}: writing to the database", file.path.display()))?;
                totals.stored += done.stored;
                totals.present += done.present;
                let problems = done
                    .conflicting
                    .iter()
                    .map(|id| (id, "is stored with other content"))
                    .chain(
                        done.refused
                            .iter()
                            .map(|id| (id, "was refused by the database")),
                    );
                for (id, what) in problems {
                    totals.problems.push(format!(
                        "{}:{}: record {id} {what}: not imported",
                        file.path.display(),
                        file.line_of(*id)
                    ));
                }
                bar.inc(chunk.len() as u64);
            }
        }
        bar.finish_and_clear();
        Ok(totals)
    })
    .await??;
    println!(
        "read {read} records from {} file(s): {} stored, {} already present, {} not imported",
        files.len(),
        totals.stored,
        totals.present,
        totals.problems.len()
    );
    for problem in &totals.problems {
        eprintln!("error: {problem}");
    }
    if !totals.problems.is_empty() {
        bail!("{} record(s) not imported", totals.problems.len());
    }
    Ok(())
}

/// Admits everyone, with `audit:read`: for `serve --no-auth` only.
struct NoAuth;

impl Authorizer for NoAuth {
    async fn authorize(&self, _: &axum::http::request::Parts) -> Result<Caller, Unauthenticated> {
        Ok(Caller::new("anonymous", "anonymous", [AUDIT_READ]))
    }
}

/// How long connections still open at shutdown get to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

async fn serve(
    config: &AuditConfig,
    url: &str,
    bind: SocketAddr,
    no_auth: bool,
) -> anyhow::Result<()> {
    let store = Store::connect(url).await?;
    let api = if no_auth {
        http::router(store, NoAuth)
    } else {
        http::router(store, tokens(config)?)
    };
    let app = api
        .fallback(no_such_route)
        .layer(http::request_context().client_ip_source(config.client_ip_source.clone()));
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| Usage(format!("cannot listen on {bind}: {e}")))?;
    // Before the address is printed: whoever reads it may signal at once.
    let stop = Stop::listen()?;
    let audit = install_subscriber(config, url)?;
    println!("serving the audit API on http://{}", listener.local_addr()?);
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stop.requested());
    // Graceful, but bounded: a client holding its connection open does not
    // keep the process (and the audit records queued) alive.
    let served = tokio::select! {
        served = server => served.map_err(anyhow::Error::from),
        () = stop.drain_deadline(DRAIN_TIMEOUT) => {
            tracing::warn!(target: "fabric_audit", "connections still open after {DRAIN_TIMEOUT:?}: closing them");
            Ok(())
        }
    };
    let report = audit.shutdown().await;
    if !report.is_lossless() {
        tracing::error!(target: "fabric_audit", %report, "audit records of the query API were lost");
    }
    served
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
async fn no_such_route() -> impl IntoResponse {
    let body = serde_json::json!({"error": {"code": "not_found", "message": "no such route"}});
    (StatusCode::NOT_FOUND, axum::Json(body))
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

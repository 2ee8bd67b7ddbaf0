//! The database sink: batched, idempotent inserts, with retention.

use std::time::{Duration, Instant};

use super::backend::{Backend, Conn};
use super::row::{NewEvent, NewFlag};
use super::write;
use crate::sink::{Batch, Sink, SinkError};
use crate::{Error, Result};

/// How often a long-running sink purges expired records.
const PURGE_EVERY: Duration = Duration::from_secs(24 * 60 * 60);

/// Writes records into the `audit_events` table of SQLite, PostgreSQL or
/// MySQL/MariaDB, chosen by the URL.
///
/// Each batch is one transaction. Records whose id is already stored are
/// skipped, so a batch retried after an unknown outcome (a connection lost
/// during `COMMIT`) is stored exactly once. A failed write drops the
/// connection and reports a transient error: the worker retries with
/// backoff, the records stay queued, and the next attempt reconnects.
///
/// At start-up (in [`build`](DatabaseSinkBuilder::build)) the sink applies
/// the embedded migrations and purges expired records; a long-running sink
/// purges again once a day, a thousand records per transaction.
///
/// # Examples
///
/// ```
/// use fabric_audit::{AuditLayer, DatabaseSink};
///
/// # fn main() -> fabric_audit::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let url = format!("sqlite://{}", dir.path().join("audit.db").display());
/// let db = DatabaseSink::builder(&url).retention_days(30).build()?;
/// let (layer, audit) = AuditLayer::builder().sink("database", db).build::<tracing_subscriber::Registry>()?;
/// # drop(layer); audit.shutdown_blocking();
/// # Ok(())
/// # }
/// ```
pub struct DatabaseSink {
    backend: Backend,
    conn: Option<Conn>,
    retention_days: Option<u32>,
    last_purge: Instant,
    /// Whether the migrations and the start-up purge have run.
    prepared: bool,
}

/// Builds a [`DatabaseSink`]; made by [`DatabaseSink::builder`].
///
/// | setting | default |
/// |---|---|
/// | [`retention_days`](Self::retention_days) (`db_retention_days`) | 30 |
#[must_use]
pub struct DatabaseSinkBuilder {
    url: String,
    retention_days: Option<u32>,
}

impl DatabaseSink {
    /// Starts building a sink for the database at `url`: `sqlite://PATH`
    /// (or a bare path), `postgres://…`, or `mysql://…` / `mariadb://…`.
    pub fn builder(url: impl Into<String>) -> DatabaseSinkBuilder {
        DatabaseSinkBuilder {
            url: url.into(),
            retention_days: Some(30),
        }
    }

    fn connection(&mut self) -> Result<&mut Conn, SinkError> {
        if self.conn.is_none() {
            let conn = self.backend.connect().map_err(SinkError::transient)?;
            self.conn = Some(conn);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| SinkError::transient("no database connection"))
    }

    /// Migrates and purges, once.
    fn prepare(&mut self) -> Result<(), SinkError> {
        if !self.prepared {
            let conn = self.connection()?;
            write::migrate(conn).map_err(SinkError::transient)?;
            self.purge()?;
            self.prepared = true;
        }
        Ok(())
    }

    /// Purges records older than the retention window; returns how many.
    fn purge(&mut self) -> Result<usize, SinkError> {
        let Some(days) = self.retention_days else {
            return Ok(0);
        };
        let cutoff = chrono::Utc::now() - chrono::Duration::days(i64::from(days));
        let cutoff_us = cutoff.timestamp_micros();
        let mut total = 0;
        loop {
            let conn = self.connection()?;
            let deleted = write::purge_chunk(conn, cutoff_us).map_err(|e| self.failed(e))?;
            total += deleted;
            if deleted < write::PURGE_CHUNK as usize {
                self.last_purge = Instant::now();
                return Ok(total);
            }
        }
    }

    /// Turns a failed statement into the worker's error, dropping the
    /// connection unless the data itself was refused.
    fn failed(&mut self, error: diesel::result::Error) -> SinkError {
        if write::is_data_error(&error) {
            SinkError::rejected(error)
        } else {
            self.conn = None;
            SinkError::transient(error)
        }
    }
}

impl Sink for DatabaseSink {
    fn write(&mut self, batch: &Batch<'_>) -> Result<(), SinkError> {
        self.prepare()?;
        if self.last_purge.elapsed() >= PURGE_EVERY {
            if let Err(error) = self.purge() {
                // The records come first: purge again on a later batch.
                tracing::warn!(target: "fabric_audit", %error, "audit retention purge failed");
            }
        }
        let events: Vec<NewEvent<'_>> = batch.iter().map(NewEvent::new).collect();
        let flags: Vec<NewFlag<'_>> = batch
            .iter()
            .zip(&events)
            .flat_map(|(record, event)| NewFlag::of(record, event))
            .collect();
        let conn = self.connection()?;
        write::insert(conn, &events, &flags).map_err(|e| self.failed(e))
    }
}

impl std::fmt::Debug for DatabaseSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSink")
            .field("backend", &self.backend)
            .field("connected", &self.conn.is_some())
            .field("retention_days", &self.retention_days)
            .finish()
    }
}

impl DatabaseSinkBuilder {
    /// Days of records to keep (`db_retention_days`); older ones are
    /// purged at start-up and daily.
    pub fn retention_days(self, days: u32) -> Self {
        Self {
            retention_days: Some(days),
            ..self
        }
    }

    /// Never purge.
    pub fn keep_forever(self) -> Self {
        Self {
            retention_days: None,
            ..self
        }
    }

    /// Connects, applies the migrations and purges expired records.
    ///
    /// Blocks: from async code call it inside `spawn_blocking`.
    ///
    /// # Errors
    ///
    /// A URL of an unknown scheme or of a backend whose feature is off, a
    /// database that cannot be reached, or a migration that fails.
    pub fn build(self) -> Result<DatabaseSink> {
        let mut sink = self.build_lazy()?;
        sink.prepare().map_err(|e| {
            Error::config(format!(
                "cannot prepare the {} audit database: {e}",
                sink.backend.kind()
            ))
        })?;
        Ok(sink)
    }

    /// Checks the URL only; the sink connects, migrates and purges on its
    /// first write, from its worker thread, and retries like any write if
    /// the database is not there yet. Does not block: safe in async code.
    ///
    /// # Errors
    ///
    /// A URL of an unknown scheme or of a backend whose feature is off.
    pub fn build_lazy(self) -> Result<DatabaseSink> {
        Ok(DatabaseSink {
            backend: Backend::parse(&self.url)?,
            conn: None,
            retention_days: self.retention_days,
            last_purge: Instant::now(),
            prepared: false,
        })
    }
}

impl std::fmt::Debug for DatabaseSinkBuilder {
    /// Without the URL, which may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSinkBuilder")
            .field("backend", &Backend::parse(&self.url).map(|b| b.kind()).ok())
            .field("retention_days", &self.retention_days)
            .finish_non_exhaustive()
    }
}

/// Applies the audit tables' migrations to the database at `url`.
///
/// The database sink does this itself at start-up; this is for deployments
/// that migrate before the application starts. Blocks: from async code call
/// it inside `spawn_blocking`.
///
/// # Errors
///
/// As for [`DatabaseSinkBuilder::build`].
pub fn migrate(url: &str) -> Result<()> {
    let backend = Backend::parse(url)?;
    let mut conn = backend.connect().map_err(|e| {
        Error::config(format!(
            "cannot connect to the {} audit database: {e}",
            backend.kind()
        ))
    })?;
    write::migrate(&mut conn).map_err(Error::config)
}

/// Deletes the records older than `retention_days` from the database at
/// `url` (applying the migrations first); returns how many. What the sink
/// does at start-up and daily, for a maintenance job or the CLI.
///
/// Blocks: from async code call it inside `spawn_blocking`.
///
/// # Errors
///
/// As for [`DatabaseSinkBuilder::build`].
pub fn purge(url: &str, retention_days: u32) -> Result<usize> {
    let mut sink = DatabaseSink::builder(url).keep_forever().build()?;
    sink.retention_days = Some(retention_days);
    sink.purge()
        .map_err(|e| Error::database(format!("cannot purge expired audit records: {e}")))
}

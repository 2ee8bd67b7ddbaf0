//! The database sink: batched, idempotent inserts, with retention.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::backend::{Backend, Conn, Role};
use super::migrate;
use super::purge::{Pacing, Purger};
use super::row::NewRecord;
use super::write::{self, Check, Outcome};
use crate::chain::checkpoint::SigningKey;
use crate::sink::{Batch, ChainHead, Sink, SinkError};
use crate::{AuditRecord, Error, Result, Retention};

/// How long [`Sink::close`] waits for the purge thread to finish its chunk.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Writes records into the `audit_events` table of SQLite, PostgreSQL or
/// MySQL/MariaDB, chosen by the URL.
///
/// Each batch is one transaction. Records whose id is already stored are
/// skipped, so a batch retried after an unknown outcome (a connection lost
/// during `COMMIT`) is stored exactly once. A failed write drops the
/// connection and reports a transient error: the worker retries with
/// backoff, the records stay queued, and the next attempt reconnects.
///
/// Values no backend could store as given (a NUL byte, a text longer than
/// its column) are made storable before the insert, the same way on every
/// backend, and the record says so in
/// `detail["fabric_audit.stored_as"]`: NUL bytes are escaped in that field
/// (the [`Store`](crate::Store) reads the original back), and texts are cut
/// to 255 characters in the short columns (`action`, `actor_id`,
/// `actor_type`, `resource_type`, `resource_id`, `request_id`,
/// `client_ip`, each flag's index entry) and to 65 535 bytes in
/// `actor_email`, `actor_name` and `user_agent`, with their original length
/// in bytes; a `detail` over 8 MiB loses its longest values first. A
/// record the database still refuses is isolated (the batch is split until
/// it is alone) and counted as failed; the others are written.
///
/// Expired records are purged by a thread of the sink's own, with its own
/// connection: at start-up and then daily, a thousand records per
/// transaction, never holding back a write. A purge that fails (a role
/// without `DELETE`) is warned about on target `fabric_audit` and retried
/// later; writing goes on.
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
    retention: Retention,
    pacing: Pacing,
    purger: Option<Purger>,
    /// Whether the sink applies the migrations, or only checks the schema.
    apply_migrations: bool,
    /// Whether the migrations have run (or the tables were found without
    /// them) and the purge thread is started.
    prepared: bool,
    /// Signs what the purge states of each chain it cuts.
    purge_key: Option<Arc<SigningKey>>,
}

/// Builds a [`DatabaseSink`]; made by [`DatabaseSink::builder`].
///
/// | setting | default |
/// |---|---|
/// | [`retention`](Self::retention) / [`retention_days`](Self::retention_days) (`db_retention_days`) | 30 days |
#[must_use]
pub struct DatabaseSinkBuilder {
    url: String,
    /// `Err(days)`: days no [`Retention`] can hold, refused by `build`.
    retention: Result<Retention, u32>,
    pacing: Pacing,
    apply_migrations: bool,
    purge_key: Option<Arc<SigningKey>>,
}

/// What [`DatabaseSink::import`] did with a batch of records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Imported {
    /// Records stored now.
    pub stored: usize,
    /// Records already stored, with the same content.
    pub present: usize,
    /// Ids already stored with other content (or given twice in the batch
    /// with different content): these records were not stored.
    pub conflicting: Vec<Uuid>,
    /// Ids the database refused for their data: not stored.
    pub refused: Vec<Uuid>,
}

impl DatabaseSink {
    /// Starts building a sink for the database at `url`: `sqlite://PATH`
    /// (or a bare path), `postgres://…`, or `mysql://…` / `mariadb://…`.
    pub fn builder(url: impl Into<String>) -> DatabaseSinkBuilder {
        DatabaseSinkBuilder {
            url: url.into(),
            retention: Retention::days(30).map_err(|_| 30),
            pacing: Pacing::default(),
            apply_migrations: true,
            purge_key: None,
        }
    }

    /// Stores the records of `batch` that are not stored yet, and says
    /// which ids were already stored with the same content, with other
    /// content (a conflict: not stored), or refused by the database. For
    /// loading records from elsewhere (`fabric-audit import`), where an id
    /// may come back with other content; the sink's own writes only skip
    /// stored ids.
    ///
    /// Blocks: from async code call it inside `spawn_blocking`.
    ///
    /// # Errors
    ///
    /// The database could not be reached or failed for a reason other than
    /// the data (the same batch may be tried again: what was stored is
    /// then present).
    pub fn import(&mut self, batch: &Batch<'_>) -> Result<Imported> {
        let outcome = self
            .insert(batch, Check::Content)
            .map_err(|e| Error::database("cannot import audit records").because(e))?;
        let ids = |ids: Vec<String>| {
            ids.iter()
                .filter_map(|id| Uuid::parse_str(id).ok())
                .collect()
        };
        Ok(Imported {
            stored: outcome.stored,
            present: outcome.present,
            conflicting: ids(outcome.conflicting),
            refused: ids(outcome.refused),
        })
    }

    /// Runs `pragmas` on the sink's connection if it is SQLite's (other
    /// backends: nothing): an import's settings, for this connection only.
    /// A connection made after a failure goes without them.
    #[cfg_attr(not(feature = "sqlite"), allow(unused_variables))]
    pub(super) fn sqlite_pragmas(&mut self, pragmas: &str) -> Result<()> {
        self.prepare()?;
        let conn = self
            .connection()
            .map_err(|e| Error::database("cannot connect to the database").because(e))?;
        match conn {
            #[cfg(feature = "sqlite")]
            Conn::Sqlite(c) => diesel::connection::SimpleConnection::batch_execute(c, pragmas)
                .map_err(|e| Error::database("cannot set up the import").because(e)),
            #[allow(unreachable_patterns)] // with only the sqlite feature
            _ => Ok(()),
        }
    }

    fn insert(&mut self, batch: &Batch<'_>, check: Check) -> Result<Outcome, SinkError> {
        self.prepare().map_err(SinkError::transient)?;
        let records: Vec<NewRecord<'_>> = batch.iter().map(NewRecord::new).collect();
        let conn = self.connection()?;
        write::insert(conn, &records, check).map_err(|error| {
            // Whatever broke, the next attempt starts from a new connection.
            self.conn = None;
            SinkError::transient(error)
        })
    }

    fn connection(&mut self) -> Result<&mut Conn, SinkError> {
        if self.conn.is_none() {
            let conn = self
                .backend
                .connect(Role::Write)
                .map_err(SinkError::transient)?;
            self.conn = Some(conn);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| SinkError::transient("no database connection"))
    }

    /// Migrates (or checks the schema) and starts the purge thread, once.
    /// A failed step drops the connection: it may be what failed.
    fn prepare(&mut self) -> Result<()> {
        if self.prepared {
            return Ok(());
        }
        if let Err(error) = self.prepare_schema() {
            self.conn = None;
            return Err(error);
        }
        self.prepared = true;
        if let Some(days) = self.retention.as_days() {
            self.purger = Some(Purger::spawn(
                self.backend.clone(),
                days,
                self.pacing,
                self.purge_key.clone(),
            ));
        }
        Ok(())
    }

    fn prepare_schema(&mut self) -> Result<()> {
        let (apply, kind) = (self.apply_migrations, self.backend.kind());
        match &self.backend {
            // SQLite has no statement timeout to lift, and `:memory:` is a
            // database per connection: the writer's own connection.
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(_) => {
                let mut conn = match self.conn.take() {
                    Some(conn) => conn,
                    None => migrate::connect(&self.backend, Role::Write)?,
                };
                let prepared = migrate::prepare_schema(&mut conn, kind, apply);
                self.conn = Some(conn);
                prepared
            }
            #[allow(unreachable_patterns)] // with only the sqlite feature
            _ => {
                let mut conn = migrate::connect(&self.backend, Role::Migrate)?;
                migrate::prepare_schema(&mut conn, kind, apply)
            }
        }
    }

    /// The purge thread, for tests that wait for it.
    #[cfg(test)]
    pub(crate) fn purger(&self) -> Option<&Purger> {
        self.purger.as_ref()
    }
}

impl Sink for DatabaseSink {
    fn write(&mut self, batch: &Batch<'_>) -> Result<(), SinkError> {
        let outcome = self.insert(batch, Check::Ids)?;
        match (outcome.refused.len(), outcome.first_error) {
            (0, _) => Ok(()),
            (n, error) => Err(SinkError::partial(
                n,
                format!(
                    "the database refused {n} record(s), first {}: {}",
                    outcome.refused[0],
                    error.map_or_else(String::new, |e| e.to_string())
                ),
            )),
        }
    }

    /// Connects, migrates (or checks the schema) and starts purging: the
    /// tables exist from start-up, not from the first record.
    fn open(&mut self) -> Result<(), SinkError> {
        self.prepare().map_err(SinkError::transient)
    }

    /// A value longer than its column is cut (see the crate docs on the
    /// stored form): the chain hashes the record as it will read back.
    fn stored_form(&mut self, record: &AuditRecord) -> Option<AuditRecord> {
        super::row::stored_form(record)
    }

    /// The database sink chains its records; a new run continues after
    /// the highest `seq` of `chain` in the table.
    fn chain_head(&mut self, chain: &str) -> Result<ChainHead, SinkError> {
        self.prepare().map_err(SinkError::transient)?;
        let conn = self.connection()?;
        match write::chain_head(conn, chain) {
            Ok(None) => Ok(ChainHead::Empty),
            Ok(Some((seq, hash))) => Ok(ChainHead::Last {
                // Never negative: the sink writes from 1 (and a forged row
                // is verification's to name).
                seq: u64::try_from(seq).unwrap_or(0),
                hash: hash.unwrap_or_default(),
            }),
            Err(error) => {
                self.conn = None;
                Err(SinkError::transient(error))
            }
        }
    }

    fn close(&mut self) -> Result<(), SinkError> {
        self.conn = None;
        let stopped = self.purger.take().is_none_or(|mut p| p.stop(CLOSE_WAIT));
        if stopped {
            Ok(())
        } else {
            Err(SinkError::transient(
                "the audit retention purge did not stop in time; left to finish on its own",
            ))
        }
    }
}

impl std::fmt::Debug for DatabaseSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSink")
            .field("backend", &self.backend)
            .field("connected", &self.conn.is_some())
            .field("retention", &self.retention)
            .field("purger", &self.purger)
            .finish()
    }
}

impl DatabaseSinkBuilder {
    /// How long records are kept (`db_retention_days`); older ones are
    /// purged at start-up and daily. [`Retention::FOREVER`] never purges.
    pub fn retention(self, retention: Retention) -> Self {
        Self {
            retention: Ok(retention),
            ..self
        }
    }

    /// Days of records to keep (`db_retention_days`), from 1 to
    /// [`Retention::MAX_DAYS`]; [`build`](Self::build) refuses other
    /// values. Older records are purged at start-up and daily.
    pub fn retention_days(self, days: u32) -> Self {
        Self {
            retention: Retention::days(days).map_err(|_| days),
            ..self
        }
    }

    /// Never purge.
    pub fn keep_forever(self) -> Self {
        self.retention(Retention::FOREVER)
    }

    /// Whether the sink applies its migrations at start-up (the default),
    /// or leaves the schema to the application's own migration tool (the
    /// SQL from [`schema_sql`](crate::schema_sql)) and only checks that the tables, their
    /// columns and, where diesel's table records them, these migrations
    /// are there, failing with exactly what is missing.
    pub fn apply_migrations(self, apply: bool) -> Self {
        Self {
            apply_migrations: apply,
            ..self
        }
    }

    /// Signs, with the checkpoint key, what the purge states of each hash
    /// chain it cuts (see [`purge`](crate::purge)), so that `verify` with
    /// the public key accepts the purged prefix. The layer's own database
    /// sink gets the layer's key
    /// ([`AuditLayerBuilder::checkpoint_key`](crate::AuditLayerBuilder::checkpoint_key)).
    pub fn purge_key(self, key: SigningKey) -> Self {
        self.purge_key_shared(Arc::new(key))
    }

    pub(crate) fn purge_key_shared(self, key: Arc<SigningKey>) -> Self {
        Self {
            purge_key: Some(key),
            ..self
        }
    }

    /// How often the purge runs, and its pause between chunks.
    #[cfg(test)]
    pub(crate) fn pacing(self, pacing: Pacing) -> Self {
        Self { pacing, ..self }
    }

    /// Connects, applies the migrations and starts the purge thread.
    ///
    /// Where the migrations cannot run but the tables are there (a role
    /// that may only read and append), it warns on target `fabric_audit`
    /// and goes on.
    ///
    /// Blocks: from async code call it inside `spawn_blocking`.
    ///
    /// # Errors
    ///
    /// A retention of 0 days or more than [`Retention::MAX_DAYS`], a URL of
    /// an unknown scheme or of a backend whose feature is off, a database
    /// that cannot be reached, or one without the tables where the
    /// migrations fail.
    pub fn build(self) -> Result<DatabaseSink> {
        let mut sink = self.build_lazy()?;
        sink.prepare()?;
        Ok(sink)
    }

    /// Checks the settings and the URL only; the sink connects, migrates
    /// and starts purging on its first write, from its worker thread, and
    /// retries like any write if the database is not there yet. Does not
    /// block: safe in async code.
    ///
    /// # Errors
    ///
    /// A retention of 0 days or more than [`Retention::MAX_DAYS`], or a URL
    /// of an unknown scheme or of a backend whose feature is off.
    pub fn build_lazy(self) -> Result<DatabaseSink> {
        let retention = self.retention.map_err(|days| {
            Error::invalid(format!(
                "database retention must be from 1 to {} days (or keep_forever()), not {days}",
                Retention::MAX_DAYS
            ))
        })?;
        Ok(DatabaseSink {
            backend: Backend::parse(&self.url)?,
            conn: None,
            retention,
            pacing: self.pacing,
            purger: None,
            apply_migrations: self.apply_migrations,
            prepared: false,
            purge_key: self.purge_key,
        })
    }
}

impl std::fmt::Debug for DatabaseSinkBuilder {
    /// Without the URL, which may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSinkBuilder")
            .field("backend", &Backend::parse(&self.url).map(|b| b.kind()).ok())
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use diesel::prelude::*;

    use super::*;
    use crate::db::schema::audit_events;
    use crate::AuditRecord;

    const DAY: i64 = 86_400_000_000;
    const WAIT: Duration = Duration::from_secs(20);

    fn url(dir: &tempfile::TempDir) -> String {
        format!("sqlite://{}", dir.path().join("audit.db").display())
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp_micros()
    }

    /// Stores records aged this many days each (through a sink that keeps
    /// everything).
    fn seed(url: &str, ages_in_days: &[i64]) {
        let now = now();
        let records: Vec<Arc<AuditRecord>> = ages_in_days
            .iter()
            .enumerate()
            .map(|(i, age)| {
                let at = chrono::DateTime::from_timestamp_micros(now - age * DAY - i as i64);
                Arc::new(
                    AuditRecord::builder("seeded")
                        .timestamp(at.unwrap())
                        .build(),
                )
            })
            .collect();
        let mut sink = DatabaseSink::builder(url).keep_forever().build().unwrap();
        for chunk in records.chunks(1000) {
            sink.write(&Batch::new(chunk)).unwrap();
        }
    }

    /// The ages in days (rounded down) of the stored records, ascending.
    fn ages(url: &str) -> Vec<i64> {
        let mut conn = Backend::parse(url).unwrap().connect(Role::Write).unwrap();
        let Conn::Sqlite(c) = &mut conn else {
            unreachable!()
        };
        let now = now();
        let mut times: Vec<i64> = audit_events::table
            .select(audit_events::timestamp_us)
            .load(c)
            .unwrap();
        times.sort_unstable_by(|a, b| b.cmp(a));
        times.into_iter().map(|t| (now - t) / DAY).collect()
    }

    #[test]
    fn retention_outside_one_to_max_days_is_refused() {
        for days in [0, 36_526, 96_000_000, u32::MAX] {
            let err = DatabaseSink::builder("sqlite://x.db")
                .retention_days(days)
                .build_lazy()
                .unwrap_err();
            assert!(err.is_invalid_input(), "{days}: {err}");
            assert!(err.to_string().contains(&days.to_string()), "{err}");
        }
        for days in [1, 30, 36_525] {
            let sink = DatabaseSink::builder("sqlite://x.db")
                .retention_days(days)
                .build_lazy();
            assert_eq!(sink.unwrap().retention.as_days(), Some(days));
        }
        let sink = DatabaseSink::builder("sqlite://x.db")
            .retention_days(0)
            .keep_forever();
        assert_eq!(sink.build_lazy().unwrap().retention, Retention::FOREVER);
        let sink = DatabaseSink::builder("sqlite://x.db").retention(Retention::days(7).unwrap());
        assert_eq!(sink.build_lazy().unwrap().retention.as_days(), Some(7));
    }

    #[test]
    fn writes_do_not_wait_for_a_backlog_purge() {
        let dir = tempfile::tempdir().unwrap();
        let url = url(&dir);
        seed(&url, &[40; 3000]);
        // A chunk of a thousand, then a long pause: the purge is under way
        // for seconds, and the write must not wait for it.
        let pacing = Pacing {
            pause: Duration::from_secs(5),
            ..Pacing::default()
        };
        let mut sink = DatabaseSink::builder(&url)
            .retention_days(30)
            .pacing(pacing)
            .build()
            .unwrap();
        let fresh = vec![Arc::new(AuditRecord::builder("fresh").build())];
        sink.write(&Batch::new(&fresh)).unwrap();
        let ages = ages(&url);
        assert_eq!(ages[0], 0, "the fresh record is written");
        assert!(
            ages.len() > 2000,
            "written before the purge is done: {}",
            ages.len()
        );
        let closing = Instant::now();
        sink.close().unwrap();
        assert!(
            closing.elapsed() < Duration::from_secs(4),
            "close ends the pause"
        );
    }

    #[test]
    fn an_idle_sink_purges_on_its_timer() {
        let dir = tempfile::tempdir().unwrap();
        let url = url(&dir);
        let pacing = Pacing {
            interval: Duration::from_millis(100),
            ..Pacing::default()
        };
        let mut sink = DatabaseSink::builder(&url)
            .retention_days(30)
            .pacing(pacing)
            .build()
            .unwrap();
        let purger = sink.purger().unwrap();
        assert!(purger.wait_for_passes(1, WAIT));
        seed(&url, &[40, 1]);
        // A whole purge after the seed, with no write to this sink.
        let passes = purger.passes();
        assert!(purger.wait_for_passes(passes + 2, WAIT));
        assert_eq!(ages(&url), [1]);
        sink.close().unwrap();
    }

    #[test]
    fn a_clock_far_ahead_deletes_nothing_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let url = url(&dir);
        seed(&url, &[1, 29, 40]);
        let pacing = Pacing {
            clock: || chrono::Utc::now().timestamp_micros() + 365 * DAY,
            ..Pacing::default()
        };
        let mut sink = DatabaseSink::builder(&url)
            .retention_days(30)
            .pacing(pacing)
            .build()
            .unwrap();
        assert!(sink.purger().unwrap().wait_for_passes(1, WAIT));
        // 30 days before the newest record (1 day old) is the cutoff.
        assert_eq!(ages(&url), [1, 29]);
        sink.close().unwrap();
    }
}

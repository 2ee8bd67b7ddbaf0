//! Configuring the layer, its sinks and their queues.

use std::path::PathBuf;
use std::time::Duration;

use tracing_core::Subscriber;
use tracing_subscriber::filter::Filtered;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer as _;

use super::{AuditFilter, AuditLayer};
use crate::chain::checkpoint::{self, SigningKey};
use crate::delivery::copy::{self, CheckpointCopy};
use crate::delivery::worker::WorkerConfig;
use crate::delivery::{Delivery, Overflow, Settings};
use crate::sink::{FileSink, Sink};
use crate::{AuditHandle, Error, Result, Retention};

/// The default size budget of a record's text (`max_record_bytes`).
pub(crate) const DEFAULT_MAX_RECORD_BYTES: usize = 32 * 1024;

/// The smallest size budget allowed.
const MIN_MAX_RECORD_BYTES: usize = 1024;

/// Builds an [`AuditLayer`] with its sinks; made by [`AuditLayer::builder`].
///
/// | setting | default |
/// |---|---|
/// | sinks | none: add [`file`](Self::file), `database` (feature `db`) and/or [`sink`](Self::sink) |
/// | [`queue_capacity`](Self::queue_capacity) (`queue_maxsize`) | 10 000 records per sink |
/// | [`overflow`](Self::overflow) | [`Overflow::DropNewest`] |
/// | [`batch_size`](Self::batch_size) | 1 024 records |
/// | [`flush_interval`](Self::flush_interval) | 50 ms |
/// | [`max_backoff`](Self::max_backoff) | 5 s |
/// | [`shutdown_timeout`](Self::shutdown_timeout) | 30 s |
/// | [`max_record_bytes`](Self::max_record_bytes) | 32 KiB |
///
/// # Examples
///
/// ```
/// use fabric_audit::{audit, AuditLayer};
/// use tracing_subscriber::prelude::*;
///
/// # fn main() -> fabric_audit::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let (layer, audit) = AuditLayer::builder()
///     .file(dir.path().join("audit.jsonl"))
///     .build()?;
/// let subscriber = tracing_subscriber::registry().with(layer);
/// tracing::subscriber::with_default(subscriber, || {
///     audit!(action = "user.login", "actor.id" = "u1");
/// });
/// let report = audit.shutdown_blocking();
/// assert_eq!(report.sink("file").unwrap().written(), 1);
/// # Ok(())
/// # }
/// ```
#[must_use]
pub struct AuditLayerBuilder {
    file: Option<PathBuf>,
    file_retention: Retention,
    #[cfg(db)]
    database_retention: Retention,
    #[cfg(db)]
    database: Option<String>,
    #[cfg(db)]
    apply_migrations: bool,
    #[cfg(feature = "nats")]
    nats: Option<crate::NatsStream>,
    sinks: Vec<(String, Box<dyn Sink + Send>)>,
    queue_capacity: usize,
    overflow: Overflow,
    worker: WorkerConfig,
    shutdown_timeout: Duration,
    max_record_bytes: usize,
    /// This instance's name in chain names; `None`: the host's name.
    instance: Option<String>,
    checkpoints: CheckpointSettings,
}

/// What the builder knows of checkpoints; on when any is set.
#[derive(Default)]
struct CheckpointSettings {
    key: Option<KeySource>,
    every: Option<(u64, Duration)>,
    copy: Option<CopyTarget>,
}

/// Where the checkpoints are copied.
enum CopyTarget {
    File(PathBuf),
    Sink(String, Box<dyn Sink + Send>),
    /// A database URL, made a sink at `build`.
    #[cfg(db)]
    Database(String),
}

impl std::fmt::Debug for CopyTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::Sink(name, _) => f.debug_tuple("Sink").field(name).finish(),
            // Never the URL: it may carry a password.
            #[cfg(db)]
            Self::Database(_) => f.write_str("Database"),
        }
    }
}

impl std::fmt::Debug for CheckpointSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("CheckpointSettings")
            .field(
                "key",
                &match &self.key {
                    None => "none".to_owned(),
                    Some(KeySource::Key(key)) => key.public_key().to_string(),
                    Some(KeySource::File(path)) => path.display().to_string(),
                },
            )
            .field("every", &self.every)
            .field("copy", &self.copy)
            .finish()
    }
}

enum KeySource {
    Key(std::sync::Arc<SigningKey>),
    /// Read at `build`.
    File(PathBuf),
}

/// A checkpoint after at most this many records, by default.
const CHECKPOINT_EVERY_RECORDS: u64 = 10_000;
/// And at least this often while records come, by default.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(60);

impl AuditLayerBuilder {
    pub(crate) fn new() -> Self {
        Self {
            file: None,
            file_retention: Retention::days(90).unwrap_or(Retention::FOREVER),
            #[cfg(db)]
            database_retention: Retention::days(30).unwrap_or(Retention::FOREVER),
            #[cfg(db)]
            database: None,
            #[cfg(db)]
            apply_migrations: true,
            #[cfg(feature = "nats")]
            nats: None,
            sinks: Vec::new(),
            queue_capacity: 10_000,
            overflow: Overflow::DropNewest,
            worker: WorkerConfig {
                batch_size: 1024,
                interval: Duration::from_millis(50),
                min_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_secs(5),
            },
            shutdown_timeout: Duration::from_secs(30),
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            instance: None,
            checkpoints: CheckpointSettings::default(),
        }
    }

    /// Adds the JSON-lines file sink, named `file`, with its defaults:
    /// `logs/audit.jsonl` becomes `logs/audit.2026-11-27.jsonl`, rotated
    /// daily (UTC), 90 days kept. For other settings build a
    /// [`FileSink`] and add it with [`sink`](Self::sink).
    pub fn file(self, path: impl Into<PathBuf>) -> Self {
        Self {
            file: Some(path.into()),
            ..self
        }
    }

    /// Adds the database sink, named `database`, for the database at `url`
    /// (`sqlite://PATH`, `postgres://…`, `mysql://…`), keeping
    /// `db_retention_days` (30) days. It connects and migrates from its
    /// worker thread, retrying until the database is there, so `build`
    /// neither blocks nor fails on it; for a sink that checks the database
    /// at start-up, build a [`DatabaseSink`](crate::DatabaseSink) and add
    /// it with [`sink`](Self::sink).
    #[cfg(db)]
    pub fn database(self, url: impl Into<String>) -> Self {
        Self {
            database: Some(url.into()),
            ..self
        }
    }

    /// Adds a [`NatsSink`](crate::NatsSink), named `nats`, publishing to
    /// `target` with the default window. It connects and creates or checks
    /// the stream from its worker thread, retrying until the server is
    /// there, so `build` neither blocks nor fails on the server.
    #[cfg(feature = "nats")]
    pub fn nats(mut self, target: crate::NatsStream) -> Self {
        self.nats = Some(target);
        self
    }

    /// Whether the database sink applies its migrations at start-up (the
    /// default), or leaves the schema to your own migration tool (the SQL
    /// of [`schema_sql`](crate::schema_sql)) and checks it, failing with
    /// what is missing (`run_migrations`). See
    /// [`DatabaseSinkBuilder::apply_migrations`](crate::DatabaseSinkBuilder::apply_migrations).
    #[cfg(db)]
    pub fn apply_migrations(self, apply: bool) -> Self {
        Self {
            apply_migrations: apply,
            ..self
        }
    }

    /// Applies the settings of `config`: `queue_maxsize`, the file sink at
    /// `log_file` keeping `log_retention_days`, (with a database feature)
    /// the database sink at `database_url` keeping `db_retention_days`, and
    /// the checkpoints' `checkpoint_*` settings.
    #[cfg(feature = "config")]
    pub fn config(self, config: &crate::AuditConfig) -> Self {
        let builder = Self {
            file_retention: config.log_retention_days,
            ..self
        };
        #[cfg(db)]
        let builder = Self {
            database_retention: config.db_retention_days,
            apply_migrations: config.run_migrations,
            ..builder
        }
        .database(&config.database_url);
        let mut builder = builder
            .queue_capacity(config.queue_maxsize)
            .max_record_bytes(config.max_record_bytes)
            .file(&config.log_file);
        if let Some(path) = &config.checkpoint_key_file {
            builder = builder.checkpoint_key_file(path);
        }
        if let Some(path) = &config.checkpoint_copy {
            builder = builder.checkpoint_copy(path);
        }
        #[cfg(db)]
        if let Some(url) = &config.checkpoint_copy_database_url {
            builder = builder.checkpoint_copy_database(url);
        }
        if builder.checkpoints.key.is_some() || builder.checkpoints.copy.is_some() {
            builder = builder.checkpoint_every(
                config.checkpoint_every_records,
                Duration::from_secs(config.checkpoint_every_secs),
            );
        }
        builder
    }

    /// Adds a sink under `name` (used in reports and warnings; unique).
    pub fn sink(mut self, name: impl Into<String>, sink: impl Sink + Send + 'static) -> Self {
        self.sinks.push((name.into(), Box::new(sink)));
        self
    }

    /// The capacity of each sink's queue (the `queue_maxsize` setting).
    /// Memory is bounded by it: at most this many records wait per sink.
    pub fn queue_capacity(self, records: usize) -> Self {
        Self {
            queue_capacity: records,
            ..self
        }
    }

    /// What to do when a queue is full.
    pub fn overflow(self, overflow: Overflow) -> Self {
        Self { overflow, ..self }
    }

    /// The most records handed to a sink in one write.
    pub fn batch_size(mut self, records: usize) -> Self {
        self.worker.batch_size = records;
        self
    }

    /// How long a worker sleeps while its queue is below a batch's worth;
    /// the longest a record waits before being written.
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.worker.interval = interval;
        self
    }

    /// The longest wait between two retries of a failing sink.
    pub fn max_backoff(mut self, backoff: Duration) -> Self {
        self.worker.max_backoff = backoff;
        self
    }

    /// How long [`shutdown`](AuditHandle::shutdown) keeps retrying failing
    /// sinks before counting what they hold as failed.
    pub fn shutdown_timeout(self, timeout: Duration) -> Self {
        Self {
            shutdown_timeout: timeout,
            ..self
        }
    }

    /// The most text one record may hold (`max_record_bytes`), which with
    /// the queue capacity bounds the pipeline's memory. Past it, values are
    /// cut (each keeps at least its first 256 bytes) and the record says
    /// so: `detail["fabric_audit.truncated.<field>"]` holds the original
    /// length in bytes (`user_agent`, `detail.<key>`, …). The record is
    /// never dropped for its size. At least 1 024.
    ///
    /// # Examples
    ///
    /// ```
    /// use fabric_audit::{audit, AuditLayer, DetailValue};
    /// # use tracing_subscriber::prelude::*;
    /// # #[derive(Clone, Default)]
    /// # struct Keep(std::sync::Arc<std::sync::Mutex<Vec<fabric_audit::AuditRecord>>>);
    /// # impl fabric_audit::Sink for Keep {
    /// #     fn write(&mut self, b: &fabric_audit::Batch<'_>) -> Result<(), fabric_audit::SinkError> {
    /// #         self.0.lock().unwrap().extend(b.iter().cloned()); Ok(())
    /// #     }
    /// # }
    /// # let keep = Keep::default();
    /// let (layer, audit) = AuditLayer::builder()
    ///     .sink("keep", keep.clone())
    ///     .max_record_bytes(4096)
    ///     .build()?;
    /// # let subscriber = tracing_subscriber::registry().with(layer);
    /// # tracing::subscriber::with_default(subscriber, || {
    /// audit!(action = "upload", body = "x".repeat(1_000_000));
    /// # });
    /// # audit.shutdown_blocking();
    /// # let record = keep.0.lock().unwrap()[0].clone();
    /// assert!(matches!(record.detail_value("body"), Some(DetailValue::Str(s)) if s.len() < 4096));
    /// assert_eq!(
    ///     record.detail_value("fabric_audit.truncated.detail.body"),
    ///     Some(DetailValue::I64(1_000_000))
    /// );
    /// # Ok::<(), fabric_audit::Error>(())
    /// ```
    pub fn max_record_bytes(self, bytes: usize) -> Self {
        Self {
            max_record_bytes: bytes,
            ..self
        }
    }

    /// This service instance's name, which starts the name of each sink's
    /// hash chain: `<instance>/<sink name>` (`web-1/file`). Each instance
    /// writing into one database keeps a chain of its own, so it must be
    /// unique among the instances sharing a store, and stable across
    /// restarts so that a restarted instance continues its chain. The
    /// default is the host's name (`/proc/sys/kernel/hostname`, else
    /// `$HOSTNAME`, else `localhost`); in containers whose host names
    /// change, set it from the deployment (a pod's stable name).
    ///
    /// At most 100 bytes, no control characters, not empty (sink names too).
    ///
    /// # Examples
    ///
    /// ```
    /// # use fabric_audit::AuditLayer;
    /// let builder = AuditLayer::builder().instance("billing-1").file("logs/audit.jsonl");
    /// ```
    pub fn instance(self, name: impl Into<String>) -> Self {
        Self {
            instance: Some(name.into()),
            ..self
        }
    }

    /// Signs each chain's checkpoints with `key` (and turns checkpoints
    /// on; see [`checkpoint_every`](Self::checkpoint_every)).
    ///
    /// A checkpoint is a record of action
    /// [`CHECKPOINT_ACTION`](crate::verify::CHECKPOINT_ACTION) that each
    /// sink's worker writes into its chain: it states the `seq` and hash of
    /// the record before it, and, signed, proves that the holder of the key
    /// saw the chain so far. Someone who can write the store but has not
    /// the key cannot then rewrite the chain before the last checkpoint
    /// unnoticed, nor remove checkpoints (the next one is due by a `seq`
    /// it states). Verifiers hold the public key
    /// ([`verify::Verifier::keys`](crate::verify::Verifier::keys),
    /// `fabric-audit verify --keys`).
    ///
    /// # Examples
    ///
    /// ```
    /// use fabric_audit::{checkpoint::SigningKey, AuditLayer};
    ///
    /// let key = SigningKey::generate("billing.example.com")?;
    /// let builder = AuditLayer::builder().file("logs/audit.jsonl").checkpoint_key(key);
    /// # Ok::<(), fabric_audit::Error>(())
    /// ```
    pub fn checkpoint_key(mut self, key: SigningKey) -> Self {
        self.checkpoints.key = Some(KeySource::Key(std::sync::Arc::new(key)));
        self
    }

    /// As [`checkpoint_key`](Self::checkpoint_key), with the key read from
    /// the file at `path` when the layer is built (`fabric-audit keygen`
    /// writes one; the `checkpoint_key_file` setting).
    pub fn checkpoint_key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.checkpoints.key = Some(KeySource::File(path.into()));
        self
    }

    /// How often each chain is checkpointed: after at most `records`
    /// records, and every `interval` while records come (an idle chain
    /// gets none), and always at a restart (anchoring what the previous
    /// run wrote after its last checkpoint) and at shutdown. The default is
    /// 10 000 records and one minute. Calling it turns checkpoints on,
    /// unsigned unless a key is set too: an unsigned checkpoint only
    /// restates the chain (whoever can rewrite the chain can rewrite it),
    /// unless it is copied elsewhere ([`checkpoint_copy`](Self::checkpoint_copy)).
    ///
    /// Checkpoints are off unless a key, a copy or this is set.
    pub fn checkpoint_every(mut self, records: u64, interval: Duration) -> Self {
        self.checkpoints.every = Some((records, interval));
        self
    }

    /// Also appends each checkpoint record, as a JSON line, to the file at
    /// `path` (and turns checkpoints on): a store apart from the sinks',
    /// so that whoever controls a sink's store cannot rewrite its history
    /// and its checkpoints together, nor cut its tail unnoticed
    /// (`fabric-audit verify --checkpoints`,
    /// [`verify::Verifier::witness`](crate::verify::Verifier::witness)).
    /// Put it on another volume or machine (or ship it off the host), and
    /// not in a file sink's directory: `verify` reads every `*.jsonl` file
    /// there as the sink's records.
    ///
    /// One copy target at most: this replaces a
    /// [`checkpoint_copy_sink`](Self::checkpoint_copy_sink) set before.
    pub fn checkpoint_copy(mut self, path: impl Into<PathBuf>) -> Self {
        self.checkpoints.copy = Some(CopyTarget::File(path.into()));
        self
    }

    /// Also writes each checkpoint record, as it is, into `sink` (and
    /// turns checkpoints on): as [`checkpoint_copy`](Self::checkpoint_copy),
    /// into a store of any kind, for example a
    /// [`DatabaseSink`](crate::DatabaseSink) on another server
    /// ([`checkpoint_copy_database`](Self::checkpoint_copy_database)) or a
    /// [`NatsSink`](crate::NatsSink). `name` is what warnings call it.
    ///
    /// `sink` gets only checkpoint records, each keeping the `chain`,
    /// `seq` and `hash` of the chain it checkpoints (it is not asked for a
    /// chain of its own), written on the checkpointing worker's thread as
    /// each checkpoint is stored. A copy the sink fails to write is kept
    /// and sent with the next checkpoint (at shutdown, retried until the
    /// deadline); what becomes of the copies is in the report
    /// ([`Report::checkpoint_copy`](crate::Report::checkpoint_copy)).
    /// `fabric-audit verify --checkpoints` reads them back from a file, a
    /// directory or a database.
    ///
    /// The copy's store must be apart from the sinks' (another database,
    /// not the sink's own table): the copies would clash with the records
    /// they copy. One copy target at most: this replaces a
    /// [`checkpoint_copy`](Self::checkpoint_copy) set before.
    pub fn checkpoint_copy_sink(
        mut self,
        name: impl Into<String>,
        sink: impl Sink + Send + 'static,
    ) -> Self {
        self.checkpoints.copy = Some(CopyTarget::Sink(name.into(), Box::new(sink)));
        self
    }

    /// Copies each checkpoint record into the `audit_events` table of the
    /// database at `url` (a [`checkpoint_copy_sink`](Self::checkpoint_copy_sink)
    /// named `checkpoint_copy`, which keeps its copies forever and applies
    /// migrations as [`apply_migrations`](Self::apply_migrations) says;
    /// the `checkpoint_copy_database_url` setting). It connects on the
    /// first checkpoint; a database that cannot be reached keeps the
    /// copies pending.
    ///
    /// # Errors
    ///
    /// At [`build`](Self::build): a URL of no known backend.
    #[cfg(db)]
    pub fn checkpoint_copy_database(mut self, url: impl Into<String>) -> Self {
        self.checkpoints.copy = Some(CopyTarget::Database(url.into()));
        self
    }

    /// Opens the sinks, starts one worker thread per sink, and returns the
    /// layer (wrapped in its [`AuditFilter`]) with the handle that flushes
    /// and shuts it down.
    ///
    /// # Errors
    ///
    /// No sink; a zero capacity or batch size; two sinks with one name; a
    /// file sink whose directory cannot be created or file opened; a worker
    /// thread that cannot be spawned.
    pub fn build<S>(mut self) -> Result<(Filtered<AuditLayer, AuditFilter, S>, AuditHandle)>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let checkpoints = self.checkpoint_policy()?;
        #[cfg(db)]
        if let Some(url) = self.database.take() {
            let mut database = crate::DatabaseSink::builder(url)
                .retention(self.database_retention)
                .apply_migrations(self.apply_migrations);
            if let Some(key) = checkpoints
                .as_ref()
                .and_then(|(policy, _)| policy.key.clone())
            {
                // The purge states its cuts of the chains under the same key.
                database = database.purge_key_shared(key);
            }
            let database = database.build_lazy()?;
            self.sinks
                .insert(0, ("database".to_owned(), Box::new(database)));
        }
        #[cfg(feature = "nats")]
        if let Some(target) = self.nats.take() {
            let nats = crate::NatsSink::builder(target).build()?;
            self.sinks.push(("nats".to_owned(), Box::new(nats)));
        }
        if let Some(path) = self.file.take() {
            let mut file = FileSink::builder(path).retention(self.file_retention);
            if let Some(key) = checkpoints
                .as_ref()
                .and_then(|(policy, _)| policy.key.clone())
            {
                // Retention states what it deleted under the same key.
                file = file.purge_key_shared(key);
            }
            let file = file.build()?;
            self.sinks.insert(0, ("file".to_owned(), Box::new(file)));
        }
        self.validate()?;
        let settings = Settings {
            queue_capacity: self.queue_capacity,
            overflow: self.overflow,
            worker: self.worker,
            shutdown_timeout: self.shutdown_timeout,
            max_record_bytes: self.max_record_bytes,
            instance: self.instance.take().unwrap_or_else(host_name),
            checkpoints,
        };
        let delivery = Delivery::start(self.sinks, settings)?;
        let layer = AuditLayer::new(delivery.clone()).with_filter(AuditFilter::default());
        Ok((layer, AuditHandle::new(delivery)))
    }

    /// The checkpoint policy, when checkpoints are on: reads the key file
    /// and opens the copy.
    #[allow(clippy::type_complexity)]
    fn checkpoint_policy(
        &mut self,
    ) -> Result<
        Option<(
            std::sync::Arc<checkpoint::Policy>,
            Option<std::sync::Arc<CheckpointCopy>>,
        )>,
    > {
        let settings = std::mem::take(&mut self.checkpoints);
        if settings.key.is_none() && settings.every.is_none() && settings.copy.is_none() {
            return Ok(None);
        }
        let (every_records, every) = settings
            .every
            .unwrap_or((CHECKPOINT_EVERY_RECORDS, CHECKPOINT_EVERY));
        if every_records == 0 || every.is_zero() {
            return Err(Error::config(
                "`checkpoint_every` needs at least one record and a non-zero interval",
            ));
        }
        let key = match settings.key {
            None => None,
            Some(KeySource::Key(key)) => Some(key),
            Some(KeySource::File(path)) => Some(std::sync::Arc::new(SigningKey::from_file(path)?)),
        };
        let copy = match settings.copy {
            None => None,
            Some(CopyTarget::File(path)) => {
                Some(CheckpointCopy::file(&path).map_err(|e| copy::open_error(&path, e))?)
            }
            Some(CopyTarget::Sink(name, sink)) => Some(CheckpointCopy::sink(name, sink)),
            #[cfg(db)]
            Some(CopyTarget::Database(url)) => {
                // Into the sink's own table the copies would be found
                // stored already (the checkpoint records themselves): no
                // witness at all.
                if self.database.as_deref() == Some(url.as_str()) {
                    return Err(Error::config(
                        "`checkpoint_copy_database` must be another database than the sink's `database`",
                    ));
                }
                let sink = crate::DatabaseSink::builder(url)
                    .keep_forever()
                    .apply_migrations(self.apply_migrations)
                    .build_lazy()?;
                Some(CheckpointCopy::sink(
                    "checkpoint_copy".to_owned(),
                    Box::new(sink),
                ))
            }
        };
        let copy = copy.map(std::sync::Arc::new);
        let policy = checkpoint::Policy {
            every_records,
            every,
            key,
        };
        Ok(Some((std::sync::Arc::new(policy), copy)))
    }

    fn validate(&self) -> Result<()> {
        if self.sinks.is_empty() {
            return Err(Error::config(
                "no audit sink configured: add `file(..)`, `database(..)` or `sink(..)`",
            ));
        }
        if self.queue_capacity == 0 {
            return Err(Error::config("`queue_capacity` must be at least 1"));
        }
        if self.max_record_bytes < MIN_MAX_RECORD_BYTES {
            return Err(Error::config(format!(
                "`max_record_bytes` must be at least {MIN_MAX_RECORD_BYTES}, not {}",
                self.max_record_bytes
            )));
        }
        if self.worker.batch_size == 0 {
            return Err(Error::config("`batch_size` must be at least 1"));
        }
        for (i, (name, _)) in self.sinks.iter().enumerate() {
            if self.sinks[..i].iter().any(|(other, _)| other == name) {
                return Err(Error::config(format!("two sinks are named `{name}`")));
            }
            // Part of the chain's name, which a record stores.
            if name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
                return Err(Error::config(format!(
                    "a sink's name has at most {MAX_NAME_BYTES} bytes and no control character: {name:?}"
                )));
            }
        }
        if let Some(instance) = &self.instance {
            if instance.is_empty()
                || instance.len() > MAX_NAME_BYTES
                || instance.chars().any(char::is_control)
            {
                return Err(Error::config(format!(
                    "`instance` is not empty, has at most {MAX_NAME_BYTES} bytes and no control character: {instance:?}"
                )));
            }
        }
        Ok(())
    }
}

/// The longest instance or sink name: a chain's name,
/// `<instance>/<sink>[/<run>]` (a run: 36 characters), then fits a short
/// column (255 characters).
const MAX_NAME_BYTES: usize = 100;

/// The host's name, for the default instance name.
fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_default();
    let name: String = name.trim().chars().filter(|c| !c.is_control()).collect();
    match name.len() {
        0 => "localhost".to_owned(),
        len if len > MAX_NAME_BYTES => {
            let mut end = MAX_NAME_BYTES;
            while !name.is_char_boundary(end) {
                end -= 1;
            }
            name[..end].to_owned()
        }
        _ => name,
    }
}

impl std::fmt::Debug for AuditLayerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut f = f.debug_struct("AuditLayerBuilder");
        f.field("file", &self.file);
        // Whether only: a database URL may carry a password.
        #[cfg(db)]
        f.field("database", &self.database.is_some());
        f.field(
            "sinks",
            &self.sinks.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        )
        .field("queue_capacity", &self.queue_capacity)
        .field("overflow", &self.overflow)
        .field("worker", &self.worker)
        .field("shutdown_timeout", &self.shutdown_timeout)
        .field("max_record_bytes", &self.max_record_bytes)
        .field("instance", &self.instance)
        .field("checkpoints", &self.checkpoints)
        .finish()
    }
}

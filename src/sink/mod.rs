//! Where records go: the [`Sink`] trait and the sinks this crate ships.
//!
//! Each sink gets its own bounded queue and its own worker thread, so a slow
//! or failing sink holds back no other sink and never the emitting thread.
//! The worker hands the sink batches; the sink's one job is to write a batch
//! durably or say why it could not.

mod file;
mod from_fn;
mod writer;

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use crate::AuditRecord;

pub(crate) use self::file::PURGES_EXTENSION;
pub use self::file::{FileSink, FileSinkBuilder};
pub use self::from_fn::{from_fn, FromFn};
pub use self::writer::WriterSink;

/// A destination for audit records.
///
/// [`AuditLayerBuilder::sink`](crate::AuditLayerBuilder::sink) installs a
/// sink. Its worker thread calls [`write`](Sink::write) with batches of
/// records in the order they were emitted, and [`close`](Sink::close) once
/// at shutdown, after the last batch.
///
/// # Contract
///
/// - `write` returns `Ok(())` only when every record of the batch is stored
///   as durably as the sink promises (a file written and flushed, rows
///   committed). [`AuditHandle::flush`](crate::AuditHandle::flush) relies on
///   it.
/// - A [`SinkError::transient`] error makes the worker retry the *same*
///   batch with capped exponential backoff; the records stay queued
///   meanwhile. A sink should therefore write a batch all or nothing, or be
///   idempotent (records carry unique ids for this).
/// - A [`SinkError::rejected`] error means the batch can never be written:
///   its records are counted as failed and the worker moves on.
/// - A [`SinkError::partial`] error means the sink wrote every record of the
///   batch but `n`, which it can never write (a database that refuses one
///   hostile value): those `n` are counted as failed, the rest as written.
/// - `write` may block (that is what the worker thread is for) but should
///   not block forever: shutdown waits for it.
///
/// # Examples
///
/// ```
/// use fabric_audit::{Batch, Sink, SinkError};
///
/// /// Counts actions; a stand-in for a message queue or an HTTP exporter.
/// #[derive(Default)]
/// struct Counter(std::collections::HashMap<String, usize>);
///
/// impl Sink for Counter {
///     fn write(&mut self, batch: &Batch<'_>) -> Result<(), SinkError> {
///         for record in batch {
///             *self.0.entry(record.action().to_owned()).or_default() += 1;
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait Sink {
    /// Writes every record of `batch`, durably, or fails; see the contract
    /// above.
    fn write(&mut self, batch: &Batch<'_>) -> Result<(), SinkError>;

    /// Prepares the sink, on its worker thread, as soon as the pipeline
    /// starts (before any batch): the database sink connects and creates
    /// its tables. An error is counted and warned about, and `write` is
    /// expected to try again. The default does nothing.
    fn open(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Releases the sink's resources at shutdown. The default does nothing.
    fn close(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Whether this sink's records form a hash chain, and where the chain
    /// named `chain` (`<instance>/<sink name>`) ends in what the sink has
    /// stored, so that this run continues it.
    ///
    /// Asked once, on the worker thread, before the first batch (after
    /// [`open`](Sink::open)); an error is handled as a failed write of that
    /// batch (a transient one is retried). When it answers other than
    /// [`ChainHead::Unchained`], the worker gives every record of each batch
    /// its `chain`, the next `seq` and its `hash` before `write` sees it, and
    /// the sink is expected to store those fields with the record (the
    /// database and file sinks do). The default is `Unchained`.
    fn chain_head(&mut self, chain: &str) -> Result<ChainHead, SinkError> {
        let _ = chain;
        Ok(ChainHead::Unchained)
    }

    /// The record as this sink will store it and read it back, when that
    /// differs from `record` (the database sink cuts a value longer than
    /// its column and says so in the detail). A chaining sink's worker
    /// hashes this form instead, so that what the sink stored verifies;
    /// the other sinks still get the record as it was. Called on the
    /// worker thread for every record of a chained sink, before it is
    /// linked: keep it cheap for the usual record. The default: `None`.
    fn stored_form(&mut self, record: &AuditRecord) -> Option<AuditRecord> {
        let _ = record;
        None
    }
}

/// Where a sink's chain ends: the answer of [`Sink::chain_head`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChainHead {
    /// The sink does not chain its records.
    Unchained,
    /// No record of the chain is stored: it starts at `seq` 1.
    Empty,
    /// The sink cannot find where its chain ended (a message stream): each
    /// run starts a chain of its own, `<instance>/<sink name>/<run>` where
    /// `<run>` is a UUID v7 made at the first batch, at `seq` 1. Each run's
    /// chain verifies on its own; a run's last records deleted leave a
    /// shorter chain (only checkpoints show that).
    NewRun,
    /// The chain's last stored record: the next one is `seq + 1`, hashed
    /// after `hash` (64 hex digits, as stored).
    Last {
        /// Its `seq`.
        seq: u64,
        /// Its `hash`.
        hash: String,
    },
}

impl<S: Sink + ?Sized> Sink for Box<S> {
    fn write(&mut self, batch: &Batch<'_>) -> Result<(), SinkError> {
        (**self).write(batch)
    }
    fn open(&mut self) -> Result<(), SinkError> {
        (**self).open()
    }
    fn close(&mut self) -> Result<(), SinkError> {
        (**self).close()
    }
    fn chain_head(&mut self, chain: &str) -> Result<ChainHead, SinkError> {
        (**self).chain_head(chain)
    }
    fn stored_form(&mut self, record: &AuditRecord) -> Option<AuditRecord> {
        (**self).stored_form(record)
    }
}

impl<S: Sink + ?Sized> Sink for &mut S {
    fn write(&mut self, batch: &Batch<'_>) -> Result<(), SinkError> {
        (**self).write(batch)
    }
    fn open(&mut self) -> Result<(), SinkError> {
        (**self).open()
    }
    fn close(&mut self) -> Result<(), SinkError> {
        (**self).close()
    }
    fn chain_head(&mut self, chain: &str) -> Result<ChainHead, SinkError> {
        (**self).chain_head(chain)
    }
    fn stored_form(&mut self, record: &AuditRecord) -> Option<AuditRecord> {
        (**self).stored_form(record)
    }
}

/// Records handed to a [`Sink`] in one call, in emission order.
#[derive(Clone, Copy)]
pub struct Batch<'a> {
    records: &'a [Arc<AuditRecord>],
}

impl<'a> Batch<'a> {
    /// A batch of these records: for driving a sink by hand, in its tests.
    pub fn new(records: &'a [Arc<AuditRecord>]) -> Self {
        Self { records }
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the batch is empty (it never is when given to a sink).
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The records, in emission order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a AuditRecord> + 'a {
        self.records.iter().map(|r| &**r)
    }
}

impl<'a> IntoIterator for &Batch<'a> {
    type Item = &'a AuditRecord;
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, Arc<AuditRecord>>,
        fn(&'a Arc<AuditRecord>) -> &'a AuditRecord,
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.records.iter().map(|r| &**r)
    }
}

impl fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch").field("len", &self.len()).finish()
    }
}

/// Why a [`Sink`] could not write a batch, and whether to try again.
pub struct SinkError {
    kind: Kind,
    source: Box<dyn StdError + Send + Sync>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Transient,
    Rejected,
    /// The batch was written except this many records, which never can be.
    Partial(usize),
}

impl SinkError {
    /// A fault that may clear (disk full, database down): the worker retries
    /// the same batch with backoff.
    pub fn transient(source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self {
            kind: Kind::Transient,
            source: source.into(),
        }
    }

    /// A batch that can never be written: its records are counted as failed.
    pub fn rejected(source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self {
            kind: Kind::Rejected,
            source: source.into(),
        }
    }

    /// The batch is written, except `failed` of its records, which can never
    /// be (`source` says why): those are counted as failed, the others as
    /// written, and the worker moves on. A sink that can isolate a bad
    /// record (a database refusing one value) says this rather than
    /// rejecting the whole batch.
    ///
    /// # Examples
    ///
    /// ```
    /// use fabric_audit::SinkError;
    ///
    /// let error = SinkError::partial(1, "value too long for column `user_agent`");
    /// assert_eq!(error.failed_records(), Some(1));
    /// assert!(!error.is_transient());
    /// ```
    pub fn partial(failed: usize, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self {
            kind: Kind::Partial(failed),
            source: source.into(),
        }
    }

    /// Whether the worker will retry.
    pub fn is_transient(&self) -> bool {
        self.kind == Kind::Transient
    }

    /// For a [`partial`](Self::partial) error, how many records of the batch
    /// failed; `None` for the others (transient: none yet; rejected: all).
    pub fn failed_records(&self) -> Option<usize> {
        match self.kind {
            Kind::Partial(n) => Some(n),
            Kind::Transient | Kind::Rejected => None,
        }
    }
}

impl From<std::io::Error> for SinkError {
    /// I/O errors are transient: disks get space back, directories get fixed.
    fn from(e: std::io::Error) -> Self {
        Self::transient(e)
    }
}

impl fmt::Debug for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkError")
            .field("kind", &self.kind)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)
    }
}

/// A `SinkError` is transparent, like `io::Error` around a custom error:
/// it displays its source's message and hands out the source's own cause,
/// so an error reporter walking `source()` prints each message once.
impl StdError for SinkError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.source()
    }
}

//! A sink over a writer the application already has: any [`io::Write`],
//! or (feature `tracing-appender`) any `tracing_subscriber` `MakeWriter`,
//! such as tracing-appender's `RollingFileAppender`.
//!
//! Each batch becomes one buffer of JSON lines, handed to the writer with
//! as few `write` calls as it accepts, then flushed. The sink remembers how
//! many bytes of a failed batch the writer took, and the worker's retry of
//! that same batch continues from there: a writer that reports honestly
//! what it accepted gets no line twice and no torn line, however often it
//! fails. (What the writer does with the bytes after it accepted them,
//! such as buffering them past a crash, is the writer's own promise.)

use std::fmt;
use std::io::{self, Write};

use uuid::Uuid;

use super::{Batch, Sink, SinkError};

/// Writes each record as one JSON line to a writer of the application's.
///
/// The line is the same as the [`FileSink`](crate::FileSink)'s (the
/// record's JSON form). A failed `write` or `flush` is a transient error:
/// the worker retries the batch with backoff, and the retry writes only
/// what the writer had not yet accepted. A batch is written and flushed
/// before it counts as written; it is as durable as the writer's `flush`
/// makes it (a `File`'s flush does not sync to disk).
///
/// Choose the built-in [`FileSink`](crate::FileSink) when the file must
/// survive a crash (fsync, a torn last line cut and kept aside on restart,
/// retention by exact date). Choose this sink to route audit records into
/// a writer already configured for the application: a
/// `tracing_appender::rolling` appender with its own rotation, prefix and
/// `max_log_files`, a socket, a pipe, standard output.
///
/// # Examples
///
/// Any [`io::Write`]:
///
/// ```
/// use fabric_audit::{audit, AuditLayer, WriterSink};
/// use tracing_subscriber::prelude::*;
///
/// # fn main() -> fabric_audit::Result<()> {
/// let (layer, handle) = AuditLayer::builder()
///     .sink("stdout", WriterSink::new(std::io::stdout()))
///     .build()?;
/// tracing_subscriber::registry().with(layer).try_init().ok();
/// audit!(action = "report.export", actor.id = "u-1");
/// handle.flush_blocking()?;
/// # Ok(())
/// # }
/// ```
pub struct WriterSink {
    target: Box<dyn Target + Send>,
    /// The JSON lines of the batch being written.
    buf: Vec<u8>,
    /// The batch `buf` holds, when a write of it failed part way.
    unfinished: Option<Unfinished>,
}

/// How far a failed batch got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Unfinished {
    /// The batch, told by its first record's id and its length (the worker
    /// retries the same batch; this guards the assumption).
    first: Uuid,
    len: usize,
    /// Bytes of `buf` the writer has accepted.
    accepted: usize,
}

impl WriterSink {
    /// A sink writing to `writer`.
    ///
    /// For a `tracing_appender` rolling appender prefer
    /// `WriterSink::from(appender)` (feature `tracing-appender`), which
    /// decides rotation once per batch.
    pub fn new(writer: impl Write + Send + 'static) -> Self {
        Self::with_target(Box::new(Plain(writer)))
    }

    /// A sink asking `make_writer` for a writer once per batch (and once per
    /// retry), as a `tracing_subscriber::fmt` layer asks once per event.
    /// The whole batch goes to that one writer: a rolling appender never
    /// splits a batch, let alone a line, between two files.
    ///
    /// # Examples
    ///
    /// ```
    /// use fabric_audit::{AuditLayer, WriterSink};
    /// use tracing_appender::rolling::{RollingFileAppender, Rotation};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// let appender = RollingFileAppender::builder()
    ///     .rotation(Rotation::HOURLY)
    ///     .filename_prefix("audit")
    ///     .filename_suffix("jsonl")
    ///     .max_log_files(48)
    ///     .build(dir.path())?;
    /// let (layer, handle) = AuditLayer::builder()
    ///     .sink("rolling", WriterSink::from_make_writer(appender))
    ///     .build::<tracing_subscriber::Registry>()?;
    /// # drop(layer); handle.shutdown_blocking();
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "tracing-appender")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tracing-appender")))]
    pub fn from_make_writer<M>(make_writer: M) -> Self
    where
        M: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + 'static,
    {
        Self::with_target(Box::new(Made(make_writer)))
    }

    fn with_target(target: Box<dyn Target + Send>) -> Self {
        Self {
            target,
            buf: Vec::new(),
            unfinished: None,
        }
    }

    /// Fills `buf` with the batch's lines, unless it holds them from a
    /// failed attempt; returns how many bytes the writer already has.
    fn prepare(&mut self, batch: &Batch<'_>) -> usize {
        let first = batch.iter().next().map(|r| r.id()).unwrap_or_default();
        if let Some(u) = self.unfinished {
            if u.first == first && u.len == batch.len() {
                return u.accepted;
            }
        }
        self.buf.clear();
        for record in batch {
            record.write_json(&mut self.buf);
            self.buf.push(b'\n');
        }
        self.unfinished = Some(Unfinished {
            first,
            len: batch.len(),
            accepted: 0,
        });
        0
    }
}

#[cfg(feature = "tracing-appender")]
#[cfg_attr(docsrs, doc(cfg(feature = "tracing-appender")))]
impl From<tracing_appender::rolling::RollingFileAppender> for WriterSink {
    /// A rolling appender as a sink, asked for its writer once per batch
    /// (see [`from_make_writer`](WriterSink::from_make_writer)).
    fn from(appender: tracing_appender::rolling::RollingFileAppender) -> Self {
        Self::from_make_writer(appender)
    }
}

impl Sink for WriterSink {
    fn write(&mut self, batch: &Batch<'_>) -> Result<(), SinkError> {
        let mut accepted = self.prepare(batch);
        let result = self.target.write_from(&self.buf, &mut accepted);
        match result {
            Ok(()) => {
                self.unfinished = None;
                Ok(())
            }
            Err(e) => {
                if let Some(u) = &mut self.unfinished {
                    u.accepted = accepted;
                }
                Err(SinkError::transient(e))
            }
        }
    }
}

impl fmt::Debug for WriterSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriterSink")
            .field("unfinished", &self.unfinished)
            .finish_non_exhaustive()
    }
}

/// Where the bytes go: a writer, or a maker of writers.
trait Target {
    /// Writes `buf[*accepted..]`, advancing `accepted` by what the writer
    /// takes, then flushes.
    fn write_from(&mut self, buf: &[u8], accepted: &mut usize) -> io::Result<()>;
}

struct Plain<W>(W);

impl<W: Write> Target for Plain<W> {
    fn write_from(&mut self, buf: &[u8], accepted: &mut usize) -> io::Result<()> {
        write_rest(&mut self.0, buf, accepted)
    }
}

#[cfg(feature = "tracing-appender")]
struct Made<M>(M);

#[cfg(feature = "tracing-appender")]
impl<M> Target for Made<M>
where
    M: for<'a> tracing_subscriber::fmt::MakeWriter<'a>,
{
    fn write_from(&mut self, buf: &[u8], accepted: &mut usize) -> io::Result<()> {
        write_rest(&mut self.0.make_writer(), buf, accepted)
    }
}

/// `write_all` that keeps count of what the writer accepted, then `flush`.
fn write_rest(writer: &mut impl Write, buf: &[u8], accepted: &mut usize) -> io::Result<()> {
    while let Some(rest) = buf.get(*accepted..).filter(|rest| !rest.is_empty()) {
        match writer.write(rest) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the writer accepted no bytes",
                ))
            }
            Ok(n) => *accepted += n.min(rest.len()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    writer.flush()
}

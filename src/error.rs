//! The crate's error type.

use std::error::Error as StdError;
use std::{fmt, io};

/// A specialized `Result` for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error from setting up or flushing the audit pipeline.
///
/// Emitting never returns an error: failures on that path are counted in
/// the [`Report`](crate::Report) instead.
///
/// The message says what failed, in lower case; the cause (an I/O error,
/// a database driver's or a configuration parser's error) is not repeated
/// in it but chained: walk [`source()`](StdError::source) to print it, as
/// `anyhow`'s `{:#}` and other error reporters do. The same fault is
/// classified the same way from every entry point: a database that cannot
/// be reached is [`is_unavailable`](Self::is_unavailable) whether the
/// [`Store`](crate::Store), the database sink's builder, `purge` or
/// `migrate` met it.
pub struct Error {
    kind: ErrorKind,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

#[derive(Debug)]
enum ErrorKind {
    /// A file or a thread could not be made.
    Io(String),
    /// The pipeline's settings: a builder's or a configuration file's.
    Config(String),
    /// Bad input from a caller: a limit out of range, a forged cursor.
    Invalid(String),
    /// The database failed to answer, or holds a row this crate did not write.
    Database(String),
    /// The audit tables do not exist (yet).
    #[cfg_attr(not(db), allow(dead_code))]
    NoTables,
    /// The database could not be reached, or did not answer in time (a 503
    /// in an HTTP API).
    Unavailable(String),
    Unflushed(Vec<Unflushed>),
}

/// What one sink did not write of the records emitted before a flush.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unflushed {
    pub(crate) sink: String,
    /// Records the sink refused, or gave up on (since the start).
    pub(crate) failed: u64,
    /// Records dropped before the flush (since the start).
    pub(crate) dropped: u64,
    /// Records still queued because the sink is failing.
    pub(crate) waiting: u64,
}

impl Error {
    fn new(kind: ErrorKind) -> Self {
        Self { kind, source: None }
    }

    /// Chains `source` as the cause of this error.
    pub(crate) fn because(self, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self {
            source: Some(source.into()),
            ..self
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::new(ErrorKind::Io(context.into())).because(source)
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config(message.into()))
    }

    #[cfg_attr(not(db), allow(dead_code))]
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid(message.into()))
    }

    #[cfg_attr(not(db), allow(dead_code))]
    pub(crate) fn database(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Database(message.into()))
    }

    #[cfg_attr(not(db), allow(dead_code))]
    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable(message.into()))
    }

    #[cfg(db)]
    pub(crate) fn no_tables() -> Self {
        Self::new(ErrorKind::NoTables)
    }

    #[cfg(db)]
    pub(crate) fn is_no_tables(&self) -> bool {
        matches!(self.kind, ErrorKind::NoTables)
    }

    /// Whether the database did not answer in time, or could not be reached:
    /// worth trying again later (a 503 in an HTTP API).
    pub fn is_unavailable(&self) -> bool {
        matches!(self.kind, ErrorKind::Unavailable(_))
    }

    /// Whether the caller's input was at fault (a 400 in an HTTP API),
    /// rather than the system (a 500): a bad argument, or bad settings (a
    /// builder's, a configuration file's).
    pub fn is_invalid_input(&self) -> bool {
        matches!(self.kind, ErrorKind::Invalid(_) | ErrorKind::Config(_))
    }

    pub(crate) fn unflushed(sinks: Vec<Unflushed>) -> Self {
        Self::new(ErrorKind::Unflushed(sinks))
    }

    /// The sinks a flush could not complete: failing ones (their records
    /// wait in the queue and are retried), and ones that lost records
    /// (dropped or failed).
    pub fn unflushed_sinks(&self) -> Vec<&str> {
        match &self.kind {
            ErrorKind::Unflushed(sinks) => sinks.iter().map(|s| s.sink.as_str()).collect(),
            _ => Vec::new(),
        }
    }

    /// How many of the records emitted before a flush did not make it, over
    /// every sink: lost (dropped or failed, since the pipeline started) or
    /// still waiting in a failing sink's queue.
    pub fn unflushed_records(&self) -> u64 {
        match &self.kind {
            ErrorKind::Unflushed(sinks) => {
                sinks.iter().map(|s| s.failed + s.dropped + s.waiting).sum()
            }
            _ => 0,
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut f = f.debug_struct("Error");
        f.field("kind", &self.kind);
        if let Some(source) = &self.source {
            f.field("source", source);
        }
        f.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Io(message)
            | ErrorKind::Config(message)
            | ErrorKind::Invalid(message)
            | ErrorKind::Database(message)
            | ErrorKind::Unavailable(message) => f.write_str(message),
            ErrorKind::NoTables => f.write_str("the audit tables do not exist yet"),
            ErrorKind::Unflushed(sinks) => {
                f.write_str("audit records not flushed")?;
                for (i, s) in sinks.iter().enumerate() {
                    let sep = if i == 0 { ": " } else { "; " };
                    write!(f, "{sep}sink `{}`", s.sink)?;
                    if s.waiting > 0 {
                        write!(
                            f,
                            " is failing, {} records waiting to be retried",
                            s.waiting
                        )?;
                    }
                    if s.failed > 0 {
                        write!(f, ", {} failed", s.failed)?;
                    }
                    if s.dropped > 0 {
                        write!(f, ", {} dropped", s.dropped)?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// Displays an error and every cause it chains, `: `-separated (as
/// `anyhow`'s `{:#}` does): for logs and reports, where the whole story
/// belongs on one line.
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn StdError + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        let source: &(dyn StdError + 'static) = self.source.as_deref()?;
        Some(source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SinkError;

    #[test]
    fn a_chain_prints_each_message_once_in_order() {
        let disk = io::Error::other("no space left on device");
        let error = Error::io("cannot write `audit.jsonl`", disk);
        assert_eq!(
            Chain(&error).to_string(),
            "cannot write `audit.jsonl`: no space left on device"
        );
    }

    #[test]
    fn a_sink_error_is_transparent_so_its_message_is_not_repeated() {
        let cause = Error::database("audit insert failed").because(io::Error::other("reset"));
        let error = SinkError::transient(cause);
        assert_eq!(error.to_string(), "audit insert failed");
        assert_eq!(error.source().unwrap().to_string(), "reset");
        assert_eq!(Chain(&error).to_string(), "audit insert failed: reset");
        // A plain message has no cause to hand out.
        let plain = SinkError::rejected("value too long");
        assert!(plain.source().is_none());
        assert_eq!(Chain(&plain).to_string(), "value too long");
    }
}

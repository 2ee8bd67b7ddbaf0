//! The crate's error type.

use std::error::Error as StdError;
use std::{fmt, io};

/// A specialized `Result` for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error from setting up or flushing the audit pipeline.
///
/// Emitting never returns an error: failures on that path are counted in
/// the [`Report`](crate::Report) instead.
pub struct Error {
    kind: ErrorKind,
}

#[derive(Debug)]
enum ErrorKind {
    Io {
        context: String,
        source: io::Error,
    },
    Config(String),
    /// Bad input from a caller: a limit out of range, a forged cursor.
    Invalid(String),
    /// The database failed to answer, or holds a row this crate did not write.
    Database(String),
    /// The database did not answer in time (a 503 in an HTTP API).
    Unavailable(String),
    Unflushed(Vec<String>),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self {
            kind: ErrorKind::Io {
                context: context.into(),
                source,
            },
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Config(message.into()),
        }
    }

    #[cfg_attr(
        not(any(feature = "sqlite", feature = "postgres", feature = "mysql")),
        allow(dead_code)
    )]
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Invalid(message.into()),
        }
    }

    #[cfg_attr(
        not(any(feature = "sqlite", feature = "postgres", feature = "mysql")),
        allow(dead_code)
    )]
    pub(crate) fn database(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Database(message.into()),
        }
    }

    #[cfg_attr(
        not(any(feature = "sqlite", feature = "postgres", feature = "mysql")),
        allow(dead_code)
    )]
    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Unavailable(message.into()),
        }
    }

    /// Whether the database did not answer in time, or could not be reached:
    /// worth trying again later (a 503 in an HTTP API).
    pub fn is_unavailable(&self) -> bool {
        matches!(self.kind, ErrorKind::Unavailable(_))
    }

    /// Whether the caller's input was at fault (a 400 in an HTTP API),
    /// rather than the system (a 500).
    pub fn is_invalid_input(&self) -> bool {
        matches!(self.kind, ErrorKind::Invalid(_))
    }

    pub(crate) fn unflushed(sinks: Vec<String>) -> Self {
        Self {
            kind: ErrorKind::Unflushed(sinks),
        }
    }

    /// The sinks a flush could not complete on, because they were failing.
    pub fn unflushed_sinks(&self) -> &[String] {
        match &self.kind {
            ErrorKind::Unflushed(sinks) => sinks,
            _ => &[],
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.kind, f)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Io { context, source } => write!(f, "{context}: {source}"),
            ErrorKind::Config(message)
            | ErrorKind::Invalid(message)
            | ErrorKind::Database(message)
            | ErrorKind::Unavailable(message) => f.write_str(message),
            ErrorKind::Unflushed(sinks) => {
                write!(f, "failing sinks not flushed: {}", sinks.join(", "))
            }
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match &self.kind {
            ErrorKind::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

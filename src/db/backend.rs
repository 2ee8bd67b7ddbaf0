//! Which database a URL names, and a blocking connection to it.
//!
//! Writing, migrating and purging happen on the database sink's own worker
//! thread, so they use Diesel's blocking API on all three backends: SQLite's
//! own connection, and diesel-async's pure-Rust PostgreSQL and MySQL drivers
//! behind `AsyncConnectionWrapper` (no libpq or libmysqlclient needed).

#[cfg(feature = "sqlite")]
use diesel::connection::SimpleConnection;
use diesel::{Connection, ConnectionError};

use crate::{Error, Result};

/// The database a URL names.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Backend {
    /// A file path, or `:memory:`.
    #[cfg(feature = "sqlite")]
    Sqlite(String),
    #[cfg(feature = "postgres")]
    Postgres(String),
    #[cfg(feature = "mysql")]
    Mysql(String),
}

impl std::fmt::Debug for Backend {
    /// The kind only: URLs carry passwords.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

impl Backend {
    /// Reads `url`: `sqlite://PATH`, `sqlite:PATH` or a bare path;
    /// `postgres://…` or `postgresql://…`; `mysql://…` or `mariadb://…`.
    #[cfg_attr(
        not(any(feature = "sqlite", feature = "mysql")),
        allow(unused_variables)
    )]
    pub(crate) fn parse(url: &str) -> Result<Self> {
        let (scheme, rest) = match url.split_once(':') {
            Some((scheme, rest))
                if scheme.chars().all(|c| c.is_ascii_alphanumeric()) && scheme.len() > 1 =>
            {
                (scheme.to_ascii_lowercase(), rest)
            }
            _ => ("sqlite".to_owned(), url),
        };
        match scheme.as_str() {
            #[cfg(feature = "sqlite")]
            "sqlite" => {
                let path = rest.strip_prefix("//").unwrap_or(rest);
                if path.is_empty() {
                    return Err(Error::invalid("database URL `sqlite:` names no file"));
                }
                Ok(Self::Sqlite(path.to_owned()))
            }
            #[cfg(feature = "postgres")]
            "postgres" | "postgresql" => Ok(Self::Postgres(url.to_owned())),
            #[cfg(feature = "mysql")]
            "mysql" | "mariadb" => Ok(Self::Mysql(format!("mysql:{rest}"))),
            #[allow(unreachable_patterns)] // unreachable with every feature on
            "sqlite" | "postgres" | "postgresql" | "mysql" | "mariadb" => {
                Err(Error::invalid(format!(
                    "database URL is for {scheme}, but fabric-audit was built without its feature"
                )))
            }
            _ => Err(Error::invalid(format!(
                "database URL has an unknown scheme `{scheme}` (expected sqlite, postgres or mysql)"
            ))),
        }
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(_) => "sqlite",
            #[cfg(feature = "postgres")]
            Self::Postgres(_) => "postgres",
            #[cfg(feature = "mysql")]
            Self::Mysql(_) => "mysql",
        }
    }

    /// Opens a blocking connection. Must not be called on an async
    /// runtime's thread (the network drivers block on their own).
    pub(crate) fn connect(&self) -> Result<Conn, ConnectionError> {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(path) => {
                let mut conn = diesel::SqliteConnection::establish(path)?;
                conn.batch_execute(SQLITE_PRAGMAS)
                    .map_err(ConnectionError::CouldntSetupConfiguration)?;
                Ok(Conn::Sqlite(conn))
            }
            #[cfg(feature = "postgres")]
            Self::Postgres(url) => Ok(Conn::Postgres(Connection::establish(url)?)),
            #[cfg(feature = "mysql")]
            Self::Mysql(url) => Ok(Conn::Mysql(Connection::establish(url)?)),
        }
    }
}

/// Per connection: wait for the single writer instead of failing, WAL so
/// readers do not block the writer, and NORMAL sync (safe with WAL).
#[cfg(feature = "sqlite")]
const SQLITE_PRAGMAS: &str =
    "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;";

/// A blocking connection to one of the backends.
#[allow(clippy::large_enum_variant)] // one per sink, never moved on a hot path
pub(crate) enum Conn {
    #[cfg(feature = "sqlite")]
    Sqlite(diesel::SqliteConnection),
    #[cfg(feature = "postgres")]
    Postgres(
        diesel_async::async_connection_wrapper::AsyncConnectionWrapper<
            diesel_async::AsyncPgConnection,
        >,
    ),
    #[cfg(feature = "mysql")]
    Mysql(
        diesel_async::async_connection_wrapper::AsyncConnectionWrapper<
            diesel_async::AsyncMysqlConnection,
        >,
    ),
}

/// Runs `$body` with `$c` bound to the concrete connection, once per
/// backend: each arm is type-checked on its own, so one query written with
/// Diesel's DSL serves all three.
macro_rules! with_conn {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            #[cfg(feature = "sqlite")]
            $crate::db::backend::Conn::Sqlite($c) => $body,
            #[cfg(feature = "postgres")]
            $crate::db::backend::Conn::Postgres($c) => $body,
            #[cfg(feature = "mysql")]
            $crate::db::backend::Conn::Mysql($c) => $body,
        }
    };
}
pub(crate) use with_conn;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_backend() {
        let cases = [
            ("sqlite://data/audit.db", Some("sqlite")),
            ("sqlite:audit.db", Some("sqlite")),
            ("sqlite::memory:", Some("sqlite")),
            ("audit.db", Some("sqlite")),
            ("/var/lib/audit.db", Some("sqlite")),
            ("redis://localhost", None),
            ("sqlite:", None),
        ];
        for (url, want) in cases {
            assert_eq!(Backend::parse(url).ok().map(|b| b.kind()), want, "{url}");
        }
        let err = Backend::parse("redis://x").unwrap_err();
        assert!(err.to_string().contains("unknown scheme `redis`"), "{err}");
    }

    #[cfg(all(feature = "postgres", feature = "mysql"))]
    #[test]
    fn debug_output_never_shows_the_url() {
        let builder = crate::DatabaseSink::builder("postgres://app:s3cret@db/audit");
        let text = format!(
            "{builder:?} {:?}",
            Backend::parse("mysql://root:s3cret@h/db").unwrap()
        );
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("postgres"), "{text}");
    }

    #[cfg(all(feature = "postgres", feature = "mysql"))]
    #[test]
    fn server_urls_name_their_backend() {
        assert_eq!(
            Backend::parse("postgresql://u@h/db").unwrap().kind(),
            "postgres"
        );
        assert_eq!(
            Backend::parse("mariadb://root@127.0.0.1/test").unwrap(),
            Backend::Mysql("mysql://root@127.0.0.1/test".into())
        );
    }
}

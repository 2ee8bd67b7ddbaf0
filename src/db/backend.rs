//! Which database a URL names, and a blocking connection to it.
//!
//! Writing, migrating and purging happen on the database sink's own worker
//! thread, so they use Diesel's blocking API on all three backends: SQLite's
//! own connection, and diesel-async's pure-Rust PostgreSQL and MySQL drivers
//! behind `AsyncConnectionWrapper` (no libpq or libmysqlclient needed).

use diesel::connection::SimpleConnection;
#[cfg(feature = "sqlite")]
use diesel::Connection;
use diesel::ConnectionError;

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

    /// Opens a blocking connection for `role`. Must not be called on an
    /// async runtime's thread (the network drivers block on their own).
    ///
    /// Network connections give up connecting after [`CONNECT_TIMEOUT`]
    /// (PostgreSQL's `connect_timeout`, unless the URL sets it), and the
    /// server cancels a statement of the sink after [`STATEMENT_TIMEOUT`]
    /// (PostgreSQL's `statement_timeout`, MariaDB's `max_statement_time`),
    /// so that a stuck lock or a slow disk cannot hold the sink forever.
    /// Migrations run without a statement timeout.
    pub(crate) fn connect(&self, role: Role) -> Result<Conn, ConnectionError> {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(path) => {
                let mut conn = diesel::SqliteConnection::establish(path)?;
                conn.batch_execute(SQLITE_PRAGMAS)
                    .map_err(ConnectionError::CouldntSetupConfiguration)?;
                if role == Role::Write {
                    conn.batch_execute(SQLITE_WRITER_PRAGMAS)
                        .map_err(ConnectionError::CouldntSetupConfiguration)?;
                }
                if role == Role::Purge {
                    fabric_audit_purge_utils::register_impl(&conn, || 1)
                        .map_err(ConnectionError::CouldntSetupConfiguration)?;
                }
                Ok(Conn::Sqlite(conn))
            }
            #[cfg(feature = "postgres")]
            Self::Postgres(url) => {
                let mut conn: PgConn = timed::establish(&with_tcp_timeouts(url), CONNECT_TIMEOUT)?;
                if role != Role::Migrate && !url.contains("statement_timeout") {
                    let sql = format!("SET statement_timeout = {}", STATEMENT_TIMEOUT.as_millis());
                    conn.batch_execute(&sql)
                        .map_err(ConnectionError::CouldntSetupConfiguration)?;
                }
                Ok(Conn::Postgres(conn))
            }
            #[cfg(feature = "mysql")]
            Self::Mysql(url) => {
                let mut conn: MysqlConn = timed::establish(url, CONNECT_TIMEOUT)?;
                if role != Role::Migrate {
                    // MariaDB only (MySQL's max_execution_time covers SELECT
                    // alone): elsewhere the variable is unknown, and that is
                    // no reason to refuse the connection.
                    let sql = format!(
                        "SET SESSION max_statement_time = {}",
                        STATEMENT_TIMEOUT.as_secs()
                    );
                    let _ = conn.batch_execute(&sql);
                }
                Ok(Conn::Mysql(conn))
            }
        }
    }
}

/// What a connection is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Applying the migrations: no statement timeout.
    Migrate,
    /// Inserting batches.
    Write,
    /// Deleting expired records: on SQLite, the only kind of connection
    /// whose deletes the append-only triggers let through.
    Purge,
}

/// How long a sink's connection may take to reach the server and log in.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long the server lets one of the sink's statements run.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) const STATEMENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// `url` with TCP timeouts unless it sets them: unacknowledged data fails
/// the connection after 30 s (`tcp_user_timeout`, Linux), and an idle
/// connection is probed after 30 s (`keepalives_idle`), so that a network
/// that drops packets breaks the connection instead of holding a write for
/// the kernel's 15 minutes. (Nothing bounds a server that acknowledges and
/// never answers: tokio-postgres has no read timeout.)
#[cfg(feature = "postgres")]
fn with_tcp_timeouts(url: &str) -> std::borrow::Cow<'_, str> {
    let mut url = std::borrow::Cow::Borrowed(url);
    for (key, value) in [("tcp_user_timeout", 30), ("keepalives_idle", 30)] {
        if !url.contains(&format!("{key}=")) {
            let separator = if url.contains('?') { '&' } else { '?' };
            url = format!("{url}{separator}{key}={value}").into();
        }
    }
    url
}

#[cfg(feature = "sqlite")]
diesel::define_sql_function! {
    /// Registered on the retention purge's SQLite connection only: the
    /// delete triggers (see the migrations) let deletes through on a
    /// connection that has it, and SQL cannot register a function.
    fn fabric_audit_purge() -> diesel::sql_types::Integer;
}

#[cfg(feature = "postgres")]
type PgConn = diesel_async::async_connection_wrapper::AsyncConnectionWrapper<
    diesel_async::AsyncPgConnection,
    timed::Runtime,
>;
#[cfg(feature = "mysql")]
type MysqlConn = diesel_async::async_connection_wrapper::AsyncConnectionWrapper<
    diesel_async::AsyncMysqlConnection,
    timed::Runtime,
>;

/// The runtime that drives the sink's network connections: diesel-async's
/// default has no timer, so neither a bounded log-in nor tokio-postgres's
/// own `connect_timeout` (which panicked there) could work.
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod timed {
    use std::cell::RefCell;
    use std::future::Future;
    use std::time::Duration;

    use diesel::ConnectionError;
    use diesel_async::async_connection_wrapper::{AsyncConnectionWrapper, BlockOn};
    use diesel_async::AsyncConnection;

    /// A current-thread runtime with IO and time, one per connection.
    #[derive(Debug)]
    pub(crate) struct Runtime(tokio::runtime::Runtime);

    thread_local! {
        /// The runtime a connection was established on, for the wrapper
        /// made from it next (its driver task lives there).
        static NEXT: RefCell<Option<tokio::runtime::Runtime>> = const { RefCell::new(None) };
    }

    fn new_runtime() -> std::io::Result<tokio::runtime::Runtime> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }

    impl BlockOn for Runtime {
        fn block_on<F: Future>(&self, f: F) -> F::Output {
            self.0.block_on(f)
        }

        fn get_runtime() -> Self {
            match NEXT.with(|next| next.borrow_mut().take()) {
                Some(runtime) => Self(runtime),
                // Only `establish` below makes wrappers, after filling NEXT.
                None => Self(new_runtime().expect("cannot start a tokio runtime")),
            }
        }
    }

    /// Connects and logs in within `timeout`: a server that accepts the
    /// connection and never answers cannot hold the sink.
    pub(crate) fn establish<C: AsyncConnection>(
        url: &str,
        timeout: Duration,
    ) -> Result<AsyncConnectionWrapper<C, Runtime>, ConnectionError> {
        let runtime = new_runtime().map_err(|e| ConnectionError::BadConnection(e.to_string()))?;
        let inner = runtime
            .block_on(async { tokio::time::timeout(timeout, C::establish(url)).await })
            .map_err(|_| {
                ConnectionError::BadConnection(format!(
                    "the server did not answer within {} s",
                    timeout.as_secs()
                ))
            })??;
        NEXT.with(|next| *next.borrow_mut() = Some(runtime));
        Ok(AsyncConnectionWrapper::from(inner))
    }
}

/// Per connection: wait for the single writer instead of failing, WAL so
/// readers do not block the writer, and NORMAL sync (safe with WAL).
#[cfg(feature = "sqlite")]
const SQLITE_PRAGMAS: &str =
    "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;";

/// The sink's writing connection keeps up to 32 MiB of pages (the default
/// is 2 MiB) and lets the write-ahead log grow to 10 000 pages (about
/// 40 MB; the default is 1 000) before copying it into the database: on
/// realistic rows (5 000 actors, 200 000 resources) each batch dirties
/// pages all over the actor and resource indexes, and a page changed by
/// several batches is then read once and written back once. 400 000 such
/// rows in the sink's batches of 1 024: 5.6–5.9 k → 6.8–7.5 k rows/s.
#[cfg(feature = "sqlite")]
const SQLITE_WRITER_PRAGMAS: &str = "PRAGMA cache_size = -32768; PRAGMA wal_autocheckpoint = 10000;";

/// A blocking connection to one of the backends.
#[allow(clippy::large_enum_variant)] // one per sink, never moved on a hot path
pub(crate) enum Conn {
    #[cfg(feature = "sqlite")]
    Sqlite(diesel::SqliteConnection),
    #[cfg(feature = "postgres")]
    Postgres(PgConn),
    #[cfg(feature = "mysql")]
    Mysql(MysqlConn),
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

    #[cfg(feature = "sqlite")]
    #[test]
    fn the_sinks_sqlite_connection_keeps_more_pages_and_a_longer_log() {
        use diesel::sql_types::BigInt;
        use diesel::RunQueryDsl as _;
        #[derive(diesel::QueryableByName)]
        struct CacheSize {
            #[diesel(sql_type = BigInt)]
            cache_size: i64,
        }
        #[derive(diesel::QueryableByName)]
        struct WalAutocheckpoint {
            #[diesel(sql_type = BigInt)]
            wal_autocheckpoint: i64,
        }
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("audit.db").display());
        let backend = Backend::parse(&url).unwrap();
        let read = |role| {
            #[allow(irrefutable_let_patterns)] // with only the sqlite feature
            let Conn::Sqlite(mut conn) = backend.connect(role).unwrap() else {
                unreachable!("a SQLite URL")
            };
            let cache = diesel::sql_query("PRAGMA cache_size")
                .get_result::<CacheSize>(&mut conn)
                .unwrap();
            let wal = diesel::sql_query("PRAGMA wal_autocheckpoint")
                .get_result::<WalAutocheckpoint>(&mut conn)
                .unwrap();
            (cache.cache_size, wal.wal_autocheckpoint)
        };
        assert_eq!(read(Role::Write), (-32768, 10_000));
        // The others keep SQLite's defaults.
        assert_eq!(read(Role::Purge), (-2000, 1000));
    }

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

    #[cfg(feature = "postgres")]
    #[test]
    fn postgres_urls_get_tcp_timeouts_unless_they_set_them() {
        let cases = [
            (
                "postgres://u@h/db",
                "postgres://u@h/db?tcp_user_timeout=30&keepalives_idle=30",
            ),
            (
                "postgres://u@h/db?sslmode=disable&keepalives_idle=5",
                "postgres://u@h/db?sslmode=disable&keepalives_idle=5&tcp_user_timeout=30",
            ),
        ];
        for (url, want) in cases {
            assert_eq!(with_tcp_timeouts(url), want);
        }
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

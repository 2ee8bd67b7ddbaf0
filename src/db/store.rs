//! The query side: filtered, keyset-paginated reads over `audit_events`.

use diesel::prelude::*;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use diesel_async::pooled_connection::ManagerConfig;
#[cfg(feature = "sqlite")]
use diesel_async::pooled_connection::RecyclingMethod;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::backend::Backend;
use super::query::{AuditQuery, Cursor, Page};
use super::row::EventRow;
use super::schema::{audit_event_flags, audit_events};
use crate::{AuditRecord, Error, Result};

/// Connections the store keeps open.
const POOL_SIZE: usize = 4;

/// Reads the audit log: what the HTTP API and the CLI query through.
///
/// It opens a small pool of async connections (diesel-async) to the
/// database at a URL of any backend; the same data gives the same answers
/// on all three. It reads only: no method changes or deletes a record.
///
/// # Examples
///
/// ```no_run
/// use fabric_audit::{AuditQuery, Store};
///
/// # async fn docs() -> fabric_audit::Result<()> {
/// let store = Store::connect("postgres://audit@db/audit").await?;
/// let page = store.query(&AuditQuery::new().action("post.")).await?;
/// for record in &page.items {
///     println!("{} {}", record.timestamp(), record.action());
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Store {
    pools: Pools,
}

#[derive(Clone)]
enum Pools {
    #[cfg(feature = "sqlite")]
    Sqlite(
        Pool<
            diesel_async::sync_connection_wrapper::SyncConnectionWrapper<diesel::SqliteConnection>,
        >,
    ),
    #[cfg(feature = "postgres")]
    Postgres(Pool<diesel_async::AsyncPgConnection>),
    #[cfg(feature = "mysql")]
    Mysql(Pool<diesel_async::AsyncMysqlConnection>),
}

/// Runs `$body` with `$c` bound to a pooled connection of the store's
/// backend, once per backend.
macro_rules! with_pooled {
    ($pools:expr, $c:ident => $body:expr) => {
        match $pools {
            #[cfg(feature = "sqlite")]
            Pools::Sqlite(pool) => {
                let mut $c = pool.get().await.map_err(pool_error)?;
                let $c = &mut *$c;
                $body
            }
            #[cfg(feature = "postgres")]
            Pools::Postgres(pool) => {
                let mut $c = pool.get().await.map_err(pool_error)?;
                let $c = &mut *$c;
                $body
            }
            #[cfg(feature = "mysql")]
            Pools::Mysql(pool) => {
                let mut $c = pool.get().await.map_err(pool_error)?;
                let $c = &mut *$c;
                $body
            }
        }
    };
}

/// A pool of [`POOL_SIZE`] connections; they are opened on first use.
macro_rules! build_pool {
    ($manager:expr) => {
        Pool::builder($manager)
            .max_size(POOL_SIZE)
            .build()
            .map_err(|e| Error::config(format!("cannot build the audit store's pool: {e}")))?
    };
}

/// Adds the query's column filters (not time, not flags) to a boxed query
/// whose rows come from `audit_events`.
macro_rules! filtered {
    ($q:expr, $query:expr, $common_prefix:expr) => {{
        let mut q = $q;
        let query: &AuditQuery = $query;
        if let Some(v) = &query.actor_id {
            q = q.filter(audit_events::actor_id.eq(v));
        }
        if let Some(v) = &query.actor_type {
            q = q.filter(audit_events::actor_type.eq(v));
        }
        match (query.action_prefix(), &query.action) {
            (Some((low, high)), _) if $common_prefix => {
                // `action || ''` is the same text, but no index serves it:
                // the database walks the time index and keeps what matches,
                // instead of sorting every record under the prefix.
                let action = audit_events::action.concat("");
                q = q.filter(action.clone().ge(low)).filter(action.lt(high));
            }
            (Some((low, high)), _) => {
                q = q
                    .filter(audit_events::action.ge(low))
                    .filter(audit_events::action.lt(high));
            }
            (None, Some(v)) => q = q.filter(audit_events::action.eq(v)),
            (None, None) => {}
        }
        if let Some(v) = &query.resource_type {
            q = q.filter(audit_events::resource_type.eq(v));
        }
        if let Some(v) = &query.resource_id {
            q = q.filter(audit_events::resource_id.eq(v));
        }
        q
    }};
}

/// Adds the time window, the cursor and the newest-first order on the
/// given (timestamp, id) columns.
macro_rules! keyset {
    ($q:expr, $query:expr, $ts:path, $id:path) => {{
        let mut q = $q;
        let query: &AuditQuery = $query;
        if let Some(from) = query.from_us {
            q = q.filter($ts.ge(from));
        }
        if let Some(to) = query.to_us {
            q = q.filter($ts.lt(to));
        }
        if let Some(Cursor { timestamp_us, id }) = query.cursor {
            let id = id.hyphenated().to_string();
            // The first bound is implied by the second; it is there so
            // that the databases use it to seek in the index.
            q = q.filter($ts.le(timestamp_us)).filter(
                $ts.lt(timestamp_us)
                    .or($ts.eq(timestamp_us).and($id.lt(id))),
            );
        }
        q.order(($ts.desc(), $id.desc()))
    }};
}

impl Store {
    /// Opens a pool of connections to the database at `url` (see
    /// [`DatabaseSink::builder`](crate::DatabaseSink::builder) for the forms)
    /// and checks that one connects.
    ///
    /// # Errors
    ///
    /// A bad URL, or a database that cannot be reached.
    pub async fn connect(url: &str) -> Result<Self> {
        let pools = match Backend::parse(url)? {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(path) => {
                let mut config = ManagerConfig::default();
                config.recycling_method = RecyclingMethod::Fast;
                config.custom_setup = Box::new(|path| Box::pin(sqlite_setup(path.to_owned())));
                let manager = AsyncDieselConnectionManager::new_with_config(path, config);
                Pools::Sqlite(build_pool!(manager))
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres(url) => {
                let mut config = ManagerConfig::default();
                config.custom_setup = Box::new(|url| Box::pin(postgres_setup(url.to_owned())));
                let manager = AsyncDieselConnectionManager::new_with_config(url, config);
                Pools::Postgres(build_pool!(manager))
            }
            #[cfg(feature = "mysql")]
            Backend::Mysql(url) => {
                Pools::Mysql(build_pool!(AsyncDieselConnectionManager::new(url)))
            }
        };
        let store = Self { pools };
        with_pooled!(&store.pools, c => { let _ = c; });
        Ok(store)
    }

    /// The record with this id.
    ///
    /// # Errors
    ///
    /// The database failed, or the row is not one this crate wrote.
    pub async fn get(&self, id: Uuid) -> Result<Option<AuditRecord>> {
        let id = id.hyphenated().to_string();
        let row: Option<EventRow> = with_pooled!(&self.pools, c => {
            audit_events::table
                .filter(audit_events::id.eq(&id))
                .select(EventRow::as_select())
                .first(c)
                .await
                .optional()
                .map_err(query_error)?
        });
        row.map(|r| r.into_record().map_err(Error::database))
            .transpose()
    }

    /// One page of the records matching `query`, newest first.
    ///
    /// With `has_flag`, the query is driven from the flags table, whose
    /// index is ordered by (flag, time): a rare flag costs as little as a
    /// common one.
    ///
    /// # Errors
    ///
    /// The database failed, or a row is not one this crate wrote.
    pub async fn query(&self, query: &AuditQuery) -> Result<Page> {
        let size = query.page_size() as usize;
        let limit = size as i64 + 1;
        let common = self.is_common_prefix(query).await?;
        let rows: Vec<EventRow> = with_pooled!(&self.pools, c => match &query.has_flag {
            None => {
                let q = audit_events::table.select(EventRow::as_select()).into_boxed();
                let q = filtered!(q, query, common);
                let q = keyset!(q, query, audit_events::timestamp_us, audit_events::id);
                q.limit(limit).load(c).await.map_err(query_error)?
            }
            Some(flag) => {
                let q = audit_event_flags::table
                    .inner_join(audit_events::table.on(audit_events::id.eq(audit_event_flags::event_id)))
                    .select(EventRow::as_select())
                    .filter(audit_event_flags::flag.eq(flag))
                    .into_boxed();
                let q = filtered!(q, query, common);
                let q = keyset!(q, query, audit_event_flags::timestamp_us, audit_event_flags::event_id);
                q.limit(limit).load(c).await.map_err(query_error)?
            }
        });
        let more = rows.len() > size;
        let items = rows
            .into_iter()
            .take(size)
            .map(|r| r.into_record().map_err(Error::database))
            .collect::<Result<Vec<_>>>()?;
        let next_cursor = if more {
            items.last().map(Cursor::after)
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// Whether the query's action prefix covers many records.
    ///
    /// Two plans serve a prefix: read the action index's range and sort it
    /// by time (fast when the prefix is rare), or walk the time index and
    /// keep what matches (fast when it is common). SQLite keeps no value
    /// statistics to choose, and PostgreSQL chose badly with other filters
    /// combined (measured in `benches/query.rs`), so the store looks: it
    /// counts the range, up to a cap, in the covering action index.
    async fn is_common_prefix(&self, query: &AuditQuery) -> Result<bool> {
        const COMMON: i64 = 2000;
        let Some((low, high)) = query.action_prefix() else {
            return Ok(false);
        };
        let found: Vec<i64> = with_pooled!(&self.pools, c => {
            audit_events::table
                .select(audit_events::timestamp_us)
                .filter(audit_events::action.ge(&low))
                .filter(audit_events::action.lt(&high))
                // In index order: the database reads COMMON entries and stops.
                .order(audit_events::action)
                .limit(COMMON)
                .load(c)
                .await
                .map_err(query_error)?
        });
        Ok(found.len() as i64 >= COMMON)
    }
}

/// The store's PostgreSQL sessions use generic plans from the first
/// execution. For these newest-first, LIMITed shapes the plans PostgreSQL
/// made for the actual values (its first five executions of a statement)
/// read and sorted whole ranges: 20 to 150 ms over 1M rows, against under
/// 2 ms for the generic plan (`benches/query.rs`).
#[cfg(feature = "postgres")]
async fn postgres_setup(url: String) -> diesel::ConnectionResult<diesel_async::AsyncPgConnection> {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    let mut conn = diesel_async::AsyncPgConnection::establish(&url).await?;
    conn.batch_execute("SET plan_cache_mode = force_generic_plan")
        .await
        .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
    Ok(conn)
}

#[cfg(feature = "sqlite")]
async fn sqlite_setup(
    path: String,
) -> diesel::ConnectionResult<
    diesel_async::sync_connection_wrapper::SyncConnectionWrapper<diesel::SqliteConnection>,
> {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    let mut conn = diesel_async::sync_connection_wrapper::SyncConnectionWrapper::<
        diesel::SqliteConnection,
    >::establish(&path)
    .await?;
    conn.batch_execute("PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL;")
        .await
        .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
    Ok(conn)
}

fn pool_error(e: impl std::fmt::Display) -> Error {
    Error::database(format!("cannot connect to the audit database: {e}"))
}

fn query_error(e: diesel::result::Error) -> Error {
    Error::database(format!("audit query failed: {e}"))
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.pools {
            #[cfg(feature = "sqlite")]
            Pools::Sqlite(_) => "sqlite",
            #[cfg(feature = "postgres")]
            Pools::Postgres(_) => "postgres",
            #[cfg(feature = "mysql")]
            Pools::Mysql(_) => "mysql",
        };
        f.debug_struct("Store").field("backend", &kind).finish()
    }
}

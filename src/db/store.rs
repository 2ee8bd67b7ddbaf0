//! The query side: filtered, keyset-paginated reads over `audit_events`.
//!
//! Every call is bounded: waiting for a connection and running the query
//! share one deadline ([`StoreBuilder::timeout`]), past which the call
//! fails with an error that [`Error::is_unavailable`] recognizes (a 503 for
//! the HTTP API) instead of hanging while the database is down or does not
//! answer. The connection of a timed-out query is closed, not reused.
//! SQLite queries are the exception: they are not cancelled (see
//! [`Store`]).

use std::time::Duration;

use diesel::prelude::*;
#[cfg(any(feature = "postgres", feature = "mysql"))]
use diesel_async::pooled_connection::deadpool::Object;
use diesel_async::pooled_connection::deadpool::Pool;
#[cfg(feature = "sqlite")]
use diesel_async::pooled_connection::RecyclingMethod;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::RunQueryDsl;
use tokio::time::Instant;
use uuid::Uuid;

use super::backend::Backend;
use super::classify;
use super::limit::limited;
use super::merge;
use super::query::{ActionFilter, AuditQuery, Cursor, Page, Total};
use super::row::EventRow;
use super::schema::{audit_event_flags, audit_events};
use super::stored;
use crate::{AuditRecord, Error, Result};

/// Rows read per query when verifying a chain.
const CHAIN_PAGE: i64 = 1000;

/// Connections the store keeps open.
const POOL_SIZE: usize = 4;

/// How long a call may take by default, connection included.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Up to how many matching records [`Store::count`] counts by default.
pub(crate) const DEFAULT_COUNT_CAP: u32 = 10_000;

/// The largest count cap: the count reads up to this many index entries.
pub(crate) const MAX_COUNT_CAP: u32 = 1_000_000;

/// Reads the audit log: what the HTTP API and the CLI query through.
///
/// It opens a small pool of async connections (diesel-async) to the
/// database at a URL of any backend; the same data gives the same answers
/// on all three. It reads only: no method changes or deletes a record.
///
/// Each call waits at most the store's timeout (5 s unless set with
/// [`Store::builder`]) for a connection and its answer; past it, or when
/// the database cannot be reached, it fails with an error for which
/// [`Error::is_unavailable`] holds. (On SQLite, a query once started is
/// bounded by the database's 5 s busy timeout instead: SQLite work cannot
/// be cancelled.) The timer needs a tokio runtime with time enabled (as
/// `#[tokio::main]` makes).
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
    timeout: Duration,
    count_cap: u32,
}

/// Opens a [`Store`]; made by [`Store::builder`].
///
/// | setting | default |
/// |---|---|
/// | [`timeout`](Self::timeout) | 5 s |
/// | [`count_cap`](Self::count_cap) | 10 000 |
#[must_use]
pub struct StoreBuilder {
    url: String,
    timeout: Duration,
    count_cap: u32,
}

#[derive(Clone)]
enum Pools {
    #[cfg(feature = "sqlite")]
    Sqlite(Pool<SqliteConn>),
    #[cfg(feature = "postgres")]
    Postgres(Pool<diesel_async::AsyncPgConnection>),
    #[cfg(feature = "mysql")]
    Mysql(Pool<diesel_async::AsyncMysqlConnection>),
}

#[cfg(feature = "sqlite")]
type SqliteConn =
    diesel_async::sync_connection_wrapper::SyncConnectionWrapper<diesel::SqliteConnection>;

/// A connection from `$pool`, by `$deadline`.
macro_rules! checkout {
    ($pool:expr, $deadline:expr, $timeout:expr) => {
        match tokio::time::timeout_at($deadline, $pool.get()).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                return Err(Error::unavailable("cannot connect to the audit database").because(e))
            }
            Err(_) => return Err(timed_out($timeout)),
        }
    };
}

/// The query's result; a connection whose query timed out or failed on
/// its connection is closed rather than handed to the next caller.
#[cfg(any(feature = "postgres", feature = "mysql"))]
macro_rules! settle {
    ($conn:expr, $answer:expr, $timeout:expr) => {
        match $answer {
            Ok(Ok(value)) => value,
            Ok(Err(e)) if classify::is_unreachable(&e) => {
                drop(Object::take($conn));
                return Err(Error::unavailable("the audit database failed").because(e));
            }
            Ok(Err(e)) if classify::is_missing_table(&e) => return Err(Error::no_tables()),
            Ok(Err(e)) => return Err(Error::database("audit query failed").because(e)),
            Err(_) => {
                drop(Object::take($conn));
                return Err(timed_out($timeout));
            }
        }
    };
}

/// Runs the async `$body` (a `QueryResult`) with `$c` bound to a pooled
/// connection of the store's backend, once per backend, within the store's
/// timeout.
macro_rules! with_pooled {
    ($store:expr, $c:ident => $body:expr) => {{
        let store: &Store = $store;
        let deadline = Instant::now() + store.timeout;
        match &store.pools {
            #[cfg(feature = "sqlite")]
            Pools::Sqlite(pool) => {
                let mut conn = checkout!(pool, deadline, store.timeout);
                let $c = &mut *conn;
                // Not cancelled: dropping SQLite work blocks the runtime's
                // thread until it ends (and panics on a current-thread
                // runtime). SQLite's busy timeout bounds it instead.
                match $body.await {
                    Ok(value) => value,
                    Err(e) if classify::is_unreachable(&e) => {
                        return Err(Error::unavailable("the audit database failed").because(e))
                    }
                    Err(e) if classify::is_missing_table(&e) => return Err(Error::no_tables()),
                    Err(e) => return Err(Error::database("audit query failed").because(e)),
                }
            }
            #[cfg(feature = "postgres")]
            Pools::Postgres(pool) => {
                let mut conn = checkout!(pool, deadline, store.timeout);
                let $c = &mut *conn;
                let answer = tokio::time::timeout_at(deadline, $body).await;
                settle!(conn, answer, store.timeout)
            }
            #[cfg(feature = "mysql")]
            Pools::Mysql(pool) => {
                let mut conn = checkout!(pool, deadline, store.timeout);
                let $c = &mut *conn;
                let answer = tokio::time::timeout_at(deadline, $body).await;
                settle!(conn, answer, store.timeout)
            }
        }
    }};
}

fn timed_out(timeout: Duration) -> Error {
    Error::unavailable(format!(
        "the audit database did not answer within {} ms",
        timeout.as_millis()
    ))
}

/// A page's rows, not yet made records: what the query API writes out
/// straight (see `EventRow::write_json`).
#[derive(Debug)]
pub(crate) struct RowPage {
    pub(crate) rows: Vec<EventRow>,
    pub(crate) next_cursor: Option<Cursor>,
}

impl RowPage {
    /// The records of the page.
    fn into_page(self) -> Result<Page> {
        let items = self
            .rows
            .into_iter()
            .map(EventRow::into_record)
            .collect::<Result<Vec<_>>>()?;
        Ok(Page {
            items,
            next_cursor: self.next_cursor,
        })
    }
}

/// A page of at most `size` rows from up to `size + 1`, newest first: one
/// more row means another page.
fn page_of(mut rows: Vec<EventRow>, size: usize) -> Result<RowPage> {
    let more = rows.len() > size;
    rows.truncate(size);
    let next_cursor = match rows.last() {
        Some(last) if more => Some(last.cursor()?),
        _ => None,
    };
    Ok(RowPage { rows, next_cursor })
}

/// A pool of [`POOL_SIZE`] connections; they are opened on first use.
macro_rules! build_pool {
    ($manager:expr) => {
        Pool::builder($manager)
            .max_size(POOL_SIZE)
            .build()
            .map_err(|e| Error::config("cannot build the audit store's pool").because(e))?
    };
}

/// Adds the query's column filters (not time, not flags) to a boxed query
/// whose rows come from `audit_events`.
macro_rules! filtered {
    ($q:expr, $query:expr, $common_prefix:expr) => {{
        let mut q = $q;
        let query: &AuditQuery = $query;
        // Filters compare stored forms: a value with a NUL byte finds the
        // record stored with it escaped; one longer than its column, the
        // records stored cut (see `stored`).
        if let Some(v) = &query.actor_id {
            q = q.filter(audit_events::actor_id.eq(stored::short(v).into_owned()));
        }
        if let Some(v) = &query.actor_type {
            q = q.filter(audit_events::actor_type.eq(stored::short(v).into_owned()));
        }
        match query.action_filter() {
            Some(ActionFilter::Range(low, high)) if $common_prefix => {
                // `action || ''` is the same text, but no index serves it:
                // the database walks the time index and keeps what matches,
                // instead of sorting every record under the prefix.
                let action = audit_events::action.concat("");
                q = q.filter(action.clone().ge(low)).filter(action.lt(high));
            }
            Some(ActionFilter::Range(low, high)) => {
                q = q
                    .filter(audit_events::action.ge(low))
                    .filter(audit_events::action.lt(high));
            }
            Some(ActionFilter::Exact(v)) => q = q.filter(audit_events::action.eq(v)),
            None => {}
        }
        if let Some(v) = &query.resource_type {
            q = q.filter(audit_events::resource_type.eq(stored::short(v).into_owned()));
        }
        if let Some(v) = &query.resource_id {
            q = q.filter(audit_events::resource_id.eq(stored::short(v).into_owned()));
        }
        q
    }};
}

/// Adds the time window (`from`, `to`) on the given timestamp column.
macro_rules! window {
    ($q:expr, $query:expr, $ts:path) => {{
        let mut q = $q;
        let query: &AuditQuery = $query;
        if let Some(from) = query.from_us {
            q = q.filter($ts.ge(from));
        }
        if let Some(to) = query.to_us {
            q = q.filter($ts.lt(to));
        }
        q
    }};
}

/// Adds the time window, the cursor and the newest-first order on the
/// given (timestamp, id) columns.
macro_rules! keyset {
    ($q:expr, $query:expr, $ts:path, $id:path) => {{
        let query: &AuditQuery = $query;
        let mut q = window!($q, query, $ts);
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
    /// and checks that one connects, with the default timeout (5 s).
    ///
    /// # Errors
    ///
    /// A bad URL, or a database that cannot be reached in time
    /// ([`Error::is_unavailable`]).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::builder(url).connect().await
    }

    /// Starts configuring a store for the database at `url`.
    pub fn builder(url: impl Into<String>) -> StoreBuilder {
        StoreBuilder {
            url: url.into(),
            timeout: DEFAULT_TIMEOUT,
            count_cap: DEFAULT_COUNT_CAP,
        }
    }

    /// The record with this id.
    ///
    /// # Errors
    ///
    /// The database could not be reached or did not answer in time
    /// ([`Error::is_unavailable`]), failed, or holds a row this crate did
    /// not write.
    pub async fn get(&self, id: Uuid) -> Result<Option<AuditRecord>> {
        self.get_row(id)
            .await?
            .map(EventRow::into_record)
            .transpose()
    }

    /// The row of the record with this id.
    pub(crate) async fn get_row(&self, id: Uuid) -> Result<Option<EventRow>> {
        match self.get_stored(id).await {
            // A fresh database whose tables no sink has made yet holds
            // nothing: not an error for a reader.
            Err(e) if e.is_no_tables() => Ok(None),
            result => result,
        }
    }

    async fn get_stored(&self, id: Uuid) -> Result<Option<EventRow>> {
        let id = id.hyphenated().to_string();
        Ok(with_pooled!(self, c => async {
            audit_events::table
                .filter(audit_events::id.eq(&id))
                .select(EventRow::as_select())
                // The primary key: one row at most, without a LIMIT (see
                // `limit`).
                .get_result(c)
                .await
                .optional()
        }))
    }

    /// Verifies the hash chains of the stored records (see
    /// [`verify`](crate::verify)): every chain, or only `chain`, each read
    /// in `seq` order a page at a time (memory does not grow with the
    /// table). Rows without a chain are counted.
    ///
    /// # Errors
    ///
    /// As for [`get`](Self::get); a row this crate did not write is not an
    /// error but named as unreadable.
    pub async fn verify(&self, chain: Option<&str>) -> Result<crate::verify::Verification> {
        self.verify_with(crate::verify::Verifier::new(), chain)
            .await
    }

    /// As [`verify`](Self::verify), with a verifier that holds the
    /// checkpoints' public keys or copies of checkpoints kept elsewhere
    /// ([`Verifier::keys`](crate::verify::Verifier::keys),
    /// [`Verifier::witness`](crate::verify::Verifier::witness)).
    ///
    /// # Errors
    ///
    /// As for [`verify`](Self::verify).
    pub async fn verify_with(
        &self,
        verifier: crate::verify::Verifier,
        chain: Option<&str>,
    ) -> Result<crate::verify::Verification> {
        self.verify_between(verifier, chain, None, None).await
    }

    /// As [`verify_with`](Self::verify_with), over the records stamped from
    /// `from` (inclusive) to `to` (exclusive) only: for each chain, the
    /// `seq` range from its first to its last record stamped in the window,
    /// every record between included (records of concurrent requests can
    /// be stamped a little out of `seq` order, so a window's edges are its
    /// `seq` range, not its stamps). The window's first record is checked
    /// against the stored record before it; what lies outside is not
    /// judged, and copies of checkpoints outside are set aside. Each
    /// chain's report says the range it covered
    /// ([`ChainReport::window`](crate::verify::ChainReport::window)).
    /// Without `from` and `to`, the whole chains.
    ///
    /// # Errors
    ///
    /// As for [`verify`](Self::verify).
    pub async fn verify_between(
        &self,
        mut verifier: crate::verify::Verifier,
        chain: Option<&str>,
        from: Option<chrono::DateTime<chrono::Utc>>,
        to: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<crate::verify::Verification> {
        if let Some(chain) = chain {
            verifier.only_chain(chain);
        }
        let (from_us, to_us) = (
            from.map(|t| t.timestamp_micros()),
            to.map(|t| t.timestamp_micros()),
        );
        let windowed = from_us.is_some() || to_us.is_some();
        if let (Some(from), Some(to)) = (from, to) {
            if from >= to {
                return Err(Error::invalid(format!(
                    "the time window is empty: `from` ({from}) is not before `to` ({to})"
                )));
            }
        }
        // What retention purges removed, as they stated it.
        let statements: Result<Vec<super::write::PurgeRow>> = async {
            Ok(with_pooled!(self, c => async {
                let mut rows = super::schema::audit_purges::table
                    .select(super::write::PurgeRow::as_select())
                    .into_boxed();
                if let Some(chain) = chain {
                    rows = rows.filter(super::schema::audit_purges::chain.eq(chain));
                }
                rows.load(c).await
            }))
        }
        .await;
        // Without them (a schema without the table, a role that may not
        // read it) a purged prefix shows as deleted; say why.
        let statements = statements.unwrap_or_else(|error| {
            verifier.unreadable("the purge statements (audit_purges)", crate::error::Chain(&error));
            Vec::new()
        });
        for row in statements {
            let statement = crate::chain::checkpoint::PurgeStatement {
                below_seq: u64::try_from(row.below_seq).unwrap_or(0),
                head: crate::chain::from_hex(&row.head).unwrap_or(crate::chain::GENESIS),
                time: crate::record::time::datetime(row.purged_at_us),
                cutoff: crate::record::time::datetime(row.cutoff_us),
                records: u64::try_from(row.records).unwrap_or(0),
                chain: row.chain,
            };
            verifier.purge_statement(&statement, row.note.as_deref());
        }
        // Each chain with the `seq` range to read: all of it, or the
        // window's.
        let chains: Vec<(String, Option<(i64, i64)>)> = if windowed {
            let ranges: Vec<(String, Option<i64>, Option<i64>)> = with_pooled!(self, c => async {
                let mut rows = audit_events::table
                    .filter(audit_events::chain.is_not_null())
                    .filter(audit_events::timestamp_us.ge(from_us.unwrap_or(i64::MIN)))
                    .filter(audit_events::timestamp_us.lt(to_us.unwrap_or(i64::MAX)))
                    .group_by(audit_events::chain)
                    .select((
                        audit_events::chain.assume_not_null(),
                        diesel::dsl::min(audit_events::seq),
                        diesel::dsl::max(audit_events::seq),
                    ))
                    .order(audit_events::chain)
                    .into_boxed();
                if let Some(chain) = chain {
                    rows = rows.filter(audit_events::chain.eq(chain));
                }
                rows.load(c).await
            });
            let mut chains = Vec::with_capacity(ranges.len());
            for (name, first, last) in ranges {
                let (Some(first), Some(last)) = (first, last) else {
                    continue;
                };
                self.open_window(&mut verifier, &name, (first, last)).await?;
                chains.push((name, Some((first, last))));
            }
            verifier.windows_only();
            chains
        } else {
            let names: Vec<String> = match chain {
                Some(chain) => vec![chain.to_owned()],
                None => with_pooled!(self, c => async {
                    audit_events::table
                        .filter(audit_events::chain.is_not_null())
                        .select(audit_events::chain.assume_not_null())
                        .distinct()
                        .order(audit_events::chain)
                        .load::<String>(c)
                        .await
                }),
            };
            names.into_iter().map(|name| (name, None)).collect()
        };
        let feed = |verifier: &mut crate::verify::Verifier, rows: Vec<EventRow>| {
            for row in rows {
                let id = row.id().to_owned();
                match row.into_record() {
                    Ok(record) => verifier.check(&record),
                    Err(error) => verifier.unreadable(format!("row {id}"), crate::error::Chain(&error)),
                }
            }
        };
        for (name, range) in &chains {
            // A row of the chain without a `seq` is named first.
            let stray: Vec<EventRow> = with_pooled!(self, c => async {
                audit_events::table
                    .filter(audit_events::chain.eq(name))
                    .filter(audit_events::seq.is_null())
                    .filter(audit_events::timestamp_us.ge(from_us.unwrap_or(i64::MIN)))
                    .filter(audit_events::timestamp_us.lt(to_us.unwrap_or(i64::MAX)))
                    .select(EventRow::as_select())
                    .load(c)
                    .await
            });
            feed(&mut verifier, stray);
            // The next page is read while this one is checked: on two
            // cores that halves the time (the reading is the database's
            // work and the driver's, the checking parsing and hashing).
            let start = range.map(|(first, _)| (first, String::new()));
            let last = range.map(|(_, last)| last);
            let mut pending = Some(self.spawn_chain_page(name, start, last));
            while let Some(page) = pending.take() {
                let rows = page
                    .await
                    .map_err(|e| Error::database("audit query failed").because(e))??;
                if rows.len() as i64 == CHAIN_PAGE {
                    let after = rows.last().map(|r| (r.seq().unwrap_or(i64::MAX), r.id().to_owned()));
                    pending = Some(self.spawn_chain_page(name, after, last));
                }
                feed(&mut verifier, rows);
            }
        }
        if chain.is_none() {
            let unchained: i64 = with_pooled!(self, c => async {
                audit_events::table
                    .filter(audit_events::chain.is_null())
                    .filter(audit_events::timestamp_us.ge(from_us.unwrap_or(i64::MIN)))
                    .filter(audit_events::timestamp_us.lt(to_us.unwrap_or(i64::MAX)))
                    .count()
                    .get_result(c)
                    .await
            });
            verifier.add_unchained(u64::try_from(unchained).unwrap_or(0));
        }
        Ok(verifier.finish())
    }

    /// Tells `verifier` to verify records `first..=last` of chain `name`
    /// only: with the stored record before them (the head the first must
    /// follow), the chain's last checkpoint before them (by when the
    /// window's first is due) and whether the window reaches the chain's
    /// end.
    async fn open_window(
        &self,
        verifier: &mut crate::verify::Verifier,
        name: &str,
        (first, last): (i64, i64),
    ) -> Result<()> {
        // The first of a query's rows (by `seq`, then id) as a record; a
        // row that is not one is named unreadable.
        let one = |rows: Vec<EventRow>, verifier: &mut crate::verify::Verifier| {
            let row = rows.into_iter().next()?;
            let id = row.id().to_owned();
            row.into_record()
                .map_err(|error| verifier.unreadable(format!("row {id}"), crate::error::Chain(&error)))
                .ok()
        };
        let before: Vec<EventRow> = with_pooled!(self, c => async {
            audit_events::table
                .filter(audit_events::chain.eq(name))
                .filter(audit_events::seq.eq(first - 1))
                .order(audit_events::id)
                .limit(1)
                .select(EventRow::as_select())
                .load(c)
                .await
        });
        let before = one(before, verifier);
        // At most a checkpoint interval of records back (the whole prefix
        // when the chain has no checkpoints).
        let checkpoint: Vec<EventRow> = with_pooled!(self, c => async {
            audit_events::table
                .filter(audit_events::chain.eq(name))
                .filter(audit_events::seq.lt(first))
                .filter(audit_events::action.eq(crate::verify::CHECKPOINT_ACTION))
                .order((audit_events::seq.desc(), audit_events::id.desc()))
                .limit(1)
                .select(EventRow::as_select())
                .load(c)
                .await
        });
        let checkpoint = one(checkpoint, verifier);
        let chain_end: Option<i64> = with_pooled!(self, c => async {
            audit_events::table
                .filter(audit_events::chain.eq(name))
                .select(diesel::dsl::max(audit_events::seq))
                .get_result(c)
                .await
        });
        let range = (
            u64::try_from(first).unwrap_or(0),
            u64::try_from(last).unwrap_or(0),
        );
        let ends_chain = chain_end.is_none_or(|end| end <= last);
        verifier.window(name, range, ends_chain, before.as_ref(), checkpoint.as_ref());
        Ok(())
    }

    /// Reads, in a task of its own, the next page of chain `name`'s rows
    /// in `seq` order: the first, or the one after `(seq, id)`.
    fn spawn_chain_page(
        &self,
        name: &str,
        after: Option<(i64, String)>,
        last: Option<i64>,
    ) -> tokio::task::JoinHandle<Result<Vec<EventRow>>> {
        let (store, name) = (self.clone(), name.to_owned());
        tokio::spawn(async move { store.chain_page(&name, after, last).await })
    }

    /// A page of chain `name`'s rows in `seq` order, after `(seq, id)`
    /// and up to `seq` `last`.
    async fn chain_page(
        &self,
        name: &str,
        after: Option<(i64, String)>,
        last: Option<i64>,
    ) -> Result<Vec<EventRow>> {
        let last = last.unwrap_or(i64::MAX);
        Ok(match &after {
            None => with_pooled!(self, c => async {
                audit_events::table
                    .filter(audit_events::chain.eq(name))
                    .filter(audit_events::seq.is_not_null())
                    .filter(audit_events::seq.le(last))
                    .order((audit_events::seq, audit_events::id))
                    .limit(CHAIN_PAGE)
                    .select(EventRow::as_select())
                    .load(c)
                    .await
            }),
            Some((seq, id)) => with_pooled!(self, c => async {
                audit_events::table
                    .filter(audit_events::chain.eq(name))
                    // The redundant bound is what the index is searched
                    // by: the `OR` alone is not one, and each page would
                    // scan the chain from its start.
                    .filter(audit_events::seq.ge(seq))
                    .filter(audit_events::seq.le(last))
                    .filter(
                        audit_events::seq
                            .gt(seq)
                            .or(audit_events::seq.eq(seq).and(audit_events::id.gt(id))),
                    )
                    .order((audit_events::seq, audit_events::id))
                    .limit(CHAIN_PAGE)
                    .select(EventRow::as_select())
                    .load(c)
                    .await
            }),
        })
    }

    /// One page of the records matching `query`, newest first.
    ///
    /// With `has_flag`, the query is driven from the flags table, whose
    /// index is ordered by (flag, time): a rare flag costs as little as a
    /// common one. Text filters compare what is stored: a value longer than
    /// its column (255 characters) matches the records whose value starts
    /// with its first 255 characters.
    ///
    /// # Errors
    ///
    /// As for [`get`](Self::get).
    pub async fn query(&self, query: &AuditQuery) -> Result<Page> {
        self.query_rows(query).await?.into_page()
    }

    /// The rows of [`query`](Self::query)'s page.
    pub(crate) async fn query_rows(&self, query: &AuditQuery) -> Result<RowPage> {
        match self.query_stored(query).await {
            Err(e) if e.is_no_tables() => Ok(RowPage {
                rows: Vec::new(),
                next_cursor: None,
            }),
            result => result,
        }
    }

    async fn query_stored(&self, query: &AuditQuery) -> Result<RowPage> {
        let size = query.page_size() as usize;
        let limit = size as i64 + 1;
        if let Some(page) = self.merged_page(query, limit).await? {
            return page_of(page, size);
        }
        let common = self.is_common_prefix(query).await?;
        let rows: Vec<EventRow> = with_pooled!(self, c => async {
            match &query.has_flag {
                None => {
                    let q = audit_events::table.select(EventRow::as_select()).into_boxed();
                    let q = filtered!(q, query, common);
                    let q = keyset!(q, query, audit_events::timestamp_us, audit_events::id);
                    limited(q, limit).load(c).await
                }
                Some(flag) => {
                    let q = audit_event_flags::table
                        .inner_join(audit_events::table.on(audit_events::id.eq(audit_event_flags::event_id)))
                        .select(EventRow::as_select())
                        .filter(audit_event_flags::flag.eq(stored::short(flag).into_owned()))
                        .into_boxed();
                    let q = filtered!(q, query, common);
                    let q = keyset!(q, query, audit_event_flags::timestamp_us, audit_event_flags::event_id);
                    limited(q, limit).load(c).await
                }
            }
        });
        page_of(rows, size)
    }

    /// The first `limit` rows of a query with an action prefix (and no
    /// flag), newest first: from the newest records of its other filters
    /// when they hold a page, else as a merge of the ranges of the actions
    /// under the prefix (see [`merge`]). `None` for other queries, and for
    /// a prefix over more than [`merge::MAX_ARMS`] actions.
    async fn merged_page(&self, query: &AuditQuery, limit: i64) -> Result<Option<Vec<EventRow>>> {
        let Some(ActionFilter::Range(low, high)) = query.action_filter() else {
            return Ok(None);
        };
        if query.has_flag.is_some() {
            return Ok(None);
        }
        let dialect = self.dialect();
        // A common prefix fills a page from the newest records of the
        // other filters.
        let scan = dialect.scan(query, limit);
        let rows: Option<Vec<EventRow>> = with_pooled!(self, c => async {
            let mut ids: Vec<(i64, String)> =
                merge::newest_in_range(query, &low, &high, limit, scan).load(c).await?;
            if (ids.len() as i64) < limit {
                let mut actions: Vec<String> = Vec::new();
                if dialect == merge::Dialect::Mysql {
                    while actions.len() <= merge::MAX_ARMS {
                        let after = actions.last().map(String::as_str);
                        let next: Vec<String> =
                            merge::next_action(after, &low, &high).load(c).await?;
                        match next.into_iter().next() {
                            Some(action) => actions.push(action),
                            None => break,
                        }
                    }
                } else {
                    actions = merge::actions_in(&low, &high).load(c).await?;
                }
                if actions.len() > merge::MAX_ARMS {
                    return Ok(None);
                }
                if actions.is_empty() {
                    return Ok(Some(Vec::new()));
                }
                ids = merge::merged_ids(query, &actions, limit, dialect).load(c).await?;
            }
            let order: std::collections::HashMap<String, usize> =
                ids.into_iter().enumerate().map(|(i, (_, id))| (id, i)).collect();
            let mut rows: Vec<EventRow> = audit_events::table
                .filter(audit_events::id.eq_any(order.keys()))
                .select(EventRow::as_select())
                .load(c)
                .await?;
            // In the merge's order, which is the page's.
            rows.sort_by_key(|r| order.get(r.id()).copied());
            Ok(Some(rows))
        });
        Ok(rows)
    }

    /// How this store's backend writes a merge.
    fn dialect(&self) -> merge::Dialect {
        match &self.pools {
            #[cfg(feature = "sqlite")]
            Pools::Sqlite(_) => merge::Dialect::Sqlite,
            #[cfg(feature = "postgres")]
            Pools::Postgres(_) => merge::Dialect::Postgres,
            #[cfg(feature = "mysql")]
            Pools::Mysql(_) => merge::Dialect::Mysql,
        }
    }

    /// How many records match `query`'s filters (its cursor and limit
    /// aside): exact up to the store's count cap (10 000 unless set with
    /// [`StoreBuilder::count_cap`]); beyond it the cap, marked as a lower
    /// bound. No call counts more than the cap: the database first looks
    /// for a match past the cap (reading at most cap + 1 matches, in
    /// whatever order its indexes give them), and counts exactly only when
    /// there is none.
    ///
    /// # Errors
    ///
    /// As for [`get`](Self::get).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use fabric_audit::{AuditQuery, Store};
    ///
    /// # async fn docs() -> fabric_audit::Result<()> {
    /// let store = Store::builder("sqlite://logs/audit.db").count_cap(1000).connect().await?;
    /// let total = store.count(&AuditQuery::new().action("invoice.")).await?;
    /// if total.is_lower_bound {
    ///     println!("more than {} records", total.count);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn count(&self, query: &AuditQuery) -> Result<Total> {
        match self.count_stored(query).await {
            Err(e) if e.is_no_tables() => Ok(Total {
                count: 0,
                is_lower_bound: false,
            }),
            result => result,
        }
    }

    async fn count_stored(&self, query: &AuditQuery) -> Result<Total> {
        let cap = i64::from(self.count_cap);
        let query = &AuditQuery {
            cursor: None,
            ..query.clone()
        };
        // A count reads every match up to the cap in any order, so the
        // action index's range (the matches and nothing else) serves a
        // prefix, however common: walking the time index instead (as pages
        // of a common prefix do) read every record down to the cap's match,
        // half the table for a 2 % prefix, and all of it twice for a prefix
        // of fewer records than the cap. Without an ORDER BY the database
        // picks the index that holds the fewest entries to read.
        let (count, is_lower_bound) = with_pooled!(self, c => async {
            match &query.has_flag {
                None => {
                    let q = audit_events::table.select(audit_events::timestamp_us).into_boxed();
                    let q = filtered!(q, query, false);
                    let q = window!(q, query, audit_events::timestamp_us);
                    if limited(q, 1).offset(cap).get_result::<i64>(c).await.optional()?.is_some() {
                        return Ok((cap, true));
                    }
                    let q = filtered!(audit_events::table.into_boxed(), query, false);
                    let q = window!(q, query, audit_events::timestamp_us);
                    q.count().get_result::<i64>(c).await.map(|n| (n, false))
                }
                Some(flag) => {
                    let flag = stored::short(flag).into_owned();
                    let q = audit_event_flags::table
                        .inner_join(audit_events::table.on(audit_events::id.eq(audit_event_flags::event_id)))
                        .select(audit_event_flags::timestamp_us)
                        .filter(audit_event_flags::flag.eq(flag.clone()))
                        .into_boxed();
                    let q = filtered!(q, query, false);
                    let q = window!(q, query, audit_event_flags::timestamp_us);
                    if limited(q, 1).offset(cap).get_result::<i64>(c).await.optional()?.is_some() {
                        return Ok((cap, true));
                    }
                    let q = audit_event_flags::table
                        .inner_join(audit_events::table.on(audit_events::id.eq(audit_event_flags::event_id)))
                        .filter(audit_event_flags::flag.eq(flag))
                        .into_boxed();
                    let q = filtered!(q, query, false);
                    let q = window!(q, query, audit_event_flags::timestamp_us);
                    q.count().get_result::<i64>(c).await.map(|n| (n, false))
                }
            }
        });
        Ok(Total {
            count: u64::try_from(count).unwrap_or(0),
            is_lower_bound,
        })
    }

    /// Whether the query's action prefix covers many records.
    ///
    /// Two plans serve a prefix: read the action index's range and sort it
    /// by time (fast when the prefix is rare), or walk the time index and
    /// keep what matches (fast when it is common). SQLite keeps no value
    /// statistics to choose, and PostgreSQL chose badly with other filters
    /// combined (measured in `benches/query.rs`), so the store looks: it
    /// counts the range, up to a cap, in the covering action index. Pages
    /// use it only where the merge does not serve them (with `has_flag`,
    /// or over more than [`merge::MAX_ARMS`] actions); counts never (see
    /// [`count`](Self::count)).
    async fn is_common_prefix(&self, query: &AuditQuery) -> Result<bool> {
        const COMMON: i64 = 2000;
        let Some(ActionFilter::Range(low, high)) = query.action_filter() else {
            return Ok(false);
        };
        let found: Vec<i64> = with_pooled!(self, c => async {
            let range = audit_events::table
                .select(audit_events::timestamp_us)
                .filter(audit_events::action.ge(&low))
                .filter(audit_events::action.lt(&high))
                // In index order: the database reads COMMON entries and stops.
                .order(audit_events::action);
            limited(range, COMMON).load(c).await
        });
        Ok(found.len() as i64 >= COMMON)
    }
}

impl StoreBuilder {
    /// How long one call may take in all: waiting for a connection (opening
    /// one if need be) and the query's answer. Past it the call fails with
    /// an error for which [`Error::is_unavailable`] holds; on PostgreSQL
    /// the server also cancels the query then.
    pub fn timeout(self, timeout: Duration) -> Self {
        Self { timeout, ..self }
    }

    /// Up to how many matching records [`Store::count`] counts exactly,
    /// from 1 to 1 000 000 (default 10 000); beyond it the count is the cap,
    /// marked as a lower bound.
    pub fn count_cap(self, count_cap: u32) -> Self {
        Self { count_cap, ..self }
    }

    /// Opens the pool and checks that a connection can be made in time.
    ///
    /// # Errors
    ///
    /// A bad URL or a zero timeout ([`Error::is_invalid_input`]), or a
    /// database that cannot be reached in time ([`Error::is_unavailable`]).
    pub async fn connect(self) -> Result<Store> {
        if self.timeout.is_zero() {
            return Err(Error::invalid("the store's timeout must not be zero"));
        }
        if !(1..=MAX_COUNT_CAP).contains(&self.count_cap) {
            return Err(Error::invalid(format!(
                "the store's count cap must be from 1 to {MAX_COUNT_CAP}, not {}",
                self.count_cap
            )));
        }
        let timeout = self.timeout;
        let pools = match Backend::parse(&self.url)? {
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
                config.custom_setup =
                    Box::new(move |url| Box::pin(postgres_setup(url.to_owned(), timeout)));
                let manager = AsyncDieselConnectionManager::new_with_config(url, config);
                Pools::Postgres(build_pool!(manager))
            }
            #[cfg(feature = "mysql")]
            Backend::Mysql(url) => {
                let mut config = ManagerConfig::default();
                config.custom_setup =
                    Box::new(move |url| Box::pin(mysql_setup(url.to_owned(), timeout)));
                let manager = AsyncDieselConnectionManager::new_with_config(url, config);
                Pools::Mysql(build_pool!(manager))
            }
        };
        let store = Store {
            pools,
            timeout,
            count_cap: self.count_cap,
        };
        with_pooled!(&store, c => async {
            let _ = c;
            Ok(())
        });
        Ok(store)
    }
}

impl std::fmt::Debug for StoreBuilder {
    /// Without the URL, which may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreBuilder")
            .field("backend", &Backend::parse(&self.url).map(|b| b.kind()).ok())
            .field("timeout", &self.timeout)
            .field("count_cap", &self.count_cap)
            .finish_non_exhaustive()
    }
}

/// The store's PostgreSQL sessions use generic plans from the first
/// execution. For these newest-first, LIMITed shapes the plans PostgreSQL
/// made for the actual values (its first five executions of a statement)
/// read and sorted whole ranges: 20 to 150 ms over 1M rows, against under
/// 2 ms for the generic plan (`benches/query.rs`). Generic plans guess
/// that a `LIMIT $n` keeps a tenth of the rows, enough for PostgreSQL to
/// start parallel workers for a page of 50: 10 to 15 ms of start-up for
/// a page read in 0.3 ms, so the store's sessions plan no parallel
/// queries. Nor do they compile queries just in time: over 10M rows the
/// generic plan of a page by flag is estimated above `jit_above_cost`,
/// and PostgreSQL spent 5 to 10 ms compiling a page it then read in
/// 0.3 ms (`has_flag`'s first page: 6.25 ms p50 over 10M rows, against
/// 0.43 ms for its deep page, whose cursor lowers the estimate). The
/// server cancels a query that outlives the store's timeout, which has
/// given up on it.
#[cfg(feature = "postgres")]
async fn postgres_setup(
    url: String,
    timeout: Duration,
) -> diesel::ConnectionResult<diesel_async::AsyncPgConnection> {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    let mut conn = diesel_async::AsyncPgConnection::establish(&url).await?;
    let sql = format!(
        "SET plan_cache_mode = force_generic_plan; SET max_parallel_workers_per_gather = 0; \
         SET jit = off; SET statement_timeout = {}",
        timeout.as_millis().max(1)
    );
    conn.batch_execute(&sql)
        .await
        .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
    Ok(conn)
}

/// MariaDB cancels a query that outlives the store's timeout (MySQL has no
/// such setting for every statement, and refuses the variable: ignored).
#[cfg(feature = "mysql")]
async fn mysql_setup(
    url: String,
    timeout: Duration,
) -> diesel::ConnectionResult<diesel_async::AsyncMysqlConnection> {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    let mut conn = diesel_async::AsyncMysqlConnection::establish(&url).await?;
    let sql = format!(
        "SET SESSION max_statement_time = {}",
        timeout.as_secs_f64().max(0.001)
    );
    let _ = conn.batch_execute(&sql).await;
    Ok(conn)
}

#[cfg(feature = "sqlite")]
async fn sqlite_setup(path: String) -> diesel::ConnectionResult<SqliteConn> {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    let mut conn = SqliteConn::establish(&path).await?;
    conn.batch_execute("PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL;")
        .await
        .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
    Ok(conn)
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
        f.debug_struct("Store")
            .field("backend", &kind)
            .field("timeout", &self.timeout)
            .field("count_cap", &self.count_cap)
            .finish()
    }
}

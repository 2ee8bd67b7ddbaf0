//! An action prefix as a merge of per-action index ranges.
//!
//! Neither plan the databases find for `action` in `[low, high)` ordered
//! newest first is cheap when the prefix matches a few percent of the
//! rows: reading the action index's range and sorting it reads every
//! match, walking the time index reads every row until a page matches.
//! So the store tries the walk, bounded: [`newest_in_range`] checks the
//! prefix on the newest few pages' worth of records of the other filters
//! ([`Dialect::scan`]), which hold a page when the prefix is common (the
//! page is exact then). Otherwise, a prefix covers few distinct actions,
//! and each action's entries in the index `(action, timestamp_us, id)` are
//! already newest first. So the store lists the actions under the prefix
//! ([`actions_in`], a skip scan: one index seek per action; [`next_action`]
//! on MariaDB), then merges their ranges ([`merged_ids`]): a `UNION ALL`
//! of one arm per action, each reading its range backwards from the
//! cursor, under one `ORDER BY … LIMIT`. SQLite and PostgreSQL
//! merge the arms (a compound merge, a Merge Append), reading about a page
//! of index entries in all; MariaDB, which cannot, reads at most a page
//! per arm (see [`Dialect`]). Both yield (time, id) pairs only; the page's
//! rows are read by id afterwards.
//!
//! The statements are text from this file's fixed fragments, every value
//! bound (a `LIMIT` in SQLite's text: see [`super::limit`]), and are safe for the connections' statement caches: one
//! prepared statement per number of arms and set of filters.

use diesel::backend::Backend;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{BigInt, HasSqlType, Text};
use diesel::QueryResult;

use super::limit::{write_limit, LimitStyle};
use super::query::{AuditQuery, Cursor};
use super::stored;

/// The most actions a prefix is merged over; a prefix with more is served
/// by the older plans.
pub(crate) const MAX_ARMS: usize = 64;

/// The backend a statement is written for (a build without a backend's
/// feature never makes its variant).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    not(all(feature = "sqlite", feature = "postgres", feature = "mysql")),
    allow(dead_code)
)]
pub(crate) enum Dialect {
    /// Plain arms under one `ORDER BY … LIMIT`, which SQLite merges lazily
    /// (it takes no parentheses around an arm).
    Sqlite,
    /// Each arm in parentheses with its own `ORDER BY … LIMIT`: PostgreSQL
    /// merges such arms (Merge Append) but not plain ones, whose pulled-up
    /// `action = $1` leaves the index order unused.
    Postgres,
    /// Bounded arms as for PostgreSQL: MariaDB sorts a `UNION ALL` only
    /// after reading every arm, which the arms' limits bound. It lists the
    /// actions a step at a time ([`next_action`]).
    Mysql,
}

impl Dialect {
    /// How many of the newest records of `query`'s other filters
    /// [`newest_in_range`] checks its prefix on, for a page of `limit`:
    /// reading that many costs about what listing a prefix's actions and
    /// merging them would. Without column filters, MariaDB reads them from
    /// its time index alone (which carries the action: see the migration
    /// `cover_action_in_time_index`), so it checks 8 pages' worth, enough
    /// for a prefix of a sixth of the rows and up (a quarter, as
    /// `shop.auth.` in `benches/query.rs`, missed a page in 4 about half
    /// the time). Otherwise each record is read for its action: 4 pages.
    pub(crate) fn scan(self, query: &AuditQuery, limit: i64) -> i64 {
        let columns = [
            &query.actor_id,
            &query.actor_type,
            &query.resource_type,
            &query.resource_id,
        ];
        let covered = self == Dialect::Mysql && columns.iter().all(|c| c.is_none());
        if covered {
            limit * 8
        } else {
            limit * 4
        }
    }
}

/// A piece of a statement.
#[derive(Debug, Clone)]
enum Piece {
    Sql(&'static str),
    Text(String),
    Int(i64),
    /// ` LIMIT n`, as the backend takes it (see [`super::limit`]).
    Limit(i64),
}

/// A statement of fixed SQL fragments and bound values, whose rows have
/// the SQL type `ST`.
#[derive(Debug, Clone)]
pub(crate) struct Statement<ST> {
    pieces: Vec<Piece>,
    _row: std::marker::PhantomData<fn() -> ST>,
}

impl<ST> Statement<ST> {
    fn new() -> Self {
        Self {
            pieces: Vec::new(),
            _row: std::marker::PhantomData,
        }
    }

    fn sql(&mut self, sql: &'static str) -> &mut Self {
        self.pieces.push(Piece::Sql(sql));
        self
    }

    fn text(&mut self, value: impl Into<String>) -> &mut Self {
        self.pieces.push(Piece::Text(value.into()));
        self
    }

    fn int(&mut self, value: i64) -> &mut Self {
        self.pieces.push(Piece::Int(value));
        self
    }

    fn limit(&mut self, value: i64) -> &mut Self {
        self.pieces.push(Piece::Limit(value));
        self
    }
}

impl<ST> QueryId for Statement<ST> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<ST: 'static> Query for Statement<ST> {
    type SqlType = ST;
}

impl<ST, DB> QueryFragment<DB> for Statement<ST>
where
    DB: Backend + HasSqlType<Text> + HasSqlType<BigInt> + LimitStyle,
    String: ToSql<Text, DB>,
    i64: ToSql<BigInt, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        // Safe to cache: the text depends only on the shape, never on a
        // value (the default, so nothing to say).
        for piece in &self.pieces {
            match piece {
                Piece::Sql(sql) => out.push_sql(sql),
                Piece::Text(value) => out.push_bind_param::<Text, String>(value)?,
                Piece::Int(value) => out.push_bind_param::<BigInt, i64>(value)?,
                Piece::Limit(value) => write_limit(&mut out, value)?,
            }
        }
        Ok(())
    }
}


/// The distinct stored actions in `[low, high)`, in order, at most
/// [`MAX_ARMS`] + 1 of them: a skip scan of the action index, one seek
/// per action (SQLite and PostgreSQL read `DISTINCT` as a scan of the
/// whole range, hence the recursive form). Not for MariaDB: see
/// [`next_action`].
pub(crate) fn actions_in(low: &str, high: &str) -> Statement<Text> {
    let mut s = Statement::new();
    s.sql(
        "WITH RECURSIVE under_prefix (action, n) AS (\
         SELECT (SELECT MIN(action) FROM audit_events WHERE action >= ",
    )
    .text(low)
    .sql(" AND action < ")
    .text(high)
    .sql(
        "), 1 UNION ALL SELECT (SELECT MIN(e.action) FROM audit_events e \
         WHERE e.action > under_prefix.action AND e.action < ",
    )
    .text(high)
    .sql(
        "), n + 1 FROM under_prefix \
         WHERE under_prefix.action IS NOT NULL AND n <= ",
    )
    .int(MAX_ARMS as i64)
    .sql(") SELECT action FROM under_prefix WHERE action IS NOT NULL ORDER BY action");
    s
}

/// The first stored action in `[low, high)` after `after`, if any: one
/// step of the skip scan, for MariaDB. Its recursive form re-read the
/// range from its start on every step, and its skip scan for `DISTINCT`
/// (which it uses from its command line) was not chosen for the driver's
/// prepared statements: 20 ms for 20 000 entries under a prefix.
pub(crate) fn next_action(after: Option<&str>, low: &str, high: &str) -> Statement<Text> {
    let mut s = Statement::new();
    match after {
        Some(after) => s.sql("SELECT action FROM audit_events WHERE action > ").text(after),
        None => s.sql("SELECT action FROM audit_events WHERE action >= ").text(low),
    };
    s.sql(" AND action < ")
        .text(high)
        .sql(" ORDER BY action LIMIT 1");
    s
}

/// The (time, id) of the first `limit` records of `query`, its action
/// prefix `[low, high)` checked on the newest `scan` records of its other
/// filters only: when these hold `limit` matches (a common prefix), they
/// are the page, found without listing the actions. `query` has no
/// `has_flag`.
pub(crate) fn newest_in_range(
    query: &AuditQuery,
    low: &str,
    high: &str,
    limit: i64,
    scan: i64,
) -> Statement<(BigInt, Text)> {
    let mut s = Statement::new();
    s.sql(
        "SELECT timestamp_us, id FROM (\
         SELECT timestamp_us, id, action FROM audit_events WHERE 1 = 1",
    );
    arm_filters(&mut s, query);
    s.sql(" ORDER BY timestamp_us DESC, id DESC")
        .limit(scan)
        .sql(") newest WHERE action >= ")
        .text(low)
        .sql(" AND action < ")
        .text(high)
        .sql(" ORDER BY timestamp_us DESC, id DESC")
        .limit(limit);
    s
}

/// The (time, id) of the first `limit` records of `query`, newest first,
/// its action prefix given as the `actions` under it: one arm per action.
/// `query` has no `has_flag`.
pub(crate) fn merged_ids(
    query: &AuditQuery,
    actions: &[String],
    limit: i64,
    dialect: Dialect,
) -> Statement<(BigInt, Text)> {
    let mut s = Statement::new();
    // One action is one range: a parenthesized arm alone would carry two
    // ORDER BYs, which PostgreSQL refuses.
    let bounded = dialect != Dialect::Sqlite && actions.len() > 1;
    for (i, action) in actions.iter().enumerate() {
        if i > 0 {
            s.sql(" UNION ALL ");
        }
        if bounded {
            s.sql("(");
        }
        s.sql("SELECT timestamp_us, id FROM audit_events WHERE action = ")
            .text(action.as_str());
        arm_filters(&mut s, query);
        if bounded {
            s.sql(" ORDER BY timestamp_us DESC, id DESC")
                .limit(limit)
                .sql(")");
        }
    }
    s.sql(" ORDER BY timestamp_us DESC, id DESC").limit(limit);
    s
}

/// The filters of one arm but its action: the columns, the window and the
/// cursor.
fn arm_filters<ST>(s: &mut Statement<ST>, query: &AuditQuery) {
    let columns = [
        (" AND actor_id = ", &query.actor_id),
        (" AND actor_type = ", &query.actor_type),
        (" AND resource_type = ", &query.resource_type),
        (" AND resource_id = ", &query.resource_id),
    ];
    for (sql, value) in columns {
        if let Some(v) = value {
            s.sql(sql).text(stored::short(v).into_owned());
        }
    }
    if let Some(from) = query.from_us {
        s.sql(" AND timestamp_us >= ").int(from);
    }
    if let Some(to) = query.to_us {
        s.sql(" AND timestamp_us < ").int(to);
    }
    if let Some(Cursor { timestamp_us, id }) = query.cursor {
        // The first bound is implied by the second; it is there so that
        // the databases seek with it (see `store::keyset`).
        let id = id.hyphenated().to_string();
        s.sql(" AND timestamp_us <= ")
            .int(timestamp_us)
            .sql(" AND (timestamp_us < ")
            .int(timestamp_us)
            .sql(" OR (timestamp_us = ")
            .int(timestamp_us)
            .sql(" AND id < ")
            .text(id)
            .sql("))");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql<ST>(s: &Statement<ST>) -> String {
        s.pieces
            .iter()
            .map(|p| match p {
                Piece::Sql(sql) => *sql,
                Piece::Text(_) | Piece::Int(_) => "?",
                Piece::Limit(_) => " LIMIT ?",
            })
            .collect()
    }

    #[test]
    fn values_are_bound_never_written() {
        let hostile = "x' OR '1'='1";
        let query = AuditQuery::new()
            .actor_id(hostile)
            .resource_type(hostile)
            .action("a.");
        let s = merged_ids(&query, &[hostile.to_owned()], 51, Dialect::Sqlite);
        assert!(!sql(&s).contains(hostile));
        let texts = s
            .pieces
            .iter()
            .filter(|p| matches!(p, Piece::Text(t) if t == hostile))
            .count();
        assert_eq!(texts, 3);
        assert!(!sql(&actions_in(hostile, hostile)).contains(hostile));
        assert!(!sql(&next_action(Some(hostile), hostile, hostile)).contains(hostile));
        let probe = newest_in_range(&query, hostile, hostile, 51, 408);
        assert!(!sql(&probe).contains(hostile));
    }

    #[test]
    fn mariadb_checks_more_records_only_where_its_time_index_covers_them() {
        let day = AuditQuery::new().action("a.").from(chrono::DateTime::UNIX_EPOCH);
        let cases = [
            (Dialect::Mysql, AuditQuery::new().action("a."), 408),
            (Dialect::Mysql, day.clone(), 408),
            (Dialect::Mysql, day.clone().actor_id("u"), 204),
            (Dialect::Mysql, AuditQuery::new().actor_type("service"), 204),
            (Dialect::Mysql, AuditQuery::new().resource_id("7"), 204),
            (Dialect::Sqlite, day.clone(), 204),
            (Dialect::Postgres, day, 204),
        ];
        for (dialect, query, want) in cases {
            assert_eq!(dialect.scan(&query, 51), want, "{dialect:?} {query:?}");
        }
    }

    #[test]
    fn arms_are_merged_or_bounded_by_dialect() {
        let query = AuditQuery::new().actor_id("u").after(Cursor {
            timestamp_us: 5,
            id: uuid::Uuid::nil(),
        });
        let actions = ["a.x".to_owned(), "a.y".to_owned()];
        assert_eq!(
            sql(&merged_ids(&query, &actions, 51, Dialect::Sqlite)),
            "SELECT timestamp_us, id FROM audit_events WHERE action = ? AND actor_id = ? \
             AND timestamp_us <= ? AND (timestamp_us < ? OR (timestamp_us = ? AND id < ?)) \
             UNION ALL SELECT timestamp_us, id FROM audit_events WHERE action = ? AND actor_id = ? \
             AND timestamp_us <= ? AND (timestamp_us < ? OR (timestamp_us = ? AND id < ?)) \
             ORDER BY timestamp_us DESC, id DESC LIMIT ?"
        );
        let bounded = sql(&merged_ids(
            &AuditQuery::new(),
            &actions,
            51,
            Dialect::Postgres,
        ));
        let one = sql(&merged_ids(
            &AuditQuery::new(),
            &actions[..1],
            51,
            Dialect::Postgres,
        ));
        assert_eq!(
            one,
            "SELECT timestamp_us, id FROM audit_events WHERE action = ? \
             ORDER BY timestamp_us DESC, id DESC LIMIT ?"
        );
        assert_eq!(
            bounded,
            "(SELECT timestamp_us, id FROM audit_events WHERE action = ? \
             ORDER BY timestamp_us DESC, id DESC LIMIT ?) UNION ALL \
             (SELECT timestamp_us, id FROM audit_events WHERE action = ? \
             ORDER BY timestamp_us DESC, id DESC LIMIT ?) \
             ORDER BY timestamp_us DESC, id DESC LIMIT ?"
        );
    }
}

//! `LIMIT` as each backend runs it best.
//!
//! SQLite reads a bound `LIMIT`'s value while it plans, so it marks the
//! statement to be prepared again whenever that parameter is bound again:
//! on every run, since Diesel binds every parameter each time. Preparing
//! the page query again took about a sixth of the process's CPU per page
//! in `benches/http.rs`. So on SQLite the limit is written into the
//! statement's text (the statement cache then keeps one statement per page
//! size): the first 16 distinct limits of the process, after which a new
//! one is bound again, so that the caches stay bounded whatever limits
//! clients ask for. Elsewhere it stays a bound parameter: PostgreSQL's
//! generic plans (see `store::postgres_setup`) are made for one.

use diesel::backend::Backend;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::BigInt;
use diesel::QueryResult;

/// Whether a backend takes its `LIMIT` in the statement's text.
pub(crate) trait LimitStyle: Backend {
    const IN_TEXT: bool;
}

#[cfg(feature = "sqlite")]
impl LimitStyle for diesel::sqlite::Sqlite {
    const IN_TEXT: bool = true;
}

#[cfg(feature = "postgres")]
impl LimitStyle for diesel::pg::Pg {
    const IN_TEXT: bool = false;
}

#[cfg(feature = "mysql")]
impl LimitStyle for diesel::mysql::Mysql {
    const IN_TEXT: bool = false;
}

/// Writes ` LIMIT n` as `DB` takes it.
pub(crate) fn write_limit<'b, DB>(out: &mut AstPass<'_, 'b, DB>, limit: &'b i64) -> QueryResult<()>
where
    DB: LimitStyle,
    i64: ToSql<BigInt, DB>,
{
    out.push_sql(" LIMIT ");
    if DB::IN_TEXT && in_text(*limit) {
        out.push_sql(&limit.to_string());
        Ok(())
    } else {
        out.push_bind_param::<BigInt, i64>(limit)
    }
}

/// How many distinct limits are written into statements' text: each is
/// another statement in every connection's cache, for every query shape,
/// and a client picking a new `limit` (1 to 1 000) per request must not
/// make the caches grow by as many.
const TEXT_LIMITS: usize = 16;

/// Whether `limit` is one of the first [`TEXT_LIMITS`] distinct limits
/// this process wrote into a statement's text (the usual page sizes and
/// what the store derives from them come first); any other is bound.
/// Once true for a value, always true, so every pass over one query
/// writes it the same way.
fn in_text(limit: i64) -> bool {
    use std::sync::atomic::{AtomicI64, Ordering};
    // 0: a free slot (a limit is never 0 here; one that is is bound).
    static SEEN: [AtomicI64; TEXT_LIMITS] = [const { AtomicI64::new(0) }; TEXT_LIMITS];
    if limit == 0 {
        return false;
    }
    for slot in &SEEN {
        match slot.compare_exchange(0, limit, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return true,
            Err(seen) if seen == limit => return true,
            Err(_) => {}
        }
    }
    false
}

/// `query LIMIT n [OFFSET m]`, the limit written as the backend takes it
/// (the offset always bound); `query` has no limit of its own.
#[derive(Debug, Clone)]
pub(crate) struct Limited<Q> {
    query: Q,
    limit: i64,
    offset: Option<i64>,
}

/// The first `limit` rows of `query`.
pub(crate) fn limited<Q>(query: Q, limit: i64) -> Limited<Q> {
    Limited {
        query,
        limit,
        offset: None,
    }
}

impl<Q> Limited<Q> {
    /// Skips the first `offset` rows.
    pub(crate) fn offset(self, offset: i64) -> Self {
        Self {
            offset: Some(offset),
            ..self
        }
    }
}

/// The text depends on the limit: cached by its text, not by its type.
impl<Q> QueryId for Limited<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: Query> Query for Limited<Q> {
    type SqlType = Q::SqlType;
}

impl<Q, DB> QueryFragment<DB> for Limited<Q>
where
    DB: LimitStyle,
    Q: QueryFragment<DB>,
    i64: ToSql<BigInt, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        self.query.walk_ast(out.reborrow())?;
        write_limit(&mut out, &self.limit)?;
        if let Some(offset) = &self.offset {
            out.push_sql(" OFFSET ");
            out.push_bind_param::<BigInt, i64>(offset)?;
        }
        Ok(())
    }
}

#[cfg(all(test, feature = "sqlite", feature = "postgres"))]
mod tests {
    use super::*;
    use crate::db::schema::audit_events;
    use diesel::prelude::*;

    #[test]
    fn sqlite_gets_the_limit_in_text_and_postgres_bound() {
        let query = || {
            let rows = audit_events::table
                .select(audit_events::id)
                .filter(audit_events::action.eq("a"));
            limited(rows, 51).offset(7)
        };
        // Written into the text unless other tests of this process took
        // every slot first (see `in_text`).
        let sqlite = diesel::debug_query::<diesel::sqlite::Sqlite, _>(&query()).to_string();
        let want = if in_text(51) { "LIMIT 51 OFFSET ?" } else { "LIMIT ? OFFSET ?" };
        assert!(sqlite.contains(want), "{sqlite}");
        let pg = diesel::debug_query::<diesel::pg::Pg, _>(&query()).to_string();
        assert!(pg.contains("LIMIT $2 OFFSET $3"), "{pg}");
        let again = diesel::debug_query::<diesel::sqlite::Sqlite, _>(&limited(query(), 5)).to_string();
        let want = if in_text(5) { "LIMIT 5" } else { "LIMIT ?" };
        assert!(again.contains(want), "{again}");
    }
}

#[cfg(test)]
mod bounded {
    use super::*;

    /// However many limits are asked for, at most `TEXT_LIMITS` are ever
    /// written into text, and each value is written the same way every
    /// time (other tests of this process may have taken some slots).
    #[test]
    fn only_a_bounded_set_of_limits_is_written_into_text() {
        let first: Vec<bool> = (1..=10_000).map(in_text).collect();
        let written = first.iter().filter(|&&t| t).count();
        assert!((1..=TEXT_LIMITS).contains(&written), "{written}");
        let again: Vec<bool> = (1..=10_000).map(in_text).collect();
        assert_eq!(first, again);
        assert!(!in_text(0));
    }
}

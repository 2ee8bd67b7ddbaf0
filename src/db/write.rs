//! The blocking operations on the table: migrate, insert a batch, purge.

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::backend::{with_conn, Conn};
use super::row::{NewEvent, NewFlag};
use super::schema::{audit_event_flags, audit_events};

#[cfg(feature = "sqlite")]
const SQLITE: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
#[cfg(feature = "postgres")]
const POSTGRES: EmbeddedMigrations = embed_migrations!("migrations/postgres");
#[cfg(feature = "mysql")]
const MYSQL: EmbeddedMigrations = embed_migrations!("migrations/mysql");

/// Rows per INSERT statement: far below every backend's bind limit (14
/// columns × 500 = 7 000 binds), and constant so statements stay cached.
const ROWS_PER_STATEMENT: usize = 500;

/// Records deleted per purge transaction: short locks on a big table.
pub(crate) const PURGE_CHUNK: i64 = 1000;

/// Applies the migrations this version has and the database lacks.
pub(crate) fn migrate(conn: &mut Conn) -> Result<(), String> {
    let result = match conn {
        #[cfg(feature = "sqlite")]
        Conn::Sqlite(c) => c.run_pending_migrations(SQLITE).map(drop),
        #[cfg(feature = "postgres")]
        Conn::Postgres(c) => c.run_pending_migrations(POSTGRES).map(drop),
        #[cfg(feature = "mysql")]
        Conn::Mysql(c) => c.run_pending_migrations(MYSQL).map(drop),
    };
    result.map_err(|e| format!("cannot migrate the audit tables: {e}"))
}

/// Inserts the records and their flags in one transaction. Records whose
/// id is already stored are skipped, so a batch retried after an unknown
/// outcome (a connection lost during COMMIT) is stored once.
pub(crate) fn insert(
    conn: &mut Conn,
    events: &[NewEvent<'_>],
    flags: &[NewFlag<'_>],
) -> QueryResult<()> {
    match conn {
        #[cfg(feature = "sqlite")]
        Conn::Sqlite(c) => c.immediate_transaction(|c| {
            for chunk in events.chunks(ROWS_PER_STATEMENT) {
                diesel::insert_or_ignore_into(audit_events::table)
                    .values(chunk)
                    .execute(c)?;
            }
            for chunk in flags.chunks(ROWS_PER_STATEMENT) {
                diesel::insert_or_ignore_into(audit_event_flags::table)
                    .values(chunk)
                    .execute(c)?;
            }
            Ok(())
        }),
        #[cfg(feature = "postgres")]
        Conn::Postgres(c) => c.transaction(|c| {
            for chunk in events.chunks(ROWS_PER_STATEMENT) {
                diesel::insert_into(audit_events::table)
                    .values(chunk)
                    .on_conflict_do_nothing()
                    .execute(c)?;
            }
            for chunk in flags.chunks(ROWS_PER_STATEMENT) {
                diesel::insert_into(audit_event_flags::table)
                    .values(chunk)
                    .on_conflict_do_nothing()
                    .execute(c)?;
            }
            Ok(())
        }),
        #[cfg(feature = "mysql")]
        Conn::Mysql(c) => c.transaction(|c| {
            // No ON CONFLICT DO NOTHING; INSERT IGNORE would also turn data
            // errors into silent truncation. Skip stored ids instead.
            let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
            let stored: Vec<String> = audit_events::table
                .select(audit_events::id)
                .filter(audit_events::id.eq_any(&ids))
                .load(c)?;
            let fresh = |id: &str| !stored.iter().any(|s| s == id);
            let events: Vec<&NewEvent<'_>> = events.iter().filter(|e| fresh(&e.id)).collect();
            let flags: Vec<&NewFlag<'_>> = flags.iter().filter(|f| fresh(f.event_id())).collect();
            for chunk in events.chunks(ROWS_PER_STATEMENT) {
                diesel::insert_into(audit_events::table)
                    .values(chunk.to_vec())
                    .execute(c)?;
            }
            for chunk in flags.chunks(ROWS_PER_STATEMENT) {
                diesel::insert_into(audit_event_flags::table)
                    .values(chunk.to_vec())
                    .execute(c)?;
            }
            Ok(())
        }),
    }
}

/// Deletes up to [`PURGE_CHUNK`] records older than `cutoff_us` (and
/// their flags) in one transaction; returns how many. The append-only
/// triggers let these deletes through and no others.
pub(crate) fn purge_chunk(conn: &mut Conn, cutoff_us: i64) -> QueryResult<usize> {
    with_conn!(conn, c => c.transaction(|c| {
        let expired: Vec<(String, i64)> = audit_events::table
            .select((audit_events::id, audit_events::timestamp_us))
            .filter(audit_events::timestamp_us.lt(cutoff_us))
            .order((audit_events::timestamp_us, audit_events::id))
            .limit(PURGE_CHUNK)
            .load(c)?;
        let Some(&(_, newest)) = expired.last() else {
            return Ok(0);
        };
        let ids: Vec<&str> = expired.iter().map(|(id, _)| id.as_str()).collect();
        diesel::sql_query(allow_purge_sql(c)).execute(c)?;
        diesel::delete(
            audit_event_flags::table
                .filter(audit_event_flags::timestamp_us.le(newest))
                .filter(audit_event_flags::event_id.eq_any(&ids)),
        )
        .execute(c)?;
        let deleted = diesel::delete(audit_events::table.filter(audit_events::id.eq_any(&ids))).execute(c)?;
        if let Some(sql) = forbid_purge_sql(c) {
            diesel::sql_query(sql).execute(c)?;
        }
        Ok(deleted)
    }))
}

/// What opens the append-only triggers for this transaction.
trait PurgeSwitch {
    fn allow(&self) -> &'static str;
    /// What closes them again, where closing is not automatic at commit.
    fn forbid(&self) -> Option<&'static str>;
}

#[cfg(feature = "sqlite")]
impl PurgeSwitch for diesel::SqliteConnection {
    fn allow(&self) -> &'static str {
        "UPDATE audit_purge SET active = 1"
    }
    fn forbid(&self) -> Option<&'static str> {
        Some("UPDATE audit_purge SET active = 0")
    }
}

#[cfg(feature = "postgres")]
impl PurgeSwitch
    for diesel_async::async_connection_wrapper::AsyncConnectionWrapper<
        diesel_async::AsyncPgConnection,
    >
{
    fn allow(&self) -> &'static str {
        // Transaction-local: reset at COMMIT or ROLLBACK.
        "SET LOCAL fabric_audit.purge = 'on'"
    }
    fn forbid(&self) -> Option<&'static str> {
        None
    }
}

#[cfg(feature = "mysql")]
impl PurgeSwitch
    for diesel_async::async_connection_wrapper::AsyncConnectionWrapper<
        diesel_async::AsyncMysqlConnection,
    >
{
    fn allow(&self) -> &'static str {
        "SET @fabric_audit_purge = 1"
    }
    fn forbid(&self) -> Option<&'static str> {
        Some("SET @fabric_audit_purge = 0")
    }
}

fn allow_purge_sql(c: &impl PurgeSwitch) -> &'static str {
    c.allow()
}

fn forbid_purge_sql(c: &impl PurgeSwitch) -> Option<&'static str> {
    c.forbid()
}

/// Whether retrying cannot help: the database refused the data itself.
pub(crate) fn is_data_error(error: &DieselError) -> bool {
    matches!(
        error,
        DieselError::DatabaseError(
            DatabaseErrorKind::NotNullViolation
                | DatabaseErrorKind::CheckViolation
                | DatabaseErrorKind::ForeignKeyViolation,
            _
        ) | DieselError::SerializationError(_)
    )
}

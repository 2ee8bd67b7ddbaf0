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
#[cfg(any(feature = "sqlite", feature = "mysql"))]
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
        Conn::Postgres(c) => c.transaction(|c| postgres::insert(c, events, flags)),
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

/// PostgreSQL's insert: one statement per batch whatever its size, with
/// each column bound as one array and unnested by the server. A multi-row
/// INSERT binds 14 values per row, and encoding the binds is most of the
/// client's cost; this is where COPY's speed comes from too.
#[cfg(feature = "postgres")]
mod postgres {
    use diesel::sql_types::{Array, BigInt, Nullable, Text};

    use super::*;

    const EVENTS: &str = "INSERT INTO audit_events (id, timestamp_us, action, actor_id, \
        actor_type, actor_email, actor_name, actor_flags, resource_type, resource_id, detail, \
        request_id, client_ip, user_agent) \
        SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], \
        $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], \
        $13::text[], $14::text[]) \
        ON CONFLICT DO NOTHING";

    const FLAGS: &str = "INSERT INTO audit_event_flags (flag, timestamp_us, event_id) \
        SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[]) ON CONFLICT DO NOTHING";

    pub(super) fn insert<'e, C>(
        c: &mut C,
        events: &'e [NewEvent<'e>],
        flags: &[NewFlag<'_>],
    ) -> QueryResult<()>
    where
        C: Connection<Backend = diesel::pg::Pg>,
    {
        let text = |f: fn(&'e NewEvent<'e>) -> &'e str| events.iter().map(f).collect::<Vec<_>>();
        let opt =
            |f: fn(&'e NewEvent<'e>) -> Option<&'e str>| events.iter().map(f).collect::<Vec<_>>();
        diesel::sql_query(EVENTS)
            .bind::<Array<Text>, _>(text(|e| &e.id))
            .bind::<Array<BigInt>, _>(events.iter().map(|e| e.timestamp_us).collect::<Vec<_>>())
            .bind::<Array<Text>, _>(text(|e| e.action))
            .bind::<Array<Nullable<Text>>, _>(opt(|e| e.actor_id))
            .bind::<Array<Nullable<Text>>, _>(opt(|e| e.actor_type))
            .bind::<Array<Nullable<Text>>, _>(opt(|e| e.actor_email))
            .bind::<Array<Nullable<Text>>, _>(opt(|e| e.actor_name))
            .bind::<Array<Text>, _>(text(|e| &e.actor_flags))
            .bind::<Array<Nullable<Text>>, _>(opt(|e| e.resource_type))
            .bind::<Array<Nullable<Text>>, _>(opt(|e| e.resource_id))
            .bind::<Array<Text>, _>(text(|e| &e.detail))
            .bind::<Array<Nullable<Text>>, _>(opt(|e| e.request_id))
            .bind::<Array<Nullable<Text>>, _>(opt(|e| e.client_ip))
            .bind::<Array<Nullable<Text>>, _>(opt(|e| e.user_agent))
            .execute(c)?;
        if !flags.is_empty() {
            diesel::sql_query(FLAGS)
                .bind::<Array<Text>, _>(flags.iter().map(|f| f.flag).collect::<Vec<_>>())
                .bind::<Array<BigInt>, _>(flags.iter().map(|f| f.timestamp_us).collect::<Vec<_>>())
                .bind::<Array<Text>, _>(flags.iter().map(|f| f.event_id).collect::<Vec<_>>())
                .execute(c)?;
        }
        Ok(())
    }
}

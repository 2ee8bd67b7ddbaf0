//! The blocking operations on the table: migrate, insert a batch, purge.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use diesel::prelude::*;
use diesel::result::Error as DieselError;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::backend::{with_conn, Conn};
use super::classify;
use super::row::{EventRow, NewEvent, NewFlag, NewRecord};
use super::schema::{audit_event_flags, audit_events};

#[cfg(feature = "sqlite")]
const SQLITE: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
#[cfg(feature = "postgres")]
const POSTGRES: EmbeddedMigrations = embed_migrations!("migrations/postgres");
#[cfg(feature = "mysql")]
const MYSQL: EmbeddedMigrations = embed_migrations!("migrations/mysql");

/// Rows per INSERT statement (and ids per `IN` list): far below every
/// backend's bind limit (14 columns × 500 = 7 000 binds), and constant so
/// statements stay cached.
const ROWS_PER_STATEMENT: usize = 500;

/// Records deleted per purge transaction: short locks on a big table.
pub(crate) const PURGE_CHUNK: i64 = 1000;

/// Applies the migrations this version has and the database lacks.
///
/// # Errors
///
/// The migration harness's error, unwrapped: the callers say which
/// backend and what for, and chain this as the cause.
///
/// On SQLite and PostgreSQL the pending migrations run in one transaction
/// (their DDL is transactional): a reader never sees the tables half made,
/// such as `audit_events` without the columns a later migration adds (the
/// query API answered 500 to a request that came during the migrations of
/// a fresh database). MySQL commits each DDL statement on its own.
pub(crate) fn migrate(conn: &mut Conn) -> diesel::migration::Result<()> {
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    type Failure = Box<dyn std::error::Error + Send + Sync>;
    let result = match conn {
        #[cfg(feature = "sqlite")]
        Conn::Sqlite(c) => {
            c.transaction::<_, Failure, _>(|c| c.run_pending_migrations(SQLITE).map(drop))
        }
        #[cfg(feature = "postgres")]
        Conn::Postgres(c) => {
            c.transaction::<_, Failure, _>(|c| c.run_pending_migrations(POSTGRES).map(drop))
        }
        #[cfg(feature = "mysql")]
        Conn::Mysql(c) => c.run_pending_migrations(MYSQL).map(drop),
    };
    result
}

/// Whether the connection answers a statement.
pub(crate) fn probe(conn: &mut Conn) -> QueryResult<()> {
    with_conn!(conn, c => diesel::sql_query("SELECT 1").execute(c).map(drop))
}

/// What [`insert`] compares of the records whose id is already stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Check {
    /// Nothing: a stored id is this record, written before (a batch retried
    /// after a lost COMMIT). The sink's case: ids are made fresh.
    Ids,
    /// The content: a stored id with other content is a conflict. An
    /// import's case: files can be edited.
    Content,
}

/// What [`insert`] did with a batch.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Records written now.
    pub(crate) stored: usize,
    /// Records already stored (by id; with the same content under
    /// [`Check::Content`]).
    pub(crate) present: usize,
    /// Ids stored with other content (looked at under [`Check::Content`]
    /// only), or given twice in the batch with other content: not stored.
    pub(crate) conflicting: Vec<String>,
    /// Ids the database refused for their data (each alone, while the
    /// connection answered other statements).
    pub(crate) refused: Vec<String>,
    /// Why the first refused record was refused.
    pub(crate) first_error: Option<DieselError>,
}

impl Outcome {
    fn add(&mut self, other: Outcome) {
        self.stored += other.stored;
        self.present += other.present;
        self.conflicting.extend(other.conflicting);
        self.refused.extend(other.refused);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Inserts the records whose id is not stored yet, with their flags (only
/// theirs: a skipped record's flags are the stored record's business).
///
/// A batch is one transaction. If the database refuses it for a reason not
/// known to be transient (see [`classify`]), it is split in halves, each
/// written in its own transaction, down to single records: a record
/// refused alone while the connection still answers is refused for its
/// data and reported in [`Outcome::refused`], and the others are written.
/// Retrying parts is safe because stored ids are skipped.
///
/// # Errors
///
/// Only faults worth retrying the whole batch for: the connection, a
/// deadlock, a timeout, a full disk, a missing privilege or table.
pub(crate) fn insert(
    conn: &mut Conn,
    records: &[NewRecord<'_>],
    check: Check,
) -> QueryResult<Outcome> {
    let mut outcome = Outcome::default();
    // One row per id: the later copies are present or conflicting.
    let mut first: HashMap<&str, usize> = HashMap::with_capacity(records.len());
    let mut unique: Vec<&NewRecord<'_>> = Vec::with_capacity(records.len());
    for record in records {
        match first.entry(&record.event.id) {
            Entry::Vacant(slot) => {
                slot.insert(unique.len());
                unique.push(record);
            }
            Entry::Occupied(at) if unique[*at.get()].event == record.event => outcome.present += 1,
            Entry::Occupied(_) => outcome.conflicting.push(record.event.id.clone()),
        }
    }
    outcome.add(bisect(conn, &unique, check)?);
    Ok(outcome)
}

fn bisect(conn: &mut Conn, records: &[&NewRecord<'_>], check: Check) -> QueryResult<Outcome> {
    if records.is_empty() {
        return Ok(Outcome::default());
    }
    match insert_part(conn, records, check) {
        Ok(outcome) => Ok(outcome),
        Err(error) if classify::is_transient(&error) => Err(error),
        Err(error) if records.len() == 1 => match probe(conn) {
            Ok(()) => Ok(Outcome {
                refused: vec![records[0].event.id.clone()],
                first_error: Some(error),
                ..Outcome::default()
            }),
            Err(_) => Err(error),
        },
        Err(_) => {
            let (left, right) = records.split_at(records.len() / 2);
            let mut outcome = bisect(conn, left, check)?;
            outcome.add(bisect(conn, right, check)?);
            Ok(outcome)
        }
    }
}

/// Skips the stored ids, inserts the rest with their flags, and sorts the
/// stored ones into present and conflicting: SQLite and MySQL, which have
/// no portable "insert unless stored, and say which".
#[cfg(any(feature = "sqlite", feature = "mysql"))]
macro_rules! skip_stored_and_insert {
    ($c:ident, $records:expr, $check:expr) => {{
        let records: &[&NewRecord<'_>] = $records;
        let ids: Vec<&str> = records.iter().map(|r| r.event.id.as_str()).collect();
        let mut stored: HashSet<String> = HashSet::new();
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            stored.extend(
                audit_events::table
                    .select(audit_events::id)
                    .filter(audit_events::id.eq_any(chunk))
                    .load::<String>($c)?,
            );
        }
        let (present, fresh): (Vec<&NewRecord<'_>>, Vec<&NewRecord<'_>>) =
            records.iter().partition(|r| stored.contains(&r.event.id));
        for chunk in fresh.chunks(ROWS_PER_STATEMENT) {
            let rows: Vec<&NewEvent<'_>> = chunk.iter().map(|r| &r.event).collect();
            diesel::insert_into(audit_events::table)
                .values(rows)
                .execute($c)?;
        }
        let flags: Vec<NewFlag<'_>> = fresh.iter().flat_map(|r| r.flag_rows()).collect();
        for chunk in flags.chunks(ROWS_PER_STATEMENT) {
            diesel::insert_into(audit_event_flags::table)
                .values(chunk)
                .execute($c)?;
        }
        let mut outcome = Outcome {
            stored: fresh.len(),
            ..Outcome::default()
        };
        sort_present!($c, &present, $check, outcome);
        Ok(outcome)
    }};
}

/// Counts the records whose id was stored before as present, or, under
/// [`Check::Content`], compares them with the stored rows.
macro_rules! sort_present {
    ($c:ident, $present:expr, $check:expr, $outcome:ident) => {{
        let present: &[&NewRecord<'_>] = $present;
        match $check {
            Check::Ids => $outcome.present += present.len(),
            Check::Content => {
                let mut rows: HashMap<String, EventRow> = HashMap::new();
                let ids: Vec<&str> = present.iter().map(|r| r.event.id.as_str()).collect();
                for chunk in ids.chunks(ROWS_PER_STATEMENT) {
                    let loaded = audit_events::table
                        .select(EventRow::as_select())
                        .filter(audit_events::id.eq_any(chunk))
                        .load::<EventRow>($c)?;
                    rows.extend(loaded.into_iter().map(|r| (r.id().to_owned(), r)));
                }
                for record in present {
                    match rows.get(&record.event.id) {
                        Some(row) if row.stores(&record.event) => $outcome.present += 1,
                        _ => $outcome.conflicting.push(record.event.id.clone()),
                    }
                }
            }
        }
    }};
}

/// One transaction: the part of a batch [`bisect`] is trying.
fn insert_part(conn: &mut Conn, records: &[&NewRecord<'_>], check: Check) -> QueryResult<Outcome> {
    match conn {
        #[cfg(feature = "sqlite")]
        Conn::Sqlite(c) => c.immediate_transaction(|c| skip_stored_and_insert!(c, records, check)),
        #[cfg(feature = "postgres")]
        Conn::Postgres(c) => c.transaction(|c| postgres::insert(c, records, check)),
        // No ON CONFLICT DO NOTHING; INSERT IGNORE would also turn data
        // errors into silent truncation. Skip stored ids instead.
        #[cfg(feature = "mysql")]
        Conn::Mysql(c) => c.transaction(|c| skip_stored_and_insert!(c, records, check)),
    }
}

/// The time of the newest stored record, if any.
pub(crate) fn newest(conn: &mut Conn) -> QueryResult<Option<i64>> {
    with_conn!(conn, c => audit_events::table
        .select(diesel::dsl::max(audit_events::timestamp_us))
        .first::<Option<i64>>(c))
}

/// Which expired records a purge chunk deletes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Expired<'a> {
    /// Records before the cutoff, except those of these chains (which are
    /// cut at their checkpoints instead), oldest first.
    ByTime { keep_chains: &'a [String] },
    /// The chain's records before `below_seq` (and the cutoff), in `seq`
    /// order.
    Chain { chain: &'a str, below_seq: i64 },
}

/// The body of [`purge_chunk`], inside its transaction.
macro_rules! delete_expired {
    ($c:ident, $cutoff_us:expr, $which:expr) => {{
        use audit_events::dsl as e;
        let mut query = e::audit_events
            .select((e::id, e::timestamp_us))
            .filter(e::timestamp_us.lt($cutoff_us))
            .limit(PURGE_CHUNK)
            .into_boxed();
        query = match $which {
            Expired::ByTime { keep_chains } if keep_chains.is_empty() => {
                query.order((e::timestamp_us, e::id))
            }
            Expired::ByTime { keep_chains } => query
                .filter(
                    e::chain
                        .is_null()
                        .or(e::chain.assume_not_null().ne_all(keep_chains)),
                )
                .order((e::timestamp_us, e::id)),
            Expired::Chain { chain, below_seq } => query
                .filter(e::chain.eq(chain))
                .filter(e::seq.lt(below_seq))
                .order((e::seq, e::id)),
        };
        let expired: Vec<(String, i64)> = query.load($c)?;
        match expired.iter().map(|&(_, t)| t).max() {
            None => Ok(0),
            Some(newest) => {
                let ids: Vec<&str> = expired.iter().map(|(id, _)| id.as_str()).collect();
                diesel::delete(
                    audit_event_flags::table
                        .filter(audit_event_flags::timestamp_us.le(newest))
                        .filter(audit_event_flags::event_id.eq_any(&ids)),
                )
                .execute($c)?;
                diesel::delete(audit_events::table.filter(audit_events::id.eq_any(&ids)))
                    .execute($c)
            }
        }
    }};
}

/// Deletes up to [`PURGE_CHUNK`] records older than `cutoff_us` (and
/// their flags) in one transaction; returns how many. The append-only
/// triggers let these deletes through and no others: on SQLite because the
/// purge's connection has the function `fabric_audit_purge` registered
/// (see [`Backend::connect`](super::backend::Backend::connect)), on
/// PostgreSQL and MySQL because the transaction or session says so.
pub(crate) fn purge_chunk(conn: &mut Conn, cutoff_us: i64, which: Expired<'_>) -> QueryResult<usize> {
    match conn {
        #[cfg(feature = "sqlite")]
        Conn::Sqlite(c) => c.immediate_transaction(|c| delete_expired!(c, cutoff_us, which)),
        #[cfg(feature = "postgres")]
        Conn::Postgres(c) => c.transaction(|c| {
            // Transaction-local: reset at COMMIT or ROLLBACK.
            diesel::sql_query("SET LOCAL fabric_audit.purge = 'on'").execute(c)?;
            delete_expired!(c, cutoff_us, which)
        }),
        #[cfg(feature = "mysql")]
        Conn::Mysql(c) => c.transaction(|c| {
            diesel::sql_query("SET @fabric_audit_purge = 1").execute(c)?;
            let deleted = (|| delete_expired!(c, cutoff_us, which))();
            diesel::sql_query("SET @fabric_audit_purge = 0").execute(c)?;
            deleted
        }),
    }
}

/// The chains that have checkpoint records: the purge cuts them at a
/// checkpoint, so that what remains verifies.
pub(crate) fn checkpointed_chains(conn: &mut Conn) -> QueryResult<Vec<String>> {
    use audit_events::dsl as e;
    with_conn!(conn, c => e::audit_events
        .filter(e::action.eq(crate::verify::CHECKPOINT_ACTION))
        .filter(e::chain.is_not_null())
        .select(e::chain.assume_not_null())
        .distinct()
        .load::<String>(c))
}

/// Where the purge cuts `chain`: its newest checkpoint record before
/// `cutoff_us` (its `seq` and `detail`), if any.
pub(crate) fn chain_cut(
    conn: &mut Conn,
    chain: &str,
    cutoff_us: i64,
) -> QueryResult<Option<(i64, String)>> {
    use audit_events::dsl as e;
    with_conn!(conn, c => e::audit_events
        .filter(e::chain.eq(chain))
        .filter(e::action.eq(crate::verify::CHECKPOINT_ACTION))
        .filter(e::timestamp_us.lt(cutoff_us))
        .filter(e::seq.is_not_null())
        .order(e::seq.desc())
        .select((e::seq.assume_not_null(), e::detail))
        .first::<(i64, String)>(c)
        .optional())
}

/// How many of `chain`'s records before `below_seq` and the cutoff are
/// still stored.
pub(crate) fn count_below(
    conn: &mut Conn,
    chain: &str,
    below_seq: i64,
    cutoff_us: i64,
) -> QueryResult<i64> {
    use audit_events::dsl as e;
    with_conn!(conn, c => e::audit_events
        .filter(e::chain.eq(chain))
        .filter(e::seq.lt(below_seq))
        .filter(e::timestamp_us.lt(cutoff_us))
        .count()
        .get_result::<i64>(c))
}

/// A row of `audit_purges`.
#[derive(Debug, Insertable, Queryable, Selectable)]
#[diesel(table_name = super::schema::audit_purges)]
pub(crate) struct PurgeRow {
    pub(crate) chain: String,
    pub(crate) below_seq: i64,
    pub(crate) head: String,
    pub(crate) cutoff_us: i64,
    pub(crate) purged_at_us: i64,
    pub(crate) records: i64,
    pub(crate) note: Option<String>,
}

/// Stores the statement of a purge, unless one for the same cut is there
/// (a purge cut short and run again).
pub(crate) fn state_purge(conn: &mut Conn, row: &PurgeRow) -> QueryResult<()> {
    use super::schema::audit_purges::dsl as p;
    let stated: i64 = with_conn!(conn, c => p::audit_purges
        .filter(p::chain.eq(&row.chain))
        .filter(p::below_seq.eq(row.below_seq))
        .count()
        .get_result(c))?;
    if stated == 0 {
        with_conn!(conn, c => diesel::insert_into(p::audit_purges).values(row).execute(c))?;
    }
    Ok(())
}

/// The `seq` and `hash` of `chain`'s record with the highest `seq`: where
/// a sink's chain continues (an index range of `audit_events_chain`).
pub(crate) fn chain_head(conn: &mut Conn, chain: &str) -> QueryResult<Option<(i64, Option<String>)>> {
    use audit_events::dsl as e;
    let chain = super::stored::short(chain);
    with_conn!(conn, c => e::audit_events
        .filter(e::chain.eq(chain.as_ref()))
        .filter(e::seq.is_not_null())
        .order(e::seq.desc())
        .select((e::seq.assume_not_null(), e::hash))
        .first::<(i64, Option<String>)>(c)
        .optional())
}

/// PostgreSQL's insert: one statement per batch whatever its size, with
/// each column bound as one array and unnested by the server. A multi-row
/// INSERT binds 14 values per row, and encoding the binds is most of the
/// client's cost; this is where COPY's speed comes from too.
#[cfg(feature = "postgres")]
mod postgres {
    use std::borrow::Cow;

    use diesel::sql_types::{Array, BigInt, Nullable, Text};

    use super::*;

    /// PostgreSQL's array type for a column of this Diesel type.
    macro_rules! pg_array {
        (Nullable<$inner:ident>) => {
            pg_array!($inner)
        };
        (Text) => {
            "text[]"
        };
        (BigInt) => {
            "bigint[]"
        };
    }

    /// Defines [`events_statement`] and [`insert_events`] from the list of
    /// fields (`record::fields`): a column and an array bind per field.
    macro_rules! define_unnest {
        (; $({ $key:ident, $column:ident, ($($sql:tt)*), ($($read:tt)*), ($($write:tt)*),
                $role:ident ( $($arg:tt)* ) })*) => {
            /// The columns of `audit_events` with their arrays' types.
            const COLUMNS: &[(&str, &str)] = &[$((stringify!($column), pg_array!($($sql)*))),*];

            /// Binds each column of `events` as one array and runs the
            /// statement; returns the ids inserted.
            fn insert_events<C>(c: &mut C, events: &[&NewEvent<'_>]) -> QueryResult<Vec<Inserted>>
            where
                C: diesel::connection::LoadConnection<Backend = diesel::pg::Pg>,
            {
                diesel::sql_query(events_statement())
                    $(.bind::<Array<$($sql)*>, _>(
                        events.iter().map(|e| Bind::bind(&e.$column)).collect::<Vec<_>>()
                    ))*
                    .load(c)
            }
        };
    }

    crate::record::fields::with_record_fields!(define_unnest!());

    /// `INSERT INTO audit_events (…) SELECT * FROM UNNEST($1::text[], …)
    /// ON CONFLICT DO NOTHING RETURNING id`, over [`COLUMNS`]: built once,
    /// from the constant list of columns only (never from input).
    fn events_statement() -> &'static str {
        static STATEMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        STATEMENT.get_or_init(|| {
            let names: Vec<&str> = COLUMNS.iter().map(|(name, _)| *name).collect();
            let arrays: Vec<String> = COLUMNS
                .iter()
                .enumerate()
                .map(|(i, (_, array))| format!("${}::{array}", i + 1))
                .collect();
            format!(
                "INSERT INTO audit_events ({}) SELECT * FROM UNNEST({}) \
                 ON CONFLICT DO NOTHING RETURNING id",
                names.join(", "),
                arrays.join(", ")
            )
        })
    }

    /// A column's value as one element of its bind array.
    trait Bind {
        type Out<'b>
        where
            Self: 'b;
        fn bind(&self) -> Self::Out<'_>;
    }

    impl Bind for String {
        type Out<'b> = &'b str;
        fn bind(&self) -> &str {
            self
        }
    }

    impl Bind for i64 {
        type Out<'b> = i64;
        fn bind(&self) -> i64 {
            *self
        }
    }

    impl Bind for Option<i64> {
        type Out<'b> = Option<i64>;
        fn bind(&self) -> Option<i64> {
            *self
        }
    }

    impl Bind for Cow<'_, str> {
        type Out<'b>
            = &'b str
        where
            Self: 'b;
        fn bind(&self) -> &str {
            self
        }
    }

    impl Bind for Option<Cow<'_, str>> {
        type Out<'b>
            = Option<&'b str>
        where
            Self: 'b;
        fn bind(&self) -> Option<&str> {
            self.as_deref()
        }
    }

    const FLAGS: &str = "INSERT INTO audit_event_flags (flag, timestamp_us, event_id) \
        SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[]) ON CONFLICT DO NOTHING";

    #[derive(QueryableByName)]
    struct Inserted {
        #[diesel(sql_type = Text)]
        id: String,
    }

    /// Inserts the records whose id is not stored; RETURNING says which
    /// were, so that only their flags are added.
    pub(super) fn insert<C>(
        c: &mut C,
        records: &[&NewRecord<'_>],
        check: Check,
    ) -> QueryResult<Outcome>
    where
        C: diesel::connection::LoadConnection<Backend = diesel::pg::Pg>,
    {
        let events: Vec<&NewEvent<'_>> = records.iter().map(|r| &r.event).collect();
        let inserted = insert_events(c, &events)?;
        let inserted: HashSet<String> = inserted.into_iter().map(|r| r.id).collect();
        let (fresh, present): (Vec<&NewRecord<'_>>, Vec<&NewRecord<'_>>) =
            records.iter().partition(|r| inserted.contains(&r.event.id));
        let flags: Vec<NewFlag<'_>> = fresh.iter().flat_map(|r| r.flag_rows()).collect();
        if !flags.is_empty() {
            diesel::sql_query(FLAGS)
                .bind::<Array<Text>, _>(flags.iter().map(|f| f.flag).collect::<Vec<_>>())
                .bind::<Array<BigInt>, _>(flags.iter().map(|f| f.timestamp_us).collect::<Vec<_>>())
                .bind::<Array<Text>, _>(flags.iter().map(|f| f.event_id).collect::<Vec<_>>())
                .execute(c)?;
        }
        let mut outcome = Outcome {
            stored: fresh.len(),
            ..Outcome::default()
        };
        sort_present!(c, &present, check, outcome);
        Ok(outcome)
    }

    #[cfg(test)]
    mod tests {
        /// The statement names every column of the list, in order, each
        /// unnested from an array of its type: for today's list, exactly
        /// the statement that was written by hand before the list existed.
        #[test]
        fn the_unnest_statement_lists_every_column() {
            let columns = crate::db::schema::EVENT_COLUMNS;
            let arrays: Vec<String> = columns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let kind = if matches!(*c, "timestamp_us" | "seq") {
                        "bigint"
                    } else {
                        "text"
                    };
                    format!("${}::{kind}[]", i + 1)
                })
                .collect();
            let want = format!(
                "INSERT INTO audit_events ({}) SELECT * FROM UNNEST({}) \
                 ON CONFLICT DO NOTHING RETURNING id",
                columns.join(", "),
                arrays.join(", ")
            );
            assert_eq!(super::events_statement(), want);
            assert!(want.starts_with(
                "INSERT INTO audit_events (id, timestamp_us, action, actor_id, actor_type, \
                 actor_email, actor_name, actor_flags, resource_type, resource_id, detail, \
                 request_id, client_ip, user_agent"
            ));
            assert!(want.contains("UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[]"));
        }
    }
}

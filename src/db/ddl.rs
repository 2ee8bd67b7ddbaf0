//! The schema as SQL: the embedded migrations' statements per backend, for
//! applications whose own migration tool owns the schema, and the check
//! that finds what a database lacks when the sink does not migrate it.

use diesel::prelude::*;

use super::backend::{with_conn, Backend, Conn};
use super::schema::EVENT_COLUMNS;

/// One migration: its diesel version (the directory's date and number,
/// digits only) and its `up.sql`.
#[derive(Debug)]
pub(crate) struct Step {
    pub(crate) dir: &'static str,
    pub(crate) up: &'static str,
}

impl Step {
    /// The version diesel records for this migration.
    pub(crate) fn version(&self) -> String {
        let stamp = self.dir.split('_').next().unwrap_or_default();
        stamp.chars().filter(char::is_ascii_digit).collect()
    }
}

macro_rules! steps {
    ($backend:literal: $($dir:literal),+ $(,)?) => {
        &[$(Step {
            dir: $dir,
            up: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/", $backend, "/", $dir, "/up.sql")),
        }),+]
    };
}

#[cfg(feature = "sqlite")]
pub(crate) const SQLITE: &[Step] = steps!("sqlite":
    "2026-11-27-000001_create_audit_events",
    "2026-11-28-000001_close_append_only_gaps",
    "2026-12-02-000001_add_hash_chains",
    "2026-12-02-000002_index_actor_actions",
    "2026-12-02-000003_add_purge_statements",
);
#[cfg(feature = "postgres")]
pub(crate) const POSTGRES: &[Step] = steps!("postgres":
    "2026-11-27-000001_create_audit_events",
    "2026-12-02-000001_add_hash_chains",
    "2026-12-02-000002_index_actor_actions",
    "2026-12-02-000003_add_purge_statements",
);
#[cfg(feature = "mysql")]
pub(crate) const MYSQL: &[Step] = steps!("mysql":
    "2026-11-27-000001_create_audit_events",
    "2026-12-02-000001_add_hash_chains",
    "2026-12-02-000002_index_actor_actions",
    "2026-12-02-000003_add_purge_statements",
    "2026-12-02-000004_cover_action_in_time_index",
);

/// The columns the sink writes and the store reads, per table.
const COLUMNS: &[(&str, &[&str])] = &[
    ("audit_events", EVENT_COLUMNS),
    ("audit_event_flags", &["flag", "timestamp_us", "event_id"]),
];
// `audit_purges` is not among them: only the purge and `verify` use it,
// and a role granted the two tables above (to read and append) writes on.

/// The migrations of this connection's backend.
pub(crate) fn steps(conn: &Conn) -> &'static [Step] {
    match conn {
        #[cfg(feature = "sqlite")]
        Conn::Sqlite(_) => SQLITE,
        #[cfg(feature = "postgres")]
        Conn::Postgres(_) => POSTGRES,
        #[cfg(feature = "mysql")]
        Conn::Mysql(_) => MYSQL,
    }
}

/// The migrations of a backend.
pub(crate) fn steps_of(backend: &Backend) -> &'static [Step] {
    match backend {
        #[cfg(feature = "sqlite")]
        Backend::Sqlite(_) => SQLITE,
        #[cfg(feature = "postgres")]
        Backend::Postgres(_) => POSTGRES,
        #[cfg(feature = "mysql")]
        Backend::Mysql(_) => MYSQL,
    }
}

/// The whole schema of a backend as one SQL script, with a header per
/// migration: what `fabric-audit migrate --print-sql` prints.
pub(crate) fn script(steps: &[Step]) -> String {
    let mut out = String::new();
    for step in steps {
        out.push_str(&format!(
            "-- fabric-audit migration {} (diesel version {})\n",
            step.dir,
            step.version()
        ));
        out.push_str(step.up.trim_end());
        out.push_str("\n\n");
    }
    out
}

#[derive(QueryableByName)]
struct Version {
    #[diesel(sql_type = diesel::sql_types::Text)]
    version: String,
}

/// What the database lacks for the sink and the store, each thing named:
/// a table, a column, or a migration that diesel's table says is not
/// applied (when the schema was made by these migrations: it records at
/// least one of them). Empty when the schema is complete.
pub(crate) fn missing(conn: &mut Conn) -> Vec<String> {
    let mut missing = Vec::new();
    for (table, columns) in COLUMNS {
        // Identifiers from the constant list above, never from input.
        let all = format!("SELECT {} FROM {table} WHERE 1 = 0", columns.join(", "));
        if with_conn!(conn, c => diesel::sql_query(&all).execute(c)).is_ok() {
            continue;
        }
        let whole = format!("SELECT 1 FROM {table} WHERE 1 = 0");
        if with_conn!(conn, c => diesel::sql_query(&whole).execute(c)).is_err() {
            missing.push(format!("table `{table}`"));
            continue;
        }
        for column in *columns {
            let one = format!("SELECT {column} FROM {table} WHERE 1 = 0");
            if with_conn!(conn, c => diesel::sql_query(&one).execute(c)).is_err() {
                missing.push(format!("column `{table}.{column}`"));
            }
        }
    }
    let applied: Option<Vec<Version>> = with_conn!(conn, c => diesel::sql_query(
        "SELECT version FROM __diesel_schema_migrations"
    )
    .load(c)
    .ok());
    // Where these migrations made the schema (diesel's table records one of
    // them), every one must be there; a schema made by another tool leaves
    // no trace there, and its columns are what counts.
    let applied = applied.unwrap_or_default();
    let is_applied = |step: &Step| applied.iter().any(|v| v.version == step.version());
    let steps = steps(conn);
    if steps.iter().any(is_applied) {
        for step in steps.iter().filter(|s| !is_applied(s)) {
            missing.push(format!("migration `{}`", step.dir));
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded list and the migrations directory never drift apart.
    #[test]
    fn every_migration_directory_is_listed_in_order() {
        let lists: &[(&str, &[Step])] = &[
            #[cfg(feature = "sqlite")]
            ("sqlite", SQLITE),
            #[cfg(feature = "postgres")]
            ("postgres", POSTGRES),
            #[cfg(feature = "mysql")]
            ("mysql", MYSQL),
        ];
        for (backend, steps) in lists {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(backend);
            let mut on_disk: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            on_disk.sort();
            let listed: Vec<&str> = steps.iter().map(|s| s.dir).collect();
            assert_eq!(listed, on_disk, "{backend}");
        }
    }

    /// `audit_events` as the migrations of a backend make it: each column
    /// with its definition, from `CREATE TABLE` and later `ADD COLUMN`s.
    fn migrated_columns(steps: &[Step]) -> Vec<(String, String)> {
        let mut columns = Vec::new();
        for step in steps {
            let mut lines = step.up.lines();
            if lines.any(|l| l.trim_start().starts_with("CREATE TABLE audit_events (")) {
                for line in lines.by_ref() {
                    let line = line.trim();
                    if line.starts_with(')') {
                        break;
                    }
                    let name = line.split_whitespace().next().unwrap_or_default();
                    if !["INDEX", "PRIMARY", "UNIQUE", "--", ""].contains(&name) {
                        columns.push((name.to_owned(), line.to_uppercase()));
                    }
                }
            }
            for line in step.up.lines() {
                let upper = line.to_uppercase();
                if let Some(at) = upper.find("ADD COLUMN ") {
                    let rest = &line[at + "ADD COLUMN ".len()..];
                    let name = rest.split_whitespace().next().unwrap_or_default();
                    columns.push((name.to_owned(), upper.clone()));
                }
            }
        }
        columns
    }

    /// The migrations make the columns of the list of fields, `NOT NULL`
    /// where the field is required, and on MySQL as wide as its width.
    #[test]
    fn migrations_make_the_columns_of_the_list() {
        use super::super::schema::EVENT_COLUMNS_REQUIRED;
        use crate::record::fields::Width;
        use crate::record::Field;

        let lists: &[(&str, &[Step])] = &[
            #[cfg(feature = "sqlite")]
            ("sqlite", SQLITE),
            #[cfg(feature = "postgres")]
            ("postgres", POSTGRES),
            #[cfg(feature = "mysql")]
            ("mysql", MYSQL),
        ];
        for (backend, steps) in lists {
            let columns = migrated_columns(steps);
            let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, EVENT_COLUMNS, "{backend}");
            for ((name, definition), required) in columns.iter().zip(EVENT_COLUMNS_REQUIRED) {
                assert_eq!(
                    definition.contains("NOT NULL"),
                    *required,
                    "{backend}: {name}: {definition}"
                );
            }
            if *backend == "mysql" {
                for field in Field::ALL {
                    let (_, definition) = columns.iter().find(|(n, _)| n == field.name()).unwrap();
                    let want = match field.width() {
                        Width::Short => "VARCHAR(255)",
                        Width::Long => " TEXT",
                    };
                    assert!(definition.contains(want), "mysql: {definition}");
                }
            }
        }
    }

    #[test]
    fn the_column_parser_sees_added_columns_and_skips_indexes() {
        let steps = [
            Step {
                dir: "1_a",
                up: "CREATE TABLE audit_events (\n    id TEXT NOT NULL,\n    INDEX x (id)\n);",
            },
            Step {
                dir: "2_b",
                up: "ALTER TABLE audit_events ADD COLUMN session_id TEXT;",
            },
        ];
        let names: Vec<String> = migrated_columns(&steps).into_iter().map(|c| c.0).collect();
        assert_eq!(names, ["id", "session_id"]);
    }

    #[test]
    fn versions_are_what_diesel_records() {
        let step = Step {
            dir: "2026-11-27-000001_create_audit_events",
            up: "",
        };
        assert_eq!(step.version(), "20261127000001");
    }
}

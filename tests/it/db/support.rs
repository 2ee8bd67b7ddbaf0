//! The database tests' plumbing: a fresh database per test on every
//! backend (a SQLite file, a scratch database on the PostgreSQL and
//! MariaDB servers), the macros that run a test on each, and helpers that
//! write through the pipeline and read every page back.

use std::process::Command;

use fabric_audit::{AuditLayer, AuditQuery, AuditRecord, DatabaseSink, Page, Store};

use crate::support::{pipeline, Collect};

/// Runs one SQL statement as the test's superuser; the error's text.
pub(crate) type RawSql = Box<dyn Fn(&str) -> Result<(), String>>;

/// What a query should match, judged on the records themselves.
pub(crate) type Matches = Box<dyn Fn(&AuditRecord) -> bool>;

/// A fresh, empty database; dropped (for servers) at the end of the test.
pub(crate) struct TestDb {
    pub(crate) url: String,
    pub(crate) sql: RawSql,
    cleanup: Option<Box<dyn FnOnce()>>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(cleanup) = self.cleanup.take() {
            cleanup();
        }
    }
}

pub(crate) fn unique_name() -> String {
    format!("fa_{}", uuid::Uuid::new_v4().simple())
}

fn try_run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn run(program: &str, args: &[&str]) {
    if let Err(e) = try_run(program, args) {
        panic!("{program} {args:?}: {e}");
    }
}

pub(crate) fn sqlite() -> TestDb {
    use diesel::{Connection, RunQueryDsl};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db").display().to_string();
    TestDb {
        url: format!("sqlite://{path}"),
        sql: Box::new(move |sql| {
            let mut conn = diesel::SqliteConnection::establish(&path).map_err(|e| e.to_string())?;
            // The sink's purge thread may hold the write lock for a moment.
            diesel::sql_query("PRAGMA busy_timeout = 5000")
                .execute(&mut conn)
                .map_err(|e| e.to_string())?;
            diesel::sql_query(sql)
                .execute(&mut conn)
                .map(drop)
                .map_err(|e| e.to_string())
        }),
        cleanup: None,
        _dir: Some(dir),
    }
}

/// A new database on the PostgreSQL server at `FABRIC_AUDIT_PG_HOST`
/// (default 127.0.0.1:5432, trust auth, user postgres).
pub(crate) fn postgres() -> TestDb {
    let host = std::env::var("FABRIC_AUDIT_PG_HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let name = unique_name();
    run(
        "psql",
        &[
            "-h",
            &host,
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            &format!("CREATE DATABASE {name}"),
        ],
    );
    let drop_sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    let (h, h2, db) = (host.clone(), host.clone(), name.clone());
    TestDb {
        url: format!("postgres://postgres@{host}:5432/{name}"),
        sql: Box::new(move |sql| {
            try_run(
                "psql",
                &[
                    "-h",
                    &h2,
                    "-U",
                    "postgres",
                    "-d",
                    &db,
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-c",
                    sql,
                ],
            )
        }),
        cleanup: Some(Box::new(move || {
            run(
                "psql",
                &[
                    "-h", &h, "-U", "postgres", "-d", "postgres", "-c", &drop_sql,
                ],
            )
        })),
        _dir: None,
    }
}

/// A new database on the MariaDB server at `FABRIC_AUDIT_MYSQL_HOST`
/// (default 127.0.0.1:3306, root with no password).
pub(crate) fn mysql() -> TestDb {
    let host = std::env::var("FABRIC_AUDIT_MYSQL_HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let name = unique_name();
    run(
        "mariadb",
        &[
            "-h",
            &host,
            "-u",
            "root",
            "-e",
            &format!("CREATE DATABASE {name}"),
        ],
    );
    let drop_sql = format!("DROP DATABASE IF EXISTS {name}");
    let (h, h2, db) = (host.clone(), host.clone(), name.clone());
    TestDb {
        url: format!("mysql://root@{host}:3306/{name}"),
        sql: Box::new(move |sql| {
            try_run("mariadb", &["-h", &h2, "-u", "root", "-D", &db, "-e", sql])
        }),
        cleanup: Some(Box::new(move || {
            run("mariadb", &["-h", &h, "-u", "root", "-e", &drop_sql])
        })),
        _dir: None,
    }
}

/// Runs each test against each backend.
macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $test() { super::$test(crate::db::support::sqlite()).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread")]
            #[ignore = "needs PostgreSQL (see .ci/run)"]
            async fn $test() { super::$test(crate::db::support::postgres()).await })*
        }
        mod mysql {
            $(#[tokio::test(flavor = "multi_thread")]
            #[ignore = "needs MariaDB (see .ci/run)"]
            async fn $test() { super::$test(crate::db::support::mysql()).await })*
        }
    };
}
pub(crate) use on_every_backend;

/// The server tests that need a network between sink and database: each
/// gets the database and the port its server listens on.
macro_rules! on_every_server {
    ($($test:ident),* $(,)?) => {
        mod postgres_network {
            $(#[tokio::test(flavor = "multi_thread")]
            #[ignore = "needs PostgreSQL (see .ci/run)"]
            async fn $test() { super::$test(crate::db::support::postgres(), 5432).await })*
        }
        mod mysql_network {
            $(#[tokio::test(flavor = "multi_thread")]
            #[ignore = "needs MariaDB (see .ci/run)"]
            async fn $test() { super::$test(crate::db::support::mysql(), 3306).await })*
        }
    };
}
pub(crate) use on_every_server;

pub(crate) async fn sink(url: &str) -> DatabaseSink {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || DatabaseSink::builder(url).build().unwrap())
        .await
        .unwrap()
}

/// Writes records through the whole pipeline into the database and a
/// collecting sink; returns what was written (the model).
pub(crate) async fn emit_through_pipeline(
    url: &str,
    emit: impl FnOnce() + Send + 'static,
) -> Vec<AuditRecord> {
    let model = Collect::default();
    let (dispatch, audit) = pipeline(
        AuditLayer::builder()
            .sink("database", sink(url).await)
            .sink("model", model.clone()),
    );
    tokio::task::spawn_blocking(move || tracing::dispatcher::with_default(&dispatch, emit))
        .await
        .unwrap();
    let report = audit.shutdown().await;
    assert!(report.is_lossless(), "{report}");
    model.records()
}

/// Polls `done` until it holds; fails the test after 30 s.
pub(crate) async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    mut done: impl FnMut() -> F,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Reads every page of `query`.
pub(crate) async fn walk(store: &Store, query: AuditQuery) -> Vec<AuditRecord> {
    let mut all = Vec::new();
    let mut query = query;
    loop {
        let Page { items, next_cursor } = store.query(&query).await.unwrap();
        all.extend(items);
        match next_cursor {
            Some(cursor) => query = query.after(cursor),
            None => return all,
        }
    }
}

pub(crate) fn newest_first(mut records: Vec<AuditRecord>) -> Vec<AuditRecord> {
    records.sort_by_key(|r| std::cmp::Reverse((r.timestamp(), r.id())));
    records
}

/// The records' JSON objects without their place in a chain (`chain`,
/// `seq`, `hash`), which the database sink adds: what was emitted.
pub(crate) fn unlinked(records: &[AuditRecord]) -> Vec<serde_json::Value> {
    records
        .iter()
        .map(|r| {
            let mut value = serde_json::to_value(r).unwrap();
            for key in ["chain", "seq", "hash"] {
                value.as_object_mut().unwrap().remove(key);
            }
            value
        })
        .collect()
}

pub(crate) fn ids(records: &[AuditRecord]) -> Vec<uuid::Uuid> {
    records.iter().map(AuditRecord::id).collect()
}

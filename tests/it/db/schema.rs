//! An application that owns its schema: migrations left to it, the schema
//! checked and what is missing named, tables made by another tool, and a
//! fresh database that the query API answers without a 500.

use fabric_audit::{audit, AuditLayer, AuditQuery, DatabaseSink, Store};

use super::{on_every_backend, walk, TestDb};
use crate::support::pipeline;

on_every_backend!(
    a_fresh_database_answers_an_empty_page_not_an_error,
    the_sink_makes_its_tables_at_start_up_not_at_the_first_record,
    with_migrations_left_to_the_app_the_sink_says_what_is_missing,
    tables_made_by_another_tool_are_used_as_they_are,
);

async fn build(url: &str, apply: bool) -> fabric_audit::Result<DatabaseSink> {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || DatabaseSink::builder(url).apply_migrations(apply).build())
        .await
        .unwrap()
}

async fn a_fresh_database_answers_an_empty_page_not_an_error(db: TestDb) {
    let store = Store::connect(&db.url).await.unwrap();
    let page = store
        .query(&AuditQuery::new().action("post."))
        .await
        .unwrap();
    assert!(page.items.is_empty() && page.next_cursor.is_none());
    assert_eq!(store.get(uuid::Uuid::now_v7()).await.unwrap(), None);
    let flagged = store
        .query(&AuditQuery::new().has_flag("admin"))
        .await
        .unwrap();
    assert!(flagged.items.is_empty());
}

async fn the_sink_makes_its_tables_at_start_up_not_at_the_first_record(db: TestDb) {
    let (_dispatch, audit) = pipeline(AuditLayer::builder().database(&db.url));
    // Nothing emitted: an empty flush only waits for the worker, which
    // opens its sink before it takes anything from its queue.
    audit.flush().await.unwrap();
    (db.sql)("SELECT id FROM audit_events WHERE 1 = 0").expect("the table exists");
    let report = audit.shutdown().await;
    assert_eq!(report.sink("database").unwrap().errors(), 0, "{report}");
}

async fn with_migrations_left_to_the_app_the_sink_says_what_is_missing(db: TestDb) {
    let err = build(&db.url, false).await.unwrap_err().to_string();
    for missing in [
        "table `audit_events`",
        "table `audit_event_flags`",
        "--print-sql",
    ] {
        assert!(err.contains(missing), "{err}");
    }
    // The app's tool runs the published SQL, less one column.
    let url = db.url.clone();
    let sql = fabric_audit::schema_sql(&url).unwrap();
    assert!(sql.contains("CREATE TABLE audit_events"), "{sql}");
    tokio::task::spawn_blocking(move || fabric_audit::migrate(&url).unwrap())
        .await
        .unwrap();
    (db.sql)("DROP TABLE __diesel_schema_migrations").unwrap();
    (db.sql)("ALTER TABLE audit_event_flags RENAME TO audit_event_flags_old").unwrap();
    let err = build(&db.url, false).await.unwrap_err().to_string();
    assert!(err.contains("table `audit_event_flags`"), "{err}");
    assert!(!err.contains("table `audit_events`"), "{err}");
    (db.sql)("ALTER TABLE audit_event_flags_old RENAME TO audit_event_flags").unwrap();
    // Complete: the sink writes without migrating.
    let sink = build(&db.url, false).await.unwrap();
    let (dispatch, audit) = pipeline(AuditLayer::builder().sink("database", sink));
    tracing::dispatcher::with_default(&dispatch, || audit!(action = "app.owned"));
    let report = audit.shutdown().await;
    let last_error = report.sink("database").and_then(|s| s.last_error());
    assert!(report.is_lossless(), "{report}: {last_error:?}");
    let store = Store::connect(&db.url).await.unwrap();
    assert_eq!(walk(&store, AuditQuery::new()).await.len(), 1);
}

async fn tables_made_by_another_tool_are_used_as_they_are(db: TestDb) {
    // The schema is complete, but diesel's table does not know it: the
    // migrations fail with "already exists", which is no reason to stop.
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || fabric_audit::migrate(&url).unwrap())
        .await
        .unwrap();
    (db.sql)("DROP TABLE __diesel_schema_migrations").unwrap();
    let sink = build(&db.url, true).await.unwrap();
    let (dispatch, audit) = pipeline(AuditLayer::builder().sink("database", sink));
    tracing::dispatcher::with_default(&dispatch, || audit!(action = "other.tool"));
    let report = audit.shutdown().await;
    let last_error = report.sink("database").and_then(|s| s.last_error());
    assert!(report.is_lossless(), "{report}: {last_error:?}");
    let store = Store::connect(&db.url).await.unwrap();
    assert_eq!(walk(&store, AuditQuery::new()).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_migration_missing_from_our_own_schema_is_named() {
    let db = super::sqlite();
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || fabric_audit::migrate(&url).unwrap())
        .await
        .unwrap();
    (db.sql)("DELETE FROM __diesel_schema_migrations WHERE version = '20261128000001'").unwrap();
    let err = build(&db.url, false).await.unwrap_err().to_string();
    assert!(
        err.contains("migration `2026-11-28-000001_close_append_only_gaps`"),
        "{err}"
    );
    assert!(!err.contains("table"), "{err}");
}

//! Faults between the application and a database server, through the
//! in-test proxy: connections cut, and servers that stop answering.

use std::time::{Duration, Instant};

use fabric_audit::{audit, AuditLayer, AuditQuery, Store};

use super::{on_every_server, sink, TestDb};
use crate::proxy::Proxy;
use crate::support::pipeline;

on_every_server!(
    a_connection_lost_during_the_migration_is_replaced,
    the_store_answers_unavailable_in_time_when_the_database_is_cut_or_silent,
    a_sink_facing_a_silent_server_gives_up_at_its_deadline,
    a_server_that_stops_answering_mid_stream_holds_shutdown_no_longer_than_its_deadline,
);

/// Emits `n` records on a blocking thread.
async fn emit(dispatch: &tracing::Dispatch, n: u32) {
    let dispatch = dispatch.clone();
    tokio::task::spawn_blocking(move || {
        tracing::dispatcher::with_default(&dispatch, || {
            (0..n).for_each(|i| audit!(action = "net.event", i = i))
        })
    })
    .await
    .unwrap();
}

async fn a_connection_lost_during_the_migration_is_replaced(db: TestDb, port: u16) {
    let proxy = Proxy::start(([127, 0, 0, 1], port).into());
    // The connection is made, then breaks as the migrations start.
    proxy.cut_on(b"__diesel_schema_migrations");
    let (dispatch, audit) = pipeline(
        AuditLayer::builder()
            .database(proxy.url(&db.url, port))
            .max_backoff(Duration::from_millis(50))
            .shutdown_timeout(Duration::from_secs(10)),
    );
    emit(&dispatch, 10).await;
    let err = audit.flush().await.unwrap_err();
    assert_eq!(err.unflushed_sinks(), ["database"]);
    proxy.restore();
    let report = audit.shutdown().await;
    assert!(report.is_lossless(), "{report}");
    let store = Store::connect(&db.url).await.unwrap();
    assert_eq!(
        store.query(&AuditQuery::new()).await.unwrap().items.len(),
        10
    );
}

async fn the_store_answers_unavailable_in_time_when_the_database_is_cut_or_silent(
    db: TestDb,
    port: u16,
) {
    let mut database = sink(&db.url).await;
    let record = std::sync::Arc::new(fabric_audit::AuditRecord::builder("kept").build());
    let records = vec![record.clone()];
    tokio::task::spawn_blocking(move || {
        fabric_audit::Sink::write(&mut database, &fabric_audit::Batch::new(&records)).unwrap()
    })
    .await
    .unwrap();
    let proxy = Proxy::start(([127, 0, 0, 1], port).into());
    let timeout = Duration::from_secs(1);
    let store = Store::builder(proxy.url(&db.url, port))
        .timeout(timeout)
        .connect()
        .await
        .unwrap();
    assert_eq!(
        store.get(record.id()).await.unwrap().as_ref(),
        Some(&*record)
    );

    for (fault, start) in [
        ("cut", Proxy::cut as fn(&Proxy)),
        ("black hole", Proxy::black_hole),
    ] {
        start(&proxy);
        let asked = Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(20), store.get(record.id()))
            .await
            .unwrap_or_else(|_| panic!("{fault}: the store hung"));
        let err = answer.expect_err(fault);
        assert!(err.is_unavailable(), "{fault}: {err}");
        assert!(
            asked.elapsed() < timeout * 3,
            "{fault}: {:?}",
            asked.elapsed()
        );
        let asked = Instant::now();
        let err = store.query(&AuditQuery::new()).await.unwrap_err();
        assert!(err.is_unavailable(), "{fault}: {err}");
        assert!(
            asked.elapsed() < timeout * 3,
            "{fault}: {:?}",
            asked.elapsed()
        );

        proxy.restore();
        let page = store.query(&AuditQuery::new()).await.unwrap();
        assert_eq!(page.items.len(), 1, "{fault}: the store recovers");
    }
}

async fn a_sink_facing_a_silent_server_gives_up_at_its_deadline(db: TestDb, port: u16) {
    let proxy = Proxy::start(([127, 0, 0, 1], port).into());
    proxy.black_hole();
    let (dispatch, audit) = pipeline(
        AuditLayer::builder()
            .database(proxy.url(&db.url, port))
            .max_backoff(Duration::from_millis(50))
            .shutdown_timeout(Duration::from_secs(1)),
    );
    emit(&dispatch, 3).await;
    let started = Instant::now();
    // The sink is stuck logging in (it would give up after 10 s): shutdown
    // abandons it at its deadline, one second, and a short grace.
    let report = tokio::time::timeout(Duration::from_secs(60), audit.shutdown())
        .await
        .expect("shutdown hung on a server that never answers");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let sink = report.sink("database").unwrap();
    assert_eq!(
        (sink.written(), sink.failed(), sink.pending()),
        (0, 3, 0),
        "{report}"
    );
}

async fn a_server_that_stops_answering_mid_stream_holds_shutdown_no_longer_than_its_deadline(
    db: TestDb,
    port: u16,
) {
    let proxy = Proxy::start(([127, 0, 0, 1], port).into());
    let (dispatch, audit) = pipeline(
        AuditLayer::builder()
            .sink("database", sink(&proxy.url(&db.url, port)).await)
            .max_backoff(Duration::from_millis(50))
            .shutdown_timeout(Duration::from_secs(1)),
    );
    emit(&dispatch, 20).await;
    audit.flush().await.unwrap();
    // The connection stays open; what the sink sends is swallowed and
    // nothing comes back: its INSERT waits for an answer that never comes.
    proxy.black_hole();
    emit(&dispatch, 30).await;
    let started = Instant::now();
    let report = tokio::time::timeout(Duration::from_secs(60), audit.shutdown())
        .await
        .expect("shutdown hung on a statement that is never answered");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let sink = report.sink("database").unwrap();
    assert_eq!(
        (sink.written(), sink.failed(), sink.pending()),
        (20, 30, 0),
        "{report}"
    );
    // What the report says is what the table holds.
    proxy.restore();
    let store = Store::connect(&db.url).await.unwrap();
    let page = store
        .query(&AuditQuery::new().limit(100).unwrap())
        .await
        .unwrap();
    assert_eq!(page.items.len(), 20);
}

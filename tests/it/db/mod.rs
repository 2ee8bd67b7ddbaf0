//! The database sink and the store: SQLite always; PostgreSQL and MariaDB
//! against the real servers (`#[ignore]`d, run by `.ci/run`).

use std::sync::Arc;

use chrono::{Duration, Utc};
use fabric_audit::{audit, AuditLayer, AuditQuery, AuditRecord, Batch, DatabaseSink, Sink, Store};

use crate::support::{pipeline, User};

mod answers;
mod count;
mod errors;
mod hostile;
mod import;
mod integrity;
mod network;
mod paging;
mod prefix;
mod retention;
mod schema;
pub(crate) mod support;

use self::support::{emit_through_pipeline, Matches};
pub(crate) use self::support::{
    ids, mysql, newest_first, on_every_backend, on_every_server, postgres, sink, sqlite,
    unique_name, unlinked, wait_until, walk, TestDb,
};

on_every_server!(an_outage_in_the_middle_of_a_stream_loses_nothing);

on_every_backend!(
    every_filter_gives_what_the_records_say,
    a_pagination_walk_sees_every_record_once_while_records_arrive,
    a_retried_batch_is_stored_once,
    retention_purges_old_records_and_their_flags,
    values_with_wildcards_quotes_and_unicode_match_literally,
    the_database_refuses_updates_and_deletes,
    common_and_rare_action_prefixes_give_the_same_answers,
);

async fn every_filter_gives_what_the_records_say(db: TestDb) {
    let alice = User::alice();
    let model = emit_through_pipeline(&db.url, move || {
        for i in 0..60u32 {
            let action =
                ["post.created", "post.deleted", "postal.sent", "user.login"][i as usize % 4];
            let span = tracing::info_span!("request", request_id = %format!("r{i}"));
            let _e = span.enter();
            if i % 3 == 0 {
                audit!(
                    action = action,
                    actor = &alice,
                    resource_type = "post",
                    resource_id = i % 5,
                    n = i
                );
            } else {
                audit!(
                    action = action,
                    "actor.id" = format!("svc-{}", i % 2),
                    "actor.type" = "service",
                    resource_type = "user",
                    resource_id = i % 5,
                    n = i
                );
            }
        }
    })
    .await;
    assert_eq!(model.len(), 60);
    let store = Store::connect(&db.url).await.unwrap();
    let mid = newest_first(model.clone())[30].timestamp();

    let cases: Vec<(AuditQuery, Matches)> = vec![
        (AuditQuery::new(), Box::new(|_| true)),
        (
            AuditQuery::new().actor_id("u-alice"),
            Box::new(|r| r.actor_id() == Some("u-alice")),
        ),
        (
            AuditQuery::new().actor_type("service"),
            Box::new(|r| r.actor_type() == Some("service")),
        ),
        (
            AuditQuery::new().action("post.created"),
            Box::new(|r| r.action() == "post.created"),
        ),
        (
            AuditQuery::new().action("post."),
            Box::new(|r| r.action().starts_with("post.")),
        ),
        (AuditQuery::new().action("post"), Box::new(|_| false)),
        (
            AuditQuery::new().resource_type("post"),
            Box::new(|r| r.resource_type() == Some("post")),
        ),
        (
            AuditQuery::new().resource_id("3"),
            Box::new(|r| r.resource_id() == Some("3")),
        ),
        (
            AuditQuery::new().from(mid),
            Box::new(move |r| r.timestamp() >= mid),
        ),
        (
            AuditQuery::new().to(mid),
            Box::new(move |r| r.timestamp() < mid),
        ),
        (
            AuditQuery::new().has_flag("admin"),
            Box::new(|r| r.actor_flags().any(|f| f == "admin")),
        ),
        (AuditQuery::new().has_flag("billing"), Box::new(|_| false)),
        (
            AuditQuery::new()
                .action("post.")
                .actor_type("service")
                .resource_id("1")
                .from(mid),
            Box::new(move |r| {
                r.action().starts_with("post.")
                    && r.actor_type() == Some("service")
                    && r.resource_id() == Some("1")
                    && r.timestamp() >= mid
            }),
        ),
        (
            AuditQuery::new()
                .has_flag("admin")
                .resource_type("post")
                .to(mid),
            Box::new(move |r| {
                r.actor_flags().any(|f| f == "admin")
                    && r.resource_type() == Some("post")
                    && r.timestamp() < mid
            }),
        ),
    ];
    for (query, matches) in cases {
        let want = newest_first(model.iter().filter(|r| matches(r)).cloned().collect());
        let got = walk(&store, query.clone().limit(7).unwrap()).await;
        assert_eq!(ids(&got), ids(&want), "{query:?}");
        assert_eq!(
            unlinked(&got),
            unlinked(&want),
            "records read back equal those written: {query:?}"
        );
    }
    let one = &model[17];
    let back = store.get(one.id()).await.unwrap().unwrap();
    assert_eq!(
        unlinked(std::slice::from_ref(&back)),
        unlinked(std::slice::from_ref(one))
    );
    assert_eq!(back.chain().map(|c| c.ends_with("/database")), Some(true));
    assert_eq!(store.get(uuid::Uuid::now_v7()).await.unwrap(), None);
}

async fn a_pagination_walk_sees_every_record_once_while_records_arrive(db: TestDb) {
    let sink = sink(&db.url).await;
    let (dispatch, audit) = pipeline(AuditLayer::builder().sink("database", sink));
    let emit = |n: usize, tag: &'static str| {
        let dispatch = dispatch.clone();
        move || {
            tracing::dispatcher::with_default(&dispatch, || {
                (0..n).for_each(|i| audit!(action = "walk.step", tag, i = i))
            })
        }
    };
    tokio::task::spawn_blocking(emit(250, "before"))
        .await
        .unwrap();
    audit.flush().await.unwrap();
    let store = Store::connect(&db.url).await.unwrap();
    let mut seen = Vec::new();
    let mut query = AuditQuery::new().limit(9).unwrap();
    loop {
        let page = store.query(&query).await.unwrap();
        seen.extend(page.items);
        // Newer records arrive between pages; the walk goes back in time.
        tokio::task::spawn_blocking(emit(5, "during"))
            .await
            .unwrap();
        audit.flush().await.unwrap();
        match page.next_cursor {
            Some(cursor) => query = query.after(cursor),
            None => break,
        }
    }
    audit.shutdown().await;
    assert_eq!(
        seen.len(),
        250,
        "every record before the walk, once, and none after"
    );
    assert!(seen
        .iter()
        .all(|r| r.detail_value("tag").unwrap().to_json() == "before"));
    let mut unique = ids(&seen);
    unique.dedup();
    assert_eq!(unique.len(), 250);
    assert_eq!(seen, newest_first(seen.clone()), "newest first");
}

async fn a_retried_batch_is_stored_once(db: TestDb) {
    let mut sink = sink(&db.url).await;
    let records: Vec<Arc<AuditRecord>> = (0..120)
        .map(|i| {
            Arc::new(
                AuditRecord::builder("retry.me")
                    .actor_flags(["x"])
                    .detail("i", i)
                    .build(),
            )
        })
        .collect();
    tokio::task::spawn_blocking(move || {
        let batch = Batch::new(&records);
        sink.write(&batch).unwrap();
        // As after a connection lost during COMMIT: the same batch again.
        sink.write(&batch).unwrap();
    })
    .await
    .unwrap();
    let store = Store::connect(&db.url).await.unwrap();
    let all = walk(&store, AuditQuery::new().limit(1000).unwrap()).await;
    assert_eq!(all.len(), 120);
    assert_eq!(
        walk(&store, AuditQuery::new().has_flag("x")).await.len(),
        120
    );
}

async fn retention_purges_old_records_and_their_flags(db: TestDb) {
    let now = Utc::now();
    let records: Vec<Arc<AuditRecord>> = (0..2500)
        .map(|i| {
            let age = if i % 2 == 0 {
                Duration::days(45)
            } else {
                Duration::days(5)
            };
            let b = AuditRecord::builder("old.or.new")
                .actor_flags(["f"])
                .timestamp(now - age + Duration::seconds(i));
            Arc::new(b.build())
        })
        .collect();
    let url = db.url.clone();
    let purging = tokio::task::spawn_blocking(move || {
        let mut keep_all = DatabaseSink::builder(&url).keep_forever().build().unwrap();
        keep_all.write(&Batch::new(&records)).unwrap();
        // A new sink purges at start-up, in chunks of a thousand, on a
        // thread of its own.
        DatabaseSink::builder(&url)
            .retention_days(30)
            .build()
            .unwrap()
    })
    .await
    .unwrap();
    let store = Store::connect(&db.url).await.unwrap();
    let query = AuditQuery::new().limit(1000).unwrap();
    wait_until("the start-up purge", || async {
        walk(&store, query.clone()).await.len() == 1250
    })
    .await;
    drop(purging);
    let left = walk(&store, AuditQuery::new().limit(1000).unwrap()).await;
    assert_eq!(left.len(), 1250);
    assert!(left
        .iter()
        .all(|r| r.timestamp() > now - Duration::days(30)));
    assert_eq!(
        walk(&store, AuditQuery::new().has_flag("f").limit(1000).unwrap())
            .await
            .len(),
        1250
    );
}

async fn values_with_wildcards_quotes_and_unicode_match_literally(db: TestDb) {
    let tricky = [
        "a%b",
        "a_b",
        "axb",
        "o'brien",
        "\"q\"",
        "zoë ✓",
        "back\\slash",
        "%",
        "_",
    ];
    let model = emit_through_pipeline(&db.url, move || {
        for (i, value) in tricky.iter().enumerate() {
            audit!(
                action = format!("we%ird_{i}.x"),
                "actor.id" = *value,
                resource_id = *value
            );
        }
        audit!(action = "we%ird_.y");
    })
    .await;
    let store = Store::connect(&db.url).await.unwrap();
    for value in tricky {
        let got = walk(&store, AuditQuery::new().actor_id(value)).await;
        assert_eq!(got.len(), 1, "{value:?}");
        assert_eq!(got[0].actor_id(), Some(value));
        let got = walk(&store, AuditQuery::new().resource_id(value)).await;
        assert_eq!(got.len(), 1, "{value:?}");
    }
    // `%` and `_` in a prefix are literal: only `we%ird_.y` starts with `we%ird_.`.
    let got = walk(&store, AuditQuery::new().action("we%ird_.")).await;
    assert_eq!(
        got.iter().map(|r| r.action()).collect::<Vec<_>>(),
        ["we%ird_.y"]
    );
    assert_eq!(model.len(), tricky.len() + 1);
}

async fn the_database_refuses_updates_and_deletes(db: TestDb) {
    emit_through_pipeline(&db.url, || audit!(action = "keep.me", "actor.flags" = "f")).await;
    let statements = [
        "UPDATE audit_events SET action = 'changed'",
        "DELETE FROM audit_events",
        "UPDATE audit_event_flags SET flag = 'changed'",
        "DELETE FROM audit_event_flags",
    ];
    for sql in statements {
        let err = (db.sql)(sql).expect_err(sql);
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    if db.url.starts_with("postgres") {
        let err = (db.sql)("TRUNCATE audit_events").expect_err("TRUNCATE");
        assert!(err.contains("append-only"), "{err}");
    }
    let store = Store::connect(&db.url).await.unwrap();
    let left = walk(&store, AuditQuery::new().has_flag("f")).await;
    assert_eq!(
        left.iter().map(|r| r.action()).collect::<Vec<_>>(),
        ["keep.me"]
    );
}

async fn an_outage_in_the_middle_of_a_stream_loses_nothing(db: TestDb, port: u16) {
    let proxy = crate::proxy::Proxy::start(([127, 0, 0, 1], port).into());
    let mut through_proxy = db
        .url
        .replace(&format!(":{port}/"), &format!(":{}/", proxy.port()));
    assert_ne!(through_proxy, db.url);
    if through_proxy.starts_with("mysql") {
        // Else the driver moves to the server's Unix socket, past the proxy.
        through_proxy.push_str("?prefer_socket=false");
    }
    let sink = sink(&through_proxy).await;
    let (dispatch, audit) = pipeline(
        AuditLayer::builder()
            .sink("database", sink)
            .max_backoff(std::time::Duration::from_millis(50)),
    );
    let emit = |from: u32, to: u32| {
        let dispatch = dispatch.clone();
        move || {
            tracing::dispatcher::with_default(&dispatch, || {
                (from..to).for_each(|i| audit!(action = "stream.event", i = i))
            })
        }
    };
    tokio::task::spawn_blocking(emit(0, 200)).await.unwrap();
    audit.flush().await.unwrap();

    proxy.cut();
    tokio::task::spawn_blocking(emit(200, 500)).await.unwrap();
    // Returns once the sink has failed to write: the records wait in its queue.
    let err = audit.flush().await.unwrap_err();
    assert_eq!(err.unflushed_sinks(), ["database"]);
    let during = audit.report();
    assert!(during.sink("database").unwrap().errors() >= 1, "{during}");

    proxy.restore();
    tokio::task::spawn_blocking(emit(500, 600)).await.unwrap();
    let report = audit.shutdown().await;
    let sink = report.sink("database").unwrap();
    assert_eq!(
        (sink.written(), sink.dropped(), sink.failed()),
        (600, 0, 0),
        "{report}"
    );

    let store = Store::connect(&db.url).await.unwrap();
    let stored = walk(&store, AuditQuery::new().limit(1000).unwrap()).await;
    let mut numbers: Vec<i64> = stored
        .iter()
        .map(|r| match r.detail_value("i") {
            Some(fabric_audit::DetailValue::I64(i)) => i,
            other => panic!("{other:?}"),
        })
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (0..600).collect::<Vec<_>>(), "every record once");
}

async fn common_and_rare_action_prefixes_give_the_same_answers(db: TestDb) {
    // Over 2 000 records under `bulk.`: the store walks the time index for
    // it, and reads the action index for the rare `bulkhead.` (see
    // `Store::is_common_prefix`); both must answer exactly.
    let records: Vec<Arc<AuditRecord>> = (0..2300)
        .map(|i| {
            let action = match i % 100 {
                0 => "bulkhead.sealed",
                1 => "bulk",
                n if n % 2 == 0 => "bulk.x",
                _ => "bulk.y",
            };
            Arc::new(
                AuditRecord::builder(action)
                    .timestamp(Utc::now() - Duration::seconds(i))
                    .build(),
            )
        })
        .collect();
    let model: Vec<AuditRecord> = records.iter().map(|r| (**r).clone()).collect();
    let mut sink = sink(&db.url).await;
    tokio::task::spawn_blocking(move || sink.write(&Batch::new(&records)).unwrap())
        .await
        .unwrap();
    let store = Store::connect(&db.url).await.unwrap();
    for prefix in ["bulk.", "bulkhead.", "bulk.y."] {
        let want = newest_first(
            model
                .iter()
                .filter(|r| r.action().starts_with(prefix))
                .cloned()
                .collect(),
        );
        let got = walk(&store, AuditQuery::new().action(prefix).limit(500).unwrap()).await;
        assert_eq!(ids(&got), ids(&want), "{prefix}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_missing_at_start_up_gets_the_records_once_it_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("not-yet");
    let url = format!("sqlite://{}", data.join("audit.db").display());
    // `database(url)` neither blocks nor fails: the sink connects later.
    let (dispatch, audit) = pipeline(
        AuditLayer::builder()
            .database(&url)
            .max_backoff(std::time::Duration::from_millis(20)),
    );
    tokio::task::spawn_blocking(move || {
        tracing::dispatcher::with_default(&dispatch, || {
            (0..10).for_each(|i| audit!(action = "early.bird", i = i))
        })
    })
    .await
    .unwrap();
    let err = audit.flush().await.unwrap_err();
    assert_eq!(err.unflushed_sinks(), ["database"]);
    std::fs::create_dir_all(&data).unwrap();
    let report = audit.shutdown().await;
    assert!(report.is_lossless(), "{report}");
    let store = Store::connect(&url).await.unwrap();
    assert_eq!(walk(&store, AuditQuery::new()).await.len(), 10);
}

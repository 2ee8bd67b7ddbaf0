//! Values a database refuses as given, and filters made of them: stored in
//! a form every backend takes, found by the same filters, never a wedged
//! sink or a 5xx.

use std::sync::Arc;

use fabric_audit::{audit, AuditLayer, AuditQuery, AuditRecord, Batch, DetailValue, Sink, Store};

use super::{on_every_backend, sink, walk, TestDb};
use crate::support::pipeline;

on_every_backend!(
    hostile_values_are_stored_and_read_back_with_what_was_done,
    one_refused_record_among_twenty_thousand_never_wedges_the_sink,
    hostile_filters_answer_normally,
    a_detail_over_eight_mib_is_cut_and_big_batches_fit,
);

/// What `detail["fabric_audit.stored_as"]` holds, as JSON text.
fn marker(record: &AuditRecord) -> Option<String> {
    record
        .detail_value("fabric_audit.stored_as")
        .map(|v| v.to_json().to_string())
}

fn hostile_records() -> Vec<AuditRecord> {
    let long = "é".repeat(1500); // 3 000 bytes: over PostgreSQL's B-tree entry
    vec![
        AuditRecord::builder("hostile.nul")
            .actor_id("u\0one")
            .resource("post", "a\0b")
            .actor_flags(["fl\0ag", "plain"])
            .user_agent("agent\0\\0")
            .detail("k", "v\0")
            .build(),
        AuditRecord::builder("hostile.long")
            .user_agent("u".repeat(70_000))
            .actor_id(&long)
            .resource(&long, "x".repeat(300))
            .actor_flags([long.clone()])
            .build(),
        AuditRecord::builder(format!("{long}.action"))
            .actor_name("ctl\u{1}\u{7f}")
            .detail("big", "b".repeat(1 << 20))
            .build(),
    ]
}

async fn hostile_values_are_stored_and_read_back_with_what_was_done(db: TestDb) {
    let records: Vec<Arc<AuditRecord>> = hostile_records().into_iter().map(Arc::new).collect();
    let mut sink = sink(&db.url).await;
    let written = records.clone();
    tokio::task::spawn_blocking(move || sink.write(&Batch::new(&written)))
        .await
        .unwrap()
        .expect("every value is made storable before the insert");
    let store = Store::connect(&db.url).await.unwrap();
    let get = |i: usize| {
        let store = store.clone();
        let id = records[i].id();
        async move { store.get(id).await.unwrap().unwrap() }
    };

    // NUL bytes are escaped in storage and read back as they were.
    let nul = get(0).await;
    assert_eq!(nul, *records[0], "escapes are undone on reading");
    assert_eq!(marker(&nul), None);

    // Texts longer than their columns are cut, and the record says so.
    let long = get(1).await;
    assert_eq!(long.user_agent().map(str::len), Some(65_535));
    assert_eq!(long.actor_id().map(|s| s.chars().count()), Some(255));
    assert_eq!(long.resource_id(), Some(&*"x".repeat(255)));
    assert_eq!(
        long.actor_flags().collect::<Vec<_>>(),
        records[1].actor_flags().collect::<Vec<_>>(),
        "the flags' JSON keeps a 3 000-byte flag"
    );
    assert_eq!(
        marker(&long).as_deref(),
        Some(
            r#"{"actor_id":{"truncated_from_bytes":3000},"resource_id":{"truncated_from_bytes":300},"resource_type":{"truncated_from_bytes":3000},"user_agent":{"truncated_from_bytes":70000}}"#
        )
    );
    let other = get(2).await;
    assert_eq!(other.action().chars().count(), 255);
    assert_eq!(other.actor_name(), Some("ctl\u{1}\u{7f}"));
    assert!(matches!(other.detail_value("big"), Some(DetailValue::Str(s)) if s.len() == 1 << 20));

    // The same filters find them.
    let found = |q: AuditQuery| {
        let store = store.clone();
        async move {
            walk(&store, q)
                .await
                .iter()
                .map(AuditRecord::id)
                .collect::<Vec<_>>()
        }
    };
    let (id0, id1, id2) = (records[0].id(), records[1].id(), records[2].id());
    assert_eq!(found(AuditQuery::new().actor_id("u\0one")).await, [id0]);
    assert_eq!(found(AuditQuery::new().resource_id("a\0b")).await, [id0]);
    assert_eq!(found(AuditQuery::new().has_flag("fl\0ag")).await, [id0]);
    assert_eq!(found(AuditQuery::new().has_flag("plain")).await, [id0]);
    assert_eq!(
        found(AuditQuery::new().actor_id("é".repeat(1500))).await,
        [id1]
    );
    assert_eq!(
        found(AuditQuery::new().has_flag("é".repeat(1500))).await,
        [id1]
    );
    assert_eq!(
        found(AuditQuery::new().resource_type("é".repeat(1500))).await,
        [id1]
    );
    assert_eq!(
        found(AuditQuery::new().action(records[2].action())).await,
        [id2]
    );
    assert_eq!(
        found(AuditQuery::new().action(format!("{}.", "é".repeat(1500)))).await,
        [id2]
    );
}

/// Installs a trigger that refuses the action `poison.refused`: a record
/// the database refuses whatever the sink does.
fn refuse_poison(db: &TestDb) {
    let sql = if db.url.starts_with("postgres") {
        "CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN \
         IF NEW.action = 'poison.refused' THEN RAISE EXCEPTION 'poison refused'; END IF; \
         RETURN NEW; END $$ LANGUAGE plpgsql; \
         CREATE TRIGGER poison BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION poison()"
    } else if db.url.starts_with("mysql") {
        "DELIMITER //\nCREATE TRIGGER poison BEFORE INSERT ON audit_events FOR EACH ROW BEGIN \
         IF NEW.action = 'poison.refused' THEN \
         SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'poison refused'; END IF; END//\nDELIMITER ;"
    } else {
        "CREATE TRIGGER poison BEFORE INSERT ON audit_events \
         WHEN NEW.action = 'poison.refused' BEGIN SELECT RAISE(ABORT, 'poison refused'); END"
    };
    (db.sql)(sql).unwrap();
}

async fn one_refused_record_among_twenty_thousand_never_wedges_the_sink(db: TestDb) {
    let database = sink(&db.url).await; // migrates
    refuse_poison(&db);
    let (dispatch, audit) = pipeline(AuditLayer::builder().sink("database", database));
    let hostile = hostile_records();
    let stored_hostile = hostile.len() as u64;
    for n in 0..4 {
        let dispatch = dispatch.clone();
        let hostile = if n == 0 { hostile.clone() } else { Vec::new() };
        tokio::task::spawn_blocking(move || {
            tracing::dispatcher::with_default(&dispatch, || {
                for record in &hostile {
                    audit!(
                        action = record.action(),
                        "actor.id" = record.actor_id().unwrap_or(""),
                        resource_id = record.resource_id().unwrap_or(""),
                        user_agent = record.user_agent().unwrap_or("")
                    );
                }
                if n == 0 {
                    audit!(action = "poison.refused");
                }
                (0..5_000).for_each(|i| audit!(action = "ordinary.event", n = n, i = i));
            })
        })
        .await
        .unwrap();
        // A wedged sink fails this: its queue never drains (records would
        // be waiting). The flush names the one refused record, each time.
        let err = audit.flush().await.unwrap_err();
        assert_eq!(err.unflushed_records(), 1, "{err}");
        assert!(!err.to_string().contains("waiting"), "{err}");
    }
    let report = audit.shutdown().await;
    let sink = report.sink("database").unwrap();
    assert_eq!(
        (sink.written(), sink.failed(), sink.dropped()),
        (20_000 + stored_hostile, 1, 0),
        "{report}"
    );
    assert!(
        sink.last_error()
            .is_some_and(|e| e.contains("poison refused")),
        "{report}"
    );
    let store = Store::connect(&db.url).await.unwrap();
    let ordinary = walk(
        &store,
        AuditQuery::new()
            .action("ordinary.event")
            .limit(1000)
            .unwrap(),
    )
    .await;
    assert_eq!(ordinary.len(), 20_000);
    assert!(walk(&store, AuditQuery::new().action("poison.refused"))
        .await
        .is_empty());
    assert_eq!(
        walk(&store, AuditQuery::new().action("hostile."))
            .await
            .len(),
        2
    );
}

async fn hostile_filters_answer_normally(db: TestDb) {
    let kept = AuditRecord::builder("a.b")
        .actor_id("a\0b")
        .actor_type("%")
        .resource("_", "\\")
        .actor_flags(["\u{1}"])
        .build();
    let mut database = sink(&db.url).await;
    let records = vec![Arc::new(kept.clone())];
    tokio::task::spawn_blocking(move || database.write(&Batch::new(&records)).unwrap())
        .await
        .unwrap();
    let store = Store::connect(&db.url).await.unwrap();
    let mega = "m".repeat(1 << 20);
    let long_prefix = format!("{}.", "p".repeat(5000));
    let values: [&str; 11] = [
        "a\0b",
        "\0",
        "\u{1}",
        &mega,
        "%",
        "_",
        "\\",
        &long_prefix,
        "zoë ✓ \u{10ffff}",
        "a.",
        "",
    ];
    type Set = fn(AuditQuery, String) -> AuditQuery;
    type Get = fn(&AuditRecord) -> Option<&str>;
    let filters: [(&str, Set, Get); 6] = [
        ("actor_id", AuditQuery::actor_id, |r| r.actor_id()),
        ("actor_type", AuditQuery::actor_type, |r| r.actor_type()),
        ("action", AuditQuery::action, |r| Some(r.action())),
        ("resource_type", AuditQuery::resource_type, |r| {
            r.resource_type()
        }),
        ("resource_id", AuditQuery::resource_id, |r| r.resource_id()),
        ("has_flag", AuditQuery::has_flag, |r| r.actor_flags().next()),
    ];
    for (name, set, field) in filters {
        for value in values {
            let query = set(AuditQuery::new(), value.to_owned());
            let page = store
                .query(&query)
                .await
                .unwrap_or_else(|e| panic!("{name} = {:?}: {e}", &value[..value.len().min(20)]));
            let matches = field(&kept) == Some(value) || (name == "action" && value == "a.");
            assert_eq!(
                page.items.len(),
                usize::from(matches),
                "{name} = {:?}",
                &value[..value.len().min(20)]
            );
        }
    }
}

async fn a_detail_over_eight_mib_is_cut_and_big_batches_fit(db: TestDb) {
    // 17 MiB: more than MariaDB's default max_allowed_packet, over which
    // the server closed the connection and the batch was retried forever.
    let huge = Arc::new(
        AuditRecord::builder("huge")
            .detail("b", "x".repeat(17 << 20))
            .detail("n", 1)
            .build(),
    );
    // Under the cap each, 21 MiB and 20 MiB per batch.
    let large: Vec<Arc<AuditRecord>> = (0..3)
        .map(|_| {
            Arc::new(
                AuditRecord::builder("large")
                    .detail("b", "y".repeat(7 << 20))
                    .build(),
            )
        })
        .collect();
    let many: Vec<Arc<AuditRecord>> = (0..200)
        .map(|_| {
            Arc::new(
                AuditRecord::builder("many")
                    .detail("b", "z".repeat(100 << 10))
                    .build(),
            )
        })
        .collect();
    let mut database = sink(&db.url).await;
    let batches = vec![vec![huge.clone()], large.clone(), many];
    tokio::task::spawn_blocking(move || {
        for batch in &batches {
            database.write(&Batch::new(batch)).unwrap();
        }
    })
    .await
    .unwrap();
    let store = Store::connect(&db.url).await.unwrap();
    let cut = store.get(huge.id()).await.unwrap().unwrap();
    let Some(DetailValue::Str(b)) = cut.detail_value("b") else {
        panic!("{:?}", cut.detail_value("b"))
    };
    assert!(b.len() < 8 << 20 && b.len() > 7 << 20, "{}", b.len());
    assert_eq!(cut.detail_value("n"), Some(DetailValue::I64(1)));
    assert_eq!(
        marker(&cut).as_deref(),
        Some(r#"{"detail.b":{"truncated_from_bytes":17825792}}"#)
    );
    for record in &large {
        assert_eq!(
            store.get(record.id()).await.unwrap().as_ref(),
            Some(&**record)
        );
    }
    assert_eq!(
        walk(
            &store,
            AuditQuery::new().action("many").limit(1000).unwrap()
        )
        .await
        .len(),
        200
    );
}

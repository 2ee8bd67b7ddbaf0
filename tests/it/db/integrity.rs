//! What keeps stored records what they were: flags only for the records
//! actually inserted, conflicts reported by an import, and triggers that
//! refuse every way of overwriting or deleting a row.

use std::sync::Arc;

use fabric_audit::verify::Break;
use fabric_audit::{AuditQuery, AuditRecord, Batch, Imported, Sink, Store};
use uuid::Uuid;

use super::{on_every_backend, sink, walk, TestDb};

on_every_backend!(
    a_record_skipped_as_stored_adds_no_flags,
    an_import_tells_stored_present_and_conflicting_records_apart,
    every_way_of_overwriting_a_row_is_refused,
    an_import_keeps_the_producers_chain_fields,
    database_chains_verify_and_name_each_tampering,
    values_the_database_cuts_are_hashed_as_stored,
    a_time_window_verifies_its_records_against_the_one_before,
);

/// A value longer than its column is cut when stored (and the detail says
/// so): the chain hashes what is stored, so the table verifies; the file
/// sink beside it keeps and hashes the whole value.
async fn values_the_database_cuts_are_hashed_as_stored(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let file = fabric_audit::FileSink::builder(dir.path().join("audit.jsonl"))
        .build()
        .unwrap();
    let (dispatch, audit) = crate::support::pipeline(
        fabric_audit::AuditLayer::builder()
            .instance("web-1")
            .max_record_bytes(1 << 20)
            .sink("database", sink(&db.url).await)
            .sink("file", file),
    );
    let long = "é".repeat(300);
    let with_nul = format!("{}\0{}", "a".repeat(200), "b".repeat(200));
    let agent = "x".repeat(70_000);
    let flags: Vec<String> = (0..3_000).map(|i| format!("flag-{i:020}")).collect();
    tokio::task::spawn_blocking(move || {
        tracing::dispatcher::with_default(&dispatch, || {
            fabric_audit::audit!(action = "short", n = 1);
            fabric_audit::audit!(action = long.as_str(), resource_id = with_nul.as_str());
            fabric_audit::audit!(action = "agent", user_agent = agent.as_str(), actor_flags = ?flags);
            fabric_audit::audit!(action = "short", n = 2);
        })
    })
    .await
    .unwrap();
    let report = audit.shutdown().await;
    assert!(report.is_lossless(), "{report}");
    let store = Store::connect(&db.url).await.unwrap();
    let v = store.verify(None).await.unwrap();
    assert!(v.is_intact(), "{v:?}");
    assert_eq!(v.chains[0].records, 4);
    let stored = walk(&store, AuditQuery::new()).await;
    let cut = stored.iter().find(|r| r.action().starts_with('é')).unwrap();
    assert_eq!(cut.action().chars().count(), 255);
    assert!(
        cut.detail_value("fabric_audit.stored_as").is_some(),
        "{cut:?}"
    );
    let files = fabric_audit::verify::verify_files(dir.path()).unwrap();
    assert!(files.is_intact(), "{files:?}");
    assert_eq!(files.chains[0].records, 4);
}

async fn a_record_skipped_as_stored_adds_no_flags(db: TestDb) {
    let id = Uuid::now_v7();
    let first = Arc::new(
        AuditRecord::builder("first")
            .id(id)
            .actor_flags(["a"])
            .build(),
    );
    let again = Arc::new(
        AuditRecord::builder("again")
            .id(id)
            .actor_flags(["b"])
            .build(),
    );
    let mut database = sink(&db.url).await;
    tokio::task::spawn_blocking(move || {
        database.write(&Batch::new(&[first])).unwrap();
        database.write(&Batch::new(&[again])).unwrap();
    })
    .await
    .unwrap();
    let store = Store::connect(&db.url).await.unwrap();
    let with_a = walk(&store, AuditQuery::new().has_flag("a")).await;
    assert_eq!(
        with_a.iter().map(|r| r.action()).collect::<Vec<_>>(),
        ["first"]
    );
    assert_eq!(
        walk(&store, AuditQuery::new().has_flag("b")).await,
        [],
        "the skipped record's flag points at a record without it"
    );
}

async fn an_import_tells_stored_present_and_conflicting_records_apart(db: TestDb) {
    let record = |action: &str, id: Uuid| {
        Arc::new(
            AuditRecord::builder(action)
                .id(id)
                .actor_flags([action])
                .build(),
        )
    };
    let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let record_a = record("a", a);
    let mut database = sink(&db.url).await;
    let (first, second) = tokio::task::spawn_blocking(move || {
        let first = database.import(&Batch::new(&[record_a.clone(), record("b", b)]));
        let second = database.import(&Batch::new(&[
            record_a,              // the same: present
            record("b-edited", b), // the same id, other content: a conflict
            record("c", c),        // new
            record("c-twin", c),   // twice in one batch, other content
        ]));
        (first.unwrap(), second.unwrap())
    })
    .await
    .unwrap();
    let counts = |i: &Imported| {
        let mut conflicting = i.conflicting.clone();
        conflicting.sort_unstable();
        (i.stored, i.present, conflicting, i.refused.clone())
    };
    assert_eq!(counts(&first), (2, 0, vec![], vec![]));
    let mut conflicting = vec![b, c];
    conflicting.sort_unstable();
    assert_eq!(counts(&second), (1, 1, conflicting, vec![]));
    let store = Store::connect(&db.url).await.unwrap();
    let all = walk(&store, AuditQuery::new()).await;
    let mut actions: Vec<&str> = all.iter().map(|r| r.action()).collect();
    actions.sort_unstable();
    assert_eq!(actions, ["a", "b", "c"], "conflicts change nothing");
    assert!(walk(&store, AuditQuery::new().has_flag("b-edited"))
        .await
        .is_empty());
}

async fn every_way_of_overwriting_a_row_is_refused(db: TestDb) {
    let kept = Arc::new(AuditRecord::builder("keep.me").actor_flags(["f"]).build());
    let id = kept.id().hyphenated().to_string();
    let mut database = sink(&db.url).await;
    let records = vec![kept.clone()];
    tokio::task::spawn_blocking(move || database.write(&Batch::new(&records)).unwrap())
        .await
        .unwrap();
    let row = format!("('{id}', 1, 'changed', '[]', '{{}}')");
    let columns = "audit_events (id, timestamp_us, action, actor_flags, detail)";
    let flag = format!("('f', {}, '{id}')", kept.timestamp().timestamp_micros());
    let statements: Vec<String> = if db.url.starts_with("postgres") {
        vec![
            format!("INSERT INTO {columns} VALUES {row} ON CONFLICT (id) DO UPDATE SET action = 'changed'"),
            "UPDATE audit_events SET action = 'changed'".into(),
            "DELETE FROM audit_events".into(),
            "TRUNCATE audit_events".into(),
            "TRUNCATE audit_event_flags".into(),
            "DELETE FROM audit_event_flags".into(),
        ]
    } else if db.url.starts_with("mysql") {
        vec![
            format!("REPLACE INTO {columns} VALUES {row}"),
            format!(
                "INSERT INTO {columns} VALUES {row} ON DUPLICATE KEY UPDATE action = 'changed'"
            ),
            "UPDATE audit_events SET action = 'changed'".into(),
            "DELETE FROM audit_events".into(),
            format!("REPLACE INTO audit_event_flags (flag, timestamp_us, event_id) VALUES {flag}"),
            "DELETE FROM audit_event_flags".into(),
        ]
    } else {
        vec![
            format!("INSERT OR REPLACE INTO {columns} VALUES {row}"),
            format!("REPLACE INTO {columns} VALUES {row}"),
            format!("INSERT INTO {columns} VALUES {row} ON CONFLICT (id) DO UPDATE SET action = 'changed'"),
            "UPDATE audit_events SET action = 'changed'".into(),
            "DELETE FROM audit_events".into(),
            format!("INSERT OR REPLACE INTO audit_event_flags (flag, timestamp_us, event_id) VALUES {flag}"),
            "DELETE FROM audit_event_flags".into(),
        ]
    };
    for sql in &statements {
        let err = (db.sql)(sql).expect_err(sql);
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    if db.url.starts_with("sqlite") {
        // The old purge switch, a row any connection could set, is gone;
        // deletes stay refused whatever a script does to it.
        let _ = (db.sql)("UPDATE audit_purge SET active = 1");
        let err = (db.sql)("DELETE FROM audit_events").expect_err("DELETE");
        assert!(err.contains("append-only"), "{err}");
    }
    let store = Store::connect(&db.url).await.unwrap();
    assert_eq!(store.get(kept.id()).await.unwrap().as_ref(), Some(&*kept));
    assert_eq!(
        walk(&store, AuditQuery::new().has_flag("f")).await,
        [(*kept).clone()]
    );
}

/// A collector imports records another instance chained: their `chain`,
/// `seq` and `hash` are stored and read back as given, hostile ones too,
/// so that verifying the central table checks the producer's chain.
async fn an_import_keeps_the_producers_chain_fields(db: TestDb) {
    let hash = "0123456789abcdef".repeat(4);
    let given = [
        ("host-1/file", 1, hash.as_str()),
        ("host-2/database", i64::MAX as u64, hash.as_str()),
        // Read back from a tampered store, anything may be there.
        ("nul\0 and \u{1b} escape", 0, "not hex at all"),
    ];
    let records: Vec<Arc<AuditRecord>> = given
        .iter()
        .map(|(chain, seq, hash)| {
            let mut value =
                serde_json::to_value(AuditRecord::builder("invoice.sent").build()).unwrap();
            value["chain"] = serde_json::Value::from(*chain);
            value["seq"] = serde_json::Value::from(*seq);
            value["hash"] = serde_json::Value::from(*hash);
            Arc::new(serde_json::from_value(value).unwrap())
        })
        .collect();
    let plain = Arc::new(AuditRecord::builder("invoice.sent").build());
    let mut all = records.clone();
    all.push(plain.clone());
    let mut database = sink(&db.url).await;
    let imported = tokio::task::spawn_blocking(move || database.import(&Batch::new(&all)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(imported.stored, 4);
    let store = Store::connect(&db.url).await.unwrap();
    for record in &records {
        let back = store.get(record.id()).await.unwrap().unwrap();
        assert_eq!(&back, &**record);
        assert_eq!(
            serde_json::to_string(&back).unwrap(),
            serde_json::to_string(&**record).unwrap()
        );
    }
    assert_eq!(records[2].chain(), Some("nul\0 and \u{1b} escape"));
    assert_eq!(records[1].seq(), Some(i64::MAX as u64));
    let back = store.get(plain.id()).await.unwrap().unwrap();
    assert_eq!((back.chain(), back.seq(), back.hash()), (None, None, None));
}

/// Two instances write into one database, one restarts: each keeps a
/// chain that verifies. Then the table is tampered with (its owner having
/// lifted the append-only triggers): each change is named where it is.
/// The statements that lift the triggers refusing updates and deletes.
fn lift_triggers(db: &TestDb) {
    let lift: &[&str] = if db.url.starts_with("postgres") {
        &["ALTER TABLE audit_events DISABLE TRIGGER USER"]
    } else if db.url.starts_with("mysql") {
        &[
            "DROP TRIGGER audit_events_no_update",
            "DROP TRIGGER audit_events_no_delete",
        ]
    } else {
        &[
            "DROP TRIGGER audit_events_no_update",
            "DROP TRIGGER audit_events_no_delete",
            "DROP TRIGGER audit_events_no_overwrite",
        ]
    };
    for sql in lift {
        (db.sql)(sql).unwrap();
    }
}

/// `verify --from --to`: three groups of records, the middle one's time
/// window verified alone. What lies outside is not judged; inside, the
/// first record is checked against the one before it.
async fn a_time_window_verifies_its_records_against_the_one_before(db: TestDb) {
    use fabric_audit::verify::{Verifier, CHECKPOINT_ACTION};
    let (dispatch, audit) = crate::support::pipeline(
        fabric_audit::AuditLayer::builder()
            .instance("web-1")
            .batch_size(4)
            .checkpoint_every(10, std::time::Duration::from_secs(3600))
            .sink("database", sink(&db.url).await),
    );
    let audit = Arc::new(audit);
    let mut edges = Vec::new();
    for group in 0..3 {
        let dispatch = dispatch.clone();
        tokio::task::spawn_blocking(move || {
            tracing::dispatcher::with_default(&dispatch, || {
                for i in 0..25 {
                    fabric_audit::audit!(action = "invoice.sent", group = group, n = i);
                }
            })
        })
        .await
        .unwrap();
        // Every record and checkpoint of the group stored, and stamped,
        // before the edge.
        audit.flush().await.unwrap();
        edges.push(chrono::Utc::now());
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let report = audit.shutdown().await;
    assert!(report.is_lossless(), "{report}");
    let store = Store::connect(&db.url).await.unwrap();
    let whole = store.verify(None).await.unwrap();
    assert!(whole.is_intact(), "{whole:?}");
    let stored = walk(&store, AuditQuery::new()).await;
    let seqs_of = |group: i64| -> Vec<u64> {
        let mut seqs: Vec<u64> = stored
            .iter()
            .filter(|r| r.detail_value("group").map(|v| v.to_json()) == Some(group.into()))
            .map(|r| r.seq().unwrap())
            .collect();
        seqs.sort_unstable();
        seqs
    };
    let (a, b) = (seqs_of(0), seqs_of(1));
    // The window: from the first record stamped in it to the last, which
    // is group 1 and the checkpoints written among it.
    let inside: Vec<u64> = stored
        .iter()
        .filter(|r| (edges[0]..edges[1]).contains(&r.timestamp()))
        .map(|r| r.seq().unwrap())
        .collect();
    let (first, last) = (*inside.iter().min().unwrap(), *inside.iter().max().unwrap());
    assert!(a.last() < Some(&first) && first <= b[0] && last >= *b.last().unwrap());
    assert_eq!(inside.len() as u64, last - first + 1);
    let window = || async {
        let mut verifier = Verifier::new();
        // Copies of every checkpoint, also those outside the window.
        stored
            .iter()
            .filter(|r| r.action() == CHECKPOINT_ACTION)
            .for_each(|c| verifier.witness(c));
        store
            .verify_between(verifier, None, Some(edges[0]), Some(edges[1]))
            .await
            .unwrap()
    };
    let v = window().await;
    assert!(v.is_intact(), "{v:?}");
    let chain = &v.chains[0];
    assert_eq!(chain.window, Some((first, last)), "{chain:?}");
    assert_eq!((chain.first_seq, chain.last_seq), (Some(first), Some(last)));
    assert_eq!(chain.records, last - first + 1);
    assert!(chain.checkpoints >= 2, "{chain:?}");

    lift_triggers(&db);
    // Outside the window: a record changed before it, one deleted after.
    // Inside: one changed.
    for sql in [
        format!(
            "UPDATE audit_events SET action = 'invoice.void' WHERE seq = {}",
            a[2]
        ),
        format!("DELETE FROM audit_events WHERE seq = {}", last + 3),
        format!(
            "UPDATE audit_events SET action = 'invoice.void' WHERE seq = {}",
            first + 2
        ),
    ] {
        (db.sql)(&sql).unwrap();
    }
    let v = window().await;
    assert_eq!(v.chains[0].breaks, [Break::Modified { seq: first + 2 }]);
    let whole = store.verify(None).await.unwrap();
    assert_eq!(
        whole.chains[0].breaks,
        [
            Break::Modified { seq: a[2] },
            Break::Modified { seq: first + 2 },
            Break::Deleted {
                from: last + 3,
                to: last + 3
            }
        ]
    );
    // The record before the window gone: that one is named, not the
    // chain's whole prefix.
    (db.sql)(&format!(
        "DELETE FROM audit_events WHERE seq = {}",
        first - 1
    ))
    .unwrap();
    let v = window().await;
    assert_eq!(
        v.chains[0].breaks,
        [
            Break::Deleted {
                from: first - 1,
                to: first - 1
            },
            Break::Modified { seq: first + 2 }
        ]
    );
    // The checkpoints after the window deleted: a window reaching the
    // chain's end asks for them as the whole chain does; the middle one
    // does not (the next may follow just after it).
    (db.sql)(&format!(
        "DELETE FROM audit_events WHERE action = '{CHECKPOINT_ACTION}' AND seq > {}",
        last + 3
    ))
    .unwrap();
    let missing = |breaks: &[Break]| {
        breaks
            .iter()
            .filter(|b| matches!(b, Break::MissingCheckpoint { .. }))
            .count()
    };
    let whole = store.verify(None).await.unwrap();
    assert_eq!(missing(&whole.chains[0].breaks), 1, "{whole:?}");
    let tail = store
        .verify_between(Verifier::new(), None, Some(edges[1]), None)
        .await
        .unwrap();
    assert_eq!(tail.chains[0].window.unwrap().0, last + 1);
    assert_eq!(missing(&tail.chains[0].breaks), 1, "{tail:?}");
    assert_eq!(missing(&window().await.chains[0].breaks), 0);
    // A window that ends where it starts holds nothing: refused.
    let error = store
        .verify_between(Verifier::new(), None, Some(edges[1]), Some(edges[1]))
        .await
        .unwrap_err();
    assert!(error.is_invalid_input(), "{error}");

    #[cfg(feature = "cli")]
    {
        let cli = |from: &str, to: &str| {
            std::process::Command::new(env!("CARGO_BIN_EXE_fabric-audit"))
                .args(["verify", "--database-url", &db.url, "--json"])
                .args(["--from", from, "--to", to])
                .output()
                .unwrap()
        };
        let (from, to) = (edges[0].to_rfc3339(), edges[1].to_rfc3339());
        let out = cli(&from, &to);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let json: serde_json::Value =
            serde_json::from_slice(out.stdout.split(|&b| b == b'\n').next().unwrap()).unwrap();
        assert_eq!(
            json["chains"][0]["window"],
            serde_json::json!([first, last])
        );
        assert_eq!(json["chains"][0]["breaks"][1]["kind"], "modified", "{json}");
        let empty = cli(&to, &from);
        assert_eq!(empty.status.code(), Some(2), "{empty:?}");
        assert!(
            String::from_utf8_lossy(&empty.stderr).contains("the time window is empty"),
            "{empty:?}"
        );
        let bad = cli("yesterday", &to);
        assert_eq!(bad.status.code(), Some(2), "{bad:?}");
        let stderr = String::from_utf8_lossy(&bad.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("--from is not an RFC 3339 time"),
            "{stderr}"
        );
    }
}

async fn database_chains_verify_and_name_each_tampering(db: TestDb) {
    for (instance, from, n) in [("web-1", 0, 20), ("web-2", 0, 20), ("web-1", 20, 10)] {
        let (dispatch, audit) = crate::support::pipeline(
            fabric_audit::AuditLayer::builder()
                .instance(instance)
                .sink("database", sink(&db.url).await),
        );
        tokio::task::spawn_blocking(move || {
            tracing::dispatcher::with_default(&dispatch, || {
                for i in from..from + n {
                    fabric_audit::audit!(
                        action = "invoice.sent",
                        n = i,
                        big = u64::MAX - i,
                        f = 0.5 + i as f64,
                        s = "é\0🦀"
                    );
                }
            })
        })
        .await
        .unwrap();
        let report = audit.shutdown().await;
        assert!(report.is_lossless(), "{report}");
    }
    let store = Store::connect(&db.url).await.unwrap();
    let v = store.verify(None).await.unwrap();
    assert!(v.is_intact(), "{v:?}");
    let chains: Vec<(&str, u64, Option<u64>)> = v
        .chains
        .iter()
        .map(|c| (c.chain.as_str(), c.records, c.last_seq))
        .collect();
    assert_eq!(
        chains,
        [
            ("web-1/database", 30, Some(30)),
            ("web-2/database", 20, Some(20))
        ]
    );

    lift_triggers(&db);
    let forged_id = "ffffffff-ffff-7fff-bfff-ffffffffffff";
    for sql in [
        "UPDATE audit_events SET action = 'invoice.void' WHERE chain = 'web-2/database' AND seq = 5".to_owned(),
        "DELETE FROM audit_events WHERE chain = 'web-1/database' AND seq IN (7, 8)".to_owned(),
        format!(
            "INSERT INTO audit_events (id, timestamp_us, action, actor_flags, detail, chain, seq, hash) \
             SELECT '{forged_id}', timestamp_us, 'invoice.paid', actor_flags, detail, chain, seq, hash \
             FROM audit_events WHERE chain = 'web-1/database' AND seq = 12"
        ),
    ] {
        (db.sql)(&sql).unwrap();
    }
    let v = store.verify(None).await.unwrap();
    assert!(!v.is_intact());
    let breaks: Vec<(&str, Vec<Break>)> = v
        .chains
        .iter()
        .map(|c| (c.chain.as_str(), c.breaks.clone()))
        .collect();
    assert_eq!(
        breaks,
        [
            (
                "web-1/database",
                vec![
                    Break::Deleted { from: 7, to: 8 },
                    Break::OutOfOrder { seq: 12, after: 12 }
                ]
            ),
            ("web-2/database", vec![Break::Modified { seq: 5 }]),
        ]
    );
    // One chain alone.
    let one = store.verify(Some("web-2/database")).await.unwrap();
    assert_eq!(one.chains.len(), 1);
    assert_eq!(one.chains[0].breaks, [Break::Modified { seq: 5 }]);
}

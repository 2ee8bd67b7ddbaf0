//! Bounded totals (`Store::count`): exact up to the cap, the cap and a
//! lower-bound flag beyond it, on every backend.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use fabric_audit::{AuditQuery, AuditRecord, Batch, Sink, Store, Total};

use super::{on_every_backend, sink, TestDb};

on_every_backend!(
    totals_are_exact_up_to_the_cap_and_flagged_beyond,
    the_default_cap_is_ten_thousand_at_its_boundary,
);

async fn store(db: &TestDb, records: Vec<Arc<AuditRecord>>, cap: Option<u32>) -> Store {
    let mut database = sink(&db.url).await;
    tokio::task::spawn_blocking(move || {
        for chunk in records.chunks(2000) {
            database.write(&Batch::new(chunk)).unwrap();
        }
    })
    .await
    .unwrap();
    let builder = Store::builder(&db.url);
    let builder = match cap {
        Some(cap) => builder.count_cap(cap),
        None => builder,
    };
    builder.connect().await.unwrap()
}

fn total(count: u64, is_lower_bound: bool) -> Total {
    Total {
        count,
        is_lower_bound,
    }
}

async fn totals_are_exact_up_to_the_cap_and_flagged_beyond(db: TestDb) {
    const CAP: u32 = 5;
    let now = Utc::now();
    let at = |i: usize| now - Duration::minutes(i as i64);
    // 6 (cap + 1) of `a.x`, 5 (cap) of `b.y`, 4 (cap - 1) of `c.z`.
    let actions = ["a.x"; 6].into_iter().chain(["b.y"; 5]).chain(["c.z"; 4]);
    let records: Vec<Arc<AuditRecord>> = actions
        .enumerate()
        .map(|(i, action)| {
            let flags = if i % 2 == 0 { vec!["admin"] } else { vec![] };
            let record = AuditRecord::builder(action)
                .timestamp(at(i))
                .actor_flags(flags);
            Arc::new(record.build())
        })
        .collect();
    let model: Vec<AuditRecord> = records.iter().map(|r| (**r).clone()).collect();
    let store = store(&db, records, Some(CAP)).await;
    let window = |from: DateTime<Utc>, to| AuditQuery::new().from(from).to(to);
    let q = AuditQuery::new;
    type Keep = Box<dyn Fn(usize, &AuditRecord) -> bool>;
    let cases: Vec<(AuditQuery, Keep)> = vec![
        (q(), Box::new(|_, _| true)),
        (q().action("a.x"), Box::new(|_, r| r.action() == "a.x")),
        (q().action("b.y"), Box::new(|_, r| r.action() == "b.y")),
        (q().action("c.z"), Box::new(|_, r| r.action() == "c.z")),
        (q().action("a."), Box::new(|_, r| r.action() == "a.x")),
        (q().action("c."), Box::new(|_, r| r.action() == "c.z")),
        (q().action("nothing"), Box::new(|_, _| false)),
        (q().action("a.x\0"), Box::new(|_, _| false)),
        (q().has_flag("admin"), Box::new(|i, _| i % 2 == 0)),
        (
            q().has_flag("admin").action("c."),
            Box::new(|i, r| i % 2 == 0 && r.action() == "c.z"),
        ),
        (q().has_flag("root"), Box::new(|_, _| false)),
        // The window [at(9), at(4)): records 5 to 9.
        (window(at(9), at(4)), Box::new(|i, _| (5..=9).contains(&i))),
        (window(at(8), at(4)), Box::new(|i, _| (5..=8).contains(&i))),
        (
            window(at(10), at(4)),
            Box::new(|i, _| (5..=10).contains(&i)),
        ),
        (
            window(at(14), at(0)).has_flag("admin"),
            Box::new(|i, _| i > 0 && i % 2 == 0),
        ),
    ];
    for (query, keep) in cases {
        let matching = model
            .iter()
            .enumerate()
            .filter(|(i, r)| keep(*i, r))
            .count() as u64;
        let want = total(matching.min(CAP.into()), matching > CAP.into());
        assert_eq!(store.count(&query).await.unwrap(), want, "{query:?}");
        // The page's limit and cursor do not change the total.
        let page = store.query(&query.clone().limit(1).unwrap()).await.unwrap();
        if let Some(cursor) = page.next_cursor {
            let later = query.clone().limit(1).unwrap().after(cursor);
            assert_eq!(store.count(&later).await.unwrap(), want, "{query:?}");
        }
    }
}

async fn the_default_cap_is_ten_thousand_at_its_boundary(db: TestDb) {
    let now = Utc::now();
    let at = |i: i64| now - Duration::seconds(i);
    let records: Vec<Arc<AuditRecord>> = (0..10_001)
        .map(|i| Arc::new(AuditRecord::builder("bulk.row").timestamp(at(i)).build()))
        .collect();
    let store = store(&db, records, None).await;
    let cases = [
        // Up to (not including) the oldest ones: cap + 1, cap, cap - 1 rows.
        (AuditQuery::new(), total(10_000, true)),
        (AuditQuery::new().action("bulk."), total(10_000, true)),
        (AuditQuery::new().from(at(9_999)), total(10_000, false)),
        (AuditQuery::new().from(at(9_998)), total(9_999, false)),
        (AuditQuery::new().to(at(10_000)), total(0, false)),
        (AuditQuery::new().to(at(9_999)), total(1, false)),
    ];
    for (query, want) in cases {
        assert_eq!(store.count(&query).await.unwrap(), want, "{query:?}");
    }
}

#[tokio::test]
async fn a_cap_out_of_range_is_refused_and_a_fresh_database_counts_zero() {
    let db = super::sqlite();
    for cap in [0, 1_000_001, u32::MAX] {
        let error = Store::builder(&db.url)
            .count_cap(cap)
            .connect()
            .await
            .unwrap_err();
        assert!(error.is_invalid_input(), "{cap}: {error}");
        assert!(error.to_string().contains("count cap"), "{error}");
    }
    let store = Store::builder(&db.url)
        .count_cap(1)
        .connect()
        .await
        .unwrap();
    assert_eq!(
        store.count(&AuditQuery::new()).await.unwrap(),
        total(0, false)
    );
}

//! Action prefixes at every selectivity, alone and with an actor, a time
//! window, a flag or a cursor deep in the walk, against the reference: the
//! records themselves, filtered and sorted in Rust.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use fabric_audit::{AuditQuery, AuditRecord, Batch, Sink, Store};

use super::{ids, newest_first, on_every_backend, sink, walk, TestDb};

on_every_backend!(prefix_queries_match_the_reference);

/// A uniform draw in [0, 1) from `i` and a stream number (SplitMix64).
fn draw(i: u64, stream: u64) -> f64 {
    let mut z = i
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(stream.wrapping_mul(0xbf58_476d_1ce4_e5b9));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

fn pick<T: Copy>(items: &[T], i: u64, stream: u64) -> T {
    items[(draw(i, stream) * items.len() as f64) as usize]
}

/// Actions whose prefixes match from one record to all of them, with
/// neighbours a prefix must not match (`a.keyring.x` for `a.key.`, `a.key`
/// itself, `a/b` just past `a.`'s range), and a domain of more distinct
/// actions than the store merges (`a.many.`).
fn action(i: u64) -> String {
    let roll = draw(i, 1);
    if i == 7 {
        return "a.key.rotated".into();
    }
    match roll {
        r if r < 0.01 => pick(&["a.key", "a.keyring.x", "a/b", "a%_.x", "a\\.y"], i, 2).into(),
        r if r < 0.2 => format!("a.many.{}", (draw(i, 3) * 90.0) as u32),
        r if r < 0.3 => pick(&["a.invoice.paid", "a.invoice.issued"], i, 2).into(),
        _ => pick(
            &[
                "a.auth.login",
                "a.auth.logout",
                "a.auth.login.failed",
                "a.post.viewed",
                "a.post.created",
                "a.user.updated",
            ],
            i,
            2,
        )
        .into(),
    }
}

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
}

/// 3 000 records over 6 days; three at a time share a timestamp, so that
/// arms of a merge meet on equal times and the id decides.
fn records() -> Vec<AuditRecord> {
    (0..3000u64)
        .map(|i| {
            let actor = (draw(i, 4) * 12.0) as u32;
            let mut flags = Vec::new();
            if actor % 3 == 0 {
                flags.push("staff");
            }
            AuditRecord::builder(action(i))
                .timestamp(start() + Duration::minutes((i / 3) as i64 * 3))
                .actor_id(format!("u-{actor}"))
                .actor_type(if actor == 5 { "service" } else { "user" })
                .actor_flags(flags)
                .resource("post", ((draw(i, 5) * 40.0) as u32).to_string())
                .detail("i", i)
                .build()
        })
        .collect()
}

/// Whether `record` matches `query`'s filters, judged on the record.
struct Filters {
    prefix: Option<&'static str>,
    actor: Option<String>,
    actor_type: Option<&'static str>,
    resource_id: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    flag: Option<&'static str>,
}

impl Filters {
    fn query(&self) -> AuditQuery {
        let mut q = AuditQuery::new();
        if let Some(p) = self.prefix {
            q = q.action(p);
        }
        if let Some(a) = &self.actor {
            q = q.actor_id(a);
        }
        if let Some(t) = self.actor_type {
            q = q.actor_type(t);
        }
        if let Some(r) = &self.resource_id {
            q = q.resource_type("post").resource_id(r);
        }
        if let Some(f) = self.from {
            q = q.from(f);
        }
        if let Some(t) = self.to {
            q = q.to(t);
        }
        if let Some(f) = self.flag {
            q = q.has_flag(f);
        }
        q
    }

    fn matches(&self, r: &AuditRecord) -> bool {
        self.prefix.is_none_or(|p| r.action().starts_with(p))
            && self
                .actor
                .as_deref()
                .is_none_or(|a| r.actor_id() == Some(a))
            && self.actor_type.is_none_or(|t| r.actor_type() == Some(t))
            && self
                .resource_id
                .as_deref()
                .is_none_or(|id| r.resource_id() == Some(id))
            && self.from.is_none_or(|f| r.timestamp() >= f)
            && self.to.is_none_or(|t| r.timestamp() < t)
            && self.flag.is_none_or(|f| r.actor_flags().any(|x| x == f))
    }
}

const PREFIXES: &[&str] = &[
    "a.key.",
    "a.invoice.",
    "a.auth.",
    "a.auth.login.",
    "a.",
    "a.many.",
    "a%_.",
    "a\\.",
    "a.nothing.",
];

/// The generated cases: every prefix alone, then combinations drawn from
/// a fixed seed, each filter present about half the time.
fn cases() -> Vec<Filters> {
    let day = |d: i64| start() + Duration::days(d);
    let mut cases: Vec<Filters> = PREFIXES
        .iter()
        .map(|&p| Filters {
            prefix: Some(p),
            actor: None,
            actor_type: None,
            resource_id: None,
            from: None,
            to: None,
            flag: None,
        })
        .collect();
    for i in 0..60u64 {
        let on = |stream: u64| draw(i, 100 + stream) < 0.5;
        cases.push(Filters {
            prefix: Some(pick(PREFIXES, i, 10)),
            actor: on(1).then(|| format!("u-{}", (draw(i, 11) * 12.0) as u32)),
            actor_type: (draw(i, 102) < 0.15).then_some("service"),
            resource_id: (draw(i, 103) < 0.15).then(|| ((draw(i, 13) * 40.0) as u32).to_string()),
            from: on(4).then(|| day((draw(i, 14) * 4.0) as i64)),
            to: on(5).then(|| day(2 + (draw(i, 15) * 5.0) as i64)),
            flag: (draw(i, 106) < 0.2).then_some("staff"),
        });
    }
    cases
}

async fn prefix_queries_match_the_reference(db: TestDb) {
    let model = records();
    let stored: Vec<Arc<AuditRecord>> = model.iter().cloned().map(Arc::new).collect();
    let mut database = sink(&db.url).await;
    tokio::task::spawn_blocking(move || database.write(&Batch::new(&stored)).unwrap())
        .await
        .unwrap();
    let store = Store::connect(&db.url).await.unwrap();
    for (n, case) in cases().iter().enumerate() {
        let want = newest_first(model.iter().filter(|r| case.matches(r)).cloned().collect());
        let query = case.query();
        // Small pages walk deep through cursors; other sizes cut the
        // merge's arms at other places.
        let limit = [3, 7, 50, 1000][n % 4];
        let got = walk(&store, query.clone().limit(limit).unwrap()).await;
        assert_eq!(ids(&got), ids(&want), "{query:?} by {limit}");
        assert_eq!(got, want, "whole records: {query:?}");
        // The count of the same filters, common prefixes included: exact,
        // below the default cap of 10 000.
        let total = store.count(&query).await.unwrap();
        assert_eq!(total.count, want.len() as u64, "count: {query:?}");
        assert!(!total.is_lower_bound, "count: {query:?}");
    }
    // The 0.03 % prefix is one record; the domain with more actions than
    // a merge takes gives every record too.
    let key = walk(&store, AuditQuery::new().action("a.key.")).await;
    assert_eq!(key.len(), 1);
    let many = model
        .iter()
        .filter(|r| r.action().starts_with("a.many."))
        .count();
    assert!(many > 400, "{many}");
}

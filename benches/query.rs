//! Query latency over a realistic log: p50 and p99 of a page of 50 for
//! each query shape, first page and deep page, on SQLite, PostgreSQL and
//! (with the `mysql` feature) MariaDB, 1M rows each; 10M rows on
//! PostgreSQL with `FABRIC_AUDIT_BENCH_10M=1`.
//!
//! The data set (see [`record`]): 50 dotted actions of skewed frequency
//! under one root `shop.` in 12 domains, so that action prefixes match
//! about 0.01 % (`shop.key.`), 2 % (`shop.invoice.`), 25 % (`shop.auth.`)
//! and 100 % (`shop.`) of the rows; 1 000 actors, 10 000 resources, 90
//! days; the flag `staff` on 10 % of actors, `breakglass` on 0.01 % of
//! records.
//!
//! It is written once through the database sink and kept
//! (`target/bench-data/query-v2-1m.db`, database `fabric_audit_bench_v2_1m`
//! on the servers; `…_10m` for 10M), so reruns start at once. After a load
//! the PostgreSQL table is `VACUUM ANALYZE`d, as autovacuum would do.
//!
//! `cargo bench --all-features --bench query` prints the latency table
//! (add `-- nothing` to skip criterion's runs of each first page after it);
//! `FABRIC_AUDIT_BENCH_BACKENDS=sqlite,postgres` picks backends (default
//! all three), `FABRIC_AUDIT_BENCH_SAMPLES` the runs per shape (200).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use criterion::{criterion_group, Criterion};
use fabric_audit::{AuditQuery, AuditRecord, Batch, Cursor, DatabaseSink, Sink, Store};

const PAGE: u32 = 50;

/// The page whose latency is measured as "deep", or the last page of a
/// shape with fewer.
const DEEP_PAGE: usize = 1000;

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

const DAYS: i64 = 90;

/// The 12 domains: their share of the rows, and their actions (each
/// action's share in its domain falls as 1/rank: Zipf-like).
const DOMAINS: &[(&str, f64, &[&str])] = &[
    (
        "auth",
        25.0,
        &[
            "login",
            "logout",
            "token.refreshed",
            "login.failed",
            "mfa.passed",
            "password.changed",
        ],
    ),
    (
        "post",
        20.0,
        &[
            "viewed", "created", "updated", "deleted", "shared", "pinned",
        ],
    ),
    (
        "comment",
        15.0,
        &["created", "updated", "deleted", "flagged", "hidden"],
    ),
    (
        "user",
        10.0,
        &["updated", "created", "invited", "suspended", "deleted"],
    ),
    (
        "file",
        8.0,
        &["downloaded", "uploaded", "deleted", "shared", "renamed"],
    ),
    ("search", 7.0, &["run", "saved", "deleted"]),
    (
        "order",
        5.0,
        &["placed", "paid", "shipped", "cancelled", "refunded"],
    ),
    (
        "cart",
        4.0,
        &["item.added", "item.removed", "checkout", "cleared"],
    ),
    (
        "payment",
        2.99,
        &["captured", "authorized", "failed", "disputed"],
    ),
    ("invoice", 2.0, &["issued", "paid", "overdue", "voided"]),
    ("admin", 1.0, &["setting.changed", "role.granted"]),
    ("key", 0.01, &["rotated"]),
];

/// The 50 actions and their cumulative shares, for drawing.
fn actions() -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let mut total = 0.0;
    for (domain, share, names) in DOMAINS {
        let harmonic: f64 = (1..=names.len()).map(|r| 1.0 / r as f64).sum();
        for (rank, name) in names.iter().enumerate() {
            total += share / 100.0 / (rank + 1) as f64 / harmonic;
            out.push((format!("shop.{domain}.{name}"), total));
        }
    }
    assert_eq!(out.len(), 50);
    out
}

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

/// Record `i` of `rows`: time spread evenly over 90 days, every field
/// drawn independently. Its id is a UUIDv7 of its time made from `i`,
/// so a load that was cut short can be resumed.
fn record(i: usize, rows: usize, actions: &[(String, f64)]) -> AuditRecord {
    let n = i as u64;
    let step_us = DAYS * 86_400_000_000 / rows as i64;
    let at = start() + chrono::Duration::microseconds(i as i64 * step_us);
    let pick = draw(n, 1);
    let action = actions
        .iter()
        .find(|(_, upto)| pick < *upto)
        .unwrap_or(&actions[0]);
    let actor = (draw(n, 2) * 1000.0) as u32;
    let mut flags = Vec::new();
    if actor % 10 == 3 {
        flags.push("staff");
    }
    if draw(n, 3) < 0.0001 {
        flags.push("breakglass");
    }
    let kinds = ["post", "user", "file", "order"];
    let resource = (draw(n, 4) * 10_000.0) as u32;
    let id = uuid::Builder::from_unix_timestamp_millis(
        at.timestamp_millis() as u64,
        &(n as u128).to_be_bytes()[6..].try_into().unwrap(),
    )
    .into_uuid();
    AuditRecord::builder(&action.0)
        .id(id)
        .timestamp(at)
        .actor_id(format!("u-{actor}"))
        .actor_type(if actor % 50 == 0 { "service" } else { "user" })
        .actor_flags(flags)
        .resource(kinds[resource as usize % 4], resource.to_string())
        .detail("n", n)
        .build()
}

/// The shapes measured: a label and the query (page size aside).
fn shapes() -> Vec<(&'static str, AuditQuery)> {
    let day = start() + chrono::Duration::days(45);
    let one_day = |q: AuditQuery| q.from(day).to(day + chrono::Duration::days(1));
    vec![
        ("newest", AuditQuery::new()),
        ("action", AuditQuery::new().action("shop.invoice.paid")),
        ("prefix_0.01%", AuditQuery::new().action("shop.key.")),
        ("prefix_2%", AuditQuery::new().action("shop.invoice.")),
        ("prefix_25%", AuditQuery::new().action("shop.auth.")),
        ("prefix_100%", AuditQuery::new().action("shop.")),
        ("actor", AuditQuery::new().actor_id("u-123")),
        (
            "actor+prefix_25%",
            AuditQuery::new().actor_id("u-123").action("shop.auth."),
        ),
        (
            "actor+prefix_2%",
            AuditQuery::new().actor_id("u-123").action("shop.invoice."),
        ),
        (
            "resource",
            AuditQuery::new().resource_type("user").resource_id("4321"),
        ),
        ("one_day", one_day(AuditQuery::new())),
        (
            "day+prefix_2%",
            one_day(AuditQuery::new().action("shop.invoice.")),
        ),
        ("flag_rare", AuditQuery::new().has_flag("breakglass")),
        ("flag_common", AuditQuery::new().has_flag("staff")),
    ]
}

/// A backend to measure: its name, URL and row count.
struct Target {
    name: String,
    url: String,
    rows: usize,
    /// Empties the database before a fresh load.
    reset: Box<dyn Fn()>,
    /// Runs after a load (planner statistics).
    after_load: Box<dyn Fn()>,
}

/// The database, loaded with the data set unless it already is.
fn load(rt: &tokio::runtime::Runtime, target: &Target) -> Store {
    // A data set loaded by an older version gets this version's indexes.
    fabric_audit::migrate(&target.url).unwrap();
    let store = rt.block_on(Store::connect(&target.url)).unwrap();
    let newest = |store: &Store| {
        let page = rt.block_on(store.query(&AuditQuery::new().limit(1).unwrap()));
        page.ok().and_then(|p| {
            p.items
                .first()
                .and_then(|r| r.detail_value("n"))
                .map(|v| v.to_json())
        })
    };
    if newest(&store) == Some(serde_json::json!(target.rows - 1)) {
        return store;
    }
    drop(store);
    (target.reset)();
    println!("loading {} rows into {}…", target.rows, target.name);
    let started = Instant::now();
    let mut sink = DatabaseSink::builder(&target.url)
        .keep_forever()
        .build()
        .unwrap();
    let actions = actions();
    for from in (0..target.rows).step_by(5000) {
        let records: Vec<Arc<AuditRecord>> = (from..(from + 5000).min(target.rows))
            .map(|i| Arc::new(record(i, target.rows, &actions)))
            .collect();
        sink.write(&Batch::new(&records)).unwrap();
    }
    drop(sink);
    (target.after_load)();
    println!("loaded in {:.0} s", started.elapsed().as_secs_f64());
    let store = rt.block_on(Store::connect(&target.url)).unwrap();
    assert_eq!(newest(&store), Some(serde_json::json!(target.rows - 1)));
    store
}

fn psql(db: &str, sql: &str) -> bool {
    std::process::Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", db, "-qc", sql])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn mariadb(sql: &str) -> bool {
    std::process::Command::new("mariadb")
        .args(["-h", "127.0.0.1", "-u", "root", "-e", sql])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn sqlite_target() -> Target {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("query-v2-1m.db");
    let file = path.clone();
    Target {
        name: "sqlite".into(),
        url: format!("sqlite://{}", path.display()),
        rows: 1_000_000,
        reset: Box::new(move || {
            for suffix in ["", "-wal", "-shm"] {
                let mut name = file.clone().into_os_string();
                name.push(suffix);
                let _ = std::fs::remove_file(name);
            }
        }),
        after_load: Box::new(|| {}),
    }
}

fn postgres_target(rows: usize, suffix: &str) -> Option<Target> {
    if !support::psql("select 1") {
        return None;
    }
    let db = format!("fabric_audit_bench_v2_{suffix}");
    // Kept between runs; it exists already after the first.
    psql("postgres", &format!("CREATE DATABASE {db}"));
    let (reset_db, analyze_db) = (db.clone(), db.clone());
    Some(Target {
        name: format!("postgres_{suffix}"),
        url: format!("postgres://postgres@127.0.0.1:5432/{db}"),
        rows,
        reset: Box::new(move || {
            psql(
                "postgres",
                &format!("DROP DATABASE IF EXISTS {reset_db} WITH (FORCE)"),
            );
            psql("postgres", &format!("CREATE DATABASE {reset_db}"));
        }),
        after_load: Box::new(move || {
            psql(&analyze_db, "VACUUM ANALYZE");
        }),
    })
}

fn mariadb_target() -> Option<Target> {
    if !cfg!(feature = "mysql") || !mariadb("select 1") {
        return None;
    }
    let db = "fabric_audit_bench_v2_1m";
    mariadb(&format!("CREATE DATABASE IF NOT EXISTS {db}"));
    Some(Target {
        name: "mariadb".into(),
        url: format!("mysql://root@127.0.0.1:3306/{db}"),
        rows: 1_000_000,
        reset: Box::new(move || {
            mariadb(&format!("DROP DATABASE IF EXISTS {db}"));
            mariadb(&format!("CREATE DATABASE {db}"));
        }),
        after_load: Box::new(|| {}),
    })
}

/// The backends to measure, as `FABRIC_AUDIT_BENCH_BACKENDS` asks.
fn targets() -> Vec<Target> {
    let wanted = std::env::var("FABRIC_AUDIT_BENCH_BACKENDS")
        .unwrap_or_else(|_| "sqlite,postgres,mariadb".into());
    let wants = |name: &str| wanted.split(',').any(|w| w.trim() == name);
    let mut targets = Vec::new();
    if wants("sqlite") {
        targets.push(sqlite_target());
    }
    if wants("postgres") {
        targets.extend(postgres_target(1_000_000, "1m"));
    }
    if wants("mariadb") {
        targets.extend(mariadb_target());
    }
    if std::env::var_os("FABRIC_AUDIT_BENCH_10M").is_some() {
        targets.extend(postgres_target(10_000_000, "10m"));
    }
    targets
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The cursor that starts page [`DEEP_PAGE`] of `query` (pages of
/// [`PAGE`]), or its last page when it has fewer; and that page's number.
fn deep_cursor(
    rt: &tokio::runtime::Runtime,
    store: &Store,
    query: &AuditQuery,
) -> (usize, Option<Cursor>) {
    let page = |q: &AuditQuery| rt.block_on(store.query(q)).unwrap();
    // Big steps first: 49 950 records are 49 pages of 1 000 and one of 950.
    let mut skipped = 0;
    let mut cursor = None;
    let skip = (DEEP_PAGE - 1) * PAGE as usize;
    while skipped < skip {
        let take = (skip - skipped).min(1000) as u32;
        let mut q = query.clone().limit(take).unwrap();
        if let Some(c) = cursor {
            q = q.after(c);
        }
        let got = page(&q);
        match got.next_cursor {
            Some(c) if got.items.len() == take as usize => {
                skipped += take as usize;
                cursor = Some(c);
            }
            _ => break,
        }
    }
    if skipped == skip {
        return (DEEP_PAGE, cursor);
    }
    // Fewer pages: walk pages of 50 to the last.
    let mut q = query.clone().limit(PAGE).unwrap();
    let (mut n, mut last) = (1, None);
    while let Some(c) = page(&q).next_cursor {
        n += 1;
        last = Some(c);
        q = q.after(c);
    }
    // One page only: the "deep" page is the first.
    (n, last)
}

/// p50 and p99 of `samples` runs of `query`, after a few unmeasured ones.
fn latency(
    rt: &tokio::runtime::Runtime,
    store: &Store,
    query: &AuditQuery,
    samples: usize,
) -> (Duration, Duration, usize) {
    let mut rows = 0;
    for _ in 0..5 {
        rows = rt.block_on(store.query(query)).unwrap().items.len();
    }
    let mut times: Vec<Duration> = (0..samples)
        .map(|_| {
            let t = Instant::now();
            rt.block_on(store.query(query)).unwrap();
            t.elapsed()
        })
        .collect();
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99), rows)
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// Prints p50 and p99, in ms, of each shape's first and deep page.
fn latency_table(rt: &tokio::runtime::Runtime, target: &Target, store: &Store) {
    let samples = std::env::var("FABRIC_AUDIT_BENCH_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    println!(
        "\n{}: page of {PAGE} over {} rows ({samples} runs each), ms",
        target.name, target.rows
    );
    println!(
        "{:<18} {:>7} {:>7} {:>5} | {:>6} {:>7} {:>7}",
        "shape", "p50", "p99", "rows", "page", "p50", "p99"
    );
    let mut worst = Duration::ZERO;
    for (label, query) in shapes() {
        let query = query.limit(PAGE).unwrap();
        let (p50, p99, rows) = latency(rt, store, &query, samples);
        let (n, cursor) = deep_cursor(rt, store, &query);
        let deep = match cursor {
            Some(cursor) => query.clone().after(cursor),
            None => query.clone(),
        };
        let (d50, d99, _) = latency(rt, store, &deep, samples);
        worst = worst.max(p99).max(d99);
        println!(
            "{label:<18} {:>7} {:>7} {rows:>5} | {n:>6} {:>7} {:>7}",
            ms(p50),
            ms(p99),
            ms(d50),
            ms(d99)
        );
    }
    println!("{}: worst p99 {} ms", target.name, ms(worst));
}

fn bench_target(c: &mut Criterion, target: &Target) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = load(&rt, target);
    latency_table(&rt, target, &store);
    let mut group = c.benchmark_group(format!("query_{}", target.name));
    group.measurement_time(Duration::from_secs(3));
    for (label, query) in shapes() {
        let query = query.limit(PAGE).unwrap();
        group.bench_function(label, |b| {
            b.iter(|| rt.block_on(store.query(&query)).unwrap())
        });
    }
    group.finish();
}

fn query(c: &mut Criterion) {
    for target in targets() {
        bench_target(c, &target);
    }
}

criterion_group!(benches, query);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}

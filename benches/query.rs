//! Query latency over 1M rows, on SQLite and (when the server is there)
//! PostgreSQL: p50 and p99 of a page of 50 for each filter, and the first
//! page of a walk against its 1000th page.
//!
//! The 1M rows are written once through the database sink and kept
//! (`target/bench-data/query-1m.db`, PostgreSQL database
//! `fabric_audit_bench_1m`), so reruns start at once.
//!
//! `cargo bench --bench query` prints the latency table and the deep page
//! ratio at the end.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use criterion::{criterion_group, Criterion};
use fabric_audit::{AuditQuery, AuditRecord, Batch, Cursor, DatabaseSink, Sink, Store};

const ROWS: usize = 1_000_000;
const PAGE: u32 = 50;
const SAMPLES: usize = 200;

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

/// Record `i` of the data set: 30 days, 1 000 actors, 20 actions, 10 000
/// resources; 1 % of actors flagged `admin`, 0.01 % of records `rare`.
fn record(i: usize) -> AuditRecord {
    let actions = ["created", "updated", "deleted", "viewed", "shared"];
    let kinds = ["post", "user", "comment", "file"];
    let kind = kinds[i % 4];
    let mut flags = Vec::new();
    if (i / 7) % 100 == 0 {
        flags.push("admin");
    }
    if i % 10_000 == 0 {
        flags.push("rare");
    }
    AuditRecord::builder(format!("{kind}.{}", actions[(i / 4) % 5]))
        .timestamp(start() + chrono::Duration::milliseconds((i as i64) * 2592))
        .actor_id(format!("u-{}", i % 1000))
        .actor_type(if i % 10 == 0 { "service" } else { "user" })
        .actor_flags(flags)
        .resource(kind, (i % 10_000).to_string())
        .detail("n", i as u64)
        .request_id(format!("req-{i}"))
        .build()
}

/// The database at `url`, loaded with the data set unless it already is.
fn load(rt: &tokio::runtime::Runtime, url: &str) -> Store {
    let mut sink = DatabaseSink::builder(url).keep_forever().build().unwrap();
    let store = rt.block_on(Store::connect(url)).unwrap();
    let last = rt
        .block_on(store.query(&AuditQuery::new().limit(1).unwrap()))
        .unwrap();
    let loaded = last
        .items
        .first()
        .and_then(|r| r.detail_value("n"))
        .map(|v| v.to_json());
    if loaded != Some(serde_json::json!(ROWS - 1)) {
        println!(
            "loading {ROWS} rows into {}…",
            url.split('@').next_back().unwrap_or(url)
        );
        for chunk in (0..ROWS).collect::<Vec<_>>().chunks(5000) {
            let records: Vec<Arc<AuditRecord>> =
                chunk.iter().map(|&i| Arc::new(record(i))).collect();
            sink.write(&Batch::new(&records)).unwrap();
        }
    }
    store
}

fn sqlite_url() -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    std::fs::create_dir_all(&dir).unwrap();
    format!("sqlite://{}", dir.join("query-1m.db").display())
}

fn postgres_url() -> Option<String> {
    if !support::psql("select 1") {
        return None;
    }
    // Kept between runs; it exists already after the first.
    support::psql("CREATE DATABASE fabric_audit_bench_1m");
    Some("postgres://postgres@127.0.0.1:5432/fabric_audit_bench_1m".into())
}

fn filters() -> Vec<(&'static str, AuditQuery)> {
    let mid = start() + chrono::Duration::days(15);
    vec![
        ("newest", AuditQuery::new()),
        ("actor_id", AuditQuery::new().actor_id("u-123")),
        ("actor_type", AuditQuery::new().actor_type("service")),
        ("action", AuditQuery::new().action("comment.shared")),
        ("action_prefix", AuditQuery::new().action("file.")),
        (
            "resource",
            AuditQuery::new().resource_type("user").resource_id("4321"),
        ),
        (
            "from_to_1h",
            AuditQuery::new()
                .from(mid)
                .to(mid + chrono::Duration::hours(1)),
        ),
        ("has_flag_common", AuditQuery::new().has_flag("admin")),
        ("has_flag_rare", AuditQuery::new().has_flag("rare")),
        (
            "combined",
            AuditQuery::new().actor_type("user").action("post.").to(mid),
        ),
    ]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Prints p50 and p99 of each filter; returns the worst p99.
fn latency_table(rt: &tokio::runtime::Runtime, name: &str, store: &Store) -> Duration {
    let mut worst = Duration::ZERO;
    println!("\n{name}: page of {PAGE} over {ROWS} rows ({SAMPLES} runs each)");
    println!("{:<16} {:>10} {:>10} {:>6}", "filter", "p50", "p99", "rows");
    for (label, query) in filters() {
        let query = query.limit(PAGE).unwrap();
        let mut times = Vec::with_capacity(SAMPLES);
        let mut rows = 0;
        for _ in 0..SAMPLES {
            let t = Instant::now();
            rows = rt.block_on(store.query(&query)).unwrap().items.len();
            times.push(t.elapsed());
        }
        times.sort();
        let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
        worst = worst.max(p99);
        println!(
            "{label:<16} {:>8.2}ms {:>8.2}ms {rows:>6}",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
    }
    println!(
        "{name}: worst p99 {:.2} ms (target 5 ms)",
        worst.as_secs_f64() * 1e3
    );
    worst
}

/// The cursor at the start of page `n` of the newest-first walk.
fn cursor_of_page(rt: &tokio::runtime::Runtime, store: &Store, n: usize) -> Cursor {
    let mut query = AuditQuery::new().limit(PAGE).unwrap();
    let mut cursor = None;
    for _ in 1..n {
        let page = rt.block_on(store.query(&query)).unwrap();
        cursor = page.next_cursor;
        query = query.after(cursor.unwrap());
    }
    cursor.unwrap()
}

fn bench_backend(c: &mut Criterion, name: &str, url: Option<String>) {
    let Some(url) = url else {
        println!("{name}: no server, skipped");
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = load(&rt, &url);
    latency_table(&rt, name, &store);
    let deep = cursor_of_page(&rt, &store, 1000);
    let mut group = c.benchmark_group(format!("query_{name}"));
    group.measurement_time(Duration::from_secs(5));
    let first = AuditQuery::new().limit(PAGE).unwrap();
    let thousandth = first.clone().after(deep);
    group.bench_function("page_1", |b| {
        b.iter(|| rt.block_on(store.query(&first)).unwrap())
    });
    group.bench_function("page_1000", |b| {
        b.iter(|| rt.block_on(store.query(&thousandth)).unwrap())
    });
    group.finish();
}

fn query(c: &mut Criterion) {
    bench_backend(c, "sqlite", Some(sqlite_url()));
    bench_backend(c, "postgres", postgres_url());
}

criterion_group!(benches, query);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    for backend in ["sqlite", "postgres"] {
        support::print_ratio(&format!("query_{backend}"), "page_1000", "page_1");
    }
}

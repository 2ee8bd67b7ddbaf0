//! The query API's own cost, in process: three request shapes through the
//! router (tower `oneshot`, no socket), each against the same read on the
//! `Store` in the same run, over 100k SQLite rows with a small detail.
//!
//! The router is set up as `fabric-audit serve` sets it up: the request
//! context layer, bearer tokens, and an `AuditLayer` whose `DatabaseSink`
//! stores each request's `audit.read` record. (That sink writes to a second
//! database file, so that the pages read stay the bench's records rather
//! than the bench's own reads.)
//!
//! Shapes: the newest page of 50 (`newest`), a page of 50 under an action
//! prefix (`prefix`, `action=post.`), and one record by id (`get`).
//!
//! `cargo bench --all-features --bench http` prints, per shape, the
//! router's and the store's median time, their difference (the HTTP
//! layer's own cost on top of the database's: what issue 14's targets
//! bound, 150 µs for `newest`, 30 µs for `get`), the ratio, and the CPU
//! time the process spent per call (all threads: the runtime's, SQLite's
//! blocking threads, the audit worker's). Then, as the machine's load
//! drifts between benches, it times 3 000 rounds of one router call and
//! one store call and prints the medians and the median difference.

mod support;

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use criterion::{Bencher, Criterion};
use fabric_audit::http::{self, BearerTokens, AUDIT_READ};
use fabric_audit::{AuditLayer, AuditQuery, AuditRecord, Batch, DatabaseSink, Sink, Store};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tracing_subscriber::prelude::*;

const ROWS: usize = 100_000;

/// The request shapes: name, and path with query (`{id}`: a stored id).
const SHAPES: [(&str, &str); 3] = [
    ("newest", "/api/v1/audit?limit=50"),
    ("prefix", "/api/v1/audit?action=post.&limit=50"),
    ("get", "/api/v1/audit/{id}"),
];

/// The bench records: three actions, 100 actors (a tenth with a flag),
/// 1 000 posts, one a second back from now, each with a small detail.
fn load(url: &str) -> uuid::Uuid {
    let mut sink = DatabaseSink::builder(url).keep_forever().build().unwrap();
    let now = chrono::Utc::now();
    let mut some_id = uuid::Uuid::nil();
    for chunk in (0..ROWS).collect::<Vec<_>>().chunks(5000) {
        let records: Vec<Arc<AuditRecord>> = chunk
            .iter()
            .map(|&i| {
                let b = AuditRecord::builder(["post.created", "post.deleted", "user.login"][i % 3])
                    .timestamp(now - chrono::Duration::seconds(i as i64))
                    .actor_id(format!("u-{}", i % 100))
                    .actor_type("user")
                    .actor_flags(if i % 10 == 0 { vec!["admin"] } else { vec![] })
                    .resource("post", (i % 1000).to_string())
                    .request_id(format!("req-{i:08x}"))
                    .client_ip("10.1.2.3")
                    .detail("n", i as u64)
                    .detail("title", format!("Post number {i}"))
                    .detail("words", 120 + (i % 50) as i64)
                    .detail("draft", i % 2 == 0)
                    .detail("ratio", 0.5);
                Arc::new(b.build())
            })
            .collect();
        if some_id.is_nil() {
            some_id = records[records.len() / 2].id();
        }
        sink.write(&Batch::new(&records)).unwrap();
    }
    some_id
}

/// CPU time, in nanoseconds, of every thread of this process (Linux's
/// `schedstat`; `None` elsewhere). Read once per batch of iterations.
fn process_cpu_ns() -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path().join("schedstat");
        // A thread that ended since the listing counts no more.
        if let Ok(text) = std::fs::read_to_string(path) {
            total += text.split_whitespace().next()?.parse::<u64>().ok()?;
        }
    }
    Some(total)
}

/// CPU nanoseconds and iterations measured for one bench.
#[derive(Default)]
struct CpuTally {
    ns: Cell<u64>,
    iters: Cell<u64>,
}

impl CpuTally {
    fn per_iter_us(&self) -> Option<f64> {
        (self.iters.get() > 0).then(|| self.ns.get() as f64 / self.iters.get() as f64 / 1e3)
    }
}

/// Times `iters` runs of `run`, and adds the process's CPU time to `cpu`.
fn timed(b: &mut Bencher<'_>, cpu: &CpuTally, mut run: impl FnMut()) {
    b.iter_custom(|iters| {
        let cpu_before = process_cpu_ns();
        let start = Instant::now();
        for _ in 0..iters {
            run();
        }
        let wall = start.elapsed();
        if let (Some(before), Some(after)) = (cpu_before, process_cpu_ns()) {
            cpu.ns.set(cpu.ns.get() + after.saturating_sub(before));
            cpu.iters.set(cpu.iters.get() + iters);
        }
        wall
    });
}

/// Rounds of one router call then one store call, timed each: the
/// machine's load, which drifts between criterion's benches, weighs on both
/// calls of a round alike.
const PAIRS: usize = 3000;

/// The median router time, store time and per-round difference, in µs.
fn pairs(rounds: usize, mut router: impl FnMut(), mut store: impl FnMut()) -> (f64, f64, f64) {
    let mut times: Vec<(f64, f64)> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            router();
            let middle = Instant::now();
            store();
            let end = Instant::now();
            let us = |d: Duration| d.as_secs_f64() * 1e6;
            (us(middle - start), us(end - middle))
        })
        .collect();
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let differences = times.iter().map(|(r, s)| r - s).collect();
    let stores = times.iter().map(|(_, s)| *s).collect();
    let routers = times.drain(..).map(|(r, _)| r).collect();
    (median(routers), median(stores), median(differences))
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    let reads_url = format!("sqlite://{}", dir.path().join("reads.db").display());
    let id = load(&url);

    let (layer, audit) = AuditLayer::builder()
        .sink(
            "database",
            DatabaseSink::builder(&reads_url)
                .keep_forever()
                .build_lazy()
                .unwrap(),
        )
        .build()
        .unwrap();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer)).unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(Store::connect(&url)).unwrap();
    let app: axum::Router = http::router(
        store.clone(),
        BearerTokens::new().token("bench", "t", [AUDIT_READ]),
    )
    .layer(http::request_context());
    let newest = AuditQuery::new().limit(50).unwrap();
    let prefix = AuditQuery::new().action("post.").limit(50).unwrap();

    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let tallies: Vec<(CpuTally, CpuTally)> = SHAPES.iter().map(|_| Default::default()).collect();
    let mut paired = Vec::new();
    for ((name, path), (router_cpu, store_cpu)) in SHAPES.iter().zip(&tallies) {
        let uri = path.replace("{id}", &id.to_string());
        let mut group = c.benchmark_group(format!("http_{name}"));
        let call_router = || {
            rt.block_on(async {
                let request = Request::get(uri.as_str())
                    .header("authorization", "Bearer t")
                    .header("user-agent", "bench/1.0")
                    .body(Body::empty())
                    .unwrap();
                let response = app.clone().oneshot(request).await.unwrap();
                assert!(response.status().is_success());
                let body = response.into_body().collect().await.unwrap().to_bytes();
                assert!(body.len() > 100);
            })
        };
        let call_store = || {
            rt.block_on(async {
                match *name {
                    "newest" => assert_eq!(store.query(&newest).await.unwrap().items.len(), 50),
                    "prefix" => assert_eq!(store.query(&prefix).await.unwrap().items.len(), 50),
                    _ => assert!(store.get(id).await.unwrap().is_some()),
                }
            })
        };
        group.bench_function("router", |b| timed(b, router_cpu, call_router));
        group.bench_function("store", |b| timed(b, store_cpu, call_store));
        paired.push((*name, pairs(PAIRS, call_router, call_store)));
        group.finish();
    }
    c.final_summary();

    let report = rt.block_on(audit.shutdown());
    assert!(report.is_lossless(), "{report}");
    println!("audit.read records: {report}");
    for ((name, _), (router_cpu, store_cpu)) in SHAPES.iter().zip(&tallies) {
        let group = format!("http_{name}");
        let (Some(router), Some(store)) = (
            support::median_ns(&group, "router"),
            support::median_ns(&group, "store"),
        ) else {
            continue;
        };
        let cpu = |t: &CpuTally| {
            t.per_iter_us()
                .map_or("?".into(), |us| format!("{us:.1} µs"))
        };
        println!(
            "http {name}: router {:.1} µs, store {:.1} µs, router - store = {:.1} µs ({:.2}x); \
             process CPU per call: router {}, store {}",
            router / 1e3,
            store / 1e3,
            (router - store) / 1e3,
            router / store,
            cpu(router_cpu),
            cpu(store_cpu),
        );
    }
    for (name, (router, store, difference)) in paired {
        println!(
            "http {name}, {PAIRS} paired rounds, medians: router {router:.1} µs, store {store:.1} µs, \
             router - store (per round) = {difference:.1} µs"
        );
    }
}

//! Requests/s for a filtered page of 50 over 100k rows through the query
//! router in process (authorization, parameters, audit of the read, JSON),
//! against the same query straight on the store.
//!
//! `cargo bench --all-features --bench http` prints both rates and the
//! ratio at the end.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use criterion::{criterion_group, Criterion, Throughput};
use fabric_audit::http::{self, BearerTokens, AUDIT_READ};
use fabric_audit::{AuditQuery, AuditRecord, Batch, DatabaseSink, Sink, Store};
use http_body_util::BodyExt;
use tower::ServiceExt;

const ROWS: usize = 100_000;

fn load(rt: &tokio::runtime::Runtime, url: &str) -> Store {
    let mut sink = DatabaseSink::builder(url).keep_forever().build().unwrap();
    let now = chrono::Utc::now();
    for chunk in (0..ROWS).collect::<Vec<_>>().chunks(5000) {
        let records: Vec<Arc<AuditRecord>> = chunk
            .iter()
            .map(|&i| {
                let b = AuditRecord::builder(["post.created", "post.deleted", "user.login"][i % 3])
                    .timestamp(now - chrono::Duration::seconds(i as i64))
                    .actor_id(format!("u-{}", i % 100))
                    .resource("post", (i % 1000).to_string())
                    .detail("n", i as u64);
                Arc::new(b.build())
            })
            .collect();
        sink.write(&Batch::new(&records)).unwrap();
    }
    rt.block_on(Store::connect(url)).unwrap()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = load(&rt, &url);
    let app = http::router(
        store.clone(),
        BearerTokens::new().token("bench", "t", [AUDIT_READ]),
    );
    let query = AuditQuery::new().action("post.").limit(50).unwrap();

    let mut group = c.benchmark_group("http");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("router", |b| {
        b.iter(|| {
            rt.block_on(async {
                let request = Request::get("/api/v1/audit?action=post.&limit=50")
                    .header("authorization", "Bearer t")
                    .body(Body::empty())
                    .unwrap();
                let response = app.clone().oneshot(request).await.unwrap();
                assert!(response.status().is_success());
                response.into_body().collect().await.unwrap().to_bytes()
            })
        })
    });
    group.bench_function("store", |b| {
        b.iter(|| rt.block_on(store.query(&query)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);

fn main() {
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
    for name in ["router", "store"] {
        if let Some(ns) = support::median_ns("http", name) {
            println!("http/{name}: {:.0} requests/s", 1e9 / ns);
        }
    }
    support::print_ratio("http", "router", "store");
}

//! Sustained rows/s from `audit!` to committed rows: 200k events, on SQLite
//! and (when the server is there) PostgreSQL.
//!
//! Baseline: the same rows, built beforehand, written by plain synchronous
//! Diesel on one thread: multi-row INSERTs of 1 000 rows, one transaction
//! per batch, into the same schema and indexes (the crate's migrations).
//! PostgreSQL uses the same pure-Rust driver on both sides
//! (`AsyncConnectionWrapper<AsyncPgConnection>`), so the ratio measures the
//! pipeline, not the driver.
//!
//! `pipeline_unchained` is the pipeline with the sink's hash chain off:
//! what chaining costs.
//!
//! `cargo bench --bench db_sink` prints rows/s and the ratios at the end.

mod support;

use std::time::Duration;

use criterion::{criterion_group, Criterion, Throughput};
use diesel::prelude::*;
use fabric_audit::{AuditLayer, DatabaseSink};
use support::Scratch;

const EVENTS: u64 = 200_000;

/// The crate's table, as the baseline writes it.
mod schema {
    #![allow(missing_docs)]
    diesel::table! {
        audit_events (id) {
            id -> Text, timestamp_us -> BigInt, action -> Text,
            actor_id -> Nullable<Text>, actor_type -> Nullable<Text>, actor_email -> Nullable<Text>,
            actor_name -> Nullable<Text>, actor_flags -> Text, resource_type -> Nullable<Text>,
            resource_id -> Nullable<Text>, detail -> Text, request_id -> Nullable<Text>,
            client_ip -> Nullable<Text>, user_agent -> Nullable<Text>,
        }
    }
}

use schema::audit_events;

/// The bench event's row, as the sink writes it.
#[derive(Insertable, Clone)]
#[diesel(table_name = audit_events, treat_none_as_default_value = false)]
struct Row {
    id: String,
    timestamp_us: i64,
    action: String,
    actor_id: Option<String>,
    actor_type: Option<String>,
    actor_email: Option<String>,
    actor_name: Option<String>,
    actor_flags: String,
    resource_type: Option<String>,
    resource_id: Option<String>,
    detail: String,
    request_id: Option<String>,
    client_ip: Option<String>,
    user_agent: Option<String>,
}

fn rows() -> Vec<Row> {
    (0..EVENTS)
        .map(|_| Row {
            id: uuid::Uuid::now_v7().to_string(),
            timestamp_us: chrono::Utc::now().timestamp_micros(),
            action: "post.updated".into(),
            actor_id: Some("u-42".into()),
            actor_type: Some("user".into()),
            actor_email: None,
            actor_name: None,
            actor_flags: "[]".into(),
            resource_type: Some("post".into()),
            resource_id: Some("4242".into()),
            detail:
                r#"{"title":"Hello, world","words":120,"draft":false,"ratio":0.5,"editor":"web"}"#
                    .into(),
            request_id: Some("req-7f3a9c".into()),
            client_ip: Some("10.1.2.3".into()),
            user_agent: Some("bench/1.0".into()),
        })
        .collect()
}

/// Emits `EVENTS` events into a database sink (hash-chained or not) and
/// waits until committed.
fn pipeline(url: &str, chained: bool) -> Duration {
    let sink = DatabaseSink::builder(url).keep_forever().build().unwrap();
    let builder = if chained {
        AuditLayer::builder().sink("database", sink)
    } else {
        AuditLayer::builder().sink("database", support::Unchained(sink))
    };
    let (elapsed, report) = support::emit_and_flush(builder, EVENTS);
    assert_eq!(
        report.sink("database").unwrap().written(),
        EVENTS,
        "{report}"
    );
    elapsed
}

/// Inserts prebuilt rows, 1 000 per statement and transaction (a macro:
/// each connection type is its own Diesel backend).
macro_rules! baseline {
    ($conn:expr, $rows:expr) => {{
        let conn = $conn;
        support::timed(|| {
            for chunk in $rows.chunks(1000) {
                conn.transaction::<_, diesel::result::Error, _>(|c| {
                    diesel::insert_into(audit_events::table)
                        .values(chunk)
                        .execute(c)?;
                    Ok(())
                })
                .unwrap();
            }
        })
    }};
}

fn bench_backend(c: &mut Criterion, name: &str, scratch: impl Fn() -> Option<Scratch>) {
    let Some(probe) = scratch() else {
        println!("{name}: no server, skipped");
        return;
    };
    drop(probe);
    let mut group = c.benchmark_group(format!("db_sink_{name}"));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(30));
    group.throughput(Throughput::Elements(EVENTS));
    group.bench_function("pipeline", |b| {
        b.iter_custom(|iters| {
            support::sum_of_runs(iters, || pipeline(&scratch().unwrap().url, true))
        })
    });
    group.bench_function("pipeline_unchained", |b| {
        b.iter_custom(|iters| {
            support::sum_of_runs(iters, || pipeline(&scratch().unwrap().url, false))
        })
    });
    let rows = rows();
    group.bench_function("diesel_sync_inserts", |b| {
        b.iter_custom(|iters| {
            support::sum_of_runs(iters, || {
                    let db = scratch().unwrap();
                    fabric_audit::migrate(&db.url).unwrap();
                    if name == "sqlite" {
                        let path = db.url.trim_start_matches("sqlite://");
                        let mut conn = diesel::SqliteConnection::establish(path).unwrap();
                        diesel::connection::SimpleConnection::batch_execute(
                            &mut conn,
                            "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;",
                        )
                        .unwrap();
                        baseline!(&mut conn, &rows)
                    } else {
                        let mut conn = diesel_async::async_connection_wrapper::AsyncConnectionWrapper::<
                            diesel_async::AsyncPgConnection,
                        >::establish(&db.url)
                        .unwrap();
                        baseline!(&mut conn, &rows)
                    }
            })
        })
    });
    group.finish();
}

fn db_sink(c: &mut Criterion) {
    bench_backend(c, "sqlite", || Some(Scratch::sqlite()));
    bench_backend(c, "postgres", Scratch::postgres);
}

criterion_group!(benches, db_sink);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    for backend in ["sqlite", "postgres"] {
        let group = format!("db_sink_{backend}");
        for bench in ["pipeline", "pipeline_unchained", "diesel_sync_inserts"] {
            if let Some(ns) = support::median_ns(&group, bench) {
                println!("{group}/{bench}: {:.0} rows/s", EVENTS as f64 / (ns / 1e9));
            }
        }
        if let Some(r) = support::print_ratio(&group, "diesel_sync_inserts", "pipeline") {
            println!("{backend}: pipeline throughput = {r:.3}x the baseline's");
        }
        if let Some(r) = support::print_ratio(&group, "pipeline_unchained", "pipeline") {
            println!(
                "{backend}: hash chains: chained throughput = {r:.3}x the unchained pipeline's"
            );
        }
    }
}

//! Records/s from a JetStream stream into PostgreSQL through the collector
//! (`NatsCollector`, default settings: durable pull consumer, 1 000
//! records per transaction, idempotent import, acknowledgement after the
//! commit), against the baseline: the `DatabaseSink` writing the same
//! 50 000 records straight into PostgreSQL, 1 000 per batch.
//!
//! Each run gets a fresh, migrated scratch database; the collector's runs
//! also a stream pre-filled with the records (outside the timing). The
//! collector is timed from `run` until its progress reports every record
//! stored (progress every 10 ms); the sink from `build` to `close`.
//!
//! `cargo bench --features nats,postgres --bench nats_collect` prints
//! records/s and the ratio at the end. Skipped (with a line saying so)
//! when no NATS server answers on 127.0.0.1:4222 or PostgreSQL on
//! 127.0.0.1:5432.

mod support;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, SamplingMode, Throughput};
use fabric_audit::{AuditRecord, Batch, DatabaseSink, NatsCollector, NatsSink, NatsStream, Sink};
use support::Scratch;

const URL: &str = "nats://127.0.0.1:4222";
const RECORDS: usize = 50_000;
const BATCH: usize = 1000;
const GROUP: &str = "nats_collect";

fn records() -> Vec<Arc<AuditRecord>> {
    (0..RECORDS)
        .map(|i| {
            Arc::new(
                AuditRecord::builder("post.created")
                    .actor_id("user-42")
                    .resource("post", i.to_string())
                    .build(),
            )
        })
        .collect()
}

/// A migrated scratch PostgreSQL database, dropped with it.
fn migrated_postgres() -> Option<Scratch> {
    let db = Scratch::postgres()?;
    fabric_audit::migrate(&db.url).unwrap();
    Some(db)
}

/// A fresh stream holding `records`.
fn filled_stream(records: &[Arc<AuditRecord>]) -> (NatsStream, String) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("C{id}");
    let target = NatsStream::new(URL)
        .stream(&name)
        .subject_prefix(format!("c{id}"));
    let mut sink = NatsSink::builder(target.clone()).build().unwrap();
    sink.open().unwrap();
    for chunk in records.chunks(BATCH) {
        sink.write(&Batch::new(chunk)).unwrap();
    }
    sink.close().unwrap();
    (target, name)
}

/// The collector drains a pre-filled stream into a fresh database.
fn collector_run(rt: &tokio::runtime::Runtime, records: &[Arc<AuditRecord>]) -> Duration {
    let db = migrated_postgres().unwrap();
    let (target, name) = filled_stream(records);
    let collector = NatsCollector::builder(target, &db.url)
        .progress_every(Duration::from_millis(10))
        .build()
        .unwrap();
    let all = Arc::new(tokio::sync::Notify::new());
    let done_at = Arc::new(OnceLock::new());
    let (notify, done) = (Arc::clone(&all), Arc::clone(&done_at));
    let start = Instant::now();
    let total = rt
        .block_on(collector.run(all.notified(), move |p| {
            if p.stored >= RECORDS as u64 && done.set(Instant::now()).is_ok() {
                notify.notify_one();
            }
        }))
        .unwrap();
    let took = done_at.get().unwrap().duration_since(start);
    assert_eq!(total.stored, RECORDS as u64, "{total:?}");
    rt.block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(URL).await.unwrap());
        js.delete_stream(&name).await.unwrap();
    });
    took
}

/// The database sink writes the same records into a fresh database.
fn direct_run(records: &[Arc<AuditRecord>]) -> Duration {
    let db = migrated_postgres().unwrap();
    support::timed(|| {
        let mut sink = DatabaseSink::builder(&db.url).build().unwrap();
        for chunk in records.chunks(BATCH) {
            sink.write(&Batch::new(chunk)).unwrap();
        }
        sink.close().unwrap();
    })
}

fn bench(c: &mut Criterion) {
    if std::net::TcpStream::connect("127.0.0.1:4222").is_err() {
        println!("{GROUP}: no NATS server on 127.0.0.1:4222, skipped");
        return;
    }
    let Some(probe) = migrated_postgres() else {
        println!("{GROUP}: no PostgreSQL on 127.0.0.1:5432, skipped");
        return;
    };
    drop(probe);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let records = records();
    let mut group = c.benchmark_group(GROUP);
    // One run per sample: a run is a second or more, plus its set-up.
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.bench_function("database_sink", |b| {
        b.iter_custom(|iters| support::sum_of_runs(iters, || direct_run(&records)))
    });
    group.bench_function("collector", |b| {
        b.iter_custom(|iters| support::sum_of_runs(iters, || collector_run(&rt, &records)))
    });
    group.finish();
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    for bench in ["collector", "database_sink"] {
        if let Some(ns) = support::median_ns(GROUP, bench) {
            println!(
                "{GROUP}/{bench}: {:.0} records/s",
                RECORDS as f64 / (ns / 1e9)
            );
        }
    }
    // Time ratio inverted: the collector's throughput as a share of the
    // direct writes'.
    if let Some(r) = support::print_ratio(GROUP, "database_sink", "collector") {
        println!("{GROUP}: collector throughput = {r:.3}x the database sink's (target >= 0.8x)");
    }
}

//! Acknowledged records/s from the NATS sink into a JetStream stream with
//! file storage on the local server (127.0.0.1:4222), against the
//! baseline: plain `async-nats` JetStream publishing of the same JSON
//! payloads with the same `Nats-Msg-Id` and the same window (1 024
//! unacknowledged publishes), awaited the same way.
//!
//! `cargo bench --features nats --bench nats` prints records/s and the
//! ratio at the end. Skipped (with a line saying so) when no server
//! answers.

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage, stream};
use criterion::{criterion_group, Criterion, Throughput};
use fabric_audit::{AuditRecord, Batch, NatsSink, NatsStream, Sink};
use futures_util::stream::{FuturesOrdered, StreamExt};

const URL: &str = "nats://127.0.0.1:4222";
const RECORDS: usize = 50_000;
const BATCH: usize = 1024;
const WINDOW: usize = 1024;

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

fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Publishes `records` to a fresh stream through the sink; seconds taken.
fn sink_run(records: &[Arc<AuditRecord>]) -> f64 {
    let id = unique();
    let target = NatsStream::new(URL)
        .stream(format!("B{id}"))
        .subject_prefix(format!("b{id}"));
    let mut sink = NatsSink::builder(target).window(WINDOW).build().unwrap();
    sink.open().unwrap();
    let start = Instant::now();
    for chunk in records.chunks(BATCH) {
        sink.write(&Batch::new(chunk)).unwrap();
    }
    let took = start.elapsed().as_secs_f64();
    sink.close().unwrap();
    drop_stream(&format!("B{id}"));
    took
}

/// The same payloads, published with async-nats directly; seconds taken.
fn baseline_run(rt: &tokio::runtime::Runtime, records: &[Arc<AuditRecord>]) -> f64 {
    let id = unique();
    let payloads: Vec<(String, bytes::Bytes)> = records
        .iter()
        .map(|r| (r.id().to_string(), serde_json::to_vec(&**r).unwrap().into()))
        .collect();
    let took = rt.block_on(async {
        let client = async_nats::connect(URL).await.unwrap();
        let js = jetstream::ContextBuilder::new()
            .max_ack_inflight(WINDOW)
            .backpressure_on_inflight(true)
            .build(client);
        js.create_stream(stream::Config {
            name: format!("B{id}"),
            subjects: vec![format!("b{id}.>")],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .unwrap();
        let subject = format!("b{id}.post.created");
        let start = Instant::now();
        let mut pending = FuturesOrdered::new();
        for (msg_id, payload) in payloads {
            let message = PublishMessage::build().payload(payload).message_id(msg_id);
            let ack = js.send_publish(subject.clone(), message).await.unwrap();
            pending.push_back(ack.into_future());
            if pending.len() >= WINDOW {
                pending.next().await.unwrap().unwrap();
            }
        }
        while let Some(ack) = pending.next().await {
            ack.unwrap();
        }
        start.elapsed().as_secs_f64()
    });
    drop_stream(&format!("B{id}"));
    took
}

fn drop_stream(name: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let js = jetstream::new(async_nats::connect(URL).await.unwrap());
        js.delete_stream(name).await.unwrap();
    });
}

fn bench(c: &mut Criterion) {
    if std::net::TcpStream::connect("127.0.0.1:4222").is_err() {
        eprintln!("nats: no server on 127.0.0.1:4222, skipped");
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let records = records();
    let mut group = c.benchmark_group("nats");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(RECORDS as u64));
    let (mut sink_secs, mut base_secs) = (Vec::new(), Vec::new());
    group.bench_function("baseline_async_nats", |b| {
        b.iter_custom(|iters| {
            let took: f64 = (0..iters).map(|_| baseline_run(&rt, &records)).sum();
            base_secs.push(took / iters as f64);
            Duration::from_secs_f64(took)
        })
    });
    group.bench_function("nats_sink", |b| {
        b.iter_custom(|iters| {
            let took: f64 = (0..iters).map(|_| sink_run(&records)).sum();
            sink_secs.push(took / iters as f64);
            Duration::from_secs_f64(took)
        })
    });
    group.finish();
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (sink, base) = (median(&mut sink_secs), median(&mut base_secs));
    let rate = |secs: f64| RECORDS as f64 / secs;
    println!(
        "nats: sink {:.0} records/s acknowledged, async-nats baseline {:.0}/s, ratio {:.2}x",
        rate(sink),
        rate(base),
        base / sink
    );
}

criterion_group!(benches, bench);

fn main() {
    benches();
    criterion::Criterion::default().final_summary();
}

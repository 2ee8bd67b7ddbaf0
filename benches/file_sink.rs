//! Sustained throughput from `audit!` to a flushed JSON-lines file: one
//! thread emits 1M events (8 fields, 2 spans), then flushes.
//!
//! Baseline: the same 1M records, built beforehand, serialized with
//! serde_json into a `BufWriter`'d file on one thread and flushed: the
//! hand-rolled synchronous writer.
//!
//! `pipeline_unchained` is the pipeline with the file sink's hash chain
//! off: what chaining costs. `pipeline_checkpointed` adds signed
//! checkpoints at their defaults (every 10 000 records and every minute,
//! Ed25519): what checkpointing costs on top.
//!
//! `cargo bench --bench file_sink` prints events/s and the ratios at the end.

mod support;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, Criterion, Throughput};
use fabric_audit::{AuditLayer, AuditRecord, FileSink};

const EVENTS: u64 = 1_000_000;

fn record() -> AuditRecord {
    AuditRecord::builder("post.updated")
        .actor_id("u-42")
        .actor_type("user")
        .resource("post", "4242")
        .detail("title", "Hello, world")
        .detail("words", 120)
        .detail("draft", false)
        .detail("ratio", 0.5)
        .detail("editor", "web")
        .request_id("req-7f3a9c")
        .client_ip("10.1.2.3")
        .user_agent("bench/1.0")
        .build()
}

fn file_sink(c: &mut Criterion) {
    let mut group = c.benchmark_group("file_sink");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(EVENTS));

    group.bench_function("pipeline", |b| {
        b.iter_custom(|iters| {
            support::sum_of_runs(iters, || {
                let dir = tempfile::tempdir().unwrap();
                let builder = AuditLayer::builder().file(dir.path().join("audit.jsonl"));
                let (elapsed, report) = support::emit_and_flush(builder, EVENTS);
                assert_eq!(report.sink("file").unwrap().written(), EVENTS, "{report}");
                elapsed
            })
        })
    });

    // With signed checkpoints at their defaults: what they cost on top.
    let key = fabric_audit::checkpoint::SigningKey::generate("bench").unwrap();
    let key_text = key.to_secret_text();
    group.bench_function("pipeline_checkpointed", |b| {
        b.iter_custom(|iters| {
            support::sum_of_runs(iters, || {
                let dir = tempfile::tempdir().unwrap();
                let key = fabric_audit::checkpoint::SigningKey::parse(&key_text).unwrap();
                let builder = AuditLayer::builder()
                    .file(dir.path().join("audit.jsonl"))
                    .checkpoint_key(key);
                let (elapsed, report) = support::emit_and_flush(builder, EVENTS);
                assert_eq!(report.sink("file").unwrap().written(), EVENTS, "{report}");
                elapsed
            })
        })
    });

    // The same without hash chains: what chaining costs.
    group.bench_function("pipeline_unchained", |b| {
        b.iter_custom(|iters| {
            support::sum_of_runs(iters, || {
                let dir = tempfile::tempdir().unwrap();
                let file = FileSink::builder(dir.path().join("audit.jsonl"))
                    .build()
                    .unwrap();
                let builder = AuditLayer::builder().sink("file", support::Unchained(file));
                let (elapsed, report) = support::emit_and_flush(builder, EVENTS);
                assert_eq!(report.sink("file").unwrap().written(), EVENTS, "{report}");
                elapsed
            })
        })
    });

    let records: Vec<Arc<AuditRecord>> = (0..EVENTS).map(|_| Arc::new(record())).collect();
    group.bench_function("serde_json_bufwriter", |b| {
        b.iter_custom(|iters| {
            support::sum_of_runs(iters, || {
                let dir = tempfile::tempdir().unwrap();
                let file = File::create(dir.path().join("audit.jsonl")).unwrap();
                support::timed(|| {
                    let mut out = BufWriter::new(file);
                    for record in &records {
                        serde_json::to_writer(&mut out, &**record).unwrap();
                        out.write_all(b"\n").unwrap();
                    }
                    out.flush().unwrap();
                })
            })
        })
    });
    group.finish();
}

criterion_group!(benches, file_sink);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    for bench in [
        "pipeline",
        "pipeline_checkpointed",
        "pipeline_unchained",
        "serde_json_bufwriter",
    ] {
        if let Some(ns) = support::median_ns("file_sink", bench) {
            println!("{bench}: {:.0} events/s", EVENTS as f64 / (ns / 1e9));
        }
    }
    // Throughput ratio: baseline time over ours.
    if let Some(r) = support::print_ratio("file_sink", "serde_json_bufwriter", "pipeline") {
        println!("pipeline throughput = {r:.3}x the baseline's");
    }
    if let Some(r) = support::print_ratio("file_sink", "pipeline_unchained", "pipeline") {
        println!("hash chains: chained throughput = {r:.3}x the unchained pipeline's");
    }
    if let Some(r) = support::print_ratio("file_sink", "pipeline", "pipeline_checkpointed") {
        println!("checkpoints: checkpointed throughput = {r:.3}x the chained pipeline's");
    }
    if let Some(r) =
        support::print_ratio("file_sink", "pipeline_unchained", "pipeline_checkpointed")
    {
        println!("chains and checkpoints: throughput = {r:.3}x the unchained pipeline's");
    }
}

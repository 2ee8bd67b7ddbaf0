//! The caller's cost of one `audit!`: 8 fields inside 2 spans carrying the
//! actor and the request context.
//!
//! Baseline: the same event through `tracing_subscriber::fmt().json()`
//! writing to `tracing_appender::non_blocking(std::io::sink())`, which is
//! what a user would otherwise hand-roll. Also: the same event outside the
//! spans, an event with only its action, and the cost of a non-audit
//! `info!` with the audit layer installed.
//!
//! `cargo bench --bench emit` prints the ratio at the end.

mod support;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, Criterion};
use fabric_audit::{sinks, AuditLayer};
use tracing_subscriber::prelude::*;

/// Discards records: the bench measures the caller's side only.
fn discard() -> impl fabric_audit::Sink + Send {
    sinks::from_fn(|batch| {
        black_box(batch.len());
        Ok(())
    })
}

fn emit(c: &mut Criterion) {
    let mut group = c.benchmark_group("emit");
    group.measurement_time(Duration::from_secs(5));

    // A queue large enough that no record is dropped while measuring
    // (checked below): a drop would be cheaper than a real enqueue.
    let (layer, audit) = AuditLayer::builder()
        .sink("discard", discard())
        .queue_capacity(1 << 20)
        .build()
        .unwrap();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    tracing::dispatcher::with_default(&dispatch, || {
        support::in_request(|| group.bench_function("audit", |b| b.iter(|| audit_event!())));
        group.bench_function("audit_nospan", |b| b.iter(|| audit_event!()));
        group.bench_function("audit_1field", |b| {
            b.iter(|| fabric_audit::audit!(action = "x"))
        });
    });
    let report = audit.shutdown_blocking();
    assert_eq!(report.sink("discard").unwrap().dropped(), 0, "{report}");

    let (writer, _guard) = tracing_appender::non_blocking(std::io::sink());
    let fmt_json = tracing_subscriber::fmt()
        .json()
        .with_writer(writer)
        .with_max_level(tracing::Level::INFO)
        .finish();
    tracing::subscriber::with_default(fmt_json, || {
        support::in_request(|| {
            group.bench_function("fmt_json_non_blocking", |b| b.iter(|| plain_event!()))
        });
    });

    let (layer, audit) = AuditLayer::builder()
        .sink("discard", discard())
        .build()
        .unwrap();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    tracing::dispatcher::with_default(&dispatch, || {
        group.bench_function("non_audit_info", |b| {
            b.iter(|| tracing::info!(target: "app", answer = black_box(42), "request handled"))
        });
    });
    assert_eq!(audit.shutdown_blocking().emitted(), 0);
    group.finish();
}

criterion_group!(benches, emit);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    support::print_ratio("emit", "audit", "fmt_json_non_blocking");
    if let Some(ns) = support::median_ns("emit", "non_audit_info") {
        println!("non-audit INFO event with the audit layer installed: {ns:.2} ns");
    }
}

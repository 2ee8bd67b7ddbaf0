//! How fast `verify` reads chained records: a directory of the file sink's
//! files, and a SQLite database written by the database sink.
//!
//! Baseline (files): reading the same lines into records with serde_json
//! and nothing else, the least any reader of the log does; the ratio is
//! what following the chains (re-serializing, hashing) costs on top.
//! Targets (issue 9): at least 500 000 records/s from files and 200 000
//! rows/s from SQLite.
//!
//! `cargo bench --bench verify` prints records/s and the ratio at the end.

mod support;

use std::io::{BufRead, BufReader};
use std::time::Duration;

use criterion::{criterion_group, Criterion, Throughput};
use fabric_audit::{AuditLayer, AuditRecord, DatabaseSink, FileSink, Store};

const FILE_RECORDS: u64 = 500_000;
const ROWS: u64 = 200_000;

fn verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));

    let dir = tempfile::tempdir().unwrap();
    let file = FileSink::builder(dir.path().join("audit.jsonl"))
        .build()
        .unwrap();
    let (_, report) =
        support::emit_and_flush(AuditLayer::builder().sink("file", file), FILE_RECORDS);
    assert_eq!(
        report.sink("file").unwrap().written(),
        FILE_RECORDS,
        "{report}"
    );

    group.throughput(Throughput::Elements(FILE_RECORDS));
    group.bench_function("files", |b| {
        b.iter(|| {
            let v = fabric_audit::verify::verify_files(dir.path()).unwrap();
            assert!(v.is_intact() && v.chained() == FILE_RECORDS, "{v:?}");
        })
    });
    group.bench_function("files_parse_only", |b| {
        b.iter(|| {
            let mut n = 0_u64;
            for entry in std::fs::read_dir(dir.path()).unwrap() {
                let reader = BufReader::with_capacity(
                    1 << 20,
                    std::fs::File::open(entry.unwrap().path()).unwrap(),
                );
                for line in reader.split(b'\n') {
                    let _: AuditRecord = serde_json::from_slice(&line.unwrap()).unwrap();
                    n += 1;
                }
            }
            assert_eq!(n, FILE_RECORDS);
        })
    });

    let db_dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", db_dir.path().join("audit.db").display());
    let sink = DatabaseSink::builder(&url).keep_forever().build().unwrap();
    let (_, report) = support::emit_and_flush(AuditLayer::builder().sink("database", sink), ROWS);
    assert_eq!(report.sink("database").unwrap().written(), ROWS, "{report}");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = runtime.block_on(Store::connect(&url)).unwrap();
    group.throughput(Throughput::Elements(ROWS));
    group.bench_function("sqlite", |b| {
        b.iter(|| {
            let v = runtime.block_on(store.verify(None)).unwrap();
            assert!(v.is_intact() && v.chained() == ROWS, "{v:?}");
        })
    });
    group.finish();
}

criterion_group!(benches, verify);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    for (bench, n) in [
        ("files", FILE_RECORDS),
        ("files_parse_only", FILE_RECORDS),
        ("sqlite", ROWS),
    ] {
        if let Some(ns) = support::median_ns("verify", bench) {
            println!("verify/{bench}: {:.0} records/s", n as f64 / (ns / 1e9));
        }
    }
    if let Some(r) = support::print_ratio("verify", "files_parse_only", "files") {
        println!("verify files throughput = {r:.3}x parsing alone");
    }
}

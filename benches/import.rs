//! `fabric-audit import` at sink speed: 1M records from a JSON-lines file
//! into a fresh SQLite database and (when the server is there) PostgreSQL,
//! from a time-ordered file and from the same records shuffled.
//!
//! Baseline, in the same run: the same records written into a fresh
//! database by the `DatabaseSink` as its worker does (batches of 1 024,
//! the layer's default), the records parsed from the same file beforehand
//! and only the writes timed: "sink speed".
//!
//! The files are generated once and kept (`target/bench-data/import-*`).
//! A 1M-record import takes seconds, so the 1M figures are single timed
//! runs, printed at the end with their ratio to the baseline
//! (`FABRIC_AUDIT_IMPORT_RECORDS` changes the size); criterion samples the
//! same code on 20 000 records (`import_sqlite_20k`).
//!
//! `cargo bench --all-features --bench import` prints rows/s and ratios.

mod support;

use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, Criterion, Throughput};
use fabric_audit::{AuditRecord, Batch, DatabaseSink, RecordFile, Sink};
use support::Scratch;

/// The layer's default batch: what the sink's worker writes at once.
const SINK_BATCH: usize = 1024;

fn records_wanted() -> usize {
    std::env::var("FABRIC_AUDIT_IMPORT_RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000)
}

/// SplitMix64: a deterministic stream for the data set and the shuffle.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Record `i` as a file sink writes it (about 585 bytes; the user who
/// reported the slow import had 419): 30 days, 5 000 actors, 25 actions, 200 000 resources, a hash
/// chain; 1 % of actors flagged `admin`.
fn line(i: usize) -> String {
    let r = mix(i as u64);
    let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let at = start + chrono::Duration::microseconds(i as i64 * 2_592_000);
    let id = uuid::Builder::from_unix_timestamp_millis(
        at.timestamp_millis() as u64,
        &mix(r).to_le_bytes().repeat(2)[..10].try_into().unwrap(),
    )
    .into_uuid();
    let kinds = ["post", "user", "comment", "file", "invoice"];
    let actions = ["created", "updated", "deleted", "viewed", "shared"];
    let kind = kinds[(r % 5) as usize];
    let actor = (r >> 8) % 5000;
    let record = AuditRecord::builder(format!("{kind}.{}", actions[((r >> 4) % 5) as usize]))
        .id(id)
        .timestamp(at)
        .actor_id(format!("u-{actor}"))
        .actor_type("user")
        .actor_email(format!("user{actor}@example.com"))
        .actor_flags(if actor % 100 == 0 {
            vec!["admin"]
        } else {
            vec![]
        })
        .resource(kind, ((r >> 24) % 200_000).to_string())
        .detail("title", "Quarterly report, second draft")
        .detail("words", (r >> 40) % 5000)
        .detail("draft", r % 3 == 0)
        .request_id(format!("req-{:016x}", mix(r ^ 1)))
        .client_ip(format!(
            "10.{}.{}.{}",
            (r >> 9) % 256,
            (r >> 17) % 256,
            (r >> 33) % 256
        ))
        .user_agent("Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0")
        .build();
    let mut value = serde_json::to_value(record).unwrap();
    value["chain"] = "app-7f3a/file".into();
    value["seq"] = (i as u64 + 1).into();
    value["hash"] = format!("{:016x}", mix(r ^ 2)).repeat(4).into();
    value.to_string()
}

/// The data set's file, time-ordered or shuffled, written once.
fn data_file(records: usize, shuffled: bool) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    std::fs::create_dir_all(&dir).unwrap();
    let order = if shuffled { "shuffled" } else { "ordered" };
    let path = dir.join(format!("import-{records}-{order}.jsonl"));
    if path.exists() {
        return path;
    }
    println!("writing {}…", path.display());
    let mut order: Vec<usize> = (0..records).collect();
    if shuffled {
        for i in (1..records).rev() {
            order.swap(i, (mix(i as u64 ^ 0x5eed) % (i as u64 + 1)) as usize);
        }
    }
    let partial = path.with_extension("partial");
    let mut out = BufWriter::new(std::fs::File::create(&partial).unwrap());
    for i in order {
        writeln!(out, "{}", line(i)).unwrap();
    }
    out.into_inner().unwrap().sync_all().unwrap();
    std::fs::rename(&partial, &path).unwrap();
    path
}

/// A SQLite scratch database beside the data, not in /tmp (often a
/// small tmpfs).
fn sqlite_beside_data() -> Option<Scratch> {
    Some(Scratch::sqlite_in(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data"),
    ))
}

/// Imports `path` into a fresh database, as `fabric-audit import` does
/// (check, then write); the time of both passes.
fn import(db: &Scratch, path: &Path) -> Duration {
    let mut sink = DatabaseSink::builder(&db.url)
        .keep_forever()
        .build()
        .unwrap();
    let start = Instant::now();
    let file = RecordFile::check(path).unwrap();
    let done = sink.import_file(&file, |_| {}).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(done.stored, file.records(), "{done:?}");
    elapsed
}

/// The sink writing the file's records in its worker's batches; the time
/// of the writes alone (the parsing stays outside).
fn sink_baseline(db: &Scratch, path: &Path) -> Duration {
    let mut sink = DatabaseSink::builder(&db.url)
        .keep_forever()
        .build()
        .unwrap();
    let mut lines = std::io::BufReader::new(std::fs::File::open(path).unwrap()).lines();
    let mut spent = Duration::ZERO;
    loop {
        let batch: Vec<Arc<AuditRecord>> = lines
            .by_ref()
            .take(SINK_BATCH)
            .map(|l| Arc::new(serde_json::from_str(&l.unwrap()).unwrap()))
            .collect();
        if batch.is_empty() {
            return spent;
        }
        let start = Instant::now();
        sink.write(&Batch::new(&batch)).unwrap();
        spent += start.elapsed();
    }
}

fn rate(records: usize, time: Duration) -> f64 {
    records as f64 / time.as_secs_f64()
}

/// One timed run of each case on `backend`, with the ratio to the sink.
fn full_size(backend: &str, scratch: fn() -> Option<Scratch>) {
    let Some(probe) = scratch() else {
        println!("{backend}: no server, skipped");
        return;
    };
    drop(probe);
    let records = records_wanted();
    let ordered = data_file(records, false);
    let shuffled = data_file(records, true);
    let base = sink_baseline(&scratch().unwrap(), &ordered);
    let sink = rate(records, base);
    println!("import_{backend}: {records} records, DatabaseSink baseline (time-ordered): {sink:.0} rows/s");
    for (name, path) in [("time-ordered", &ordered), ("shuffled", &shuffled)] {
        let took = import(&scratch().unwrap(), path);
        let ours = rate(records, took);
        println!(
            "import_{backend}: {name}: {ours:.0} rows/s ({:.1} s), {:.2}x the sink's rate",
            took.as_secs_f64(),
            ours / sink
        );
    }
}

fn bench_import(c: &mut Criterion) {
    const SMALL: usize = 20_000;
    let path = data_file(SMALL, true);
    let mut group = c.benchmark_group("import_sqlite_20k");
    group.sample_size(10);
    group.throughput(Throughput::Elements(SMALL as u64));
    group.bench_function("import_shuffled", |b| {
        b.iter_custom(|iters| {
            support::sum_of_runs(iters, || import(&sqlite_beside_data().unwrap(), &path))
        })
    });
    group.bench_function("sink", |b| {
        b.iter_custom(|iters| {
            support::sum_of_runs(iters, || {
                sink_baseline(&sqlite_beside_data().unwrap(), &path)
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench_import);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    support::print_ratio("import_sqlite_20k", "sink", "import_shuffled");
    full_size("sqlite", sqlite_beside_data);
    full_size("postgres", Scratch::postgres);
}

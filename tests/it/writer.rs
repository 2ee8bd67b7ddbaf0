//! The writer sink under the whole pipeline: a rolling appender, writers
//! that fail part way, writers that accept nothing.

use std::collections::HashSet;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fabric_audit::{audit, AuditLayer, AuditRecord, WriterSink};

use crate::support::pipeline;

/// Parses every line of `text`; panics on a line that is not one record.
fn records(text: &str) -> Vec<AuditRecord> {
    assert!(text.is_empty() || text.ends_with('\n'), "a torn last line");
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}")))
        .collect()
}

/// Values no line-oriented writer may split a record on.
const HOSTILE: &str = "line\nbreak\r\0nul\u{1b}[31m\u{2028}\"quoted\"\\ é🦀";

#[cfg(feature = "tracing-appender")]
#[test]
fn records_routed_through_an_hourly_rolling_appender_are_read_back_whole() {
    use tracing_appender::rolling::{RollingFileAppender, Rotation};

    let dir = tempfile::tempdir().unwrap();
    let appender = RollingFileAppender::builder()
        .rotation(Rotation::HOURLY)
        .filename_prefix("audit")
        .filename_suffix("jsonl")
        .max_log_files(48)
        .build(dir.path())
        .unwrap();
    let (dispatch, audit) = pipeline(
        AuditLayer::builder()
            .sink("rolling", WriterSink::from(appender))
            .queue_capacity(100_000)
            .batch_size(512),
    );
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let dispatch = dispatch.clone();
            std::thread::spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    for i in 0..5_000 {
                        audit!(action = "rolling.write", thread = t, i = i, note = HOSTILE);
                    }
                })
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    audit.flush_blocking().unwrap();
    let report = audit.shutdown_blocking();
    assert!(report.is_lossless(), "{report}");
    assert_eq!(report.sink("rolling").unwrap().written(), 20_000);

    let mut read = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        // tracing-appender's hourly name: audit.YYYY-MM-DD-HH.jsonl
        assert!(
            name.starts_with("audit.") && name.ends_with(".jsonl") && name.len() == 25,
            "{name}"
        );
        read.extend(records(&std::fs::read_to_string(&path).unwrap()));
    }
    assert_eq!(read.len(), 20_000);
    let ids: HashSet<_> = read.iter().map(|r| r.id()).collect();
    assert_eq!(ids.len(), 20_000, "a record written twice");
    for record in &read {
        assert_eq!(record.action(), "rolling.write");
        assert_eq!(record.detail_value("note").unwrap().to_json(), HOSTILE);
    }
}

/// A writer that takes at most `chunk` bytes a call and fails every
/// `fail_every`-th call (and every `fail_every`-th flush), like a pipe
/// that fills up or a socket that resets, `failures` times in all (each
/// failure costs the worker a backoff).
struct Flaky {
    out: Arc<Mutex<Vec<u8>>>,
    chunk: usize,
    fail_every: usize,
    failures: usize,
    calls: usize,
    flushes: usize,
}

impl Flaky {
    fn fails(&mut self, count: usize) -> bool {
        let fail = self.failures > 0 && count % self.fail_every == 0;
        self.failures -= usize::from(fail);
        fail
    }
}

impl Write for Flaky {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.fails(self.calls) {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "flaky write"));
        }
        if self.calls % 7 == 0 {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = buf.len().min(self.chunk);
        self.out.lock().unwrap().extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flushes += 1;
        if self.fails(self.flushes) {
            return Err(io::Error::other("flaky flush"));
        }
        Ok(())
    }
}

#[test]
fn a_writer_failing_part_way_gets_every_line_once_and_whole() {
    // Many shapes of failure: chunks smaller than a line, bigger than a
    // batch, failures every few calls.
    for (round, (chunk, fail_every)) in [(1, 97), (13, 3), (100, 2), (4096, 5), (1 << 20, 2)]
        .into_iter()
        .cycle()
        .take(10)
        .enumerate()
    {
        let out = Arc::new(Mutex::new(Vec::new()));
        let flaky = Flaky {
            out: out.clone(),
            chunk,
            fail_every,
            failures: 20,
            calls: 0,
            flushes: 0,
        };
        let (dispatch, audit) = pipeline(
            AuditLayer::builder()
                .sink("flaky", WriterSink::new(flaky))
                .batch_size(64)
                .max_backoff(Duration::from_millis(1)),
        );
        let n = if chunk == 1 { 200 } else { 1_000 };
        tracing::dispatcher::with_default(&dispatch, || {
            for i in 0..n {
                audit!(action = "flaky.write", i = i, note = HOSTILE);
            }
        });
        let report = audit.shutdown_blocking();
        let sink = report.sink("flaky").unwrap();
        assert_eq!(sink.written(), n, "round {round}: {report}");
        assert!(report.is_lossless(), "round {round}: {report}");
        assert!(sink.errors() > 0, "round {round}: the writer never failed");
        assert!(sink.errors() <= 20, "round {round}: {report}");

        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        let read = records(&text);
        let order: Vec<u64> = read
            .iter()
            .map(|r| r.detail_value("i").unwrap().to_json().as_u64().unwrap())
            .collect();
        assert_eq!(order, (0..n).collect::<Vec<_>>(), "round {round}");
    }
}

/// Accepts nothing: `write` returns `Ok(0)`.
struct Full;

impl Write for Full {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Ok(0)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_writer_that_accepts_nothing_is_reported_and_its_records_counted() {
    let (dispatch, audit) = pipeline(
        AuditLayer::builder()
            .sink("full", WriterSink::new(Full))
            .max_backoff(Duration::from_millis(5))
            .shutdown_timeout(Duration::from_millis(200)),
    );
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0..10 {
            audit!(action = "full.write", i = i);
        }
    });
    let error = audit.flush_blocking().unwrap_err();
    assert!(error.to_string().contains("full"), "{error}");
    let report = audit.shutdown_blocking();
    let sink = report.sink("full").unwrap();
    assert_eq!((sink.written(), sink.failed()), (0, 10), "{report}");
    assert!(
        sink.last_error().unwrap().contains("accepted no bytes"),
        "{report}"
    );
}

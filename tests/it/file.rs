//! The file sink under the whole pipeline: concurrency and faults.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use chrono::{Days, Utc};
use fabric_audit::{audit, AuditLayer, AuditRecord, FileSink};

use crate::support::pipeline;

fn lines(dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let text = fs::read_to_string(entry.unwrap().path()).unwrap();
        lines.extend(text.lines().map(String::from));
    }
    lines
}

#[test]
fn concurrent_emitters_never_tear_or_interleave_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (dispatch, audit) = pipeline(
        AuditLayer::builder()
            .file(dir.path().join("audit.jsonl"))
            .queue_capacity(200_000),
    );
    // Long values make a torn or interleaved line likely if writes mixed.
    let payload = "x".repeat(2000);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (dispatch, payload) = (dispatch.clone(), payload.clone());
            std::thread::spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    for i in 0..5000 {
                        audit!(action = "concurrent.write", thread = t, i = i, payload = %payload);
                    }
                })
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let report = audit.shutdown_blocking();
    assert!(report.is_lossless(), "{report}");

    let lines = lines(dir.path());
    assert_eq!(lines.len(), 40_000);
    let mut ids = HashSet::new();
    for line in &lines {
        let record: AuditRecord = serde_json::from_str(line).expect("a whole JSON line");
        assert_eq!(
            record.detail_value("payload").unwrap().to_json(),
            payload.as_str()
        );
        assert!(ids.insert(record.id()), "duplicate id");
    }
}

#[test]
fn a_file_fault_is_counted_then_writing_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    // Today's (and, should the test cross midnight, tomorrow's) file is a
    // link to /dev/full: every write fails with ENOSPC, as on a full disk.
    let today = Utc::now().date_naive();
    let probe = FileSink::builder(dir.path().join("probe.jsonl"))
        .build()
        .unwrap();
    let links: Vec<_> = [today, today + Days::new(1)]
        .iter()
        .map(|d| {
            dir.path().join(
                probe
                    .path_for(*d)
                    .file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .replace("probe", "audit"),
            )
        })
        .collect();
    for link in &links {
        std::os::unix::fs::symlink("/dev/full", link).unwrap();
    }
    let file = FileSink::builder(&path).build().unwrap();
    let (dispatch, audit) = pipeline(
        AuditLayer::builder()
            .sink("file", file)
            .max_backoff(std::time::Duration::from_millis(20)),
    );
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0..10 {
            audit!(action = "during.fault", i = i);
        }
    });
    let err = audit.flush_blocking().unwrap_err();
    assert_eq!(err.unflushed_sinks(), ["file"]);
    let during = audit.report();
    let sink = during.sink("file").unwrap();
    assert!(sink.errors() >= 1 && sink.is_failing(), "{during}");
    assert_eq!(sink.written(), 0);
    assert!(
        sink.last_error().unwrap().contains("No space left"),
        "{during}"
    );

    for link in &links {
        fs::remove_file(link).unwrap();
    }
    tracing::dispatcher::with_default(&dispatch, || audit!(action = "after.fault"));
    let report = audit.shutdown_blocking();
    let sink = report.sink("file").unwrap();
    assert_eq!(
        (sink.written(), sink.failed(), sink.dropped()),
        (11, 0, 0),
        "{report}"
    );
    let actions: Vec<String> = lines(dir.path())
        .iter()
        .map(|l| {
            serde_json::from_str::<AuditRecord>(l)
                .unwrap()
                .action()
                .to_owned()
        })
        .collect();
    assert_eq!(actions.len(), 11);
    assert_eq!(actions.last().map(String::as_str), Some("after.fault"));
}

#[test]
fn fsync_mode_writes_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let file = FileSink::builder(dir.path().join("audit.jsonl"))
        .fsync(true)
        .build()
        .unwrap();
    let (dispatch, audit) = pipeline(AuditLayer::builder().sink("file", file));
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0..100 {
            audit!(action = "synced", i = i);
        }
    });
    audit.flush_blocking().unwrap();
    assert_eq!(lines(dir.path()).len(), 100);
    assert!(audit.shutdown_blocking().is_lossless());
}

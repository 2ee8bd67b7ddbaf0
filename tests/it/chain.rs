//! Hash chains: what the sinks write verifies, across restarts, and every
//! change to it is found and named.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use fabric_audit::verify::{verify_files, Break, Verification, Verifier};
use fabric_audit::{
    audit, AuditLayer, AuditRecord, Batch, ChainHead, DetailValue, FileSink, Sink, SinkError,
};

use crate::support::pipeline;

/// Runs one instance named `instance` with a file sink in `dir` and emits
/// `n` records, numbered from `from`.
fn run(dir: &Path, instance: &str, from: u64, n: u64) {
    let file = FileSink::builder(dir.join("audit.jsonl")).build().unwrap();
    let (dispatch, audit) = pipeline(AuditLayer::builder().instance(instance).sink("file", file));
    tracing::dispatcher::with_default(&dispatch, || {
        for i in from..from + n {
            audit!(
                action = "invoice.sent",
                n = i,
                big = u64::MAX - i,
                f = 0.1 * i as f64,
                s = "é\0🦀\u{e000}"
            );
        }
    });
    let report = audit.shutdown_blocking();
    assert!(report.is_lossless(), "{report}");
}

/// The one file a test's sink wrote into `dir`.
fn only_file(dir: &Path) -> std::path::PathBuf {
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

fn only_chain(v: &Verification) -> &fabric_audit::verify::ChainReport {
    assert_eq!(v.chains.len(), 1, "{v:?}");
    &v.chains[0]
}

#[test]
fn a_file_sinks_chain_verifies_and_continues_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), "host-1", 0, 120);
    run(dir.path(), "host-1", 120, 30);
    let v = verify_files(dir.path()).unwrap();
    assert!(v.is_intact(), "{v:?}");
    let chain = only_chain(&v);
    assert_eq!(chain.chain, "host-1/file");
    assert_eq!(
        (chain.records, chain.first_seq, chain.last_seq),
        (150, Some(1), Some(150))
    );
    assert_eq!(v.unchained, 0);
    // Another instance writing into the same directory keeps its own chain.
    run(dir.path(), "host-2", 0, 5);
    let v = verify_files(dir.path()).unwrap();
    assert!(v.is_intact(), "{v:?}");
    let names: Vec<(&str, u64)> = v
        .chains
        .iter()
        .map(|c| (c.chain.as_str(), c.records))
        .collect();
    assert_eq!(names, [("host-1/file", 150), ("host-2/file", 5)]);
}

/// A restarted instance finds where its chain ended past another
/// instance's lines, in lines longer than the sink's read block (1 MiB).
#[test]
fn a_chain_resumes_past_other_lines_and_across_read_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let big = |dir: &Path, instance: &str, n: usize| {
        let file = FileSink::builder(dir.join("audit.jsonl")).build().unwrap();
        let (dispatch, audit) = pipeline(
            AuditLayer::builder()
                .instance(instance)
                .max_record_bytes(4 << 20)
                .sink("file", file),
        );
        tracing::dispatcher::with_default(&dispatch, || {
            for i in 0..n {
                // 1.5 MiB lines, and one with the chain's text in its detail.
                audit!(
                    action = "upload",
                    i = i,
                    body = "x".repeat(3 << 19),
                    chain = "host-1/file"
                );
            }
        });
        let report = audit.shutdown_blocking();
        assert!(report.is_lossless(), "{report}");
    };
    big(dir.path(), "host-1", 3);
    big(dir.path(), "host-2", 2);
    run(dir.path(), "host-2", 0, 3);
    big(dir.path(), "host-1", 2);
    let v = verify_files(dir.path()).unwrap();
    assert!(v.is_intact(), "{v:?}");
    let chains: Vec<(&str, u64, Option<u64>)> = v
        .chains
        .iter()
        .map(|c| (c.chain.as_str(), c.records, c.last_seq))
        .collect();
    assert_eq!(
        chains,
        [("host-1/file", 5, Some(5)), ("host-2/file", 5, Some(5))]
    );
}

/// Every single-byte change of a small log is found: as a break of a chain
/// or as a line that is no record.
#[test]
fn every_byte_changed_in_a_small_file_is_caught_and_named() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), "host-1", 0, 4);
    let path = only_file(dir.path());
    let original = std::fs::read(&path).unwrap();
    assert!(verify_files(&path).unwrap().is_intact());
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let changed_file = scratch.join("audit.2026-01-01.jsonl");
    let mut kinds = std::collections::BTreeSet::new();
    for at in 0..original.len() {
        for flip in [0x01_u8, 0x20] {
            let mut changed = original.clone();
            changed[at] ^= flip;
            std::fs::write(&changed_file, &changed).unwrap();
            let v = verify_files(&changed_file).unwrap();
            assert!(
                !v.is_intact(),
                "byte {at} ({:?} -> {:?}) went unseen: {v:?}",
                original[at] as char,
                changed[at] as char
            );
            for chain in &v.chains {
                for b in &chain.breaks {
                    kinds.insert(match b {
                        Break::Modified { .. } => "modified",
                        Break::Deleted { .. } => "deleted",
                        Break::OutOfOrder { .. } => "out of order",
                        Break::Unchained { .. } => "unchained",
                        _ => "other",
                    });
                }
            }
            if !v.unreadable.is_empty() {
                kinds.insert("unreadable");
            }
        }
    }
    // The kinds of finding the changes produced, each named.
    for kind in ["modified", "deleted", "out of order", "unreadable"] {
        assert!(kinds.contains(kind), "{kind} never named: {kinds:?}");
    }
}

#[test]
fn deleted_inserted_and_swapped_lines_are_named() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), "host-1", 0, 10);
    let path = only_file(dir.path());
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let check = |lines: Vec<&str>| {
        let scratch = tempfile::tempdir().unwrap();
        let file = scratch.path().join("audit.jsonl");
        std::fs::write(&file, lines.join("\n") + "\n").unwrap();
        let v = verify_files(&file).unwrap();
        only_chain(&v).breaks.clone()
    };

    let mut deleted = lines.clone();
    deleted.drain(3..5);
    assert_eq!(check(deleted), [Break::Deleted { from: 4, to: 5 }]);

    let mut inserted = lines.clone();
    inserted.insert(7, lines[2]);
    assert_eq!(check(inserted), [Break::OutOfOrder { seq: 3, after: 7 }]);

    let mut swapped = lines.clone();
    swapped.swap(5, 6);
    assert_eq!(
        check(swapped),
        [
            Break::Deleted { from: 6, to: 6 },
            Break::OutOfOrder { seq: 6, after: 7 }
        ]
    );

    // A truncated tail is not seen by the chain alone (checkpoints are).
    let truncated = lines[..8].to_vec();
    assert_eq!(check(truncated), []);
}

#[cfg(feature = "cli")]
#[test]
fn the_cli_verifies_files_and_exits_non_zero_on_a_break() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), "host-1", 0, 5);
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_fabric-audit"))
            .arg("verify")
            .args(args)
            .output()
            .unwrap()
    };
    let dir_arg = dir.path().to_str().unwrap();
    let ok = cli(&["--files", dir_arg]);
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{out}");
    assert!(
        out.contains("chain host-1/file: 5 records, seq 1..5: intact"),
        "{out}"
    );

    let path = only_file(dir.path());
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("invoice.sent", "invoice.void", 1)).unwrap();
    let broken = cli(&["--files", dir_arg, "--json"]);
    assert_eq!(broken.status.code(), Some(1));
    let json: serde_json::Value =
        serde_json::from_slice(broken.stdout.split(|&b| b == b'\n').next().unwrap()).unwrap();
    assert_eq!(
        json["chains"][0]["breaks"],
        serde_json::json!([{"kind": "modified", "seq": 1}])
    );
    let missing = cli(&["--files", "/nonexistent/audit"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read /nonexistent/audit"));
}

/// A sink of the user's that keeps a chain: it stores what it is given in
/// memory and refuses every batch holding a record whose `phase` is 2.
#[derive(Clone, Default)]
struct Chained {
    stored: Arc<Mutex<Vec<AuditRecord>>>,
    gate: Arc<(Mutex<bool>, Condvar)>,
}

impl Chained {
    fn open_gate(&self) {
        *self.gate.0.lock().unwrap() = true;
        self.gate.1.notify_all();
    }
}

impl Sink for Chained {
    fn write(&mut self, batch: &Batch<'_>) -> Result<(), SinkError> {
        let (lock, opened) = &*self.gate;
        let _open = opened
            .wait_while(lock.lock().unwrap(), |open| !*open)
            .unwrap();
        if batch
            .iter()
            .any(|r| r.detail_value("phase") == Some(DetailValue::I64(2)))
        {
            return Err(SinkError::rejected("phase 2 is refused"));
        }
        self.stored.lock().unwrap().extend(batch.iter().cloned());
        Ok(())
    }

    fn chain_head(&mut self, _chain: &str) -> Result<ChainHead, SinkError> {
        Ok(ChainHead::Empty)
    }
}

fn verify_stored(sink: &Chained) -> Verification {
    let mut verifier = Verifier::new();
    for record in sink.stored.lock().unwrap().iter() {
        verifier.check(record);
    }
    verifier.finish()
}

/// Records a sink refused leave a gap record in its chain: verification
/// reports them as lost at the time, not as deleted; a record deleted
/// later still is a break.
#[test]
fn refused_records_are_reported_by_a_gap_record_not_as_deleted() {
    for round in 0..20 {
        let sink = Chained::default();
        sink.open_gate();
        let (dispatch, audit) = pipeline(
            AuditLayer::builder()
                .instance("host-1")
                .sink("mine", sink.clone()),
        );
        tracing::dispatcher::with_default(&dispatch, || {
            for phase in 1..=3 {
                for i in 0..10 {
                    audit!(action = "invoice.sent", phase = phase, i = i);
                }
                // A flush says when records were lost (so far).
                let flushed = audit.flush_blocking();
                assert_eq!(flushed.is_err(), phase >= 2, "round {round}: {flushed:?}");
            }
        });
        let report = audit.shutdown_blocking();
        let mine = report.sink("mine").unwrap();
        assert_eq!(
            (mine.written(), mine.failed(), mine.dropped()),
            (20, 10, 0),
            "round {round}: {report}"
        );

        let v = verify_stored(&sink);
        assert!(v.is_intact(), "round {round}: {v:?}");
        let chain = &v.chains[0];
        let failed: u64 = chain.gaps.iter().map(|g| g.failed).sum();
        let missing: u64 = chain.gaps.iter().map(|g| g.missing).sum();
        assert_eq!((failed, missing), (10, 10), "round {round}: {v:?}");
        // 20 records and the gap record(s); every seq accounted for.
        assert_eq!(chain.records, 20 + chain.gaps.len() as u64, "round {round}");
        assert_eq!(
            chain.last_seq,
            Some(30 + chain.gaps.len() as u64),
            "round {round}"
        );

        // A record deleted afterwards is not explained by any gap.
        sink.stored.lock().unwrap().remove(4);
        let v = verify_stored(&sink);
        assert_eq!(
            v.chains[0].breaks,
            [Break::Deleted { from: 5, to: 5 }],
            "round {round}"
        );
    }
}

/// Records dropped by the overflow policy never get a `seq`; the chain's
/// gap records count them, and the counts add up to the report's.
#[test]
fn dropped_records_are_counted_by_gap_records() {
    for round in 0..10 {
        let sink = Chained::default();
        let (dispatch, audit) = pipeline(
            AuditLayer::builder()
                .instance("host-1")
                .queue_capacity(4)
                .sink("mine", sink.clone()),
        );
        tracing::dispatcher::with_default(&dispatch, || {
            for i in 0..50 {
                audit!(action = "invoice.sent", phase = 1, i = i);
            }
        });
        sink.open_gate();
        tracing::dispatcher::with_default(&dispatch, || {
            // The flush reports the drops.
            assert!(audit.flush_blocking().is_err(), "round {round}");
            audit!(action = "invoice.sent", phase = 3);
        });
        let report = audit.shutdown_blocking();
        let mine = report.sink("mine").unwrap();
        assert!(mine.dropped() > 0, "round {round}: {report}");
        assert_eq!(mine.failed(), 0, "round {round}: {report}");
        let v = verify_stored(&sink);
        assert!(v.is_intact(), "round {round}: {v:?}");
        let chain = &v.chains[0];
        let dropped: u64 = chain.gaps.iter().map(|g| g.dropped).sum();
        assert_eq!(dropped, mine.dropped(), "round {round}: {v:?}");
        assert_eq!(
            chain.records,
            mine.written() + chain.gaps.len() as u64,
            "round {round}: {v:?}"
        );
    }
}

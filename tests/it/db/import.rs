//! Importing files with [`DatabaseSink::import_file`] on every backend:
//! counts and lines, and an import cut midway that a second run finishes.

use std::io::Write;

use fabric_audit::{AuditRecord, DatabaseSink, ImportedFile, RecordFile};

use super::{on_every_backend, on_every_server, TestDb};
use crate::proxy::Proxy;

on_every_backend!(an_import_counts_what_it_stored_and_names_conflicting_lines);
on_every_server!(an_import_cut_midway_is_finished_by_running_it_again);

/// The records as a JSON-lines file in `dir`.
fn file(dir: &tempfile::TempDir, name: &str, records: &[AuditRecord]) -> RecordFile {
    let path = dir.path().join(name);
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for record in records {
        serde_json::to_writer(&mut out, record).unwrap();
        out.write_all(b"\n\n").unwrap();
    }
    out.flush().unwrap();
    drop(out);
    RecordFile::check(&path).unwrap()
}

/// Imports on a blocking thread.
async fn import(url: &str, file: &RecordFile) -> fabric_audit::Result<ImportedFile> {
    let (url, file) = (url.to_owned(), file.clone());
    tokio::task::spawn_blocking(move || {
        let mut sink = DatabaseSink::builder(url).keep_forever().build()?;
        sink.import_file(&file, |_| {})
    })
    .await
    .unwrap()
}

async fn an_import_counts_what_it_stored_and_names_conflicting_lines(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<AuditRecord> = (0..3)
        .map(|i| AuditRecord::builder("doc.signed").detail("n", i).build())
        .collect();
    let first = file(&dir, "first.jsonl", &records);
    assert_eq!(first.records(), 3);
    let done = import(&db.url, &first).await.unwrap();
    assert_eq!((done.stored, done.present), (3, 0));
    assert!(done.conflicting.is_empty() && done.refused.is_empty());

    // Every record is followed by a blank line: the second is on line 3.
    let edited = AuditRecord::builder("doc.forged")
        .id(records[1].id())
        .timestamp(records[1].timestamp())
        .build();
    let fresh = AuditRecord::builder("doc.signed").build();
    let again = [records[0].clone(), edited, fresh];
    let done = import(&db.url, &file(&dir, "again.jsonl", &again))
        .await
        .unwrap();
    assert_eq!((done.stored, done.present), (1, 1));
    assert_eq!(done.conflicting, [(3, records[1].id())]);
    assert!(done.refused.is_empty());
}

async fn an_import_cut_midway_is_finished_by_running_it_again(db: TestDb, port: u16) {
    // A transaction takes 10 000 records: the cut comes in the third.
    const FIRST: usize = 20_000;
    const REST: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<AuditRecord> = (0..FIRST + REST)
        .map(|i| {
            let action = if i < FIRST {
                "doc.signed"
            } else {
                "zz.cut-here"
            };
            AuditRecord::builder(action).detail("n", i).build()
        })
        .collect();
    let checked = file(&dir, "big.jsonl", &records);
    let proxy = Proxy::start(([127, 0, 0, 1], port).into());
    let url = proxy.url(&db.url, port);
    // The database is made before the cut: the sink starts, then loses
    // its connection as the second transaction is sent.
    import(&url, &file(&dir, "none.jsonl", &[])).await.unwrap();
    proxy.cut_on(b"zz.cut-here");
    let error = import(&url, &checked).await.unwrap_err();
    assert!(!error.is_invalid_input(), "{error}");
    proxy.restore();

    let done = import(&url, &checked).await.unwrap();
    assert_eq!((done.stored, done.present), (REST as u64, FIRST as u64));
    let done = import(&db.url, &checked).await.unwrap();
    assert_eq!((done.stored, done.present), (0, (FIRST + REST) as u64));
}

//! `fabric-audit import`: JSON-lines files into the database, checked
//! whole first, written in large transactions, never held in memory.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use fabric_audit::{DatabaseSink, ImportedFile, RecordFile};

/// Inputs with fewer records show no progress bar.
const QUIET_BELOW: u64 = 10_000;

/// What an import did, over all its files.
#[derive(Default)]
struct Totals {
    read: u64,
    stored: u64,
    present: u64,
    /// `file:line: …` for each record not imported.
    problems: Vec<String>,
}

impl Totals {
    fn add(&mut self, file: &RecordFile, done: ImportedFile) {
        self.read += file.records();
        self.stored += done.stored;
        self.present += done.present;
        let problems = (done.conflicting.iter())
            .map(|at| (at, "is stored with other content"))
            .chain((done.refused.iter()).map(|at| (at, "was refused by the database")));
        for ((line, id), what) in problems {
            self.problems.push(format!(
                "{}:{line}: record {id} {what}: not imported",
                file.path().display()
            ));
        }
    }
}

/// Checks every file (a bad line anywhere: nothing is written, and the
/// line is named), then imports them one after the other. Records are
/// stored by id, so an import run twice, or again after a failure midway,
/// stores each record once; an id stored with other content is a conflict,
/// reported with its file and line.
pub(crate) async fn run(url: String, files: Vec<PathBuf>) -> anyhow::Result<()> {
    let count = files.len();
    let totals = tokio::task::spawn_blocking(move || -> anyhow::Result<Totals> {
        let mut checked = Vec::with_capacity(files.len());
        for path in &files {
            checked.push(RecordFile::check(path)?);
        }
        let read: u64 = checked.iter().map(RecordFile::records).sum();
        let mut sink = DatabaseSink::builder(&url).keep_forever().build()?;
        let bar = indicatif::ProgressBar::new(read);
        if read < QUIET_BELOW {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let mut totals = Totals::default();
        for file in &checked {
            let done = sink
                .import_file(file, |n| bar.inc(n))
                .with_context(|| format!("{}: writing to the database", file.path().display()))?;
            totals.add(file, done);
        }
        bar.finish_and_clear();
        Ok(totals)
    })
    .await??;
    println!(
        "read {} records from {count} file(s): {} stored, {} already present, {} not imported",
        totals.read,
        totals.stored,
        totals.present,
        totals.problems.len()
    );
    for problem in &totals.problems {
        eprintln!("error: {problem}");
    }
    if !totals.problems.is_empty() {
        bail!("{} record(s) not imported", totals.problems.len());
    }
    Ok(())
}

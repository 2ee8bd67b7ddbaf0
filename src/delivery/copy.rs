//! Copies of the chains' checkpoints, kept in a store apart from the
//! sinks' own: a file, or a second sink (a database on another server, a
//! message stream), so that whoever controls one sink's store cannot
//! rewrite its history and its checkpoints together, nor cut its tail
//! unnoticed.
//!
//! Every worker that writes a checkpoint into its chain hands the record,
//! unchanged, to the one shared copy: written at once on that worker's
//! thread, under a lock (checkpoints are rare: one a minute or every N
//! records per chain). A copy that fails for a while (the other server
//! down) stays pending and goes with the next checkpoint; at shutdown a
//! worker retries it until the deadline. Every copy ends counted, written
//! or failed ([`CopyReport`](crate::report::CopyReport)), and a failure is
//! warned about: a lost copy is a missing witness, never a lost record.

use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::report::CopyReport;
use crate::sink::{Batch, Sink, SinkError};
use crate::AuditRecord;

/// The most copies kept for a later try while the copy's store fails;
/// past it the oldest is counted failed. At the default of one checkpoint
/// a minute per chain, days of an outage.
const MAX_PENDING: usize = 4096;

/// The first wait between two tries at shutdown; doubled up to a second.
const CLOSING_BACKOFF: Duration = Duration::from_millis(20);

/// Where every chain's checkpoint records are copied as well.
pub(crate) struct CheckpointCopy {
    /// What warnings name: the file's path, or the sink's name.
    name: String,
    target: Mutex<Target>,
    written: AtomicU64,
    failed: AtomicU64,
    /// Every copy ever handed over: written, failed or pending.
    handed: AtomicU64,
    /// Workers that may still copy: the last one to finish closes the
    /// copy's sink and counts what is still pending as failed.
    users: AtomicUsize,
}

struct Target {
    sink: Box<dyn Sink + Send>,
    opened: bool,
    /// Copies not written yet, oldest first.
    pending: Vec<Arc<AuditRecord>>,
}

impl std::fmt::Debug for CheckpointCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointCopy")
            .field("name", &self.name)
            .field("report", &self.report())
            .finish_non_exhaustive()
    }
}

impl CheckpointCopy {
    /// Copies into the file at `path`, opened (or created) for appending:
    /// one JSON line per checkpoint, synced to disk before it counts.
    pub(crate) fn file(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self::sink(
            path.display().to_string(),
            Box::new(CopyFile {
                file,
                line: Vec::with_capacity(1024),
            }),
        ))
    }

    /// Copies into `sink`, which gets each checkpoint record as it is
    /// (its `chain`, `seq` and `hash` are the copied chain's).
    pub(crate) fn sink(name: String, sink: Box<dyn Sink + Send>) -> Self {
        Self {
            name,
            target: Mutex::new(Target {
                sink,
                opened: false,
                pending: Vec::new(),
            }),
            written: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            handed: AtomicU64::new(0),
            users: AtomicUsize::new(0),
        }
    }

    /// The counters so far.
    pub(crate) fn report(&self) -> CopyReport {
        // Settled before handed: a copy settled in between shows as
        // pending, never twice, and pending is never negative.
        let written = self.written.load(Ordering::Acquire);
        let failed = self.failed.load(Ordering::Acquire);
        let handed = self.handed.load(Ordering::Acquire);
        CopyReport {
            written,
            failed,
            pending: handed.saturating_sub(written + failed),
        }
    }

    /// A worker that may copy: see [`release`](Self::release).
    pub(crate) fn acquire(&self) {
        self.users.fetch_add(1, Ordering::AcqRel);
    }

    /// A worker is done copying. The last closes the sink and counts the
    /// copies it could not write as failed.
    pub(crate) fn release(&self) {
        if self.users.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let mut target = self.target.lock().unwrap_or_else(PoisonError::into_inner);
        let left = target.pending.len() as u64;
        if left > 0 {
            target.pending.clear();
            self.settle(0, left);
            tracing::warn!(
                target: "fabric_audit",
                copy = %self.name,
                failed = left,
                "checkpoint copies not written by shutdown"
            );
        }
        if target.opened {
            let closed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                crate::quiet::muted(|| target.sink.close())
            }));
            if let Ok(Err(e)) = closed {
                warn(&self.name, &e, "closing");
            }
        }
    }

    /// Writes `record` (and any copy still pending) into the copy's store.
    /// With `until`, retries a transient failure until then (shutdown's
    /// deadline); otherwise a failure leaves the copies pending for the
    /// next checkpoint.
    pub(crate) fn copy(&self, record: &Arc<AuditRecord>, until: Option<Instant>) {
        let mut target = self.target.lock().unwrap_or_else(PoisonError::into_inner);
        target.pending.push(record.clone());
        self.handed.fetch_add(1, Ordering::AcqRel);
        if target.pending.len() > MAX_PENDING {
            target.pending.remove(0);
            self.settle(0, 1);
            tracing::warn!(
                target: "fabric_audit",
                copy = %self.name,
                "too many checkpoint copies pending; the oldest is given up"
            );
        }
        let mut backoff = CLOSING_BACKOFF;
        loop {
            let Err(error) = self.attempt(&mut target) else {
                return;
            };
            let retry = error.is_transient() && until.is_some_and(|t| Instant::now() < t);
            if !retry {
                let what = if error.is_transient() {
                    "kept for the next checkpoint"
                } else {
                    "given up"
                };
                warn(&self.name, &error, what);
                return;
            }
            let wait = until.map_or(backoff, |t| {
                backoff.min(t.saturating_duration_since(Instant::now()))
            });
            std::thread::sleep(wait);
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// One try at writing what is pending; settles the counters.
    fn attempt(&self, target: &mut Target) -> Result<(), SinkError> {
        let Target {
            sink,
            opened,
            pending,
        } = target;
        let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            crate::quiet::muted(|| {
                if !*opened {
                    sink.open()?;
                    *opened = true;
                }
                sink.write(&Batch::new(pending))
            })
        }))
        .unwrap_or_else(|_| Err(SinkError::rejected("the checkpoint copy's sink panicked")));
        let n = pending.len() as u64;
        match &written {
            Ok(()) => self.settle(n, 0),
            Err(e) if e.is_transient() => return written,
            Err(e) => {
                let failed = e.failed_records().map_or(n, |f| (f as u64).min(n));
                self.settle(n - failed, failed);
            }
        }
        pending.clear();
        written
    }

    /// Moves copies out of pending: `written` of them written, `failed`
    /// failed.
    fn settle(&self, written: u64, failed: u64) {
        self.written.fetch_add(written, Ordering::AcqRel);
        self.failed.fetch_add(failed, Ordering::AcqRel);
    }
}

fn warn(copy: &str, error: &SinkError, what: &str) {
    let error = crate::error::Chain(error);
    tracing::warn!(target: "fabric_audit", copy, %error, "cannot copy a checkpoint; {what}");
}

/// The copy file: appends each record's JSON line and syncs it.
struct CopyFile {
    file: std::fs::File,
    line: Vec<u8>,
}

impl Sink for CopyFile {
    fn write(&mut self, batch: &Batch<'_>) -> Result<(), SinkError> {
        self.line.clear();
        for record in batch {
            record.write_json(&mut self.line);
            self.line.push(b'\n');
        }
        self.file.write_all(&self.line)?;
        self.file.sync_data()?;
        Ok(())
    }
}

/// The path a copy file is opened at, for errors.
pub(crate) fn open_error(path: &Path, e: std::io::Error) -> crate::Error {
    crate::Error::io(
        format!("cannot open the checkpoint copy {}", path.display()),
        e,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy_into(sink: impl Sink + Send + 'static) -> CheckpointCopy {
        let copy = CheckpointCopy::sink("test".into(), Box::new(sink));
        copy.acquire();
        copy
    }

    fn record() -> Arc<AuditRecord> {
        Arc::new(AuditRecord::builder(crate::verify::CHECKPOINT_ACTION).build())
    }

    fn counts(copy: &CheckpointCopy) -> (u64, u64, u64) {
        let r = copy.report();
        (r.written, r.failed, r.pending)
    }

    #[test]
    fn copies_wait_while_the_store_is_down_and_the_oldest_go_past_the_bound() {
        let copy = copy_into(crate::sinks::from_fn(|_| Err(SinkError::transient("down"))));
        for n in 1..=MAX_PENDING as u64 + 5 {
            copy.copy(&record(), None);
            let pending = n.min(MAX_PENDING as u64);
            assert_eq!(counts(&copy), (0, n - pending, pending));
        }
        // The last worker gone: what is left counts as failed.
        copy.release();
        assert_eq!(counts(&copy), (0, MAX_PENDING as u64 + 5, 0));
    }

    #[test]
    fn a_partly_refused_batch_of_copies_counts_each_copy_once() {
        let mut calls = 0;
        let copy = copy_into(crate::sinks::from_fn(move |batch| {
            calls += 1;
            match calls {
                1 | 2 => Err(SinkError::transient("down")),
                3 => Err(SinkError::partial(1, "one refused")),
                _ => {
                    assert_eq!(batch.len(), 1);
                    Ok(())
                }
            }
        }));
        copy.copy(&record(), None);
        copy.copy(&record(), None);
        assert_eq!(counts(&copy), (0, 0, 2));
        copy.copy(&record(), None);
        assert_eq!(counts(&copy), (2, 1, 0));
        copy.copy(&record(), None);
        assert_eq!(counts(&copy), (3, 1, 0));
        copy.release();
        assert_eq!(counts(&copy), (3, 1, 0));
    }

    #[test]
    fn at_shutdown_a_copy_is_retried_until_the_deadline() {
        let mut calls = 0;
        let copy = copy_into(crate::sinks::from_fn(move |_| {
            calls += 1;
            if calls < 4 {
                return Err(SinkError::transient("restarting"));
            }
            Ok(())
        }));
        let until = Instant::now() + Duration::from_secs(30);
        copy.copy(&record(), Some(until));
        assert_eq!(counts(&copy), (1, 0, 0));
        let gone = copy_into(crate::sinks::from_fn(|_| Err(SinkError::transient("gone"))));
        let until = Instant::now() + Duration::from_millis(100);
        gone.copy(&record(), Some(until));
        assert!(Instant::now() >= until);
        assert_eq!(counts(&gone), (0, 0, 1));
    }
}

//! A sink's worker thread: drain the queue in batches, write, retry.
//!
//! One thread per sink, so that a sink may block (a database round trip,
//! an `fsync`) without holding back the emitting threads or another sink.
//! The loop:
//!
//! 1. Open the sink (a failure is counted and warned about; the first
//!    write tries again).
//! 2. Drain up to a batch of records, stopping early at a flush barrier.
//! 3. Link the batch's records into the sink's hash chain, if the sink
//!    keeps one (asked once, `Sink::chain_head`; a record another sink
//!    holds too is copied first), once per batch: a retry writes the same
//!    links.
//! 4. Write the batch: retry transient errors with capped exponential
//!    backoff (the records stay where they are, so nothing behind them
//!    overtakes them), count refused records as failed, and after the
//!    shutdown deadline give up and count the batch as failed.
//! 5. Reach the barrier, if one stopped the batch, and notify progress.
//! 6. With nothing queued: sleep until woken or the interval passes, or,
//!    once closing, finish when every admitted record has been handed over.
//!
//! A sink that panics is caught: the batch counts as failed and the
//! worker goes on. The sink runs muted (see `quiet`), so that its own
//! tracing (a driver logging its parameters) never copies records into
//! the application's logs. Whatever happens, the worker marks itself
//! finished on the way out (`Finished`), or shutdown would wait for it
//! until its deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::copy::CheckpointCopy;
use super::metrics::SinkMetrics;
use super::pool::RecordPool;
use super::queue::{Barrier, Item, SinkQueue};
use super::{Lifecycle, RateLimit};
use crate::chain::checkpoint::{self, Why};
use crate::chain::{self, Chain, Linker};
use crate::sink::{Batch, ChainHead, Sink, SinkError};
use crate::verify::GAP_ACTION;
use crate::AuditRecord;

/// How often a closing worker with an empty queue looks for the records
/// that emitters admitted before the close are still handing over.
const HANDOVER_POLL: Duration = Duration::from_millis(1);

/// How a worker batches and retries.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WorkerConfig {
    /// The most records per `Sink::write`.
    pub(crate) batch_size: usize,
    /// How long an idle worker sleeps before it looks at its queue again
    /// (emitters wake it sooner once a batch's worth is queued).
    pub(crate) interval: Duration,
    /// The first wait after a transient error; doubled per retry.
    pub(crate) min_backoff: Duration,
    /// The longest wait between two retries.
    pub(crate) max_backoff: Duration,
}

/// One sink's worker: what its thread owns.
pub(crate) struct Worker {
    /// The queue it drains, shared with the emitters.
    pub(crate) queue: Arc<SinkQueue>,
    /// The sink, owned: only this thread ever calls it.
    pub(crate) sink: Box<dyn Sink + Send>,
    pub(crate) lifecycle: Arc<Lifecycle>,
    /// Where the worker returns the records it is done with.
    pub(crate) pool: Arc<RecordPool>,
    /// Shared by every worker: retries are warned about once a second.
    pub(crate) retry_warnings: Arc<RateLimit>,
    pub(crate) config: WorkerConfig,
    pub(crate) metrics: SinkMetrics,
    /// The name of this sink's hash chain: `<instance>/<sink name>`.
    pub(crate) chain_id: String,
    /// Whether the sink's records are chained, once the sink has said.
    pub(crate) chaining: Chaining,
    /// Records of the chain lost since its last gap record.
    pub(crate) gap: PendingGap,
    /// The chain's checkpoints, when they are on.
    pub(crate) checkpoints: Option<Checkpointing>,
}

/// A worker's checkpoints of its chain (see `chain::checkpoint`).
#[derive(Debug)]
pub(crate) struct Checkpointing {
    policy: Arc<checkpoint::Policy>,
    /// Where each checkpoint record is copied as well.
    copy: Option<Arc<CheckpointCopy>>,
    /// The chain's `seq` at its last checkpoint (or where this run resumed
    /// it): nothing new since, no checkpoint.
    last_seq: u64,
    last_at: Instant,
    /// SHA-256 of the last signature, which the next checkpoint links to.
    link: Option<chain::Hash>,
    /// This run continued a stored chain and has not checkpointed yet.
    resumed: bool,
}

impl Checkpointing {
    pub(crate) fn new(policy: Arc<checkpoint::Policy>, copy: Option<Arc<CheckpointCopy>>) -> Self {
        if let Some(copy) = &copy {
            copy.acquire();
        }
        Self {
            policy,
            copy,
            last_seq: 0,
            last_at: Instant::now(),
            link: None,
            resumed: false,
        }
    }
}

impl Drop for Checkpointing {
    /// The worker is done (or never started): the last one closes the
    /// copy.
    fn drop(&mut self) {
        if let Some(copy) = &self.copy {
            copy.release();
        }
    }
}

/// What a chain's next gap record reports: records that took a `seq` and
/// were never stored (a batch refused or given up), and records dropped
/// by the overflow policy before they reached the worker.
#[derive(Debug, Default)]
pub(crate) struct PendingGap {
    /// Records that took a `seq` and failed.
    failed: u64,
    /// The `seq` range they lie in (a partly refused batch: the batch's).
    seqs: Option<(u64, u64)>,
    /// The queue's dropped count already reported.
    dropped_reported: u64,
}

/// A worker's hash chain (see `Sink::chain_head`).
#[derive(Debug)]
pub(crate) enum Chaining {
    /// The sink has not been asked yet (or its answer failed).
    Unknown,
    /// The sink does not chain.
    Off,
    /// Every record is linked before the sink sees it.
    On(Linker),
}

impl Worker {
    /// Runs until shutdown (or until every producer is gone) and the queue
    /// is empty.
    pub(crate) fn run(mut self) {
        // Whatever happens below, shutdown must learn that we are gone.
        let _finished = Finished(self.queue.clone(), self.lifecycle.clone());
        let mut batch = Vec::with_capacity(self.config.batch_size);
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            crate::quiet::muted(|| self.sink.open())
        }));
        match opened {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.queue.record_error(&e, false);
                warn_failed(&self.queue.name, &e, "opening; the first write tries again");
            }
            Err(_) => {
                let e = SinkError::rejected("the sink panicked while opening");
                self.queue.record_error(&e, false);
                warn_failed(&self.queue.name, &e, "opening");
            }
        }
        loop {
            if self.queue.is_abandoned() {
                // Shutdown has counted what we hold; leave quietly.
                return;
            }
            let barrier = self.drain(&mut batch);
            let drained = !batch.is_empty() || barrier.is_some();
            if !batch.is_empty() {
                self.write_gap_if_due();
                let failed = self.write(&mut batch, true);
                self.note_failed(&batch, failed);
                batch.drain(..).for_each(|r| self.pool.recycle(r));
                self.checkpoint_if_due(false);
            }
            if let Some(barrier) = barrier {
                barrier.reach(self.queue.failed());
                self.lifecycle.progress.notify();
            }
            self.metrics
                .publish_if_due(&self.queue, &self.lifecycle.intake);
            if drained {
                self.queue.space.notify();
            } else if self.lifecycle.is_closing() {
                if self.lifecycle.intake.is_settled() {
                    // The queue was found empty before the close and the
                    // last handovers were seen: records queued in between
                    // are still to write (they were once left as dropped).
                    if self.queue.is_empty() {
                        break;
                    }
                    continue;
                }
                // An emitter admitted before the close is still handing
                // its record over: look again in a moment.
                self.queue.sleep(HANDOVER_POLL);
            } else {
                // Idle: a checkpoint may be due by time.
                self.checkpoint_if_due(false);
                self.queue.sleep(self.config.interval);
            }
        }
        self.write_gap_if_due();
        self.checkpoint_if_due(true);
        if let Err(e) = crate::quiet::muted(|| self.sink.close()) {
            self.queue.record_error(&e, false);
            warn_failed(&self.queue.name, &e, "closing");
        }
        // Done with the checkpoint copy (the last worker closes it) before
        // this worker counts as finished: shutdown's wait, bounded by its
        // deadline, covers the close, and its final report the copies.
        self.checkpoints = None;
        self.metrics.publish(&self.queue, &self.lifecycle.intake);
    }

    /// Pops up to a batch of records, stopping after a flush barrier so
    /// that the barrier is reached only once the records before it are
    /// settled.
    fn drain(&self, batch: &mut Vec<Arc<AuditRecord>>) -> Option<Arc<Barrier>> {
        while batch.len() < self.config.batch_size {
            match self.queue.pop()? {
                Item::Record(record) => batch.push(record),
                Item::Barrier(barrier) => return Some(barrier),
            }
        }
        None
    }

    /// Links the batch's records into the sink's chain, if it has one,
    /// once (a retry writes the same links), then writes it.
    fn attempt(
        &mut self,
        batch: &mut [Arc<AuditRecord>],
        linked: &mut bool,
    ) -> Result<(), SinkError> {
        if !*linked {
            if matches!(self.chaining, Chaining::Unknown) {
                self.chaining = self.resume()?;
            }
            if let Chaining::On(linker) = &mut self.chaining {
                for record in batch.iter_mut() {
                    // What the sink will store is what is hashed.
                    if let Some(stored) = self.sink.stored_form(record) {
                        *record = Arc::new(stored);
                    }
                    // Another sink may hold the same record: it is copied then.
                    linker.link(Arc::make_mut(record));
                }
            }
            *linked = true;
        }
        self.sink.write(&Batch::new(batch))
    }

    /// Asks the sink where its chain ends.
    fn resume(&mut self) -> Result<Chaining, SinkError> {
        let id = self.chain_id.clone();
        Ok(match self.sink.chain_head(&id)? {
            ChainHead::Unchained => Chaining::Off,
            ChainHead::Empty => Chaining::On(Linker::new(Chain::new(id))),
            ChainHead::NewRun => {
                let run = uuid::Uuid::now_v7();
                Chaining::On(Linker::new(Chain::new(format!("{id}/{run}"))))
            }
            ChainHead::Last { seq, hash } => {
                // A stored hash that is not one was tampered with:
                // continue after it all the same (verification names it).
                let head = chain::from_hex(&hash).unwrap_or(chain::GENESIS);
                if let Some(checkpoints) = &mut self.checkpoints {
                    // What the last run wrote after its last checkpoint is
                    // anchored by this run's first.
                    checkpoints.last_seq = seq;
                    checkpoints.resumed = true;
                }
                Chaining::On(Linker::new(Chain::resume(id, seq, head)))
            }
        })
    }

    /// Notes the records of a written batch that failed, once they had a
    /// place in the chain: the next gap record reports them.
    fn note_failed(&mut self, batch: &[Arc<AuditRecord>], failed: usize) {
        if failed == 0 || !matches!(self.chaining, Chaining::On(_)) {
            return;
        }
        let seqs = batch
            .first()
            .and_then(|f| Some((f.seq()?, batch.last()?.seq()?)));
        let Some((first, last)) = seqs else {
            return;
        };
        let gap = &mut self.gap;
        gap.failed += failed as u64;
        gap.seqs = Some(match gap.seqs {
            Some((from, to)) => (from.min(first), to.max(last)),
            None => (first, last),
        });
    }

    /// Writes a gap record into the chain, alone and uncounted, when
    /// records were lost since the last one: so that verification tells
    /// records lost at the time (and reported) from records deleted later.
    /// A gap record that cannot be written is itself reported by the next.
    fn write_gap_if_due(&mut self) {
        if !matches!(self.chaining, Chaining::On(_)) {
            return;
        }
        let (_, dropped) = self.queue.lost();
        let gap = &self.gap;
        let new_drops = dropped.saturating_sub(gap.dropped_reported);
        if gap.failed == 0 && new_drops == 0 {
            return;
        }
        let mut builder = AuditRecord::builder(GAP_ACTION).detail("dropped", new_drops);
        if let Some((from, to)) = gap.seqs {
            builder = builder
                .detail("failed", gap.failed)
                .detail("failed_from", from)
                .detail("failed_to", to);
        }
        let mut record = [Arc::new(builder.build())];
        let reported = std::mem::replace(
            &mut self.gap,
            PendingGap {
                dropped_reported: dropped,
                ..PendingGap::default()
            },
        );
        let failed = self.write(&mut record, false);
        if failed > 0 {
            // Still to report, with the gap record's own `seq`.
            self.gap = reported;
            self.note_failed(&record, failed);
        }
    }

    /// Writes a checkpoint record into the chain, alone and uncounted, when
    /// one is due: the run's first after resuming a stored chain, every N
    /// records, every interval while records come, and at shutdown
    /// (`closing`: always, so that the run's last record says it ended
    /// cleanly). Otherwise nothing new since the last one: none. A checkpoint
    /// that cannot be written leaves a gap (reported by the next gap
    /// record) and is tried again at the next batch.
    fn checkpoint_if_due(&mut self, closing: bool) {
        let (Chaining::On(linker), Some(cp)) = (&self.chaining, &mut self.checkpoints) else {
            return;
        };
        let chain = linker.chain();
        let since = chain.seq().saturating_sub(cp.last_seq);
        // Nothing new since the last checkpoint: none, except at shutdown,
        // whose checkpoint marks the run's end.
        if since == 0 && !closing {
            return;
        }
        let why = Why {
            resumed: cp.resumed,
            last: closing,
        };
        let periodic = since >= cp.policy.every_records || cp.last_at.elapsed() >= cp.policy.every;
        if !(periodic || why.resumed || why.last) {
            return;
        }
        // The next is due after at most N records, a batch's worth past
        // the threshold and a gap record.
        let due_within = cp
            .policy
            .every_records
            .saturating_add(self.config.batch_size as u64)
            .saturating_add(1);
        let link = cp.link;
        let record = checkpoint::record(chain, &cp.policy, due_within, why, &mut cp.link);
        let mut record = [Arc::new(record)];
        let failed = self.write(&mut record, false);
        let Some(cp) = &mut self.checkpoints else {
            return;
        };
        cp.last_at = Instant::now();
        if failed > 0 {
            // Not stored: the next one links to the one before.
            cp.link = link;
            self.note_failed(&record, failed);
            return;
        }
        cp.last_seq = record[0].seq().unwrap_or(cp.last_seq);
        cp.resumed = false;
        if let Some(copy) = &cp.copy {
            // At shutdown, a copy failing for a moment is retried until
            // the deadline: nothing comes after to take it along.
            let until = if closing {
                self.lifecycle.deadline()
            } else {
                None
            };
            copy.copy(&record[0], until);
        }
    }

    /// Writes `batch`, retrying transient errors with capped exponential
    /// backoff until it succeeds or the shutdown deadline passes.
    ///
    /// Returns how many of its records failed. An uncounted write (a gap
    /// record) changes none of the report's counters.
    fn write(&mut self, batch: &mut [Arc<AuditRecord>], counted: bool) -> usize {
        let mut backoff = self.config.min_backoff;
        let mut linked = false;
        loop {
            // A sink that panics loses its batch, not the worker: the
            // records are counted as failed and the next batch goes on.
            // Muted: the sink's own I/O never logs record contents into the
            // application's logs.
            let started = Instant::now();
            let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                crate::quiet::muted(|| self.attempt(batch, &mut linked))
            }));
            self.metrics.batch(batch.len(), started.elapsed());
            let attempt = attempt.unwrap_or_else(|_| Err(SinkError::rejected("the sink panicked")));
            let error = match attempt {
                Ok(()) => {
                    if counted && self.queue.record_outcome(batch.len(), 0) {
                        self.lifecycle.progress.notify();
                    }
                    return 0;
                }
                Err(error) => error,
            };
            if self.queue.record_error(&error, error.is_transient()) {
                self.lifecycle.progress.notify();
            }
            if let Some(failed) = error.failed_records() {
                let failed = failed.min(batch.len());
                warn_failed(
                    &self.queue.name,
                    &error,
                    "some records of a batch were refused",
                );
                if counted && self.queue.record_outcome(batch.len() - failed, failed) {
                    self.lifecycle.progress.notify();
                }
                return failed;
            }
            let deadline = self.lifecycle.deadline();
            if !error.is_transient() || deadline.is_some_and(|d| Instant::now() >= d) {
                warn_failed(&self.queue.name, &error, "giving up on a batch");
                if counted {
                    self.queue.record_outcome(0, batch.len());
                }
                return batch.len();
            }
            if self.retry_warnings.allow() {
                warn_failed(&self.queue.name, &error, "retrying");
            }
            let wait = match deadline {
                Some(d) => backoff.min(d.saturating_duration_since(Instant::now())),
                None => backoff,
            };
            // Shutdown unparks us so that the deadline is noticed at once.
            std::thread::park_timeout(wait);
            self.metrics.retry();
            backoff = (backoff * 2).min(self.config.max_backoff);
        }
    }
}

/// Marks the worker finished when it returns or unwinds.
struct Finished(Arc<SinkQueue>, Arc<Lifecycle>);

impl Drop for Finished {
    fn drop(&mut self) {
        self.0.set_finished();
        self.1.progress.notify();
    }
}

fn warn_failed(sink: &str, error: &SinkError, what: &str) {
    let error = crate::error::Chain(error);
    tracing::warn!(target: "fabric_audit", sink, %error, "audit sink write failed; {what}");
}

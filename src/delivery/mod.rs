//! Getting records from the emitting thread to every sink, losing none
//! silently.
//!
//! The emitting thread only enqueues ([`Delivery::submit`]); each sink has a
//! bounded queue and a worker thread ([`worker`]). Flush barriers travel
//! through the queues ([`flush`]), so "everything emitted before the flush"
//! is exact per sink without a lock on the emitting path.
//!
//! # Accounting
//!
//! Every record that enters ([`Intake`]) is offered once to every sink and
//! ends, in each sink, as exactly one of written, dropped (queue full, or
//! closed) or failed (refused by the sink, or not written by the shutdown
//! deadline). While running, `emitted = written + dropped + failed +
//! pending` per sink, where pending records are queued or being written;
//! in the final report pending is zero. Records emitted after shutdown
//! began never enter: they are counted as emitted and dropped in every
//! sink, from one counter, so every report balances.
//!
//! # Shutdown
//!
//! [`Delivery::shutdown`] ([`shutdown`] has the steps) closes the intake
//! (one atomic operation decides which records made it), closes the queues
//! and sets the deadline. Workers drain their queues, retrying failing sinks until the
//! deadline, and finish once their queue is empty and every admitted
//! record has settled. Shutdown waits for them until the deadline (and a
//! short grace); a worker still busy then (a sink hung on a dead
//! connection) is abandoned: what it has not settled counts as failed, and
//! it counts nothing more.

pub(crate) mod copy;
pub(crate) mod flush;
mod metrics;
mod pool;
pub(crate) mod queue;
mod shutdown;
pub(crate) mod signal;
pub(crate) mod worker;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use self::pool::RecordPool;
use self::queue::SinkQueue;
use self::signal::Signal;
use self::worker::{Worker, WorkerConfig};
use crate::report::Report;
use crate::sink::Sink;
use crate::{AuditRecord, Error, Result};

/// What to do with a record when a sink's queue is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Overflow {
    /// Drop the new record, count it in the sink's
    /// [`dropped`](crate::SinkReport::dropped) counter and log a warning (at
    /// most one a second, on target `fabric_audit`). The emitting thread
    /// never waits.
    #[default]
    DropNewest,
    /// Make the emitting thread wait for room: no record is dropped, at the
    /// cost of the caller's latency while a sink is slow or failing.
    Block,
}

/// How the pipeline is set up: what [`AuditLayerBuilder`](crate::AuditLayerBuilder)
/// checked and hands over.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) queue_capacity: usize,
    pub(crate) overflow: Overflow,
    pub(crate) worker: WorkerConfig,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) max_record_bytes: usize,
    /// This instance's name in the sinks' chain names.
    pub(crate) instance: String,
    /// Checkpoints of every chain, when they are on, and where they are
    /// copied to.
    pub(crate) checkpoints: Option<(
        Arc<crate::chain::checkpoint::Policy>,
        Option<Arc<copy::CheckpointCopy>>,
    )>,
}

/// Where the pipeline is in its life, shared by the emitting side and
/// every worker: whether it is closing and by when its workers must be
/// done, which records entered before the close, and the signal that
/// every change of progress notifies.
#[derive(Debug, Default)]
pub(crate) struct Lifecycle {
    /// Notified when a flush barrier is reached, a sink changes health or
    /// a worker finishes: what flushes and shutdown wait on.
    pub(crate) progress: Signal,
    closing: AtomicBool,
    deadline: OnceLock<Instant>,
    pub(crate) intake: Intake,
}

impl Lifecycle {
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Past this instant, workers stop retrying at shutdown.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline.get().copied()
    }
}

/// Counts the records that enter the pipeline, so that shutdown knows
/// exactly which made it in.
///
/// `entered` is one atomic: its top bit closes the intake, and the
/// modification order of that one variable decides, for each record,
/// whether it came before the close (admitted: offered to every sink) or
/// after (late: dropped everywhere). No lock, and one more atomic add per
/// record than a plain counter (`settled`).
#[derive(Debug, Default)]
pub(crate) struct Intake {
    /// Records that tried to enter; the top bit is set once closed.
    entered: AtomicU64,
    /// Admitted records already offered to every sink.
    settled: AtomicU64,
    /// Records that came after the close.
    late: AtomicU64,
    /// How many were admitted before the close.
    admitted: OnceLock<u64>,
}

const CLOSED: u64 = 1 << 63;

impl Intake {
    /// Lets a record in, or counts it as late once the intake is closed.
    fn admit(&self) -> bool {
        if self.entered.fetch_add(1, Ordering::AcqRel) & CLOSED == 0 {
            return true;
        }
        self.late.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// An admitted record has been offered to every sink.
    fn settle(&self) {
        self.settled.fetch_add(1, Ordering::Release);
    }

    fn close(&self) {
        let before = self.entered.fetch_or(CLOSED, Ordering::AcqRel);
        // The first close decides; a second finds the bit set and changes
        // nothing.
        if before & CLOSED == 0 {
            let _ = self.admitted.set(before);
        }
    }

    /// Whether the intake is closed and every admitted record offered.
    pub(crate) fn is_settled(&self) -> bool {
        self.admitted
            .get()
            .is_some_and(|&n| self.settled.load(Ordering::Acquire) == n)
    }

    /// Records admitted so far, and records refused as late.
    pub(crate) fn counts(&self) -> (u64, u64) {
        loop {
            if let Some(&admitted) = self.admitted.get() {
                return (admitted, self.late.load(Ordering::Relaxed));
            }
            let entered = self.entered.load(Ordering::Acquire);
            if entered & CLOSED == 0 {
                return (entered, 0);
            }
            // Closed a moment ago; `admitted` is being set.
            std::hint::spin_loop();
        }
    }
}

/// The emitting side: held by the layer and by every handle.
#[derive(Debug)]
pub(crate) struct Delivery {
    /// One per sink, in the order the sinks were added.
    queues: Vec<Arc<SinkQueue>>,
    lifecycle: Arc<Lifecycle>,
    pool: Arc<RecordPool>,
    /// What `AuditHandle::check` probes have found.
    pub(crate) probe: crate::layer::probe::Probes,
    /// What `submit` does when a queue is full.
    overflow: Overflow,
    /// Events without an action: refused before they enter, so counted
    /// here and not in any sink (they are not part of `emitted`).
    invalid: AtomicU64,
    /// One warning a second about dropped records, however many drop.
    drop_warnings: RateLimit,
    /// One warning a second about events without an action.
    invalid_warnings: RateLimit,
    /// From the start of shutdown to the deadline of the workers' retries.
    shutdown_timeout: Duration,
    /// The size budget of each record's text.
    max_record_bytes: usize,
    /// Each worker with the index of its queue; taken by the first
    /// `finish_shutdown`.
    workers: Mutex<Vec<(usize, JoinHandle<()>)>>,
    /// Set once shutdown has joined or abandoned the workers: later calls
    /// only read the counters.
    final_report: OnceLock<()>,
    /// Where the chains' checkpoints are copied, for its counters.
    checkpoint_copy: Option<Arc<copy::CheckpointCopy>>,
}

impl Delivery {
    /// Gives each sink its queue and its worker thread.
    ///
    /// # Errors
    ///
    /// A worker thread that cannot be spawned; the workers already running
    /// are shut down (dropping the half-built pipeline closes it).
    pub(crate) fn start(
        sinks: Vec<(String, Box<dyn Sink + Send>)>,
        settings: Settings,
    ) -> Result<Arc<Self>> {
        let queues: Vec<Arc<SinkQueue>> = sinks
            .iter()
            .map(|(name, _)| {
                let batch = settings.worker.batch_size;
                Arc::new(SinkQueue::new(name.clone(), settings.queue_capacity, batch))
            })
            .collect();
        // Shared by every worker: one warning a second about retries.
        let retry_warnings = Arc::new(RateLimit::default());
        let delivery = Arc::new(Self {
            max_record_bytes: settings.max_record_bytes,
            queues: queues.clone(),
            lifecycle: Arc::new(Lifecycle::default()),
            pool: Arc::new(RecordPool::default()),
            probe: Default::default(),
            overflow: settings.overflow,
            invalid: AtomicU64::new(0),
            drop_warnings: RateLimit::default(),
            invalid_warnings: RateLimit::default(),
            shutdown_timeout: settings.shutdown_timeout,
            workers: Mutex::new(Vec::new()),
            final_report: OnceLock::new(),
            checkpoint_copy: settings
                .checkpoints
                .as_ref()
                .and_then(|(_, copy)| copy.clone()),
        });
        for (index, (queue, (name, sink))) in queues.into_iter().zip(sinks).enumerate() {
            let worker = Worker {
                queue: queue.clone(),
                sink,
                lifecycle: delivery.lifecycle.clone(),
                pool: delivery.pool.clone(),
                retry_warnings: retry_warnings.clone(),
                config: settings.worker,
                metrics: self::metrics::SinkMetrics::new(&name),
                chain_id: format!("{}/{name}", settings.instance),
                chaining: worker::Chaining::Unknown,
                gap: worker::PendingGap::default(),
                checkpoints: settings
                    .checkpoints
                    .as_ref()
                    .map(|(policy, copy)| worker::Checkpointing::new(policy.clone(), copy.clone())),
            };
            let thread = std::thread::Builder::new()
                .name(format!("fabric-audit-{name}"))
                .spawn(move || worker.run())
                .map_err(|e| Error::io(format!("cannot start the worker of sink `{name}`"), e))?;
            queue.set_worker(thread.thread().clone());
            delivery
                .workers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((index, thread));
        }
        Ok(delivery)
    }

    /// A record to fill, stamped with the current time: a spent one from
    /// the pool when there is one. The `Arc` is not shared, so the caller
    /// can fill it in place with [`Arc::make_mut`] (which never clones it).
    pub(crate) fn start_record(&self) -> Arc<AuditRecord> {
        let mut record = self.pool.take();
        Arc::make_mut(&mut record).reset_now(self.max_record_bytes);
        record
    }

    /// Hands a finished record to every sink's queue. Never blocks, unless
    /// the overflow policy is [`Overflow::Block`].
    pub(crate) fn submit(&self, record: Arc<AuditRecord>) {
        if record.action_is_empty() {
            self.pool.recycle(record);
            let n = self.invalid.fetch_add(1, Ordering::Relaxed) + 1;
            if self.invalid_warnings.allow() {
                tracing::warn!(
                    target: "fabric_audit",
                    invalid_total = n,
                    "audit event without an action was not recorded"
                );
            }
            return;
        }
        let intake = &self.lifecycle.intake;
        if !intake.admit() {
            // After shutdown: counted as dropped in every sink.
            self.pool.recycle(record);
            return;
        }
        let mut dropped = false;
        if let Some((last, others)) = self.queues.split_last() {
            for queue in others {
                dropped |= !queue.offer(record.clone(), self.overflow);
            }
            // The last sink takes our reference: one atomic less per record.
            dropped |= !last.offer(record, self.overflow);
        }
        intake.settle();
        if dropped && !self.lifecycle.is_closing() && self.drop_warnings.allow() {
            self.warn_dropped();
        }
    }

    /// Names each sink that dropped records, with its total so far.
    /// Cold and out of line: the emitting path only pays for the check.
    #[cold]
    fn warn_dropped(&self) {
        let report = self.report();
        for sink in report.sinks().iter().filter(|s| s.dropped() > 0) {
            tracing::warn!(
                target: "fabric_audit",
                sink = sink.name(),
                dropped_total = sink.dropped(),
                "audit queue full; dropping records"
            );
        }
    }

    /// The counters. The sinks' are read before the intake's, so that no
    /// sink shows a record the intake has not counted: pending is never
    /// negative, and zero once shut down.
    pub(crate) fn report(&self) -> Report {
        let mut sinks: Vec<_> = self.queues.iter().map(|s| s.report(0)).collect();
        let (admitted, late) = self.lifecycle.intake.counts();
        let emitted = admitted + late;
        for sink in &mut sinks {
            sink.dropped += late;
            sink.pending = emitted.saturating_sub(sink.written + sink.dropped + sink.failed);
        }
        Report {
            emitted,
            invalid: self.invalid.load(Ordering::Relaxed),
            unseen: crate::__private::unseen_events(),
            sinks,
            checkpoint_copy: self.checkpoint_copy.as_ref().map(|c| c.report()),
        }
    }

    /// How many sinks there are.
    pub(crate) fn sink_count(&self) -> usize {
        self.queues.len()
    }
}

impl Drop for Delivery {
    /// The last producer is gone without a shutdown: let the workers drain
    /// what is queued and exit on their own.
    fn drop(&mut self) {
        self.begin_shutdown();
    }
}

/// Allows one event per second: for warnings on paths that can fire a
/// million times a second.
///
/// Lock-free: the caller that moves `next_ms` forward (one compare and
/// swap) is the one allowed; the others lose the race and stay quiet.
#[derive(Debug)]
pub(crate) struct RateLimit {
    origin: Instant,
    next_ms: AtomicU64,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            next_ms: AtomicU64::new(0),
        }
    }
}

impl RateLimit {
    const PERIOD_MS: u64 = 1000;

    pub(crate) fn allow(&self) -> bool {
        let now = self.origin.elapsed().as_millis() as u64;
        let next = self.next_ms.load(Ordering::Relaxed);
        now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now + Self::PERIOD_MS,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_allows_one_per_period() {
        let limit = RateLimit::default();
        assert!(limit.allow());
        assert!(!limit.allow());
        assert!(!limit.allow());
    }
}

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
//! [`Delivery::begin_shutdown`] closes the intake (one atomic operation
//! decides which records made it), closes the queues and sets the
//! deadline. Workers drain their queues, retrying failing sinks until the
//! deadline, and finish once their queue is empty and every admitted
//! record has settled. Shutdown waits for them until the deadline (and a
//! short grace); a worker still busy then (a sink hung on a dead
//! connection) is abandoned: what it has not settled counts as failed, and
//! it counts nothing more.

pub(crate) mod flush;
mod metrics;
pub(crate) mod signal;
pub(crate) mod slot;
pub(crate) mod worker;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;

use self::signal::Signal;
use self::slot::SinkSlot;
use self::worker::{Worker, WorkerConfig};
use crate::report::Report;
use crate::sink::Sink;
use crate::{AuditRecord, Error, Result};

/// How many spent records are kept for reuse.
const POOL_CAPACITY: usize = 4096;

/// Records holding more heap than this are freed rather than reused, so a
/// burst of large records does not stay resident in the pool.
const POOL_MAX_RECORD_BYTES: usize = 4096;

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
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    pub(crate) queue_capacity: usize,
    pub(crate) overflow: Overflow,
    pub(crate) worker: WorkerConfig,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) max_record_bytes: usize,
}

/// How long past its deadline shutdown waits for a worker that is giving
/// up its last batch, before abandoning it.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(250);

/// State shared with the workers.
#[derive(Debug)]
pub(crate) struct Control {
    /// Notified when a barrier is reached, a sink changes health or a
    /// worker finishes.
    pub(crate) progress: Signal,
    closing: AtomicBool,
    deadline: OnceLock<Instant>,
    pub(crate) intake: Intake,
    pub(crate) warnings: RateLimit,
    /// Spent records, returned by the workers for the emitting threads to
    /// fill again: steady emission then allocates nothing, and memory is
    /// not freed on one thread for another to allocate (which makes the
    /// allocator's threads contend).
    pool: ArrayQueue<Arc<AuditRecord>>,
}

impl Default for Control {
    fn default() -> Self {
        Self {
            progress: Signal::default(),
            closing: AtomicBool::new(false),
            deadline: OnceLock::new(),
            intake: Intake::default(),
            warnings: RateLimit::default(),
            pool: ArrayQueue::new(POOL_CAPACITY),
        }
    }
}

impl Control {
    /// Keeps a record no sink needs any more for reuse, if it is the last
    /// reference and not oversized; frees it otherwise.
    pub(crate) fn recycle(&self, record: Arc<AuditRecord>) {
        if Arc::strong_count(&record) == 1 && record.retained_bytes() <= POOL_MAX_RECORD_BYTES {
            let _ = self.pool.push(record);
        }
    }

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
    pub(crate) slots: Vec<Arc<SinkSlot>>,
    pub(crate) control: Arc<Control>,
    /// What `AuditHandle::check` probes have found.
    pub(crate) probe: crate::layer::probe::Probes,
    overflow: Overflow,
    invalid: AtomicU64,
    drop_warnings: RateLimit,
    invalid_warnings: RateLimit,
    shutdown_timeout: Duration,
    /// The size budget of each record's text.
    max_record_bytes: usize,
    /// Each worker with the index of its slot.
    workers: Mutex<Vec<(usize, JoinHandle<()>)>>,
    final_report: OnceLock<()>,
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
        let slots: Vec<Arc<SinkSlot>> = sinks
            .iter()
            .map(|(name, _)| {
                let batch = settings.worker.batch_size;
                Arc::new(SinkSlot::new(name.clone(), settings.queue_capacity, batch))
            })
            .collect();
        let delivery = Arc::new(Self {
            max_record_bytes: settings.max_record_bytes,
            slots: slots.clone(),
            control: Arc::new(Control::default()),
            probe: Default::default(),
            overflow: settings.overflow,
            invalid: AtomicU64::new(0),
            drop_warnings: RateLimit::default(),
            invalid_warnings: RateLimit::default(),
            shutdown_timeout: settings.shutdown_timeout,
            workers: Mutex::new(Vec::new()),
            final_report: OnceLock::new(),
        });
        for (index, (slot, (name, sink))) in slots.into_iter().zip(sinks).enumerate() {
            let worker = Worker {
                slot: slot.clone(),
                sink,
                control: delivery.control.clone(),
                config: settings.worker,
                metrics: self::metrics::SinkMetrics::new(&name),
            };
            let thread = std::thread::Builder::new()
                .name(format!("fabric-audit-{name}"))
                .spawn(move || worker.run())
                .map_err(|e| Error::io(format!("cannot start the worker of sink `{name}`"), e))?;
            slot.set_worker(thread.thread().clone());
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
        let mut record = match self.control.pool.pop() {
            Some(spent) if Arc::strong_count(&spent) == 1 => spent,
            _ => Arc::new(AuditRecord::empty()),
        };
        Arc::make_mut(&mut record).reset_now(self.max_record_bytes);
        record
    }

    /// Hands a finished record to every sink's queue. Never blocks, unless
    /// the overflow policy is [`Overflow::Block`].
    pub(crate) fn submit(&self, record: Arc<AuditRecord>) {
        if record.action_is_empty() {
            self.control.recycle(record);
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
        let intake = &self.control.intake;
        if !intake.admit() {
            // After shutdown: counted as dropped in every sink.
            self.control.recycle(record);
            return;
        }
        let mut dropped = false;
        if let Some((last, others)) = self.slots.split_last() {
            for slot in others {
                dropped |= !slot.offer(record.clone(), self.overflow);
            }
            // The last sink takes our reference: one atomic less per record.
            dropped |= !last.offer(record, self.overflow);
        }
        intake.settle();
        if dropped && !self.control.is_closing() && self.drop_warnings.allow() {
            self.warn_dropped();
        }
    }

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
        let mut sinks: Vec<_> = self.slots.iter().map(|s| s.report(0)).collect();
        let (admitted, late) = self.control.intake.counts();
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
        }
    }

    /// Stops accepting records, lets every worker drain its queue (retrying
    /// failing sinks until the shutdown timeout), and wakes them all.
    pub(crate) fn begin_shutdown(&self) {
        let _ = self
            .control
            .deadline
            .set(Instant::now() + self.shutdown_timeout);
        self.control.intake.close();
        self.control.closing.store(true, Ordering::Release);
        for slot in &self.slots {
            slot.close();
        }
    }

    pub(crate) fn workers_finished(&self) -> bool {
        self.slots.iter().all(|s| s.is_finished())
    }

    /// When shutdown stops waiting for the workers.
    pub(crate) fn give_up_at(&self) -> Instant {
        self.control.deadline().unwrap_or_else(Instant::now) + SHUTDOWN_GRACE
    }

    /// Whether shutdown is done waiting: every worker finished, or the
    /// deadline and its grace are past.
    pub(crate) fn shutdown_waited(&self) -> bool {
        self.workers_finished() || Instant::now() >= self.give_up_at()
    }

    /// After the wait: joins the finished workers, abandons the others,
    /// and gives the final report.
    pub(crate) fn finish_shutdown(&self) -> Report {
        self.final_report.get_or_init(|| {
            let intake = &self.control.intake;
            // Emitters still handing over admitted records finish at once:
            // the queues are closed and blocked emitters were woken.
            while !intake.is_settled() {
                std::thread::yield_now();
            }
            let workers =
                std::mem::take(&mut *self.workers.lock().unwrap_or_else(PoisonError::into_inner));
            for (index, worker) in workers {
                let slot = &self.slots[index];
                if slot.is_finished() {
                    // A panicking sink is reported through its counters; the
                    // panic itself has already been printed by the hook.
                    let _ = worker.join();
                    slot.drop_leftovers();
                } else {
                    let (admitted, _) = intake.counts();
                    slot.abandon(admitted);
                    tracing::warn!(
                        target: "fabric_audit",
                        sink = %slot.name,
                        "audit sink still busy at the shutdown deadline; its unwritten records are counted as failed"
                    );
                }
            }
        });
        self.report()
    }
}

impl Drop for Delivery {
    /// The last producer is gone without a shutdown: let the workers drain
    /// what is queued and exit on their own.
    fn drop(&mut self) {
        self.begin_shutdown();
    }
}

/// Notifies a signal at an instant, unless dropped first: wakes shutdown's
/// wait at its deadline without a timer of the caller's runtime.
pub(crate) struct Alarm {
    state: Arc<(Mutex<bool>, Condvar)>,
}

impl Alarm {
    pub(crate) fn at(when: Instant, control: Arc<Control>) -> Self {
        let state = Arc::new((Mutex::new(false), Condvar::new()));
        let shared = state.clone();
        let spawned = std::thread::Builder::new()
            .name("fabric-audit-alarm".into())
            .spawn(move || {
                let (lock, cv) = &*shared;
                let mut cancelled = lock.lock().unwrap_or_else(PoisonError::into_inner);
                while !*cancelled {
                    let left = when.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        drop(cancelled);
                        control.progress.notify();
                        return;
                    }
                    cancelled = cv
                        .wait_timeout(cancelled, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            });
        if spawned.is_err() {
            // No thread: the waiters are still woken by every worker that
            // finishes; only a hung one would hold shutdown up.
            tracing::warn!(target: "fabric_audit", "cannot start the shutdown alarm thread");
        }
        Self { state }
    }
}

impl Drop for Alarm {
    fn drop(&mut self) {
        let (lock, cv) = &*self.state;
        *lock.lock().unwrap_or_else(PoisonError::into_inner) = true;
        cv.notify_all();
    }
}

impl std::fmt::Debug for Alarm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alarm").finish_non_exhaustive()
    }
}

/// Allows one event per second: for warnings on paths that can fire a
/// million times a second.
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

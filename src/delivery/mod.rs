//! Getting records from the emitting thread to every sink, losing none
//! silently.
//!
//! The emitting thread only enqueues ([`Delivery::submit`]); each sink has a
//! bounded queue and a worker thread ([`worker`]). Flush barriers travel
//! through the queues as markers, so "everything emitted before the flush"
//! is exact per sink without a lock on the emitting path.

pub(crate) mod signal;
pub(crate) mod slot;
pub(crate) mod worker;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;

use self::signal::Signal;
use self::slot::SinkSlot;
use crate::report::Report;
use crate::{AuditRecord, Overflow};

/// How many spent records are kept for reuse.
const POOL_CAPACITY: usize = 4096;

/// Records holding more heap than this are freed rather than reused, so a
/// burst of large records does not stay resident in the pool.
const POOL_MAX_RECORD_BYTES: usize = 4096;

/// State shared with the workers.
#[derive(Debug)]
pub(crate) struct Control {
    /// Notified when a marker is reached, a sink changes health or a worker
    /// finishes.
    pub(crate) progress: Signal,
    closing: AtomicBool,
    deadline: OnceLock<Instant>,
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

/// The emitting side: held by the layer and by every handle.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) slots: Vec<Arc<SinkSlot>>,
    pub(crate) control: Arc<Control>,
    overflow: Overflow,
    emitted: AtomicU64,
    invalid: AtomicU64,
    drop_warnings: RateLimit,
    invalid_warnings: RateLimit,
    shutdown_timeout: Duration,
    workers: Mutex<Vec<JoinHandle<()>>>,
    final_report: OnceLock<Report>,
}

impl Delivery {
    pub(crate) fn new(
        slots: Vec<Arc<SinkSlot>>,
        overflow: Overflow,
        shutdown_timeout: Duration,
    ) -> Self {
        Self {
            slots,
            control: Arc::new(Control::default()),
            overflow,
            emitted: AtomicU64::new(0),
            invalid: AtomicU64::new(0),
            drop_warnings: RateLimit::default(),
            invalid_warnings: RateLimit::default(),
            shutdown_timeout,
            workers: Mutex::new(Vec::new()),
            final_report: OnceLock::new(),
        }
    }

    pub(crate) fn add_worker(&self, worker: JoinHandle<()>) {
        self.workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(worker);
    }

    /// A record to fill, stamped with the current time: a spent one from
    /// the pool when there is one. The `Arc` is not shared, so the caller
    /// can fill it in place with [`Arc::make_mut`] (which never clones it).
    pub(crate) fn start_record(&self) -> Arc<AuditRecord> {
        let mut record = match self.control.pool.pop() {
            Some(spent) if Arc::strong_count(&spent) == 1 => spent,
            _ => Arc::new(AuditRecord::empty()),
        };
        Arc::make_mut(&mut record).reset_now();
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
        self.emitted.fetch_add(1, Ordering::Relaxed);
        let mut dropped = false;
        if let Some((last, others)) = self.slots.split_last() {
            for slot in others {
                dropped |= !slot.offer(record.clone(), self.overflow);
            }
            // The last sink takes our reference: one atomic less per record.
            dropped |= !last.offer(record, self.overflow);
        }
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

    pub(crate) fn report(&self) -> Report {
        if let Some(report) = self.final_report.get() {
            return report.clone();
        }
        Report {
            emitted: self.emitted.load(Ordering::Relaxed),
            invalid: self.invalid.load(Ordering::Relaxed),
            sinks: self.slots.iter().map(|s| s.report()).collect(),
        }
    }

    /// Stops accepting records, lets every worker drain its queue (retrying
    /// failing sinks until the shutdown timeout), and wakes them all.
    pub(crate) fn begin_shutdown(&self) {
        let _ = self
            .control
            .deadline
            .set(Instant::now() + self.shutdown_timeout);
        self.control.closing.store(true, Ordering::Release);
        for slot in &self.slots {
            slot.close();
        }
    }

    pub(crate) fn workers_finished(&self) -> bool {
        self.slots.iter().all(|s| s.is_finished())
    }

    /// After every worker has finished: joins them and freezes the report.
    pub(crate) fn finish_shutdown(&self) -> Report {
        let workers =
            std::mem::take(&mut *self.workers.lock().unwrap_or_else(PoisonError::into_inner));
        for worker in workers {
            // A panicking sink is reported through its counters; the panic
            // itself has already been printed by the panic hook.
            let _ = worker.join();
        }
        for slot in &self.slots {
            slot.drop_leftovers();
        }
        self.final_report.get_or_init(|| self.report()).clone()
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

//! One sink's queue and counters: the meeting point of emitters and worker.
//!
//! Emitters push into a lock-free bounded queue and go. They wake the worker
//! only when it sleeps and the queue has reached a batch's worth, so a
//! steady stream of events costs no wake-up system call per event; the
//! worker otherwise wakes on its own timer.
//!
//! # Who touches what
//!
//! | part | emitters | worker | flush | shutdown |
//! |---|---|---|---|---|
//! | `items` | push records | pop | push barriers | pops leftovers once the worker is gone |
//! | `sleeping` | read, clear to wake | set before parking | clear to wake | clear to wake |
//! | `space` | wait when full (`Block`) | notify after draining | wait when full | notify on close |
//! | `closed` | read | | read | set |
//! | counters | `dropped` | `written`, `failed`, `errors` | read | `failed` (abandon) |
//!
//! # Counting
//!
//! Every record offered to the queue is counted exactly once: `dropped`
//! when refused (full, or closed), otherwise `written` or `failed` by the
//! worker, or `dropped` when still queued after the worker is gone, or
//! `failed` when shutdown abandons a worker stuck at its deadline. The
//! `abandoned` lock makes the last case and the worker's own counting
//! mutually exclusive, so a stuck write that returns late counts nothing.
//!
//! The counters are plain relaxed atomics: each is only ever added to, and
//! a [`report`](SinkQueue::report) is a snapshot. Its consistency with the
//! intake (no sink ahead of the emitted count) comes from the order in
//! which [`Delivery::report`](super::Delivery::report) reads them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::Thread;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;

use super::signal::Signal;
use super::Overflow;
use crate::report::SinkReport;
use crate::AuditRecord;

/// What travels through a sink's queue.
#[derive(Debug)]
pub(crate) enum Item {
    /// A record, shared by every sink's queue (one allocation per event).
    Record(Arc<AuditRecord>),
    /// A flush barrier: reached once everything queued before it is settled.
    Barrier(Arc<Barrier>),
}

/// A flush barrier in one sink's queue (see [`super::flush`]).
#[derive(Debug, Default)]
pub(crate) struct Barrier {
    reached: AtomicBool,
    /// The sink's failed count when the barrier was reached: every record
    /// queued before it was written or failed by then.
    failed: AtomicU64,
}

impl Barrier {
    /// Marks the barrier reached, with the sink's failed count at that point.
    pub(crate) fn reach(&self, failed: u64) {
        self.failed.store(failed, Ordering::Relaxed);
        self.reached.store(true, Ordering::Release);
    }

    /// The failed count when reached, or `None` while not reached.
    pub(crate) fn failed_when_reached(&self) -> Option<u64> {
        self.reached
            .load(Ordering::Acquire)
            .then(|| self.failed.load(Ordering::Relaxed))
    }
}

/// One sink's queue and its counters: what emitters, its worker, flushes
/// and shutdown share.
#[derive(Debug)]
pub(crate) struct SinkQueue {
    /// The sink's name, as in the report.
    pub(crate) name: String,
    /// Records and flush barriers, in the order they were queued: the
    /// order that makes a barrier mean "everything before me".
    items: ArrayQueue<Item>,
    /// Queue length at which an emitter wakes a sleeping worker: a batch,
    /// or half the queue if that is smaller (so that a small queue does
    /// not fill up before its worker is woken).
    wake_at: usize,
    /// Set by the worker just before it parks, cleared by whoever wakes
    /// it: lets emitters skip the unpark system call while it is awake.
    sleeping: AtomicBool,
    /// The worker's thread, to unpark; set once, right after it spawned.
    worker: OnceLock<Thread>,
    /// Notified by the worker when it has made room in the queue.
    pub(crate) space: Signal,
    /// Set at shutdown: the queue accepts nothing more.
    closed: AtomicBool,
    /// Set when the worker has returned.
    finished: AtomicBool,
    /// Set by a transient error, cleared by the next write that succeeds:
    /// flushes do not wait for a failing sink.
    failing: AtomicBool,
    /// The text of the last error, for the report.
    last_error: Mutex<Option<String>>,
    /// Set when shutdown gave up on a worker that did not finish by the
    /// deadline; the lock makes that and the worker's own counting
    /// mutually exclusive, so no record is counted twice.
    abandoned: Mutex<bool>,
    /// Records stored by the sink.
    written: AtomicU64,
    /// Records refused by the queue (full or closed), or left in it.
    dropped: AtomicU64,
    /// Records the sink refused, gave up on, or never finished.
    failed: AtomicU64,
    /// Failed attempts (a retried batch counts each attempt).
    errors: AtomicU64,
}

impl SinkQueue {
    pub(crate) fn new(name: String, capacity: usize, batch_size: usize) -> Self {
        Self {
            name,
            items: ArrayQueue::new(capacity.max(1)),
            wake_at: batch_size.min(capacity / 2).max(1),
            sleeping: AtomicBool::new(false),
            worker: OnceLock::new(),
            space: Signal::default(),
            closed: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            last_error: Mutex::new(None),
            abandoned: Mutex::new(false),
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }

    pub(crate) fn set_worker(&self, thread: Thread) {
        let _ = self.worker.set(thread);
    }

    /// Queues `record`, or counts it as dropped. Returns whether it was
    /// queued. Under [`Overflow::Block`] waits for room instead of dropping.
    pub(crate) fn offer(&self, record: Arc<AuditRecord>, overflow: Overflow) -> bool {
        if self.is_closed() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        match self.items.push(Item::Record(record)) {
            Ok(()) => {
                if self.sleeping.load(Ordering::Relaxed) && self.items.len() >= self.wake_at {
                    self.wake_if_sleeping();
                }
                true
            }
            Err(item) if overflow == Overflow::Block => self.push_blocking(item),
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                self.wake_if_sleeping();
                false
            }
        }
    }

    /// The [`Overflow::Block`] path: waits on `space` until the item fits
    /// or the queue closes. Wakes the worker first, and again after every
    /// failed push: a full queue with a sleeping worker would never drain.
    fn push_blocking(&self, item: Item) -> bool {
        let mut pending = Some(item);
        self.wake_if_sleeping();
        self.space.wait_blocking(|| {
            let Some(item) = pending.take() else {
                return true;
            };
            if self.is_closed() {
                // Shut down while we waited: give up on this record.
                pending = Some(item);
                return true;
            }
            match self.items.push(item) {
                Ok(()) => true,
                Err(item) => {
                    pending = Some(item);
                    self.wake_if_sleeping();
                    false
                }
            }
        });
        if pending.is_some() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Wakes the worker if it sleeps.
    pub(crate) fn wake_if_sleeping(&self) {
        // A load first: under a flood of dropped records the worker is
        // awake, and a swap per record would fight over the cache line.
        if self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::AcqRel) {
            if let Some(worker) = self.worker.get() {
                worker.unpark();
            }
        }
    }

    /// Wakes the worker whether or not it sleeps (shutdown, flush, backoff).
    pub(crate) fn wake_always(&self) {
        self.sleeping.store(false, Ordering::Release);
        if let Some(worker) = self.worker.get() {
            worker.unpark();
        }
    }

    /// Called by the worker with an empty queue: sleeps up to `interval`,
    /// or until an emitter finds a batch's worth queued.
    ///
    /// `sleeping` is set (`SeqCst`) before the queue is looked at: an
    /// emitter that pushed before that look is seen by it, and one that
    /// pushes after sees `sleeping` and may wake us. A wake-up that comes
    /// before `park_timeout` is not lost either: `unpark` leaves a token
    /// that makes the next park return at once.
    pub(crate) fn sleep(&self, interval: Duration) {
        self.sleeping.store(true, Ordering::SeqCst);
        if self.items.is_empty() {
            std::thread::park_timeout(interval);
        }
        self.sleeping.store(false, Ordering::Release);
    }

    /// Accepts nothing more, and wakes both the worker (to drain and
    /// finish) and emitters blocked on a full queue (to give up).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake_always();
        self.space.notify();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The worker has returned (or unwound): flushes and shutdown stop
    /// waiting for it.
    pub(crate) fn set_finished(&self) {
        self.finished.store(true, Ordering::Release);
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    pub(crate) fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    /// Records a failed attempt. A transient failure marks the sink as
    /// failing until its next success; returns whether that is news.
    /// The report's `last_error` keeps the error's whole chain of causes.
    pub(crate) fn record_error(
        &self,
        error: &(dyn std::error::Error + 'static),
        transient: bool,
    ) -> bool {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(crate::error::Chain(error).to_string());
        transient && !self.failing.swap(true, Ordering::AcqRel)
    }

    /// Records the outcome of a batch: `written` records stored, `failed`
    /// never will be. Returns whether the sink was failing until now.
    /// Nothing is counted once shutdown has abandoned the worker.
    pub(crate) fn record_outcome(&self, written: usize, failed: usize) -> bool {
        let abandoned = self
            .abandoned
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *abandoned {
            return false;
        }
        self.failed.fetch_add(failed as u64, Ordering::Relaxed);
        self.written.fetch_add(written as u64, Ordering::Relaxed);
        written > 0 && self.failing.swap(false, Ordering::AcqRel)
    }

    /// Shutdown's last word on a worker still busy at the deadline: of the
    /// `admitted` records, those not yet written, dropped or failed are
    /// counted as failed, and the worker counts nothing more.
    pub(crate) fn abandon(&self, admitted: u64) {
        let mut abandoned = self
            .abandoned
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !*abandoned {
            let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
            let settled = load(&self.written) + load(&self.dropped) + load(&self.failed);
            self.failed
                .fetch_add(admitted.saturating_sub(settled), Ordering::Relaxed);
            *abandoned = true;
        }
    }

    pub(crate) fn is_abandoned(&self) -> bool {
        *self
            .abandoned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The failed count, as a barrier records it.
    pub(crate) fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Records failed and dropped so far.
    pub(crate) fn lost(&self) -> (u64, u64) {
        (
            self.failed.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
        )
    }

    /// Takes the next item off the queue: the worker's side.
    pub(crate) fn pop(&self) -> Option<Item> {
        self.items.pop()
    }

    /// Queues a flush barrier behind everything already queued; false when
    /// the queue is full.
    pub(crate) fn push_barrier(&self, barrier: &Arc<Barrier>) -> bool {
        self.items.push(Item::Barrier(barrier.clone())).is_ok()
    }

    /// Whether nothing (no record, no barrier) is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Counts whatever is still queued as dropped (after the worker is gone).
    pub(crate) fn drop_leftovers(&self) {
        while let Some(item) = self.items.pop() {
            if let Item::Record(_) = item {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The sink's counters. `late` records, refused after shutdown began,
    /// count as dropped in every sink.
    pub(crate) fn report(&self, late: u64) -> SinkReport {
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        SinkReport {
            name: self.name.clone(),
            written: load(&self.written),
            dropped: load(&self.dropped) + late,
            failed: load(&self.failed),
            errors: load(&self.errors),
            queued: self.items.len() as u64,
            pending: 0,
            failing: self.is_failing(),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }
}

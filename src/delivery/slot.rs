//! One sink's queue and counters: the meeting point of emitters and worker.
//!
//! Emitters push into a lock-free bounded queue and go. They wake the worker
//! only when it sleeps and the queue has reached a batch's worth, so a
//! steady stream of events costs no wake-up system call per event; the
//! worker otherwise wakes on its own timer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::Thread;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;

use super::signal::Signal;
use crate::report::SinkReport;
use crate::{AuditRecord, Overflow};

/// What travels through a sink's queue.
#[derive(Debug)]
pub(crate) enum Item {
    Record(Arc<AuditRecord>),
    /// A flush barrier: reached once everything queued before it is written.
    Marker(Arc<AtomicBool>),
}

#[derive(Debug)]
pub(crate) struct SinkSlot {
    pub(crate) name: String,
    pub(crate) queue: ArrayQueue<Item>,
    /// Queue length at which an emitter wakes a sleeping worker.
    wake_at: usize,
    sleeping: AtomicBool,
    worker: OnceLock<Thread>,
    /// Notified by the worker when it has made room in the queue.
    pub(crate) space: Signal,
    /// Set at shutdown: the queue accepts nothing more.
    closed: AtomicBool,
    /// Set when the worker has returned.
    finished: AtomicBool,
    failing: AtomicBool,
    last_error: Mutex<Option<String>>,
    written: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    errors: AtomicU64,
}

impl SinkSlot {
    pub(crate) fn new(name: String, capacity: usize, batch_size: usize) -> Self {
        Self {
            name,
            queue: ArrayQueue::new(capacity.max(1)),
            wake_at: batch_size.min(capacity / 2).max(1),
            sleeping: AtomicBool::new(false),
            worker: OnceLock::new(),
            space: Signal::default(),
            closed: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            last_error: Mutex::new(None),
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
        match self.queue.push(Item::Record(record)) {
            Ok(()) => {
                if self.sleeping.load(Ordering::Relaxed) && self.queue.len() >= self.wake_at {
                    self.wake();
                }
                true
            }
            Err(item) if overflow == Overflow::Block => self.push_blocking(item),
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                self.wake();
                false
            }
        }
    }

    fn push_blocking(&self, item: Item) -> bool {
        let mut pending = Some(item);
        self.wake();
        self.space.wait_blocking(|| {
            let Some(item) = pending.take() else {
                return true;
            };
            if self.is_closed() {
                // Shut down while we waited: give up on this record.
                pending = Some(item);
                return true;
            }
            match self.queue.push(item) {
                Ok(()) => true,
                Err(item) => {
                    pending = Some(item);
                    self.wake();
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
    pub(crate) fn wake(&self) {
        // A load first: under a flood of dropped records the worker is
        // awake, and a swap per record would fight over the cache line.
        if self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::AcqRel) {
            if let Some(worker) = self.worker.get() {
                worker.unpark();
            }
        }
    }

    /// Wakes the worker whether or not it sleeps (shutdown, flush, backoff).
    pub(crate) fn kick(&self) {
        self.sleeping.store(false, Ordering::Release);
        if let Some(worker) = self.worker.get() {
            worker.unpark();
        }
    }

    /// Called by the worker with an empty queue: sleeps up to `interval`,
    /// or until an emitter finds a batch's worth queued.
    pub(crate) fn sleep(&self, interval: Duration) {
        self.sleeping.store(true, Ordering::SeqCst);
        if self.queue.is_empty() {
            std::thread::park_timeout(interval);
        }
        self.sleeping.store(false, Ordering::Release);
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.kick();
        self.space.notify();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

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
    pub(crate) fn record_error(&self, error: &dyn std::fmt::Display, transient: bool) -> bool {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(error.to_string());
        transient && !self.failing.swap(true, Ordering::AcqRel)
    }

    /// Records a successful write; returns whether the sink was failing.
    pub(crate) fn record_written(&self, n: usize) -> bool {
        self.written.fetch_add(n as u64, Ordering::Relaxed);
        self.failing.swap(false, Ordering::AcqRel)
    }

    pub(crate) fn record_failed(&self, n: usize) {
        self.failed.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts whatever is still queued as dropped (after the worker is gone).
    pub(crate) fn drop_leftovers(&self) {
        while let Some(item) = self.queue.pop() {
            if let Item::Record(_) = item {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn report(&self) -> SinkReport {
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        SinkReport {
            name: self.name.clone(),
            written: load(&self.written),
            dropped: load(&self.dropped),
            failed: load(&self.failed),
            errors: load(&self.errors),
            queued: self.queue.len() as u64,
            failing: self.is_failing(),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }
}

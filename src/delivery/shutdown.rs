//! Shutdown: close the intake, let the workers drain, wait for them until
//! the deadline, and give the final report.
//!
//! The order matters:
//!
//! 1. [`begin`](Delivery::begin_shutdown) sets the deadline, closes the
//!    intake (from then on records are late: dropped in every sink, from
//!    one counter) and closes every queue, waking its worker.
//! 2. The caller waits on the lifecycle's progress signal until every
//!    worker has finished or the deadline and a short grace are past. An
//!    [`Alarm`] thread notifies the signal at that instant, so the wait
//!    needs no timer of the caller's runtime (a blocking caller has none).
//! 3. [`finish`](Delivery::finish_shutdown) waits for emitters still
//!    handing over admitted records (they cannot block: the queues are
//!    closed), joins the workers that finished and counts what they left
//!    queued as dropped, and abandons the others: what they have not
//!    settled counts as failed, and they count nothing more. It runs once;
//!    later calls give the counters as they are then.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{Delivery, Lifecycle};
use crate::report::Report;

/// How long past its deadline shutdown waits for a worker that is giving
/// up its last batch, before abandoning it.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(250);

impl Delivery {
    /// Shuts down and waits for the workers until the deadline (and a
    /// short grace); the final report.
    pub(crate) async fn shutdown(&self) -> Report {
        self.begin_shutdown();
        let _alarm = Alarm::at(self.give_up_at(), self.lifecycle.clone());
        let progress = &self.lifecycle.progress;
        progress.wait(|| self.shutdown_waited()).await;
        self.finish_shutdown()
    }

    /// Like [`shutdown`](Self::shutdown), blocking the thread.
    pub(crate) fn shutdown_blocking(&self) -> Report {
        self.begin_shutdown();
        let _alarm = Alarm::at(self.give_up_at(), self.lifecycle.clone());
        let progress = &self.lifecycle.progress;
        progress.wait_blocking(|| self.shutdown_waited());
        self.finish_shutdown()
    }

    /// Stops accepting records, lets every worker drain its queue (retrying
    /// failing sinks until the shutdown timeout), and wakes them all.
    pub(super) fn begin_shutdown(&self) {
        let _ = self
            .lifecycle
            .deadline
            .set(Instant::now() + self.shutdown_timeout);
        self.lifecycle.intake.close();
        self.lifecycle.closing.store(true, Ordering::Release);
        for queue in &self.queues {
            queue.close();
        }
    }

    fn workers_finished(&self) -> bool {
        self.queues.iter().all(|s| s.is_finished())
    }

    /// When shutdown stops waiting for the workers.
    fn give_up_at(&self) -> Instant {
        self.lifecycle.deadline().unwrap_or_else(Instant::now) + SHUTDOWN_GRACE
    }

    /// Whether shutdown is done waiting: every worker finished, or the
    /// deadline and its grace are past.
    fn shutdown_waited(&self) -> bool {
        self.workers_finished() || Instant::now() >= self.give_up_at()
    }

    /// After the wait: joins the finished workers, abandons the others,
    /// and gives the final report.
    fn finish_shutdown(&self) -> Report {
        self.final_report.get_or_init(|| {
            let intake = &self.lifecycle.intake;
            // Emitters still handing over admitted records finish at once:
            // the queues are closed and blocked emitters were woken.
            while !intake.is_settled() {
                std::thread::yield_now();
            }
            let workers =
                std::mem::take(&mut *self.workers.lock().unwrap_or_else(PoisonError::into_inner));
            for (index, worker) in workers {
                let queue = &self.queues[index];
                if queue.is_finished() {
                    // A panicking sink is reported through its counters; the
                    // panic itself has already been printed by the hook.
                    let _ = worker.join();
                    queue.drop_leftovers();
                } else {
                    let (admitted, _) = intake.counts();
                    queue.abandon(admitted);
                    tracing::warn!(
                        target: "fabric_audit",
                        sink = %queue.name,
                        "audit sink still busy at the shutdown deadline; its unwritten records are counted as failed"
                    );
                }
            }
        });
        self.report()
    }
}

/// Notifies a signal at an instant, unless dropped first: wakes shutdown's
/// wait at its deadline without a timer of the caller's runtime.
struct Alarm {
    state: Arc<(Mutex<bool>, Condvar)>,
}

impl Alarm {
    fn at(when: Instant, lifecycle: Arc<Lifecycle>) -> Self {
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
                        lifecycle.progress.notify();
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

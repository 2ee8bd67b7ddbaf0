//! Flush barriers: "every record emitted before this call is settled".
//!
//! A flush places one [`Barrier`] in each sink's queue, behind everything
//! already queued. The sink's worker reaches it only after writing (or
//! failing) every record before it, and then records the sink's failed
//! count in it. Invariants:
//!
//! - A barrier is reached only when every record queued before it is
//!   written or failed: the worker drains in order and stops a batch at a
//!   barrier.
//! - A sink counts as settled for a flush when its barrier is reached, when
//!   it is failing (its records stay queued and are retried: waiting would
//!   be waiting for the database to come back), or when its worker is gone.
//! - The flush is `Ok` only if, in every sink, every record emitted before
//!   it was written: nothing failed up to the barrier and nothing was
//!   dropped before the flush began. Otherwise the error names each sink
//!   with the records it lost (failed or dropped, since the start) or still
//!   holds (when failing).

use std::sync::Arc;

use super::queue::{Barrier, SinkQueue};
use super::Delivery;
use crate::error::Unflushed;
use crate::report::SinkReport;
use crate::{Error, Result};

/// One sink's part in a flush.
struct Part {
    queue: Arc<SinkQueue>,
    /// `None` when the sink was failing or shut down: nothing to wait for.
    barrier: Option<Arc<Barrier>>,
    /// The sink's dropped count when the flush began: records emitted
    /// before the flush and dropped were dropped by then.
    dropped: u64,
    /// Records emitted before the flush (an upper bound of what the sink
    /// holds for it).
    emitted: u64,
}

impl Delivery {
    /// Places a barrier in every sink's queue and waits until every sink is
    /// settled for it; see the module docs.
    pub(crate) async fn flush(&self) -> Result<()> {
        let start = self.lifecycle.intake.counts();
        let mut parts = Vec::with_capacity(self.queues.len());
        for queue in &self.queues {
            let mut part = None;
            queue.space.wait(|| place(queue, start, &mut part)).await;
            parts.extend(part);
        }
        let progress = &self.lifecycle.progress;
        progress.wait(|| parts.iter().all(Part::is_settled)).await;
        self.outcome(&parts)
    }

    /// Like [`flush`](Self::flush), blocking the thread.
    pub(crate) fn flush_blocking(&self) -> Result<()> {
        let start = self.lifecycle.intake.counts();
        let mut parts = Vec::with_capacity(self.queues.len());
        for queue in &self.queues {
            let mut part = None;
            queue.space.wait_blocking(|| place(queue, start, &mut part));
            parts.extend(part);
        }
        let progress = &self.lifecycle.progress;
        progress.wait_blocking(|| parts.iter().all(Part::is_settled));
        self.outcome(&parts)
    }
}

impl Delivery {
    /// The flush's answer, from the sinks' counters as they are now.
    fn outcome(&self, parts: &[Part]) -> Result<()> {
        let now = self.report();
        let unflushed: Vec<Unflushed> = parts
            .iter()
            .filter_map(|p| p.unflushed(now.sink(&p.queue.name)?))
            .collect();
        if unflushed.is_empty() {
            Ok(())
        } else {
            Err(Error::unflushed(unflushed))
        }
    }
}

/// Tries to queue a barrier behind everything already in `queue`.
/// Done when placed, or when waiting would be pointless (the sink is
/// failing or shut down); false while the queue is full.
/// `start` is the intake's (admitted, late) count when the flush began;
/// late records count as dropped in every sink, as in the report.
fn place(queue: &Arc<SinkQueue>, start: (u64, u64), part: &mut Option<Part>) -> bool {
    let (admitted, late) = start;
    let (_, dropped) = queue.lost();
    let (dropped, emitted) = (dropped + late, admitted + late);
    let mut new_part = |barrier| {
        *part = Some(Part {
            queue: queue.clone(),
            barrier,
            dropped,
            emitted,
        });
        true
    };
    if queue.is_closed() || queue.is_failing() {
        return new_part(None);
    }
    let barrier = Arc::new(Barrier::default());
    if queue.push_barrier(&barrier) {
        queue.wake_always();
        return new_part(Some(barrier));
    }
    queue.wake_always();
    false
}

impl Part {
    fn is_settled(&self) -> bool {
        let reached = self
            .barrier
            .as_ref()
            .is_some_and(|b| b.failed_when_reached().is_some());
        reached || self.queue.is_failing() || self.queue.is_finished()
    }

    /// What this sink did not write of the records emitted before the
    /// flush, if anything.
    fn unflushed(&self, now: &SinkReport) -> Option<Unflushed> {
        let reached = self.barrier.as_ref().and_then(|b| b.failed_when_reached());
        let (failed, waiting) = match reached {
            Some(failed) => (failed, 0),
            // Failing (or gone): what it has not settled of the records
            // emitted before the flush is waiting.
            None => {
                let settled = now.written() + now.dropped() + now.failed();
                (now.failed(), self.emitted.saturating_sub(settled))
            }
        };
        (failed + self.dropped + waiting > 0).then(|| Unflushed {
            sink: self.queue.name.clone(),
            failed,
            dropped: self.dropped,
            waiting,
        })
    }
}

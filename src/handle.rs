//! The application's handle on the pipeline: flush, shut down, report.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::delivery::slot::{Item, SinkSlot};
use crate::delivery::Delivery;
use crate::{Error, Report, Result};

/// Controls the audit pipeline built with
/// [`AuditLayer::builder`](crate::AuditLayer::builder): flush it, shut it
/// down, read its counters.
///
/// Clones share the pipeline. Keep one until the end of `main` and call
/// [`shutdown`](Self::shutdown) there: that is what guarantees every record
/// reaches every sink. If the layer and every handle are dropped without a
/// shutdown, the workers still drain their queues, but nobody waits for
/// them.
#[derive(Clone, Debug)]
pub struct AuditHandle {
    delivery: Arc<Delivery>,
}

/// Flush markers placed in the sinks' queues, one per sink.
type Markers = Vec<(Arc<SinkSlot>, Arc<AtomicBool>)>;

impl AuditHandle {
    pub(crate) fn new(delivery: Arc<Delivery>) -> Self {
        Self { delivery }
    }

    /// Waits until every record emitted before the call is written by every
    /// healthy sink (file written and flushed, rows committed).
    ///
    /// # Errors
    ///
    /// A sink whose writes are failing is not waited for: its records stay
    /// queued and are retried, and the error names it.
    ///
    /// # Cancellation
    ///
    /// Dropping the future stops the wait; the records are written anyway.
    pub async fn flush(&self) -> Result<()> {
        let mut markers = Markers::new();
        for slot in &self.delivery.slots {
            let mut marker = None;
            slot.space.wait(|| place_marker(slot, &mut marker)).await;
            markers.extend(marker.map(|m| (slot.clone(), m)));
        }
        let progress = &self.delivery.control.progress;
        progress.wait(|| all_settled(&markers)).await;
        unflushed(&markers)
    }

    /// Like [`flush`](Self::flush), blocking the thread: for sync code.
    ///
    /// # Errors
    ///
    /// As for [`flush`](Self::flush).
    pub fn flush_blocking(&self) -> Result<()> {
        let mut markers = Markers::new();
        for slot in &self.delivery.slots {
            let mut marker = None;
            slot.space.wait_blocking(|| place_marker(slot, &mut marker));
            markers.extend(marker.map(|m| (slot.clone(), m)));
        }
        let progress = &self.delivery.control.progress;
        progress.wait_blocking(|| all_settled(&markers));
        unflushed(&markers)
    }

    /// Stops accepting records, writes everything queued, joins the workers
    /// and returns the final report.
    ///
    /// Sinks that keep failing are retried until the shutdown timeout (30 s
    /// unless set on the builder); what they still hold then is counted as
    /// failed. Events emitted after the shutdown began are counted as
    /// dropped. Calling it again returns the same report.
    pub async fn shutdown(&self) -> Report {
        self.delivery.begin_shutdown();
        let delivery = &self.delivery;
        delivery
            .control
            .progress
            .wait(|| delivery.workers_finished())
            .await;
        delivery.finish_shutdown()
    }

    /// Like [`shutdown`](Self::shutdown), blocking the thread.
    pub fn shutdown_blocking(&self) -> Report {
        self.delivery.begin_shutdown();
        let delivery = &self.delivery;
        delivery
            .control
            .progress
            .wait_blocking(|| delivery.workers_finished());
        delivery.finish_shutdown()
    }

    /// The counters as they are now.
    pub fn report(&self) -> Report {
        self.delivery.report()
    }
}

/// Tries to queue a flush marker behind everything already in `slot`'s
/// queue. Done when placed, or when waiting would be pointless (the sink
/// is failing or shut down).
fn place_marker(slot: &SinkSlot, placed: &mut Option<Arc<AtomicBool>>) -> bool {
    if slot.is_closed() {
        return true;
    }
    if slot.is_failing() {
        // Never reached: reported as not flushed.
        *placed = Some(Arc::new(AtomicBool::new(false)));
        return true;
    }
    let marker = Arc::new(AtomicBool::new(false));
    match slot.queue.push(Item::Marker(marker.clone())) {
        Ok(()) => {
            slot.kick();
            *placed = Some(marker);
            true
        }
        Err(_) => {
            slot.kick();
            false
        }
    }
}

fn all_settled(markers: &Markers) -> bool {
    markers
        .iter()
        .all(|(slot, m)| m.load(Ordering::Acquire) || slot.is_failing() || slot.is_finished())
}

fn unflushed(markers: &Markers) -> Result<()> {
    let failing: Vec<String> = markers
        .iter()
        .filter(|(_, m)| !m.load(Ordering::Acquire))
        .map(|(slot, _)| slot.name.clone())
        .collect();
    if failing.is_empty() {
        Ok(())
    } else {
        Err(Error::unflushed(failing))
    }
}

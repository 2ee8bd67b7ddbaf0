//! The pipeline's counters through the `metrics` facade (feature
//! `metrics`), for dashboards and alerts.
//!
//! Nothing here runs on the emitting thread. Each sink's worker publishes
//! its sink's counters at most once per [`PUBLISH_EVERY`] (checked after
//! every batch and idle wake) and once more when it finishes, as absolute
//! values read from the same atomics the [`Report`](crate::Report) reads:
//! a scrape and a report never disagree by more than what moved in
//! between. Batch latency and size are recorded per write attempt through
//! handles fetched at each publication, so a recorder installed after the
//! pipeline started is picked up within a second, and a busy worker does
//! not build metric keys per batch (that alone, measured, doubled the
//! emitting thread's cost on two cores).
//!
//! Metric names are listed in the README ("Metrics"); every one carries
//! the label `sink`. Without the feature, [`SinkMetrics`] is empty and its
//! methods compile to nothing.

use std::time::Duration;
#[cfg(feature = "metrics")]
use std::time::Instant;

use super::queue::SinkQueue;
use super::Intake;

/// How often a worker publishes its counters, at most.
#[cfg(feature = "metrics")]
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// Publishes one sink's counters.
#[derive(Debug)]
pub(crate) struct SinkMetrics {
    #[cfg(feature = "metrics")]
    sink: metrics::SharedString,
    #[cfg(feature = "metrics")]
    due: Instant,
    #[cfg(feature = "metrics")]
    batches: Batches,
}

/// The per-attempt handles, refreshed at each publication.
#[cfg(feature = "metrics")]
#[derive(Debug)]
struct Batches {
    duration: metrics::Histogram,
    records: metrics::Histogram,
    retries: metrics::Counter,
}

#[cfg(feature = "metrics")]
impl Batches {
    fn fetch(sink: &metrics::SharedString) -> Self {
        let labels = [("sink", sink.clone())];
        Self {
            duration: metrics::histogram!("fabric_audit_batch_duration_seconds", &labels),
            records: metrics::histogram!("fabric_audit_batch_records", &labels),
            retries: metrics::counter!("fabric_audit_write_retries_total", &labels),
        }
    }
}

impl SinkMetrics {
    pub(crate) fn new(sink: &str) -> Self {
        #[cfg(not(feature = "metrics"))]
        let _ = sink;
        #[cfg(feature = "metrics")]
        let sink = metrics::SharedString::from(sink.to_owned());
        Self {
            #[cfg(feature = "metrics")]
            batches: Batches::fetch(&sink),
            #[cfg(feature = "metrics")]
            sink,
            #[cfg(feature = "metrics")]
            due: Instant::now(),
        }
    }

    /// Publishes the sink's counters if a publication is due.
    pub(crate) fn publish_if_due(&mut self, queue: &SinkQueue, intake: &Intake) {
        #[cfg(feature = "metrics")]
        if Instant::now() >= self.due {
            self.publish(queue, intake);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (queue, intake);
    }

    /// Sets the sink's counters to the values they have now. `late`
    /// records (refused after shutdown began) count as emitted and dropped,
    /// as in the report.
    pub(crate) fn publish(&mut self, queue: &SinkQueue, intake: &Intake) {
        #[cfg(feature = "metrics")]
        {
            let (admitted, late) = intake.counts();
            let report = queue.report(late);
            let labels = [("sink", self.sink.clone())];
            let counter = |name: &'static str, value: u64| {
                metrics::counter!(name, &labels).absolute(value);
            };
            counter("fabric_audit_records_emitted_total", admitted + late);
            counter("fabric_audit_records_written_total", report.written);
            counter("fabric_audit_records_dropped_total", report.dropped);
            counter("fabric_audit_records_failed_total", report.failed);
            counter("fabric_audit_write_errors_total", report.errors);
            metrics::gauge!("fabric_audit_queue_depth", &labels).set(report.queued as f64);
            metrics::gauge!("fabric_audit_sink_failing", &labels)
                .set(f64::from(u8::from(report.failing)));
            self.batches = Batches::fetch(&self.sink);
            // Shown at zero before the first retry, as dashboards expect.
            self.batches.retries.increment(0);
            self.due = Instant::now() + PUBLISH_EVERY;
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (queue, intake);
    }

    /// One attempt at writing a batch of `records` took `elapsed`.
    pub(crate) fn batch(&self, records: usize, elapsed: Duration) {
        #[cfg(feature = "metrics")]
        {
            self.batches.duration.record(elapsed);
            self.batches.records.record(records as f64);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (records, elapsed);
    }

    /// A failed batch is about to be tried again.
    pub(crate) fn retry(&self) {
        #[cfg(feature = "metrics")]
        self.batches.retries.increment(1);
    }
}

//! The pipeline's counters through the `metrics` facade (feature
//! `metrics`), for dashboards and alerts.
//!
//! Nothing here runs on the emitting thread. Each sink's worker publishes
//! its sink's counters after every batch and every idle wake (at most one
//! `flush_interval` apart), as absolute values read from the same atomics
//! the [`Report`](crate::Report) reads, so a dashboard and a report never
//! disagree by more than the records that moved in between. The batch
//! latency and the retries are recorded where they happen, on the worker.
//!
//! Metric names are listed in the README ("Metrics"); every one carries
//! the label `sink`. The handles are looked up at each publication, so a
//! recorder installed after the pipeline started is picked up.
//!
//! Without the feature, [`SinkMetrics`] is empty and its methods compile to
//! nothing.

use std::time::Duration;

use super::slot::SinkSlot;
use super::Intake;

/// Publishes one sink's counters.
#[derive(Debug)]
pub(crate) struct SinkMetrics {
    #[cfg(feature = "metrics")]
    sink: metrics::SharedString,
}

impl SinkMetrics {
    pub(crate) fn new(sink: &str) -> Self {
        #[cfg(not(feature = "metrics"))]
        let _ = sink;
        Self {
            #[cfg(feature = "metrics")]
            sink: metrics::SharedString::from(sink.to_owned()),
        }
    }

    /// Sets the sink's counters to the values they have now. `late`
    /// records (refused after shutdown began) count as emitted and dropped,
    /// as in the report.
    pub(crate) fn publish(&self, slot: &SinkSlot, intake: &Intake) {
        #[cfg(feature = "metrics")]
        {
            let (admitted, late) = intake.counts();
            let report = slot.report(late);
            let sink = || [("sink", self.sink.clone())];
            metrics::counter!("fabric_audit_records_emitted_total", &sink())
                .absolute(admitted + late);
            metrics::counter!("fabric_audit_records_written_total", &sink())
                .absolute(report.written);
            metrics::counter!("fabric_audit_records_dropped_total", &sink())
                .absolute(report.dropped);
            metrics::counter!("fabric_audit_records_failed_total", &sink()).absolute(report.failed);
            metrics::counter!("fabric_audit_write_errors_total", &sink()).absolute(report.errors);
            metrics::gauge!("fabric_audit_queue_depth", &sink()).set(report.queued as f64);
            metrics::gauge!("fabric_audit_sink_failing", &sink())
                .set(f64::from(u8::from(report.failing)));
            // Shown at zero before the first retry, as dashboards expect.
            metrics::counter!("fabric_audit_write_retries_total", &sink()).increment(0);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (slot, intake);
    }

    /// One attempt at writing a batch of `records` took `elapsed`.
    pub(crate) fn batch(&self, records: usize, elapsed: Duration) {
        #[cfg(feature = "metrics")]
        {
            let sink = [("sink", self.sink.clone())];
            metrics::histogram!("fabric_audit_batch_duration_seconds", &sink).record(elapsed);
            metrics::histogram!("fabric_audit_batch_records", &sink).record(records as f64);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (records, elapsed);
    }

    /// A failed batch is about to be tried again.
    pub(crate) fn retry(&self) {
        #[cfg(feature = "metrics")]
        metrics::counter!("fabric_audit_write_retries_total", "sink" => self.sink.clone())
            .increment(1);
    }
}

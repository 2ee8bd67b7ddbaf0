//! The application's handle on the pipeline: flush, shut down, report.

use std::sync::Arc;

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

impl AuditHandle {
    pub(crate) fn new(delivery: Arc<Delivery>) -> Self {
        Self { delivery }
    }

    /// Waits until every record emitted before the call is written by every
    /// healthy sink (file written and flushed, rows committed).
    ///
    /// # Errors
    ///
    /// Unless every record emitted before the call was written by every
    /// sink. A sink whose writes are failing is not waited for: its records
    /// stay queued and are retried, and the error names it with how many
    /// wait. A sink that lost records (dropped on a full queue, refused,
    /// given up on) is named with how many, counted since the pipeline
    /// started: once a record is lost, every later flush says so, and the
    /// [`report`](Self::report) has the detail.
    ///
    /// # Cancellation
    ///
    /// Dropping the future stops the wait; the records are written anyway.
    pub async fn flush(&self) -> Result<()> {
        self.delivery.flush().await
    }

    /// Like [`flush`](Self::flush), blocking the thread: for sync code.
    ///
    /// # Errors
    ///
    /// As for [`flush`](Self::flush).
    pub fn flush_blocking(&self) -> Result<()> {
        self.delivery.flush_blocking()
    }

    /// Stops accepting records, writes everything queued, joins the workers
    /// and returns the final report.
    ///
    /// Returns within the shutdown timeout (30 s unless set on the builder)
    /// and a short grace, whatever the sinks do: sinks that keep failing are
    /// retried until then, and what they still hold is counted as failed; a
    /// sink stuck in a write (a connection to a server that no longer
    /// answers) is abandoned, its unwritten records counted as failed.
    /// Events emitted after the shutdown began are counted as emitted and
    /// dropped in every sink. Calling it again gives the counters as they
    /// are then (late events included).
    pub async fn shutdown(&self) -> Report {
        self.delivery.shutdown().await
    }

    /// Like [`shutdown`](Self::shutdown), blocking the thread.
    pub fn shutdown_blocking(&self) -> Report {
        self.delivery.shutdown_blocking()
    }

    /// Checks that the installed subscriber lets audit events, and the
    /// request span that gives them their context, reach this pipeline:
    /// call it once after installing the subscriber.
    ///
    /// It emits a probe (an INFO event of target `audit` inside an INFO span
    /// of target `audit`, like `audit!` in a request), which the layer
    /// counts without recording. Other layers see the probe event unless
    /// they use [`exclude_audit`](crate::exclude_audit).
    ///
    /// # Errors
    ///
    /// When the probe did not arrive, or arrived without its span: the
    /// layer is not installed in the current subscriber, or a filter
    /// switches auditing off. The message says which and how to fix it.
    ///
    /// # Examples
    ///
    /// ```
    /// use fabric_audit::AuditLayer;
    /// use tracing_subscriber::{prelude::*, EnvFilter};
    ///
    /// # fn main() -> fabric_audit::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let (layer, audit) = AuditLayer::builder().file(dir.path().join("a.jsonl")).build()?;
    /// // A global filter that does not enable `audit` switches auditing off.
    /// let subscriber = tracing_subscriber::registry()
    ///     .with(EnvFilter::new("warn"))
    ///     .with(layer);
    /// tracing::subscriber::with_default(subscriber, || {
    ///     let err = audit.check().unwrap_err();
    ///     assert!(err.to_string().contains("audit=info"));
    /// });
    /// # Ok(())
    /// # }
    /// ```
    pub fn check(&self) -> Result<()> {
        self.delivery.probe.run().map_err(|problem| {
            Error::config(format!(
                "auditing is off in the installed subscriber: {problem}; {}",
                crate::__private::HOW_TO_FIX
            ))
        })
    }

    /// The counters as they are now.
    pub fn report(&self) -> Report {
        self.delivery.report()
    }
}

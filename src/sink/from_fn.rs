//! A sink made of a closure, for the one-off sinks of tests, benches and
//! small applications (like grep-searcher's `sinks` adapters).

use std::fmt;

use super::{Batch, Sink, SinkError};

/// A [`Sink`] whose [`write`](Sink::write) is the closure `write`; `open`
/// and `close` do nothing. The closure keeps the sink's contract: `Ok(())`
/// only once the whole batch is stored, and a [`SinkError`] that says
/// whether to retry.
///
/// The closure runs on the sink's worker thread, so it must be `Send`
/// (and `'static`) to be installed with
/// [`AuditLayerBuilder::sink`](crate::AuditLayerBuilder::sink); it may
/// block, never forever.
///
/// # Examples
///
/// A sink that keeps the actions it is given, for a test to read:
///
/// ```
/// use std::sync::{Arc, Mutex};
///
/// use fabric_audit::{audit, sinks, AuditLayer};
/// use tracing_subscriber::prelude::*;
///
/// let actions = Arc::new(Mutex::new(Vec::new()));
/// let kept = actions.clone();
/// let sink = sinks::from_fn(move |batch| {
///     let mut kept = kept.lock().unwrap();
///     kept.extend(batch.iter().map(|r| r.action().to_owned()));
///     Ok(())
/// });
/// let (layer, audit) = AuditLayer::builder().sink("actions", sink).build()?;
/// tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
///     audit!(action = "post.created");
///     audit!(action = "post.deleted");
/// });
/// assert!(audit.shutdown_blocking().is_lossless());
/// assert_eq!(*actions.lock().unwrap(), ["post.created", "post.deleted"]);
/// # Ok::<(), fabric_audit::Error>(())
/// ```
///
/// A sink that fails, for testing what a failing sink does to the rest:
///
/// ```
/// use fabric_audit::{sinks, SinkError};
///
/// let down = sinks::from_fn(|_| Err(SinkError::transient("database is down")));
/// # let _ = down;
/// ```
pub fn from_fn<F>(write: F) -> FromFn<F>
where
    F: FnMut(&Batch<'_>) -> Result<(), SinkError>,
{
    FromFn { write }
}

/// The sink [`from_fn`] makes.
#[derive(Clone)]
pub struct FromFn<F> {
    write: F,
}

impl<F> Sink for FromFn<F>
where
    F: FnMut(&Batch<'_>) -> Result<(), SinkError>,
{
    fn write(&mut self, batch: &Batch<'_>) -> Result<(), SinkError> {
        (self.write)(batch)
    }
}

impl<F> fmt::Debug for FromFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FromFn").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::AuditRecord;

    fn record(action: &str) -> Arc<AuditRecord> {
        Arc::new(AuditRecord::builder(action).build())
    }

    #[test]
    fn the_closure_is_the_write_and_keeps_its_state() {
        let mut calls = 0;
        let mut sink = from_fn(|batch: &Batch<'_>| {
            calls += batch.len();
            match batch.iter().next().map(AuditRecord::action) {
                Some("bad") => Err(SinkError::rejected("bad")),
                _ => Ok(()),
            }
        });
        let good = [record("a.b"), record("c.d")];
        assert!(sink.write(&Batch::new(&good)).is_ok());
        let err = sink.write(&Batch::new(&[record("bad")])).unwrap_err();
        assert!(!err.is_transient());
        assert!(sink.open().is_ok() && sink.close().is_ok());
        assert!(format!("{sink:?}").starts_with("FromFn"));
        assert_eq!(calls, 3);
    }
}

//! Sinks and subscribers the tests share.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use fabric_audit::{
    sinks, AuditHandle, AuditLayerBuilder, AuditRecord, Batch, Principal, Sink, SinkError,
};
use tracing::Dispatch;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

/// Builds the pipeline into a dispatcher of its own.
pub(crate) fn pipeline(builder: AuditLayerBuilder) -> (Dispatch, AuditHandle) {
    let (layer, handle) = builder.build().unwrap();
    (
        Dispatch::new(tracing_subscriber::registry().with(layer)),
        handle,
    )
}

/// Collects every record it is given; tests can wait for a count.
#[derive(Clone, Default)]
pub(crate) struct Collect {
    state: Arc<(Mutex<Vec<AuditRecord>>, Condvar)>,
}

impl Collect {
    pub(crate) fn records(&self) -> Vec<AuditRecord> {
        self.state.0.lock().unwrap().clone()
    }

    pub(crate) fn len(&self) -> usize {
        self.state.0.lock().unwrap().len()
    }

    /// Blocks until the sink holds at least `n` records.
    pub(crate) fn wait_for(&self, n: usize) {
        let (lock, cv) = &*self.state;
        let _held = cv
            .wait_while(lock.lock().unwrap(), |r| r.len() < n)
            .unwrap();
    }

    /// The one record the sink holds.
    pub(crate) fn only(&self) -> AuditRecord {
        let records = self.records();
        assert_eq!(records.len(), 1, "{records:?}");
        records.into_iter().next().unwrap()
    }
}

impl Sink for Collect {
    fn write(&mut self, batch: &Batch<'_>) -> Result<(), SinkError> {
        self.keep(batch);
        Ok(())
    }
}

impl Collect {
    /// Keeps the records of `batch`: what every collecting sink does.
    pub(crate) fn keep(&self, batch: &Batch<'_>) {
        let (lock, cv) = &*self.state;
        lock.lock().unwrap().extend(batch.iter().cloned());
        cv.notify_all();
    }
}

/// A sink that takes `delay` per batch (a slow network or disk), and a
/// view of what it has written.
pub(crate) fn slow(delay: Duration) -> (impl Sink + Send, Collect) {
    let written = Collect::default();
    let inner = written.clone();
    let sink = sinks::from_fn(move |batch| {
        std::thread::sleep(delay);
        inner.keep(batch);
        Ok(())
    });
    (sink, written)
}

/// A sink whose writes wait until the test opens the gate; it tells the
/// test when a write has started.
#[derive(Clone, Default)]
pub(crate) struct Gate {
    state: Arc<(Mutex<GateState>, Condvar)>,
    pub(crate) inner: Collect,
}

#[derive(Default)]
struct GateState {
    open: bool,
    waiting: usize,
}

impl Gate {
    pub(crate) fn open(&self) {
        self.state.0.lock().unwrap().open = true;
        self.state.1.notify_all();
    }

    /// Blocks until a write is held at the gate.
    pub(crate) fn wait_until_held(&self) {
        let (lock, cv) = &*self.state;
        let _held = cv
            .wait_while(lock.lock().unwrap(), |s| s.waiting == 0)
            .unwrap();
    }
}

impl Sink for Gate {
    fn write(&mut self, batch: &Batch<'_>) -> Result<(), SinkError> {
        let (lock, cv) = &*self.state;
        let mut state = lock.lock().unwrap();
        state.waiting += 1;
        cv.notify_all();
        let mut state = cv.wait_while(state, |s| !s.open).unwrap();
        state.waiting -= 1;
        drop(state);
        self.inner.write(batch)
    }
}

/// Fails its first `failures` writes with a transient error, then keeps
/// what it is given in `inner`.
pub(crate) fn flaky(mut failures: usize, inner: Collect) -> impl Sink + Send {
    sinks::from_fn(move |batch| {
        if failures > 0 {
            failures -= 1;
            return Err(SinkError::transient("connection reset"));
        }
        inner.keep(batch);
        Ok(())
    })
}

/// Fails every write, transiently (the worker retries) or for good.
pub(crate) fn broken(transient: bool) -> impl Sink + Send {
    sinks::from_fn(move |_| {
        Err(if transient {
            SinkError::transient("database is down")
        } else {
            SinkError::rejected("value too long")
        })
    })
}

/// Panics on every write: a buggy sink.
pub(crate) fn panicky() -> impl Sink + Send {
    sinks::from_fn(|_| panic!("bug in a user's sink"))
}

/// A layer that notes the target of every event it sees.
#[derive(Clone, Default)]
pub(crate) struct Seen(pub Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> Layer<S> for Seen {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        self.0
            .lock()
            .unwrap()
            .push(event.metadata().target().to_owned());
    }
}

impl Seen {
    pub(crate) fn targets(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// The principal of the tests.
pub(crate) struct User {
    pub(crate) id: String,
    pub(crate) email: String,
    pub(crate) roles: Vec<String>,
}

impl User {
    pub(crate) fn alice() -> Self {
        Self {
            id: "u-alice".into(),
            email: "alice@example.com".into(),
            roles: vec!["admin".into(), "billing,ro".into()],
        }
    }
}

impl Principal for User {
    fn id(&self) -> std::borrow::Cow<'_, str> {
        self.id.as_str().into()
    }
    fn kind(&self) -> Option<&str> {
        Some("user")
    }
    fn email(&self) -> Option<&str> {
        Some(&self.email)
    }
    fn flags(&self) -> &[String] {
        &self.roles
    }
}

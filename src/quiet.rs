//! Keeping the sinks' own I/O out of the application's logs.
//!
//! A sink's write runs with no subscriber on its worker thread
//! ([`muted`]): database drivers log their statements with parameters
//! (tokio-postgres at DEBUG), which would copy record contents, personal
//! data included, into the application's log. What this crate itself has
//! to say from inside a sink (a file it cannot delete, a torn line cut)
//! goes to the application's subscriber through [`to_app`].

use std::cell::RefCell;

use tracing::Dispatch;

thread_local! {
    /// The application's dispatcher while a muted section runs.
    static APP: RefCell<Option<Dispatch>> = const { RefCell::new(None) };
}

/// Runs `f` with no subscriber on this thread.
pub(crate) fn muted<R>(f: impl FnOnce() -> R) -> R {
    let app = tracing::dispatcher::get_default(Dispatch::clone);
    let previous = APP.with(|slot| slot.replace(Some(app)));
    let result = tracing::dispatcher::with_default(&Dispatch::none(), f);
    APP.with(|slot| *slot.borrow_mut() = previous);
    result
}

/// Runs `f` (which logs) with the application's subscriber, also inside a
/// muted section.
pub(crate) fn to_app(f: impl FnOnce()) {
    let app = APP.with(|slot| slot.borrow().clone());
    match app {
        Some(app) => tracing::dispatcher::with_default(&app, f),
        None => f(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::{Context, Layer};
    use tracing_subscriber::prelude::*;

    use super::*;

    #[derive(Clone, Default)]
    struct Targets(Arc<Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> Layer<S> for Targets {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            let target = event.metadata().target().to_owned();
            self.0.lock().unwrap().push(target);
        }
    }

    #[test]
    fn a_muted_section_reaches_the_app_only_through_to_app() {
        let seen = Targets::default();
        let subscriber = tracing_subscriber::registry().with(seen.clone());
        tracing::subscriber::with_default(subscriber, || {
            muted(|| {
                tracing::debug!(target: "tokio_postgres::query", statement = "INSERT …");
                to_app(|| tracing::warn!(target: "fabric_audit", "said to the app"));
            });
            tracing::info!(target: "after", "not muted any more");
        });
        assert_eq!(*seen.0.lock().unwrap(), ["fabric_audit", "after"]);
    }
}

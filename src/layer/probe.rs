//! `AuditHandle::check`: does the installed subscriber let audit events
//! and the request span reach this pipeline's layer?
//!
//! The check emits a probe event (target `audit`, INFO, a name of its own)
//! inside a probe span (target `audit`, INFO, with a `request_id`), exactly
//! as `audit!` inside a request would be. The layer counts probes instead
//! of recording them, noting whether the span's context came along.
//! Filters that switch either off show as a missing count.

use std::sync::atomic::{AtomicU64, Ordering};

use tracing_core::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::visit::SpanContext;

/// The probe event's name (`audit!` events are named `audit`).
pub(crate) const EVENT: &str = "fabric_audit_check";

/// The request id the probe span carries.
const REQUEST_ID: &str = "fabric-audit-check";

/// Probes seen by one pipeline's layer.
#[derive(Debug, Default)]
pub(crate) struct Probes {
    events: AtomicU64,
    with_span: AtomicU64,
}

impl Probes {
    pub(crate) fn saw(&self, with_span: bool) {
        self.events.fetch_add(1, Ordering::Relaxed);
        if with_span {
            self.with_span.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn counts(&self) -> (u64, u64) {
        (
            self.events.load(Ordering::Relaxed),
            self.with_span.load(Ordering::Relaxed),
        )
    }

    /// Emits a probe in the current subscriber; `Err` says what was missing.
    pub(crate) fn run(&self) -> Result<(), &'static str> {
        let (events, with_span) = self.counts();
        let span = tracing::info_span!(target: "audit", "request", request_id = REQUEST_ID);
        span.in_scope(|| {
            tracing::event!(name: "fabric_audit_check", target: "audit", tracing::Level::INFO, probe = true)
        });
        let (events_after, with_span_after) = self.counts();
        if events_after == events {
            Err("audit events (target `audit`, INFO) do not reach this AuditLayer: it is not installed in the current subscriber, or a filter disables them")
        } else if with_span_after == with_span {
            Err("audit events reach the AuditLayer, but spans of target `audit` at INFO (the request span) do not: a filter disables them, so records would lack the request id, client address, user agent and actor")
        } else {
            Ok(())
        }
    }
}

/// Whether the probe event's scope holds the probe span's context.
pub(crate) fn span_carries_context<S>(event: &Event<'_>, ctx: &Context<'_, S>) -> bool
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let Some(scope) = ctx.event_scope(event) else {
        return false;
    };
    scope.into_iter().any(|span| {
        span.extensions()
            .get::<SpanContext>()
            .is_some_and(|c| c.request_id() == Some(REQUEST_ID))
    })
}

//! The `tracing-subscriber` layer that turns audit events into records.

mod builder;
mod filter;
pub(crate) mod probe;
mod visit;

use std::fmt;
use std::sync::Arc;

use tracing_core::span::{Attributes, Id, Record};
use tracing_core::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use self::visit::{EventVisitor, SpanContext};
use crate::delivery::Delivery;
use crate::record::Field;
use crate::AuditRecord;

pub use self::builder::AuditLayerBuilder;
pub use self::filter::{exclude_audit, AuditFilter, ExcludeAudit};

/// Turns `audit!` events into [`AuditRecord`](crate::AuditRecord)s and
/// hands them to the sinks' queues.
///
/// Build it with [`AuditLayer::builder`], which wraps it in its own
/// [`AuditFilter`], and add it to your subscriber next to your other layers.
///
/// For each audit event the layer:
/// 1. stamps a UUID v7 id and the current UTC time (microseconds);
/// 2. visits the event's fields: the record's own fields into place, every
///    other field into `detail`, keeping integers, floats and booleans
///    typed;
/// 3. walks the event's spans from the innermost out, at event time, and
///    takes what the event did not give: the actor as a whole from the
///    nearest span that has `actor.id`, and `request_id`, `client_ip`,
///    `user_agent` each from the nearest span that has it. Values recorded
///    on a span after it was created count; declare them as
///    `tracing::field::Empty` up front, as tracing requires.
/// 4. queues the record for every sink, without I/O or locks; a full queue
///    drops the record and counts it (see [`Overflow`](crate::Overflow)).
///
/// Spans below `INFO` are not consulted.
pub struct AuditLayer {
    delivery: Arc<Delivery>,
}

impl AuditLayer {
    /// Starts building the layer and its sinks; see [`AuditLayerBuilder`].
    pub fn builder() -> AuditLayerBuilder {
        AuditLayerBuilder::new()
    }

    pub(crate) fn new(delivery: Arc<Delivery>) -> Self {
        Self { delivery }
    }

    fn fill_from_scope<S>(record: &mut AuditRecord, event: &Event<'_>, ctx: &Context<'_, S>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        // An event that names its actor takes nothing of a span's actor.
        let mut need_actor = !record.has(Field::ActorId);
        for span in scope {
            let extensions = span.extensions();
            let Some(context) = extensions.get::<SpanContext>() else {
                continue;
            };
            context.fill_request(record);
            if need_actor && context.fill_actor(record) {
                need_actor = false;
            }
            if !need_actor
                && record.has(Field::RequestId)
                && record.has(Field::ClientIp)
                && record.has(Field::UserAgent)
            {
                break;
            }
        }
    }
}

impl<S> Layer<S> for AuditLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut context = SpanContext::default();
        attrs.record(&mut context);
        if context.is_empty() {
            // Fields declared `Empty` arrive later, through `on_record`.
            return;
        }
        if let Some(span) = ctx.span(id) {
            let mut extensions = span.extensions_mut();
            match extensions.get_mut::<SpanContext>() {
                Some(existing) => *existing = context,
                None => extensions.insert(context),
            }
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        // Visit before taking the lock: a field's Debug may emit events.
        let mut update = SpanContext::default();
        values.record(&mut update);
        if update.is_empty() {
            return;
        }
        let mut extensions = span.extensions_mut();
        match extensions.get_mut::<SpanContext>() {
            Some(context) => context.merge(update),
            None => extensions.insert(update),
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if event.metadata().target() != filter::TARGET {
            // Only reachable if the layer was installed without its filter.
            return;
        }
        crate::__private::saw_audit_event();
        if event.metadata().name() == probe::EVENT {
            self.delivery
                .probe
                .saw(probe::span_carries_context(event, &ctx));
            return;
        }
        let mut shared = self.delivery.start_record();
        let record = Arc::make_mut(&mut shared);
        event.record(&mut EventVisitor { record });
        Self::fill_from_scope(record, event, &ctx);
        self.delivery.submit(shared);
    }
}

impl fmt::Debug for AuditLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLayer")
            .field("sinks", &self.delivery.sink_count())
            .finish_non_exhaustive()
    }
}

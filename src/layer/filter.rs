//! Which events and spans the audit layer sees, and which it keeps from
//! the application's other layers.

use tracing_core::subscriber::Interest;
use tracing_core::{Level, LevelFilter, Metadata};
use tracing_subscriber::layer::{Context, Filter};

use crate::record::{is_flags_name, Field};

/// The target of audit events: exactly this string.
pub(crate) const TARGET: &str = "audit";

/// The audit layer's own per-layer filter (installed by
/// [`AuditLayerBuilder::build`](crate::AuditLayerBuilder::build)).
///
/// It lets through events whose target is exactly `"audit"` (tracing's
/// `Targets` and `EnvFilter` match by prefix, so `"auditor"` would pass
/// them) and the spans that carry audit context: those that declare an
/// `actor.*` field or `request_id`, `client_ip` or `user_agent`, at level
/// `INFO` or above (`WARN`, `ERROR`): `DEBUG` and `TRACE` events and spans
/// are never audit data, even when another layer enables them. The
/// decision depends on metadata only, so tracing caches it per call site,
/// and the filter's maximum level, `INFO`, lets `debug!` and `trace!` call
/// sites be skipped entirely when no other layer wants them.
#[derive(Clone, Copy, Debug, Default)]
pub struct AuditFilter {
    _private: (),
}

impl AuditFilter {
    fn wants(meta: &Metadata<'_>) -> bool {
        // Audit events are INFO; DEBUG and TRACE call sites (events and
        // spans) are not audit data, whatever another layer enables.
        if *meta.level() > Level::INFO {
            return false;
        }
        if meta.is_event() {
            meta.target() == TARGET
        } else {
            meta.is_span() && meta.fields().iter().any(|f| is_context_name(f.name()))
        }
    }
}

/// Whether a span field of this name carries audit context.
pub(crate) fn is_context_name(name: &str) -> bool {
    is_flags_name(name) || Field::from_name(name).is_some_and(|f| f.is_actor() || f.is_request())
}

impl<S> Filter<S> for AuditFilter {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        Self::wants(meta)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if Self::wants(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::INFO)
    }
}

/// A filter for the application's other layers that keeps audit events,
/// and the spans of target `audit` that carry their context (the request
/// span of [`request_context`](crate::http::request_context), with the
/// actor's id and email), out of them: audit records carry personal data
/// that does not belong on stdout or in an error tracker.
///
/// Combine it with the layer's own filter through
/// [`FilterExt::and`](tracing_subscriber::filter::FilterExt::and).
///
/// # Examples
///
/// ```
/// use fabric_audit::exclude_audit;
/// use tracing_subscriber::filter::{FilterExt, LevelFilter};
/// use tracing_subscriber::prelude::*;
///
/// let stdout = tracing_subscriber::fmt::layer()
///     .with_filter(LevelFilter::INFO.and(exclude_audit()));
/// let _subscriber = tracing_subscriber::registry().with(stdout);
/// ```
pub fn exclude_audit() -> ExcludeAudit {
    ExcludeAudit { _private: () }
}

/// The filter made by [`exclude_audit`]: everything but audit events and
/// spans of target `audit` (the request span, which carries the actor).
#[derive(Clone, Copy, Debug)]
pub struct ExcludeAudit {
    _private: (),
}

impl ExcludeAudit {
    fn excludes(meta: &Metadata<'_>) -> bool {
        meta.target() == TARGET
    }
}

impl<S> Filter<S> for ExcludeAudit {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        !Self::excludes(meta)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if Self::excludes(meta) {
            Interest::never()
        } else {
            Interest::always()
        }
    }
}

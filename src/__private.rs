//! What `audit!` expands to; not public API.
//!
//! Two things happen here besides re-exporting `tracing`:
//!
//! - Values are typed at compile time: a field value that `tracing` can
//!   record (numbers, booleans, strings) keeps its type; any other
//!   `Display` type (a `Uuid`, an `IpAddr`) is recorded as its text, so
//!   users need no `%` for them. Method resolution picks the first of two
//!   traits that applies ("autoref specialization"): `AutoValue` on
//!   `&&Auto<T>` for `T: Value`, else `AutoDisplay` on `&Auto<T>`.
//! - The macro notices an event that no audit layer saw: a thread-local
//!   count that every [`AuditLayer`](crate::AuditLayer) bumps for each
//!   audit event, compared before and after the event. An unchanged count
//!   means a filter switched the event off (or no layer is installed): it
//!   is counted and, once per process, explained on standard error. Two
//!   thread-local reads on the enabled path.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub use tracing;

/// A principal's flags, recorded as a JSON array of strings.
pub struct Flags<'a>(pub &'a [String]);

impl fmt::Debug for Flags<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let json = serde_json::to_string(self.0).map_err(|_| fmt::Error)?;
        f.write_str(&json)
    }
}

/// A field value on its way to being typed; see the module docs.
#[allow(missing_debug_implementations)] // lives inside one expression
pub struct Auto<'a, T: ?Sized>(pub &'a T);

/// Chosen for values `tracing` records itself: passed as they are.
pub trait AutoValue<'a, T: ?Sized> {
    /// The value, unchanged.
    fn __fa_value(&self) -> &'a T;
}

impl<'a, T: tracing::Value + ?Sized> AutoValue<'a, T> for &Auto<'a, T> {
    #[inline]
    fn __fa_value(&self) -> &'a T {
        self.0
    }
}

/// Chosen for other `Display` values: recorded as their text.
pub trait AutoDisplay<'a, T: fmt::Display + ?Sized> {
    /// The value, shown through `Display`.
    fn __fa_value(&self) -> tracing::field::DisplayValue<&'a T>;
}

impl<'a, T: fmt::Display + ?Sized> AutoDisplay<'a, T> for Auto<'a, T> {
    #[inline]
    fn __fa_value(&self) -> tracing::field::DisplayValue<&'a T> {
        tracing::field::display(self.0)
    }
}

thread_local! {
    /// Audit events the audit layers saw on this thread.
    static SEEN: Cell<u64> = const { Cell::new(0) };
}

/// Audit events that no audit layer saw, in this process.
static UNSEEN: AtomicU64 = AtomicU64::new(0);
static EXPLAINED: AtomicBool = AtomicBool::new(false);

/// The audit layers' count of events seen, before an `audit!`.
#[derive(Debug)]
pub struct Seen(u64);

impl Seen {
    /// Takes the count before the event.
    #[inline]
    pub fn before() -> Self {
        Self(SEEN.with(Cell::get))
    }

    /// After the event: if no audit layer saw it, counts it and explains
    /// once per process.
    #[inline]
    pub fn after(self, file: &'static str, line: u32) {
        if SEEN.with(Cell::get) == self.0 {
            unseen(file, line);
        }
    }
}

/// Called by the audit layer for every audit event it sees.
#[inline]
pub(crate) fn saw_audit_event() {
    SEEN.with(|n| n.set(n.get().wrapping_add(1)));
}

/// Audit events that no audit layer saw, in this process so far.
pub(crate) fn unseen_events() -> u64 {
    UNSEEN.load(Ordering::Relaxed)
}

/// What to do when auditing is switched off by the subscriber: the same
/// words for the warning and for `AuditHandle::check`.
pub(crate) const HOW_TO_FIX: &str = "if the subscriber has a global filter \
    (`registry().with(EnvFilter)`, `fmt().with_env_filter(..)`, RUST_LOG), it must enable \
    target `audit` at INFO: add the directive `audit=info` (RUST_LOG=warn,audit=info), or \
    better, put the filter on your fmt layer only (`fmt::layer().with_filter(env_filter)`) \
    and add the AuditLayer beside it";

#[cold]
fn unseen(file: &str, line: u32) {
    UNSEEN.fetch_add(1, Ordering::Relaxed);
    if !EXPLAINED.swap(true, Ordering::Relaxed) {
        eprintln!(
            "fabric-audit: WARNING: an audit event at {file}:{line} was not recorded: no \
             AuditLayer saw it, so auditing is off in the current subscriber (the layer is \
             not installed, or a filter disables it). To fix it: {HOW_TO_FIX}. (Said once per process; \
             `Report::unseen` counts every such event.)"
        );
    }
}

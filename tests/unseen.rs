//! Auditing switched off by the application's filters is never silent.
//!
//! A binary of its own: the count of unseen events is per process, and
//! this is the only test in it, so the count is exact.

use fabric_audit::{audit, sinks, AuditLayer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

#[test]
fn events_a_global_filter_disables_are_counted_and_explained() {
    let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (layer, audit) = AuditLayer::builder()
        .sink("count", {
            let written = written.clone();
            sinks::from_fn(move |batch| {
                written.fetch_add(batch.len(), std::sync::atomic::Ordering::SeqCst);
                Ok(())
            })
        })
        .build()
        .unwrap();
    // The axum examples' set-up: a global EnvFilter in front of every layer.
    let wrong = tracing_subscriber::registry()
        .with(EnvFilter::new("warn,tower_http=debug"))
        .with(layer);
    tracing::subscriber::with_default(wrong, || {
        for i in 0..3 {
            audit!(action = "lost.in.filters", i = i);
        }
    });
    // With no subscriber at all, the same.
    audit!(action = "no.subscriber");
    let report = audit.shutdown_blocking();
    assert_eq!(report.emitted(), 0);
    assert_eq!(report.unseen(), 4, "{report}");
    assert!(report.to_string().contains("unseen 4"), "{report}");
    assert_eq!(written.load(std::sync::atomic::Ordering::SeqCst), 0);

    // The fix the warning names: the directive `audit=info`.
    let (layer, audit) = AuditLayer::builder()
        .sink("count", {
            let written = written.clone();
            sinks::from_fn(move |batch| {
                written.fetch_add(batch.len(), std::sync::atomic::Ordering::SeqCst);
                Ok(())
            })
        })
        .build()
        .unwrap();
    let fixed = tracing_subscriber::registry()
        .with(EnvFilter::new("warn,audit=info"))
        .with(layer);
    tracing::subscriber::with_default(fixed, || audit!(action = "recorded"));
    let report = audit.shutdown_blocking();
    assert_eq!((report.emitted(), report.unseen()), (1, 4), "{report}");
    assert_eq!(written.load(std::sync::atomic::Ordering::SeqCst), 1);
}

//! Delivery: overflow accounting, flush, shutdown, retries, isolation.

use std::time::Duration;

use fabric_audit::{audit, AuditLayer, Overflow};

use crate::support::{pipeline, Broken, Collect, Flaky, Gate, Panicky, Slow};

/// Emits `per_thread` events from each of `threads` threads.
fn flood(dispatch: &tracing::Dispatch, threads: usize, per_thread: usize) {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let dispatch = dispatch.clone();
            std::thread::spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    for i in 0..per_thread {
                        audit!(action = "flood.event", thread = t, i = i);
                    }
                })
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
}

#[test]
fn overflow_is_counted_exactly() {
    let (slow, written) = Slow::new(Duration::from_millis(2));
    let (dispatch, audit) = pipeline(
        AuditLayer::builder()
            .sink("slow", slow)
            .queue_capacity(1000)
            .batch_size(100),
    );
    flood(&dispatch, 8, 100_000);
    let report = audit.shutdown_blocking();
    let sink = report.sink("slow").unwrap();
    assert_eq!(report.emitted(), 800_000);
    assert!(sink.dropped() > 0, "{report}");
    assert_eq!(sink.failed(), 0);
    assert_eq!(sink.written() + sink.dropped(), 800_000, "{report}");
    assert_eq!(sink.written(), written.len() as u64);
}

#[test]
fn block_policy_loses_nothing() {
    let (slow, written) = Slow::new(Duration::from_millis(1));
    let (dispatch, audit) = pipeline(
        AuditLayer::builder()
            .sink("slow", slow)
            .queue_capacity(16)
            .batch_size(8)
            .overflow(Overflow::Block),
    );
    flood(&dispatch, 4, 500);
    let report = audit.shutdown_blocking();
    assert_eq!(report.sink("slow").unwrap().dropped(), 0, "{report}");
    assert_eq!(written.len(), 2000);
}

#[test]
fn flush_returns_once_everything_before_it_is_written() {
    let (slow, written) = Slow::new(Duration::from_millis(1));
    let (dispatch, audit) = pipeline(
        AuditLayer::builder()
            .sink("slow", slow)
            .batch_size(10)
            .flush_interval(Duration::from_secs(3600)),
    );
    for round in 1..=3 {
        tracing::dispatcher::with_default(&dispatch, || {
            for i in 0..95 {
                audit!(action = "flush.test", round = round, i = i);
            }
        });
        // The workers' timer is an hour: only the flush moves them.
        audit.flush_blocking().unwrap();
        assert_eq!(written.len(), 95 * round);
    }
    let records = written.records();
    let order: Vec<i64> = records
        .iter()
        .filter_map(|r| match r.detail_value("i") {
            Some(fabric_audit::DetailValue::I64(i)) => Some(i),
            _ => None,
        })
        .collect();
    assert_eq!(
        &order[..95],
        (0..95).collect::<Vec<_>>(),
        "emission order kept"
    );
    audit.shutdown_blocking();
}

#[tokio::test]
async fn async_flush_waits_for_every_sink() {
    let a = Collect::default();
    let (b, b_written) = Slow::new(Duration::from_millis(5));
    let (dispatch, audit) = pipeline(
        AuditLayer::builder()
            .sink("a", a.clone())
            .sink("b", b)
            .batch_size(4),
    );
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0..40 {
            audit!(action = "flush.async", i = i);
        }
    });
    audit.flush().await.unwrap();
    assert_eq!((a.len(), b_written.len()), (40, 40));
    audit.shutdown().await;
}

#[test]
fn shutdown_drains_everything_queued() {
    let (slow, written) = Slow::new(Duration::from_micros(200));
    let (dispatch, audit) = pipeline(
        AuditLayer::builder()
            .sink("slow", slow)
            .queue_capacity(100_000)
            .batch_size(64),
    );
    flood(&dispatch, 4, 10_000);
    let report = audit.shutdown_blocking();
    assert_eq!(report.emitted(), 40_000);
    assert!(report.is_lossless(), "{report}");
    assert_eq!(written.len(), 40_000);
    // Shutdown is idempotent, and later events are counted as dropped.
    tracing::dispatcher::with_default(&dispatch, || audit!(action = "too.late"));
    let after = audit.shutdown_blocking();
    assert_eq!(after, report);
    let live = audit.report();
    assert_eq!(live, report, "the final report is frozen");
}

#[test]
fn a_stalled_sink_holds_back_no_other_sink_and_memory_stays_bounded() {
    let gate = Gate::default();
    let fast = Collect::default();
    let (dispatch, audit) = pipeline(
        AuditLayer::builder()
            .sink("stalled", gate.clone())
            .sink("fast", fast.clone())
            .queue_capacity(1000)
            .batch_size(100),
    );
    tracing::dispatcher::with_default(&dispatch, || audit!(action = "first"));
    gate.wait_until_held();
    // The stalled sink's worker holds the first batch; flood both queues.
    flood(&dispatch, 4, 50_000);
    fast.wait_for(1 + 200_000 - fast_dropped(&audit) as usize);
    let stalled = audit.report().sink("stalled").unwrap().clone();
    // Everything beyond the queue and the held batch was dropped, not kept.
    assert_eq!(stalled.queued(), 1000);
    assert_eq!(stalled.dropped(), 200_000 - 1000, "{stalled:?}");
    gate.open();
    let report = audit.shutdown_blocking();
    let stalled = report.sink("stalled").unwrap();
    assert_eq!(stalled.written(), 1001);
    assert_eq!(stalled.written() + stalled.dropped(), 200_001);
    let fast = report.sink("fast").unwrap();
    assert_eq!(fast.written() + fast.dropped(), 200_001);
    assert!(fast.written() > stalled.written(), "{report}");
}

fn fast_dropped(audit: &fabric_audit::AuditHandle) -> u64 {
    audit.report().sink("fast").unwrap().dropped()
}

#[test]
fn transient_failures_are_retried_until_written() {
    let flaky = Flaky {
        failures: 3,
        inner: Collect::default(),
    };
    let written = flaky.inner.clone();
    let (dispatch, audit) = pipeline(
        AuditLayer::builder()
            .sink("flaky", flaky)
            .max_backoff(Duration::from_millis(20)),
    );
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0..10 {
            audit!(action = "retry.me", i = i);
        }
    });
    written.wait_for(10);
    let report = audit.shutdown_blocking();
    let sink = report.sink("flaky").unwrap();
    assert_eq!((sink.written(), sink.failed(), sink.errors()), (10, 0, 3));
    assert_eq!(sink.last_error(), Some("connection reset"));
    assert!(!sink.is_failing());
}

#[test]
fn a_failing_sink_is_reported_by_flush_and_counted_at_shutdown() {
    let healthy = Collect::default();
    let (dispatch, audit) = pipeline(
        AuditLayer::builder()
            .sink("down", Broken { transient: true })
            .sink("rejecting", Broken { transient: false })
            .sink("healthy", healthy.clone())
            .max_backoff(Duration::from_millis(10))
            .shutdown_timeout(Duration::from_millis(200)),
    );
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0..25 {
            audit!(action = "fail.me", i = i);
        }
    });
    let err = audit.flush_blocking().unwrap_err();
    assert_eq!(err.unflushed_sinks(), ["down"]);
    assert_eq!(healthy.len(), 25);
    let report = audit.shutdown_blocking();
    let down = report.sink("down").unwrap();
    assert_eq!((down.written(), down.failed()), (0, 25), "{report}");
    assert!(down.errors() >= 2, "retried: {report}");
    let rejecting = report.sink("rejecting").unwrap();
    assert_eq!((rejecting.written(), rejecting.failed()), (0, 25));
    assert_eq!(rejecting.last_error(), Some("value too long"));
    assert_eq!(report.sink("healthy").unwrap().written(), 25);
}

#[test]
fn dropping_everything_without_shutdown_still_drains() {
    let sink = Collect::default();
    let (dispatch, audit) = pipeline(
        AuditLayer::builder()
            .sink("collect", sink.clone())
            .flush_interval(Duration::from_secs(3600)),
    );
    tracing::dispatcher::with_default(&dispatch, || {
        for _ in 0..10 {
            audit!(action = "orphan");
        }
    });
    drop(dispatch);
    drop(audit);
    sink.wait_for(10);
    assert_eq!(sink.len(), 10);
}

#[test]
fn the_builder_rejects_bad_settings() {
    let cases = [
        (AuditLayer::builder(), "no audit sink"),
        (
            AuditLayer::builder()
                .sink("a", Collect::default())
                .queue_capacity(0),
            "queue_capacity",
        ),
        (
            AuditLayer::builder()
                .sink("a", Collect::default())
                .batch_size(0),
            "batch_size",
        ),
        (
            AuditLayer::builder()
                .sink("a", Collect::default())
                .sink("a", Collect::default()),
            "two sinks are named `a`",
        ),
    ];
    for (builder, needle) in cases {
        let err = builder.build::<tracing_subscriber::Registry>().unwrap_err();
        assert!(err.to_string().contains(needle), "{err}");
    }
}

#[test]
fn a_panicking_sink_fails_its_records_and_holds_up_nothing() {
    let healthy = Collect::default();
    let (dispatch, audit) = pipeline(
        AuditLayer::builder()
            .sink("panicky", Panicky)
            .sink("healthy", healthy.clone())
            .batch_size(10),
    );
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0..35 {
            audit!(action = "after.panic", i = i);
        }
    });
    audit.flush_blocking().unwrap();
    let report = audit.shutdown_blocking();
    let panicky = report.sink("panicky").unwrap();
    assert_eq!((panicky.written(), panicky.failed()), (0, 35), "{report}");
    assert_eq!(panicky.last_error(), Some("the sink panicked"));
    assert_eq!(report.sink("healthy").unwrap().written(), 35);
}

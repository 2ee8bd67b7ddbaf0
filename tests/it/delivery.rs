//! Delivery: overflow accounting, flush, shutdown, retries, isolation.

use std::time::Duration;

use fabric_audit::{audit, AuditLayer, Overflow};

use crate::support::{broken, flaky, panicky, pipeline, slow, Collect, Gate};

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
    let (slow, written) = slow(Duration::from_millis(2));
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
    let (slow, written) = slow(Duration::from_millis(1));
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
    let (slow, written) = slow(Duration::from_millis(1));
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
    let (b, b_written) = slow(Duration::from_millis(5));
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
    let (slow, written) = slow(Duration::from_micros(200));
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
    // Later events are counted as emitted and dropped, in every report.
    tracing::dispatcher::with_default(&dispatch, || audit!(action = "too.late"));
    let after = audit.shutdown_blocking();
    assert_eq!(after.emitted(), 40_001);
    let sink = after.sink("slow").unwrap();
    assert_eq!((sink.written(), sink.dropped()), (40_000, 1), "{after}");
    assert_eq!(audit.report(), after);
    assert_eq!(written.len(), 40_000);
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
    let written = Collect::default();
    let flaky = flaky(3, written.clone());
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
            .sink("down", broken(true))
            .sink("rejecting", broken(false))
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
    // The failing sink still holds its records; the rejecting one lost them.
    assert_eq!(err.unflushed_sinks(), ["down", "rejecting"]);
    assert_eq!(err.unflushed_records(), 50, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("sink `down` is failing, 25 records waiting"),
        "{text}"
    );
    assert!(text.contains("sink `rejecting`, 25 failed"), "{text}");
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
            .sink("panicky", panicky())
            .sink("healthy", healthy.clone())
            .batch_size(10),
    );
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0..35 {
            audit!(action = "after.panic", i = i);
        }
    });
    // The flush is not Ok: none of the records before it reached `panicky`.
    let err = audit.flush_blocking().unwrap_err();
    assert_eq!(err.unflushed_sinks(), ["panicky"]);
    assert_eq!(err.unflushed_records(), 35);
    let report = audit.shutdown_blocking();
    let panicky = report.sink("panicky").unwrap();
    assert_eq!((panicky.written(), panicky.failed()), (0, 35), "{report}");
    assert_eq!(panicky.last_error(), Some("the sink panicked"));
    assert_eq!(report.sink("healthy").unwrap().written(), 35);
}

/// Asserts that every sink of `report` accounts for every emitted record.
fn assert_balanced(report: &fabric_audit::Report) {
    for sink in report.sinks() {
        assert_eq!(
            report.emitted(),
            sink.written() + sink.dropped() + sink.failed() + sink.pending(),
            "{report}"
        );
    }
}

#[test]
fn a_rejected_batch_fails_the_flush_with_its_count() {
    let (dispatch, audit) = pipeline(
        AuditLayer::builder()
            .sink("rejecting", broken(false))
            .sink("ok", Collect::default()),
    );
    tracing::dispatcher::with_default(&dispatch, || audit!(action = "one"));
    let err = audit.flush_blocking().unwrap_err();
    assert_eq!(err.unflushed_sinks(), ["rejecting"]);
    assert_eq!(err.unflushed_records(), 1);
    // Once lost, every later flush says so.
    assert_eq!(audit.flush_blocking().unwrap_err().unflushed_records(), 1);
    audit.shutdown_blocking();
}

#[test]
fn a_flush_after_dropped_records_names_the_sink() {
    let gate = Gate::default();
    let (dispatch, audit) = pipeline(
        AuditLayer::builder()
            .sink("gated", gate.clone())
            .queue_capacity(4)
            .batch_size(1),
    );
    tracing::dispatcher::with_default(&dispatch, || audit!(action = "held"));
    gate.wait_until_held();
    tracing::dispatcher::with_default(&dispatch, || {
        (0..10).for_each(|_| audit!(action = "queued or dropped"))
    });
    gate.open();
    let err = audit.flush_blocking().unwrap_err();
    assert_eq!(err.unflushed_sinks(), ["gated"]);
    assert_eq!(err.unflushed_records(), 6, "{err}");
    let report = audit.shutdown_blocking();
    assert_eq!(report.sink("gated").unwrap().dropped(), 6, "{report}");
    assert_balanced(&report);
}

#[test]
fn a_partially_refused_batch_counts_only_the_refused_records() {
    let kept = Collect::default();
    let inner = kept.clone();
    let refuse_odd = fabric_audit::sinks::from_fn(move |batch| {
        let odd = batch.iter().filter(|r| r.action() == "odd").count();
        inner.keep(batch);
        match odd {
            0 => Ok(()),
            n => Err(fabric_audit::SinkError::partial(n, "odd records refused")),
        }
    });
    let (dispatch, audit) = pipeline(
        AuditLayer::builder()
            .sink("picky", refuse_odd)
            .batch_size(7),
    );
    tracing::dispatcher::with_default(&dispatch, || {
        (0..100).for_each(|i| {
            if i % 2 == 1 {
                audit!(action = "odd")
            } else {
                audit!(action = "even")
            }
        })
    });
    let err = audit.flush_blocking().unwrap_err();
    assert_eq!(err.unflushed_records(), 50);
    let report = audit.shutdown_blocking();
    let sink = report.sink("picky").unwrap();
    assert_eq!((sink.written(), sink.failed()), (50, 50), "{report}");
    assert_eq!(sink.last_error(), Some("odd records refused"));
    assert!(!sink.is_failing());
    // A partial failure is not retried: the sink saw every record once.
    assert_eq!(kept.len(), 100);
}

/// The race of shutdown against emitting threads, many times over: every
/// report balances, and events after the shutdown count as dropped.
#[test]
fn shutdown_racing_emitters_always_balances() {
    for round in 0..200 {
        let fast = Collect::default();
        let (slow, _) = slow(Duration::from_micros(50));
        let (dispatch, audit) = pipeline(
            AuditLayer::builder()
                .sink("fast", fast.clone())
                .sink("slow", slow)
                .queue_capacity(256)
                .batch_size(32),
        );
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let emitters: Vec<_> = (0..4)
            .map(|t| {
                let (dispatch, stop) = (dispatch.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    tracing::dispatcher::with_default(&dispatch, || {
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            audit!(action = "race", thread = t, n = n);
                            n += 1;
                        }
                    });
                    n
                })
            })
            .collect();
        // Let them get going, then shut down under their feet.
        while audit.report().emitted() < 500 {
            std::thread::yield_now();
        }
        let report = audit.shutdown_blocking();
        for sink in report.sinks() {
            assert_eq!(sink.pending(), 0, "round {round}: {report}");
        }
        assert_balanced(&report);
        assert_eq!(
            report.sink("fast").unwrap().written(),
            fast.len() as u64,
            "round {round}"
        );
        // Still emitting after the shutdown: each report balances.
        let later = audit.report();
        assert_balanced(&later);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let sent: u64 = emitters.into_iter().map(|h| h.join().unwrap()).sum();
        let last = audit.report();
        assert_eq!(last.emitted(), sent, "round {round}: every event counted");
        assert_balanced(&last);
        let late = last.emitted() - report.emitted();
        for sink in last.sinks() {
            let final_sink = report.sink(sink.name()).unwrap();
            assert_eq!(sink.dropped(), final_sink.dropped() + late, "round {round}");
            assert_eq!(sink.written(), final_sink.written(), "round {round}");
        }
    }
}

/// A sink stuck in a write forever does not hold shutdown past its
/// deadline; what it holds counts as failed, and stays counted so.
#[test]
fn shutdown_returns_at_its_deadline_even_with_a_hung_sink() {
    let gate = Gate::default();
    let (dispatch, audit) = pipeline(
        AuditLayer::builder()
            .sink("hung", gate.clone())
            .sink("ok", Collect::default())
            .shutdown_timeout(Duration::from_millis(300)),
    );
    tracing::dispatcher::with_default(&dispatch, || {
        (0..50).for_each(|i| audit!(action = "stuck", i = i))
    });
    gate.wait_until_held();
    let started = std::time::Instant::now();
    let report = audit.shutdown_blocking();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    let hung = report.sink("hung").unwrap();
    assert_eq!((hung.written(), hung.failed()), (0, 50), "{report}");
    assert_eq!(report.sink("ok").unwrap().written(), 50);
    assert_balanced(&report);
    // The write finishing later changes nothing: it was already counted.
    gate.open();
    gate.inner.wait_for(1);
    assert_eq!(audit.report(), report);
}

#[tokio::test]
async fn async_shutdown_returns_at_its_deadline_even_with_a_hung_sink() {
    let gate = Gate::default();
    let (dispatch, audit) = pipeline(
        AuditLayer::builder()
            .sink("hung", gate.clone())
            .shutdown_timeout(Duration::from_millis(200)),
    );
    tracing::dispatcher::with_default(&dispatch, || audit!(action = "stuck"));
    let held = gate.clone();
    tokio::task::spawn_blocking(move || held.wait_until_held())
        .await
        .unwrap();
    let report = audit.shutdown().await;
    assert_eq!(report.sink("hung").unwrap().failed(), 1, "{report}");
    gate.open();
}

#[test]
fn a_flush_after_shutdown_counts_late_events_as_dropped_not_waiting() {
    let (dispatch, audit) = pipeline(AuditLayer::builder().sink("ok", Collect::default()));
    tracing::dispatcher::with_default(&dispatch, || audit!(action = "in.time"));
    audit.shutdown_blocking();
    assert!(audit.flush_blocking().is_ok(), "nothing lost yet");
    tracing::dispatcher::with_default(&dispatch, || audit!(action = "too.late"));
    let err = audit.flush_blocking().unwrap_err();
    assert_eq!(err.unflushed_sinks(), ["ok"]);
    assert_eq!(err.unflushed_records(), 1, "{err}");
    assert!(err.to_string().contains("1 dropped"), "{err}");
    assert!(!err.to_string().contains("waiting"), "{err}");
}

/// Records emitted before shutdown begins are all written, however the
/// worker's loop interleaves with the emission and the close (it once
/// found its queue empty, then saw the close and every record handed
/// over, and left the records just queued behind as dropped). Many rounds,
/// a worker that polls its queue as fast as it can.
#[test]
fn records_emitted_before_shutdown_are_never_left_behind() {
    for round in 0..2_000 {
        let sink = Collect::default();
        let (dispatch, audit) = pipeline(
            AuditLayer::builder()
                .sink("collect", sink.clone())
                .flush_interval(Duration::from_micros(1)),
        );
        let n = 1 + round % 3;
        tracing::dispatcher::with_default(&dispatch, || {
            for i in 0..n {
                audit!(action = "before.shutdown", i = i);
            }
        });
        let report = audit.shutdown_blocking();
        assert!(report.is_lossless(), "round {round}: {report}");
        assert_eq!(sink.len(), n, "round {round}: {report}");
    }
}

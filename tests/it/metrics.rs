//! The counters through the `metrics` facade, read back from a Prometheus
//! recorder: they agree with the report, to the record.

use std::sync::OnceLock;
use std::time::Duration;

use fabric_audit::{audit, AuditLayer, Report};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::support::{flaky, pipeline, Gate};

/// One recorder for the whole test binary (the facade's is global); each
/// test uses sink names of its own.
fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| PrometheusBuilder::new().install_recorder().unwrap())
}

/// The value of the sample `name{labels}` in the scrape, if present.
pub(crate) fn sample(scrape: &str, name: &str, labels: &str) -> Option<f64> {
    let head = format!("{name}{{{labels}}} ");
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(&head))
        .map(|value| value.parse().unwrap())
}

/// The value of the sample `name` (no labels) in the scrape, if present.
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) fn sample_unlabelled(scrape: &str, name: &str) -> Option<f64> {
    let head = format!("{name} ");
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(&head))
        .map(|value| value.parse().unwrap())
}

fn assert_matches_report(scrape: &str, report: &Report, sink: &str) {
    let r = report.sink(sink).unwrap();
    let labels = format!("sink=\"{sink}\"");
    let value =
        |name| sample(scrape, name, &labels).unwrap_or_else(|| panic!("no {name}: {scrape}"));
    assert_eq!(
        value("fabric_audit_records_emitted_total"),
        report.emitted() as f64
    );
    assert_eq!(
        value("fabric_audit_records_written_total"),
        r.written() as f64
    );
    assert_eq!(
        value("fabric_audit_records_dropped_total"),
        r.dropped() as f64
    );
    assert_eq!(
        value("fabric_audit_records_failed_total"),
        r.failed() as f64
    );
    assert_eq!(value("fabric_audit_write_errors_total"), r.errors() as f64);
    assert_eq!(value("fabric_audit_queue_depth"), 0.0);
    assert_eq!(value("fabric_audit_sink_failing"), 0.0);
}

#[test]
fn the_published_counters_equal_the_final_report_for_every_sink() {
    let recorder = recorder();
    let gate = Gate::default();
    let flaky = flaky(3, Default::default());
    let (dispatch, audit) = pipeline(
        AuditLayer::builder()
            .sink("metrics-gated", gate.clone())
            .sink("metrics-flaky", flaky)
            .queue_capacity(100)
            .batch_size(10)
            .max_backoff(Duration::from_millis(1)),
    );
    tracing::dispatcher::with_default(&dispatch, || {
        audit!(action = "metrics.first");
        gate.wait_until_held();
        // The gated sink holds one batch and has room for 100 more; the
        // flaky one is backing off: the rest of these are dropped.
        for i in 0..500 {
            audit!(action = "metrics.burst", i = i);
        }
    });
    gate.open();
    let report = audit.shutdown_blocking();
    let gated = report.sink("metrics-gated").unwrap();
    assert_eq!(gated.written() + gated.dropped(), 501, "{report}");
    assert!(gated.dropped() >= 400, "{report}");
    let flaky = report.sink("metrics-flaky").unwrap();
    assert_eq!(flaky.written() + flaky.dropped(), 501, "{report}");

    let scrape = recorder.render();
    assert_matches_report(&scrape, &report, "metrics-gated");
    assert_matches_report(&scrape, &report, "metrics-flaky");
    let retries = |sink| {
        sample(
            &scrape,
            "fabric_audit_write_retries_total",
            &format!("sink=\"{sink}\""),
        )
    };
    assert_eq!(retries("metrics-flaky"), Some(3.0), "{scrape}");
    assert_eq!(retries("metrics-gated"), Some(0.0), "{scrape}");
    // Every attempt is timed: the flaky sink's batches, plus its 3 retries.
    let batches = sample(
        &scrape,
        "fabric_audit_batch_duration_seconds_count",
        "sink=\"metrics-flaky\"",
    )
    .unwrap();
    let least = 3.0 + (flaky.written() as f64 / 10.0).ceil();
    assert!(batches >= least, "{batches} < {least}: {scrape}");
}

#[cfg(all(feature = "http", feature = "sqlite"))]
#[tokio::test]
async fn the_query_api_counts_its_requests_by_route_and_status() {
    use axum::body::Body;
    use axum::http::Request;
    use fabric_audit::http::{router, BearerTokens};
    use fabric_audit::Store;
    use tower::ServiceExt;

    let recorder = recorder();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    let store = Store::connect(&url).await.unwrap();
    let app: axum::Router = router(
        store,
        BearerTokens::new().token("dashboard", "metrics-secret", ["audit:read"]),
    );
    let get = |uri: &str, token: Option<&str>| {
        let mut request = Request::get(uri);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request.body(Body::empty()).unwrap()
    };
    let id = "/api/v1/audit/0192f5e6-0000-7000-8000-000000000000";
    for (uri, token, status) in [
        ("/api/v1/audit?action=metrics.", Some("metrics-secret"), 200),
        ("/api/v1/audit?limit=0", Some("metrics-secret"), 400),
        ("/api/v1/audit", None, 401),
        (id, Some("metrics-secret"), 404),
        (id, Some("wrong"), 401),
    ] {
        let response = app.clone().oneshot(get(uri, token)).await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{uri}");
    }
    let scrape = recorder.render();
    let count = |route: &str, status| {
        let labels = format!("route=\"{route}\",method=\"GET\",status=\"{status}\"");
        sample(&scrape, "fabric_audit_http_requests_total", &labels).unwrap_or(0.0)
    };
    // Other tests of this binary may use the API too: at least ours.
    assert!(count("/api/v1/audit", 200) >= 1.0, "{scrape}");
    assert!(count("/api/v1/audit", 400) >= 1.0, "{scrape}");
    assert!(count("/api/v1/audit", 401) >= 1.0, "{scrape}");
    assert!(count("/api/v1/audit/{id}", 404) >= 1.0, "{scrape}");
    assert!(count("/api/v1/audit/{id}", 401) >= 1.0, "{scrape}");
    assert!(
        !scrape.contains("0192f5e6"),
        "a raw path became a label: {scrape}"
    );
}

//! The sinks' own I/O never logs record contents into the application's
//! logs. A binary of its own: it installs a global subscriber at TRACE,
//! which every thread (the sinks' workers included) reports to.

#![cfg(feature = "postgres")]

use std::process::Command;
use std::sync::{Arc, Mutex};

use fabric_audit::{audit, AuditLayer, DatabaseSink};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

/// Everything any layer could print: every event with its fields.
#[derive(Clone, Default)]
struct Everything(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> Layer<S> for Everything {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != "audit" {
            self.0.lock().unwrap().push(format!("{event:?}"));
        }
    }
}

fn psql(sql: &str) {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            sql,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "needs PostgreSQL (see .ci/run)"]
fn a_database_driver_logging_at_trace_never_sees_a_record() {
    let name = format!("fa_{}", uuid::Uuid::new_v4().simple());
    psql(&format!("CREATE DATABASE {name}"));
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    let everything = Everything::default();
    let db = DatabaseSink::builder(&url).build().unwrap();
    let (layer, audit) = AuditLayer::builder().sink("database", db).build().unwrap();
    tracing_subscriber::registry()
        .with(
            everything
                .clone()
                .with_filter(tracing::level_filters::LevelFilter::TRACE),
        )
        .with(layer)
        .init();
    let secret = "secret-4f1c@example.com";
    audit!(action = "user.updated", "actor.id" = "u-1", email = secret);
    let report = audit.shutdown_blocking();
    assert!(report.is_lossless(), "{report}");
    psql(&format!("DROP DATABASE {name} WITH (FORCE)"));
    let logged = everything.0.lock().unwrap().join("\n");
    // tokio-postgres logs its parameters as bytes: look for those too.
    let as_bytes = secret
        .bytes()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    assert!(
        !logged.contains(&as_bytes),
        "a record leaked into the logs as bytes"
    );
    assert!(
        !logged.contains(secret),
        "a record leaked into the logs:\n{logged}"
    );
    assert!(
        !logged.contains("user.updated"),
        "a record leaked into the logs:\n{logged}"
    );
}

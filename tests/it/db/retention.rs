//! Retention against a real server: a role that may only read and append
//! still writes, and the purge it cannot run is warned about.

use std::sync::{Arc, Mutex};

use fabric_audit::{audit, AuditLayer, AuditQuery, AuditRecord, Batch, DatabaseSink, Sink, Store};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

use super::{unique_name, wait_until, walk, TestDb};
use crate::support::pipeline;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs PostgreSQL (see .ci/run)"]
async fn a_role_that_may_only_read_and_append_writes_and_warns_of_the_purge() {
    let db = super::postgres();
    // The owner migrates, and stores a record old enough to purge (and a
    // new one: the purge keeps what is within 30 days of the newest).
    let owner = db.url.clone();
    let expired = AuditRecord::builder("expired")
        .timestamp(chrono::Utc::now() - chrono::Duration::days(40))
        .build();
    let records = vec![
        Arc::new(expired),
        Arc::new(AuditRecord::builder("new").build()),
    ];
    tokio::task::spawn_blocking(move || {
        let mut sink = DatabaseSink::builder(owner).keep_forever().build().unwrap();
        sink.write(&Batch::new(&records)).unwrap();
    })
    .await
    .unwrap();
    let role = Role::create(&db);
    let warnings = Warnings::default();
    let url = role.url.clone();
    let subscriber = tracing_subscriber::registry().with(warnings.clone());
    // The role can neither migrate nor purge; the sink says so and writes.
    let database = tokio::task::spawn_blocking(move || {
        tracing::subscriber::with_default(subscriber, || {
            DatabaseSink::builder(url).retention_days(30).build()
        })
    })
    .await
    .unwrap()
    .expect("a role that may read and append can write");
    let (dispatch, audit) = pipeline(AuditLayer::builder().sink("database", database));
    tokio::task::spawn_blocking(move || {
        tracing::dispatcher::with_default(&dispatch, || {
            (0..100).for_each(|i| audit!(action = "app.event", i = i))
        })
    })
    .await
    .unwrap();
    let report = audit.shutdown().await;
    assert!(report.is_lossless(), "{report}");
    assert_eq!(report.sink("database").unwrap().written(), 100);
    let store = Store::connect(&db.url).await.unwrap();
    let stored = walk(&store, AuditQuery::new().limit(1000).unwrap()).await;
    assert_eq!(stored.len(), 102);
    wait_until("the purge's warning", || async {
        warnings.any(|w| w.contains("retention purge failed") && w.contains("permission denied"))
    })
    .await;
    assert!(
        warnings.any(|w| w.contains("cannot be migrated from here")),
        "{:?}",
        warnings.0.lock().unwrap()
    );
    drop(role);
}

/// A login role with SELECT and INSERT on the audit tables only (as in the
/// README); dropped with its privileges at the end of the test.
struct Role {
    name: String,
    url: String,
    db_url: String,
}

impl Role {
    fn create(db: &TestDb) -> Self {
        let name = unique_name();
        (db.sql)(&format!(
            "CREATE ROLE {name} LOGIN; \
             GRANT SELECT, INSERT ON audit_events, audit_event_flags TO {name}"
        ))
        .unwrap();
        let url = db.url.replacen("postgres@", &format!("{name}@"), 1);
        assert_ne!(url, db.url);
        Self {
            name,
            url,
            db_url: db.url.clone(),
        }
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let database = self.db_url.rsplit('/').next().unwrap().to_owned();
        let host = std::env::var("FABRIC_AUDIT_PG_HOST").unwrap_or_else(|_| "127.0.0.1".into());
        for (db, sql) in [
            (database.as_str(), format!("DROP OWNED BY {}", self.name)),
            ("postgres", format!("DROP ROLE IF EXISTS {}", self.name)),
        ] {
            // Sessions of the role may linger a moment after the sink.
            let _ = run_ignoring(&host, db, &sql);
        }
    }
}

fn run_ignoring(host: &str, db: &str, sql: &str) -> bool {
    std::process::Command::new("psql")
        .args(["-h", host, "-U", "postgres", "-d", db, "-c", sql])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Warnings on target `fabric_audit`, as text.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

impl Warnings {
    fn any(&self, f: impl Fn(&str) -> bool) -> bool {
        self.0.lock().unwrap().iter().any(|w| f(w))
    }
}

impl<S: tracing::Subscriber> Layer<S> for Warnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != "fabric_audit" {
            return;
        }
        struct Text(String);
        impl tracing::field::Visit for Text {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!(" {}={value:?}", field.name()));
            }
        }
        let mut text = Text(String::new());
        event.record(&mut text);
        self.0.lock().unwrap().push(text.0);
    }
}

//! Errors keep their causes, and one fault is one kind from every entry
//! point: a database that cannot be reached is `is_unavailable` from the
//! store, the sink's builder, `migrate`, `purge` and a configuration's URL.

use std::error::Error as _;

use fabric_audit::{AuditQuery, DatabaseSink, Retention, Store};

/// URLs of databases that cannot be reached: nothing listens on port 1,
/// and SQLite cannot make a file in a directory that does not exist.
fn unreachable_urls() -> Vec<String> {
    let mut urls = vec!["sqlite:///no/such/directory/audit.db".to_owned()];
    if cfg!(feature = "postgres") {
        urls.push("postgres://postgres@127.0.0.1:1/audit?connect_timeout=5".to_owned());
    }
    if cfg!(feature = "mysql") {
        urls.push("mysql://root@127.0.0.1:1/audit".to_owned());
    }
    urls
}

/// The messages of `error` and of every cause under it.
fn chain(error: &(dyn std::error::Error + 'static)) -> Vec<String> {
    std::iter::successors(Some(error), |e| (*e).source())
        .map(ToString::to_string)
        .collect()
}

/// Asserts the error is the "unreachable" kind, says what it tried, and
/// chains the driver's error as its cause.
fn assert_unreachable(what: &str, url: &str, err: &fabric_audit::Error) {
    assert!(err.is_unavailable(), "{what} {url}: {err:?}");
    assert!(!err.is_invalid_input(), "{what} {url}: {err:?}");
    let messages = chain(err);
    let first = messages[0].chars().next();
    assert!(
        first.is_some_and(char::is_lowercase),
        "{what} {url}: {messages:?}"
    );
    assert!(messages.len() >= 2, "{what} {url}: no cause: {messages:?}");
    // The cause is the driver's, not a copy in the message.
    assert!(
        !messages[0].contains(&messages[1]),
        "{what} {url}: {messages:?}"
    );
    // The driver's error is in the chain (the store's pool wraps it).
    let driver = std::iter::successors(err.source(), |e| (*e).source()).any(|e| {
        e.downcast_ref::<diesel::ConnectionError>().is_some()
            || e.downcast_ref::<diesel_async::pooled_connection::PoolError>()
                .is_some()
    });
    assert!(driver, "{what} {url}: no driver error in {messages:?}");
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_database_is_unavailable_from_every_entry_point() {
    for url in unreachable_urls() {
        let u = url.clone();
        let built = blocking(move || DatabaseSink::builder(u).build()).await;
        assert_unreachable("the sink's builder", &url, &built.unwrap_err());

        let u = url.clone();
        let migrated = blocking(move || fabric_audit::migrate(&u)).await;
        assert_unreachable("migrate", &url, &migrated.unwrap_err());

        let u = url.clone();
        let purged = blocking(move || fabric_audit::purge(&u, Retention::days(1).unwrap())).await;
        assert_unreachable("purge", &url, &purged.unwrap_err());
        // Keeping everything deletes nothing, but still needs the database.
        let u = url.clone();
        let purged = blocking(move || fabric_audit::purge(&u, Retention::FOREVER)).await;
        assert_unreachable("purge forever", &url, &purged.unwrap_err());

        // SQLite's store opens its file at once, the servers' on first use.
        let err = match Store::connect(&url).await {
            Ok(store) => store.query(&AuditQuery::new()).await.unwrap_err(),
            Err(err) => err,
        };
        assert_unreachable("the store", &url, &err);
    }
}

#[cfg(feature = "config")]
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_database_from_a_configuration_is_unavailable_too() {
    for url in unreachable_urls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.toml");
        std::fs::write(&path, format!("[audit]\ndatabase_url = {url:?}\n")).unwrap();
        let config = fabric_audit::AuditConfig::load(Some(&path)).unwrap();
        let built = blocking(move || {
            DatabaseSink::builder(&config.database_url)
                .retention(config.db_retention_days)
                .apply_migrations(config.run_migrations)
                .build()
        })
        .await;
        assert_unreachable("a configuration", &url, &built.unwrap_err());
    }
}

#[test]
fn a_bad_url_is_invalid_input_wherever_it_is_given() {
    for url in ["oracle://db/audit", "sqlite:", ""] {
        let errors = [
            DatabaseSink::builder(url).build().unwrap_err(),
            DatabaseSink::builder(url).build_lazy().unwrap_err(),
            fabric_audit::migrate(url).unwrap_err(),
            fabric_audit::purge(url, Retention::FOREVER).unwrap_err(),
            fabric_audit::schema_sql(url).unwrap_err(),
        ];
        for err in errors {
            assert!(err.is_invalid_input(), "{url:?}: {err:?}");
            assert!(!err.is_unavailable(), "{url:?}: {err:?}");
        }
    }
}

#[test]
fn a_missing_schema_is_a_database_error_that_names_what_is_missing() {
    let db = super::support::sqlite();
    let err = DatabaseSink::builder(&db.url)
        .apply_migrations(false)
        .build()
        .unwrap_err();
    assert!(!err.is_unavailable(), "{err:?}");
    assert!(!err.is_invalid_input(), "{err:?}");
    assert!(err.to_string().contains("table `audit_events`"), "{err}");
}

#[test]
fn a_file_that_cannot_be_opened_chains_the_io_error() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the directory should be.
    let blocker = dir.path().join("logs");
    std::fs::write(&blocker, "not a directory").unwrap();
    let path = blocker.join("audit.jsonl");
    let err = fabric_audit::FileSink::builder(&path).build().unwrap_err();
    let messages = chain(&err);
    assert!(messages[0].contains("logs"), "{messages:?}");
    let cause = err.source().expect("the i/o error is chained");
    assert!(
        cause.downcast_ref::<std::io::Error>().is_some(),
        "{cause:?}"
    );
    assert!(!messages[0].contains(&messages[1]), "{messages:?}");
}

#[cfg(feature = "config")]
#[test]
fn a_bad_configuration_chains_the_parser_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.toml");
    std::fs::write(&path, "[audit]\nqueue_maxsize = \"many\"\n").unwrap();
    let err = fabric_audit::AuditConfig::load(Some(&path)).unwrap_err();
    assert!(err.is_invalid_input(), "{err:?}");
    assert!(err.to_string().contains("`audit.queue_maxsize`"), "{err}");
    let messages = chain(&err);
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(messages[1].contains("queue_maxsize"), "{messages:?}");
    // Hostile input: a NUL and control characters in the file name.
    let weird = dir.path().join("a\u{1}b.toml");
    let err = fabric_audit::AuditConfig::load(Some(&weird)).unwrap_err();
    assert!(err.is_invalid_input(), "{err:?}");
}

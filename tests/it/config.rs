//! Settings from files and the environment.

use std::sync::Mutex;

use fabric_audit::{audit, AuditConfig, AuditLayer, AuditQuery, Store};

use crate::support::pipeline;

/// The environment is the process's: tests that read it take turns.
static ENV: Mutex<()> = Mutex::new(());

fn write(name: &str, text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn defaults_are_the_seeds() {
    let _env = ENV
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let config = AuditConfig::load(None).unwrap();
    assert_eq!(config, AuditConfig::default());
    assert_eq!(
        (
            config.db_retention_days,
            config.queue_maxsize,
            config.log_retention_days
        ),
        (30, 10_000, 90)
    );
    assert_eq!(config.log_file, std::path::Path::new("logs/audit.jsonl"));
}

#[test]
fn toml_and_yaml_files_are_read() {
    let _env = ENV
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (_d1, toml) = write(
        "audit.toml",
        "[audit]\nqueue_maxsize = 500\nlog_file = \"x/a.jsonl\"\n\n[[audit.tokens]]\nname = \"ops\"\ntoken = \"t\"\npermissions = [\"audit:read\"]\n",
    );
    let (_d2, yaml) = write(
        "audit.yaml",
        "audit:\n  queue_maxsize: 600\n  db_retention_days: 7\n",
    );
    let t = AuditConfig::load(Some(&toml)).unwrap();
    assert_eq!(
        (t.queue_maxsize, t.log_file.to_str(), t.tokens.len()),
        (500, Some("x/a.jsonl"), 1)
    );
    assert_eq!(t.tokens[0].name, "ops");
    assert!(
        !format!("{:?}", t.tokens[0]).contains("\"t\""),
        "no secret in Debug"
    );
    let y = AuditConfig::load(Some(&yaml)).unwrap();
    assert_eq!((y.queue_maxsize, y.db_retention_days), (600, 7));
}

#[test]
fn errors_name_the_key() {
    let _env = ENV
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let cases = [
        ("[audit]\nqueue_max = 5\n", "queue_max"),
        ("[audit]\nqueue_maxsize = \"many\"\n", "audit.queue_maxsize"),
        (
            "[audit]\ndb_retention_days = -1\n",
            "audit.db_retention_days",
        ),
        ("[audit]\nbind = \"nowhere\"\n", "audit.bind"),
        ("[audit]\nqueue_maxsize = 0\n", "audit.queue_maxsize"),
        (
            "[[audit.tokens]]\nname = \"ops\"\npermissions = []\n",
            "token `ops`",
        ),
        ("[audit\n", "audit.toml"),
    ];
    for (text, needle) in cases {
        let (_dir, path) = write("audit.toml", text);
        let err = AuditConfig::load(Some(&path)).unwrap_err();
        assert!(err.is_invalid_input());
        assert!(err.to_string().contains(needle), "{text:?}: {err}");
    }
    let err = AuditConfig::load(Some(std::path::Path::new("/no/such/audit.toml"))).unwrap_err();
    assert!(err.to_string().contains("/no/such/audit.toml"), "{err}");
}

#[test]
fn the_environment_overrides_the_file() {
    let _env = ENV
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (_dir, path) = write(
        "audit.toml",
        "[audit]\nqueue_maxsize = 500\nlog_retention_days = 3\n",
    );
    // SAFETY-free: std::env::set_var is safe in edition 2021; the lock
    // keeps the other readers of these variables out.
    std::env::set_var("FABRIC_AUDIT_QUEUE_MAXSIZE", "700");
    let loaded = AuditConfig::load(Some(&path));
    std::env::set_var("FABRIC_AUDIT_QUEUE_MAXSIZE", "lots");
    let bad = AuditConfig::load(Some(&path));
    std::env::remove_var("FABRIC_AUDIT_QUEUE_MAXSIZE");
    let loaded = loaded.unwrap();
    assert_eq!((loaded.queue_maxsize, loaded.log_retention_days), (700, 3));
    assert!(bad.unwrap_err().to_string().contains("audit.queue_maxsize"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_builder_takes_a_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = {
        let _env = ENV
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let text = format!(
            "[audit]\nlog_file = \"{}\"\ndatabase_url = \"sqlite://{}\"\nqueue_maxsize = 64\n",
            dir.path().join("audit.jsonl").display(),
            dir.path().join("audit.db").display()
        );
        let (_d, path) = write("audit.toml", &text);
        AuditConfig::load(Some(&path)).unwrap()
    };
    let (dispatch, audit) = pipeline(AuditLayer::builder().config(&config));
    tokio::task::spawn_blocking(move || {
        tracing::dispatcher::with_default(&dispatch, || audit!(action = "configured"))
    })
    .await
    .unwrap();
    let report = audit.shutdown().await;
    assert!(report.is_lossless(), "{report}");
    assert_eq!(
        report.sinks().iter().map(|s| s.name()).collect::<Vec<_>>(),
        ["file", "database"]
    );
    let store = Store::connect(&config.database_url).await.unwrap();
    assert_eq!(
        store.query(&AuditQuery::new()).await.unwrap().items.len(),
        1
    );
}

//! Settings from files and the environment.

use std::sync::Mutex;

use fabric_audit::{audit, AuditConfig, AuditLayer, AuditQuery, Retention, Store};

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
            config.db_retention_days.as_days(),
            config.queue_maxsize,
            config.log_retention_days.as_days(),
            config.max_record_bytes,
        ),
        (Some(30), 10_000, Some(90), 32_768)
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
    assert_eq!(
        (y.queue_maxsize, y.db_retention_days.as_days()),
        (600, Some(7))
    );
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
        (
            "[audit]\ndb_retention_days = 0\n",
            "audit.db_retention_days",
        ),
        (
            "[audit]\nlog_retention_days = 36526\n",
            "audit.log_retention_days",
        ),
        (
            "[audit]\nlog_retention_days = 99999999999999\n",
            "audit.log_retention_days",
        ),
        (
            "[audit]\ndb_retention_days = \"never\"\n",
            "audit.db_retention_days",
        ),
        (
            "[audit]\nmax_record_bytes = 1023\n",
            "audit.max_record_bytes",
        ),
        (
            "[audit]\nrun_migrations = \"maybe\"\n",
            "audit.run_migrations",
        ),
        ("[audit]\nmax_record_bytes = -1\n", "audit.max_record_bytes"),
        ("[audit]\nbind = \"nowhere\"\n", "audit.bind"),
        ("[audit]\nqueue_maxsize = 0\n", "audit.queue_maxsize"),
        (
            "[[audit.tokens]]\nname = \"ops\"\npermissions = []\n",
            "token `ops`",
        ),
        ("[audit\n", "audit.toml"),
        (
            "[audit]\ncheckpoint_copy = \"c.jsonl\"\ncheckpoint_copy_database_url = \"sqlite://c.db\"\n",
            "`audit.checkpoint_copy_database_url`, not both",
        ),
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
    assert_eq!(
        (loaded.queue_maxsize, loaded.log_retention_days.as_days()),
        (700, Some(3))
    );
    assert!(bad.unwrap_err().to_string().contains("audit.queue_maxsize"));
}

#[test]
fn retention_is_days_or_forever_from_files_and_the_environment() {
    let _env = ENV
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (_dir, path) = write(
        "audit.toml",
        "[audit]\ndb_retention_days = 7\nlog_retention_days = \"forever\"\n",
    );
    let from_file = AuditConfig::load(Some(&path));
    std::env::set_var("FABRIC_AUDIT_DB_RETENTION_DAYS", "forever");
    std::env::set_var("FABRIC_AUDIT_LOG_RETENTION_DAYS", "36525");
    let from_env = AuditConfig::load(Some(&path));
    std::env::set_var("FABRIC_AUDIT_DB_RETENTION_DAYS", "0");
    let zero = AuditConfig::load(Some(&path));
    std::env::remove_var("FABRIC_AUDIT_DB_RETENTION_DAYS");
    std::env::remove_var("FABRIC_AUDIT_LOG_RETENTION_DAYS");
    let from_file = from_file.unwrap();
    assert_eq!(from_file.db_retention_days, Retention::days(7).unwrap());
    assert_eq!(from_file.log_retention_days, Retention::FOREVER);
    let from_env = from_env.unwrap();
    assert_eq!(from_env.db_retention_days, Retention::FOREVER);
    assert_eq!(from_env.log_retention_days.as_days(), Some(36_525));
    let err = zero.unwrap_err().to_string();
    assert!(err.contains("audit.db_retention_days"), "{err}");
    assert!(err.contains("forever"), "{err}");
}

#[test]
fn debug_output_holds_no_password() {
    let _env = ENV
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (_dir, path) = write(
        "audit.toml",
        "[audit]\ndatabase_url = \"postgres://app:Pa55w0rd@db:5432/audit\"\n\n[[audit.tokens]]\nname = \"ops\"\ntoken = \"T0ken-s3cret\"\npermissions = [\"audit:read\"]\n",
    );
    let config = AuditConfig::load(Some(&path)).unwrap();
    let text = format!("{config:?}");
    assert!(!text.contains("Pa55w0rd"), "{text}");
    assert!(!text.contains("T0ken-s3cret"), "{text}");
    assert!(text.contains("postgres://app:***@db:5432/audit"), "{text}");
    assert_eq!(
        config.database_url, "postgres://app:Pa55w0rd@db:5432/audit",
        "only the Debug output hides it"
    );
}

#[cfg(feature = "http")]
#[test]
fn the_client_address_source_is_a_setting() {
    use fabric_audit::http::ClientIpSource;
    let _env = ENV
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    assert_eq!(
        AuditConfig::default().client_ip_source,
        ClientIpSource::ConnectInfo
    );
    let (_dir, path) = write(
        "audit.toml",
        "[audit]\nclient_ip_source = \"RightmostXForwardedFor\"\n",
    );
    let from_file = AuditConfig::load(Some(&path));
    std::env::set_var("FABRIC_AUDIT_CLIENT_IP_SOURCE", "XRealIp");
    let from_env = AuditConfig::load(Some(&path));
    std::env::set_var("FABRIC_AUDIT_CLIENT_IP_SOURCE", "LeftmostXForwardedFor");
    let bad = AuditConfig::load(Some(&path));
    std::env::remove_var("FABRIC_AUDIT_CLIENT_IP_SOURCE");
    assert_eq!(
        from_file.unwrap().client_ip_source,
        ClientIpSource::RightmostXForwardedFor
    );
    assert_eq!(from_env.unwrap().client_ip_source, ClientIpSource::XRealIp);
    let err = bad.unwrap_err().to_string();
    assert!(err.contains("audit.client_ip_source"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_builder_takes_a_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = {
        let _env = ENV
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let text = format!(
            "[audit]\nlog_file = \"{}\"\ndatabase_url = \"sqlite://{}\"\nqueue_maxsize = 64\ndb_retention_days = \"forever\"\nlog_retention_days = 1\ncheckpoint_copy_database_url = \"sqlite://{}\"\n",
            dir.path().join("audit.jsonl").display(),
            dir.path().join("audit.db").display(),
            dir.path().join("copy.db").display()
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
    let stored = store.query(&AuditQuery::new()).await.unwrap().items;
    // The record and the database chain's checkpoint at shutdown.
    assert_eq!(stored.len(), 2);
    // Each sink's chain checkpointed at shutdown, both copied.
    let copies = report.checkpoint_copy().unwrap();
    assert_eq!((copies.written(), copies.failed()), (2, 0), "{report}");
    let copy = Store::connect(config.checkpoint_copy_database_url.as_deref().unwrap())
        .await
        .unwrap();
    let copied = copy.query(&AuditQuery::new()).await.unwrap().items;
    let mut chains: Vec<_> = copied.iter().filter_map(|r| r.chain()).collect();
    chains.sort_unstable();
    assert_eq!(chains.len(), 2, "{copied:?}");
    assert!(
        chains[0].ends_with("/database") && chains[1].ends_with("/file"),
        "{chains:?}"
    );
    assert!(copied.contains(&stored[0]), "{copied:?}");
}

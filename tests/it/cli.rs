//! The `fabric-audit` binary, end to end on a temp dir.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use fabric_audit::{audit, AuditLayer, AuditRecord};

use crate::support::pipeline;

pub(crate) fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fabric-audit"))
        .args(args)
        .env_remove("FABRIC_AUDIT_DATABASE_URL")
        .output()
        .unwrap()
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes `n` records through the file sink; returns the day file.
fn audit_file(dir: &Path, n: usize) -> std::path::PathBuf {
    let (dispatch, audit) = pipeline(AuditLayer::builder().file(dir.join("audit.jsonl")));
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0..n {
            audit!(
                action = "post.created",
                "actor.id" = "u-1",
                resource_type = "post",
                resource_id = i
            );
        }
    });
    assert!(audit.shutdown_blocking().is_lossless());
    std::fs::read_dir(dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}

pub(crate) fn count(url: &str) -> usize {
    let out = cli(&["query", "--database-url", url, "--json", "--limit", "1000"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let records: Vec<AuditRecord> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    records.len()
}

#[test]
fn import_query_purge_and_migrate() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let file = audit_file(&logs, 5);
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());

    let out = cli(&["migrate", "--database-url", &url]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = cli(&["import", "--database-url", &url, file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "read 5 records from 1 file(s): 5 stored, 0 already present, 0 not imported\n"
    );
    // Again: records are stored by id, once.
    let out = cli(&["import", "--database-url", &url, file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "read 5 records from 1 file(s): 0 stored, 5 already present, 0 not imported\n"
    );
    assert_eq!(count(&url), 5);

    // A file with a bad line is refused whole, and the line is named.
    let bad = dir.path().join("bad.jsonl");
    let good_line = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .replace("post.created", "post.other");
    let good_line = good_line.replacen(&good_line[7..43], &uuid::Uuid::now_v7().to_string(), 1);
    std::fs::write(&bad, format!("{good_line}\n{{\"id\": \"nope\"}}\n")).unwrap();
    let out = cli(&["import", "--database-url", &url, bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("bad.jsonl:2:"), "{err}");
    assert_eq!(count(&url), 5, "nothing of the bad file was imported");

    // The table view and bad input.
    let out = cli(&[
        "query",
        "--database-url",
        &url,
        "--action",
        "post.",
        "--limit",
        "2",
    ]);
    assert!(out.status.success());
    let table = text(&out.stdout);
    assert_eq!(table.lines().count(), 3, "{table}");
    assert!(table.lines().nth(1).unwrap().contains("post/"), "{table}");
    assert!(text(&out.stderr).contains("next page: --cursor "));
    for args in [
        &["query", "--database-url", &url, "--limit", "0"][..],
        &["query", "--database-url", &url, "--from", "yesterday"],
        &["query", "--database-url", "redis://x"],
    ] {
        let out = cli(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(
            text(&out.stderr).lines().count(),
            1,
            "{args:?}: {}",
            text(&out.stderr)
        );
    }

    let out = cli(&["purge", "--database-url", &url, "--days", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "purged 0 records older than 1 days\n");
    assert_eq!(count(&url), 5);
}

#[test]
fn bad_filters_are_one_line_in_the_apis_words_before_any_database() {
    // No database is touched: the URL would fail otherwise.
    let url = "mysql://nobody@127.0.0.1:1/none";
    // Near the longest argument Linux passes (128 KiB).
    let mega = "9".repeat(120_000);
    let cases: [(&[&str], &str); 9] = [
        (&["--limit", "0"], "--limit must be from 1 to 1000, not 0"),
        (
            &["--limit", "-1"],
            "--limit must be a whole number from 1 to 1000",
        ),
        (
            &["--limit", &mega],
            "--limit must be a whole number from 1 to 1000",
        ),
        (&["--limit", "5", "--limit", "5"], "--limit is given twice"),
        (
            &["--from", "yesterday"],
            "--from is not an RFC 3339 timestamp",
        ),
        (
            &["--to", "2026-01-01T00:00:00Z\u{7}"],
            "--to is not an RFC 3339 timestamp",
        ),
        (&["--has-flag", ""], "--has-flag is empty"),
        (
            &["--resource-type=", "--action", "x"],
            "--resource-type is empty",
        ),
        (
            &["--cursor", "-1"],
            "--cursor is not a cursor from this API",
        ),
    ];
    for (flags, message) in cases {
        let mut args = vec!["query", "--database-url", url];
        args.extend_from_slice(flags);
        let out = cli(&args);
        let shown: Vec<_> = flags.iter().map(|f| &f[..f.len().min(20)]).collect();
        assert_eq!(out.status.code(), Some(2), "{shown:?}");
        assert_eq!(
            text(&out.stderr),
            format!("error: {message}\n"),
            "{shown:?}"
        );
        assert!(out.stdout.is_empty());
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let out = Command::new(env!("CARGO_BIN_EXE_fabric-audit"))
            .args(["query", "--database-url", url, "--actor-id"])
            .arg(std::ffi::OsStr::from_bytes(b"u\xff"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(text(&out.stderr), "error: --actor-id is not valid UTF-8\n");
    }
}

#[test]
fn query_count_prints_the_total_exact_or_as_a_lower_bound() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    let file = audit_file(&dir.path().join("logs"), 5);
    let out = cli(&["import", "--database-url", &url, file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cli(&["query", "--database-url", &url, "--count", "--limit", "2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).ends_with("total: 5\n"),
        "{}",
        text(&out.stderr)
    );
    let config = dir.path().join("audit.toml");
    for (cap, want) in [
        (4, "total: more than 4\n"),
        (5, "total: 5\n"),
        (6, "total: 5\n"),
    ] {
        std::fs::write(&config, format!("[audit]\ncount_cap = {cap}\n")).unwrap();
        let args = [
            "query",
            "--config",
            config.to_str().unwrap(),
            "--database-url",
            &url,
            "--count",
        ];
        let out = cli(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stderr), want, "cap {cap}");
    }
    let out = cli(&["query", "--database-url", &url, "--json"]);
    assert!(!text(&out.stderr).contains("total"), "only with --count");
    std::fs::write(&config, "[audit]\ncount_cap = 0\n").unwrap();
    let out = cli(&["query", "--config", config.to_str().unwrap(), "--count"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("`audit.count_cap` must be from 1"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn purge_refuses_zero_forever_and_too_many_days() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    let file = audit_file(&dir.path().join("logs"), 2);
    assert!(
        cli(&["import", "--database-url", &url, file.to_str().unwrap()])
            .status
            .success()
    );
    for (days, says) in [
        ("0", "from 1 to 36525 days"),
        ("forever", "nothing to purge"),
        ("96000000", "from 1 to 36525 days"),
        ("-3", "from 1 to 36525"),
    ] {
        let out = cli(&["purge", "--database-url", &url, "--days", days]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{days}: {err}");
        assert_eq!(err.lines().count(), 1, "{days}: {err}");
        assert!(err.contains(says), "{days}: {err}");
    }
    assert_eq!(count(&url), 2, "nothing was deleted");
}

#[test]
fn import_reports_conflicts_by_file_line_and_id() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    let file = audit_file(&dir.path().join("logs"), 3);
    assert!(
        cli(&["import", "--database-url", &url, file.to_str().unwrap()])
            .status
            .success()
    );
    // The same records, the second one edited; and a new one.
    let lines: Vec<String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let edited = lines[1].replace("post.created", "post.edited");
    let id = &edited[7..43];
    let fresh = lines[0].replacen(&lines[0][7..43], &uuid::Uuid::now_v7().to_string(), 1);
    let again = dir.path().join("again.jsonl");
    std::fs::write(
        &again,
        format!("{}\n{edited}\n{}\n{fresh}\n", lines[0], lines[2]),
    )
    .unwrap();
    let out = cli(&["import", "--database-url", &url, again.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "read 4 records from 1 file(s): 1 stored, 2 already present, 1 not imported\n"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "again.jsonl:2: record {id} is stored with other content"
        )),
        "{err}"
    );
    assert_eq!(count(&url), 4);
}

#[test]
fn serve_answers_and_refuses_to_run_open_by_accident() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    let file = audit_file(&dir.path().join("logs"), 3);
    assert!(
        cli(&["import", "--database-url", &url, file.to_str().unwrap()])
            .status
            .success()
    );

    let out = cli(&["serve", "--database-url", &url, "--bind", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no tokens configured"),
        "{}",
        text(&out.stderr)
    );

    let config = dir.path().join("audit.toml");
    std::fs::write(
        &config,
        format!(
            "[audit]\ndatabase_url = \"{url}\"\nbind = \"127.0.0.1:0\"\n[[audit.tokens]]\nname = \"ops\"\ntoken = \"t0k\"\npermissions = [\"audit:read\"]\n"
        ),
    )
    .unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_fabric-audit"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first.trim().rsplit("http://").next().unwrap().to_owned();
    let get = |auth: &str| {
        let mut stream = TcpStream::connect(&addr).unwrap();
        write!(
            stream,
            "GET /api/v1/audit?limit=2 HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    };
    let ok = get("Authorization: Bearer t0k\r\n");
    let refused = get("");
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let body: serde_json::Value =
        serde_json::from_str(ok.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["items"].as_array().unwrap().len(), 2);
    assert!(body["next_cursor"].is_string());
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
}

/// A running `fabric-audit serve`: its address, stderr kept for the end.
struct Server {
    child: std::process::Child,
    addr: String,
}

impl Server {
    fn start(config: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fabric-audit"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .env_remove("FABRIC_AUDIT_DATABASE_URL")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let addr = first.trim().rsplit("http://").next().unwrap().to_owned();
        Self { child, addr }
    }

    /// One request on its own connection; the status line and the body.
    fn get(&self, target: &str, token: Option<&str>) -> (String, String) {
        fetch(&self.addr, target, token)
    }

    /// Sends `signal` and waits (bounded) for a clean exit; its stderr.
    fn stop(mut self, signal: &str) -> String {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap()
            .success());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "serve did not stop on SIG{signal}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert!(status.success(), "SIG{signal}: {status}: {stderr}");
        stderr
    }
}

/// One GET to `addr` on its own connection; the status line and the body.
fn fetch(addr: &str, target: &str, token: Option<&str>) -> (String, String) {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// The `audit.read` records in the database at `url`.
fn audit_reads(url: &str) -> Vec<AuditRecord> {
    let out = cli(&[
        "query",
        "--database-url",
        url,
        "--action",
        "audit.read",
        "--json",
        "--limit",
        "1000",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn serve_audits_its_reads_logs_its_errors_and_flushes_on_sigterm_and_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("audit.db");
    let url = format!("sqlite://{}", db_path.display());
    let file = audit_file(&dir.path().join("logs"), 3);
    assert!(
        cli(&["import", "--database-url", &url, file.to_str().unwrap()])
            .status
            .success()
    );
    let config = dir.path().join("audit.toml");
    std::fs::write(
        &config,
        format!(
            "[audit]\ndatabase_url = \"{url}\"\nbind = \"127.0.0.1:0\"\n[[audit.tokens]]\nname = \"ops\"\ntoken = \"t0k\"\npermissions = [\"audit:read\"]\n"
        ),
    )
    .unwrap();

    const N: usize = 7;
    let server = Server::start(&config);
    for i in 0..N {
        let (status, _) = server.get(&format!("/api/v1/audit?limit={}", i + 1), Some("t0k"));
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    }
    // A failure inside (a row no sink wrote: its detail is not JSON):
    // answered 500 without detail, logged on stderr.
    {
        use diesel::connection::SimpleConnection;
        use diesel::{Connection, RunQueryDsl};
        let mut conn = diesel::SqliteConnection::establish(db_path.to_str().unwrap()).unwrap();
        // The server's database sink writes its audit.read records to this
        // file meanwhile: wait for its lock as the crate's connections do.
        conn.batch_execute("PRAGMA busy_timeout = 5000").unwrap();
        diesel::sql_query(
            "INSERT INTO audit_events (id, timestamp_us, action, actor_flags, detail) \
             VALUES ('01a2303c-dca4-7df8-9320-6384d14bba4a', 1, 'forged.row', '[]', 'not json')",
        )
        .execute(&mut conn)
        .unwrap();
    }
    let (status, body) = server.get("/api/v1/audit?action=forged.row", Some("t0k"));
    assert!(status.starts_with("HTTP/1.1 500"), "{status}");
    assert!(
        body.contains("\"internal\"") && !body.contains("not json"),
        "{body}"
    );
    let (status, body) = server.get("/api/v1/nothing", Some("t0k"));
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    assert!(body.contains("\"not_found\""), "{body}");
    let stderr = server.stop("TERM");
    assert!(stderr.contains("audit query failed"), "{stderr}");
    assert!(
        !stderr.contains("audit.read"),
        "no audit event on stderr: {stderr}"
    );

    let reads = audit_reads(&url);
    assert_eq!(reads.len(), N + 1, "every read, the failed one too");
    assert!(reads.iter().all(|r| r.actor_id() == Some("ops")));
    assert!(reads.iter().all(|r| r.client_ip() == Some("127.0.0.1")));

    // Ctrl-C flushes the same way.
    let server = Server::start(&config);
    let (status, _) = server.get("/api/v1/audit?limit=1", Some("t0k"));
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    server.stop("INT");
    assert_eq!(audit_reads(&url).len(), N + 2);
}

#[test]
fn migrate_prints_the_schema_for_an_apps_own_migration_tool() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    let out = cli(&["migrate", "--database-url", &url, "--print-sql"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sql = text(&out.stdout);
    assert!(sql.contains("CREATE TABLE audit_events"), "{sql}");
    assert!(
        sql.contains("-- fabric-audit migration 2026-11-28-000001"),
        "{sql}"
    );
    // Printing touched nothing: no database file was made.
    assert!(!dir.path().join("audit.db").exists());
    // The script, run by another tool, gives a schema the sink accepts as is.
    {
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        let path = dir.path().join("audit.db");
        let mut conn = diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
        conn.batch_execute(&sql).unwrap();
    }
    fabric_audit::DatabaseSink::builder(&url)
        .apply_migrations(false)
        .build()
        .unwrap();
    let pg = cli(&[
        "migrate",
        "--database-url",
        "postgres://u@h/db",
        "--print-sql",
    ]);
    assert!(
        text(&pg.stdout).contains("COLLATE \"C\""),
        "{}",
        text(&pg.stderr)
    );
}

#[test]
fn serve_publishes_prometheus_metrics_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    let metrics_addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let config = dir.path().join("audit.toml");
    std::fs::write(
        &config,
        format!(
            "[audit]\ndatabase_url = \"{url}\"\nbind = \"127.0.0.1:0\"\nmetrics_bind = \"{metrics_addr}\"\n[[audit.tokens]]\nname = \"ops\"\ntoken = \"t0k\"\npermissions = [\"audit:read\"]\n"
        ),
    )
    .unwrap();
    let server = Server::start(&config);
    for _ in 0..3 {
        let (status, _) = server.get("/api/v1/audit", Some("t0k"));
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    }
    let (status, _) = server.get("/api/v1/audit", None);
    assert!(status.starts_with("HTTP/1.1 401"), "{status}");

    let requests = |scrape: &str, status: u16| {
        crate::metrics::sample(
            scrape,
            "fabric_audit_http_requests_total",
            &format!("route=\"/api/v1/audit\",method=\"GET\",status=\"{status}\""),
        )
    };
    // Requests are counted before they are answered; the audit sink's
    // counters follow when its worker has written the 4 records (3 reads,
    // 1 refusal): wait for that, bounded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let scrape = loop {
        let (status, scrape) = fetch(&metrics_addr, "/metrics", None);
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        assert_eq!(requests(&scrape, 200), Some(3.0), "{scrape}");
        assert_eq!(requests(&scrape, 401), Some(1.0), "{scrape}");
        let written = crate::metrics::sample(
            &scrape,
            "fabric_audit_records_written_total",
            "sink=\"database\"",
        );
        if written == Some(4.0) {
            break scrape;
        }
        assert!(std::time::Instant::now() < deadline, "{scrape}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(
        scrape.contains("fabric_audit_batch_duration_seconds"),
        "{scrape}"
    );
    assert!(!scrape.contains("t0k"), "a secret in the metrics: {scrape}");
    server.stop("TERM");
}

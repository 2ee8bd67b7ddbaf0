//! `fabric-audit serve` under hostile load: the real binary, with its
//! open-file limit lowered by `prlimit` (util-linux), against clients that
//! send half a header, never read their answers, or outnumber the request
//! cap. Conditions are polled with deadlines, never waited for by sleeping.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fabric_audit::{AuditRecord, Batch, DatabaseSink, Sink};

/// Half a request: the header never ends.
const HALF_HEADER: &[u8] = b"GET /api/v1/audit HTTP/1.1\r\nHost: x\r\nX-Slow: ";

/// A running `fabric-audit serve --no-auth`, killed when dropped; its
/// stderr goes to a file, read while it runs.
struct Server {
    child: Child,
    addr: String,
    stderr: PathBuf,
}

impl Server {
    /// Starts `serve` on `url` with `flags`, under `prlimit --nofile=N:N`
    /// if `open_files` is given.
    fn start(dir: &Path, url: &str, open_files: Option<u32>, flags: &[&str]) -> Self {
        let binary = env!("CARGO_BIN_EXE_fabric-audit");
        let mut command = match open_files {
            Some(n) => {
                assert!(
                    Command::new("prlimit").arg("--version").output().is_ok(),
                    "these tests need prlimit (util-linux)"
                );
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        let stderr = dir.join(format!("serve-{}.stderr", std::process::id()));
        let mut child = command
            .args(["serve", "--database-url", url, "--no-auth"])
            .args(["--bind", "127.0.0.1:0"])
            .args(flags)
            .env_remove("RUST_LOG")
            .env_remove("FABRIC_AUDIT_DATABASE_URL")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut first,
        )
        .unwrap();
        assert!(first.contains("http://"), "serve did not start: {first:?}");
        let addr = first.trim().rsplit("http://").next().unwrap().to_owned();
        Self {
            child,
            addr,
            stderr,
        }
    }

    fn connect(&self) -> TcpStream {
        TcpStream::connect(&self.addr).unwrap()
    }

    /// One GET on its own connection, answered within `within`.
    fn get(&self, target: &str, within: Duration) -> (String, String) {
        fetch(&self.addr, target, within)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap()
    }

    /// Polls stderr until it holds `text`, for at most 10 s.
    fn wait_for_log(&self, text: &str) {
        poll(Duration::from_secs(10), || self.stderr().contains(text))
            .unwrap_or_else(|| panic!("no {text:?} on stderr: {}", self.stderr()));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One GET to `addr` on its own connection, answered within `within`: the
/// status line with the headers, and the body.
fn fetch(addr: &str, target: &str, within: Duration) -> (String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(within)).unwrap();
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .unwrap_or_else(|e| panic!("no answer to {target} within {within:?}: {e}"));
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a whole response");
    (head.to_owned(), body.to_owned())
}

/// Calls `done` until it holds (`Some`) or `deadline` passes (`None`).
fn poll(deadline: Duration, mut done: impl FnMut() -> bool) -> Option<()> {
    let end = Instant::now() + deadline;
    loop {
        if done() {
            return Some(());
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A SQLite database with `n` records of about `detail_bytes` each.
fn sqlite(dir: &Path, n: usize, detail_bytes: usize) -> String {
    let url = format!("sqlite://{}", dir.join("audit.db").display());
    let records: Vec<Arc<AuditRecord>> = (0..n)
        .map(|i| {
            let record = AuditRecord::builder("post.created")
                .actor_id(format!("u-{i}"))
                .detail("text", "x".repeat(detail_bytes))
                .build();
            Arc::new(record)
        })
        .collect();
    let mut sink = DatabaseSink::builder(&url).keep_forever().build().unwrap();
    sink.write(&Batch::new(&records)).unwrap();
    url
}

fn status(head: &str) -> &str {
    head.lines().next().unwrap()
}

#[test]
fn a_slow_header_flood_past_the_file_limit_leaves_room_for_requests() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite(dir.path(), 3, 10);
    // The header timeout stays long: the flood holds for the whole test.
    let server = Server::start(dir.path(), &url, Some(256), &[]);
    server.wait_for_log("at most 192 connections");
    let flood: Vec<TcpStream> = (0..360)
        .map(|_| {
            let mut stream = server.connect();
            // Refused connections (503 and closed) are part of the flood too.
            let _ = stream.write_all(HALF_HEADER);
            stream
        })
        .collect();
    for _ in 0..5 {
        let started = Instant::now();
        let (head, body) = server.get("/api/v1/audit?limit=2", Duration::from_secs(1));
        assert!(status(&head).contains(" 200 "), "{head}");
        assert!(started.elapsed() < Duration::from_secs(1));
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["items"].as_array().unwrap().len(), 2);
    }
    server.wait_for_log("limit reached");
    drop(flood);
}

#[test]
fn a_half_header_is_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite(dir.path(), 1, 10);
    let server = Server::start(
        dir.path(),
        &url,
        Some(256),
        &["--header-read-timeout-secs", "1"],
    );
    let started = Instant::now();
    let mut flood: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut stream = server.connect();
            stream.write_all(HALF_HEADER).unwrap();
            stream.set_nonblocking(true).unwrap();
            stream
        })
        .collect();
    // Closed by the server: the read ends (EOF or a reset), perhaps after
    // an error answer.
    let closed = |stream: &mut TcpStream| {
        let mut buf = [0; 256];
        match stream.read(&mut buf) {
            Ok(n) => n == 0 || buf.starts_with(b"HTTP/1.1 4"),
            Err(e) => e.kind() != ErrorKind::WouldBlock,
        }
    };
    poll(Duration::from_secs(10), || {
        flood.retain_mut(|s| !closed(s));
        flood.is_empty()
    })
    .unwrap_or_else(|| panic!("{} connections still open", flood.len()));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed by the timeout, not at once"
    );
    server.wait_for_log("did not send a request's header in time");
    let (head, _) = server.get("/api/v1/audit", Duration::from_secs(1));
    assert!(status(&head).contains(" 200 "), "{head}");
}

#[test]
fn clients_that_never_read_their_answers_hold_no_request_slot() {
    let dir = tempfile::tempdir().unwrap();
    // About 1 MB an answer, 8 asked for on each connection: more than the
    // socket buffers take (the receiver's does not grow unread), so the
    // server is left writing to each of them.
    let url = sqlite(dir.path(), 300, 3000);
    let server = Server::start(dir.path(), &url, Some(256), &["--max-requests", "2"]);
    let request = b"GET /api/v1/audit?limit=1000 HTTP/1.1\r\nHost: x\r\n\r\n".repeat(8);
    let never_read: Vec<TcpStream> = (0..6)
        .map(|_| {
            let mut stream = server.connect();
            stream.write_all(&request).unwrap();
            stream
        })
        .collect();
    // While their answers are being made, the two slots may be taken
    // (503 busy, at once); once the server only writes to them, none is:
    // requests are answered 200, every time.
    let ok = |server: &Server| {
        let started = Instant::now();
        let (head, body) = server.get("/api/v1/audit?limit=1", Duration::from_secs(1));
        assert!(started.elapsed() < Duration::from_secs(1));
        let ok = status(&head).contains(" 200 ");
        assert!(ok || body.contains("\"busy\""), "{head}\n{body}");
        ok
    };
    let mut in_a_row = 0;
    poll(Duration::from_secs(30), || {
        in_a_row = if ok(&server) { in_a_row + 1 } else { 0 };
        in_a_row == 5
    })
    .expect("a request slot stays held by a client not reading");
    drop(never_read);
}

#[test]
fn zero_or_absurd_limits_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    let binary = env!("CARGO_BIN_EXE_fabric-audit");
    for (flag, value) in [
        ("--max-requests", "0"),
        ("--max-connections", "99999999"),
        ("--header-read-timeout-secs", "-1"),
        ("--request-timeout-secs", "soon"),
    ] {
        let out = Command::new(binary)
            .args(["serve", "--database-url", &url, "--no-auth", flag, value])
            .output()
            .unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(flag), "{stderr}");
    }
    let config = dir.path().join("audit.toml");
    std::fs::write(&config, "[audit]\nmax_requests = 0\n").unwrap();
    let out = Command::new(binary)
        .args(["serve", "--no-auth", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("`audit.max_requests`"), "{stderr}");
}

/// A PostgreSQL table lock: held requests, deterministically.
mod held {
    use super::*;
    use crate::db::support::{postgres, TestDb};

    fn psql(url: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args([url, "-tAq", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "{sql}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// `audit_events` locked until dropped.
    struct Lock(Child);

    impl Lock {
        fn take(url: &str) -> Self {
            let mut child = Command::new("psql")
                .args([url, "-q", "-v", "ON_ERROR_STOP=1"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            let stdin = child.stdin.as_mut().unwrap();
            stdin
                .write_all(b"BEGIN;\nLOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE;\n")
                .unwrap();
            stdin.flush().unwrap();
            let granted = "SELECT count(*) FROM pg_locks WHERE granted \
                 AND relation = 'audit_events'::regclass AND mode = 'AccessExclusiveLock'";
            poll(Duration::from_secs(10), || psql(url, granted) == "1").expect("no lock");
            Self(child)
        }
    }

    impl Drop for Lock {
        fn drop(&mut self) {
            if let Some(mut stdin) = self.0.stdin.take() {
                let _ = stdin.write_all(b"ROLLBACK;\n");
            }
            let _ = self.0.wait();
        }
    }

    /// Waits until `n` queries of the server wait for the lock.
    fn wait_until_blocked(url: &str, n: usize) {
        let waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query ILIKE 'select%'";
        poll(Duration::from_secs(4), || {
            psql(url, waiting).parse::<usize>().unwrap() >= n
        })
        .unwrap_or_else(|| panic!("not {n} requests waiting for the lock"));
    }

    /// A GET in another thread, answered within 10 s.
    fn held_get(server: &Server) -> std::thread::JoinHandle<(String, String)> {
        let addr = server.addr.clone();
        std::thread::spawn(move || fetch(&addr, "/api/v1/audit", Duration::from_secs(10)))
    }

    fn migrated() -> TestDb {
        let db = postgres();
        let out = Command::new(env!("CARGO_BIN_EXE_fabric-audit"))
            .args(["migrate", "--database-url", &db.url])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        db
    }

    fn assert_503(head: &str, body: &str, code: &str) {
        assert!(status(head).contains(" 503 "), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("retry-after: 1"),
            "{head}"
        );
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(body["error"]["message"].is_string(), "{body}");
    }

    #[test]
    #[ignore = "needs PostgreSQL (see .ci/run)"]
    fn past_the_request_cap_a_request_is_answered_503_busy() {
        let dir = tempfile::tempdir().unwrap();
        let db = migrated();
        let server = Server::start(dir.path(), &db.url, None, &["--max-requests", "1"]);
        let lock = Lock::take(&db.url);
        let held = held_get(&server);
        wait_until_blocked(&db.url, 1);
        let started = Instant::now();
        let (head, body) = server.get("/api/v1/audit", Duration::from_secs(1));
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_503(&head, &body, "busy");
        drop(lock);
        let (head, _) = held.join().unwrap();
        assert!(status(&head).contains(" 200 "), "{head}");
        server.wait_for_log("limit reached: a request was answered 503 busy");
        let (head, _) = server.get("/api/v1/audit", Duration::from_secs(1));
        assert!(status(&head).contains(" 200 "), "{head}");
    }

    #[test]
    #[ignore = "needs PostgreSQL (see .ci/run)"]
    fn past_the_connection_cap_with_every_one_busy_a_connection_is_answered_503_busy() {
        let dir = tempfile::tempdir().unwrap();
        let db = migrated();
        let server = Server::start(dir.path(), &db.url, None, &["--max-connections", "2"]);
        let lock = Lock::take(&db.url);
        let held = [held_get(&server), held_get(&server)];
        wait_until_blocked(&db.url, 2);
        let started = Instant::now();
        let (head, body) = server.get("/api/v1/audit", Duration::from_secs(1));
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_503(&head, &body, "busy");
        assert!(head.contains("connection: close"), "{head}");
        drop(lock);
        for held in held {
            let (head, _) = held.join().unwrap();
            assert!(status(&head).contains(" 200 "), "{head}");
        }
        server.wait_for_log("no room for a new connection");
        let (head, _) = server.get("/api/v1/audit", Duration::from_secs(1));
        assert!(status(&head).contains(" 200 "), "{head}");
    }

    #[test]
    #[ignore = "needs PostgreSQL (see .ci/run)"]
    fn a_request_past_its_timeout_is_answered_503_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let db = migrated();
        let server = Server::start(dir.path(), &db.url, None, &["--request-timeout-secs", "1"]);
        let lock = Lock::take(&db.url);
        let started = Instant::now();
        let (head, body) = server.get("/api/v1/audit", Duration::from_secs(4));
        assert!(started.elapsed() >= Duration::from_millis(900));
        assert_503(&head, &body, "timeout");
        drop(lock);
        server.wait_for_log("limit reached: a request took too long");
        let (head, _) = server.get("/api/v1/audit", Duration::from_secs(2));
        assert!(status(&head).contains(" 200 "), "{head}");
    }
}

#[test]
fn sigterm_does_not_wait_for_half_headers() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite(dir.path(), 1, 10);
    let mut server = Server::start(dir.path(), &url, None, &[]);
    let flood: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut stream = server.connect();
            stream.write_all(HALF_HEADER).unwrap();
            stream
        })
        .collect();
    let (head, _) = server.get("/api/v1/audit", Duration::from_secs(1));
    assert!(status(&head).contains(" 200 "), "{head}");
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    // Well before the header timeout (10 s): nothing was in progress.
    let mut exit = None;
    poll(Duration::from_secs(5), || {
        exit = server.child.try_wait().unwrap();
        exit.is_some()
    })
    .expect("serve waited for connections with no request in progress");
    assert!(exit.unwrap().success(), "{}", server.stderr());
    drop(flood);
}

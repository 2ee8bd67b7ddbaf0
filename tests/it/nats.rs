//! The NATS sink and the collector against a real nats-server
//! (`#[ignore]`d: run by `.ci/run`, which starts one on 127.0.0.1:4222).
//! Tests that stop a server run their own, on their own port and store.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use fabric_audit::{audit, AuditLayer, NatsCollector, NatsSink, NatsStream, Sink};

use crate::support::pipeline;

const SHARED: &str = "nats://127.0.0.1:4222";

/// A stream of the test's own on `url`: unique name and subject prefix.
fn target(url: &str) -> NatsStream {
    let id = uuid::Uuid::new_v4().simple().to_string();
    NatsStream::new(url)
        .stream(format!("T{id}"))
        .subject_prefix(format!("t{id}"))
        .duplicate_window(Duration::from_secs(120))
}

async fn js(url: &str) -> jetstream::Context {
    jetstream::new(async_nats::connect(url).await.unwrap())
}

/// Messages in the stream `name`.
async fn messages_in(url: &str, name: &str) -> u64 {
    let mut s = js(url).await.get_stream(name).await.unwrap();
    s.info().await.unwrap().state.messages
}

async fn delete_stream(url: &str, name: &str) {
    js(url).await.delete_stream(name).await.unwrap();
}

/// Polls `done` until it holds; fails after `limit`.
fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn name_of(t: &NatsStream) -> String {
    // The Debug form is the one public view of the settings.
    let text = format!("{t:?}");
    let start = text.find("stream: \"").unwrap() + "stream: \"".len();
    text[start..].split('"').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs nats-server on 127.0.0.1:4222"]
async fn a_stream_with_wrong_settings_gives_a_clear_error() {
    let t = target(SHARED);
    let name = name_of(&t);
    let prefix = format!("t{}", &name[1..]);
    js(SHARED)
        .await
        .create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![format!("{prefix}.>")],
            storage: stream::StorageType::Memory,
            duplicate_window: Duration::from_secs(60),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut sink = NatsSink::builder(t.clone()).build().unwrap();
    let error = tokio::task::spawn_blocking(move || sink.open().unwrap_err())
        .await
        .unwrap()
        .to_string();
    for part in [
        "incompatible settings",
        "storage is Memory",
        "duplicate window is 60s, expected 120s",
        "discard is Old, expected new",
    ] {
        assert!(error.contains(part), "{part:?} not in {error}");
    }
    let db = crate::db::sqlite();
    let collected = NatsCollector::builder(t, &db.url)
        .build()
        .unwrap()
        .run(std::future::pending(), |_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(collected.contains("storage is Memory"), "{collected}");
    // The stream was left as it was.
    let mut s = js(SHARED).await.get_stream(&name).await.unwrap();
    assert_eq!(
        s.info().await.unwrap().config.storage,
        stream::StorageType::Memory
    );
    delete_stream(SHARED, &name).await;
}

#[test]
#[ignore = "needs nats-server on 127.0.0.1:4222"]
fn hostile_records_are_published_once_and_an_oversized_one_is_counted() {
    let t = target(SHARED);
    let name = name_of(&t);
    let (dispatch, audit) = pipeline(
        AuditLayer::builder()
            .nats(t.clone())
            .batch_size(64)
            // Past the server's 1 MiB max payload (records are cut at
            // 32 KiB by default).
            .max_record_bytes(4 << 20),
    );
    let huge = "x".repeat(1 << 20);
    tracing::dispatcher::with_default(&dispatch, || {
        audit!(action = "nul\0action", text = "a\0b\u{1}\u{1b}[2J");
        audit!(
            action = "a b*c>d..",
            n = u64::MAX,
            m = i64::MIN,
            z = 0,
            f = -0.0
        );
        audit!(action = "big", text = huge.as_str());
        for i in 0..500 {
            audit!(action = "post.created", i = i);
        }
    });
    let report = audit.shutdown_blocking();
    let nats = report.sink("nats").unwrap();
    assert_eq!(report.emitted(), 503, "{report}");
    assert_eq!(nats.written(), 502, "{report}");
    assert_eq!(nats.failed(), 1, "{report}");
    assert_eq!(
        nats.written() + nats.failed() + nats.dropped(),
        report.emitted()
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The 502 records, and the gap record by which the chain reports the
    // refused one (not counted in the report: it is no record of yours).
    assert_eq!(rt.block_on(messages_in(SHARED, &name)), 503);
    rt.block_on(delete_stream(SHARED, &name));
}

#[test]
#[ignore = "needs nats-server on 127.0.0.1:4222"]
fn a_batch_published_again_is_stored_once() {
    let t = target(SHARED);
    let name = name_of(&t);
    let records: Vec<_> = (0..300)
        .map(|i| std::sync::Arc::new(fabric_audit::AuditRecord::builder(format!("a.{i}")).build()))
        .collect();
    let batch = fabric_audit::Batch::new(&records);
    let mut sink = NatsSink::builder(t).window(16).build().unwrap();
    for _ in 0..3 {
        sink.write(&batch).unwrap();
    }
    sink.close().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(rt.block_on(messages_in(SHARED, &name)), 300);
    rt.block_on(delete_stream(SHARED, &name));
}

/// A nats-server of the test's own.
struct Server {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Self {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
        };
        server.restart();
        server
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        let child = Command::new("nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server");
        self.child = Some(child);
        let port = self.port;
        wait_for("nats-server to accept", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
#[ignore = "needs the nats-server binary"]
fn a_server_stopped_and_restarted_mid_stream_loses_nothing() {
    let mut server = Server::start();
    let t = target(&server.url()).timeout(Duration::from_secs(1));
    let name = name_of(&t);
    let (dispatch, audit) = pipeline(AuditLayer::builder().nats(t).batch_size(256));
    let emit = |from: u32, to: u32| {
        tracing::dispatcher::with_default(&dispatch, || {
            for i in from..to {
                audit!(action = "order.paid", i = i);
            }
        })
    };
    emit(0, 3000);
    audit.flush_blocking().unwrap();
    server.stop();
    emit(3000, 6000);
    let nats = |r: &fabric_audit::Report| r.sink("nats").unwrap().clone();
    wait_for("the sink to fail", Duration::from_secs(30), || {
        nats(&audit.report()).errors() > 0
    });
    let during = audit.report();
    assert!(nats(&during).pending() > 0, "{during}");
    server.restart();
    wait_for("the queued records", Duration::from_secs(60), || {
        nats(&audit.report()).written() == 6000
    });
    let report = audit.shutdown_blocking();
    assert!(report.is_lossless(), "{report}");
    assert_eq!(nats(&report).written(), 6000, "{report}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(rt.block_on(messages_in(&server.url(), &name)), 6000);
}

/// `SELECT count(*), count(DISTINCT id)` of the table at `url` (PostgreSQL).
fn rows(url: &str) -> (u64, u64) {
    let out = Command::new("psql")
        .args([
            url,
            "-tAc",
            "SELECT count(*), count(DISTINCT id) FROM audit_events",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.trim().split('|').map(|n| n.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs nats-server on 127.0.0.1:4222 and PostgreSQL"]
async fn a_late_collector_catches_up_and_keeps_every_field() {
    let t = target(SHARED);
    let name = name_of(&t);
    let (dispatch, audit) = pipeline(AuditLayer::builder().nats(t.clone()));
    tracing::dispatcher::with_default(&dispatch, || {
        audit!(
            action = "user.login",
            actor_id = "u\0ser",
            resource_type = "post",
            resource_id = 7,
            n = u64::MAX,
            neg = i64::MIN,
            text = "ctl\u{1}\u{7f}é",
            nested = true
        );
        for i in 0..1999 {
            audit!(action = "post.created", i = i);
        }
    });
    let report = tokio::task::spawn_blocking(move || audit.shutdown_blocking())
        .await
        .unwrap();
    assert!(report.is_lossless(), "{report}");
    let db = crate::db::postgres();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // Seven batches, three written at a time: each acknowledged after
    // its own commit, whatever order they end in.
    let collector = NatsCollector::builder(t, &db.url)
        .batch_size(300)
        .imports(3)
        .progress_every(Duration::from_millis(200))
        .build()
        .unwrap();
    let mut reports = Vec::new();
    let run = tokio::spawn(async move {
        let total = collector
            .run(async { stopped.await.unwrap_or(()) }, |p| {
                reports.push(p.clone())
            })
            .await;
        (total, reports)
    });
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || {
        wait_for("2000 rows", Duration::from_secs(60), || {
            rows(&url).0 == 2000
        })
    })
    .await
    .unwrap();
    stop.send(()).unwrap();
    let (total, reports) = run.await.unwrap();
    let total = total.unwrap();
    assert_eq!(total.stored, 2000, "{total:?}");
    assert_eq!(rows(&db.url), (2000, 2000));
    assert!(!reports.is_empty(), "no progress reported");
    // The producer's record, field for field.
    let store = fabric_audit::Store::connect(&db.url).await.unwrap();
    let page = store
        .query(&fabric_audit::AuditQuery::new().action("user.login"))
        .await
        .unwrap();
    let stored = &page.items[0];
    assert_eq!(stored.actor_id(), Some("u\0ser"));
    assert_eq!(stored.resource_id(), Some("7"));
    let detail = serde_json::to_value(stored).unwrap()["detail"].clone();
    assert_eq!(detail["n"], serde_json::json!(u64::MAX));
    assert_eq!(detail["neg"], serde_json::json!(i64::MIN));
    assert_eq!(detail["text"], serde_json::json!("ctl\u{1}\u{7f}é"));
    // The producer's run chained its records; the central table verifies
    // them end to end.
    let v = store.verify(None).await.unwrap();
    assert!(v.is_intact(), "{v:?}");
    assert_eq!(v.chains.len(), 1, "{v:?}");
    let chain = &v.chains[0];
    assert!(chain.chain.contains("/nats/"), "{}", chain.chain);
    assert_eq!(
        (chain.records, chain.first_seq, chain.last_seq),
        (2000, Some(1), Some(2000))
    );
    delete_stream(SHARED, &name).await;
}

/// The producer of the tests below: `examples/nats_instances.rs` in its
/// producer mode, built once per test run. It emits `count` records
/// through the NATS sink and prints its `ACCOUNTING` line.
#[cfg(feature = "cli")]
fn spawn_producer(t: &NatsStream, count: u64) -> Child {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let example = BUILT.get_or_init(|| {
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .args(["build", "--example", "nats_instances", "--all-features"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        // What cargo sets for this test binary: build scripts that read
        // such variables (ring's reads CARGO_MANIFEST_DIR and OUT_DIR) would otherwise
        // run again, and half the tree be rebuilt here and again after.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            let set_for_us = [
                "CARGO_MANIFEST_",
                "CARGO_PKG_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
            ]
            .iter()
            .any(|prefix| key.starts_with(prefix));
            if set_for_us
                || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&&*key)
            {
                cargo.env_remove(&*key);
            }
        }
        let status = cargo.status().unwrap();
        assert!(status.success(), "cargo build --example nats_instances");
        // target/debug/deps/it-… → target/debug/examples/nats_instances
        let exe = std::env::current_exe().unwrap();
        let debug = exe.parent().and_then(|deps| deps.parent()).unwrap();
        debug
            .join("examples")
            .join(format!("nats_instances{}", std::env::consts::EXE_SUFFIX))
    });
    let name = name_of(t);
    Command::new(example)
        .args(["--produce", &count.to_string(), "--instance", "producer"])
        .args(["--nats-url", SHARED, "--stream", &name])
        .args(["--subject", &format!("t{}", &name[1..])])
        .args(["--duplicate-window", "120"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[cfg(feature = "cli")]
fn spawn_collector(t: &NatsStream, db_url: &str, durable: &str) -> Child {
    let name = name_of(t);
    Command::new(env!("CARGO_BIN_EXE_fabric-audit"))
        .args(["collect", "--database-url", db_url, "--nats-url", SHARED])
        .args(["--durable", durable])
        .args(["--batch", "500", "--ack-wait", "2", "--progress", "1"])
        .env("FABRIC_AUDIT_NATS_STREAM", &name)
        .env("FABRIC_AUDIT_NATS_SUBJECT", format!("t{}", &name[1..]))
        .env("FABRIC_AUDIT_NATS_DUPLICATE_WINDOW_SECS", "120")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[cfg(feature = "cli")]
#[test]
#[ignore = "needs nats-server on 127.0.0.1:4222 and PostgreSQL"]
fn three_producers_two_collectors_killed_store_every_record_once() {
    let t = target(SHARED);
    let name = name_of(&t);
    let db = crate::db::postgres();
    // The stream and the durable consumer exist before anyone races to
    // make them.
    let mut first = spawn_collector(&t, &db.url, DURABLE);
    let producers: Vec<Child> = (0..3).map(|_| spawn_producer(&t, 10_000)).collect();
    let mut second = spawn_collector(&t, &db.url, DURABLE);
    wait_for("a third of the rows", Duration::from_secs(120), || {
        rows(&db.url).0 >= 10_000
    });
    // SIGKILL: no chance to commit or acknowledge what it holds.
    first.kill().unwrap();
    first.wait().unwrap();
    let mut restarted = spawn_collector(&t, &db.url, DURABLE);
    for producer in producers {
        let out = producer.wait_with_output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("emitted=10000 written=10000 dropped=0 failed=0"),
            "{text}"
        );
    }
    wait_for("30 000 rows", Duration::from_secs(120), || {
        rows(&db.url).0 >= 30_000
    });
    // Redeliveries of what the killed collector held arrive after the ack
    // wait: give them time to show up as duplicates, if they could.
    let rt = tokio::runtime::Runtime::new().unwrap();
    wait_for("the consumer to settle", Duration::from_secs(60), || {
        rt.block_on(consumer_state(&name, DURABLE)) == Some((0, 0))
    });
    assert_eq!(rows(&db.url), (30_000, 30_000));
    for c in [&mut second, &mut restarted] {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    // Each producer's run chained its records: through the stream, two
    // collectors and a SIGKILL, every chain arrives whole and unchanged.
    let v = rt.block_on(async {
        fabric_audit::Store::connect(&db.url)
            .await
            .unwrap()
            .verify(None)
            .await
            .unwrap()
    });
    assert!(v.is_intact(), "{v:?}");
    let chains: Vec<(u64, Option<u64>)> =
        v.chains.iter().map(|c| (c.records, c.last_seq)).collect();
    assert_eq!(chains, [(10_000, Some(10_000)); 3], "{v:?}");
    assert_eq!(rt.block_on(messages_in(SHARED, &name)), 30_000);
    // Now between commit and acknowledgement, a few times over.
    let caught: Vec<bool> = (0..3)
        .map(|round| kill_between_commit_and_ack(&t, &format!("round-{round}"), &rt))
        .collect();
    println!("rounds that froze a collector between commit and acknowledgement: {caught:?}");
    assert!(
        caught.contains(&true),
        "no round caught a collector between commit and acknowledgement: {caught:?}"
    );
    rt.block_on(delete_stream(SHARED, &name));
}

#[cfg(feature = "cli")]
const DURABLE: &str = "fabric-audit-collect";

/// The durable consumer's (undelivered, unacknowledged) messages; `None`
/// before it exists.
#[cfg(feature = "cli")]
async fn consumer_state(stream: &str, durable: &str) -> Option<(u64, u64)> {
    let s = js(SHARED).await.get_stream(stream).await.ok()?;
    let mut c: jetstream::consumer::PullConsumer = s.get_consumer(durable).await.ok()?;
    let info = c.info().await.ok()?;
    Some((info.num_pending, info.num_ack_pending as u64))
}

#[cfg(feature = "cli")]
fn signal(signal: &str, child: &Child) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {}", child.id());
}

/// One round over the full stream of 30 000 records: a new durable
/// consumer, a fresh database, two collectors. Both are frozen (SIGSTOP)
/// whenever the table holds more rows than the consumer has seen
/// acknowledged, that is, some batch is committed and not acknowledged;
/// then both are killed (SIGKILL) and two others take over. Asserts that
/// each record is stored exactly once; says whether the collectors were
/// caught in that window (rather than after everything was stored).
#[cfg(feature = "cli")]
fn kill_between_commit_and_ack(
    t: &NatsStream,
    durable: &str,
    rt: &tokio::runtime::Runtime,
) -> bool {
    let name = name_of(t);
    let db = crate::db::postgres();
    let mut collectors = [
        spawn_collector(t, &db.url, durable),
        spawn_collector(t, &db.url, durable),
    ];
    let mut caught = false;
    wait_for(
        "a commit not yet acknowledged",
        Duration::from_secs(120),
        || {
            collectors.iter().for_each(|c| signal("-STOP", c));
            // Rows first: acknowledgements still in flight land meanwhile.
            let (stored, _) = rows(&db.url);
            let acked = rt
                .block_on(consumer_state(&name, durable))
                .map_or(0, |(pending, unacked)| {
                    30_000u64.saturating_sub(pending + unacked)
                });
            caught = stored > acked;
            if caught || stored == 30_000 {
                return true;
            }
            collectors.iter().for_each(|c| signal("-CONT", c));
            false
        },
    );
    for c in &mut collectors {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    let mut restarted = [
        spawn_collector(t, &db.url, durable),
        spawn_collector(t, &db.url, durable),
    ];
    wait_for("the round to settle", Duration::from_secs(120), || {
        rows(&db.url).0 >= 30_000 && rt.block_on(consumer_state(&name, durable)) == Some((0, 0))
    });
    assert_eq!(rows(&db.url), (30_000, 30_000), "{durable}");
    for c in &mut restarted {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    caught
}

#[cfg(feature = "cli")]
#[test]
#[ignore = "needs nats-server on 127.0.0.1:4222"]
fn collect_serves_its_progress_as_prometheus_metrics() {
    use std::io::{Read, Write};

    let t = target(SHARED);
    let name = name_of(&t);
    let records: Vec<_> = (0..250)
        .map(|i| std::sync::Arc::new(fabric_audit::AuditRecord::builder(format!("m.{i}")).build()))
        .collect();
    let mut sink = NatsSink::builder(t).build().unwrap();
    sink.write(&fabric_audit::Batch::new(&records)).unwrap();
    sink.close().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("audit.db").display());
    let metrics_addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut collector = Command::new(env!("CARGO_BIN_EXE_fabric-audit"))
        .args([
            "collect",
            "--database-url",
            &db_url,
            "--nats-url",
            SHARED,
            "--progress",
            "1",
        ])
        .args(["--metrics-bind", &metrics_addr.to_string()])
        .env("FABRIC_AUDIT_NATS_STREAM", &name)
        .env("FABRIC_AUDIT_NATS_SUBJECT", format!("t{}", &name[1..]))
        .env("FABRIC_AUDIT_NATS_DUPLICATE_WINDOW_SECS", "120")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let scrape = || {
        let mut stream = std::net::TcpStream::connect(metrics_addr).ok()?;
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        Some(text)
    };
    let stored = |text: &str| {
        crate::metrics::sample_unlabelled(text, "fabric_audit_collect_records_stored_total")
    };
    // The collector reports once a second: wait (bounded) for all 250.
    wait_for("the collector's metrics", Duration::from_secs(30), || {
        scrape().is_some_and(|text| stored(&text) == Some(250.0))
    });
    let text = scrape().unwrap();
    assert_eq!(
        crate::metrics::sample_unlabelled(&text, "fabric_audit_collect_lag"),
        Some(0.0),
        "{text}"
    );
    collector.kill().unwrap();
    collector.wait().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(delete_stream(SHARED, &name));
}

//! Signed checkpoints: written by each chain's worker every N records,
//! every interval, at a restart and at shutdown; checked by `verify` with
//! the signers' public keys and against copies kept elsewhere.

use std::path::Path;
use std::time::Duration;

use fabric_audit::checkpoint::{PublicKey, SigningKey};
use fabric_audit::verify::{verify_files_with, Break, ChainReport, Verifier, CHECKPOINT_ACTION};
use fabric_audit::{
    audit, AuditLayer, AuditLayerBuilder, AuditRecord, Batch, ChainHead, FileSink, Report, Sink,
    SinkError,
};

use crate::support::{broken, flaky, panicky, pipeline, Collect};

/// One run of instance `api-1` with a file sink in `dir`, checkpointed
/// every 100 records, signed by `key`, copied to `dir/../copy.jsonl`.
fn run(dir: &Path, key: SigningKey, n: u64) {
    let copy = copy_path(dir);
    let report = run_copying(dir, key, n, |b| b.checkpoint_copy(copy));
    let copies = report.checkpoint_copy().unwrap();
    assert_eq!((copies.failed(), copies.pending()), (0, 0), "{report}");
}

/// As [`run`], with the checkpoints copied as `copy` says; the report.
fn run_copying(
    dir: &Path,
    key: SigningKey,
    n: u64,
    copy: impl FnOnce(AuditLayerBuilder) -> AuditLayerBuilder,
) -> Report {
    let file = FileSink::builder(dir.join("audit.jsonl")).build().unwrap();
    let (dispatch, audit) = pipeline(copy(
        AuditLayer::builder()
            .instance("api-1")
            .sink("file", file)
            .batch_size(16)
            .checkpoint_key(key)
            .checkpoint_every(100, Duration::from_secs(3600)),
    ));
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0..n {
            audit!(action = "invoice.sent", n = i);
        }
    });
    let report = audit.shutdown_blocking();
    assert!(report.is_lossless(), "{report}");
    // Checkpoints are the chain's own: not counted as the user's records.
    assert_eq!(report.sink("file").unwrap().written(), n, "{report}");
    report
}

/// The checkpoint records of the file sink's files in `dir`.
fn stored_checkpoints(dir: &Path) -> Vec<AuditRecord> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<AuditRecord>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .filter(|r| r.action() == CHECKPOINT_ACTION)
        .collect()
}

/// Cuts the file sink's only file right after its first checkpoint (a
/// chain that verifies alone); the first `seq` cut away.
fn cut_after_first_checkpoint(dir: &Path) -> u64 {
    let file = std::fs::read_dir(dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let first = lines
        .iter()
        .position(|l| l.contains(CHECKPOINT_ACTION))
        .unwrap();
    std::fs::write(&file, lines[..=first].join("\n") + "\n").unwrap();
    first as u64 + 2
}

fn copy_path(dir: &Path) -> std::path::PathBuf {
    dir.parent().unwrap().join("copy.jsonl")
}

fn copies(dir: &Path) -> Vec<AuditRecord> {
    std::fs::read_to_string(copy_path(dir))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn verify(dir: &Path, keys: &[&SigningKey], with_copies: bool) -> ChainReport {
    let mut verifier = Verifier::new().keys(keys.iter().map(|k| k.public_key()));
    if with_copies {
        copies(dir).iter().for_each(|c| verifier.witness(c));
    }
    let v = verify_files_with(verifier, dir).unwrap();
    assert!(v.unreadable.is_empty(), "{v:?}");
    assert_eq!(v.chains.len(), 1, "{v:?}");
    v.chains.into_iter().next().unwrap()
}

fn key(name: &str) -> SigningKey {
    SigningKey::generate(name).unwrap()
}

fn same(key: &SigningKey) -> SigningKey {
    SigningKey::parse(&key.to_secret_text()).unwrap()
}

#[test]
fn a_file_sinks_checkpoints_verify_across_a_restart_and_a_key_rotation() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("logs");
    let (old, new) = (key("api.example.com"), key("api.example.com"));
    run(&dir, same(&old), 250);
    let first = verify(&dir, &[&old], true);
    assert_eq!(first.breaks, []);
    // Every 100 records (a batch late at most) and at shutdown: 3.
    assert_eq!((first.checkpoints, first.signed_checkpoints), (3, 3));
    assert!(first.closed && first.unanchored == 0, "{first:?}");
    assert_eq!(first.last_seq, Some(253));

    // The key is rotated; the next run continues the chain.
    run(&dir, same(&new), 30);
    let both = verify(&dir, &[&old, &new], true);
    assert_eq!(both.breaks, []);
    // The restart's checkpoint (after its first batch) and the shutdown's.
    assert_eq!((both.checkpoints, both.signed_checkpoints), (5, 5));
    assert_eq!(both.last_seq, Some(285));
    assert!(both.closed);
    assert_eq!(copies(&dir).len(), 5);
    let record = copies(&dir).pop().unwrap();
    assert_eq!(record.action(), CHECKPOINT_ACTION);
    assert_eq!(record.seq(), Some(285));

    // Without the old key its checkpoints are signed by an unknown key.
    let new_only = verify(&dir, &[&new], false);
    let unknown = |seq| Break::UnknownKey {
        seq,
        key: "api.example.com".into(),
    };
    let old_seqs: Vec<u64> = copies(&dir)[..3].iter().map(|r| r.seq().unwrap()).collect();
    assert_eq!(
        new_only.breaks,
        old_seqs.iter().map(|&seq| unknown(seq)).collect::<Vec<_>>()
    );
}

/// The chain alone cannot show that its newest records were deleted; the
/// copy of its last checkpoint, kept elsewhere, can.
#[test]
fn a_cut_tail_is_caught_by_the_checkpoint_copy_only() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("logs");
    let k = key("k");
    run(&dir, same(&k), 150);
    let from = cut_after_first_checkpoint(&dir);
    let alone = verify(&dir, &[&k], false);
    assert_eq!(alone.breaks, []);
    assert_eq!(alone.unanchored, 0);
    let last = copies(&dir).last().unwrap().seq().unwrap();
    let with_copy = verify(&dir, &[&k], true);
    assert_eq!(with_copy.breaks, [Break::Truncated { from, to: last }]);
}

/// A sink of the user's that keeps a chain, collecting what it is given.
struct ChainedCollect(Collect);

impl Sink for ChainedCollect {
    fn write(&mut self, batch: &Batch<'_>) -> Result<(), SinkError> {
        self.0.clone().write(batch)
    }

    fn chain_head(&mut self, _chain: &str) -> Result<ChainHead, SinkError> {
        Ok(ChainHead::Empty)
    }
}

#[test]
fn a_chain_is_checkpointed_by_time_while_records_come_and_once_at_shutdown() {
    let collect = Collect::default();
    let (dispatch, audit) = pipeline(
        AuditLayer::builder()
            .instance("api-1")
            .sink("mine", ChainedCollect(collect.clone()))
            .checkpoint_every(1_000_000, Duration::from_millis(20)),
    );
    tracing::dispatcher::with_default(&dispatch, || audit!(action = "invoice.sent"));
    // The record, then a checkpoint once the interval has passed.
    collect.wait_for(2);
    let records = collect.records();
    assert_eq!(records[1].action(), CHECKPOINT_ACTION, "{records:?}");
    assert_eq!(records[1].seq(), Some(2));
    // A checkpoint follows only new records: a second one is checkpointed
    // in turn.
    tracing::dispatcher::with_default(&dispatch, || audit!(action = "invoice.sent"));
    collect.wait_for(4);
    let report = audit.shutdown_blocking();
    assert!(report.is_lossless(), "{report}");
    let records = collect.records();
    let actions: Vec<&str> = records.iter().map(|r| r.action()).collect();
    assert_eq!(
        actions,
        [
            "invoice.sent",
            CHECKPOINT_ACTION,
            "invoice.sent",
            CHECKPOINT_ACTION,
            CHECKPOINT_ACTION
        ]
    );
    // The last, at shutdown, says so.
    assert_eq!(
        records[4].detail_value("final"),
        Some(fabric_audit::DetailValue::Bool(true))
    );
    assert_eq!(records[3].detail_value("final"), None);
    let mut verifier = Verifier::new();
    records.iter().for_each(|r| verifier.check(r));
    let v = verifier.finish();
    assert!(v.is_intact(), "{v:?}");
    assert_eq!(v.chains[0].checkpoints, 3);
    assert!(v.chains[0].closed);
    assert!(!v.signatures_checked);
}

#[test]
fn bad_checkpoint_settings_are_refused_at_build() {
    let dir = tempfile::tempdir().unwrap();
    let build = |builder: fabric_audit::AuditLayerBuilder| {
        builder
            .instance("api-1")
            .sink("mine", ChainedCollect(Collect::default()))
            .build::<tracing_subscriber::Registry>()
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let missing = dir.path().join("no-such.key");
    let error = build(AuditLayer::builder().checkpoint_key_file(&missing));
    assert!(error.contains("no-such.key"), "{error}");
    let not_a_key = dir.path().join("public.key");
    let public = key("k").public_key().to_string();
    std::fs::write(&not_a_key, &public).unwrap();
    let error = build(AuditLayer::builder().checkpoint_key_file(&not_a_key));
    assert!(error.contains("not a checkpoint signing key"), "{error}");
    assert!(!error.contains(&public), "{error}");
    let error = build(AuditLayer::builder().checkpoint_every(0, Duration::from_secs(1)));
    assert!(error.contains("checkpoint_every"), "{error}");
    let error = build(AuditLayer::builder().checkpoint_every(10, Duration::ZERO));
    assert!(error.contains("checkpoint_every"), "{error}");
    let error = build(AuditLayer::builder().checkpoint_copy(dir.path().join("none/x.jsonl")));
    assert!(error.contains("checkpoint copy"), "{error}");
    #[cfg(feature = "sqlite")]
    {
        let url = format!("sqlite://{}", dir.path().join("audit.db").display());
        let same = AuditLayer::builder()
            .database(&url)
            .checkpoint_copy_database(&url);
        let error = build(same);
        assert!(
            error.contains("another database than the sink's"),
            "{error}"
        );
        let error = build(AuditLayer::builder().checkpoint_copy_database("redis://x"));
        assert!(error.contains("unknown scheme"), "{error}");
    }
    for bad in ["", "has space", "a+b", "é", "\0", &"x\n".repeat(10)] {
        assert!(SigningKey::generate(bad).is_err(), "{bad:?}");
    }
    for bad in ["", "\0", &"A".repeat(1 << 20), "k+00000000+AQ=="] {
        assert!(PublicKey::parse(bad).is_err(), "{bad:?}");
        assert!(SigningKey::parse(bad).is_err(), "{bad:?}");
    }
}

#[cfg(feature = "cli")]
#[test]
fn keygen_and_verify_with_keys_and_copies_from_the_cli() {
    let root = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_fabric-audit"))
            .args(args)
            .output()
            .unwrap()
    };
    let key_path = root.path().join("audit.key");
    let made = cli(&[
        "keygen",
        "--name",
        "api.example.com",
        "--out",
        key_path.to_str().unwrap(),
    ]);
    assert!(made.status.success(), "{made:?}");
    let public = String::from_utf8(made.stdout).unwrap();
    let pub_path = root.path().join("audit.key.pub");
    assert_eq!(std::fs::read_to_string(&pub_path).unwrap(), public);
    assert!(public.starts_with("api.example.com+"), "{public}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Never over an existing key; a bad name is one readable line.
    let again = cli(&["keygen", "--name", "x", "--out", key_path.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(2), "{again:?}");
    let key = SigningKey::from_file(&key_path).unwrap();
    let bad = cli(&[
        "keygen",
        "--name",
        "has space",
        "--out",
        root.path().join("b").to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr).lines().count(),
        1,
        "{bad:?}"
    );

    let dir = root.path().join("logs");
    run(&dir, key, 120);
    let (dir_arg, pub_arg) = (dir.to_str().unwrap(), pub_path.to_str().unwrap());
    let copy_arg = copy_path(&dir);
    let copy_arg = copy_arg.to_str().unwrap();
    let ok = cli(&[
        "verify",
        "--files",
        dir_arg,
        "--keys",
        pub_arg,
        "--checkpoints",
        copy_arg,
    ]);
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{out}");
    assert!(out.contains("chain api-1/file: 122 records, seq 1..122, 2 checkpoint(s) (2 signed, last at seq 122, closed at shutdown): intact"), "{out}");

    // Another key file: the checkpoints' key is unknown to it.
    let other = root.path().join("other.pub");
    std::fs::write(
        &other,
        format!(
            "# rotated\n{}\n",
            SigningKey::generate("x").unwrap().public_key()
        ),
    )
    .unwrap();
    let unknown = cli(&[
        "verify",
        "--files",
        dir_arg,
        "--keys",
        other.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(unknown.status.code(), Some(1));
    let json: serde_json::Value =
        serde_json::from_slice(unknown.stdout.split(|&b| b == b'\n').next().unwrap()).unwrap();
    assert_eq!(json["chains"][0]["breaks"][0]["kind"], "unknown_key");
    assert_eq!(json["signatures_checked"], true);

    // A key file with a bad line, a copy file with a bad line: one line, 2.
    std::fs::write(&other, "not a key\n").unwrap();
    let bad_keys = cli(&[
        "verify",
        "--files",
        dir_arg,
        "--keys",
        other.to_str().unwrap(),
    ]);
    assert_eq!(bad_keys.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad_keys.stderr).contains("other.pub:1"),
        "{bad_keys:?}"
    );
    std::fs::write(&other, "{\"not\": \"a record\"}\n").unwrap();
    let bad_copy = cli(&[
        "verify",
        "--files",
        dir_arg,
        "--checkpoints",
        other.to_str().unwrap(),
    ]);
    assert_eq!(bad_copy.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad_copy.stderr).contains("other.pub:1"),
        "{bad_copy:?}"
    );
}

/// The database sink's chain is checkpointed in its table; the query API
/// serves the checkpoints to an auditor, who verifies the database with
/// them.
#[cfg(all(feature = "http", feature = "sqlite"))]
#[tokio::test(flavor = "multi_thread")]
async fn a_databases_checkpoints_verify_and_are_served_by_the_query_api() {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use fabric_audit::http::{self, BearerTokens, AUDIT_READ};
    use fabric_audit::Store;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let db = crate::db::sqlite();
    let k = key("db.example.com");
    let public = k.public_key();
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || {
        let (dispatch, audit) = pipeline(
            AuditLayer::builder()
                .instance("api-1")
                .database(&url)
                .batch_size(50)
                .checkpoint_key(k)
                .checkpoint_every(100, Duration::from_secs(3600)),
        );
        tracing::dispatcher::with_default(&dispatch, || {
            for i in 0..300 {
                audit!(action = "invoice.sent", n = i);
            }
        });
        let report = audit.shutdown_blocking();
        assert!(report.is_lossless(), "{report}");
    })
    .await
    .unwrap();

    let store = Store::connect(&db.url).await.unwrap();
    let v = store
        .verify_with(Verifier::new().keys([public.clone()]), None)
        .await
        .unwrap();
    assert!(v.is_intact(), "{v:?}");
    let chain = &v.chains[0];
    assert_eq!(chain.chain, "api-1/database");
    // After ~100, ~200 and ~300 records (a batch late at most), and at
    // shutdown; the third comes only if the records crossed 300 first.
    assert!((3..=4).contains(&chain.checkpoints), "{chain:?}");
    assert_eq!(chain.signed_checkpoints, chain.checkpoints);
    assert!(chain.closed);

    let app: axum::Router = http::router(
        store,
        BearerTokens::new().token("auditor", "secret", [AUDIT_READ]),
    );
    let get = |uri: &str| {
        let request = Request::get(uri)
            .header("authorization", "Bearer secret")
            .body(Body::empty())
            .unwrap();
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await.unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            )
        }
    };
    let (status, page) = get("/api/v1/audit/checkpoints?limit=2").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|i| i["action"] == CHECKPOINT_ACTION));
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) = get(&format!(
        "/api/v1/audit/checkpoints?cursor={cursor}&count=true"
    ))
    .await;
    let served: Vec<AuditRecord> = items
        .iter()
        .chain(rest["items"].as_array().unwrap())
        .map(|i| serde_json::from_value(i.clone()).unwrap())
        .collect();
    assert_eq!(served.len() as u64, chain.checkpoints);
    // The served checkpoints, as copies, agree with the database.
    let mut verifier = Verifier::new().keys([public]);
    served.iter().for_each(|c| verifier.witness(c));
    let again = Store::connect(&db.url)
        .await
        .unwrap()
        .verify_with(verifier, None)
        .await
        .unwrap();
    assert!(again.is_intact(), "{again:?}");
    // A copy of another chain's checkpoint is no concern of a verification
    // of one chain; of all chains, it names a chain cut to nothing.
    let mut other = serde_json::to_value(&served[0]).unwrap();
    other["chain"] = "api-2/database".into();
    let other: AuditRecord = serde_json::from_value(other).unwrap();
    let store = Store::connect(&db.url).await.unwrap();
    let mut verifier = Verifier::new();
    verifier.witness(&other);
    let one = store
        .verify_with(verifier, Some("api-1/database"))
        .await
        .unwrap();
    assert!(one.is_intact(), "{one:?}");
    let mut verifier = Verifier::new();
    verifier.witness(&other);
    let all = store.verify_with(verifier, None).await.unwrap();
    let cut = all
        .chains
        .iter()
        .find(|c| c.chain == "api-2/database")
        .unwrap();
    assert!(
        matches!(cut.breaks[..], [Break::Truncated { from: 1, .. }]),
        "{cut:?}"
    );
    // Other filters do not apply to checkpoints: a 400 naming one.
    let (status, error) = get("/api/v1/audit/checkpoints?action=invoice.sent").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`action`"),
        "{error}"
    );
    // Without the permission: refused as the rest of the API.
    let response = app
        .clone()
        .oneshot(
            Request::get("/api/v1/audit/checkpoints")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

/// The layer's own file sink (from the configuration) states what its
/// retention deletes, signed with the checkpoint key: an auditor holding
/// the public key accepts the purge, one holding another key does not.
#[cfg(feature = "config")]
#[test]
fn the_configured_file_sink_signs_its_purge_statements_with_the_checkpoint_key() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let signer = key("audit.example");
    // Two runs' files, as if eleven and ten days old (retention keeps the
    // newest day before today whatever its age: a clock may have jumped).
    for age in [11, 10] {
        run(&logs, same(&signer), 20);
        let today = chrono::Utc::now().date_naive();
        let old = today - chrono::Days::new(age);
        std::fs::rename(
            logs.join(format!("audit.{today}.jsonl")),
            logs.join(format!("audit.{old}.jsonl")),
        )
        .unwrap();
    }
    let key_file = dir.path().join("audit.key");
    std::fs::write(&key_file, signer.to_secret_text()).unwrap();

    let mut config = fabric_audit::AuditConfig::default();
    config.log_file = logs.join("audit.jsonl");
    config.log_retention_days = fabric_audit::Retention::days(1).unwrap();
    config.checkpoint_key_file = Some(key_file);
    #[cfg(feature = "sqlite")]
    {
        config.database_url = format!("sqlite://{}", dir.path().join("audit.db").display());
    }
    let (dispatch, audit) = pipeline(AuditLayer::builder().instance("api-1").config(&config));
    tracing::dispatcher::with_default(&dispatch, || audit!(action = "invoice.sent"));
    assert!(audit.shutdown_blocking().is_lossless());

    let statements = std::fs::read_to_string(logs.join("audit.purges")).unwrap();
    assert_eq!(statements.lines().count(), 1, "{statements}");
    let v = verify_files_with(Verifier::new().keys([signer.public_key()]), &logs).unwrap();
    assert!(v.is_intact() && v.unreadable.is_empty(), "{v:?}");
    assert!(
        v.chains[0].purged_below.is_some_and(|below| below > 20),
        "{v:?}"
    );
    let v = verify_files_with(
        Verifier::new().keys([key("audit.example").public_key()]),
        &logs,
    )
    .unwrap();
    assert_eq!(v.unreadable.len(), 1, "{v:?}");
    assert!(v.unreadable[0].place.contains("purge statement"), "{v:?}");
    assert!(!v.is_intact(), "{v:?}");
}

/// Checkpoints copied into a sink: each as it is, the one that failed for
/// a moment sent along with the next, every copy counted.
#[test]
fn checkpoints_copied_into_a_sink_that_fails_for_a_moment_all_arrive() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("logs");
    let copied = Collect::default();
    let sink = flaky(1, copied.clone());
    let report = run_copying(&dir, key("k"), 250, |b| {
        b.checkpoint_copy_sink("other", sink)
    });
    // About 100, about 200, and at shutdown; the first failed once and
    // went with the second.
    let copies = report.checkpoint_copy().unwrap();
    assert_eq!(
        (copies.written(), copies.failed(), copies.pending()),
        (3, 0, 0),
        "{report}"
    );
    assert!(
        report
            .to_string()
            .ends_with("; checkpoint copies: written 3, failed 0"),
        "{report}"
    );
    let stored = stored_checkpoints(&dir);
    let copied = copied.records();
    assert_eq!(copied, stored);
    assert_eq!(copied.len(), 3);
}

/// A copy's store that never takes one: the copies are retried at
/// shutdown until its deadline, then counted failed; the records and the
/// sink's own chain lose nothing.
#[test]
fn copies_a_sink_cannot_take_are_counted_failed_and_lose_no_record() {
    let sinks: [(&str, Box<dyn Sink + Send>); 3] = [
        ("down", Box::new(broken(true))),
        ("refusing", Box::new(broken(false))),
        ("panicking", Box::new(panicky())),
    ];
    for (name, sink) in sinks {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("logs");
        let started = std::time::Instant::now();
        let report = run_copying(&dir, key("k"), 250, |b| {
            b.shutdown_timeout(Duration::from_millis(300))
                .checkpoint_copy_sink(name, sink)
        });
        let copies = report.checkpoint_copy().unwrap();
        assert_eq!(
            (copies.written(), copies.failed(), copies.pending()),
            (0, 3, 0),
            "{name}: {report}"
        );
        // Shutdown still keeps its deadline (300 ms, and a short grace).
        assert!(started.elapsed() < Duration::from_secs(10), "{name}");
        assert_eq!(stored_checkpoints(&dir).len(), 3, "{name}");
        let v = verify_files_with(Verifier::new(), &dir).unwrap();
        assert!(v.is_intact(), "{name}: {v:?}");
    }
}

/// Checkpoints copied into another database, on every backend: read back
/// (by `verify --checkpoints URL`), they catch a tail cut from the file
/// sink's chain that the chain alone cannot show.
#[cfg(feature = "sqlite")]
mod copied_into_a_database {
    use super::*;
    use crate::db::{on_every_backend, TestDb};

    on_every_backend!(the_copies_in_another_database_witness_a_cut_tail);

    async fn the_copies_in_another_database_witness_a_cut_tail(db: TestDb) {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("logs");
        let k = key("k");
        let (run_dir, run_key, url) = (dir.clone(), same(&k), db.url.clone());
        let report = tokio::task::spawn_blocking(move || {
            run_copying(&run_dir, run_key, 150, |b| b.checkpoint_copy_database(url))
        })
        .await
        .unwrap();
        let copies = report.checkpoint_copy().unwrap();
        assert_eq!((copies.written(), copies.failed()), (2, 0), "{report}");

        let store = fabric_audit::Store::connect(&db.url).await.unwrap();
        let query = fabric_audit::AuditQuery::new()
            .action(CHECKPOINT_ACTION)
            .limit(100)
            .unwrap();
        let mut copied = store.query(&query).await.unwrap().items;
        copied.reverse();
        let stored = stored_checkpoints(&dir);
        assert_eq!(copied.len(), 2);
        for (copy, original) in copied.iter().zip(&stored) {
            assert_eq!(copy.id(), original.id());
            assert_eq!(copy.chain(), original.chain());
            assert_eq!(copy.seq(), original.seq());
            assert_eq!(copy.hash(), original.hash());
        }

        let from = cut_after_first_checkpoint(&dir);
        let mut verifier = Verifier::new().keys([k.public_key()]);
        copied.iter().for_each(|c| verifier.witness(c));
        let v = verify_files_with(verifier, &dir).unwrap();
        assert_eq!(
            v.chains[0].breaks,
            [Break::Truncated {
                from,
                to: stored[1].seq().unwrap()
            }]
        );

        #[cfg(feature = "cli")]
        {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_fabric-audit"))
                .args(["verify", "--files"])
                .arg(&dir)
                .args(["--checkpoints", &db.url, "--json"])
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(1), "{out:?}");
            let json: serde_json::Value =
                serde_json::from_slice(out.stdout.split(|&b| b == b'\n').next().unwrap()).unwrap();
            assert_eq!(
                json["chains"][0]["breaks"][0]["kind"], "truncated",
                "{json}"
            );
        }
    }
}

/// Checkpoints copied into a file sink elsewhere: `verify --checkpoints`
/// reads them from its directory.
#[cfg(feature = "cli")]
#[test]
fn verify_reads_the_copies_from_a_file_sinks_directory() {
    let root = tempfile::tempdir().unwrap();
    let (dir, copies) = (root.path().join("logs"), root.path().join("copies"));
    let copy = FileSink::builder(copies.join("checkpoints.jsonl"))
        .build()
        .unwrap();
    let report = run_copying(&dir, key("k"), 150, |b| {
        b.checkpoint_copy_sink("copies", copy)
    });
    assert_eq!(report.checkpoint_copy().unwrap().written(), 2, "{report}");
    let verify = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_fabric-audit"))
            .arg("verify")
            .arg("--files")
            .arg(&dir)
            .arg("--checkpoints")
            .arg(&copies)
            .output()
            .unwrap()
    };
    let intact = verify();
    assert!(intact.status.success(), "{intact:?}");
    // A copy source that holds none (a mistyped path, an empty store) is
    // an error, not a verification without copies.
    let nowhere = root.path().join("no-copies");
    std::fs::create_dir(&nowhere).unwrap();
    for source in [nowhere.clone(), nowhere.join("empty.jsonl")] {
        if source.extension().is_some() {
            std::fs::write(&source, "\n").unwrap();
        }
        let none = std::process::Command::new(env!("CARGO_BIN_EXE_fabric-audit"))
            .arg("verify")
            .arg("--files")
            .arg(&dir)
            .arg("--checkpoints")
            .arg(&source)
            .output()
            .unwrap();
        assert_eq!(none.status.code(), Some(2), "{none:?}");
        let stderr = String::from_utf8_lossy(&none.stderr);
        assert!(stderr.contains("no checkpoint copies in"), "{stderr}");
    }
    let from = cut_after_first_checkpoint(&dir);
    let cut = verify();
    assert_eq!(cut.status.code(), Some(1), "{cut:?}");
    let out = String::from_utf8_lossy(&cut.stdout);
    assert!(
        out.contains(&format!("truncated: seq {from}..152 gone")),
        "{out}"
    );
}

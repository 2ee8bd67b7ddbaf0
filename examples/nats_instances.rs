//! Many instances, one store: two producer processes (this example run
//! again with `--produce`) publish audit records to NATS JetStream, and a
//! collector writes the stream into one database.
//!
//! ```sh
//! nats-server -js &   # JetStream on 127.0.0.1:4222
//! cargo run --features nats --example nats_instances                  # 2 × 10 000 records, SQLite in a temp dir
//! cargo run --features nats,postgres --example nats_instances -- \
//!     --database-url postgres://postgres@127.0.0.1/audit
//! cargo run --features nats --example nats_instances -- --smoke       # 2 × 500, a stream of its own, deleted after
//! ```
//!
//! It exits 0 only if the database holds each record the producers
//! emitted (tagged with this run's id, so rows of earlier runs do not
//! count) and each producer's accounting balanced: emitted = written +
//! dropped + failed. The stream is `AUDIT_EXAMPLE` on subjects
//! `audit_example.>` unless `--stream` and `--subject` say otherwise, so
//! the example never writes into a real `AUDIT` stream.
//!
//! Producer mode, as the collector tests run it:
//! `--produce N --instance NAME [--run TAG] [--nats-url URL] [--stream S]
//! [--subject P] [--duplicate-window SECS]`. It prints its report and a
//! line `ACCOUNTING instance=NAME emitted=… written=… dropped=… failed=…`.

use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use fabric_audit::{
    audit, AuditLayer, AuditQuery, NatsCollector, NatsSink, NatsStream, Overflow, Sink, Store,
};
use tracing_subscriber::prelude::*;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The command line, in both modes.
#[derive(Clone, Debug)]
struct Args {
    nats_url: String,
    stream: String,
    subject: String,
    duplicate_window: Option<u64>,
    database_url: Option<String>,
    produce: Option<u64>,
    instance: String,
    run: String,
    smoke: bool,
}

impl Args {
    fn parse() -> Result<Self, Error> {
        let mut args = Self {
            nats_url: "nats://127.0.0.1:4222".into(),
            stream: "AUDIT_EXAMPLE".into(),
            subject: "audit_example".into(),
            duplicate_window: None,
            database_url: None,
            produce: None,
            instance: "instance".into(),
            run: uuid::Uuid::now_v7().simple().to_string(),
            smoke: false,
        };
        let mut words = std::env::args().skip(1);
        while let Some(flag) = words.next() {
            if flag == "--smoke" {
                args.smoke = true;
                continue;
            }
            let value = words.next().ok_or(format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--nats-url" => args.nats_url = value,
                "--stream" => args.stream = value,
                "--subject" => args.subject = value,
                "--duplicate-window" => args.duplicate_window = Some(value.parse()?),
                "--database-url" => args.database_url = Some(value),
                "--produce" => args.produce = Some(value.parse()?),
                "--instance" => args.instance = value,
                "--run" => args.run = value,
                _ => return Err(format!("unknown argument {flag}").into()),
            }
        }
        if args.smoke {
            // A stream of its own: parallel smoke runs do not collide.
            let id = uuid::Uuid::new_v4().simple().to_string();
            args.stream = format!("SMOKE_{id}");
            args.subject = format!("smoke_{id}");
        }
        Ok(args)
    }

    fn target(&self) -> NatsStream {
        let target = NatsStream::new(&self.nats_url)
            .stream(&self.stream)
            .subject_prefix(&self.subject);
        match self.duplicate_window {
            Some(secs) => target.duplicate_window(Duration::from_secs(secs)),
            None => target,
        }
    }
}

fn main() -> ExitCode {
    let result = Args::parse().and_then(|args| match args.produce {
        Some(count) => produce(&args, count),
        None => tokio::runtime::Runtime::new()?.block_on(orchestrate(args)),
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("nats_instances: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One service instance: the audit layer with the NATS sink, `count`
/// events, a clean shutdown. Whether its accounting balanced.
fn produce(args: &Args, count: u64) -> Result<bool, Error> {
    let (layer, audit) = AuditLayer::builder()
        .nats(args.target())
        // What the stream can take, not what a full queue would drop.
        .overflow(Overflow::Block)
        .build()?;
    tracing_subscriber::registry().with(layer).init();
    for i in 0..count {
        audit!(
            action = "order.paid",
            actor_id = args.instance.as_str(),
            resource_type = args.run.as_str(),
            resource_id = i,
        );
    }
    let report = audit.shutdown_blocking();
    let nats = report.sink("nats").ok_or("no nats sink in the report")?;
    println!("{}: {report}", args.instance);
    println!(
        "ACCOUNTING instance={} emitted={} written={} dropped={} failed={}",
        args.instance,
        report.emitted(),
        nats.written(),
        nats.dropped(),
        nats.failed()
    );
    Ok(report.emitted() == count && nats.written() + nats.dropped() + nats.failed() == count)
}

/// A producer's `ACCOUNTING` line: emitted, written, dropped, failed.
fn accounting(stdout: &str) -> Option<[u64; 4]> {
    let line = stdout.lines().find(|l| l.starts_with("ACCOUNTING "))?;
    let value = |key: &str| {
        line.split(' ')
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))?
            .parse()
            .ok()
    };
    Some([
        value("emitted")?,
        value("written")?,
        value("dropped")?,
        value("failed")?,
    ])
}

/// Two producers and a collector; whether every record was stored once.
async fn orchestrate(args: Args) -> Result<bool, Error> {
    let per_producer: u64 = if args.smoke { 500 } else { 10_000 };
    let dir = tempfile::tempdir()?;
    let database = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("audit.db").display()));
    println!(
        "stream {} (subjects {}.>), database {database}, run {}",
        args.stream, args.subject, args.run
    );
    // The stream exists before the producers and the collector race to
    // make it.
    let target = args.target();
    let mut maker = NatsSink::builder(target.clone()).build()?;
    tokio::task::spawn_blocking(move || maker.open().and_then(|()| maker.close())).await??;

    let producers = ["instance-a", "instance-b"]
        .into_iter()
        .map(|name| spawn_producer(&args, name, per_producer))
        .collect::<Result<Vec<_>, _>>()?;

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let collector = NatsCollector::builder(target, &database)
        .progress_every(Duration::from_secs(1))
        .build()?;
    let collecting = tokio::spawn(collector.run(
        async {
            stopped.await.ok();
        },
        |p| {
            println!(
                "collector: {} stored, {} already present, {} not stored, {:.0} records/s, lag {}",
                p.stored, p.present, p.not_stored, p.rate, p.lag
            )
        },
    ));

    let mut balanced = true;
    let mut produced = 0;
    for producer in producers {
        let out = tokio::task::spawn_blocking(move || producer.wait_with_output()).await??;
        let stdout = String::from_utf8_lossy(&out.stdout);
        print!("{stdout}");
        match accounting(&stdout) {
            Some([emitted, written, dropped, failed]) if out.status.success() => {
                balanced &= emitted == per_producer && written + dropped + failed == emitted;
                produced += emitted;
            }
            _ => {
                eprintln!("a producer failed ({}): {stdout}", out.status);
                balanced = false;
            }
        }
    }

    let rows = wait_for_rows(&database, &args.run, produced, &collecting).await?;
    stop.send(()).ok();
    let total = collecting.await??;
    println!(
        "produced {produced}, rows {rows}; the collector stored {}, found {} already present, could not store {}",
        total.stored, total.present, total.not_stored
    );
    if args.smoke {
        delete_stream(&args.nats_url, &args.stream).await?;
    }
    let ok = balanced && rows == produced;
    println!("{}", if ok { "ok" } else { "FAILED" });
    Ok(ok)
}

fn spawn_producer(args: &Args, name: &str, count: u64) -> Result<std::process::Child, Error> {
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args(["--produce", &count.to_string(), "--instance", name])
        .args(["--run", &args.run, "--nats-url", &args.nats_url])
        .args(["--stream", &args.stream, "--subject", &args.subject]);
    if let Some(secs) = args.duplicate_window {
        command.args(["--duplicate-window", &secs.to_string()]);
    }
    Ok(command.stdout(Stdio::piped()).spawn()?)
}

/// Polls the run's row count until it reaches `expected`, the collector
/// stops, or a minute passes with no new row; the last count.
async fn wait_for_rows(
    database: &str,
    run: &str,
    expected: u64,
    collecting: &tokio::task::JoinHandle<fabric_audit::Result<fabric_audit::Progress>>,
) -> Result<u64, Error> {
    let store = Store::builder(database)
        .count_cap(1_000_000)
        .connect()
        .await?;
    let query = AuditQuery::new().resource_type(run);
    let (mut rows, mut moved) = (0, Instant::now());
    while rows < expected && !collecting.is_finished() {
        if moved.elapsed() > Duration::from_secs(60) {
            eprintln!("no new row for a minute: {rows} of {expected}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = store.count(&query).await?.count;
        if now != rows {
            (rows, moved) = (now, Instant::now());
        }
    }
    Ok(rows)
}

async fn delete_stream(url: &str, name: &str) -> Result<(), Error> {
    let js = async_nats::jetstream::new(async_nats::connect(url).await?);
    js.delete_stream(name).await?;
    Ok(())
}

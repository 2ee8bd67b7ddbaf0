//! `fabric-audit collect`: the NATS JetStream stream into the database.

use std::time::Duration;

use clap::Args;
use fabric_audit::{AuditConfig, NatsCollector, NatsStream};

use super::Database;

#[derive(Args)]
pub(crate) struct Collect {
    #[command(flatten)]
    pub(crate) db: Database,
    /// NATS server URL (overrides `nats_url`).
    #[arg(long, value_name = "URL")]
    nats_url: Option<String>,
    /// The durable consumer: collectors with the same name share the work.
    #[arg(long, default_value = "fabric-audit-collect")]
    durable: String,
    /// Records per transaction.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Batches written at a time, each on a database connection of its own.
    #[arg(long, default_value_t = 2)]
    imports: usize,
    /// Seconds before a record delivered to a collector that died is
    /// delivered again (when the consumer is created).
    #[arg(long, default_value_t = 30)]
    ack_wait: u64,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 5)]
    progress: u64,
    /// Serve Prometheus metrics on this address (default: `metrics_bind`
    /// from the configuration; none when unset).
    #[arg(long, value_name = "ADDR")]
    metrics_bind: Option<std::net::SocketAddr>,
}

pub(crate) async fn run(args: Collect, config: &AuditConfig, url: String) -> anyhow::Result<()> {
    let mut config = config.clone();
    if args.nats_url.is_some() {
        config.nats_url = args.nats_url;
    }
    if let Some(addr) = args.metrics_bind.or(config.metrics_bind) {
        super::serve_metrics(addr)?;
    }
    let target = NatsStream::from_config(&config)?;
    let collector = NatsCollector::builder(target, url)
        .durable(args.durable)
        .batch_size(args.batch)
        .imports(args.imports)
        .ack_wait(Duration::from_secs(args.ack_wait))
        .progress_every(Duration::from_secs(args.progress.max(1)))
        .build()?;
    let shutdown = async {
        // Without a signal handler there is no clean stop, only the
        // redelivery that makes a killed collector safe.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let total = collector
        .run(shutdown, |p| {
            publish(p);
            eprintln!(
                "collect: {} stored, {} already present, {} not stored, {:.0} records/s, lag {}",
                p.stored, p.present, p.not_stored, p.rate, p.lag
            );
        })
        .await?;
    publish(&total);
    eprintln!(
        "collect: stopped; {} stored, {} already present, {} not stored",
        total.stored, total.present, total.not_stored
    );
    Ok(())
}

/// The collector's progress through the `metrics` facade (served by
/// `--metrics-bind`): what it stored, found present or could not store,
/// its rate and the stream's lag.
fn publish(p: &fabric_audit::Progress) {
    metrics::counter!("fabric_audit_collect_records_stored_total").absolute(p.stored);
    metrics::counter!("fabric_audit_collect_records_present_total").absolute(p.present);
    metrics::counter!("fabric_audit_collect_records_not_stored_total").absolute(p.not_stored);
    metrics::gauge!("fabric_audit_collect_records_per_second").set(p.rate);
    metrics::gauge!("fabric_audit_collect_lag").set(p.lag as f64);
}

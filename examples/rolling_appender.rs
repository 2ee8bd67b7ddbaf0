//! Audit records into a `tracing_appender` rolling appender the app already
//! configures: hourly files, its own prefix and suffix, 48 files kept.
//!
//! ```text
//! cargo run --features tracing-appender --example rolling_appender [DIR]
//! ```
//!
//! Prints the file it wrote and the pipeline's report. Choose the built-in
//! `FileSink` instead when the file must survive a crash (fsync, torn-line
//! repair, retention by exact date).

use fabric_audit::{audit, exclude_audit, AuditLayer, WriterSink};
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::filter::FilterExt;
use tracing_subscriber::{prelude::*, EnvFilter};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "logs".into());
    let audit_files = RollingFileAppender::builder()
        .rotation(Rotation::HOURLY)
        .filename_prefix("audit")
        .filename_suffix("jsonl")
        .max_log_files(48)
        .build(&dir)?;

    let (audit_layer, audit) = AuditLayer::builder()
        .sink("rolling", WriterSink::from(audit_files))
        .build()?;
    let env_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_filter(env_filter.and(exclude_audit())))
        .with(audit_layer)
        .try_init()?;
    audit.check()?;

    tracing::info!("an ordinary log line: stdout, not the audit files");
    for invoice in 1..=3 {
        audit!(
            action = "invoice.sent",
            actor.id = "u-7",
            resource_type = "invoice",
            resource_id = invoice,
            amount_cents = 1299 * invoice
        );
    }

    let report = audit.shutdown_blocking();
    println!("{report}");
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("audit."))
        {
            println!("{}:\n{}", path.display(), std::fs::read_to_string(&path)?);
        }
    }
    if report.is_lossless() {
        Ok(())
    } else {
        Err("records were lost".into())
    }
}
